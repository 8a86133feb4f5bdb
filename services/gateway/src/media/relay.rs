//! The I/O edge of a call's media: [`CallMedia`] owns both legs' RTP/RTCP
//! sockets on one media thread (`threads`), feeding datagrams and time into
//! the sans-IO
//! [`Bridge`] and doing what it says — forwarding, sending what the gateway
//! plays, appending the recording to its upload, and reporting events.
//!
//! Symmetric RTP: each leg sends to where its peer's packets come from
//! (latching), which gets media through NATs; until the first packet the
//! address from the peer's SDP is used. A peer that is another socket of
//! the gateway's (a browser leg's, on the WebRTC edge) gets its datagrams
//! in memory and sends them so ([`super::local`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::net::UdpSocket;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::bridge::{Bridge, BridgeEvent, LegCodec, Outgoing, Verdict};
use super::encode::RecordingFormat;
use super::local::{Deliver, LocalNet, Registration};
use super::player::Prompt;
use super::ports::PortPair;
use super::threads::{Inbox, MediaThread, MediaThreads, SOCKETS};
use super::quality::ReceptionReport;
use super::rtcp::LegQuality;
use super::voicemail::{self, VoicemailSettings};
use crate::calls::writer::{CallUpdate, CallWriter, LegSummary};
use super::spooler::SpoolKey;
use crate::recordings::{HeaderPatch, RecordingKind, RecordingMeta, RecordingSink};

pub use super::bridge::Side;

/// What a call's media needs from the rest of the gateway.
#[derive(Clone)]
pub struct MediaContext {
    pub call_id: String,
    pub started_at_ms: i64,
    /// The side recorded on the left channel.
    pub customer: Side,
    pub hold_music: Arc<Prompt>,
    /// How Opus is encoded towards Opus legs (browsers).
    pub opus: crate::media::codec::OpusSettings,
    pub recordings: RecordingSink,
    pub recording_format: RecordingFormat,
    pub writer: Option<CallWriter>,
    /// Tells the call manager what the media decided (a voicemail over).
    pub notices: mpsc::UnboundedSender<MediaNotice>,
    /// Where the call's task runs, and the main runtime for uploads.
    pub threads: MediaThreads,
}

/// Something the media of a call tells its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaNotice {
    pub call_id: String,
    pub kind: NoticeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// The voicemail ended by itself: hang the caller up.
    VoicemailOver,
}

/// Whose mailbox a voicemail goes to and how it sounds.
#[derive(Clone)]
pub struct Mailbox {
    pub user_id: String,
    pub greeting: Arc<Prompt>,
    pub settings: VoicemailSettings,
}

/// A recording request from the call-control API or a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordCommand {
    /// Start; `admin_only` for administrator policies (F7).
    Start { admin_only: bool },
    Stop,
    Pause,
    Resume,
}

/// The state of a call's recording after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingState {
    Off,
    Recording,
    Paused,
}

impl RecordingState {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingState::Off => "off",
            RecordingState::Recording => "recording",
            RecordingState::Paused => "paused",
        }
    }
}

pub(super) enum Control {
    Remote(Side, SocketAddr),
    Replace(Side, SocketAddr),
    Codec(Side, LegCodec),
    Hold(Side, bool),
    Ringback(Side, bool),
    Mute(Side, bool),
    SendDtmf(Side, String),
    InfoDigit(Side, char, Option<Duration>),
    Record(RecordCommand, oneshot::Sender<RecordingState>),
    Voicemail(Box<Mailbox>),
    Screen(bool),
    PickUp,
    Stop(oneshot::Sender<RelayReport>),
}

/// What the relay carried, reported when it stops.
#[derive(Debug, Default)]
pub struct RelayReport {
    pub packets_a_to_b: u64,
    pub packets_b_to_a: u64,
    /// RTP reception from each side (index: `Side as usize`): loss and
    /// jitter of what the caller and the callee sent.
    pub reception: [ReceptionReport; 2],
    /// Quality of each leg including the far end's RTCP reports.
    pub quality: [LegQuality; 2],
    /// Digits heard from each side.
    pub digits: [u32; 2],
}

