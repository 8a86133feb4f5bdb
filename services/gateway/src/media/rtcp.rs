//! RTCP (RFC 3550 §6): the codec for sender and receiver reports, SDES
//! CNAME and BYE, the round-trip time reports carry, and [`RtcpSession`],
//! the RTCP of one leg: when to report, what to report about the stream we
//! receive and the one we send, and what the peer's reports tell about
//! our stream.
//!
//! Sans-IO and defensive: a packet that does not parse yields an error,
//! never a panic; unknown packet types in a compound packet are skipped.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::quality::{leg_mos, Reception, ReceptionReport};
use super::stream::SendStats;

/// One reception report block (§6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: u32,
    /// Fraction lost since the last report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed).
    pub cumulative_lost: i32,
    pub highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received (0: none).
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

/// Sender information of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    pub ntp: u64,
    pub rtp_timestamp: u32,
    pub packets: u32,
    pub octets: u32,
}

/// A sender or receiver report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub ssrc: u32,
    /// Present in a sender report.
    pub sender: Option<SenderInfo>,
    pub blocks: Vec<ReportBlock>,
}

/// Why bytes are not RTCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtcpError {
    #[error("shorter than an RTCP header")]
    Short,
    #[error("RTCP version is not 2")]
    Version,
    #[error("length field runs past the datagram")]
    Length,
    #[error("report count does not fit the packet")]
    Count,
}

const SR: u8 = 200;
const RR: u8 = 201;
const SDES: u8 = 202;
const BYE: u8 = 203;
/// SDES item type of the canonical name.
const CNAME: u8 = 1;

/// One chunk of an SDES packet: a source and its canonical name, if the
/// chunk carries one (other items are skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdesChunk {
    pub ssrc: u32,
    pub cname: Option<String>,
}

/// A BYE packet: the sources leaving, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bye {
    pub ssrcs: Vec<u32>,
    pub reason: Option<String>,
}

/// One packet of a compound RTCP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Report(Report),
    Sdes(Vec<SdesChunk>),
    Bye(Bye),
    /// APP, feedback, XR and anything else, by packet type.
    Other(u8),
}

/// The SR and RR packets of a compound RTCP datagram, in order.
pub fn parse(buf: &[u8]) -> Result<Vec<Report>, RtcpError> {
    Ok(parse_compound(buf)?
        .into_iter()
        .filter_map(|p| match p {
            Packet::Report(r) => Some(r),
            _ => None,
        })
        .collect())
}

/// Every packet of a compound RTCP datagram, in order. The framing (version,
/// lengths) and report counts must be right; SDES and BYE contents are read
/// leniently, keeping what is well formed.
pub fn parse_compound(mut buf: &[u8]) -> Result<Vec<Packet>, RtcpError> {
    let mut out = Vec::new();
    if buf.len() < 4 {
        return Err(RtcpError::Short);
    }
    while !buf.is_empty() {
        if buf.len() < 4 {
            return Err(RtcpError::Short);
        }
        if buf[0] >> 6 != 2 {
            return Err(RtcpError::Version);
        }
        let count = (buf[0] & 0x1f) as usize;
        let kind = buf[1];
        let len = (u16::from_be_bytes([buf[2], buf[3]]) as usize + 1) * 4;
        if len > buf.len() {
            return Err(RtcpError::Length);
        }
        let packet = &buf[..len];
        out.push(match kind {
            SR | RR => Packet::Report(report(kind, count, packet)?),
            SDES => Packet::Sdes(sdes(count, packet)),
            BYE => Packet::Bye(bye(count, packet)),
            other => Packet::Other(other),
        });
        buf = &buf[len..];
    }
    Ok(out)
}

fn report(kind: u8, count: usize, p: &[u8]) -> Result<Report, RtcpError> {
    let u32_at = |i: usize| u32::from_be_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
    let header = if kind == SR { 28 } else { 8 };
    if p.len() < header + count * 24 {
        return Err(RtcpError::Count);
    }
    let sender = (kind == SR).then(|| SenderInfo {
        ntp: (u32_at(8) as u64) << 32 | u32_at(12) as u64,
        rtp_timestamp: u32_at(16),
        packets: u32_at(20),
        octets: u32_at(24),
    });
    let blocks = (0..count)
        .map(|i| {
            let b = header + i * 24;
            let lost = u32_at(b + 4) & 0x00ff_ffff;
            ReportBlock {
                ssrc: u32_at(b),
                fraction_lost: p[b + 4],
                cumulative_lost: ((lost << 8) as i32) >> 8,
                highest_seq: u32_at(b + 8),
                jitter: u32_at(b + 12),
                last_sr: u32_at(b + 16),
                delay_since_last_sr: u32_at(b + 20),
            }
        })
        .collect();
    Ok(Report { ssrc: u32_at(4), sender, blocks })
}

