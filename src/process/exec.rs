//! `husk exec` for process isolation: a new process inside a running container's namespaces
//! and cgroup, with the container's security settings (capabilities, no_new_privs, seccomp).
//!
//! Shape: husk forks a helper that joins the container's cgroup and namespaces, then clones
//! the command with CLONE_PARENT (so it is husk's own child, inside the container's pid
//! namespace), reports its pid and exits. The command's setup or exec failures come back over
//! a close-on-exec error pipe, as for a container's init.

use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

use super::cgroup::{Cgroup, CgroupLayout};
use super::init::{
    apply_process_limits, become_process, forbid_ptrace_and_dumps, open_terminal, reported_failure,
    InitFailure,
};
use super::{io, sys, ProcessError};
use crate::container::record::start_time_from_stat;
use crate::container::ProcessIdentity;

/// What to run, and in which container.
pub struct ExecConfig<'a> {
    /// The container's init, as seen from the host, with its start time: a pid the kernel has
    /// since given to another process is refused.
    pub container_init: ProcessIdentity,
    /// The container's spec: namespaces and seccomp come from it.
    pub spec: &'a Spec,
    /// The command: args, env, cwd, user, capabilities, terminal.
    pub process: &'a Process,
    pub cgroup_name: &'a str,
    /// stdin, stdout, stderr for the command. When the process asks for a terminal they are
    /// not used: the command gets a pty of the container's own devpts instead, whose master
    /// [`ExecProcess::pty_master`] hands over.
    pub stdio: [BorrowedFd<'a>; 3],
}

/// A running exec'd command.
pub struct ExecProcess {
    pid: Pid,
    pty_master: Option<OwnedFd>,
}

impl ExecProcess {
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// The master side of the command's terminal, when it has one.
    pub fn pty_master(&mut self) -> Option<OwnedFd> {
        self.pty_master.take()
    }

    /// Wait for the command; Docker's code (128+N for signal N).
    pub fn wait(self) -> Result<i32, ProcessError> {
        loop {
            match waitpid(self.pid, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(source) => {
                    return Err(ProcessError::Sys {
                        op: "waiting for the exec'd process",
                        source,
                    })
                }
            }
        }
    }
}

/// The namespaces to join, in an order that keeps /proc reachable until the mount namespace.
const JOIN_ORDER: [(LinuxNamespaceType, &str); 6] = [
    (LinuxNamespaceType::Ipc, "ipc"),
    (LinuxNamespaceType::Uts, "uts"),
    (LinuxNamespaceType::Network, "net"),
    (LinuxNamespaceType::Pid, "pid"),
    (LinuxNamespaceType::Cgroup, "cgroup"),
    (LinuxNamespaceType::Mount, "mnt"),
];

