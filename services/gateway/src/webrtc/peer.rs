//! One browser leg's WebRTC side, sans-IO: the gateway's offer, the
//! browser's answer, ICE-lite, DTLS and SRTP (str0m, decision 0022), RTP in
//! and out. Datagrams and time come in; datagrams to send, RTP received and
//! connection changes come out of [`Peer::poll`]. The offer carries no
//! transport-cc and only the mid header extension (decision 0029).
//!
//! The gateway always offers (its INVITE becomes the browser's offer), so
//! its SDP says `a=setup:actpass` and the browser, as the full ICE agent,
//! is controlling and the DTLS client. The offer lists one audio section
//! (BUNDLE, rtcp-mux), G.711 first when the SIP side is G.711 so calls to
//! the telephone network need no transcoding, Opus first otherwise, and
//! telephone-event at 48 and 8 kHz for the browser's DTMF sender. Which
//! codec the browser chose is read from its answer ([`Chosen`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::format::{Codec, CodecConfig, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind, Mid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{Extension, RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcError};

/// Payload types of the offer: Chrome's own numbers, so answers keep them.
const PT_TELEPHONE_EVENT_48K: u8 = 110;
const PT_TELEPHONE_EVENT_8K: u8 = 126;
/// The RTP header extension id of the mid (Chrome's number).
const EXT_MID: u8 = 4;

/// Opus parameters (RFC 7587 §6.1) of the offer to a browser whose call
/// is narrowband (its other leg speaks G.711): the browser then encodes
/// narrowband Opus, as Chrome does for `maxplaybackrate` 8000 (it caps the
/// encoder's bandwidth and picks its bit rate from it), which costs the
/// gateway's decoder a fifth of the fullband speech browsers send by
/// default and loses nothing the telephone network would carry. 20 kbit/s
/// instead of Chrome's 12 for narrowband keeps the agent's voice at its
/// best (decision 0025).
pub const NARROWBAND_OPUS_FMTP: &str = "maxplaybackrate=8000;sprop-maxcapturerate=8000;maxaveragebitrate=20000";

/// The audio codecs a browser leg may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    Opus,
    Pcmu,
    Pcma,
}

impl AudioCodec {
    /// RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            AudioCodec::Opus => 48_000,
            AudioCodec::Pcmu | AudioCodec::Pcma => 8_000,
        }
    }

    /// The SDP encoding name.
    /// The codec a SIP format describes, if a browser leg carries it.
    pub fn of_format(format: &crate::media::sdp::Format) -> Option<AudioCodec> {
        [AudioCodec::Opus, AudioCodec::Pcmu, AudioCodec::Pcma]
            .into_iter()
            .find(|c| format.encoding.eq_ignore_ascii_case(c.name()) && format.clock_rate == c.clock_rate())
    }

    pub fn name(self) -> &'static str {
        match self {
            AudioCodec::Opus => "opus",
            AudioCodec::Pcmu => "PCMU",
            AudioCodec::Pcma => "PCMA",
        }
    }

    fn of(codec: Codec) -> Option<AudioCodec> {
        match codec {
            Codec::Opus => Some(AudioCodec::Opus),
            Codec::PCMU => Some(AudioCodec::Pcmu),
            Codec::PCMA => Some(AudioCodec::Pcma),
            _ => None,
        }
    }
}

/// What the browser's answer settled: the codec both send, and the
/// telephone-event payload type at that codec's clock rate, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chosen {
    pub codec: AudioCodec,
    /// The codec's payload type on the browser side.
    pub pt: u8,
    /// telephone-event's payload type on the browser side.
    pub dtmf_pt: Option<u8>,
}

/// Where the gateway takes browser media, and its DTLS certificate.
#[derive(Debug, Clone)]
pub struct PeerSetup {
    /// The UDP host candidate (the address browsers reach, shared by all
    /// legs).
    pub udp: SocketAddr,
    /// The passive TCP candidate (RFC 6544), if any.
    pub tcp: Option<SocketAddr>,
    /// One ECDSA P-256 certificate for every leg: its fingerprint is in
    /// each offer.
    pub cert: DtlsCert,
    /// DTLS and SRTP (aws-lc-rs).
    pub crypto: Arc<CryptoProvider>,
}

