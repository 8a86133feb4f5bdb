//! The browser phones' SIP side, sans-IO: one user agent inside the
//! gateway that every open softphone page is registered through.
//!
//! A page registers as a binding of its user's browser device with a
//! contact on this agent (`sip:<instance>@127.0.0.1:<port>`), so routing,
//! forking, answering from the softphone, transfers, moves and parking
//! reach a browser exactly as they reach a desk phone: the call manager
//! sends this agent an INVITE. The agent is a UAS only: it rings (180),
//! reports the call ([`UaEvent::Incoming`]) so the page gets a WebRTC
//! offer, and answers (200 with the SDP of the leg's plain-RTP side) once
//! the page answered; it takes re-INVITEs (hold) without bothering the
//! page, answers CANCEL and BYE, and sends BYE itself when the page's leg
//! dies. Requests and responses come in as datagrams; datagrams to send
//! and events come out, with the time passed in for retransmissions.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::media::sdp::{self, AudioDescription, Direction};
use crate::sip::headers::{new_branch, new_tag, NameAddr, SipUri, Via};
use crate::sip::message::SipMessage;
use crate::sip::response::make_response;

/// RFC 3261 T1 and T2.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
/// How long a 2xx is retransmitted without an ACK (64·T1).
const GIVE_UP: Duration = Duration::from_secs(32);
const SERVER: &str = "Switchboard browser phone";
const MAX_SIZE: usize = 64 * 1024;

/// A call the manager offers a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The dialog's SIP Call-ID: the leg's key here.
    pub dialog: String,
    /// Which page: the user part of the request URI.
    pub instance: String,
    /// The Switchboard call id (`X-Switchboard-Call-ID`).
    pub call_id: String,
    /// The manager asks the page to answer at once (`answer-after=0`:
    /// placed, answered or moved from the softphone).
    pub auto_answer: bool,
    /// Who calls, as the INVITE's From presents it: the number (the URI's
    /// user part) and the display name, if any.
    pub caller_number: String,
    pub caller_name: Option<String>,
    /// The manager's offer: where its media bridge takes RTP, and the
    /// formats it sends.
    pub offer: AudioDescription,
}

/// What the agent tells the rest of the browser-phone service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UaEvent {
    Incoming(Incoming),
    /// The manager moved its side of the media (a re-INVITE to another
    /// address).
    Retarget { dialog: String, rtp: SocketAddr },
    /// The call is over for this leg (CANCEL, BYE, no ACK, or refused).
    Ended { dialog: String },
}

/// One action: a datagram to send, or an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UaOutput {
    Send { to: SocketAddr, bytes: Vec<u8> },
    Event(UaEvent),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// 180 sent; waiting for the page.
    Ringing,
    /// 2xx sent, retransmitted until the ACK.
    Answering,
    Confirmed,
    /// A final error response sent; waiting for the ACK to absorb.
    Refused,
    /// Our BYE is out.
    Closing,
}

#[derive(Debug)]
struct Dialog {
    invite: SipMessage,
    /// Where the manager's requests come from (answers go there).
    peer: SocketAddr,
    to_tag: String,
    state: State,
    /// The final response, resent for a retransmitted INVITE and on the
    /// 2xx timer.
    last_response: Option<Vec<u8>>,
    retransmit_at: Option<Instant>,
    interval: Duration,
    give_up_at: Option<Instant>,
    /// Our SDP, for re-INVITEs.
    answer_sdp: Option<String>,
    /// The session version of our SDP.
    sdp_version: u64,
    local_cseq: u32,
    /// Our BYE, retransmitted until answered.
    bye: Option<Vec<u8>>,
}

/// The agent.
#[derive(Debug)]
pub struct BrowserUa {
    /// Our own address: Contact and Via.
    local: SocketAddr,
    dialogs: HashMap<String, Dialog>,
    out: VecDeque<UaOutput>,
}

impl BrowserUa {
    pub fn new(local: SocketAddr) -> BrowserUa {
        BrowserUa { local, dialogs: HashMap::new(), out: VecDeque::new() }
    }

    /// The contact a page's registration binds: requests for it reach
    /// this agent.
    pub fn contact(&self, instance: &str) -> String {
        format!("sip:{instance}@{}", self.local)
    }

    /// Legs in progress.
    pub fn len(&self) -> usize {
        self.dialogs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dialogs.is_empty()
    }

