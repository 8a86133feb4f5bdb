//! webrtc-rs: the sans-IO `rtc` 0.21.1 core that `webrtc` 0.21.1 drives,
//! here driven through `handle_read` / `poll_write` / `poll_event` /
//! `poll_read` / `handle_timeout` by the same loop as str0m.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::crypto::SignatureScheme;
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::interceptor_registry::configure_rtcp_reports;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_PCMA, MIME_TYPE_PCMU, MIME_TYPE_TELEPHONE_EVENT,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use crate::harness::{sdp_ufrag, Lib, Peer, Status};

pub struct WebrtcRs {
    gateway_cert: RTCCertificate,
    browser_cert: RTCCertificate,
    ssrc: u32,
}

pub struct WebrtcRsPeer {
    pc: RTCPeerConnection,
    sender: RTCRtpSenderId,
    ssrc: u32,
    status: Status,
}

fn codec(mime: &str, clock_rate: u32, channels: u16, fmtp: &str, pt: u8) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate,
            channels,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: pt,
    }
}

pub fn check_interval_ms() -> Option<u64> {
    std::env::var("WEBRTC_RS_CHECK_MS").ok().map(|v| v.parse().expect("WEBRTC_RS_CHECK_MS"))
}

fn codecs() -> Vec<RTCRtpCodecParameters> {
    vec![
        codec(MIME_TYPE_OPUS, 48000, 2, "minptime=10;useinbandfec=1", 111),
        codec(MIME_TYPE_PCMU, 8000, 0, "", 0),
        codec(MIME_TYPE_PCMA, 8000, 0, "", 8),
        codec(MIME_TYPE_TELEPHONE_EVENT, 8000, 0, "0-16", 101),
    ]
}

/// A track's encoding names one codec, and by default its transceiver offers
/// and answers only that one; list them all (with telephone-event).
fn prefer_all(pc: &mut RTCPeerConnection) {
    let ids: Vec<_> = pc.get_transceivers().collect();
    for id in ids {
        pc.rtp_transceiver(id).unwrap().set_codec_preferences(codecs()).expect("codec preferences");
    }
}

fn pcmu() -> RTCRtpCodec {
    codec(MIME_TYPE_PCMU, 8000, 0, "", 0).rtp_codec
}

impl WebrtcRs {
    pub fn new() -> Self {
        WebrtcRs { gateway_cert: Self::certificate(), browser_cert: Self::certificate(), ssrc: 0x1000 }
    }

    pub fn certificate() -> RTCCertificate {
        let provider = rtc::crypto::default_provider().expect("crypto provider");
        RTCCertificate::generate(
            provider.crypto(),
            SignatureScheme::EcdsaP256Sha256,
            CertificateParams::new(vec!["switchboard".to_owned()]).unwrap(),
        )
        .expect("certificate")
    }

    pub fn certificate_der() -> Vec<u8> {
        Self::certificate().dtls_certificate.certificate[0].to_vec()
    }

    fn peer(&mut self, lite: bool, addr: SocketAddr) -> (RTCPeerConnection, u32) {
        let mut media = MediaEngine::default();
        for c in codecs() {
            media.register_codec(c, RtpCodecKind::Audio).unwrap();
        }
        // RTCP sender/receiver reports, as str0m makes on its own.
        let registry = configure_rtcp_reports(Registry::new());
        let cert = if lite { self.gateway_cert.clone() } else { self.browser_cert.clone() };
        // The ICE agent's check interval (default 200 ms) also paces when DTLS starts after
        // ICE connects; WEBRTC_RS_CHECK_MS sets it (the "tuned" setup run).
        let mut settings = SettingEngineBuilder::new().with_lite(lite);
        if let Some(ms) = check_interval_ms() {
            settings = settings.with_ice_connection_attempts(Some(Duration::from_millis(ms)), None);
        }
        if lite && std::env::var_os("WEBRTC_RS_DTLS_SERVER").is_some() {
            settings = settings.with_answering_dtls_role(rtc::peer_connection::transport::RTCDtlsRole::Server);
        }
        let settings = settings.build();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().with_certificates(vec![cert]).build())
            .with_media_engine(media)
            .with_setting_engine(settings)
            .with_interceptor_registry(registry)
            .build(Instant::now())
            .expect("peer connection");
        let cand = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: addr.ip().to_string(),
                port: addr.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .unwrap();
        pc.add_local_candidate(RTCIceCandidate::from(&cand).to_json().unwrap()).unwrap();
        self.ssrc += 1;
        (pc, self.ssrc)
    }

    fn track(ssrc: u32) -> MediaStreamTrack {
        MediaStreamTrack::new(
            format!("stream-{ssrc}"),
            format!("audio-{ssrc}"),
            format!("audio-{ssrc}"),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                codec: pcmu(),
                ..Default::default()
            }],
        )
    }
}

impl Lib for WebrtcRs {
    type P = WebrtcRsPeer;

