//! VM isolation through husk-runc: the bundle's root directory becomes the root of a microVM
//! (shared over virtio-fs, as Kata shares it, so podman and containerd see the container's
//! writes where they look), and a holder process keeps the VM.
//!
//! `create` starts the holder (`husk-runc __vm-hold`, a re-exec of this binary) with the
//! caller's stdio and waits until it says the guest's agent is ready. The holder is the
//! container's pid in `state`: it joins the container's cgroup (so `delete`, `pause` and
//! `ps` cover the monitor and the virtio-fs daemons with it), boots the guest through the same
//! VM backend as `husk run --isolation vm`, and waits at the start gate. `start` opens the
//! gate and the holder has the agent run the process; from then on it relays signals to the
//! guest process and serves exec requests (the supervisor of vm/supervisor.rs), and exits with
//! the process's code, which is what conmon and the containerd shim reap. A holder killed
//! with SIGKILL takes the monitor along (PDEATHSIG).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::sys::signal::{SigSet, Signal};
use oci_spec::runtime::{LinuxResources, Process, Spec};
use rootfs_agent::protocol::{GuestHook, GuestMount, GuestMountKind, GuestNetwork};
use sha2::{Digest, Sha256};

use super::{io, OciError, GATE_FILE};
use crate::network::netns_link::{take_over, NetnsLink};
use crate::process::{send_fd, Cgroup, CgroupLayout, ProcessError};
use crate::vm::backend::{self, Guest, Nic, SharedRootGuest};
use crate::vm::control::{self, ExecRequest};
use crate::vm::supervisor::{self, Supervision};
use crate::vm::virtiofs::Share;
use crate::vm::{VmError, VmSettings};

/// Where the holder tells `create` that the guest is ready ("ok") or why it is not.
const READY_FD: RawFd = 3;
/// The virtio-fs tag of the staged copies of the bundle's file binds.
const FILES_TAG: &str = "husk-files";
/// Mount points the guest kernel fills itself (the agent mounts them at boot): the spec's
/// entries for them describe the host's view, which a VM does not share.
const GUEST_OWN_MOUNTS: [&str; 7] = [
    "/proc",
    "/sys",
    "/sys/fs/cgroup",
    "/dev",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
];
/// The largest file bind copied into the guest (podman's /etc/hosts, /run/.containerenv).
const MAX_STAGED_FILE: u64 = 1 << 20;

/// A short name for a husk-runc VM container, for its control socket and runtime dir (both
/// under /run/husk, keyed by 12 characters): `r` and hex, never a husk container's hex id.
pub fn key(root: &Path, id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(root.as_os_str().as_encoded_bytes());
    hasher.update([0]);
    hasher.update(id.as_bytes());
    format!("r{}", &hex::encode(hasher.finalize())[..11])
}

/// Where husk-runc keeps its VM caches (initramfs): husk's own root, HUSK_ROOT or
/// /var/lib/husk, not the runtime root, whose entries are container ids.
fn cache_root() -> PathBuf {
    std::env::var_os("HUSK_ROOT")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/husk"))
}

/// What the holder needs, passed on its command line.
pub struct HoldArgs {
    pub root: PathBuf,
    pub id: String,
    pub rootfs: PathBuf,
    pub cgroup: String,
    pub console_socket: Option<PathBuf>,
}

/// Refuse what a VM container through husk-runc cannot honour, before anything starts.
pub fn refuse_unsupported(spec: &Spec) -> Result<(), OciError> {
    // Device cgroup rules are moot in a guest that has none of the host's devices; a device
    // node the spec asks for beyond the standard ones the guest has is refused.
    let standard = [
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/tty",
        "/dev/ptmx",
    ];
    if let Some(device) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .and_then(|d| {
            d.iter()
                .find(|d| !standard.contains(&d.path().to_string_lossy().as_ref()))
        })
    {
        return Err(OciError::Unsupported(format!(
            "host device {} cannot be given to a VM container: the guest has its own devices",
            device.path().display()
        )));
    }
    Ok(())
}

