//! Reading a call recording back: format, length and loudness per channel.

use std::io::Cursor;
use std::time::Duration;

use anyhow::Context as _;

/// RMS (of 16-bit samples) above which a channel counts as carrying sound.
/// The speech in SIPp's `g711a.pcap` measures about 1,900; G.711 silence and
/// comfort noise stay below 50.
pub const AUDIBLE_RMS: f64 = 300.0;

/// What a WAV recording holds.
#[derive(Debug, Clone)]
pub struct WavSummary {
    pub channels: u16,
    pub sample_rate: u32,
    pub bits_per_sample: u16,
    pub duration: Duration,
    /// Root mean square of the samples of each channel.
    pub rms: Vec<f64>,
}

impl WavSummary {
    /// Parses `bytes` as a PCM WAV file (any integer sample width hound
    /// reads) and measures it.
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Self> {
        let mut reader = hound::WavReader::new(Cursor::new(bytes)).context("not a valid WAV file")?;
        let spec = reader.spec();
        anyhow::ensure!(spec.sample_format == hound::SampleFormat::Int, "WAV samples are not integer PCM: {spec:?}");
        let channels = spec.channels as usize;
        anyhow::ensure!(channels > 0, "WAV declares no channels");
        let scale = match spec.bits_per_sample {
            8 => 256.0,
            16 => 1.0,
            24 => 1.0 / 256.0,
            32 => 1.0 / 65_536.0,
            bits => anyhow::bail!("unexpected WAV sample width {bits}"),
        };
        let mut sums = vec![0f64; channels];
        let mut count = 0u64;
        for (i, sample) in reader.samples::<i32>().enumerate() {
            let value = sample.context("truncated or corrupt WAV data")? as f64 * scale;
            sums[i % channels] += value * value;
            if i % channels == channels - 1 {
                count += 1;
            }
        }
        let frames = count.max(1) as f64;
        Ok(Self {
            channels: spec.channels,
            sample_rate: spec.sample_rate,
            bits_per_sample: spec.bits_per_sample,
            duration: Duration::from_secs_f64(count as f64 / spec.sample_rate as f64),
            rms: sums.into_iter().map(|s| (s / frames).sqrt()).collect(),
        })
    }
}

/// For each channel of the WAV in `bytes`: the share of its energy that lies
/// at `frequency` Hz (0 to 1). A channel carrying a pure tone of that
/// frequency scores near 1; speech, silence or another tone near 0.
///
/// Measured per 20 ms block by correlating with a sine and a cosine of the
/// frequency (a single-bin DFT), then weighted by energy over the whole file.
pub fn tone_share(bytes: &[u8], frequency: f64) -> anyhow::Result<Vec<f64>> {
    let (channels, rate) = read_channels(bytes)?;
    let block = (rate / 50).max(1) as usize;
    Ok(channels
        .iter()
        .map(|signal| {
            let (tone, total) = signal.chunks_exact(block).map(|chunk| block_energies(chunk, frequency, rate)).fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
            share(tone, total)
        })
        .collect())
}

/// One window of a channel, as [`windows`] measures it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Seconds from the start of the file to the start of the window.
    pub start: f64,
    /// Root mean square of its samples (16-bit scale, as [`AUDIBLE_RMS`]).
    pub rms: f64,
    /// Share of its energy at the frequency asked for, as [`tone_share`].
    pub tone_share: f64,
}

/// The first channel of the WAV in `bytes` cut into windows of `window`
/// (a whole number of 20 ms blocks; a last, shorter window is left out),
/// each with its loudness and the share of its energy at `frequency` Hz:
/// what a listener heard second by second.
pub fn windows(bytes: &[u8], frequency: f64, window: Duration) -> anyhow::Result<Vec<Window>> {
    let (channels, rate) = read_channels(bytes)?;
    let signal = channels.first().context("WAV declares no channels")?;
    let block = (rate / 50).max(1) as usize;
    let blocks = ((window.as_secs_f64() * rate as f64) as usize / block).max(1);
    let mut out = Vec::new();
    for (i, piece) in signal.chunks_exact(block * blocks).enumerate() {
        let (tone, total) = piece.chunks_exact(block).map(|chunk| block_energies(chunk, frequency, rate)).fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        out.push(Window {
            start: (i * block * blocks) as f64 / rate as f64,
            rms: (total / piece.len() as f64).sqrt(),
            tone_share: share(tone, total),
        });
    }
    Ok(out)
}

/// The samples of each channel of the WAV in `bytes` on the 16-bit scale,
/// and its sample rate.
fn read_channels(bytes: &[u8]) -> anyhow::Result<(Vec<Vec<f64>>, u32)> {
    let mut reader = hound::WavReader::new(Cursor::new(bytes)).context("not a valid WAV file")?;
    let spec = reader.spec();
    anyhow::ensure!(spec.sample_format == hound::SampleFormat::Int, "WAV samples are not integer PCM: {spec:?}");
    let scale = 2f64.powi(16 - spec.bits_per_sample as i32);
    let channels = spec.channels as usize;
    let samples: Vec<f64> = reader.samples::<i32>().map(|s| s.map(|v| v as f64 * scale)).collect::<Result<_, _>>().context("truncated or corrupt WAV data")?;
    Ok(((0..channels).map(|c| samples.iter().skip(c).step_by(channels).copied().collect()).collect(), spec.sample_rate))
}

