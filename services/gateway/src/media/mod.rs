//! Media: SDP, RTP, RTCP reports, G.711, reception quality and its MOS, the
//! RTP relay that anchors a call's audio in the gateway, and the recorder
//! tap. Everything but `relay` (and `ports`) is sans-IO.

pub mod codec;
pub mod encode;
pub mod g711;
pub mod ports;
pub mod quality;
pub mod recorder;
pub mod relay;
pub mod rtcp;
pub mod rtp;
pub mod sdp;
