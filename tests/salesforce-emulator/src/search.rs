//! A subset of SOSL for `GET /search?q=`: the caller lookup Switchboard makes
//! when a call comes in, `FIND {…} IN PHONE FIELDS RETURNING Contact(Id,
//! Name), Lead(Id, Name)`.
//!
//! Salesforce keeps phone numbers as they were typed. The emulator matches a
//! search term against a phone field when both hold the same digits, so
//! `(415) 555-0100` is found by `415-555-0100` but not by `+14155550100`: a
//! client has to search the formats it expects, as against a real org. Terms
//! are separated by `OR`, may be quoted, and may end in `*` for a prefix.
//! `IN NAME FIELDS`, `IN EMAIL FIELDS` and `IN ALL FIELDS` match words of
//! names, emails and every text field without regard to case.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::{json, Map, Value};

use crate::errors::ApiError;
use crate::schema::{FieldKind, ObjectType, Schema};
use crate::session::Caller;
use crate::state::Shared;
use crate::store::{attributes, Record};

/// Objects searched when the query names none.
const DEFAULT_OBJECTS: &[&str] = &["Account", "Contact", "Lead", "Case", "Opportunity"];

/// First API version answering `{"searchRecords": […]}` instead of a bare array.
const SEARCH_RECORDS_SINCE: u32 = 36;

/// Which fields a search looks at.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scope {
    All,
    Name,
    Email,
    Phone,
}

/// One search term.
#[derive(Clone, Debug, PartialEq)]
struct Term {
    text: String,
    prefix: bool,
}

/// One `RETURNING` entry.
#[derive(Clone, Debug, PartialEq)]
struct Returning {
    object: String,
    fields: Vec<String>,
}

/// A parsed search.
#[derive(Debug, PartialEq)]
struct Sosl {
    terms: Vec<Term>,
    scope: Scope,
    returning: Vec<Returning>,
    limit: Option<usize>,
}

fn malformed(message: impl Into<String>) -> ApiError {
    ApiError::plain(StatusCode::BAD_REQUEST, "MALFORMED_SEARCH", message)
}

/// Splits `FIND {…}` into the search expression and the rest.
fn split_find(query: &str) -> Result<(String, &str), ApiError> {
    let trimmed = query.trim_start();
    let rest = trimmed
        .get(..4)
        .filter(|k| k.eq_ignore_ascii_case("FIND"))
        .and_then(|_| trimmed.get(4..))
        .ok_or_else(|| malformed("line 1:0 no viable alternative at character; expecting FIND"))?
        .trim_start();
    let body = rest
        .strip_prefix('{')
        .ok_or_else(|| malformed("search expression must be enclosed in braces {}"))?;
    let mut expression = String::new();
    let mut chars = body.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    expression.push(escaped);
                }
            }
            '}' => return Ok((expression, &body[index + 1..])),
            other => expression.push(other),
        }
    }
    Err(malformed("search expression is missing its closing brace"))
}

