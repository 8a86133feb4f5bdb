//! The live calls: what each agent's softphone shows right now, and a
//! stream of every change to it.
//!
//! The event writer folds each call update in here *after* its transaction
//! committed, in the writer's order (so in each call's order). An agent
//! therefore never sees a state the database, the outbox and so Salesforce
//! do not have: what the softphone shows is what the call log will say, and
//! an update whose commit is still being retried is shown once it is in.
//!
//! Who sees a call is decided per call and only grows: the owner of
//! `call.started` (for a group's number routing names its first member),
//! every other user the call rings (the group's members) and the caller of
//! an internal call, the agent whose device rang or answered, a screening
//! agent and the user whose voicemail takes the call. Those users receive
//! the call's events and may control it (the agent API asks
//! [`LiveCalls::visible`] before controlling a call). An ended call stays
//! visible for [`ENDED_GRACE_MS`], so a page reloading right after a hangup
//! still shows how its call ended, and is then dropped.
//!
//! Sans-IO at its core: no task and no timer. Updates carry their own time
//! and ended calls are purged lazily, on the next update or read; only the
//! reads without a time argument ([`LiveCalls::for_user`],
//! [`LiveCalls::subscribe`], [`LiveCalls::get`], [`LiveCalls::visible`])
//! look at the wall clock.
//!
//! Agent-facing only: an admin-only recording (F7) is never mentioned, not
//! its state and not its availability, whoever subscribes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use switchboard_proto::v1 as pb;
use tokio::sync::broadcast;
use tracing::debug;
use utoipa::ToSchema;

use super::writer::CallUpdate;
use crate::media::bridge::Side;
use crate::media::relay::RecordingState;
use crate::salesforce::sync::SyncView;
use crate::salesforce::CallerMatches;

/// How long an ended call stays visible, in milliseconds.
pub const ENDED_GRACE_MS: i64 = 60_000;

/// Events buffered per user before a slow subscriber is declared lagging
/// (and gets a fresh snapshot instead of the events it missed).
const CHANNEL_CAPACITY: usize = 256;

/// Which way a call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallDirection {
    /// From a trunk (the outside world) to a user or group.
    Inbound,
    /// From a user's device out through a trunk.
    Outbound,
    /// Between two users of the company.
    Internal,
}

/// Where a call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// Placed and not answered yet: the callee's devices ring (outbound:
    /// the far end is being called).
    Ringing,
    /// Someone answered; the parties talk.
    Answered,
    /// Nobody answered: the gateway took the call and the caller is
    /// leaving a voicemail (which can be screened).
    Voicemail,
    /// Over; see `end_reason`.
    Ended,
}

/// One side of a call, named after who placed it: the agent is `callee`
/// on inbound and internal calls (the caller of an internal call is the
/// other agent) and `caller` on outbound ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallParty {
    Caller,
    Callee,
}

/// The agent's recording of a call (an administrator's recording is never
/// shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordingStatus {
    Off,
    Recording,
    Paused,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallEndReason {
    /// Answered, then hung up normally.
    Completed,
    /// The caller gave up before anyone answered.
    Cancelled,
    /// Nobody answered in time.
    NoAnswer,
    /// The callee was busy or declined.
    Busy,
    /// The call could not be set up.
    Failed,
    /// The caller left a voicemail (or hung up in it).
    Voicemail,
}

/// A call as the softphone shows it. Field names are part of the agent
/// API and stay as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CallView {
    /// Switchboard's call id (a UUIDv7), the one every call-control route takes.
    pub id: String,
    pub direction: CallDirection,
    pub state: CallState,
    /// The caller's number as presented (E.164, an extension, or `anonymous`).
    pub from_number: String,
    /// The caller's display name, when it gave one.
    pub from_display: Option<String>,
    /// The number or extension called.
    pub to_number: String,
    /// The user id of the agent who answered; `null` until someone does.
    pub agent_user_id: Option<String>,
    /// When the call started, epoch milliseconds.
    pub started_at_ms: i64,
    /// When it was answered, epoch milliseconds.
    pub answered_at_ms: Option<i64>,
    /// When it ended, epoch milliseconds.
    pub ended_at_ms: Option<i64>,
    /// The side on hold (it hears music), if any.
    pub held: Option<CallParty>,
    /// The sides whose audio is muted towards the other.
    pub muted: Vec<CallParty>,
    /// The agent's recording of this call.
    pub recording: RecordingStatus,
    /// An agent is listening to the voicemail being left (screening).
    pub screening: bool,
    /// Why the call ended; `null` while it is live.
    pub end_reason: Option<CallEndReason>,
    /// Ids of the agent's recordings of this call stored so far (playable
    /// at `/v1/recordings/{id}`), in order.
    pub recording_ids: Vec<String>,
    /// The id of the voicemail the caller left, once it is stored.
    pub voicemail_id: Option<String>,
    /// Who the customer may be in Salesforce, as this agent may see it
    /// (F14); absent until the lookup made when the call reached the agent
    /// has answered, and on internal calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_matches: Option<CallerMatches>,
    /// The Salesforce record the agent said the customer is (F15).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub related: Option<RelatedRecord>,
    /// The Case or Opportunity the call is assigned to (F10, F11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment: Option<AssignmentView>,
    /// Where this agent's Task of the call is in Salesforce, once the
    /// connector has the call (usually after it ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salesforce_sync: Option<SyncView>,
}

/// The record a call is related to (its Task's Who, or What for an Account).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"record_id": "003000000000001AAA", "object": "Contact", "name": "Ada Lovelace"}))]
pub struct RelatedRecord {
    pub record_id: String,
    /// `Contact`, `Lead` or `Account`.
    pub object: String,
    pub name: String,
}

/// Where a call is assigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"assignment_id": "0190b7c4-6a1e-7cc0-8f5e-2b1a4d2e9f10", "object": "Case", "record_id": "500000000000001AAA", "name": "00001001"}))]
pub struct AssignmentView {
    pub assignment_id: String,
    /// `Case` or `Opportunity`.
    pub object: String,
    /// `null` for a new Case the connector creates.
    pub record_id: Option<String>,
    /// Case number or Opportunity name; a new Case's subject.
    pub name: String,
}

/// A caller lookup the registry asks for: `user_id` now sees `call_id`,
/// whose customer has `number`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupRequest {
    pub call_id: String,
    pub user_id: String,
    pub number: String,
}

