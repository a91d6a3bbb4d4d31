//! `create`: the record, the spec (config.json) and nothing running yet.

use std::path::Path;

use crate::container::spec::{build_spec, MountKind, NetworkMode, SpecOptions, UserMount};
use crate::container::volume::Volumes;
use crate::container::{Containers, Isolation, NewContainer, Record, RestartPolicy};
use crate::image::{self, PullOptions};
use crate::runtime::{sandbox_for, Runtime, RuntimeError};

use super::SPEC_FILE;

/// A mount as the user wrote it, before volumes exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedMount {
    pub kind: MountKind,
    /// Volume name (None: anonymous), or host path for binds.
    pub source: Option<String>,
    pub destination: String,
    pub read_only: bool,
}

/// Everything `create` (and `run`) is asked for.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub name: Option<String>,
    pub image: String,
    /// None: the runtime's default isolation.
    pub isolation: Option<Isolation>,
    pub options: SpecOptions,
    pub mounts: Vec<RequestedMount>,
    pub auto_remove: bool,
    pub restart: RestartPolicy,
    /// `-P`: every port the image exposes, to a free host port.
    pub publish_all: bool,
}

/// Create the container: refused before anything exists when its sandbox cannot honour a
/// flag; its image pulled when missing, as `docker run` does.
pub fn create(runtime: &Runtime, request: CreateRequest) -> Result<Record, RuntimeError> {
    if request.auto_remove && request.restart != RestartPolicy::No {
        return Err(RuntimeError::Refused(
            "conflicting options: cannot specify both --restart and --rm".into(),
        ));
    }
    let isolation = request
        .isolation
        .unwrap_or(runtime.config.default_isolation);
    sandbox_for(isolation).validate(&request.options, &runtime.config)?;
    let root = runtime.root.as_path();
    let image = image_for_run(root, &request.image)?;
    let mut options = request.options;
    resolve_network(root, &mut options)?;
    if request.publish_all {
        publish_exposed(&image, &mut options);
    }
    options.mounts = resolve_mounts(root, &image, request.mounts)?;
    let store = Containers::open(root)?;
    let record = store.create(NewContainer {
        name: request.name,
        image: request.image,
        image_id: image.id.clone(),
        isolation,
        command: Vec::new(),
        auto_remove: request.auto_remove,
        options: options.clone(),
        restart: request.restart,
    })?;
    // From here on a failure must not leave a half-made container behind.
    let finish = || -> Result<Record, RuntimeError> {
        let spec = build_spec(&image.config, &options, &record.id)?;
        let command = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .unwrap_or_default();
        if command.is_empty() {
            return Err(RuntimeError::Refused(
                "no command specified: the image has no Cmd or Entrypoint and none was given"
                    .into(),
            ));
        }
        let bytes = serde_json::to_vec_pretty(&spec)
            .map_err(|e| RuntimeError::Failed(format!("serializing the runtime spec: {e}")))?;
        std::fs::write(store.dir_of(&record.id).join(SPEC_FILE), bytes)
            .map_err(RuntimeError::io("writing the container's config.json"))?;
        Ok(store.update(&record.id, |r| r.command = command)?)
    };
    finish().inspect_err(|_| {
        let _ = store.remove(&record.id);
    })
}

/// A named network must exist and `container:X` must name a container, before anything is
/// created (Docker checks both at create). `container:X` is kept as the container's id.
fn resolve_network(root: &Path, options: &mut SpecOptions) -> Result<(), RuntimeError> {
    match &options.network {
        NetworkMode::Network(name) => {
            crate::network::Networks::open(root)?.find(name)?;
        }
        NetworkMode::Container(key) => {
            let other = Containers::open(root)?.find(key)?;
            options.network = NetworkMode::Container(other.id);
        }
        NetworkMode::None | NetworkMode::Host => {}
    }
    Ok(())
}

/// `-P`: the image's exposed ports not already published, each to a free host port.
fn publish_exposed(image: &image::StoredImage, options: &mut SpecOptions) {
    let exposed = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.exposed_ports().clone())
        .unwrap_or_default();
    for key in exposed {
        let Some((port, protocol)) = crate::network::ports::parse_exposed(&key) else {
            continue;
        };
        let already = options
            .publish
            .iter()
            .any(|p| p.container_port == port && p.protocol == protocol);
        if !already {
            options.publish.push(crate::network::PortRequest {
                host_ip: None,
                host_port: 0,
                container_port: port,
                protocol,
            });
        }
    }
}

/// Find the image locally, pulling it the way `docker run` does when it is missing.
fn image_for_run(root: &Path, reference: &str) -> Result<image::StoredImage, RuntimeError> {
    let store = image::Store::open(root)?;
    Ok(image::lookup_or_pull(
        &store,
        reference,
        &PullOptions::default(),
    )?)
}

/// Create the volumes a container asks for (filling new ones from the image, as Docker does)
/// and turn every mount into the host source the runtime spec binds.
fn resolve_mounts(
    root: &Path,
    image: &image::StoredImage,
    requested: Vec<RequestedMount>,
) -> Result<Vec<UserMount>, RuntimeError> {
    let mut mounts = Vec::new();
    let mut layers = None;
    for mount in requested {
        mounts.push(match mount.kind {
            MountKind::Bind => {
                let path = mount.source.unwrap_or_default();
                // `-v /host:/ctr` creates a missing host directory, as Docker does.
                std::fs::create_dir_all(&path)
                    .map_err(RuntimeError::io(format!("creating bind source {path}")))?;
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
