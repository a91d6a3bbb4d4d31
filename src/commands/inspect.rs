//! `husk inspect` / `husk container inspect`: Docker's shape of a container, built from its
//! record and its OCI runtime spec. The generic `inspect` falls back to images, as Docker's does.

use std::path::Path;

use anyhow::Result;
use clap::Args;
use husk::container::spec::MountKind;
use husk::container::{Containers, Record, Status};
use husk::image::Store;
use serde_json::{json, Value};

use super::image::inspect_value;
use husk::runtime::container::load_spec;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format the output using a Go-template subset: {{.State.Status}}, {{json .Config}}.
    #[arg(short, long)]
    pub format: Option<String>,
    #[arg(required = true, value_name = "NAME|ID")]
    pub objects: Vec<String>,
}

fn time_or_zero(at: Option<chrono::DateTime<chrono::Utc>>) -> Value {
    json!(at
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into()))
}

/// HostConfig.Binds as Docker has it: "source:destination[:ro]" for -v mounts.
fn binds(record: &Record) -> Value {
    let binds: Vec<String> = record
        .options
        .mounts
        .iter()
        .filter(|m| m.kind != MountKind::Tmpfs)
        .map(|m| {
            let suffix = if m.read_only { ":ro" } else { "" };
            format!("{}:{}{suffix}", m.name, m.destination)
        })
        .collect();
    if binds.is_empty() {
        Value::Null
    } else {
        json!(binds)
    }
}

/// HostConfig.PortBindings: what `-p`/`-P` asked for ("" host port: any free one).
fn port_bindings(record: &Record) -> Value {
    let mut bindings = serde_json::Map::new();
    for port in &record.options.publish {
        let entry = bindings
            .entry(format!("{}/{}", port.container_port, port.protocol))
            .or_insert_with(|| json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(json!({
                "HostIp": port.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                "HostPort": if port.host_port == 0 { String::new() } else { port.host_port.to_string() },
            }));
        }
    }
    Value::Object(bindings)
}

/// NetworkSettings as Docker fills it: the endpoints of a running container (addresses are
/// released when it stops), the ports it published, and the top-level address fields only
/// for the default bridge.
fn network_settings(root: &Path, record: &Record) -> Value {
    let endpoints = husk::network::endpoints_of(root, &record.id);
    let mut ports = serde_json::Map::new();
    let mut networks = serde_json::Map::new();
    let mut top = json!({"IPAddress": "", "IPPrefixLen": 0, "Gateway": "", "MacAddress": ""});
    for (network, endpoint) in &endpoints {
        for port in &endpoint.published {
            let entry = ports
                .entry(format!("{}/{}", port.container_port, port.protocol))
                .or_insert_with(|| json!([]));
            if let Some(list) = entry.as_array_mut() {
                list.push(json!({
                    "HostIp": port.host_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED).to_string(),
                    "HostPort": port.host_port.to_string(),
                }));
            }
        }
        let fields = json!({
            "IPAddress": endpoint.ip.to_string(),
            "IPPrefixLen": network.subnet.prefix,
            "Gateway": network.gateway.to_string(),
            "MacAddress": endpoint.mac,
        });
        if network.name == husk::network::DEFAULT_NETWORK {
            top = fields.clone();
        }
        let mut entry = json!({
            "NetworkID": network.id,
            "Aliases": if network.resolves_names() {
                let mut aliases = endpoint.aliases.clone();
                aliases.push(record.short_id().to_string());
                json!(aliases)
            } else {
                Value::Null
            },
        });
        if let (Some(entry), Some(fields)) = (entry.as_object_mut(), fields.as_object()) {
            entry.extend(fields.clone());
        }
        networks.insert(network.name.clone(), entry);
    }
    if endpoints.is_empty() {
        if let husk::container::spec::NetworkMode::Network(name) = &record.options.network {
            networks.insert(
                name.clone(),
                json!({"IPAddress": "", "IPPrefixLen": 0, "Gateway": "", "MacAddress": ""}),
            );
        }
    }
    let mut settings = json!({"Ports": ports, "Networks": networks});
    if let (Some(settings), Some(top)) = (settings.as_object_mut(), top.as_object()) {
        settings.extend(top.clone());
    }
    settings
}

/// Mounts as Docker lists them.
fn mounts(record: &Record) -> Value {
    json!(record
        .options
        .mounts
        .iter()
        .map(|m| {
            let mut mount = json!({
                "Type": match m.kind {
                    MountKind::Bind => "bind",
                    MountKind::Volume => "volume",
                    MountKind::Tmpfs => "tmpfs",
                },
                "Source": m.source,
                "Destination": m.destination,
                "Mode": if m.read_only { "ro" } else { "" },
                "RW": !m.read_only,
            });
            if m.kind == MountKind::Volume {
                mount["Name"] = json!(m.name);
                mount["Driver"] = json!("local");
            }
            mount
        })
        .collect::<Vec<_>>())
}

