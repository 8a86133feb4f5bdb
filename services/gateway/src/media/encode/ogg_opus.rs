//! Ogg/Opus (RFC 7845): an OpusHead page, an OpusTags page, then pages of
//! 20 ms Opus packets whose granule positions count 48 kHz samples,
//! pre-skip included; the last page carries the end-of-stream flag and a
//! granule position that trims the encoder's padding off the end.
//!
//! libopus encodes the 8 kHz input directly (VoIP application); stereo is
//! forced so the customer and agent channels are never folded into one.
//! Pages are closed every second, which bounds what the encoder holds and
//! what a crash can lose.

use ogg::writing::{PacketWriteEndInfo, PacketWriter};

use super::{whole_frames, EncodeError, HeaderPatch, StreamEncoder};
use crate::media::opus;

/// Input rates libopus encodes directly.
pub(super) const SAMPLE_RATES: [u32; 5] = [8_000, 12_000, 16_000, 24_000, 48_000];

/// Packet duration.
const FRAME_MS: u32 = 20;

/// Packets per page: one second.
const PACKETS_PER_PAGE: u64 = 50;

/// Granule positions (and pre-skip) count samples at 48 kHz.
const GRANULE_RATE: u64 = 48_000;

/// Default bit rate per channel.
const BITRATE_PER_CHANNEL: u32 = 12_000;

const MAX_PACKET_BYTES: usize = 4_000;

pub(super) struct OggOpusEncoder {
    encoder: opus::Encoder,
    writer: PacketWriter<'static, Vec<u8>>,
    serial: u32,
    channels: u16,
    /// Samples per channel in one packet.
    frame: usize,
    /// 48 kHz samples per input sample.
    granule_step: u64,
    /// Encoder delay, in input samples.
    lookahead: u64,
    /// Less than one packet of interleaved input.
    pending: Vec<i16>,
    packet: Vec<u8>,
    packets: u64,
    /// Samples per channel pushed so far.
    input: u64,
    headers_written: bool,
}

impl OggOpusEncoder {
    pub(super) fn new(channels: u16, sample_rate: u32, bitrate: Option<u32>) -> Result<OggOpusEncoder, EncodeError> {
        let layout = if channels == 2 { opus::Channels::Stereo } else { opus::Channels::Mono };
        let mut encoder = opus::Encoder::new(sample_rate, layout).map_err(EncodeError::OpusInit)?;
        let bitrate = bitrate.unwrap_or(BITRATE_PER_CHANNEL * channels as u32).clamp(6_000, 256_000);
        encoder.set_bitrate(bitrate as i32).map_err(EncodeError::OpusInit)?;
        encoder.set_force_channels(Some(layout)).map_err(EncodeError::OpusInit)?;
        let lookahead = encoder.lookahead().map_err(EncodeError::OpusInit)?.max(0) as u64;
        let frame = (sample_rate * FRAME_MS / 1000) as usize;
        Ok(OggOpusEncoder {
            encoder,
            writer: PacketWriter::new(Vec::new()),
            serial: rand::random(),
            channels,
            frame,
            granule_step: GRANULE_RATE / sample_rate as u64,
            lookahead,
            pending: Vec::with_capacity(frame * channels as usize),
            packet: Vec::with_capacity(MAX_PACKET_BYTES),
            packets: 0,
            input: 0,
            headers_written: false,
        })
    }

    fn pre_skip(&self) -> u64 {
        self.lookahead * self.granule_step
    }

    fn write_headers(&mut self) -> Result<(), EncodeError> {
        if self.headers_written {
            return Ok(());
        }
        self.headers_written = true;
        let sample_rate = (GRANULE_RATE / self.granule_step) as u32;
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1); // version
        head.push(self.channels as u8);
        head.extend_from_slice(&(self.pre_skip() as u16).to_le_bytes());
        head.extend_from_slice(&sample_rate.to_le_bytes()); // of the input, informational
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // channel mapping family 0: mono or stereo (left, right)
        self.writer.write_packet(head, self.serial, PacketWriteEndInfo::EndPage, 0)?;

