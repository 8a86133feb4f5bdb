//! The call manager: drives every [`Call`] state machine with real inputs.
//!
//! It owns the map from SIP Call-IDs to calls, receives parsed messages from
//! the transports, routes new calls through the directory, allocates media,
//! executes the state machines' actions, fires their timers and hands every
//! state change to the call's writer. Slow work (database lookups, port
//! binding, recording upload) runs in spawned tasks that report back through
//! the manager's input channel, so one slow call never stalls the others.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use switchboard_proto::v1 as pb;
use switchboard_store::{now_ms, Database};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use super::b2bua::{Action, Call, ConsultPorts, EndReason, HangupBy, Leg, LegMedia, Local, MediaPorts, Presentation, Target, ALLOW};
use super::control::{Command, ControlError, Handover, MediaCommand, MediaState, Origination, ParkedCall};
use super::routing::{AgentDeviceError, CallerInfo, Origin, PlannedFork, RouteOutcome, Router, Started, TransferPlan, TransferTo, TransferredCall};
use super::trunks::Trunks;
use super::live::LiveCalls;
use super::writer::{AgentInfo, CallUpdate, CallWriter, EventWriter};
use crate::directory::Directory;
use crate::media::ports::{PortAllocator, PortPair};
use crate::media::bridge::LegCodec;
use crate::media::encode::RecordingFormat;
use crate::media::player::Prompt;
use crate::media::relay::{Mailbox, MediaContext, MediaNotice, MediaRelay, NoticeKind, RecordCommand, RecordingState, Side};
use crate::media::voicemail::VoicemailSettings;
use crate::recordings::RecordingSink;
use crate::registrations::Registrations;
use crate::sip::digest::Credentials;
use crate::sip::guard::{AuthGuard, FailureVerdict};
use crate::sip::registrar::{AuthOutcome, Registrar};
use crate::sip::headers::{NameAddr, SipUri};
use crate::sip::response::{make_response, validate_request};
use crate::sip::ratelimit::{RateLimiter, RatePolicy};
use crate::sip::transaction::{Output as TxOutput, Timers, TransactionLayer};
use crate::sip::transport::Inbound;
use crate::sip::{Destination, SipMessage, Transport};

/// What the manager needs from the rest of the gateway.
pub struct ManagerDeps {
    pub transport: Transport,
    pub directory: Directory,
    pub ports: PortAllocator,
    /// IP written into SDP.
    pub media_ip: IpAddr,
    pub local: Local,
    pub db: Database,
    pub recordings: RecordingSink,
    pub record_all: bool,
    pub recording_format: RecordingFormat,
    /// What a held party hears.
    pub hold_music: Arc<Prompt>,
    /// How Opus is encoded towards browsers (`media.opus_complexity`).
    pub opus: crate::media::codec::OpusSettings,
    /// Where calls' media runs.
    pub media_threads: crate::media::threads::MediaThreads,
    /// Voicemail for unanswered calls to a user; `None` turns it off.
    pub voicemail: Option<VoicemailDeps>,
    /// REGISTER handling and the registrations it keeps.
    pub registrar: Arc<Registrar>,
    pub registrations: Registrations,
    /// Configured trunks: trusted inbound sources and the outbound route.
    pub trunks: Trunks,
    /// Per-source limits on requests from anything but a trunk.
    pub rate_limit: RatePolicy,
    /// How often trunks get an OPTIONS keep-alive; zero turns it off.
    pub trunk_options_interval: Duration,
    /// Brute-force bans of digest authentication, per source address.
    pub guard: Arc<std::sync::Mutex<AuthGuard>>,
    pub ring_timeout: Duration,
    /// How long a parked call waits before it rings its parker again.
    pub park_timeout: Duration,
    /// RFC 3261 timers for transactions and the calls' own retransmissions.
    pub timers: Timers,
    /// Notified after each committed call event.
    pub committed: Arc<Notify>,
    /// Folds every committed call update for the agents' live view.
    pub live: LiveCalls,
    pub shutdown: CancellationToken,
}

/// How voicemail works.
pub struct VoicemailDeps {
    pub settings: VoicemailSettings,
    /// The greeting of users without their own.
    pub default_greeting: Arc<Prompt>,
    /// Users' own greetings: `<dir>/<user id>.wav`.
    pub greetings_dir: std::path::PathBuf,
}

impl VoicemailDeps {
    /// The user's own greeting if there is a readable one, else the default.
    fn greeting(&self, user_id: &str) -> Arc<Prompt> {
        let path = self.greetings_dir.join(format!("{user_id}.wav"));
        if !path.exists() {
            return self.default_greeting.clone();
        }
        match Prompt::load(&path) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                warn!(user_id, error = %e, "the user's voicemail greeting cannot be played; using the default");
                self.default_greeting.clone()
            }
        }
    }
}

/// Results of spawned work, fed back into the manager loop.
enum Work {
    Routed { id: String, outcome: RouteOutcome },
    /// A response computed off the loop (REGISTER), sent through the
    /// transaction layer.
    Respond { dest: Destination, msg: SipMessage },
    /// A trunk's next hop resolved: send it an OPTIONS keep-alive.
    Probe { trunk: String, dest: Destination },
    /// The outcome of authenticating a device's INVITE.
    InviteAuthed { invite: SipMessage, source: Destination, outcome: InviteAuth },
    /// Who rings for a transfer or move of call `id` (and, for a warm
    /// transfer, the consultation's two port pairs).
    TransferRouted { id: String, plan: Result<(TransferPlan, Option<(PortPair, PortPair)>), String> },
    /// A parked call's wait is over: ring its parker back (if it is still
    /// parked as it was when the wait began, `generation`).
    ParkExpired { id: String, generation: u64 },
    /// A call an agent places from the softphone: its devices, and the far
    /// end routed as if one of them had dialled it.
    Originated {
        id: String,
        request: Origination,
        devices: Result<Vec<PlannedFork>, AgentDeviceError>,
        outcome: Option<RouteOutcome>,
        reply: tokio::sync::oneshot::Sender<Result<String, ControlError>>,
    },
    /// The device an agent answers a ringing call on (from the softphone).
    AnswerRouted { id: String, devices: Result<Vec<PlannedFork>, AgentDeviceError>, reply: tokio::sync::oneshot::Sender<Result<(), ControlError>> },
}

/// What authenticating a device's INVITE decided.
enum InviteAuth {
    Device(String),
    /// Challenge or refuse with this response.
    Respond(SipMessage),
    /// A banned source: no answer at all.
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegKind {
    Caller,
    Callee,
}

struct Entry {
    call: Call,
    writer: Option<CallWriter>,
    relay: Option<MediaRelay>,
    agent: Option<AgentInfo>,
    /// The agent who takes the call if each fork answers, in fork order.
    fork_agents: Vec<Option<AgentInfo>>,
    started_at: Instant,
    started_at_ms: i64,
    answered_at: Option<Instant>,
    /// The deadline last queued in the manager's timer heap.
    scheduled: Option<std::time::Instant>,
    from_number: String,
    to_number: String,
    media: MediaStatus,
    /// The user whose voicemail takes the call if nobody answers.
    mailbox: Option<String>,
    /// An administrator's policy records this call (admin-only).
    admin_recording: bool,
    direction: pb::Direction,
    from_display: String,
    /// A transfer or move being routed or ringing.
    transfer: Option<PendingTransfer>,
    /// A warm transfer's consultation: its ports until the target answers,
    /// then its own bridge (agent on side A, target on side B).
    consult_ports: Option<(PortPair, PortPair)>,
    consult_relay: Option<MediaRelay>,
    /// Parked (F4): its slot, who parked it, and the wait in progress.
    park: Option<ParkState>,
    /// A call an agent placed from the softphone (F3): what is still to do.
    placed: Option<Placed>,
}

/// A call the gateway originated for an agent: while the agent's devices
/// ring, the far end and the media ports wait here.
struct Placed {
    /// The far end's forks and presentation, placed when the agent's phone answers.
    far_end: Option<(Vec<Target>, Presentation)>,
    /// Leg A and leg B's ports; the relay starts once the agent's RTP address is known.
    ports: Option<(PortPair, PortPair)>,
    agent_answered: bool,
    far_end_answered: bool,
}

/// A call in a park slot.
struct ParkState {
    slot: u32,
    by: Option<AgentInfo>,
    at_ms: i64,
    /// Which wait for the park timeout is the current one.
    generation: u64,
}

/// Puts the outside party of the call on hold (music) or takes it off, and
/// records the change when there is one.
fn hold_customer(e: &mut Entry, on: bool) {
    let customer = super::control::customer_side(e.direction == pb::Direction::Outbound);
    let held = if on { Some(customer) } else { e.media.held.filter(|h| *h != customer) };
    if held == e.media.held {
        return;
    }
    if let Some(r) = &e.relay {
        r.hold(customer, on);
    }
    e.media.held = held;
    if let Some(w) = &e.writer {
        w.record(e.media.event());
    }
}

/// A handover of the agent's side in progress (decision 0014).
struct PendingTransfer {
    handover: Handover,
    /// The agent's leg, the one replaced.
    leg: Leg,
    /// The agent who has the call until the new party answers.
    from: Option<AgentInfo>,
    /// The number transferred to, for an outside number.
    to_number: String,
    reply: Option<tokio::sync::oneshot::Sender<Result<Option<AgentInfo>, ControlError>>>,
}

impl PendingTransfer {
    fn kind(&self) -> pb::TransferKind {
        match self.handover {
            Handover::Move { .. } => pb::TransferKind::Move,
            Handover::Blind(_) => pb::TransferKind::Blind,
            Handover::Warm(_) => pb::TransferKind::Warm,
            Handover::Unpark(_) => pb::TransferKind::Park,
        }
    }

    /// Answers the API and counts the outcome.
    fn finish(mut self, call_id: &str, result: Result<Option<AgentInfo>, ControlError>) {
        let label = match &result {
            Ok(_) => "completed",
            Err(ControlError::TransferFailed { status: 480 | 408, .. }) => "no_answer",
            Err(ControlError::TransferFailed { status: 486 | 600 | 603, .. }) => "busy",
            Err(ControlError::TransferFailed { status: 487, .. }) => "cancelled",
            Err(ControlError::TransferTarget(_)) => "refused",
            Err(_) => "failed",
        };
        metrics::counter!("switchboard_call_transfers_total", "kind" => self.handover.kind_label(), "result" => label).increment(1);
        match &result {
            Ok(to) => info!(call_id, kind = self.handover.kind_label(), to = to.as_ref().map_or("outside number", |a| a.user_id.as_str()), "call handed over"),
            Err(e) => info!(call_id, kind = self.handover.kind_label(), error = %e, "call not handed over"),
        }
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(result);
        }
    }
}

