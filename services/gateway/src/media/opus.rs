//! libopus, built from the sources `libopus_sys` vendors (Opus 1.5) and
//! linked statically, behind the few safe calls the gateway makes: an
//! encoder, a decoder, the repacketizer and the packet inspectors.
//!
//! The gateway used Debian's libopus 1.3.1 before; 1.5's encoder does the
//! same narrowband SILK encoding (the audio sent to browsers) in 29 % fewer
//! instructions, and encoding is most of what a transcoded browser call
//! costs (decision 0028). Every call here checks what libopus returns and
//! turns a negative code into an [`Error`] naming it; lengths are passed from
//! the slices, so libopus never reads or writes past them.

use std::ffi::CStr;
use std::os::raw::c_int;
use std::ptr::NonNull;

use libopus_sys as sys;

/// A libopus error code, with libopus's own words for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    code: c_int,
}

impl Error {
    pub fn code(&self) -> i32 {
        self.code
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SAFETY: opus_strerror returns a static string for every code.
        let text = unsafe { CStr::from_ptr(sys::opus_strerror(self.code)) };
        write!(f, "libopus: {} ({})", text.to_string_lossy(), self.code)
    }
}

impl std::error::Error for Error {}

fn check(code: c_int) -> Result<usize, Error> {
    if code < 0 {
        Err(Error { code })
    } else {
        Ok(code as usize)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    Mono = 1,
    Stereo = 2,
}

/// The audio bandwidth an Opus packet declares, or an encoder is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bandwidth {
    Narrowband,
    Mediumband,
    Wideband,
    Superwideband,
    Fullband,
}

impl Bandwidth {
    fn from_code(code: c_int) -> Result<Bandwidth, Error> {
        Ok(match code as u32 {
            sys::OPUS_BANDWIDTH_NARROWBAND => Bandwidth::Narrowband,
            sys::OPUS_BANDWIDTH_MEDIUMBAND => Bandwidth::Mediumband,
            sys::OPUS_BANDWIDTH_WIDEBAND => Bandwidth::Wideband,
            sys::OPUS_BANDWIDTH_SUPERWIDEBAND => Bandwidth::Superwideband,
            sys::OPUS_BANDWIDTH_FULLBAND => Bandwidth::Fullband,
            _ => return Err(Error { code: if code < 0 { code } else { sys::OPUS_INVALID_PACKET } }),
        })
    }

    fn code(self) -> c_int {
        (match self {
            Bandwidth::Narrowband => sys::OPUS_BANDWIDTH_NARROWBAND,
            Bandwidth::Mediumband => sys::OPUS_BANDWIDTH_MEDIUMBAND,
            Bandwidth::Wideband => sys::OPUS_BANDWIDTH_WIDEBAND,
            Bandwidth::Superwideband => sys::OPUS_BANDWIDTH_SUPERWIDEBAND,
            Bandwidth::Fullband => sys::OPUS_BANDWIDTH_FULLBAND,
        }) as c_int
    }
}

/// An encoder for the VoIP application (the only one the gateway uses).
pub struct Encoder {
    state: NonNull<sys::OpusEncoder>,
    channels: usize,
}

// SAFETY: the state is owned by this value alone and libopus keeps no
// thread-local or shared mutable state for it.
unsafe impl Send for Encoder {}

impl Encoder {
    /// `rate` is 8000, 12000, 16000, 24000 or 48000.
    pub fn new(rate: u32, channels: Channels) -> Result<Encoder, Error> {
        let mut code = 0;
        let rate = i32::try_from(rate).map_err(|_| Error { code: sys::OPUS_BAD_ARG })?;
        // SAFETY: plain arguments; the result is checked for null.
        let state = unsafe { sys::opus_encoder_create(rate, channels as c_int, sys::OPUS_APPLICATION_VOIP as c_int, &mut code) };
        check(code)?;
        let state = NonNull::new(state).ok_or(Error { code: sys::OPUS_ALLOC_FAIL })?;
        Ok(Encoder { state, channels: channels as usize })
    }

