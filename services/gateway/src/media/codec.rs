//! Voice codecs of the anchored media path: G.711 μ-law (PCMU, payload type
//! 0), G.711 A-law (PCMA, payload type 8) and Opus (dynamic payload type,
//! RTP clock 48 kHz per RFC 7587), and transcoding between them.
//!
//! The relay passes G.711 through untouched when both legs agree; a
//! [`Transcoder`] is only placed between legs that negotiated different
//! codecs. Everything meets at 8 kHz mono linear PCM, the rate of the
//! telephone network: libopus decodes straight to 8 kHz and encodes from
//! 8 kHz (it resamples internally), so no resampler is needed
//! (docs/decisions/0009-codecs.md). PCMU and PCMA convert into each other
//! byte for byte through two 256-entry tables, without linear PCM in between.
//!
//! Sans-IO: payloads in, payloads out, with the RTP timestamp increment at
//! the output codec's clock. A payload that cannot be decoded is an error for
//! the caller to count and drop, never a panic.

use std::sync::LazyLock;

use super::g711;
use super::opus;

/// The rate every codec here decodes to and encodes from.
pub const PCM_RATE: u32 = 8_000;

/// 20 ms of PCM at [`PCM_RATE`]: the usual RTP packet.
pub const FRAME_SAMPLES: usize = 160;

/// Longest Opus packet (120 ms) in samples at [`PCM_RATE`].
const OPUS_MAX_PACKET_SAMPLES: usize = 960;

/// The buffer libopus recommends for one encoded packet.
const OPUS_MAX_PACKET_BYTES: usize = 4_000;

/// Opus packet durations libopus encodes in one call, in samples at 8 kHz:
/// 2.5, 5, 10, 20, 40, 60, 80, 100 and 120 ms.
const OPUS_FRAME_SIZES: [usize; 9] = [20, 40, 80, 160, 320, 480, 640, 800, 960];

/// Bit rate of the Opus encoder towards Opus legs unless configured
/// (`media.opus_bitrate`). Narrowband speech from the telephone network,
/// encoded at complexity 0, scores as well at 24 kbit/s (PESQ 4.38) as at
/// complexity 10 and 16 kbit/s, for half the encoder's work
/// (docs/decisions/0025-narrowband-opus-towards-browsers.md).
pub const DEFAULT_OPUS_BITRATE: u32 = 24_000;

/// The bit rates libopus takes.
pub const OPUS_BITRATES: std::ops::RangeInclusive<u32> = 6_000..=510_000;

/// libopus's encoder complexity (0–10) unless configured
/// (`media.opus_complexity`). Encoding is most of what a transcoded call
/// costs; complexity 0 does half the work of 5 (decisions 0024 and 0025).
pub const DEFAULT_OPUS_COMPLEXITY: u8 = 0;

/// How the gateway encodes Opus towards Opus legs (browsers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusSettings {
    /// libopus complexity, 0 (cheapest) to 10 (best).
    pub complexity: u8,
    /// Bits per second, within [`OPUS_BITRATES`].
    pub bitrate: u32,
}

impl Default for OpusSettings {
    fn default() -> Self {
        OpusSettings { complexity: DEFAULT_OPUS_COMPLEXITY, bitrate: DEFAULT_OPUS_BITRATE }
    }
}

/// A voice codec negotiated on a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 μ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// Opus, mono towards the telephone network.
    Opus,
}

impl Codec {
    /// The RTP clock rate (RFC 3551; RFC 7587 for Opus, whatever the audio
    /// bandwidth).
    /// PCMU or PCMA: relayed as is, decoded by table.
    pub fn is_g711(self) -> bool {
        matches!(self, Codec::Pcmu | Codec::Pcma)
    }

    /// RTP clock rate (Opus: always 48 kHz, RFC 7587).
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8_000,
            Codec::Opus => 48_000,
        }
    }

    /// The codec of an SDP `a=rtpmap` encoding name and clock rate, or `None`
    /// for codecs the gateway does not carry.
    pub fn from_encoding(name: &str, clock_rate: u32) -> Option<Codec> {
        let codec = if name.eq_ignore_ascii_case("PCMU") {
            Codec::Pcmu
        } else if name.eq_ignore_ascii_case("PCMA") {
            Codec::Pcma
        } else if name.eq_ignore_ascii_case("opus") {
            Codec::Opus
        } else {
            return None;
        };
        (codec.clock_rate() == clock_rate).then_some(codec)
    }

    /// The encoding name as written in SDP.
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::Opus => "opus",
        }
    }

    /// The static RTP payload type (RFC 3551); Opus has none.
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::Opus => None,
        }
    }

    /// RTP clock ticks per sample at [`PCM_RATE`].
    fn ticks_per_sample(self) -> u32 {
        self.clock_rate() / PCM_RATE
    }
}