/// Why an SDP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("the SDP could not be read: {0}")]
    Sdp(String),
    #[error("the answer offers no audio codec the gateway sends (Opus, PCMU or PCMA)")]
    NoCodec,
    #[error("there is no offer of the gateway's to answer")]
    NoPendingOffer,
    #[error("WebRTC refused it: {0}")]
    Rtc(#[from] RtcError),
}

/// The transport a datagram came or goes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What the leg asks of the edge, or tells it.
#[derive(Debug)]
pub enum PeerOutput {
    /// Send `bytes` from `source` to `destination`.
    Transmit { transport: Transport, source: SocketAddr, destination: SocketAddr, bytes: Vec<u8> },
    /// An RTP packet from the browser (SRTP removed).
    Rtp { pt: u8, seq: u16, timestamp: u32, marker: bool, payload: Arc<[u8]> },
    /// ICE and DTLS are up: media flows.
    Connected,
    /// The browser stopped answering connectivity checks (network change,
    /// tab gone); an ICE restart may bring it back.
    Disconnected,
    /// The connection is over (DTLS closed or a fatal error).
    Closed,
}

/// One browser leg.
pub struct Peer {
    rtc: Rtc,
    mid: Mid,
    pending: Option<SdpPendingOffer>,
    chosen: Option<Chosen>,
    out: VecDeque<PeerOutput>,
    timeout: Option<Instant>,
    /// Extended sequence number of the next packet to the browser.
    next_seq: u64,
    connected: bool,
    closed: bool,
    /// The leg's SDP carries [`NARROWBAND_OPUS_FMTP`].
    narrowband: bool,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("mid", &self.mid).field("chosen", &self.chosen).field("connected", &self.connected).finish_non_exhaustive()
    }
}

