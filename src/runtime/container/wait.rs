//! `wait`: until the container is no longer running.

use std::time::{Duration, Instant};

use crate::container::{Containers, Record, Status};
use crate::runtime::{Runtime, RuntimeError};

/// Wait until the container is no longer running, up to `timeout`.
pub fn wait_until_stopped(
    store: &Containers,
    id: &str,
    timeout: Option<Duration>,
) -> Result<Record, RuntimeError> {
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

/// `wait`: the container's exit code once it has stopped (-1 when it has none).
pub fn wait(runtime: &Runtime, key: &str) -> Result<i32, RuntimeError> {
    let store = runtime.containers()?;
    let record = store.find(key)?;
    let record = wait_until_stopped(&store, &record.id, None)?;
    Ok(record.state.exit_code.unwrap_or(-1))
}
