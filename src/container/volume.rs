//! Named and anonymous volumes: directories under `<root>/volumes/<name>/_data` that outlive
//! containers, as Docker's local volume driver keeps them.

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, Utc};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::record::{write_atomic, Containers, RecordError};
use super::spec::MountKind;

const META_FILE: &str = "volume.json";
const DATA_DIR: &str = "_data";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("get {0}: no such volume")]
    NotFound(String),
    #[error("invalid volume name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName(String),
    #[error("remove {name}: volume is in use - [{containers}]")]
    InUse { name: String, containers: String },
    #[error("volume store at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("volume {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Records(#[from] RecordError),
    #[error("filling volume {name} from the image's {path}: {message}")]
    Fill {
        name: String,
        path: String,
        message: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// Created by `-v /path` without a name; removed by `rm -v` with its container.
    pub anonymous: bool,
    /// Filled from the image the first time a container mounted it (Docker's copy-up).
    #[serde(default)]
    pub populated: bool,
    /// The user's metadata (docker-compose marks its volumes with it).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(skip)]
    pub mountpoint: PathBuf,
}

pub struct Volumes {
    dir: PathBuf,
    root: PathBuf,
}

impl Volumes {
    pub fn open(root: &Path) -> Result<Self, VolumeError> {
        super::private_dir::ensure(root).map_err(io_err(root))?;
        let dir = root.join("volumes");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(Self {
            dir,
            root: root.to_path_buf(),
        })
    }

    fn load(&self, name: &str) -> Result<Volume, VolumeError> {
        let path = self.dir.join(name).join(META_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(VolumeError::NotFound(name.to_string()))
            }
            Err(err) => return Err(io_err(&path)(err)),
        };
        let mut volume: Volume = serde_json::from_slice(&bytes)
            .map_err(|source| VolumeError::Corrupt { path, source })?;
        volume.mountpoint = self.dir.join(name).join(DATA_DIR);
        Ok(volume)
    }

    fn save(&self, volume: &Volume) -> Result<(), VolumeError> {
        let bytes = serde_json::to_vec_pretty(volume).expect("volumes always serialize");
        write_atomic(&self.dir.join(&volume.name).join(META_FILE), &bytes)?;
        Ok(())
    }

    pub fn get(&self, name: &str) -> Result<Volume, VolumeError> {
        if !super::names::is_valid(name) {
            return Err(VolumeError::InvalidName(name.to_string()));
        }
        self.load(name)
    }

    /// The volume called `name` (a new anonymous one for None), created if missing. Creating
    /// an existing volume returns it, as `docker volume create` does.
    pub fn create(&self, name: Option<&str>) -> Result<Volume, VolumeError> {
        self.create_labelled(name, Default::default())
    }

    /// [`Volumes::create`] with labels; a volume that exists already keeps its own.
    pub fn create_labelled(
        &self,
        name: Option<&str>,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<Volume, VolumeError> {
        let anonymous = name.is_none();
        let name = match name {
            Some(name) => name.to_string(),
            None => {
                let mut bytes = [0u8; 32];
                getrandom::getrandom(&mut bytes).expect("the OS random source is available");
                hex::encode(bytes)
            }
        };
        if !super::names::is_valid(&name) {
            return Err(VolumeError::InvalidName(name));
        }
        let containers = Containers::open(&self.root)?;
        let _lock = containers.lock()?;
        match self.load(&name) {
            Ok(volume) => return Ok(volume),
            Err(VolumeError::NotFound(_)) => {}
            Err(err) => return Err(err),
        }
        let dir = self.dir.join(&name);
        // Build it aside and rename it in, so a crash never leaves a volume without metadata.
        let staging = self.dir.join(format!(".new-{name}"));
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir_all(staging.join(DATA_DIR)).map_err(io_err(&staging))?;
        let volume = Volume {
            name: name.clone(),
            created_at: Utc::now(),
            anonymous,
            populated: false,
            labels,
            mountpoint: dir.join(DATA_DIR),
        };
        let bytes = serde_json::to_vec_pretty(&volume).expect("volumes always serialize");
        write_atomic(&staging.join(META_FILE), &bytes)?;
        fs::rename(&staging, &dir).map_err(io_err(&dir))?;
        Ok(volume)
    }

    pub fn list(&self) -> Result<Vec<Volume>, VolumeError> {
        let mut volumes = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            match self.load(&name) {
                Ok(volume) => volumes.push(volume),
                Err(VolumeError::NotFound(_)) => continue,
                Err(err) => return Err(err),
            }
        }
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    /// Names of the containers whose mounts use volume `name`.
    pub fn users(&self, name: &str) -> Result<Vec<String>, VolumeError> {
        Ok(Containers::open(&self.root)?
            .list()?
            .into_iter()
            .filter(|r| {
                r.options
                    .mounts
                    .iter()
                    .any(|m| m.kind == MountKind::Volume && m.name == name)
            })
            .map(|r| r.name)
            .collect())
    }

    /// Delete a volume and its data, refusing while a container uses it (even a stopped one,
    /// as Docker does) unless `force`.
    pub fn remove(&self, name: &str, force: bool) -> Result<(), VolumeError> {
        self.get(name)?;
        let users = self.users(name)?;
        if !users.is_empty() && !force {
            return Err(VolumeError::InUse {
                name: name.to_string(),
                containers: users.join(", "),
            });
        }
        let dir = self.dir.join(name);
        // Metadata first: a removal cut short leaves no half volume that looks whole.
        let meta = dir.join(META_FILE);
        fs::remove_file(&meta).map_err(io_err(&meta))?;
        fs::remove_dir_all(&dir).map_err(io_err(&dir))
    }

    /// Docker's copy-up: the first time a volume is mounted over `destination`, it receives
    /// what the image has there. `layers` are the image's unpacked layers, bottom first.
    pub fn populate_from_image(
        &self,
        volume: &Volume,
        layers: &[PathBuf],
        destination: &str,
    ) -> Result<(), VolumeError> {
        if volume.populated {
            return Ok(());
        }
        // Containers made at once on one new volume (docker-compose creates its services so,
        // through the Engine API's threads) fill it once: under a lock on the volume's
        // directory, with `populated` read again there. Two fills at once could each copy
        // the image over what the other's container had begun to write.
        let dir_path = self.dir.join(&volume.name);
        let dir = fs::File::open(&dir_path).map_err(io_err(&dir_path))?;
        let _filling = Flock::lock(dir, FlockArg::LockExclusive)
            .map_err(|(_, errno)| io_err(&dir_path)(errno.into()))?;
        let volume = self.load(&volume.name)?;
        if volume.populated {
            return Ok(());
        }
        let fill = |message: String| VolumeError::Fill {
            name: volume.name.clone(),
            path: destination.to_string(),
            message,
        };
        let relative: PathBuf = Path::new(destination)
            .components()
            .filter_map(|c| match c {
                Component::Normal(part) => Some(Ok(PathBuf::from(part))),
                Component::RootDir | Component::CurDir => None,
                _ => Some(Err(())),
            })
            .collect::<Result<_, _>>()
            .map_err(|()| fill("the destination must be an absolute path without ..".into()))?;
        let empty = fs::read_dir(&volume.mountpoint)
            .map_err(io_err(&volume.mountpoint))?
            .next()
            .is_none();
        if empty {
            self.copy_up(layers, &relative, &volume).map_err(fill)?;
        }
        let mut populated = volume.clone();
        populated.populated = true;
        self.save(&populated)
    }
}

