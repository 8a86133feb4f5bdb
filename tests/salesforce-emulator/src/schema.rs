//! The objects and fields the emulated org knows.
//!
//! Salesforce validates every write against the object's metadata: field names
//! (case-insensitive), types, lengths, restricted picklists, which fields may be
//! set on create or update, and lookups. This module holds that metadata for the
//! objects Switchboard touches (Task, Case, Opportunity, Contact, Lead, Account,
//! User) plus the custom fields a test configures.

use serde_json::{json, Value};

use crate::config::{CustomField, CustomFieldType};

/// How a field's values are typed and checked.
#[derive(Clone, Debug)]
pub(crate) enum FieldKind {
    /// The record id.
    Id,
    /// Free text of at most `max` characters (string, textarea, phone, email, url).
    Text { max: usize },
    /// A picklist; a restricted one rejects values outside `values`.
    Picklist {
        values: &'static [&'static str],
        restricted: bool,
        max: usize,
    },
    /// A 32-bit integer.
    Integer,
    /// A floating-point number (double, currency, percent).
    Double,
    /// A checkbox.
    Boolean,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// A timestamp, answered as `2024-05-01T12:00:00.000+0000`.
    DateTime,
    /// A lookup to a record of one of the named objects.
    Reference { targets: Vec<&'static str> },
}

impl FieldKind {
    /// The type name describe answers for this kind.
    pub(crate) fn describe_type(&self) -> &'static str {
        match self {
            FieldKind::Id => "id",
            FieldKind::Text { .. } => "string",
            FieldKind::Picklist { .. } => "picklist",
            FieldKind::Integer => "int",
            FieldKind::Double => "double",
            FieldKind::Boolean => "boolean",
            FieldKind::Date => "date",
            FieldKind::DateTime => "datetime",
            FieldKind::Reference { .. } => "reference",
        }
    }
}

/// One field of an object.
#[derive(Clone, Debug)]
pub(crate) struct Field {
    /// API name, in its canonical case.
    pub name: String,
    /// The label Salesforce puts in error messages ("Call Duration: …").
    pub label: String,
    pub kind: FieldKind,
    pub createable: bool,
    pub updateable: bool,
    /// Must have a value after create and after every update.
    pub required: bool,
    /// Usable in upsert URLs.
    pub external_id: bool,
    /// Value set on create when the request leaves the field out.
    pub default: Option<Value>,
}

impl Field {
    fn new(name: &str, label: &str, kind: FieldKind) -> Field {
        Field {
            name: name.to_owned(),
            label: label.to_owned(),
            kind,
            createable: true,
            updateable: true,
            required: false,
            external_id: false,
            default: None,
        }
    }

    fn system(name: &str, label: &str, kind: FieldKind) -> Field {
        Field {
            createable: false,
            updateable: false,
            ..Field::new(name, label, kind)
        }
    }

    fn required(mut self) -> Field {
        self.required = true;
        self
    }

    fn create_only(mut self) -> Field {
        self.updateable = false;
        self
    }

    fn default(mut self, value: Value) -> Field {
        self.default = Some(value);
        self
    }
}

/// One object (sObject type).
#[derive(Clone, Debug)]
pub(crate) struct ObjectType {
    pub name: &'static str,
    pub label: &'static str,
    pub key_prefix: &'static str,
    pub fields: Vec<Field>,
}

