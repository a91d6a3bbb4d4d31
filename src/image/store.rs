//! The local image store: an OCI image layout under `<root>/images/`.
//!
//! ```text
//! images/oci-layout, index.json      OCI layout; one index entry per tag, repo digest or
//!                                    dangling image (annotations say which)
//! images/blobs/sha256/<hex>          manifests, configs and layer blobs
//! images/layers/<diff-id hex>/       each layer unpacked once, an overlayfs lower dir
//! images/layer-sizes/<diff-id hex>   bytes of file content in that layer (for SIZE)
//! images/tmp/                        temporaries, renamed into place when complete
//! images/index.lock, images/gc.lock  flock(2) locks
//! ```
//!
//! Every file appears by rename after it is complete, so an interrupted pull, load or
//! import leaves no half image. Blobs and index.json are fsynced before their rename; an
//! unpacked layer is not (a syncfs per layer made pulls ~35% slower in
//! scripts/bench-pull.sh): it is a cache derived from a verified blob, and `rmi` + pull
//! rebuilds it. `index.lock` serialises index read-modify-write;
//! writers of blobs hold `gc.lock` shared so garbage collection (exclusive) never deletes a
//! blob that is about to be referenced.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

use super::digest::{self, HashingReader, HashingWriter};
use super::reference::Reference;
use super::unpack;
use super::ImageError;

pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
pub const REPO_DIGEST_ANNOTATION: &str = "io.husk.image.repo-digest";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Manifests and configs are small; anything bigger is refused rather than read into memory.
pub const MAX_METADATA_BLOB: u64 = 16 * 1024 * 1024;

/// A descriptor as the OCI image spec writes it (index entries, manifest config and layers).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image index or Docker manifest list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// An image manifest (OCI or Docker schema2: same shape).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// What an operation in progress added to the store, so a failure can take it back.
#[derive(Debug, Default)]
pub struct Fresh {
    pub blobs: Vec<String>,
    /// Diff-ids of unpacked layer directories.
    pub layers: Vec<String>,
}

/// One layer of a stored image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDescriptor {
    /// Digest of the blob as stored (possibly compressed).
    pub digest: String,
    /// Digest of the uncompressed tar: names the unpacked directory.
    pub diff_id: String,
    pub media_type: String,
    pub size: u64,
}

/// An image in the store.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// "sha256:<64 hex>": the config digest, as Docker's image ID.
    pub id: String,
    /// Familiar names with tags, e.g. ["busybox:latest"].
    pub repo_tags: Vec<String>,
    /// Familiar names with the registry manifest digest, e.g. ["busybox@sha256:..."].
    pub repo_digests: Vec<String>,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    pub config: ImageConfiguration,
    /// RFC 3339 creation time from the config, if it has one.
    pub created: Option<String>,
    /// Bytes of file content in all layers, as Docker's SIZE; a layer not unpacked yet
    /// counts with its (possibly compressed) blob size.
    pub size: u64,
    pub layers: Vec<LayerDescriptor>,
}

impl StoredImage {
    pub fn short_id(&self) -> &str {
        let hex = self.id.strip_prefix("sha256:").unwrap_or(&self.id);
        &hex[..hex.len().min(12)]
    }
}

pub struct Store {
    root: PathBuf,
    dir: PathBuf,
}

/// Holds a flock until dropped.
pub struct StoreLock {
    _lock: Flock<File>,
}

