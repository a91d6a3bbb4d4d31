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
pub mod disk;
pub mod initramfs;
pub mod kernel;
pub mod monitor_process;
pub mod qemu;
pub mod virtiofs;

use std::io;
use std::path::{Path, PathBuf};

pub use agent_client::{connect_agent, run_in_guest};
pub use disk::{image_disk, writable_disk, DEFAULT_WRITABLE_DISK_BYTES};
pub use initramfs::initramfs;
pub use kernel::{locate_agent, GuestKernel};

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
