//! `rm` and `container prune`, and `--rm`'s removal after the exit.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::container::spec::MountKind;
use crate::container::teardown::{dir_size, release_leftovers};
use crate::container::volume::Volumes;
use crate::container::{Containers, Record, Status};
use crate::runtime::{Runtime, RuntimeError};

/// `rm [-f] [-v]`: a running container only with `force` (SIGKILL first, as Docker does).
pub fn remove(
    runtime: &Runtime,
    key: &str,
    force: bool,
    volumes: bool,
) -> Result<(), RuntimeError> {
    let store = runtime.containers()?;
    let record = store.find(key)?;
    if record.effective_status() == Status::Running {
        if !force {
            return Err(RuntimeError::State(format!(
                "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                record.id
            )));
        }
        store.update(&record.id, |r| r.state.stop_requested = true)?;
        // A container marked running whose process is not published yet (it is being
        // started) has nothing to signal: try again until it has, or is gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = store.load(&record.id)?;
            if now.effective_status() != Status::Running {
                break;
            }
            if super::kill::signal(&now, Signal::SIGKILL).is_ok() || Instant::now() > deadline {
                // The supervisor notices the exit, records it and tears the sandbox down.
                super::wait::wait_until_stopped(&store, &record.id, Some(Duration::from_secs(10)))?;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    release_leftovers(&store.dir_of(&record.id), &record.id)?;
    crate::network::release_container(&runtime.root, &record.id)?;
    if volumes {
        remove_anonymous_volumes(runtime, &record)?;
    }
    store.remove(&record.id)?;
    Ok(())
}

/// `container prune`: every container that is not running; (ids removed, bytes reclaimed).
pub fn prune(runtime: &Runtime) -> Result<(Vec<String>, u64), RuntimeError> {
    let store = runtime.containers()?;
    let mut removed = Vec::new();
    let mut reclaimed = 0;
    for record in store.list()? {
        // Docker counts created containers as stopped too.
        if record.effective_status() != Status::Running {
            reclaimed += dir_size(&store.dir_of(&record.id));
            release_leftovers(&store.dir_of(&record.id), &record.id)?;
            crate::network::release_container(&runtime.root, &record.id)?;
            store.remove(&record.id)?;
            removed.push(record.id);
        }
    }
    Ok((removed, reclaimed))
}

/// `--rm`: once the container has exited, remove it with its anonymous volumes.
pub fn remove_if_auto(runtime: &Runtime, store: &Containers, id: &str) -> Result<(), RuntimeError> {
    let record = store.load(id)?;
    if record.auto_remove {
        release_leftovers(&store.dir_of(id), id)?;
        crate::network::release_container(&runtime.root, id)?;
        remove_anonymous_volumes(runtime, &record)?;
        store.remove(id)?;
    }
    Ok(())
}

/// `rm -v` and `run --rm`: the container's anonymous volumes go with it.
pub fn remove_anonymous_volumes(runtime: &Runtime, record: &Record) -> Result<(), RuntimeError> {
    let volumes = Volumes::open(&runtime.root)?;
    for mount in &record.options.mounts {
        if mount.kind != MountKind::Volume {
            continue;
        }
        let Ok(volume) = volumes.get(&mount.name) else {
            continue;
        };
        // Still referenced by the record being removed: force past that one reference.
        let others = volumes
            .users(&volume.name)?
            .into_iter()
            .filter(|user| *user != record.name)
            .count();
        if volume.anonymous && others == 0 {
            volumes.remove(&volume.name, true)?;
        }
    }
    Ok(())
}
