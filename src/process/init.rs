//! The container's init process (pid 1 of its pid namespace), from the moment it is cloned
//! until it execs the container command. It runs single-threaded in a forked copy of husk, so
//! it may allocate; every failure is reported to husk over the error pipe.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use oci_spec::runtime::{LinuxNamespaceType, PosixRlimitType, Spec};
use rootfs_agent::confine::{CapabilityNames, Confinement, Identity};
use seccompiler::BpfProgram;

use super::rootfs::{self, RootfsPlan};
use super::user;

/// Exit codes the parent maps to Docker's: the command is missing, or cannot be run.
pub const CODE_NOT_FOUND: u8 = 127;
pub const CODE_NOT_EXECUTABLE: u8 = 126;
pub const CODE_SETUP: u8 = 125;
/// The whole report of an init that stopped at its start gate, ready to exec its command.
pub const CODE_CREATED: u8 = b'C';
/// The first byte of the report of an init whose root is mounted but not yet entered: it
/// waits for the runtime's prestart and createRuntime hooks (one byte on its resume pipe).
pub const CODE_BEFORE_PIVOT: u8 = b'P';

/// Set once the init has reported [`CODE_CREATED`]: nobody reads the error pipe any more, so
/// a later failure goes to the container's stderr and becomes its exit code.
static PAST_START_GATE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A setup failure: Docker-style code and one line of text for the user.
pub struct InitFailure {
    pub code: u8,
    pub message: String,
}

fn fail(message: impl std::fmt::Display) -> InitFailure {
    InitFailure {
        code: CODE_SETUP,
        message: message.to_string(),
    }
}

/// Everything the init needs, prepared by husk before forking.
pub struct InitConfig<'a> {
    pub spec: &'a Spec,
    pub plan: RootfsPlan<'a>,
    pub seccomp: Vec<BpfProgram>,
    /// cgroup.procs of each of the container's cgroup directories.
    pub cgroup_procs: Vec<PathBuf>,
    pub errors: OwnedFd,
    /// The init sends the pty master over this when the spec asks for a terminal.
    pub console: Option<UnixStream>,
    /// Stdio to install as 0, 1, 2 when there is no terminal; None keeps husk's.
    pub stdio: Option<[RawFd; 3]>,
    pub interactive: bool,
    /// The sealed exec trampoline (see trampoline.rs).
    pub trampoline: RawFd,
    /// A network namespace to enter first (husk configured it; see src/network).
    pub netns: Option<RawFd>,
    /// A listening socket: wait for a connection on it before the exec (OCI create/start).
    pub start_gate: Option<RawFd>,
    /// The OCI hooks around the pivot and the start (husk-runc); None for husk's containers.
    pub hooks: Option<InitHooks<'a>>,
}

/// runtime.md's lifecycle steps 4 to 7 as the init sees them: it stops before pivot_root
/// for the runtime's prestart and createRuntime hooks, then runs the createContainer hooks
/// itself in the container's namespaces, and the startContainer hooks once `start` opened the
/// gate, right before the command.
pub struct InitHooks<'a> {
    /// The container's OCI state; the init sets `pid` (its own, as the container sees it,
    /// which config.md asks for hooks run in the container namespace) and `status`.
    pub state: &'a serde_json::Value,
    /// Read end of the pipe on which the runtime answers [`CODE_BEFORE_PIVOT`] with one byte.
    pub resume: RawFd,
    /// Its write end: the init closes its copy, so a runtime gone away reads as EOF.
    pub resume_writer: RawFd,
}

impl InitHooks<'_> {
    fn state_json(&self, status: &str) -> Vec<u8> {
        let mut state = self.state.clone();
        state["pid"] = serde_json::Value::from(std::process::id());
        state["status"] = serde_json::Value::from(status);
        serde_json::to_vec(&state).unwrap_or_default()
    }
}

/// Run the init: returns only by exec'ing the command; on failure it reports and exits.
pub fn run(cfg: InitConfig) -> ! {
    forbid_ptrace_and_dumps();
    let result = prepare_and_exec(&cfg);
    let failure = match result {
        Err(failure) => failure,
        Ok(never) => match never {},
    };
    if PAST_START_GATE.load(std::sync::atomic::Ordering::Relaxed) {
        let _ = writeln!(std::io::stderr(), "husk: {}", failure.message);
        // SAFETY: as below; the code is the container's exit status now.
        unsafe { libc::_exit(i32::from(failure.code)) }
    }
    let mut pipe = std::fs::File::from(cfg.errors);
    let _ = pipe.write_all(&[failure.code]);
    let _ = pipe.write_all(failure.message.as_bytes());
    drop(pipe);
    // SAFETY: _exit ends this forked child without running husk's atexit handlers or
    // flushing buffers that belong to the parent.
    unsafe { libc::_exit(1) }
}

