//! Configuration of the connector role.
//!
//! The binary reads its TOML file and environment into these structs and
//! calls [`ConnectorConfig::validate`] before starting anything, so a wrong
//! value is reported by its key name instead of surfacing later as a failed
//! request to Salesforce or Kafka.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Everything the connector needs besides the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorConfig {
    /// The Salesforce org to write to. `None` means no org is connected yet:
    /// the connector consumes nothing, so every event stays in the log and
    /// the backlog syncs once an org is configured.
    #[serde(default)]
    pub salesforce: Option<SalesforceConfig>,
    /// Where call events come from.
    #[serde(default)]
    pub source: SourceConfig,
    /// How often the outbox is polled for new rows when it is drained, in
    /// milliseconds. Ignored by the Kafka source.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        Self {
            salesforce: None,
            source: SourceConfig::default(),
            poll_interval_ms: default_poll_interval_ms(),
        }
    }
}

fn default_poll_interval_ms() -> u64 {
    200
}

/// How the connector logs in to the org (`salesforce.auth`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SalesforceAuth {
    /// The OAuth 2.0 JWT bearer flow (the default): a JWT signed with the
    /// private key whose certificate the connected app holds, for the
    /// pre-authorised user `username`. Needs `username` and
    /// `private_key_file`.
    #[default]
    JwtBearer,
    /// The OAuth 2.0 client credentials flow: the connected app's consumer
    /// key and secret; the app's "Run As" user is the integration user.
    /// Needs `client_secret_file` (or `client_secret`) and the org's My
    /// Domain as `login_url`.
    ClientCredentials,
}

impl SalesforceAuth {
    /// The configuration value, e.g. `jwt_bearer`.
    pub fn as_str(self) -> &'static str {
        match self {
            SalesforceAuth::JwtBearer => "jwt_bearer",
            SalesforceAuth::ClientCredentials => "client_credentials",
        }
    }
}

/// A secret configuration value: its `Debug` shows `<redacted>`, so a
/// configuration printed with `{:?}` or logged as a field never shows it.
/// Serialized as the plain text (the binary's `config check` replaces it).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The connection to one Salesforce org through a connected app: with the
/// OAuth 2.0 JWT bearer flow for a pre-authorised integration user (the
/// default), or with the client credentials flow as the app's Run As user
/// ([`SalesforceAuth`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesforceConfig {
    /// Where tokens are requested: `https://login.salesforce.com`,
    /// `https://test.salesforce.com` for sandboxes, or the org's My Domain
    /// (which the client credentials flow requires). It is also the `aud`
    /// of the JWT.
    #[serde(default = "default_login_url")]
    pub login_url: String,
    /// The login flow: `jwt_bearer` (default) or `client_credentials`.
    #[serde(default)]
    pub auth: SalesforceAuth,
    /// The connected app's consumer key (the JWT `iss`, the `client_id`).
    pub consumer_key: String,
    /// JWT bearer: the integration user the connector acts as (the JWT
    /// `sub`). Not used with client credentials, whose user is the app's
    /// Run As user.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// JWT bearer: PEM file with the RSA private key whose certificate is
    /// uploaded to the connected app.
    #[serde(default, skip_serializing_if = "is_empty_path")]
    pub private_key_file: PathBuf,
    /// Client credentials: a file holding the connected app's consumer
    /// secret (surrounding whitespace ignored), read at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// Client credentials: the consumer secret itself, instead of
    /// `client_secret_file`; meant to come from the environment
    /// (`SWITCHBOARD_SALESFORCE__CLIENT_SECRET`) rather than a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    /// REST API version, e.g. `62.0`; upserts report `created` from 46.0 on.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// The Task field marked as External ID that holds `<call_id>:<user_id>`,
    /// which makes every write an idempotent upsert.
    #[serde(default = "default_task_external_id_field")]
    pub task_external_id_field: String,
    /// The Case field marked as External ID that holds the assignment id of
    /// a new Case an agent asked for, so creating it is an idempotent upsert
    /// and a retry after a crash finds the same Case.
    #[serde(default = "default_case_external_id_field")]
    pub case_external_id_field: String,
    /// Upper bound for one HTTP request to Salesforce, in seconds.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// First delay before retrying a transient failure (5xx, lock contention,
    /// network), in milliseconds; it doubles on every attempt, with jitter.
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// Cap of the retry delay for transient failures, in milliseconds.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Delay after Salesforce reports the org's daily API limit exhausted
    /// (`REQUEST_LIMIT_EXCEEDED`) or refuses the connector's credentials, in
    /// seconds: retrying sooner only burns requests.
    #[serde(default = "default_limit_backoff_secs")]
    pub limit_backoff_secs: u64,
    /// Task upserts per sObject Collections request, 1 to 200: a batch is
    /// written once it holds this many ended calls.
    #[serde(default = "default_batch_max_tasks")]
    pub batch_max_tasks: usize,
    /// How long events are gathered before their writes go out, in
    /// milliseconds, counted from the first hang-up of the batch: the delay
    /// between a hang-up and its Task is at most about this. Longer batches
    /// make fewer API requests per call.
    #[serde(default = "default_batch_deadline_ms")]
    pub batch_deadline_ms: u64,
    /// How long events that only change Tasks already written (recording,
    /// voicemail, note, rating, quality, assignment) wait for a batch with
    /// a hang-up to ride along, in milliseconds from the first event of the
    /// batch; at least `batch_deadline_ms`. While calls end, batches go out
    /// every `batch_deadline_ms` anyway; when they stop, the trickle of
    /// later updates costs one request per this long instead.
    #[serde(default = "default_batch_update_deadline_ms")]
    pub batch_update_deadline_ms: u64,
    /// Percentage of the org's daily API limit from which the connector
    /// spaces its requests out so the rest lasts a whole 24-hour window.
    #[serde(default = "default_slow_down_at_percent")]
    pub slow_down_at_percent: u8,
    /// Percentage of the org's daily API limit the connector leaves to the
    /// org's other integrations; once only that is left, one request per
    /// `limit_backoff_secs`.
    #[serde(default = "default_limit_reserve_percent")]
    pub limit_reserve_percent: u8,
}

