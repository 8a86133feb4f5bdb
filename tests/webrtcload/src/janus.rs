//! Browser calls through Janus's SIP plugin, over Janus's HTTP API, as
//! its `siptest` page makes them: a session, a handle on
//! `janus.plugin.sip`, a guest registration (no REGISTER is sent), then
//! `call` with the browser's JSEP offer; the `accepted` event brings the
//! answer once the far end said 200. Events come by long polls
//! (`GET /janus/<session>?maxev=…`), which also keep the session alive.
//!
//! Janus's SIP plugin relays media and does not transcode: the far end
//! sees the browser's codecs, so a browser speaking only Opus cannot
//! reach a G.711-only far end through it (488).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::browser::Browsers;
use crate::media::{CallShared, MediaPool};

static TRANSACTION: AtomicU64 = AtomicU64::new(1);

fn transaction() -> String {
    format!("t{}", TRANSACTION.fetch_add(1, Ordering::Relaxed))
}

/// One browser's Janus session with its SIP handle.
pub struct JanusPage {
    http: reqwest::Client,
    session_url: String,
    handle_url: String,
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<Value>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> anyhow::Result<Value> {
    let r = http.post(url).json(&body).send().await.with_context(|| format!("POST {url}"))?;
    let v: Value = r.json().await.with_context(|| format!("the answer of POST {url}"))?;
    match v["janus"].as_str() {
        Some("success") | Some("ack") => Ok(v),
        _ => bail!("Janus refused {}: {}", body["janus"], v["error"]),
    }
}

impl JanusPage {
    /// Creates a session and a SIP handle, registers `user` as a guest.
    pub async fn open(http: reqwest::Client, base: &str, user: &str) -> anyhow::Result<JanusPage> {
        let v = post(&http, base, json!({ "janus": "create", "transaction": transaction() })).await?;
        let session = v["data"]["id"].as_u64().context("no session id")?;
        let session_url = format!("{base}/{session}");
        let v = post(&http, &session_url, json!({ "janus": "attach", "plugin": "janus.plugin.sip", "transaction": transaction() })).await?;
        let handle = v["data"]["id"].as_u64().context("no handle id")?;
        let handle_url = format!("{session_url}/{handle}");
        let (tx, rx) = mpsc::unbounded_channel();
        let (h, url) = (http.clone(), format!("{session_url}?maxev=10"));
        let poller = tokio::spawn(async move {
            loop {
                let Ok(r) = h.get(&url).send().await else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let Ok(v) = r.json::<Value>().await else { continue };
                let events = match v {
                    Value::Array(a) => a,
                    other => vec![other],
                };
                for e in events {
                    if e["janus"] == "keepalive" {
                        continue;
                    }
                    if tx.send(e).is_err() {
                        return;
                    }
                }
            }
        });
        // janus.js's keep-alive: every 25 s, whatever the transport.
        let (h, url) = (http.clone(), session_url.clone());
        let keepalive = tokio::spawn(async move {
            let mut every = tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(25), Duration::from_secs(25));
            loop {
                every.tick().await;
                let _ = post(&h, &url, json!({ "janus": "keepalive", "transaction": transaction() })).await;
            }
        });
        let page = JanusPage { http, session_url, handle_url, events: tokio::sync::Mutex::new(rx), tasks: vec![poller, keepalive] };
        page.message(json!({ "request": "register", "type": "guest", "username": user }), None).await?;
        page.wait_event("registered", Duration::from_secs(10)).await?;
        Ok(page)
    }

    async fn message(&self, body: Value, jsep: Option<Value>) -> anyhow::Result<Value> {
        let mut m = json!({ "janus": "message", "transaction": transaction(), "body": body });
        if let Some(j) = jsep {
            m["jsep"] = j;
        }
        post(&self.http, &self.handle_url, m).await
    }

    /// Waits for the SIP plugin's event `name`; an error or hang-up ends the wait.
    async fn wait_event(&self, name: &str, timeout: Duration) -> anyhow::Result<Value> {
        let mut events = self.events.lock().await;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let e = tokio::time::timeout_at(deadline, events.recv()).await.with_context(|| format!("no {name} event from Janus"))?.context("the event poll ended")?;
            let data = &e["plugindata"]["data"];
            if let Some(error) = data["error"].as_str() {
                bail!("Janus SIP error {}: {error}", data["error_code"]);
            }
            match data["result"]["event"].as_str() {
                Some(n) if n == name => return Ok(e),
                Some("hangup") => bail!("hung up: {} {}", data["result"]["code"], data["result"]["reason"]),
                _ => {}
            }
        }
    }

    /// Calls `uri` with a fresh browser's offer and takes the answer.
    pub async fn call(&self, uri: &str, browsers: &Browsers, media: &MediaPool, shared: Arc<CallShared>, timeout: Duration) -> anyhow::Result<()> {
        let offering = browsers.offer()?;
        let jsep = json!({ "type": "offer", "sdp": offering.sdp, "trickle": false });
        self.message(json!({ "request": "call", "uri": uri }), Some(jsep)).await?;
        let accepted = self.wait_event("accepted", timeout).await?;
        let answer = accepted["jsep"]["sdp"].as_str().context("no JSEP answer in the accepted event")?;
        if std::env::var_os("WEBRTCLOAD_TRACE_SDP").is_some() {
            eprintln!("offer:\n{}\nanswer:\n{answer}", offering.sdp);
        }
        let browser = browsers.accept(offering, answer, shared)?;
        media.add_browser(browser);
        Ok(())
    }

    pub async fn hang_up(&self) -> anyhow::Result<()> {
        self.message(json!({ "request": "hangup" }), None).await.map(|_| ())
    }

    pub async fn close(self) {
        let _ = post(&self.http, &self.session_url, json!({ "janus": "destroy", "transaction": transaction() })).await;
        for t in &self.tasks {
            t.abort();
        }
    }
}
