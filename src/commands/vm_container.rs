//! Running a container with `--isolation vm`: the same record, spec and stdio handling as
//! process isolation, with the process inside a microVM under the guest agent.
//!
//! The supervising husk process (the foreground CLI or the detached monitor) holds the VM. It
//! relays signals to the guest process: those sent to itself (Ctrl-C, `kill` of the CLI) and
//! those that `husk kill`/`stop`/`rm -f` send through the container's control socket, so that
//! even SIGKILL reaches the guest process and the exit is recorded as Docker records it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use husk::container::logs::{LogWriter, Stream, Tee};
use husk::container::teardown::cgroup_name;
use husk::container::{Containers, Record};
use husk::process::{Cgroup, CgroupLayout};
use husk::vm::backend::{self, Guest};
use husk::vm::VmError;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use rootfs_agent::client::{AgentClient, Process, ProcessIo};
use rootfs_agent::protocol::ProcessSpec;

use super::run::{layer_dirs, load_spec, mark_starting, record_exit, StartFailure};

/// Where `husk kill` reaches the supervisor of a VM container.
pub fn control_socket(id: &str) -> PathBuf {
    Path::new(husk::container::private_dir::RUNTIME_DIR)
        .join("control")
        .join(format!("{}.sock", &id[..12.min(id.len())]))
}

/// Ask the supervisor of a running VM container to deliver `signal` to the guest process.
/// Returns false when no supervisor answers (it is gone; the caller falls back to the pid).
pub fn send_signal(id: &str, signal: Signal) -> bool {
    let Ok(mut conn) = UnixStream::connect(control_socket(id)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    if writeln!(conn, "signal {}", signal as i32).is_err() {
        return false;
    }
    let mut reply = String::new();
    BufReader::new(conn).read_line(&mut reply).is_ok() && reply.trim() == "ok"
}

/// Where the container's stdio goes.
pub enum VmStdio {
    /// The CLI's own stdin/stdout/stderr (stdin only with -i).
    Terminal { interactive: bool },
    /// Writers supplied by the detached monitor (its json-file log).
    Writers(ProcessIo),
}

/// Boot the container's VM, run its process, record the exit. Returns Ok(exit code) when the
/// process ran, Err(Docker's code) when the VM or the process could not start.
pub fn run(
    root: &Path,
    store: &Containers,
    record: &Record,
    stdio: VmStdio,
) -> Result<Result<i32, i32>> {
    let dir = store.dir_of(&record.id);
    let spec = load_spec(store, &record.id)?;
    let layers = layer_dirs(root, record)?;
    let tty = record.options.tty;

    // Blocked in every thread (the monitor's threads inherit the mask) and taken by the relay.
    let mut mask = SigSet::empty();
    for signal in husk::process::FORWARDED {
        mask.add(signal);
    }
    mask.add(Signal::SIGWINCH);
    let mut old_mask = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old_mask))?;

    let log = match (&stdio, record.auto_remove) {
        (VmStdio::Terminal { .. }, false) => Some(Arc::new(Mutex::new(LogWriter::open(&dir)?))),
        _ => None,
    };
    mark_starting(store, &record.id, record.restart_count)?;
    let result = (|| -> Result<rootfs_agent::protocol::ExitStatus, VmError> {
        husk::cost::begin(husk::cost::Phase::MonitorBuild); // cost ledger
        let plan = backend::plan(
            root,
            &dir,
            &record.id,
            &record.image_id,
            &layers,
            &record.options,
        )?;
        let request = backend::start_request(&spec, &layers, &plan.guest_mounts)?;
        husk::cost::note_vm(plan.hypervisor.name(), plan.memory_mib);
        let guest = Guest::boot(&plan)?;
        husk::cost::note_monitor_pid(guest.monitor_pid());
        let agent_setup = guest
            .ready()
            .ready_ms
            .saturating_sub(guest.ready().init_started_ms);
        husk::cost::split_current(
            husk::cost::Phase::AgentReady,
            std::time::Duration::from_millis(agent_setup),
        ); // cost ledger
           // Best effort: accounting must not stop a container from running.
        let accounting = MonitorCgroup::enter(&record.id, guest.monitor_pid()).ok();
        let io = match stdio {
            VmStdio::Terminal { interactive } => {
                let stdin = interactive
                    .then(|| Box::new(std::io::stdin()) as Box<dyn std::io::Read + Send>);
                match log.as_ref() {
                    // Logged like a detached container (`husk logs`), unless --rm removes it.
                    Some(log) => ProcessIo {
                        stdin,
                        stdout: Box::new(Tee {
                            out: std::io::stdout(),
                            log: Arc::clone(log),
                            stream: Stream::Stdout,
                        }),
                        stderr: Box::new(Tee {
                            out: std::io::stderr(),
                            log: Arc::clone(log),
                            stream: Stream::Stderr,
                        }),
                    },
                    None => ProcessIo {
                        stdin,
                        stdout: Box::new(std::io::stdout()),
                        stderr: Box::new(std::io::stderr()),
                    },
                }
            }
            VmStdio::Writers(io) => io,
        };
        let _raw = tty.then(husk::process::enter_raw_mode).flatten();
        husk::cost::begin(husk::cost::Phase::ProcessStart); // cost ledger
        let process = Arc::new(guest.start(&request, io)?);
        husk::cost::begin(husk::cost::Phase::ProcessRun); // cost ledger
        let done = Arc::new(AtomicBool::new(false));
        let relay = relay_signals(mask, Arc::clone(&process), Arc::clone(&done));
        let control = serve_control(
            &record.id,
            Arc::clone(&process),
            guest.agent(),
            Arc::clone(&done),
        );
        // Published last: whoever sees the pid (`run -d` returns then) can reach the control
        // socket for exec, kill and stop.
        let supervisor = std::process::id() as i32;
        let _ = store.update(&record.id, |r| r.state.pid = Some(supervisor));
        let exit = match process.wait_status() {
            // The VM went away under a running process (its monitor was killed or crashed):
            // the process died with it, as with SIGKILL, and the record says so rather than
            // that it never started.
            Err(rootfs_agent::client::ClientError::Closed(_, why)) => {
                eprintln!(
                    "husk: the VM of container {} stopped under its process{why}",
                    &record.id[..12.min(record.id.len())]
                );
                Ok(rootfs_agent::protocol::ExitStatus {
                    code: 128 + libc::SIGKILL,
                    oom_killed: false,
                })
            }
            other => other,
        };
        husk::cost::sample_now(); // cost ledger: vCPU time before the VMM exits
        husk::cost::begin(husk::cost::Phase::Teardown); // cost ledger
        done.store(true, Ordering::SeqCst);
        // Wake the relay (blocked in sigwait) and the control listener so they end.
        let _ = nix::sys::pthread::pthread_kill(relay, Signal::SIGWINCH);
        let _ = UnixStream::connect(control_socket(&record.id));
        let _ = control.map(|handle| handle.join());
        let _ = std::fs::remove_file(control_socket(&record.id));
        guest.shutdown();
        if let Some(accounting) = accounting {
            accounting.leave();
        }
        Ok(exit?)
    })();
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
    let started = result.is_ok();
    let oom_killed = result.as_ref().is_ok_and(|exit| exit.oom_killed);
    let code = record_exit(
        store,
        &record.id,
        result.map(|exit| exit.code).map_err(|err| StartFailure {
            code: 125,
            message: err.to_string(),
        }),
        oom_killed,
    );
    Ok(if started { Ok(code) } else { Err(code) })
}

