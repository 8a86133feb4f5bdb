//! Calls through the gateway with real SIP over UDP: the generator is the
//! carrier (socket 0, inside the gateway's trunk `inbound_from`) and the
//! agent's device (socket 1, the contact provisioned for the dialled
//! number's user). Per call:
//!
//! ```text
//! trunk  --INVITE (caller SDP)-->  gateway  --INVITE (SDP: B port)--> device
//!                                  gateway  <--200 (agent SDP)------- device
//!                                  gateway  --ACK-------------------> device
//! trunk  <--200 (SDP: A port)----  gateway
//! trunk  --ACK------------------>  gateway
//! ...media...
//! trunk  --BYE------------------>  gateway  --BYE-------------------> device
//! trunk  <--200------------------  gateway  <--200------------------- device
//! ```
//!
//! The gateway's INVITE to the device is matched to the trunk call by the
//! caller number, which the gateway passes on in From: call `n` calls from
//! `+1999` followed by `n` in seven digits. Only what the exchange above
//! needs is parsed; the gateway's own SIP codec is not used so that this
//! crate builds without the gateway's dependencies.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use crate::sdp;
use crate::signalling::{Datagram, Due, Event, Output, Retransmit, Signalling};

const TRUNK: usize = 0;
const DEVICE: usize = 1;
const CALLER_PREFIX: &str = "+1999";

/// A parsed SIP message: start line, headers in order, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `Some(method)` for a request, `None` for a response.
    pub method: Option<String>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Full names of the compact header forms the gateway might use.
fn long_name(name: &str) -> &str {
    match name {
        "v" => "via",
        "f" => "from",
        "t" => "to",
        "i" => "call-id",
        "m" => "contact",
        "l" => "content-length",
        "c" => "content-type",
        _ => name,
    }
}

impl Message {
    /// Parses one UDP datagram; `None` if it is not SIP.
    pub fn parse(data: &[u8]) -> Option<Message> {
        let text = std::str::from_utf8(data).ok()?;
        let (head, body) = match text.find("\r\n\r\n") {
            Some(i) => (&text[..i], &text[i + 4..]),
            None => (text.trim_end(), ""),
        };
        let mut lines = head.split("\r\n");
        let start = lines.next()?;
        let (method, status) = if let Some(rest) = start.strip_prefix("SIP/2.0 ") {
            (None, rest.get(..3)?.parse().ok()?)
        } else {
            let mut parts = start.split(' ');
            let m = parts.next()?;
            if parts.nth(1)? != "SIP/2.0" {
                return None;
            }
            (Some(m.to_owned()), 0)
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                let (_, v) = headers.last_mut()?;
                v.push(' ');
                v.push_str(line.trim());
                continue;
            }
            let (name, value) = line.split_once(':')?;
            let name = name.trim().to_ascii_lowercase();
            headers.push((long_name(&name).to_owned(), value.trim().to_owned()));
        }
        Some(Message {
            method,
            status,
            headers,
            body: body.to_owned(),
        })
    }

    /// The first value of a header (lower-case name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn cseq_method(&self) -> Option<&str> {
        self.header("cseq")?.split_whitespace().nth(1)
    }
}

/// The value of `;name=` in a header value (tag, branch…).
fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim())
    })
}

/// The URI inside `<…>` of a name-addr, or the bare URI up to its parameters.
fn uri(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or(value).trim(),
    }
}

/// The user part of a SIP URI.
fn user(uri: &str) -> Option<&str> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    Some(rest.split_once('@')?.0)
}

/// The call index a caller number stands for.
pub fn call_of_caller(number: &str) -> Option<u32> {
    number.strip_prefix(CALLER_PREFIX)?.parse().ok()
}

