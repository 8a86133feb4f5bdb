//! The org's records and the write rules that apply across fields.
//!
//! Field values are checked one by one in `validation`; this module adds what
//! needs the whole record or other records: required fields, defaults, owners
//! and lookups that must exist, the Task rule that a Lead in `WhoId` allows no
//! `WhatId`, create-only fields, upsert matching by external id, and the
//! platform-maintained fields (`CreatedDate`, `Name`, `CaseNumber`…).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::errors::{RecordError, WriteError};
use crate::ids;
use crate::schema::{FieldKind, ObjectType, Schema};
use crate::validation::{coerce, format_datetime};

/// One stored record: canonical field name to value (`Id` included).
#[derive(Clone, Debug, Default)]
pub(crate) struct Record {
    pub fields: BTreeMap<String, Value>,
}

impl Record {
    /// The record's 18-character id.
    pub(crate) fn id(&self) -> &str {
        self.fields.get("Id").and_then(Value::as_str).unwrap_or("")
    }

    /// Whether a User record is active (`IsActive`, true when unset).
    pub(crate) fn is_active_user(&self) -> bool {
        self.fields
            .get("IsActive")
            .and_then(Value::as_bool)
            .unwrap_or(true)
    }

    /// The record as the API answers it: `attributes`, then every field of
    /// the object, `null` where unset.
    pub(crate) fn to_json(&self, object: &ObjectType, version: u32) -> Value {
        let mut out = Map::new();
        out.insert(
            "attributes".to_owned(),
            attributes(object.name, self.id(), version),
        );
        for field in &object.fields {
            out.insert(
                field.name.clone(),
                self.fields.get(&field.name).cloned().unwrap_or(Value::Null),
            );
        }
        Value::Object(out)
    }
}

/// The `attributes` map of a record in an answer.
pub(crate) fn attributes(object: &str, id: &str, version: u32) -> Value {
    json!({"type": object, "url": format!("/services/data/v{version}.0/sobjects/{object}/{id}")})
}

/// Whether a write creates or changes a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Create,
    Update,
}

/// All records of the org, by object.
#[derive(Clone, Debug, Default)]
pub(crate) struct Store {
    /// Records are shared between copies of the store (an sObject
    /// Collections request works on a copy) and replaced, never changed.
    tables: HashMap<&'static str, BTreeMap<String, Arc<Record>>>,
    next_number: u64,
    next_case_number: u64,
    external_ids: ExternalIdIndex,
    /// Writes not yet reported to the write watchers; `None` while nobody
    /// watches. It travels with the copy an sObject Collections request
    /// works on, so a rolled-back write is never reported.
    journal: Option<Vec<Written>>,
}

/// Object → external id field → lowercased text value → ids of the records
/// holding it, so an upsert finds its record without reading every record
/// of the object.
type ExternalIdIndex = HashMap<&'static str, HashMap<String, HashMap<String, BTreeSet<String>>>>;

/// A record as one write left it, kept until the request is done.
#[derive(Clone, Debug)]
pub(crate) struct Written {
    pub object: &'static str,
    pub created: bool,
    pub at: Instant,
    pub record: Arc<Record>,
}

/// Who writes and when: the token's user and the request time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Writer<'a> {
    pub user_id: &'a str,
    pub now: DateTime<Utc>,
}

impl Store {
    /// An empty org.
    pub(crate) fn new() -> Store {
        Store {
            tables: HashMap::new(),
            next_number: 1,
            next_case_number: 1001,
            external_ids: HashMap::new(),
            journal: None,
        }
    }

    /// Starts (`true`) or stops keeping a journal of writes.
    pub(crate) fn keep_journal(&mut self, keep: bool) {
        if !keep {
            self.journal = None;
        } else if self.journal.is_none() {
            self.journal = Some(Vec::new());
        }
    }

