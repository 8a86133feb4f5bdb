//! The agent API: what a signed-in agent's softphone uses.

pub mod stream;
