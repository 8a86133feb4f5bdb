//! Placing a call from the softphone (F3, click-to-dial) and answering a
//! ringing call from it, through the agent API against a running gateway
//! with real phones: baresip for agents and outside parties, SIPp for a
//! desk phone that answers only when asked to by the auto-answer hint.

mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::audio::{read_mono, similarity, speech, window};
use support::{softphone as phone, Baresip, PhoneAccount, Sipp, SippRun, TestGateway, CARRIER_IP};
use switchboard_gateway::api::auth::seal::Sealer;
use switchboard_gateway::api::auth::Sessions;
use switchboard_gateway::calls::live::{AgentEventKind, AgentEvents, CallView};
use switchboard_gateway::directory::{NewDevice, NewUser};
use switchboard_proto::{v1 as pb, Kind};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

struct Api {
    gw: TestGateway,
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn start_with(tune: impl FnOnce(&mut switchboard_gateway::config::GatewayConfig)) -> Api {
        let gw = TestGateway::start(|c| {
            c.auth.token_key = Some(KEY.into());
            // Debian 12's baresip reads MD5 challenges only (see interop_baresip.rs).
            c.sip.digest_algorithms = vec!["MD5".into()];
            tune(c);
        })
        .await;
        let base = format!("http://{}", gw.http);
        Api { gw, http: reqwest::Client::new(), base }
    }