    /// The writes made since the last call, oldest first.
    pub(crate) fn take_journal(&mut self) -> Vec<Written> {
        self.journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn note_write(&mut self, object: &'static str, created: bool, record: &Arc<Record>) {
        if let Some(journal) = &mut self.journal {
            journal.push(Written {
                object,
                created,
                at: Instant::now(),
                record: Arc::clone(record),
            });
        }
    }

    /// The records of one object, oldest first.
    pub(crate) fn records(&self, object: &str) -> impl Iterator<Item = &Record> {
        self.tables
            .get(object)
            .into_iter()
            .flat_map(|t| t.values().map(Arc::as_ref))
    }

    /// One record by its 18-character id.
    pub(crate) fn get(&self, object: &str, id: &str) -> Option<&Record> {
        self.tables
            .get(object)
            .and_then(|t| t.get(id))
            .map(Arc::as_ref)
    }

    /// The user with this username, compared without regard to case as
    /// Salesforce compares usernames at login.
    pub(crate) fn user_by_username(&self, username: &str) -> Option<&Record> {
        self.records("User").find(|u| {
            u.fields
                .get("Username")
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(username))
        })
    }

    /// Whether the user with this id exists and is active.
    pub(crate) fn user_is_active(&self, id: &str) -> bool {
        self.get("User", id).is_some_and(Record::is_active_user)
    }

    /// Whether a record with this id exists, whatever its object.
    pub(crate) fn exists(&self, schema: &Schema, id: &str) -> bool {
        schema
            .object_by_prefix(ids::key_prefix(id))
            .is_some_and(|o| self.get(o.name, id).is_some())
    }

    /// Ids of the records whose `field` equals `value` (text compared without
    /// regard to case, as non-case-sensitive external ids are), in id order.
    pub(crate) fn find_by_field(&self, object: &str, field: &str, value: &Value) -> Vec<String> {
        let indexed = self
            .external_ids
            .get(object)
            .and_then(|fields| fields.get(field));
        if let (Value::String(text), Some(values)) = (value, indexed) {
            // Text equals text only: the index holds every match.
            return values
                .get(&text.to_ascii_lowercase())
                .map(|ids| ids.iter().cloned().collect())
                .unwrap_or_default();
        }
        self.records(object)
            .filter(|r| r.fields.get(field).is_some_and(|v| same_value(v, value)))
            .map(|r| r.id().to_owned())
            .collect()
    }

    /// Creates a record from a request body and returns its id.
    pub(crate) fn create(
        &mut self,
        schema: &Schema,
        object: &ObjectType,
        body: &Map<String, Value>,
        writer: Writer<'_>,
    ) -> Result<String, WriteError> {
        let changes = prepare(object, body, Mode::Create)?;
        self.insert_prepared(schema, object, changes, None, writer)
    }

    /// Creates a record with an id chosen by the caller (seeded users).
    pub(crate) fn create_with_id(
        &mut self,
        schema: &Schema,
        object: &ObjectType,
        body: &Map<String, Value>,
        id: String,
        writer: Writer<'_>,
    ) -> Result<String, WriteError> {
        let changes = prepare(object, body, Mode::Create)?;
        self.insert_prepared(schema, object, changes, Some(id), writer)
    }

    /// Changes the record `id` with a request body.
    pub(crate) fn update(
        &mut self,
        schema: &Schema,
        object: &ObjectType,
        id: &str,
        body: &Map<String, Value>,
        writer: Writer<'_>,
    ) -> Result<(), WriteError> {
        let mut body = body.clone();
        if let Some(given) = take_ci(&mut body, "Id") {
            if given.as_str().and_then(ids::normalize).as_deref() != Some(id) {
                return Err(not_writable("Id").into());
            }
        }
        let changes = prepare(object, &body, Mode::Update)?;
        self.update_prepared(schema, object, id, changes, writer)
    }