/// The caller number of call `call`.
pub fn caller_number(call: u32) -> String {
    format!("{CALLER_PREFIX}{call:07}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Inviting,
    /// 200 taken and acknowledged.
    Answered,
    Ending,
    Done,
}

#[derive(Debug)]
struct Call {
    state: State,
    /// Where the caller sends RTP: the A port from the 200's SDP.
    a: Option<SocketAddr>,
    /// Where the device sends RTP: the B port from the gateway's INVITE.
    b: Option<SocketAddr>,
    up_reported: bool,
    ack: Option<Vec<u8>>,
    /// Remote target (Contact of the 200) and To with the gateway's tag.
    target: String,
    to: String,
    retransmit: Option<Retransmit>,
}

/// The device side of one call: the 200 it sent, for retransmitted INVITEs.
#[derive(Debug)]
struct DeviceDialog {
    ok: Vec<u8>,
}

/// SIP signalling towards the gateway.
pub struct GatewaySip {
    gateway: SocketAddr,
    trunk_local: SocketAddr,
    device_local: SocketAddr,
    number: String,
    run: u64,
    caller_media: Box<dyn Fn(u32) -> SocketAddr>,
    agent_media: Box<dyn Fn(u32) -> SocketAddr>,
    calls: HashMap<u32, Call>,
    devices: HashMap<String, DeviceDialog>,
    branches: u64,
}

impl GatewaySip {
    /// `trunk_local`/`device_local`: the addresses sockets 0 and 1 are bound
    /// to; `number`: the dialled number, routed to the user whose device
    /// contact is `device_local`; `caller_media`/`agent_media`: the RTP
    /// address of each side of a call.
    pub fn new(
        gateway: SocketAddr,
        trunk_local: SocketAddr,
        device_local: SocketAddr,
        number: String,
        run: u64,
        caller_media: Box<dyn Fn(u32) -> SocketAddr>,
        agent_media: Box<dyn Fn(u32) -> SocketAddr>,
    ) -> GatewaySip {
        GatewaySip {
            gateway,
            trunk_local,
            device_local,
            number,
            run,
            caller_media,
            agent_media,
            calls: HashMap::new(),
            devices: HashMap::new(),
            branches: 0,
        }
    }

    fn call_id(&self, call: u32) -> String {
        format!("rtpload-{}-{call}@{}", self.run, self.trunk_local.ip())
    }

    fn call_of_id(&self, call_id: &str) -> Option<u32> {
        let rest = call_id.strip_prefix(&format!("rtpload-{}-", self.run))?;
        rest.split('@').next()?.parse().ok()
    }

    fn branch(&mut self) -> String {
        self.branches += 1;
        format!("z9hG4bK-rtpload-{}-{}", self.run, self.branches)
    }

    fn from(&self, call: u32) -> String {
        format!(
            "<sip:{}@{}>;tag=rl{}",
            caller_number(call),
            self.trunk_local.ip(),
            call
        )
    }

    /// A request from the trunk socket to the gateway.
    fn trunk_request(
        &mut self,
        method: &str,
        ruri: &str,
        call: u32,
        cseq: u32,
        to: &str,
        body: Option<&str>,
    ) -> Vec<u8> {
        let branch = self.branch();
        let mut m = format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nContact: <sip:carrier@{}>\r\n",
            self.trunk_local,
            self.from(call),
            self.call_id(call),
            self.trunk_local
        );
        match body {
            Some(b) => m.push_str(&format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )),
            None => m.push_str("Content-Length: 0\r\n\r\n"),
        }
        m.into_bytes()
    }

    fn send_trunk(&self, data: Vec<u8>) -> Datagram {
        Datagram {
            socket: TRUNK,
            to: self.gateway,
            data,
        }
    }

    fn report_up(call: u32, c: &mut Call, out: &mut Output) {
        if let (false, State::Answered, Some(a), Some(b)) = (c.up_reported, &c.state, c.a, c.b) {
            c.up_reported = true;
            out.events.push(Event::Up { call, a, b });
        }
    }

    fn on_trunk(&mut self, m: Message, out: &mut Output) {
        if m.method.is_some() {
            // The gateway hanging up on us, or a keep-alive: accept it.
            if m.method.as_deref() != Some("ACK") {
                out.send.push(Datagram {
                    socket: TRUNK,
                    to: self.gateway,
                    data: response(&m, 200, "OK", None, None),
                });
            }
            if m.method.as_deref() == Some("BYE") {
                if let Some(call) = m.header("call-id").and_then(|id| self.call_of_id(id)) {
                    if let Some(c) = self.calls.get_mut(&call) {
                        c.state = State::Done;
                        c.retransmit = None;
                        out.events.push(Event::Ended { call, clean: false });
                    }
                }
            }
            return;
        }
        let Some(call) = m.header("call-id").and_then(|id| self.call_of_id(id)) else {
            return;
        };
        let method = m.cseq_method().unwrap_or_default().to_owned();
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        match (method.as_str(), m.status) {
            ("INVITE", 100..=199) => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.retransmit = None; // a provisional response stops INVITE retransmissions
                }
            }
            ("INVITE", 200..=299) => {
                if let Some(ack) = &c.ack {
                    out.send.push(self.send_trunk(ack.clone())); // a retransmitted 200
                    return;
                }
                let target = m.header("contact").map(uri).unwrap_or_default().to_owned();
                let to = m.header("to").unwrap_or_default().to_owned();
                let a = sdp::audio_addr(&m.body);
                let ruri = if target.is_empty() {
                    format!("sip:{}@{}", self.number, self.gateway)
                } else {
                    target.clone()
                };
                let ack = self.trunk_request("ACK", &ruri, call, 1, &to, None);
                out.send.push(self.send_trunk(ack.clone()));
                let c = self.calls.get_mut(&call).expect("looked up above");
                c.ack = Some(ack);
                c.retransmit = None;
                c.target = ruri;
                c.to = to;
                match a {
                    Some(a) => {
                        c.a = Some(a);
                        c.state = State::Answered;
                        Self::report_up(call, c, out);
                    }
                    None => {
                        c.state = State::Answered;
                        out.events.push(Event::Failed {
                            call,
                            reason: "the gateway's 200 OK has no usable SDP audio address".into(),
                        });
                    }
                }
            }
            ("INVITE", status) if status >= 300 && c.state == State::Inviting => {
                // The ACK of a final non-2xx response belongs to the INVITE
                // transaction (RFC 3261 §17.1.1.3): the INVITE's Via (branch
                // included, echoed in the response), the response's To.
                let ruri = format!("sip:{}@{}", self.number, self.gateway);
                let ack = format!(
                    "ACK {ruri} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\n\
                     Call-ID: {}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
                    m.header("via").unwrap_or_default(),
                    m.header("from").unwrap_or_default(),
                    m.header("to").unwrap_or_default(),
                    m.header("call-id").unwrap_or_default(),
                );
                out.send.push(self.send_trunk(ack.clone().into_bytes()));
                let reason = format!(
                    "the gateway answered the INVITE with {}",
                    start_line_reason(&m)
                );
                let c = self.calls.get_mut(&call).expect("looked up above");
                c.state = State::Done;
                c.retransmit = None;
                c.ack = Some(ack.into_bytes());
                out.events.push(Event::Failed { call, reason });
            }
            ("INVITE", status) if status >= 300 => {
                // A retransmitted final response: acknowledged again.
                if let Some(ack) = &c.ack {
                    out.send.push(self.send_trunk(ack.clone()));
                }
            }
            ("BYE", 200..=699) => {
                let c = self.calls.get_mut(&call).expect("looked up above");
                if c.state == State::Ending {
                    c.state = State::Done;
                    c.retransmit = None;
                    out.events.push(Event::Ended {
                        call,
                        clean: m.status < 300,
                    });
                }
            }
            _ => {}
        }
    }

    fn on_device(&mut self, from: SocketAddr, m: Message, out: &mut Output) {
        let Some(method) = m.method.clone() else {
            return;
        }; // responses to nothing we sent
        let call_id = m.header("call-id").unwrap_or_default().to_owned();
        match method.as_str() {
            "INVITE" => {
                if let Some(d) = self.devices.get(&call_id) {
                    out.send.push(Datagram {
                        socket: DEVICE,
                        to: from,
                        data: d.ok.clone(),
                    });
                    return;
                }
                let caller = m
                    .header("from")
                    .map(uri)
                    .and_then(user)
                    .and_then(call_of_caller);
                let Some(call) = caller.filter(|c| self.calls.contains_key(c)) else {
                    out.send.push(Datagram {
                        socket: DEVICE,
                        to: from,
                        data: response(&m, 404, "Not Found", None, None),
                    });
                    return;
                };
                let sdp = sdp::pcmu(u64::from(call), (self.agent_media)(call));
                let contact = format!("<sip:agent@{}>", self.device_local);
                let ok = response(
                    &m,
                    200,
                    "OK",
                    Some(&format!("dev{call}")),
                    Some((&contact, &sdp)),
                );
                out.send.push(Datagram {
                    socket: DEVICE,
                    to: from,
                    data: ok.clone(),
                });
                self.devices.insert(call_id, DeviceDialog { ok });
                let b = sdp::audio_addr(&m.body);
                let c = self.calls.get_mut(&call).expect("checked above");
                match b {
                    Some(b) => {
                        c.b = Some(b);
                        Self::report_up(call, c, out);
                    }
                    None => out.events.push(Event::Failed {
                        call,
                        reason:
                            "the gateway's INVITE to the device has no usable SDP audio address"
                                .into(),
                    }),
                }
            }
            "ACK" => {}
            "BYE" | "CANCEL" => {
                self.devices.remove(&call_id);
                out.send.push(Datagram {
                    socket: DEVICE,
                    to: from,
                    data: response(&m, 200, "OK", None, None),
                });
            }
            _ => out.send.push(Datagram {
                socket: DEVICE,
                to: from,
                data: response(&m, 200, "OK", None, None),
            }),
        }
    }
}

