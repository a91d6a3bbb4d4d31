//! Process isolation: turns an OCI runtime spec plus image layer directories into a running,
//! namespaced, cgroup-limited process (like runc/crun/youki), and reports its exit code the way
//! Docker does.
//!
//! Process shape: husk creates the cgroup, then clones the container init with the new
//! namespaces, making it pid 1 of its pid namespace. A multithreaded caller first forks a
//! short-lived helper (glibc's fork resets libc locks another thread might hold) that clones
//! the init with CLONE_PARENT, so the init is husk's own child either way. The init joins the
//! cgroup itself, so no round trip with husk is needed before setup; husk learns about setup
//! or exec failures through a close-on-exec error pipe that reaches EOF at exec.

pub mod cgroup;
pub mod device_filter;
pub mod exec;
mod foreground;
mod in_root;
mod init;
pub(crate) use init::send_fd;
pub use init::{capability_names, rlimit_name};
pub mod rootfs;
pub mod seccomp;
mod trampoline;
pub mod user;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

pub use cgroup::{Cgroup, CgroupError, CgroupLayout, CgroupStats};
pub use foreground::{
    console_size, copy_window_size, enter_raw_mode, run_foreground, run_foreground_logged,
    set_window_size, terminal_size, RawModeGuard, WindowFollower, FORWARDED,
};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
pub use rootfs::RootfsError;
pub use seccomp::SeccompError;

use crate::container::spec::ANNOTATION_INTERACTIVE;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The command does not exist in the container (Docker: 127).
    #[error("{0}")]
    ExecNotFound(String),
    /// The command exists but cannot be run (Docker: 126).
    #[error("{0}")]
    NotExecutable(String),
    /// Container setup failed inside the new namespaces (message from the init).
    #[error("{0}")]
    Setup(String),
    #[error("invalid spec: {0}")]
    Spec(&'static str),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error(transparent)]
    Trampoline(#[from] trampoline::TrampolineError),
    #[error("{op}: {source}")]
    Sys {
        op: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl ProcessError {
    /// Docker's exit code for a container that could not be started.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::ExecNotFound(_) => 127,
            Self::NotExecutable(_) => 126,
            _ => 125,
        }
    }
}

impl From<init::InitFailure> for ProcessError {
    fn from(failure: init::InitFailure) -> Self {
        match failure.code {
            init::CODE_NOT_FOUND => Self::ExecNotFound(failure.message),
            init::CODE_NOT_EXECUTABLE => Self::NotExecutable(failure.message),
            _ => Self::Setup(failure.message),
        }
    }
}

fn sys(op: &'static str) -> impl FnOnce(nix::Error) -> ProcessError {
    move |source| ProcessError::Sys { op, source }
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> ProcessError {
    move |source| ProcessError::Io { op, source }
}

/// What to run and where.
pub struct LaunchConfig<'a> {
    pub spec: &'a Spec,
    /// Image layers (bottom first) for husk's own containers, or an OCI bundle's root.
    pub root: Root<'a>,
    /// Cgroup path below each hierarchy's root, e.g. "husk/<id>".
    pub cgroup_name: &'a str,
    /// stdin, stdout, stderr for a container without a terminal; None inherits husk's.
    /// stdin is /dev/null unless the spec is interactive (`-i`).
    pub stdio: Option<[BorrowedFd<'a>; 3]>,
    /// A network namespace made and configured by husk (src/network) for the init to enter
    /// instead of a fresh one, with the /etc/hosts and resolv.conf that go with it.
    pub network: Option<&'a crate::network::NetworkJoin>,
    /// A network namespace to join that someone else made (an OCI bundle's namespace path,
    /// e.g. podman's netavark namespace).
    pub netns: Option<BorrowedFd<'a>>,
    /// A listening unix socket: the init stops right before its command (everything set
    /// up, the executable found) and execs it only once a connection arrives there. This is
    /// the OCI runtime's create/start split; `spawn` returns at the stop.
    pub start_gate: Option<BorrowedFd<'a>>,
    /// OCI hooks (husk-runc): see [`LaunchHooks`]. None for husk's own containers.
    pub hooks: Option<LaunchHooks<'a>>,
}

/// The OCI hooks of a bundle, in runtime.md's order: once the init's root and mounts are in
/// place and before it pivots into them, `before_pivot` runs in the runtime (the prestart
/// and createRuntime hooks) with the init's host pid; then the init runs the spec's
/// createContainer hooks in the container's namespaces, and its startContainer hooks when
/// the start gate opens, before the command.
pub struct LaunchHooks<'a> {
    /// The container's OCI state as JSON (the init sets `pid` and `status` for its hooks).
    pub state: &'a serde_json::Value,
    /// An error fails the launch with its text.
    pub before_pivot: &'a dyn Fn(i32) -> Result<(), String>,
}

/// Where a container's root filesystem comes from (see [`rootfs::RootSource`]).
#[derive(Clone, Copy)]
pub enum Root<'a> {
    /// Image layers, bottom first, and the container dir that holds upper/, work/, rootfs/
    /// (the mountpoint) and etc/, kept until `rm`.
    Layers {
        lower_dirs: &'a [PathBuf],
        container_dir: &'a Path,
    },
    /// An OCI bundle's root directory, used in place.
    Bundle(&'a Path),
}

/// A started container: its init process and the cgroup it runs in.
#[derive(Debug)]
pub struct Container {
    pid: Pid,
    cgroup: Option<Cgroup>,
    pty_master: Option<OwnedFd>,
    exit: Option<ExitInfo>,
}

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// Docker's exit code: the command's code, or 128+N when killed by signal N.
    pub code: i32,
    /// The kernel's OOM killer acted in the container's cgroup (Docker's `OOMKilled`).
    pub oom_killed: bool,
}

