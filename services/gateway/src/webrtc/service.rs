//! The browser phones: softphone pages registered as their users' browser
//! device, the SIP agent the call manager reaches them through
//! ([`BrowserUa`]), and the WebRTC edge their media goes through
//! ([`Edge`]). One task owns it all; the agent API talks to it through
//! [`BrowserPhones`].
//!
//! A page registers (`POST /v1/softphone`) with an instance id: that
//! becomes a registration binding of the user's browser device, at the
//! agent's contact for that instance. When the manager's INVITE for it
//! arrives, the edge makes a WebRTC offer, the page gets it on its event
//! stream (`webrtc.offer`), and its answer (`POST
//! /v1/webrtc/legs/{id}/answer`) turns into the agent's 200 OK, with the
//! leg's loopback RTP address as the media. A leg whose browser stops
//! answering or closes it (a reload) is hung up after `DISCONNECT_GRACE`
//! unless an ICE restart or a move to a new page came first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::edge::{Edge, EdgeEvent};
use super::peer::AudioCodec;
use super::turn::{IceServer, Turn};
use super::ua::{BrowserUa, Incoming, UaEvent, UaOutput};
use crate::calls::live::{AgentEventKind, LiveCalls, WebRtcLegView};
use crate::directory::Directory;
use crate::media::local::LocalNet;
use crate::media::sdp::{self, Direction};
use crate::registrations::Registrations;
use crate::sip::registrar::{Binding, Change};
use crate::sip::Destination;

/// How long a registration of a page lasts without a refresh.
pub const REGISTRATION_SECS: u64 = 60;
/// How long a leg whose browser went quiet waits for it to come back.
const DISCONNECT_GRACE: Duration = Duration::from_secs(20);

/// Why a request about a browser phone failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("no browser leg {0} of yours")]
    NoLeg(String),
    #[error("{0}")]
    Refused(String),
    #[error("the browser phones are not running")]
    Down,
    #[error("{0}")]
    Store(String),
}

/// A page's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub device_id: String,
    pub instance: String,
    pub expires_in_secs: u64,
    /// TURN servers with fresh credentials, when configured.
    pub ice_servers: Vec<IceServer>,
}

enum Request {
    Register { user_id: String, instance: String, reply: oneshot::Sender<Result<Registered, PhoneError>> },
    Unregister { user_id: String, instance: String },
    Answer { user_id: String, leg: String, sdp: String, reply: oneshot::Sender<Result<(), PhoneError>> },
    Reoffer { user_id: String, leg: String, sdp: String, reply: oneshot::Sender<Result<String, PhoneError>> },
    Decline { user_id: String, leg: String, reply: oneshot::Sender<Result<(), PhoneError>> },
}

/// Handle for the agent API.
#[derive(Debug, Clone)]
pub struct BrowserPhones {
    tx: mpsc::UnboundedSender<Request>,
    /// The UDP address browsers send media to.
    pub media: SocketAddr,
}

impl BrowserPhones {
    /// Starts the agent (SIP on the loopback) and the edge (WebRTC media on
    /// `listen`, announced as `announce`, in memory to the media threads'
    /// sockets in `net`).
    pub async fn start(
        listen: SocketAddr,
        announce: Option<SocketAddr>,
        directory: Directory,
        registrations: Registrations,
        live: LiveCalls,
        turn: Option<Turn>,
        net: std::sync::Arc<LocalNet>,
        shutdown: CancellationToken,
    ) -> std::io::Result<BrowserPhones> {
        let (edge_tx, edge_rx) = mpsc::unbounded_channel();
        let edge = Edge::start(listen, announce, edge_tx, net)?;
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let local = socket.local_addr()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let media = edge.local_addr();
        let service = Service {
            ua: BrowserUa::new(local),
            socket,
            local,
            edge,
            live,
            directory,
            registrations,
            instances: HashMap::new(),
            legs: HashMap::new(),
            by_dialog: HashMap::new(),
            cseq: 0,
            turn,
        };
        tokio::spawn(service.run(rx, edge_rx, shutdown));
        tracing::info!(sip = %local, "browser phones ready");
        Ok(BrowserPhones { tx, media })
    }

