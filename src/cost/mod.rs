//! What isolation costs: a ledger per container run (phase times on the monotonic clock, CPU
//! time and memory of the isolation machinery, guest memory) and `husk compare`, which runs the
//! same workload under both isolations and reports them side by side.
//!
//! The ledger is a value, a [`CostRecorder`], made where a run starts and passed to what crosses
//! its phases (the runtime layer, both sandboxes, the VM backend); one-line markers there
//! (`cost.begin(Phase::Boot)`) keep those files readable. A recorder made with
//! `CostRecorder::off()` records nothing, so runs nobody costs pay nothing.

pub mod compare;
pub mod report;
pub mod workload;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CostError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("cost ledger {path} is corrupt: {source}")]
    Corrupt {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

/// One phase of a container's life, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Image lookup, runtime spec, container record, volumes.
    Prepare,
    /// Process isolation: namespaces, cgroup, overlay rootfs, up to the container's exec.
    Setup,
    /// VM isolation: guest disks and initramfs built, the monitor (husk's thread or the QEMU
    /// process) started and its agent channel open.
    MonitorBuild,
    /// VM isolation: the guest kernel booted, up to the agent starting as PID 1.
    Boot,
    /// VM isolation: the agent's own setup (mounts, console) until it said Ready. The guest
    /// reports the split in its Ready message (CLOCK_BOOTTIME at init and at ready).
    AgentReady,
    /// VM isolation: the agent set up the container and started its process.
    ProcessStart,
    /// The container's command ran.
    ProcessRun,
    /// Monitor/VM shut down, sandbox released, exit recorded, `--rm` done.
    Teardown,
}

impl Phase {
    pub const ALL: [Phase; 8] = [
        Phase::Prepare,
        Phase::Setup,
        Phase::MonitorBuild,
        Phase::Boot,
        Phase::AgentReady,
        Phase::ProcessStart,
        Phase::ProcessRun,
        Phase::Teardown,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Phase::Prepare => "image+rootfs prepare",
            Phase::Setup => "namespace+cgroup setup",
            Phase::MonitorBuild => "monitor build+start",
            Phase::Boot => "kernel boot",
            Phase::AgentReady => "agent ready",
            Phase::ProcessStart => "process start",
            Phase::ProcessRun => "process run",
            Phase::Teardown => "teardown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseTime {
    pub phase: Phase,
    pub ms: f64,
}

/// The cost of one container run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    /// "process" or "vm".
    pub isolation: String,
    /// The VM monitor ("husk" or "qemu"); None for process isolation.
    pub vmm: Option<String>,
    /// Contiguous phases: each starts where the previous ended.
    pub phases: Vec<PhaseTime>,
    /// Wall time from the first phase's start to the ledger's end, measured on its own.
    pub total_ms: f64,
    /// CPU (user+system) of husk and the monitor/VMM, without guest vCPU time.
    pub machinery_cpu_ms: f64,
    /// CPU of the workload: the container's processes, or the guest's vCPU threads.
    pub workload_cpu_ms: f64,
    /// Peak resident memory of husk and the monitor/VMM, guest RAM excluded.
    pub machinery_peak_rss_kib: u64,
    /// Peak proportional set size of husk and the monitor/VMM, guest RAM excluded.
    pub machinery_peak_pss_kib: u64,
    /// Guest RAM given to the VM (0 for process isolation).
    pub guest_memory_kib: u64,
    /// Peak guest RAM actually resident on the host.
    pub guest_resident_kib: u64,
    /// VM exits of the run (husk's monitor only): KVM's counters and those that reached the
    /// monitor, by reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_exits: Option<VmExits>,
}

/// A run's VM exits, as the cost ledger keeps them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VmExits {
    /// Every exit, as KVM counted it (None where the kernel has no binary statistics).
    pub total: Option<u64>,
    /// KVM's `*_exits` counters, summed over the vCPUs.
    pub kvm: std::collections::BTreeMap<String, u64>,
    /// The exits that reached the monitor, by reason and device.
    pub monitor: std::collections::BTreeMap<String, u64>,
}

