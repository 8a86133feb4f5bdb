//! DTMF key presses in both forms a call carries them: RFC 4733
//! telephone-event RTP packets, and SIP INFO bodies (`application/dtmf-relay`,
//! `application/dtmf`) from devices that signal keys out of band.
//!
//! RFC 4733 sends one key press as many packets sharing one RTP timestamp:
//! a start packet (marker set), updates whose duration grows, and an end
//! packet repeated three times. [`DtmfReceiver`] turns that back into one
//! [`Detected`] per key press, also when end packets are lost; [`DtmfSender`]
//! produces the packets for digits the gateway sends itself (agent keypad,
//! IVR), to be stamped into a leg's outgoing stream by
//! [`OutStream::stamp_dtmf`](super::stream::OutStream::stamp_dtmf).
//!
//! Sans-IO: packets and the time come in, detections and payloads go out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Why a telephone-event payload or a digit is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    #[error("telephone-event payload is {0} bytes; RFC 4733 needs at least 4")]
    Short(usize),
    #[error("telephone-event payload is {0} bytes; RFC 4733 needs a multiple of 4")]
    Length(usize),
    #[error("{0:?} is not a DTMF key (0-9, *, #, A-D)")]
    UnknownDigit(char),
}

/// One RFC 4733 §2.3 event: four bytes of a telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// Event code: 0–9 digits, 10 `*`, 11 `#`, 12–15 `A`–`D`, 16 flash…
    pub code: u8,
    /// The E bit: this is (a copy of) the event's final packet.
    pub end: bool,
    /// Power level in −dBm0 (0–63); 0 for non-tone events.
    pub volume: u8,
    /// Duration so far, in RTP timestamp units of the stream.
    pub duration: u16,
}

impl Event {
    /// Reads the first event of a payload (the one the packet's timestamp
    /// belongs to).
    pub fn parse(payload: &[u8]) -> Result<Event, DtmfError> {
        Ok(Event::parse_all(payload)?[0])
    }

    /// Reads every event of a payload: RFC 4733 §2.5.1.5 lets a packet carry
    /// several events back to back, four bytes each. Never empty on `Ok`.
    pub fn parse_all(payload: &[u8]) -> Result<Vec<Event>, DtmfError> {
        if payload.len() < 4 {
            return Err(DtmfError::Short(payload.len()));
        }
        if !payload.len().is_multiple_of(4) {
            return Err(DtmfError::Length(payload.len()));
        }
        Ok(payload
            .chunks_exact(4)
            .map(|b| Event {
                code: b[0],
                end: b[1] & 0x80 != 0,
                volume: b[1] & 0x3f,
                duration: u16::from_be_bytes([b[2], b[3]]),
            })
            .collect())
    }

    /// The four payload bytes (the reserved bit is sent as zero).
    pub fn build(&self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [self.code, (self.end as u8) << 7 | (self.volume & 0x3f), d[0], d[1]]
    }

    /// The same event for a stream at another clock rate (a leg on Opus at
    /// 48 kHz relayed to a leg on G.711 at 8 kHz, or back).
    pub fn rescaled(&self, from_rate: u32, to_rate: u32) -> Event {
        Event { duration: rescale_duration(self.duration, from_rate, to_rate), ..*self }
    }
}

/// The key an event code stands for: `0`–`9`, `*`, `#`, `A`–`D`; `None` for
/// flash and the other non-key events.
pub fn digit(code: u8) -> Option<char> {
    match code {
        0..=9 => Some((b'0' + code) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + code - 12) as char),
        _ => None,
    }
}

