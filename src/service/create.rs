//! `POST /containers/create`: Docker's Config + HostConfig as the CLI's own CreateArgs, so
//! that a container made through the API is checked and built exactly as `husk create` makes
//! it (one copy of the validation). Fields husk cannot honour are refused, one line each;
//! fields the docker CLI always sends with their zero value pass.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::ServiceError;
use crate::commands::run::CreateArgs;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Body {
    image: String,
    cmd: Option<Vec<String>>,
    entrypoint: Option<Value>,
    env: Option<Vec<String>>,
    working_dir: String,
    user: String,
    hostname: String,
    tty: bool,
    open_stdin: bool,
    stdin_once: bool,
    healthcheck: Option<Value>,
    labels: Option<BTreeMap<String, String>>,
    host_config: HostConfig,
    networking_config: Option<NetworkingConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct NetworkingConfig {
    endpoints_config: Option<BTreeMap<String, super::networks::EndpointConfig>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct HostConfig {
    binds: Option<Vec<String>>,
    mounts: Option<Vec<Mount>>,
    tmpfs: Option<BTreeMap<String, String>>,
    memory: i64,
    nano_cpus: i64,
    pids_limit: Option<i64>,
    cap_add: Option<Vec<String>>,
    cap_drop: Option<Vec<String>>,
    privileged: bool,
    readonly_rootfs: bool,
    security_opt: Option<Vec<String>>,
    auto_remove: bool,
    restart_policy: Option<RestartPolicy>,
    isolation: String,
    network_mode: String,
    port_bindings: Option<BTreeMap<String, Option<Vec<PortBinding>>>>,
    publish_all_ports: bool,
    dns: Option<Vec<String>>,
    extra_hosts: Option<Vec<String>>,
    sysctls: Option<BTreeMap<String, String>>,
    devices: Option<Vec<Device>>,
    init: Option<bool>,
    cpu_shares: i64,
    cpuset_cpus: String,
    volumes_from: Option<Vec<String>>,
    links: Option<Vec<String>>,
    pid_mode: String,
    userns_mode: String,
    runtime: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Mount {
    #[serde(rename = "Type")]
    kind: String,
    source: String,
    target: String,
    read_only: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct RestartPolicy {
    name: String,
    maximum_retry_count: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct PortBinding {
    host_ip: String,
    host_port: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Device {
    path_on_host: String,
    path_in_container: String,
    cgroup_permissions: String,
}

/// Env entries of a request must be K=V: the CLI's `-e K` takes K from husk's own
/// environment, which through the API would be the service's, not the client's.
pub fn check_env(env: &[String]) -> Result<(), ServiceError> {
    match env.iter().find(|e| !e.contains('=')) {
        Some(entry) => Err(ServiceError::BadRequest(format!(
            "invalid environment entry {entry:?}: give K=V"
        ))),
        None => Ok(()),
    }
}

fn refuse(field: &str) -> ServiceError {
    ServiceError::BadRequest(format!("{field} is not supported by husk"))
}

/// The create request as `husk create`'s flags.
pub fn args(name: Option<String>, body: &[u8]) -> Result<CreateArgs, ServiceError> {
    let body: Body = serde_json::from_slice(body)
        .map_err(|e| ServiceError::BadRequest(format!("invalid JSON in the create body: {e}")))?;
    let host = body.host_config;
    if body.image.is_empty() {
        return Err(ServiceError::BadRequest("Config.Image is required".into()));
    }
    check_env(body.env.as_deref().unwrap_or_default())?;
    if body.healthcheck.as_ref().is_some_and(|h| !h.is_null()) {
        return Err(refuse("Healthcheck"));
    }
    if host.init == Some(true) {
        return Err(refuse("HostConfig.Init"));
    }
    if host.cpu_shares != 0 {
        return Err(refuse("HostConfig.CpuShares"));
    }
    if !host.cpuset_cpus.is_empty() {
        return Err(refuse("HostConfig.CpusetCpus"));
    }
    if host.volumes_from.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(refuse("HostConfig.VolumesFrom"));
    }
    if host.links.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(refuse("HostConfig.Links"));
    }
    if !host.pid_mode.is_empty() {
        return Err(refuse("HostConfig.PidMode"));
    }
    if !host.userns_mode.is_empty() {
        return Err(refuse("HostConfig.UsernsMode"));
    }
    if !matches!(host.runtime.as_str(), "" | "husk" | "runc") {
        return Err(refuse(&format!("HostConfig.Runtime {:?}", host.runtime)));
    }
    let isolation = match host.isolation.as_str() {
        "" | "default" => None,
        other => Some(
            husk::runtime::parse_isolation(other)
                .map_err(|e| ServiceError::BadRequest(format!("HostConfig.Isolation: {e}")))?,
        ),
    };
    // Docker's Entrypoint is a list; the CLI's flag one word, the rest going before Cmd.
    let mut command = Vec::new();
    let entrypoint = match body.entrypoint {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Array(items)) => {
            let words: Vec<String> = items
                .iter()
                .map(|v| v.as_str().map(String::from))
                .collect::<Option<_>>()
                .ok_or_else(|| ServiceError::BadRequest("Entrypoint: a list of strings".into()))?;
            match words.split_first() {
                None => Some(String::new()),
                Some((first, rest)) => {
                    command.extend(rest.iter().cloned());
                    Some(first.clone())
                }
            }
        }
        Some(_) => {
            return Err(ServiceError::BadRequest(
                "Entrypoint: a list of strings".into(),
            ))
        }
    };
    command.extend(body.cmd.unwrap_or_default());
    let restart = match host.restart_policy {
        None => "no".to_string(),
        Some(p) if p.name.is_empty() || p.name == "no" => "no".to_string(),
        Some(p) if p.name == "on-failure" && p.maximum_retry_count > 0 => {
            format!("on-failure:{}", p.maximum_retry_count)
        }
        Some(p) => p.name,
    };
    let network = match host.network_mode.as_str() {
        "" | "default" => husk::network::DEFAULT_NETWORK.to_string(),
        other => other.to_string(),
    };
    // The endpoint on that network (docker-compose names its aliases here); a container
    // joins one network at create, more with connect.
    let endpoints = body
        .networking_config
        .and_then(|n| n.endpoints_config)
        .unwrap_or_default();
    if endpoints.len() > 1
        || endpoints
            .keys()
            .any(|k| *k != network && *k != host.network_mode)
    {
        return Err(ServiceError::BadRequest(format!(
            "NetworkingConfig: husk creates a container on its NetworkMode network ({network}) only; connect it to others after"
        )));
    }
    let (mut ip, mut network_aliases) = (None, Vec::new());
    if let Some(endpoint) = endpoints.into_values().next() {
        if endpoint.links.as_ref().is_some_and(|l| !l.is_empty()) {
            return Err(refuse("NetworkingConfig Links"));
        }
        network_aliases = endpoint.aliases.unwrap_or_default();
        if let Some(ipam) = endpoint.ipam_config {
            if !ipam.ipv6_address.is_empty() {
                return Err(refuse("IPv6Address"));
            }
            if !ipam.ipv4_address.is_empty() {
                ip = Some(ipam.ipv4_address.parse().map_err(|_| {
                    ServiceError::BadRequest(format!("invalid IPv4Address {:?}", ipam.ipv4_address))
                })?);
            }
        }
    }
    let mut publish = Vec::new();
    for (port, bindings) in host.port_bindings.unwrap_or_default() {
        for binding in bindings.unwrap_or_default() {
            let host_part = match (binding.host_ip.as_str(), binding.host_port.as_str()) {
                ("", "") => String::new(),
                ("", p) => format!("{p}:"),
                (ip, p) => format!("{ip}:{p}:"),
            };
            publish.push(format!("{host_part}{port}"));
        }
    }
    let mounts = host
        .mounts
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            let mut spec = format!("type={},target={}", m.kind, m.target);
            if !m.source.is_empty() {
                spec.push_str(&format!(",source={}", m.source));
            }
            if m.read_only {
                spec.push_str(",readonly");
            }
            spec
        })
        .collect();
    let devices = host
        .devices
        .unwrap_or_default()
        .into_iter()
        .map(|d| {
            let mut spec = d.path_on_host;
            if !d.path_in_container.is_empty() {
                spec.push(':');
                spec.push_str(&d.path_in_container);
                if !d.cgroup_permissions.is_empty() {
                    spec.push(':');
                    spec.push_str(&d.cgroup_permissions);
                }
            }
            spec
        })
        .collect();
    let nonempty = |s: String| (!s.is_empty()).then_some(s);
    Ok(CreateArgs {
        isolation,
        name: name.filter(|n| !n.is_empty()),
        interactive: body.open_stdin,
        stdin_once: body.open_stdin && body.stdin_once,
        labels: body
            .labels
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        tty: body.tty,
        env: body.env.unwrap_or_default(),
        env_file: Vec::new(),
        workdir: nonempty(body.working_dir),
        user: nonempty(body.user),
        hostname: nonempty(body.hostname),
        entrypoint,
        read_only: host.readonly_rootfs,
        memory: (host.memory > 0).then(|| host.memory.to_string()),
        cpus: (host.nano_cpus > 0).then(|| format!("{}", host.nano_cpus as f64 / 1e9)),
        pids_limit: host.pids_limit.filter(|&n| n > 0),
        network,
        publish,
        publish_all: host.publish_all_ports,
        ip,
        network_aliases,
        add_hosts: host.extra_hosts.unwrap_or_default(),
        dns: host.dns.unwrap_or_default(),
        cap_add: host.cap_add.unwrap_or_default(),
        cap_drop: host.cap_drop.unwrap_or_default(),
        privileged: host.privileged,
        devices,
        sysctls: host
            .sysctls
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        security_opt: host.security_opt.unwrap_or_default(),
        rm: host.auto_remove,
        restart,
        volumes: host.binds.unwrap_or_default(),
        mounts,
        tmpfs: host.tmpfs.unwrap_or_default().into_keys().collect(),
        image: body.image,
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docker_clis_body_becomes_the_clis_flags() {
        let body = br#"{"Image":"busybox","Cmd":["echo","hi"],"Entrypoint":["/bin/sh","-c"],
            "Env":["A=1"],"Tty":false,"OpenStdin":false,"WorkingDir":"","Hostname":"",
            "HostConfig":{"Isolation":"vm","Binds":["/tmp:/data:ro"],"Memory":134217728,
              "NanoCpus":500000000,"AutoRemove":true,"NetworkMode":"none",
              "PortBindings":{},"RestartPolicy":{"Name":"no","MaximumRetryCount":0},
              "CpuShares":0,"CpusetCpus":"","UnknownField":7}}"#;
        let args = args(Some("web".into()), body).unwrap();
        assert_eq!(args.image, "busybox");
        assert_eq!(args.entrypoint.as_deref(), Some("/bin/sh"));
        assert_eq!(args.command, ["-c", "echo", "hi"]);
        assert_eq!(args.isolation, Some(husk::container::Isolation::Vm));
        assert_eq!(args.volumes, ["/tmp:/data:ro"]);
        assert_eq!(args.memory.as_deref(), Some("134217728"));
        assert_eq!(args.cpus.as_deref(), Some("0.5"));
        assert!(args.rm);
        assert_eq!(args.network, "none");
        assert_eq!(args.hostname, None);
        assert_eq!(args.name.as_deref(), Some("web"));
        assert!(!args.interactive && !args.stdin_once);
        // `docker run -i`: stdin open, and ending with the attached client's.
        let interactive =
            super::args(None, br#"{"Image":"b","OpenStdin":true,"StdinOnce":true}"#).unwrap();
        assert!(interactive.interactive && interactive.stdin_once);
    }

    #[test]
    fn what_husk_cannot_honour_is_refused_in_one_line() {
        for (body, field) in [
            (
                r#"{"Image":"b","HostConfig":{"CpuShares":512}}"#,
                "CpuShares",
            ),
            (
                r#"{"Image":"b","HostConfig":{"Isolation":"hyperv"}}"#,
                "Isolation",
            ),
            (r#"{"Image":"b","HostConfig":{"Init":true}}"#, "Init"),
            (
                r#"{"Image":"b","HostConfig":{"Memory":"lots"}}"#,
                "invalid JSON",
            ),
            (r#"{"Cmd":["x"]}"#, "Image"),
            ("[", "invalid JSON"),
            (r#"{"Image":"b","Env":["HOME"]}"#, "K=V"),
        ] {
            let err = args(None, body.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(field), "{body}: {err}");
            assert_eq!(err.lines().count(), 1);
        }
    }

    #[test]
    fn port_bindings_and_restart_policies_read_as_flags() {
        let body = br#"{"Image":"b","HostConfig":{"PortBindings":{"80/tcp":[{"HostIp":"","HostPort":"8080"}],
            "53/udp":[{"HostIp":"127.0.0.1","HostPort":"5353"}]},
            "RestartPolicy":{"Name":"on-failure","MaximumRetryCount":3}}}"#;
        let args = args(None, body).unwrap();
        assert_eq!(args.publish, ["127.0.0.1:5353:53/udp", "8080:80/tcp"]);
        assert_eq!(args.restart, "on-failure:3");
    }
}
