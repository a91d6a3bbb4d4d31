//! `exec`: another process in a running container, with the container's confinement.

use oci_spec::runtime::Process;

use crate::runtime::sandbox::{ExecIo, Target};
use crate::runtime::{sandbox_for, Runtime, RuntimeError};

use super::{load_spec, require_running};

/// What `exec` changes from the container's own process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    pub command: Vec<String>,
    /// K=V entries (or K, taken from husk's environment), over the container's.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub tty: bool,
    pub interactive: bool,
    pub detach: bool,
}

/// The exec'd process: the container's process settings (capabilities, rlimits, security)
/// with the command, environment, directory, user and terminal of this exec.
pub fn exec_process(base: &Process, options: &ExecOptions) -> Result<Process, RuntimeError> {
    let mut process = base.clone();
    process.set_args(Some(options.command.clone()));
    let mut env = base.env().clone().unwrap_or_default();
    for entry in &options.env {
        let entry = match entry.split_once('=') {
            Some(_) => entry.clone(),
            None => match std::env::var(entry) {
                Ok(value) => format!("{entry}={value}"),
                Err(_) => continue,
            },
        };
        let key = entry.split('=').next().unwrap_or_default().to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(entry);
    }
    process.set_env(Some(env));
    if let Some(dir) = &options.workdir {
        if !dir.starts_with('/') {
            return Err(RuntimeError::Refused(format!(
                "the working directory '{dir}' is invalid, it needs to be an absolute path"
            )));
        }
        process.set_cwd(dir.into());
    }
    if let Some(user) = &options.user {
        let mut spec_user = process.user().clone();
        spec_user.set_username(Some(user.clone()));
        process.set_user(spec_user);
    }
    // A detached command has nobody reading a terminal.
    process.set_terminal(Some(options.tty && !options.detach));
    Ok(process)
}

/// Run the command in the container with the caller's stdio; its exit code (Docker's 126 and
/// 127 when it cannot run).
pub fn exec(runtime: &Runtime, key: &str, options: &ExecOptions) -> Result<i32, RuntimeError> {
    let store = runtime.containers()?;
    let record = store.find(key)?;
    require_running(&record)?;
    super::pause::refuse_if_paused(&record, "exec")?;
    let spec = load_spec(&store, &record.id)?;
    let base = spec
        .process()
        .clone()
        .ok_or_else(|| RuntimeError::Failed("the container's spec has no process".into()))?;
    let process = exec_process(&base, options)?;
    let target = Target::new(runtime, &store, &record, &spec);
    let io = ExecIo {
        interactive: options.interactive,
        detach: options.detach,
    };
    sandbox_for(record.isolation).exec(&target, &process, io)
}