/// The event code of a key (lower-case `a`–`d` accepted).
pub fn code_of(key: char) -> Option<u8> {
    match key {
        '0'..='9' => Some(key as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(key as u8 - b'A' + 12),
        'a'..='d' => Some(key as u8 - b'a' + 12),
        _ => None,
    }
}

/// A duration in timestamp units of one clock rate converted to another,
/// saturating at the 16-bit field's maximum. A zero `from_rate` leaves the
/// duration unchanged (there is nothing to convert from).
pub fn rescale_duration(duration: u16, from_rate: u32, to_rate: u32) -> u16 {
    if from_rate == 0 {
        return duration;
    }
    (duration as u64 * to_rate as u64 / from_rate as u64).min(u16::MAX as u64) as u16
}

fn units_to_duration(units: u64, clock_rate: u32) -> Duration {
    Duration::from_micros(units * 1_000_000 / clock_rate.max(1) as u64)
}

fn duration_to_units(d: Duration, clock_rate: u32) -> u64 {
    (d.as_micros() * clock_rate as u128 / 1_000_000) as u64
}

/// A continuation of a long event (RFC 4733 §2.5.1.3): the previous
/// segment filled the 16-bit duration and the new one starts where it
/// ended (within 100 ms, as segment boundaries are approximate).
fn is_next_segment(clock_rate: u32, cur: &InProgress, ts: u32) -> bool {
    let slack = (clock_rate / 10) as i64;
    let delta = ts.wrapping_sub(cur.segment_ts) as i64;
    cur.duration as i64 >= 0xffff - slack && (delta - 0xffff).abs() <= slack
}

/// One key press read from a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detected {
    pub digit: char,
    /// How long the key was held, as the sender last reported it.
    pub duration: Duration,
    /// The RTP timestamp of the event (of its first segment).
    pub rtp_timestamp: u32,
}

/// How long after the last packet of an event without an end the event is
/// reported anyway (its end packets were all lost).
pub const DEFAULT_END_TIMEOUT: Duration = Duration::from_secs(1);

/// Timestamps of reported events remembered to drop their late copies.
const REMEMBERED: usize = 8;

#[derive(Debug, Clone)]
struct InProgress {
    /// Timestamp of the event's first segment (what is reported).
    first_ts: u32,
    /// Timestamp of the segment being received (RFC 4733 §2.5.1.3).
    segment_ts: u32,
    code: u8,
    /// Units of the segments before the current one.
    earlier: u64,
    duration: u16,
    last_update: Instant,
}

/// Turns the telephone-event packets of one incoming stream into key
/// presses, each reported exactly once.
///
/// Packets of one event share its RTP timestamp, which is how copies are
/// recognised: once an event is reported, later packets with its timestamp
/// (the repeated end packets, late updates) are ignored. An event whose end
/// never arrives is reported when the next event starts, or by [`poll`]
/// after [`DEFAULT_END_TIMEOUT`] of silence.
///
/// [`poll`]: DtmfReceiver::poll
#[derive(Debug, Clone)]
pub struct DtmfReceiver {
    clock_rate: u32,
    end_timeout: Duration,
    current: Option<InProgress>,
    /// Reported but not yet handed out (an event that began and ended while
    /// another one was being reported), with when it became ready.
    ready: VecDeque<(Detected, Instant)>,
    reported: VecDeque<u32>,
}

impl DtmfReceiver {
    /// A receiver for a stream whose telephone-event runs at `clock_rate`
    /// (8000 beside G.711, 48000 beside Opus).
    pub fn new(clock_rate: u32) -> DtmfReceiver {
        DtmfReceiver {
            clock_rate: clock_rate.max(1),
            end_timeout: DEFAULT_END_TIMEOUT,
            current: None,
            ready: VecDeque::new(),
            reported: VecDeque::new(),
        }
    }

    /// Changes how long an event without end packets is waited for.
    pub fn with_end_timeout(mut self, timeout: Duration) -> DtmfReceiver {
        self.end_timeout = timeout;
        self
    }

    /// Accounts one telephone-event packet (its RTP timestamp and marker
    /// bit, and the first event of its payload). Returns a key press when
    /// one is complete: this packet ended it, or this packet started a new
    /// event while the previous one never ended. A second key press that
    /// becomes ready at the same time waits for [`poll`](Self::poll).
    pub fn on_packet(&mut self, rtp_timestamp: u32, marker: bool, event: Event, now: Instant) -> Option<Detected> {
        if digit(event.code).is_none() {
            return self.ready.pop_front().map(|(d, _)| d);
        }
        if self.reported.contains(&rtp_timestamp) {
            return self.ready.pop_front().map(|(d, _)| d);
        }
        let clock_rate = self.clock_rate;
        match &mut self.current {
            Some(cur) if cur.segment_ts == rtp_timestamp => {
                cur.duration = cur.duration.max(event.duration);
                cur.last_update = now;
            }
            Some(cur) if (rtp_timestamp.wrapping_sub(cur.segment_ts) as i32) < 0 => {
                // A late packet of an older event we no longer track.
                return self.ready.pop_front().map(|(d, _)| d);
            }
            Some(cur) if !marker && event.code == cur.code && is_next_segment(clock_rate, cur, rtp_timestamp) => {
                cur.earlier += rtp_timestamp.wrapping_sub(cur.segment_ts) as u64;
                cur.segment_ts = rtp_timestamp;
                cur.duration = event.duration;
                cur.last_update = now;
            }
            Some(_) => {
                // A new event while the previous one had no end: its end
                // packets were lost; report it now.
                self.finish(now, "next event");
                self.current = Some(InProgress {
                    first_ts: rtp_timestamp,
                    segment_ts: rtp_timestamp,
                    code: event.code,
                    earlier: 0,
                    duration: event.duration,
                    last_update: now,
                });
            }
            None => {
                self.current = Some(InProgress {
                    first_ts: rtp_timestamp,
                    segment_ts: rtp_timestamp,
                    code: event.code,
                    earlier: 0,
                    duration: event.duration,
                    last_update: now,
                });
            }
        }
        if event.end {
            self.finish(now, "end");
        }
        self.ready.pop_front().map(|(d, _)| d)
    }

