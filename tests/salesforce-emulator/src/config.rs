//! What the emulated org looks like: its connected apps, its users, its API
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
    /// Text(255) external-id fields on Case usable in upsert URLs, such as
    /// the one the connector creates a call's new Case by.
    pub case_external_id_fields: Vec<String>,
    /// Further custom fields, on any known object.
    pub custom_fields: Vec<CustomField>,
    /// Fields that field-level security makes read-only for every user, as
    /// `"Object.Field"` (e.g. `"Task.CallType"`): describe answers
    /// `createable: false, updateable: false` for them and a write that sets
    /// one is refused with `INVALID_FIELD_FOR_INSERT_UPDATE`, as Salesforce
    /// does for a profile without edit access to the field.
    pub read_only_fields: Vec<String>,
    /// Users besides the integration user, e.g. agents who own Tasks.
    pub extra_users: Vec<UserSeed>,
    /// Base URL clients reach the emulator at, when it differs from the
    /// listening address (behind docker-compose service names or a proxy).
    /// It becomes `instance_url` and an accepted JWT `aud`.
    pub public_url: Option<String>,
    /// Connected apps for the web-server (authorization code) and client
    /// credentials flows. The app
    /// of [`consumer_key`](Self::consumer_key) is always there: when this
    /// list has no app with that key, one with [`ConnectedApp::new`]'s
    /// settings is added at start.
    pub connected_apps: Vec<ConnectedApp>,
    /// How long an authorization code can be exchanged: Salesforce documents
    /// 15 minutes. Tests of expiry set it to zero.
    pub authorization_code_ttl: Duration,
}

impl EmulatorConfig {
    /// A configuration whose connected app trusts `certificate_pem`, with the
    /// integration user `integration@switchboard.test`, API versions 45.0 to
    /// 62.0, two-hour sessions, a 15,000-call daily limit, the Task external
    /// id `Switchboard_Key__c` and the Case external id
    /// `Switchboard_Assignment_Id__c`.
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
            case_external_id_fields: vec!["Switchboard_Assignment_Id__c".to_owned()],
            custom_fields: Vec::new(),
            read_only_fields: Vec::new(),
            extra_users: Vec::new(),
            public_url: None,
            connected_apps: Vec::new(),
            authorization_code_ttl: Duration::from_secs(15 * 60),
        }
    }
}

/// The OAuth settings of a connected app, as an admin sets them under
/// Setup → App Manager: consumer key and secret, callback URLs, selected
/// scopes, the secret and PKCE requirements of the web-server flow, the
/// refresh token policy, and the client credentials flow with its Run As
/// user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectedApp {
    /// The consumer key, the OAuth `client_id`.
    pub consumer_key: String,
    /// The consumer secret, the OAuth `client_secret`; random by default.
    #[serde(default = "random_consumer_secret")]
    pub consumer_secret: String,
    /// Callback URLs: an authorization request's `redirect_uri` must equal
    /// one of them exactly.
    #[serde(default)]
    pub callback_urls: Vec<String>,
    /// Selected OAuth scopes; a request for any other scope is refused with
    /// `invalid_scope`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// "Require Secret for Web Server Flow": the code exchange must carry
    /// the consumer secret.
    #[serde(default = "yes")]
    pub require_secret: bool,
    /// "Require Secret for Refresh Token Flow".
    #[serde(default = "yes")]
    pub require_secret_for_refresh: bool,
    /// "Require Proof Key for Code Exchange (PKCE) Extension for Supported
    /// Authorization Flows": an authorization request without
    /// `code_challenge` is refused.
    #[serde(default = "yes")]
    pub require_pkce: bool,
    /// "Refresh Token Policy".
    #[serde(default)]
    pub refresh_token_policy: RefreshTokenPolicy,
    /// "Enable Refresh Token Rotation": each refresh answers a new refresh
    /// token and invalidates the one used.
    #[serde(default)]
    pub rotate_refresh_tokens: bool,
    /// "Enable Client Credentials Flow" (off for a new app): the token
    /// endpoint's `client_credentials` grant is refused without it.
    #[serde(default)]
    pub client_credentials_enabled: bool,
    /// The "Run As" user of the client credentials flow (Manage → Edit
    /// Policies → Client Credentials Flow), by username: the user the
    /// flow's access tokens act as. None is set on a new app, and the grant
    /// is refused until one is.
    #[serde(default)]
    pub client_credentials_user: Option<String>,
}

impl ConnectedApp {
    /// An app with Salesforce's defaults for a new connected app: a random
    /// secret required in both flows, PKCE required, refresh tokens valid
    /// until revoked and not rotated, the client credentials flow off and
    /// no Run As user, the scopes `api`, `id`, `profile`,
    /// `email`, `address`, `phone`, `openid`, `refresh_token`,
    /// `offline_access`, `web` and `full` selected, and no callback URL yet.
    pub fn new(consumer_key: impl Into<String>) -> ConnectedApp {
        ConnectedApp {
            consumer_key: consumer_key.into(),
            consumer_secret: random_consumer_secret(),
            callback_urls: Vec::new(),
            scopes: default_scopes(),
            require_secret: true,
            require_secret_for_refresh: true,
            require_pkce: true,
            refresh_token_policy: RefreshTokenPolicy::default(),
            rotate_refresh_tokens: false,
            client_credentials_enabled: false,
            client_credentials_user: None,
        }
    }

    /// The same app with one more callback URL.
    pub fn with_callback_url(mut self, url: impl Into<String>) -> ConnectedApp {
        self.callback_urls.push(url.into());
        self
    }

    /// The same app with the client credentials flow enabled, its tokens
    /// acting as the user `run_as` (a username of the org).
    pub fn with_client_credentials(mut self, run_as: impl Into<String>) -> ConnectedApp {
        self.client_credentials_enabled = true;
        self.client_credentials_user = Some(run_as.into());
        self
    }
}

/// How long a refresh token stays usable ("Refresh Token Policy" of the
/// connected app). An unusable one answers `invalid_grant`
/// `expired access/refresh token`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RefreshTokenPolicy {
    /// "Refresh token is valid until revoked" (Salesforce's default).
    #[default]
    ValidUntilRevoked,
    /// "Immediately expire refresh token": issued, but never accepted.
    Immediately,
    /// "Expire refresh token after": `secs` after it was issued.
    ExpireAfter {
        /// Lifetime in seconds.
        secs: u64,
    },
    /// "Expire refresh token if not used for": `secs` after its last use.
    ExpireIfNotUsedFor {
        /// Idle time in seconds.
        secs: u64,
    },
}

/// A consumer secret the way Salesforce makes them: 64 hexadecimal digits.
fn random_consumer_secret() -> String {
    (0..4)
        .map(|_| format!("{:016X}", rand::random::<u64>()))
        .collect()
}

fn default_scopes() -> Vec<String> {
    [
        "api",
        "id",
        "profile",
        "email",
        "address",
        "phone",
        "openid",
        "refresh_token",
        "offline_access",
        "web",
        "full",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn yes() -> bool {
    true
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
