//! What the receivers measure, and the summary of a run.
//!
//! Per stream (one call, one direction): packets received, the smallest
//! one-way delay seen (the path's fixed cost through an idle relay), and
//! the RFC 3550 §6.4.1 interarrival jitter. Across all streams: histograms
//! of the one-way delay and of the *added jitter*, each packet's delay
//! minus its stream's minimum so far, which is what queueing in the relay
//! (or in the kernel in front of it) adds. The first packets of a stream
//! only establish its minimum and are left out of the added-jitter
//! histogram (`WARMUP`); a minimum found later makes earlier samples look
//! a little worse, never better.
//!
//! Sans-IO: packets and times in, numbers out.

use serde::Serialize;

use crate::probe::{Direction, Probe};

/// Packets per stream that only set its minimum delay (0.5 s of audio).
pub const WARMUP: u32 = 25;

/// A histogram of nanoseconds, to three significant figures (decision 0030).
pub type Histogram = hdrhistogram::Histogram<u64>;

/// An empty histogram up to an hour (`saturating_record` counts a larger
/// value as an hour).
pub fn histogram() -> Histogram {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("an hour to three significant figures")
}

#[derive(Debug, Clone, Copy, Default)]
struct Stream {
    received: u64,
    min_transit: Option<u64>,
    last_transit: Option<u64>,
    /// RFC 3550 interarrival jitter estimate, in nanoseconds.
    jitter: f64,
}

/// What one receiver thread saw.
#[derive(Debug, Clone)]
pub struct Reception {
    streams: Vec<Stream>,
    pub delay: Histogram,
    pub added: Histogram,
    /// Datagrams that were not probes of this run.
    pub foreign: u64,
    /// Probes whose arrival time was before their send time: the clock was
    /// stepped (their delay is not recorded).
    pub clock_steps: u64,
}

impl Default for Reception {
    fn default() -> Self {
        Reception { streams: Vec::new(), delay: histogram(), added: histogram(), foreign: 0, clock_steps: 0 }
    }
}

fn stream_index(call: u32, direction: Direction) -> usize {
    call as usize * 2 + direction as usize
}

impl Reception {
    /// Records one probe that arrived at `arrived_ns` (same clock as its send time).
    pub fn packet(&mut self, probe: &Probe, arrived_ns: u64) {
        let i = stream_index(probe.call, probe.direction);
        if i >= self.streams.len() {
            self.streams.resize(i + 1, Stream::default());
        }
        let s = &mut self.streams[i];
        s.received += 1;
        let Some(transit) = arrived_ns.checked_sub(probe.sent_ns) else {
            self.clock_steps += 1;
            return;
        };
        self.delay.saturating_record(transit);
        if let Some(last) = s.last_transit {
            let d = transit.abs_diff(last) as f64;
            s.jitter += (d - s.jitter) / 16.0;
        }
        s.last_transit = Some(transit);
        let min = s.min_transit.map_or(transit, |m| m.min(transit));
        s.min_transit = Some(min);
        if s.received > u64::from(WARMUP) {
            self.added.saturating_record(transit - min);
        }
    }

    /// Counts a datagram that is not a probe.
    pub fn foreign(&mut self) {
        self.foreign += 1;
    }
}

/// Percentiles of a distribution, in microseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    /// Each percentile is the top of the histogram's bucket that holds it
    /// (never an underestimate), but never above the largest value; all 0
    /// when the histogram is empty.
    pub fn of_histogram(h: &Histogram) -> Percentiles {
        if h.is_empty() {
            return Percentiles { p50: 0.0, p99: 0.0, p999: 0.0, max: 0.0 };
        }
        let us = |p: f64| h.value_at_percentile(p).min(h.max()) as f64 / 1000.0;
        Percentiles { p50: us(50.0), p99: us(99.0), p999: us(99.9), max: h.max() as f64 / 1000.0 }
    }
}

/// The figures of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub streams: u64,
    pub sent: u64,
    pub received: u64,
    /// Sent but never received (duplicates do not make up for losses).
    pub lost: u64,
    pub loss_pct: f64,
    /// Streams that lost at least one packet, and the worst stream's loss.
    pub streams_with_loss: u64,
    pub worst_stream_loss_pct: f64,
    /// Received more often than sent.
    pub duplicates: u64,
    pub foreign: u64,
    pub clock_steps: u64,
    /// One-way delay through the relay (generator → relay → generator).
    pub delay_us: Percentiles,
    /// Delay minus the stream's minimum delay: the jitter the relay adds.
    pub added_jitter_us: Percentiles,
    /// RFC 3550 interarrival jitter of each stream at the end of the run,
    /// distribution across streams.
    pub rfc3550_jitter_us: Percentiles,
}

