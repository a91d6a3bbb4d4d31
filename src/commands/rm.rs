//! `rm` and `container prune`: remove containers and what they leave on the host.

use anyhow::Result;
use clap::Args;
use husk::display::human_size;
use husk::runtime::container::delete;
use husk::runtime::Runtime;

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

pub fn rm(runtime: &Runtime, args: RmArgs) -> Result<i32> {
    Ok(super::for_each(&args.containers, |key| {
        delete::remove(runtime, key, args.force, args.volumes)
    }))
}

pub fn prune(runtime: &Runtime, _args: PruneArgs) -> Result<i32> {
    let (removed, reclaimed) = delete::prune(runtime)?;
    println!("Deleted Containers:");
    for id in removed {
        println!("{id}");
    }
    println!();
    println!("Total reclaimed space: {}", human_size(reclaimed));
    Ok(0)
}
