//! One thin function per verb. Each returns the process exit code (Docker's conventions).

pub mod cp;
pub mod exec;
pub mod image;

use anyhow::Result;

use crate::cli::{Cli, Command, ContainerCommand};

pub mod compare;
pub mod inspect;
pub mod lifecycle;
pub mod monitor;
pub mod observe;
pub mod ps;
pub mod rm;
pub mod run;
pub mod vm_container;
pub mod volume;

pub mod vm;

pub fn dispatch(cli: Cli) -> Result<i32> {
    let root = cli.root.as_path();
    match cli.command {
        Command::Ps(args) | Command::Container(ContainerCommand::Ls(args)) => ps::ps(root, args),
        Command::Rm(args) | Command::Container(ContainerCommand::Rm(args)) => rm::rm(root, args),
        Command::Container(ContainerCommand::Prune(args)) => rm::prune(root, args),
        Command::Run(args) | Command::Container(ContainerCommand::Run(args)) => {
            run::run(root, args)
        }
        Command::Create(args) | Command::Container(ContainerCommand::Create(args)) => {
            run::create(root, args)
        }
        Command::Start(args) | Command::Container(ContainerCommand::Start(args)) => {
            run::start(root, args)
        }
        Command::Logs(args) | Command::Container(ContainerCommand::Logs(args)) => {
            lifecycle::logs(root, args)
        }
        Command::Stop(args) | Command::Container(ContainerCommand::Stop(args)) => {
            lifecycle::stop(root, args)
        }
        Command::Kill(args) | Command::Container(ContainerCommand::Kill(args)) => {
            lifecycle::kill_cmd(root, args)
        }
        Command::Wait(args) | Command::Container(ContainerCommand::Wait(args)) => {
            lifecycle::wait(root, args)
        }
        Command::Inspect(args) => inspect::inspect(root, args, false),
        Command::Container(ContainerCommand::Inspect(args)) => inspect::inspect(root, args, true),
        Command::Exec(args) | Command::Container(ContainerCommand::Exec(args)) => {
            exec::exec_cmd(root, args)
        }
        Command::Top(args) | Command::Container(ContainerCommand::Top(args)) => {
            observe::top(root, args)
        }
        Command::Stats(args) | Command::Container(ContainerCommand::Stats(args)) => {
            observe::stats(root, args)
        }
        Command::Rename(args) | Command::Container(ContainerCommand::Rename(args)) => {
            observe::rename(root, args)
        }
        Command::Attach(args) | Command::Container(ContainerCommand::Attach(args)) => {
            lifecycle::attach(root, args)
        }
        Command::Cp(args) | Command::Container(ContainerCommand::Cp(args)) => cp::cp(root, args),
        Command::Restart(args) | Command::Container(ContainerCommand::Restart(args)) => {
            lifecycle::restart(root, args)
        }
        Command::Volume(command) => volume::run(root, command),
        Command::ContainerMonitor { id } => monitor::monitor(root, &id),
        Command::Images(command) => image::run(root, command),
        Command::Info(args) => vm::info(args),
        Command::Vm(args) => vm::vm(args, cli.debug),
        Command::Compare(args) => compare::compare(root, args),
    }
}
