//! One thin function per verb. Each returns the process exit code (Docker's conventions).

use anyhow::Result;

use crate::cli::{Cli, Command, ContainerCommand};

pub mod ps;

pub fn dispatch(cli: Cli) -> Result<i32> {
    let root = cli.root.as_path();
    match cli.command {
        Command::Ps(args) | Command::Container(ContainerCommand::Ls(args)) => ps::ps(root, args),
        Command::Rm(args) | Command::Container(ContainerCommand::Rm(args)) => ps::rm(root, args),
        Command::Container(ContainerCommand::Prune(args)) => ps::prune(root, args),
    }
}