impl Peer {
    /// A new leg and its SDP offer of `codecs`, in that order (at least
    /// one). The first is the call's other leg's, when the gateway may
    /// use it: when that is G.711 (or there is no other leg yet, as when a
    /// browser places a call), the offer asks for narrowband Opus
    /// ([`NARROWBAND_OPUS_FMTP`]).
    pub fn offer(now: Instant, setup: &PeerSetup, codecs: &[AudioCodec]) -> Result<(Peer, String), PeerError> {
        if codecs.is_empty() {
            return Err(PeerError::NoCodec);
        }
        let mut config = Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_dtls_cert(setup.cert.clone())
            .set_crypto_provider(setup.crypto.clone())
            // Only the mid (BUNDLE's demultiplexing). Transport-wide
            // congestion control would have the browser number every packet
            // and the leg answer with feedback 20 times a second, for a
            // bandwidth estimate nobody uses: the audio's rate is fixed.
            .clear_extension_map()
            .set_extension(EXT_MID, Extension::RtpMid)
            .clear_codecs();
        let params = config.codec_config();
        for &codec in codecs {
            match codec {
                AudioCodec::Opus => params.enable_opus(true, false),
                AudioCodec::Pcmu => params.enable_pcmu(true, false),
                AudioCodec::Pcma => params.enable_pcma(true, false),
            }
        }
        for (pt, rate) in [(PT_TELEPHONE_EVENT_48K, Frequency::FORTY_EIGHT_KHZ), (PT_TELEPHONE_EVENT_8K, Frequency::EIGHT_KHZ)] {
            params.add_config(pt.into(), None, Codec::Tele, rate, None, FormatParams::parse_line("0-16"));
        }
        // Nor is transport-cc offered as the codecs' feedback.
        let mut without_twcc = params.params().to_vec();
        for p in &mut without_twcc {
            p.set_fb_transport_cc(false);
        }
        *params = CodecConfig::new_from_payload_params(without_twcc);
        let mut rtc = config.build(now);
        let udp = Candidate::host(setup.udp, "udp").map_err(|e| PeerError::Sdp(format!("UDP candidate {}: {e}", setup.udp)))?;
        rtc.add_local_candidate(udp);
        if let Some(tcp) = setup.tcp {
            let candidate = Candidate::builder()
                .tcp()
                .host(tcp)
                .tcptype(TcpType::Passive)
                .build()
                .map_err(|e| PeerError::Sdp(format!("TCP candidate {tcp}: {e}")))?;
            rtc.add_local_candidate(candidate);
        }
        let mut change = rtc.sdp_api();
        let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, Some("switchboard".into()), Some("call".into()), None);
        let Some((offer, pending)) = change.apply() else { return Err(PeerError::Sdp("no offer was made".into())) };
        let narrowband = codecs[0] != AudioCodec::Opus;
        let mut peer = Peer {
            rtc,
            mid,
            pending: Some(pending),
            chosen: None,
            out: VecDeque::new(),
            timeout: None,
            next_seq: u64::from(rand::random::<u16>() & 0x7fff),
            connected: false,
            closed: false,
            narrowband,
        };
        peer.drain();
        let sdp = peer.with_opus_params(offer.to_sdp_string());
        Ok((peer, sdp))
    }

    /// Takes the browser's answer to the gateway's offer.
    pub fn accept_answer(&mut self, sdp: &str) -> Result<Chosen, PeerError> {
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| PeerError::Sdp(e.to_string()))?;
        let pending = self.pending.take().ok_or(PeerError::NoPendingOffer)?;
        let result = self.rtc.sdp_api().accept_answer(pending, answer);
        self.drain();
        result?;
        let chosen = self.chosen_codec().ok_or(PeerError::NoCodec)?;
        self.chosen = Some(chosen);
        Ok(chosen)
    }

    /// Answers an offer of the browser's on a leg already set up (an ICE
    /// restart after a network change); the codec stays.
    pub fn accept_offer(&mut self, sdp: &str) -> Result<String, PeerError> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| PeerError::Sdp(e.to_string()))?;
        let result = self.rtc.sdp_api().accept_offer(offer);
        self.drain();
        let answer = result?;
        if let Some(chosen) = self.chosen_codec() {
            self.chosen = Some(chosen);
        }
        Ok(self.with_opus_params(answer.to_sdp_string()))
    }

    /// `sdp` (the gateway's) with the leg's Opus parameters: str0m writes
    /// only those it knows.
    fn with_opus_params(&self, sdp: String) -> String {
        if self.narrowband { add_opus_fmtp(&sdp, NARROWBAND_OPUS_FMTP) } else { sdp }
    }

    /// What the answer settled, once there is one.
    pub fn chosen(&self) -> Option<Chosen> {
        self.chosen
    }

    fn chosen_codec(&self) -> Option<Chosen> {
        let media = self.rtc.media(self.mid)?;
        let params = self.rtc.codec_config().params();
        let spec_of = |pt| params.iter().find(|p| p.pt() == pt).map(|p| p.spec());
        let (codec, pt) = media.remote_pts().iter().find_map(|&pt| spec_of(pt).and_then(|s| AudioCodec::of(s.codec)).map(|c| (c, pt)))?;
        let dtmf_pt = media
            .remote_pts()
            .iter()
            .copied()
            .find(|&pt| spec_of(pt).is_some_and(|s| s.codec == Codec::Tele && s.clock_rate.get() == codec.clock_rate()));
        Some(Chosen { codec, pt: *pt, dtmf_pt: dtmf_pt.map(|p| *p) })
    }

    /// Whether a datagram from `source` to `destination` belongs to this
    /// leg: a STUN check with its ICE credentials, or the address it
    /// already talks to.
    pub fn accepts(&self, now: Instant, transport: Transport, source: SocketAddr, destination: SocketAddr, bytes: &[u8]) -> bool {
        match Receive::new(protocol(transport), source, destination, bytes) {
            Ok(receive) => self.rtc.accepts(&Input::Receive(now, receive)),
            Err(_) => false,
        }
    }

    /// Takes a datagram from the browser; false when it was not one (it is
    /// dropped).
    pub fn receive(&mut self, now: Instant, transport: Transport, source: SocketAddr, destination: SocketAddr, bytes: &[u8]) -> bool {
        let Ok(receive) = Receive::new(protocol(transport), source, destination, bytes) else { return false };
        let handled = self.rtc.handle_input(Input::Receive(now, receive));
        self.drain();
        if let Err(e) = handled {
            tracing::debug!(error = %e, %source, "a datagram from a browser was refused");
            return false;
        }
        true
    }

    /// Lets time pass: retransmissions, RTCP, ICE timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            tracing::debug!(error = %e, "a browser leg's timer failed");
        }
        self.drain();
    }

    /// Sends one RTP packet to the browser (SRTP added); dropped while the
    /// connection is not up or before the answer.
    pub fn send_rtp(&mut self, now: Instant, pt: u8, timestamp: u32, marker: bool, payload: &[u8]) {
        if !self.connected || self.closed {
            return;
        }
        let mut direct = self.rtc.direct_api();
        let Some(stream) = direct.stream_tx_by_mid(self.mid, None) else { return };
        let seq: SeqNo = self.next_seq.into();
        self.next_seq += 1;
        stream.write_rtp(RtpWrite::new(pt.into(), seq, timestamp, now, payload.to_vec()).marker(marker));
        self.drain();
        // str0m sends what was written on its next timeout, which it sets
        // to now: sent here, the packet costs no trip through the edge's
        // timers.
        if self.timeout.is_some_and(|at| at <= now) {
            self.handle_timeout(now);
        }
    }

    /// Ends the leg: DTLS close_notify to the browser.
    pub fn close(&mut self) {
        if !self.closed {
            let _ = self.rtc.close();
            self.drain();
            self.closed = true;
        }
    }

    /// The next thing to do, if any.
    pub fn poll(&mut self) -> Option<PeerOutput> {
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due.
    pub fn next_timeout(&self) -> Option<Instant> {
        if self.closed { None } else { self.timeout }
    }

    /// Media flows.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Drives str0m until it has nothing more to say (its one rule: after
    /// every change, poll until a timeout).
    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    self.timeout = Some(at);
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    let transport = if t.proto == Protocol::Udp { Transport::Udp } else { Transport::Tcp };
                    self.out.push_back(PeerOutput::Transmit { transport, source: t.source, destination: t.destination, bytes: t.contents.to_vec() });
                }
                Ok(Output::Event(event)) => self.event(event),
                Err(e) => {
                    tracing::warn!(error = %e, "a browser leg failed");
                    self.closed = true;
                    self.out.push_back(PeerOutput::Closed);
                    return;
                }
            }
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Connected => {
                self.connected = true;
                self.out.push_back(PeerOutput::Connected);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                if self.connected {
                    self.out.push_back(PeerOutput::Disconnected);
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Connected | IceConnectionState::Completed) => {
                if self.connected {
                    self.out.push_back(PeerOutput::Connected);
                }
            }
            Event::RtpPacket(packet) => {
                let header = &packet.header;
                self.out.push_back(PeerOutput::Rtp {
                    pt: *header.payload_type,
                    seq: header.sequence_number,
                    timestamp: header.timestamp,
                    marker: header.marker,
                    payload: packet.payload.clone(),
                });
            }
            Event::Closed => {
                self.closed = true;
                self.out.push_back(PeerOutput::Closed);
            }
            _ => {}
        }
    }
}