    /// The next thing to do.
    pub fn poll(&mut self) -> Option<UaOutput> {
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.dialogs.values().flat_map(|d| [d.retransmit_at, d.give_up_at]).flatten().min()
    }

    /// A datagram from `from`. Anything that is not SIP is dropped.
    pub fn receive(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let Ok(msg) = SipMessage::parse(bytes, MAX_SIZE) else {
            tracing::debug!(%from, "the browser-phone agent dropped a datagram that is no SIP message");
            return;
        };
        match msg.method().map(str::to_owned) {
            Some(method) => self.request(now, from, &method, msg),
            None => self.response(&msg),
        }
    }

    /// The page answered: 200 with `sdp` (the leg's plain-RTP side).
    pub fn answer(&mut self, now: Instant, dialog: &str, sdp: String) -> bool {
        let local = self.local;
        let Some(d) = self.dialogs.get_mut(dialog).filter(|d| d.state == State::Ringing) else { return false };
        let mut ok = make_response(&d.invite, 200, Some(&d.to_tag), SERVER);
        ok.push_header("Contact", format!("<{}>", contact_of(&d.invite, local)));
        ok.push_header("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO");
        ok.set_body("application/sdp", Bytes::from(sdp.clone()));
        let bytes = ok.encode();
        d.answer_sdp = Some(sdp);
        d.state = State::Answering;
        d.last_response = Some(bytes.clone());
        d.interval = T1;
        d.retransmit_at = Some(now + T1);
        d.give_up_at = Some(now + GIVE_UP);
        self.out.push_back(UaOutput::Send { to: d.peer, bytes });
        true
    }

    /// The page refused the call (or cannot take it): a final error.
    pub fn refuse(&mut self, now: Instant, dialog: &str, code: u16) {
        let Some(d) = self.dialogs.get_mut(dialog).filter(|d| d.state == State::Ringing) else { return };
        let bytes = make_response(&d.invite, code, Some(&d.to_tag), SERVER).encode();
        d.state = State::Refused;
        d.last_response = Some(bytes.clone());
        d.give_up_at = Some(now + GIVE_UP);
        self.out.push_back(UaOutput::Send { to: d.peer, bytes });
        self.out.push_back(UaOutput::Event(UaEvent::Ended { dialog: dialog.to_owned() }));
    }

    /// The page's leg is gone: BYE if answered, else a refusal.
    pub fn hang_up(&mut self, now: Instant, dialog: &str) {
        let local = self.local;
        let Some(d) = self.dialogs.get_mut(dialog) else { return };
        match d.state {
            State::Ringing => self.refuse(now, dialog, 480),
            State::Answering | State::Confirmed => {
                d.local_cseq += 1;
                let bye = bye_for(d, local);
                d.state = State::Closing;
                d.bye = Some(bye.clone());
                d.interval = T1;
                d.retransmit_at = Some(now + T1);
                d.give_up_at = Some(now + GIVE_UP);
                self.out.push_back(UaOutput::Send { to: d.peer, bytes: bye });
                self.out.push_back(UaOutput::Event(UaEvent::Ended { dialog: dialog.to_owned() }));
            }
            State::Refused | State::Closing => {}
        }
    }

