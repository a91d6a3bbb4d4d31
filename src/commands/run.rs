//! `husk run`, `husk create` and `husk start`: from an image and flags to a container record,
//! an OCI runtime spec (the container's config.json) and a sandbox of the chosen isolation.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use husk::container::logs::{LogWriter, Stream, Tee};
use husk::container::spec::{
    build_spec, DeviceMapping, MountKind, NetworkMode, SpecOptions, UserMount,
};
use husk::container::teardown::{cgroup_name, release_leftovers};
use husk::container::volume::Volumes;
use husk::container::{
    Containers, Isolation, NewContainer, ProcessIdentity, Record, RestartPolicy, Status,
};
use husk::image::{self, ImageError, PullOptions};
use husk::process::{self, LaunchConfig};
use oci_spec::runtime::Spec;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};

/// The OCI runtime spec of a container, next to its record.
pub const SPEC_FILE: &str = "config.json";

/// Flags shared by `run` and `create` (Docker's names).
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Isolation: a namespaced process on the host kernel, or a KVM microVM. Default from
    /// HUSK_ISOLATION or <root>/config.json ("default_isolation"), else process.
    #[arg(long, value_enum)]
    pub isolation: Option<Isolation>,
    /// Assign a name to the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Keep STDIN open even if not attached.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    pub tty: bool,
    /// Set environment variables (K=V, or K to take it from husk's environment).
    #[arg(short, long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Read in a file of environment variables.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Container host name.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Mount the container's root filesystem as read only.
    #[arg(long)]
    pub read_only: bool,
    /// Memory limit (e.g. 512m, 1g): the cgroup limit, or guest RAM with --isolation vm.
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Number of CPUs (a CPU quota, or vCPUs with --isolation vm).
    #[arg(long)]
    pub cpus: Option<String>,
    /// Tune container pids limit (-1 for unlimited).
    #[arg(long, allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
    /// Network mode: none (loopback only, the default) or host.
    #[arg(long, visible_alias = "net", default_value = "none")]
    pub network: String,
    /// Add Linux capabilities.
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities.
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// Give extended privileges to this container.
    #[arg(long)]
    pub privileged: bool,
    /// Add a host device to the container: HOST[:CONTAINER[:PERMISSIONS]], permissions some
    /// of r, w, m (default rwm).
    #[arg(long = "device", value_name = "DEVICE")]
    pub devices: Vec<String>,
    /// Security options: seccomp=unconfined, no-new-privileges[:true|false].
    #[arg(long)]
    pub security_opt: Vec<String>,
    /// Automatically remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Restart policy for detached containers: no, on-failure[:max-retries], always,
    /// unless-stopped.
    #[arg(long, default_value = "no")]
    pub restart: String,
    /// Bind mount a volume: NAME:/path[:ro], /host/path:/path[:ro], or /path (anonymous).
    #[arg(short, long = "volume")]
    pub volumes: Vec<String>,
    /// Attach a filesystem mount: type=bind|volume|tmpfs,source=...,target=...[,readonly].
    #[arg(long = "mount")]
    pub mounts: Vec<String>,
    /// Mount a tmpfs directory.
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Image to run.
    pub image: String,
    /// Command and arguments (default: the image's Cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run container in background and print container ID.
    #[arg(short, long)]
    pub detach: bool,
    /// Print what the isolation cost (phase times, CPU, memory) after the container exits.
    #[arg(long, conflicts_with = "detach")]
    pub cost: bool,
    /// Write the cost ledger as JSON to FILE after the container exits (used by compare).
    #[arg(long, value_name = "FILE", hide = true, conflicts_with = "detach")]
    pub cost_file: Option<PathBuf>,
    #[command(flatten)]
    pub create: CreateArgs,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals.
    #[arg(short, long)]
    pub attach: bool,
    /// Attach container's STDIN.
    #[arg(short, long)]
    pub interactive: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

