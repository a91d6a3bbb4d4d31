//! The OCI runtime spec of a container, built from the image config and `run` flags with
//! Docker's semantics. The spec is the container's config.json and the only input of both
//! isolation backends, so everything a backend needs to apply lives in it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::str::FromStr;

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDevice,
    LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder, Mount,
    MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};

/// Docker's PATH when the image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Annotation recording `-i`: OCI has no field for "keep stdin open".
pub const ANNOTATION_INTERACTIVE: &str = "io.husk.interactive";

/// Docker's default capability set.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// runc's default masked paths.
pub const MASKED_PATHS: [&str; 12] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    // Docker masks it since CVE-2020-8694 (energy counters as a side channel).
    "/sys/devices/virtual/powercap",
];

/// runc's default read-only paths.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Docker's RLIMIT_NOFILE for containers.
pub const NOFILE_LIMIT: u64 = 1_048_576;

/// CFS period used for `--cpus`, as Docker.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Namespace-creating clone flags (CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET):
/// the mask Docker's profile uses to refuse new namespaces from clone.
pub const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("unknown capability {0:?}: use a name like NET_ADMIN or CAP_NET_ADMIN, or ALL")]
    UnknownCapability(String),
    #[error("the image has no command to run: give one after the image name")]
    NoCommand,
    #[error("invalid environment variable {0:?}: expected KEY=VALUE or KEY")]
    BadEnv(String),
    #[error("invalid working directory {0:?}: it must be an absolute path")]
    BadWorkdir(String),
    #[error("invalid {what}: {value} (must be positive)")]
    BadLimit { what: &'static str, value: i64 },
    #[error("invalid --device {0:?}: {1}")]
    BadDevice(String, String),
    #[error("invalid --sysctl {0:?}: {1}")]
    BadSysctl(String, String),
    #[error("building the runtime spec: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
}

/// How the container is attached to the network.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// A new network namespace with only loopback up.
    #[default]
    None,
    /// The host's network namespace.
    Host,
    /// A new network namespace on the bridge network of this name (`bridge` or user-defined).
    Network(String),
    /// The network namespace of the container with this id (`container:ID`).
    Container(String),
}

impl NetworkMode {
    /// As Docker's HostConfig.NetworkMode writes it.
    pub fn name(&self) -> String {
        match self {
            Self::None => "none".into(),
            Self::Host => "host".into(),
            Self::Network(name) => name.clone(),
            Self::Container(id) => format!("container:{id}"),
        }
    }
}

/// Docker's `label` filter: "K" matches a container that has the label, "K=V" one whose
/// label K is V.
pub fn labels_match(labels: &std::collections::BTreeMap<String, String>, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((key, value)) => labels.get(key).is_some_and(|v| v == value),
        None => labels.contains_key(filter),
    }
}

/// A network a container is on besides its first, with its address and aliases there.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ExtraNetwork {
    pub name: String,
    pub ip: Option<std::net::Ipv4Addr>,
    pub aliases: Vec<String>,
}

/// The `run`/`create` flags that shape the spec.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SpecOptions {
    /// CMD args after IMAGE (empty = the image's Cmd).
    pub cmd: Vec<String>,
    /// `--entrypoint` ("" clears the image's entrypoint).
    pub entrypoint: Option<String>,
    /// `-e`/`--env-file`, K=V, or K alone to take the value from husk's environment.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub tty: bool,
    pub interactive: bool,
    /// With `interactive`: stdin ends when the first attached writer closes (Docker's
    /// StdinOnce), instead of staying open between attaches.
    pub stdin_once: bool,
    /// `--label K=V`: metadata for the user's tools (docker-compose finds its containers by
    /// them); husk itself never reads them.
    pub labels: std::collections::BTreeMap<String, String>,
    pub read_only: bool,
    pub memory_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub pids_limit: Option<i64>,
    pub network: NetworkMode,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub seccomp_unconfined: bool,
    pub no_new_privileges: bool,
    /// `-v`, `--mount`, `--tmpfs`, with volume names already resolved to host directories.
    pub mounts: Vec<UserMount>,
    /// `--device`, resolved against the host's device node when the container is created.
    pub devices: Vec<DeviceMapping>,
    /// `--sysctl`, checked by [`check_sysctl`]: only what the container's own namespaces
    /// scope, as Docker allows.
    pub sysctls: std::collections::BTreeMap<String, String>,
    /// `-p`, with `-P`'s exposed ports added (host port 0: any free one).
    pub publish: Vec<crate::network::PortRequest>,
    /// `--ip` on the container's network.
    pub ip: Option<std::net::Ipv4Addr>,
    /// `--network-alias`: more names the other members resolve.
    pub network_aliases: Vec<String>,
    /// Networks joined besides `network` (`network connect`), as eth1, eth2, ...
    pub extra_networks: Vec<ExtraNetwork>,
    /// `--add-host`, as /etc/hosts lines ("IP\tNAME").
    pub add_hosts: Vec<String>,
    /// `--dns`.
    pub dns: Vec<std::net::Ipv4Addr>,
}

