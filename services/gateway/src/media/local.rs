//! Datagrams between the gateway's own sockets, carried in memory.
//!
//! A browser leg's media crosses the gateway twice: the WebRTC edge
//! decrypts it and sends plain RTP to the call's bridge, which sends the
//! far end's RTP back the same way. Both ends are sockets of this process,
//! addressed as any RTP peer is (the bridge's address comes from SDP, the
//! edge's from its SDP answer), and over the kernel's loopback each packet
//! costs a `sendto`, the receiver's network stack and a `recvfrom`. Here
//! the sender looks the destination up among the process's registered
//! sockets and, when it is one, hands the datagram to the owning thread's
//! [`Mailbox`] instead (decision 0026). Everything else (the source address
//! the receiver latches on, the sockets themselves, the addresses in SDP)
//! stays as it was; a destination that is not registered goes through the
//! kernel as before.
//!
//! [`Mailbox`] is also how every event-loop thread of the gateway (media
//! threads, the WebRTC edge) takes commands: a channel and an eventfd the
//! loop waits on, written only when the loop is not already due to look,
//! so that a burst of messages costs one wake-up.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, RwLock, Weak};

use rustix::event::{eventfd, EventfdFlags};

/// A channel into an event-loop thread, with the eventfd that wakes it.
pub struct Mailbox<T> {
    tx: mpsc::Sender<T>,
    wake: OwnedFd,
    /// Whether the loop has been woken and has not drained yet.
    pending: AtomicBool,
    /// Messages sent and not taken yet.
    queued: AtomicUsize,
}

/// Datagrams a thread may have waiting, as a socket's receive buffer: a
/// second of 300 calls' packets. A thread that falls further behind loses
/// the newest, as a full socket would, instead of growing without bound.
pub const DATAGRAM_BACKLOG: usize = 16_384;

/// What became of an offered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// The loop is that far behind; the message was dropped.
    Full,
    /// The loop is gone.
    Gone,
}

impl<T> std::fmt::Debug for Mailbox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox").field("queued", &self.queued.load(Ordering::Relaxed)).finish()
    }
}

/// The loop's end of a [`Mailbox`].
pub struct MailboxReader<T> {
    rx: mpsc::Receiver<T>,
    mailbox: Arc<Mailbox<T>>,
}

impl<T> Mailbox<T> {
    pub fn new() -> std::io::Result<(Arc<Mailbox<T>>, MailboxReader<T>)> {
        let (tx, rx) = mpsc::channel();
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        let mailbox = Arc::new(Mailbox { tx, wake, pending: AtomicBool::new(false), queued: AtomicUsize::new(0) });
        Ok((mailbox.clone(), MailboxReader { rx, mailbox }))
    }

    /// Queues `message`, waking the loop unless it is due to look anyway;
    /// false when the loop is gone.
    pub fn send(&self, message: T) -> bool {
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(message).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        // Release: the loop that clears the flag sees the message.
        if !self.pending.swap(true, Ordering::AcqRel) {
            // A full counter (never, at 2^64 - 1) only means it is awake.
            let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
        }
        true
    }

    /// Queues `message` unless `limit` messages wait already.
    pub fn offer(&self, message: T, limit: usize) -> Offer {
        if self.queued.load(Ordering::Relaxed) >= limit {
            return Offer::Full;
        }
        if self.send(message) {
            Offer::Queued
        } else {
            Offer::Gone
        }
    }
}

impl<T> MailboxReader<T> {
    /// The eventfd to wait on (readable when messages wait).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.mailbox.wake.as_fd()
    }

    /// After the eventfd was readable, before taking messages with
    /// [`MailboxReader::try_recv`]: a message sent after this wakes the
    /// loop again.
    pub fn reset(&self) {
        let mut counter = [0u8; 8];
        let _ = rustix::io::read(&self.mailbox.wake, &mut counter);
        // Acquire: pairs with the senders' swap, so their messages are seen.
        self.mailbox.pending.swap(false, Ordering::AcqRel);
    }

    /// The next queued message, if any.
    pub fn try_recv(&self) -> Option<T> {
        let message = self.rx.try_recv().ok()?;
        self.mailbox.queued.fetch_sub(1, Ordering::Relaxed);
        Some(message)
    }
}

