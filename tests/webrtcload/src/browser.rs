//! One "browser": a str0m peer as Chrome would be one (full ICE agent,
//! DTLS, SRTP, BUNDLE, rtcp-mux) on a UDP socket of its own, speaking one
//! audio codec only (Opus, so a G.711 far end needs transcoding, or PCMU).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::{Candidate, Rtc};

use std::collections::HashMap;
use std::sync::Mutex;

use crate::audio::{self, OpusTarget};
use crate::media::{Audio, Browser, CallShared};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    Opus,
    Pcmu,
}

impl Codec {
    fn rtpmap(self) -> &'static str {
        match self {
            Codec::Opus => "opus/48000",
            Codec::Pcmu => "PCMU/8000",
        }
    }
}

/// What every browser of a run shares: its codec and audio, one DTLS
/// certificate (making one costs more than the rest of a peer).
pub struct Browsers {
    pub codec: Codec,
    pub ip: IpAddr,
    /// What a browser sends when the far side's SDP says nothing of how.
    pub audio: Audio,
    /// The Opus loop encoded for each set of parameters an offer gave.
    opus: Mutex<HashMap<OpusTarget, Audio>>,
    provider: Arc<CryptoProvider>,
    cert: DtlsCert,
}

/// A browser between its offer and the remote answer.
pub struct Offering {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    mid: Mid,
    pending: SdpPendingOffer,
    pub sdp: String,
}

impl Browsers {
    pub fn new(codec: Codec, ip: IpAddr, audio: Audio) -> anyhow::Result<Browsers> {
        let provider = Arc::new(str0m::crypto::from_feature_flags());
        let cert = provider.dtls_provider.generate_certificate().context("a DTLS certificate")?;
        Ok(Browsers { codec, ip, audio, opus: Mutex::new(HashMap::new()), provider, cert })
    }

    /// What to send in answer to `offer`: for Opus, encoded as Chrome
    /// would for the offer's Opus parameters.
    fn audio_for(&self, offer: &str) -> anyhow::Result<Audio> {
        if self.codec != Codec::Opus {
            return Ok(self.audio.clone());
        }
        let target = OpusTarget::from_fmtp(opus_fmtp(offer));
        if target == OpusTarget::default() {
            return Ok(self.audio.clone());
        }
        let mut cache = self.opus.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(audio) = cache.get(&target) {
            return Ok(audio.clone());
        }
        let frames = audio::opus_frames(target)?.into_iter().map(Arc::from).collect();
        let audio = Audio { frames: Arc::new(frames), samples: 960 };
        cache.insert(target, audio.clone());
        Ok(audio)
    }

    fn rtc(&self) -> anyhow::Result<(Rtc, UdpSocket, SocketAddr)> {
        let builder = Rtc::builder()
            .set_crypto_provider(self.provider.clone())
            .set_dtls_cert(self.cert.clone())
            .set_rtp_mode(true)
            .clear_codecs();
        let builder = match self.codec {
            Codec::Opus => builder.enable_opus(true, false),
            Codec::Pcmu => builder.enable_pcmu(true, false),
        };
        let mut rtc = builder.build(Instant::now());
        let socket = UdpSocket::bind(SocketAddr::new(self.ip, 0)).context("binding a browser socket")?;
        let local = socket.local_addr()?;
        rtc.add_local_candidate(Candidate::host(local, "udp").context("a host candidate")?);
        Ok((rtc, socket, local))
    }

    /// Answers an offer (the gateway's, ICE-lite): the browser and its SDP answer.
    pub fn answer(&self, offer: &str, shared: Arc<CallShared>) -> anyhow::Result<(Browser, String)> {
        let audio = self.audio_for(offer)?;
        let (mut rtc, socket, local) = self.rtc()?;
        let offer = SdpOffer::from_sdp_string(offer).context("parsing the offer")?;
        let answer = rtc.sdp_api().accept_offer(offer).context("answering the offer")?.to_sdp_string();
        let mid = answer.lines().find_map(|l| l.strip_prefix("a=mid:")).map(|m| Mid::from(m.trim())).context("no a=mid in the answer")?;
        let pt = payload_type(&answer, self.codec).with_context(|| format!("the answer has no {} (nothing in common with the offer)", self.codec.rtpmap()))?;
        Ok((Browser { rtc, socket, local, mid, pt, audio, shared }, answer))
    }

    /// Makes an offer (to Janus): audio, send and receive.
    pub fn offer(&self) -> anyhow::Result<Offering> {
        let (mut rtc, socket, local) = self.rtc()?;
        let mut api = rtc.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, pending) = api.apply().context("no offer to make")?;
        Ok(Offering { sdp: offer.to_sdp_string(), rtc, socket, local, mid, pending })
    }

    /// Takes the remote answer to an offer: the browser, ready to connect.
    pub fn accept(&self, mut o: Offering, answer: &str, shared: Arc<CallShared>) -> anyhow::Result<Browser> {
        let pt = payload_type(answer, self.codec).with_context(|| format!("the answer has no {}", self.codec.rtpmap()))?;
        let answer = SdpAnswer::from_sdp_string(answer).context("parsing the answer")?;
        o.rtc.sdp_api().accept_answer(o.pending, answer).context("accepting the answer")?;
        Ok(Browser { rtc: o.rtc, socket: o.socket, local: o.local, mid: o.mid, pt, audio: self.audio.clone(), shared })
    }
}

/// The parameters of the first Opus payload type's `a=fmtp` line.
fn opus_fmtp(sdp: &str) -> Option<&str> {
    let pt = payload_type(sdp, Codec::Opus)?;
    let prefix = format!("a=fmtp:{} ", *pt);
    sdp.lines().find_map(|l| l.trim().strip_prefix(prefix.as_str()))
}

/// The payload type `codec` has in an SDP's audio section.
fn payload_type(sdp: &str, codec: Codec) -> Option<Pt> {
    let want = codec.rtpmap().to_ascii_lowercase();
    sdp.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("a=rtpmap:")?;
        let (pt, name) = rest.split_once(' ')?;
        name.to_ascii_lowercase().starts_with(&want).then(|| pt.parse::<u8>().ok()).flatten().map(Pt::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_types_are_found_by_name() {
        let sdp = "m=audio 9 UDP/TLS/RTP/SAVPF 0 8 96\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:96 opus/48000/2\r\n";
        assert_eq!(payload_type(sdp, Codec::Opus), Some(Pt::from(96)));
        assert_eq!(payload_type(sdp, Codec::Pcmu), Some(Pt::from(0)));
        assert_eq!(payload_type("a=rtpmap:8 PCMA/8000\r\n", Codec::Pcmu), None);
        let with_fmtp = format!("{sdp}a=fmtp:0 x=1\r\na=fmtp:96 minptime=10;maxplaybackrate=8000\r\n");
        assert_eq!(opus_fmtp(&with_fmtp), Some("minptime=10;maxplaybackrate=8000"));
        assert_eq!(opus_fmtp(sdp), None);
    }
}
