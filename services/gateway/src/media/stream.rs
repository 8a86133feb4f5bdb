//! One outgoing RTP stream of a leg, continuous whatever feeds it
//! (RFC 3550 §5.1 and §8).
//!
//! The gateway anchors media, so each leg's peer must see one source from
//! us: one SSRC, sequence numbers that go up by one, timestamps that follow
//! the clock. What feeds a leg changes during a call: the other leg's
//! packets (whose SSRC, sequence and timestamp jump on a transfer or a
//! re-INVITE), music on hold, prompts, DTMF the gateway generates, and back.
//! [`OutStream`] rewrites relayed headers in place and stamps local packets
//! so the peer sees none of those switches except a marker bit where a new
//! talkspurt begins (RFC 3551 §4.1).
//!
//! At each switch of source, offsets are chosen so the new source's first
//! packet follows our last sequence number and its timestamp advances by
//! the wall time elapsed on the stream's clock; within a source the offsets
//! stay fixed, so reordered and duplicated packets keep their relative
//! order. The counters an RTCP sender report needs are kept here too.
//!
//! Sans-IO: the caller passes packets and the time, and sends what comes
//! back.

use std::time::{Duration, Instant};

use super::dtmf;
use super::rtp;

/// How a locally generated packet is timestamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// From the wall clock: the stream's last timestamp plus the time
    /// elapsed since, on the stream's clock. For a first packet (prompt
    /// start, DTMF event start).
    Now,
    /// The previous clock-driven timestamp plus this many units: for a
    /// generator that produces a packet per frame (160 for 20 ms at 8 kHz).
    /// The first packet after a switch of source is timed like [`Timing::Now`].
    Advance(u32),
    /// This exact timestamp; it does not move the stream's clock. For the
    /// later packets of an RFC 4733 event, which repeat its timestamp.
    At(u32),
}

/// What the stream has sent, for an RTCP sender report (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendStats {
    pub ssrc: u32,
    /// Packets sent since the stream began.
    pub packets: u64,
    /// Payload octets sent (headers and padding excluded).
    pub octets: u64,
    /// The RTP timestamp corresponding to the `now` the stats were taken
    /// at: what goes beside the NTP time in an SR.
    pub rtp_timestamp: u32,
    /// Timestamp of the newest packet sent.
    pub last_timestamp: u32,
    /// When the newest packet was sent.
    pub last_sent: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Nothing sent yet, or the clock rate changed: the next packet starts
    /// a new source.
    Unset,
    Local,
    Relayed {
        ssrc: u32,
        seq_offset: u16,
        ts_offset: u32,
        /// Output sequence of the source's first packet while it is recent:
        /// packets that would map before it are stragglers from before the
        /// switch and are dropped rather than sent with a reused number.
        guard: Option<u16>,
    },
}

/// Packets a new source must send before its switch point stops being
/// checked (sequence comparisons only hold over half the number space).
const GUARD_SPAN: u16 = 1000;

/// One leg's outgoing RTP stream: our SSRC, our sequence numbers, our
/// timestamps.
#[derive(Debug, Clone)]
pub struct OutStream {
    ssrc: u32,
    clock_rate: u32,
    /// The sequence number of the newest packet sent (valid once `sent`).
    highest_seq: u16,
    /// The (timestamp, wall time) the stream's clock runs from: the newest
    /// clock-driven packet.
    anchor: (u32, Instant),
    anchored: bool,
    source: Source,
    /// The relayed source switched away from: its stragglers are dropped
    /// until [`OutStream::rewired`].
    retired: Option<u32>,
    /// Timestamp of the local DTMF event being sent.
    event_ts: Option<u32>,
    packets: u64,
    octets: u64,
    last_timestamp: u32,
    last_sent: Option<Instant>,
    switches: u64,
}

fn seq_after(a: u16, b: u16) -> bool {
    (a.wrapping_sub(b) as i16) > 0
}

fn ts_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

fn dropped(reason: &'static str) -> bool {
    metrics::counter!("switchboard_rtp_dropped_total", "reason" => reason).increment(1);
    false
}

impl OutStream {
    /// A stream with a random SSRC, initial sequence number and initial
    /// timestamp (RFC 3550 §5.1), at `clock_rate` (8000 for G.711, 48000
    /// for Opus).
    pub fn new(clock_rate: u32) -> OutStream {
        OutStream::with_initial(clock_rate, rand::random(), rand::random(), rand::random())
    }

