//! The browser legs' media edge: one thread owning the UDP port every
//! browser reaches (ICE-lite host candidate), each leg's [`Peer`], and each
//! leg's plain-RTP socket on the loopback towards the call's media bridge.
//!
//! A datagram on the shared port goes to the leg that already talks to its
//! source address, else to the leg whose ICE credentials its STUN check
//! names; nothing else is taken. RTP from the browser leaves SRTP and goes
//! to the bridge with the payload types of the SIP side; RTP from the
//! bridge goes to the browser with the browser's. RTCP from the bridge is
//! dropped: str0m reports to the browser itself. One `epoll` loop, as the
//! media threads (decision 0012), with a deadline heap for the peers'
//! timers and an eventfd for commands.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use rustix::event::{epoll, eventfd, EventfdFlags};
use rustix::io::Errno;
use tokio::sync::{mpsc as tokio_mpsc, oneshot};

use super::peer::{AudioCodec, Chosen, Peer, PeerOutput, PeerSetup, Transport};
use crate::media::rtp;
use crate::media::sdp::Format;

const WAKE: u64 = u64::MAX;
const PUBLIC: u64 = u64::MAX - 1;

/// What the edge tells the browser-phone service about a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeEvent {
    Connected(u64),
    /// The browser stopped answering (network change); it may come back.
    Disconnected(u64),
    Closed(u64),
}

/// What a leg's answer settled: the browser's choice and the SIP formats
/// that carry it towards the bridge (codec, then telephone-event if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub chosen: Chosen,
    pub sip_formats: Vec<Format>,
}

enum Command {
    Create { leg: u64, codecs: Vec<AudioCodec>, bridge: SocketAddr, sip_offer: Vec<Format>, reply: oneshot::Sender<Result<(String, SocketAddr), String>> },
    Answer { leg: u64, sdp: String, reply: oneshot::Sender<Result<Settled, String>> },
    Reoffer { leg: u64, sdp: String, reply: oneshot::Sender<Result<String, String>> },
    Retarget { leg: u64, bridge: SocketAddr },
    Close { leg: u64 },
    Shutdown,
}

/// Handle to the edge thread; cheap to clone. The thread stops when the
/// last handle is dropped.
#[derive(Debug, Clone)]
pub struct Edge {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<Command>,
    wake: OwnedFd,
    local: SocketAddr,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Shutdown);
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }
}

impl Edge {
    /// Binds `listen` (UDP) and starts the thread; browsers are told to
    /// reach `announce` (the same port seen from outside; `listen` itself
    /// when `None`). Events go to `events`.
    pub fn start(listen: SocketAddr, announce: Option<SocketAddr>, events: tokio_mpsc::UnboundedSender<EdgeEvent>) -> std::io::Result<Edge> {
        let socket = UdpSocket::bind(listen)?;
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        // A port of 0 was a free one: announce the one bound.
        let announce = announce.map(|a| if a.port() == 0 { SocketAddr::new(a.ip(), local.port()) } else { a }).unwrap_or(local);
        let setup = PeerSetup::new(announce, None).ok_or_else(|| std::io::Error::other("no DTLS certificate could be made"))?;
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(&epoll, &wake, epoll::EventData::new_u64(WAKE), epoll::EventFlags::IN)?;
        epoll::add(&epoll, &socket, epoll::EventData::new_u64(PUBLIC), epoll::EventFlags::IN)?;
        let (tx, rx) = mpsc::channel();
        let wake_reader = rustix::io::dup(&wake)?;
        let mut state = EdgeLoop { epoll, wake: wake_reader, inbox: rx, public: socket, local, announce, setup, legs: HashMap::new(), by_source: HashMap::new(), timers: BinaryHeap::new(), events };
        std::thread::Builder::new().name("webrtc-edge".into()).spawn(move || state.run())?;
        tracing::info!(%local, %announce, "browser phones' WebRTC media on UDP");
        Ok(Edge { inner: Arc::new(Inner { tx, wake, local }) })
    }