fn is_empty_path(path: &Path) -> bool {
    path.as_os_str().is_empty()
}
fn default_login_url() -> String {
    "https://login.salesforce.com".to_owned()
}
fn default_api_version() -> String {
    "62.0".to_owned()
}
fn default_task_external_id_field() -> String {
    "Switchboard_Key__c".to_owned()
}
fn default_case_external_id_field() -> String {
    "Switchboard_Assignment_Id__c".to_owned()
}
fn default_request_timeout_secs() -> u64 {
    30
}
fn default_retry_initial_ms() -> u64 {
    250
}
fn default_retry_max_ms() -> u64 {
    60_000
}
fn default_limit_backoff_secs() -> u64 {
    600
}
fn default_batch_max_tasks() -> usize {
    200
}
fn default_batch_deadline_ms() -> u64 {
    1_500
}
fn default_batch_update_deadline_ms() -> u64 {
    5_000
}
fn default_slow_down_at_percent() -> u8 {
    80
}
fn default_limit_reserve_percent() -> u8 {
    10
}

impl SalesforceConfig {
    /// A JWT bearer configuration with the documented defaults for
    /// everything but the credentials, for callers that build it in code
    /// (tests, the binary's environment overrides).
    pub fn new(consumer_key: impl Into<String>, username: impl Into<String>, private_key_file: impl Into<PathBuf>) -> Self {
        Self {
            login_url: default_login_url(),
            auth: SalesforceAuth::JwtBearer,
            consumer_key: consumer_key.into(),
            username: username.into(),
            private_key_file: private_key_file.into(),
            client_secret_file: None,
            client_secret: None,
            api_version: default_api_version(),
            task_external_id_field: default_task_external_id_field(),
            case_external_id_field: default_case_external_id_field(),
            request_timeout_secs: default_request_timeout_secs(),
            retry_initial_ms: default_retry_initial_ms(),
            retry_max_ms: default_retry_max_ms(),
            limit_backoff_secs: default_limit_backoff_secs(),
            batch_max_tasks: default_batch_max_tasks(),
            batch_deadline_ms: default_batch_deadline_ms(),
            batch_update_deadline_ms: default_batch_update_deadline_ms(),
            slow_down_at_percent: default_slow_down_at_percent(),
            limit_reserve_percent: default_limit_reserve_percent(),
        }
    }

