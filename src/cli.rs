//! The command line: Docker's verbs and flags, plus `--isolation`.
//!
//! Each area keeps its own `#[derive(Args)]` structs next to its command functions in
//! src/commands/; this file only gathers them into one `Command` enum.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "husk",
    version,
    about = "Containers with a choice of isolation: a namespaced process or a KVM microVM",
    propagate_version = true
)]
pub struct Cli {
    /// Directory holding images, containers and volumes.
    #[arg(long, global = true, env = "HUSK_ROOT", default_value = "/var/lib/husk")]
    pub root: PathBuf,

    /// Print debug logging to stderr.
    #[arg(long, global = true)]
    pub debug: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {}
