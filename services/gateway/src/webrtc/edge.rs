//! The browser legs' media edge: one thread owning the UDP port every
//! browser reaches (ICE-lite host candidate), the TCP listener on the same
//! port (a passive ICE-TCP candidate, RFC 6544, for browsers on networks
//! that block UDP), each leg's [`Peer`], and each leg's plain-RTP socket on
//! the loopback towards the call's media bridge.
//!
//! A datagram on the shared port goes to the leg that already talks to its
//! source address, else to the leg whose ICE credentials its STUN check
//! names; nothing else is taken. A TCP connection carries packets framed as
//! RFC 4571 says ([`framing`](super::framing)) and is routed the same way:
//! to its leg once one took a packet from it, else by the STUN check. A
//! connection no leg takes within [`TCP_IDLE`] is closed, and so are a
//! leg's connections when the leg ends. RTP from the browser leaves SRTP and goes
//! to the bridge with the payload types of the SIP side; RTP from the
//! bridge goes to the browser with the browser's. RTCP from the bridge is
//! dropped: str0m reports to the browser itself. The bridge is a socket of
//! the gateway's, so the plain RTP between them is carried in memory
//! ([`LocalNet`], decision 0026); the leg's loopback socket is its address
//! all the same, and takes what comes through the kernel. One `epoll`
//! loop, as the media threads (decision 0012), with a deadline heap for
//! the peers' timers and a [`Mailbox`] for commands and the bridge's
//! datagrams.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::io::Errno;
use tokio::sync::{mpsc as tokio_mpsc, oneshot};

use super::framing::{self, Deframer};
use super::peer::{AudioCodec, Chosen, Peer, PeerOutput, PeerSetup, Transport};
use crate::media::deadlines::Deadlines;
use crate::media::local::{Deliver, LocalNet, Mailbox, MailboxReader, Offer, Registration, DATAGRAM_BACKLOG};
use crate::media::outbox::Outbox;
use crate::media::rtp;
use crate::media::sdp::Format;

const WAKE: u64 = u64::MAX;
const PUBLIC: u64 = u64::MAX - 1;
/// Datagrams read from the shared port per wake-up.
const PUBLIC_BATCH: usize = 64;
/// Receive buffer of the shared port: a burst of every browser's packets
/// waits here while the loop is busy (the kernel caps it at
/// `net.core.rmem_max` unless the gateway may raise it).
const PUBLIC_RCVBUF: usize = 8 << 20;
const LISTENER: u64 = u64::MAX - 2;

/// How long a TCP connection may stay without a leg taking a packet from
/// it (a browser's first check arrives within a second of its connecting).
const TCP_IDLE: Duration = Duration::from_secs(30);
/// Framed packets waiting for a slow connection beyond this (some 25 s of
/// G.711) are not worth sending any more: the connection is closed.
const TCP_BACKLOG: usize = 256 * 1024;
/// TCP connections at once; more are refused, so that a flood of them
/// cannot take the process's file descriptors.
const TCP_CONNECTIONS: usize = 4096;
/// Connections taken per wake-up: a flood of them does not hold up media.
const TCP_ACCEPTS: usize = 64;

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
    /// RTP for the leg from the bridge, in memory.
    Datagram { leg: u64, bytes: Vec<u8> },
    Shutdown,
}

impl Deliver for Mailbox<Command> {
    fn deliver(&self, leg: u64, _from: SocketAddr, bytes: &[u8]) -> Offer {
        self.offer(Command::Datagram { leg, bytes: bytes.to_vec() }, DATAGRAM_BACKLOG)
    }
}

/// Handle to the edge thread; cheap to clone. The thread stops when the
/// last handle is dropped.
#[derive(Debug, Clone)]
pub struct Edge {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    mailbox: Arc<Mailbox<Command>>,
    local: SocketAddr,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.mailbox.send(Command::Shutdown);
    }
}