fn prepare_and_exec(cfg: &InitConfig) -> Result<std::convert::Infallible, InitFailure> {
    let spec = cfg.spec;
    if let Some(fd) = cfg.netns {
        // SAFETY: the descriptor is husk's, inherited across the clone and open until exec.
        let netns = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| fail(format!("entering the container's network namespace: {e}")))?;
    }
    for procs in &cfg.cgroup_procs {
        // "0" is the writer itself, with no pid translation across namespaces.
        std::fs::write(procs, "0")
            .map_err(|e| fail(format!("joining cgroup {}: {e}", procs.display())))?;
    }
    if rootfs::has_namespace(spec, LinuxNamespaceType::Cgroup) {
        // After joining the cgroup, so that it becomes the namespace's root.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| fail(format!("creating cgroup namespace: {e}")))?;
    }
    if rootfs::has_namespace(spec, LinuxNamespaceType::Uts) && spec.hostname().is_some() {
        nix::unistd::sethostname(&cfg.plan.hostname)
            .map_err(|e| fail(format!("setting hostname {:?}: {e}", cfg.plan.hostname)))?;
    }
    // In the container's own namespaces, through the host's /proc before the root moves:
    // /proc/sys/net and /proc/sys/kernel/shm* show the writer's network and IPC namespace.
    if let Some(sysctls) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) {
        rootfs_agent::sandbox::write_sysctls(sysctls.iter()).map_err(fail)?;
    }
    let new_root = rootfs::mount_root(&cfg.plan).map_err(fail)?;
    if let Some(hooks) = &cfg.hooks {
        run_create_hooks(spec, cfg.errors.as_raw_fd(), hooks)?;
    }
    rootfs::enter_root(&cfg.plan, new_root).map_err(fail)?;
    if rootfs::has_namespace(spec, LinuxNamespaceType::Network) && cfg.netns.is_none() {
        rootfs::loopback_up().map_err(fail)?;
    }
    nix::unistd::setsid().map_err(|e| fail(format!("setsid: {e}")))?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| fail("the spec has no process"))?;
    setup_stdio(cfg, process.terminal().unwrap_or(false))?;
    apply_process_limits(process)?;
    become_process(
        ProcessRole::Init,
        process,
        &cfg.seccomp,
        cfg.errors.as_raw_fd(),
        cfg.trampoline,
        cfg.start_gate.map(|gate| StartGate {
            socket: gate,
            hooks: cfg.hooks.as_ref(),
            spec,
        }),
    )
}

/// Mounts done, pivot_root not yet: the runtime runs prestart and createRuntime (in its own
/// namespaces, with our host pid), and then we run createContainer here (runtime.md: in the
/// container namespace, the path resolved in the runtime's, which is what this mount
/// namespace still shows before the pivot).
fn run_create_hooks(spec: &Spec, errors: RawFd, hooks: &InitHooks) -> Result<(), InitFailure> {
    // SAFETY: closing this process's copy of the runtime's end of the resume pipe.
    unsafe { libc::close(hooks.resume_writer) };
    // SAFETY: a plain write of one byte to the error pipe we hold.
    if unsafe { libc::write(errors, [CODE_BEFORE_PIVOT].as_ptr().cast(), 1) } != 1 {
        return Err(fail("reporting the root mounted"));
    }
    let mut answer = [0u8; 1];
    loop {
        // SAFETY: a read of one byte into our buffer from the pipe we hold.
        let n = unsafe { libc::read(hooks.resume, answer.as_mut_ptr().cast(), 1) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if n != 1 || answer != *b"1" {
            // The runtime reports its own hook's failure; this is for a runtime that died.
            return Err(fail("the runtime did not finish its createRuntime hooks"));
        }
        break;
    }
    // SAFETY: closing the read end we own; nothing else uses it.
    unsafe { libc::close(hooks.resume) };
    for hook in spec
        .hooks()
        .iter()
        .flat_map(|h| h.create_container().iter().flatten())
    {
        crate::oci::hooks::run_with_state(hook, &hooks.state_json("creating"), "createContainer")
            .map_err(fail)?;
    }
    Ok(())
}

/// The start gate of an OCI container, and the startContainer hooks that run once it opens.
pub(super) struct StartGate<'a> {
    socket: RawFd,
    hooks: Option<&'a InitHooks<'a>>,
    spec: &'a Spec,
}

