//! One call through the B2BUA, as a sans-IO state machine (a transaction
//! user in RFC 3261 terms).
//!
//! A call is two or more independent dialogs: leg A with the caller (the
//! gateway is its UAS) and one fork per target on the callee side (the
//! gateway is their UAC): every registered phone of an agent, every member
//! of a group, or one trunk. All forks ring at once; the first to answer
//! wins and the others are cancelled with `Reason: SIP;cause=200`.
//!
//! Nothing is forwarded raw between legs: every message is answered or
//! originated by the gateway. CANCEL, BYE, re-INVITE, UPDATE, OPTIONS and
//! INFO are answered on the leg they arrive on; a hold re-INVITE from a
//! phone gets its `recvonly` answer without touching the caller's leg.
//!
//! One side of an answered call can be replaced (decision 0014): new forks
//! ring a new party while the call goes on untouched; the first to answer
//! takes that side (the bridge is re-pointed to it) and the replaced dialog
//! gets a BYE. The party on the other side sees no SIP at all, because the
//! gateway anchors the media and its SDP towards that party stays the same.
//! After the caller side was replaced (an agent's outbound call moved to
//! another phone), a UAC dialog carries leg A: the legs are named by the
//! side of the bridge they feed, not by which end sent the first INVITE.
//! A warm transfer first consults the new party on ports of its own; a
//! parked leg (F4) has no party at all until a replacement answers.
//!
//! Retransmission and timeouts of requests and non-2xx responses belong to
//! the transaction layer (`sip::transaction`), which hands this machine one
//! copy of each message and reports timeouts as 408. What stays here is the
//! UAS core's duty to retransmit its 2xx until the ACK (§13.3.1.4) and to
//! ACK every 2xx it receives (§13.2.2.4).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::media::sdp::{self, AudioDescription, Direction, Format};
use crate::sip::dialog::{Dialog, DialogError};
use crate::sip::digest::{self, Challenge};
use crate::sip::headers::{new_branch, new_call_id, new_tag, CSeq, NameAddr};
pub use crate::sip::local::Local;
use crate::sip::response::make_response;
use crate::sip::transaction::Timers;
use crate::sip::{Destination, SipMessage};

/// Methods the gateway accepts inside a call.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO";

/// How long a finished call keeps absorbing late messages (64·T1).
pub const LINGER: Duration = Duration::from_secs(32);

/// How the call ended, as recorded in the call event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Completed,
    Cancelled,
    NoAnswer,
    Busy,
    Failed,
    /// The caller left a voicemail (or hung up in it).
    Voicemail,
}

/// Which side ended the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangupBy {
    Caller,
    Callee,
    System,
}

impl HangupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            HangupBy::Caller => "caller",
            HangupBy::Callee => "callee",
            HangupBy::System => "system",
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Hand this message to the transaction layer.
    Send(Destination, SipMessage),
    /// A callee is ringing (first provisional response from any fork).
    Ringing,
    /// A fork sent early media (183 with SDP): play it to the caller.
    EarlyMedia { callee_rtp: SocketAddr },
    /// Fork `fork` answered; media flows between the caller and it.
    Answered { fork: usize, callee_rtp: SocketAddr },
    /// The caller's RTP address changed (re-INVITE or UPDATE).
    CallerMedia { rtp: SocketAddr },
    /// The answered callee's RTP address changed.
    CalleeMedia { rtp: SocketAddr },
    /// The formats a leg's media now uses (its answer, or the answer the
    /// gateway gave it), first one being what it sends.
    LegFormats { leg: Leg, formats: Vec<Format>, rtcp_mux: bool },
    /// A leg put the call on hold itself (a `sendonly`/`inactive` offer) or
    /// took it off: the other party hears music meanwhile.
    PeerHold { leg: Leg, on: bool },
    /// A key pressed on a leg's phone, sent as SIP INFO.
    Dtmf { leg: Leg, digit: char, duration: Option<Duration> },
    /// Nobody answered: the gateway answered the caller, who now leaves a
    /// voicemail (greeting, beep, message).
    Voicemail,
    /// Fork `fork` answered to screen the voicemail: it hears the caller.
    Screening { fork: usize, callee_rtp: SocketAddr },
    /// The screening device hung up before picking up.
    ScreeningEnded,
    /// The screening fork picked up: bridge it with the caller.
    PickedUp { fork: usize },
    /// The replacement of `leg` answered: fork `fork` carries that side
    /// from now on, its media at `rtp` (re-point the bridge, discarding
    /// what the replaced party still sends). Its formats came just before,
    /// as [`Action::LegFormats`]; the replaced dialog's BYE follows.
    Replaced { leg: Leg, fork: usize, rtp: SocketAddr },
    /// The replacement of `leg` did not happen: every new target failed
    /// (`status` is the best failure), none answered within the ring
    /// timeout (480), it was cancelled or the call ended (487). The call
    /// goes on as it was.
    ReplaceFailed { leg: Leg, status: u16 },
    /// A warm transfer's target answered and is being consulted: `leg`'s
    /// party (the agent) is moved to the consult media (the gateway's
    /// re-INVITE follows), where it talks with the target. Start bridging
    /// `agent` with `target` on the consult ports.
    Consulting { leg: Leg, agent: LegMedia, target: LegMedia },
    /// The consultation is over (completed, cancelled, or a party left):
    /// its media stops.
    ConsultEnded,
    /// A call the gateway originated: the agent's phone on fork `fork`
    /// answered and carries leg A from now on, its media at `rtp` (its
    /// formats follow, as [`Action::LegFormats`]). Start the media and place
    /// the far end now ([`Call::place`]); the agent hears ringback meanwhile.
    AgentAnswered { fork: usize, rtp: SocketAddr },
    /// The call is over; emitted exactly once.
    Ended { reason: EndReason, hangup_by: HangupBy, sip_status: u16 },
}

/// Where a party receives RTP and what it speaks (first format: what it
/// sends).
#[derive(Debug, Clone, PartialEq)]
pub struct LegMedia {
    pub rtp: SocketAddr,
    pub formats: Vec<Format>,
    pub rtcp_mux: bool,
}

/// The gateway's ports of a warm transfer's consultation (its own bridge):
/// the agent is re-anchored on `agent_port`, the target is offered
/// `target_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsultPorts {
    pub agent_port: u16,
    pub target_port: u16,
}

/// Credentials the gateway answers a target's 401/407 challenge with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCredentials {
    pub username: String,
    pub password: String,
}

/// One place a fork of the call goes to.
#[derive(Debug, Clone)]
pub struct Target {
    pub request_uri: String,
    pub dest: Destination,
    /// For a trunk that challenges.
    pub credentials: Option<AuthCredentials>,
    /// Route headers (an outbound proxy), in order.
    pub route: Vec<String>,
    /// The host name a TLS connection to `dest` must verify, when the
    /// target was named by DNS (`sips:phone.example.com`).
    pub server_name: Option<String>,
    /// Extra headers of this fork's INVITE (the auto-answer hints).
    pub headers: Vec<(String, String)>,
}

impl Target {
    pub fn new(request_uri: impl Into<String>, dest: Destination) -> Target {
        Target { request_uri: request_uri.into(), dest, credentials: None, route: Vec::new(), server_name: None, headers: Vec::new() }
    }

    /// Asks the device to answer by itself: the call was started or taken
    /// by its agent from the softphone, so ringing would only make the agent
    /// reach for the handset. Desk phones that allow it honour one of the
    /// two de-facto headers (`Call-Info: …;answer-after=0`, Polycom, Yealink,
    /// Cisco, Grandstream, Snom; `Alert-Info: …;info=alert-autoanswer`, older
    /// firmwares); the others ring as usual.
    pub fn auto_answer(mut self, host: &str) -> Target {
        self.headers.push(("Call-Info".into(), format!("<sip:{host}>;answer-after=0")));
        self.headers.push(("Alert-Info".into(), format!("<http://{host}/>;info=alert-autoanswer")));
        self
    }
}

/// Who the callee side is told is calling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presentation {
    /// User part of From (a number or extension).
    pub user: String,
    pub display: Option<String>,
    /// Host part of From; the gateway's own host when unset.
    pub host: Option<String>,
    /// P-Asserted-Identity value (a trusted network's asserted caller).
    pub asserted: Option<String>,
    /// `Privacy: id` requested by the caller.
    pub private: bool,
}

/// The gateway's RTP addresses for both sides.
#[derive(Debug, Clone, Copy)]
pub struct MediaPorts {
    pub ip: IpAddr,
    /// Port facing the caller (leg A).
    pub a_port: u16,
    /// Port facing the callee forks.
    pub b_port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for routing and media (driver work).
    Routing,
    /// Forks placed; waiting for one to answer.
    Calling,
    /// One fork answered.
    Connected,
    /// Ended; absorbing late messages until the linger deadline.
    Finished,
}

/// A leg of an established call, named by the side of the bridge it feeds
/// (side A, side B).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// Side A: the caller's dialog (the gateway its UAS), or the fork that
    /// replaced it.
    Caller,
    /// Side B: the fork that answered, or the fork that replaced it.
    Callee,
}

/// Which dialog carries a leg of the answered call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carrier {
    /// The caller's own dialog (leg A, the gateway is UAS).
    Uas,
    /// A fork's dialog (the gateway is UAC).
    Fork(usize),
}

/// A replacement of one leg in progress: its forks ring while the call
/// goes on.
#[derive(Debug, Clone)]
struct Replacement {
    leg: Leg,
    forks: Vec<usize>,
    /// Until a fork answers.
    deadline: Instant,
    /// A warm transfer: the target is consulted before it takes the leg.
    consult: Option<Consult>,
}

/// A warm transfer's consultation.
#[derive(Debug, Clone, Copy)]
struct Consult {
    ports: ConsultPorts,
    /// The target that answered and is being consulted.
    answered: Option<usize>,
}

/// Why a leg cannot be replaced now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplaceError {
    #[error("the call is not answered (or is in voicemail, or over)")]
    NotAnswered,
    #[error("a replacement of the call's {0:?} side is already ringing")]
    InProgress(Leg),
    #[error("there is nothing to ring")]
    NoTargets,
    #[error("no warm transfer's target has answered to be handed the call")]
    NotConsulting,
    #[error("the call is parked; only its parked side can be given a party (retrieve it)")]
    Parked,
}

/// A re-INVITE the gateway sent on a leg (hold or resume), until answered.
#[derive(Debug, Clone)]
struct OurReinvite {
    /// CSeq of the re-INVITE in flight; `None` while waiting to retry.
    cseq: Option<u32>,
    direction: Direction,
    /// After a 491: when to try again (§14.1).
    retry_at: Option<Instant>,
}