/// The IPC namespace's sysctls Docker allows (besides `fs.mqueue.*`).
const IPC_SYSCTLS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Docker's rule for `--sysctl`: a sysctl the container's own IPC, UTS or network namespace
/// scopes, never one that would change the host (`net.*` not with `--network host`), with a
/// name of dotted words and a value of one line.
pub fn check_sysctl(key: &str, value: &str, network: &NetworkMode) -> Result<(), SpecError> {
    let bad = |why: &str| Err(SpecError::BadSysctl(format!("{key}={value}"), why.into()));
    if !rootfs_agent::protocol::is_sysctl_name(key) {
        return bad("not a sysctl name");
    }
    if !rootfs_agent::protocol::is_sysctl_value(value) {
        return bad("the value must be one line of at most 4096 bytes");
    }
    let namespaced = IPC_SYSCTLS.contains(&key)
        || key.starts_with("fs.mqueue.")
        || key == "kernel.domainname"
        || key.starts_with("net.");
    if !namespaced {
        return bad("not a namespaced sysctl: it would change the host");
    }
    if key.starts_with("net.") && *network == NetworkMode::Host {
        return bad("net.* sysctls are not allowed with --network host (the host's namespace)");
    }
    Ok(())
}

/// A host device passed through with `--device HOST[:CONTAINER[:PERMS]]` (Docker's
/// HostConfig.Devices entry, plus what the host node is).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceMapping {
    pub path_on_host: String,
    pub path_in_container: String,
    /// Some of "rwm": read, write, mknod.
    pub cgroup_permissions: String,
    /// 'c' or 'b'.
    pub kind: char,
    pub major: i64,
    pub minor: i64,
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl DeviceMapping {
    /// Parse a `--device` value and look at the host node it names.
    pub fn from_flag(flag: &str) -> Result<Self, SpecError> {
        let bad = |why: &str| SpecError::BadDevice(flag.to_string(), why.to_string());
        let mut parts = flag.split(':');
        let host = parts.next().unwrap_or_default();
        let (container, permissions) = match (parts.next(), parts.next(), parts.next()) {
            (None, ..) => (host, "rwm"),
            // Docker: a second field of only r, w and m is the permissions.
            (Some(p), None, _) if !p.is_empty() && p.chars().all(|c| "rwm".contains(c)) => {
                (host, p)
            }
            (Some(c), None, _) => (c, "rwm"),
            (Some(c), Some(p), None) => (c, p),
            _ => return Err(bad("expected HOST[:CONTAINER[:PERMISSIONS]]")),
        };
        if !host.starts_with('/') || !container.starts_with('/') {
            return Err(bad("device paths must be absolute"));
        }
        if permissions.is_empty() || !permissions.chars().all(|c| "rwm".contains(c)) {
            return Err(bad("permissions are some of r, w and m"));
        }
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let meta = std::fs::metadata(host).map_err(|e| bad(&e.to_string()))?;
        let kind = if meta.file_type().is_char_device() {
            'c'
        } else if meta.file_type().is_block_device() {
            'b'
        } else {
            return Err(bad("not a device node"));
        };
        let rdev = meta.rdev();
        Ok(Self {
            path_on_host: host.to_string(),
            path_in_container: container.to_string(),
            cgroup_permissions: permissions.to_string(),
            kind,
            major: i64::from(libc::major(rdev)),
            minor: i64::from(libc::minor(rdev)),
            file_mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        })
    }
}

/// What a user mount brings into the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A host path (`-v /host:/ctr`, `--mount type=bind`).
    Bind,
    /// A named or anonymous husk volume (`-v name:/ctr`, `-v /ctr`).
    Volume,
    /// A fresh tmpfs (`--tmpfs /ctr`, `--mount type=tmpfs`).
    Tmpfs,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserMount {
    pub kind: MountKind,
    /// The volume's name for volumes (as Docker shows it), the host path for binds.
    pub name: String,
    /// Host directory bound into the container (empty for tmpfs).
    pub source: String,
    pub destination: String,
    pub read_only: bool,
}

