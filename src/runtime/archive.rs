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
        // Joining the mount namespace puts us at that namespace's own root, which is the
        // container's only when husk itself is not chrooted (in the nested tier's L1 it is,
        // and a copy landed in L1's initramfs): the init's root is taken before, and entered.
        let init_root = File::open(format!("/proc/{pid}/root"))
            .map_err(tar_error("opening the container's root".into()))?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNS)?;
        nix::unistd::fchdir(std::os::fd::AsRawFd::as_raw_fd(&init_root))?;
        nix::unistd::chroot(".")?;
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

/// What `stat` of a path in a container says, as the Engine API's archive endpoints report it
/// (the X-Docker-Container-Path-Stat header): the final component is not followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathStat {
    pub name: String,
    pub size: u64,
    /// st_mode: the file type and permission bits.
    pub mode: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
    pub link_target: String,
}

impl PathStat {
    /// The mode as Go's os.FileMode encodes it (what the docker CLI decodes): permission bits
    /// plus one flag bit per file type and for setuid, setgid and sticky.
    pub fn go_file_mode(&self) -> u32 {
        let mut mode = self.mode & 0o777;
        mode |= match self.mode & libc::S_IFMT {
            libc::S_IFDIR => 1 << 31,
            libc::S_IFLNK => 1 << 27,
            libc::S_IFBLK => 1 << 26,
            libc::S_IFIFO => 1 << 25,
            libc::S_IFSOCK => 1 << 24,
            libc::S_IFCHR => (1 << 26) | (1 << 21),
            _ => 0,
        };
        for (bit, flag) in [
            (libc::S_ISUID, 1 << 23),
            (libc::S_ISGID, 1 << 22),
            (libc::S_ISVTX, 1 << 20),
        ] {
            if self.mode & bit != 0 {
                mode |= flag;
            }
        }
        mode
    }

    /// One line the sandboxes pass between the container's side and the host's:
    /// `MODE(hex) SIZE MTIME NAME`, then the link target on a line of its own.
    pub fn encode(&self) -> String {
        format!(
            "{:x} {} {} {}\n{}",
            self.mode, self.size, self.mtime, self.name, self.link_target
        )
    }

    /// The container's side is not trusted: a malformed answer is an error, never a panic.
    pub fn decode(text: &str) -> Result<Self, RuntimeError> {
        let bad = || {
            fail(format!(
                "a malformed stat from the container: {:?}",
                text.chars().take(80).collect::<String>()
            ))
        };
        let (first, link_target) = text.split_once('\n').unwrap_or((text, ""));
        let mut fields = first.splitn(4, ' ');
        let mode = u32::from_str_radix(fields.next().ok_or_else(bad)?, 16).map_err(|_| bad())?;
        let size = fields.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let mtime = fields.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let name = fields.next().ok_or_else(bad)?.to_string();
        Ok(Self {
            name,
            size,
            mode,
            mtime,
            link_target: link_target.trim_end_matches('\n').to_string(),
        })
    }

    /// lstat of `path` in this process's view.
    pub fn of(path: &Path) -> Result<Self, RuntimeError> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path)
            .map_err(|err| fail(format!("stat {}: {err}", path.display())))?;
        let link_target = if meta.file_type().is_symlink() {
            std::fs::read_link(path)
                .map(|t| t.display().to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Self {
            name: base_name(path),
            size: meta.size(),
            mode: meta.mode(),
            mtime: meta.mtime(),
            link_target,
        })
    }
}

/// Docker's name for a path's stat: its last component, or "/" for the root.
pub fn base_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".into())
}

#[cfg(test)]
mod stat_tests {
    use super::*;

    #[test]
    fn a_stat_round_trips_and_go_modes_match_dockers() {
        let stat = PathStat {
            name: "a b".into(),
            size: 13,
            mode: libc::S_IFDIR | 0o1755,
            mtime: 1_700_000_000,
            link_target: String::new(),
        };
        assert_eq!(PathStat::decode(&stat.encode()).unwrap(), stat);
        // os.ModeDir|os.ModeSticky|0755, as Go prints 2148532717.
        assert_eq!(stat.go_file_mode(), (1 << 31) | (1 << 20) | 0o755);
        let link = PathStat {
            mode: libc::S_IFLNK | 0o777,
            link_target: "/etc/x".into(),
            ..stat
        };
        assert_eq!(
            PathStat::decode(&link.encode()).unwrap().link_target,
            "/etc/x"
        );
        assert_eq!(link.go_file_mode(), (1 << 27) | 0o777);
        for bad in ["", "zz 1 2 n", "1 x 2 n", "1 2", "ffffffffff 1 2 n"] {
            assert!(PathStat::decode(bad).is_err(), "{bad:?}");
        }
    }
}
