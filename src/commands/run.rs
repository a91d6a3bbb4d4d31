//! `husk run`, `husk create` and `husk start`: from an image and flags to a container record,
//! an OCI runtime spec (the container's config.json) and a sandbox of the chosen isolation.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use husk::container::{Containers, Isolation, NewContainer, Record};

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
    /// Security options: seccomp=unconfined, no-new-privileges[:true|false].
    #[arg(long)]
    pub security_opt: Vec<String>,
    /// Automatically remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Bind mount a volume (not yet supported: refused with a clear error).
    #[arg(short, long = "volume")]
    pub volumes: Vec<String>,
    /// Image to run.
    pub image: String,
    /// Command and arguments (default: the image's Cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run container in background and print container ID (not yet supported).
    #[arg(short, long)]
    pub detach: bool,
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
    let invalid = || anyhow::anyhow!("invalid argument {text:?} for \"-m, --memory\" flag: invalid size: '{text}'");
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
        .with_context(|| format!("invalid argument {text:?} for \"--cpus\" flag: not a positive number"))?;
    let host = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if cpus < 0.01 || cpus > host as f64 {
        bail!(
            "Range of CPUs is from 0.01 to {host}.00, as there are only {host} CPUs available"
        );
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
        assert!(parse_memory("abc").unwrap_err().to_string().contains("invalid size"));
        assert!(parse_memory("12x").is_err());
        assert!(parse_memory("1k").unwrap_err().to_string().contains("Minimum memory"));
    }

    #[test]
    fn cpus_are_bounded_by_the_host() {
        assert_eq!(parse_cpus("0.5").unwrap(), 500_000_000);
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("100000").unwrap_err().to_string().contains("Range of CPUs"));
        assert!(parse_cpus("x").is_err());
    }
}
