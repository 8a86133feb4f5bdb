//! The fixed RTP header (RFC 3550 §5.1): just enough to place audio on the
//! recording timeline and to tell RTP from garbage.

/// A parsed RTP packet borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub payload_type: u8,
    pub marker: bool,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: &'a [u8],
}

/// Parses an RTP packet; `None` for anything that is not RTP version 2 or
/// whose lengths do not add up. RTCP (payload types 72–76 with the marker
/// bit, RFC 5761) is also `None`.
pub fn parse(buf: &[u8]) -> Option<RtpPacket<'_>> {
    if buf.len() < 12 || buf[0] >> 6 != 2 {
        return None;
    }
    let padding = buf[0] & 0x20 != 0;
    let extension = buf[0] & 0x10 != 0;
    let csrc_count = (buf[0] & 0x0f) as usize;
    let marker = buf[1] & 0x80 != 0;
    let payload_type = buf[1] & 0x7f;
    if (72..=76).contains(&(buf[1] & 0x7f)) && marker {
        return None;
    }
    let sequence = u16::from_be_bytes([buf[2], buf[3]]);
    let timestamp = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
    let mut offset = 12 + 4 * csrc_count;
    if extension {
        if buf.len() < offset + 4 {
            return None;
        }
        let words = u16::from_be_bytes([buf[offset + 2], buf[offset + 3]]) as usize;
        offset += 4 + 4 * words;
    }
    let mut end = buf.len();
    if padding {
        let pad = *buf.last()? as usize;
        if pad == 0 || pad > end.saturating_sub(offset) {
            return None;
        }
        end -= pad;
    }
    if offset > end {
        return None;
    }
    Some(RtpPacket { payload_type, marker, sequence, timestamp, ssrc, payload: &buf[offset..end] })
}

/// Whether a datagram on a multiplexed RTP/RTCP port is RTCP (RFC 5761
/// §4): its second byte, read as RTCP packet type, is 192–223 (SR, RR,
/// SDES, BYE, APP, feedback), which RTP never uses as marker + payload type
/// once types 64–95 are avoided.
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 2 && (192..=223).contains(&buf[1])
}

/// Builds an RTP packet (tests and generators).
pub fn build(payload_type: u8, sequence: u16, timestamp: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload.len());
    p.push(0x80);
    p.push(payload_type & 0x7f);
    p.extend_from_slice(&sequence.to_be_bytes());
    p.extend_from_slice(&timestamp.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let p = build(8, 7, 160, 0xdead_beef, &[1, 2, 3]);
        let r = parse(&p).unwrap();
        assert_eq!((r.payload_type, r.sequence, r.timestamp, r.ssrc, r.payload), (8, 7, 160, 0xdead_beef, &[1u8, 2, 3][..]));
        assert!(parse(&[0u8; 12]).is_none());
        assert!(parse(&[0x80, 8, 0]).is_none());
        let mut padded = build(0, 1, 1, 1, &[9, 9, 2]);
        padded[0] |= 0x20;
        assert_eq!(parse(&padded).unwrap().payload, &[9]);
        padded[14] = 200;
        assert!(parse(&padded).is_none());
    }

    #[test]
    fn rtcp_is_told_apart_on_a_muxed_port() {
        assert!(is_rtcp(&[0x80, 200, 0, 6])); // SR
        assert!(is_rtcp(&[0x81, 201, 0, 7])); // RR
        assert!(is_rtcp(&[0x81, 202, 0, 2])); // SDES
        assert!(is_rtcp(&[0x81, 203, 0, 1])); // BYE
        assert!(is_rtcp(&[0x81, 206, 0, 2])); // payload-specific feedback
        assert!(!is_rtcp(&build(0, 1, 1, 1, &[0; 160])));
        let mut marked = build(101, 1, 1, 1, &[1, 0, 0, 0]);
        marked[1] |= 0x80; // telephone-event start: 229, not RTCP
        assert!(!is_rtcp(&marked));
        let mut pcmu_marked = build(0, 1, 1, 1, &[0; 160]);
        pcmu_marked[1] |= 0x80; // 128
        assert!(!is_rtcp(&pcmu_marked));
        assert!(!is_rtcp(&[0x80]));
        assert!(!is_rtcp(&[]));
    }
}
