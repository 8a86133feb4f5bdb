//! webrtcload: the load client of the browser-calls benchmark
//! (`scripts/bench/browser-calls.py`). N "browsers" (str0m peers, full ICE,
//! each on its own UDP socket, driven by a few media threads) place calls
//! to outside numbers, through Switchboard's agent API or through Janus's
//! SIP plugin, to a built-in G.711 far end (a SIP UAS answering PCMU only)
//! or to SIPp echoing. Every endpoint sends a 20 ms packet every 20 ms;
//! the report gives calls up, packets sent and received each way, loss,
//! jitter and CPU per measurement window, as text on stderr and as JSON.
//!
//! - `webrtcload provision`: users and sessions in the gateway's database
//!   (before it starts), written to a JSON file for `switchboard`.
//! - `webrtcload switchboard`: calls through `switchboard gateway`.
//! - `webrtcload janus`: calls through Janus (HTTP API, janus.plugin.sip).

mod audio;
mod browser;
mod farend;
mod janus;
mod media;
mod run;
mod stats;
mod switchboard;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::browser::{Browsers, Codec};
use crate::media::{Audio, MediaPool};

#[derive(Parser)]
#[command(name = "webrtcload", about = "Concurrent browser (WebRTC) calls to a G.711 far end through Switchboard or Janus: loss, jitter, CPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates agents (a user and a session each) in the gateway's
    /// database and makes --main-line the company main line.
    Provision {
        /// The gateway's database URL, e.g. sqlite:///tmp/x/data/switchboard.db.
        #[arg(long)]
        db: String,
        /// The gateway's auth.token_key (32 bytes, base64).
        #[arg(long)]
        token_key: String,
        #[arg(long, default_value_t = 300)]
        agents: usize,
        /// The caller ID every agent presents.
        #[arg(long, default_value = "+14155550100")]
        main_line: String,
        /// Where the agents go (JSON).
        #[arg(long)]
        out: String,
    },
    /// Calls through Switchboard: each agent's page registers, places its
    /// call with POST /v1/calls and answers the gateway's WebRTC offer.
    Switchboard {
        /// The gateway's HTTP base URL.
        #[arg(long)]
        http: String,
        /// The agents file of `provision`.
        #[arg(long)]
        agents: String,
        #[command(flatten)]
        load: Load,
    },
    /// Calls through Janus's SIP plugin (HTTP API), each browser a guest
    /// calling sip:<number>@<far end>.
    Janus {
        /// Janus's HTTP API.
        #[arg(long, default_value = "http://127.0.0.1:8088/janus")]
        janus: String,
        #[command(flatten)]
        load: Load,
    },
}

