//! Handing the agent's side of a live call over (decision 0014), through
//! the agent API against a running gateway with real baresip phones: the
//! agent moves a call to its other phone (F16), transfers it blind to
//! another agent (F8), and cancels a transfer that rings. The customer's
//! phone must notice nothing — no re-INVITE, no BYE — while its audio
//! reaches the new phone and the new phone's reaches it.

mod support;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::audio::{read_mono, similarity, speech, window};
use support::{softphone, Baresip, PhoneAccount, TestGateway};
use switchboard_gateway::api::auth::seal::Sealer;
use switchboard_gateway::api::auth::Sessions;
use switchboard_gateway::calls::live::{AgentEventKind, AgentEvents, CallState};
use switchboard_gateway::directory::{NewDevice, NewUser};
use switchboard_proto::{v1 as pb, Kind};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

struct Api {
    gw: TestGateway,
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn start() -> Api {
        Api::start_with(|_| {}).await
    }

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

    async fn post(&self, path: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(Method::POST, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let bytes = r.bytes().await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let r = self.http.get(format!("{}{path}", self.base)).bearer_auth(token).send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// A user with an extension (and a Salesforce id, when given).
async fn user(gw: &TestGateway, name: &str, extension: &str, salesforce_user_id: Option<&str>) -> String {
    let new = NewUser {
        name: name.into(),
        extension: Some(extension.into()),
        salesforce_user_id: salesforce_user_id.map(str::to_owned),
        ..Default::default()
    };
    gw.directory().create_user(new).await.unwrap().id
}

/// A device of `user_id` with digest credentials `login`; answers its id.
async fn device(gw: &TestGateway, user_id: &str, login: &str, password: &str) -> String {
    let directory = gw.directory();
    let device = directory
        .create_device(NewDevice { user_id: user_id.into(), name: login.into(), contact_uri: format!("sip:{login}@127.0.0.1:9") })
        .await
        .unwrap();
    directory.set_device_credentials(&device.id, login, password, "switchboard").await.unwrap();
    device.id
}

/// The first event of `kind` on an agent's stream, with its call.
async fn stream_event(events: &mut AgentEvents, kind: AgentEventKind) -> switchboard_gateway::calls::live::CallView {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let event = events.recv().await.expect("the stream stays open");
            if event.kind == kind {
                return event.call.clone().expect("a call event carries its call");
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind:?} event within 20 s"))
}

/// The id of the first call on the stream to reach `state`.
async fn call_reaching(events: &mut AgentEvents, state: CallState) -> String {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let event = events.recv().await.expect("the stream stays open");
            if let Some(call) = event.call.as_ref().filter(|c| c.state == state) {
                return call.id.clone();
            }
        }
    })
    .await
    .expect("the call reaches the state within 20 s")
}

