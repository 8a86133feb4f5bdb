//! The audio every endpoint sends, made once at start-up: a voice-like
//! signal (a 140 Hz buzz with its harmonics, shaped into syllables of
//! about 200 ms with short pauses) cut into 20 ms frames, encoded as Opus
//! (48 kHz mono, 32 kbit/s, as a browser sends speech) and as PCMU.

use anyhow::Context;

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

/// The loop as Opus packets (20 ms each).
pub fn opus_frames() -> anyhow::Result<Vec<Vec<u8>>> {
    let mut encoder = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).context("an Opus encoder")?;
    encoder.set_bitrate(opus::Bitrate::Bits(32_000)).context("Opus bitrate")?;
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
        let opus = opus_frames().unwrap();
        assert_eq!(opus.len(), FRAMES);
        assert!(opus.iter().all(|f| !f.is_empty() && f.len() < 200));
        let pcmu = pcmu_frames();
        assert!(pcmu.iter().all(|f| f.len() == 160));
    }
}
