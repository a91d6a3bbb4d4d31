//! Renderings of a comparison: a terminal table, JSON (every field present), and a
//! self-contained HTML page with inline SVG bar charts for a teaching demo.

use super::compare::{Comparison, IsolationReport, Stats};
use super::Phase;

fn cell(stats: Option<Stats>, scale: f64, digits: usize) -> String {
    match stats {
        Some(s) => format!(
            "{:.d$} ({:.d$}-{:.d$})",
            s.median / scale,
            s.min / scale,
            s.max / scale,
            d = digits
        ),
        None => "-".to_string(),
    }
}

fn ratio_cell(ratio: Option<f64>) -> String {
    ratio.map_or("-".to_string(), |r| format!("{r:.2}x"))
}

fn phase_stats(report: &IsolationReport, phase: Phase) -> Option<Stats> {
    report
        .phases
        .iter()
        .find(|p| p.phase == phase)
        .and_then(|p| p.ms)
}

fn phases_in(c: &Comparison) -> Vec<Phase> {
    Phase::ALL
        .into_iter()
        .filter(|p| phase_stats(&c.process, *p).is_some() || phase_stats(&c.vm, *p).is_some())
        .collect()
}

fn header_lines(c: &Comparison) -> Vec<String> {
    let mut lines = vec![
        format!(
            "husk compare: {} `{}` on {}, {} run(s) per isolation, alternating",
            c.workload,
            c.command.join(" "),
            c.image,
            c.runs_per_isolation
        ),
        format!(
            "host: {} | {} CPUs | {} | husk {}",
            c.host.kernel, c.host.cpus, c.host.cpu_model, c.host.husk_version
        ),
    ];
    if let Some(reason) = &c.vm.unavailable_reason {
        lines.push(format!("VM isolation cannot run on this host: {reason}"));
    }
    for report in [&c.process, &c.vm] {
        for run in report.runs.iter().filter(|r| !r.ok) {
            lines.push(format!(
                "{} run {} FAILED (not in the figures): {}",
                report.isolation,
                run.index,
                run.error.as_deref().unwrap_or("unknown")
            ));
        }
    }
    lines
}

/// One row per measure: median (min-max) for each isolation, and vm/process.
fn rows(c: &Comparison) -> Vec<[String; 4]> {
    let mut rows = Vec::new();
    let ratio = |vm: Option<Stats>, p: Option<Stats>| match (vm, p) {
        (Some(v), Some(p)) if p.median > 0.0 => Some(v.median / p.median),
        _ => None,
    };
    for phase in phases_in(c) {
        let (p, v) = (phase_stats(&c.process, phase), phase_stats(&c.vm, phase));
        rows.push([
            format!("{} ms", phase.label()),
            cell(p, 1.0, 1),
            cell(v, 1.0, 1),
            ratio_cell(ratio(v, p)),
        ]);
    }
    rows.push([
        "TOTAL ms".into(),
        cell(c.process.total_ms, 1.0, 1),
        cell(c.vm.total_ms, 1.0, 1),
        ratio_cell(c.ratios.total),
    ]);
    if let Some(unit) = &c.process.throughput_unit {
        rows.push([
            format!("throughput {unit}"),
            cell(c.process.throughput, 1.0, 0),
            cell(c.vm.throughput, 1.0, 0),
            ratio_cell(c.ratios.throughput),
        ]);
    }
    let mib = 1024.0;
    rows.push([
        "machinery cpu ms".into(),
        cell(c.process.machinery_cpu_ms, 1.0, 1),
        cell(c.vm.machinery_cpu_ms, 1.0, 1),
        ratio_cell(c.ratios.machinery_cpu),
    ]);
    rows.push([
        "workload cpu ms (vm: guest vCPUs)".into(),
        cell(c.process.workload_cpu_ms, 1.0, 1),
        cell(c.vm.workload_cpu_ms, 1.0, 1),
        ratio_cell(ratio(c.vm.workload_cpu_ms, c.process.workload_cpu_ms)),
    ]);
    rows.push([
        "machinery peak PSS MiB".into(),
        cell(c.process.machinery_peak_pss_kib, mib, 1),
        cell(c.vm.machinery_peak_pss_kib, mib, 1),
        ratio_cell(c.ratios.machinery_peak_pss),
    ]);
    rows.push([
        "machinery peak RSS MiB".into(),
        cell(c.process.machinery_peak_rss_kib, mib, 1),
        cell(c.vm.machinery_peak_rss_kib, mib, 1),
        ratio_cell(ratio(
            c.vm.machinery_peak_rss_kib,
            c.process.machinery_peak_rss_kib,
        )),
    ]);
    rows.push([
        "guest RAM given/resident MiB".into(),
        "-".into(),
        match (c.vm.guest_memory_kib, c.vm.guest_resident_kib) {
            (Some(given), Some(resident)) => {
                format!("{:.0} / {:.1}", given.median / mib, resident.median / mib)
            }
            _ => "-".into(),
        },
        "-".into(),
    ]);
    // Host memory a container costs beyond its own processes: the machinery, plus for a VM
    // the guest RAM it touched (guest kernel, page cache, the workload's own memory).
    let host_memory = |r: &IsolationReport| match (r.machinery_peak_pss_kib, r.guest_resident_kib) {
        (Some(pss), Some(guest)) => format!("{:.1}", (pss.median + guest.median) / mib),
        _ => "-".into(),
    };
    rows.push([
        "host memory overhead MiB".into(),
        host_memory(&c.process),
        host_memory(&c.vm),
        ratio_cell(c.ratios.host_memory),
    ]);
    rows.push([
        "runs ok/failed".into(),
        format!("{}/{}", c.process.succeeded, c.process.failed),
        format!("{}/{}", c.vm.succeeded, c.vm.failed),
        "-".into(),
    ]);
    rows
}