impl From<&crate::vmm::exits::ExitReport> for VmExits {
    fn from(report: &crate::vmm::exits::ExitReport) -> Self {
        VmExits {
            total: report.kvm_total(),
            kvm: report
                .kvm
                .iter()
                .filter(|(k, _)| k != "exits")
                .cloned()
                .collect(),
            monitor: report
                .monitor
                .iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect(),
        }
    }
}

impl Ledger {
    pub fn phase_ms(&self, phase: Phase) -> Option<f64> {
        self.phases.iter().find(|p| p.phase == phase).map(|p| p.ms)
    }

    pub fn phases_sum_ms(&self) -> f64 {
        self.phases.iter().map(|p| p.ms).sum()
    }

    /// A few lines for `husk run --cost`.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "cost ({}{}): total {:.1} ms\n",
            self.isolation,
            self.vmm
                .as_deref()
                .map(|v| format!(", vmm {v}"))
                .unwrap_or_default(),
            self.total_ms
        );
        for p in &self.phases {
            out.push_str(&format!("  {:<26}{:>10.1} ms\n", p.phase.label(), p.ms));
        }
        out.push_str(&format!(
            "  machinery cpu {:.1} ms, workload cpu {:.1} ms, machinery peak rss {} KiB pss {} KiB",
            self.machinery_cpu_ms,
            self.workload_cpu_ms,
            self.machinery_peak_rss_kib,
            self.machinery_peak_pss_kib
        ));
        if self.guest_memory_kib > 0 {
            out.push_str(&format!(
                ", guest memory {} KiB ({} KiB resident)",
                self.guest_memory_kib, self.guest_resident_kib
            ));
        }
        if let Some(exits) = &self.vm_exits {
            let total = exits
                .total
                .map_or_else(|| "?".to_string(), |n| n.to_string());
            let to_monitor: u64 = exits.monitor.values().sum();
            out.push_str(&format!(
                "\n  vm exits {total}, {to_monitor} of them to the monitor"
            ));
            for (what, n) in &exits.monitor {
                out.push_str(&format!(", {what} {n}"));
            }
        }
        out
    }

    pub fn read(path: &std::path::Path) -> Result<Ledger, CostError> {
        let bytes = std::fs::read(path).map_err(|source| CostError::Io {
            what: format!("reading {}", path.display()),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| CostError::Corrupt {
            path: path.display().to_string(),
            source,
        })
    }
}

/// Memory of one process outside guest RAM, and its guest RAM resident part.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct MemorySample {
    pub rss_kib: u64,
    pub pss_kib: u64,
    pub guest_rss_kib: u64,
}

/// Parse /proc/PID/smaps text: mappings at least `guest_kib` large are the guest's RAM and are
/// counted apart (0: no guest, everything is machinery).
pub fn parse_smaps(text: &str, guest_kib: u64) -> MemorySample {
    let mut sample = MemorySample::default();
    let mut in_guest = false;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(key), Some(value)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Ok(kib) = value.parse::<u64>() else {
            continue;
        };
        match key {
            "Size:" => in_guest = guest_kib > 0 && kib >= guest_kib,
            "Rss:" if in_guest => sample.guest_rss_kib += kib,
            "Rss:" => sample.rss_kib += kib,
            "Pss:" if !in_guest => sample.pss_kib += kib,
            _ => {}
        }
    }
    sample
}

fn memory_of(pid: i32, guest_kib: u64) -> Option<MemorySample> {
    // smaps (not smaps_rollup) because guest RAM must be told apart mapping by mapping.
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    Some(parse_smaps(&text, guest_kib))
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the running system and has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// utime+stime in clock ticks from a /proc/.../stat line (the comm field may hold spaces).
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state is field 3 of the full line, utime 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU ticks of a process's vCPU threads (QEMU names them "CPU n/KVM" or "CPU n/TCG").
fn vcpu_ticks(pid: i32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        // QEMU names its vCPU threads "CPU n/KVM" (-name debug-threads=on); husk's monitor
        // process (`husk vm boot`, or an in-process monitor in tests) "husk-vcpuN".
        if comm.starts_with("CPU ") || comm.starts_with("husk-vcpu") {
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
            total += parse_stat_cpu_ticks(&stat).unwrap_or(0);
        }
    }
    Some(total)
}