/// Create namespaces, cgroup and rootfs and start the process. Returns once the command has
/// been exec'd, or with an error (see [`ProcessError::exit_code`]) after cleaning up
/// everything it set up.
pub fn spawn(cfg: &LaunchConfig) -> Result<Container, ProcessError> {
    let spec = cfg.spec;
    let process = spec
        .process()
        .as_ref()
        .ok_or(ProcessError::Spec("no process section"))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(ProcessError::Spec("process.args is empty"));
    }
    let terminal = process.terminal().unwrap_or(false);
    let interactive = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_INTERACTIVE))
        .is_some_and(|v| v == "true");
    let linux = spec.linux().as_ref();
    let seccomp = match linux.and_then(|l| l.seccomp().as_ref()) {
        Some(profile) => seccomp::compile(profile)?,
        None => Vec::new(),
    };

    let dirs = match cfg.root {
        Root::Layers { container_dir, .. } => {
            let dirs = rootfs::ContainerDirs::new(container_dir);
            dirs.create()?;
            Some(dirs)
        }
        Root::Bundle(_) => None,
    };
    let root = match (cfg.root, &dirs) {
        (Root::Layers { lower_dirs, .. }, Some(dirs)) => {
            rootfs::RootSource::Layers { lower_dirs, dirs }
        }
        (Root::Bundle(path), _) => rootfs::RootSource::Bundle(path),
        (Root::Layers { .. }, None) => unreachable!("layers always get their dirs"),
    };

    let layout = CgroupLayout::detect()?;
    let resources = linux.and_then(|l| l.resources().as_ref());
    let cgroup = Cgroup::create(layout, cfg.cgroup_name, resources)?;
    let hostname = spec.hostname().clone().unwrap_or_default();
    let plan = rootfs::RootfsPlan {
        spec,
        root,
        hostname,
        network: cfg.network.map(|n| (n.hosts.as_str(), n.resolv.as_str())),
        cgroup_v1: cgroup.v1_hierarchies(),
    };
    if let Err(err) = rootfs::write_etc_files(&plan) {
        let _ = cgroup.destroy();
        return Err(err.into());
    }
    // From here on, dropping `container` kills and reaps the init and removes the cgroup.
    let mut container = Container {
        pid: Pid::from_raw(0),
        cgroup: Some(cgroup),
        pty_master: None,
        exit: None,
    };

    let (err_read, err_write) = pipe()?;
    let resume = match cfg.hooks {
        Some(_) => Some(pipe()?),
        None => None,
    };
    let console = if terminal {
        Some(UnixStream::pair().map_err(io("creating the console socket"))?)
    } else {
        None
    };
    let (console_parent, console_child) = match console {
        Some((a, b)) => (Some(a), Some(b)),
        None => (None, None),
    };
    let mut clone_flags = namespace_clone_flags(spec);
    let netns = cfg
        .network
        .and_then(|n| n.netns())
        .map(|fd| fd.as_raw_fd())
        .or(cfg.netns.map(|fd| fd.as_raw_fd()));
    if netns.is_some() {
        // The init enters husk's namespace rather than making an empty one.
        clone_flags &= !(libc::CLONE_NEWNET as libc::c_ulong);
    }
    let init_cfg = init::InitConfig {
        spec,
        plan,
        seccomp,
        cgroup_procs: container
            .cgroup
            .as_ref()
            .map(|c| {
                c.paths()
                    .into_iter()
                    .map(|p| p.join("cgroup.procs"))
                    .collect()
            })
            .unwrap_or_default(),
        errors: err_write,
        console: console_child,
        stdio: cfg.stdio.map(|fds| fds.map(|fd| fd.as_raw_fd())),
        interactive,
        trampoline: trampoline::shared()?,
        netns,
        start_gate: cfg.start_gate.map(|fd| fd.as_raw_fd()),
        hooks: match (&cfg.hooks, &resume) {
            (Some(hooks), Some((read, write))) => Some(init::InitHooks {
                state: hooks.state,
                resume: read.as_raw_fd(),
                resume_writer: write.as_raw_fd(),
            }),
            _ => None,
        },
    };

    container.pid = if single_threaded() {
        clone_init_directly(clone_flags, init_cfg)?
    } else {
        clone_init_through_helper(clone_flags, init_cfg)?
    };

    let mut errors = std::fs::File::from(err_read);
    let mut report = Vec::new();
    if let (Some(hooks), Some((resume_read, resume_write))) = (&cfg.hooks, resume) {
        drop(resume_read);
        let mut first = [0u8; 1];
        let n = loop {
            match errors.read(&mut first) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other.map_err(io("reading the container's start report"))?,
            }
        };
        if n == 1 && first[0] == init::CODE_BEFORE_PIVOT {
            (hooks.before_pivot)(container.pid.as_raw()).map_err(ProcessError::Setup)?;
            std::fs::File::from(resume_write)
                .write_all(b"1")
                .map_err(io("resuming the container's init"))?;
        } else {
            report.extend_from_slice(&first[..n]);
        }
    }
    // After the hooks: the init sends its terminal once it is in its root.
    if let Some(socket) = console_parent {
        container.pty_master = receive_fd(&socket)?;
    }
    (&mut errors)
        .take(64 * 1024)
        .read_to_end(&mut report)
        .map_err(io("reading the container's start report"))?;
    let program = process.args().iter().flatten().next().map_or("", |p| p);
    let stopped_at_gate = cfg.start_gate.is_some() && report == [init::CODE_CREATED];
    if stopped_at_gate {
        report.clear();
    }
    if let Some(failure) = init::reported_failure(&report, program) {
        return Err(failure.into());
    }
    if terminal && container.pty_master.is_none() {
        return Err(ProcessError::Setup(
            "the container did not hand over its terminal".into(),
        ));
    }
    Ok(container)
}