/// A thread that takes datagrams for its registered sockets.
pub trait Deliver: Send + Sync {
    /// Queues `bytes` from `from` for the socket registered under `key`
    /// (with [`Mailbox::offer`] and [`DATAGRAM_BACKLOG`]).
    fn deliver(&self, key: u64, from: SocketAddr, bytes: &[u8]) -> Offer;
}

struct Route {
    target: Arc<dyn Deliver>,
    key: u64,
    /// Which registration this is (a socket's address can be bound again
    /// after its first owner let it go).
    id: u64,
}

/// The process's sockets that take datagrams in memory, by address.
pub struct LocalNet {
    routes: RwLock<HashMap<SocketAddr, Route>>,
    /// Address written into SDP → the address the sockets are bound to
    /// (`media.advertised_ip` → `media.bind_ip`).
    aliases: Vec<(IpAddr, IpAddr)>,
    ids: AtomicU64,
    /// `switchboard_media_local_datagrams_total`, looked up once: it
    /// counts every packet of every browser call.
    delivered: metrics::Counter,
}

impl std::fmt::Debug for LocalNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let routes = self.routes.read().map(|r| r.len()).unwrap_or(0);
        f.debug_struct("LocalNet").field("routes", &routes).field("aliases", &self.aliases).finish()
    }
}

impl LocalNet {
    /// `aliases`: addresses other parties are told (SDP) for sockets bound
    /// to another one, as `(told, bound)`; a bound address that is
    /// unspecified (0.0.0.0) is what such sockets are registered under.
    pub fn new(aliases: Vec<(IpAddr, IpAddr)>) -> Arc<LocalNet> {
        let aliases = aliases.into_iter().filter(|(told, bound)| told != bound).collect();
        let delivered = metrics::counter!("switchboard_media_local_datagrams_total");
        Arc::new(LocalNet { routes: RwLock::new(HashMap::new()), aliases, ids: AtomicU64::new(0), delivered })
    }

    /// Datagrams sent to `addr` (a socket of the caller's, bound there)
    /// go to `target` under `key` until the registration is dropped.
    pub fn register(self: &Arc<Self>, addr: SocketAddr, target: Arc<dyn Deliver>, key: u64) -> Registration {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut routes) = self.routes.write() {
            routes.insert(addr, Route { target, key, id });
        }
        Registration { net: Arc::downgrade(self), addr, id }
    }

    /// Hands `bytes` from `from` to the socket at `to` when it is one of
    /// the process's; false when it is not (send it through the kernel).
    pub fn send(&self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) -> bool {
        let Ok(routes) = self.routes.read() else { return false };
        let route = routes.get(&to).or_else(|| {
            let (_, bound) = self.aliases.iter().find(|(told, _)| *told == to.ip())?;
            routes.get(&SocketAddr::new(*bound, to.port()))
        });
        match route {
            Some(r) => {
                // Lost as on a full or closed socket.
                match r.target.deliver(r.key, from, bytes) {
                    Offer::Queued => self.delivered.increment(1),
                    Offer::Full => metrics::counter!("switchboard_media_local_drops_total", "reason" => "backlog").increment(1),
                    Offer::Gone => metrics::counter!("switchboard_media_local_drops_total", "reason" => "closed").increment(1),
                }
                true
            }
            None => false,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.routes.read().map(|r| r.len()).unwrap_or(0)
    }
}

/// A socket's entry in [`LocalNet`]; removed when dropped.
#[derive(Debug)]
pub struct Registration {
    net: Weak<LocalNet>,
    addr: SocketAddr,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(net) = self.net.upgrade() else { return };
        let Ok(mut routes) = net.routes.write() else { return };
        if routes.get(&self.addr).is_some_and(|r| r.id == self.id) {
            routes.remove(&self.addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u64, SocketAddr, Vec<u8>)>>);

