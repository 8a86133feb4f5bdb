//! The one configuration of every role: a TOML file plus `SWITCHBOARD_…`
//! environment variables (which win), read with figment.
//!
//! The sections are the roles' own config structs, so a key means the same
//! thing everywhere; this file only adds the top-level shape, the defaults
//! derived from `data_dir`, the mapping of `[events]` and `[kafka]` onto
//! both roles, and error messages that name the offending key. Unknown keys
//! are rejected so a typo never silently falls back to a default.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use figment::error::Kind;
use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Empty, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};
use switchboard_connector::config::{ConnectorConfig, KafkaConsumerConfig, SalesforceConfig, Secret, SourceConfig};
use switchboard_gateway::config::{
    AuthConfig, EventLogKind, EventsConfig, GatewayConfig, LookupConfig, HttpConfig, KafkaProducerConfig, MediaConfig, RecordingStoreKind,
    RecordingsConfig, SipConfig, VoicemailConfig,
};

/// Prefix of the environment variables that configure Switchboard.
pub const ENV_PREFIX: &str = "SWITCHBOARD_";

/// The top-level keys of [`Config`]. A `SWITCHBOARD_<NAME>` variable
/// without `__` is configuration only when it names one of these; others
/// (`SWITCHBOARD_CONFIG` read by the command line, `SWITCHBOARD_CACHE` of
/// the scripts, `SWITCHBOARD_TEST_…` of test harnesses) are left alone.
/// Variables with `__` always are configuration, so a misspelt section
/// (`SWITCHBOARD_SIPP__UDP`) is rejected rather than ignored.
const TOP_LEVEL_KEYS: [&str; 14] = [
    "data_dir", "database", "sip", "media", "http", "auth", "lookup", "recordings", "voicemail", "events", "kafka", "connector", "salesforce", "log",
];

/// Written instead of a secret by `switchboard config check`.
const REDACTED: &str = "<redacted>";

/// A configuration that cannot be used. The process exits with status 2
/// and this message, which names the key and says what is expected.
#[derive(Debug)]
pub struct ConfigProblem(String);

impl ConfigProblem {
    /// A bad value at the dotted `key`, with where to set it.
    pub fn invalid(key: &str, expected: &str) -> Self {
        Self(format!("configuration error: `{key}`: {expected} ({})", where_to_set(key)))
    }

    /// Any other configuration problem (missing file, bad RUST_LOG).
    pub fn other(message: impl Into<String>) -> Self {
        Self(format!("configuration error: {}", message.into()))
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigProblem {}

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the embedded defaults keep their files: the SQLite database
    /// and local recordings.
    pub data_dir: PathBuf,
    /// `[database]`: the store shared by every role.
    pub database: DatabaseConfig,
    /// `[sip]`: the gateway's SIP transports.
    pub sip: SipConfig,
    /// `[media]`: the gateway's RTP ports and addresses.
    pub media: MediaConfig,
    /// `[http]`: listen address of the APIs, /healthz and /metrics (every
    /// role), and the admin token.
    pub http: HttpConfig,
    /// `[auth]`: agent sign-in with Salesforce, sessions, CORS origins.
    pub auth: AuthConfig,
    /// `[lookup]`: caller matching and searches in Salesforce made with
    /// each agent's own tokens (home region, cache).
    pub lookup: LookupConfig,
    /// `[recordings]`: local directory or S3, file format.
    pub recordings: RecordingsConfig,
    /// `[voicemail]`: unanswered and declined calls to a user.
    pub voicemail: VoicemailConfig,
    /// `[events]`: outbox or Kafka between gateway and connector.
    pub events: EventsSection,
    /// `[kafka]`: used when `events.log = "kafka"`.
    pub kafka: KafkaSection,
    /// `[connector]`: connector tuning.
    pub connector: ConnectorSection,
    /// The Salesforce org; absent until one is connected (events wait in
    /// the log meanwhile).
    pub salesforce: Option<SalesforceConfig>,
    /// `[log]`: level and format of the log on standard error.
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./switchboard-data"),
            database: DatabaseConfig::default(),
            sip: SipConfig::default(),
            media: MediaConfig::default(),
            http: HttpConfig::default(),
            auth: AuthConfig::default(),
            lookup: LookupConfig::default(),
            recordings: RecordingsConfig::default(),
            voicemail: VoicemailConfig::default(),
            events: EventsSection::default(),
            kafka: KafkaSection::default(),
            connector: ConnectorSection::default(),
            salesforce: None,
            log: LogConfig::default(),
        }
    }
}

