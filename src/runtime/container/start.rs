//! `start`: one run of the container's process in its sandbox, attached to the caller
//! (`run`, `start -a`) or detached under a monitor process of its own (`run -d`, `start`,
//! `restart`), which applies the restart policy. Every run goes through [`run_once`]:
//! mark starting, run in the sandbox, record the exit.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::container::logs::LogWriter;
use crate::container::{Containers, Record, Status};
use crate::cost::CostRecorder;
use crate::runtime::sandbox::RunContext;
use crate::runtime::{sandbox_for, RunExit, RunIo, Runtime, RuntimeError};

use super::{layer_dirs, load_spec, mark_starting, record_exit, ContainerState, StartFailure};

/// The monitor's own diagnostics (not the container's output).
pub const MONITOR_LOG: &str = "monitor.log";
/// Where `husk attach` sends input to a detached `-i` container.
pub const STDIN_FIFO: &str = "stdin.fifo";

/// One run: the record says running (supervised by this process), the sandbox runs the
/// process, the record says how it ended. Ok(exit code) when the process ran, Err(Docker's
/// code) when it never did.
pub fn run_once(
    runtime: &Runtime,
    store: &Containers,
    record: &Record,
    io: RunIo,
    cost: &CostRecorder,
) -> Result<Result<i32, i32>, RuntimeError> {
    let sandbox = sandbox_for(record.isolation);
    let spec = load_spec(store, &record.id)?;
    let layers = layer_dirs(&runtime.root, record)?;
    mark_starting(store, &record.id, record.restart_count)?;
    let ctx = RunContext {
        root: &runtime.root,
        config: &runtime.config,
        state: ContainerState { store, record },
        spec: &spec,
        layers: &layers,
        cost,
    };
    let result: Result<RunExit, StartFailure> = sandbox.run(&ctx, io);
    let started = result.is_ok();
    let code = record_exit(store, &record.id, &result);
    Ok(if started { Ok(code) } else { Err(code) })
}

/// Run the container in the foreground: this process supervises it, forwards signals and the
/// terminal, records the exit and honours --rm. Returns Docker's exit code.
pub fn start_attached(
    runtime: &Runtime,
    store: &Containers,
    record: &Record,
    cost: &CostRecorder,
) -> Result<i32, RuntimeError> {
    // An attached container is logged too, so `husk logs` works for it as in Docker; a --rm
    // container's log would go with it, so it keeps the direct (faster) path.
    let log = match record.auto_remove {
        true => None,
        false => Some(Arc::new(Mutex::new(LogWriter::open(
            &store.dir_of(&record.id),
        )?))),
    };
    cost.begin(sandbox_for(record.isolation).first_phase()); // cost ledger
    let code = run_once(runtime, store, record, RunIo::Foreground { log }, cost)?
        .unwrap_or_else(|code| code);
    super::delete::remove_if_auto(runtime, store, &record.id)?;
    Ok(code)
}

/// `start -a` / `start -i`: refused for a running container.
pub fn start_attached_by_name(runtime: &Runtime, key: &str) -> Result<i32, RuntimeError> {
    let store = runtime.containers()?;
    let record = store.find(key)?;
    if record.effective_status() == Status::Running {
        return Err(RuntimeError::State(format!(
            "container {} is already running",
            record.short_id()
        )));
    }
    start_attached(runtime, &store, &record, &CostRecorder::off())
}

/// `start` of a detached container: a no-op when it runs already, as in Docker.
pub fn start_by_name(runtime: &Runtime, key: &str) -> Result<(), RuntimeError> {
    let store = runtime.containers()?;
    let record = store.find(key)?;
    if super::pause::is_paused(&record) {
        return Err(RuntimeError::State(
            "cannot start a paused container, try unpause instead".into(),
        ));
    }
    if record.effective_status() == Status::Running {
        return Ok(());
    }
    start_detached(runtime, &store, &record)
}

/// How long a detached start waits for its monitor to start the container. The monitor bounds
/// each of its own phases (a VM's boot: 60 s), and fails the start with the reason when one
/// overruns; this only catches a monitor that neither starts nor fails, so it is above their
/// sum. At 60 s, a VM started beside another by docker-compose in the nested tier's emulated
/// L1 was cut off while its guest still booted.
const MONITOR_START_TIMEOUT: Duration = Duration::from_secs(180);