fn sdes(count: usize, p: &[u8]) -> Vec<SdesChunk> {
    let mut chunks = Vec::new();
    let mut pos = 4;
    for _ in 0..count {
        let Some(ssrc) = p.get(pos..pos + 4) else { break };
        let ssrc = u32::from_be_bytes([ssrc[0], ssrc[1], ssrc[2], ssrc[3]]);
        pos += 4;
        let mut cname = None;
        let complete = loop {
            match p.get(pos) {
                None => break false,
                Some(0) => {
                    // End of the item list; the chunk is padded to 32 bits.
                    pos = (pos + 4) & !3;
                    break true;
                }
                Some(&kind) => {
                    let Some(&len) = p.get(pos + 1) else { break false };
                    let Some(text) = p.get(pos + 2..pos + 2 + len as usize) else { break false };
                    if kind == CNAME {
                        cname = Some(String::from_utf8_lossy(text).into_owned());
                    }
                    pos += 2 + len as usize;
                }
            }
        };
        chunks.push(SdesChunk { ssrc, cname });
        if !complete {
            break;
        }
    }
    chunks
}

fn bye(count: usize, p: &[u8]) -> Bye {
    let ssrcs: Vec<u32> = p[4..]
        .chunks_exact(4)
        .take(count)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let at = 4 + 4 * ssrcs.len();
    let reason = (ssrcs.len() == count)
        .then(|| p.get(at).and_then(|&len| p.get(at + 1..at + 1 + len as usize)))
        .flatten()
        .filter(|r| !r.is_empty())
        .map(|r| String::from_utf8_lossy(r).into_owned());
    Bye { ssrcs, reason }
}

/// Pads an RTCP packet to 32 bits and writes its header's length field.
fn finish_packet(mut p: Vec<u8>) -> Vec<u8> {
    while !p.len().is_multiple_of(4) {
        p.push(0);
    }
    let words = (p.len() / 4 - 1) as u16;
    p[2..4].copy_from_slice(&words.to_be_bytes());
    p
}

/// Writes an SDES packet with one chunk: our SSRC and CNAME (cut to the
/// 255 bytes an item holds).
pub fn build_sdes(ssrc: u32, cname: &str) -> Vec<u8> {
    let mut text = &cname.as_bytes()[..cname.len().min(255)];
    while std::str::from_utf8(text).is_err() {
        text = &text[..text.len() - 1];
    }
    let mut p = vec![0x81, SDES, 0, 0];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.push(CNAME);
    p.push(text.len() as u8);
    p.extend_from_slice(text);
    p.push(0); // end of items; at least one null octet
    finish_packet(p)
}

/// Writes a BYE packet for our SSRC, with an optional reason (cut to 255
/// bytes).
pub fn build_bye(ssrc: u32, reason: Option<&str>) -> Vec<u8> {
    let mut p = vec![0x81, BYE, 0, 0];
    p.extend_from_slice(&ssrc.to_be_bytes());
    if let Some(reason) = reason.filter(|r| !r.is_empty()) {
        let mut text = &reason.as_bytes()[..reason.len().min(255)];
        while std::str::from_utf8(text).is_err() {
            text = &text[..text.len() - 1];
        }
        p.push(text.len() as u8);
        p.extend_from_slice(text);
    }
    finish_packet(p)
}

