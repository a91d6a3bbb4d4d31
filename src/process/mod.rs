//! Process isolation: namespaces, rootfs, cgroups, capabilities, seccomp and pty.

pub mod cgroup;
pub mod seccomp;
pub mod user;
