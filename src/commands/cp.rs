//! `husk cp`: copy files between the host and a process-isolated container.
//!
//! The container side is always read or written from inside the container's own mount view
//! (its mount namespace when running; a private overlay mount and chroot when stopped), so a
//! symlink in the container resolves inside the container and can never reach host files.
//! The two sides exchange a tar stream over a pipe.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use husk::container::{Containers, Isolation, Record, Status};

use super::run::layer_dirs;

#[derive(Debug, Args)]
pub struct CpArgs {
    /// CONTAINER:SRC_PATH or a host path.
    pub source: String,
    /// CONTAINER:DEST_PATH or a host path.
    pub destination: String,
}

enum Direction {
    FromContainer { container: String, path: String },
    IntoContainer { container: String, path: String },
}

fn split(arg: &str) -> Option<(&str, &str)> {
    // Docker's rule: a colon before any slash names a container.
    let colon = arg.find(':')?;
    if arg[..colon].contains('/') || colon == 0 {
        return None;
    }
    Some((&arg[..colon], &arg[colon + 1..]))
}

/// Put the single top-level entry of a tar stream at `dest`: inside it when it is an existing
/// directory, else as `dest` itself (Docker's naming).
fn place(archive: impl std::io::Read, dest: &Path) -> Result<()> {
    if dest.is_dir() {
        let mut archive = tar::Archive::new(archive);
        archive.set_preserve_permissions(true);
        archive.set_overwrite(true);
        return archive
            .unpack(dest)
            .with_context(|| format!("extracting into {}", dest.display()));
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        bail!("no such directory: {}", parent.display());
    }
    let staging = parent.join(format!(".husk-cp-{}", std::process::id()));
    std::fs::create_dir(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let result = (|| -> Result<()> {
        let mut archive = tar::Archive::new(archive);
        archive.set_preserve_permissions(true);
        archive.unpack(&staging)?;
        let entry = std::fs::read_dir(&staging)?
            .next()
            .context("nothing was copied")??;
        std::fs::rename(entry.path(), dest)
            .with_context(|| format!("moving into place at {}", dest.display()))
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// A tar stream of `source` (a file or a directory tree, symlinks kept as symlinks).
fn send(source: &Path, out: impl std::io::Write) -> Result<()> {
    let name = source
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let meta = std::fs::symlink_metadata(source)
        .with_context(|| format!("no such file or directory: {}", source.display()))?;
    if meta.is_dir() {
        builder.append_dir_all(&name, source)?;
    } else {
        builder.append_path_with_name(source, &name)?;
    }
    std::io::Write::flush(&mut builder.into_inner()?)?;
    Ok(())
}

/// Enter the container's filesystem view in this (forked, single-threaded) process.
fn enter_container(store: &Containers, root: &Path, record: &Record) -> Result<()> {
    if record.effective_status() == Status::Running {
        let pid = record
            .state
            .pid
            .context("the container has no recorded process")?;
        let ns = File::open(format!("/proc/{pid}/ns/mnt"))?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNS)?;
        return Ok(());
    }
    // Stopped: the same overlay the container runs on, mounted privately for this process.
    let dir = store.dir_of(&record.id);
    let layers = layer_dirs(root, record)?;
    let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("rootfs"));
    for d in [&upper, &work, &merged] {
        std::fs::create_dir_all(d)?;
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
    let options = husk::process::rootfs::overlay_options(&layers, &upper, &work)?;
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(options.as_str()),
    )
    .context("mounting the container's filesystem")?;
    nix::unistd::chroot(&merged)?;
    nix::unistd::chdir("/")?;
    Ok(())
}

pub fn cp(root: &Path, args: CpArgs) -> Result<i32> {
    let direction = match (split(&args.source), split(&args.destination)) {
        (Some(_), Some(_)) => bail!("copying between containers is not supported"),
        (Some((c, p)), None) => Direction::FromContainer {
            container: c.into(),
            path: p.into(),
        },
        (None, Some((c, p))) => Direction::IntoContainer {
            container: c.into(),
            path: p.into(),
        },
        (None, None) => bail!("must specify at least one container source"),
    };
    let store = Containers::open(root)?;
    let (container, path) = match &direction {
        Direction::FromContainer { container, path }
        | Direction::IntoContainer { container, path } => (container, path),
    };
    let record = store.find(container)?;
    let container_path = PathBuf::from("/").join(path.trim_start_matches('/'));
    if record.isolation == Isolation::Vm {
        let into = matches!(direction, Direction::IntoContainer { .. });
        return cp_vm(&store, &record, &container_path, &args, into);
    }
    let (read_end, write_end) = nix::unistd::pipe()?;
    let into = matches!(direction, Direction::IntoContainer { .. });

    // SAFETY: the CLI is single-threaded here; the child only enters the container's
    // filesystem, streams or extracts one tar, and exits with _exit.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            let result = (|| -> Result<()> {
                enter_container(&store, root, &record)?;
                if into {
                    drop(write_end);
                    place(File::from(read_end), &container_path)
                } else {
                    drop(read_end);
                    send(&container_path, File::from(write_end))
                }
            })();
            if let Err(err) = &result {
                eprintln!("husk: {err:#}");
            }
            // SAFETY: ends the forked child without the parent's exit handlers.
            unsafe { libc::_exit(i32::from(result.is_err())) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            let local = if into {
                drop(read_end);
                send(Path::new(&args.source), File::from(write_end))
            } else {
                drop(write_end);
                place(File::from(read_end), Path::new(&args.destination))
            };
            let status = nix::sys::wait::waitpid(child, None)?;
            local?;
            match status {
                nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(0),
                _ => Ok(1),
            }
        }
    }
}

