//! `husk vm boot` (developer entry point to the microVM monitor) and `husk info`.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use husk::vmm::{self, DiskConfig, FsShare, KvmKind, MonitorReport, SerialOutput, VmConfig};

#[derive(Debug, Args)]
pub struct VmArgs {
    #[command(subcommand)]
    pub command: VmCommand,
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Boot a guest kernel in husk's microVM monitor (serial console on the terminal with --debug).
    Boot(VmBootArgs),
}

#[derive(Debug, Args)]
pub struct VmBootArgs {
    /// Guest kernel: ELF vmlinux or bzImage.
    #[arg(long, env = "HUSK_KERNEL")]
    pub kernel: PathBuf,
    /// initramfs (cpio, optionally compressed) loaded high in guest memory.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Raw disk image as virtio-blk; append ":ro" for read-only. Repeatable (vda, vdb, ...).
    #[arg(long = "disk", value_name = "FILE[:ro]")]
    pub disks: Vec<String>,
    /// A virtio-fs device named TAG, served by the vhost-user daemon (virtiofsd) listening at
    /// SOCKET. Repeatable.
    #[arg(long = "fs", value_name = "TAG=SOCKET")]
    pub shares: Vec<String>,
    /// Kernel command line (default: husk's quiet microVM line plus console=ttyS0).
    #[arg(long)]
    pub cmdline: Option<String>,
    /// Guest memory: MiB, or with a K/M/G suffix.
    #[arg(long, default_value = "128M")]
    pub memory: String,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    pub cpus: u8,
    /// Append the serial console to this file (without --debug).
    #[arg(long)]
    pub serial_log: Option<PathBuf>,
    /// Run the monitor unjailed: as root, `vm boot` otherwise enters the monitor jail (own
    /// namespaces and empty root, an unprivileged uid, every thread under seccomp).
    #[arg(long)]
    pub no_jail: bool,
    /// What the monitor's seccomp filters do with a system call outside their allow-list:
    /// kill (the default), log (allow it and name it in the kernel's audit log) or off.
    #[arg(long, env = "HUSK_VMM_SECCOMP", default_value = "kill")]
    pub seccomp: vmm::SeccompMode,
    /// An inherited connected unix socket: the host end of a virtio-console port (the agent's
    /// channel, when a container supervisor runs this monitor).
    #[arg(long, hide = true)]
    pub console_fd: Option<i32>,
    /// An inherited tap descriptor (on a container network's bridge): the guest's virtio-net
    /// interface, with --net-mac and --net-mtu.
    #[arg(long, hide = true)]
    pub net_fd: Option<i32>,
    /// The guest interface's MAC, as 02:42:0a:57:00:02.
    #[arg(long, hide = true, requires = "net_fd")]
    pub net_mac: Option<String>,
    #[arg(long, hide = true, default_value_t = 1500)]
    pub net_mtu: u16,
    /// An inherited descriptor the exit report is written to as one JSON object.
    #[arg(long, hide = true)]
    pub report_fd: Option<i32>,
}

/// Take ownership of an inherited descriptor named on the command line.
fn inherited_fd(fd: i32, flag: &str) -> Result<OwnedFd> {
    // SAFETY: F_GETFD only reads the descriptor's flags; it fails on a closed descriptor.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        bail!("{flag} {fd}: not an open inherited descriptor");
    }
    // SAFETY: the descriptor is open and was handed to this process to own; nothing else in
    // the process refers to it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // No further exec should see it.
    // SAFETY: F_SETFD on a descriptor we own.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(owned)
}

#[derive(Debug, Args)]
pub struct InfoArgs {}

/// "128", "128M", "512m", "2G", "65536K" -> MiB.
pub fn parse_memory_mib(s: &str) -> Result<u32> {
    let s = s.trim();
    let (num, mult_kib): (&str, u64) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1),
        Some('m' | 'M') => (&s[..s.len() - 1], 1024),
        Some('g' | 'G') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1024),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("invalid --memory {s:?}: expected e.g. 128M or 2G"))?;
    let mib = n
        .checked_mul(mult_kib)
        .map(|kib| kib / 1024)
        .filter(|&mib| mib <= u64::from(u32::MAX))
        .with_context(|| format!("--memory {s} is absurdly large"))?;
    Ok(mib as u32)
}

/// "path", "path:ro", "path:rw".
pub fn parse_share(s: &str) -> Result<FsShare> {
    match s.split_once('=') {
        Some((tag, socket)) if !tag.is_empty() && !socket.is_empty() => Ok(FsShare {
            tag: tag.to_string(),
            socket: PathBuf::from(socket),
        }),
        _ => bail!("--fs {s:?}: expected TAG=SOCKET"),
    }
}

/// "02:42:0a:57:00:02" -> bytes.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("--net-mac {s:?}: expected six hex bytes"))?;
    <[u8; 6]>::try_from(parts)
        .map_err(|_| anyhow::anyhow!("--net-mac {s:?}: expected six hex bytes"))
}

pub fn parse_disk(s: &str) -> DiskConfig {
    if let Some(path) = s.strip_suffix(":ro") {
        DiskConfig {
            path: path.into(),
            read_only: true,
        }
    } else {
        DiskConfig {
            path: s.strip_suffix(":rw").unwrap_or(s).into(),
            read_only: false,
        }
    }
}

pub fn vm(args: VmArgs, debug: bool) -> Result<i32> {
    match args.command {
        VmCommand::Boot(boot) => vm_boot(boot, debug),
    }
}

