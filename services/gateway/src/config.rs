//! Configuration of the gateway role, one struct per concern. The binary
//! reads these from the TOML file and `SWITCHBOARD_…` variables and calls
//! [`GatewayConfig::validate`] before anything starts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::media::encode::RecordingFormat;

/// A configuration value that is present but unusable: names the key and
/// says what is expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration: `{key}`: {expected}")]
pub struct ConfigError {
    pub key: String,
    pub expected: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, expected: impl Into<String>) -> Self {
        Self { key: key.into(), expected: expected.into() }
    }
}

/// Everything the gateway role needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    pub sip: SipConfig,
    pub media: MediaConfig,
    pub http: HttpConfig,
    pub recordings: RecordingsConfig,
    pub voicemail: VoicemailConfig,
    pub events: EventsConfig,
    pub auth: AuthConfig,
    pub lookup: LookupConfig,
}

/// Reading Salesforce for agents (`[lookup]`): caller matching and
/// Case/Opportunity searches, made with each agent's own tokens (the
/// connected app is `[auth.salesforce]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LookupConfig {
    /// Region whose numbering caller numbers without a country code follow
    /// (ISO 3166 code: `US`, `GB`, `DE`…).
    pub region: String,
    /// REST API version (`62.0`).
    pub api_version: String,
    /// Longest wait for one Salesforce request, in milliseconds.
    pub request_timeout_ms: u64,
    /// How long a caller lookup's answer is reused, in seconds (0: never).
    pub match_cache_secs: u64,
    /// Most cached caller lookups (one per agent and number).
    pub match_cache_entries: u64,
}

impl Default for LookupConfig {
    fn default() -> Self {
        LookupConfig { region: "US".into(), api_version: "62.0".into(), request_timeout_ms: 3000, match_cache_secs: 300, match_cache_entries: 100_000 }
    }
}

/// Agent sign-in and the agent API's guards (`[auth]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// How long an agent's session lasts, in seconds (default 12 hours).
    pub session_ttl_secs: u64,
    /// 32 bytes, base64: seals agents' Salesforce tokens at rest and the
    /// sign-in state. Secret. Every gateway of one deployment needs the same.
    pub token_key: Option<String>,
    /// A file holding the key instead; when neither is set the gateway uses
    /// `<data_dir>/secrets/token.key`, created on first start.
    pub token_key_file: Option<PathBuf>,
    /// Browser origins allowed to call the agent API (CORS) and to receive
    /// agents after sign-in, e.g. `https://acme.lightning.force.com`. The
    /// gateway's own origin (`http.public_url`) is always allowed.
    pub allowed_origins: Vec<String>,
    /// Requests per minute one session may make (answered 429 beyond).
    pub rate_limit_per_minute: u32,
    /// The connected app agents sign in through; without it "Connect with
    /// Salesforce" answers 503 and says what to configure.
    pub salesforce: Option<AgentLoginConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            session_ttl_secs: 12 * 3600,
            token_key: None,
            token_key_file: None,
            allowed_origins: Vec::new(),
            rate_limit_per_minute: 600,
            salesforce: None,
        }
    }
}

/// `[auth.salesforce]`: the connected app of "Connect with Salesforce".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentLoginConfig {
    /// `https://login.salesforce.com`, `https://test.salesforce.com` or the
    /// org's My Domain URL.
    #[serde(default = "default_login_url")]
    pub login_url: String,
    /// The connected app's consumer key.
    pub client_id: String,
    /// Its consumer secret, when the app requires one (PKCE is always used).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// When set, users of other orgs are refused (`00D…`).
    #[serde(default)]
    pub organization_id: Option<String>,
}

fn default_login_url() -> String {
    "https://login.salesforce.com".to_owned()
}

