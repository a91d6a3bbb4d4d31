//! `husk ps`, `husk rm` and `husk container prune`: reading and removing container records.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use husk::container::teardown::{dir_size, release_leftovers};
use husk::container::{Containers, Record, Status};
use husk::display::{ago, ellipsize, human_duration, human_size, Table};

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running).
    #[arg(short, long)]
    pub all: bool,
    /// Only display container IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show n last created containers (includes all states).
    #[arg(short = 'n', long = "last", default_value_t = -1, allow_negative_numbers = true)]
    pub last: i64,
    /// Show the latest created container (includes all states).
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Filter output based on conditions provided (status=, name=, ancestor=, id=, exited=,
    /// isolation=).
    #[arg(short, long = "filter", value_name = "FILTER")]
    pub filters: Vec<String>,
    /// Go-template-like format: {{.ID}} {{.Image}} {{.Command}} {{.CreatedAt}} {{.Status}}
    /// {{.State}} {{.Names}} {{.Isolation}}.
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL).
    #[arg(short, long)]
    pub force: bool,
    /// Remove anonymous volumes associated with the container.
    #[arg(short, long)]
    pub volumes: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not prompt for confirmation (husk never prompts; accepted for Docker compatibility).
    #[arg(short, long)]
    pub force: bool,
}

struct Filter {
    key: String,
    value: String,
}

fn parse_filters(raw: &[String]) -> Result<Vec<Filter>> {
    raw.iter()
        .map(|f| {
            let (key, value) = f
                .split_once('=')
                .with_context(|| format!("bad format of filter (expected name=value): {f}"))?;
            match key {
                "status" | "name" | "ancestor" | "id" | "exited" | "isolation" => Ok(Filter {
                    key: key.to_string(),
                    value: value.to_string(),
                }),
                _ => bail!("invalid filter '{key}'"),
            }
        })
        .collect()
}

