//! Datagrams for one UDP socket gathered over a turn of an event loop and
//! sent together with one `sendmmsg(2)`. The WebRTC edge sends every
//! browser's packets from one shared port: at a few hundred calls one
//! turn of its loop carries dozens, and a `sendto` each is a system call
//! each.
//!
//! What the kernel refuses (a full socket buffer, an unreachable address)
//! is dropped and counted in `switchboard_media_send_drops_total{reason}`,
//! as the relay's own sends are: late audio is worth nothing.

use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};

use rustix::io::Errno;
use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};

/// Datagrams sent by one system call at most (the kernel's own limit,
/// `UIO_MAXIOV`, is 1024).
pub const BATCH: usize = 64;

/// Datagrams waiting for their socket, in the order they are to go.
#[derive(Debug, Default)]
pub struct Outbox {
    queued: Vec<(SocketAddrAny, Vec<u8>)>,
}

/// What a flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub sent: usize,
    pub dropped: usize,
    /// System calls it took.
    pub calls: usize,
}

impl Outbox {
    pub fn new() -> Outbox {
        Outbox { queued: Vec::with_capacity(BATCH) }
    }

    /// Queues `bytes` for `destination`; sends what is queued once a
    /// batch is full.
    pub fn push(&mut self, socket: &UdpSocket, destination: SocketAddr, bytes: Vec<u8>) {
        self.queued.push((destination.into(), bytes));
        if self.queued.len() >= BATCH {
            self.flush(socket);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Sends everything queued, in order.
    pub fn flush(&mut self, socket: &UdpSocket) -> Flushed {
        let mut done = Flushed::default();
        let mut next = 0;
        while next < self.queued.len() {
            let batch = &self.queued[next..(next + BATCH).min(self.queued.len())];
            let iovs: Vec<[IoSlice<'_>; 1]> = batch.iter().map(|(_, bytes)| [IoSlice::new(bytes)]).collect();
            let mut control: Vec<SendAncillaryBuffer<'_, '_, '_>> = batch.iter().map(|_| SendAncillaryBuffer::default()).collect();
            let mut msgs: Vec<MMsgHdr<'_>> = batch.iter().zip(&iovs).zip(control.iter_mut()).map(|(((addr, _), iov), control)| MMsgHdr::new_with_addr(addr, iov, control)).collect();
            done.calls += 1;
            match rustix::net::sendmmsg(socket, &mut msgs, SendFlags::DONTWAIT) {
                // The kernel stops at the first message it refuses and
                // reports how many went before it; that one's error is
                // what the next call returns.
                Ok(n) if n > 0 => {
                    done.sent += n;
                    next += n;
                }
                Ok(_) => {
                    drop_one("error");
                    done.dropped += 1;
                    next += 1;
                }
                Err(Errno::INTR) => {}
                Err(e) => {
                    let reason = if e == Errno::AGAIN { "buffer_full" } else { "error" };
                    tracing::debug!(error = %e, destination = ?self.queued[next].0, "sending a datagram failed; dropped");
                    drop_one(reason);
                    done.dropped += 1;
                    next += 1;
                }
            }
        }
        self.queued.clear();
        done
    }
}

fn drop_one(reason: &'static str) {
    metrics::counter!("switchboard_media_send_drops_total", "reason" => reason).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receiver() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    fn read(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = [0u8; 2048];
        let (n, from) = s.recv_from(&mut buf).unwrap();
        (buf[..n].to_vec(), from)
    }

    #[test]
    fn datagrams_go_in_order_to_their_own_destinations_in_batches() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (a, b) = (receiver(), receiver());
        let mut out = Outbox::new();
        for i in 0..(BATCH as u16 + 10) {
            let to = if i % 2 == 0 { &a } else { &b };
            out.push(&socket, to.local_addr().unwrap(), i.to_be_bytes().to_vec());
        }
        assert_eq!(out.queued.len(), 10, "a full batch went at once");
        let flushed = out.flush(&socket);
        assert_eq!(flushed, Flushed { sent: 10, dropped: 0, calls: 1 });
        assert!(out.is_empty());
        for i in (0..(BATCH as u16 + 10)).step_by(2) {
            assert_eq!(read(&a), (i.to_be_bytes().to_vec(), socket.local_addr().unwrap()));
            assert_eq!(read(&b), ((i + 1).to_be_bytes().to_vec(), socket.local_addr().unwrap()));
        }
    }

    #[test]
    fn a_refused_datagram_is_dropped_and_the_rest_still_go() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = receiver();
        let mut out = Outbox::new();
        out.push(&socket, a.local_addr().unwrap(), b"one".to_vec());
        // An IPv6 destination on an IPv4 socket: refused (EAFNOSUPPORT or
        // EINVAL) by the kernel, whatever the machine's network.
        out.push(&socket, "[::1]:9".parse().unwrap(), b"lost".to_vec());
        out.push(&socket, a.local_addr().unwrap(), b"two".to_vec());
        let flushed = out.flush(&socket);
        assert_eq!((flushed.sent, flushed.dropped), (2, 1));
        assert_eq!(read(&a).0, b"one");
        assert_eq!(read(&a).0, b"two");
    }

    #[test]
    fn an_empty_flush_makes_no_system_call() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(Outbox::new().flush(&socket), Flushed::default());
    }
}
