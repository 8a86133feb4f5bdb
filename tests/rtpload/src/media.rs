//! The media engine: plays both ends of every call with few sockets and
//! threads, so that the generator is not what limits a run.
//!
//! - Sockets: `k` UDP sockets per side (caller, agent); call `n` uses
//!   socket `n % k` of each side. The relays send back to where packets
//!   come from (symmetric RTP), so every stream of a side arrives on the
//!   same few sockets and is told apart by the probe fields in its payload
//!   (`probe.rs`).
//! - One sender thread: time is cut into `slots` of `tick` (20 ms per
//!   round); call `n` sends its two packets (caller → relay A port, agent
//!   → relay B port) in slot `(n / k) % slots`, so calls started in order
//!   fill the slots evenly and the load is spread over the 20 ms. Packets
//!   go out with `sendmmsg` in batches; each batch is stamped just before
//!   the call. The sender wakes on absolute deadlines (`clock_nanosleep`),
//!   catches up when late, and records how late it was.
//! - One receiver thread per socket, `recvmmsg` in batches. The arrival
//!   time is the kernel's receive timestamp (`SO_TIMESTAMPNS`), so time a
//!   receiver thread spends waiting for a core is not charged to the
//!   relay. Kernel timestamps are CLOCK_REALTIME, so the send stamp uses
//!   the same clock: the difference is exact whatever NTP does to the rate,
//!   and a step of the clock shows up as `clock_steps`.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::probe::{self, Direction, PACKET_LEN};
use crate::stats::{histogram, Histogram, Reception};

/// One RTP period: 20 ms of audio per packet.
pub const PERIOD: Duration = Duration::from_millis(20);

/// How the media engine runs.
#[derive(Debug, Clone, Copy)]
pub struct MediaConfig {
    /// Sockets per side.
    pub sockets: usize,
    /// Sender wake-up interval; divides 20 ms into slots.
    pub tick: Duration,
    /// Datagrams per sendmmsg/recvmmsg call.
    pub batch: usize,
    /// Poll the receive sockets this often instead of blocking (zero: block).
    pub rx_poll: Duration,
    /// Socket buffer size asked for (both directions).
    pub buffer_bytes: usize,
}

/// Nanoseconds of a clock.
fn now_ns(clock: libc::clockid_t) -> u64 {
    // SAFETY: clock_gettime writes the timespec it is given.
    let mut ts: libc::timespec = unsafe { zeroed() };
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Now, on the clock probes are stamped with.
pub fn realtime_ns() -> u64 {
    now_ns(libc::CLOCK_REALTIME)
}

fn monotonic_ns() -> u64 {
    now_ns(libc::CLOCK_MONOTONIC)
}

fn sleep_until_monotonic(ns: u64) {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: plain syscall on a valid timespec; EINTR just wakes us early.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    };
}

fn setsockopt_int(fd: i32, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: the option value is a live c_int of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const i32 as *const libc::c_void,
            size_of::<i32>() as u32,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Binds a media socket with large buffers (beyond `rmem_max` when root,
/// through the *FORCE options), kernel receive timestamps and a receive
/// timeout so receiver threads notice the end of the run.
fn media_socket(ip: Ipv4Addr, buffer_bytes: usize) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(SocketAddrV4::new(ip, 0))?;
    let fd = s.as_raw_fd();
    let size = buffer_bytes.min(i32::MAX as usize) as i32;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if setsockopt_int(fd, libc::SOL_SOCKET, force, size).is_err() {
            setsockopt_int(fd, libc::SOL_SOCKET, plain, size)?;
        }
    }
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    Ok(s)
}