    fn set(&mut self, request: u32, value: i32) -> Result<(), Error> {
        // SAFETY: every request passed here takes one opus_int32.
        check(unsafe { sys::opus_encoder_ctl(self.state.as_ptr(), request as c_int, value) }).map(|_| ())
    }

    /// Bits per second.
    pub fn set_bitrate(&mut self, bits: i32) -> Result<(), Error> {
        self.set(sys::OPUS_SET_BITRATE_REQUEST, bits)
    }

    /// 0–10.
    pub fn set_complexity(&mut self, complexity: i32) -> Result<(), Error> {
        self.set(sys::OPUS_SET_COMPLEXITY_REQUEST, complexity)
    }

    pub fn set_max_bandwidth(&mut self, bandwidth: Bandwidth) -> Result<(), Error> {
        self.set(sys::OPUS_SET_MAX_BANDWIDTH_REQUEST, bandwidth.code())
    }

    /// `None`: as the input (libopus's default).
    pub fn set_force_channels(&mut self, channels: Option<Channels>) -> Result<(), Error> {
        self.set(sys::OPUS_SET_FORCE_CHANNELS_REQUEST, channels.map_or(sys::OPUS_AUTO, |c| c as i32))
    }

    /// Samples (at the encoder's rate) the encoder delays its input by.
    pub fn lookahead(&mut self) -> Result<i32, Error> {
        let mut value: i32 = 0;
        // SAFETY: the request writes one opus_int32 through the pointer.
        check(unsafe { sys::opus_encoder_ctl(self.state.as_ptr(), sys::OPUS_GET_LOOKAHEAD_REQUEST as c_int, &mut value as *mut i32) })?;
        Ok(value)
    }

    /// Encodes one frame (`pcm`, interleaved, a frame size libopus takes)
    /// into `out`; returns the packet's length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, Error> {
        let frame = c_int::try_from(pcm.len() / self.channels).map_err(|_| Error { code: sys::OPUS_BAD_ARG })?;
        let room = i32::try_from(out.len()).unwrap_or(i32::MAX);
        // SAFETY: libopus reads frame × channels samples (within `pcm`) and
        // writes at most `room` bytes (within `out`).
        check(unsafe { sys::opus_encode(self.state.as_ptr(), pcm.as_ptr(), frame, out.as_mut_ptr(), room) })
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_encoder_create, freed once.
        unsafe { sys::opus_encoder_destroy(self.state.as_ptr()) }
    }
}

pub struct Decoder {
    state: NonNull<sys::OpusDecoder>,
    channels: usize,
}

// SAFETY: as for Encoder.
unsafe impl Send for Decoder {}

impl Decoder {
    /// `rate` is the output's: 8000, 12000, 16000, 24000 or 48000.
    pub fn new(rate: u32, channels: Channels) -> Result<Decoder, Error> {
        let mut code = 0;
        let rate = i32::try_from(rate).map_err(|_| Error { code: sys::OPUS_BAD_ARG })?;
        // SAFETY: plain arguments; the result is checked for null.
        let state = unsafe { sys::opus_decoder_create(rate, channels as c_int, &mut code) };
        check(code)?;
        let state = NonNull::new(state).ok_or(Error { code: sys::OPUS_ALLOC_FAIL })?;
        Ok(Decoder { state, channels: channels as usize })
    }

    /// Decodes `packet` into `out` (interleaved), or conceals a lost one
    /// when `packet` is empty (`out`'s length is then the duration to fill,
    /// a multiple of 2.5 ms); returns the samples per channel written.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16], fec: bool) -> Result<usize, Error> {
        let frame = c_int::try_from(out.len() / self.channels).map_err(|_| Error { code: sys::OPUS_BAD_ARG })?;
        let (data, len) = if packet.is_empty() {
            (std::ptr::null(), 0)
        } else {
            (packet.as_ptr(), i32::try_from(packet.len()).map_err(|_| Error { code: sys::OPUS_INVALID_PACKET })?)
        };
        // SAFETY: libopus reads `len` bytes of `packet` (none for null) and
        // writes at most frame × channels samples (within `out`).
        check(unsafe { sys::opus_decode(self.state.as_ptr(), data, len, out.as_mut_ptr(), frame, fec as c_int) })
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_decoder_create, freed once.
        unsafe { sys::opus_decoder_destroy(self.state.as_ptr()) }
    }
}