/// Hand the container to a new monitor process (husk re-executed in its own session, no
/// daemon) and wait until it has started the container, or failed to.
pub fn start_detached(
    runtime: &Runtime,
    store: &Containers,
    record: &Record,
) -> Result<(), RuntimeError> {
    let dir = store.dir_of(&record.id);
    let diagnostics =
        File::create(dir.join(MONITOR_LOG)).map_err(RuntimeError::io("creating monitor.log"))?;
    let exe = std::env::current_exe().map_err(RuntimeError::io("locating the husk binary"))?;
    let before = store.load(&record.id)?;
    let mut command = Command::new(exe);
    command
        .arg("--root")
        .arg(&runtime.root)
        .arg("container-monitor")
        .arg(&record.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(diagnostics);
    // SAFETY: the closure runs in the forked child before exec and only calls setsid, which is
    // async-signal-safe; a new session detaches the monitor from the caller's terminal and
    // process group, so Ctrl-C in the CLI's shell does not reach it.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let mut monitor = command
        .spawn()
        .map_err(RuntimeError::io("starting the container monitor"))?;

    let deadline = Instant::now() + MONITOR_START_TIMEOUT;
    let started = loop {
        let now = match store.load(&record.id) {
            Ok(now) => now,
            // A --rm container can run, exit and be removed by its monitor between two looks
            // (`true` takes less than the 5 ms between them): it started.
            Err(crate::container::RecordError::NotFound(_)) if record.auto_remove => break Ok(()),
            Err(err) => break Err(err.into()),
        };
        if now.state.pid.is_some() && now.state.status == Status::Running {
            break Ok(());
        }
        let finished =
            now.state.finished_at.is_some() && now.state.finished_at != before.state.finished_at;
        if finished {
            if let Some(error) = now.state.error {
                break Err(RuntimeError::Failed(error));
            }
            break Ok(()); // it ran and already exited
        }
        if let Some(status) = monitor
            .try_wait()
            .map_err(RuntimeError::io("waiting for the container monitor"))?
        {
            let text = std::fs::read_to_string(dir.join(MONITOR_LOG)).unwrap_or_default();
            return Err(RuntimeError::Failed(format!(
                "the container monitor exited ({status}) before starting the container: {}",
                text.trim()
            )));
        }
        if Instant::now() > deadline {
            break Err(RuntimeError::Failed(format!(
                "the container monitor did not start the container within {} s",
                MONITOR_START_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // The monitor is this process's child until it exits. A caller that lives on (the Engine
    // API service) must reap it, or it lingers as a zombie: a thread waits for it.
    std::thread::spawn(move || monitor.wait());
    started
}

/// Make the stdin FIFO of a `-i` container (once: an attach before the start makes it too).
pub fn make_stdin_fifo(dir: &Path) -> Result<PathBuf, RuntimeError> {
    let path = dir.join(STDIN_FIFO);
    match nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
        Ok(()) | Err(nix::Error::EEXIST) => Ok(path),
        Err(err) => Err(RuntimeError::io("creating the stdin FIFO")(err.into())),
    }
}

/// `-i`: stdin is a FIFO that `husk attach` (or the Engine API's attach) writes to. Opened
/// read-write so that it never reads EOF between attaches, as a detached container's stdin
/// stays open in Docker; with StdinOnce read-only, so that it ends when the writer that
/// attached before the start closes (or at once, when none did).
fn open_stdin_fifo(dir: &Path, once: bool) -> Result<File, RuntimeError> {
    let path = make_stdin_fifo(dir)?;
    if !once {
        return File::options()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(RuntimeError::io("opening the stdin FIFO"));
    }
    // O_NONBLOCK only for the open (a read-only open would wait for a writer); the
    // container's reads block as on any pipe.
    let fifo = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .map_err(RuntimeError::io("opening the stdin FIFO"))?;
    let flags = nix::fcntl::fcntl(fifo.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) - nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fifo.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
    Ok(fifo)
}

/// The body of the detached monitor: run the container, its output into the json-file log,
/// record every exit (and its cost ledger) and apply the restart policy. It survives the CLI
/// that started it.
pub fn monitor(runtime: &Runtime, id: &str) -> Result<i32, RuntimeError> {
    let store = runtime.containers()?;
    let mut record = store.load(id)?;
    let dir = store.dir_of(id);
    let log = Arc::new(Mutex::new(LogWriter::open(&dir)?));
    let mut backoff = Duration::from_millis(100);
    let code = loop {
        // cost ledger: a detached run's ledger starts here (the CLI did the prepare phase).
        let sandbox = sandbox_for(record.isolation);
        let cost = CostRecorder::start(&record.isolation.to_string(), sandbox.first_phase());
        let stdin = match record.options.interactive {
            true => Some(open_stdin_fifo(&dir, record.options.stdin_once)?),
            false => None,
        };
        let io = RunIo::Detached {
            log: Arc::clone(&log),
            stdin,
        };
        let run = run_once(runtime, &store, &record, io, &cost)?;
        if let Some(ledger) = cost.finish() {
            let _ = store.update(id, |r| r.cost = Some(ledger)); // cost ledger
        }
        let code = match run {
            Ok(code) => code,
            Err(code) => break code, // the command could not start: restarting will not help
        };
        let now = store.load(id)?;
        if !now
            .restart
            .should_restart(code, now.restart_count, now.state.stop_requested)
        {
            break code;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(10));
        // Counted when the next run is marked as starting (one update).
        record.restart_count = now.restart_count + 1;
    };
    super::delete::remove_if_auto(runtime, &store, id)?;
    Ok(code)
}
