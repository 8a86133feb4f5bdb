//! The OAuth 2.0 token endpoint, `POST /services/oauth2/token`, and token
//! revocation, `POST /services/oauth2/revoke`.
//!
//! Four grants are served: the JWT bearer flow Switchboard's connector uses
//! by default (below), the client credentials flow it can use instead
//! ([`crate::client_credentials`]), and the web-server flow's
//! `authorization_code` and `refresh_token` grants ([`crate::web_server`]).
//!
//! A JWT assertion is checked as Salesforce checks it: the `iss` must be the
//! connected app's consumer key (else `invalid_client_id`), the RS256
//! signature must verify with the app's certificate, `aud` must be a login
//! host, `sub` a user of the org and `exp` a time in the next three minutes
//! (else `invalid_grant` with Salesforce's description). The answer carries no
//! refresh token: the client signs a new assertion when the session ends.
//!
//! Revoking an access token ends that session; revoking a refresh token ends
//! it and every access token issued under it, as Salesforce documents.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use jsonwebtoken::{Algorithm, Validation};
use rand::distr::{Alphanumeric, SampleString};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::client_credentials::{self, CLIENT_CREDENTIALS_GRANT};
use crate::id_token;
use crate::state::{Inner, Session, Shared};
use crate::web_server::{self, Issued};

/// The grant type of the JWT bearer flow.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Audiences Salesforce accepts besides the org's own URL.
const LOGIN_HOSTS: &[&str] = &[
    "https://login.salesforce.com",
    "https://test.salesforce.com",
];

/// How far ahead `exp` may lie: Salesforce's three minutes plus clock skew.
const MAX_EXP_AHEAD: Duration = Duration::from_secs(180 + 30);

/// An OAuth error answer of the token and revocation endpoints: a status
/// and `{"error","error_description"}`.
#[derive(Debug)]
pub(crate) struct OAuthError {
    pub status: StatusCode,
    pub error: String,
    pub description: String,
}

impl OAuthError {
    /// A 400 answer.
    pub(crate) fn new(error: &str, description: &str) -> OAuthError {
        OAuthError {
            status: StatusCode::BAD_REQUEST,
            error: error.to_owned(),
            description: description.to_owned(),
        }
    }

    /// A 400 `invalid_grant` answer.
    pub(crate) fn grant(description: &str) -> OAuthError {
        OAuthError::new("invalid_grant", description)
    }

    /// 400 `invalid_client_id`: no connected app has the consumer key.
    pub(crate) fn client_id() -> OAuthError {
        OAuthError::new("invalid_client_id", "client identifier invalid")
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": self.error, "error_description": self.description}));
        (self.status, [(header::CACHE_CONTROL, "no-store")], body).into_response()
    }
}

/// The claims Salesforce reads from an assertion; all optional so that a
/// missing one gets Salesforce's error rather than a parse failure.
#[derive(Debug, Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Value>,
    exp: Option<Value>,
}

/// Reads form parameters from the query string and the body, as Salesforce
/// accepts both. Bytes that are not UTF-8 are replaced, never refused: a
/// mangled value then fails the check it is for.
pub(crate) fn parameters(uri: &Uri, body: &[u8]) -> HashMap<String, String> {
    let mut params: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    params.extend(url::form_urlencoded::parse(body).into_owned());
    params
}

/// `POST /services/oauth2/token`.
pub(crate) async fn token(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let failure = {
        let mut inner = shared.lock();
        inner.token_calls += 1;
        inner.faults.take_token_failure()
    };
    if let Some(f) = failure {
        return OAuthError {
            status: f.status,
            error: f.error,
            description: f.description,
        }
        .into_response();
    }
    let params = parameters(&uri, &body);
    let issued = match params.get("grant_type").map(String::as_str) {
        Some(JWT_BEARER_GRANT) => jwt_bearer(&shared, params.get("assertion").map(String::as_str))
            .map(|body| Issued {
                body,
                id_token: None,
            }),
        Some("authorization_code") => web_server::authorization_code(&shared, &params),
        Some("refresh_token") => web_server::refresh_token(&shared, &params),
        Some(CLIENT_CREDENTIALS_GRANT) => {
            client_credentials::client_credentials(&shared, &headers, &params)
        }
        _ => Err(OAuthError::new(
            "unsupported_grant_type",
            "grant type not supported",
        )),
    };
    let mut answer = match issued {
        Ok(issued) => issued,
        Err(e) => return e.into_response(),
    };
    if let Some(claims) = answer.id_token.take() {
        match id_token::sign(claims).await {
            Ok(token) => {
                if let Some(map) = answer.body.as_object_mut() {
                    map.insert("id_token".to_owned(), Value::String(token));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "signing an ID token failed");
                return OAuthError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    error: "server_error".to_owned(),
                    description: "the ID token could not be signed".to_owned(),
                }
                .into_response();
            }
        }
    }
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Json(answer.body),
    )
        .into_response()
}