    /// Creates or updates the record whose external id `field` equals `value`.
    /// Returns the record id and whether it was created.
    pub(crate) fn upsert(
        &mut self,
        schema: &Schema,
        object: &ObjectType,
        field_name: &str,
        value: &str,
        body: &Map<String, Value>,
        writer: Writer<'_>,
    ) -> Result<(String, bool), WriteError> {
        let field = object
            .field(field_name)
            .filter(|f| f.external_id)
            .ok_or(WriteError::NotFound)?;
        let key = coerce(field, &Value::String(value.to_owned()))?;
        if key.is_null() {
            return Err(RecordError::new(
                "MISSING_ARGUMENT",
                format!("{} not specified", field.name),
                &[],
            )
            .into());
        }
        let mut body = body.clone();
        if let Some(in_body) = take_ci(&mut body, &field.name) {
            let in_body = coerce(field, &in_body)?;
            if !same_value(&in_body, &key) {
                return Err(RecordError::new(
                    "INVALID_FIELD",
                    format!(
                        "The value of {} in the request body does not match the external id value in the URL",
                        field.name
                    ),
                    &[&field.name],
                )
                .into());
            }
        }
        let matches = self.find_by_field(object.name, &field.name, &key);
        match matches.as_slice() {
            [] => {
                let mut changes = prepare(object, &body, Mode::Create)?;
                // The new record gets the key, so its field must be writable.
                if !field.createable {
                    return Err(not_writable(&field.name).into());
                }
                changes.insert(field.name.clone(), key);
                let id = self.insert_prepared(schema, object, changes, None, writer)?;
                Ok((id, true))
            }
            [id] => {
                let id = id.clone();
                let changes = prepare(object, &body, Mode::Update)?;
                self.update_prepared(schema, object, &id, changes, writer)?;
                Ok((id, false))
            }
            _ => Err(WriteError::MultipleMatches(matches)),
        }
    }

    /// Takes the next record id for an object's key prefix.
    pub(crate) fn allocate_id(&mut self, key_prefix: &str) -> String {
        let id = ids::make(key_prefix, self.next_number);
        self.next_number += 1;
        id
    }

    /// Deletes the record `id`.
    pub(crate) fn delete(&mut self, object: &ObjectType, id: &str) -> Result<(), WriteError> {
        let removed = self
            .tables
            .get_mut(object.name)
            .and_then(|t| t.remove(id))
            .ok_or(WriteError::NotFound)?;
        index_external_ids(&mut self.external_ids, object, id, Some(&removed), None);
        Ok(())
    }

    fn insert_prepared(
        &mut self,
        schema: &Schema,
        object: &ObjectType,
        mut fields: BTreeMap<String, Value>,
        id: Option<String>,
        writer: Writer<'_>,
    ) -> Result<String, WriteError> {
        for field in &object.fields {
            if let Some(default) = &field.default {
                fields
                    .entry(field.name.clone())
                    .or_insert_with(|| default.clone());
            }
        }
        if object.field("OwnerId").is_some() {
            let owner = fields.entry("OwnerId".to_owned()).or_insert(Value::Null);
            if owner.is_null() {
                *owner = Value::String(writer.user_id.to_owned());
            }
        }
        self.check_record(schema, object, &fields)?;
        let id = match id {
            Some(id) => id,
            None => self.allocate_id(object.key_prefix),
        };
        let now = Value::String(format_datetime(writer.now));
        let user = Value::String(writer.user_id.to_owned());
        fields.insert("Id".to_owned(), Value::String(id.clone()));
        fields.insert("IsDeleted".to_owned(), Value::Bool(false));
        fields.insert("CreatedDate".to_owned(), now.clone());
        fields.insert("CreatedById".to_owned(), user.clone());
        fields.insert("LastModifiedDate".to_owned(), now.clone());
        fields.insert("LastModifiedById".to_owned(), user);
        fields.insert("SystemModstamp".to_owned(), now);
        if object.name == "Case" {
            fields.insert(
                "CaseNumber".to_owned(),
                Value::String(format!("{:08}", self.next_case_number)),
            );
            self.next_case_number += 1;
        }
        compute_name(object, &mut fields);
        let record = Arc::new(Record { fields });
        self.note_write(object.name, true, &record);
        index_external_ids(&mut self.external_ids, object, &id, None, Some(&record));
        self.tables
            .entry(object.name)
            .or_default()
            .insert(id.clone(), record);
        Ok(id)
    }

