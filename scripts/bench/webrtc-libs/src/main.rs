//! Measures str0m and webrtc-rs for Switchboard's browser (WebRTC) leg.
//!
//! `webrtc-libs-bench LIB TEST [N]` runs one measurement in a process of its
//! own and prints one `RESULT` line; `webrtc-libs-bench report FILE` turns
//! those lines into the markdown tables. LIB: str0m | webrtc-rs | udp.
//! TEST: setup | restart | dtmf | cpu | mem | cert. See scripts/bench/webrtc-libs.sh.
//! TRACE=1 prints every datagram sent (time, addresses, length, first byte),
//! TRACE_SDP=1 the answers (webrtc-rs: offers too). For webrtc-rs,
//! WEBRTC_RS_CHECK_MS sets the ICE check interval (the script's "tuned" run)
//! and WEBRTC_RS_DTLS_SERVER=1 makes the gateway answer `setup:passive`.

mod harness;
mod s0;
mod wrs;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use harness::{Lib, Peer, World};

/// Live heap bytes, to split memory between the two ends of a pair.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn cpu_time() -> Duration {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

fn threads() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines().find_map(|l| l.strip_prefix("Threads:")).unwrap().trim().parse().unwrap()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // Nearest rank.
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the loop until pair `i`'s gateway peer has its first RTP packet.
fn connect<L: Lib>(w: &mut World<L>, i: usize, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    loop {
        let p = w.pairs[i].as_ref().unwrap();
        if p.gateway.status().first_rtp.is_some() {
            return true;
        }
        if Instant::now() > until || p.gateway.status().failed || p.browser.status().failed {
            return false;
        }
        w.turn(Duration::from_millis(50));
    }
}

fn setup<L: Lib>(lib: L, name: &str, n: usize) {
    let mut w = World::new(lib);
    // One session first, not counted: lazy initialisation in either library.
    let i = w.start_pair();
    assert!(connect(&mut w, i, Duration::from_secs(10)), "{name}: warm-up session did not connect");
    w.end_pair(i);
    let (mut sdp, mut ice, mut dtls, mut media) = (vec![], vec![], vec![], vec![]);
    let mut failed = 0;
    for _ in 0..n {
        let t0 = Instant::now();
        let i = w.start_pair();
        let t_sdp = t0.elapsed();
        if !connect(&mut w, i, Duration::from_secs(10)) {
            failed += 1;
            w.end_pair(i);
            continue;
        }
        let p = w.end_pair(i).unwrap();
        let g = p.gateway.status();
        sdp.push(ms(t_sdp));
        ice.push(ms(g.ice_connected.unwrap() - p.started));
        dtls.push(ms(g.connected.unwrap() - p.started));
        media.push(ms(g.first_rtp.unwrap() - p.started));
    }
    println!(
        "RESULT {name} setup check_ms={} sessions={} failed={failed} sdp_p50={:.2} sdp_p99={:.2} ice_p50={:.2} ice_p99={:.2} dtls_p50={:.2} dtls_p99={:.2} media_p50={:.2} media_p99={:.2} unknown_datagrams={}",
        wrs::check_interval_ms().map(|v| v.to_string()).unwrap_or("default".into()),
        sdp.len(),
        pct(&mut sdp, 50.0),
        pct(&mut sdp, 99.0),
        pct(&mut ice, 50.0),
        pct(&mut ice, 99.0),
        pct(&mut dtls, 50.0),
        pct(&mut dtls, 99.0),
        pct(&mut media, 50.0),
        pct(&mut media, 99.0),
        w.unknown_datagrams,
    );
}

const BATCH: usize = 32;