    /// Retransmits what is due; forgets dialogs whose time is up.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut ended = Vec::new();
        for (key, d) in &mut self.dialogs {
            if d.give_up_at.is_some_and(|at| at <= now) {
                if d.state == State::Answering {
                    tracing::warn!(dialog = %key, "no ACK for the browser phone's answer; the leg is dropped");
                }
                ended.push((key.clone(), d.state));
                continue;
            }
            if d.retransmit_at.is_some_and(|at| at <= now) {
                let bytes = match d.state {
                    State::Answering => d.last_response.clone(),
                    State::Closing => d.bye.clone(),
                    _ => None,
                };
                if let Some(bytes) = bytes {
                    self.out.push_back(UaOutput::Send { to: d.peer, bytes });
                }
                d.interval = (d.interval * 2).min(T2);
                d.retransmit_at = Some(now + d.interval);
            }
        }
        for (key, state) in ended {
            self.dialogs.remove(&key);
            if state == State::Answering {
                self.out.push_back(UaOutput::Event(UaEvent::Ended { dialog: key }));
            }
        }
    }

    fn request(&mut self, now: Instant, from: SocketAddr, method: &str, msg: SipMessage) {
        let Some(call_id) = msg.header("Call-ID").map(str::to_owned) else { return };
        let peer = reply_address(&msg, from);
        match (method, self.dialogs.get_mut(&call_id)) {
            ("INVITE", None) => self.new_invite(peer, call_id, msg),
            ("INVITE", Some(d)) if same_transaction(&d.invite, &msg) => {
                // A retransmission: the last answer again (or the 180).
                let bytes = d.last_response.clone().unwrap_or_else(|| make_response(&d.invite, 180, Some(&d.to_tag), SERVER).encode());
                self.out.push_back(UaOutput::Send { to: peer, bytes });
            }
            ("INVITE", Some(d)) => {
                // A re-INVITE (hold, resume, a new media address): answered
                // here with the same media, the direction mirrored.
                let Some(mut sdp_text) = d.answer_sdp.clone() else {
                    let bytes = make_response(&msg, 491, None, SERVER).encode();
                    self.out.push_back(UaOutput::Send { to: peer, bytes });
                    return;
                };
                if let Ok(offer) = sdp::parse_audio(&msg.body) {
                    let direction = match offer.direction {
                        Direction::SendOnly => "recvonly",
                        Direction::RecvOnly => "sendonly",
                        Direction::Inactive => "inactive",
                        Direction::SendRecv => "sendrecv",
                    };
                    d.sdp_version += 1;
                    sdp_text = with_direction_and_version(&sdp_text, direction, d.sdp_version);
                    let moved = sdp::parse_audio(&d.invite.body).map(|o| o.rtp != offer.rtp).unwrap_or(true);
                    if moved {
                        self.out.push_back(UaOutput::Event(UaEvent::Retarget { dialog: call_id.clone(), rtp: offer.rtp }));
                    }
                    d.invite.body = msg.body.clone();
                }
                let mut ok = make_response(&msg, 200, None, SERVER);
                ok.push_header("Contact", format!("<{}>", contact_of(&d.invite, self.local)));
                ok.set_body("application/sdp", Bytes::from(sdp_text));
                self.out.push_back(UaOutput::Send { to: peer, bytes: ok.encode() });
            }
            ("ACK", Some(d)) => {
                if d.state == State::Answering {
                    d.state = State::Confirmed;
                    d.retransmit_at = None;
                    d.give_up_at = None;
                } else if d.state == State::Refused {
                    self.dialogs.remove(&call_id);
                }
            }
            ("ACK", None) => {}
            ("CANCEL", Some(d)) => {
                let ok = make_response(&msg, 200, Some(&d.to_tag), SERVER).encode();
                self.out.push_back(UaOutput::Send { to: peer, bytes: ok });
                if d.state == State::Ringing {
                    let terminated = make_response(&d.invite, 487, Some(&d.to_tag), SERVER).encode();
                    d.state = State::Refused;
                    d.last_response = Some(terminated.clone());
                    d.give_up_at = Some(now + GIVE_UP);
                    self.out.push_back(UaOutput::Send { to: d.peer, bytes: terminated });
                    self.out.push_back(UaOutput::Event(UaEvent::Ended { dialog: call_id }));
                }
            }
            ("BYE", Some(d)) => {
                let ok = make_response(&msg, 200, None, SERVER).encode();
                self.out.push_back(UaOutput::Send { to: peer, bytes: ok });
                let was_closing = d.state == State::Closing;
                self.dialogs.remove(&call_id);
                if !was_closing {
                    self.out.push_back(UaOutput::Event(UaEvent::Ended { dialog: call_id }));
                }
            }
            ("CANCEL" | "BYE", None) => {
                let bytes = make_response(&msg, 481, None, SERVER).encode();
                self.out.push_back(UaOutput::Send { to: peer, bytes });
            }
            _ => {
                // OPTIONS, UPDATE without a body, INFO, NOTIFY: nothing to
                // do for a browser, so accepted.
                let bytes = make_response(&msg, 200, None, SERVER).encode();
                self.out.push_back(UaOutput::Send { to: peer, bytes });
            }
        }
    }

    fn new_invite(&mut self, peer: SocketAddr, call_id: String, invite: SipMessage) {
        let to_tag = new_tag();
        let instance = invite.request_uri().and_then(SipUri::parse).and_then(|u| u.user.clone()).unwrap_or_default();
        let offer = match sdp::parse_audio(&invite.body) {
            Ok(offer) => offer,
            Err(e) => {
                tracing::warn!(dialog = %call_id, error = %e, "an INVITE for a browser phone without a usable offer");
                let bytes = make_response(&invite, 488, Some(&to_tag), SERVER).encode();
                self.out.push_back(UaOutput::Send { to: peer, bytes });
                return;
            }
        };
        let switchboard_call = invite.header("X-Switchboard-Call-ID").unwrap_or_default().to_owned();
        let auto_answer = invite.header_values("Call-Info").iter().any(|v| v.contains("answer-after=0"))
            || invite.header_values("Alert-Info").iter().any(|v| v.contains("alert-autoanswer"));
        let from = invite.header("From").and_then(NameAddr::parse);
        let caller_number = from.as_ref().and_then(|f| SipUri::parse(&f.uri)).and_then(|u| u.user).unwrap_or_default();
        let caller_name = from.and_then(|f| f.display).filter(|d| !d.trim().is_empty());
        let ringing = make_response(&invite, 180, Some(&to_tag), SERVER);
        self.out.push_back(UaOutput::Send { to: peer, bytes: ringing.encode() });
        self.out.push_back(UaOutput::Event(UaEvent::Incoming(Incoming {
            dialog: call_id.clone(),
            instance,
            call_id: switchboard_call,
            auto_answer,
            caller_number,
            caller_name,
            offer,
        })));
        self.dialogs.insert(
            call_id,
            Dialog {
                invite,
                peer,
                to_tag,
                state: State::Ringing,
                last_response: None,
                retransmit_at: None,
                interval: T1,
                give_up_at: None,
                answer_sdp: None,
                sdp_version: 1,
                local_cseq: 0,
                bye: None,
            },
        );
    }

    fn response(&mut self, msg: &SipMessage) {
        // Only our BYEs are answered.
        let Some(call_id) = msg.header("Call-ID") else { return };
        if msg.status().is_some_and(|s| s >= 200) && self.dialogs.get(call_id).is_some_and(|d| d.state == State::Closing) {
            self.dialogs.remove(call_id);
        }
    }
}

