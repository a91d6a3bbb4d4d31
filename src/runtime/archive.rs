//! Tar streams between the host and a container, for `cp`: the host side of both isolations
//! (a VM container's side is the guest's own tar), and the process container's filesystem
//! view that its side runs in.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::sandbox::Target;
use super::RuntimeError;
use crate::container::Status;

fn fail(message: String) -> RuntimeError {
    RuntimeError::Failed(message)
}

fn tar_error(what: String) -> impl FnOnce(std::io::Error) -> RuntimeError {
    RuntimeError::io(what)
}

/// Put the single top-level entry of a tar stream at `dest`: inside it when it is an existing
/// directory, else as `dest` itself (Docker's naming).
pub fn place(archive: impl std::io::Read, dest: &Path) -> Result<(), RuntimeError> {
    if dest.is_dir() {
        let mut archive = tar::Archive::new(archive);
        archive.set_preserve_permissions(true);
        archive.set_overwrite(true);
        return archive
            .unpack(dest)
            .map_err(tar_error(format!("extracting into {}", dest.display())));
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(fail(format!("no such directory: {}", parent.display())));
    }
    let staging = parent.join(format!(".husk-cp-{}", std::process::id()));
    std::fs::create_dir(&staging).map_err(tar_error(format!("creating {}", staging.display())))?;
    let result = (|| -> Result<(), RuntimeError> {
        let mut archive = tar::Archive::new(archive);
        archive.set_preserve_permissions(true);
        archive
            .unpack(&staging)
            .map_err(tar_error("extracting the copy".into()))?;
        let entry = std::fs::read_dir(&staging)
            .map_err(tar_error("reading the copy".into()))?
            .next()
            .ok_or_else(|| fail("nothing was copied".into()))?
            .map_err(tar_error("reading the copy".into()))?;
        std::fs::rename(entry.path(), dest).map_err(tar_error(format!(
            "moving into place at {}",
            dest.display()
        )))
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// A tar stream of `source` (a file or a directory tree, symlinks kept as symlinks).
pub fn send(source: &Path, out: impl std::io::Write) -> Result<(), RuntimeError> {
    let name = source
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let meta = std::fs::symlink_metadata(source).map_err(tar_error(format!(
        "no such file or directory: {}",
        source.display()
    )))?;
    let what = || tar_error(format!("archiving {}", source.display()));
    if meta.is_dir() {
        builder.append_dir_all(&name, source).map_err(what())?;
    } else {
        builder
            .append_path_with_name(source, &name)
            .map_err(what())?;
    }
    std::io::Write::flush(&mut builder.into_inner().map_err(what())?).map_err(what())?;
    Ok(())
}

/// Enter the container's filesystem view in this (forked, single-threaded) process.
pub fn enter_view(target: &Target) -> Result<(), RuntimeError> {
    let (store, root, record) = (target.store, target.root, target.record);
    if record.effective_status() == Status::Running {
        let pid = record
            .state
            .pid
            .ok_or_else(|| fail("the container has no recorded process".into()))?;
        let ns = File::open(format!("/proc/{pid}/ns/mnt"))
            .map_err(tar_error("opening the container's mount namespace".into()))?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNS)?;
        return Ok(());
    }
    // Stopped: the same overlay the container runs on, mounted privately for this process.
    let dir = store.dir_of(&record.id);
    let layers = super::container::layer_dirs(root, record)?;
    let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("rootfs"));
    for d in [&upper, &work, &merged] {
        std::fs::create_dir_all(d).map_err(tar_error(format!("creating {}", d.display())))?;
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    // The same option string (and path checks) the container itself is mounted with.
    let options = crate::process::rootfs::overlay_options(&layers, &upper, &work)
        .map_err(|e| fail(e.to_string()))?;
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| fail(format!("mounting the container's filesystem: {e}")))?;
    nix::unistd::chroot(&merged)?;
    nix::unistd::chdir("/")?;
    Ok(())
}

/// A writer that takes at most `room` bytes in all, then fails every write.
pub struct Bounded<W> {
    pub inner: W,
    pub room: u64,
}

impl<W: std::io::Write> std::io::Write for Bounded<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() as u64 > self.room {
            self.room = 0;
            return Err(std::io::Error::other("the stream passed its bound"));
        }
        let n = self.inner.write(buf)?;
        self.room -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The same tar stream with its top-level entry renamed (`cp file ctr:/new-name`).
pub fn rename_top_entry(tar: &[u8], new_name: &str) -> Result<Vec<u8>, RuntimeError> {
    rename_entries(tar, new_name).map_err(tar_error("renaming the copy".into()))
}

fn rename_entries(tar: &[u8], new_name: &str) -> std::io::Result<Vec<u8>> {
    let mut out = tar::Builder::new(Vec::new());
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let mut parts = path.components();
        parts.next();
        let renamed = Path::new(new_name).join(parts.as_path());
        let mut header = entry.header().clone();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data)?;
        if let Some(target) = entry.link_name()? {
            out.append_link(&mut header, &renamed, target)?;
        } else {
            out.append_data(&mut header, &renamed, &data[..])?;
        }
    }
    out.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_writer_stops_at_its_bound() {
        use std::io::Write;
        let mut w = Bounded {
            inner: Vec::new(),
            room: 5,
        };
        w.write_all(b"abc").unwrap();
        assert!(w.write_all(b"def").is_err());
        assert_eq!(w.room, 0);
        assert_eq!(w.inner, b"abc");
    }

    #[test]
    fn place_names_like_docker() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("tree")).unwrap();
        std::fs::write(src.path().join("tree/f"), b"x").unwrap();
        let dst = tempfile::tempdir().unwrap();
        let mut tar = Vec::new();
        send(&src.path().join("tree"), &mut tar).unwrap();
        // Into an existing directory: keeps its name.
        place(&tar[..], dst.path()).unwrap();
        assert!(dst.path().join("tree/f").exists());
        // To a new name: becomes that name.
        place(&tar[..], &dst.path().join("renamed")).unwrap();
        assert!(dst.path().join("renamed/f").exists());
    }
}
