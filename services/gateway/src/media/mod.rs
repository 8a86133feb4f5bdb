//! Media: SDP, RTP, RTCP reports and sessions, G.711, DTMF (RFC 4733 and
//! SIP INFO), outgoing stream continuity, reception quality and its MOS,
//! the RTP relay that anchors a call's audio in the gateway, and the
//! recorder tap. Everything but `relay` (and `ports`) is sans-IO.

pub mod codec;
pub mod dtmf;
pub mod encode;
pub mod g711;
pub mod ports;
pub mod quality;
pub mod recorder;
pub mod relay;
pub mod rtcp;
pub mod rtp;
pub mod sdp;
pub mod stream;