    impl Deliver for Recorder {
        fn deliver(&self, key: u64, from: SocketAddr, bytes: &[u8]) -> Offer {
            self.0.lock().unwrap().push((key, from, bytes.to_vec()));
            Offer::Queued
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_registered_address_takes_datagrams_in_memory_until_dropped() {
        let net = LocalNet::new(Vec::new());
        let target = Arc::new(Recorder::default());
        let registration = net.register(addr("127.0.0.1:20000"), target.clone(), 7);
        assert!(net.send(addr("127.0.0.1:40000"), addr("127.0.0.1:20000"), b"rtp"));
        assert!(!net.send(addr("127.0.0.1:40000"), addr("127.0.0.1:20002"), b"rtp"), "not ours: through the kernel");
        assert!(!net.send(addr("127.0.0.1:40000"), addr("10.0.0.1:20000"), b"rtp"), "same port on another host");
        assert_eq!(*target.0.lock().unwrap(), vec![(7, addr("127.0.0.1:40000"), b"rtp".to_vec())]);
        drop(registration);
        assert!(!net.send(addr("127.0.0.1:40000"), addr("127.0.0.1:20000"), b"rtp"));
        assert_eq!(net.len(), 0);
    }

    #[test]
    fn the_advertised_address_reaches_sockets_bound_elsewhere() {
        let net = LocalNet::new(vec![("203.0.113.5".parse().unwrap(), "0.0.0.0".parse().unwrap())]);
        let target = Arc::new(Recorder::default());
        let _r = net.register(addr("0.0.0.0:20000"), target.clone(), 1);
        assert!(net.send(addr("127.0.0.1:40000"), addr("203.0.113.5:20000"), b"x"));
        assert!(!net.send(addr("127.0.0.1:40000"), addr("198.51.100.1:20000"), b"x"));
        assert_eq!(target.0.lock().unwrap().len(), 1);
    }

    #[test]
    fn an_old_registration_does_not_remove_a_new_one_of_the_same_address() {
        let net = LocalNet::new(Vec::new());
        let first = net.register(addr("127.0.0.1:20000"), Arc::new(Recorder::default()), 1);
        let second_target = Arc::new(Recorder::default());
        let _second = net.register(addr("127.0.0.1:20000"), second_target.clone(), 2);
        drop(first);
        assert!(net.send(addr("127.0.0.1:1"), addr("127.0.0.1:20000"), b"x"));
        assert_eq!(second_target.0.lock().unwrap()[0].0, 2);
    }

    #[test]
    fn a_burst_of_messages_wakes_the_loop_once_and_a_later_one_again() {
        let (mailbox, reader) = Mailbox::<u32>::new().unwrap();
        let readable = |reader: &MailboxReader<u32>| {
            let fd = reader.fd();
            let mut fds = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
            rustix::event::poll(&mut fds, Some(&rustix::time::Timespec { tv_sec: 0, tv_nsec: 0 })).unwrap() == 1
        };
        assert!(!readable(&reader));
        for i in 0..3 {
            assert!(mailbox.send(i));
        }
        assert!(readable(&reader));
        let mut counter = [0u8; 8];
        rustix::io::read(&reader.fd(), &mut counter).unwrap();
        assert_eq!(u64::from_ne_bytes(counter), 1, "one write for the burst");
        rustix::io::write(&reader.fd(), &1u64.to_ne_bytes()).unwrap();
        let drain = |reader: &MailboxReader<u32>| {
            reader.reset();
            std::iter::from_fn(|| reader.try_recv()).collect::<Vec<_>>()
        };
        assert_eq!(drain(&reader), vec![0, 1, 2]);
        assert!(!readable(&reader));
        assert!(mailbox.send(3));
        assert!(readable(&reader), "drained: the next message wakes it again");
        assert_eq!(drain(&reader), vec![3]);
        assert_eq!(mailbox.offer(4, 2), Offer::Queued);
        assert_eq!(mailbox.offer(5, 2), Offer::Queued);
        assert_eq!(mailbox.offer(6, 2), Offer::Full, "two wait already");
        assert_eq!(drain(&reader), vec![4, 5], "the newest was dropped");
        assert_eq!(mailbox.offer(7, 2), Offer::Queued, "room again once taken");
        drop(reader);
        assert!(!mailbox.send(8), "the loop is gone");
        assert_eq!(mailbox.offer(9, 2), Offer::Gone);
    }
}
