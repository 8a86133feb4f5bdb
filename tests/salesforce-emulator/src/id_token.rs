//! OpenID Connect ID tokens for grants with the `openid` scope, the key set
//! that verifies them (`GET /id/keys`) and the discovery document
//! (`GET /.well-known/openid-configuration`).
//!
//! An ID token is an RS256 JWT with Salesforce's claims: `iss` (the login
//! host, here the emulator's URL), `sub` (the identity URL), `aud` (the
//! consumer key), `iat`, `exp` (five minutes later), `at_hash` (the left
//! half of the access token's SHA-256, Base64url), `nonce` when the
//! authorization request had one, the profile claims (`name`,
//! `preferred_username`, `given_name`, `family_name`, `nickname`, `picture`,
//! `zoneinfo`) with the `profile` or `full` scope and `email`,
//! `email_verified` with `email` or `full`.
//!
//! The signing key is an RSA key made once per process, on first use, off
//! the async threads: making one takes a noticeable moment, and tests that
//! never ask for `openid` should not pay it.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::rand_core::OsRng;
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::identity::User;
use crate::state::Shared;
use crate::web_server::identity_url;

/// How long an ID token is valid.
const LIFETIME_SECS: i64 = 5 * 60;

/// The process's signing key and its public half as a JWK.
struct SigningKey {
    key: EncodingKey,
    jwk: Value,
    kid: String,
}

static KEY: OnceLock<Result<SigningKey, String>> = OnceLock::new();

fn make_key() -> Result<SigningKey, String> {
    let private = RsaPrivateKey::new(&mut OsRng, 2048).map_err(|e| e.to_string())?;
    let pem = private
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| e.to_string())?;
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
    let n = private.n().to_bytes_be();
    let e = private.e().to_bytes_be();
    let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(&n)[..6]);
    let jwk = json!({
        "kty": "RSA",
        "alg": "RS256",
        "use": "sig",
        "kid": kid,
        "n": URL_SAFE_NO_PAD.encode(&n),
        "e": URL_SAFE_NO_PAD.encode(&e),
    });
    Ok(SigningKey { key, jwk, kid })
}

/// The signing key, made on a blocking thread the first time.
async fn key() -> Result<&'static SigningKey, String> {
    if KEY.get().is_none() {
        // Several callers may race here; OnceLock keeps one key.
        let _ = tokio::task::spawn_blocking(|| KEY.get_or_init(make_key).is_ok()).await;
    }
    match KEY.get_or_init(make_key) {
        Ok(key) => Ok(key),
        Err(e) => Err(e.clone()),
    }
}

/// What an ID token says, gathered while the org is locked.
#[derive(Clone, Debug)]
pub(crate) struct IdTokenClaims {
    pub claims: Map<String, Value>,
    pub access_token: String,
}

/// The claims of an ID token for `user` and `scopes`; `None` without
/// `openid`.
pub(crate) fn claims(
    shared: &Shared,
    client_id: &str,
    user: &User,
    scopes: &[String],
    nonce: Option<&str>,
    access_token: &str,
) -> Option<IdTokenClaims> {
    let has = |scope: &str| scopes.iter().any(|s| s == scope || s == "full");
    if !scopes.iter().any(|s| s == "openid") {
        return None;
    }
    let now = Utc::now().timestamp();
    let mut claims = Map::new();
    let mut put = |name: &str, value: Value| {
        claims.insert(name.to_owned(), value);
    };
    put("iss", json!(shared.base_url));
    put("sub", json!(identity_url(shared, &user.id)));
    put("aud", json!(client_id));
    put("iat", json!(now));
    put("exp", json!(now + LIFETIME_SECS));
    if let Some(nonce) = nonce {
        put("nonce", json!(nonce));
    }
    if has("profile") {
        put("name", json!(user.name));
        put("preferred_username", json!(user.username));
        put("given_name", json!(user.first_name));
        put("family_name", json!(user.last_name));
        put("nickname", json!(user.nickname()));
        put(
            "picture",
            json!(format!("{}/profilephoto/005/F", shared.base_url)),
        );
        put("zoneinfo", json!("America/Los_Angeles"));
    }
    if has("email") {
        put("email", json!(user.email));
        put("email_verified", json!(true));
    }
    Some(IdTokenClaims {
        claims,
        access_token: access_token.to_owned(),
    })
}

/// Signs an ID token; `at_hash` binds it to the access token.
pub(crate) async fn sign(mut token: IdTokenClaims) -> Result<String, String> {
    let key = key().await?;
    let digest = Sha256::digest(token.access_token.as_bytes());
    token.claims.insert(
        "at_hash".to_owned(),
        json!(URL_SAFE_NO_PAD.encode(&digest[..16])),
    );
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, &token.claims, &key.key).map_err(|e| e.to_string())
}

/// `GET /id/keys`: the JSON Web Key Set of ID tokens.
pub(crate) async fn keys() -> Response {
    match key().await {
        Ok(key) => Json(json!({"keys": [key.jwk]})).into_response(),
        Err(e) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("no signing key: {e}"),
        )
            .into_response(),
    }
}

/// `GET /.well-known/openid-configuration`.
pub(crate) async fn discovery(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let base = &shared.base_url;
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/services/oauth2/authorize"),
        "token_endpoint": format!("{base}/services/oauth2/token"),
        "revocation_endpoint": format!("{base}/services/oauth2/revoke"),
        "userinfo_endpoint": format!("{base}/services/oauth2/userinfo"),
        "jwks_uri": format!("{base}/id/keys"),
        "scopes_supported": ["api", "id", "profile", "email", "address", "phone", "openid", "refresh_token", "offline_access", "web", "full"],
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256", "plain"],
        "grant_types_supported": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer"],
        "claims_supported": ["active", "address", "email", "email_verified", "family_name", "given_name", "is_app_installed", "language", "locale", "name", "nickname", "organization_id", "phone_number", "phone_number_verified", "photos", "picture", "preferred_username", "profile", "sub", "updated_at", "urls", "user_id", "user_type", "zoneinfo"],
    }))
}
