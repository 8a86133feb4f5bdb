//! WAV: a 44-byte RIFF/WAVE header, then 16-bit little-endian PCM.
//!
//! The header goes out with the first samples, its RIFF and data sizes set
//! to 0xFFFFFFFF ("unknown length", which tools reading a stream accept);
//! `finish` patches the real sizes in. The format's 32-bit sizes end a WAV
//! at 4 GiB, about 37 hours of stereo 8 kHz.

use super::{whole_frames, EncodeError, HeaderPatch, StreamEncoder};

const HEADER_BYTES: usize = 44;
const UNKNOWN_SIZE: u32 = u32::MAX;

pub(super) struct WavEncoder {
    channels: u16,
    sample_rate: u32,
    header_written: bool,
    data_bytes: u64,
}

impl WavEncoder {
    pub(super) fn new(channels: u16, sample_rate: u32) -> WavEncoder {
        WavEncoder { channels, sample_rate, header_written: false, data_bytes: 0 }
    }

    fn header(&self, riff_size: u32, data_size: u32) -> [u8; HEADER_BYTES] {
        let block_align = self.channels * 2;
        let mut h = [0u8; HEADER_BYTES];
        let fields: [&[u8]; 13] = [
            b"RIFF",
            &riff_size.to_le_bytes(),
            b"WAVE",
            b"fmt ",
            &16u32.to_le_bytes(),
            &1u16.to_le_bytes(), // PCM
            &self.channels.to_le_bytes(),
            &self.sample_rate.to_le_bytes(),
            &(self.sample_rate * block_align as u32).to_le_bytes(),
            &block_align.to_le_bytes(),
            &16u16.to_le_bytes(),
            b"data",
            &data_size.to_le_bytes(),
        ];
        let mut at = 0;
        for field in fields {
            h[at..at + field.len()].copy_from_slice(field);
            at += field.len();
        }
        h
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.header_written {
            out.extend_from_slice(&self.header(UNKNOWN_SIZE, UNKNOWN_SIZE));
            self.header_written = true;
        }
    }
}

impl StreamEncoder for WavEncoder {
    fn push(&mut self, frames: &[i16], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        whole_frames(frames.len(), self.channels)?;
        let bytes = frames.len() as u64 * 2;
        if HEADER_BYTES as u64 - 8 + self.data_bytes + bytes > u32::MAX as u64 {
            return Err(EncodeError::WavTooLong);
        }
        self.start(out);
        out.reserve(frames.len() * 2);
        for s in frames {
            out.extend_from_slice(&s.to_le_bytes());
        }
        self.data_bytes += bytes;
        Ok(())
    }

    fn finish(mut self: Box<Self>, out: &mut Vec<u8>) -> Result<Option<HeaderPatch>, EncodeError> {
        self.start(out);
        let data = self.data_bytes as u32; // bounded by `push`
        Ok(Some(HeaderPatch { offset: 0, bytes: self.header(HEADER_BYTES as u32 - 8 + data, data).to_vec() }))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::super::tests::*;
    use super::super::*;

    #[test]
    fn stereo_tone_reads_back_with_hound() {
        let samples = stereo_tone(3);
        let (file, patch, lengths) = encode(RecordingFormat::Wav, 2, &samples, 160);
        assert_eq!(patch.unwrap().offset, 0);
        let mut reader = hound::WavReader::new(Cursor::new(&file)).unwrap();
        let spec = reader.spec();
        assert_eq!((spec.channels, spec.sample_rate, spec.bits_per_sample), (2, 8000, 16));
        assert_eq!(reader.duration(), 3 * 8000);
        let back: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap()).collect();
        assert_eq!(back, samples, "PCM is stored losslessly, left first");
        assert_tones(&back, "wav");
        // Every push is on its way at once: the header and its samples.
        assert_eq!(lengths[0], 44 + 160 * 4);
        assert!(lengths.windows(2).all(|w| w[1] - w[0] == 160 * 4));
        assert_streams(&lengths, file.len(), 0, 1.0, "wav");
    }

    #[test]
    fn unpatched_header_says_unknown_length_and_empty_file_is_valid() {
        let mut enc = stream_encoder(RecordingFormat::Wav, 1, 8000, None).unwrap();
        let mut out = Vec::new();
        enc.push(&[1, -1], &mut out).unwrap();
        assert_eq!(&out[4..8], &[0xff; 4]);
        assert_eq!(&out[40..44], &[0xff; 4]);
        let patch = enc.finish(&mut out).unwrap().unwrap();
        out[..44].copy_from_slice(&patch.bytes);
        let reader = hound::WavReader::new(Cursor::new(&out)).unwrap();
        assert_eq!(reader.duration(), 2);

        let enc = stream_encoder(RecordingFormat::Wav, 1, 8000, None).unwrap();
        let mut out = Vec::new();
        let patch = enc.finish(&mut out).unwrap().unwrap();
        assert_eq!(out.len(), 44);
        out.copy_from_slice(&patch.bytes);
        assert_eq!(hound::WavReader::new(Cursor::new(&out)).unwrap().duration(), 0);
    }

    #[test]
    fn wav_stops_at_four_gibibytes() {
        let mut enc = wav_near_limit();
        let mut out = Vec::new();
        assert!(matches!(enc.push(&[0; 8], &mut out), Err(EncodeError::WavTooLong)));
        assert!(out.is_empty());
        enc.push(&[0; 2], &mut out).unwrap();
    }

    fn wav_near_limit() -> super::WavEncoder {
        let mut enc = super::WavEncoder::new(1, 8000);
        enc.header_written = true;
        enc.data_bytes = u32::MAX as u64 - 36 - 4;
        enc
    }
}
