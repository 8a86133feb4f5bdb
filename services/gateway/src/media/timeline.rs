//! The recording timeline: both parties' decoded audio placed on one clock,
//! with a small adaptive jitter buffer, streamed out as stereo frames
//! (customer left, agent right) while the call runs.
//!
//! Sans-IO: audio comes in with its RTP timestamp and its arrival time
//! (relative to the start of the recording); [`Timeline::drain`] hands out
//! every frame older than the playout delay. A party's first packet is
//! placed at its arrival time, later ones by RTP timestamp, so network
//! jitter does not smear the audio; if packets arrive earlier than their
//! slot (the first one was late) the anchor moves earlier. A new SSRC
//! (transfer, re-INVITE, a phone restarting its stream), or a timestamp that
//! disagrees with the arrival clock by more than a second, re-anchors the
//! party at its arrival time. Gaps and pauses are silence, so both channels
//! always stay aligned and the file's length is the wall time recorded.
//!
//! The playout delay adapts to the lateness seen: a decaying peak of how
//! late packets arrive behind their slot, plus one packet, between 60 ms
//! and 500 ms. Packets later than that are dropped and counted. Memory is
//! two rings of about two seconds each, whatever the call's length.

use std::time::Duration;

/// Recording sample rate (G.711 audio; Opus is decoded at this rate too).
pub const SAMPLE_RATE: u32 = 8_000;
/// Ring size per channel, in samples (about 2 s).
const WINDOW: u64 = 1 << 14;
const MIN_DELAY: u64 = 480; // 60 ms
const MAX_DELAY: u64 = 4_000; // 500 ms
/// Per-packet decay of the lateness peak (about a 7 s half-life at 50 pps).
const PEAK_DECAY: f64 = 0.998;

/// Which channel a party is recorded on; the map is fixed for the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Left: the outside party (the customer).
    Customer = 0,
    /// Right: the company's agent.
    Agent = 1,
}

/// What became of pushed audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    Recorded,
    /// The recording is paused; the audio is not kept.
    Paused,
    /// Arrived after its slot had been written out (counted in `late`).
    Late,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    ssrc: u32,
    timestamp: u32,
    clock_rate: u32,
    /// Sample position of `timestamp` on the timeline.
    position: i64,
}

/// One recording's timeline.
#[derive(Debug)]
pub struct Timeline {
    rings: [Box<[i16]>; 2],
    /// Next sample position to be written out.
    emitted: u64,
    anchors: [Option<Anchor>; 2],
    peak_lateness: f64,
    paused: bool,
    /// Packets dropped for arriving after their slot was written out.
    pub late: u64,
    /// Packets recorded.
    pub packets: u64,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline::new()
    }
}

impl Timeline {
    pub fn new() -> Timeline {
        Timeline {
            rings: [vec![0; WINDOW as usize].into_boxed_slice(), vec![0; WINDOW as usize].into_boxed_slice()],
            emitted: 0,
            anchors: [None, None],
            peak_lateness: 0.0,
            paused: false,
            late: 0,
            packets: 0,
        }
    }

