//! The container's root filesystem, built inside its new mount namespace: overlayfs of the
//! image layers plus a per-container upper dir, the spec's mounts, /dev, the generated /etc
//! files, pivot_root, and the masked and read-only paths. Every mount lives in the container's
//! private mount namespace, so nothing leaks onto the host and all of it vanishes with the
//! container's last process.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{op} {path}: {source}")]
    Sys {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("layer path {0} cannot be used in overlay options (contains ':' or ',')")]
    BadLayerPath(PathBuf),
    #[error("overlay options for {0} layers exceed the kernel's page-size limit")]
    TooManyLayers(usize),
    #[error("the image has no layers")]
    NoLayers,
    #[error("mount destination {0} must be an absolute path without '..'")]
    BadDestination(PathBuf),
    #[error("mount destination {0} goes through a symlink in the image")]
    SymlinkDestination(PathBuf),
}

fn sys(op: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> RootfsError {
    let path = path.to_path_buf();
    move |source| RootfsError::Sys { op, path, source }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError {
    let path = path.to_path_buf();
    move |source| RootfsError::Io { op, path, source }
}

/// The per-container directories under the container dir.
pub struct ContainerDirs {
    pub upper: PathBuf,
    pub work: PathBuf,
    pub rootfs: PathBuf,
    /// Generated /etc/hostname, /etc/hosts and /etc/resolv.conf, bind-mounted read-write
    /// like Docker does, so the image's own files stay untouched.
    pub etc: PathBuf,
}

impl ContainerDirs {
    pub fn new(container_dir: &Path) -> Self {
        Self {
            upper: container_dir.join("upper"),
            work: container_dir.join("work"),
            rootfs: container_dir.join("rootfs"),
            etc: container_dir.join("etc"),
        }
    }

    pub fn create(&self) -> Result<(), RootfsError> {
        for dir in [&self.upper, &self.work, &self.rootfs, &self.etc] {
            std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        }
        Ok(())
    }
}

/// overlayfs options; the kernel wants the top layer first in lowerdir.
pub fn overlay_options(
    lower_dirs: &[PathBuf],
    upper: &Path,
    work: &Path,
) -> Result<String, RootfsError> {
    if lower_dirs.is_empty() {
        return Err(RootfsError::NoLayers);
    }
    for path in lower_dirs.iter().map(|p| p.as_path()).chain([upper, work]) {
        let text = path.to_string_lossy();
        if text.contains(':') || text.contains(',') {
            return Err(RootfsError::BadLayerPath(path.to_path_buf()));
        }
    }
    let lower: Vec<String> = lower_dirs
        .iter()
        .rev()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    // mount(2) copies at most one page of options.
    if options.len() >= 4096 {
        return Err(RootfsError::TooManyLayers(lower_dirs.len()));
    }
    Ok(options)
}

/// Translate fstab-style options into mount flags plus the data string for the filesystem.
pub fn parse_mount_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for option in options {
        match option.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags &= !MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "suid" => flags &= !MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "dev" => flags &= !MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "exec" => flags &= !MsFlags::MS_NOEXEC,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => {}
            other => data.push(other.to_string()),
        }
    }
    (flags, data.join(","))
}

/// Everything the rootfs needs, gathered before namespaces are entered.
pub struct RootfsPlan<'a> {
    pub spec: &'a Spec,
    pub lower_dirs: &'a [PathBuf],
    pub dirs: &'a ContainerDirs,
    pub hostname: String,
}

/// Write the generated /etc files into the container dir (host side, before the fork).
pub fn write_etc_files(plan: &RootfsPlan) -> Result<(), RootfsError> {
    let host_network = !has_namespace(plan.spec, LinuxNamespaceType::Network);
    let hosts = if host_network {
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n"
            .to_string()
    };
    let resolv = if host_network {
        std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
    } else {
        "# husk: --network none, only loopback is up; no name servers\n".to_string()
    };
    for (name, content) in [
        ("hostname", format!("{}\n", plan.hostname)),
        ("hosts", hosts),
        ("resolv.conf", resolv),
    ] {
        let path = plan.dirs.etc.join(name);
        std::fs::write(&path, content).map_err(io("writing", &path))?;
    }
    Ok(())
}

pub fn has_namespace(spec: &Spec, typ: LinuxNamespaceType) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == typ && n.path().is_none()))
}

