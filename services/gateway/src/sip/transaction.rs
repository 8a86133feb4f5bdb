//! SIP transactions (RFC 3261 §17, with the Accepted states of RFC 6026),
//! as a sans-IO layer between the transports and the transaction users
//! (calls, the registrar, OPTIONS).
//!
//! The layer matches every message to a transaction (§17.1.3, §17.2.3),
//! absorbs retransmissions, retransmits what it sent over unreliable
//! transports (Timers A, E, G), times transactions out (Timers B, F, H) and
//! keeps finished transactions long enough to absorb late copies (Timers D,
//! I, J, K, L, M). What reaches the transaction user is exactly one copy of
//! each new request and each response it must see; a transaction that times
//! out is reported as a `408 Request Timeout` response (§8.1.3.1).
//!
//! Inputs are messages and the current time; outputs are [`Output`]s. Timers
//! are polled through [`TransactionLayer::next_deadline`] and
//! [`TransactionLayer::on_timer`], so tests drive the clock.
//!
//! ACK for a 2xx is not part of any transaction (§17.1.1.3): the user sends
//! and retransmits it, and an ACK received for a 2xx is delivered. The 2xx
//! to an INVITE is retransmitted by the user (the UAS core, §13.3.1.4); the
//! server transaction in its Accepted state passes those copies on and
//! swallows retransmitted INVITEs.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::headers::{CSeq, NameAddr, Via};
use super::response::make_response;
use super::{Destination, SipMessage};

/// RFC 3261 timer values (Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses.
    pub t2: Duration,
    /// Maximum time a message stays in the network.
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers { t1: Duration::from_millis(500), t2: Duration::from_secs(4), t4: Duration::from_secs(5) }
    }
}

impl Timers {
    /// 64·T1: Timers B, F, H, J, L, M.
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// Timer C (§16.6, borrowed from proxies): how long a client INVITE may stay
/// in Proceeding without a final response before it is reported as a 408.
pub const TIMER_C: Duration = Duration::from_secs(180);

/// How long a server INVITE transaction waits for its user's final response
/// before it is dropped (a user that never answers must not leak it).
const ABANDONED_INVITE: Duration = Duration::from_secs(600);

/// What the layer asks of its driver.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Put this message on the wire.
    Send(Destination, SipMessage),
    /// Put these bytes on the wire again: a response kept, encoded, for the
    /// peer's retransmissions (smaller than the parsed message).
    Resend(Destination, Bytes),
    /// Hand this message to the transaction user: a new request, a response
    /// to one of its requests (a timeout arrives as a synthetic 408), or an
    /// ACK for a 2xx.
    Deliver(SipMessage, Destination),
}

/// Which half of the protocol a transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Side {
    Client,
    Server,
}

/// Transaction identity: the branch of the top Via, the sent-by of that Via
/// (server side only) and the method, with ACK folded into INVITE.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    side: Side,
    branch: String,
    sent_by: String,
    method: String,
}

impl Key {
    /// The key of the client transaction a message (a request we send or a
    /// response we receive) belongs to.
    fn client(msg: &SipMessage) -> Option<Key> {
        let via = msg.header("Via").and_then(Via::parse)?;
        let method = match msg.method() {
            Some(m) => m.to_owned(),
            None => msg.header("CSeq").and_then(CSeq::parse)?.method,
        };
        let method = if method == "ACK" { "INVITE".to_owned() } else { method };
        Some(Key { side: Side::Client, branch: via.branch()?.to_owned(), sent_by: String::new(), method })
    }

