//! MP3 through LAME: constant bit rate, 8 kHz (MPEG-2.5 Layer III), mono
//! for voicemail or stereo (two independent channels, not joint) for
//! recordings.
//!
//! LAME starts the stream with an empty "Info" frame; `finish` returns the
//! filled one (frame count, encoder delay and padding, so players know the
//! exact length) as a patch over it. At 16 kbit/s mono a frame (144 bytes)
//! is too small for that tag: LAME leaves it out, there is no patch, and
//! players count LAME's delay and padding (about 0.15 s) as audio.

use mp3lame_encoder::{Bitrate, Builder, FlushGap, InterleavedPcm, Mode, MonoPcm, Quality};

use super::{whole_frames, EncodeError, HeaderPatch, StreamEncoder};

/// Input rates LAME encodes without resampling (MPEG-1, 2 and 2.5).
pub(super) const SAMPLE_RATES: [u32; 9] = [8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000];

/// Default bit rate per channel: the 16 kbit/s that is usual for 8 kHz speech.
const BITRATE_PER_CHANNEL: u32 = 16_000;

/// Enough for LAME's final frames (its documented worst case).
const FLUSH_BYTES: usize = 7_200;

pub(super) struct Mp3Encoder {
    encoder: mp3lame_encoder::Encoder,
    channels: u16,
}

/// The LAME constant bit rate nearest to `bits_per_second`, within what
/// MPEG-2.5 allows at 8 kHz.
fn nearest_bitrate(bits_per_second: u32) -> Bitrate {
    const RATES: [(u32, Bitrate); 7] = [
        (8, Bitrate::Kbps8),
        (16, Bitrate::Kbps16),
        (24, Bitrate::Kbps24),
        (32, Bitrate::Kbps32),
        (40, Bitrate::Kbps40),
        (48, Bitrate::Kbps48),
        (64, Bitrate::Kbps64),
    ];
    let kbps = bits_per_second / 1000;
    RATES.iter().min_by_key(|(k, _)| k.abs_diff(kbps)).map(|(_, b)| *b).unwrap_or(Bitrate::Kbps16)
}

impl Mp3Encoder {
    pub(super) fn new(channels: u16, sample_rate: u32, bitrate: Option<u32>) -> Result<Mp3Encoder, EncodeError> {
        let init = |e: mp3lame_encoder::BuildError| EncodeError::Mp3Init(e.to_string());
        let mut builder = Builder::new().ok_or_else(|| EncodeError::Mp3Init("LAME could not allocate its state".into()))?;
        builder.set_num_channels(channels as u8).map_err(init)?;
        builder.set_sample_rate(sample_rate).map_err(init)?;
        builder.set_output_sample_rate(std::num::NonZeroU32::new(sample_rate)).map_err(init)?;
        builder.set_mode(if channels == 2 { Mode::Stereo } else { Mode::Mono }).map_err(init)?;
        builder.set_brate(nearest_bitrate(bitrate.unwrap_or(BITRATE_PER_CHANNEL * channels as u32))).map_err(init)?;
        builder.set_vbr_mode(mp3lame_encoder::VbrMode::Off).map_err(init)?;
        builder.set_quality(Quality::Good).map_err(init)?;
        builder.set_to_write_vbr_tag(true).map_err(init)?;
        let encoder = builder.build().map_err(init)?;
        Ok(Mp3Encoder { encoder, channels })
    }
}

impl StreamEncoder for Mp3Encoder {
    fn push(&mut self, frames: &[i16], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let n = whole_frames(frames.len(), self.channels)?;
        out.reserve(mp3lame_encoder::max_required_buffer_size(n));
        let encoded = if self.channels == 2 {
            self.encoder.encode_to_vec(InterleavedPcm(frames), out)
        } else {
            self.encoder.encode_to_vec(MonoPcm(frames), out)
        };
        encoded.map_err(|e| EncodeError::Mp3(e.to_string()))?;
        Ok(())
    }

