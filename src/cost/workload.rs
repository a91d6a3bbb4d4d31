//! The built-in workloads of `husk compare`: busybox shell one-liners, so they run unchanged in
//! any busybox-based image under both isolations. Throughput is counted over the ledger's
//! "process run" phase (busybox `date` has no sub-second clock inside the container).

use serde::{Deserialize, Serialize};

/// Bytes per byte-sized `dd` copy: one read and one write syscall each.
const SYSCALL_BYTES: u64 = 50_000;
/// MiB written and fsynced by the file I/O workload.
const FILEIO_MIB: u64 = 16;
/// MiB of buffer `dd` allocates and fills (page faults on fresh memory).
const MEMORY_MIB: u64 = 64;
/// fork+exec of /bin/true by the spawn workload.
const SPAWNS: u64 = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// `true`: the cost of starting and stopping a container.
    Startup,
    /// getpid-style syscall loop: byte-at-a-time dd from /dev/zero to /dev/null.
    Syscall,
    /// write + fsync of 16 MiB into the container's root filesystem.
    Fileio,
    /// Touch 64 MiB of fresh memory (one dd buffer filled from /dev/zero).
    Memory,
    /// fork/exec loop of /bin/true.
    Spawn,
    /// The command given after IMAGE.
    Cmd,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Workload::Startup => "startup",
            Workload::Syscall => "syscall",
            Workload::Fileio => "fileio",
            Workload::Memory => "memory",
            Workload::Spawn => "spawn",
            Workload::Cmd => "cmd",
        })
    }
}

impl Workload {
    /// The container command; `cmd` is the user's command for `Workload::Cmd`.
    pub fn command(self, cmd: &[String]) -> Vec<String> {
        let script = |s: String| vec!["sh".to_string(), "-c".to_string(), s];
        match self {
            Workload::Startup => vec!["true".to_string()],
            Workload::Syscall => script(format!(
                "dd if=/dev/zero of=/dev/null bs=1 count={SYSCALL_BYTES} 2>/dev/null"
            )),
            Workload::Fileio => script(format!(
                "dd if=/dev/zero of=/tmp/husk-fileio bs=1048576 count={FILEIO_MIB} conv=fsync \
                 2>/dev/null && rm -f /tmp/husk-fileio"
            )),
            Workload::Memory => script(format!(
                "dd if=/dev/zero of=/dev/null bs={MEMORY_MIB}M count=1 2>/dev/null"
            )),
            Workload::Spawn => script(format!(
                "i=0; while [ $i -lt {SPAWNS} ]; do /bin/true; i=$((i+1)); done"
            )),
            Workload::Cmd => cmd.to_vec(),
        }
    }

    /// Work done per run and its unit, for a throughput; None when it has no fixed amount.
    pub fn amount(self) -> Option<(f64, &'static str)> {
        match self {
            Workload::Startup | Workload::Cmd => None,
            Workload::Syscall => Some(((2 * SYSCALL_BYTES) as f64, "syscalls/s")),
            Workload::Fileio => Some((FILEIO_MIB as f64, "MiB/s written+fsynced")),
            Workload::Memory => Some((MEMORY_MIB as f64, "MiB/s touched")),
            Workload::Spawn => Some((SPAWNS as f64, "fork+exec/s")),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Workload::Startup => "start a container running `true` and tear it down",
            Workload::Syscall => "byte-at-a-time dd: 100k read/write syscalls",
            Workload::Fileio => "write and fsync 16 MiB to the root filesystem",
            Workload::Memory => "fill a fresh 64 MiB buffer (page faults)",
            Workload::Spawn => "fork and exec /bin/true 200 times",
            Workload::Cmd => "the given command",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmd_runs_the_user_command_and_builtins_are_shell_scripts() {
        let user = vec!["echo".to_string(), "hi".to_string()];
        assert_eq!(Workload::Cmd.command(&user), user);
        assert_eq!(Workload::Spawn.command(&user)[..2], ["sh", "-c"]);
        assert!(Workload::Syscall.amount().is_some());
        assert!(Workload::Startup.amount().is_none());
    }
}
