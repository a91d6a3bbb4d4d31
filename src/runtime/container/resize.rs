//! `resize` of a detached container's own terminal (the Engine API's
//! /containers/{id}/resize, which `docker run -it` sends at its start and on every change of
//! the client's window): the size reaches the pty its monitor holds (process isolation) or
//! the guest's, through the VM's supervisor.

use crate::runtime::sandbox::Target;
use crate::runtime::{sandbox_for, Runtime, RuntimeError};

use super::{load_spec, require_running};

pub fn resize(runtime: &Runtime, key: &str, rows: u16, cols: u16) -> Result<(), RuntimeError> {
    let store = runtime.containers()?;
    let record = store.find(key)?;
    require_running(&record)?;
    if !record.options.tty {
        return Err(RuntimeError::State(format!(
            "container {} has no terminal to resize (it was not created with -t)",
            record.short_id()
        )));
    }
    if rows == 0 || cols == 0 {
        return Err(RuntimeError::Refused(format!(
            "a terminal of {rows}x{cols}: both sizes must be at least 1"
        )));
    }
    let spec = load_spec(&store, &record.id)?;
    let target = Target::new(runtime, &store, &record, &spec);
    if !sandbox_for(record.isolation).resize(&target, rows, cols) {
        return Err(RuntimeError::Failed(format!(
            "the monitor of container {} took no terminal size",
            record.short_id()
        )));
    }
    Ok(())
}
