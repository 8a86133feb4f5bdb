//! The measuring loop shared by both libraries: one "gateway" UDP socket that
//! every gateway-side peer shares (demultiplexed here, the way the gateway
//! would: STUN USERNAME → peer, then source address → peer), one UDP socket
//! per "browser" peer, all on 127.0.0.1, driven on one thread with poll(2).

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// What a peer of either library has to offer the loop. Every call is
/// sans-IO: bytes and time in, datagrams and events out.
pub trait Peer {
    /// A datagram arrived on `local` from `remote`.
    fn receive(&mut self, now: Instant, remote: SocketAddr, local: SocketAddr, data: &[u8]);
    /// Time passed.
    fn timeout(&mut self, now: Instant);
    /// Hands out every datagram to send (destination, bytes), notes the
    /// events in `status`, and returns the next deadline.
    fn drain(&mut self, now: Instant, out: &mut Vec<(SocketAddr, Vec<u8>)>) -> Instant;
    /// Queues one RTP packet (payload type `pt`: 0 = PCMU, 101 =
    /// telephone-event) on the peer's audio track.
    fn send_rtp(&mut self, now: Instant, pt: u8, seq: u64, ts: u32, payload: &[u8]);
    fn status(&self) -> &Status;
}

#[derive(Default, Debug, Clone)]
pub struct Status {
    pub ice_connected: Option<Instant>,
    /// DTLS done, SRTP keys in place.
    pub connected: Option<Instant>,
    pub rtp_received: u64,
    /// RTP packets received with payload type 101 (telephone-event).
    pub tele_received: u64,
    pub first_rtp: Option<Instant>,
    pub failed: bool,
}

/// One library: builds a connected-to-be pair of peers.
pub trait Lib {
    type P: Peer;
    /// Creates the browser stand-in (full ICE, offerer) with a host candidate
    /// on `browser`, the gateway peer (ICE-lite, answerer) with a host
    /// candidate on `gateway`, runs offer/answer between them and returns
    /// (browser, gateway, the gateway's ICE ufrag).
    fn pair(&mut self, now: Instant, gateway: SocketAddr, browser: SocketAddr) -> (Self::P, Self::P, String);
    /// ICE restart offered by the browser and answered by the gateway;
    /// returns the gateway's new ufrag.
    fn restart(&mut self, now: Instant, browser: &mut Self::P, gateway: &mut Self::P) -> String;
}

pub struct Pair<P> {
    // Boxed so that a peer's memory, inline part included, goes with it.
    pub browser: Box<P>,
    pub gateway: Box<P>,
    pub sock: UdpSocket,
    pub addr: SocketAddr,
    pub ufrag: String,
    pub started: Instant,
    pub browser_due: Instant,
    pub gateway_due: Instant,
    pub next_media: Instant,
    pub media_seq: u64,
}

pub struct World<L: Lib> {
    pub lib: L,
    pub gw_sock: UdpSocket,
    pub gw_addr: SocketAddr,
    pub pairs: Vec<Option<Pair<L::P>>>,
    by_ufrag: HashMap<String, usize>,
    by_addr: HashMap<SocketAddr, usize>,
    out: Vec<(SocketAddr, Vec<u8>)>,
    buf: Vec<u8>,
    /// While true, a connected browser peer sends an RTP packet every 5 ms
    /// until its gateway peer has one (the "first media packet" of setup).
    pub probe_media: bool,
    pub unknown_datagrams: u64,
    /// STUN requests seen per gateway ufrag.
    pub ufrag_hits: HashMap<String, u64>,
}

pub const PAYLOAD: [u8; 160] = [0xd5; 160];

fn bind() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    s.set_nonblocking(true).expect("nonblocking");
    s
}

impl<L: Lib> World<L> {
    pub fn new(lib: L) -> Self {
        let gw_sock = bind();
        let gw_addr = gw_sock.local_addr().unwrap();
        World {
            lib,
            gw_sock,
            gw_addr,
            pairs: Vec::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            out: Vec::new(),
            buf: vec![0; 2048],
            probe_media: true,
            unknown_datagrams: 0,
            ufrag_hits: HashMap::new(),
        }
    }