/// Build the root filesystem and pivot into it. Runs in the container's init process, in its
/// new mount namespace, before any privilege is dropped.
pub fn setup(plan: &RootfsPlan) -> Result<(), RootfsError> {
    let root = Path::new("/");
    // Nothing we mount may propagate back to the host.
    mount(
        None::<&str>,
        root,
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(sys("making mounts private on", root))?;

    let dirs = plan.dirs;
    let options = overlay_options(plan.lower_dirs, &dirs.upper, &dirs.work)?;
    mount(
        Some("overlay"),
        &dirs.rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(sys("mounting overlay on", &dirs.rootfs))?;

    // Host-side sources must be bound before the host tree goes away.
    for name in ["hostname", "hosts", "resolv.conf"] {
        let target = match in_root(&dirs.rootfs, Path::new("/etc").join(name).as_path()) {
            Ok(target) => target,
            // The image manages this file through a link of its own; leave it be.
            Err(RootfsError::SymlinkDestination(_)) => continue,
            Err(err) => return Err(err),
        };
        ensure_file(&target)?;
        bind(&dirs.etc.join(name), &target, false)?;
    }
    for m in spec_mounts(plan.spec).filter(|m| is_bind(m)) {
        let Some(source) = m.source() else { continue };
        let target = in_root(&dirs.rootfs, m.destination())?;
        if source.is_dir() {
            std::fs::create_dir_all(&target).map_err(io("creating", &target))?;
        } else {
            ensure_file(&target)?;
        }
        let (flags, _) = parse_mount_options(m.options().as_deref().unwrap_or_default());
        bind(source, &target, flags.contains(MsFlags::MS_RDONLY))?;
    }

    pivot(&dirs.rootfs)?;

    for m in spec_mounts(plan.spec).filter(|m| !is_bind(m)) {
        mount_in_container(m)?;
    }
    make_dev()?;

    if let Some(linux) = plan.spec.linux() {
        for path in linux.masked_paths().iter().flatten() {
            mask(Path::new(path))?;
        }
        for path in linux.readonly_paths().iter().flatten() {
            make_readonly(Path::new(path))?;
        }
    }
    if plan
        .spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount(None::<&str>, root, None::<&str>, flags, None::<&str>)
            .map_err(sys("remounting read-only", root))?;
    }
    Ok(())
}

fn spec_mounts(spec: &Spec) -> impl Iterator<Item = &Mount> {
    spec.mounts().iter().flatten()
}

fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

/// `dest` inside `root`, refusing '..' and symlinks the image could use to point a mount at
/// the host.
fn in_root(root: &Path, dest: &Path) -> Result<PathBuf, RootfsError> {
    if !dest.is_absolute() || dest.components().any(|c| c == Component::ParentDir) {
        return Err(RootfsError::BadDestination(dest.to_path_buf()));
    }
    let mut path = root.to_path_buf();
    for component in dest.components() {
        if let Component::Normal(part) = component {
            path.push(part);
            if path
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
            {
                return Err(RootfsError::SymlinkDestination(dest.to_path_buf()));
            }
        }
    }
    Ok(path)
}

fn ensure_file(path: &Path) -> Result<(), RootfsError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
    }
    if !path.exists() {
        std::fs::File::create(path).map_err(io("creating", path))?;
    }
    Ok(())
}

fn bind(source: &Path, target: &Path, readonly: bool) -> Result<(), RootfsError> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount(Some(source), target, None::<&str>, flags, None::<&str>)
        .map_err(sys("bind-mounting onto", target))?;
    if readonly {
        let flags = flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
            .map_err(sys("remounting read-only", target))?;
    }
    Ok(())
}

/// pivot_root(".", ".") stacks the old root under the new one; detaching it leaves only the
/// container's tree (runc's approach, no temporary directory needed).
fn pivot(new_root: &Path) -> Result<(), RootfsError> {
    nix::unistd::chdir(new_root).map_err(sys("entering", new_root))?;
    nix::unistd::pivot_root(".", ".").map_err(sys("pivot_root into", new_root))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys("detaching old root from", new_root))?;
    nix::unistd::chdir("/").map_err(sys("entering", Path::new("/")))?;
    Ok(())
}

fn mount_in_container(m: &Mount) -> Result<(), RootfsError> {
    let dest = m.destination();
    if !dest.is_absolute() || dest.components().any(|c| c == Component::ParentDir) {
        return Err(RootfsError::BadDestination(dest.to_path_buf()));
    }
    std::fs::create_dir_all(dest).map_err(io("creating", dest))?;
    let (flags, data) = parse_mount_options(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().clone().unwrap_or_default();
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(&typ));
    let data = (!data.is_empty()).then_some(data.as_str());
    mount(Some(&source), dest, Some(typ.as_str()), flags, data).map_err(sys("mounting", dest))
}

/// The standard device nodes and links on the /dev tmpfs.
fn make_dev() -> Result<(), RootfsError> {
    let dev = Path::new("/dev");
    if !dev.exists() {
        return Ok(());
    }
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let path = dev.join(name);
        if path.exists() {
            continue;
        }
        mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(sys("creating device", &path))?;
        // mknod applies the umask.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
            .map_err(io("chmod", &path))?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
        ("ptmx", "pts/ptmx"),
    ] {
        let path = dev.join(link);
        if path.symlink_metadata().is_ok() {
            if link != "ptmx" {
                continue;
            }
            // An image may ship a ptmx node; the devpts instance's must be used.
            let _ = std::fs::remove_file(&path);
        }
        std::os::unix::fs::symlink(target, &path).map_err(io("linking", &path))?;
    }
    Ok(())
}

