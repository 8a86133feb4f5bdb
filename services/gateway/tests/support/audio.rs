//! Audio for the media tests: spoken WAVs made with espeak-ng and sox,
//! G.711 audio out of SIPp's bundled captures, and the measures the tests
//! assert on — loudness, and how much one recording sounds like another
//! (correlation of their loudness envelopes, searched over a time shift).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Samples per envelope frame (20 ms at 8 kHz).
const FRAME: usize = 160;

/// A program on the PATH, or a failure saying which package has it.
pub fn program(name: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file()))
        .unwrap_or_else(|| panic!("{name} is needed for the media tests: apt-get install {package} (scripts/test installs it)"))
}

/// Speaks `text` into an 8 kHz mono 16-bit WAV, repeated `times` times.
pub fn speech(dir: &Path, name: &str, text: &str, times: u32) -> PathBuf {
    let raw = dir.join(format!("{name}-espeak.wav"));
    let out = dir.join(format!("{name}.wav"));
    let status = Command::new(program("espeak-ng", "espeak-ng")).arg("-w").arg(&raw).arg(text).status().unwrap();
    assert!(status.success(), "espeak-ng failed");
    let mut sox = Command::new(program("sox", "sox"));
    sox.arg(&raw).args(["-r", "8000", "-c", "1", "-b", "16"]).arg(&out);
    if times > 1 {
        sox.args(["repeat", &(times - 1).to_string()]);
    }
    assert!(sox.status().unwrap().success(), "sox failed");
    out
}

/// Like [`speech`] once, after `before` and followed by `after` seconds of
/// silence (baresip ends a call when its microphone file runs out).
pub fn speech_between_silences(dir: &Path, name: &str, text: &str, before: u32, after: u32) -> PathBuf {
    let spoken = speech(dir, &format!("{name}-spoken"), text, 1);
    let out = dir.join(format!("{name}.wav"));
    let status =
        Command::new(program("sox", "sox")).arg(&spoken).arg(&out).args(["pad", &before.to_string(), &after.to_string()]).status().unwrap();
    assert!(status.success(), "sox failed");
    out
}

/// The samples of a mono WAV (the first channel of a stereo one) at 8 kHz:
/// a file at a multiple of 8 kHz (a phone's Opus dump at 48 kHz) is
/// brought down by averaging, which is all a loudness envelope needs.
pub fn read_mono(path: &Path) -> Vec<i16> {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{} is not a WAV: {e}", path.display()));
    let spec = r.spec();
    let channels = spec.channels as usize;
    let first: Vec<i16> = r.samples::<i16>().step_by(channels).map(|s| s.unwrap()).collect();
    assert!(spec.sample_rate.is_multiple_of(8000), "{}: {} Hz is no multiple of 8 kHz", path.display(), spec.sample_rate);
    let factor = (spec.sample_rate / 8000) as usize;
    if factor == 1 {
        return first;
    }
    first.chunks(factor).map(|c| (c.iter().map(|s| *s as i32).sum::<i32>() / c.len() as i32) as i16).collect()
}

/// Left and right channels of a stereo WAV given as bytes.
pub fn read_stereo(bytes: &[u8]) -> (Vec<i16>, Vec<i16>, hound::WavSpec) {
    let mut r = hound::WavReader::new(std::io::Cursor::new(bytes)).expect("a WAV");
    let spec = r.spec();
    assert_eq!(spec.channels, 2, "stereo");
    let all: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
    (all.iter().step_by(2).copied().collect(), all.iter().skip(1).step_by(2).copied().collect(), spec)
}

/// The G.711 A-law audio of RTP packets in a pcap file (Ethernet, IPv4,
/// UDP), decoded, payload type 8 only, in capture order.
pub fn pcap_alaw(path: &Path) -> Vec<i16> {
    let data = std::fs::read(path).unwrap();
    assert_eq!(&data[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "a little-endian pcap file");
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let len = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &data[at + 16..(at + 16 + len).min(data.len())];
        at += 16 + len;
        let ihl = ((frame.get(14).copied().unwrap_or(0) & 0x0f) as usize) * 4;
        let rtp = &frame[(14 + ihl + 8).min(frame.len())..];
        if rtp.len() > 12 && rtp[1] & 0x7f == 8 {
            out.extend(rtp[12..].iter().map(|b| alaw(*b)));
        }
    }
    out
}

fn alaw(a: u8) -> i16 {
    let a = a ^ 0x55;
    let exponent = (a >> 4) & 0x07;
    let mantissa = (a & 0x0f) as i32;
    let magnitude = if exponent == 0 { (mantissa << 4) + 8 } else { ((mantissa << 4) + 0x108) << (exponent - 1) };
    (if a & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

/// Root mean square of samples.
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|s| (*s as f64).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
}

/// The samples between two times (seconds), clamped to what exists.
pub fn window(samples: &[i16], from_s: f64, to_s: f64) -> &[i16] {
    let a = ((from_s * 8000.0) as usize).min(samples.len());
    let b = ((to_s * 8000.0) as usize).clamp(a, samples.len());
    &samples[a..b]
}

fn envelope(samples: &[i16]) -> Vec<f64> {
    samples.chunks(FRAME).map(|c| rms(c).max(1.0).ln()).collect()
}

/// How much `heard` sounds like a stretch of `reference`: the best Pearson
/// correlation of their log-loudness envelopes over every shift of
/// `heard` along `reference` (0.0–1.0; unrelated audio scores low).
pub fn similarity(heard: &[i16], reference: &[i16]) -> f64 {
    let h = envelope(heard);
    let r = envelope(reference);
    if h.len() < 10 || r.len() < h.len() {
        return 0.0;
    }
    (0..=r.len() - h.len()).map(|shift| pearson(&h, &r[shift..shift + h.len()])).fold(0.0, f64::max)
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        cov += (x - ma) * (y - mb);
        va += (x - ma).powi(2);
        vb += (y - mb).powi(2);
    }
    if va == 0.0 || vb == 0.0 {
        0.0
    } else {
        cov / (va.sqrt() * vb.sqrt())
    }
}

/// Decodes an MP3 file (mono or the first channel) to 16-bit samples.
pub fn decode_mp3(file: &[u8]) -> Vec<i16> {
    use symphonia::core::audio::SampleBuffer;
    use symphonia::core::codecs::DecoderOptions;
    use symphonia::core::formats::FormatOptions;
    use symphonia::core::io::MediaSourceStream;
    use symphonia::core::meta::MetadataOptions;
    use symphonia::core::probe::Hint;

    let stream = MediaSourceStream::new(Box::new(std::io::Cursor::new(file.to_vec())), Default::default());
    let mut hint = Hint::new();
    hint.with_extension("mp3");
    let probed = symphonia::default::get_probe()
        .format(&hint, stream, &FormatOptions { enable_gapless: true, ..Default::default() }, &MetadataOptions::default())
        .expect("an MP3 stream");
    let mut format = probed.format;
    let track = format.default_track().expect("an audio track").clone();
    let mut decoder = symphonia::default::get_codecs().make(&track.codec_params, &DecoderOptions::default()).unwrap();
    let mut pcm = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(symphonia::core::errors::Error::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("the MP3 does not decode: {e}"),
        };
        let audio = decoder.decode(&packet).unwrap();
        let spec = *audio.spec();
        let channels = spec.channels.count();
        let mut buf = SampleBuffer::<i16>::new(audio.capacity() as u64, spec);
        buf.copy_interleaved_ref(audio);
        pcm.extend(buf.samples().iter().step_by(channels));
    }
    pcm
}
