//! husk's guest agent and the host<->agent protocol.
//!
//! - [`protocol`]: frame format, bounded incremental decoder, message types (both sides).
//! - [`client`]: the blocking host-side client.
//! - [`confine`]: capabilities, identity, no_new_privs and seccomp between fork and exec
//!   (the guest agent and husk's process backend both use it).
//! - [`hooks`]: OCI startContainer hooks, run in the guest before the container's process.
//! - [`sandbox`]: the guest half of a container's sandbox (cgroup, mounts, masks), made at Start.
//! - [`agent`]: the agent's request loop, runnable as the guest's PID 1 or on the host in tests.

pub mod agent;
pub mod client;
pub mod confine;
pub mod hooks;
pub mod lookup;
pub mod network;
pub mod protocol;
pub mod sandbox;