/// Writes a report: an SR when `sender` is given, an RR otherwise. At most
/// 31 blocks fit one packet; more are left out.
pub fn build(report: &Report) -> Vec<u8> {
    let blocks = &report.blocks[..report.blocks.len().min(31)];
    let header = if report.sender.is_some() { 28 } else { 8 };
    let len = header + blocks.len() * 24;
    let mut out = Vec::with_capacity(len);
    out.push(0x80 | blocks.len() as u8);
    out.push(if report.sender.is_some() { SR } else { RR });
    out.extend_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
    out.extend_from_slice(&report.ssrc.to_be_bytes());
    if let Some(s) = &report.sender {
        out.extend_from_slice(&s.ntp.to_be_bytes());
        out.extend_from_slice(&s.rtp_timestamp.to_be_bytes());
        out.extend_from_slice(&s.packets.to_be_bytes());
        out.extend_from_slice(&s.octets.to_be_bytes());
    }
    for b in blocks {
        out.extend_from_slice(&b.ssrc.to_be_bytes());
        let lost = (b.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32) & 0x00ff_ffff;
        out.extend_from_slice(&((b.fraction_lost as u32) << 24 | lost).to_be_bytes());
        out.extend_from_slice(&b.highest_seq.to_be_bytes());
        out.extend_from_slice(&b.jitter.to_be_bytes());
        out.extend_from_slice(&b.last_sr.to_be_bytes());
        out.extend_from_slice(&b.delay_since_last_sr.to_be_bytes());
    }
    out
}

/// The round trip a report block measures (§6.4.1): the arrival time's
/// middle 32 NTP bits minus LSR minus DLSR. `None` when the peer has not
/// seen an SR yet or the result is negative (clock trouble).
pub fn round_trip(block: &ReportBlock, arrival_ntp_middle: u32) -> Option<std::time::Duration> {
    if block.last_sr == 0 {
        return None;
    }
    let rtt = arrival_ntp_middle.wrapping_sub(block.last_sr).wrapping_sub(block.delay_since_last_sr);
    if rtt > 0x8000_0000 {
        return None;
    }
    Some(std::time::Duration::from_micros(rtt as u64 * 1_000_000 / 65_536))
}

/// NTP time (RFC 3550 §4: seconds since 1900 in the high 32 bits, the
/// fraction in the low 32) of a wall-clock time.
pub fn ntp_time(t: SystemTime) -> u64 {
    const UNIX_TO_NTP: u64 = 2_208_988_800;
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (since.as_secs() + UNIX_TO_NTP) << 32 | ntp_fraction(since.subsec_nanos())
}

fn ntp_fraction(nanos: u32) -> u64 {
    ((nanos as u64) << 32) / 1_000_000_000
}

/// A duration in NTP units (1/2^32 s).
fn ntp_units(d: Duration) -> u64 {
    (d.as_secs() << 32) + ntp_fraction(d.subsec_nanos())
}

/// The minimum report interval of RFC 3550 §6.2; a two-party call's RTCP
/// bandwidth share never asks for a longer one.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// A randomised report interval (§6.3.1): `base` × uniform(0.5, 1.5). The
/// division by e − 3/2 compensates timer reconsideration, which a session
/// of two fixed members does not do, so it is left out.
fn randomized(base: Duration) -> Duration {
    base.mul_f64(rand::random_range(0.5..1.5))
}

/// What the peer's receiver reports say about the stream we send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RemoteReception {
    /// Fraction of our packets lost since the peer's previous report.
    pub fraction_lost: f64,
    /// Packets of ours lost since the stream began, as the peer counts.
    pub cumulative_lost: i32,
    /// Interarrival jitter the peer sees on our stream.
    pub jitter: Duration,
    pub highest_seq: u32,
}

/// Quality of one leg, both ways.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LegQuality {
    /// Round trip from the peer's reports about our SRs.
    pub rtt: Option<Duration>,
    /// What we receive from the peer: loss and jitter.
    pub local: ReceptionReport,
    /// What the peer receives from us, once it has reported.
    pub remote: Option<RemoteReception>,
    /// The E-model MOS of the worse direction, with the round trip's delay.
    pub mos: f64,
}

/// What an incoming RTCP datagram meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// Reports, SDES and the like were taken in; see [`RtcpSession::quality`].
    Reports,
    /// The peer's source left (BYE), with its reason if it gave one.
    Bye { reason: Option<String> },
    /// Not RTCP or badly framed: counted and ignored.
    Malformed(RtcpError),
}

