//! husk's CLI entry point: parse, dispatch, and map errors to Docker's exit codes.

mod cli;
mod commands;

use clap::Parser;

/// Docker's exit code when the runtime itself failed (as opposed to the container's command).
const EXIT_RUNTIME_FAILED: i32 = 125;

fn main() {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() {
                EXIT_RUNTIME_FAILED
            } else {
                0
            };
            let _ = err.print();
            std::process::exit(code);
        }
    };
    if !cli.command.supervises_a_container() {
        // Listing commands die quietly when their reader goes away (`husk ps | head`), as
        // C programs do, instead of panicking on a failed print.
        // SAFETY: setting a signal disposition to SIG_DFL before any threads exist.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let code = match commands::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("husk: {err:#}");
            EXIT_RUNTIME_FAILED
        }
    };
    std::process::exit(code);
}
