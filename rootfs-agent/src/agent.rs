//! The agent's request loop: one connection to the host, the container process and any `exec`
//! processes, their stdio, signals and exit codes.
//!
//! It is single-threaded and never blocks: the connection, every child's stdio and a pidfd per
//! child are polled together, outgoing frames queue in a buffer bounded by the flow-control
//! windows, and what it accepts from the host is bounded by the decoder and by the stdin window.
//! The same loop runs on the host (tests, `sandbox: false`) and as PID 1 in the guest.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::{openpty, Winsize};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::confine::{Confinement, Identity};
use crate::protocol::{
    rlimit_resource, Decoder, ErrorReport, ExitStatus, Frame, FrameKind, ProcessSpec,
    ProtocolError, ReadyInfo, ResizeRequest, SignalRequest, StartRequest, Started, INITIAL_WINDOW,
    MAX_DATA_CHUNK,
};
use crate::sandbox::{self, ContainerCgroup, ProcView, SETUP_FAILED_EXIT};

/// Most processes (container process + exec) alive at once; bounds what a host can make us hold.
pub const MAX_PROCESSES: usize = 64;
/// Queued outgoing bytes above which the agent stops reading requests until the host drains
/// them (stream data is bounded separately, by the per-process credit).
pub const MAX_PENDING_OUT: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("host broke the protocol: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("agent connection: {0}")]
    Io(#[from] io::Error),
    #[error("{what}: {source}")]
    Sys { what: &'static str, source: Errno },
}

fn sys(what: &'static str) -> impl FnOnce(Errno) -> AgentError {
    move |source| AgentError::Sys { what, source }
}

/// How much of the guest the loop may touch.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServeOptions {
    /// True when running as the guest's PID 1: set the hostname, create a missing cwd, reap
    /// every orphan, switch to the requested user even when not root. False on the host, where
    /// the loop only manages the processes it starts.
    pub sandbox: bool,
}

/// Which process of the container is started: the container's own (`Start`) or an `Exec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcessRole {
    Init,
    Exec,
}

/// How the session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The container process exited with this code and the host has been told.
    Exited(i32),
    /// The host closed the connection before the container process finished.
    HostClosed,
}

struct Output {
    file: File,
    kind: FrameKind,
    open: bool,
}

struct Proc {
    pid: Pid,
    pidfd: Option<OwnedFd>,
    stdin: Option<File>,
    stdin_buf: Vec<u8>,
    stdin_eof: bool,
    /// Stdin bytes the host may still send before we grant more.
    stdin_allowance: u64,
    outputs: Vec<Output>,
    pty_master: Option<OwnedFd>,
    /// Output bytes we may still send to the host.
    out_credit: u64,
    exit_code: Option<i32>,
}

struct Session {
    conn: File,
    decoder: Decoder,
    outbuf: Vec<u8>,
    procs: HashMap<u32, Proc>,
    /// Highest process id the host has used; data for lower ids that are gone is stale, not bad.
    highest_id: Option<u32>,
    started: bool,
    main_exit: Option<i32>,
    opts: ServeOptions,
    /// The container's cgroup in the guest, which every process it starts joins.
    cgroup: Option<ContainerCgroup>,
    /// What the container's first process mounts over /proc in its PID namespace.
    proc_view: Option<ProcView>,
}

/// Run the request loop on `conn` (a console port or a socket) until the container process has
/// exited and its exit has been flushed to the host, or the host goes away. Every process still
/// running at the end is killed.
pub fn serve(
    conn: OwnedFd,
    ready: &ReadyInfo,
    opts: ServeOptions,
) -> Result<SessionEnd, AgentError> {
    set_nonblocking(&conn)?;
    let mut session = Session {
        conn: File::from(conn),
        decoder: Decoder::new(),
        outbuf: Vec::new(),
        procs: HashMap::new(),
        highest_id: None,
        started: false,
        main_exit: None,
        opts,
        cgroup: None,
        proc_view: None,
    };
    session.queue(Frame::json(FrameKind::Ready, 0, ready)?);
    let result = match session.run() {
        // A host that hangs up while we still have replies for it closed the session too.
        Err(AgentError::Io(e))
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) =>
        {
            Ok(SessionEnd::HostClosed)
        }
        other => other,
    };
    if let Err(AgentError::Protocol(e)) = &result {
        // Tell the host why we hang up; best effort, it may be the one that is broken.
        if let Ok(frame) = Frame::json(
            FrameKind::Error,
            u32::MAX,
            &ErrorReport {
                // Errors quote what the host sent; keep the report far below the frame bound.
                message: bounded(&e.to_string(), 4096),
            },
        ) {
            session.queue(frame);
            let _ = session.flush_blocking();
        }
    }
    session.kill_all();
    result
}

