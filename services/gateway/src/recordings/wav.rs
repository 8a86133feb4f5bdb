//! Making a WAV whose writer died usable: its RIFF and `data` sizes are set
//! from what reached the file.
//!
//! A WAV written while the call runs has placeholder sizes in its header
//! until the writer patches them at the end. When the gateway dies mid-call
//! the spool keeps the audio but not the patch; [`fix_sizes`] computes it
//! from the file's length (the audio is whole frames; a frame cut short by
//! the crash is dropped, it holds no complete sample).
//!
//! Sans-IO: the header bytes and the file length in, the patch out.

/// How to repair a WAV file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WavFix {
    /// The file's new length (whole frames of audio).
    pub len: u64,
    /// Bytes to write at an offset: the RIFF size and the `data` size.
    pub patches: Vec<(u64, [u8; 4])>,
    /// Bytes of audio in the `data` chunk.
    pub data_bytes: u64,
    /// Bytes of audio per second, from the `fmt ` chunk.
    pub byte_rate: u32,
}

impl WavFix {
    /// How long the audio lasts.
    pub fn duration_ms(&self) -> u64 {
        if self.byte_rate == 0 {
            return 0;
        }
        self.data_bytes.saturating_mul(1000) / u64::from(self.byte_rate)
    }
}

/// Why a file cannot be repaired as a WAV.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    #[error("not a RIFF/WAVE file")]
    NotWav,
    #[error("no `fmt ` chunk before the audio")]
    NoFormat,
    #[error("no `data` chunk in the first {0} bytes")]
    NoData(usize),
}

/// The repair of a WAV whose first bytes are `head` (at least up to the
/// start of its `data` chunk) and whose length is `file_len`.
pub fn fix_sizes(head: &[u8], file_len: u64) -> Result<WavFix, WavError> {
    if head.len() < 12 || &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return Err(WavError::NotWav);
    }
    let mut at = 12usize;
    let mut format: Option<(u32, u16)> = None; // (byte rate, block align)
    while at + 8 <= head.len() {
        let id = &head[at..at + 4];
        let size = u32::from_le_bytes([head[at + 4], head[at + 5], head[at + 6], head[at + 7]]) as usize;
        let body = at + 8;
        if id == b"data" {
            let (byte_rate, block_align) = format.ok_or(WavError::NoFormat)?;
            let available = file_len.saturating_sub(body as u64);
            let align = u64::from(block_align.max(1));
            let data_bytes = available - available % align;
            let len = body as u64 + data_bytes;
            let riff = u32::try_from(len - 8).unwrap_or(u32::MAX);
            let data = u32::try_from(data_bytes).unwrap_or(u32::MAX);
            return Ok(WavFix {
                len,
                patches: vec![(4, riff.to_le_bytes()), (at as u64 + 4, data.to_le_bytes())],
                data_bytes,
                byte_rate,
            });
        }
        if id == b"fmt " {
            if size < 16 || body + 16 > head.len() {
                return Err(WavError::NoFormat);
            }
            let byte_rate = u32::from_le_bytes([head[body + 8], head[body + 9], head[body + 10], head[body + 11]]);
            let block_align = u16::from_le_bytes([head[body + 12], head[body + 13]]);
            format = Some((byte_rate, block_align));
        }
        // Chunks are padded to an even size.
        at = body.saturating_add(size).saturating_add(size & 1);
    }
    Err(WavError::NoData(head.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stereo 8 kHz 16-bit WAV header as a streaming writer leaves it
    /// before the end: sizes zero.
    fn header() -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(b"RIFF");
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(b"WAVEfmt ");
        h.extend_from_slice(&16u32.to_le_bytes());
        h.extend_from_slice(&1u16.to_le_bytes()); // PCM
        h.extend_from_slice(&2u16.to_le_bytes()); // channels
        h.extend_from_slice(&8000u32.to_le_bytes());
        h.extend_from_slice(&32000u32.to_le_bytes()); // byte rate
        h.extend_from_slice(&4u16.to_le_bytes()); // block align
        h.extend_from_slice(&16u16.to_le_bytes());
        h.extend_from_slice(b"data");
        h.extend_from_slice(&0u32.to_le_bytes());
        h
    }

    #[test]
    fn sizes_come_from_the_file_length() {
        let fix = fix_sizes(&header(), 44 + 32_000).unwrap();
        assert_eq!(fix.len, 44 + 32_000);
        assert_eq!(fix.patches, vec![(4, (36u32 + 32_000).to_le_bytes()), (40, 32_000u32.to_le_bytes())]);
        assert_eq!(fix.duration_ms(), 1000);
    }

    #[test]
    fn a_frame_cut_short_is_dropped() {
        let fix = fix_sizes(&header(), 44 + 32_003).unwrap();
        assert_eq!(fix.len, 44 + 32_000);
        assert_eq!(fix.data_bytes, 32_000);
    }

    #[test]
    fn a_header_without_audio_has_an_empty_data_chunk() {
        let fix = fix_sizes(&header(), 44).unwrap();
        assert_eq!(fix.data_bytes, 0);
        assert_eq!(fix.patches[0], (4, 36u32.to_le_bytes()));
    }

    #[test]
    fn other_chunks_before_the_audio_are_skipped() {
        let mut h = header();
        let data = h.split_off(36);
        h.extend_from_slice(b"LIST");
        h.extend_from_slice(&3u32.to_le_bytes());
        h.extend_from_slice(b"abc\0"); // odd size, padded
        h.extend_from_slice(&data);
        let fix = fix_sizes(&h, 56 + 400).unwrap();
        assert_eq!(fix.patches[1], (52, 400u32.to_le_bytes()));
    }

    #[test]
    fn what_is_no_wav_is_refused_without_panicking() {
        assert_eq!(fix_sizes(b"", 0), Err(WavError::NotWav));
        assert_eq!(fix_sizes(b"ID3\x03 some mp3", 100), Err(WavError::NotWav));
        assert_eq!(fix_sizes(&header()[..30], 100), Err(WavError::NoFormat));
        let mut no_fmt = header();
        no_fmt.drain(12..36);
        assert_eq!(fix_sizes(&no_fmt, 100), Err(WavError::NoFormat));
        let mut huge = header();
        huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(fix_sizes(&huge, 100).is_err());
    }
}