    fn finish(mut self: Box<Self>, out: &mut Vec<u8>) -> Result<Option<HeaderPatch>, EncodeError> {
        out.reserve(FLUSH_BYTES);
        self.encoder.flush_to_vec::<FlushGap>(out).map_err(|e| EncodeError::Mp3(e.to_string()))?;
        let mut tag = Vec::with_capacity(self.encoder.lame_tag_size());
        Ok(self.encoder.lame_tag_encode_to_vec(&mut tag).map(|_| HeaderPatch { offset: 0, bytes: tag }))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use symphonia::core::audio::SampleBuffer;
    use symphonia::core::codecs::DecoderOptions;
    use symphonia::core::formats::FormatOptions;
    use symphonia::core::io::MediaSourceStream;
    use symphonia::core::meta::MetadataOptions;
    use symphonia::core::probe::Hint;

    use super::super::tests::*;
    use super::super::*;

    /// Decodes an MP3 file with symphonia: (channels, rate, interleaved PCM).
    fn decode(file: Vec<u8>) -> (usize, u32, Vec<i16>) {
        let stream = MediaSourceStream::new(Box::new(Cursor::new(file)), Default::default());
        let mut hint = Hint::new();
        hint.with_extension("mp3");
        let probed = symphonia::default::get_probe()
            .format(&hint, stream, &FormatOptions { enable_gapless: true, ..Default::default() }, &MetadataOptions::default())
            .unwrap();
        let mut format = probed.format;
        let track = format.default_track().unwrap().clone();
        let mut decoder = symphonia::default::get_codecs().make(&track.codec_params, &DecoderOptions::default()).unwrap();
        let mut pcm = Vec::new();
        let (mut channels, mut rate) = (0, 0);
        loop {
            let packet = match format.next_packet() {
                Ok(p) => p,
                Err(symphonia::core::errors::Error::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => panic!("{e}"),
            };
            let audio = decoder.decode(&packet).unwrap();
            let spec = *audio.spec();
            channels = spec.channels.count();
            rate = spec.rate;
            let mut buf = SampleBuffer::<i16>::new(audio.capacity() as u64, spec);
            buf.copy_interleaved_ref(audio);
            pcm.extend_from_slice(buf.samples());
        }
        (channels, rate, pcm)
    }

    #[test]
    fn stereo_tone_decodes_back_with_the_channels_in_place() {
        let samples = stereo_tone(3);
        let (file, patch, lengths) = encode(RecordingFormat::Mp3, 2, &samples, 160);
        let patch = patch.expect("the Info frame");
        assert_eq!(patch.offset, 0);
        assert!(patch.bytes.windows(4).any(|w| w == b"Info"), "CBR streams carry an Info frame");
        // The patch replaces exactly the first frame: the next one follows it.
        let next = patch.bytes.len();
        assert_eq!((file[next], file[next + 1] & 0xe0), (0xff, 0xe0), "frame sync after the Info frame");
        // 32 kbit/s for 3 s, give or take the frame rounding.
        assert!((11_000..14_000).contains(&file.len()), "{} bytes", file.len());
        let (channels, rate, pcm) = decode(file.clone());
        assert_eq!((channels, rate), (2, 8000));
        let seconds = pcm.len() as f64 / 2.0 / 8000.0;
        assert!((seconds - 3.0).abs() < 0.05, "{seconds} s");
        assert_tones(&pcm, "mp3");
        // LAME hands out a frame (72 ms at 8 kHz) every few pushes.
        assert_streams(&lengths, file.len(), 10, 0.9, "mp3");
    }

    #[test]
    fn mono_voicemail() {
        let samples = crate::media::codec::tone::sine(1000.0, 8000, 8000 * 2, 8000.0);
        let (file, patch, lengths) = encode(RecordingFormat::Mp3, 1, &samples, 80);
        // 16 kbit/s, without an Info frame (it does not fit).
        assert!((3_500..4_700).contains(&file.len()), "{} bytes", file.len());
        assert_eq!(patch, None);
        assert!(!file.windows(4).any(|w| w == b"Info" || w == b"Xing"));
        let (channels, rate, pcm) = decode(file.clone());
        assert_eq!((channels, rate), (1, 8000));
        // Without the tag, LAME's delay and padding are decoded too.
        let seconds = pcm.len() as f64 / 8000.0;
        assert!((2.0..2.25).contains(&seconds), "{seconds} s");
        let n = pcm.len();
        assert_eq!(crate::media::codec::tone::dominant(&pcm[n / 4..3 * n / 4], 8000, &CANDIDATES).0, 1000.0);
        // LAME holds about 0.35 s at 8 kHz (its frame, look-ahead and bit
        // reservoir): the rest of a 2 s clip comes out at `finish`.
        assert_streams(&lengths, file.len(), 20, 0.75, "mp3 mono");
    }

    #[test]
    fn bitrate_hints_round_to_what_mpeg_allows() {
        assert!(matches!(nearest_bitrate(20_000), Bitrate::Kbps16 | Bitrate::Kbps24));
        assert!(matches!(nearest_bitrate(31_000), Bitrate::Kbps32));
        assert!(matches!(nearest_bitrate(1_000_000), Bitrate::Kbps64));
        assert!(matches!(nearest_bitrate(0), Bitrate::Kbps8));
    }

    use super::{nearest_bitrate, Bitrate};
}