fn sockaddr_in(addr: SocketAddr) -> libc::sockaddr_in {
    let SocketAddr::V4(v4) = addr else {
        // Binding is IPv4 only (see `Media::bind`), so are the relays' ports.
        return unsafe { zeroed() };
    };
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut sa: libc::sockaddr_in = unsafe { zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = v4.port().to_be();
    sa.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
    sa
}

/// One call's two outgoing streams.
struct Flow {
    call: u32,
    to_a: libc::sockaddr_in,
    to_b: libc::sockaddr_in,
    sequence: u16,
    caller: [u8; PACKET_LEN],
    agent: [u8; PACKET_LEN],
}

/// What the sender did.
#[derive(Debug)]
pub struct Sent {
    /// Packets the kernel accepted, per stream (`call * 2 + direction`).
    pub per_stream: Vec<u64>,
    /// sendmmsg failures (each drops the datagram it stopped at).
    pub errors: u64,
    /// How late the sender woke for its slots.
    pub lateness: Histogram,
}

impl Default for Sent {
    fn default() -> Self {
        Sent { per_stream: Vec::new(), errors: 0, lateness: histogram() }
    }
}

/// The running engine.
pub struct Running {
    add: mpsc::Sender<(u32, SocketAddr, SocketAddr)>,
    stop_sending: Arc<AtomicBool>,
    stop_receiving: Arc<AtomicBool>,
    sender: Option<JoinHandle<Sent>>,
    receivers: Vec<JoinHandle<Reception>>,
    /// Packets sent and received so far (progress lines).
    pub sent_total: Arc<AtomicU64>,
    pub received_total: Arc<AtomicU64>,
}

/// The media sockets, bound; `start` sets them to work.
pub struct Media {
    caller: Vec<UdpSocket>,
    agent: Vec<UdpSocket>,
    caller_addrs: Vec<SocketAddr>,
    agent_addrs: Vec<SocketAddr>,
    config: MediaConfig,
}

impl Media {
    pub fn bind(ip: Ipv4Addr, config: MediaConfig) -> io::Result<Media> {
        let k = config.sockets.max(1);
        let caller = (0..k)
            .map(|_| media_socket(ip, config.buffer_bytes))
            .collect::<io::Result<Vec<_>>>()?;
        let agent = (0..k)
            .map(|_| media_socket(ip, config.buffer_bytes))
            .collect::<io::Result<Vec<_>>>()?;
        let caller_addrs = caller
            .iter()
            .map(UdpSocket::local_addr)
            .collect::<io::Result<Vec<_>>>()?;
        let agent_addrs = agent
            .iter()
            .map(UdpSocket::local_addr)
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Media {
            caller,
            agent,
            caller_addrs,
            agent_addrs,
            config: MediaConfig {
                sockets: k,
                ..config
            },
        })
    }

    /// A function giving each call's caller-side RTP address (for SDP).
    pub fn caller_addrs(&self) -> impl Fn(u32) -> SocketAddr + 'static {
        let addrs = self.caller_addrs.clone();
        move |call| addrs[call as usize % addrs.len()]
    }

    pub fn agent_addrs(&self) -> impl Fn(u32) -> SocketAddr + 'static {
        let addrs = self.agent_addrs.clone();
        move |call| addrs[call as usize % addrs.len()]
    }

    /// Starts the sender and the receivers.
    pub fn start(self) -> io::Result<Running> {
        let (add, added) = mpsc::channel();
        let stop_sending = Arc::new(AtomicBool::new(false));
        let stop_receiving = Arc::new(AtomicBool::new(false));
        let sent_total = Arc::new(AtomicU64::new(0));
        let received_total = Arc::new(AtomicU64::new(0));
        let mut receivers = Vec::new();
        for sock in self.caller.iter().chain(&self.agent) {
            let sock = sock.try_clone()?;
            let (stop, total, batch, rx_poll) = (
                stop_receiving.clone(),
                received_total.clone(),
                self.config.batch,
                self.config.rx_poll,
            );
            receivers.push(
                std::thread::Builder::new()
                    .name("rtp-recv".into())
                    .spawn(move || receive(sock, batch, rx_poll, &stop, &total))?,
            );
        }
        let (stop, total, config) = (stop_sending.clone(), sent_total.clone(), self.config);
        let (caller, agent) = (self.caller, self.agent);
        let sender = std::thread::Builder::new()
            .name("rtp-send".into())
            .spawn(move || send(caller, agent, config, added, &stop, &total))?;
        Ok(Running {
            add,
            stop_sending,
            stop_receiving,
            sender: Some(sender),
            receivers,
            sent_total,
            received_total,
        })
    }
}

impl Running {
    /// Starts the media of a call that is up.
    pub fn add_call(&self, call: u32, a: SocketAddr, b: SocketAddr) {
        let _ = self.add.send((call, a, b));
    }

    /// Stops sending; returns what was sent.
    pub fn stop_sending(&mut self) -> Sent {
        self.stop_sending.store(true, Ordering::Relaxed);
        self.sender
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }

    /// Stops the receivers; returns what each saw.
    pub fn stop_receiving(&mut self) -> Vec<Reception> {
        self.stop_receiving.store(true, Ordering::Relaxed);
        self.receivers
            .drain(..)
            .filter_map(|h| h.join().ok())
            .collect()
    }
}