fn vm_boot(args: VmBootArgs, debug: bool) -> Result<i32> {
    let host = vmm::probe_host();
    match host.kind {
        KvmKind::None => bail!("{}", host.blocker().unwrap_or_default()),
        // The kernel was chosen explicitly: it may be PVM-capable, so say it once and try.
        KvmKind::Pvm => eprintln!("husk: warning: {}", vmm::PVM_NOTICE),
        _ => {}
    }
    let mut cfg = VmConfig::new(&args.kernel);
    cfg.initrd = args.initrd;
    if let Some(cmdline) = args.cmdline {
        cfg.cmdline = cmdline;
    }
    cfg.memory_mib = parse_memory_mib(&args.memory)?;
    cfg.vcpus = args.cpus;
    cfg.seccomp = args.seccomp;
    cfg.disks = args.disks.iter().map(|d| parse_disk(d)).collect();
    cfg.shares = args
        .shares
        .iter()
        .map(|s| parse_share(s))
        .collect::<Result<_>>()?;
    cfg.serial = match (debug, args.serial_log) {
        (true, _) => SerialOutput::Stdout,
        (false, Some(path)) => SerialOutput::File(path),
        (false, None) => SerialOutput::None,
    };
    if args.report_fd.is_some() {
        // A container's monitor process: named for what it is in ps and top (the binary was
        // started as /proc/self/exe, which would read "exe").
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, c"husk-vmm".as_ptr()) };
    }
    if let Some(fd) = args.console_fd {
        let fd = inherited_fd(fd, "--console-fd")?;
        let meta = std::fs::File::from(fd.try_clone()?).metadata()?;
        if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
            bail!("--console-fd: not a socket");
        }
        cfg.console = Some(UnixStream::from(fd));
    }
    if let Some(fd) = args.net_fd {
        let tap = std::fs::File::from(inherited_fd(fd, "--net-fd")?);
        let mac = match &args.net_mac {
            Some(text) => parse_mac(text)?,
            None => bail!("--net-fd needs --net-mac"),
        };
        if !(68..=65535 - 18).contains(&args.net_mtu) {
            bail!("--net-mtu {}: outside 68..=65517", args.net_mtu);
        }
        cfg.net = Some(vmm::NetConfig {
            tap,
            mac,
            mtu: args.net_mtu,
        });
    }
    let mut report = args
        .report_fd
        .map(|fd| inherited_fd(fd, "--report-fd").map(std::fs::File::from))
        .transpose()?;
    // SAFETY: geteuid has no preconditions.
    cfg.jail = !args.no_jail && unsafe { libc::geteuid() } == 0;
    let result = vmm::run_vm(cfg);
    if let Some(out) = report.as_mut() {
        let message = match &result {
            Ok(exit) => MonitorReport::Exited(exit.clone()),
            Err(err) => MonitorReport::Failed(err.to_string()),
        };
        // The supervisor reads it once this process has exited; a failed write leaves it
        // to say "the monitor ended without a report".
        let _ = serde_json::to_writer(&mut *out, &message);
        let _ = out.flush();
    }
    let exit = result?;
    let first = exit
        .first_exit
        .map(|d| format!(", first guest exit at {:.6}s", d.as_secs_f64()))
        .unwrap_or_default();
    eprintln!(
        "husk: VM stopped: {:?} after {:.6}s{first}",
        exit.reason,
        exit.runtime.as_secs_f64()
    );
    if let (Some(detail), false) = (&exit.detail, exit.reason == vmm::ExitReason::Reset) {
        eprintln!("husk: {detail}");
    }
    eprintln!("husk: {}", exit.exits.summary());
    Ok(exit.status())
}

pub fn info(_args: InfoArgs) -> Result<i32> {
    let host = vmm::probe_host();
    match (host.kvm_api_version, &host.kvm_error) {
        (Some(v), _) => println!("KVM:             /dev/kvm, API version {v}"),
        (None, err) => println!(
            "KVM:             unavailable ({})",
            err.as_deref().unwrap_or("?")
        ),
    }
    let kind = match host.kind {
        KvmKind::Hardware if host.nested => {
            "hardware (VMX/SVM; nested: this host is itself a guest, which counts as hardware)"
        }
        KvmKind::Hardware => "hardware (VMX/SVM)",
        KvmKind::Pvm => "PVM (software virtualization: kvm_pvm, no VMX/SVM)",
        KvmKind::Unknown => "unknown (/dev/kvm works, but neither VMX/SVM nor kvm_pvm found)",
        KvmKind::None => "none",
    };
    println!("Virtualization:  {kind}");
    match &host.guest_kernel {
        Some(k) => println!("Guest kernel:    {}", k.display()),
        None => println!("Guest kernel:    none (build guest-kernel/build.sh or set HUSK_KERNEL)"),
    }
    match host.blocker() {
        None => println!("VM isolation:    available"),
        Some(why) => println!("VM isolation:    unavailable: {why}"),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory_mib("128").unwrap(), 128);
        assert_eq!(parse_memory_mib("128M").unwrap(), 128);
        assert_eq!(parse_memory_mib("2G").unwrap(), 2048);
        assert_eq!(parse_memory_mib("65536k").unwrap(), 64);
        assert!(parse_memory_mib("lots").is_err());
        assert!(parse_memory_mib("99999999999999999G").is_err());
    }

    #[test]
    fn disk_suffixes() {
        assert_eq!(
            parse_disk("/a:b.img:ro"),
            DiskConfig {
                path: "/a:b.img".into(),
                read_only: true
            }
        );
        assert_eq!(
            parse_disk("/x.img"),
            DiskConfig {
                path: "/x.img".into(),
                read_only: false
            }
        );
        assert_eq!(
            parse_disk("/x.img:rw"),
            DiskConfig {
                path: "/x.img".into(),
                read_only: false
            }
        );
    }
}