    fn finish(&mut self, now: Instant, how: &'static str) {
        let Some(cur) = self.current.take() else { return };
        let Some(key) = digit(cur.code) else { return };
        metrics::counter!("switchboard_dtmf_events_total", "via" => "rfc4733", "completed_by" => how).increment(1);
        self.reported.push_back(cur.segment_ts);
        if cur.first_ts != cur.segment_ts {
            self.reported.push_back(cur.first_ts);
        }
        while self.reported.len() > REMEMBERED {
            self.reported.pop_front();
        }
        let detected = Detected {
            digit: key,
            duration: units_to_duration(cur.earlier + cur.duration as u64, self.clock_rate),
            rtp_timestamp: cur.first_ts,
        };
        self.ready.push_back((detected, now));
    }

    /// The incoming stream changed source (new SSRC after a transfer or a
    /// re-INVITE): its timestamps start afresh, so an event in progress is
    /// finished (reported by [`poll`](Self::poll)) and remembered timestamps
    /// are forgotten.
    pub fn new_source(&mut self, now: Instant) {
        self.finish(now, "source change");
        self.reported.clear();
    }

    /// A key press that became ready without a packet to return it with:
    /// the second of two completed by one packet, or an event whose end has
    /// not come [`DEFAULT_END_TIMEOUT`] after its last packet.
    pub fn poll(&mut self, now: Instant) -> Option<Detected> {
        if let Some((d, _)) = self.ready.pop_front() {
            return Some(d);
        }
        if let Some(cur) = &self.current {
            if now.saturating_duration_since(cur.last_update) >= self.end_timeout {
                self.finish(now, "timeout");
                return self.ready.pop_front().map(|(d, _)| d);
            }
        }
        None
    }

    /// When [`poll`](Self::poll) has something to report, if anything is
    /// pending.
    pub fn next_timeout(&self) -> Option<Instant> {
        if let Some((_, at)) = self.ready.front() {
            return Some(*at);
        }
        self.current.as_ref().map(|c| c.last_update + self.end_timeout)
    }
}

/// Interval between the updates of an event being sent.
pub const UPDATE_INTERVAL: Duration = Duration::from_millis(50);
/// Interval between the three copies of an end packet.
pub const END_INTERVAL: Duration = Duration::from_millis(20);
/// Default length of a generated tone.
pub const DEFAULT_TONE: Duration = Duration::from_millis(100);
/// Default silence between two generated tones.
pub const DEFAULT_GAP: Duration = Duration::from_millis(100);
/// Default power level of generated tones, in −dBm0.
pub const DEFAULT_VOLUME: u8 = 10;

/// One telephone-event packet to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutPacket {
    pub payload_type: u8,
    /// Marker bit: set on the first packet of an event.
    pub marker: bool,
    /// This packet begins a new event: it takes the stream's current
    /// timestamp, and every later packet of the event repeats it.
    pub starts_event: bool,
    pub payload: [u8; 4],
}

#[derive(Debug, Clone, Copy)]
enum Sending {
    Idle,
    Tone { code: u8, start: Instant, next: Instant },
    Ending { code: u8, duration: u16, copies_sent: u8, next: Instant },
}