/// What the call's bridge is doing, as far as events and the API tell.
#[derive(Debug, Clone, Copy)]
struct MediaStatus {
    held: Option<Side>,
    muted: [bool; 2],
    recording: RecordingState,
    admin_only: bool,
}

impl Default for MediaStatus {
    fn default() -> Self {
        MediaStatus { held: None, muted: [false; 2], recording: RecordingState::Off, admin_only: false }
    }
}

impl MediaStatus {
    fn state(&self) -> MediaState {
        MediaState { held: self.held, muted: self.muted, recording: self.recording }
    }

    fn event(&self) -> CallUpdate {
        let muted = [Side::A, Side::B].into_iter().filter(|s| self.muted[*s as usize]).collect();
        CallUpdate::MediaState { held: self.held, muted }
    }
}

/// Runs until shutdown; every live call is hung up on the way out.
pub(crate) async fn run(deps: ManagerDeps, mut inbound: mpsc::Receiver<Inbound>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let (work_tx, mut work_rx) = mpsc::unbounded_channel::<Work>();
    let (notices, mut notices_rx) = mpsc::unbounded_channel::<MediaNotice>();
    let mut m = Manager {
        tx: TransactionLayer::new(deps.timers),
        events: EventWriter::spawn(deps.db.clone(), deps.committed.clone(), Some(deps.live.clone())),
        router: Router {
            directory: deps.directory.clone(),
            registrations: deps.registrations.clone(),
            trunks: deps.trunks.clone(),
            ports: deps.ports.clone(),
        },
        limiter: RateLimiter::new(deps.rate_limit),
        probes: HashMap::new(),
        trunk_up: HashMap::new(),
        park_slots: std::collections::BTreeMap::new(),
        park_generation: 0,
        deps,
        calls: HashMap::new(),
        by_sip: HashMap::new(),
        call_timers: BinaryHeap::new(),
        work: work_tx,
        notices,
    };
    let probing = !m.deps.trunk_options_interval.is_zero();
    let mut probe_tick = tokio::time::interval(m.deps.trunk_options_interval.max(Duration::from_secs(1)));
    probe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = m.next_deadline();
        tokio::select! {
            _ = m.deps.shutdown.cancelled() => break,
            _ = probe_tick.tick(), if probing => m.probe_trunks(),
            msg = inbound.recv() => match msg {
                Some(i) => m.on_sip(i).await,
                None => break,
            },
            Some(w) = work_rx.recv() => m.on_work(w).await,
            Some(c) = commands.recv() => m.on_command(c).await,
            Some(n) = notices_rx.recv() => m.on_notice(n).await,
            _ = sleep_until(deadline) => m.on_timers().await,
        }
    }
    let ids: Vec<String> = m.calls.keys().cloned().collect();
    for id in ids {
        if let Some(e) = m.calls.get_mut(&id) {
            let actions = e.call.terminate(std::time::Instant::now());
            m.execute(&id, actions).await;
        }
    }
    info!("call manager stopped");
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

struct Manager {
    deps: ManagerDeps,
    tx: TransactionLayer,
    /// Every call's state changes and events, group-committed.
    events: EventWriter,
    router: Router,
    limiter: RateLimiter,
    /// OPTIONS keep-alives in flight: SIP Call-ID → trunk name.
    probes: HashMap<String, String>,
    /// Last known reachability per trunk.
    trunk_up: HashMap<String, bool>,
    /// Park slots in use (F4): slot → call id.
    park_slots: std::collections::BTreeMap<u32, String>,
    /// The last park wait started, to tell a current one from a stale one.
    park_generation: u64,
    calls: HashMap<String, Entry>,
    by_sip: HashMap<String, (String, LegKind)>,
    /// Calls' deadlines, possibly stale (checked when due).
    call_timers: BinaryHeap<Reverse<(std::time::Instant, String)>>,
    work: mpsc::UnboundedSender<Work>,
    notices: mpsc::UnboundedSender<MediaNotice>,
}

impl Manager {
    async fn on_notice(&mut self, notice: MediaNotice) {
        match notice.kind {
            NoticeKind::VoicemailOver => {
                let now = std::time::Instant::now();
                let Some(e) = self.calls.get_mut(&notice.call_id) else { return };
                let actions = e.call.hang_up(now);
                self.execute(&notice.call_id, actions).await;
            }
        }
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        let now_std = std::time::Instant::now();
        let now = Instant::now();
        let call = self.call_timers.peek().map(|Reverse((d, _))| *d);
        [call, self.tx.next_deadline()]
            .into_iter()
            .flatten()
            .min()
            .map(|d| now + d.saturating_duration_since(now_std))
    }

    /// Sends through the transaction layer.
    async fn send(&mut self, dest: Destination, msg: SipMessage) {
        let now = std::time::Instant::now();
        for o in self.tx.send(dest, msg, now) {
            match o {
                TxOutput::Send(d, m) => self.deps.transport.send(d, &m).await,
                TxOutput::Resend(d, b) => self.deps.transport.send_bytes(d, &b).await,
                TxOutput::Deliver(..) => {}
            }
        }
    }

    async fn on_sip(&mut self, Inbound { msg, source }: Inbound) {
        let now = std::time::Instant::now();
        if self.deps.guard.lock().is_ok_and(|g| g.is_banned(source.addr().ip(), unix_now())) {
            metrics::counter!("switchboard_sip_messages_dropped_total", "reason" => "banned source").increment(1);
            return;
        }
        if msg.is_request() {
            let in_call = msg.header("Call-ID").is_some_and(|c| self.by_sip.contains_key(c));
            let ip = source.addr().ip();
            if !in_call && self.deps.trunks.inbound(ip).is_none() && !self.limiter.allow(ip, now) {
                metrics::counter!("switchboard_sip_messages_dropped_total", "reason" => "rate limited").increment(1);
                debug!(peer = %source.addr(), "request over the per-source rate limit dropped");
                return;
            }
            let method = msg.method().unwrap_or("").to_owned();
            if let Err(rejection) = validate_request(&msg) {
                metrics::counter!("switchboard_sip_requests_rejected_total", "code" => rejection.code.to_string()).increment(1);
                if method != "ACK" {
                    let mut r = make_response(&msg, rejection.code, Some("sb-rejected"), &self.deps.local.user_agent);
                    if let crate::sip::StartLine::Response { reason, .. } = &mut r.start {
                        *reason = rejection.reason.clone();
                    }
                    self.deps.transport.send(source, &r).await;
                }
                debug!(peer = %source.addr(), code = rejection.code, reason = rejection.reason, "request rejected");
                return;
            }
        }
        let before = self.tx.stats();
        let outputs = self.tx.receive(msg, source, now);
        let after = self.tx.stats();
        if after.absorbed > before.absorbed {
            metrics::counter!("switchboard_sip_retransmissions_absorbed_total").increment(after.absorbed - before.absorbed);
        }
        if after.stray_responses > before.stray_responses {
            metrics::counter!("switchboard_sip_messages_dropped_total", "reason" => "stray response").increment(1);
        }
        self.run_outputs(outputs).await;
    }

    async fn run_outputs(&mut self, outputs: Vec<TxOutput>) {
        for o in outputs {
            match o {
                TxOutput::Send(d, m) => self.deps.transport.send(d, &m).await,
                TxOutput::Resend(d, b) => self.deps.transport.send_bytes(d, &b).await,
                TxOutput::Deliver(m, src) => self.dispatch(m, src).await,
            }
        }
    }

    /// A message the transaction layer delivered: one copy of a new request
    /// or of a response a call must see.
    async fn dispatch(&mut self, msg: SipMessage, source: Destination) {
        let now = std::time::Instant::now();
        let sip_call_id = msg.header("Call-ID").unwrap_or("").to_owned();
        if !msg.is_request() {
            if let Some(trunk) = self.probes.remove(&sip_call_id) {
                // Any answer means the trunk is there; a 408 is the
                // transaction layer's timeout.
                self.trunk_status(&trunk, msg.status() != Some(408));
                return;
            }
            match self.by_sip.get(&sip_call_id).cloned() {
                Some((id, leg)) => {
                    let actions = match self.calls.get_mut(&id) {
                        Some(e) if leg == LegKind::Callee => e.call.on_callee_message(msg, source, now),
                        Some(e) => e.call.on_caller_response(msg, now),
                        None => return,
                    };
                    self.execute(&id, actions).await;
                }
                None => {
                    debug!(sip_call_id, "response for no known call dropped");
                    metrics::counter!("switchboard_sip_messages_dropped_total", "reason" => "stray response").increment(1);
                }
            }
            return;
        }
        let method = msg.method().unwrap_or("").to_owned();
        metrics::counter!("switchboard_sip_requests_received_total", "method" => method.clone()).increment(1);
        if let Some((id, leg)) = self.by_sip.get(&sip_call_id).cloned() {
            let actions = match self.calls.get_mut(&id) {
                Some(e) => match leg {
                    LegKind::Caller => e.call.on_caller_request(msg, source, now),
                    LegKind::Callee => e.call.on_callee_message(msg, source, now),
                },
                None => return,
            };
            self.execute(&id, actions).await;
            return;
        }
        let to_tag = msg.header("To").and_then(NameAddr::parse).and_then(|n| n.tag().map(str::to_owned));
        let ua = self.deps.local.user_agent.clone();
        match method.as_str() {
            "INVITE" if to_tag.is_none() => self.new_invite(msg, source).await,
            "REGISTER" => {
                let (registrar, registrations, guard, work) = (
                    self.deps.registrar.clone(),
                    self.deps.registrations.clone(),
                    self.deps.guard.clone(),
                    self.work.clone(),
                );
                tokio::spawn(async move {
                    if let Some(response) = register(&registrar, &registrations, &guard, &msg, source).await {
                        let _ = work.send(Work::Respond { dest: source, msg: response });
                    }
                });
            }
            "ACK" => {}
            "OPTIONS" => {
                let mut ok = make_response(&msg, 200, Some("sb-options"), &ua);
                ok.push_header("Allow", ALLOW);
                self.send(source, ok).await;
            }
            "CANCEL" => {
                // §9.2: a CANCEL whose INVITE is unknown (or already answered
                // and gone) gets 481.
                self.send(source, make_response(&msg, 481, Some("sb-unknown"), &ua)).await;
            }
            "BYE" | "INVITE" | "UPDATE" | "INFO" => {
                self.send(source, make_response(&msg, 481, Some("sb-unknown"), &ua)).await;
            }
            _ => {
                let mut r = make_response(&msg, 501, Some("sb-unknown"), &ua);
                r.push_header("Allow", ALLOW);
                self.send(source, r).await;
            }
        }
    }

