//! `husk ps` (`container ls`): the container records as Docker's table or a template.

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Args;

use husk::container::{Containers, Record, Status};
use husk::display::{ago, ellipsize, human_duration, Table};
use husk::runtime::container::pause;

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
                "status" | "name" | "ancestor" | "id" | "exited" | "isolation" | "label" => {
                    Ok(Filter {
                        key: key.to_string(),
                        value: value.to_string(),
                    })
                }
                _ => bail!("invalid filter '{key}'"),
            }
        })
        .collect()
}

fn matches(record: &Record, filters: &[Filter]) -> Result<bool> {
    // Docker ORs values of the same key and ANDs different keys; every label must hold.
    let mut labels = filters.iter().filter(|f| f.key == "label");
    if !labels.all(|f| husk::container::spec::labels_match(&record.options.labels, &f.value)) {
        return Ok(false);
    }
    let mut keys: Vec<&str> = filters.iter().map(|f| f.key.as_str()).collect();
    keys.retain(|k| *k != "label");
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
                    pause::state_name(record) == value
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
        Status::Running => {
            let up = match record.state.started_at {
                Some(at) => format!(
                    "Up {}",
                    human_duration((chrono::Utc::now() - at).to_std().unwrap_or_default())
                ),
                None => "Up".into(),
            };
            if pause::is_paused(record) {
                format!("{up} (Paused)")
            } else {
                up
            }
        }
        Status::Exited => format!(
            "Exited ({}) {}",
            record.state.exit_code.unwrap_or(-1),
            record.state.finished_at.map(ago).unwrap_or_default()
        ),
        Status::Dead => "Dead".into(),
    }
}

/// The args joined with spaces, an arg holding whitespace (or nothing) in single quotes: what
/// Docker lists as a container's Command (the API's field, and ps's column before its cut).
pub fn command_line(record: &Record) -> String {
    record
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
        .join(" ")
}

/// Docker's COMMAND column: [`command_line`] cut at 20 characters, in double quotes.
fn command_text(record: &Record, truncate: bool) -> String {
    let command = command_line(record);
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
    let ports = husk::network::published_by_container(root);
    let ports_of = |record: &Record| {
        ports
            .get(&record.id)
            .map(|list| {
                list.iter()
                    .map(husk::network::Published::display)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    if let Some(format) = &args.format {
        for record in &shown {
            println!(
                "{}",
                render_format(format, record, !args.no_trunc, &ports_of(record))
            );
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
            ports_of(record),
            record.name.clone(),
            record.isolation.to_string(),
        ]);
    }
    print!("{}", table.render());
    Ok(0)
}

fn render_format(format: &str, record: &Record, truncate: bool, ports: &str) -> String {
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
        ("{{.State}}", pause::state_name(record)),
        ("{{.Names}}", record.name.clone()),
        ("{{.Isolation}}", record.isolation.to_string()),
        ("{{.Ports}}", ports.to_string()),
    ];
    let mut out = format.replace("\\t", "\t");
    for (token, value) in fields {
        out = out.replace(token, &value);
    }
    out
}
