//! Safe extraction of one layer archive (gzip, zstd or plain tar) into its own directory, in
//! the form overlayfs wants for a lower dir.
//!
//! Hostile archives are expected: every entry path is made relative to the layer root, `..`
//! is refused, and each parent directory is checked with lstat so that a symlink (from this
//! archive) is never followed. An existing final component is removed before the new entry is
//! created with O_EXCL semantics, so a symlink there is replaced rather than written through.
//! Only this process writes into the fresh layer directory, so the lstat walk cannot race.
//!
//! OCI whiteouts become overlay whiteouts: `.wh.NAME` a 0:0 character device at NAME and
//! `.wh..wh..opq` the xattr `trusted.overlay.opaque=y` on its directory.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{self, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::digest::HashingReader;
use super::ImageError;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// aufs bookkeeping names (`.wh..wh.plnk` etc.) that carry nothing for overlayfs.
const AUFS_META_PREFIX: &str = ".wh..wh.";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Sniff the compression from the first bytes, which is more reliable than media types
    /// (registries and `docker save` mislabel them).
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// Result of unpacking one layer.
#[derive(Debug, Clone)]
pub struct Unpacked {
    /// sha256 of the uncompressed tar stream ("sha256:<hex>").
    pub diff_id: String,
    /// Bytes of the uncompressed tar stream.
    pub tar_size: u64,
    /// Bytes of regular file content written: Docker's notion of a layer's size.
    pub content_size: u64,
}

/// Decompress (by sniffing) and extract `archive` into the existing empty directory `dest`.
/// On error `dest` may hold a partial tree: callers extract into a temporary directory and
/// rename it into place only on success.
pub fn unpack_layer<R: Read>(archive: R, dest: &Path) -> Result<Unpacked, ImageError> {
    let mut buffered = BufReader::with_capacity(256 * 1024, archive);
    let head = buffered
        .fill_buf()
        .map_err(|e| ImageError::BadArchive(format!("reading layer: {e}")))?;
    let decompressed: Box<dyn Read + '_> = match Compression::detect(head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(|e| ImageError::BadArchive(format!("zstd: {e}")))?,
        ),
        Compression::None => Box::new(buffered),
    };
    let mut hashing = HashingReader::new(decompressed);
    let content_size = extract_tar(&mut hashing, dest)?;
    let (diff_id, tar_size) = hashing
        .finish()
        .map_err(|e| ImageError::BadArchive(format!("reading the end of the layer: {e}")))?;
    Ok(Unpacked {
        diff_id,
        tar_size,
        content_size,
    })
}

struct DirMeta {
    path: PathBuf,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
}