fn parse_terms(expression: &str) -> Result<Vec<Term>, ApiError> {
    let mut terms = Vec::new();
    let mut rest = expression.trim();
    while !rest.is_empty() {
        let (raw, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted
                .find('"')
                .ok_or_else(|| malformed("unterminated quoted phrase"))?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        let prefix = raw.ends_with('*');
        let text = raw.trim_end_matches('*').trim().to_owned();
        if text.chars().count() < 2 {
            return Err(malformed("search term must be longer than one character"));
        }
        terms.push(Term { text, prefix });
        rest = after.trim_start();
        if let Some(after_or) = rest
            .get(..3)
            .filter(|w| w.eq_ignore_ascii_case("OR "))
            .and_then(|_| rest.get(3..))
        {
            rest = after_or.trim_start();
        } else if !rest.is_empty() {
            return Err(malformed("only OR may join search terms"));
        }
    }
    if terms.is_empty() {
        return Err(malformed("empty search expression"));
    }
    Ok(terms)
}

fn parse(query: &str) -> Result<Sosl, ApiError> {
    let (expression, rest) = split_find(query)?;
    let terms = parse_terms(&expression)?;
    let words: Vec<String> = rest
        .replace('(', " ( ")
        .replace(')', " ) ")
        .replace(',', " , ")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let mut at = 0;
    let word_is = |at: usize, w: &str| words.get(at).is_some_and(|x| x.eq_ignore_ascii_case(w));
    let mut scope = Scope::All;
    if word_is(at, "IN") {
        scope = match words.get(at + 1).map(|w| w.to_ascii_uppercase()).as_deref() {
            Some("ALL") => Scope::All,
            Some("NAME") => Scope::Name,
            Some("EMAIL") => Scope::Email,
            Some("PHONE") => Scope::Phone,
            _ => {
                return Err(malformed(
                    "unknown search group; use ALL, NAME, EMAIL or PHONE FIELDS",
                ))
            }
        };
        if !word_is(at + 2, "FIELDS") {
            return Err(malformed("expecting FIELDS after the search group"));
        }
        at += 3;
    }
    let mut returning = Vec::new();
    if word_is(at, "RETURNING") {
        at += 1;
        loop {
            let object = words
                .get(at)
                .cloned()
                .ok_or_else(|| malformed("expecting an object after RETURNING"))?;
            at += 1;
            let mut fields = Vec::new();
            if word_is(at, "(") {
                at += 1;
                while !word_is(at, ")") {
                    let field = words
                        .get(at)
                        .ok_or_else(|| malformed("unclosed field list"))?;
                    if field != "," {
                        fields.push(field.clone());
                    }
                    at += 1;
                }
                at += 1;
            }
            returning.push(Returning { object, fields });
            if word_is(at, ",") {
                at += 1;
            } else {
                break;
            }
        }
    }
    let mut limit = None;
    if word_is(at, "LIMIT") {
        let n = words
            .get(at + 1)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| malformed("LIMIT needs a number"))?;
        limit = Some(n);
        at += 2;
    }
    if let Some(extra) = words.get(at) {
        return Err(malformed(format!("unexpected token: '{extra}'")));
    }
    Ok(Sosl {
        terms,
        scope,
        returning,
        limit,
    })
}

