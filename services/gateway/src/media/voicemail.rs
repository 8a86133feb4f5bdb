//! Voicemail: the caller hears the greeting and a beep, then speaks; the
//! message ends when the caller falls silent, reaches the maximum length,
//! hangs up, or an agent who screened the message picks up.
//!
//! Sans-IO. The bridge plays [`Voicemail::next_frame`] to the caller every
//! 20 ms until the greeting and beep are over, then feeds the caller's
//! decoded audio to [`Voicemail::push`] (through a recording timeline, so
//! the message keeps its real timing) and appends the encoded bytes from
//! [`Voicemail::take_bytes`] to the upload. The message is mono MP3.

use std::sync::Arc;
use std::time::Duration;

use super::encode::{self, HeaderPatch, RecordingFormat, StreamEncoder};
use super::player::{Law, Player, Prompt, FRAME};
use super::timeline::{Channel, Timeline, SAMPLE_RATE};

/// How a mailbox records.
#[derive(Debug, Clone)]
pub struct VoicemailSettings {
    /// Longest message.
    pub max_length: Duration,
    /// The message ends after this much silence.
    pub end_on_silence: Duration,
    /// Loudness (RMS of 16-bit samples) under which audio counts as silence.
    pub silence_rms: f64,
    pub format: RecordingFormat,
}

impl Default for VoicemailSettings {
    fn default() -> Self {
        VoicemailSettings { max_length: Duration::from_secs(180), end_on_silence: Duration::from_secs(5), silence_rms: 200.0, format: RecordingFormat::Mp3 }
    }
}

/// Where the voicemail is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Greeting,
    Beep,
    Recording,
    Done(End),
}

/// Why a message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Silence,
    MaxLength,
    CallerHungUp,
    PickedUp,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::Silence => "silence",
            End::MaxLength => "max_length",
            End::CallerHungUp => "caller_hung_up",
            End::PickedUp => "picked_up",
        }
    }
}

/// A finished message's last bytes and facts.
#[derive(Debug)]
pub struct Message {
    pub tail: Vec<u8>,
    pub header_patch: Option<HeaderPatch>,
    pub duration: Duration,
    pub end: End,
    pub format: RecordingFormat,
}

/// One caller leaving one message.
pub struct Voicemail {
    settings: VoicemailSettings,
    phase: Phase,
    greeting: Player,
    beep: Player,
    timeline: Timeline,
    /// When recording started, in the bridge's time.
    recording_since: Option<Duration>,
    encoder: Box<dyn StreamEncoder>,
    frames: Vec<i16>,
    mono: Vec<i16>,
    bytes: Vec<u8>,
    /// Samples of the message written out so far, and of trailing silence.
    written: u64,
    silent: u64,
    /// Written out up to the start of the current silence (the message
    /// is cut there when silence ends it).
    heard_until: u64,
}

