//! Releasing what a container holds on the host when the process that should have released it
//! is gone (husk or its monitor was killed): the rootfs mount and the cgroups. Idempotent, so
//! `rm` can always call it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    #[error("cannot unmount {path}: {source}")]
    Unmount { path: PathBuf, source: nix::Error },
    #[error("cannot remove cgroup {path}: {source} (processes still inside?)")]
    Cgroup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The cgroup path (relative to each hierarchy's mount point) husk gives a container.
pub fn cgroup_name(container_id: &str) -> String {
    format!("husk/{container_id}")
}

/// Mount points from /proc/self/mountinfo (field 5), with octal escapes decoded.
pub fn mount_points() -> Result<Vec<(PathBuf, String)>, TeardownError> {
    let path = PathBuf::from("/proc/self/mountinfo");
    let text = fs::read_to_string(&path).map_err(|source| TeardownError::Read { path, source })?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let separator = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(separator + 1)?.to_string();
            Some((PathBuf::from(unescape(fields.get(4)?)), fstype))
        })
        .collect())
}

fn unescape(field: &str) -> String {
    let mut out = Vec::new();
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            if let Ok(value) = u8::from_str_radix(&field[i + 1..i + 4], 8) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmount everything mounted at or below `container_dir` (deepest first) and remove the
/// container's cgroup in every hierarchy, killing anything still inside.
pub fn release_leftovers(container_dir: &Path, container_id: &str) -> Result<(), TeardownError> {
    let mounts = mount_points()?;
    let mut below: Vec<&PathBuf> = mounts
        .iter()
        .map(|(p, _)| p)
        .filter(|p| p.starts_with(container_dir))
        .collect();
    below.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    below.dedup();
    for path in below {
        match umount2(path.as_path(), MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(source) => {
                return Err(TeardownError::Unmount {
                    path: path.clone(),
                    source,
                })
            }
        }
    }
    let name = cgroup_name(container_id);
    let mut hierarchies: Vec<PathBuf> = mounts
        .iter()
        .filter(|(_, fstype)| fstype == "cgroup" || fstype == "cgroup2")
        .map(|(p, _)| p.join(&name))
        .filter(|p| p.is_dir())
        .collect();
    hierarchies.dedup();
    for dir in hierarchies {
        remove_cgroup(&dir)?;
    }
    Ok(())
}

fn remove_cgroup(dir: &Path) -> Result<(), TeardownError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) if Instant::now() > deadline => {
                return Err(TeardownError::Cgroup {
                    path: dir.to_path_buf(),
                    source,
                })
            }
            // Killed processes take a moment to leave the cgroup.
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Bytes used by regular files below `dir` (for prune's reclaimed-space line).
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => dir_size(&entry.path()),
            Ok(t) if t.is_file() => entry.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn releasing_nothing_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        release_leftovers(dir.path(), "0123456789ab").unwrap();
    }
}