        let vendor = opus::version().as_bytes();
        let mut tags = Vec::with_capacity(16 + vendor.len());
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes()); // no user comments
        self.writer.write_packet(tags, self.serial, PacketWriteEndInfo::EndPage, 0)?;
        Ok(())
    }

    /// Encodes one packet of interleaved samples and hands it to the pager,
    /// with the granule position of its end (or `end` for the last one).
    fn encode_packet(&mut self, pcm: &[i16], end: Option<u64>) -> Result<(), EncodeError> {
        self.packet.resize(MAX_PACKET_BYTES, 0);
        let len = self.encoder.encode(pcm, &mut self.packet).map_err(EncodeError::Opus)?;
        self.packets += 1;
        let granule = end.unwrap_or(self.packets * self.frame as u64 * self.granule_step);
        let info = match end {
            Some(_) => PacketWriteEndInfo::EndStream,
            None if self.packets.is_multiple_of(PACKETS_PER_PAGE) => PacketWriteEndInfo::EndPage,
            None => PacketWriteEndInfo::NormalPacket,
        };
        self.writer.write_packet(self.packet[..len].to_vec(), self.serial, info, granule)?;
        Ok(())
    }

    fn drain(&mut self, out: &mut Vec<u8>) {
        out.append(self.writer.inner_mut());
    }
}

