//! The browser phone end to end through the gateway: a softphone page
//! registers over the agent API, a SIP phone (baresip) calls its agent, the
//! page's WebRTC offer arrives on the agent's event stream, a WebRTC peer
//! answers it over the API and audio flows both ways over ICE, DTLS and
//! SRTP on the gateway's WebRTC port, until the caller hangs up: once over
//! UDP, once over ICE-TCP only (a browser on a network that blocks UDP).
//!
//! The browser here is a WebRTC peer of its own (str0m as a full ICE
//! agent, as Chrome is, on its own socket); the same exchange with
//! Chromium and the softphone page is in the end-to-end browser tests.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use str0m::change::SdpOffer;
use str0m::net::{Protocol, Receive, TcpType, Transmit};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};
use support::audio::speech;
use support::{softphone, softphone_user, Baresip, TestGateway};
use switchboard_gateway::api::auth::seal::Sealer;
use switchboard_gateway::api::auth::Sessions;
use switchboard_gateway::calls::live::{AgentEventKind, AgentEvents, WebRtcLegView};
use switchboard_gateway::directory::{Directory, NewUser};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// How the stand-in browser reaches the gateway.
enum Link {
    /// A UDP socket of its own, its host candidate.
    Udp(UdpSocket),
    /// One TCP connection to the gateway's passive candidate, its own end
    /// announced as an active candidate (RFC 6544); every packet preceded
    /// by its length, 16 bits big-endian (RFC 4571). `read` holds what
    /// came and is not a whole packet yet.
    Tcp { stream: TcpStream, gateway: SocketAddr, read: Vec<u8> },
}

impl Link {
    fn udp() -> Link {
        Link::Udp(UdpSocket::bind("127.0.0.1:0").unwrap())
    }

    /// Connects to the passive TCP candidate of `offer`.
    fn tcp(offer: &str) -> Link {
        let gateway = offer
            .lines()
            .filter_map(|l| l.strip_prefix("a=candidate:"))
            .find(|l| l.contains(" tcp ") && l.contains(" tcptype passive"))
            .and_then(|l| {
                let fields: Vec<&str> = l.split(' ').collect();
                format!("{}:{}", fields[4], fields[5]).parse::<SocketAddr>().ok()
            })
            .unwrap_or_else(|| panic!("a passive TCP candidate in the offer: {offer}"));
        let stream = TcpStream::connect(gateway).unwrap();
        stream.set_nodelay(true).unwrap();
        Link::Tcp { stream, gateway, read: Vec::new() }
    }

    fn local(&self) -> SocketAddr {
        match self {
            Link::Udp(socket) => socket.local_addr().unwrap(),
            Link::Tcp { stream, .. } => stream.local_addr().unwrap(),
        }
    }

    fn candidate(&self) -> Candidate {
        match self {
            Link::Udp(_) => Candidate::host(self.local(), "udp").unwrap(),
            Link::Tcp { .. } => Candidate::builder().tcp().host(self.local()).tcptype(TcpType::Active).build().unwrap(),
        }
    }

    fn send(&mut self, t: &Transmit) {
        match self {
            Link::Udp(socket) => {
                let _ = socket.send_to(&t.contents, t.destination);
            }
            Link::Tcp { stream, .. } => {
                assert_eq!(t.proto, Protocol::Tcp, "a browser with only a TCP candidate sends over TCP");
                let mut framed = (t.contents.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&t.contents);
                // Fails once the gateway closed the connection (hung up).
                let _ = stream.write_all(&framed);
            }
        }
    }

