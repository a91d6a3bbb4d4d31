//! The container runtime: one `Container` life cycle over one [`Sandbox`] interface that both
//! isolations implement (sandbox/process.rs on the host kernel, sandbox/vm.rs in a microVM).
//!
//! The CLI (src/commands) parses flags, calls one function here and prints; it never asks
//! which isolation a container has. What differs between the isolations is behind the trait:
//! how the process is run, signalled, exec'd into, listed (`top`) and copied to and from.
//! The state machine around a run (created -> running -> exited, restarts, `--rm`, the exit
//! record) is written once, in container/.
//!
//! Configuration is read once, at the edge, into a [`RuntimeConfig`] that is passed down; the
//! cost ledger of a run is a value ([`crate::cost::CostRecorder`]) passed to what crosses its
//! phases.

pub mod archive;
pub mod container;
pub mod sandbox;

use std::path::{Path, PathBuf};

use crate::container::Isolation;
use crate::vm::VmSettings;

pub use container::{ContainerState, StartFailure};
pub use sandbox::{sandbox_for, RunExit, RunIo, Sandbox};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Record(#[from] crate::container::RecordError),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    Spec(#[from] crate::container::spec::SpecError),
    #[error(transparent)]
    Volume(#[from] crate::container::volume::VolumeError),
    #[error(transparent)]
    Log(#[from] crate::container::logs::LogError),
    #[error(transparent)]
    Teardown(#[from] crate::container::teardown::TeardownError),
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    #[error(transparent)]
    Cgroup(#[from] crate::process::CgroupError),
    #[error(transparent)]
    Vm(#[from] crate::vm::VmError),
    #[error(transparent)]
    Control(#[from] crate::vm::control::ControlError),
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// A flag or request this runtime (or this container's sandbox) cannot honour: one line
    /// that names it, said before anything is created.
    #[error("{0}")]
    Refused(String),
    /// The container is not in the state the operation needs.
    #[error("{0}")]
    State(String),
    /// What went wrong on the container's side (its guest, a copy).
    #[error("{0}")]
    Failed(String),
}

impl RuntimeError {
    /// An I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
        let what = what.into();
        move |source| RuntimeError::Io { what, source }
    }
}

impl From<nix::Error> for RuntimeError {
    fn from(errno: nix::Error) -> Self {
        RuntimeError::Io {
            what: "a system call".into(),
            source: errno.into(),
        }
    }
}

/// Everything the runtime is told about its host, read once at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// The isolation a container gets without `--isolation`.
    pub default_isolation: Isolation,
    /// How VM containers run.
    pub vm: VmSettings,
    /// The most bytes `cp` takes from a guest's tar stream.
    pub cp_max_bytes: u64,
}

/// `cp` out of a guest: 64 GiB unless HUSK_CP_MAX_BYTES says otherwise.
pub const DEFAULT_CP_MAX_BYTES: u64 = 64 << 30;

impl RuntimeConfig {
    /// The configuration the environment and `<root>/config.json` give: HUSK_ISOLATION (else
    /// "default_isolation" in config.json, else process), the VM settings
    /// ([`VmSettings::from_env`]) and HUSK_CP_MAX_BYTES.
    pub fn from_env(root: &Path) -> Result<Self, RuntimeError> {
        let default_isolation = match std::env::var("HUSK_ISOLATION") {
            Ok(value) => parse_isolation(&value)
                .map_err(|e| RuntimeError::Refused(format!("HUSK_ISOLATION: {e}")))?,
            Err(_) => isolation_from_config_file(&root.join("config.json"))?,
        };
        let cp_max_bytes = match std::env::var("HUSK_CP_MAX_BYTES") {
            Ok(v) => v.parse().map_err(|_| {
                RuntimeError::Refused(format!("HUSK_CP_MAX_BYTES={v}: expected a number of bytes"))
            })?,
            Err(_) => DEFAULT_CP_MAX_BYTES,
        };
        Ok(RuntimeConfig {
            default_isolation,
            vm: VmSettings::from_env()?,
            cp_max_bytes,
        })
    }
}

fn isolation_from_config_file(path: &Path) -> Result<Isolation, RuntimeError> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(Isolation::Process);
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| RuntimeError::Refused(format!("{} is not valid JSON: {e}", path.display())))?;
    match value.get("default_isolation").and_then(|v| v.as_str()) {
        Some(isolation) => parse_isolation(isolation).map_err(|e| {
            RuntimeError::Refused(format!("default_isolation in {}: {e}", path.display()))
        }),
        None => Ok(Isolation::Process),
    }
}

/// `process` or `vm`.
pub fn parse_isolation(value: &str) -> Result<Isolation, String> {
    match value {
        "process" => Ok(Isolation::Process),
        "vm" => Ok(Isolation::Vm),
        other => Err(format!("unknown isolation '{other}': use process or vm")),
    }
}

/// The runtime over one `--root`: containers, images and volumes there, one configuration.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub root: PathBuf,
    pub config: RuntimeConfig,
}

impl Runtime {
    pub fn new(root: &Path, config: RuntimeConfig) -> Self {
        Runtime {
            root: root.to_path_buf(),
            config,
        }
    }

    /// The container store.
    pub fn containers(&self) -> Result<crate::container::Containers, RuntimeError> {
        Ok(crate::container::Containers::open(&self.root)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_isolation_comes_from_the_root_config() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        assert_eq!(
            isolation_from_config_file(&file).unwrap(),
            Isolation::Process
        );
        std::fs::write(&file, r#"{"default_isolation":"vm"}"#).unwrap();
        assert_eq!(isolation_from_config_file(&file).unwrap(), Isolation::Vm);
        std::fs::write(&file, r#"{"default_isolation":"jail"}"#).unwrap();
        assert!(isolation_from_config_file(&file)
            .unwrap_err()
            .to_string()
            .contains("unknown isolation 'jail'"));
        std::fs::write(&file, "{").unwrap();
        assert!(isolation_from_config_file(&file).is_err());
    }
}
