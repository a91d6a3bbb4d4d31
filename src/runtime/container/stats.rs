//! `stats`: the container's resource use from its cgroup on the host, which holds the
//! container's processes (process isolation) or the VM's monitor with the guest in it.

use std::time::Instant;

use crate::container::teardown::cgroup_name;
use crate::container::Record;
use crate::process::{Cgroup, CgroupLayout, CgroupStats};
use crate::runtime::RuntimeError;

/// One sample of the container's cgroup, with when it was taken.
pub fn sample(record: &Record) -> Result<(CgroupStats, Instant), RuntimeError> {
    let cgroup = Cgroup::open(CgroupLayout::detect()?, &cgroup_name(&record.id))?;
    Ok((cgroup.stats()?, Instant::now()))
}
