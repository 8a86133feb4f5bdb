//! What Salesforce knows about a call, as the agent may see it: who the
//! caller is (F14: Contacts, Leads and Accounts with that phone number,
//! all of them when there are several, F15), and the Cases and
//! Opportunities a call can be assigned to (F10, F11).
//!
//! Caller matches are cached per Salesforce user and E.164 number for a
//! few minutes (a caller who rings again, or rings a group whose members
//! search at once, costs one search), with one search in flight per key;
//! failures are not cached. The texts sent to Salesforce are built here
//! from checked parts only: ids are checked to be ids, search words are
//! escaped, so nothing an agent types becomes SOQL or SOSL syntax.

use std::sync::Arc;
use std::time::Duration;

use phonenumber::country;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::client::{AgentGrant, SalesforceApi, SalesforceError};
use super::numbers::{self, NumberError};

/// Records a caller can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum SalesforceObject {
    Contact,
    Lead,
    Account,
    Case,
    Opportunity,
}

impl SalesforceObject {
    pub fn as_str(self) -> &'static str {
        match self {
            SalesforceObject::Contact => "Contact",
            SalesforceObject::Lead => "Lead",
            SalesforceObject::Account => "Account",
            SalesforceObject::Case => "Case",
            SalesforceObject::Opportunity => "Opportunity",
        }
    }

    /// The object a record id belongs to, by its key prefix.
    pub fn of_id(id: &str) -> Option<SalesforceObject> {
        if !is_record_id(id) {
            return None;
        }
        match &id[..3] {
            "003" => Some(SalesforceObject::Contact),
            "00Q" => Some(SalesforceObject::Lead),
            "001" => Some(SalesforceObject::Account),
            "500" => Some(SalesforceObject::Case),
            "006" => Some(SalesforceObject::Opportunity),
            _ => None,
        }
    }

    fn parse(name: &str) -> Option<SalesforceObject> {
        [
            SalesforceObject::Contact,
            SalesforceObject::Lead,
            SalesforceObject::Account,
            SalesforceObject::Case,
            SalesforceObject::Opportunity,
        ]
        .into_iter()
        .find(|o| o.as_str() == name)
    }
}

/// Whether `id` has the shape of a Salesforce record id (15 or 18
/// letters and digits).
pub fn is_record_id(id: &str) -> bool {
    (id.len() == 15 || id.len() == 18) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A record the caller may be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"id": "003000000000001AAA", "object": "Contact", "name": "Ada Lovelace", "account_id": "001000000000001AAA", "phone": "(415) 555-0100"}))]
pub struct RecordMatch {
    pub id: String,
    pub object: SalesforceObject,
    pub name: String,
    /// A Contact's Account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// A Lead's company.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    /// The phone field that matched (the first with the number), as typed in Salesforce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// How a caller lookup went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MatchStatus {
    /// One or more records have the number.
    Found,
    /// Salesforce has no record the agent may see with the number.
    NotFound,
    /// Not a number to look up: withheld, or an extension.
    NotSearched,
    /// The agent has not connected with Salesforce (or must again).
    NotConnected,
    /// Salesforce did not answer in time or refused; the softphone may
    /// ask again with `GET /v1/calls/{id}/matches`.
    Unavailable,
}

/// Who the caller may be, for one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"number": "+14155550100", "status": "found", "matches": [{"id": "003000000000001AAA", "object": "Contact", "name": "Ada Lovelace", "phone": "(415) 555-0100"}]}))]
pub struct CallerMatches {
    /// The customer's number, E.164 when it is one.
    pub number: String,
    pub status: MatchStatus,
    /// Every match, Contacts first, then Leads, then Accounts.
    pub matches: Vec<RecordMatch>,
}

/// A Case or an Opportunity a call can be assigned to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"id": "500000000000001AAA", "object": "Case", "name": "00001001", "subject": "Invoice missing", "status": "New"}))]
pub struct WorkItem {
    pub id: String,
    pub object: SalesforceObject,
    /// The Case number, or the Opportunity's name.
    pub name: String,
    /// A Case's subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// A Case's status, or an Opportunity's stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<String>,
}

/// What a Case or Opportunity search looks for.
#[derive(Debug, Clone, Default)]
pub struct WorkSearch {
    /// Words of a subject, number or name (prefix match); when empty, the
    /// newest records of `contact_id` / `account_id`.
    pub text: Option<String>,
    pub contact_id: Option<String>,
    pub account_id: Option<String>,
    pub limit: usize,
}

/// Why a search could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Salesforce(#[from] SalesforceError),
}