/// Voicemail for calls to a user that nobody answers or that are declined.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoicemailConfig {
    pub enabled: bool,
    /// Longest message, in seconds.
    pub max_length_secs: u64,
    /// A message ends after this many seconds of silence.
    pub end_on_silence_secs: u64,
    /// Users' own greetings, `<user id>.wav` (8 kHz mono 16-bit);
    /// defaults to `<data_dir>/greetings`.
    pub greetings_dir: Option<PathBuf>,
    /// The greeting of users without their own; the bundled one when unset.
    pub default_greeting: Option<PathBuf>,
    /// `mp3` (the default), `ogg-opus` or `wav`.
    pub format: RecordingFormat,
}

impl Default for VoicemailConfig {
    fn default() -> Self {
        VoicemailConfig {
            enabled: true,
            max_length_secs: 180,
            end_on_silence_secs: 5,
            greetings_dir: None,
            default_greeting: None,
            format: RecordingFormat::Mp3,
        }
    }
}

/// SIP transports and behaviour.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// UDP listen address; absent disables UDP.
    pub udp: Option<SocketAddr>,
    /// TCP listen address; absent disables TCP.
    pub tcp: Option<SocketAddr>,
    /// TLS listen address (SIP over TLS, usually port 5061); absent (the
    /// default) disables the TLS listener. Needs `tls_config.cert` and `key`.
    pub tls: Option<SocketAddr>,
    /// Certificates and keys of SIP over TLS, both directions.
    pub tls_config: SipTlsConfig,
    /// Host (name or IP) written into Via, Contact and Record-Route; defaults
    /// to the IP of the listen address.
    pub advertised_host: Option<String>,
    /// Largest SIP message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Seconds a call rings at the agent's devices before it is given up.
    pub ring_timeout_secs: u64,
    /// Seconds a parked call (F4) waits for an agent before it rings the
    /// agent who parked it again.
    pub park_timeout_secs: u64,
    /// Value of the User-Agent / Server header.
    pub user_agent: String,
    /// Digest realm devices authenticate in (REGISTER). Changing it
    /// invalidates stored device credentials.
    pub realm: String,
    /// Digest algorithms offered to devices, most preferred first: `SHA-256`
    /// and/or `MD5` (RFC 8760). Put `MD5` first for phones that only read
    /// the first challenge.
    pub digest_algorithms: Vec<String>,
    /// Failed authentications from one source address within
    /// `auth_failure_window_secs` that ban it.
    pub auth_max_failures: u32,
    pub auth_failure_window_secs: u64,
    /// How long a banned source is ignored (its messages are dropped).
    pub auth_ban_secs: u64,
    /// New requests per second one source address may send (trunks are
    /// exempt); more are dropped and counted.
    pub rate_limit_per_source: u32,
    /// Requests a source may send at once before the rate applies.
    pub rate_limit_burst: u32,
    /// RFC 3261 T1 (round-trip estimate) in milliseconds: retransmissions
    /// start at T1 and transactions time out after 64·T1.
    pub timer_t1_ms: u64,
    /// Seconds between OPTIONS keep-alives to each trunk with an address;
    /// 0 turns them off. Reachability shows in `switchboard_sip_trunk_up`.
    pub trunk_options_interval_secs: u64,
    /// SIP trunks: where calls to the public network go, and the only
    /// sources whose INVITEs are taken without authentication.
    pub trunks: Vec<TrunkConfig>,
}

/// One SIP trunk (`[[sip.trunks]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrunkConfig {
    /// Name in logs and metrics.
    pub name: String,
    /// Where outbound calls go, `host[:port]`; absent for an inbound-only trunk.
    pub address: Option<String>,
    /// Transport towards `address`: `udp`, `tcp` or `tls` (verified against
    /// `[sip.tls_config]`'s trust, presenting its client certificate when
    /// set: mutual TLS).
    pub transport: String,
    /// Networks (CIDR) or addresses whose INVITEs are calls from this trunk,
    /// accepted without authentication. Nothing else is.
    pub inbound_from: Vec<String>,
    /// An outbound proxy for calls to this trunk, as a Route URI
    /// (`sip:edge.carrier.example;lr`).
    pub outbound_proxy: Option<String>,
    /// Digest credentials for a trunk that challenges with 401/407.
    pub username: Option<String>,
    pub password: Option<String>,
    /// Host of From and P-Asserted-Identity on outbound calls; the trunk's
    /// host when unset.
    pub from_domain: Option<String>,
    /// E.164 normalisation of dialled numbers: the country calling code
    /// (`1`, `44`), the national prefix (`1` in North America, `0` in most
    /// of Europe) and the international prefix (`011`, `00`).
    pub country_code: String,
    pub national_prefix: String,
    pub international_prefix: String,
    /// Numbers sent to the trunk exactly as dialled (emergency services).
    pub verbatim: Vec<String>,
}

