//! The start-up preflight: before consuming anything, the connector describes
//! Task and Case as the integration user and checks that the org can take
//! its writes: the configured external id fields exist and are marked
//! External ID, and every field the connector writes ([`TASK_FIELDS`],
//! [`CASE_FIELDS`]) may be set by the user. Every problem is reported at
//! once, in one message that says what to deploy or configure.
//!
//! Only a definitive answer stops the start. When Salesforce cannot be asked
//! (unreachable, 5xx, API limit, refused login, slow), the connector starts
//! anyway and the pipeline retries as usual: an outage must never keep the
//! connector from starting.

use std::fmt;
use std::time::Duration;

use crate::config::{SalesforceAuth, SalesforceConfig};
use crate::fold::{WrittenField, CASE_FIELDS, TASK_FIELDS};
use crate::metrics as m;
use crate::salesforce::{ErrorClass, ObjectDescribe, SalesforceClient};

/// How long the preflight waits for Salesforce (login and both describes)
/// before it gives up and lets the connector start unchecked.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The permission set of `deploy/salesforce/permissionsets/`.
pub const PERMISSION_SET: &str = "Switchboard_Integration";

/// What the preflight found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every field is there and writable.
    Ready,
    /// The org cannot take the connector's writes: every problem, and what
    /// to do about it.
    Misconfigured(String),
    /// Salesforce could not be asked; the reason.
    Unchecked(String),
}

/// One reason the org cannot take the connector's writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Salesforce refused to describe the object (no access to it, or an
    /// API version the org does not serve).
    ObjectRefused {
        /// `Task` or `Case`.
        sobject: &'static str,
        /// Salesforce's answer.
        error: String,
    },
    /// The configured external id field is not in the describe: not
    /// deployed, or hidden from the integration user.
    ExternalIdMissing {
        /// `Task` or `Case`.
        sobject: &'static str,
        /// The configured field name.
        field: String,
        /// The configuration key naming it.
        key: &'static str,
    },
    /// The configured external id field exists but is not marked External ID.
    NotExternalId {
        /// `Task` or `Case`.
        sobject: &'static str,
        /// The configured field name.
        field: String,
        /// The configuration key naming it.
        key: &'static str,
    },
    /// A field the connector writes is hidden from the integration user.
    FieldMissing {
        /// `Task` or `Case`.
        sobject: &'static str,
        /// The field's API name.
        field: String,
    },
    /// The integration user may not set the field on a new record.
    NotCreateable {
        /// `Task` or `Case`.
        sobject: &'static str,
        /// The field's API name.
        field: String,
    },
    /// The integration user may not change the field on an existing record.
    NotUpdateable {
        /// `Task` or `Case`.
        sobject: &'static str,
        /// The field's API name.
        field: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::ObjectRefused { sobject, error } => write!(
                f,
                "{sobject} cannot be described ({error}): the integration user needs access to {sobject}, and salesforce.api_version must be a version the org serves"
            ),
            Problem::ExternalIdMissing { sobject, field, key } => write!(
                f,
                "{sobject}.{field} ({key}) does not exist, or the integration user cannot read it"
            ),
            Problem::NotExternalId { sobject, field, key } => write!(
                f,
                "{sobject}.{field} ({key}) is not marked External ID, so the connector cannot upsert by it"
            ),
            Problem::FieldMissing { sobject, field } => {
                write!(f, "{sobject}.{field} is written by the connector but the integration user cannot read it")
            }
            Problem::NotCreateable { sobject, field } => {
                write!(f, "{sobject}.{field} is written by the connector but the integration user cannot set it on create")
            }
            Problem::NotUpdateable { sobject, field } => {
                write!(f, "{sobject}.{field} is written by the connector but the integration user cannot edit it")
            }
        }
    }
}

/// Describes Task and Case with `client` and checks them, within `timeout`.
/// Records `switchboard_connector_preflight_total{result}`.
pub async fn run(client: &SalesforceClient, timeout: Duration) -> Verdict {
    let verdict = match tokio::time::timeout(timeout, describe_and_check(client)).await {
        Ok(verdict) => verdict,
        Err(_) => Verdict::Unchecked(format!("Salesforce did not answer within {} s", timeout.as_secs())),
    };
    m::preflight(match verdict {
        Verdict::Ready => "ready",
        Verdict::Misconfigured(_) => "misconfigured",
        Verdict::Unchecked(_) => "unchecked",
    });
    verdict
}

