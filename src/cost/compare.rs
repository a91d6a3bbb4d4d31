//! `husk compare`: the same container under both isolations, alternating process and vm runs
//! so drift on the host (caches, frequency, other load) hits both alike. Each run is a separate
//! `husk run --rm` so its CPU and memory figures are its own; it hands its ledger back through
//! a file. Failed runs are kept and reported, never averaged.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::workload::Workload;
use super::{CostError, Ledger, Phase};

pub struct CompareOptions {
    /// The husk binary that runs each container.
    pub husk: PathBuf,
    pub root: PathBuf,
    pub image: String,
    pub workload: Workload,
    pub command: Vec<String>,
    pub runs: u32,
    /// How the VM runs are made (from the runtime's configuration).
    pub vm: crate::vm::VmSettings,
}

/// One container run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub index: u32,
    pub ok: bool,
    pub exit_code: Option<i32>,
    /// Why the run failed (last line husk printed); None when it succeeded.
    pub error: Option<String>,
    /// None when the run failed before husk could write it.
    pub ledger: Option<Ledger>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    /// None for no values; NaNs are not expected (all inputs are measured durations/sizes).
    pub fn of(values: &[f64]) -> Option<Stats> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        if n == 0 {
            return None;
        }
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Stats {
            median,
            min: sorted[0],
            max: sorted[n - 1],
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseStats {
    pub phase: Phase,
    pub label: String,
    pub ms: Option<Stats>,
}

/// Everything measured for one isolation. Every field is always present (null when unknown).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsolationReport {
    pub isolation: String,
    pub available: bool,
    /// One line: why this isolation could not run on this host.
    pub unavailable_reason: Option<String>,
    pub vmm: Option<String>,
    pub succeeded: u32,
    pub failed: u32,
    pub runs: Vec<RunResult>,
    pub phases: Vec<PhaseStats>,
    pub total_ms: Option<Stats>,
    pub throughput: Option<Stats>,
    pub throughput_unit: Option<String>,
    pub machinery_cpu_ms: Option<Stats>,
    pub workload_cpu_ms: Option<Stats>,
    pub machinery_peak_rss_kib: Option<Stats>,
    pub machinery_peak_pss_kib: Option<Stats>,
    pub guest_memory_kib: Option<Stats>,
    pub guest_resident_kib: Option<Stats>,
}

/// vm median / process median; null when either side has no successful run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ratios {
    pub total: Option<f64>,
    pub process_run: Option<f64>,
    pub throughput: Option<f64>,
    pub machinery_cpu: Option<f64>,
    pub machinery_peak_pss: Option<f64>,
    /// Host memory the VM costs beyond process isolation: machinery PSS plus resident guest
    /// RAM, over process isolation's machinery PSS.
    pub host_memory: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    pub kernel: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub husk_version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub image: String,
    pub workload: Workload,
    pub workload_description: String,
    pub command: Vec<String>,
    pub runs_per_isolation: u32,
    pub host: HostInfo,
    pub process: IsolationReport,
    pub vm: IsolationReport,
    pub ratios: Ratios,
}

/// Why VM isolation cannot run here, judged before trying (None: try it). QEMU is judged by
/// trying it: it falls back to TCG emulation where KVM is missing.
pub fn vm_precheck(settings: &crate::vm::VmSettings) -> Option<String> {
    if settings.hypervisor == crate::vm::Hypervisor::Qemu {
        return None;
    }
    crate::vmm::probe_host_for(settings.kernel.clone())
        .blocker()
        .map(|why| format!("{why} (HUSK_VMM=qemu runs the VM under QEMU instead)"))
}

fn last_line(text: &str) -> String {
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let line = line.strip_prefix("husk: ").unwrap_or(line);
    // Bounded: this ends up in a report.
    line.chars().take(300).collect()
}

fn run_once(
    opts: &CompareOptions,
    isolation: &str,
    command: &[String],
    index: u32,
    ledger_path: &Path,
) -> Result<RunResult, CostError> {
    let _ = std::fs::remove_file(ledger_path);
    let output = Command::new(&opts.husk)
        .arg("--root")
        .arg(&opts.root)
        .args(["run", "--rm", "--isolation", isolation, "--cost-file"])
        .arg(ledger_path)
        .arg(&opts.image)
        .args(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| CostError::Io {
            what: format!("running {}", opts.husk.display()),
            source,
        })?;
    let ledger = Ledger::read(ledger_path).ok();
    let _ = std::fs::remove_file(ledger_path);
    let exit_code = output.status.code();
    let ran = ledger
        .as_ref()
        .is_some_and(|l| l.phase_ms(Phase::ProcessRun).is_some());
    let ok = output.status.success() && ran;
    let error = (!ok).then(|| {
        let stderr = String::from_utf8_lossy(&output.stderr);
        match (last_line(&stderr), exit_code) {
            (line, _) if !line.is_empty() => line,
            (_, Some(code)) => format!("the container exited with code {code}"),
            (_, None) => "husk was killed by a signal".to_string(),
        }
    });
    Ok(RunResult {
        index,
        ok,
        exit_code,
        error,
        ledger,
    })
}