/// Generates the RFC 4733 packets of queued digits for one outgoing stream:
/// per digit a start packet with the marker bit, an update every 50 ms with
/// the duration so far, and the end packet three times 20 ms apart, then a
/// gap before the next digit. Packet times follow the schedule, not the
/// moment [`poll`](Self::poll) is called, so a late poll does not stretch a
/// tone.
#[derive(Debug, Clone)]
pub struct DtmfSender {
    payload_type: u8,
    clock_rate: u32,
    tone: Duration,
    gap: Duration,
    volume: u8,
    queue: VecDeque<u8>,
    state: Sending,
    /// Earliest start of the next digit.
    ready_at: Option<Instant>,
}

impl DtmfSender {
    /// A sender for telephone-event with `payload_type` at `clock_rate`
    /// (the rate the leg negotiated for it: 8000 or 48000).
    pub fn new(payload_type: u8, clock_rate: u32) -> DtmfSender {
        DtmfSender {
            payload_type: payload_type & 0x7f,
            clock_rate: clock_rate.max(1),
            tone: DEFAULT_TONE,
            gap: DEFAULT_GAP,
            volume: DEFAULT_VOLUME,
            queue: VecDeque::new(),
            state: Sending::Idle,
            ready_at: None,
        }
    }

    /// Length of each tone, capped at what the 16-bit duration field can
    /// carry at this clock rate (1.36 s at 48 kHz): longer events would need
    /// segments, which a keypad press never does.
    pub fn with_tone(mut self, tone: Duration) -> DtmfSender {
        let max = units_to_duration(u16::MAX as u64, self.clock_rate);
        self.tone = tone.clamp(Duration::from_millis(20), max);
        self
    }

    /// Silence between the end of one tone and the start of the next (at
    /// least the 40 ms the end copies take).
    pub fn with_gap(mut self, gap: Duration) -> DtmfSender {
        self.gap = gap.max(END_INTERVAL * 2);
        self
    }

    /// Power level in −dBm0 (0–63).
    pub fn with_volume(mut self, volume: u8) -> DtmfSender {
        self.volume = volume.min(63);
        self
    }

    /// Queues keys to send; all or none (an unknown key rejects the lot).
    pub fn queue(&mut self, keys: &str, now: Instant) -> Result<(), DtmfError> {
        let codes = keys.chars().map(|c| code_of(c).ok_or(DtmfError::UnknownDigit(c))).collect::<Result<Vec<_>, _>>()?;
        self.queue.extend(codes);
        if self.ready_at.is_none_or(|r| r < now) && matches!(self.state, Sending::Idle) {
            self.ready_at = Some(now);
        }
        Ok(())
    }

    /// Nothing being sent and nothing queued.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, Sending::Idle) && self.queue.is_empty()
    }

    /// When [`poll`](Self::poll) has the next packet.
    pub fn next_due(&self) -> Option<Instant> {
        match self.state {
            Sending::Tone { next, .. } | Sending::Ending { next, .. } => Some(next),
            Sending::Idle if !self.queue.is_empty() => self.ready_at,
            Sending::Idle => None,
        }
    }

    fn packet(&self, marker: bool, starts_event: bool, code: u8, end: bool, duration: u16) -> OutPacket {
        let payload = Event { code, end, volume: self.volume, duration }.build();
        OutPacket { payload_type: self.payload_type, marker, starts_event, payload }
    }

    fn units(&self, d: Duration) -> u16 {
        duration_to_units(d, self.clock_rate).min(u16::MAX as u64) as u16
    }

    /// The packets due at `now`, in order. Updates overtaken by the end of
    /// their tone (a late poll) are skipped.
    pub fn poll(&mut self, now: Instant) -> Vec<OutPacket> {
        let mut out = Vec::new();
        loop {
            match self.state {
                Sending::Idle => {
                    let Some(ready) = self.ready_at else { break };
                    if ready > now {
                        break;
                    }
                    let Some(code) = self.queue.pop_front() else { break };
                    out.push(self.packet(true, true, code, false, 0));
                    self.state = Sending::Tone { code, start: now, next: now + UPDATE_INTERVAL };
                }
                Sending::Tone { code, start, next } => {
                    if next > now {
                        break;
                    }
                    let end_at = start + self.tone;
                    if now >= end_at || next >= end_at {
                        let duration = self.units(self.tone);
                        out.push(self.packet(false, false, code, true, duration));
                        self.state = Sending::Ending { code, duration, copies_sent: 1, next: end_at + END_INTERVAL };
                        self.ready_at = Some(end_at + self.gap);
                    } else {
                        out.push(self.packet(false, false, code, false, self.units(next - start)));
                        self.state = Sending::Tone { code, start, next: (next + UPDATE_INTERVAL).min(end_at) };
                    }
                }
                Sending::Ending { code, duration, copies_sent, next } => {
                    if next > now {
                        break;
                    }
                    out.push(self.packet(false, false, code, true, duration));
                    self.state = if copies_sent + 1 >= 3 {
                        Sending::Idle
                    } else {
                        Sending::Ending { code, duration, copies_sent: copies_sent + 1, next: next + END_INTERVAL }
                    };
                }
            }
        }
        out
    }
}

