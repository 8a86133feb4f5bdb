//! SIP transports: UDP datagrams, TCP and TLS streams (RFC 3261 §18, §26).
//!
//! The only SIP code that owns sockets. Inbound bytes are parsed here and
//! handed on as [`Inbound`] messages; bytes that are no SIP message are
//! dropped and counted. Outbound messages go to a [`Destination`]; stream
//! responses reuse the connection the request came on. TCP and TLS
//! connections share one reader (Content-Length framing, size limit,
//! CRLF keep-alive) and one writer, generic over the stream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::message::{frame_length, Frame, SipMessage};
use super::tls::TlsSettings;

/// How long the rest of a started message may take on a stream (64·T1).
const INCOMPLETE_TIMEOUT: Duration = Duration::from_secs(32);

/// How long a stream may stay silent: the longest registration granted
/// plus ten minutes, so a registered phone's connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(super::registrar::MAX_EXPIRES + 600);

/// How long an outgoing TCP connection may take to establish.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Inbound TLS handshakes allowed in progress at once.
const MAX_PENDING_HANDSHAKES: usize = 256;

/// How long a TLS handshake may take, in either direction.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued for one connection before senders wait.
const QUEUE: usize = 256;

/// Where a message goes to, or came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    Udp(SocketAddr),
    Tcp(SocketAddr),
    Tls(SocketAddr),
}

impl Destination {
    pub fn addr(&self) -> SocketAddr {
        match self {
            Destination::Udp(a) | Destination::Tcp(a) | Destination::Tls(a) => *a,
        }
    }

    /// The transport token used in Via (`UDP`, `TCP`, `TLS`).
    pub fn transport_name(&self) -> &'static str {
        match self {
            Destination::Udp(_) => "UDP",
            Destination::Tcp(_) => "TCP",
            Destination::Tls(_) => "TLS",
        }
    }

    /// Whether the transport delivers reliably (streams): no retransmission.
    pub fn is_reliable(&self) -> bool {
        !matches!(self, Destination::Udp(_))
    }
}

/// A parsed message and where it came from.
#[derive(Debug)]
pub struct Inbound {
    pub msg: SipMessage,
    pub source: Destination,
}

/// Failure to bind the SIP listeners.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot listen for SIP on {transport} {addr}: {source}; is another SIP server running there? change sip.{key}")]
    Bind {
        transport: &'static str,
        key: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("sip.tls is set but the TLS listener has no certificate; set sip.tls_config.cert and sip.tls_config.key")]
    NoCertificate,
}

/// The addresses to listen on; `None` disables that transport.
#[derive(Debug, Clone, Copy, Default)]
pub struct Listen {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
}

/// The SIP transports of the gateway: a cheap clone handle.
#[derive(Clone)]
pub struct Transport {
    udp: Option<Arc<UdpSocket>>,
    udp_addr: Option<SocketAddr>,
    tcp_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    tls: Option<TlsSettings>,
    /// Open (or opening) stream connections by peer and transport.
    connections: Arc<Mutex<HashMap<Destination, mpsc::Sender<Vec<u8>>>>>,
    /// Names of TLS servers by address, for SNI and certificate checks.
    server_names: Arc<Mutex<HashMap<SocketAddr, ServerName<'static>>>>,
    inbound: mpsc::Sender<Inbound>,
    max_size: usize,
    shutdown: CancellationToken,
}

/// Why an outgoing connection did not open.
enum OpenError {
    Connect(String),
    Handshake(String),
}