    /// The key of the server transaction a message (a request we receive or
    /// a response we send) belongs to. Requests from RFC 2543 peers (no
    /// magic cookie) are keyed by what §17.2.3 falls back to: Call-ID, From
    /// tag, CSeq number and the top Via.
    fn server(msg: &SipMessage) -> Option<Key> {
        let top = msg.header("Via")?;
        let via = Via::parse(top)?;
        let cseq = msg.header("CSeq").and_then(CSeq::parse)?;
        let method = match msg.method() {
            Some(m) => m.to_owned(),
            None => cseq.method.clone(),
        };
        let method = if method == "ACK" { "INVITE".to_owned() } else { method };
        let sent_by = format!("{}:{}", via.host.to_ascii_lowercase(), via.port.unwrap_or(0));
        let branch = match via.branch() {
            Some(b) if b.starts_with("z9hG4bK") => b.to_owned(),
            _ => {
                let from_tag = msg.header("From").and_then(NameAddr::parse).and_then(|n| n.tag().map(str::to_owned));
                format!(
                    "2543|{}|{}|{}|{}",
                    msg.header("Call-ID").unwrap_or(""),
                    from_tag.unwrap_or_default(),
                    cseq.seq,
                    top.trim()
                )
            }
        };
        Some(Key { side: Side::Server, branch, sent_by, method })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    /// INVITE sent, nothing heard (Calling) / non-INVITE sent (Trying).
    Calling,
    Proceeding,
    /// INVITE answered by a 2xx (RFC 6026).
    Accepted,
    Completed,
}

#[derive(Debug)]
struct ClientTx {
    invite: bool,
    state: ClientState,
    dest: Destination,
    request: SipMessage,
    /// ACK for a non-2xx final response, resent for each retransmitted final.
    ack: Option<SipMessage>,
    /// Timer A / E.
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// Timer B / F.
    timeout_at: Option<Instant>,
    /// Timer D / K / M.
    end_at: Option<Instant>,
}

impl ClientTx {
    fn deadline(&self) -> Option<Instant> {
        [self.retransmit_at, self.timeout_at, self.end_at].into_iter().flatten().min()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    /// Request received, no response sent yet (Trying; INVITE: Proceeding).
    Trying,
    Proceeding,
    /// INVITE answered with a 2xx (RFC 6026).
    Accepted,
    Completed,
    /// INVITE's non-2xx final acknowledged.
    Confirmed,
}

#[derive(Debug)]
struct ServerTx {
    invite: bool,
    state: ServerState,
    source: Destination,
    /// The last provisional or final response, encoded.
    last_response: Option<Bytes>,
    /// Timer G.
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// Timer H.
    timeout_at: Option<Instant>,
    /// Timer I / J / L.
    end_at: Option<Instant>,
}

impl ServerTx {
    fn deadline(&self) -> Option<Instant> {
        [self.retransmit_at, self.timeout_at, self.end_at].into_iter().flatten().min()
    }
}

/// Counters the driver exports as metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Copies of requests or responses absorbed as retransmissions.
    pub absorbed: u64,
    /// Messages this layer retransmitted on a timer or on a retransmission.
    pub retransmitted: u64,
    /// Client transactions that timed out (Timer B or F).
    pub timeouts: u64,
    /// Responses that matched no client transaction and were not 2xx to INVITE.
    pub stray_responses: u64,
}

/// Every live transaction of the gateway.
#[derive(Debug, Default)]
pub struct TransactionLayer {
    timers: Timers,
    clients: HashMap<Arc<Key>, ClientTx>,
    servers: HashMap<Arc<Key>, ServerTx>,
    /// Deadlines, possibly stale: an entry is checked against its
    /// transaction when it comes due (lazy deletion). Keys are shared with
    /// the maps.
    wheel: BinaryHeap<Reverse<(Instant, u64, Arc<Key>)>>,
    seq: u64,
    stats: Stats,
}

impl TransactionLayer {
    pub fn new(timers: Timers) -> Self {
        TransactionLayer { timers, ..Default::default() }
    }

    pub fn timers(&self) -> Timers {
        self.timers
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Live transactions (client, server).
    pub fn len(&self) -> (usize, usize) {
        (self.clients.len(), self.servers.len())
    }

    /// Whether a server INVITE transaction for this CANCEL's INVITE exists
    /// (§9.2): same branch and sent-by, method INVITE.
    pub fn has_invite_for(&self, cancel: &SipMessage) -> bool {
        Key::server(cancel).is_some_and(|mut k| {
            k.method = "INVITE".into();
            self.servers.contains_key(&k)
        })
    }

    /// A message from the network.
    pub fn receive(&mut self, msg: SipMessage, source: Destination, now: Instant) -> Vec<Output> {
        if msg.is_request() {
            self.receive_request(msg, source, now)
        } else {
            self.receive_response(msg, source, now)
        }
    }

    /// A message from the transaction user. Requests other than ACK start a
    /// client transaction; responses go through their server transaction
    /// when it exists (statelessly otherwise); ACKs pass straight through.
    pub fn send(&mut self, dest: Destination, msg: SipMessage, now: Instant) -> Vec<Output> {
        match msg.method() {
            Some("ACK") => vec![Output::Send(dest, msg)],
            Some(_) => self.send_request(dest, msg, now),
            None => self.send_response(dest, msg, now),
        }
    }

    /// The earliest time [`TransactionLayer::on_timer`] has work to do.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        // Drop stale heads so the answer is the real next deadline.
        while let Some(Reverse((at, _, key))) = self.wheel.peek() {
            if self.current_deadline(key) == Some(*at) {
                return Some(*at);
            }
            self.wheel.pop();
        }
        None
    }