impl Store {
    /// Open (creating if needed) the image store under `root` (husk's `--root`).
    pub fn open(root: &Path) -> Result<Store, ImageError> {
        crate::container::private_dir::ensure(root).map_err(ImageError::io("creating", root))?;
        let dir = root.join("images");
        for sub in ["blobs/sha256", "layers", "layer-sizes", "tmp"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(ImageError::io("creating", &path))?;
        }
        let store = Store {
            root: root.to_path_buf(),
            dir,
        };
        let layout = store.dir.join("oci-layout");
        if !layout.exists() {
            store.write_file_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self, name: &str, arg: FlockArg) -> Result<StoreLock, ImageError> {
        let path = self.dir.join(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(ImageError::io("opening lock", &path))?;
        let lock = Flock::lock(file, arg).map_err(|(_, errno)| ImageError::Io {
            op: "locking",
            path,
            source: io::Error::from(errno),
        })?;
        Ok(StoreLock { _lock: lock })
    }

    /// Held (shared) by anything that writes blobs it will reference later.
    pub fn writer_lock(&self) -> Result<StoreLock, ImageError> {
        self.lock("gc.lock", FlockArg::LockShared)
    }

    // ---- files and blobs -------------------------------------------------------------

    /// A fresh temporary path under images/tmp (same filesystem as everything it becomes).
    pub fn temp_path(&self, what: &str) -> PathBuf {
        let mut random = [0u8; 8];
        let _ = getrandom::getrandom(&mut random);
        self.dir.join("tmp").join(format!(
            "{what}-{}-{}",
            std::process::id(),
            hex::encode(random)
        ))
    }

    fn write_file_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
        let tmp = self.temp_path("file");
        let result = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, path)?;
            sync_dir(path.parent().unwrap_or(Path::new("/")))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(ImageError::io("writing", path))
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.dir.join("blobs/sha256").join(digest::hex_of(digest)?))
    }

    /// True when the blob is present with the expected size. Content is verified when it is
    /// read (metadata) or unpacked (layers), not here, so a second pull stays cheap.
    pub fn has_blob(&self, digest: &str, size: u64) -> bool {
        self.blob_path(digest)
            .ok()
            .and_then(|p| fs::metadata(p).ok())
            .is_some_and(|m| m.is_file() && m.len() == size)
    }

    /// Stream `reader` into the store, verifying `expected` (digest, size) when given.
    /// Returns (digest, size). Nothing is left behind on error.
    pub fn write_blob<R: Read>(
        &self,
        reader: R,
        expected: Option<(&str, u64)>,
        what: &str,
    ) -> Result<(String, u64), ImageError> {
        let tmp = self.temp_path("blob");
        let result = self.write_blob_inner(reader, expected, what, &tmp);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn write_blob_inner<R: Read>(
        &self,
        mut reader: R,
        expected: Option<(&str, u64)>,
        what: &str,
        tmp: &Path,
    ) -> Result<(String, u64), ImageError> {
        if let Some((digest, _)) = expected {
            digest::hex_of(digest)?;
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(tmp)
            .map_err(ImageError::io("creating", tmp))?;
        let mut writer = HashingWriter::new(io::BufWriter::with_capacity(256 * 1024, file));
        // Bound what an over-long response can write: one byte past the declared size is
        // enough to know it is wrong.
        let limit = expected.map_or(u64::MAX, |(_, size)| size.saturating_add(1));
        io::copy(&mut (&mut reader).take(limit), &mut writer).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted => {
                ImageError::BadArchive(format!("{what}: download interrupted: {e}"))
            }
            _ => ImageError::Io {
                op: "receiving",
                path: tmp.to_path_buf(),
                source: e,
            },
        })?;
        let (buffered, digest, size) = writer.finish();
        let file = buffered
            .into_inner()
            .map_err(|e| ImageError::io("writing", tmp)(e.into_error()))?;
        if let Some((want_digest, want_size)) = expected {
            if size != want_size {
                return Err(ImageError::BadArchive(format!(
                    "{what}: got {size} bytes, expected {want_size} (truncated or oversized blob)"
                )));
            }
            if digest != want_digest {
                return Err(ImageError::DigestMismatch {
                    what: what.to_string(),
                    expected: want_digest.to_string(),
                    actual: digest,
                });
            }
        }
        file.sync_all().map_err(ImageError::io("syncing", tmp))?;
        let dest = self.blob_path(&digest)?;
        fs::rename(tmp, &dest).map_err(ImageError::io("storing", &dest))?;
        sync_dir(dest.parent().unwrap_or(Path::new("/")))
            .map_err(ImageError::io("syncing", &dest))?;
        Ok((digest, size))
    }

    pub fn write_blob_bytes(&self, bytes: &[u8]) -> Result<String, ImageError> {
        let digest = digest::of_bytes(bytes);
        if !self.has_blob(&digest, bytes.len() as u64) {
            self.write_blob(bytes, Some((&digest, bytes.len() as u64)), "blob")?;
        }
        Ok(digest)
    }

    /// Read a small blob (manifest, config) and check it against its digest.
    pub fn read_blob_verified(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(digest)?;
        let file = File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ImageError::CorruptStore(format!("blob {digest} is missing"))
            } else {
                ImageError::io("reading", &path)(e)
            }
        })?;
        let mut bytes = Vec::new();
        file.take(MAX_METADATA_BLOB + 1)
            .read_to_end(&mut bytes)
            .map_err(ImageError::io("reading", &path))?;
        if bytes.len() as u64 > MAX_METADATA_BLOB {
            return Err(ImageError::CorruptStore(format!(
                "blob {digest} is larger than any manifest or config"
            )));
        }
        let actual = digest::of_bytes(&bytes);
        if actual != digest {
            return Err(ImageError::CorruptStore(format!(
                "blob {digest} has content {actual}"
            )));
        }
        Ok(bytes)
    }

    // ---- index ---------------------------------------------------------------------------

    pub fn read_index(&self) -> Result<Vec<Descriptor>, ImageError> {
        let path = self.dir.join("index.json");
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ImageError::io("reading", &path)(e)),
        };
        let index: Index = serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::CorruptStore(format!("{}: {e}", path.display())))?;
        Ok(index.manifests)
    }

    /// Read-modify-write the index under its lock.
    pub fn update_index<T>(
        &self,
        change: impl FnOnce(&mut Vec<Descriptor>) -> Result<T, ImageError>,
    ) -> Result<T, ImageError> {
        let _lock = self.lock("index.lock", FlockArg::LockExclusive)?;
        let mut entries = self.read_index()?;
        let result = change(&mut entries)?;
        let index = Index {
            schema_version: 2,
            media_type: MEDIA_OCI_INDEX.to_string(),
            manifests: entries,
        };
        let bytes =
            serde_json::to_vec_pretty(&index).map_err(|e| ImageError::Json(e.to_string()))?;
        self.write_file_atomic(&self.dir.join("index.json"), &bytes)?;
        Ok(result)
    }

    /// Record a stored manifest under `tag` (moving the tag from any other image) and/or a
    /// repo digest (the registry's digest for the name: `repo_digest.digest`, which for a
    /// multi-platform image is the index's, defaulting to the manifest's own); with neither, keep it as a dangling image. The manifest and everything it
    /// references must already be stored.
    pub fn add_manifest(
        &self,
        manifest_digest: &str,
        manifest_media_type: &str,
        manifest_size: u64,
        tag: Option<&Reference>,
        repo_digest: Option<&Reference>,
    ) -> Result<(), ImageError> {
        self.update_index(|entries| {
            let descriptor = |annotations: BTreeMap<String, String>| Descriptor {
                media_type: manifest_media_type.to_string(),
                digest: manifest_digest.to_string(),
                size: manifest_size,
                platform: None,
                annotations,
            };
            let mut added = false;
            if let Some(tag) = tag {
                let name = tag.full_tagged();
                entries.retain(|e| e.annotations.get(REF_NAME_ANNOTATION) != Some(&name));
                entries.push(descriptor(BTreeMap::from([(
                    REF_NAME_ANNOTATION.to_string(),
                    name,
                )])));
                added = true;
            }
            if let Some(repo) = repo_digest {
                let name = format!(
                    "{}@{}",
                    repo.full_name(),
                    repo.digest.as_deref().unwrap_or(manifest_digest)
                );
                if !entries
                    .iter()
                    .any(|e| e.annotations.get(REPO_DIGEST_ANNOTATION) == Some(&name))
                {
                    entries.push(descriptor(BTreeMap::from([(
                        REPO_DIGEST_ANNOTATION.to_string(),
                        name,
                    )])));
                }
                added = true;
            }
            if !added && !entries.iter().any(|e| e.digest == manifest_digest) {
                entries.push(descriptor(BTreeMap::new()));
            }
            // A named entry makes a dangling one for the same manifest redundant.
            let named: HashSet<String> = entries
                .iter()
                .filter(|e| !e.annotations.is_empty())
                .map(|e| e.digest.clone())
                .collect();
            entries.retain(|e| !e.annotations.is_empty() || !named.contains(&e.digest));
            Ok(())
        })
    }

    // ---- images --------------------------------------------------------------------------

    /// Parse a stored manifest blob.
    pub fn read_manifest(&self, digest: &str) -> Result<Manifest, ImageError> {
        let bytes = self.read_blob_verified(digest)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::CorruptStore(format!("manifest {digest} does not parse: {e}")))
    }

    fn load_image(
        &self,
        manifest_digest: &str,
        entries: &[&Descriptor],
    ) -> Result<StoredImage, ImageError> {
        let manifest = self.read_manifest(manifest_digest)?;
        let config_bytes = self.read_blob_verified(&manifest.config.digest)?;
        let config = parse_config(&config_bytes).map_err(|e| {
            ImageError::CorruptStore(format!("config {}: {e}", manifest.config.digest))
        })?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::CorruptStore(format!(
                "image {}: {} layers but {} diff_ids",
                manifest.config.digest,
                manifest.layers.len(),
                diff_ids.len()
            )));
        }
        let layers: Vec<LayerDescriptor> = manifest
            .layers
            .iter()
            .zip(diff_ids)
            .map(|(l, diff_id)| LayerDescriptor {
                digest: l.digest.clone(),
                diff_id: diff_id.clone(),
                media_type: l.media_type.clone(),
                size: l.size,
            })
            .collect();
        let mut repo_tags = Vec::new();
        let mut repo_digests = Vec::new();
        for entry in entries {
            if let Some(name) = entry.annotations.get(REF_NAME_ANNOTATION) {
                repo_tags.push(
                    Reference::parse(name).map_or_else(|_| name.clone(), |r| r.familiar_tagged()),
                );
            }
            if let Some(name) = entry.annotations.get(REPO_DIGEST_ANNOTATION) {
                repo_digests
                    .push(Reference::parse(name).map_or_else(|_| name.clone(), |r| r.to_string()));
            }
        }
        repo_tags.sort();
        repo_digests.sort();
        Ok(StoredImage {
            id: manifest.config.digest.clone(),
            repo_tags,
            repo_digests,
            manifest_digest: manifest_digest.to_string(),
            manifest_media_type: manifest.media_type.clone(),
            created: config.created().clone(),
            size: layers
                .iter()
                .map(|l| self.layer_size(&l.diff_id).unwrap_or(l.size))
                .sum(),
            config,
            layers,
        })
    }

    /// Every image in the store, one per manifest, in index order.
    pub fn images(&self) -> Result<Vec<StoredImage>, ImageError> {
        let entries = self.read_index()?;
        let mut seen = Vec::<&str>::new();
        for e in &entries {
            if !seen.contains(&e.digest.as_str()) {
                seen.push(&e.digest);
            }
        }
        seen.iter()
            .map(|d| {
                let group: Vec<&Descriptor> = entries.iter().filter(|e| e.digest == *d).collect();
                self.load_image(d, &group)
            })
            .collect()
    }

    /// Resolve a reference ("busybox", "busybox:1.36", "127.0.0.1:5000/x:y",
    /// "name@sha256:..", or a full or unique-prefix image ID with or without "sha256:") to a
    /// stored image. Names that are not stored give [`ImageError::NotFoundLocally`].
    pub fn lookup(&self, reference: &str) -> Result<StoredImage, ImageError> {
        let entries = self.read_index()?;
        let by_manifest = |digest: &str| {
            let group: Vec<&Descriptor> = entries.iter().filter(|e| e.digest == digest).collect();
            self.load_image(digest, &group)
        };
        let id_prefix = reference.strip_prefix("sha256:");
        if id_prefix.is_none() {
            if let Ok(parsed) = Reference::parse(reference) {
                let found = match &parsed.digest {
                    Some(digest) => {
                        let name = format!("{}@{digest}", parsed.full_name());
                        entries
                            .iter()
                            .find(|e| e.annotations.get(REPO_DIGEST_ANNOTATION) == Some(&name))
                    }
                    None => {
                        let name = parsed.full_tagged();
                        entries
                            .iter()
                            .find(|e| e.annotations.get(REF_NAME_ANNOTATION) == Some(&name))
                    }
                };
                if let Some(entry) = found {
                    return by_manifest(&entry.digest.clone());
                }
                let is_hex =
                    !reference.is_empty() && reference.bytes().all(|b| b.is_ascii_hexdigit());
                if !is_hex {
                    return Err(ImageError::NotFoundLocally(parsed.to_string()));
                }
            }
        }
        let prefix = id_prefix.unwrap_or(reference).to_ascii_lowercase();
        if prefix.is_empty() || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return match Reference::parse(reference) {
                Ok(parsed) => Err(ImageError::NotFoundLocally(parsed.to_string())),
                Err(e) => Err(e),
            };
        }
        let mut matches: Vec<StoredImage> = Vec::new();
        for image in self.images()? {
            let hex = image.id.strip_prefix("sha256:").unwrap_or(&image.id);
            if hex.starts_with(&prefix) && !matches.iter().any(|m| m.id == image.id) {
                matches.push(image);
            }
        }
        match matches.len() {
            0 => Err(match Reference::parse(reference) {
                Ok(parsed) if id_prefix.is_none() => {
                    ImageError::NotFoundLocally(parsed.to_string())
                }
                _ => ImageError::NoSuchImage(reference.to_string()),
            }),
            1 => Ok(matches.remove(0)),
            _ => Err(ImageError::AmbiguousId(reference.to_string())),
        }
    }

    /// Unpacked layer directories, bottom layer first; unpacks any that are missing.
    pub fn layer_dirs(&self, image: &StoredImage) -> Result<Vec<PathBuf>, ImageError> {
        let _writer = self.writer_lock()?;
        image
            .layers
            .iter()
            .map(|layer| self.unpack_layer(layer))
            .collect()
    }

    pub fn layer_dir(&self, diff_id: &str) -> Result<PathBuf, ImageError> {
        Ok(self.dir.join("layers").join(digest::hex_of(diff_id)?))
    }

    /// Unpack one layer blob into `layers/<diff-id hex>` unless it is already there,
    /// verifying both the blob digest and the diff-id. A blob whose content does not match
    /// its digest is deleted so that pulling again fetches it afresh.
    pub fn unpack_layer(&self, layer: &LayerDescriptor) -> Result<PathBuf, ImageError> {
        let dest = self.layer_dir(&layer.diff_id)?;
        if dest.is_dir() {
            return Ok(dest);
        }
        self.unpack_blob(&layer.digest, Some(&layer.diff_id))
            .map(|(_, dir)| dir)
    }

    /// Unpack a stored layer blob whose diff-id is not known yet (import, load): returns the
    /// diff-id it has and its directory.
    pub fn unpack_blob(
        &self,
        blob_digest: &str,
        expected_diff_id: Option<&str>,
    ) -> Result<(String, PathBuf), ImageError> {
        let blob = self.blob_path(blob_digest)?;
        let file = File::open(&blob).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ImageError::CorruptStore(format!("layer blob {blob_digest} is missing"))
            } else {
                ImageError::io("opening", &blob)(e)
            }
        })?;
        let tmp = self.temp_path("layer");
        fs::create_dir(&tmp).map_err(ImageError::io("creating", &tmp))?;
        let result = (|| {
            let mut hashing = HashingReader::new(file);
            let unpacked = unpack::unpack_layer(&mut hashing, &tmp);
            // Check the blob first: a corrupt blob explains any archive error.
            let (actual, _) = hashing.finish().map_err(ImageError::io("reading", &blob))?;
            if actual != blob_digest {
                let _ = fs::remove_file(&blob);
                return Err(ImageError::CorruptStore(format!(
                    "layer blob {blob_digest} has content {actual} (deleted; pull or load the image again)"
                )));
            }
            let unpacked = unpacked?;
            if let Some(expected) = expected_diff_id {
                if unpacked.diff_id != expected {
                    return Err(ImageError::DigestMismatch {
                        what: format!("uncompressed layer {blob_digest}"),
                        expected: expected.to_string(),
                        actual: unpacked.diff_id,
                    });
                }
            }
            Ok((unpacked.diff_id, unpacked.content_size))
        })();
        let (diff_id, content_size) = match result {
            Ok(unpacked) => unpacked,
            Err(e) => {
                remove_tree(&tmp);
                return Err(e);
            }
        };
        let dest = self.layer_dir(&diff_id)?;
        if let Err(e) = fs::rename(&tmp, &dest) {
            remove_tree(&tmp);
            // Another husk unpacked the same layer first: theirs is as good as ours.
            if !dest.is_dir() {
                return Err(ImageError::io("storing layer", &dest)(e));
            }
        }
        let _ = sync_dir(&self.dir.join("layers"));
        self.record_layer_size(&diff_id, content_size);
        Ok((diff_id, dest))
    }

    /// Remove what a failed pull, load or import added (blobs, unpacked layers and their
    /// size records) unless a stored image references it.
    pub fn discard(&self, fresh: &Fresh) {
        let mut referenced = HashSet::new();
        if let Ok(images) = self.images() {
            for image in images {
                referenced.insert(image.manifest_digest.clone());
                referenced.insert(image.id.clone());
                for layer in image.layers {
                    referenced.insert(layer.digest);
                    referenced.insert(layer.diff_id);
                }
            }
        }
        for blob in fresh.blobs.iter().filter(|b| !referenced.contains(*b)) {
            if let Ok(path) = self.blob_path(blob) {
                let _ = fs::remove_file(path);
            }
        }
        for diff_id in fresh.layers.iter().filter(|d| !referenced.contains(*d)) {
            if let (Ok(dir), Ok(hex)) = (self.layer_dir(diff_id), digest::hex_of(diff_id)) {
                remove_tree(&dir);
                let _ = fs::remove_file(self.dir.join("layer-sizes").join(hex));
            }
        }
    }

    /// Remember a layer's content size. Without fsync: it only feeds the SIZE column, and a
    /// lost or torn record falls back to the blob size.
    fn record_layer_size(&self, diff_id: &str, size: u64) {
        let Ok(hex) = digest::hex_of(diff_id) else {
            return;
        };
        let tmp = self.temp_path("size");
        if fs::write(&tmp, size.to_string()).is_ok() {
            let _ = fs::rename(&tmp, self.dir.join("layer-sizes").join(hex));
        }
        let _ = fs::remove_file(&tmp);
    }

    fn layer_size(&self, diff_id: &str) -> Option<u64> {
        let hex = digest::hex_of(diff_id).ok()?;
        fs::read_to_string(self.dir.join("layer-sizes").join(hex))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The image a stored manifest describes, with its current names.
    pub fn image_by_manifest(&self, manifest_digest: &str) -> Result<StoredImage, ImageError> {
        let entries = self.read_index()?;
        let group: Vec<&Descriptor> = entries
            .iter()
            .filter(|e| e.digest == manifest_digest)
            .collect();
        self.load_image(manifest_digest, &group)
    }

    // ---- tags and removal ----------------------------------------------------------------

    /// `husk tag SOURCE TARGET`.
    pub fn tag(&self, source: &str, target: &str) -> Result<StoredImage, ImageError> {
        let image = self.lookup(source).map_err(not_found_as_no_such)?;
        let target = Reference::parse(target)?;
        if target.digest.is_some() {
            return Err(ImageError::InvalidReference {
                input: target.to_string(),
                reason: "a tag target cannot contain a digest".into(),
            });
        }
        let media_type = if image.manifest_media_type.is_empty() {
            MEDIA_OCI_MANIFEST.to_string()
        } else {
            image.manifest_media_type.clone()
        };
        let size = fs::metadata(self.blob_path(&image.manifest_digest)?)
            .map_err(ImageError::io(
                "reading",
                self.blob_path(&image.manifest_digest)?,
            ))?
            .len();
        self.add_manifest(
            &image.manifest_digest,
            &media_type,
            size,
            Some(&target),
            None,
        )?;
        self.lookup(&target.to_string())
    }

    /// Remove one name: a tag, or a repo digest when `reference` has a digest. An image
    /// left without names stays as a dangling entry until it is deleted.
    pub fn untag_name(&self, reference: &Reference) -> Result<(), ImageError> {
        let (key, name) = match &reference.digest {
            Some(digest) => (
                REPO_DIGEST_ANNOTATION,
                format!("{}@{digest}", reference.full_name()),
            ),
            None => (REF_NAME_ANNOTATION, reference.full_tagged()),
        };
        self.update_index(|entries| {
            let entry = entries
                .iter()
                .find(|e| e.annotations.get(key) == Some(&name))
                .cloned()
                .ok_or_else(|| ImageError::NoSuchImage(reference.to_string()))?;
            entries.retain(|e| e.annotations.get(key) != Some(&name));
            if !entries.iter().any(|e| e.digest == entry.digest) {
                entries.push(Descriptor {
                    annotations: BTreeMap::new(),
                    ..entry
                });
            }
            Ok(())
        })
    }

    /// Drop every index entry for a manifest (its blobs go at the next garbage collection).
    pub fn remove_manifest_entries(&self, manifest_digest: &str) -> Result<(), ImageError> {
        self.update_index(|entries| {
            entries.retain(|e| e.digest != manifest_digest);
            Ok(())
        })
    }

    /// Drop every index entry for a manifest, then garbage-collect. Returns bytes reclaimed.
    pub fn delete_manifest(&self, manifest_digest: &str) -> Result<u64, ImageError> {
        self.remove_manifest_entries(manifest_digest)?;
        self.collect_garbage()
    }

    /// Delete blobs and unpacked layers no index entry needs, and stale temporaries.
    /// Returns the bytes of blobs reclaimed.
    pub fn collect_garbage(&self) -> Result<u64, ImageError> {
        let _gc = self.lock("gc.lock", FlockArg::LockExclusive)?;
        let _index = self.lock("index.lock", FlockArg::LockExclusive)?;
        let mut keep_blobs = HashSet::new();
        let mut keep_layers = HashSet::new();
        for entry in self.read_index()? {
            keep_blobs.insert(entry.digest.clone());
            // An unreadable manifest keeps what it can: never delete on a guess.
            let Ok(manifest) = self.read_manifest(&entry.digest) else {
                continue;
            };
            keep_blobs.insert(manifest.config.digest.clone());
            for layer in &manifest.layers {
                keep_blobs.insert(layer.digest.clone());
            }
            if let Ok(bytes) = self.read_blob_verified(&manifest.config.digest) {
                if let Ok(config) = parse_config(&bytes) {
                    keep_layers.extend(config.rootfs().diff_ids().iter().cloned());
                }
            }
        }
        let mut reclaimed = 0;
        let blobs = self.dir.join("blobs/sha256");
        for entry in fs::read_dir(&blobs).map_err(ImageError::io("listing", &blobs))? {
            let entry = entry.map_err(ImageError::io("listing", &blobs))?;
            let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
            if !keep_blobs.contains(&digest) {
                reclaimed += entry.metadata().map(|m| m.len()).unwrap_or(0);
                let _ = fs::remove_file(entry.path());
            }
        }
        let layers = self.dir.join("layers");
        for entry in fs::read_dir(&layers).map_err(ImageError::io("listing", &layers))? {
            let entry = entry.map_err(ImageError::io("listing", &layers))?;
            let diff_id = format!("sha256:{}", entry.file_name().to_string_lossy());
            if !keep_layers.contains(&diff_id) {
                remove_tree(&entry.path());
            }
        }
        let sizes = self.dir.join("layer-sizes");
        for entry in fs::read_dir(&sizes)
            .map_err(ImageError::io("listing", &sizes))?
            .flatten()
        {
            let diff_id = format!("sha256:{}", entry.file_name().to_string_lossy());
            if !keep_layers.contains(&diff_id) {
                let _ = fs::remove_file(entry.path());
            }
        }
        // Writers hold gc.lock shared, so nothing in tmp is in use now.
        let tmp = self.dir.join("tmp");
        for entry in fs::read_dir(&tmp)
            .map_err(ImageError::io("listing", &tmp))?
            .flatten()
        {
            remove_tree(&entry.path());
        }
        Ok(reclaimed)
    }
}

/// Parse an image config, tolerating the optional fields oci-spec insists on.
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfiguration, String> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let object = value.as_object_mut().ok_or("config is not a JSON object")?;
    object
        .entry("history")
        .or_insert_with(|| serde_json::json!([]));
    if object.get("history").is_some_and(|h| h.is_null()) {
        object.insert("history".into(), serde_json::json!([]));
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// `rmi`/`inspect` speak of "No such image", `run` of "Unable to find image ... locally".
pub fn not_found_as_no_such(err: ImageError) -> ImageError {
    match err {
        ImageError::NotFoundLocally(name) => ImageError::NoSuchImage(name),
        other => other,
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Best-effort removal of a tree we created; read-only directories are made writable first.
pub fn remove_tree(path: &Path) {
    if fs::symlink_metadata(path).is_ok_and(|m| !m.is_dir()) {
        let _ = fs::remove_file(path);
        return;
    }
    if fs::remove_dir_all(path).is_ok() || !path.exists() {
        return;
    }
    make_dirs_writable(path);
    let _ = fs::remove_dir_all(path);
}

fn make_dirs_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
    for entry in fs::read_dir(path).into_iter().flatten().flatten() {
        make_dirs_writable(&entry.path());
    }
}
