//! `rm` and `container prune`: remove containers and what they leave on the host.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use husk::container::teardown::{dir_size, release_leftovers};
use husk::container::{Containers, Status};
use husk::display::human_size;

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
