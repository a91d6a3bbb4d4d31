//! The container's root filesystem, built inside its new mount namespace: overlayfs of the
//! image layers plus a per-container upper dir, the spec's mounts, /dev, the generated /etc
//! files, pivot_root, and the masked and read-only paths. Every mount lives in the container's
//! private mount namespace, so nothing leaks onto the host and all of it vanishes with the
//! container's last process.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};

use super::in_root::{self, Create, InRootError, Symlinks};

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
    #[error("mount destination {0} must be an absolute path below / without '..'")]
    BadDestination(PathBuf),
    #[error("{0} in the image is {1}: it must be a directory")]
    NotADirectory(PathBuf, &'static str),
    #[error(transparent)]
    InRoot(#[from] InRootError),
    #[error("masked or read-only path {0} cannot be applied: {1}")]
    Mask(PathBuf, #[source] InRootError),
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

/// Where a container's root filesystem comes from.
#[derive(Clone, Copy)]
pub enum RootSource<'a> {
    /// husk's own containers: image layers (bottom first) under an overlay whose upper and
    /// work dirs, mountpoint and generated /etc files live in the container dir.
    Layers {
        lower_dirs: &'a [PathBuf],
        dirs: &'a ContainerDirs,
    },
    /// An OCI bundle's root (husk-runc): used as it is, as runc does; the bundle's maker
    /// (podman, containerd) wrote its /etc files and mounts.
    Bundle(&'a Path),
}

/// Everything the rootfs needs, gathered before namespaces are entered.
pub struct RootfsPlan<'a> {
    pub spec: &'a Spec,
    pub root: RootSource<'a>,
    pub hostname: String,
    /// /etc/hosts and /etc/resolv.conf of a container on a network (src/network).
    pub network: Option<(&'a str, &'a str)>,
    /// On a cgroup v1 host: (controller mount name, the container's own directory there), for
    /// a spec `cgroup` mount (OCI bundles have one at /sys/fs/cgroup).
    pub cgroup_v1: Vec<(String, PathBuf)>,
}

/// Write the generated /etc files into the container dir (host side, before the fork).
pub fn write_etc_files(plan: &RootfsPlan) -> Result<(), RootfsError> {
    let RootSource::Layers { dirs, .. } = plan.root else {
        return Ok(());
    };
    let host_network = !has_namespace(plan.spec, LinuxNamespaceType::Network);
    let hosts = if let Some((hosts, _)) = plan.network {
        hosts.to_string()
    } else if host_network {
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n"
            .to_string()
    };
    let resolv = if let Some((_, resolv)) = plan.network {
        resolv.to_string()
    } else if host_network {
        std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
    } else {
        "# husk: --network none, only loopback is up; no name servers\n".to_string()
    };
    for (name, content) in [
        ("hostname", format!("{}\n", plan.hostname)),
        ("hosts", hosts),
        ("resolv.conf", resolv),
    ] {
        let path = dirs.etc.join(name);
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

/// Build the root filesystem: the root and every mount in it, not yet entered (the OCI
/// createRuntime and createContainer hooks run here, before pivot_root; see
/// [`enter_root`]). Runs in the container's init process, in its new mount namespace, before
/// any privilege is dropped; returns the new root.
///
/// Every mount target is resolved inside the rootfs (in_root.rs) and mounted through its
/// descriptor, before pivot_root while the host's /proc can name those descriptors; the
/// masks and read-only paths follow in [`enter_root`], once the container's own /proc is in
/// place.
pub fn mount_root<'a>(plan: &RootfsPlan<'a>) -> Result<&'a Path, RootfsError> {
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

    let new_root = match plan.root {
        RootSource::Layers { lower_dirs, dirs } => {
            let options = overlay_options(lower_dirs, &dirs.upper, &dirs.work)?;
            mount(
                Some("overlay"),
                &dirs.rootfs,
                Some("overlay"),
                MsFlags::empty(),
                Some(options.as_str()),
            )
            .map_err(sys("mounting overlay on", &dirs.rootfs))?;
            dirs.rootfs.as_path()
        }
        RootSource::Bundle(root) => {
            // pivot_root needs a mount point: the bundle's root bound onto itself.
            mount(
                Some(root),
                root,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(sys("bind-mounting the bundle root", root))?;
            root
        }
    };

    let rootfs = in_root::open_root(new_root)?;
    for name in ["proc", "sys", "dev"] {
        require_directory(rootfs.as_fd(), name)?;
    }
    if let RootSource::Layers { dirs, .. } = plan.root {
        for name in ["hostname", "hosts", "resolv.conf"] {
            let dest = Path::new("/etc").join(name);
            // An image's /etc/resolv.conf is often a link (to ../run/...): followed inside
            // the rootfs, as Docker does, never onto the host.
            let target = in_root::open(rootfs.as_fd(), &dest, Create::File, Symlinks::Contain)?;
            bind(&dirs.etc.join(name), &target, &dest)?;
        }
    }
    for m in spec_mounts(plan.spec) {
        if m.typ().as_deref() == Some("cgroup") {
            mount_cgroup(rootfs.as_fd(), m, &plan.cgroup_v1)?;
        } else {
            mount_spec(rootfs.as_fd(), m)?;
        }
    }
    drop(rootfs);
    Ok(new_root)
}

/// Pivot into the root [`mount_root`] built, then /dev, the masked and read-only paths and a
/// read-only root.
pub fn enter_root(plan: &RootfsPlan, new_root: &Path) -> Result<(), RootfsError> {
    let root = Path::new("/");
    pivot(new_root)?;
    make_dev()?;
    make_passed_devices(plan.spec)?;

    if let Some(linux) = plan.spec.linux() {
        let root_fd = in_root::open_root(root)?;
        for path in linux.masked_paths().iter().flatten() {
            mask(root_fd.as_fd(), Path::new(path))?;
        }
        for path in linux.readonly_paths().iter().flatten() {
            make_readonly(root_fd.as_fd(), Path::new(path))?;
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

/// proc, sys and dev get the kernel's filesystems mounted on them: as symlinks they would
/// put procfs (and with it every mask) wherever the image points.
fn require_directory(rootfs: BorrowedFd, name: &str) -> Result<(), RootfsError> {
    let path = Path::new("/").join(name);
    let c = cstring(name)?;
    // SAFETY: fstatat with a descriptor we hold, a NUL-terminated name and a stat we own;
    // AT_SYMLINK_NOFOLLOW looks at the entry itself.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe {
        libc::fstatat(
            rootfs.as_raw_fd(),
            c.as_ptr(),
            &mut stat,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ENOENT) {
            return Err(io("inspecting", &path)(err));
        }
        // SAFETY: mkdirat with a descriptor we hold and a NUL-terminated name.
        if unsafe { libc::mkdirat(rootfs.as_raw_fd(), c.as_ptr(), 0o755) } != 0 {
            return Err(io("creating", &path)(std::io::Error::last_os_error()));
        }
        return Ok(());
    }
    match stat.st_mode & libc::S_IFMT {
        libc::S_IFDIR => Ok(()),
        libc::S_IFLNK => Err(RootfsError::NotADirectory(path, "a symlink")),
        _ => Err(RootfsError::NotADirectory(path, "not a directory")),
    }
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

/// Destinations come from the user and the spec: absolute, and without '..' that could only
/// be meant to climb.
fn check_destination(dest: &Path) -> Result<(), RootfsError> {
    let covers_root = dest.components().all(|c| c == Component::RootDir);
    if !dest.is_absolute() || covers_root || dest.components().any(|c| c == Component::ParentDir) {
        return Err(RootfsError::BadDestination(dest.to_path_buf()));
    }
    Ok(())
}

/// One of the spec's mounts, in spec order (so a user mount may cover a default one).
fn mount_spec(rootfs: BorrowedFd, m: &Mount) -> Result<(), RootfsError> {
    let dest = m.destination();
    check_destination(dest)?;
    let (flags, data) = parse_mount_options(m.options().as_deref().unwrap_or_default());
    if is_bind(m) {
        let Some(source) = m.source() else {
            return Ok(());
        };
        let create = if source.is_dir() {
            Create::Directory
        } else {
            Create::File
        };
        let target = in_root::open(rootfs, dest, create, Symlinks::Contain)?;
        if flags.contains(MsFlags::MS_RDONLY) {
            let source_fd = open_path(source)?;
            return readonly_copy(&source_fd, &target, MountAttrs::RDONLY, || {
                Ok(in_root::open(
                    rootfs,
                    dest,
                    Create::Nothing,
                    Symlinks::Contain,
                )?)
            });
        }
        return bind(source, &target, dest);
    }
    let target = in_root::open(rootfs, dest, Create::Directory, Symlinks::Contain)?;
    let typ = m.typ().clone().unwrap_or_default();
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(&typ));
    let data = (!data.is_empty()).then_some(data.as_str());
    mount(
        Some(&source),
        &in_root::fd_path(&target),
        Some(typ.as_str()),
        flags,
        data,
    )
    .map_err(sys("mounting", dest))
}

/// A spec's `cgroup` mount (runc's shape: type cgroup, usually read-only, at /sys/fs/cgroup):
/// cgroup2 on a unified host, where a cgroup namespace makes it show the container's own
/// subtree. On v1 (and hybrid) hosts a tmpfs holding one directory per hierarchy, each a
/// read-only bind of the container's own cgroup there: never the host's whole tree.
fn mount_cgroup(
    rootfs: BorrowedFd,
    m: &Mount,
    v1_dirs: &[(String, PathBuf)],
) -> Result<(), RootfsError> {
    let dest = m.destination();
    check_destination(dest)?;
    let (flags, _) = parse_mount_options(m.options().as_deref().unwrap_or_default());
    let target = in_root::open(rootfs, dest, Create::Directory, Symlinks::Contain)?;
    let at = in_root::fd_path(&target);
    let hardening = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if v1_dirs.is_empty() {
        return mount(
            Some("cgroup"),
            &at,
            Some("cgroup2"),
            flags | hardening,
            None::<&str>,
        )
        .map_err(sys("mounting cgroup2 on", dest));
    }
    mount(
        Some("tmpfs"),
        &at,
        Some("tmpfs"),
        hardening,
        Some("mode=755,size=64k"),
    )
    .map_err(sys("mounting tmpfs on", dest))?;
    for (controller, dir) in v1_dirs {
        let inside = dest.join(controller);
        let sub = in_root::open(rootfs, &inside, Create::Directory, Symlinks::Contain)?;
        let source = open_path(dir)?;
        readonly_copy(
            &source,
            &sub,
            MountAttrs::RDONLY | MountAttrs::NOSUID | MountAttrs::NODEV | MountAttrs::NOEXEC,
            || {
                Ok(in_root::open(
                    rootfs,
                    &inside,
                    Create::Nothing,
                    Symlinks::Contain,
                )?)
            },
        )?;
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        let target = in_root::open(rootfs, dest, Create::Nothing, Symlinks::Contain)?;
        mount(
            None::<&str>,
            &in_root::fd_path(&target),
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | hardening,
            None::<&str>,
        )
        .map_err(sys("remounting read-only", dest))?;
    }
    Ok(())
}

fn open_path(path: &Path) -> Result<OwnedFd, RootfsError> {
    let c = cstring(&path.to_string_lossy())?;
    // SAFETY: open reads a NUL-terminated path and returns a new descriptor or -1.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io("opening", path)(std::io::Error::last_os_error()));
    }
    // SAFETY: open just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Bind `source` (recursively) onto the resolved `target`, which is `dest` in the container.
fn bind(source: &Path, target: &OwnedFd, dest: &Path) -> Result<(), RootfsError> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount(
        Some(source),
        &in_root::fd_path(target),
        None::<&str>,
        flags,
        None::<&str>,
    )
    .map_err(sys("bind-mounting onto", dest))
}

/// mount_setattr(2) attributes.
struct MountAttrs;

impl MountAttrs {
    const RDONLY: u64 = 0x1;
    const NOSUID: u64 = 0x2;
    const NODEV: u64 = 0x4;
    const NOEXEC: u64 = 0x8;
}

/// struct mount_attr of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// Mount a copy of the tree at `source` onto `target` with `attrs` (read-only and more) on
/// every mount of it. The copy is made read-only while still detached and then moved onto the
/// descriptor, so there is no moment at which it is writable or a swapped path could catch
/// the remount. Kernels before 5.12 take the bind + remount path, the remount through a fresh
/// resolution (`reopen`) of the same destination.
fn readonly_copy(
    source: &OwnedFd,
    target: &OwnedFd,
    attrs: u64,
    reopen: impl FnOnce() -> Result<OwnedFd, RootfsError>,
) -> Result<(), RootfsError> {
    let what = in_root::fd_path(target);
    // SAFETY: open_tree with a descriptor we hold and an empty path returns a new descriptor
    // for a detached copy of that mount tree, or -1.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            source.as_raw_fd(),
            c"".as_ptr(),
            OPEN_TREE_CLONE
                | libc::AT_RECURSIVE as libc::c_uint
                | libc::AT_EMPTY_PATH as libc::c_uint
                | libc::O_CLOEXEC as libc::c_uint,
        )
    } as i32;
    if tree < 0 {
        let err = nix::Error::last();
        if err != nix::Error::ENOSYS {
            return Err(sys("copying the mount for", &what)(err));
        }
        return readonly_remount(source, target, attrs, reopen);
    }
    // SAFETY: open_tree just returned this descriptor; nothing else owns it.
    let tree = unsafe { OwnedFd::from_raw_fd(tree) };
    let attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads the mount_attr we own, of the size we pass, for the tree
    // descriptor we hold.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        let err = nix::Error::last();
        if err != nix::Error::ENOSYS {
            return Err(sys("making read-only", &what)(err));
        }
        return readonly_remount(source, target, attrs, reopen);
    }
    // SAFETY: move_mount attaches the tree we hold onto the target descriptor we hold; both
    // paths are empty, naming the descriptors themselves.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(sys("mounting read-only onto", &what)(nix::Error::last()));
    }
    Ok(())
}

