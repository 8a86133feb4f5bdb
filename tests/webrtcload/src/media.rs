//! The media threads: a few threads (not one per call), each an epoll loop
//! over the sockets of its share of the endpoints. An endpoint is either a
//! browser (a str0m `Rtc`, full ICE, on its own UDP socket as a browser
//! has) or the far end of a call (plain RTP on its own socket). Each sends
//! one 20 ms packet every 20 ms once its call is up and counts what it
//! receives (`stats::Reception`).
//!
//! Everything a report needs is published per call in [`CallShared`]
//! (atomics) and per thread in [`Hists`]; the coordinator reads them
//! between measurement windows.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::media::{Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

use crate::stats::{histogram, Histogram, Reception};

const PTIME: Duration = Duration::from_millis(20);
const PTIME_US: i64 = 20_000;

/// Pauses of every sender so far (the coordinator's, around each window):
/// receivers start their delay baseline afresh after one.
pub static PAUSES: AtomicU64 = AtomicU64::new(0);
/// A sender this far behind its schedule skips ahead instead of bursting.
const MAX_BEHIND: Duration = Duration::from_millis(100);

/// Counters of one endpoint of a call.
#[derive(Debug, Default)]
pub struct Counters {
    /// Packets sent, all and while measuring.
    pub sent_all: AtomicU64,
    pub sent: AtomicU64,
    /// Packets received, all and while measuring, and the measured ones'
    /// sequence span (loss by gaps on the last hop).
    pub received_all: AtomicU64,
    pub received: AtomicU64,
    pub expected: AtomicU64,
    /// RFC 3550 jitter of the measured packets, µs (f64 bits).
    pub jitter_bits: AtomicU64,
    /// RTP timestamp units over the measured sequence span (`expected - 1`
    /// packets): a check of the relay's timestamps.
    pub ts_span: AtomicU64,
}

impl Counters {
    fn publish(&self, rx: &Reception) {
        self.received.store(rx.measured, Ordering::Relaxed);
        self.expected.store(rx.expected(), Ordering::Relaxed);
        self.jitter_bits.store(rx.jitter_us.to_bits(), Ordering::Relaxed);
        self.ts_span.store(rx.ts_span().max(0) as u64, Ordering::Relaxed);
    }

    pub fn jitter_us(&self) -> f64 {
        f64::from_bits(self.jitter_bits.load(Ordering::Relaxed))
    }
}

/// One call as both its endpoints and the coordinator see it.
#[derive(Debug, Default)]
pub struct CallShared {
    pub index: usize,
    /// ICE and DTLS done on the browser's peer connection; when (µs on the epoch).
    pub browser_connected: AtomicBool,
    pub browser_connected_at: AtomicU64,
    /// The browser's peer connection failed or was disconnected.
    pub browser_lost: AtomicBool,
    /// The far end got the ACK of its 200 (it sends from then on).
    pub far_answered: AtomicBool,
    /// The far end got a BYE.
    pub far_ended: AtomicBool,
    /// Counted in the measurement (set by the coordinator once the call is up).
    pub measuring: AtomicBool,
    /// Senders stop (end of the run); receivers keep counting.
    pub silent: AtomicBool,
    /// Endpoints are dropped.
    pub ended: AtomicBool,
    /// The browser end and the far end.
    pub browser: Counters,
    pub far: Counters,
}

impl CallShared {
    pub fn new(index: usize) -> Self {
        CallShared { index, ..Default::default() }
    }
}

/// Per-thread histograms: added jitter at each end, and how late senders were.
#[derive(Debug)]
pub struct Hists {
    /// At the browser (far end → browser) and at the far end (browser → far end).
    pub at_browser: Histogram,
    pub at_far: Histogram,
    pub send_lateness: Histogram,
}

impl Default for Hists {
    fn default() -> Self {
        Hists { at_browser: histogram(), at_far: histogram(), send_lateness: histogram() }
    }
}

/// What an endpoint sends: its frames and their RTP duration.
#[derive(Clone)]
pub struct Audio {
    pub frames: Arc<Vec<Arc<[u8]>>>,
    /// RTP timestamp units per 20 ms.
    pub samples: u32,
}

pub struct Browser {
    pub rtc: Rtc,
    pub socket: UdpSocket,
    pub local: SocketAddr,
    pub mid: Mid,
    pub pt: Pt,
    pub audio: Audio,
    pub shared: Arc<CallShared>,
}