/// Docker's `units.RAMInBytes`: a number with an optional binary unit (b, k, m, g, t, p).
pub fn parse_memory(text: &str) -> Result<i64> {
    let invalid = || {
        anyhow::anyhow!(
            "invalid argument {text:?} for \"-m, --memory\" flag: invalid size: '{text}'"
        )
    };
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let lower = lower.strip_suffix('i').unwrap_or(lower);
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let number: f64 = number.parse().map_err(|_| invalid())?;
    let multiplier: f64 = match unit.trim() {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(invalid()),
    };
    let bytes = number * multiplier;
    if !bytes.is_finite() || bytes > i64::MAX as f64 {
        return Err(invalid());
    }
    let bytes = bytes as i64;
    if bytes < 6 * 1024 * 1024 {
        bail!("Minimum memory limit allowed is 6MB");
    }
    Ok(bytes)
}

/// `--cpus 1.5` as Docker's NanoCPUs, refusing more than the host has.
pub fn parse_cpus(text: &str) -> Result<i64> {
    let cpus: f64 = text
        .parse()
        .ok()
        .filter(|c: &f64| c.is_finite() && *c > 0.0)
        .with_context(|| {
            format!("invalid argument {text:?} for \"--cpus\" flag: not a positive number")
        })?;
    let host = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if cpus < 0.01 || cpus > host as f64 {
        bail!("Range of CPUs is from 0.01 to {host}.00, as there are only {host} CPUs available");
    }
    Ok((cpus * 1e9).round() as i64)
}