/// Handle to a running relay. Dropping it finishes the call's media like
/// [`MediaRelay::stop`] without waiting for the report.
#[derive(Debug)]
pub struct MediaRelay {
    pub a_port: u16,
    pub b_port: u16,
    thread: MediaThread,
    id: u64,
    stopped: bool,
}

impl Drop for MediaRelay {
    fn drop(&mut self) {
        if !self.stopped {
            self.thread.send(Inbox::Closed(self.id));
        }
    }
}

impl MediaRelay {
    /// Starts relaying between the two legs on the next media thread;
    /// `a_remote` is the caller's RTP address from its offer.
    pub fn start(ctx: MediaContext, a: PortPair, b: PortPair, a_remote: SocketAddr) -> MediaRelay {
        let (thread, id) = ctx.threads.place();
        let (a_port, b_port) = (a.port, b.port);
        let now = Instant::now();
        let mut bridge = Bridge::new(ctx.customer, ctx.hold_music.clone(), now, std::time::SystemTime::now()).with_opus(ctx.opus);
        bridge.set_remote(Side::A, a_remote);
        let sockets = [a.rtp, a.rtcp, b.rtp, b.rtcp];
        let unbound = SocketAddr::from(([0, 0, 0, 0], 0));
        let addrs = [0, 1, 2, 3].map(|i| sockets[i].local_addr().unwrap_or(unbound));
        let local = ctx.threads.local.clone();
        let media = CallMedia {
            ctx,
            bridge,
            sockets,
            addrs,
            local,
            registrations: Vec::new(),
            buf: vec![0u8; 1500].into_boxed_slice(),
            recordings: [None, None],
            voicemail: None,
            report: RelayReport::default(),
            outgoing: Vec::new(),
        };
        thread.send(Inbox::Start(id, Box::new(media)));
        MediaRelay { a_port, b_port, thread, id, stopped: false }
    }

    fn send(&self, c: Control) -> bool {
        self.thread.send(Inbox::Control(self.id, c))
    }

    /// Sets where a leg's peer receives RTP (from its SDP).
    pub fn set_remote(&self, side: Side, rtp: SocketAddr) {
        self.send(Control::Remote(side, rtp));
    }

    /// Another party takes over `side` at `rtp` (transfer, move): see
    /// [`Bridge::replace_remote`].
    pub fn replace_remote(&self, side: Side, rtp: SocketAddr) {
        self.send(Control::Replace(side, rtp));
    }

    /// Sets the codec a leg negotiated.
    pub fn set_codec(&self, side: Side, codec: LegCodec) {
        self.send(Control::Codec(side, codec));
    }

    /// Puts a side on hold (it hears music) or resumes it.
    pub fn hold(&self, side: Side, on: bool) {
        self.send(Control::Hold(side, on));
    }

    /// Plays the ringback tone to a side (an agent's own call while the
    /// far end rings without early media) or stops it.
    pub fn ringback(&self, side: Side, on: bool) {
        self.send(Control::Ringback(side, on));
    }

    /// Mutes a side towards the other.
    pub fn mute(&self, side: Side, on: bool) {
        self.send(Control::Mute(side, on));
    }

    /// Plays DTMF digits to a side.
    pub fn send_dtmf(&self, to: Side, digits: &str) {
        self.send(Control::SendDtmf(to, digits.to_owned()));
    }

    /// A digit a side sent in a SIP INFO.
    pub fn info_digit(&self, from: Side, digit: char, duration: Option<Duration>) {
        self.send(Control::InfoDigit(from, digit, duration));
    }

    /// Starts, stops, pauses or resumes the recording.
    pub async fn record(&self, command: RecordCommand) -> Option<RecordingState> {
        let (tx, rx) = oneshot::channel();
        if !self.send(Control::Record(command, tx)) {
            return None;
        }
        rx.await.ok()
    }

