//! Test harness: a Salesforce emulator with a throwaway connected-app key,
//! a fresh SQLite database, call events written like the gateway writes
//! them (to the outbox, or to a topic with [`produce_events`]), and a
//! connector started on them; [`process`] adds the connector as a
//! `switchboard` process on PostgreSQL. The Kafka-protocol broker comes
//! from the workspace's `switchboard-test-support` crate.
#![allow(dead_code)]

pub mod process;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use salesforce_emulator::{Emulator, EmulatorConfig};
use switchboard_connector::{Connector, ConnectorConfig, Progress, RunningConnector, SalesforceConfig, SourceConfig};
use switchboard_proto::v1::{self, call_event::Kind};
use switchboard_proto::{CallEvent, Message};
use switchboard_store::{Database, Outbox};
use switchboard_test_support::kafka::{produce, Placed};
use tempfile::TempDir;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Generates an RSA key and a self-signed certificate with the `openssl`
/// CLI, the way an operator prepares a connected app. Returns the key file
/// and the certificate PEM.
pub fn openssl_credentials(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("connected-app.key");
    let cert = dir.join("connected-app.crt");
    let output = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=switchboard-connector-test"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl CLI is needed to make the test's connected-app key (apt-get install openssl)");
    assert!(output.status.success(), "openssl failed: {}", String::from_utf8_lossy(&output.stderr));
    let pem = std::fs::read_to_string(&cert).expect("certificate written by openssl");
    (key, pem)
}

/// One test's world: an org, a database and the connector's configuration.
pub struct World {
    pub dir: TempDir,
    pub emulator: Emulator,
    pub db: Database,
    pub key_file: PathBuf,
    pub username: String,
    /// Salesforce user id of the agent used by [`call_events`].
    pub agent_sf_id: String,
}

impl World {
    pub async fn new() -> World {
        World::with(|_| {}).await
    }

    /// A world whose org is configured by `change` (missing fields,
    /// field-level security).
    pub async fn with(change: impl FnOnce(&mut EmulatorConfig)) -> World {
        World::listening_on("127.0.0.1:0".parse().unwrap(), change).await
    }