    /// Registers the page `instance` of `user_id` (or refreshes it).
    pub async fn register(&self, user_id: &str, instance: &str) -> Result<Registered, PhoneError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Register { user_id: user_id.into(), instance: instance.into(), reply }).map_err(|_| PhoneError::Down)?;
        rx.await.map_err(|_| PhoneError::Down)?
    }

    /// The page is closing.
    pub fn unregister(&self, user_id: &str, instance: &str) {
        let _ = self.tx.send(Request::Unregister { user_id: user_id.into(), instance: instance.into() });
    }

    /// The page's answer to a leg's offer.
    pub async fn answer(&self, user_id: &str, leg: &str, sdp: String) -> Result<(), PhoneError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Answer { user_id: user_id.into(), leg: leg.into(), sdp, reply }).map_err(|_| PhoneError::Down)?;
        rx.await.map_err(|_| PhoneError::Down)?
    }

    /// The agent declines a leg that rings (603 Decline to the call, which
    /// rings its other devices on, or fails the transfer that offered it).
    pub async fn decline(&self, user_id: &str, leg: &str) -> Result<(), PhoneError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Decline { user_id: user_id.into(), leg: leg.into(), reply }).map_err(|_| PhoneError::Down)?;
        rx.await.map_err(|_| PhoneError::Down)?
    }

    /// A new offer of the page's on a leg (ICE restart); answers ours.
    pub async fn reoffer(&self, user_id: &str, leg: &str, sdp: String) -> Result<String, PhoneError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Reoffer { user_id: user_id.into(), leg: leg.into(), sdp, reply }).map_err(|_| PhoneError::Down)?;
        rx.await.map_err(|_| PhoneError::Down)?
    }
}

struct Instance {
    user_id: String,
    device_id: String,
}

struct Leg {
    id: u64,
    dialog: String,
    user_id: String,
    view: WebRtcLegView,
    /// Where the edge takes the bridge's RTP.
    inner: SocketAddr,
    answered: bool,
    quiet_since: Option<Instant>,
}

struct Service {
    ua: BrowserUa,
    socket: UdpSocket,
    local: SocketAddr,
    edge: Edge,
    live: LiveCalls,
    directory: Directory,
    registrations: Registrations,
    instances: HashMap<String, Instance>,
    legs: HashMap<String, Leg>,
    by_dialog: HashMap<String, String>,
    cseq: u32,
    turn: Option<Turn>,
}

