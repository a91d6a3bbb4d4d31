//! The command line: Docker's verbs and flags, plus `--isolation`.
//!
//! Each area keeps its own `#[derive(Args)]` structs next to its command functions in
//! src/commands/; this file only gathers them into one `Command` enum.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::commands;

#[derive(Debug, Parser)]
#[command(
    name = "husk",
    version,
    about = "Containers with a choice of isolation: a namespaced process or a KVM microVM",
    propagate_version = true
)]
pub struct Cli {
    /// Directory holding images, containers and volumes.
    #[arg(
        long,
        global = true,
        env = "HUSK_ROOT",
        default_value = "/var/lib/husk"
    )]
    pub root: PathBuf,

    /// Show the guest's serial console on the terminal (`husk vm boot`).
    #[arg(long, global = true)]
    pub debug: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and run a new container from an image.
    Run(commands::run::RunArgs),
    /// Create a new container.
    Create(commands::run::CreateArgs),
    /// Start one or more stopped containers.
    Start(commands::run::StartArgs),
    /// List containers.
    Ps(commands::ps::PsArgs),
    /// Remove one or more containers.
    Rm(commands::rm::RmArgs),
    /// Execute a command in a running container.
    Exec(commands::exec::ExecArgs),
    /// Display the running processes of a container.
    Top(commands::observe::TopArgs),
    /// Display a live stream of container resource usage statistics.
    Stats(commands::observe::StatsArgs),
    /// Rename a container.
    Rename(commands::observe::RenameArgs),
    /// Manage husk: `system service` serves the Docker Engine API on a Unix socket.
    #[command(subcommand)]
    System(SystemCommand),
    /// Get real time events from the containers (create, start, die, destroy).
    Events(commands::events::EventsArgs),
    /// Copy files between a container and the host.
    Cp(commands::cp::CpArgs),
    /// Run a container under both isolations and compare what each costs.
    Compare(commands::compare::CompareArgs),
    /// Return low-level information on containers or images.
    Inspect(commands::inspect::InspectArgs),
    /// Fetch the logs of a container.
    Logs(commands::lifecycle::LogsArgs),
    /// Attach to a running container's output (and input, if started with -i).
    Attach(commands::lifecycle::AttachArgs),
    /// Stop one or more running containers (SIGTERM, then SIGKILL after the grace period).
    Stop(commands::lifecycle::StopArgs),
    /// Kill one or more running containers.
    Kill(commands::lifecycle::KillArgs),
    /// Restart one or more containers.
    Restart(commands::lifecycle::StopArgs),
    /// Pause all processes within one or more containers (a VM's whole guest).
    Pause(commands::lifecycle::PauseArgs),
    /// Unpause all processes within one or more containers.
    Unpause(commands::lifecycle::PauseArgs),
    /// Block until one or more containers stop, then print their exit codes.
    Wait(commands::lifecycle::WaitArgs),
    /// Manage containers.
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(commands::volume::VolumeCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(commands::network::NetworkCommand),
    /// List port mappings or a specific mapping for the container.
    Port(commands::network::PortArgs),
    #[command(flatten)]
    Images(crate::commands::image::ImageCommand),
    /// Supervise a detached container (started by husk itself, not by users).
    #[command(hide = true)]
    ContainerMonitor { id: String },
    /// lstat of a path in a container, for the Engine API's archive endpoints (run by the
    /// service as a child, like its execs): `MODE(hex) SIZE MTIME NAME` and the link target;
    /// exit 2 when the path is not there.
    #[command(hide = true)]
    ContainerStat { container: String, path: String },
    /// Show the host's virtualization support and whether VM isolation can run.
    Info(crate::commands::vm::InfoArgs),
    /// Run husk's microVM monitor directly (developer entry point).
    Vm(crate::commands::vm::VmArgs),
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Serve the Docker Engine API (the docker CLI, docker-compose, SDKs) on a Unix socket.
    Service(crate::service::ServiceArgs),
}

impl Command {
    /// Whether this process will supervise a container (and must survive a closed stdout to
    /// record the container's exit).
    pub fn supervises_a_container(&self) -> bool {
        matches!(
            self,
            Command::Run(_)
                | Command::Start(_)
                | Command::ContainerMonitor { .. }
                // Its clients hang up; the service does not die of SIGPIPE.
                | Command::System(SystemCommand::Service(_))
                | Command::Container(ContainerCommand::Run(_) | ContainerCommand::Start(_))
        )
    }
}

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// List port mappings or a specific mapping for the container.
    Port(commands::network::PortArgs),
    /// Create and run a new container from an image.
    Run(commands::run::RunArgs),
    /// Create a new container.
    Create(commands::run::CreateArgs),
    /// Start one or more stopped containers.
    Start(commands::run::StartArgs),
    /// Fetch the logs of a container.
    Logs(commands::lifecycle::LogsArgs),
    /// Attach to a running container's output (and input, if started with -i).
    Attach(commands::lifecycle::AttachArgs),
    /// Stop one or more running containers.
    Stop(commands::lifecycle::StopArgs),
    /// Kill one or more running containers.
    Kill(commands::lifecycle::KillArgs),
    /// Restart one or more containers.
    Restart(commands::lifecycle::StopArgs),
    /// Pause all processes within one or more containers (a VM's whole guest).
    Pause(commands::lifecycle::PauseArgs),
    /// Unpause all processes within one or more containers.
    Unpause(commands::lifecycle::PauseArgs),
    /// Block until one or more containers stop, then print their exit codes.
    Wait(commands::lifecycle::WaitArgs),
    /// List containers.
    #[command(alias = "list")]
    Ls(commands::ps::PsArgs),
    /// Remove one or more containers.
    Rm(commands::rm::RmArgs),
    /// Remove all stopped containers.
    Prune(commands::rm::PruneArgs),
    /// Display detailed information on one or more containers.
    Inspect(commands::inspect::InspectArgs),
    /// Execute a command in a running container.
    Exec(commands::exec::ExecArgs),
    /// Display the running processes of a container.
    Top(commands::observe::TopArgs),
    /// Display a live stream of container resource usage statistics.
    Stats(commands::observe::StatsArgs),
    /// Rename a container.
    Rename(commands::observe::RenameArgs),
    /// Copy files between a container and the host.
    Cp(commands::cp::CpArgs),
}
