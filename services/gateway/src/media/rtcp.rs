//! RTCP sender and receiver reports (RFC 3550 §6.4): reading compound
//! packets, writing reports, and the round-trip time they carry.
//!
//! Sans-IO and defensive: a packet that does not parse yields an error,
//! never a panic; unknown packet types in a compound packet are skipped.

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

/// The SR and RR packets of a compound RTCP datagram, in order.
pub fn parse(mut buf: &[u8]) -> Result<Vec<Report>, RtcpError> {
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
        match kind {
            SR | RR => out.push(report(kind, count, packet)?),
            _ => {} // SDES, BYE, APP, feedback: not needed here
        }
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
}