fn cpu<L: Lib>(lib: L, name: &str, n: usize) {
    let mut w = World::new(lib);
    let i = w.start_pair();
    assert!(connect(&mut w, i, Duration::from_secs(10)), "{name}: session did not connect");
    w.probe_media = false;
    let (mut seq, mut ts) = (0u64, 0u32);
    // Warm up the send and receive paths.
    let blast = |w: &mut World<L>, seq: &mut u64, ts: &mut u32, count: usize| {
        let start = w.pairs[i].as_ref().unwrap().browser.status().rtp_received;
        let mut sent = 0;
        while sent < count {
            let k = BATCH.min(count - sent);
            w.blast_gateway(i, seq, ts, k);
            sent += k;
            w.read_browser(i);
            w.turn(Duration::ZERO);
        }
        // Collect stragglers.
        let until = Instant::now() + Duration::from_millis(200);
        while w.pairs[i].as_ref().unwrap().browser.status().rtp_received - start < count as u64 && Instant::now() < until {
            w.turn(Duration::from_millis(5));
        }
        w.pairs[i].as_ref().unwrap().browser.status().rtp_received - start
    };
    blast(&mut w, &mut seq, &mut ts, 5_000);
    let (c0, t0) = (cpu_time(), Instant::now());
    let got = blast(&mut w, &mut seq, &mut ts, n);
    let (cpu, wall) = (cpu_time() - c0, t0.elapsed());
    println!(
        "RESULT {name} cpu packets={n} received={got} cpu_us_per_packet={:.3} wall_packets_per_s={:.0} cpu_packets_per_s={:.0} threads={}",
        cpu.as_secs_f64() * 1e6 / n as f64,
        n as f64 / wall.as_secs_f64(),
        n as f64 / cpu.as_secs_f64(),
        threads(),
    );
}