impl Volumes {
    /// Copy the image's merged content at `relative` into `target`. Several layers are merged
    /// by the kernel (a read-only overlay mount), so whiteouts and opaque directories count
    /// exactly as they will in the container.
    fn copy_up(&self, layers: &[PathBuf], relative: &Path, volume: &Volume) -> Result<(), String> {
        let target = &volume.mountpoint;
        let merged_mount = match layers {
            [] => return Ok(()),
            [only] => Some((only.clone(), false)),
            _ => {
                // One per volume and process: the service fills volumes from several threads.
                let mnt = self
                    .dir
                    .join(format!(".copyup-{}-{}", std::process::id(), volume.name));
                fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
                let lower: Vec<String> = layers
                    .iter()
                    .rev()
                    .map(|l| l.display().to_string())
                    .collect();
                nix::mount::mount(
                    Some("overlay"),
                    &mnt,
                    Some("overlay"),
                    nix::mount::MsFlags::MS_RDONLY,
                    Some(format!("lowerdir={}", lower.join(":")).as_str()),
                )
                .map_err(|e| format!("mounting the image read-only: {e}"))?;
                Some((mnt, true))
            }
        };
        let Some((merged, mounted)) = merged_mount else {
            return Ok(());
        };
        let source = merged.join(relative);
        let result = if is_plain_dir_inside(&source, relative) {
            Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", source.display()))
                .arg(target)
                .status()
                .map_err(|e| format!("cannot run cp: {e}"))
                .and_then(|status| {
                    if status.success() {
                        Ok(())
                    } else {
                        Err(format!("cp exited with {status}"))
                    }
                })
        } else {
            Ok(()) // nothing there (or not a plain directory): the volume starts empty
        };
        if mounted {
            let _ = nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH);
            let _ = fs::remove_dir(&merged);
        }
        result
    }
}

