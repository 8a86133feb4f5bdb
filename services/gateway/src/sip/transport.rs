//! SIP transports: UDP datagrams and TCP streams (RFC 3261 §18).
//!
//! The only SIP code that owns sockets. Inbound bytes are parsed here and
//! handed on as [`Inbound`] messages; bytes that are no SIP message are
//! dropped and counted. Outbound messages go to a [`Destination`]; TCP
//! responses reuse the connection the request came on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::message::{frame_length, Frame, SipMessage};

/// How long an outgoing TCP connection may take to establish.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where a message goes to, or came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    Udp(SocketAddr),
    Tcp(SocketAddr),
}

impl Destination {
    pub fn addr(&self) -> SocketAddr {
        match self {
            Destination::Udp(a) | Destination::Tcp(a) => *a,
        }
    }

    /// Whether the transport delivers reliably (no retransmissions needed).
    pub fn is_reliable(&self) -> bool {
        !matches!(self, Destination::Udp(_))
    }

    /// The transport token used in Via (`UDP`, `TCP`).
    pub fn transport_name(&self) -> &'static str {
        match self {
            Destination::Udp(_) => "UDP",
            Destination::Tcp(_) => "TCP",
        }
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
}

/// The SIP transports of the gateway: a cheap clone handle.
#[derive(Clone)]
pub struct Transport {
    udp: Option<Arc<UdpSocket>>,
    udp_addr: Option<SocketAddr>,
    tcp_addr: Option<SocketAddr>,
    connections: Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>,
    inbound: mpsc::Sender<Inbound>,
    max_size: usize,
    shutdown: CancellationToken,
}

impl Transport {
    /// Binds the configured listeners and starts reading; every message read
    /// is sent to `inbound`.
    pub async fn bind(
        udp: Option<SocketAddr>,
        tcp: Option<SocketAddr>,
        max_size: usize,
        inbound: mpsc::Sender<Inbound>,
        shutdown: CancellationToken,
    ) -> Result<Transport, TransportError> {
        let mut t = Transport {
            udp: None,
            udp_addr: None,
            tcp_addr: None,
            connections: Arc::default(),
            inbound,
            max_size,
            shutdown,
        };
        if let Some(addr) = udp {
            let socket = UdpSocket::bind(addr)
                .await
                .map_err(|source| TransportError::Bind { transport: "UDP", key: "udp", addr, source })?;
            t.udp_addr = socket.local_addr().ok();
            let socket = Arc::new(socket);
            t.udp = Some(socket.clone());
            tokio::spawn(t.clone().udp_loop(socket));
        }
        if let Some(addr) = tcp {
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
            tokio::spawn(t.clone().accept_loop(listener));
        }
        Ok(t)
    }

    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The local address a message to `dest` leaves from (for Via/Contact).
    pub fn local_for(&self, dest: &Destination) -> Option<SocketAddr> {
        match dest {
            Destination::Udp(_) => self.udp_addr,
            Destination::Tcp(_) => self.tcp_addr,
        }
    }

    /// Sends one message. Failures are logged and counted: SIP recovers from
    /// lost messages by retransmission.
    pub async fn send(&self, dest: Destination, msg: &SipMessage) {
        let bytes = msg.encode();
        let kind = if msg.is_request() { msg.method().unwrap_or("?").to_owned() } else { msg.status().unwrap_or(0).to_string() };
        metrics::counter!("switchboard_sip_messages_sent_total", "transport" => dest.transport_name(), "kind" => kind).increment(1);
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
            Destination::Tcp(addr) => {
                let existing = self.connections.lock().ok().and_then(|c| c.get(&addr).cloned());
                // A new connection is queued, not awaited: a peer that does
                // not answer must not hold up the caller (the call manager).
                let sender = match existing {
                    Some(s) if !s.is_closed() => s,
                    _ => self.clone().connect_queued(addr),
                };
                if sender.send(bytes).await.is_err() {
                    metrics::counter!("switchboard_sip_send_errors_total", "transport" => "TCP").increment(1);
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

    async fn accept_loop(self, listener: TcpListener) {
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok((stream, peer)) => self.clone().adopt(stream, peer),
                    Err(e) => warn!(error = %e, "SIP TCP accept failed"),
                },
            }
        }
    }

    /// Registers a queue for `peer` at once and connects in the background;
    /// messages queued meanwhile are written once connected, or dropped
    /// (and counted) if the connection fails.
    fn connect_queued(self, peer: SocketAddr) -> mpsc::Sender<Vec<u8>> {
        let (tx, rx) = mpsc::channel::<Vec<u8>>(256);
        if let Ok(mut c) = self.connections.lock() {
            c.insert(peer, tx.clone());
        }
        tokio::spawn(async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer)).await {
                Ok(Ok(stream)) => self.run_connection(stream, peer, rx),
                outcome => {
                    let error = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_owned(),
                    };
                    warn!(%peer, error, "SIP connect over TCP failed");
                    metrics::counter!("switchboard_sip_send_errors_total", "transport" => "TCP").increment(1);
                    if let Ok(mut c) = self.connections.lock() {
                        c.remove(&peer);
                    }
                }
            }
        });
        tx
    }

    /// Registers an accepted connection and starts its reader and writer.
    fn adopt(self, stream: TcpStream, peer: SocketAddr) {
        let (tx, rx) = mpsc::channel::<Vec<u8>>(256);
        if let Ok(mut c) = self.connections.lock() {
            c.insert(peer, tx);
        }
        self.run_connection(stream, peer, rx);
    }

    /// Starts the writer (draining `rx`) and the framing reader of a connection.
    fn run_connection(self, stream: TcpStream, peer: SocketAddr, mut rx: mpsc::Receiver<Vec<u8>>) {
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            while let Some(bytes) = tokio::select! { _ = shutdown.cancelled() => None, b = rx.recv() => b } {
                if wr.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::with_capacity(8192);
            let mut chunk = vec![0u8; 16_384];
            loop {
                let n = tokio::select! {
                    _ = me.shutdown.cancelled() => break,
                    r = rd.read(&mut chunk) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
                };
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    match frame_length(&buf, me.max_size) {
                        Frame::KeepAlive(k) => {
                            buf.drain(..k);
                        }
                        Frame::Message(len) => {
                            let frame: Vec<u8> = buf.drain(..len).collect();
                            me.deliver(&frame, Destination::Tcp(peer)).await;
                        }
                        Frame::Incomplete => break,
                        Frame::Invalid(e) => {
                            warn!(%peer, error = %e, "closing SIP TCP connection that cannot be framed");
                            metrics::counter!("switchboard_sip_messages_dropped_total", "reason" => e.to_string()).increment(1);
                            if let Ok(mut c) = me.connections.lock() {
                                c.remove(&peer);
                            }
                            return;
                        }
                    }
                }
            }
            if let Ok(mut c) = me.connections.lock() {
                c.remove(&peer);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn outgoing_tcp_messages_are_queued_while_connecting_and_keep_their_order() {
        let (tx, _rx) = mpsc::channel(8);
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let t = Transport::bind(None, Some(any), 65_535, tx, CancellationToken::new()).await.unwrap();
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
        let t = Transport::bind(None, Some(any), 65_535, tx, CancellationToken::new()).await.unwrap();
        // A port with no listener: connect is refused.
        let closed = TcpListener::bind(any).await.unwrap().local_addr().unwrap();
        t.send(Destination::Tcp(closed), &SipMessage::request("OPTIONS", "sip:a@b")).await;
        let gone = async {
            while t.connections.lock().unwrap().contains_key(&closed) {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), gone).await.expect("failed connection removed");
    }
}
