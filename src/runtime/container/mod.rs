//! A container's life cycle, one file per operation (after youki's libcontainer): create,
//! start (attached, detached, and the detached monitor's restart loop), attach, signal / stop /
//! kill / restart, exec, wait, top, cp, stats, delete. Each works for both isolations through
//! [`Sandbox`](super::Sandbox); the state machine every run goes through is here, once.

pub mod attach;
pub mod cp;
pub mod create;
pub mod delete;
pub mod exec;
pub mod kill;
pub mod pause;
pub mod resize;
pub mod start;
pub mod stats;
pub mod top;
pub mod wait;

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use super::RuntimeError;
use crate::container::{Containers, ProcessIdentity, Record, Status};
use crate::image;

/// The OCI runtime spec of a container, next to its record.
pub const SPEC_FILE: &str = "config.json";

/// Why a container's command never ran, with Docker's exit code for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFailure {
    pub code: i32,
    pub message: String,
}

impl From<crate::process::ProcessError> for StartFailure {
    fn from(err: crate::process::ProcessError) -> Self {
        Self {
            code: err.exit_code(),
            message: err.to_string(),
        }
    }
}

impl From<RuntimeError> for StartFailure {
    /// Anything else that stops a start is the runtime's failure: Docker's 125.
    fn from(err: RuntimeError) -> Self {
        match err {
            RuntimeError::Process(err) => err.into(),
            other => Self {
                code: 125,
                message: other.to_string(),
            },
        }
    }
}

/// The record's view of one run, for the sandbox that runs it.
#[derive(Clone, Copy)]
pub struct ContainerState<'a> {
    pub store: &'a Containers,
    pub record: &'a Record,
}

impl ContainerState<'_> {
    pub fn dir(&self) -> PathBuf {
        self.store.dir_of(&self.record.id)
    }

    /// The host process that is the container for the host: its init (process isolation) or
    /// the process that holds its VM (the monitor). `exec`, `cp` and a last-resort `kill`
    /// reach the container through it; `init` is the same process with its start time.
    pub fn publish_pid(&self, pid: i32) {
        let init = ProcessIdentity::of(pid);
        let _ = self.store.update(&self.record.id, |r| {
            r.state.pid = Some(pid);
            r.state.init = init;
        });
    }
}

pub fn load_spec(store: &Containers, id: &str) -> Result<Spec, RuntimeError> {
    let path = store.dir_of(id).join(SPEC_FILE);
    let bytes = std::fs::read(&path).map_err(RuntimeError::io(format!(
        "container {id} has no runtime spec ({})",
        path.display()
    )))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| RuntimeError::Failed(format!("{} is corrupt: {e}", path.display())))
}

/// The image layers of a container, bottom first.
pub fn layer_dirs(root: &Path, record: &Record) -> Result<Vec<PathBuf>, RuntimeError> {
    let images = image::Store::open(root)?;
    let stored = images.lookup(&record.image_id).map_err(|_| {
        RuntimeError::State(format!(
            "the image of container {} ({}) is gone",
            record.short_id(),
            record.image
        ))
    })?;
    Ok(images.layer_dirs(&stored)?)
}

/// The record says running, supervised by this process, before the sandbox starts: if husk
/// dies at any point after this, `ps` shows the container as dead rather than created.
///
/// `restart_count` is written in the same update, so a restart is never seen counted but not
/// yet started.
pub fn mark_starting(store: &Containers, id: &str, restart_count: u32) -> Result<(), RuntimeError> {
    let supervisor = ProcessIdentity::current();
    let record = store.update(id, |r| {
        r.restart_count = restart_count;
        r.state.status = Status::Running;
        r.state.supervisor = Some(supervisor);
        r.state.started_at = Some(chrono::Utc::now());
        r.state.finished_at = None;
        r.state.exit_code = None;
        r.state.pid = None;
        r.state.init = None;
        r.state.error = None;
        r.state.stop_requested = false;
        r.state.oom_killed = false;
    })?;
    store.record_event(crate::container::events::Action::Start, &record, None);
    Ok(())
}

/// Record how a run ended and return Docker's exit code, with whether the kernel's OOM killer
/// ended the container (in the same write, so that nobody sees the exit without it). A start
/// that failed before the command ran leaves the container "created" with the failure
/// recorded, as Docker does.
pub fn record_exit(
    store: &Containers,
    id: &str,
    result: &Result<super::RunExit, StartFailure>,
) -> i32 {
    let now = chrono::Utc::now();
    let (code, oom_killed, error) = match result {
        Ok(exit) => (exit.code, exit.oom_killed, None),
        Err(failure) => {
            eprintln!("husk: {}", failure.message);
            (failure.code, false, Some(failure.message.clone()))
        }
    };
    // The exit status is what a user asks for later: on disk before we go, unless the record
    // is about to be removed (--rm).
    let durable = store.load(id).is_ok_and(|r| !r.auto_remove);
    let update = |change: &dyn Fn(&mut Record)| {
        if durable {
            store.update_durably(id, change)
        } else {
            store.update(id, change)
        }
    };
    let updated = update(&|r: &mut Record| {
        r.state.status = if error.is_some() && r.restart_count == 0 {
            Status::Created
        } else {
            Status::Exited
        };
        r.state.exit_code = Some(code);
        r.state.finished_at = Some(now);
        r.state.pid = None;
        r.state.init = None;
        r.state.error = error.clone();
        r.state.oom_killed = oom_killed;
    });
    if let Ok(record) = updated {
        store.record_event(crate::container::events::Action::Die, &record, Some(code));
    }
    code
}

/// The container must be running for this operation.
pub fn require_running(record: &Record) -> Result<(), RuntimeError> {
    if record.effective_status() != Status::Running {
        return Err(RuntimeError::State(format!(
            "container {} is not running",
            record.short_id()
        )));
    }
    Ok(())
}