    /// A world whose org listens on `listen`.
    pub async fn listening_on(listen: SocketAddr, change: impl FnOnce(&mut EmulatorConfig)) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let (key_file, certificate_pem) = openssl_credentials(dir.path());
        let mut config = EmulatorConfig::new(certificate_pem);
        change(&mut config);
        let username = config.username.clone();
        let emulator = Emulator::start(config, listen).await.expect("emulator starts");
        let agent_sf_id = emulator.add_user("ann.agent@switchboard.test").expect("agent user");
        let url = format!("sqlite://{}", dir.path().join("switchboard.db").display());
        let db = Database::connect(&url).await.expect("database");
        db.migrate().await.expect("migrations");
        World { dir, emulator, db, key_file, username, agent_sf_id }
    }

    /// The connector's Salesforce section for this org, with fast retries.
    pub fn salesforce(&self) -> SalesforceConfig {
        let mut sf = SalesforceConfig::new(self.emulator.consumer_key(), self.username.clone(), self.key_file.clone());
        sf.login_url = self.emulator.url();
        sf.request_timeout_secs = 5;
        sf.retry_initial_ms = 10;
        sf.retry_max_ms = 100;
        sf.limit_backoff_secs = 1;
        sf.batch_deadline_ms = 50;
        sf.batch_update_deadline_ms = 50;
        sf
    }

    pub fn outbox_config(&self) -> ConnectorConfig {
        ConnectorConfig { salesforce: Some(self.salesforce()), source: SourceConfig::Outbox, poll_interval_ms: 10 }
    }

    /// Turns on the client credentials flow of the org's connected app, its
    /// tokens acting as `run_as` (a username of the org), as an admin does
    /// under Manage → Edit Policies.
    pub fn enable_client_credentials(&self, run_as: &str) {
        let app = self.emulator.connected_app(&self.emulator.consumer_key()).expect("the connected app");
        self.emulator.register_connected_app(app.with_client_credentials(run_as)).expect("client credentials enabled");
    }

    /// The connector's Salesforce section for the client credentials flow,
    /// with `secret` in a file (newline-terminated, as `echo` writes it)
    /// and fast retries.
    pub fn client_credentials(&self, secret: &str) -> SalesforceConfig {
        let secret_file = self.dir.path().join("consumer-secret");
        std::fs::write(&secret_file, format!("{secret}\n")).expect("secret file");
        let mut sf = SalesforceConfig::client_credentials(self.emulator.url(), self.emulator.consumer_key(), secret_file);
        let jwt = self.salesforce();
        sf.request_timeout_secs = jwt.request_timeout_secs;
        sf.retry_initial_ms = jwt.retry_initial_ms;
        sf.retry_max_ms = jwt.retry_max_ms;
        sf.limit_backoff_secs = jwt.limit_backoff_secs;
        sf
    }

    /// Appends events to the outbox like the gateway does; returns the last row id.
    pub async fn write_outbox(&self, events: &[CallEvent]) -> i64 {
        let mut tx = self.db.pool().begin().await.unwrap();
        let mut last = 0;
        for e in events {
            last = Outbox::insert(&mut tx, &e.call_id, e.sequence as i64, e.kind_name(), &e.encode_to_vec())
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        last
    }

    /// Appends a raw row (e.g. bytes that are no CallEvent); returns its id.
    pub async fn write_raw(&self, call_id: &str, sequence: i64, payload: &[u8]) -> i64 {
        let mut tx = self.db.pool().begin().await.unwrap();
        let id = Outbox::insert(&mut tx, call_id, sequence, "call.started", payload).await.unwrap();
        tx.commit().await.unwrap();
        id
    }

    pub async fn scalar_i64(&self, sql: &str) -> i64 {
        switchboard_store::sqlx::query_scalar::<_, i64>(sql).fetch_one(self.db.pool()).await.unwrap()
    }

    pub async fn execute(&self, sql: &str) {
        switchboard_store::sqlx::query(sql).execute(self.db.pool()).await.unwrap();
    }

    /// `(call_id, reason)` of every dead letter, oldest first.
    pub async fn dead_letters(&self) -> Vec<(String, String)> {
        use switchboard_store::sqlx::Row;
        switchboard_store::sqlx::query("SELECT call_id, reason FROM dead_letters ORDER BY id")
            .fetch_all(self.db.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<String, _>("call_id"), r.get::<String, _>("reason")))
            .collect()
    }
}

/// REST requests of the start-up preflight when the org answers: the
/// describes of Task and Case. Tests that count Salesforce requests count
/// from after the start, adding these.
pub const PREFLIGHT_API_CALLS: u64 = 2;

/// A connector started for a test, stopped by [`Running::stop`].
pub struct Running {
    pub connector: RunningConnector,
    pub shutdown: CancellationToken,
    pub progress: watch::Receiver<Progress>,
}

impl Running {
    pub async fn start(config: ConnectorConfig, db: &Database) -> Running {
        let shutdown = CancellationToken::new();
        let connector = Connector::start(config, db.clone(), shutdown.clone()).await.expect("connector starts");
        let progress = connector.progress();
        Running { connector, shutdown, progress }
    }

    /// Waits until the outbox cursor has passed `row`.
    pub async fn until_outbox_position(&mut self, row: i64) -> Progress {
        let mut progress = self.progress.clone();
        let reached = tokio::time::timeout(Duration::from_secs(30), progress.wait_for(|p| p.outbox_position.is_some_and(|pos| pos >= row)))
            .await
            .map(|r| r.map(|p| p.clone()));
        match reached {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => panic!("the connector stopped"),
            Err(_) => panic!("the connector did not reach outbox row {row}: {:?}", *self.progress.borrow()),
        }
    }

    /// Waits until `records` records were handled since start.
    pub async fn until_records(&mut self, records: u64) -> Progress {
        let mut progress = self.progress.clone();
        let reached = tokio::time::timeout(Duration::from_secs(60), progress.wait_for(|p| p.records >= records))
            .await
            .map(|r| r.map(|p| p.clone()));
        match reached {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => panic!("the connector stopped"),
            Err(_) => panic!("the connector did not handle {records} records: {:?}", *self.progress.borrow()),
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.connector.wait())
            .await
            .expect("the connector stops promptly")
            .expect("the connector stops cleanly");
    }
}

