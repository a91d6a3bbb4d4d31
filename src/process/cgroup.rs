//! Container cgroups on cgroup v2 (unified), v1 and hybrid hosts: limits, accounting, and
//! removal. Every path is relative to a layout found in /proc/self/mountinfo, so tests can
//! point a layout at a temp dir standing in for cgroupfs.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup filesystem found in /proc/self/mountinfo")]
    NoCgroupfs,
    #[error("cgroup v1 controller {0} is not mounted; it is needed for the requested limit")]
    MissingController(&'static str),
    #[error("invalid cgroup name {0:?}")]
    BadName(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup {0} still has processes after killing them")]
    Busy(PathBuf),
    #[error("cgroup {0} did not reach the requested freezer state")]
    FreezerStuck(PathBuf),
    #[error(transparent)]
    DeviceFilter(#[from] super::device_filter::DeviceFilterError),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io { op, path, source }
}

/// v1 controllers husk puts containers in: the ones its limits and accounting need, and the
/// freezer for the OCI runtime's pause/resume.
const V1_CONTROLLERS: [&str; 6] = ["memory", "cpu", "cpuacct", "pids", "devices", "freezer"];

/// Where the cgroup hierarchies are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLayout {
    /// cgroup v2 only: one hierarchy with all controllers.
    Unified(PathBuf),
    /// cgroup v1 (or hybrid, whose v2 hierarchy has no controllers): one mount per
    /// controller (co-mounted controllers share a path).
    Legacy(BTreeMap<String, PathBuf>),
}

impl CgroupLayout {
    /// The host's layout. A hybrid host counts as v1: its v2 mount holds no controllers.
    pub fn detect() -> Result<Self, CgroupError> {
        let path = Path::new("/proc/self/mountinfo");
        let mountinfo = std::fs::read_to_string(path).map_err(io_err("reading", path))?;
        Self::from_mountinfo(&mountinfo)
    }

    /// Parse mountinfo text: v1 controller mounts win when present (hybrid), else cgroup2.
    pub fn from_mountinfo(mountinfo: &str) -> Result<Self, CgroupError> {
        let mut v1 = BTreeMap::new();
        let mut v2 = None;
        for line in mountinfo.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = pre.split(' ').nth(4).unwrap_or_default();
            let mut post = post.split(' ');
            let fstype = post.next().unwrap_or_default();
            let super_opts = post.nth(1).unwrap_or_default();
            match fstype {
                "cgroup2" => {
                    v2.get_or_insert_with(|| PathBuf::from(unescape(mount_point)));
                }
                "cgroup" => {
                    for opt in super_opts.split(',') {
                        if V1_CONTROLLERS.contains(&opt) {
                            v1.entry(opt.to_string())
                                .or_insert_with(|| PathBuf::from(unescape(mount_point)));
                        }
                    }
                }
                _ => {}
            }
        }
        if !v1.is_empty() {
            return Ok(Self::Legacy(v1));
        }
        v2.map(Self::Unified).ok_or(CgroupError::NoCgroupfs)
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Resource accounting read from the container's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CgroupStats {
    pub memory_usage_bytes: u64,
    /// Highest usage seen; None where the kernel does not record it (v2 before 5.19).
    pub memory_peak_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub cpu_usage_ns: u64,
    pub pids: u64,
    /// How many times the OOM killer acted in the cgroup.
    pub oom_kills: u64,
}

/// One container's cgroup (a directory per hierarchy).
#[derive(Debug)]
pub struct Cgroup {
    layout: CgroupLayout,
    name: PathBuf,
}

impl Cgroup {
    /// Create `name` (e.g. "husk/<id>") in every hierarchy of `layout` and apply `resources`.
    /// On error nothing is left behind.
    pub fn create(
        layout: CgroupLayout,
        name: &str,
        resources: Option<&LinuxResources>,
    ) -> Result<Self, CgroupError> {
        let cgroup = Self::open(layout, name)?;
        if let Err(err) = cgroup.make_dirs().and_then(|()| cgroup.apply(resources)) {
            let _ = cgroup.remove();
            return Err(err);
        }
        Ok(cgroup)
    }

    /// An existing container cgroup, e.g. for `rm -f` of a container whose supervising
    /// process died: [`Cgroup::destroy`] then kills what is left and removes it.
    pub fn open(layout: CgroupLayout, name: &str) -> Result<Self, CgroupError> {
        let rel = Path::new(name);
        let clean = rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if name.is_empty() || !clean {
            return Err(CgroupError::BadName(name.to_string()));
        }
        Ok(Self {
            layout,
            name: rel.to_path_buf(),
        })
    }

    /// Directories of this cgroup, one per distinct hierarchy.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = match &self.layout {
            CgroupLayout::Unified(root) => vec![root.join(&self.name)],
            CgroupLayout::Legacy(mounts) => mounts.values().map(|m| m.join(&self.name)).collect(),
        };
        paths.dedup();
        paths.sort();
        paths.dedup();
        paths
    }

    /// On a v1 (or hybrid) host, each hierarchy's mount name ("memory", "cpu,cpuacct") with
    /// this cgroup's directory in it; empty on a unified host.
    pub fn v1_hierarchies(&self) -> Vec<(String, PathBuf)> {
        let CgroupLayout::Legacy(mounts) = &self.layout else {
            return Vec::new();
        };
        let mut dirs: Vec<(String, PathBuf)> = mounts
            .values()
            .filter_map(|mount| {
                let name = mount.file_name()?.to_string_lossy().into_owned();
                Some((name, mount.join(&self.name)))
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Stop every process of the cgroup (v2 cgroup.freeze, v1 freezer.state), waiting until
    /// the kernel says they all are.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        self.set_frozen(true)
    }

    pub fn thaw(&self) -> Result<(), CgroupError> {
        self.set_frozen(false)
    }

    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        match &self.layout {
            CgroupLayout::Unified(root) => {
                let path = root.join(&self.name).join("cgroup.freeze");
                let text = std::fs::read_to_string(&path).map_err(io_err("reading", &path))?;
                Ok(text.trim() == "1")
            }
            CgroupLayout::Legacy(_) => {
                let path = self.controller_dir("freezer")?.join("freezer.state");
                let text = std::fs::read_to_string(&path).map_err(io_err("reading", &path))?;
                Ok(text.trim() != "THAWED")
            }
        }
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        // runc waits this long too: a task in uninterruptible sleep freezes when it wakes.
        let deadline = Instant::now() + Duration::from_secs(10);
        let result = match &self.layout {
            CgroupLayout::Unified(root) => {
                let dir = root.join(&self.name);
                let events = dir.join("cgroup.events");
                write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
                let want = if frozen { "frozen 1" } else { "frozen 0" };
                loop {
                    let state = read(&events)?;
                    if state.lines().any(|l| l.trim() == want) {
                        break Ok(());
                    }
                    // The v2 freezer never freezes kernel threads yet counts them, so
                    // "frozen 1" never comes while one sits in the cgroup. KVM puts one
                    // there for every VM (kvm-nx-lpage-recovery, attached to the VMM's
                    // cgroups): then every user task stopped is the kernel's word.
                    if frozen && user_tasks_stopped_beside_kernel_threads(&dir)? {
                        break Ok(());
                    }
                    if Instant::now() > deadline {
                        break Err(CgroupError::FreezerStuck(events));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            CgroupLayout::Legacy(_) => {
                let path = self.controller_dir("freezer")?.join("freezer.state");
                let value = if frozen { "FROZEN" } else { "THAWED" };
                loop {
                    // v1 moves through FREEZING: writing again retries the stragglers.
                    write(&path, value)?;
                    if read(&path)?.trim() == value {
                        break Ok(());
                    }
                    if Instant::now() > deadline {
                        break Err(CgroupError::FreezerStuck(path));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        };
        if result.is_err() && frozen {
            // Never leave a container half frozen: a failed pause leaves it running.
            let _ = self.set_frozen(false);
        }
        result
    }

    fn controller_dir(&self, controller: &'static str) -> Result<PathBuf, CgroupError> {
        match &self.layout {
            CgroupLayout::Unified(root) => Ok(root.join(&self.name)),
            CgroupLayout::Legacy(mounts) => mounts
                .get(controller)
                .map(|m| m.join(&self.name))
                .ok_or(CgroupError::MissingController(controller)),
        }
    }

    fn make_dirs(&self) -> Result<(), CgroupError> {
        // Another container's teardown may remove the shared parent (e.g. "husk") between
        // our steps; starting over a few times covers it.
        let mut attempt = 0;
        loop {
            match self.try_make_dirs() {
                Err(CgroupError::Io { source, .. })
                    if source.kind() == ErrorKind::NotFound && attempt < 5 =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn try_make_dirs(&self) -> Result<(), CgroupError> {
        if let CgroupLayout::Unified(root) = &self.layout {
            enable_v2_controllers(root, &self.name)?;
        }
        for dir in self.paths() {
            std::fs::create_dir_all(&dir).map_err(io_err("creating cgroup", &dir))?;
        }
        Ok(())
    }

    /// Write `resources` into the cgroup (at create, and for the OCI runtime's `update`).
    pub fn apply(&self, resources: Option<&LinuxResources>) -> Result<(), CgroupError> {
        let Some(res) = resources else { return Ok(()) };
        let unified = matches!(self.layout, CgroupLayout::Unified(_));
        if let Some(mem) = res.memory() {
            let dir = self.controller_dir("memory")?;
            if let Some(limit) = mem.limit() {
                if unified {
                    // OCI uses -1 for "no limit", which v2 spells "max".
                    let v2 = |n: i64| {
                        if n < 0 {
                            "max".to_string()
                        } else {
                            n.to_string()
                        }
                    };
                    write(&dir.join("memory.max"), &v2(limit))?;
                    if let Some(swap) = mem.swap() {
                        // v1's swap limit counts memory+swap; v2's counts swap alone.
                        let swap_only = if swap < 0 || limit < 0 {
                            "max".to_string()
                        } else {
                            swap.saturating_sub(limit).max(0).to_string()
                        };
                        write_optional(&dir.join("memory.swap.max"), &swap_only)?;
                    }
                } else {
                    write(&dir.join("memory.limit_in_bytes"), &limit.to_string())?;
                    if let Some(swap) = mem.swap() {
                        // Absent when the kernel has no swap accounting; the memory limit
                        // alone then still triggers the OOM killer.
                        write_optional(
                            &dir.join("memory.memsw.limit_in_bytes"),
                            &swap.to_string(),
                        )?;
                    }
                }
            }
        }
        if let Some(cpu) = res.cpu() {
            let dir = self.controller_dir("cpu")?;
            let period = cpu.period().unwrap_or(100_000);
            if let Some(quota) = cpu.quota() {
                if unified {
                    let quota = if quota > 0 {
                        quota.to_string()
                    } else {
                        "max".to_string()
                    };
                    write(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
                } else {
                    write(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                    write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
            }
        }
        if let Some(rules) = res.devices().as_ref().filter(|r| !r.is_empty()) {
            let dir = self.controller_dir("devices")?;
            if unified {
                super::device_filter::attach(&dir, rules)?;
            } else {
                write_device_rules(&dir, rules)?;
            }
        }
        if let Some(pids) = res.pids() {
            let dir = self.controller_dir("pids")?;
            let limit = if pids.limit() > 0 {
                pids.limit().to_string()
            } else {
                "max".to_string()
            };
            write(&dir.join("pids.max"), &limit)?;
        }
        Ok(())
    }

    /// Move process `pid` (and its future children) into the cgroup.
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        for dir in self.paths() {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Pids in the cgroup (read from the first hierarchy; all hold the same processes).
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let Some(dir) = self.paths().into_iter().next() else {
            return Ok(Vec::new());
        };
        let path = dir.join("cgroup.procs");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_err("reading", &path)(e)),
        }
    }

    /// Accounting for `husk stats` and tests. A controller the host does not mount (v1)
    /// reads as zero rather than failing the whole report.
    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        let mut stats = CgroupStats::default();
        let unified = matches!(self.layout, CgroupLayout::Unified(_));
        if let Ok(mem) = self.controller_dir("memory") {
            if unified {
                stats.memory_usage_bytes = read_u64(&mem.join("memory.current"))?;
                stats.memory_peak_bytes = read_u64(&mem.join("memory.peak")).ok();
                stats.memory_limit_bytes = read_u64(&mem.join("memory.max"))
                    .ok()
                    .filter(|l| *l != u64::MAX);
                stats.oom_kills = read_keyed(&mem.join("memory.events"), "oom_kill").unwrap_or(0);
            } else {
                stats.memory_usage_bytes = read_u64(&mem.join("memory.usage_in_bytes"))?;
                stats.memory_peak_bytes = read_u64(&mem.join("memory.max_usage_in_bytes")).ok();
                // v1 reports "no limit" as a huge page-rounded number.
                stats.memory_limit_bytes = read_u64(&mem.join("memory.limit_in_bytes"))
                    .ok()
                    .filter(|l| *l < i64::MAX as u64 / 2);
                stats.oom_kills =
                    read_keyed(&mem.join("memory.oom_control"), "oom_kill").unwrap_or(0);
            }
        }
        if unified {
            if let Ok(cpu) = self.controller_dir("cpu") {
                stats.cpu_usage_ns =
                    read_keyed(&cpu.join("cpu.stat"), "usage_usec")?.saturating_mul(1000);
            }
        } else if let Ok(cpuacct) = self.controller_dir("cpuacct") {
            stats.cpu_usage_ns = read_u64(&cpuacct.join("cpuacct.usage"))?;
        }
        if let Ok(pids) = self.controller_dir("pids") {
            stats.pids = read_u64(&pids.join("pids.current"))?;
        }
        Ok(stats)
    }

    /// SIGKILL everything left in the cgroup, then remove its directories (and the shared
    /// parent, e.g. "husk", when it became empty).
    pub fn destroy(&self) -> Result<(), CgroupError> {
        for _ in 0..100 {
            let pids = self.pids()?;
            if pids.is_empty() {
                return self.remove();
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(CgroupError::Busy(
            self.paths().into_iter().next().unwrap_or_default(),
        ))
    }

    fn remove(&self) -> Result<(), CgroupError> {
        for dir in self.paths() {
            remove_dir(&dir)?;
            if self.name.components().count() > 1 {
                if let Some(shared) = dir.parent() {
                    // Fails harmlessly (EBUSY/ENOTEMPTY) while other containers use it.
                    let _ = std::fs::remove_dir(shared);
                }
            }
        }
        Ok(())
    }
}

/// A cgroup directory whose last task just exited can report EBUSY for a moment.
fn remove_dir(dir: &Path) -> Result<(), CgroupError> {
    for attempt in 0..50 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 49 => {
                std::thread::sleep(Duration::from_millis(5));
            }
            // On a fake (tmpfs/ext4) cgroupfs the control files are ordinary files.
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                let _ = remove_plain_files(dir);
                std::fs::remove_dir(dir).map_err(io_err("removing cgroup", dir))?;
                return Ok(());
            }
            Err(e) => return Err(io_err("removing cgroup", dir)(e)),
        }
    }
    Ok(())
}

fn remove_plain_files(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// On v2, controllers must be enabled in every ancestor's cgroup.subtree_control.
fn enable_v2_controllers(root: &Path, name: &Path) -> Result<(), CgroupError> {
    let available = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<String> = ["memory", "cpu", "pids"]
        .iter()
        .filter(|c| available.split_whitespace().any(|a| a == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let mut dir = root.to_path_buf();
    let parents: Vec<_> = name
        .parent()
        .map(|p| p.components().collect())
        .unwrap_or_default();
    for level in std::iter::once(None).chain(parents.into_iter().map(Some)) {
        if let Some(component) = level {
            dir.push(component);
            std::fs::create_dir_all(&dir).map_err(io_err("creating cgroup", &dir))?;
        }
        write(&dir.join("cgroup.subtree_control"), &wanted.join(" "))?;
    }
    Ok(())
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(io_err("writing", path))
}

fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(io_err("reading", path))
}

/// v1: each rule is one write to devices.allow or devices.deny, in order (a deny of `a`
/// first clears what the parent allowed).
fn write_device_rules(
    dir: &Path,
    rules: &[oci_spec::runtime::LinuxDeviceCgroup],
) -> Result<(), CgroupError> {
    use oci_spec::runtime::LinuxDeviceType;
    use std::io::Write;
    let mut files: BTreeMap<&str, std::fs::File> = BTreeMap::new();
    for rule in rules {
        let typ = match rule.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => 'a',
            LinuxDeviceType::B => 'b',
            LinuxDeviceType::C | LinuxDeviceType::U => 'c',
            LinuxDeviceType::P => continue,
        };
        let number = |n: Option<i64>| {
            n.filter(|n| *n >= 0)
                .map_or("*".to_string(), |n| n.to_string())
        };
        let line = format!(
            "{typ} {}:{} {}\n",
            number(rule.major()),
            number(rule.minor()),
            rule.access().as_deref().unwrap_or("rwm")
        );
        let name = if rule.allow() {
            "devices.allow"
        } else {
            "devices.deny"
        };
        let path = dir.join(name);
        let file = match files.entry(name) {
            std::collections::btree_map::Entry::Occupied(open) => open.into_mut(),
            std::collections::btree_map::Entry::Vacant(slot) => slot.insert(
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(&path)
                    .map_err(io_err("opening", &path))?,
            ),
        };
        // One write(2) per rule: the kernel parses each write as one rule.
        file.write_all(line.as_bytes())
            .map_err(io_err("writing", &path))?;
    }
    Ok(())
}

fn write_optional(path: &Path, value: &str) -> Result<(), CgroupError> {
    match std::fs::write(path, value) {
        Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::PermissionDenied => {
            Ok(())
        }
        other => other.map_err(io_err("writing", path)),
    }
}

fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let text = std::fs::read_to_string(path).map_err(io_err("reading", path))?;
    let text = text.trim();
    if text == "max" {
        return Ok(u64::MAX);
    }
    text.parse().map_err(|_| {
        io_err("parsing", path)(std::io::Error::new(
            ErrorKind::InvalidData,
            text.to_string(),
        ))
    })
}

/// A "key value" line from a flat-keyed file such as cpu.stat or memory.events.
fn read_keyed(path: &Path, key: &str) -> Result<u64, CgroupError> {
    let text = std::fs::read_to_string(path).map_err(io_err("reading", path))?;
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .ok_or_else(|| {
            io_err("parsing", path)(std::io::Error::new(
                ErrorKind::InvalidData,
                format!("no {key}"),
            ))
        })
}

/// PF_KTHREAD in the flags field of /proc/TID/stat (include/linux/sched.h).
const PF_KTHREAD: u64 = 0x0020_0000;

/// What /proc/TID/stat says about a task of a cgroup that is being frozen.
#[derive(Debug, PartialEq, Eq)]
enum FreezeView {
    /// A kernel thread: the v2 freezer leaves it running.
    KernelThread,
    /// A user task that is not running. After cgroup.freeze was written every user task has
    /// been woken with the freeze trap pending, so one seen asleep afterwards sleeps in it
    /// (an interruptible sleep with a signal pending returns at once).
    Stopped,
    /// A user task still on its way to the trap.
    Running,
}

fn freeze_view(stat: &str) -> Option<FreezeView> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?;
    let flags: u64 = fields.nth(5)?.parse().ok()?;
    Some(if flags & PF_KTHREAD != 0 {
        FreezeView::KernelThread
    } else if state == "R" {
        FreezeView::Running
    } else {
        FreezeView::Stopped
    })
}

/// Whether the cgroup tree at `dir` holds a kernel thread and every user task in it is
/// stopped: the freeze is complete but cgroup.events cannot say so.
fn user_tasks_stopped_beside_kernel_threads(dir: &Path) -> Result<bool, CgroupError> {
    let mut kernel_threads = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for tid in read(&dir.join("cgroup.threads"))?.split_whitespace() {
            // A task that exited meanwhile has no stat and no say.
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{tid}/stat")) else {
                continue;
            };
            match freeze_view(&stat) {
                Some(FreezeView::KernelThread) => kernel_threads += 1,
                Some(FreezeView::Stopped) => {}
                Some(FreezeView::Running) | None => return Ok(false),
            }
        }
        let entries = std::fs::read_dir(&dir).map_err(io_err("listing", &dir))?;
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(entry.path());
            }
        }
    }
    Ok(kernel_threads > 0)
}

#[cfg(test)]
mod tests {
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    };

    use super::*;

    const HYBRID: &str = "\
25 1 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw
26 25 0:23 / /sys/fs/cgroup ro,nosuid shared:8 - tmpfs tmpfs ro,mode=755
27 26 0:24 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate
30 26 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:12 - cgroup cgroup rw,cpu,cpuacct
31 26 0:28 / /sys/fs/cgroup/memory rw,nosuid shared:13 - cgroup cgroup rw,memory
32 26 0:29 / /sys/fs/cgroup/pids rw,nosuid shared:14 - cgroup cgroup rw,pids
33 26 0:30 / /sys/fs/cgroup/cpuset rw,nosuid shared:15 - cgroup cgroup rw,cpuset
";
    const UNIFIED: &str = "\
25 1 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw
26 25 0:23 / /sys/fs/cgroup rw,nosuid shared:8 - cgroup2 cgroup2 rw,nsdelegate
";

    fn resources() -> LinuxResources {
        LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64 << 20)
                    .swap(64 << 20)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .quota(50_000)
                    .period(100_000u64)
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(20).build().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn detects_hybrid_as_v1_and_unified_as_v2() {
        let CgroupLayout::Legacy(mounts) = CgroupLayout::from_mountinfo(HYBRID).unwrap() else {
            panic!("hybrid must use the v1 controllers");
        };
        assert_eq!(mounts["memory"], PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(mounts["cpu"], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(
            mounts["cpuacct"],
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert!(!mounts.contains_key("cpuset"));
        assert_eq!(
            CgroupLayout::from_mountinfo(UNIFIED).unwrap(),
            CgroupLayout::Unified("/sys/fs/cgroup".into())
        );
        assert!(matches!(
            CgroupLayout::from_mountinfo(""),
            Err(CgroupError::NoCgroupfs)
        ));
    }

    #[test]
    fn v1_limits_stats_and_removal_on_a_fake_cgroupfs() {
        let tmp = tempfile::tempdir().unwrap();
        let mount = |name: &str| {
            let p = tmp.path().join(name);
            std::fs::create_dir_all(&p).unwrap();
            p
        };
        let cpu = mount("cpu,cpuacct");
        let layout = CgroupLayout::Legacy(BTreeMap::from([
            ("memory".to_string(), mount("memory")),
            ("cpu".to_string(), cpu.clone()),
            ("cpuacct".to_string(), cpu),
            ("pids".to_string(), mount("pids")),
        ]));
        let cg = Cgroup::create(layout, "husk/abc", Some(&resources())).unwrap();
        assert_eq!(
            cg.paths().len(),
            3,
            "co-mounted cpu,cpuacct is one directory"
        );
        let mem = tmp.path().join("memory/husk/abc");
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        assert_eq!(
            read(mem.join("memory.limit_in_bytes")),
            (64u64 << 20).to_string()
        );
        assert_eq!(
            read(mem.join("memory.memsw.limit_in_bytes")),
            (64u64 << 20).to_string()
        );
        let cpu = tmp.path().join("cpu,cpuacct/husk/abc");
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
        assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(tmp.path().join("pids/husk/abc/pids.max")), "20");

        cg.add_process(4242).unwrap();
        assert_eq!(read(mem.join("cgroup.procs")), "4242");

        std::fs::write(mem.join("memory.usage_in_bytes"), "1000\n").unwrap();
        std::fs::write(mem.join("memory.max_usage_in_bytes"), "2000\n").unwrap();
        std::fs::write(
            mem.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .unwrap();
        std::fs::write(cpu.join("cpuacct.usage"), "123456\n").unwrap();
        std::fs::write(tmp.path().join("pids/husk/abc/pids.current"), "3\n").unwrap();
        let stats = cg.stats().unwrap();
        assert_eq!(stats.memory_usage_bytes, 1000);
        assert_eq!(stats.memory_peak_bytes, Some(2000));
        assert_eq!(stats.memory_limit_bytes, Some(64 << 20));
        assert_eq!(stats.cpu_usage_ns, 123456);
        assert_eq!(stats.pids, 3);
        assert_eq!(stats.oom_kills, 1);

        for dir in cg.paths() {
            std::fs::write(dir.join("cgroup.procs"), "").unwrap();
        }
        cg.destroy().unwrap();
        for name in ["memory", "cpu,cpuacct", "pids"] {
            assert!(
                !tmp.path().join(name).join("husk").exists(),
                "{name}/husk left behind"
            );
        }
    }

    #[test]
    fn v1_device_rules_are_written_in_order_on_a_fake_cgroupfs() {
        use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxResourcesBuilder};
        let tmp = tempfile::tempdir().unwrap();
        let devices = tmp.path().join("devices");
        std::fs::create_dir_all(&devices).unwrap();
        let layout = CgroupLayout::Legacy(BTreeMap::from([("devices".to_string(), devices)]));
        let rule = |allow, typ, major: Option<i64>, access: &str| {
            let mut b = LinuxDeviceCgroupBuilder::default()
                .allow(allow)
                .typ(typ)
                .access(access);
            if let Some(major) = major {
                b = b.major(major).minor(3);
            }
            b.build().unwrap()
        };
        let resources = LinuxResourcesBuilder::default()
            .devices(vec![
                rule(false, LinuxDeviceType::A, None, "rwm"),
                rule(true, LinuxDeviceType::C, None, "m"),
                rule(true, LinuxDeviceType::C, Some(1), "rwm"),
            ])
            .build()
            .unwrap();
        let cg = Cgroup::create(layout, "husk/abc", Some(&resources)).unwrap();
        let read = |name: &str| {
            std::fs::read_to_string(tmp.path().join("devices/husk/abc").join(name)).unwrap()
        };
        assert_eq!(read("devices.deny"), "a *:* rwm\n");
        assert_eq!(read("devices.allow"), "c *:* m\nc 1:3 rwm\n");
        cg.destroy().unwrap();
    }

    #[test]
    fn v2_limits_enable_controllers_on_a_fake_cgroupfs() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let layout = CgroupLayout::Unified(tmp.path().to_path_buf());
        let cg = Cgroup::create(layout, "husk/abc", Some(&resources())).unwrap();
        let read = |p: &str| std::fs::read_to_string(tmp.path().join(p)).unwrap();
        assert_eq!(read("cgroup.subtree_control"), "+memory +cpu +pids");
        assert_eq!(read("husk/cgroup.subtree_control"), "+memory +cpu +pids");
        assert_eq!(read("husk/abc/memory.max"), (64u64 << 20).to_string());
        assert_eq!(read("husk/abc/memory.swap.max"), "0");
        assert_eq!(read("husk/abc/cpu.max"), "50000 100000");
        assert_eq!(read("husk/abc/pids.max"), "20");

        let dir = tmp.path().join("husk/abc");
        std::fs::write(dir.join("memory.current"), "4096\n").unwrap();
        std::fs::write(dir.join("memory.max"), "max\n").unwrap();
        std::fs::write(dir.join("cpu.stat"), "usage_usec 7\nuser_usec 5\n").unwrap();
        std::fs::write(dir.join("memory.events"), "low 0\noom 2\noom_kill 2\n").unwrap();
        std::fs::write(dir.join("pids.current"), "1\n").unwrap();
        let stats = cg.stats().unwrap();
        assert_eq!(stats.memory_usage_bytes, 4096);
        assert_eq!(stats.memory_peak_bytes, None);
        assert_eq!(stats.cpu_usage_ns, 7000);
        assert_eq!(stats.oom_kills, 2);
        std::fs::write(dir.join("cgroup.procs"), "").unwrap();
        cg.destroy().unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn rejects_escaping_names_and_missing_controllers() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = CgroupLayout::Unified(tmp.path().to_path_buf());
        assert!(matches!(
            Cgroup::create(layout.clone(), "../x", None),
            Err(CgroupError::BadName(_))
        ));
        assert!(matches!(
            Cgroup::create(layout, "/abs", None),
            Err(CgroupError::BadName(_))
        ));
        let layout = CgroupLayout::Legacy(BTreeMap::from([(
            "pids".to_string(),
            tmp.path().to_path_buf(),
        )]));
        let err = Cgroup::create(layout, "husk/x", Some(&resources())).unwrap_err();
        assert!(matches!(err, CgroupError::MissingController("memory")));
        assert!(
            !tmp.path().join("husk/x").exists(),
            "failed create must clean up"
        );
    }

    #[test]
    fn freeze_view_reads_state_and_kernel_thread_flag_after_the_command_name() {
        let kthread = "812 (kvm-nx-lpage-recovery-790) S 2 0 0 0 -1 2129984 0 0 0 0 0 0";
        assert_eq!(freeze_view(kthread), Some(FreezeView::KernelThread));
        let running = "42 (a) b) R) R 1 42 42 0 -1 4194560 9 0 0 0";
        assert_eq!(freeze_view(running), Some(FreezeView::Running));
        let asleep = "43 (virtiofsd) S 1 43 43 0 -1 4194368 9 0 0 0";
        assert_eq!(freeze_view(asleep), Some(FreezeView::Stopped));
        assert_eq!(freeze_view("44 (cut"), None);
    }

    #[test]
    fn a_kernel_thread_beside_sleeping_tasks_counts_as_frozen_and_a_running_task_does_not() {
        let tmp = tempfile::tempdir().unwrap();
        let leaf = tmp.path().join("child");
        std::fs::create_dir(&leaf).unwrap();
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let sleeper_tid = sleeper.id().to_string();
        // Wait until the child sleeps (it runs while it execs).
        let stat = format!("/proc/{sleeper_tid}/stat");
        while freeze_view(&std::fs::read_to_string(&stat).unwrap()) != Some(FreezeView::Stopped) {
            std::thread::sleep(Duration::from_millis(5));
        }
        // kthreadd (pid 2) is a kernel thread on every Linux.
        std::fs::write(tmp.path().join("cgroup.threads"), "2\n").unwrap();
        std::fs::write(leaf.join("cgroup.threads"), format!("{sleeper_tid}\n")).unwrap();
        assert!(user_tasks_stopped_beside_kernel_threads(tmp.path()).unwrap());

        // Without a kernel thread the kernel's own frozen 1 is the answer: keep waiting.
        std::fs::write(tmp.path().join("cgroup.threads"), "").unwrap();
        assert!(!user_tasks_stopped_beside_kernel_threads(tmp.path()).unwrap());

        // A task reading its own stat is running: this test thread.
        let link = std::fs::read_link("/proc/thread-self").unwrap();
        let own_tid = link.file_name().unwrap().to_str().unwrap().to_string();
        std::fs::write(tmp.path().join("cgroup.threads"), format!("2\n{own_tid}\n")).unwrap();
        assert!(!user_tasks_stopped_beside_kernel_threads(tmp.path()).unwrap());
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
    }
}