impl Edge {
    /// Binds `listen` (UDP, then TCP on the same port) and starts the
    /// thread; browsers are told to reach `announce` (the same port seen
    /// from outside, for both; `listen` itself when `None`). Without the
    /// TCP port (taken) browsers have UDP only. Events go to `events`; the
    /// bridges' sockets are found in `net`.
    pub fn start(listen: SocketAddr, announce: Option<SocketAddr>, events: tokio_mpsc::UnboundedSender<EdgeEvent>, net: Arc<LocalNet>) -> std::io::Result<Edge> {
        let (socket, listener) = bind(listen)?;
        let local = socket.local_addr()?;
        // A port of 0 was a free one: announce the one bound.
        let announce = announce.map(|a| if a.port() == 0 { SocketAddr::new(a.ip(), local.port()) } else { a }).unwrap_or(local);
        let setup = PeerSetup::new(announce, listener.as_ref().map(|_| announce)).ok_or_else(|| std::io::Error::other("no DTLS certificate could be made"))?;
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let (mailbox, inbox) = Mailbox::new()?;
        epoll::add(&epoll, inbox.fd(), epoll::EventData::new_u64(WAKE), epoll::EventFlags::IN)?;
        epoll::add(&epoll, &socket, epoll::EventData::new_u64(PUBLIC), epoll::EventFlags::IN)?;
        if let Some(l) = &listener {
            epoll::add(&epoll, l, epoll::EventData::new_u64(LISTENER), epoll::EventFlags::IN)?;
        }
        let tcp = listener.map(|listener| TcpSide { listener, conns: HashMap::new(), by_peer: HashMap::new(), next_token: 0 });
        let mut state = EdgeLoop {
            epoll,
            inbox,
            me: mailbox.clone(),
            net,
            public: socket,
            outbox: Outbox::new(),
            tcp,
            local,
            announce,
            setup,
            legs: HashMap::new(),
            by_source: HashMap::new(),
            timers: Deadlines::default(),
            events,
        };
        let transports = if state.tcp.is_some() { "UDP and TCP" } else { "UDP" };
        std::thread::Builder::new().name("webrtc-edge".into()).spawn(move || state.run())?;
        tracing::info!(%local, %announce, transports, "browser phones' WebRTC media");
        Ok(Edge { inner: Arc::new(Inner { mailbox, local }) })
    }

    /// The address the edge listens on (UDP, and TCP when it could).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    fn send(&self, command: Command) -> bool {
        self.inner.mailbox.send(command)
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
    /// Where `inner` is bound: the leg's address towards the bridge.
    inner_addr: SocketAddr,
    /// `inner_addr` in the gateway's `LocalNet`.
    _registration: Registration,
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

/// One browser's ICE-TCP connection.
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    deframer: Deframer,
    /// Framed packets the socket did not take yet.
    backlog: Vec<u8>,
    /// Whether epoll also watches for room to write (`backlog` not empty).
    writing: bool,
    /// The leg that took a packet from it.
    leg: Option<u64>,
}

/// The ICE-TCP listener and its connections, by epoll token.
struct TcpSide {
    listener: TcpListener,
    conns: HashMap<u64, Conn>,
    by_peer: HashMap<SocketAddr, u64>,
    next_token: u64,
}

impl TcpSide {
    /// Sends `packet` framed to the connection from `destination`, what
    /// the socket does not take now kept for when it has room.
    fn send(&mut self, epoll: &OwnedFd, destination: SocketAddr, packet: &[u8]) {
        let Some(&token) = self.by_peer.get(&destination) else {
            metrics::counter!("switchboard_webrtc_datagrams_dropped_total", "reason" => "tcp_closed").increment(1);
            return;
        };
        let Some(c) = self.conns.get_mut(&token) else { return };
        if c.backlog.len() + 2 + packet.len() > TCP_BACKLOG {
            metrics::counter!("switchboard_webrtc_datagrams_dropped_total", "reason" => "tcp_backlog").increment(1);
            tracing::debug!(peer = %destination, "a browser's TCP connection does not keep up; closed");
            self.close(epoll, token);
            return;
        }
        if !framing::frame(packet, &mut c.backlog) {
            return;
        }
        if self.flush(epoll, token).is_err() {
            self.close(epoll, token);
        }
    }