/// Start the command in the container. Returns once it has exec'd, or with the error (exit
/// codes as for `run`: 127 not found, 126 not executable, 125 otherwise).
pub fn exec(cfg: &ExecConfig) -> Result<ExecProcess, ProcessError> {
    // Everything that can fail in a readable way is prepared before forking.
    let (namespaces, root) = open_namespaces(cfg)?;
    let cgroup_procs: Vec<PathBuf> = Cgroup::open(CgroupLayout::detect()?, cfg.cgroup_name)?
        .paths()
        .into_iter()
        .map(|dir| dir.join("cgroup.procs"))
        .filter(|procs| procs.exists())
        .collect();
    let seccomp = match cfg.spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(profile) => super::seccomp::compile(profile)?,
        None => Vec::new(),
    };
    let (error_read, error_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("creating a pipe"))?;
    let (pid_read, pid_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("creating a pipe"))?;
    let stdio = cfg.stdio.map(|fd| fd.as_raw_fd());
    let trampoline = super::trampoline::shared()?;
    let console = if cfg.process.terminal().unwrap_or(false) {
        Some(UnixStream::pair().map_err(io("creating the console socket"))?)
    } else {
        None
    };
    let (console_parent, console_child) = match console {
        Some((parent, child)) => (Some(parent), Some(child)),
        None => (None, None),
    };

    // SAFETY: the child is a fork of a process that is single-threaded at this point in the
    // CLI (exec runs before any thread is started); it only joins namespaces, clones and exits.
    match unsafe { nix::unistd::fork() }.map_err(sys("forking"))? {
        nix::unistd::ForkResult::Child => {
            drop(error_read);
            drop(pid_read);
            let failure = join_and_clone(
                &cgroup_procs,
                &namespaces,
                &root,
                pid_write.as_raw_fd(),
                CommandSetup {
                    process: cfg.process,
                    seccomp: &seccomp,
                    stdio: Stdio {
                        fds: stdio,
                        console: console_child.as_ref(),
                    },
                    errors: error_write.as_raw_fd(),
                    trampoline,
                },
            );
            report(error_write.as_raw_fd(), &failure);
            // SAFETY: ends the forked helper without running the parent's exit handlers.
            unsafe { libc::_exit(1) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(error_write);
            drop(pid_write);
            drop(console_child);
            let _ = waitpid(child, None);
            let mut pid_bytes = [0u8; 4];
            let got_pid = std::fs::File::from(pid_read)
                .read_exact(&mut pid_bytes)
                .is_ok();
            // Sent before the command's exec, or EOF once every copy of the other end closed.
            let pty_master = match &console_parent {
                Some(socket) => super::receive_fd(socket)?,
                None => None,
            };
            let mut report = Vec::new();
            let _ = std::fs::File::from(error_read).read_to_end(&mut report);
            let program = cfg.process.args().iter().flatten().next().map_or("", |p| p);
            if let Some(failure) = reported_failure(&report, program) {
                if got_pid {
                    // The command itself failed: reap it.
                    let _ = waitpid(Pid::from_raw(i32::from_ne_bytes(pid_bytes)), None);
                }
                return Err(failure.into());
            }
            if !got_pid {
                return Err(ProcessError::Setup(
                    "the exec helper exited without starting the command".into(),
                ));
            }
            if console_parent.is_some() && pty_master.is_none() {
                return Err(ProcessError::Setup(
                    "the exec'd command did not hand over its terminal".into(),
                ));
            }
            Ok(ExecProcess {
                pid: Pid::from_raw(i32::from_ne_bytes(pid_bytes)),
                pty_master,
            })
        }
    }
}

/// The container's namespaces, opened through one descriptor of /proc/PID: after its start
/// time matched, that descriptor can only ever reach the same process (a reused pid gets a
/// new /proc entry), so every namespace belongs to the container's init.
/// With them, the init's root directory: joining the mount namespace puts the joiner at
/// that namespace's own root, which is the container's root only when the runtime itself was
/// not chrooted (in the nested tier's L1, husk runs chrooted into the host's share, and a
/// command would have found L1's initramfs there).
fn open_namespaces(cfg: &ExecConfig) -> Result<(Vec<OwnedFd>, OwnedFd), ProcessError> {
    let init = cfg.container_init;
    let gone = || {
        ProcessError::Setup(format!(
            "the container's process {} is gone (its pid now names another process)",
            init.pid
        ))
    };
    let proc_dir = std::fs::File::open(format!("/proc/{}", init.pid)).map_err(|_| gone())?;
    let open_at = |name: &str| -> std::io::Result<OwnedFd> {
        let c = std::ffi::CString::new(name).expect("no NUL in /proc names");
        // SAFETY: openat with a directory descriptor we hold and a NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                proc_dir.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: openat just returned this descriptor; nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let mut stat = String::new();
    std::fs::File::from(open_at("stat").map_err(|_| gone())?)
        .read_to_string(&mut stat)
        .map_err(|_| gone())?;
    if start_time_from_stat(&stat) != Some(init.start_time) {
        return Err(gone());
    }
    let mut namespaces = Vec::new();
    for (typ, name) in JOIN_ORDER {
        if !super::rootfs::has_namespace(cfg.spec, typ) {
            continue;
        }
        let fd = open_at(&format!("ns/{name}")).map_err(io("opening the container's namespace"))?;
        namespaces.push(fd);
    }
    let root = open_at("root").map_err(io("opening the container's root"))?;
    Ok((namespaces, root))
}

/// What the command's process needs to become the command.
struct CommandSetup<'a> {
    process: &'a Process,
    seccomp: &'a [seccompiler::BpfProgram],
    stdio: Stdio<'a>,
    /// The error pipe: setup failures, and the trampoline's exec report.
    errors: RawFd,
    trampoline: RawFd,
}

