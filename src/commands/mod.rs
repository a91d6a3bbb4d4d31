//! One thin function per verb. Each returns the process exit code (Docker's conventions).

pub mod image;

use anyhow::Result;

use crate::cli::{Cli, Command, ContainerCommand};

pub mod lifecycle;
pub mod ps;

pub fn dispatch(cli: Cli) -> Result<i32> {
    let root = cli.root.as_path();
    match cli.command {
        Command::Ps(args) | Command::Container(ContainerCommand::Ls(args)) => ps::ps(root, args),
        Command::Rm(args) | Command::Container(ContainerCommand::Rm(args)) => ps::rm(root, args),
        Command::Container(ContainerCommand::Prune(args)) => ps::prune(root, args),
        Command::Logs(args) => lifecycle::logs(root, args),
        Command::Stop(args) => lifecycle::stop(root, args),
        Command::Kill(args) => lifecycle::kill_cmd(root, args),
        Command::Wait(args) => lifecycle::wait(root, args),
        Command::Images(command) => image::run(root, command),
    }
}