/// What an event says happened; its JSON `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum AgentEventKind {
    /// Every call the user sees, in `calls`: the first event of a stream,
    /// and again in place of the events a subscriber fell too far behind
    /// to receive.
    #[serde(rename = "snapshot")]
    Snapshot,
    /// A call appeared (the gateway is placing it).
    #[serde(rename = "call.started")]
    Started,
    /// The callee's device rings (outbound: the far end rings).
    #[serde(rename = "call.ringing")]
    Ringing,
    /// Someone answered (also when a screening agent picks up).
    #[serde(rename = "call.answered")]
    Answered,
    /// Nobody answered: the caller is leaving a voicemail.
    #[serde(rename = "call.voicemail")]
    Voicemail,
    /// A screening agent started listening to the voicemail being left,
    /// or picked up (then `call.answered` follows).
    #[serde(rename = "call.screening")]
    Screening,
    /// Hold or mute changed.
    #[serde(rename = "call.media_state")]
    MediaState,
    /// The agent's recording started, paused, resumed or stopped.
    #[serde(rename = "call.recording_state")]
    RecordingState,
    #[serde(rename = "call.ended")]
    Ended,
    /// An agent's recording of the call is stored; `recording_id` names it.
    #[serde(rename = "call.recording_available")]
    RecordingAvailable,
    /// The caller's voicemail is stored; `recording_id` names it.
    #[serde(rename = "call.voicemail_available")]
    VoicemailAvailable,
    /// An agent rated the call's audio; `rating` says how.
    #[serde(rename = "call.rated")]
    Rated,
    /// The caller lookup in Salesforce answered: `call.caller_matches`.
    #[serde(rename = "call.matched")]
    Matched,
    /// The agent related the call to a Salesforce record: `call.related`.
    #[serde(rename = "call.related")]
    Related,
    /// The call was assigned to a Case or Opportunity: `call.assignment`.
    #[serde(rename = "call.assigned")]
    Assigned,
    /// The agent's Task of the call changed in Salesforce:
    /// `call.salesforce_sync`.
    #[serde(rename = "call.synced")]
    Synced,
    /// The agent's side was handed over (transfer, move): `agent_user_id`
    /// is who has the call now. The agent who handed it over receives this
    /// event last; the call is then gone from its stream and its list.
    #[serde(rename = "call.transferred")]
    Transferred,
    /// The agent parked the call (F4): the far end hears music until an
    /// agent retrieves it (`call.transferred` follows).
    #[serde(rename = "call.parked")]
    Parked,
    /// A transfer that rang this agent ended without it (declined, not
    /// answered, cancelled): the call leaves its stream and its list.
    #[serde(rename = "call.withdrawn")]
    Withdrawn,
    /// A browser leg for one of the user's softphone pages: `leg` holds
    /// the gateway's WebRTC offer.
    #[serde(rename = "webrtc.offer")]
    WebRtcOffer,
    /// A browser leg is over: the page closes its peer connection.
    #[serde(rename = "webrtc.ended")]
    WebRtcEnded,
}

impl AgentEventKind {
    /// The JSON `type` (also the SSE event name).
    pub fn as_str(self) -> &'static str {
        match self {
            AgentEventKind::Snapshot => "snapshot",
            AgentEventKind::Started => "call.started",
            AgentEventKind::Ringing => "call.ringing",
            AgentEventKind::Answered => "call.answered",
            AgentEventKind::Voicemail => "call.voicemail",
            AgentEventKind::Screening => "call.screening",
            AgentEventKind::MediaState => "call.media_state",
            AgentEventKind::RecordingState => "call.recording_state",
            AgentEventKind::Ended => "call.ended",
            AgentEventKind::RecordingAvailable => "call.recording_available",
            AgentEventKind::VoicemailAvailable => "call.voicemail_available",
            AgentEventKind::Rated => "call.rated",
            AgentEventKind::Matched => "call.matched",
            AgentEventKind::Related => "call.related",
            AgentEventKind::Assigned => "call.assigned",
            AgentEventKind::Synced => "call.synced",
            AgentEventKind::Transferred => "call.transferred",
            AgentEventKind::Parked => "call.parked",
            AgentEventKind::Withdrawn => "call.withdrawn",
            AgentEventKind::WebRtcOffer => "webrtc.offer",
            AgentEventKind::WebRtcEnded => "webrtc.ended",
        }
    }
}

/// An agent's rating of a call's audio.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RatingView {
    pub user_id: String,
    /// 1 (bad) to 5 (excellent).
    pub score: u32,
    pub comment: String,
}

/// One message of an agent's event stream, the same JSON over SSE and
/// WebSocket.
///
/// `seq` comes from one counter for the whole gateway process: every
/// event of a stream has a greater `seq` than the one before (gaps are
/// other users' events), and a snapshot's `seq` is that of the last event
/// it includes, so a client can drop anything not greater than the last
/// snapshot's. The counter starts again when the gateway restarts; a
/// stream always starts with a snapshot, so no client needs to resume from
/// a `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AgentEvent {
    #[serde(rename = "type")]
    pub kind: AgentEventKind,
    pub seq: u64,
    /// When it happened (for a snapshot: when it was taken), epoch ms.
    pub at_ms: i64,
    /// The call after the change (every type but `snapshot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<CallView>,
    /// The user's calls, oldest first (`snapshot` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<Vec<CallView>>,
    /// The recording or voicemail announced (`call.recording_available`,
    /// `call.voicemail_available`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_id: Option<String>,
    /// The rating given (`call.rated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<RatingView>,
    /// The browser leg offered or ended (`webrtc.offer`, `webrtc.ended`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leg: Option<WebRtcLegView>,
}

/// A browser leg as the softphone page sees it: the WebRTC offer of the
/// gateway's to answer (`POST /v1/webrtc/legs/{id}/answer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WebRtcLegView {
    pub id: String,
    /// The Switchboard call.
    pub call_id: String,
    /// The page it is for (`POST /v1/softphone`).
    pub instance: String,
    /// The SDP offer (`webrtc.offer` only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sdp: String,
    /// Answer at once: the agent asked for the call here (placed it,
    /// answered or moved it from the softphone); else it rings.
    #[serde(default)]
    pub auto_answer: bool,
    /// Who calls, as presented to this agent (`webrtc.offer` only): the
    /// page shows it while a call it does not see yet rings (a
    /// colleague's transfer).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub caller_number: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_name: Option<String>,
}

impl AgentEvent {
    /// A `snapshot` of `calls` including every event up to `seq`.
    pub fn snapshot(seq: u64, at_ms: i64, calls: Vec<CallView>) -> AgentEvent {
        AgentEvent { kind: AgentEventKind::Snapshot, seq, at_ms, call: None, calls: Some(calls), recording_id: None, rating: None, leg: None }
    }
}

/// The live calls of the gateway and a hub of per-user event streams;
/// cheap to clone, shared by the event writer and the agent API.
#[derive(Clone)]
pub struct LiveCalls {
    inner: Arc<Mutex<Inner>>,
    /// Epoch ms, for the reads that take no time.
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
}

impl std::fmt::Debug for LiveCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCalls").finish_non_exhaustive()
    }
}

impl Default for LiveCalls {
    fn default() -> Self {
        LiveCalls::new()
    }
}

/// A user's calls and, from that moment on, their events.
#[derive(Debug)]
pub struct Subscription {
    /// The user's calls when subscribing, oldest first.
    pub snapshot: Vec<CallView>,
    /// The `seq` of the last event `snapshot` includes: every event from
    /// `events` has a greater one.
    pub seq: u64,
    /// When the snapshot was taken, epoch ms.
    pub at_ms: i64,
    /// Every later event for the user.
    pub events: AgentEvents,
}

impl Subscription {
    /// The snapshot as the stream's first event.
    pub fn snapshot_event(&self) -> AgentEvent {
        AgentEvent::snapshot(self.seq, self.at_ms, self.snapshot.clone())
    }
}

/// The events of one user after a snapshot; one per connection (each tab
/// of the same agent has its own and receives every event).
pub struct AgentEvents {
    live: LiveCalls,
    user_id: String,
    rx: broadcast::Receiver<Arc<AgentEvent>>,
}

