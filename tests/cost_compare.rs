//! `husk compare` end to end (tier T2: real containers; VM runs use QEMU TCG where hardware
//! KVM is missing): JSON with every field, failed runs reported rather than averaged, VM
//! isolation that cannot run explained in one line, and the HTML report rendered by Chromium.

mod common;
mod cost_support;

use std::path::Path;
use std::process::Command;

use cost_support::Husk;
use serde_json::Value;

const ISOLATION_FIELDS: [&str; 18] = [
    "isolation",
    "available",
    "unavailable_reason",
    "vmm",
    "succeeded",
    "failed",
    "runs",
    "phases",
    "total_ms",
    "throughput",
    "throughput_unit",
    "machinery_cpu_ms",
    "workload_cpu_ms",
    "machinery_peak_rss_kib",
    "machinery_peak_pss_kib",
    "guest_memory_kib",
    "guest_resident_kib",
    "runs",
];

fn assert_fields(value: &Value, fields: &[&str], what: &str) {
    for field in fields {
        assert!(
            value.get(*field).is_some(),
            "{what} has no field {field}: {value}"
        );
    }
}

fn compare_json(husk: &Husk, args: &[&str]) -> (Option<i32>, Value) {
    let mut all = vec!["compare", "--format", "json"];
    all.extend_from_slice(args);
    let out = husk.run(&all);
    let value = serde_json::from_slice(&out.stdout).expect("compare prints JSON");
    (out.status.code(), value)
}

fn assert_complete(report: &Value) {
    assert_fields(
        report,
        &[
            "image",
            "workload",
            "workload_description",
            "command",
            "runs_per_isolation",
            "host",
            "process",
            "vm",
            "ratios",
        ],
        "report",
    );
    assert_fields(
        &report["host"],
        &["kernel", "cpus", "cpu_model", "husk_version"],
        "host",
    );
    assert_fields(
        &report["ratios"],
        &[
            "total",
            "process_run",
            "throughput",
            "machinery_cpu",
            "machinery_peak_pss",
            "host_memory",
        ],
        "ratios",
    );
    for side in ["process", "vm"] {
        assert_fields(&report[side], &ISOLATION_FIELDS, side);
        for run in report[side]["runs"].as_array().unwrap() {
            assert_fields(run, &["index", "ok", "exit_code", "error", "ledger"], "run");
        }
    }
}

#[test]
fn json_has_every_field_for_both_isolations() {
    let husk = match Husk::new().and_then(Husk::with_vm) {
        Ok(h) => h,
        Err(why) => skip!("{why}"),
    };
    let (code, report) = compare_json(&husk, &["--runs", "2", "--workload", "syscall", "busybox"]);
    assert_eq!(code, Some(0));
    assert_complete(&report);
    for side in ["process", "vm"] {
        let r = &report[side];
        assert_eq!(r["available"], true, "{side}: {r}");
        assert_eq!(r["succeeded"], 2, "{side}: {r}");
        assert_eq!(r["failed"], 0);
        let total = &r["total_ms"];
        assert!(total["min"].as_f64().unwrap() <= total["median"].as_f64().unwrap());
        assert!(total["median"].as_f64().unwrap() <= total["max"].as_f64().unwrap());
        assert!(r["throughput"]["median"].as_f64().unwrap() > 0.0);
        assert_eq!(r["throughput_unit"], "syscalls/s");
    }
    assert!(report["ratios"]["total"].as_f64().unwrap() > 0.0);
    assert!(report["ratios"]["host_memory"].as_f64().unwrap() > 0.0);
    let vm_phases: Vec<&str> = report["vm"]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert!(vm_phases.contains(&"boot"), "{vm_phases:?}");
}

#[test]
fn vm_that_cannot_run_is_explained_and_process_figures_still_shown() {
    let husk = match Husk::new() {
        Ok(h) => h,
        Err(why) => skip!("{why}"),
    };
    let mut husk = husk;
    husk.env = vec![
        ("HUSK_VMM".into(), "qemu".into()),
        ("HUSK_KERNEL".into(), "/nonexistent/vmlinux".into()),
    ];
    let (code, report) = compare_json(&husk, &["--runs", "2", "busybox"]);
    assert_eq!(code, Some(0));
    assert_complete(&report);
    assert_eq!(report["vm"]["available"], false);
    let reason = report["vm"]["unavailable_reason"].as_str().unwrap();
    assert!(!reason.is_empty() && !reason.contains('\n'), "{reason:?}");
    assert_eq!(report["process"]["succeeded"], 2);
    assert!(report["process"]["total_ms"]["median"].as_f64().unwrap() > 0.0);
    assert_eq!(report["ratios"]["total"], Value::Null);

    let out = husk.run(&["compare", "--runs", "1", "busybox"]);
    let table = String::from_utf8_lossy(&out.stdout);
    let line = table
        .lines()
        .find(|l| l.starts_with("VM isolation cannot run on this host: "))
        .expect("the table says why VM isolation is missing");
    assert!(line.len() > 40);
    assert!(table.contains("TOTAL ms"));
}