impl Session {
    fn run(&mut self) -> Result<SessionEnd, AgentError> {
        loop {
            if let Some(code) = self.main_exit {
                if self.outbuf.is_empty() {
                    return Ok(SessionEnd::Exited(code));
                }
            }
            if self.poll_once()? {
                return Ok(SessionEnd::HostClosed);
            }
        }
    }

    fn queue(&mut self, frame: Frame) {
        frame.encode_into(&mut self.outbuf);
    }

    /// One poll round; returns true when the host closed the connection.
    fn poll_once(&mut self) -> Result<bool, AgentError> {
        // Interest set: fixed order so results map back by index.
        let ids: Vec<u32> = self.procs.keys().copied().collect();
        let mut fds = Vec::new();
        // A host that sends requests but never reads our replies stops being read too.
        let mut conn_flags = if self.outbuf.len() < MAX_PENDING_OUT {
            PollFlags::POLLIN
        } else {
            PollFlags::empty()
        };
        if !self.outbuf.is_empty() {
            conn_flags |= PollFlags::POLLOUT;
        }
        fds.push(PollFd::new(self.conn.as_fd(), conn_flags));
        enum Slot {
            Pidfd(u32),
            Output(u32, usize),
            Stdin(u32),
        }
        let mut slots = Vec::new();
        for id in &ids {
            let p = &self.procs[id];
            if let (Some(fd), None) = (&p.pidfd, p.exit_code) {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                slots.push(Slot::Pidfd(*id));
            }
            if p.out_credit > 0 {
                for (i, out) in p.outputs.iter().enumerate().filter(|(_, o)| o.open) {
                    fds.push(PollFd::new(out.file.as_fd(), PollFlags::POLLIN));
                    slots.push(Slot::Output(*id, i));
                }
            }
            if let (Some(stdin), false) = (&p.stdin, p.stdin_buf.is_empty()) {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLOUT));
                slots.push(Slot::Stdin(*id));
            }
        }
        // As PID 1, orphans re-parented to us only show up through waitpid: look every second.
        let timeout = if self.opts.sandbox {
            PollTimeout::from(1000u16)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(sys("poll")(e)),
        }
        let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
        let conn_revents = fds[0].revents().unwrap_or(PollFlags::empty());
        let fired: Vec<bool> = fds[1..].iter().map(ready).collect();
        drop(fds);

        if conn_revents.intersects(PollFlags::POLLOUT) {
            self.flush()?;
        }
        if conn_revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            && self.read_conn()?
        {
            return Ok(true);
        }
        for (slot, fired) in slots.into_iter().zip(fired) {
            if !fired {
                continue;
            }
            match slot {
                Slot::Pidfd(id) => self.check_exit(id),
                Slot::Output(id, i) => self.pump_output(id, i)?,
                Slot::Stdin(id) => self.pump_stdin(id),
            }
        }
        if self.opts.sandbox {
            self.reap_orphans();
        }
        self.finish_exited()?;
        self.flush()?;
        Ok(false)
    }

    /// Read what the host sent and act on every complete frame. True on a clean hang-up.
    fn read_conn(&mut self) -> Result<bool, AgentError> {
        let mut buf = [0u8; 64 * 1024];
        while self.outbuf.len() < MAX_PENDING_OUT {
            let n = match self.conn.read(&mut buf) {
                Ok(0) => return Ok(true),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                let (used, frame) = self.decoder.decode(rest)?;
                rest = &rest[used..];
                if let Some(frame) = frame {
                    self.handle(frame)?;
                }
            }
        }
        Ok(false)
    }

    fn handle(&mut self, frame: Frame) -> Result<(), AgentError> {
        let id = frame.id;
        let out_of_order = |why| ProtocolError::OutOfOrder {
            kind: frame.kind,
            id,
            why,
        };
        match frame.kind {
            FrameKind::Start => {
                if self.started || id != 0 {
                    return Err(out_of_order("Start must come once, for process 0").into());
                }
                let start: StartRequest = frame.parse_json(FrameKind::Start)?;
                start.validate()?;
                self.started = true;
                self.highest_id = Some(0);
                if let (true, Some(name)) = (self.opts.sandbox, &start.hostname) {
                    nix::unistd::sethostname(name).map_err(sys("sethostname"))?;
                }
                // The startContainer hooks run once the mounts are in place and before the
                // PID namespace, whose first child must be the container's process.
                let prepared = if self.opts.sandbox {
                    sandbox::prepare(&start).and_then(|cgroup| {
                        crate::hooks::run_start_hooks(&start)?;
                        Ok(Some((cgroup, sandbox::enter_pid_namespace(&start)?)))
                    })
                } else {
                    crate::hooks::run_start_hooks(&start).map(|()| None)
                };
                match prepared {
                    Ok(Some((cgroup, proc_view))) => {
                        self.cgroup = cgroup;
                        self.proc_view = Some(proc_view);
                    }
                    Ok(None) => {}
                    Err(message) => {
                        return self.report_spawn_failure(
                            0,
                            "container setup",
                            SpawnFailure {
                                code: SETUP_FAILED_EXIT,
                                message,
                            },
                        );
                    }
                }
                self.spawn(0, &start.process)?;
            }
            FrameKind::Exec => {
                if !self.started || self.highest_id.is_some_and(|h| id <= h) {
                    return Err(
                        out_of_order("Exec needs a running session and a new, higher id").into(),
                    );
                }
                let spec: ProcessSpec = frame.parse_json(FrameKind::Exec)?;
                spec.validate()?;
                self.highest_id = Some(id);
                if self.procs.len() >= MAX_PROCESSES {
                    self.queue(Frame::json(
                        FrameKind::Error,
                        id,
                        &ErrorReport {
                            message: format!(
                                "too many processes in this guest (limit {MAX_PROCESSES})"
                            ),
                        },
                    )?);
                } else {
                    self.spawn(id, &spec)?;
                }
            }
            FrameKind::Hosts => {
                if !self.started || id != 0 {
                    return Err(out_of_order("Hosts needs a started container, as id 0").into());
                }
                if self.opts.sandbox {
                    // Written in place: the file is the bind the container's /etc/hosts is.
                    // A failure is the console's to say: an Error for id 0 would read as the
                    // container process failing.
                    if let Err(message) = crate::network::rewrite_hosts(&frame.payload) {
                        eprintln!("husk-agent: {message}");
                    }
                }
            }
            FrameKind::Stdin
            | FrameKind::StdinEof
            | FrameKind::Credit
            | FrameKind::Signal
            | FrameKind::Resize => {
                if self.highest_id.is_none_or(|h| id > h) {
                    return Err(out_of_order("no such process was ever started").into());
                }
                // Messages for a process that already finished crossed its Exit in flight.
                let Some(p) = self.procs.get_mut(&id) else {
                    return Ok(());
                };
                match frame.kind {
                    FrameKind::Stdin => {
                        let len = frame.payload.len() as u64;
                        if len > p.stdin_allowance || p.stdin_eof {
                            return Err(out_of_order(
                                "stdin beyond the granted window or after EOF",
                            )
                            .into());
                        }
                        p.stdin_allowance -= len;
                        if p.stdin.is_some() {
                            p.stdin_buf.extend_from_slice(&frame.payload);
                        } else {
                            // The process closed its stdin: discard, but keep the host's window open.
                            p.stdin_allowance += len;
                            self.outbuf.extend(Frame::credit(id, len as u32).encode());
                        }
                    }
                    FrameKind::StdinEof => {
                        p.stdin_eof = true;
                        if p.stdin_buf.is_empty() {
                            p.stdin = None;
                        }
                    }
                    FrameKind::Credit => {
                        let more = frame.credit_value()?;
                        p.out_credit = (p.out_credit + u64::from(more)).min(u64::from(u32::MAX));
                    }
                    FrameKind::Signal => {
                        let req: SignalRequest = frame.parse_json(FrameKind::Signal)?;
                        let signal =
                            Signal::try_from(req.signal).map_err(|_| ProtocolError::Invalid {
                                what: "signal",
                                why: format!("{} is not a signal number", req.signal),
                            })?;
                        if req.all && id == 0 {
                            // Every process of the container, the init's exec'd siblings and
                            // their children among them; ESRCH is one that just exited.
                            let pids = self.cgroup.as_ref().map(ContainerCgroup::pids);
                            for pid in pids.unwrap_or_else(|| vec![p.pid.as_raw()]) {
                                let _ = kill(nix::unistd::Pid::from_raw(pid), signal);
                            }
                        } else if p.exit_code.is_none() {
                            // ESRCH only means it is exiting right now; its Exit follows.
                            let _ = kill(p.pid, signal);
                        }
                    }
                    FrameKind::Resize => {
                        let req: ResizeRequest = frame.parse_json(FrameKind::Resize)?;
                        if let Some(master) = &p.pty_master {
                            set_winsize(master, req.rows, req.cols)?;
                        }
                    }
                    _ => unreachable!("outer match limits the kinds"),
                }
            }
            FrameKind::Ready
            | FrameKind::Started
            | FrameKind::Stdout
            | FrameKind::Stderr
            | FrameKind::Exit
            | FrameKind::Error => {
                return Err(out_of_order("only the agent sends this kind").into());
            }
        }
        Ok(())
    }

    /// Start a process; a program that cannot be executed is reported like a shell would (a
    /// message on stderr and exit 127 or 126), not as a protocol error.
    fn spawn(&mut self, id: u32, spec: &ProcessSpec) -> Result<(), AgentError> {
        let role = if id == 0 {
            ProcessRole::Init
        } else {
            ProcessRole::Exec
        };
        match spawn_process(
            role,
            spec,
            self.opts,
            self.cgroup.as_ref().map(ContainerCgroup::procs_fd),
            self.proc_view
                .as_ref()
                .filter(|_| role == ProcessRole::Init),
        ) {
            Ok(p) => {
                self.queue(Frame::json(
                    FrameKind::Started,
                    id,
                    &Started {
                        pid: p.pid.as_raw(),
                    },
                )?);
                self.procs.insert(id, p);
            }
            Err(failure) => {
                let program = bounded(&format!("{:?}", spec.args[0]), 1024);
                return self.report_spawn_failure(id, &format!("exec {program}"), failure);
            }
        }
        Ok(())
    }

    /// A process that could not start: its one line on stderr, then its exit.
    fn report_spawn_failure(
        &mut self,
        id: u32,
        what: &str,
        failure: SpawnFailure,
    ) -> Result<(), AgentError> {
        let msg = format!("husk-agent: {what}: {}\n", bounded(&failure.message, 4096));
        self.queue(Frame::new(FrameKind::Stderr, id, msg.into_bytes()));
        self.queue(Frame::json(
            FrameKind::Exit,
            id,
            &ExitStatus {
                code: failure.code,
                oom_killed: false,
            },
        )?);
        if id == 0 {
            self.main_exit = Some(failure.code);
        }
        Ok(())
    }

    fn check_exit(&mut self, id: u32) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        if p.exit_code.is_some() {
            return;
        }
        match waitpid(p.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(status) => {
                if let Some(code) = exit_code(status) {
                    p.exit_code = Some(code);
                }
            }
            // Already reaped elsewhere (cannot happen for our own children outside PID 1 mode).
            Err(_) => p.exit_code = Some(255),
        }
    }

    fn reap_orphans(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    let (Some(pid), Some(code)) = (status.pid(), exit_code(status)) else {
                        continue;
                    };
                    if let Some(p) = self.procs.values_mut().find(|p| p.pid == pid) {
                        p.exit_code = Some(code);
                    }
                }
            }
        }
    }

    /// Read one chunk of a process's output within its credit and queue it.
    fn pump_output(&mut self, id: u32, index: usize) -> Result<(), AgentError> {
        let Some(p) = self.procs.get_mut(&id) else {
            return Ok(());
        };
        let budget = p.out_credit.min(MAX_DATA_CHUNK as u64) as usize;
        if budget == 0 || !p.outputs[index].open {
            return Ok(());
        }
        let mut buf = vec![0u8; budget];
        let out = &mut p.outputs[index];
        match out.file.read(&mut buf) {
            Ok(0) => out.open = false,
            Ok(n) => {
                buf.truncate(n);
                p.out_credit -= n as u64;
                let kind = out.kind;
                self.queue(Frame::new(kind, id, buf));
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted => {}
            // EIO: a pty whose last slave closed. Anything else also ends this stream.
            Err(_) => out.open = false,
        }
        Ok(())
    }

    fn pump_stdin(&mut self, id: u32) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        let Some(stdin) = p.stdin.as_mut() else {
            return;
        };
        match stdin.write(&p.stdin_buf) {
            Ok(n) => {
                p.stdin_buf.drain(..n);
                p.stdin_allowance += n as u64;
                if p.stdin_buf.is_empty() && p.stdin_eof {
                    p.stdin = None;
                }
                Frame::credit(id, n as u32).encode_into(&mut self.outbuf);
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                // EPIPE: the process closed its stdin. Give the host its window back.
                let n = p.stdin_buf.len();
                p.stdin_buf.clear();
                p.stdin = None;
                p.stdin_allowance += n as u64;
                Frame::credit(id, n as u32).encode_into(&mut self.outbuf);
            }
        }
    }

    /// For each exited process: drain what it left in its pipes (as far as credit allows), then
    /// send Exit and forget it.
    fn finish_exited(&mut self) -> Result<(), AgentError> {
        let mut exited: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, p)| p.exit_code.is_some())
            .map(|(id, _)| *id)
            .collect();
        // The container process goes last: its Exit ends the session, so every exec process
        // must have reported first.
        exited.sort_by_key(|id| *id == 0);
        for id in exited {
            let drained = self.drain_outputs(id)?;
            if !drained {
                continue; // waiting for credit from the host
            }
            if id == 0 && self.procs.len() > 1 {
                // As with a container's init: when it exits, the rest of the sandbox dies.
                for p in self.procs.values().filter(|p| p.exit_code.is_none()) {
                    let _ = kill(p.pid, Signal::SIGKILL);
                }
                continue;
            }
            let Some(p) = self.procs.remove(&id) else {
                continue;
            };
            let code = p.exit_code.unwrap_or(255);
            let oom_killed = self
                .cgroup
                .as_ref()
                .is_some_and(ContainerCgroup::saw_oom_kill);
            self.queue(Frame::json(
                FrameKind::Exit,
                id,
                &ExitStatus { code, oom_killed },
            )?);
            if id == 0 {
                self.main_exit = Some(code);
            }
        }
        Ok(())
    }

    /// True once every output is at EOF or has nothing more to read right now (a background
    /// child may keep a pipe open forever; it does not hold up the exit).
    fn drain_outputs(&mut self, id: u32) -> Result<bool, AgentError> {
        let count = self.procs.get(&id).map_or(0, |p| p.outputs.len());
        for index in 0..count {
            loop {
                let Some(p) = self.procs.get_mut(&id) else {
                    return Ok(true);
                };
                if !p.outputs[index].open {
                    break;
                }
                if p.out_credit == 0 {
                    return Ok(false);
                }
                let before = self.outbuf.len();
                self.pump_output(id, index)?;
                let p = &self.procs[&id];
                if self.outbuf.len() == before && p.outputs[index].open {
                    break; // would block: nothing pending
                }
            }
        }
        Ok(true)
    }

    fn flush(&mut self) -> Result<(), AgentError> {
        while !self.outbuf.is_empty() {
            match self.conn.write(&self.outbuf) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Ok(n) => {
                    self.outbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Used only on the way out, to get an error report to the host.
    fn flush_blocking(&mut self) -> Result<(), AgentError> {
        for _ in 0..100 {
            self.flush()?;
            if self.outbuf.is_empty() {
                return Ok(());
            }
            let mut fds = [PollFd::new(self.conn.as_fd(), PollFlags::POLLOUT)];
            let _ = poll(&mut fds, PollTimeout::from(10u16));
        }
        Ok(())
    }

    fn kill_all(&mut self) {
        for p in self.procs.values().filter(|p| p.exit_code.is_none()) {
            let _ = kill(p.pid, Signal::SIGKILL);
        }
        for p in self.procs.values().filter(|p| p.exit_code.is_none()) {
            let _ = waitpid(p.pid, None);
        }
        self.procs.clear();
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i32),
        _ => None,
    }
}

struct SpawnFailure {
    code: i32,
    message: String,
}

/// Start one process of the container: in its cgroup (`cgroup_procs`), with its rlimits,
/// umask, identity, capabilities, no_new_privs and seccomp filter.
fn spawn_process(
    role: ProcessRole,
    spec: &ProcessSpec,
    opts: ServeOptions,
    cgroup_procs: Option<RawFd>,
    proc_view: Option<&ProcView>,
) -> Result<Proc, SpawnFailure> {
    let fail = |code, message: String| SpawnFailure { code, message };
    let cwd = Path::new(&spec.cwd);
    if !cwd.is_dir() {
        if opts.sandbox && role == ProcessRole::Init {
            // As runc does: a cwd missing from the image is created for the container's own
            // process (an exec into a missing one fails, as with Docker).
            std::fs::create_dir_all(cwd)
                .map_err(|e| fail(126, format!("cannot create cwd {}: {e}", spec.cwd)))?;
        } else {
            return Err(fail(126, format!("cwd {} is not a directory", spec.cwd)));
        }
    }
    // Resolve the program here, as execvp would, so "not found" costs no fork and argv[0]
    // stays what the image asked for (busybox applets dispatch on it).
    let program =
        crate::lookup::find_executable(&spec.args[0], crate::lookup::path_of(&spec.env), cwd)
            .map_err(|e| fail(e.code, e.message))?;
    let mut cmd = Command::new(program);
    cmd.arg0(&spec.args[0])
        .args(&spec.args[1..])
        .env_clear()
        .current_dir(cwd);
    for entry in &spec.env {
        if let Some((k, v)) = entry.split_once('=') {
            cmd.env(k, v);
        }
    }
    let limits: Vec<(u32, libc::rlimit)> = spec
        .rlimits
        .iter()
        .filter_map(|l| {
            rlimit_resource(&l.kind).map(|r| {
                (
                    r,
                    libc::rlimit {
                        rlim_cur: l.soft,
                        rlim_max: l.hard,
                    },
                )
            })
        })
        .collect();
    // Switching identity and capabilities needs root; on the host as non-root we keep our own.
    let privileged = opts.sandbox || nix::unistd::geteuid().is_root();
    let confinement = Confinement::new(
        privileged.then(|| Identity {
            uid: spec.uid,
            gid: spec.gid,
            groups: spec.additional_gids.clone(),
        }),
        spec.capabilities.as_ref().filter(|_| privileged),
        spec.no_new_privs,
        spec.seccomp.clone(),
    )
    .map_err(|e| fail(126, e.to_string()))?;
    let umask = spec.umask.unwrap_or(0o022) as libc::mode_t;
    // Owned by the closure below, which must be 'static.
    let proc_view = proc_view.cloned();
    let terminal = spec.terminal;

    let mut pty_master = None;
    let mut outputs = Vec::new();
    if terminal {
        let size = spec.console_size.map(|(rows, cols)| Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        });
        let pty = openpty(size.as_ref(), None).map_err(|e| fail(126, format!("openpty: {e}")))?;
        for fd in [&pty.master, &pty.slave] {
            fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
                .map_err(|e| fail(126, format!("fcntl: {e}")))?;
        }
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| fail(126, format!("dup pty: {e}")))
        };
        cmd.stdin(Stdio::from(dup(&pty.slave)?))
            .stdout(Stdio::from(dup(&pty.slave)?))
            .stderr(Stdio::from(pty.slave));
        pty_master = Some(pty.master);
    } else {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    }

    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if terminal && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(procs) = cgroup_procs {
                // "0" is the writer itself; the agent's own handle, so before the uid change.
                if libc::write(procs, b"0".as_ptr().cast(), 1) < 0 {
                    return Err(io::Error::last_os_error());
                }
                // Its own cgroup namespace, rooted there: /proc/self/cgroup reads "0::/", as
                // in a process container (an exec'd process gets the same view).
                if libc::unshare(libc::CLONE_NEWCGROUP) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(view) = &proc_view {
                // PID 1 of the container's namespace: its own /proc, before the capabilities
                // to mount one go.
                view.mount()?;
            }
            for (resource, limit) in &limits {
                if libc::setrlimit(*resource, limit) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            libc::umask(umask);
            confinement.apply().map_err(|e| match e {
                crate::confine::ConfineError::Sys { source, .. } => source,
                // `new` checked everything else before the fork.
                _ => io::Error::from_raw_os_error(libc::EINVAL),
            })
        });
    }
    let spawned = cmd.spawn();
    // Drop our copies of the pty slave now, so the master sees EOF when the process exits.
    drop(cmd);
    let mut child = spawned.map_err(|e| {
        let code = match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => 127,
            _ => 126,
        };
        fail(code, e.to_string())
    })?;
    let pid = Pid::from_raw(child.id() as i32);
    let nonblocking = |fd: OwnedFd| -> Result<File, SpawnFailure> {
        set_nonblocking(&fd).map_err(|e| fail(126, e.to_string()))?;
        Ok(File::from(fd))
    };
    let stdin = if let Some(master) = &pty_master {
        outputs.push(Output {
            file: nonblocking(master.try_clone().map_err(|e| fail(126, e.to_string()))?)?,
            kind: FrameKind::Stdout,
            open: true,
        });
        Some(nonblocking(
            master.try_clone().map_err(|e| fail(126, e.to_string()))?,
        )?)
    } else {
        let (Some(i), Some(o), Some(e)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            unreachable!("all three were configured as pipes");
        };
        outputs.push(Output {
            file: nonblocking(o.into())?,
            kind: FrameKind::Stdout,
            open: true,
        });
        outputs.push(Output {
            file: nonblocking(e.into())?,
            kind: FrameKind::Stderr,
            open: true,
        });
        Some(nonblocking(i.into())?)
    };
    // A pidfd makes the exit pollable alongside the stdio. Without one (old kernels) the PID 1
    // loop still notices the exit through its periodic waitpid.
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is passed.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    // SAFETY: a non-negative return is a freshly opened fd that nothing else owns.
    let pidfd = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw as i32) });
    // Keep the std Child from waiting on drop-less paths: we reap through waitpid ourselves.
    let _ = child.id();
    drop(child);
    Ok(Proc {
        pid,
        pidfd,
        stdin,
        stdin_buf: Vec::new(),
        stdin_eof: false,
        stdin_allowance: u64::from(INITIAL_WINDOW),
        outputs,
        pty_master,
        out_credit: u64::from(INITIAL_WINDOW),
        exit_code: None,
    })
}

fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    let flags = fcntl(raw, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    fcntl(
        raw,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(io::Error::from)?;
    Ok(())
}

fn set_winsize(master: &OwnedFd, rows: u16, cols: u16) -> Result<(), AgentError> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize struct from the pointer, which outlives the call.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc < 0 {
        return Err(sys("TIOCSWINSZ")(Errno::last()));
    }
    Ok(())
}