    fn update_prepared(
        &mut self,
        schema: &Schema,
        object: &ObjectType,
        id: &str,
        changes: BTreeMap<String, Value>,
        writer: Writer<'_>,
    ) -> Result<(), WriteError> {
        let current = self.get(object.name, id).ok_or(WriteError::NotFound)?;
        let mut fields = current.fields.clone();
        for (name, value) in changes {
            fields.insert(name, value);
        }
        self.check_record(schema, object, &fields)?;
        let now = Value::String(format_datetime(writer.now));
        fields.insert("LastModifiedDate".to_owned(), now.clone());
        fields.insert(
            "LastModifiedById".to_owned(),
            Value::String(writer.user_id.to_owned()),
        );
        fields.insert("SystemModstamp".to_owned(), now);
        compute_name(object, &mut fields);
        let record = Arc::new(Record { fields });
        self.note_write(object.name, false, &record);
        let table = self.tables.entry(object.name).or_default();
        let previous = table.get(id).map(Arc::as_ref);
        index_external_ids(&mut self.external_ids, object, id, previous, Some(&record));
        table.insert(id.to_owned(), record);
        Ok(())
    }

    /// Rules over the whole record after the write is applied.
    fn check_record(
        &self,
        schema: &Schema,
        object: &ObjectType,
        fields: &BTreeMap<String, Value>,
    ) -> Result<(), RecordError> {
        let missing: Vec<&str> = object
            .fields
            .iter()
            .filter(|f| {
                f.required && f.createable && fields.get(&f.name).is_none_or(Value::is_null)
            })
            .map(|f| f.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(RecordError::new(
                "REQUIRED_FIELD_MISSING",
                format!("Required fields are missing: [{}]", missing.join(", ")),
                &missing,
            ));
        }
        for field in &object.fields {
            if !matches!(field.kind, FieldKind::Reference { .. }) || !field.createable {
                continue;
            }
            let Some(id) = fields.get(&field.name).and_then(Value::as_str) else {
                continue;
            };
            if !self.exists(schema, id) {
                return Err(RecordError::new(
                    "INVALID_CROSS_REFERENCE_KEY",
                    "invalid cross reference id",
                    &[&field.name],
                ));
            }
            if field.name == "OwnerId" {
                let active = self
                    .get("User", id)
                    .and_then(|u| u.fields.get("IsActive"))
                    .and_then(Value::as_bool);
                if active == Some(false) {
                    return Err(RecordError::new(
                        "INACTIVE_OWNER_OR_USER",
                        format!(
                            "operation performed with inactive user [{id}] as owner of {}",
                            object.name.to_lowercase()
                        ),
                        &[],
                    ));
                }
            }
        }
        if object.name == "Task" {
            let who_is_lead = fields
                .get("WhoId")
                .and_then(Value::as_str)
                .is_some_and(|id| ids::key_prefix(id) == "00Q");
            let has_what = fields.get("WhatId").is_some_and(|v| !v.is_null());
            if who_is_lead && has_what {
                return Err(RecordError::new(
                    "FIELD_INTEGRITY_EXCEPTION",
                    "Related To ID: a task whose Name ID is a lead cannot be related to another record",
                    &["WhatId"],
                ));
            }
        }
        Ok(())
    }
}

/// Checks every field of a request body and converts its value.
fn prepare(
    object: &ObjectType,
    body: &Map<String, Value>,
    mode: Mode,
) -> Result<BTreeMap<String, Value>, WriteError> {
    let mut changes = BTreeMap::new();
    for (name, raw) in body {
        if name == "attributes" {
            continue;
        }
        let field = object.field(name).ok_or_else(|| {
            RecordError::new(
                "INVALID_FIELD",
                format!("No such column '{name}' on sobject of type {}", object.name),
                &[],
            )
        })?;
        let writable = match mode {
            Mode::Create => field.createable,
            Mode::Update => field.updateable,
        };
        if !writable {
            return Err(not_writable(&field.name).into());
        }
        changes.insert(field.name.clone(), coerce(field, raw)?);
    }
    Ok(changes)
}

/// `INVALID_FIELD_FOR_INSERT_UPDATE` for a field the write may not set.
fn not_writable(name: &str) -> RecordError {
    RecordError::new(
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        format!(
            "Unable to create/update fields: {name}. Please check the security settings of this field and verify that it is read/write for your profile or permission set."
        ),
        &[name],
    )
}