fn matches(record: &Record, filters: &[Filter]) -> Result<bool> {
    // Docker ORs values of the same key and ANDs different keys.
    let mut keys: Vec<&str> = filters.iter().map(|f| f.key.as_str()).collect();
    keys.dedup();
    for key in keys {
        let mut any = false;
        for filter in filters.iter().filter(|f| f.key == key) {
            let value = filter.value.as_str();
            any |= match key {
                "status" => {
                    if ![
                        "created",
                        "running",
                        "exited",
                        "dead",
                        "paused",
                        "restarting",
                        "removing",
                    ]
                    .contains(&value)
                    {
                        bail!("invalid filter 'status={value}'");
                    }
                    record.effective_status().to_string() == value
                }
                "name" => record.name.contains(value),
                "id" => record.id.starts_with(value),
                "ancestor" => {
                    record.image == value
                        || record.image_id == value
                        || record
                            .image_id
                            .trim_start_matches("sha256:")
                            .starts_with(value)
                        || record.image.split(':').next() == Some(value)
                }
                "exited" => {
                    let code: i32 = value
                        .parse()
                        .with_context(|| format!("invalid filter 'exited={value}'"))?;
                    record.effective_status() == Status::Exited
                        && record.state.exit_code == Some(code)
                }
                "isolation" => record.isolation.to_string() == value,
                _ => unreachable!("filters are validated when parsed"),
            };
        }
        if !any {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Docker's STATUS column: "Up 3 seconds", "Exited (0) 5 seconds ago", "Created", "Dead".
pub fn status_text(record: &Record) -> String {
    match record.effective_status() {
        Status::Created => "Created".into(),
        Status::Running => match record.state.started_at {
            Some(at) => format!(
                "Up {}",
                human_duration((chrono::Utc::now() - at).to_std().unwrap_or_default())
            ),
            None => "Up".into(),
        },
        Status::Exited => format!(
            "Exited ({}) {}",
            record.state.exit_code.unwrap_or(-1),
            record.state.finished_at.map(ago).unwrap_or_default()
        ),
        Status::Dead => "Dead".into(),
    }
}

/// Docker's COMMAND: the args joined with spaces, an arg holding whitespace (or nothing) in
/// single quotes, cut at 20 characters, in double quotes.
fn command_text(record: &Record, truncate: bool) -> String {
    let command = record
        .command
        .iter()
        .map(|arg| {
            if arg.is_empty() || arg.chars().any(char::is_whitespace) {
                format!("'{arg}'")
            } else {
                arg.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let command = if truncate {
        ellipsize(&command, 20)
    } else {
        command
    };
    serde_json::to_string(&command).expect("strings always serialize")
}

pub fn ps(root: &Path, args: PsArgs) -> Result<i32> {
    let store = Containers::open(root)?;
    let filters = parse_filters(&args.filters)?;
    let mut records = store.list()?;
    records.reverse(); // newest first, as Docker lists them
    let limit = if args.latest { 1 } else { args.last };
    let mut shown = Vec::new();
    for record in records {
        let visible = args.all || limit > 0 || record.effective_status() == Status::Running;
        if visible && matches(&record, &filters)? {
            shown.push(record);
        }
    }
    if limit > 0 {
        shown.truncate(limit as usize);
    }

    if args.quiet {
        for record in &shown {
            println!(
                "{}",
                if args.no_trunc {
                    &record.id
                } else {
                    record.short_id()
                }
            );
        }
        return Ok(0);
    }
    if let Some(format) = &args.format {
        for record in &shown {
            println!("{}", render_format(format, record, !args.no_trunc));
        }
        return Ok(0);
    }
    let mut table = Table::new(&[
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
        "ISOLATION",
    ]);
    for record in &shown {
        table.row(vec![
            if args.no_trunc {
                record.id.clone()
            } else {
                record.short_id().to_string()
            },
            record.image.clone(),
            command_text(record, !args.no_trunc),
            ago(record.created),
            status_text(record),
            String::new(),
            record.name.clone(),
            record.isolation.to_string(),
        ]);
    }
    print!("{}", table.render());
    Ok(0)
}

fn render_format(format: &str, record: &Record, truncate: bool) -> String {
    let format = format.strip_prefix("table ").unwrap_or(format);
    let fields = [
        (
            "{{.ID}}",
            if truncate {
                record.short_id().to_string()
            } else {
                record.id.clone()
            },
        ),
        ("{{.Image}}", record.image.clone()),
        ("{{.Command}}", command_text(record, truncate)),
        (
            "{{.CreatedAt}}",
            record
                .created
                .format("%Y-%m-%d %H:%M:%S %z UTC")
                .to_string(),
        ),
        ("{{.RunningFor}}", ago(record.created)),
        ("{{.Status}}", status_text(record)),
        ("{{.State}}", record.effective_status().to_string()),
        ("{{.Names}}", record.name.clone()),
        ("{{.Isolation}}", record.isolation.to_string()),
        ("{{.Ports}}", String::new()),
    ];
    let mut out = format.replace("\\t", "\t");
    for (token, value) in fields {
        out = out.replace(token, &value);
    }
    out
}

pub fn rm(root: &Path, args: RmArgs) -> Result<i32> {
    let store = Containers::open(root)?;
    let mut failed = false;
    for key in &args.containers {
        match remove_one(root, &store, key, args.force, args.volumes) {
            Ok(()) => println!("{key}"),
            Err(err) => {
                eprintln!("Error response from daemon: {err:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

fn remove_one(
    root: &Path,
    store: &Containers,
    key: &str,
    force: bool,
    volumes: bool,
) -> Result<()> {
    let record = store.find(key)?;
    if record.effective_status() == Status::Running {
        if !force {
            bail!(
                "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                record.id
            );
        }
        store.update(&record.id, |r| r.state.stop_requested = true)?;
        let relayed = record.isolation == husk::container::Isolation::Vm
            && super::vm_container::send_signal(&record.id, Signal::SIGKILL);
        if let (false, Some(pid)) = (relayed, record.state.pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        // The supervisor notices the exit, records it and tears the sandbox down.
        super::lifecycle::wait_until_stopped(store, &record.id, Some(Duration::from_secs(10)))?;
    }
    release_leftovers(&store.dir_of(&record.id), &record.id)?;
    if volumes {
        super::volume::remove_anonymous_volumes(root, &record)?;
    }
    store.remove(&record.id)?;
    Ok(())
}

pub fn prune(root: &Path, _args: PruneArgs) -> Result<i32> {
    let store = Containers::open(root)?;
    println!("Deleted Containers:");
    let mut reclaimed = 0;
    for record in store.list()? {
        // Docker counts created containers as stopped too.
        if record.effective_status() != Status::Running {
            reclaimed += dir_size(&store.dir_of(&record.id));
            release_leftovers(&store.dir_of(&record.id), &record.id)?;
            store.remove(&record.id)?;
            println!("{}", record.id);
        }
    }
    println!();
    println!("Total reclaimed space: {}", human_size(reclaimed));
    Ok(0)
}