impl Voicemail {
    pub fn new(greeting: Arc<Prompt>, settings: VoicemailSettings) -> Result<Voicemail, encode::EncodeError> {
        let encoder = encode::stream_encoder(settings.format, 1, SAMPLE_RATE, None)?;
        Ok(Voicemail {
            settings,
            phase: Phase::Greeting,
            greeting: Player::new(greeting, false),
            beep: Player::new(Arc::new(Prompt::beep(400)), false),
            timeline: Timeline::new(),
            recording_since: None,
            encoder,
            frames: Vec::new(),
            mono: Vec::new(),
            bytes: Vec::new(),
            written: 0,
            silent: 0,
            heard_until: 0,
        })
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The next 20 ms frame to play to the caller (greeting, then beep);
    /// `None` once recording has started. `now` is the bridge's time.
    pub fn next_frame(&mut self, law: Law, out: &mut [u8; FRAME], now: Duration) -> Option<()> {
        loop {
            match self.phase {
                Phase::Greeting => {
                    if self.greeting.next_g711(law, out) {
                        return Some(());
                    }
                    self.phase = Phase::Beep;
                }
                Phase::Beep => {
                    if self.beep.next_g711(law, out) {
                        return Some(());
                    }
                    self.phase = Phase::Recording;
                    self.recording_since = Some(now);
                    return None;
                }
                _ => return None,
            }
        }
    }

    /// The caller's decoded audio (8 kHz), with its RTP facts.
    pub fn push(&mut self, now: Duration, ssrc: u32, timestamp: u32, clock_rate: u32, pcm: &[i16]) {
        let (Phase::Recording, Some(since)) = (self.phase, self.recording_since) else { return };
        self.timeline.push(Channel::Customer, now.saturating_sub(since), ssrc, timestamp, clock_rate, pcm);
    }

    /// Writes out what is due and decides whether the message is over.
    pub fn poll(&mut self, now: Duration) -> Result<(), encode::EncodeError> {
        let (Phase::Recording, Some(since)) = (self.phase, self.recording_since) else { return Ok(()) };
        self.frames.clear();
        self.timeline.drain(now.saturating_sub(since), &mut self.frames);
        self.write_frames()?;
        let max = self.settings.max_length.as_millis() as u64 * SAMPLE_RATE as u64 / 1000;
        let silence = self.settings.end_on_silence.as_millis() as u64 * SAMPLE_RATE as u64 / 1000;
        tracing::trace!(written = self.written, silent = self.silent, frames = self.frames.len(), "voicemail progress");
        if self.written >= max {
            self.phase = Phase::Done(End::MaxLength);
        } else if self.silent >= silence && (self.written > self.silent || self.silent >= silence + 3 * SAMPLE_RATE as u64) {
            // A caller who says nothing at all gets three more seconds.
            self.phase = Phase::Done(End::Silence);
        }
        Ok(())
    }

    fn write_frames(&mut self) -> Result<(), encode::EncodeError> {
        let max = self.settings.max_length.as_millis() as u64 * SAMPLE_RATE as u64 / 1000;
        self.mono.clear();
        self.mono.extend(self.frames.iter().step_by(2).copied());
        let room = max.saturating_sub(self.written) as usize;
        self.mono.truncate(room);
        for chunk in self.mono.chunks(FRAME) {
            let rms = (chunk.iter().map(|s| (*s as f64).powi(2)).sum::<f64>() / chunk.len() as f64).sqrt();
            if rms < self.settings.silence_rms {
                self.silent += chunk.len() as u64;
            } else {
                self.silent = 0;
                self.heard_until = self.written + chunk.len() as u64;
            }
            self.written += chunk.len() as u64;
        }
        if !self.mono.is_empty() {
            self.encoder.push(&self.mono, &mut self.bytes)?;
        }
        Ok(())
    }

    /// Encoded bytes since the last call.
    pub fn take_bytes(&mut self) -> Option<Vec<u8>> {
        (!self.bytes.is_empty()).then(|| std::mem::take(&mut self.bytes))
    }

    /// Ends the message (if it is not over already, for `why`) and returns
    /// its last bytes. A message that silence ended is as long as the
    /// audio heard plus half a second.
    pub fn finish(mut self, now: Duration, why: End) -> Message {
        let end = match self.phase {
            Phase::Done(end) => end,
            _ => why,
        };
        if let (Phase::Recording, Some(since)) = (self.phase, self.recording_since) {
            self.frames.clear();
            self.timeline.finish(now.saturating_sub(since), &mut self.frames);
            if let Err(e) = self.write_frames() {
                tracing::warn!(error = %e, "encoding the end of a voicemail failed");
            }
        }
        let mut tail = std::mem::take(&mut self.bytes);
        let header_patch = match self.encoder.finish(&mut tail) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "finishing a voicemail's encoding failed");
                None
            }
        };
        let samples = if end == End::Silence && self.heard_until > 0 {
            (self.heard_until + SAMPLE_RATE as u64 / 2).min(self.written)
        } else {
            self.written
        };
        Message {
            tail,
            header_patch,
            duration: Duration::from_millis(samples * 1000 / SAMPLE_RATE as u64),
            end,
            format: self.settings.format,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn settings() -> VoicemailSettings {
        VoicemailSettings { max_length: Duration::from_secs(10), end_on_silence: Duration::from_secs(2), silence_rms: 200.0, format: RecordingFormat::Wav }
    }

    /// Plays the greeting and beep through; returns the time recording starts.
    fn through_greeting(vm: &mut Voicemail) -> u64 {
        let mut t = 0;
        let mut frame = [0u8; FRAME];
        while vm.next_frame(Law::Ulaw, &mut frame, ms(t)).is_some() {
            t += 20;
        }
        t
    }

    #[test]
    fn greeting_then_beep_then_message_ended_by_silence() {
        let greeting = Arc::new(Prompt::from_samples("g", vec![1000; 8000]).unwrap());
        let mut vm = Voicemail::new(greeting, settings()).unwrap();
        assert_eq!(vm.phase(), Phase::Greeting);
        let start = through_greeting(&mut vm);
        assert_eq!(start, 1000 + 400, "one second of greeting and the 400 ms beep");
        assert_eq!(vm.phase(), Phase::Recording);
        // Three seconds of speech, then silence.
        let mut t = start;
        let mut bytes = 0;
        for i in 0..400u32 {
            let loud = i < 150;
            vm.push(ms(t), 1, 160 * i, 8000, &[if loud { 3000 } else { 0 }; 160]);
            t += 20;
            vm.poll(ms(t)).unwrap();
            bytes += vm.take_bytes().map_or(0, |b| b.len());
            if matches!(vm.phase(), Phase::Done(_)) {
                break;
            }
        }
        assert_eq!(vm.phase(), Phase::Done(End::Silence));
        let message = vm.finish(ms(t), End::CallerHungUp);
        assert_eq!(message.end, End::Silence, "the first reason stands");
        assert!(message.duration >= ms(3000) && message.duration <= ms(3600), "cut after the speech: {:?}", message.duration);
        assert!(bytes + message.tail.len() > 3 * 16_000, "WAV bytes streamed out");
        assert!(message.header_patch.is_some());
    }

    #[test]
    fn a_message_stops_at_the_maximum_length_and_hangup_keeps_what_was_said() {
        let greeting = Arc::new(Prompt::from_samples("g", vec![1000; 160]).unwrap());
        let mut vm = Voicemail::new(greeting.clone(), settings()).unwrap();
        let mut t = through_greeting(&mut vm);
        for i in 0..1000u32 {
            vm.push(ms(t), 1, 160 * i, 8000, &[3000; 160]);
            t += 20;
            vm.poll(ms(t)).unwrap();
            if matches!(vm.phase(), Phase::Done(_)) {
                break;
            }
        }
        assert_eq!(vm.phase(), Phase::Done(End::MaxLength));
        let m = vm.finish(ms(t), End::CallerHungUp);
        assert_eq!(m.duration, Duration::from_secs(10));

        let mut vm = Voicemail::new(greeting, settings()).unwrap();
        let mut t = through_greeting(&mut vm);
        for i in 0..50u32 {
            vm.push(ms(t), 1, 160 * i, 8000, &[3000; 160]);
            t += 20;
        }
        let m = vm.finish(ms(t), End::CallerHungUp);
        assert_eq!(m.end, End::CallerHungUp);
        assert!(m.duration >= ms(900) && m.duration <= ms(1000), "{:?}", m.duration);
    }

    #[test]
    fn a_caller_who_says_nothing_is_hung_up_after_a_longer_silence() {
        let greeting = Arc::new(Prompt::from_samples("g", vec![1000; 160]).unwrap());
        let mut vm = Voicemail::new(greeting, settings()).unwrap();
        let start = through_greeting(&mut vm);
        let mut t = start;
        while !matches!(vm.phase(), Phase::Done(_)) && t < start + 20_000 {
            t += 20;
            vm.poll(ms(t)).unwrap();
        }
        assert_eq!(vm.phase(), Phase::Done(End::Silence));
        let waited = t - start;
        assert!((5_000..5_500).contains(&waited), "two seconds of silence plus three of grace: {waited} ms");
    }

    #[test]
    fn audio_before_the_beep_is_not_recorded() {
        let greeting = Arc::new(Prompt::from_samples("g", vec![1000; 1600]).unwrap());
        let mut vm = Voicemail::new(greeting, settings()).unwrap();
        vm.push(ms(0), 1, 0, 8000, &[3000; 160]);
        let t = through_greeting(&mut vm);
        let m = vm.finish(ms(t + 1000), End::CallerHungUp);
        assert_eq!(m.duration, ms(1000), "only the second after the beep, and it is silence");
    }
}
