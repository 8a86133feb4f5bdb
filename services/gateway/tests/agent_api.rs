//! The agent API over real HTTP against a running gateway: the OpenAPI
//! document, authentication and every denial, problem details, CORS,
//! limits, idempotency, settings, caller IDs and the directory.

mod support;

use std::time::Duration;

use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};
use support::TestGateway;
use switchboard_gateway::api::auth::seal::Sealer;
use switchboard_gateway::api::auth::Sessions;
use switchboard_gateway::directory::NewUser;

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const LIGHTNING: &str = "https://acme.lightning.force.com";

struct Api {
    gw: TestGateway,
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn start(tune: impl FnOnce(&mut switchboard_gateway::config::GatewayConfig)) -> Api {
        let gw = TestGateway::start(|c| {
            c.auth.token_key = Some(KEY.into());
            c.auth.allowed_origins = vec![LIGHTNING.into()];
            tune(c);
        })
        .await;
        let base = format!("http://{}", gw.http);
        Api { gw, http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(), base }
    }

    fn sessions(&self, ttl: Duration) -> Sessions {
        Sessions::new(self.gw.db.clone(), Sealer::from_base64(KEY).unwrap(), ttl)
    }

    /// A user with a session; answers (user id, bearer token).
    async fn agent(&self, name: &str) -> (String, String) {
        let user = self.gw.directory().create_user(NewUser { name: name.into(), ..Default::default() }).await.unwrap();
        let (token, _) = self.sessions(Duration::from_secs(3600)).create(&user.id, None).await.unwrap();
        (user.id, token)
    }

    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        let bytes = r.bytes().await.unwrap();
        let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into())) };
        (status, headers, value)
    }
}

/// The id of the first call of `user_id` to reach `state`, awaited on the
/// user's live event stream (what the softphone receives).
async fn call_reaching(events: &mut switchboard_gateway::calls::live::AgentEvents, state: switchboard_gateway::calls::live::CallState) -> String {
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

fn assert_problem(status: StatusCode, headers: &reqwest::header::HeaderMap, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["type"], format!("/problems/{code}"));
    assert_eq!(body["status"], want.as_u16());
    assert!(body["detail"].as_str().is_some_and(|d| d.len() > 10), "a detail for people: {body}");
}

/// Every operation of the document, with its path's parameters filled in.
fn operations(doc: &Value) -> Vec<(Method, String, bool)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let m: Method = method.to_uppercase().parse().unwrap();
            let secured = op.get("security").is_some_and(|s| s.as_array().is_some_and(|a| !a.is_empty()));
            out.push((m, path.replace("{id}", "01938c1e-7f7a-7bd1-a3c4-2f1b6f0b9e11"), secured));
        }
    }
    out
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_every_secured_route_refuses_without_a_session() {
    let api = Api::start(|_| {}).await;
    let (status, _, doc) = api.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "OpenAPI 3.1: {}", doc["openapi"]);
    for path in ["/v1/me", "/v1/me/settings", "/v1/calls", "/v1/calls/{id}/hold", "/v1/calls/{id}/dtmf", "/v1/events", "/v1/auth/salesforce/login"] {
        assert!(doc["paths"].get(path).is_some(), "{path} is documented");
    }
    assert!(doc["components"]["schemas"].get("Problem").is_some());
    assert!(doc["components"]["securitySchemes"].get("session").is_some());
    let ops = operations(&doc);
    assert!(ops.len() >= 20, "{} operations", ops.len());
    for (method, path, secured) in ops {
        if !secured {
            continue;
        }
        for token in [None, Some("sbs_not-a-session"), Some("Basic abc")] {
            let (status, headers, body) = api.call(method.clone(), &path, token, Some(json!({}))).await;
            assert_problem(status, &headers, &body, StatusCode::UNAUTHORIZED, "unauthorized");
            assert!(headers[header::WWW_AUTHENTICATE].to_str().unwrap().starts_with("Bearer"), "{method} {path}");
        }
    }
    api.gw.stop().await;
}

