//! Image archives: `import` (a rootfs tarball becomes a one-layer image), `load`
//! (docker-archive from `docker save`, or an OCI image layout archive) and `save` (one
//! archive that is both: Docker 25's layout, loadable by docker, podman, skopeo and husk).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map};

use super::reference::Reference;
use super::store::{
    self, Descriptor, Fresh, Index, Manifest, Store, StoredImage, MEDIA_DOCKER_LIST,
    MEDIA_OCI_CONFIG, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST, REF_NAME_ANNOTATION,
};
use super::unpack::Compression;
use super::{config_change, digest, ImageError};

/// containerd's (and Docker 25's) annotation for the full image name in an OCI archive.
const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// Files of an archive up to this size are kept in memory (manifests, configs, small layers).
const SMALL_FILE: u64 = 1024 * 1024;

#[derive(Debug, Default, Clone)]
pub struct ImportOptions {
    /// Dockerfile-style instructions (`CMD [...]`, `ENV K=V`, ...).
    pub changes: Vec<String>,
    /// Recorded as the history comment, like `docker import -m`.
    pub message: Option<String>,
}

/// `husk import`: store `tarball` (plain, gzip or zstd) as the single layer of a new image,
/// tagged `tag` if given. Nothing is kept if the archive is bad or unsafe.
pub fn import<R: Read>(
    store: &Store,
    tarball: R,
    tag: Option<&Reference>,
    options: &ImportOptions,
) -> Result<StoredImage, ImageError> {
    let mut config_section = Map::new();
    for change in &options.changes {
        config_change::apply(&mut config_section, change)?;
    }
    let _writer = store.writer_lock()?;
    let mut fresh = Fresh::default();
    let result = import_content(store, tarball, tag, options, config_section, &mut fresh);
    if result.is_err() {
        store.discard(&fresh);
    }
    result
}

fn import_content<R: Read>(
    store: &Store,
    tarball: R,
    tag: Option<&Reference>,
    options: &ImportOptions,
    config_section: Map<String, serde_json::Value>,
    fresh: &mut Fresh,
) -> Result<StoredImage, ImageError> {
    let (layer_digest, layer_size) = store.write_blob(tarball, None, "imported archive")?;
    fresh.blobs.push(layer_digest.clone());
    let (diff_id, _) = store.unpack_blob(&layer_digest, None)?;
    fresh.layers.push(diff_id.clone());
    let compression = sniff_blob(store, &layer_digest)?;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let mut history = json!({"created": now, "created_by": "husk import"});
    if let Some(message) = &options.message {
        history["comment"] = json!(message);
    }
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": now,
        "config": config_section,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [history],
    });
    let config_bytes = serde_json::to_vec(&config).map_err(|e| ImageError::Json(e.to_string()))?;
    store::parse_config(&config_bytes).map_err(ImageError::InvalidImage)?;
    let config_digest = store.write_blob_bytes(&config_bytes)?;
    fresh.blobs.push(config_digest.clone());
    let manifest = Manifest {
        schema_version: 2,
        media_type: MEDIA_OCI_MANIFEST.into(),
        config: plain_descriptor(MEDIA_OCI_CONFIG, &config_digest, config_bytes.len() as u64),
        layers: vec![plain_descriptor(
            compression.oci_media_type(),
            &layer_digest,
            layer_size,
        )],
    };
    commit_manifest(
        store,
        &manifest,
        &[tag.cloned()].into_iter().flatten().collect::<Vec<_>>(),
    )
}

/// Store a manifest (whose blobs are stored) under the given tags, or dangling if none.
fn commit_manifest(
    store: &Store,
    manifest: &Manifest,
    tags: &[Reference],
) -> Result<StoredImage, ImageError> {
    let bytes = serde_json::to_vec(manifest).map_err(|e| ImageError::Json(e.to_string()))?;
    let digest = store.write_blob_bytes(&bytes)?;
    if tags.is_empty() {
        store.add_manifest(
            &digest,
            &manifest.media_type,
            bytes.len() as u64,
            None,
            None,
        )?;
    }
    for tag in tags {
        store.add_manifest(
            &digest,
            &manifest.media_type,
            bytes.len() as u64,
            Some(tag),
            None,
        )?;
    }
    store.image_by_manifest(&digest)
}

fn plain_descriptor(media_type: &str, digest: &str, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: digest.into(),
        size,
        platform: None,
        annotations: BTreeMap::new(),
    }
}