/// The energy of one block at `frequency` and its whole energy.
fn block_energies(chunk: &[f64], frequency: f64, rate: u32) -> (f64, f64) {
    let (mut re, mut im) = (0.0, 0.0);
    for (i, x) in chunk.iter().enumerate() {
        let phase = 2.0 * std::f64::consts::PI * frequency * i as f64 / rate as f64;
        re += x * phase.cos();
        im += x * phase.sin();
    }
    // A sine of amplitude A gives re² + im² = (A·N/2)², i.e. energy
    // A²·N/2 = 2·(re² + im²)/N over the block.
    (2.0 * (re * re + im * im) / chunk.len() as f64, chunk.iter().map(|x| x * x).sum::<f64>())
}

fn share(tone: f64, total: f64) -> f64 {
    if total > 0.0 {
        (tone / total).min(1.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stereo 8 kHz WAV: a 1 kHz tone on the right, a 350 Hz tone on the left.
    fn two_tones() -> Vec<u8> {
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 8_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut out = Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new(&mut out, spec).unwrap();
        for i in 0..16_000 {
            let t = i as f64 / 8_000.0;
            writer.write_sample((6_000.0 * (2.0 * std::f64::consts::PI * 350.0 * t).sin()) as i16).unwrap();
            writer.write_sample((6_000.0 * (2.0 * std::f64::consts::PI * 1_000.0 * t).sin()) as i16).unwrap();
        }
        writer.finalize().unwrap();
        out.into_inner()
    }

    #[test]
    fn measures_length_and_loudness_per_channel() {
        let summary = WavSummary::parse(&two_tones()).unwrap();
        assert_eq!(summary.channels, 2);
        assert_eq!(summary.duration, Duration::from_secs(2));
        for rms in summary.rms {
            // A sine of amplitude A has RMS A/√2.
            assert!((rms - 6_000.0 / 2f64.sqrt()).abs() < 10.0, "{rms}");
        }
    }

    #[test]
    fn tells_which_channel_holds_the_tone() {
        let shares = tone_share(&two_tones(), 1_000.0).unwrap();
        assert!(shares[0] < 0.05, "{shares:?}");
        assert!(shares[1] > 0.95, "{shares:?}");
    }

    #[test]
    fn tells_second_by_second_where_the_tone_is() {
        // Mono 8 kHz: a second of 600 Hz, a second of 350 Hz, a second of
        // silence, a second of 600 Hz under noise of the same loudness, and
        // half a second of 600 Hz that makes no whole window.
        let spec = hound::WavSpec { channels: 1, sample_rate: 8_000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
        let mut out = Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new(&mut out, spec).unwrap();
        let sine = |f: f64, i: usize| 6_000.0 * (2.0 * std::f64::consts::PI * f * i as f64 / 8_000.0).sin();
        let mut noise = 1u32;
        for i in 0..8_000 {
            writer.write_sample(sine(600.0, i) as i16).unwrap();
        }
        for i in 0..8_000 {
            writer.write_sample(sine(350.0, i) as i16).unwrap();
        }
        for _ in 0..8_000 {
            writer.write_sample(0i16).unwrap();
        }
        for i in 0..8_000 {
            noise = noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let n = ((noise >> 16) as f64 / 65_536.0 - 0.5) * 2.0 * 6_000.0 * 3f64.sqrt() / 2f64.sqrt();
            writer.write_sample((sine(600.0, i) + n) as i16).unwrap();
        }
        for i in 0..4_000 {
            writer.write_sample(sine(600.0, i) as i16).unwrap();
        }
        writer.finalize().unwrap();
        let w = windows(&out.into_inner(), 600.0, Duration::from_secs(1)).unwrap();
        assert_eq!(w.iter().map(|w| w.start).collect::<Vec<_>>(), [0.0, 1.0, 2.0, 3.0], "whole seconds only: {w:?}");
        assert!(w[0].tone_share > 0.95 && (w[0].rms - 6_000.0 / 2f64.sqrt()).abs() < 10.0, "{w:?}");
        assert!(w[1].tone_share < 0.05 && w[1].rms > AUDIBLE_RMS, "another tone: {w:?}");
        assert!(w[2].rms == 0.0 && w[2].tone_share == 0.0, "silence: {w:?}");
        assert!(w[3].tone_share > 0.4 && w[3].tone_share < 0.6, "as much noise as tone: {w:?}");
    }

    #[test]
    fn refuses_what_is_not_a_wav() {
        assert!(WavSummary::parse(b"RIFF....not a wave").is_err());
    }
}