    /// Starts a session: new browser socket, offer/answer. Returns its index.
    pub fn start_pair(&mut self) -> usize {
        let started = Instant::now();
        let sock = bind();
        let addr = sock.local_addr().unwrap();
        let (browser, gateway, ufrag) = self.lib.pair(started, self.gw_addr, addr);
        let i = self.pairs.len();
        self.by_ufrag.insert(ufrag.clone(), i);
        self.pairs.push(Some(Pair {
            browser: Box::new(browser),
            gateway: Box::new(gateway),
            sock,
            addr,
            ufrag,
            started,
            browser_due: started,
            gateway_due: started,
            next_media: started,
            media_seq: 0,
        }));
        i
    }

    /// ICE restart on pair `i`; returns (old, new) gateway ufrag.
    pub fn restart(&mut self, i: usize) -> (String, String) {
        let now = Instant::now();
        let p = self.pairs[i].as_mut().unwrap();
        let new = self.lib.restart(now, &mut p.browser, &mut p.gateway);
        let old = std::mem::replace(&mut p.ufrag, new.clone());
        self.by_ufrag.insert(new.clone(), i);
        p.browser_due = now;
        p.gateway_due = now;
        (old, new)
    }

    /// Ends a session and forgets it (peers and socket dropped).
    pub fn end_pair(&mut self, i: usize) -> Option<Pair<L::P>> {
        let p = self.pairs[i].take()?;
        self.by_ufrag.remove(&p.ufrag);
        self.by_addr.retain(|_, v| *v != i);
        Some(p)
    }

    fn flush_gateway(&mut self, i: usize, now: Instant) {
        let Some(p) = self.pairs[i].as_mut() else { return };
        p.gateway_due = p.gateway.drain(now, &mut self.out);
        for (dst, data) in self.out.drain(..) {
            send(&self.gw_sock, &data, dst);
        }
    }

    fn flush_browser(&mut self, i: usize, now: Instant) {
        let Some(p) = self.pairs[i].as_mut() else { return };
        p.browser_due = p.browser.drain(now, &mut self.out);
        for (dst, data) in self.out.drain(..) {
            send(&p.sock, &data, dst);
        }
    }

    /// Sends `n` RTP packets gateway → browser on pair `i` (queued and
    /// flushed at once).
    pub fn blast_gateway(&mut self, i: usize, seq: &mut u64, ts: &mut u32, n: usize) {
        let now = Instant::now();
        {
            let p = self.pairs[i].as_mut().unwrap();
            for _ in 0..n {
                p.gateway.send_rtp(now, 0, *seq, *ts, &PAYLOAD);
                *seq += 1;
                *ts = ts.wrapping_add(160);
            }
            p.gateway.timeout(now);
        }
        self.flush_gateway(i, now);
    }

    /// Sends `n` packets browser → gateway on pair `i`.
    pub fn send_browser(&mut self, i: usize, n: usize) {
        self.send_browser_pt(i, n, 0, &PAYLOAD)
    }

    pub fn send_browser_pt(&mut self, i: usize, n: usize, pt: u8, payload: &[u8]) {
        let now = Instant::now();
        {
            let p = self.pairs[i].as_mut().unwrap();
            for _ in 0..n {
                let s = p.media_seq;
                p.browser.send_rtp(now, pt, s, s as u32 * 160, payload);
                p.media_seq = s + 1;
            }
            p.browser.timeout(now);
        }
        self.flush_browser(i, now);
    }

    /// One turn of the loop: due timers, then wait at most `max_wait` for
    /// datagrams and hand them to their peers.
    pub fn turn(&mut self, max_wait: Duration) {
        let now = Instant::now();
        let mut next = now + max_wait;
        for i in 0..self.pairs.len() {
            let Some(p) = self.pairs[i].as_mut() else { continue };
            if self.probe_media
                && p.browser.status().connected.is_some()
                && p.gateway.status().first_rtp.is_none()
                && p.next_media <= now
            {
                p.next_media = now + Duration::from_millis(5);
                let s = p.media_seq;
                p.browser.send_rtp(now, 0, s, s as u32 * 160, &PAYLOAD);
                p.media_seq = s + 1;
                p.browser_due = now;
            }
            if p.browser_due <= now {
                p.browser.timeout(now);
                self.flush_browser(i, now);
            }
            let p = self.pairs[i].as_mut().unwrap();
            if p.gateway_due <= now {
                p.gateway.timeout(now);
                self.flush_gateway(i, now);
            }
            let p = self.pairs[i].as_ref().unwrap();
            next = next.min(p.browser_due).min(p.gateway_due);
            if self.probe_media && p.browser.status().connected.is_some() && p.gateway.status().first_rtp.is_none() {
                next = next.min(p.next_media);
            }
        }
        let wait = next.saturating_duration_since(Instant::now());
        self.wait_and_read(wait);
    }