    /// The UDP address the edge listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    fn send(&self, command: Command) -> bool {
        if self.inner.tx.send(command).is_err() {
            return false;
        }
        let _ = rustix::io::write(&self.inner.wake, &1u64.to_ne_bytes());
        true
    }

    /// A new leg towards the bridge at `bridge` whose SIP offer lists
    /// `sip_offer`; answers the browser's SDP offer and the loopback
    /// address the bridge is to send to.
    pub async fn create(&self, leg: u64, codecs: Vec<AudioCodec>, bridge: SocketAddr, sip_offer: Vec<Format>) -> Result<(String, SocketAddr), String> {
        let (reply, rx) = oneshot::channel();
        if !self.send(Command::Create { leg, codecs, bridge, sip_offer, reply }) {
            return Err("the WebRTC edge is not running".into());
        }
        rx.await.map_err(|_| "the WebRTC edge stopped".to_owned())?
    }

    /// The browser's answer to the leg's offer.
    pub async fn answer(&self, leg: u64, sdp: String) -> Result<Settled, String> {
        let (reply, rx) = oneshot::channel();
        if !self.send(Command::Answer { leg, sdp, reply }) {
            return Err("the WebRTC edge is not running".into());
        }
        rx.await.map_err(|_| "the WebRTC edge stopped".to_owned())?
    }

    /// A new offer of the browser's on the leg (ICE restart); answers ours.
    pub async fn reoffer(&self, leg: u64, sdp: String) -> Result<String, String> {
        let (reply, rx) = oneshot::channel();
        if !self.send(Command::Reoffer { leg, sdp, reply }) {
            return Err("the WebRTC edge is not running".into());
        }
        rx.await.map_err(|_| "the WebRTC edge stopped".to_owned())?
    }

    pub fn retarget(&self, leg: u64, bridge: SocketAddr) {
        self.send(Command::Retarget { leg, bridge });
    }

    pub fn close(&self, leg: u64) {
        self.send(Command::Close { leg });
    }
}

struct Leg {
    peer: Peer,
    inner: UdpSocket,
    bridge: SocketAddr,
    sip_offer: Vec<Format>,
    /// Browser payload type → SIP payload type, and back.
    to_sip: HashMap<u8, u8>,
    to_web: HashMap<u8, u8>,
    ssrc: u32,
    armed: Option<Instant>,
    /// The browser's address once it talks to us.
    source: Option<SocketAddr>,
}

struct EdgeLoop {
    epoll: OwnedFd,
    wake: OwnedFd,
    inbox: mpsc::Receiver<Command>,
    public: UdpSocket,
    local: SocketAddr,
    announce: SocketAddr,
    setup: PeerSetup,
    legs: HashMap<u64, Leg>,
    by_source: HashMap<SocketAddr, u64>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    events: tokio_mpsc::UnboundedSender<EdgeEvent>,
}

