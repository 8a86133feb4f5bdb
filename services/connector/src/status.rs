//! The sync status of each Task, published for the gateway to show agents
//! (B4): after every written batch, one `TaskSyncStatus` per (call, agent)
//! whose status changed, keyed by call id, on the status topic.
//!
//! In outbox mode (`switchboard up`) nothing is published: the gateway
//! shares the database and reads `sync_tasks`. The status is advisory (the
//! Task itself is what counts, and the next change publishes it again), so a
//! broker that does not take it within a few seconds is logged and counted,
//! and the batch is committed regardless.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use switchboard_proto::{Message, TaskSyncState, TaskSyncStatus};

use crate::fold::{CallState, TaskSync};
use crate::metrics as m;

/// How long a status may wait for the broker.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Where statuses go.
#[derive(Clone)]
pub enum StatusPublisher {
    /// Nowhere: the gateway reads `sync_tasks` (outbox mode).
    Table,
    /// The status topic (Kafka mode).
    Topic {
        /// The connector's producer (shared with the dead letters).
        producer: FutureProducer,
        /// The status topic.
        topic: String,
    },
}

impl std::fmt::Debug for StatusPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatusPublisher::Table => f.write_str("StatusPublisher::Table"),
            StatusPublisher::Topic { topic, .. } => write!(f, "StatusPublisher::Topic({topic})"),
        }
    }
}

/// The statuses of a batch's Tasks, taken before and after it is written.
pub type Snapshot = BTreeMap<(String, String), TaskSyncStatus>;

/// The status of every Task of `states`, keyed by (call id, user id).
pub fn snapshot<'a>(states: impl Iterator<Item = &'a CallState>) -> Snapshot {
    let mut out = BTreeMap::new();
    for state in states {
        let case_id = state.cases.values().rev().find_map(|c| c.salesforce_id.clone()).unwrap_or_default();
        for (user_id, sync) in &state.tasks {
            out.insert((state.call_id.clone(), user_id.clone()), status_of(&state.call_id, user_id, sync, &case_id));
        }
    }
    out
}

/// What the agent is shown for one Task.
pub fn status_of(call_id: &str, user_id: &str, sync: &TaskSync, case_id: &str) -> TaskSyncStatus {
    let (state, detail) = if let Some(reason) = &sync.skipped {
        (TaskSyncState::Skipped, reason.clone())
    } else if let Some(r) = &sync.rejected {
        (TaskSyncState::Failed, format!("{}: {}", r.error_code, r.message))
    } else if sync.created || sync.writes > 0 {
        (TaskSyncState::Synced, String::new())
    } else {
        (TaskSyncState::Pending, String::new())
    };
    TaskSyncStatus {
        call_id: call_id.to_owned(),
        user_id: user_id.to_owned(),
        state: state as i32,
        task_id: sync.salesforce_id.clone().unwrap_or_default(),
        detail,
        note: sync.note.clone().unwrap_or_default(),
        case_id: case_id.to_owned(),
        updated_at_ms: 0,
    }
}

impl StatusPublisher {
    /// Publishes every status of `after` that differs from `before`.
    pub async fn publish_changes(&self, before: &Snapshot, after: Snapshot, now_ms: i64) {
        let StatusPublisher::Topic { producer, topic } = self else {
            return;
        };
        let changed: Vec<TaskSyncStatus> = after
            .into_iter()
            .filter(|(key, status)| before.get(key) != Some(status))
            .map(|(_, mut status)| {
                status.updated_at_ms = now_ms;
                status
            })
            .collect();
        let sends = changed.iter().map(|status| {
            let payload = status.encode_to_vec();
            async move {
                let record = FutureRecord::to(topic).key(status.call_id.as_str()).payload(&payload);
                match producer.send(record, Timeout::After(SEND_TIMEOUT)).await {
                    Ok(_) => m::status_published("sent"),
                    Err((error, _)) => {
                        m::status_published("failed");
                        tracing::warn!(
                            call_id = %status.call_id,
                            user_id = %status.user_id,
                            topic,
                            %error,
                            "the status topic did not take a Task's sync status; agents see it with the call's next change"
                        );
                    }
                }
            }
        });
        futures::future::join_all(sends).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold::Rejection;

    #[test]
    fn statuses_read_as_what_the_agent_is_shown() {
        let synced = TaskSync { created: true, salesforce_id: Some("00T000000000001AAA".into()), writes: 1, ..Default::default() };
        let status = status_of("c1", "u1", &synced, "500000000000001AAA");
        assert_eq!(status.state(), TaskSyncState::Synced);
        assert_eq!((status.task_id.as_str(), status.case_id.as_str()), ("00T000000000001AAA", "500000000000001AAA"));

        let rejected = TaskSync {
            rejected: Some(Rejection {
                fields: serde_json::from_value(serde_json::json!({"Subject": "s", "Type": "Call", "CallType": "Inbound", "CallDurationInSeconds": 0, "CallDisposition": "answered", "CallObject": "c1", "Status": "Completed", "ActivityDate": "2024-03-01", "OwnerId": "005000000000001AAA", "Description": ""})).unwrap(),
                error_code: "FIELD_CUSTOM_VALIDATION_EXCEPTION".into(),
                message: "Subject required".into(),
            }),
            ..Default::default()
        };
        let status = status_of("c1", "u1", &rejected, "");
        assert_eq!(status.state(), TaskSyncState::Failed);
        assert_eq!(status.detail, "FIELD_CUSTOM_VALIDATION_EXCEPTION: Subject required");

        let skipped = TaskSync { skipped: Some("agent u2 is not linked to a Salesforce user".into()), ..Default::default() };
        assert_eq!(status_of("c1", "u2", &skipped, "").state(), TaskSyncState::Skipped);
        assert_eq!(status_of("c1", "u3", &TaskSync::default(), "").state(), TaskSyncState::Pending);
    }
}