/// Joins Opus packets of one configuration into one (RFC 6716 code 3).
pub struct Repacketizer {
    state: NonNull<sys::OpusRepacketizer>,
}

// SAFETY: as for Encoder; it keeps no pointer into packets between calls
// (every join starts with a fresh init).
unsafe impl Send for Repacketizer {}

impl Repacketizer {
    pub fn new() -> Result<Repacketizer, Error> {
        // SAFETY: no arguments; the result is checked for null.
        let state = NonNull::new(unsafe { sys::opus_repacketizer_create() }).ok_or(Error { code: sys::OPUS_ALLOC_FAIL })?;
        Ok(Repacketizer { state })
    }

    /// Writes `packets`, in order, as one packet into `out`; returns its
    /// length.
    pub fn join<'a>(&mut self, packets: impl IntoIterator<Item = &'a [u8]>, out: &mut [u8]) -> Result<usize, Error> {
        let rp = self.state.as_ptr();
        // SAFETY: libopus keeps pointers into each packet from `cat` until
        // `out`; the packets are borrowed for the whole call, and the next
        // join starts with init, so none outlives it.
        unsafe {
            sys::opus_repacketizer_init(rp);
            for packet in packets {
                let len = i32::try_from(packet.len()).map_err(|_| Error { code: sys::OPUS_INVALID_PACKET })?;
                check(sys::opus_repacketizer_cat(rp, packet.as_ptr(), len))?;
            }
            check(sys::opus_repacketizer_out(rp, out.as_mut_ptr(), i32::try_from(out.len()).unwrap_or(i32::MAX)))
        }
    }
}

impl Drop for Repacketizer {
    fn drop(&mut self) {
        // SAFETY: created by opus_repacketizer_create, freed once.
        unsafe { sys::opus_repacketizer_destroy(self.state.as_ptr()) }
    }
}

/// What an Opus packet's table of contents says, read by libopus.
pub mod packet {
    use super::{check, sys, Bandwidth, Error};

    fn nonempty(packet: &[u8]) -> Result<(), Error> {
        if packet.is_empty() {
            Err(Error { code: sys::OPUS_INVALID_PACKET })
        } else {
            Ok(())
        }
    }

    pub fn bandwidth(packet: &[u8]) -> Result<Bandwidth, Error> {
        nonempty(packet)?;
        // SAFETY: reads the first byte, which exists.
        Bandwidth::from_code(unsafe { sys::opus_packet_get_bandwidth(packet.as_ptr()) })
    }

    /// Samples per channel at `rate`.
    pub fn samples(packet: &[u8], rate: u32) -> Result<usize, Error> {
        nonempty(packet)?;
        let len = i32::try_from(packet.len()).map_err(|_| Error { code: sys::OPUS_INVALID_PACKET })?;
        // SAFETY: reads within the packet's `len` bytes.
        check(unsafe { sys::opus_packet_get_nb_samples(packet.as_ptr(), len, rate as i32) })
    }

    pub fn frames(packet: &[u8]) -> Result<usize, Error> {
        nonempty(packet)?;
        let len = i32::try_from(packet.len()).map_err(|_| Error { code: sys::OPUS_INVALID_PACKET })?;
        // SAFETY: reads within the packet's `len` bytes.
        check(unsafe { sys::opus_packet_get_nb_frames(packet.as_ptr(), len) })
    }
}

/// libopus's version string.
pub fn version() -> &'static str {
    // SAFETY: a static, NUL-terminated string.
    unsafe { CStr::from_ptr(sys::opus_get_version_string()) }.to_str().unwrap_or("libopus")
}

