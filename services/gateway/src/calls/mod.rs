//! Calls: the B2BUA state machine per call (sans-IO), the manager that
//! drives it with sockets, clocks, routing and media, and the writer that
//! persists every state change with its call event, and the live view of
//! calls that agents' softphones follow.

pub mod b2bua;
pub mod control;
pub mod live;
pub mod manager;
pub mod routing;
pub mod trunks;
pub mod writer;
