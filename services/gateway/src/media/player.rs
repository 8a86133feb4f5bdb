//! The player tap: audio the gateway itself plays into a leg — music on hold,
//! prompts, voicemail greetings and the beep.
//!
//! A [`Prompt`] is loaded once (8 kHz mono, as telephony plays it) and shared
//! by every call; it keeps its G.711 encodings ready, so playing it to a
//! thousand held callers costs a copy per packet, not an encode. A
//! [`Player`] is one call's position in a prompt. Sans-IO: the bridge asks
//! for the next frame when its 20 ms clock ticks.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use super::g711;

/// Samples per 20 ms frame at 8 kHz.
pub const FRAME: usize = 160;

/// Why an audio file cannot be played.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a WAV file the gateway can read ({1}); convert it with `sox in.wav -r 8000 -c 1 -b 16 out.wav`")]
    Format(String, String),
    #[error("{0} holds no audio")]
    Empty(String),
}

/// An audio file ready to play: linear samples and both G.711 laws.
#[derive(Debug)]
pub struct Prompt {
    linear: Box<[i16]>,
    ulaw: Box<[u8]>,
    alaw: Box<[u8]>,
}

/// The music on hold shipped with the gateway (`scripts/make-hold-music.py`).
const BUNDLED_HOLD_MUSIC: &[u8] = include_bytes!("../../assets/hold-music.wav");
/// The voicemail greeting shipped with the gateway (see `assets/README.md`).
const BUNDLED_GREETING: &[u8] = include_bytes!("../../assets/voicemail-greeting.wav");

impl Prompt {
    /// Reads a WAV file: 8 kHz, mono, 16-bit PCM (other layouts are refused
    /// with the command that converts them).
    pub fn from_wav(name: &str, bytes: &[u8]) -> Result<Prompt, PromptError> {
        let mut reader = hound::WavReader::new(Cursor::new(bytes)).map_err(|e| PromptError::Format(name.to_owned(), e.to_string()))?;
        let spec = reader.spec();
        if spec.sample_rate != 8000 || spec.channels != 1 || spec.bits_per_sample != 16 || spec.sample_format != hound::SampleFormat::Int {
            return Err(PromptError::Format(
                name.to_owned(),
                format!("{} Hz, {} channel(s), {}-bit; 8000 Hz, 1 channel, 16-bit needed", spec.sample_rate, spec.channels, spec.bits_per_sample),
            ));
        }
        let linear: Vec<i16> =
            reader.samples::<i16>().collect::<Result<_, _>>().map_err(|e| PromptError::Format(name.to_owned(), e.to_string()))?;
        Prompt::from_samples(name, linear)
    }

    /// Loads a WAV file from disk.
    pub fn load(path: &Path) -> Result<Prompt, PromptError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| PromptError::Read { path: name.clone(), source })?;
        Prompt::from_wav(&name, &bytes)
    }

    /// Wraps 8 kHz mono samples.
    pub fn from_samples(name: &str, linear: Vec<i16>) -> Result<Prompt, PromptError> {
        if linear.is_empty() {
            return Err(PromptError::Empty(name.to_owned()));
        }
        let ulaw = linear.iter().map(|s| g711::linear_to_ulaw(*s)).collect();
        let alaw = linear.iter().map(|s| g711::linear_to_alaw(*s)).collect();
        Ok(Prompt { linear: linear.into_boxed_slice(), ulaw, alaw })
    }

    /// The bundled music on hold.
    pub fn bundled_hold_music() -> Prompt {
        Prompt::from_wav("bundled hold music", BUNDLED_HOLD_MUSIC).expect("the bundled hold music is an 8 kHz mono WAV")
    }

    /// The bundled voicemail greeting.
    pub fn bundled_voicemail_greeting() -> Prompt {
        Prompt::from_wav("bundled voicemail greeting", BUNDLED_GREETING).expect("the bundled greeting is an 8 kHz mono WAV")
    }

    /// A beep: `ms` of a 1 kHz tone (voicemail).
    pub fn beep(ms: u32) -> Prompt {
        let n = (ms as usize) * 8;
        let samples = (0..n).map(|i| ((i as f64 * 2.0 * std::f64::consts::PI * 1000.0 / 8000.0).sin() * 8000.0) as i16).collect();
        Prompt::from_samples("beep", samples).expect("a beep has samples")
    }

    /// The ringback tone a caller hears while the far end rings, when the
    /// far end sends no early media of its own: North American ringing
    /// (ITU-T E.180: 440 + 480 Hz, two seconds on, four off), one cadence
    /// to loop. Made once and shared by every call.
    pub fn ringback() -> Arc<Prompt> {
        static RINGBACK: std::sync::OnceLock<Arc<Prompt>> = std::sync::OnceLock::new();
        RINGBACK
            .get_or_init(|| {
                let tone = |i: usize, hz: f64| (i as f64 * 2.0 * std::f64::consts::PI * hz / 8000.0).sin();
                let samples = (0..6 * 8000).map(|i| if i < 2 * 8000 { ((tone(i, 440.0) + tone(i, 480.0)) * 3000.0) as i16 } else { 0 }).collect();
                Arc::new(Prompt::from_samples("ringback", samples).expect("ringback has samples"))
            })
            .clone()
    }

    /// Samples at 8 kHz.
    pub fn len(&self) -> usize {
        self.linear.len()
    }

    pub fn is_empty(&self) -> bool {
        self.linear.is_empty()
    }

    pub fn samples(&self) -> &[i16] {
        &self.linear
    }
}

