//! Volumes and binds for VM containers: each shared host directory is served to the guest over
//! virtio-fs by its own virtiofsd (the Rust vhost-user daemon QEMU, Cloud Hypervisor and Kata
//! use), which runs sandboxed (its own namespaces, pivoted into the shared directory, seccomp)
//! and, for a read-only mount, refuses every write itself: the guest's own mount flag is only
//! advice to a guest that is hostile.
//!
//! The supervisor makes the listening socket and hands it to the daemon (`--fd`), so the
//! monitor can connect at once; the daemon serves one connection and exits when the monitor
//! goes (its end of the socket closes), and the supervisor kills it if it outlives the VM.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rootfs_agent::protocol::{GuestMount, GuestMountKind};

use super::VmError;
use crate::container::spec::{MountKind, UserMount};

/// Where setup.sh installs virtiofsd (built from crates.io: Debian 12 does not package it).
pub const INSTALLED_VIRTIOFSD: &str = "/var/cache/husk/virtiofsd/bin/virtiofsd";
/// The descriptor the daemon finds its listening socket on.
const LISTEN_FD: i32 = 3;
/// The guest's page cache keeps file data and attributes for a second (virtiofsd's "auto"):
/// a change made on the host or by another container shows within that second.
pub const CACHE_MODE: &str = "auto";

/// One host directory shared with the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The virtio-fs tag the guest mounts it by.
    pub tag: String,
    pub source: PathBuf,
    pub read_only: bool,
}

/// The shares and guest mounts for a container's `-v`, `--mount` and `--tmpfs`, in order.
pub fn plan_mounts(mounts: &[UserMount]) -> (Vec<Share>, Vec<GuestMount>) {
    let mut shares = Vec::new();
    let mut guest = Vec::new();
    for mount in mounts {
        match mount.kind {
            MountKind::Bind | MountKind::Volume => {
                let tag = format!("husk-fs{}", shares.len());
                shares.push(Share {
                    tag: tag.clone(),
                    source: PathBuf::from(&mount.source),
                    read_only: mount.read_only,
                });
                guest.push(GuestMount {
                    kind: GuestMountKind::Virtiofs,
                    source: tag,
                    target: mount.destination.clone(),
                    readonly: mount.read_only,
                    subpath: None,
                });
            }
            MountKind::Tmpfs => guest.push(GuestMount {
                kind: GuestMountKind::Tmpfs,
                source: String::new(),
                target: mount.destination.clone(),
                readonly: mount.read_only,
                subpath: None,
            }),
        }
    }
    (shares, guest)
}

/// The virtiofsd binary: the chosen one (HUSK_VIRTIOFSD), then setup.sh's build, then
/// Debian's and the PATH.
pub fn locate_daemon(chosen: Option<&Path>) -> Result<PathBuf, VmError> {
    if let Some(path) = chosen {
        let path = path.to_path_buf();
        if !path.is_file() {
            return Err(VmError::Invalid(format!(
                "HUSK_VIRTIOFSD={}: no virtiofsd there (volumes with --isolation vm need it)",
                path.display()
            )));
        }
        return Ok(path);
    }
    let mut candidates = vec![
        PathBuf::from(INSTALLED_VIRTIOFSD),
        PathBuf::from("/usr/libexec/virtiofsd"),
    ];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join("virtiofsd")));
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        VmError::Invalid(
            "volumes with --isolation vm need virtiofsd: run scripts/setup.sh (it builds it), \
             or set HUSK_VIRTIOFSD"
                .into(),
        )
    })
}

/// A running virtiofsd serving one share.
#[derive(Debug)]
pub struct Daemon {
    pub tag: String,
    /// The socket the monitor connects to.
    pub socket: PathBuf,
    child: Child,
}

impl Daemon {
    /// Start a daemon for `share`, listening on `<runtime_dir>/<tag>.sock`; its messages go
    /// to `log`.
    pub fn spawn(
        binary: &Path,
        share: &Share,
        runtime_dir: &Path,
        log: &Path,
    ) -> Result<Daemon, VmError> {
        if !share.source.is_dir() {
            return Err(VmError::Invalid(format!(
                "the volume source {} is not a directory",
                share.source.display()
            )));
        }
        let socket = runtime_dir.join(format!("{}.sock", share.tag));
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).map_err(VmError::io("listening on", &socket))?;
        let log_file = open_log(log)?;
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--fd={LISTEN_FD}"))
            .arg("--shared-dir")
            .arg(&share.source)
            .arg(format!("--cache={CACHE_MODE}"))
            .arg("--sandbox=namespace")
            .arg("--log-level=error");
        if share.read_only {
            cmd.arg("--readonly");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let fd = listener.as_raw_fd();
        // SAFETY: runs in the forked child before exec and only calls dup2, fcntl and prctl,
        // which are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if fd == LISTEN_FD {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, LISTEN_FD) != LISTEN_FD {
                    return Err(std::io::Error::last_os_error());
                }
                // The daemon dies with the supervisor that serves the VM.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(VmError::io("starting", binary))?;
        // The daemon holds the listener now; ours closes, the socket stays bound.
        drop(listener);
        Ok(Daemon {
            tag: share.tag.clone(),
            socket,
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stop the daemon: normally it has exited already, with the monitor's connection.
    pub fn stop(&mut self) {
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

fn open_log(path: &Path) -> Result<File, VmError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(VmError::io("opening", path))
}

/// Start one daemon per share.
pub fn start_daemons(
    binary: Option<&Path>,
    shares: &[Share],
    runtime_dir: &Path,
    log: &Path,
) -> Result<Vec<Daemon>, VmError> {
    if shares.is_empty() {
        return Ok(Vec::new());
    }
    let binary = match binary {
        Some(binary) => binary.to_path_buf(),
        None => locate_daemon(None)?,
    };
    shares
        .iter()
        .map(|share| Daemon::spawn(&binary, share, runtime_dir, log))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(kind: MountKind, source: &str, destination: &str, read_only: bool) -> UserMount {
        UserMount {
            kind,
            name: source.into(),
            source: source.into(),
            destination: destination.into(),
            read_only,
        }
    }

    #[test]
    fn binds_and_volumes_become_shares_and_tmpfs_stays_in_the_guest() {
        let (shares, guest) = plan_mounts(&[
            user(MountKind::Volume, "/v/data/_data", "/data", false),
            user(MountKind::Tmpfs, "", "/scratch", false),
            user(MountKind::Bind, "/srv/www", "/www", true),
        ]);
        assert_eq!(
            shares,
            vec![
                Share {
                    tag: "husk-fs0".into(),
                    source: "/v/data/_data".into(),
                    read_only: false
                },
                Share {
                    tag: "husk-fs1".into(),
                    source: "/srv/www".into(),
                    read_only: true
                },
            ]
        );
        let kinds: Vec<_> = guest
            .iter()
            .map(|m| {
                (
                    m.kind.clone(),
                    m.source.as_str(),
                    m.target.as_str(),
                    m.readonly,
                )
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                (GuestMountKind::Virtiofs, "husk-fs0", "/data", false),
                (GuestMountKind::Tmpfs, "", "/scratch", false),
                (GuestMountKind::Virtiofs, "husk-fs1", "/www", true),
            ]
        );
        for m in &guest {
            m.validate().expect("planned mounts are valid");
        }
    }
}