impl std::fmt::Debug for AgentEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentEvents").field("user_id", &self.user_id).finish_non_exhaustive()
    }
}

impl AgentEvents {
    /// The next event. A subscriber that fell more than a few hundred
    /// events behind gets a `snapshot` event instead of the ones it missed
    /// (never a silent gap), and continues from there. `None` once the
    /// registry is closed (the gateway is shutting down).
    pub async fn recv(&mut self) -> Option<Arc<AgentEvent>> {
        match self.rx.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Closed) => None,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                metrics::counter!("switchboard_api_stream_lagged_total").increment(1);
                debug!(user_id = %self.user_id, missed, "an event stream fell behind; sending a fresh snapshot");
                let now = (self.live.clock)();
                let mut inner = self.live.lock();
                inner.purge(now);
                let calls = inner.visible_to(&self.user_id, now);
                let seq = inner.seq;
                // A fresh receiver from here: the backlog is in the snapshot.
                self.rx = inner.receiver(&self.user_id);
                Some(Arc::new(AgentEvent::snapshot(seq, now, calls)))
            }
        }
    }
}

impl Drop for AgentEvents {
    fn drop(&mut self) {
        metrics::gauge!("switchboard_api_stream_subscribers").decrement(1.0);
    }
}

struct Inner {
    calls: HashMap<String, LiveCall>,
    /// Ended calls by end time, oldest first, for the lazy purge.
    ended: VecDeque<(i64, String)>,
    /// A channel per user with subscribers.
    ///
    /// Per user rather than one global channel filtered by each subscriber:
    /// a global one would wake every connection for every event of every
    /// agent (a thousand calls make thousands of wake-ups per event), and
    /// one agent's burst would make quiet agents lag. Per user, an event
    /// costs one send per user who sees the call and is connected, and a
    /// tab that falls behind is behind only on its own user's events.
    hubs: HashMap<String, broadcast::Sender<Arc<AgentEvent>>>,
    /// The last event's `seq`.
    seq: u64,
    closed: bool,
    /// Where caller lookups are asked for, once someone listens.
    lookups: Option<tokio::sync::mpsc::UnboundedSender<LookupRequest>>,
}

struct LiveCall {
    view: CallView,
    /// Who sees the call, in the order they were added.
    visible: Vec<String>,
    /// The customer's number to look up in Salesforce; `None` on internal calls.
    customer: Option<String>,
    /// Each user's caller matches (users see different records).
    matches: HashMap<String, CallerMatches>,
    /// Each user's Task sync status.
    sync: HashMap<String, SyncView>,
    /// Users added by the update being applied, for their lookups.
    added: Vec<String>,
    /// The user who placed the call (outbound, internal), who stays in it
    /// whoever answers.
    caller: Option<String>,
    /// Users a transfer rings, who see the call until it is handed over or
    /// the transfer ends without them.
    offered: Vec<String>,
}

impl LiveCall {
    fn show_to(&mut self, user_id: &str) {
        if !user_id.is_empty() && !self.visible.iter().any(|u| u == user_id) {
            self.visible.push(user_id.to_owned());
            self.added.push(user_id.to_owned());
        }
    }

    /// The call as `user_id` sees it.
    fn view_for(&self, user_id: &str) -> CallView {
        let mut view = self.view.clone();
        view.caller_matches = self.matches.get(user_id).cloned();
        view.salesforce_sync = self.sync.get(user_id).cloned();
        view
    }

    fn shown_at(&self, now: i64) -> bool {
        self.view.ended_at_ms.is_none_or(|ended| now < ended + ENDED_GRACE_MS)
    }
}

impl Inner {
    /// Someone answered: the others the call rang for (a group's members,
    /// the mailbox's user) were told with the `call.answered` event and
    /// stop seeing it; it is the answering agent's now (and the caller's,
    /// for a call a user placed).
    fn answered_by(&mut self, call_id: &str, user_id: &str) {
        let Some(call) = self.calls.get_mut(call_id) else { return };
        let caller = call.caller.clone();
        call.visible.retain(|u| u == user_id || caller.as_deref() == Some(u.as_str()));
        let visible = call.visible.clone();
        call.matches.retain(|u, _| visible.contains(u));
    }

    /// Asks for a caller lookup for each user who just started seeing
    /// the call.
    fn ask_lookups(&mut self, call_id: &str) {
        let Some(call) = self.calls.get_mut(call_id) else { return };
        let added = std::mem::take(&mut call.added);
        let (Some(tx), Some(number)) = (&self.lookups, &call.customer) else { return };
        if call.view.ended_at_ms.is_some() {
            return;
        }
        for user_id in added {
            let _ = tx.send(LookupRequest { call_id: call_id.to_owned(), user_id, number: number.clone() });
        }
    }

    fn purge(&mut self, now: i64) {
        while let Some((ended, _)) = self.ended.front() {
            if now < ended + ENDED_GRACE_MS {
                break;
            }
            if let Some((_, id)) = self.ended.pop_front() {
                self.calls.remove(&id);
            }
        }
    }

    fn visible_to(&self, user_id: &str, now: i64) -> Vec<CallView> {
        let mut calls: Vec<&LiveCall> = self.calls.values().filter(|c| c.shown_at(now) && c.visible.iter().any(|u| u == user_id)).collect();
        calls.sort_by(|a, b| (a.view.started_at_ms, &a.view.id).cmp(&(b.view.started_at_ms, &b.view.id)));
        calls.into_iter().map(|c| c.view_for(user_id)).collect()
    }

    /// A receiver of the user's events from now on.
    fn receiver(&mut self, user_id: &str) -> broadcast::Receiver<Arc<AgentEvent>> {
        if self.closed {
            // Closed at once: the stream ends.
            return broadcast::channel(1).1;
        }
        self.hubs.entry(user_id.to_owned()).or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0).subscribe()
    }

    /// Sends an event about `call_id` to every connected user who sees it.
    fn publish(&mut self, call_id: &str, kind: AgentEventKind, at_ms: i64, recording_id: Option<String>, rating: Option<RatingView>) {
        let Some(call) = self.calls.get(call_id) else { return };
        self.seq += 1;
        if !call.visible.iter().any(|u| self.hubs.contains_key(u)) {
            return; // nobody connected sees it
        }
        let shared = Arc::new(AgentEvent { kind, seq: self.seq, at_ms, call: Some(call.view.clone()), calls: None, recording_id, rating, leg: None });
        let mut gone = Vec::new();
        for user in &call.visible {
            if let Some(hub) = self.hubs.get(user) {
                let event = if call.matches.contains_key(user) || call.sync.contains_key(user) {
                    Arc::new(AgentEvent { call: Some(call.view_for(user)), ..(*shared).clone() })
                } else {
                    shared.clone()
                };
                // Fails only when the user's last subscriber has gone.
                if hub.send(event).is_err() {
                    gone.push(user.clone());
                }
            }
        }
        for user in gone {
            if self.hubs.get(&user).is_some_and(|h| h.receiver_count() == 0) {
                self.hubs.remove(&user);
            }
        }
    }
}

impl LiveCalls {
    pub fn new() -> LiveCalls {
        LiveCalls::with_clock(Arc::new(switchboard_store::now_ms))
    }

