//! The recorder tap: places each party's audio on one shared timeline and
//! writes a stereo WAV (customer left, agent right).
//!
//! Sans-IO: packets come in with their arrival time relative to the start of
//! the recording. A party's first packet is placed at its arrival time; later
//! packets are placed by RTP timestamp, so jitter does not smear the audio.
//! An SSRC change, or a timestamp that disagrees with the arrival clock by
//! more than a second, re-anchors the party at arrival time. Gaps are
//! silence, so both channels stay aligned in time.

use std::io::Cursor;
use std::time::Duration;

use super::{g711, rtp};

/// Recording sample rate (G.711 audio).
pub const SAMPLE_RATE: u32 = 8_000;

/// Which channel a party is recorded on; the map is fixed for the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Left: the outside party (caller on inbound calls).
    Customer = 0,
    /// Right: the company's agent.
    Agent = 1,
}

/// What happened to a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Recorded,
    /// Not RTP, or a payload the recorder does not decode (DTMF events,
    /// comfort noise): carried by the relay, not recorded.
    Skipped,
    /// Beyond the maximum recording length.
    Overflow,
}

#[derive(Debug, Default)]
struct Track {
    samples: Vec<i16>,
    anchor: Option<(u32, u32, i64)>, // (ssrc, base timestamp, base sample position)
}

/// Accumulates a call's audio.
#[derive(Debug)]
pub struct Recorder {
    tracks: [Track; 2],
    max_samples: usize,
    packets: u64,
}

/// A finished recording.
#[derive(Debug)]
pub struct Finished {
    pub wav: Vec<u8>,
    pub duration: Duration,
    pub sample_rate: u32,
}

impl Recorder {
    pub fn new(max_duration: Duration) -> Recorder {
        Recorder {
            tracks: Default::default(),
            max_samples: (max_duration.as_millis() as usize).saturating_mul(SAMPLE_RATE as usize) / 1000,
            packets: 0,
        }
    }

    /// Records one RTP packet of `channel` that arrived `at` after the start.
    pub fn push(&mut self, channel: Channel, at: Duration, packet: &[u8]) -> Pushed {
        let Some(p) = rtp::parse(packet) else { return Pushed::Skipped };
        let decode: fn(u8) -> i16 = match p.payload_type {
            0 => g711::ulaw_to_linear,
            8 => g711::alaw_to_linear,
            _ => return Pushed::Skipped,
        };
        let arrival = (at.as_micros() as i64) * SAMPLE_RATE as i64 / 1_000_000;
        let track = &mut self.tracks[channel as usize];
        let mut position = match track.anchor {
            Some((ssrc, base_ts, base_pos)) if ssrc == p.ssrc => base_pos + p.timestamp.wrapping_sub(base_ts) as i32 as i64,
            _ => arrival,
        };
        if (position - arrival).abs() > SAMPLE_RATE as i64 || track.anchor.is_none_or(|(s, _, _)| s != p.ssrc) {
            track.anchor = Some((p.ssrc, p.timestamp, arrival));
            position = arrival;
        }
        if position < 0 {
            return Pushed::Skipped;
        }
        let start = position as usize;
        let end = start + p.payload.len();
        if end > self.max_samples {
            return Pushed::Overflow;
        }
        if track.samples.len() < end {
            track.samples.resize(end, 0);
        }
        for (slot, byte) in track.samples[start..end].iter_mut().zip(p.payload) {
            *slot = decode(*byte);
        }
        self.packets += 1;
        Pushed::Recorded
    }