/// Issues an access token for `user_id` and records its session.
pub(crate) fn issue_access_token(
    shared: &Shared,
    inner: &mut Inner,
    user_id: &str,
    scopes: &[String],
    grant: Option<u64>,
) -> String {
    let org15 = shared.org_id.get(..15).unwrap_or(&shared.org_id);
    let access_token = format!(
        "{org15}!AQ{}",
        Alphanumeric.sample_string(&mut rand::rng(), 96)
    );
    inner.sessions.insert(
        access_token.clone(),
        Session {
            user_id: user_id.to_owned(),
            expires_at: Instant::now() + shared.token_ttl,
            scopes: scopes.to_vec(),
            grant,
        },
    );
    access_token
}

fn jwt_bearer(shared: &Shared, assertion: Option<&str>) -> Result<Value, OAuthError> {
    let assertion = assertion
        .filter(|a| !a.is_empty())
        .ok_or_else(|| OAuthError::grant("invalid assertion"))?;
    let claims: Claims = jsonwebtoken::dangerous::insecure_decode::<Claims>(assertion)
        .map_err(|_| OAuthError::grant("invalid assertion"))?
        .claims;
    if claims.iss.as_deref() != Some(shared.consumer_key.as_str()) {
        return Err(OAuthError::client_id());
    }
    let mut validation = Validation::new(Algorithm::RS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(assertion, &shared.verifying_key, &validation)
        .map_err(|_| OAuthError::grant("invalid assertion"))?;

    let login_host = audience(shared, claims.aud.as_ref())
        .ok_or_else(|| OAuthError::grant("audience is invalid"))?;

    let exp = claims
        .exp
        .as_ref()
        .and_then(Value::as_i64)
        .ok_or_else(|| OAuthError::grant("invalid assertion"))?;
    let now = Utc::now().timestamp();
    if exp <= now {
        return Err(OAuthError::grant("expired authorization code"));
    }
    if exp - now > MAX_EXP_AHEAD.as_secs() as i64 {
        // Salesforce documents exp as lying within three minutes; a later one
        // is refused like any other unacceptable assertion.
        return Err(OAuthError::grant("invalid assertion"));
    }

    let username = claims.sub.unwrap_or_default();
    let mut inner = shared.lock();
    let user = inner
        .store
        .user_by_username(&username)
        .map(|u| (u.id().to_owned(), u.is_active_user()));
    let user_id = match user {
        Some((id, true)) => id,
        Some((_, false)) => return Err(OAuthError::grant("user is inactive")),
        None => return Err(OAuthError::grant("user hasn't approved this consumer")),
    };
    let access_token = issue_access_token(shared, &mut inner, &user_id, &["api".to_owned()], None);
    Ok(json!({
        "access_token": access_token,
        "scope": "api",
        "instance_url": shared.base_url,
        "id": format!("{login_host}/id/{}/{user_id}", shared.org_id),
        "token_type": "Bearer",
        "issued_at": Utc::now().timestamp_millis().to_string(),
    }))
}

/// The login host an `aud` claim names, if Salesforce would accept it. The
/// claim may be a string or an array of strings.
fn audience(shared: &Shared, aud: Option<&Value>) -> Option<String> {
    let candidates: Vec<&str> = match aud? {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => return None,
    };
    candidates.into_iter().find_map(|c| {
        let c = c.trim_end_matches('/');
        if c == shared.base_url.trim_end_matches('/') || LOGIN_HOSTS.contains(&c) {
            Some(c.to_owned())
        } else {
            None
        }
    })
}

/// `POST /services/oauth2/revoke` (Salesforce also serves `GET`): ends an
/// access token's session, or a refresh token's grant with every access
/// token issued under it.
pub(crate) async fn revoke(State(shared): State<Arc<Shared>>, uri: Uri, body: Bytes) -> Response {
    let params = parameters(&uri, &body);
    let token = params.get("token").cloned().unwrap_or_default();
    let mut inner = shared.lock();
    let removed = if inner.sessions.remove(&token).is_some() {
        true
    } else if let Some(grant) = inner.refresh_tokens.remove(&token) {
        inner.sessions.retain(|_, s| s.grant != Some(grant.grant));
        true
    } else {
        false
    };
    drop(inner);
    if removed {
        StatusCode::OK.into_response()
    } else {
        OAuthError::new("unsupported_token_type", "this token type is not supported")
            .into_response()
    }
}
