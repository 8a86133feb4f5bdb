//! The Salesforce sync status of calls, as their agents see it (B4): the
//! connector writes each agent's Task of a call and keeps its status in
//! `sync_tasks`; the gateway reads the rows changed since its last look,
//! about once a second, and tells the agent of each call still on its
//! softphone (`call.synced`): pending, logged as Task `00T…`, refused by
//! Salesforce (with why), or not logged (with why). The connector may run
//! in another process or on another machine; the database is what both
//! share, so it is read rather than signalled.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_store::sqlx::{self, Row};
use switchboard_store::{now_ms, Database};
use tokio_util::sync::CancellationToken;
use tracing::warn;
use utoipa::ToSchema;

use crate::calls::live::{LiveCalls, ENDED_GRACE_MS};

/// Where the agent's Task of a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// The connector has the call and has not written the Task yet (or is
    /// retrying: Salesforce unreachable, over its limit).
    Pending,
    /// Salesforce holds the Task.
    Synced,
    /// Salesforce refused the Task for good; an administrator can replay it
    /// after fixing the cause (`switchboard replay`).
    Failed,
    /// No Task is written for this agent (see `detail`).
    Skipped,
}

/// The sync status of the agent's Task of a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"state": "synced", "task_id": "00T000000000001AAA"}))]
pub struct SyncView {
    pub state: SyncState,
    /// The Task's record id, once Salesforce gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Why it failed or was skipped (Salesforce's error code and message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// What the Task was written without, and why (a Case left out next
    /// to a Lead, a record that could not be linked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The part of the connector's stored Task status the agent is shown.
#[derive(Deserialize, Default)]
#[serde(default)]
struct StoredTask {
    created: bool,
    salesforce_id: Option<String>,
    rejected: Option<StoredRejection>,
    skipped: Option<String>,
    writes: u32,
    note: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StoredRejection {
    error_code: String,
    message: String,
}

/// Reads one `sync_tasks.state` (the connector's JSON); `None` when it
/// does not parse.
pub fn view_of(state: &str, salesforce_id: Option<String>) -> Option<SyncView> {
    let task: StoredTask = serde_json::from_str(state).ok()?;
    let (task_id, note) = (task.salesforce_id.or(salesforce_id), task.note);
    Some(if let Some(reason) = task.skipped {
        SyncView { state: SyncState::Skipped, task_id, detail: Some(reason), note }
    } else if let Some(r) = task.rejected {
        SyncView { state: SyncState::Failed, task_id, detail: Some(format!("{}: {}", r.error_code, r.message)), note }
    } else if task.created || task.writes > 0 {
        SyncView { state: SyncState::Synced, task_id, detail: None, note }
    } else {
        SyncView { state: SyncState::Pending, task_id, detail: None, note }
    })
}

/// Rows read per look.
const BATCH: i64 = 500;

/// Watches `sync_tasks` every `every` until `shutdown`.
pub async fn run(db: Database, live: LiveCalls, every: Duration, shutdown: CancellationToken) {
    // Calls older than the grace period are no longer on any softphone.
    let mut since = now_ms() - ENDED_GRACE_MS;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        loop {
            match look(&db, &live, since).await {
                Ok((newest, rows)) => {
                    since = newest.max(since);
                    if rows < BATCH as usize {
                        break;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "reading the Salesforce sync status of calls failed; agents see it once the database answers");
                    break;
                }
            }
        }
    }
}

/// One look: rows changed at or after `since` (the same millisecond again,
/// as rows written in it may have committed after the last look; showing a
/// status twice changes nothing). Answers the newest change seen and the
/// number of rows.
async fn look(db: &Database, live: &LiveCalls, since: i64) -> Result<(i64, usize), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT call_id, user_id, state, salesforce_id, updated_at FROM sync_tasks WHERE updated_at >= $1 ORDER BY updated_at LIMIT $2",
    )
    .bind(since)
    .bind(BATCH)
    .fetch_all(db.pool())
    .await?;
    let mut newest = since;
    for row in &rows {
        let updated_at: i64 = row.try_get("updated_at")?;
        newest = newest.max(updated_at);
        let (call_id, user_id): (String, String) = (row.try_get("call_id")?, row.try_get("user_id")?);
        let state: String = row.try_get("state")?;
        match view_of(&state, row.try_get("salesforce_id")?) {
            Some(view) => live.set_sync(&call_id, &user_id, view),
            None => metrics::counter!("switchboard_sync_status_unreadable_total").increment(1),
        }
    }
    // A full batch of one millisecond would repeat forever: move on.
    let newest = if rows.len() == BATCH as usize && newest == since { since + 1 } else { newest };
    Ok((newest, rows.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connectors_task_status_reads_as_what_the_agent_is_shown() {
        let synced = view_of(r#"{"created":true,"salesforce_id":"00T000000000001AAA","writes":2}"#, None).unwrap();
        assert_eq!((synced.state, synced.task_id.as_deref()), (SyncState::Synced, Some("00T000000000001AAA")));
        let failed = view_of(r#"{"created":false,"rejected":{"fields":{},"error_code":"FIELD_CUSTOM_VALIDATION_EXCEPTION","message":"Subject required"}}"#, None).unwrap();
        assert_eq!(failed.state, SyncState::Failed);
        assert_eq!(failed.detail.as_deref(), Some("FIELD_CUSTOM_VALIDATION_EXCEPTION: Subject required"));
        let skipped = view_of(r#"{"skipped":"the user has no Salesforce user id"}"#, None).unwrap();
        assert_eq!(skipped.state, SyncState::Skipped);
        assert_eq!(view_of("{}", Some("00T1".into())).unwrap(), SyncView { state: SyncState::Pending, task_id: Some("00T1".into()), detail: None, note: None });
        let noted = view_of(r#"{"created":true,"writes":1,"note":"the Case was left out: a Task cannot name a Lead and a Case"}"#, None).unwrap();
        assert_eq!((noted.state, noted.note.as_deref()), (SyncState::Synced, Some("the Case was left out: a Task cannot name a Lead and a Case")));
        assert!(view_of("not json", None).is_none());
    }
}
