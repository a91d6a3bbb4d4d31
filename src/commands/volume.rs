//! `husk volume create|ls|inspect|rm|prune`.

use std::path::Path;

use anyhow::Result;
use clap::{Args, Subcommand};
use husk::container::volume::{Volume, Volumes};

use husk::display::Table;
use serde_json::{json, Value};

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume.
    Create(CreateArgs),
    /// List volumes.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more volumes.
    Inspect(InspectArgs),
    /// Remove one or more volumes.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove unused volumes (anonymous ones; all unused with -a).
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Set metadata for a volume (K=V, or K for an empty value).
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// The volume's name (a random one if not given).
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only display volume names.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format the output using a Go-template subset: {{.Mountpoint}}, {{json .Labels}}.
    #[arg(short, long)]
    pub format: Option<String>,
    #[arg(required = true, value_name = "VOLUME")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Force the removal of volumes that containers still reference.
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true, value_name = "VOLUME")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove all unused volumes, not just anonymous ones.
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation (husk never prompts).
    #[arg(short, long)]
    pub force: bool,
}

/// A volume as Docker's `volume inspect` (and the Engine API) shows it.
pub fn value(volume: &Volume) -> Value {
    let mut labels = volume.labels.clone();
    if volume.anonymous {
        labels.insert("com.docker.volume.anonymous".into(), String::new());
    }
    json!({
        "CreatedAt": volume.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "Driver": "local",
        "Labels": if labels.is_empty() { json!(null) } else { json!(labels) },
        "Mountpoint": volume.mountpoint,
        "Name": volume.name,
        "Options": null,
        "Scope": "local",
    })
}

pub fn run(root: &Path, command: VolumeCommand) -> Result<i32> {
    let volumes = Volumes::open(root)?;
    match command {
        VolumeCommand::Create(args) => {
            let labels = args
                .labels
                .iter()
                .map(|l| match l.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (l.clone(), String::new()),
                })
                .collect();
            println!(
                "{}",
                volumes.create_labelled(args.name.as_deref(), labels)?.name
            );
            Ok(0)
        }
        VolumeCommand::Ls(args) => {
            let list = volumes.list()?;
            if args.quiet {
                list.iter().for_each(|v| println!("{}", v.name));
            } else {
                let mut table = Table::new(&["DRIVER", "VOLUME NAME"]);
                for volume in &list {
                    table.row(vec!["local".into(), volume.name.clone()]);
                }
                print!("{}", table.render());
            }
            Ok(0)
        }
        VolumeCommand::Inspect(args) => {
            let mut found = Vec::new();
            let mut failed = false;
            for name in &args.names {
                match volumes.get(name) {
                    Ok(volume) => found.push(value(&volume)),
                    Err(err) => {
                        eprintln!("Error response from daemon: {err}");
                        failed = true;
                    }
                }
            }
            super::print_inspected(args.format.as_deref(), &found)?;
            Ok(i32::from(failed))
        }
        VolumeCommand::Rm(args) => {
            let mut failed = false;
            for name in &args.names {
                match volumes.remove(name, args.force) {
                    Ok(()) => println!("{name}"),
                    Err(err) => {
                        eprintln!("Error response from daemon: {err}");
                        failed = true;
                    }
                }
            }
            Ok(i32::from(failed))
        }
        VolumeCommand::Prune(args) => {
            println!("Deleted Volumes:");
            for volume in volumes.list()? {
                if (volume.anonymous || args.all) && volumes.users(&volume.name)?.is_empty() {
                    volumes.remove(&volume.name, false)?;
                    println!("{}", volume.name);
                }
            }
            Ok(0)
        }
    }
}
