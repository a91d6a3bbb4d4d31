//! One thin function per verb. Each returns the process exit code (Docker's conventions).

use anyhow::Result;

use crate::cli::{Cli, Command};

pub mod vm;

pub fn dispatch(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Info(args) => vm::info(args),
        Command::Vm(args) => vm::vm(args, cli.debug),
    }
}
