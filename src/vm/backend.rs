//! VM isolation end to end: a container's OCI spec and image layers become a microVM (the
//! image as a read-only disk, the container's writable disk, our guest kernel and the agent in
//! an initramfs) whose agent runs the container's process.
//!
//! The hypervisor is husk's own monitor (src/vmm) by default. On hosts where it cannot boot a
//! stock guest kernel (PVM hosts, no /dev/kvm) `HUSK_VMM=qemu` runs the very same guest, disks
//! and agent protocol under QEMU's microvm machine instead, so VM isolation can be used and
//! taught there too, at emulation speed.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use oci_spec::runtime::Spec;
use rootfs_agent::client::{AgentClient, Process, ProcessIo};
use rootfs_agent::protocol::{
    GuestLimits, GuestMount, GuestNetwork, ProcessSpec, Rlimit, StartRequest,
};

use super::monitor_process::MonitorProcess;
use super::qemu::{QemuConfig, QemuGuest};
use super::virtiofs::{self, Daemon, Share};
use super::{connect_agent, image_disk, initramfs, locate_agent, writable_disk, VmError};
use crate::container::spec::SpecOptions;
use crate::process::user;
use crate::vmm;

/// Guest RAM when no memory limit is given.
pub const DEFAULT_MEMORY_MIB: u32 = 256;
/// Guest RAM beside a memory limit, for the guest's kernel, agent and page cache: the guest
/// gets the limit plus this, so that the container's own cgroup fills first and its process
/// is OOM-killed as on the host. With the limit as the whole guest, the guest as a whole ran
/// out at about half the limit (the guest kernel's global OOM killer, or a guest thrashing on
/// its page cache for minutes under emulation).
pub const GUEST_OVERHEAD_MIB: u32 = 64;
/// How long a guest may take from power-on to the agent's Ready.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the VM may take to power off after the container process exited.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Which monitor runs the guest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Hypervisor {
    /// husk's own KVM monitor (src/vmm).
    #[default]
    Husk,
    /// QEMU's microvm machine (KVM when it can, else TCG emulation).
    Qemu,
}

impl Hypervisor {
    /// `husk` or `qemu` (HUSK_VMM's values); empty is husk.
    pub fn parse(text: &str) -> Result<Self, VmError> {
        match text {
            "" | "husk" => Ok(Self::Husk),
            "qemu" => Ok(Self::Qemu),
            other => Err(VmError::Invalid(format!(
                "HUSK_VMM={other}: use husk (husk's own monitor) or qemu"
            ))),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Husk => "husk",
            Self::Qemu => "qemu",
        }
    }
}

/// Guest RAM for a container memory limit in bytes (see [`GUEST_OVERHEAD_MIB`]).
pub fn guest_memory_mib(limit_bytes: Option<u64>) -> u32 {
    match limit_bytes {
        None => DEFAULT_MEMORY_MIB,
        Some(bytes) => u32::try_from(bytes.div_ceil(1 << 20))
            .unwrap_or(u32::MAX)
            .saturating_add(GUEST_OVERHEAD_MIB),
    }
}

/// Guest size from the container's flags: `--memory` plus the guest's own overhead is guest
/// RAM, `--cpus` rounds up to vCPUs.
pub fn guest_size(options: &SpecOptions) -> Result<(u32, u8), VmError> {
    let memory_mib = guest_memory_mib(options.memory_bytes.map(|b| b.max(0) as u64));
    let vcpus = match options.nano_cpus {
        None => 1,
        Some(nano) => u8::try_from((nano + 999_999_999) / 1_000_000_000)
            .unwrap_or(u8::MAX)
            .clamp(1, vmm::MAX_VCPUS),
    };
    Ok((memory_mib, vcpus))
}

/// Everything a guest boots from, prepared on the host.
#[derive(Debug, Clone)]
pub struct VmPlan {
    pub hypervisor: Hypervisor,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The image's read-only disk; None when the root is shared over virtio-fs instead.
    pub image_disk: Option<PathBuf>,
    /// The container's writable disk; None with a shared root.
    pub writable_disk: Option<PathBuf>,
    pub memory_mib: u32,
    pub vcpus: u8,
    /// The guest's serial console (kernel log), kept next to the container for diagnosis.
    pub serial_log: PathBuf,
    /// A short directory for the QEMU agent socket (unix socket paths are limited to 108 bytes).
    pub runtime_dir: PathBuf,
    /// Host directories served over virtio-fs (volumes and binds), one daemon each.
    pub shares: Vec<Share>,
    /// What the agent mounts, in order: the shares by tag, and tmpfs mounts.
    pub guest_mounts: Vec<GuestMount>,
    /// Where the virtio-fs daemons write their messages.
    pub share_log: PathBuf,
    /// The virtio-fs daemon (when there are shares).
    pub virtiofsd: Option<PathBuf>,
    /// What husk's monitor does with a system call outside its seccomp allow-list.
    pub monitor_seccomp: vmm::SeccompMode,
    /// The host's KVM is hardware-assisted (QEMU then uses it rather than TCG).
    pub hardware_kvm: bool,
}