/// Start the holder for a new VM container and wait until its guest is ready; returns its
/// pid. On failure nothing of it is left running.
pub fn spawn_holder(args: &HoldArgs, dir: &Path) -> Result<i32, OciError> {
    let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| io("creating", Path::new("the holder's ready pipe"))(e.into()))?;
    let mut command = std::process::Command::new("/proc/self/exe");
    command
        .arg0("husk-runc")
        .arg("--root")
        .arg(&args.root)
        .arg("__vm-hold")
        .arg("--rootfs")
        .arg(&args.rootfs)
        .arg("--cgroup")
        .arg(&args.cgroup);
    if let Some(socket) = &args.console_socket {
        command.arg("--console-socket").arg(socket);
    }
    command.arg(&args.id);
    let ready_fd = ready_write.as_raw_fd();
    // SAFETY: between fork and exec the closure only calls async-signal-safe functions (dup2)
    // on a descriptor that stays open until `spawn` returns.
    unsafe {
        command.pre_exec(move || {
            // dup2 leaves the copy without FD_CLOEXEC: exactly this one crosses exec.
            if libc::dup2(ready_fd, READY_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(io("starting", Path::new("the VM holder")))?;
    drop(ready_write);
    // One line: "ok", or why not.
    let mut said = String::new();
    let _ = std::io::BufRead::read_line(
        &mut std::io::BufReader::new(File::from(ready_read).take(64 << 10)),
        &mut said,
    );
    if said.trim() == "ok" {
        return Ok(child.id() as i32);
    }
    let _ = child.kill();
    let _ = child.wait();
    cleanup(&args.root, &args.id, &args.cgroup);
    let _ = std::fs::remove_file(dir.join(GATE_FILE));
    let why = said.trim();
    Err(OciError::Unsupported(if why.is_empty() {
        "the VM holder stopped before its guest was ready".to_string()
    } else {
        why.to_string()
    }))
}

/// What a VM container leaves outside its state dir once its holder is gone: its cgroup (with
/// any monitor or daemon still in it), its runtime dir and control socket.
pub fn cleanup(root: &Path, id: &str, cgroup: &str) {
    if let Ok(cgroup) = CgroupLayout::detect().and_then(|layout| Cgroup::open(layout, cgroup)) {
        let _ = cgroup.destroy();
    }
    let key = key(root, id);
    let _ = std::fs::remove_dir_all(Path::new("/run/husk").join(&key));
    let _ = std::fs::remove_file(supervisor::control_socket(&key));
}

/// The holder's life: returns its exit code (the container process's, or 1 when the guest
/// never ran it). Runs as its own process (`__vm-hold`), fd 3 the ready pipe.
pub fn hold(args: &HoldArgs) -> i32 {
    // SAFETY: READY_FD was placed by spawn_holder for this process alone.
    let mut ready = unsafe { File::from_raw_fd(READY_FD) };
    // Not for the monitor and daemons this process starts: `create` waits for it to close.
    let _ = nix::fcntl::fcntl(
        ready.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    // Blocked before any thread exists, so every thread inherits the mask; taken by the
    // pre-start watcher, then by the supervisor's relay.
    let mut mask = SigSet::empty();
    for signal in crate::process::FORWARDED {
        mask.add(signal);
    }
    mask.add(Signal::SIGWINCH);
    if let Err(err) = mask.thread_block() {
        let _ = writeln!(ready, "blocking signals: {err}");
        return 1;
    }
    let booted = match boot(args) {
        Ok(booted) => booted,
        Err(err) => {
            let _ = writeln!(ready, "{err}");
            return 1;
        }
    };
    let _ = ready.write_all(b"ok\n");
    drop(ready);
    let watcher = PreStartWatcher::start(mask);
    let Ok((mut gate, _)) = booted.gate.accept() else {
        return 1;
    };
    watcher.stop();
    let code = match run(args, &booted, mask) {
        Ok((process, supervision)) => {
            let _ = gate.write_all(b"1");
            drop(gate);
            let code = match process.wait_status() {
                Ok(exit) => exit.code,
                // The VM went away under the process (its monitor died): as with SIGKILL,
                // said on the container's stderr, which is where its client looks.
                Err(err) => {
                    eprintln!("husk-runc: {}: the guest went away: {err}", args.id);
                    128 + libc::SIGKILL
                }
            };
            supervision.finish();
            code
        }
        Err(err) => {
            let _ = gate.write_all(format!("0{err}").as_bytes());
            1
        }
    };
    booted.guest.shutdown(&crate::cost::CostRecorder::off());
    code
}

struct Booted {
    guest: Guest,
    spec: Spec,
    plan: backend::VmPlan,
    gate: UnixListener,
    /// The network namespace's interface joined to the guest, when the spec names one.
    network: Option<NetnsLink>,
}

fn boot(args: &HoldArgs) -> Result<Booted, OciError> {
    nix::unistd::setsid().map_err(sys("setsid"))?;
    let dir = args.root.join(&args.id);
    let spec_path = dir.join(super::SPEC_FILE);
    let spec = Spec::load(&spec_path).map_err(|e| OciError::Bundle {
        path: spec_path.clone(),
        why: e.to_string(),
    })?;
    let layout = CgroupLayout::detect()?;
    let cgroup = Cgroup::create(layout, &args.cgroup, Some(&host_resources(&spec)))?;
    cgroup.add_process(std::process::id() as i32)?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| OciError::Unsupported("the spec has no process".into()))?;
    if process.terminal().unwrap_or(false) {
        let socket = args.console_socket.as_deref().ok_or_else(|| {
            OciError::Unsupported("process.terminal is true: --console-socket is required".into())
        })?;
        let size = process
            .console_size()
            .as_ref()
            .map(|b| (b.height() as u16, b.width() as u16));
        take_terminal(socket, size)?;
    }
    let settings = VmSettings::from_env().map_err(vm)?;
    let (shares, guest_mounts) = guest_mounts(&spec, &dir)?;
    let (memory_mib, vcpus) =
        guest_size(spec.linux().as_ref().and_then(|l| l.resources().as_ref()));
    let key = key(&args.root, &args.id);
    let plan = backend::plan_shared_root(
        &settings,
        &cache_root(),
        &dir,
        &key,
        SharedRootGuest {
            rootfs: &args.rootfs,
            // Writable for the agent, which makes the mount points first and then remounts
            // the root read-only when the spec asks (StartRequest.readonly_root), as runc
            // does in the container's mount namespace.
            read_only: false,
            memory_mib,
            vcpus,
            shares,
            guest_mounts,
        },
    )
    .map_err(vm)?;
    let network = network_namespace(&spec)?
        .map(|path| {
            let netns = File::open(&path).map_err(io("opening namespace", &path))?;
            take_over(&netns).map_err(|e| {
                OciError::Unsupported(format!("network namespace {}: {e}", path.display()))
            })
        })
        .transpose()?;
    let nic = network.as_ref().map(|link| Nic {
        tap: &link.tap,
        mac: link.interface.mac,
        mtu: link.interface.mtu,
    });
    let guest = Guest::boot(&plan, nic, &crate::cost::CostRecorder::off()).map_err(vm)?;
    let gate_path = dir.join(GATE_FILE);
    let gate = UnixListener::bind(&gate_path).map_err(io("creating", &gate_path))?;
    Ok(Booted {
        guest,
        spec,
        plan,
        gate,
        network,
    })
}

/// The path of the network namespace the spec joins, if it names one (a pod's, podman's).
/// A spec that asks for a new one gives the guest only its loopback, as runc gives a new
/// namespace; a VM has its own network stack either way.
fn network_namespace(spec: &Spec) -> Result<Option<PathBuf>, OciError> {
    Ok(spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|namespaces| {
            namespaces
                .iter()
                .find(|ns| ns.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
                .and_then(|ns| ns.path().clone())
        }))
}

/// Start the container's process in the guest, with the holder's stdio (the caller's pipes,
/// or the pty whose master went over the console socket).
fn run(
    args: &HoldArgs,
    booted: &Booted,
    mask: SigSet,
) -> Result<(Arc<rootfs_agent::client::Process>, Supervision), OciError> {
    let layers = [args.rootfs.clone()];
    let mut request =
        backend::start_request(&booted.spec, &layers, &booted.plan.guest_mounts, None)
            .map_err(vm)?;
    // The address, route and MTU of the namespace's interface; /etc/hosts and resolv.conf
    // stay the bundle's binds, which the client wrote for this network.
    request.network = booted.network.as_ref().map(|link| GuestNetwork {
        address: link.interface.address,
        prefix: link.interface.prefix,
        gateway: link.interface.gateway,
        mtu: link.interface.mtu,
        hosts: None,
        resolv: None,
    });
    request.start_hooks = start_hooks(&booted.spec);
    if !request.start_hooks.is_empty() {
        let runtime = super::OciRuntime::new(args.root.clone(), super::Isolation::Vm);
        let state = super::State {
            // The pid the container's process gets in its namespace, as the hook, which
            // runs in the guest, would see it (config.md).
            pid: 1,
            status: super::Status::Created,
            ..runtime.state(&args.id)?
        };
        request.hook_state = serde_json::to_string(&state).unwrap_or_default();
    }
    // The agent tells why it could not start the process (a startContainer hook failed, the
    // command is missing) on the process's stderr, before its exit: kept for `start`.
    let mut stdio = own_stdio()?;
    let told = Arc::new(std::sync::Mutex::new(Vec::new()));
    stdio.stderr = Box::new(KeepFirst {
        inner: stdio.stderr,
        kept: Arc::clone(&told),
    });
    let process = booted.guest.start(&request, stdio).map_err(vm)?;
    if process.pid().map_err(|e| vm(e.into()))?.is_none() {
        let told = told.lock().unwrap_or_else(|p| p.into_inner());
        let why = String::from_utf8_lossy(&told);
        return Err(OciError::StartFailed(
            why.trim().trim_start_matches("husk-agent: ").to_string(),
        ));
    }
    let process = Arc::new(process);
    let supervision = Supervision::start(
        &key(&args.root, &args.id),
        mask,
        Arc::clone(&process),
        booted.guest.agent(),
    );
    Ok((process, supervision))
}

/// The spec's startContainer hooks as the guest agent runs them: the path resolved in the
/// container's root, which is the guest's.
fn start_hooks(spec: &Spec) -> Vec<GuestHook> {
    spec.hooks()
        .iter()
        .flat_map(|h| h.start_container().iter().flatten())
        .map(|hook| GuestHook {
            path: hook.path().to_string_lossy().into_owned(),
            args: hook.args().clone().unwrap_or_default(),
            env: hook.env().clone().unwrap_or_default(),
            timeout: hook
                .timeout()
                .filter(|t| *t > 0)
                .map(|t| u32::try_from(t).unwrap_or(u32::MAX)),
        })
        .collect()
}

/// A writer that passes everything on and keeps the first [`KeepFirst::LIMIT`] bytes.
struct KeepFirst {
    inner: Box<dyn Write + Send>,
    kept: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl KeepFirst {
    const LIMIT: usize = 4096;
}

impl Write for KeepFirst {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let room = Self::LIMIT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// This process's stdin, stdout and stderr as the agent client's streams.
fn own_stdio() -> Result<rootfs_agent::client::ProcessIo, OciError> {
    let dup = |fd: std::os::fd::BorrowedFd| -> Result<File, OciError> {
        fd.try_clone_to_owned()
            .map(File::from)
            .map_err(io("duplicating", Path::new("the holder's stdio")))
    };
    Ok(rootfs_agent::client::ProcessIo {
        stdin: Some(Box::new(dup(std::io::stdin().as_fd())?)),
        stdout: Box::new(dup(std::io::stdout().as_fd())?),
        stderr: Box::new(dup(std::io::stderr().as_fd())?),
    })
}

/// A new pty whose master goes over the console socket and whose slave becomes this process's
/// stdio and controlling terminal: the caller's resizes then arrive as SIGWINCH, which the
/// relay turns into the guest pty's size. The slave is raw: the guest's pty does the line
/// discipline, so bytes pass through here untouched.
fn take_terminal(console_socket: &Path, size: Option<(u16, u16)>) -> Result<(), OciError> {
    // The spec's consoleSize, as runc sets it; the caller may resize the master later.
    let winsize = size.map(|(rows, cols)| nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    });
    let pty = nix::pty::openpty(winsize.as_ref(), None).map_err(sys("openpty"))?;
    let console = UnixStream::connect(console_socket)
        .map_err(io("connecting to console socket", console_socket))?;
    send_fd(&console, pty.master.as_fd(), b"/dev/ptmx")
        .map_err(io("sending the pty over", console_socket))?;
    let mut attrs = nix::sys::termios::tcgetattr(&pty.slave).map_err(sys("tcgetattr"))?;
    nix::sys::termios::cfmakeraw(&mut attrs);
    nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &attrs)
        .map_err(sys("tcsetattr"))?;
    // SAFETY: TIOCSCTTY on a pty slave we own, from a session leader (setsid ran first).
    if unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
        return Err(sys("TIOCSCTTY")(nix::Error::last()));
    }
    for fd in 0..3 {
        nix::unistd::dup2(pty.slave.as_raw_fd(), fd).map_err(sys("dup2"))?;
    }
    drop(pty.master);
    Ok(())
}

/// Signals before `start`: the container has no process yet, so a terminating signal ends
/// the holder (and with it the VM), as it ends a created runc container's init.
struct PreStartWatcher {
    thread: nix::sys::pthread::Pthread,
    started: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<()>,
}

impl PreStartWatcher {
    fn start(mask: SigSet) -> Self {
        let started = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let flag = Arc::clone(&started);
        let handle = std::thread::spawn(move || {
            let _ = tx.send(nix::sys::pthread::pthread_self());
            while let Ok(signal) = mask.wait() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                if signal != Signal::SIGWINCH {
                    std::process::exit(128 + signal as i32);
                }
            }
        });
        let thread = rx.recv().expect("the watcher reports its id");
        PreStartWatcher {
            thread,
            started,
            handle,
        }
    }

    /// Leave the signals to the supervisor's relay from here on.
    fn stop(self) {
        self.started.store(true, Ordering::SeqCst);
        let _ = nix::sys::pthread::pthread_kill(self.thread, Signal::SIGWINCH);
        let _ = self.handle.join();
    }
}

/// The host cgroup of a VM container holds its monitor, not its processes: of the spec's
/// resources it keeps the CPU share (the vCPUs are host threads). Memory and pids bound the
/// guest instead (its RAM, and the agent's cgroup in the guest); device rules would only
/// deny the monitor /dev/kvm.
fn host_resources(spec: &Spec) -> LinuxResources {
    let mut resources = LinuxResources::default();
    if let Some(cpu) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.cpu().clone())
    {
        resources.set_cpu(Some(cpu));
    }
    resources
}

