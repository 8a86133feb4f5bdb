//! Persists a call's state changes, each with its call event in the outbox,
//! in one database transaction (the transactional outbox).
//!
//! One writer task per call applies updates strictly in order, so event
//! sequence numbers have no gaps and follow the state. A database outage
//! delays the writes (retried with backoff) but never drops them.

use std::sync::Arc;
use std::time::Duration;

use switchboard_proto::v1 as pb;
use switchboard_proto::Message;
use switchboard_store::{now_ms, Database, Outbox};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, warn};

/// A user taking part in a call.
#[derive(Debug, Clone, Default)]
pub struct AgentInfo {
    pub user_id: String,
    pub salesforce_user_id: Option<String>,
    pub device_id: Option<String>,
    pub display_name: String,
}

impl AgentInfo {
    fn to_proto(&self) -> pb::Agent {
        pb::Agent {
            user_id: self.user_id.clone(),
            salesforce_user_id: self.salesforce_user_id.clone().unwrap_or_default(),
            device_id: self.device_id.clone().unwrap_or_default(),
            display_name: self.display_name.clone(),
        }
    }
}

/// One state change of a call.
#[derive(Debug, Clone)]
pub enum CallUpdate {
    Started {
        sip_call_id: String,
        direction: pb::Direction,
        from_number: String,
        from_display: String,
        to_number: String,
        owner: AgentInfo,
    },
    Ringing { agent: AgentInfo },
    Answered { agent: AgentInfo },
    Ended { reason: pb::EndReason, hangup_by: String, sip_status: u32, talk_seconds: u32, total_seconds: u32 },
    RecordingAvailable {
        recording_id: String,
        object_key: String,
        url: String,
        format: String,
        duration_ms: u64,
        size_bytes: u64,
        sample_rate_hz: u32,
        admin_only: bool,
    },
}

impl CallUpdate {
    /// The event announcing a stored recording.
    pub fn recording_available(stored: crate::recordings::StoredRecording, admin_only: bool) -> CallUpdate {
        CallUpdate::RecordingAvailable {
            recording_id: stored.recording_id,
            object_key: stored.object_key,
            url: stored.url,
            format: stored.format,
            duration_ms: stored.duration_ms,
            size_bytes: stored.size_bytes,
            sample_rate_hz: stored.sample_rate_hz,
            admin_only,
        }
    }
}

/// Handle to a call's writer task; cheap to clone.
#[derive(Debug, Clone)]
pub struct CallWriter {
    tx: mpsc::UnboundedSender<(CallUpdate, i64)>,
}

impl CallWriter {
    /// Starts the writer of `call_id`. `committed` is notified after each
    /// commit (the relay waits on it).
    pub fn spawn(db: Database, call_id: String, committed: Arc<Notify>) -> CallWriter {
        let (tx, mut rx) = mpsc::unbounded_channel::<(CallUpdate, i64)>();
        tokio::spawn(async move {
            while let Some((update, at)) = rx.recv().await {
                let mut delay = Duration::from_millis(100);
                loop {
                    match write(&db, &call_id, &update, at).await {
                        Ok(seq) => {
                            debug!(call_id, seq, "call event committed");
                            committed.notify_one();
                            break;
                        }
                        Err(e) => {
                            warn!(call_id, error = %e, "writing call state failed; retrying (is the database up?)");
                            metrics::counter!("switchboard_call_event_write_retries_total").increment(1);
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(10));
                        }
                    }
                }
            }
        });
        CallWriter { tx }
    }

    /// Queues a state change stamped with the current time.
    pub fn record(&self, update: CallUpdate) {
        let _ = self.tx.send((update, now_ms()));
    }
}

