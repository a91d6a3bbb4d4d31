//! The cost ledger of `husk run --cost` (tier T2: real containers, both isolations; VM runs
//! use QEMU TCG where hardware KVM is missing).

mod common;
mod cost_support;

use std::time::Instant;

use cost_support::Husk;
use serde_json::Value;

fn inspect_cost(husk: &Husk, name: &str) -> Value {
    let out = husk.run(&["inspect", name]);
    assert!(out.status.success());
    let value: Value = serde_json::from_slice(&out.stdout).unwrap();
    value[0]["Cost"].clone()
}

fn phase_names(cost: &Value) -> Vec<String> {
    cost["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap().to_string())
        .collect()
}

/// Phases are contiguous, so they add up to the separately measured total; the total is the
/// husk run minus process start-up and exit, measured from outside. That remainder is allowed
/// 150 ms or a tenth of the run, whichever is more: under emulation (the nested tier) merely
/// starting the husk binary takes half a second.
fn assert_adds_up(cost: &Value, wall_ms: f64) {
    let sum: f64 = cost["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ms"].as_f64().unwrap())
        .sum();
    let total = cost["total_ms"].as_f64().unwrap();
    assert!(
        (sum - total).abs() < 1.0,
        "phases add up to {sum} ms, total {total} ms"
    );
    assert!(total <= wall_ms, "total {total} ms > wall {wall_ms} ms");
    assert!(
        wall_ms - total < f64::max(150.0, wall_ms / 10.0),
        "ledger misses {} ms of the run",
        wall_ms - total
    );
}

#[test]
fn process_ledger_phases_add_up_to_the_measured_total() {
    let husk = match Husk::new() {
        Ok(h) => h,
        Err(why) => skip!("{why}"),
    };
    let started = Instant::now();
    let out = husk.run(&[
        "run",
        "--cost",
        "--name",
        "costed",
        "--isolation",
        "process",
        "busybox",
        "sh",
        "-c",
        "dd if=/dev/zero of=/dev/null bs=1M count=8",
    ]);
    let wall_ms = started.elapsed().as_secs_f64() * 1e3;
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cost (process): total"),
        "no summary: {stderr}"
    );
    assert!(stderr.contains("namespace+cgroup setup"));
    let cost = inspect_cost(&husk, "costed");
    assert_eq!(cost["isolation"], "process");
    assert_eq!(
        phase_names(&cost),
        ["prepare", "setup", "process_run", "teardown"]
    );
    assert_adds_up(&cost, wall_ms);
    assert!(cost["machinery_peak_pss_kib"].as_u64().unwrap() > 1000);
    assert!(
        cost["machinery_peak_rss_kib"].as_u64().unwrap()
            >= cost["machinery_peak_pss_kib"].as_u64().unwrap()
    );
    assert!(cost["machinery_cpu_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(cost["guest_memory_kib"], 0);
    assert_eq!(cost["vmm"], Value::Null);
}

#[test]
fn run_without_cost_records_no_ledger() {
    let husk = match Husk::new() {
        Ok(h) => h,
        Err(why) => skip!("{why}"),
    };
    let out = husk.run(&[
        "run",
        "--name",
        "plain",
        "--isolation",
        "process",
        "busybox",
        "true",
    ]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("cost ("));
    assert_eq!(inspect_cost(&husk, "plain"), Value::Null);
}

#[test]
fn vm_ledger_has_boot_phases_and_guest_memory() {
    let husk = match Husk::new().and_then(Husk::with_vm) {
        Ok(h) => h,
        Err(why) => skip!("{why}"),
    };
    let started = Instant::now();
    let out = husk.run(&[
        "run",
        "--cost",
        "--name",
        "vmcost",
        "--isolation",
        "vm",
        "busybox",
        "sh",
        "-c",
        // 48 MiB of guest RAM touched (a tmpfs file, resident until the VM stops), so that
        // guest memory counted as machinery could not hide below the monitor's own few MiB.
        "head -c 50331648 /dev/zero > /dev/shm/fill && echo hi",
    ]);
    let wall_ms = started.elapsed().as_secs_f64() * 1e3;
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hi");
    let cost = inspect_cost(&husk, "vmcost");
    assert_eq!(cost["isolation"], "vm");
    assert_eq!(
        phase_names(&cost),
        [
            "prepare",
            "monitor_build",
            "boot",
            "agent_ready",
            "process_start",
            "process_run",
            "teardown"
        ]
    );
    assert_adds_up(&cost, wall_ms);
    assert_eq!(cost["guest_memory_kib"], 256 * 1024);
    let resident = cost["guest_resident_kib"].as_u64().unwrap();
    assert!(
        resident > 0 && resident <= 256 * 1024,
        "guest resident {resident} KiB"
    );
    // QEMU's own memory without guest RAM: well below the guest's size.
    let pss = cost["machinery_peak_pss_kib"].as_u64().unwrap();
    assert!(pss > 1000 && pss < 256 * 1024, "machinery pss {pss} KiB");
    // The guest's vCPU time is the workload's, whichever monitor ran it (husk's vCPU threads
    // live in husk itself).
    assert!(
        cost["workload_cpu_ms"].as_f64().unwrap() > 0.0,
        "no vCPU time"
    );
    // husk's monitor counts the run's VM exits: the agent's channel is virtio, so some of them
    // reached the monitor as virtio MMIO.
    if cost["vmm"] == "husk" {
        // husk's monitor maps guest RAM into husk itself: none of it may count as machinery.
        // The guest touches tens of MiB (kernel, initramfs, page cache) and the 48 MiB above;
        // husk's own memory (supervisor and monitor, a debug build in tests) is far less.
        assert!(
            pss < resident,
            "machinery pss {pss} KiB counts guest memory (guest resident {resident} KiB)"
        );
        let exits = &cost["vm_exits"];
        let virtio = exits["monitor"]["mmio virtio"].as_u64().unwrap_or(0);
        assert!(virtio > 0, "vm exits: {exits}");
        if let Some(total) = exits["total"].as_u64() {
            let to_monitor: u64 = exits["monitor"]
                .as_object()
                .unwrap()
                .values()
                .map(|n| n.as_u64().unwrap())
                .sum();
            assert!(total >= to_monitor, "vm exits: {exits}");
        }
    }
}

#[test]
fn detached_run_gets_a_ledger_from_its_monitor() {
    let husk = match Husk::new() {
        Ok(h) => h,
        Err(why) => skip!("{why}"),
    };
    let out = husk.run(&[
        "run",
        "-d",
        "--name",
        "detached",
        "--isolation",
        "process",
        "busybox",
        "sleep",
        "0.2",
    ]);
    assert!(out.status.success());
    assert!(husk.run(&["wait", "detached"]).status.success());
    // The monitor stores the ledger right after it records the exit.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let cost = loop {
        let cost = inspect_cost(&husk, "detached");
        if !cost.is_null() || Instant::now() > deadline {
            break cost;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(phase_names(&cost), ["setup", "process_run", "teardown"]);
    let run_ms = cost["phases"][1]["ms"].as_f64().unwrap();
    // The phase begins when husk learns the command was exec'd (its error pipe closes on the
    // execve), a fraction of a millisecond after `sleep` itself began.
    assert!(run_ms >= 190.0, "sleep 0.2 ran {run_ms} ms");
}