pub struct Far {
    pub socket: UdpSocket,
    pub remote: SocketAddr,
    pub audio: Audio,
    pub shared: Arc<CallShared>,
}

/// A browser or a far end, with its sending and receiving state.
struct Endpoint {
    kind: Kind,
    shared: Arc<CallShared>,
    audio: Audio,
    next_send: Option<Instant>,
    frame: usize,
    seq: u64,
    ts: u32,
    rx: Reception,
}

enum Kind {
    Browser { rtc: Rtc, socket: UdpSocket, local: SocketAddr, mid: Mid, pt: Pt, timeout: Instant },
    Far { socket: UdpSocket, remote: SocketAddr, ssrc: u32 },
}

impl Endpoint {
    fn socket(&self) -> &UdpSocket {
        match &self.kind {
            Kind::Browser { socket, .. } | Kind::Far { socket, .. } => socket,
        }
    }

    fn counters(&self) -> &Counters {
        match self.kind {
            Kind::Browser { .. } => &self.shared.browser,
            Kind::Far { .. } => &self.shared.far,
        }
    }

    fn may_send(&self) -> bool {
        let s = &self.shared;
        !s.silent.load(Ordering::Relaxed)
            && match self.kind {
                Kind::Browser { .. } => s.browser_connected.load(Ordering::Relaxed),
                Kind::Far { .. } => s.far_answered.load(Ordering::Relaxed) && !s.far_ended.load(Ordering::Relaxed),
            }
    }

    /// Timers and sending; answers when it next needs a tick.
    fn tick(&mut self, now: Instant, epoch: Instant, hists: &Mutex<Hists>) -> Instant {
        if let Kind::Browser { rtc, timeout, .. } = &mut self.kind {
            if now >= *timeout {
                if rtc.handle_input(Input::Timeout(now)).is_err() {
                    self.shared.browser_lost.store(true, Ordering::Relaxed);
                }
                self.drain(now, epoch, hists);
            }
        }
        if self.may_send() {
            let due = *self.next_send.get_or_insert(now);
            if now >= due {
                let late = now - due;
                if late > MAX_BEHIND {
                    // Back from a pause (or far behind): the missed slots are
                    // skipped and the sender keeps its place in the 20 ms, so
                    // that the calls do not all send at once.
                    let missed = (late.as_nanos() / PTIME.as_nanos()) as u32 + 1;
                    self.next_send = Some(due + PTIME * missed);
                } else {
                    self.next_send = Some(due + PTIME);
                    hists.lock().unwrap().send_lateness.saturating_record(late.as_micros() as u64);
                    self.send(now, epoch, hists);
                }
            }
        }
        let mut next = now + PTIME;
        if let Some(t) = self.next_send.filter(|_| self.may_send()) {
            next = next.min(t);
        }
        if let Kind::Browser { timeout, .. } = &self.kind {
            next = next.min(*timeout);
        }
        next
    }