/// The 2xx to the caller, retransmitted until its ACK (§13.3.1.4).
#[derive(Debug, Clone)]
struct OkRetransmit {
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

/// The caller's own dialog, when the call came in as an INVITE (the
/// gateway is its UAS).
#[derive(Debug)]
struct Uas {
    invite: SipMessage,
    source: Destination,
    to_tag: String,
    dialog: Dialog,
}

/// Leg A: the caller's dialog (the gateway is UAS), or, for a call the
/// gateway placed itself (click-to-dial), only what the agent's phone
/// answered: a fork carries that leg from the start.
#[derive(Debug)]
struct CallerLeg {
    /// `None` for a call the gateway originated ([`Call::originate`]).
    uas: Option<Uas>,
    /// The caller's offer; on an originated call, the agent's phone's answer.
    offer: AudioDescription,
    /// Last provisional or final response to the INVITE.
    last_response: Option<SipMessage>,
    /// Status of the provisional sent (180 or 183).
    provisional: Option<u16>,
    final_status: Option<u16>,
    ok_retransmit: Option<OkRetransmit>,
    sdp_version: u64,
    answer_sdp: Option<String>,
    reinvite: Option<OurReinvite>,
    /// The ACK of the last re-INVITE answered, for its retransmitted 2xx.
    reinvite_ack: Option<(u32, SipMessage)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ForkState {
    /// INVITE sent, nothing heard yet.
    Trying,
    /// A provisional response arrived.
    Ringing,
    Answered,
    /// A final failure arrived, or the fork was given up.
    Done(u16),
}

/// One callee-side dialog (the gateway is UAC).
#[derive(Debug)]
struct Fork {
    target: Target,
    call_id: String,
    invite: SipMessage,
    cseq: u32,
    state: ForkState,
    /// CANCEL wanted before a provisional arrived (§9.1: wait for one).
    cancel_pending: Option<String>,
    cancelled: bool,
    dialog: Option<Dialog>,
    ack: Option<SipMessage>,
    auth_tried: bool,
    sdp_version: u64,
    reinvite: Option<OurReinvite>,
    reinvite_ack: Option<(u32, SipMessage)>,
    /// The fork's media as its last SDP said (its answer, or a re-offer).
    remote: Option<AudioDescription>,
}

/// One call through the B2BUA.
#[derive(Debug)]
pub struct Call {
    pub id: String,
    local: Local,
    timers: Timers,
    state: State,
    a: CallerLeg,
    forks: Vec<Fork>,
    winner: Option<usize>,
    early_media_fork: Option<usize>,
    media: Option<MediaPorts>,
    offer_sdp: String,
    ring_deadline: Option<Instant>,
    linger_until: Option<Instant>,
    ended: bool,
    ring_timeout: Duration,
    /// Unanswered and declined calls go to the callee's voicemail.
    voicemail: bool,
    /// The gateway answered the caller for voicemail.
    in_voicemail: bool,
    /// Where the call rang and as whom: rung again to screen a voicemail.
    placed: Option<(Vec<Target>, Presentation)>,
    /// Forks placed to screen the voicemail, and the one listening.
    screen_forks: Vec<usize>,
    screening: Option<usize>,
    /// Once the caller side was replaced: the fork carrying leg A (the
    /// caller's own dialog is released).
    caller_fork: Option<usize>,
    replacement: Option<Replacement>,
    /// A leg moved to the consult media during a warm transfer: the port
    /// its SDP names instead of its own (index: caller 0, callee 1).
    anchors: [Option<u16>; 2],
    /// What each leg's media was last set to (index: caller 0, callee 1).
    last_formats: [Vec<Format>; 2],
    /// A parked leg (F4): its party was hung up and nobody carries it
    /// until a replacement answers.
    parked: Option<Leg>,
    /// A call the gateway originated: the forks ringing the agent's
    /// devices, one of which becomes leg A before the far end is called.
    agent_forks: Vec<usize>,
}

/// Why an initial INVITE cannot become a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupError {
    pub code: u16,
    pub reason: String,
}

impl Call {
    /// A call from an initial INVITE that passed validation. Fails (with the
    /// status to answer) when the INVITE carries no usable audio offer.
    pub fn new(
        id: String,
        invite: SipMessage,
        source: Destination,
        local: Local,
        timers: Timers,
        ring_timeout: Duration,
    ) -> Result<Call, SetupError> {
        if invite.body.is_empty() {
            return Err(SetupError { code: 488, reason: "Not Acceptable Here (an SDP offer is required)".into() });
        }
        let offer = sdp::parse_audio(&invite.body)
            .map_err(|e| SetupError { code: 488, reason: format!("Not Acceptable Here ({e})") })?;
        if usable(&offer.formats).iter().all(|f| f.encoding.eq_ignore_ascii_case("telephone-event")) {
            return Err(SetupError { code: 488, reason: "Not Acceptable Here (offer PCMU or PCMA)".into() });
        }
        let to_tag = new_tag();
        let dialog = Dialog::as_uas(&invite, &to_tag, source)
            .ok_or_else(|| SetupError { code: 400, reason: "Bad Request (From, To or CSeq unusable)".into() })?;
        Ok(Call::with_caller_leg(id, local, timers, ring_timeout, Some(Uas { invite, source, to_tag, dialog }), offer))
    }

    /// A call the gateway places itself (click-to-dial, RFC 3725 third-party
    /// call control with the media anchored in the gateway): there is no
    /// caller's INVITE. [`Call::ring_agent`] rings the agent's devices
    /// first; the one that answers carries leg A ([`Action::AgentAnswered`])
    /// and only then is the far end placed with [`Call::place`], as if that
    /// phone had dialled it. Everything after is an ordinary call.
    pub fn originate(id: String, local: Local, timers: Timers, ring_timeout: Duration) -> Call {
        let nowhere = SocketAddr::from(([0, 0, 0, 0], 0));
        let offer = AudioDescription { rtp: nowhere, formats: Vec::new(), direction: Direction::SendRecv, ptime: None, rtcp_mux: false, rtcp: None };
        Call::with_caller_leg(id, local, timers, ring_timeout, None, offer)
    }

    /// A call before routing: leg A is the caller's UAS dialog, or none yet
    /// (an originated call, whose leg A a fork will carry).
    fn with_caller_leg(id: String, local: Local, timers: Timers, ring_timeout: Duration, uas: Option<Uas>, offer: AudioDescription) -> Call {
        Call {
            id,
            local,
            timers,
            state: State::Routing,
            a: CallerLeg {
                uas,
                offer,
                last_response: None,
                provisional: None,
                final_status: None,
                ok_retransmit: None,
                sdp_version: 1,
                answer_sdp: None,
                reinvite: None,
                reinvite_ack: None,
            },
            forks: Vec::new(),
            winner: None,
            early_media_fork: None,
            media: None,
            offer_sdp: String::new(),
            ring_deadline: None,
            voicemail: false,
            in_voicemail: false,
            placed: None,
            screen_forks: Vec::new(),
            screening: None,
            caller_fork: None,
            replacement: None,
            anchors: [None, None],
            last_formats: [Vec::new(), Vec::new()],
            parked: None,
            agent_forks: Vec::new(),
            linger_until: None,
            ended: false,
            ring_timeout,
        }
    }

    /// Rings the agent's devices for a call the gateway originates, all at
    /// once, as `who`, offering the gateway's own codecs on leg A's port.
    /// The first to answer carries leg A ([`Action::AgentAnswered`]) and the
    /// others are cancelled; none answering within the ring timeout, or all
    /// refusing, ends the call before the far end was ever called.
    pub fn ring_agent(&mut self, targets: Vec<Target>, who: &Presentation, media: MediaPorts, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.is_originated() || self.state != State::Routing || !self.agent_forks.is_empty() || targets.is_empty() {
            return out;
        }
        self.media = Some(media);
        let formats = callee_offer(&[]);
        let offer = sdp::build_with(session_id(&self.id), 1, media.ip, media.a_port, &formats, Direction::SendRecv, true);
        for target in targets {
            self.agent_forks.push(self.forks.len());
            self.invite_fork(target, who, offer.clone(), &mut out);
        }
        self.ring_deadline = Some(now + self.ring_timeout);
        self.state = State::Calling;
        out
    }

    /// Whether fork `i` rings (or rang) an agent's device for a call the
    /// gateway originated.
    fn is_agent_fork(&self, i: usize) -> bool {
        self.agent_forks.contains(&i)
    }

    /// Whether an originated call still waits for the agent's phone.
    pub fn agent_ringing(&self) -> bool {
        self.is_originated() && self.caller_fork.is_none() && !self.ended && self.parked.is_none()
    }

    /// The agent's phone answered an originated call: it carries leg A, the
    /// other devices stop ringing, and the far end is to be placed.
    fn agent_answered(&mut self, i: usize, msg: &SipMessage, now: Instant, out: &mut Vec<Action>) {
        let Ok(agent) = sdp::parse_audio(&msg.body) else {
            self.bye_fork(i, &q850(88, "Incompatible destination"), out);
            self.forks[i].state = ForkState::Done(488);
            return self.agent_fork_failed(488, now, out);
        };
        self.caller_fork = Some(i);
        for j in self.agent_forks.clone() {
            if j != i {
                self.cancel_fork(j, "SIP;cause=200;text=\"Call completed elsewhere\"", out);
            }
        }
        let formats = one_codec(&usable(&agent.formats));
        self.a.offer = AudioDescription { formats: formats.clone(), ..agent.clone() };
        self.ring_deadline = None;
        self.state = State::Routing; // the far end is placed next
        out.push(Action::AgentAnswered { fork: i, rtp: agent.rtp });
        self.leg_formats(Leg::Caller, formats, agent.rtcp_mux, out);
    }

    /// A fork to the agent's device failed before any answered: the call
    /// ends once every one did (or at once on a 6xx: the agent refused it).
    fn agent_fork_failed(&mut self, status: u16, now: Instant, out: &mut Vec<Action>) {
        if self.ended || self.caller_fork.is_some() {
            return;
        }
        let global = (600..700).contains(&status);
        let mut statuses = Vec::new();
        for j in &self.agent_forks {
            match self.forks[*j].state {
                ForkState::Done(s) => statuses.push(s),
                _ if global => {}
                _ => return, // another device still rings
            }
        }
        let best = if global { status } else { best_failure(&statuses) };
        self.cancel_forks(&format!("SIP;cause={best}"), out);
        let (reason, by) = match map_failure(best) {
            // The agent's own phone refused: the agent gave up.
            (_, EndReason::Busy) => (EndReason::Cancelled, HangupBy::Caller),
            (_, reason) => (reason, HangupBy::System),
        };
        self.a.final_status = Some(best);
        self.end(reason, by, best, now, out);
    }

    /// The agent answers its ringing call from the softphone: every fork
    /// still ringing is cancelled and `target` — the agent's chosen device,
    /// with the auto-answer hints ([`Target::auto_answer`]) — is invited as
    /// the call's callee was, so a desk phone that honours them picks up by
    /// itself. The call is answered when it answers, as any fork would; it
    /// rings for a full ring timeout from now.
    ///
    /// A browser leg (WebRTC) will be one more kind of target here: the
    /// softphone itself as the device the agent answers on.
    pub fn answer_on(&mut self, target: Target, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.is_ringing() || self.is_originated() {
            return out;
        }
        let Some((_, who)) = self.placed.clone() else { return out };
        self.cancel_forks("SIP;cause=200;text=\"Call completed elsewhere\"", &mut out);
        let offer = self.offer_sdp.clone();
        self.invite_fork(target, &who, offer, &mut out);
        self.ring_deadline = Some(now + self.ring_timeout);
        out
    }

    /// The caller's offered audio (RTP address and formats).
    pub fn caller_offer(&self) -> &AudioDescription {
        &self.a.offer
    }

    /// The Call-ID of leg A: the caller's, or on a call the gateway
    /// originated the fork to the agent's phone that answered (the first
    /// one placed while they ring; empty before any is).
    pub fn caller_call_id(&self) -> &str {
        match &self.a.uas {
            Some(uas) => &uas.dialog.call_id,
            None => self.caller_fork.or(self.agent_forks.first().copied()).map_or("", |i| self.forks[i].call_id.as_str()),
        }
    }

