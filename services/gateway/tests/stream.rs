//! The agent event stream with a real call: Ada's softphone calls Bob's
//! (baresip both), Bob's browser tabs follow it over Server-Sent Events and
//! a WebSocket, and Carol, who has nothing to do with it, sees none of it.
//!
//! The stream router is mounted on a server of the test's own behind a
//! test-only layer that takes the signed-in user from a header (the agent
//! API's real authentication is not what this tests).
//!
//! Needs baresip and SIPp (`scripts/test` installs them).

mod support;

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use futures::{SinkExt, Stream, StreamExt};
use switchboard_gateway::api::agent::stream;
use switchboard_gateway::api::auth::{Principal, Role};
use switchboard_gateway::calls::live::{AgentEvent, AgentEventKind, CallDirection, CallEndReason, CallState};
use switchboard_gateway::config::GatewayConfig;
use switchboard_gateway::directory::{NewDevice, NewUser};
use support::{Baresip, PhoneAccount, Sipp, SippRun, TestGateway, CARRIER_IP};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const ADA_PASSWORD: &str = "ada-stream-secret";
const BOB_PASSWORD: &str = "bob-stream-secret";
/// How long any one awaited event may take.
const WAIT: Duration = Duration::from_secs(30);

fn config(config: &mut GatewayConfig) {
    // Debian 12's baresip reads MD5 challenges only (see interop_baresip.rs).
    config.sip.digest_algorithms = vec!["MD5".into()];
    config.voicemail.enabled = false;
}

/// Creates a user with an extension; returns its id.
async fn user(gw: &TestGateway, name: &str, extension: &str) -> String {
    let user = gw.directory().create_user(NewUser { name: name.into(), extension: Some(extension.into()), ..Default::default() }).await.unwrap();
    user.id
}

/// Gives `user_id` a device at `contact` with a softphone login.
async fn device(gw: &TestGateway, user_id: &str, login: &str, password: &str, contact: String) {
    let directory = gw.directory();
    let device = directory.create_device(NewDevice { user_id: user_id.into(), name: "softphone".into(), contact_uri: contact }).await.unwrap();
    directory.set_device_credentials(&device.id, login, password, "switchboard").await.unwrap();
}

async fn phone(gw: &TestGateway, login: &str, password: &str, answermode: &str) -> Baresip {
    let account = PhoneAccount { username: login, password, answermode, register: true };
    let mut p = Baresip::start(gw.dir.path(), login, gw.sip, account).await;
    let outcome = p.first_of(&["REGISTER_OK", "REGISTER_FAIL"], 20).await;
    if outcome["type"] != "REGISTER_OK" {
        p.fail(&format!("baresip could not register: {}", outcome["param"]));
    }
    p
}

/// The test-only authentication: the user named in `x-test-user`.
async fn as_user(mut request: Request, next: Next) -> Response {
    let user_id = request.headers().get("x-test-user").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    request.extensions_mut().insert(Principal { user_id, session_id: "test-session".into(), role: Role::Agent, expires_at_ms: i64::MAX, salesforce_connected: false });
    next.run(request).await
}