/// Why a payload could not be decoded, encoded or transcoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// libopus refused to set up a decoder or an encoder. It is linked in
    /// and the parameters are fixed, so what is left is memory.
    #[error("cannot create the Opus {what}: {source} (libopus is built in and its parameters are fixed, so it could not allocate its state: check the process's memory limit)")]
    OpusInit { what: &'static str, source: opus::Error },
    /// libopus rejected a packet (corrupt or not Opus: check the payload
    /// type mapping of the leg).
    #[error("Opus packet rejected: {0}")]
    Opus(#[from] opus::Error),
    /// An empty Opus payload; a lost packet is concealed with `conceal`.
    #[error("empty Opus payload")]
    EmptyOpusPayload,
    /// The PCM frame has a length Opus cannot carry in one packet.
    #[error("cannot encode {samples} samples as one Opus packet: use a multiple of 10 ms (80 samples at 8 kHz), at most 120 ms")]
    UnsupportedFrame { samples: usize },
}

/// Decodes one leg's payloads to 8 kHz mono linear PCM.
pub struct Decoder {
    codec: Codec,
    kind: DecoderKind,
}

enum DecoderKind {
    G711 {
        decode: fn(u8) -> i16,
        /// The last payload's audio (at most one frame), replayed by `conceal`.
        history: Vec<i16>,
        /// Consecutive concealed packets since the last real one.
        lost: u32,
    },
    Opus { decoder: opus::Decoder, bandwidths: BandwidthCounts },
}

/// The labels of `switchboard_opus_packets_decoded_total`, by the audio
/// bandwidth libopus reads from a packet's TOC byte.
const BANDWIDTHS: [(opus::Bandwidth, &str); 5] = [
    (opus::Bandwidth::Narrowband, "narrowband"),
    (opus::Bandwidth::Mediumband, "mediumband"),
    (opus::Bandwidth::Wideband, "wideband"),
    (opus::Bandwidth::Superwideband, "superwideband"),
    (opus::Bandwidth::Fullband, "fullband"),
];

/// Opus packets decoded per bandwidth, told to the metrics in bulk (every
/// [`BandwidthCounts::FLUSH`] packets and when the decoder ends) rather than
/// per packet: `switchboard_opus_packets_decoded_total{bandwidth}` shows
/// whether browsers send the narrowband the gateway asks them for.
#[derive(Debug, Default)]
struct BandwidthCounts {
    counts: [u64; 5],
    pending: u32,
}

impl BandwidthCounts {
    const FLUSH: u32 = 500;

    /// Counts a packet libopus decoded.
    fn count(&mut self, packet: &[u8]) {
        let Ok(bandwidth) = opus::packet::bandwidth(packet) else { return };
        let Some(i) = BANDWIDTHS.iter().position(|(b, _)| *b == bandwidth) else { return };
        self.counts[i] += 1;
        self.pending += 1;
        if self.pending >= Self::FLUSH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        for ((_, label), n) in BANDWIDTHS.iter().zip(self.counts.iter_mut()) {
            if *n > 0 {
                metrics::counter!("switchboard_opus_packets_decoded_total", "bandwidth" => *label).increment(*n);
                *n = 0;
            }
        }
        self.pending = 0;
    }
}

impl Drop for BandwidthCounts {
    fn drop(&mut self) {
        self.flush();
    }
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").field("codec", &self.codec).finish_non_exhaustive()
    }
}

