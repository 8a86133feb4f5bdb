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