/// Guest RAM from the memory limit (plus the guest's overhead; else husk's default) and
/// vCPUs from the CPU quota.
fn guest_size(resources: Option<&LinuxResources>) -> (u32, u8) {
    let memory_mib = backend::guest_memory_mib(
        resources
            .and_then(|r| r.memory().as_ref())
            .and_then(|m| m.limit())
            .filter(|&limit| limit > 0)
            .map(|limit| limit as u64),
    );
    let cpu = resources.and_then(|r| r.cpu().as_ref());
    let vcpus = match (
        cpu.and_then(|c| c.quota()).filter(|&q| q > 0),
        cpu.and_then(|c| c.period()).filter(|&p| p > 0),
    ) {
        (Some(quota), Some(period)) => {
            u8::try_from((quota as u64).div_ceil(period)).unwrap_or(u8::MAX)
        }
        _ => 1,
    };
    (memory_mib, vcpus.clamp(1, crate::vmm::MAX_VCPUS))
}

/// The spec's mounts as the guest gets them: kernel filesystems are the guest's own;
/// directory binds become virtio-fs shares; file binds are copied into `<dir>/files`, served
/// read-only as one share and bound file by file; tmpfs stays in guest memory. Anything else
/// is refused.
pub fn guest_mounts(spec: &Spec, dir: &Path) -> Result<(Vec<Share>, Vec<GuestMount>), OciError> {
    let mut shares = Vec::new();
    let mut mounts = Vec::new();
    let files = dir.join("files");
    let mut staged = 0usize;
    for m in spec.mounts().iter().flatten() {
        let destination = m.destination().display().to_string();
        if GUEST_OWN_MOUNTS.contains(&destination.trim_end_matches('/')) {
            continue;
        }
        let options = m.options().clone().unwrap_or_default();
        let read_only = options.iter().any(|o| o == "ro");
        let is_bind = m.typ().as_deref() == Some("bind")
            || options.iter().any(|o| o == "bind" || o == "rbind");
        if m.typ().as_deref() == Some("tmpfs") && !is_bind {
            mounts.push(GuestMount {
                kind: GuestMountKind::Tmpfs,
                source: String::new(),
                target: destination,
                readonly: read_only,
                subpath: None,
            });
            continue;
        }
        if !is_bind {
            return Err(OciError::Unsupported(format!(
                "a {} mount on {destination} cannot be given to a VM container (binds, \
                 tmpfs and the kernel filesystems can)",
                m.typ().as_deref().unwrap_or("typeless")
            )));
        }
        let source = m.source().clone().unwrap_or_default();
        let meta = std::fs::metadata(&source).map_err(io("opening the bind source", &source))?;
        if meta.is_dir() {
            let tag = format!("husk-fs{}", shares.len());
            shares.push(Share {
                tag: tag.clone(),
                source,
                read_only,
            });
            mounts.push(GuestMount {
                kind: GuestMountKind::Virtiofs,
                source: tag,
                target: destination,
                readonly: read_only,
                subpath: None,
            });
        } else if meta.is_file() {
            if meta.len() > MAX_STAGED_FILE {
                return Err(OciError::Unsupported(format!(
                    "the file bind {} is {} bytes: a VM container takes file binds of at most \
                     {MAX_STAGED_FILE} (bind its directory instead)",
                    source.display(),
                    meta.len()
                )));
            }
            std::fs::create_dir_all(&files).map_err(io("creating", &files))?;
            let copy = files.join(staged.to_string());
            std::fs::copy(&source, &copy).map_err(io("copying the file bind", &source))?;
            mounts.push(GuestMount {
                kind: GuestMountKind::Virtiofs,
                source: FILES_TAG.to_string(),
                target: destination,
                readonly: read_only,
                subpath: Some(staged.to_string()),
            });
            staged += 1;
        } else {
            return Err(OciError::Unsupported(format!(
                "the bind source {} is neither a directory nor a file: a VM container has \
                 its own devices",
                source.display()
            )));
        }
    }
    if staged > 0 {
        shares.push(Share {
            tag: FILES_TAG.to_string(),
            source: files,
            read_only: true,
        });
    }
    Ok((shares, mounts))
}