impl Decoder {
    pub fn new(codec: Codec) -> Result<Decoder, CodecError> {
        let kind = match codec {
            Codec::Pcmu => DecoderKind::G711 { decode: g711::ulaw_to_linear, history: Vec::new(), lost: 0 },
            Codec::Pcma => DecoderKind::G711 { decode: g711::alaw_to_linear, history: Vec::new(), lost: 0 },
            Codec::Opus => DecoderKind::Opus {
                decoder: opus::Decoder::new(PCM_RATE, opus::Channels::Mono)
                    .map_err(|source| CodecError::OpusInit { what: "decoder", source })?,
                bandwidths: BandwidthCounts::default(),
            },
        };
        Ok(Decoder { codec, kind })
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Appends the payload's audio to `out` and returns the number of
    /// samples appended. On error `out` is left as it was.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<usize, CodecError> {
        match &mut self.kind {
            DecoderKind::G711 { decode, history, lost } => {
                if !payload.is_empty() {
                    out.extend(payload.iter().map(|b| decode(*b)));
                    history.clear();
                    history.extend_from_slice(&out[out.len() - payload.len().min(FRAME_SAMPLES)..]);
                    *lost = 0;
                }
                Ok(payload.len())
            }
            DecoderKind::Opus { decoder, bandwidths } => {
                if payload.is_empty() {
                    return Err(CodecError::EmptyOpusPayload);
                }
                let n = decode_opus_into(decoder, payload, OPUS_MAX_PACKET_SAMPLES, out)?;
                bandwidths.count(payload);
                Ok(n)
            }
        }
    }

    /// Appends `samples` of replacement audio for a lost packet to `out`.
    /// Opus uses libopus's packet loss concealment. G.711 replays the last
    /// frame at half the level, then at a quarter, then falls silent from the
    /// third consecutive loss on, so a long gap is not a drone.
    pub fn conceal(&mut self, samples: usize, out: &mut Vec<i16>) -> Result<usize, CodecError> {
        match &mut self.kind {
            DecoderKind::G711 { history, lost, .. } => {
                *lost = lost.saturating_add(1);
                if history.is_empty() || *lost > 2 {
                    out.resize(out.len() + samples, 0);
                } else {
                    let shift = *lost;
                    out.extend(history.iter().cycle().take(samples).map(|s| s >> shift));
                }
                Ok(samples)
            }
            DecoderKind::Opus { decoder, .. } => {
                // libopus conceals in steps of 2.5 ms (20 samples at 8 kHz).
                let start = out.len();
                let mut left = samples;
                while left > 0 {
                    let step = left.min(OPUS_MAX_PACKET_SAMPLES).next_multiple_of(20);
                    if let Err(e) = decode_opus_into(decoder, &[], step, out) {
                        out.truncate(start);
                        return Err(e);
                    }
                    left = left.saturating_sub(step);
                }
                out.truncate(start + samples);
                Ok(samples)
            }
        }
    }
}

/// Decodes into the tail of `out` (`[]` conceals `room` samples).
fn decode_opus_into(decoder: &mut opus::Decoder, payload: &[u8], room: usize, out: &mut Vec<i16>) -> Result<usize, CodecError> {
    let start = out.len();
    out.resize(start + room, 0);
    match decoder.decode(payload, &mut out[start..], false) {
        Ok(n) => {
            out.truncate(start + n);
            Ok(n)
        }
        Err(e) => {
            out.truncate(start);
            Err(e.into())
        }
    }
}

/// Encodes 8 kHz mono linear PCM for one leg.
pub struct Encoder {
    codec: Codec,
    kind: EncoderKind,
}

enum EncoderKind {
    G711(fn(i16) -> u8),
    Opus {
        encoder: opus::Encoder,
        /// Made on first use: only for packet durations libopus cannot
        /// encode in one call (30 ms, 50 ms...).
        repacketizer: Option<opus::Repacketizer>,
        scratch: Vec<u8>,
    },
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").field("codec", &self.codec).finish_non_exhaustive()
    }
}

impl Encoder {
    /// Opus: mono, VoIP application, 8 kHz input, the default bit rate and
    /// complexity ([`OpusSettings::default`]).
    pub fn new(codec: Codec) -> Result<Encoder, CodecError> {
        Encoder::with_opus(codec, OpusSettings::default())
    }