    /// Whether the gateway placed this call itself (no caller's INVITE).
    pub fn is_originated(&self) -> bool {
        self.a.uas.is_none()
    }

    /// The Call-IDs of the callee forks, in fork order.
    pub fn fork_call_ids(&self) -> impl Iterator<Item = &str> {
        self.forks.iter().map(|f| f.call_id.as_str())
    }

    /// `100 Trying` for the caller, sent as soon as the INVITE is accepted
    /// (none for a call the gateway originated).
    pub fn trying(&self) -> Option<Action> {
        let uas = self.a.uas.as_ref()?;
        Some(Action::Send(uas.source, make_response(&uas.invite, 100, None, &self.local.user_agent)))
    }

    /// Ends the call before any fork was placed (routing failed, nobody to
    /// ring, no media ports).
    pub fn reject(&mut self, code: u16, reason: EndReason, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.final_to_caller(code, now, &mut out);
        self.end(reason, HangupBy::System, code, now, &mut out);
        out
    }

    /// Places one fork per target, all at once, with the gateway's own offer.
    pub fn place(&mut self, targets: Vec<Target>, who: &Presentation, media: MediaPorts, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state != State::Routing || (targets.is_empty() && !self.voicemail) {
            return out;
        }
        self.media = Some(media);
        if targets.is_empty() {
            // Nothing of the callee's can ring: straight to its voicemail.
            self.answer_for_voicemail(now, &mut out);
            return out;
        }
        let formats: Vec<Format> = callee_offer(&self.a.offer.formats);
        // rtcp-mux offered (RFC 5761): taken by WebRTC and modern phones,
        // ignored by the rest, who keep RTCP on the port above.
        self.offer_sdp = sdp::build_with(session_id(&self.id), 1, media.ip, media.b_port, &formats, Direction::SendRecv, true);
        self.placed = Some((targets.clone(), who.clone()));
        for target in targets {
            let offer = self.offer_sdp.clone();
            self.invite_fork(target, who, offer, &mut out);
        }
        self.ring_deadline = Some(now + self.ring_timeout);
        self.state = State::Calling;
        out
    }

    /// Sends the INVITE of one new fork to `target`, as `who`, offering `offer`.
    fn invite_fork(&mut self, target: Target, who: &Presentation, offer: String, out: &mut Vec<Action>) {
        let max_forwards = self
            .a
            .uas
            .as_ref()
            .and_then(|u| u.invite.header("Max-Forwards"))
            .and_then(|v| v.trim().parse::<u32>().ok())
            .map(|v| v.saturating_sub(1).max(1))
            .unwrap_or(70);
        let call_id = new_call_id(&self.local.host);
        let host = who.host.clone().unwrap_or_else(|| self.local.host.clone());
        let from_uri = format!("sip:{}@{}", who.user, host);
        let from = match &who.display {
            Some(d) if !who.private => format!("\"{}\" <{}>;tag={}", d.replace('"', ""), from_uri, new_tag()),
            _ if who.private => format!("\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag={}", new_tag()),
            _ => format!("<{}>;tag={}", from_uri, new_tag()),
        };
        let mut invite = SipMessage::request("INVITE", target.request_uri.clone());
        invite
            .push_header("Via", self.local.via(&target.dest, &new_branch()))
            .push_header("Max-Forwards", max_forwards.to_string());
        for r in &target.route {
            invite.push_header("Route", r.clone());
        }
        invite
            .push_header("From", from)
            .push_header("To", format!("<{}>", target.request_uri))
            .push_header("Call-ID", call_id.clone())
            .push_header("CSeq", "1 INVITE")
            .push_header("Contact", self.local.contact(&target.dest));
        if let Some(pai) = &who.asserted {
            invite.push_header("P-Asserted-Identity", pai.clone());
        }
        if who.private {
            invite.push_header("Privacy", "id");
        }
        invite
            .push_header("Allow", ALLOW)
            .push_header("User-Agent", self.local.user_agent.clone())
            .push_header("X-Switchboard-Call-ID", self.id.clone());
        for (name, value) in &target.headers {
            invite.push_header(name.as_str(), value.clone());
        }
        invite.set_body("application/sdp", Bytes::from(offer));
        out.push(Action::Send(target.dest, invite.clone()));
        self.forks.push(Fork {
            target,
            call_id,
            invite,
            cseq: 1,
            state: ForkState::Trying,
            cancel_pending: None,
            cancelled: false,
            dialog: None,
            ack: None,
            auth_tried: false,
            sdp_version: 1,
            reinvite: None,
            reinvite_ack: None,
            remote: None,
        });
    }

    /// Whether a fork answered and the call is still up.
    pub fn is_answered(&self) -> bool {
        self.winner.is_some() && !self.ended
    }

    /// Sends the caller to voicemail when nobody answers or the callee
    /// declines (set before or while ringing).
    pub fn set_voicemail(&mut self, on: bool) {
        self.voicemail = on;
    }

    /// Whether the gateway answered the caller for voicemail.
    pub fn in_voicemail(&self) -> bool {
        self.in_voicemail && !self.ended
    }

    /// Screening (F13): rings the callee's devices again while the caller
    /// leaves a voicemail; the first to answer hears the caller without
    /// being heard, until it picks up.
    pub fn screen(&mut self, _now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.in_voicemail() || !self.screen_forks.is_empty() {
            return out;
        }
        let Some((targets, who)) = self.placed.clone() else { return out };
        for target in targets {
            self.screen_forks.push(self.forks.len());
            let offer = self.offer_sdp.clone();
            self.invite_fork(target, &who, offer, &mut out);
        }
        out
    }

    /// The screening device takes the call: the voicemail ends (what the
    /// caller said so far is kept) and the two are bridged.
    pub fn pick_up(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(i) = self.screening.filter(|_| self.in_voicemail()) else { return out };
        self.in_voicemail = false;
        self.winner = Some(i);
        self.screening = None;
        for j in self.screen_forks.clone() {
            if j != i {
                self.cancel_fork(j, "SIP;cause=200;text=\"Call completed elsewhere\"", &mut out);
            }
        }
        let _ = now;
        out.push(Action::PickedUp { fork: i });
        out
    }

    /// A screening fork answered: it listens (its SDP goes to the bridge).
    fn screening_answered(&mut self, i: usize, msg: &SipMessage, out: &mut Vec<Action>) {
        if !self.screen_forks.contains(&i) || self.screening.is_some() {
            self.bye_fork(i, &q850(16, "Normal call clearing"), out);
            return;
        }
        let Ok(callee) = sdp::parse_audio(&msg.body) else {
            self.bye_fork(i, &q850(88, "Incompatible destination"), out);
            return;
        };
        self.screening = Some(i);
        for j in self.screen_forks.clone() {
            if j != i {
                self.cancel_fork(j, "SIP;cause=200;text=\"Call completed elsewhere\"", out);
            }
        }
        self.leg_formats(Leg::Callee, usable(&callee.formats), callee.rtcp_mux, out);
        out.push(Action::Screening { fork: i, callee_rtp: callee.rtp });
    }

    /// Ends an answered call on behalf of the system (a voicemail that is
    /// over): BYE to every leg, normal clearing.
    pub fn hang_up(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.is_originated() && !self.ended && self.a.final_status.is_none() {
            // The agent gives up its own call before the far end answered.
            self.cancel_forks("SIP;cause=487;text=\"Request terminated\"", &mut out);
            self.bye_caller(&q850(16, "Normal call clearing"), &mut out);
            self.a.final_status = Some(487);
            self.end(EndReason::Cancelled, HangupBy::Caller, 487, now, &mut out);
            return out;
        }
        if self.ended || self.a.final_status != Some(200) {
            return out;
        }
        let reason = q850(16, "Normal call clearing");
        self.bye_caller(&reason, &mut out);
        self.hang_up_callee(&reason, &mut out);
        let end = if self.in_voicemail { EndReason::Voicemail } else { EndReason::Completed };
        self.end(end, HangupBy::System, 200, now, &mut out);
        out
    }

    /// The agent declines the ringing call from its softphone: every fork
    /// is cancelled, and the caller goes to the callee's voicemail if it has
    /// one, else is answered 603 Decline. Nothing happens once the call is
    /// answered, in voicemail or over.
    pub fn decline(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.ended || self.winner.is_some() || self.in_voicemail || self.a.final_status.is_some() || self.state == State::Routing {
            return out;
        }
        let reason = "SIP;cause=603;text=\"Declined\"";
        if self.voicemail {
            self.cancel_forks(reason, &mut out);
            self.answer_for_voicemail(now, &mut out);
            return out;
        }
        self.cancel_forks(reason, &mut out);
        self.final_to_caller(603, now, &mut out);
        self.end(EndReason::Busy, HangupBy::Callee, 603, now, &mut out);
        out
    }

    /// Whether the call still rings (forks placed, nobody answered yet).
    pub fn is_ringing(&self) -> bool {
        self.state != State::Routing && !self.ended && self.winner.is_none() && !self.in_voicemail && self.a.final_status.is_none()
    }

    /// Nobody took the call: cancel what still rings and answer the caller
    /// with the gateway's own media for the voicemail greeting.
    fn answer_for_voicemail(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.cancel_forks("SIP;cause=480;text=\"No answer\"", out);
        let offered = usable(&self.a.offer.formats);
        let answer = self.caller_answer(&offered);
        let caller_formats = sdp::parse_audio(answer.as_bytes()).map(|a| a.formats).unwrap_or_default();
        self.ok_to_caller(answer, now, out);
        self.ring_deadline = None;
        self.state = State::Connected;
        self.in_voicemail = true;
        self.leg_formats(Leg::Caller, caller_formats, self.a.offer.rtcp_mux, out);
        out.push(Action::Voicemail);
    }

    /// Puts a leg of the answered call on hold (`sendonly` from the gateway)
    /// or takes it off hold, with a re-INVITE on that leg only. A re-INVITE
    /// crossing one from the peer (glare) is retried after the §14.1 timer.
    pub fn hold(&mut self, leg: Leg, on: bool, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.ended || self.winner.is_none() || self.media.is_none() {
            return out;
        }
        let direction = if on { Direction::SendOnly } else { Direction::SendRecv };
        let pending = OurReinvite { cseq: None, direction, retry_at: None };
        match self.carrier(leg) {
            Some(Carrier::Uas) => self.a.reinvite = Some(pending),
            Some(Carrier::Fork(i)) => self.forks[i].reinvite = Some(pending),
            None => return out,
        }
        self.send_reinvite(leg, now, &mut out);
        out
    }

    /// Replaces `leg` of the answered call with a new dialog to `targets`,
    /// all rung at once as `who`, offering the gateway's media on that
    /// leg's port. Nothing changes while they ring; the first to answer
    /// takes the leg ([`Action::Replaced`], then BYE to the replaced
    /// dialog) and the others are cancelled. When none answers within the
    /// ring timeout, or all fail, [`Action::ReplaceFailed`] says so and the
    /// call goes on as it was. The other leg sees nothing of it.
    pub fn replace(&mut self, leg: Leg, targets: Vec<Target>, who: &Presentation, now: Instant) -> Result<Vec<Action>, ReplaceError> {
        self.place_replacement(leg, targets, who, None, now)
    }