type CacheKey = (String, String);

/// Caller matching and searches on the agent's behalf.
#[derive(Clone)]
pub struct SalesforceContext {
    api: SalesforceApi,
    home: country::Id,
    cache: moka::future::Cache<CacheKey, Arc<Vec<RecordMatch>>>,
}

impl std::fmt::Debug for SalesforceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesforceContext")
            .field("home", &self.home)
            .finish_non_exhaustive()
    }
}

/// Most records one caller lookup returns.
const MATCH_LIMIT: usize = 25;

impl SalesforceContext {
    pub fn new(
        api: SalesforceApi,
        home: country::Id,
        cache_ttl: Duration,
        cache_entries: u64,
    ) -> SalesforceContext {
        let cache = moka::future::Cache::builder()
            .max_capacity(cache_entries)
            .time_to_live(cache_ttl)
            .build();
        SalesforceContext { api, home, cache }
    }

    pub fn api(&self) -> &SalesforceApi {
        &self.api
    }

    /// Who `raw` (a caller as presented) may be, as `who` sees it.
    pub async fn match_caller(&self, who: &AgentGrant, raw: &str) -> CallerMatches {
        let number = match numbers::normalise(raw, self.home) {
            Ok(n) => n,
            Err(NumberError::Withheld | NumberError::NotANumber(_)) => {
                return CallerMatches {
                    number: raw.to_owned(),
                    status: MatchStatus::NotSearched,
                    matches: Vec::new(),
                };
            }
        };
        let key = (who.grant.user_id.clone(), number.e164.clone());
        let started = std::time::Instant::now();
        let cached = self.cache.contains_key(&key);
        let (api, terms) = (self.api.clone(), number.search_digits.clone());
        let mut grant = who.clone();
        let result = self
            .cache
            .try_get_with(key, async move {
                let sosl = phone_search(&terms);
                let answer = api
                    .get(&mut grant, "search/", &[("q", sosl.as_str())])
                    .await?;
                // A refreshed token reaches later requests through the
                // session store.
                Ok::<_, SalesforceError>(Arc::new(parse_matches(&answer, &terms)))
            })
            .await;
        metrics::histogram!("switchboard_caller_match_seconds", "cache" => if cached { "hit" } else { "miss" }).record(started.elapsed().as_secs_f64());
        match result {
            Ok(matches) => {
                let status = if matches.is_empty() {
                    MatchStatus::NotFound
                } else {
                    MatchStatus::Found
                };
                metrics::counter!("switchboard_caller_matches_total", "status" => status_name(status)).increment(1);
                CallerMatches {
                    number: number.e164,
                    status,
                    matches: matches.as_ref().clone(),
                }
            }
            Err(e) => {
                let status = match e.as_ref() {
                    SalesforceError::NotConnected | SalesforceError::Expired(_) => {
                        MatchStatus::NotConnected
                    }
                    _ => MatchStatus::Unavailable,
                };
                tracing::warn!(error = %e, "caller lookup in Salesforce failed");
                metrics::counter!("switchboard_caller_matches_total", "status" => status_name(status)).increment(1);
                CallerMatches {
                    number: number.e164,
                    status,
                    matches: Vec::new(),
                }
            }
        }
    }

    /// Cases (newest first) matching the search.
    pub async fn cases(
        &self,
        who: &mut AgentGrant,
        search: &WorkSearch,
    ) -> Result<Vec<WorkItem>, SearchError> {
        self.work(who, SalesforceObject::Case, search).await
    }

    /// Opportunities matching the search.
    pub async fn opportunities(
        &self,
        who: &mut AgentGrant,
        search: &WorkSearch,
    ) -> Result<Vec<WorkItem>, SearchError> {
        self.work(who, SalesforceObject::Opportunity, search).await
    }