/// The SIP requests (methods) `phone` received, from its `-s` trace.
fn requests_received(phone: &Baresip) -> Vec<String> {
    messages_received(phone).into_iter().map(|m| m.split(' ').next().unwrap_or_default().to_owned()).collect()
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

/// How much a stretch of what a phone heard sounds like each of two
/// speakers: (like `expected`, like `other`).
fn heard_like(heard: &[i16], expected: &[i16], other: &[i16]) -> (f64, f64) {
    (similarity(heard, expected), similarity(heard, other))
}

/// A phone answering by itself, registered as `login`.
async fn phone(gw: &TestGateway, login: &str, password: &str, mic: &std::path::Path) -> Baresip {
    softphone(gw, login, password, mic).await
}

/// F16: Bob takes Ada's call on his desk phone and moves it to his other
/// phone. Ada's dialog is untouched, her audio reaches the second phone
/// and its audio reaches her; the desk phone is hung up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_moves_a_call_to_its_other_phone_and_the_caller_notices_nothing() {
    let api = Api::start().await;
    let gw = &api.gw;
    let audio = gw.subdir("audio");
    let ada_mic = speech(&audio, "ada", "Hello, this is Ada from accounts. I am calling about the invoice for March.", 8);
    let desk_mic = speech(&audio, "desk", "Bob at the desk. One moment please, I am looking at it.", 8);
    let cell_mic = speech(&audio, "cell", "Bob again, now on the other phone, walking to the meeting room.", 8);
    let ada_id = user(gw, "Ada", "201", None).await;
    device(gw, &ada_id, "ada", "ada-move-secret-1").await;
    let bob_id = user(gw, "Bob", "202", None).await;
    let desk_device = device(gw, &bob_id, "bob-desk", "bob-desk-secret-1").await;
    let bob = api.token(&bob_id).await;
    let mut bob_events = gw.live().subscribe(&bob_id).events;
    let mut ada = phone(gw, "ada", "ada-move-secret-1", &ada_mic).await;
    let mut desk = phone(gw, "bob-desk", "bob-desk-secret-1", &desk_mic).await;

    ada.command("dial", &format!("sip:202@{}", gw.sip)).await;
    let first = ada.first_of(&["CALL_ESTABLISHED", "CALL_CLOSED"], 20).await;
    assert_eq!(first["type"], "CALL_ESTABLISHED", "the call failed: {first}");
    desk.event("CALL_ESTABLISHED", 10).await;
    let t0 = Instant::now();
    let id = call_reaching(&mut bob_events, CallState::Answered).await;

    // Bob's second phone signs in while the call is on the desk phone.
    let cell_device = device(gw, &bob_id, "bob-cell", "bob-cell-secret-1").await;
    let mut cell = phone(gw, "bob-cell", "bob-cell-secret-1", &cell_mic).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // talk on the desk phone first
    let invites_before = requests_received(&ada).iter().filter(|m| *m == "INVITE").count();
    // Bob holds Ada while he picks up the other phone.
    let (status, view) = api.post(&format!("/v1/calls/{id}/hold"), &bob, Some(json!({"on": true}))).await;
    assert_eq!((status, view["held"].as_str()), (StatusCode::OK, Some("caller")), "{view}");

    let (status, view) = api.post(&format!("/v1/calls/{id}/move"), &bob, Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["agent_user_id"], bob_id.as_str());
    assert_eq!(view["held"], Value::Null, "taken off hold for the second phone: {view}");
    let moved_at = t0.elapsed().as_secs_f64();
    cell.event("CALL_ESTABLISHED", 10).await;
    desk.event("CALL_CLOSED", 10).await;
    let transferred = stream_event(&mut bob_events, AgentEventKind::Transferred).await;
    assert_eq!((transferred.id.as_str(), transferred.agent_user_id.as_deref()), (id.as_str(), Some(bob_id.as_str())));
    assert_eq!(transferred.state, CallState::Answered);

    // A second move while none of Bob's other phones is free is refused
    // with what to do, and changes nothing.
    let (status, problem) = api.post(&format!("/v1/calls/{id}/move"), &bob, Some(json!({"device_id": cell_device}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["code"], "transfer_target");

    tokio::time::sleep(Duration::from_secs(4)).await; // talk on the second phone
    ada.command("hangup", "").await;
    ada.event("CALL_CLOSED", 10).await;
    cell.event("CALL_CLOSED", 10).await;

    // Ada's dialog saw no re-INVITE and no BYE: she hung up herself.
    let received = requests_received(&ada);
    assert_eq!(received.iter().filter(|m| *m == "INVITE").count(), invites_before, "no re-INVITE towards Ada: {received:?}");
    assert!(!received.iter().any(|m| m == "BYE"), "no BYE towards Ada: {received:?}");
    assert_eq!(requests_received(&desk).iter().filter(|m| *m == "BYE").count(), 1, "the desk phone was hung up");

    // Audio: the second phone heard Ada, Ada heard the second phone.
    let (ada_said, cell_said, desk_said) = (read_mono(&ada_mic), read_mono(&cell_mic), read_mono(&desk_mic));
    let cell_heard = read_mono(&cell.heard());
    let (like_ada, like_desk) = heard_like(window(&cell_heard, 0.5, 3.5), &ada_said, &desk_said);
    assert!(like_ada > 0.6 && like_ada > like_desk + 0.15, "the second phone hears Ada ({like_ada:.2}), not the desk ({like_desk:.2})");
    let ada_heard = read_mono(&ada.heard());
    let after = window(&ada_heard, moved_at + 0.8, moved_at + 3.8);
    let (like_cell, like_desk) = heard_like(after, &cell_said, &desk_said);
    assert!(like_cell > 0.6 && like_cell > like_desk + 0.15, "Ada hears the second phone ({like_cell:.2}), not the desk ({like_desk:.2})");

    // The call's events: moved from the desk phone to the other one, same agent.
    let events = gw.events_after_calls_ended(1).await;
    let moved: Vec<&pb::CallTransferred> = events
        .iter()
        .filter(|(_, e)| e.call_id == id)
        .filter_map(|(_, e)| match &e.kind {
            Some(Kind::Transferred(t)) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(moved.len(), 1, "one call.transferred");
    assert_eq!(moved[0].kind, pb::TransferKind::Move as i32);
    let (from, to) = (moved[0].from.as_ref().unwrap(), moved[0].to.as_ref().unwrap());
    assert_eq!((from.user_id.as_str(), from.device_id.as_str()), (bob_id.as_str(), desk_device.as_str()));
    assert_eq!((to.user_id.as_str(), to.device_id.as_str()), (bob_id.as_str(), cell_device.as_str()));
    let kinds: Vec<&str> = events.iter().filter(|(_, e)| e.call_id == id).map(|(k, _)| k.as_str()).collect();
    let (answered, transferred, ended) = (
        kinds.iter().position(|k| *k == "call.answered").unwrap(),
        kinds.iter().position(|k| *k == "call.transferred").unwrap(),
        kinds.iter().position(|k| *k == "call.ended").unwrap(),
    );
    assert!(answered < transferred && transferred < ended, "{kinds:?}");
    let held: Vec<i32> = events
        .iter()
        .filter_map(|(_, e)| match &e.kind {
            Some(Kind::MediaState(m)) => Some(m.held),
            _ => None,
        })
        .collect();
    assert_eq!(held, [pb::Leg::Caller as i32, pb::Leg::Unspecified as i32], "held by Bob, resumed by the move");
    assert_eq!(gw.metric("switchboard_call_transfers_total{kind=\"move\",result=\"completed\"}").await, 1.0);
    assert_eq!(gw.metric("switchboard_call_transfers_total{kind=\"move\",result=\"refused\"}").await, 1.0);

    for p in [ada, desk, cell] {
        p.quit().await;
    }
    api.gw.stop().await;
}

/// F8: Bob transfers Ada's call blind to Carol, named by her Salesforce
/// user id. Carol's phone rings while Bob still talks to Ada; once Carol
/// answers she has the call: it leaves Bob's stream and appears in hers,
/// the call log names her as its agent, and Ada talks to her without her
/// phone seeing any SIP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blind_transfer_hands_the_call_to_another_agent() {
    let api = Api::start().await;
    let gw = &api.gw;
    let audio = gw.subdir("audio");
    let ada_mic = speech(&audio, "ada", "Hello, this is Ada from accounts. I am calling about the invoice for March.", 8);
    let bob_mic = speech(&audio, "bob", "Bob speaking. Let me put you through to billing, they can help.", 8);
    let carol_mic = speech(&audio, "carol", "Carol in billing here. I have your invoice open, what would you like to change?", 8);
    let ada_id = user(gw, "Ada", "201", None).await;
    device(gw, &ada_id, "ada", "ada-xfer-secret-1").await;
    let bob_id = user(gw, "Bob", "202", None).await;
    device(gw, &bob_id, "bob", "bob-xfer-secret-1").await;
    let carol_sf = "005000000000003AAA";
    let carol_id = user(gw, "Carol", "203", Some(carol_sf)).await;
    let carol_device = device(gw, &carol_id, "carol", "carol-xfer-secret-1").await;
    let (bob, carol) = (api.token(&bob_id).await, api.token(&carol_id).await);
    let mut bob_events = gw.live().subscribe(&bob_id).events;
    let mut carol_events = gw.live().subscribe(&carol_id).events;
    let mut ada_phone = phone(gw, "ada", "ada-xfer-secret-1", &ada_mic).await;
    let mut bob_phone = phone(gw, "bob", "bob-xfer-secret-1", &bob_mic).await;
    let mut carol_phone = phone(gw, "carol", "carol-xfer-secret-1", &carol_mic).await;

    ada_phone.command("dial", &format!("sip:202@{}", gw.sip)).await;
    let first = ada_phone.first_of(&["CALL_ESTABLISHED", "CALL_CLOSED"], 20).await;
    assert_eq!(first["type"], "CALL_ESTABLISHED", "the call failed: {first}");
    bob_phone.event("CALL_ESTABLISHED", 10).await;
    let t0 = Instant::now();
    let id = call_reaching(&mut bob_events, CallState::Answered).await;
    let (status, _) = api.get(&format!("/v1/calls/{id}"), &carol).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not Carol's call before the transfer");
    // Only the call's agent may transfer it: not Carol, who does not see
    // it, and not Ada, who sees it as its caller.
    let ada = api.token(&ada_id).await;
    let (status, _) = api.get(&format!("/v1/calls/{id}"), &ada).await;
    assert_eq!(status, StatusCode::OK, "Ada sees her own call");
    for token in [&carol, &ada] {
        let (status, problem) = api.post(&format!("/v1/calls/{id}/transfer"), token, Some(json!({"to": {"user_id": carol_id}}))).await;
        assert_eq!((status, problem["code"].as_str()), (StatusCode::NOT_FOUND, Some("call_not_found")));
        let (status, problem) = api.post(&format!("/v1/calls/{id}/move"), token, Some(json!({}))).await;
        assert_eq!((status, problem["code"].as_str()), (StatusCode::NOT_FOUND, Some("call_not_found")));
    }
    // Bad targets are refused before anything rings.
    for (body, want, code) in [
        (json!({"to": {}}), StatusCode::BAD_REQUEST, "invalid_transfer_target"),
        (json!({"to": {"user_id": carol_id, "number": "203"}}), StatusCode::BAD_REQUEST, "invalid_transfer_target"),
        (json!({"to": {"salesforce_user_id": "005000000000009ZZZ"}}), StatusCode::UNPROCESSABLE_ENTITY, "transfer_target"),
        (json!({"to": {"user_id": bob_id}}), StatusCode::UNPROCESSABLE_ENTITY, "transfer_target"),
        (json!({"to": {"number": "299"}}), StatusCode::UNPROCESSABLE_ENTITY, "transfer_target"),
        (json!({"to": {"number": "203"}, "mode": "consultative"}), StatusCode::BAD_REQUEST, "invalid_json"),
    ] {
        let (status, problem) = api.post(&format!("/v1/calls/{id}/transfer"), &bob, Some(body.clone())).await;
        assert_eq!((status, problem["code"].as_str()), (want, Some(code)), "{body}: {problem}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // Ada and Bob talk first

    let (status, view) =
        api.post(&format!("/v1/calls/{id}/transfer"), &bob, Some(json!({"to": {"salesforce_user_id": carol_sf}, "mode": "blind"}))).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["agent_user_id"], carol_id.as_str(), "Carol has the call");
    let transferred_at = t0.elapsed().as_secs_f64();
    carol_phone.event("CALL_ESTABLISHED", 10).await;
    bob_phone.event("CALL_CLOSED", 10).await;

    // Bob is told, then no longer sees the call; Carol sees it as hers.
    let seen_by_bob = stream_event(&mut bob_events, AgentEventKind::Transferred).await;
    assert_eq!(seen_by_bob.agent_user_id.as_deref(), Some(carol_id.as_str()));
    let seen_by_carol = stream_event(&mut carol_events, AgentEventKind::Transferred).await;
    assert_eq!((seen_by_carol.id.as_str(), seen_by_carol.state), (id.as_str(), CallState::Answered));
    let (status, list) = api.get("/v1/calls", &bob).await;
    assert_eq!((status, &list["calls"]), (StatusCode::OK, &json!([])), "gone from Bob's list");
    let (status, call) = api.get(&format!("/v1/calls/{id}"), &carol).await;
    assert_eq!(status, StatusCode::OK, "{call}");
    assert_eq!(call["agent_user_id"], carol_id.as_str());
    let (status, _) = api.post(&format!("/v1/calls/{id}/hold"), &bob, Some(json!({"on": true}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "Bob controls it no more");

    tokio::time::sleep(Duration::from_secs(4)).await; // Ada and Carol talk
    let (status, view) = api.post(&format!("/v1/calls/{id}/hangup"), &carol, None).await;
    assert_eq!(status, StatusCode::OK, "Carol controls it: {view}");
    ada_phone.event("CALL_CLOSED", 10).await;
    carol_phone.event("CALL_CLOSED", 10).await;

    // Ada's phone saw neither a re-INVITE nor a BYE until Carol hung up.
    let received = requests_received(&ada_phone);
    assert!(!received.iter().any(|m| m == "INVITE"), "no re-INVITE towards Ada: {received:?}");
    assert_eq!(received.iter().filter(|m| *m == "BYE").count(), 1, "one BYE, Carol's hangup: {received:?}");
    let (ada_said, bob_said, carol_said) = (read_mono(&ada_mic), read_mono(&bob_mic), read_mono(&carol_mic));
    let carol_heard = read_mono(&carol_phone.heard());
    let (like_ada, like_bob) = heard_like(window(&carol_heard, 0.5, 3.5), &ada_said, &bob_said);
    assert!(like_ada > 0.6 && like_ada > like_bob + 0.15, "Carol hears Ada ({like_ada:.2}), not Bob ({like_bob:.2})");
    let ada_heard = read_mono(&ada_phone.heard());
    let (like_carol, like_bob) = heard_like(window(&ada_heard, transferred_at + 0.8, transferred_at + 3.8), &carol_said, &bob_said);
    assert!(like_carol > 0.6 && like_carol > like_bob + 0.15, "Ada hears Carol ({like_carol:.2}), not Bob ({like_bob:.2})");

    // The call log: transferred from Bob to Carol, and Carol is its agent.
    let events = gw.events_after_calls_ended(1).await;
    let transfer = events
        .iter()
        .filter(|(_, e)| e.call_id == id)
        .find_map(|(_, e)| match &e.kind {
            Some(Kind::Transferred(t)) => Some(t.clone()),
            _ => None,
        })
        .expect("a call.transferred event");
    assert_eq!(transfer.kind, pb::TransferKind::Blind as i32);
    assert_eq!(transfer.from.as_ref().map(|a| a.user_id.as_str()), Some(bob_id.as_str()));
    let to = transfer.to.as_ref().unwrap();
    assert_eq!((to.user_id.as_str(), to.device_id.as_str(), to.salesforce_user_id.as_str()), (carol_id.as_str(), carol_device.as_str(), carol_sf));
    let agent: Option<String> = switchboard_store::sqlx::query_scalar("SELECT agent_user_id FROM calls WHERE id = $1")
        .bind(id.as_str())
        .fetch_one(gw.db.pool())
        .await
        .unwrap();
    assert_eq!(agent.as_deref(), Some(carol_id.as_str()), "calls.agent_user_id is the receiving agent");
    assert_eq!(gw.metric("switchboard_call_transfers_total{kind=\"blind\",result=\"completed\"}").await, 1.0);

    for p in [ada_phone, bob_phone, carol_phone] {
        p.quit().await;
    }
    api.gw.stop().await;
}

/// A transfer that rings can be cancelled: the target stops ringing, the
/// transfer request answers 409, and Ada and Bob go on talking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ringing_transfer_is_cancelled_and_the_call_goes_on() {
    let api = Api::start().await;
    let gw = &api.gw;
    let audio = gw.subdir("audio");
    let ada_mic = speech(&audio, "ada", "Hello, this is Ada from accounts. I am calling about the invoice for March.", 8);
    let bob_mic = speech(&audio, "bob", "Bob speaking. Let me see whether billing is free right now.", 8);
    let ada_id = user(gw, "Ada", "201", None).await;
    device(gw, &ada_id, "ada", "ada-cancel-secret-1").await;
    let bob_id = user(gw, "Bob", "202", None).await;
    device(gw, &bob_id, "bob", "bob-cancel-secret-1").await;
    let carol_id = user(gw, "Carol", "203", None).await;
    device(gw, &carol_id, "carol", "carol-cancel-secret-1").await;
    let bob = api.token(&bob_id).await;
    let mut bob_events = gw.live().subscribe(&bob_id).events;
    let mut ada_phone = phone(gw, "ada", "ada-cancel-secret-1", &ada_mic).await;
    let mut bob_phone = phone(gw, "bob", "bob-cancel-secret-1", &bob_mic).await;
    // Carol's phone rings and waits for her.
    let mut carol_phone = Baresip::start_with_audio(
        gw.dir.path(),
        "carol",
        gw.sip,
        PhoneAccount { username: "carol", password: "carol-cancel-secret-1", answermode: "manual", register: true },
        &bob_mic,
    )
    .await;
    carol_phone.event("REGISTER_OK", 20).await;

    ada_phone.command("dial", &format!("sip:202@{}", gw.sip)).await;
    let first = ada_phone.first_of(&["CALL_ESTABLISHED", "CALL_CLOSED"], 20).await;
    assert_eq!(first["type"], "CALL_ESTABLISHED", "the call failed: {first}");
    bob_phone.event("CALL_ESTABLISHED", 10).await;
    let t0 = Instant::now();
    let id = call_reaching(&mut bob_events, CallState::Answered).await;
    let (status, problem) = api.post(&format!("/v1/calls/{id}/transfer/cancel"), &bob, None).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("no_transfer")));

    // The transfer waits for Carol; meanwhile it is cancelled.
    let request = {
        let (http, url, bob) = (api.http.clone(), format!("{}/v1/calls/{id}/transfer", api.base), bob.clone());
        tokio::spawn(async move {
            let r = http.post(url).bearer_auth(bob).json(&json!({"to": {"number": "203"}})).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        })
    };
    carol_phone.event("CALL_INCOMING", 20).await;
    let (status, problem) = api.post(&format!("/v1/calls/{id}/transfer"), &bob, Some(json!({"to": {"number": "203"}}))).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("transfer_in_progress")), "one at a time");
    let (status, view) = api.post(&format!("/v1/calls/{id}/transfer/cancel"), &bob, None).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let (status, problem) = tokio::time::timeout(Duration::from_secs(10), request).await.unwrap().unwrap();
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("transfer_failed")), "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("cancelled"), "{problem}");
    carol_phone.event("CALL_CLOSED", 10).await;

    // A warm transfer holds Ada while Carol rings; cancelled, Ada is back.
    let request = {
        let (http, url, bob) = (api.http.clone(), format!("{}/v1/calls/{id}/transfer", api.base), bob.clone());
        tokio::spawn(async move {
            let r = http.post(url).bearer_auth(bob).json(&json!({"to": {"user_id": carol_id}, "mode": "warm"})).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        })
    };
    carol_phone.event("CALL_INCOMING", 20).await;
    let (status, view) = api.post(&format!("/v1/calls/{id}/transfer/cancel"), &bob, None).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let (status, problem) = tokio::time::timeout(Duration::from_secs(10), request).await.unwrap().unwrap();
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("transfer_failed")), "{problem}");
    carol_phone.event("CALL_CLOSED", 10).await;
    let cancelled_at = t0.elapsed().as_secs_f64();

    // Still Bob's call, and Ada and Bob still hear each other.
    let (status, call) = api.get(&format!("/v1/calls/{id}"), &bob).await;
    assert_eq!((status, call["agent_user_id"].as_str(), call["state"].as_str()), (StatusCode::OK, Some(bob_id.as_str()), Some("answered")));
    tokio::time::sleep(Duration::from_secs(4)).await;
    ada_phone.command("hangup", "").await;
    ada_phone.event("CALL_CLOSED", 10).await;
    bob_phone.event("CALL_CLOSED", 10).await;
    let bob_heard = read_mono(&bob_phone.heard());
    let after = window(&bob_heard, cancelled_at + 0.5, cancelled_at + 3.5);
    let (like_ada, like_bob) = heard_like(after, &read_mono(&ada_mic), &read_mono(&bob_mic));
    assert!(like_ada > 0.6 && like_ada > like_bob + 0.15, "Bob still hears Ada after the cancel ({like_ada:.2} vs {like_bob:.2})");
    assert!(!requests_received(&ada_phone).iter().any(|m| m == "INVITE" || m == "BYE"), "Ada saw no SIP");
    assert_eq!(requests_received(&bob_phone).iter().filter(|m| *m == "BYE").count(), 1, "Bob was hung up only when Ada hung up");

    let events = gw.events_after_calls_ended(1).await;
    assert!(!events.iter().any(|(k, _)| k == "call.transferred"), "nothing was transferred");
    let held: Vec<i32> = events
        .iter()
        .filter_map(|(_, e)| match &e.kind {
            Some(Kind::MediaState(m)) => Some(m.held),
            _ => None,
        })
        .collect();
    assert_eq!(held, [pb::Leg::Caller as i32, pb::Leg::Unspecified as i32], "Ada held while Carol rang for the warm transfer, then resumed");
    assert_eq!(gw.metric("switchboard_call_transfers_total{kind=\"blind\",result=\"cancelled\"}").await, 1.0);
    assert_eq!(gw.metric("switchboard_call_transfers_total{kind=\"warm\",result=\"cancelled\"}").await, 1.0);
    for p in [ada_phone, bob_phone, carol_phone] {
        p.quit().await;
    }
    api.gw.stop().await;
}