fn start_line_reason(m: &Message) -> String {
    match m.header("reason") {
        Some(r) => format!("{} ({r})", m.status),
        None => m.status.to_string(),
    }
}

/// A response to `req`: its Via, From, To (with `to_tag` added when given
/// and absent), Call-ID and CSeq; optionally a Contact and an SDP body.
fn response(
    req: &Message,
    status: u16,
    reason: &str,
    to_tag: Option<&str>,
    contact_sdp: Option<(&str, &str)>,
) -> Vec<u8> {
    let mut r = format!("SIP/2.0 {status} {reason}\r\n");
    for v in req.all("via") {
        r.push_str(&format!("Via: {v}\r\n"));
    }
    for v in req.all("record-route") {
        r.push_str(&format!("Record-Route: {v}\r\n"));
    }
    r.push_str(&format!(
        "From: {}\r\n",
        req.header("from").unwrap_or_default()
    ));
    let to = req.header("to").unwrap_or_default();
    match to_tag {
        Some(tag) if param(to, "tag").is_none() => r.push_str(&format!("To: {to};tag={tag}\r\n")),
        _ => r.push_str(&format!("To: {to}\r\n")),
    }
    r.push_str(&format!(
        "Call-ID: {}\r\nCSeq: {}\r\n",
        req.header("call-id").unwrap_or_default(),
        req.header("cseq").unwrap_or_default()
    ));
    match contact_sdp {
        Some((contact, sdp)) => {
            r.push_str(&format!("Contact: {contact}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len()))
        }
        None => r.push_str("Content-Length: 0\r\n\r\n"),
    }
    r.into_bytes()
}

impl Signalling for GatewaySip {
    fn sockets(&self) -> usize {
        2
    }

    fn start(&mut self, call: u32, now: Instant, out: &mut Output) {
        let ruri = format!("sip:{}@{}", self.number, self.gateway);
        let to = format!("<{ruri}>");
        let sdp = sdp::pcmu(u64::from(call), (self.caller_media)(call));
        let invite = self.trunk_request("INVITE", &ruri, call, 1, &to, Some(&sdp));
        let d = self.send_trunk(invite);
        out.send.push(d.clone());
        self.calls.insert(
            call,
            Call {
                state: State::Inviting,
                a: None,
                b: None,
                up_reported: false,
                ack: None,
                target: String::new(),
                to: String::new(),
                retransmit: Some(Retransmit::new(d, now)),
            },
        );
    }

    fn hang_up(&mut self, call: u32, now: Instant, out: &mut Output) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if c.state != State::Answered {
            return;
        }
        let (target, to) = (c.target.clone(), c.to.clone());
        let bye = self.trunk_request("BYE", &target, call, 2, &to, None);
        let d = self.send_trunk(bye);
        out.send.push(d.clone());
        let c = self.calls.get_mut(&call).expect("looked up above");
        c.state = State::Ending;
        c.retransmit = Some(Retransmit::new(d, now));
    }

    fn on_datagram(
        &mut self,
        socket: usize,
        from: SocketAddr,
        data: &[u8],
        _now: Instant,
        out: &mut Output,
    ) {
        let Some(m) = Message::parse(data) else {
            return;
        };
        if socket == TRUNK {
            self.on_trunk(m, out);
        } else {
            self.on_device(from, m, out);
        }
    }

    fn on_timer(&mut self, now: Instant, out: &mut Output) {
        for (call, c) in self.calls.iter_mut() {
            let Some(r) = c.retransmit.as_mut().filter(|r| r.next <= now) else {
                continue;
            };
            match r.fire(now) {
                Due::Resend => out.send.push(r.datagram.clone()),
                Due::GiveUp => {
                    c.retransmit = None;
                    let was = std::mem::replace(&mut c.state, State::Done);
                    out.events.push(match was {
                        State::Ending => Event::Ended {
                            call: *call,
                            clean: false,
                        },
                        _ => Event::Failed {
                            call: *call,
                            reason: "no answer from the gateway to the INVITE within 32 s".into(),
                        },
                    });
                }
            }
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        self.calls
            .values()
            .filter_map(|c| c.retransmit.as_ref().map(|r| r.next))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip() -> GatewaySip {
        GatewaySip::new(
            "127.0.0.1:5560".parse().unwrap(),
            "127.0.0.1:6100".parse().unwrap(),
            "127.0.0.1:6101".parse().unwrap(),
            "+14155551000".into(),
            9,
            Box::new(|_| "127.0.0.1:7000".parse().unwrap()),
            Box::new(|_| "127.0.0.1:7002".parse().unwrap()),
        )
    }

    fn text(d: &Datagram) -> String {
        String::from_utf8(d.data.clone()).unwrap()
    }

    #[test]
    fn parses_requests_responses_compact_and_folded_headers() {
        let m = Message::parse(
            b"SIP/2.0 180 Ringing\r\nv: SIP/2.0/UDP a;branch=1\r\nSubject: a\r\n b\r\ni: x\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            (
                m.method.as_deref(),
                m.status,
                m.header("via"),
                m.header("call-id")
            ),
            (None, 180, Some("SIP/2.0/UDP a;branch=1"), Some("x"))
        );
        assert_eq!(m.header("subject"), Some("a b"));
        let r = Message::parse(b"BYE sip:a@b SIP/2.0\r\nCall-ID: y\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        assert_eq!(r.method.as_deref(), Some("BYE"));
        assert!(Message::parse(b"\x00\x01").is_none());
        assert!(Message::parse(b"HELLO world").is_none());
    }

    #[test]
    fn caller_numbers_carry_the_call_index() {
        assert_eq!(caller_number(42), "+19990000042");
        assert_eq!(call_of_caller(&caller_number(1_234_567)), Some(1_234_567));
        assert_eq!(call_of_caller("+14155550100"), None);
        assert_eq!(
            user(uri("\"Bench\" <sip:+19990000042@127.0.0.1>;tag=x")),
            Some("+19990000042")
        );
    }

    /// One call through a scripted gateway: INVITE out, the gateway's INVITE
    /// to the device answered with the agent's SDP, the 200 to the trunk
    /// acknowledged, the call up with both relay ports, then BYE and its 200.
    #[test]
    fn a_call_goes_up_with_both_ports_and_ends() {
        let now = Instant::now();
        let mut s = sip();
        let mut out = Output::default();
        s.start(3, now, &mut out);
        let invite = Message::parse(&out.send[0].data).unwrap();
        assert_eq!(out.send[0].socket, TRUNK);
        assert!(
            text(&out.send[0]).starts_with("INVITE sip:+14155551000@127.0.0.1:5560 SIP/2.0\r\n")
        );
        assert_eq!(
            sdp::audio_addr(&invite.body),
            Some("127.0.0.1:7000".parse().unwrap())
        );

        // The gateway rings the device, passing the caller number on.
        let gw_invite = format!(
            "INVITE sip:agent@127.0.0.1:6101 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5560;branch=z9hG4bKgw1\r\n\
             From: <sip:+19990000003@127.0.0.1>;tag=g1\r\nTo: <sip:agent@127.0.0.1:6101>\r\nCall-ID: gw-leg-b\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:127.0.0.1:5560>\r\nContent-Type: application/sdp\r\n\r\n{}",
            sdp::pcmu(1, "127.0.0.1:20002".parse().unwrap())
        );
        let mut out = Output::default();
        s.on_datagram(
            DEVICE,
            "127.0.0.1:5560".parse().unwrap(),
            gw_invite.as_bytes(),
            now,
            &mut out,
        );
        let ok = Message::parse(&out.send[0].data).unwrap();
        assert_eq!((ok.status, out.send[0].socket), (200, DEVICE));
        assert_eq!(
            ok.header("via"),
            Some("SIP/2.0/UDP 127.0.0.1:5560;branch=z9hG4bKgw1")
        );
        assert_eq!(ok.header("to"), Some("<sip:agent@127.0.0.1:6101>;tag=dev3"));
        assert_eq!(
            sdp::audio_addr(&ok.body),
            Some("127.0.0.1:7002".parse().unwrap())
        );
        assert!(
            out.events.is_empty(),
            "not up before the trunk side is answered"
        );
        // A retransmitted INVITE gets the same 200.
        let mut again = Output::default();
        s.on_datagram(
            DEVICE,
            "127.0.0.1:5560".parse().unwrap(),
            gw_invite.as_bytes(),
            now,
            &mut again,
        );
        assert_eq!(again.send[0].data, out.send[0].data);

        let ok_trunk = format!(
            "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=gwtag\r\nCall-ID: {}\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:sb@127.0.0.1:5560>\r\nContent-Type: application/sdp\r\n\r\n{}",
            invite.header("via").unwrap(),
            invite.header("from").unwrap(),
            invite.header("to").unwrap(),
            invite.header("call-id").unwrap(),
            sdp::pcmu(2, "127.0.0.1:20000".parse().unwrap())
        );
        let mut out = Output::default();
        s.on_datagram(
            TRUNK,
            "127.0.0.1:5560".parse().unwrap(),
            ok_trunk.as_bytes(),
            now,
            &mut out,
        );
        assert!(text(&out.send[0]).starts_with("ACK sip:sb@127.0.0.1:5560 SIP/2.0\r\n"));
        assert!(text(&out.send[0]).contains(";tag=gwtag\r\n"));
        assert_eq!(
            out.events,
            vec![Event::Up {
                call: 3,
                a: "127.0.0.1:20000".parse().unwrap(),
                b: "127.0.0.1:20002".parse().unwrap()
            }]
        );
        assert_eq!(s.next_timer(), None, "nothing to retransmit once answered");

        let mut out = Output::default();
        s.hang_up(3, now, &mut out);
        let bye = Message::parse(&out.send[0].data).unwrap();
        assert_eq!(bye.method.as_deref(), Some("BYE"));
        assert_eq!(bye.header("cseq"), Some("2 BYE"));
        let ok_bye = format!(
            "SIP/2.0 200 OK\r\nVia: {}\r\nCall-ID: {}\r\nCSeq: 2 BYE\r\n\r\n",
            bye.header("via").unwrap(),
            bye.header("call-id").unwrap()
        );
        let mut out = Output::default();
        s.on_datagram(
            TRUNK,
            "127.0.0.1:5560".parse().unwrap(),
            ok_bye.as_bytes(),
            now,
            &mut out,
        );
        assert_eq!(
            out.events,
            vec![Event::Ended {
                call: 3,
                clean: true
            }]
        );
    }

    #[test]
    fn a_rejected_or_unanswered_invite_fails_the_call() {
        let now = Instant::now();
        let mut s = sip();
        let mut out = Output::default();
        s.start(0, now, &mut out);
        s.start(1, now, &mut out);
        let invite = Message::parse(&out.send[0].data).unwrap();
        let busy = format!(
            "SIP/2.0 503 Service Unavailable\r\nVia: {}\r\nTo: <sip:x>;tag=t\r\nCall-ID: {}\r\nCSeq: 1 INVITE\r\n\r\n",
            invite.header("via").unwrap(),
            invite.header("call-id").unwrap()
        );
        let mut out = Output::default();
        s.on_datagram(
            TRUNK,
            "127.0.0.1:5560".parse().unwrap(),
            busy.as_bytes(),
            now,
            &mut out,
        );
        let ack = Message::parse(&out.send[0].data).unwrap();
        assert_eq!(ack.method.as_deref(), Some("ACK"));
        assert_eq!(
            ack.header("via"),
            invite.header("via"),
            "same transaction as the INVITE"
        );
        assert_eq!(ack.header("cseq"), Some("1 ACK"));
        assert!(
            matches!(&out.events[..], [Event::Failed { call: 0, reason }] if reason.contains("503"))
        );
        // A retransmitted 503 is acknowledged again, and changes nothing more.
        let mut again = Output::default();
        s.on_datagram(
            TRUNK,
            "127.0.0.1:5560".parse().unwrap(),
            busy.as_bytes(),
            now,
            &mut again,
        );
        assert!(again.events.is_empty());
        assert_eq!(again.send.len(), 1);
        assert_eq!(again.send[0].data, out.send[0].data);

        // Call 1 is never answered: retransmitted, then given up.
        let mut out = Output::default();
        let mut t = now;
        while let Some(next) = s.next_timer() {
            t = next;
            s.on_timer(t, &mut out);
        }
        assert!(out.send.len() >= 6, "the INVITE was retransmitted");
        assert!(matches!(&out.events[..], [Event::Failed { call: 1, .. }]));
        assert!(t >= now + crate::signalling::GIVE_UP);
    }
}
