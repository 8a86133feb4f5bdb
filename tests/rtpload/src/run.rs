//! One run at one load level: ramp N calls up at a given rate, keep them
//! all talking for the given time, stop the media, let what is in flight
//! arrive, hang up, and summarise. The signalling state machine runs on
//! this thread (its sockets polled with `poll(2)`); media runs on the
//! engine's own threads.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::media::{Media, Running};
use crate::signalling::{Event, Output, Signalling};
use crate::stats::{histogram, Histogram, Percentiles, Summary};

/// The load of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub calls: u32,
    /// New calls per second during the ramp.
    pub rate: f64,
    /// How long all calls talk once the ramp is over.
    pub duration: Duration,
    /// Hang-ups per second at the end.
    pub hangup_rate: f64,
    /// Wait after the last packet is sent before the receivers stop.
    pub drain: Duration,
    /// Longest wait for the last calls to come up after the last was started.
    pub setup_timeout: Duration,
    /// Interval of progress lines on stderr (zero: none).
    pub progress: Duration,
}

/// Wall-clock times of the phases (Unix seconds), so that a driver
/// sampling the relay's /proc can pick the samples of the sustained part.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Times {
    pub start: f64,
    /// All calls are up (or failed): the sustained part begins.
    pub ramp_end: f64,
    /// Media stops.
    pub sustain_end: f64,
    pub end: f64,
}

/// The generator's own health: if it fell behind, the run says so.
#[derive(Debug, Clone, Serialize)]
pub struct Generator {
    /// CPU of this process during the sustained part, % of one core.
    pub cpu_pct: f64,
    /// How late the sender woke for its 20 ms slots.
    pub send_lateness_us: Percentiles,
    pub send_errors: u64,
}

/// Everything a run measured; printed as JSON with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub system: String,
    pub calls: u32,
    pub rate: f64,
    pub duration_s: f64,
    pub calls_up: u32,
    pub setup_failed: u32,
    /// The distinct reasons of failed setups, most frequent first, with counts.
    pub failure_reasons: Vec<(String, u32)>,
    /// Calls the relay ended on its own before the hang-up.
    pub dropped: u32,
    pub hangups_confirmed: u32,
    pub hangups_unconfirmed: u32,
    /// Start of setup to call up, milliseconds.
    pub setup_ms: Percentiles,
    pub times: Times,
    /// Packets per second sent and received while all calls were up.
    pub sent_pps: f64,
    pub received_pps: f64,
    /// Megabits per second relayed (both directions, IPv4 + UDP + RTP).
    pub relayed_mbit_s: f64,
    pub media: Summary,
    pub generator: Generator,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn log(msg: &str) {
    eprintln!("rtpload: {msg}");
}

/// The signalling side of a run: the state machine, its sockets, and what
/// became of each call.
struct Control<'a> {
    signalling: &'a mut dyn Signalling,
    sockets: &'a [UdpSocket],
    buf: Vec<u8>,
    started: HashMap<u32, Instant>,
    up: Vec<u32>,
    is_up: Vec<bool>,
    failed: u32,
    reasons: HashMap<String, u32>,
    dropped: u32,
    ended: u32,
    confirmed: u32,
    hanging_up: bool,
    setup: Histogram,
}

