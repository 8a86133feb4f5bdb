//! The media threads: each runs one event loop over the sockets of the
//! calls placed on it (round-robin), and a call's packets never leave its
//! thread.
//!
//! RTP is many tiny events: fifty packets a second per leg. The loop waits
//! in one level-triggered `epoll_wait` for all its calls' sockets; for each
//! ready socket it reads one datagram, lets the call's bridge decide, and
//! sends the result — one `recvfrom` and one `sendto` per packet, with no
//! task wake-up, no waker and no second read that only finds the socket
//! empty (decision 0012). Timers (played audio, RTCP, recorder drains) are
//! one heap of per-call deadlines. Commands from the rest of the gateway
//! (hold, record, stop…) arrive through the thread's [`Mailbox`], and so
//! do datagrams from the gateway's own sockets (the WebRTC edge's), carried
//! in memory ([`LocalNet`]). Uploads and everything else stay on the main
//! runtime.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rustix::buffer::spare_capacity;
use rustix::event::epoll;
use rustix::io::Errno;
use tokio::runtime::Handle;

use super::deadlines::Deadlines;
use super::local::{Deliver, LocalNet, Mailbox, MailboxReader, Offer, DATAGRAM_BACKLOG};
use super::relay::{CallMedia, Control, Flow};
use super::spooler::Spooler;

/// The epoll key of the thread's own wake-up eventfd.
const WAKE: u64 = u64::MAX;
/// Sockets per call: each leg's RTP and RTCP.
pub(super) const SOCKETS: usize = 4;

/// Handles to the media threads and to the main runtime. The threads stop
/// when the last handle is gone: the call manager's, and each running
/// call's own, so calls still finishing keep their thread.
#[derive(Debug, Clone)]
pub struct MediaThreads {
    inner: Arc<Threads>,
    next: Arc<AtomicUsize>,
    /// The runtime the rest of the gateway runs on (uploads, events).
    pub main: Handle,
    /// Recordings' file I/O, off the media threads.
    pub spooler: Spooler,
    /// The process's sockets that take datagrams in memory.
    pub local: Arc<LocalNet>,
}

#[derive(Debug)]
struct Threads {
    threads: Vec<MediaThread>,
}

impl Drop for Threads {
    fn drop(&mut self) {
        for t in &self.threads {
            t.send(Inbox::Shutdown);
        }
    }
}

/// One media thread's inbox.
#[derive(Debug, Clone)]
pub(super) struct MediaThread {
    mailbox: Arc<Mailbox<Inbox>>,
}

pub(super) enum Inbox {
    /// A new call's media, under its id.
    Start(u64, Box<CallMedia>),
    /// A command for a call.
    Control(u64, Control),
    /// The call's handle is gone: finish its media.
    Closed(u64),
    /// A datagram for a call's socket (`key`, as epoll's) from another
    /// socket of the gateway's.
    Datagram { key: u64, from: SocketAddr, bytes: Vec<u8> },
    Shutdown,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Inbox::Start(id, _) => write!(f, "Start({id})"),
            Inbox::Control(id, _) => write!(f, "Control({id})"),
            Inbox::Closed(id) => write!(f, "Closed({id})"),
            Inbox::Datagram { key, from, bytes } => write!(f, "Datagram({key}, {from}, {} bytes)", bytes.len()),
            Inbox::Shutdown => f.write_str("Shutdown"),
        }
    }
}

impl MediaThread {
    /// Hands a message to the thread; false when the thread is gone.
    pub(super) fn send(&self, message: Inbox) -> bool {
        self.mailbox.send(message)
    }
}

impl Deliver for Mailbox<Inbox> {
    fn deliver(&self, key: u64, from: SocketAddr, bytes: &[u8]) -> Offer {
        self.offer(Inbox::Datagram { key, from, bytes: bytes.to_vec() }, DATAGRAM_BACKLOG)
    }
}

impl MediaThreads {
    /// Starts `count` media threads (two per CPU when 0: measured better
    /// than one per CPU, see decision 0012), whose calls' sockets take
    /// datagrams in memory through `local`. Call from within the main
    /// runtime.
    pub fn start_with(count: usize, local: Arc<LocalNet>) -> std::io::Result<MediaThreads> {
        let count = if count == 0 { 2 * std::thread::available_parallelism().map_or(1, |n| n.get()) } else { count };
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
            let (mailbox, inbox) = Mailbox::new()?;
            epoll::add(&epoll, inbox.fd(), epoll::EventData::new_u64(WAKE), epoll::EventFlags::IN)?;
            let state = EventLoop { epoll, inbox, me: mailbox.clone(), local: local.clone(), calls: HashMap::new(), timers: Deadlines::default() };
            std::thread::Builder::new().name(format!("media-{i}")).spawn(move || state.run())?;
            threads.push(MediaThread { mailbox });
        }
        let main = Handle::current();
        let spooler = Spooler::start(main.clone())?;
        Ok(MediaThreads { inner: Arc::new(Threads { threads }), next: Arc::new(AtomicUsize::new(0)), main, spooler, local })
    }

    /// [`MediaThreads::start_with`] a registry of their own, for sockets
    /// reached at the addresses they are bound to.
    pub fn start(count: usize) -> std::io::Result<MediaThreads> {
        MediaThreads::start_with(count, LocalNet::new(Vec::new()))
    }

    /// The thread the next call goes to, and the call's id there.
    pub(super) fn place(&self) -> (MediaThread, u64) {
        static IDS: AtomicU64 = AtomicU64::new(0);
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.inner.threads.len();
        (self.inner.threads[i].clone(), IDS.fetch_add(1, Ordering::Relaxed))
    }

    pub fn count(&self) -> usize {
        self.inner.threads.len()
    }
}

