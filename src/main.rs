//! husk's CLI entry point: parse, dispatch, and map errors to Docker's exit codes.

mod cli;
mod commands;
mod oci_cli;
mod service;

use clap::Parser;

/// Docker's exit code when the runtime itself failed (as opposed to the container's command).
const EXIT_RUNTIME_FAILED: i32 = 125;

fn main() {
    // Under a husk-runc name (a symlink to husk), the runc command line: podman's and
    // containerd's contract, apart from husk's Docker-shaped one.
    let invoked_as = std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    if invoked_as.starts_with("husk-runc") {
        let default = if invoked_as.ends_with("-vm") {
            husk::oci::Isolation::Vm
        } else {
            husk::oci::Isolation::Process
        };
        std::process::exit(oci_cli::main(default));
    }
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