pub fn table(c: &Comparison) -> String {
    let mut out = header_lines(c).join("\n");
    out.push('\n');
    let vm_title = match &c.vm.vmm {
        Some(vmm) => format!("vm ({vmm}) median (min-max)"),
        None => "vm median (min-max)".to_string(),
    };
    let mut all = vec![[
        "measure".to_string(),
        "process median (min-max)".to_string(),
        vm_title,
        "vm/process".to_string(),
    ]];
    all.extend(rows(c));
    let mut widths = [0usize; 4];
    for row in &all {
        for (w, text) in widths.iter_mut().zip(row) {
            *w = (*w).max(text.chars().count());
        }
    }
    for row in &all {
        out.push_str(&format!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}\n",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        ));
    }
    out
}

pub fn json(c: &Comparison) -> String {
    // Serializing plain data with derived impls does not fail.
    serde_json::to_string_pretty(c).unwrap_or_default()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart: one group per label, a process bar and a vm bar.
fn svg_chart(title: &str, unit: &str, groups: &[(String, Option<f64>, Option<f64>)]) -> String {
    let max = groups
        .iter()
        .flat_map(|(_, p, v)| [p.unwrap_or(0.0), v.unwrap_or(0.0)])
        .fold(0.0f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let (label_w, bar_w, row_h) = (190.0, 420.0, 18.0);
    let height = 30.0 + groups.len() as f64 * (2.0 * row_h + 10.0);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="720" height="{height}" role="img" aria-label="{t}"><text x="0" y="16" font-weight="bold">{t} ({u})</text>"#,
        t = escape(title),
        u = escape(unit)
    );
    let mut y = 28.0;
    for (label, p, v) in groups {
        svg.push_str(&format!(
            r#"<text x="0" y="{}" font-size="13">{}</text>"#,
            y + row_h + 4.0,
            escape(label)
        ));
        for (value, color, who) in [(p, "#3b7dd8", "process"), (v, "#d8703b", "vm")] {
            let width = value.map_or(0.0, |x| x / max * bar_w);
            let text = value.map_or("n/a".to_string(), |x| format!("{x:.1}"));
            svg.push_str(&format!(
                r#"<rect x="{label_w}" y="{y}" width="{width:.1}" height="{h}" fill="{color}"><title>{who}: {text}</title></rect><text x="{tx:.1}" y="{ty}" font-size="12">{who} {text}</text>"#,
                h = row_h - 2.0,
                tx = label_w + width + 4.0,
                ty = y + row_h - 5.0,
            ));
            y += row_h;
        }
        y += 10.0;
    }
    svg.push_str("</svg>");
    svg
}

/// One paragraph saying what the numbers mean, for the demo.
pub fn reading(c: &Comparison) -> String {
    let median = |s: Option<Stats>| s.map(|s| s.median);
    let Some(p_total) = median(c.process.total_ms) else {
        return "No process-isolation run succeeded, so there is nothing to compare; see the failed runs above.".into();
    };
    let mut text = format!(
        "Under process isolation the container took {p_total:.0} ms from `husk run` to exit (median of {} run(s)); the machinery around it (husk itself) used {:.0} ms of CPU and {:.1} MiB of memory. ",
        c.process.succeeded,
        median(c.process.machinery_cpu_ms).unwrap_or(0.0),
        median(c.process.machinery_peak_pss_kib).unwrap_or(0.0) / 1024.0
    );
    match (median(c.vm.total_ms), c.ratios.total) {
        (Some(v_total), Some(ratio)) => {
            let boot = phase_stats(&c.vm, Phase::Boot).map_or(0.0, |s| s.median)
                + phase_stats(&c.vm, Phase::AgentReady).map_or(0.0, |s| s.median);
            text.push_str(&format!(
                "Under VM isolation ({}) the same container took {v_total:.0} ms, {ratio:.1} times as long; {boot:.0} ms of it ({:.0}%) went to booting the guest kernel and waiting for the agent, a price process isolation never pays because it shares the host kernel. ",
                c.vm.vmm.as_deref().unwrap_or("vm"),
                boot / v_total * 100.0
            ));
            if let (Some(r), Some(unit)) = (c.ratios.throughput, &c.vm.throughput_unit) {
                text.push_str(&format!(
                    "Once running, the workload reached {r:.2} times the process-isolation throughput ({unit}); below 1 means the VM's emulated hardware, exits or memory virtualization slow it down. "
                ));
            }
            if let Some(mem) = c.ratios.host_memory {
                text.push_str(&format!(
                    "Host memory for the VM (monitor plus guest RAM actually touched) was {mem:.1} times what husk alone needed for the process container. "
                ));
            }
            if c.vm.vmm.as_deref() == Some("qemu") && !hardware_virtualization() {
                text.push_str("This host has no hardware virtualization, so QEMU emulates every guest instruction (TCG): the VM figures are far above what KVM would show. ");
            }
            text.push_str("The VM buys a separate kernel between the workload and the host; these numbers are what that boundary costs on this machine.");
        }
        _ => {
            text.push_str(&format!(
                "VM isolation produced no successful run here ({}), so only the process figures are shown.",
                c.vm.unavailable_reason
                    .as_deref()
                    .unwrap_or("every VM run failed")
            ));
        }
    }
    text
}

pub fn html(c: &Comparison) -> String {
    let median = |s: Option<Stats>| s.map(|s| s.median);
    let mut phase_groups: Vec<(String, Option<f64>, Option<f64>)> = phases_in(c)
        .into_iter()
        .map(|phase| {
            (
                phase.label().to_string(),
                median(phase_stats(&c.process, phase)),
                median(phase_stats(&c.vm, phase)),
            )
        })
        .collect();
    phase_groups.push((
        "TOTAL".into(),
        median(c.process.total_ms),
        median(c.vm.total_ms),
    ));
    let cost_groups = vec![
        (
            "machinery CPU (ms)".to_string(),
            median(c.process.machinery_cpu_ms),
            median(c.vm.machinery_cpu_ms),
        ),
        (
            "machinery PSS (MiB)".to_string(),
            median(c.process.machinery_peak_pss_kib).map(|k| k / 1024.0),
            median(c.vm.machinery_peak_pss_kib).map(|k| k / 1024.0),
        ),
        (
            "guest RAM resident (MiB)".to_string(),
            Some(0.0),
            median(c.vm.guest_resident_kib).map(|k| k / 1024.0),
        ),
    ];
    let mut charts = svg_chart("Time per phase, median", "ms", &phase_groups);
    charts.push_str(&svg_chart(
        "Cost of the isolation machinery",
        "median",
        &cost_groups,
    ));
    if let Some(unit) = &c.process.throughput_unit {
        charts.push_str(&svg_chart(
            "Workload throughput, median",
            unit,
            &[(
                c.workload.to_string(),
                median(c.process.throughput),
                median(c.vm.throughput),
            )],
        ));
    }
    let vm_title = match &c.vm.vmm {
        Some(vmm) => format!("vm ({vmm})"),
        None => "vm".to_string(),
    };
    let mut table_rows = format!(
        "<tr><th>measure</th><th>process</th><th>{}</th><th>vm/process</th></tr>\n",
        escape(&vm_title)
    );
    for row in rows(c) {
        table_rows.push_str("<tr>");
        for (i, text) in row.iter().enumerate() {
            let tag = if i == 0 { "th" } else { "td" };
            table_rows.push_str(&format!("<{tag}>{}</{tag}>", escape(text)));
        }
        table_rows.push_str("</tr>\n");
    }
    let notes: String = header_lines(c)
        .iter()
        .skip(2)
        .map(|l| format!("<p class=\"warn\">{}</p>\n", escape(l)))
        .collect();
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>husk compare: {workload}</title>
<style>
body {{ font-family: sans-serif; max-width: 760px; margin: 24px auto; color: #222; }}
table {{ border-collapse: collapse; margin: 12px 0; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ text-align: left; }}
.warn {{ color: #a33; }}
.key span {{ display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; }}
</style></head><body>
<h1>What isolation costs: process vs VM</h1>
<p>{workload} workload ({description}): <code>{command}</code> in <code>{image}</code>, {runs} run(s) per isolation, alternating.<br>
Host: {kernel}, {cpus} CPUs, {cpu_model}; husk {version}.</p>
{notes}<p class="key"><span style="background:#3b7dd8"></span>process <span style="background:#d8703b"></span>vm{vmm}</p>
{charts}
<h2>Reading the numbers</h2>
<p id="reading">{reading}</p>
<h2>All figures: median (min-max)</h2>
<table>{table_rows}</table>
</body></html>
"#,
        workload = c.workload,
        description = escape(&c.workload_description),
        command = escape(&c.command.join(" ")),
        image = escape(&c.image),
        runs = c.runs_per_isolation,
        kernel = escape(&c.host.kernel),
        cpus = c.host.cpus,
        cpu_model = escape(&c.host.cpu_model),
        version = escape(&c.host.husk_version),
        vmm =
            c.vm.vmm
                .as_deref()
                .map(|v| format!(" ({})", escape(v)))
                .unwrap_or_default(),
        reading = escape(&reading(c)),
    )
}

/// Whether the CPU offers VMX/SVM (without it, QEMU falls back to TCG emulation).
fn hardware_virtualization() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.split_whitespace().any(|f| f == "vmx" || f == "svm"))
        .unwrap_or(false)
}