/// True when husk runs a single thread (the CLI), so a child cloned from it cannot inherit a
/// lock held by another thread and no helper process is needed.
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/thread-self/..")
        .map(|d| d.count() == 1)
        .unwrap_or(false)
}

/// The CLI path: clone the init straight from husk.
fn clone_init_directly(
    flags: libc::c_ulong,
    init_cfg: init::InitConfig,
) -> Result<Pid, ProcessError> {
    let flags = flags | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: a raw clone without CLONE_VM and with no new stack behaves like fork; husk is
    // single-threaded here, so the child's copy holds no lock another thread owned.
    let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    match rc {
        0 => init::run(init_cfg),
        rc if rc < 0 => Err(ProcessError::Sys {
            op: "creating the container namespaces",
            source: nix::Error::last(),
        }),
        rc => Ok(Pid::from_raw(rc as i32)),
    }
}

/// The library path for multithreaded callers (tests, a monitor): fork a helper, whose
/// glibc-managed fork leaves it single-threaded with usable allocator locks; it clones the
/// init with CLONE_PARENT, so the init is still husk's child, reports the pid and exits.
fn clone_init_through_helper(
    flags: libc::c_ulong,
    init_cfg: init::InitConfig,
) -> Result<Pid, ProcessError> {
    let (pid_read, pid_write) = pipe()?;
    // SAFETY: the helper child is single-threaded after fork; glibc's fork resets its
    // allocator locks, so the helper and the init it clones may allocate freely.
    let helper = match unsafe { nix::unistd::fork() }.map_err(sys("fork"))? {
        nix::unistd::ForkResult::Child => {
            drop(pid_read);
            run_helper(flags, pid_write, init_cfg)
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(init_cfg);
    drop(pid_write);

    let mut pid_bytes = [0u8; 4];
    let got = std::fs::File::from(pid_read)
        .read(&mut pid_bytes)
        .map_err(io("reading init pid"));
    let _ = waitpid(helper, None);
    let raw = i32::from_ne_bytes(pid_bytes);
    match got? {
        4 if raw > 0 => Ok(Pid::from_raw(raw)),
        4 => Err(ProcessError::Sys {
            op: "creating the container namespaces",
            source: nix::Error::from_raw(-raw),
        }),
        _ => Err(ProcessError::Setup("the namespace helper failed".into())),
    }
}

/// The helper: clone the init into its namespaces as husk's child, report its pid, exit.
fn run_helper(flags: libc::c_ulong, pid_pipe: OwnedFd, init_cfg: init::InitConfig) -> ! {
    let flags = flags | libc::CLONE_PARENT as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: a raw clone without CLONE_VM and with no new stack behaves like fork: the child
    // continues on its own copy of this (single-threaded) process's memory.
    let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if rc == 0 {
        drop(pid_pipe);
        init::run(init_cfg);
    }
    let value: i32 = if rc < 0 {
        -nix::Error::last_raw()
    } else {
        rc as i32
    };
    let mut pipe = std::fs::File::from(pid_pipe);
    let _ = std::io::Write::write_all(&mut pipe, &value.to_ne_bytes());
    // SAFETY: _exit ends the helper without running the parent's atexit handlers.
    unsafe { libc::_exit(0) }
}

fn namespace_clone_flags(spec: &Spec) -> libc::c_ulong {
    let mut flags = 0;
    for (typ, flag) in [
        (LinuxNamespaceType::Pid, libc::CLONE_NEWPID),
        (LinuxNamespaceType::Mount, libc::CLONE_NEWNS),
        (LinuxNamespaceType::Uts, libc::CLONE_NEWUTS),
        (LinuxNamespaceType::Ipc, libc::CLONE_NEWIPC),
        (LinuxNamespaceType::Network, libc::CLONE_NEWNET),
    ] {
        if rootfs::has_namespace(spec, typ) {
            flags |= flag as libc::c_ulong;
        }
    }
    flags
}

fn pipe() -> Result<(OwnedFd, OwnedFd), ProcessError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("creating a pipe"))
}