    /// A warm transfer of `leg`: like [`Call::replace`], but the target is
    /// offered the consult media's `target_port`, and when it answers it is
    /// consulted first ([`Action::Consulting`]: `leg`'s party is moved to
    /// `agent_port` to talk with it) until [`Call::complete_consult`] hands
    /// it the leg or [`Call::cancel_replacement`] takes the party back.
    pub fn consult(&mut self, leg: Leg, targets: Vec<Target>, who: &Presentation, ports: ConsultPorts, now: Instant) -> Result<Vec<Action>, ReplaceError> {
        self.place_replacement(leg, targets, who, Some(ports), now)
    }

    /// Whether a warm transfer's target answered and is being consulted.
    pub fn consulting(&self) -> bool {
        self.consulted().is_some()
    }

    /// The fork of the warm transfer's target being consulted.
    pub fn consulted_fork(&self) -> Option<usize> {
        self.consulted().map(|(_, i)| i)
    }

    /// Ends the consultation by handing the leg to the consulted target:
    /// it is re-INVITEd onto the leg's own port, the bridge is re-pointed
    /// to it ([`Action::Replaced`]) and the party it replaces gets a BYE.
    pub fn complete_consult(&mut self, now: Instant) -> Result<Vec<Action>, ReplaceError> {
        let mut out = Vec::new();
        if !self.consulting() {
            return Err(ReplaceError::NotConsulting);
        }
        self.hand_over_to_consulted(true, now, &mut out);
        Ok(out)
    }

    /// The consulted target of a warm transfer, and the leg it is to take.
    fn consulted(&self) -> Option<(Leg, usize)> {
        let r = self.replacement.as_ref()?;
        Some((r.leg, r.consult?.answered?))
    }

    /// The consulted target takes the leg; `bye_replaced` is false when the
    /// replaced party already hung up.
    fn hand_over_to_consulted(&mut self, bye_replaced: bool, now: Instant, out: &mut Vec<Action>) {
        let Some((leg, i)) = self.consulted() else { return };
        self.replacement = None;
        let replaced = self.carrier(leg);
        match leg {
            Leg::Caller => self.caller_fork = Some(i),
            Leg::Callee => self.winner = Some(i),
        }
        self.anchors[leg_index(leg)] = None;
        if let Some(remote) = self.forks[i].remote.clone() {
            self.leg_formats(leg, usable(&remote.formats), remote.rtcp_mux, out);
            out.push(Action::Replaced { leg, fork: i, rtp: remote.rtp });
        }
        out.push(Action::ConsultEnded);
        // From the consult port to the leg's own.
        self.forks[i].reinvite = Some(OurReinvite { cseq: None, direction: Direction::SendRecv, retry_at: None });
        self.send_reinvite(leg, now, out);
        if bye_replaced {
            self.release(replaced, &q850(16, "Call transferred"), out);
        }
    }

    /// Hangs up the dialog that carried a leg before it was replaced or
    /// parked, with `reason`.
    fn release(&mut self, replaced: Option<Carrier>, reason: &str, out: &mut Vec<Action>) {
        match replaced {
            Some(Carrier::Uas) => {
                // Released: no more 2xx retransmissions or re-INVITEs on it.
                self.a.ok_retransmit = None;
                self.a.reinvite = None;
                self.bye_uas(reason, out);
            }
            Some(Carrier::Fork(j)) => {
                self.forks[j].reinvite = None;
                self.bye_fork(j, reason, out);
            }
            None => {}
        }
    }

    /// The gateway's port in `leg`'s SDP: its own side's, or the consult
    /// port the leg was moved to.
    fn port_of(&self, leg: Leg) -> Option<u16> {
        let media = self.media?;
        let own = match leg {
            Leg::Caller => media.a_port,
            Leg::Callee => media.b_port,
        };
        Some(self.anchors[leg_index(leg)].unwrap_or(own))
    }

    /// The gateway's port in fork `i`'s SDP.
    fn fork_port(&self, i: usize) -> u16 {
        let media = self.media.map_or(0, |m| m.b_port);
        match self.fork_leg(i) {
            Some(leg) => self.port_of(leg).unwrap_or(media),
            None => match self.replacement.as_ref().filter(|r| r.forks.contains(&i)).and_then(|r| r.consult) {
                Some(c) => c.ports.target_port,
                None => media,
            },
        }
    }

    /// Tells the driver what `leg`'s media uses now, and remembers it.
    fn leg_formats(&mut self, leg: Leg, formats: Vec<Format>, rtcp_mux: bool, out: &mut Vec<Action>) {
        self.last_formats[leg_index(leg)] = formats.clone();
        out.push(Action::LegFormats { leg, formats, rtcp_mux });
    }

    /// Where `leg`'s party receives RTP and what it speaks now.
    fn leg_media(&self, leg: Leg) -> Option<LegMedia> {
        let formats = self.last_formats[leg_index(leg)].clone();
        match self.carrier(leg)? {
            Carrier::Uas => Some(LegMedia { rtp: self.a.offer.rtp, formats, rtcp_mux: self.a.offer.rtcp_mux }),
            Carrier::Fork(i) => self.forks[i].remote.as_ref().map(|r| LegMedia { rtp: r.rtp, formats, rtcp_mux: r.rtcp_mux }),
        }
    }

    fn place_replacement(
        &mut self,
        leg: Leg,
        targets: Vec<Target>,
        who: &Presentation,
        consult: Option<ConsultPorts>,
        now: Instant,
    ) -> Result<Vec<Action>, ReplaceError> {
        let Some(media) = self.media else { return Err(ReplaceError::NotAnswered) };
        if !self.is_answered() || self.in_voicemail || self.a.final_status != Some(200) {
            return Err(ReplaceError::NotAnswered);
        }
        if let Some(r) = &self.replacement {
            return Err(ReplaceError::InProgress(r.leg));
        }
        if self.parked.is_some_and(|p| p != leg || consult.is_some()) {
            return Err(ReplaceError::Parked);
        }
        if targets.is_empty() {
            return Err(ReplaceError::NoTargets);
        }
        let port = match (consult, leg) {
            (Some(c), _) => c.target_port,
            (None, Leg::Caller) => media.a_port,
            (None, Leg::Callee) => media.b_port,
        };
        // The same formats as every fork is offered: the caller's first,
        // then the gateway's own (transcoded when the new party takes one
        // the other leg does not speak).
        let formats = callee_offer(&self.a.offer.formats);
        let offer = sdp::build_with(session_id(&self.id), 1, media.ip, port, &formats, Direction::SendRecv, true);
        let mut out = Vec::new();
        let mut forks = Vec::new();
        for target in targets {
            forks.push(self.forks.len());
            self.invite_fork(target, who, offer.clone(), &mut out);
        }
        let consult = consult.map(|ports| Consult { ports, answered: None });
        self.replacement = Some(Replacement { leg, forks, deadline: now + self.ring_timeout, consult });
        Ok(out)
    }

    /// The leg being replaced, while its new dialog rings.
    pub fn replacing(&self) -> Option<Leg> {
        self.replacement.as_ref().map(|r| r.leg)
    }

    /// Gives up the replacement in progress: its forks are cancelled and
    /// the call goes on as it was ([`Action::ReplaceFailed`] with 487).
    pub fn cancel_replacement(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.fail_replacement(487, "SIP;cause=487;text=\"Request terminated\"", now, &mut out);
        out
    }

    /// Parks `leg` (F4): its party is hung up and the leg stays empty —
    /// the other party's dialog goes on untouched (the driver plays it
    /// music) — until [`Call::replace`] gives the leg a new party.
    pub fn park(&mut self, leg: Leg, _now: Instant) -> Result<Vec<Action>, ReplaceError> {
        if !self.is_answered() || self.in_voicemail || self.a.final_status != Some(200) {
            return Err(ReplaceError::NotAnswered);
        }
        if let Some(r) = &self.replacement {
            return Err(ReplaceError::InProgress(r.leg));
        }
        if self.parked.is_some() {
            return Err(ReplaceError::Parked);
        }
        let mut out = Vec::new();
        let released = self.carrier(leg);
        self.parked = Some(leg);
        self.release(released, &q850(16, "Call parked"), &mut out);
        Ok(out)
    }

    /// The parked leg, if the call is parked.
    pub fn parked(&self) -> Option<Leg> {
        self.parked
    }

    /// Whether the caller's own dialog no longer carries leg A.
    fn uas_released(&self) -> bool {
        self.a.uas.is_none() || self.caller_fork.is_some() || self.parked == Some(Leg::Caller)
    }

    /// Which dialog carries `leg` of the answered call (none while parked).
    fn carrier(&self, leg: Leg) -> Option<Carrier> {
        if self.parked == Some(leg) {
            return None;
        }
        match leg {
            Leg::Caller => Some(self.caller_fork.map_or(Carrier::Uas, Carrier::Fork)),
            Leg::Callee => self.winner.map(Carrier::Fork),
        }
    }

    /// The leg fork `i` carries, if it carries one.
    fn fork_leg(&self, i: usize) -> Option<Leg> {
        let leg = self.fork_carries(i)?;
        (self.parked != Some(leg)).then_some(leg)
    }

    fn fork_carries(&self, i: usize) -> Option<Leg> {
        if self.caller_fork == Some(i) {
            Some(Leg::Caller)
        } else if self.winner == Some(i) {
            Some(Leg::Callee)
        } else {
            None
        }
    }

    fn is_replacement_fork(&self, i: usize) -> bool {
        self.replacement.as_ref().is_some_and(|r| r.forks.contains(&i))
    }

    /// A replacement fork answered: it takes the leg, the other new forks
    /// are cancelled and the replaced dialog is hung up.
    fn replacement_answered(&mut self, i: usize, msg: &SipMessage, now: Instant, out: &mut Vec<Action>) {
        let Ok(party) = sdp::parse_audio(&msg.body) else {
            self.bye_fork(i, &q850(88, "Incompatible destination"), out);
            self.forks[i].state = ForkState::Done(488);
            self.replacement_fork_failed(488, now, out);
            return;
        };
        let Some(r) = self.replacement.clone() else { return };
        for j in r.forks.iter().copied().filter(|j| *j != i) {
            self.cancel_fork(j, "SIP;cause=200;text=\"Call completed elsewhere\"", out);
        }
        if let Some(consult) = r.consult {
            // Warm: consulted first. The agent's party moves to the consult
            // media, where the target already is.
            let Some(agent) = self.leg_media(r.leg) else { return };
            if let Some(c) = self.replacement.as_mut().and_then(|r| r.consult.as_mut()) {
                c.answered = Some(i);
            }
            self.anchors[leg_index(r.leg)] = Some(consult.ports.agent_port);
            let target = LegMedia { rtp: party.rtp, formats: usable(&party.formats), rtcp_mux: party.rtcp_mux };
            out.push(Action::Consulting { leg: r.leg, agent, target });
            self.reanchor(r.leg, now, out);
            return;
        }
        self.replacement = None;
        let replaced = self.carrier(r.leg);
        match r.leg {
            Leg::Caller => self.caller_fork = Some(i),
            Leg::Callee => self.winner = Some(i),
        }
        self.leg_formats(r.leg, usable(&party.formats), party.rtcp_mux, out);
        out.push(Action::Replaced { leg: r.leg, fork: i, rtp: party.rtp });
        if self.parked == Some(r.leg) {
            self.parked = None; // retrieved: nobody to hang up
        }
        self.release(replaced, &q850(16, "Call transferred"), out);
    }