    /// Fires every timer due at `now`.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some(Reverse((at, _, _))) = self.wheel.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, _, key))) = self.wheel.pop() else { break };
            if self.current_deadline(&key) != Some(at) {
                continue; // stale entry
            }
            match key.side {
                Side::Client => self.client_timer(&key, now, &mut out),
                Side::Server => self.server_timer(&key, now, &mut out),
            }
        }
        out
    }

    // ---- internals ----

    fn current_deadline(&self, key: &Key) -> Option<Instant> {
        match key.side {
            Side::Client => self.clients.get(key).and_then(ClientTx::deadline),
            Side::Server => self.servers.get(key).and_then(ServerTx::deadline),
        }
    }

    fn schedule(&mut self, key: &Key) {
        let shared = match key.side {
            Side::Client => self.clients.get_key_value(key).map(|(k, _)| k.clone()),
            Side::Server => self.servers.get_key_value(key).map(|(k, _)| k.clone()),
        };
        if let (Some(shared), Some(at)) = (shared, self.current_deadline(key)) {
            self.seq += 1;
            self.wheel.push(Reverse((at, self.seq, shared)));
        }
    }

    fn send_request(&mut self, dest: Destination, msg: SipMessage, now: Instant) -> Vec<Output> {
        let Some(key) = Key::client(&msg) else {
            return vec![Output::Send(dest, msg)];
        };
        let invite = key.method == "INVITE";
        let reliable = dest.is_reliable();
        let t1 = self.timers.t1;
        let tx = ClientTx {
            invite,
            state: ClientState::Calling,
            dest,
            request: msg.clone(),
            ack: None,
            retransmit_at: (!reliable).then_some(now + t1),
            interval: t1,
            timeout_at: Some(now + self.timers.timeout()),
            end_at: None,
        };
        self.clients.insert(Arc::new(key.clone()), tx);
        self.schedule(&key);
        vec![Output::Send(dest, msg)]
    }

    fn send_response(&mut self, dest: Destination, msg: SipMessage, now: Instant) -> Vec<Output> {
        let Some(key) = Key::server(&msg) else { return vec![Output::Send(dest, msg)] };
        let timers = self.timers;
        let Some(tx) = self.servers.get_mut(&key) else { return vec![Output::Send(dest, msg)] };
        let status = msg.status().unwrap_or(0);
        let reliable = tx.source.is_reliable();
        match (tx.state, status) {
            (ServerState::Trying | ServerState::Proceeding, 100..=199) => {
                tx.state = ServerState::Proceeding;
                tx.last_response = Some(Bytes::from(msg.encode()));
            }
            (ServerState::Trying | ServerState::Proceeding, 200..=299) if tx.invite => {
                tx.state = ServerState::Accepted;
                tx.last_response = None;
                tx.end_at = Some(now + timers.timeout()); // Timer L
            }
            (ServerState::Trying | ServerState::Proceeding, 200..=699) => {
                tx.state = ServerState::Completed;
                tx.last_response = Some(Bytes::from(msg.encode()));
                if tx.invite {
                    if !reliable {
                        tx.retransmit_at = Some(now + timers.t1); // Timer G
                        tx.interval = timers.t1;
                    }
                    tx.timeout_at = Some(now + timers.timeout()); // Timer H
                    tx.end_at = None;
                } else {
                    tx.end_at = Some(now + if reliable { Duration::ZERO } else { timers.timeout() }); // Timer J
                }
            }
            // 2xx retransmissions of the user pass through (RFC 6026 §7.1).
            (ServerState::Accepted, 200..=299) => {}
            _ => return Vec::new(), // nothing may be sent in this state
        }
        self.schedule(&key);
        vec![Output::Send(dest, msg)]
    }

    fn receive_request(&mut self, msg: SipMessage, source: Destination, now: Instant) -> Vec<Output> {
        let Some(key) = Key::server(&msg) else {
            return vec![Output::Deliver(msg, source)];
        };
        let is_ack = msg.method() == Some("ACK");
        let timers = self.timers;
        if let Some(tx) = self.servers.get_mut(&key) {
            if is_ack {
                match tx.state {
                    ServerState::Completed => {
                        tx.state = ServerState::Confirmed;
                        tx.retransmit_at = None;
                        tx.timeout_at = None;
                        tx.end_at = Some(now + if source.is_reliable() { Duration::ZERO } else { timers.t4 }); // Timer I
                        self.stats.absorbed += 1;
                        self.schedule(&key);
                        return Vec::new();
                    }
                    ServerState::Confirmed => {
                        self.stats.absorbed += 1;
                        return Vec::new();
                    }
                    // An ACK for a 2xx reusing the INVITE's branch (RFC 2543
                    // style): it belongs to the user.
                    _ => return vec![Output::Deliver(msg, source)],
                }
            }
            self.stats.absorbed += 1;
            return match (&tx.state, &tx.last_response) {
                (ServerState::Proceeding | ServerState::Completed, Some(r)) => {
                    self.stats.retransmitted += 1;
                    vec![Output::Resend(tx.source, r.clone())]
                }
                _ => Vec::new(),
            };
        }
        if is_ack {
            return vec![Output::Deliver(msg, source)];
        }
        let invite = key.method == "INVITE";
        self.servers.insert(
            Arc::new(key.clone()),
            ServerTx {
                invite,
                state: ServerState::Trying,
                source,
                last_response: None,
                retransmit_at: None,
                interval: timers.t1,
                timeout_at: None,
                // A user that never answers must not leak the transaction.
                end_at: Some(now + if invite { ABANDONED_INVITE } else { timers.timeout() }),
            },
        );
        self.schedule(&key);
        vec![Output::Deliver(msg, source)]
    }

    fn receive_response(&mut self, msg: SipMessage, source: Destination, now: Instant) -> Vec<Output> {
        let status = msg.status().unwrap_or(0);
        let Some(key) = Key::client(&msg) else {
            self.stats.stray_responses += 1;
            return Vec::new();
        };
        let timers = self.timers;
        let Some(tx) = self.clients.get_mut(&key) else {
            // A 2xx to an INVITE whose transaction is gone still needs its
            // ACK from the user (a late retransmission or another fork).
            if key.method == "INVITE" && (200..300).contains(&status) {
                return vec![Output::Deliver(msg, source)];
            }
            self.stats.stray_responses += 1;
            return Vec::new();
        };
        let reliable = tx.dest.is_reliable();
        let mut out = Vec::new();
        match (tx.state, status) {
            (ClientState::Calling | ClientState::Proceeding, 100..=199) => {
                let was = tx.state;
                tx.state = ClientState::Proceeding;
                if tx.invite {
                    // Timer A stops and B no longer applies; Timer C guards
                    // against a peer that never sends a final response.
                    tx.retransmit_at = None;
                    if was == ClientState::Calling {
                        tx.timeout_at = Some(now + TIMER_C);
                    }
                } else if !reliable {
                    tx.retransmit_at = Some(now + timers.t2); // Timer E at T2 in Proceeding
                    tx.interval = timers.t2;
                }
                out.push(Output::Deliver(msg, source));
            }
            (ClientState::Calling | ClientState::Proceeding, 200..=299) if tx.invite => {
                tx.state = ClientState::Accepted;
                tx.retransmit_at = None;
                tx.timeout_at = None;
                tx.end_at = Some(now + timers.timeout()); // Timer M
                out.push(Output::Deliver(msg, source));
            }
            (ClientState::Calling | ClientState::Proceeding, 200..=699) => {
                tx.state = ClientState::Completed;
                tx.retransmit_at = None;
                tx.timeout_at = None;
                if tx.invite {
                    let ack = ack_for_failure(&tx.request, &msg);
                    out.push(Output::Send(tx.dest, ack.clone()));
                    tx.ack = Some(ack);
                    tx.end_at = Some(now + if reliable { Duration::ZERO } else { timers.timeout() }); // Timer D
                } else {
                    tx.end_at = Some(now + if reliable { Duration::ZERO } else { timers.t4 }); // Timer K
                }
                out.push(Output::Deliver(msg, source));
            }
            // Retransmitted or forked 2xx: the user ACKs each (RFC 6026).
            (ClientState::Accepted, 200..=299) => out.push(Output::Deliver(msg, source)),
            (ClientState::Completed, 300..=699) if tx.invite => {
                self.stats.absorbed += 1;
                if let Some(ack) = &tx.ack {
                    self.stats.retransmitted += 1;
                    out.push(Output::Send(tx.dest, ack.clone()));
                }
            }
            _ => self.stats.absorbed += 1,
        }
        self.schedule(&key);
        out
    }

    fn client_timer(&mut self, key: &Key, now: Instant, out: &mut Vec<Output>) {
        let timers = self.timers;
        let Some(tx) = self.clients.get_mut(key) else { return };
        if tx.end_at.is_some_and(|t| now >= t) {
            self.clients.remove(key);
            return;
        }
        if tx.timeout_at.is_some_and(|t| now >= t) {
            // Timer B / F: the peer never answered.
            self.stats.timeouts += 1;
            let timeout = make_response(&tx.request, 408, None, "");
            let dest = tx.dest;
            self.clients.remove(key);
            out.push(Output::Deliver(timeout, dest));
            return;
        }
        if tx.retransmit_at.is_some_and(|t| now >= t) {
            // Timer A doubles without limit; Timer E doubles up to T2.
            tx.interval = if tx.invite { tx.interval * 2 } else { (tx.interval * 2).min(timers.t2) };
            tx.retransmit_at = Some(now + tx.interval);
            self.stats.retransmitted += 1;
            out.push(Output::Send(tx.dest, tx.request.clone()));
        }
        self.schedule(key);
    }

    fn server_timer(&mut self, key: &Key, now: Instant, out: &mut Vec<Output>) {
        let timers = self.timers;
        let Some(tx) = self.servers.get_mut(key) else { return };
        if tx.end_at.is_some_and(|t| now >= t) {
            self.servers.remove(key);
            return;
        }
        if tx.timeout_at.is_some_and(|t| now >= t) {
            // Timer H: the ACK never came; nothing more to do at this layer.
            self.stats.timeouts += 1;
            self.servers.remove(key);
            return;
        }
        if tx.retransmit_at.is_some_and(|t| now >= t) {
            tx.interval = (tx.interval * 2).min(timers.t2); // Timer G
            tx.retransmit_at = Some(now + tx.interval);
            if let Some(r) = &tx.last_response {
                self.stats.retransmitted += 1;
                out.push(Output::Resend(tx.source, r.clone()));
            }
        }
        self.schedule(key);
    }
}

/// The ACK a client INVITE transaction sends for a non-2xx final response
/// (§17.1.1.3): the INVITE's Request-URI, top Via, From, Call-ID and Route,
/// the response's To, CSeq number with method ACK.
fn ack_for_failure(invite: &SipMessage, response: &SipMessage) -> SipMessage {
    let uri = invite.request_uri().unwrap_or_default().to_owned();
    let mut ack = SipMessage::request("ACK", uri);
    ack.push_header("Via", invite.header("Via").unwrap_or_default().to_owned());
    ack.push_header("Max-Forwards", "70");
    for name in ["From", "Call-ID"] {
        ack.push_header(name, invite.header(name).unwrap_or_default().to_owned());
    }
    ack.push_header("To", response.header("To").unwrap_or_default().to_owned());
    let seq = invite.header("CSeq").and_then(CSeq::parse).map(|c| c.seq).unwrap_or(1);
    ack.push_header("CSeq", format!("{seq} ACK"));
    for route in invite.header_values("Route") {
        ack.push_header("Route", route.to_owned());
    }
    ack
}

#[cfg(test)]
mod tests;