impl EdgeLoop {
    fn run(&mut self) {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
        let mut buf = vec![0u8; 2048];
        loop {
            match crate::media::threads::wait(&self.epoll, &mut events, self.timers.peek().map(|Reverse((t, _))| *t)) {
                Ok(()) => {}
                Err(Errno::INTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "the WebRTC edge cannot wait for its sockets; browser legs have no audio");
                    return;
                }
            }
            let mut woken = false;
            for ev in &events {
                match ev.data.u64() {
                    WAKE => woken = true,
                    PUBLIC => self.public_readable(&mut buf),
                    leg => self.inner_readable(leg, &mut buf),
                }
            }
            if woken {
                let mut counter = [0u8; 8];
                let _ = rustix::io::read(&self.wake, &mut counter);
                if !self.drain_inbox() {
                    return;
                }
            }
            self.fire_timers();
        }
    }

    fn public_readable(&mut self, buf: &mut [u8]) {
        // Level-triggered: one datagram per wake-up keeps legs fair.
        let (n, source) = match self.public.recv_from(buf) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => {
                tracing::debug!(error = %e, "reading the WebRTC port failed");
                return;
            }
        };
        let now = Instant::now();
        let bytes = &buf[..n];
        let leg = match self.by_source.get(&source) {
            Some(&leg) => Some(leg),
            None => self.legs.iter().find(|(_, l)| l.peer.accepts(now, Transport::Udp, source, self.local, bytes)).map(|(&id, _)| id),
        };
        let Some(id) = leg else {
            metrics::counter!("switchboard_webrtc_datagrams_dropped_total", "reason" => "unknown_source").increment(1);
            return;
        };
        let Some(l) = self.legs.get_mut(&id) else { return };
        // The announced address is what str0m knows itself as.
        if l.peer.receive(now, Transport::Udp, source, self.announce, bytes) && l.source != Some(source) {
            if let Some(old) = l.source.replace(source) {
                self.by_source.remove(&old);
            }
            self.by_source.insert(source, id);
        }
        self.after(id, now);
    }

    fn inner_readable(&mut self, id: u64, buf: &mut [u8]) {
        let Some(l) = self.legs.get_mut(&id) else { return };
        let n = match l.inner.recv_from(buf) {
            Ok((n, _)) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(_) => return,
        };
        if rtp::is_rtcp(&buf[..n]) {
            return;
        }
        let Some(packet) = rtp::parse(&buf[..n]) else { return };
        let Some(&pt) = l.to_web.get(&packet.payload_type) else {
            metrics::counter!("switchboard_webrtc_datagrams_dropped_total", "reason" => "payload_type").increment(1);
            return;
        };
        let now = Instant::now();
        l.peer.send_rtp(now, pt, packet.timestamp, packet.marker, packet.payload);
        self.after(id, now);
    }

    /// Carries out what the leg's peer asks, and rearms its timer.
    fn after(&mut self, id: u64, now: Instant) {
        let Some(l) = self.legs.get_mut(&id) else { return };
        let mut closed = false;
        while let Some(out) = l.peer.poll() {
            match out {
                PeerOutput::Transmit { destination, bytes, .. } => {
                    if let Err(e) = self.public.send_to(&bytes, destination) {
                        tracing::debug!(error = %e, %destination, "sending to a browser failed");
                    }
                }
                PeerOutput::Rtp { pt, seq, timestamp, marker, payload } => {
                    let Some(&sip_pt) = l.to_sip.get(&pt) else { continue };
                    let mut packet = rtp::build(sip_pt, seq, timestamp, l.ssrc, &payload);
                    if marker {
                        packet[1] |= 0x80;
                    }
                    let _ = l.inner.send_to(&packet, l.bridge);
                }
                PeerOutput::Connected => {
                    let _ = self.events.send(EdgeEvent::Connected(id));
                }
                PeerOutput::Disconnected => {
                    let _ = self.events.send(EdgeEvent::Disconnected(id));
                }
                PeerOutput::Closed => closed = true,
            }
        }
        let _ = now;
        if closed {
            let _ = self.events.send(EdgeEvent::Closed(id));
            self.remove(id);
            return;
        }
        let next = l.peer.next_timeout();
        if next != l.armed {
            l.armed = next;
            if let Some(at) = next {
                self.timers.push(Reverse((at, id)));
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        for _ in 0..self.timers.len() {
            let Some(&Reverse((at, id))) = self.timers.peek() else { break };
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(l) = self.legs.get_mut(&id) else { continue };
            if l.armed != Some(at) {
                continue;
            }
            l.armed = None;
            l.peer.handle_timeout(now);
            self.after(id, now);
        }
    }

    fn drain_inbox(&mut self) -> bool {
        while let Ok(command) = self.inbox.try_recv() {
            let now = Instant::now();
            match command {
                Command::Create { leg, codecs, bridge, sip_offer, reply } => {
                    let _ = reply.send(self.create(now, leg, &codecs, bridge, sip_offer));
                    self.after(leg, now);
                }
                Command::Answer { leg, sdp, reply } => {
                    let result = match self.legs.get_mut(&leg) {
                        None => Err(format!("no browser leg {leg}")),
                        Some(l) => match l.peer.accept_answer(&sdp) {
                            Err(e) => Err(e.to_string()),
                            Ok(chosen) => settle(l, chosen),
                        },
                    };
                    let _ = reply.send(result);
                    self.after(leg, now);
                }
                Command::Reoffer { leg, sdp, reply } => {
                    let result = match self.legs.get_mut(&leg) {
                        None => Err(format!("no browser leg {leg}")),
                        Some(l) => l.peer.accept_offer(&sdp).map_err(|e| e.to_string()),
                    };
                    let _ = reply.send(result);
                    self.after(leg, now);
                }
                Command::Retarget { leg, bridge } => {
                    if let Some(l) = self.legs.get_mut(&leg) {
                        l.bridge = bridge;
                    }
                }
                Command::Close { leg } => {
                    if let Some(l) = self.legs.get_mut(&leg) {
                        l.peer.close();
                        while let Some(PeerOutput::Transmit { destination, bytes, .. }) = l.peer.poll() {
                            let _ = self.public.send_to(&bytes, destination);
                        }
                    }
                    self.remove(leg);
                }
                Command::Shutdown => return false,
            }
        }
        true
    }

    fn create(&mut self, now: Instant, leg: u64, codecs: &[AudioCodec], bridge: SocketAddr, sip_offer: Vec<Format>) -> Result<(String, SocketAddr), String> {
        let (peer, offer) = Peer::offer(now, &self.setup, codecs).map_err(|e| e.to_string())?;
        let loopback = if bridge.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" };
        let inner = UdpSocket::bind(loopback).map_err(|e| format!("no loopback socket for the leg: {e}"))?;
        inner.set_nonblocking(true).map_err(|e| e.to_string())?;
        let inner_addr = inner.local_addr().map_err(|e| e.to_string())?;
        epoll::add(&self.epoll, inner.as_fd(), epoll::EventData::new_u64(leg), epoll::EventFlags::IN).map_err(|e| e.to_string())?;
        let l = Leg { peer, inner, bridge, sip_offer, to_sip: HashMap::new(), to_web: HashMap::new(), ssrc: rand::random(), armed: None, source: None };
        self.legs.insert(leg, l);
        metrics::gauge!("switchboard_webrtc_legs").increment(1.0);
        Ok((offer, inner_addr))
    }

    fn remove(&mut self, id: u64) {
        let Some(l) = self.legs.remove(&id) else { return };
        let _ = epoll::delete(&self.epoll, l.inner.as_fd());
        if let Some(source) = l.source {
            self.by_source.remove(&source);
        }
        metrics::gauge!("switchboard_webrtc_legs").decrement(1.0);
    }
}

/// Maps the browser's choice onto the SIP offer's formats.
fn settle(l: &mut Leg, chosen: Chosen) -> Result<Settled, String> {
    let codec = l
        .sip_offer
        .iter()
        .find(|f| f.encoding.eq_ignore_ascii_case(chosen.codec.name()) && f.clock_rate == chosen.codec.clock_rate())
        .cloned()
        .ok_or_else(|| format!("the browser chose {}, which the call does not carry", chosen.codec.name()))?;
    let dtmf = l.sip_offer.iter().find(|f| f.encoding.eq_ignore_ascii_case("telephone-event") && f.clock_rate == chosen.codec.clock_rate()).cloned();
    l.to_sip.clear();
    l.to_web.clear();
    l.to_sip.insert(chosen.pt, codec.payload_type);
    l.to_web.insert(codec.payload_type, chosen.pt);
    if let (Some(web), Some(sip)) = (chosen.dtmf_pt, dtmf.as_ref()) {
        l.to_sip.insert(web, sip.payload_type);
        l.to_web.insert(sip.payload_type, web);
    }
    let mut sip_formats = vec![codec];
    sip_formats.extend(dtmf);
    Ok(Settled { chosen, sip_formats })
}
