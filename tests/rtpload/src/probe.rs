//! The probe packet: a 172-byte RTP packet (12-byte header, PT 0, 160 bytes
//! of G.711 µ-law = 20 ms) whose payload starts with a marker, the call
//! index, the direction and the send time. The receiver needs nothing else
//! to attribute a packet to its stream and measure its delay, so it works
//! whatever the relay does to ports, and even if it rewrote SSRCs.
//!
//! Sans-IO: bytes in, bytes out.

/// Bytes of one probe packet: RTP header + 20 ms of 8 kHz G.711.
pub const PACKET_LEN: usize = 12 + PAYLOAD_LEN;
/// 20 ms of G.711 at 8 kHz.
pub const PAYLOAD_LEN: usize = 160;
/// Samples per packet, the RTP timestamp step.
pub const SAMPLES: u32 = 160;
const MAGIC: &[u8; 4] = b"RTLd";
/// µ-law silence; fills the payload after the probe fields.
const SILENCE: u8 = 0xff;

/// Which way a stream flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Caller → relay A port → agent.
    CallerToAgent = 0,
    /// Agent → relay B port → caller.
    AgentToCaller = 1,
}

/// What the receiver reads back out of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub call: u32,
    pub direction: Direction,
    pub sequence: u16,
    /// Send time, nanoseconds of CLOCK_REALTIME (see `media.rs` for why).
    pub sent_ns: u64,
}

/// The SSRC of a stream: distinct per call and direction.
pub fn ssrc(call: u32, direction: Direction) -> u32 {
    0x5000_0000 ^ (call << 1 | direction as u32)
}

/// Writes the constant parts of a probe into `buf` (header, marker, call,
/// direction, silence); `stamp` fills in the changing ones.
pub fn prepare(buf: &mut [u8; PACKET_LEN], call: u32, direction: Direction) {
    buf.fill(SILENCE);
    buf[0] = 0x80;
    buf[1] = 0; // PT 0 (PCMU), no marker
    buf[8..12].copy_from_slice(&ssrc(call, direction).to_be_bytes());
    buf[12..16].copy_from_slice(MAGIC);
    buf[16..20].copy_from_slice(&call.to_be_bytes());
    buf[20] = direction as u8;
}

/// Sets the sequence number, RTP timestamp and send time of a prepared probe.
pub fn stamp(buf: &mut [u8; PACKET_LEN], sequence: u16, sent_ns: u64) {
    buf[2..4].copy_from_slice(&sequence.to_be_bytes());
    buf[4..8].copy_from_slice(&(u32::from(sequence).wrapping_mul(SAMPLES)).to_be_bytes());
    buf[24..32].copy_from_slice(&sent_ns.to_be_bytes());
}

/// Reads a probe; `None` for anything else (RTCP, stray packets, a relay
/// that mangled the payload), which the receiver counts as foreign.
pub fn parse(buf: &[u8]) -> Option<Probe> {
    if buf.len() != PACKET_LEN || buf[0] >> 6 != 2 || buf[1] & 0x7f != 0 || &buf[12..16] != MAGIC {
        return None;
    }
    let direction = match buf[20] {
        0 => Direction::CallerToAgent,
        1 => Direction::AgentToCaller,
        _ => return None,
    };
    Some(Probe {
        call: u32::from_be_bytes(buf[16..20].try_into().ok()?),
        direction,
        sequence: u16::from_be_bytes([buf[2], buf[3]]),
        sent_ns: u64::from_be_bytes(buf[24..32].try_into().ok()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_probe_reads_back() {
        let mut p = [0u8; PACKET_LEN];
        prepare(&mut p, 1234, Direction::AgentToCaller);
        stamp(&mut p, 65535, 0x0102_0304_0506_0708);
        assert_eq!(
            parse(&p),
            Some(Probe {
                call: 1234,
                direction: Direction::AgentToCaller,
                sequence: 65535,
                sent_ns: 0x0102_0304_0506_0708
            })
        );
        assert_eq!(p.len(), 172);
        assert_eq!(u32::from_be_bytes(p[4..8].try_into().unwrap()), 65535 * 160);
        assert_eq!(
            u32::from_be_bytes(p[8..12].try_into().unwrap()),
            ssrc(1234, Direction::AgentToCaller)
        );
        assert_ne!(
            ssrc(1234, Direction::AgentToCaller),
            ssrc(1234, Direction::CallerToAgent)
        );
        assert!(
            p[32..].iter().all(|b| *b == 0xff),
            "the rest is µ-law silence"
        );
    }

    #[test]
    fn anything_else_is_not_a_probe() {
        let mut p = [0u8; PACKET_LEN];
        prepare(&mut p, 1, Direction::CallerToAgent);
        assert!(parse(&p[..100]).is_none(), "truncated");
        let mut q = p;
        q[12] = b'x';
        assert!(parse(&q).is_none(), "no marker");
        let mut q = p;
        q[1] = 8;
        assert!(parse(&q).is_none(), "another payload type");
        let mut q = p;
        q[20] = 7;
        assert!(parse(&q).is_none(), "no such direction");
        assert!(parse(&[0x80, 0xc8, 0, 6]).is_none(), "RTCP");
    }
}