    /// A client credentials configuration with the documented defaults:
    /// the org's My Domain URL (`https://MyDomainName.my.salesforce.com`,
    /// where Salesforce serves this flow), the consumer key, and the file
    /// holding the consumer secret.
    pub fn client_credentials(
        login_url: impl Into<String>,
        consumer_key: impl Into<String>,
        client_secret_file: impl Into<PathBuf>,
    ) -> Self {
        Self {
            login_url: login_url.into(),
            auth: SalesforceAuth::ClientCredentials,
            username: String::new(),
            private_key_file: PathBuf::new(),
            client_secret_file: Some(client_secret_file.into()),
            ..Self::new(consumer_key, "", "")
        }
    }

    /// Who the connector acts as, for messages: the username (JWT bearer),
    /// or the connected app's Run As user (client credentials).
    pub fn integration_user(&self) -> String {
        match self.auth {
            SalesforceAuth::JwtBearer => self.username.clone(),
            SalesforceAuth::ClientCredentials => {
                format!("the Run As user of connected app {}", self.consumer_key)
            }
        }
    }
}

/// The event log the connector reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SourceConfig {
    /// The outbox table of the shared database (`switchboard up`, no Kafka).
    #[default]
    Outbox,
    /// The call-event topic, consumed in a consumer group.
    Kafka(KafkaConsumerConfig),
}

/// Consumer-group membership on the call-event topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConsumerConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// The topic the gateway's relay publishes `CallEvent`s to.
    pub topic: String,
    /// Consumer group: connectors in one group share the partitions.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Topic receiving records that cannot be applied (undecodable, or
    /// refused by Salesforce for good), with the reason in a header.
    pub dead_letter_topic: String,
    /// Topic the connector publishes each Task's sync status on
    /// (`TaskSyncStatus`, keyed by call id) for the gateway to show agents.
    #[serde(default = "default_status_topic")]
    pub status_topic: String,
    /// Client id shown in broker logs and quotas.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Extra librdkafka settings (e.g. `security.protocol`, `sasl.*`),
    /// passed to both the consumer and the dead-letter producer.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_group_id() -> String {
    "switchboard-connector".to_owned()
}
fn default_status_topic() -> String {
    "switchboard.task-sync".to_owned()
}
fn default_client_id() -> String {
    "switchboard-connector".to_owned()
}

impl KafkaConsumerConfig {
    /// A configuration with the default group and client ids.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>, dead_letter_topic: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: topic.into(),
            group_id: default_group_id(),
            dead_letter_topic: dead_letter_topic.into(),
            status_topic: default_status_topic(),
            client_id: default_client_id(),
            properties: BTreeMap::new(),
        }
    }
}

/// A configuration value that cannot work, named by its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid connector configuration: `{key}` {expected}")]
pub struct ConfigError {
    /// Dotted key as written in the configuration file, e.g. `salesforce.api_version`.
    pub key: &'static str,
    /// What the key must contain, phrased for the operator.
    pub expected: String,
}

fn invalid(key: &'static str, expected: impl Into<String>) -> ConfigError {
    ConfigError { key, expected: expected.into() }
}

impl ConnectorConfig {
    /// Checks every value that can be checked without I/O.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.poll_interval_ms == 0 || self.poll_interval_ms > 60_000 {
            return Err(invalid("poll_interval_ms", "must be between 1 and 60000 milliseconds"));
        }
        if let Some(sf) = &self.salesforce {
            sf.validate()?;
        }
        if let SourceConfig::Kafka(kafka) = &self.source {
            kafka.validate()?;
        }
        Ok(())
    }
}