/// The OCI create/start split: report "created" (the parent's `spawn` returns and the
/// runtime's `create` exits), then block until `start` connects to the gate, run the
/// startContainer hooks, and answer it: "1" when the command is on its way, else "0" and why.
fn wait_for_start(start: &StartGate, errors: RawFd) -> Result<(), InitFailure> {
    let gate = start.socket;
    // SAFETY: a plain write of one byte to the error pipe we hold.
    if unsafe { libc::write(errors, [CODE_CREATED].as_ptr().cast(), 1) } != 1 {
        return Err(fail("reporting the container created"));
    }
    // The parent reads the pipe to EOF: /dev/null takes the pipe's place (the number stays
    // valid for the trampoline, whose later report nobody waits for).
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .map_err(|e| fail(format!("opening /dev/null: {e}")))?;
    // SAFETY: dup2 onto the error pipe's number, which we own; closes the pipe.
    if unsafe { libc::dup2(null.as_raw_fd(), errors) } < 0 {
        return Err(fail("closing the error pipe"));
    }
    PAST_START_GATE.store(true, std::sync::atomic::Ordering::Relaxed);
    loop {
        // SAFETY: accept4 on the listening socket we hold; no address is asked for.
        let conn = unsafe {
            libc::accept4(
                gate,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if conn < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(fail(format!("waiting for start: {err}")));
        }
        // SAFETY: the connection is new and ours alone.
        let mut conn = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(conn) });
        let hooks_ran = start.run_start_hooks();
        let answer = match &hooks_ran {
            Ok(()) => b"1".to_vec(),
            Err(failure) => format!("0{}", failure.message).into_bytes(),
        };
        let sent = conn.write_all(&answer).is_ok();
        drop(conn);
        // A hook runs once: after one, this start is the start even if its caller is gone.
        if sent || start.has_start_hooks() {
            // SAFETY: closing the gate we own; nothing else uses it.
            unsafe { libc::close(gate) };
            return hooks_ran;
        }
        // The caller went away before the answer: wait for a real start.
    }
}

impl StartGate<'_> {
    fn start_hooks(&self) -> impl Iterator<Item = &oci_spec::runtime::Hook> {
        self.hooks
            .and(self.spec.hooks().as_ref())
            .into_iter()
            .flat_map(|h| h.start_container().iter().flatten())
    }

    fn has_start_hooks(&self) -> bool {
        self.start_hooks().next().is_some()
    }

    /// runtime.md: startContainer hooks run in the container namespace, after the start
    /// operation is called and before the program; a failure stops the container.
    fn run_start_hooks(&self) -> Result<(), InitFailure> {
        let Some(hooks) = self.hooks else {
            return Ok(());
        };
        for hook in self.start_hooks() {
            crate::oci::hooks::run_with_state(hook, &hooks.state_json("created"), "startContainer")
                .map_err(fail)?;
        }
        Ok(())
    }
}

/// umask, oom_score_adj and rlimits from the spec: the init's, and an `exec`'d process's,
/// which must not keep those of the husk that started it.
pub(super) fn apply_process_limits(
    process: &oci_spec::runtime::Process,
) -> Result<(), InitFailure> {
    // runc's default when the spec sets none; husk's own umask must not leak in.
    let umask = process.user().umask().unwrap_or(0o022);
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
        umask as libc::mode_t,
    ));
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| fail(format!("setting oom_score_adj {adj}: {e}")))?;
    }
    for rlimit in process.rlimits().iter().flatten() {
        set_rlimit(rlimit.typ(), rlimit.soft(), rlimit.hard())?;
    }
    Ok(())
}

