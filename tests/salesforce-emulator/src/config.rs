//! What the emulated org looks like: its connected app, its users, its API
//! versions and limits, and the custom fields a test needs.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Configuration of one emulated org and its connected app.
///
/// Build it with [`EmulatorConfig::new`] and change the fields a test cares
/// about; every other field has the value of a fresh developer org.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// The connected app's consumer key: the `iss` a JWT assertion must carry.
    pub consumer_key: String,
    /// The integration user's username: a `sub` the token endpoint accepts.
    pub username: String,
    /// The integration user's id (`005…`), the default owner of new records.
    pub user_id: String,
    /// PEM X.509 certificate uploaded to the connected app; its public key
    /// verifies JWT assertions.
    pub certificate_pem: String,
    /// API versions the org serves, as `"62.0"`; others answer 404 `NOT_FOUND`.
    pub api_versions: Vec<String>,
    /// How long an access token stays valid (the org's session timeout).
    pub token_ttl: Duration,
    /// REST calls allowed per day before 403 `REQUEST_LIMIT_EXCEEDED`.
    pub daily_api_limit: u64,
    /// Text(255) external-id fields on Task usable in upsert URLs.
    pub task_external_id_fields: Vec<String>,
    /// Further custom fields, on any known object.
    pub custom_fields: Vec<CustomField>,
    /// Users besides the integration user, e.g. agents who own Tasks.
    pub extra_users: Vec<UserSeed>,
    /// Base URL clients reach the emulator at, when it differs from the
    /// listening address (behind docker-compose service names or a proxy).
    /// It becomes `instance_url` and an accepted JWT `aud`.
    pub public_url: Option<String>,
}

impl EmulatorConfig {
    /// A configuration whose connected app trusts `certificate_pem`, with the
    /// integration user `integration@switchboard.test`, API versions 45.0 to
    /// 62.0, two-hour sessions, a 15,000-call daily limit and the Task external
    /// id `Switchboard_Key__c`.
    pub fn new(certificate_pem: impl Into<String>) -> EmulatorConfig {
        EmulatorConfig {
            consumer_key: "3MVG9switchboard.emulator.consumer.key".to_owned(),
            username: "integration@switchboard.test".to_owned(),
            user_id: crate::ids::normalize("0055g00000IntUs").unwrap_or_default(),
            certificate_pem: certificate_pem.into(),
            api_versions: (45..=62).map(|v| format!("{v}.0")).collect(),
            token_ttl: Duration::from_secs(2 * 60 * 60),
            daily_api_limit: 15_000,
            task_external_id_fields: vec!["Switchboard_Key__c".to_owned()],
            custom_fields: Vec::new(),
            extra_users: Vec::new(),
            public_url: None,
        }
    }
}

/// A custom field to add to an object of the emulated org.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CustomField {
    /// The object, e.g. `"Task"`.
    pub sobject: String,
    /// API name ending in `__c`.
    pub name: String,
    /// Type of the field's values.
    pub field_type: CustomFieldType,
    /// Marked "External ID": usable in upsert URLs.
    #[serde(default)]
    pub external_id: bool,
}

/// Types a custom field can have in the emulator.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomFieldType {
    /// Text (or long text) of at most `length` characters.
    Text {
        /// Maximum length in characters.
        length: usize,
    },
    /// Number without decimals.
    Integer,
    /// Number with decimals.
    Double,
    /// Checkbox.
    Checkbox,
    /// Date.
    Date,
    /// Date/time.
    DateTime,
}

/// A user of the emulated org.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserSeed {
    /// Login name, accepted as a JWT `sub`.
    pub username: String,
    /// Record id (`005…`); generated when absent.
    #[serde(default)]
    pub id: Option<String>,
}