    /// Writes what the connection's socket takes of its backlog; epoll
    /// watches for room while some is left.
    fn flush(&mut self, epoll: &OwnedFd, token: u64) -> std::io::Result<()> {
        let Some(c) = self.conns.get_mut(&token) else { return Ok(()) };
        let mut written = 0;
        while written < c.backlog.len() {
            match (&c.stream).write(&c.backlog[written..]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        c.backlog.drain(..written);
        let want = !c.backlog.is_empty();
        if want != c.writing {
            let flags = if want { epoll::EventFlags::IN | epoll::EventFlags::OUT } else { epoll::EventFlags::IN };
            epoll::modify(epoll, &c.stream, epoll::EventData::new_u64(token), flags)?;
            c.writing = want;
        }
        Ok(())
    }

    fn close(&mut self, epoll: &OwnedFd, token: u64) {
        let Some(c) = self.conns.remove(&token) else { return };
        // What is left (a DTLS close_notify) goes if the socket takes it.
        if !c.backlog.is_empty() {
            let _ = (&c.stream).write(&c.backlog);
        }
        let _ = epoll::delete(epoll, &c.stream);
        if self.by_peer.get(&c.peer) == Some(&token) {
            self.by_peer.remove(&c.peer);
        }
    }
}

struct EdgeLoop {
    epoll: OwnedFd,
    inbox: MailboxReader<Command>,
    /// The edge's own mailbox, where the legs' addresses are registered.
    me: Arc<Mailbox<Command>>,
    net: Arc<LocalNet>,
    public: UdpSocket,
    /// The browsers' datagrams of this turn, for the public socket.
    outbox: Outbox,
    /// None when the TCP port could not be had.
    tcp: Option<TcpSide>,
    local: SocketAddr,
    announce: SocketAddr,
    setup: PeerSetup,
    legs: HashMap<u64, Leg>,
    by_source: HashMap<SocketAddr, u64>,
    timers: Deadlines,
    events: tokio_mpsc::UnboundedSender<EdgeEvent>,
}

impl EdgeLoop {
    fn run(&mut self) {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
        let mut buf = vec![0u8; 2048];
        loop {
            match crate::media::threads::wait(&self.epoll, &mut events, self.timers.next()) {
                Ok(()) => {}
                Err(Errno::INTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "the WebRTC edge cannot wait for its sockets; browser legs have no audio");
                    return;
                }
            }
            let mut woken = false;
            for ev in &events {
                let flags = ev.flags;
                match ev.data.u64() {
                    WAKE => woken = true,
                    PUBLIC => self.public_readable_batch(&mut buf),
                    LISTENER => self.accept(),
                    token if self.tcp.as_ref().is_some_and(|t| t.conns.contains_key(&token)) => self.conn_ready(token, flags, &mut buf),
                    leg => self.inner_readable(leg, &mut buf),
                }
            }
            if woken && !self.drain_inbox() {
                self.outbox.flush(&self.public);
                return;
            }
            self.fire_timers();
            self.outbox.flush(&self.public);
        }
    }

    /// Reads what the shared port holds, up to a batch: every browser's
    /// packets arrive on this one socket (fifty a second per call), so one
    /// datagram per wake-up would leave the queue to overflow.
    fn public_readable_batch(&mut self, buf: &mut [u8]) {
        for _ in 0..PUBLIC_BATCH {
            if !self.public_readable(buf) {
                return;
            }
        }
    }

    /// Handles one datagram of the shared port; false when there was none.
    fn public_readable(&mut self, buf: &mut [u8]) -> bool {
        let (n, source) = match self.public.recv_from(buf) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) => {
                tracing::debug!(error = %e, "reading the WebRTC port failed");
                return false;
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
            return true;
        };
        let Some(l) = self.legs.get_mut(&id) else { return true };
        // The announced address is what str0m knows itself as.
        if l.peer.receive(now, Transport::Udp, source, self.announce, bytes) && l.source != Some(source) {
            if let Some(old) = l.source.replace(source) {
                self.by_source.remove(&old);
            }
            self.by_source.insert(source, id);
        }
        self.after(id, now);
        true
    }