fn extract_tar<R: Read>(reader: R, root: &Path) -> Result<u64, ImageError> {
    let mut content_size = 0u64;
    let is_root = nix::unistd::geteuid().is_root();
    let mut archive = tar::Archive::new(reader);
    let mut dirs: Vec<DirMeta> = Vec::new();
    // Directories already checked (lstat: a real directory) or created by this extraction.
    // Every replacement goes through remove_existing, which forgets a removed subtree, so a
    // path in here is still a real directory.
    let mut known: HashSet<PathBuf> = HashSet::new();
    let entries = archive
        .entries()
        .map_err(|e| ImageError::BadArchive(e.to_string()))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| ImageError::BadArchive(format!("truncated or corrupt tar: {e}")))?;
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let Some(rel) = clean_entry_path(&raw_path)? else {
            continue; // the archive's own root ("./"): the layer dir already exists
        };
        let name = rel.file_name().unwrap_or_default().to_os_string();
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let parent = ensure_parent_dirs(&mut known, root, parent_rel, &shown)?;
        let name_str = name.to_string_lossy();

        if name_str == OPAQUE_WHITEOUT {
            xattr::set(&parent, OVERLAY_OPAQUE_XATTR, b"y").map_err(|e| {
                ImageError::BadArchive(format!(
                    "{shown}: setting {OVERLAY_OPAQUE_XATTR} (needs root): {e}"
                ))
            })?;
            continue;
        }
        if name_str.starts_with(AUFS_META_PREFIX) {
            continue;
        }
        if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(ImageError::UnsafeArchive(format!(
                    "{shown}: invalid whiteout name"
                )));
            }
            let target = parent.join(hidden);
            remove_existing(&mut known, &target, false, &shown)?;
            stat::mknod(&target, SFlag::S_IFCHR, Mode::empty(), stat::makedev(0, 0)).map_err(
                |e| {
                    ImageError::BadArchive(format!(
                        "{shown}: creating overlay whiteout (needs root): {e}"
                    ))
                },
            )?;
            continue;
        }

        let path = parent.join(&name);
        let xattrs = pax_xattrs(&mut entry, &shown)?;
        let header = entry.header().clone();
        let kind = header.entry_type();
        let mode = header.mode().map_err(bad_header(&shown))?;
        let uid = header.uid().map_err(bad_header(&shown))?;
        let gid = header.gid().map_err(bad_header(&shown))?;
        let mtime = header.mtime().map_err(bad_header(&shown))?;

        use tar::EntryType as T;
        match kind {
            T::Directory => {
                remove_existing(&mut known, &path, true, &shown)?;
                if fs::symlink_metadata(&path).is_err() {
                    fs::create_dir(&path).map_err(io_err(&shown, "creating directory"))?;
                }
                apply_xattrs(&path, &xattrs, &shown)?;
                dirs.push(DirMeta {
                    path,
                    mode,
                    uid,
                    gid,
                    mtime,
                });
                continue;
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                remove_existing(&mut known, &path, false, &shown)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(io_err(&shown, "creating file"))?;
                content_size += io::copy(&mut entry, &mut file).map_err(|e| {
                    ImageError::BadArchive(format!("{shown}: truncated or unreadable data: {e}"))
                })?;
            }
            T::Symlink => {
                let target = entry.link_name_bytes().ok_or_else(|| {
                    ImageError::BadArchive(format!("{shown}: symlink without a target"))
                })?;
                remove_existing(&mut known, &path, false, &shown)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .map_err(io_err(&shown, "creating symlink"))?;
            }
            T::Link => {
                let target = entry.link_name_bytes().ok_or_else(|| {
                    ImageError::BadArchive(format!("{shown}: hardlink without a target"))
                })?;
                let source = resolve_hardlink_target(root, &target, &shown)?;
                remove_existing(&mut known, &path, false, &shown)?;
                fs::hard_link(&source, &path).map_err(io_err(&shown, "creating hardlink"))?;
                // The inode's metadata came with its first name.
                continue;
            }
            T::Char | T::Block | T::Fifo => {
                let major = header
                    .device_major()
                    .map_err(bad_header(&shown))?
                    .unwrap_or(0);
                let minor = header
                    .device_minor()
                    .map_err(bad_header(&shown))?
                    .unwrap_or(0);
                let kind_flag = match kind {
                    T::Char => SFlag::S_IFCHR,
                    T::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                remove_existing(&mut known, &path, false, &shown)?;
                stat::mknod(
                    &path,
                    kind_flag,
                    Mode::from_bits_truncate(0o600),
                    stat::makedev(major.into(), minor.into()),
                )
                .map_err(|e| {
                    ImageError::BadArchive(format!(
                        "{shown}: creating device node (needs root): {e}"
                    ))
                })?;
            }
            // Extension headers (pax, GNU long names) are consumed by the tar crate; anything
            // else (e.g. Solaris ACLs) has no meaning in a rootfs.
            _ => continue,
        }
        let is_symlink = kind == T::Symlink;
        if is_root {
            std::os::unix::fs::lchown(&path, Some(id32(uid, &shown)?), Some(id32(gid, &shown)?))
                .map_err(io_err(&shown, "setting owner"))?;
        }
        if !is_symlink {
            // After chown, which clears set-id bits.
            fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))
                .map_err(io_err(&shown, "setting mode"))?;
        }
        apply_xattrs(&path, &xattrs, &shown)?;
        set_mtime(&path, mtime, &shown)?;
    }
    // Directories last and deepest first: creating children changes a directory's mtime, and
    // a read-only directory must stay writable until its children exist.
    for dir in dirs.iter().rev() {
        let shown = dir.path.display().to_string();
        if is_root {
            std::os::unix::fs::lchown(
                &dir.path,
                Some(id32(dir.uid, &shown)?),
                Some(id32(dir.gid, &shown)?),
            )
            .map_err(io_err(&shown, "setting owner"))?;
        }
        fs::set_permissions(&dir.path, fs::Permissions::from_mode(dir.mode & 0o7777))
            .map_err(io_err(&shown, "setting mode"))?;
        set_mtime(&dir.path, dir.mtime, &shown)?;
    }
    Ok(content_size)
}

/// Entry path relative to the layer root: leading `/` and `.` components dropped, `..`
/// refused. `None` for the root itself.
fn clean_entry_path(raw: &[u8]) -> Result<Option<PathBuf>, ImageError> {
    let mut clean = PathBuf::new();
    for component in Path::new(OsStr::from_bytes(raw)).components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                return Err(ImageError::UnsafeArchive(format!(
                    "entry {:?} contains '..'",
                    String::from_utf8_lossy(raw)
                )))
            }
            Component::Prefix(_) => {
                return Err(ImageError::UnsafeArchive(format!(
                    "entry {:?}",
                    String::from_utf8_lossy(raw)
                )))
            }
        }
    }
    Ok(if clean.as_os_str().is_empty() {
        None
    } else {
        Some(clean)
    })
}