    /// Re-INVITEs `leg`'s party onto the port it is anchored on now.
    fn reanchor(&mut self, leg: Leg, now: Instant, out: &mut Vec<Action>) {
        let pending = OurReinvite { cseq: None, direction: Direction::SendRecv, retry_at: None };
        match self.carrier(leg) {
            Some(Carrier::Uas) => self.a.reinvite = Some(pending),
            Some(Carrier::Fork(i)) => self.forks[i].reinvite = Some(pending),
            None => return,
        }
        self.send_reinvite(leg, now, out);
    }

    /// A replacement fork failed with `status`: a global failure (6xx)
    /// ends the replacement at once, otherwise it ends when every one of
    /// its forks failed, with the best failure.
    fn replacement_fork_failed(&mut self, status: u16, now: Instant, out: &mut Vec<Action>) {
        let Some(r) = &self.replacement else { return };
        if (600..700).contains(&status) {
            return self.fail_replacement(status, &format!("SIP;cause={status}"), now, out);
        }
        let mut statuses = Vec::new();
        for j in &r.forks {
            match self.forks[*j].state {
                ForkState::Done(s) => statuses.push(s),
                _ => return, // still ringing somewhere
            }
        }
        let best = best_failure(&statuses);
        self.fail_replacement(best, "SIP;cause=487;text=\"Request terminated\"", now, out);
    }

    /// Ends the replacement in progress with `status`, cancelling what
    /// still rings with `reason`.
    fn fail_replacement(&mut self, status: u16, reason: &str, now: Instant, out: &mut Vec<Action>) {
        let Some(r) = self.replacement.take() else { return };
        for j in r.forks {
            self.cancel_fork(j, reason, out);
        }
        if let Some(i) = r.consult.and_then(|c| c.answered) {
            // A consultation: the target is hung up (unless it left), and
            // the agent's party goes back to its own port.
            if self.forks[i].state == ForkState::Answered {
                self.bye_fork(i, &q850(16, "Normal call clearing"), out);
            }
            self.anchors[leg_index(r.leg)] = None;
            if !self.ended {
                self.reanchor(r.leg, now, out);
            }
            out.push(Action::ConsultEnded);
        }
        out.push(Action::ReplaceFailed { leg: r.leg, status });
    }

    /// A request on leg A (the Call-ID of the caller's INVITE), delivered
    /// once by the transaction layer.
    pub fn on_caller_request(&mut self, msg: SipMessage, source: Destination, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let method = msg.method().unwrap_or("").to_owned();
        if self.uas_released() {
            // The caller's dialog was replaced (or parked) and hung up: a BYE crossing
            // ours is confirmed, anything else is for a dialog that is gone.
            match method.as_str() {
                "ACK" => {}
                "BYE" => out.push(Action::Send(source, self.respond(&msg, 200, None))),
                _ => out.push(Action::Send(source, self.respond(&msg, 481, None))),
            }
            return out;
        }
        let in_dialog = msg.header("To").and_then(NameAddr::parse).is_some_and(|n| n.tag().is_some());
        if in_dialog && method != "ACK" && method != "CANCEL" {
            if let Some(Err(DialogError::OutOfOrder)) = self.a.uas.as_mut().map(|u| u.dialog.on_request(&msg)) {
                out.push(Action::Send(source, self.respond(&msg, 500, None)));
                return out;
            }
        }
        match method.as_str() {
            "INVITE" if !in_dialog => {
                // A copy the transaction layer no longer knows: repeat.
                if let Some(uas) = &self.a.uas {
                    let last = self.a.last_response.clone().unwrap_or_else(|| self.respond(&uas.invite, 100, None));
                    out.push(Action::Send(uas.source, last));
                }
            }
            "INVITE" => self.caller_reoffer(msg, source, true, &mut out),
            "UPDATE" => self.caller_reoffer(msg, source, false, &mut out),
            "ACK" => self.a.ok_retransmit = None,
            "CANCEL" => {
                let tag = self.a.uas.as_ref().map(|u| u.to_tag.clone());
                out.push(Action::Send(source, self.respond(&msg, 200, tag.as_deref())));
                if self.a.final_status.is_none() {
                    self.final_to_caller(487, now, &mut out);
                    self.cancel_forks("SIP;cause=487;text=\"Request terminated\"", &mut out);
                    self.end(EndReason::Cancelled, HangupBy::Caller, 487, now, &mut out);
                }
            }
            "BYE" => {
                out.push(Action::Send(source, self.respond(&msg, 200, None)));
                if self.a.final_status.is_none() {
                    // BYE on an early dialog: the caller gave up.
                    self.final_to_caller(487, now, &mut out);
                    self.cancel_forks("SIP;cause=487;text=\"Request terminated\"", &mut out);
                    self.end(EndReason::Cancelled, HangupBy::Caller, 487, now, &mut out);
                } else if self.consulted().is_some_and(|(leg, _)| leg == Leg::Caller) {
                    // The agent (the caller) hung up while consulting: the target takes over.
                    self.a.ok_retransmit = None;
                    self.hand_over_to_consulted(false, now, &mut out);
                } else if !self.ended {
                    self.a.ok_retransmit = None;
                    self.hang_up_callee(&q850(16, "Normal call clearing"), &mut out);
                    let end = if self.in_voicemail { EndReason::Voicemail } else { EndReason::Completed };
                    self.end(end, HangupBy::Caller, 200, now, &mut out);
                }
            }
            "OPTIONS" | "INFO" => {
                let mut ok = self.respond(&msg, 200, None);
                ok.push_header("Allow", ALLOW);
                out.push(Action::Send(source, ok));
                if let Some(d) = info_dtmf(&msg, Leg::Caller) {
                    out.push(d);
                }
            }
            _ => {
                let mut r = self.respond(&msg, 405, None);
                r.push_header("Allow", ALLOW);
                out.push(Action::Send(source, r));
            }
        }
        out
    }

    /// A response on leg A: to the gateway's re-INVITE (hold), or to a BYE
    /// (nothing to do: the transaction layer stopped retransmitting).
    pub fn on_caller_response(&mut self, msg: SipMessage, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.uas_released() {
            self.reinvite_response(Carrier::Uas, &msg, now, &mut out);
        }
        out
    }

    /// A message on a fork (its Call-ID), delivered by the transaction layer.
    pub fn on_callee_message(&mut self, msg: SipMessage, source: Destination, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let call_id = msg.header("Call-ID").unwrap_or("");
        let Some(i) = self.forks.iter().position(|f| f.call_id == call_id) else { return out };
        if msg.is_request() {
            self.callee_request(i, msg, source, now, &mut out);
            return out;
        }
        let (Some(status), Some(cseq)) = (msg.status(), msg.header("CSeq").and_then(CSeq::parse)) else { return out };
        if cseq.method == "INVITE" && self.fork_leg(i).is_some() && cseq.seq != self.forks[i].cseq {
            self.reinvite_response(Carrier::Fork(i), &msg, now, &mut out);
            return out;
        }
        if cseq.method != "INVITE" || cseq.seq != self.forks[i].cseq {
            return out; // BYE/CANCEL answers, or the INVITE before authentication
        }
        match status {
            100 => {}
            101..=199 => self.fork_provisional(i, &msg, now, &mut out),
            200..=299 => self.fork_answered(i, &msg, now, &mut out),
            401 | 407 if self.can_authenticate(i) => self.fork_authenticate(i, &msg, &mut out),
            _ => self.fork_failed(i, status, now, &mut out),
        }
        out
    }

    /// The earliest time [`Call::on_timer`] has work to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let ok = self.a.ok_retransmit.as_ref().map(|r| r.next.min(r.give_up));
        let retry_a = self.retry_at(Leg::Caller);
        let retry_b = self.retry_at(Leg::Callee);
        let replacement = self.replacement.as_ref().filter(|r| r.consult.is_none_or(|c| c.answered.is_none())).map(|r| r.deadline);
        [ok, self.ring_deadline, self.linger_until, retry_a, retry_b, replacement].into_iter().flatten().min()
    }

    /// When the re-INVITE of `leg` that met a 491 is tried again.
    fn retry_at(&self, leg: Leg) -> Option<Instant> {
        let reinvite = match self.carrier(leg)? {
            Carrier::Uas => self.a.reinvite.as_ref(),
            Carrier::Fork(i) => self.forks[i].reinvite.as_ref(),
        };
        reinvite.and_then(|r| r.retry_at)
    }