/// The RTCP of one leg (RFC 3550 §6): the stream the peer sends us and the
/// one we send it ([`super::stream::OutStream`]), under our SSRC and CNAME.
///
/// Feed it every RTP packet received ([`on_rtp`](Self::on_rtp)) and every
/// RTCP datagram ([`on_rtcp`](Self::on_rtcp)); at
/// [`next_report_at`](Self::next_report_at) send
/// [`build_report`](Self::build_report). The round trip is measured against
/// our own SR times on the monotonic clock, so the wall clock only has to
/// be right in the reports we write.
#[derive(Debug, Clone)]
pub struct RtcpSession {
    ssrc: u32,
    cname: String,
    clock_rate: u32,
    epoch: Instant,
    reception: Reception,
    /// (SSRC, expected, received) at our previous report, for the fraction
    /// lost per interval (A.3).
    prior: (Option<u32>, u64, u64),
    /// The peer's newest SR: middle 32 NTP bits, and when it arrived.
    peer_sr: Option<(u32, Instant)>,
    peer_ssrc: Option<u32>,
    peer_cname: Option<String>,
    /// Our newest SRs: NTP time and when sent.
    our_srs: VecDeque<(u64, Instant)>,
    packets_at_last_report: u64,
    next_report: Instant,
    rtt: Option<Duration>,
    remote: Option<RemoteReception>,
    bye: Option<Option<String>>,
    malformed: u64,
}

impl RtcpSession {
    /// A session for our source `ssrc` (the leg's OutStream SSRC) named
    /// `cname`, whose media runs at `clock_rate`. The first report is due
    /// after half the usual interval (§6.2, initial).
    pub fn new(ssrc: u32, cname: impl Into<String>, clock_rate: u32, now: Instant) -> RtcpSession {
        RtcpSession {
            ssrc,
            cname: cname.into(),
            clock_rate: clock_rate.max(1),
            epoch: now,
            reception: Reception::new(clock_rate),
            prior: (None, 0, 0),
            peer_sr: None,
            peer_ssrc: None,
            peer_cname: None,
            our_srs: VecDeque::new(),
            packets_at_last_report: 0,
            next_report: now + randomized(REPORT_INTERVAL / 2),
            rtt: None,
            remote: None,
            bye: None,
            malformed: 0,
        }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The leg renegotiated to a codec with another clock rate: reception
    /// statistics restart in the new units.
    pub fn set_clock_rate(&mut self, clock_rate: u32) {
        let clock_rate = clock_rate.max(1);
        if clock_rate != self.clock_rate {
            self.clock_rate = clock_rate;
            self.reception = Reception::new(clock_rate);
            self.prior = (None, 0, 0);
        }
    }

    /// Accounts one RTP packet received from the peer.
    pub fn on_rtp(&mut self, ssrc: u32, sequence: u16, timestamp: u32, now: Instant) {
        self.reception.packet(ssrc, sequence, timestamp, now.saturating_duration_since(self.epoch));
    }

    /// When the next report is due.
    pub fn next_report_at(&self) -> Instant {
        self.next_report
    }

    /// The compound packet to send now: an SR if we sent media since the
    /// previous report (with `ntp`, the wall clock now, see [`ntp_time`]),
    /// else an RR; a report block on the peer's stream once it has sent;
    /// then SDES with our CNAME. Schedules the next report.
    pub fn build_report(&mut self, now: Instant, ntp: u64, sent: &SendStats) -> Vec<u8> {
        let report = self.report(now, ntp, sent);
        self.next_report = now + randomized(REPORT_INTERVAL);
        let kind = if report.sender.is_some() { "sr" } else { "rr" };
        metrics::counter!("switchboard_rtcp_reports_sent_total", "kind" => kind).increment(1);
        [build(&report), build_sdes(self.ssrc, &self.cname)].concat()
    }

    /// The compound packet announcing that we leave (§6.6): a last report,
    /// SDES, and BYE with `reason`.
    pub fn build_bye(&mut self, now: Instant, ntp: u64, sent: &SendStats, reason: Option<&str>) -> Vec<u8> {
        let report = self.report(now, ntp, sent);
        [build(&report), build_sdes(self.ssrc, &self.cname), build_bye(self.ssrc, reason)].concat()
    }

    fn report(&mut self, now: Instant, ntp: u64, sent: &SendStats) -> Report {
        let sender = (sent.packets > self.packets_at_last_report).then_some(SenderInfo {
            ntp,
            rtp_timestamp: sent.rtp_timestamp,
            packets: sent.packets as u32,
            octets: sent.octets as u32,
        });
        self.packets_at_last_report = sent.packets;
        if sender.is_some() {
            self.our_srs.push_back((ntp, now));
            if self.our_srs.len() > 4 {
                self.our_srs.pop_front();
            }
        }
        let blocks = self.reception_block(now).into_iter().collect();
        Report { ssrc: self.ssrc, sender, blocks }
    }

    /// The report block on the peer's stream (§6.4.1, A.3).
    fn reception_block(&mut self, now: Instant) -> Option<ReportBlock> {
        let ssrc = self.reception.ssrc()?;
        let rep = self.reception.report();
        let (prior_ssrc, prior_expected, prior_received) = self.prior;
        let (prior_expected, prior_received) = if prior_ssrc == Some(ssrc) { (prior_expected, prior_received) } else { (0, 0) };
        let expected = rep.expected.saturating_sub(prior_expected);
        let received = rep.received.saturating_sub(prior_received);
        let lost = expected as i64 - received as i64;
        let fraction_lost = if expected == 0 || lost <= 0 { 0 } else { ((lost << 8) / expected as i64).min(255) as u8 };
        self.prior = (Some(ssrc), rep.expected, rep.received);
        let (last_sr, delay_since_last_sr) = match self.peer_sr {
            Some((lsr, at)) => (lsr, (ntp_units(now.saturating_duration_since(at)) >> 16) as u32),
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: rep.lost.min(0x7f_ffff) as i32,
            highest_seq: self.reception.extended_highest_seq(),
            jitter: self.reception.jitter_units(),
            last_sr,
            delay_since_last_sr,
        })
    }