#[tokio::test]
async fn sessions_expire_and_end_at_sign_out() {
    let api = Api::start(|_| {}).await;
    let (user_id, token) = api.agent("Ada").await;
    let (status, _, me) = api.call(Method::GET, "/v1/me", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["user_id"], user_id);
    assert_eq!(me["role"], "agent");
    assert_eq!(me["salesforce_connected"], false);

    let (status, _, _) = api.call(Method::POST, "/v1/auth/logout", Some(&token), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, headers, body) = api.call(Method::GET, "/v1/me", Some(&token), None).await;
    assert_problem(status, &headers, &body, StatusCode::UNAUTHORIZED, "unauthorized");

    // A session whose time is up is refused like an unknown one.
    let (short, _) = api.sessions(Duration::ZERO).create(&user_id, None).await.unwrap();
    let (status, headers, body) = api.call(Method::GET, "/v1/me", Some(&short), None).await;
    assert_problem(status, &headers, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    api.gw.stop().await;
}

#[tokio::test]
async fn settings_round_trip_and_bad_input_is_a_problem() {
    let api = Api::start(|_| {}).await;
    let (_, token) = api.agent("Ada").await;
    let (status, _, s) = api.call(Method::GET, "/v1/me/settings", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s, json!({"privacy_mode": false, "open_task_after_call": true, "call_relation": "none"}));
    let new = json!({"privacy_mode": true, "open_task_after_call": false, "call_relation": "opportunity"});
    let (status, _, s) = api.call(Method::PUT, "/v1/me/settings", Some(&token), Some(new.clone())).await;
    assert_eq!((status, &s), (StatusCode::OK, &new));
    let (_, _, me) = api.call(Method::GET, "/v1/me", Some(&token), None).await;
    assert_eq!(me["settings"], new);
    // Another agent's settings are its own.
    let (_, other) = api.agent("Grace").await;
    let (_, _, s) = api.call(Method::GET, "/v1/me/settings", Some(&other), None).await;
    assert_eq!(s["privacy_mode"], false);

    let (status, headers, body) =
        api.call(Method::PUT, "/v1/me/settings", Some(&token), Some(json!({"privacy_mode": "yes", "open_task_after_call": true, "call_relation": "none"}))).await;
    assert_problem(status, &headers, &body, StatusCode::BAD_REQUEST, "invalid_json");
    let (status, headers, body) =
        api.call(Method::PUT, "/v1/me/settings", Some(&token), Some(json!({"privacy_mode": true, "open_task_after_call": true, "call_relation": "lead"}))).await;
    assert_problem(status, &headers, &body, StatusCode::BAD_REQUEST, "invalid_json");
    let r = api.http.put(format!("{}/v1/me/settings", api.base)).bearer_auth(&token).body("{}").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    api.gw.stop().await;
}

#[tokio::test]
async fn caller_ids_and_the_directory_pages_through_everyone() {
    let api = Api::start(|_| {}).await;
    let dir = api.gw.directory();
    let (ada, token) = api.agent("Ada Lovelace").await;
    dir.assign_number("+14155550101", &ada).await.unwrap();
    for i in 0..7 {
        dir.create_user(NewUser { name: format!("Agent {i}"), extension: Some(format!("2{i}0")), ..Default::default() }).await.unwrap();
    }
    let (status, _, ids) = api.call(Method::GET, "/v1/me/caller-ids", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids, json!({"caller_ids": ["+14155550101"], "default": "+14155550101"}));

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/directory?limit=3&cursor={c}"),
            None => "/v1/directory?limit=3".into(),
        };
        let (status, _, page) = api.call(Method::GET, &q, Some(&token), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for e in page["entries"].as_array().unwrap() {
            seen.push(e["name"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 8, "every user exactly once across pages: {seen:?}");
    let mut sorted = seen.clone();
    sorted.sort_by_key(|s| s.to_lowercase());
    assert_eq!(seen, sorted);

    let (_, _, page) = api.call(Method::GET, "/v1/directory?q=lovelace", Some(&token), None).await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 1);
    assert_eq!(page["entries"][0]["numbers"], json!(["+14155550101"]));
    let (_, _, page) = api.call(Method::GET, "/v1/directory?q=230", Some(&token), None).await;
    assert_eq!(page["entries"][0]["name"], "Agent 3", "by extension");
    let (status, headers, body) = api.call(Method::GET, "/v1/directory?limit=0", Some(&token), None).await;
    assert_problem(status, &headers, &body, StatusCode::BAD_REQUEST, "invalid_limit");
    api.gw.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer_and_refuses_a_different_request() {
    let api = Api::start(|_| {}).await;
    let (_, token) = api.agent("Ada").await;
    let put = |body: Value, key: &str| {
        api.http.put(format!("{}/v1/me/settings", api.base)).bearer_auth(&token).header("Idempotency-Key", key).json(&body).send()
    };
    let first = json!({"privacy_mode": true, "open_task_after_call": true, "call_relation": "case"});
    let r = put(first.clone(), "k-1").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("idempotent-replayed").is_none());
    // Changed meanwhile without a key…
    let other = json!({"privacy_mode": false, "open_task_after_call": true, "call_relation": "none"});
    assert_eq!(api.call(Method::PUT, "/v1/me/settings", Some(&token), Some(other.clone())).await.0, StatusCode::OK);
    // …a repeat of the first request answers as the first time and does not act again.
    let r = put(first.clone(), "k-1").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(r.json::<Value>().await.unwrap(), first);
    let (_, _, now) = api.call(Method::GET, "/v1/me/settings", Some(&token), None).await;
    assert_eq!(now, other, "the replay changed nothing");
    // The same key for another body is refused.
    let r = put(other.clone(), "k-1").await.unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "idempotency_key_reused");
    // Keys belong to their user: another agent's k-1 is its own.
    let (_, grace) = api.agent("Grace").await;
    let r = api.http.put(format!("{}/v1/me/settings", api.base)).bearer_auth(&grace).header("Idempotency-Key", "k-1").json(&other).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("idempotent-replayed").is_none());
    api.gw.stop().await;
}

