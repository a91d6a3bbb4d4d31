//! `husk exec`: run another command in a running container.

use anyhow::Result;
use clap::Args;
use husk::runtime::container::exec::{self, ExecOptions};
use husk::runtime::Runtime;

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Detached mode: run command in the background.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep STDIN open even if not attached.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    pub tty: bool,
    /// Set environment variables.
    #[arg(short, long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(short, long)]
    pub user: Option<String>,
    pub container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub fn exec(runtime: &Runtime, args: ExecArgs) -> Result<i32> {
    let options = ExecOptions {
        command: args.command,
        env: args.env,
        workdir: args.workdir,
        user: args.user,
        tty: args.tty,
        interactive: args.interactive,
        detach: args.detach,
    };
    Ok(exec::exec(runtime, &args.container, &options)?)
}