/// Ada calls Bob, who starts a warm transfer to Carol: Ada hears the hold
/// music while Carol rings and while Bob and Carol talk; then Bob either
/// completes it (Ada and Carol talk, Bob is hung up) or cancels it (Carol
/// is hung up, Ada and Bob talk again). Ada's phone sees no SIP either way.
async fn warm_transfer(complete: bool) {
    use switchboard_gateway::media::player::Prompt;

    let api = Api::start().await;
    let gw = &api.gw;
    let audio = gw.subdir("audio");
    let ada_mic = speech(&audio, "ada", "Hello, this is Ada from accounts. I am calling about the invoice for March.", 10);
    let bob_mic = speech(&audio, "bob", "Bob speaking. Carol, I have a customer asking about the March invoice.", 10);
    let carol_mic = speech(&audio, "carol", "Carol in billing here. Sure, put her through, I have the invoice open.", 10);
    let ada_id = user(gw, "Ada", "201", None).await;
    device(gw, &ada_id, "ada", "ada-warm-secret-1").await;
    let bob_id = user(gw, "Bob", "202", None).await;
    device(gw, &bob_id, "bob", "bob-warm-secret-1").await;
    let carol_id = user(gw, "Carol", "203", None).await;
    device(gw, &carol_id, "carol", "carol-warm-secret-1").await;
    let (bob, carol) = (api.token(&bob_id).await, api.token(&carol_id).await);
    let mut bob_events = gw.live().subscribe(&bob_id).events;
    let mut carol_events = gw.live().subscribe(&carol_id).events;
    let mut ada_phone = phone(gw, "ada", "ada-warm-secret-1", &ada_mic).await;
    let mut bob_phone = phone(gw, "bob", "bob-warm-secret-1", &bob_mic).await;
    let mut carol_phone = phone(gw, "carol", "carol-warm-secret-1", &carol_mic).await;

    ada_phone.command("dial", &format!("sip:202@{}", gw.sip)).await;
    let first = ada_phone.first_of(&["CALL_ESTABLISHED", "CALL_CLOSED"], 20).await;
    assert_eq!(first["type"], "CALL_ESTABLISHED", "the call failed: {first}");
    bob_phone.event("CALL_ESTABLISHED", 10).await;
    let t0 = Instant::now();
    let since = || t0.elapsed().as_secs_f64();
    let id = call_reaching(&mut bob_events, CallState::Answered).await;
    let (status, problem) = api.post(&format!("/v1/calls/{id}/transfer/complete"), &bob, None).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("no_transfer")), "nothing to complete yet");
    tokio::time::sleep(Duration::from_secs(2)).await; // Ada and Bob talk first

    let consult_from = since();
    let (status, view) = api.post(&format!("/v1/calls/{id}/transfer"), &bob, Some(json!({"to": {"user_id": carol_id}, "mode": "warm"}))).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!((view["agent_user_id"].as_str(), view["held"].as_str()), (Some(bob_id.as_str()), Some("caller")), "still Bob's, Ada on hold: {view}");
    carol_phone.event("CALL_ESTABLISHED", 10).await;
    let consulting_at = since();
    tokio::time::sleep(Duration::from_secs(4)).await; // Bob and Carol talk

    let done_at = since();
    if complete {
        let (status, view) = api.post(&format!("/v1/calls/{id}/transfer/complete"), &bob, None).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        assert_eq!((view["agent_user_id"].as_str(), &view["held"]), (Some(carol_id.as_str()), &Value::Null), "{view}");
        bob_phone.event("CALL_CLOSED", 10).await;
        // The API answers before the handover is committed; Carol's stream
        // says when it is hers.
        stream_event(&mut carol_events, AgentEventKind::Transferred).await;
        let (status, call) = api.get(&format!("/v1/calls/{id}"), &carol).await;
        assert_eq!((status, call["agent_user_id"].as_str()), (StatusCode::OK, Some(carol_id.as_str())), "{call}");
    } else {
        let (status, view) = api.post(&format!("/v1/calls/{id}/transfer/cancel"), &bob, None).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        carol_phone.event("CALL_CLOSED", 10).await;
        let (status, call) = api.get(&format!("/v1/calls/{id}"), &bob).await;
        assert_eq!((status, call["agent_user_id"].as_str()), (StatusCode::OK, Some(bob_id.as_str())), "{call}");
    }
    tokio::time::sleep(Duration::from_secs(4)).await; // Ada talks with whoever has her now
    ada_phone.command("hangup", "").await;
    ada_phone.event("CALL_CLOSED", 10).await;
    let (mut stays, gone) = if complete { (carol_phone, bob_phone) } else { (bob_phone, carol_phone) };
    stays.event("CALL_CLOSED", 10).await;

    let received = requests_received(&ada_phone);
    assert!(!received.iter().any(|m| m == "INVITE" || m == "BYE"), "Ada's dialog saw no SIP: {received:?}");
    let (ada_said, bob_said, carol_said) = (read_mono(&ada_mic), read_mono(&bob_mic), read_mono(&carol_mic));
    let music: Vec<i16> = Prompt::bundled_hold_music().samples().to_vec();
    let ada_heard = read_mono(&ada_phone.heard());
    // While Carol rang and while Bob consulted her, Ada heard the music.
    let held = window(&ada_heard, consult_from + 0.5, done_at - 0.3);
    let (like_music, like_bob) = (similarity(held, &music), similarity(held, &bob_said));
    assert!(like_music > 0.6 && like_music > like_bob + 0.15, "held Ada hears the music ({like_music:.2}), not Bob ({like_bob:.2})");
    // Bob and Carol heard each other while consulting.
    let (bob_phone, carol_phone) = if complete { (gone, stays) } else { (stays, gone) };
    let bob_heard = read_mono(&bob_phone.heard());
    let (like_carol, like_ada) = heard_like(window(&bob_heard, consulting_at + 0.8, done_at - 0.3), &carol_said, &ada_said);
    assert!(like_carol > 0.6 && like_carol > like_ada + 0.15, "consulting Bob hears Carol ({like_carol:.2}), not Ada ({like_ada:.2})");
    let carol_heard = read_mono(&carol_phone.heard());
    let (like_bob, like_ada) = heard_like(window(&carol_heard, 0.8, done_at - consulting_at - 0.3), &bob_said, &ada_said);
    assert!(like_bob > 0.6 && like_bob > like_ada + 0.15, "consulted Carol hears Bob ({like_bob:.2}), not Ada ({like_ada:.2})");
    // Afterwards Ada talks with Carol (completed) or Bob again (cancelled).
    let after = window(&ada_heard, done_at + 1.0, done_at + 3.7);
    let (expected, other, who) = if complete { (&carol_said, &bob_said, "Carol") } else { (&bob_said, &carol_said, "Bob") };
    let (like_expected, like_other) = heard_like(after, expected, other);
    assert!(like_expected > 0.6 && like_expected > like_other + 0.15, "Ada hears {who} ({like_expected:.2} vs {like_other:.2})");

    let events = gw.events_after_calls_ended(1).await;
    let of_call: Vec<&(String, switchboard_proto::CallEvent)> = events.iter().filter(|(_, e)| e.call_id == id).collect();
    let transferred: Vec<pb::CallTransferred> = of_call
        .iter()
        .filter_map(|(_, e)| match &e.kind {
            Some(Kind::Transferred(t)) => Some(t.clone()),
            _ => None,
        })
        .collect();
    let held: Vec<i32> = of_call
        .iter()
        .filter_map(|(_, e)| match &e.kind {
            Some(Kind::MediaState(m)) => Some(m.held),
            _ => None,
        })
        .collect();
    assert_eq!(held, [pb::Leg::Caller as i32, pb::Leg::Unspecified as i32], "Ada held for the consultation, then resumed");
    if complete {
        assert_eq!(transferred.len(), 1);
        assert_eq!(transferred[0].kind, pb::TransferKind::Warm as i32);
        assert_eq!(transferred[0].from.as_ref().map(|a| a.user_id.as_str()), Some(bob_id.as_str()));
        assert_eq!(transferred[0].to.as_ref().map(|a| a.user_id.as_str()), Some(carol_id.as_str()));
        assert_eq!(requests_received(&bob_phone).iter().filter(|m| *m == "BYE").count(), 1, "Bob was hung up");
        assert_eq!(requests_received(&carol_phone).iter().filter(|m| *m == "INVITE").count(), 2, "Carol was moved onto the call's port");
        assert_eq!(gw.metric("switchboard_call_transfers_total{kind=\"warm\",result=\"completed\"}").await, 1.0);
    } else {
        assert!(transferred.is_empty(), "nothing was transferred");
        assert_eq!(requests_received(&carol_phone).iter().filter(|m| *m == "BYE").count(), 1, "Carol was hung up");
        assert_eq!(gw.metric("switchboard_call_transfers_total{kind=\"warm\",result=\"cancelled\"}").await, 1.0);
    }
    // Bob's phone was moved to the consultation and (cancelled) back.
    let bob_invites = requests_received(&bob_phone).iter().filter(|m| *m == "INVITE").count();
    assert_eq!(bob_invites, if complete { 2 } else { 3 }, "the call's INVITE, then re-INVITEs towards Bob");

    for p in [ada_phone, bob_phone, carol_phone] {
        p.quit().await;
    }
    api.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_transfer_consults_the_target_while_the_caller_hears_music_then_hands_over() {
    warm_transfer(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_warm_transfer_gives_the_caller_back_to_the_agent() {
    warm_transfer(false).await;
}

/// F16 on an agent's outbound call, where the agent's phone is the caller
/// (leg A, the gateway its UAS): Ada calls a customer out through the
/// trunk (a baresip phone answering as the carrier), then moves the call
/// to her second phone. Leg A is then carried by a dialog the gateway
/// placed; the customer's dialog sees nothing, and the two talk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_moves_its_outbound_call_and_the_far_end_notices_nothing() {
    const CUSTOMER: &str = "+442071234567";
    let workdir = tempfile::tempdir().unwrap();
    let audio = workdir.path().join("audio");
    std::fs::create_dir_all(&audio).unwrap();
    let customer_mic = speech(&audio, "customer", "Good morning, Northwind Traders, this is the customer speaking about my order.", 10);
    let desk_mic = speech(&audio, "desk", "Hello, Ada from Switchboard here, calling about the order you placed.", 10);
    let cell_mic = speech(&audio, "cell", "Ada again, from my mobile now, walking to the meeting room.", 10);
    // The far end answers calls for the customer's number; it never registers.
    let mut customer = Baresip::far_end(workdir.path(), CUSTOMER, &customer_mic).await;
    let carrier_at = customer.sip.to_string();
    let api = Api::start_with(move |c| support::trunk_to(c, carrier_at)).await;
    let gw = &api.gw;
    let ada_id = user(gw, "Ada", "201", None).await;
    gw.directory().assign_number("+14155550100", &ada_id).await.unwrap();
    let desk_device = device(gw, &ada_id, "ada-desk", "ada-desk-secret-2").await;
    let ada = api.token(&ada_id).await;
    let mut ada_events = gw.live().subscribe(&ada_id).events;
    let mut desk = phone(gw, "ada-desk", "ada-desk-secret-2", &desk_mic).await;

    desk.command("dial", &format!("sip:{CUSTOMER}@{}", gw.sip)).await;
    let first = desk.first_of(&["CALL_ESTABLISHED", "CALL_CLOSED"], 20).await;
    assert_eq!(first["type"], "CALL_ESTABLISHED", "the call failed: {first}");
    customer.event("CALL_ESTABLISHED", 10).await;
    let t0 = Instant::now();
    let id = call_reaching(&mut ada_events, CallState::Answered).await;
    let (status, call) = api.get(&format!("/v1/calls/{id}"), &ada).await;
    assert_eq!((status, call["direction"].as_str(), call["agent_user_id"].as_str()), (StatusCode::OK, Some("outbound"), Some(ada_id.as_str())));

    let cell_device = device(gw, &ada_id, "ada-cell", "ada-cell-secret-2").await;
    let mut cell = phone(gw, "ada-cell", "ada-cell-secret-2", &cell_mic).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // talk on the desk phone first
    let (status, view) = api.post(&format!("/v1/calls/{id}/move"), &ada, Some(json!({"device_id": cell_device}))).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let moved_at = t0.elapsed().as_secs_f64();
    let incoming = cell.event("CALL_ESTABLISHED", 10).await;
    assert_eq!(incoming["direction"], "incoming", "the gateway calls the second phone: {incoming}");
    desk.event("CALL_CLOSED", 10).await;
    stream_event(&mut ada_events, AgentEventKind::Transferred).await;

    tokio::time::sleep(Duration::from_secs(4)).await; // talk on the second phone
    // The second phone, now leg A, hangs up: the far end gets the BYE.
    cell.command("hangup", "").await;
    cell.event("CALL_CLOSED", 10).await;
    customer.event("CALL_CLOSED", 10).await;

    let received = requests_received(&customer);
    assert_eq!(received, ["INVITE", "ACK", "BYE"], "the far end saw its call and the final BYE, nothing between");
    assert_eq!(requests_received(&desk).iter().filter(|m| *m == "BYE").count(), 1, "the desk phone was hung up");
    let (customer_said, desk_said, cell_said) = (read_mono(&customer_mic), read_mono(&desk_mic), read_mono(&cell_mic));
    let cell_heard = read_mono(&cell.heard());
    let (like_customer, like_desk) = heard_like(window(&cell_heard, 0.5, 3.5), &customer_said, &desk_said);
    assert!(like_customer > 0.6 && like_customer > like_desk + 0.15, "the second phone hears the customer ({like_customer:.2} vs {like_desk:.2})");
    let customer_heard = read_mono(&customer.heard());
    let (like_cell, like_desk) = heard_like(window(&customer_heard, moved_at + 0.8, moved_at + 3.8), &cell_said, &desk_said);
    assert!(like_cell > 0.6 && like_cell > like_desk + 0.15, "the customer hears the second phone ({like_cell:.2} vs {like_desk:.2})");

    let events = gw.events_after_calls_ended(1).await;
    let of_call: Vec<&(String, switchboard_proto::CallEvent)> = events.iter().filter(|(_, e)| e.call_id == id).collect();
    let moved = of_call
        .iter()
        .find_map(|(_, e)| match &e.kind {
            Some(Kind::Transferred(t)) => Some(t.clone()),
            _ => None,
        })
        .expect("a call.transferred event");
    assert_eq!(moved.kind, pb::TransferKind::Move as i32);
    assert_eq!(moved.from.as_ref().map(|a| a.device_id.as_str()), Some(desk_device.as_str()));
    assert_eq!(moved.to.as_ref().map(|a| (a.user_id.as_str(), a.device_id.as_str())), Some((ada_id.as_str(), cell_device.as_str())));
    let ended = of_call
        .iter()
        .find_map(|(_, e)| match &e.kind {
            Some(Kind::Ended(end)) => Some(end.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(ended.hangup_by, "caller", "the agent's side (leg A) hung up");

    for p in [desk, cell, customer] {
        p.quit().await;
    }
    api.gw.stop().await;
}

/// F4: Bob parks Ada's call; Ada hears the music while her call waits in
/// slot 1 (Bob's phone is hung up), every agent sees the slot, and Carol
/// retrieves it: her phone rings, she talks with Ada and has the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_call_waits_with_music_until_another_agent_retrieves_it() {
    use switchboard_gateway::media::player::Prompt;

    let api = Api::start().await;
    let gw = &api.gw;
    let audio = gw.subdir("audio");
    let ada_mic = speech(&audio, "ada", "Hello, this is Ada from accounts. I am calling about the invoice for March.", 10);
    let bob_mic = speech(&audio, "bob", "Bob speaking. I will park you, a colleague picks you up in a moment.", 10);
    let carol_mic = speech(&audio, "carol", "Carol here, I picked up your call from the park slot.", 10);
    let ada_id = user(gw, "Ada", "201", None).await;
    device(gw, &ada_id, "ada", "ada-park-secret-1").await;
    let bob_id = user(gw, "Bob", "202", None).await;
    device(gw, &bob_id, "bob", "bob-park-secret-1").await;
    let carol_id = user(gw, "Carol", "203", None).await;
    device(gw, &carol_id, "carol", "carol-park-secret-1").await;
    let (bob, carol) = (api.token(&bob_id).await, api.token(&carol_id).await);
    let mut bob_events = gw.live().subscribe(&bob_id).events;
    let mut carol_events = gw.live().subscribe(&carol_id).events;
    let mut ada_phone = phone(gw, "ada", "ada-park-secret-1", &ada_mic).await;
    let mut bob_phone = phone(gw, "bob", "bob-park-secret-1", &bob_mic).await;
    let mut carol_phone = phone(gw, "carol", "carol-park-secret-1", &carol_mic).await;

    ada_phone.command("dial", &format!("sip:202@{}", gw.sip)).await;
    let first = ada_phone.first_of(&["CALL_ESTABLISHED", "CALL_CLOSED"], 20).await;
    assert_eq!(first["type"], "CALL_ESTABLISHED", "the call failed: {first}");
    bob_phone.event("CALL_ESTABLISHED", 10).await;
    let t0 = Instant::now();
    let id = call_reaching(&mut bob_events, CallState::Answered).await;
    let (status, problem) = api.post(&format!("/v1/calls/{id}/park"), &carol, None).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::NOT_FOUND, Some("call_not_found")), "only Bob parks his call");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let parked_at = t0.elapsed().as_secs_f64();
    let (status, parked) = api.post(&format!("/v1/calls/{id}/park"), &bob, None).await;
    assert_eq!(status, StatusCode::OK, "{parked}");
    assert_eq!((parked["slot"].as_u64(), parked["call_id"].as_str(), parked["parked_by"].as_str()), (Some(1), Some(id.as_str()), Some(bob_id.as_str())));
    bob_phone.event("CALL_CLOSED", 10).await;
    let seen = stream_event(&mut bob_events, AgentEventKind::Parked).await;
    assert_eq!(seen.id, id);
    let (status, problem) = api.post(&format!("/v1/calls/{id}/park"), &bob, None).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("call_parked")));
    let (status, problem) = api.post(&format!("/v1/calls/{id}/move"), &bob, Some(json!({}))).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("call_parked")), "a parked call is retrieved, not moved");

    // Every agent sees the slot; an empty slot is a 404.
    let (status, list) = api.get("/v1/parked", &carol).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["parked"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!((list["parked"][0]["slot"].as_u64(), list["parked"][0]["call_id"].as_str()), (Some(1), Some(id.as_str())));
    let (status, problem) = api.post("/v1/parked/7/retrieve", &carol, None).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::NOT_FOUND, Some("park_slot_empty")));
    tokio::time::sleep(Duration::from_secs(3)).await; // Ada waits with the music

    let retrieved_at = t0.elapsed().as_secs_f64();
    let (status, view) = api.post("/v1/parked/1/retrieve", &carol, None).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!((view["id"].as_str(), view["agent_user_id"].as_str()), (Some(id.as_str()), Some(carol_id.as_str())));
    carol_phone.event("CALL_ESTABLISHED", 10).await;
    let seen = stream_event(&mut carol_events, AgentEventKind::Transferred).await;
    assert_eq!(seen.agent_user_id.as_deref(), Some(carol_id.as_str()));
    let (_, list) = api.get("/v1/parked", &carol).await;
    assert_eq!(list["parked"], json!([]), "the slot is free again");
    let (status, _) = api.get(&format!("/v1/calls/{id}"), &bob).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "Bob no longer has the call");

    tokio::time::sleep(Duration::from_secs(4)).await; // Ada and Carol talk
    ada_phone.command("hangup", "").await;
    ada_phone.event("CALL_CLOSED", 10).await;
    carol_phone.event("CALL_CLOSED", 10).await;

    let received = requests_received(&ada_phone);
    assert!(!received.iter().any(|m| m == "INVITE" || m == "BYE"), "Ada's dialog saw no SIP: {received:?}");
    let (ada_said, bob_said, carol_said) = (read_mono(&ada_mic), read_mono(&bob_mic), read_mono(&carol_mic));
    let music: Vec<i16> = Prompt::bundled_hold_music().samples().to_vec();
    let ada_heard = read_mono(&ada_phone.heard());
    let waiting = window(&ada_heard, parked_at + 0.5, retrieved_at - 0.3);
    let (like_music, like_bob) = (similarity(waiting, &music), similarity(waiting, &bob_said));
    assert!(like_music > 0.6 && like_music > like_bob + 0.15, "parked Ada hears the music ({like_music:.2}), not Bob ({like_bob:.2})");
    let (like_carol, like_bob) = heard_like(window(&ada_heard, retrieved_at + 1.0, retrieved_at + 3.7), &carol_said, &bob_said);
    assert!(like_carol > 0.6 && like_carol > like_bob + 0.15, "Ada hears Carol ({like_carol:.2} vs {like_bob:.2})");
    let carol_heard = read_mono(&carol_phone.heard());
    let (like_ada, like_bob) = heard_like(window(&carol_heard, 0.5, 3.5), &ada_said, &bob_said);
    assert!(like_ada > 0.6 && like_ada > like_bob + 0.15, "Carol hears Ada ({like_ada:.2} vs {like_bob:.2})");

    let events = gw.events_after_calls_ended(1).await;
    let of_call: Vec<&(String, switchboard_proto::CallEvent)> = events.iter().filter(|(_, e)| e.call_id == id).collect();
    let parked = of_call
        .iter()
        .find_map(|(_, e)| match &e.kind {
            Some(Kind::Parked(p)) => Some(p.clone()),
            _ => None,
        })
        .expect("a call.parked event");
    assert_eq!((parked.slot, parked.by.as_ref().map(|a| a.user_id.as_str())), (1, Some(bob_id.as_str())));
    let retrieved = of_call
        .iter()
        .find_map(|(_, e)| match &e.kind {
            Some(Kind::Transferred(t)) => Some(t.clone()),
            _ => None,
        })
        .expect("a call.transferred event");
    assert_eq!(retrieved.kind, pb::TransferKind::Park as i32);
    assert_eq!(retrieved.from.as_ref().map(|a| a.user_id.as_str()), Some(bob_id.as_str()));
    assert_eq!(retrieved.to.as_ref().map(|a| a.user_id.as_str()), Some(carol_id.as_str()));
    let kinds: Vec<&str> = of_call.iter().map(|(k, _)| k.as_str()).collect();
    let (p, t) = (kinds.iter().position(|k| *k == "call.parked").unwrap(), kinds.iter().position(|k| *k == "call.transferred").unwrap());
    assert!(p < t, "{kinds:?}");
    let agent: Option<String> = switchboard_store::sqlx::query_scalar("SELECT agent_user_id FROM calls WHERE id = $1")
        .bind(id.as_str())
        .fetch_one(gw.db.pool())
        .await
        .unwrap();
    assert_eq!(agent.as_deref(), Some(carol_id.as_str()));
    assert_eq!(gw.metric("switchboard_call_transfers_total{kind=\"park\",result=\"completed\"}").await, 1.0);
    assert_eq!(gw.metric("switchboard_calls_parked_total").await, 1.0);

    for p in [ada_phone, bob_phone, carol_phone] {
        p.quit().await;
    }
    api.gw.stop().await;
}

