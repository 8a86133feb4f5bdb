//! Call quality from the RTP a leg receives (RFC 3550 §6.4.1 and A.3, A.8)
//! and its estimate as a MOS through the ITU-T G.107 E-model, simplified
//! the way the field does it for G.711 (Cole & Rosenbluth).
//!
//! Sans-IO: packets come in with their arrival time; nothing here reads a
//! clock or a socket.

use std::time::Duration;

/// Reception statistics of one RTP stream (one SSRC), per RFC 3550 A.1/A.3.
#[derive(Debug, Clone)]
pub struct Reception {
    clock_rate: u32,
    ssrc: Option<u32>,
    /// Highest sequence number seen, extended with the wrap count.
    max_ext_seq: u32,
    base_ext_seq: u32,
    received: u64,
    /// Interarrival jitter in timestamp units, scaled by 16 (A.8).
    jitter_q4: u32,
    /// (arrival in timestamp units, RTP timestamp) of the previous packet.
    last: Option<(u32, u32)>,
    /// Earlier sources of the call folded together (for the call's summary).
    earlier: ReceptionReport,
}

/// A snapshot of a stream's reception.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ReceptionReport {
    pub expected: u64,
    pub received: u64,
    /// Lost packets (never negative: duplicates do not earn credit).
    pub lost: u64,
    /// Fraction of `expected` that was lost, 0.0–1.0.
    pub loss: f64,
    pub jitter: Duration,
}

impl Reception {
    pub fn new(clock_rate: u32) -> Reception {
        Reception {
            clock_rate: clock_rate.max(1),
            ssrc: None,
            max_ext_seq: 0,
            base_ext_seq: 0,
            received: 0,
            jitter_q4: 0,
            last: None,
            earlier: ReceptionReport::default(),
        }
    }

    /// Accounts one packet that arrived `arrival` after the stream's epoch.
    /// A new SSRC restarts the statistics (a new source, §8.2).
    pub fn packet(&mut self, ssrc: u32, seq: u16, timestamp: u32, arrival: Duration) {
        let arrival_ts = (arrival.as_micros() as u64 * self.clock_rate as u64 / 1_000_000) as u32;
        if self.ssrc != Some(ssrc) {
            let earlier = self.call_report();
            *self = Reception::new(self.clock_rate);
            self.earlier = earlier;
            self.ssrc = Some(ssrc);
            self.max_ext_seq = seq as u32;
            self.base_ext_seq = seq as u32;
            self.received = 1;
            self.last = Some((arrival_ts, timestamp));
            return;
        }
        // Extend the 16-bit sequence number against the highest seen (A.1).
        let max = self.max_ext_seq;
        let cycles = max & !0xffff;
        let candidates = [cycles.wrapping_sub(0x1_0000) | seq as u32, cycles | seq as u32, cycles.wrapping_add(0x1_0000) | seq as u32];
        let ext = candidates.into_iter().min_by_key(|c| (*c as i64 - max as i64).unsigned_abs()).unwrap_or(seq as u32);
        if ext > max {
            self.max_ext_seq = ext;
        }
        self.received += 1;
        // Interarrival jitter (A.8): J += (|D| - J) / 16.
        if let Some((last_arrival, last_ts)) = self.last {
            let transit_delta = (arrival_ts.wrapping_sub(last_arrival) as i32).wrapping_sub(timestamp.wrapping_sub(last_ts) as i32);
            let d = transit_delta.unsigned_abs();
            let j = self.jitter_q4 as i64 + d as i64 - ((self.jitter_q4 as i64 + 8) >> 4);
            self.jitter_q4 = j.max(0) as u32;
        }
        self.last = Some((arrival_ts, timestamp));
    }

    /// The source being received, once a packet has come.
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// Extended highest sequence number received (A.1), as a report block
    /// carries it.
    pub fn extended_highest_seq(&self) -> u32 {
        self.max_ext_seq
    }

    /// Interarrival jitter in timestamp units, as a report block carries it.
    pub fn jitter_units(&self) -> u32 {
        self.jitter_q4 >> 4
    }

    /// Every source of the call so far together (a transfer or a played
    /// capture changes the source; RTCP reports only the current one):
    /// counts summed, the worst jitter.
    pub fn call_report(&self) -> ReceptionReport {
        let (a, b) = (self.earlier, self.report());
        let expected = a.expected + b.expected;
        let lost = a.lost + b.lost;
        ReceptionReport {
            expected,
            received: a.received + b.received,
            lost,
            loss: if expected == 0 { 0.0 } else { lost as f64 / expected as f64 },
            jitter: a.jitter.max(b.jitter),
        }
    }

    /// The current source's reception.
    pub fn report(&self) -> ReceptionReport {
        if self.ssrc.is_none() {
            return ReceptionReport { expected: 0, received: 0, lost: 0, loss: 0.0, jitter: Duration::ZERO };
        }
        let expected = (self.max_ext_seq - self.base_ext_seq) as u64 + 1;
        let lost = expected.saturating_sub(self.received);
        let jitter_ts = (self.jitter_q4 >> 4) as u64;
        ReceptionReport {
            expected,
            received: self.received,
            lost,
            loss: if expected == 0 { 0.0 } else { lost as f64 / expected as f64 },
            jitter: Duration::from_micros(jitter_ts * 1_000_000 / self.clock_rate as u64),
        }
    }
}