    fn send(&mut self, now: Instant, epoch: Instant, hists: &Mutex<Hists>) {
        let payload = self.audio.frames[self.frame % self.audio.frames.len()].clone();
        self.frame += 1;
        let (seq, ts) = (self.seq, self.ts);
        self.seq += 1;
        self.ts = self.ts.wrapping_add(self.audio.samples);
        match &mut self.kind {
            Kind::Browser { rtc, mid, pt, .. } => {
                let mut api = rtc.direct_api();
                let Some(tx) = api.stream_tx_by_mid(*mid, None) else { return };
                tx.write_rtp(RtpWrite::new(*pt, seq.into(), ts, now, payload));
                self.drain(now, epoch, hists);
            }
            Kind::Far { socket, remote, ssrc } => {
                let mut packet = Vec::with_capacity(12 + payload.len());
                packet.push(0x80);
                packet.push(if seq == 1 { 0x80 } else { 0 }); // marker on the first, PT 0 (PCMU)
                packet.extend_from_slice(&(seq as u16).to_be_bytes());
                packet.extend_from_slice(&ts.to_be_bytes());
                packet.extend_from_slice(&ssrc.to_be_bytes());
                packet.extend_from_slice(&payload);
                if socket.send_to(&packet, *remote).is_err() {
                    return;
                }
            }
        }
        let c = self.counters();
        c.sent_all.fetch_add(1, Ordering::Relaxed);
        if self.shared.measuring.load(Ordering::Relaxed) {
            c.sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn receive(&mut self, now: Instant, source: SocketAddr, data: &[u8], epoch: Instant, hists: &Mutex<Hists>) {
        match &mut self.kind {
            Kind::Browser { rtc, local, .. } => {
                let Ok(r) = Receive::new(Protocol::Udp, source, *local, data) else { return };
                if rtc.handle_input(Input::Receive(now, r)).is_err() {
                    self.shared.browser_lost.store(true, Ordering::Relaxed);
                }
                self.drain(now, epoch, hists);
            }
            Kind::Far { .. } => {
                // Plain RTP, PCMU (8 kHz); RTCP and anything else is ignored.
                if data.len() < 12 || data[0] >> 6 != 2 || data[1] & 0x7f >= 72 && data[1] & 0x7f <= 79 {
                    return;
                }
                let seq = self.rx.extend_seq(u16::from_be_bytes([data[2], data[3]]));
                let ts = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
                let measuring = self.shared.measuring.load(Ordering::Relaxed);
                let arrival = now.duration_since(epoch).as_micros() as i64;
                self.rx.packet(seq, ts, arrival, measuring, PTIME_US, PAUSES.load(Ordering::Relaxed), &mut hists.lock().unwrap().at_far, &crate::stats::PEAK_AT_FAR);
                let c = &self.shared.far;
                c.received_all.fetch_add(1, Ordering::Relaxed);
                c.publish(&self.rx);
            }
        }
    }

    /// Everything the `Rtc` has to say: datagrams out, events in.
    fn drain(&mut self, now: Instant, epoch: Instant, hists: &Mutex<Hists>) {
        let Kind::Browser { rtc, socket, timeout, .. } = &mut self.kind else { return };
        loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    *timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    let _ = socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::Connected)) => {
                    self.shared.browser_connected_at.store(now.duration_since(epoch).as_micros() as u64, Ordering::Relaxed);
                    self.shared.browser_connected.store(true, Ordering::Relaxed);
                }
                Ok(Output::Event(Event::IceConnectionStateChange(IceConnectionState::Disconnected))) => {
                    self.shared.browser_lost.store(true, Ordering::Relaxed);
                }
                Ok(Output::Event(Event::RtpPacket(p))) => {
                    let measuring = self.shared.measuring.load(Ordering::Relaxed);
                    let arrival = p.timestamp.saturating_duration_since(epoch).as_micros() as i64;
                    self.rx.packet(*p.seq_no, p.header.timestamp, arrival, measuring, PTIME_US, PAUSES.load(Ordering::Relaxed), &mut hists.lock().unwrap().at_browser, &crate::stats::PEAK_AT_BROWSER);
                    let c = &self.shared.browser;
                    c.received_all.fetch_add(1, Ordering::Relaxed);
                    c.publish(&self.rx);
                }
                Ok(Output::Event(_)) => {}
                Err(_) => {
                    self.shared.browser_lost.store(true, Ordering::Relaxed);
                    *timeout = now + Duration::from_millis(100);
                    return;
                }
            }
        }
    }
}

/// The media threads.
pub struct MediaPool {
    senders: Vec<mpsc::Sender<Endpoint>>,
    next: AtomicU64,
    pub hists: Vec<Arc<Mutex<Hists>>>,
    quit: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// The clock origin of arrival times.
    pub epoch: Instant,
}

impl MediaPool {
    pub fn start(threads: usize, epoch: Instant) -> MediaPool {
        let quit = Arc::new(AtomicBool::new(false));
        let (mut senders, mut hists, mut handles) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..threads.max(1) {
            let (tx, rx) = mpsc::channel();
            let h = Arc::new(Mutex::new(Hists::default()));
            let (h2, q) = (h.clone(), quit.clone());
            let handle = std::thread::Builder::new()
                .name(format!("media-{i}"))
                .spawn(move || media_thread(rx, h2, q, epoch))
                .expect("a media thread");
            senders.push(tx);
            hists.push(h);
            handles.push(handle);
        }
        MediaPool { senders, next: AtomicU64::new(0), hists, quit, threads: handles, epoch }
    }