    fn wait_and_read(&mut self, wait: Duration) {
        let mut fds = Vec::with_capacity(self.pairs.len() + 1);
        let mut owners = Vec::with_capacity(self.pairs.len() + 1);
        fds.push(libc::pollfd { fd: self.gw_sock.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        owners.push(usize::MAX);
        for (i, p) in self.pairs.iter().enumerate() {
            if let Some(p) = p {
                fds.push(libc::pollfd { fd: p.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 });
                owners.push(i);
            }
        }
        // Round up so a timer due in 0.3 ms does not spin.
        let ms = if wait.is_zero() { 0 } else { (wait.as_micros() as i64 + 999) / 1000 };
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms.min(1000) as i32) };
        if n <= 0 {
            return;
        }
        for (k, fd) in fds.iter().enumerate() {
            if fd.revents == 0 {
                continue;
            }
            if owners[k] == usize::MAX {
                self.read_gateway();
            } else {
                self.read_browser(owners[k]);
            }
        }
    }

    pub fn read_gateway(&mut self) {
        loop {
            let (n, src) = match self.gw_sock.recv_from(&mut self.buf) {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => panic!("gateway recv: {e}"),
            };
            let now = Instant::now();
            if let Some(u) = stun_username_local(&self.buf[..n]) {
                *self.ufrag_hits.entry(u.to_string()).or_default() += 1;
            }
            let idx = match self.by_addr.get(&src) {
                Some(&i) => Some(i),
                None => stun_username_local(&self.buf[..n])
                    .and_then(|u| self.by_ufrag.get(u).copied())
                    .inspect(|&i| {
                        self.by_addr.insert(src, i);
                    }),
            };
            let Some(i) = idx else {
                self.unknown_datagrams += 1;
                continue;
            };
            let gw_addr = self.gw_addr;
            let Some(p) = self.pairs[i].as_mut() else { continue };
            p.gateway.receive(now, src, gw_addr, &self.buf[..n]);
            self.flush_gateway(i, now);
        }
    }

    pub fn read_browser(&mut self, i: usize) {
        loop {
            let Some(p) = self.pairs[i].as_mut() else { return };
            let (n, src) = match p.sock.recv_from(&mut self.buf) {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => panic!("browser recv: {e}"),
            };
            let now = Instant::now();
            let addr = p.addr;
            p.browser.receive(now, src, addr, &self.buf[..n]);
            self.flush_browser(i, now);
        }
    }
}

/// TRACE=1: print every datagram sent (read once, not per packet).
static TRACE: LazyLock<bool> = LazyLock::new(|| std::env::var_os("TRACE").is_some());

fn send(sock: &UdpSocket, data: &[u8], dst: SocketAddr) {
    if *TRACE {
        eprintln!("{:?} {} -> {dst} len={} first={}", Instant::now(), sock.local_addr().unwrap(), data.len(), data[0]);
    }
    loop {
        match sock.send_to(data, dst) {
            Ok(_) => return,
            // Loopback send buffer full: let the reader catch up.
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => panic!("send_to {dst}: {e}"),
        }
    }
}

/// The local half of a STUN request's USERNAME ("gatewayufrag:browserufrag").
pub fn stun_username_local(d: &[u8]) -> Option<&str> {
    if d.len() < 20 || d[0] > 3 || d[4..8] != [0x21, 0x12, 0xa4, 0x42] {
        return None;
    }
    let len = u16::from_be_bytes([d[2], d[3]]) as usize;
    let body = d.get(20..20 + len)?;
    let mut at = 0;
    while at + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[at], body[at + 1]]);
        let l = u16::from_be_bytes([body[at + 2], body[at + 3]]) as usize;
        let v = body.get(at + 4..at + 4 + l)?;
        if typ == 0x0006 {
            let s = std::str::from_utf8(v).ok()?;
            return s.split(':').next();
        }
        at += 4 + l.div_ceil(4) * 4;
    }
    None
}

/// The `a=ice-ufrag:` of an SDP (the first one; BUNDLE gives one).
pub fn sdp_ufrag(sdp: &str) -> String {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .expect("SDP without a=ice-ufrag")
        .trim()
        .to_string()
}