/// Build the OCI runtime spec for `container_id` from the image config and the flags.
pub fn build_spec(
    image: &ImageConfiguration,
    opts: &SpecOptions,
    container_id: &str,
) -> Result<Spec, SpecError> {
    let config = image.config().as_ref();
    let args = command_args(
        config
            .and_then(|c| c.entrypoint().clone())
            .unwrap_or_default(),
        config.and_then(|c| c.cmd().clone()).unwrap_or_default(),
        opts,
    )?;
    let env = environment(
        config.and_then(|c| c.env().clone()).unwrap_or_default(),
        &opts.env,
        |key| std::env::var(key).ok(),
    )?;
    let cwd = match opts.workdir.as_deref().filter(|w| !w.is_empty()) {
        Some(dir) if !dir.starts_with('/') => return Err(SpecError::BadWorkdir(dir.to_string())),
        Some(dir) => dir.to_string(),
        None => config
            .and_then(|c| c.working_dir().clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_string()),
    };
    let user_str = opts.user.clone().filter(|u| !u.is_empty()).or_else(|| {
        config
            .and_then(|c| c.user().clone())
            .filter(|u| !u.is_empty())
    });

    let capabilities = capability_set(opts)?;
    let cap_set: std::collections::HashSet<Capability> = capabilities.iter().copied().collect();
    let caps = LinuxCapabilitiesBuilder::default()
        .bounding(cap_set.clone())
        .effective(cap_set.clone())
        .permitted(cap_set)
        .inheritable(std::collections::HashSet::new())
        .ambient(std::collections::HashSet::new())
        .build()?;

    let mut process = ProcessBuilder::default()
        .terminal(opts.tty)
        .user(user_spec(user_str.as_deref())?)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(caps)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(NOFILE_LIMIT)
            .soft(NOFILE_LIMIT)
            .build()?])
        .build()?;
    // The builder defaults to true; Docker's default is false unless asked for.
    process.set_no_new_privileges(Some(opts.no_new_privileges));

    let mut namespaces = Vec::new();
    for typ in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Cgroup,
    ] {
        if typ == LinuxNamespaceType::Network && opts.network == NetworkMode::Host {
            continue;
        }
        namespaces.push(LinuxNamespaceBuilder::default().typ(typ).build()?);
    }

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources(opts)?)
        .devices(
            opts.devices
                .iter()
                .map(container_device)
                .collect::<Result<Vec<_>, _>>()?,
        )
        .cgroups_path(PathBuf::from(format!("husk/{container_id}")))
        .build()?;
    for (key, value) in &opts.sysctls {
        check_sysctl(key, value, &opts.network)?;
    }
    if !opts.sysctls.is_empty() {
        linux.set_sysctl(Some(
            opts.sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ));
    }
    linux.set_masked_paths(None);
    linux.set_readonly_paths(None);
    if !opts.privileged {
        linux.set_masked_paths(Some(MASKED_PATHS.iter().map(|s| s.to_string()).collect()));
        linux.set_readonly_paths(Some(READONLY_PATHS.iter().map(|s| s.to_string()).collect()));
        if !opts.seccomp_unconfined {
            linux.set_seccomp(Some(default_seccomp(&capabilities)?));
        }
    }

    let hostname = opts
        .hostname
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| container_id.chars().take(12).collect());

    let mut annotations = std::collections::HashMap::new();
    if opts.interactive {
        annotations.insert(ANNOTATION_INTERACTIVE.to_string(), "true".to_string());
    }

    Ok(SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(opts.read_only)
                .build()?,
        )
        .hostname(hostname)
        .mounts(all_mounts(opts)?)
        .process(process)
        .linux(linux)
        .annotations(annotations)
        .build()?)
}

/// Docker: entrypoint + (CMD args, or the image Cmd when none given). `--entrypoint ""` drops
/// the image's entrypoint, and any `--entrypoint` also drops the image's Cmd.
fn command_args(
    image_entrypoint: Vec<String>,
    image_cmd: Vec<String>,
    opts: &SpecOptions,
) -> Result<Vec<String>, SpecError> {
    let (entrypoint, default_cmd) = match &opts.entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.clone()], Vec::new()),
        None => (image_entrypoint, image_cmd),
    };
    let cmd = if opts.cmd.is_empty() {
        default_cmd
    } else {
        opts.cmd.clone()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(args)
}

/// PATH default, then the image's Env, then `-e` entries; a later key replaces an earlier one
/// in place. `host` resolves bare `KEY` entries (dropped when unset, as Docker).
fn environment(
    image_env: Vec<String>,
    flags: &[String],
    host: impl Fn(&str) -> Option<String>,
) -> Result<Vec<String>, SpecError> {
    let mut env: Vec<String> = vec![DEFAULT_PATH.to_string()];
    let mut set = |entry: String| {
        let key = entry.split('=').next().unwrap_or_default().to_string();
        match env
            .iter_mut()
            .find(|e| e.split('=').next() == Some(key.as_str()))
        {
            Some(existing) => *existing = entry,
            None => env.push(entry),
        }
    };
    for entry in image_env {
        set(entry);
    }
    for entry in flags {
        let key = entry.split('=').next().unwrap_or_default();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(SpecError::BadEnv(entry.clone()));
        }
        if entry.contains('=') {
            set(entry.clone());
        } else if let Some(value) = host(key) {
            set(format!("{key}={value}"));
        }
    }
    Ok(env)
}

/// The user string is kept as `username` and resolved against the container's /etc/passwd
/// and /etc/group at start; purely numeric parts are filled in right away.
fn user_spec(user: Option<&str>) -> Result<oci_spec::runtime::User, SpecError> {
    let mut builder = UserBuilder::default().uid(0u32).gid(0u32);
    if let Some(user) = user {
        let (name, group) = match user.split_once(':') {
            Some((n, g)) => (n, Some(g)),
            None => (user, None),
        };
        if let Ok(uid) = name.parse::<u32>() {
            builder = builder.uid(uid);
            if group.is_none() {
                builder = builder.gid(uid);
            }
        }
        if let Some(gid) = group.and_then(|g| g.parse::<u32>().ok()) {
            builder = builder.gid(gid);
        }
        builder = builder.username(user.to_string());
    }
    Ok(builder.build()?)
}

/// Parse one capability name as Docker accepts it: any case, with or without CAP_.
pub fn parse_capability(name: &str) -> Result<Capability, SpecError> {
    let upper = name.trim().to_uppercase();
    let stripped = upper.strip_prefix("CAP_").unwrap_or(&upper);
    Capability::from_str(stripped).map_err(|_| SpecError::UnknownCapability(name.to_string()))
}

/// Every capability husk knows (the kernel may support fewer; the backend skips those).
pub fn all_capabilities() -> Vec<Capability> {
    let mut all: Vec<Capability> = caps::all()
        .into_iter()
        .filter_map(|c| parse_capability(&c.to_string()).ok())
        .collect();
    all.sort_by_key(|c| c.to_string());
    all
}