/// A pty of the devpts mounted at /dev/pts of the current mount namespace: the master goes
/// to husk over `console`, the slave becomes the controlling terminal (the caller must lead
/// a session) and is returned for stdio. The pty has the process's `consoleSize` before the
/// command can ask for it (husk's own resize after it gets the master would race the
/// command's first look).
pub(super) fn open_terminal(
    console: &UnixStream,
    size: Option<oci_spec::runtime::Box>,
) -> Result<(std::fs::File, PathBuf), InitFailure> {
    let (master, slave_path) = rootfs::open_pty().map_err(fail)?;
    if let Some(size) = size.filter(|s| s.height() > 0 && s.width() > 0) {
        let ws = libc::winsize {
            ws_row: u16::try_from(size.height()).unwrap_or(u16::MAX),
            ws_col: u16::try_from(size.width()).unwrap_or(u16::MAX),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads the winsize we own from a pty master we hold.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    send_fd(console, master.as_fd(), b"p")
        .map_err(|e| fail(format!("sending the pty to husk: {e}")))?;
    drop(master);
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&slave_path)
        .map_err(|e| fail(format!("opening {}: {e}", slave_path.display())))?;
    // SAFETY: TIOCSCTTY on a terminal descriptor we own, with an integer argument.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
        return Err(fail(format!(
            "making the pty our terminal: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok((slave, slave_path))
}

/// Until execve this process is a copy of husk: non-dumpable, no process of the container
/// (even as root, without CAP_SYS_PTRACE) can open its /proc/PID/exe, mem or fds. The
/// trampoline's execve makes it dumpable again, as the container's own program.
pub(super) fn forbid_ptrace_and_dumps() {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

/// The part an init and an `exec` share: resolve the user inside the container's root, set
/// up HOME and the working directory, apply identity, capabilities, no_new_privs and seccomp,
/// and exec the command. Returns only on failure.
/// Which process of the container [`become_process`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProcessRole {
    /// The container's own process (`run`, `start`).
    Init,
    /// A process `exec` adds.
    Exec,
}

pub(super) fn become_process(
    role: ProcessRole,
    process: &oci_spec::runtime::Process,
    seccomp: &[BpfProgram],
    errors: RawFd,
    trampoline: RawFd,
    start_gate: Option<StartGate>,
) -> Result<std::convert::Infallible, InitFailure> {
    let spec_user = process.user();
    let (uid, gid, mut groups, home) = match spec_user.username() {
        Some(name) => {
            let resolved = user::resolve(name, Path::new("/")).map_err(fail)?;
            (
                resolved.uid,
                resolved.gid,
                resolved.additional_gids,
                resolved.home,
            )
        }
        None => (spec_user.uid(), spec_user.gid(), Vec::new(), None),
    };
    groups.extend(spec_user.additional_gids().iter().flatten().copied());

    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!(
            "HOME={}",
            home.filter(|h| !h.is_empty()).unwrap_or_else(|| "/".into())
        ));
    }
    enter_workdir(process.cwd(), role == ProcessRole::Init)?;

    let args = process.args().clone().unwrap_or_default();
    let program = args
        .first()
        .ok_or_else(|| fail("the spec has no command"))?;
    let executable = rootfs_agent::lookup::find_executable(
        program,
        rootfs_agent::lookup::path_of(&env),
        Path::new("."),
    )
    .map_err(|e| InitFailure {
        code: e.code as u8,
        message: e.message,
    })?;
    let c_path = cstr(executable.to_string_lossy().as_ref())?;
    let c_args = args
        .iter()
        .map(|a| cstr(a))
        .collect::<Result<Vec<_>, _>>()?;
    let c_env = env.iter().map(|e| cstr(e)).collect::<Result<Vec<_>, _>>()?;

    if let Some(gate) = &start_gate {
        wait_for_start(gate, errors)?;
    }
    close_on_exec_from_3()?;
    reset_signals();

    confinement(process, seccomp, uid, gid, groups)?
        .apply()
        .map_err(fail)?;

    // Never execve the command from here: this process's executable is husk's (see
    // trampoline.rs).
    let err = super::trampoline::exec(trampoline, errors, &c_path, &c_args, &c_env);
    Err(fail(format!(
        "exec the trampoline for {program:?}: {}",
        err.desc()
    )))
}

/// chdir into the working directory as resolved inside the process's root: an `exec`'d
/// process joined the container's mount namespace, and neither a symlink nor a /proc magic
/// link in the path may take its cwd outside the container's tree.
///
/// A container's own process creates a cwd missing from the image (as Docker and runc do,
/// before the identity switch, so root owns it); an `exec` into a missing one fails.
fn enter_workdir(cwd: &Path, create: bool) -> Result<(), InitFailure> {
    use super::in_root::{self, Create, InRootError, Symlinks};
    let bad = |why: String| fail(format!("bad workdir {}: {why}", cwd.display()));
    let root = in_root::open_root(Path::new("/")).map_err(|e| bad(e.to_string()))?;
    let create = if create {
        Create::Directory
    } else {
        Create::Nothing
    };
    let dir = match in_root::open(root.as_fd(), cwd, create, Symlinks::Contain) {
        Ok(dir) => dir,
        Err(InRootError::Io { source, .. }) => return Err(bad(source.to_string())),
        Err(e) => return Err(bad(e.to_string())),
    };
    let meta = std::fs::metadata(in_root::fd_path(&dir)).map_err(|e| bad(e.to_string()))?;
    if !meta.is_dir() {
        return Err(bad("not a directory".into()));
    }
    nix::unistd::fchdir(dir.as_raw_fd()).map_err(|e| bad(e.to_string()))
}

/// The failure a report from the error pipe describes: an init's or exec helper's
/// [code, message], or the trampoline's [CODE_EXEC_ERRNO, errno] when execve of `program`
/// failed (127 when it does not exist, 126 otherwise, as Docker).
pub(super) fn reported_failure(report: &[u8], program: &str) -> Option<InitFailure> {
    if let Some(err) = super::trampoline::reported_errno(report) {
        let code = if err == nix::Error::ENOENT {
            CODE_NOT_FOUND
        } else {
            CODE_NOT_EXECUTABLE
        };
        return Some(InitFailure {
            code,
            message: format!("exec {program:?}: {}", err.desc()),
        });
    }
    let (&code, message) = report.split_first()?;
    Some(InitFailure {
        code,
        message: String::from_utf8_lossy(message).into_owned(),
    })
}

/// Nothing husk or its caller holds may reach the command: every descriptor from 3 up is
/// marked close-on-exec (not closed yet, so no Rust-owned descriptor is invalidated before
/// the exec). close_range does it in one call; kernels before 5.11 (or filters refusing it)
/// get the same from a walk over /proc/self/fd.
fn close_on_exec_from_3() -> Result<(), InitFailure> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    close_on_exec_by_walking_proc()
        .map_err(|e| fail(format!("marking descriptors close-on-exec: {e}")))
}

pub(super) fn close_on_exec_by_walking_proc() -> std::io::Result<()> {
    // Collect first: the directory's own descriptor is among those listed.
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= 3)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on a descriptor number; one that was the (now closed) directory
        // descriptor fails with EBADF, which is what we want for it.
        let rc = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EBADF) {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn cstr(text: &str) -> Result<CString, InitFailure> {
    rootfs::cstring(text).map_err(fail)
}

fn setup_stdio(cfg: &InitConfig, terminal: bool) -> Result<(), InitFailure> {
    if terminal {
        let console = cfg
            .console
            .as_ref()
            .ok_or_else(|| fail("terminal requested without console"))?;
        let size = cfg.spec.process().as_ref().and_then(|p| p.console_size());
        let (slave, slave_path) = open_terminal(console, size)?;
        // Like runc: programs that write to /dev/console reach the container's terminal.
        let console_path = Path::new("/dev/console");
        if std::fs::File::create(console_path).is_ok() {
            nix::mount::mount(
                Some(&slave_path),
                console_path,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| fail(format!("binding the pty onto /dev/console: {e}")))?;
        }
        for target in 0..3 {
            dup_onto(slave.as_raw_fd(), target)?;
        }
        return Ok(());
    }
    if let Some(fds) = cfg.stdio {
        // Move the sources out of the way first: one of them may already sit on 0..2.
        let mut moved = Vec::new();
        for fd in fds {
            // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor the caller keeps open.
            let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
            if copy < 0 {
                return Err(fail(format!(
                    "duplicating stdio: {}",
                    std::io::Error::last_os_error()
                )));
            }
            moved.push(copy);
        }
        for (target, fd) in moved.into_iter().enumerate() {
            dup_onto(fd, target as RawFd)?;
        }
    }
    if !cfg.interactive {
        let null = std::fs::File::open("/dev/null")
            .map_err(|e| fail(format!("opening /dev/null: {e}")))?;
        dup_onto(null.as_raw_fd(), 0)?;
    }
    Ok(())
}

fn dup_onto(fd: RawFd, target: RawFd) -> Result<(), InitFailure> {
    // SAFETY: dup2 onto a standard descriptor number; both are plain integers here and the
    // target is meant to be replaced.
    if unsafe { libc::dup2(fd, target) } < 0 {
        return Err(fail(format!(
            "setting up stdio: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Send a descriptor over a unix socket (SCM_RIGHTS): one message, the fd attached. Used for
/// the pty master, from init to husk and from husk-runc to a runc console socket. A message
/// must carry some payload: runc's console socket gets the terminal's name, as runc sends it.
pub(crate) fn send_fd(
    socket: &UnixStream,
    fd: BorrowedFd<'_>,
    payload: &[u8],
) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd.as_raw_fd()];
    let iov = [std::io::IoSlice::new(payload)];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map(|_| ())
    .map_err(std::io::Error::from)
}

/// husk blocks and handles signals for forwarding; the command must start with defaults.
fn reset_signals() {
    for signal in Signal::iterator() {
        if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: restoring the default disposition installs no Rust handler.
        let _ = unsafe { nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigDfl) };
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Raising a hard limit needs CAP_SYS_RESOURCE, which some hosts (sandboxes, nested
/// containers) withhold even from root; like Podman, husk then clamps to the current maximum
/// rather than refusing to start.
fn set_rlimit(typ: PosixRlimitType, soft: u64, hard: u64) -> Result<(), InitFailure> {
    let resource = rlimit_resource(typ)?;
    let apply = |soft: u64, hard: u64| {
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads a valid rlimit struct that outlives the call.
        unsafe { libc::setrlimit(resource, &limit) }
    };
    if apply(soft, hard) == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    // SAFETY: rlimit is plain data; getrlimit fills it in.
    let mut current: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit writes into the struct we own.
    let got = unsafe { libc::getrlimit(resource, &mut current) } == 0;
    if err.raw_os_error() == Some(libc::EPERM) && got && hard > current.rlim_max {
        let max = current.rlim_max;
        if apply(soft.min(max), max) == 0 {
            return Ok(());
        }
    }
    Err(fail(format!("setting {typ:?}: {err}")))
}

/// The OCI name of an rlimit ("RLIMIT_NOFILE"), as the spec spells it and the guest agent's
/// protocol carries it.
pub fn rlimit_name(typ: PosixRlimitType) -> String {
    serde_json::to_value(typ)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The Linux resource number of an rlimit: one table for both isolations
/// (rootfs_agent::protocol::rlimit_resource).
fn rlimit_resource(typ: PosixRlimitType) -> Result<libc::__rlimit_resource_t, InitFailure> {
    rootfs_agent::protocol::rlimit_resource(&rlimit_name(typ))
        .ok_or_else(|| fail(format!("unknown rlimit {typ:?}")))
}

/// The spec's five capability sets by name ("CAP_CHOWN"), sorted, as the shared confinement
/// (and the guest agent, for VM isolation) takes them.
pub fn capability_names(caps: &oci_spec::runtime::LinuxCapabilities) -> CapabilityNames {
    let names = |set: &Option<oci_spec::runtime::Capabilities>| {
        let mut names: Vec<String> = set.iter().flatten().map(|c| format!("CAP_{c}")).collect();
        names.sort();
        names
    };
    CapabilityNames {
        bounding: names(caps.bounding()),
        effective: names(caps.effective()),
        permitted: names(caps.permitted()),
        inheritable: names(caps.inheritable()),
        ambient: names(caps.ambient()),
    }
}

/// The spec's identity, capabilities, no_new_privs and seccomp filters as the confinement
/// the guest agent applies too (rootfs_agent::confine): one implementation for both
/// isolations.
fn confinement(
    process: &oci_spec::runtime::Process,
    seccomp: &[BpfProgram],
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
) -> Result<Confinement, InitFailure> {
    let capabilities = process.capabilities().as_ref().map(capability_names);
    let filters = super::seccomp::to_instructions(seccomp);
    Confinement::new(
        Some(Identity { uid, gid, groups }),
        capabilities.as_ref(),
        process.no_new_privileges().unwrap_or(false),
        filters,
    )
    .map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proc_walk_marks_every_descriptor_close_on_exec() {
        // In a forked child, so that no other test thread's descriptors change under it.
        // SAFETY: the child makes plain syscalls (and the walk's allocation, which is sound in
        // a freshly forked child of glibc) and _exits.
        match unsafe { libc::fork() } {
            0 => {
                let cloexec = |fd: RawFd| {
                    // SAFETY: F_GETFD on a descriptor number only reads its flags.
                    unsafe { libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC != 0 }
                };
                // SAFETY: dup of stderr gives a new descriptor without close-on-exec.
                let inherited = unsafe { libc::dup(2) };
                let before = cloexec(inherited);
                let walked = close_on_exec_by_walking_proc().is_ok();
                let ok = walked && !before && cloexec(inherited) && !cloexec(2);
                // SAFETY: ends the forked child.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            pid => {
                let mut status = 0;
                // SAFETY: waiting for the child forked above.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
            }
        }
    }
}