/// `cp` for a running VM container: the guest's own tar (busybox has one) runs through the
/// agent, reading or writing the tar stream husk produces or consumes on the host.
fn cp_vm(
    store: &Containers,
    record: &Record,
    container_path: &Path,
    args: &CpArgs,
    into: bool,
) -> Result<i32> {
    use super::vm_container::{exec_via_supervisor, root_request};
    if record.effective_status() != Status::Running {
        bail!("cp with --isolation vm needs the container running (its disk lives in the guest)");
    }
    let in_guest = |command: Vec<String>,
                    stdin: Option<Box<dyn std::io::Read + Send>>,
                    stdout: &mut dyn std::io::Write|
     -> Result<i32> {
        let request = root_request(store, record, command, stdin.is_some())?;
        // What the guest says on stderr is kept for the error line, within a bound.
        let mut errors = Bounded {
            inner: Vec::new(),
            room: 64 << 10,
        };
        let code = exec_via_supervisor(&record.id, &request, stdin, stdout, &mut errors, false)?;
        if code != 0 {
            bail!(
                "in the guest: {}",
                String::from_utf8_lossy(&errors.inner).trim()
            );
        }
        Ok(code)
    };
    let parent = container_path
        .parent()
        .unwrap_or(Path::new("/"))
        .display()
        .to_string();
    let name = container_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".".into());
    if into {
        let source = Path::new(&args.source);
        // Into an existing directory the copy keeps its name; otherwise it takes the new one.
        let is_dir = in_guest(
            vec![
                "test".into(),
                "-d".into(),
                container_path.display().to_string(),
            ],
            None,
            &mut std::io::sink(),
        )
        .is_ok();
        let (target_dir, entry_name) = if is_dir {
            (container_path.display().to_string(), None)
        } else {
            (parent, Some(name))
        };
        let mut tar = Vec::new();
        send(source, &mut tar)?;
        if let Some(entry_name) = entry_name {
            tar = rename_top_entry(&tar, &entry_name)?;
        }
        in_guest(
            vec![
                "tar".into(),
                "-xf".into(),
                "-".into(),
                "-C".into(),
                target_dir,
            ],
            Some(Box::new(std::io::Cursor::new(tar))),
            &mut std::io::sink(),
        )?;
    } else {
        // The guest decides how much its tar sends, so the stream goes to an unnamed file
        // beside the destination (not to memory), and only up to a bound; nothing is placed
        // until it has ended well.
        let dest = Path::new(&args.destination);
        let dest_dir = if dest.is_dir() {
            dest.to_path_buf()
        } else {
            match dest.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            }
        };
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            // O_TMPFILE: a file with no name, gone with its last descriptor, even after a kill.
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_TMPFILE)
                .open(&dest_dir)
                .with_context(|| format!("creating a staging file in {}", dest_dir.display()))?
        };
        let limit = guest_tar_limit()?;
        let mut staged = Bounded {
            inner: std::io::BufWriter::new(file),
            room: limit,
        };
        in_guest(
            vec![
                "tar".into(),
                "-cf".into(),
                "-".into(),
                "-C".into(),
                parent,
                name,
            ],
            None,
            &mut staged,
        )
        .map_err(|err| {
            if staged.room == 0 {
                anyhow::anyhow!(
                    "the guest's tar stream passed {limit} bytes: copy stopped, nothing written"
                )
            } else {
                err
            }
        })?;
        let mut file = staged
            .inner
            .into_inner()
            .context("writing the staging file")?;
        std::io::Seek::rewind(&mut file).context("reading the staging file")?;
        place(file, dest)?;
    }
    Ok(0)
}

/// The most bytes `cp` takes from a guest's tar: 64 GiB, or `HUSK_CP_MAX_BYTES`.
fn guest_tar_limit() -> Result<u64> {
    match std::env::var("HUSK_CP_MAX_BYTES") {
        Ok(v) => v
            .parse()
            .with_context(|| format!("HUSK_CP_MAX_BYTES={v}: expected a number of bytes")),
        Err(_) => Ok(64 << 30),
    }
}

/// A writer that takes at most `room` bytes in all, then fails every write.
struct Bounded<W> {
    inner: W,
    room: u64,
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
fn rename_top_entry(tar: &[u8], new_name: &str) -> Result<Vec<u8>> {
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
    Ok(out.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths_follow_dockers_colon_rule() {
        assert_eq!(split("web:/etc/hosts"), Some(("web", "/etc/hosts")));
        assert_eq!(split("./a:b"), None);
        assert_eq!(split("/tmp/x"), None);
        assert_eq!(split(":x"), None);
    }

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