impl Summary {
    /// Combines the receivers' views with the sender's per-stream counts
    /// (`sent[call * 2 + direction]`).
    pub fn new(sent: &[u64], receptions: &[Reception]) -> Summary {
        let (mut delay, mut added, mut jitter) = (histogram(), histogram(), histogram());
        let mut received_per_stream = vec![0u64; sent.len()];
        let (mut foreign, mut clock_steps) = (0, 0);
        for r in receptions {
            // Histograms of the same bounds always add up.
            delay.add(&r.delay).expect("histograms of the same bounds");
            added.add(&r.added).expect("histograms of the same bounds");
            foreign += r.foreign;
            clock_steps += r.clock_steps;
            for (i, s) in r.streams.iter().enumerate() {
                if s.received > 0 {
                    if i >= received_per_stream.len() {
                        received_per_stream.resize(i + 1, 0);
                    }
                    received_per_stream[i] += s.received;
                    jitter.saturating_record(s.jitter as u64);
                }
            }
        }
        let (mut total_sent, mut received, mut lost, mut dups, mut streams, mut lossy) =
            (0, 0, 0, 0, 0, 0);
        let mut worst: f64 = 0.0;
        for (i, got) in received_per_stream.iter().enumerate() {
            let s = sent.get(i).copied().unwrap_or(0);
            if s == 0 && *got == 0 {
                continue;
            }
            streams += 1;
            total_sent += s;
            received += got;
            let missing = s.saturating_sub(*got);
            lost += missing;
            dups += got.saturating_sub(s);
            if missing > 0 {
                lossy += 1;
                worst = worst.max(missing as f64 / s as f64 * 100.0);
            }
        }
        Summary {
            streams,
            sent: total_sent,
            received,
            lost,
            loss_pct: if total_sent > 0 {
                lost as f64 / total_sent as f64 * 100.0
            } else {
                0.0
            },
            streams_with_loss: lossy,
            worst_stream_loss_pct: worst,
            duplicates: dups,
            foreign,
            clock_steps,
            delay_us: Percentiles::of_histogram(&delay),
            added_jitter_us: Percentiles::of_histogram(&added),
            rfc3550_jitter_us: Percentiles::of_histogram(&jitter),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(call: u32, direction: Direction, sequence: u16, sent_ns: u64) -> Probe {
        Probe {
            call,
            direction,
            sequence,
            sent_ns,
        }
    }

    #[test]
    fn percentiles_are_within_a_thousandth_never_below_and_capped_by_the_max() {
        let mut h = histogram();
        for i in 1..=100u64 {
            h.saturating_record(i * 10_000 - 1);
        }
        let p = Percentiles::of_histogram(&h);
        let within = |us: f64, exact: f64| us >= exact && us <= exact * 1.001;
        assert!(within(p.p50, 499.999) && within(p.p99, 989.999), "{p:?}");
        assert!(p.p999 <= p.max && within(p.max, 999.999), "{p:?}");
        h.saturating_record(10_000_000_000);
        assert!(within(Percentiles::of_histogram(&h).max, 10_000_000.0), "ten seconds are kept");
        assert_eq!(Percentiles::of_histogram(&histogram()).p99, 0.0);
    }

    #[test]
    fn added_jitter_is_delay_over_the_stream_minimum_after_warmup() {
        let mut r = Reception::default();
        // Stream 0: 1 ms fixed delay; every 10th packet after warm-up 4 ms late.
        // Stream 1 (other call): 3 ms fixed delay, no jitter: its larger
        // fixed delay must not count as jitter.
        for seq in 0..200u16 {
            let sent = u64::from(seq) * 20_000_000;
            let late = if seq > 100 && seq % 10 == 0 {
                4_000_000
            } else {
                0
            };
            r.packet(
                &probe(0, Direction::CallerToAgent, seq, sent),
                sent + 1_000_000 + late,
            );
            r.packet(
                &probe(1, Direction::AgentToCaller, seq, sent),
                sent + 3_000_000,
            );
        }
        assert_eq!(r.added.len(), 2 * (200 - u64::from(WARMUP)));
        assert_eq!(r.added.value_at_percentile(50.0), 0, "no added jitter");
        assert_eq!(r.added.highest_equivalent(4_000_000), r.added.value_at_percentile(99.0));
        assert_eq!(
            r.delay.value_at_percentile(50.0),
            r.delay.highest_equivalent(3_000_000),
            "half the packets take 3 ms"
        );
        let s = Summary::new(&[200, 0, 0, 200], &[r]);
        assert_eq!((s.streams, s.sent, s.received, s.lost), (2, 400, 400, 0));
        assert!((4000.0..=4004.0).contains(&s.added_jitter_us.p99), "{:?}", s.added_jitter_us);
        assert!(
            s.rfc3550_jitter_us.max > 0.0,
            "the jittery stream has RFC 3550 jitter"
        );
        assert_eq!(s.rfc3550_jitter_us.p50, 0.0, "the steady one has none");
    }

    #[test]
    fn loss_is_counted_per_stream_and_duplicates_do_not_hide_it() {
        let mut a = Reception::default();
        let mut b = Reception::default();
        for seq in 0..90u16 {
            a.packet(&probe(0, Direction::CallerToAgent, seq, 0), 1000);
        }
        for seq in 0..101u16 {
            b.packet(&probe(0, Direction::AgentToCaller, seq, 0), 1000);
        }
        b.foreign();
        // Stream 2 (call 1 → agent) sent 100, none arrived.
        let s = Summary::new(&[100, 100, 100], &[a, b]);
        assert_eq!(
            (s.sent, s.received, s.lost, s.duplicates, s.foreign),
            (300, 191, 110, 1, 1)
        );
        assert_eq!(s.streams_with_loss, 2);
        assert_eq!(s.worst_stream_loss_pct, 100.0);
        assert!((s.loss_pct - 110.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn an_arrival_before_the_send_time_is_a_clock_step_not_a_delay() {
        let mut r = Reception::default();
        r.packet(&probe(0, Direction::CallerToAgent, 0, 5_000), 1_000);
        assert_eq!((r.clock_steps, r.delay.len()), (1, 0));
    }
}