/// Polls an external observation (the emulator's state) until it holds.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `check` every 20 ms until it yields a value, for at most `timeout`;
/// panics naming `what` (and the last `Err` it gave) when time runs out.
pub async fn await_condition<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}: {last}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port nobody listens on now, picked by the kernel.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port()
}

/// A free loopback address whose port lies below Linux's ephemeral range
/// (32768–60999), so no outgoing connection takes it while a server that
/// listened there is down and comes back.
pub fn address_outside_ephemeral_range() -> SocketAddr {
    for _ in 0..1000 {
        let port = 20_000 + rand::random::<u16>() % 12_000;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().unwrap();
        }
    }
    panic!("no free port between 20000 and 32000");
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// 2024-03-01T10:00:00Z
pub const T0: i64 = 1_709_287_200_000;

pub fn agent(user_id: &str, salesforce_user_id: &str) -> Option<v1::Agent> {
    Some(v1::Agent {
        user_id: user_id.into(),
        salesforce_user_id: salesforce_user_id.into(),
        device_id: "browser-1".into(),
        display_name: "Ann Agent".into(),
        privacy_mode: false,
    })
}

pub fn event(call_id: &str, sequence: u64, kind: Kind) -> CallEvent {
    CallEvent {
        event_id: format!("{call_id}-evt-{sequence}"),
        call_id: call_id.into(),
        sequence,
        occurred_at_ms: T0 + sequence as i64 * 1000,
        kind: Some(kind),
    }
}

/// An answered inbound call to `user_id` with a recording: started, ringing,
/// answered, ended (125 s talk), recording available.
pub fn call_events(call_id: &str, user_id: &str, salesforce_user_id: &str) -> Vec<CallEvent> {
    vec![
        event(
            call_id,
            1,
            Kind::Started(v1::CallStarted {
                direction: v1::Direction::Inbound as i32,
                from: Some(v1::Party { number: "+14155550100".into(), display_name: "Carla Caller".into() }),
                to: Some(v1::Party { number: "+14155550199".into(), display_name: String::new() }),
                owner: agent(user_id, salesforce_user_id),
            }),
        ),
        event(call_id, 2, Kind::Ringing(v1::CallRinging { agent: agent(user_id, salesforce_user_id) })),
        event(call_id, 3, Kind::Answered(v1::CallAnswered { agent: agent(user_id, salesforce_user_id) })),
        event(
            call_id,
            4,
            Kind::Ended(v1::CallEnded {
                reason: v1::EndReason::Completed as i32,
                hangup_by: "caller".into(),
                talk_seconds: 125,
                total_seconds: 131,
                sip_status: 200,
                q850_cause: 16,
            }),
        ),
        event(
            call_id,
            5,
            Kind::RecordingAvailable(v1::RecordingAvailable {
                recording_id: format!("{call_id}-rec"),
                object_key: format!("recordings/{call_id}.wav"),
                url: format!("https://switchboard.example.com/recordings/{call_id}"),
                format: "wav/pcm_s16le".into(),
                duration_ms: 124_000,
                size_bytes: 3_968_044,
                sample_rate_hz: 8000,
                channels: vec![v1::ChannelRole::Customer as i32, v1::ChannelRole::Agent as i32],
                admin_only: false,
            }),
        ),
    ]
}

/// The Tasks of the org whose external id is `<call_id>:<user_id>`.
pub fn tasks_for(emulator: &Emulator, call_id: &str, user_id: &str) -> Vec<serde_json::Value> {
    let key = format!("{call_id}:{user_id}");
    emulator.tasks().into_iter().filter(|t| t["Switchboard_Key__c"] == key.as_str()).collect()
}

/// Produces `events` in order, each keyed by its call id, as the gateway's
/// relay does; returns where each landed.
pub async fn produce_events(producer: &FutureProducer, topic: &str, events: &[CallEvent]) -> Vec<Placed> {
    let mut placed = Vec::with_capacity(events.len());
    for e in events {
        placed.push(produce(producer, topic, &e.call_id, &e.encode_to_vec()).await);
    }
    placed
}
