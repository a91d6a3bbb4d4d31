//! `pause` and `unpause`: the container's cgroup frozen and thawed. The cgroup holds the
//! container's processes (process isolation) or the VM's monitor, whose vCPU threads stopping
//! stops the whole guest, so one freezer serves both isolations. Whether a container is paused
//! is the kernel's word (the freezer state), never a field of the record: a husk killed between
//! the two leaves nothing to disagree.

use crate::container::events::Action;
use crate::container::teardown::cgroup_name;
use crate::container::{Isolation, Record, Status};
use crate::process::{Cgroup, CgroupLayout};
use crate::runtime::{Runtime, RuntimeError};

fn cgroup_of(record: &Record) -> Result<Cgroup, RuntimeError> {
    Ok(Cgroup::open(
        CgroupLayout::detect()?,
        &cgroup_name(&record.id),
    )?)
}

/// A running container whose cgroup the kernel says is frozen.
pub fn is_paused(record: &Record) -> bool {
    record.effective_status() == Status::Running
        && cgroup_of(record)
            .and_then(|cgroup| cgroup.is_frozen().map_err(RuntimeError::from))
            .unwrap_or(false)
}

/// Docker's state name: the record's status, or `paused`.
pub fn state_name(record: &Record) -> String {
    if is_paused(record) {
        "paused".into()
    } else {
        record.effective_status().to_string()
    }
}

/// `pause`: every process of the container (or the whole guest) stops where it is.
pub fn pause(runtime: &Runtime, key: &str) -> Result<(), RuntimeError> {
    let store = runtime.containers()?;
    let record = store.find(key)?;
    if record.effective_status() != Status::Running {
        return Err(RuntimeError::State(format!(
            "Container {} is not running",
            record.id
        )));
    }
    if is_paused(&record) {
        return Err(RuntimeError::State(format!(
            "Container {} is already paused",
            record.id
        )));
    }
    cgroup_of(&record)?.freeze()?;
    store.record_event(Action::Pause, &record, None);
    Ok(())
}

/// `unpause`.
pub fn unpause(runtime: &Runtime, key: &str) -> Result<(), RuntimeError> {
    let store = runtime.containers()?;
    let record = store.find(key)?;
    if !is_paused(&record) {
        return Err(RuntimeError::State(format!(
            "Container {} is not paused",
            record.id
        )));
    }
    cgroup_of(&record)?.thaw()?;
    store.record_event(Action::Unpause, &record, None);
    Ok(())
}

/// Docker delivers a signal to a paused container and leaves it running: thawed first here,
/// so that a VM's monitor is awake to take the signal to the guest.
pub fn thaw_for_signal(record: &Record) -> Result<(), RuntimeError> {
    if is_paused(record) {
        cgroup_of(record)?.thaw()?;
    }
    Ok(())
}

/// Operations a frozen container cannot serve are refused with Docker's line: `exec` in both
/// isolations, and what a VM's agent would have to answer (`top`, `cp`).
pub fn refuse_if_paused(record: &Record, operation: &str) -> Result<(), RuntimeError> {
    let guest_only = matches!(operation, "top" | "cp");
    if is_paused(record) && (!guest_only || record.isolation == Isolation::Vm) {
        return Err(RuntimeError::State(format!(
            "Container {} is paused, unpause the container before {operation}",
            record.name
        )));
    }
    Ok(())
}
