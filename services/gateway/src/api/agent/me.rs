//! The signed-in agent: who it is, its settings (F2), the caller IDs it may
//! present (F5), the company directory (F3), and tickets for the event
//! stream (browsers cannot put a bearer token on an EventSource or
//! WebSocket).

use axum::extract::State;
use axum::Extension;
use serde::{Deserialize, Serialize};
use switchboard_store::sqlx::{self, Row};
use switchboard_store::now_ms;
use utoipa::{IntoParams, ToSchema};

use super::AgentApi;
use crate::api::auth::{Principal, Role};
use crate::api::problem::{Json, Problem, Query};
use crate::directory::{DirectoryEntry, DirectoryError};

/// `GET /v1/me`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub user_id: String,
    pub name: String,
    pub extension: Option<String>,
    pub role: Role,
    /// The linked Salesforce user (`005…`).
    pub salesforce_user_id: Option<String>,
    /// Whether searches can run with the agent's own Salesforce token.
    pub salesforce_connected: bool,
    /// When the session ends (epoch ms); sign in again before.
    pub session_expires_at_ms: i64,
    pub settings: Settings,
}

/// The agent's settings (F2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"privacy_mode": false, "open_task_after_call": true, "call_relation": "case"}))]
pub struct Settings {
    /// Calls are logged under the privacy policy (no number, no recording link).
    pub privacy_mode: bool,
    /// The softphone opens the call's Task in Salesforce after the call.
    pub open_task_after_call: bool,
    /// What a call is related to by default.
    pub call_relation: CallRelation,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { privacy_mode: false, open_task_after_call: true, call_relation: CallRelation::None }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallRelation {
    None,
    Case,
    Opportunity,
}

impl CallRelation {
    fn as_str(self) -> &'static str {
        match self {
            CallRelation::None => "none",
            CallRelation::Case => "case",
            CallRelation::Opportunity => "opportunity",
        }
    }

    fn parse(s: &str) -> CallRelation {
        match s {
            "case" => CallRelation::Case,
            "opportunity" => CallRelation::Opportunity,
            _ => CallRelation::None,
        }
    }
}

/// `GET /v1/me/caller-ids`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"caller_ids": ["+14155550101", "+14155550100"], "default": "+14155550101"}))]
pub struct CallerIds {
    /// The numbers the agent may present: its own, its groups', the main line.
    pub caller_ids: Vec<String>,
    /// The one used when the agent does not choose.
    pub default: Option<String>,
}

/// Query of `GET /v1/directory`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct DirectoryQuery {
    /// Part of a name, extension, number or group name; empty lists everyone.
    #[serde(default)]
    pub q: String,
    /// Page size, 1–200 (default 50).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of the directory.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DirectoryPage {
    pub entries: Vec<DirectoryEntry>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `POST /v1/stream-tickets`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StreamTicket {
    /// Put in `?ticket=` of `/v1/events` or `/v1/events/ws`.
    pub ticket: String,
    pub expires_at_ms: i64,
}

fn directory_problem(e: DirectoryError) -> Problem {
    match e {
        DirectoryError::NotFound { .. } => Problem::unauthorized("your user no longer exists; sign in again"),
        e => Problem::internal("the directory failed", &e),
    }
}

