//! Verbs on an existing container: logs, stop, kill, wait, inspect.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use husk::container::logs::{self, ReadOptions, Stream};
use husk::container::{Containers, Record, Status};

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow log output.
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs ("all" for everything).
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show timestamps.
    #[arg(short, long)]
    pub timestamps: bool,
    /// Show logs since a timestamp (RFC 3339) or relative (e.g. 42m, 10s, 2h).
    #[arg(long)]
    pub since: Option<String>,
    pub container: String,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Do not attach STDIN.
    #[arg(long)]
    pub no_stdin: bool,
    pub container: String,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait before killing the container.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    pub time: u64,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal to send to the container.
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

/// Parse a signal as Docker does: a name with or without SIG, or a number.
pub fn parse_signal(text: &str) -> Result<Signal> {
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).with_context(|| format!("Invalid signal: {text}"));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| anyhow::anyhow!("Invalid signal: {text}"))
}

fn parse_since(text: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    let (number, unit) = text.split_at(
        text.trim_end_matches(|c: char| c.is_ascii_alphabetic())
            .len(),
    );
    let number: i64 = number
        .parse()
        .with_context(|| format!("invalid value for --since: {text}"))?;
    let seconds = match unit {
        "s" | "" => number,
        "m" => number * 60,
        "h" => number * 3600,
        _ => bail!("invalid value for --since: {text}"),
    };
    Ok(chrono::Utc::now() - chrono::Duration::seconds(seconds))
}

pub fn logs(root: &Path, args: LogsArgs) -> Result<i32> {
    let store = Containers::open(root)?;
    let record = store.find(&args.container)?;
    let dir = store.dir_of(&record.id);
    let tail = match args.tail.as_str() {
        "all" | "-1" => None,
        n => Some(
            n.parse()
                .with_context(|| format!("invalid --tail value: {n}"))?,
        ),
    };
    let opts = ReadOptions {
        tail,
        since: args.since.as_deref().map(parse_since).transpose()?,
        timestamps: args.timestamps,
    };
    let (entries, offset) = logs::read(&dir, &opts)?;
    let emit = |entry: &logs::Entry| {
        let text = logs::render(entry, opts.timestamps);
        let _ = match entry.stream {
            Stream::Stdout => std::io::stdout().write_all(text.as_bytes()),
            Stream::Stderr => std::io::stderr().write_all(text.as_bytes()),
        };
    };
    entries.iter().for_each(emit);
    if args.follow {
        // Follow until the container stops for good; a restart policy keeps it running.
        // Its supervisor lives on between the runs of a restart policy.
        logs::follow(&dir, offset, emit, || {
            store.load(&record.id).is_ok_and(|r| {
                r.effective_status() == Status::Running
                    || r.state.supervisor.is_some_and(|s| s.is_alive())
            })
        })?;
    }
    Ok(0)
}

/// `attach`: the container's output from now on, and our stdin into its stdin when it was
/// started with `-i`, until it stops. Returns its exit code.
pub fn attach(root: &Path, args: AttachArgs) -> Result<i32> {
    let store = Containers::open(root)?;
    let record = store.find(&args.container)?;
    if record.effective_status() != Status::Running {
        bail!("You cannot attach to a stopped container, start it first");
    }
    let dir = store.dir_of(&record.id);
    // From here on every line is ours: taken before any input can make the container answer.
    let (_, offset) = logs::read(&dir, &ReadOptions::default())?;
    if record.options.interactive && !args.no_stdin {
        let fifo = dir.join(super::monitor::STDIN_FIFO);
        if let Ok(mut input) = std::fs::OpenOptions::new().write(true).open(&fifo) {
            std::thread::spawn(move || std::io::copy(&mut std::io::stdin(), &mut input));
        }
    }
    let emit = |entry: &logs::Entry| {
        let _ = match entry.stream {
            Stream::Stdout => std::io::stdout().write_all(entry.log.as_bytes()),
            Stream::Stderr => std::io::stderr().write_all(entry.log.as_bytes()),
        };
        let _ = std::io::stdout().flush();
    };
    logs::follow(&dir, offset, emit, || {
        store
            .load(&record.id)
            .is_ok_and(|r| r.effective_status() == Status::Running)
    })?;
    let record = store.load(&record.id)?;
    Ok(record.state.exit_code.unwrap_or(0))
}

