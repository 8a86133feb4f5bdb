//! Recording and voicemail file encoders: WAV (16-bit PCM), Ogg/Opus
//! (RFC 7845) and MP3, fed with 8 kHz linear PCM as the call goes on.
//!
//! Streaming, so a long call never sits whole in memory: every `push` hands
//! back the bytes to append to the file (or the upload) so far, and each
//! encoder holds at most about a second of audio. Formats whose header
//! carries the length (WAV's RIFF and data sizes, MP3's LAME Info frame) say
//! so at `finish` with a [`HeaderPatch`]: bytes to overwrite at an offset of
//! the stream already written. A writer that cannot seek (a multipart
//! upload) may drop the patch: the file is still playable, with the length
//! unknown to its header.
//!
//! Recordings are stereo (customer left, agent right); voicemail is mono.
//! Sans-IO: samples in, bytes out; the caller owns files and uploads.

mod mp3;
mod ogg_opus;
mod wav;

use serde::{Deserialize, Serialize};

/// The file format of recordings (voicemail is always [`RecordingFormat::Mp3`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordingFormat {
    /// RIFF WAVE, 16-bit PCM: lossless, 8 kB/s per channel.
    #[default]
    Wav,
    /// Opus in Ogg (RFC 7845): small, for speech.
    OggOpus,
    /// MPEG-2.5 Layer III at 8 kHz, constant bit rate: plays everywhere.
    Mp3,
}

impl RecordingFormat {
    /// File name extension, without the dot (`.opus` per RFC 7845).
    pub fn extension(self) -> &'static str {
        match self {
            RecordingFormat::Wav => "wav",
            RecordingFormat::OggOpus => "opus",
            RecordingFormat::Mp3 => "mp3",
        }
    }

    /// The media type served with the file.
    pub fn content_type(self) -> &'static str {
        match self {
            RecordingFormat::Wav => "audio/wav",
            RecordingFormat::OggOpus => "audio/ogg; codecs=opus",
            RecordingFormat::Mp3 => "audio/mpeg",
        }
    }

    /// Container and codec, as named in call events.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingFormat::Wav => "wav/pcm_s16le",
            RecordingFormat::OggOpus => "ogg/opus",
            RecordingFormat::Mp3 => "mp3",
        }
    }
}

