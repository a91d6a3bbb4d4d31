//! `top`: the container's processes, as its own kernel sees them (the host's for process
//! isolation, the guest's for a VM).

use crate::runtime::sandbox::Target;
use crate::runtime::{sandbox_for, Runtime, RuntimeError};

use super::{load_spec, require_running};

/// `ps` of the container's processes to stdout; ps's exit code.
pub fn top(runtime: &Runtime, key: &str, ps_options: &[String]) -> Result<i32, RuntimeError> {
    let store = runtime.containers()?;
    let record = store.find(key)?;
    require_running(&record)?;
    super::pause::refuse_if_paused(&record, "top")?;
    let spec = load_spec(&store, &record.id)?;
    let target = Target::new(runtime, &store, &record, &spec);
    sandbox_for(record.isolation).top(&target, ps_options)
}