    /// Fires every timer due at `now`.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(r) = self.a.ok_retransmit.as_mut() {
            if now >= r.give_up {
                // The caller never ACKed our 2xx (§13.3.1.4): end the call.
                self.a.ok_retransmit = None;
                if !self.ended {
                    self.bye_caller(&q850(102, "Recovery on timer expiry"), &mut out);
                    self.hang_up_callee(&q850(102, "Recovery on timer expiry"), &mut out);
                    self.end(EndReason::Failed, HangupBy::System, 408, now, &mut out);
                }
            } else if now >= r.next {
                r.interval = (r.interval * 2).min(self.timers.t2);
                r.next = now + r.interval;
                if let (Some(ok), Some(uas)) = (self.a.last_response.clone(), &self.a.uas) {
                    out.push(Action::Send(uas.source, ok));
                }
            }
        }
        if !self.ended {
            for leg in [Leg::Caller, Leg::Callee] {
                if self.retry_at(leg).is_some_and(|t| now >= t) {
                    self.send_reinvite(leg, now, &mut out);
                }
            }
            if self.replacement.as_ref().is_some_and(|r| now >= r.deadline && r.consult.is_none_or(|c| c.answered.is_none())) {
                self.fail_replacement(480, "SIP;cause=480;text=\"No answer\"", now, &mut out);
            }
        }
        if self.ring_deadline.is_some_and(|d| now >= d) {
            self.ring_deadline = None;
            if !self.ended && self.winner.is_none() && self.a.final_status.is_none() {
                if self.voicemail {
                    self.answer_for_voicemail(now, &mut out);
                } else {
                    self.cancel_forks("SIP;cause=480;text=\"No answer\"", &mut out);
                    self.final_to_caller(480, now, &mut out);
                    self.end(EndReason::NoAnswer, HangupBy::System, 480, now, &mut out);
                }
            }
        }
        out
    }

    /// True once the call ended and its linger window passed.
    pub fn is_finished(&self, now: Instant) -> bool {
        self.linger_until.is_some_and(|t| now >= t)
    }

    pub fn has_ended(&self) -> bool {
        self.ended
    }

    /// Hangs up every leg on behalf of the system (shutdown, media failure).
    pub fn terminate(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        let reason = q850(41, "Temporary failure");
        if self.a.final_status.is_none() {
            self.final_to_caller(503, now, &mut out);
            self.cancel_forks("SIP;cause=503;text=\"Service unavailable\"", &mut out);
        } else {
            self.bye_caller(&reason, &mut out);
            self.hang_up_callee(&reason, &mut out);
        }
        self.end(EndReason::Failed, HangupBy::System, 503, now, &mut out);
        out
    }

    // ---- leg A internals ----

    fn respond(&self, req: &SipMessage, code: u16, tag: Option<&str>) -> SipMessage {
        make_response(req, code, tag, &self.local.user_agent)
    }

    fn end(&mut self, reason: EndReason, by: HangupBy, status: u16, now: Instant, out: &mut Vec<Action>) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.fail_replacement(487, "SIP;cause=487;text=\"Request terminated\"", now, out);
        self.state = State::Finished;
        self.ring_deadline = None;
        self.linger_until = Some(now + LINGER);
        out.push(Action::Ended { reason, hangup_by: by, sip_status: status });
    }

    /// The caller's answer SDP: the formats both sides share, on leg A's port.
    fn caller_answer(&mut self, callee_formats: &[Format]) -> String {
        if let Some(a) = &self.a.answer_sdp {
            return a.clone();
        }
        let media = self.media.expect("media allocated before forks are placed");
        let formats = answer_formats(&self.a.offer.formats, callee_formats);
        let answer = sdp::build_with(session_id(&self.id), self.a.sdp_version, media.ip, media.a_port, &formats, Direction::SendRecv, self.a.offer.rtcp_mux);
        self.a.answer_sdp = Some(answer.clone());
        answer
    }

    fn provisional_to_caller(&mut self, code: u16, sdp: Option<String>, out: &mut Vec<Action>) {
        self.a.provisional = Some(code);
        let Some(uas) = &self.a.uas else { return }; // originated: the agent hears ringback or early media
        let mut r = self.respond(&uas.invite, code, Some(&uas.to_tag));
        r.push_header("Contact", self.local.contact(&uas.source)).push_header("Allow", ALLOW);
        if let Some(body) = sdp {
            r.set_body("application/sdp", Bytes::from(body));
        }
        let source = uas.source;
        self.a.last_response = Some(r.clone());
        out.push(Action::Send(source, r));
    }

    fn final_to_caller(&mut self, code: u16, _now: Instant, out: &mut Vec<Action>) {
        if self.a.final_status.is_some() {
            return;
        }
        let Some(uas) = &self.a.uas else {
            // A call the gateway placed: the agent's phone, if it answered,
            // is hung up with the far end's cause.
            self.a.final_status = Some(code);
            if let Some(i) = self.caller_fork.filter(|i| self.forks[*i].state == ForkState::Answered) {
                let reason = q850_for_status(code).unwrap_or_else(|| q850(16, "Normal call clearing"));
                self.bye_fork(i, &reason, out);
            }
            return;
        };
        let mut r = self.respond(&uas.invite, code, Some(&uas.to_tag));
        if let Some(reason) = q850_for_status(code) {
            r.push_header("Reason", reason);
        }
        let source = uas.source;
        self.a.final_status = Some(code);
        self.a.last_response = Some(r.clone());
        out.push(Action::Send(source, r));
    }

    fn ok_to_caller(&mut self, answer: String, now: Instant, out: &mut Vec<Action>) {
        let Some(uas) = &self.a.uas else {
            self.a.final_status = Some(200); // originated: the agent's phone answered long ago
            return;
        };
        let source = uas.source;
        let mut ok = self.respond(&uas.invite, 200, Some(&uas.to_tag));
        ok.push_header("Contact", self.local.contact(&source))
            .push_header("Allow", ALLOW)
            .set_body("application/sdp", Bytes::from(answer));
        self.a.final_status = Some(200);
        self.a.last_response = Some(ok.clone());
        if !source.is_reliable() {
            let t1 = self.timers.t1;
            self.a.ok_retransmit = Some(OkRetransmit { next: now + t1, interval: t1, give_up: now + self.timers.timeout() });
        } else {
            // Reliable transport: no retransmission, but the ACK must still
            // come within 64·T1.
            self.a.ok_retransmit =
                Some(OkRetransmit { next: now + self.timers.timeout(), interval: self.timers.timeout(), give_up: now + self.timers.timeout() });
        }
        out.push(Action::Send(source, ok));
    }

    /// A re-INVITE or UPDATE from the caller, answered locally.
    fn caller_reoffer(&mut self, msg: SipMessage, source: Destination, invite: bool, out: &mut Vec<Action>) {
        let Some(media) = self.media else {
            let mut r = self.respond(&msg, 500, None);
            r.push_header("Retry-After", "1");
            out.push(Action::Send(source, r));
            return;
        };
        let port = self.port_of(Leg::Caller).unwrap_or(media.a_port);
        if invite && (self.a.final_status != Some(200) || self.a.reinvite.as_ref().is_some_and(|r| r.cseq.is_some())) {
            // Not answered yet, or our own re-INVITE is in flight: glare.
            out.push(Action::Send(source, self.respond(&msg, 491, None)));
            return;
        }
        if msg.body.is_empty() {
            // No offer: the gateway offers in the 2xx (re-INVITE) or simply
            // confirms (UPDATE without a body refreshes the target only).
            let mut ok = self.respond(&msg, 200, None);
            ok.push_header("Contact", self.local.contact(&source));
            if invite {
                let formats = one_codec(&usable(&self.a.offer.formats));
                self.a.sdp_version += 1;
                let offer = sdp::build(session_id(&self.id), self.a.sdp_version, media.ip, port, &formats, Direction::SendRecv);
                ok.set_body("application/sdp", Bytes::from(offer));
            }
            out.push(Action::Send(source, ok));
            return;
        }
        let offer = match sdp::parse_audio(&msg.body) {
            Ok(o) => o,
            Err(_) => {
                out.push(Action::Send(source, self.respond(&msg, 488, None)));
                return;
            }
        };
        if offer.rtp != self.a.offer.rtp {
            out.push(Action::CallerMedia { rtp: offer.rtp });
        }
        let formats = one_codec(&usable(&offer.formats));
        let direction = answer_direction(offer.direction);
        self.leg_formats(Leg::Caller, formats.clone(), offer.rtcp_mux, out);
        out.push(Action::PeerHold { leg: Leg::Caller, on: is_hold(offer.direction) });
        self.a.offer = offer;
        self.a.sdp_version += 1;
        let answer = sdp::build_with(session_id(&self.id), self.a.sdp_version, media.ip, port, &formats, direction, self.a.offer.rtcp_mux);
        let mut ok = self.respond(&msg, 200, None);
        ok.push_header("Contact", self.local.contact(&source)).set_body("application/sdp", Bytes::from(answer));
        out.push(Action::Send(source, ok));
    }

    /// Hangs up leg A, whichever dialog carries it.
    fn bye_caller(&mut self, reason: &str, out: &mut Vec<Action>) {
        if self.parked == Some(Leg::Caller) {
            return; // hung up when it was parked
        }
        match self.caller_fork {
            Some(i) if self.forks[i].state == ForkState::Answered => self.bye_fork(i, reason, out),
            Some(_) => {}
            None => self.bye_uas(reason, out),
        }
    }

    /// BYE on the caller's own dialog.
    fn bye_uas(&mut self, reason: &str, out: &mut Vec<Action>) {
        let Some(uas) = self.a.uas.as_mut().filter(|_| self.a.final_status == Some(200)) else { return };
        let mut bye = uas.dialog.request("BYE", &self.local);
        bye.push_header("Reason", reason.to_owned()).push_header("User-Agent", self.local.user_agent.clone());
        out.push(Action::Send(uas.dialog.flow, bye));
    }

    /// Sends (or resends after a 491) the pending re-INVITE on `leg`.
    fn send_reinvite(&mut self, leg: Leg, _now: Instant, out: &mut Vec<Action>) {
        let Some(media) = self.media else { return };
        let local = self.local.clone();
        let sid = session_id(&self.id);
        let Some(port) = self.port_of(leg) else { return };
        let (dialog, reinvite, version, formats) = match self.carrier(leg) {
            Some(Carrier::Uas) => {
                let formats = answer_formats(&self.a.offer.formats, &self.a.offer.formats);
                let Some(uas) = self.a.uas.as_mut() else { return };
                (&mut uas.dialog, &mut self.a.reinvite, &mut self.a.sdp_version, formats)
            }
            Some(Carrier::Fork(i)) => {
                // What the fork was offered when it was invited.
                let fork = &mut self.forks[i];
                let formats = sdp::parse_audio(&fork.invite.body).map(|a| a.formats).unwrap_or_default();
                let Some(dialog) = fork.dialog.as_mut() else { return };
                (dialog, &mut fork.reinvite, &mut fork.sdp_version, formats)
            }
            None => return,
        };
        let Some(pending) = reinvite.as_mut() else { return };
        *version += 1;
        let body = sdp::build(sid, *version, media.ip, port, &formats, pending.direction);
        let mut inv = dialog.request("INVITE", &local);
        inv.push_header("Contact", local.contact(&dialog.flow))
            .push_header("Allow", ALLOW)
            .set_body("application/sdp", Bytes::from(body));
        pending.cseq = Some(dialog.local_seq);
        pending.retry_at = None;
        out.push(Action::Send(dialog.flow, inv));
    }

    /// A response to the gateway's re-INVITE on the dialog `carrier`.
    fn reinvite_response(&mut self, carrier: Carrier, msg: &SipMessage, now: Instant, out: &mut Vec<Action>) {
        let Some(cseq) = msg.header("CSeq").and_then(CSeq::parse) else { return };
        let Some(status) = msg.status() else { return };
        let local = self.local.clone();
        // The gateway owns the Call-ID of the callee legs, not the caller's:
        // §14.1 retry windows 2.1–4 s for the owner, 0–2 s otherwise.
        let (dialog, reinvite, acked, owner) = match carrier {
            Carrier::Uas => {
                let Some(uas) = self.a.uas.as_mut() else { return };
                (&mut uas.dialog, &mut self.a.reinvite, &mut self.a.reinvite_ack, false)
            }
            Carrier::Fork(i) => {
                let fork = &mut self.forks[i];
                let Some(d) = fork.dialog.as_mut() else { return };
                (d, &mut fork.reinvite, &mut fork.reinvite_ack, true)
            }
        };
        if let Some((seq, ack)) = acked.as_ref() {
            if *seq == cseq.seq && (200..300).contains(&status) {
                out.push(Action::Send(dialog.flow, ack.clone())); // retransmitted 2xx
                return;
            }
        }
        if cseq.method != "INVITE" || reinvite.as_ref().and_then(|r| r.cseq) != Some(cseq.seq) || status < 200 {
            return;
        }
        match status {
            200..=299 => {
                dialog.refresh_target(msg);
                let ack = dialog.ack(cseq.seq, &local);
                out.push(Action::Send(dialog.flow, ack.clone()));
                *acked = Some((cseq.seq, ack));
                *reinvite = None;
            }
            491 => {
                let millis = if owner { rand::random_range(2100..=4000) } else { rand::random_range(0..=2000) };
                if let Some(r) = reinvite.as_mut() {
                    r.cseq = None;
                    r.retry_at = Some(now + Duration::from_millis(millis));
                }
            }
            _ => *reinvite = None, // refused: the session stays as it was
        }
    }

    // ---- fork internals ----

    fn fork_provisional(&mut self, i: usize, msg: &SipMessage, _now: Instant, out: &mut Vec<Action>) {
        let fork = &mut self.forks[i];
        if fork.state == ForkState::Trying {
            fork.state = ForkState::Ringing;
        }
        if let Some(reason) = fork.cancel_pending.take() {
            let cancel = cancel_for(fork, &reason);
            out.push(Action::Send(fork.target.dest, cancel));
            return;
        }
        if self.ended || self.a.final_status.is_some() || fork.cancelled || self.agent_forks.contains(&i) {
            return;
        }
        let early = (!msg.body.is_empty()).then(|| sdp::parse_audio(&msg.body).ok()).flatten();
        match early {
            Some(desc) if self.early_media_fork.is_none() => {
                self.early_media_fork = Some(i);
                let answer = self.caller_answer(&desc.formats);
                let caller_formats = sdp::parse_audio(answer.as_bytes()).map(|a| a.formats).unwrap_or_default();
                let first = self.a.provisional.is_none();
                self.provisional_to_caller(183, Some(answer), out);
                if first {
                    out.push(Action::Ringing);
                }
                if !self.is_originated() {
                    // (The agent's phone of an originated call keeps what it answered.)
                    self.leg_formats(Leg::Caller, caller_formats, self.a.offer.rtcp_mux, out);
                }
                self.leg_formats(Leg::Callee, usable(&desc.formats), desc.rtcp_mux, out);
                out.push(Action::EarlyMedia { callee_rtp: desc.rtp });
            }
            _ if self.a.provisional.is_none() => {
                self.provisional_to_caller(180, None, out);
                out.push(Action::Ringing);
            }
            _ => {}
        }
    }

    fn fork_answered(&mut self, i: usize, msg: &SipMessage, now: Instant, out: &mut Vec<Action>) {
        let local = self.local.clone();
        let fork = &mut self.forks[i];
        if let Some(ack) = &fork.ack {
            // A retransmitted 2xx: the same ACK answers it.
            out.push(Action::Send(fork.target.dest, ack.clone()));
            return;
        }
        let Some(mut dialog) = Dialog::as_uac(&fork.invite, msg, fork.target.dest) else {
            return; // no To tag: not a usable answer
        };
        let ack = dialog.ack(fork.cseq, &local);
        dialog.local_seq = fork.cseq;
        out.push(Action::Send(fork.target.dest, ack.clone()));
        fork.ack = Some(ack);
        fork.dialog = Some(dialog);
        fork.remote = sdp::parse_audio(&msg.body).ok();
        fork.state = ForkState::Answered;
        fork.cancel_pending = None;
        let cancelled = fork.cancelled;
        if !cancelled && !self.ended && self.is_agent_fork(i) && self.caller_fork.is_none() {
            return self.agent_answered(i, msg, now, out);
        }
        if !cancelled && !self.ended && self.is_replacement_fork(i) {
            return self.replacement_answered(i, msg, now, out);
        }
        if self.in_voicemail && !self.ended && !cancelled {
            return self.screening_answered(i, msg, out);
        }
        if self.ended || self.winner.is_some() || cancelled {
            // Answered after the call was decided (a race with CANCEL or
            // another fork): hang this one up.
            let reason = if self.winner.is_some() {
                "SIP;cause=200;text=\"Call completed elsewhere\"".to_owned()
            } else {
                q850(16, "Normal call clearing")
            };
            self.bye_fork(i, &reason, out);
            return;
        }
        let callee = match sdp::parse_audio(&msg.body) {
            Ok(a) => a,
            Err(_) => {
                self.bye_fork(i, &q850(88, "Incompatible destination"), out);
                self.forks[i].state = ForkState::Done(488);
                self.maybe_all_failed(now, out);
                return;
            }
        };
        self.winner = Some(i);
        for j in 0..self.forks.len() {
            if j != i {
                self.cancel_fork(j, "SIP;cause=200;text=\"Call completed elsewhere\"", out);
            }
        }
        if self.is_originated() {
            // The agent's phone answered first; its media stays as it is.
            self.a.final_status = Some(200);
        } else {
            let answer = self.caller_answer(&callee.formats);
            let caller_formats = sdp::parse_audio(answer.as_bytes()).map(|a| a.formats).unwrap_or_default();
            self.ok_to_caller(answer, now, out);
            self.leg_formats(Leg::Caller, caller_formats, self.a.offer.rtcp_mux, out);
        }
        self.ring_deadline = None;
        self.state = State::Connected;
        self.leg_formats(Leg::Callee, usable(&callee.formats), callee.rtcp_mux, out);
        out.push(Action::Answered { fork: i, callee_rtp: callee.rtp });
    }

    fn can_authenticate(&self, i: usize) -> bool {
        let f = &self.forks[i];
        f.target.credentials.is_some() && !f.auth_tried && !f.cancelled && f.cancel_pending.is_none() && !self.ended
    }

    /// Answers a trunk's 401/407 once by resending the INVITE with
    /// credentials (RFC 3261 §22.2, RFC 8760 algorithms).
    fn fork_authenticate(&mut self, i: usize, msg: &SipMessage, out: &mut Vec<Action>) {
        let (challenge_header, answer_header) = if msg.status() == Some(407) {
            ("Proxy-Authenticate", "Proxy-Authorization")
        } else {
            ("WWW-Authenticate", "Authorization")
        };
        // Prefer the strongest algorithm offered.
        let mut challenges: Vec<Challenge> = msg.header_values(challenge_header).into_iter().filter_map(Challenge::parse).collect();
        challenges.sort_by_key(|c| match c.algorithm {
            digest::Algorithm::Sha256 => 0,
            _ => 1,
        });
        let Some(challenge) = challenges.into_iter().next() else {
            self.fork_failed(i, msg.status().unwrap_or(401), Instant::now(), out);
            return;
        };
        let local = self.local.clone();
        let fork = &mut self.forks[i];
        let Some(creds) = fork.target.credentials.clone() else { return };
        fork.auth_tried = true;
        fork.cseq += 1;
        let uri = fork.invite.request_uri().unwrap_or_default().to_owned();
        let cnonce = new_tag();
        let answer = digest::answer(&challenge, &creds.username, &creds.password, "INVITE", &uri, &cnonce, 1);
        let mut invite = fork.invite.clone();
        invite.set_header("Via", local.via(&fork.target.dest, &new_branch()));
        invite.set_header("CSeq", format!("{} INVITE", fork.cseq));
        invite.push_header(answer_header, answer.to_header());
        fork.invite = invite.clone();
        out.push(Action::Send(fork.target.dest, invite));
    }

    fn fork_failed(&mut self, i: usize, status: u16, now: Instant, out: &mut Vec<Action>) {
        let fork = &mut self.forks[i];
        if matches!(fork.state, ForkState::Done(_) | ForkState::Answered) {
            return;
        }
        fork.state = ForkState::Done(status);
        fork.cancel_pending = None;
        if self.is_agent_fork(i) {
            return self.agent_fork_failed(status, now, out);
        }
        if self.is_replacement_fork(i) {
            return self.replacement_fork_failed(status, now, out);
        }
        if self.ended || self.winner.is_some() || self.in_voicemail {
            return;
        }
        if (600..700).contains(&status) {
            // A global failure ends every fork (§16.7 step 5).
            for j in 0..self.forks.len() {
                self.cancel_fork(j, &format!("SIP;cause={status}"), out);
            }
            // Declined (603) or busy everywhere (600): voicemail, if the
            // callee has one; "does not exist anywhere" (604) is not.
            if self.voicemail && matches!(status, 600 | 603) && self.a.final_status.is_none() {
                return self.answer_for_voicemail(now, out);
            }
            let (code, reason) = map_failure(status);
            self.final_to_caller(code, now, out);
            self.end(reason, HangupBy::Callee, code, now, out);
            return;
        }
        self.maybe_all_failed(now, out);
    }

    /// Once every fork failed, answers the caller with the best failure.
    fn maybe_all_failed(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.ended || self.winner.is_some() || self.in_voicemail {
            return;
        }
        let mut statuses = Vec::new();
        for (_, f) in self.forks.iter().enumerate().filter(|(j, _)| !self.agent_forks.contains(j)) {
            match f.state {
                ForkState::Done(s) => statuses.push(s),
                _ => return, // still ringing somewhere
            }
        }
        if statuses.is_empty() {
            return; // an originated call whose far end is not placed yet
        }
        let best = best_failure(&statuses);
        let (code, reason) = map_failure(best);
        if self.voicemail && reason != EndReason::Cancelled && self.a.final_status.is_none() {
            return self.answer_for_voicemail(now, out);
        }
        self.final_to_caller(code, now, out);
        self.end(reason, HangupBy::Callee, code, now, out);
    }

    fn callee_request(&mut self, i: usize, msg: SipMessage, source: Destination, now: Instant, out: &mut Vec<Action>) {
        let method = msg.method().unwrap_or("").to_owned();
        if method == "ACK" {
            return;
        }
        let local_user_agent = self.local.user_agent.clone();
        let Some(dialog) = self.forks[i].dialog.as_mut() else {
            out.push(Action::Send(source, make_response(&msg, 481, None, &local_user_agent)));
            return;
        };
        if let Err(DialogError::OutOfOrder) = dialog.on_request(&msg) {
            out.push(Action::Send(source, make_response(&msg, 500, None, &local_user_agent)));
            return;
        }
        match method.as_str() {
            "BYE" => {
                out.push(Action::Send(source, self.respond(&msg, 200, None)));
                let leg = self.fork_leg(i);
                self.forks[i].state = ForkState::Done(200);
                let consulted = self.consulted();
                if self.ended {
                } else if consulted.is_some_and(|(_, target)| target == i) {
                    // The consulted target hung up: the agent's party comes back.
                    self.fail_replacement(200, "SIP;cause=487;text=\"Request terminated\"", now, out);
                } else if leg.is_some() && consulted.is_some_and(|(consult_leg, _)| Some(consult_leg) == leg) {
                    // The agent hung up while consulting: the target takes over.
                    self.hand_over_to_consulted(false, now, out);
                } else if leg == Some(Leg::Callee) {
                    self.bye_caller(&q850(16, "Normal call clearing"), out);
                    self.end(EndReason::Completed, HangupBy::Callee, 200, now, out);
                } else if leg == Some(Leg::Caller) {
                    // The phone that replaced the caller (or the agent's
                    // phone of an originated call) hung up; before the far
                    // end answered, that is giving up the call.
                    self.hang_up_callee(&q850(16, "Normal call clearing"), out);
                    let (reason, status) = if self.winner.is_some() { (EndReason::Completed, 200) } else { (EndReason::Cancelled, 487) };
                    self.a.final_status.get_or_insert(status);
                    self.end(reason, HangupBy::Caller, status, now, out);
                } else if self.screening == Some(i) {
                    // The screening device hung up: the voicemail goes on.
                    self.screening = None;
                    out.push(Action::ScreeningEnded);
                }
            }
            "INVITE" if self.forks[i].reinvite.as_ref().is_some_and(|r| r.cseq.is_some()) => {
                out.push(Action::Send(source, self.respond(&msg, 491, None))); // glare
            }
            "INVITE" | "UPDATE" => self.callee_reoffer(i, msg, source, out),
            "OPTIONS" | "INFO" => {
                let mut ok = self.respond(&msg, 200, None);
                ok.push_header("Allow", ALLOW);
                out.push(Action::Send(source, ok));
                if let Some(d) = self.fork_leg(i).and_then(|leg| info_dtmf(&msg, leg)) {
                    out.push(d);
                }
            }
            _ => {
                let mut r = self.respond(&msg, 405, None);
                r.push_header("Allow", ALLOW);
                out.push(Action::Send(source, r));
            }
        }
    }

    /// A re-INVITE or UPDATE from the answered callee (hold, resume, a new
    /// address), answered locally: the caller's leg is not touched.
    ///
    /// Also for a fork that replaced the caller: it is answered on leg A's
    /// port, and what changes is leg A's media.
    fn callee_reoffer(&mut self, i: usize, msg: SipMessage, source: Destination, out: &mut Vec<Action>) {
        let Some(media) = self.media else {
            let mut r = self.respond(&msg, 500, None);
            r.push_header("Retry-After", "1");
            out.push(Action::Send(source, r));
            return;
        };
        let offer = if msg.body.is_empty() { None } else { sdp::parse_audio(&msg.body).ok() };
        if !msg.body.is_empty() && offer.is_none() {
            out.push(Action::Send(source, self.respond(&msg, 488, None)));
            return;
        }
        let is_invite = msg.method() == Some("INVITE");
        let leg = self.fork_leg(i);
        let port = self.fork_port(i);
        if offer.is_some() {
            self.forks[i].remote = offer.clone();
        }
        let mut ok = self.respond(&msg, 200, None);
        ok.push_header("Contact", self.local.contact(&source));
        if offer.is_some() || is_invite {
            let fork = &mut self.forks[i];
            let (formats, direction) = match &offer {
                Some(o) => (one_codec(&usable(&o.formats)), answer_direction(o.direction)),
                None => (sdp::parse_audio(&fork.invite.body).map(|a| a.formats).unwrap_or_default(), Direction::SendRecv),
            };
            fork.sdp_version += 1;
            let body = sdp::build(session_id(&self.id), fork.sdp_version, media.ip, port, &formats, direction);
            ok.set_body("application/sdp", Bytes::from(body));
        }
        if let (Some(o), Some(leg)) = (&offer, leg) {
            out.push(match leg {
                Leg::Caller => Action::CallerMedia { rtp: o.rtp },
                Leg::Callee => Action::CalleeMedia { rtp: o.rtp },
            });
            self.leg_formats(leg, one_codec(&usable(&o.formats)), o.rtcp_mux, out);
            out.push(Action::PeerHold { leg, on: is_hold(o.direction) });
        }
        out.push(Action::Send(source, ok));
    }

    /// Ends the callee side however far it got: BYE to the answered fork,
    /// CANCEL to the ones still ringing.
    fn hang_up_callee(&mut self, reason: &str, out: &mut Vec<Action>) {
        for w in self.winner.into_iter().chain(self.screening) {
            if self.forks[w].state == ForkState::Answered {
                self.bye_fork(w, reason, out);
            }
        }
        self.cancel_forks("SIP;cause=487;text=\"Request terminated\"", out);
    }

    fn cancel_forks(&mut self, reason: &str, out: &mut Vec<Action>) {
        for j in 0..self.forks.len() {
            self.cancel_fork(j, reason, out);
        }
    }

    fn cancel_fork(&mut self, j: usize, reason: &str, out: &mut Vec<Action>) {
        let fork = &mut self.forks[j];
        if fork.cancelled || !matches!(fork.state, ForkState::Trying | ForkState::Ringing) {
            return;
        }
        fork.cancelled = true;
        if fork.state == ForkState::Trying {
            // §9.1: no CANCEL before a provisional response; send it when
            // one arrives (or let Timer B end the INVITE).
            fork.cancel_pending = Some(reason.to_owned());
            return;
        }
        let cancel = cancel_for(fork, reason);
        out.push(Action::Send(fork.target.dest, cancel));
    }

    fn bye_fork(&mut self, i: usize, reason: &str, out: &mut Vec<Action>) {
        let local = self.local.clone();
        let fork = &mut self.forks[i];
        let Some(dialog) = fork.dialog.as_mut() else { return };
        let mut bye = dialog.request("BYE", &local);
        bye.push_header("Reason", reason.to_owned()).push_header("User-Agent", local.user_agent.clone());
        fork.state = ForkState::Done(200);
        out.push(Action::Send(fork.target.dest, bye));
    }
}

