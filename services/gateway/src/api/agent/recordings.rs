//! The agent's recordings and voicemails (F6, F9) with playback links.
//!
//! An agent lists the recordings of the calls it answered and the
//! voicemails left for it; admin-only recordings (F7) are listed for
//! admins only. Each item carries a short-lived playback link the browser
//! can put straight into an `<audio>` element: an S3 presigned URL when the
//! store is S3, else the gateway's own `/v1/recordings/{id}/audio?token=…`
//! whose token is sealed with the gateway's key and names the recording
//! and its expiry — so the link works without a session header and
//! expires on its own.

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::{Deserialize, Serialize};
use switchboard_store::sqlx::{self, Row};
use switchboard_store::now_ms;
use utoipa::{IntoParams, ToSchema};

use super::AgentApi;
use crate::api::auth::Principal;
use crate::api::problem::{Json, Path, Problem, Query};

/// How long a playback link works.
const LINK_TTL: Duration = Duration::from_secs(300);
const LINK_PURPOSE: &str = "recording-link";

/// A recording or voicemail of the agent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RecordingItem {
    pub id: String,
    pub call_id: String,
    pub kind: RecordingKind,
    /// `wav/pcm_s16le`, `ogg/opus` or `mp3`.
    pub format: String,
    pub content_type: String,
    pub duration_ms: i64,
    pub size_bytes: i64,
    /// Recorded by an administrator's policy; only admins see these.
    pub admin_only: bool,
    pub created_at_ms: i64,
    /// Plays the recording until `playback_expires_at_ms`; ask the list
    /// again for a fresh link.
    pub playback_url: String,
    pub playback_expires_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordingKind {
    Recording,
    Voicemail,
}

/// Query of `GET /v1/recordings`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct RecordingQuery {
    /// Only recordings or only voicemails.
    pub kind: Option<RecordingKind>,
    /// Only those of one call.
    pub call_id: Option<String>,
    /// Page size, 1–100 (default 20).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of recordings, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RecordingPage {
    pub recordings: Vec<RecordingItem>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Query of the playback link.
#[derive(Debug, Deserialize, IntoParams)]
pub struct LinkQuery {
    /// The link's sealed token.
    pub token: String,
}

#[derive(Serialize, Deserialize)]
struct LinkToken {
    /// Recording id.
    r: String,
    /// Expiry, epoch ms.
    e: i64,
}

