//! The microVM monitor: KVM, guest memory, boot, vCPUs and virtio-mmio devices.
//!
//! [`run_vm`] is the single entry point: it builds the VM straight-line (memory, kernel,
//! devices, vCPUs; see builder.rs), runs it, and reports why it stopped.

pub mod boot;
mod builder;
pub mod bus;
pub mod cpu;
pub mod devices;
pub mod event_loop;
pub mod exits;
pub mod host;
pub mod host_signals;
pub mod jail;
pub mod layout;
pub mod mptable;
pub mod seccomp;
pub mod vcpu;

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

pub use builder::{check_host_for, max_memory_mib, run_vm, validate};
pub use host::{probe_host, probe_host_for, HostVirt, KvmKind, PVM_NOTICE};

/// The default kernel arguments: quiet, no probing of hardware we do not emulate, reboot
/// through the i8042 (which stops the VM), and reboot at once on panic.
pub const DEFAULT_CMDLINE: &str =
    "console=ttyS0 quiet reboot=k panic=-1 no_timer_check pci=off nomodule \
i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd tsc=reliable";

/// Largest vCPU count (the MP table lives in the 1 KiB EBDA).
pub const MAX_VCPUS: u8 = mptable::MAX_VCPUS;

/// One virtio-blk disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    pub path: PathBuf,
    pub read_only: bool,
}

/// Where the guest's serial console goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SerialOutput {
    /// Discarded (the default: fastest boot, nothing to clean up).
    #[default]
    None,
    /// Appended to a file.
    File(PathBuf),
    /// The monitor's stdout, with its stdin as the console's input (`husk vm boot --debug`;
    /// a terminal is switched to char-at-a-time without echo while the VM runs).
    Stdout,
}

#[derive(Debug)]
pub struct VmConfig {
    /// ELF vmlinux or bzImage.
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// The full kernel command line (see [`DEFAULT_CMDLINE`]); virtio_mmio entries are appended.
    pub cmdline: String,
    pub memory_mib: u32,
    pub vcpus: u8,
    pub disks: Vec<DiskConfig>,
    /// Host end of the virtio-console port, when the guest should have one.
    pub console: Option<UnixStream>,
    pub serial: SerialOutput,
    /// Most bytes of guest console output a [`SerialOutput::File`] takes (a note of the cut
    /// follows): the guest decides what it prints, the host's disk must not be its to fill.
    pub serial_limit: u64,
    /// Enter the monitor jail ([`jail`]) once everything is open, and filter the calling
    /// thread too: only for a process that exists to be this VM's monitor.
    pub jail: bool,
    /// virtio-fs shares, each served by a vhost-user daemon (virtiofsd) at `socket`.
    pub shares: Vec<FsShare>,
    /// What the monitor's seccomp filters do with a system call they do not allow.
    pub seccomp: SeccompMode,
    /// A virtio-net device over this tap, when the container is on a network.
    pub net: Option<NetConfig>,
}

/// The guest's network interface: a tap husk opened and put on the network's bridge, and the
/// MAC and MTU the guest's driver reads from the device.
#[derive(Debug)]
pub struct NetConfig {
    pub tap: std::fs::File,
    pub mac: [u8; 6],
    pub mtu: u16,
}

/// The monitor's seccomp mismatch action: kill the monitor (the default), or, for debugging a
/// filter, allow and log to the kernel audit log, or no filter at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SeccompMode {
    #[default]
    Kill,
    Log,
    Off,
}

impl SeccompMode {
    pub fn name(self) -> &'static str {
        match self {
            SeccompMode::Kill => "kill",
            SeccompMode::Log => "log",
            SeccompMode::Off => "off",
        }
    }
}

impl std::str::FromStr for SeccompMode {
    type Err = VmmError;

    fn from_str(text: &str) -> Result<Self, VmmError> {
        match text {
            "" | "kill" => Ok(SeccompMode::Kill),
            "log" => Ok(SeccompMode::Log),
            "off" => Ok(SeccompMode::Off),
            other => Err(VmmError::Config(format!(
                "monitor seccomp {other:?}: expected kill, log or off"
            ))),
        }
    }
}

/// One virtio-fs device: the tag the guest mounts and the daemon's vhost-user socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsShare {
    pub tag: String,
    pub socket: PathBuf,
}

/// The default [`VmConfig::serial_limit`]: enough for any boot log and a panic's trace.
pub const SERIAL_LOG_LIMIT: u64 = 1 << 20;

impl VmConfig {
    /// A 1-vCPU, 128 MiB VM with the default command line and no devices.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        VmConfig {
            kernel: kernel.into(),
            initrd: None,
            cmdline: DEFAULT_CMDLINE.to_string(),
            memory_mib: 128,
            vcpus: 1,
            disks: Vec::new(),
            console: None,
            serial: SerialOutput::None,
            serial_limit: SERIAL_LOG_LIMIT,
            jail: false,
            shares: Vec::new(),
            seccomp: SeccompMode::Kill,
            net: None,
        }
    }
}

/// Why the VM stopped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExitReason {
    /// The guest asked for a reset (i8042 0xFE, Linux `reboot`): the normal way out.
    Reset,
    /// The guest kernel panicked (seen on the console) and rebooted (`panic=-1`).
    Panic,
    /// A host signal (SIGTERM/SIGINT) stopped the monitor.
    Signal(i32),
    /// Triple fault or a KVM shutdown event.
    Shutdown,
    /// A vCPU executed HLT with nothing to wake it (no in-kernel irqchip exit).
    Halt,
    /// The monitor could not continue running the guest.
    Fault(String),
}

/// How a VM run ended; a jailed monitor process hands it to its supervisor as JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VmExit {
    pub reason: ExitReason,
    /// Wall time from `run_vm` entry to the stop.
    pub runtime: Duration,
    /// From `run_vm` entry to the first exit out of guest mode (for a guest whose first
    /// instructions do port I/O: monitor start to first guest instruction).
    pub first_exit: Option<Duration>,
    /// The exits of the whole run, by reason.
    pub exits: exits::ExitReport,
    /// Which vCPU stopped the VM and where, when a vCPU did.
    pub detail: Option<String>,
}

/// What a monitor process (`husk vm boot --report-fd`) writes to its supervisor as it ends.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum MonitorReport {
    Exited(VmExit),
    Failed(String),
}

impl VmExit {
    /// A process-style exit status: 0 for a clean reset, 128+N for signal N, 1 otherwise.
    pub fn status(&self) -> i32 {
        match self.reason {
            ExitReason::Reset => 0,
            ExitReason::Signal(n) => 128 + n,
            _ => 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("invalid VM configuration: {0}")]
    Config(String),
    #[error("{0}")]
    PvmHost(&'static str),
    #[error("/dev/kvm: {0} (is KVM available and accessible?)")]
    KvmOpen(kvm_ioctls::Error),
    #[error("KVM {op}: {source}")]
    Kvm {
        op: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("cannot allocate {mib} MiB of guest memory: {source}")]
    Memory { mib: u32, source: vm_memory::Error },
    #[error(transparent)]
    Share(devices::vhost_user_fs::VhostFsError),
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    #[error(transparent)]
    Cpu(#[from] cpu::CpuError),
    #[error(transparent)]
    MpTable(#[from] mptable::MpTableError),
    #[error(transparent)]
    Block(#[from] devices::virtio_block::BlockError),
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    #[error(transparent)]
    Signals(#[from] host_signals::SignalError),
    #[error(transparent)]
    Jail(#[from] jail::JailError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("spawning the {0} thread failed")]
    Thread(&'static str),
}