impl Service {
    async fn run(mut self, mut requests: mpsc::UnboundedReceiver<Request>, mut edge_events: mpsc::UnboundedReceiver<EdgeEvent>, shutdown: CancellationToken) {
        let mut buf = vec![0u8; 65_536];
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                received = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, from)) = received {
                        self.ua.receive(Instant::now(), from, &buf[..n]);
                    }
                }
                Some(request) = requests.recv() => self.request(request).await,
                Some(event) = edge_events.recv() => self.edge_event(event),
                _ = sleep_until(deadline) => {
                    let now = Instant::now();
                    self.ua.handle_timeout(now);
                    self.hang_up_quiet(now);
                }
            }
            self.flush().await;
        }
        // Pages' legs end with the gateway.
        let dialogs: Vec<String> = self.legs.values().map(|l| l.dialog.clone()).collect();
        for dialog in dialogs {
            self.ua.hang_up(Instant::now(), &dialog);
        }
        self.flush().await;
    }

    fn next_deadline(&self) -> Option<Instant> {
        let quiet = self.legs.values().filter_map(|l| l.quiet_since.map(|t| t + DISCONNECT_GRACE)).min();
        [self.ua.next_timeout(), quiet].into_iter().flatten().min()
    }

    /// Sends what the agent wants sent and handles its events.
    async fn flush(&mut self) {
        while let Some(out) = self.ua.poll() {
            match out {
                UaOutput::Send { to, bytes } => {
                    if let Err(e) = self.socket.send_to(&bytes, to).await {
                        tracing::warn!(error = %e, %to, "the browser phones' SIP agent could not send");
                    }
                }
                UaOutput::Event(UaEvent::Incoming(incoming)) => self.incoming(incoming).await,
                UaOutput::Event(UaEvent::Retarget { dialog, rtp }) => {
                    if let Some(leg) = self.by_dialog.get(&dialog).and_then(|id| self.legs.get(id)) {
                        self.edge.retarget(leg.id, rtp);
                    }
                }
                UaOutput::Event(UaEvent::Ended { dialog }) => self.ended(&dialog),
            }
        }
    }

    async fn incoming(&mut self, incoming: Incoming) {
        let Some(instance) = self.instances.get(&incoming.instance) else {
            tracing::info!(instance = %incoming.instance, call_id = %incoming.call_id, "a call for a softphone page that is gone");
            self.ua.refuse(Instant::now(), &incoming.dialog, 480);
            return;
        };
        let user_id = instance.user_id.clone();
        let codecs: Vec<AudioCodec> = incoming.offer.formats.iter().filter_map(AudioCodec::of_format).fold(Vec::new(), |mut v, c| {
            if !v.contains(&c) {
                v.push(c);
            }
            v
        });
        if codecs.is_empty() {
            self.ua.refuse(Instant::now(), &incoming.dialog, 488);
            return;
        }
        let id: u64 = rand::random();
        let leg_id = format!("{id:016x}");
        match self.edge.create(id, codecs, incoming.offer.rtp, incoming.offer.formats.clone()).await {
            Ok((sdp, inner)) => {
                let view = WebRtcLegView { id: leg_id.clone(), call_id: incoming.call_id.clone(), instance: incoming.instance.clone(), sdp, auto_answer: incoming.auto_answer, caller_number: incoming.caller_number.clone(), caller_name: incoming.caller_name.clone() };
                tracing::info!(call_id = %incoming.call_id, leg = %leg_id, user_id = %user_id, auto_answer = incoming.auto_answer, "browser leg offered");
                metrics::counter!("switchboard_webrtc_legs_offered_total").increment(1);
                self.live.send_leg(&user_id, AgentEventKind::WebRtcOffer, view.clone());
                self.by_dialog.insert(incoming.dialog.clone(), leg_id.clone());
                self.legs.insert(leg_id, Leg { id, dialog: incoming.dialog, user_id, view, inner, answered: false, quiet_since: None });
            }
            Err(e) => {
                tracing::warn!(call_id = %incoming.call_id, error = %e, "no browser leg could be set up");
                self.ua.refuse(Instant::now(), &incoming.dialog, 500);
            }
        }
    }

    fn ended(&mut self, dialog: &str) {
        let Some(leg_id) = self.by_dialog.remove(dialog) else { return };
        let Some(leg) = self.legs.remove(&leg_id) else { return };
        self.edge.close(leg.id);
        tracing::info!(call_id = %leg.view.call_id, leg = %leg_id, "browser leg ended");
        let view = WebRtcLegView { sdp: String::new(), caller_number: String::new(), caller_name: None, ..leg.view };
        self.live.send_leg(&leg.user_id, AgentEventKind::WebRtcEnded, view);
    }

    fn edge_event(&mut self, event: EdgeEvent) {
        let (id, what) = match event {
            EdgeEvent::Connected(id) => (id, 0),
            EdgeEvent::Disconnected(id) => (id, 1),
            EdgeEvent::Closed(id) => (id, 2),
        };
        let Some(leg) = self.legs.values_mut().find(|l| l.id == id) else { return };
        match what {
            0 => leg.quiet_since = None,
            1 => {
                tracing::info!(call_id = %leg.view.call_id, leg = %leg.view.id, "the browser stopped answering; waiting for it");
                leg.quiet_since.get_or_insert_with(Instant::now);
            }
            _ => {
                // The page went away (reload, closed tab, crash): the call
                // waits as for a lost network, so a reloaded page can take
                // it back ("Call in Salesforce") before it is hung up.
                tracing::info!(call_id = %leg.view.call_id, leg = %leg.view.id, "the browser closed its leg; the call waits for the agent to take it back");
                leg.quiet_since.get_or_insert_with(Instant::now);
            }
        }
    }

    fn hang_up_quiet(&mut self, now: Instant) {
        let quiet: Vec<String> = self.legs.values().filter(|l| l.quiet_since.is_some_and(|t| t + DISCONNECT_GRACE <= now)).map(|l| l.dialog.clone()).collect();
        for dialog in quiet {
            tracing::info!(%dialog, "the browser did not come back; hanging its leg up");
            self.ua.hang_up(now, &dialog);
        }
    }

    async fn request(&mut self, request: Request) {
        match request {
            Request::Register { user_id, instance, reply } => {
                let _ = reply.send(self.register(&user_id, &instance).await);
            }
            Request::Unregister { user_id, instance } => {
                if self.instances.get(&instance).is_some_and(|i| i.user_id == user_id) {
                    if let Some(i) = self.instances.remove(&instance) {
                        let contact = self.ua.contact(&instance);
                        if let Err(e) = self.registrations.apply(&i.device_id, &[Change::Remove { contact }]).await {
                            tracing::warn!(error = %e, "removing a softphone page's registration failed; it expires by itself");
                        }
                    }
                }
            }
            Request::Answer { user_id, leg, sdp, reply } => {
                let _ = reply.send(self.answer(&user_id, &leg, sdp).await);
            }
            Request::Reoffer { user_id, leg, sdp, reply } => {
                let result = match self.legs.get(&leg).filter(|l| l.user_id == user_id) {
                    None => Err(PhoneError::NoLeg(leg)),
                    Some(l) => self.edge.reoffer(l.id, sdp).await.map_err(PhoneError::Refused),
                };
                let _ = reply.send(result);
            }
            Request::Decline { user_id, leg, reply } => {
                let result = match self.legs.get(&leg).filter(|l| l.user_id == user_id) {
                    None => Err(PhoneError::NoLeg(leg)),
                    Some(l) if l.answered => Err(PhoneError::Refused(format!("browser leg {leg} is answered already; hang up the call instead"))),
                    Some(l) => {
                        tracing::info!(call_id = %l.view.call_id, leg = %leg, "browser leg declined");
                        metrics::counter!("switchboard_webrtc_legs_declined_total").increment(1);
                        let dialog = l.dialog.clone();
                        self.ua.refuse(Instant::now(), &dialog, 603);
                        Ok(())
                    }
                };
                let _ = reply.send(result);
                self.flush().await;
            }
        }
    }

    async fn register(&mut self, user_id: &str, instance: &str) -> Result<Registered, PhoneError> {
        if let Some(existing) = self.instances.get(instance) {
            if existing.user_id != user_id {
                return Err(PhoneError::Refused(format!("instance {instance} belongs to another session; use a fresh random id per page")));
            }
        }
        let device = self.directory.browser_device(user_id).await.map_err(|e| PhoneError::Store(e.to_string()))?;
        self.cseq = self.cseq.wrapping_add(1);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let binding = Binding {
            contact: self.ua.contact(instance),
            expires_at: now + REGISTRATION_SECS,
            call_id: format!("browser-{instance}"),
            cseq: self.cseq,
            source: Destination::Udp(self.local),
        };
        self.registrations.apply(&device.id, &[Change::Upsert(binding)]).await.map_err(|e| PhoneError::Store(e.to_string()))?;
        self.instances.insert(instance.to_owned(), Instance { user_id: user_id.to_owned(), device_id: device.id.clone() });
        let ice_servers = self.turn.iter().map(|t| t.credentials(user_id, now)).collect();
        Ok(Registered { device_id: device.id, instance: instance.to_owned(), expires_in_secs: REGISTRATION_SECS, ice_servers })
    }

    async fn answer(&mut self, user_id: &str, leg_id: &str, sdp: String) -> Result<(), PhoneError> {
        let Some(leg) = self.legs.get(leg_id).filter(|l| l.user_id == user_id) else { return Err(PhoneError::NoLeg(leg_id.to_owned())) };
        if leg.answered {
            return Err(PhoneError::Refused(format!("browser leg {leg_id} is answered already")));
        }
        let (id, dialog, inner) = (leg.id, leg.dialog.clone(), leg.inner);
        let settled = self.edge.answer(id, sdp).await.map_err(PhoneError::Refused)?;
        let session: u64 = rand::random::<u32>().into();
        let answer = sdp::build_with(session, 1, inner.ip(), inner.port(), &settled.sip_formats, Direction::SendRecv, true);
        if !self.ua.answer(Instant::now(), &dialog, answer) {
            return Err(PhoneError::Refused(format!("browser leg {leg_id} no longer rings")));
        }
        if let Some(leg) = self.legs.get_mut(leg_id) {
            leg.answered = true;
            tracing::info!(call_id = %leg.view.call_id, leg = %leg_id, codec = settled.chosen.codec.name(), "browser leg answered");
        }
        metrics::counter!("switchboard_webrtc_legs_answered_total", "codec" => settled.chosen.codec.name()).increment(1);
        self.flush().await;
        Ok(())
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