impl ObjectType {
    /// Looks a field up by name, ignoring case as Salesforce does.
    pub(crate) fn field(&self, name: &str) -> Option<&Field> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// The object's describe: enough metadata for a client to check that the
    /// fields it writes exist and which one is an external id.
    pub(crate) fn describe(&self) -> Value {
        let fields: Vec<Value> = self
            .fields
            .iter()
            .map(|f| {
                let length = match f.kind {
                    FieldKind::Text { max } | FieldKind::Picklist { max, .. } => max,
                    FieldKind::Id | FieldKind::Reference { .. } => 18,
                    _ => 0,
                };
                let picklist: Vec<Value> = match &f.kind {
                    FieldKind::Picklist { values, .. } => values
                        .iter()
                        .map(|v| json!({"active": true, "label": v, "value": v, "defaultValue": false}))
                        .collect(),
                    _ => Vec::new(),
                };
                let reference_to: Vec<&str> = match &f.kind {
                    FieldKind::Reference { targets } => targets.clone(),
                    _ => Vec::new(),
                };
                json!({
                    "name": f.name,
                    "label": f.label,
                    "type": f.kind.describe_type(),
                    "length": length,
                    "createable": f.createable,
                    "updateable": f.updateable,
                    "nillable": !f.required && !matches!(f.kind, FieldKind::Boolean | FieldKind::Id),
                    "externalId": f.external_id,
                    "idLookup": f.external_id || matches!(f.kind, FieldKind::Id),
                    "custom": f.name.ends_with("__c"),
                    "restrictedPicklist": matches!(f.kind, FieldKind::Picklist { restricted: true, .. }),
                    "picklistValues": picklist,
                    "referenceTo": reference_to,
                })
            })
            .collect();
        json!({
            "name": self.name,
            "label": self.label,
            "keyPrefix": self.key_prefix,
            "createable": true,
            "updateable": true,
            "queryable": true,
            "searchable": true,
            "custom": false,
            "fields": fields,
        })
    }
}

/// All objects of the emulated org.
#[derive(Clone, Debug)]
pub(crate) struct Schema {
    objects: Vec<ObjectType>,
}

const CALL_TYPES: &[&str] = &["Inbound", "Outbound", "Internal"];
const TASK_SUBTYPES: &[&str] = &["Task", "Email", "ListEmail", "Cadence", "Call", "LinkedIn"];
const TASK_STATUSES: &[&str] = &[
    "Not Started",
    "In Progress",
    "Completed",
    "Waiting on someone else",
    "Deferred",
];
const TASK_TYPES: &[&str] = &["Call", "Email", "Meeting", "Other"];
const TASK_PRIORITIES: &[&str] = &["High", "Normal", "Low"];
const CASE_STATUSES: &[&str] = &["New", "Working", "Escalated", "Closed"];
const CASE_ORIGINS: &[&str] = &["Phone", "Email", "Web"];
const CASE_PRIORITIES: &[&str] = &["High", "Medium", "Low"];
const LEAD_STATUSES: &[&str] = &[
    "Open - Not Contacted",
    "Working - Contacted",
    "Closed - Converted",
    "Closed - Not Converted",
];
const STAGES: &[&str] = &[
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Value Proposition",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
];

fn text(max: usize) -> FieldKind {
    FieldKind::Text { max }
}

fn picklist(values: &'static [&'static str], max: usize) -> FieldKind {
    FieldKind::Picklist {
        values,
        restricted: false,
        max,
    }
}