/// What a frame is encoded as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    Linear,
    Ulaw,
    Alaw,
}

/// One call's position in a prompt.
#[derive(Debug, Clone)]
pub struct Player {
    prompt: Arc<Prompt>,
    position: usize,
    looping: bool,
}

impl Player {
    /// Plays `prompt` from its start; a looping player never ends (music on hold).
    pub fn new(prompt: Arc<Prompt>, looping: bool) -> Player {
        Player { prompt, position: 0, looping }
    }

    /// True once a non-looping prompt has played to its end.
    pub fn finished(&self) -> bool {
        !self.looping && self.position >= self.prompt.len()
    }

    /// Writes the next G.711 frame (one byte per sample) into `out`,
    /// padding the end of a non-looping prompt with silence. Returns false
    /// when the prompt had already finished.
    pub fn next_g711(&mut self, law: Law, out: &mut [u8]) -> bool {
        if self.finished() {
            return false;
        }
        let src: &[u8] = match law {
            Law::Ulaw => &self.prompt.ulaw,
            Law::Alaw => &self.prompt.alaw,
            Law::Linear => unreachable!("next_g711 is for G.711"),
        };
        let silence = match law {
            Law::Ulaw => g711::ULAW_SILENCE,
            _ => g711::ALAW_SILENCE,
        };
        fill(&mut self.position, self.looping, src, silence, out);
        true
    }

    /// Writes the next linear frame into `out` (for codecs that encode).
    pub fn next_linear(&mut self, out: &mut [i16]) -> bool {
        if self.finished() {
            return false;
        }
        let src: &[i16] = &self.prompt.linear;
        fill(&mut self.position, self.looping, src, 0, out);
        true
    }
}

fn fill<T: Copy>(position: &mut usize, looping: bool, src: &[T], silence: T, out: &mut [T]) {
    let mut written = 0;
    while written < out.len() {
        if *position >= src.len() {
            if !looping {
                out[written..].fill(silence);
                *position = src.len();
                return;
            }
            *position = 0;
        }
        let n = (src.len() - *position).min(out.len() - written);
        out[written..written + n].copy_from_slice(&src[*position..*position + n]);
        written += n;
        *position += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_music_loads_and_loops() {
        let p = Arc::new(Prompt::bundled_hold_music());
        assert!(p.len() > 8000 * 5, "several seconds of music");
        let mut player = Player::new(p.clone(), true);
        let mut frame = [0u8; FRAME];
        let frames = p.len() / FRAME + 3;
        for _ in 0..frames {
            assert!(player.next_g711(Law::Ulaw, &mut frame));
        }
        assert!(!player.finished(), "music on hold loops");
        let mut linear = [0i16; FRAME];
        let mut again = Player::new(p.clone(), true);
        again.next_linear(&mut linear);
        assert_eq!(&linear[..], &p.samples()[..FRAME]);
    }

    #[test]
    fn ringback_is_two_seconds_of_tone_then_four_of_silence() {
        let r = Prompt::ringback();
        assert_eq!(r.len(), 6 * 8000);
        let energy = |s: &[i16]| s.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / s.len() as f64;
        assert!(energy(&r.samples()[..16000]) > 1_000_000.0, "audible while on");
        assert_eq!(energy(&r.samples()[16000..]), 0.0, "silent while off");
        assert!(Arc::ptr_eq(&r, &Prompt::ringback()), "made once");
    }

    #[test]
    fn a_prompt_ends_with_silence_padding() {
        let p = Arc::new(Prompt::from_samples("t", vec![1000; 200]).unwrap());
        let mut player = Player::new(p, false);
        let mut frame = [0u8; FRAME];
        assert!(player.next_g711(Law::Alaw, &mut frame));
        assert!(player.next_g711(Law::Alaw, &mut frame));
        assert_eq!(frame[39], g711::linear_to_alaw(1000));
        assert!(frame[40..].iter().all(|b| *b == g711::ALAW_SILENCE));
        assert!(player.finished());
        assert!(!player.next_g711(Law::Alaw, &mut frame));
    }

    #[test]
    fn refuses_files_it_cannot_play_and_says_how_to_convert() {
        let spec = hound::WavSpec { channels: 2, sample_rate: 44_100, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
        let mut c = Cursor::new(Vec::new());
        {
            let mut w = hound::WavWriter::new(&mut c, spec).unwrap();
            w.write_sample(0i16).unwrap();
            w.write_sample(0i16).unwrap();
            w.finalize().unwrap();
        }
        let e = Prompt::from_wav("music.wav", c.get_ref()).unwrap_err().to_string();
        assert!(e.contains("44100 Hz") && e.contains("sox"), "{e}");
        assert!(Prompt::from_wav("x", b"not a wav").is_err());
        assert!(matches!(Prompt::from_samples("x", vec![]), Err(PromptError::Empty(_))));
    }
}
