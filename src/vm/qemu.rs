//! Booting a guest under QEMU (microvm machine, TCG or KVM) with the same kernel, initramfs,
//! disks and agent channel husk's own monitor uses: the T2 test tier and a reference to compare
//! the monitor against on hosts where it cannot run (PVM).

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::VmError;
use crate::vmm::devices::serial::ConsoleWriter;

/// Name of the virtio serial port the agent looks for first.
pub const AGENT_PORT_NAME: &str = "husk.agent";
/// Where QEMU finds a container's tap.
const TAP_FD: i32 = 3;

/// What to boot. Paths must stay valid while the guest runs.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// ELF vmlinux with a PVH note (guest-kernel/build.sh builds one) or a bzImage.
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// None: no disks at all, the root comes over virtio-fs (husk-runc's bundles).
    pub image_disk: Option<PathBuf>,
    pub writable_disk: Option<PathBuf>,
    pub memory_mib: u32,
    pub cpus: u8,
    /// Use KVM instead of TCG (needs a host where a stock kernel boots under KVM).
    pub kvm: bool,
    /// Offer the agent a console port (/dev/hvc0) instead of the named serial port. QEMU drops
    /// console output its socket does not take at once, so this is only for small exchanges.
    pub console_port: bool,
    /// Where the guest's serial console goes (the kernel log and the agent's own messages).
    pub serial_log: Option<PathBuf>,
    /// Directory for the agent socket.
    pub work_dir: PathBuf,
    /// virtio-fs shares: (tag, vhost-user socket of the daemon serving it).
    pub shares: Vec<(String, PathBuf)>,
    /// A virtio-net device over this tap descriptor (inherited by QEMU) with this MAC.
    pub net: Option<(std::os::fd::RawFd, String)>,
}

impl QemuConfig {
    pub fn new(kernel: &Path, initrd: &Path, image_disk: &Path, work_dir: &Path) -> QemuConfig {
        QemuConfig {
            kernel: kernel.to_path_buf(),
            initrd: initrd.to_path_buf(),
            image_disk: Some(image_disk.to_path_buf()),
            writable_disk: None,
            memory_mib: 256,
            cpus: 1,
            kvm: false,
            console_port: false,
            serial_log: None,
            work_dir: work_dir.to_path_buf(),
            shares: Vec::new(),
            net: None,
        }
    }
}

/// A running QEMU guest; killed and reaped on drop.
pub struct QemuGuest {
    child: Child,
}

