//! SIP: message codec, typed header views, and the transports that carry
//! messages (UDP datagrams, TCP and TLS streams). The codec and header modules are
//! sans-IO; only `transport` touches sockets.

pub mod dialog;
pub mod digest;
pub mod guard;
pub mod headers;
pub mod local;
pub mod message;
pub mod registrar;
pub mod ratelimit;
pub mod response;
pub mod tls;
pub mod transaction;
pub mod transport;

pub use message::{ParseError, SipMessage, StartLine};
pub use transport::{Destination, Transport};
