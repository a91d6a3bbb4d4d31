//! `kill`, `stop` and `restart`: signals reach the container's process through its sandbox
//! (a VM's through its supervisor, so that even SIGKILL reaches the guest process).

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::container::{Containers, Record, Status};
use crate::runtime::{sandbox_for, Runtime, RuntimeError};

use super::wait::wait_until_stopped;

/// Deliver `signal` to a running container's process.
pub fn signal(record: &Record, signal: Signal) -> Result<(), RuntimeError> {
    if record.effective_status() != Status::Running {
        return Err(RuntimeError::State(format!(
            "Container {} is not running",
            record.id
        )));
    }
    super::pause::thaw_for_signal(record)?;
    sandbox_for(record.isolation).signal(record, signal)
}

/// Ask the container to stop with `signal`: the flag keeps restart policies from starting it
/// again (`kill`, `stop`, `rm -f`).
pub fn request_stop(store: &Containers, record: &Record, sig: Signal) -> Result<(), RuntimeError> {
    store.update(&record.id, |r| r.state.stop_requested = true)?;
    signal(record, sig)
}

/// `kill`.
pub fn kill(runtime: &Runtime, key: &str, sig: Signal) -> Result<(), RuntimeError> {
    let store = runtime.containers()?;
    request_stop(&store, &store.find(key)?, sig)
}

/// SIGTERM, then SIGKILL after `grace`, as `docker stop` does; returns once it stopped.
pub fn stop_gracefully(
    store: &Containers,
    record: &Record,
    grace: Duration,
) -> Result<(), RuntimeError> {
    if record.effective_status() != Status::Running {
        return Ok(()); // Docker: stopping a stopped container succeeds
    }
    request_stop(store, record, Signal::SIGTERM)?;
    let record = wait_until_stopped(store, &record.id, Some(grace))?;
    if record.effective_status() == Status::Running {
        signal(&record, Signal::SIGKILL)?;
        wait_until_stopped(store, &record.id, Some(Duration::from_secs(10)))?;
    }
    Ok(())
}

/// `stop`.
pub fn stop(runtime: &Runtime, key: &str, grace: Duration) -> Result<(), RuntimeError> {
    let store = runtime.containers()?;
    stop_gracefully(&store, &store.find(key)?, grace)
}

/// `restart`: stop (SIGTERM, then SIGKILL after the grace period) and start again, detached,
/// with the same writable layer.
pub fn restart(runtime: &Runtime, key: &str, grace: Duration) -> Result<(), RuntimeError> {
    let store = runtime.containers()?;
    let record = store.find(key)?;
    if record.effective_status() == Status::Running {
        stop_gracefully(&store, &record, grace)?;
        // The old supervisor records the exit and leaves; the new one must not race it.
        wait_for_supervisor_exit(&store, &record.id);
    }
    let record = store.load(&record.id)?;
    super::start::start_detached(runtime, &store, &record)
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