/// The same datagrams without any WebRTC library: 188 bytes (12 header +
/// 160 payload + 16 AEAD tag), same batches, same sockets: the floor the
/// kernel sets.
fn cpu_udp(n: usize) {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    b.set_nonblocking(true).unwrap();
    let dst = b.local_addr().unwrap();
    let mut pkt = [0u8; 188];
    let mut buf = [0u8; 2048];
    let run = |count: usize, pkt: &mut [u8; 188], buf: &mut [u8; 2048]| {
        let mut got = 0;
        let mut sent = 0;
        while sent < count {
            for _ in 0..BATCH.min(count - sent) {
                pkt[2..4].copy_from_slice(&(sent as u16).to_be_bytes());
                a.send_to(&pkt[..], dst).unwrap();
                sent += 1;
            }
            loop {
                match b.recv_from(buf) {
                    Ok((l, _)) => {
                        std::hint::black_box(&buf[..l]);
                        got += 1
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        got
    };
    run(5_000, &mut pkt, &mut buf);
    let (c0, t0) = (cpu_time(), Instant::now());
    let got = run(n, &mut pkt, &mut buf);
    let (cpu, wall) = (cpu_time() - c0, t0.elapsed());
    println!(
        "RESULT udp cpu packets={n} received={got} cpu_us_per_packet={:.3} wall_packets_per_s={:.0} cpu_packets_per_s={:.0} threads={}",
        cpu.as_secs_f64() * 1e6 / n as f64,
        n as f64 / wall.as_secs_f64(),
        n as f64 / cpu.as_secs_f64(),
        threads(),
    );
}

fn mem<L: Lib>(lib: L, name: &str, n: usize) {
    let mut w = World::new(lib);
    let i = w.start_pair();
    assert!(connect(&mut w, i, Duration::from_secs(10)), "{name}: warm-up session did not connect");
    w.end_pair(i);
    let (rss0, heap0) = (rss_bytes(), LIVE.load(Ordering::Relaxed));
    let t0 = Instant::now();
    let mut ids = Vec::new();
    let mut failed = 0;
    // Sessions are started 25 at a time, each batch connected before the next.
    while ids.len() < n {
        let batch: Vec<usize> = (0..25.min(n - ids.len())).map(|_| w.start_pair()).collect();
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let pending = batch
                .iter()
                .filter(|&&i| w.pairs[i].as_ref().unwrap().gateway.status().first_rtp.is_none())
                .count();
            if pending == 0 || Instant::now() > until {
                failed += pending;
                break;
            }
            w.turn(Duration::from_millis(50));
        }
        ids.extend(batch);
    }
    let connect_all = t0.elapsed();
    // A second of a call on every pair: 50 packets each way, then RTCP.
    w.probe_media = false;
    let (mut seq, mut ts) = (1_000u64, 0u32);
    for &i in &ids {
        w.blast_gateway(i, &mut seq, &mut ts, 50);
        w.send_browser(i, 50);
        w.turn(Duration::ZERO);
    }
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        w.turn(Duration::from_millis(20));
    }
    let connected = ids
        .iter()
        .filter(|&&i| {
            let p = w.pairs[i].as_ref().unwrap();
            p.gateway.status().connected.is_some() && p.browser.status().rtp_received >= 50
        })
        .count();
    let (rss1, heap1) = (rss_bytes(), LIVE.load(Ordering::Relaxed));
    let th = threads();
    // Drop the browser ends (and their sockets): what is left is the gateway's.
    let mut gateways = Vec::new();
    for &i in &ids {
        let p = w.end_pair(i).unwrap();
        gateways.push(p.gateway);
        drop(p.browser);
        drop(p.sock);
    }
    let heap2 = LIVE.load(Ordering::Relaxed);
    drop(gateways);
    let heap3 = LIVE.load(Ordering::Relaxed);
    println!(
        "RESULT {name} mem pairs={n} connected={connected} failed={failed} connect_all_s={:.2} rss_per_pair_kib={:.1} heap_per_pair_kib={:.1} heap_per_gateway_peer_kib={:.1} heap_per_browser_peer_kib={:.1} heap_left_kib={:.1} rss_total_mib={:.1} threads={th}",
        connect_all.as_secs_f64(),
        (rss1 as f64 - rss0 as f64) / n as f64 / 1024.0,
        (heap1 - heap0) as f64 / n as f64 / 1024.0,
        (heap2 - heap0) as f64 / n as f64 / 1024.0,
        (heap1 - heap2) as f64 / n as f64 / 1024.0,
        (heap3 - heap0) as f64 / 1024.0,
        rss1 as f64 / 1024.0 / 1024.0,
    );
}

/// ICE restart: the browser offers new credentials; the gateway must answer
/// the checks under its new ufrag and media must keep flowing.
fn restart<L: Lib>(lib: L, name: &str) {
    let mut w = World::new(lib);
    let i = w.start_pair();
    assert!(connect(&mut w, i, Duration::from_secs(10)), "{name}: session did not connect");
    w.probe_media = false;
    let (old, new) = w.restart(i);
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        w.turn(Duration::from_millis(20));
    }
    let before = w.pairs[i].as_ref().unwrap().gateway.status().rtp_received;
    w.send_browser(i, 50);
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        w.turn(Duration::from_millis(20));
    }
    let p = w.pairs[i].as_ref().unwrap();
    let after = p.gateway.status().rtp_received;
    let checks = w.ufrag_hits.get(&new).copied().unwrap_or(0);
    let ok = old != new && checks > 0 && after - before == 50 && !p.gateway.status().failed;
    println!("RESULT {name} restart ok={ok} new_ufrag_differs={} checks_under_new_ufrag={checks} rtp_after_restart={}", old != new, after - before);
}

/// RFC 4733: telephone-event negotiated and passed through as raw RTP.
fn dtmf<L: Lib>(lib: L, name: &str) {
    let mut w = World::new(lib);
    let i = w.start_pair();
    assert!(connect(&mut w, i, Duration::from_secs(10)), "{name}: session did not connect");
    w.probe_media = false;
    // Digit 5, volume 10, growing durations, then three end packets.
    for k in 0..6u16 {
        let end = if k >= 3 { 0x80 } else { 0 };
        let dur = (k.min(3) + 1) * 160;
        let [d0, d1] = dur.to_be_bytes();
        w.send_browser_pt(i, 1, 101, &[5, end | 10, d0, d1]);
    }
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        w.turn(Duration::from_millis(20));
    }
    let got = w.pairs[i].as_ref().unwrap().gateway.status().tele_received;
    println!("RESULT {name} dtmf ok={} telephone_event_packets={got}", got == 6);
}

