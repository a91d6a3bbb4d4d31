//! `husk run`, `husk create` and `husk start`: from an image and flags to a container record,
//! an OCI runtime spec (the container's config.json) and a sandbox of the chosen isolation.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use husk::container::spec::{DeviceMapping, MountKind, NetworkMode, SpecOptions};
use husk::container::{Containers, Isolation, RestartPolicy};
use husk::cost::CostRecorder;
use husk::runtime::container::create::{self, CreateRequest, RequestedMount};
use husk::runtime::container::start;
use husk::runtime::Runtime;

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
    /// Set metadata on a container (K=V, or K for an empty value).
    #[arg(short = 'l', long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Docker's StdinOnce (no flag: the Engine API's `run -i` sets it): the container's stdin
    /// ends when the first attached client's input does.
    #[arg(skip)]
    pub stdin_once: bool,
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
    /// Memory limit (e.g. 512m, 1g): the container's cgroup limit (with --isolation vm, in
    /// the guest, whose RAM is the limit plus 64 MiB).
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Number of CPUs (a CPU quota, or vCPUs with --isolation vm).
    #[arg(long)]
    pub cpus: Option<String>,
    /// Tune container pids limit (-1 for unlimited).
    #[arg(long, allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
    /// Connect the container to a network: bridge (the default network, as in Docker), a
    /// user-defined network, none (loopback only), host, or container:NAME|ID.
    #[arg(long, visible_alias = "net", default_value = husk::network::DEFAULT_NETWORK)]
    pub network: String,
    /// Publish a container's port to the host: [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp].
    #[arg(short = 'p', long = "publish", value_name = "PORT")]
    pub publish: Vec<String>,
    /// Publish all the image's exposed ports to free host ports.
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// IPv4 address on a user-defined network (e.g. 10.86.0.10).
    #[arg(long)]
    pub ip: Option<std::net::Ipv4Addr>,
    /// Add a network-scoped alias for the container.
    #[arg(
        long = "network-alias",
        visible_alias = "net-alias",
        value_name = "ALIAS"
    )]
    pub network_aliases: Vec<String>,
    /// Add a custom host-to-IP mapping (HOST:IP).
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub add_hosts: Vec<String>,
    /// Set a custom IPv4 DNS server.
    #[arg(long = "dns", value_name = "IP")]
    pub dns: Vec<String>,
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
    /// Namespaced kernel parameters: K=V (kernel.shm*, kernel.msg*, kernel.sem,
    /// fs.mqueue.*, net.*).
    #[arg(long = "sysctl", value_name = "K=V")]
    pub sysctls: Vec<String>,
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
            "default" => NetworkMode::Network(husk::network::DEFAULT_NETWORK.into()),
            "" => {
                bail!("invalid --network \"\": give none, host, bridge, a network or container:ID")
            }
            other => match other.strip_prefix("container:") {
                Some("") => bail!("invalid --network {other}: container: needs a name or ID"),
                Some(id) => NetworkMode::Container(id.to_string()),
                None => NetworkMode::Network(other.to_string()),
            },
        };
        let bridged = matches!(network, NetworkMode::Network(_));
        let user_network =
            matches!(&network, NetworkMode::Network(n) if n != husk::network::DEFAULT_NETWORK);
        let mut publish = Vec::new();
        for spec in &self.publish {
            publish.push(spec.parse::<husk::network::PortRequest>()?);
        }
        if (!publish.is_empty() || self.publish_all) && !bridged {
            bail!(
                "conflicting options: port publishing and --network {}: ports are published from a bridge network",
                self.network
            );
        }
        if self.ip.is_some() && !user_network {
            bail!("user specified IP address is supported on user defined networks only");
        }
        if !self.network_aliases.is_empty() && !user_network {
            bail!("network-scoped alias is supported only for containers in user defined networks");
        }
        if (!self.add_hosts.is_empty() || !self.dns.is_empty()) && !bridged {
            bail!(
                "--add-host and --dns shape a bridge network's /etc/hosts and resolv.conf; --network {} has none of husk's own",
                self.network
            );
        }
        let mut add_hosts = Vec::new();
        for entry in &self.add_hosts {
            let (host, ip) = entry
                .split_once(':')
                .filter(|(h, _)| !h.is_empty() && !h.contains(char::is_whitespace))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "invalid argument {entry:?} for \"--add-host\" flag: expected HOST:IP"
                    )
                })?;
            let ip: std::net::IpAddr = ip
                .parse()
                .map_err(|_| anyhow::anyhow!("invalid IP address in add-host: {ip:?}"))?;
            add_hosts.push(format!("{ip}\t{host}"));
        }
        let mut dns = Vec::new();
        for server in &self.dns {
            dns.push(
                server
                    .parse::<std::net::Ipv4Addr>()
                    .map_err(|_| anyhow::anyhow!("{server} is not an IPv4 address (--dns)"))?,
            );
        }
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
        let mut sysctls = std::collections::BTreeMap::new();
        for entry in &self.sysctls {
            let Some((key, value)) = entry.split_once('=') else {
                bail!("invalid argument {entry:?} for \"--sysctl\" flag: expected K=V");
            };
            husk::container::spec::check_sysctl(key, value, &network)?;
            sysctls.insert(key.to_string(), value.to_string());
        }
        Ok(SpecOptions {
            sysctls,
            publish,
            ip: self.ip,
            network_aliases: self.network_aliases.clone(),
            add_hosts,
            dns,
            cmd: self.command.clone(),
            entrypoint: self.entrypoint.clone(),
            env,
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            hostname: self.hostname.clone(),
            tty: self.tty,
            interactive: self.interactive,
            stdin_once: self.stdin_once,
            labels: self
                .labels
                .iter()
                .map(|l| match l.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (l.clone(), String::new()),
                })
                .collect(),
            read_only: self.read_only,
            memory_bytes: self.memory.as_deref().map(parse_memory).transpose()?,
            nano_cpus: self.cpus.as_deref().map(parse_cpus).transpose()?,
            pids_limit: self.pids_limit.filter(|&n| n > 0),
            network,
            // `network connect` adds more; `run` joins one network, as Docker's does.
            extra_networks: Vec::new(),
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

impl CreateArgs {
    /// The flags as the runtime's create request.
    pub fn request(&self) -> Result<CreateRequest> {
        Ok(CreateRequest {
            name: self.name.clone(),
            image: self.image.clone(),
            isolation: self.isolation,
            options: self.spec_options()?,
            mounts: parse_mounts(self)?,
            auto_remove: self.rm,
            restart: RestartPolicy::parse(&self.restart)?,
            publish_all: self.publish_all,
        })
    }
}

pub fn run(runtime: &Runtime, args: RunArgs) -> Result<i32> {
    let costed = args.cost || args.cost_file.is_some();
    let cost = match costed {
        true => {
            let isolation = args
                .create
                .isolation
                .unwrap_or(runtime.config.default_isolation);
            CostRecorder::start(&isolation.to_string(), husk::cost::Phase::Prepare)
        }
        false => CostRecorder::off(),
    };
    let record = create::create(runtime, args.create.request()?)?;
    let store = runtime.containers()?;
    if args.detach {
        start::start_detached(runtime, &store, &record)?;
        println!("{}", record.id);
        return Ok(0);
    }
    let code = start::start_attached(runtime, &store, &record, &cost)?;
    if let Some(ledger) = cost.finish() {
        save_cost(&store, &record.id, &ledger, &args)?;
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

pub fn create(runtime: &Runtime, args: CreateArgs) -> Result<i32> {
    let record = create::create(runtime, args.request()?)?;
    println!("{}", record.id);
    Ok(0)
}

pub fn start(runtime: &Runtime, args: StartArgs) -> Result<i32> {
    if args.attach || args.interactive {
        if args.containers.len() > 1 {
            bail!("you cannot start and attach multiple containers at once");
        }
        return Ok(start::start_attached_by_name(runtime, &args.containers[0])?);
    }
    Ok(super::for_each(&args.containers, |key| {
        start::start_by_name(runtime, key)
    }))
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