/// The E-model's transmission rating R for G.711 with packet loss concealment
/// (Ie = 0, Bpl = 25.1 per G.113), one-way delay `delay` (mouth to ear) and
/// random loss `loss` (0.0–1.0).
pub fn r_factor(delay: Duration, loss: f64) -> f64 {
    let d = delay.as_secs_f64() * 1000.0;
    // Delay impairment Id (Cole & Rosenbluth's fit of G.107).
    let id = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
    // Effective equipment impairment Ie-eff = Ie + (95 - Ie)·Ppl / (Ppl + Bpl).
    let ppl = (loss.clamp(0.0, 1.0)) * 100.0;
    let ie_eff = 95.0 * ppl / (ppl + 25.1);
    (93.2 - id - ie_eff).clamp(0.0, 100.0)
}

/// G.107's mapping of R to a mean opinion score (1.0–4.5).
pub fn mos(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7.0e-6
    }
}

impl ReceptionReport {
    /// The MOS this reception alone allows (no round trip known): loss and
    /// the jitter buffer's delay.
    pub fn mos(&self) -> f64 {
        leg_mos(Duration::ZERO, self.jitter, self.loss)
    }
}

/// The MOS of a leg: one-way delay from the RTCP round trip (half of it)
/// plus the jitter buffer (twice the jitter), and the loss seen.
pub fn leg_mos(round_trip: Duration, jitter: Duration, loss: f64) -> f64 {
    mos(r_factor(round_trip / 2 + jitter * 2, loss))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PTIME: Duration = Duration::from_millis(20);

    #[test]
    fn a_clean_stream_has_no_loss_and_no_jitter() {
        let mut r = Reception::new(8000);
        for i in 0..100u32 {
            r.packet(7, 1000 + i as u16, 160 * i, PTIME * i);
        }
        let rep = r.report();
        assert_eq!((rep.expected, rep.received, rep.lost), (100, 100, 0));
        assert_eq!(rep.jitter, Duration::ZERO);
        assert_eq!((r.ssrc(), r.extended_highest_seq(), r.jitter_units()), (Some(7), 1099, 0));
    }

    #[test]
    fn loss_is_counted_across_a_sequence_wrap() {
        let mut r = Reception::new(8000);
        let mut sent = 0u32;
        for i in 0..200u32 {
            let seq = (65_500 + i) as u16; // wraps after 36 packets
            if i % 10 != 3 {
                r.packet(9, seq, 160 * i, PTIME * i);
            }
            sent += 1;
        }
        let rep = r.report();
        assert_eq!(r.extended_highest_seq(), 0x1_0000 + 163, "one wrap, then up to 163");
        assert_eq!(rep.expected, sent as u64);
        assert_eq!(rep.lost, 20);
        assert!((rep.loss - 0.1).abs() < 1e-9);
    }

    #[test]
    fn jitter_follows_the_arrival_variation() {
        let mut r = Reception::new(8000);
        // Every other packet arrives 10 ms late: |D| alternates 80 samples.
        for i in 0..400u32 {
            let late = if i % 2 == 1 { Duration::from_millis(10) } else { Duration::ZERO };
            r.packet(1, i as u16, 160 * i, PTIME * i + late);
        }
        let j = r.report().jitter.as_secs_f64() * 1000.0;
        assert!((9.0..=10.5).contains(&j), "jitter {j} ms for a 10 ms alternation");
    }

    #[test]
    fn a_new_source_restarts_the_statistics() {
        let mut r = Reception::new(8000);
        for i in 0..10u32 {
            r.packet(1, i as u16 * 2, 160 * i, PTIME * i); // every other one lost
        }
        r.packet(2, 500, 0, Duration::from_secs(1));
        assert_eq!(r.report().lost, 0);
    }

    #[test]
    fn mos_matches_the_e_model_landmarks() {
        // G.711 with no impairment: R = 93.2, MOS ≈ 4.41.
        assert!((mos(r_factor(Duration::ZERO, 0.0)) - 4.41).abs() < 0.01);
        // Typical good call: 50 ms one way, no loss.
        assert!(leg_mos(Duration::from_millis(100), Duration::ZERO, 0.0) > 4.3);
        // 5 % random loss with concealment (Bpl 25.1): Ie-eff = 15.8, and
        // 60 ms one way: Id = 1.44, so R = 76.0 and MOS = 3.86.
        let lossy = leg_mos(Duration::from_millis(100), Duration::from_millis(5), 0.05);
        assert!((lossy - 3.86).abs() < 0.01, "{lossy}");
        // Long delay and heavy loss end near the bottom.
        assert!(leg_mos(Duration::from_millis(800), Duration::from_millis(40), 0.3) < 2.0);
        assert_eq!(mos(-5.0), 1.0);
        assert_eq!(mos(120.0), 4.5);
    }
}
