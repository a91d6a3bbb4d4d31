//! `husk vm boot` (developer entry point to the microVM monitor) and `husk info`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use husk::vmm::{self, DiskConfig, KvmKind, SerialOutput, VmConfig};

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
    cfg.disks = args.disks.iter().map(|d| parse_disk(d)).collect();
    cfg.serial = match (debug, args.serial_log) {
        (true, _) => SerialOutput::Stdout,
        (false, Some(path)) => SerialOutput::File(path),
        (false, None) => SerialOutput::None,
    };
    let exit = vmm::run_vm(cfg)?;
    let first = exit
        .first_exit
        .map(|d| format!(", first guest exit at {:.6}s", d.as_secs_f64()))
        .unwrap_or_default();
    eprintln!(
        "husk: VM stopped: {:?} after {:.6}s{first}",
        exit.reason,
        exit.runtime.as_secs_f64()
    );
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