/// F4: a parked call nobody retrieves within `sip.park_timeout_secs` rings
/// the agent who parked it, who talks with the caller again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_call_nobody_retrieves_rings_the_agent_back() {
    let api = Api::start_with(|c| c.sip.park_timeout_secs = 2).await;
    let gw = &api.gw;
    let audio = gw.subdir("audio");
    let ada_mic = speech(&audio, "ada", "Hello, this is Ada from accounts. I am calling about the invoice for March.", 10);
    let bob_mic = speech(&audio, "bob", "Bob speaking. I will park you for a moment, please hold on.", 10);
    let ada_id = user(gw, "Ada", "201", None).await;
    device(gw, &ada_id, "ada", "ada-park-secret-2").await;
    let bob_id = user(gw, "Bob", "202", None).await;
    device(gw, &bob_id, "bob", "bob-park-secret-2").await;
    let bob = api.token(&bob_id).await;
    let mut bob_events = gw.live().subscribe(&bob_id).events;
    let mut ada_phone = phone(gw, "ada", "ada-park-secret-2", &ada_mic).await;
    let mut bob_phone = phone(gw, "bob", "bob-park-secret-2", &bob_mic).await;

    ada_phone.command("dial", &format!("sip:202@{}", gw.sip)).await;
    let first = ada_phone.first_of(&["CALL_ESTABLISHED", "CALL_CLOSED"], 20).await;
    assert_eq!(first["type"], "CALL_ESTABLISHED", "the call failed: {first}");
    bob_phone.event("CALL_ESTABLISHED", 10).await;
    let id = call_reaching(&mut bob_events, CallState::Answered).await;
    let (status, parked) = api.post(&format!("/v1/calls/{id}/park"), &bob, None).await;
    assert_eq!(status, StatusCode::OK, "{parked}");
    bob_phone.event("CALL_CLOSED", 10).await;
    // Two seconds later Bob's phone rings again, and answers.
    let again = bob_phone.event("CALL_ESTABLISHED", 15).await;
    assert_eq!(again["direction"], "incoming");
    let seen = stream_event(&mut bob_events, AgentEventKind::Transferred).await;
    assert_eq!((seen.id.as_str(), seen.agent_user_id.as_deref()), (id.as_str(), Some(bob_id.as_str())));
    tokio::time::sleep(Duration::from_secs(4)).await;
    ada_phone.command("hangup", "").await;
    ada_phone.event("CALL_CLOSED", 10).await;
    bob_phone.event("CALL_CLOSED", 10).await;

    let bob_heard = read_mono(&bob_phone.heard());
    let (like_ada, like_bob) = heard_like(window(&bob_heard, 0.5, 3.5), &read_mono(&ada_mic), &read_mono(&bob_mic));
    assert!(like_ada > 0.6 && like_ada > like_bob + 0.15, "rung back, Bob hears Ada ({like_ada:.2} vs {like_bob:.2})");
    assert!(!requests_received(&ada_phone).iter().any(|m| m == "INVITE" || m == "BYE"), "Ada's dialog saw no SIP");
    let events = gw.events_after_calls_ended(1).await;
    let back = events
        .iter()
        .filter(|(_, e)| e.call_id == id)
        .find_map(|(_, e)| match &e.kind {
            Some(Kind::Transferred(t)) => Some(t.clone()),
            _ => None,
        })
        .expect("a call.transferred event");
    assert_eq!(back.kind, pb::TransferKind::Park as i32);
    assert_eq!(back.to.as_ref().map(|a| a.user_id.as_str()), Some(bob_id.as_str()), "rung back to Bob");
    for p in [ada_phone, bob_phone] {
        p.quit().await;
    }
    api.gw.stop().await;
}