/// Certificate generation (ECDSA P-256 checked by its OID in the DER).
fn cert(name: &str, make: fn() -> Vec<u8>) {
    // id-ecPublicKey 1.2.840.10045.2.1 and prime256v1 1.2.840.10045.3.1.7
    const EC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let has = |d: &[u8], n: &[u8]| d.windows(n.len()).any(|w| w == n);
    make();
    let t0 = Instant::now();
    let k = 20;
    let mut p256 = true;
    for _ in 0..k {
        let der = make();
        p256 &= has(&der, EC_KEY) && has(&der, P256);
    }
    println!("RESULT {name} cert ecdsa_p256={p256} cert_gen_ms={:.2}", ms(t0.elapsed()) / k as f64);
}

fn report(path: &str) {
    let text = std::fs::read_to_string(path).expect("results file");
    let mut r: BTreeMap<(String, String), BTreeMap<String, String>> = BTreeMap::new();
    for l in text.lines() {
        let mut it = l.split_whitespace();
        if it.next() != Some("RESULT") {
            continue;
        }
        let (lib, test) = (it.next().unwrap().to_string(), it.next().unwrap().to_string());
        let new: BTreeMap<String, String> =
            it.filter_map(|f| f.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        // Repeated CPU runs: keep the least disturbed (lowest CPU per packet)
        // and list them all.
        let cost = |m: &BTreeMap<String, String>| -> f64 {
            m.get("cpu_us_per_packet").and_then(|v| v.parse().ok()).unwrap_or(f64::MAX)
        };
        let kv = r.entry((lib, test)).or_default();
        let runs = match kv.get("runs") {
            Some(prev) => format!("{prev}, {}", new.get("cpu_us_per_packet").cloned().unwrap_or_default()),
            None => new.get("cpu_us_per_packet").cloned().unwrap_or_default(),
        };
        if kv.is_empty() || cost(&new) < cost(kv) {
            *kv = new;
        }
        kv.insert("runs".to_string(), runs);
    }
    let get = |lib: &str, test: &str, k: &str| -> String {
        r.get(&(lib.to_string(), test.to_string()))
            .and_then(|m| m.get(k))
            .cloned()
            .unwrap_or_else(|| "–".to_string())
    };
    let libs = ["str0m", "webrtc-rs"];
    println!("| figure | str0m 0.25.0 (aws-lc-rs) | webrtc-rs: rtc 0.21.1 core of webrtc 0.21.1 (ring) |");
    println!("|---|---|---|");
    let row = |label: &str, f: &dyn Fn(&str) -> String| {
        let cells: Vec<String> = libs.iter().map(|l| f(l)).collect();
        println!("| {label} | {} |", cells.join(" | "));
    };
    let both = |t: &'static str, a: &'static str, b: &'static str| {
        move |l: &str| format!("{} / {}", get(l, t, a), get(l, t, b))
    };
    row(
        &format!("setup, {} sequential sessions: offer/answer (both peers built), ms p50 / p99", get("str0m", "setup", "sessions")),
        &both("setup", "sdp_p50", "sdp_p99"),
    );
    row("setup: → ICE connected (gateway), ms p50 / p99", &both("setup", "ice_p50", "ice_p99"));
    row("setup: → DTLS done, SRTP ready (gateway), ms p50 / p99", &both("setup", "dtls_p50", "dtls_p99"));
    row("setup: → first RTP packet at the gateway, ms p50 / p99", &both("setup", "media_p50", "media_p99"));
    row("setup: sessions failed", &|l| get(l, "setup", "failed"));
    row(
        &format!(
            "setup with webrtc-rs's ICE check interval at {} ms instead of 200: → first RTP, ms p50 / p99",
            get("webrtc-rs-tuned", "setup", "check_ms")
        ),
        &|l| if l == "str0m" { "(no such timer)".to_string() } else { both("setup", "media_p50", "media_p99")("webrtc-rs-tuned") },
    );
    row(
        &format!(
            "CPU per RTP packet, {} packets gateway → browser (SRTP protect, UDP, unprotect), µs, best run",
            get("str0m", "cpu", "packets")
        ),
        &|l| get(l, "cpu", "cpu_us_per_packet"),
    );
    row("  every run, µs", &|l| get(l, "cpu", "runs"));
    row("  of which the UDP send + receive alone (no library), µs, best run", &|_| get("udp", "cpu", "cpu_us_per_packet"));
    row("packets/s on one thread (wall)", &|l| get(l, "cpu", "wall_packets_per_s"));
    row("packets received of those sent", &|l| format!("{} / {}", get(l, "cpu", "received"), get(l, "cpu", "packets")));
    row(
        &format!("memory, {} connected pairs: RSS per pair (both ends), KiB", get("str0m", "mem", "pairs")),
        &|l| get(l, "mem", "rss_per_pair_kib"),
    );
    row("  live heap per gateway peer (ICE-lite end), KiB", &|l| get(l, "mem", "heap_per_gateway_peer_kib"));
    row("  live heap per browser stand-in peer (full ICE), KiB", &|l| get(l, "mem", "heap_per_browser_peer_kib"));
    row("  pairs connected / failed", &|l| format!("{} / {}", get(l, "mem", "connected"), get(l, "mem", "failed")));
    row("  time to connect all (25 at a time), s", &|l| get(l, "mem", "connect_all_s"));
    row("threads in the process (sans-IO: 1)", &|l| get(l, "mem", "threads"));
    row("ICE restart offered by the browser: gateway answers checks under its new ufrag, then 50 RTP packets arrive", &|l| {
        format!(
            "{} ({} checks, {} / 50 packets)",
            if get(l, "restart", "ok") == "true" { "yes" } else { "NO" },
            get(l, "restart", "checks_under_new_ufrag"),
            get(l, "restart", "rtp_after_restart")
        )
    });
    row("RFC 4733: telephone-event/8000 in the answer, 6 packets (PT 101) browser → gateway as raw RTP", &|l| {
        format!(
            "{} ({} / 6)",
            if get(l, "dtmf", "ok") == "true" { "yes" } else { "NO" },
            get(l, "dtmf", "telephone_event_packets")
        )
    });
    row("certificate generation, ms (ECDSA P-256 checked in the DER)", &|l| {
        format!("{} ({})", get(l, "cert", "cert_gen_ms"), if get(l, "cert", "ecdsa_p256") == "true" { "P-256" } else { "not P-256" })
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |k: usize| args.get(k).map(String::as_str).unwrap_or("");
    let n = |default: usize| args.get(3).map(|s| s.parse().expect("N")).unwrap_or(default);
    match (arg(1), arg(2)) {
        ("report", file) => report(file),
        ("str0m", "setup") => setup(s0::Str0m::new(), "str0m", n(50)),
        ("webrtc-rs", "setup") => {
            let name = if wrs::check_interval_ms().is_some() { "webrtc-rs-tuned" } else { "webrtc-rs" };
            setup(wrs::WebrtcRs::new(), name, n(50))
        }
        ("str0m", "cpu") => cpu(s0::Str0m::new(), "str0m", n(200_000)),
        ("webrtc-rs", "cpu") => cpu(wrs::WebrtcRs::new(), "webrtc-rs", n(200_000)),
        ("udp", "cpu") => cpu_udp(n(200_000)),
        ("str0m", "mem") => mem(s0::Str0m::new(), "str0m", n(300)),
        ("webrtc-rs", "mem") => mem(wrs::WebrtcRs::new(), "webrtc-rs", n(300)),
        ("str0m", "restart") => restart(s0::Str0m::new(), "str0m"),
        ("webrtc-rs", "restart") => restart(wrs::WebrtcRs::new(), "webrtc-rs"),
        ("str0m", "dtmf") => dtmf(s0::Str0m::new(), "str0m"),
        ("webrtc-rs", "dtmf") => dtmf(wrs::WebrtcRs::new(), "webrtc-rs"),
        ("str0m", "cert") => cert("str0m", s0::Str0m::certificate_der),
        ("webrtc-rs", "cert") => cert("webrtc-rs", wrs::WebrtcRs::certificate_der),
        _ => {
            eprintln!("usage: webrtc-libs-bench (str0m|webrtc-rs) (setup|cpu|mem|cert) [N] | udp cpu [N] | report FILE");
            std::process::exit(2);
        }
    }
}