/// `sdp` with `params` added to the fmtp of every Opus payload type (a
/// new `a=fmtp` line after its `a=rtpmap` when it has none).
fn add_opus_fmtp(sdp: &str, params: &str) -> String {
    let opus_pts: Vec<&str> = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=rtpmap:")?.split_once(' '))
        .filter(|(_, name)| name.get(..5).is_some_and(|n| n.eq_ignore_ascii_case("opus/")))
        .map(|(pt, _)| pt)
        .collect();
    let has_fmtp = |pt: &str| sdp.lines().any(|l| l.strip_prefix("a=fmtp:").and_then(|r| r.split_once(' ')).is_some_and(|(p, _)| p == pt));
    let mut out = String::with_capacity(sdp.len() + opus_pts.len() * (params.len() + 16));
    for line in sdp.split_inclusive('\n') {
        let text = line.trim_end_matches(['\r', '\n']);
        let ending = &line[text.len()..];
        if let Some((pt, existing)) = text.strip_prefix("a=fmtp:").and_then(|r| r.split_once(' ')).filter(|(pt, _)| opus_pts.contains(pt)) {
            out.push_str(&format!("a=fmtp:{pt} {existing};{params}{ending}"));
            continue;
        }
        out.push_str(line);
        if let Some((pt, _)) = text.strip_prefix("a=rtpmap:").and_then(|r| r.split_once(' ')).filter(|(pt, _)| opus_pts.contains(pt) && !has_fmtp(pt)) {
            out.push_str(&format!("a=fmtp:{pt} {params}{ending}"));
        }
    }
    out
}

