//! The far end ("the PSTN"): a SIP user agent server on UDP that answers
//! every INVITE at once with 200 and PCMU only (an offer without PCMU gets
//! 488), then sends a 20 ms PCMU packet every 20 ms from a socket of the
//! call's own and counts what it receives (on a media thread). OPTIONS
//! keep-alives get 200; BYE ends the call.
//!
//! Which benchmark call an INVITE is: the last four digits of the user in
//! its Request-URI (the dialled number is the call's index added to a
//! base number).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::media::{Audio, CallShared, Far, MediaPool};

/// What the far end did, for the report.
#[derive(Debug, Default)]
pub struct FarStats {
    pub invites: AtomicU64,
    pub answered: AtomicU64,
    pub refused_codec: AtomicU64,
    pub unknown_call: AtomicU64,
    pub byes: AtomicU64,
    pub options: AtomicU64,
}

struct Answered {
    response: Vec<u8>,
    to: SocketAddr,
    acked: bool,
    next_retransmit: Instant,
    interval: Duration,
    index: usize,
}

pub struct FarEnd {
    pub stats: Arc<FarStats>,
    quit: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FarEnd {
    /// Serves SIP on `listen` for `calls` (indexed as the benchmark's calls).
    pub fn start(listen: SocketAddr, calls: Arc<Vec<Arc<CallShared>>>, media: Arc<MediaPool>, audio: Audio) -> anyhow::Result<FarEnd> {
        let socket = UdpSocket::bind(listen).map_err(|e| anyhow::anyhow!("cannot bind the far end's SIP socket {listen}: {e}"))?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stats = Arc::new(FarStats::default());
        let quit = Arc::new(AtomicBool::new(false));
        let (s, q) = (stats.clone(), quit.clone());
        let thread = std::thread::Builder::new().name("far-end-sip".into()).spawn(move || serve(socket, calls, media, audio, s, q))?;
        Ok(FarEnd { stats, quit, thread: Some(thread) })
    }

    pub fn stop(mut self) {
        self.quit.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(socket: UdpSocket, calls: Arc<Vec<Arc<CallShared>>>, media: Arc<MediaPool>, audio: Audio, stats: Arc<FarStats>, quit: Arc<AtomicBool>) {
    let local = socket.local_addr().expect("bound");
    let mut dialogs: HashMap<String, Answered> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    let mut tag = 0u64;
    while !quit.load(Ordering::Relaxed) {
        let now = Instant::now();
        for d in dialogs.values_mut().filter(|d| !d.acked && now >= d.next_retransmit) {
            let _ = socket.send_to(&d.response, d.to);
            d.interval = (d.interval * 2).min(Duration::from_secs(4));
            d.next_retransmit = now + d.interval;
        }
        let (len, source) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(_) => continue,
        };
        let Some(msg) = Message::parse(&buf[..len]) else { continue };
        let Some(method) = msg.method.clone() else { continue }; // responses: we send no requests
        let call_id = msg.header("call-id", "i").unwrap_or_default().to_owned();
        match method.as_str() {
            "INVITE" => {
                if let Some(d) = dialogs.get(&call_id) {
                    let _ = socket.send_to(&d.response, source);
                    continue;
                }
                stats.invites.fetch_add(1, Ordering::Relaxed);
                let index = msg.uri_user().and_then(call_index);
                let Some(call) = index.and_then(|i| calls.get(i)) else {
                    stats.unknown_call.fetch_add(1, Ordering::Relaxed);
                    let _ = socket.send_to(&msg.response(404, "Not Found", None, "", None), source);
                    continue;
                };
                let Some((remote, pcmu)) = offer(&msg.body) else {
                    let _ = socket.send_to(&msg.response(488, "Not Acceptable Here", None, "", None), source);
                    continue;
                };
                if !pcmu {
                    stats.refused_codec.fetch_add(1, Ordering::Relaxed);
                    let _ = socket.send_to(&msg.response(488, "Not Acceptable Here", None, "", None), source);
                    continue;
                }
                let Ok(rtp) = UdpSocket::bind(SocketAddr::new(local.ip(), 0)) else {
                    let _ = socket.send_to(&msg.response(503, "Service Unavailable", None, "", None), source);
                    continue;
                };
                let port = rtp.local_addr().map(|a| a.port()).unwrap_or(0);
                tag += 1;
                let sdp = format!(
                    "v=0\r\no=farend {tag} 1 IN IP4 {ip}\r\ns=farend\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n",
                    ip = local.ip()
                );
                let contact = format!("<sip:farend@{local}>");
                let response = msg.response(200, "OK", Some(&format!("fe{tag}")), &sdp, Some(&contact));
                let _ = socket.send_to(&response, source);
                media.add_far(Far { socket: rtp, remote, audio: audio.clone(), shared: call.clone() });
                stats.answered.fetch_add(1, Ordering::Relaxed);
                dialogs.insert(
                    call_id,
                    Answered { response, to: source, acked: false, next_retransmit: now + Duration::from_millis(500), interval: Duration::from_millis(500), index: call.index },
                );
            }
            "ACK" => {
                if let Some(d) = dialogs.get_mut(&call_id) {
                    d.acked = true;
                    calls[d.index].far_answered.store(true, Ordering::Relaxed);
                }
            }
            "BYE" => {
                stats.byes.fetch_add(1, Ordering::Relaxed);
                let _ = socket.send_to(&msg.response(200, "OK", None, "", None), source);
                if let Some(d) = dialogs.remove(&call_id) {
                    calls[d.index].far_ended.store(true, Ordering::Relaxed);
                }
            }
            "OPTIONS" => {
                stats.options.fetch_add(1, Ordering::Relaxed);
                let _ = socket.send_to(&msg.response(200, "OK", None, "", None), source);
            }
            // CANCEL comes too late (every INVITE is answered at once); the rest is not ours.
            "CANCEL" => {
                let _ = socket.send_to(&msg.response(200, "OK", None, "", None), source);
            }
            _ => {
                let _ = socket.send_to(&msg.response(405, "Method Not Allowed", None, "", None), source);
            }
        }
    }
}

/// The benchmark call an INVITE is for: the last four digits of the dialled user.
pub fn call_index(user: &str) -> Option<usize> {
    let digits: String = user.chars().filter(|c| c.is_ascii_digit()).collect();
    digits.get(digits.len().checked_sub(4)?..)?.parse().ok()
}

/// The offer's audio address and whether it lists PCMU (payload type 0).
fn offer(sdp: &str) -> Option<(SocketAddr, bool)> {
    let mut session_ip: Option<IpAddr> = None;
    let mut media_ip: Option<IpAddr> = None;
    let mut port = None;
    let mut pcmu = false;
    let mut in_audio = false;
    for line in sdp.lines().map(str::trim) {
        if let Some(c) = line.strip_prefix("c=IN IP4 ") {
            let ip = c.split('/').next()?.trim().parse().ok();
            if in_audio {
                media_ip = ip;
            } else {
                session_ip = ip;
            }
        } else if let Some(m) = line.strip_prefix("m=") {
            in_audio = m.starts_with("audio ");
            if in_audio && port.is_none() {
                let mut parts = m.split_whitespace().skip(1);
                port = parts.next()?.parse::<u16>().ok();
                pcmu = parts.skip(1).any(|pt| pt == "0");
            }
        }
    }
    Some((SocketAddr::new(media_ip.or(session_ip)?, port?), pcmu))
}

/// A SIP message as far as the far end needs it.
struct Message {
    method: Option<String>,
    uri: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Message {
    fn parse(data: &[u8]) -> Option<Message> {
        let text = std::str::from_utf8(data).ok()?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
        let mut lines = head.split("\r\n");
        let start = lines.next()?;
        let (method, uri) = if start.starts_with("SIP/2.0") {
            (None, String::new())
        } else {
            let mut p = start.split_whitespace();
            (Some(p.next()?.to_owned()), p.next()?.to_owned())
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with(' ') || line.starts_with('\t') {
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
                continue;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        Some(Message { method, uri, headers, body: body.to_owned() })
    }

    fn header(&self, long: &str, short: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == long || n == short).map(|(_, v)| v.as_str())
    }

    fn all(&self, long: &str, short: &str) -> impl Iterator<Item = &str> {
        let (long, short) = (long.to_owned(), short.to_owned());
        self.headers.iter().filter(move |(n, _)| *n == long || *n == short).map(|(_, v)| v.as_str())
    }

    /// The user part of the Request-URI.
    fn uri_user(&self) -> Option<&str> {
        let rest = self.uri.strip_prefix("sip:").or_else(|| self.uri.strip_prefix("sips:"))?;
        Some(rest.split_once('@')?.0)
    }

    /// A response to this request: Via, From, Call-ID and CSeq copied, To
    /// with `tag` added when it has none.
    fn response(&self, code: u16, reason: &str, tag: Option<&str>, sdp: &str, contact: Option<&str>) -> Vec<u8> {
        let mut out = format!("SIP/2.0 {code} {reason}\r\n");
        for via in self.all("via", "v") {
            out += &format!("Via: {via}\r\n");
        }
        out += &format!("From: {}\r\n", self.header("from", "f").unwrap_or_default());
        let to = self.header("to", "t").unwrap_or_default();
        match tag {
            Some(t) if !to.contains(";tag=") => out += &format!("To: {to};tag={t}\r\n"),
            _ => out += &format!("To: {to}\r\n"),
        }
        out += &format!("Call-ID: {}\r\n", self.header("call-id", "i").unwrap_or_default());
        out += &format!("CSeq: {}\r\n", self.header("cseq", "").unwrap_or_default());
        if let Some(c) = contact {
            out += &format!("Contact: {c}\r\n");
        }
        out += "Server: webrtcload-farend\r\n";
        if sdp.is_empty() {
            out += "Content-Length: 0\r\n\r\n";
        } else {
            out += &format!("Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len());
        }
        out.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_is_the_last_four_digits() {
        assert_eq!(call_index("+12125550042"), Some(42));
        assert_eq!(call_index("12125551234"), Some(1234));
        assert_eq!(call_index("12"), None);
    }

    #[test]
    fn an_offer_is_read() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 96 0 8 101\r\na=rtpmap:96 opus/48000/2\r\n";
        assert_eq!(offer(sdp), Some(("127.0.0.1:20000".parse().unwrap(), true)));
        let opus_only = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 20000 RTP/AVP 111\r\n";
        assert_eq!(offer(opus_only), Some(("127.0.0.1:20000".parse().unwrap(), false)));
    }

    #[test]
    fn responses_copy_the_transaction() {
        let invite = "INVITE sip:+12125550007@127.0.0.1:5090 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5560;branch=z9hG4bK1\r\nv: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK0\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:+12125550007@127.0.0.1>\r\nCall-ID: abc\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let m = Message::parse(invite.as_bytes()).unwrap();
        assert_eq!(m.uri_user(), Some("+12125550007"));
        let r = String::from_utf8(m.response(200, "OK", Some("t1"), "v=0\r\n", None)).unwrap();
        assert!(r.starts_with("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5560;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK0\r\n"), "{r}");
        assert!(r.contains("To: <sip:+12125550007@127.0.0.1>;tag=t1\r\n"));
        assert!(r.contains("CSeq: 1 INVITE\r\n") && r.ends_with("\r\n\r\nv=0\r\n"));
    }
}