/// The VM's host side (QEMU, or husk's monitor process) in the container's own cgroup, `husk/<id>`, so the host's accounting and `husk stats` cover it.
struct MonitorCgroup {
    cgroup: Cgroup,
    /// Where the monitor was before, when the monitor is this process (to move back out
    /// before the cgroup is removed).
    return_to: Vec<PathBuf>,
}

impl MonitorCgroup {
    fn enter(id: &str, monitor_pid: i32) -> Result<Self> {
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
            return Err(err.into());
        }
        Ok(Self { cgroup, return_to })
    }

    fn leave(self) {
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

/// Frames the supervisor sends back to `husk exec` over the control socket:
/// kind (1 stdout, 2 stderr, 3 exit code, 4 error) + u32 length + payload.
pub const FRAME_STDOUT: u8 = 1;
pub const FRAME_STDERR: u8 = 2;
pub const FRAME_EXIT: u8 = 3;
pub const FRAME_ERROR: u8 = 4;
/// Largest control frame either side accepts.
pub const MAX_CONTROL_FRAME: usize = 64 * 1024;

struct FrameWriter {
    conn: Arc<Mutex<UnixStream>>,
    kind: u8,
}

fn write_frame(conn: &Mutex<UnixStream>, kind: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
    for chunk in payload
        .chunks(MAX_CONTROL_FRAME)
        .chain(payload.is_empty().then_some(&[][..]))
    {
        conn.write_all(&[kind])?;
        conn.write_all(&(chunk.len() as u32).to_le_bytes())?;
        conn.write_all(chunk)?;
    }
    Ok(())
}

impl Write for FrameWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        write_frame(&self.conn, self.kind, buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What `husk exec` asks the supervisor of a VM container for (one JSON line).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ExecRequest {
    pub process: ProcessSpec,
    pub interactive: bool,
    /// Kill the process when the requester hangs up: husk's own helpers (`cp`'s tar, `top`'s
    /// ps), whose output nobody reads once the requester is gone. A user's `exec` lives on,
    /// as in Docker.
    #[serde(default)]
    pub kill_on_hangup: bool,
}

/// Run a process in a VM container through its supervisor, streaming the process's output to
/// `stdout`/`stderr` and `stdin` to it; returns its exit code. With `detach`, returns once the
/// request is sent.
pub fn exec_via_supervisor(
    id: &str,
    request: &ExecRequest,
    stdin: Option<Box<dyn Read + Send>>,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
    detach: bool,
) -> Result<i32> {
    let mut conn = UnixStream::connect(control_socket(id)).with_context(|| {
        format!(
            "the supervisor of container {} does not answer",
            &id[..12.min(id.len())]
        )
    })?;
    writeln!(conn, "exec {}", serde_json::to_string(request)?)?;
    if detach {
        return Ok(0);
    }
    if let Some(mut input) = stdin {
        let mut to_guest = conn.try_clone()?;
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut input, &mut to_guest);
            let _ = to_guest.shutdown(std::net::Shutdown::Write);
        });
    }
    let mut header = [0u8; 5];
    let mut payload = Vec::new();
    loop {
        if conn.read_exact(&mut header).is_err() {
            bail!("the container's supervisor closed the exec session");
        }
        let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > MAX_CONTROL_FRAME {
            bail!("the container's supervisor sent an oversized frame");
        }
        payload.resize(len, 0);
        conn.read_exact(&mut payload)?;
        match header[0] {
            FRAME_STDOUT => {
                stdout.write_all(&payload)?;
                stdout.flush()?;
            }
            FRAME_STDERR => stderr.write_all(&payload)?,
            FRAME_EXIT if len == 4 => {
                return Ok(i32::from_le_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ]))
            }
            FRAME_ERROR => bail!("{}", String::from_utf8_lossy(&payload)),
            other => bail!("the container's supervisor sent an unknown frame kind {other}"),
        }
    }
}