fn sniff_blob(store: &Store, digest: &str) -> Result<Compression, ImageError> {
    let path = store.blob_path(digest)?;
    let mut head = [0u8; 4];
    let mut file = File::open(&path).map_err(ImageError::io("reading", &path))?;
    let n = read_up_to(&mut file, &mut head).map_err(ImageError::io("reading", &path))?;
    Ok(Compression::detect(&head[..n]))
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

// ---- load -------------------------------------------------------------------------------

/// A file of the archive: small ones in memory, large ones already stored as blobs.
enum ArchivedFile {
    Small(Vec<u8>),
    Stored { digest: String, size: u64 },
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveItem {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// What `load` stored: images with the names they got.
#[derive(Debug)]
pub struct Loaded {
    pub image: StoredImage,
    /// Familiar names, or empty when the archive named no tag.
    pub names: Vec<String>,
}

/// `husk load`: read a docker-archive or OCI layout archive (optionally gzip/zstd
/// compressed) and store every image in it. Nothing is kept if any part is bad.
pub fn load<R: Read>(store: &Store, archive: R) -> Result<Vec<Loaded>, ImageError> {
    let _writer = store.writer_lock()?;
    let mut fresh = Fresh::default();
    let result = load_inner(store, archive, &mut fresh);
    if result.is_err() {
        store.discard(&fresh);
    }
    result
}

fn load_inner<R: Read>(
    store: &Store,
    archive: R,
    written: &mut Fresh,
) -> Result<Vec<Loaded>, ImageError> {
    let mut buffered = BufReader::with_capacity(256 * 1024, archive);
    let head =
        io::BufRead::fill_buf(&mut buffered).map_err(|e| ImageError::BadArchive(e.to_string()))?;
    let decompressed: Box<dyn Read> = match Compression::detect(head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(|e| ImageError::BadArchive(e.to_string()))?,
        ),
        Compression::None => Box::new(buffered),
    };
    let mut files: HashMap<PathBuf, ArchivedFile> = HashMap::new();
    let mut links: HashMap<PathBuf, PathBuf> = HashMap::new();
    let mut tar = tar::Archive::new(decompressed);
    let entries = tar
        .entries()
        .map_err(|e| ImageError::BadArchive(e.to_string()))?;
    for entry in entries {
        let mut entry = entry
            .map_err(|e| ImageError::BadArchive(format!("truncated or corrupt archive: {e}")))?;
        let Some(path) = archive_path(&entry.path_bytes())? else {
            continue;
        };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                let file = if size <= SMALL_FILE {
                    let mut bytes = Vec::with_capacity(size as usize);
                    entry
                        .read_to_end(&mut bytes)
                        .map_err(|e| ImageError::BadArchive(format!("{}: {e}", path.display())))?;
                    ArchivedFile::Small(bytes)
                } else {
                    let (digest, size) =
                        store.write_blob(&mut entry, None, &path.display().to_string())?;
                    written.blobs.push(digest.clone());
                    ArchivedFile::Stored { digest, size }
                };
                files.insert(path, file);
            }
            // Legacy docker-archives link repeated layers to their first copy.
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                let base = if entry.header().entry_type() == tar::EntryType::Symlink {
                    path.parent().unwrap_or(Path::new("")).to_path_buf()
                } else {
                    PathBuf::new()
                };
                let joined = base.join(Path::new(std::str::from_utf8(&target).unwrap_or("")));
                links.insert(path, normalize_inside(&joined)?);
            }
            _ => {}
        }
    }
    let mut archive = LoadedArchive {
        store,
        files,
        links,
        written,
    };
    if archive.find(Path::new("manifest.json")).is_some() {
        archive.load_docker_archive()
    } else if archive.find(Path::new("index.json")).is_some() {
        archive.load_oci_layout()
    } else {
        Err(ImageError::BadArchive(
            "neither manifest.json (docker-archive) nor index.json (OCI layout) found; is this a `docker save` archive?"
                .into(),
        ))
    }
}

/// Paths inside the archive, relative, with `..` resolved lexically and never escaping.
fn archive_path(raw: &[u8]) -> Result<Option<PathBuf>, ImageError> {
    let path = Path::new(
        std::str::from_utf8(raw).map_err(|_| ImageError::BadArchive("non-UTF-8 path".into()))?,
    );
    let clean = normalize_inside(path)?;
    Ok(if clean.as_os_str().is_empty() {
        None
    } else {
        Some(clean)
    })
}