/// Build the per-isolation report from its runs: statistics over successful runs only.
pub fn summarize(
    isolation: &str,
    runs: Vec<RunResult>,
    unavailable_reason: Option<String>,
    workload: Workload,
) -> IsolationReport {
    let good: Vec<&Ledger> = runs
        .iter()
        .filter(|r| r.ok)
        .filter_map(|r| r.ledger.as_ref())
        .collect();
    let stat = |f: &dyn Fn(&Ledger) -> Option<f64>| {
        Stats::of(&good.iter().filter_map(|l| f(l)).collect::<Vec<_>>())
    };
    let phases = Phase::ALL
        .iter()
        .filter(|p| good.iter().any(|l| l.phase_ms(**p).is_some()))
        .map(|&phase| PhaseStats {
            phase,
            label: phase.label().to_string(),
            ms: stat(&|l| l.phase_ms(phase)),
        })
        .collect();
    let amount = workload.amount();
    let throughput = amount.and_then(|(work, _)| {
        stat(&|l| {
            l.phase_ms(Phase::ProcessRun)
                .filter(|ms| *ms > 0.0)
                .map(|ms| work / (ms / 1e3))
        })
    });
    let succeeded = good.len() as u32;
    IsolationReport {
        isolation: isolation.to_string(),
        available: unavailable_reason.is_none(),
        unavailable_reason,
        vmm: good.iter().find_map(|l| l.vmm.clone()),
        succeeded,
        failed: runs.len() as u32 - succeeded,
        phases,
        total_ms: stat(&|l| Some(l.total_ms)),
        throughput,
        throughput_unit: amount.map(|(_, unit)| unit.to_string()),
        machinery_cpu_ms: stat(&|l| Some(l.machinery_cpu_ms)),
        workload_cpu_ms: stat(&|l| Some(l.workload_cpu_ms)),
        machinery_peak_rss_kib: stat(&|l| Some(l.machinery_peak_rss_kib as f64)),
        machinery_peak_pss_kib: stat(&|l| Some(l.machinery_peak_pss_kib as f64)),
        guest_memory_kib: stat(&|l| Some(l.guest_memory_kib as f64)),
        guest_resident_kib: stat(&|l| Some(l.guest_resident_kib as f64)),
        runs,
    }
}

fn ratio(vm: Option<Stats>, process: Option<Stats>) -> Option<f64> {
    let (vm, process) = (vm?, process?);
    (process.median > 0.0).then(|| vm.median / process.median)
}

pub fn ratios(process: &IsolationReport, vm: &IsolationReport) -> Ratios {
    let run_phase = |r: &IsolationReport| {
        r.phases
            .iter()
            .find(|p| p.phase == Phase::ProcessRun)
            .and_then(|p| p.ms)
    };
    let host_memory = match (
        vm.machinery_peak_pss_kib,
        vm.guest_resident_kib,
        process.machinery_peak_pss_kib,
    ) {
        (Some(vm_pss), Some(guest), Some(p)) if p.median > 0.0 => {
            Some((vm_pss.median + guest.median) / p.median)
        }
        _ => None,
    };
    Ratios {
        total: ratio(vm.total_ms, process.total_ms),
        process_run: ratio(run_phase(vm), run_phase(process)),
        throughput: ratio(vm.throughput, process.throughput),
        machinery_cpu: ratio(vm.machinery_cpu_ms, process.machinery_cpu_ms),
        machinery_peak_pss: ratio(vm.machinery_peak_pss_kib, process.machinery_peak_pss_kib),
        host_memory,
    }
}

