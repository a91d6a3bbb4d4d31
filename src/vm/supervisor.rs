//! The supervisor side of a VM container: the husk process that holds the VM (the foreground
//! CLI or the detached container monitor) serves the container's control socket
//! (vm/control.rs) and relays the signals it receives to the guest process, so that even
//! SIGKILL sent by `husk kill`/`stop`/`rm -f` reaches the guest process and the exit is
//! recorded as Docker records it. This file also holds the client side of that socket.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use rootfs_agent::client::{AgentClient, Process, ProcessIo};

use super::backend;
use super::control::{self, ControlError, ControlRequest, ExecFrame, ExecRequest};
use crate::container::teardown::cgroup_name;
use crate::process::{Cgroup, CgroupLayout};

/// Where `husk kill` reaches the supervisor of a VM container.
pub fn control_socket(id: &str) -> PathBuf {
    Path::new(crate::container::private_dir::RUNTIME_DIR)
        .join("control")
        .join(format!("{}.sock", &id[..12.min(id.len())]))
}

/// Ask the supervisor of a running VM container to deliver `signal` to the guest process.
/// Returns false when no supervisor answers (it is gone; the caller falls back to the pid).
pub fn send_signal(id: &str, signal: Signal) -> bool {
    signal_request(id, ControlRequest::Signal(signal as i32))
}

/// The same for every process of the container in the guest (`kill --all`).
pub fn send_signal_all(id: &str, signal: i32) -> bool {
    signal_request(id, ControlRequest::SignalAll(signal))
}

/// One control request the supervisor answers `ok` or `error`: signals and resizes.
fn signal_request(id: &str, request: ControlRequest) -> bool {
    let Ok(mut conn) = UnixStream::connect(control_socket(id)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    if conn.write_all(&request.encode()).is_err() {
        return false;
    }
    let mut reply = [0u8; 3];
    conn.read_exact(&mut reply).is_ok() && &reply == b"ok\n"
}

/// Give a running VM container a new /etc/hosts through its supervisor; false when no
/// supervisor answers in time (the container is not running: it gets the file at its next
/// start) or the file is too large for a control request.
pub fn update_hosts(id: &str, hosts: &str) -> bool {
    let line = ControlRequest::Hosts(hosts.to_string()).encode();
    if line.len() > control::MAX_CONTROL_FRAME {
        return false;
    }
    let Ok(mut conn) = UnixStream::connect(control_socket(id)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
    if conn.write_all(&line).is_err() {
        return false;
    }
    let mut reply = [0u8; 3];
    conn.read_exact(&mut reply).is_ok() && &reply == b"ok\n"
}

/// Run a process in a VM container through its supervisor, streaming the process's output to
/// `stdout`/`stderr` and `stdin` to it; returns its exit code. With `detach`, returns once the
/// request is sent.
pub fn exec_via_supervisor(
    id: &str,
    request: ExecRequest,
    stdin: Option<Box<dyn Read + Send>>,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
    detach: bool,
) -> Result<i32, ControlError> {
    let mut conn = UnixStream::connect(control_socket(id)).map_err(|_| {
        ControlError::Io(format!(
            "the supervisor of container {} does not answer",
            &id[..12.min(id.len())]
        ))
    })?;
    let session = request.session.clone();
    conn.write_all(&ControlRequest::Exec(Box::new(request)).encode())
        .map_err(|e| ControlError::Io(e.to_string()))?;
    if detach {
        return Ok(0);
    }
    let _resizes = session.map(|session| ResizeRelay::start(id, session));
    if let Some(mut input) = stdin {
        let mut to_guest = conn
            .try_clone()
            .map_err(|e| ControlError::Io(e.to_string()))?;
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut input, &mut to_guest);
            let _ = to_guest.shutdown(std::net::Shutdown::Write);
        });
    }
    control::follow_exec(&mut conn, stdout, stderr)
}

/// Tell the supervisor that exec session `session`'s terminal is now `rows` x `cols`.
pub fn send_resize(id: &str, session: &str, rows: u16, cols: u16) -> bool {
    signal_request(
        id,
        ControlRequest::Resize {
            session: session.to_string(),
            rows,
            cols,
        },
    )
}