    async fn token(&self, user_id: &str) -> String {
        let sessions = Sessions::new(self.gw.db.clone(), Sealer::from_base64(KEY).unwrap(), Duration::from_secs(3600));
        sessions.create(user_id, None).await.unwrap().0
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let r = self.http.request(Method::POST, format!("{}{path}", self.base)).bearer_auth(token).json(&body).send().await.unwrap();
        let status = r.status();
        let bytes = r.bytes().await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

/// A user with an extension.
async fn user(gw: &TestGateway, name: &str, extension: &str) -> String {
    let new = NewUser { name: name.into(), extension: Some(extension.into()), ..Default::default() };
    gw.directory().create_user(new).await.unwrap().id
}

/// A device of `user_id` at `contact`, with digest credentials `login`; answers its id.
async fn device_at(gw: &TestGateway, user_id: &str, login: &str, password: &str, contact: &str) -> String {
    let directory = gw.directory();
    let device = directory.create_device(NewDevice { user_id: user_id.into(), name: login.into(), contact_uri: contact.into() }).await.unwrap();
    directory.set_device_credentials(&device.id, login, password, "switchboard").await.unwrap();
    device.id
}

/// A device that registers (its provisioned contact goes nowhere).
async fn device(gw: &TestGateway, user_id: &str, login: &str, password: &str) -> String {
    device_at(gw, user_id, login, password, &format!("sip:{login}@127.0.0.1:9")).await
}

/// The first event of `kind` for call `id` on an agent's stream.
async fn stream_event(events: &mut AgentEvents, id: &str, kind: AgentEventKind) -> CallView {
    tokio::time::timeout(Duration::from_secs(40), async {
        loop {
            let event = events.recv().await.expect("the stream stays open");
            if let Some(call) = event.call.as_ref().filter(|c| c.id == id && event.kind == kind) {
                return call.clone();
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind:?} event for {id} within 40 s"))
}

/// The SIP requests `phone` received, each as its traced text.
fn messages_received(phone: &Baresip) -> Vec<String> {
    let log = phone.log();
    let lines: Vec<&str> = log.lines().collect();
    let to_me = format!("-> {}", phone.sip);
    lines
        .iter()
        .enumerate()
        .filter(|(i, l)| *i > 0 && lines[i - 1].contains(&to_me) && l.contains(" sip:") && l.ends_with("SIP/2.0"))
        .map(|(i, _)| lines[i..].iter().take_while(|l| !l.trim().is_empty()).copied().collect::<Vec<_>>().join("\n"))
        .collect()
}

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    message.lines().find(|l| l.to_ascii_lowercase().starts_with(&prefix)).map(|l| l[prefix.len()..].trim())
}

/// The (kind, event) pairs of one call in the outbox, once `calls` calls ended.
async fn call_events(gw: &TestGateway, id: &str, calls: usize) -> Vec<(String, pb::CallEvent)> {
    gw.events_after_calls_ended(calls).await.into_iter().filter(|(_, e)| e.call_id == id).collect()
}

fn started(events: &[(String, pb::CallEvent)]) -> pb::CallStarted {
    events
        .iter()
        .find_map(|(_, e)| match &e.kind {
            Some(Kind::Started(s)) => Some(s.clone()),
            _ => None,
        })
        .expect("call.started")
}

/// F3 to a colleague: Bob clicks to dial Ada's extension. His phone is
/// called first (asked to answer by itself), then Ada's rings; both talk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_to_dial_to_another_agents_extension_calls_the_agent_first_then_the_colleague() {
    let api = Api::start_with(|_| {}).await;
    let gw = &api.gw;
    let audio = gw.subdir("audio");
    let ada_mic = speech(&audio, "ada", "Ada here. Yes, I have the March invoice in front of me now.", 10);
    let bob_mic = speech(&audio, "bob", "Hi Ada, Bob speaking. Can you check the March invoice for me?", 10);
    let ada_id = user(gw, "Ada", "201").await;
    device(gw, &ada_id, "ada", "ada-dial-secret-1").await;
    let bob_id = user(gw, "Bob", "202").await;
    let bob_device = device(gw, &bob_id, "bob", "bob-dial-secret-1").await;
    let bob = api.token(&bob_id).await;
    let mut bob_events = gw.live().subscribe(&bob_id).events;
    let mut ada_phone = phone(gw, "ada", "ada-dial-secret-1", &ada_mic).await;
    let mut bob_phone = phone(gw, "bob", "bob-dial-secret-1", &bob_mic).await;

    let (status, view) = api.post("/v1/calls", &bob, json!({"to": "201"})).await;
    assert_eq!(status, StatusCode::CREATED, "{view}");
    assert_eq!((view["state"].as_str(), view["direction"].as_str()), (Some("ringing"), Some("internal")), "{view}");
    let id = view["id"].as_str().unwrap().to_owned();
    bob_phone.event("CALL_ESTABLISHED", 10).await;
    ada_phone.event("CALL_ESTABLISHED", 20).await;
    let answered = stream_event(&mut bob_events, &id, AgentEventKind::Answered).await;
    assert_eq!(answered.agent_user_id.as_deref(), Some(ada_id.as_str()), "Ada answered");
    let t_answered = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await; // let them talk: the audio is the assertion
    let talked = t_answered.elapsed().as_secs_f64();
    let (status, _) = api.post(&format!("/v1/calls/{id}/hangup"), &bob, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    ada_phone.event("CALL_CLOSED", 10).await;
    bob_phone.event("CALL_CLOSED", 10).await;

    let bob_invite = messages_received(&bob_phone).into_iter().find(|m| m.starts_with("INVITE ")).expect("Bob's phone was called");
    assert_eq!(header(&bob_invite, "Call-Info").map(|v| v.contains("answer-after=0")), Some(true), "{bob_invite}");
    assert!(header(&bob_invite, "Alert-Info").is_some_and(|v| v.contains("info=alert-autoanswer")), "{bob_invite}");
    let ada_invite = messages_received(&ada_phone).into_iter().find(|m| m.starts_with("INVITE ")).expect("Ada's phone was called");
    assert!(header(&ada_invite, "Call-Info").is_none(), "no auto-answer for the callee: {ada_invite}");
    assert!(header(&ada_invite, "From").is_some_and(|f| f.contains("sip:202@")), "Ada sees Bob's extension: {ada_invite}");

    // Speech both ways, once Ada answered (the stretch starts after the answer).
    let (ada_said, bob_said) = (read_mono(&ada_mic), read_mono(&bob_mic));
    let end = talked.min(4.5);
    let bob_heard = read_mono(&bob_phone.heard());
    let ada_heard = read_mono(&ada_phone.heard());
    let lead = bob_heard.len() as f64 / 8000.0 - ada_heard.len() as f64 / 8000.0;
    let like_ada = similarity(window(&bob_heard, lead.max(0.0) + 0.5, lead.max(0.0) + end), &ada_said);
    let like_bob = similarity(window(&ada_heard, 0.5, end), &bob_said);
    assert!(like_ada > 0.6, "Bob hears Ada ({like_ada:.2})");
    assert!(like_bob > 0.6, "Ada hears Bob ({like_bob:.2})");

    let events = call_events(gw, &id, 1).await;
    assert_eq!(started(&events).direction, pb::Direction::Internal as i32);
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    for k in ["call.started", "call.ringing", "call.answered", "call.ended"] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    let _ = bob_device;
    for p in [ada_phone, bob_phone] {
        p.quit().await;
    }
    api.gw.stop().await;
}

/// Answering from the softphone: Ada calls Bob, whose softphone rings;
/// Bob answers in the API on his desk phone (SIPp), which answers only
/// because the gateway's INVITE asks it to (`Call-Info: …;answer-after=0`).
/// Another agent may not answer it, nor use Bob's device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answering_from_the_softphone_makes_the_chosen_desk_phone_answer_by_itself() {
    let api = Api::start_with(|_| {}).await;
    let gw = &api.gw;
    let audio = gw.subdir("audio");
    let mic = speech(&audio, "ada", "Hello Bob, it is Ada calling about the invoice.", 10);
    let ada_id = user(gw, "Ada", "201").await;
    device(gw, &ada_id, "ada", "ada-answer-secret-1").await;
    let bob_id = user(gw, "Bob", "202").await;
    device(gw, &bob_id, "bob", "bob-answer-secret-1").await;
    let carol_id = user(gw, "Carol", "203").await;
    let carol_device = device(gw, &carol_id, "carol", "carol-answer-secret-1").await;
    let (bob, carol) = (api.token(&bob_id).await, api.token(&carol_id).await);
    let mut bob_events = gw.live().subscribe(&bob_id).events;
    let mut ada_phone = phone(gw, "ada", "ada-answer-secret-1", &mic).await;
    let mut bob_soft = Baresip::start_with_audio(
        gw.dir.path(),
        "bob",
        gw.sip,
        PhoneAccount { username: "bob", password: "bob-answer-secret-1", answermode: "manual", register: true },
        &mic,
    )
    .await;
    bob_soft.event("REGISTER_OK", 20).await;

    ada_phone.command("dial", &format!("sip:202@{}", gw.sip)).await;
    bob_soft.event("CALL_INCOMING", 20).await;
    let id = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let e = bob_events.recv().await.unwrap();
            if let Some(c) = e.call.as_ref().filter(|_| e.kind == AgentEventKind::Ringing) {
                return c.id.clone();
            }
        }
    })
    .await
    .expect("the call rings for Bob");