/// The signed-in agent.
#[utoipa::path(get, path = "/v1/me", tag = "agent", security(("session" = [])),
    responses((status = 200, body = Me), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn me(State(api): State<AgentApi>, Extension(me): Extension<Principal>) -> Result<Json<Me>, Problem> {
    let user = api.directory.get_user(&me.user_id).await.map_err(directory_problem)?;
    let settings = load_settings(&api, &me.user_id).await?;
    Ok(Json(Me {
        user_id: user.id,
        name: user.name,
        extension: user.extension,
        role: me.role,
        salesforce_user_id: user.salesforce_user_id,
        salesforce_connected: me.salesforce_connected,
        session_expires_at_ms: me.expires_at_ms,
        settings,
    }))
}

async fn load_settings(api: &AgentApi, user_id: &str) -> Result<Settings, Problem> {
    let row = sqlx::query("SELECT privacy_mode, open_task_after_call, call_relation FROM agent_settings WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(api.db.pool())
        .await
        .map_err(|e| Problem::internal("reading settings failed", &e))?;
    let Some(row) = row else { return Ok(Settings::default()) };
    let get = |c: &str| -> Result<i64, Problem> { row.try_get::<i64, _>(c).map_err(|e| Problem::internal("reading settings failed", &e)) };
    Ok(Settings {
        privacy_mode: get("privacy_mode")? != 0,
        open_task_after_call: get("open_task_after_call")? != 0,
        call_relation: CallRelation::parse(&row.try_get::<String, _>("call_relation").unwrap_or_default()),
    })
}

/// The agent's settings.
#[utoipa::path(get, path = "/v1/me/settings", tag = "agent", security(("session" = [])),
    responses((status = 200, body = Settings), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn get_settings(State(api): State<AgentApi>, Extension(me): Extension<Principal>) -> Result<Json<Settings>, Problem> {
    Ok(Json(load_settings(&api, &me.user_id).await?))
}

/// Replaces the agent's settings.
#[utoipa::path(put, path = "/v1/me/settings", tag = "agent", security(("session" = [])), request_body = Settings,
    responses((status = 200, body = Settings), (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn put_settings(State(api): State<AgentApi>, Extension(me): Extension<Principal>, Json(s): Json<Settings>) -> Result<Json<Settings>, Problem> {
    sqlx::query(
        "INSERT INTO agent_settings (user_id, privacy_mode, open_task_after_call, call_relation, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (user_id) DO UPDATE SET privacy_mode = excluded.privacy_mode, open_task_after_call = excluded.open_task_after_call, \
         call_relation = excluded.call_relation, updated_at = excluded.updated_at",
    )
    .bind(&me.user_id)
    .bind(s.privacy_mode as i64)
    .bind(s.open_task_after_call as i64)
    .bind(s.call_relation.as_str())
    .bind(now_ms())
    .execute(api.db.pool())
    .await
    .map_err(|e| Problem::internal("saving settings failed", &e))?;
    tracing::info!(user_id = %me.user_id, privacy_mode = s.privacy_mode, "agent settings changed");
    Ok(Json(s))
}

/// The caller IDs the agent may present (F5).
#[utoipa::path(get, path = "/v1/me/caller-ids", tag = "agent", security(("session" = [])),
    responses((status = 200, body = CallerIds), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn caller_ids(State(api): State<AgentApi>, Extension(me): Extension<Principal>) -> Result<Json<CallerIds>, Problem> {
    let caller_ids = api.directory.entitled_numbers(&me.user_id).await.map_err(directory_problem)?;
    let default = caller_ids.first().cloned();
    Ok(Json(CallerIds { caller_ids, default }))
}

/// Searches the company directory (F3).
#[utoipa::path(get, path = "/v1/directory", tag = "agent", security(("session" = [])), params(DirectoryQuery),
    responses((status = 200, body = DirectoryPage), (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn directory(State(api): State<AgentApi>, Query(q): Query<DirectoryQuery>) -> Result<Json<DirectoryPage>, Problem> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(Problem::bad_request("invalid_limit", "limit is a page size from 1 to 200"));
    }
    if q.q.len() > 100 {
        return Err(Problem::bad_request("invalid_query", "the search text is at most 100 characters"));
    }
    // One more than asked tells whether there is a next page.
    let mut entries = api.directory.search(&q.q, limit + 1, q.cursor.as_deref()).await.map_err(|e| Problem::internal("the directory failed", &e))?;
    let next_cursor = if entries.len() > limit {
        entries.truncate(limit);
        entries.last().map(|e| e.id.clone())
    } else {
        None
    };
    Ok(Json(DirectoryPage { entries, next_cursor }))
}

/// A ticket for the event stream, valid for a minute.
#[utoipa::path(post, path = "/v1/stream-tickets", tag = "events", security(("session" = [])),
    responses((status = 200, body = StreamTicket), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn stream_ticket(State(api): State<AgentApi>, Extension(me): Extension<Principal>) -> Json<StreamTicket> {
    let (ticket, expires_at_ms) = api.issue_ticket(&me);
    Json(StreamTicket { ticket, expires_at_ms })
}
