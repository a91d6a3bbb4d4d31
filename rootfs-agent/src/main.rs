//! husk's guest agent: PID 1 of the microVM.
//!
//! Boot: mount /proc, /sys and devtmpfs; mount the read-only image disk (/dev/vda, erofs or
//! ext4) and the container's writable disk (/dev/vdb, ext4) under an overlay and make it the
//! root, or, when the host shares one (husk-runc's bundles), a virtio-fs root; open the virtio console port; then serve the host (rootfs_agent::agent::serve) and, when
//! the container process is gone, sync and reboot, which ends the VM.

use std::fs::{self, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, MsFlags};
use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::signal::{kill, Signal};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
use nix::unistd::{chdir, chroot, sync, Pid};
use rootfs_agent::agent::{serve, ServeOptions, SessionEnd};
use rootfs_agent::protocol::{ReadyInfo, PROTOCOL_VERSION};

const CONSOLE: &str = "/dev/hvc0";
/// Name of the virtio serial port the host may offer instead of a console port.
const AGENT_PORT_NAME: &str = "husk.agent";
const IMAGE_DISK: &str = "/dev/vda";
const WRITABLE_DISK: &str = "/dev/vdb";
/// The virtio-fs tag of a root shared from the host (husk-runc's bundles).
const ROOT_SHARE_TAG: &str = rootfs_agent::protocol::ROOT_SHARE_TAG;

fn main() {
    if std::process::id() != 1 {
        eprintln!("rootfs-agent: must run as PID 1 inside a husk microVM (its tests run the request loop on the host)");
        std::process::exit(2);
    }
    if let Err(e) = run() {
        eprintln!("rootfs-agent: {e:#}");
    }
    shutdown();
}

fn boottime_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

