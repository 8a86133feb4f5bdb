//! One call through the B2BUA, as a sans-IO state machine.
//!
//! A call has two independent dialogs: leg A with the caller (the gateway is
//! its UAS) and leg B with the agent's device (the gateway is its UAC).
//! Nothing is forwarded raw between them: every message on one leg is
//! answered or originated by the gateway itself. Inputs are parsed SIP
//! messages and the current time; outputs are [`Action`]s for the driver to
//! carry out (send a message, start media, persist a state change). Timers
//! are polled through [`Call::next_deadline`] and [`Call::on_timer`], so tests
//! drive the clock.
//!
//! Retransmission follows RFC 3261 §17 for the messages this call sends over
//! UDP: the INVITE to the device (Timer A/B), the 2xx to the caller until its
//! ACK (§13.3.1.4, Timer G-style doubling up to T2), non-2xx finals until ACK
//! (Timer G/H) and BYE/CANCEL (Timer E/F).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::media::sdp::{self, AudioDescription, Direction, Format};
use crate::sip::headers::{new_branch, new_call_id, new_tag, CSeq, NameAddr, SipUri};
use crate::sip::response::make_response;
pub use crate::sip::local::Local;
use crate::sip::{Destination, SipMessage};

/// RFC 3261 timer T1 (RTT estimate).
pub const T1: Duration = Duration::from_millis(500);
/// RFC 3261 timer T2 (maximum retransmit interval for non-INVITE and 2xx).
pub const T2: Duration = Duration::from_secs(4);
/// How long a finished call keeps absorbing retransmissions (64·T1).
pub const LINGER: Duration = Duration::from_secs(32);

/// How the call ended, as recorded in the call event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Completed,
    Cancelled,
    NoAnswer,
    Busy,
    Failed,
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
    Send(Destination, SipMessage),
    /// The device is ringing (first provisional response from it).
    Ringing,
    /// The device answered; media flows between the caller's and the
    /// device's RTP addresses.
    Answered { device_rtp: SocketAddr },
    /// The caller's RTP address changed (re-INVITE).
    CallerMedia { rtp: SocketAddr },
    /// The call is over; emitted exactly once.
    Ended { reason: EndReason, hangup_by: HangupBy, sip_status: u16 },
}

/// The device leg B will be placed to.
#[derive(Debug, Clone)]
pub struct Target {
    pub request_uri: String,
    pub dest: Destination,
}

/// The gateway's RTP addresses for both legs.
#[derive(Debug, Clone, Copy)]
pub struct MediaPorts {
    pub ip: IpAddr,
    /// Port facing the caller (leg A).
    pub a_port: u16,
    /// Port facing the device (leg B).
    pub b_port: u16,
}

#[derive(Debug, Clone)]
struct Retransmit {
    dest: Destination,
    msg: SipMessage,
    next: Instant,
    interval: Duration,
    cap: Duration,
    give_up: Instant,
}