    /// A registry reading time from `clock` (epoch ms) where a read takes
    /// no time argument; for tests.
    pub(crate) fn with_clock(clock: Arc<dyn Fn() -> i64 + Send + Sync>) -> LiveCalls {
        let inner = Inner { calls: HashMap::new(), ended: VecDeque::new(), hubs: HashMap::new(), seq: 0, closed: false, lookups: None };
        LiveCalls { inner: Arc::new(Mutex::new(inner)), clock }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state stays consistent even if a holder panicked: each
        // update is applied under one lock without awaiting.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Folds a committed update of `call_id` stamped `at_ms` (called by the
    /// event writer after its commit, in order per call) and publishes
    /// what it changed to the users who see the call.
    pub(crate) fn apply(&self, call_id: &str, update: &CallUpdate, at_ms: i64) {
        let mut guard = self.lock();
        let inner: &mut Inner = &mut guard;
        inner.purge(at_ms);
        if let CallUpdate::Started { direction, from_number, from_display, to_number, owner, participants, caller_user_id, .. } = update {
            if inner.calls.contains_key(call_id) {
                return; // started once
            }
            let view = CallView {
                id: call_id.to_owned(),
                direction: match direction {
                    pb::Direction::Outbound => CallDirection::Outbound,
                    pb::Direction::Internal => CallDirection::Internal,
                    pb::Direction::Inbound | pb::Direction::Unspecified => CallDirection::Inbound,
                },
                state: CallState::Ringing,
                from_number: from_number.clone(),
                from_display: (!from_display.is_empty()).then(|| from_display.clone()),
                to_number: to_number.clone(),
                agent_user_id: None,
                started_at_ms: at_ms,
                answered_at_ms: None,
                ended_at_ms: None,
                held: None,
                muted: Vec::new(),
                recording: RecordingStatus::Off,
                screening: false,
                end_reason: None,
                recording_ids: Vec::new(),
                voicemail_id: None,
                caller_matches: None,
                related: None,
                assignment: None,
                salesforce_sync: None,
            };
            let customer = match view.direction {
                CallDirection::Inbound => Some(from_number.clone()),
                CallDirection::Outbound => Some(to_number.clone()),
                CallDirection::Internal => None,
            };
            let mut call = LiveCall { view, visible: Vec::new(), customer, matches: HashMap::new(), sync: HashMap::new(), added: Vec::new(), caller: caller_user_id.clone(), offered: Vec::new() };
            call.show_to(&owner.user_id);
            for user in participants {
                call.show_to(user);
            }
            inner.calls.insert(call_id.to_owned(), call);
            inner.publish(call_id, AgentEventKind::Started, at_ms, None, None);
            inner.ask_lookups(call_id);
            return;
        }
        let Some(call) = inner.calls.get_mut(call_id) else {
            return; // never started here, or ended and purged
        };
        let (kind, recording_id, rating) = match update {
            CallUpdate::Started { .. } => return,
            CallUpdate::Ringing { agent } => {
                call.show_to(&agent.user_id);
                (AgentEventKind::Ringing, None, None)
            }
            CallUpdate::Answered { agent } => {
                call.view.state = CallState::Answered;
                call.view.answered_at_ms = Some(at_ms);
                call.view.agent_user_id = Some(agent.user_id.clone());
                call.view.screening = false;
                call.show_to(&agent.user_id);
                (AgentEventKind::Answered, None, None)
            }
            CallUpdate::Voicemail { user_id } => {
                call.view.state = CallState::Voicemail;
                call.show_to(user_id);
                (AgentEventKind::Voicemail, None, None)
            }
            CallUpdate::Screening { agent, picked_up } => {
                call.view.screening = !picked_up;
                call.show_to(&agent.user_id);
                (AgentEventKind::Screening, None, None)
            }
            CallUpdate::MediaState { held, muted } => {
                call.view.held = held.map(party_of);
                call.view.muted = muted.iter().copied().map(party_of).collect();
                (AgentEventKind::MediaState, None, None)
            }
            CallUpdate::RecordingState { admin_only: true, .. } => return,
            CallUpdate::RecordingState { state, admin_only: false } => {
                call.view.recording = match state {
                    RecordingState::Off => RecordingStatus::Off,
                    RecordingState::Recording => RecordingStatus::Recording,
                    RecordingState::Paused => RecordingStatus::Paused,
                };
                (AgentEventKind::RecordingState, None, None)
            }
            CallUpdate::Ended { reason, .. } => {
                if call.view.ended_at_ms.is_some() {
                    return;
                }
                let view = &mut call.view;
                view.state = CallState::Ended;
                view.ended_at_ms = Some(at_ms);
                view.end_reason = Some(match reason {
                    pb::EndReason::Completed => CallEndReason::Completed,
                    pb::EndReason::Cancelled => CallEndReason::Cancelled,
                    pb::EndReason::NoAnswer => CallEndReason::NoAnswer,
                    pb::EndReason::Busy => CallEndReason::Busy,
                    pb::EndReason::Voicemail => CallEndReason::Voicemail,
                    pb::EndReason::Failed | pb::EndReason::Unspecified => CallEndReason::Failed,
                });
                // No media once it is over.
                view.held = None;
                view.muted.clear();
                view.recording = RecordingStatus::Off;
                view.screening = false;
                inner.ended.push_back((at_ms, call_id.to_owned()));
                (AgentEventKind::Ended, None, None)
            }
            CallUpdate::RecordingAvailable { admin_only: true, .. } => return,
            CallUpdate::RecordingAvailable { recording_id, .. } => {
                call.view.recording_ids.push(recording_id.clone());
                (AgentEventKind::RecordingAvailable, Some(recording_id.clone()), None)
            }
            CallUpdate::VoicemailAvailable { stored, user_id, .. } => {
                call.view.voicemail_id = Some(stored.recording_id.clone());
                call.show_to(user_id);
                (AgentEventKind::VoicemailAvailable, Some(stored.recording_id.clone()), None)
            }
            CallUpdate::Rated { user_id, score, comment } => {
                (AgentEventKind::Rated, None, Some(RatingView { user_id: user_id.clone(), score: *score, comment: comment.clone() }))
            }
            CallUpdate::Related { record_id, object, name, .. } => {
                call.view.related = Some(RelatedRecord { record_id: record_id.clone(), object: object.clone(), name: name.clone() });
                (AgentEventKind::Related, None, None)
            }
            CallUpdate::Assigned { assignment: a } => {
                call.view.assignment = Some(AssignmentView {
                    assignment_id: a.assignment_id.clone(),
                    object: a.object.clone(),
                    record_id: (!a.record_id.is_empty()).then(|| a.record_id.clone()),
                    name: if a.record_id.is_empty() { a.subject.clone() } else { a.name.clone() },
                });
                (AgentEventKind::Assigned, None, None)
            }
            CallUpdate::Transferred { from, to, .. } => {
                call.view.agent_user_id = to.as_ref().map(|a| a.user_id.clone());
                // The transfer's other targets stop seeing it with this event.
                let offered: Vec<String> = std::mem::take(&mut call.offered).into_iter().filter(|u| to.as_ref().is_none_or(|t| &t.user_id != u)).collect();
                if let Some(to) = to {
                    call.show_to(&to.user_id);
                }
                // Everyone who saw the call hears of it, the agent who
                // handed it over included; then that agent no longer sees it.
                let released = from.as_ref().map(|a| a.user_id.clone()).filter(|u| to.as_ref().is_none_or(|t| &t.user_id != u));
                inner.publish(call_id, AgentEventKind::Transferred, at_ms, None, None);
                if let Some(call) = inner.calls.get_mut(call_id) {
                    call.visible.retain(|u| Some(u) != released.as_ref() && !offered.contains(u));
                }
                // The receiving agent's own caller lookup.
                inner.ask_lookups(call_id);
                return;
            }
            CallUpdate::Parked { .. } => (AgentEventKind::Parked, None, None),
            CallUpdate::TransferRinging { agents } => {
                for agent in agents {
                    if !call.visible.iter().any(|u| *u == agent.user_id) {
                        call.offered.push(agent.user_id.clone());
                    }
                    call.show_to(&agent.user_id);
                }
                (AgentEventKind::Ringing, None, None)
            }
            CallUpdate::TransferWithdrawn => {
                let offered = std::mem::take(&mut call.offered);
                if offered.is_empty() {
                    return;
                }
                // They hear of it, then no longer see the call.
                inner.publish(call_id, AgentEventKind::Withdrawn, at_ms, None, None);
                if let Some(call) = inner.calls.get_mut(call_id) {
                    call.visible.retain(|u| !offered.contains(u));
                    call.matches.retain(|u, _| !offered.contains(u));
                }
                return;
            }
            // Media quality and notes are for the call log, not the
            // softphone (the tab that wrote a note has it already).
            CallUpdate::Quality { .. } | CallUpdate::Note { .. } => return,
        };
        inner.publish(call_id, kind, at_ms, recording_id, rating);
        if let CallUpdate::Answered { agent } = update {
            inner.answered_by(call_id, &agent.user_id);
        }
        if let (CallUpdate::Ended { .. }, Some(call)) = (update, inner.calls.get_mut(call_id)) {
            // Agents a transfer was ringing heard it end; it was never theirs.
            let offered = std::mem::take(&mut call.offered);
            call.visible.retain(|u| !offered.contains(u));
        }
        inner.ask_lookups(call_id);
    }

    /// Hands caller lookups to `tx` from now on: one for every user who
    /// starts seeing a call with a customer number.
    pub fn request_lookups(&self, tx: tokio::sync::mpsc::UnboundedSender<LookupRequest>) {
        self.lock().lookups = Some(tx);
    }

    /// Stores what a caller lookup found for `user_id` and tells that
    /// user's streams (`call.matched`). Nothing happens for a call that is
    /// gone or that the user does not see.
    pub fn set_matches(&self, call_id: &str, user_id: &str, matches: CallerMatches) {
        let now = (self.clock)();
        let mut guard = self.lock();
        let inner: &mut Inner = &mut guard;
        let Some(call) = inner.calls.get_mut(call_id) else { return };
        if !call.visible.iter().any(|u| u == user_id) {
            return;
        }
        call.matches.insert(user_id.to_owned(), matches);
        inner.seq += 1;
        if let Some(hub) = inner.hubs.get(user_id) {
            let event = AgentEvent { kind: AgentEventKind::Matched, seq: inner.seq, at_ms: now, call: Some(call.view_for(user_id)), calls: None, recording_id: None, rating: None, leg: None };
            let _ = hub.send(Arc::new(event));
        }
    }

    /// Stores the sync status of `user_id`'s Task of the call and tells
    /// that user's streams (`call.synced`) when it changed. Nothing happens
    /// for a call no longer shown or that the user does not see.
    pub fn set_sync(&self, call_id: &str, user_id: &str, sync: SyncView) {
        let now = (self.clock)();
        let mut guard = self.lock();
        let inner: &mut Inner = &mut guard;
        let Some(call) = inner.calls.get_mut(call_id).filter(|c| c.shown_at(now)) else { return };
        if !call.visible.iter().any(|u| u == user_id) || call.sync.get(user_id) == Some(&sync) {
            return;
        }
        call.sync.insert(user_id.to_owned(), sync);
        inner.seq += 1;
        if let Some(hub) = inner.hubs.get(user_id) {
            let event = AgentEvent { kind: AgentEventKind::Synced, seq: inner.seq, at_ms: now, call: Some(call.view_for(user_id)), calls: None, recording_id: None, rating: None, leg: None };
            let _ = hub.send(Arc::new(event));
        }
    }

    /// Tells `user_id`'s streams about a browser leg (`webrtc.offer`,
    /// `webrtc.ended`). Not part of snapshots: a page that reconnects asks
    /// for the call again (answer or move to the browser).
    pub fn send_leg(&self, user_id: &str, kind: AgentEventKind, leg: WebRtcLegView) {
        let now = (self.clock)();
        let mut guard = self.lock();
        let inner: &mut Inner = &mut guard;
        inner.seq += 1;
        if let Some(hub) = inner.hubs.get(user_id) {
            let event = AgentEvent { kind, seq: inner.seq, at_ms: now, call: None, calls: None, recording_id: None, rating: None, leg: Some(leg) };
            let _ = hub.send(Arc::new(event));
        }
    }

    /// The call as `user_id` sees it, if the user may see it.
    pub fn view_for(&self, call_id: &str, user_id: &str) -> Option<CallView> {
        let now = (self.clock)();
        let inner = self.lock();
        inner.calls.get(call_id).filter(|c| c.shown_at(now) && c.visible.iter().any(|u| u == user_id)).map(|c| c.view_for(user_id))
    }

    /// The call, while it is live or in its grace period after ending.
    /// Says nothing about who may see it: check with [`LiveCalls::visible`].
    pub fn get(&self, call_id: &str) -> Option<CallView> {
        let now = (self.clock)();
        let inner = self.lock();
        inner.calls.get(call_id).filter(|c| c.shown_at(now)).map(|c| c.view.clone())
    }

    /// Whether `user_id` may see and control call `call_id` (a live call,
    /// or an ended one in its grace period).
    pub fn visible(&self, call_id: &str, user_id: &str) -> bool {
        let now = (self.clock)();
        let inner = self.lock();
        inner.calls.get(call_id).is_some_and(|c| c.shown_at(now) && c.visible.iter().any(|u| u == user_id))
    }

    /// The calls `user_id` may see and control, oldest first.
    pub fn for_user(&self, user_id: &str) -> Vec<CallView> {
        let now = (self.clock)();
        let mut inner = self.lock();
        inner.purge(now);
        inner.visible_to(user_id, now)
    }

    /// The user's calls and every later event for the user, taken
    /// atomically: no event is in both, and none falls between them.
    pub fn subscribe(&self, user_id: &str) -> Subscription {
        let now = (self.clock)();
        let mut inner = self.lock();
        inner.purge(now);
        let snapshot = inner.visible_to(user_id, now);
        let rx = inner.receiver(user_id);
        let seq = inner.seq;
        drop(inner);
        metrics::gauge!("switchboard_api_stream_subscribers").increment(1.0);
        Subscription { snapshot, seq, at_ms: now, events: AgentEvents { live: self.clone(), user_id: user_id.to_owned(), rx } }
    }

    /// Ends every stream (the gateway is shutting down); later
    /// subscriptions end at once after their snapshot.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.hubs.clear();
    }
}

