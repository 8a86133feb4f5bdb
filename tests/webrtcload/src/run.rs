//! The coordinator: opens every agent's page, ramps the calls up in steps
//! (each step measured for a window once all its calls are up), holds the
//! last step, stops the senders, drains, and hangs up; the report has one
//! row per window and the totals.
//!
//! A call is *up* once its browser connected (ICE, DTLS), received media,
//! and (with the built-in far end) the far end got its ACK and received
//! media from the gateway. From the start of the next window on, both its
//! ends count what they send and receive. Loss is counted per direction:
//! packets one end sent while measuring against packets the other end
//! received while measuring. The counters are read with every sender
//! paused (`--pause-ms`) and nothing in flight, at both edges of each
//! window, so the two counts are of the same packets; the senders then go
//! on where they were in their 20 ms, and the receivers measure delay from
//! a fresh baseline. The relays' sequence numbers give a second figure
//! (gaps), which the gateway's WebRTC edge hides towards the browser: it
//! numbers what it sends itself.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::browser::{Browsers, Codec};
use crate::farend::FarEnd;
use crate::janus::JanusPage;
use crate::media::{CallShared, MediaPool};
use crate::stats::{self, Percentiles};
use crate::switchboard::{Agent, Page, Placed};

pub enum Target {
    Switchboard { base: String, agents: Vec<Agent> },
    Janus { base: String },
}

pub struct Plan {
    pub calls: usize,
    pub step: usize,
    pub rate: f64,
    pub step_hold: Duration,
    pub hold: Duration,
    pub setup_timeout: Duration,
    pub drain: Duration,
    /// How long senders pause around each window's counter readings.
    pub pause: Duration,
    pub loss_limit_pct: f64,
    /// Added jitter p99 limit of the second verdict, ms.
    pub jitter_limit_ms: f64,
    /// The far end's SIP address (built-in, or SIPp echoing).
    pub far_end: SocketAddr,
    /// A SIPp far end echoing: no far end here, loss is the round trip.
    pub echo: bool,
    pub to_prefix: String,
    pub watch_pid: Option<u32>,
    pub concurrency: usize,
}

/// One direction of a window (or of the totals).
#[derive(Debug, Default, Serialize, Clone)]
pub struct Direction {
    pub sent: u64,
    pub received: u64,
    pub loss_pct: f64,
    /// Last hop only: the relay's sequence numbers.
    pub gap_expected: u64,
    pub gap_lost: i64,
    pub added_jitter_us: Percentiles,
    /// RFC 3550 interarrival jitter of each call at the window's end.
    pub rfc3550_jitter_p50_us: f64,
    pub rfc3550_jitter_p99_us: f64,
    /// RTP timestamp units per packet the receiver saw (over each measured
    /// call's whole sequence span), and what its codec's 20 ms are.
    pub rtp_ts_per_packet: f64,
    pub rtp_ts_expected: u32,
}

impl Direction {
    /// A direction from its counter deltas: sent at one end, received and
    /// expected (sequence span) at the other.
    fn of(sent: u64, received: u64, expected: u64, added_jitter_us: Percentiles, (j50, j99): (f64, f64), rtp_ts_per_packet: f64, rtp_ts_expected: u32) -> Direction {
        Direction {
            sent,
            received,
            loss_pct: loss(sent, received),
            gap_expected: expected,
            gap_lost: expected as i64 - received as i64,
            added_jitter_us,
            rfc3550_jitter_p50_us: j50,
            rfc3550_jitter_p99_us: j99,
            rtp_ts_per_packet,
            rtp_ts_expected,
        }
    }
}