    // Bob's desk phone, at a fixed address, set to honour auto-answer.
    let desk_port = support::free_udp_port(CARRIER_IP);
    let desk = device_at(gw, &bob_id, "bob-desk", "bob-desk-secret-1", &format!("sip:bob@{CARRIER_IP}:{desk_port}")).await;
    let mut sipp = Sipp::spawn(
        gw.dir.path(),
        SippRun { label: "desk", scenario: "device_uas_answer_when_asked.xml", ip: CARRIER_IP, remote: None, service: None, port: desk_port },
    );

    // Denials first: not Carol's call, not Carol's device.
    let (status, problem) = api.post(&format!("/v1/calls/{id}/answer"), &carol, json!({})).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::NOT_FOUND, Some("call_not_found")), "{problem}");
    let (status, problem) = api.post(&format!("/v1/calls/{id}/answer"), &bob, json!({"device_id": carol_device})).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::NOT_FOUND, Some("device_not_found")), "{problem}");

    let (status, view) = api.post(&format!("/v1/calls/{id}/answer"), &bob, json!({"device_id": desk})).await;
    assert_eq!((status, view["state"].as_str()), (StatusCode::OK, Some("ringing")), "{view}");
    let answered = stream_event(&mut bob_events, &id, AgentEventKind::Answered).await;
    assert_eq!(answered.agent_user_id.as_deref(), Some(bob_id.as_str()));
    ada_phone.event("CALL_ESTABLISHED", 10).await;
    bob_soft.event("CALL_CLOSED", 10).await; // its ringing was cancelled
    let (status, problem) = api.post(&format!("/v1/calls/{id}/answer"), &bob, json!({})).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("call_state")), "answered already: {problem}");

    ada_phone.command("hangup", "").await;
    ada_phone.event("CALL_CLOSED", 10).await;
    let exit = sipp.wait().await;
    assert!(exit.success(), "the desk phone saw the hint and answered:\n{}", sipp.report());
    let events = call_events(gw, &id, 1).await;
    let answered_by = events.iter().find_map(|(_, e)| match &e.kind {
        Some(Kind::Answered(a)) => a.agent.as_ref().map(|a| a.device_id.clone()),
        _ => None,
    });
    assert_eq!(answered_by.as_deref(), Some(desk.as_str()), "answered on the desk phone");
    for p in [ada_phone, bob_soft] {
        p.quit().await;
    }
    api.gw.stop().await;
}

