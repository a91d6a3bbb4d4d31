//! One interface, two sandboxes (Kata runtime-rs's `Sandbox` is the anchor: a Linux-container
//! and a virt-container implementation behind one trait). Everything the life cycle in
//! container/ does that depends on the isolation goes through [`Sandbox`]; [`sandbox_for`] is
//! the one place that maps an isolation to its implementation.

pub mod process;
pub mod vm;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::sys::signal::Signal;
use oci_spec::runtime::{Process, Spec};

use super::container::{ContainerState, StartFailure};
use super::{RuntimeConfig, RuntimeError};
use crate::container::logs::LogWriter;
use crate::container::spec::SpecOptions;
use crate::container::{Containers, Isolation, Record};
use crate::cost::{CostRecorder, Phase};

/// The container's json-file log, shared by the threads that copy its output.
pub type SharedLog = Arc<Mutex<LogWriter>>;

/// Where a run's stdio goes.
pub enum RunIo {
    /// The caller's own stdin (with `-i`), stdout and stderr, and the terminal with `-t`; the
    /// output also goes into the log when there is one (`husk logs` works for an attached
    /// container, as in Docker; a `--rm` container's log would go with it).
    Foreground { log: Option<SharedLog> },
    /// A detached container: output into the log only, stdin from the FIFO `husk attach`
    /// writes to (with `-i`).
    Detached { log: SharedLog, stdin: Option<File> },
}

/// How the container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunExit {
    /// Docker's exit code (128+N for a signal).
    pub code: i32,
    /// The kernel's OOM killer ended it (in the guest's own cgroup for a VM).
    pub oom_killed: bool,
}

/// Everything a sandbox needs to run a container once.
pub struct RunContext<'a> {
    pub root: &'a Path,
    pub config: &'a RuntimeConfig,
    pub state: ContainerState<'a>,
    pub spec: &'a Spec,
    pub layers: &'a [PathBuf],
    pub cost: &'a CostRecorder,
}

/// A running container, for the operations that reach into it.
pub struct Target<'a> {
    pub root: &'a Path,
    pub config: &'a RuntimeConfig,
    pub store: &'a Containers,
    pub record: &'a Record,
    pub spec: &'a Spec,
}

impl<'a> Target<'a> {
    pub fn new(
        runtime: &'a super::Runtime,
        store: &'a Containers,
        record: &'a Record,
        spec: &'a Spec,
    ) -> Self {
        Target {
            root: &runtime.root,
            config: &runtime.config,
            store,
            record,
            spec,
        }
    }
}

/// An `exec`'s stdio: the caller's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecIo {
    /// Our stdin goes to the command (`-i`).
    pub interactive: bool,
    /// Return once the command runs (`-d`).
    pub detach: bool,
}

pub trait Sandbox {
    fn isolation(&self) -> Isolation;

    /// Refuse what this sandbox cannot honour, with one line naming the flag, before anything
    /// is created (runc's validator and youki's `Executor::validate` are the anchors).
    fn validate(&self, options: &SpecOptions, config: &RuntimeConfig) -> Result<(), RuntimeError>;

    /// The cost ledger's first phase of a run that starts in this sandbox.
    fn first_phase(&self) -> Phase;

    /// Run the container's process once, until it exits: publish its host pid once it runs
    /// (`ctx.state.publish_pid`), and say why when it never ran.
    fn run(&self, ctx: &RunContext, io: RunIo) -> Result<RunExit, StartFailure>;

    /// Deliver `signal` to the container's process.
    fn signal(&self, record: &Record, signal: Signal) -> Result<(), RuntimeError>;

    /// Run `process` in the running container with the caller's stdio; its exit code.
    fn exec(&self, target: &Target, process: &Process, io: ExecIo) -> Result<i32, RuntimeError>;

    /// `ps` of the container's processes, to stdout: `ps_options` as given to `top`.
    fn top(&self, target: &Target, ps_options: &[String]) -> Result<i32, RuntimeError>;

    /// Copy `source` on the host to `path` in the container, named as Docker names it.
    fn copy_in(&self, target: &Target, source: &Path, path: &Path) -> Result<(), RuntimeError>;

    /// Copy `path` in the container to `dest` on the host, placed as Docker places it.
    fn copy_out(&self, target: &Target, path: &Path, dest: &Path) -> Result<(), RuntimeError>;

    /// The container's own terminal (a detached `-t` container's) is now `rows` x `cols`;
    /// false when nothing took the size (its monitor holds no terminal).
    fn resize(&self, target: &Target, rows: u16, cols: u16) -> bool;

    /// lstat of `path` in the container's own view (the archive endpoints' path stat).
    fn stat(
        &self,
        target: &Target,
        path: &Path,
    ) -> Result<crate::runtime::archive::PathStat, RuntimeError>;
}

/// Signal the container's host process (`state.pid`): its init, or the process that holds
/// its VM.
fn signal_host_process(record: &Record, signal: Signal) -> Result<(), RuntimeError> {
    let pid = record.state.pid.ok_or_else(|| {
        RuntimeError::State(format!("container {} has no recorded process", record.id))
    })?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).map_err(|errno| {
        RuntimeError::Failed(format!("cannot signal container {}: {errno}", record.id))
    })
}

/// The sandbox of an isolation: the one match on it.
pub fn sandbox_for(isolation: Isolation) -> &'static dyn Sandbox {
    match isolation {
        Isolation::Process => &process::ProcessSandbox,
        Isolation::Vm => &vm::VmSandbox,
    }
}