/// Tell the supervisor that the container's own terminal is now `rows` x `cols`.
pub fn send_process_resize(id: &str, rows: u16, cols: u16) -> bool {
    signal_request(id, ControlRequest::ResizeProcess { rows, cols })
}

/// For an exec with a terminal: a thread that turns this process's SIGWINCH (the window of
/// its terminal changed) into resize requests for the session, until dropped.
struct ResizeRelay {
    done: Arc<AtomicBool>,
    thread: Option<(nix::sys::pthread::Pthread, std::thread::JoinHandle<()>)>,
}

impl ResizeRelay {
    fn start(id: &str, session: String) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGWINCH);
        // Blocked here, so the threads started after this (stdin's copier, this relay) have
        // it blocked too and sigwait takes it; SIGWINCH's default is to be ignored, so a
        // thread that existed before loses nothing but a resize.
        if mask.thread_block().is_err() {
            return Self { done, thread: None };
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = Arc::clone(&done);
        let id = id.to_string();
        let handle = std::thread::spawn(move || {
            let _ = tx.send(nix::sys::pthread::pthread_self());
            while let Ok(_winch) = mask.wait() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                if let Some((rows, cols)) = backend::terminal_size() {
                    send_resize(&id, &session, rows, cols);
                }
            }
        });
        let thread = rx.recv().ok().map(|pthread| (pthread, handle));
        Self { done, thread }
    }
}

impl Drop for ResizeRelay {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some((pthread, handle)) = self.thread.take() {
            let _ = nix::sys::pthread::pthread_kill(pthread, Signal::SIGWINCH);
            let _ = handle.join();
        }
    }
}

/// The exec processes with a terminal that can be resized, by session. Bounded: an exec
/// beyond the bound runs, and only its resizes are refused.
type Sessions = Arc<Mutex<std::collections::HashMap<String, Arc<Process>>>>;
const MAX_SESSIONS: usize = 256;

/// The supervisor's services for one running guest process: the signal relay and the control
/// socket. Ends with [`Supervision::finish`].
pub struct Supervision {
    id: String,
    done: Arc<AtomicBool>,
    relay: nix::sys::pthread::Pthread,
    control: Option<std::thread::JoinHandle<()>>,
}

impl Supervision {
    /// Relay the signals of `mask` (blocked in every thread by the caller) to `process`, and
    /// serve the control socket.
    pub fn start(id: &str, mask: SigSet, process: Arc<Process>, agent: Arc<AgentClient>) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let relay = relay_signals(mask, Arc::clone(&process), Arc::clone(&done));
        let control = serve_control(id, process, agent, Arc::clone(&done));
        Supervision {
            id: id.to_string(),
            done,
            relay,
            control,
        }
    }

    /// The process has exited: stop relaying and serving.
    pub fn finish(self) {
        self.done.store(true, Ordering::SeqCst);
        // Wake the relay (blocked in sigwait) and the control listener so they end.
        let _ = nix::sys::pthread::pthread_kill(self.relay, Signal::SIGWINCH);
        let _ = UnixStream::connect(control_socket(&self.id));
        if let Some(handle) = self.control {
            let _ = handle.join();
        }
        let _ = std::fs::remove_file(control_socket(&self.id));
    }
}

/// The VM's host side (QEMU, or husk's monitor process) in the container's own cgroup, `husk/<id>`, so the host's accounting and `husk stats` cover it.
pub struct MonitorCgroup {
    cgroup: Cgroup,
    /// Where the monitor was before, when the monitor is this process (to move back out
    /// before the cgroup is removed).
    return_to: Vec<PathBuf>,
}

impl MonitorCgroup {
    pub fn enter(id: &str, monitor_pid: i32) -> Result<Self, crate::process::CgroupError> {
        let layout = CgroupLayout::detect()?;
        let return_to = if monitor_pid == std::process::id() as i32 {
            own_cgroup_procs(&layout)
        } else {
            Vec::new()
        };
        let cgroup = Cgroup::create(layout, &cgroup_name(id), None)?;
        for dir in cgroup.paths() {
            // cgroup v1 charges memory to where it was first touched; moving the charges
            // along makes the monitor's (and the guest's) memory count here.
            let knob = dir.join("memory.move_charge_at_immigrate");
            if knob.exists() {
                let _ = std::fs::write(knob, "3");
            }
        }
        if let Err(err) = cgroup.add_process(monitor_pid) {
            let _ = cgroup.destroy();
            return Err(err);
        }
        Ok(Self { cgroup, return_to })
    }