fn send(
    caller: Vec<UdpSocket>,
    agent: Vec<UdpSocket>,
    config: MediaConfig,
    added: mpsc::Receiver<(u32, SocketAddr, SocketAddr)>,
    stop: &AtomicBool,
    total: &AtomicU64,
) -> Sent {
    let k = caller.len();
    let tick_ns = config.tick.as_nanos().max(1) as u64;
    let slots = (PERIOD.as_nanos() as u64 / tick_ns).max(1) as usize;
    // flows[slot][socket]
    let mut flows: Vec<Vec<Vec<Flow>>> = (0..slots)
        .map(|_| (0..k).map(|_| Vec::new()).collect())
        .collect();
    let mut sent = Sent::default();
    let mut batch = Batch::new(config.batch.max(1));
    let mut next = monotonic_ns() + tick_ns;
    let mut tick: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        sleep_until_monotonic(next);
        let now = monotonic_ns();
        while let Ok((call, a, b)) = added.try_recv() {
            let mut f = Flow {
                call,
                to_a: sockaddr_in(a),
                to_b: sockaddr_in(b),
                sequence: 0,
                caller: [0; PACKET_LEN],
                agent: [0; PACKET_LEN],
            };
            probe::prepare(&mut f.caller, call, Direction::CallerToAgent);
            probe::prepare(&mut f.agent, call, Direction::AgentToCaller);
            let need = (call as usize + 1) * 2;
            if sent.per_stream.len() < need {
                sent.per_stream.resize(need, 0);
            }
            let n = call as usize;
            flows[(n / k) % slots][n % k].push(f);
        }
        // Every slot whose time has come, in order (more than one when late).
        while next <= now {
            sent.lateness.saturating_record(now - next);
            let slot = (tick % slots as u64) as usize;
            for (s, list) in flows[slot].iter_mut().enumerate() {
                for chunk in list.chunks_mut(batch.capacity) {
                    let n = batch.send_side(&caller[s], chunk, Direction::CallerToAgent, &mut sent);
                    let m = batch.send_side(&agent[s], chunk, Direction::AgentToCaller, &mut sent);
                    total.fetch_add((n + m) as u64, Ordering::Relaxed);
                    for f in chunk.iter_mut() {
                        f.sequence = f.sequence.wrapping_add(1);
                    }
                }
            }
            tick += 1;
            next += tick_ns;
        }
    }
    sent
}

/// Reusable sendmmsg arrays.
struct Batch {
    capacity: usize,
    headers: Vec<libc::mmsghdr>,
    iovecs: Vec<libc::iovec>,
}

impl Batch {
    fn new(capacity: usize) -> Batch {
        // SAFETY: all-zero mmsghdr/iovec are valid (null pointers, zero lengths).
        Batch {
            capacity,
            headers: vec![unsafe { zeroed() }; capacity],
            iovecs: vec![unsafe { zeroed() }; capacity],
        }
    }

    /// Stamps and sends one packet per flow of `chunk` from `sock` in the
    /// given direction; returns how many the kernel took.
    fn send_side(
        &mut self,
        sock: &UdpSocket,
        chunk: &mut [Flow],
        direction: Direction,
        sent: &mut Sent,
    ) -> usize {
        let stamp = realtime_ns();
        let n = chunk.len();
        for (i, f) in chunk.iter_mut().enumerate() {
            let (buf, to) = match direction {
                Direction::CallerToAgent => (&mut f.caller, &mut f.to_a),
                Direction::AgentToCaller => (&mut f.agent, &mut f.to_b),
            };
            probe::stamp(buf, f.sequence, stamp);
            self.iovecs[i] = libc::iovec {
                iov_base: buf.as_mut_ptr() as *mut libc::c_void,
                iov_len: PACKET_LEN,
            };
            let h = &mut self.headers[i].msg_hdr;
            h.msg_name = to as *mut libc::sockaddr_in as *mut libc::c_void;
            h.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
            h.msg_iov = &mut self.iovecs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        let (mut done, mut accepted) = (0, 0);
        while done < n {
            // SAFETY: headers[done..n] point at iovecs and buffers borrowed
            // from `chunk` and `self`, alive for the whole call.
            let r = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    self.headers[done..].as_mut_ptr(),
                    (n - done) as u32,
                    0,
                )
            };
            if r > 0 {
                for f in &chunk[done..done + r as usize] {
                    sent.per_stream[f.call as usize * 2 + direction as usize] += 1;
                }
                done += r as usize;
                accepted += r as usize;
            } else {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                sent.errors += 1;
                done += 1; // the datagram it stopped at is dropped
            }
        }
        accepted
    }
}

/// Size of the control buffer for one SCM_TIMESTAMPNS.
const CMSG_SPACE: usize = 64;