/// What `POST /v1/calls` refuses, before any phone rings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placing_a_call_is_refused_for_bad_numbers_other_agents_devices_foreign_caller_ids_and_no_device() {
    let api = Api::start_with(|_| {}).await;
    let gw = &api.gw;
    let bob_id = user(gw, "Bob", "202").await;
    device(gw, &bob_id, "bob", "bob-refuse-secret-1").await; // never registers
    let carol_id = user(gw, "Carol", "203").await;
    let carol_device = device(gw, &carol_id, "carol", "carol-refuse-secret-1").await;
    gw.directory().assign_number("+14155550102", &bob_id).await.unwrap();
    gw.directory().assign_number("+14155550103", &carol_id).await.unwrap();
    let bob = api.token(&bob_id).await;

    let (status, p) = api.post("/v1/calls", &bob, json!({"to": "call me maybe"})).await;
    assert_eq!((status, p["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_number")), "{p}");
    let (status, p) = api.post("/v1/calls", &bob, json!({"to": "201", "caller_id": "+14155550103"})).await;
    assert_eq!((status, p["code"].as_str()), (StatusCode::FORBIDDEN, Some("caller_id_not_allowed")), "Carol's number: {p}");
    let (status, p) = api.post("/v1/calls", &bob, json!({"to": "203", "device_id": carol_device})).await;
    assert_eq!((status, p["code"].as_str()), (StatusCode::NOT_FOUND, Some("device_not_found")), "{p}");
    let (status, p) = api.post("/v1/calls", &bob, json!({"to": "203", "caller_id": "+1 415 555 0102"})).await;
    assert_eq!((status, p["code"].as_str()), (StatusCode::CONFLICT, Some("no_device")), "an entitled caller ID, but no registered phone: {p}");
    assert_eq!(gw.live().for_user(&bob_id).len(), 0, "nothing was placed");
    api.gw.stop().await;
}