    /// Pauses or resumes: while paused, pushed audio is discarded and the
    /// timeline keeps running with silence.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    /// The current playout delay.
    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_samples() * 1_000_000 / SAMPLE_RATE as u64)
    }

    fn delay_samples(&self) -> u64 {
        (self.peak_lateness as u64 + 160).clamp(MIN_DELAY, MAX_DELAY)
    }

    /// Places a party's decoded 8 kHz audio, `at` after the recording
    /// started; `timestamp` is the packet's RTP timestamp at `clock_rate`.
    pub fn push(&mut self, channel: Channel, at: Duration, ssrc: u32, timestamp: u32, clock_rate: u32, pcm: &[i16]) -> Placed {
        if self.paused {
            // Forget the anchor: after the pause the stream may have moved on.
            self.anchors[channel as usize] = None;
            return Placed::Paused;
        }
        let arrival = (at.as_micros() as i64) * SAMPLE_RATE as i64 / 1_000_000;
        let slot = &mut self.anchors[channel as usize];
        let mut position = match *slot {
            Some(a) if a.ssrc == ssrc && a.clock_rate == clock_rate => {
                let ticks = timestamp.wrapping_sub(a.timestamp) as i32 as i64;
                a.position + ticks * SAMPLE_RATE as i64 / clock_rate as i64
            }
            _ => i64::MIN,
        };
        if position == i64::MIN || (position - arrival).abs() > SAMPLE_RATE as i64 {
            *slot = Some(Anchor { ssrc, timestamp, clock_rate, position: arrival });
            position = arrival;
        } else if position > arrival {
            // Earlier than its slot: the anchoring packet was late. Move the
            // anchor so this packet sits at its arrival time.
            if let Some(a) = slot.as_mut() {
                a.position -= position - arrival;
            }
            position = arrival;
        }
        let lateness = (arrival - position) as f64;
        self.peak_lateness = (self.peak_lateness * PEAK_DECAY).max(lateness);

        let start = position.max(0) as u64;
        let skip = (start as i64 - position) as usize;
        if skip >= pcm.len() {
            return Placed::Late;
        }
        let pcm = &pcm[skip..];
        if start < self.emitted {
            self.late += 1;
            metrics::counter!("switchboard_recording_late_packets_total").increment(1);
            return Placed::Late;
        }
        let end = (start + pcm.len() as u64).min(self.emitted + WINDOW);
        let ring = &mut self.rings[channel as usize];
        for (i, sample) in (start..end).zip(pcm) {
            ring[(i % WINDOW) as usize] = *sample;
        }
        self.packets += 1;
        Placed::Recorded
    }

    /// Writes out, interleaved (left, right), every frame older than the
    /// playout delay at `now` (time since the recording started).
    pub fn drain(&mut self, now: Duration, out: &mut Vec<i16>) {
        let now_samples = now.as_micros() as u64 * SAMPLE_RATE as u64 / 1_000_000;
        let until = now_samples.saturating_sub(self.delay_samples());
        self.emit_until(until, out);
    }

    /// Writes out everything up to `now`, for the end of the recording.
    pub fn finish(&mut self, now: Duration, out: &mut Vec<i16>) {
        let now_samples = now.as_micros() as u64 * SAMPLE_RATE as u64 / 1_000_000;
        self.emit_until(now_samples, out);
    }

    /// Samples per channel written out so far: the recording's length.
    pub fn length(&self) -> Duration {
        Duration::from_micros(self.emitted * 1_000_000 / SAMPLE_RATE as u64)
    }

    fn emit_until(&mut self, until: u64, out: &mut Vec<i16>) {
        if until <= self.emitted {
            return;
        }
        out.reserve(2 * (until - self.emitted) as usize);
        for i in self.emitted..until {
            let at = (i % WINDOW) as usize;
            out.push(std::mem::take(&mut self.rings[0][at]));
            out.push(std::mem::take(&mut self.rings[1][at]));
        }
        self.emitted = until;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn split(frames: &[i16]) -> (Vec<i16>, Vec<i16>) {
        (frames.iter().step_by(2).copied().collect(), frames.iter().skip(1).step_by(2).copied().collect())
    }

    #[test]
    fn aligns_parties_and_absorbs_jitter() {
        let mut t = Timeline::new();
        let mut out = Vec::new();
        for i in 0..100u32 {
            // Customer from 0 s with up to 40 ms of jitter; agent from 1 s, steady.
            let jitter = [0, 40, 10, 25][i as usize % 4];
            t.push(Channel::Customer, ms(20 * i as u64 + jitter), 7, 1000 + 160 * i, 8000, &[1000; 160]);
            if i >= 50 {
                t.push(Channel::Agent, ms(20 * i as u64), 9, 5 + 160 * (i - 50), 8000, &[-2000; 160]);
            }
            t.drain(ms(20 * i as u64 + 20), &mut out);
        }
        t.finish(ms(2000), &mut out);
        assert_eq!(t.late, 0, "the buffer absorbed 40 ms of jitter");
        assert!(t.delay() >= ms(60) && t.delay() <= ms(100), "delay adapted to the jitter: {:?}", t.delay());
        let (left, right) = split(&out);
        assert_eq!(left.len(), 16_000);
        assert!(left[..16_000].iter().all(|s| *s == 1000), "no gaps on the jittered channel");
        assert!(right[..8000].iter().all(|s| *s == 0));
        assert!(right[8000..].iter().all(|s| *s == -2000));
    }

    #[test]
    fn streams_while_running_with_bounded_memory() {
        let mut t = Timeline::new();
        let mut out = Vec::new();
        let mut total = 0;
        // Ten minutes of one party; the output is drained as it goes.
        for i in 0..30_000u32 {
            t.push(Channel::Agent, ms(20 * i as u64), 1, 160 * i, 8000, &[3; 160]);
            if i % 10 == 0 {
                t.drain(ms(20 * i as u64), &mut out);
                total += out.len();
                assert!(out.len() <= 2 * 8000, "at most a second of frames waits between drains");
                out.clear();
            }
        }
        t.finish(ms(600_000), &mut out);
        total += out.len();
        assert_eq!(total, 2 * 8000 * 600);
        assert_eq!(t.length(), Duration::from_secs(600));
    }

    #[test]
    fn pause_keeps_the_timeline_with_silence_and_ssrc_changes_reanchor() {
        let mut t = Timeline::new();
        let mut out = Vec::new();
        for i in 0..50u32 {
            t.push(Channel::Customer, ms(20 * i as u64), 1, 160 * i, 8000, &[500; 160]);
        }
        t.set_paused(true);
        for i in 50..100u32 {
            assert_eq!(t.push(Channel::Customer, ms(20 * i as u64), 1, 160 * i, 8000, &[500; 160]), Placed::Paused);
        }
        t.set_paused(false);
        // After the pause the party comes back with a new source (transfer).
        for i in 100..150u32 {
            t.push(Channel::Customer, ms(20 * i as u64), 99, 4_000_000_000u32.wrapping_add(160 * i), 8000, &[700; 160]);
            t.drain(ms(20 * i as u64), &mut out);
        }
        t.finish(ms(3000), &mut out);
        let (left, _) = split(&out);
        assert_eq!(left.len(), 24_000);
        assert!(left[..8000].iter().all(|s| *s == 500));
        assert!(left[8000..16_000].iter().all(|s| *s == 0), "paused second is silence");
        assert!(left[16_000..].iter().all(|s| *s == 700), "the new source lands at its arrival time");
    }

    #[test]
    fn late_packets_are_dropped_and_opus_timestamps_scale() {
        let mut t = Timeline::new();
        let mut out = Vec::new();
        // Opus: 48 kHz timestamps, decoded to 8 kHz.
        t.push(Channel::Agent, ms(0), 5, 0, 48_000, &[10; 160]);
        t.push(Channel::Agent, ms(20), 5, 960, 48_000, &[20; 160]);
        t.drain(ms(1000), &mut out);
        // The packet for 40 ms turns up after its slot was written out.
        assert_eq!(t.push(Channel::Agent, ms(1000), 5, 1920, 48_000, &[30; 160]), Placed::Late);
        assert_eq!(t.late, 1);
        // A timestamp more than a second off the arrival clock re-anchors.
        assert_eq!(t.push(Channel::Agent, ms(1300), 5, 2880, 48_000, &[40; 160]), Placed::Recorded);
        t.finish(ms(1400), &mut out);
        let (_, right) = split(&out);
        assert!(right[..160].iter().all(|s| *s == 10) && right[160..320].iter().all(|s| *s == 20));
        assert!(right[320..480].iter().all(|s| *s == 0), "the late packet was not written");
        assert!(right[10_400..10_560].iter().all(|s| *s == 40));
    }
}