#[derive(Debug, Default, Serialize, Clone)]
pub struct Window {
    pub label: String,
    pub calls_target: usize,
    pub calls_up: usize,
    pub calls_lost: usize,
    pub seconds: f64,
    /// Browser → far end, and far end → browser (with an echoing far end:
    /// the round trip, in `to_browser`).
    pub to_far: Direction,
    pub to_browser: Direction,
    pub cpu_target_pct: f64,
    pub cpu_client_pct: f64,
    pub cpu_other_pct: f64,
    pub send_lateness_us: Percentiles,
    /// Machine-wide, and at the relay's and the client's own sockets.
    pub udp_rcvbuf_errors: u64,
    pub udp_drops_relay: u64,
    pub udp_drops_client: u64,
    /// The relay's sockets that dropped most: (local port, drops).
    pub relay_drop_ports: Vec<(u16, u64)>,
    /// The relay's threads by name without digits: (name, threads, % of a
    /// core), busiest first.
    pub relay_threads: Vec<(String, usize, f64)>,
    /// The window's seconds (from its start) whose peak added jitter passed
    /// the jitter limit: (second, peak at the far ends, peak at the
    /// browsers), ms.
    pub stalls: Vec<(u64, f64, f64)>,
    /// What the load client sent, in % of what was due (calls up × 50/s).
    pub sent_pct: f64,
    /// Every call up, loss below the limit each way, the load as asked.
    pub passed: bool,
    /// That, and added jitter p99 below --jitter-ms each way.
    pub passed_with_jitter: bool,
    pub verdict: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub codec: Codec,
    pub echo: bool,
    pub calls: usize,
    pub step: usize,
    pub rate: f64,
    pub media_threads: usize,
    pub pages_opened: usize,
    pub calls_up: usize,
    pub setup_ms: Percentiles,
    pub failures: Vec<(String, usize)>,
    pub windows: Vec<Window>,
    pub totals: Window,
    /// The first step (calls) whose window failed, if any.
    pub first_failing_step: Option<usize>,
    /// The same with the jitter limit too.
    pub first_failing_step_with_jitter: Option<usize>,
    pub far_end: Option<FarEndReport>,
    pub hung_up: usize,
}

#[derive(Debug, Serialize)]
pub struct FarEndReport {
    pub invites: u64,
    pub answered: u64,
    pub refused_codec: u64,
    pub unknown_call: u64,
    pub byes: u64,
    pub options: u64,
}

enum PageKind {
    Switchboard(Page),
    Janus(JanusPage),
}

/// Cumulative measured counters over every call.
#[derive(Debug, Default, Clone)]
struct Snapshot {
    b_sent: u64,
    b_received: u64,
    b_expected: u64,
    f_sent: u64,
    f_received: u64,
    f_expected: u64,
    target_ticks: u64,
    client_ticks: u64,
    machine_busy: u64,
    machine_total: u64,
    udp_drops: u64,
    relay_drops: std::collections::HashMap<u16, u64>,
    client_drops: std::collections::HashMap<u16, u64>,
    threads: std::collections::BTreeMap<String, (u64, usize)>,
    at: Option<Instant>,
}

fn snapshot(calls: &[Arc<CallShared>], watch: Option<u32>) -> Snapshot {
    let mut s = Snapshot::default();
    for c in calls {
        s.b_sent += c.browser.sent.load(Ordering::Relaxed);
        s.b_received += c.browser.received.load(Ordering::Relaxed);
        s.b_expected += c.browser.expected.load(Ordering::Relaxed);
        s.f_sent += c.far.sent.load(Ordering::Relaxed);
        s.f_received += c.far.received.load(Ordering::Relaxed);
        s.f_expected += c.far.expected.load(Ordering::Relaxed);
    }
    s.target_ticks = watch.and_then(stats::process_ticks).unwrap_or(0);
    s.client_ticks = stats::process_ticks(std::process::id()).unwrap_or(0);
    (s.machine_busy, s.machine_total) = stats::machine_ticks();
    s.udp_drops = stats::udp_rcvbuf_errors();
    if let Some(pid) = watch {
        s.relay_drops = stats::udp_drops_of(pid);
        s.threads = stats::thread_ticks(pid);
    }
    s.client_drops = stats::udp_drops_of(std::process::id());
    s.at = Some(Instant::now());
    s
}

/// Drops per port between two readings, most first (ports that appeared
/// count from zero; closed ones are gone).
fn port_deltas(a: &std::collections::HashMap<u16, u64>, b: &std::collections::HashMap<u16, u64>) -> Vec<(u16, u64)> {
    let mut v: Vec<(u16, u64)> = b.iter().map(|(p, d)| (*p, d.saturating_sub(a.get(p).copied().unwrap_or(0)))).filter(|(_, d)| *d > 0).collect();
    v.sort_by(|x, y| y.1.cmp(&x.1));
    v
}

