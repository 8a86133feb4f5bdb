//! SIPp as the carrier placing calls and as the agent's desk phone.
//!
//! The carrier side runs SIPp's built-in `uac_pcap` scenario: INVITE with a
//! PCMA offer, ACK, about 7 s of recorded speech from `g711a.pcap`, an RFC
//! 2833 digit, BYE after 9 s. The phone side runs the built-in `uas`
//! scenario with `-rtp_echo`, so whatever the gateway sends it comes back:
//! both directions of the call carry audio.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::Context as _;

use crate::ports::{free_udp_range, LOCALHOST};
use crate::process::Process;
use crate::{env, eventually, TestContext};

/// Where Debian's sip-tester package keeps the pcap files the built-in
/// scenarios play (they refer to them as `pcap/<file>`).
pub const PCAP_DIR: &str = "/usr/share/sip-tester";

/// How many UDP ports a SIPp instance gets for media: its RTP port, RTCP,
/// and the echo's second pair two above.
const MEDIA_PORTS: u16 = 8;

/// The scenario files of the repository (`tests/sipp/`).
pub fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sipp")
}

/// A scenario for a SIPp run.
#[derive(Debug, Clone)]
pub enum Scenario {
    /// One of SIPp's built-in scenarios (`-sn`), e.g. `uac_pcap`.
    Builtin(&'static str),
    /// A scenario file (`-sf`), e.g. one of [`scenario_dir`].
    File(PathBuf),
}

impl Scenario {
    fn name(&self) -> String {
        match self {
            Scenario::Builtin(name) => (*name).to_owned(),
            Scenario::File(path) => path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        }
    }
}

/// The working directory of one SIPp run: `pcap` links to the packaged
/// pcap files, and SIPp's message and error traces land here.
fn workdir(ctx: &TestContext, label: &str) -> anyhow::Result<PathBuf> {
    let dir = ctx.subdir(&format!("sipp-{label}"))?;
    let link = dir.join("pcap");
    if !link.exists() {
        if !Path::new(PCAP_DIR).join("g711a.pcap").is_file() {
            anyhow::bail!("{PCAP_DIR}/g711a.pcap is missing: install Debian's sip-tester (`scripts/test` does)");
        }
        std::os::unix::fs::symlink(PCAP_DIR, &link).context("linking ./pcap to the sip-tester pcap files")?;
    }
    Ok(dir)
}

/// Arguments every SIPp run gets: loopback addresses, its own ports, no
/// terminal, traces of every message and of unexpected ones.
fn base_command(ctx: &TestContext, label: &str, scenario: &Scenario, sip_port: u16, media_port: u16) -> anyhow::Result<Command> {
    let bin = env::required_program(env::SIPP_BIN)?;
    let dir = workdir(ctx, label)?;
    let messages = dir.join("messages.log");
    let errors = dir.join("errors.log");
    ctx.register_log(&format!("sipp {label} messages"), messages.clone());
    ctx.register_log(&format!("sipp {label} unexpected messages"), errors.clone());
    let mut command = Command::new(bin);
    command.current_dir(&dir);
    match scenario {
        Scenario::Builtin(name) => command.arg("-sn").arg(name),
        Scenario::File(path) => command.arg("-sf").arg(path),
    };
    command
        .arg("-i")
        .arg(LOCALHOST.to_string())
        .arg("-p")
        .arg(sip_port.to_string())
        .arg("-mi")
        .arg(LOCALHOST.to_string())
        .arg("-mp")
        .arg(media_port.to_string())
        .arg("-nostdin")
        .arg("-trace_msg")
        .arg("-message_file")
        .arg(&messages)
        .arg("-trace_err")
        .arg("-error_file")
        .arg(&errors);
    Ok(command)
}

/// A UDP port that was free a moment ago.
fn free_sip_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind((LOCALHOST, 0))?.local_addr()?.port())
}

fn udp_port_taken(port: u16) -> bool {
    UdpSocket::bind((LOCALHOST, port)).is_err()
}

/// A SIPp user agent server running in the background: the agent's phone.
pub struct Uas {
    process: Process,
    sip_port: u16,
    media_port: u16,
}

impl Uas {
    /// Starts the built-in `uas` scenario with RTP echo on its own ports and
    /// waits until it listens for SIP and RTP.
    pub async fn start(ctx: &TestContext, label: &str) -> anyhow::Result<Self> {
        Self::start_scenario(ctx, label, Scenario::Builtin("uas")).await
    }