    pub fn leave(self) {
        for procs in &self.return_to {
            let _ = std::fs::write(procs, std::process::id().to_string());
        }
        let _ = self.cgroup.destroy();
    }
}

/// cgroup.procs of the cgroups this process is in, one per hierarchy of `layout`.
fn own_cgroup_procs(layout: &CgroupLayout) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let entries: Vec<(Vec<&str>, &str)> = text
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?.split(',').collect();
            Some((controllers, parts.next()?.trim_start_matches('/')))
        })
        .collect();
    let mut procs: Vec<PathBuf> = match layout {
        CgroupLayout::Unified(root) => entries
            .iter()
            .filter(|(controllers, _)| controllers == &[""])
            .map(|(_, path)| root.join(path).join("cgroup.procs"))
            .collect(),
        CgroupLayout::Legacy(mounts) => mounts
            .iter()
            .filter_map(|(controller, mount)| {
                let (_, path) = entries
                    .iter()
                    .find(|(controllers, _)| controllers.contains(&controller.as_str()))?;
                Some(mount.join(path).join("cgroup.procs"))
            })
            .collect(),
    };
    procs.sort();
    procs.dedup();
    procs
}

/// Relay signals sent to this process to the guest process; window-size changes become
/// resizes. Returns the thread to wake when the process has exited.
fn relay_signals(
    mask: SigSet,
    process: Arc<Process>,
    done: Arc<AtomicBool>,
) -> nix::sys::pthread::Pthread {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(nix::sys::pthread::pthread_self());
        while let Ok(signal) = mask.wait() {
            if done.load(Ordering::SeqCst) {
                return;
            }
            let _ = match signal {
                Signal::SIGWINCH => match backend::terminal_size() {
                    Some((rows, cols)) => process.resize(rows, cols),
                    None => Ok(()),
                },
                other => process.signal(other as i32),
            };
        }
    });
    rx.recv().expect("the relay thread reports its id")
}

/// Writes a process's output as exec frames on the requester's connection.
struct FrameWriter {
    conn: Arc<Mutex<UnixStream>>,
    stderr: bool,
}

fn send_frame(conn: &Mutex<UnixStream>, frame: &ExecFrame) -> std::io::Result<()> {
    let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
    frame.write(&mut *conn)
}

impl Write for FrameWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let frame = if self.stderr {
            ExecFrame::Stderr(buf.to_vec())
        } else {
            ExecFrame::Stdout(buf.to_vec())
        };
        send_frame(&self.conn, &frame)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Run one exec request in the guest, streaming its output back as frames.
fn serve_exec(agent: Arc<AgentClient>, conn: UnixStream, request: ExecRequest, sessions: Sessions) {
    let Ok(reader) = conn.try_clone() else { return };
    let shared = Arc::new(Mutex::new(conn));
    let io = ProcessIo {
        stdin: request
            .interactive
            .then(|| Box::new(reader) as Box<dyn Read + Send>),
        stdout: Box::new(FrameWriter {
            conn: Arc::clone(&shared),
            stderr: false,
        }),
        stderr: Box::new(FrameWriter {
            conn: Arc::clone(&shared),
            stderr: true,
        }),
    };
    let result = agent.exec(&request.process, io).and_then(|process| {
        let process = Arc::new(process);
        let session = request.session.as_ref().filter(|session| {
            let mut sessions = sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions.len() < MAX_SESSIONS
                && !sessions.contains_key(*session)
                && sessions
                    .insert(session.to_string(), Arc::clone(&process))
                    .is_none()
        });
        let watcher = request
            .kill_on_hangup
            .then(|| kill_on_hangup(&shared, Arc::clone(&process)))
            .flatten();
        let code = process.wait();
        if let Some(session) = session {
            sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(session);
        }
        if let Some((done, handle)) = watcher {
            done.store(true, Ordering::SeqCst);
            let _ = handle.join();
        }
        code
    });
    let _ = match result {
        Ok(code) => send_frame(&shared, &ExecFrame::Exit(code)),
        Err(err) => send_frame(&shared, &ExecFrame::Error(err.to_string())),
    };
}