/// F3 + F5 out through the trunk: Bob clicks to dial an outside number
/// presenting the second of his two numbers; the outside phone (baresip
/// behind the trunk) sees that number in From and P-Asserted-Identity and
/// both talk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_to_dial_out_through_the_trunk_presents_the_chosen_caller_id() {
    const OUTSIDE: &str = "+442071234567";
    let workdir = tempfile::tempdir().unwrap();
    let audio = workdir.path().join("audio");
    std::fs::create_dir_all(&audio).unwrap();
    let bob_mic = speech(&audio, "bob", "Hello, this is Bob from Acme, returning your call about the order.", 10);
    let outside_mic = speech(&audio, "outside", "Good morning, Northwind Traders, how can I help you today?", 10);
    let mut outside = Baresip::far_end(workdir.path(), OUTSIDE, &outside_mic).await;
    let carrier_at = outside.sip.to_string();
    let api = Api::start_with(move |c| support::trunk_to(c, carrier_at)).await;
    let gw = &api.gw;
    let bob_id = user(gw, "Bob", "202").await;
    device(gw, &bob_id, "bob", "bob-trunk-secret-1").await;
    gw.directory().assign_number("+14155550102", &bob_id).await.unwrap();
    gw.directory().assign_number("+14155550103", &bob_id).await.unwrap();
    let bob = api.token(&bob_id).await;
    let mut bob_events = gw.live().subscribe(&bob_id).events;
    let mut bob_phone = phone(gw, "bob", "bob-trunk-secret-1", &bob_mic).await;

    let (status, view) = api.post("/v1/calls", &bob, json!({"to": "+44 20 7123 4567", "caller_id": "+14155550103"})).await;
    assert_eq!(status, StatusCode::CREATED, "{view}");
    assert_eq!(view["direction"], "outbound", "{view}");
    let id = view["id"].as_str().unwrap().to_owned();
    bob_phone.event("CALL_ESTABLISHED", 10).await;
    outside.event("CALL_ESTABLISHED", 20).await;
    let answered = stream_event(&mut bob_events, &id, AgentEventKind::Answered).await;
    assert_eq!(answered.to_number, OUTSIDE);
    let t_answered = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await; // let them talk: the audio is the assertion
    let talked = t_answered.elapsed().as_secs_f64();
    let (status, _) = api.post(&format!("/v1/calls/{id}/hangup"), &bob, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    bob_phone.event("CALL_CLOSED", 10).await;
    outside.event("CALL_CLOSED", 10).await;

    let invite = messages_received(&outside).into_iter().find(|m| m.starts_with("INVITE ")).expect("the outside phone was called");
    assert!(invite.starts_with(&format!("INVITE sip:{OUTSIDE}@")), "{invite}");
    assert!(header(&invite, "From").is_some_and(|f| f.contains("+14155550103")), "the chosen caller ID: {invite}");
    assert!(header(&invite, "P-Asserted-Identity").is_some_and(|f| f.contains("+14155550103")), "{invite}");
    assert!(header(&invite, "Call-Info").is_none(), "no auto-answer hint to the far end: {invite}");

    let (bob_said, outside_said) = (read_mono(&bob_mic), read_mono(&outside_mic));
    let end = talked.min(4.5);
    let bob_heard = read_mono(&bob_phone.heard());
    let outside_heard = read_mono(&outside.heard());
    let lead = (bob_heard.len() as f64 - outside_heard.len() as f64) / 8000.0;
    let like_outside = similarity(window(&bob_heard, lead.max(0.0) + 0.5, lead.max(0.0) + end), &outside_said);
    let like_bob = similarity(window(&outside_heard, 0.5, end), &bob_said);
    assert!(like_outside > 0.6, "Bob hears the outside party ({like_outside:.2})");
    assert!(like_bob > 0.6, "the outside party hears Bob ({like_bob:.2})");

    let events = call_events(gw, &id, 1).await;
    let s = started(&events);
    assert_eq!(s.direction, pb::Direction::Outbound as i32);
    assert_eq!(s.owner.as_ref().map(|o| o.user_id.as_str()), Some(bob_id.as_str()), "Bob owns his call");
    assert_eq!(s.from.as_ref().map(|p| p.number.as_str()), Some("+14155550103"));
    assert_eq!(gw.metric("switchboard_calls_placed_total{result=\"answered\"}").await, 1.0);
    bob_phone.quit().await;
    outside.quit().await;
    api.gw.stop().await;
}

