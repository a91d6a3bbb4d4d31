//! `container-monitor ID` (hidden): the per-container monitor of a detached container, husk
//! re-executed in its own session by `run -d`/`start`/`restart` (no daemon). The life cycle
//! it runs is the runtime's (runtime/container/start.rs).

use anyhow::Result;
use husk::runtime::container::start;
use husk::runtime::Runtime;

pub fn monitor(runtime: &Runtime, id: &str) -> Result<i32> {
    Ok(start::monitor(runtime, id)?)
}
