//! The agent's live event stream: what the softphone shows, pushed as it
//! happens, over Server-Sent Events or a WebSocket.
//!
//! - `GET /v1/events` (SSE): the first event is `snapshot` (every call the
//!   agent sees), then one SSE event per [`AgentEvent`]: the event name is
//!   its `type`, the id its `seq`, the data its JSON. A keep-alive comment
//!   goes out every 15 s so that proxies keep the connection open.
//! - `GET /v1/events/ws` (WebSocket): the same JSON messages as text
//!   frames, `{"type":"snapshot","calls":[…],…}` first. The server pings
//!   every 20 s and closes a connection it has heard nothing from (not even
//!   a pong) for a minute, or that does not take a message within 10 s.
//!   Client text frames are ignored except `{"type":"ping"}`, answered
//!   `{"type":"pong"}` (for clients that cannot see WebSocket pings). The
//!   server closes with 1001 (going away) when the gateway shuts down.
//!
//! Each connection is a subscription of its own to [`LiveCalls`], so every
//! tab of an agent receives every event. A connection too slow to take its
//! events falls behind on its own: it gets a fresh `snapshot` in place of
//! what it missed, and neither the call writer nor other agents wait for
//! it. The routes trust the [`Principal`] in the request's extensions;
//! [`router`] leaves authentication to the layer its caller wraps it in.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use futures::{Stream, StreamExt};
use tokio::time::Instant;
use tracing::debug;

use crate::api::auth::Principal;
use crate::calls::live::{AgentEvent, LiveCalls};

/// How often an SSE stream sends a keep-alive comment.
const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often the server pings a WebSocket.
const WS_PING: Duration = Duration::from_secs(20);
/// A WebSocket silent this long (no frame, not even a pong) is closed.
const WS_SILENCE: Duration = Duration::from_secs(60);
/// A WebSocket that does not take a message this fast is closed.
const WS_SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET /v1/events` and `GET /v1/events/ws`, without authentication: the
/// caller wraps the router in the layer that inserts the [`Principal`].
pub fn router(live: LiveCalls) -> Router {
    Router::new().route("/v1/events", get(sse)).route("/v1/events/ws", get(websocket)).with_state(live)
}

/// The agent's live events as Server-Sent Events: `snapshot` first, then
/// every [`AgentEvent`] (event name = `type`, id = `seq`).
#[utoipa::path(get, path = "/v1/events", tag = "events", security(("session" = []), ("ticket" = [])),
    responses(
        (status = 200, description = "an endless `text/event-stream` of AgentEvent JSON", content_type = "text/event-stream", body = AgentEvent),
        (status = 401, body = crate::api::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn sse(
    Extension(principal): Extension<Principal>,
    State(live): State<LiveCalls>,
) -> Sse<impl Stream<Item = Result<Event, axum::Error>>> {
    let subscription = live.subscribe(&principal.user_id);
    debug!(user_id = %principal.user_id, calls = subscription.snapshot.len(), "event stream opened (SSE)");
    let first = Arc::new(subscription.snapshot_event());
    let later = futures::stream::unfold(subscription.events, |mut events| async move { events.recv().await.map(|e| (e, events)) });
    let stream = futures::stream::once(std::future::ready(first)).chain(later).map(|event| sse_event(&event));
    Sse::new(stream).keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE))
}

fn sse_event(event: &AgentEvent) -> Result<Event, axum::Error> {
    Event::default().event(event.kind.as_str()).id(event.seq.to_string()).json_data(event)
}

/// The agent's live events over a WebSocket: the same JSON messages as
/// text frames, `snapshot` first.
#[utoipa::path(get, path = "/v1/events/ws", tag = "events", security(("session" = []), ("ticket" = [])),
    responses(
        (status = 101, description = "switching to a WebSocket carrying AgentEvent JSON text frames"),
        (status = 401, body = crate::api::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn websocket(Extension(principal): Extension<Principal>, State(live): State<LiveCalls>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| serve_websocket(socket, live, principal.user_id))
}

async fn serve_websocket(mut socket: WebSocket, live: LiveCalls, user_id: String) {
    let subscription = live.subscribe(&user_id);
    debug!(%user_id, calls = subscription.snapshot.len(), "event stream opened (WebSocket)");
    if send_event(&mut socket, &subscription.snapshot_event()).await.is_err() {
        return;
    }
    let mut events = subscription.events;
    let mut ping = tokio::time::interval_at(Instant::now() + WS_PING, WS_PING);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => {
                    if send_event(&mut socket, &event).await.is_err() {
                        break;
                    }
                }
                None => {
                    let frame = CloseFrame { code: close_code::AWAY, reason: "the gateway is shutting down".into() };
                    let _ = send(&mut socket, Message::Close(Some(frame))).await;
                    break;
                }
            },
            message = socket.recv() => {
                last_heard = Instant::now();
                match message {
                    Some(Ok(Message::Text(text))) if is_ping(text.as_str()) => {
                        if send(&mut socket, Message::text(r#"{"type":"pong"}"#)).await.is_err() {
                            break;
                        }
                    }
                    // The client closed (tungstenite answers the close), or the connection broke.
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    // Other text, binary, pongs; pings are answered by the library.
                    Some(Ok(_)) => {}
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() >= WS_SILENCE {
                    debug!(%user_id, "closing a silent event WebSocket");
                    break;
                }
                if send(&mut socket, Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    debug!(%user_id, "event stream closed (WebSocket)");
}

/// Whether a client's text frame is the documented `{"type":"ping"}`.
fn is_ping(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v.get("type").and_then(|t| t.as_str()) == Some("ping"))
}

async fn send_event(socket: &mut WebSocket, event: &AgentEvent) -> Result<(), ()> {
    let json = serde_json::to_string(event).map_err(|e| debug!(error = %e, "an agent event did not serialize"))?;
    send(socket, Message::text(json)).await
}

/// Sends a frame, giving up on a client that does not take it in time.
async fn send(socket: &mut WebSocket, message: Message) -> Result<(), ()> {
    match tokio::time::timeout(WS_SEND_TIMEOUT, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            debug!(error = %e, "sending on an event WebSocket failed");
            Err(())
        }
        Err(_) => {
            debug!("an event WebSocket took no message for 10 s; closing it");
            Err(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_documented_ping_is_answered() {
        assert!(is_ping(r#"{"type":"ping"}"#));
        assert!(is_ping(r#"{ "type": "ping", "id": 7 }"#));
        assert!(!is_ping(r#"{"type":"pong"}"#));
        assert!(!is_ping("ping"));
        assert!(!is_ping(r#"{"type":1}"#));
    }
}
