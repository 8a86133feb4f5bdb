//! What the connector refuses at start, with errors that name the cause,
//! and what it must not refuse: an org that is down or slow.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use salesforce_emulator::{CustomField, CustomFieldType, Fault};
use switchboard_connector::salesforce::{JwtSigner, SalesforceError};
use switchboard_connector::{Connector, ConnectorConfig, ConnectorError};
use switchboard_store::Database;
use tokio_util::sync::CancellationToken;

fn openssl(args: &[&str]) {
    let output = Command::new("openssl").args(args).output().expect("openssl CLI");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn private_keys_in_both_pem_encodings_load_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (pkcs8, _) = openssl_credentials(dir.path());
    let pkcs8_text = std::fs::read_to_string(&pkcs8).unwrap();
    assert!(pkcs8_text.starts_with("-----BEGIN PRIVATE KEY-----"), "{pkcs8_text}");
    JwtSigner::from_key_file(&pkcs8, "key", "user@example.com", "https://login.salesforce.com").expect("PKCS#8 key");

    let pkcs1 = dir.path().join("pkcs1.pem");
    openssl(&["rsa", "-traditional", "-in", pkcs8.to_str().unwrap(), "-out", pkcs1.to_str().unwrap()]);
    assert!(std::fs::read_to_string(&pkcs1).unwrap().starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let signer = JwtSigner::from_key_file(&pkcs1, "key", "user@example.com", "https://login.salesforce.com").expect("PKCS#1 key");
    let assertion = signer.assertion().unwrap();
    assert_eq!(assertion.split('.').count(), 3, "a compact JWS");

    let ec = dir.path().join("ec.pem");
    openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", ec.to_str().unwrap()]);
    let err = JwtSigner::from_key_file(&ec, "key", "u", "https://login.salesforce.com").unwrap_err();
    assert!(matches!(err, SalesforceError::Key { .. }), "{err}");
    assert!(err.to_string().contains("ec.pem"), "{err}");

    let missing = dir.path().join("missing.pem");
    let err = JwtSigner::from_key_file(&missing, "key", "u", "https://login.salesforce.com").unwrap_err();
    assert!(matches!(err, SalesforceError::KeyFile { .. }), "{err}");
    assert!(err.to_string().contains("missing.pem"), "{err}");
}

#[tokio::test]
async fn start_refuses_bad_configuration_missing_keys_and_old_schemas() {
    let world = World::new().await;

    let mut config = world.outbox_config();
    config.salesforce.as_mut().unwrap().api_version = "62".into();
    let err = Connector::start(config, world.db.clone(), CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Config(ref e) if e.key == "salesforce.api_version"), "{err}");

    let mut config = world.outbox_config();
    config.salesforce.as_mut().unwrap().private_key_file = world.dir.path().join("nope.pem");
    let err = Connector::start(config, world.db.clone(), CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Salesforce(SalesforceError::KeyFile { .. })), "{err}");
    assert!(err.to_string().contains("nope.pem"), "{err}");

    let fresh = Database::connect(&format!("sqlite://{}", world.dir.path().join("fresh.db").display()))
        .await
        .unwrap();
    let err = Connector::start(world.outbox_config(), fresh, CancellationToken::new()).await.unwrap_err();
    assert!(err.to_string().contains("switchboard migrate"), "{err}");

    let config = ConnectorConfig { poll_interval_ms: 0, ..world.outbox_config() };
    let err = Connector::start(config, world.db.clone(), CancellationToken::new()).await.unwrap_err();
    assert!(err.to_string().contains("poll_interval_ms"), "{err}");
}

/// Starts a connector on `world`'s org and returns the preflight's message.
async fn preflight_failure(world: &World) -> String {
    let err = Connector::start(world.outbox_config(), world.db.clone(), CancellationToken::new()).await.unwrap_err();
    let ConnectorError::Preflight(message) = &err else { panic!("not a preflight failure: {err}") };
    let shown = err.to_string();
    assert!(shown.contains(message.as_str()), "{shown}");
    assert!(shown.contains("sf project deploy start --source-dir deploy/salesforce"), "{shown}");
    assert!(shown.contains("sf org assign permset --name Switchboard_Integration"), "{shown}");
    assert!(world.emulator.tasks().is_empty());
    shown
}

#[tokio::test]
async fn start_fails_when_the_task_external_id_field_is_missing() {
    let world = World::with(|org| org.task_external_id_fields = vec![]).await;
    let message = preflight_failure(&world).await;
    assert!(
        message.contains("Task.Switchboard_Key__c (salesforce.task_external_id_field) does not exist"),
        "{message}"
    );
    assert!(message.contains("or set salesforce.task_external_id_field"), "{message}");
    assert!(!message.contains("  - Case."), "the Case is fine: {message}");
}

#[tokio::test]
async fn start_fails_when_the_task_external_id_field_is_no_external_id() {
    let world = World::with(|org| {
        org.task_external_id_fields = vec![];
        org.custom_fields.push(CustomField {
            sobject: "Task".into(),
            name: "Switchboard_Key__c".into(),
            field_type: CustomFieldType::Text { length: 100 },
            external_id: false,
        });
    })
    .await;
    let message = preflight_failure(&world).await;
    assert!(message.contains("Task.Switchboard_Key__c (salesforce.task_external_id_field) is not marked External ID"), "{message}");
}

#[tokio::test]
async fn start_fails_naming_every_field_the_integration_user_cannot_write() {
    let world = World::with(|org| {
        org.read_only_fields = vec!["Task.CallType".into(), "Case.Origin".into(), "Case.Switchboard_Assignment_Id__c".into()];
    })
    .await;
    let message = preflight_failure(&world).await;
    for field in ["Task.CallType", "Case.Origin", "Case.Switchboard_Assignment_Id__c"] {
        assert!(message.contains(&format!("{field} is written by the connector but the integration user cannot set it on create")), "{field}: {message}");
    }
    assert!(message.contains("Task.CallType is written by the connector but the integration user cannot edit it"), "{message}");
    assert!(!message.contains("or set salesforce."), "the external ids are fine: {message}");
}

#[tokio::test]
async fn an_unavailable_org_does_not_stop_the_start_and_tasks_follow() {
    let world = World::new().await;
    world.emulator.inject_fault(Fault::ServerUnavailable { times: 3 });
    let call = "0193f0a2-eeee-7000-8000-000000000001";
    let last = world.write_outbox(&call_events(call, "u-ann", &world.agent_sf_id)).await;
    let mut running = Running::start(world.outbox_config(), &world.db).await;
    running.until_outbox_position(last).await;
    running.stop().await;
    assert_eq!(tasks_for(&world.emulator, call, "u-ann").len(), 1);
    assert!(world.dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_slow_org_delays_the_start_by_the_preflight_timeout_at_most() {
    let world = World::new().await;
    world.emulator.inject_fault(Fault::Delay { millis: 60_000, times: 1 });
    let mut config = world.outbox_config();
    config.salesforce.as_mut().unwrap().request_timeout_secs = 120;
    let started = Instant::now();
    let mut running = Running::start(config, &world.db).await;
    let took = started.elapsed();
    assert!(took < switchboard_connector::preflight::TIMEOUT + Duration::from_secs(3), "started in {took:?}");

    let call = "0193f0a2-eeee-7000-8000-000000000002";
    let last = world.write_outbox(&call_events(call, "u-ann", &world.agent_sf_id)).await;
    running.until_outbox_position(last).await;
    running.stop().await;
    assert_eq!(tasks_for(&world.emulator, call, "u-ann").len(), 1);
}