/// Watch the requester's connection and SIGKILL `process` in the guest once it has hung up
/// entirely (POLLHUP: closed, not just done sending stdin). Ends when `done` is set.
fn kill_on_hangup(
    conn: &Mutex<UnixStream>,
    process: Arc<Process>,
) -> Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)> {
    let watched = conn.lock().ok()?.try_clone().ok()?;
    let done = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&done);
    let handle = std::thread::spawn(move || {
        use std::os::fd::AsFd;
        while !stop.load(Ordering::SeqCst) {
            let mut fds = [nix::poll::PollFd::new(
                watched.as_fd(),
                nix::poll::PollFlags::empty(),
            )];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(200u16));
            let hung_up = fds[0].revents().is_some_and(|r| {
                r.intersects(nix::poll::PollFlags::POLLHUP | nix::poll::PollFlags::POLLERR)
            });
            if hung_up {
                let _ = process.signal(libc::SIGKILL);
                return;
            }
        }
    });
    Some((done, handle))
}

/// Answer requests from `husk kill`/`stop`/`rm -f` (`signal N`) and `husk exec`
/// (`exec {json}`) until the container's process has exited.
fn serve_control(
    id: &str,
    process: Arc<Process>,
    agent: Arc<AgentClient>,
    done: Arc<AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    let path = control_socket(id);
    crate::container::private_dir::ensure(Path::new(crate::container::private_dir::RUNTIME_DIR))
        .ok()?;
    crate::container::private_dir::ensure(path.parent()?).ok()?;
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).ok()?;
    let sessions: Sessions = Arc::default();
    Some(std::thread::spawn(move || {
        for conn in listener.incoming() {
            if done.load(Ordering::SeqCst) {
                return;
            }
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let request = match control::read_request_line(&mut conn) {
                Ok(Some(line)) => ControlRequest::parse(&line),
                Ok(None) => continue,
                Err(err) => Err(err),
            };
            match request {
                Ok(ControlRequest::Exec(request)) => {
                    let _ = conn.set_read_timeout(None);
                    let agent = Arc::clone(&agent);
                    let sessions = Arc::clone(&sessions);
                    std::thread::spawn(move || serve_exec(agent, conn, *request, sessions));
                }
                Ok(ControlRequest::Resize {
                    session,
                    rows,
                    cols,
                }) => {
                    let process = sessions
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&session)
                        .cloned();
                    let reply: &[u8] = match process.map(|p| p.resize(rows, cols)) {
                        Some(Ok(())) => b"ok\n",
                        _ => b"error\n",
                    };
                    let _ = conn.write_all(reply);
                }
                Ok(ControlRequest::ResizeProcess { rows, cols }) => {
                    let reply: &[u8] = match process.resize(rows, cols) {
                        Ok(()) => b"ok\n",
                        Err(_) => b"error\n",
                    };
                    let _ = conn.write_all(reply);
                }
                Ok(ControlRequest::Hosts(hosts)) => {
                    let reply: &[u8] = match agent.update_hosts(&hosts) {
                        Ok(()) => b"ok\n",
                        Err(_) => b"error\n",
                    };
                    let _ = conn.write_all(reply);
                }
                Ok(ControlRequest::SignalAll(signal)) => {
                    let reply: &[u8] = match process.signal_all(signal) {
                        Ok(()) => b"ok\n",
                        Err(_) => b"error\n",
                    };
                    let _ = conn.write_all(reply);
                }
                Ok(ControlRequest::Signal(signal)) => {
                    let reply: &[u8] = match process.signal(signal) {
                        Ok(()) => b"ok\n",
                        Err(_) => b"error\n",
                    };
                    let _ = conn.write_all(reply);
                }
                Err(err) => {
                    let _ = ExecFrame::Error(err.to_string()).write(&mut conn);
                }
            }
        }
    }))
}
