//! rtpload: the load generator of the media capacity benchmark
//! (`scripts/bench/media.py`). It plays both ends of N concurrent G.711
//! calls through a relay and measures what the relay does to the media:
//!
//! - `rtpload gateway`: calls from a trunk through `switchboard gateway`
//!   to a device, with real SIP (`sip.rs`);
//! - `rtpload rtpengine`: the same media relayed by rtpengine, set up with
//!   its ng control protocol (`ng.rs`).
//!
//! Each call sends a 20 ms PCMU packet (172 bytes) every 20 ms each way:
//! caller → relay A port → agent, and agent → relay B port → caller. The
//! packets carry their send time; the report gives loss, one-way delay,
//! added jitter (delay minus the stream's minimum) and RFC 3550 jitter,
//! as text on stderr and as JSON (`--json`).

mod bencode;
mod media;
mod ng;
mod probe;
mod run;
mod sdp;
mod signalling;
mod sip;
mod stats;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::media::{Media, MediaConfig};
use crate::run::{Plan, Report};
use crate::signalling::Signalling;

#[derive(Parser)]
#[command(
    name = "rtpload",
    about = "Concurrent G.711 calls through a media relay: loss, delay and added jitter"
)]
struct Cli {
    #[command(subcommand)]
    system: System,
    #[command(flatten)]
    load: Load,
}

#[derive(Subcommand)]
enum System {
    /// Calls from a trunk through `switchboard gateway` to a device, over SIP/UDP.
    Gateway {
        /// The gateway's SIP UDP address.
        #[arg(long, default_value = "127.0.0.1:5560")]
        sip: SocketAddr,
        /// The dialled number; it must route to a user with a device whose
        /// contact is --device.
        #[arg(long)]
        number: String,
        /// Where the generator answers as the agent's device (the device's
        /// provisioned contact).
        #[arg(long, default_value = "127.0.0.1:6100")]
        device: SocketAddr,
    },
    /// The same media through rtpengine, set up over its ng protocol.
    Rtpengine {
        /// rtpengine's --listen-ng address.
        #[arg(long, default_value = "127.0.0.1:2223")]
        ng: SocketAddr,
    },
}

#[derive(Args)]
struct Load {
    /// Concurrent calls.
    #[arg(long, global = true, default_value_t = 50)]
    calls: u32,
    /// Seconds all calls talk once they are up.
    #[arg(long, global = true, default_value_t = 10.0)]
    duration: f64,
    /// New calls per second during the ramp.
    #[arg(long, global = true, default_value_t = 100.0)]
    rate: f64,
    /// Hang-ups per second at the end (default: 4 × --rate).
    #[arg(long, global = true)]
    hangup_rate: Option<f64>,
    /// Local address of the media and signalling sockets.
    #[arg(long, global = true, default_value = "127.0.0.1")]
    ip: Ipv4Addr,
    /// Media sockets per side (calls are spread over them; one receiver thread each).
    #[arg(long, global = true, default_value_t = 1)]
    sockets: usize,
    /// Sender tick in microseconds (20 ms is cut into 20 ms / tick send slots).
    #[arg(long, global = true, default_value_t = 500)]
    tick_us: u64,
    /// Datagrams per sendmmsg/recvmmsg call.
    #[arg(long, global = true, default_value_t = 64)]
    batch: usize,
    /// Receive by polling every this many microseconds instead of sleeping
    /// in the socket (0). A receiver asleep in its socket makes the relay's
    /// every send pay for waking it, on loopback; a polling one does not,
    /// and kernel receive timestamps keep the delays exact either way.
    #[arg(long, global = true, default_value_t = 0)]
    rx_poll_us: u64,
    /// Socket buffer size in bytes, per media socket and direction.
    #[arg(long, global = true, default_value_t = 16 << 20)]
    buffer: usize,
    /// Milliseconds to wait for packets in flight after the last one is sent.
    #[arg(long, global = true, default_value_t = 1000)]
    drain_ms: u64,
    /// Seconds to wait for the last calls to come up.
    #[arg(long, global = true, default_value_t = 35)]
    setup_timeout: u64,
    /// Seconds between progress lines on stderr (0: none).
    #[arg(long, global = true, default_value_t = 5)]
    progress: u64,
    /// Write the report as JSON to this file ("-": stdout).
    #[arg(long, global = true)]
    json: Option<String>,
}