/// runc: files are covered by /dev/null, directories by an empty read-only tmpfs.
fn mask(path: &Path) -> Result<(), RootfsError> {
    let Ok(meta) = path.metadata() else {
        return Ok(());
    };
    if meta.is_dir() {
        let flags =
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            flags,
            Some("size=0,mode=755"),
        )
        .map_err(sys("masking", path))
    } else {
        mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys("masking", path))
    }
}

fn make_readonly(path: &Path) -> Result<(), RootfsError> {
    if path.symlink_metadata().is_err() {
        return Ok(());
    }
    let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount(Some(path), path, None::<&str>, flags, None::<&str>)
        .map_err(sys("bind-mounting read-only", path))?;
    let remount = flags
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    mount(None::<&str>, path, None::<&str>, remount, None::<&str>)
        .map_err(sys("remounting read-only", path))
}

/// Open /dev/ptmx of the container's devpts instance: returns (master, slave path).
pub fn open_pty() -> Result<(std::os::fd::OwnedFd, PathBuf), RootfsError> {
    use nix::fcntl::OFlag;
    let ptmx = Path::new("/dev/ptmx");
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(sys("opening", ptmx))?;
    nix::pty::grantpt(&master).map_err(sys("grantpt on", ptmx))?;
    nix::pty::unlockpt(&master).map_err(sys("unlockpt on", ptmx))?;
    let slave = nix::pty::ptsname_r(&master).map_err(sys("ptsname on", ptmx))?;
    // SAFETY: into_raw_fd hands over sole ownership of the descriptor, which from_raw_fd
    // takes back immediately.
    let master = unsafe {
        <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(
            std::os::fd::IntoRawFd::into_raw_fd(master),
        )
    };
    Ok((master, PathBuf::from(slave)))
}

/// Bring the loopback interface up in a fresh network namespace.
pub fn loopback_up() -> Result<(), RootfsError> {
    use std::os::fd::AsRawFd;
    let lo = Path::new("lo");
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(sys("opening a socket for", lo))?;
    // SAFETY: ifreq is a plain C struct for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads a valid, initialised ifreq that outlives the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    if rc != 0 {
        return Err(sys("bringing up", lo)(nix::Error::last()));
    }
    Ok(())
}

/// A C string for a path or argument, refusing interior NULs.
pub fn cstring(text: &str) -> Result<CString, RootfsError> {
    CString::new(text).map_err(|_| RootfsError::Io {
        op: "encoding",
        path: PathBuf::from(text.replace('\0', "\\0")),
        source: std::io::Error::from_raw_os_error(libc::EINVAL),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_lowerdir_is_top_first() {
        let layers = [
            PathBuf::from("/l/bottom"),
            PathBuf::from("/l/middle"),
            PathBuf::from("/l/top"),
        ];
        let opts = overlay_options(&layers, Path::new("/c/upper"), Path::new("/c/work")).unwrap();
        assert_eq!(
            opts,
            "lowerdir=/l/top:/l/middle:/l/bottom,upperdir=/c/upper,workdir=/c/work"
        );
        assert!(matches!(
            overlay_options(&[PathBuf::from("/a:b")], Path::new("/u"), Path::new("/w")),
            Err(RootfsError::BadLayerPath(_))
        ));
        assert!(matches!(
            overlay_options(&[], Path::new("/u"), Path::new("/w")),
            Err(RootfsError::NoLayers)
        ));
        let many: Vec<PathBuf> = (0..200)
            .map(|i| PathBuf::from(format!("/var/lib/husk/layers/{i:064}")))
            .collect();
        assert!(matches!(
            overlay_options(&many, Path::new("/u"), Path::new("/w")),
            Err(RootfsError::TooManyLayers(200))
        ));
    }

    #[test]
    fn mount_options_split_into_flags_and_data() {
        let opts: Vec<String> = [
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "ro",
            "mode=0620",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (flags, data) = parse_mount_options(&opts);
        assert_eq!(
            flags,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY
        );
        assert_eq!(data, "newinstance,ptmxmode=0666,mode=0620");
    }

    #[test]
    fn destinations_cannot_escape_through_dotdot_or_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/", tmp.path().join("evil")).unwrap();
        assert_eq!(
            in_root(tmp.path(), Path::new("/etc/hosts")).unwrap(),
            tmp.path().join("etc/hosts")
        );
        assert!(matches!(
            in_root(tmp.path(), Path::new("/../x")),
            Err(RootfsError::BadDestination(_))
        ));
        assert!(matches!(
            in_root(tmp.path(), Path::new("rel")),
            Err(RootfsError::BadDestination(_))
        ));
        assert!(matches!(
            in_root(tmp.path(), Path::new("/evil/etc/shadow")),
            Err(RootfsError::SymlinkDestination(_))
        ));
    }
}