/// `[database]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://<file>` or `postgres://user[:password]@host[:port]/db`;
    /// defaults to `sqlite://<data_dir>/switchboard.db`.
    pub url: Option<String>,
}

/// `[events]`: which event log sits between the gateway and the connector.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsSection {
    /// `outbox` (the database table; no broker needed) or `kafka`.
    pub log: EventLogKind,
}

/// `[kafka]`: the call-event topic, used when `events.log = "kafka"`. Feeds
/// the gateway's relay (producer) and the connector (consumer group), and
/// the gateway's reader of the connector's status topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSection {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// The call-event topic the relay writes and the connector reads.
    pub topic: String,
    /// The Task sync status topic the connector writes and every gateway
    /// reads (the agents' `call.synced`).
    pub status_topic: String,
    /// The connectors' consumer group; `switchboard replay` reads the
    /// dead-letter topic in `<group_id>.replay`.
    pub group_id: String,
    /// Where the connector puts records it cannot apply, until
    /// `switchboard replay` feeds them back.
    pub dead_letter_topic: String,
    /// Client id in broker logs; defaults to the role's name
    /// (`switchboard-gateway`, `switchboard-connector`).
    pub client_id: Option<String>,
    /// Extra librdkafka settings of both roles' clients
    /// (`security.protocol`, `sasl.*`, `ssl.*`…); each role refuses those
    /// it sets itself.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaSection {
    fn default() -> Self {
        let producer = KafkaProducerConfig::default();
        let consumer = KafkaConsumerConfig::new(&producer.brokers, &producer.topic, "");
        Self {
            dead_letter_topic: format!("{}.dead-letter", producer.topic),
            brokers: producer.brokers,
            topic: producer.topic,
            status_topic: producer.status_topic,
            group_id: consumer.group_id,
            client_id: None,
            properties: BTreeMap::new(),
        }
    }
}

/// `[connector]`: tuning of the connector role.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectorSection {
    /// How often the outbox is polled for new events, in milliseconds.
    pub poll_interval_ms: u64,
}

impl Default for ConnectorSection {
    fn default() -> Self {
        Self { poll_interval_ms: ConnectorConfig::default().poll_interval_ms }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A level (`error`, `warn`, `info`, `debug`, `trace`) or a filter such
    /// as `info,switchboard_gateway=debug`; `RUST_LOG` overrides it.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".to_owned(), format: LogFormat::Text }
    }
}

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event, for log collectors.
    Json,
}

/// Reads the configuration: `file` (if given, it must exist) overlaid with
/// `SWITCHBOARD_…` variables. Values are parsed but not yet validated, so
/// command-line overrides can be applied before [`Config::validate`].
pub fn load(file: Option<&Path>) -> Result<Config, ConfigProblem> {
    let mut figment = Figment::new();
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigProblem::other(format!(
                "the configuration file {} does not exist or is not a file (given by --config or SWITCHBOARD_CONFIG)",
                path.display()
            )));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(Environment);
    // Lossy: a variable's text becomes a number or boolean where the key
    // is one, and stays text where the key is text.
    figment.extract_lossy().map_err(|e| from_figment(&e))
}

/// The `SWITCHBOARD_…` variables as a figment provider.
///
/// Unlike figment's own `Env`, every value is kept as the text it is, so
/// `SWITCHBOARD_SALESFORCE__API_VERSION=62.0` or an all-digit admin token
/// stay strings; the lossy extraction in [`load`] reads numbers and booleans
/// from the text where a key wants them. An empty value unsets an optional
/// key (`SWITCHBOARD_SIP__TCP=` turns SIP over TCP off).
struct Environment;

