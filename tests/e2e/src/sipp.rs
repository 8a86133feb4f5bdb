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
fn base_command(
    ctx: &TestContext,
    label: &str,
    scenario: &Scenario,
    sip_port: u16,
    media_port: u16,
) -> anyhow::Result<Command> {
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
    free_udp_range(LOCALHOST.into(), 1)
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
        Self::start_scenario(ctx, label, Scenario::Builtin("uas"), true).await
    }

    /// Starts a server-side `scenario` on its own ports, echoing RTP if
    /// `echo`, and waits until it listens for SIP and RTP.
    pub async fn start_scenario(
        ctx: &TestContext,
        label: &str,
        scenario: Scenario,
        echo: bool,
    ) -> anyhow::Result<Self> {
        let sip_port = free_sip_port()?;
        let media_port = free_udp_range(LOCALHOST.into(), MEDIA_PORTS)?;
        let mut command = base_command(ctx, label, &scenario, sip_port, media_port)?;
        if echo {
            command.arg("-rtp_echo");
        }
        let mut process = Process::spawn(ctx, &format!("sipp {label}"), command)?;
        eventually(&format!("sipp {label} to bind its SIP and RTP ports"), Duration::from_secs(20), || {
            let bound =
                process.ensure_running().map(|_| udp_port_taken(sip_port) && (!echo || udp_port_taken(media_port)));
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
    uac_with(ctx, label, scenario, service, target, calls, timeout, &[]).await
}

/// [`uac`] with more SIPp arguments (e.g. `-d 20000`, the pause of
/// `carrier_uac_long_call.xml`).
#[allow(clippy::too_many_arguments)]
pub async fn uac_with(
    ctx: &TestContext,
    label: &str,
    scenario: Scenario,
    service: &str,
    target: SocketAddr,
    calls: u32,
    timeout: Duration,
    extra: &[&str],
) -> anyhow::Result<UacRun> {
    let sip_port = free_sip_port()?;
    let media_port = free_udp_range(LOCALHOST.into(), MEDIA_PORTS)?;
    let mut command = base_command(ctx, label, &scenario, sip_port, media_port)?;
    command
        .arg("-s")
        .arg(service)
        .arg("-m")
        .arg(calls.to_string())
        .arg("-timeout")
        .arg(format!("{}s", timeout.as_secs().max(1)))
        .arg("-timeout_error")
        .args(extra)
        .arg(target.to_string());
    let mut process = Process::spawn(ctx, &format!("sipp {label} ({})", scenario.name()), command)?;
    // SIPp enforces its own timeout; the extra margin covers its start-up.
    let status = process.wait(timeout + Duration::from_secs(15)).await?;
    let messages =
        std::fs::read_to_string(ctx.dir().join(format!("sipp-{label}")).join("messages.log")).unwrap_or_default();
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

/// Writes a pcap file of one RTP stream (PCMU, 20 ms packets) carrying a
/// sine tone of `frequency` Hz for `duration`, for SIPp's
/// `play_pcap_audio`. A party that plays a tone is told apart from one that
/// talks or echoes: the test can then check which channel of a recording
/// holds whom.
pub fn write_tone_pcap(path: &Path, frequency: f64, duration: Duration) -> anyhow::Result<()> {
    const RATE: f64 = 8_000.0;
    const SAMPLES_PER_PACKET: usize = 160;
    const AMPLITUDE: f64 = 8_000.0;
    let packets = (duration.as_millis() / 20) as usize;
    let mut out = Vec::with_capacity(24 + packets * 230);
    // Global header: magic, version 2.4, zone 0, accuracy 0, snaplen, Ethernet.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for n in 0..packets {
        let mut payload = Vec::with_capacity(12 + SAMPLES_PER_PACKET);
        payload.extend_from_slice(&[0x80, 0x00]); // RTP v2, payload type 0 (PCMU)
        payload.extend_from_slice(&(n as u16).to_be_bytes());
        payload.extend_from_slice(&((n * SAMPLES_PER_PACKET) as u32).to_be_bytes());
        payload.extend_from_slice(&0x5eed_70e5u32.to_be_bytes());
        for i in 0..SAMPLES_PER_PACKET {
            let t = (n * SAMPLES_PER_PACKET + i) as f64 / RATE;
            let sample = (AMPLITUDE * (2.0 * std::f64::consts::PI * frequency * t).sin()) as i16;
            payload.push(mulaw_encode(sample));
        }
        let udp_len = 8 + payload.len();
        let ip_len = 20 + udp_len;
        let mut frame = Vec::with_capacity(14 + ip_len);
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1];
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        let checksum = ipv4_checksum(&ip);
        ip[10..12].copy_from_slice(&checksum.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&40_000u16.to_be_bytes());
        frame.extend_from_slice(&40_002u16.to_be_bytes());
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&0u16.to_be_bytes()); // no UDP checksum
        frame.extend_from_slice(&payload);
        let at_us = n as u64 * 20_000;
        out.extend_from_slice(&((at_us / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((at_us % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// G.711 μ-law encoding of one 16-bit sample (ITU-T G.711, with the bias of
/// 0x84 and the segment search over the biased magnitude).
fn mulaw_encode(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32_635;
    let mut value = sample as i32;
    let sign = if value < 0 {
        value = -value;
        0x80
    } else {
        0x00
    };
    let biased = value.min(CLIP) + BIAS;
    let exponent = (7 - (biased.leading_zeros() as i32 - 17)).clamp(0, 7);
    let mantissa = (biased >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]) as u32).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Where a server scenario that plays `tone.pcap` finds it: the working
/// directory of the SIPp instance labelled `label`.
pub fn tone_pcap_path(ctx: &TestContext, label: &str) -> anyhow::Result<PathBuf> {
    Ok(workdir(ctx, label)?.join("tone.pcap"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// G.711 μ-law decoding, the inverse of [`mulaw_encode`].
    fn mulaw_decode(code: u8) -> i16 {
        let code = !code;
        let exponent = ((code >> 4) & 0x07) as i32;
        let mantissa = (code & 0x0f) as i32;
        let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
        (if code & 0x80 != 0 { -magnitude } else { magnitude }) as i16
    }

    #[test]
    fn mulaw_round_trips_within_its_quantisation_step() {
        for sample in (-32_000i32..32_000).step_by(37) {
            let decoded = mulaw_decode(mulaw_encode(sample as i16)) as i32;
            // The step grows with the segment: 1/16 of the magnitude at most.
            let tolerance = (sample.abs() / 16).max(8);
            assert!((decoded - sample).abs() <= tolerance, "{sample} came back as {decoded}");
        }
        assert_eq!(mulaw_encode(0), 0xff);
    }

    #[test]
    fn tone_pcap_spans_its_duration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tone.pcap");
        write_tone_pcap(&path, 1_000.0, Duration::from_secs(2)).unwrap();
        let span = pcap_span(&path).unwrap();
        assert_eq!(span, Duration::from_millis(1_980));
    }
}
