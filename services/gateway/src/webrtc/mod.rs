//! The browser leg: WebRTC media for the softphone page (decision 0022).
//!
//! `peer.rs` is one leg's ICE-lite, DTLS and SRTP, sans-IO.

pub mod peer;