impl Default for TrunkConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            address: None,
            transport: "udp".into(),
            inbound_from: Vec::new(),
            outbound_proxy: None,
            username: None,
            password: None,
            from_domain: None,
            country_code: "1".into(),
            national_prefix: "1".into(),
            international_prefix: "011".into(),
            verbatim: vec!["911".into(), "112".into(), "999".into()],
        }
    }
}

impl Default for SipConfig {
    fn default() -> Self {
        let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060);
        Self {
            udp: Some(local),
            tcp: Some(local),
            tls: None,
            tls_config: SipTlsConfig::default(),
            advertised_host: None,
            max_message_bytes: 65_535,
            ring_timeout_secs: 60,
            park_timeout_secs: 120,
            user_agent: concat!("Switchboard/", env!("CARGO_PKG_VERSION")).to_owned(),
            realm: "switchboard".to_owned(),
            digest_algorithms: vec!["SHA-256".to_owned(), "MD5".to_owned()],
            auth_max_failures: 5,
            auth_failure_window_secs: 60,
            auth_ban_secs: 600,
            rate_limit_per_source: 50,
            rate_limit_burst: 200,
            trunk_options_interval_secs: 30,
            timer_t1_ms: 500,
            trunks: Vec::new(),
        }
    }
}

/// `[sip.tls_config]`: PEM files of SIP over TLS. The listener's identity
/// (`cert`, `key`, optionally `client_ca` for mutual TLS) and what outgoing
/// connections trust (`ca`) and present (`client_cert`, `client_key`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipTlsConfig {
    /// Certificate chain of the TLS listener, leaf first.
    pub cert: Option<PathBuf>,
    /// Private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// When set, inbound TLS clients must present a certificate issued by
    /// one of these CAs (mutual TLS); otherwise none is asked for.
    pub client_ca: Option<PathBuf>,
    /// Roots trusted for outgoing TLS connections, instead of the system's
    /// (e.g. a trunk's private CA). Without it the operating system's roots
    /// are trusted.
    pub ca: Option<PathBuf>,
    /// Certificate chain the gateway presents when a server it connects to
    /// asks for one (mutual TLS to a trunk).
    pub client_cert: Option<PathBuf>,
    /// Private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

