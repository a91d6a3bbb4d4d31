//! One thin function per verb. Each returns the process exit code (Docker's conventions).

pub mod image;

use anyhow::Result;

use crate::cli::{Cli, Command};

pub fn dispatch(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Images(command) => image::run(&cli.root, command),
    }
}
