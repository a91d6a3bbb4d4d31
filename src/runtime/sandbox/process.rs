//! Process isolation behind [`Sandbox`]: the container is a namespaced process on the host
//! kernel (src/process), supervised by this husk process.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::sys::signal::Signal;
use oci_spec::runtime::Process;

use super::{ExecIo, RunContext, RunExit, RunIo, Sandbox, SharedLog, Target};
use crate::container::logs::{Stream, Tee};
use crate::container::spec::SpecOptions;
use crate::container::teardown::cgroup_name;
use crate::container::{Isolation, ProcessIdentity, Record};
use crate::cost::Phase;
use crate::process::exec::{exec, ExecConfig};
use crate::process::{self, Cgroup, CgroupLayout, LaunchConfig, Root};
use crate::runtime::container::StartFailure;
use crate::runtime::{archive, RuntimeConfig, RuntimeError};

pub struct ProcessSandbox;

impl Sandbox for ProcessSandbox {
    fn isolation(&self) -> Isolation {
        Isolation::Process
    }

    fn validate(&self, _: &SpecOptions, _: &RuntimeConfig) -> Result<(), RuntimeError> {
        // Every flag husk parses is honoured on the host kernel.
        Ok(())
    }

    fn first_phase(&self) -> Phase {
        Phase::Setup
    }

    fn run(&self, ctx: &RunContext, io: RunIo) -> Result<RunExit, StartFailure> {
        // A terminal of ours: the container's pty starts with its size (in this run's spec
        // only; the spec on disk is the container's, not this terminal's).
        let sized;
        let ctx = match (&io, ctx.state.record.options.tty, process::console_size()) {
            (RunIo::Foreground { .. }, true, Some(size)) => {
                let mut spec = ctx.spec.clone();
                if let Some(mut process) = spec.process().clone() {
                    process.set_console_size(Some(size));
                    spec.set_process(Some(process));
                }
                sized = spec;
                &RunContext {
                    spec: &sized,
                    ..*ctx
                }
            }
            _ => ctx,
        };
        let dir = ctx.state.dir();
        let cgroup = cgroup_name(&ctx.state.record.id);
        // Held until the container has exited: its namespace, reserved ports and endpoint.
        let hostname = ctx.spec.hostname().clone().unwrap_or_default();
        let attachment = crate::network::attach(ctx.root, ctx.state.record, &dir, &hostname)
            .map_err(RuntimeError::from)?;
        let network = attachment.as_ref().map(|a| a.join());
        let on_started = |container: &process::Container| {
            ctx.cost.begin(Phase::ProcessRun); // cost ledger
            ctx.state.publish_pid(container.pid());
        };
        let config = |stdio| launch(ctx, &dir, &cgroup, stdio, network);
        let exit = match io {
            // Nothing to log: the container has the terminal to itself (the fastest path).
            RunIo::Foreground { log: None } => process::run_foreground(&config(None), on_started),
            RunIo::Foreground { log: Some(log) } if ctx.state.record.options.tty => {
                process::run_foreground_logged(&config(None), on_started, |bytes| {
                    log.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .write(Stream::Stdout, bytes)
                })
            }
            RunIo::Foreground { log: Some(log) } => {
                let stdin: OwnedFd = if ctx.state.record.options.interactive {
                    std::io::stdin()
                        .as_fd()
                        .try_clone_to_owned()
                        .map_err(RuntimeError::io("taking stdin"))?
                } else {
                    dev_null()?.into()
                };
                let (out_read, out_write) = nix::unistd::pipe().map_err(RuntimeError::from)?;
                let (err_read, err_write) = nix::unistd::pipe().map_err(RuntimeError::from)?;
                let pumps = [
                    tee_thread(out_read, std::io::stdout(), &log, Stream::Stdout),
                    tee_thread(err_read, std::io::stderr(), &log, Stream::Stderr),
                ];
                let stdio = [stdin.as_fd(), out_write.as_fd(), err_write.as_fd()];
                let result = process::run_foreground(&config(Some(stdio)), on_started);
                // Our write ends close so the pumps see EOF once the container's side is gone.
                drop((out_write, err_write));
                for pump in pumps {
                    let _ = pump.join();
                }
                result
            }
            RunIo::Detached { log, stdin } => {
                return run_detached(ctx, &dir, &cgroup, network, log, stdin);
            }
        };
        ctx.cost.begin(Phase::Teardown); // cost ledger
        let exit = exit?;
        Ok(RunExit {
            code: exit.code,
            oom_killed: exit.oom_killed,
        })
    }

    fn signal(&self, record: &Record, signal: Signal) -> Result<(), RuntimeError> {
        super::signal_host_process(record, signal)
    }