    /// An initial INVITE: a call from a trunk (by source address) or from a
    /// device that proves who it is. Nothing else reaches the trunk or the
    /// agents (no toll fraud, no spam calls from the open internet).
    async fn new_invite(&mut self, invite: SipMessage, source: Destination) {
        if let Some(trunk) = self.deps.trunks.inbound(source.addr().ip()) {
            let origin = Origin::Trunk(trunk.name().to_owned());
            self.new_call(invite, source, origin).await;
            return;
        }
        let (registrar, registrations, guard, work) =
            (self.deps.registrar.clone(), self.deps.registrations.clone(), self.deps.guard.clone(), self.work.clone());
        tokio::spawn(async move {
            let outcome = authenticate_invite(&registrar, &registrations, &guard, &invite, source).await;
            let _ = work.send(Work::InviteAuthed { invite, source, outcome });
        });
    }

    async fn new_call(&mut self, invite: SipMessage, source: Destination, origin: Origin) {
        let id = uuid::Uuid::now_v7().to_string();
        let sip_call_id = invite.header("Call-ID").unwrap_or("").to_owned();
        let dialled = invite
            .request_uri()
            .and_then(|u| SipUri::parse(u).and_then(|u| u.user).or_else(|| u.strip_prefix("tel:").map(|t| t.split(';').next().unwrap_or("").to_owned())))
            .unwrap_or_default();
        let from = invite.header("From").and_then(NameAddr::parse);
        let from_number = from.as_ref().and_then(|f| f.user()).unwrap_or_else(|| "anonymous".into());
        let call = match Call::new(id.clone(), invite.clone(), source, self.deps.local.clone(), self.deps.timers, self.deps.ring_timeout) {
            Ok(c) => c,
            Err(e) => {
                let mut r = make_response(&invite, e.code, Some("sb-rejected"), &self.deps.local.user_agent);
                if let crate::sip::StartLine::Response { reason, .. } = &mut r.start {
                    *reason = e.reason.clone();
                }
                metrics::counter!("switchboard_calls_total", "outcome" => "rejected").increment(1);
                self.send(source, r).await;
                return;
            }
        };
        info!(call_id = %id, sip_call_id, from = %from_number, to = %dialled, peer = %source.addr(), "incoming call");
        let trying: Vec<Action> = call.trying().into_iter().collect();
        self.by_sip.insert(sip_call_id, (id.clone(), LegKind::Caller));
        self.calls.insert(
            id.clone(),
            Entry {
                call,
                writer: None,
                relay: None,
                agent: None,
                fork_agents: Vec::new(),
                started_at: Instant::now(),
                started_at_ms: now_ms(),
                answered_at: None,
                scheduled: None,
                from_number,
                to_number: dialled.clone(),
                media: MediaStatus::default(),
                mailbox: None,
                admin_recording: false,
                direction: pb::Direction::Unspecified,
                from_display: String::new(),
                transfer: None,
                consult_ports: None,
                consult_relay: None,
                park: None,
                placed: None,
            },
        );
        metrics::gauge!("switchboard_calls_active").set(self.calls.len() as f64);
        self.execute(&id, trying).await;
        let router = self.router.clone();
        let caller = CallerInfo::from_invite(&invite);
        let work = self.work.clone();
        let span = info_span!("route", call_id = %id, origin = ?origin);
        tokio::spawn(
            async move {
                let outcome = router.route(&origin, &dialled, &caller, unix_now()).await;
                let _ = work.send(Work::Routed { id, outcome });
            }
            .instrument(span),
        );
    }