/// The agent's recordings and voicemails, newest first, with playback links.
#[utoipa::path(get, path = "/v1/recordings", tag = "recordings", security(("session" = [])), params(RecordingQuery),
    responses((status = 200, body = RecordingPage), (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn list(State(api): State<AgentApi>, Extension(me): Extension<Principal>, Query(q): Query<RecordingQuery>) -> Result<Json<RecordingPage>, Problem> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(Problem::bad_request("invalid_limit", "limit is a page size from 1 to 100"));
    }
    let (before_at, before_id) = match q.cursor.as_deref() {
        None => (i64::MAX, String::new()),
        Some(c) => {
            let (at, id) = c.split_once('_').ok_or_else(|| Problem::bad_request("invalid_cursor", "pass next_cursor from the previous page as it is"))?;
            (at.parse().map_err(|_| Problem::bad_request("invalid_cursor", "pass next_cursor from the previous page as it is"))?, id.to_owned())
        }
    };
    let kind = match q.kind {
        None => "",
        Some(RecordingKind::Recording) => "recording",
        Some(RecordingKind::Voicemail) => "voicemail",
    };
    let rows = sqlx::query(
        "SELECT r.id AS id, r.call_id AS call_id, r.kind AS kind, r.format AS format, r.duration_ms AS duration_ms, \
                r.size_bytes AS size_bytes, r.admin_only AS admin_only, r.created_at AS created_at, r.object_key AS object_key \
         FROM recordings r LEFT JOIN calls c ON c.id = r.call_id \
         WHERE ((r.kind = 'voicemail' AND r.user_id = $1) \
             OR (r.kind = 'recording' AND r.admin_only = 0 AND c.agent_user_id = $1) \
             OR ($2 = 1 AND r.admin_only = 1)) \
           AND ($3 = '' OR r.kind = $3) \
           AND ($4 = '' OR r.call_id = $4) \
           AND (r.created_at < $5 OR (r.created_at = $5 AND r.id < $6)) \
         ORDER BY r.created_at DESC, r.id DESC LIMIT $7",
    )
    .bind(&me.user_id)
    .bind(me.is_admin() as i64)
    .bind(kind)
    .bind(q.call_id.as_deref().unwrap_or(""))
    .bind(before_at)
    .bind(&before_id)
    .bind(limit + 1)
    .fetch_all(api.db.pool())
    .await
    .map_err(|e| Problem::internal("listing recordings failed", &e))?;
    let read = |e: sqlx::Error| Problem::internal("listing recordings failed", &e);
    let mut recordings = Vec::with_capacity(rows.len());
    for row in rows.iter().take(limit as usize) {
        let id: String = row.try_get("id").map_err(read)?;
        let format: String = row.try_get("format").map_err(read)?;
        let key: String = row.try_get("object_key").map_err(read)?;
        let (playback_url, playback_expires_at_ms) = api.playback_link(&id, &key).await;
        recordings.push(RecordingItem {
            call_id: row.try_get("call_id").map_err(read)?,
            kind: if row.try_get::<String, _>("kind").map_err(read)? == "voicemail" { RecordingKind::Voicemail } else { RecordingKind::Recording },
            content_type: crate::api::recordings::content_type(&format).to_owned(),
            format,
            duration_ms: row.try_get("duration_ms").map_err(read)?,
            size_bytes: row.try_get("size_bytes").map_err(read)?,
            admin_only: row.try_get::<i64, _>("admin_only").map_err(read)? != 0,
            created_at_ms: row.try_get("created_at").map_err(read)?,
            playback_url,
            playback_expires_at_ms,
            id,
        });
    }
    let next_cursor = (rows.len() as i64 > limit).then(|| recordings.last().map(|r| format!("{}_{}", r.created_at_ms, r.id))).flatten();
    Ok(Json(RecordingPage { recordings, next_cursor }))
}

impl AgentApi {
    /// A playback link for a recording and when it stops working.
    async fn playback_link(&self, id: &str, object_key: &str) -> (String, i64) {
        let expires = now_ms() + LINK_TTL.as_millis() as i64;
        if let Some(url) = self.recordings.presigned(object_key, LINK_TTL).await {
            return (url, expires);
        }
        let token = self.sealer.seal(LINK_PURPOSE, &serde_json::to_vec(&LinkToken { r: id.to_owned(), e: expires }).expect("token serialises"));
        (format!("{}/v1/recordings/{id}/audio?token={token}", self.public_url), expires)
    }
}

/// Plays a recording through a link from `GET /v1/recordings` (no session
/// needed: the token is the permission, and it expires).
#[utoipa::path(get, path = "/v1/recordings/{id}/audio", tag = "recordings", params(("id" = String, Path, description = "recording id"), LinkQuery),
    responses((status = 200, description = "the audio", content_type = "audio/*"),
              (status = 403, description = "the link is forged, for another recording, or expired", body = Problem, content_type = "application/problem+json")))]
pub async fn audio(State(api): State<AgentApi>, Path(id): Path<String>, Query(q): Query<LinkQuery>) -> Response {
    let valid = api
        .sealer
        .open(LINK_PURPOSE, &q.token)
        .ok()
        .and_then(|plain| serde_json::from_slice::<LinkToken>(&plain).ok())
        .is_some_and(|t| t.r == id && t.e > now_ms());
    if !valid {
        metrics::counter!("switchboard_api_auth_failures_total").increment(1);
        return Problem::forbidden("link_expired", "this playback link is not valid (expired, or for another recording); list the recordings again for a fresh one").into_response();
    }
    let row: Result<Option<(String, String)>, _> =
        sqlx::query_as("SELECT object_key, format FROM recordings WHERE id = $1").bind(&id).fetch_optional(api.db.pool()).await;
    match row {
        Ok(Some((key, format))) => crate::api::recordings::stream_object(api.recordings.store().as_ref(), &key, &format).await,
        Ok(None) => Problem::not_found("recording_not_found", "the recording no longer exists").into_response(),
        Err(e) => Problem::internal("looking up the recording failed", &e).into_response(),
    }
}
