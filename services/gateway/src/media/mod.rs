//! Media: SDP, RTP, G.711, the RTP relay that anchors a call's audio in the
//! gateway, and the recorder tap. Everything but `relay` is sans-IO.

pub mod g711;
pub mod ports;
pub mod recorder;
pub mod relay;
pub mod rtp;
pub mod sdp;