impl Environment {
    /// `SWITCHBOARD_A__B_C` → key `a.b_c`; see [`TOP_LEVEL_KEYS`] for which
    /// variables count.
    fn variables() -> Env {
        Env::prefixed(ENV_PREFIX).split("__").filter(|key| {
            let key = key.as_str().to_ascii_lowercase();
            key.contains('.') || TOP_LEVEL_KEYS.contains(&key.as_str())
        })
    }
}

impl Provider for Environment {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable(s)")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, text) in Self::variables().iter() {
            let value = if text.is_empty() {
                Value::from(Empty::None)
            } else if let Some(list) = toml_array(&text) {
                list
            } else {
                Value::from(text)
            };
            if let Value::Dict(_, nested) = figment::util::nest(key.as_str(), value) {
                merge_into(&mut dict, nested);
            }
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// A value written as a TOML array (`[{ name = "carrier", … }]`), for the
/// keys that hold lists of tables such as `sip.trunks`; `None` when the
/// text is not one, so it stays a string.
fn toml_array(text: &str) -> Option<Value> {
    if !text.trim_start().starts_with('[') {
        return None;
    }
    let doc: toml::Table = toml::from_str(&format!("v = {text}")).ok()?;
    Value::serialize(doc.get("v")?).ok()
}

/// Adds `other` to `into`, merging tables key by key.
fn merge_into(into: &mut Dict, other: Dict) {
    for (key, value) in other {
        match (into.get_mut(&key), value) {
            (Some(Value::Dict(_, existing)), Value::Dict(_, nested)) => merge_into(existing, nested),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// The environment variable that sets the dotted `key`.
pub fn env_var(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "__").to_ascii_uppercase())
}

fn where_to_set(key: &str) -> String {
    let location = match key.rsplit_once('.') {
        Some((table, leaf)) => format!("key `{leaf}` in [{table}]"),
        None => format!("top-level key `{key}`"),
    };
    format!("{location} of the configuration file, or {}", env_var(key))
}

/// Turns figment's errors into one message naming each bad key and where
/// its value came from.
fn from_figment(error: &figment::Error) -> ConfigProblem {
    let lines: Vec<String> = error.clone().into_iter().map(|e| describe(&e)).collect();
    ConfigProblem(format!("configuration error: {}", lines.join("\nconfiguration error: ")))
}

fn describe(e: &figment::Error) -> String {
    let mut path = e.path.clone();
    let detail = match &e.kind {
        Kind::UnknownField(field, expected) => {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            format!("unknown key; expected one of: {}", expected.join(", "))
        }
        Kind::MissingField(field) => {
            if path.last().map(String::as_str) != Some(field.as_ref()) {
                path.push(field.to_string());
            }
            "is required but missing".to_owned()
        }
        Kind::InvalidType(actual, expected) => format!("found {actual}, expected {expected}"),
        Kind::InvalidValue(actual, expected) => format!("invalid value {actual}, expected {expected}"),
        Kind::UnknownVariant(actual, expected) => {
            format!("unknown value `{actual}`, expected one of: {}", expected.join(", "))
        }
        other => other.to_string(),
    };
    let key = path.join(".");
    let origin = match &e.metadata {
        Some(md) if md.name.contains("environment") && !path.is_empty() => {
            format!(" (environment variable {})", env_var(&key))
        }
        Some(md) => match &md.source {
            Some(source) => format!(" (in {source})"),
            None => format!(" (in {})", md.name),
        },
        None => String::new(),
    };
    if key.is_empty() {
        format!("{detail}{origin}")
    } else {
        format!("`{key}`{origin}: {detail}")
    }
}

impl Config {
    /// The database URL, derived from `data_dir` unless set.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("switchboard.db").display()),
        }
    }

    /// The SQLite file behind [`Config::database_url`], if it is one.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let url = self.database_url();
        let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
        let path = rest.split('?').next().unwrap_or_default();
        (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
    }