/// Run `process` in a running VM container through its holder's supervisor. With `detach`
/// a child of ours does it (its pid in the pid file, its exit the process's code, as the
/// caller's subreaper reaps it); with a console socket it gets a pty of its own.
pub fn exec(
    root: &Path,
    id: &str,
    rootfs: &Path,
    spec: &Spec,
    process: &Process,
    opts: &super::ExecOptions,
) -> Result<i32, OciError> {
    let terminal = process.terminal().unwrap_or(false);
    let layers = [rootfs.to_path_buf()];
    let key = key(root, id);
    let build = |size| -> Result<ExecRequest, OciError> {
        Ok(ExecRequest {
            process: backend::process_spec(spec, process, &layers, size).map_err(vm)?,
            interactive: true,
            kill_on_hangup: false,
            session: terminal.then(control::new_session).flatten(),
        })
    };
    let relay = |request: ExecRequest| -> i32 {
        match supervisor::exec_via_supervisor(
            &key,
            request,
            Some(Box::new(std::io::stdin())),
            &mut std::io::stdout(),
            &mut std::io::stderr(),
            false,
        ) {
            Ok(code) => code,
            Err(err) => {
                eprintln!("husk-runc: exec: {err}");
                1
            }
        }
    };
    if !opts.detach && opts.console_socket.is_none() {
        let _raw = terminal.then(crate::process::enter_raw_mode).flatten();
        let request = build(terminal.then(backend::terminal_size).flatten())?;
        return Ok(relay(request));
    }
    // SAFETY: husk-runc is single-threaded here (nothing before exec starts a thread), so the
    // child may do anything the parent could.
    match unsafe { nix::unistd::fork() }.map_err(sys("fork"))? {
        nix::unistd::ForkResult::Child => {
            let code = (|| -> Result<i32, OciError> {
                nix::unistd::setsid().map_err(sys("setsid"))?;
                if terminal {
                    let socket = opts.console_socket.as_deref().ok_or_else(|| {
                        OciError::Unsupported("exec --tty --detach needs --console-socket".into())
                    })?;
                    let size = process
                        .console_size()
                        .as_ref()
                        .map(|b| (b.height() as u16, b.width() as u16));
                    take_terminal(socket, size)?;
                }
                Ok(relay(build(
                    terminal.then(backend::terminal_size).flatten(),
                )?))
            })()
            .unwrap_or_else(|err| {
                eprintln!("husk-runc: exec: {err}");
                1
            });
            std::process::exit(code);
        }
        nix::unistd::ForkResult::Parent { child } => {
            if let Some(pid_file) = &opts.pid_file {
                super::write_atomically(pid_file, child.to_string().as_bytes())?;
            }
            if opts.detach {
                return Ok(0);
            }
            Ok(super::wait_for_exit(child.as_raw()))
        }
    }
}

