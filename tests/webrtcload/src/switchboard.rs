//! Browser calls through Switchboard, as the softphone page makes them:
//! each agent's page registers (`POST /v1/softphone`), reads its event
//! stream over a WebSocket (`/v1/events/ws?ticket=`), places a call
//! (`POST /v1/calls {"to", "device_id"}`), answers the `webrtc.offer` the
//! gateway then sends it (`POST /v1/webrtc/legs/{id}/answer`) and hangs
//! up at the end (`POST /v1/calls/{id}/hangup`).
//!
//! The agents themselves (users and session tokens) are written into the
//! gateway's database before it starts (`provision`), the way the agent
//! API tests make them: `Directory::create_user` and `Sessions::create`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use switchboard_gateway::api::auth::seal::Sealer;
use switchboard_gateway::api::auth::Sessions;
use switchboard_gateway::directory::{Directory, NewUser};
use switchboard_store::Database;
use tokio::sync::mpsc;

use crate::browser::Browsers;
use crate::media::{CallShared, MediaPool};

/// One provisioned agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Agent {
    pub user_id: String,
    pub token: String,
}

/// Creates `count` agents with a session each, and makes `main_line` (owned
/// by the first) the company main line so that every agent may present it.
pub async fn provision(db_url: &str, token_key: &str, count: usize, main_line: &str, ttl: Duration) -> anyhow::Result<Vec<Agent>> {
    let db = Database::connect(db_url).await.context("opening the gateway's database")?;
    db.check_migrated().await.context("the database is not migrated (switchboard migrate)")?;
    let directory = Directory::new(db.clone());
    let sealer = Sealer::from_base64(token_key).map_err(|e| anyhow::anyhow!("--token-key: {e}"))?;
    let sessions = Sessions::new(db.clone(), sealer, ttl);
    let mut agents = Vec::with_capacity(count);
    for i in 0..count {
        let user = directory.create_user(NewUser { name: format!("Browser Bench {i:04}"), ..Default::default() }).await.context("creating a user")?;
        let (token, _) = sessions.create(&user.id, None).await.context("creating a session")?;
        agents.push(Agent { user_id: user.id, token });
    }
    if let Some(first) = agents.first() {
        directory.assign_number(main_line, &first.user_id).await.context("assigning the main line")?;
        directory.set_main_line(main_line, true).await.context("setting the main line")?;
    }
    db.close().await;
    Ok(agents)
}

/// A WebRTC offer of the gateway's for one of the agent's legs.
#[derive(Debug)]
struct Offer {
    leg_id: String,
    call_id: String,
    sdp: String,
}