/// Docker's rule: start from the defaults (or ALL when privileged), add, then drop; ALL in
/// add or drop means every capability.
fn capability_set(opts: &SpecOptions) -> Result<Vec<Capability>, SpecError> {
    let mut set: BTreeSet<String> = if opts.privileged {
        all_capabilities().iter().map(|c| c.to_string()).collect()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    };
    let is_all = |name: &str| name.trim().eq_ignore_ascii_case("ALL");
    for name in &opts.cap_add {
        if is_all(name) {
            set.extend(all_capabilities().iter().map(|c| c.to_string()));
        } else {
            set.insert(parse_capability(name)?.to_string());
        }
    }
    for name in &opts.cap_drop {
        if is_all(name) {
            set.clear();
        } else {
            set.remove(&parse_capability(name)?.to_string());
        }
    }
    set.iter().map(|name| parse_capability(name)).collect()
}

/// Docker's default device rules (moby's oci defaults + runc's allowed devices): nothing but
/// the nodes every container gets, mknod of any node (opening one is what is checked), and
/// the pseudo-terminals.
const DEFAULT_ALLOWED_DEVICES: &[(LinuxDeviceType, Option<i64>, Option<i64>, &str)] = &[
    (LinuxDeviceType::C, None, None, "m"),
    (LinuxDeviceType::B, None, None, "m"),
    (LinuxDeviceType::C, Some(1), Some(3), "rwm"), // null
    (LinuxDeviceType::C, Some(1), Some(5), "rwm"), // zero
    (LinuxDeviceType::C, Some(1), Some(7), "rwm"), // full
    (LinuxDeviceType::C, Some(1), Some(8), "rwm"), // random
    (LinuxDeviceType::C, Some(1), Some(9), "rwm"), // urandom
    (LinuxDeviceType::C, Some(5), Some(0), "rwm"), // tty
    (LinuxDeviceType::C, Some(5), Some(1), "rwm"), // console
    (LinuxDeviceType::C, Some(5), Some(2), "rwm"), // ptmx
    (LinuxDeviceType::C, Some(136), None, "rwm"),  // pts/*
];

/// The device nodes every container may use (runc's allowed devices), as rules to append to
/// an OCI bundle's own: runc's spec denies everything and relies on the runtime adding these.
pub fn default_device_rules() -> Vec<LinuxDeviceCgroup> {
    DEFAULT_ALLOWED_DEVICES
        .iter()
        .filter_map(|(typ, major, minor, access)| {
            device_rule(true, *typ, *major, *minor, access).ok()
        })
        .collect()
}

fn device_rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> Result<LinuxDeviceCgroup, SpecError> {
    let mut builder = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .typ(typ)
        .access(access);
    if let Some(major) = major {
        builder = builder.major(major);
    }
    if let Some(minor) = minor {
        builder = builder.minor(minor);
    }
    Ok(builder.build()?)
}

/// Deny all, then the defaults and `--device` nodes; `--privileged` allows every device.
fn device_rules(opts: &SpecOptions) -> Result<Vec<LinuxDeviceCgroup>, SpecError> {
    if opts.privileged {
        return Ok(vec![device_rule(
            true,
            LinuxDeviceType::A,
            None,
            None,
            "rwm",
        )?]);
    }
    let mut rules = vec![device_rule(false, LinuxDeviceType::A, None, None, "rwm")?];
    for (typ, major, minor, access) in DEFAULT_ALLOWED_DEVICES {
        rules.push(device_rule(true, *typ, *major, *minor, access)?);
    }
    for device in &opts.devices {
        let typ = if device.kind == 'b' {
            LinuxDeviceType::B
        } else {
            LinuxDeviceType::C
        };
        rules.push(device_rule(
            true,
            typ,
            Some(device.major),
            Some(device.minor),
            &device.cgroup_permissions,
        )?);
    }
    Ok(rules)
}

/// The node `--device` creates in the container.
fn container_device(device: &DeviceMapping) -> Result<LinuxDevice, SpecError> {
    let typ = if device.kind == 'b' {
        LinuxDeviceType::B
    } else {
        LinuxDeviceType::C
    };
    Ok(LinuxDeviceBuilder::default()
        .path(&device.path_in_container)
        .typ(typ)
        .major(device.major)
        .minor(device.minor)
        .file_mode(device.file_mode)
        .uid(device.uid)
        .gid(device.gid)
        .build()?)
}

fn resources(opts: &SpecOptions) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    let mut builder = LinuxResourcesBuilder::default().devices(device_rules(opts)?);
    if let Some(bytes) = opts.memory_bytes {
        if bytes <= 0 {
            return Err(SpecError::BadLimit {
                what: "memory limit",
                value: bytes,
            });
        }
        // Swap equal to the limit means no swap on top: the OOM killer acts at the limit.
        builder = builder.memory(
            LinuxMemoryBuilder::default()
                .limit(bytes)
                .swap(bytes)
                .build()?,
        );
    }
    if let Some(nano) = opts.nano_cpus {
        if nano <= 0 {
            return Err(SpecError::BadLimit {
                what: "cpu count",
                value: nano,
            });
        }
        let quota = (i128::from(nano) * i128::from(CPU_PERIOD_US) / 1_000_000_000).max(1000);
        builder = builder.cpu(
            LinuxCpuBuilder::default()
                .quota(i64::try_from(quota).unwrap_or(i64::MAX))
                .period(CPU_PERIOD_US)
                .build()?,
        );
    }
    if let Some(pids) = opts.pids_limit {
        if pids <= 0 {
            return Err(SpecError::BadLimit {
                what: "pids limit",
                value: pids,
            });
        }
        builder = builder.pids(LinuxPidsBuilder::default().limit(pids).build()?);
    }
    Ok(builder.build()?)
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// runc's default mounts, then the user's, so a user mount may cover a default one.
fn all_mounts(opts: &SpecOptions) -> Result<Vec<Mount>, SpecError> {
    let mut mounts = default_mounts(opts.privileged)?;
    for user in &opts.mounts {
        let access = if user.read_only { "ro" } else { "rw" };
        mounts.push(match user.kind {
            MountKind::Bind | MountKind::Volume => {
                mount(&user.destination, "bind", &user.source, &["rbind", access])?
            }
            MountKind::Tmpfs => mount(
                &user.destination,
                "tmpfs",
                "tmpfs",
                &["nosuid", "nodev", "mode=1777", access],
            )?,
        });
    }
    Ok(mounts)
}