fn receive_fd(socket: &UnixStream) -> Result<Option<OwnedFd>, ProcessError> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(sys("receiving the container's pty"))?;
    for cmsg in msg.cmsgs().map_err(sys("receiving the container's pty"))? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: SCM_RIGHTS just installed this descriptor in our table; nothing
                // else owns it.
                return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
    }
    Ok(None)
}

/// Docker's exit code for a wait status: the code, or 128+N when killed by signal N.
fn exit_code_of(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i32),
        _ => None,
    }
}

impl Container {
    /// The init's pid in husk's pid namespace.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Let the init live on by itself (the OCI runtime's `create` exits while its container
    /// waits to be started): no kill on drop, and the cgroup stays for whoever deletes it.
    pub fn detach(mut self) {
        self.exit = Some(ExitInfo {
            code: 0,
            oom_killed: false,
        });
        self.cgroup = None;
    }

    /// The pty master when the spec asked for a terminal (a new descriptor each call).
    pub fn pty_master(&self) -> Option<OwnedFd> {
        self.pty_master.as_ref().and_then(|fd| fd.try_clone().ok())
    }

    /// Accounting from the container's cgroup.
    pub fn stats(&self) -> Result<CgroupStats, ProcessError> {
        match &self.cgroup {
            Some(cgroup) => Ok(cgroup.stats()?),
            None => Ok(CgroupStats::default()),
        }
    }