impl Retransmit {
    fn new(dest: Destination, msg: SipMessage, now: Instant, cap: Duration) -> Option<Retransmit> {
        // Reliable transports do not retransmit; their timeout still applies
        // through the give-up deadline handled by the caller.
        match dest {
            Destination::Udp(_) => {
                Some(Retransmit { dest, msg, next: now + T1, interval: T1, cap, give_up: now + LINGER })
            }
            Destination::Tcp(_) | Destination::Tls(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for routing and media (driver work).
    Routing,
    /// INVITE sent to the device; waiting for it to answer.
    Calling,
    /// Both legs confirmed or being confirmed.
    Connected,
    /// Ended; absorbing retransmissions until the linger deadline.
    Finished,
}

/// Leg A: the caller's dialog (gateway is UAS).
#[derive(Debug)]
struct CallerLeg {
    invite: SipMessage,
    source: Destination,
    to_tag: String,
    offer: AudioDescription,
    last_response: Option<SipMessage>,
    final_status: Option<u16>,
    acked: bool,
    retransmit: Option<Retransmit>,
    local_cseq: u32,
    sdp_version: u64,
    answer_sdp: Option<String>,
}

/// Leg B: the device dialog (gateway is UAC).
#[derive(Debug)]
struct DeviceLeg {
    dest: Destination,
    call_id: String,
    to_tag: Option<String>,
    request_uri: String,
    remote_target: Option<String>,
    invite: SipMessage,
    provisional: bool,
    final_status: Option<u16>,
    ack: Option<SipMessage>,
    retransmit: Option<Retransmit>,
    invite_deadline: Instant,
    cancelled: bool,
    offer_sdp: String,
    sdp_version: u64,
}

/// One call through the B2BUA.
#[derive(Debug)]
pub struct Call {
    pub id: String,
    local: Local,
    state: State,
    a: CallerLeg,
    b: Option<DeviceLeg>,
    media: Option<MediaPorts>,
    /// BYE/CANCEL requests in flight, retransmitted until answered.
    pending: Vec<(String, Retransmit)>,
    ring_deadline: Option<Instant>,
    linger_until: Option<Instant>,
    ended: bool,
    ring_timeout: Duration,
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
        ring_timeout: Duration,
    ) -> Result<Call, SetupError> {
        if invite.body.is_empty() {
            return Err(SetupError { code: 488, reason: "Not Acceptable Here (an SDP offer is required)".into() });
        }
        let offer = sdp::parse_audio(&invite.body)
            .map_err(|e| SetupError { code: 488, reason: format!("Not Acceptable Here ({e})") })?;
        if sdp::filter_supported(&offer.formats).iter().all(|f| f.encoding.eq_ignore_ascii_case("telephone-event")) {
            return Err(SetupError { code: 488, reason: "Not Acceptable Here (offer PCMU or PCMA)".into() });
        }
        Ok(Call {
            id,
            local,
            state: State::Routing,
            a: CallerLeg {
                invite,
                source,
                to_tag: new_tag(),
                offer,
                last_response: None,
                final_status: None,
                acked: false,
                retransmit: None,
                local_cseq: 1,
                sdp_version: 1,
                answer_sdp: None,
            },
            b: None,
            media: None,
            pending: Vec::new(),
            ring_deadline: None,
            linger_until: None,
            ended: false,
            ring_timeout,
        })
    }

    /// The caller's offered audio (RTP address and formats).
    pub fn caller_offer(&self) -> &AudioDescription {
        &self.a.offer
    }

    /// The Call-ID of leg A.
    pub fn caller_call_id(&self) -> &str {
        self.a.invite.header("Call-ID").unwrap_or("")
    }

    /// The Call-ID of leg B, once placed.
    pub fn device_call_id(&self) -> Option<&str> {
        self.b.as_ref().map(|b| b.call_id.as_str())
    }

    /// `100 Trying` for the caller, sent as soon as the INVITE is accepted.
    pub fn trying(&self) -> Action {
        Action::Send(self.a.source, make_response(&self.a.invite, 100, None, &self.local.user_agent))
    }

    /// Ends the call before any device was tried (routing failed, no
    /// device, no media ports).
    pub fn reject(&mut self, code: u16, reason: EndReason, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.final_to_caller(code, now, &mut out);
        self.end(reason, HangupBy::System, code, now, &mut out);
        out
    }

    /// Places leg B to the device with the gateway's own offer.
    pub fn place(&mut self, target: Target, media: MediaPorts, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state != State::Routing {
            return out;
        }
        self.media = Some(media);
        let formats: Vec<Format> = sdp::filter_supported(&self.a.offer.formats);
        let offer_sdp = sdp::build(session_id(&self.id), 1, media.ip, media.b_port, &formats, Direction::SendRecv);
        let call_id = new_call_id(&self.local.host);
        let from_tag = new_tag();
        let branch = new_branch();
        let caller = self.a.invite.header("From").and_then(NameAddr::parse);
        let caller_user = caller.as_ref().and_then(|n| n.user()).unwrap_or_else(|| "anonymous".into());
        let display = caller.as_ref().and_then(|n| n.display.clone());
        let max_forwards = self
            .a
            .invite
            .header("Max-Forwards")
            .and_then(|v| v.trim().parse::<u32>().ok())
            .map(|v| v.saturating_sub(1).max(1))
            .unwrap_or(70);
        let mut invite = SipMessage::request("INVITE", target.request_uri.clone());
        invite
            .push_header("Via", self.local.via(&target.dest, &branch))
            .push_header("Max-Forwards", max_forwards.to_string())
            .push_header(
                "From",
                match &display {
                    Some(d) => format!("\"{}\" <sip:{}@{}>;tag={}", d.replace('"', ""), caller_user, self.local.host, from_tag),
                    None => format!("<sip:{}@{}>;tag={}", caller_user, self.local.host, from_tag),
                },
            )
            .push_header("To", format!("<{}>", target.request_uri))
            .push_header("Call-ID", call_id.clone())
            .push_header("CSeq", "1 INVITE")
            .push_header("Contact", self.local.contact(&target.dest))
            .push_header("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS")
            .push_header("User-Agent", self.local.user_agent.clone())
            .push_header("X-Switchboard-Call-ID", self.id.clone())
            .set_body("application/sdp", Bytes::from(offer_sdp.clone()));
        out.push(Action::Send(target.dest, invite.clone()));
        let retransmit = Retransmit::new(target.dest, invite.clone(), now, Duration::MAX);
        self.b = Some(DeviceLeg {
            dest: target.dest,
            call_id,
            to_tag: None,
            request_uri: target.request_uri,
            remote_target: None,
            invite,
            provisional: false,
            final_status: None,
            ack: None,
            retransmit,
            invite_deadline: now + LINGER,
            cancelled: false,
            offer_sdp,
            sdp_version: 1,
        });
        self.ring_deadline = Some(now + self.ring_timeout);
        self.state = State::Calling;
        out
    }

    /// A request on leg A (same Call-ID as the initial INVITE).
    pub fn on_caller_request(&mut self, msg: SipMessage, source: Destination, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let method = msg.method().unwrap_or("").to_owned();
        let to_tag = msg.header("To").and_then(NameAddr::parse).and_then(|n| n.tag().map(str::to_owned));
        match method.as_str() {
            "INVITE" if to_tag.is_none() => {
                // Retransmission of the initial INVITE: repeat the last response.
                let last = self
                    .a
                    .last_response
                    .clone()
                    .unwrap_or_else(|| make_response(&self.a.invite, 100, None, &self.local.user_agent));
                out.push(Action::Send(self.a.source, last));
            }
            "INVITE" => self.caller_reinvite(msg, source, &mut out),
            "ACK" => {
                self.a.acked = true;
                self.a.retransmit = None;
            }
            "CANCEL" => {
                let ok = make_response(&msg, 200, Some(&self.a.to_tag), &self.local.user_agent);
                out.push(Action::Send(source, ok));
                if self.a.final_status.is_none() {
                    self.final_to_caller(487, now, &mut out);
                    self.cancel_device(now, &mut out);
                    self.end(EndReason::Cancelled, HangupBy::Caller, 487, now, &mut out);
                }
            }
            "BYE" => {
                let ok = make_response(&msg, 200, None, &self.local.user_agent);
                out.push(Action::Send(source, ok));
                if !self.ended {
                    self.a.acked = true;
                    self.a.retransmit = None;
                    self.hang_up_device(now, &mut out);
                    self.end(EndReason::Completed, HangupBy::Caller, 200, now, &mut out);
                }
            }
            "OPTIONS" => {
                let mut ok = make_response(&msg, 200, None, &self.local.user_agent);
                ok.push_header("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS");
                out.push(Action::Send(source, ok));
            }
            _ => {
                let mut r = make_response(&msg, 405, None, &self.local.user_agent);
                r.push_header("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS");
                out.push(Action::Send(source, r));
            }
        }
        out
    }

    /// A response on leg A (to a BYE the gateway sent).
    pub fn on_caller_response(&mut self, msg: SipMessage, _now: Instant) -> Vec<Action> {
        self.clear_pending(&msg);
        Vec::new()
    }

    /// A message on leg B (Call-ID of the device leg).
    pub fn on_device_message(&mut self, msg: SipMessage, source: Destination, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if msg.is_request() {
            self.device_request(msg, source, now, &mut out);
            return out;
        }
        let Some(status) = msg.status() else { return out };
        let Some(cseq) = msg.header("CSeq").and_then(CSeq::parse) else { return out };
        if cseq.method != "INVITE" {
            self.clear_pending(&msg);
            return out;
        }
        let Some(b) = self.b.as_mut() else { return out };
        if let Some(tag) = msg.header("To").and_then(NameAddr::parse).and_then(|n| n.tag().map(str::to_owned)) {
            if (200..300).contains(&status) || b.to_tag.is_none() {
                b.to_tag = Some(tag);
            }
        }
        match status {
            100..=199 => {
                b.retransmit = None;
                if status > 100 && !b.provisional && self.a.final_status.is_none() {
                    b.provisional = true;
                    let ringing = make_response(&self.a.invite, 180, Some(&self.a.to_tag), &self.local.user_agent);
                    self.a.last_response = Some(ringing.clone());
                    out.push(Action::Send(self.a.source, ringing));
                    out.push(Action::Ringing);
                }
            }
            200..=299 => {
                b.retransmit = None;
                b.remote_target = msg.header("Contact").and_then(NameAddr::parse).map(|n| n.uri);
                let ack = self.device_ack_for_2xx();
                out.push(Action::Send(self.b_dest(), ack.clone()));
                let b = self.b.as_mut().expect("device leg exists");
                let first = b.final_status.is_none();
                b.final_status = Some(status);
                b.ack = Some(ack);
                if !first {
                    return out; // retransmitted 2xx: the ACK above answers it
                }
                if self.ended || b.cancelled {
                    // The device answered after the caller gave up.
                    self.bye_device(now, &mut out);
                    return out;
                }
                let device_rtp = match sdp::parse_audio(&msg.body) {
                    Ok(a) => a,
                    Err(_) => {
                        self.bye_device(now, &mut out);
                        self.final_to_caller(488, now, &mut out);
                        self.end(EndReason::Failed, HangupBy::System, 488, now, &mut out);
                        return out;
                    }
                };
                let media = self.media.expect("media allocated before placing leg B");
                let answer_formats = answer_formats(&self.a.offer.formats, &device_rtp.formats);
                let answer = sdp::build(session_id(&self.id), 1, media.ip, media.a_port, &answer_formats, Direction::SendRecv);
                self.a.answer_sdp = Some(answer.clone());
                let mut ok = make_response(&self.a.invite, 200, Some(&self.a.to_tag), &self.local.user_agent);
                ok.push_header("Contact", self.local.contact(&self.a.source))
                    .push_header("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS")
                    .set_body("application/sdp", Bytes::from(answer));
                self.a.final_status = Some(200);
                self.a.last_response = Some(ok.clone());
                self.a.retransmit = Retransmit::new(self.a.source, ok.clone(), now, T2);
                out.push(Action::Send(self.a.source, ok));
                self.ring_deadline = None;
                self.state = State::Connected;
                out.push(Action::Answered { device_rtp: device_rtp.rtp });
            }
            _ => {
                b.retransmit = None;
                let ack = self.device_ack_for_failure(&msg);
                out.push(Action::Send(self.b_dest(), ack));
                let b = self.b.as_mut().expect("device leg exists");
                if b.final_status.is_some() {
                    return out;
                }
                b.final_status = Some(status);
                self.ring_deadline = None;
                if !self.ended {
                    let (code, reason) = map_failure(status);
                    self.final_to_caller(code, now, &mut out);
                    self.end(reason, HangupBy::Callee, code, now, &mut out);
                }
            }
        }
        out
    }

    /// The earliest time [`Call::on_timer`] has work to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut d: Vec<Instant> = Vec::new();
        if let Some(r) = &self.a.retransmit {
            d.push(r.next.min(r.give_up));
        }
        if let Some(b) = &self.b {
            if let Some(r) = &b.retransmit {
                d.push(r.next);
            }
            if b.final_status.is_none() && !b.provisional && self.state == State::Calling {
                d.push(b.invite_deadline);
            }
        }
        for (_, r) in &self.pending {
            d.push(r.next.min(r.give_up));
        }
        d.extend(self.ring_deadline);
        d.extend(self.linger_until);
        d.into_iter().min()
    }

    /// Fires every timer due at `now`.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(r) = self.a.retransmit.as_mut() {
            if now >= r.give_up {
                // The caller never ACKed our final response.
                self.a.retransmit = None;
                if self.a.final_status == Some(200) && !self.ended {
                    self.bye_caller(now, &mut out);
                    self.hang_up_device(now, &mut out);
                    self.end(EndReason::Failed, HangupBy::System, 408, now, &mut out);
                }
            } else if now >= r.next {
                out.push(Action::Send(r.dest, r.msg.clone()));
                r.interval = (r.interval * 2).min(r.cap);
                r.next = now + r.interval;
            }
        }
        if let Some(b) = self.b.as_mut() {
            if let Some(r) = b.retransmit.as_mut() {
                if now >= r.next {
                    out.push(Action::Send(r.dest, r.msg.clone()));
                    r.interval *= 2;
                    r.next = now + r.interval;
                }
            }
            if b.final_status.is_none() && !b.provisional && now >= b.invite_deadline && !self.ended {
                // Timer B: the device never answered at all.
                b.retransmit = None;
                b.final_status = Some(408);
                self.final_to_caller(480, now, &mut out);
                self.end(EndReason::Failed, HangupBy::System, 480, now, &mut out);
            }
        }
        if self.ring_deadline.is_some_and(|d| now >= d) {
            self.ring_deadline = None;
            if !self.ended {
                self.cancel_device(now, &mut out);
                self.final_to_caller(480, now, &mut out);
                self.end(EndReason::NoAnswer, HangupBy::System, 480, now, &mut out);
            }
        }
        let mut keep = Vec::new();
        for (key, mut r) in std::mem::take(&mut self.pending) {
            if now >= r.give_up {
                continue;
            }
            if now >= r.next {
                out.push(Action::Send(r.dest, r.msg.clone()));
                r.interval = (r.interval * 2).min(r.cap);
                r.next = now + r.interval;
            }
            keep.push((key, r));
        }
        self.pending = keep;
        out
    }

    /// True once the call ended and its retransmission window passed.
    pub fn is_finished(&self, now: Instant) -> bool {
        self.linger_until.is_some_and(|t| now >= t)
    }

    pub fn has_ended(&self) -> bool {
        self.ended
    }

    /// Hangs up both legs on behalf of the system (shutdown, media failure).
    pub fn terminate(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        if self.a.final_status.is_none() {
            self.final_to_caller(503, now, &mut out);
            self.cancel_device(now, &mut out);
        } else {
            self.bye_caller(now, &mut out);
            self.hang_up_device(now, &mut out);
        }
        self.end(EndReason::Failed, HangupBy::System, 503, now, &mut out);
        out
    }

    // ---- internals ----

    fn b_dest(&self) -> Destination {
        self.b.as_ref().map(|b| b.dest).unwrap_or(self.a.source)
    }

    fn end(&mut self, reason: EndReason, by: HangupBy, status: u16, now: Instant, out: &mut Vec<Action>) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.state = State::Finished;
        self.ring_deadline = None;
        self.linger_until = Some(now + LINGER);
        out.push(Action::Ended { reason, hangup_by: by, sip_status: status });
    }

    fn final_to_caller(&mut self, code: u16, now: Instant, out: &mut Vec<Action>) {
        if self.a.final_status.is_some() {
            return;
        }
        let r = make_response(&self.a.invite, code, Some(&self.a.to_tag), &self.local.user_agent);
        self.a.final_status = Some(code);
        self.a.last_response = Some(r.clone());
        self.a.retransmit = Retransmit::new(self.a.source, r.clone(), now, T2);
        out.push(Action::Send(self.a.source, r));
    }

    fn caller_reinvite(&mut self, msg: SipMessage, source: Destination, out: &mut Vec<Action>) {
        // Answered locally: the device leg is not touched.
        let (Some(media), true) = (self.media, self.a.final_status == Some(200)) else {
            out.push(Action::Send(source, make_response(&msg, 491, None, &self.local.user_agent)));
            return;
        };
        if !msg.body.is_empty() {
            match sdp::parse_audio(&msg.body) {
                Ok(offer) => {
                    if offer.rtp != self.a.offer.rtp {
                        out.push(Action::CallerMedia { rtp: offer.rtp });
                    }
                    self.a.offer = offer;
                }
                Err(_) => {
                    out.push(Action::Send(source, make_response(&msg, 488, None, &self.local.user_agent)));
                    return;
                }
            }
        }
        self.a.sdp_version += 1;
        let formats = sdp::filter_supported(&self.a.offer.formats);
        let answer = sdp::build(session_id(&self.id), self.a.sdp_version, media.ip, media.a_port, &formats, Direction::SendRecv);
        let mut ok = make_response(&msg, 200, None, &self.local.user_agent);
        ok.push_header("Contact", self.local.contact(&source)).set_body("application/sdp", Bytes::from(answer));
        out.push(Action::Send(source, ok));
    }

    fn device_request(&mut self, msg: SipMessage, source: Destination, now: Instant, out: &mut Vec<Action>) {
        let method = msg.method().unwrap_or("").to_owned();
        match method.as_str() {
            "BYE" => {
                out.push(Action::Send(source, make_response(&msg, 200, None, &self.local.user_agent)));
                if !self.ended {
                    self.bye_caller(now, out);
                    self.end(EndReason::Completed, HangupBy::Callee, 200, now, out);
                }
            }
            "ACK" => {}
            "INVITE" => {
                // Re-INVITE from the device (e.g. hold): answered locally.
                let Some(media) = self.media else {
                    out.push(Action::Send(source, make_response(&msg, 491, None, &self.local.user_agent)));
                    return;
                };
                let Some(b) = self.b.as_mut() else { return };
                b.sdp_version += 1;
                let formats = sdp::parse_audio(&msg.body)
                    .map(|a| sdp::filter_supported(&a.formats))
                    .unwrap_or_else(|_| sdp::parse_audio(b.offer_sdp.as_bytes()).map(|a| a.formats).unwrap_or_default());
                let answer = sdp::build(session_id(&self.id), b.sdp_version, media.ip, media.b_port, &formats, Direction::SendRecv);
                let mut ok = make_response(&msg, 200, None, &self.local.user_agent);
                ok.push_header("Contact", self.local.contact(&source)).set_body("application/sdp", Bytes::from(answer));
                out.push(Action::Send(source, ok));
            }
            "OPTIONS" => out.push(Action::Send(source, make_response(&msg, 200, None, &self.local.user_agent))),
            _ => out.push(Action::Send(source, make_response(&msg, 405, None, &self.local.user_agent))),
        }
    }

    fn device_ack_for_2xx(&self) -> SipMessage {
        let b = self.b.as_ref().expect("device leg exists");
        let uri = b.remote_target.clone().unwrap_or_else(|| b.request_uri.clone());
        let mut ack = SipMessage::request("ACK", uri);
        ack.push_header("Via", self.local.via(&b.dest, &new_branch()))
            .push_header("Max-Forwards", "70")
            .push_header("From", b.invite.header("From").unwrap_or_default().to_owned())
            .push_header("To", self.device_to())
            .push_header("Call-ID", b.call_id.clone())
            .push_header("CSeq", "1 ACK");
        ack
    }

    fn device_ack_for_failure(&self, response: &SipMessage) -> SipMessage {
        let b = self.b.as_ref().expect("device leg exists");
        let mut ack = SipMessage::request("ACK", b.request_uri.clone());
        ack.push_header("Via", b.invite.header("Via").unwrap_or_default().to_owned())
            .push_header("Max-Forwards", "70")
            .push_header("From", b.invite.header("From").unwrap_or_default().to_owned())
            .push_header("To", response.header("To").unwrap_or_default().to_owned())
            .push_header("Call-ID", b.call_id.clone())
            .push_header("CSeq", "1 ACK");
        ack
    }

    fn device_to(&self) -> String {
        let b = self.b.as_ref().expect("device leg exists");
        match &b.to_tag {
            Some(t) => format!("<{}>;tag={}", b.request_uri, t),
            None => format!("<{}>", b.request_uri),
        }
    }

    /// Ends leg B however far it got: CANCEL while ringing, BYE once answered.
    fn hang_up_device(&mut self, now: Instant, out: &mut Vec<Action>) {
        match self.b.as_ref().map(|b| b.final_status) {
            Some(Some(s)) if (200..300).contains(&s) => self.bye_device(now, out),
            Some(None) => self.cancel_device(now, out),
            _ => {}
        }
    }

    fn cancel_device(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(b) = self.b.as_mut() else { return };
        if b.final_status.is_some() || b.cancelled {
            return;
        }
        b.cancelled = true;
        b.retransmit = None;
        let mut cancel = SipMessage::request("CANCEL", b.request_uri.clone());
        cancel
            .push_header("Via", b.invite.header("Via").unwrap_or_default().to_owned())
            .push_header("Max-Forwards", "70")
            .push_header("From", b.invite.header("From").unwrap_or_default().to_owned())
            .push_header("To", b.invite.header("To").unwrap_or_default().to_owned())
            .push_header("Call-ID", b.call_id.clone())
            .push_header("CSeq", "1 CANCEL")
            .push_header("Reason", "SIP;cause=487;text=\"Caller cancelled\"");
        let dest = b.dest;
        let key = format!("{} 1 CANCEL", b.call_id);
        self.track(key, dest, cancel.clone(), now);
        out.push(Action::Send(dest, cancel));
    }

    fn bye_device(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(b) = self.b.as_ref() else { return };
        let uri = b.remote_target.clone().unwrap_or_else(|| b.request_uri.clone());
        let mut bye = SipMessage::request("BYE", uri);
        bye.push_header("Via", self.local.via(&b.dest, &new_branch()))
            .push_header("Max-Forwards", "70")
            .push_header("From", b.invite.header("From").unwrap_or_default().to_owned())
            .push_header("To", self.device_to())
            .push_header("Call-ID", b.call_id.clone())
            .push_header("CSeq", "2 BYE")
            .push_header("User-Agent", self.local.user_agent.clone());
        let dest = b.dest;
        let key = format!("{} 2 BYE", b.call_id);
        self.track(key, dest, bye.clone(), now);
        out.push(Action::Send(dest, bye));
    }

    fn bye_caller(&mut self, now: Instant, out: &mut Vec<Action>) {
        let inv = &self.a.invite;
        let contact = inv.header("Contact").and_then(NameAddr::parse).map(|n| n.uri);
        let uri = contact.or_else(|| inv.header("From").and_then(NameAddr::parse).map(|n| n.uri)).unwrap_or_default();
        if SipUri::parse(&uri).is_none() {
            return;
        }
        self.a.local_cseq += 1;
        let cseq = self.a.local_cseq;
        let to_value = inv.header("To").unwrap_or_default();
        let from = format!("{};tag={}", to_value, self.a.to_tag);
        let mut bye = SipMessage::request("BYE", uri);
        bye.push_header("Via", self.local.via(&self.a.source, &new_branch()))
            .push_header("Max-Forwards", "70")
            .push_header("From", from)
            .push_header("To", inv.header("From").unwrap_or_default().to_owned())
            .push_header("Call-ID", inv.header("Call-ID").unwrap_or_default().to_owned())
            .push_header("CSeq", format!("{cseq} BYE"))
            .push_header("User-Agent", self.local.user_agent.clone());
        let dest = self.a.source;
        let key = format!("{} {} BYE", inv.header("Call-ID").unwrap_or_default(), cseq);
        self.track(key, dest, bye.clone(), now);
        out.push(Action::Send(dest, bye));
    }

    fn track(&mut self, key: String, dest: Destination, msg: SipMessage, now: Instant) {
        if let Some(r) = Retransmit::new(dest, msg, now, T2) {
            self.pending.push((key, r));
        }
    }

    fn clear_pending(&mut self, response: &SipMessage) {
        if response.status().is_some_and(|s| s < 200) {
            return;
        }
        let (Some(call_id), Some(cseq)) = (response.header("Call-ID"), response.header("CSeq").and_then(CSeq::parse)) else {
            return;
        };
        let key = format!("{} {} {}", call_id, cseq.seq, cseq.method);
        self.pending.retain(|(k, _)| *k != key);
    }
}

/// The formats to answer the caller with: the caller's offered formats that
/// the device accepted, in the device's order, keeping the caller's payload
/// type numbers (G.711 passes through unchanged).
fn answer_formats(offered: &[Format], device: &[Format]) -> Vec<Format> {
    let mut out: Vec<Format> = device
        .iter()
        .filter_map(|d| {
            offered.iter().find(|o| o.encoding.eq_ignore_ascii_case(&d.encoding) && o.clock_rate == d.clock_rate).cloned()
        })
        .filter(sdp::supported)
        .collect();
    if out.is_empty() {
        out = sdp::filter_supported(offered);
    }
    out
}

/// The caller-facing status and end reason for a device's failure status.
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

fn session_id(call_id: &str) -> u64 {
    call_id.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)) >> 2
}

#[cfg(test)]
mod tests;