fn normalize_inside(path: &Path) -> Result<PathBuf, ImageError> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            // pop() in the guard: a `..` that has something to remove just removes it.
            Component::ParentDir if !clean.pop() => {
                return Err(ImageError::UnsafeArchive(format!(
                    "{} points outside the archive",
                    path.display()
                )));
            }
            _ => {}
        }
    }
    Ok(clean)
}

struct LoadedArchive<'a> {
    store: &'a Store,
    files: HashMap<PathBuf, ArchivedFile>,
    links: HashMap<PathBuf, PathBuf>,
    written: &'a mut Fresh,
}

impl LoadedArchive<'_> {
    fn find(&self, path: &Path) -> Option<&ArchivedFile> {
        let mut path = path.to_path_buf();
        for _ in 0..16 {
            if let Some(file) = self.files.get(&path) {
                return Some(file);
            }
            path = self.links.get(&path)?.clone();
        }
        None
    }

    fn small(&self, path: &str) -> Result<&[u8], ImageError> {
        match self.find(Path::new(path)) {
            Some(ArchivedFile::Small(bytes)) => Ok(bytes),
            Some(ArchivedFile::Stored { .. }) => {
                Err(ImageError::BadArchive(format!("{path} is too large")))
            }
            None => Err(ImageError::BadArchive(format!(
                "{path} is referenced but missing from the archive"
            ))),
        }
    }

    /// Store an archive file as a blob; with `expected`, its digest must match.
    fn store_file(
        &mut self,
        path: &str,
        expected: Option<&str>,
    ) -> Result<(String, u64), ImageError> {
        let (digest, size) = match self.find(Path::new(path)) {
            Some(ArchivedFile::Stored { digest, size }) => (digest.clone(), *size),
            Some(ArchivedFile::Small(bytes)) => {
                let bytes = bytes.clone();
                let digest = digest::of_bytes(&bytes);
                if !self.store.has_blob(&digest, bytes.len() as u64) {
                    self.store.write_blob_bytes(&bytes)?;
                    self.written.blobs.push(digest.clone());
                }
                (digest, bytes.len() as u64)
            }
            None => {
                return Err(ImageError::BadArchive(format!(
                    "{path} is referenced but missing from the archive"
                )))
            }
        };
        if let Some(expected) = expected {
            if digest != expected {
                return Err(ImageError::DigestMismatch {
                    what: path.to_string(),
                    expected: expected.to_string(),
                    actual: digest,
                });
            }
        }
        Ok((digest, size))
    }

    fn load_docker_archive(&mut self) -> Result<Vec<Loaded>, ImageError> {
        let items: Vec<DockerArchiveItem> = serde_json::from_slice(self.small("manifest.json")?)
            .map_err(|e| ImageError::BadArchive(format!("manifest.json: {e}")))?;
        let mut prepared = Vec::new();
        for item in &items {
            let config_bytes = self.small(&item.config)?.to_vec();
            let config = store::parse_config(&config_bytes)
                .map_err(|e| ImageError::BadArchive(format!("{}: {e}", item.config)))?;
            let diff_ids = config.rootfs().diff_ids().clone();
            if diff_ids.len() != item.layers.len() {
                return Err(ImageError::BadArchive(format!(
                    "{}: {} layers but the config lists {} diff_ids",
                    item.config,
                    item.layers.len(),
                    diff_ids.len()
                )));
            }
            let config_digest = self.store.write_blob_bytes(&config_bytes)?;
            self.written.blobs.push(config_digest.clone());
            let mut layers = Vec::new();
            for (path, diff_id) in item.layers.iter().zip(&diff_ids) {
                let (digest, size) = self.store_file(path, None)?;
                self.store.unpack_layer(&store::LayerDescriptor {
                    digest: digest.clone(),
                    diff_id: diff_id.clone(),
                    media_type: String::new(),
                    size,
                })?;
                self.written.layers.push(diff_id.clone());
                let compression = sniff_blob(self.store, &digest)?;
                layers.push(plain_descriptor(
                    compression.oci_media_type(),
                    &digest,
                    size,
                ));
            }
            let manifest = Manifest {
                schema_version: 2,
                media_type: MEDIA_OCI_MANIFEST.into(),
                config: plain_descriptor(
                    MEDIA_OCI_CONFIG,
                    &config_digest,
                    config_bytes.len() as u64,
                ),
                layers,
            };
            let tags = item
                .repo_tags
                .iter()
                .flatten()
                .map(|t| Reference::parse(t))
                .collect::<Result<Vec<_>, _>>()?;
            prepared.push((manifest, tags));
        }
        // Everything is stored and verified: now name the images.
        prepared
            .into_iter()
            .map(|(manifest, tags)| {
                let image = commit_manifest(self.store, &manifest, &tags)?;
                Ok(Loaded {
                    names: tags.iter().map(Reference::familiar_tagged).collect(),
                    image,
                })
            })
            .collect()
    }

    fn load_oci_layout(&mut self) -> Result<Vec<Loaded>, ImageError> {
        let index: Index = serde_json::from_slice(self.small("index.json")?)
            .map_err(|e| ImageError::BadArchive(format!("index.json: {e}")))?;
        let mut prepared = Vec::new();
        for entry in &index.manifests {
            let name = entry
                .annotations
                .get(CONTAINERD_NAME_ANNOTATION)
                .or_else(|| {
                    entry
                        .annotations
                        .get(REF_NAME_ANNOTATION)
                        .filter(|n| n.contains(['/', ':']))
                })
                .map(|n| Reference::parse(n))
                .transpose()?;
            let manifest_descriptor = self.resolve_platform(entry)?;
            let manifest_bytes = self.blob_bytes(&manifest_descriptor.digest)?;
            let manifest: Manifest = serde_json::from_slice(&manifest_bytes).map_err(|e| {
                ImageError::BadArchive(format!("manifest {}: {e}", manifest_descriptor.digest))
            })?;
            let config_bytes = self.blob_bytes(&manifest.config.digest)?;
            let config = store::parse_config(&config_bytes).map_err(|e| {
                ImageError::BadArchive(format!("config {}: {e}", manifest.config.digest))
            })?;
            let diff_ids = config.rootfs().diff_ids().clone();
            if diff_ids.len() != manifest.layers.len() {
                return Err(ImageError::BadArchive(format!(
                    "manifest {}: {} layers but {} diff_ids",
                    manifest_descriptor.digest,
                    manifest.layers.len(),
                    diff_ids.len()
                )));
            }
            self.store_file(
                &blob_path(&manifest.config.digest)?,
                Some(&manifest.config.digest),
            )?;
            for (layer, diff_id) in manifest.layers.iter().zip(&diff_ids) {
                let (digest, size) =
                    self.store_file(&blob_path(&layer.digest)?, Some(&layer.digest))?;
                self.store.unpack_layer(&store::LayerDescriptor {
                    digest,
                    diff_id: diff_id.clone(),
                    media_type: layer.media_type.clone(),
                    size,
                })?;
                self.written.layers.push(diff_id.clone());
            }
            self.store_file(
                &blob_path(&manifest_descriptor.digest)?,
                Some(&manifest_descriptor.digest),
            )?;
            prepared.push((manifest_descriptor, manifest_bytes.len() as u64, name));
        }
        prepared
            .into_iter()
            .map(|(descriptor, size, name)| {
                let media_type = if descriptor.media_type.is_empty() {
                    MEDIA_OCI_MANIFEST.to_string()
                } else {
                    descriptor.media_type
                };
                self.store.add_manifest(
                    &descriptor.digest,
                    &media_type,
                    size,
                    name.as_ref(),
                    None,
                )?;
                let image = self.store.image_by_manifest(&descriptor.digest)?;
                Ok(Loaded {
                    names: name.iter().map(Reference::familiar_tagged).collect(),
                    image,
                })
            })
            .collect()
    }

    fn blob_bytes(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let bytes = self.small(&blob_path(digest)?)?.to_vec();
        let actual = digest::of_bytes(&bytes);
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                what: blob_path(digest)?,
                expected: digest.into(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// An index entry may itself be an index: pick its linux/amd64 manifest.
    fn resolve_platform(&self, entry: &Descriptor) -> Result<Descriptor, ImageError> {
        let mut current = entry.clone();
        for _ in 0..4 {
            if current.media_type != MEDIA_OCI_INDEX && current.media_type != MEDIA_DOCKER_LIST {
                return Ok(current);
            }
            let nested: Index = serde_json::from_slice(&self.blob_bytes(&current.digest)?)
                .map_err(|e| ImageError::BadArchive(format!("index {}: {e}", current.digest)))?;
            current = select_linux_amd64(&nested.manifests)
                .ok_or_else(|| ImageError::NoMatchingPlatform(current.digest.clone()))?
                .clone();
        }
        Err(ImageError::BadArchive("indexes nested too deeply".into()))
    }
}

/// The linux/amd64 entry of an index (platform-less entries count as the default platform).
pub fn select_linux_amd64(manifests: &[Descriptor]) -> Option<&Descriptor> {
    manifests
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        })
        .or_else(|| {
            manifests.iter().find(|m| {
                m.platform.is_none() && !m.annotations.contains_key("vnd.docker.reference.type")
            })
        })
}