    fn exec(&self, target: &Target, process: &Process, io: ExecIo) -> Result<i32, RuntimeError> {
        let record = target.record;
        let pid = record.state.pid.ok_or_else(|| {
            RuntimeError::State(format!(
                "container {} has no recorded process",
                record.short_id()
            ))
        })?;
        // Records from before husk kept the start time: the best that can be done is now's.
        let init = match record.state.init {
            Some(init) if init.pid == pid => init,
            _ => ProcessIdentity::of(pid).ok_or_else(|| {
                RuntimeError::State(format!("container {} is not running", record.short_id()))
            })?,
        };
        let terminal = process.terminal().unwrap_or(false);
        let mut process = process.clone();
        if terminal {
            process.set_console_size(crate::process::console_size());
        }
        let process = &process;
        let cgroup = cgroup_name(&record.id);
        let null = dev_null()?;
        let clone = |file: &File| -> Result<OwnedFd, RuntimeError> {
            Ok(file
                .try_clone()
                .map_err(RuntimeError::io("opening /dev/null"))?
                .into())
        };
        let own = |fd: std::os::fd::BorrowedFd| -> Result<OwnedFd, RuntimeError> {
            fd.try_clone_to_owned()
                .map_err(RuntimeError::io("taking our stdio"))
        };
        // With a terminal the command opens a pty of the container's own devpts; a detached
        // command has nobody reading its output.
        let (stdin, stdout, stderr) = if terminal || io.detach {
            (clone(&null)?, clone(&null)?, clone(&null)?)
        } else {
            (
                if io.interactive {
                    own(std::io::stdin().as_fd())?
                } else {
                    clone(&null)?
                },
                own(std::io::stdout().as_fd())?,
                own(std::io::stderr().as_fd())?,
            )
        };
        let started = exec(&ExecConfig {
            container_init: init,
            spec: target.spec,
            process,
            cgroup_name: &cgroup,
            stdio: [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()],
        });
        drop((stdin, stdout, stderr));
        let mut started = match started {
            Ok(started) => started,
            Err(err) => {
                eprintln!("husk: {err}");
                return Ok(err.exit_code());
            }
        };
        if io.detach {
            return Ok(0);
        }
        let Some(master) = started.pty_master() else {
            return Ok(started.wait()?);
        };
        bridge_terminal(master, io.interactive)?;
        Ok(started.wait()?)
    }

    fn top(&self, target: &Target, ps_options: &[String]) -> Result<i32, RuntimeError> {
        let pids = container_pids(target.record)?;
        let list: Vec<String> = pids.iter().map(i32::to_string).collect();
        let default = ["-f".to_string()];
        let options = if ps_options.is_empty() {
            &default[..]
        } else {
            ps_options
        };
        let status = std::process::Command::new("ps")
            .args(options)
            .arg("-p")
            .arg(list.join(","))
            .status()
            .map_err(RuntimeError::io("running ps (Debian: procps)"))?;
        Ok(status.code().unwrap_or(1))
    }

    fn copy_in(&self, target: &Target, source: &Path, path: &Path) -> Result<(), RuntimeError> {
        in_container_view(
            target,
            Flow::IntoContainer,
            |from| archive::place(from, path),
            |to| archive::send(source, to),
        )
    }

    fn copy_out(&self, target: &Target, path: &Path, dest: &Path) -> Result<(), RuntimeError> {
        in_container_view(
            target,
            Flow::OutOfContainer,
            |to| archive::send(path, to),
            |from| archive::place(from, dest),
        )
    }

    fn resize(&self, target: &Target, rows: u16, cols: u16) -> bool {
        tty_sizes::send(&target.store.dir_of(&target.record.id), rows, cols)
    }

    fn stat(&self, target: &Target, path: &Path) -> Result<archive::PathStat, RuntimeError> {
        let mut answer = String::new();
        in_container_view(
            target,
            Flow::OutOfContainer,
            |mut to| {
                let stat = archive::PathStat::of(path)?;
                to.write_all(stat.encode().as_bytes())
                    .map_err(RuntimeError::io("sending a stat"))
            },
            |from| {
                from.take(64 << 10)
                    .read_to_string(&mut answer)
                    .map(drop)
                    .map_err(RuntimeError::io("reading a stat"))
            },
        )?;
        archive::PathStat::decode(&answer)
    }
}

/// Which way the tar stream flows through the pipe between the two sides of a copy.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flow {
    IntoContainer,
    OutOfContainer,
}