/// Bytes to overwrite, once the stream is complete, at `offset` from the
/// start of what the encoder produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderPatch {
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// Why audio could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("{format} recordings of {channels} channel(s) at {sample_rate} Hz are not supported: use 1 or 2 channels at 8000 Hz")]
    Unsupported { format: &'static str, channels: u16, sample_rate: u32 },
    #[error("{samples} samples do not make whole frames of {channels} interleaved channel(s)")]
    PartialFrame { samples: usize, channels: u16 },
    #[error("the WAV recording reached the format's 4 GiB limit; configure ogg-opus or mp3 for calls this long")]
    WavTooLong,
    #[error("cannot set up the Opus encoder: {0} (check the recording's sample rate, channels and bit rate; libopus is built in)")]
    OpusInit(crate::media::opus::Error),
    #[error("Opus encoding failed: {0}")]
    Opus(crate::media::opus::Error),
    #[error("cannot set up the MP3 encoder: {0}")]
    Mp3Init(String),
    #[error("MP3 encoding failed: {0}")]
    Mp3(String),
    #[error("Ogg paging failed: {0}")]
    Ogg(#[from] std::io::Error),
}

/// An encoder of one recording, fed as the call goes on.
pub trait StreamEncoder: Send {
    /// Encodes `frames` (interleaved, as many channels as given at creation)
    /// and appends the bytes ready for the file to `out`; may append nothing
    /// while a frame or page fills.
    fn push(&mut self, frames: &[i16], out: &mut Vec<u8>) -> Result<(), EncodeError>;

    /// Appends the rest of the stream to `out` and returns the patch to apply
    /// to its start, if the format has one.
    fn finish(self: Box<Self>, out: &mut Vec<u8>) -> Result<Option<HeaderPatch>, EncodeError>;
}

/// An encoder for `channels` (1 or 2) interleaved channels at `sample_rate`
/// (8000 for the gateway's audio). `bitrate` (bits per second, all channels
/// together) is a hint for the lossy formats, which default to 12 kbit/s
/// (Opus) or 16 kbit/s (MP3) per channel; WAV ignores it.
pub fn stream_encoder(
    format: RecordingFormat,
    channels: u16,
    sample_rate: u32,
    bitrate: Option<u32>,
) -> Result<Box<dyn StreamEncoder>, EncodeError> {
    let rate_ok = match format {
        RecordingFormat::Wav => sample_rate > 0,
        RecordingFormat::OggOpus => ogg_opus::SAMPLE_RATES.contains(&sample_rate),
        RecordingFormat::Mp3 => mp3::SAMPLE_RATES.contains(&sample_rate),
    };
    if !(1..=2).contains(&channels) || !rate_ok {
        return Err(EncodeError::Unsupported { format: format.as_str(), channels, sample_rate });
    }
    Ok(match format {
        RecordingFormat::Wav => Box::new(wav::WavEncoder::new(channels, sample_rate)),
        RecordingFormat::OggOpus => Box::new(ogg_opus::OggOpusEncoder::new(channels, sample_rate, bitrate)?),
        RecordingFormat::Mp3 => Box::new(mp3::Mp3Encoder::new(channels, sample_rate, bitrate)?),
    })
}

/// Checks that `samples` interleaved samples are whole frames.
fn whole_frames(samples: usize, channels: u16) -> Result<usize, EncodeError> {
    if samples.is_multiple_of(channels as usize) {
        Ok(samples / channels as usize)
    } else {
        Err(EncodeError::PartialFrame { samples, channels })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::media::codec::tone::{dominant, sine};

    pub const RATE: u32 = 8000;
    pub const CANDIDATES: [f64; 5] = [300.0, 440.0, 1000.0, 1500.0, 2500.0];

    /// `seconds` of 440 Hz on the left (customer) and 1 kHz on the right
    /// (agent), interleaved.
    pub fn stereo_tone(seconds: usize) -> Vec<i16> {
        let n = seconds * RATE as usize;
        let left = sine(440.0, RATE, n, 8000.0);
        let right = sine(1000.0, RATE, n, 8000.0);
        left.iter().zip(&right).flat_map(|(l, r)| [*l, *r]).collect()
    }

    /// Encodes `samples` pushed `chunk` frames at a time; returns the bytes
    /// with the patch applied, the patch, and the output length after every
    /// push.
    pub fn encode(
        format: RecordingFormat,
        channels: u16,
        samples: &[i16],
        chunk: usize,
    ) -> (Vec<u8>, Option<HeaderPatch>, Vec<usize>) {
        let mut enc = stream_encoder(format, channels, RATE, None).unwrap();
        let mut file = Vec::new();
        let mut lengths = Vec::new();
        for piece in samples.chunks(chunk * channels as usize) {
            let mut out = Vec::new();
            enc.push(piece, &mut out).unwrap();
            file.extend_from_slice(&out);
            lengths.push(file.len());
        }
        let patch = enc.finish(&mut file).unwrap();
        if let Some(p) = &patch {
            let at = p.offset as usize;
            file[at..at + p.bytes.len()].copy_from_slice(&p.bytes);
        }
        (file, patch, lengths)
    }

    /// Splits interleaved stereo into its channels.
    pub fn split(interleaved: &[i16]) -> (Vec<i16>, Vec<i16>) {
        (interleaved.iter().step_by(2).copied().collect(), interleaved.iter().skip(1).step_by(2).copied().collect())
    }

    /// Asserts 440 Hz on the left, 1 kHz on the right, measured on the
    /// middle of the recording (away from codec start-up and tail).
    pub fn assert_tones(interleaved: &[i16], what: &str) {
        let (left, right) = split(interleaved);
        let n = left.len();
        let (l, r) = (&left[n / 4..3 * n / 4], &right[n / 4..3 * n / 4]);
        let (lhz, lmargin) = dominant(l, RATE, &CANDIDATES);
        let (rhz, rmargin) = dominant(r, RATE, &CANDIDATES);
        assert_eq!((lhz, rhz), (440.0, 1000.0), "{what}: channels carry {lhz} Hz and {rhz} Hz");
        assert!(lmargin > 20.0 && rmargin > 20.0, "{what}: tones only {lmargin}x / {rmargin}x above the rest");
    }

    /// Asserts the output grew as the input came: never more than `max_stall`
    /// pushes without new bytes, and at least `min_share` of the file out
    /// before `finish`.
    pub fn assert_streams(lengths: &[usize], total: usize, max_stall: usize, min_share: f64, what: &str) {
        let mut stall = 0;
        let mut longest = 0;
        for pair in lengths.windows(2) {
            stall = if pair[1] > pair[0] { 0 } else { stall + 1 };
            longest = longest.max(stall);
        }
        assert!(longest <= max_stall, "{what}: {longest} pushes in a row gave no bytes");
        let before_finish = *lengths.last().unwrap();
        assert!(
            before_finish as f64 >= min_share * total as f64,
            "{what}: only {before_finish} of {total} bytes out before finish"
        );
    }

    #[test]
    fn formats_are_named_for_config_files_and_events() {
        for (format, name) in [(RecordingFormat::Wav, "\"wav\""), (RecordingFormat::OggOpus, "\"ogg-opus\""), (RecordingFormat::Mp3, "\"mp3\"")] {
            assert_eq!(serde_json::to_string(&format).unwrap(), name);
            assert_eq!(serde_json::from_str::<RecordingFormat>(name).unwrap(), format);
        }
        assert!(serde_json::from_str::<RecordingFormat>("\"ogg\"").is_err());
        assert_eq!(RecordingFormat::Wav.as_str(), "wav/pcm_s16le");
        assert_eq!(RecordingFormat::OggOpus.as_str(), "ogg/opus");
        assert_eq!(RecordingFormat::OggOpus.extension(), "opus");
        assert_eq!(RecordingFormat::Mp3.content_type(), "audio/mpeg");
        assert_eq!(RecordingFormat::default(), RecordingFormat::Wav);
    }

    #[test]
    fn bad_shapes_are_refused() {
        for format in [RecordingFormat::Wav, RecordingFormat::OggOpus, RecordingFormat::Mp3] {
            assert!(matches!(stream_encoder(format, 0, RATE, None), Err(EncodeError::Unsupported { .. })));
            assert!(matches!(stream_encoder(format, 3, RATE, None), Err(EncodeError::Unsupported { .. })));
            let mut enc = stream_encoder(format, 2, RATE, None).unwrap();
            let mut out = Vec::new();
            let err = enc.push(&[1, 2, 3], &mut out).unwrap_err();
            assert!(matches!(err, EncodeError::PartialFrame { samples: 3, channels: 2 }), "{err}");
        }
        assert!(matches!(stream_encoder(RecordingFormat::OggOpus, 2, 44_100, None), Err(EncodeError::Unsupported { .. })));
        assert!(matches!(stream_encoder(RecordingFormat::Mp3, 1, 7_000, None), Err(EncodeError::Unsupported { .. })));
    }

    /// Sizes of a minute of a stereo 8 kHz recording, at the default bit
    /// rates, with speech-like content (a tone under noise on each side).
    #[test]
    fn bytes_per_minute_of_stereo() {
        let mut x = 0x9e37_79b9u32;
        let mut noise = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 20) as i16 - 2048
        };
        let tone = stereo_tone(60);
        let samples: Vec<i16> = tone.iter().map(|s| s / 2 + noise()).collect();
        let mut sizes = Vec::new();
        for format in [RecordingFormat::Wav, RecordingFormat::OggOpus, RecordingFormat::Mp3] {
            let (file, _, _) = encode(format, 2, &samples, 160);
            println!("{}: {} bytes per minute of stereo 8 kHz", format.as_str(), file.len());
            sizes.push(file.len());
        }
        assert_eq!(sizes[0], 44 + 60 * 8000 * 2 * 2);
        // At most 24 kbit/s (variable) and exactly 32 kbit/s for 60 s, with a
        // little container overhead.
        assert!((100_000..185_000).contains(&sizes[1]), "ogg/opus {}", sizes[1]);
        assert!((230_000..250_000).contains(&sizes[2]), "mp3 {}", sizes[2]);
    }
}