fn blob_path(digest: &str) -> Result<String, ImageError> {
    Ok(format!("blobs/sha256/{}", digest::hex_of(digest)?))
}

// ---- save -------------------------------------------------------------------------------

/// `husk save`: write the images (with the names they were asked by) as one archive that is
/// both a docker-archive (manifest.json) and an OCI layout (index.json + blobs).
pub fn save<W: Write>(
    store: &Store,
    images: &[(StoredImage, Option<Reference>)],
    out: W,
) -> Result<(), ImageError> {
    let mut builder = tar::Builder::new(BufWriter::new(out));
    let mut docker_items = Vec::new();
    let mut index_entries = Vec::new();
    let mut blobs_written = HashSet::new();
    let add_bytes = |builder: &mut tar::Builder<BufWriter<W>>, path: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, bytes)
            .map_err(|e| ImageError::io("writing archive", path)(e))
    };
    for (image, name) in images {
        let mut digests = vec![image.manifest_digest.clone(), image.id.clone()];
        digests.extend(image.layers.iter().map(|l| l.digest.clone()));
        for digest in &digests {
            if !blobs_written.insert(digest.clone()) {
                continue;
            }
            let path = store.blob_path(digest)?;
            let mut file = File::open(&path).map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    ImageError::CorruptStore(format!("blob {digest} is missing"))
                } else {
                    ImageError::io("reading", &path)(e)
                }
            })?;
            let mut header = tar::Header::new_gnu();
            let size = file
                .metadata()
                .map_err(ImageError::io("reading", &path))?
                .len();
            header.set_size(size);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut header, blob_path(digest)?, &mut file)
                .map_err(ImageError::io("writing archive", &path))?;
        }
        let tags: Vec<String> = match name {
            Some(name) => vec![name.familiar_tagged()],
            None => image.repo_tags.clone(),
        };
        docker_items.push(DockerArchiveItem {
            config: blob_path(&image.id)?,
            repo_tags: Some(tags.clone()),
            layers: image
                .layers
                .iter()
                .map(|l| blob_path(&l.digest))
                .collect::<Result<_, _>>()?,
        });
        let manifest_size = fs::metadata(store.blob_path(&image.manifest_digest)?)
            .map_err(ImageError::io(
                "reading",
                store.blob_path(&image.manifest_digest)?,
            ))?
            .len();
        let media_type = if image.manifest_media_type.is_empty() {
            MEDIA_OCI_MANIFEST
        } else {
            &image.manifest_media_type
        };
        let names: Vec<Option<Reference>> = if tags.is_empty() {
            vec![None]
        } else {
            tags.iter().map(|t| Reference::parse(t).ok()).collect()
        };
        for name in names {
            let mut annotations = BTreeMap::new();
            if let Some(name) = name {
                annotations.insert(CONTAINERD_NAME_ANNOTATION.to_string(), name.full_tagged());
                annotations.insert(
                    REF_NAME_ANNOTATION.to_string(),
                    name.tag_or_default().to_string(),
                );
            }
            index_entries.push(Descriptor {
                media_type: media_type.to_string(),
                digest: image.manifest_digest.clone(),
                size: manifest_size,
                platform: None,
                annotations,
            });
        }
    }
    let index = Index {
        schema_version: 2,
        media_type: MEDIA_OCI_INDEX.into(),
        manifests: index_entries,
    };
    add_bytes(
        &mut builder,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    add_bytes(&mut builder, "index.json", &json_bytes(&index)?)?;
    add_bytes(&mut builder, "manifest.json", &json_bytes(&docker_items)?)?;
    let mut writer = builder
        .into_inner()
        .map_err(ImageError::io("writing archive", "output"))?;
    writer
        .flush()
        .map_err(ImageError::io("writing archive", "output"))?;
    Ok(())
}

fn json_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec(value).map_err(|e| ImageError::Json(e.to_string()))
}