    pub fn signal(&self, sig: i32) -> Result<(), ProcessError> {
        if self.exit.is_some() {
            return Ok(());
        }
        // Raw kill(2) so that real-time signals (SIGRTMIN+n) pass through too.
        // SAFETY: kill takes plain integers; the pid is our unreaped child, so it cannot have
        // been recycled for another process.
        if unsafe { libc::kill(self.pid.as_raw(), sig) } != 0 {
            return Err(ProcessError::Sys {
                op: "signalling the container",
                source: nix::Error::last(),
            });
        }
        Ok(())
    }

    /// Non-blocking: the exit code if the init has exited (the container is then torn down).
    pub fn try_wait(&mut self) -> Result<Option<i32>, ProcessError> {
        if let Some(exit) = self.exit {
            return Ok(Some(exit.code));
        }
        match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(status) => match exit_code_of(status) {
                Some(code) => self.finish(code).map(|exit| Some(exit.code)),
                None => Ok(None),
            },
            Err(nix::Error::EINTR) => Ok(None),
            Err(e) => Err(ProcessError::Sys {
                op: "waiting for the container",
                source: e,
            }),
        }
    }

    /// Wait for exit; returns Docker's exit code, then removes the cgroup. The overlay mount
    /// lived in the container's mount namespace and is gone with it; the upper dir stays.
    pub fn wait(self) -> Result<i32, ProcessError> {
        self.wait_detailed().map(|exit| exit.code)
    }

    /// [`Container::wait`], also telling whether the OOM killer ended the container.
    pub fn wait_detailed(mut self) -> Result<ExitInfo, ProcessError> {
        loop {
            if let Some(exit) = self.exit {
                return Ok(exit);
            }
            match waitpid(self.pid, None) {
                Ok(status) => {
                    if let Some(code) = exit_code_of(status) {
                        return self.finish(code);
                    }
                }
                Err(nix::Error::EINTR) => {}
                Err(e) => {
                    return Err(ProcessError::Sys {
                        op: "waiting for the container",
                        source: e,
                    })
                }
            }
        }
    }

    fn finish(&mut self, code: i32) -> Result<ExitInfo, ProcessError> {
        let cgroup = self.cgroup.take();
        // Read before the cgroup goes away: its OOM counter is the only witness.
        let oom_killed = cgroup
            .as_ref()
            .and_then(|c| c.stats().ok())
            .is_some_and(|stats| stats.oom_kills > 0);
        let exit = ExitInfo { code, oom_killed };
        self.exit = Some(exit);
        if let Some(cgroup) = cgroup {
            // The pid namespace died with its init; this catches anything still exiting.
            cgroup.destroy()?;
        }
        Ok(exit)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.exit.is_none() && self.pid.as_raw() > 0 {
            let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
            while let Err(nix::Error::EINTR) = waitpid(self.pid, None) {}
        }
        if let Some(cgroup) = self.cgroup.take() {
            let _ = cgroup.destroy();
        }
    }
}
