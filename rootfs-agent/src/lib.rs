//! husk's guest agent and the host<->agent protocol.
//!
//! - [`protocol`]: frame format, bounded incremental decoder, message types (both sides).
//! - [`client`]: the blocking host-side client.
//! - [`agent`]: the agent's request loop, runnable as the guest's PID 1 or on the host in tests.

pub mod agent;
pub mod client;
pub mod protocol;