/// A root process in the container's guest with the container's environment, for husk's own
/// use (`top`, `cp`).
pub fn root_request(
    store: &Containers,
    record: &Record,
    args: Vec<String>,
    interactive: bool,
) -> Result<ExecRequest> {
    let spec = load_spec(store, &record.id)?;
    let env = spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default();
    let mut process = ProcessSpec::new(args);
    process.env = env;
    Ok(ExecRequest {
        process,
        interactive,
        kill_on_hangup: true,
    })
}

/// Read one request line without reading past it (what follows is the exec's stdin).
fn read_request_line(conn: &mut UnixStream) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < MAX_CONTROL_FRAME {
        match conn.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => return String::from_utf8(line).ok(),
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
    }
    None
}

/// Run one exec request in the guest, streaming its output back as frames.
fn serve_exec(agent: Arc<AgentClient>, conn: UnixStream, request: ExecRequest) {
    let Ok(reader) = conn.try_clone() else { return };
    let shared = Arc::new(Mutex::new(conn));
    let io = ProcessIo {
        stdin: request
            .interactive
            .then(|| Box::new(reader) as Box<dyn Read + Send>),
        stdout: Box::new(FrameWriter {
            conn: Arc::clone(&shared),
            kind: FRAME_STDOUT,
        }),
        stderr: Box::new(FrameWriter {
            conn: Arc::clone(&shared),
            kind: FRAME_STDERR,
        }),
    };
    let result = agent.exec(&request.process, io).and_then(|process| {
        let process = Arc::new(process);
        let watcher = request
            .kill_on_hangup
            .then(|| kill_on_hangup(&shared, Arc::clone(&process)))
            .flatten();
        let code = process.wait();
        if let Some((done, handle)) = watcher {
            done.store(true, Ordering::SeqCst);
            let _ = handle.join();
        }
        code
    });
    let _ = match result {
        Ok(code) => write_frame(&shared, FRAME_EXIT, &code.to_le_bytes()),
        Err(err) => write_frame(&shared, FRAME_ERROR, err.to_string().as_bytes()),
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
    husk::container::private_dir::ensure(Path::new(husk::container::private_dir::RUNTIME_DIR))
        .ok()?;
    husk::container::private_dir::ensure(path.parent()?).ok()?;
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).ok()?;
    Some(std::thread::spawn(move || {
        for conn in listener.incoming() {
            if done.load(Ordering::SeqCst) {
                return;
            }
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let Some(line) = read_request_line(&mut conn) else {
                continue;
            };
            if let Some(json) = line.strip_prefix("exec ") {
                let _ = conn.set_read_timeout(None);
                match serde_json::from_str::<ExecRequest>(json) {
                    Ok(request) => {
                        let agent = Arc::clone(&agent);
                        std::thread::spawn(move || serve_exec(agent, conn, request));
                    }
                    Err(err) => {
                        let shared = Mutex::new(conn);
                        let _ = write_frame(&shared, FRAME_ERROR, err.to_string().as_bytes());
                    }
                }
                continue;
            }
            let reply = match line
                .trim()
                .strip_prefix("signal ")
                .and_then(|n| n.parse::<i32>().ok())
                .filter(|n| (1..=64).contains(n))
            {
                Some(signal) if process.signal(signal).is_ok() => "ok",
                _ => "error",
            };
            let _ = writeln!(&conn, "{reply}");
        }
    }))
}