    async fn on_work(&mut self, work: Work) {
        let (id, outcome) = match work {
            Work::Routed { id, outcome } => (id, outcome),
            Work::Respond { dest, msg } => {
                self.send(dest, msg).await;
                return;
            }
            Work::Probe { trunk, dest } => {
                self.send_probe(trunk, dest).await;
                return;
            }
            Work::InviteAuthed { invite, source, outcome } => {
                match outcome {
                    InviteAuth::Device(device) => self.new_call(invite, source, Origin::Device(device)).await,
                    InviteAuth::Respond(r) => self.send(source, r).await,
                    InviteAuth::Drop => {}
                }
                return;
            }
            Work::TransferRouted { id, plan } => {
                self.transfer_routed(&id, plan).await;
                return;
            }
            Work::ParkExpired { id, generation } => {
                self.park_expired(&id, generation);
                return;
            }
            Work::Originated { id, request, devices, outcome, reply } => {
                self.originated(id, request, devices, outcome, reply).await;
                return;
            }
            Work::AnswerRouted { id, devices, reply } => {
                self.answer_routed(&id, devices, reply).await;
                return;
            }
        };
        let now = std::time::Instant::now();
        let Some(entry) = self.calls.get_mut(&id) else { return };
        if entry.call.has_ended() {
            return; // the caller gave up while routing; ports drop here
        }
        let actions = match outcome {
            RouteOutcome::Refused { code, why } => {
                info!(call_id = %id, to = %entry.to_number, code, why, "call refused");
                let label = if code == 404 { "not_found" } else { "refused" };
                metrics::counter!("switchboard_calls_total", "outcome" => label).increment(1);
                entry.call.reject(code, EndReason::Failed, now)
            }
            RouteOutcome::Unreachable { started } => {
                info!(call_id = %id, user = %started.owner.user_id, "nothing of the callee's can ring");
                metrics::counter!("switchboard_calls_total", "outcome" => "unreachable").increment(1);
                self.begin_events(&id, started);
                let entry = self.calls.get_mut(&id).expect("entry exists");
                entry.call.reject(480, EndReason::NoAnswer, now)
            }
            RouteOutcome::Ready(plan) => {
                let super::routing::Plan { mailbox, started, presentation, forks, a, b, admin_recording } = *plan;
                // The recording's left channel is the outside party.
                let customer = super::control::customer_side(started.direction == pb::Direction::Outbound);
                let started_direction = started.direction;
                let caller_rtp = entry.call.caller_offer().rtp;
                let (agents, targets): (Vec<Option<AgentInfo>>, Vec<Target>) = forks.into_iter().map(|f| (f.agent, f.target)).unzip();
                for t in &targets {
                    if let (Some(name), Destination::Tls(addr)) = (&t.server_name, t.dest) {
                        if let Err(e) = self.deps.transport.set_tls_server_name(addr, name) {
                            warn!(call_id = %id, name, error = %e, "not a valid TLS server name; the device's certificate is checked by address");
                        }
                    }
                }
                info!(call_id = %id, direction = ?started.direction, forks = targets.len(), "ringing");
                entry.fork_agents = agents.clone();
                self.begin_events(&id, started);
                let entry = self.calls.get_mut(&id).expect("entry exists");
                let ctx = MediaContext {
                    call_id: id.clone(),
                    started_at_ms: entry.started_at_ms,
                    customer,
                    hold_music: self.deps.hold_music.clone(),
                    opus: self.deps.opus,
                    recordings: self.deps.recordings.clone(),
                    recording_format: self.deps.recording_format,
                    writer: entry.writer.clone(),
                    notices: self.notices.clone(),
                    threads: self.deps.media_threads.clone(),
                };
                // A call for one user (not a group, not out through a trunk)
                // goes to that user's voicemail when nobody answers.
                let mailbox = mailbox.filter(|_| self.deps.voicemail.is_some() && started_direction != pb::Direction::Outbound);
                entry.call.set_voicemail(mailbox.is_some());
                entry.mailbox = mailbox;
                entry.direction = started_direction;
                entry.admin_recording = admin_recording;
                let relay = MediaRelay::start(ctx, a, b, caller_rtp);
                let media = MediaPorts { ip: self.deps.media_ip, a_port: relay.a_port, b_port: relay.b_port };
                entry.relay = Some(relay);
                let actions = entry.call.place(targets, &presentation, media, now);
                let fork_ids: Vec<String> = entry.call.fork_call_ids().map(str::to_owned).collect();
                for f in fork_ids {
                    self.by_sip.insert(f, (id.clone(), LegKind::Callee));
                }
                actions
            }
        };
        self.execute(&id, actions).await;
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Media { call_id, command, reply } => {
                let result = self.media_command(&call_id, command).await;
                let _ = reply.send(result);
            }
            Command::Screen { call_id, pick_up, reply } => {
                let now = std::time::Instant::now();
                let actions = match self.calls.get_mut(&call_id) {
                    None => Err(ControlError::NoSuchCall(call_id.clone())),
                    Some(e) if !e.call.in_voicemail() => Err(ControlError::NotScreening(call_id.clone())),
                    Some(e) if pick_up => Ok(e.call.pick_up(now)),
                    Some(e) => {
                        let actions = e.call.screen(now);
                        if !actions.is_empty() {
                            // The screening forks ring the same targets, in the
                            // same order: the same agents take them.
                            let placed: Vec<Option<AgentInfo>> = e.fork_agents.clone();
                            let first_new = e.call.fork_call_ids().count() - placed.len();
                            e.fork_agents.resize(first_new, None);
                            e.fork_agents.extend(placed);
                        }
                        Ok(actions)
                    }
                };
                match actions {
                    Ok(actions) if pick_up && actions.is_empty() => {
                        let _ = reply.send(Err(ControlError::NotScreening(call_id)));
                    }
                    Ok(actions) => {
                        info!(call_id = %call_id, pick_up, "voicemail screening");
                        self.execute(&call_id, actions).await;
                        if let Some(e) = self.calls.get(&call_id) {
                            let ids: Vec<String> = e.call.fork_call_ids().map(str::to_owned).collect();
                            for f in ids {
                                self.by_sip.entry(f).or_insert_with(|| (call_id.clone(), LegKind::Callee));
                            }
                        }
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Rate { call_id, user_id, score, comment, reply } => {
                self.record_after(call_id, reply, move |call_id| {
                    info!(call_id, user_id, score, "call rated");
                    metrics::histogram!("switchboard_call_rating").record(score as f64);
                    (CallUpdate::Rated { user_id, score, comment }, ())
                });
            }
            Command::Note { call_id, user_id, text, reply } => {
                self.record_after(call_id, reply, move |call_id| {
                    let note_id = uuid::Uuid::now_v7().to_string();
                    // The text is the agent's; it is not logged.
                    info!(call_id, user_id, note_id, chars = text.chars().count(), "call note");
                    metrics::counter!("switchboard_call_notes_total").increment(1);
                    (CallUpdate::Note { note_id: note_id.clone(), user_id, text }, note_id)
                });
            }
            Command::Annotate { call_id, update, reply } => {
                self.record_after(call_id, reply, move |call_id| {
                    let kind = match &update {
                        CallUpdate::Related { .. } => "related",
                        _ => "assigned",
                    };
                    info!(call_id, kind, "call annotated with Salesforce context");
                    metrics::counter!("switchboard_call_annotations_total", "kind" => kind).increment(1);
                    (update, ())
                });
            }
            Command::Decline { call_id, reply } => {
                let result = self
                    .call_action(&call_id, "declined by the agent", |call, now| {
                        if call.is_ringing() && !call.is_originated() {
                            Ok(call.decline(now))
                        } else {
                            Err(ControlError::NotRinging(call_id.clone()))
                        }
                    })
                    .await;
                let _ = reply.send(result);
            }
            Command::Originate { request, reply } => self.originate(request, reply),
            Command::Answer { call_id, user_id, device_id, reply } => self.answer(call_id, user_id, device_id, reply),
            Command::HangUp { call_id, reply } => {
                let result = self
                    .call_action(&call_id, "hang-up requested", |call, now| {
                        // An agent's own call can be given up while it rings.
                        if (call.is_answered() || call.is_originated()) && !call.has_ended() {
                            Ok(call.hang_up(now))
                        } else {
                            Err(ControlError::NotAnswered(call_id.clone()))
                        }
                    })
                    .await;
                let _ = reply.send(result);
            }
            Command::Transfer { call_id, handover, reply } => self.transfer(call_id, handover, reply),
            Command::Park { call_id, reply } => self.park(call_id, reply).await,
            Command::Retrieve { slot, user_id, reply } => self.retrieve(slot, user_id, reply),
            Command::ListParked { reply } => {
                let _ = reply.send(self.parked_calls());
            }
            Command::CancelTransfer { call_id, reply } => {
                let now = std::time::Instant::now();
                let result = match self.calls.get_mut(&call_id) {
                    None => Err(ControlError::NoSuchCall(call_id.clone())),
                    Some(e) if e.transfer.is_none() => Err(ControlError::NoTransfer(call_id.clone())),
                    Some(e) if e.call.replacing().is_some() => Ok(e.call.cancel_replacement(now)),
                    Some(e) => {
                        // Still being routed: nothing rings yet.
                        if let Some(t) = e.transfer.take() {
                            t.finish(&call_id, Err(ControlError::TransferFailed { call_id: call_id.clone(), status: 487 }));
                        }
                        Ok(Vec::new())
                    }
                };
                match result {
                    Ok(actions) => {
                        info!(call_id = %call_id, "transfer cancelled by the agent");
                        self.execute(&call_id, actions).await;
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::CompleteTransfer { call_id, reply } => {
                let now = std::time::Instant::now();
                let Some(e) = self.calls.get_mut(&call_id) else {
                    let _ = reply.send(Err(ControlError::NoSuchCall(call_id)));
                    return;
                };
                if !e.call.consulting() || e.transfer.is_none() {
                    let _ = reply.send(Err(ControlError::NotConsulting(call_id)));
                    return;
                }
                let actions = e.call.complete_consult(now).unwrap_or_default();
                if let Some(t) = e.transfer.as_mut() {
                    // The handover's outcome answers this request.
                    t.reply = Some(reply);
                }
                info!(call_id = %call_id, "warm transfer completed by the agent");
                self.execute(&call_id, actions).await;
            }
            Command::Hold { call_id, leg, on, reply } => {
                let what = format!("hold requested ({leg:?}, on: {on})");
                let result = self
                    .call_action(&call_id, &what, |call, now| {
                        if call.is_answered() {
                            Ok(call.hold(leg, on, now))
                        } else {
                            Err(ControlError::NotAnswered(call_id.clone()))
                        }
                    })
                    .await;
                let _ = reply.send(result);
            }
        }
    }

    /// Runs a command on a live call's state machine and executes what it
    /// decides; `act` refuses with the reason when the call is not in a
    /// state for it.
    async fn call_action(
        &mut self,
        call_id: &str,
        what: &str,
        act: impl FnOnce(&mut Call, std::time::Instant) -> Result<Vec<Action>, ControlError>,
    ) -> Result<(), ControlError> {
        let e = self.calls.get_mut(call_id).ok_or_else(|| ControlError::NoSuchCall(call_id.to_owned()))?;
        let actions = act(&mut e.call, std::time::Instant::now())?;
        info!(call_id, "{what}");
        self.execute(call_id, actions).await;
        Ok(())
    }

    /// Records an update that may come after hangup too (ratings, notes):
    /// the call is looked up in the store, off the loop, then `make` gives
    /// the update for its event sequence and the answer.
    fn record_after<T: Send + 'static>(
        &self,
        call_id: String,
        reply: tokio::sync::oneshot::Sender<Result<T, ControlError>>,
        make: impl FnOnce(&str) -> (CallUpdate, T) + Send + 'static,
    ) {
        let (db, writer) = (self.deps.db.clone(), self.events.call(&call_id));
        tokio::spawn(async move {
            let known = switchboard_store::sqlx::query("SELECT 1 FROM calls WHERE id = $1").bind(call_id.as_str()).fetch_optional(db.pool()).await;
            let result = match known {
                Ok(Some(_)) => {
                    let (update, answer) = make(&call_id);
                    writer.record(update);
                    Ok(answer)
                }
                Ok(None) => Err(ControlError::NoSuchCall(call_id)),
                Err(e) => Err(ControlError::Store(e.to_string())),
            };
            let _ = reply.send(result);
        });
    }

    async fn media_command(&mut self, call_id: &str, command: MediaCommand) -> Result<MediaState, ControlError> {
        let e = self.calls.get_mut(call_id).ok_or_else(|| ControlError::NoSuchCall(call_id.to_owned()))?;
        if !e.call.is_answered() || e.call.has_ended() {
            return Err(ControlError::NotAnswered(call_id.to_owned()));
        }
        let relay = e.relay.as_ref().ok_or_else(|| ControlError::NoMedia(call_id.to_owned()))?;
        info!(call_id, ?command, "media command");
        let mut media_changed = false;
        match &command {
            MediaCommand::Hold { side, on } => {
                relay.hold(*side, *on);
                let held = if *on { Some(*side) } else { e.media.held.filter(|h| h != side) };
                media_changed = held != e.media.held;
                e.media.held = held;
            }
            MediaCommand::Mute { side, on } => {
                relay.mute(*side, *on);
                media_changed = e.media.muted[*side as usize] != *on;
                e.media.muted[*side as usize] = *on;
            }
            MediaCommand::Dtmf { to, digits } => relay.send_dtmf(*to, digits),
            MediaCommand::Record(cmd) => {
                let state = relay.record(*cmd).await.ok_or_else(|| ControlError::NoMedia(call_id.to_owned()))?;
                let e = self.calls.get_mut(call_id).ok_or_else(|| ControlError::NoSuchCall(call_id.to_owned()))?;
                if let RecordCommand::Start { admin_only } = cmd {
                    e.media.admin_only = *admin_only;
                }
                if state != e.media.recording {
                    e.media.recording = state;
                    if let Some(w) = &e.writer {
                        w.record(CallUpdate::RecordingState { state, admin_only: e.media.admin_only });
                    }
                }
            }
        }
        let e = self.calls.get(call_id).ok_or_else(|| ControlError::NoSuchCall(call_id.to_owned()))?;
        if media_changed {
            if let Some(w) = &e.writer {
                w.record(e.media.event());
            }
        }
        Ok(e.media.state())
    }

    /// Resolves every outbound trunk's next hop and queues an OPTIONS to it.
    fn probe_trunks(&mut self) {
        let names: Vec<String> = self.probes.values().cloned().collect();
        let trunks: Vec<_> =
            self.deps.trunks.all().filter(|t| t.config.address.is_some() && !names.iter().any(|n| n == t.name())).cloned().collect();
        for trunk in trunks {
            let work = self.work.clone();
            tokio::spawn(async move {
                match super::routing::resolve_trunk(&trunk).await {
                    Some(dest) => {
                        let _ = work.send(Work::Probe { trunk: trunk.name().to_owned(), dest });
                    }
                    None => warn!(trunk = trunk.name(), "the trunk's address does not resolve; check sip.trunks address/outbound_proxy"),
                }
            });
        }
    }

    async fn send_probe(&mut self, trunk: String, dest: Destination) {
        let Some(t) = self.deps.trunks.all().find(|t| t.name() == trunk).cloned() else { return };
        if let (Some(name), Destination::Tls(addr)) = (t.tls_server_name(), dest) {
            if let Err(e) = self.deps.transport.set_tls_server_name(addr, &name) {
                warn!(trunk, name, error = %e, "not a valid TLS server name; the trunk's certificate is checked by address");
            }
        }
        let Some(uri) = t.uri() else { return };
        let local = &self.deps.local;
        let call_id = crate::sip::headers::new_call_id(&local.host);
        let mut options = SipMessage::request("OPTIONS", uri.clone());
        options.push_header("Via", local.via(&dest, &crate::sip::headers::new_branch())).push_header("Max-Forwards", "70");
        if let Some(p) = &t.config.outbound_proxy {
            options.push_header("Route", format!("<{p}>"));
        }
        options
            .push_header("From", format!("<sip:switchboard@{}>;tag={}", local.host, crate::sip::headers::new_tag()))
            .push_header("To", format!("<{uri}>"))
            .push_header("Call-ID", call_id.clone())
            .push_header("CSeq", "1 OPTIONS")
            .push_header("Contact", local.contact(&dest))
            .push_header("Accept", "application/sdp")
            .push_header("User-Agent", local.user_agent.clone());
        self.probes.insert(call_id, trunk);
        self.send(dest, options).await;
    }

    fn trunk_status(&mut self, trunk: &str, up: bool) {
        let before = self.trunk_up.insert(trunk.to_owned(), up);
        metrics::gauge!("switchboard_sip_trunk_up", "trunk" => trunk.to_owned()).set(if up { 1.0 } else { 0.0 });
        if before != Some(up) {
            if up {
                info!(trunk, "trunk answers OPTIONS");
            } else {
                warn!(trunk, "trunk does not answer OPTIONS; calls through it will likely fail; check the trunk's address and firewall");
            }
        }
    }

    /// Creates the call's writer and records `call.started` (with the
    /// users it rings, `fork_agents` being set).
    fn begin_events(&mut self, id: &str, started: Started) {
        let Some(entry) = self.calls.get_mut(id) else { return };
        let writer = self.events.call(id);
        entry.from_number = started.from_number.clone();
        entry.to_number = started.to_number.clone();
        let caller_user_id = match started.direction {
            pb::Direction::Outbound => Some(started.owner.user_id.clone()),
            _ => started.caller_user_id.clone(),
        };
        entry.from_display = started.from_display.clone();
        let mut participants: Vec<String> = Vec::new();
        for user in entry.fork_agents.iter().flatten().map(|a| &a.user_id).chain(started.caller_user_id.as_ref()) {
            if *user != started.owner.user_id && !participants.contains(user) {
                participants.push(user.clone());
            }
        }
        writer.record(CallUpdate::Started {
            sip_call_id: entry.call.caller_call_id().to_owned(),
            direction: started.direction,
            from_number: started.from_number,
            from_display: started.from_display,
            to_number: started.to_number,
            owner: started.owner.clone(),
            participants,
            caller_user_id,
        });
        entry.writer = Some(writer);
        entry.agent = Some(started.owner);
    }

    async fn on_timers(&mut self) {
        let now = std::time::Instant::now();
        let outputs = self.tx.on_timer(now);
        self.run_outputs(outputs).await;
        let mut due = Vec::new();
        while let Some(Reverse((at, _))) = self.call_timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, id))) = self.call_timers.pop() else { break };
            due.push(id);
        }
        due.sort();
        due.dedup();
        for id in due {
            let actions = match self.calls.get_mut(&id) {
                Some(e) if e.call.next_deadline().is_some_and(|d| d <= now) => {
                    e.scheduled = None;
                    e.call.on_timer(now)
                }
                _ => continue, // stale entry
            };
            self.execute(&id, actions).await;
            if self.calls.get(&id).is_some_and(|e| e.call.is_finished(now)) {
                if let Some(e) = self.calls.remove(&id) {
                    self.by_sip.remove(e.call.caller_call_id());
                    for f in e.call.fork_call_ids() {
                        self.by_sip.remove(f);
                    }
                }
                metrics::gauge!("switchboard_calls_active").set(self.calls.len() as f64);
            }
        }
    }