/// Create missing parent directories of an entry, refusing to pass through a symlink or a
/// non-directory. Returns the absolute parent path.
fn ensure_parent_dirs(
    known: &mut HashSet<PathBuf>,
    root: &Path,
    parent_rel: &Path,
    shown: &str,
) -> Result<PathBuf, ImageError> {
    let mut current = root.to_path_buf();
    for part in parent_rel.components() {
        current.push(part);
        if known.contains(&current) {
            continue;
        }
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(ImageError::UnsafeArchive(format!(
                    "entry {shown:?} goes through the symlink {:?}; refusing to follow it",
                    part.as_os_str()
                )))
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(ImageError::BadArchive(format!(
                    "entry {shown:?}: parent {:?} is not a directory",
                    part.as_os_str()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&current).map_err(io_err(shown, "creating parent directory"))?;
            }
            Err(e) => return Err(io_err(shown, "inspecting parent directory")(e)),
        }
        known.insert(current.clone());
    }
    Ok(current)
}

/// Hardlink targets name an earlier entry of the same archive; they must resolve inside the
/// layer without passing through symlinks, and must not be directories.
fn resolve_hardlink_target(root: &Path, target: &[u8], shown: &str) -> Result<PathBuf, ImageError> {
    let rel = clean_entry_path(target)?
        .ok_or_else(|| ImageError::UnsafeArchive(format!("{shown}: hardlink to the layer root")))?;
    let mut current = root.to_path_buf();
    let count = rel.components().count();
    for (i, part) in rel.components().enumerate() {
        current.push(part);
        let meta = fs::symlink_metadata(&current).map_err(|_| {
            ImageError::BadArchive(format!(
                "{shown}: hardlink target {:?} is not an earlier entry of this layer",
                String::from_utf8_lossy(target)
            ))
        })?;
        let last = i + 1 == count;
        if !last && !meta.is_dir() {
            return Err(ImageError::UnsafeArchive(format!(
                "{shown}: hardlink target {:?} goes through a symlink or file",
                String::from_utf8_lossy(target)
            )));
        }
        if last && meta.is_dir() {
            return Err(ImageError::BadArchive(format!(
                "{shown}: hardlink to a directory"
            )));
        }
    }
    Ok(current)
}

/// Make room for a new entry. A directory replacing a directory is merged (tar semantics);
/// anything else replaces what was there, never writing through a symlink.
fn remove_existing(
    known: &mut HashSet<PathBuf>,
    path: &Path,
    new_is_dir: bool,
    shown: &str,
) -> Result<(), ImageError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() && new_is_dir => Ok(()),
        Ok(meta) if meta.is_dir() => {
            known.retain(|dir| !dir.starts_with(path));
            fs::remove_dir_all(path).map_err(io_err(shown, "replacing directory"))
        }
        Ok(_) => fs::remove_file(path).map_err(io_err(shown, "replacing file")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(shown, "inspecting")(e)),
    }
}

fn pax_xattrs<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    shown: &str,
) -> Result<Vec<(String, Vec<u8>)>, ImageError> {
    let mut out = Vec::new();
    let Some(extensions) = entry.pax_extensions().map_err(bad_header(shown))? else {
        return Ok(out);
    };
    for ext in extensions {
        let ext = ext.map_err(bad_header(shown))?;
        if let Ok(key) = ext.key() {
            if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                out.push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

fn apply_xattrs(path: &Path, xattrs: &[(String, Vec<u8>)], shown: &str) -> Result<(), ImageError> {
    for (name, value) in xattrs {
        if let Err(e) = xattr::set(path, name, value) {
            // A filesystem without xattr support for this namespace: the layer is still usable.
            if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                log::warn!("{shown}: xattr {name} not supported here, dropped");
                continue;
            }
            return Err(ImageError::BadArchive(format!(
                "{shown}: setting xattr {name}: {e}"
            )));
        }
    }
    Ok(())
}

fn set_mtime(path: &Path, mtime: u64, shown: &str) -> Result<(), ImageError> {
    let secs = i64::try_from(mtime).unwrap_or(i64::MAX) as libc::time_t;
    let time = TimeSpec::new(secs, 0);
    stat::utimensat(None, path, &time, &time, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| ImageError::BadArchive(format!("{shown}: setting mtime: {e}")))
}

fn id32(id: u64, shown: &str) -> Result<u32, ImageError> {
    u32::try_from(id)
        .map_err(|_| ImageError::BadArchive(format!("{shown}: owner id {id} out of range")))
}

fn bad_header(shown: &str) -> impl Fn(io::Error) -> ImageError + '_ {
    move |e| ImageError::BadArchive(format!("{shown}: bad tar header: {e}"))
}

fn io_err<'a>(shown: &'a str, what: &'a str) -> impl Fn(io::Error) -> ImageError + 'a {
    move |e| ImageError::BadArchive(format!("{shown}: {what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_are_made_relative_and_dotdot_refused() {
        assert_eq!(
            clean_entry_path(b"./a/b").unwrap(),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(
            clean_entry_path(b"/etc/passwd").unwrap(),
            Some(PathBuf::from("etc/passwd"))
        );
        assert_eq!(clean_entry_path(b"./").unwrap(), None);
        assert!(clean_entry_path(b"a/../../x").is_err());
        assert!(clean_entry_path(b"../x").is_err());
    }

    #[test]
    fn compression_is_sniffed() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"bin/\0\0"), Compression::None);
    }
}