#[derive(Args)]
struct Load {
    /// Calls at the end of the ramp (one agent each).
    #[arg(long, default_value_t = 300)]
    calls: usize,
    /// The ramp's step: each step's calls are measured for --step-hold once up.
    #[arg(long, default_value_t = 50)]
    step: usize,
    /// New calls per second during the ramp.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Seconds each intermediate step is measured.
    #[arg(long, default_value_t = 10.0)]
    step_hold: f64,
    /// Seconds the last step (all calls) is held and measured.
    #[arg(long, default_value_t = 60.0)]
    hold: f64,
    /// The only codec the browsers speak.
    #[arg(long, value_enum, default_value_t = Codec::Opus)]
    codec: Codec,
    /// Media threads (each drives its share of the endpoints).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Address of the browsers' sockets.
    #[arg(long, default_value = "127.0.0.1")]
    ip: IpAddr,
    /// The far end's SIP address: the built-in far end listens there (or,
    /// with --echo, SIPp does).
    #[arg(long, default_value = "127.0.0.1:5090")]
    far_end: SocketAddr,
    /// The far end is SIPp echoing (`-rtp_echo`), not the built-in one:
    /// loss is then the round trip, seen by the browsers.
    #[arg(long)]
    echo: bool,
    /// Dialled numbers are this prefix and the call's index in four digits.
    #[arg(long, default_value = "+1212555")]
    to_prefix: String,
    /// A call not up this many seconds after it was placed has failed.
    #[arg(long, default_value_t = 20)]
    setup_timeout: u64,
    /// Milliseconds for packets in flight after the senders stop.
    #[arg(long, default_value_t = 1000)]
    drain_ms: u64,
    /// Milliseconds the senders pause at each window's edges, so that no
    /// packet is in flight when the counters are read.
    #[arg(long, default_value_t = 300)]
    pause_ms: u64,
    /// Pass: loss below this (%) in each direction.
    #[arg(long, default_value_t = 0.1)]
    loss: f64,
    /// Second verdict: added jitter p99 below this (ms) each way as well.
    #[arg(long, default_value_t = 50.0)]
    jitter_ms: f64,
    /// The relay's process, whose CPU each window reports.
    #[arg(long)]
    watch_pid: Option<u32>,
    /// HTTP requests in flight at once while opening pages and hanging up.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<String>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (target, load) = match cli.command {
        Command::Provision { db, token_key, agents, main_line, out } => {
            let a = switchboard::provision(&db, &token_key, agents, &main_line, Duration::from_secs(7 * 24 * 3600)).await?;
            std::fs::write(&out, serde_json::to_string(&a)?).with_context(|| format!("writing {out}"))?;
            eprintln!("{} agents in {out}", a.len());
            return Ok(());
        }
        Command::Switchboard { http, agents: path, load } => {
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
            let agents: Vec<switchboard::Agent> = serde_json::from_str(&text)?;
            anyhow::ensure!(agents.len() >= load.calls, "{} agents in {path}, fewer than --calls {}", agents.len(), load.calls);
            (run::Target::Switchboard { base: http.trim_end_matches('/').to_owned(), agents }, load)
        }
        Command::Janus { janus, load } => (run::Target::Janus { base: janus.trim_end_matches('/').to_owned() }, load),
    };
    anyhow::ensure!(load.calls > 0 && load.calls <= 10_000, "--calls must be 1 to 10000 (the dialled number carries the call in four digits)");
    let audio = match load.codec {
        Codec::Opus => Audio { frames: Arc::new(audio::opus_frames(audio::OpusTarget::default())?.into_iter().map(Arc::from).collect()), samples: 960 },
        Codec::Pcmu => Audio { frames: Arc::new(audio::pcmu_frames().into_iter().map(Arc::from).collect()), samples: 160 },
    };
    let browsers = Browsers::new(load.codec, load.ip, audio)?;
    let media = Arc::new(MediaPool::start(load.threads, Instant::now()));
    let plan = run::Plan {
        calls: load.calls,
        step: load.step,
        rate: load.rate,
        step_hold: Duration::from_secs_f64(load.step_hold),
        hold: Duration::from_secs_f64(load.hold),
        setup_timeout: Duration::from_secs(load.setup_timeout),
        drain: Duration::from_millis(load.drain_ms),
        pause: Duration::from_millis(load.pause_ms),
        loss_limit_pct: load.loss,
        jitter_limit_ms: load.jitter_ms,
        far_end: load.far_end,
        echo: load.echo,
        to_prefix: load.to_prefix.clone(),
        watch_pid: load.watch_pid,
        concurrency: load.concurrency,
    };
    let report = run::run(target, plan, browsers, media.clone(), load.threads).await?;
    let t = &report.totals;
    eprintln!(
        "{}: {} of {} calls up; totals: browser→far end {} sent {} received ({:.4} %), far end→browser {} sent {} received ({:.4} %); first failing step: {}",
        report.target,
        report.calls_up,
        report.calls,
        t.to_far.sent,
        t.to_far.received,
        t.to_far.loss_pct,
        t.to_browser.sent,
        t.to_browser.received,
        t.to_browser.loss_pct,
        report.first_failing_step.map_or("none".into(), |s| s.to_string())
    );
    for (why, n) in report.failures.iter().take(5) {
        eprintln!("  {n}x {why}");
    }
    if let Some(path) = &load.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n").with_context(|| format!("writing {path}"))?;
    }
    if let Ok(media) = Arc::try_unwrap(media) {
        media.stop();
    }
    Ok(())
}
