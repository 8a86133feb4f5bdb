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
    let mut reader = hound::WavReader::new(Cursor::new(bytes)).context("not a valid WAV file")?;
    let spec = reader.spec();
    let channels = spec.channels as usize;
    let block = (spec.sample_rate / 50).max(1) as usize;
    let samples: Vec<f64> = reader.samples::<i32>().map(|s| s.map(|v| v as f64)).collect::<Result<_, _>>()?;
    let mut shares = Vec::with_capacity(channels);
    for channel in 0..channels {
        let signal: Vec<f64> = samples.iter().skip(channel).step_by(channels).copied().collect();
        let (mut tone, mut total) = (0.0, 0.0);
        for chunk in signal.chunks_exact(block) {
            let (mut re, mut im) = (0.0, 0.0);
            for (i, x) in chunk.iter().enumerate() {
                let phase = 2.0 * std::f64::consts::PI * frequency * i as f64 / spec.sample_rate as f64;
                re += x * phase.cos();
                im += x * phase.sin();
            }
            // A sine of amplitude A gives re² + im² = (A·N/2)², i.e. energy
            // A²·N/2 = 2·(re² + im²)/N over the block.
            tone += 2.0 * (re * re + im * im) / block as f64;
            total += chunk.iter().map(|x| x * x).sum::<f64>();
        }
        shares.push(if total > 0.0 { (tone / total).min(1.0) } else { 0.0 });
    }
    Ok(shares)
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
    fn refuses_what_is_not_a_wav() {
        assert!(WavSummary::parse(b"RIFF....not a wave").is_err());
    }
}