fn bind_signalling(addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    let s = UdpSocket::bind(addr)
        .with_context(|| format!("cannot bind the signalling socket {addr}; is the port taken?"))?;
    s.set_nonblocking(true)?;
    Ok(s)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let load = &cli.load;
    anyhow::ensure!(
        load.calls > 0 && load.rate > 0.0 && load.duration >= 0.0,
        "--calls and --rate must be positive"
    );
    anyhow::ensure!(
        (100..=20_000).contains(&load.tick_us),
        "--tick-us must be between 100 and 20000"
    );
    let media = Media::bind(
        load.ip,
        MediaConfig {
            sockets: load.sockets,
            tick: Duration::from_micros(load.tick_us),
            batch: load.batch,
            rx_poll: Duration::from_micros(load.rx_poll_us),
            buffer_bytes: load.buffer,
        },
    )
    .context("cannot bind the media sockets")?;
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        % 1_000_000;
    let (caller, agent) = (
        Box::new(media.caller_addrs()),
        Box::new(media.agent_addrs()),
    );
    let (name, mut signalling, sockets): (&str, Box<dyn Signalling>, Vec<UdpSocket>) =
        match &cli.system {
            System::Gateway {
                sip,
                number,
                device,
            } => {
                let trunk = bind_signalling(SocketAddr::new(load.ip.into(), 0))?;
                let dev = bind_signalling(*device)?;
                let s = sip::GatewaySip::new(
                    *sip,
                    trunk.local_addr()?,
                    dev.local_addr()?,
                    number.clone(),
                    run_id,
                    caller,
                    agent,
                );
                ("gateway", Box::new(s), vec![trunk, dev])
            }
            System::Rtpengine { ng } => {
                let s = ng::RtpengineNg::new(*ng, run_id, caller, agent);
                (
                    "rtpengine",
                    Box::new(s),
                    vec![bind_signalling(SocketAddr::new(load.ip.into(), 0))?],
                )
            }
        };
    anyhow::ensure!(
        sockets.len() == signalling.sockets(),
        "signalling socket count mismatch"
    );
    let plan = Plan {
        calls: load.calls,
        rate: load.rate,
        duration: Duration::from_secs_f64(load.duration),
        hangup_rate: load.hangup_rate.unwrap_or(load.rate * 4.0),
        drain: Duration::from_millis(load.drain_ms),
        setup_timeout: Duration::from_secs(load.setup_timeout),
        progress: Duration::from_secs(load.progress),
    };
    let report = run::run(name, &plan, signalling.as_mut(), &sockets, media)?;
    eprint!("{}", text(&report));
    if let Some(path) = &load.json {
        let json = serde_json::to_string_pretty(&report)?;
        if path == "-" {
            println!("{json}");
        } else {
            std::fs::write(path, json + "\n").with_context(|| format!("cannot write {path}"))?;
        }
    }
    Ok(())
}

/// The report as a few lines of text.
fn text(r: &Report) -> String {
    let m = &r.media;
    let mut out = format!(
        "{}: {} of {} calls up ({} failed, {} dropped), setup p50/p99 {:.1}/{:.1} ms; held {:.1} s\n",
        r.system, r.calls_up, r.calls, r.setup_failed, r.dropped, r.setup_ms.p50, r.setup_ms.p99, r.duration_s
    );
    for (reason, n) in r.failure_reasons.iter().take(5) {
        out += &format!("  {n}x {reason}\n");
    }
    out += &format!(
        "packets: {} sent, {} received, {} lost ({:.4} %), {} streams with loss (worst {:.2} %), {} duplicates, {} foreign\n",
        m.sent, m.received, m.lost, m.loss_pct, m.streams_with_loss, m.worst_stream_loss_pct, m.duplicates, m.foreign
    );
    out += &format!(
        "one-way delay p50/p99/max {:.0}/{:.0}/{:.0} µs; added jitter p50/p99/p99.9/max {:.0}/{:.0}/{:.0}/{:.0} µs; RFC 3550 jitter p50/p99 across streams {:.0}/{:.0} µs\n",
        m.delay_us.p50, m.delay_us.p99, m.delay_us.max, m.added_jitter_us.p50, m.added_jitter_us.p99, m.added_jitter_us.p999,
        m.added_jitter_us.max, m.rfc3550_jitter_us.p50, m.rfc3550_jitter_us.p99
    );
    out += &format!(
        "throughput: {:.0} packets/s sent, {:.0} received ({:.1} Mbit/s relayed); generator CPU {:.0} % of a core, send lateness p99/max {:.0}/{:.0} µs, {} send errors\n",
        r.sent_pps, r.received_pps, r.relayed_mbit_s, r.generator.cpu_pct, r.generator.send_lateness_us.p99,
        r.generator.send_lateness_us.max, r.generator.send_errors
    );
    if m.clock_steps > 0 {
        out += &format!("warning: {} packets arrived before they were sent: the wall clock was stepped during the run\n", m.clock_steps);
    }
    out
}