#[tokio::test]
async fn cors_admits_only_configured_origins_and_limits_hold() {
    let api = Api::start(|c| {
        c.auth.rate_limit_per_minute = 20;
        c.http.max_body_bytes = 2048;
    })
    .await;
    let (_, token) = api.agent("Ada").await;
    let preflight = |origin: &str| {
        api.http
            .request(Method::OPTIONS, format!("{}/v1/me/settings", api.base))
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "PUT")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization,content-type,idempotency-key")
            .send()
    };
    let ok = preflight(LIGHTNING).await.unwrap();
    assert_eq!(ok.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], LIGHTNING);
    let evil = preflight("https://evil.example").await.unwrap();
    assert!(evil.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(), "no CORS grant for other origins");

    let big = json!({"privacy_mode": true, "open_task_after_call": true, "call_relation": "none", "pad": "x".repeat(4096)});
    let (status, headers, body) = api.call(Method::PUT, "/v1/me/settings", Some(&token), Some(big)).await;
    assert_problem(status, &headers, &body, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    let mut limited = None;
    for _ in 0..60 {
        let (status, headers, body) = api.call(Method::GET, "/v1/me", Some(&token), None).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((headers, body));
            break;
        }
    }
    let (headers, body) = limited.expect("a burst beyond the session's limit is refused");
    assert_problem(StatusCode::TOO_MANY_REQUESTS, &headers, &body, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(headers.get(header::RETRY_AFTER).is_some());
    // Another agent's session has its own budget.
    let (_, other) = api.agent("Grace").await;
    assert_eq!(api.call(Method::GET, "/v1/me", Some(&other), None).await.0, StatusCode::OK);
    api.gw.stop().await;
}