fn readonly_remount(
    source: &OwnedFd,
    target: &OwnedFd,
    attrs: u64,
    reopen: impl FnOnce() -> Result<OwnedFd, RootfsError>,
) -> Result<(), RootfsError> {
    let what = in_root::fd_path(target);
    let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount(
        Some(&in_root::fd_path(source)),
        &what,
        None::<&str>,
        flags,
        None::<&str>,
    )
    .map_err(sys("bind-mounting onto", &what))?;
    // The descriptor names what lies under the new mount; a fresh resolution reaches it.
    let mounted = reopen()?;
    let mut remount = flags | MsFlags::MS_REMOUNT;
    for (attr, flag) in [
        (MountAttrs::RDONLY, MsFlags::MS_RDONLY),
        (MountAttrs::NOSUID, MsFlags::MS_NOSUID),
        (MountAttrs::NODEV, MsFlags::MS_NODEV),
        (MountAttrs::NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if attrs & attr != 0 {
            remount |= flag;
        }
    }
    mount(
        None::<&str>,
        &in_root::fd_path(&mounted),
        None::<&str>,
        remount,
        None::<&str>,
    )
    .map_err(sys("remounting read-only", &what))
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

/// The nodes of `--device`: created where the spec says, resolved inside the root like any
/// mount target, owned and moded as on the host.
fn make_passed_devices(spec: &Spec) -> Result<(), RootfsError> {
    use oci_spec::runtime::LinuxDeviceType;
    let devices = spec.linux().as_ref().and_then(|l| l.devices().as_ref());
    let Some(devices) = devices.filter(|d| !d.is_empty()) else {
        return Ok(());
    };
    let root = in_root::open_root(Path::new("/"))?;
    for device in devices {
        let path = device.path();
        check_destination(path)?;
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(RootfsError::BadDestination(path.to_path_buf()));
        };
        let dir = in_root::open(root.as_fd(), parent, Create::Directory, Symlinks::Contain)?;
        // O_PATH descriptors cannot be used with mknodat: go through the descriptor's path.
        let node = in_root::fd_path(&dir).join(name);
        let kind = match device.typ() {
            LinuxDeviceType::B => SFlag::S_IFBLK,
            _ => SFlag::S_IFCHR,
        };
        let _ = std::fs::remove_file(&node);
        let mode = device.file_mode().unwrap_or(0o666);
        mknod(
            &node,
            kind,
            Mode::from_bits_truncate(mode),
            makedev(device.major() as u64, device.minor() as u64),
        )
        .map_err(sys("creating device", path))?;
        std::fs::set_permissions(&node, std::fs::Permissions::from_mode(mode))
            .map_err(io("chmod", path))?;
        nix::unistd::chown(
            &node,
            device.uid().map(nix::unistd::Uid::from_raw),
            device.gid().map(nix::unistd::Gid::from_raw),
        )
        .map_err(sys("chown", path))?;
    }
    Ok(())
}

/// runc: files are covered by /dev/null, directories by an empty read-only tmpfs. A path
/// that does not exist needs no mask; one that goes through a symlink is refused, since the
/// mask would then not cover what its name says.
fn mask(root: BorrowedFd, path: &Path) -> Result<(), RootfsError> {
    let target = match in_root::open(root, path, Create::Nothing, Symlinks::Refuse) {
        Ok(target) => target,
        Err(err) if err.is_not_found() => return Ok(()),
        Err(err) => return Err(RootfsError::Mask(path.to_path_buf(), err)),
    };
    let on = in_root::fd_path(&target);
    let is_dir = std::fs::metadata(&on)
        .map_err(io("inspecting", path))?
        .is_dir();
    if is_dir {
        let flags =
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mount(
            Some("tmpfs"),
            &on,
            Some("tmpfs"),
            flags,
            Some("size=0,mode=755"),
        )
        .map_err(sys("masking", path))
    } else {
        mount(
            Some("/dev/null"),
            &on,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys("masking", path))
    }
}

/// A read-only path: the same rules as a mask for missing paths and symlinks.
fn make_readonly(root: BorrowedFd, path: &Path) -> Result<(), RootfsError> {
    let target = match in_root::open(root, path, Create::Nothing, Symlinks::Refuse) {
        Ok(target) => target,
        Err(err) if err.is_not_found() => return Ok(()),
        Err(err) => return Err(RootfsError::Mask(path.to_path_buf(), err)),
    };
    let attrs = MountAttrs::RDONLY | MountAttrs::NOSUID | MountAttrs::NODEV | MountAttrs::NOEXEC;
    readonly_copy(&target, &target, attrs, || {
        Ok(in_root::open(
            root,
            path,
            Create::Nothing,
            Symlinks::Refuse,
        )?)
    })
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
}
