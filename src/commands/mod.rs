//! One thin function per verb: parse, call one library function (src/runtime for containers),
//! print. Each returns the process exit code (Docker's conventions).

pub mod compare;
pub mod cp;
pub mod events;
pub mod exec;
pub mod image;
pub mod inspect;
pub mod lifecycle;
pub mod monitor;
pub mod network;
pub mod observe;
pub mod ps;
pub mod rm;
pub mod run;
pub mod vm;
pub mod volume;

use anyhow::Result;
use husk::runtime::{Runtime, RuntimeConfig};

use crate::cli::{Cli, Command, ContainerCommand};

/// What every `inspect` prints: each value through `--format`, else all of them as one JSON
/// array, as Docker does.
pub fn print_inspected(format: Option<&str>, values: &[serde_json::Value]) -> Result<()> {
    match format {
        Some(format) => {
            for value in values {
                println!("{}", image::render_template(format, value)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(values)?),
    }
    Ok(())
}

/// Run `action` on each named container, printing its name or Docker's error line; 1 when
/// any failed.
pub fn for_each<E: std::fmt::Display>(
    keys: &[String],
    mut action: impl FnMut(&str) -> Result<(), E>,
) -> i32 {
    let mut failed = false;
    for key in keys {
        match action(key) {
            Ok(()) => println!("{key}"),
            Err(err) => {
                eprintln!("Error response from daemon: {err:#}");
                failed = true;
            }
        }
    }
    i32::from(failed)
}

pub fn dispatch(cli: Cli) -> Result<i32> {
    let root = cli.root.as_path();
    // The configuration is read here, once, for the verbs that run containers.
    let runtime = || -> Result<Runtime> { Ok(Runtime::new(root, RuntimeConfig::from_env(root)?)) };
    match cli.command {
        Command::Ps(args) | Command::Container(ContainerCommand::Ls(args)) => ps::ps(root, args),
        Command::Rm(args) | Command::Container(ContainerCommand::Rm(args)) => {
            rm::rm(&runtime()?, args)
        }
        Command::Container(ContainerCommand::Prune(args)) => rm::prune(&runtime()?, args),
        Command::Run(args) | Command::Container(ContainerCommand::Run(args)) => {
            run::run(&runtime()?, args)
        }
        Command::Create(args) | Command::Container(ContainerCommand::Create(args)) => {
            run::create(&runtime()?, args)
        }
        Command::Start(args) | Command::Container(ContainerCommand::Start(args)) => {
            run::start(&runtime()?, args)
        }
        Command::Logs(args) | Command::Container(ContainerCommand::Logs(args)) => {
            lifecycle::logs(&runtime()?, args)
        }
        Command::Stop(args) | Command::Container(ContainerCommand::Stop(args)) => {
            lifecycle::stop(&runtime()?, args)
        }
        Command::Kill(args) | Command::Container(ContainerCommand::Kill(args)) => {
            lifecycle::kill(&runtime()?, args)
        }
        Command::Pause(args) | Command::Container(ContainerCommand::Pause(args)) => {
            lifecycle::pause(&runtime()?, args)
        }
        Command::Unpause(args) | Command::Container(ContainerCommand::Unpause(args)) => {
            lifecycle::unpause(&runtime()?, args)
        }
        Command::Wait(args) | Command::Container(ContainerCommand::Wait(args)) => {
            lifecycle::wait(&runtime()?, args)
        }
        Command::Inspect(args) => inspect::inspect(root, args, false),
        Command::Container(ContainerCommand::Inspect(args)) => inspect::inspect(root, args, true),
        Command::Exec(args) | Command::Container(ContainerCommand::Exec(args)) => {
            exec::exec(&runtime()?, args)
        }
        Command::Top(args) | Command::Container(ContainerCommand::Top(args)) => {
            observe::top(&runtime()?, args)
        }
        Command::Stats(args) | Command::Container(ContainerCommand::Stats(args)) => {
            observe::stats(root, args)
        }
        Command::Rename(args) | Command::Container(ContainerCommand::Rename(args)) => {
            observe::rename(root, args)
        }
        Command::Attach(args) | Command::Container(ContainerCommand::Attach(args)) => {
            lifecycle::attach(&runtime()?, args)
        }
        Command::Cp(args) | Command::Container(ContainerCommand::Cp(args)) => {
            cp::cp(&runtime()?, args)
        }
        Command::Restart(args) | Command::Container(ContainerCommand::Restart(args)) => {
            lifecycle::restart(&runtime()?, args)
        }
        Command::Events(args) => events::events(root, args),
        Command::System(crate::cli::SystemCommand::Service(args)) => {
            crate::service::serve(runtime()?, args)
        }
        Command::Volume(command) => volume::run(root, command),
        Command::Network(command) => network::run(root, command),
        Command::Port(args) | Command::Container(ContainerCommand::Port(args)) => {
            network::port(root, args)
        }
        Command::ContainerMonitor { id } => monitor::monitor(&runtime()?, &id),
        Command::ContainerStat { container, path } => {
            match husk::runtime::container::cp::stat(&runtime()?, &container, &path) {
                Ok(stat) => {
                    print!("{}", stat.encode());
                    Ok(0)
                }
                // The container's side could not stat it: Docker's 404.
                Err(husk::runtime::RuntimeError::Failed(why)) => {
                    eprintln!("{why}");
                    Ok(2)
                }
                Err(other) => Err(other.into()),
            }
        }
        Command::Images(command) => image::run(root, command),
        Command::Info(args) => vm::info(args),
        Command::Vm(args) => vm::vm(args, cli.debug),
        Command::Compare(args) => compare::compare(root, args),
    }
}
