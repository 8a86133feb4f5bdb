//! The connector's logins through the Salesforce emulator: the OAuth 2.0
//! client credentials flow next to the default JWT bearer flow, what a
//! refused login does to the events, and that neither the consumer secret
//! nor the private key ever shows in a log or a `Debug` output.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use common::*;
use switchboard_connector::salesforce::{Credentials, SalesforceClient, SalesforceError};
use switchboard_connector::source::outbox::CURSOR;
use switchboard_connector::{Connector, ConnectorConfig, ConnectorError, SalesforceAuth, SourceConfig};
use tokio_util::sync::CancellationToken;

/// The Run As user of the connected app in these tests.
const RUN_AS: &str = "switchboard-api@switchboard.test";

/// Everything the processes of this test binary logged, as text.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    /// Installs the capturing subscriber once per test binary.
    fn capture() -> &'static Log {
        static LOG: OnceLock<Log> = OnceLock::new();
        LOG.get_or_init(|| {
            let log = Log::default();
            let writer = log.clone();
            let _ = tracing_subscriber::fmt()
                .with_env_filter("debug")
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .try_init();
            log
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

fn outbox(salesforce: switchboard_connector::SalesforceConfig) -> ConnectorConfig {
    ConnectorConfig { salesforce: Some(salesforce), source: SourceConfig::Outbox, poll_interval_ms: 10 }
}

#[tokio::test]
async fn a_call_becomes_a_task_written_as_the_run_as_user() {
    let world = World::new().await;
    let run_as_id = world.emulator.add_user(RUN_AS).expect("Run As user");
    world.enable_client_credentials(RUN_AS);
    let config = outbox(world.client_credentials(&world.emulator.consumer_secret()));
    assert_eq!(config.salesforce.as_ref().map(|sf| sf.auth), Some(SalesforceAuth::ClientCredentials));

    let call = "0193f0a2-cc00-7000-8000-000000000001";
    let last = world.write_outbox(&call_events(call, "u-ann", &world.agent_sf_id)).await;
    let mut running = Running::start(config, &world.db).await;
    let progress = running.until_outbox_position(last).await;
    running.stop().await;

    assert_eq!(progress.records, 5);
    let tasks = tasks_for(&world.emulator, call, "u-ann");
    assert_eq!(tasks.len(), 1, "{tasks:#?}");
    let task = &tasks[0];
    assert_eq!(task["Subject"], "Inbound call from +14155550100");
    assert_eq!(task["OwnerId"], world.agent_sf_id.as_str(), "owned by the agent");
    assert_eq!(task["CreatedById"], run_as_id.as_str(), "written by the Run As user");
    assert!(task["Description"].as_str().is_some_and(|d| d.contains("recordings/")), "{task}");
    assert_eq!(world.emulator.token_calls(), 1, "one login for the preflight and both writes");
    assert!(world.dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_wrong_secret_leaves_the_call_pending_until_the_secret_is_fixed() {
    let log = Log::capture();
    let world = World::new().await;
    world.emulator.add_user(RUN_AS).expect("Run As user");
    world.enable_client_credentials(RUN_AS);
    let secret = world.emulator.consumer_secret();
    let wrong = "0000000000000000000000000000000000000000000000000000000000000000";
    assert_ne!(secret, wrong);

    let call = "0193f0a2-cc00-7000-8000-000000000002";
    let events = call_events(call, "u-ann", &world.agent_sf_id);
    // The Task is first written for call.ended (the 4th event).
    let before_ended = world.write_outbox(&events[..3]).await;
    let ended = world.write_outbox(&events[3..4]).await;
    let last = world.write_outbox(&events[4..]).await;

    // The refused login does not stop the start (the preflight is skipped);
    // the batch holding call.ended waits, uncommitted.
    let running = Running::start(outbox(world.client_credentials(wrong)), &world.db).await;

    // A refused login waits the long delay (limit_backoff_secs, here 1 s,
    // with jitter: at least half) before the next, not the 10 ms of a
    // transient failure. Logins: the preflight's, then one per attempt.
    eventually("the first write's refused login", || world.emulator.token_calls() >= 2).await;
    let first_refusal = Instant::now();
    eventually("a second write attempt's refused login", || world.emulator.token_calls() >= 3).await;
    let waited = first_refusal.elapsed();
    assert!(waited.as_millis() >= 450, "retried after {waited:?}");

    let progress = running.progress.borrow().clone();
    assert!(progress.outbox_position.is_some_and(|p| p < ended), "{progress:?}");
    assert_eq!(progress.records, 0, "{progress:?}");
    assert_eq!(progress.dead_letters, 0);
    assert!(world.emulator.tasks().is_empty());
    let text = log.text();
    assert!(
        text.contains(
            "Salesforce refused the login of the Run As user of connected app 3MVG9switchboard.emulator.consumer.key \
             (400 invalid_client: invalid client credentials)"
        ),
        "{text}"
    );
    assert!(text.contains("Salesforce cannot take writes now; waiting"), "{text}");
    assert!(text.contains("error_code=invalid_client"), "{text}");
    assert!(!text.contains(wrong) && !text.contains(&secret), "a secret was logged:\n{text}");
    running.stop().await;

    let committed = world.scalar_i64(&format!("SELECT COALESCE(MAX(position), 0) FROM connector_cursors WHERE name = '{CURSOR}'")).await;
    assert!(committed < ended, "call.ended stays uncommitted (cursor {committed}, after the events before it: {before_ended})");
    assert!(world.dead_letters().await.is_empty());

    // With the right secret the waiting call is written.
    let mut running = Running::start(outbox(world.client_credentials(&secret)), &world.db).await;
    running.until_outbox_position(last).await;
    running.stop().await;
    assert_eq!(tasks_for(&world.emulator, call, "u-ann").len(), 1);
    assert!(world.dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_missing_run_as_user_is_a_refused_login_too() {
    let world = World::new().await;
    // The flow is enabled, but no Run As user is set.
    let mut app = world.emulator.connected_app(&world.emulator.consumer_key()).expect("app");
    app.client_credentials_enabled = true;
    world.emulator.register_connected_app(app).expect("app");
    let client = SalesforceClient::new(world.client_credentials(&world.emulator.consumer_secret())).expect("client");
    let err = client.login().await.expect_err("no Run As user");
    let SalesforceError::Login { auth, status, ref error, ref description, .. } = err else { panic!("not a login error: {err}") };
    assert_eq!((auth, status), (SalesforceAuth::ClientCredentials, 400));
    assert_eq!((error.as_str(), description.as_str()), ("invalid_grant", "no client credentials user enabled"));
    assert_eq!(err.class(), switchboard_connector::salesforce::ErrorClass::Limit);
}

#[tokio::test]
async fn start_refuses_a_missing_or_empty_secret_file_naming_it() {
    let world = World::new().await;
    world.enable_client_credentials(&world.username);

    let mut sf = world.client_credentials("unused");
    sf.client_secret_file = Some(world.dir.path().join("no-such-secret"));
    let err = Connector::start(outbox(sf), world.db.clone(), CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Salesforce(SalesforceError::ClientSecret { .. })), "{err}");
    assert!(err.to_string().contains("no-such-secret"), "{err}");

    let sf = world.client_credentials("   ");
    let err = Connector::start(outbox(sf), world.db.clone(), CancellationToken::new()).await.unwrap_err();
    assert!(err.to_string().contains("consumer-secret: the file is empty"), "{err}");

    let mut sf = world.client_credentials("unused");
    sf.client_secret_file = None;
    let err = Connector::start(outbox(sf), world.db.clone(), CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Config(ref e) if e.key == "salesforce.client_secret_file"), "{err}");
    assert_eq!(world.emulator.token_calls(), 0);
}

#[tokio::test]
async fn neither_the_secret_nor_the_private_key_shows_in_debug_output() {
    let world = World::new().await;
    let secret = world.emulator.consumer_secret();
    let client = SalesforceClient::new(world.client_credentials(&secret)).expect("client");
    let credentials = Credentials::from_config(client.config()).expect("credentials");
    let mut inline = world.client_credentials("unused");
    inline.client_secret_file = None;
    inline.client_secret = Some(switchboard_connector::Secret::new(secret.clone()));
    let inline_client = SalesforceClient::new(inline.clone()).expect("client with the secret inline");
    for shown in [
        format!("{client:?}"),
        format!("{client:#?}"),
        format!("{credentials:?}"),
        format!("{inline:?}"),
        format!("{inline_client:?}"),
    ] {
        assert!(!shown.contains(&secret), "the secret shows: {shown}");
    }
    assert!(format!("{inline:?}").contains("<redacted>"));

    let jwt = SalesforceClient::new(world.salesforce()).expect("JWT client");
    let pem = std::fs::read_to_string(&world.key_file).expect("key");
    let key_line = pem.lines().nth(1).expect("a base64 line of the key");
    let shown = format!("{jwt:#?}");
    assert!(!shown.contains(key_line), "the private key shows: {shown}");
    assert!(shown.contains("JwtSigner"), "{shown}");
}
