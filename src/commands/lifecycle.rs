//! Verbs on an existing container: logs, attach, stop, kill, restart, wait.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use nix::sys::signal::Signal;

use husk::container::logs::ReadOptions;
use husk::runtime::container::{attach, kill, pause, wait};
use husk::runtime::Runtime;

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
pub struct PauseArgs {
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
    parse_time("--since", text)
}

/// A time as Docker's `--since`/`--until` take it: RFC 3339, or a duration ago (10s, 5m, 2h).
pub fn parse_time(flag: &str, text: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    let (number, unit) = text.split_at(
        text.trim_end_matches(|c: char| c.is_ascii_alphabetic())
            .len(),
    );
    let number: i64 = number
        .parse()
        .with_context(|| format!("invalid value for {flag}: {text}"))?;
    let seconds = match unit {
        "s" | "" => number,
        "m" => number * 60,
        "h" => number * 3600,
        _ => bail!("invalid value for {flag}: {text}"),
    };
    Ok(chrono::Utc::now() - chrono::Duration::seconds(seconds))
}

pub fn logs(runtime: &Runtime, args: LogsArgs) -> Result<i32> {
    let tail = match args.tail.as_str() {
        "all" | "-1" => None,
        n => Some(
            n.parse()
                .with_context(|| format!("invalid --tail value: {n}"))?,
        ),
    };
    let options = ReadOptions {
        tail,
        since: args.since.as_deref().map(parse_since).transpose()?,
        timestamps: args.timestamps,
    };
    attach::logs(runtime, &args.container, &options, args.follow)?;
    Ok(0)
}

/// `attach`: the container's output from now on (and our stdin with `-i`); its exit code.
pub fn attach(runtime: &Runtime, args: AttachArgs) -> Result<i32> {
    Ok(attach::attach(runtime, &args.container, !args.no_stdin)?)
}

pub fn stop(runtime: &Runtime, args: StopArgs) -> Result<i32> {
    let grace = Duration::from_secs(args.time);
    Ok(super::for_each(&args.containers, |key| {
        kill::stop(runtime, key, grace)
    }))
}

/// `restart`: stop, then start again detached with the same writable layer.
pub fn restart(runtime: &Runtime, args: StopArgs) -> Result<i32> {
    let grace = Duration::from_secs(args.time);
    Ok(super::for_each(&args.containers, |key| {
        kill::restart(runtime, key, grace)
    }))
}

pub fn kill(runtime: &Runtime, args: KillArgs) -> Result<i32> {
    let signal = parse_signal(&args.signal)?;
    Ok(super::for_each(&args.containers, |key| {
        kill::kill(runtime, key, signal)
    }))
}

pub fn pause(runtime: &Runtime, args: PauseArgs) -> Result<i32> {
    Ok(super::for_each(&args.containers, |key| {
        pause::pause(runtime, key)
    }))
}

pub fn unpause(runtime: &Runtime, args: PauseArgs) -> Result<i32> {
    Ok(super::for_each(&args.containers, |key| {
        pause::unpause(runtime, key)
    }))
}

pub fn wait(runtime: &Runtime, args: WaitArgs) -> Result<i32> {
    let mut failed = false;
    for key in &args.containers {
        match wait::wait(runtime, key) {
            Ok(code) => println!("{code}"),
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