/// Check the host, then build (or reuse) the disks and initramfs for one container.
pub fn plan(
    settings: &super::VmSettings,
    root: &Path,
    container_dir: &Path,
    container_id: &str,
    image_id: &str,
    layers: &[PathBuf],
    options: &SpecOptions,
) -> Result<VmPlan, VmError> {
    let hypervisor = settings.hypervisor;
    let (kernel, hardware_kvm) = guest_kernel(settings)?;
    let (memory_mib, vcpus) = guest_size(options)?;
    let agent = locate_agent(settings.agent.as_deref())?;
    let (shares, guest_mounts) = virtiofs::plan_mounts(&options.mounts);
    // A missing daemon is one line before anything is built.
    let virtiofsd = if shares.is_empty() {
        None
    } else {
        Some(virtiofs::locate_daemon(settings.virtiofsd.as_deref())?)
    };
    let runtime_dir = PathBuf::from("/run/husk").join(&container_id[..12.min(container_id.len())]);
    std::fs::create_dir_all(&runtime_dir).map_err(VmError::io("creating", &runtime_dir))?;
    Ok(VmPlan {
        hypervisor,
        kernel,
        initrd: initramfs(root, &agent)?,
        image_disk: Some(image_disk(root, image_id, layers)?),
        writable_disk: Some(writable_disk(
            container_dir,
            super::DEFAULT_WRITABLE_DISK_BYTES,
        )?),
        memory_mib,
        vcpus,
        serial_log: container_dir.join("serial.log"),
        runtime_dir,
        shares,
        guest_mounts,
        share_log: container_dir.join("virtiofsd.log"),
        virtiofsd,
        monitor_seccomp: settings.monitor_seccomp,
        hardware_kvm,
    })
}

/// The guest kernel to boot, and whether the host's KVM is hardware-assisted; refused in one
/// line when husk's own monitor cannot run here.
fn guest_kernel(settings: &super::VmSettings) -> Result<(PathBuf, bool), VmError> {
    let host = vmm::probe_host_for(settings.kernel.clone());
    let kernel = match settings.hypervisor {
        Hypervisor::Husk => {
            if let Some(blocker) = host.blocker() {
                return Err(VmError::Invalid(format!(
                    "{blocker} (or run the guest under QEMU with HUSK_VMM=qemu)"
                )));
            }
            host.guest_kernel.clone()
        }
        Hypervisor::Qemu => host.guest_kernel.clone(),
    }
    .ok_or_else(|| {
        VmError::Invalid(
            "no guest kernel: build one with guest-kernel/build.sh or set HUSK_KERNEL".into(),
        )
    })?;
    Ok((kernel, host.kind == vmm::KvmKind::Hardware))
}

/// What a guest booted from a host directory needs: an OCI bundle's root, which husk-runc
/// shares over virtio-fs as the guest's root (no disks), plus the bundle's own binds.
pub struct SharedRootGuest<'a> {
    pub rootfs: &'a Path,
    pub read_only: bool,
    pub memory_mib: u32,
    pub vcpus: u8,
    /// Further shares and the guest mounts of the bundle (binds, tmpfs).
    pub shares: Vec<Share>,
    pub guest_mounts: Vec<GuestMount>,
}

/// The plan for a guest whose root is a shared host directory; the files it keeps (console
/// log, daemon log) go into `state_dir`, its sockets into a directory named by `key`.
pub fn plan_shared_root(
    settings: &super::VmSettings,
    root: &Path,
    state_dir: &Path,
    key: &str,
    guest: SharedRootGuest,
) -> Result<VmPlan, VmError> {
    let (kernel, hardware_kvm) = guest_kernel(settings)?;
    let agent = locate_agent(settings.agent.as_deref())?;
    let virtiofsd = virtiofs::locate_daemon(settings.virtiofsd.as_deref())?;
    let mut shares = vec![Share {
        tag: rootfs_agent::protocol::ROOT_SHARE_TAG.to_string(),
        source: guest.rootfs.to_path_buf(),
        read_only: guest.read_only,
    }];
    shares.extend(guest.shares);
    let runtime_dir = PathBuf::from("/run/husk").join(key);
    std::fs::create_dir_all(&runtime_dir).map_err(VmError::io("creating", &runtime_dir))?;
    Ok(VmPlan {
        hypervisor: settings.hypervisor,
        kernel,
        initrd: initramfs(root, &agent)?,
        image_disk: None,
        writable_disk: None,
        memory_mib: guest.memory_mib,
        vcpus: guest.vcpus.clamp(1, vmm::MAX_VCPUS),
        serial_log: state_dir.join("serial.log"),
        runtime_dir,
        shares,
        guest_mounts: guest.guest_mounts,
        share_log: state_dir.join("virtiofsd.log"),
        virtiofsd: Some(virtiofsd),
        monitor_seccomp: settings.monitor_seccomp,
        hardware_kvm,
    })
}