/// CANCEL for a fork's INVITE (§9.1): same Request-URI, Call-ID, From, To,
/// CSeq number, top Via and Route as the INVITE.
fn cancel_for(fork: &Fork, reason: &str) -> SipMessage {
    let inv = &fork.invite;
    let mut cancel = SipMessage::request("CANCEL", inv.request_uri().unwrap_or_default().to_owned());
    cancel.push_header("Via", inv.header("Via").unwrap_or_default().to_owned());
    for r in inv.header_values("Route") {
        cancel.push_header("Route", r.to_owned());
    }
    cancel
        .push_header("Max-Forwards", "70")
        .push_header("From", inv.header("From").unwrap_or_default().to_owned())
        .push_header("To", inv.header("To").unwrap_or_default().to_owned())
        .push_header("Call-ID", fork.call_id.clone())
        .push_header("CSeq", format!("{} CANCEL", fork.cseq))
        .push_header("Reason", reason.to_owned());
    cancel
}

/// The direction to answer an offer with (RFC 3264 §6.1).
fn answer_direction(offered: Direction) -> Direction {
    match offered {
        Direction::SendOnly => Direction::RecvOnly,
        Direction::RecvOnly => Direction::SendOnly,
        Direction::Inactive => Direction::Inactive,
        Direction::SendRecv => Direction::SendRecv,
    }
}