/// Relays telephone-event packets from a leg at one clock rate and payload
/// type to a leg at another (Opus at 48 kHz on one side, G.711 at 8 kHz on
/// the other): durations are rescaled, and each incoming event becomes one
/// outgoing event, for [`OutStream::stamp_dtmf`] to give it the outgoing
/// stream's timestamp.
///
/// [`OutStream::stamp_dtmf`]: super::stream::OutStream::stamp_dtmf
#[derive(Debug, Clone)]
pub struct EventTranslator {
    from_rate: u32,
    to_rate: u32,
    to_payload_type: u8,
    last_event_ts: Option<u32>,
}

impl EventTranslator {
    pub fn new(from_rate: u32, to_rate: u32, to_payload_type: u8) -> EventTranslator {
        EventTranslator { from_rate, to_rate, to_payload_type: to_payload_type & 0x7f, last_event_ts: None }
    }

    /// The outgoing packet for an incoming one (its RTP timestamp, marker
    /// and payload). A payload with several events (RFC 4733 §2.5.1.5) is
    /// relayed as its first, the one its timestamp belongs to.
    pub fn translate(&mut self, rtp_timestamp: u32, marker: bool, payload: &[u8]) -> Result<OutPacket, DtmfError> {
        let event = Event::parse(payload)?.rescaled(self.from_rate, self.to_rate);
        let starts_event = self.last_event_ts != Some(rtp_timestamp);
        self.last_event_ts = Some(rtp_timestamp);
        Ok(OutPacket { payload_type: self.to_payload_type, marker: marker || starts_event, starts_event, payload: event.build() })
    }
}

/// A key press from a SIP INFO body: the key and, when the body gives one,
/// how long it was held.
///
/// `application/dtmf-relay` carries `Signal=` and `Duration=` lines (keys in
/// any case, spaces allowed; `Signal=10`/`11` mean `*`/`#`, as do 12–15 for
/// A–D; Duration in milliseconds). `application/dtmf` carries the key alone.
/// Any other content type, or a body without a usable key, is `None`.
pub fn parse_info(content_type: &str, body: &[u8]) -> Option<(char, Option<Duration>)> {
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let text = std::str::from_utf8(body).ok()?;
    let key = match media.as_str() {
        "application/dtmf-relay" => {
            let mut signal = None;
            let mut duration = None;
            for line in text.lines() {
                let Some((name, value)) = line.split_once('=') else { continue };
                let value = value.trim();
                match name.trim().to_ascii_lowercase().as_str() {
                    "signal" => signal = info_key(value),
                    "duration" => duration = value.parse::<u64>().ok().map(Duration::from_millis),
                    _ => {}
                }
            }
            return signal.map(|s| {
                metrics::counter!("switchboard_dtmf_events_total", "via" => "info", "completed_by" => "end").increment(1);
                (s, duration)
            });
        }
        "application/dtmf" => info_key(text.trim())?,
        _ => return None,
    };
    metrics::counter!("switchboard_dtmf_events_total", "via" => "info", "completed_by" => "end").increment(1);
    Some((key, None))
}

fn info_key(value: &str) -> Option<char> {
    let mut chars = value.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => code_of(c).and_then(digit),
        _ => value.parse::<u8>().ok().and_then(digit),
    }
}