    fn add(&self, e: Endpoint) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize % self.senders.len();
        let _ = self.senders[i].send(e);
    }

    pub fn add_browser(&self, b: Browser) {
        let _ = b.socket.set_nonblocking(true);
        let now = Instant::now();
        self.add(Endpoint {
            kind: Kind::Browser { rtc: b.rtc, socket: b.socket, local: b.local, mid: b.mid, pt: b.pt, timeout: now },
            shared: b.shared,
            audio: b.audio,
            next_send: None,
            frame: 0,
            seq: 1,
            ts: 0,
            rx: Reception::default(),
        });
    }

    pub fn add_far(&self, f: Far) {
        let _ = f.socket.set_nonblocking(true);
        let ssrc = 0x5157_0000 ^ (f.shared.index as u32).wrapping_mul(2_654_435_761);
        let index = f.shared.index;
        self.add(Endpoint {
            kind: Kind::Far { socket: f.socket, remote: f.remote, ssrc },
            shared: f.shared,
            audio: f.audio,
            next_send: None,
            frame: index * 7, // the far ends do not all say the same thing at once
            seq: 1,
            ts: (index as u32).wrapping_mul(40_503),
            rx: Reception::default(),
        });
    }

    /// Merges and clears every thread's histograms.
    pub fn take_hists(&self) -> Hists {
        let mut all = Hists::default();
        for h in &self.hists {
            let mut h = h.lock().unwrap();
            let taken = std::mem::take(&mut *h);
            // Histograms of the same bounds always add up.
            all.at_browser.add(&taken.at_browser).expect("histograms of the same bounds");
            all.at_far.add(&taken.at_far).expect("histograms of the same bounds");
            all.send_lateness.add(&taken.send_lateness).expect("histograms of the same bounds");
        }
        all
    }

    pub fn stop(mut self) {
        self.quit.store(true, Ordering::Relaxed);
        self.senders.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn media_thread(rx: mpsc::Receiver<Endpoint>, hists: Arc<Mutex<Hists>>, quit: Arc<AtomicBool>, epoch: Instant) {
    // SAFETY: plain epoll syscalls on descriptors this thread owns; the
    // event buffer outlives every call that writes into it.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(epfd >= 0, "epoll_create1 failed");
    let mut endpoints: Vec<Option<Endpoint>> = Vec::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut buf = vec![0u8; 2048];
    let mut next_scan = Instant::now();
    while !quit.load(Ordering::Relaxed) {
        while let Ok(e) = rx.try_recv() {
            let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: endpoints.len() as u64 };
            // SAFETY: see above.
            let r = unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, e.socket().as_raw_fd(), &mut ev) };
            if r == 0 {
                endpoints.push(Some(e));
                next_scan = Instant::now();
            }
        }
        let now = Instant::now();
        if now >= next_scan {
            let mut wake = now + PTIME;
            for slot in endpoints.iter_mut() {
                let Some(e) = slot else { continue };
                if e.shared.ended.load(Ordering::Relaxed) || matches!(e.kind, Kind::Far { .. }) && e.shared.far_ended.load(Ordering::Relaxed) {
                    // SAFETY: see above.
                    unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_DEL, e.socket().as_raw_fd(), std::ptr::null_mut()) };
                    *slot = None;
                    continue;
                }
                wake = wake.min(e.tick(now, epoch, &hists));
            }
            next_scan = wake;
        }
        let wait = next_scan.saturating_duration_since(Instant::now());
        let timeout_ms = (wait.as_micros().div_ceil(1000) as i32).min(5);
        // SAFETY: see above.
        let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), events.len() as i32, timeout_ms) };
        for ev in events.iter().take(n.max(0) as usize) {
            let Some(Some(e)) = endpoints.get_mut(ev.u64 as usize) else { continue };
            // Up to 32 datagrams per socket per turn, so one busy socket cannot starve the others.
            for _ in 0..32 {
                let (len, source) = match e.socket().recv_from(&mut buf) {
                    Ok(r) => r,
                    Err(_) => break,
                };
                let now = Instant::now();
                e.receive(now, source, &buf[..len], epoch, &hists);
                if let Kind::Browser { timeout, .. } = &e.kind {
                    next_scan = next_scan.min(*timeout);
                }
            }
        }
    }
    // SAFETY: the descriptor is this thread's.
    unsafe { libc::close(epfd) };
}
