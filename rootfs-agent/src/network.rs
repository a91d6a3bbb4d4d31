//! The guest's network, set up once at `Start` before the container's process exists: the
//! loopback interface always (as in every container, `--network none` included), and for a
//! container on a network the virtio-net interface (eth0) with the address, MTU and default
//! route husk allocated, plus /etc/hosts and /etc/resolv.conf bound over the image's.
//!
//! The interface is configured with the classic SIOCSIF* and SIOCADDRT ioctls rather than
//! rtnetlink: it is one interface, configured once, and the ioctls need no dependency in the
//! static agent. The /etc files live in a tmpfs of their own that stays attached only while
//! they are bound from it, so the container's disk is not written (its writable layer shows no
//! change) and `--read-only` roots get them too, as with the binds husk and Docker make on the
//! host.

use std::ffi::CStr;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::protocol::GuestNetwork;

/// The name the guest kernel gives the first (and only) virtio-net interface.
pub const INTERFACE: &CStr = c"eth0";

/// Bring `lo` up, and eth0 with `network` when the container has one.
pub fn configure(network: Option<&GuestNetwork>) -> Result<(), String> {
    let socket = Socket::open().map_err(|e| format!("network setup: socket: {e}"))?;
    socket
        .set_up(c"lo")
        .map_err(|e| format!("bringing up lo: {e}"))?;
    let Some(network) = network else {
        return Ok(());
    };
    let fail = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| format!("configuring eth0: {what}: {e}")
    };
    socket
        .set_mtu(INTERFACE, network.mtu)
        .map_err(fail("MTU"))?;
    socket
        .set_address(INTERFACE, network.address, network.prefix)
        .map_err(fail("address"))?;
    socket.set_up(INTERFACE).map_err(fail("link up"))?;
    if let Some(gateway) = network.gateway {
        if !in_subnet(gateway, network.address, network.prefix) {
            // A pod network's /32 with a gateway outside it (169.254.1.1 and the like): the
            // gateway is on the link, though no subnet says so.
            socket
                .add_link_route(INTERFACE, gateway)
                .map_err(fail("route to the gateway"))?;
        }
        socket
            .add_default_route(gateway)
            .map_err(fail("default route"))?;
    }
    if network.hosts.is_none() && network.resolv.is_none() {
        return Ok(());
    }
    bind_etc_files(network)
}

fn in_subnet(ip: Ipv4Addr, address: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(address) & mask
}

struct Socket(OwnedFd);

fn ifreq(name: &CStr) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in req
        .ifr_name
        .iter_mut()
        .zip(name.to_bytes().iter().take(libc::IFNAMSIZ - 1))
    {
        *slot = *byte as libc::c_char;
    }
    req
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr {
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux; the kernel reads the
    // family to interpret the rest.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(addr) }
}