#[test]
fn failed_runs_are_reported_not_averaged() {
    let husk = match Husk::new() {
        Ok(h) => h,
        Err(why) => skip!("{why}"),
    };
    // Keep the VM out: this is about the process side's bookkeeping.
    let mut husk = husk;
    husk.env = vec![("HUSK_KERNEL".into(), "/nonexistent/vmlinux".into())];
    let (code, report) = compare_json(
        &husk,
        &[
            "--runs",
            "2",
            "--workload",
            "cmd",
            "busybox",
            "sh",
            "-c",
            "echo partial; exit 3",
        ],
    );
    assert_eq!(code, Some(1), "nothing measured is a failure");
    assert_complete(&report);
    let process = &report["process"];
    assert_eq!(process["succeeded"], 0);
    assert_eq!(process["failed"], 2);
    assert_eq!(
        process["total_ms"],
        Value::Null,
        "failed runs are not averaged"
    );
    for run in process["runs"].as_array().unwrap() {
        assert_eq!(run["ok"], false);
        assert_eq!(run["exit_code"], 3);
        assert!(run["error"].as_str().unwrap().contains('3'), "{run}");
    }
    let out = husk.run(&[
        "compare",
        "--runs",
        "1",
        "--workload",
        "cmd",
        "busybox",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("process run 1 FAILED"));
}

#[test]
fn bad_arguments_get_one_clear_error_and_no_file() {
    let husk = match Husk::new() {
        Ok(h) => h,
        Err(why) => skip!("{why}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.json");
    let out = husk.run(&[
        "compare",
        "--runs",
        "0",
        "-o",
        file.to_str().unwrap(),
        "busybox",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--runs must be at least 1"));
    assert!(!file.exists());
    let out = husk.run(&["compare", "--workload", "cmd", "busybox"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a command"));
}

fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

#[test]
fn html_report_renders_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        skip!("chromium is not installed (Debian: apt-get install chromium)");
    };
    let husk = match Husk::new() {
        Ok(h) => h,
        Err(why) => skip!("{why}"),
    };
    // With the VM when it can run here, so the charts have both sides.
    let husk = husk.with_vm().unwrap_or_else(|why| {
        eprintln!("VM side left empty: {why}");
        Husk::new().unwrap()
    });
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    let out = husk.run(&[
        "compare",
        "--runs",
        "1",
        "--workload",
        "spawn",
        "--format",
        "html",
        "-o",
        html.to_str().unwrap(),
        "busybox",
    ]);
    assert!(out.status.success());
    let text = std::fs::read_to_string(&html).unwrap();
    assert!(text.contains("<svg") && text.contains("id=\"reading\""));
    assert!(text.matches("<rect").count() >= 6, "bar charts have bars");

    // Kept in target/ so a person can look at it after the test.
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cost-compare-report.png");
    let _ = std::fs::remove_file(&shot);
    let status = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=800,1400",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", html.display()))
        // Chromium logs D-Bus complaints on a headless server; they are noise here.
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let png = std::fs::read(&shot).expect("chromium wrote a screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        png.len() > 20_000,
        "a screenshot of a blank page is tiny: {} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
}

#[test]
fn vm_runs_killed_mid_way_are_reported_not_averaged() {
    let husk = match Husk::new().and_then(Husk::with_vm) {
        Ok(h) => h,
        Err(why) => skip!("{why}"),
    };
    let (code, report) = compare_json(
        &husk,
        &[
            "--runs",
            "1",
            "busybox",
            "sh",
            "-c",
            "echo started; sh -c 'kill -9 $$'; exit $?",
        ],
    );
    assert_eq!(code, Some(1));
    assert_complete(&report);
    for side in ["process", "vm"] {
        let r = &report[side];
        assert_eq!(
            r["available"], true,
            "a run that booted is a failure, not absence"
        );
        assert_eq!(
            (r["succeeded"].as_u64(), r["failed"].as_u64()),
            (Some(0), Some(1))
        );
        assert_eq!(r["total_ms"], Value::Null);
        let run = &r["runs"][0];
        assert_eq!(run["exit_code"], 137, "{side}: {run}");
        // The ledger of the failed run is kept for inspection, with the phases it crossed.
        assert!(run["ledger"]["phases"].as_array().unwrap().len() >= 3);
    }
}
