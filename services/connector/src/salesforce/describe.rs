//! The part of an sObject describe the connector reads: which fields the
//! integration user sees, and what it may do with each.
//!
//! Salesforce leaves out of a describe the fields the user cannot read
//! (field-level security), so a field missing here is either not deployed or
//! hidden from the user; `createable` and `updateable` already take the
//! user's edit access into account.

use serde::Deserialize;

/// `GET /services/data/vXX.X/sobjects/{sobject}/describe`, trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ObjectDescribe {
    /// The object's API name, e.g. `Task`.
    pub name: String,
    /// The fields the user can see.
    #[serde(default)]
    pub fields: Vec<FieldDescribe>,
}

/// One field of a describe.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldDescribe {
    /// API name, e.g. `Switchboard_Key__c`.
    pub name: String,
    /// The user may set it when creating a record.
    #[serde(default)]
    pub createable: bool,
    /// The user may change it on an existing record.
    #[serde(default)]
    pub updateable: bool,
    /// Marked External ID: usable in upsert URLs.
    #[serde(default)]
    pub external_id: bool,
}

impl ObjectDescribe {
    /// The field named `name`, ignoring case as Salesforce does.
    pub fn field(&self, name: &str) -> Option<&FieldDescribe> {
        self.fields.iter().find(|f| f.name.eq_ignore_ascii_case(name))
    }
}
