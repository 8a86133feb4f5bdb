//! Persists calls' state changes, each with its call event in the outbox,
//! in the same database transaction (the transactional outbox).
//!
//! One writer task for the whole gateway applies updates strictly in the
//! order they were recorded, so each call's event sequence numbers have no
//! gaps and follow its state. Updates that queue up while a transaction is
//! running are committed together in the next one (group commit): at a
//! thousand calls a second the database sees a few hundred transactions a
//! second instead of several thousand competing ones. A database outage
//! delays the writes (retried with backoff) but never drops them.
//!
//! After each commit the writer folds the committed updates, in order, into
//! the gateway's [`LiveCalls`], which streams them to agents: an agent sees
//! a change once it is durable, never before, and an update still being
//! retried is shown when its commit finally succeeds.

use std::sync::Arc;
use std::time::Duration;

use switchboard_proto::v1 as pb;
use switchboard_proto::Message;
use switchboard_store::{now_ms, Database, Outbox};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, warn};

use super::live::LiveCalls;
use crate::media::bridge::Side;
use crate::media::quality::ReceptionReport;
use crate::media::relay::RecordingState;
use crate::media::rtcp::LegQuality;

/// A user taking part in a call.
#[derive(Debug, Clone, Default)]
pub struct AgentInfo {
    pub user_id: String,
    pub salesforce_user_id: Option<String>,
    pub device_id: Option<String>,
    pub display_name: String,
    /// The user's privacy mode (F2) when the call was routed to it: its
    /// Task is logged without the number and the recording links.
    pub privacy_mode: bool,
}

impl AgentInfo {
    fn to_proto(&self) -> pb::Agent {
        pb::Agent {
            user_id: self.user_id.clone(),
            salesforce_user_id: self.salesforce_user_id.clone().unwrap_or_default(),
            device_id: self.device_id.clone().unwrap_or_default(),
            display_name: self.display_name.clone(),
            privacy_mode: self.privacy_mode,
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
        /// Other users taking part from the start, who see the call live:
        /// every member of a group the call rings, the caller of an
        /// internal call. Not stored (the event names the owner only).
        participants: Vec<String>,
        /// The user placing the call (outbound and internal calls), who
        /// stays in it whoever answers. Not stored either.
        caller_user_id: Option<String>,
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
    /// Nobody answered: the caller is leaving a voicemail for `user_id`.
    /// For the live view only: no call event and no stored state (the
    /// call's events say it with `call.ended`'s reason and
    /// `voicemail.available`).
    Voicemail { user_id: String },
    /// A voicemail left for `user_id`, stored.
    VoicemailAvailable { stored: crate::recordings::StoredRecording, user_id: String, ended_by: String },
    /// Hold or mute changed.
    MediaState { held: Option<Side>, muted: Vec<Side> },
    RecordingState { state: RecordingState, admin_only: bool },
    /// Media quality per leg, at hangup.
    Quality { legs: Vec<LegSummary> },
    /// An agent's device listens to the voicemail being left, or picked up.
    Screening { agent: AgentInfo, picked_up: bool },
    /// The agent's own 1–5 rating of the call's audio.
    Rated { user_id: String, score: u32, comment: String },
    /// A note the agent wrote (F12).
    Note { note_id: String, user_id: String, text: String },
    /// The Salesforce record the agent says the customer is (F15).
    Related { user_id: String, record_id: String, object: String, name: String },
    /// The Case or Opportunity the agent assigned the call to, or a new
    /// Case it asked for (`record_id` empty) (F10, F11).
    Assigned { assignment: Assignment },
    /// The agent's side was handed over and the new party answered
    /// (decision 0014): `to` owns the call from now on (`None`: an outside
    /// number, `to_number`).
    Transferred { from: Option<AgentInfo>, to: Option<AgentInfo>, kind: pb::TransferKind, to_number: String },
    /// F4: the agent `by` parked the call in `slot`.
    Parked { slot: u32, by: Option<AgentInfo> },
    /// A transfer rings these agents' devices: they see the call while it
    /// rings for them. For the live view only (`call.transferred` says who
    /// took it).
    TransferRinging { agents: Vec<AgentInfo> },
    /// The transfer that rang them ended without them (declined, not
    /// answered, cancelled): they no longer see the call. Live view only.
    TransferWithdrawn,
}

/// An assignment of a call to a Case or an Opportunity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub assignment_id: String,
    pub user_id: String,
    /// `Case` or `Opportunity`.
    pub object: String,
    /// Empty for a new Case.
    pub record_id: String,
    pub name: String,
    pub subject: String,
    pub description: String,
}

/// One leg's media quality for the quality event.
#[derive(Debug, Clone, PartialEq)]
pub struct LegSummary {
    pub side: Side,
    pub reception: ReceptionReport,
    pub quality: LegQuality,
}

impl LegSummary {
    pub fn new(side: Side, reception: ReceptionReport, quality: LegQuality) -> LegSummary {
        LegSummary { side, reception, quality }
    }