    /// Takes in an RTCP datagram from the peer: its SR (for the LSR/DLSR of
    /// our next report), its report block on our stream (loss, jitter,
    /// round trip), its CNAME, its BYE. Anything malformed is counted in
    /// `switchboard_rtcp_malformed_total` and otherwise ignored.
    pub fn on_rtcp(&mut self, buf: &[u8], now: Instant) -> Inbound {
        let packets = match parse_compound(buf) {
            Ok(p) => p,
            Err(e) => {
                self.malformed += 1;
                metrics::counter!("switchboard_rtcp_malformed_total").increment(1);
                return Inbound::Malformed(e);
            }
        };
        let mut inbound = Inbound::Reports;
        for packet in packets {
            match packet {
                Packet::Report(r) if r.ssrc != self.ssrc => {
                    self.peer_ssrc = Some(r.ssrc);
                    if let Some(s) = r.sender {
                        self.peer_sr = Some(((s.ntp >> 16) as u32, now));
                    }
                    for b in r.blocks.iter().filter(|b| b.ssrc == self.ssrc) {
                        self.remote = Some(RemoteReception {
                            fraction_lost: b.fraction_lost as f64 / 256.0,
                            cumulative_lost: b.cumulative_lost,
                            jitter: Duration::from_micros(b.jitter as u64 * 1_000_000 / self.clock_rate as u64),
                            highest_seq: b.highest_seq,
                        });
                        if let Some(rtt) = self.round_trip(b, now) {
                            self.rtt = Some(rtt);
                        }
                    }
                }
                Packet::Sdes(chunks) => {
                    if let Some(cname) = chunks.into_iter().filter(|c| c.ssrc != self.ssrc).find_map(|c| c.cname) {
                        self.peer_cname = Some(cname);
                    }
                }
                Packet::Bye(b) if b.ssrcs.iter().any(|s| *s != self.ssrc) => {
                    self.bye = Some(b.reason.clone());
                    inbound = Inbound::Bye { reason: b.reason };
                }
                _ => {}
            }
        }
        inbound
    }

    /// The round trip a block on our stream measures: its arrival on the
    /// NTP clock of our SRs (the newest SR's NTP time plus the monotonic
    /// time since) minus LSR minus DLSR.
    fn round_trip(&self, block: &ReportBlock, now: Instant) -> Option<Duration> {
        let &(ntp, sent) = self.our_srs.back()?;
        let arrival = ntp.wrapping_add(ntp_units(now.saturating_duration_since(sent)));
        round_trip(block, (arrival >> 16) as u32)
    }