async fn describe_and_check(client: &SalesforceClient) -> Verdict {
    let config = client.config();
    let mut problems = Vec::new();
    for (sobject, field, key, written) in [
        ("Task", &config.task_external_id_field, "salesforce.task_external_id_field", TASK_FIELDS),
        ("Case", &config.case_external_id_field, "salesforce.case_external_id_field", CASE_FIELDS),
    ] {
        match client.describe(sobject).await {
            Ok(describe) => problems.extend(check_object(sobject, &describe, field, key, written)),
            Err(e) if e.class() == ErrorClass::Permanent => {
                problems.push(Problem::ObjectRefused { sobject, error: e.to_string() })
            }
            Err(e) => return Verdict::Unchecked(e.to_string()),
        }
    }
    if problems.is_empty() {
        Verdict::Ready
    } else {
        Verdict::Misconfigured(report(&problems, config))
    }
}

/// The problems of one object's describe: its external id field
/// (`external_id_field`, configured under `key`) must exist, be an external
/// id and be createable; every field of `written` must be createable, and
/// updateable when it is written on update.
pub fn check_object(
    sobject: &'static str,
    describe: &ObjectDescribe,
    external_id_field: &str,
    key: &'static str,
    written: &[WrittenField],
) -> Vec<Problem> {
    let mut problems = Vec::new();
    match describe.field(external_id_field) {
        None => problems.push(Problem::ExternalIdMissing { sobject, field: external_id_field.to_owned(), key }),
        Some(f) => {
            if !f.external_id {
                problems.push(Problem::NotExternalId { sobject, field: f.name.clone(), key });
            }
            if !f.createable {
                problems.push(Problem::NotCreateable { sobject, field: f.name.clone() });
            }
        }
    }
    for w in written {
        match describe.field(w.name) {
            None => problems.push(Problem::FieldMissing { sobject, field: w.name.to_owned() }),
            Some(f) => {
                if !f.createable {
                    problems.push(Problem::NotCreateable { sobject, field: f.name.clone() });
                }
                if w.updated && !f.updateable {
                    problems.push(Problem::NotUpdateable { sobject, field: f.name.clone() });
                }
            }
        }
    }
    problems
}