pub fn host_info() -> HostInfo {
    let kernel = nix::sys::utsname::uname()
        .map(|u| {
            format!(
                "{} {} {}",
                u.sysname().to_string_lossy(),
                u.release().to_string_lossy(),
                u.machine().to_string_lossy()
            )
        })
        .unwrap_or_default();
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    HostInfo {
        kernel,
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu_model,
        husk_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// Run the comparison. `progress` hears one line per run.
pub fn compare(
    opts: &CompareOptions,
    mut progress: impl FnMut(&str),
) -> Result<Comparison, CostError> {
    if opts.runs == 0 {
        return Err(CostError::Invalid("--runs must be at least 1".into()));
    }
    if opts.workload == Workload::Cmd && opts.command.is_empty() {
        return Err(CostError::Invalid(
            "--workload cmd needs a command after IMAGE".into(),
        ));
    }
    if opts.workload != Workload::Cmd && !opts.command.is_empty() {
        return Err(CostError::Invalid(format!(
            "a command after IMAGE is only used with --workload cmd (the workload is {})",
            opts.workload
        )));
    }
    let command = opts.workload.command(&opts.command);
    let scratch = tempfile_dir()?;
    let ledger_path = scratch.join("ledger.json");
    let mut process_runs = Vec::new();
    let mut vm_runs = Vec::new();
    let mut vm_unavailable = vm_precheck(&opts.vm);
    for index in 1..=opts.runs {
        let run = run_once(opts, "process", &command, index, &ledger_path)?;
        progress(&progress_line("process", &run, opts.runs));
        process_runs.push(run);
        if vm_unavailable.is_some() {
            continue;
        }
        let run = run_once(opts, "vm", &command, index, &ledger_path)?;
        progress(&progress_line("vm", &run, opts.runs));
        // A first VM run that never booted means VM isolation does not work on this host.
        let never_booted = run
            .ledger
            .as_ref()
            .is_none_or(|l| l.phase_ms(Phase::ProcessStart).is_none());
        if index == 1 && !run.ok && never_booted {
            vm_unavailable = run.error.clone();
        } else {
            vm_runs.push(run);
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let process = summarize("process", process_runs, None, opts.workload);
    let vm = summarize("vm", vm_runs, vm_unavailable, opts.workload);
    Ok(Comparison {
        image: opts.image.clone(),
        workload: opts.workload,
        workload_description: opts.workload.describe().to_string(),
        command,
        runs_per_isolation: opts.runs,
        host: host_info(),
        ratios: ratios(&process, &vm),
        process,
        vm,
    })
}

fn progress_line(isolation: &str, run: &RunResult, runs: u32) -> String {
    match (&run.ledger, &run.error) {
        (Some(l), None) => format!("{isolation} run {}/{runs}: {:.1} ms", run.index, l.total_ms),
        (_, error) => format!(
            "{isolation} run {}/{runs}: FAILED ({})",
            run.index,
            error.as_deref().unwrap_or("no ledger")
        ),
    }
}

fn tempfile_dir() -> Result<PathBuf, CostError> {
    let mut bytes = [0u8; 6];
    getrandom::getrandom(&mut bytes).map_err(|e| CostError::Invalid(e.to_string()))?;
    let dir = std::env::temp_dir().join(format!("husk-compare-{}", hex::encode(bytes)));
    std::fs::create_dir_all(&dir).map_err(|source| CostError::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::PhaseTime;

    fn ledger(run_ms: f64, total_ms: f64) -> Ledger {
        Ledger {
            isolation: "process".into(),
            vmm: None,
            phases: vec![
                PhaseTime {
                    phase: Phase::Prepare,
                    ms: total_ms - run_ms,
                },
                PhaseTime {
                    phase: Phase::ProcessRun,
                    ms: run_ms,
                },
            ],
            total_ms,
            machinery_cpu_ms: 5.0,
            workload_cpu_ms: 1.0,
            machinery_peak_rss_kib: 4000,
            machinery_peak_pss_kib: 3000,
            guest_memory_kib: 0,
            guest_resident_kib: 0,
            vm_exits: None,
        }
    }

    #[test]
    fn failed_runs_are_counted_not_averaged() {
        let runs = vec![
            RunResult {
                index: 1,
                ok: true,
                exit_code: Some(0),
                error: None,
                ledger: Some(ledger(10.0, 20.0)),
            },
            RunResult {
                index: 2,
                ok: false,
                exit_code: Some(137),
                error: Some("killed".into()),
                ledger: Some(ledger(1000.0, 5000.0)),
            },
            RunResult {
                index: 3,
                ok: true,
                exit_code: Some(0),
                error: None,
                ledger: Some(ledger(30.0, 40.0)),
            },
        ];
        let report = summarize("process", runs, None, Workload::Spawn);
        assert_eq!((report.succeeded, report.failed), (2, 1));
        let total = report.total_ms.unwrap();
        assert_eq!((total.median, total.min, total.max), (30.0, 20.0, 40.0));
        // 200 spawns in 10 ms and in 30 ms.
        let throughput = report.throughput.unwrap();
        assert_eq!(throughput.max, 20_000.0);
        assert_eq!(report.runs.len(), 3, "failed runs stay in the report");
    }

    #[test]
    fn stats_take_the_middle() {
        assert_eq!(Stats::of(&[]), None);
        let s = Stats::of(&[3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 10.0));
    }
}