/// Wait until the container is no longer running, up to `timeout`.
pub fn wait_until_stopped(
    store: &Containers,
    id: &str,
    timeout: Option<Duration>,
) -> Result<Record> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let record = store.load(id)?;
        if record.effective_status() != Status::Running
            || deadline.is_some_and(|d| Instant::now() > d)
        {
            return Ok(record);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ask the container to stop: the flag keeps restart policies from starting it again.
fn request_stop(store: &Containers, record: &Record, signal: Signal) -> Result<()> {
    store.update(&record.id, |r| r.state.stop_requested = true)?;
    signal_container(record, signal)
}

fn signal_container(record: &Record, signal: Signal) -> Result<()> {
    if record.effective_status() != Status::Running {
        bail!("Container {} is not running", record.id);
    }
    if record.isolation == husk::container::Isolation::Vm
        && super::vm_container::send_signal(&record.id, signal)
    {
        return Ok(());
    }
    let pid = record
        .state
        .pid
        .with_context(|| format!("container {} has no recorded process", record.id))?;
    kill(Pid::from_raw(pid), signal)
        .with_context(|| format!("cannot signal container {}", record.id))
}

/// SIGTERM, then SIGKILL after `grace`, as `docker stop` does; returns once it stopped.
fn stop_gracefully(store: &Containers, record: &Record, grace: Duration) -> Result<()> {
    if record.effective_status() != Status::Running {
        return Ok(()); // Docker: stopping a stopped container succeeds
    }
    request_stop(store, record, Signal::SIGTERM)?;
    let record = wait_until_stopped(store, &record.id, Some(grace))?;
    if record.effective_status() == Status::Running {
        signal_container(&record, Signal::SIGKILL)?;
        wait_until_stopped(store, &record.id, Some(Duration::from_secs(10)))?;
    }
    Ok(())
}

/// Run `action` on each named container, printing its name or Docker's error line.
fn for_each(keys: &[String], mut action: impl FnMut(&str) -> Result<()>) -> i32 {
    let mut failed = false;
    for key in keys {
        match action(key) {
            Ok(()) => println!("{key}"),
            Err(err) => {
                eprintln!("Error response from daemon: {err:#}");
                failed = true;
            }
        }
    }
    i32::from(failed)
}

pub fn stop(root: &Path, args: StopArgs) -> Result<i32> {
    let store = Containers::open(root)?;
    let grace = Duration::from_secs(args.time);
    Ok(for_each(&args.containers, |key| {
        stop_gracefully(&store, &store.find(key)?, grace)
    }))
}

/// `restart`: stop (SIGTERM, then SIGKILL after the grace period) and start again, detached,
/// with the same writable layer.
pub fn restart(root: &Path, args: StopArgs) -> Result<i32> {
    let store = Containers::open(root)?;
    let grace = Duration::from_secs(args.time);
    Ok(for_each(&args.containers, |key| {
        let record = store.find(key)?;
        if record.effective_status() == Status::Running {
            stop_gracefully(&store, &record, grace)?;
            // The old supervisor records the exit and leaves; the new one must not race it.
            wait_for_supervisor_exit(&store, &record.id);
        }
        let record = store.load(&record.id)?;
        super::monitor::start_detached(root, &store, &record)
    }))
}

fn wait_for_supervisor_exit(store: &Containers, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let alive = store
            .load(id)
            .ok()
            .and_then(|r| r.state.supervisor)
            .is_some_and(|s| s.is_alive());
        if !alive {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn kill_cmd(root: &Path, args: KillArgs) -> Result<i32> {
    let signal = parse_signal(&args.signal)?;
    let store = Containers::open(root)?;
    Ok(for_each(&args.containers, |key| {
        request_stop(&store, &store.find(key)?, signal)
    }))
}

pub fn wait(root: &Path, args: WaitArgs) -> Result<i32> {
    let store = Containers::open(root)?;
    let mut failed = false;
    for key in &args.containers {
        match store.find(key) {
            Ok(record) => {
                let record = wait_until_stopped(&store, &record.id, None)?;
                println!("{}", record.state.exit_code.unwrap_or(-1));
            }
            Err(err) => {
                eprintln!("Error response from daemon: {err}");
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("15").unwrap(), Signal::SIGTERM);
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn since_accepts_relative_and_absolute() {
        let now = chrono::Utc::now();
        let ten_min = parse_since("10m").unwrap();
        assert!((now - ten_min).num_seconds() >= 599);
        assert!(parse_since("2026-01-01T00:00:00Z").is_ok());
        assert!(parse_since("yesterday").is_err());
    }
}