fn rusage_ms(who: i32) -> f64 {
    // SAFETY: an all-zero rusage is a valid value for getrusage to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage for the call's duration.
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return 0.0;
    }
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}

/// What the sampler thread has seen so far.
#[derive(Default)]
struct Samples {
    /// Peak per process outside guest RAM, keyed by pid.
    peak: HashMap<i32, MemorySample>,
    /// Last seen vCPU ticks of the monitor process.
    vcpu_ticks: u64,
}

struct Recorder {
    origin: Instant,
    current: Option<(Phase, Instant)>,
    phases: Vec<PhaseTime>,
    isolation: String,
    vmm: Option<String>,
    guest_kib: u64,
    vm_exits: Option<VmExits>,
    /// Other processes of the machinery (the QEMU process).
    watched: Arc<Mutex<Vec<i32>>>,
    guest_kib_shared: Arc<Mutex<u64>>,
    samples: Arc<Mutex<Samples>>,
    stop: Arc<AtomicBool>,
    sampler: Option<std::thread::JoinHandle<()>>,
}

/// How often machinery memory is sampled while a container runs.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

fn sample_once(own: i32, watched: &[i32], guest_kib: u64, samples: &Mutex<Samples>) {
    let mut found = Vec::new();
    for &pid in std::iter::once(&own).chain(watched) {
        // A monitor (QEMU, husk's monitor process) maps guest RAM; memory_of tells it apart.
        if let Some(sample) = memory_of(pid, guest_kib) {
            found.push((pid, sample));
        }
    }
    let vcpu = std::iter::once(&own)
        .chain(watched)
        .filter_map(|&pid| vcpu_ticks(pid))
        .sum();
    let mut samples = samples.lock().unwrap_or_else(|e| e.into_inner());
    for (pid, sample) in found {
        let peak = samples.peak.entry(pid).or_default();
        peak.rss_kib = peak.rss_kib.max(sample.rss_kib);
        peak.pss_kib = peak.pss_kib.max(sample.pss_kib);
        peak.guest_rss_kib = peak.guest_rss_kib.max(sample.guest_rss_kib);
    }
    // Threads vanish at exit; keep the largest total seen.
    samples.vcpu_ticks = samples.vcpu_ticks.max(vcpu);
}

/// The cost ledger of one run, passed to whatever does the run's work (the runtime layer, the
/// sandboxes, the VM backend); `CostRecorder::off()` when nobody asked for the cost, and then
/// every call is a no-op.
pub struct CostRecorder {
    recorder: Option<Mutex<Recorder>>,
}

impl CostRecorder {
    /// A recorder that records nothing.
    pub fn off() -> Self {
        Self { recorder: None }
    }

    /// Start a ledger; its first phase is `first`.
    pub fn start(isolation: &str, first: Phase) -> Self {
        Self {
            recorder: Some(Mutex::new(start(isolation, first))),
        }
    }

