//! The host end of a VM container's network interface: a tap device, opened here (in the
//! namespace that holds the network's bridge) and handed to the monitor as a descriptor.
//!
//! The tap is not persistent: it exists while a descriptor of it is open, so a monitor killed
//! with SIGKILL (and the husk that started it) takes it along, and nothing on the host is left
//! to clean up but the endpoint record (which `rm` releases).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::NetworkError;

const TUN_DEVICE: &str = "/dev/net/tun";

/// Create the tap `name` (at most 15 bytes) and return its descriptor.
pub fn open(name: &str) -> Result<File, NetworkError> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(NetworkError::Address(format!(
            "tap name {name:?} is not 1..=15 bytes"
        )));
    }
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(TUN_DEVICE)
        .map_err(super::io_err(Path::new(TUN_DEVICE)))?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    // No packet-information prefix: the device reads and writes bare Ethernet frames.
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes an ifreq, valid for the call's duration, on a
    // descriptor of /dev/net/tun we own.
    if unsafe {
        libc::ioctl(
            tun.as_raw_fd(),
            libc::TUNSETIFF,
            &mut req as *mut libc::ifreq,
        )
    } < 0
    {
        return Err(NetworkError::Sys {
            op: format!("creating tap {name}"),
            source: nix::Error::last(),
        });
    }
    Ok(tun)
}