    async fn execute(&mut self, id: &str, actions: Vec<Action>) {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Send(dest, msg) => self.send(dest, msg).await,
                Action::Ringing => {
                    if let Some(e) = self.calls.get(id) {
                        if let (Some(w), Some(a)) = (&e.writer, &e.agent) {
                            w.record(CallUpdate::Ringing { agent: a.clone() });
                        }
                    }
                }
                Action::EarlyMedia { callee_rtp } | Action::CalleeMedia { rtp: callee_rtp } => {
                    if let Some(e) = self.calls.get(id) {
                        if let Some(r) = &e.relay {
                            r.set_remote(Side::B, callee_rtp);
                            if e.placed.is_some() {
                                // The far end's own early media replaces the ringback.
                                r.ringback(Side::A, false);
                            }
                        }
                    }
                }
                Action::AgentAnswered { fork, rtp } => queue.extend(self.agent_answered(id, fork, rtp)),
                Action::Answered { fork, callee_rtp } => {
                    let record_all = self.deps.record_all;
                    if let Some(e) = self.calls.get_mut(id) {
                        e.answered_at = Some(Instant::now());
                        if let Some(p) = e.placed.as_mut() {
                            p.far_end_answered = true;
                            metrics::counter!("switchboard_calls_placed_total", "result" => "answered").increment(1);
                        }
                        if let Some(r) = &e.relay {
                            r.set_remote(Side::B, callee_rtp);
                            if e.placed.is_some() {
                                r.ringback(Side::A, false);
                            }
                            if record_all {
                                r.start_recording(false);
                                e.media.recording = RecordingState::Recording;
                            }
                            if e.admin_recording {
                                r.start_recording(true);
                            }
                        }
                        // The member whose device answered takes the call (a
                        // group call); through a trunk the caller stays.
                        if let Some(Some(who)) = e.fork_agents.get(fork) {
                            e.agent = Some(who.clone());
                        }
                        let device = e.agent.as_ref().and_then(|a| a.device_id.clone());
                        if let (Some(w), Some(a)) = (&e.writer, &e.agent) {
                            w.record(CallUpdate::Answered { agent: a.clone() });
                        }
                        info!(call_id = %id, device = device.as_deref().unwrap_or("-"), "call answered");
                        metrics::counter!("switchboard_calls_total", "outcome" => "answered").increment(1);
                    }
                }
                Action::CallerMedia { rtp } => {
                    if let Some(r) = self.calls.get(id).and_then(|e| e.relay.as_ref()) {
                        r.set_remote(Side::A, rtp);
                    }
                }
                Action::LegFormats { leg, formats, rtcp_mux } => {
                    if let (Some(r), Some(codec)) = (self.calls.get(id).and_then(|e| e.relay.as_ref()), LegCodec::from_formats(&formats)) {
                        r.set_codec(side_of(leg), LegCodec { rtcp_mux, ..codec });
                    }
                }
                Action::PeerHold { leg, on } => {
                    if let Some(e) = self.calls.get_mut(id) {
                        let peer = side_of(leg).other();
                        let held = if on { Some(peer) } else { e.media.held.filter(|h| *h != peer) };
                        if held != e.media.held {
                            if let Some(r) = &e.relay {
                                // The phone that held the call hears nothing; its peer hears music.
                                r.hold(peer, on);
                            }
                            e.media.held = held;
                            if let Some(w) = &e.writer {
                                w.record(e.media.event());
                            }
                        }
                    }
                }
                Action::Dtmf { leg, digit, duration } => {
                    if let Some(r) = self.calls.get(id).and_then(|e| e.relay.as_ref()) {
                        r.info_digit(side_of(leg), digit, duration);
                    }
                }
                Action::Voicemail => {
                    if let (Some(e), Some(vm)) = (self.calls.get(id), &self.deps.voicemail) {
                        if let (Some(r), Some(user_id)) = (&e.relay, &e.mailbox) {
                            info!(call_id = %id, user_id, "no answer: voicemail");
                            r.voicemail(Mailbox { user_id: user_id.clone(), greeting: vm.greeting(user_id), settings: vm.settings.clone() });
                            if let Some(w) = &e.writer {
                                w.record(CallUpdate::Voicemail { user_id: user_id.clone() });
                            }
                        }
                    }
                }
                Action::Screening { fork, callee_rtp } => {
                    if let Some(e) = self.calls.get(id) {
                        if let Some(r) = &e.relay {
                            r.set_remote(Side::B, callee_rtp);
                            r.screen(true);
                        }
                        let agent = e.fork_agents.get(fork).cloned().flatten();
                        if let (Some(w), Some(a)) = (&e.writer, agent) {
                            w.record(CallUpdate::Screening { agent: a, picked_up: false });
                        }
                        info!(call_id = %id, "voicemail being screened");
                    }
                }
                Action::ScreeningEnded => {
                    if let Some(r) = self.calls.get(id).and_then(|e| e.relay.as_ref()) {
                        r.screen(false);
                    }
                }
                Action::PickedUp { fork } => {
                    let record_all = self.deps.record_all;
                    if let Some(e) = self.calls.get_mut(id) {
                        if let Some(r) = &e.relay {
                            r.pick_up();
                            // From here it is an answered call: the same recording policies.
                            if record_all {
                                r.start_recording(false);
                                e.media.recording = RecordingState::Recording;
                            }
                            if e.admin_recording {
                                r.start_recording(true);
                            }
                        }
                        e.answered_at = Some(Instant::now());
                        if let Some(Some(who)) = e.fork_agents.get(fork) {
                            e.agent = Some(who.clone());
                        }
                        if let (Some(w), Some(a)) = (&e.writer, &e.agent) {
                            w.record(CallUpdate::Screening { agent: a.clone(), picked_up: true });
                            w.record(CallUpdate::Answered { agent: a.clone() });
                        }
                        info!(call_id = %id, "screened voicemail picked up");
                        metrics::counter!("switchboard_calls_total", "outcome" => "picked_up_from_voicemail").increment(1);
                    }
                }
                Action::Replaced { leg, fork, rtp } => self.replaced(id, leg, fork, rtp),
                Action::ReplaceFailed { status, .. } => self.replace_failed(id, status),
                Action::Consulting { agent, target, .. } => self.consulting(id, agent, target),
                Action::ConsultEnded => self.consult_ended(id),
                Action::Ended { reason, hangup_by, sip_status } => self.ended(id, reason, hangup_by, sip_status),
            }
        }
        if let Some(e) = self.calls.get_mut(id) {
            if let Some(d) = e.call.next_deadline().filter(|d| e.scheduled != Some(*d)) {
                e.scheduled = Some(d);
                self.call_timers.push(Reverse((d, id.to_owned())));
            }
        }
    }

    /// Starts handing over the agent's side of an answered call: who rings
    /// is looked up off the loop ([`Work::TransferRouted`]).
    fn transfer(&mut self, call_id: String, handover: Handover, reply: tokio::sync::oneshot::Sender<Result<Option<AgentInfo>, ControlError>>) {
        let Some(e) = self.calls.get_mut(&call_id) else {
            let _ = reply.send(Err(ControlError::NoSuchCall(call_id)));
            return;
        };
        if !e.call.is_answered() || e.call.in_voicemail() || e.relay.is_none() {
            let _ = reply.send(Err(ControlError::NotAnswered(call_id)));
            return;
        }
        if e.transfer.is_some() || e.call.replacing().is_some() {
            let _ = reply.send(Err(ControlError::TransferInProgress(call_id)));
            return;
        }
        if e.call.parked().is_some() != matches!(handover, Handover::Unpark(_)) {
            let error = if e.call.parked().is_some() { ControlError::Parked(call_id) } else { ControlError::NotAnswered(call_id) };
            let _ = reply.send(Err(error));
            return;
        }
        // The agent is the caller of an outbound call, the callee otherwise.
        let outbound = e.direction == pb::Direction::Outbound;
        let leg = if outbound { Leg::Caller } else { Leg::Callee };
        let from = e.agent.clone();
        let to = match &handover {
            Handover::Move { device_id } => match &from {
                Some(a) => TransferTo::Devices { user_id: a.user_id.clone(), device_id: device_id.clone(), except: a.device_id.clone() },
                None => {
                    let _ = reply.send(Err(ControlError::TransferTarget("the call has no agent whose devices could take it".into())));
                    return;
                }
            },
            Handover::Blind(to) | Handover::Warm(to) | Handover::Unpark(to) => to.clone(),
        };
        let warm = matches!(handover, Handover::Warm(_));
        let to_number = match &to {
            TransferTo::Number(n) => n.clone(),
            _ => String::new(),
        };
        let call = TransferredCall {
            customer_number: if outbound { e.to_number.clone() } else { e.from_number.clone() },
            customer_display: if outbound { String::new() } else { e.from_display.clone() },
            company_number: if outbound { e.from_number.clone() } else { e.to_number.clone() },
            agent_user_id: from.as_ref().map(|a| a.user_id.clone()),
        };
        info!(call_id = %call_id, kind = handover.kind_label(), ?to, "handing the call over");
        e.transfer = Some(PendingTransfer { handover, leg, from, to_number, reply: Some(reply) });
        let (router, work) = (self.router.clone(), self.work.clone());
        let span = info_span!("transfer", call_id = %call_id);
        tokio::spawn(
            async move {
                let mut plan = router.transfer(&to, &call, unix_now()).await.map(|p| (p, None));
                if let (true, Ok((_, ports))) = (warm, plan.as_mut()) {
                    match (router.ports.allocate().await, router.ports.allocate().await) {
                        (Ok(a), Ok(b)) => *ports = Some((a, b)),
                        (Err(e), _) | (_, Err(e)) => plan = Err(format!("no media ports for the consultation ({e}); try again")),
                    }
                }
                let _ = work.send(Work::TransferRouted { id: call_id, plan });
            }
            .instrument(span),
        );
    }

    /// Rings the new party of a transfer or move (the call goes on meanwhile).
    async fn transfer_routed(&mut self, id: &str, plan: Result<(TransferPlan, Option<(PortPair, PortPair)>), String>) {
        let now = std::time::Instant::now();
        let Some(e) = self.calls.get_mut(id) else { return };
        let Some(t) = e.transfer.take() else { return }; // cancelled while routing
        let (plan, consult_ports) = match plan {
            Ok(p) => p,
            Err(why) => {
                t.finish(id, Err(ControlError::TransferTarget(why)));
                return self.restart_park_wait(id);
            }
        };
        if !e.call.is_answered() {
            return t.finish(id, Err(ControlError::NotAnswered(id.to_owned())));
        }
        let (agents, targets): (Vec<Option<AgentInfo>>, Vec<Target>) = plan.forks.into_iter().map(|f| (f.agent, f.target)).unzip();
        for target in &targets {
            if let (Some(name), Destination::Tls(addr)) = (&target.server_name, target.dest) {
                if let Err(err) = self.deps.transport.set_tls_server_name(addr, name) {
                    warn!(call_id = %id, name, error = %err, "not a valid TLS server name; the device's certificate is checked by address");
                }
            }
        }
        let placed = match &consult_ports {
            Some((a, b)) => e.call.consult(t.leg, targets, &plan.presentation, ConsultPorts { agent_port: a.port, target_port: b.port }, now),
            None => e.call.replace(t.leg, targets, &plan.presentation, now),
        };
        let actions = match placed {
            Ok(actions) => actions,
            Err(err) => {
                t.finish(id, Err(ControlError::TransferTarget(err.to_string())));
                return self.restart_park_wait(id);
            }
        };
        if consult_ports.is_some() {
            // Warm: the far end waits with music while the target rings
            // and while the agent consults it.
            e.consult_ports = consult_ports;
            hold_customer(e, true);
        }
        // The agents it rings see the call while it rings for them.
        let ringing: Vec<AgentInfo> = agents.iter().flatten().cloned().collect();
        if let (Some(w), false) = (&e.writer, ringing.is_empty()) {
            w.record(CallUpdate::TransferRinging { agents: ringing });
        }
        // The new forks follow the call's others, in target order.
        let first_new = e.call.fork_call_ids().count() - agents.len();
        e.fork_agents.resize(first_new, None);
        e.fork_agents.extend(agents);
        info!(call_id = %id, kind = t.handover.kind_label(), targets = e.fork_agents.len() - first_new, "transfer ringing");
        e.transfer = Some(t);
        let ids: Vec<String> = e.call.fork_call_ids().skip(first_new).map(str::to_owned).collect();
        for f in ids {
            self.by_sip.insert(f, (id.to_owned(), LegKind::Callee));
        }
        self.execute(id, actions).await;
    }

    /// A leg's replacement answered: the bridge carries the new party, and
    /// the call belongs to whoever took it.
    fn replaced(&mut self, id: &str, leg: Leg, fork: usize, rtp: std::net::SocketAddr) {
        let Some(e) = self.calls.get_mut(id) else { return };
        if let Some(r) = &e.relay {
            r.replace_remote(side_of(leg), rtp);
        }
        let Some(t) = e.transfer.take() else { return };
        let to = e.fork_agents.get(fork).cloned().flatten();
        e.agent = to.clone();
        if let Some(w) = &e.writer {
            w.record(CallUpdate::Transferred { from: t.from.clone(), to: to.clone(), kind: t.kind(), to_number: t.to_number.clone() });
        }
        if let Some(p) = e.park.take() {
            self.park_slots.remove(&p.slot);
        }
        // Whoever took the call talks with the far end at once: music the
        // far end heard (a park, the agent's own hold) stops.
        hold_customer(e, false);
        t.finish(id, Ok(to));
    }

    /// A warm transfer's target answered: the agent and the target talk on
    /// the consultation's own bridge while the far end hears music.
    fn consulting(&mut self, id: &str, agent: LegMedia, target: LegMedia) {
        let Some(e) = self.calls.get_mut(id) else { return };
        // The warm transfer request answers now: the agent is consulting.
        let target_agent = e.call.consulted_fork().and_then(|i| e.fork_agents.get(i).cloned().flatten());
        if let Some(reply) = e.transfer.as_mut().and_then(|t| t.reply.take()) {
            let _ = reply.send(Ok(target_agent));
        }
        let Some((a, b)) = e.consult_ports.take() else {
            warn!(call_id = %id, "a consultation without its ports; the agent and the target cannot hear each other");
            return;
        };
        let ctx = MediaContext {
            call_id: id.to_owned(),
            started_at_ms: e.started_at_ms,
            customer: Side::B,
            hold_music: self.deps.hold_music.clone(),
            opus: self.deps.opus,
            recordings: self.deps.recordings.clone(),
            recording_format: self.deps.recording_format,
            writer: None,
            notices: self.notices.clone(),
            threads: self.deps.media_threads.clone(),
        };
        let relay = MediaRelay::start(ctx, a, b, agent.rtp);
        for (side, party) in [(Side::A, &agent), (Side::B, &target)] {
            if let Some(codec) = LegCodec::from_formats(&party.formats) {
                relay.set_codec(side, LegCodec { rtcp_mux: party.rtcp_mux, ..codec });
            }
        }
        relay.set_remote(Side::B, target.rtp);
        e.consult_relay = Some(relay);
        info!(call_id = %id, "consulting the transfer target");
    }

    /// The consultation is over: its bridge stops and the far end is
    /// taken off hold.
    fn consult_ended(&mut self, id: &str) {
        let Some(e) = self.calls.get_mut(id) else { return };
        e.consult_ports = None;
        if let Some(relay) = e.consult_relay.take() {
            tokio::spawn(async move {
                relay.stop().await;
            });
        }
        if !e.call.has_ended() {
            hold_customer(e, false);
        }
    }

    /// A leg's replacement did not happen; the call goes on as it was.
    fn replace_failed(&mut self, id: &str, status: u16) {
        let Some(e) = self.calls.get_mut(id) else { return };
        if let Some(t) = e.transfer.take() {
            if let Some(w) = &e.writer {
                w.record(CallUpdate::TransferWithdrawn);
            }
            if matches!(t.handover, Handover::Warm(_)) {
                // A warm transfer's target never answered: the far end,
                // held while it rang, is given back to the agent.
                e.consult_ports = None;
                if !e.call.has_ended() {
                    hold_customer(e, false);
                }
            }
            t.finish(id, Err(ControlError::TransferFailed { call_id: id.to_owned(), status }));
        }
        self.restart_park_wait(id);
    }

    /// A parked call whose retrieval or ring-back did not happen waits the
    /// park timeout again.
    fn restart_park_wait(&mut self, id: &str) {
        let Some(e) = self.calls.get_mut(id) else { return };
        if e.call.has_ended() || e.park.is_none() {
            return;
        }
        self.park_generation += 1;
        let generation = self.park_generation;
        if let Some(p) = e.park.as_mut() {
            p.generation = generation;
        }
        self.wait_in_park(id, generation);
    }

    /// Parks the call (F4): the agent's phone is hung up, the far end
    /// hears music in the lowest free slot until an agent retrieves it or
    /// the park timeout rings the agent back.
    async fn park(&mut self, call_id: String, reply: tokio::sync::oneshot::Sender<Result<ParkedCall, ControlError>>) {
        let now = std::time::Instant::now();
        let slot = (1..).find(|s| !self.park_slots.contains_key(s)).unwrap_or(u32::MAX);
        self.park_generation += 1;
        let generation = self.park_generation;
        let Some(e) = self.calls.get_mut(&call_id) else {
            let _ = reply.send(Err(ControlError::NoSuchCall(call_id)));
            return;
        };
        if e.transfer.is_some() {
            let _ = reply.send(Err(ControlError::TransferInProgress(call_id)));
            return;
        }
        let leg = if e.direction == pb::Direction::Outbound { Leg::Caller } else { Leg::Callee };
        let actions = match e.call.park(leg, now) {
            Ok(actions) if e.relay.is_some() => actions,
            Err(super::b2bua::ReplaceError::Parked) => {
                let _ = reply.send(Err(ControlError::Parked(call_id)));
                return;
            }
            _ => {
                let _ = reply.send(Err(ControlError::NotAnswered(call_id)));
                return;
            }
        };
        let parked = ParkedCall {
            slot,
            call_id: call_id.clone(),
            customer_number: if e.direction == pb::Direction::Outbound { e.to_number.clone() } else { e.from_number.clone() },
            parked_by: e.agent.as_ref().map(|a| a.user_id.clone()),
            parked_at_ms: now_ms(),
        };
        e.park = Some(ParkState { slot, by: e.agent.clone(), at_ms: parked.parked_at_ms, generation });
        hold_customer(e, true);
        if let Some(w) = &e.writer {
            w.record(CallUpdate::Parked { slot, by: e.agent.clone() });
        }
        self.park_slots.insert(slot, call_id.clone());
        metrics::counter!("switchboard_calls_parked_total").increment(1);
        info!(call_id = %call_id, slot, "call parked");
        let _ = reply.send(Ok(parked));
        self.wait_in_park(&call_id, generation);
        self.execute(&call_id, actions).await;
    }

    /// Gives the call parked in `slot` to `user_id`'s devices.
    fn retrieve(&mut self, slot: u32, user_id: String, reply: tokio::sync::oneshot::Sender<Result<(String, Option<AgentInfo>), ControlError>>) {
        let Some(call_id) = self.park_slots.get(&slot).cloned() else {
            let _ = reply.send(Err(ControlError::ParkSlotEmpty(slot)));
            return;
        };
        info!(call_id = %call_id, slot, user_id, "retrieving a parked call");
        let (handed, outcome) = tokio::sync::oneshot::channel();
        self.transfer(call_id.clone(), Handover::Unpark(TransferTo::User(user_id)), handed);
        tokio::spawn(async move {
            let result = outcome.await.unwrap_or(Err(ControlError::Stopped));
            let _ = reply.send(result.map(|to| (call_id, to)));
        });
    }

    /// Waits the park timeout for the call, then reports it.
    fn wait_in_park(&self, id: &str, generation: u64) {
        let (work, wait, id) = (self.work.clone(), self.deps.park_timeout, id.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = work.send(Work::ParkExpired { id, generation });
        });
    }

    /// Nobody retrieved the parked call in time: its parker's devices ring.
    fn park_expired(&mut self, id: &str, generation: u64) {
        let Some(e) = self.calls.get(id) else { return };
        let Some(p) = e.park.as_ref().filter(|p| p.generation == generation) else { return };
        if e.transfer.is_some() || e.call.has_ended() {
            return; // being retrieved: its outcome restarts the wait if needed
        }
        let Some(parker) = p.by.as_ref().map(|a| a.user_id.clone()) else { return };
        info!(call_id = %id, slot = p.slot, user_id = %parker, "park timeout: ringing the agent who parked the call");
        let (reply, _) = tokio::sync::oneshot::channel();
        self.transfer(id.to_owned(), Handover::Unpark(TransferTo::Devices { user_id: parker, device_id: None, except: None }), reply);
    }

    /// The calls in park slots, by slot.
    fn parked_calls(&self) -> Vec<ParkedCall> {
        self.park_slots
            .iter()
            .filter_map(|(slot, id)| {
                let e = self.calls.get(id)?;
                let p = e.park.as_ref()?;
                Some(ParkedCall {
                    slot: *slot,
                    call_id: id.clone(),
                    customer_number: if e.direction == pb::Direction::Outbound { e.to_number.clone() } else { e.from_number.clone() },
                    parked_by: p.by.as_ref().map(|a| a.user_id.clone()),
                    parked_at_ms: p.at_ms,
                })
            })
            .collect()
    }

    /// F3: routes a call an agent places from the softphone off the loop:
    /// its devices, then the far end as if the first of them (or the one
    /// named) had dialled it ([`Work::Originated`]).
    fn originate(&mut self, request: Origination, reply: tokio::sync::oneshot::Sender<Result<String, ControlError>>) {
        let id = uuid::Uuid::now_v7().to_string();
        let (router, work, host) = (self.router.clone(), self.work.clone(), self.deps.local.host.clone());
        let span = info_span!("originate", call_id = %id, user_id = %request.user_id);
        tokio::spawn(
            async move {
                let now = unix_now();
                let devices = router.agent_devices(&request.user_id, request.device_id.as_deref(), false, &host, now).await;
                let outcome = match &devices {
                    Ok(forks) => {
                        let device = request.device_id.clone().or_else(|| forks.iter().find_map(|f| f.agent.as_ref()?.device_id.clone())).unwrap_or_default();
                        Some(router.originate(&device, &request.to, request.caller_id.as_deref(), now).await)
                    }
                    Err(_) => None,
                };
                let _ = work.send(Work::Originated { id, request, devices, outcome, reply });
            }
            .instrument(span),
        );
    }

    /// Creates the call placed from the softphone and rings the agent's
    /// devices; the far end waits for one of them to answer.
    async fn originated(
        &mut self,
        id: String,
        request: Origination,
        devices: Result<Vec<PlannedFork>, AgentDeviceError>,
        outcome: Option<RouteOutcome>,
        reply: tokio::sync::oneshot::Sender<Result<String, ControlError>>,
    ) {
        let now = std::time::Instant::now();
        let refuse = |reply: tokio::sync::oneshot::Sender<Result<String, ControlError>>, error: ControlError| {
            info!(call_id = %id, user_id = %request.user_id, to = %request.to, error = %error, "call from the softphone refused");
            metrics::counter!("switchboard_calls_placed_total", "result" => "refused").increment(1);
            let _ = reply.send(Err(error));
        };
        let devices = match devices {
            Ok(d) => d,
            Err(AgentDeviceError::NotFound(d)) => return refuse(reply, ControlError::DeviceNotFound(d)),
            Err(AgentDeviceError::NoDevice(why)) => return refuse(reply, ControlError::NoDevice(why)),
            Err(AgentDeviceError::Lookup(why)) => return refuse(reply, ControlError::Store(why)),
        };
        let plan = match outcome {
            Some(RouteOutcome::Ready(plan)) => plan,
            Some(RouteOutcome::Refused { code, why }) => return refuse(reply, ControlError::Unroutable { code, why }),
            Some(RouteOutcome::Unreachable { .. }) => {
                return refuse(reply, ControlError::Unroutable { code: 480, why: format!("nobody at {} can be rung now", request.to) })
            }
            None => return refuse(reply, ControlError::Stopped),
        };
        let super::routing::Plan { mailbox, started, presentation, forks, a, b, admin_recording } = *plan;
        let (mut fork_agents, agent_targets): (Vec<Option<AgentInfo>>, Vec<Target>) = devices.into_iter().map(|f| (f.agent, f.target)).unzip();
        let (far_agents, far_targets): (Vec<Option<AgentInfo>>, Vec<Target>) = forks.into_iter().map(|f| (f.agent, f.target)).unzip();
        for t in agent_targets.iter().chain(&far_targets) {
            if let (Some(name), Destination::Tls(addr)) = (&t.server_name, t.dest) {
                if let Err(e) = self.deps.transport.set_tls_server_name(addr, name) {
                    warn!(call_id = %id, name, error = %e, "not a valid TLS server name; the device's certificate is checked by address");
                }
            }
        }
        // The far end's forks follow the agent's, in the call's fork order.
        fork_agents.extend(far_agents);
        let mut call = Call::originate(id.clone(), self.deps.local.clone(), self.deps.timers, self.deps.ring_timeout);
        let mailbox = mailbox.filter(|_| self.deps.voicemail.is_some() && started.direction != pb::Direction::Outbound);
        call.set_voicemail(mailbox.is_some());
        // The agent's phone shows whom it is about to call.
        let to_agent = Presentation { user: started.to_number.clone(), display: Some(format!("Call to {}", started.to_number)), ..Presentation::default() };
        let media = MediaPorts { ip: self.deps.media_ip, a_port: a.port, b_port: b.port };
        let actions = call.ring_agent(agent_targets, &to_agent, media, now);
        info!(call_id = %id, user_id = %request.user_id, to = %started.to_number, direction = ?started.direction, devices = call.fork_call_ids().count(), "placing a call from the softphone: ringing the agent");
        let direction = started.direction;
        let fork_ids: Vec<String> = call.fork_call_ids().map(str::to_owned).collect();
        self.calls.insert(
            id.clone(),
            Entry {
                call,
                writer: None,
                relay: None,
                agent: None,
                fork_agents,
                started_at: Instant::now(),
                started_at_ms: now_ms(),
                answered_at: None,
                scheduled: None,
                from_number: String::new(),
                to_number: String::new(),
                media: MediaStatus::default(),
                mailbox,
                admin_recording,
                direction,
                from_display: String::new(),
                transfer: None,
                consult_ports: None,
                consult_relay: None,
                park: None,
                placed: Some(Placed { far_end: Some((far_targets, presentation)), ports: Some((a, b)), agent_answered: false, far_end_answered: false }),
            },
        );
        metrics::gauge!("switchboard_calls_active").set(self.calls.len() as f64);
        for f in fork_ids {
            self.by_sip.insert(f, (id.clone(), LegKind::Callee));
        }
        self.begin_events(&id, started);
        let _ = reply.send(Ok(id.clone()));
        self.execute(&id, actions).await;
    }

    /// The agent's phone answered its call placed from the softphone: the
    /// media starts (ringback to the agent) and the far end is called.
    fn agent_answered(&mut self, id: &str, fork: usize, rtp: std::net::SocketAddr) -> Vec<Action> {
        let now = std::time::Instant::now();
        let Some(e) = self.calls.get_mut(id) else { return Vec::new() };
        let Some(placed) = e.placed.as_mut() else { return Vec::new() };
        placed.agent_answered = true;
        let (Some((a, b)), Some((targets, presentation))) = (placed.ports.take(), placed.far_end.take()) else { return Vec::new() };
        // The owner's device is the one that answered.
        if let (Some(owner), Some(Some(who))) = (e.agent.as_mut(), e.fork_agents.get(fork)) {
            if owner.user_id == who.user_id {
                owner.device_id = who.device_id.clone();
            }
        }
        let ctx = MediaContext {
            call_id: id.to_owned(),
            started_at_ms: e.started_at_ms,
            customer: super::control::customer_side(e.direction == pb::Direction::Outbound),
            hold_music: self.deps.hold_music.clone(),
            opus: self.deps.opus,
            recordings: self.deps.recordings.clone(),
            recording_format: self.deps.recording_format,
            writer: e.writer.clone(),
            notices: self.notices.clone(),
            threads: self.deps.media_threads.clone(),
        };
        let relay = MediaRelay::start(ctx, a, b, rtp);
        // Until the far end answers or sends early media of its own.
        relay.ringback(Side::A, true);
        let media = MediaPorts { ip: self.deps.media_ip, a_port: relay.a_port, b_port: relay.b_port };
        e.relay = Some(relay);
        let before = e.call.fork_call_ids().count();
        let actions = e.call.place(targets, &presentation, media, now);
        let ids: Vec<String> = e.call.fork_call_ids().skip(before).map(str::to_owned).collect();
        info!(call_id = %id, forks = ids.len(), "the agent answered; calling the far end");
        for f in ids {
            self.by_sip.insert(f, (id.to_owned(), LegKind::Callee));
        }
        actions
    }

    /// Answers a ringing call from the softphone: which of the agent's
    /// devices takes it is looked up off the loop ([`Work::AnswerRouted`]).
    fn answer(&mut self, call_id: String, user_id: String, device_id: Option<String>, reply: tokio::sync::oneshot::Sender<Result<(), ControlError>>) {
        let Some(e) = self.calls.get(&call_id) else {
            let _ = reply.send(Err(ControlError::NoSuchCall(call_id)));
            return;
        };
        if !e.call.is_ringing() || e.call.is_originated() {
            let _ = reply.send(Err(ControlError::NotRinging(call_id)));
            return;
        }
        if !e.fork_agents.iter().flatten().any(|a| a.user_id == user_id) {
            let _ = reply.send(Err(ControlError::NotRingingFor(call_id)));
            return;
        }
        let (router, work, host) = (self.router.clone(), self.work.clone(), self.deps.local.host.clone());
        let span = info_span!("answer", call_id = %call_id, user_id = %user_id);
        tokio::spawn(
            async move {
                let devices = router.agent_devices(&user_id, device_id.as_deref(), true, &host, unix_now()).await;
                let _ = work.send(Work::AnswerRouted { id: call_id, devices, reply });
            }
            .instrument(span),
        );
    }

    /// Invites the agent's chosen device, with the auto-answer hints, in
    /// place of every fork still ringing.
    async fn answer_routed(&mut self, id: &str, devices: Result<Vec<PlannedFork>, AgentDeviceError>, reply: tokio::sync::oneshot::Sender<Result<(), ControlError>>) {
        let now = std::time::Instant::now();
        let fork = match devices.map(|d| d.into_iter().next()) {
            Ok(Some(f)) => f,
            Ok(None) => {
                let _ = reply.send(Err(ControlError::NoDevice("none of your devices can ring".into())));
                return;
            }
            Err(e) => {
                let error = match e {
                    AgentDeviceError::NotFound(d) => ControlError::DeviceNotFound(d),
                    AgentDeviceError::NoDevice(why) => ControlError::NoDevice(why),
                    AgentDeviceError::Lookup(why) => ControlError::Store(why),
                };
                metrics::counter!("switchboard_calls_answered_from_api_total", "result" => "refused").increment(1);
                let _ = reply.send(Err(error));
                return;
            }
        };
        let Some(e) = self.calls.get_mut(id) else {
            let _ = reply.send(Err(ControlError::NoSuchCall(id.to_owned())));
            return;
        };
        let actions = e.call.answer_on(fork.target, now);
        if actions.is_empty() {
            let _ = reply.send(Err(ControlError::NotRinging(id.to_owned())));
            return;
        }
        let count = e.call.fork_call_ids().count();
        e.fork_agents.resize(count - 1, None);
        let device = fork.agent.as_ref().and_then(|a| a.device_id.clone()).unwrap_or_default();
        e.fork_agents.push(fork.agent);
        if let Some(f) = e.call.fork_call_ids().last().map(str::to_owned) {
            self.by_sip.insert(f, (id.to_owned(), LegKind::Callee));
        }
        info!(call_id = %id, device, "answering from the softphone: the device is asked to answer by itself");
        metrics::counter!("switchboard_calls_answered_from_api_total", "result" => "invited").increment(1);
        let _ = reply.send(Ok(()));
        self.execute(id, actions).await;
    }

    fn ended(&mut self, id: &str, reason: EndReason, hangup_by: HangupBy, sip_status: u16) {
        let Some(e) = self.calls.get_mut(id) else { return };
        if let Some(p) = e.placed.as_mut().filter(|p| !p.far_end_answered) {
            // A call placed from the softphone that never connected.
            let result = match (p.agent_answered, reason) {
                (false, EndReason::Cancelled) => "agent_declined",
                (false, _) => "agent_no_answer",
                (true, EndReason::NoAnswer) => "no_answer",
                (true, EndReason::Busy) => "busy",
                (true, EndReason::Cancelled) => "cancelled",
                (true, EndReason::Voicemail) => "voicemail",
                (true, _) => "failed",
            };
            metrics::counter!("switchboard_calls_placed_total", "result" => result).increment(1);
            p.ports = None;
        }
        if let Some(p) = e.park.take() {
            self.park_slots.remove(&p.slot);
        }
        let now = Instant::now();
        let talk = e.answered_at.map(|a| now.duration_since(a).as_secs() as u32).unwrap_or(0);
        let total = now.duration_since(e.started_at).as_secs() as u32;
        info!(call_id = %id, ?reason, hangup_by = hangup_by.as_str(), sip_status, talk_seconds = talk, "call ended");
        let writer = e.writer.clone();
        if let Some(w) = &writer {
            w.record(CallUpdate::Ended {
                reason: match reason {
                    EndReason::Completed => pb::EndReason::Completed,
                    EndReason::Cancelled => pb::EndReason::Cancelled,
                    EndReason::NoAnswer => pb::EndReason::NoAnswer,
                    EndReason::Busy => pb::EndReason::Busy,
                    EndReason::Failed => pb::EndReason::Failed,
                    EndReason::Voicemail => pb::EndReason::Voicemail,
                },
                hangup_by: hangup_by.as_str().to_owned(),
                sip_status: sip_status as u32,
                talk_seconds: talk,
                total_seconds: total,
            });
        }
        if let Some(relay) = e.relay.take() {
            let call_id = id.to_owned();
            tokio::spawn(async move {
                let report = relay.stop().await;
                debug!(call_id, a_to_b = report.packets_a_to_b, b_to_a = report.packets_b_to_a, "media relay stopped");
                for side in [Side::A, Side::B] {
                    let (r, q) = (report.reception[side as usize], report.quality[side as usize]);
                    if r.expected == 0 {
                        continue;
                    }
                    let mos = q.mos;
                    info!(
                        call_id,
                        leg = side.as_str(),
                        packets = r.received,
                        lost = r.lost,
                        loss_pct = format!("{:.2}", r.loss * 100.0),
                        jitter_ms = format!("{:.1}", r.jitter.as_secs_f64() * 1000.0),
                        rtt_ms = q.rtt.map(|d| format!("{:.1}", d.as_secs_f64() * 1000.0)).unwrap_or_else(|| "-".into()),
                        mos = format!("{mos:.2}"),
                        "media quality"
                    );
                    metrics::histogram!("switchboard_media_mos", "leg" => side.as_str()).record(mos);
                    metrics::histogram!("switchboard_media_loss_ratio", "leg" => side.as_str()).record(r.loss);
                    metrics::histogram!("switchboard_media_jitter_seconds", "leg" => side.as_str()).record(r.jitter.as_secs_f64());
                }
            });
        }
    }
}

