//! `husk exec`: run another command in a running container.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Args;
use husk::container::teardown::cgroup_name;
use husk::container::{Containers, Isolation, ProcessIdentity, Status};
use husk::process::exec::{exec, ExecConfig};
use oci_spec::runtime::Process;

use super::run::load_spec;

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

/// The exec'd process: the container's process settings (capabilities, rlimits, security)
/// with the command, environment, directory, user and terminal of this exec.
fn exec_process(base: &Process, args: &ExecArgs) -> Result<Process> {
    let mut process = base.clone();
    process.set_args(Some(args.command.clone()));
    let mut env = base.env().clone().unwrap_or_default();
    for entry in &args.env {
        let entry = match entry.split_once('=') {
            Some(_) => entry.clone(),
            None => match std::env::var(entry) {
                Ok(value) => format!("{entry}={value}"),
                Err(_) => continue,
            },
        };
        let key = entry.split('=').next().unwrap_or_default().to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(entry);
    }
    process.set_env(Some(env));
    if let Some(dir) = &args.workdir {
        if !dir.starts_with('/') {
            bail!("the working directory '{dir}' is invalid, it needs to be an absolute path");
        }
        process.set_cwd(dir.into());
    }
    if let Some(user) = &args.user {
        let mut spec_user = process.user().clone();
        spec_user.set_username(Some(user.clone()));
        process.set_user(spec_user);
    }
    process.set_terminal(Some(args.tty));
    Ok(process)
}

pub fn exec_cmd(root: &Path, args: ExecArgs) -> Result<i32> {
    let store = Containers::open(root)?;
    let record = store.find(&args.container)?;
    if record.effective_status() != Status::Running {
        bail!("container {} is not running", record.short_id());
    }
    if record.isolation == Isolation::Vm {
        return exec_in_vm(root, &store, &record, &args);
    }
    let pid = record
        .state
        .pid
        .with_context(|| format!("container {} has no recorded process", record.short_id()))?;
    // Records from before husk kept the start time: the best that can be done is now's.
    let init = match record.state.init {
        Some(init) if init.pid == pid => init,
        _ => ProcessIdentity::of(pid)
            .with_context(|| format!("container {} is not running", record.short_id()))?,
    };
    let spec = load_spec(&store, &record.id)?;
    let base = spec
        .process()
        .clone()
        .context("the container's spec has no process")?;
    let mut process = exec_process(&base, &args)?;
    // A detached command has nobody reading a terminal.
    let terminal = args.tty && !args.detach;
    process.set_terminal(Some(terminal));
    let cgroup = cgroup_name(&record.id);

    let dev_null = File::options().read(true).write(true).open("/dev/null")?;
    let (stdin, stdout, stderr): (OwnedFd, OwnedFd, OwnedFd) = match terminal {
        // The command opens a terminal of the container's own devpts.
        true => (
            dev_null.try_clone()?.into(),
            dev_null.try_clone()?.into(),
            dev_null.try_clone()?.into(),
        ),
        false if args.detach => (
            dev_null.try_clone()?.into(),
            dev_null.try_clone()?.into(),
            dev_null.try_clone()?.into(),
        ),
        false => (
            if args.interactive {
                std::io::stdin().as_fd().try_clone_to_owned()?
            } else {
                dev_null.try_clone()?.into()
            },
            std::io::stdout().as_fd().try_clone_to_owned()?,
            std::io::stderr().as_fd().try_clone_to_owned()?,
        ),
    };
    let started = exec(&ExecConfig {
        container_init: init,
        spec: &spec,
        process: &process,
        cgroup_name: &cgroup,
        stdio: [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()],
    });
    drop((stdin, stdout, stderr));
    let mut started = match started {
        Ok(started) => started,
        Err(err) => {
            eprintln!("husk: {err}");
            return Ok(err.exit_code());
        }
    };
    if args.detach {
        return Ok(0);
    }
    let Some(master) = started.pty_master() else {
        return Ok(started.wait()?);
    };
    // Bridge the terminal: raw mode on ours, copy both ways until the command exits.
    if let Some((rows, cols)) = husk::vm::backend::terminal_size() {
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads the winsize we own from a pty master we hold.
        unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&master),
                libc::TIOCSWINSZ,
                &size,
            )
        };
    }
    let _raw = husk::process::enter_raw_mode();
    let mut master_out = File::from(master.try_clone()?);
    let mut master_in = File::from(master);
    if args.interactive {
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut stdin = std::io::stdin();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 || master_in.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        });
    }
    let copier = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stdout = std::io::stdout();
        // EIO once the command's side of the terminal is closed.
        while let Ok(n) = master_out.read(&mut buf) {
            if n == 0 || stdout.write_all(&buf[..n]).is_err() {
                break;
            }
            let _ = stdout.flush();
        }
    });
    let code = started.wait()?;
    let _ = copier.join();
    Ok(code)
}

/// `exec` into a VM container: the supervisor holding the VM runs the command through the
/// guest agent and streams its output back over the control socket.
fn exec_in_vm(
    root: &Path,
    store: &Containers,
    record: &husk::container::Record,
    args: &ExecArgs,
) -> Result<i32> {
    use super::vm_container::ExecRequest;

    let spec = load_spec(store, &record.id)?;
    let base = spec
        .process()
        .clone()
        .context("the container's spec has no process")?;
    let process = exec_process(&base, args)?;
    let layers = super::run::layer_dirs(root, record)?;
    let request = ExecRequest {
        // The container's own confinement (capabilities, no_new_privs, seccomp, rlimits),
        // as `exec` gets it under process isolation and with Docker.
        process: husk::vm::backend::process_spec(
            &spec,
            &process,
            &layers,
            husk::vm::backend::terminal_size(),
        )?,
        interactive: args.interactive && !args.detach,
        kill_on_hangup: false,
    };
    if args.detach {
        super::vm_container::exec_via_supervisor(
            &record.id,
            &request,
            None,
            &mut std::io::sink(),
            &mut std::io::sink(),
            true,
        )?;
        return Ok(0);
    }
    let _raw = args.tty.then(husk::process::enter_raw_mode).flatten();
    let stdin = request
        .interactive
        .then(|| Box::new(std::io::stdin()) as Box<dyn Read + Send>);
    super::vm_container::exec_via_supervisor(
        &record.id,
        &request,
        stdin,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
        false,
    )
}