fn protocol(transport: Transport) -> Protocol {
    match transport {
        Transport::Udp => Protocol::Udp,
        Transport::Tcp => Protocol::Tcp,
    }
}

impl PeerSetup {
    /// Candidates at `udp` (and `tcp`) with a fresh ECDSA P-256
    /// certificate; `None` when the crypto provider cannot make one.
    pub fn new(udp: SocketAddr, tcp: Option<SocketAddr>) -> Option<PeerSetup> {
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        let cert = crypto.dtls_provider.generate_certificate()?;
        Some(PeerSetup { udp, tcp, cert, crypto })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::media::rtp::is_rtcp;

    /// A full ICE agent answering like Chrome: the stand-in for the browser.
    struct Browser {
        rtc: Rtc,
        addr: SocketAddr,
        received: Vec<(u8, u32, Vec<u8>)>,
        /// RTCP datagrams it sent.
        rtcp_sent: u32,
        connected: bool,
        timeout: Instant,
    }

    impl Browser {
        fn new(now: Instant, addr: SocketAddr, codecs: &[AudioCodec]) -> Browser {
            let mut config = Rtc::builder().set_rtp_mode(true).clear_codecs();
            let params = config.codec_config();
            for codec in codecs {
                match codec {
                    AudioCodec::Opus => params.enable_opus(true, false),
                    AudioCodec::Pcmu => params.enable_pcmu(true, false),
                    AudioCodec::Pcma => params.enable_pcma(true, false),
                }
            }
            params.add_config(PT_TELEPHONE_EVENT_48K.into(), None, Codec::Tele, Frequency::FORTY_EIGHT_KHZ, None, FormatParams::parse_line("0-16"));
            params.add_config(PT_TELEPHONE_EVENT_8K.into(), None, Codec::Tele, Frequency::EIGHT_KHZ, None, FormatParams::parse_line("0-16"));
            let mut rtc = config.build(now);
            rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
            Browser { rtc, addr, received: Vec::new(), rtcp_sent: 0, connected: false, timeout: now }
        }

        fn answer(&mut self, offer: &str) -> String {
            let offer = SdpOffer::from_sdp_string(offer).unwrap();
            self.rtc.sdp_api().accept_offer(offer).unwrap().to_sdp_string()
        }

        /// Drains the browser, handing what it sends to the gateway's peer.
        fn pump(&mut self, now: Instant, gateway: &mut Peer) {
            loop {
                match self.rtc.poll_output().unwrap() {
                    Output::Timeout(at) => {
                        self.timeout = at;
                        return;
                    }
                    Output::Transmit(t) => {
                        let bytes = t.contents.to_vec();
                        if is_rtcp(&bytes) {
                            self.rtcp_sent += 1;
                        }
                        assert!(gateway.accepts(now, Transport::Udp, t.source, t.destination, &bytes), "the leg takes what its browser sends");
                        gateway.receive(now, Transport::Udp, t.source, t.destination, &bytes);
                    }
                    Output::Event(Event::Connected) => self.connected = true,
                    Output::Event(Event::RtpPacket(p)) => self.received.push((*p.header.payload_type, p.header.timestamp, p.payload.to_vec())),
                    Output::Event(_) => {}
                }
            }
        }

        fn deliver(&mut self, now: Instant, t: (SocketAddr, SocketAddr, Vec<u8>)) {
            let receive = Receive::new(Protocol::Udp, t.0, t.1, &t.2).unwrap();
            self.rtc.handle_input(Input::Receive(now, receive)).unwrap();
        }
    }

    fn setup() -> PeerSetup {
        PeerSetup::new("192.0.2.1:3478".parse().unwrap(), Some("192.0.2.1:3478".parse().unwrap())).expect("a certificate")
    }

    /// Runs both sides for `duration` of simulated time, 5 ms a step;
    /// returns the RTP the gateway received.
    fn run(now: &mut Instant, duration: Duration, gateway: &mut Peer, browser: &mut Browser, mut each_step: impl FnMut(Instant, &mut Peer, &mut Browser)) -> Vec<PeerOutput> {
        let end = *now + duration;
        let mut seen = Vec::new();
        while *now < end {
            *now += Duration::from_millis(5);
            browser.rtc.handle_input(Input::Timeout(*now)).unwrap();
            browser.pump(*now, gateway);
            gateway.handle_timeout(*now);
            each_step(*now, gateway, browser);
            while let Some(out) = gateway.poll() {
                match out {
                    PeerOutput::Transmit { source, destination, bytes, .. } => {
                        assert_eq!(destination, browser.addr);
                        browser.deliver(*now, (source, destination, bytes));
                        browser.pump(*now, gateway);
                    }
                    other => seen.push(other),
                }
            }
        }
        seen
    }

    #[test]
    fn a_browser_answers_connects_and_audio_flows_both_ways() {
        let mut now = Instant::now();
        let (mut gateway, offer) = Peer::offer(now, &setup(), &[AudioCodec::Opus, AudioCodec::Pcmu, AudioCodec::Pcma]).unwrap();
        assert!(offer.contains("a=ice-lite"), "{offer}");
        assert!(offer.contains("a=setup:actpass"), "{offer}");
        assert!(offer.contains("a=rtcp-mux") && offer.contains("a=group:BUNDLE"), "{offer}");
        assert!(offer.contains("typ host tcptype passive"), "the TCP candidate is offered: {offer}");
        let opus = offer.find("opus/48000/2").unwrap();
        assert!(opus < offer.find("PCMU/8000").unwrap(), "Opus first: {offer}");
        assert!(offer.contains("telephone-event/8000") && offer.contains("telephone-event/48000"), "{offer}");
        assert!(!offer.contains("maxplaybackrate"), "an Opus call stays wideband: {offer}");

        let mut browser = Browser::new(now, "198.51.100.7:50000".parse().unwrap(), &[AudioCodec::Opus, AudioCodec::Pcmu]);
        let answer = browser.answer(&offer);
        let chosen = gateway.accept_answer(&answer).unwrap();
        assert_eq!(chosen, Chosen { codec: AudioCodec::Opus, pt: 111, dtmf_pt: Some(PT_TELEPHONE_EVENT_48K) });

        let mut sent = 0u32;
        let seen = run(&mut now, Duration::from_secs(3), &mut gateway, &mut browser, |now, gateway, browser| {
            if gateway.is_connected() && browser.connected && sent < 50 {
                gateway.send_rtp(now, 111, sent * 960, false, &[0xf8, sent as u8]);
                let mid = gateway.mid;
                let mut direct = browser.rtc.direct_api();
                let stream = direct.stream_tx_by_mid(mid, None).unwrap();
                stream.write_rtp(RtpWrite::new(111.into(), (1000 + u64::from(sent)).into(), 5000 + sent * 960, now, vec![0xfc, sent as u8]));
                sent += 1;
            }
        });
        assert!(seen.iter().any(|o| matches!(o, PeerOutput::Connected)));
        let rtp: Vec<_> = seen.iter().filter_map(|o| match o { PeerOutput::Rtp { pt, timestamp, payload, .. } => Some((*pt, *timestamp, payload.to_vec())), _ => None }).collect();
        assert_eq!(rtp.len(), 50, "every packet from the browser arrives once");
        assert_eq!(rtp[7], (111, 5000 + 7 * 960, vec![0xfc, 7]));
        assert_eq!(browser.received.len(), 50, "every packet to the browser arrives once");
        assert_eq!(browser.received[9], (111, 9 * 960, vec![0xf8, 9]));
    }

    #[test]
    fn g711_first_is_kept_when_the_browser_takes_it_and_an_answer_without_audio_is_refused() {
        let mut now = Instant::now();
        let (mut gateway, offer) = Peer::offer(now, &setup(), &[AudioCodec::Pcma, AudioCodec::Pcmu, AudioCodec::Opus]).unwrap();
        assert!(offer.find("PCMA/8000").unwrap() < offer.find("opus/48000/2").unwrap(), "{offer}");
        let opus_pt = offer.lines().find_map(|l| l.strip_prefix("a=rtpmap:")?.strip_suffix(" opus/48000/2")).unwrap();
        let fmtp = offer.lines().find_map(|l| l.strip_prefix(&format!("a=fmtp:{opus_pt} "))).unwrap();
        assert!(fmtp.ends_with(&format!(";{NARROWBAND_OPUS_FMTP}")), "a G.711 call asks for narrowband Opus: {offer}");
        let mut browser = Browser::new(now, "198.51.100.7:50000".parse().unwrap(), &[AudioCodec::Pcma, AudioCodec::Opus]);
        let answer = browser.answer(&offer);
        assert_eq!(gateway.accept_answer(&answer).unwrap(), Chosen { codec: AudioCodec::Pcma, pt: 8, dtmf_pt: Some(PT_TELEPHONE_EVENT_8K) });
        run(&mut now, Duration::from_secs(1), &mut gateway, &mut browser, |_, _, _| {});
        assert!(gateway.is_connected());
        // Answered twice: nothing is pending any more.
        assert!(matches!(gateway.accept_answer(&answer), Err(PeerError::NoPendingOffer)));

        let (mut other, _) = Peer::offer(now, &setup(), &[AudioCodec::Opus, AudioCodec::Pcmu, AudioCodec::Pcma]).unwrap();
        assert!(matches!(other.accept_answer("v=0\r\nnot sdp"), Err(PeerError::Sdp(_))));
    }

    #[test]
    fn an_ice_restart_from_the_browser_keeps_the_leg_and_its_codec() {
        let mut now = Instant::now();
        // A G.711 call, transcoded for a browser that speaks only Opus.
        let (mut gateway, offer) = Peer::offer(now, &setup(), &[AudioCodec::Pcmu, AudioCodec::Pcma, AudioCodec::Opus]).unwrap();
        assert!(offer.contains(NARROWBAND_OPUS_FMTP), "{offer}");
        let mut browser = Browser::new(now, "198.51.100.7:50000".parse().unwrap(), &[AudioCodec::Opus]);
        let answer = browser.answer(&offer);
        let chosen = gateway.accept_answer(&answer).unwrap();
        run(&mut now, Duration::from_secs(1), &mut gateway, &mut browser, |_, _, _| {});
        assert!(gateway.is_connected());

        let mut change = browser.rtc.sdp_api();
        change.ice_restart(true);
        let (restart, pending) = change.apply().expect("an ICE restart offer");
        let restart = restart.to_sdp_string();
        let answer = gateway.accept_offer(&restart).unwrap();
        assert!(answer.contains("a=ice-lite"), "{answer}");
        assert!(answer.contains(NARROWBAND_OPUS_FMTP), "the answer still asks for narrowband: {answer}");
        browser.rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
        assert_eq!(gateway.chosen(), Some(chosen));
        let mut received = 0;
        let seen = run(&mut now, Duration::from_secs(2), &mut gateway, &mut browser, |now, gateway, browser| {
            if browser.connected && received < 10 {
                let mid = gateway.mid;
                let mut direct = browser.rtc.direct_api();
                let stream = direct.stream_tx_by_mid(mid, None).unwrap();
                stream.write_rtp(RtpWrite::new(111.into(), (2000 + received).into(), received as u32 * 960, now, vec![1, 2, 3]));
                received += 1;
            }
        });
        assert_eq!(seen.iter().filter(|o| matches!(o, PeerOutput::Rtp { .. })).count(), 10, "media goes on after the restart");
    }

    /// In a call's steady state the leg sends the browser its audio and a
    /// few RTCP reports, and its timer fires rarely: every other datagram
    /// and every wake-up is paid for 300 times over on a loaded gateway.
    #[test]
    fn a_steady_call_costs_few_wake_ups_and_little_rtcp() {
        let mut now = Instant::now();
        let (mut gateway, offer) = Peer::offer(now, &setup(), &[AudioCodec::Pcmu, AudioCodec::Pcma, AudioCodec::Opus]).unwrap();
        let mut browser = Browser::new(now, "198.51.100.7:50000".parse().unwrap(), &[AudioCodec::Opus]);
        assert!(!offer.contains("transport-cc") && !offer.contains("transport-wide-cc"), "{offer}");
        let answer = browser.answer(&offer);
        gateway.accept_answer(&answer).unwrap();
        run(&mut now, Duration::from_secs(1), &mut gateway, &mut browser, |_, _, _| {});
        assert!(gateway.is_connected() && browser.connected);
        while gateway.poll().is_some() {}

        // 20 s of 20 ms packets both ways, the leg's timer fired only when
        // due, as the edge does.
        let (mut fired, mut rtp_out, mut rtcp_out, mut rtp_in) = (0u32, 0u32, 0u32, 0u32);
        let end = now + Duration::from_secs(20);
        let mut step = 0u32;
        while now < end {
            now += Duration::from_millis(1);
            step += 1;
            if browser.timeout <= now {
                browser.rtc.handle_input(Input::Timeout(now)).unwrap();
            }
            if step % 20 == 0 {
                let seq = u64::from(step / 20);
                let mid = gateway.mid;
                let mut direct = browser.rtc.direct_api();
                let stream = direct.stream_tx_by_mid(mid, None).unwrap();
                stream.write_rtp(RtpWrite::new(111.into(), (3000 + seq).into(), (seq * 960) as u32, now, vec![0xfc; 60]));
                gateway.send_rtp(now, 111, (seq * 960) as u32, false, &[0xf8; 60]);
            }
            browser.pump(now, &mut gateway);
            if gateway.next_timeout().is_some_and(|at| at <= now) {
                fired += 1;
                gateway.handle_timeout(now);
            }
            while let Some(out) = gateway.poll() {
                match out {
                    PeerOutput::Transmit { source, destination, bytes, .. } => {
                        if is_rtcp(&bytes) { rtcp_out += 1 } else { rtp_out += 1 }
                        browser.deliver(now, (source, destination, bytes));
                        browser.pump(now, &mut gateway);
                    }
                    PeerOutput::Rtp { .. } => rtp_in += 1,
                    _ => {}
                }
            }
        }
        assert!(rtp_in >= 990 && rtp_out >= 990, "the audio flowed: {rtp_in} in, {rtp_out} out");
        // Reports every few seconds, not feedback on every few packets
        // (transport-cc would be 20 a second each way).
        assert!(rtcp_out <= 20, "{rtcp_out} RTCP datagrams to the browser in 20 s");
        assert!(browser.rtcp_sent <= 20, "{} RTCP datagrams from the browser in 20 s", browser.rtcp_sent);
        // A packet written goes out at once, not on the leg's next timer.
        assert!(fired <= 20, "the leg's timer fired {fired} times in 20 s");
    }

    #[test]
    fn opus_parameters_join_an_existing_fmtp_or_get_their_own() {
        let sdp = "m=audio 9 UDP/TLS/RTP/SAVPF 111 0 63\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:63 OPUS/48000/2\r\na=fmtp:0 x=1\r\n";
        assert_eq!(
            add_opus_fmtp(sdp, "maxplaybackrate=8000"),
            "m=audio 9 UDP/TLS/RTP/SAVPF 111 0 63\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1;maxplaybackrate=8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:63 OPUS/48000/2\r\na=fmtp:63 maxplaybackrate=8000\r\na=fmtp:0 x=1\r\n"
        );
        let no_opus = "m=audio 9 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n";
        assert_eq!(add_opus_fmtp(no_opus, "maxplaybackrate=8000"), no_opus);
    }

}