    /// [`Encoder::new`] with the Opus encoder set up as `opus` says.
    pub fn with_opus(codec: Codec, opus: OpusSettings) -> Result<Encoder, CodecError> {
        let kind = match codec {
            Codec::Pcmu => EncoderKind::G711(g711::linear_to_ulaw),
            Codec::Pcma => EncoderKind::G711(g711::linear_to_alaw),
            Codec::Opus => {
                let init = |source| CodecError::OpusInit { what: "encoder", source };
                let mut encoder = opus::Encoder::new(PCM_RATE, opus::Channels::Mono).map_err(init)?;
                let bitrate = opus.bitrate.clamp(*OPUS_BITRATES.start(), *OPUS_BITRATES.end());
                encoder.set_bitrate(bitrate as i32).map_err(init)?;
                encoder.set_complexity(opus.complexity.min(10) as i32).map_err(init)?;
                EncoderKind::Opus { encoder, repacketizer: None, scratch: Vec::new() }
            }
        };
        Ok(Encoder { codec, kind })
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Appends one packet's payload, encoding `pcm_8k` (usually 20 ms, 160
    /// samples), to `out`, and returns the RTP timestamp increment at the
    /// codec's clock (160 for G.711, 960 for Opus). Opus takes multiples of
    /// 10 ms up to 120 ms (and 2.5 or 5 ms); on error `out` is left as it was.
    pub fn encode(&mut self, pcm_8k: &[i16], out: &mut Vec<u8>) -> Result<u32, CodecError> {
        match &mut self.kind {
            EncoderKind::G711(encode) => out.extend(pcm_8k.iter().map(|s| encode(*s))),
            EncoderKind::Opus { encoder, repacketizer, scratch } => {
                let n = pcm_8k.len();
                if OPUS_FRAME_SIZES.contains(&n) {
                    encode_opus_into(encoder, pcm_8k, out)?;
                } else if n.is_multiple_of(80) && n <= OPUS_MAX_PACKET_SAMPLES {
                    // Several 10 ms frames joined into one packet (RFC 6716
                    // code 3), so the packet still covers exactly the input.
                    scratch.clear();
                    let mut ends = [0usize; OPUS_MAX_PACKET_SAMPLES / 80];
                    for (i, frame) in pcm_8k.chunks(80).enumerate() {
                        encode_opus_into(encoder, frame, scratch)?;
                        ends[i] = scratch.len();
                    }
                    let rp = match repacketizer {
                        Some(rp) => rp,
                        None => repacketizer.insert(opus::Repacketizer::new().map_err(|source| CodecError::OpusInit { what: "repacketizer", source })?),
                    };
                    let ends = &ends[..n / 80];
                    let frames = ends.iter().scan(0, |begin, &end| {
                        let frame = &scratch[*begin..end];
                        *begin = end;
                        Some(frame)
                    });
                    let start = out.len();
                    out.resize(start + OPUS_MAX_PACKET_BYTES, 0);
                    match rp.join(frames, &mut out[start..]) {
                        Ok(len) => out.truncate(start + len),
                        Err(e) => {
                            out.truncate(start);
                            return Err(e.into());
                        }
                    }
                } else {
                    return Err(CodecError::UnsupportedFrame { samples: n });
                }
            }
        }
        Ok(pcm_8k.len() as u32 * self.codec.ticks_per_sample())
    }
}

fn encode_opus_into(encoder: &mut opus::Encoder, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = out.len();
    out.resize(start + OPUS_MAX_PACKET_BYTES, 0);
    match encoder.encode(pcm, &mut out[start..]) {
        Ok(len) => {
            out.truncate(start + len);
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e.into())
        }
    }
}

/// Converts one leg's payloads into the other leg's codec.
#[derive(Debug)]
pub struct Transcoder {
    from: Codec,
    to: Codec,
    path: Path,
}

#[derive(Debug)]
enum Path {
    /// Same codec on both legs: the payload is copied.
    Copy,
    /// PCMU <-> PCMA, byte for byte.
    Table(&'static [u8; 256]),
    Pcm { decoder: Decoder, encoder: Encoder, pcm: Vec<i16> },
}

impl Transcoder {
    pub fn new(from: Codec, to: Codec) -> Result<Transcoder, CodecError> {
        let path = match (from, to) {
            _ if from == to => Path::Copy,
            (Codec::Pcmu, Codec::Pcma) => Path::Table(&ULAW_TO_ALAW),
            (Codec::Pcma, Codec::Pcmu) => Path::Table(&ALAW_TO_ULAW),
            _ => Path::Pcm {
                decoder: Decoder::new(from)?,
                encoder: Encoder::new(to)?,
                pcm: Vec::with_capacity(OPUS_MAX_PACKET_SAMPLES),
            },
        };
        Ok(Transcoder { from, to, path })
    }

    pub fn from(&self) -> Codec {
        self.from
    }

    pub fn to(&self) -> Codec {
        self.to
    }