    /// Plays the greeting to the caller and records a voicemail for `mailbox`.
    pub fn voicemail(&self, mailbox: Mailbox) {
        self.send(Control::Voicemail(Box::new(mailbox)));
    }

    /// Lets the callee leg listen to the voicemail being left (or stops it).
    pub fn screen(&self, on: bool) {
        self.send(Control::Screen(on));
    }

    /// Ends the voicemail (the message so far is kept) and bridges the legs.
    pub fn pick_up(&self) {
        self.send(Control::PickUp);
    }

    /// Starts recording without waiting for the answer.
    pub fn start_recording(&self, admin_only: bool) {
        let (tx, _rx) = oneshot::channel();
        self.send(Control::Record(RecordCommand::Start { admin_only }, tx));
    }

    /// Stops the relay (finishing any recording) and frees its ports.
    pub async fn stop(mut self) -> RelayReport {
        let (tx, rx) = oneshot::channel();
        self.stopped = true;
        if !self.send(Control::Stop(tx)) {
            return RelayReport::default();
        }
        rx.await.unwrap_or_default()
    }
}

/// Whether a call's media goes on after a command.
pub(super) enum Flow {
    Continue,
    Stopped,
}

/// One call's media on its media thread: the sans-IO bridge and what it
/// needs from the outside — both legs' sockets (A RTP, A RTCP, B RTP, B
/// RTCP), the spool entries of its recordings, and the gateway's handles.
pub(super) struct CallMedia {
    ctx: MediaContext,
    bridge: Bridge,
    sockets: [UdpSocket; SOCKETS],
    /// Where each socket is bound: the source of what it sends.
    addrs: [SocketAddr; SOCKETS],
    local: Arc<LocalNet>,
    /// The sockets' entries in `local`, while the call is on its thread.
    registrations: Vec<Registration>,
    buf: Box<[u8]>,
    /// The agent's recording and the admin-only one (index: `admin_only`),
    /// written by the spool thread.
    recordings: [Option<SpoolKey>; 2],
    voicemail: Option<(SpoolKey, String)>,
    report: RelayReport,
    outgoing: Vec<Outgoing>,
}

/// Sends a datagram without waiting, in memory when `dest` is a socket of
/// the gateway's: a full socket buffer drops the packet (late audio is
/// worthless) and counts it.
fn send(local: &LocalNet, socket: &UdpSocket, from: SocketAddr, bytes: &[u8], dest: SocketAddr) {
    if local.send(from, dest, bytes) {
        return;
    }
    if let Err(e) = socket.send_to(bytes, dest) {
        let reason = if e.kind() == std::io::ErrorKind::WouldBlock { "buffer_full" } else { "error" };
        metrics::counter!("switchboard_media_send_drops_total", "reason" => reason).increment(1);
    }
}

impl CallMedia {
    pub(super) fn call_id(&self) -> &str {
        &self.ctx.call_id
    }

    /// The sockets to watch, in the order [`CallMedia::readable`] numbers them.
    pub(super) fn sockets(&self) -> &[UdpSocket; SOCKETS] {
        &self.sockets
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.bridge.next_deadline()
    }

    /// Registers the sockets in the gateway's [`LocalNet`], as `target`'s
    /// keys `first`, `first + 1`… in the order of [`CallMedia::sockets`].
    pub(super) fn register(&mut self, local: &Arc<LocalNet>, target: &Arc<dyn Deliver>, first: u64) {
        self.registrations = self.addrs.iter().zip(first..).map(|(addr, key)| local.register(*addr, target.clone(), key)).collect();
    }

    /// Socket `index` has a datagram: one is read, judged by the bridge and
    /// forwarded. More waiting datagrams wake the loop again.
    pub(super) fn readable(&mut self, index: usize, now: Instant) {
        let (n, src) = match self.sockets[index].recv_from(&mut self.buf) {
            Ok(r) => r,
            // Spurious readiness, or an error the socket reported (an ICMP
            // message about an earlier send): nothing to forward.
            Err(_) => return,
        };
        self.judge(index, src, n, now);
    }