    fn with(&self, f: impl FnOnce(&mut Recorder)) {
        if let Some(recorder) = &self.recorder {
            f(&mut recorder.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }

    /// End the current phase and begin `phase`.
    pub fn begin(&self, phase: Phase) {
        self.with(|r| begin(r, phase));
    }

    /// The current phase ended `tail` ago and `next` has run since: for phases whose boundary
    /// only the guest saw (the agent reports how long its own setup took).
    pub fn split_current(&self, next: Phase, tail: Duration) {
        self.with(|r| split_current(r, next, tail));
    }

    /// The container runs in a VM under `vmm` with `guest_mib` of RAM. Called before the VM is
    /// built: the monitor maps guest RAM as soon as it starts, and every sample from then on
    /// must tell that RAM apart from the machinery's own memory.
    pub fn note_vm(&self, vmm: &str, guest_mib: u32) {
        self.with(|r| {
            r.vmm = Some(vmm.to_string());
            r.guest_kib = u64::from(guest_mib) * 1024;
            *r.guest_kib_shared.lock().unwrap_or_else(|e| e.into_inner()) = r.guest_kib;
        });
    }

    /// The VM's monitor process is `monitor_pid` (when that is husk itself it is sampled
    /// anyway).
    pub fn note_monitor_pid(&self, monitor_pid: i32) {
        self.with(|r| {
            if monitor_pid != std::process::id() as i32 {
                if let Ok(mut watched) = r.watched.lock() {
                    watched.push(monitor_pid);
                }
            }
        });
    }

    /// The VM's exits, once its monitor has stopped.
    pub fn note_vm_exits(&self, report: &crate::vmm::exits::ExitReport) {
        self.with(|r| r.vm_exits = Some(VmExits::from(report)));
    }

    /// Take one memory/vCPU sample now (call before the monitor process exits).
    pub fn sample_now(&self) {
        self.with(|r| {
            let pids = r.watched.lock().map(|w| w.clone()).unwrap_or_default();
            sample_once(std::process::id() as i32, &pids, r.guest_kib, &r.samples);
        });
    }

    /// Close the ledger: the current phase ends now. None when the recorder is off.
    pub fn finish(self) -> Option<Ledger> {
        let recorder = self
            .recorder?
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        Some(finish(recorder))
    }
}

fn start(isolation: &str, first: Phase) -> Recorder {
    let now = Instant::now();
    let watched = Arc::new(Mutex::new(Vec::new()));
    let guest_kib_shared = Arc::new(Mutex::new(0u64));
    let samples = Arc::new(Mutex::new(Samples::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let own = std::process::id() as i32;
    let sampler = {
        let (watched, guest_kib, samples, stop) = (
            Arc::clone(&watched),
            Arc::clone(&guest_kib_shared),
            Arc::clone(&samples),
            Arc::clone(&stop),
        );
        std::thread::Builder::new()
            .name("husk-cost".into())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let pids = watched.lock().map(|w| w.clone()).unwrap_or_default();
                    let guest = *guest_kib.lock().unwrap_or_else(|e| e.into_inner());
                    sample_once(own, &pids, guest, &samples);
                    std::thread::sleep(SAMPLE_EVERY);
                }
            })
            .ok()
    };
    Recorder {
        origin: now,
        current: Some((first, now)),
        phases: Vec::new(),
        isolation: isolation.to_string(),
        vmm: None,
        guest_kib: 0,
        vm_exits: None,
        watched,
        guest_kib_shared,
        samples,
        stop,
        sampler,
    }
}

fn begin(r: &mut Recorder, phase: Phase) {
    let now = Instant::now();
    if let Some((previous, since)) = r.current.replace((phase, now)) {
        r.phases.push(PhaseTime {
            phase: previous,
            ms: now.duration_since(since).as_secs_f64() * 1e3,
        });
    }
}

fn split_current(r: &mut Recorder, next: Phase, tail: Duration) {
    let now = Instant::now();
    if let Some((previous, since)) = r.current.take() {
        let boundary = now
            .checked_sub(tail)
            .filter(|b| *b >= since)
            .unwrap_or(since);
        r.phases.push(PhaseTime {
            phase: previous,
            ms: boundary.duration_since(since).as_secs_f64() * 1e3,
        });
        r.current = Some((next, boundary));
    }
}

fn finish(mut recorder: Recorder) -> Ledger {
    let end = Instant::now();
    if let Some((phase, since)) = recorder.current.take() {
        recorder.phases.push(PhaseTime {
            phase,
            ms: end.duration_since(since).as_secs_f64() * 1e3,
        });
    }
    let total_ms = end.duration_since(recorder.origin).as_secs_f64() * 1e3;
    recorder.stop.store(true, Ordering::SeqCst);
    if let Some(handle) = recorder.sampler.take() {
        let _ = handle.join();
    }
    let samples = recorder.samples.lock().unwrap_or_else(|e| e.into_inner());
    let own = std::process::id() as i32;
    let mut rss = 0;
    let mut pss = 0;
    let mut guest_rss = 0;
    for (pid, peak) in &samples.peak {
        rss += peak.rss_kib;
        pss += peak.pss_kib;
        guest_rss += peak.guest_rss_kib;
        if *pid == own {
            // The kernel's own high-water mark catches peaks between samples.
            let hwm = own_hwm_kib().saturating_sub(peak.guest_rss_kib);
            rss += hwm.saturating_sub(peak.rss_kib);
        }
    }
    let self_ms = rusage_ms(libc::RUSAGE_SELF);
    let children_ms = rusage_ms(libc::RUSAGE_CHILDREN);
    let vcpu_ms = samples.vcpu_ticks as f64 * 1e3 / clock_ticks_per_second();
    let (machinery_cpu_ms, workload_cpu_ms) = if recorder.vmm.is_some() {
        // Reaped children are the VMM and the disk tools; its vCPU threads ran the guest.
        let machinery = self_ms + children_ms - vcpu_ms;
        (machinery.max(0.0), vcpu_ms)
    } else {
        // The container's init is husk's child: its CPU is the workload's.
        (self_ms, children_ms)
    };
    Ledger {
        isolation: recorder.isolation.clone(),
        vmm: recorder.vmm.clone(),
        phases: std::mem::take(&mut recorder.phases),
        total_ms,
        machinery_cpu_ms,
        workload_cpu_ms,
        machinery_peak_rss_kib: rss,
        machinery_peak_pss_kib: pss,
        guest_memory_kib: recorder.guest_kib,
        guest_resident_kib: guest_rss,
        vm_exits: recorder.vm_exits.take(),
    }
}

fn own_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_contiguous_and_add_up_to_the_total() {
        let cost = CostRecorder::start("process", Phase::Prepare);
        std::thread::sleep(Duration::from_millis(15));
        cost.begin(Phase::Setup);
        std::thread::sleep(Duration::from_millis(10));
        cost.begin(Phase::ProcessRun);
        let _: Vec<u8> = vec![1; 4 << 20];
        std::thread::sleep(Duration::from_millis(20));
        cost.begin(Phase::Teardown);
        let ledger = cost.finish().expect("started");
        let names: Vec<Phase> = ledger.phases.iter().map(|p| p.phase).collect();
        assert_eq!(
            names,
            [
                Phase::Prepare,
                Phase::Setup,
                Phase::ProcessRun,
                Phase::Teardown
            ]
        );
        assert!(ledger.phase_ms(Phase::Prepare).unwrap() >= 15.0);
        assert!(ledger.phase_ms(Phase::ProcessRun).unwrap() >= 20.0);
        assert!((ledger.phases_sum_ms() - ledger.total_ms).abs() < 0.5);
        assert!(ledger.machinery_peak_rss_kib > 0 && ledger.machinery_peak_pss_kib > 0);
        let off = CostRecorder::off();
        off.begin(Phase::Setup); // a recorder that is off records nothing
        assert!(off.finish().is_none());
    }

    #[test]
    fn guest_ram_is_told_apart_in_smaps() {
        let smaps = "\
55d0-55e0 r-xp 00000000 08:01 123 /usr/bin/qemu-system-x86_64
Size:               1024 kB
Rss:                 800 kB
Pss:                 400 kB
7f00-8f00 rw-p 00000000 00:00 0
Size:             262144 kB
Rss:               65536 kB
Pss:               65536 kB
7f10-7f20 rw-p 00000000 00:00 0 [heap]
Size:               2048 kB
Rss:                1000 kB
Pss:                1000 kB
";
        let vm = parse_smaps(smaps, 262144);
        assert_eq!(vm.rss_kib, 1800);
        assert_eq!(vm.pss_kib, 1400);
        assert_eq!(vm.guest_rss_kib, 65536);
        let process = parse_smaps(smaps, 0);
        assert_eq!(process.rss_kib, 1800 + 65536);
        assert_eq!(process.guest_rss_kib, 0);
    }

    #[test]
    fn stat_cpu_ticks_survive_spaces_in_comm() {
        let stat = "42 (CPU 0/TCG) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(300));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }
}
