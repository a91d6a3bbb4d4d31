//! `cp`: files between the host and a container, as a tar stream. The container's side is
//! read or written from inside the container's own view (sandbox `copy_in`/`copy_out`), so a
//! symlink in the container resolves inside the container and never reaches host files.

use std::path::{Path, PathBuf};

use crate::runtime::sandbox::Target;
use crate::runtime::{sandbox_for, Runtime, RuntimeError};

use super::load_spec;

/// Which way a copy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyDirection {
    FromContainer,
    IntoContainer,
}

/// Copy between `host_path` and `container_path` in the container `key`.
pub fn copy(
    runtime: &Runtime,
    key: &str,
    container_path: &str,
    host_path: &Path,
    direction: CopyDirection,
) -> Result<(), RuntimeError> {
    let store = runtime.containers()?;
    let record = store.find(key)?;
    super::pause::refuse_if_paused(&record, "cp")?;
    let spec = load_spec(&store, &record.id)?;
    let target = Target::new(runtime, &store, &record, &spec);
    let path = PathBuf::from("/").join(container_path.trim_start_matches('/'));
    let sandbox = sandbox_for(record.isolation);
    match direction {
        CopyDirection::IntoContainer => sandbox.copy_in(&target, host_path, &path),
        CopyDirection::FromContainer => sandbox.copy_out(&target, &path, host_path),
    }
}

/// lstat of `container_path` in the container `key`, in the container's own view.
pub fn stat(
    runtime: &Runtime,
    key: &str,
    container_path: &str,
) -> Result<crate::runtime::archive::PathStat, RuntimeError> {
    let store = runtime.containers()?;
    let record = store.find(key)?;
    super::pause::refuse_if_paused(&record, "cp")?;
    let spec = load_spec(&store, &record.id)?;
    let target = Target::new(runtime, &store, &record, &spec);
    let path = PathBuf::from("/").join(container_path.trim_start_matches('/'));
    sandbox_for(record.isolation).stat(&target, &path)
}
