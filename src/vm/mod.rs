//! VM isolation, host side: the disks a microVM container boots from, the initramfs holding
//! the guest agent, and the client that drives the agent over the virtio console.
//!
//! The guest contract (what rootfs-agent, PID 1 from the initramfs, expects):
//! - virtio-blk #1 (/dev/vda): the image disk from [`image_disk`], read-only, erofs or ext4;
//! - virtio-blk #2 (/dev/vdb): the container's disk from [`writable_disk`], read-write ext4
//!   (optional: without it writes go to guest memory);
//! - the agent channel: a virtio serial port named "husk.agent" if there is one, else the first
//!   console port (/dev/hvc0, put in raw mode). The host end must not drop guest output (QEMU's
//!   virtconsole does when its socket is full; its virtserialport does not);
//! - kernel command line: `console=ttyS0 quiet panic=-1` plus `reboot=k` where the monitor
//!   stops on an i8042 reset (husk's) or `reboot=t` where it stops on a triple fault (QEMU
//!   microvm, `-no-reboot`). The agent resets the VM once the container process has exited and
//!   its exit has been sent, after killing what is left and syncing the disks.

pub mod agent_client;
pub mod backend;
pub mod control;
pub mod disk;
pub mod initramfs;
pub mod kernel;
pub mod monitor_process;
pub mod qemu;
pub mod supervisor;
pub mod virtiofs;

use std::io;
use std::path::{Path, PathBuf};

pub use agent_client::{connect_agent, run_in_guest};
pub use backend::Hypervisor;
pub use disk::{image_disk, writable_disk, DEFAULT_WRITABLE_DISK_BYTES};
pub use initramfs::initramfs;
pub use kernel::{locate_agent, GuestKernel};

/// How VM containers run on this host, read once at the edge (the CLI reads HUSK_VMM,
/// HUSK_KERNEL, HUSK_AGENT, HUSK_VMM_SECCOMP and HUSK_VIRTIOFSD) and passed down: nothing
/// below the runtime layer reads the environment for these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmSettings {
    /// Which monitor runs the guest.
    pub hypervisor: Hypervisor,
    /// The guest kernel; None: the cached guest-kernel build.
    pub kernel: Option<PathBuf>,
    /// The static guest agent; None: found next to husk or in the build tree.
    pub agent: Option<PathBuf>,
    /// What husk's monitor does with a system call outside its seccomp allow-list.
    pub monitor_seccomp: crate::vmm::SeccompMode,
    /// The virtio-fs daemon; None: setup.sh's build, Debian's, or the PATH.
    pub virtiofsd: Option<PathBuf>,
}

impl VmSettings {
    /// The settings the environment gives.
    pub fn from_env() -> Result<Self, VmError> {
        let path = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let text = |name: &str| std::env::var(name).unwrap_or_default();
        Ok(VmSettings {
            hypervisor: Hypervisor::parse(&text("HUSK_VMM"))?,
            kernel: path("HUSK_KERNEL"),
            agent: path("HUSK_AGENT"),
            monitor_seccomp: text("HUSK_VMM_SECCOMP").parse().map_err(
                |e: crate::vmm::VmmError| VmError::Invalid(format!("HUSK_VMM_SECCOMP: {e}")),
            )?,
            virtiofsd: path("HUSK_VIRTIOFSD"),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{tool} failed: {message} (is {tool} installed? Debian: erofs-utils / e2fsprogs)")]
    Tool { tool: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("guest agent: {0}")]
    Agent(String),
    #[error("guest agent: {0}")]
    Client(#[from] rootfs_agent::client::ClientError),
}

impl VmError {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> VmError {
        let path = path.to_path_buf();
        move |source| VmError::Io { what, path, source }
    }
}