/// Whether an offer's direction puts its sender's peer on hold (RFC 3264 §8.4).
fn is_hold(d: Direction) -> bool {
    matches!(d, Direction::SendOnly | Direction::Inactive)
}

/// A DTMF digit carried in a SIP INFO body (`application/dtmf-relay` or
/// `application/dtmf`).
fn info_dtmf(msg: &SipMessage, leg: Leg) -> Option<Action> {
    let content_type = msg.header("Content-Type")?;
    let (digit, duration) = crate::media::dtmf::parse_info(content_type, &msg.body)?;
    Some(Action::Dtmf { leg, digit, duration })
}

/// The formats of `formats` the gateway can carry or transcode: PCMU, PCMA,
/// Opus, and telephone-event at 8 or 48 kHz, in their order.
fn usable(formats: &[Format]) -> Vec<Format> {
    formats
        .iter()
        .filter(|f| sdp::Codec::of(f).is_some() || (is_telephone_event(f) && matches!(f.clock_rate, 8000 | 48000)))
        .cloned()
        .collect()
}

fn is_telephone_event(f: &Format) -> bool {
    f.encoding.eq_ignore_ascii_case("telephone-event")
}

/// The first codec of `formats` and the telephone-event at its clock rate:
/// an answer names one codec, so each leg sends and receives exactly one.
fn one_codec(formats: &[Format]) -> Vec<Format> {
    let Some(codec) = formats.iter().find(|f| !is_telephone_event(f)) else { return Vec::new() };
    let mut out = vec![codec.clone()];
    out.extend(formats.iter().find(|f| is_telephone_event(f) && f.clock_rate == codec.clock_rate).cloned());
    out
}

/// What the gateway offers the callee: the caller's own formats it can
/// carry first (so the callee can take the caller's codec and G.711 passes
/// through untouched), then the gateway's other codecs, which it transcodes
/// to when the callee takes one of them (RFC 3264; the caller's payload
/// type numbers are kept, new ones avoid them).
fn callee_offer(caller: &[Format]) -> Vec<Format> {
    let mut out = usable(caller);
    let free_pt = |out: &[Format], wanted: u8| -> u8 {
        let taken = |pt: u8| out.iter().any(|f| f.payload_type == pt);
        if !taken(wanted) {
            return wanted;
        }
        (96..=127).find(|pt| !taken(*pt)).unwrap_or(wanted)
    };
    let has = |out: &[Format], c: sdp::Codec| out.iter().any(|f| sdp::Codec::of(f) == Some(c));
    for codec in [sdp::Codec::Pcmu, sdp::Codec::Pcma, sdp::Codec::Opus] {
        if !has(&out, codec) {
            let pt = free_pt(&out, codec.payload_type());
            out.push(codec.format(pt));
        }
    }
    for rate in [8000, 48000] {
        let needed = out.iter().any(|f| !is_telephone_event(f) && f.clock_rate == rate);
        if needed && !out.iter().any(|f| is_telephone_event(f) && f.clock_rate == rate) {
            let pt = free_pt(&out, if rate == 8000 { 101 } else { 102 });
            out.push(Format { payload_type: pt, encoding: "telephone-event".into(), clock_rate: rate, fmtp: Some("0-15".into()) });
        }
    }
    out
}

/// The formats to answer the caller with: the first of the callee's codecs
/// that the caller offered, under the caller's payload type number (both
/// legs on it: relayed untouched); if the callee took a codec the caller
/// did not offer, the caller's own first codec (the gateway transcodes).
fn answer_formats(offered: &[Format], callee: &[Format]) -> Vec<Format> {
    let offered = usable(offered);
    let common: Vec<Format> = callee
        .iter()
        .filter(|d| !is_telephone_event(d))
        .filter_map(|d| offered.iter().find(|o| o.encoding.eq_ignore_ascii_case(&d.encoding) && o.clock_rate == d.clock_rate).cloned())
        .collect();
    let codec = common.into_iter().next().or_else(|| offered.iter().find(|f| !is_telephone_event(f)).cloned());
    let Some(codec) = codec else { return Vec::new() };
    let te = offered.iter().find(|f| is_telephone_event(f) && f.clock_rate == codec.clock_rate).cloned();
    std::iter::once(codec).chain(te).collect()
}

/// The best of several forks' failures (after RFC 3261 §16.7): a 6xx wins,
/// then busy, then the other 4xx, then 5xx, then timeouts and unavailability.
fn best_failure(statuses: &[u16]) -> u16 {
    let rank = |s: u16| match s {
        600..=699 => 0,
        486 => 1,
        487 => 2,
        400..=499 if s != 408 && s != 480 => 3,
        500..=599 => 4,
        _ => 5,
    };
    statuses.iter().copied().min_by_key(|s| (rank(*s), *s)).unwrap_or(480)
}

/// The caller-facing status and end reason for a callee's failure status.
fn map_failure(status: u16) -> (u16, EndReason) {
    match status {
        486 | 600 => (486, EndReason::Busy),
        603 => (603, EndReason::Busy),
        480 | 408 => (480, EndReason::NoAnswer),
        487 => (487, EndReason::Cancelled),
        404 | 410 | 484 | 604 => (480, EndReason::Failed),
        401 | 407 => (503, EndReason::Failed),
        s if (400..700).contains(&s) => (s, EndReason::Failed),
        _ => (500, EndReason::Failed),
    }
}

/// A `Reason` header value with a Q.850 cause (RFC 3326).
pub fn q850(cause: u16, text: &str) -> String {
    format!("Q.850;cause={cause};text=\"{text}\"")
}

/// The Q.850 cause a failure response to the caller carries (RFC 3398 in
/// reverse, as carriers expect it).
fn q850_for_status(code: u16) -> Option<String> {
    Some(match code {
        404 => q850(1, "Unallocated number"),
        480 => q850(19, "No answer from user"),
        486 => q850(17, "User busy"),
        488 => q850(88, "Incompatible destination"),
        500 => q850(41, "Temporary failure"),
        503 => q850(34, "No circuit available"),
        603 => q850(21, "Call rejected"),
        _ => return None,
    })
}

fn leg_index(leg: Leg) -> usize {
    match leg {
        Leg::Caller => 0,
        Leg::Callee => 1,
    }
}

fn session_id(call_id: &str) -> u64 {
    call_id.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)) >> 2
}

#[cfg(test)]
mod tests;