/// The path is a real directory reached without following any symlink: an image must not be
/// able to make the copy-up read host files.
fn is_plain_dir_inside(path: &Path, relative: &Path) -> bool {
    let mut base = path.to_path_buf();
    for _ in relative.components() {
        match base.symlink_metadata() {
            Ok(meta) if !meta.file_type().is_symlink() => {}
            _ => return false,
        }
        base.pop();
    }
    path.symlink_metadata().is_ok_and(|m| m.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::spec::{SpecOptions, UserMount};
    use crate::container::{Isolation, NewContainer, RestartPolicy};

    #[test]
    fn create_is_idempotent_and_remove_refuses_in_use() {
        let root = tempfile::tempdir().unwrap();
        let volumes = Volumes::open(root.path()).unwrap();
        let data = volumes.create(Some("data")).unwrap();
        std::fs::write(data.mountpoint.join("kept"), b"x").unwrap();
        let again = volumes.create(Some("data")).unwrap();
        assert!(again.mountpoint.join("kept").exists());
        let anonymous = volumes.create(None).unwrap();
        assert!(anonymous.anonymous && anonymous.name.len() == 64);
        assert_eq!(volumes.list().unwrap().len(), 2);

        let containers = Containers::open(root.path()).unwrap();
        containers
            .create(NewContainer {
                name: Some("user".into()),
                image: "busybox".into(),
                image_id: "sha256:x".into(),
                isolation: Isolation::Process,
                command: vec!["true".into()],
                auto_remove: false,
                options: SpecOptions {
                    mounts: vec![UserMount {
                        kind: MountKind::Volume,
                        name: "data".into(),
                        source: data.mountpoint.display().to_string(),
                        destination: "/data".into(),
                        read_only: false,
                    }],
                    ..SpecOptions::default()
                },
                restart: RestartPolicy::No,
            })
            .unwrap();
        let err = volumes.remove("data", false).unwrap_err();
        assert!(
            err.to_string().contains("volume is in use - [user]"),
            "{err}"
        );
        volumes.remove(&anonymous.name, false).unwrap();
        assert!(matches!(
            volumes.get(&anonymous.name),
            Err(VolumeError::NotFound(_))
        ));
        assert!(matches!(
            volumes.get("../x"),
            Err(VolumeError::InvalidName(_))
        ));
    }

    #[test]
    fn copy_up_fills_once_and_never_follows_symlinks() {
        let root = tempfile::tempdir().unwrap();
        let layers = tempfile::tempdir().unwrap();
        let bottom = layers.path().join("bottom");
        let top = layers.path().join("top");
        std::fs::create_dir_all(bottom.join("srv/www")).unwrap();
        std::fs::write(bottom.join("srv/www/index.html"), b"old").unwrap();
        std::fs::create_dir_all(top.join("srv/www")).unwrap();
        std::fs::write(top.join("srv/www/index.html"), b"new").unwrap();
        std::fs::create_dir_all(&top).unwrap();
        std::os::unix::fs::symlink("/etc", top.join("escape")).unwrap();

        let volumes = Volumes::open(root.path()).unwrap();
        let web = volumes.create(Some("web")).unwrap();
        volumes
            .populate_from_image(&web, &[bottom.clone(), top.clone()], "/srv/www")
            .unwrap();
        assert_eq!(
            std::fs::read(web.mountpoint.join("index.html")).unwrap(),
            b"new"
        );
        // Populated volumes are not filled again, even when emptied.
        std::fs::remove_file(web.mountpoint.join("index.html")).unwrap();
        let web = volumes.get("web").unwrap();
        volumes
            .populate_from_image(&web, &[bottom.clone(), top.clone()], "/srv/www")
            .unwrap();
        assert!(!web.mountpoint.join("index.html").exists());

        // A fill waits for one in progress (the lock on the volume's directory), then finds
        // the volume filled and copies nothing over what its container wrote meanwhile.
        let shared = volumes.create(Some("shared")).unwrap();
        let held = Flock::lock(
            std::fs::File::open(root.path().join("volumes/shared")).unwrap(),
            FlockArg::LockExclusive,
        )
        .unwrap();
        let second = std::thread::spawn({
            let (root, layers) = (root.path().to_path_buf(), [bottom.clone(), top.clone()]);
            let shared = shared.clone();
            move || {
                Volumes::open(&root)
                    .unwrap()
                    .populate_from_image(&shared, &layers, "/srv/www")
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!second.is_finished(), "a second fill did not wait");
        std::fs::write(shared.mountpoint.join("index.html"), b"the container's").unwrap();
        volumes
            .save(&Volume {
                populated: true,
                ..shared.clone()
            })
            .unwrap();
        drop(held);
        second.join().unwrap().unwrap();
        assert_eq!(
            std::fs::read(shared.mountpoint.join("index.html")).unwrap(),
            b"the container's"
        );

        let escape = volumes.create(Some("escape")).unwrap();
        volumes
            .populate_from_image(&escape, &[bottom, top], "/escape")
            .unwrap();
        assert!(std::fs::read_dir(&escape.mountpoint)
            .unwrap()
            .next()
            .is_none());
    }
}