    /// Where local recordings go, as the gateway resolves it.
    pub fn recordings_dir(&self) -> PathBuf {
        self.recordings.dir.clone().unwrap_or_else(|| self.data_dir.join("recordings"))
    }

    /// The gateway role's view of this configuration.
    pub fn gateway(&self) -> GatewayConfig {
        let producer_default = KafkaProducerConfig::default();
        GatewayConfig {
            sip: self.sip.clone(),
            media: self.media.clone(),
            http: self.http.clone(),
            auth: self.auth.clone(),
            lookup: self.lookup.clone(),
            recordings: self.recordings.clone(),
            voicemail: self.voicemail.clone(),
            events: EventsConfig {
                log: self.events.log,
                kafka: KafkaProducerConfig {
                    brokers: self.kafka.brokers.clone(),
                    topic: self.kafka.topic.clone(),
                    status_topic: self.kafka.status_topic.clone(),
                    client_id: self.kafka.client_id.clone().unwrap_or(producer_default.client_id),
                    properties: self.kafka.properties.clone(),
                },
            },
        }
    }

    /// The connector role's view of this configuration: it reads the outbox
    /// or the Kafka topic, following `events.log` like the gateway.
    pub fn connector(&self) -> ConnectorConfig {
        let source = match self.events.log {
            EventLogKind::Outbox => SourceConfig::Outbox,
            EventLogKind::Kafka => {
                let mut kafka =
                    KafkaConsumerConfig::new(&self.kafka.brokers, &self.kafka.topic, &self.kafka.dead_letter_topic);
                kafka.group_id = self.kafka.group_id.clone();
                kafka.status_topic = self.kafka.status_topic.clone();
                if let Some(client_id) = &self.kafka.client_id {
                    kafka.client_id = client_id.clone();
                }
                kafka.properties = self.kafka.properties.clone();
                SourceConfig::Kafka(kafka)
            }
        };
        ConnectorConfig {
            salesforce: self.salesforce.clone(),
            source,
            poll_interval_ms: self.connector.poll_interval_ms,
        }
    }

    /// Checks every value; the first bad one is reported by its key.
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigProblem::invalid("data_dir", "a directory path, e.g. ./switchboard-data"));
        }
        let url = self.database_url();
        if !["sqlite:", "postgres:", "postgresql:"].iter().any(|scheme| url.starts_with(scheme)) {
            return Err(ConfigProblem::invalid(
                "database.url",
                "a URL of the form sqlite://<file> or postgres://user[:password]@host[:port]/database",
            ));
        }
        if url.starts_with("sqlite") && self.sqlite_path().is_none() {
            return Err(ConfigProblem::invalid("database.url", "a SQLite file path after sqlite://"));
        }
        self.gateway().validate().map_err(|e| ConfigProblem::invalid(&e.key, &e.expected))?;
        if self.events.log == EventLogKind::Kafka && self.kafka.status_topic == self.kafka.dead_letter_topic {
            return Err(ConfigProblem::invalid("kafka.status_topic", "a topic of its own: the connector's Task sync statuses, not its dead-letter topic"));
        }
        self.connector().validate().map_err(|e| {
            let key = if e.key.contains('.') { e.key.to_owned() } else { format!("connector.{}", e.key) };
            ConfigProblem::invalid(&key, &e.expected)
        })?;
        if !is_log_filter(&self.log.level) {
            return Err(ConfigProblem::invalid(
                "log.level",
                "a level (error, warn, info, debug, trace) or a filter such as info,switchboard_gateway=debug",
            ));
        }
        Ok(())
    }

    /// The effective configuration as TOML with every secret replaced, for
    /// `switchboard config check`.
    pub fn to_redacted_toml(&self) -> Result<String, toml::ser::Error> {
        let mut shown = self.clone();
        shown.database.url = Some(switchboard_store::redact(&self.database_url()));
        if shown.http.admin_token.is_some() {
            shown.http.admin_token = Some(REDACTED.to_owned());
        }
        if shown.auth.token_key.is_some() {
            shown.auth.token_key = Some(REDACTED.to_owned());
        }
        if let Some(secret) = shown.auth.salesforce.as_mut().and_then(|s| s.client_secret.as_mut()) {
            *secret = REDACTED.to_owned();
        }
        if let Some(secret) = shown.salesforce.as_mut().and_then(|s| s.client_secret.as_mut()) {
            *secret = Secret::new(REDACTED);
        }
        if !shown.recordings.s3.secret_access_key.is_empty() {
            shown.recordings.s3.secret_access_key = REDACTED.to_owned();
        }
        if shown.media.turn_secret.is_some() {
            shown.media.turn_secret = Some(REDACTED.to_owned());
        }
        for (key, value) in shown.kafka.properties.iter_mut() {
            let key = key.to_ascii_lowercase();
            if key.contains("password") || key.contains("secret") || key.contains("token") {
                *value = REDACTED.to_owned();
            }
        }
        toml::to_string_pretty(&shown)
    }

    /// A one-line summary of where recordings go, for the startup banner.
    pub fn recordings_summary(&self) -> String {
        match self.recordings.store {
            RecordingStoreKind::Local => self.recordings_dir().display().to_string(),
            RecordingStoreKind::S3 => {
                let s3 = &self.recordings.s3;
                let endpoint = s3.endpoint.as_deref().map(|e| format!(" at {e}")).unwrap_or_default();
                format!("s3://{}/{}{endpoint}", s3.bucket, s3.prefix)
            }
        }
    }
}