/// RTP media anchoring.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Address RTP sockets bind to.
    pub bind_ip: IpAddr,
    /// Address written into SDP (c=); defaults to `bind_ip`.
    pub advertised_ip: Option<IpAddr>,
    /// First RTP port (even); each leg takes an even port and the odd one above.
    pub port_min: u16,
    /// Last RTP port.
    pub port_max: u16,
    /// Music on hold: a WAV file, 8 kHz mono 16-bit; the bundled music when unset.
    pub hold_music: Option<PathBuf>,
    /// Threads relaying RTP, each owning its share of the calls; 0 (the
    /// default) means two per CPU.
    pub threads: usize,
    /// libopus encoder complexity (0–10) of what the gateway sends to Opus
    /// legs (browsers) when it transcodes from G.711: encoding is most of
    /// what such a call costs. 0 (the default) takes half the CPU of 5 and a
    /// quarter of 10; with `opus_bitrate` at 24 kbit/s it sounds as good as
    /// 10 at 16 kbit/s (decision 0025). Raise it on a quiet gateway.
    pub opus_complexity: u8,
    /// Bit rate (bits per second, 6000–510000) of that Opus: 24000 by
    /// default, which narrowband speech does not outgrow.
    pub opus_bitrate: u32,
    /// Browser phones (the softphone page's WebRTC leg) on or off.
    pub webrtc: bool,
    /// The one UDP port every browser sends its media to, on `bind_ip`
    /// (announced at `advertised_ip`); 0 (the default) picks a free one at
    /// start, which suits one machine; behind a firewall, fix it and open it.
    pub webrtc_port: u16,
    /// TURN servers the softphone pages relay through when they cannot
    /// reach `webrtc_port` directly (agents behind NAT or strict
    /// firewalls), e.g. `["turn:turn.example.com:3478?transport=udp",
    /// "turns:turn.example.com:5349?transport=tcp"]`.
    pub turn_urls: Vec<String>,
    /// The shared secret of the TURN servers' REST credentials (coturn's
    /// `static-auth-secret` with `use-auth-secret`): each page gets a
    /// username and password valid for `turn_ttl_secs`. Env
    /// `SWITCHBOARD_MEDIA__TURN_SECRET`.
    pub turn_secret: Option<String>,
    /// How long a page's TURN credentials last, in seconds.
    pub turn_ttl_secs: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            advertised_ip: None,
            port_min: 20_000,
            port_max: 29_999,
            hold_music: None,
            threads: 0,
            opus_complexity: crate::media::codec::DEFAULT_OPUS_COMPLEXITY,
            opus_bitrate: crate::media::codec::DEFAULT_OPUS_BITRATE,
            webrtc: true,
            webrtc_port: 0,
            turn_urls: Vec::new(),
            turn_secret: None,
            turn_ttl_secs: 12 * 3600,
        }
    }
}

/// The HTTP server: admin API, call-control API, metrics, health.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Base URL under which agents and Salesforce reach this gateway; used in
    /// recording links. Defaults to `http://<listen>`.
    pub public_url: Option<String>,
    /// Bearer token of the admin API. Without one the admin API answers 503
    /// (it is never open).
    pub admin_token: Option<String>,
    /// Largest request body the APIs accept, in bytes.
    pub max_body_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080), public_url: None, admin_token: None, max_body_bytes: 64 * 1024 }
    }
}

/// Where recordings go.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingsConfig {
    /// Record every answered call (the skeleton's policy until per-line
    /// policies exist).
    pub record_all: bool,
    /// `local` (a directory) or `s3` (S3-compatible object storage).
    pub store: RecordingStoreKind,
    /// Directory of the local store; defaults to `<data_dir>/recordings`.
    pub dir: Option<PathBuf>,
    pub s3: S3Config,
    /// File format of call recordings: `wav` (16-bit PCM, the default),
    /// `ogg-opus` or `mp3` (a tenth of the size).
    pub format: RecordingFormat,
}

impl Default for RecordingsConfig {
    fn default() -> Self {
        Self { record_all: true, store: RecordingStoreKind::Local, dir: None, s3: S3Config::default(), format: RecordingFormat::Wav }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordingStoreKind {
    Local,
    S3,
}

/// S3-compatible object storage (AWS S3, MinIO, s3s-fs…).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    pub bucket: String,
    /// Endpoint URL for non-AWS servers, e.g. `http://127.0.0.1:8014`.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Key prefix inside the bucket, e.g. `recordings/`.
    pub prefix: String,
    /// Path-style requests (`endpoint/bucket/key`), needed by most non-AWS servers.
    pub path_style: bool,
}

/// Where call events go after the outbox.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// `outbox`: the outbox table is the event log (embedded default).
    /// `kafka`: a relay publishes outbox rows to the Kafka topic, and the
    /// connector's Task sync statuses are read from the status topic.
    pub log: EventLogKind,
    pub kafka: KafkaProducerConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventLogKind {
    #[default]
    Outbox,
    Kafka,
}

/// The gateway's Kafka clients: the relay's producer and the reader of the
/// connector's status topic.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaProducerConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// The call-event topic the relay publishes to.
    pub topic: String,
    /// The topic the connector publishes each Task's sync status to
    /// (`TaskSyncStatus`); every gateway reads all of it.
    pub status_topic: String,
    pub client_id: String,
    /// Extra librdkafka settings of both clients (`security.protocol`,
    /// `sasl.*`, `ssl.*`…), for a broker that wants TLS or SASL; those the
    /// gateway sets itself are refused ([`KAFKA_OWNED_PROPERTIES`]).
    pub properties: std::collections::BTreeMap<String, String>,
}