    /// A datagram for socket `index` from another socket of the gateway's,
    /// taken as if read from it.
    pub(super) fn datagram(&mut self, index: usize, src: SocketAddr, bytes: &[u8], now: Instant) {
        let Some(buf) = self.buf.get_mut(..bytes.len()) else { return };
        buf.copy_from_slice(bytes);
        self.judge(index, src, bytes.len(), now);
    }

    /// Lets the bridge judge the `n` bytes in the buffer that socket `index`
    /// got from `src`, and forwards them if it says so.
    fn judge(&mut self, index: usize, src: SocketAddr, n: usize, now: Instant) {
        let (side, rtcp) = match index {
            0 => (Side::A, false),
            1 => (Side::A, true),
            2 => (Side::B, false),
            _ => (Side::B, true),
        };
        if let Verdict::Forward { to, dest, len, rtcp } = self.bridge.on_datagram(side, rtcp, src, &mut self.buf, n, now) {
            let i = to as usize * 2 + rtcp as usize;
            send(&self.local, &self.sockets[i], self.addrs[i], &self.buf[..len], dest);
            match side {
                Side::A => self.report.packets_a_to_b += 1,
                Side::B => self.report.packets_b_to_a += 1,
            }
        }
    }

    /// Does a command; a stop finishes the media and sends the report.
    pub(super) fn control(&mut self, c: Control, now: Instant) -> Flow {
        let call_id = self.ctx.call_id.as_str();
        match c {
            Control::Remote(side, addr) => self.bridge.set_remote(side, addr),
            Control::Replace(side, addr) => {
                info!(call_id, side = side.as_str(), %addr, "leg replaced");
                self.bridge.replace_remote(side, addr, now);
            }
            Control::Codec(side, codec) => {
                debug!(call_id, side = side.as_str(), ?codec, "leg codec");
                self.bridge.set_codec(side, codec);
            }
            Control::Hold(side, on) => {
                info!(call_id, side = side.as_str(), on, "hold");
                self.bridge.hold(side, on, now);
            }
            Control::Ringback(side, on) => {
                debug!(call_id, side = side.as_str(), on, "ringback");
                self.bridge.ringback(side, on, now);
            }
            Control::Mute(side, on) => {
                info!(call_id, side = side.as_str(), on, "mute");
                self.bridge.mute(side, on);
            }
            Control::SendDtmf(to, digits) => {
                let n = self.bridge.send_dtmf(to, &digits, now);
                debug!(call_id, side = to.as_str(), digits = n, "sending DTMF");
            }
            Control::InfoDigit(from, digit, duration) => self.bridge.info_digit(from, digit, duration, now),
            Control::Record(cmd, reply) => {
                let state = self.record(cmd, now);
                let _ = reply.send(state);
            }
            Control::Voicemail(mailbox) => self.start_voicemail(*mailbox, now),
            Control::Screen(on) => self.bridge.set_screening(on),
            Control::PickUp => {
                info!(call_id, "voicemail picked up");
                self.finish_voicemail(voicemail::End::PickedUp, now);
            }
            Control::Stop(reply) => {
                self.finish(now);
                let _ = reply.send(std::mem::take(&mut self.report));
                return Flow::Stopped;
            }
        }
        self.flush(now);
        Flow::Continue
    }

    /// The state of the agent's recording (the admin-only one is not the agent's to see).
    fn state(&self) -> RecordingState {
        match self.bridge.recording(false) {
            None => RecordingState::Off,
            Some((true, _)) => RecordingState::Paused,
            Some((false, _)) => RecordingState::Recording,
        }
    }

