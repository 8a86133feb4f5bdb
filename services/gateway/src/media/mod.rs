//! Media: one call's bridge and its taps, and what they are built of.
//!
//! `bridge` joins a call's two legs: forwarding with per-leg stream
//! continuity (`stream`), hold music and prompts (`player`), mute, DTMF
//! (`dtmf`, RFC 4733 and SIP INFO), the recorder (`timeline` into an
//! `encode` file encoder), voicemail (`voicemail`), RTCP sessions and
//! quality (`rtcp`, `quality`) and transcoding (`codec`, over libopus
//! wrapped in `opus`). `relay` is its
//! I/O edge: the sockets of a call, on one of the media threads
//! (`threads`, an event loop each, with a `deadlines` heap). Also SDP offer and
//! answer (`sdp`), the RTP header (`rtp`), G.711 (`g711`) and RTP port
//! allocation (`ports`); `local` carries datagrams between the gateway's own
//! sockets in memory, and `outbox` sends a turn's datagrams of one socket with
//! one system call. Everything but `relay`, `threads`, `spooler`, `local`,
//! `outbox` and `ports` is sans-IO.

pub mod bridge;
pub mod codec;
pub(crate) mod deadlines;
pub mod dtmf;
pub mod encode;
pub mod g711;
pub mod local;
pub mod opus;
pub mod outbox;
pub mod player;
pub mod ports;
pub mod quality;
pub mod relay;
pub mod rtcp;
pub mod rtp;
pub mod sdp;
pub mod spooler;
pub mod stream;
pub mod threads;
pub mod timeline;
pub mod voicemail;
