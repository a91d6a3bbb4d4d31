//! VM isolation, host side: the disks a microVM container boots from, the initramfs holding
//! the guest agent, and the client that drives the agent over the virtio console.

pub mod agent_client;
pub mod backend;
pub mod disk;
pub mod initramfs;
pub mod kernel;

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