/// Removes a key from a body, matching its name without regard to case.
fn take_ci(body: &mut Map<String, Value>, name: &str) -> Option<Value> {
    let key = body.keys().find(|k| k.eq_ignore_ascii_case(name))?.clone();
    body.remove(&key)
}

/// Moves the record `id` in the external id index from the values of
/// `before` to those of `after` (`None`: not stored).
fn index_external_ids(
    index: &mut ExternalIdIndex,
    object: &ObjectType,
    id: &str,
    before: Option<&Record>,
    after: Option<&Record>,
) {
    let text = |record: Option<&Record>, field: &str| match record?.fields.get(field) {
        Some(Value::String(value)) => Some(value.to_ascii_lowercase()),
        _ => None,
    };
    for field in object.fields.iter().filter(|f| f.external_id) {
        let values = index
            .entry(object.name)
            .or_default()
            .entry(field.name.clone())
            .or_default();
        if let Some(old) = text(before, &field.name) {
            if let Some(ids) = values.get_mut(&old) {
                ids.remove(id);
                if ids.is_empty() {
                    values.remove(&old);
                }
            }
        }
        if let Some(new) = text(after, &field.name) {
            values.entry(new).or_default().insert(id.to_owned());
        }
    }
}

/// Equality of stored values, text without regard to case.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.eq_ignore_ascii_case(y),
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Keeps the read-only `Name` of people in step with first and last name.
fn compute_name(object: &ObjectType, fields: &mut BTreeMap<String, Value>) {
    let computed = object.field("Name").is_some_and(|f| !f.createable);
    if !computed {
        return;
    }
    let part = |name: &str| {
        fields
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let name = format!("{} {}", part("FirstName"), part("LastName"))
        .trim()
        .to_owned();
    fields.insert("Name".to_owned(), Value::String(name));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Schema, Store, String) {
        let schema =
            Schema::new(&["Switchboard_Key__c".to_owned()], &[], &[], &[]).expect("schema");
        let mut store = Store::new();
        let user = ids::make("005", 999);
        let users = schema.object("User").expect("user").clone();
        let body = json!({"Username": "u@example.com", "LastName": "User"});
        let writer = Writer {
            user_id: &user,
            now: Utc::now(),
        };
        store
            .create_with_id(
                &schema,
                &users,
                body.as_object().expect("object"),
                user.clone(),
                writer,
            )
            .expect("user");
        (schema, store, user)
    }

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("object body")
    }

    fn code(result: Result<impl std::fmt::Debug, WriteError>) -> String {
        match result {
            Err(WriteError::Record(e)) => e.code,
            other => panic!("expected record error, got {other:?}"),
        }
    }

    #[test]
    fn upsert_creates_then_updates_and_defaults_owner() {
        let (schema, mut store, user) = setup();
        let task = schema.object("Task").expect("task").clone();
        let writer = Writer {
            user_id: &user,
            now: Utc::now(),
        };
        let (id, created) = store
            .upsert(
                &schema,
                &task,
                "Switchboard_Key__c",
                "k1",
                &body(json!({"Subject": "Call"})),
                writer,
            )
            .expect("create");
        assert!(created);
        let (again, created) = store
            .upsert(
                &schema,
                &task,
                "switchboard_key__c",
                "K1",
                &body(json!({"Subject": "Call 2"})),
                writer,
            )
            .expect("update");
        assert_eq!((again.as_str(), created), (id.as_str(), false));
        let record = store.get("Task", &id).expect("record");
        assert_eq!(record.fields["Subject"], json!("Call 2"));
        assert_eq!(record.fields["OwnerId"], json!(user));
        assert_eq!(record.fields["Status"], json!("Not Started"));
    }

    #[test]
    fn task_rules() {
        let (schema, mut store, user) = setup();
        let writer = Writer {
            user_id: &user,
            now: Utc::now(),
        };
        let lead_type = schema.object("Lead").expect("lead").clone();
        let lead = store
            .create(
                &schema,
                &lead_type,
                &body(json!({"LastName": "L", "Company": "C"})),
                writer,
            )
            .expect("lead");
        let account_type = schema.object("Account").expect("account").clone();
        let account = store
            .create(&schema, &account_type, &body(json!({"Name": "A"})), writer)
            .expect("account");
        let task = schema.object("Task").expect("task").clone();
        let both = body(json!({"WhoId": lead, "WhatId": account}));
        assert_eq!(
            code(store.create(&schema, &task, &both, writer)),
            "FIELD_INTEGRITY_EXCEPTION"
        );
        let id = store
            .create(
                &schema,
                &task,
                &body(json!({"WhoId": lead, "TaskSubtype": "Call"})),
                writer,
            )
            .expect("task");
        assert_eq!(
            code(store.update(
                &schema,
                &task,
                &id,
                &body(json!({"TaskSubtype": "Call"})),
                writer
            )),
            "INVALID_FIELD_FOR_INSERT_UPDATE"
        );
        assert_eq!(
            code(store.update(
                &schema,
                &task,
                &id,
                &body(json!({"WhatId": account})),
                writer
            )),
            "FIELD_INTEGRITY_EXCEPTION"
        );
        let ghost_owner = body(json!({"OwnerId": ids::make("005", 4242)}));
        assert_eq!(
            code(store.create(&schema, &task, &ghost_owner, writer)),
            "INVALID_CROSS_REFERENCE_KEY"
        );
        assert_eq!(
            code(store.create(&schema, &task, &body(json!({"Colour": "red"})), writer)),
            "INVALID_FIELD"
        );
        assert_eq!(
            code(store.create(&schema, &lead_type, &body(json!({"LastName": "X"})), writer)),
            "REQUIRED_FIELD_MISSING"
        );
    }

    #[test]
    fn external_id_lookups_follow_updates_and_deletes() {
        let (schema, mut store, user) = setup();
        let writer = Writer {
            user_id: &user,
            now: Utc::now(),
        };
        let task = schema.object("Task").expect("task").clone();
        let key = |v: &str| Value::String(v.to_owned());
        let id = store
            .create(
                &schema,
                &task,
                &body(json!({"Switchboard_Key__c": "Call-1:U1"})),
                writer,
            )
            .expect("task");
        let find =
            |store: &Store, v: &str| store.find_by_field("Task", "Switchboard_Key__c", &key(v));
        assert_eq!(find(&store, "call-1:u1"), std::slice::from_ref(&id));
        store
            .update(
                &schema,
                &task,
                &id,
                &body(json!({"Switchboard_Key__c": "call-2:u1"})),
                writer,
            )
            .expect("update");
        assert!(find(&store, "call-1:u1").is_empty());
        assert_eq!(find(&store, "CALL-2:U1"), std::slice::from_ref(&id));
        store
            .update(
                &schema,
                &task,
                &id,
                &body(json!({"Switchboard_Key__c": null})),
                writer,
            )
            .expect("clear");
        assert!(find(&store, "call-2:u1").is_empty());
        store
            .update(
                &schema,
                &task,
                &id,
                &body(json!({"Switchboard_Key__c": "call-3:u1"})),
                writer,
            )
            .expect("set again");
        let copy = store.clone();
        store.delete(&task, &id).expect("delete");
        assert!(find(&store, "call-3:u1").is_empty());
        assert_eq!(find(&copy, "call-3:u1"), [id], "a copy keeps its own index");
    }

    #[test]
    fn several_matches_are_reported() {
        let (schema, mut store, user) = setup();
        let writer = Writer {
            user_id: &user,
            now: Utc::now(),
        };
        let task = schema.object("Task").expect("task").clone();
        for _ in 0..2 {
            store
                .create(
                    &schema,
                    &task,
                    &body(json!({"Switchboard_Key__c": "dup"})),
                    writer,
                )
                .expect("task");
        }
        let result = store.upsert(
            &schema,
            &task,
            "Switchboard_Key__c",
            "dup",
            &Map::new(),
            writer,
        );
        assert!(matches!(result, Err(WriteError::MultipleMatches(ids)) if ids.len() == 2));
        let not_ext = store.upsert(&schema, &task, "Subject", "x", &Map::new(), writer);
        assert!(matches!(not_ext, Err(WriteError::NotFound)));
    }
}