/// The message for an administrator: every problem, then what to do.
pub fn report(problems: &[Problem], config: &SalesforceConfig) -> String {
    // With client credentials the connector does not know the Run As
    // user's username: the administrator fills it in.
    let (who, on_behalf_of) = match config.auth {
        SalesforceAuth::JwtBearer => (format!("the integration user {}", config.username), config.username.clone()),
        SalesforceAuth::ClientCredentials => (config.integration_user(), "<the Run As user's username>".to_owned()),
    };
    let mut text = format!("the Salesforce org cannot take the connector's writes as {who}:\n");
    for p in problems {
        text.push_str(&format!("  - {p}\n"));
    }
    text.push_str(&format!(
        "To fix it, deploy the connector's metadata (the external id fields Task.Switchboard_Key__c and \
         Case.Switchboard_Assignment_Id__c, and the permission set {PERMISSION_SET}) with\n    \
         sf project deploy start --source-dir deploy/salesforce\n\
         and assign the permission set to the integration user with\n    \
         sf org assign permset --name {PERMISSION_SET} --on-behalf-of {on_behalf_of}\n"
    ));
    let external_ids = problems.iter().any(|p| matches!(p, Problem::ExternalIdMissing { .. } | Problem::NotExternalId { .. }));
    if external_ids {
        text.push_str(
            "or set salesforce.task_external_id_field / salesforce.case_external_id_field to the API name of a field \
             marked External ID that the integration user can edit.\n",
        );
    }
    text.push_str("See deploy/salesforce/README.md.");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn describe(json: serde_json::Value) -> ObjectDescribe {
        serde_json::from_value(json).expect("a describe")
    }

    fn field(name: &str, createable: bool, updateable: bool, external_id: bool) -> serde_json::Value {
        serde_json::json!({
            "name": name, "label": name, "type": "string", "createable": createable, "updateable": updateable,
            "externalId": external_id, "nillable": true, "custom": name.ends_with("__c"),
        })
    }

    /// A Task describe as Salesforce answers it, with every written field.
    fn task(key: Option<serde_json::Value>, change: impl Fn(&mut serde_json::Value)) -> ObjectDescribe {
        let mut fields: Vec<serde_json::Value> =
            TASK_FIELDS.iter().map(|f| field(f.name, true, f.updated, false)).collect();
        fields.push(field("Id", false, false, false));
        fields.extend(key);
        let mut json = serde_json::json!({"name": "Task", "label": "Task", "keyPrefix": "00T", "fields": fields});
        change(&mut json);
        describe(json)
    }

    fn set(json: &mut serde_json::Value, name: &str, property: &str, value: bool) {
        let fields = json["fields"].as_array_mut().unwrap();
        let f = fields.iter_mut().find(|f| f["name"] == name).unwrap();
        f[property] = serde_json::Value::Bool(value);
    }

    const KEY: &str = "salesforce.task_external_id_field";

    #[test]
    fn a_complete_describe_has_no_problem() {
        let d = task(Some(field("Switchboard_Key__c", true, true, true)), |_| {});
        assert_eq!(check_object("Task", &d, "switchboard_key__c", KEY, TASK_FIELDS), vec![]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let d = task(None, |json| {
            set(json, "CallType", "createable", false);
            set(json, "CallType", "updateable", false);
            set(json, "Description", "updateable", false);
            // TaskSubtype is create-only: not updateable is fine.
            set(json, "TaskSubtype", "updateable", false);
            let fields = json["fields"].as_array_mut().unwrap();
            fields.retain(|f| f["name"] != "WhoId");
        });
        let problems = check_object("Task", &d, "Switchboard_Key__c", KEY, TASK_FIELDS);
        assert_eq!(
            problems,
            vec![
                Problem::ExternalIdMissing { sobject: "Task", field: "Switchboard_Key__c".into(), key: KEY },
                Problem::NotCreateable { sobject: "Task", field: "CallType".into() },
                Problem::NotUpdateable { sobject: "Task", field: "CallType".into() },
                Problem::NotUpdateable { sobject: "Task", field: "Description".into() },
                Problem::FieldMissing { sobject: "Task", field: "WhoId".into() },
            ]
        );

        let d = task(Some(field("Switchboard_Key__c", true, true, false)), |_| {});
        assert_eq!(
            check_object("Task", &d, "Switchboard_Key__c", KEY, TASK_FIELDS),
            vec![Problem::NotExternalId { sobject: "Task", field: "Switchboard_Key__c".into(), key: KEY }]
        );
        let d = task(Some(field("Switchboard_Key__c", false, false, true)), |_| {});
        assert_eq!(
            check_object("Task", &d, "Switchboard_Key__c", KEY, TASK_FIELDS),
            vec![Problem::NotCreateable { sobject: "Task", field: "Switchboard_Key__c".into() }]
        );
    }

    #[test]
    fn the_report_names_each_field_and_the_fix() {
        let config = SalesforceConfig::new("key", "integration@example.com", "/k.pem");
        let problems = vec![
            Problem::ExternalIdMissing { sobject: "Task", field: "Switchboard_Key__c".into(), key: KEY },
            Problem::NotCreateable { sobject: "Task", field: "CallType".into() },
        ];
        let text = report(&problems, &config);
        assert!(text.contains("Task.Switchboard_Key__c (salesforce.task_external_id_field) does not exist"), "{text}");
        assert!(text.contains("Task.CallType"), "{text}");
        assert!(text.contains("sf project deploy start --source-dir deploy/salesforce"), "{text}");
        assert!(text.contains("sf org assign permset --name Switchboard_Integration --on-behalf-of integration@example.com"), "{text}");
        assert!(text.contains("or set salesforce.task_external_id_field"), "{text}");

        let text = report(&problems[1..], &config);
        assert!(!text.contains("or set salesforce.task_external_id_field"), "{text}");

        let config = SalesforceConfig::client_credentials("https://acme.my.salesforce.com", "3MVG9key", "/run/secrets/sf");
        let text = report(&problems, &config);
        assert!(text.contains("writes as the Run As user of connected app 3MVG9key:"), "{text}");
        assert!(text.contains("--on-behalf-of <the Run As user's username>"), "{text}");
    }

    #[test]
    fn describes_parse_with_unknown_properties_and_missing_flags() {
        let d = describe(serde_json::json!({"name": "Case", "fields": [{"name": "Subject", "createable": true}], "urls": {}}));
        let subject = d.field("subject").unwrap();
        assert!(subject.createable && !subject.updateable && !subject.external_id);
    }
}