fn receive(sock: UdpSocket, batch: usize, rx_poll: Duration, stop: &AtomicBool, total: &AtomicU64) -> Reception {
    let batch = batch.max(1);
    let mut reception = Reception::default();
    let mut bufs = vec![[0u8; 2048]; batch];
    let mut controls = vec![[0u8; CMSG_SPACE]; batch];
    // SAFETY: all-zero iovec/mmsghdr are valid; pointers are set below.
    let mut iovecs: Vec<libc::iovec> = vec![unsafe { zeroed() }; batch];
    let mut headers: Vec<libc::mmsghdr> = vec![unsafe { zeroed() }; batch];
    while !stop.load(Ordering::Relaxed) {
        for i in 0..batch {
            iovecs[i] = libc::iovec {
                iov_base: bufs[i].as_mut_ptr() as *mut libc::c_void,
                iov_len: bufs[i].len(),
            };
            let h = &mut headers[i].msg_hdr;
            h.msg_name = std::ptr::null_mut();
            h.msg_namelen = 0;
            h.msg_iov = &mut iovecs[i];
            h.msg_iovlen = 1;
            h.msg_control = controls[i].as_mut_ptr() as *mut libc::c_void;
            h.msg_controllen = CMSG_SPACE as _;
            h.msg_flags = 0;
        }
        // SAFETY: every header points at live buffers of the sizes given.
        let r = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                headers.as_mut_ptr(),
                batch as u32,
                if rx_poll.is_zero() { libc::MSG_WAITFORONE } else { libc::MSG_DONTWAIT },
                std::ptr::null_mut(),
            )
        };
        if r <= 0 {
            if !rx_poll.is_zero() {
                std::thread::sleep(rx_poll);
            }
            continue; // the receive timeout (EAGAIN) or EINTR: check `stop`
        }
        if !rx_poll.is_zero() && (r as usize) < batch {
            // Drained: come back after the interval, not on the next datagram.
            std::thread::sleep(rx_poll);
        }
        let fallback = realtime_ns();
        for i in 0..r as usize {
            let len = headers[i].msg_len as usize;
            let at = kernel_timestamp(&headers[i].msg_hdr).unwrap_or(fallback);
            match probe::parse(&bufs[i][..len]) {
                Some(p) => reception.packet(&p, at),
                None => reception.foreign(),
            }
        }
        total.fetch_add(r as u64, Ordering::Relaxed);
    }
    reception
}

/// The SCM_TIMESTAMPNS of a received message, in realtime nanoseconds.
fn kernel_timestamp(h: &libc::msghdr) -> Option<u64> {
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled,
    // bounded by msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine against a loopback "relay" that is no relay at all: each
    /// call's A and B ports are the agent's and the caller's own sockets,
    /// so every packet goes straight across. Nothing may be lost, and every
    /// call sends 50 packets per second each way.
    #[test]
    fn streams_flow_both_ways_at_fifty_packets_a_second() {
        let config = MediaConfig {
            sockets: 2,
            tick: Duration::from_millis(1),
            batch: 8,
            buffer_bytes: 1 << 20,
            rx_poll: Duration::ZERO,
        };
        let media = Media::bind(Ipv4Addr::LOCALHOST, config).unwrap();
        let (caller, agent) = (media.caller_addrs(), media.agent_addrs());
        let mut running = media.start().unwrap();
        let calls = 10u32;
        let t0 = std::time::Instant::now();
        for c in 0..calls {
            // caller → "A" = the agent socket, agent → "B" = the caller socket
            running.add_call(c, agent(c), caller(c));
        }
        let deadline = t0 + Duration::from_secs(10);
        while running.sent_total.load(Ordering::Relaxed) < 500
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5)); // polling a counter
        }
        let reached = t0.elapsed();
        let sent = running.stop_sending();
        let elapsed = t0.elapsed();
        let total: u64 = sent.per_stream.iter().sum();
        while running.received_total.load(Ordering::Relaxed) < total
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5)); // polling a counter
        }
        let received = running.stop_receiving();
        let s = crate::stats::Summary::new(&sent.per_stream, &received);
        assert_eq!(s.streams, 20);
        assert_eq!(s.lost, 0, "{s:?}");
        assert_eq!(s.foreign, 0);
        // 50 packets per second per stream: 25 each (500 in all) take at
        // least 24 periods, and no stream gets ahead of the clock. (Slower
        // than that only by a wide margin: the machine may be busy.)
        assert!(
            reached >= PERIOD * 24,
            "500 packets after {reached:?}: faster than 50/s"
        );
        assert!(
            reached < Duration::from_secs(2),
            "500 packets took {reached:?}: far slower than 50/s"
        );
        let ahead = elapsed.as_secs_f64() / PERIOD.as_secs_f64() + 2.0;
        assert!(
            sent.per_stream.iter().all(|n| (*n as f64) <= ahead),
            "{:?} in {elapsed:?}",
            sent.per_stream
        );
        assert!(
            s.delay_us.p50 < 20_000.0,
            "kernel timestamps and send stamps share a clock: {:?}",
            s.delay_us
        );
    }
}