/// Bytes of one encoder's and one decoder's state for `channels`.
pub fn state_sizes(channels: Channels) -> (usize, usize) {
    // SAFETY: plain arguments.
    unsafe { (sys::opus_encoder_get_size(channels as c_int).max(0) as usize, sys::opus_decoder_get_size(channels as c_int).max(0) as usize) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize, rate: f64) -> Vec<i16> {
        (0..n).map(|i| ((i as f64 * 2.0 * std::f64::consts::PI * 440.0 / rate).sin() * 8000.0) as i16).collect()
    }

    #[test]
    fn round_trip_conceal_and_join() {
        let mut enc = Encoder::new(8000, Channels::Mono).unwrap();
        enc.set_bitrate(24_000).unwrap();
        enc.set_complexity(0).unwrap();
        enc.set_max_bandwidth(Bandwidth::Narrowband).unwrap();
        assert!(enc.lookahead().unwrap() > 0);
        let mut dec = Decoder::new(8000, Channels::Mono).unwrap();
        let pcm = tone(160, 8000.0);
        let mut packet = [0u8; 1500];
        let len = enc.encode(&pcm, &mut packet).unwrap();
        assert!(len > 1);
        assert_eq!(packet::bandwidth(&packet[..len]).unwrap(), Bandwidth::Narrowband);
        assert_eq!(packet::samples(&packet[..len], 8000).unwrap(), 160);
        assert_eq!(packet::frames(&packet[..len]).unwrap(), 1);
        let mut out = [0i16; 960];
        assert_eq!(dec.decode(&packet[..len], &mut out, false).unwrap(), 160);
        // A lost packet: as much concealment as asked for.
        assert_eq!(dec.decode(&[], &mut out[..160], false).unwrap(), 160);

        let mut frames = Vec::new();
        for _ in 0..3 {
            let mut p = [0u8; 1500];
            let n = enc.encode(&pcm[..80], &mut p).unwrap();
            frames.push(p[..n].to_vec());
        }
        let mut joined = [0u8; 1500];
        let n = Repacketizer::new().unwrap().join(frames.iter().map(|f| f.as_slice()), &mut joined).unwrap();
        assert_eq!(packet::frames(&joined[..n]).unwrap(), 3);
        assert_eq!(packet::samples(&joined[..n], 8000).unwrap(), 240);
    }

    #[test]
    fn bad_input_is_an_error_naming_it() {
        assert!(Encoder::new(44_100, Channels::Mono).is_err());
        let mut enc = Encoder::new(8000, Channels::Mono).unwrap();
        let err = enc.encode(&[0; 100], &mut [0; 1500]).unwrap_err();
        assert_eq!(err.code(), sys::OPUS_BAD_ARG);
        assert!(err.to_string().contains("invalid argument"), "{err}");
        assert!(enc.set_complexity(11).is_err());
        let mut dec = Decoder::new(8000, Channels::Mono).unwrap();
        assert!(dec.decode(&[0x03, 0x00], &mut [0; 960], false).is_err());
        assert!(packet::bandwidth(&[]).is_err());
        assert!(packet::samples(&[], 8000).is_err());
        // Packets of different configurations cannot be joined.
        let mut a = [0u8; 1500];
        let mut b = [0u8; 1500];
        let na = enc.encode(&tone(160, 8000.0), &mut a).unwrap();
        let nb = Encoder::new(48_000, Channels::Stereo).unwrap().encode(&tone(1920, 48_000.0), &mut b).unwrap();
        assert!(Repacketizer::new().unwrap().join([&a[..na], &b[..nb]], &mut [0; 1500]).is_err());
    }

    #[test]
    fn the_linked_library_is_the_vendored_one() {
        // Debian 12's system libopus is 1.3.1; the vendored sources are 1.5.
        assert!(!version().contains("1.3"), "{}", version());
        let (enc, dec) = state_sizes(Channels::Mono);
        assert!(enc > 0 && dec > 0);
    }
}
