//! G.711 μ-law (PCMU) and A-law (PCMA) decoding to 16-bit linear PCM
//! (ITU-T G.711), for the recorder.

/// Decodes one μ-law byte.
pub fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u;
    let sign = u & 0x80;
    let exponent = (u >> 4) & 0x07;
    let mantissa = u & 0x0f;
    let magnitude = ((((mantissa as i32) << 3) + 0x84) << exponent) - 0x84;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

/// Decodes one A-law byte.
pub fn alaw_to_linear(a: u8) -> i16 {
    let a = a ^ 0x55;
    let sign = a & 0x80;
    let exponent = (a >> 4) & 0x07;
    let mantissa = (a & 0x0f) as i32;
    let magnitude = if exponent == 0 { (mantissa << 4) + 8 } else { ((mantissa << 4) + 0x108) << (exponent - 1) };
    (if sign != 0 { magnitude } else { -magnitude }) as i16
}

/// Encodes one linear sample as μ-law (used by tests and tone generators).
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = sample as i32;
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    let mut exponent = 7;
    let mut mask = 0x4000;
    while exponent > 0 && s & mask == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// Encodes one linear sample as A-law.
pub fn linear_to_alaw(sample: i16) -> u8 {
    let (mut s, sign) = if sample >= 0 { (sample as i32, 0x80) } else { (-(sample as i32) - 1, 0x00) };
    s = s.min(32767) >> 3;
    let out = if s < 32 {
        (s >> 1) as u8
    } else {
        let mut exponent = 1u8;
        while exponent < 7 && s >= (64 << (exponent - 1)) {
            exponent += 1;
        }
        (exponent << 4) | ((s >> exponent) & 0x0f) as u8
    };
    (out | sign) ^ 0x55
}

/// μ-law silence (linear 0).
pub const ULAW_SILENCE: u8 = 0xff;
/// A-law silence (linear +8, the smallest step).
pub const ALAW_SILENCE: u8 = 0xd5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(ulaw_to_linear(0xff), 0);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(alaw_to_linear(0xd5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xaa), 32256);
    }

    #[test]
    fn ulaw_round_trip_is_close() {
        for s in [-30000i16, -1000, -10, 0, 10, 1000, 30000] {
            let back = ulaw_to_linear(linear_to_ulaw(s));
            assert!((back as i32 - s as i32).abs() <= (s as i32).abs() / 16 + 8, "{s} -> {back}");
        }
    }

    #[test]
    fn alaw_round_trip_is_close() {
        for s in [-32768i16, -30000, -1000, -100, -10, 0, 10, 100, 1000, 30000, 32767] {
            let back = alaw_to_linear(linear_to_alaw(s));
            assert!((back as i32 - s as i32).abs() <= (s as i32).abs() / 16 + 16, "{s} -> {back}");
        }
        assert_eq!(linear_to_alaw(0), ALAW_SILENCE);
        assert_eq!(linear_to_ulaw(0), ULAW_SILENCE);
        for a in 0..=255u8 {
            assert_eq!(linear_to_alaw(alaw_to_linear(a)), a, "A-law byte {a:#x} survives a round trip");
        }
    }
}
