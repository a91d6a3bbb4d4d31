//! `husk inspect` / `husk container inspect`: Docker's shape of a container, built from its
//! record and its OCI runtime spec. The generic `inspect` falls back to images, as Docker's does.

use std::path::Path;

use anyhow::Result;
use clap::Args;
use husk::container::spec::MountKind;
use husk::container::{Containers, Record, Status};
use husk::image::Store;
use serde_json::{json, Value};

use super::image::{inspect_value, render_template};
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

pub fn container_value(store: &Containers, record: &Record) -> Value {
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
            "Status": status.to_string(),
            "Running": status == Status::Running,
            "Paused": false,
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
            "NetworkMode": match options.network {
                husk::container::spec::NetworkMode::None => "none",
                husk::container::spec::NetworkMode::Host => "host",
            },
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
        "Cost": record.cost,
        "Config": {
            "Hostname": spec.as_ref().and_then(|s| s.hostname().clone()).unwrap_or_default(),
            "User": options.user.clone().unwrap_or_default(),
            "Tty": options.tty,
            "OpenStdin": options.interactive,
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
            Ok(record) => values.push(container_value(&containers, &record)),
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
    match &args.format {
        Some(format) => {
            for value in &values {
                println!("{}", render_template(format, value)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&values)?),
    }
    Ok(i32::from(failed))
}
