//! The per-container monitor for detached containers (`run -d`, `start`): husk re-executed
//! in its own session, no daemon. It starts the container, writes its output to the json-file
//! log, records every exit and applies the restart policy. It survives the CLI exiting.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use husk::container::logs::{LogWriter, Stream};
use husk::container::teardown::cgroup_name;
use husk::container::{Containers, Isolation, Record, Status};
use husk::process::{self, LaunchConfig};
use rootfs_agent::client::ProcessIo;

use super::run::{layer_dirs, load_spec, mark_starting, record_exit, remove_if_auto, StartFailure};
use super::vm_container::{self, VmStdio};

/// The monitor's own diagnostics (not the container's output).
const MONITOR_LOG: &str = "monitor.log";

/// Hand the container to a new monitor process and wait until it has started the container
/// (or failed to).
pub fn start_detached(root: &Path, store: &Containers, record: &Record) -> Result<()> {
    let dir = store.dir_of(&record.id);
    let diagnostics = File::create(dir.join(MONITOR_LOG)).context("creating monitor.log")?;
    let exe = std::env::current_exe().context("locating the husk binary")?;
    let before = store.load(&record.id)?;
    let mut command = Command::new(exe);
    command
        .arg("--root")
        .arg(root)
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
    let mut monitor = command.spawn().context("starting the container monitor")?;

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = store.load(&record.id)?;
        if now.state.pid.is_some() && now.state.status == Status::Running {
            return Ok(());
        }
        let finished =
            now.state.finished_at.is_some() && now.state.finished_at != before.state.finished_at;
        if finished {
            if let Some(error) = now.state.error {
                bail!("{error}");
            }
            return Ok(()); // it ran and already exited
        }
        if let Some(status) = monitor.try_wait()? {
            let text = std::fs::read_to_string(dir.join(MONITOR_LOG)).unwrap_or_default();
            bail!(
                "the container monitor exited ({status}) before starting the container: {}",
                text.trim()
            );
        }
        if Instant::now() > deadline {
            bail!("the container monitor did not start the container within 60 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Where `husk attach` sends input to a detached `-i` container.
pub const STDIN_FIFO: &str = "stdin.fifo";

fn open_stdin_fifo(dir: &Path) -> Result<File> {
    let path = dir.join(STDIN_FIFO);
    match nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
        Ok(()) | Err(nix::Error::EEXIST) => {}
        Err(err) => return Err(err).context("creating the stdin FIFO"),
    }
    File::options()
        .read(true)
        .write(true)
        .open(&path)
        .context("opening the stdin FIFO")
}

/// Copy one output stream into the log until the container side closes it.
fn pump(mut from: File, stream: Stream, log: Arc<Mutex<LogWriter>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => log.lock().expect("log lock").write(stream, &buf[..n]),
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                // EIO on a pty master: the container side is gone.
                Err(_) => return,
            }
        }
    })
}

