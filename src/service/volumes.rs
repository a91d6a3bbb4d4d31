//! The volume routes: create, list, inspect, remove, prune, on the store `husk volume` uses
//! (so both isolations mount what they list) and in `husk volume inspect`'s JSON.

use std::collections::{BTreeMap, HashMap};

use husk::container::volume::Volumes;
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{empty, json, Body, Service, ServiceError};
use crate::commands::volume::value;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: String,
    driver: String,
    driver_opts: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
}

fn store(service: &Service) -> Result<Volumes, ServiceError> {
    Ok(Volumes::open(&service.runtime.root)?)
}

/// `POST /volumes/create`: the local driver only, without options.
pub fn create(service: &Service, body: &[u8]) -> Result<Response<Body>, ServiceError> {
    let body: CreateBody = serde_json::from_slice(body)
        .map_err(|e| ServiceError::BadRequest(format!("invalid JSON in the volume body: {e}")))?;
    if !matches!(body.driver.as_str(), "" | "local") {
        return Err(ServiceError::BadRequest(format!(
            "volume driver {:?} is not supported by husk (only local)",
            body.driver
        )));
    }
    if body.driver_opts.as_ref().is_some_and(|o| !o.is_empty()) {
        return Err(ServiceError::BadRequest(
            "DriverOpts is not supported by husk".into(),
        ));
    }
    let name = (!body.name.is_empty()).then_some(body.name.as_str());
    let volume = store(service)?.create_labelled(name, body.labels.unwrap_or_default())?;
    Ok(json(StatusCode::CREATED, &value(&volume)))
}

/// `GET /volumes`, with Docker's filters name, label and dangling.
pub fn list(
    service: &Service,
    filters: &HashMap<String, Vec<String>>,
) -> Result<Response<Body>, ServiceError> {
    for key in filters.keys() {
        if !matches!(key.as_str(), "name" | "label" | "dangling") {
            return Err(ServiceError::BadRequest(format!(
                "invalid filter '{key}': husk's Engine API filters volumes by name, label and dangling"
            )));
        }
    }
    let volumes = store(service)?;
    let mut out = Vec::new();
    for volume in volumes.list()? {
        let keep = match filters.get("name") {
            Some(names) => names.iter().any(|n| volume.name.contains(n.as_str())),
            None => true,
        } && filters.get("label").is_none_or(|labels| {
            labels
                .iter()
                .all(|l| husk::container::spec::labels_match(&volume.labels, l))
        });
        let keep = keep
            && match filters.get("dangling").and_then(|d| d.first()) {
                None => true,
                Some(d) => {
                    let dangling = match d.as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        other => {
                            return Err(ServiceError::BadRequest(format!(
                                "invalid filter 'dangling={other}'"
                            )))
                        }
                    };
                    volumes.users(&volume.name)?.is_empty() == dangling
                }
            };
        if keep {
            out.push(value(&volume));
        }
    }
    Ok(json(
        StatusCode::OK,
        &json!({"Volumes": out, "Warnings": Value::Null}),
    ))
}

/// `GET /volumes/{name}`.
pub fn inspect(service: &Service, name: &str) -> Result<Response<Body>, ServiceError> {
    Ok(json(StatusCode::OK, &value(&store(service)?.get(name)?)))
}

/// `DELETE /volumes/{name}?force`: a volume a container uses is a conflict without force.
pub fn remove(service: &Service, name: &str, force: bool) -> Result<Response<Body>, ServiceError> {
    store(service)?.remove(name, force)?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /volumes/prune`: every volume no container uses (API 1.41's meaning; 1.42 narrowed
/// it to anonymous ones), optionally only those with the given labels.
pub fn prune(
    service: &Service,
    filters: &HashMap<String, Vec<String>>,
) -> Result<Response<Body>, ServiceError> {
    for key in filters.keys() {
        if key != "label" {
            return Err(ServiceError::BadRequest(format!(
                "invalid filter '{key}': husk prunes volumes by label only"
            )));
        }
    }
    let volumes = store(service)?;
    let (mut deleted, mut reclaimed) = (Vec::new(), 0u64);
    for volume in volumes.list()? {
        let labelled = filters.get("label").is_none_or(|labels| {
            labels
                .iter()
                .all(|l| husk::container::spec::labels_match(&volume.labels, l))
        });
        if labelled && volumes.users(&volume.name)?.is_empty() {
            let size = disk_usage(&volume.mountpoint);
            volumes.remove(&volume.name, false)?;
            reclaimed += size;
            deleted.push(volume.name);
        }
    }
    Ok(json(
        StatusCode::OK,
        &json!({"VolumesDeleted": deleted, "SpaceReclaimed": reclaimed}),
    ))
}

/// The bytes the files under `dir` hold on disk, symlinks not followed (a volume's content is
/// the container's, and may point anywhere).
fn disk_usage(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            total += meta.blocks() * 512;
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    total
}