impl QemuGuest {
    /// Start QEMU and connect to the agent channel. QEMU holds the guest until the connection
    /// is made, so nothing the agent sends is lost. Returns the connected socket: hand it to
    /// [`super::connect_agent`].
    pub fn boot(cfg: &QemuConfig) -> Result<(QemuGuest, UnixStream), VmError> {
        if !(64..=65536).contains(&cfg.memory_mib) || !(1..=32).contains(&cfg.cpus) {
            return Err(VmError::Invalid(format!(
                "QEMU guest needs 64..=65536 MiB and 1..=32 vCPUs, got {} MiB and {} vCPUs",
                cfg.memory_mib, cfg.cpus
            )));
        }
        let image_drive = cfg
            .image_disk
            .as_deref()
            .map(|image| drive_arg("img", image, true))
            .transpose()?;
        let rw_drive = cfg
            .writable_disk
            .as_deref()
            .map(|rw| drive_arg("rw", rw, false))
            .transpose()?;
        let sock = cfg.work_dir.join("agent.sock");
        let sock_arg = path_arg(&sock)?;
        let _ = std::fs::remove_file(&sock);
        // The guest's console reaches the log through husk, which bounds it: QEMU's own file
        // backend would let a guest fill the disk.
        let serial_log = match &cfg.serial_log {
            Some(path) => Some(File::create(path).map_err(VmError::io("creating", path))?),
            None => None,
        };
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-M",
            "microvm,acpi=off",
            "-nodefaults",
            "-no-user-config",
            "-nographic",
        ])
        .args(["-no-reboot", "-accel", if cfg.kvm { "kvm" } else { "tcg" }])
        // QEMU's own seccomp filter (no obsolete syscalls, no exec, no scheduler or resource
        // changes) and, when husk runs as root, an unprivileged uid once QEMU has opened its
        // disks, /dev/kvm and the agent socket. Raising privileges stays allowed in the filter
        // only because -runas itself needs setuid; nothing runs as root after it.
        .args([
            "-sandbox",
            "on,obsolete=deny,spawn=deny,resourcecontrol=deny",
        ])
        .args(
            unprivileged_user()
                .map(|user| ["-runas".to_string(), user])
                .into_iter()
                .flatten(),
        )
        // Names vCPU threads "CPU n/KVM|TCG", so the cost ledger can tell guest time from
        // QEMU's own.
        .args(["-name", "husk,debug-threads=on"])
        .arg("-m")
        .arg(cfg.memory_mib.to_string())
        .args(shared_memory_args(cfg.memory_mib, !cfg.shares.is_empty()))
        .arg("-smp")
        .arg(cfg.cpus.to_string())
        .arg("-kernel")
        .arg(&cfg.kernel)
        .arg("-initrd")
        .arg(&cfg.initrd)
        // microvm has no i8042: the agent's reset must be a triple fault for -no-reboot.
        // no_timer_check: an emulated (or heavily loaded) guest can miss the kernel's IO-APIC
        // timer check, which panics at boot; the check proves nothing for a virtual machine.
        .args([
            "-append",
            "console=ttyS0 quiet panic=-1 reboot=t no_timer_check",
        ]);
        if let Some(image) = image_drive {
            cmd.arg("-drive")
                .arg(image)
                .args(["-device", "virtio-blk-device,drive=img"]);
        }
        if let Some(rw) = rw_drive {
            cmd.arg("-drive")
                .arg(rw)
                .args(["-device", "virtio-blk-device,drive=rw"]);
        }
        for (i, (tag, socket)) in cfg.shares.iter().enumerate() {
            // The chardev connects while QEMU is still root (before -runas), as the disks open.
            cmd.arg("-chardev")
                .arg(format!("socket,id=fs{i},path={}", path_arg(socket)?))
                .arg("-device")
                .arg(format!("vhost-user-fs-device,chardev=fs{i},tag={tag}"));
        }
        if let Some((_, mac)) = &cfg.net {
            // The tap arrives at TAP_FD (see pre_exec below); QEMU only reads and writes it.
            cmd.arg("-netdev")
                .arg(format!("tap,id=net0,fd={TAP_FD}"))
                .arg("-device")
                .arg(format!("virtio-net-device,netdev=net0,mac={mac}"));
        }
        let port = if cfg.console_port {
            "virtconsole,chardev=agent".to_string()
        } else {
            format!("virtserialport,chardev=agent,name={AGENT_PORT_NAME}")
        };
        cmd.args(["-device", "virtio-serial-device"])
            .arg("-chardev")
            .arg(format!("socket,id=agent,path={sock_arg},server=on,wait=on"))
            .args(["-device", &port])
            .args(["-serial", "stdio"])
            .stdin(Stdio::null())
            .stdout(if serial_log.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped());
        let tap_fd = cfg.net.as_ref().map_or(-1, |(fd, _)| *fd);
        // SAFETY: runs in the forked child before exec and only calls prctl and dup2, which
        // are async-signal-safe: QEMU dies with the husk process that supervises it, and
        // finds the tap (open until spawn returns) at TAP_FD without FD_CLOEXEC.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if tap_fd >= 0 && libc::dup2(tap_fd, TAP_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| VmError::Tool {
            tool: "qemu-system-x86_64".into(),
            message: e.to_string(),
        })?;
        let mut child = child;
        if let (Some(log), Some(mut console)) = (serial_log, child.stdout.take()) {
            let mut writer = ConsoleWriter::new(
                Some(Box::new(log)),
                Arc::new(AtomicBool::new(false)),
                Some(crate::vmm::SERIAL_LOG_LIMIT),
            );
            // Ends at EOF, when QEMU exits.
            let _ = std::thread::Builder::new()
                .name("husk-qemu-serial".into())
                .spawn(move || std::io::copy(&mut console, &mut writer));
        }
        let mut guest = QemuGuest { child };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match UnixStream::connect(&sock) {
                Ok(conn) => return Ok((guest, conn)),
                Err(_) if Instant::now() < deadline => {
                    if let Ok(Some(status)) = guest.child.try_wait() {
                        let mut err = String::new();
                        if let Some(mut pipe) = guest.child.stderr.take() {
                            use std::io::Read;
                            let _ = pipe.read_to_string(&mut err);
                        }
                        return Err(VmError::Tool {
                            tool: "qemu-system-x86_64".into(),
                            message: format!(
                                "{status}: {}",
                                err.lines().last().unwrap_or("").trim()
                            ),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => {
                    guest.kill();
                    return Err(VmError::Tool {
                        tool: "qemu-system-x86_64".into(),
                        message: format!("no agent socket after 20 s: {e}"),
                    });
                }
            }
        }
    }

    /// Wait for QEMU to exit (the guest reset itself), up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, VmError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(VmError::io("waiting for", Path::new("qemu")))?
            {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(VmError::Agent(format!(
                    "the guest did not stop within {timeout:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for QemuGuest {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A vhost-user daemon maps guest memory itself: with shares, the guest's RAM is a shared memfd.
fn shared_memory_args(memory_mib: u32, shared: bool) -> Vec<String> {
    if !shared {
        return Vec::new();
    }
    vec![
        "-object".into(),
        format!("memory-backend-memfd,id=husk-ram,size={memory_mib}M,share=on"),
        "-machine".into(),
        "memory-backend=husk-ram".into(),
    ]
}

/// The user QEMU drops to: `nobody` when husk runs as root (as -runas needs) and it exists.
fn unprivileged_user() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .map(|user| user.name)
}

/// QEMU splits option values at commas: a path with one cannot be passed safely.
fn path_arg(path: &Path) -> Result<String, VmError> {
    let text = path
        .to_str()
        .ok_or_else(|| VmError::Invalid(format!("{} is not UTF-8", path.display())))?;
    if text.contains(',') {
        return Err(VmError::Invalid(format!(
            "QEMU cannot take a path with a comma: {text}"
        )));
    }
    Ok(text.to_string())
}

fn drive_arg(id: &str, path: &Path, read_only: bool) -> Result<String, VmError> {
    let ro = if read_only { ",readonly=on" } else { "" };
    Ok(format!(
        "id={id},file={},format=raw,if=none{ro}",
        path_arg(path)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_configs_are_refused_before_qemu_starts() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x");
        let mut cfg = QemuConfig::new(&p, &p, &p, tmp.path());
        cfg.memory_mib = 1;
        let err = QemuGuest::boot(&cfg).err().expect("tiny memory refused");
        assert!(err.to_string().contains("64..=65536 MiB"), "{err}");

        let mut cfg = QemuConfig::new(&p, &p, &tmp.path().join("a,b"), tmp.path());
        cfg.cpus = 1;
        let err = QemuGuest::boot(&cfg).err().expect("comma path refused");
        assert!(err.to_string().contains("comma"), "{err}");
        assert!(!tmp.path().join("agent.sock").exists());
    }
}