    fn to_proto(&self) -> pb::LegQuality {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        pb::LegQuality {
            leg: leg_of(self.side) as i32,
            packets_received: self.reception.received,
            packets_lost: self.reception.lost,
            loss_ratio: self.reception.loss,
            jitter_ms: ms(self.reception.jitter),
            rtt_ms: self.quality.rtt.map(ms).unwrap_or(0.0),
            remote_loss_ratio: self.quality.remote.map_or(0.0, |r| r.fraction_lost),
            remote_jitter_ms: self.quality.remote.map_or(0.0, |r| ms(r.jitter)),
            mos: self.quality.mos,
        }
    }
}

fn leg_of(side: Side) -> pb::Leg {
    match side {
        Side::A => pb::Leg::Caller,
        Side::B => pb::Leg::Callee,
    }
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

/// Most updates committed in one transaction.
const MAX_BATCH: usize = 512;

/// One queued update.
#[derive(Debug)]
struct Item {
    call_id: Arc<str>,
    update: CallUpdate,
    at: i64,
}

/// The gateway's event writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct EventWriter {
    tx: mpsc::UnboundedSender<Item>,
}

impl EventWriter {
    /// Starts the writer task. `committed` is notified after each commit
    /// (the Kafka relay waits on it); `live`, when given, folds each
    /// committed update.
    pub fn spawn(db: Database, committed: Arc<Notify>, live: Option<LiveCalls>) -> EventWriter {
        let (tx, mut rx) = mpsc::unbounded_channel::<Item>();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while let Some(first) = rx.recv().await {
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
                metrics::histogram!("switchboard_call_event_batch_size").record(batch.len() as f64);
                commit_with_retry(&db, &batch, live.as_ref()).await;
                committed.notify_one();
                batch.clear();
            }
        });
        EventWriter { tx }
    }

    /// The writer of one call.
    pub fn call(&self, call_id: &str) -> CallWriter {
        CallWriter { call_id: Arc::from(call_id), tx: self.tx.clone() }
    }
}

/// Handle to record one call's state changes; cheap to clone.
#[derive(Debug, Clone)]
pub struct CallWriter {
    call_id: Arc<str>,
    tx: mpsc::UnboundedSender<Item>,
}

impl CallWriter {
    /// A writer of its own for `call_id` (for a call outside the manager,
    /// e.g. a recording left in the spool by an earlier run).
    pub fn spawn(db: Database, call_id: String, committed: Arc<Notify>) -> CallWriter {
        EventWriter::spawn(db, committed, None).call(&call_id)
    }

    /// Queues a state change stamped with the current time.
    pub fn record(&self, update: CallUpdate) {
        let _ = self.tx.send(Item { call_id: self.call_id.clone(), update, at: now_ms() });
    }
}