fn side_of(leg: Leg) -> Side {
    match leg {
        Leg::Caller => Side::A,
        Leg::Callee => Side::B,
    }
}

/// Authenticates an INVITE from a source that is no trunk: a device with
/// digest credentials (407 challenge), throttled and banned like REGISTER.
async fn authenticate_invite(
    registrar: &Registrar,
    registrations: &Registrations,
    guard: &std::sync::Mutex<AuthGuard>,
    invite: &SipMessage,
    source: Destination,
) -> InviteAuth {
    let now = unix_now();
    let username = invite.header_values("Proxy-Authorization").into_iter().filter_map(Credentials::parse).map(|c| c.username).next();
    let account = match &username {
        Some(u) => match registrations.account(u).await {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "reading the device account failed");
                let mut r = make_response(invite, 500, Some("sb-auth"), &registrar.user_agent);
                r.push_header("Retry-After", "5");
                return InviteAuth::Respond(r);
            }
        },
        None => None,
    };
    let (outcome, response) = registrar.authenticate(invite, account.as_ref().map(|(_, a)| a), now);
    let label = match outcome {
        AuthOutcome::Challenged => "challenged",
        AuthOutcome::Accepted => "accepted",
        AuthOutcome::Stale => "stale",
        AuthOutcome::Failed => "failed",
    };
    metrics::counter!("switchboard_sip_invite_auth_total", "auth" => label).increment(1);
    let ip = source.addr().ip();
    match outcome {
        AuthOutcome::Accepted => {
            if let Ok(mut g) = guard.lock() {
                g.success(ip);
            }
            match account {
                Some((device, _)) => InviteAuth::Device(device),
                None => InviteAuth::Drop, // unreachable: accepted needs an account
            }
        }
        AuthOutcome::Failed => {
            metrics::counter!("switchboard_sip_auth_failures_total").increment(1);
            info!(peer = %source.addr(), username = username.as_deref().unwrap_or("-"), "INVITE with wrong credentials");
            if let Ok(FailureVerdict::Banned { until }) = guard.lock().map(|mut g| g.failure(ip, now)) {
                warn!(peer = %ip, banned_for_secs = until.saturating_sub(now), "too many failed authentications; source banned");
                metrics::counter!("switchboard_sip_auth_bans_total").increment(1);
                return InviteAuth::Drop;
            }
            response.map(InviteAuth::Respond).unwrap_or(InviteAuth::Drop)
        }
        AuthOutcome::Challenged | AuthOutcome::Stale => response.map(InviteAuth::Respond).unwrap_or(InviteAuth::Drop),
    }
}