    /// A stream with chosen identifiers (tests; continuing a known stream).
    pub fn with_initial(clock_rate: u32, ssrc: u32, first_seq: u16, first_timestamp: u32) -> OutStream {
        OutStream {
            ssrc,
            clock_rate: clock_rate.max(1),
            highest_seq: first_seq.wrapping_sub(1),
            anchor: (first_timestamp, Instant::now()),
            anchored: false,
            source: Source::Unset,
            retired: None,
            event_ts: None,
            packets: 0,
            octets: 0,
            last_timestamp: first_timestamp,
            last_sent: None,
            switches: 0,
        }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// The leg renegotiated to a codec with another clock: the next packet
    /// starts a new source timed in the new units.
    pub fn set_clock_rate(&mut self, clock_rate: u32) {
        let clock_rate = clock_rate.max(1);
        if clock_rate != self.clock_rate {
            self.clock_rate = clock_rate;
            self.source = Source::Unset;
        }
    }

    /// The bridge changed what feeds this stream: forget the source
    /// switched away from, so it may feed the stream again at once
    /// (otherwise its packets are taken for stragglers and dropped).
    pub fn rewired(&mut self) {
        self.retired = None;
    }

    /// How many times the source changed (diagnostics).
    pub fn source_switches(&self) -> u64 {
        self.switches
    }

    /// The stream's RTP timestamp for the wall time `now`.
    pub fn timestamp_at(&self, now: Instant) -> u32 {
        if !self.anchored {
            return self.anchor.0;
        }
        let elapsed = now.saturating_duration_since(self.anchor.1);
        self.anchor.0.wrapping_add(self.units(elapsed))
    }

    fn units(&self, d: Duration) -> u32 {
        (d.as_nanos() * self.clock_rate as u128 / 1_000_000_000) as u32
    }

    fn next_seq(&self) -> u16 {
        self.highest_seq.wrapping_add(1)
    }

    fn account(&mut self, payload_len: usize, timestamp: u32, now: Instant) {
        self.packets += 1;
        self.octets += payload_len as u64;
        self.last_sent = Some(now);
        self.last_timestamp = timestamp;
    }

    /// Moves the clock to (`ts`, `now`) if `ts` is ahead of it: a packet
    /// repeating a timestamp (DTMF updates) leaves the clock at the moment
    /// that timestamp began.
    fn advance_clock(&mut self, ts: u32, now: Instant) {
        if !self.anchored || ts_after(ts, self.anchor.0) {
            self.anchor = (ts, now);
            self.anchored = true;
        }
    }

    /// Rewrites a relayed RTP packet in place for this stream: our SSRC,
    /// sequence number and timestamp, the marker bit set on the first
    /// packet of a new source. Payload type, CSRCs, extensions and payload
    /// stay. Returns `false` (and counts the drop) when the packet must not
    /// be sent: not RTP, RTCP, a straggler of a source switched away from,
    /// or one from before the current source's first packet.
    pub fn rewrite(&mut self, pkt: &mut [u8], now: Instant) -> bool {
        if rtp::is_rtcp(pkt) {
            return dropped("rtcp on rtp path");
        }
        let Some(p) = rtp::parse(pkt) else {
            return dropped("malformed");
        };
        let (in_ssrc, in_seq, in_ts, payload_len) = (p.ssrc, p.sequence, p.timestamp, p.payload.len());
        let mut marker = p.marker;
        let current = matches!(self.source, Source::Relayed { ssrc, .. } if ssrc == in_ssrc);
        if !current {
            if self.retired == Some(in_ssrc) {
                return dropped("stale source");
            }
            if let Source::Relayed { ssrc, .. } = self.source {
                self.retired = Some(ssrc);
            }
            let out_seq = self.next_seq();
            let out_ts = self.timestamp_at(now);
            self.source = Source::Relayed {
                ssrc: in_ssrc,
                seq_offset: out_seq.wrapping_sub(in_seq),
                ts_offset: out_ts.wrapping_sub(in_ts),
                guard: Some(out_seq),
            };
            self.switches += 1;
            marker = true;
        }
        let Source::Relayed { seq_offset, ts_offset, guard, .. } = self.source else {
            return false;
        };
        let out_seq = in_seq.wrapping_add(seq_offset);
        let out_ts = in_ts.wrapping_add(ts_offset);
        if let Some(first) = guard {
            if seq_after(first, out_seq) {
                return dropped("before source switch");
            }
        }
        pkt[1] = (marker as u8) << 7 | (pkt[1] & 0x7f);
        pkt[2..4].copy_from_slice(&out_seq.to_be_bytes());
        pkt[4..8].copy_from_slice(&out_ts.to_be_bytes());
        pkt[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        if self.packets == 0 || seq_after(out_seq, self.highest_seq) {
            self.highest_seq = out_seq;
            self.advance_clock(out_ts, now);
            if let (Some(first), Source::Relayed { guard, .. }) = (guard, &mut self.source) {
                if out_seq.wrapping_sub(first) > GUARD_SPAN {
                    *guard = None;
                }
            }
        }
        self.account(payload_len, out_ts, now);
        true
    }

    /// Builds a locally generated packet (music on hold, a prompt, a DTMF
    /// event) as the stream's next one. The marker bit is as given, and
    /// also set on the first packet after relayed media unless `timing` is
    /// [`Timing::At`] (the continuation of an event, not a talkspurt).
    pub fn stamp_local(&mut self, payload_type: u8, marker: bool, timing: Timing, payload: &[u8], now: Instant) -> Vec<u8> {
        let switching = self.source != Source::Local;
        if switching {
            self.source = Source::Local;
            self.switches += 1;
        }
        let ts = match timing {
            Timing::Now => self.timestamp_at(now),
            Timing::Advance(_) if switching || !self.anchored => self.timestamp_at(now),
            Timing::Advance(n) => self.anchor.0.wrapping_add(n),
            Timing::At(ts) => ts,
        };
        let marker = marker || (switching && !matches!(timing, Timing::At(_)));
        let seq = self.next_seq();
        let mut pkt = rtp::build(payload_type, seq, ts, self.ssrc, payload);
        pkt[1] |= (marker as u8) << 7;
        self.highest_seq = seq;
        match timing {
            Timing::Now | Timing::Advance(_) => {
                self.anchor = (ts, now);
                self.anchored = true;
            }
            Timing::At(_) if !self.anchored => self.advance_clock(ts, now),
            Timing::At(_) => {}
        }
        self.account(payload.len(), ts, now);
        pkt
    }

    /// Stamps a packet from a [`dtmf::DtmfSender`]: an event's first packet
    /// takes the current timestamp, its later packets repeat it, and the
    /// stream's clock moves to the event's end as its duration grows, so
    /// audio after the event starts past it (RFC 4733 §2.5.1.2).
    pub fn stamp_dtmf(&mut self, packet: &dtmf::OutPacket, now: Instant) -> Vec<u8> {
        let event_ts = match self.event_ts {
            Some(ts) if !packet.starts_event => ts,
            _ => {
                let pkt = self.stamp_local(packet.payload_type, packet.marker, Timing::Now, &packet.payload, now);
                self.event_ts = Some(self.last_timestamp);
                return pkt;
            }
        };
        let pkt = self.stamp_local(packet.payload_type, packet.marker, Timing::At(event_ts), &packet.payload, now);
        if let Ok(event) = dtmf::Event::parse(&packet.payload) {
            self.advance_clock(event_ts.wrapping_add(event.duration as u32), now);
        }
        pkt
    }

    /// The sender side of an RTCP report, as of `now`.
    pub fn stats(&self, now: Instant) -> SendStats {
        SendStats {
            ssrc: self.ssrc,
            packets: self.packets,
            octets: self.octets,
            rtp_timestamp: self.timestamp_at(now),
            last_timestamp: self.last_timestamp,
            last_sent: self.last_sent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PTIME: Duration = Duration::from_millis(20);

    fn header(pkt: &[u8]) -> (bool, u16, u32, u32) {
        let p = rtp::parse(pkt).expect("valid RTP");
        (p.marker, p.sequence, p.timestamp, p.ssrc)
    }

    /// Relays `n` packets of a source (20 ms, 160 samples apart) starting
    /// at `at`; returns the rewritten headers.
    fn relay(out: &mut OutStream, ssrc: u32, seq: u16, ts: u32, at: Instant, n: u16) -> Vec<(bool, u16, u32, u32)> {
        (0..n)
            .map(|i| {
                let mut p = rtp::build(0, seq.wrapping_add(i), ts.wrapping_add(160 * i as u32), ssrc, &[0xff; 160]);
                assert!(out.rewrite(&mut p, at + PTIME * i as u32));
                header(&p)
            })
            .collect()
    }

    #[test]
    fn a_new_relayed_source_continues_our_sequence_and_timestamps() {
        let t0 = Instant::now();
        let mut out = OutStream::with_initial(8000, 0xabcd, 100, 50_000);
        let a = relay(&mut out, 1, 7000, 3_000_000, t0, 10);
        assert_eq!(a[0], (true, 100, 50_000, 0xabcd), "first packet: our initial values, marker set");
        assert_eq!(a[9], (false, 109, 50_000 + 9 * 160, 0xabcd));
        // A transfer: another source with its own numbers, 20 ms after the
        // last packet, then 500 ms of silence (no packets) on the new one.
        let t1 = t0 + PTIME * 10;
        let b = relay(&mut out, 2, 65_530, 4_294_967_000, t1, 10); // both wrap
        assert_eq!(b[0], (true, 110, 50_000 + 10 * 160, 0xabcd));
        assert_eq!(b[9], (false, 119, 50_000 + 19 * 160, 0xabcd));
        let c = relay(&mut out, 3, 1, 1, t1 + Duration::from_millis(700), 1);
        assert_eq!(c[0], (true, 120, 50_000 + 19 * 160 + 4160, 0xabcd), "timestamp follows the 520 ms of wall time");
        assert_eq!(out.source_switches(), 3);
        let s = out.stats(t1 + Duration::from_millis(700));
        assert_eq!((s.packets, s.octets, s.last_timestamp), (21, 21 * 160, c[0].2));
        assert_eq!(s.rtp_timestamp, c[0].2);
        assert_eq!(out.stats(t1 + Duration::from_millis(720)).rtp_timestamp, c[0].2 + 160);
    }

    #[test]
    fn reordered_and_duplicated_packets_keep_their_order() {
        let t0 = Instant::now();
        let mut out = OutStream::with_initial(8000, 9, 65_534, 0);
        let mut sent = Vec::new();
        for (i, seq) in [10u16, 12, 11, 11, 13].into_iter().enumerate() {
            let mut p = rtp::build(8, seq, seq as u32 * 160, 5, &[1; 160]);
            assert!(out.rewrite(&mut p, t0 + PTIME * i as u32));
            sent.push(header(&p));
        }
        let seqs: Vec<u16> = sent.iter().map(|h| h.1).collect();
        assert_eq!(seqs, vec![65_534, 0, 65_535, 65_535, 1], "offset mapping across the wrap");
        let ts: Vec<u32> = sent.iter().map(|h| h.2).collect();
        assert_eq!(ts, vec![0, 320, 160, 160, 480]);
        // The clock follows the newest packet, not the late one.
        assert_eq!(out.timestamp_at(t0 + PTIME * 4), 480);
    }

    #[test]
    fn stragglers_of_an_old_source_are_dropped_until_rewired() {
        let t0 = Instant::now();
        let mut out = OutStream::with_initial(8000, 9, 1, 0);
        relay(&mut out, 1, 500, 0, t0, 5);
        relay(&mut out, 2, 900, 0, t0 + PTIME * 5, 5);
        let mut late = rtp::build(0, 505, 800, 1, &[0; 160]);
        let before = late.clone();
        assert!(!out.rewrite(&mut late, t0 + PTIME * 10));
        assert_eq!(late, before, "a dropped packet is left untouched");
        // A packet of the new source from before its first one.
        let mut early = rtp::build(0, 899, 0, 2, &[0; 160]);
        assert!(!out.rewrite(&mut early, t0 + PTIME * 10));
        out.rewired();
        let back = relay(&mut out, 1, 600, 0, t0 + PTIME * 11, 1);
        assert_eq!(back[0].1, 11);
        assert!(back[0].0);
    }

    #[test]
    fn garbage_and_rtcp_are_not_sent() {
        let mut out = OutStream::new(8000);
        let now = Instant::now();
        for bad in [vec![], vec![0x80, 0], vec![0u8; 12], vec![0x81, 201, 0, 1, 0, 0, 0, 1]] {
            let mut b = bad.clone();
            assert!(!out.rewrite(&mut b, now), "{bad:?}");
            assert_eq!(b, bad);
        }
        assert_eq!(out.stats(now).packets, 0);
    }

    #[test]
    fn a_long_source_is_never_taken_for_stragglers() {
        let t0 = Instant::now();
        let mut out = OutStream::with_initial(8000, 9, 0, 0);
        let mut p = Vec::new();
        for i in 0..70_000u32 {
            p.clear();
            p.extend_from_slice(&rtp::build(0, (i % 65_536) as u16, i * 160, 4, &[0; 4]));
            assert!(out.rewrite(&mut p, t0 + PTIME * i), "packet {i}");
        }
        assert_eq!(out.stats(t0).packets, 70_000);
        assert_eq!(header(&p).1, (69_999 % 65_536) as u16);
    }

    #[test]
    fn local_audio_then_relay_then_local_dtmf_then_relay() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut out = OutStream::with_initial(8000, 0x55, 10, 1000);
        // Music on hold: a generator advancing 160 per frame.
        let moh: Vec<_> = (0..3u32)
            .map(|i| header(&out.stamp_local(0, false, Timing::Advance(160), &[0x7f; 160], t0 + PTIME * i)))
            .collect();
        assert_eq!(moh, vec![(true, 10, 1000, 0x55), (false, 11, 1160, 0x55), (false, 12, 1320, 0x55)]);
        // The caller comes off hold: relayed audio 20 ms later.
        let r = relay(&mut out, 77, 3, 999, ms(60), 5);
        assert_eq!(r[0], (true, 13, 1480, 0x55));
        assert_eq!(r[4].2, 1480 + 4 * 160);
        // The agent presses 4: generated DTMF at 160 ms, 20 ms after the
        // last relayed packet.
        let mut tx = dtmf::DtmfSender::new(101, 8000);
        tx.queue("4", ms(160)).unwrap();
        let mut events = Vec::new();
        while let Some(due) = tx.next_due() {
            for p in tx.poll(due) {
                let pkt = out.stamp_dtmf(&p, due);
                let parsed = rtp::parse(&pkt).unwrap();
                assert_eq!(parsed.payload_type, 101);
                events.push((header(&pkt), dtmf::Event::parse(parsed.payload).unwrap()));
            }
        }
        let event_ts = 1480 + 5 * 160;
        assert_eq!(events.len(), 5);
        assert_eq!(events[0].0, (true, 18, event_ts, 0x55));
        for (i, (h, _)) in events.iter().enumerate().skip(1) {
            assert_eq!(*h, (false, 18 + i as u16, event_ts, 0x55), "packet {i} repeats the event's timestamp");
        }
        assert!(events[4].1.end);
        // Relayed audio resumes after the tone (100 ms) and the end copies
        // (40 ms): its timestamp lies past the event's duration.
        let after = relay(&mut out, 77, 13, 999 + 10 * 160, ms(320), 1);
        assert_eq!(after[0].1, 23);
        assert!(after[0].0, "marker on resuming");
        assert_eq!(after[0].2, event_ts + 800 + 8 * 60, "event end at 260 ms, then 60 ms of clock");
        let s = out.stats(ms(320));
        assert_eq!(s.packets, 3 + 5 + 5 + 1);
        assert_eq!(s.octets, 3 * 160 + 5 * 160 + 5 * 4 + 160);
    }

    #[test]
    fn a_clock_rate_change_restarts_the_source_in_the_new_units() {
        let t0 = Instant::now();
        let mut out = OutStream::with_initial(8000, 1, 0, 0);
        relay(&mut out, 5, 0, 0, t0, 2);
        out.set_clock_rate(48000);
        let r = relay(&mut out, 5, 2, 320, t0 + PTIME * 2, 2);
        assert_eq!(r[0], (true, 2, 160 + 960, 1));
        assert_eq!(out.clock_rate(), 48000);
    }

    #[test]
    fn random_streams_differ() {
        let a = OutStream::new(8000);
        let b = OutStream::new(8000);
        assert_ne!(a.ssrc(), b.ssrc());
    }
}