/// One agent's softphone page: registered, its event stream open.
pub struct Page {
    http: reqwest::Client,
    base: String,
    token: String,
    device_id: String,
    offers: tokio::sync::Mutex<mpsc::UnboundedReceiver<Offer>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A placed call.
pub struct Placed {
    pub call_id: String,
}

fn check(status: reqwest::StatusCode, what: &str, body: &str) -> anyhow::Result<()> {
    if !status.is_success() {
        bail!("{what}: HTTP {status}: {}", body.chars().take(300).collect::<String>());
    }
    Ok(())
}

impl Page {
    /// Registers the page of `agent` and opens its event stream.
    pub async fn open(http: reqwest::Client, base: &str, agent: &Agent, instance: String) -> anyhow::Result<Page> {
        let r = http.post(format!("{base}/v1/softphone")).bearer_auth(&agent.token).json(&json!({ "instance": instance })).send().await?;
        let (status, body) = (r.status(), r.text().await?);
        check(status, "POST /v1/softphone", &body)?;
        let registered: Value = serde_json::from_str(&body)?;
        let device_id = registered["device_id"].as_str().context("no device_id")?.to_owned();
        let r = http.post(format!("{base}/v1/stream-tickets")).bearer_auth(&agent.token).send().await?;
        let (status, body) = (r.status(), r.text().await?);
        check(status, "POST /v1/stream-tickets", &body)?;
        let ticket: Value = serde_json::from_str(&body)?;
        let ticket = ticket["ticket"].as_str().context("no ticket")?;
        let ws_url = format!("{}/v1/events/ws?ticket={ticket}", base.replacen("http", "ws", 1));
        let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await.context("opening the event WebSocket")?;
        let (tx, rx) = mpsc::unbounded_channel();
        // The stream: offers go to the page; every frame is read, as the
        // page does (the library answers the server's pings).
        let reader = tokio::spawn(async move {
            use tokio_tungstenite::tungstenite::Message;
            let mut ws = ws;
            let mut ping = tokio::time::interval(Duration::from_secs(20));
            loop {
                tokio::select! {
                    frame = ws.next() => {
                        let text = match frame {
                            Some(Ok(Message::Text(text))) => text,
                            Some(Ok(_)) => continue,
                            _ => break,
                        };
                        let Ok(event) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                        if event["type"] == "webrtc.offer" {
                            let leg = &event["leg"];
                            let offer = Offer {
                                leg_id: leg["id"].as_str().unwrap_or_default().to_owned(),
                                call_id: leg["call_id"].as_str().unwrap_or_default().to_owned(),
                                sdp: leg["sdp"].as_str().unwrap_or_default().to_owned(),
                            };
                            if tx.send(offer).is_err() {
                                break;
                            }
                        }
                    }
                    // The page's own keep-alive, answered {"type":"pong"}.
                    _ = ping.tick() => {
                        if ws.send(Message::text(r#"{"type":"ping"}"#)).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        // The registration lives 60 s: the page refreshes it every 25 s.
        let (h, url, token, body) = (http.clone(), format!("{base}/v1/softphone"), agent.token.clone(), json!({ "instance": instance }));
        let refresher = tokio::spawn(async move {
            let mut every = tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(25), Duration::from_secs(25));
            loop {
                every.tick().await;
                let _ = h.post(&url).bearer_auth(&token).json(&body).send().await;
            }
        });
        Ok(Page {
            http,
            base: base.to_owned(),
            token: agent.token.clone(),
            device_id,
            offers: tokio::sync::Mutex::new(rx),
            tasks: vec![reader, refresher],
        })
    }

    /// Places a call to `to` from the browser and answers the browser leg's
    /// offer; the browser goes to the media threads.
    pub async fn call(&self, to: &str, browsers: &Browsers, media: &MediaPool, shared: Arc<CallShared>, timeout: Duration) -> anyhow::Result<Placed> {
        let r = self
            .http
            .post(format!("{}/v1/calls", self.base))
            .bearer_auth(&self.token)
            .json(&json!({ "to": to, "device_id": self.device_id }))
            .send()
            .await?;
        let (status, body) = (r.status(), r.text().await?);
        check(status, "POST /v1/calls", &body)?;
        let view: Value = serde_json::from_str(&body)?;
        let call_id = view["id"].as_str().context("no call id")?.to_owned();
        let mut offers = self.offers.lock().await;
        let offer = tokio::time::timeout(timeout, async {
            while let Some(o) = offers.recv().await {
                if o.call_id == call_id {
                    return Some(o);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .context("no webrtc.offer for the call")?;
        drop(offers);
        let (browser, answer) = browsers.answer(&offer.sdp, shared)?;
        if std::env::var_os("WEBRTCLOAD_TRACE_SDP").is_some() {
            eprintln!("offer:\n{}\nanswer:\n{answer}", offer.sdp);
        }
        let r = self
            .http
            .post(format!("{}/v1/webrtc/legs/{}/answer", self.base, offer.leg_id))
            .bearer_auth(&self.token)
            .json(&json!({ "sdp": answer }))
            .send()
            .await?;
        let (status, body) = (r.status(), r.text().await?);
        check(status, "POST /v1/webrtc/legs/{id}/answer", &body)?;
        media.add_browser(browser);
        Ok(Placed { call_id })
    }

    pub async fn hang_up(&self, placed: &Placed) -> anyhow::Result<()> {
        let r = self.http.post(format!("{}/v1/calls/{}/hangup", self.base, placed.call_id)).bearer_auth(&self.token).send().await?;
        let (status, body) = (r.status(), r.text().await?);
        check(status, "POST /v1/calls/{id}/hangup", &body)
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