    /// Both directions of the leg and their MOS.
    pub fn quality(&self) -> LegQuality {
        // Every source the peer sent during the call, not just the current one.
        let local = self.reception.call_report();
        let delay = self.rtt.unwrap_or_default();
        let local_mos = leg_mos(delay, local.jitter, local.loss);
        let remote_mos = self.remote.map(|r| leg_mos(delay, r.jitter, r.fraction_lost)).unwrap_or(local_mos);
        LegQuality { rtt: self.rtt, local, remote: self.remote, mos: local_mos.min(remote_mos) }
    }

    /// The peer's SSRC, from its reports.
    pub fn peer_ssrc(&self) -> Option<u32> {
        self.peer_ssrc
    }

    /// The peer's canonical name, from its SDES.
    pub fn peer_cname(&self) -> Option<&str> {
        self.peer_cname.as_deref()
    }

    /// Whether the peer sent BYE, and its reason.
    pub fn peer_left(&self) -> Option<Option<&str>> {
        self.bye.as_ref().map(|r| r.as_deref())
    }

    /// Datagrams ignored as malformed.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(ssrc: u32) -> ReportBlock {
        ReportBlock {
            ssrc,
            fraction_lost: 26,
            cumulative_lost: -3,
            highest_seq: 0x0001_0005,
            jitter: 80,
            last_sr: 0x1234_5678,
            delay_since_last_sr: 0x0001_0000,
        }
    }

    #[test]
    fn sender_and_receiver_reports_round_trip_in_one_compound_packet() {
        let sr = Report {
            ssrc: 0xdead_beef,
            sender: Some(SenderInfo { ntp: 0x0102_0304_0506_0708, rtp_timestamp: 160, packets: 50, octets: 8000 }),
            blocks: vec![block(7)],
        };
        let rr = Report { ssrc: 0xdead_beef, sender: None, blocks: vec![block(7), block(8)] };
        // An SDES chunk between them is skipped.
        let sdes = [0x81, 202, 0x00, 0x02, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x00, 0x00, 0x00];
        let datagram = [build(&sr), sdes.to_vec(), build(&rr)].concat();
        assert_eq!(parse(&datagram).unwrap(), vec![sr, rr]);
    }

    #[test]
    fn round_trip_is_arrival_minus_lsr_minus_dlsr() {
        let b = block(1); // LSR 0x12345678, DLSR 1 s
        let arrival = 0x1234_5678 + 0x0001_0000 + 0x0000_0ccd; // + 50 ms
        let rtt = round_trip(&b, arrival).unwrap();
        assert!((rtt.as_secs_f64() - 0.05).abs() < 0.001, "{rtt:?}");
        assert_eq!(round_trip(&ReportBlock { last_sr: 0, ..b }, arrival), None);
        assert_eq!(round_trip(&b, 0x1234_5678), None, "negative round trip");
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        assert_eq!(parse(&[]), Err(RtcpError::Short));
        assert_eq!(parse(&[0x40, 201, 0, 1]), Err(RtcpError::Version));
        assert_eq!(parse(&[0x80, 201, 0, 9, 0, 0, 0, 0]), Err(RtcpError::Length));
        assert_eq!(parse(&[0x81, 201, 0, 1, 0, 0, 0, 0]), Err(RtcpError::Count));
        let good = build(&Report { ssrc: 1, sender: None, blocks: vec![block(2)] });
        for cut in 0..good.len() {
            let _ = parse(&good[..cut]);
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            let _ = parse(&bad);
        }
    }

    #[test]
    fn sdes_and_bye_round_trip_at_every_padding() {
        for cname in ["", "a", "ab", "abc", "switchboard@10.0.0.1"] {
            let p = build_sdes(0x0102_0304, cname);
            assert_eq!(p.len() % 4, 0);
            assert_eq!(
                parse_compound(&p).unwrap(),
                vec![Packet::Sdes(vec![SdesChunk { ssrc: 0x0102_0304, cname: Some(cname.to_owned()) }])],
                "{cname:?}"
            );
        }
        let long = "é".repeat(200); // 400 bytes, cut at a character boundary
        let Packet::Sdes(chunks) = &parse_compound(&build_sdes(1, &long)).unwrap()[0] else { panic!("not SDES") };
        assert_eq!(chunks[0].cname.as_deref(), Some("é".repeat(127).as_str()));
        let bye = build_bye(9, Some("call ended"));
        assert_eq!(parse_compound(&bye).unwrap(), vec![Packet::Bye(Bye { ssrcs: vec![9], reason: Some("call ended".into()) })]);
        assert_eq!(parse_compound(&build_bye(9, None)).unwrap(), vec![Packet::Bye(Bye { ssrcs: vec![9], reason: None })]);
        // Feedback and APP packets are kept by type; reports are still read.
        let fb = [0x81, 205, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
        let rr = build(&Report { ssrc: 3, sender: None, blocks: vec![] });
        assert_eq!(parse_compound(&[rr.clone(), fb.to_vec()].concat()).unwrap()[1], Packet::Other(205));
        assert_eq!(parse(&[rr, fb.to_vec(), bye].concat()).unwrap().len(), 1);
        // Truncated SDES items are read as far as they go, never past.
        let truncated = [0x82, 202, 0, 2, 0, 0, 0, 5, 1, 200, 0, 0];
        assert_eq!(parse_compound(&truncated).unwrap(), vec![Packet::Sdes(vec![SdesChunk { ssrc: 5, cname: None }])]);
    }

    #[test]
    fn ntp_time_counts_from_1900() {
        let t = UNIX_EPOCH + Duration::from_millis(1_500);
        assert_eq!(ntp_time(t), (2_208_988_801u64 << 32) | 0x8000_0000);
    }

    const CLOCK: u32 = 8000;

    /// A virtual wall clock: NTP time of an instant.
    fn ntp_at(t0: Instant, at: Instant) -> u64 {
        (3_900_000_000u64 << 32) + ntp_units(at - t0)
    }

    fn sent(packets: u64) -> SendStats {
        SendStats { ssrc: 0xa, packets, octets: packets * 160, rtp_timestamp: 1234, last_timestamp: 1000, last_sent: None }
    }

    #[test]
    fn reports_are_scheduled_at_randomised_intervals() {
        let t0 = Instant::now();
        for _ in 0..50 {
            let mut s = RtcpSession::new(1, "x", CLOCK, t0);
            let first = s.next_report_at() - t0;
            assert!(first >= Duration::from_millis(1250) && first <= Duration::from_millis(3750), "{first:?}");
            let at = s.next_report_at();
            s.build_report(at, ntp_at(t0, at), &sent(0));
            let next = s.next_report_at() - at;
            assert!(next >= Duration::from_millis(2500) && next <= Duration::from_millis(7500), "{next:?}");
        }
    }

    #[test]
    fn sr_when_we_sent_rr_otherwise_with_the_loss_of_each_interval() {
        let t0 = Instant::now();
        let mut s = RtcpSession::new(0xa, "gw", CLOCK, t0);
        let first = parse_compound(&s.build_report(t0, ntp_at(t0, t0), &sent(0))).unwrap();
        assert_eq!(first[0], Packet::Report(Report { ssrc: 0xa, sender: None, blocks: vec![] }), "nothing sent or received yet");
        assert_eq!(first[1], Packet::Sdes(vec![SdesChunk { ssrc: 0xa, cname: Some("gw".into()) }]));
        // The peer sends 100 packets, 10 of them lost.
        for i in 0..100u32 {
            if i % 10 != 5 {
                s.on_rtp(0xb, 500 + i as u16, i * 160, t0 + Duration::from_millis(20 * i as u64));
            }
        }
        let t1 = t0 + Duration::from_secs(2);
        let r = parse(&s.build_report(t1, ntp_at(t0, t1), &sent(90))).unwrap();
        let info = r[0].sender.expect("we sent since the last report: SR");
        assert_eq!((info.packets, info.octets, info.rtp_timestamp), (90, 90 * 160, 1234));
        let b = r[0].blocks[0];
        assert_eq!((b.ssrc, b.fraction_lost, b.cumulative_lost, b.highest_seq), (0xb, 25, 10, 599));
        assert_eq!((b.last_sr, b.delay_since_last_sr), (0, 0), "no SR from the peer yet");
        // Next interval: 50 more, none lost; we sent nothing.
        for i in 100..150u32 {
            s.on_rtp(0xb, 500 + i as u16, i * 160, t0 + Duration::from_millis(20 * i as u64));
        }
        let t2 = t1 + Duration::from_secs(5);
        let r = parse(&s.build_report(t2, ntp_at(t0, t2), &sent(90))).unwrap();
        assert!(r[0].sender.is_none(), "nothing sent since: RR");
        assert_eq!((r[0].blocks[0].fraction_lost, r[0].blocks[0].cumulative_lost), (0, 10));
        let q = s.quality();
        assert_eq!((q.local.expected, q.local.lost), (150, 10));
        assert_eq!(q.remote, None);
        assert_eq!(q.rtt, None);
    }

    #[test]
    fn two_sessions_measure_the_round_trip_and_each_others_reception() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let one_way = Duration::from_millis(25);
        let mut gw = RtcpSession::new(0xa, "gw", CLOCK, t0);
        let mut phone = RtcpSession::new(0xb, "phone", CLOCK, t0);
        // The gateway's stream reaches the phone with every 20th packet lost.
        for i in 0..200u32 {
            if i % 20 != 7 {
                phone.on_rtp(0xa, i as u16, i * 160, ms(20 * i as u64) + one_way);
            }
            gw.on_rtp(0xb, i as u16, i * 160, ms(20 * i as u64) + one_way);
        }
        // Gateway SR at 4 s, arrives at 4.025 s.
        let sr = gw.build_report(ms(4000), ntp_at(t0, ms(4000)), &sent(200));
        assert_eq!(phone.on_rtcp(&sr, ms(4025)), Inbound::Reports);
        assert_eq!(phone.peer_cname(), Some("gw"));
        assert_eq!(phone.peer_ssrc(), Some(0xa));
        // The phone reports 1.5 s later (its wall clock is a different one:
        // the round trip does not depend on it); arrives 25 ms after.
        let rr = phone.build_report(ms(5525), 77 << 32, &sent(0));
        assert_eq!(parse(&rr).unwrap()[0].blocks[0].delay_since_last_sr, 0x0001_8000, "DLSR 1.5 s");
        assert_eq!(gw.on_rtcp(&rr, ms(5550)), Inbound::Reports);
        let q = gw.quality();
        let rtt = q.rtt.expect("round trip known").as_secs_f64();
        assert!((rtt - 0.050).abs() < 0.001, "{rtt}");
        let remote = q.remote.expect("the phone reported on our stream");
        assert_eq!(remote.cumulative_lost, 10);
        assert!((remote.fraction_lost - 12.0 / 256.0).abs() < 1e-9, "{remote:?}");
        assert_eq!(q.local.lost, 0);
        assert!(q.mos < gw.quality().local.mos(), "the lossy direction sets the leg's MOS");
        assert!(q.mos > 3.0 && q.mos < 4.3, "{}", q.mos);
        // The phone hangs up.
        let bye = phone.build_bye(ms(6000), 78 << 32, &sent(0), Some("bye now"));
        assert_eq!(gw.on_rtcp(&bye, ms(6025)), Inbound::Bye { reason: Some("bye now".into()) });
        assert_eq!(gw.peer_left(), Some(Some("bye now")));
    }

    #[test]
    fn garbage_is_counted_and_changes_nothing() {
        let t0 = Instant::now();
        let mut s = RtcpSession::new(0xa, "gw", CLOCK, t0);
        let before = s.quality();
        assert_eq!(s.on_rtcp(b"hello world!", t0), Inbound::Malformed(RtcpError::Version));
        assert_eq!(s.on_rtcp(&[], t0), Inbound::Malformed(RtcpError::Short));
        assert_eq!(s.on_rtcp(&[0x81, 201, 0, 1, 0, 0, 0, 1], t0), Inbound::Malformed(RtcpError::Count));
        assert_eq!(s.malformed(), 3);
        assert_eq!(s.quality(), before);
        // Our own reports looped back are not the peer's.
        let own = s.build_report(t0, 1 << 32, &sent(5));
        assert_eq!(s.on_rtcp(&own, t0), Inbound::Reports);
        assert_eq!(s.peer_ssrc(), None);
        assert_eq!(s.peer_cname(), None);
        let mut state = 0x2545_f491u32;
        for _ in 0..5000 {
            let mut m = own.clone();
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let pos = state as usize % m.len();
            m[pos] ^= (state >> 8) as u8 | 1;
            let _ = s.on_rtcp(&m[..m.len() - (state as usize >> 3) % 4], t0);
        }
    }
}