    async fn work(
        &self,
        who: &mut AgentGrant,
        object: SalesforceObject,
        search: &WorkSearch,
    ) -> Result<Vec<WorkItem>, SearchError> {
        let (fields, filters): (&str, &[(&str, &Option<String>)]) = match object {
            SalesforceObject::Case => (
                "Id, CaseNumber, Subject, Status, AccountId, ContactId",
                &[
                    ("ContactId", &search.contact_id),
                    ("AccountId", &search.account_id),
                ],
            ),
            _ => (
                "Id, Name, StageName, AccountId",
                &[("AccountId", &search.account_id)],
            ),
        };
        let limit = search.limit.clamp(1, 200);
        let answer = match search
            .text
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            Some(text) => {
                let words = sosl_words(text).ok_or_else(|| {
                    SearchError::Invalid("search for at least two letters or digits".into())
                })?;
                let sosl = format!(
                    "FIND {{{words}}} IN ALL FIELDS RETURNING {}({fields}) LIMIT {limit}",
                    object.as_str()
                );
                self.api
                    .get(who, "search/", &[("q", sosl.as_str())])
                    .await?
            }
            None => {
                let mut conditions = Vec::new();
                for (field, value) in filters {
                    if let Some(id) = value {
                        if !is_record_id(id) {
                            return Err(SearchError::Invalid(format!(
                                "`{id}` is not a Salesforce id (15 or 18 letters and digits)"
                            )));
                        }
                        conditions.push(format!("{field} = '{id}'"));
                    }
                }
                if conditions.is_empty() {
                    let wanted = filters
                        .iter()
                        .map(|(f, _)| f.to_ascii_lowercase().replace("id", "_id"))
                        .collect::<Vec<_>>()
                        .join(" or ");
                    return Err(SearchError::Invalid(format!(
                        "give `q` (words to search for) or {wanted}"
                    )));
                }
                let soql = format!(
                    "SELECT {fields} FROM {} WHERE {} ORDER BY CreatedDate DESC LIMIT {limit}",
                    object.as_str(),
                    conditions.join(" AND ")
                );
                self.api.get(who, "query/", &[("q", soql.as_str())]).await?
            }
        };
        Ok(records(&answer).iter().filter_map(work_item).collect())
    }

    /// Reads a record the agent chose or assigns a call to, as the agent:
    /// its object and display name, or `Refused` 404 when it does not
    /// exist or the agent may not see it.
    pub async fn record(
        &self,
        who: &mut AgentGrant,
        id: &str,
    ) -> Result<(SalesforceObject, String), SearchError> {
        let object = SalesforceObject::of_id(id).ok_or_else(|| {
            SearchError::Invalid(format!(
                "`{id}` is not the id of a Contact, Lead, Account, Case or Opportunity"
            ))
        })?;
        let fields = match object {
            SalesforceObject::Case => "Id,CaseNumber,Subject",
            _ => "Id,Name",
        };
        let answer = self
            .api
            .get(
                who,
                &format!("sobjects/{}/{id}", object.as_str()),
                &[("fields", fields)],
            )
            .await?;
        let name = text(&answer, "Name")
            .or_else(|| text(&answer, "CaseNumber"))
            .unwrap_or_default();
        Ok((object, name))
    }
}

fn status_name(status: MatchStatus) -> &'static str {
    match status {
        MatchStatus::Found => "found",
        MatchStatus::NotFound => "not_found",
        MatchStatus::NotSearched => "not_searched",
        MatchStatus::NotConnected => "not_connected",
        MatchStatus::Unavailable => "unavailable",
    }
}

/// The SOSL of a caller lookup: every digit form of the number in phone
/// fields of Contacts, Leads and Accounts.
fn phone_search(digits: &[String]) -> String {
    let terms = digits
        .iter()
        .map(|d| format!("\"{d}\""))
        .collect::<Vec<_>>()
        .join(" OR ");
    format!(
        "FIND {{{terms}}} IN PHONE FIELDS RETURNING Contact(Id, Name, AccountId, Phone, MobilePhone, HomePhone, OtherPhone), \
         Lead(Id, Name, Company, Phone, MobilePhone), Account(Id, Name, Phone) LIMIT {MATCH_LIMIT}"
    )
}

/// Search words for SOSL: each word escaped and matched as a prefix; `None`
/// when nothing searchable is left.
fn sosl_words(text: &str) -> Option<String> {
    const RESERVED: &str = "?&|!{}[]()^~*:\\\"'+-";
    let words: Vec<String> = text
        .split_whitespace()
        // SOSL's operators are not words to look for.
        .filter(|w| !["and", "or", "not"].contains(&w.to_ascii_lowercase().as_str()))
        .take(8)
        .map(|w| {
            let mut escaped = String::with_capacity(w.len() + 2);
            for c in w.chars().take(64) {
                if RESERVED.contains(c) {
                    escaped.push('\\');
                }
                escaped.push(c);
            }
            escaped
        })
        .filter(|w| w.chars().filter(|c| c.is_alphanumeric()).count() >= 2)
        .map(|w| format!("{w}*"))
        .collect();
    (!words.is_empty()).then(|| words.join(" OR "))
}

/// The records of a search (`searchRecords`) or query (`records`) answer.
fn records(answer: &Value) -> Vec<Value> {
    answer
        .get("searchRecords")
        .or_else(|| answer.get("records"))
        .and_then(Value::as_array)
        .or_else(|| answer.as_array())
        .cloned()
        .unwrap_or_default()
}