    fn restart(&mut self, now: Instant, b: &mut WebrtcRsPeer, g: &mut WebrtcRsPeer) -> String {
        b.pc.restart_ice();
        let offer = b.pc.create_offer(None).expect("restart offer");
        b.pc.set_local_description(now, offer.clone()).expect("local offer");
        g.pc.set_remote_description(now, RTCSessionDescription::offer(offer.sdp.clone()).unwrap()).expect("remote offer");
        let answer = g.pc.create_answer(None).expect("restart answer");
        g.pc.set_local_description(now, answer.clone()).expect("local answer");
        b.pc.set_remote_description(now, RTCSessionDescription::answer(answer.sdp.clone()).unwrap()).expect("remote answer");
        sdp_ufrag(&answer.sdp)
    }

    fn pair(&mut self, now: Instant, gateway: SocketAddr, browser: SocketAddr) -> (WebrtcRsPeer, WebrtcRsPeer, String) {
        let (mut b, bssrc) = self.peer(false, browser);
        let bsender = b.add_track(Self::track(bssrc)).expect("add_track");
        prefer_all(&mut b);
        let offer = b.create_offer(None).expect("offer");
        b.set_local_description(now, offer.clone()).expect("local offer");
        let offer_sdp = offer.sdp.clone();
        if std::env::var_os("TRACE_SDP").is_some() {
            eprintln!("{offer_sdp}");
        }

        let (mut g, gssrc) = self.peer(true, gateway);
        g.set_remote_description(now, RTCSessionDescription::offer(offer_sdp).unwrap()).expect("remote offer");
        let gsender = g.add_track(Self::track(gssrc)).expect("add_track");
        prefer_all(&mut g);
        let answer = g.create_answer(None).expect("answer");
        g.set_local_description(now, answer.clone()).expect("local answer");
        let answer_sdp = answer.sdp.clone();
        assert!(answer_sdp.contains("a=ice-lite"), "gateway answer is not ICE-lite");
        assert!(answer_sdp.contains("a=candidate"), "answer without candidate");
        b.set_remote_description(now, RTCSessionDescription::answer(answer_sdp.clone()).unwrap())
            .expect("remote answer");
        if std::env::var_os("TRACE_SDP").is_some() {
            eprintln!("{}", answer_sdp);
        }
        let ufrag = sdp_ufrag(&answer_sdp);
        (
            WebrtcRsPeer { pc: b, sender: bsender, ssrc: bssrc, status: Status::default() },
            WebrtcRsPeer { pc: g, sender: gsender, ssrc: gssrc, status: Status::default() },
            ufrag,
        )
    }
}

impl Peer for WebrtcRsPeer {
    fn receive(&mut self, now: Instant, remote: SocketAddr, local: SocketAddr, data: &[u8]) {
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: local,
                peer_addr: remote,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(data),
        };
        // Errors for single datagrams (e.g. SRTP before keys) are not fatal.
        let _ = self.pc.handle_read(msg);
    }

    fn timeout(&mut self, now: Instant) {
        let _ = self.pc.handle_timeout(now);
    }

    fn drain(&mut self, now: Instant, out: &mut Vec<(SocketAddr, Vec<u8>)>) -> Instant {
        while let Some(m) = self.pc.poll_write() {
            out.push((m.transport.peer_addr, m.message.to_vec()));
        }
        while let Some(e) = self.pc.poll_event() {
            match e {
                RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
                    RTCIceConnectionState::Connected | RTCIceConnectionState::Completed,
                ) => {
                    self.status.ice_connected.get_or_insert(now);
                }
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) => match s {
                    RTCPeerConnectionState::Connected => {
                        self.status.connected.get_or_insert(now);
                    }
                    RTCPeerConnectionState::Failed => self.status.failed = true,
                    _ => {}
                },
                _ => {}
            }
        }
        while let Some(m) = self.pc.poll_read() {
            if let RTCMessage::RtpPacket(_, p) = m.message {
                if p.header.payload_type == 101 {
                    self.status.tele_received += 1;
                }
                self.status.rtp_received += 1;
                self.status.first_rtp.get_or_insert(now);
            }
        }
        // Whatever reading queued (RTCP answers) goes out now too.
        while let Some(m) = self.pc.poll_write() {
            out.push((m.transport.peer_addr, m.message.to_vec()));
        }
        self.pc.poll_timeout().unwrap_or(now + Duration::from_secs(3600))
    }

    fn send_rtp(&mut self, now: Instant, pt: u8, seq: u64, ts: u32, payload: &[u8]) {
        let Some(mut sender) = self.pc.rtp_sender(self.sender) else { return };
        let packet = Packet {
            header: Header {
                version: 2,
                payload_type: pt,
                sequence_number: seq as u16,
                timestamp: ts,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: Bytes::copy_from_slice(payload),
        };
        let _ = sender.write_rtp(now, packet);
    }

    fn status(&self) -> &Status {
        &self.status
    }
}