/// Serves the stream routes on a port of their own until the test ends.
async fn serve_streams(gw: &TestGateway) -> SocketAddr {
    let app = stream::router(gw.live()).layer(axum::middleware::from_fn(as_user));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;
type WebSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One browser tab following the stream, over SSE or a WebSocket.
enum Tab {
    Sse { label: String, body: ByteStream, buf: Vec<u8> },
    Ws { label: String, socket: Box<WebSocket> },
}

impl Tab {
    async fn sse(addr: SocketAddr, user: &str, label: &str) -> Tab {
        let response = reqwest::Client::new().get(format!("http://{addr}/v1/events")).header("x-test-user", user).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        Tab::Sse { label: label.into(), body: Box::pin(response.bytes_stream()), buf: Vec::new() }
    }

    async fn ws(addr: SocketAddr, user: &str, label: &str) -> Tab {
        let mut request = format!("ws://{addr}/v1/events/ws").into_client_request().unwrap();
        request.headers_mut().insert("x-test-user", user.parse().unwrap());
        let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        Tab::Ws { label: label.into(), socket: Box::new(socket) }
    }

    fn label(&self) -> &str {
        match self {
            Tab::Sse { label, .. } | Tab::Ws { label, .. } => label,
        }
    }

    /// The next event; `None` when the server ended the stream.
    async fn next(&mut self) -> Option<AgentEvent> {
        let label = self.label().to_owned();
        match tokio::time::timeout(WAIT, self.next_untimed()).await {
            Ok(event) => event,
            Err(_) => panic!("{label}: no event within {WAIT:?}"),
        }
    }

    async fn next_untimed(&mut self) -> Option<AgentEvent> {
        match self {
            Tab::Sse { body, buf, .. } => loop {
                if let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                    let block = String::from_utf8(buf.drain(..end + 2).collect()).unwrap();
                    let (mut name, mut id, mut data) = (None, None, String::new());
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event:") {
                            name = Some(v.trim().to_owned());
                        } else if let Some(v) = line.strip_prefix("id:") {
                            id = Some(v.trim().to_owned());
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        }
                    }
                    if data.is_empty() {
                        continue; // a keep-alive comment
                    }
                    let event: AgentEvent = serde_json::from_str(&data).unwrap();
                    assert_eq!(name.as_deref(), Some(event.kind.as_str()), "the SSE event name is the type");
                    assert_eq!(id, Some(event.seq.to_string()), "the SSE id is the seq");
                    return Some(event);
                }
                match body.next().await {
                    Some(Ok(bytes)) => buf.extend_from_slice(&bytes),
                    Some(Err(e)) => panic!("the SSE stream failed: {e}"),
                    None => return None,
                }
            },
            Tab::Ws { socket, .. } => loop {
                match socket.next().await {
                    Some(Ok(WsMessage::Text(text))) => return Some(serde_json::from_str(text.as_str()).unwrap()),
                    Some(Ok(WsMessage::Close(_))) | None => return None,
                    Some(Ok(_)) => continue, // pings are answered by the client library
                    Some(Err(e)) => panic!("the WebSocket failed: {e}"),
                }
            },
        }
    }

    /// The first event, which must be a snapshot.
    async fn snapshot(&mut self) -> AgentEvent {
        let event = self.next().await.expect("a snapshot");
        assert_eq!(event.kind, AgentEventKind::Snapshot, "{}: the stream starts with a snapshot", self.label());
        assert!(event.call.is_none());
        event
    }

    /// Every event up to and including the first `kind` (of any call).
    async fn until(&mut self, kind: AgentEventKind) -> Vec<AgentEvent> {
        let mut seen = Vec::new();
        loop {
            let Some(event) = self.next().await else {
                panic!("{}: the stream ended before {kind:?}; got {seen:?}", self.label());
            };
            let done = event.kind == kind;
            seen.push(event);
            if done {
                return seen;
            }
        }
    }
}