/// Where responses go: where the request came from (the manager sends
/// and listens on one socket, and answers are routed symmetrically, RFC
/// 3581).
fn reply_address(_msg: &SipMessage, from: SocketAddr) -> SocketAddr {
    from
}

/// The INVITE and `msg` are the same transaction (a retransmission).
fn same_transaction(invite: &SipMessage, msg: &SipMessage) -> bool {
    let branch = |m: &SipMessage| m.header("Via").and_then(Via::parse).and_then(|v| v.branch().map(str::to_owned));
    branch(invite) == branch(msg) && invite.header("CSeq") == msg.header("CSeq")
}

fn contact_of(invite: &SipMessage, local: SocketAddr) -> String {
    let user = invite.request_uri().and_then(SipUri::parse).and_then(|u| u.user.clone()).unwrap_or_else(|| "browser".into());
    format!("sip:{user}@{local}")
}

/// Our BYE in the dialog of `d` (we are the UAS: From is their To).
fn bye_for(d: &Dialog, local: SocketAddr) -> Vec<u8> {
    let inv = &d.invite;
    let target = inv.header("Contact").and_then(NameAddr::parse).map(|n| n.uri.clone()).unwrap_or_else(|| format!("sip:{}", d.peer));
    let to_with_tag = format!("{};tag={}", inv.header("To").unwrap_or_default(), d.to_tag);
    let mut bye = SipMessage::request("BYE", target);
    bye.push_header("Via", format!("SIP/2.0/UDP {local};branch={};rport", new_branch()))
        .push_header("Max-Forwards", "70")
        .push_header("From", to_with_tag)
        .push_header("To", inv.header("From").unwrap_or_default().to_owned())
        .push_header("Call-ID", inv.header("Call-ID").unwrap_or_default().to_owned())
        .push_header("CSeq", format!("{} BYE", d.local_cseq))
        .push_header("Reason", "Q.850;cause=16;text=\"the browser phone hung up\"");
    bye.encode()
}

/// `sdp` with its direction attribute and `o=` version replaced.
fn with_direction_and_version(sdp: &str, direction: &str, version: u64) -> String {
    sdp.split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|line| match line {
            "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive" => format!("a={direction}"),
            l if l.starts_with("o=") => {
                let mut parts: Vec<&str> = l.split(' ').collect();
                let v = version.to_string();
                if parts.len() > 2 {
                    parts[2] = &v;
                    parts.join(" ")
                } else {
                    l.to_owned()
                }
            }
            l => l.to_owned(),
        })
        .map(|l| l + "\r\n")
        .collect()
}