/// Run `in_container` in a forked child that has entered the container's filesystem view
/// (its mount namespace when running, else a private mount of the same overlay), and
/// `on_host` here meanwhile. A symlink in the container thus resolves inside the container and
/// can never reach host files. The child's error, if any, comes back as its message.
fn in_container_view(
    target: &Target,
    flow: Flow,
    in_container: impl FnOnce(File) -> Result<(), RuntimeError>,
    on_host: impl FnOnce(File) -> Result<(), RuntimeError>,
) -> Result<(), RuntimeError> {
    let (read_end, write_end) = nix::unistd::pipe()?;
    let (container_end, host_end) = match flow {
        Flow::IntoContainer => (read_end, write_end),
        Flow::OutOfContainer => (write_end, read_end),
    };
    let (error_read, error_write) = nix::unistd::pipe()?;
    // SAFETY: the CLI is single-threaded here; the child only enters the container's
    // filesystem, streams or extracts one tar and leaves with _exit, never returning into
    // the caller.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            drop((error_read, host_end));
            let result =
                archive::enter_view(target).and_then(|()| in_container(File::from(container_end)));
            let code = match result {
                Ok(()) => 0,
                Err(err) => {
                    let _ = File::from(error_write).write_all(err.to_string().as_bytes());
                    1
                }
            };
            // SAFETY: ends the forked child without the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop((error_write, container_end));
            let local = on_host(File::from(host_end));
            let mut message = String::new();
            let _ = File::from(error_read)
                .take(64 << 10)
                .read_to_string(&mut message);
            let status = nix::sys::wait::waitpid(child, None)?;
            local?;
            match status {
                nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
                _ if !message.is_empty() => Err(RuntimeError::Failed(message)),
                other => Err(RuntimeError::Failed(format!(
                    "the copy in the container's view ended: {other:?}"
                ))),
            }
        }
    }
}

fn launch<'b>(
    ctx: &'b RunContext,
    dir: &'b Path,
    cgroup: &'b str,
    stdio: Option<[std::os::fd::BorrowedFd<'b>; 3]>,
    network: Option<&'b crate::network::NetworkJoin>,
) -> LaunchConfig<'b> {
    LaunchConfig {
        spec: ctx.spec,
        root: Root::Layers {
            lower_dirs: ctx.layers,
            container_dir: dir,
        },
        cgroup_name: cgroup,
        stdio,
        network,
        netns: None,
        start_gate: None,
        hooks: None,
    }
}

/// A detached run: output into the log, stdin from the FIFO.
fn run_detached(
    ctx: &RunContext,
    dir: &Path,
    cgroup: &str,
    network: Option<&crate::network::NetworkJoin>,
    log: SharedLog,
    stdin: Option<File>,
) -> Result<RunExit, StartFailure> {
    let null = dev_null()?;
    let (out_read, out_write) = nix::unistd::pipe().map_err(RuntimeError::from)?;
    let (err_read, err_write) = nix::unistd::pipe().map_err(RuntimeError::from)?;
    let stdin_fd = stdin.as_ref().unwrap_or(&null);
    let stdio = [stdin_fd.as_fd(), out_write.as_fd(), err_write.as_fd()];
    let spawned = process::spawn(&launch(ctx, dir, cgroup, Some(stdio), network));
    // Our copies of the write ends must close so the pumps see EOF when the container ends.
    drop((out_write, err_write));
    let container = spawned?;
    // Before the pid is published (the start's answer): a client resizes right after it.
    if let Some(master) = container.pty_master() {
        // Best effort: the container runs already, and keeps its window without it.
        if let Err(err) = tty_sizes::relay(dir, &master) {
            eprintln!("husk: {err}: the container's window keeps its size");
        }
    }
    ctx.cost.begin(Phase::ProcessRun); // cost ledger
    ctx.state.publish_pid(container.pid());
    let pumps = match container.pty_master() {
        Some(master) => {
            if let Some(stdin) = &stdin {
                // With a terminal, attached input goes to the pty.
                let mut from = stdin.try_clone().map_err(RuntimeError::io("stdin FIFO"))?;
                let mut to = File::from(
                    master
                        .try_clone()
                        .map_err(RuntimeError::io("the pty master"))?,
                );
                std::thread::spawn(move || std::io::copy(&mut from, &mut to));
            }
            vec![pump(File::from(master), Stream::Stdout, log.clone())]
        }
        None => vec![
            pump(File::from(out_read), Stream::Stdout, log.clone()),
            pump(File::from(err_read), Stream::Stderr, log.clone()),
        ],
    };
    let exit = container.wait_detailed();
    tty_sizes::end_of_run();
    ctx.cost.begin(Phase::Teardown); // cost ledger
    for pump in pumps {
        let _ = pump.join();
    }
    let exit = exit?;
    Ok(RunExit {
        code: exit.code,
        oom_killed: exit.oom_killed,
    })
}