/// The command's stdio: descriptors to install, or a terminal to make.
struct Stdio<'a> {
    fds: [RawFd; 3],
    /// Where to send the pty master when the process asks for a terminal.
    console: Option<&'a UnixStream>,
}

fn report(errors: RawFd, failure: &InitFailure) {
    let mut bytes = vec![failure.code];
    bytes.extend_from_slice(failure.message.as_bytes());
    // SAFETY: a plain write of our own buffer to a pipe we own.
    unsafe { libc::write(errors, bytes.as_ptr().cast(), bytes.len()) };
}

fn setup_failure(message: String) -> InitFailure {
    InitFailure {
        code: super::init::CODE_SETUP,
        message,
    }
}

/// In the helper: join, clone the command, pass its pid on. Returns only on failure.
fn join_and_clone(
    cgroup_procs: &[PathBuf],
    namespaces: &[OwnedFd],
    root: &OwnedFd,
    pid_pipe: RawFd,
    setup: CommandSetup,
) -> InitFailure {
    // Before anything of the container can see us: inherited by the command's clone.
    forbid_ptrace_and_dumps();
    for procs in cgroup_procs {
        if let Err(e) = std::fs::write(procs, "0") {
            return setup_failure(format!("joining cgroup {}: {e}", procs.display()));
        }
    }
    for ns in namespaces {
        if let Err(e) = nix::sched::setns(ns, nix::sched::CloneFlags::empty()) {
            return setup_failure(format!("joining the container's namespaces: {e}"));
        }
    }
    if let Err(e) = nix::unistd::fchdir(root.as_raw_fd()).and_then(|()| nix::unistd::chroot(".")) {
        return setup_failure(format!("entering the container's root: {e}"));
    }
    // SAFETY: raw clone with CLONE_PARENT|SIGCHLD and no new stack behaves like fork in this
    // single-threaded helper; the child becomes husk's child inside the joined pid namespace.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::CLONE_PARENT | libc::SIGCHLD,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match pid {
        -1 => setup_failure(format!(
            "starting the command: {}",
            std::io::Error::last_os_error()
        )),
        0 => {
            let errors = setup.errors;
            let failure = command(setup).unwrap_err();
            report(errors, &failure);
            // SAFETY: ends the failed command's process without the parent's exit handlers.
            unsafe { libc::_exit(1) }
        }
        child => {
            let bytes = (child as i32).to_ne_bytes();
            // SAFETY: a plain write of our own buffer to a pipe we own.
            unsafe { libc::write(pid_pipe, bytes.as_ptr().cast(), bytes.len()) };
            // SAFETY: the helper's work is done; leave without the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
    }
}

/// In the command's process: stdio (or a terminal of the container's devpts), a session,
/// the container's limits, then the shared become-the-process path of the init.
fn command(setup: CommandSetup) -> Result<std::convert::Infallible, InitFailure> {
    let CommandSetup {
        process,
        seccomp,
        stdio,
        errors,
        trampoline,
    } = setup;
    nix::unistd::setsid().map_err(|e| setup_failure(format!("setsid: {e}")))?;
    match (process.terminal().unwrap_or(false), stdio.console) {
        (true, Some(console)) => {
            // In the container's mount namespace by now: /dev/ptmx is its devpts's.
            let (slave, _) = open_terminal(console, process.console_size())?;
            for target in 0..3 {
                nix::unistd::dup2(slave.as_raw_fd(), target)
                    .map_err(|e| setup_failure(format!("setting up stdio: {e}")))?;
            }
        }
        _ => {
            for (target, fd) in stdio.fds.iter().enumerate() {
                if *fd != target as RawFd {
                    nix::unistd::dup2(*fd, target as RawFd)
                        .map_err(|e| setup_failure(format!("setting up stdio: {e}")))?;
                }
            }
        }
    }
    apply_process_limits(process)?;
    become_process(
        super::init::ProcessRole::Exec,
        process,
        seccomp,
        errors,
        trampoline,
        None,
    )
}