    /// Packets recorded so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Writes the stereo WAV, `length` long (the time from start to stop),
    /// padding with silence where a party sent nothing.
    pub fn finish(self, length: Duration) -> Result<Finished, hound::Error> {
        let wanted = (length.as_millis() as usize * SAMPLE_RATE as usize / 1000).min(self.max_samples);
        let frames = wanted.max(self.tracks[0].samples.len()).max(self.tracks[1].samples.len());
        let spec = hound::WavSpec { channels: 2, sample_rate: SAMPLE_RATE, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
        let mut cursor = Cursor::new(Vec::with_capacity(44 + frames * 4));
        {
            let mut w = hound::WavWriter::new(&mut cursor, spec)?;
            for i in 0..frames {
                w.write_sample(self.tracks[0].samples.get(i).copied().unwrap_or(0))?;
                w.write_sample(self.tracks[1].samples.get(i).copied().unwrap_or(0))?;
            }
            w.finalize()?;
        }
        Ok(Finished {
            wav: cursor.into_inner(),
            duration: Duration::from_millis((frames as u64) * 1000 / SAMPLE_RATE as u64),
            sample_rate: SAMPLE_RATE,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize, amplitude: i16) -> Vec<u8> {
        (0..n).map(|i| g711::linear_to_ulaw(if i % 2 == 0 { amplitude } else { -amplitude })).collect()
    }

    fn read(wav: &[u8]) -> (hound::WavSpec, Vec<i16>) {
        let mut r = hound::WavReader::new(Cursor::new(wav)).unwrap();
        let spec = r.spec();
        (spec, r.samples::<i16>().map(|s| s.unwrap()).collect())
    }

    #[test]
    fn aligns_parties_by_arrival_and_timestamp() {
        let mut rec = Recorder::new(Duration::from_secs(60));
        // Customer speaks from 0 s, agent from 0.5 s; 20 ms packets.
        for i in 0..50u32 {
            let at = Duration::from_millis(20 * i as u64);
            let pkt = rtp::build(0, i as u16, 1000 + 160 * i, 1, &tone(160, 8000));
            assert_eq!(rec.push(Channel::Customer, at, &pkt), Pushed::Recorded);
        }
        for i in 0..25u32 {
            // Jittered arrival, exact timestamps.
            let at = Duration::from_millis(500 + 20 * i as u64 + (i as u64 % 3) * 7);
            let pkt = rtp::build(8, i as u16, 90_000 + 160 * i, 2, &[0xaa; 160]);
            rec.push(Channel::Agent, at, &pkt);
        }
        let f = rec.finish(Duration::from_secs(2)).unwrap();
        assert_eq!(f.duration, Duration::from_secs(2));
        let (spec, s) = read(&f.wav);
        assert_eq!((spec.channels, spec.sample_rate), (2, 8000));
        let left: Vec<i16> = s.iter().step_by(2).copied().collect();
        let right: Vec<i16> = s.iter().skip(1).step_by(2).copied().collect();
        assert_eq!(left.len(), 16_000);
        assert!(left[..8000].iter().all(|v| v.abs() > 7000), "customer audio on the left for the first second");
        assert!(right[..3999].iter().all(|v| *v == 0), "agent silent before 0.5 s");
        assert!(right[4000..8000].iter().all(|v| *v == 32256), "agent audio on the right from 0.5 s");
        assert!(left[8000..].iter().all(|v| *v == 0));
    }

    #[test]
    fn ssrc_change_reanchors_and_garbage_is_skipped() {
        let mut rec = Recorder::new(Duration::from_secs(10));
        rec.push(Channel::Customer, Duration::ZERO, &rtp::build(0, 1, 0, 1, &tone(160, 1000)));
        // New source with a wildly different timestamp lands at its arrival time.
        rec.push(Channel::Customer, Duration::from_secs(1), &rtp::build(0, 1, 4_000_000_000, 9, &tone(160, 1000)));
        assert_eq!(rec.push(Channel::Agent, Duration::ZERO, b"not rtp at all"), Pushed::Skipped);
        assert_eq!(rec.push(Channel::Agent, Duration::ZERO, &rtp::build(101, 1, 0, 3, &[1, 2, 3, 4])), Pushed::Skipped);
        let f = rec.finish(Duration::from_millis(1020)).unwrap();
        let (_, s) = read(&f.wav);
        let left: Vec<i16> = s.iter().step_by(2).copied().collect();
        assert!(left[8000].abs() > 500 && left[8159].abs() > 500);
        assert!(left[4000] == 0);
    }

    #[test]
    fn stops_at_the_maximum_length() {
        let mut rec = Recorder::new(Duration::from_millis(100));
        assert_eq!(rec.push(Channel::Agent, Duration::from_secs(5), &rtp::build(0, 1, 0, 1, &[0xff; 160])), Pushed::Overflow);
    }
}