impl StreamEncoder for OggOpusEncoder {
    fn push(&mut self, frames: &[i16], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.input += whole_frames(frames.len(), self.channels)? as u64;
        self.write_headers()?;
        let packet_len = self.frame * self.channels as usize;
        let mut rest = frames;
        if !self.pending.is_empty() {
            let take = (packet_len - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == packet_len {
                let pcm = std::mem::take(&mut self.pending);
                let encoded = self.encode_packet(&pcm, None);
                self.pending = pcm;
                self.pending.clear();
                encoded?;
            }
        }
        let mut chunks = rest.chunks_exact(packet_len);
        for pcm in &mut chunks {
            self.encode_packet(pcm, None)?;
        }
        self.pending.extend_from_slice(chunks.remainder());
        self.drain(out);
        Ok(())
    }

    fn finish(mut self: Box<Self>, out: &mut Vec<u8>) -> Result<Option<HeaderPatch>, EncodeError> {
        self.write_headers()?;
        // Encode until the encoder's delay is flushed out too; the last
        // granule position cuts the padding back to exactly the input.
        let needed = self.input + self.lookahead;
        let end = self.lookahead * self.granule_step + self.input * self.granule_step;
        let packet_len = self.frame * self.channels as usize;
        let mut pcm = std::mem::take(&mut self.pending);
        pcm.resize(packet_len, 0);
        loop {
            let last = (self.packets + 1) * self.frame as u64 >= needed;
            // Never behind the previous page, should the delay be zero.
            let granule = end.max(self.packets * self.frame as u64 * self.granule_step);
            self.encode_packet(&pcm, last.then_some(granule))?;
            if last {
                break;
            }
            pcm.fill(0);
        }
        self.drain(out);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::super::tests::*;
    use crate::media::opus;
    use super::super::*;

    struct Decoded {
        channels: u8,
        pre_skip: u16,
        input_rate: u32,
        vendor: String,
        /// Interleaved, pre-skip and end padding trimmed per the granule.
        pcm: Vec<i16>,
        pages: usize,
    }

    /// Reads the stream with the ogg crate and decodes it with libopus at
    /// 8 kHz, as a player would (RFC 7845 §4).
    fn decode(file: &[u8]) -> Decoded {
        let mut reader = ogg::PacketReader::new(Cursor::new(file));
        let head = reader.read_packet_expected().unwrap();
        assert!(head.first_in_stream());
        assert_eq!(&head.data[..8], b"OpusHead");
        assert_eq!(head.data[8], 1);
        let channels = head.data[9];
        let pre_skip = u16::from_le_bytes([head.data[10], head.data[11]]);
        let input_rate = u32::from_le_bytes(head.data[12..16].try_into().unwrap());
        assert_eq!(head.data[18], 0, "mapping family 0");
        assert!(head.last_in_page(), "OpusHead alone on the first page");
        let tags = reader.read_packet_expected().unwrap();
        assert_eq!(&tags.data[..8], b"OpusTags");
        assert!(tags.last_in_page(), "OpusTags ends its page");
        let vendor_len = u32::from_le_bytes(tags.data[8..12].try_into().unwrap()) as usize;
        let vendor = String::from_utf8(tags.data[12..12 + vendor_len].to_vec()).unwrap();

        let layout = if channels == 2 { opus::Channels::Stereo } else { opus::Channels::Mono };
        let mut decoder = opus::Decoder::new(8000, layout).unwrap();
        let mut pcm = Vec::new();
        let mut last_granule = 0;
        let mut ended = false;
        while let Some(p) = reader.read_packet().unwrap() {
            assert!(!ended, "packets after end of stream");
            if p.last_in_page() {
                assert!(p.absgp_page() >= last_granule, "granule positions never go back");
                last_granule = p.absgp_page();
            }
            let mut buf = vec![0i16; 960 * channels as usize];
            let n = decoder.decode(&p.data, &mut buf, false).unwrap();
            pcm.extend_from_slice(&buf[..n * channels as usize]);
            ended = p.last_in_stream();
        }
        assert!(ended, "the last page is flagged end of stream");
        // Granules are 48 kHz; we decoded at 8 kHz.
        let skip = pre_skip as usize / 6;
        let length = (last_granule as usize - pre_skip as usize) / 6;
        assert!(skip + length <= pcm.len() / channels as usize);
        let pcm = pcm[skip * channels as usize..(skip + length) * channels as usize].to_vec();
        let pages = file.windows(4).filter(|w| w == b"OggS").count();
        Decoded { channels, pre_skip, input_rate, vendor, pcm, pages }
    }

    #[test]
    fn stereo_tone_decodes_back_with_the_channels_in_place() {
        let samples = stereo_tone(3);
        let (file, patch, lengths) = encode(RecordingFormat::OggOpus, 2, &samples, 160);
        assert_eq!(patch, None);
        let d = decode(&file);
        assert_eq!(d.channels, 2);
        assert_eq!(d.input_rate, 8000);
        assert!(d.pre_skip > 0 && d.pre_skip.is_multiple_of(6), "pre-skip {}", d.pre_skip);
        assert!(d.vendor.contains("libopus"), "{}", d.vendor);
        assert_eq!(d.pcm.len(), samples.len(), "exactly 3 s after trimming");
        assert_tones(&d.pcm, "ogg/opus");
        // Two header pages, then a page per second of audio.
        assert!(d.pages >= 2 + 3, "{} pages", d.pages);
        // 20 ms pushes: a page leaves every 50 packets.
        assert_streams(&lengths, file.len(), 50, 0.6, "ogg/opus");
    }

    #[test]
    fn odd_chunks_and_mono_voicemail() {
        let samples: Vec<i16> = crate::media::codec::tone::sine(440.0, 8000, 8000 * 2 + 37, 8000.0);
        let (file, _, lengths) = encode(RecordingFormat::OggOpus, 1, &samples, 33);
        let d = decode(&file);
        assert_eq!(d.channels, 1);
        assert_eq!(d.pcm.len(), samples.len());
        let n = d.pcm.len();
        let (hz, _) = crate::media::codec::tone::dominant(&d.pcm[n / 4..3 * n / 4], 8000, &CANDIDATES);
        assert_eq!(hz, 440.0);
        // 33-sample pushes: about 1.6 s of them without a page at most.
        assert_streams(&lengths, file.len(), 250, 0.4, "ogg/opus mono");
    }

    #[test]
    fn an_empty_recording_is_a_valid_stream() {
        let enc = stream_encoder(RecordingFormat::OggOpus, 2, 8000, None).unwrap();
        let mut file = Vec::new();
        enc.finish(&mut file).unwrap();
        let d = decode(&file);
        assert!(d.pcm.is_empty());
    }
}