/// Applies one update and appends its event; returns the event's sequence.
async fn write(db: &Database, call_id: &str, update: &CallUpdate, at: i64) -> Result<i64, sqlx_error::Error> {
    let mut tx = db.pool().begin().await?;
    let seq: i64 = if matches!(update, CallUpdate::Started { .. }) {
        1
    } else {
        switchboard_store::sqlx::query_scalar("SELECT next_seq FROM calls WHERE id = $1")
            .bind(call_id)
            .fetch_one(&mut *tx)
            .await?
    };
    let q = switchboard_store::sqlx::query;
    let kind = match update {
        CallUpdate::Started { sip_call_id, direction, from_number, to_number, owner, .. } => {
            q("INSERT INTO calls (id, sip_call_id, direction, from_number, to_number, user_id, state, next_seq, started_at) VALUES ($1, $2, $3, $4, $5, $6, 'ringing', 1, $7)")
                .bind(call_id)
                .bind(sip_call_id.as_str())
                .bind(direction.as_str_name())
                .bind(from_number.as_str())
                .bind(to_number.as_str())
                .bind(owner.user_id.as_str())
                .bind(at)
                .execute(&mut *tx)
                .await?;
            pb::call_event::Kind::Started(pb::CallStarted {
                direction: *direction as i32,
                from: Some(pb::Party { number: from_number.clone(), display_name: from_display_of(update) }),
                to: Some(pb::Party { number: to_number.clone(), display_name: String::new() }),
                owner: Some(owner.to_proto()),
            })
        }
        CallUpdate::Ringing { agent } => {
            q("UPDATE calls SET state = 'ringing' WHERE id = $1").bind(call_id).execute(&mut *tx).await?;
            pb::call_event::Kind::Ringing(pb::CallRinging { agent: Some(agent.to_proto()) })
        }
        CallUpdate::Answered { agent } => {
            q("UPDATE calls SET state = 'answered', answered_at = $2 WHERE id = $1")
                .bind(call_id)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            pb::call_event::Kind::Answered(pb::CallAnswered { agent: Some(agent.to_proto()) })
        }
        CallUpdate::Ended { reason, hangup_by, sip_status, talk_seconds, total_seconds } => {
            q("UPDATE calls SET state = 'ended', ended_at = $2, end_reason = $3 WHERE id = $1")
                .bind(call_id)
                .bind(at)
                .bind(reason.as_str_name())
                .execute(&mut *tx)
                .await?;
            pb::call_event::Kind::Ended(pb::CallEnded {
                reason: *reason as i32,
                hangup_by: hangup_by.clone(),
                talk_seconds: *talk_seconds,
                total_seconds: *total_seconds,
                sip_status: *sip_status,
                q850_cause: 0,
            })
        }
        CallUpdate::RecordingAvailable { recording_id, object_key, url, format, duration_ms, size_bytes, sample_rate_hz, admin_only } => {
            q("INSERT INTO recordings (id, call_id, object_key, format, duration_ms, size_bytes, admin_only, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                .bind(recording_id.as_str())
                .bind(call_id)
                .bind(object_key.as_str())
                .bind(format.as_str())
                .bind(*duration_ms as i64)
                .bind(*size_bytes as i64)
                .bind(*admin_only as i64)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            pb::call_event::Kind::RecordingAvailable(pb::RecordingAvailable {
                recording_id: recording_id.clone(),
                object_key: object_key.clone(),
                url: url.clone(),
                format: format.clone(),
                duration_ms: *duration_ms,
                size_bytes: *size_bytes,
                sample_rate_hz: *sample_rate_hz,
                channels: vec![pb::ChannelRole::Customer as i32, pb::ChannelRole::Agent as i32],
                admin_only: *admin_only,
            })
        }
    };
    q("UPDATE calls SET next_seq = $2 WHERE id = $1").bind(call_id).bind(seq + 1).execute(&mut *tx).await?;
    let event = pb::CallEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        call_id: call_id.to_owned(),
        sequence: seq as u64,
        occurred_at_ms: at,
        kind: Some(kind),
    };
    Outbox::insert(&mut tx, call_id, seq, event.kind_name(), &event.encode_to_vec()).await?;
    tx.commit().await?;
    metrics::counter!("switchboard_call_events_total", "kind" => event.kind_name()).increment(1);
    Ok(seq)
}

fn from_display_of(update: &CallUpdate) -> String {
    match update {
        CallUpdate::Started { from_display, .. } => from_display.clone(),
        _ => String::new(),
    }
}

mod sqlx_error {
    pub use switchboard_store::sqlx::Error;
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_proto::{CallEvent, Kind};

    #[tokio::test]
    async fn events_follow_state_in_order_with_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::connect(&format!("sqlite://{}", dir.path().join("w.db").display())).await.unwrap();
        db.migrate().await.unwrap();
        let notify = Arc::new(Notify::new());
        let w = CallWriter::spawn(db.clone(), "call-1".into(), notify.clone());
        let agent = AgentInfo { user_id: "u1".into(), salesforce_user_id: Some("005000000000001AAA".into()), ..Default::default() };
        w.record(CallUpdate::Started {
            sip_call_id: "sip-1".into(),
            direction: pb::Direction::Inbound,
            from_number: "+12125550123".into(),
            from_display: "Carrier".into(),
            to_number: "+14155550100".into(),
            owner: agent.clone(),
        });
        w.record(CallUpdate::Ringing { agent: agent.clone() });
        w.record(CallUpdate::Answered { agent });
        w.record(CallUpdate::Ended {
            reason: pb::EndReason::Completed,
            hangup_by: "caller".into(),
            sip_status: 200,
            talk_seconds: 9,
            total_seconds: 10,
        });
        let rows = loop {
            notify.notified().await;
            let rows = db.outbox().read_after(0, 100).await.unwrap();
            if rows.len() == 4 {
                break rows;
            }
        };
        let kinds: Vec<_> = rows.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["call.started", "call.ringing", "call.answered", "call.ended"]);
        for (i, r) in rows.iter().enumerate() {
            let e = CallEvent::decode(r.payload.as_slice()).unwrap();
            assert_eq!(e.sequence, i as u64 + 1);
            assert_eq!(e.call_id, "call-1");
            if let Some(Kind::Ended(end)) = e.kind {
                assert_eq!(end.talk_seconds, 9);
            }
        }
        let state: String = switchboard_store::sqlx::query_scalar("SELECT state FROM calls WHERE id = 'call-1'")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(state, "ended");
    }
}