/// The `application/dtmf-relay` body for an INFO the gateway sends.
pub fn dtmf_relay_body(key: char, duration: Duration) -> Option<String> {
    let key = digit(code_of(key)?)?;
    Some(format!("Signal={key}\r\nDuration={}\r\n", duration.as_millis()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(code: u8, end: bool, duration: u16) -> Event {
        Event { code, end, volume: 10, duration }
    }

    #[test]
    fn payload_round_trips_and_rejects_odd_sizes() {
        let e = Event { code: 11, end: true, volume: 63, duration: 0x1234 };
        assert_eq!(e.build(), [11, 0xbf, 0x12, 0x34]);
        assert_eq!(Event::parse(&e.build()), Ok(e));
        // The reserved bit is ignored on input.
        assert_eq!(Event::parse(&[5, 0x4a, 0, 160]).unwrap(), ev(5, false, 160));
        assert_eq!(Event::parse(&[1, 2, 3]), Err(DtmfError::Short(3)));
        assert_eq!(Event::parse(&[]), Err(DtmfError::Short(0)));
        assert_eq!(Event::parse(&[1, 2, 3, 4, 5]), Err(DtmfError::Length(5)));
        let two = [ev(1, true, 800).build(), ev(2, false, 160).build()].concat();
        assert_eq!(Event::parse_all(&two).unwrap(), vec![ev(1, true, 800), ev(2, false, 160)]);
        assert_eq!(Event::parse(&two).unwrap(), ev(1, true, 800));
    }

    #[test]
    fn keys_and_codes() {
        let keys = "0123456789*#ABCD";
        for (code, key) in keys.chars().enumerate() {
            assert_eq!(digit(code as u8), Some(key));
            assert_eq!(code_of(key), Some(code as u8));
        }
        assert_eq!(code_of('b'), Some(13));
        assert_eq!(digit(16), None, "flash is not a key");
        assert_eq!(code_of('E'), None);
    }

    #[test]
    fn rescaling_saturates() {
        assert_eq!(rescale_duration(800, 8000, 48000), 4800);
        assert_eq!(rescale_duration(4800, 48000, 8000), 800);
        assert_eq!(rescale_duration(20_000, 8000, 48000), u16::MAX);
        assert_eq!(rescale_duration(123, 0, 8000), 123);
        assert_eq!(ev(3, true, 960).rescaled(48000, 8000), ev(3, true, 160));
    }

    #[test]
    fn one_key_press_is_reported_once_despite_updates_and_three_ends() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut rx = DtmfReceiver::new(8000);
        assert_eq!(rx.on_packet(1000, true, ev(5, false, 0), ms(0)), None);
        assert_eq!(rx.on_packet(1000, false, ev(5, false, 400), ms(50)), None);
        // Updates may arrive out of order; the longest duration wins.
        assert_eq!(rx.on_packet(1000, false, ev(5, false, 800), ms(100)), None);
        assert_eq!(rx.on_packet(1000, false, ev(5, false, 400), ms(101)), None);
        let d = rx.on_packet(1000, false, ev(5, true, 960), ms(120)).expect("the end reports the key");
        assert_eq!(d, Detected { digit: '5', duration: Duration::from_millis(120), rtp_timestamp: 1000 });
        assert_eq!(rx.on_packet(1000, false, ev(5, true, 960), ms(140)), None, "second end copy");
        assert_eq!(rx.on_packet(1000, false, ev(5, true, 960), ms(160)), None, "third end copy");
        assert_eq!(rx.poll(ms(5000)), None);
        assert_eq!(rx.next_timeout(), None);
        // The same key again is a new event: a new timestamp.
        assert_eq!(rx.on_packet(3000, true, ev(5, true, 800), ms(400)).map(|d| d.rtp_timestamp), Some(3000));
    }

    #[test]
    fn lost_end_packets_are_reported_by_the_next_event_or_the_timeout() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut rx = DtmfReceiver::new(8000);
        rx.on_packet(100, true, ev(1, false, 0), ms(0));
        rx.on_packet(100, false, ev(1, false, 800), ms(100));
        // Digit 2 begins; digit 1 never ended.
        let d = rx.on_packet(2000, true, ev(2, false, 0), ms(300)).unwrap();
        assert_eq!((d.digit, d.duration, d.rtp_timestamp), ('1', Duration::from_millis(100), 100));
        assert_eq!(rx.on_packet(100, false, ev(1, true, 800), ms(301)), None, "late end of an already reported event");
        // Digit 2's end is lost too; the timeout reports it once.
        rx.on_packet(2000, false, ev(2, false, 400), ms(350));
        assert_eq!(rx.next_timeout(), Some(ms(1350)));
        assert_eq!(rx.poll(ms(1349)), None);
        assert_eq!(rx.poll(ms(1350)).map(|d| d.digit), Some('2'));
        assert_eq!(rx.poll(ms(5000)), None);
        assert_eq!(rx.on_packet(2000, false, ev(2, true, 800), ms(5001)), None);
    }

    #[test]
    fn an_event_completing_while_another_is_reported_waits_for_poll() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(8000);
        rx.on_packet(100, true, ev(7, false, 0), t0);
        // Only the last end packet of the next digit survived.
        assert_eq!(rx.on_packet(900, false, ev(8, true, 640), t0).map(|d| d.digit), Some('7'));
        assert_eq!(rx.next_timeout(), Some(t0));
        assert_eq!(rx.poll(t0).map(|d| (d.digit, d.duration)), Some(('8', Duration::from_millis(80))));
        assert_eq!(rx.poll(t0), None);
    }

    #[test]
    fn long_events_continue_across_segments_and_other_events_are_ignored() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(48000);
        // 0xffff units at 48 kHz is 1.365 s; the key is held for 2 s.
        rx.on_packet(10, true, ev(0, false, 0), t0);
        rx.on_packet(10, false, ev(0, false, 0xffff), t0 + Duration::from_millis(1365));
        let seg2 = 10u32.wrapping_add(0xffff);
        assert_eq!(rx.on_packet(seg2, false, ev(0, false, 4800), t0 + Duration::from_millis(1465)), None);
        let d = rx.on_packet(seg2, false, ev(0, true, 30465), t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(d.rtp_timestamp, 10);
        assert!((d.duration.as_secs_f64() - 2.0).abs() < 0.001, "{:?}", d.duration);
        assert_eq!(rx.on_packet(seg2, false, ev(0, true, 30465), t0 + Duration::from_secs(2)), None);
        // Flash hook (16) is not a key.
        assert_eq!(rx.on_packet(99_999, true, ev(16, true, 800), t0 + Duration::from_secs(3)), None);
        assert_eq!(rx.poll(t0 + Duration::from_secs(9)), None);
    }

    fn run(tx: &mut DtmfSender, from: Instant, until: Duration) -> Vec<(Duration, OutPacket)> {
        let mut out = Vec::new();
        let mut now = from;
        while let Some(due) = tx.next_due() {
            if due > from + until {
                break;
            }
            now = now.max(due);
            for p in tx.poll(now) {
                out.push((now - from, p));
            }
        }
        out
    }

    #[test]
    fn sender_emits_start_updates_and_three_ends_then_the_next_digit_after_the_gap() {
        let t0 = Instant::now();
        let mut tx = DtmfSender::new(101, 8000);
        assert!(tx.is_idle());
        assert_eq!(tx.queue("1x", t0), Err(DtmfError::UnknownDigit('x')));
        assert!(tx.is_idle(), "nothing queued from a rejected string");
        tx.queue("1#", t0).unwrap();
        let packets = run(&mut tx, t0, Duration::from_secs(2));
        let summary: Vec<(u64, bool, bool, Event)> = packets
            .iter()
            .map(|(at, p)| (at.as_millis() as u64, p.marker, p.starts_event, Event::parse(&p.payload).unwrap()))
            .collect();
        let e = |code, end, duration| Event { code, end, volume: DEFAULT_VOLUME, duration };
        assert_eq!(
            summary,
            vec![
                (0, true, true, e(1, false, 0)),
                (50, false, false, e(1, false, 400)),
                (100, false, false, e(1, true, 800)),
                (120, false, false, e(1, true, 800)),
                (140, false, false, e(1, true, 800)),
                (200, true, true, e(11, false, 0)),
                (250, false, false, e(11, false, 400)),
                (300, false, false, e(11, true, 800)),
                (320, false, false, e(11, true, 800)),
                (340, false, false, e(11, true, 800)),
            ]
        );
        assert!(packets.iter().all(|(_, p)| p.payload_type == 101));
        assert!(tx.is_idle());
        assert_eq!(tx.next_due(), None);
    }

    #[test]
    fn sender_at_48k_with_a_long_tone_and_a_late_poll() {
        let t0 = Instant::now();
        let mut tx = DtmfSender::new(102, 48000).with_tone(Duration::from_millis(180)).with_gap(Duration::ZERO);
        tx.queue("9", t0).unwrap();
        assert_eq!(tx.poll(t0).len(), 1);
        // Polled only after the tone is over: the end, with the full duration.
        let late = tx.poll(t0 + Duration::from_millis(500));
        let events: Vec<Event> = late.iter().map(|p| Event::parse(&p.payload).unwrap()).collect();
        assert_eq!(events.first().map(|e| (e.end, e.duration)), Some((true, 8640)));
        assert_eq!(events.len(), 3, "all three end copies are due by then: {events:?}");
        // A tone longer than the field can carry is capped.
        let mut long = DtmfSender::new(102, 48000).with_tone(Duration::from_secs(5));
        long.queue("1", t0).unwrap();
        let all = run(&mut long, t0, Duration::from_secs(10));
        let last = Event::parse(&all.last().unwrap().1.payload).unwrap();
        assert!(last.end && last.duration >= 0xfff0, "{last:?}");
    }

    #[test]
    fn sender_and_receiver_agree() {
        let t0 = Instant::now();
        let mut tx = DtmfSender::new(101, 8000);
        tx.queue("12*#", t0).unwrap();
        let mut rx = DtmfReceiver::new(8000);
        let mut keys = String::new();
        let mut ts = 0u32;
        for (at, p) in run(&mut tx, t0, Duration::from_secs(5)) {
            if p.starts_event {
                ts += 8000;
            }
            if let Some(d) = rx.on_packet(ts, p.marker, Event::parse(&p.payload).unwrap(), t0 + at) {
                assert_eq!(d.duration, DEFAULT_TONE);
                keys.push(d.digit);
            }
        }
        assert_eq!(keys, "12*#");
    }

    #[test]
    fn sip_info_bodies() {
        let relay = "application/dtmf-relay";
        assert_eq!(parse_info(relay, b"Signal=5\r\nDuration=160\r\n"), Some(('5', Some(Duration::from_millis(160)))));
        assert_eq!(parse_info("Application/DTMF-Relay; charset=utf-8", b"signal = *\nduration = 250"), Some(('*', Some(Duration::from_millis(250)))));
        assert_eq!(parse_info(relay, b"Signal=#"), Some(('#', None)));
        assert_eq!(parse_info(relay, b"Signal=10\r\nDuration=100"), Some(('*', Some(Duration::from_millis(100)))));
        assert_eq!(parse_info(relay, b"Signal=11"), Some(('#', None)));
        assert_eq!(parse_info(relay, b"Signal=d\r\nDuration=abc"), Some(('D', None)));
        assert_eq!(parse_info(relay, b"Signal=16"), None, "flash is not a key");
        assert_eq!(parse_info(relay, b"Duration=160"), None);
        assert_eq!(parse_info(relay, b"Signal=x"), None);
        assert_eq!(parse_info(relay, &[0xff, 0xfe]), None);
        assert_eq!(parse_info("application/dtmf", b" 7\r\n"), Some(('7', None)));
        assert_eq!(parse_info("application/dtmf", b"11"), Some(('#', None)));
        assert_eq!(parse_info("application/sdp", b"Signal=5"), None);
        assert_eq!(parse_info("text/plain", b"5"), None);
        let body = dtmf_relay_body('a', Duration::from_millis(120)).unwrap();
        assert_eq!(body, "Signal=A\r\nDuration=120\r\n");
        assert_eq!(parse_info(relay, body.as_bytes()), Some(('A', Some(Duration::from_millis(120)))));
        assert_eq!(dtmf_relay_body('?', Duration::ZERO), None);
    }

    #[test]
    fn a_new_source_finishes_the_event_in_progress() {
        let t0 = Instant::now();
        let mut rx = DtmfReceiver::new(8000);
        rx.on_packet(4_000_000_000, true, ev(3, false, 400), t0);
        rx.new_source(t0);
        assert_eq!(rx.poll(t0).map(|d| d.digit), Some('3'));
        // The new source's timestamps are lower; its event still counts.
        assert_eq!(rx.on_packet(10, true, ev(4, true, 800), t0).map(|d| d.digit), Some('4'));
    }

    #[test]
    fn events_are_translated_between_clock_rates() {
        let mut tr = EventTranslator::new(48000, 8000, 101);
        let start = tr.translate(960_000, true, &ev(6, false, 0).build()).unwrap();
        assert_eq!((start.payload_type, start.marker, start.starts_event), (101, true, true));
        let update = tr.translate(960_000, false, &ev(6, false, 2400).build()).unwrap();
        assert!(!update.starts_event && !update.marker);
        assert_eq!(Event::parse(&update.payload).unwrap(), ev(6, false, 400));
        // The start packet was lost: the next event still starts (with a marker).
        let next = tr.translate(1_000_000, false, &ev(7, false, 2400).build()).unwrap();
        assert!(next.starts_event && next.marker);
        assert_eq!(tr.translate(1_000_000, false, &[1, 2]), Err(DtmfError::Short(2)));
    }
}
