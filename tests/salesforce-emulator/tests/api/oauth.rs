//! The JWT bearer token endpoint.

use std::process::Command;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use salesforce_emulator::{
    sign_assertion, AssertionClaims, Emulator, EmulatorConfig, TestCredentials, UserSeed,
};

use crate::harness::{answer, credentials, Org};

fn assert_oauth_error(answer: &crate::harness::Answer, error: &str, description: &str) {
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{:?}", answer.body);
    assert_eq!(answer.body["error"], error, "{:?}", answer.body);
    assert_eq!(
        answer.body["error_description"], description,
        "{:?}",
        answer.body
    );
}

#[tokio::test]
async fn a_valid_assertion_gets_a_bearer_token_without_refresh_token() {
    let org = Org::start().await;
    let assertion = credentials().sign_assertion(&org.claims()).expect("sign");
    let answer = org.token_request(&assertion).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let body = &answer.body;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["instance_url"], org.emulator.url());
    assert_eq!(body["scope"], "api");
    assert!(body.get("refresh_token").is_none());
    let org_id = org.emulator.org_id();
    assert!(org_id.starts_with("00D") && org_id.len() == 18);
    assert_eq!(
        body["id"],
        format!(
            "{}/id/{org_id}/{}",
            org.emulator.url(),
            org.emulator.user_id()
        )
    );
    let token = body["access_token"].as_str().expect("token");
    assert!(token.starts_with(&format!("{}!", &org_id[..15])));
    assert!(body["issued_at"]
        .as_str()
        .is_some_and(|t| t.parse::<i64>().is_ok()));
    assert_eq!(org.emulator.token_calls(), 1);
    let call = org.call(Method::GET, "v62.0/limits", token, None).await;
    assert_eq!(call.status, StatusCode::OK);
}

#[tokio::test]
async fn salesforce_login_hosts_are_accepted_audiences() {
    let org = Org::start().await;
    let mut claims = org.claims();
    claims.aud = "https://login.salesforce.com".to_owned();
    let answer = org
        .token_request(&credentials().sign_assertion(&claims).expect("sign"))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert!(answer.body["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("https://login.salesforce.com/id/")));
    claims.aud = "https://test.salesforce.com".to_owned();
    let answer = org
        .token_request(&credentials().sign_assertion(&claims).expect("sign"))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
}

#[tokio::test]
async fn a_signature_by_another_key_is_an_invalid_assertion() {
    let org = Org::start().await;
    let stranger = TestCredentials::generate().expect("other key");
    let answer = org
        .token_request(&stranger.sign_assertion(&org.claims()).expect("sign"))
        .await;
    assert_oauth_error(&answer, "invalid_grant", "invalid assertion");
    let answer = org.token_request("not-a-jwt").await;
    assert_oauth_error(&answer, "invalid_grant", "invalid assertion");
}

#[tokio::test]
async fn claims_are_checked_with_salesforce_errors() {
    let org = Org::start().await;
    let sign = |claims: &AssertionClaims| credentials().sign_assertion(claims).expect("sign");

    let mut claims = org.claims();
    claims.iss = "someone-else".to_owned();
    assert_oauth_error(
        &org.token_request(&sign(&claims)).await,
        "invalid_client_id",
        "client identifier invalid",
    );

    let mut claims = org.claims();
    claims.sub = "nobody@example.com".to_owned();
    assert_oauth_error(
        &org.token_request(&sign(&claims)).await,
        "invalid_grant",
        "user hasn't approved this consumer",
    );

    let mut claims = org.claims();
    claims.aud = "https://evil.example.com".to_owned();
    assert_oauth_error(
        &org.token_request(&sign(&claims)).await,
        "invalid_grant",
        "audience is invalid",
    );

    let mut claims = org.claims();
    claims.exp -= 600;
    assert_oauth_error(
        &org.token_request(&sign(&claims)).await,
        "invalid_grant",
        "expired authorization code",
    );

    let mut claims = org.claims();
    claims.exp += 3600;
    assert_oauth_error(
        &org.token_request(&sign(&claims)).await,
        "invalid_grant",
        "invalid assertion",
    );

    assert_eq!(org.emulator.token_calls(), 5);
    assert_eq!(org.emulator.stats().active_sessions, 0);
}

#[tokio::test]
async fn other_grant_types_are_unsupported() {
    let org = Org::start().await;
    let response = org
        .client
        .post(org.emulator.token_url())
        .form(&[
            ("grant_type", "password"),
            ("username", "u"),
            ("password", "p"),
        ])
        .send()
        .await
        .expect("request");
    let answer = answer(response).await;
    assert_oauth_error(
        &answer,
        "unsupported_grant_type",
        "grant type not supported",
    );
}

#[tokio::test]
async fn configured_users_can_sign_in() {
    let agent_id = "0055g00000AgentX";
    let org = Org::start_with(|c| {
        c.extra_users.push(UserSeed {
            username: "agent@example.com".to_owned(),
            id: Some(agent_id[..15].to_owned()),
        })
    })
    .await;
    let mut claims = org.claims();
    claims.sub = "AGENT@example.com".to_owned();
    let answer = org
        .token_request(&credentials().sign_assertion(&claims).expect("sign"))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert!(answer.body["id"]
        .as_str()
        .is_some_and(|id| id.contains(&agent_id[..15])));
}

#[tokio::test]
async fn revoked_tokens_stop_working() {
    let org = Org::start().await;
    let token = org.token().await;
    let response = org
        .client
        .post(format!("{}/services/oauth2/revoke", org.emulator.url()))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .expect("revoke");
    assert_eq!(response.status(), StatusCode::OK);
    let call = org.call(Method::GET, "v62.0/limits", &token, None).await;
    assert_eq!(call.status, StatusCode::UNAUTHORIZED);
}

/// Keys made by the `openssl` command line, as operators make them (PKCS#8
/// private key, self-signed certificate), work too.
#[tokio::test]
async fn an_openssl_made_key_pair_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("k.pem");
    let cert = dir.path().join("c.pem");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-days",
            "1",
            "-subj",
            "/CN=emulator-test",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("running openssl (Debian package openssl)");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let certificate_pem = std::fs::read_to_string(&cert).expect("cert");
    let private_key_pem = std::fs::read_to_string(&key).expect("key");
    let config = EmulatorConfig::new(certificate_pem);
    let username = config.username.clone();
    let emulator = Emulator::start(config, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("start");
    let claims = AssertionClaims::new(
        emulator.consumer_key(),
        username,
        emulator.url(),
        Duration::from_secs(60),
    );
    let assertion = sign_assertion(&private_key_pem, &claims).expect("sign");
    let response = reqwest::Client::new()
        .post(emulator.token_url())
        .form(&[
            ("grant_type", salesforce_emulator::JWT_BEARER_GRANT),
            ("assertion", assertion.as_str()),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(response.status(), StatusCode::OK);
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_certificate_without_rsa_key_or_garbage_is_refused_at_start() {
    let config = EmulatorConfig::new("not a certificate");
    let err = Emulator::start(config, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect_err("must fail");
    assert!(err.to_string().contains("certificate"), "{err}");
    let mut config = EmulatorConfig::new(credentials().certificate_pem.clone());
    config.user_id = "001000000000001".to_owned();
    let err = Emulator::start(config, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect_err("must fail");
    assert!(err.to_string().contains("005"), "{err}");
}