impl Socket {
    fn open() -> std::io::Result<Socket> {
        // SAFETY: socket() takes integer arguments and returns a new descriptor or -1.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor owned from here on.
        Ok(Socket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ioctl<T>(&self, request: libc::Ioctl, arg: &mut T) -> std::io::Result<()> {
        // SAFETY: every request used here takes a pointer to a `T` of the size the kernel
        // expects (ifreq or rtentry), valid for reads and writes for the call's duration.
        let rc = unsafe { libc::ioctl(self.fd(), request, arg as *mut T) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    fn set_up(&self, name: &CStr) -> std::io::Result<()> {
        let mut req = ifreq(name);
        self.ioctl(libc::SIOCGIFFLAGS, &mut req)?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        unsafe {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        }
        self.ioctl(libc::SIOCSIFFLAGS, &mut req)
    }

    fn set_mtu(&self, name: &CStr, mtu: u16) -> std::io::Result<()> {
        let mut req = ifreq(name);
        req.ifr_ifru.ifru_mtu = libc::c_int::from(mtu);
        self.ioctl(libc::SIOCSIFMTU, &mut req)
    }

    fn set_address(&self, name: &CStr, ip: Ipv4Addr, prefix: u8) -> std::io::Result<()> {
        let mut req = ifreq(name);
        req.ifr_ifru.ifru_addr = sockaddr(ip);
        self.ioctl(libc::SIOCSIFADDR, &mut req)?;
        let mask = Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0));
        let mut req = ifreq(name);
        req.ifr_ifru.ifru_netmask = sockaddr(mask);
        self.ioctl(libc::SIOCSIFNETMASK, &mut req)
    }

    /// A host route to `destination` straight out of `device`, no gateway.
    fn add_link_route(&self, device: &CStr, destination: Ipv4Addr) -> std::io::Result<()> {
        // SAFETY: rtentry is plain old data; all-zero is a valid value.
        let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
        route.rt_dst = sockaddr(destination);
        route.rt_genmask = sockaddr(Ipv4Addr::BROADCAST);
        route.rt_flags = libc::RTF_UP | libc::RTF_HOST;
        // The kernel only reads the name during the call; `device` outlives it.
        route.rt_dev = device.as_ptr().cast_mut();
        self.ioctl(libc::SIOCADDRT, &mut route)
    }

    fn add_default_route(&self, gateway: Ipv4Addr) -> std::io::Result<()> {
        // SAFETY: rtentry is plain old data; all-zero is a valid value.
        let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
        route.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
        route.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
        route.rt_gateway = sockaddr(gateway);
        route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        self.ioctl(libc::SIOCADDRT, &mut route)
    }
}

/// A new /etc/hosts from the host (a member of the network came or went), written in place
/// into the bound file, so every resolver in the container reads it at its next lookup. Only
/// when the agent bound it: a container not on a network has its image's own file, which is
/// not the host's to change.
pub fn rewrite_hosts(text: &[u8]) -> Result<(), String> {
    if text.contains(&0) {
        return Err("a hosts file with a NUL".into());
    }
    // Remembered rather than read from /proc/self/mountinfo: once the container runs, /proc
    // is its procfs, of a PID namespace in which the agent has no pid.
    if !HOSTS_BOUND.load(std::sync::atomic::Ordering::SeqCst) {
        return Err("this container's /etc/hosts is not the network's".into());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open("/etc/hosts")
        .and_then(|mut f| std::io::Write::write_all(&mut f, text))
        .map_err(|e| format!("rewriting /etc/hosts: {e}"))
}

/// Set once /etc/hosts is the agent's bind.
static HOSTS_BOUND: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Where the tmpfs holding the files is attached while they are bound (then detached and the
/// directory removed).
const STAGING: &str = "/etc/.husk-network";

/// /etc/hosts and /etc/resolv.conf from the start request, bound over the image's files (made
/// empty first where the image has none, as runc makes a bind target).
fn bind_etc_files(network: &GuestNetwork) -> Result<(), String> {
    let tmpfs = crate::sandbox::detached_mount(c"tmpfs")
        .map_err(|e| format!("a tmpfs for /etc/hosts: {e}"))?;
    // A bind needs its source in the mount tree: the tmpfs is attached for as long as the
    // binds take (a directory left by an earlier boot of this disk is reused).
    std::fs::create_dir_all("/etc").map_err(|e| format!("creating /etc: {e}"))?;
    match std::fs::create_dir(STAGING) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::symlink_metadata(STAGING).map_err(|e| format!("{STAGING}: {e}"))?;
            if !meta.is_dir() {
                return Err(format!(
                    "{STAGING} exists in the image and is not a directory"
                ));
            }
        }
        Err(e) => return Err(format!("creating {STAGING}: {e}")),
    }
    crate::sandbox::attach_mount(&tmpfs, STAGING)
        .map_err(|e| format!("attaching {STAGING}: {e}"))?;
    let bound = bind_staged(network);
    // Detached at once: the binds keep the tmpfs alive, nothing else can reach it.
    let detached = nix::mount::umount2(STAGING, nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| format!("detaching {STAGING}: {e}"));
    let _ = std::fs::remove_dir(STAGING);
    bound.and(detached)
}

fn bind_staged(network: &GuestNetwork) -> Result<(), String> {
    for (name, text) in [("hosts", &network.hosts), ("resolv.conf", &network.resolv)] {
        let Some(text) = text else { continue };
        let staged = format!("{STAGING}/{name}");
        std::fs::write(&staged, text).map_err(|e| format!("writing {staged}: {e}"))?;
        let target = format!("/etc/{name}");
        prepare_target(&target).map_err(|e| format!("{target}: {e}"))?;
        nix::mount::mount(
            Some(staged.as_str()),
            target.as_str(),
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("binding {target}: {e}"))?;
        if name == "hosts" {
            HOSTS_BOUND.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    Ok(())
}

/// A file at `target` to bind over: the image's own, or a new empty one. A symlink is
/// followed, as the guest resolves it (the guest is the container's sandbox, so it can only
/// lead within it); a directory is refused.
fn prepare_target(target: &str) -> std::io::Result<()> {
    match std::fs::metadata(target) {
        Ok(meta) if meta.is_dir() => Err(std::io::Error::other(
            "is a directory in the image, not a file",
        )),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all("/etc")?;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(target)
                .map(|_| ())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::in_subnet;
    use std::net::Ipv4Addr;

    #[test]
    fn a_gateway_outside_a_pod_address_prefix_needs_a_link_route() {
        let address = Ipv4Addr::new(10, 1, 2, 3);
        assert!(in_subnet(Ipv4Addr::new(10, 1, 2, 1), address, 24));
        assert!(!in_subnet(Ipv4Addr::new(169, 254, 1, 1), address, 24));
        assert!(!in_subnet(Ipv4Addr::new(10, 1, 2, 1), address, 32));
        assert!(in_subnet(Ipv4Addr::new(10, 200, 0, 1), address, 8));
    }
}