fn vm(err: VmError) -> OciError {
    OciError::Unsupported(err.to_string())
}

fn sys(op: &'static str) -> impl FnOnce(nix::Error) -> OciError {
    move |source| OciError::Process(ProcessError::Sys { op, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::MountBuilder;

    #[test]
    fn keys_are_short_distinct_and_not_hex_ids() {
        let a = key(Path::new("/run/husk-runc"), "c1");
        let b = key(Path::new("/run/husk-runc"), "c2");
        let c = key(Path::new("/run/other"), "c1");
        assert_eq!(a.len(), 12);
        assert!(a.starts_with('r'));
        assert!(a != b && a != c);
    }

    #[test]
    fn guest_size_follows_the_limits() {
        assert_eq!(guest_size(None), (backend::DEFAULT_MEMORY_MIB, 1));
        let resources: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":536870912},"cpu":{"quota":150000,"period":100000}}"#,
        )
        .unwrap();
        assert_eq!(
            guest_size(Some(&resources)),
            (512 + backend::GUEST_OVERHEAD_MIB, 2)
        );
    }

    #[test]
    fn mounts_split_into_the_guests_own_shares_copies_and_tmpfs() {
        let dir = tempfile::tempdir().unwrap();
        let host_dir = dir.path().join("data");
        std::fs::create_dir(&host_dir).unwrap();
        let host_file = dir.path().join("hosts");
        std::fs::write(&host_file, "127.0.0.1 localhost\n").unwrap();
        let mount = |typ: &str, source: &Path, destination: &str, options: &[&str]| {
            MountBuilder::default()
                .typ(typ)
                .source(source)
                .destination(destination)
                .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
                .build()
                .unwrap()
        };
        let mut spec = Spec::default();
        spec.set_mounts(Some(vec![
            mount("proc", Path::new("proc"), "/proc", &[]),
            mount("bind", &host_dir, "/data", &["rbind", "ro"]),
            mount("bind", &host_file, "/etc/hosts", &["bind"]),
            mount("tmpfs", Path::new("tmpfs"), "/scratch", &[]),
            mount("mqueue", Path::new("mqueue"), "/dev/mqueue", &[]),
        ]));
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let (shares, mounts) = guest_mounts(&spec, &state).unwrap();
        assert_eq!(shares.len(), 2);
        assert_eq!(
            (shares[0].source.as_path(), shares[0].read_only),
            (host_dir.as_path(), true)
        );
        assert_eq!(shares[1].tag, FILES_TAG);
        let targets: Vec<_> = mounts.iter().map(|m| m.target.as_str()).collect();
        assert_eq!(targets, ["/data", "/etc/hosts", "/scratch"]);
        assert_eq!(mounts[1].subpath.as_deref(), Some("0"));
        assert_eq!(
            std::fs::read_to_string(state.join("files/0")).unwrap(),
            "127.0.0.1 localhost\n"
        );
        assert_eq!(mounts[2].kind, GuestMountKind::Tmpfs);

        spec.set_mounts(Some(vec![mount("nfs", Path::new("srv:/x"), "/x", &[])]));
        assert!(guest_mounts(&spec, &state).is_err());
    }
}