pub fn container_value(root: &Path, store: &Containers, record: &Record) -> Value {
    let status = record.effective_status();
    let spec = load_spec(store, &record.id).ok();
    let process = spec.as_ref().and_then(|s| s.process().clone());
    let options = &record.options;
    let (path, args) = match record.command.split_first() {
        Some((path, args)) => (path.clone(), args.to_vec()),
        None => (String::new(), Vec::new()),
    };
    let entrypoint = options
        .entrypoint
        .as_ref()
        .map(|e| json!([e]))
        .unwrap_or(Value::Null);
    json!({
        "Id": record.id,
        "Created": record.created.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "Path": path,
        "Args": args,
        "State": {
            "Status": husk::runtime::container::pause::state_name(record),
            "Running": status == Status::Running,
            "Paused": husk::runtime::container::pause::is_paused(record),
            "Restarting": false,
            "OOMKilled": record.state.oom_killed,
            "Dead": status == Status::Dead,
            "Pid": if status == Status::Running { record.state.pid.unwrap_or(0) } else { 0 },
            "ExitCode": record.state.exit_code.unwrap_or(0),
            "Error": record.state.error.clone().unwrap_or_default(),
            "StartedAt": time_or_zero(record.state.started_at),
            "FinishedAt": time_or_zero(record.state.finished_at),
        },
        "Image": record.image_id,
        "Name": format!("/{}", record.name),
        "RestartCount": record.restart_count,
        "Driver": match record.isolation {
            husk::container::Isolation::Process => "overlay",
            husk::container::Isolation::Vm => "vm-disk",
        },
        "Platform": "linux",
        "HostConfig": {
            "Isolation": record.isolation.to_string(),
            // Both isolations write Docker's json-file log (container.log).
            "LogConfig": {"Type": "json-file", "Config": {}},
            "Memory": options.memory_bytes.unwrap_or(0),
            "NanoCpus": options.nano_cpus.unwrap_or(0),
            "PidsLimit": options.pids_limit,
            "Binds": binds(record),
            "RestartPolicy": {
                "Name": record.restart.name(),
                "MaximumRetryCount": match record.restart {
                    husk::container::RestartPolicy::OnFailure { maximum_retry_count } => maximum_retry_count,
                    _ => 0,
                },
            },
            "AutoRemove": record.auto_remove,
            "NetworkMode": options.network.name(),
            "PortBindings": port_bindings(record),
            "Privileged": options.privileged,
            "Devices": options
                .devices
                .iter()
                .map(|d| json!({
                    "PathOnHost": d.path_on_host,
                    "PathInContainer": d.path_in_container,
                    "CgroupPermissions": d.cgroup_permissions,
                }))
                .collect::<Vec<_>>(),
            "ReadonlyRootfs": options.read_only,
            "CapAdd": options.cap_add,
            "CapDrop": options.cap_drop,
        },
        "Mounts": mounts(record),
        "NetworkSettings": network_settings(root, record),
        "Cost": record.cost,
        "Config": {
            "Hostname": spec.as_ref().and_then(|s| s.hostname().clone()).unwrap_or_default(),
            "User": options.user.clone().unwrap_or_default(),
            "Tty": options.tty,
            "OpenStdin": options.interactive,
            "StdinOnce": options.stdin_once,
            "Labels": options.labels,
            "Env": process.as_ref().and_then(|p| p.env().clone()).unwrap_or_default(),
            "Cmd": if options.cmd.is_empty() { Value::Null } else { json!(options.cmd) },
            "Entrypoint": entrypoint,
            "Image": record.image,
            "WorkingDir": process.as_ref().map(|p| p.cwd().display().to_string()).unwrap_or_default(),
        },
    })
}

pub fn inspect(root: &Path, args: InspectArgs, containers_only: bool) -> Result<i32> {
    let containers = Containers::open(root)?;
    let images = Store::open(root)?;
    let mut values = Vec::new();
    let mut failed = false;
    for key in &args.objects {
        match containers.find(key) {
            Ok(record) => values.push(container_value(root, &containers, &record)),
            Err(err) if containers_only => {
                eprintln!("Error: {err}");
                failed = true;
            }
            Err(_) => match images.lookup(key) {
                Ok(image) => values.push(inspect_value(&images, &image)?),
                Err(_) => {
                    eprintln!("Error: No such object: {key}");
                    failed = true;
                }
            },
        }
    }
    super::print_inspected(args.format.as_deref(), &values)?;
    Ok(i32::from(failed))
}