/// F8 to an outside number: Bob hands Ada's call to +44 20 7123 4567 through
/// the trunk (a baresip phone answering as the carrier), which is shown
/// Bob's own number. Once it answers, Ada talks with it, Bob is released
/// and the call has no agent any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blind_transfer_to_an_outside_number_leaves_through_the_trunk() {
    const OUTSIDE: &str = "+442071234567";
    let workdir = tempfile::tempdir().unwrap();
    let audio = workdir.path().join("audio");
    std::fs::create_dir_all(&audio).unwrap();
    let ada_mic = speech(&audio, "ada", "Hello, this is Ada from accounts. I am calling about the invoice for March.", 10);
    let bob_mic = speech(&audio, "bob", "Bob speaking. Our supplier can answer that, I will put you through.", 10);
    let outside_mic = speech(&audio, "outside", "Good morning, Northwind Traders, how can I help you today?", 10);
    let mut outside = Baresip::far_end(workdir.path(), OUTSIDE, &outside_mic).await;
    let carrier_at = outside.sip.to_string();
    let api = Api::start_with(move |c| support::trunk_to(c, carrier_at)).await;
    let gw = &api.gw;
    let ada_id = user(gw, "Ada", "201", None).await;
    device(gw, &ada_id, "ada", "ada-out-secret-1").await;
    let bob_id = user(gw, "Bob", "202", None).await;
    device(gw, &bob_id, "bob", "bob-out-secret-1").await;
    gw.directory().assign_number("+14155550102", &bob_id).await.unwrap();
    let bob = api.token(&bob_id).await;
    let mut bob_events = gw.live().subscribe(&bob_id).events;
    let mut ada_phone = phone(gw, "ada", "ada-out-secret-1", &ada_mic).await;
    let mut bob_phone = phone(gw, "bob", "bob-out-secret-1", &bob_mic).await;

    ada_phone.command("dial", &format!("sip:202@{}", gw.sip)).await;
    let first = ada_phone.first_of(&["CALL_ESTABLISHED", "CALL_CLOSED"], 20).await;
    assert_eq!(first["type"], "CALL_ESTABLISHED", "the call failed: {first}");
    bob_phone.event("CALL_ESTABLISHED", 10).await;
    let t0 = Instant::now();
    let id = call_reaching(&mut bob_events, CallState::Answered).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (status, view) = api.post(&format!("/v1/calls/{id}/transfer"), &bob, Some(json!({"to": {"number": OUTSIDE}}))).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["agent_user_id"], Value::Null, "no agent of the company has the call now");
    let transferred_at = t0.elapsed().as_secs_f64();
    outside.event("CALL_ESTABLISHED", 10).await;
    bob_phone.event("CALL_CLOSED", 10).await;
    let seen = stream_event(&mut bob_events, AgentEventKind::Transferred).await;
    assert_eq!(seen.agent_user_id, None);
    let (_, list) = api.get("/v1/calls", &bob).await;
    assert_eq!(list["calls"], json!([]), "gone from Bob's list");

    tokio::time::sleep(Duration::from_secs(4)).await;
    ada_phone.command("hangup", "").await;
    ada_phone.event("CALL_CLOSED", 10).await;
    outside.event("CALL_CLOSED", 10).await;

    let invite = messages_received(&outside).into_iter().find(|m| m.starts_with("INVITE ")).expect("the outside party got an INVITE");
    assert!(invite.starts_with(&format!("INVITE sip:{OUTSIDE}@")), "{invite}");
    let from = invite.lines().find(|l| l.to_ascii_lowercase().starts_with("from:")).unwrap_or_default();
    assert!(from.contains("+14155550102"), "shown Bob's number, not his extension: {from}");
    assert!(!requests_received(&ada_phone).iter().any(|m| m == "INVITE" || m == "BYE"), "Ada's dialog saw no SIP");
    let (ada_said, bob_said, outside_said) = (read_mono(&ada_mic), read_mono(&bob_mic), read_mono(&outside_mic));
    let outside_heard = read_mono(&outside.heard());
    let (like_ada, like_bob) = heard_like(window(&outside_heard, 0.5, 3.5), &ada_said, &bob_said);
    assert!(like_ada > 0.6 && like_ada > like_bob + 0.15, "the outside party hears Ada ({like_ada:.2} vs {like_bob:.2})");
    let ada_heard = read_mono(&ada_phone.heard());
    let (like_outside, like_bob) = heard_like(window(&ada_heard, transferred_at + 0.8, transferred_at + 3.8), &outside_said, &bob_said);
    assert!(like_outside > 0.6 && like_outside > like_bob + 0.15, "Ada hears the outside party ({like_outside:.2} vs {like_bob:.2})");

    let events = gw.events_after_calls_ended(1).await;
    let transfer = events
        .iter()
        .filter(|(_, e)| e.call_id == id)
        .find_map(|(_, e)| match &e.kind {
            Some(Kind::Transferred(t)) => Some(t.clone()),
            _ => None,
        })
        .expect("a call.transferred event");
    assert_eq!((transfer.kind, transfer.to_number.as_str(), transfer.to.is_none()), (pb::TransferKind::Blind as i32, OUTSIDE, true));
    let agent: Option<String> = switchboard_store::sqlx::query_scalar("SELECT agent_user_id FROM calls WHERE id = $1")
        .bind(id.as_str())
        .fetch_one(gw.db.pool())
        .await
        .unwrap();
    assert_eq!(agent, None, "the call left the company");
    for p in [ada_phone, bob_phone, outside] {
        p.quit().await;
    }
    api.gw.stop().await;
}