fn text(record: &Value, field: &str) -> Option<String> {
    record
        .get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn object_of(record: &Value) -> Option<SalesforceObject> {
    record
        .pointer("/attributes/type")
        .and_then(Value::as_str)
        .and_then(SalesforceObject::parse)
}

fn parse_matches(answer: &Value, digits: &[String]) -> Vec<RecordMatch> {
    let mut found: Vec<RecordMatch> = records(answer)
        .iter()
        .filter_map(|r| {
            let object = object_of(r)?;
            let phone = ["Phone", "MobilePhone", "HomePhone", "OtherPhone"]
                .into_iter()
                .filter_map(|f| text(r, f))
                .find(|p| {
                    let have: String = p.chars().filter(char::is_ascii_digit).collect();
                    digits.contains(&have)
                });
            Some(RecordMatch {
                id: text(r, "Id")?,
                object,
                name: text(r, "Name").unwrap_or_default(),
                account_id: text(r, "AccountId"),
                company: text(r, "Company"),
                phone,
            })
        })
        .collect();
    found.sort_by_key(|m| m.object as u8);
    found
}

fn work_item(r: &Value) -> Option<WorkItem> {
    let object = object_of(r)?;
    Some(WorkItem {
        id: text(r, "Id")?,
        object,
        name: text(r, "CaseNumber")
            .or_else(|| text(r, "Name"))
            .unwrap_or_default(),
        subject: text(r, "Subject"),
        status: text(r, "Status").or_else(|| text(r, "StageName")),
        account_id: text(r, "AccountId"),
        contact_id: text(r, "ContactId"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_name_their_object_and_nothing_else_passes() {
        assert_eq!(
            SalesforceObject::of_id("003000000000001AAA"),
            Some(SalesforceObject::Contact)
        );
        assert_eq!(
            SalesforceObject::of_id("00Q000000000001"),
            Some(SalesforceObject::Lead)
        );
        assert_eq!(
            SalesforceObject::of_id("005000000000001AAA"),
            None,
            "a user is not a caller record"
        );
        assert_eq!(SalesforceObject::of_id("003' OR Name != '"), None);
        assert!(!is_record_id("003000000000001AA"));
    }

    #[test]
    fn search_words_are_escaped_prefixes() {
        assert_eq!(
            sosl_words("invoice march").as_deref(),
            Some("invoice* OR march*")
        );
        assert_eq!(
            sosl_words("a} OR {b").as_deref(),
            None,
            "single letters and operators are not searched"
        );
        assert_eq!(
            sosl_words("x-ray (urgent)").as_deref(),
            Some("x\\-ray* OR \\(urgent\\)*")
        );
        assert_eq!(sosl_words("   "), None);
    }

    #[test]
    fn the_phone_search_names_every_digit_form() {
        let q = phone_search(&["14155550100".into(), "4155550100".into()]);
        assert!(
            q.starts_with(
                "FIND {\"14155550100\" OR \"4155550100\"} IN PHONE FIELDS RETURNING Contact("
            ),
            "{q}"
        );
    }

    #[test]
    fn matches_come_contacts_first_with_the_phone_that_matched() {
        let answer = json!({"searchRecords": [
            {"attributes": {"type": "Account"}, "Id": "001000000000001AAA", "Name": "Acme", "Phone": "415.555.0100"},
            {"attributes": {"type": "Lead"}, "Id": "00Q000000000001AAA", "Name": "Bo", "Company": "Bo Ltd", "Phone": null, "MobilePhone": "(415) 555-0100"},
            {"attributes": {"type": "Contact"}, "Id": "003000000000001AAA", "Name": "Ada", "AccountId": "001000000000001AAA", "Phone": "+1 212 555 0000", "MobilePhone": "+1 415 555 0100"},
            {"attributes": {"type": "User"}, "Id": "005000000000001AAA"}
        ]});
        let got = parse_matches(&answer, &["14155550100".into(), "4155550100".into()]);
        let order: Vec<_> = got.iter().map(|m| m.object).collect();
        assert_eq!(
            order,
            vec![
                SalesforceObject::Contact,
                SalesforceObject::Lead,
                SalesforceObject::Account
            ]
        );
        assert_eq!(got[0].phone.as_deref(), Some("+1 415 555 0100"));
        assert_eq!(got[1].company.as_deref(), Some("Bo Ltd"));
        assert_eq!(got[2].phone.as_deref(), Some("415.555.0100"));
    }
}
