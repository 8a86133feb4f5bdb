//! What the connector refuses at start, with errors that name the cause.

mod common;

use std::process::Command;

use common::*;
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