    /// Appends the payload converted to the other codec to `out` and returns
    /// the RTP timestamp increment at the output codec's clock. One packet in
    /// is one packet out, so the relay keeps sequence numbers and marker bits.
    pub fn transcode(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<u32, CodecError> {
        match &mut self.path {
            Path::Copy => {
                let ticks = match self.from {
                    Codec::Opus => opus::packet::samples(payload, Codec::Opus.clock_rate())? as u32,
                    Codec::Pcmu | Codec::Pcma => payload.len() as u32,
                };
                out.extend_from_slice(payload);
                Ok(ticks)
            }
            Path::Table(table) => {
                out.extend(payload.iter().map(|b| table[*b as usize]));
                Ok(payload.len() as u32)
            }
            Path::Pcm { decoder, encoder, pcm } => {
                pcm.clear();
                decoder.decode(payload, pcm)?;
                encoder.encode(pcm, out)
            }
        }
    }

    /// Appends a replacement for a lost input packet of `samples` (at 8 kHz)
    /// when the input is decoded anyway (Opus PLC then re-encoded); `Ok(None)`
    /// on the copy and table paths, where the loss is simply passed on.
    pub fn conceal(&mut self, samples: usize, out: &mut Vec<u8>) -> Result<Option<u32>, CodecError> {
        match &mut self.path {
            Path::Copy | Path::Table(_) => Ok(None),
            Path::Pcm { decoder, encoder, pcm } => {
                pcm.clear();
                decoder.conceal(samples, pcm)?;
                encoder.encode(pcm, out).map(Some)
            }
        }
    }
}

static ULAW_TO_ALAW: LazyLock<[u8; 256]> = LazyLock::new(|| std::array::from_fn(|u| g711::linear_to_alaw(g711::ulaw_to_linear(u as u8))));
static ALAW_TO_ULAW: LazyLock<[u8; 256]> = LazyLock::new(|| std::array::from_fn(|a| g711::linear_to_ulaw(g711::alaw_to_linear(a as u8))));

/// Tones and their measurement, shared by the codec and encoder tests.
#[cfg(test)]
pub(crate) mod tone {
    /// `seconds` of a sine at `hz` and amplitude `amplitude`, sampled at `rate`.
    pub fn sine(hz: f64, rate: u32, samples: usize, amplitude: f64) -> Vec<i16> {
        (0..samples)
            .map(|i| (amplitude * (2.0 * std::f64::consts::PI * hz * i as f64 / rate as f64).sin()).round() as i16)
            .collect()
    }