/// The agent's view of the container, from the OCI spec: its process and the sandbox-wide
/// settings the agent applies in the guest as the process backend does on the host.
pub fn start_request(
    spec: &Spec,
    layers: &[PathBuf],
    mounts: &[GuestMount],
    network: Option<&crate::network::NetworkJoin>,
) -> Result<StartRequest, VmError> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| VmError::Invalid("the runtime spec has no process".into()))?;
    let terminal = process.terminal().unwrap_or(false);
    let linux = spec.linux().as_ref();
    let resources = linux.and_then(|l| l.resources().as_ref());
    Ok(StartRequest {
        process: process_spec(
            spec,
            process,
            layers,
            terminal.then(terminal_size).flatten(),
        )?,
        hostname: spec.hostname().clone(),
        // `--read-only`: the guest's root mount goes read-only before the process starts.
        readonly_root: spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false),
        mounts: mounts.to_vec(),
        masked_paths: linux
            .and_then(|l| l.masked_paths().clone())
            .unwrap_or_default(),
        readonly_paths: linux
            .and_then(|l| l.readonly_paths().clone())
            .unwrap_or_default(),
        // The guest has its own /sys; it is read-only when the spec's sysfs mount is.
        readonly_sysfs: spec.mounts().iter().flatten().any(|m| {
            m.destination() == Path::new("/sys") && m.options().iter().flatten().any(|o| o == "ro")
        }),
        limits: GuestLimits {
            pids_max: resources
                .and_then(|r| r.pids().as_ref())
                .map(|p| p.limit())
                .filter(|&n| n > 0)
                .map(|n| n as u64),
            memory_max: resources
                .and_then(|r| r.memory().as_ref())
                .and_then(|m| m.limit())
                .filter(|&n| n > 0)
                .map(|n| n as u64),
        },
        sysctls: spec
            .linux()
            .as_ref()
            .and_then(|l| l.sysctl().as_ref())
            .map(|sysctls| {
                sysctls
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        network: network.and_then(|join| {
            join.tap().map(|(_, interface)| GuestNetwork {
                address: interface.ip,
                prefix: interface.prefix,
                gateway: Some(interface.gateway),
                mtu: interface.mtu,
                hosts: Some(join.hosts.clone()),
                resolv: Some(join.resolv.clone()),
            })
        }),
        start_hooks: Vec::new(),
        hook_state: String::new(),
    })
}

/// One process of the container as the agent runs it, `Start`'s or an `exec`'s: command,
/// identity (names resolved against the image), rlimits, umask, and the confinement the
/// process backend applies on the host: all five capability sets, no_new_privs and the
/// seccomp profile, compiled here by the same code.
pub fn process_spec(
    spec: &Spec,
    process: &oci_spec::runtime::Process,
    layers: &[PathBuf],
    console_size: Option<(u16, u16)>,
) -> Result<ProcessSpec, VmError> {
    let user = match process.user().username().clone() {
        Some(name) => resolve_user(&name, layers)?,
        None => user::ResolvedUser {
            uid: process.user().uid(),
            gid: process.user().gid(),
            additional_gids: Vec::new(),
            home: None,
        },
    };
    let (uid, gid, mut additional_gids) = (user.uid, user.gid, user.additional_gids);
    additional_gids.extend(process.user().additional_gids().iter().flatten().copied());
    let mut env = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        // As the process backend does: the user's home from passwd, else /.
        let home = user.home.filter(|h| !h.is_empty());
        env.push(format!("HOME={}", home.as_deref().unwrap_or("/")));
    }
    let rlimits = process
        .rlimits()
        .iter()
        .flatten()
        .map(|r| Rlimit {
            kind: crate::process::rlimit_name(r.typ()),
            soft: r.soft(),
            hard: r.hard(),
        })
        .collect();
    let capabilities = process
        .capabilities()
        .as_ref()
        .map(crate::process::capability_names);
    let seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(profile) => crate::process::seccomp::compile(profile)
            .map(|programs| crate::process::seccomp::to_instructions(&programs))
            .map_err(|e| VmError::Invalid(e.to_string()))?,
        None => Vec::new(),
    };
    let terminal = process.terminal().unwrap_or(false);
    Ok(ProcessSpec {
        args: process.args().clone().unwrap_or_default(),
        env,
        cwd: process.cwd().display().to_string(),
        uid,
        gid,
        additional_gids,
        rlimits,
        terminal,
        console_size: console_size.filter(|_| terminal),
        capabilities,
        no_new_privs: process.no_new_privileges().unwrap_or(false),
        seccomp,
        umask: process.user().umask(),
    })
}

