//! `husk-runc`: the runc command line (runtime-tools docs/command-line-interface.md and the
//! flags podman and containerd's shim pass), reached when husk is invoked under a name that
//! starts with `husk-runc` (a symlink), so it never clashes with husk's Docker-shaped verbs.
//! A name ending in `-vm` (`husk-runc-vm`) makes VM isolation the default, for a RuntimeClass
//! that selects it with no pod annotation.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use husk::oci::{self, CreateOptions, ExecOptions, Isolation, OciRuntime, State};

#[derive(Parser, Debug)]
#[command(
    name = "husk-runc",
    version,
    about = "husk as an OCI runtime (the runc command line)"
)]
struct RuncCli {
    /// Where container state lives.
    #[arg(long, global = true, default_value = "/run/husk-runc")]
    root: PathBuf,
    /// Also write errors to this file (containerd reads the last line).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    #[arg(long = "log-format", global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Accepted for runc compatibility: errors are always printed.
    #[arg(long, global = true)]
    debug: bool,
    /// Refused: husk-runc manages cgroupfs paths only.
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    #[command(subcommand)]
    command: Verb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// What `create` and `run` share, as runc spells it.
#[derive(clap::Args, Debug)]
struct CreateArgs {
    #[arg(long, short = 'b', default_value = ".")]
    bundle: PathBuf,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Refused: husk always pivots into the container's root.
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Accepted: husk never creates a new session keyring.
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    id: String,
}

impl CreateArgs {
    /// Create the container these arguments name; returns its id.
    fn create(self, runtime: &OciRuntime) -> anyhow::Result<String> {
        if self.no_pivot {
            anyhow::bail!("--no-pivot is not supported: husk always uses pivot_root");
        }
        let opts = CreateOptions {
            pid_file: self.pid_file,
            console_socket: self.console_socket,
        };
        runtime.create(&self.id, &self.bundle, &opts)?;
        Ok(self.id)
    }
}

#[derive(Subcommand, Debug)]
enum Verb {
    /// Create a container from a bundle; its program waits for `start`.
    Create {
        #[command(flatten)]
        create: CreateArgs,
    },
    /// Create and start in one step, waiting for the program unless --detach.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        #[arg(long, short = 'd')]
        detach: bool,
    },
    /// Run the program of a created container.
    Start { id: String },
    /// Print the container's OCI state as JSON.
    State { id: String },
    /// Send a signal (default SIGTERM) to the container's init, or to all its processes.
    Kill {
        #[arg(long, short = 'a')]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Remove a stopped container (--force: kill it first).
    Delete {
        #[arg(long, short = 'f')]
        force: bool,
        id: String,
    },
    /// The containers of this root.
    #[command(alias = "ls")]
    List {
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// The processes of a container (--format json: their pids).
    Ps {
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
        id: String,
        /// Options for ps(1) in table format (default -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Run a process in a running container.
    Exec {
        /// A JSON file holding the OCI process to run.
        #[arg(long, short = 'p')]
        process: Option<PathBuf>,
        #[arg(long, short = 'd')]
        detach: bool,
        #[arg(long, short = 't')]
        tty: bool,
        #[arg(long = "console-socket")]
        console_socket: Option<PathBuf>,
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        #[arg(long)]
        cwd: Option<PathBuf>,
        #[arg(long, short = 'e')]
        env: Vec<String>,
        /// UID[:GID]
        #[arg(long, short = 'u')]
        user: Option<String>,
        #[arg(long = "additional-gids", short = 'g')]
        additional_gids: Vec<u32>,
        #[arg(long = "no-new-privs")]
        no_new_privs: bool,
        /// Capabilities to add to the process's (CAP_NET_ADMIN...).
        #[arg(long = "cap", short = 'c')]
        caps: Vec<String>,
        /// Refused unless empty: husk has no SELinux or AppArmor support.
        #[arg(long = "process-label")]
        process_label: Option<String>,
        #[arg(long)]
        apparmor: Option<String>,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Freeze every process of the container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Change a container's resource limits (an OCI LinuxResources JSON file, - for stdin).
    Update {
        #[arg(long, short = 'r')]
        resources: PathBuf,
        id: String,
    },
    /// What this runtime supports, as JSON (runtime-spec features.md).
    Features,
    /// Write a default config.json for a bundle.
    Spec {
        #[arg(long, short = 'b', default_value = ".")]
        bundle: PathBuf,
    },
    /// The process that holds a VM container's VM (started by `create`, never by hand).
    #[command(name = "__vm-hold", hide = true)]
    VmHold {
        #[arg(long)]
        rootfs: PathBuf,
        #[arg(long)]
        cgroup: String,
        #[arg(long = "console-socket")]
        console_socket: Option<PathBuf>,
        id: String,
    },
}

/// Entry point for the husk-runc name: returns the process exit code.
pub fn main(default_isolation: Isolation) -> i32 {
    let cli = match RuncCli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() { 1 } else { 0 };
            let _ = err.print();
            return code;
        }
    };
    let log = (cli.log.clone(), cli.log_format);
    match run(cli, default_isolation) {
        Ok(code) => code,
        Err(err) => {
            let message = format!("{err:#}");
            report(&log, &message);
            1
        }
    }
}

/// One error line on stderr, and in the log when one was given (JSON lines for containerd,
/// whose shim shows the last `msg`).
fn report((log, format): &(Option<PathBuf>, LogFormat), message: &str) {
    eprintln!("husk-runc: {message}");
    let Some(path) = log else { return };
    let line = match format {
        LogFormat::Json => serde_json::json!({
            "level": "error",
            "msg": message,
            "time": chrono::Utc::now().to_rfc3339(),
        })
        .to_string(),
        LogFormat::Text => format!("husk-runc: {message}"),
    };
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(file, "{line}");
    }
}

fn run(cli: RuncCli, default_isolation: Isolation) -> anyhow::Result<i32> {
    if cli.systemd_cgroup {
        anyhow::bail!(
            "--systemd-cgroup is not supported: husk-runc manages cgroupfs paths (use podman \
             --cgroup-manager cgroupfs, or containerd's SystemdCgroup = false)"
        );
    }
    let runtime = OciRuntime::new(cli.root.clone(), default_isolation);
    match cli.command {
        Verb::Create { create } => {
            create.create(&runtime)?;
        }
        Verb::Run { create, detach } => {
            let id = create.create(&runtime)?;
            let pid = runtime.state(&id)?.pid;
            if let Err(err) = runtime.start(&id) {
                let _ = runtime.delete(&id, true);
                return Err(err.into());
            }
            if detach {
                return Ok(0);
            }
            let code = oci::wait_for_exit(pid);
            runtime.delete(&id, true)?;
            return Ok(code);
        }
        Verb::Start { id } => runtime.start(&id)?,
        Verb::State { id } => print_json(&runtime.state(&id)?)?,
        Verb::Kill { all, id, signal } => {
            runtime.kill(&id, oci::parse_signal(&signal)?, all)?;
        }
        Verb::Delete { force, id } => runtime.delete(&id, force)?,
        Verb::List { format, quiet } => list(&runtime.list()?, &format, quiet)?,
        Verb::Ps {
            format,
            id,
            ps_args,
        } => ps(&runtime.pids(&id)?, &format, &ps_args)?,
        Verb::Exec {
            process,
            detach,
            tty,
            console_socket,
            pid_file,
            cwd,
            env,
            user,
            additional_gids,
            no_new_privs,
            caps,
            process_label,
            apparmor,
            id,
            command,
        } => {
            if process_label.is_some_and(|l| !l.is_empty())
                || apparmor.is_some_and(|a| !a.is_empty())
            {
                anyhow::bail!("--process-label and --apparmor are not supported by husk-runc");
            }
            let overrides = ExecOverrides {
                tty,
                cwd,
                env,
                user,
                additional_gids,
                no_new_privs,
                caps,
                command,
            };
            let process = exec_process(&runtime, &id, process, overrides)?;
            let opts = ExecOptions {
                pid_file,
                console_socket,
                detach,
            };
            return Ok(runtime.exec(&id, &process, &opts)?);
        }
        Verb::Pause { id } => runtime.pause(&id)?,
        Verb::Resume { id } => runtime.resume(&id)?,
        Verb::Update { resources, id } => {
            let text = if resources.as_os_str() == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
                text
            } else {
                std::fs::read_to_string(&resources)?
            };
            let resources: oci_spec::runtime::LinuxResources = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", resources.display()))?;
            runtime.update(&id, &resources)?;
        }
        Verb::Features => print_json(&features())?,
        Verb::Spec { bundle } => write_default_spec(&bundle)?,
        Verb::VmHold {
            rootfs,
            cgroup,
            console_socket,
            id,
        } => {
            return Ok(oci::vm::hold(&oci::vm::HoldArgs {
                root: cli.root,
                id,
                rootfs,
                cgroup,
                console_socket,
            }))
        }
    }
    Ok(0)
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn list(states: &[State], format: &str, quiet: bool) -> anyhow::Result<()> {
    if quiet {
        for state in states {
            println!("{}", state.id);
        }
        return Ok(());
    }
    match format {
        "json" => print_json(&states),
        "table" => {
            println!(
                "{:<20} {:<8} {:<10} {:<40} {:<32} OWNER",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED"
            );
            for s in states {
                println!(
                    "{:<20} {:<8} {:<10} {:<40} {:<32} {}",
                    s.id,
                    s.pid,
                    s.status,
                    s.bundle.display(),
                    s.created.to_rfc3339(),
                    s.owner
                );
            }
            Ok(())
        }
        other => anyhow::bail!("unknown format {other:?}: table or json"),
    }
}

/// runc's ps: json is the pid list; table is ps(1)'s output cut to the container's pids.
fn ps(pids: &[i32], format: &str, ps_args: &[String]) -> anyhow::Result<()> {
    match format {
        "json" => print_json(&pids),
        "table" => {
            let args: Vec<String> = if ps_args.is_empty() {
                vec!["-ef".into()]
            } else {
                ps_args.to_vec()
            };
            let output = std::process::Command::new("ps").args(&args).output()?;
            anyhow::ensure!(
                output.status.success(),
                "ps {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
            let text = String::from_utf8_lossy(&output.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or_default();
            let column = header
                .split_whitespace()
                .position(|c| c == "PID")
                .ok_or_else(|| anyhow::anyhow!("ps printed no PID column"))?;
            println!("{header}");
            for line in lines {
                let pid = line
                    .split_whitespace()
                    .nth(column)
                    .and_then(|p| p.parse().ok());
                if pid.is_some_and(|pid| pids.contains(&pid)) {
                    println!("{line}");
                }
            }
            Ok(())
        }
        other => anyhow::bail!("unknown format {other:?}: table or json"),
    }
}

/// exec's flags for a process built from the container's own (runc's behaviour without
/// --process).
struct ExecOverrides {
    tty: bool,
    cwd: Option<PathBuf>,
    env: Vec<String>,
    user: Option<String>,
    additional_gids: Vec<u32>,
    no_new_privs: bool,
    caps: Vec<String>,
    command: Vec<String>,
}

/// The process to exec: the --process file as it is, or the container's process with the
/// command and flags given.
fn exec_process(
    runtime: &OciRuntime,
    id: &str,
    file: Option<PathBuf>,
    overrides: ExecOverrides,
) -> anyhow::Result<oci_spec::runtime::Process> {
    if let Some(path) = file {
        if !overrides.command.is_empty() {
            anyhow::bail!("give either --process or a command, not both");
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        return serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()));
    }
    if overrides.command.is_empty() {
        anyhow::bail!("exec needs a command (or --process FILE)");
    }
    let mut process = runtime.container_process(id)?;
    process.set_args(Some(overrides.command));
    process.set_terminal(Some(overrides.tty));
    if overrides.tty {
        process.set_console_size(husk::process::console_size());
    }
    if let Some(cwd) = overrides.cwd {
        process.set_cwd(cwd);
    }
    let mut env = process.env().clone().unwrap_or_default();
    for pair in overrides.env {
        let key = pair.split('=').next().unwrap_or_default().to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(pair);
    }
    process.set_env(Some(env));
    if let Some(user) = overrides.user {
        let (uid, gid) = user.split_once(':').unwrap_or((user.as_str(), "0"));
        let mut spec_user = process.user().clone();
        spec_user.set_uid(
            uid.parse()
                .map_err(|_| anyhow::anyhow!("bad uid {uid:?}"))?,
        );
        spec_user.set_gid(
            gid.parse()
                .map_err(|_| anyhow::anyhow!("bad gid {gid:?}"))?,
        );
        spec_user.set_username(None);
        if !overrides.additional_gids.is_empty() {
            spec_user.set_additional_gids(Some(overrides.additional_gids));
        }
        process.set_user(spec_user);
    }
    if overrides.no_new_privs {
        process.set_no_new_privileges(Some(true));
    }
    if !overrides.caps.is_empty() {
        let mut caps = process.capabilities().clone().unwrap_or_default();
        for name in &overrides.caps {
            let cap: oci_spec::runtime::Capability = name
                .trim_start_matches("CAP_")
                .parse()
                .map_err(|_| anyhow::anyhow!("unknown capability {name:?}"))?;
            let add = |set: &Option<oci_spec::runtime::Capabilities>| {
                let mut set = set.clone().unwrap_or_default();
                set.insert(cap);
                Some(set)
            };
            caps.set_bounding(add(caps.bounding()));
            caps.set_effective(add(caps.effective()));
            caps.set_permitted(add(caps.permitted()));
        }
        process.set_capabilities(Some(caps));
    }
    Ok(process)
}

/// runtime-spec features.md: what podman and containerd may ask before using a runtime.
fn features() -> serde_json::Value {
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": oci::OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": [
            "ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "strictatime",
            "relatime", "noatime", "nodiratime", "sync", "bind", "rbind", "private", "rprivate",
            "shared", "rshared", "slave", "rslave"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "uts"],
            "cgroup": { "v1": true, "v2": true, "systemd": false, "systemdUser": false },
            "seccomp": { "enabled": true },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false }
        },
        "annotations": {
            oci::ANNOTATION_ISOLATION: "process | vm"
        }
    })
}

/// `runc spec`: a default config.json (oci-spec's, which is runc's) in the bundle dir.
fn write_default_spec(bundle: &std::path::Path) -> anyhow::Result<()> {
    let path = bundle.join("config.json");
    anyhow::ensure!(!path.exists(), "{} exists already", path.display());
    let spec = oci_spec::runtime::Spec::default();
    spec.save(&path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(())
}