fn party_of(side: Side) -> CallParty {
    match side {
        Side::A => CallParty::Caller,
        Side::B => CallParty::Callee,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::writer::AgentInfo;
    use std::sync::atomic::{AtomicI64, Ordering};

    fn agent(user: &str) -> AgentInfo {
        AgentInfo { user_id: user.into(), device_id: Some(format!("{user}-phone")), display_name: user.to_uppercase(), ..Default::default() }
    }

    fn started(owner: &str, participants: &[&str]) -> CallUpdate {
        CallUpdate::Started {
            sip_call_id: "sip".into(),
            direction: pb::Direction::Inbound,
            from_number: "+12125550123".into(),
            from_display: "Carrier".into(),
            to_number: "+14155550100".into(),
            owner: agent(owner),
            participants: participants.iter().map(|p| p.to_string()).collect(),
            caller_user_id: None,
        }
    }

    fn recording(id: &str, admin_only: bool) -> CallUpdate {
        CallUpdate::RecordingAvailable {
            recording_id: id.into(),
            object_key: format!("{id}.wav"),
            url: format!("http://gw/v1/recordings/{id}"),
            format: "wav".into(),
            duration_ms: 1000,
            size_bytes: 16_044,
            sample_rate_hz: 8000,
            admin_only,
        }
    }

    fn ended(reason: pb::EndReason) -> CallUpdate {
        CallUpdate::Ended { reason, hangup_by: "caller".into(), sip_status: 200, talk_seconds: 1, total_seconds: 2 }
    }

    /// A registry whose reads happen at `now` (moved by storing into the
    /// second value).
    fn clocked(now: i64) -> (LiveCalls, Arc<AtomicI64>) {
        let clock = Arc::new(AtomicI64::new(now));
        let reads = clock.clone();
        (LiveCalls::with_clock(Arc::new(move || reads.load(Ordering::SeqCst))), clock)
    }

    fn live_at(now: i64) -> LiveCalls {
        clocked(now).0
    }

    /// The next event, which must already be there.
    fn next(events: &mut AgentEvents) -> Arc<AgentEvent> {
        match events.rx.try_recv() {
            Ok(e) => e,
            Err(e) => panic!("no event waiting: {e:?}"),
        }
    }

    fn nothing_more(events: &mut AgentEvents) {
        assert!(events.rx.try_recv().is_err(), "no more events");
    }

    const T: i64 = 1_700_000_000_000;

    #[test]
    fn a_call_folds_from_ringing_to_answered_to_ended() {
        let live = live_at(T);
        let mut sub = live.subscribe("bob");
        assert!(sub.snapshot.is_empty());
        live.apply("c1", &started("bob", &[]), T);
        live.apply("c1", &CallUpdate::Ringing { agent: agent("bob") }, T + 10);
        live.apply("c1", &CallUpdate::Answered { agent: agent("bob") }, T + 20);
        live.apply("c1", &CallUpdate::MediaState { held: Some(Side::A), muted: vec![Side::B] }, T + 30);
        live.apply("c1", &CallUpdate::RecordingState { state: RecordingState::Recording, admin_only: false }, T + 40);
        live.apply("c1", &ended(pb::EndReason::Completed), T + 50);
        let kinds: Vec<_> = (0..6).map(|_| next(&mut sub.events)).collect();
        assert_eq!(
            kinds.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
            ["call.started", "call.ringing", "call.answered", "call.media_state", "call.recording_state", "call.ended"]
        );
        assert!(kinds.windows(2).all(|w| w[0].seq < w[1].seq), "seq grows");
        assert!(kinds.iter().all(|e| e.seq > sub.seq), "after the snapshot");
        let answered = kinds[2].call.as_ref().unwrap();
        assert_eq!((answered.state, answered.agent_user_id.as_deref(), answered.answered_at_ms), (CallState::Answered, Some("bob"), Some(T + 20)));
        let media = kinds[3].call.as_ref().unwrap();
        assert_eq!((media.held, media.muted.as_slice()), (Some(CallParty::Caller), &[CallParty::Callee][..]));
        assert_eq!(kinds[4].call.as_ref().unwrap().recording, RecordingStatus::Recording);
        let end = kinds[5].call.as_ref().unwrap();
        assert_eq!(end.state, CallState::Ended);
        assert_eq!((end.ended_at_ms, end.end_reason), (Some(T + 50), Some(CallEndReason::Completed)));
        assert_eq!((end.held, end.muted.len(), end.recording), (None, 0, RecordingStatus::Off), "no media after the end");
        assert_eq!(end.from_display.as_deref(), Some("Carrier"));
        assert_eq!(end.started_at_ms, T);
        nothing_more(&mut sub.events);
        assert_eq!(live.get("c1").map(|c| c.state), Some(CallState::Ended));
    }

    #[test]
    fn only_the_users_of_a_call_see_it_and_the_set_grows() {
        let live = live_at(T);
        let mut carol = live.subscribe("carol");
        let mut dave = live.subscribe("dave");
        let mut erin = live.subscribe("erin");
        // A group call: the owner is its first member, the others ring too.
        live.apply("g", &started("ann", &["bob", "carol"]), T);
        for user in ["ann", "bob", "carol"] {
            assert_eq!(live.for_user(user).len(), 1, "{user} sees the group call");
            assert!(live.visible("g", user));
        }
        assert!(live.for_user("dave").is_empty() && !live.visible("g", "dave"));
        assert_eq!(next(&mut carol.events).kind, AgentEventKind::Started);
        // Voicemail for dave's mailbox, screened by erin (say, a delegate).
        live.apply("g", &CallUpdate::Voicemail { user_id: "dave".into() }, T + 1);
        let e = next(&mut dave.events);
        assert_eq!((e.kind, e.call.as_ref().unwrap().state), (AgentEventKind::Voicemail, CallState::Voicemail));
        live.apply("g", &CallUpdate::Screening { agent: agent("erin"), picked_up: false }, T + 2);
        let e = next(&mut erin.events);
        assert!(e.call.as_ref().unwrap().screening);
        live.apply("g", &CallUpdate::Screening { agent: agent("erin"), picked_up: true }, T + 3);
        live.apply("g", &CallUpdate::Answered { agent: agent("erin") }, T + 3);
        assert_eq!(next(&mut erin.events).kind, AgentEventKind::Screening);
        let e = next(&mut erin.events);
        let call = e.call.as_ref().unwrap();
        assert_eq!((call.state, call.screening, call.agent_user_id.as_deref()), (CallState::Answered, false, Some("erin")));
        // Carol got every event since she rang too, up to the answer by
        // Erin; from then on it is Erin's call, not Carol's or Dave's.
        let carol_kinds: Vec<_> = std::iter::from_fn(|| carol.events.rx.try_recv().ok()).map(|e| e.kind).collect();
        assert_eq!(carol_kinds, [AgentEventKind::Voicemail, AgentEventKind::Screening, AgentEventKind::Screening, AgentEventKind::Answered]);
        for user in ["ann", "bob", "carol", "dave"] {
            assert!(!live.visible("g", user) && live.for_user(user).is_empty(), "{user} no longer sees Erin's call");
        }
        assert!(live.visible("g", "erin"));
        live.apply("g", &CallUpdate::MediaState { held: Some(Side::A), muted: Vec::new() }, T + 3);
        assert_eq!(next(&mut erin.events).kind, AgentEventKind::MediaState);
        nothing_more(&mut carol.events);
        // Another call nobody here takes part in reaches none of them.
        live.apply("other", &started("zed", &[]), T + 4);
        nothing_more(&mut carol.events);
        nothing_more(&mut erin.events);
        assert_eq!(live.for_user("zed").len(), 1);
    }

    #[test]
    fn admin_only_recordings_never_reach_agents() {
        let live = live_at(T);
        live.apply("c", &started("bob", &[]), T);
        live.apply("c", &CallUpdate::Answered { agent: agent("bob") }, T + 1);
        let mut sub = live.subscribe("bob");
        live.apply("c", &CallUpdate::RecordingState { state: RecordingState::Recording, admin_only: true }, T + 2);
        live.apply("c", &recording("secret", true), T + 3);
        live.apply("c", &CallUpdate::Quality { legs: Vec::new() }, T + 3);
        nothing_more(&mut sub.events);
        assert_eq!(live.get("c").unwrap().recording, RecordingStatus::Off);
        live.apply("c", &ended(pb::EndReason::Completed), T + 4);
        live.apply("c", &recording("mine", false), T + 5);
        live.apply("c", &CallUpdate::Rated { user_id: "bob".into(), score: 4, comment: "echo".into() }, T + 6);
        assert_eq!(next(&mut sub.events).kind, AgentEventKind::Ended);
        let e = next(&mut sub.events);
        assert_eq!((e.kind, e.recording_id.as_deref()), (AgentEventKind::RecordingAvailable, Some("mine")));
        assert_eq!(e.call.as_ref().unwrap().recording_ids, ["mine"]);
        let e = next(&mut sub.events);
        assert_eq!((e.kind, e.rating.as_ref().map(|r| r.score)), (AgentEventKind::Rated, Some(4)));
        let json = serde_json::to_string(&*e).unwrap();
        assert!(!json.contains("secret"), "{json}");
    }

    #[test]
    fn ended_calls_stay_for_the_grace_period_then_go() {
        let (live, clock) = clocked(T);
        live.apply("old", &started("bob", &[]), T);
        live.apply("old", &ended(pb::EndReason::NoAnswer), T + 1_000);
        live.apply("new", &started("bob", &[]), T + 2_000);
        assert_eq!(live.for_user("bob").iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["old", "new"], "oldest first");
        // Reads at a later time: the ended call is gone after its grace.
        clock.store(T + 1_000 + ENDED_GRACE_MS - 1, Ordering::SeqCst);
        assert_eq!(live.for_user("bob").len(), 2);
        clock.store(T + 1_000 + ENDED_GRACE_MS, Ordering::SeqCst);
        assert_eq!(live.for_user("bob").iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["new"]);
        assert!(live.get("old").is_none());
        // Purged: late updates of it are dropped, not resurrected.
        live.apply("old", &CallUpdate::Rated { user_id: "bob".into(), score: 3, comment: String::new() }, T + 1_000 + ENDED_GRACE_MS + 5);
        assert!(!live.lock().calls.contains_key("old"));
        // Live calls never expire.
        clock.store(T + 10 * ENDED_GRACE_MS, Ordering::SeqCst);
        assert_eq!(live.for_user("bob").len(), 1);
    }

    #[test]
    fn a_subscription_has_no_gap_and_no_duplicate_with_its_snapshot() {
        let live = live_at(T);
        live.apply("c1", &started("bob", &[]), T);
        live.apply("c1", &CallUpdate::Ringing { agent: agent("bob") }, T + 1);
        let mut sub = live.subscribe("bob");
        assert_eq!(sub.snapshot.len(), 1);
        assert_eq!(sub.seq, 2, "the snapshot includes both events");
        assert_eq!(sub.snapshot_event().kind, AgentEventKind::Snapshot);
        live.apply("c1", &CallUpdate::Answered { agent: agent("bob") }, T + 2);
        let e = next(&mut sub.events);
        assert_eq!((e.kind, e.seq), (AgentEventKind::Answered, 3));
        nothing_more(&mut sub.events);

        // Concurrently: a writer thread folds updates while tabs subscribe;
        // every tab's snapshot plus its events ends at the final state, and
        // each tab's events all come after its snapshot.
        let live = live_at(T);
        let writer = {
            let live = live.clone();
            std::thread::spawn(move || {
                // 200 events: fewer than a channel holds, so nobody lags.
                for i in 0..100 {
                    let id = format!("c{i:03}");
                    live.apply(&id, &started("bob", &[]), T + i);
                    live.apply(&id, &CallUpdate::Answered { agent: agent("bob") }, T + i);
                }
            })
        };
        let mut subs = Vec::new();
        for _ in 0..50 {
            subs.push(live.subscribe("bob"));
            std::thread::yield_now();
        }
        writer.join().unwrap();
        for mut sub in subs {
            let mut calls: HashMap<String, CallView> = sub.snapshot.iter().map(|c| (c.id.clone(), c.clone())).collect();
            let mut last = sub.seq;
            loop {
                match sub.events.rx.try_recv() {
                    Ok(e) => {
                        assert!(e.seq > last, "no duplicate, in order");
                        last = e.seq;
                        let call = e.call.clone().unwrap();
                        if e.kind == AgentEventKind::Started {
                            assert!(!calls.contains_key(&call.id), "a call started after the snapshot is not in it");
                        } else {
                            assert!(calls.contains_key(&call.id), "no gap: the call is known");
                        }
                        calls.insert(call.id.clone(), call);
                    }
                    Err(broadcast::error::TryRecvError::Empty) => break,
                    Err(e) => panic!("{e:?}"),
                }
            }
            assert_eq!(calls.len(), 100);
            assert!(calls.values().all(|c| c.state == CallState::Answered));
        }
    }

    #[tokio::test]
    async fn several_tabs_each_get_every_event() {
        let live = live_at(T);
        let mut tab1 = live.subscribe("bob");
        let mut tab2 = live.subscribe("bob");
        live.apply("c", &started("bob", &[]), T);
        for tab in [&mut tab1, &mut tab2] {
            let e = tab.events.recv().await.unwrap();
            assert_eq!(e.kind, AgentEventKind::Started);
        }
        drop(tab1);
        live.apply("c", &CallUpdate::Ringing { agent: agent("bob") }, T + 1);
        assert_eq!(tab2.events.recv().await.unwrap().kind, AgentEventKind::Ringing);
        // The last tab gone, its user's channel goes on the next event.
        drop(tab2);
        live.apply("c", &CallUpdate::Answered { agent: agent("bob") }, T + 2);
        assert!(live.lock().hubs.is_empty());
    }

    #[tokio::test]
    async fn a_lagging_subscriber_gets_a_snapshot_and_blocks_nobody() {
        let live = live_at(T);
        let mut slow = live.subscribe("bob");
        let mut fast = live.subscribe("bob");
        live.apply("c", &started("bob", &[]), T);
        live.apply("c", &CallUpdate::Answered { agent: agent("bob") }, T);
        assert_eq!(fast.events.recv().await.unwrap().seq, 1);
        assert_eq!(fast.events.recv().await.unwrap().seq, 2);
        // Far more changes than a channel holds, never read by `slow`.
        for i in 0..(CHANNEL_CAPACITY as i64 + 50) {
            let held = (i % 2 == 0).then_some(Side::A);
            live.apply("c", &CallUpdate::MediaState { held, muted: Vec::new() }, T + i);
            assert_eq!(fast.events.recv().await.unwrap().seq, i as u64 + 3, "the fast tab keeps up");
        }
        let e = slow.events.recv().await.unwrap();
        assert_eq!(e.kind, AgentEventKind::Snapshot);
        let calls = e.calls.as_ref().unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].held, None, "the snapshot is the current state (the last change released the hold)");
        assert_eq!(e.seq, CHANNEL_CAPACITY as u64 + 52);
        // From there on it follows again, with nothing stale in between.
        live.apply("c", &ended(pb::EndReason::Completed), T + 1_000);
        let e = slow.events.recv().await.unwrap();
        assert_eq!((e.kind, e.seq), (AgentEventKind::Ended, CHANNEL_CAPACITY as u64 + 53));
    }

    #[tokio::test]
    async fn closing_ends_every_stream() {
        let live = live_at(T);
        let mut sub = live.subscribe("bob");
        live.close();
        assert!(sub.events.recv().await.is_none());
        let mut late = live.subscribe("bob");
        assert!(late.events.recv().await.is_none());
    }

    #[test]
    fn a_transferred_call_moves_to_the_receiving_agents_stream_and_leaves_the_formers() {
        let live = live_at(T);
        let mut bob = live.subscribe("bob");
        let mut carol = live.subscribe("carol");
        live.apply("c", &started("bob", &[]), T);
        live.apply("c", &CallUpdate::Answered { agent: agent("bob") }, T + 1);
        let _ = (next(&mut bob.events), next(&mut bob.events));
        nothing_more(&mut carol.events);
        let transferred =
            CallUpdate::Transferred { from: Some(agent("bob")), to: Some(agent("carol")), kind: pb::TransferKind::Blind, to_number: String::new() };
        live.apply("c", &transferred, T + 2);
        for events in [&mut bob.events, &mut carol.events] {
            let e = next(events);
            assert_eq!(e.kind, AgentEventKind::Transferred);
            assert_eq!(e.call.as_ref().unwrap().agent_user_id.as_deref(), Some("carol"));
        }
        assert!(!live.visible("c", "bob") && live.for_user("bob").is_empty(), "Bob no longer sees it");
        assert!(live.visible("c", "carol"));
        live.apply("c", &ended(pb::EndReason::Completed), T + 3);
        nothing_more(&mut bob.events);
        assert_eq!(next(&mut carol.events).kind, AgentEventKind::Ended);
        // A move keeps the call with its agent.
        live.apply("m", &started("carol", &[]), T + 4);
        let moved = CallUpdate::Transferred { from: Some(agent("carol")), to: Some(agent("carol")), kind: pb::TransferKind::Move, to_number: String::new() };
        live.apply("m", &moved, T + 5);
        assert!(live.visible("m", "carol"));
    }

    #[test]
    fn agents_a_transfer_rings_see_the_call_until_one_takes_it_or_the_transfer_ends() {
        let live = live_at(T);
        let mut bob = live.subscribe("bob");
        let mut carol = live.subscribe("carol");
        let mut dave = live.subscribe("dave");
        live.apply("c", &started("bob", &[]), T);
        live.apply("c", &CallUpdate::Answered { agent: agent("bob") }, T + 1);
        let _ = (next(&mut bob.events), next(&mut bob.events));
        live.apply("c", &CallUpdate::TransferRinging { agents: vec![agent("carol"), agent("dave")] }, T + 2);
        for events in [&mut carol.events, &mut dave.events] {
            let e = next(events);
            assert_eq!(e.kind, AgentEventKind::Ringing, "the call rings for the transfer's targets");
            assert_eq!(e.call.as_ref().unwrap().agent_user_id.as_deref(), Some("bob"), "still Bob's");
        }
        assert!(live.visible("c", "carol") && live.visible("c", "dave"));
        assert_eq!(live.for_user("dave").len(), 1, "in a reconnecting page's snapshot too");
        // Carol takes it: Dave hears so, then no longer sees it; nor does Bob.
        let transferred =
            CallUpdate::Transferred { from: Some(agent("bob")), to: Some(agent("carol")), kind: pb::TransferKind::Blind, to_number: String::new() };
        live.apply("c", &transferred, T + 3);
        assert_eq!(next(&mut dave.events).kind, AgentEventKind::Transferred);
        assert!(!live.visible("c", "dave") && !live.visible("c", "bob"));
        assert!(live.visible("c", "carol"));

        // A transfer nobody takes: its targets are told and lose the call,
        // whose agent keeps it.
        live.apply("d", &started("bob", &[]), T + 4);
        live.apply("d", &CallUpdate::Answered { agent: agent("bob") }, T + 5);
        live.apply("d", &CallUpdate::TransferRinging { agents: vec![agent("dave"), agent("bob")] }, T + 6);
        assert_eq!(next(&mut dave.events).kind, AgentEventKind::Ringing);
        live.apply("d", &CallUpdate::TransferWithdrawn, T + 7);
        let e = next(&mut dave.events);
        assert_eq!(e.kind, AgentEventKind::Withdrawn);
        assert_eq!(e.kind.as_str(), "call.withdrawn");
        assert!(!live.visible("d", "dave"), "Dave no longer sees it");
        assert!(live.visible("d", "bob"), "Bob, also rung (his other devices), keeps his call");
        live.apply("d", &CallUpdate::TransferWithdrawn, T + 8);
        nothing_more(&mut dave.events);
    }

    #[test]
    fn events_serialize_with_their_documented_names() {
        let live = live_at(T);
        let mut sub = live.subscribe("bob");
        live.apply("c", &started("bob", &[]), T);
        let json = serde_json::to_value(&*next(&mut sub.events)).unwrap();
        assert_eq!(json["type"], "call.started");
        assert_eq!(json["call"]["state"], "ringing");
        assert_eq!(json["call"]["direction"], "inbound");
        assert_eq!(json["call"]["recording"], "off");
        assert!(json.get("calls").is_none() && json.get("rating").is_none());
        let snapshot = serde_json::to_value(live.subscribe("bob").snapshot_event()).unwrap();
        assert_eq!(snapshot["type"], "snapshot");
        assert_eq!(snapshot["calls"][0]["id"], "c");
        let back: AgentEvent = serde_json::from_value(snapshot).unwrap();
        assert_eq!(back.calls.unwrap()[0].from_number, "+12125550123");
    }

    #[test]
    fn the_openapi_schemas_carry_the_wire_names() {
        use utoipa::PartialSchema;
        let kinds = serde_json::to_string(&AgentEventKind::schema()).unwrap();
        for name in ["snapshot", "call.ringing", "call.answered", "call.ended", "call.recording_available"] {
            assert!(kinds.contains(&format!("\"{name}\"")), "{name} in {kinds}");
        }
        let view = serde_json::to_string(&CallView::schema()).unwrap();
        for field in ["from_display", "agent_user_id", "recording_ids", "end_reason"] {
            assert!(view.contains(field), "{field} in {view}");
        }
        let event = serde_json::to_string(&AgentEvent::schema()).unwrap();
        assert!(event.contains("\"type\"") && event.contains("\"seq\""), "{event}");
    }
}