/// Handles one REGISTER: finds the account, runs the registrar, stores the
/// changes; returns the response to send (`None` once the source is banned:
/// a brute-forcing client gets no more answers).
async fn register(
    registrar: &Registrar,
    registrations: &Registrations,
    guard: &std::sync::Mutex<AuthGuard>,
    msg: &SipMessage,
    source: Destination,
) -> Option<SipMessage> {
    let now = unix_now();
    let username = msg
        .header("Authorization")
        .and_then(Credentials::parse)
        .map(|c| c.username)
        .or_else(|| msg.header("To").and_then(NameAddr::parse).and_then(|n| n.user()));
    let account = match &username {
        Some(u) => match registrations.account(u).await {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "reading the device account failed");
                return Some(make_response(msg, 500, Some("sb-reg"), &registrar.user_agent));
            }
        },
        None => None,
    };
    let device_id = account.as_ref().map(|(id, _)| id.clone());
    let bindings = match &device_id {
        Some(id) => registrations.bindings(id, now).await.unwrap_or_default(),
        None => Vec::new(),
    };
    let outcome = registrar.handle(msg, source, account.as_ref().map(|(_, a)| a), &bindings, now);
    let label = match outcome.auth {
        AuthOutcome::Challenged => "challenged",
        AuthOutcome::Accepted => "accepted",
        AuthOutcome::Stale => "stale",
        AuthOutcome::Failed => "failed",
    };
    metrics::counter!("switchboard_sip_register_total", "auth" => label).increment(1);
    let ip = source.addr().ip();
    match outcome.auth {
        AuthOutcome::Failed => {
            metrics::counter!("switchboard_sip_auth_failures_total").increment(1);
            let verdict = guard.lock().map(|mut g| g.failure(ip, now));
            info!(peer = %source.addr(), username = username.as_deref().unwrap_or("-"), "REGISTER with wrong credentials");
            if let Ok(FailureVerdict::Banned { until }) = verdict {
                warn!(peer = %ip, banned_for_secs = until.saturating_sub(now), "too many failed authentications; source banned");
                metrics::counter!("switchboard_sip_auth_bans_total").increment(1);
                return None;
            }
        }
        AuthOutcome::Accepted => {
            if let Ok(mut g) = guard.lock() {
                g.success(ip);
            }
        }
        AuthOutcome::Challenged | AuthOutcome::Stale => {}
    }
    if let (Some(id), false) = (&device_id, outcome.changes.is_empty()) {
        if let Err(e) = registrations.apply(id, &outcome.changes).await {
            warn!(device = %id, error = %e, "storing the registration failed");
            return Some(make_response(msg, 500, Some("sb-reg"), &registrar.user_agent));
        }
        info!(device = %id, peer = %source.addr(), "registration updated");
    }
    Some(outcome.response)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