/// A user name (or uid[:gid]) resolved on the host against the image's /etc/passwd and
/// /etc/group (the topmost layer that has them).
pub fn resolve_user(name: &str, layers: &[PathBuf]) -> Result<user::ResolvedUser, VmError> {
    let etc = layers
        .iter()
        .rev()
        .find(|layer| layer.join("etc/passwd").is_file())
        .cloned()
        .unwrap_or_else(|| PathBuf::from("/nonexistent"));
    user::resolve(name, &etc).map_err(|e| VmError::Invalid(e.to_string()))
}

pub use crate::process::terminal_size;

enum Monitor {
    Husk(MonitorProcess),
    Qemu(QemuGuest),
}

/// A booted guest whose agent is ready.
pub struct Guest {
    client: Arc<AgentClient>,
    monitor: Option<Monitor>,
    /// The virtio-fs daemons; stopped after the monitor, in `drop` (which `shutdown` ends in).
    daemons: Vec<Daemon>,
    runtime_dir: PathBuf,
}

impl Guest {
    /// Power the guest on and wait for its agent.
    /// `nic` is the container's tap and the guest's interface, when it is on a network.
    pub fn boot(
        plan: &VmPlan,
        nic: Option<Nic>,
        cost: &crate::cost::CostRecorder,
    ) -> Result<Guest, VmError> {
        let daemons = virtiofs::start_daemons(
            plan.virtiofsd.as_deref(),
            &plan.shares,
            &plan.runtime_dir,
            &plan.share_log,
        )?;
        let (conn, monitor) = match plan.hypervisor {
            Hypervisor::Husk => boot_husk(plan, &daemons, nic)?,
            Hypervisor::Qemu => boot_qemu(plan, &daemons, nic)?,
        };
        cost.begin(crate::cost::Phase::Boot); // cost ledger: the VMM is up
        conn.set_read_timeout(Some(BOOT_TIMEOUT))
            .map_err(VmError::io("configuring", Path::new("agent socket")))?;
        let guest = Guest {
            client: match connect_agent(
                conn.try_clone()
                    .map_err(VmError::io("cloning", Path::new("agent socket")))?,
            ) {
                Ok(client) => Arc::new(client),
                Err(err) => {
                    let stopped = stop_unready_monitor(monitor)
                        .map(|why| format!("; {why}"))
                        .unwrap_or_default();
                    let log = std::fs::read_to_string(&plan.serial_log).unwrap_or_default();
                    let last = log.lines().last().unwrap_or("(the guest printed nothing)");
                    return Err(VmError::Agent(format!(
                        "the guest never became ready ({err}){stopped}; last console line: {last}"
                    )));
                }
            },
            monitor: Some(monitor),
            daemons,
            runtime_dir: plan.runtime_dir.clone(),
        };
        // Booted: from now on the session has no deadline (a container may run for days).
        conn.set_read_timeout(None)
            .map_err(VmError::io("configuring", Path::new("agent socket")))?;
        Ok(guest)
    }

    /// The host pid that holds the VM: QEMU's, or that of husk's monitor process.
    pub fn monitor_pid(&self) -> i32 {
        match &self.monitor {
            Some(Monitor::Qemu(guest)) => guest.pid() as i32,
            Some(Monitor::Husk(monitor)) => monitor.pid() as i32,
            None => std::process::id() as i32,
        }
    }

    pub fn start(&self, request: &StartRequest, io: ProcessIo) -> Result<Process, VmError> {
        Ok(self.client.start(request, io)?)
    }

    pub fn exec(&self, spec: &ProcessSpec, io: ProcessIo) -> Result<Process, VmError> {
        Ok(self.client.exec(spec, io)?)
    }

    /// What the agent said when it was ready (guest kernel, boot timings).
    pub fn ready(&self) -> &rootfs_agent::protocol::ReadyInfo {
        self.client.ready()
    }