    /// Signal power at `hz` (Goertzel), normalised by the length.
    pub fn power_at(samples: &[i16], hz: f64, rate: u32) -> f64 {
        let w = 2.0 * std::f64::consts::PI * hz / rate as f64;
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for x in samples {
            let s0 = *x as f64 + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (samples.len() as f64).powi(2)
    }

    /// Which of `candidates` is the strongest in `samples`, and how many
    /// times stronger it is than the runner-up.
    pub fn dominant(samples: &[i16], rate: u32, candidates: &[f64]) -> (f64, f64) {
        let mut powers: Vec<(f64, f64)> = candidates.iter().map(|hz| (*hz, power_at(samples, *hz, rate))).collect();
        powers.sort_by(|a, b| b.1.total_cmp(&a.1));
        (powers[0].0, powers[0].1 / powers[1].1.max(f64::MIN_POSITIVE))
    }

    /// Root mean square level.
    pub fn rms(samples: &[i16]) -> f64 {
        (samples.iter().map(|s| (*s as f64).powi(2)).sum::<f64>() / samples.len().max(1) as f64).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::tone::*;
    use super::*;

    const CANDIDATES: [f64; 5] = [300.0, 440.0, 1000.0, 1500.0, 2500.0];

    #[test]
    fn codecs_from_sdp_encodings() {
        assert_eq!(Codec::from_encoding("PCMU", 8000), Some(Codec::Pcmu));
        assert_eq!(Codec::from_encoding("pcma", 8000), Some(Codec::Pcma));
        assert_eq!(Codec::from_encoding("OPUS", 48000), Some(Codec::Opus));
        assert_eq!(Codec::from_encoding("opus", 16000), None);
        assert_eq!(Codec::from_encoding("PCMU", 16000), None);
        assert_eq!(Codec::from_encoding("G722", 8000), None);
        assert_eq!(
            [Codec::Pcmu, Codec::Pcma, Codec::Opus].map(Codec::clock_rate),
            [8000, 8000, 48000]
        );
        assert_eq!(Codec::Opus.static_payload_type(), None);
        assert_eq!(Codec::Pcma.static_payload_type(), Some(8));
    }

    #[test]
    fn alaw_encoding_inverts_decoding() {
        for a in 0..=255u8 {
            assert_eq!(g711::linear_to_alaw(g711::alaw_to_linear(a)), a, "code {a:#04x}");
        }
        for s in [i16::MIN, -30000, -1000, -9, -1, 0, 1, 8, 1000, 30000, i16::MAX] {
            let back = g711::alaw_to_linear(g711::linear_to_alaw(s)) as i32;
            assert!((back - s as i32).abs() <= (s as i32).abs() / 16 + 16, "{s} -> {back}");
        }
    }

    #[test]
    fn pcmu_pcma_tables_match_the_pcm_path() {
        for b in 0..=255u8 {
            assert_eq!(ULAW_TO_ALAW[b as usize], g711::linear_to_alaw(g711::ulaw_to_linear(b)));
            assert_eq!(ALAW_TO_ULAW[b as usize], g711::linear_to_ulaw(g711::alaw_to_linear(b)));
            // The level survives a trip through the other law.
            let original = g711::ulaw_to_linear(b) as i32;
            let via_alaw = g711::alaw_to_linear(ULAW_TO_ALAW[b as usize]) as i32;
            assert!((via_alaw - original).abs() <= original.abs() / 16 + 16, "{b:#04x}: {original} -> {via_alaw}");
        }
        let mut t = Transcoder::new(Codec::Pcmu, Codec::Pcma).unwrap();
        let mut out = Vec::new();
        assert_eq!(t.transcode(&[0xff, 0x00, 0x80], &mut out).unwrap(), 3);
        assert_eq!(out, vec![ULAW_TO_ALAW[0xff], ULAW_TO_ALAW[0x00], ULAW_TO_ALAW[0x80]]);
    }

    #[test]
    fn g711_decodes_and_encodes_one_sample_per_byte() {
        let pcm = sine(1000.0, 8000, 160, 8000.0);
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let mut enc = Encoder::new(codec).unwrap();
            let mut payload = Vec::new();
            assert_eq!(enc.encode(&pcm, &mut payload).unwrap(), 160);
            assert_eq!(payload.len(), 160);
            let mut dec = Decoder::new(codec).unwrap();
            let mut back = vec![7i16]; // decoding appends
            assert_eq!(dec.decode(&payload, &mut back).unwrap(), 160);
            assert_eq!(back[0], 7);
            let err: f64 = pcm.iter().zip(&back[1..]).map(|(a, b)| (*a as f64 - *b as f64).abs()).sum::<f64>() / 160.0;
            assert!(err < 150.0, "{codec:?}: mean error {err}");
        }
    }

    #[test]
    fn g711_concealment_fades_to_silence() {
        let mut dec = Decoder::new(Codec::Pcmu).unwrap();
        let mut out = Vec::new();
        // Nothing heard yet: silence.
        dec.conceal(160, &mut out).unwrap();
        assert!(out.iter().all(|s| *s == 0));
        out.clear();
        let payload: Vec<u8> = sine(440.0, 8000, 160, 8000.0).into_iter().map(g711::linear_to_ulaw).collect();
        dec.decode(&payload, &mut out).unwrap();
        let level = rms(&out);
        let mut levels = Vec::new();
        for _ in 0..4 {
            let mut lost = Vec::new();
            assert_eq!(dec.conceal(160, &mut lost).unwrap(), 160);
            assert_eq!(lost.len(), 160);
            levels.push(rms(&lost) / level);
        }
        assert!((levels[0] - 0.5).abs() < 0.05, "{levels:?}");
        assert!((levels[1] - 0.25).abs() < 0.05, "{levels:?}");
        assert_eq!(&levels[2..], &[0.0, 0.0]);
        // A real packet ends the loss run.
        dec.decode(&payload, &mut out).unwrap();
        let mut lost = Vec::new();
        dec.conceal(160, &mut lost).unwrap();
        assert!(rms(&lost) > 0.4 * level);
    }

    #[test]
    fn opus_round_trip_keeps_the_tone() {
        let mut enc = Encoder::new(Codec::Opus).unwrap();
        let mut dec = Decoder::new(Codec::Opus).unwrap();
        let pcm = sine(440.0, 8000, 160 * 50, 10000.0);
        let mut decoded = Vec::new();
        for frame in pcm.chunks(160) {
            let mut payload = Vec::new();
            assert_eq!(enc.encode(frame, &mut payload).unwrap(), 960);
            assert!(!payload.is_empty() && payload.len() < 200, "{} bytes", payload.len());
            assert_eq!(dec.decode(&payload, &mut decoded).unwrap(), 160);
        }
        assert_eq!(decoded.len(), pcm.len());
        let tail = &decoded[1600..];
        let (hz, margin) = dominant(tail, 8000, &CANDIDATES);
        assert_eq!(hz, 440.0);
        assert!(margin > 100.0, "440 Hz only {margin}x the next");
        assert!(rms(tail) > 0.5 * rms(&pcm), "level {} of {}", rms(tail), rms(&pcm));
    }

    #[test]
    fn the_gateway_sends_narrowband_at_its_bit_rate_and_counts_what_it_decodes() {
        let bandwidth = |packet: &[u8]| opus::packet::bandwidth(packet).unwrap();
        // The gateway's own packets: narrowband (8 kHz input), and more
        // bits at a higher bit rate, never above it (VBR: a steady tone
        // takes fewer).
        let pcm = sine(300.0, 8000, 160 * 100, 8000.0);
        let mut rates = Vec::new();
        for bitrate in [12_000, DEFAULT_OPUS_BITRATE] {
            let mut enc = Encoder::with_opus(Codec::Opus, OpusSettings { bitrate, ..OpusSettings::default() }).unwrap();
            let mut bytes = 0;
            for (i, frame) in pcm.chunks(160).enumerate() {
                let mut payload = Vec::new();
                enc.encode(frame, &mut payload).unwrap();
                assert_eq!(bandwidth(&payload), opus::Bandwidth::Narrowband);
                if i >= 50 {
                    bytes += payload.len();
                }
            }
            rates.push(bytes * 8); // bits in the last 50 frames: one second
        }
        assert!(rates[0] * 3 / 2 < rates[1], "more bits at a higher bit rate: {rates:?}");
        assert!(rates[0] <= 12_000 * 11 / 10 && rates[1] <= DEFAULT_OPUS_BITRATE as usize * 11 / 10, "{rates:?}");

        // A browser's default: 48 kHz capture at 32 kbit/s is wider.
        let mut browser = opus::Encoder::new(48_000, opus::Channels::Mono).unwrap();
        browser.set_bitrate(32_000).unwrap();
        let mut packet = vec![0u8; 1500];
        let mut dec = Decoder::new(Codec::Opus).unwrap();
        let mut out = Vec::new();
        let mut expected = [0u64; 5];
        for frame in sine(300.0, 48_000, 960 * 10, 8000.0).chunks(960) {
            let len = browser.encode(frame, &mut packet).unwrap();
            assert_eq!(dec.decode(&packet[..len], &mut out).unwrap(), 160, "decoded to 8 kHz");
            expected[BANDWIDTHS.iter().position(|(b, _)| *b == bandwidth(&packet[..len])).unwrap()] += 1;
        }
        assert_eq!(expected[0] + expected[1] + expected[2], 0, "wider than wideband: {expected:?}");
        // The decoder counted each packet under its bandwidth (not flushed yet).
        let DecoderKind::Opus { bandwidths, .. } = &dec.kind else { panic!("an Opus decoder") };
        assert_eq!(bandwidths.counts, expected);
    }

    #[test]
    fn opus_packets_of_30_ms_are_joined_frames() {
        let mut enc = Encoder::new(Codec::Opus).unwrap();
        let mut dec = Decoder::new(Codec::Opus).unwrap();
        let mut decoded = Vec::new();
        for frame in sine(1000.0, 8000, 240 * 20, 10000.0).chunks(240) {
            let mut payload = Vec::new();
            assert_eq!(enc.encode(frame, &mut payload).unwrap(), 1440);
            assert_eq!(opus::packet::frames(&payload).unwrap(), 3);
            assert_eq!(dec.decode(&payload, &mut decoded).unwrap(), 240);
        }
        assert_eq!(dominant(&decoded[1200..], 8000, &CANDIDATES).0, 1000.0);
        for samples in [7, 100, 1040] {
            let mut out = vec![1u8];
            let err = enc.encode(&vec![0; samples], &mut out).unwrap_err();
            assert!(matches!(err, CodecError::UnsupportedFrame { .. }), "{err}");
            assert_eq!(out, vec![1u8]);
        }
    }

    #[test]
    fn opus_concealment_continues_the_signal() {
        let mut enc = Encoder::new(Codec::Opus).unwrap();
        let mut dec = Decoder::new(Codec::Opus).unwrap();
        let mut sink = Vec::new();
        for frame in sine(440.0, 8000, 160 * 25, 10000.0).chunks(160) {
            let mut payload = Vec::new();
            enc.encode(frame, &mut payload).unwrap();
            dec.decode(&payload, &mut sink).unwrap();
        }
        let mut lost = Vec::new();
        assert_eq!(dec.conceal(160, &mut lost).unwrap(), 160);
        assert_eq!(lost.len(), 160);
        assert!(rms(&lost) > 1000.0, "PLC level {}", rms(&lost));
        // Odd lengths are honoured exactly.
        assert_eq!(dec.conceal(150, &mut lost).unwrap(), 150);
        assert_eq!(lost.len(), 310);
    }

    #[test]
    fn bad_opus_payloads_are_errors() {
        let mut dec = Decoder::new(Codec::Opus).unwrap();
        let mut out = vec![5i16];
        assert!(matches!(dec.decode(&[], &mut out), Err(CodecError::EmptyOpusPayload)));
        // Code 3 packet announcing 0 frames; code 1 with an odd length.
        assert!(dec.decode(&[0x03, 0x00], &mut out).is_err());
        assert!(dec.decode(&[0x01, 0xaa], &mut out).is_err());
        assert_eq!(out, vec![5]);
        // Nothing a peer sends makes the decoder panic.
        let mut x = 0x1234_5678u32;
        for len in 0..400usize {
            let payload: Vec<u8> = (0..len % 97 + 1)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let before = out.len();
            match dec.decode(&payload, &mut out) {
                Ok(n) => assert_eq!(out.len(), before + n),
                Err(_) => assert_eq!(out.len(), before),
            }
        }
        let mut t = Transcoder::new(Codec::Opus, Codec::Pcma).unwrap();
        let mut bytes = Vec::new();
        assert!(t.transcode(&[0x03, 0x00], &mut bytes).is_err());
        assert!(bytes.is_empty());
        let mut copy = Transcoder::new(Codec::Opus, Codec::Opus).unwrap();
        assert!(copy.transcode(&[], &mut bytes).is_err());
    }

    #[test]
    fn transcoding_through_opus_keeps_the_tone() {
        let mut to_opus = Transcoder::new(Codec::Pcmu, Codec::Opus).unwrap();
        let mut to_pcma = Transcoder::new(Codec::Opus, Codec::Pcma).unwrap();
        let mut pass = Transcoder::new(Codec::Opus, Codec::Opus).unwrap();
        let ulaw: Vec<u8> = sine(1000.0, 8000, 160 * 50, 8000.0).into_iter().map(g711::linear_to_ulaw).collect();
        let mut decoded = Vec::new();
        for frame in ulaw.chunks(160) {
            let mut opus_payload = Vec::new();
            assert_eq!(to_opus.transcode(frame, &mut opus_payload).unwrap(), 960);
            let mut copied = Vec::new();
            assert_eq!(pass.transcode(&opus_payload, &mut copied).unwrap(), 960);
            assert_eq!(copied, opus_payload);
            let mut alaw = Vec::new();
            assert_eq!(to_pcma.transcode(&opus_payload, &mut alaw).unwrap(), 160);
            assert_eq!(alaw.len(), 160);
            decoded.extend(alaw.iter().map(|a| g711::alaw_to_linear(*a)));
        }
        let (hz, margin) = dominant(&decoded[1600..], 8000, &CANDIDATES);
        assert_eq!(hz, 1000.0);
        assert!(margin > 100.0, "{margin}");
        // A lost Opus packet becomes concealed PCMA; G.711 losses are passed on.
        let mut alaw = Vec::new();
        assert_eq!(to_pcma.conceal(160, &mut alaw).unwrap(), Some(160));
        assert_eq!(alaw.len(), 160);
        assert_eq!(Transcoder::new(Codec::Pcma, Codec::Pcmu).unwrap().conceal(160, &mut alaw).unwrap(), None);
    }

    #[test]
    fn opus_state_fits_a_thousand_calls() {
        let (enc_heap, dec_heap) = opus::state_sizes(opus::Channels::Mono);
        let inline = std::mem::size_of::<Encoder>() + std::mem::size_of::<Decoder>();
        let pair = inline + enc_heap + dec_heap;
        // A transcoded call holds one pair: an encoder towards the Opus leg,
        // a decoder from it.
        println!(
            "Opus encoder+decoder pair: {inline} B inline + {enc_heap} B (encoder) + {dec_heap} B (decoder) in libopus = {pair} B; 1000 transcoded calls: {} MiB",
            1000 * pair / (1024 * 1024)
        );
        assert!(inline <= 256, "{inline}");
        assert!(pair < 96 * 1024, "{pair}");
    }
}