/// The far end declines a placed call: the agent's phone, already
/// answered, is hung up, and the call ends busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_end_that_declines_ends_the_placed_call_and_hangs_up_the_agents_phone() {
    let trunk_port = support::free_udp_port(CARRIER_IP);
    let api = Api::start_with(move |c| support::trunk_to(c, format!("{CARRIER_IP}:{trunk_port}"))).await;
    let gw = &api.gw;
    let audio = gw.subdir("audio");
    let bob_mic = speech(&audio, "bob", "Hello?", 3);
    let bob_id = user(gw, "Bob", "202").await;
    device(gw, &bob_id, "bob", "bob-decline-secret-1").await;
    gw.directory().assign_number("+14155550102", &bob_id).await.unwrap();
    let bob = api.token(&bob_id).await;
    let mut bob_events = gw.live().subscribe(&bob_id).events;
    let mut bob_phone = phone(gw, "bob", "bob-decline-secret-1", &bob_mic).await;
    let far_end = Sipp::spawn(gw.dir.path(), SippRun { label: "far-end", scenario: "device_uas_decline.xml", ip: CARRIER_IP, remote: None, service: None, port: trunk_port });

    let (status, view) = api.post("/v1/calls", &bob, json!({"to": "+442071234567"})).await;
    assert_eq!(status, StatusCode::CREATED, "{view}");
    let id = view["id"].as_str().unwrap().to_owned();
    bob_phone.event("CALL_ESTABLISHED", 10).await;
    let closed = bob_phone.event("CALL_CLOSED", 20).await;
    far_end.succeeds().await;
    let ended = stream_event(&mut bob_events, &id, AgentEventKind::Ended).await;
    assert_eq!(serde_json::to_value(ended.end_reason).unwrap(), "busy", "{closed}");
    assert_eq!(ended.answered_at_ms, None, "nobody answered at the far end");

    let events = call_events(gw, &id, 1).await;
    let end = events.iter().find_map(|(_, e)| match &e.kind { Some(Kind::Ended(x)) => Some(x.clone()), _ => None }).expect("call.ended");
    assert_eq!((end.reason(), end.sip_status), (pb::EndReason::Busy, 603));
    assert!(!events.iter().any(|(k, _)| k == "call.answered"), "{:?}", events.iter().map(|(k, _)| k).collect::<Vec<_>>());
    assert_eq!(gw.metric("switchboard_calls_placed_total{result=\"busy\"}").await, 1.0);
    bob_phone.quit().await;
    api.gw.stop().await;
}

/// A click-to-dial retried with the same `Idempotency-Key` (a flaky
/// network, a double click) places one call and answers the same one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_click_to_dial_places_one_call() {
    let api = Api::start_with(|_| {}).await;
    let gw = &api.gw;
    let audio = gw.subdir("audio");
    let mic = speech(&audio, "mic", "Hello?", 3);
    let ada_id = user(gw, "Ada", "201").await;
    device(gw, &ada_id, "ada", "ada-once-secret-1").await;
    let bob_id = user(gw, "Bob", "202").await;
    device(gw, &bob_id, "bob", "bob-once-secret-1").await;
    let bob = api.token(&bob_id).await;
    let mut ada_phone = phone(gw, "ada", "ada-once-secret-1", &mic).await;
    let mut bob_phone = phone(gw, "bob", "bob-once-secret-1", &mic).await;

    let dial = || {
        api.http
            .post(format!("{}/v1/calls", api.base))
            .bearer_auth(&bob)
            .header("Idempotency-Key", "click-201-once")
            .json(&json!({"to": "201"}))
            .send()
    };
    let first = dial().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let again = dial().await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers().get("Idempotent-Replayed").and_then(|v| v.to_str().ok()), Some("true"));
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"], "the same call");
    let id = first["id"].as_str().unwrap().to_owned();
    bob_phone.event("CALL_ESTABLISHED", 10).await;
    ada_phone.event("CALL_ESTABLISHED", 20).await;
    let (status, _) = api.post(&format!("/v1/calls/{id}/hangup"), &bob, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    bob_phone.event("CALL_CLOSED", 10).await;
    ada_phone.event("CALL_CLOSED", 10).await;

    let invites = messages_received(&bob_phone).into_iter().filter(|m| m.starts_with("INVITE ")).count();
    assert_eq!(invites, 1, "Bob's phone was called once");
    let events = gw.events_after_calls_ended(1).await;
    assert_eq!(events.iter().filter(|(k, _)| k == "call.started").count(), 1, "one call in the log");
    for p in [ada_phone, bob_phone] {
        p.quit().await;
    }
    api.gw.stop().await;
}