    /// The next packet from the gateway, waiting at most `wait`: its
    /// protocol, source and bytes.
    fn recv(&mut self, wait: Duration) -> Option<(Protocol, SocketAddr, Vec<u8>)> {
        match self {
            Link::Udp(socket) => {
                let mut buf = vec![0u8; 2048];
                socket.set_read_timeout(Some(wait)).unwrap();
                let (n, source) = socket.recv_from(&mut buf).ok()?;
                buf.truncate(n);
                Some((Protocol::Udp, source, buf))
            }
            Link::Tcp { stream, gateway, read } => {
                let take = |read: &mut Vec<u8>| {
                    let len = usize::from(u16::from_be_bytes([*read.first()?, *read.get(1)?]));
                    (read.len() >= 2 + len).then(|| read.drain(..2 + len).skip(2).collect::<Vec<u8>>())
                };
                let packet = match take(read) {
                    Some(packet) => packet,
                    None => {
                        let mut buf = vec![0u8; 4096];
                        stream.set_read_timeout(Some(wait)).unwrap();
                        match stream.read(&mut buf) {
                            Ok(0) => {
                                // Closed by the gateway (the call ended).
                                std::thread::sleep(wait);
                                return None;
                            }
                            Ok(n) => read.extend_from_slice(&buf[..n]),
                            Err(_) => return None,
                        }
                        take(read)?
                    }
                };
                Some((Protocol::Tcp, *gateway, packet))
            }
        }
    }
}