/// Commits `batch` in one transaction, retrying with backoff while the
/// database is unavailable. A batch that fails is written again one update
/// at a time, so one bad update cannot hold back the others' commits.
/// Each update is folded into `live` right after the transaction holding it
/// committed, and never before; no update is given up on, so every one is
/// eventually folded, in order.
async fn commit_with_retry(db: &Database, batch: &[Item], live: Option<&LiveCalls>) {
    let fold = |items: &[Item]| {
        if let Some(live) = live {
            for item in items {
                live.apply(&item.call_id, &item.update, item.at);
            }
        }
    };
    if batch.len() > 1 {
        match commit(db, batch).await {
            Ok(()) => {
                fold(batch);
                return;
            }
            Err(e) => {
                warn!(error = %e, updates = batch.len(), "writing call events failed; writing them one by one");
                metrics::counter!("switchboard_call_event_write_retries_total").increment(1);
            }
        }
    }
    for item in batch {
        let mut delay = Duration::from_millis(100);
        loop {
            match commit(db, std::slice::from_ref(item)).await {
                Ok(()) => {
                    fold(std::slice::from_ref(item));
                    break;
                }
                Err(e) => {
                    warn!(call_id = %item.call_id, error = %e, "writing call state failed; retrying (is the database up?)");
                    metrics::counter!("switchboard_call_event_write_retries_total").increment(1);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

async fn commit(db: &Database, items: &[Item]) -> Result<(), sqlx_error::Error> {
    let mut tx = db.pool().begin().await?;
    let mut kinds = Vec::with_capacity(items.len());
    for item in items {
        if let Some((seq, kind)) = write(&mut tx, &item.call_id, &item.update, item.at).await? {
            debug!(call_id = %item.call_id, seq, "call event written");
            kinds.push(kind);
        }
    }
    tx.commit().await?;
    for kind in kinds {
        metrics::counter!("switchboard_call_events_total", "kind" => kind).increment(1);
    }
    Ok(())
}

/// Applies one update and appends its event inside `tx`; returns the
/// event's sequence and kind (`None` for an update of the live view only).
async fn write(
    tx: &mut switchboard_store::sqlx::Transaction<'static, switchboard_store::sqlx::Any>,
    call_id: &str,
    update: &CallUpdate,
    at: i64,
) -> Result<Option<(i64, &'static str)>, sqlx_error::Error> {
    if let CallUpdate::Voicemail { .. } | CallUpdate::TransferRinging { .. } | CallUpdate::TransferWithdrawn = update {
        return Ok(None);
    }
    let seq: i64 = if matches!(update, CallUpdate::Started { .. }) {
        1
    } else {
        switchboard_store::sqlx::query_scalar("SELECT next_seq FROM calls WHERE id = $1")
            .bind(call_id)
            .fetch_one(&mut **tx)
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
                .execute(&mut **tx)
                .await?;
            pb::call_event::Kind::Started(pb::CallStarted {
                direction: *direction as i32,
                from: Some(pb::Party { number: from_number.clone(), display_name: from_display_of(update) }),
                to: Some(pb::Party { number: to_number.clone(), display_name: String::new() }),
                owner: Some(owner.to_proto()),
            })
        }
        CallUpdate::Ringing { agent } => {
            q("UPDATE calls SET state = 'ringing' WHERE id = $1").bind(call_id).execute(&mut **tx).await?;
            pb::call_event::Kind::Ringing(pb::CallRinging { agent: Some(agent.to_proto()) })
        }
        CallUpdate::Answered { agent } => {
            q("UPDATE calls SET state = 'answered', answered_at = $2, agent_user_id = $3 WHERE id = $1")
                .bind(call_id)
                .bind(at)
                .bind(agent.user_id.as_str())
                .execute(&mut **tx)
                .await?;
            pb::call_event::Kind::Answered(pb::CallAnswered { agent: Some(agent.to_proto()) })
        }
        CallUpdate::Ended { reason, hangup_by, sip_status, talk_seconds, total_seconds } => {
            q("UPDATE calls SET state = 'ended', ended_at = $2, end_reason = $3 WHERE id = $1")
                .bind(call_id)
                .bind(at)
                .bind(reason.as_str_name())
                .execute(&mut **tx)
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
                .execute(&mut **tx)
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
        CallUpdate::VoicemailAvailable { stored, user_id, ended_by } => {
            q("INSERT INTO recordings (id, call_id, object_key, format, duration_ms, size_bytes, admin_only, created_at, kind, user_id) VALUES ($1, $2, $3, $4, $5, $6, 0, $7, 'voicemail', $8)")
                .bind(stored.recording_id.as_str())
                .bind(call_id)
                .bind(stored.object_key.as_str())
                .bind(stored.format.as_str())
                .bind(stored.duration_ms as i64)
                .bind(stored.size_bytes as i64)
                .bind(at)
                .bind(user_id.as_str())
                .execute(&mut **tx)
                .await?;
            pb::call_event::Kind::VoicemailAvailable(pb::VoicemailAvailable {
                recording_id: stored.recording_id.clone(),
                object_key: stored.object_key.clone(),
                url: stored.url.clone(),
                format: stored.format.clone(),
                duration_ms: stored.duration_ms,
                size_bytes: stored.size_bytes,
                user_id: user_id.clone(),
                ended_by: ended_by.clone(),
            })
        }
        CallUpdate::MediaState { held, muted } => pb::call_event::Kind::MediaState(pb::MediaStateChanged {
            held: held.map_or(pb::Leg::Unspecified, leg_of) as i32,
            muted: muted.iter().map(|s| leg_of(*s) as i32).collect(),
        }),
        CallUpdate::RecordingState { state, admin_only } => pb::call_event::Kind::RecordingState(pb::RecordingStateChanged {
            state: match state {
                RecordingState::Off => pb::RecordingState::Off,
                RecordingState::Recording => pb::RecordingState::Recording,
                RecordingState::Paused => pb::RecordingState::Paused,
            } as i32,
            admin_only: *admin_only,
        }),
        CallUpdate::Quality { legs } => pb::call_event::Kind::Quality(pb::QualityReport { legs: legs.iter().map(LegSummary::to_proto).collect() }),
        CallUpdate::Screening { agent, picked_up } => {
            pb::call_event::Kind::Screening(pb::VoicemailScreening { agent: Some(agent.to_proto()), picked_up: *picked_up })
        }
        CallUpdate::Rated { user_id, score, comment } => {
            pb::call_event::Kind::Rating(pb::QualityRating { user_id: user_id.clone(), score: *score, comment: comment.clone() })
        }
        CallUpdate::Note { note_id, user_id, text } => {
            pb::call_event::Kind::Note(pb::CallNote { note_id: note_id.clone(), user_id: user_id.clone(), text: text.clone() })
        }
        CallUpdate::Related { user_id, record_id, object, name } => pb::call_event::Kind::Related(pb::CallRelated {
            user_id: user_id.clone(),
            record_id: record_id.clone(),
            object_type: object.clone(),
            name: name.clone(),
        }),
        CallUpdate::Assigned { assignment: a } => pb::call_event::Kind::Assigned(pb::CallAssigned {
            assignment_id: a.assignment_id.clone(),
            user_id: a.user_id.clone(),
            object_type: a.object.clone(),
            record_id: a.record_id.clone(),
            subject: a.subject.clone(),
            description: a.description.clone(),
            name: a.name.clone(),
        }),
        CallUpdate::Transferred { from, to, kind, to_number } => {
            // The call's agent is who has it now (an outside number: nobody).
            q("UPDATE calls SET agent_user_id = $2 WHERE id = $1")
                .bind(call_id)
                .bind(to.as_ref().map(|a| a.user_id.clone()))
                .execute(&mut **tx)
                .await?;
            pb::call_event::Kind::Transferred(pb::CallTransferred {
                from: from.as_ref().map(AgentInfo::to_proto),
                to: to.as_ref().map(AgentInfo::to_proto),
                kind: *kind as i32,
                to_number: to_number.clone(),
            })
        }
        CallUpdate::Parked { slot, by } => pb::call_event::Kind::Parked(pb::CallParked { slot: *slot, by: by.as_ref().map(AgentInfo::to_proto) }),
        CallUpdate::Voicemail { .. } | CallUpdate::TransferRinging { .. } | CallUpdate::TransferWithdrawn => return Ok(None),
    };
    q("UPDATE calls SET next_seq = $2 WHERE id = $1").bind(call_id).bind(seq + 1).execute(&mut **tx).await?;
    let event = pb::CallEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        call_id: call_id.to_owned(),
        sequence: seq as u64,
        occurred_at_ms: at,
        kind: Some(kind),
    };
    Outbox::insert(tx, call_id, seq, event.kind_name(), &event.encode_to_vec()).await?;
    Ok(Some((seq, event.kind_name())))
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
            participants: Vec::new(),
            caller_user_id: None,
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

    #[tokio::test]
    async fn interleaved_calls_are_group_committed_with_their_own_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::connect(&format!("sqlite://{}", dir.path().join("w.db").display())).await.unwrap();
        db.migrate().await.unwrap();
        let notify = Arc::new(Notify::new());
        let events = EventWriter::spawn(db.clone(), notify.clone(), None);
        let agent = AgentInfo { user_id: "u1".into(), ..Default::default() };
        let calls: Vec<CallWriter> = (0..50).map(|i| events.call(&format!("call-{i}"))).collect();
        for w in &calls {
            w.record(CallUpdate::Started {
                sip_call_id: "sip".into(),
                direction: pb::Direction::Inbound,
                from_number: "+12125550123".into(),
                from_display: String::new(),
                to_number: "+14155550100".into(),
                owner: agent.clone(),
                participants: Vec::new(),
                caller_user_id: None,
            });
        }
        for w in &calls {
            w.record(CallUpdate::Ringing { agent: agent.clone() });
        }
        for w in &calls {
            w.record(CallUpdate::Answered { agent: agent.clone() });
        }
        let rows = loop {
            notify.notified().await;
            let rows = db.outbox().read_after(0, 1000).await.unwrap();
            if rows.len() == 150 {
                break rows;
            }
        };
        for i in 0..50 {
            let id = format!("call-{i}");
            let seqs: Vec<u64> = rows
                .iter()
                .filter(|r| r.call_id == id)
                .map(|r| CallEvent::decode(r.payload.as_slice()).unwrap().sequence)
                .collect();
            assert_eq!(seqs, [1, 2, 3], "{id}");
        }
        let answered: i64 = switchboard_store::sqlx::query_scalar("SELECT COUNT(*) FROM calls WHERE state = 'answered'")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(answered, 50);
    }

    #[tokio::test]
    async fn committed_updates_reach_the_live_view_and_live_only_ones_write_no_event() {
        use crate::calls::live::{AgentEventKind, CallState, LiveCalls};
        let dir = tempfile::tempdir().unwrap();
        let db = Database::connect(&format!("sqlite://{}", dir.path().join("w.db").display())).await.unwrap();
        db.migrate().await.unwrap();
        let live = LiveCalls::new();
        let mut owner = live.subscribe("u1");
        let mut mailbox = live.subscribe("u2");
        let w = EventWriter::spawn(db.clone(), Arc::new(Notify::new()), Some(live.clone())).call("call-1");
        w.record(CallUpdate::Started {
            sip_call_id: "sip-1".into(),
            direction: pb::Direction::Inbound,
            from_number: "+12125550123".into(),
            from_display: String::new(),
            to_number: "+14155550100".into(),
            owner: AgentInfo { user_id: "u1".into(), ..Default::default() },
            participants: Vec::new(),
            caller_user_id: None,
        });
        w.record(CallUpdate::Voicemail { user_id: "u2".into() });
        w.record(CallUpdate::Ended { reason: pb::EndReason::Voicemail, hangup_by: "caller".into(), sip_status: 200, talk_seconds: 0, total_seconds: 9 });
        let mut kinds = Vec::new();
        for _ in 0..3 {
            let event = tokio::time::timeout(Duration::from_secs(10), owner.events.recv()).await.unwrap().unwrap();
            kinds.push(event.kind);
        }
        assert_eq!(kinds, [AgentEventKind::Started, AgentEventKind::Voicemail, AgentEventKind::Ended]);
        // Shown only once committed: the stored events are already there,
        // and the live-only update took no sequence number.
        let rows = db.outbox().read_after(0, 10).await.unwrap();
        let stored: Vec<(&str, u64)> =
            rows.iter().map(|r| (r.kind.as_str(), CallEvent::decode(r.payload.as_slice()).unwrap().sequence)).collect();
        assert_eq!(stored, [("call.started", 1), ("call.ended", 2)]);
        // The mailbox's user sees the call from its voicemail on.
        let event = tokio::time::timeout(Duration::from_secs(10), mailbox.events.recv()).await.unwrap().unwrap();
        assert_eq!((event.kind, event.call.as_ref().map(|c| c.state)), (AgentEventKind::Voicemail, Some(CallState::Voicemail)));
        assert_eq!(live.for_user("u2").len(), 1);
    }
}