/// F8 to a group: both members' phones ring while Bob still talks to Ada;
/// Carol answers first, so Dave's phone stops ringing, and Carol has the
/// call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_a_group_rings_every_member_and_the_first_to_answer_takes_it() {
    use switchboard_gateway::directory::NewGroup;

    let api = Api::start().await;
    let gw = &api.gw;
    let audio = gw.subdir("audio");
    let mic = speech(&audio, "any", "Hello, I would like to speak with billing please.", 10);
    let ada_id = user(gw, "Ada", "201", None).await;
    device(gw, &ada_id, "ada", "ada-group-secret-1").await;
    let bob_id = user(gw, "Bob", "202", None).await;
    device(gw, &bob_id, "bob", "bob-group-secret-1").await;
    let carol_id = user(gw, "Carol", "203", None).await;
    device(gw, &carol_id, "carol", "carol-group-secret-1").await;
    let dave_id = user(gw, "Dave", "204", None).await;
    device(gw, &dave_id, "dave", "dave-group-secret-1").await;
    let directory = gw.directory();
    let billing = directory.create_group(NewGroup { name: "Billing".into(), extension: Some("250".into()) }).await.unwrap();
    directory.add_group_member(&billing.id, &carol_id).await.unwrap();
    directory.add_group_member(&billing.id, &dave_id).await.unwrap();
    let bob = api.token(&bob_id).await;
    let mut bob_events = gw.live().subscribe(&bob_id).events;
    let mut ada_phone = phone(gw, "ada", "ada-group-secret-1", &mic).await;
    let mut bob_phone = phone(gw, "bob", "bob-group-secret-1", &mic).await;
    let mut dave_phone = Baresip::start_with_audio(
        gw.dir.path(),
        "dave",
        gw.sip,
        PhoneAccount { username: "dave", password: "dave-group-secret-1", answermode: "manual", register: true },
        &mic,
    )
    .await;
    dave_phone.event("REGISTER_OK", 20).await;
    let mut carol_phone = Baresip::start_with_audio(
        gw.dir.path(),
        "carol",
        gw.sip,
        PhoneAccount { username: "carol", password: "carol-group-secret-1", answermode: "manual", register: true },
        &mic,
    )
    .await;
    carol_phone.event("REGISTER_OK", 20).await;

    ada_phone.command("dial", &format!("sip:202@{}", gw.sip)).await;
    let first = ada_phone.first_of(&["CALL_ESTABLISHED", "CALL_CLOSED"], 20).await;
    assert_eq!(first["type"], "CALL_ESTABLISHED", "the call failed: {first}");
    bob_phone.event("CALL_ESTABLISHED", 10).await;
    let id = call_reaching(&mut bob_events, CallState::Answered).await;

    let request = {
        let (http, url, bob) = (api.http.clone(), format!("{}/v1/calls/{id}/transfer", api.base), bob.clone());
        tokio::spawn(async move {
            let r = http.post(url).bearer_auth(bob).json(&json!({"to": {"number": "250"}})).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        })
    };
    carol_phone.event("CALL_INCOMING", 20).await;
    dave_phone.event("CALL_INCOMING", 20).await;
    carol_phone.command("accept", "").await;
    let (status, view) = tokio::time::timeout(Duration::from_secs(10), request).await.unwrap().unwrap();
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["agent_user_id"], carol_id.as_str(), "Carol answered first");
    carol_phone.event("CALL_ESTABLISHED", 10).await;
    dave_phone.event("CALL_CLOSED", 10).await;
    bob_phone.event("CALL_CLOSED", 10).await;
    assert_eq!(requests_received(&dave_phone).iter().filter(|m| *m == "CANCEL").count(), 1, "Dave's phone was cancelled");

    ada_phone.command("hangup", "").await;
    ada_phone.event("CALL_CLOSED", 10).await;
    carol_phone.event("CALL_CLOSED", 10).await;
    let events = gw.events_after_calls_ended(1).await;
    let transfer = events
        .iter()
        .filter(|(_, e)| e.call_id == id)
        .find_map(|(_, e)| match &e.kind {
            Some(Kind::Transferred(t)) => Some(t.clone()),
            _ => None,
        })
        .expect("a call.transferred event");
    assert_eq!(transfer.to.as_ref().map(|a| a.user_id.as_str()), Some(carol_id.as_str()));
    for p in [ada_phone, bob_phone, carol_phone, dave_phone] {
        p.quit().await;
    }
    api.gw.stop().await;
}
