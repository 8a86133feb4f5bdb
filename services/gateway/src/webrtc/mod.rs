//! The browser leg: WebRTC media for the softphone page (decision 0022).
//!
//! | module | role | I/O? |
//! |---|---|---|
//! | `peer.rs` | one leg's ICE-lite, DTLS, SRTP and RTP (str0m) | sans-IO |
//! | `ua.rs` | the SIP user agent every softphone page is registered through | sans-IO |
//! | `edge.rs` | the shared WebRTC UDP port and its ICE-TCP listener, every leg's peer and its loopback RTP socket towards the media bridge | thread |
//! | `framing.rs` | RFC 4571 framing of packets on ICE-TCP connections | sans-IO |
//! | `turn.rs` | TURN REST credentials for the pages (coturn `use-auth-secret`) | sans-IO |
//! | `service.rs` | pages' registrations, legs, offers to the pages' event streams, answers from them | task |

pub mod edge;
pub mod framing;
pub mod peer;
pub mod service;
pub mod turn;
pub mod ua;

pub use service::{BrowserPhones, PhoneError, Registered};