impl SalesforceConfig {
    /// Checks the Salesforce section; see [`ConnectorConfig::validate`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = url::Url::parse(&self.login_url).map_err(|e| {
            invalid("salesforce.login_url", format!("must be an absolute URL such as https://login.salesforce.com ({e})"))
        })?;
        let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(invalid(
                    "salesforce.login_url",
                    "must use https (plain http is accepted for localhost only)",
                ))
            }
        }
        if url.path() != "/" || url.query().is_some() {
            return Err(invalid(
                "salesforce.login_url",
                "must be the bare login host such as https://login.salesforce.com, without a path",
            ));
        }
        if self.consumer_key.trim().is_empty() {
            return Err(invalid("salesforce.consumer_key", "must be the connected app's consumer key"));
        }
        match self.auth {
            SalesforceAuth::JwtBearer => self.validate_jwt_bearer()?,
            SalesforceAuth::ClientCredentials => self.validate_client_credentials(&url)?,
        }
        if !is_api_version(&self.api_version) {
            return Err(invalid("salesforce.api_version", "must look like 62.0 (46.0 or later)"));
        }
        if !is_field_name(&self.task_external_id_field) {
            return Err(invalid(
                "salesforce.task_external_id_field",
                "must be the API name of a Task field marked External ID, e.g. Switchboard_Key__c",
            ));
        }
        if !is_field_name(&self.case_external_id_field) {
            return Err(invalid(
                "salesforce.case_external_id_field",
                "must be the API name of a Case field marked External ID, e.g. Switchboard_Assignment_Id__c",
            ));
        }
        if self.request_timeout_secs == 0 || self.request_timeout_secs > 600 {
            return Err(invalid("salesforce.request_timeout_secs", "must be between 1 and 600 seconds"));
        }
        if self.retry_initial_ms == 0 {
            return Err(invalid("salesforce.retry_initial_ms", "must be at least 1 millisecond"));
        }
        if self.retry_max_ms < self.retry_initial_ms {
            return Err(invalid("salesforce.retry_max_ms", "must not be smaller than salesforce.retry_initial_ms"));
        }
        if self.limit_backoff_secs == 0 {
            return Err(invalid("salesforce.limit_backoff_secs", "must be at least 1 second"));
        }
        if !(1..=crate::salesforce::COLLECTION_LIMIT).contains(&self.batch_max_tasks) {
            return Err(invalid("salesforce.batch_max_tasks", "must be between 1 and 200 (sObject Collections take 200 records a request)"));
        }
        if self.batch_deadline_ms == 0 || self.batch_deadline_ms > 60_000 {
            return Err(invalid("salesforce.batch_deadline_ms", "must be between 1 and 60000 milliseconds"));
        }
        if self.batch_update_deadline_ms < self.batch_deadline_ms || self.batch_update_deadline_ms > 300_000 {
            return Err(invalid(
                "salesforce.batch_update_deadline_ms",
                "must be at least salesforce.batch_deadline_ms and at most 300000 milliseconds, e.g. 5000",
            ));
        }
        if !(1..=100).contains(&self.slow_down_at_percent) {
            return Err(invalid("salesforce.slow_down_at_percent", "must be a percentage of the daily API limit from 1 to 100, e.g. 80"));
        }
        if u16::from(self.limit_reserve_percent) + u16::from(self.slow_down_at_percent) > 100 {
            return Err(invalid(
                "salesforce.limit_reserve_percent",
                "must leave room above salesforce.slow_down_at_percent (the two add up to 100 at most), e.g. 10",
            ));
        }
        Ok(())
    }

    /// The keys of `auth = "jwt_bearer"`: a username and a private key,
    /// and no client secret.
    fn validate_jwt_bearer(&self) -> Result<(), ConfigError> {
        if self.username.trim().is_empty() {
            return Err(invalid("salesforce.username", "must be the integration user's Salesforce username"));
        }
        if self.private_key_file.as_os_str().is_empty() {
            return Err(invalid("salesforce.private_key_file", "must be the path of a PEM RSA private key"));
        }
        let only_client_credentials = "is only used with salesforce.auth = \"client_credentials\"; remove it, or set salesforce.auth";
        if self.client_secret_file.is_some() {
            return Err(invalid("salesforce.client_secret_file", only_client_credentials));
        }
        if self.client_secret.is_some() {
            return Err(invalid("salesforce.client_secret", only_client_credentials));
        }
        Ok(())
    }

    /// The keys of `auth = "client_credentials"`: one source of the
    /// consumer secret, a My Domain login URL, and none of the JWT keys.
    fn validate_client_credentials(&self, login_url: &url::Url) -> Result<(), ConfigError> {
        match (&self.client_secret_file, &self.client_secret) {
            (None, None) => {
                return Err(invalid(
                    "salesforce.client_secret_file",
                    "must be the path of a file holding the connected app's consumer secret when salesforce.auth = \"client_credentials\" (or set salesforce.client_secret instead)",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "salesforce.client_secret",
                    "must not be set together with salesforce.client_secret_file; set one of them",
                ))
            }
            (Some(path), None) if path.as_os_str().is_empty() => {
                return Err(invalid("salesforce.client_secret_file", "must be the path of a file holding the consumer secret"))
            }
            (None, Some(secret)) if secret.expose().trim().is_empty() => {
                return Err(invalid("salesforce.client_secret", "must be the connected app's consumer secret"))
            }
            _ => {}
        }
        let only_jwt = "is only used with salesforce.auth = \"jwt_bearer\"; with client credentials the connector acts as the connected app's Run As user, so remove it";
        if !self.username.is_empty() {
            return Err(invalid("salesforce.username", only_jwt));
        }
        if !self.private_key_file.as_os_str().is_empty() {
            return Err(invalid("salesforce.private_key_file", only_jwt));
        }
        if matches!(login_url.host_str(), Some("login.salesforce.com" | "test.salesforce.com")) {
            return Err(invalid(
                "salesforce.login_url",
                "must be the org's My Domain URL (https://MyDomainName.my.salesforce.com) when salesforce.auth = \"client_credentials\": Salesforce refuses this flow on login.salesforce.com and test.salesforce.com",
            ));
        }
        Ok(())
    }
}