impl Transport {
    /// Binds the configured listeners and starts reading; every message read
    /// is sent to `inbound`. `tls` is needed for the TLS listener (its
    /// acceptor) and for outgoing TLS connections.
    pub async fn bind(
        listen: Listen,
        tls: Option<TlsSettings>,
        max_size: usize,
        inbound: mpsc::Sender<Inbound>,
        shutdown: CancellationToken,
    ) -> Result<Transport, TransportError> {
        let mut t = Transport {
            udp: None,
            udp_addr: None,
            tcp_addr: None,
            tls_addr: None,
            tls,
            connections: Arc::default(),
            server_names: Arc::default(),
            inbound,
            max_size,
            shutdown,
        };
        if let Some(addr) = listen.udp {
            let socket = UdpSocket::bind(addr)
                .await
                .map_err(|source| TransportError::Bind { transport: "UDP", key: "udp", addr, source })?;
            t.udp_addr = socket.local_addr().ok();
            let socket = Arc::new(socket);
            t.udp = Some(socket.clone());
            tokio::spawn(t.clone().udp_loop(socket));
        }
        let mut listeners = Vec::new();
        if let Some(addr) = listen.tcp {
            // With port 0, prefer the port UDP got (one SIP port for both), and
            // take any free port if that one is taken for TCP.
            let same_as_udp = match (addr.port(), t.udp_addr) {
                (0, Some(u)) if u.ip() == addr.ip() => TcpListener::bind(u).await.ok(),
                _ => None,
            };
            let listener = match same_as_udp {
                Some(l) => l,
                None => TcpListener::bind(addr)
                    .await
                    .map_err(|source| TransportError::Bind { transport: "TCP", key: "tcp", addr, source })?,
            };
            t.tcp_addr = listener.local_addr().ok();
            listeners.push((listener, None));
        }
        if let Some(addr) = listen.tls {
            let acceptor = t.tls.as_ref().and_then(|s| s.acceptor.clone()).ok_or(TransportError::NoCertificate)?;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| TransportError::Bind { transport: "TLS", key: "tls", addr, source })?;
            t.tls_addr = listener.local_addr().ok();
            listeners.push((listener, Some(acceptor)));
        }
        for (listener, acceptor) in listeners {
            tokio::spawn(t.clone().accept_loop(listener, acceptor));
        }
        Ok(t)
    }

    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The local address a message to `dest` leaves from (for Via/Contact).
    pub fn local_for(&self, dest: &Destination) -> Option<SocketAddr> {
        match dest {
            Destination::Udp(_) => self.udp_addr,
            Destination::Tcp(_) => self.tcp_addr,
            Destination::Tls(_) => self.tls_addr,
        }
    }

    /// Names the TLS server at `addr` (a host name or IP literal, as in the
    /// URI it was resolved from): later TLS connections to it send the name
    /// in SNI and require its certificate to be valid for it. A server
    /// without a name is checked against its IP address (an IP SAN).
    pub fn set_tls_server_name(&self, addr: SocketAddr, name: &str) -> Result<(), rustls_pki_types::InvalidDnsNameError> {
        let name = ServerName::try_from(name.trim_start_matches('[').trim_end_matches(']').to_owned())?;
        if let Ok(mut names) = self.server_names.lock() {
            names.insert(addr, name);
        }
        Ok(())
    }

    /// Sends one message over TLS to `addr`, verifying the server as
    /// `server_name` (see [`Transport::set_tls_server_name`]).
    pub async fn send_tls(&self, addr: SocketAddr, server_name: &str, msg: &SipMessage) {
        if let Err(e) = self.set_tls_server_name(addr, server_name) {
            warn!(%addr, server_name, error = %e, "not a valid TLS server name; message not sent");
            metrics::counter!("switchboard_sip_send_errors_total", "transport" => "TLS").increment(1);
            return;
        }
        self.send(Destination::Tls(addr), msg).await;
    }

    /// Sends one message. Failures are logged and counted: SIP recovers from
    /// lost messages by retransmission.
    pub async fn send(&self, dest: Destination, msg: &SipMessage) {
        let kind = if msg.is_request() { msg.method().unwrap_or("?").to_owned() } else { msg.status().unwrap_or(0).to_string() };
        metrics::counter!("switchboard_sip_messages_sent_total", "transport" => dest.transport_name(), "kind" => kind).increment(1);
        self.send_encoded(dest, msg.encode()).await;
    }

    /// Sends a message already encoded (a retransmission kept as bytes).
    pub async fn send_bytes(&self, dest: Destination, bytes: &[u8]) {
        metrics::counter!("switchboard_sip_messages_sent_total", "transport" => dest.transport_name(), "kind" => "retransmission").increment(1);
        self.send_encoded(dest, bytes.to_vec()).await;
    }

    async fn send_encoded(&self, dest: Destination, bytes: Vec<u8>) {
        match dest {
            Destination::Udp(addr) => {
                let Some(socket) = &self.udp else {
                    warn!(%addr, "no UDP listener configured; message not sent");
                    return;
                };
                if let Err(e) = socket.send_to(&bytes, addr).await {
                    warn!(%addr, error = %e, "SIP send over UDP failed");
                    metrics::counter!("switchboard_sip_send_errors_total", "transport" => "UDP").increment(1);
                }
            }
            Destination::Tcp(_) | Destination::Tls(_) => {
                let existing = self.connections.lock().ok().and_then(|c| c.get(&dest).cloned());
                // A new connection is queued, not awaited: a peer that does
                // not answer must not hold up the caller (the call manager).
                let sender = match existing {
                    Some(s) if !s.is_closed() => s,
                    _ => self.clone().connect_queued(dest),
                };
                if sender.send(bytes).await.is_err() {
                    metrics::counter!("switchboard_sip_send_errors_total", "transport" => dest.transport_name()).increment(1);
                }
            }
        }
    }

    async fn udp_loop(self, socket: Arc<UdpSocket>) {
        let mut buf = vec![0u8; 65_536];
        loop {
            let (n, from) = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                r = socket.recv_from(&mut buf) => match r {
                    Ok(v) => v,
                    Err(e) => {
                        // ICMP port unreachable surfaces here on some systems; keep going.
                        debug!(error = %e, "UDP receive error");
                        continue;
                    }
                },
            };
            let data = &buf[..n];
            if data.iter().all(|b| matches!(b, b'\r' | b'\n' | 0)) {
                continue; // keep-alive
            }
            self.deliver(data, Destination::Udp(from)).await;
        }
    }

    async fn deliver(&self, data: &[u8], source: Destination) {
        match SipMessage::parse(data, self.max_size) {
            Ok(msg) => {
                let _ = self.inbound.send(Inbound { msg, source }).await;
            }
            Err(e) => {
                debug!(peer = %source.addr(), error = %e, "dropping unparsable SIP message");
                metrics::counter!("switchboard_sip_messages_dropped_total", "reason" => e.to_string()).increment(1);
            }
        }
    }

    /// Accepts stream connections; with an `acceptor`, each one must
    /// complete a TLS handshake (in its own task) before it is read.
    async fn accept_loop(self, listener: TcpListener, acceptor: Option<TlsAcceptor>) {
        let transport = if acceptor.is_some() { "TLS" } else { "TCP" };
        // Handshakes cost CPU before the peer has proved anything: only so
        // many may be in progress at once; more connections are closed.
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
        loop {
            let (stream, peer) = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(v) => v,
                    Err(e) => {
                        warn!(error = %e, transport, "SIP accept failed");
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            match &acceptor {
                None => self.clone().adopt(stream, Destination::Tcp(peer)),
                Some(acceptor) => {
                    let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                        debug!(%peer, "too many TLS handshakes in progress; connection closed");
                        metrics::counter!("switchboard_sip_connections_refused_total", "reason" => "handshakes pending").increment(1);
                        continue;
                    };
                    let (me, acceptor) = (self.clone(), acceptor.clone());
                    tokio::spawn(async move {
                        let _permit = permit;
                        let handshake = tokio::select! {
                            _ = me.shutdown.cancelled() => return,
                            r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => r,
                        };
                        match handshake {
                            Ok(Ok(tls)) => me.adopt(tls, Destination::Tls(peer)),
                            Ok(Err(e)) => handshake_failed("inbound", peer, &e.to_string()),
                            Err(_) => handshake_failed("inbound", peer, "timed out"),
                        }
                    });
                }
            }
        }
    }

    /// Registers a queue for `dest` at once and connects in the background;
    /// messages queued meanwhile are written once connected, or dropped
    /// (and counted) if the connection fails.
    fn connect_queued(self, dest: Destination) -> mpsc::Sender<Vec<u8>> {
        let (tx, rx) = mpsc::channel::<Vec<u8>>(QUEUE);
        if let Ok(mut c) = self.connections.lock() {
            c.insert(dest, tx.clone());
        }
        let (queue, returned) = (tx.clone(), tx.clone());
        tokio::spawn(async move {
            let peer = dest.addr();
            let failure = match self.open(dest, queue, rx).await {
                Ok(()) => return,
                Err(OpenError::Connect(error)) => {
                    warn!(%peer, error, transport = dest.transport_name(), "SIP connect failed");
                    dest.transport_name()
                }
                Err(OpenError::Handshake(error)) => {
                    handshake_failed("outbound", peer, &error);
                    "TLS"
                }
            };
            metrics::counter!("switchboard_sip_send_errors_total", "transport" => failure).increment(1);
            self.forget(dest, &tx);
        });
        returned
    }

    /// Opens the connection to `dest` (TCP, then the TLS handshake) and
    /// starts it.
    async fn open(&self, dest: Destination, tx: mpsc::Sender<Vec<u8>>, rx: mpsc::Receiver<Vec<u8>>) -> Result<(), OpenError> {
        let peer = dest.addr();
        let connector = match dest {
            Destination::Tls(_) => match &self.tls {
                Some(tls) => Some(tls.connector.clone()),
                None => return Err(OpenError::Connect("TLS is not configured (sip.tls_config)".to_owned())),
            },
            _ => None,
        };
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(OpenError::Connect(e.to_string())),
            Err(_) => return Err(OpenError::Connect("timed out".to_owned())),
        };
        let _ = stream.set_nodelay(true);
        let Some(connector) = connector else {
            self.clone().run_connection(stream, dest, tx, rx);
            return Ok(());
        };
        let name = self
            .server_names
            .lock()
            .ok()
            .and_then(|n| n.get(&peer).cloned())
            .unwrap_or_else(|| ServerName::IpAddress(peer.ip().into()));
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, stream)).await {
            Ok(Ok(tls)) => {
                self.clone().run_connection(tls, dest, tx, rx);
                Ok(())
            }
            Ok(Err(e)) => Err(OpenError::Handshake(e.to_string())),
            Err(_) => Err(OpenError::Handshake("timed out".to_owned())),
        }
    }

    /// Registers an accepted connection and starts its reader and writer.
    fn adopt<S>(self, stream: S, dest: Destination)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<Vec<u8>>(QUEUE);
        if let Ok(mut c) = self.connections.lock() {
            c.insert(dest, tx.clone());
        }
        self.run_connection(stream, dest, tx, rx);
    }

    /// Removes `dest`'s queue if it still is `tx` (not a newer connection's).
    fn forget(&self, dest: Destination, tx: &mpsc::Sender<Vec<u8>>) {
        if let Ok(mut c) = self.connections.lock() {
            if c.get(&dest).is_some_and(|s| s.same_channel(tx)) {
                c.remove(&dest);
            }
        }
    }

    /// Starts the writer (draining `rx`) and the framing reader of a stream
    /// connection, TCP or TLS. When either side ends, both do and the
    /// connection is closed and forgotten.
    fn run_connection<S>(self, stream: S, dest: Destination, tx: mpsc::Sender<Vec<u8>>, mut rx: mpsc::Receiver<Vec<u8>>)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let closed = self.shutdown.child_token();
        let writer_closed = closed.clone();
        tokio::spawn(async move {
            loop {
                let bytes = tokio::select! {
                    _ = writer_closed.cancelled() => break,
                    b = rx.recv() => match b { Some(b) => b, None => break },
                };
                // TLS buffers records: flush after each message.
                if wr.write_all(&bytes).await.is_err() || wr.flush().await.is_err() {
                    break;
                }
            }
            writer_closed.cancel();
            // TCP FIN, or TLS close_notify then FIN; bounded for a peer that
            // does not read.
            let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
        });
        let peer = dest.addr();
        tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::with_capacity(8192);
            let mut chunk = vec![0u8; 16_384];
            // Line feeds of the keep-alive run since the last message: a
            // CRLFCRLF ping is answered with a CRLF pong (RFC 5626 §3.5.1).
            let mut keepalive_lf = 0usize;
            'read: loop {
                // A started message must be complete within 64·T1 (no
                // slowloris); an idle connection lives as long as the longest
                // registration it may carry.
                let wait = if buf.is_empty() { IDLE_TIMEOUT } else { INCOMPLETE_TIMEOUT };
                let n = tokio::select! {
                    _ = closed.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {
                        let reason = if buf.is_empty() { "idle connection" } else { "incomplete message" };
                        debug!(%peer, transport = dest.transport_name(), reason, "closing SIP connection");
                        metrics::counter!("switchboard_sip_connections_timed_out_total", "reason" => reason).increment(1);
                        break;
                    }
                    r = rd.read(&mut chunk) => match r {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) => {
                            debug!(%peer, transport = dest.transport_name(), error = %e, "SIP connection read failed");
                            break;
                        }
                    },
                };
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    match frame_length(&buf, self.max_size) {
                        Frame::KeepAlive(k) => {
                            keepalive_lf += buf[..k].iter().filter(|b| **b == b'\n').count();
                            buf.drain(..k);
                            while keepalive_lf >= 2 {
                                keepalive_lf -= 2;
                                let _ = tx.try_send(b"\r\n".to_vec());
                            }
                        }
                        Frame::Message(len) => {
                            keepalive_lf = 0;
                            let frame: Vec<u8> = buf.drain(..len).collect();
                            self.deliver(&frame, dest).await;
                        }
                        Frame::Incomplete => break,
                        Frame::Invalid(e) => {
                            warn!(%peer, transport = dest.transport_name(), error = %e, "closing SIP connection that cannot be framed");
                            metrics::counter!("switchboard_sip_messages_dropped_total", "reason" => e.to_string()).increment(1);
                            break 'read;
                        }
                    }
                }
            }
            closed.cancel();
            self.forget(dest, &tx);
        });
    }
}