    fn record(&mut self, cmd: RecordCommand, now: Instant) -> RecordingState {
        let call_id = self.ctx.call_id.clone();
        match cmd {
            RecordCommand::Start { admin_only } => {
                if self.recordings[admin_only as usize].is_some() {
                    return self.state();
                }
                let format = self.ctx.recording_format;
                let meta = RecordingMeta {
                    format: format.as_str().to_owned(),
                    extension: format.extension().to_owned(),
                    content_type: format.content_type().to_owned(),
                    sample_rate_hz: super::timeline::SAMPLE_RATE,
                    channels: 2,
                    admin_only,
                    kind: RecordingKind::Recording,
                    mailbox: None,
                };
                if let Err(e) = self.bridge.start_recording(format, admin_only, now) {
                    warn!(call_id, error = %e, "cannot start the recording's encoder");
                    return self.state();
                }
                let key = self.ctx.threads.spooler.begin(self.ctx.recordings.clone(), &call_id, self.ctx.started_at_ms, meta);
                info!(call_id, admin_only, format = format.as_str(), "recording started");
                self.recordings[admin_only as usize] = Some(key);
            }
            RecordCommand::Pause | RecordCommand::Resume => {
                if self.bridge.pause_recording(cmd == RecordCommand::Pause) {
                    info!(call_id, paused = cmd == RecordCommand::Pause, "recording paused/resumed");
                }
            }
            RecordCommand::Stop => self.stop_recording(false, now),
        }
        self.state()
    }

    /// Stops a recording; its upload completes in the background.
    fn stop_recording(&mut self, admin_only: bool, now: Instant) {
        let Some(stopped) = self.bridge.stop_recording(admin_only, now) else { return };
        let Some(key) = self.recordings[admin_only as usize].take() else { return };
        let call_id = self.ctx.call_id.clone();
        let writer = self.ctx.writer.clone();
        let duration_ms = stopped.duration.as_millis() as u64;
        info!(call_id, duration_ms, admin_only, "recording stopped");
        let spooled = self.finish_spooled(key, stopped.tail);
        let patch = stopped.header_patch;
        self.ctx.threads.main.spawn(async move {
            let Some(upload) = spooled.await.ok().flatten() else { return };
            match upload.finish(duration_ms, patch).await {
                Ok(Some(stored)) => {
                    if let Some(w) = writer {
                        w.record(CallUpdate::recording_available(stored, admin_only));
                    }
                }
                Ok(None) => warn!(call_id, "shutting down before the recording was uploaded; it stays in the spool"),
                Err(e) => warn!(call_id, error = %e, "recording could not be stored"),
            }
        });
    }

    fn start_voicemail(&mut self, mailbox: Mailbox, now: Instant) {
        let call_id = self.ctx.call_id.clone();
        let format = mailbox.settings.format;
        let meta = RecordingMeta {
            format: format.as_str().to_owned(),
            extension: format.extension().to_owned(),
            content_type: format.content_type().to_owned(),
            sample_rate_hz: super::timeline::SAMPLE_RATE,
            channels: 1,
            admin_only: false,
            kind: RecordingKind::Voicemail,
            mailbox: Some(mailbox.user_id.clone()),
        };
        if let Err(e) = self.bridge.start_voicemail(mailbox.greeting, mailbox.settings, now) {
            warn!(call_id, error = %e, "cannot start the voicemail's encoder");
            return;
        }
        let key = self.ctx.threads.spooler.begin(self.ctx.recordings.clone(), &call_id, self.ctx.started_at_ms, meta);
        info!(call_id, user_id = %mailbox.user_id, "voicemail started");
        metrics::counter!("switchboard_voicemails_total").increment(1);
        self.voicemail = Some((key, mailbox.user_id));
    }