fn digits(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

fn is_phone(name: &str) -> bool {
    name.ends_with("Phone")
}

fn is_name(name: &str) -> bool {
    matches!(
        name,
        "Name" | "FirstName" | "LastName" | "Company" | "Subject" | "CaseNumber"
    )
}

fn phone_matches(term: &Term, value: &str) -> bool {
    let wanted = digits(&term.text);
    let have = digits(value);
    !wanted.is_empty() && (have == wanted || (term.prefix && have.starts_with(&wanted)))
}

fn word_matches(term: &Term, value: &str) -> bool {
    let wanted = term.text.to_lowercase();
    let value = value.to_lowercase();
    if value == wanted || (term.prefix && value.starts_with(&wanted)) {
        return true;
    }
    value
        .split(|c: char| !c.is_alphanumeric() && c != '@' && c != '.')
        .any(|w| w == wanted || (term.prefix && w.starts_with(&wanted)))
}

fn record_matches(object: &ObjectType, record: &Record, terms: &[Term], scope: Scope) -> bool {
    object
        .fields
        .iter()
        .filter(|f| matches!(f.kind, FieldKind::Text { .. } | FieldKind::Picklist { .. }))
        .any(|field| {
            let Some(value) = record.fields.get(&field.name).and_then(Value::as_str) else {
                return false;
            };
            let name = field.name.as_str();
            terms.iter().any(|term| match scope {
                Scope::Phone => is_phone(name) && phone_matches(term, value),
                Scope::Name => is_name(name) && word_matches(term, value),
                Scope::Email => name == "Email" && word_matches(term, value),
                Scope::All => {
                    if is_phone(name) {
                        phone_matches(term, value)
                    } else {
                        word_matches(term, value)
                    }
                }
            })
        })
}

fn resolve<'a>(
    schema: &'a Schema,
    returning: &[Returning],
) -> Result<Vec<(&'a ObjectType, Vec<String>)>, ApiError> {
    if returning.is_empty() {
        return Ok(DEFAULT_OBJECTS
            .iter()
            .filter_map(|n| schema.object(n))
            .map(|o| (o, vec!["Id".to_owned()]))
            .collect());
    }
    returning
        .iter()
        .map(|r| {
            let object = schema.object(&r.object).ok_or_else(|| {
                ApiError::plain(
                    StatusCode::BAD_REQUEST,
                    "INVALID_TYPE",
                    format!("sObject type '{}' is not supported.", r.object),
                )
            })?;
            let names = if r.fields.is_empty() {
                vec!["Id".to_owned()]
            } else {
                r.fields.clone()
            };
            let fields = names
                .iter()
                .map(|n| {
                    object.field(n).map(|f| f.name.clone()).ok_or_else(|| {
                        ApiError::plain(
                            StatusCode::BAD_REQUEST,
                            "INVALID_FIELD",
                            format!("No such column '{n}' on entity '{}'.", object.name),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((object, fields))
        })
        .collect()
}

/// `GET /search?q=…`.
pub(crate) async fn search(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let text = params
        .get("q")
        .ok_or_else(|| malformed("A search string has to be specified"))?;
    let sosl = parse(text)?;
    let targets = resolve(&shared.schema, &sosl.returning)?;
    let inner = shared.lock();
    let mut found = Vec::new();
    for (object, fields) in targets {
        for record in inner
            .store
            .records(object.name)
            .filter(|r| record_matches(object, r, &sosl.terms, sosl.scope))
            .filter(|r| inner.can_read(&shared.default_user_id, &caller.user_id, object.name, r))
        {
            let mut out = Map::new();
            out.insert(
                "attributes".to_owned(),
                attributes(object.name, record.id(), caller.version),
            );
            for name in &fields {
                out.insert(
                    name.clone(),
                    record.fields.get(name).cloned().unwrap_or(Value::Null),
                );
            }
            found.push(Value::Object(out));
        }
    }
    if let Some(limit) = sosl.limit {
        found.truncate(limit);
    }
    if caller.version >= SEARCH_RECORDS_SINCE {
        Ok(Json(json!({"searchRecords": found})))
    } else {
        Ok(Json(Value::Array(found)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_phone_lookup() {
        let sosl = parse(r"FIND {415\-555\-0100 OR +14155550100} IN PHONE FIELDS RETURNING Contact(Id, Name), Lead(Id,Name) LIMIT 10")
            .expect("parse");
        assert_eq!(sosl.scope, Scope::Phone);
        assert_eq!(sosl.terms.len(), 2);
        assert_eq!(sosl.terms[0].text, "415-555-0100");
        assert_eq!(
            sosl.returning[1],
            Returning {
                object: "Lead".to_owned(),
                fields: vec!["Id".to_owned(), "Name".to_owned()]
            }
        );
        assert_eq!(sosl.limit, Some(10));
    }

    #[test]
    fn phone_terms_match_same_digits_only() {
        let term = Term {
            text: "415-555-0100".to_owned(),
            prefix: false,
        };
        assert!(phone_matches(&term, "(415) 555-0100"));
        assert!(!phone_matches(&term, "+1 415 555 0100"));
        let e164 = Term {
            text: "+14155550100".to_owned(),
            prefix: false,
        };
        assert!(phone_matches(&e164, "+1 (415) 555-0100"));
    }

    #[test]
    fn rejects_malformed_searches() {
        for bad in [
            "SELECT Id FROM Contact",
            "FIND 4155550100",
            "FIND {x}",
            "FIND {ab} IN FAX FIELDS",
            "FIND {ab AND cd}",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
