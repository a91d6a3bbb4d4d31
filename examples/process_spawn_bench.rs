//! Library-level benchmark of process isolation: spawn + wait of `true` from a rootfs layer,
//! without the CLI around it. Run as root:
//!
//! ```text
//! cargo run --release --example process_spawn_bench -- <rootfs-layer-dir> [runs]
//! ```
//!
//! The layer can be any unpacked image layer with /bin/true (e.g. a busybox rootfs). Each run
//! gets a fresh container dir and cgroup, like `husk run --rm` does.

use std::path::PathBuf;
use std::time::Instant;

use husk::container::spec::{build_spec, SpecOptions};
use husk::process::{spawn, LaunchConfig, Root};
use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};

fn percentile(sorted: &[f64], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let layer =
        PathBuf::from(args.next().ok_or_else(|| {
            anyhow::anyhow!("usage: process_spawn_bench <rootfs-layer-dir> [runs]")
        })?);
    let runs: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100)
        .max(1);
    let config = ConfigBuilder::default()
        .env(vec!["PATH=/usr/bin:/bin".to_string()])
        .cmd(vec!["true".to_string()])
        .build()?;
    let image = ImageConfigurationBuilder::default()
        .config(config)
        .build()?;
    let scratch = tempfile::tempdir()?;
    let lower = [layer];

    let (mut spawned, mut total) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let id = format!("bench{}x{run}", std::process::id());
        let start = Instant::now();
        let spec = build_spec(&image, &SpecOptions::default(), &id)?;
        let container_dir = scratch.path().join(&id);
        let cgroup = format!("husk/{id}");
        let cfg = LaunchConfig {
            spec: &spec,
            root: Root::Layers {
                lower_dirs: &lower,
                container_dir: &container_dir,
            },
            cgroup_name: &cgroup,
            stdio: None,
            network: None,
            netns: None,
            start_gate: None,
            hooks: None,
        };
        let container = spawn(&cfg)?;
        spawned.push(start.elapsed().as_secs_f64() * 1e3);
        let code = container.wait()?;
        total.push(start.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(code == 0, "run {run} exited with {code}");
        std::fs::remove_dir_all(&container_dir)?;
    }
    spawned.sort_by(f64::total_cmp);
    total.sort_by(f64::total_cmp);
    println!(
        "{runs} runs: spawn median {:.2} ms p90 {:.2} ms; spawn+wait median {:.2} ms p90 {:.2} ms min {:.2} ms",
        percentile(&spawned, 50),
        percentile(&spawned, 90),
        percentile(&total, 50),
        percentile(&total, 90),
        total[0],
    );
    Ok(())
}