/// Logs and counts a failed TLS handshake (`direction`: inbound/outbound).
fn handshake_failed(direction: &'static str, peer: SocketAddr, error: &str) {
    warn!(%peer, direction, error, "SIP TLS handshake failed");
    metrics::counter!("switchboard_sip_tls_handshake_failures_total", "direction" => direction).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn outgoing_tcp_messages_are_queued_while_connecting_and_keep_their_order() {
        let (tx, _rx) = mpsc::channel(8);
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let t = Transport::bind(Listen { tcp: Some(any), ..Listen::default() }, None, 65_535, tx, CancellationToken::new()).await.unwrap();
        let peer = TcpListener::bind(any).await.unwrap();
        let dest = Destination::Tcp(peer.local_addr().unwrap());
        let mut first = SipMessage::request("OPTIONS", "sip:a@b");
        first.push_header("Call-ID", "one");
        let mut second = first.clone();
        second.set_header("Call-ID", "two");
        // Both sends return before the peer has even accepted.
        t.send(dest, &first).await;
        t.send(dest, &second).await;
        let (mut conn, _) = peer.accept().await.unwrap();
        let expected = [first.encode(), second.encode()].concat();
        let mut got = vec![0u8; expected.len()];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn a_refused_connection_is_forgotten_so_the_next_send_retries() {
        let (tx, _rx) = mpsc::channel(8);
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let t = Transport::bind(Listen { tcp: Some(any), ..Listen::default() }, None, 65_535, tx, CancellationToken::new()).await.unwrap();
        // A port with no listener: connect is refused.
        let closed = TcpListener::bind(any).await.unwrap().local_addr().unwrap();
        t.send(Destination::Tcp(closed), &SipMessage::request("OPTIONS", "sip:a@b")).await;
        let gone = async {
            while t.connections.lock().unwrap().contains_key(&Destination::Tcp(closed)) {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), gone).await.expect("failed connection removed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_never_finishes_its_message_is_closed() {
        let (tx, _rx) = mpsc::channel(8);
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let t = Transport::bind(Listen { tcp: Some(any), ..Listen::default() }, None, 65_535, tx, CancellationToken::new()).await.unwrap();
        let mut conn = TcpStream::connect(t.tcp_addr().unwrap()).await.unwrap();
        conn.write_all(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5;branch=z9hG4bKx\r\nContent-Length: 10\r\n\r\n12").await.unwrap();
        let started = tokio::time::Instant::now();
        let mut rest = Vec::new();
        // The read ends (EOF) when the gateway gives up on the message.
        conn.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        assert!(started.elapsed() >= INCOMPLETE_TIMEOUT, "closed after {:?}", started.elapsed());
        assert!(started.elapsed() < IDLE_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_is_kept_as_long_as_a_registration_then_closed() {
        let (tx, _rx) = mpsc::channel(8);
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let t = Transport::bind(Listen { tcp: Some(any), ..Listen::default() }, None, 65_535, tx, CancellationToken::new()).await.unwrap();
        let mut conn = TcpStream::connect(t.tcp_addr().unwrap()).await.unwrap();
        conn.write_all(b"\r\n\r\n").await.unwrap();
        let mut pong = [0u8; 2];
        conn.read_exact(&mut pong).await.unwrap();
        let started = tokio::time::Instant::now();
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).await.unwrap();
        assert!(started.elapsed() >= IDLE_TIMEOUT, "closed after {:?}", started.elapsed());
    }
}
