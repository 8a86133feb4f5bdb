//! OpenID Connect: ID tokens of `openid` grants, verified with the published
//! key set as a client verifies them, and the discovery document.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::web_server::{field, Flow};

/// The ID token's claims, after checking its signature with `/id/keys`,
/// its `iss`, `aud` and `exp`.
async fn verified_claims(flow: &Flow, id_token: &str) -> Value {
    let emulator = &flow.org.emulator;
    let keys: Value = flow
        .browser
        .get(format!("{}/id/keys", emulator.url()))
        .send()
        .await
        .expect("keys")
        .json()
        .await
        .expect("JWKS");
    let header = jsonwebtoken::decode_header(id_token).expect("JWT header");
    assert_eq!(header.alg, Algorithm::RS256);
    let kid = header.kid.expect("kid");
    let jwk = keys["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid.as_str()))
        .cloned()
        .expect("the key of the token is published");
    assert_eq!(jwk["kty"], "RSA");
    let key = DecodingKey::from_rsa_components(
        jwk["n"].as_str().expect("n"),
        jwk["e"].as_str().expect("e"),
    )
    .expect("RSA key");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[flow.key.as_str()]);
    validation.set_issuer(&[emulator.url()]);
    jsonwebtoken::decode::<Value>(id_token, &key, &validation)
        .expect("a valid ID token")
        .claims
}

fn at_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(&Sha256::digest(access_token.as_bytes())[..16])
}

#[tokio::test]
async fn openid_grants_carry_a_verifiable_id_token() {
    let flow = Flow::start().await;
    let code = flow
        .code_for(&[
            ("scope", "api openid profile email"),
            ("nonce", "n-0S6_WzA2Mj"),
        ])
        .await;
    let tokens = flow.exchange(&code, &[]).await;
    assert_eq!(tokens.status, StatusCode::OK, "{:?}", tokens.body);
    let claims = verified_claims(&flow, field(&tokens, "id_token")).await;
    assert_eq!(claims["sub"], field(&tokens, "id"));
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(claims["at_hash"], at_hash(field(&tokens, "access_token")));
    assert_eq!(claims["preferred_username"], crate::web_server::AGENT);
    assert_eq!(claims["email"], crate::web_server::AGENT);
    assert_eq!(claims["email_verified"], true);
    let lifetime = claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0);
    assert_eq!(lifetime, 300);

    // The gateway's scopes: no profile claims, and a refresh brings a new
    // ID token for the new access token, without nonce.
    let tokens = flow.exchange(&flow.code().await, &[]).await;
    let claims = verified_claims(&flow, field(&tokens, "id_token")).await;
    assert!(claims.get("email").is_none() && claims.get("nonce").is_none());
    let refreshed = flow.refresh(field(&tokens, "refresh_token"), &[]).await;
    let claims = verified_claims(&flow, field(&refreshed, "id_token")).await;
    assert_eq!(
        claims["at_hash"],
        at_hash(field(&refreshed, "access_token"))
    );
    assert_eq!(claims["sub"], field(&tokens, "id"));
}

#[tokio::test]
async fn grants_without_openid_have_no_id_token() {
    let flow = Flow::start().await;
    let tokens = flow
        .exchange(&flow.code_for(&[("scope", "api refresh_token")]).await, &[])
        .await;
    assert_eq!(tokens.status, StatusCode::OK, "{:?}", tokens.body);
    assert!(tokens.body.get("id_token").is_none());
    let refreshed = flow.refresh(field(&tokens, "refresh_token"), &[]).await;
    assert!(refreshed.body.get("id_token").is_none());
    // Nor does the JWT bearer flow.
    let jwt = flow
        .org
        .token_request(
            &crate::harness::credentials()
                .sign_assertion(&flow.org.claims())
                .expect("sign"),
        )
        .await;
    assert!(jwt.body.get("id_token").is_none());
}

#[tokio::test]
async fn the_discovery_document_names_the_endpoints() {
    let flow = Flow::start().await;
    let emulator = &flow.org.emulator;
    let document: Value = flow
        .browser
        .get(format!(
            "{}/.well-known/openid-configuration",
            emulator.url()
        ))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("JSON");
    assert_eq!(document["issuer"], emulator.url());
    assert_eq!(document["authorization_endpoint"], emulator.authorize_url());
    assert_eq!(document["token_endpoint"], emulator.token_url());
    assert_eq!(document["userinfo_endpoint"], emulator.userinfo_url());
    assert_eq!(document["jwks_uri"], format!("{}/id/keys", emulator.url()));
    assert!(document["code_challenge_methods_supported"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m == "S256")));
}