    /// The agent session, for serving `exec` requests while the container runs.
    pub fn agent(&self) -> Arc<AgentClient> {
        Arc::clone(&self.client)
    }

    /// Wait for the VM to power off after its container process ended (the agent syncs the
    /// writable disk and resets the VM); force it off if it does not.
    pub fn shutdown(mut self, cost: &crate::cost::CostRecorder) {
        match self.monitor.take() {
            Some(Monitor::Husk(mut monitor)) => {
                // A monitor that did not stop is stopped as it drops.
                let stopped = monitor.wait_exit(SHUTDOWN_TIMEOUT);
                if let Some(Ok(exit)) = stopped.then(|| monitor.report()) {
                    cost.note_vm_exits(&exit.exits);
                }
            }
            Some(Monitor::Qemu(mut guest)) => {
                let _ = guest.wait_exit(SHUTDOWN_TIMEOUT);
                guest.kill();
            }
            None => {}
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        stop_monitor(&mut self.monitor);
        for daemon in &mut self.daemons {
            daemon.stop();
        }
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
    }
}

fn stop_monitor(monitor: &mut Option<Monitor>) {
    match monitor {
        Some(Monitor::Qemu(guest)) => guest.kill(),
        Some(Monitor::Husk(monitor)) => monitor.stop(),
        None => {}
    }
}

/// Stop a monitor whose guest never became ready, and say why husk's own monitor stopped when
/// it has (the guest's console holds nothing for a fault before its first output).
fn stop_unready_monitor(monitor: Monitor) -> Option<String> {
    match monitor {
        Monitor::Qemu(mut guest) => {
            guest.kill();
            None
        }
        Monitor::Husk(mut monitor) => {
            if !monitor.wait_exit(Duration::from_secs(1)) {
                monitor.stop();
                return Some("the monitor was still running; stopped".into());
            }
            Some(match monitor.report() {
                Ok(exit) => format!(
                    "the VM stopped: {} after {:.1}s ({})",
                    exit.detail.unwrap_or_else(|| format!("{:?}", exit.reason)),
                    exit.runtime.as_secs_f64(),
                    exit.exits.summary()
                ),
                Err(why) => why,
            })
        }
    }
}

/// A VM container's network device: the tap on its network's bridge, and the guest
/// interface's MAC and MTU.
#[derive(Clone, Copy)]
pub struct Nic<'a> {
    pub tap: &'a std::fs::File,
    pub mac: [u8; 6],
    pub mtu: u16,
}

impl Nic<'_> {
    pub fn mac_text(&self) -> String {
        self.mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

fn boot_husk(
    plan: &VmPlan,
    daemons: &[Daemon],
    nic: Option<Nic>,
) -> Result<(UnixStream, Monitor), VmError> {
    let (host_end, guest_end) =
        UnixStream::pair().map_err(VmError::io("creating", Path::new("agent socketpair")))?;
    let monitor = MonitorProcess::spawn(plan, guest_end, daemons, nic)?;
    Ok((host_end, Monitor::Husk(monitor)))
}

fn boot_qemu(
    plan: &VmPlan,
    daemons: &[Daemon],
    nic: Option<Nic>,
) -> Result<(UnixStream, Monitor), VmError> {
    let mut config = QemuConfig::new(&plan.kernel, &plan.initrd, Path::new(""), &plan.runtime_dir);
    config.image_disk = plan.image_disk.clone();
    config.writable_disk = plan.writable_disk.clone();
    config.memory_mib = plan.memory_mib;
    config.cpus = plan.vcpus;
    config.kvm = plan.hardware_kvm;
    config.serial_log = Some(plan.serial_log.clone());
    config.shares = daemons
        .iter()
        .map(|d| (d.tag.clone(), d.socket.clone()))
        .collect();
    config.net = nic.map(|nic| (std::os::fd::AsRawFd::as_raw_fd(nic.tap), nic.mac_text()));
    let (guest, conn) = QemuGuest::boot(&config)?;
    Ok((conn, Monitor::Qemu(guest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_limit_gets_the_guests_overhead_on_top() {
        assert_eq!(guest_memory_mib(None), DEFAULT_MEMORY_MIB);
        assert_eq!(guest_memory_mib(Some(64 << 20)), 64 + GUEST_OVERHEAD_MIB);
        // A part of a MiB is a whole one: the guest never holds less than the limit.
        assert_eq!(
            guest_memory_mib(Some((6 << 20) + 1)),
            7 + GUEST_OVERHEAD_MIB
        );
        assert_eq!(guest_memory_mib(Some(u64::MAX)), u32::MAX);
    }
}