fn reference(targets: &[&'static str]) -> FieldKind {
    FieldKind::Reference {
        targets: targets.to_vec(),
    }
}

/// Fields every object has, maintained by the platform.
fn system_fields() -> Vec<Field> {
    vec![
        Field::system("Id", "Record ID", FieldKind::Id),
        Field::system("IsDeleted", "Deleted", FieldKind::Boolean),
        Field::system("CreatedDate", "Created Date", FieldKind::DateTime),
        Field::system("CreatedById", "Created By ID", reference(&["User"])),
        Field::system(
            "LastModifiedDate",
            "Last Modified Date",
            FieldKind::DateTime,
        ),
        Field::system(
            "LastModifiedById",
            "Last Modified By ID",
            reference(&["User"]),
        ),
        Field::system("SystemModstamp", "System Modstamp", FieldKind::DateTime),
    ]
}

fn owner() -> Field {
    Field::new("OwnerId", "Owner ID", reference(&["User"]))
}

fn person_fields() -> Vec<Field> {
    vec![
        Field::new("FirstName", "First Name", text(40)),
        Field::new("LastName", "Last Name", text(80)).required(),
        Field::system("Name", "Full Name", text(121)),
        Field::new("Title", "Title", text(128)),
        Field::new("Email", "Email", text(80)),
        Field::new("Phone", "Business Phone", text(40)),
        Field::new("MobilePhone", "Mobile Phone", text(40)),
    ]
}

fn task() -> ObjectType {
    let mut fields = system_fields();
    fields.extend([
        Field::new("Subject", "Subject", text(255)),
        Field::new("Description", "Comments", text(32000)),
        Field::new("ActivityDate", "Due Date Only", FieldKind::Date),
        Field::new("Status", "Status", picklist(TASK_STATUSES, 40))
            .required()
            .default(json!("Not Started")),
        Field::new("Priority", "Priority", picklist(TASK_PRIORITIES, 40))
            .required()
            .default(json!("Normal")),
        Field::new("Type", "Type", picklist(TASK_TYPES, 40)),
        Field::new(
            "TaskSubtype",
            "Task Subtype",
            FieldKind::Picklist {
                values: TASK_SUBTYPES,
                restricted: true,
                max: 40,
            },
        )
        .create_only()
        .default(json!("Task")),
        Field::new(
            "CallType",
            "Call Type",
            FieldKind::Picklist {
                values: CALL_TYPES,
                restricted: true,
                max: 40,
            },
        ),
        Field::new("CallDurationInSeconds", "Call Duration", FieldKind::Integer),
        Field::new("CallDisposition", "Call Result", text(255)),
        Field::new("CallObject", "Call Object Identifier", text(255)),
        Field::new("OwnerId", "Assigned To ID", reference(&["User"])),
        Field::new("WhoId", "Name ID", reference(&["Contact", "Lead"])),
        Field::new(
            "WhatId",
            "Related To ID",
            reference(&["Account", "Case", "Opportunity"]),
        ),
        Field::new("IsReminderSet", "Reminder Set", FieldKind::Boolean).default(json!(false)),
    ]);
    ObjectType {
        name: "Task",
        label: "Task",
        key_prefix: "00T",
        fields,
    }
}

fn case() -> ObjectType {
    let mut fields = system_fields();
    fields.extend([
        Field::system("CaseNumber", "Case Number", text(30)),
        Field::new("Subject", "Subject", text(255)),
        Field::new("Description", "Description", text(32000)),
        Field::new("Status", "Status", picklist(CASE_STATUSES, 40))
            .required()
            .default(json!("New")),
        Field::new("Origin", "Case Origin", picklist(CASE_ORIGINS, 40)),
        Field::new("Priority", "Priority", picklist(CASE_PRIORITIES, 40)).default(json!("Medium")),
        Field::new("ContactId", "Contact ID", reference(&["Contact"])),
        Field::new("AccountId", "Account ID", reference(&["Account"])),
        Field::new("SuppliedPhone", "Web Phone", text(40)),
        owner(),
    ]);
    ObjectType {
        name: "Case",
        label: "Case",
        key_prefix: "500",
        fields,
    }
}

fn opportunity() -> ObjectType {
    let mut fields = system_fields();
    fields.extend([
        Field::new("Name", "Name", text(120)).required(),
        Field::new("StageName", "Stage", picklist(STAGES, 255)).required(),
        Field::new("CloseDate", "Close Date", FieldKind::Date).required(),
        Field::new("Amount", "Amount", FieldKind::Double),
        Field::new("AccountId", "Account ID", reference(&["Account"])),
        Field::new("Description", "Description", text(32000)),
        owner(),
    ]);
    ObjectType {
        name: "Opportunity",
        label: "Opportunity",
        key_prefix: "006",
        fields,
    }
}

fn contact() -> ObjectType {
    let mut fields = system_fields();
    fields.extend(person_fields());
    fields.extend([
        Field::new("HomePhone", "Home Phone", text(40)),
        Field::new("OtherPhone", "Other Phone", text(40)),
        Field::new("AccountId", "Account ID", reference(&["Account"])),
        owner(),
    ]);
    ObjectType {
        name: "Contact",
        label: "Contact",
        key_prefix: "003",
        fields,
    }
}

fn lead() -> ObjectType {
    let mut fields = system_fields();
    fields.extend(person_fields());
    fields.extend([
        Field::new("Company", "Company", text(255)).required(),
        Field::new("Status", "Status", picklist(LEAD_STATUSES, 40))
            .required()
            .default(json!("Open - Not Contacted")),
        owner(),
    ]);
    ObjectType {
        name: "Lead",
        label: "Lead",
        key_prefix: "00Q",
        fields,
    }
}

fn account() -> ObjectType {
    let mut fields = system_fields();
    fields.extend([
        Field::new("Name", "Account Name", text(255)).required(),
        Field::new("Phone", "Account Phone", text(40)),
        Field::new("Website", "Website", text(255)),
        owner(),
    ]);
    ObjectType {
        name: "Account",
        label: "Account",
        key_prefix: "001",
        fields,
    }
}

fn user() -> ObjectType {
    let mut fields = system_fields();
    fields.extend(person_fields());
    fields.extend([
        Field::new("Username", "Username", text(80)).required(),
        Field::new("IsActive", "Active", FieldKind::Boolean).default(json!(true)),
    ]);
    ObjectType {
        name: "User",
        label: "User",
        key_prefix: "005",
        fields,
    }
}

impl Schema {
    /// The standard objects plus the configured custom fields: each name in
    /// `task_external_ids` becomes a Text(255) external id on Task, each in
    /// `case_external_ids` one on Case. Each `"Object.Field"` of
    /// `read_only_fields` is then neither createable nor updateable, as
    /// field-level security without edit access makes it.
    pub(crate) fn new(
        task_external_ids: &[String],
        case_external_ids: &[String],
        custom_fields: &[CustomField],
        read_only_fields: &[String],
    ) -> Result<Schema, String> {
        let mut schema = Schema {
            objects: vec![
                task(),
                case(),
                opportunity(),
                contact(),
                lead(),
                account(),
                user(),
            ],
        };
        let external_id = |sobject: &str, name: &String| CustomField {
            sobject: sobject.to_owned(),
            name: name.clone(),
            field_type: CustomFieldType::Text { length: 255 },
            external_id: true,
        };
        let task_fields = task_external_ids
            .iter()
            .map(|name| external_id("Task", name));
        let case_fields = case_external_ids
            .iter()
            .map(|name| external_id("Case", name));
        for custom in task_fields
            .chain(case_fields)
            .chain(custom_fields.iter().cloned())
        {
            schema.add_custom_field(&custom)?;
        }
        for name in read_only_fields {
            schema.make_read_only(name)?;
        }
        Ok(schema)
    }

    fn make_read_only(&mut self, qualified: &str) -> Result<(), String> {
        let (sobject, name) = qualified
            .split_once('.')
            .ok_or_else(|| format!("read-only field {qualified:?} must be written Object.Field"))?;
        let object = self
            .objects
            .iter_mut()
            .find(|o| o.name.eq_ignore_ascii_case(sobject))
            .ok_or_else(|| format!("read-only field {qualified} names an unknown object"))?;
        let field = object
            .fields
            .iter_mut()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("read-only field {qualified} names an unknown field"))?;
        field.createable = false;
        field.updateable = false;
        Ok(())
    }

    fn add_custom_field(&mut self, custom: &CustomField) -> Result<(), String> {
        if !custom.name.ends_with("__c")
            || custom.name.len() < 4
            || !custom
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(format!(
                "custom field name {:?} must be letters, digits and _ ending in __c",
                custom.name
            ));
        }
        let object = self
            .objects
            .iter_mut()
            .find(|o| o.name.eq_ignore_ascii_case(&custom.sobject))
            .ok_or_else(|| {
                format!(
                    "custom field {} names an unknown object {:?}",
                    custom.name, custom.sobject
                )
            })?;
        if object.field(&custom.name).is_some() {
            return Err(format!(
                "field {} is configured twice on {}",
                custom.name, object.name
            ));
        }
        let kind = match custom.field_type {
            CustomFieldType::Text { length } => text(length),
            CustomFieldType::Integer => FieldKind::Integer,
            CustomFieldType::Double => FieldKind::Double,
            CustomFieldType::Checkbox => FieldKind::Boolean,
            CustomFieldType::Date => FieldKind::Date,
            CustomFieldType::DateTime => FieldKind::DateTime,
        };
        if custom.external_id
            && !matches!(
                kind,
                FieldKind::Text { .. } | FieldKind::Integer | FieldKind::Double
            )
        {
            return Err(format!(
                "external id {} must be a text or number field",
                custom.name
            ));
        }
        let label = custom.name.trim_end_matches("__c").replace('_', " ");
        let mut field = Field::new(&custom.name, &label, kind);
        field.external_id = custom.external_id;
        if matches!(field.kind, FieldKind::Boolean) {
            field.default = Some(json!(false));
        }
        object.fields.push(field);
        Ok(())
    }

    /// Looks an object up by name, ignoring case.
    pub(crate) fn object(&self, name: &str) -> Option<&ObjectType> {
        self.objects
            .iter()
            .find(|o| o.name.eq_ignore_ascii_case(name))
    }

    /// The object whose ids start with `prefix`.
    pub(crate) fn object_by_prefix(&self, prefix: &str) -> Option<&ObjectType> {
        self.objects.iter().find(|o| o.key_prefix == prefix)
    }

    /// All objects, for the sObject list.
    pub(crate) fn objects(&self) -> &[ObjectType] {
        &self.objects
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_has_configured_external_id_and_case_insensitive_lookup() {
        let schema = Schema::new(
            &["Switchboard_Key__c".to_owned()],
            &["Switchboard_Assignment_Id__c".to_owned()],
            &[],
            &[],
        )
        .expect("schema");
        let task = schema.object("task").expect("task");
        let key = task.field("switchboard_key__c").expect("field");
        assert!(key.external_id);
        assert!(!task.field("TaskSubtype").expect("subtype").updateable);
        assert_eq!(schema.object_by_prefix("00Q").map(|o| o.name), Some("Lead"));
        let case = schema.object("Case").expect("case");
        assert!(
            case.field("switchboard_assignment_id__c")
                .expect("case field")
                .external_id
        );
        assert!(task.field("Switchboard_Assignment_Id__c").is_none());
    }

    #[test]
    fn rejects_bad_custom_fields() {
        assert!(Schema::new(&["NoSuffix".to_owned()], &[], &[], &[]).is_err());
        assert!(Schema::new(&[], &["NoSuffix".to_owned()], &[], &[]).is_err());
        let unknown = CustomField {
            sobject: "Widget".to_owned(),
            name: "X__c".to_owned(),
            field_type: CustomFieldType::Integer,
            external_id: false,
        };
        assert!(Schema::new(&[], &[], &[unknown], &[]).is_err());
        assert!(Schema::new(&["K__c".to_owned(), "k__c".to_owned()], &[], &[], &[]).is_err());
    }

    #[test]
    fn read_only_fields_are_neither_createable_nor_updateable() {
        let schema = Schema::new(
            &["Switchboard_Key__c".to_owned()],
            &[],
            &[],
            &[
                "task.CallType".to_owned(),
                "Task.Switchboard_Key__c".to_owned(),
            ],
        )
        .expect("schema");
        let task = schema.object("Task").expect("task");
        for name in ["CallType", "Switchboard_Key__c"] {
            let field = task.field(name).expect("field");
            assert!(!field.createable && !field.updateable, "{name}");
            let described = task.describe();
            let entry = described["fields"]
                .as_array()
                .expect("fields")
                .iter()
                .find(|f| f["name"] == name)
                .cloned()
                .expect("described");
            assert_eq!(entry["createable"], false, "{name}");
            assert_eq!(entry["updateable"], false, "{name}");
        }
        assert!(task.field("Subject").expect("subject").createable);
        for bad in ["CallType", "Widget.X", "Task.NoSuchField"] {
            assert!(
                Schema::new(&[], &[], &[], &[bad.to_owned()]).is_err(),
                "{bad}"
            );
        }
    }
}