fn loss(sent: u64, received: u64) -> f64 {
    if sent == 0 {
        0.0
    } else {
        (sent as f64 - received as f64) / sent as f64 * 100.0
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

struct Coordinator {
    plan: Plan,
    calls: Arc<Vec<Arc<CallShared>>>,
    media: Arc<MediaPool>,
    echo: bool,
    ticks: f64,
    cores: f64,
    /// RTP units of the browsers' 20 ms (960 for Opus, 160 for PCMU).
    browser_samples: u32,
}

impl Coordinator {
    fn up(&self, c: &CallShared) -> bool {
        c.browser_connected.load(Ordering::Relaxed)
            && c.browser.received_all.load(Ordering::Relaxed) > 0
            && (self.echo || c.far_answered.load(Ordering::Relaxed) && c.far.received_all.load(Ordering::Relaxed) > 0)
    }

    fn lost(&self, c: &CallShared) -> bool {
        c.browser_lost.load(Ordering::Relaxed) || c.far_ended.load(Ordering::Relaxed)
    }

    fn window(&self, label: &str, target: usize, a: &Snapshot, b: &Snapshot, hists: crate::media::Hists) -> Window {
        let measured: Vec<&Arc<CallShared>> = self.calls.iter().filter(|c| c.measuring.load(Ordering::Relaxed)).collect();
        let jitters = |far: bool| {
            let mut v: Vec<f64> = measured
                .iter()
                .map(|c| if far { &c.far } else { &c.browser })
                .filter(|x| x.received.load(Ordering::Relaxed) > 0)
                .map(|x| x.jitter_us())
                .collect();
            v.sort_by(|x, y| x.total_cmp(y));
            (percentile(&v, 50.0), percentile(&v, 99.0))
        };
        let (bj50, bj99) = jitters(false);
        let (fj50, fj99) = jitters(true);
        let ts_per_packet = |far: bool| {
            let (mut units, mut packets) = (0u64, 0u64);
            for c in &measured {
                let x = if far { &c.far } else { &c.browser };
                let span = x.expected.load(Ordering::Relaxed);
                if span > 1 {
                    units += x.ts_span.load(Ordering::Relaxed);
                    packets += span - 1;
                }
            }
            if packets == 0 {
                0.0
            } else {
                units as f64 / packets as f64
            }
        };
        let to_far = Direction::of(b.b_sent - a.b_sent, b.f_received - a.f_received, b.f_expected - a.f_expected, Percentiles::of(&hists.at_far), (fj50, fj99), ts_per_packet(true), 160);
        // With an echoing far end the browser hears its own packets back.
        let to_browser_sent = if self.echo { b.b_sent - a.b_sent } else { b.f_sent - a.f_sent };
        let to_browser =
            Direction::of(to_browser_sent, b.b_received - a.b_received, b.b_expected - a.b_expected, Percentiles::of(&hists.at_browser), (bj50, bj99), ts_per_packet(false), self.browser_samples);
        let wall = b.at.zip(a.at).map(|(b, a)| (b - a).as_secs_f64()).unwrap_or(0.0);
        let pct = |t: u64| if wall > 0.0 { t as f64 / self.ticks / wall * 100.0 } else { 0.0 };
        let cpu_target = pct(b.target_ticks.saturating_sub(a.target_ticks));
        let cpu_client = pct(b.client_ticks.saturating_sub(a.client_ticks));
        let total = (b.machine_total - a.machine_total) as f64;
        let busy = if total > 0.0 { (b.machine_busy - a.machine_busy) as f64 / total * self.cores * 100.0 } else { 0.0 };
        let calls_up = measured.iter().filter(|c| self.up(c)).count();
        let calls_lost = measured.iter().filter(|c| self.lost(c)).count();
        let mut reasons = Vec::new();
        if calls_up < target {
            reasons.push(format!("{} of {target} calls up", calls_up));
        }
        if calls_lost > 0 {
            reasons.push(format!("{calls_lost} calls dropped"));
        }
        let limit = self.plan.loss_limit_pct;
        if to_far.loss_pct >= limit && !self.echo {
            reasons.push(format!("loss browser→far end {:.3} % ≥ {limit} %", to_far.loss_pct));
        }
        if to_browser.loss_pct >= limit {
            let what = if self.echo { "round trip" } else { "far end→browser" };
            reasons.push(format!("loss {what} {:.3} % ≥ {limit} %", to_browser.loss_pct));
        }
        // The load itself: each end of each call sends 50 packets a second.
        // A starved client (the relay took the machine) sends fewer, and its
        // figures are no longer those of the load asked for.
        let due = calls_up as f64 * wall * 50.0;
        let sent_pct = if due > 0.0 {
            let far_sent = if self.echo { f64::INFINITY } else { to_browser.sent as f64 };
            (to_far.sent as f64).min(far_sent) / due * 100.0
        } else {
            100.0
        };
        if label != "total" && sent_pct < 99.0 {
            reasons.push(format!("the load client sent only {sent_pct:.1} % of its packets (machine saturated)"));
        }
        let passed = reasons.is_empty();
        let jitter_limit = (self.plan.jitter_limit_ms * 1000.0) as u64;
        let jitter_p99 = to_far.added_jitter_us.p99.max(to_browser.added_jitter_us.p99);
        if label != "total" && jitter_p99 >= jitter_limit {
            reasons.push(format!("added jitter p99 {:.1} ms ≥ {} ms", jitter_p99 as f64 / 1000.0, self.plan.jitter_limit_ms));
        }
        Window {
            label: label.to_owned(),
            calls_target: target,
            calls_up,
            calls_lost,
            seconds: wall,
            to_far,
            to_browser,
            cpu_target_pct: cpu_target,
            cpu_client_pct: cpu_client,
            cpu_other_pct: (busy - cpu_target - cpu_client).max(0.0),
            send_lateness_us: Percentiles::of(&hists.send_lateness),
            udp_rcvbuf_errors: b.udp_drops.saturating_sub(a.udp_drops),
            udp_drops_relay: port_deltas(&a.relay_drops, &b.relay_drops).iter().map(|(_, d)| d).sum(),
            udp_drops_client: port_deltas(&a.client_drops, &b.client_drops).iter().map(|(_, d)| d).sum(),
            relay_drop_ports: port_deltas(&a.relay_drops, &b.relay_drops).into_iter().take(3).collect(),
            relay_threads: {
                let mut t: Vec<(String, usize, f64)> = b
                    .threads
                    .iter()
                    .map(|(name, (ticks, n))| (name.clone(), *n, pct(ticks.saturating_sub(a.threads.get(name).map_or(0, |x| x.0)))))
                    .filter(|(_, _, p)| *p >= 0.5)
                    .collect();
                t.sort_by(|x, y| y.2.total_cmp(&x.2));
                t
            },
            sent_pct,
            stalls: {
                let (from, to) = match (a.at, b.at) {
                    (Some(a), Some(b)) => (a.duration_since(self.media.epoch).as_secs(), b.duration_since(self.media.epoch).as_secs()),
                    _ => (0, 0),
                };
                let limit = (self.plan.jitter_limit_ms * 1000.0) as u32;
                (from..to.min(stats::SERIES_SECONDS as u64))
                    .filter_map(|sec| {
                        let (f, br) = (stats::PEAK_AT_FAR[sec as usize].load(Ordering::Relaxed), stats::PEAK_AT_BROWSER[sec as usize].load(Ordering::Relaxed));
                        (f >= limit || br >= limit).then(|| (sec - from, f as f64 / 1000.0, br as f64 / 1000.0))
                    })
                    .collect()
            },
            passed,
            passed_with_jitter: reasons.is_empty(),
            verdict: if reasons.is_empty() { "pass".into() } else { reasons.join("; ") },
        }
    }

    /// Measures every call that is up, for `length`.
    /// Every sender stops until what is in flight has arrived.
    async fn pause(&self) {
        for c in self.calls.iter() {
            c.silent.store(true, Ordering::Relaxed);
        }
        tokio::time::sleep(self.plan.pause).await;
    }

    /// The senders go on; what arrives from now on is measured against a
    /// fresh delay baseline (packets still in flight before would not be).
    fn resume(&self) {
        crate::media::PAUSES.fetch_add(1, Ordering::SeqCst);
        for c in self.calls.iter() {
            c.silent.store(false, Ordering::Relaxed);
        }
    }

    /// Measures every call that is up, for `length`. The counters are read
    /// with every sender paused and nothing in flight (at both edges), so
    /// that what one end sent and the other received are the same packets;
    /// CPU is read while the calls talk.
    async fn measure(&self, label: &str, target: usize, length: Duration) -> Window {
        self.pause().await;
        for c in self.calls.iter().take(target) {
            if self.up(c) && !self.lost(c) {
                c.measuring.store(true, Ordering::Relaxed);
            }
        }
        let _ = self.media.take_hists();
        let a_counts = snapshot(&self.calls, None);
        self.resume();
        let a = snapshot(&self.calls, self.plan.watch_pid);
        tokio::time::sleep(length).await;
        let b = snapshot(&self.calls, self.plan.watch_pid);
        self.pause().await;
        let b_counts = snapshot(&self.calls, None);
        let hists = self.media.take_hists();
        self.resume();
        let with_counts = |sys: Snapshot, c: &Snapshot| Snapshot {
            b_sent: c.b_sent,
            b_received: c.b_received,
            b_expected: c.b_expected,
            f_sent: c.f_sent,
            f_received: c.f_received,
            f_expected: c.f_expected,
            ..sys
        };
        let w = self.window(label, target, &with_counts(a, &a_counts), &with_counts(b, &b_counts), hists);
        eprintln!(
            "[{label} {target}] up {}/{target}, lost {}; browser→far {} sent {} received ({:.4} %), far→browser {} sent {} received ({:.4} %); added jitter p99 {:.2}/{:.2} ms; CPU target {:.0} % client {:.0} % other {:.0} %; UDP drops relay {} client {}; {}",
            w.calls_up,
            w.calls_lost,
            w.to_far.sent,
            w.to_far.received,
            w.to_far.loss_pct,
            w.to_browser.sent,
            w.to_browser.received,
            w.to_browser.loss_pct,
            w.to_far.added_jitter_us.p99 as f64 / 1000.0,
            w.to_browser.added_jitter_us.p99 as f64 / 1000.0,
            w.cpu_target_pct,
            w.cpu_client_pct,
            w.cpu_other_pct,
            w.udp_drops_relay,
            w.udp_drops_client,
            w.verdict
        );
        let threads: Vec<String> = w.relay_threads.iter().take(8).map(|(name, n, p)| format!("{name} ×{n} {p:.0}")).collect();
        eprintln!("    relay threads (% of a core): {}; drops by relay port: {:?}", threads.join(", "), w.relay_drop_ports);
        if !w.stalls.is_empty() {
            let stalls: Vec<String> = w.stalls.iter().take(20).map(|(t, f, b)| format!("{t}s {f:.0}/{b:.0}")).collect();
            eprintln!("    seconds with a packet ≥ {} ms late (far end/browser ms): {}", self.plan.jitter_limit_ms, stalls.join(", "));
        }
        w
    }
}

struct Outcome {
    index: usize,
    result: Result<Duration, String>,
    placed: Option<Placed>,
}

pub async fn run(target: Target, plan: Plan, browsers: Browsers, media: Arc<MediaPool>, threads: usize) -> anyhow::Result<Report> {
    let n = plan.calls;
    let calls: Arc<Vec<Arc<CallShared>>> = Arc::new((0..n).map(|i| Arc::new(CallShared::new(i))).collect());
    let far = if plan.echo {
        None
    } else {
        let audio = crate::media::Audio { frames: Arc::new(crate::audio::pcmu_frames().into_iter().map(Arc::from).collect()), samples: 160 };
        Some(FarEnd::start(plan.far_end, calls.clone(), media.clone(), audio)?)
    };
    let browsers = Arc::new(browsers);
    let http = reqwest::Client::builder().pool_max_idle_per_host(plan.concurrency * 2).build()?;
    let label = match &target {
        Target::Switchboard { .. } => "switchboard",
        Target::Janus { .. } => "janus",
    };

    // Every agent's page first, as agents sign in before they call.
    eprintln!("opening {n} pages");
    let run_tag = std::process::id();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(plan.concurrency.max(1)));
    let mut opening = Vec::with_capacity(n);
    for i in 0..n {
        let (http, sem) = (http.clone(), semaphore.clone());
        let fut: std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<PageKind>> + Send>> = match &target {
            Target::Switchboard { base, agents } => {
                let (base, agent) = (base.clone(), agents.get(i).cloned());
                Box::pin(async move {
                    let _p = sem.acquire().await?;
                    let agent = agent.ok_or_else(|| anyhow::anyhow!("fewer provisioned agents than calls"))?;
                    Ok(PageKind::Switchboard(Page::open(http, &base, &agent, format!("bench-{run_tag}-{i:05}")).await?))
                })
            }
            Target::Janus { base } => {
                let (base, user) = (base.clone(), format!("sip:browser{i:04}@{}", plan.far_end.ip()));
                Box::pin(async move {
                    let _p = sem.acquire().await?;
                    Ok(PageKind::Janus(JanusPage::open(http, &base, &user).await?))
                })
            }
        };
        opening.push(tokio::spawn(fut));
    }
    let mut pages = Vec::with_capacity(n);
    let mut failures: std::collections::BTreeMap<String, usize> = Default::default();
    for (i, o) in opening.into_iter().enumerate() {
        match o.await? {
            Ok(p) => pages.push(Some(Arc::new(p))),
            Err(e) => {
                if failures.is_empty() {
                    eprintln!("page {i}: {e:#}");
                }
                *failures.entry(format!("page: {e}")).or_default() += 1;
                pages.push(None);
            }
        }
    }
    let pages_opened = pages.iter().filter(|p| p.is_some()).count();
    eprintln!("{pages_opened} of {n} pages open");

    let co = Coordinator { plan, calls: calls.clone(), media: media.clone(), echo: far.is_none(), ticks: stats::clock_ticks(), browser_samples: browsers.audio.samples, cores: std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1) as f64 };
    let plan = &co.plan;
    let mut steps: Vec<usize> = (1..).map(|k| k * plan.step.max(1)).take_while(|&s| s < n).collect();
    steps.push(n);
    let mut windows = Vec::new();
    let mut placed: Vec<Option<Placed>> = (0..n).map(|_| None).collect();
    let mut setup = Vec::new();
    let mut first_failing_step = None;
    let mut first_failing_step_with_jitter = None;
    let mut next = 0;
    let interval = Duration::from_secs_f64(1.0 / plan.rate.max(0.01));
    for (k, &target) in steps.iter().enumerate() {
        eprintln!("ramping to {target} calls");
        let mut tasks = Vec::new();
        let mut tick = tokio::time::interval(interval);
        while next < target {
            tick.tick().await;
            let i = next;
            next += 1;
            let Some(page) = pages[i].clone() else { continue };
            let (shared, browsers, media, calls_for_up) = (calls[i].clone(), browsers.clone(), media.clone(), calls.clone());
            let (to, far_end, timeout, echo) = (format!("{}{i:04}", plan.to_prefix), plan.far_end, plan.setup_timeout, co.echo);
            tasks.push(tokio::spawn(async move {
                let started = Instant::now();
                let placed = match &*page {
                    PageKind::Switchboard(p) => p.call(&to, &browsers, &media, shared.clone(), timeout).await.map(Some),
                    PageKind::Janus(p) => p.call(&format!("sip:{to}@{far_end}"), &browsers, &media, shared.clone(), timeout).await.map(|_| None),
                };
                let placed = match placed {
                    Ok(p) => p,
                    Err(e) => return Outcome { index: i, result: Err(format!("{e:#}")), placed: None },
                };
                let c = &calls_for_up[i];
                let deadline = started + timeout;
                loop {
                    let up = c.browser_connected.load(Ordering::Relaxed)
                        && c.browser.received_all.load(Ordering::Relaxed) > 0
                        && (echo || c.far_answered.load(Ordering::Relaxed) && c.far.received_all.load(Ordering::Relaxed) > 0);
                    if up {
                        return Outcome { index: i, result: Ok(started.elapsed()), placed };
                    }
                    if Instant::now() >= deadline {
                        let why = if !c.browser_connected.load(Ordering::Relaxed) {
                            "the browser's ICE/DTLS did not connect"
                        } else if c.browser.received_all.load(Ordering::Relaxed) == 0 {
                            "no media reached the browser"
                        } else if !echo && !c.far_answered.load(Ordering::Relaxed) {
                            "the far end was not called (or not ACKed)"
                        } else {
                            "no media reached the far end"
                        };
                        return Outcome { index: i, result: Err(why.into()), placed };
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }));
        }
        for t in tasks {
            let o = t.await?;
            match o.result {
                Ok(d) => setup.push(d.as_secs_f64() * 1000.0),
                Err(why) => {
                    if failures.values().sum::<usize>() < 3 {
                        eprintln!("call {}: {why}", o.index);
                    }
                    *failures.entry(why).or_default() += 1;
                    calls[o.index].ended.store(true, Ordering::Relaxed);
                }
            }
            placed[o.index] = o.placed;
        }
        let last = k + 1 == steps.len();
        let (label, length) = if last { ("hold", plan.hold) } else { ("step", plan.step_hold) };
        let w = co.measure(label, target, length).await;
        if !w.passed_with_jitter && first_failing_step_with_jitter.is_none() {
            first_failing_step_with_jitter = Some(target);
        }
        if !w.passed && first_failing_step.is_none() {
            first_failing_step = Some(target);
        }
        windows.push(w);
    }

    // The totals: senders stop, what is in flight arrives.
    let before = snapshot(&calls, None);
    for c in calls.iter() {
        c.silent.store(true, Ordering::Relaxed);
    }
    tokio::time::sleep(plan.drain).await;
    let mut totals = co.window("total", n, &Snapshot { at: before.at, ..Snapshot::default() }, &snapshot(&calls, None), crate::media::Hists::default());
    // Counts only: the windows have the CPU figures.
    (totals.seconds, totals.cpu_target_pct, totals.cpu_client_pct, totals.cpu_other_pct, totals.udp_rcvbuf_errors) = (0.0, 0.0, 0.0, 0.0, 0);
    (totals.udp_drops_relay, totals.udp_drops_client, totals.relay_threads, totals.relay_drop_ports, totals.stalls) = (0, 0, Vec::new(), Vec::new(), Vec::new());
    let calls_up = calls.iter().filter(|c| c.measuring.load(Ordering::Relaxed)).count();

    // Hang up.
    eprintln!("hanging up");
    let mut hangups = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        let Some(page) = page.clone() else { continue };
        let p = placed[i].take();
        let sem = semaphore.clone();
        hangups.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.ok()?;
            match (&*page, p) {
                (PageKind::Switchboard(page), Some(p)) => page.hang_up(&p).await.ok(),
                (PageKind::Janus(page), _) => page.hang_up().await.ok(),
                _ => None,
            }
        }));
    }
    let mut hung_up = 0;
    for h in hangups {
        if let Ok(Some(())) = h.await {
            hung_up += 1;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for c in calls.iter() {
        c.ended.store(true, Ordering::Relaxed);
    }
    for page in pages.into_iter().flatten() {
        if let Ok(PageKind::Janus(p)) = Arc::try_unwrap(page) {
            p.close().await;
        }
    }
    let far_end = far.map(|f| {
        let s = &f.stats;
        let r = FarEndReport {
            invites: s.invites.load(Ordering::Relaxed),
            answered: s.answered.load(Ordering::Relaxed),
            refused_codec: s.refused_codec.load(Ordering::Relaxed),
            unknown_call: s.unknown_call.load(Ordering::Relaxed),
            byes: s.byes.load(Ordering::Relaxed),
            options: s.options.load(Ordering::Relaxed),
        };
        f.stop();
        r
    });
    setup.sort_by(|a, b| a.total_cmp(b));
    let setup_ms = Percentiles {
        count: setup.len() as u64,
        p50: percentile(&setup, 50.0) as u64,
        p99: percentile(&setup, 99.0) as u64,
        p999: percentile(&setup, 99.9) as u64,
        max: setup.last().copied().unwrap_or(0.0) as u64,
    };
    let mut failures: Vec<(String, usize)> = failures.into_iter().collect();
    failures.sort_by(|a, b| b.1.cmp(&a.1));
    Ok(Report {
        target: label.into(),
        codec: browsers.codec,
        echo: co.echo,
        calls: n,
        step: co.plan.step,
        rate: co.plan.rate,
        media_threads: threads,
        pages_opened,
        calls_up,
        setup_ms,
        failures,
        windows,
        totals,
        first_failing_step,
        first_failing_step_with_jitter,
        far_end,
        hung_up,
    })
}
