//! Looking at running containers: `top`, `stats`, and `rename`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use husk::container::{Containers, Record, Status};
use husk::display::{ellipsize, Table};
use husk::process::CgroupStats;
use husk::runtime::container::{stats, top};
use husk::runtime::Runtime;

#[derive(Debug, Args)]
pub struct TopArgs {
    pub container: String,
    /// Options for ps (default -ef).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_options: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Show all containers (default shows just running).
    #[arg(short, long)]
    pub all: bool,
    /// Disable streaming stats and only pull the first result.
    #[arg(long)]
    pub no_stream: bool,
    /// Do not truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RenameArgs {
    pub container: String,
    pub new_name: String,
}

pub fn top(runtime: &Runtime, args: TopArgs) -> Result<i32> {
    Ok(top::top(runtime, &args.container, &args.ps_options)?)
}

pub fn stats(root: &Path, args: StatsArgs) -> Result<i32> {
    let store = Containers::open(root)?;
    let records: Vec<Record> = if args.containers.is_empty() {
        store
            .list()?
            .into_iter()
            .filter(|r| args.all || r.effective_status() == Status::Running)
            .collect()
    } else {
        args.containers
            .iter()
            .map(|key| store.find(key))
            .collect::<Result<_, _>>()?
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    loop {
        // CPU % needs two samples; Docker compares against the previous read as well.
        let first: Vec<Option<(CgroupStats, Instant)>> =
            records.iter().map(|r| stats::sample(r).ok()).collect();
        std::thread::sleep(Duration::from_millis(500));
        let mut table = Table::new(&[
            "CONTAINER ID",
            "NAME",
            "CPU %",
            "MEM USAGE / LIMIT",
            "MEM %",
            "PIDS",
            "ISOLATION",
        ]);
        for (record, before) in records.iter().zip(first) {
            let running = record.effective_status() == Status::Running;
            let now = if running {
                stats::sample(record).ok()
            } else {
                None
            };
            let (cpu, memory, percent, pids) = match (before, now) {
                (Some((a, at)), Some((b, bt))) => {
                    let wall = (bt - at).as_nanos().max(1) as f64;
                    let cpu = (b.cpu_usage_ns.saturating_sub(a.cpu_usage_ns)) as f64 / wall * 100.0;
                    let limit = b
                        .memory_limit_bytes
                        .filter(|&l| l < u64::MAX / 2)
                        .unwrap_or_else(host_memory);
                    (
                        format!("{:.2}%", cpu.min(cpus * 100.0)),
                        format!(
                            "{} / {}",
                            binary_size(b.memory_usage_bytes),
                            binary_size(limit)
                        ),
                        format!("{:.2}%", b.memory_usage_bytes as f64 / limit as f64 * 100.0),
                        b.pids.to_string(),
                    )
                }
                _ => ("--".into(), "-- / --".into(), "--".into(), "--".into()),
            };
            table.row(vec![
                if args.no_trunc {
                    record.id.clone()
                } else {
                    record.short_id().into()
                },
                ellipsize(&record.name, 30),
                cpu,
                memory,
                percent,
                pids,
                record.isolation.to_string(),
            ]);
        }
        print!("{}", table.render());
        if args.no_stream {
            return Ok(0);
        }
        print!("\x1b[2J\x1b[H");
    }
}

/// Docker's stats use binary units ("1.5MiB").
fn binary_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < UNITS.len() {
        size /= 1024.0;
        unit += 1;
    }
    format!("{size:.2}{}", UNITS[unit]).replace(".00", "")
}

pub fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

pub fn rename(root: &Path, args: RenameArgs) -> Result<i32> {
    let store = Containers::open(root)?;
    store.rename(&args.container, &args.new_name)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_sizes_read_like_docker_stats() {
        assert_eq!(binary_size(512), "512B");
        assert_eq!(binary_size(1536 * 1024), "1.50MiB");
        assert_eq!(binary_size(1 << 30), "1GiB");
    }
}