    /// Takes the browsers' new TCP connections.
    fn accept(&mut self) {
        let Some(tcp) = self.tcp.as_mut() else { return };
        // Level-triggered: what is left waits for the next wake-up.
        for _ in 0..TCP_ACCEPTS {
            let (stream, peer) = match tcp.listener.accept() {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::Interrupted | std::io::ErrorKind::ConnectionAborted) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "taking a TCP connection on the WebRTC port failed");
                    return;
                }
            };
            if tcp.conns.len() >= TCP_CONNECTIONS {
                tracing::debug!(%peer, "too many TCP connections on the WebRTC port; refused");
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            // Audio is sent as it comes, not gathered into segments.
            let _ = stream.set_nodelay(true);
            // Tokens share epoll's data with the legs' random ids.
            let mut token = tcp.next_token;
            while token >= LISTENER || self.legs.contains_key(&token) || tcp.conns.contains_key(&token) {
                token = token.wrapping_add(1);
            }
            tcp.next_token = token.wrapping_add(1);
            if let Err(e) = epoll::add(&self.epoll, &stream, epoll::EventData::new_u64(token), epoll::EventFlags::IN) {
                tracing::debug!(error = %e, "a TCP connection on the WebRTC port cannot be watched");
                continue;
            }
            if let Some(old) = tcp.by_peer.insert(peer, token) {
                // The same address again: the old connection is gone.
                tcp.close(&self.epoll, old);
            }
            tcp.conns.insert(token, Conn { stream, peer, deframer: Deframer::new(), backlog: Vec::new(), writing: false, leg: None });
            self.timers.push(token, Instant::now() + TCP_IDLE);
        }
    }

    /// A TCP connection can be read (or was closed) or has room to write.
    fn conn_ready(&mut self, token: u64, flags: epoll::EventFlags, buf: &mut [u8]) {
        let Some(tcp) = self.tcp.as_mut() else { return };
        if flags.contains(epoll::EventFlags::OUT) && tcp.flush(&self.epoll, token).is_err() {
            tcp.close(&self.epoll, token);
            return;
        }
        if !flags.intersects(epoll::EventFlags::IN | epoll::EventFlags::HUP | epoll::EventFlags::ERR) {
            return;
        }
        let Some(c) = tcp.conns.get_mut(&token) else { return };
        // Level-triggered: one read per wake-up keeps connections fair.
        match (&c.stream).read(c.deframer.spare()) {
            Ok(0) => {
                tcp.close(&self.epoll, token);
                return;
            }
            Ok(n) => c.deframer.filled(n),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) => return,
            Err(_) => {
                tcp.close(&self.epoll, token);
                return;
            }
        }
        let now = Instant::now();
        loop {
            let Some(tcp) = self.tcp.as_mut() else { return };
            let Some(c) = tcp.conns.get_mut(&token) else { return };
            let n = match c.deframer.next_packet() {
                Ok(None) => return,
                Ok(Some(packet)) => {
                    buf[..packet.len()].copy_from_slice(packet);
                    packet.len()
                }
                Err(e) => {
                    metrics::counter!("switchboard_webrtc_datagrams_dropped_total", "reason" => "tcp_framing").increment(1);
                    tracing::debug!(peer = %c.peer, error = %e, "a TCP connection on the WebRTC port does not speak RFC 4571; closed");
                    tcp.close(&self.epoll, token);
                    return;
                }
            };
            let (source, leg) = (c.peer, c.leg);
            self.tcp_packet(now, token, source, leg, &buf[..n]);
        }
    }

    /// A packet from a browser's TCP connection: as a datagram on the UDP
    /// port, but a connection no leg knows that sends anything but STUN is
    /// not a browser's and is closed.
    fn tcp_packet(&mut self, now: Instant, token: u64, source: SocketAddr, leg: Option<u64>, bytes: &[u8]) {
        let id = match leg {
            Some(id) => Some(id),
            None => self.legs.iter().find(|(_, l)| l.peer.accepts(now, Transport::Tcp, source, self.announce, bytes)).map(|(&id, _)| id),
        };
        let Some(id) = id.filter(|id| self.legs.contains_key(id)) else {
            if is_stun(bytes) {
                // A check that came before the page's answer, or a stale one.
                metrics::counter!("switchboard_webrtc_datagrams_dropped_total", "reason" => "unknown_source").increment(1);
            } else {
                metrics::counter!("switchboard_webrtc_datagrams_dropped_total", "reason" => "tcp_not_stun").increment(1);
                tracing::debug!(peer = %source, "a TCP connection on the WebRTC port sent no STUN; closed");
                if let Some(tcp) = self.tcp.as_mut() {
                    tcp.close(&self.epoll, token);
                }
            }
            return;
        };
        let Some(l) = self.legs.get_mut(&id) else { return };
        if l.peer.receive(now, Transport::Tcp, source, self.announce, bytes) && leg.is_none() {
            if let Some(c) = self.tcp.as_mut().and_then(|t| t.conns.get_mut(&token)) {
                c.leg = Some(id);
            }
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
        self.from_bridge(id, &buf[..n]);
    }

    /// A datagram from the bridge: RTP goes on to the browser.
    fn from_bridge(&mut self, id: u64, bytes: &[u8]) {
        let Some(l) = self.legs.get_mut(&id) else { return };
        if rtp::is_rtcp(bytes) {
            return;
        }
        let Some(packet) = rtp::parse(bytes) else { return };
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
                PeerOutput::Transmit { transport, destination, bytes, .. } => transmit(&self.public, &mut self.outbox, &mut self.tcp, &self.epoll, transport, destination, bytes),
                PeerOutput::Rtp { pt, seq, timestamp, marker, payload } => {
                    let Some(&sip_pt) = l.to_sip.get(&pt) else { continue };
                    let mut packet = rtp::build(sip_pt, seq, timestamp, l.ssrc, &payload);
                    if marker {
                        packet[1] |= 0x80;
                    }
                    if !self.net.send(l.inner_addr, l.bridge, &packet) {
                        let _ = l.inner.send_to(&packet, l.bridge);
                    }
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
        self.timers.arm(id, &mut l.armed, next);
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        for (at, id) in self.timers.due(now) {
            if let Some(tcp) = self.tcp.as_mut() {
                if let Some(c) = tcp.conns.get(&id) {
                    if c.leg.is_none() {
                        tracing::debug!(peer = %c.peer, "a TCP connection on the WebRTC port that no leg took; closed");
                        tcp.close(&self.epoll, id);
                    }
                    continue;
                }
            }
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
        self.inbox.reset();
        while let Some(command) = self.inbox.try_recv() {
            let now = Instant::now();
            match command {
                Command::Datagram { leg, bytes } => self.from_bridge(leg, &bytes),
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
                        while let Some(out) = l.peer.poll() {
                            if let PeerOutput::Transmit { transport, destination, bytes, .. } = out {
                                transmit(&self.public, &mut self.outbox, &mut self.tcp, &self.epoll, transport, destination, bytes);
                            }
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
        if leg >= LISTENER || self.legs.contains_key(&leg) || self.tcp.as_ref().is_some_and(|t| t.conns.contains_key(&leg)) {
            return Err(format!("the leg id {leg} is taken"));
        }
        let (peer, offer) = Peer::offer(now, &self.setup, codecs).map_err(|e| e.to_string())?;
        let loopback = if bridge.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" };
        let inner = UdpSocket::bind(loopback).map_err(|e| format!("no loopback socket for the leg: {e}"))?;
        inner.set_nonblocking(true).map_err(|e| e.to_string())?;
        let inner_addr = inner.local_addr().map_err(|e| e.to_string())?;
        epoll::add(&self.epoll, inner.as_fd(), epoll::EventData::new_u64(leg), epoll::EventFlags::IN).map_err(|e| e.to_string())?;
        let me: Arc<dyn Deliver> = self.me.clone();
        let registration = self.net.register(inner_addr, me, leg);
        let l = Leg { peer, inner, inner_addr, _registration: registration, bridge, sip_offer, to_sip: HashMap::new(), to_web: HashMap::new(), ssrc: rand::random(), armed: None, source: None };
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
        if let Some(tcp) = self.tcp.as_mut() {
            let conns: Vec<u64> = tcp.conns.iter().filter(|(_, c)| c.leg == Some(id)).map(|(&token, _)| token).collect();
            for token in conns {
                tcp.close(&self.epoll, token);
            }
        }
        metrics::gauge!("switchboard_webrtc_legs").decrement(1.0);
    }
}

/// Tries for this many free ports on which TCP is free as well, when the
/// configured port is 0.
const FREE_PORT_TRIES: usize = 16;

/// The UDP socket on `listen` and, when it can be had, the TCP listener on
/// the same port. For a port of 0 the port UDP got may be in use for TCP
/// (an outgoing connection of anyone's), so another free one is tried
/// before browsers are left without ICE-TCP.
fn bind(listen: SocketAddr) -> std::io::Result<(UdpSocket, Option<TcpListener>)> {
    let tries = if listen.port() == 0 { FREE_PORT_TRIES } else { 1 };
    let mut last = None;
    for _ in 0..tries {
        let socket = UdpSocket::bind(listen)?;
        let local = socket.local_addr()?;
        // After the UDP socket, so that a port of 0 is the one UDP got.
        match TcpListener::bind(local).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
            Ok(l) => {
                prepare(&socket)?;
                return Ok((socket, Some(l)));
            }
            Err(e) => last = Some((socket, e)),
        }
    }
    let (socket, e) = last.expect("at least one try");
    let local = socket.local_addr()?;
    tracing::warn!(%local, error = %e, "no ICE-TCP for browser phones: the TCP port cannot be had; browsers that cannot use UDP get no audio");
    prepare(&socket)?;
    Ok((socket, None))
}

fn prepare(socket: &UdpSocket) -> std::io::Result<()> {
    socket.set_nonblocking(true)?;
    if rustix::net::sockopt::set_socket_recv_buffer_size_force(socket, PUBLIC_RCVBUF).is_err() {
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(socket, PUBLIC_RCVBUF);
    }
    if let Ok(reported) = rustix::net::sockopt::socket_recv_buffer_size(socket) {
        if let Some(set) = short_receive_buffer(reported, PUBLIC_RCVBUF) {
            tracing::warn!(
                port = socket.local_addr().map(|a| a.port()).unwrap_or(0),
                bytes = set,
                wanted = PUBLIC_RCVBUF,
                "the WebRTC port's receive buffer is smaller than asked (the kernel caps it at net.core.rmem_max for a process without CAP_NET_ADMIN): \
                 with many browser calls, a burst that arrives while the edge is busy is dropped by the kernel; \
                 raise it with `sysctl -w net.core.rmem_max={PUBLIC_RCVBUF}`, or give the gateway CAP_NET_ADMIN"
            );
        }
    }
    Ok(())
}

/// The receive buffer the kernel granted, when it is smaller than `wanted`;
/// `reported` is what `SO_RCVBUF` reads back, which on Linux is twice
/// what was set (the kernel's own bookkeeping is counted in it).
fn short_receive_buffer(reported: usize, wanted: usize) -> Option<usize> {
    let set = reported / 2;
    (set < wanted).then_some(set)
}

/// Sends a leg's packet to its browser, over UDP or framed on the TCP
/// connection from `destination`.
/// UDP waits in `outbox` for the end of the loop's turn.
fn transmit(public: &UdpSocket, outbox: &mut Outbox, tcp: &mut Option<TcpSide>, epoll: &OwnedFd, transport: Transport, destination: SocketAddr, bytes: Vec<u8>) {
    match (transport, tcp) {
        (Transport::Udp, _) => outbox.push(public, destination, bytes),
        (Transport::Tcp, Some(tcp)) => tcp.send(epoll, destination, &bytes),
        (Transport::Tcp, None) => {}
    }
}

/// Whether `bytes` is a STUN message (RFC 5389: two zero bits, a length
/// that is a multiple of 4, the magic cookie).
fn is_stun(bytes: &[u8]) -> bool {
    bytes.len() >= 20 && bytes[0] < 2 && bytes[3].is_multiple_of(4) && bytes[4..8] == [0x21, 0x12, 0xa4, 0x42]
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use super::*;

    /// Waits for the edge to close `stream` (end of stream, or a reset when
    /// it had not read everything).
    fn closed(stream: &mut TcpStream) -> bool {
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        match stream.read(&mut buf) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    }

    #[test]
    fn a_receive_buffer_capped_by_the_kernel_is_told() {
        // Linux reads back twice what was set.
        assert_eq!(short_receive_buffer(2 * PUBLIC_RCVBUF, PUBLIC_RCVBUF), None);
        // Debian's default net.core.rmem_max, 212992 bytes, doubled.
        assert_eq!(short_receive_buffer(425_984, PUBLIC_RCVBUF), Some(212_992));
        assert_eq!(short_receive_buffer(2 * PUBLIC_RCVBUF - 2, PUBLIC_RCVBUF), Some(PUBLIC_RCVBUF - 1));
    }

    #[test]
    fn tcp_is_on_the_udp_port_and_what_is_not_rfc_4571_stun_is_closed() {
        let (tx, _rx) = tokio_mpsc::unbounded_channel();
        let edge = Edge::start("127.0.0.1:0".parse().unwrap(), None, tx, LocalNet::new(Vec::new())).unwrap();
        let addr = edge.local_addr();

        // An HTTP request reads as a frame of 18 245 bytes.
        let mut http = TcpStream::connect(addr).unwrap();
        http.write_all(b"GET / HTTP/1.1\r\nHost: switchboard\r\n\r\n").unwrap();
        assert!(closed(&mut http));
        // One byte over the limit, sent in two pieces.
        let mut long = TcpStream::connect(addr).unwrap();
        long.write_all(&[0x05]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        long.write_all(&[0xdd, 0, 0, 0]).unwrap();
        assert!(closed(&mut long));
        // Well framed, but a first packet that is not a STUN check.
        let mut junk = TcpStream::connect(addr).unwrap();
        junk.write_all(&[0, 4, 0x80, 0, 0, 1]).unwrap();
        assert!(closed(&mut junk));

        // A STUN check no leg takes (it may have come before the page's
        // answer): dropped, and the connection stays for a while.
        let mut early = TcpStream::connect(addr).unwrap();
        let mut check = vec![0, 20, 0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        check.extend_from_slice(&[7; 12]);
        early.write_all(&check).unwrap();
        early.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut buf = [0u8; 16];
        let err = early.read(&mut buf).expect_err("no answer, and not closed");
        assert!(matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{err}");
    }

    #[tokio::test]
    async fn the_offer_has_a_passive_tcp_candidate_on_the_udp_port_unless_tcp_is_taken() {
        let (tx, _rx) = tokio_mpsc::unbounded_channel();
        let bridge: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let edge = Edge::start("127.0.0.1:0".parse().unwrap(), None, tx.clone(), LocalNet::new(Vec::new())).unwrap();
        let (offer, _) = edge.create(1, vec![AudioCodec::Pcmu], bridge, Vec::new()).await.unwrap();
        let candidate = |proto: &str| offer.lines().find(|l| l.starts_with("a=candidate:") && l.contains(&format!(" {proto} "))).unwrap_or_default().to_owned();
        let port = edge.local_addr().port();
        assert!(candidate("udp").contains(&format!(" 127.0.0.1 {port} typ host")), "{offer}");
        assert!(candidate("tcp").contains(&format!(" 127.0.0.1 {port} typ host tcptype passive")), "{offer}");

        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let edge = Edge::start(taken.local_addr().unwrap(), None, tx, LocalNet::new(Vec::new())).unwrap();
        assert_eq!(edge.local_addr(), taken.local_addr().unwrap(), "UDP is had all the same");
        let (offer, _) = edge.create(1, vec![AudioCodec::Pcmu], bridge, Vec::new()).await.unwrap();
        assert!(offer.contains(" udp ") && !offer.contains("tcptype"), "UDP only: {offer}");
    }
}