/// The types of the events of `call_id` among `events`.
fn kinds_of(events: &[AgentEvent], call_id: &str) -> Vec<AgentEventKind> {
    events.iter().filter(|e| e.call.as_ref().is_some_and(|c| c.id == call_id)).map(|e| e.kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_follow_their_calls_live_over_sse_and_websocket() {
    let gw = TestGateway::start(config).await;
    let ada_id = user(&gw, "Ada", "201").await;
    let bob_id = user(&gw, "Bob", "202").await;
    let carol_id = user(&gw, "Carol", "203").await;
    device(&gw, &ada_id, "ada", ADA_PASSWORD, "sip:ada@127.0.0.1:9".into()).await;
    device(&gw, &bob_id, "bob", BOB_PASSWORD, "sip:bob@127.0.0.1:9".into()).await;
    // Carol's desk phone declines whatever rings it.
    let desk_port = support::free_udp_port(CARRIER_IP);
    device(&gw, &carol_id, "carol", "carol-stream-secret", format!("sip:carol@{CARRIER_IP}:{desk_port}")).await;
    let mut ada = phone(&gw, "ada", ADA_PASSWORD, "auto").await;
    let mut bob = phone(&gw, "bob", BOB_PASSWORD, "manual").await;
    let addr = serve_streams(&gw).await;

    // Two tabs of Bob's (one per transport), Ada's, Carol's.
    let mut bob_sse = Tab::sse(addr, &bob_id, "bob-sse").await;
    let mut bob_ws = Tab::ws(addr, &bob_id, "bob-ws").await;
    let mut ada_sse = Tab::sse(addr, &ada_id, "ada-sse").await;
    let mut carol_ws = Tab::ws(addr, &carol_id, "carol-ws").await;
    for tab in [&mut bob_sse, &mut bob_ws, &mut ada_sse, &mut carol_ws] {
        let snapshot = tab.snapshot().await;
        assert_eq!(snapshot.calls.as_deref(), Some(&[][..]), "{}: no calls yet", tab.label());
    }
    assert_eq!(gw.metric("switchboard_api_stream_subscribers").await, 4.0);
    // The documented WebSocket ping (nothing else is pending yet).
    if let Tab::Ws { socket, .. } = &mut bob_ws {
        socket.send(WsMessage::text(r#"{"type":"ping"}"#)).await.unwrap();
        socket.send(WsMessage::text("anything else is ignored")).await.unwrap();
        let pong = tokio::time::timeout(WAIT, socket.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(pong.to_text().unwrap(), r#"{"type":"pong"}"#);
    }

    // Ada calls Bob; his phone rings until he answers.
    ada.command("dial", &format!("sip:202@{}", gw.sip)).await;
    bob.event("CALL_INCOMING", 20).await;
    let ringing = bob_sse.until(AgentEventKind::Ringing).await;
    let call_id = ringing.last().and_then(|e| e.call.as_ref()).map(|c| c.id.clone()).unwrap();
    let view = ringing.last().unwrap().call.clone().unwrap();
    assert_eq!((view.state, view.direction, view.to_number.as_str()), (CallState::Ringing, CallDirection::Internal, "202"));
    assert_eq!((view.from_number.as_str(), view.from_display.as_deref()), ("201", Some("Ada")));
    assert_eq!(view.agent_user_id, None);

    bob.command("accept", "").await;
    bob.event("CALL_ESTABLISHED", 10).await;
    ada.event("CALL_ESTABLISHED", 10).await;
    let answered = bob_sse.until(AgentEventKind::Answered).await;
    let view = answered.last().unwrap().call.clone().unwrap();
    assert_eq!((view.state, view.agent_user_id.as_deref()), (CallState::Answered, Some(bob_id.as_str())));
    assert!(view.answered_at_ms.is_some_and(|a| a >= view.started_at_ms));

    // A tab opened mid-call finds the call in its snapshot.
    let mut bob_late = Tab::ws(addr, &bob_id, "bob-late").await;
    let snapshot = bob_late.snapshot().await;
    let calls = snapshot.calls.clone().unwrap();
    assert_eq!(calls.len(), 1, "{snapshot:?}");
    assert_eq!((calls[0].id.as_str(), calls[0].state), (call_id.as_str(), CallState::Answered));
    assert!(snapshot.seq >= answered.last().unwrap().seq, "the snapshot includes the answer");
    // Carol, subscribed all along, sees none of it.
    assert!(gw.live().for_user(&carol_id).is_empty());

    ada.command("hangup", "").await;
    bob.event("CALL_CLOSED", 10).await;
    ada.event("CALL_CLOSED", 10).await;

    // Both of Bob's tabs, the late one and the caller's got the whole call, in order.
    let mut sse_events = ringing;
    sse_events.extend(answered);
    sse_events.extend(bob_sse.until(AgentEventKind::Ended).await);
    let ws_events = bob_ws.until(AgentEventKind::Ended).await;
    let ada_events = ada_sse.until(AgentEventKind::Ended).await;
    let whole = [AgentEventKind::Started, AgentEventKind::Ringing, AgentEventKind::Answered, AgentEventKind::Ended];
    assert_eq!(kinds_of(&sse_events, &call_id), whole, "Bob's SSE tab: {sse_events:?}");
    assert_eq!(kinds_of(&ws_events, &call_id), whole, "Bob's WebSocket tab: {ws_events:?}");
    assert_eq!(kinds_of(&ada_events, &call_id), whole, "the caller of an internal call follows it too: {ada_events:?}");
    assert!(sse_events.windows(2).all(|w| w[0].seq < w[1].seq), "seq grows");
    assert_eq!(
        sse_events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        ws_events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        "both tabs get the same events"
    );
    let late = bob_late.until(AgentEventKind::Ended).await;
    assert_eq!(kinds_of(&late, &call_id), [AgentEventKind::Ended], "the late tab continues after its snapshot");
    let ended = late.last().unwrap().call.clone().unwrap();
    assert_eq!((ended.state, ended.end_reason), (CallState::Ended, Some(CallEndReason::Completed)));
    assert!(ended.ended_at_ms.is_some());
    // Ended calls stay visible for a while: a reloading page sees how it ended.
    let mut bob_reload = Tab::sse(addr, &bob_id, "bob-reload").await;
    let calls = bob_reload.snapshot().await.calls.unwrap();
    assert_eq!((calls.len(), calls[0].state), (1, CallState::Ended));

    // Then Ada calls Carol, whose desk phone declines: the first event
    // Carol's stream carries is that call's, so none of Bob's reached her
    // (a stream's events come in the order they happened).
    let desk = Sipp::spawn(
        gw.dir.path(),
        SippRun { label: "carol-desk", scenario: "device_uas_decline.xml", ip: CARRIER_IP, remote: None, service: None, port: desk_port },
    );
    ada.command("dial", &format!("sip:203@{}", gw.sip)).await;
    ada.event("CALL_CLOSED", 20).await;
    desk.succeeds().await;
    let carol_events = carol_ws.until(AgentEventKind::Ended).await;
    assert_eq!(carol_events[0].kind, AgentEventKind::Started, "{carol_events:?}");
    let carol_call = carol_events[0].call.as_ref().map(|c| c.id.clone()).unwrap();
    assert_ne!(carol_call, call_id);
    assert!(carol_events.iter().all(|e| e.call.as_ref().is_some_and(|c| c.id == carol_call)), "{carol_events:?}");
    assert_eq!(carol_events.last().unwrap().call.as_ref().unwrap().end_reason, Some(CallEndReason::Busy));
    // And Bob's tabs got nothing of Carol's call.
    assert!(!gw.live().for_user(&bob_id).iter().any(|c| c.id == carol_call));

    // Stopping the gateway ends every stream.
    ada.quit().await;
    bob.quit().await;
    gw.stop().await;
    // (What was still on the way: Ada's share of Carol's call, nothing of Bob's.)
    for tab in [&mut bob_sse, &mut bob_ws, &mut bob_late, &mut bob_reload, &mut ada_sse, &mut carol_ws] {
        let mut rest = Vec::new();
        while let Some(event) = tab.next().await {
            rest.push(event);
        }
        let foreign = rest.iter().filter(|e| !(tab.label().starts_with("ada") && e.call.as_ref().is_some_and(|c| c.id == carol_call)));
        assert_eq!(foreign.count(), 0, "{}: unexpected events {rest:?}", tab.label());
    }
}