/// Docker's env-file format: K=V lines, K alone takes the value from husk's environment,
/// blank lines and lines starting with # are ignored.
pub fn read_env_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("open {}: cannot read env file", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// The isolation a container gets when `--isolation` is not given.
pub fn default_isolation(root: &Path) -> Result<Isolation> {
    if let Ok(value) = std::env::var("HUSK_ISOLATION") {
        return parse_isolation(&value).context("HUSK_ISOLATION");
    }
    let config = root.join("config.json");
    if let Ok(bytes) = std::fs::read(&config) {
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not valid JSON", config.display()))?;
        if let Some(isolation) = value.get("default_isolation").and_then(|v| v.as_str()) {
            return parse_isolation(isolation)
                .with_context(|| format!("default_isolation in {}", config.display()));
        }
    }
    Ok(Isolation::Process)
}

fn parse_isolation(value: &str) -> Result<Isolation> {
    match value {
        "process" => Ok(Isolation::Process),
        "vm" => Ok(Isolation::Vm),
        other => bail!("unknown isolation '{other}': use process or vm"),
    }
}

impl CreateArgs {
    /// Turn the flags into spec options, refusing bad values before anything is created.
    fn spec_options(&self) -> Result<SpecOptions> {
        let mut env = Vec::new();
        for file in &self.env_file {
            env.extend(read_env_file(file)?);
        }
        env.extend(self.env.iter().cloned());
        let network = match self.network.as_str() {
            "none" => NetworkMode::None,
            "host" => NetworkMode::Host,
            // Docker's default network; husk has none of its own yet, so the flag is refused
            // rather than silently taken as `none`.
            "bridge" | "default" => bail!(
                "--network {}: husk has no bridge networking yet; use --network none (the default) or host",
                self.network
            ),
            other => bail!("network {other} not found: husk supports --network none and host"),
        };
        let mut seccomp_unconfined = false;
        let mut no_new_privileges = false;
        for opt in &self.security_opt {
            match opt.replace('=', ":").as_str() {
                "seccomp:unconfined" => seccomp_unconfined = true,
                "no-new-privileges" | "no-new-privileges:true" => no_new_privileges = true,
                "no-new-privileges:false" => no_new_privileges = false,
                _ => bail!(
                    "invalid --security-opt {opt:?}: husk supports seccomp=unconfined and no-new-privileges"
                ),
            }
        }
        Ok(SpecOptions {
            cmd: self.command.clone(),
            entrypoint: self.entrypoint.clone(),
            env,
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            hostname: self.hostname.clone(),
            tty: self.tty,
            interactive: self.interactive,
            read_only: self.read_only,
            memory_bytes: self.memory.as_deref().map(parse_memory).transpose()?,
            nano_cpus: self.cpus.as_deref().map(parse_cpus).transpose()?,
            pids_limit: self.pids_limit.filter(|&n| n > 0),
            network,
            cap_add: self.cap_add.clone(),
            cap_drop: self.cap_drop.clone(),
            privileged: self.privileged,
            seccomp_unconfined,
            no_new_privileges,
            mounts: Vec::new(),
            devices: self
                .devices
                .iter()
                .map(|flag| DeviceMapping::from_flag(flag))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Find the image locally, pulling it the way `docker run` does when it is missing.
fn image_for_run(root: &Path, reference: &str) -> Result<image::StoredImage> {
    let store = image::Store::open(root)?;
    match store.lookup(reference) {
        Ok(found) => Ok(found),
        Err(ImageError::NotFoundLocally(name)) => {
            eprintln!("Unable to find image '{name}' locally");
            let opts = PullOptions {
                progress_to_stderr: true,
                ..PullOptions::default()
            };
            Ok(image::pull(&store, reference, &opts)?)
        }
        Err(err) => Err(err.into()),
    }
}

/// A mount as the user wrote it, before volumes exist.
struct RequestedMount {
    kind: MountKind,
    /// Volume name (None: anonymous), or host path for binds.
    source: Option<String>,
    destination: String,
    read_only: bool,
}

fn check_destination(destination: &str) -> Result<()> {
    if !destination.starts_with('/') {
        bail!("invalid mount config: mount path must be absolute: {destination:?}");
    }
    if destination == "/" {
        bail!("invalid mount config: cannot mount over /");
    }
    Ok(())
}

/// `-v`, `--mount` and `--tmpfs` in Docker's syntax.
fn parse_mounts(args: &CreateArgs) -> Result<Vec<RequestedMount>> {
    let mut mounts = Vec::new();
    for spec in &args.volumes {
        let parts: Vec<&str> = spec.split(':').collect();
        let (source, destination, mode) = match parts.as_slice() {
            [dest] => (None, *dest, None),
            [src, dest] => (Some(*src), *dest, None),
            [src, dest, mode] => (Some(*src), *dest, Some(*mode)),
            _ => bail!("invalid volume specification: '{spec}'"),
        };
        let read_only = match mode {
            None | Some("rw") => false,
            Some("ro") => true,
            Some(other) => bail!("invalid mode: {other} (use ro or rw)"),
        };
        check_destination(destination)?;
        let kind = match source {
            Some(src) if src.starts_with('/') => MountKind::Bind,
            Some("") => bail!("invalid volume specification: '{spec}'"),
            _ => MountKind::Volume,
        };
        mounts.push(RequestedMount {
            kind,
            source: source.map(str::to_string),
            destination: destination.to_string(),
            read_only,
        });
    }
    for spec in &args.mounts {
        let (mut kind, mut source, mut destination, mut read_only) =
            (MountKind::Volume, None, None, false);
        for field in spec.split(',') {
            let (key, value) = field.split_once('=').unwrap_or((field, "true"));
            match key {
                "type" => {
                    kind = match value {
                        "bind" => MountKind::Bind,
                        "volume" => MountKind::Volume,
                        "tmpfs" => MountKind::Tmpfs,
                        other => bail!("invalid mount type {other:?}: use bind, volume or tmpfs"),
                    }
                }
                "source" | "src" => source = Some(value.to_string()),
                "target" | "destination" | "dst" => destination = Some(value.to_string()),
                "readonly" | "ro" => read_only = value != "false" && value != "0",
                _ => bail!("unexpected key '{key}' in '{spec}'"),
            }
        }
        let destination = destination
            .with_context(|| format!("invalid mount config: target is required: {spec}"))?;
        check_destination(&destination)?;
        if kind == MountKind::Bind {
            let path = source.as_deref().with_context(|| {
                format!("invalid mount config: bind source is required: {spec}")
            })?;
            if !Path::new(path).exists() {
                bail!("invalid mount config for type \"bind\": bind source path does not exist: {path}");
            }
        }
        mounts.push(RequestedMount {
            kind,
            source,
            destination,
            read_only,
        });
    }
    for spec in &args.tmpfs {
        let destination = spec.split(':').next().unwrap_or_default().to_string();
        check_destination(&destination)?;
        mounts.push(RequestedMount {
            kind: MountKind::Tmpfs,
            source: None,
            destination,
            read_only: false,
        });
    }
    Ok(mounts)
}

/// Create the volumes a container asks for (filling new ones from the image, as Docker does)
/// and turn every mount into the host source the runtime spec binds.
fn resolve_mounts(
    root: &Path,
    image: &image::StoredImage,
    requested: Vec<RequestedMount>,
) -> Result<Vec<UserMount>> {
    let mut mounts = Vec::new();
    let mut layers = None;
    for mount in requested {
        mounts.push(match mount.kind {
            MountKind::Bind => {
                let path = mount.source.unwrap_or_default();
                // `-v /host:/ctr` creates a missing host directory, as Docker does.
                std::fs::create_dir_all(&path)
                    .with_context(|| format!("creating bind source {path}"))?;
                UserMount {
                    kind: MountKind::Bind,
                    name: path.clone(),
                    source: path,
                    destination: mount.destination,
                    read_only: mount.read_only,
                }
            }
            MountKind::Volume => {
                let volumes = Volumes::open(root)?;
                let volume = volumes.create(mount.source.as_deref())?;
                if layers.is_none() {
                    layers = Some(image::Store::open(root)?.layer_dirs(image)?);
                }
                volumes.populate_from_image(
                    &volume,
                    layers.as_deref().unwrap_or_default(),
                    &mount.destination,
                )?;
                UserMount {
                    kind: MountKind::Volume,
                    name: volume.name.clone(),
                    source: volume.mountpoint.display().to_string(),
                    destination: mount.destination,
                    read_only: mount.read_only,
                }
            }
            MountKind::Tmpfs => UserMount {
                kind: MountKind::Tmpfs,
                name: String::new(),
                source: String::new(),
                destination: mount.destination,
                read_only: false,
            },
        });
    }
    Ok(mounts)
}

/// `create`: the record, the spec (config.json) and nothing running yet.
fn create_container(root: &Path, args: &CreateArgs) -> Result<Record> {
    let options = args.spec_options()?;
    let restart = RestartPolicy::parse(&args.restart)?;
    if args.rm && restart != RestartPolicy::No {
        bail!("conflicting options: cannot specify both --restart and --rm");
    }
    let isolation = match args.isolation {
        Some(isolation) => isolation,
        None => default_isolation(root)?,
    };
    let requested = parse_mounts(args)?;
    if isolation == Isolation::Vm && !options.devices.is_empty() {
        bail!("--device is not supported with --isolation vm: the guest has its own devices");
    }
    let image = image_for_run(root, &args.image)?;
    let mut options = options;
    options.mounts = resolve_mounts(root, &image, requested)?;
    let store = Containers::open(root)?;
    let record = store.create(NewContainer {
        name: args.name.clone(),
        image: args.image.clone(),
        image_id: image.id.clone(),
        isolation,
        command: Vec::new(),
        auto_remove: args.rm,
        options: options.clone(),
        restart,
    })?;
    // From here on a failure must not leave a half-made container behind.
    let finish = || -> Result<Record> {
        let spec = build_spec(&image.config, &options, &record.id)?;
        let command = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .unwrap_or_default();
        if command.is_empty() {
            bail!("no command specified: the image has no Cmd or Entrypoint and none was given");
        }
        let bytes = serde_json::to_vec_pretty(&spec).context("serializing the runtime spec")?;
        std::fs::write(store.dir_of(&record.id).join(SPEC_FILE), bytes)
            .context("writing the container's config.json")?;
        Ok(store.update(&record.id, |r| r.command = command)?)
    };
    finish().inspect_err(|_| {
        let _ = store.remove(&record.id);
    })
}

pub fn load_spec(store: &Containers, id: &str) -> Result<Spec> {
    let path = store.dir_of(id).join(SPEC_FILE);
    let bytes = std::fs::read(&path)
        .with_context(|| format!("container {id} has no runtime spec ({})", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt", path.display()))
}

/// The image layers of a container, bottom first.
pub fn layer_dirs(root: &Path, record: &Record) -> Result<Vec<PathBuf>> {
    let images = image::Store::open(root)?;
    let stored = images.lookup(&record.image_id).with_context(|| {
        format!(
            "the image of container {} ({}) is gone",
            record.short_id(),
            record.image
        )
    })?;
    Ok(images.layer_dirs(&stored)?)
}

/// Run the container in the foreground: the CLI supervises it, forwards signals and the
/// terminal, records the exit and honours --rm. Returns Docker's exit code.
pub fn start_attached(root: &Path, store: &Containers, record: Record) -> Result<i32> {
    if record.isolation == Isolation::Vm {
        let stdio = super::vm_container::VmStdio::Terminal {
            interactive: record.options.interactive,
        };
        let code = super::vm_container::run(root, store, &record, stdio)?.unwrap_or_else(|c| c);
        remove_if_auto(root, store, &record.id)?;
        return Ok(code);
    }
    let dir = store.dir_of(&record.id);
    let spec = load_spec(store, &record.id)?;
    let layers = layer_dirs(root, &record)?;
    husk::cost::begin(husk::cost::Phase::Setup); // cost ledger
    let cgroup = cgroup_name(&record.id);
    let on_started = |container: &process::Container| {
        husk::cost::begin(husk::cost::Phase::ProcessRun); // cost ledger
        let pid = container.pid();
        let init = husk::container::ProcessIdentity::of(pid);
        let _ = store.update(&record.id, |r| {
            r.state.pid = Some(pid);
            r.state.init = init;
        });
    };
    mark_starting(store, &record.id, record.restart_count)?;
    // An attached container is logged too, so `husk logs` works for it as in Docker; a --rm
    // container's log would go with it, so it keeps the direct (faster) path.
    let result = if record.auto_remove {
        let cfg = LaunchConfig {
            spec: &spec,
            lower_dirs: &layers,
            container_dir: &dir,
            cgroup_name: &cgroup,
            stdio: None,
        };
        process::run_foreground(&cfg, on_started)
    } else if record.options.tty {
        let log = Arc::new(Mutex::new(LogWriter::open(&dir)?));
        let cfg = LaunchConfig {
            spec: &spec,
            lower_dirs: &layers,
            container_dir: &dir,
            cgroup_name: &cgroup,
            stdio: None,
        };
        process::run_foreground_logged(&cfg, on_started, |bytes| {
            log.lock()
                .unwrap_or_else(|p| p.into_inner())
                .write(Stream::Stdout, bytes)
        })
    } else {
        let log = Arc::new(Mutex::new(LogWriter::open(&dir)?));
        let stdin: OwnedFd = if record.options.interactive {
            std::io::stdin().as_fd().try_clone_to_owned()?
        } else {
            std::fs::File::open("/dev/null")?.into()
        };
        let (out_read, out_write) = nix::unistd::pipe()?;
        let (err_read, err_write) = nix::unistd::pipe()?;
        let pumps = [
            tee_thread(out_read, std::io::stdout(), &log, Stream::Stdout),
            tee_thread(err_read, std::io::stderr(), &log, Stream::Stderr),
        ];
        let cfg = LaunchConfig {
            spec: &spec,
            lower_dirs: &layers,
            container_dir: &dir,
            cgroup_name: &cgroup,
            stdio: Some([stdin.as_fd(), out_write.as_fd(), err_write.as_fd()]),
        };
        let result = process::run_foreground(&cfg, on_started);
        // Our write ends close so the pumps see EOF once the container's side is gone.
        drop((out_write, err_write));
        for pump in pumps {
            let _ = pump.join();
        }
        result
    };
    husk::cost::begin(husk::cost::Phase::Teardown); // cost ledger
    let oom_killed = result.as_ref().is_ok_and(|exit| exit.oom_killed);
    let code = record_exit(
        store,
        &record.id,
        result.map(|exit| exit.code).map_err(StartFailure::from),
        oom_killed,
    );
    remove_if_auto(root, store, &record.id)?;
    Ok(code)
}

/// Copy one of the container's output pipes to our own stream and to its log.
fn tee_thread<W: std::io::Write + Send + 'static>(
    from: OwnedFd,
    out: W,
    log: &Arc<Mutex<LogWriter>>,
    stream: Stream,
) -> std::thread::JoinHandle<()> {
    let mut tee = Tee {
        out,
        log: Arc::clone(log),
        stream,
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::fs::File::from(from), &mut tee);
    })
}

/// `--rm`: once the container has exited, remove it with its anonymous volumes.
pub fn remove_if_auto(root: &Path, store: &Containers, id: &str) -> Result<()> {
    let record = store.load(id)?;
    if record.auto_remove {
        release_leftovers(&store.dir_of(id), id)?;
        super::volume::remove_anonymous_volumes(root, &record)?;
        store.remove(id)?;
    }
    Ok(())
}

/// The record says running, supervised by this process, before the sandbox starts: if husk
/// dies at any point after this, `ps` shows the container as dead rather than created.
///
/// `restart_count` is written in the same update, so a restart is never seen counted but not
/// yet started.
pub fn mark_starting(store: &Containers, id: &str, restart_count: u32) -> Result<()> {
    let supervisor = ProcessIdentity::current();
    store.update(id, |r| {
        r.restart_count = restart_count;
        r.state.status = Status::Running;
        r.state.supervisor = Some(supervisor);
        r.state.started_at = Some(chrono::Utc::now());
        r.state.finished_at = None;
        r.state.exit_code = None;
        r.state.pid = None;
        r.state.init = None;
        r.state.error = None;
        r.state.stop_requested = false;
        r.state.oom_killed = false;
    })?;
    Ok(())
}

/// Why a container's command never ran, with Docker's exit code for it.
pub struct StartFailure {
    pub code: i32,
    pub message: String,
}

impl From<process::ProcessError> for StartFailure {
    fn from(err: process::ProcessError) -> Self {
        Self {
            code: err.exit_code(),
            message: err.to_string(),
        }
    }
}

/// Record how a start ended and return Docker's exit code, with whether the kernel's OOM
/// killer ended the container (in the same write, so that nobody sees the exit without it). A
/// start that failed before the command ran leaves the container "created" with the failure
/// recorded, as Docker does.
pub fn record_exit(
    store: &Containers,
    id: &str,
    result: Result<i32, StartFailure>,
    oom_killed: bool,
) -> i32 {
    let now = chrono::Utc::now();
    let (code, error) = match result {
        Ok(code) => (code, None),
        Err(failure) => {
            eprintln!("husk: {}", failure.message);
            (failure.code, Some(failure.message))
        }
    };
    // The exit status is what a user asks for later: on disk before we go, unless the record
    // is about to be removed (--rm).
    let durable = store.load(id).is_ok_and(|r| !r.auto_remove);
    let update = |change: &dyn Fn(&mut Record)| {
        if durable {
            store.update_durably(id, change)
        } else {
            store.update(id, change)
        }
    };
    let _ = update(&|r: &mut Record| {
        r.state.status = if error.is_some() && r.restart_count == 0 {
            Status::Created
        } else {
            Status::Exited
        };
        r.state.exit_code = Some(code);
        r.state.finished_at = Some(now);
        r.state.pid = None;
        r.state.init = None;
        r.state.error = error.clone();
        r.state.oom_killed = oom_killed;
    });
    code
}

pub fn run(root: &Path, args: RunArgs) -> Result<i32> {
    let costed = args.cost || args.cost_file.is_some();
    if costed {
        let isolation = match args.create.isolation {
            Some(isolation) => isolation,
            None => default_isolation(root)?,
        };
        husk::cost::start(&isolation.to_string(), husk::cost::Phase::Prepare);
    }
    let record = create_container(root, &args.create)?;
    let store = Containers::open(root)?;
    if args.detach {
        super::monitor::start_detached(root, &store, &record)?;
        println!("{}", record.id);
        return Ok(0);
    }
    let id = record.id.clone();
    let code = start_attached(root, &store, record)?;
    if let Some(ledger) = husk::cost::finish() {
        save_cost(&store, &id, &ledger, &args)?;
    }
    Ok(code)
}

/// Keep the ledger in the record (unless `--rm` removed it) and report it as asked.
fn save_cost(
    store: &Containers,
    id: &str,
    ledger: &husk::cost::Ledger,
    args: &RunArgs,
) -> Result<()> {
    if store.load(id).is_ok() {
        store.update(id, |r| r.cost = Some(ledger.clone()))?;
    }
    if args.cost {
        eprintln!("{}", ledger.summary());
    }
    if let Some(path) = &args.cost_file {
        let bytes = serde_json::to_vec_pretty(ledger).context("serializing the cost ledger")?;
        std::fs::write(path, bytes)
            .with_context(|| format!("writing the cost ledger to {}", path.display()))?;
    }
    Ok(())
}

pub fn create(root: &Path, args: CreateArgs) -> Result<i32> {
    let record = create_container(root, &args)?;
    println!("{}", record.id);
    Ok(0)
}

pub fn start(root: &Path, args: StartArgs) -> Result<i32> {
    let store = Containers::open(root)?;
    if args.attach || args.interactive {
        if args.containers.len() > 1 {
            bail!("you cannot start and attach multiple containers at once");
        }
        let record = store.find(&args.containers[0])?;
        if record.effective_status() == Status::Running {
            bail!("container {} is already running", record.short_id());
        }
        return start_attached(root, &store, record);
    }
    let mut failed = false;
    for key in &args.containers {
        let result = store
            .find(key)
            .map_err(anyhow::Error::from)
            .and_then(|record| {
                if record.effective_status() == Status::Running {
                    return Ok(()); // Docker: starting a running container is a no-op
                }
                super::monitor::start_detached(root, &store, &record)
            });
        match result {
            Ok(()) => println!("{key}"),
            Err(err) => {
                eprintln!("Error response from daemon: {err:#}");
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse_like_docker() {
        assert_eq!(parse_memory("512m").unwrap(), 512 << 20);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("1GB").unwrap(), 1 << 30);
        assert_eq!(parse_memory("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_memory("10485760").unwrap(), 10 << 20);
        assert!(parse_memory("abc")
            .unwrap_err()
            .to_string()
            .contains("invalid size"));
        assert!(parse_memory("12x").is_err());
        assert!(parse_memory("1k")
            .unwrap_err()
            .to_string()
            .contains("Minimum memory"));
    }

    #[test]
    fn cpus_are_bounded_by_the_host() {
        assert_eq!(parse_cpus("0.5").unwrap(), 500_000_000);
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("100000")
            .unwrap_err()
            .to_string()
            .contains("Range of CPUs"));
        assert!(parse_cpus("x").is_err());
    }
}
