//! The audio every endpoint sends, made once at start-up: a voice-like
//! signal (a 140 Hz buzz with its harmonics, shaped into syllables of
//! about 200 ms with short pauses) cut into 20 ms frames, encoded as Opus
//! (48 kHz mono capture, encoded as Chrome does for the Opus parameters
//! the far side's SDP gives: fullband at 32 kbit/s without any) and as
//! PCMU.

use anyhow::Context;
use switchboard_gateway::media::opus;

/// Frames in the loop every sender plays (3 s).
const FRAMES: usize = 150;

/// One 20 ms frame of the voice-like signal at `rate` Hz, frame `n` of the loop.
fn frame(rate: u32, n: usize) -> Vec<i16> {
    let per_frame = rate as usize / 50;
    (0..per_frame)
        .map(|i| {
            let t = (n * per_frame + i) as f64 / rate as f64;
            // Syllables: 4.5 per second, silent for the last quarter of each.
            let phase = (t * 4.5).fract();
            let envelope = if phase < 0.75 { (phase / 0.75 * std::f64::consts::PI).sin() } else { 0.0 };
            let pitch = 140.0 * (1.0 + 0.08 * (t * 1.3 * std::f64::consts::TAU).sin());
            let voice: f64 = (1..=8).map(|h| (t * pitch * h as f64 * std::f64::consts::TAU).sin() / h as f64).sum();
            (voice * envelope * 6_000.0) as i16
        })
        .collect()
}

/// How a browser encodes Opus for a receiver, as Chrome (libwebrtc's
/// `AudioEncoderOpusImpl`) derives it from the receiver's fmtp (RFC 7587
/// §6.1): `maxplaybackrate` (8000 and up, at most 48000) caps the
/// bandwidth, and the bit rate is `maxaveragebitrate` (within 6000 to
/// 510000) or else 12, 20 or 32 kbit/s for a playback rate up to 8, up
/// to 16 or above 16 kHz.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpusTarget {
    pub max_playback_rate: u32,
    pub bitrate: u32,
}

impl Default for OpusTarget {
    fn default() -> Self {
        OpusTarget { max_playback_rate: 48_000, bitrate: 32_000 }
    }
}

impl OpusTarget {
    /// From the parameters of an `a=fmtp` line (`None`: no line).
    pub fn from_fmtp(fmtp: Option<&str>) -> OpusTarget {
        let param = |name: &str| {
            fmtp?.split(';').find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim().parse::<u32>().ok()).flatten()
            })
        };
        let max_playback_rate = param("maxplaybackrate").filter(|r| *r >= 8_000).map_or(48_000, |r| r.min(48_000));
        let bitrate = match param("maxaveragebitrate") {
            Some(b) => b.clamp(6_000, 510_000),
            None if max_playback_rate <= 8_000 => 12_000,
            None if max_playback_rate <= 16_000 => 20_000,
            None => 32_000,
        };
        OpusTarget { max_playback_rate, bitrate }
    }

    /// The encoder bandwidth the playback rate allows.
    fn bandwidth(self) -> opus::Bandwidth {
        match self.max_playback_rate {
            ..=8_000 => opus::Bandwidth::Narrowband,
            ..=12_000 => opus::Bandwidth::Mediumband,
            ..=16_000 => opus::Bandwidth::Wideband,
            ..=24_000 => opus::Bandwidth::Superwideband,
            _ => opus::Bandwidth::Fullband,
        }
    }
}

/// The loop as Opus packets (20 ms each) for `target`.
pub fn opus_frames(target: OpusTarget) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut encoder = opus::Encoder::new(48_000, opus::Channels::Mono).context("an Opus encoder")?;
    encoder.set_bitrate(target.bitrate as i32).context("Opus bitrate")?;
    encoder.set_max_bandwidth(target.bandwidth()).context("Opus bandwidth")?;
    let mut out = Vec::with_capacity(FRAMES);
    let mut buf = vec![0u8; 1500];
    for n in 0..FRAMES {
        let len = encoder.encode(&frame(48_000, n), &mut buf).context("encoding Opus")?;
        out.push(buf[..len].to_vec());
    }
    Ok(out)
}

/// The loop as PCMU payloads (160 bytes each).
pub fn pcmu_frames() -> Vec<Vec<u8>> {
    (0..FRAMES).map(|n| frame(8_000, n).into_iter().map(switchboard_gateway::media::g711::linear_to_ulaw).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_is_encoded() {
        let opus = opus_frames(OpusTarget::default()).unwrap();
        assert_eq!(opus.len(), FRAMES);
        assert!(opus.iter().all(|f| !f.is_empty() && f.len() < 200));
        let narrow = opus_frames(OpusTarget::from_fmtp(Some("minptime=10;maxplaybackrate=8000"))).unwrap();
        let bytes = |frames: &[Vec<u8>]| frames.iter().map(Vec::len).sum::<usize>();
        assert!(bytes(&narrow) * 2 < bytes(&opus), "12 against 32 kbit/s: {} and {} bytes", bytes(&narrow), bytes(&opus));
        let bandwidth = |f: &Vec<u8>| opus::packet::bandwidth(f).unwrap();
        assert!(narrow.iter().all(|f| bandwidth(f) == opus::Bandwidth::Narrowband), "narrowband throughout");
        assert!(opus.iter().any(|f| bandwidth(f) == opus::Bandwidth::Fullband), "fullband without parameters");
        let pcmu = pcmu_frames();
        assert!(pcmu.iter().all(|f| f.len() == 160));
    }

    #[test]
    fn the_opus_target_follows_chromes_reading_of_the_fmtp() {
        let t = |fmtp| OpusTarget::from_fmtp(fmtp);
        assert_eq!(t(None), OpusTarget { max_playback_rate: 48_000, bitrate: 32_000 });
        assert_eq!(t(Some("minptime=10;useinbandfec=1")), OpusTarget::default());
        assert_eq!(t(Some("maxplaybackrate=8000")), OpusTarget { max_playback_rate: 8_000, bitrate: 12_000 });
        assert_eq!(t(Some("maxplaybackrate=16000")), OpusTarget { max_playback_rate: 16_000, bitrate: 20_000 });
        assert_eq!(
            t(Some("minptime=10; maxplaybackrate=8000;sprop-maxcapturerate=8000;maxaveragebitrate=20000")),
            OpusTarget { max_playback_rate: 8_000, bitrate: 20_000 }
        );
        assert_eq!(t(Some("maxplaybackrate=4000;maxaveragebitrate=1000000")), OpusTarget { max_playback_rate: 48_000, bitrate: 510_000 });
        assert_eq!(t(Some("maxaveragebitrate=100")).bitrate, 6_000);
    }
}