/// A level, or directives such as `info,switchboard_gateway=debug`. A bare
/// word that is not a level is refused even though `tracing` would read it
/// as a target name: in `log.level` it is almost surely a misspelt level.
fn is_log_filter(filter: &str) -> bool {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    tracing_subscriber::EnvFilter::try_new(filter).is_ok()
        && filter.split(',').map(str::trim).filter(|d| !d.is_empty()).all(|directive| {
            directive.contains('=') || directive.contains('[') || LEVELS.contains(&directive.to_ascii_lowercase().as_str())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_derive_from_data_dir() {
        let mut config = Config::default();
        config.validate().unwrap();
        config.data_dir = PathBuf::from("/var/lib/sb");
        assert_eq!(config.database_url(), "sqlite:///var/lib/sb/switchboard.db");
        assert_eq!(config.sqlite_path().unwrap(), PathBuf::from("/var/lib/sb/switchboard.db"));
        assert_eq!(config.recordings_dir(), PathBuf::from("/var/lib/sb/recordings"));
        assert_eq!(config.connector().source, SourceConfig::Outbox);
    }

    #[test]
    fn kafka_section_feeds_both_roles() {
        let mut config = Config::default();
        config.events.log = EventLogKind::Kafka;
        config.kafka.brokers = "k1:9092,k2:9092".into();
        config.kafka.client_id = Some("sb-7".into());
        config.kafka.properties.insert("security.protocol".into(), "SASL_SSL".into());
        config.validate().unwrap();
        let gateway = config.gateway();
        assert_eq!(gateway.events.kafka.brokers, "k1:9092,k2:9092");
        assert_eq!(gateway.events.kafka.client_id, "sb-7");
        let SourceConfig::Kafka(consumer) = config.connector().source else { panic!("kafka source") };
        assert_eq!(gateway.events.kafka.properties, consumer.properties, "both roles' clients get the properties");
        assert_eq!(consumer.properties.get("security.protocol").map(String::as_str), Some("SASL_SSL"));
        assert_eq!(
            (consumer.brokers.as_str(), consumer.topic.as_str(), consumer.client_id.as_str()),
            ("k1:9092,k2:9092", gateway.events.kafka.topic.as_str(), "sb-7")
        );
        assert_ne!(consumer.dead_letter_topic, consumer.topic);
        assert_eq!(gateway.events.kafka.status_topic, "switchboard.task-sync");
        config.kafka.status_topic = "sb.task-sync".into();
        assert_eq!(config.gateway().events.kafka.status_topic, "sb.task-sync");
        config.kafka.status_topic = config.kafka.dead_letter_topic.clone();
        assert!(config.validate().unwrap_err().to_string().contains("`kafka.status_topic`"));
    }

    #[test]
    fn validation_errors_name_the_key_and_how_to_set_it() {
        let mut config = Config::default();
        config.media.port_min = 20_001;
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("`media.port_min`"), "{message}");
        assert!(message.contains("SWITCHBOARD_MEDIA__PORT_MIN"), "{message}");

        let mut config = Config::default();
        config.connector.poll_interval_ms = 0;
        assert!(config.validate().unwrap_err().to_string().contains("`connector.poll_interval_ms`"));

        let mut config = Config::default();
        config.database.url = Some("mysql://db/sb".into());
        assert!(config.validate().unwrap_err().to_string().contains("`database.url`"));

        let mut config = Config::default();
        config.log.level = "loud".into();
        assert!(config.validate().unwrap_err().to_string().contains("`log.level`"));
        config.log.level = "DEBUG,switchboard_gateway=trace".into();
        config.validate().unwrap();
    }

    #[test]
    fn top_level_keys_match_the_struct() {
        let config = Config { salesforce: Some(SalesforceConfig::new("k", "u", "/k.pem")), ..Default::default() };
        let table: toml::Table = toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
        let mut keys: Vec<&str> = table.keys().map(String::as_str).collect();
        let mut expected = TOP_LEVEL_KEYS.to_vec();
        keys.sort_unstable();
        expected.sort_unstable();
        assert_eq!(keys, expected);
    }

    #[test]
    fn sip_tls_keys_read_from_toml_and_print_back() {
        let text = "[sip]\ntls = \"0.0.0.0:5061\"\n[sip.tls_config]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\nclient_ca = \"/nonexistent/clients.pem\"\n";
        let config: Config = toml::from_str(text).unwrap();
        assert_eq!(config.sip.tls, Some("0.0.0.0:5061".parse().unwrap()));
        assert_eq!(config.sip.tls_config.client_ca.as_deref(), Some(Path::new("/nonexistent/clients.pem")));
        let printed: Config = toml::from_str(&config.to_redacted_toml().unwrap()).unwrap();
        assert_eq!(printed.sip.tls_config.key, config.sip.tls_config.key);
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("`sip.tls_config.cert`: cannot read /nonexistent/cert.pem"), "{message}");
        assert!(message.contains("SWITCHBOARD_SIP__TLS_CONFIG__CERT"), "{message}");
    }

    #[test]
    fn secrets_are_redacted() {
        let mut config = Config::default();
        config.database.url = Some("postgres://sb:hunter2@db/sb".into());
        config.http.admin_token = Some("a-very-secret-admin-token".into());
        config.recordings.s3.secret_access_key = "s3-secret".into();
        config.media.turn_secret = Some("turn-shared-secret".into());
        config.kafka.properties.insert("sasl.password".into(), "kafka-secret".into());
        let mut salesforce = SalesforceConfig::client_credentials("https://acme.my.salesforce.com", "key", "");
        salesforce.client_secret_file = None;
        salesforce.client_secret = Some(Secret::new("sf-consumer-secret"));
        config.salesforce = Some(salesforce);
        let text = config.to_redacted_toml().unwrap();
        for secret in ["hunter2", "a-very-secret-admin-token", "s3-secret", "kafka-secret", "sf-consumer-secret", "turn-shared-secret"] {
            assert!(!text.contains(secret), "{secret} leaked:\n{text}");
        }
        assert!(text.contains("postgres://sb:***@db/sb"), "{text}");
        let parsed: Config = toml::from_str(&text).expect("the printed configuration reads back");
        assert_eq!(parsed.http.admin_token.as_deref(), Some(REDACTED));
        let salesforce = parsed.salesforce.expect("salesforce");
        assert_eq!(salesforce.client_secret.as_ref().map(Secret::expose), Some(REDACTED));
        assert!(text.contains("auth = \"client_credentials\""), "{text}");
    }
}