fn run() -> Result<()> {
    let init_started_ms = boottime_ms();
    mount_fs(
        "proc",
        "/proc",
        "proc",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    mount_fs(
        "sysfs",
        "/sys",
        "sysfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    mount_fs(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;

    let (console, console_path) = open_console()?;
    let mut ready = ReadyInfo {
        protocol: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        kernel_release: kernel_release(),
        image_fs: None,
        writable_disk: false,
        console: console_path,
        init_started_ms,
        ready_ms: 0,
    };
    enter_container_root(&mut ready)?;
    ready.ready_ms = boottime_ms();

    match serve(console, &ready, ServeOptions { sandbox: true }) {
        Ok(SessionEnd::Exited(code)) => {
            eprintln!("rootfs-agent: container process exited with {code}")
        }
        Ok(SessionEnd::HostClosed) => eprintln!("rootfs-agent: host closed the connection"),
        Err(e) => eprintln!("rootfs-agent: session failed: {e}"),
    }
    Ok(())
}

fn mount_fs(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    fs::create_dir_all(target).with_context(|| format!("creating {target}"))?;
    mount(Some(source), target, Some(fstype), flags, data)
        .with_context(|| format!("mounting {fstype} on {target}"))
}

fn wait_for(path: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !Path::new(path).exists() {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Where the agent finds the host: a virtio serial port named [`AGENT_PORT_NAME`] (a plain
/// port is flow controlled end to end; QEMU drops console-port output the host does not take at
/// once) or else the first console port, /dev/hvc0. Ports show up once the driver has talked to
/// the device (multiport devices add them asynchronously), so wait a little.
fn open_console() -> Result<(OwnedFd, String)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let path = loop {
        if let Some(path) = find_console() {
            break path;
        }
        if Instant::now() >= deadline {
            bail!("neither a virtio port named {AGENT_PORT_NAME} nor {CONSOLE} appeared: the VM needs a virtio-console device");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&path)
        .with_context(|| format!("opening {path}"))?;
    // A console port is a tty: raw mode, since the protocol is binary and a line discipline
    // would echo and rewrite it.
    if nix::unistd::isatty(file.as_raw_fd()).unwrap_or(false) {
        let mut termios = tcgetattr(&file).context("reading console attributes")?;
        cfmakeraw(&mut termios);
        tcsetattr(&file, SetArg::TCSANOW, &termios).context("setting console to raw mode")?;
    }
    Ok((file.into(), path))
}

fn find_console() -> Option<String> {
    if let Ok(ports) = fs::read_dir("/sys/class/virtio-ports") {
        for port in ports.flatten() {
            let name = fs::read_to_string(port.path().join("name")).unwrap_or_default();
            let dev = Path::new("/dev").join(port.file_name());
            if name.trim() == AGENT_PORT_NAME && dev.exists() {
                return Some(dev.to_string_lossy().into_owned());
            }
        }
    }
    Path::new(CONSOLE).exists().then(|| CONSOLE.to_string())
}

/// Overlay the image disk (lower) and the writable disk (upper) and make the result the root.
/// Without an image disk the agent stays in the initramfs (the host learns it from Ready).
fn enter_container_root(ready: &mut ReadyInfo) -> Result<()> {
    fs::create_dir_all("/newroot")?;
    // An OCI bundle's root (husk-runc): the host's directory itself, over virtio-fs, so the
    // container's writes land where its runtime's caller (podman, containerd) looks.
    if mount(
        Some(ROOT_SHARE_TAG),
        "/newroot",
        Some("virtiofs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .is_ok()
    {
        ready.image_fs = Some("virtiofs".to_string());
        return switch_into("/newroot");
    }
    if !wait_for(IMAGE_DISK, Duration::from_millis(500)) {
        eprintln!("rootfs-agent: no image disk at {IMAGE_DISK}, staying in the initramfs");
        return Ok(());
    }
    fs::create_dir_all("/image")?;
    let ro = MsFlags::MS_RDONLY;
    let fs_type = ["erofs", "ext4"]
        .into_iter()
        .find(|t| mount(Some(IMAGE_DISK), "/image", Some(*t), ro, None::<&str>).is_ok())
        .with_context(|| format!("{IMAGE_DISK} is neither erofs nor ext4"))?;
    ready.image_fs = Some(fs_type.to_string());

    if Path::new(WRITABLE_DISK).exists() {
        mount_fs(WRITABLE_DISK, "/rw", "ext4", MsFlags::empty(), None)?;
        ready.writable_disk = true;
    } else {
        // No writable disk: writes land in guest memory and vanish with the VM.
        mount_fs("tmpfs", "/rw", "tmpfs", MsFlags::empty(), Some("mode=0755"))?;
    }
    fs::create_dir_all("/rw/upper")?;
    fs::create_dir_all("/rw/work")?;
    let opts = "lowerdir=/image,upperdir=/rw/upper,workdir=/rw/work";
    mount_fs(
        "overlay",
        "/newroot",
        "overlay",
        MsFlags::empty(),
        Some(opts),
    )?;
    switch_into("/newroot")
}

/// Move the kernel filesystems into the new root and make it `/`.
fn switch_into(newroot: &str) -> Result<()> {
    for dir in ["proc", "sys", "dev"] {
        let target = format!("{newroot}/{dir}");
        fs::create_dir_all(&target)?;
        mount(
            Some(&*format!("/{dir}")),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .with_context(|| format!("moving /{dir} into the container root"))?;
    }
    mount_fs(
        "devpts",
        &format!("{newroot}/dev/pts"),
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    // Tools inside containers expect the cgroup hierarchy; best effort, a container runs
    // without it.
    if let Err(e) = mount_fs(
        "cgroup2",
        &format!("{newroot}/sys/fs/cgroup"),
        "cgroup2",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    ) {
        eprintln!("rootfs-agent: {e:#}");
    }
    let ptmx = format!("{newroot}/dev/ptmx");
    let ptmx = Path::new(&ptmx);
    if !ptmx.exists() || fs::read_link(ptmx).is_err() {
        let _ = fs::remove_file(ptmx);
        std::os::unix::fs::symlink("pts/ptmx", ptmx)?;
    }
    mount_fs(
        "shm",
        &format!("{newroot}/dev/shm"),
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    // POSIX message queues, as runc gives every container; best effort like cgroup2.
    if let Err(e) = mount_fs(
        "mqueue",
        &format!("{newroot}/dev/mqueue"),
        "mqueue",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    ) {
        eprintln!("rootfs-agent: {e:#}");
    }

    // The initramfs root cannot be pivoted away; move the new root over it and chroot, as
    // switch_root does. The agent binary stays mapped from the old root.
    chdir(newroot).context("entering the container root")?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .context("moving the container root to /")?;
    chroot(".").context("chroot into the container root")?;
    chdir("/").context("chdir /")?;
    Ok(())
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Kill what is left, flush the writable disk and reset the VM (the monitor, or QEMU with
/// -no-reboot, turns the reset into VM exit).
fn shutdown() -> ! {
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    sync();
    let _ = reboot(RebootMode::RB_AUTOBOOT);
    // reboot only returns on failure; PID 1 must never exit (that panics the kernel, which with
    // panic=-1 also resets, but loudly).
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}