/// The mounts every container gets (runc's defaults). /sys is read-only unless privileged.
fn default_mounts(privileged: bool) -> Result<Vec<Mount>, SpecError> {
    let sys_mode = if privileged { "rw" } else { "ro" };
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_mode],
        )?,
    ])
}

/// Syscalls Docker's default profile allows for every container.
const ALLOWED_SYSCALLS: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "arch_prctl",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "clock_adjtime",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "futex",
    "futex_requeue",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresuid",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "modify_ldt",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "process_vm_readv",
    "process_vm_writev",
    "pselect6",
    "ptrace",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "sendfile",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "socketpair",
    "splice",
    "stat",
    "statfs",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "times",
    "tkill",
    "truncate",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "write",
    "writev",
];

/// Syscalls Docker's profile allows only when the container holds a capability.
const CAPABILITY_SYSCALLS: &[(&str, &[&str])] = &[
    (
        "SYS_ADMIN",
        &[
            "bpf",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "name_to_handle_at",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount2",
            "unshare",
        ],
    ),
    ("SYS_BOOT", &["reboot"]),
    ("DAC_READ_SEARCH", &["open_by_handle_at"]),
    ("SYS_CHROOT", &["chroot"]),
    (
        "SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("SYS_PACCT", &["acct"]),
    ("SYS_PTRACE", &["kcmp", "pidfd_getfd", "process_madvise"]),
    ("SYS_RAWIO", &["iopl", "ioperm"]),
    ("SYS_TIME", &["settimeofday", "clock_settime"]),
    ("SYS_TTY_CONFIG", &["vhangup"]),
    (
        "SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("SYSLOG", &["syslog"]),
    ("BPF", &["bpf"]),
    ("PERFMON", &["perf_event_open"]),
];

/// Docker's default seccomp profile in OCI form: an allowlist with EPERM for everything else,
/// clone allowed only without namespace flags (unless CAP_SYS_ADMIN), and clone3 answered with
/// ENOSYS so that libcs fall back to the inspectable clone.
/// AF_VSOCK, from linux/socket.h.
const AF_VSOCK: u64 = 40;

/// personality(2) values Docker's profile allows: PER_LINUX, PER_LINUX32, UNAME26,
/// UNAME26|PER_LINUX32 and the 0xffffffff query.
const ALLOWED_PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// `name` allowed when its first argument compares to `value` with `op`.
fn allow_when(name: &str, value: u64, op: LinuxSeccompOperator) -> Result<LinuxSyscall, SpecError> {
    Ok(LinuxSyscallBuilder::default()
        .names(vec![name.to_string()])
        .action(LinuxSeccompAction::ScmpActAllow)
        .args(vec![LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(value)
            .op(op)
            .build()?])
        .build()?)
}

pub fn default_seccomp(capabilities: &[Capability]) -> Result<LinuxSeccomp, SpecError> {
    let has = |name: &str| capabilities.iter().any(|c| c.to_string() == name);
    let mut allowed: BTreeSet<&str> = ALLOWED_SYSCALLS.iter().copied().collect();
    for (cap, names) in CAPABILITY_SYSCALLS {
        if has(cap) {
            allowed.extend(names.iter().copied());
        }
    }
    let sys_admin = has("SYS_ADMIN");
    if sys_admin {
        allowed.insert("clone");
        allowed.insert("clone3");
    }
    let mut syscalls: Vec<LinuxSyscall> = vec![LinuxSyscallBuilder::default()
        .names(allowed.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(LinuxSeccompAction::ScmpActAllow)
        .build()?];
    // Docker: socket for every family but AF_VSOCK (the host's vsock services), and
    // personality only for the values a container legitimately sets or queries.
    syscalls.push(allow_when(
        "socket",
        AF_VSOCK,
        LinuxSeccompOperator::ScmpCmpNe,
    )?);
    for persona in ALLOWED_PERSONALITIES {
        syscalls.push(allow_when(
            "personality",
            persona,
            LinuxSeccompOperator::ScmpCmpEq,
        )?);
    }
    if !sys_admin {
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone".to_string()])
                .action(LinuxSeccompAction::ScmpActAllow)
                .args(vec![LinuxSeccompArgBuilder::default()
                    .index(0usize)
                    .value(CLONE_NAMESPACE_FLAGS)
                    .value_two(0u64)
                    .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                    .build()?])
                .build()?,
        );
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone3".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(libc::ENOSYS as u32)
                .build()?,
        );
    }
    Ok(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(libc::EPERM as u32)
        .syscalls(syscalls)
        .build()?)
}

#[cfg(test)]
mod tests {
    use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};

    use super::*;

    #[test]
    fn label_filters_match_a_key_or_a_key_and_value() {
        let labels: std::collections::BTreeMap<String, String> = [
            ("role".to_string(), "web".to_string()),
            ("empty".to_string(), String::new()),
        ]
        .into_iter()
        .collect();
        assert!(labels_match(&labels, "role"));
        assert!(labels_match(&labels, "role=web"));
        assert!(!labels_match(&labels, "role=db"));
        assert!(labels_match(&labels, "empty="));
        assert!(!labels_match(&labels, "other"));
    }

    fn image(
        entrypoint: &[&str],
        cmd: &[&str],
        env: &[&str],
        workdir: &str,
        user: &str,
    ) -> ImageConfiguration {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let mut config = ConfigBuilder::default().env(v(env)).cmd(v(cmd));
        if !entrypoint.is_empty() {
            config = config.entrypoint(v(entrypoint));
        }
        if !workdir.is_empty() {
            config = config.working_dir(workdir);
        }
        if !user.is_empty() {
            config = config.user(user);
        }
        ImageConfigurationBuilder::default()
            .config(config.build().unwrap())
            .build()
            .unwrap()
    }

    fn busybox() -> ImageConfiguration {
        image(&[], &["sh"], &["PATH=/bin:/usr/bin"], "", "")
    }

    fn opts() -> SpecOptions {
        SpecOptions::default()
    }

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn args_of(spec: &Spec) -> Vec<String> {
        spec.process().as_ref().unwrap().args().clone().unwrap()
    }

    fn caps_of(spec: &Spec) -> BTreeSet<String> {
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        caps.bounding()
            .clone()
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect()
    }

    #[test]
    fn args_use_image_cmd_or_given_cmd_after_entrypoint() {
        let spec = build_spec(&busybox(), &opts(), ID).unwrap();
        assert_eq!(args_of(&spec), ["sh"]);
        let o = SpecOptions {
            cmd: vec!["echo".into(), "hi".into()],
            ..opts()
        };
        assert_eq!(
            args_of(&build_spec(&busybox(), &o, ID).unwrap()),
            ["echo", "hi"]
        );

        let img = image(&["/entry", "-x"], &["default"], &[], "", "");
        assert_eq!(
            args_of(&build_spec(&img, &opts(), ID).unwrap()),
            ["/entry", "-x", "default"]
        );
        let o = SpecOptions {
            cmd: vec!["mine".into()],
            ..opts()
        };
        assert_eq!(
            args_of(&build_spec(&img, &o, ID).unwrap()),
            ["/entry", "-x", "mine"]
        );
        let o = SpecOptions {
            entrypoint: Some("".into()),
            cmd: vec!["ls".into()],
            ..opts()
        };
        assert_eq!(args_of(&build_spec(&img, &o, ID).unwrap()), ["ls"]);
        let o = SpecOptions {
            entrypoint: Some("/other".into()),
            ..opts()
        };
        assert_eq!(args_of(&build_spec(&img, &o, ID).unwrap()), ["/other"]);
    }

    #[test]
    fn no_command_is_an_error() {
        let img = image(&[], &[], &[], "", "");
        assert!(matches!(
            build_spec(&img, &opts(), ID),
            Err(SpecError::NoCommand)
        ));
    }

    #[test]
    fn env_has_default_path_and_later_entries_win() {
        let env = environment(
            vec!["FOO=image".into(), "BAR=1".into()],
            &[
                "FOO=flag".into(),
                "FROM_HOST".into(),
                "UNSET".into(),
                "NEW=x=y".into(),
            ],
            |k| (k == "FROM_HOST").then(|| "hostval".to_string()),
        )
        .unwrap();
        assert_eq!(
            env,
            [
                DEFAULT_PATH,
                "FOO=flag",
                "BAR=1",
                "FROM_HOST=hostval",
                "NEW=x=y"
            ]
        );
        let env = environment(vec!["PATH=/bin".into()], &[], |_| None).unwrap();
        assert_eq!(env, ["PATH=/bin"]);
        assert!(matches!(
            environment(vec![], &["=x".into()], |_| None),
            Err(SpecError::BadEnv(_))
        ));
    }

    #[test]
    fn cwd_hostname_and_user() {
        let spec = build_spec(&busybox(), &opts(), ID).unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.cwd(), &PathBuf::from("/"));
        assert_eq!(spec.hostname().as_deref(), Some("0123456789ab"));
        assert_eq!(process.user().username(), &None);
        assert_eq!(process.user().uid(), 0);

        let img = image(&[], &["sh"], &[], "/srv", "nobody");
        let spec = build_spec(&img, &opts(), ID).unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.cwd(), &PathBuf::from("/srv"));
        assert_eq!(process.user().username().as_deref(), Some("nobody"));

        let o = SpecOptions {
            workdir: Some("/tmp".into()),
            user: Some("1000:50".into()),
            hostname: Some("box".into()),
            ..opts()
        };
        let spec = build_spec(&img, &o, ID).unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.cwd(), &PathBuf::from("/tmp"));
        assert_eq!((process.user().uid(), process.user().gid()), (1000, 50));
        assert_eq!(spec.hostname().as_deref(), Some("box"));

        let o = SpecOptions {
            workdir: Some("relative".into()),
            ..opts()
        };
        assert!(matches!(
            build_spec(&img, &o, ID),
            Err(SpecError::BadWorkdir(_))
        ));
    }

    #[test]
    fn namespaces_follow_network_mode() {
        let kinds = |spec: &Spec| {
            spec.linux()
                .as_ref()
                .unwrap()
                .namespaces()
                .clone()
                .unwrap()
                .iter()
                .map(|n| n.typ())
                .collect::<Vec<_>>()
        };
        let spec = build_spec(&busybox(), &opts(), ID).unwrap();
        let ns = kinds(&spec);
        for t in [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Cgroup,
        ] {
            assert!(ns.contains(&t), "{t:?} missing");
        }
        let o = SpecOptions {
            network: NetworkMode::Host,
            ..opts()
        };
        assert!(
            !kinds(&build_spec(&busybox(), &o, ID).unwrap()).contains(&LinuxNamespaceType::Network)
        );
    }

    /// v1 syntax of a spec's device rules, for comparing with Docker's list.
    fn device_rules_of(spec: &Spec) -> Vec<String> {
        let rules = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        let number = |n: Option<i64>| n.map_or("*".to_string(), |n| n.to_string());
        rules
            .devices()
            .iter()
            .flatten()
            .map(|r| {
                format!(
                    "{} {:?} {}:{} {}",
                    if r.allow() { "allow" } else { "deny" },
                    r.typ().unwrap(),
                    number(r.major()),
                    number(r.minor()),
                    r.access().as_deref().unwrap()
                )
                .to_lowercase()
            })
            .collect()
    }

    #[test]
    fn device_rules_deny_all_but_dockers_defaults() {
        let spec = build_spec(&busybox(), &opts(), ID).unwrap();
        assert_eq!(
            device_rules_of(&spec),
            [
                "deny a *:* rwm",
                "allow c *:* m",
                "allow b *:* m",
                "allow c 1:3 rwm",
                "allow c 1:5 rwm",
                "allow c 1:7 rwm",
                "allow c 1:8 rwm",
                "allow c 1:9 rwm",
                "allow c 5:0 rwm",
                "allow c 5:1 rwm",
                "allow c 5:2 rwm",
                "allow c 136:* rwm",
            ]
        );
        let privileged = SpecOptions {
            privileged: true,
            ..opts()
        };
        let spec = build_spec(&busybox(), &privileged, ID).unwrap();
        assert_eq!(device_rules_of(&spec), ["allow a *:* rwm"]);

        let device = DeviceMapping::from_flag("/dev/null:/dev/mynull:rw").unwrap();
        assert_eq!((device.kind, device.major, device.minor), ('c', 1, 3));
        assert_eq!(device.path_in_container, "/dev/mynull");
        let with_device = SpecOptions {
            devices: vec![device],
            ..opts()
        };
        let spec = build_spec(&busybox(), &with_device, ID).unwrap();
        assert_eq!(device_rules_of(&spec).last().unwrap(), "allow c 1:3 rw");
        let node = &spec.linux().as_ref().unwrap().devices().as_ref().unwrap()[0];
        assert_eq!(node.path(), std::path::Path::new("/dev/mynull"));
        assert_eq!((node.major(), node.minor()), (1, 3));

        assert_eq!(
            DeviceMapping::from_flag("/dev/null:rw")
                .unwrap()
                .path_in_container,
            "/dev/null"
        );
        for bad in [
            "/etc/hostname",
            "dev/null",
            "/dev/null:/x:rwx",
            "/dev/null:/a:rw:extra",
        ] {
            assert!(
                matches!(DeviceMapping::from_flag(bad), Err(SpecError::BadDevice(..))),
                "{bad}"
            );
        }
    }

    #[test]
    fn capabilities_default_add_drop_all_privileged() {
        let spec = build_spec(&busybox(), &opts(), ID).unwrap();
        let expected: BTreeSet<String> =
            DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
        assert_eq!(caps_of(&spec), expected);

        let o = SpecOptions {
            cap_add: vec!["net_admin".into(), "CAP_SYS_PTRACE".into()],
            cap_drop: vec!["CAP_CHOWN".into(), "mknod".into()],
            ..opts()
        };
        let caps = caps_of(&build_spec(&busybox(), &o, ID).unwrap());
        assert!(caps.contains("NET_ADMIN") && caps.contains("SYS_PTRACE"));
        assert!(!caps.contains("CHOWN") && !caps.contains("MKNOD"));
        assert_eq!(caps.len(), 14);

        let o = SpecOptions {
            cap_drop: vec!["ALL".into()],
            cap_add: vec!["KILL".into()],
            ..opts()
        };
        let caps = caps_of(&build_spec(&busybox(), &o, ID).unwrap());
        assert!(
            caps.is_empty(),
            "drop ALL applies after add, as Docker: {caps:?}"
        );

        let o = SpecOptions {
            cap_add: vec!["NOT_A_CAP".into()],
            ..opts()
        };
        assert!(matches!(
            build_spec(&busybox(), &o, ID),
            Err(SpecError::UnknownCapability(_))
        ));

        let o = SpecOptions {
            privileged: true,
            ..opts()
        };
        let spec = build_spec(&busybox(), &o, ID).unwrap();
        let caps = caps_of(&spec);
        assert!(caps.contains("SYS_ADMIN") && caps.contains("SYS_MODULE"));
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none());
        assert!(linux.masked_paths().is_none() && linux.readonly_paths().is_none());
    }

    #[test]
    fn masked_readonly_paths_and_rlimits() {
        let spec = build_spec(&busybox(), &opts(), ID).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        let masked = linux.masked_paths().clone().unwrap();
        for p in [
            "/proc/kcore",
            "/proc/keys",
            "/proc/timer_list",
            "/proc/sched_debug",
            "/proc/acpi",
            "/proc/scsi",
            "/sys/firmware",
        ] {
            assert!(masked.iter().any(|m| m == p), "{p} not masked");
        }
        let ro = linux.readonly_paths().clone().unwrap();
        for p in [
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
        ] {
            assert!(ro.iter().any(|m| m == p), "{p} not read-only");
        }
        let rlimits = spec.process().as_ref().unwrap().rlimits().clone().unwrap();
        assert_eq!(rlimits[0].typ(), PosixRlimitType::RlimitNofile);
        assert_eq!(
            (rlimits[0].soft(), rlimits[0].hard()),
            (NOFILE_LIMIT, NOFILE_LIMIT)
        );
        let sys = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == &PathBuf::from("/sys"))
            .unwrap();
        assert!(sys.options().as_ref().unwrap().contains(&"ro".to_string()));
    }

    #[test]
    fn seccomp_blocks_dangerous_syscalls_and_can_be_dropped() {
        let spec = build_spec(&busybox(), &opts(), ID).unwrap();
        let seccomp = spec.linux().as_ref().unwrap().seccomp().clone().unwrap();
        assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(seccomp.default_errno_ret(), Some(libc::EPERM as u32));
        let syscalls = seccomp.syscalls().clone().unwrap();
        let allowed: Vec<&String> = syscalls
            .iter()
            .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none())
            .flat_map(|s| s.names())
            .collect();
        for blocked in [
            "mount",
            "umount2",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "perf_event_open",
            "unshare",
            "setns",
            "pivot_root",
            "swapon",
            "swapoff",
            "reboot",
            "acct",
            "open_by_handle_at",
            "userfaultfd",
            "clone",
            "clone3",
        ] {
            assert!(
                !allowed.iter().any(|a| *a == blocked),
                "{blocked} allowed unconditionally"
            );
        }
        for needed in [
            "read",
            "write",
            "execve",
            "exit_group",
            "wait4",
            "openat",
            "chroot",
        ] {
            assert!(allowed.iter().any(|a| *a == needed), "{needed} not allowed");
        }
        let clone = syscalls
            .iter()
            .find(|s| s.names() == &["clone".to_string()])
            .unwrap();
        let arg = clone.args().clone().unwrap()[0];
        assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(
            (arg.value(), arg.value_two()),
            (CLONE_NAMESPACE_FLAGS, Some(0))
        );

        let o = SpecOptions {
            seccomp_unconfined: true,
            ..opts()
        };
        assert!(build_spec(&busybox(), &o, ID)
            .unwrap()
            .linux()
            .as_ref()
            .unwrap()
            .seccomp()
            .is_none());

        let o = SpecOptions {
            cap_add: vec!["SYS_ADMIN".into()],
            ..opts()
        };
        let seccomp = build_spec(&busybox(), &o, ID)
            .unwrap()
            .linux()
            .as_ref()
            .unwrap()
            .seccomp()
            .clone()
            .unwrap();
        let names: Vec<String> = seccomp.syscalls().clone().unwrap()[0].names().clone();
        assert!(names.contains(&"mount".to_string()) && names.contains(&"clone".to_string()));
    }

    #[test]
    fn resources_and_flags() {
        let o = SpecOptions {
            memory_bytes: Some(64 << 20),
            nano_cpus: Some(1_500_000_000),
            pids_limit: Some(20),
            read_only: true,
            tty: true,
            interactive: true,
            no_new_privileges: true,
            ..opts()
        };
        let spec = build_spec(&busybox(), &o, ID).unwrap();
        let res = spec.linux().as_ref().unwrap().resources().clone().unwrap();
        let mem = res.memory().unwrap();
        assert_eq!((mem.limit(), mem.swap()), (Some(64 << 20), Some(64 << 20)));
        let cpu = res.cpu().clone().unwrap();
        assert_eq!((cpu.quota(), cpu.period()), (Some(150_000), Some(100_000)));
        assert_eq!(res.pids().unwrap().limit(), 20);
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.terminal(), Some(true));
        assert_eq!(process.no_new_privileges(), Some(true));
        assert_eq!(
            spec.annotations().as_ref().unwrap()[ANNOTATION_INTERACTIVE],
            "true"
        );
        assert_eq!(
            spec.linux().as_ref().unwrap().cgroups_path().as_deref(),
            Some(std::path::Path::new(&format!("husk/{ID}")))
        );

        let o = SpecOptions {
            memory_bytes: Some(0),
            ..opts()
        };
        assert!(matches!(
            build_spec(&busybox(), &o, ID),
            Err(SpecError::BadLimit { .. })
        ));
    }

    #[test]
    fn spec_round_trips_through_json() {
        let spec = build_spec(&busybox(), &opts(), ID).unwrap();
        if std::env::var_os("HUSK_PRINT_SPEC").is_some() {
            println!("{}", serde_json::to_string_pretty(&spec).unwrap());
        }
        let json = serde_json::to_string(&spec).unwrap();
        let back: Spec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
    }
}