impl KafkaConsumerConfig {
    /// Checks the Kafka section; see [`ConnectorConfig::validate`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.brokers.trim().is_empty() || self.brokers.split(',').any(|b| !b.trim().contains(':')) {
            return Err(invalid("kafka.brokers", "must list bootstrap servers as host:port[,host:port…]"));
        }
        if !is_topic_name(&self.topic) {
            return Err(invalid("kafka.topic", "must be a topic name of letters, digits, '.', '_' or '-'"));
        }
        if !is_topic_name(&self.dead_letter_topic) {
            return Err(invalid("kafka.dead_letter_topic", "must be a topic name of letters, digits, '.', '_' or '-'"));
        }
        if self.dead_letter_topic == self.topic {
            return Err(invalid("kafka.dead_letter_topic", "must differ from kafka.topic"));
        }
        if !is_topic_name(&self.status_topic) {
            return Err(invalid("kafka.status_topic", "must be a topic name of letters, digits, '.', '_' or '-'"));
        }
        if self.status_topic == self.topic || self.status_topic == self.dead_letter_topic {
            return Err(invalid("kafka.status_topic", "must differ from kafka.topic and kafka.dead_letter_topic"));
        }
        if self.group_id.trim().is_empty() {
            return Err(invalid("kafka.group_id", "must name the consumer group"));
        }
        if self.client_id.trim().is_empty() {
            return Err(invalid("kafka.client_id", "must not be empty"));
        }
        for key in self.properties.keys() {
            if matches!(
                key.as_str(),
                "enable.auto.commit" | "group.id" | "bootstrap.servers" | "enable.auto.offset.store"
            ) {
                return Err(invalid(
                    "kafka.properties",
                    format!("must not set {key:?}: the connector owns it (offsets are committed only after Salesforce accepted the write)"),
                ));
            }
        }
        Ok(())
    }
}

fn is_api_version(v: &str) -> bool {
    match v.split_once('.') {
        Some((major, minor)) => {
            !major.is_empty()
                && major.len() <= 3
                && major.bytes().all(|b| b.is_ascii_digit())
                && minor == "0"
                && major.parse::<u32>().is_ok_and(|m| m >= 46)
        }
        None => false,
    }
}