/// librdkafka settings the gateway's clients set themselves: the relay's
/// delivery guarantees (idempotent, every replica) and the status reader's
/// way of reading without a group's commits.
pub const KAFKA_OWNED_PROPERTIES: [&str; 9] = [
    "bootstrap.servers",
    "client.id",
    "enable.idempotence",
    "acks",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "auto.offset.reset",
];

impl KafkaProducerConfig {
    /// A librdkafka configuration with `properties` set.
    pub fn client(&self) -> rdkafka::config::ClientConfig {
        let mut client = rdkafka::config::ClientConfig::new();
        for (key, value) in &self.properties {
            client.set(key, value);
        }
        client
    }
}

/// Shows the properties' names only: their values may be passwords.
impl std::fmt::Debug for KafkaProducerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProducerConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("status_topic", &self.status_topic)
            .field("client_id", &self.client_id)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for KafkaProducerConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".to_owned(),
            topic: "switchboard.call-events".to_owned(),
            status_topic: "switchboard.task-sync".to_owned(),
            client_id: "switchboard-gateway".to_owned(),
            properties: std::collections::BTreeMap::new(),
        }
    }
}

impl GatewayConfig {
    /// Checks every value that serde's types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.sip.udp.is_none() && self.sip.tcp.is_none() && self.sip.tls.is_none() {
            return Err(ConfigError::new("sip.udp", "at least one of sip.udp, sip.tcp and sip.tls must be set"));
        }
        // Reads the PEM files, so a missing or wrong one is reported now.
        crate::sip::tls::TlsSettings::check(&self.sip)?;
        if !(512..=1_048_576).contains(&self.sip.max_message_bytes) {
            return Err(ConfigError::new("sip.max_message_bytes", "a size between 512 and 1048576 bytes"));
        }
        if self.media.webrtc && self.media.webrtc_port != 0 && (self.media.port_min..=self.media.port_max).contains(&self.media.webrtc_port) {
            return Err(ConfigError::new("media.webrtc_port", "a port outside media.port_min..media.port_max (the RTP ports), e.g. 10000"));
        }
        if !self.media.turn_urls.is_empty() && self.media.turn_secret.as_deref().is_none_or(|s| s.trim().is_empty()) {
            return Err(ConfigError::new("media.turn_secret", "the TURN servers' shared secret (coturn static-auth-secret) when media.turn_urls is set"));
        }
        if let Some(url) = self.media.turn_urls.iter().find(|u| !(u.starts_with("turn:") || u.starts_with("turns:"))) {
            return Err(ConfigError::new("media.turn_urls", format!("turn: or turns: URLs, e.g. turn:turn.example.com:3478?transport=udp (not {url:?})")));
        }
        if self.media.opus_complexity > 10 {
            return Err(ConfigError::new("media.opus_complexity", "a libopus complexity from 0 (cheapest) to 10 (best), e.g. 0"));
        }
        if !crate::media::codec::OPUS_BITRATES.contains(&self.media.opus_bitrate) {
            return Err(ConfigError::new("media.opus_bitrate", "bits per second from 6000 to 510000 (libopus's range), e.g. 24000"));
        }
        if self.media.turn_ttl_secs < 60 || self.media.turn_ttl_secs > 7 * 86_400 {
            return Err(ConfigError::new("media.turn_ttl_secs", "seconds between 60 and 604800"));
        }
        if self.sip.ring_timeout_secs == 0 || self.sip.ring_timeout_secs > 600 {
            return Err(ConfigError::new("sip.ring_timeout_secs", "seconds between 1 and 600"));
        }
        if self.sip.park_timeout_secs == 0 || self.sip.park_timeout_secs > 3600 {
            return Err(ConfigError::new("sip.park_timeout_secs", "seconds between 1 and 3600"));
        }
        if self.sip.realm.trim().is_empty() || self.sip.realm.contains('"') {
            return Err(ConfigError::new("sip.realm", "a non-empty realm without quotes"));
        }
        if self.sip.digest_algorithms.is_empty()
            || self.sip.digest_algorithms.iter().any(|a| crate::sip::digest::Algorithm::parse(a).is_none())
        {
            return Err(ConfigError::new("sip.digest_algorithms", "a list of SHA-256 and/or MD5, most preferred first"));
        }
        if self.sip.auth_max_failures == 0 {
            return Err(ConfigError::new("sip.auth_max_failures", "a number of failures of 1 or more"));
        }
        if self.sip.auth_failure_window_secs == 0 || self.sip.auth_ban_secs == 0 {
            return Err(ConfigError::new("sip.auth_ban_secs", "auth_failure_window_secs and auth_ban_secs of 1 second or more"));
        }
        if !(10..=5_000).contains(&self.sip.timer_t1_ms) {
            return Err(ConfigError::new("sip.timer_t1_ms", "milliseconds between 10 and 5000 (500 is the RFC 3261 default)"));
        }
        if self.sip.rate_limit_per_source == 0 || self.sip.rate_limit_burst == 0 {
            return Err(ConfigError::new("sip.rate_limit_per_source", "rate_limit_per_source and rate_limit_burst of 1 or more"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, t) in self.sip.trunks.iter().enumerate() {
            let key = |field: &str| format!("sip.trunks[{i}].{field}");
            if t.name.trim().is_empty() || !names.insert(t.name.as_str()) {
                return Err(ConfigError::new(key("name"), "a unique, non-empty trunk name"));
            }
            for net in &t.inbound_from {
                if net.parse::<ipnet::IpNet>().is_err() && net.parse::<IpAddr>().is_err() {
                    return Err(ConfigError::new(key("inbound_from"), format!("CIDR networks or IP addresses (`{net}` is neither)")));
                }
            }
            if t.address.is_none() && t.inbound_from.is_empty() {
                return Err(ConfigError::new(key("address"), "an address for outbound calls, inbound_from networks, or both"));
            }
            if let Some(a) = &t.address {
                if crate::sip::headers::split_host_port(a).is_none_or(|(h, _)| h.is_empty()) {
                    return Err(ConfigError::new(key("address"), "host[:port] of the trunk, e.g. sip.carrier.example:5060"));
                }
            }
            if !matches!(t.transport.as_str(), "udp" | "tcp" | "tls") {
                return Err(ConfigError::new(key("transport"), "udp, tcp or tls (tls uses [sip.tls_config] for trust and the client certificate)"));
            }
            if let Some(p) = &t.outbound_proxy {
                if crate::sip::headers::SipUri::parse(p).is_none() {
                    return Err(ConfigError::new(key("outbound_proxy"), "a SIP URI, e.g. sip:edge.carrier.example;lr"));
                }
            }
            if t.username.is_some() != t.password.is_some() {
                return Err(ConfigError::new(key("password"), "both username and password, or neither"));
            }
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            if !digits(&t.country_code) || !digits(&t.international_prefix) || !(t.national_prefix.is_empty() || digits(&t.national_prefix)) {
                return Err(ConfigError::new(key("country_code"), "digits for country_code and international_prefix (national_prefix digits or empty)"));
            }
        }
        let m = &self.media;
        if m.port_min < 1024 || !m.port_min.is_multiple_of(2) {
            return Err(ConfigError::new("media.port_min", "an even port number of 1024 or more"));
        }
        if m.port_max <= m.port_min + 3 {
            return Err(ConfigError::new("media.port_max", "a port number above media.port_min + 3 (each leg needs two ports)"));
        }
        if let Some(url) = &self.http.public_url {
            let parsed = url::Url::parse(url)
                .map_err(|_| ConfigError::new("http.public_url", "an absolute http(s) URL, e.g. https://switchboard.example.com"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ConfigError::new("http.public_url", "an http or https URL"));
            }
        }
        if let Some(token) = &self.http.admin_token {
            if token.len() < 16 {
                return Err(ConfigError::new("http.admin_token", "a secret of at least 16 characters"));
            }
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.http.max_body_bytes) {
            return Err(ConfigError::new("http.max_body_bytes", "a size between 1024 and 16777216 bytes"));
        }
        let a = &self.auth;
        if !(300..=30 * 86_400).contains(&a.session_ttl_secs) {
            return Err(ConfigError::new("auth.session_ttl_secs", "seconds between 300 (5 minutes) and 2592000 (30 days)"));
        }
        if a.rate_limit_per_minute == 0 {
            return Err(ConfigError::new("auth.rate_limit_per_minute", "1 or more requests per minute"));
        }
        if crate::salesforce::numbers::region(&self.lookup.region).is_none() {
            return Err(ConfigError::new("lookup.region", format!("a two-letter region code such as US, GB or DE (`{}` is not one)", self.lookup.region)));
        }
        let version_ok = self.lookup.api_version.strip_suffix(".0").and_then(|v| v.parse::<u32>().ok()).is_some_and(|v| (31..=99).contains(&v));
        if !version_ok {
            return Err(ConfigError::new("lookup.api_version", "a REST API version such as 62.0"));
        }
        if !(100..=60_000).contains(&self.lookup.request_timeout_ms) {
            return Err(ConfigError::new("lookup.request_timeout_ms", "milliseconds between 100 and 60000"));
        }
        if let Some(key) = &a.token_key {
            crate::api::auth::seal::Sealer::from_base64(key).map_err(|e| ConfigError::new("auth.token_key", format!("32 bytes in base64 ({e}); make one with `openssl rand -base64 32`")))?;
        }
        for origin in &a.allowed_origins {
            let ok = url::Url::parse(origin).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.path() == "/" && u.query().is_none() && !origin.ends_with('/'));
            if !ok {
                return Err(ConfigError::new("auth.allowed_origins", format!("origins like https://acme.lightning.force.com: scheme and host, no path or trailing slash (`{origin}` is not one)")));
            }
        }
        if let Some(sf) = &a.salesforce {
            if url::Url::parse(&sf.login_url).map_or(true, |u| u.scheme() != "https" && u.host_str() != Some("127.0.0.1") && u.host_str() != Some("localhost")) {
                return Err(ConfigError::new("auth.salesforce.login_url", "an https URL such as https://login.salesforce.com or the org's My Domain"));
            }
            if sf.client_id.trim().is_empty() {
                return Err(ConfigError::new("auth.salesforce.client_id", "the connected app's consumer key"));
            }
        }
        if self.recordings.store == RecordingStoreKind::S3 {
            let s3 = &self.recordings.s3;
            if s3.bucket.is_empty() {
                return Err(ConfigError::new("recordings.s3.bucket", "the bucket name (recordings.store is s3)"));
            }
            if s3.access_key_id.is_empty() || s3.secret_access_key.is_empty() {
                return Err(ConfigError::new(
                    "recordings.s3.access_key_id",
                    "both access_key_id and secret_access_key (recordings.store is s3)",
                ));
            }
            if let Some(ep) = &s3.endpoint {
                url::Url::parse(ep).map_err(|_| ConfigError::new("recordings.s3.endpoint", "an absolute URL, e.g. http://127.0.0.1:8014"))?;
            }
        }
        if self.events.log == EventLogKind::Kafka {
            if self.events.kafka.brokers.trim().is_empty() {
                return Err(ConfigError::new("kafka.brokers", "host:port of at least one broker (events.log is kafka)"));
            }
            if self.events.kafka.topic.trim().is_empty() {
                return Err(ConfigError::new("kafka.topic", "a topic name (events.log is kafka)"));
            }
            if self.events.kafka.status_topic.trim().is_empty() {
                return Err(ConfigError::new("kafka.status_topic", "a topic name (events.log is kafka), e.g. switchboard.task-sync"));
            }
            if self.events.kafka.status_topic == self.events.kafka.topic {
                return Err(ConfigError::new("kafka.status_topic", "a topic of its own: the connector's Task sync statuses, not the call-event topic"));
            }
            if let Some(key) = self.events.kafka.properties.keys().find(|k| KAFKA_OWNED_PROPERTIES.contains(&k.as_str())) {
                return Err(ConfigError::new(
                    "kafka.properties",
                    format!("settings other than the gateway's own ({}): remove {key:?}", KAFKA_OWNED_PROPERTIES.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// The URL recordings are linked under.
    pub fn public_url(&self) -> String {
        self.http
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.http.listen))
            .trim_end_matches('/')
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        GatewayConfig::default().validate().unwrap();
    }

    #[test]
    fn opus_complexity_beyond_libopus_range_names_the_key() {
        let mut c = GatewayConfig::default();
        c.media.opus_complexity = 10;
        c.validate().unwrap();
        c.media.opus_complexity = 11;
        assert_eq!(c.validate().unwrap_err().key, "media.opus_complexity");
        c.media.opus_complexity = 0;
        for (bitrate, ok) in [(5_999, false), (6_000, true), (510_000, true), (510_001, false)] {
            c.media.opus_bitrate = bitrate;
            assert_eq!(c.validate().map_err(|e| e.key), if ok { Ok(()) } else { Err("media.opus_bitrate".to_owned()) }, "{bitrate}");
        }
    }

    #[test]
    fn odd_port_names_the_key() {
        let mut c = GatewayConfig::default();
        c.media.port_min = 20_001;
        assert_eq!(c.validate().unwrap_err().key, "media.port_min");
    }

    #[test]
    fn tls_files_are_checked_by_validate() {
        let mut c = GatewayConfig::default();
        c.sip.tls = Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5061));
        c.sip.tls_config.cert = Some(PathBuf::from("/nonexistent/cert.pem"));
        c.sip.tls_config.key = Some(PathBuf::from("/nonexistent/key.pem"));
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "sip.tls_config.cert");
        assert!(e.expected.contains("cannot read /nonexistent/cert.pem"), "{}", e.expected);
        // TLS alone is a valid set of listeners.
        c.sip.udp = None;
        c.sip.tcp = None;
        assert_eq!(c.validate().unwrap_err().key, "sip.tls_config.cert");
    }

    #[test]
    fn s3_needs_a_bucket() {
        let mut c = GatewayConfig::default();
        c.recordings.store = RecordingStoreKind::S3;
        assert_eq!(c.validate().unwrap_err().key, "recordings.s3.bucket");
    }

    #[test]
    fn the_status_topic_is_a_topic_of_its_own_when_events_go_to_kafka() {
        let mut c = GatewayConfig::default();
        c.events.kafka.status_topic = " ".into();
        c.validate().unwrap();
        c.events.log = EventLogKind::Kafka;
        assert_eq!(c.validate().unwrap_err().key, "kafka.status_topic");
        c.events.kafka.status_topic = c.events.kafka.topic.clone();
        assert_eq!(c.validate().unwrap_err().key, "kafka.status_topic");
        c.events.kafka.status_topic = KafkaProducerConfig::default().status_topic;
        c.validate().unwrap();
        c.events.kafka.properties.insert("sasl.password".into(), "kafka-secret".into());
        c.validate().unwrap();
        assert!(!format!("{c:?}").contains("kafka-secret"), "property values stay out of debug output");
        c.events.kafka.properties.insert("acks".into(), "1".into());
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "kafka.properties");
        assert!(e.to_string().contains("\"acks\""), "{e}");
        c.events.kafka.properties.remove("acks");
        c.validate().unwrap();
    }
}