    /// Starts a server-side `scenario` (echoing RTP) on its own ports and
    /// waits until it listens for SIP and RTP.
    pub async fn start_scenario(ctx: &TestContext, label: &str, scenario: Scenario) -> anyhow::Result<Self> {
        let sip_port = free_sip_port()?;
        let media_port = free_udp_range(MEDIA_PORTS)?;
        let mut command = base_command(ctx, label, &scenario, sip_port, media_port)?;
        command.arg("-rtp_echo");
        let mut process = Process::spawn(ctx, &format!("sipp {label}"), command)?;
        eventually(&format!("sipp {label} to bind its SIP and RTP ports"), Duration::from_secs(20), || {
            let bound = process.ensure_running().map(|_| udp_port_taken(sip_port) && udp_port_taken(media_port));
            async move { bound.map(|b| b.then_some(())) }
        })
        .await?;
        Ok(Self { process, sip_port, media_port })
    }

    /// The SIP URI of this phone, as a device contact.
    pub fn contact(&self) -> String {
        format!("sip:agent@{LOCALHOST}:{}", self.sip_port)
    }

    pub fn sip_port(&self) -> u16 {
        self.sip_port
    }

    pub fn media_port(&self) -> u16 {
        self.media_port
    }

    /// The phone's process, to check it is still alive.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// Outcome of a finished SIPp client run.
#[derive(Debug)]
pub struct UacRun {
    pub status: ExitStatus,
    /// SIPp's trace of every message it sent and received.
    pub messages: String,
}

impl UacRun {
    /// SIPp exits 0 only when every call of the run followed the scenario
    /// to its end.
    pub fn succeeded(&self) -> bool {
        self.status.success()
    }
}

/// Places `calls` calls to `service` (the dialled number) at `target` with
/// `scenario`, waits for SIPp to finish, and returns how it ended. SIPp
/// gives up after `timeout` and then exits non-zero.
pub async fn uac(
    ctx: &TestContext,
    label: &str,
    scenario: Scenario,
    service: &str,
    target: SocketAddr,
    calls: u32,
    timeout: Duration,
) -> anyhow::Result<UacRun> {
    let sip_port = free_sip_port()?;
    let media_port = free_udp_range(MEDIA_PORTS)?;
    let mut command = base_command(ctx, label, &scenario, sip_port, media_port)?;
    command
        .arg("-s")
        .arg(service)
        .arg("-m")
        .arg(calls.to_string())
        .arg("-timeout")
        .arg(format!("{}s", timeout.as_secs().max(1)))
        .arg("-timeout_error")
        .arg(target.to_string());
    let mut process = Process::spawn(ctx, &format!("sipp {label} ({})", scenario.name()), command)?;
    // SIPp enforces its own timeout; the extra margin covers its start-up.
    let status = process.wait(timeout + Duration::from_secs(15)).await?;
    let messages = std::fs::read_to_string(ctx.dir().join(format!("sipp-{label}")).join("messages.log")).unwrap_or_default();
    Ok(UacRun { status, messages })
}

/// Length of the RTP stream in a pcap file: time between its first and its
/// last packet. Used to know how much speech `uac_pcap` sends.
pub fn pcap_span(path: &Path) -> anyhow::Result<Duration> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(data.len() >= 24, "{} is too short for a pcap file", path.display());
    let magic = u32::from_le_bytes(data[0..4].try_into()?);
    let (little, nanos) = match magic {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        _ => anyhow::bail!("{} is not a pcap file (magic {magic:#x})", path.display()),
    };
    let word = |at: usize| -> u32 {
        let bytes: [u8; 4] = data[at..at + 4].try_into().expect("4 bytes");
        if little {
            u32::from_le_bytes(bytes)
        } else {
            u32::from_be_bytes(bytes)
        }
    };
    let mut offset = 24;
    let (mut first, mut last) = (None, 0u128);
    while offset + 16 <= data.len() {
        let fraction = word(offset + 4) as u128;
        let at = word(offset) as u128 * 1_000_000_000 + if nanos { fraction } else { fraction * 1_000 };
        first.get_or_insert(at);
        last = at;
        offset += 16 + word(offset + 8) as usize;
    }
    let first = first.with_context(|| format!("{} holds no packets", path.display()))?;
    Ok(Duration::from_nanos((last - first) as u64))
}