fn is_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 80
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn salesforce() -> SalesforceConfig {
        SalesforceConfig::new("key", "integration@example.com", "/etc/switchboard/sf.pem")
    }

    #[test]
    fn defaults_are_valid() {
        let config = ConnectorConfig { salesforce: Some(salesforce()), ..Default::default() };
        config.validate().unwrap();
        assert_eq!(config.poll_interval_ms, 200);
        assert_eq!(config.source, SourceConfig::Outbox);
    }

    #[test]
    fn errors_name_the_key() {
        let mut sf = salesforce();
        sf.api_version = "v62".into();
        let err = ConnectorConfig { salesforce: Some(sf), ..Default::default() }.validate().unwrap_err();
        assert_eq!(err.key, "salesforce.api_version");
        assert!(err.to_string().contains("62.0"), "{err}");

        let mut sf = salesforce();
        sf.login_url = "http://login.salesforce.com".into();
        assert_eq!(sf.validate().unwrap_err().key, "salesforce.login_url");
        sf.login_url = "http://127.0.0.1:8080".into();
        sf.validate().unwrap();
        sf.login_url = "https://login.salesforce.com/services/oauth2/token".into();
        assert_eq!(sf.validate().unwrap_err().key, "salesforce.login_url");

        let mut sf = salesforce();
        sf.task_external_id_field = "Bad Field".into();
        assert_eq!(sf.validate().unwrap_err().key, "salesforce.task_external_id_field");
        let mut sf = salesforce();
        sf.case_external_id_field = "Case Id".into();
        assert_eq!(sf.validate().unwrap_err().key, "salesforce.case_external_id_field");

        let mut kafka = KafkaConsumerConfig::new("localhost:9092", "events", "events");
        assert_eq!(kafka.validate().unwrap_err().key, "kafka.dead_letter_topic");
        kafka.dead_letter_topic = "events.dlq".into();
        kafka.validate().unwrap();
        kafka.properties.insert("enable.auto.commit".into(), "true".into());
        assert_eq!(kafka.validate().unwrap_err().key, "kafka.properties");
        kafka.properties.clear();
        kafka.brokers = "localhost".into();
        assert_eq!(kafka.validate().unwrap_err().key, "kafka.brokers");

        let config = ConnectorConfig { poll_interval_ms: 0, ..Default::default() };
        assert_eq!(config.validate().unwrap_err().key, "poll_interval_ms");

        let mut sf = salesforce();
        sf.batch_max_tasks = 201;
        assert_eq!(sf.validate().unwrap_err().key, "salesforce.batch_max_tasks");
        sf.batch_max_tasks = 200;
        sf.batch_deadline_ms = 0;
        assert_eq!(sf.validate().unwrap_err().key, "salesforce.batch_deadline_ms");
        sf.batch_deadline_ms = 1_500;
        sf.batch_update_deadline_ms = 1_000;
        assert_eq!(sf.validate().unwrap_err().key, "salesforce.batch_update_deadline_ms");
        sf.batch_update_deadline_ms = 5_000;
        sf.slow_down_at_percent = 95;
        assert_eq!(sf.validate().unwrap_err().key, "salesforce.limit_reserve_percent");
        sf.limit_reserve_percent = 5;
        sf.validate().unwrap();
    }

    #[test]
    fn salesforce_section_rejects_unknown_keys() {
        let text = r#"{"consumer_key":"k","username":"u","private_key_file":"/k.pem","passwrd":"x"}"#;
        let err = serde_json::from_str::<SalesforceConfig>(text).unwrap_err();
        assert!(err.to_string().contains("passwrd"), "{err}");
        let ok: SalesforceConfig =
            serde_json::from_str(r#"{"consumer_key":"k","username":"u","private_key_file":"/k.pem"}"#).unwrap();
        assert_eq!(ok.task_external_id_field, "Switchboard_Key__c");
        assert_eq!(ok.case_external_id_field, "Switchboard_Assignment_Id__c");
        assert_eq!(ok.api_version, "62.0");
    }

    fn client_credentials() -> SalesforceConfig {
        SalesforceConfig::client_credentials("https://acme.my.salesforce.com", "key", "/run/secrets/sf-secret")
    }

    #[test]
    fn client_credentials_need_one_secret_and_a_my_domain() {
        let sf = client_credentials();
        sf.validate().unwrap();
        assert_eq!(sf.auth, SalesforceAuth::ClientCredentials);
        assert_eq!(sf.api_version, "62.0");

        let mut inline = client_credentials();
        inline.client_secret_file = None;
        inline.client_secret = Some(Secret::new("from-the-environment"));
        inline.validate().unwrap();

        let mut sf = client_credentials();
        sf.client_secret_file = None;
        let err = sf.validate().unwrap_err();
        assert_eq!(err.key, "salesforce.client_secret_file");
        assert!(err.expected.contains("salesforce.client_secret"), "{err}");
        sf.client_secret = Some(Secret::new("  "));
        assert_eq!(sf.validate().unwrap_err().key, "salesforce.client_secret");

        let mut sf = client_credentials();
        sf.client_secret = Some(Secret::new("both"));
        assert_eq!(sf.validate().unwrap_err().key, "salesforce.client_secret");

        let mut sf = client_credentials();
        sf.username = "integration@example.com".into();
        assert_eq!(sf.validate().unwrap_err().key, "salesforce.username");
        let mut sf = client_credentials();
        sf.private_key_file = "/k.pem".into();
        assert_eq!(sf.validate().unwrap_err().key, "salesforce.private_key_file");

        for host in ["https://login.salesforce.com", "https://test.salesforce.com"] {
            let mut sf = client_credentials();
            sf.login_url = host.into();
            let err = sf.validate().unwrap_err();
            assert_eq!(err.key, "salesforce.login_url");
            assert!(err.expected.contains("My Domain"), "{err}");
        }
        let mut sf = client_credentials();
        sf.login_url = "http://127.0.0.1:8443".into();
        sf.validate().unwrap();
    }

    #[test]
    fn jwt_bearer_stays_the_default_and_needs_its_keys() {
        let ok: SalesforceConfig =
            serde_json::from_str(r#"{"consumer_key":"k","username":"u","private_key_file":"/k.pem"}"#).unwrap();
        assert_eq!(ok.auth, SalesforceAuth::JwtBearer);
        assert_eq!(ok, SalesforceConfig::new("k", "u", "/k.pem"));

        let no_key: SalesforceConfig = serde_json::from_str(r#"{"consumer_key":"k","username":"u"}"#).unwrap();
        assert_eq!(no_key.validate().unwrap_err().key, "salesforce.private_key_file");
        let no_user: SalesforceConfig = serde_json::from_str(r#"{"consumer_key":"k","private_key_file":"/k.pem"}"#).unwrap();
        assert_eq!(no_user.validate().unwrap_err().key, "salesforce.username");

        let mut sf = salesforce();
        sf.client_secret_file = Some("/run/secrets/sf".into());
        let err = sf.validate().unwrap_err();
        assert_eq!(err.key, "salesforce.client_secret_file");
        assert!(err.expected.contains("client_credentials"), "{err}");
        let mut sf = salesforce();
        sf.client_secret = Some(Secret::new("s"));
        assert_eq!(sf.validate().unwrap_err().key, "salesforce.client_secret");

        let cc: SalesforceConfig = serde_json::from_str(
            r#"{"auth":"client_credentials","login_url":"https://acme.my.salesforce.com","consumer_key":"k","client_secret_file":"/s"}"#,
        )
        .unwrap();
        assert_eq!(cc, SalesforceConfig::client_credentials("https://acme.my.salesforce.com", "k", "/s"));
        let err = serde_json::from_str::<SalesforceConfig>(r#"{"auth":"password","consumer_key":"k"}"#).unwrap_err();
        assert!(err.to_string().contains("jwt_bearer"), "{err}");
    }

    #[test]
    fn the_secret_is_redacted_from_debug_output() {
        let mut sf = client_credentials();
        sf.client_secret_file = None;
        sf.client_secret = Some(Secret::new("s3cr3t-consumer-value"));
        let config = ConnectorConfig { salesforce: Some(sf.clone()), ..Default::default() };
        for shown in [format!("{config:?}"), format!("{config:#?}"), format!("{sf:?}")] {
            assert!(!shown.contains("s3cr3t-consumer-value"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
        assert!(format!("{sf:?}").contains("client_secret: Some(<redacted>)"));
        // It still reads back from what the binary parses.
        let text = serde_json::to_string(&sf).unwrap();
        assert_eq!(serde_json::from_str::<SalesforceConfig>(&text).unwrap(), sf);
        assert_eq!(sf.client_secret.as_ref().map(Secret::expose), Some("s3cr3t-consumer-value"));
        // The unused keys of the other flow are left out when printed.
        assert!(!text.contains("username") && !text.contains("private_key_file"), "{text}");
    }

    #[test]
    fn source_round_trips_through_serde() {
        let config = ConnectorConfig {
            source: SourceConfig::Kafka(KafkaConsumerConfig::new("b:9092", "t", "t.dlq")),
            ..Default::default()
        };
        let text = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<ConnectorConfig>(&text).unwrap(), config);
        let outbox: ConnectorConfig = serde_json::from_str(r#"{"source":"outbox"}"#).unwrap();
        assert_eq!(outbox.source, SourceConfig::Outbox);
    }
}
