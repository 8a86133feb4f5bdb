//! str0m 0.25: `Rtc` driven through `handle_input` / `poll_output`, RTP mode.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use crate::harness::{sdp_ufrag, Lib, Peer, Status};

pub struct Str0m {
    provider: Arc<CryptoProvider>,
    gateway_cert: DtlsCert,
    browser_cert: DtlsCert,
}

pub struct Str0mPeer {
    rtc: Rtc,
    mid: Mid,
    status: Status,
}

impl Str0m {
    pub fn new() -> Self {
        let provider = Arc::new(str0m::crypto::from_feature_flags());
        let gateway_cert = provider.dtls_provider.generate_certificate().expect("certificate");
        let browser_cert = provider.dtls_provider.generate_certificate().expect("certificate");
        Str0m { provider, gateway_cert, browser_cert }
    }

    /// One certificate as the gateway would make it at start-up (DER).
    pub fn certificate_der() -> Vec<u8> {
        let provider = str0m::crypto::from_feature_flags();
        provider.dtls_provider.generate_certificate().expect("certificate").certificate
    }

    fn config(&self, lite: bool) -> Rtc {
        let cert = if lite { &self.gateway_cert } else { &self.browser_cert };
        let mut config = Rtc::builder()
            .set_crypto_provider(self.provider.clone())
            .set_dtls_cert(cert.clone())
            .set_ice_lite(lite)
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_pcmu(true, false)
            .enable_pcma(true, false);
        // RFC 4733 at 8 kHz (str0m adds no telephone-event rate by itself).
        config.codec_config().add_config(
            Pt::from(101),
            None,
            Codec::Tele,
            Frequency::EIGHT_KHZ,
            None,
            FormatParams::default(),
        );
        config.build(Instant::now())
    }
}

impl Lib for Str0m {
    type P = Str0mPeer;

    fn restart(&mut self, _now: Instant, b: &mut Str0mPeer, g: &mut Str0mPeer) -> String {
        self.restart_impl(b, g)
    }

    fn pair(&mut self, _now: Instant, gateway: SocketAddr, browser: SocketAddr) -> (Str0mPeer, Str0mPeer, String) {
        let mut b = self.config(false);
        b.add_local_candidate(Candidate::host(browser, "udp").unwrap());
        let mut api = b.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, pending) = api.apply().expect("offer");
        let offer = offer.to_sdp_string();

        let mut g = self.config(true);
        g.add_local_candidate(Candidate::host(gateway, "udp").unwrap());
        let answer = g
            .sdp_api()
            .accept_offer(SdpOffer::from_sdp_string(&offer).unwrap())
            .expect("answer")
            .to_sdp_string();
        assert!(answer.contains("a=ice-lite"), "gateway answer is not ICE-lite");
        b.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).expect("accept answer");
        if std::env::var_os("TRACE_SDP").is_some() {
            eprintln!("{}", answer);
        }
        let ufrag = sdp_ufrag(&answer);
        (
            Str0mPeer { rtc: b, mid, status: Status::default() },
            Str0mPeer { rtc: g, mid, status: Status::default() },
            ufrag,
        )
    }
}

impl Str0m {
    fn restart_impl(&mut self, b: &mut Str0mPeer, g: &mut Str0mPeer) -> String {
        let mut api = b.rtc.sdp_api();
        api.ice_restart(true);
        let (offer, pending) = api.apply().expect("restart offer");
        let answer = g
            .rtc
            .sdp_api()
            .accept_offer(SdpOffer::from_sdp_string(&offer.to_sdp_string()).unwrap())
            .expect("restart answer")
            .to_sdp_string();
        b.rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).expect("accept");
        sdp_ufrag(&answer)
    }
}

impl Peer for Str0mPeer {
    fn receive(&mut self, now: Instant, remote: SocketAddr, local: SocketAddr, data: &[u8]) {
        let Ok(r) = Receive::new(Protocol::Udp, remote, local, data) else { return };
        if self.rtc.handle_input(Input::Receive(now, r)).is_err() {
            self.status.failed = true;
        }
    }

    fn timeout(&mut self, now: Instant) {
        if self.rtc.handle_input(Input::Timeout(now)).is_err() {
            self.status.failed = true;
        }
    }

    fn drain(&mut self, now: Instant, out: &mut Vec<(SocketAddr, Vec<u8>)>) -> Instant {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return t,
                Ok(Output::Transmit(t)) => out.push((t.destination, t.contents.into())),
                Ok(Output::Event(e)) => match e {
                    Event::IceConnectionStateChange(IceConnectionState::Connected)
                    | Event::IceConnectionStateChange(IceConnectionState::Completed) => {
                        self.status.ice_connected.get_or_insert(now);
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {}
                    Event::Connected => {
                        self.status.connected.get_or_insert(now);
                    }
                    Event::RtpPacket(p) => {
                        if *p.header.payload_type == 101 {
                            self.status.tele_received += 1;
                        }
                        self.status.rtp_received += 1;
                        self.status.first_rtp.get_or_insert(now);
                    }
                    _ => {}
                },
                Err(_) => {
                    self.status.failed = true;
                    return now + std::time::Duration::from_secs(1);
                }
            }
        }
    }

    fn send_rtp(&mut self, now: Instant, pt: u8, seq: u64, ts: u32, payload: &[u8]) {
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(self.mid, None) else { return };
        tx.write_rtp(RtpWrite::new(Pt::from(pt), seq.into(), ts, now, payload.to_vec()));
    }

    fn status(&self) -> &Status {
        &self.status
    }
}