impl Control<'_> {
    fn flush(&mut self, out: Output, media: &Running) {
        for d in out.send {
            if let Err(e) = self.sockets[d.socket].send_to(&d.data, d.to) {
                log(&format!("sending signalling to {} failed: {e}", d.to));
            }
        }
        for e in out.events {
            match e {
                Event::Up { call, a, b } => {
                    if let Some(t) = self.started.get(&call) {
                        self.setup.saturating_record(t.elapsed().as_nanos() as u64);
                    }
                    media.add_call(call, a, b);
                    self.up.push(call);
                    self.is_up[call as usize] = true;
                }
                Event::Failed { call, reason } => {
                    if self.is_up[call as usize] {
                        self.dropped += 1;
                        self.is_up[call as usize] = false;
                    } else {
                        self.failed += 1;
                    }
                    *self.reasons.entry(reason).or_default() += 1;
                }
                Event::Ended { call, clean } => {
                    if !self.hanging_up && self.is_up[call as usize] {
                        // The relay ended a call we had not hung up.
                        self.dropped += 1;
                        self.is_up[call as usize] = false;
                        *self
                            .reasons
                            .entry("ended by the relay during the run".into())
                            .or_default() += 1;
                    } else {
                        self.ended += 1;
                        self.confirmed += u32::from(clean);
                    }
                }
            }
        }
    }

    /// Services the signalling sockets and timers until `until`.
    fn pump(&mut self, until: Instant, media: &Running) {
        loop {
            let now = Instant::now();
            if now >= until {
                return;
            }
            let wake = self.signalling.next_timer().map_or(until, |t| t.min(until));
            let timeout_ms = wake.saturating_duration_since(now).as_millis().min(1000) as i32;
            let mut fds: Vec<libc::pollfd> = self
                .sockets
                .iter()
                .map(|s| libc::pollfd {
                    fd: s.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: fds is a live array of pollfd of the length given.
            let ready =
                unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
            let mut out = Output::default();
            if ready > 0 {
                for (i, fd) in fds.iter().enumerate() {
                    if fd.revents & libc::POLLIN == 0 {
                        continue;
                    }
                    while let Ok((n, from)) = self.sockets[i].recv_from(&mut self.buf) {
                        self.signalling.on_datagram(
                            i,
                            from,
                            &self.buf[..n],
                            Instant::now(),
                            &mut out,
                        );
                    }
                }
            }
            let now = Instant::now();
            if self.signalling.next_timer().is_some_and(|t| t <= now) {
                self.signalling.on_timer(now, &mut out);
            }
            self.flush(out, media);
        }
    }
}

/// Runs the plan; `sockets` are the signalling's sockets, bound and
/// non-blocking, in the order it expects.
pub fn run(
    system: &str,
    plan: &Plan,
    signalling: &mut dyn Signalling,
    sockets: &[UdpSocket],
    media: Media,
) -> anyhow::Result<Report> {
    let mut running = media.start()?;
    let mut c = Control {
        signalling,
        sockets,
        buf: vec![0u8; 65_536],
        started: HashMap::new(),
        up: Vec::new(),
        is_up: vec![false; plan.calls as usize],
        failed: 0,
        reasons: HashMap::new(),
        dropped: 0,
        ended: 0,
        confirmed: 0,
        hanging_up: false,
        setup: histogram(),
    };
    let mut times = Times {
        start: unix_now(),
        ..Times::default()
    };
    let t0 = Instant::now();
    let spacing = Duration::from_secs_f64(1.0 / plan.rate.max(0.001));
    let mut next_progress = t0 + plan.progress;
    let progress = |c: &Control, running: &Running, what: &str| {
        log(&format!(
            "{what}: {} calls up, {} failed; packets sent {}, received {}",
            c.up.len(),
            c.failed + c.dropped,
            running.sent_total.load(Ordering::Relaxed),
            running.received_total.load(Ordering::Relaxed)
        ));
    };

    // Ramp: start call i at t0 + i * spacing, then wait for the stragglers.
    log(&format!(
        "ramping up {} calls at {}/s to {system}",
        plan.calls, plan.rate
    ));
    for i in 0..plan.calls {
        let at = t0 + spacing * i;
        c.pump(at, &running);
        let now = Instant::now();
        let mut out = Output::default();
        c.signalling.start(i, now, &mut out);
        c.started.insert(i, now);
        c.flush(out, &running);
        if !plan.progress.is_zero() && now >= next_progress {
            progress(&c, &running, "ramp");
            next_progress += plan.progress;
        }
    }
    let setup_deadline = Instant::now() + plan.setup_timeout;
    while (c.up.len() as u32 + c.failed + c.dropped) < plan.calls && Instant::now() < setup_deadline
    {
        c.pump(
            (Instant::now() + Duration::from_millis(50)).min(setup_deadline),
            &running,
        );
    }
    let unresolved = plan.calls - (c.up.len() as u32 + c.failed + c.dropped).min(plan.calls);
    if unresolved > 0 {
        *c.reasons
            .entry(format!(
                "not up within {} s after the last call was started",
                plan.setup_timeout.as_secs()
            ))
            .or_default() += unresolved;
        c.failed += unresolved;
    }
    times.ramp_end = unix_now();
    progress(&c, &running, "ramp done");

    // Sustain.
    let sustain_start = Instant::now();
    let cpu0 = cpu_seconds();
    let (sent0, recv0) = (
        running.sent_total.load(Ordering::Relaxed),
        running.received_total.load(Ordering::Relaxed),
    );
    let sustain_end = sustain_start + plan.duration;
    next_progress = sustain_start + plan.progress;
    while Instant::now() < sustain_end {
        let until = if plan.progress.is_zero() {
            sustain_end
        } else {
            next_progress.min(sustain_end)
        };
        c.pump(until, &running);
        if !plan.progress.is_zero() && Instant::now() >= next_progress {
            progress(
                &c,
                &running,
                &format!("{:.0} s", sustain_start.elapsed().as_secs_f64()),
            );
            next_progress += plan.progress;
        }
    }
    let held = sustain_start.elapsed().as_secs_f64();
    let (sent1, recv1) = (
        running.sent_total.load(Ordering::Relaxed),
        running.received_total.load(Ordering::Relaxed),
    );
    let cpu_pct = (cpu_seconds() - cpu0) / held * 100.0;
    times.sustain_end = unix_now();

    // Stop media, drain, stop receivers.
    let sent = running.stop_sending();
    c.pump(Instant::now() + plan.drain, &running);
    let receptions = running.stop_receiving();
    let summary = Summary::new(&sent.per_stream, &receptions);

    // Hang up.
    let to_end: Vec<u32> =
        c.up.iter()
            .copied()
            .filter(|call| c.is_up[*call as usize])
            .collect();
    let hang_spacing = Duration::from_secs_f64(1.0 / plan.hangup_rate.max(0.001));
    let h0 = Instant::now();
    let ended0 = c.ended;
    c.hanging_up = true;
    for (k, call) in to_end.iter().enumerate() {
        c.pump(h0 + hang_spacing * k as u32, &running);
        let mut out = Output::default();
        c.signalling.hang_up(*call, Instant::now(), &mut out);
        c.flush(out, &running);
    }
    let hang_deadline = Instant::now() + Duration::from_secs(35);
    while c.ended - ended0 < to_end.len() as u32 && Instant::now() < hang_deadline {
        c.pump(
            (Instant::now() + Duration::from_millis(50)).min(hang_deadline),
            &running,
        );
    }
    times.end = unix_now();

    let mut reasons: Vec<(String, u32)> = c.reasons.into_iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let sent_pps = (sent1 - sent0) as f64 / held;
    let received_pps = (recv1 - recv0) as f64 / held;
    let wire_bits = ((crate::probe::PACKET_LEN + 28) * 8) as f64;
    Ok(Report {
        system: system.to_owned(),
        calls: plan.calls,
        rate: plan.rate,
        duration_s: held,
        calls_up: c.up.len() as u32,
        setup_failed: c.failed,
        failure_reasons: reasons,
        dropped: c.dropped,
        hangups_confirmed: c.confirmed,
        hangups_unconfirmed: to_end.len() as u32 - c.confirmed.min(to_end.len() as u32),
        setup_ms: {
            let p = Percentiles::of_histogram(&c.setup);
            Percentiles {
                p50: p.p50 / 1000.0,
                p99: p.p99 / 1000.0,
                p999: p.p999 / 1000.0,
                max: p.max / 1000.0,
            }
        },
        times,
        sent_pps,
        received_pps,
        relayed_mbit_s: received_pps * wire_bits / 1e6,
        media: summary,
        generator: Generator {
            cpu_pct,
            send_lateness_us: Percentiles::of_histogram(&sent.lateness),
            send_errors: sent.errors,
        },
    })
}
