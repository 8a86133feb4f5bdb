//! The Salesforce sync status of calls, as their agents see it (B4): the
//! connector writes each agent's Task of a call, and the gateway tells the
//! agent of each call still on its softphone (`call.synced`): pending,
//! logged as Task `00T…`, refused by Salesforce (with why), or not logged
//! (with why).
//!
//! How the status reaches the gateway follows `events.log`:
//! - `outbox` (embedded): the connector keeps each Task's status in
//!   `sync_tasks`; [`run`] reads the rows changed since its last look,
//!   about once a second. The database is what both roles share, so it is
//!   read rather than signalled.
//! - `kafka`: the connector publishes a `TaskSyncStatus` per changed Task
//!   on the status topic after every batch, and
//!   [`sync_topic`](super::sync_topic) reads it.
//!
//! Both end in [`SyncView`]: [`view_of`] reads a `sync_tasks` row,
//! [`view_of_status`] a `TaskSyncStatus`, and [`SyncView::new`] is what
//! either builds it with.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_proto::{TaskSyncState, TaskSyncStatus};
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

impl SyncView {
    /// The status of a Task in `state`. An empty text counts as none, and
    /// `detail` is kept only where it says why: a failed or skipped Task.
    pub fn new(state: SyncState, task_id: Option<String>, detail: Option<String>, note: Option<String>) -> SyncView {
        let text = |t: Option<String>| t.filter(|t| !t.trim().is_empty());
        let detail = if matches!(state, SyncState::Failed | SyncState::Skipped) { text(detail) } else { None };
        SyncView { state, task_id: text(task_id), detail, note: text(note) }
    }
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
    let (state, detail) = if let Some(reason) = task.skipped {
        (SyncState::Skipped, Some(reason))
    } else if let Some(r) = task.rejected {
        (SyncState::Failed, Some(format!("{}: {}", r.error_code, r.message)))
    } else if task.created || task.writes > 0 {
        (SyncState::Synced, None)
    } else {
        (SyncState::Pending, None)
    };
    Some(SyncView::new(state, task.salesforce_id.or(salesforce_id), detail, task.note))
}

/// Why a record of the status topic is not shown to anyone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnreadableStatus {
    /// The bytes are not a `TaskSyncStatus`.
    #[error("not a TaskSyncStatus: {0}")]
    Undecodable(String),
    /// The status names no call or no agent.
    #[error("the status names no call id or no user id")]
    Unaddressed,
    /// A state this gateway does not know (unspecified, or added by a newer
    /// connector).
    #[error("task sync state {0} is not one this gateway knows (0, unspecified, is a fault of the publisher; a higher one comes from a newer connector: upgrade the gateway)")]
    UnknownState(i32),
}

/// Reads one record of the status topic: the call, the agent, and what the
/// agent is shown.
pub fn view_of_status(payload: &[u8]) -> Result<(String, String, SyncView), UnreadableStatus> {
    use switchboard_proto::Message as _;
    let status = TaskSyncStatus::decode(payload).map_err(|e| UnreadableStatus::Undecodable(e.to_string()))?;
    if status.call_id.is_empty() || status.user_id.is_empty() {
        return Err(UnreadableStatus::Unaddressed);
    }
    let state = match TaskSyncState::try_from(status.state) {
        Ok(TaskSyncState::Pending) => SyncState::Pending,
        Ok(TaskSyncState::Synced) => SyncState::Synced,
        Ok(TaskSyncState::Failed) => SyncState::Failed,
        Ok(TaskSyncState::Skipped) => SyncState::Skipped,
        Ok(TaskSyncState::Unspecified) | Err(_) => return Err(UnreadableStatus::UnknownState(status.state)),
    };
    let view = SyncView::new(state, Some(status.task_id), Some(status.detail), Some(status.note));
    Ok((status.call_id, status.user_id, view))
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
        // Empty texts are no texts.
        assert_eq!(view_of(r#"{"created":true,"salesforce_id":"","note":""}"#, None).unwrap(), SyncView { state: SyncState::Synced, task_id: None, detail: None, note: None });
    }

    fn status(state: TaskSyncState, task_id: &str, detail: &str, note: &str) -> Vec<u8> {
        use switchboard_proto::Message as _;
        let status = TaskSyncStatus {
            call_id: "0193f0a2-aaaa-7000-8000-000000000001".into(),
            user_id: "u-ada".into(),
            state: state as i32,
            task_id: task_id.into(),
            detail: detail.into(),
            note: note.into(),
            case_id: String::new(),
            updated_at_ms: 1_790_000_000_000,
        };
        status.encode_to_vec()
    }

    #[test]
    fn a_status_of_the_topic_reads_as_what_the_agent_is_shown() {
        let (call_id, user_id, synced) = view_of_status(&status(TaskSyncState::Synced, "00T000000000001AAA", "", "the Case was left out")).unwrap();
        assert_eq!((call_id.as_str(), user_id.as_str()), ("0193f0a2-aaaa-7000-8000-000000000001", "u-ada"));
        assert_eq!(synced, SyncView { state: SyncState::Synced, task_id: Some("00T000000000001AAA".into()), detail: None, note: Some("the Case was left out".into()) });
        let (_, _, failed) = view_of_status(&status(TaskSyncState::Failed, "", "FIELD_CUSTOM_VALIDATION_EXCEPTION: Subject required", "")).unwrap();
        assert_eq!(failed, SyncView { state: SyncState::Failed, task_id: None, detail: Some("FIELD_CUSTOM_VALIDATION_EXCEPTION: Subject required".into()), note: None });
        let (_, _, skipped) = view_of_status(&status(TaskSyncState::Skipped, "", "the user has no Salesforce user id", "")).unwrap();
        assert_eq!((skipped.state, skipped.detail.as_deref()), (SyncState::Skipped, Some("the user has no Salesforce user id")));
        // A detail says why something went wrong; a pending Task has none to show.
        let (_, _, pending) = view_of_status(&status(TaskSyncState::Pending, "", "retrying: REQUEST_LIMIT_EXCEEDED", "")).unwrap();
        assert_eq!(pending, SyncView { state: SyncState::Pending, task_id: None, detail: None, note: None });
        // The same Task status reads the same from either source.
        let stored = view_of(r#"{"created":false,"rejected":{"fields":{},"error_code":"FIELD_CUSTOM_VALIDATION_EXCEPTION","message":"Subject required"}}"#, None).unwrap();
        assert_eq!(stored, failed);
    }

    #[test]
    fn a_record_that_is_no_status_is_unreadable_and_says_why() {
        assert!(matches!(view_of_status(b"\x08\x96\x01 not a TaskSyncStatus \xff"), Err(UnreadableStatus::Undecodable(_))));
        assert_eq!(view_of_status(&status(TaskSyncState::Unspecified, "00T1", "", "")), Err(UnreadableStatus::UnknownState(0)));
        let mut newer = status(TaskSyncState::Synced, "00T1", "", "");
        // Field 3 (state) again, with a value no gateway knows yet: the last one wins.
        newer.extend_from_slice(&[0x18, 0x09]);
        assert_eq!(view_of_status(&newer), Err(UnreadableStatus::UnknownState(9)));
        use switchboard_proto::Message as _;
        let nobody = TaskSyncStatus { call_id: "c".into(), state: TaskSyncState::Synced as i32, ..Default::default() }.encode_to_vec();
        assert_eq!(view_of_status(&nobody), Err(UnreadableStatus::Unaddressed));
        assert!(UnreadableStatus::UnknownState(9).to_string().contains("upgrade the gateway"));
    }
}