/// A WebRTC peer answering the gateway's offer like a browser that only
/// speaks PCMU, on a thread of its own, over `link`: sends a 20 ms PCMU
/// packet every 20 ms once connected and counts what it receives.
struct Browser {
    received: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    connected: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    answer: String,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Browser {
    fn answer(offer: &str, mut link: Link) -> Browser {
        let local = link.local();
        let mut config = Rtc::builder().set_rtp_mode(true).clear_codecs();
        config.codec_config().enable_pcmu(true, false);
        let mut rtc = config.build(Instant::now());
        rtc.add_local_candidate(link.candidate());
        let answer = rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(offer).unwrap()).unwrap().to_sdp_string();
        let mid = offer.lines().find_map(|l| l.strip_prefix("a=mid:")).map(|m| str0m::media::Mid::from(m.trim()));
        let (received, sent, connected, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (r, s, c, st) = (received.clone(), sent.clone(), connected.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut next_send = Instant::now();
            let mut seq: u64 = 1;
            while !st.load(Ordering::Relaxed) {
                let timeout = loop {
                    match rtc.poll_output().unwrap() {
                        Output::Timeout(t) => break t,
                        Output::Transmit(t) => link.send(&t),
                        Output::Event(Event::Connected) => c.store(true, Ordering::Relaxed),
                        Output::Event(Event::RtpPacket(_)) => {
                            r.fetch_add(1, Ordering::Relaxed);
                        }
                        Output::Event(_) => {}
                    }
                };
                let now = Instant::now();
                if c.load(Ordering::Relaxed) && now >= next_send {
                    next_send = now + Duration::from_millis(20);
                    if let Some(mid) = mid {
                        let mut direct = rtc.direct_api();
                        if let Some(stream) = direct.stream_tx_by_mid(mid, None) {
                            // A 400 Hz square wave in µ-law, loud enough to hear.
                            let payload: Vec<u8> = (0..160).map(|i| if (i / 10) % 2 == 0 { 0x8f } else { 0x0f }).collect();
                            stream.write_rtp(RtpWrite::new(0.into(), seq.into(), (seq * 160) as u32, now, payload));
                            seq += 1;
                            s.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                }
                let wait = timeout.min(next_send).saturating_duration_since(now).clamp(Duration::from_millis(1), Duration::from_millis(20));
                let _ = match link.recv(wait) {
                    Some((proto, source, bytes)) => rtc.handle_input(Input::Receive(Instant::now(), Receive::new(proto, source, local, &bytes).unwrap())),
                    None => rtc.handle_input(Input::Timeout(Instant::now())),
                };
            }
        });
        Browser { received, sent, connected, stop, answer, thread: Some(thread) }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The value of an unlabelled series on the metrics page (0 when absent).
fn metric_value(page: &str, name: &str) -> f64 {
    page.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

async fn eventually(what: &str, secs: u64, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Bob's browser phone ringing for a call from Ada (baresip): the page
/// registered and has the gateway's offer.
struct Ringing {
    gw: TestGateway,
    http: reqwest::Client,
    base: String,
    token: String,
    sessions: Sessions,
    directory: Directory,
    ada: Baresip,
    events: AgentEvents,
    offer: WebRtcLegView,
}

async fn ring() -> Ringing {
    let gw = TestGateway::start(|c| {
        c.auth.token_key = Some(KEY.into());
        c.sip.digest_algorithms = vec!["MD5".into()];
    })
    .await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", gw.http);
    let directory = gw.directory();
    let bob = directory.create_user(NewUser { name: "Bob".into(), extension: Some("202".into()), ..Default::default() }).await.unwrap();
    let sessions = Sessions::new(gw.db.clone(), Sealer::from_base64(KEY).unwrap(), Duration::from_secs(3600));
    let (token, _) = sessions.create(&bob.id, None).await.unwrap();
    softphone_user(&gw, "Ada", "201", "ada", "ada-browser-secret-1").await;
    let mic = speech(&gw.subdir("audio"), "ada", "Hello, is this the browser?", 3);
    let mut ada = softphone(&gw, "ada", "ada-browser-secret-1", &mic).await;

    // The page registers; a bad instance id is refused with the reason.
    let r = http.post(format!("{base}/v1/softphone")).bearer_auth(&token).json(&json!({"instance": "x"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = http.post(format!("{base}/v1/softphone")).bearer_auth(&token).json(&json!({"instance": "page-0001-abcd"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let registered: Value = r.json().await.unwrap();
    let device_id = registered["device_id"].as_str().unwrap().to_owned();
    assert_eq!(registered["expires_in_secs"], 60);
    let devices = directory.list_devices(Some(&bob.id)).await.unwrap();
    assert_eq!(devices.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), vec![device_id.as_str()], "one browser phone device");

    let mut events = gw.live().subscribe(&bob.id).events;
    ada.command("dial", &format!("sip:202@{}", gw.sip)).await;
    let offer = loop {
        let event = tokio::time::timeout(Duration::from_secs(20), events.recv()).await.expect("a webrtc.offer").expect("the stream is open");
        if event.kind == AgentEventKind::WebRtcOffer {
            break event.leg.clone().expect("the leg");
        }
    };
    assert_eq!(offer.instance, "page-0001-abcd");
    assert!(!offer.auto_answer, "a call for the agent rings");
    assert_eq!(offer.caller_number, "201", "the offer says who calls (Ada's extension)");
    assert!(offer.sdp.contains("a=ice-lite") && offer.sdp.contains("PCMU/8000"), "{}", offer.sdp);
    Ringing { gw, http, base, token, sessions, directory, ada, events, offer }
}

/// The page answers with `browser`'s SDP; audio flows both ways until Ada
/// hangs up, and what she heard is the browser's. Returns the gateway,
/// still running.
async fn answer_talk_and_hang_up(call: Ringing, browser: Browser) -> TestGateway {
    let Ringing { gw, http, base, token, mut ada, mut events, offer, .. } = call;
    let r = http.post(format!("{base}/v1/webrtc/legs/{}/answer", offer.id)).bearer_auth(&token).json(&json!({"sdp": browser.answer})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{}", r.text().await.unwrap());
    ada.event("CALL_ESTABLISHED", 20).await;

    let (received, sent, connected) = (browser.received.clone(), browser.sent.clone(), browser.connected.clone());
    eventually("ICE and DTLS with the gateway", 10, || connected.load(Ordering::Relaxed)).await;
    eventually("100 packets of the caller's audio at the browser", 20, || received.load(Ordering::Relaxed) >= 100).await;
    eventually("100 packets of the browser's audio sent", 20, || sent.load(Ordering::Relaxed) >= 100).await;

    ada.command("hangup", "").await;
    ada.event("CALL_CLOSED", 10).await;
    let ended = loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.expect("webrtc.ended").expect("open");
        if event.kind == AgentEventKind::WebRtcEnded {
            break event.leg.clone().expect("the leg");
        }
    };
    assert_eq!(ended.id, offer.id);
    drop(browser);
    // What the caller heard from the browser: the square wave, not silence.
    let heard = std::fs::read(ada.heard()).unwrap_or_default();
    let loud = heard.chunks_exact(2).skip(22).filter(|s| i16::from_le_bytes([s[0], s[1]]).unsigned_abs() > 2_000).count();
    assert!(loud > 8_000, "the caller heard the browser: {loud} loud samples of {}", heard.len() / 2);
    ada.quit().await;

    let metrics = gw.metrics().await;
    assert!(metrics.contains("switchboard_webrtc_legs_answered_total{codec=\"PCMU\"} 1"), "{metrics}");
    // The plain RTP between the WebRTC edge and the call's bridge went in
    // memory, both ways: at least what the browser and the caller heard.
    let local = metric_value(&metrics, "switchboard_media_local_datagrams_total");
    assert!(local >= 200.0, "{local} datagrams in memory: {metrics}");
    gw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sip_call_rings_the_browser_phone_and_audio_flows_both_ways() {
    let call = ring().await;
    // Someone else's session cannot answer it.
    let eve = call.directory.create_user(NewUser { name: "Eve".into(), ..Default::default() }).await.unwrap();
    let (eve_token, _) = call.sessions.create(&eve.id, None).await.unwrap();
    let browser = Browser::answer(&call.offer.sdp, Link::udp());
    let r = call.http.post(format!("{}/v1/webrtc/legs/{}/answer", call.base, call.offer.id)).bearer_auth(&eve_token).json(&json!({"sdp": browser.answer})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    answer_talk_and_hang_up(call, browser).await.stop().await;
}

/// The agent declines in the page: the gateway refuses the call's offer to
/// the page with 603, the leg ends on the agent's stream, and the caller,
/// whom no other device of Bob's could take, is turned away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declining_a_ringing_leg_turns_the_call_away_from_the_page() {
    let Ringing { gw, http, base, token, mut ada, mut events, offer, .. } = ring().await;
    let decline = |id: &str| http.post(format!("{base}/v1/webrtc/legs/{id}/decline")).bearer_auth(&token).send();
    let r = decline("00000000deadbeef").await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "not a leg of Bob's");
    let r = decline(&offer.id).await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{}", r.text().await.unwrap());
    let ended = loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.expect("webrtc.ended").expect("open");
        if event.kind == AgentEventKind::WebRtcEnded {
            break event.leg.clone().expect("the leg");
        }
    };
    assert_eq!(ended.id, offer.id);
    let closed = ada.event("CALL_CLOSED", 15).await;
    assert!(!ada.events.iter().any(|e| e["type"] == "CALL_ESTABLISHED"), "nobody answered: {closed}");
    let r = decline(&offer.id).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "the leg is gone");
    let r = http.post(format!("{base}/v1/webrtc/legs/{}/answer", offer.id)).bearer_auth(&token).json(&json!({"sdp": "v=0"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "a declined leg cannot be answered");
    ada.quit().await;
    let metrics = gw.metrics().await;
    assert!(metrics.contains("switchboard_webrtc_legs_declined_total 1"), "{metrics}");
    gw.stop().await;
}

/// A browser whose network blocks UDP: its only candidate is an active TCP
/// one, and everything (STUN, DTLS, SRTP both ways) goes over one TCP
/// connection to the gateway's WebRTC port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_only_has_tcp_talks_over_ice_tcp() {
    let call = ring().await;
    assert!(call.offer.sdp.contains("typ host tcptype passive"), "the gateway offers ICE-TCP: {}", call.offer.sdp);
    let link = Link::tcp(&call.offer.sdp);
    let Link::Tcp { stream, .. } = &link else { unreachable!() };
    let mut connection = stream.try_clone().unwrap();
    let browser = Browser::answer(&call.offer.sdp, link);
    assert!(browser.answer.contains(" tcp ") && !browser.answer.contains(" udp "), "TCP is all the browser offers: {}", browser.answer);
    let gw = answer_talk_and_hang_up(call, browser).await;

    // The leg is over: the gateway closes its connection (read to the end,
    // the browser's thread being gone).
    connection.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 4096];
    loop {
        match connection.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => panic!("the gateway keeps the TCP connection of a leg that ended: {e}"),
        }
    }
    let metrics = gw.metrics().await;
    assert!(!metrics.contains("reason=\"tcp_"), "nothing dropped on TCP: {metrics}");
    gw.stop().await;
}
