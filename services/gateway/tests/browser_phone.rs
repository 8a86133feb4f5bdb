//! The browser phone end to end through the gateway: a softphone page
//! registers over the agent API, a SIP phone (baresip) calls its agent, the
//! page's WebRTC offer arrives on the agent's event stream, a WebRTC peer
//! answers it over the API and audio flows both ways over ICE, DTLS and
//! SRTP on the gateway's WebRTC port, until the caller hangs up.
//!
//! The browser here is a WebRTC peer of its own (str0m as a full ICE
//! agent, as Chrome is, on its own UDP socket); the same exchange with
//! Chromium and the softphone page is in the end-to-end browser tests.

mod support;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use str0m::change::SdpOffer;
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};
use support::audio::speech;
use support::{softphone, softphone_user, TestGateway};
use switchboard_gateway::api::auth::seal::Sealer;
use switchboard_gateway::api::auth::Sessions;
use switchboard_gateway::calls::live::AgentEventKind;
use switchboard_gateway::directory::NewUser;

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A WebRTC peer answering the gateway's offer like a browser that only
/// speaks PCMU, on a thread of its own: sends a 20 ms PCMU packet every
/// 20 ms once connected and counts what it receives.
struct Browser {
    received: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    connected: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    answer: String,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Browser {
    fn answer(offer: &str) -> Browser {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let local = socket.local_addr().unwrap();
        let mut config = Rtc::builder().set_rtp_mode(true).clear_codecs();
        config.codec_config().enable_pcmu(true, false);
        let mut rtc = config.build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let answer = rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(offer).unwrap()).unwrap().to_sdp_string();
        let mid = offer.lines().find_map(|l| l.strip_prefix("a=mid:")).map(|m| str0m::media::Mid::from(m.trim()));
        let (received, sent, connected, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (r, s, c, st) = (received.clone(), sent.clone(), connected.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 2048];
            let mut next_send = Instant::now();
            let mut seq: u64 = 1;
            while !st.load(Ordering::Relaxed) {
                let timeout = loop {
                    match rtc.poll_output().unwrap() {
                        Output::Timeout(t) => break t,
                        Output::Transmit(t) => {
                            let _ = socket.send_to(&t.contents, t.destination);
                        }
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
                socket.set_read_timeout(Some(wait)).unwrap();
                let input = match socket.recv_from(&mut buf) {
                    Ok((n, source)) => Input::Receive(Instant::now(), Receive::new(Protocol::Udp, source, local, &buf[..n]).unwrap()),
                    Err(_) => Input::Timeout(Instant::now()),
                };
                let _ = rtc.handle_input(input);
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

async fn eventually(what: &str, secs: u64, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sip_call_rings_the_browser_phone_and_audio_flows_both_ways() {
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
    assert!(offer.sdp.contains("a=ice-lite") && offer.sdp.contains("PCMU/8000"), "{}", offer.sdp);

    // Someone else's session cannot answer it.
    let eve = directory.create_user(NewUser { name: "Eve".into(), ..Default::default() }).await.unwrap();
    let (eve_token, _) = sessions.create(&eve.id, None).await.unwrap();
    let browser = Browser::answer(&offer.sdp);
    let answer_url = format!("{base}/v1/webrtc/legs/{}/answer", offer.id);
    let r = http.post(&answer_url).bearer_auth(&eve_token).json(&json!({"sdp": browser.answer})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = http.post(&answer_url).bearer_auth(&token).json(&json!({"sdp": browser.answer})).send().await.unwrap();
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
    gw.stop().await;
}