    /// Ends the voicemail; its upload completes in the background.
    fn finish_voicemail(&mut self, why: voicemail::End, now: Instant) {
        let Some(message) = self.bridge.finish_voicemail(why, now) else { return };
        let Some((key, user_id)) = self.voicemail.take() else { return };
        let call_id = self.ctx.call_id.clone();
        let writer = self.ctx.writer.clone();
        let duration_ms = message.duration.as_millis() as u64;
        let ended_by = message.end.as_str().to_owned();
        info!(call_id, duration_ms, ended_by, "voicemail left");
        let spooled = self.finish_spooled(key, message.tail);
        let patch: Option<HeaderPatch> = message.header_patch;
        self.ctx.threads.main.spawn(async move {
            let Some(upload) = spooled.await.ok().flatten() else { return };
            match upload.finish(duration_ms, patch).await {
                Ok(Some(stored)) => {
                    if let Some(w) = writer {
                        w.record(CallUpdate::VoicemailAvailable { stored, user_id, ended_by });
                    }
                }
                Ok(None) => warn!(call_id, "shutting down before the voicemail was uploaded; it stays in the spool"),
                Err(e) => warn!(call_id, error = %e, "voicemail could not be stored"),
            }
        });
    }

    /// Appends a recording's last bytes and asks the spool thread for it back.
    fn finish_spooled(&self, key: SpoolKey, tail: Vec<u8>) -> oneshot::Receiver<Option<crate::recordings::RecordingUpload>> {
        let spooler = &self.ctx.threads.spooler;
        if !tail.is_empty() {
            spooler.append(key, tail);
        }
        spooler.finish(key)
    }

    /// Does what the bridge has due: played packets, reports, recording bytes, events.
    pub(super) fn flush(&mut self, now: Instant) {
        self.bridge.poll(now, &mut self.outgoing);
        for o in self.outgoing.drain(..) {
            let i = o.side as usize * 2 + o.rtcp as usize;
            send(&self.local, &self.sockets[i], self.addrs[i], &o.bytes, o.dest);
        }
        for admin_only in [false, true] {
            let Some(bytes) = self.bridge.take_recording(admin_only) else { continue };
            if let Some(key) = self.recordings[admin_only as usize] {
                self.ctx.threads.spooler.append(key, bytes);
            }
        }
        if let Some(bytes) = self.bridge.take_voicemail() {
            if let Some((key, _)) = &self.voicemail {
                self.ctx.threads.spooler.append(*key, bytes);
            }
        }
        for e in self.bridge.take_events() {
            match e {
                BridgeEvent::VoicemailOver { end } => {
                    debug!(call_id = %self.ctx.call_id, end = end.as_str(), "voicemail over");
                    self.finish_voicemail(end, now);
                    let _ = self.ctx.notices.send(MediaNotice { call_id: self.ctx.call_id.clone(), kind: NoticeKind::VoicemailOver });
                }
                BridgeEvent::Dtmf { from, .. } => {
                    self.report.digits[from as usize] += 1;
                    // Digits are not logged: they may be card numbers.
                    debug!(call_id = %self.ctx.call_id, side = from.as_str(), "DTMF digit");
                }
                BridgeEvent::Quality { side, quality } => {
                    metrics::histogram!("switchboard_media_mos_sample", "leg" => side.as_str()).record(quality.mos);
                }
            }
        }
    }

    /// Ends the call's media: the quality summary, then each recording's
    /// and the voicemail's last bytes and their uploads.
    pub(super) fn finish(&mut self, now: Instant) {
        self.report.reception = self.bridge.reception();
        self.report.quality = self.bridge.quality();
        // The quality summary goes before the recordings' events, which
        // wait for their uploads.
        let legs: Vec<LegSummary> = [Side::A, Side::B]
            .into_iter()
            .filter(|s| self.report.reception[*s as usize].expected > 0)
            .map(|s| LegSummary::new(s, self.report.reception[s as usize], self.report.quality[s as usize]))
            .collect();
        if let (Some(w), false) = (&self.ctx.writer, legs.is_empty()) {
            w.record(CallUpdate::Quality { legs });
        }
        self.finish_voicemail(voicemail::End::CallerHungUp, now);
        self.stop_recording(false, now);
        self.stop_recording(true, now);
    }
}