#[tokio::test]
async fn stream_tickets_open_only_the_event_stream() {
    let api = Api::start(|_| {}).await;
    let (_, token) = api.agent("Ada").await;
    let (status, _, t) = api.call(Method::POST, "/v1/stream-tickets", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    let ticket = t["ticket"].as_str().unwrap();
    let r = api.http.get(format!("{}/v1/events?ticket={ticket}", api.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the ticket opens the stream");
    drop(r);
    let r = api.http.get(format!("{}/v1/me?ticket={ticket}", api.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "a ticket is not a session");
    let mut forged = ticket.to_owned();
    forged.push('A');
    let r = api.http.get(format!("{}/v1/events?ticket={forged}", api.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    api.gw.stop().await;
}

/// A real call between two softphones, driven by the callee's agent
/// through the API: the caller (the far end) is put on hold and hears the
/// music, hears silence while the agent is muted, receives a DTMF digit
/// once although the request is retried, and is hung up; a third agent
/// can neither see nor touch the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_holds_mutes_sends_dtmf_and_hangs_up_its_call_and_nobody_else_can() {
    use support::audio::{read_mono, rms, similarity, speech, window};
    use support::{digits_received, softphone, softphone_user};
    use switchboard_gateway::media::player::Prompt;

    let api = Api::start(|c| {
        // Debian 12's baresip reads MD5 challenges only (see interop_baresip.rs).
        c.sip.digest_algorithms = vec!["MD5".into()];
    })
    .await;
    let gw = &api.gw;
    let audio = gw.subdir("audio");
    let ada_mic = speech(&audio, "ada", "Hello, this is Ada from accounts. I am calling about the invoice for March.", 6);
    let bob_mic = speech(&audio, "bob", "Bob speaking. Let me pull up the customer record and read it back to you.", 6);
    softphone_user(gw, "Ada", "201", "ada", "ada-api-secret-1").await;
    let bob_id = softphone_user(gw, "Bob", "202", "bob", "bob-api-secret-1").await;
    let (bob_token, _) = api.sessions(Duration::from_secs(3600)).create(&bob_id, None).await.unwrap();
    let (_, carol) = api.agent("Carol").await;
    let mut bob_events = gw.live().subscribe(&bob_id).events;
    let mut ada = softphone(gw, "ada", "ada-api-secret-1", &ada_mic).await;
    let mut bob = softphone(gw, "bob", "bob-api-secret-1", &bob_mic).await;

    ada.command("dial", &format!("sip:202@{}", gw.sip)).await;
    let first = ada.first_of(&["CALL_ESTABLISHED", "CALL_CLOSED"], 20).await;
    assert_eq!(first["type"], "CALL_ESTABLISHED", "the call failed: {first}");
    bob.event("CALL_ESTABLISHED", 10).await;
    let t0 = std::time::Instant::now();
    let since = || t0.elapsed().as_secs_f64();

    // The call is Bob's, answered, as his stream said.
    let id = call_reaching(&mut bob_events, switchboard_gateway::calls::live::CallState::Answered).await;
    let (status, _, call) = api.call(Method::GET, &format!("/v1/calls/{id}"), Some(&bob_token), None).await;
    assert_eq!(status, StatusCode::OK, "{call}");
    assert_eq!(call["agent_user_id"], bob_id);

    // Carol: not in her list, and every operation on it is 404 like an unknown call.
    let (_, _, list) = api.call(Method::GET, "/v1/calls", Some(&carol), None).await;
    assert_eq!(list["calls"], json!([]));
    for (method, path, body) in [
        (Method::GET, format!("/v1/calls/{id}"), None),
        (Method::POST, format!("/v1/calls/{id}/hold"), Some(json!({"on": true}))),
        (Method::POST, format!("/v1/calls/{id}/mute"), Some(json!({"on": true}))),
        (Method::POST, format!("/v1/calls/{id}/dtmf"), Some(json!({"digits": "9"}))),
        (Method::POST, format!("/v1/calls/{id}/recording"), Some(json!({"action": "start"}))),
        (Method::POST, format!("/v1/calls/{id}/hangup"), None),
        (Method::POST, format!("/v1/calls/{id}/rating"), Some(json!({"score": 1}))),
    ] {
        let (status, headers, body) = api.call(method.clone(), &path, Some(&carol), body).await;
        assert_problem(status, &headers, &body, StatusCode::NOT_FOUND, "call_not_found");
    }

    tokio::time::sleep(Duration::from_secs(2)).await; // two seconds of talk to compare with
    // Hold: Ada, the far end, hears the music.
    let hold_at = since();
    let (status, _, view) = api.call(Method::POST, &format!("/v1/calls/{id}/hold"), Some(&bob_token), Some(json!({"on": true}))).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["held"], "caller", "the caller is held: {view}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, _, view) = api.call(Method::POST, &format!("/v1/calls/{id}/hold"), Some(&bob_token), Some(json!({"on": false}))).await;
    assert_eq!(view["held"], Value::Null);
    let resume_at = since();

    // Mute: Ada hears silence.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mute_at = since();
    let (_, _, view) = api.call(Method::POST, &format!("/v1/calls/{id}/mute"), Some(&bob_token), Some(json!({"on": true}))).await;
    assert_eq!(view["muted"], json!(["callee"]), "Bob, the callee, is muted: {view}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    api.call(Method::POST, &format!("/v1/calls/{id}/mute"), Some(&bob_token), Some(json!({"on": false}))).await;
    let unmute_at = since();

    // DTMF with a retried request: one digit reaches Ada.
    let dtmf = || {
        api.http
            .post(format!("{}/v1/calls/{id}/dtmf", api.base))
            .bearer_auth(&bob_token)
            .header("Idempotency-Key", "press-7-once")
            .json(&json!({"digits": "7"}))
            .send()
    };
    assert_eq!(dtmf().await.unwrap().status(), StatusCode::OK);
    let again = dtmf().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    ada.event("CALL_DTMF_START", 10).await;
    let (status, headers, body) =
        api.call(Method::POST, &format!("/v1/calls/{id}/dtmf"), Some(&bob_token), Some(json!({"digits": "7; rm -rf"}))).await;
    assert_problem(status, &headers, &body, StatusCode::BAD_REQUEST, "invalid_digits");

    // Hang up from the API ends the call on both phones.
    let (status, _, view) = api.call(Method::POST, &format!("/v1/calls/{id}/hangup"), Some(&bob_token), None).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    ada.event("CALL_CLOSED", 10).await;
    bob.event("CALL_CLOSED", 10).await;
    assert_eq!(digits_received(&ada), "7", "one digit although the request was sent twice: {}", ada.log());

    let ada_heard = read_mono(&ada.heard());
    let bob_said = read_mono(&bob_mic);
    let music: Vec<i16> = Prompt::bundled_hold_music().samples().to_vec();
    let held = window(&ada_heard, hold_at + 0.5, resume_at - 0.3);
    let (held_music, held_bob) = (similarity(held, &music), similarity(held, &bob_said));
    assert!(held_music > 0.6 && held_music > held_bob + 0.2, "held Ada hears the music ({held_music:.2}), not Bob ({held_bob:.2})");
    assert!(rms(window(&ada_heard, mute_at + 0.5, unmute_at - 0.3)) < 60.0, "Ada hears silence while Bob is muted");

    // Rating after the call is still Bob's to give; Carol's is refused.
    let (status, _, _) = api.call(Method::POST, &format!("/v1/calls/{id}/rating"), Some(&bob_token), Some(json!({"score": 4, "comment": "clear"}))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, headers, body) = api.call(Method::POST, &format!("/v1/calls/{id}/rating"), Some(&carol), Some(json!({"score": 1}))).await;
    assert_problem(status, &headers, &body, StatusCode::NOT_FOUND, "call_not_found");

    // Notes after the call: two notes, one of them sent twice with the same
    // key, make two call.note events; Carol's and an empty one are refused.
    let note = |text: &'static str, key: &'static str| {
        api.http
            .post(format!("{}/v1/calls/{id}/notes", api.base))
            .bearer_auth(&bob_token)
            .header("Idempotency-Key", key)
            .json(&json!({"text": text}))
            .send()
    };
    let first = note("Wants the March invoice re-sent", "note-1").await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let again: Value = note("Wants the March invoice re-sent", "note-1").await.unwrap().json().await.unwrap();
    assert_eq!(again["note_id"], first["note_id"], "the retry answers the first note");
    assert_eq!(note("Call back Friday — ünïcode ok", "note-2").await.unwrap().status(), StatusCode::CREATED);
    let (status, headers, body) = api.call(Method::POST, &format!("/v1/calls/{id}/notes"), Some(&carol), Some(json!({"text": "mine"}))).await;
    assert_problem(status, &headers, &body, StatusCode::NOT_FOUND, "call_not_found");
    let (status, headers, body) = api.call(Method::POST, &format!("/v1/calls/{id}/notes"), Some(&bob_token), Some(json!({"text": "  "}))).await;
    assert_problem(status, &headers, &body, StatusCode::BAD_REQUEST, "invalid_note");
    let events = api.gw.events_once("call.note", 2).await;
    let notes: Vec<String> = events
        .iter()
        .filter(|(_, e)| e.call_id == id)
        .filter_map(|(_, e)| match &e.kind {
            Some(switchboard_proto::Kind::Note(n)) => Some(format!("{}:{}", n.user_id == bob_id, n.text)),
            _ => None,
        })
        .collect();
    assert_eq!(notes, ["true:Wants the March invoice re-sent", "true:Call back Friday — ünïcode ok"], "each note once, in order, by Bob");

    ada.quit().await;
    bob.quit().await;
    api.gw.stop().await;
}

/// "Connect with Salesforce" against the emulated org: the authorization
/// code flow with PKCE ends in a session for the linked user, and each way
/// it can fail sends the browser back with the reason.
#[tokio::test]
async fn connect_with_salesforce_signs_a_linked_user_in_and_says_why_otherwise() {
    use salesforce_emulator::{Browser, Emulator, EmulatorConfig, TestCredentials};

    let credentials = TestCredentials::generate().unwrap();
    let emulator = Emulator::start(EmulatorConfig::new(credentials.certificate_pem.clone()), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let ada_sf = emulator.add_user("ada@acme.example").unwrap();
    emulator.add_user("stranger@acme.example").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let public_url = format!("http://127.0.0.1:{port}");
    emulator.add_callback_url(&emulator.consumer_key(), &format!("{public_url}/v1/auth/salesforce/callback")).unwrap();
    let (login_url, client_id, secret, org) = (emulator.url(), emulator.consumer_key(), emulator.consumer_secret(), emulator.org_id());
    let api = Api::start(move |c| {
        c.http.listen = format!("127.0.0.1:{port}").parse().unwrap();
        c.http.public_url = Some(public_url);
        c.auth.salesforce = Some(switchboard_gateway::config::AgentLoginConfig {
            login_url,
            client_id,
            client_secret: Some(secret),
            organization_id: Some(org),
        });
    })
    .await;
    let ada = api
        .gw
        .directory()
        .create_user(NewUser { name: "Ada".into(), salesforce_user_id: Some(ada_sf[..15].to_owned()), ..Default::default() })
        .await
        .unwrap();
    let return_to = format!("{LIGHTNING}/lightning/softphone");
    let location = |r: &reqwest::Response| r.headers()[header::LOCATION].to_str().unwrap().to_owned();

    // One whole sign-in as the browser would do it; answers where it lands.
    let sign_in = |username: Option<&'static str>, deny: bool| {
        let (api, emulator, return_to) = (&api, &emulator, return_to.clone());
        async move {
            emulator.set_browser(Browser { username: username.map(str::to_owned), deny }).unwrap();
            let r = api.http.get(format!("{}/v1/auth/salesforce/login", api.base)).query(&[("return_to", &return_to)]).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::FOUND);
            let authorize = location(&r);
            assert!(authorize.starts_with(&emulator.url()) && authorize.contains("code_challenge_method=S256"), "{authorize}");
            let r = api.http.get(&authorize).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::FOUND, "the org sends the browser back");
            let callback = location(&r);
            let r = api.http.get(&callback).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::FOUND);
            (callback, location(&r))
        }
    };
    let fragment = |landed: &str| -> std::collections::HashMap<String, String> {
        let (page, frag) = landed.split_once('#').unwrap_or_else(|| panic!("a fragment: {landed}"));
        assert_eq!(page, return_to);
        url::form_urlencoded::parse(frag.as_bytes()).into_owned().collect()
    };

    let (callback, landed) = sign_in(Some("ada@acme.example"), false).await;
    let f = fragment(&landed);
    let token = f.get("session").unwrap_or_else(|| panic!("a session: {landed}"));
    let (status, _, me) = api.call(Method::GET, "/v1/me", Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["user_id"], ada.id, "the user linked by its 15-character Salesforce id");
    assert_eq!(me["salesforce_connected"], true);
    assert_eq!(f["expires_at"], me["session_expires_at_ms"].to_string());

    // The same callback again: Salesforce codes are single use.
    let r = api.http.get(&callback).send().await.unwrap();
    assert_eq!(fragment(&location(&r))["error"], "salesforce_refused");

    let (_, landed) = sign_in(Some("stranger@acme.example"), false).await;
    let f = fragment(&landed);
    assert_eq!(f["error"], "not_linked", "{landed}");
    assert!(f["error_description"].contains("not linked to a Switchboard user"), "{landed}");

    let (_, landed) = sign_in(Some("ada@acme.example"), true).await;
    assert_eq!(fragment(&landed)["error"], "access_denied", "{landed}");

    // No token ever goes to a site that is not allowed, and a forged or
    // missing state is refused without redirecting anywhere.
    let r = api.http.get(format!("{}/v1/auth/salesforce/login?return_to=https://evil.example/x", api.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "return_to_not_allowed");
    for query in ["code=abc&state=v1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "code=abc"] {
        let r = api.http.get(format!("{}/v1/auth/salesforce/callback?{query}", api.base)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid_state");
    }
    api.gw.stop().await;
    emulator.shutdown().await;
}

#[tokio::test]
async fn without_a_connected_app_sign_in_says_what_to_configure() {
    let api = Api::start(|_| {}).await;
    let (status, headers, body) = api.call(Method::GET, "/v1/auth/salesforce/login", None, None).await;
    assert_problem(status, &headers, &body, StatusCode::SERVICE_UNAVAILABLE, "signin_not_configured");
    assert!(body["detail"].as_str().unwrap().contains("auth.salesforce"));
    api.gw.stop().await;
}

/// Recordings and voicemails: each agent lists its own, admins also the
/// admin-only ones, and a playback link plays the file and nothing else.
#[tokio::test]
async fn agents_list_their_own_recordings_and_play_them_through_expiring_links() {
    use switchboard_store::sqlx;
    let api = Api::start(|_| {}).await;
    let (ada, ada_token) = api.agent("Ada").await;
    let (bob, bob_token) = api.agent("Bob").await;
    let root = api.gw.directory().create_user(NewUser { name: "Root".into(), role: switchboard_gateway::directory::Role::Admin, ..Default::default() }).await.unwrap();
    let (admin_token, _) = api.sessions(Duration::from_secs(3600)).create(&root.id, None).await.unwrap();
    let pool = api.gw.db.pool();
    for (call, agent) in [("call-a", &ada), ("call-b", &bob)] {
        sqlx::query("INSERT INTO calls (id, sip_call_id, direction, from_number, to_number, user_id, agent_user_id, state, next_seq, started_at) VALUES ($1, $1, 'inbound', '+1', '+2', $2, $2, 'ended', 1, 1)")
            .bind(call).bind(agent.as_str()).execute(pool).await.unwrap();
    }
    let store = api.gw.dir.path().join("recordings");
    // (id, call, kind, admin_only, mailbox user, created_at)
    let rows = [
        ("rec-a1", "call-a", "recording", 0, None, 10),
        ("rec-a2", "call-a", "recording", 0, None, 20),
        ("rec-a-admin", "call-a", "recording", 1, None, 30),
        ("vm-a", "call-b", "voicemail", 0, Some(ada.as_str()), 40),
        ("rec-b", "call-b", "recording", 0, None, 50),
    ];
    for (id, call, kind, admin_only, mailbox, at) in rows {
        let key = format!("{id}.wav");
        std::fs::write(store.join(&key), format!("RIFF audio of {id}")).unwrap();
        sqlx::query("INSERT INTO recordings (id, call_id, object_key, format, duration_ms, size_bytes, admin_only, created_at, kind, user_id) VALUES ($1, $2, $3, 'wav/pcm_s16le', 1000, 20, $4, $5, $6, $7)")
            .bind(id).bind(call).bind(&key).bind(admin_only as i64).bind(at as i64).bind(kind).bind(mailbox).execute(pool).await.unwrap();
    }
    let ids = |page: &Value| -> Vec<String> { page["recordings"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect() };

    let (status, _, page) = api.call(Method::GET, "/v1/recordings", Some(&ada_token), None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(ids(&page), ["vm-a", "rec-a2", "rec-a1"], "Ada's own, newest first, no admin-only one, her voicemail on Bob's call");
    let (_, _, page) = api.call(Method::GET, "/v1/recordings?kind=voicemail", Some(&ada_token), None).await;
    assert_eq!(ids(&page), ["vm-a"]);
    let (_, _, page) = api.call(Method::GET, "/v1/recordings", Some(&bob_token), None).await;
    assert_eq!(ids(&page), ["rec-b"], "Bob never sees Ada's");
    let (_, _, page) = api.call(Method::GET, "/v1/recordings", Some(&admin_token), None).await;
    assert_eq!(ids(&page), ["rec-a-admin"], "an admin sees admin-only recordings");
    // Paging: one at a time, every item once.
    let (_, _, first) = api.call(Method::GET, "/v1/recordings?limit=2", Some(&ada_token), None).await;
    assert_eq!(ids(&first), ["vm-a", "rec-a2"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, _, second) = api.call(Method::GET, &format!("/v1/recordings?limit=2&cursor={cursor}"), Some(&ada_token), None).await;
    assert_eq!(ids(&second), ["rec-a1"]);
    assert_eq!(second["next_cursor"], Value::Null);

    let (_, _, page) = api.call(Method::GET, "/v1/recordings", Some(&ada_token), None).await;
    let link = page["recordings"][1]["playback_url"].as_str().unwrap().to_owned();
    assert!(link.starts_with(&format!("{}/v1/recordings/rec-a2/audio?token=", api.base)), "{link}");
    let r = api.http.get(&link).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "audio/wav");
    assert_eq!(r.text().await.unwrap(), "RIFF audio of rec-a2", "no session needed: the link is the permission");
    // The token names its recording: moved to another id, or altered, it is refused.
    let token = link.split("token=").nth(1).unwrap();
    for bad in [format!("{}/v1/recordings/rec-b/audio?token={token}", api.base), format!("{link}x"), format!("{}/v1/recordings/rec-a2/audio?token=v1.AAAA", api.base)] {
        let r = api.http.get(&bad).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{bad}");
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "link_expired");
    }
    api.gw.stop().await;
}

/// The agent declines a call that rings on its phone: the caller is told
/// 603, the phone stops ringing, and a call that no longer rings cannot be
/// declined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_declines_a_ringing_call() {
    use support::audio::speech;
    use support::{softphone, softphone_user, Baresip, PhoneAccount};

    let api = Api::start(|c| c.sip.digest_algorithms = vec!["MD5".into()]).await;
    let gw = &api.gw;
    let mic = speech(&gw.subdir("audio"), "ada", "Hello?", 1);
    softphone_user(gw, "Ada", "201", "ada", "ada-api-secret-2").await;
    let bob_id = softphone_user(gw, "Bob", "202", "bob", "bob-api-secret-2").await;
    let (bob_token, _) = api.sessions(Duration::from_secs(3600)).create(&bob_id, None).await.unwrap();
    let mut ada = softphone(gw, "ada", "ada-api-secret-2", &mic).await;
    let mut bob = Baresip::start_with_audio(
        gw.dir.path(),
        "bob",
        gw.sip,
        PhoneAccount { username: "bob", password: "bob-api-secret-2", answermode: "manual", register: true },
        &mic,
    )
    .await;
    bob.event("REGISTER_OK", 20).await;
    let mut bob_events = gw.live().subscribe(&bob_id).events;

    ada.command("dial", &format!("sip:202@{}", gw.sip)).await;
    bob.event("CALL_INCOMING", 20).await;
    let id = call_reaching(&mut bob_events, switchboard_gateway::calls::live::CallState::Ringing).await;
    let (status, _, view) = api.call(Method::POST, &format!("/v1/calls/{id}/decline"), Some(&bob_token), None).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let closed = ada.event("CALL_CLOSED", 10).await;
    assert!(closed.to_string().contains("603"), "the caller is told 603 Decline: {closed}");
    bob.event("CALL_CLOSED", 10).await;
    let events = gw.events_after_calls_ended(1).await;
    let ended = events.iter().find(|(k, _)| k == "call.ended").unwrap();
    match &ended.1.kind {
        Some(switchboard_proto::Kind::Ended(e)) => assert_eq!(e.sip_status, 603),
        other => panic!("{other:?}"),
    }
    let (status, headers, body) = api.call(Method::POST, &format!("/v1/calls/{id}/decline"), Some(&bob_token), None).await;
    assert_problem(status, &headers, &body, StatusCode::CONFLICT, "call_state");
    ada.quit().await;
    bob.quit().await;
    api.gw.stop().await;
}

/// Privacy mode (F2) set through `PUT /v1/me/settings` travels with the
/// agent's calls: the agent a call is routed to carries the setting as it
/// is when the call arrives (off without settings), in `call.started`,
/// `call.ringing` and `call.answered`, so the connector logs its Task
/// without the number and the recording links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_privacy_mode_is_carried_by_the_events_of_its_calls() {
    use support::audio::speech;
    use support::{softphone, softphone_user};

    let api = Api::start(|c| c.sip.digest_algorithms = vec!["MD5".into()]).await;
    let gw = &api.gw;
    let mic = speech(&gw.subdir("audio"), "ada", "Hello, this is Ada.", 2);
    softphone_user(gw, "Ada", "201", "ada", "ada-api-secret-3").await;
    let bob_id = softphone_user(gw, "Bob", "202", "bob", "bob-api-secret-3").await;
    let (bob_token, _) = api.sessions(Duration::from_secs(3600)).create(&bob_id, None).await.unwrap();
    let mut ada = softphone(gw, "ada", "ada-api-secret-3", &mic).await;
    let mut bob = softphone(gw, "bob", "bob-api-secret-3", &mic).await;

    // First call: Bob has no settings (privacy off); second: Bob turned it on.
    for (round, privacy) in [(1, false), (2, true)] {
        if privacy {
            let on = json!({"privacy_mode": true, "open_task_after_call": true, "call_relation": "none"});
            let (status, _, body) = api.call(Method::PUT, "/v1/me/settings", Some(&bob_token), Some(on)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        ada.command("dial", &format!("sip:202@{}", gw.sip)).await;
        let first = ada.first_of(&["CALL_ESTABLISHED", "CALL_CLOSED"], 20).await;
        assert_eq!(first["type"], "CALL_ESTABLISHED", "call {round} failed: {first}");
        bob.event("CALL_ESTABLISHED", 10).await;
        ada.command("hangup", "").await;
        ada.event("CALL_CLOSED", 10).await;
        bob.event("CALL_CLOSED", 10).await;

        let events = gw.events_after_calls_ended(round).await;
        let call_id = events.iter().filter(|(k, _)| k == "call.started").map(|(_, e)| e.call_id.clone()).next_back().unwrap();
        let mut seen = Vec::new();
        for (kind, e) in support::events_of(&events, &call_id) {
            let agent = match &e.kind {
                Some(switchboard_proto::Kind::Started(s)) => s.owner.as_ref(),
                Some(switchboard_proto::Kind::Ringing(r)) => r.agent.as_ref(),
                Some(switchboard_proto::Kind::Answered(a)) => a.agent.as_ref(),
                _ => continue,
            };
            let agent = agent.unwrap_or_else(|| panic!("{kind} of call {round} names no agent"));
            assert_eq!(agent.user_id, bob_id, "{kind} of call {round}");
            assert_eq!(agent.privacy_mode, privacy, "{kind} of call {round}: {agent:?}");
            seen.push(kind.clone());
        }
        assert_eq!(seen, ["call.started", "call.ringing", "call.answered"], "call {round}");
    }
    ada.quit().await;
    bob.quit().await;
    api.gw.stop().await;
}