struct Slot {
    media: Box<CallMedia>,
    /// The deadline in the timer heap that is current for this call.
    armed: Option<Instant>,
}

struct EventLoop {
    epoll: OwnedFd,
    inbox: MailboxReader<Inbox>,
    /// The thread's own mailbox, where its calls' sockets are registered.
    me: Arc<Mailbox<Inbox>>,
    local: Arc<LocalNet>,
    calls: HashMap<u64, Slot>,
    /// Deadlines by call; an entry is stale when it is not the call's `armed`.
    timers: Deadlines,
}

impl EventLoop {
    fn run(mut self) {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
        loop {
            match wait(&self.epoll, &mut events, self.timers.next()) {
                Ok(()) => {}
                Err(Errno::INTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "a media thread cannot wait for its sockets; its calls have no audio");
                    return;
                }
            }
            let now = Instant::now();
            let mut woken = false;
            for ev in &events {
                let key = ev.data.u64();
                if key == WAKE {
                    woken = true;
                    continue;
                }
                let id = key / SOCKETS as u64;
                if let Some(slot) = self.calls.get_mut(&id) {
                    slot.media.readable(key as usize % SOCKETS, now);
                    rearm(slot, id, &mut self.timers);
                }
            }
            if woken && !self.drain_inbox() {
                return;
            }
            self.fire_timers();
        }
    }

    /// Handles every queued message; false on shutdown.
    fn drain_inbox(&mut self) -> bool {
        self.inbox.reset();
        while let Some(message) = self.inbox.try_recv() {
            let now = Instant::now();
            match message {
                Inbox::Datagram { key, from, bytes } => {
                    let id = key / SOCKETS as u64;
                    if let Some(slot) = self.calls.get_mut(&id) {
                        slot.media.datagram(key as usize % SOCKETS, from, &bytes, now);
                        rearm(slot, id, &mut self.timers);
                    }
                }
                Inbox::Start(id, media) => self.add(id, media),
                Inbox::Control(id, c) => {
                    let Some(slot) = self.calls.get_mut(&id) else { continue };
                    match slot.media.control(c, now) {
                        Flow::Continue => rearm(slot, id, &mut self.timers),
                        Flow::Stopped => self.remove(id),
                    }
                }
                Inbox::Closed(id) => {
                    if let Some(slot) = self.calls.get_mut(&id) {
                        slot.media.finish(now);
                        self.remove(id);
                    }
                }
                Inbox::Shutdown => return false,
            }
        }
        true
    }

    fn add(&mut self, id: u64, mut media: Box<CallMedia>) {
        for (i, socket) in media.sockets().iter().enumerate() {
            let key = epoll::EventData::new_u64(id * SOCKETS as u64 + i as u64);
            if let Err(e) = epoll::add(&self.epoll, socket.as_fd(), key, epoll::EventFlags::IN) {
                tracing::warn!(call_id = media.call_id(), error = %e, "a call's socket cannot be watched; the call has no audio");
                return;
            }
        }
        // After the call is here: a datagram for it finds it.
        let target: Arc<dyn Deliver> = self.me.clone();
        media.register(&self.local, &target, id * SOCKETS as u64);
        let mut slot = Slot { media, armed: None };
        rearm(&mut slot, id, &mut self.timers);
        self.calls.insert(id, slot);
        metrics::gauge!("switchboard_media_calls").increment(1.0);
    }

    fn remove(&mut self, id: u64) {
        let Some(slot) = self.calls.remove(&id) else { return };
        for socket in slot.media.sockets() {
            let _ = epoll::delete(&self.epoll, socket.as_fd());
        }
        metrics::gauge!("switchboard_media_calls").decrement(1.0);
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        for (at, id) in self.timers.due(now) {
            let Some(slot) = self.calls.get_mut(&id) else { continue };
            if slot.armed != Some(at) {
                continue; // stale: the call's deadline moved
            }
            slot.armed = None;
            slot.media.flush(now);
            rearm(slot, id, &mut self.timers);
        }
    }
}

/// Waits on `epoll` until a socket is ready or `deadline` passed (forever
/// without one), filling `events`.
pub(crate) fn wait(epoll: &OwnedFd, events: &mut Vec<epoll::Event>, deadline: Option<Instant>) -> Result<(), Errno> {
    let timeout = deadline.map(|t| {
        let d = t.saturating_duration_since(Instant::now());
        rustix::time::Timespec { tv_sec: d.as_secs() as i64, tv_nsec: d.subsec_nanos() as i64 }
    });
    events.clear();
    epoll::wait(epoll, spare_capacity(events), timeout.as_ref()).map(|_| ())
}

/// Puts the call's next deadline in the heap if it changed.
fn rearm(slot: &mut Slot, id: u64, timers: &mut Deadlines) {
    let next = slot.media.next_deadline();
    timers.arm(id, &mut slot.armed, next);
}
