//! `Idempotency-Key` on the agent API's POST and PUT requests: a request
//! repeated with the same key (a retry after a lost answer, a double
//! click) gets the first answer again instead of acting twice — pressing
//! the DTMF keys twice, or starting a second recording.
//!
//! Keys are per user and kept for 24 hours. The first request claims the
//! key (a row without an answer); its answer is stored when it succeeds or
//! fails for good (2xx and 4xx). A repeat that arrives while the first is
//! still running is answered 409 `request_in_progress`; a key reused for a
//! different request (method, path or body) 422 `idempotency_key_reused`;
//! a 5xx answer releases the key so the retry runs again. Stored in the
//! database, so every gateway of a deployment honours the same keys.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use switchboard_store::sqlx;
use switchboard_store::now_ms;

use super::AgentApi;
use crate::api::auth::Principal;
use crate::api::problem::Problem;

pub const HEADER: &str = "idempotency-key";
/// Answers longer than this are not kept (none of the API's are).
const MAX_STORED: usize = 256 * 1024;
/// How long a key is remembered.
pub const KEEP_MS: i64 = 86_400_000;

/// The middleware; runs after authentication.
pub async fn layer(State(api): State<AgentApi>, request: Request, next: Next) -> Response {
    if !matches!(*request.method(), Method::POST | Method::PUT) {
        return next.run(request).await;
    }
    let Some(key) = request.headers().get(HEADER) else {
        return next.run(request).await;
    };
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.is_ascii() => k.to_owned(),
        _ => return Problem::bad_request("invalid_idempotency_key", "Idempotency-Key is 1 to 255 printable ASCII characters (a UUID is a good choice)").into_response(),
    };
    let Some(me) = request.extensions().get::<Principal>().cloned() else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let bytes = match to_bytes(body, api.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the body is larger than http.max_body_bytes").into_response()
        }
    };
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(parts.uri.path().as_bytes());
    hasher.update([0]);
    hasher.update(&bytes);
    let fingerprint: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();

    let pool = api.db.pool();
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (user_id, idem_key, request_hash, status, body, created_at) VALUES ($1, $2, $3, 0, '', $4) \
         ON CONFLICT (user_id, idem_key) DO NOTHING",
    )
    .bind(&me.user_id)
    .bind(&key)
    .bind(&fingerprint)
    .bind(now_ms())
    .execute(pool)
    .await;
    match claimed {
        Ok(done) if done.rows_affected() == 1 => {}
        Ok(_) => return replay(&api, &me, &key, &fingerprint).await,
        Err(e) => return Problem::internal("checking the Idempotency-Key failed", &e).into_response(),
    }

    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    let status = response.status();
    if status.is_server_error() {
        let _ = sqlx::query("DELETE FROM idempotency_keys WHERE user_id = $1 AND idem_key = $2").bind(&me.user_id).bind(&key).execute(pool).await;
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = match to_bytes(body, MAX_STORED).await {
        Ok(b) => b,
        Err(e) => return Problem::internal("reading the answer failed", &e).into_response(),
    };
    let content_type = parts.headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let stored = serde_json::json!({"content_type": content_type, "body": String::from_utf8_lossy(&body)}).to_string();
    if let Err(e) = sqlx::query("UPDATE idempotency_keys SET status = $1, body = $2 WHERE user_id = $3 AND idem_key = $4")
        .bind(status.as_u16() as i64)
        .bind(stored)
        .bind(&me.user_id)
        .bind(&key)
        .execute(pool)
        .await
    {
        tracing::warn!(error = %e, "the answer to an idempotent request could not be stored; a retry would run again");
    }
    Response::from_parts(parts, Body::from(body))
}

async fn replay(api: &AgentApi, me: &Principal, key: &str, fingerprint: &str) -> Response {
    let row: Result<Option<(String, i64, String)>, _> =
        sqlx::query_as("SELECT request_hash, status, body FROM idempotency_keys WHERE user_id = $1 AND idem_key = $2")
            .bind(&me.user_id)
            .bind(key)
            .fetch_optional(api.db.pool())
            .await;
    let (hash, status, stored) = match row {
        Ok(Some(r)) => r,
        // Released (5xx) between our insert and this read: ask for a retry.
        Ok(None) => return Problem::conflict("request_in_progress", "a request with this Idempotency-Key just failed; retry it").with_retry_after(1).into_response(),
        Err(e) => return Problem::internal("checking the Idempotency-Key failed", &e).into_response(),
    };
    if hash != fingerprint {
        return Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request; use a new key for each new request",
        )
        .into_response();
    }
    if status == 0 {
        return Problem::conflict("request_in_progress", "the first request with this Idempotency-Key is still running; retry shortly")
            .with_retry_after(1)
            .into_response();
    }
    metrics::counter!("switchboard_api_idempotent_replays_total").increment(1);
    let stored: serde_json::Value = serde_json::from_str(&stored).unwrap_or_default();
    let body = stored["body"].as_str().unwrap_or_default().to_owned();
    let mut response = (StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK), body).into_response();
    if let Some(ct) = stored["content_type"].as_str().filter(|c| !c.is_empty()).and_then(|c| HeaderValue::from_str(c).ok()) {
        response.headers_mut().insert(axum::http::header::CONTENT_TYPE, ct);
    }
    response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}