/// The container's output into the json-file log, as a writer for the VM agent client.
struct LogSink {
    log: Arc<Mutex<LogWriter>>,
    stream: Stream,
}

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.log.lock().expect("log lock").write(self.stream, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Body of the `container-monitor` process.
pub fn monitor(root: &Path, id: &str) -> Result<i32> {
    let store = Containers::open(root)?;
    let mut record = store.load(id)?;
    let dir = store.dir_of(id);
    let log = Arc::new(Mutex::new(LogWriter::open(&dir)?));
    let mut backoff = Duration::from_millis(100);
    let code = loop {
        // cost ledger: a detached run's ledger starts here (the CLI did the prepare phase).
        let first = match record.isolation {
            Isolation::Process => husk::cost::Phase::Setup,
            Isolation::Vm => husk::cost::Phase::MonitorBuild,
        };
        husk::cost::start(&record.isolation.to_string(), first);
        let run = match record.isolation {
            Isolation::Process => run_process_once(root, &store, &record, &log)?,
            Isolation::Vm => {
                // `-i`: the guest process reads what `husk attach` writes to the FIFO.
                let stdin = if record.options.interactive {
                    Some(Box::new(open_stdin_fifo(&dir)?) as Box<dyn std::io::Read + Send>)
                } else {
                    None
                };
                let io = ProcessIo {
                    stdin,
                    stdout: Box::new(LogSink {
                        log: log.clone(),
                        stream: Stream::Stdout,
                    }),
                    stderr: Box::new(LogSink {
                        log: log.clone(),
                        stream: Stream::Stderr,
                    }),
                };
                vm_container::run(root, &store, &record, VmStdio::Writers(io))?
            }
        };
        if let Some(ledger) = husk::cost::finish() {
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
    remove_if_auto(root, &store, id)?;
    Ok(code)
}

/// One run of a process-isolated container with its output in the log: Ok(exit code), or
/// Err(code) when it could not start.
fn run_process_once(
    root: &Path,
    store: &Containers,
    record: &Record,
    log: &Arc<Mutex<LogWriter>>,
) -> Result<Result<i32, i32>> {
    let id = &record.id;
    let dir = store.dir_of(id);
    let spec = load_spec(store, id)?;
    let layers = layer_dirs(root, record)?;
    let cgroup = cgroup_name(id);
    // `-i`: stdin is a FIFO that `husk attach` writes to. Opened read-write so that it never
    // reads EOF between attaches, as a detached container's stdin stays open in Docker.
    let stdin = if record.options.interactive {
        Some(open_stdin_fifo(&dir)?)
    } else {
        None
    };
    let dev_null = File::open("/dev/null").context("opening /dev/null")?;
    let stdin_fd = stdin.as_ref().unwrap_or(&dev_null);
    let (out_read, out_write) = nix::unistd::pipe().context("creating a pipe")?;
    let (err_read, err_write) = nix::unistd::pipe().context("creating a pipe")?;
    let cfg = LaunchConfig {
        spec: &spec,
        lower_dirs: &layers,
        container_dir: &dir,
        cgroup_name: &cgroup,
        stdio: Some([stdin_fd.as_fd(), out_write.as_fd(), err_write.as_fd()]),
    };
    mark_starting(store, id, record.restart_count)?;
    let spawned = process::spawn(&cfg);
    // Our copies of the write ends must close so the pumps see EOF when the container ends.
    drop((out_write, err_write));
    let container = match spawned {
        Ok(container) => container,
        Err(err) => {
            return Ok(Err(record_exit(
                store,
                id,
                Err(StartFailure::from(err)),
                false,
            )))
        }
    };
    husk::cost::begin(husk::cost::Phase::ProcessRun); // cost ledger
    let pid = container.pid();
    let init = husk::container::ProcessIdentity::of(pid);
    store.update(id, |r| {
        r.state.pid = Some(pid);
        r.state.init = init;
    })?;
    let pumps = match container.pty_master() {
        Some(master) => {
            if let Some(stdin) = &stdin {
                // With a terminal, attached input goes to the pty.
                let (mut from, mut to) = (stdin.try_clone()?, File::from(master.try_clone()?));
                std::thread::spawn(move || std::io::copy(&mut from, &mut to));
            }
            vec![pump(File::from(master), Stream::Stdout, log.clone())]
        }
        None => vec![
            pump(File::from(out_read), Stream::Stdout, log.clone()),
            pump(File::from(err_read), Stream::Stderr, log.clone()),
        ],
    };
    let result = container.wait_detailed();
    husk::cost::begin(husk::cost::Phase::Teardown); // cost ledger
    for pump in pumps {
        let _ = pump.join();
    }
    let oom_killed = result.as_ref().is_ok_and(|exit| exit.oom_killed);
    let code = record_exit(
        store,
        id,
        result.map(|exit| exit.code).map_err(StartFailure::from),
        oom_killed,
    );
    Ok(Ok(code))
}