/// The window of a detached container's terminal, set from outside its monitor (the Engine
/// API's resize for `docker run -it`): sizes arrive on a FIFO in the container's directory as
/// ROWS and COLS, two little-endian u16 in one 4-byte write (atomic on a pipe). One relay
/// thread per monitor process serves each of its runs (a restart policy's too): it applies a
/// size to the pty of the run in progress, and one sent between runs goes nowhere.
pub mod tty_sizes {
    use std::io::Read;
    use std::os::fd::OwnedFd;
    use std::path::Path;
    use std::sync::{Mutex, Once};

    use crate::runtime::RuntimeError;

    pub const FIFO: &str = "tty-size.fifo";

    static CURRENT: Mutex<Option<OwnedFd>> = Mutex::new(None);
    static STARTED: Once = Once::new();

    pub fn relay(dir: &Path, master: &OwnedFd) -> Result<(), RuntimeError> {
        let own = master
            .try_clone()
            .map_err(RuntimeError::io("the pty master"))?;
        *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = Some(own);
        let path = dir.join(FIFO);
        let mut failed = None;
        STARTED.call_once(|| {
            let made = nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600));
            if !matches!(made, Ok(()) | Err(nix::Error::EEXIST)) {
                failed = Some("creating the terminal size FIFO");
                return;
            }
            // Read-write: it never reads EOF when a writer leaves.
            let Ok(mut fifo) = std::fs::File::options().read(true).write(true).open(&path) else {
                failed = Some("opening the terminal size FIFO");
                return;
            };
            std::thread::spawn(move || {
                let mut size = [0u8; 4];
                while fifo.read_exact(&mut size).is_ok() {
                    let rows = u16::from_le_bytes([size[0], size[1]]);
                    let cols = u16::from_le_bytes([size[2], size[3]]);
                    if rows == 0 || cols == 0 {
                        continue;
                    }
                    if let Some(master) = &*CURRENT.lock().unwrap_or_else(|p| p.into_inner()) {
                        crate::process::set_window_size(master, rows, cols);
                    }
                }
            });
        });
        match failed {
            Some(what) => Err(RuntimeError::Failed(what.into())),
            None => Ok(()),
        }
    }

    pub fn end_of_run() {
        *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The sender's side: false when no monitor reads the FIFO (no terminal, or stopped).
    pub fn send(dir: &Path, rows: u16, cols: u16) -> bool {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let Ok(mut fifo) = std::fs::File::options()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(dir.join(FIFO))
        else {
            return false;
        };
        let mut size = [0u8; 4];
        size[..2].copy_from_slice(&rows.to_le_bytes());
        size[2..].copy_from_slice(&cols.to_le_bytes());
        fifo.write_all(&size).is_ok()
    }
}

fn dev_null() -> Result<File, RuntimeError> {
    File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(RuntimeError::io("opening /dev/null"))
}

/// Copy one of the container's output pipes to our own stream and to its log.
fn tee_thread<W: Write + Send + 'static>(
    from: OwnedFd,
    out: W,
    log: &SharedLog,
    stream: Stream,
) -> std::thread::JoinHandle<()> {
    let mut tee = Tee {
        out,
        log: std::sync::Arc::clone(log),
        stream,
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut File::from(from), &mut tee);
    })
}

/// Copy one output stream into the log until the container side closes it.
fn pump(mut from: File, stream: Stream, log: SharedLog) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => log
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .write(stream, &buf[..n]),
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                // EIO on a pty master: the container side is gone.
                Err(_) => return,
            }
        }
    })
}

/// Bridge our terminal to an exec'd command's pty: its size, raw mode on ours, both ways
/// until the command's side closes.
fn bridge_terminal(master: OwnedFd, interactive: bool) -> Result<(), RuntimeError> {
    process::copy_window_size(&master);
    // Before the stdin thread starts, so that it leaves SIGWINCH to the follower.
    let _window = process::WindowFollower::start(&master);
    let _raw = process::enter_raw_mode();
    let mut master_out = File::from(
        master
            .try_clone()
            .map_err(RuntimeError::io("the pty master"))?,
    );
    let mut master_in = File::from(master);
    if interactive {
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut stdin = std::io::stdin();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 || master_in.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        });
    }
    let mut buf = [0u8; 4096];
    let mut stdout = std::io::stdout();
    // EIO once the command's side of the terminal is closed.
    while let Ok(n) = master_out.read(&mut buf) {
        if n == 0 || stdout.write_all(&buf[..n]).is_err() {
            break;
        }
        let _ = stdout.flush();
    }
    Ok(())
}

/// Pids in the container's cgroup, as the host sees them.
fn container_pids(record: &Record) -> Result<Vec<i32>, RuntimeError> {
    let cgroup = Cgroup::open(CgroupLayout::detect()?, &cgroup_name(&record.id))?;
    let mut pids = Vec::new();
    for dir in cgroup.paths() {
        if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}
