//! `husk compare`: run the same container under process and VM isolation and report the costs
//! side by side (see src/cost/compare.rs).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use husk::cost::compare::{compare as run_comparison, CompareOptions};
use husk::cost::report;
use husk::cost::workload::Workload;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Html,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Runs per isolation (process and vm runs alternate).
    #[arg(long, default_value_t = 5)]
    pub runs: u32,
    /// What the container does: a built-in workload, or `cmd` for the command after IMAGE
    /// (default: cmd when a command is given, else startup).
    #[arg(long, value_enum)]
    pub workload: Option<Workload>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Write the report to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Image to run (busybox-based for the built-in workloads).
    pub image: String,
    /// Command for `--workload cmd`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub fn compare(root: &Path, args: CompareArgs) -> Result<i32> {
    let husk = std::env::current_exe().context("locating the husk binary")?;
    let opts = CompareOptions {
        husk,
        root: root.to_path_buf(),
        image: args.image,
        workload: args.workload.unwrap_or(if args.command.is_empty() {
            Workload::Startup
        } else {
            Workload::Cmd
        }),
        command: args.command,
        runs: args.runs,
        vm: husk::vm::VmSettings::from_env()?,
    };
    let comparison = run_comparison(&opts, |line| eprintln!("{line}"))?;
    let text = match args.format {
        Format::Table => report::table(&comparison),
        Format::Json => report::json(&comparison) + "\n",
        Format::Html => report::html(&comparison),
    };
    match &args.output {
        Some(path) => {
            // Written whole to a temp file and renamed: no half-written report.
            let tmp = path.with_extension("husk-tmp");
            std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        }
        None => print!("{text}"),
    }
    // Failing when nothing could be measured at all lets scripts notice.
    Ok(if comparison.process.succeeded == 0 {
        1
    } else {
        0
    })
}
