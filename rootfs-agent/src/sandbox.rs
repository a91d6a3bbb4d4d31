//! The guest half of a container's sandbox, made once at `Start` before its process exists:
//! the cgroup every process of the container joins, volumes and tmpfs mounts, masked and
//! read-only paths, a read-only sysfs and root. It mirrors what husk's process backend does
//! on the host (src/process/rootfs.rs, src/process/cgroup.rs), in the guest's own kernel.
//! Every step fails with one line, which the agent reports as the container's exit 125 (the
//! runtime's own failure, as with Docker).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::mount::{mount, MsFlags};

use crate::protocol::{GuestLimits, GuestMount, GuestMountKind, StartRequest};

/// The exit code of a container whose sandbox could not be made: Docker's 125.
pub const SETUP_FAILED_EXIT: i32 = 125;

/// The container's cgroup in the guest: processes join it by writing to `cgroup.procs`.
pub struct ContainerCgroup {
    /// The cgroup's directory, on a cgroup2 mount that is attached nowhere.
    dir: OwnedFd,
    procs: OwnedFd,
}

impl ContainerCgroup {
    /// Whether the OOM killer has killed a process of the container (memory.events). Read
    /// through the directory's descriptor: /proc is the container's by now.
    pub fn saw_oom_kill(&self) -> bool {
        // SAFETY: openat on our directory descriptor with a static NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                c"memory.events".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return false;
        }
        // SAFETY: a fresh descriptor we own from here on.
        let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).is_ok_and(|_| {
            text.lines()
                .filter_map(|line| line.strip_prefix("oom_kill "))
                .any(|count| count.trim().parse::<u64>().is_ok_and(|n| n > 0))
        })
    }

    /// The pids in the container's cgroup (the agent's, the guest's root, pid namespace).
    pub fn pids(&self) -> Vec<i32> {
        // SAFETY: openat on our directory descriptor with a static NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                c"cgroup.procs".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Vec::new();
        }
        // SAFETY: a fresh descriptor we own from here on.
        let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let mut text = String::new();
        // A pid is at most 8 bytes of text: a million processes fit.
        let _ = std::io::Read::read_to_string(&mut std::io::Read::take(file, 8 << 20), &mut text);
        text.lines().filter_map(|l| l.trim().parse().ok()).collect()
    }

    /// Written with "0" by a child between fork and exec, it moves that child in.
    pub fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }
}

/// Make the container's sandbox in the guest, in this order: its network, its sysctls, its cgroup, mounts, masked and
/// read-only paths, sysfs and root read-only.
pub fn prepare(start: &StartRequest) -> Result<Option<ContainerCgroup>, String> {
    // The network first: sysctls below may name its interface, and /etc/hosts is bound
    // before the root may turn read-only.
    crate::network::configure(start.network.as_ref())?;
    write_sysctls(&start.sysctls)?;
    let cgroup = container_cgroup(&start.limits)?;
    // Volumes go in before the root turns read-only (their mount points may have to be
    // made) and before the process can see the root.
    mount_guest_mounts(&start.mounts)?;
    for path in &start.masked_paths {
        mask(Path::new(path))?;
    }
    for path in &start.readonly_paths {
        make_readonly(Path::new(path))?;
    }
    if start.readonly_sysfs {
        // /sys/fs/cgroup too: a writable hierarchy would let the container raise its own
        // limits. The agent's own handle on the cgroup is a detached mount (see below), so
        // no writer of ours holds these mounts.
        for mount_point in ["/sys", "/sys/fs/cgroup"] {
            if is_mount_point(Path::new(mount_point)) {
                remount_readonly(Path::new(mount_point))?;
            }
        }
    }
    if start.readonly_root {
        // A bind remount changes only this mount's flag: the overlay below, and the writable
        // disk the agent syncs at the end, are untouched.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| format!("remounting the root read-only: {e}"))?;
    }
    Ok(cgroup)
}

/// Write each sysctl under /proc/sys, in the writer's namespaces (the network and IPC ones
/// scope what `--sysctl` allows): the guest's, or a process container's init before its root
/// moves. A name that is not dotted words is refused, so no write leaves /proc/sys.
pub fn write_sysctls<'a>(
    sysctls: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), String> {
    for (key, value) in sysctls {
        if !crate::protocol::is_sysctl_name(key) || !crate::protocol::is_sysctl_value(value) {
            return Err(format!(
                "sysctl {key:?}: not a sysctl name with a one-line value"
            ));
        }
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|e| format!("setting sysctl {key}={value}: {e}"))?;
    }
    Ok(())
}

/// A cgroup v2 `container` below the guest's root cgroup, with the pids and memory limits.
/// It is reached through a cgroup2 mount that is never attached to the file tree (fsopen and
/// fsmount), so the container sees no writable cgroupfs of the agent's, and /sys/fs/cgroup
/// can be read-only for it. A guest without cgroup2 runs the container without a cgroup
/// unless a limit was asked for.
fn container_cgroup(limits: &GuestLimits) -> Result<Option<ContainerCgroup>, String> {
    let wanted = limits.pids_max.is_some() || limits.memory_max.is_some();
    let mnt = match detached_cgroup2_mount() {
        Ok(mnt) => mnt,
        Err(e) if !wanted => {
            eprintln!("rootfs-agent: no cgroup for the container: {e}");
            return Ok(None);
        }
        Err(e) => return Err(format!("a cgroup for the container's limits: {e}")),
    };
    let root = format!("/proc/self/fd/{}", mnt.as_raw_fd());
    let write = |file: &str, value: &str| {
        std::fs::write(format!("{root}/{file}"), value)
            .map_err(|e| format!("writing {value:?} to the guest cgroup's {file}: {e}"))
    };
    if limits.pids_max.is_some() {
        write("cgroup.subtree_control", "+pids")?;
    }
    if limits.memory_max.is_some() {
        write("cgroup.subtree_control", "+memory")?;
    }
    match std::fs::create_dir(format!("{root}/container")) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("creating the guest cgroup: {e}")),
    }
    if let Some(max) = limits.pids_max {
        write("container/pids.max", &max.to_string())?;
    }
    if let Some(max) = limits.memory_max {
        write("container/memory.max", &max.to_string())?;
    }
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("{root}/container/cgroup.procs"))
        .map_err(|e| format!("opening the guest cgroup: {e}"))?;
    let dir = std::fs::File::open(format!("{root}/container"))
        .map_err(|e| format!("opening the guest cgroup: {e}"))?;
    Ok(Some(ContainerCgroup {
        dir: dir.into(),
        procs: procs.into(),
    }))
}

/// The container's own PID namespace, as in a process container: its process is PID 1 there
/// (so it gets no signal it has no handler for, as with Docker), every `exec` joins it, and
/// its /proc shows only the container. The agent stays in the guest's initial namespace.
///
/// A procfs shows the namespace of the process that mounts it, so the container's first
/// process mounts its /proc itself, between fork and exec, and masks and makes read-only
/// the /proc paths the spec names there again ([`ProcView::mount`]).
#[derive(Clone)]
pub struct ProcView {
    mounts: Vec<(std::ffi::CString, ProcMount)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ProcMount {
    MaskFile,
    MaskDirectory,
    ReadOnly,
}

/// From now on the agent's children start in a new PID namespace; what the container's first
/// process then has to mount over /proc, worked out (and allocated) here.
pub fn enter_pid_namespace(start: &StartRequest) -> Result<ProcView, String> {
    let mut mounts = Vec::new();
    let mut add = |path: &String, readonly: bool| -> Result<(), String> {
        if !path.starts_with("/proc/") || !exists_without_symlinks(Path::new(path))? {
            return Ok(());
        }
        let kind = match (readonly, Path::new(path).is_dir()) {
            (true, _) => ProcMount::ReadOnly,
            (false, true) => ProcMount::MaskDirectory,
            (false, false) => ProcMount::MaskFile,
        };
        let path = std::ffi::CString::new(path.as_str())
            .map_err(|_| format!("{path:?} contains a NUL byte"))?;
        mounts.push((path, kind));
        Ok(())
    };
    for path in &start.masked_paths {
        add(path, false)?;
    }
    for path in &start.readonly_paths {
        add(path, true)?;
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID)
        .map_err(|e| format!("a PID namespace for the container: {e}"))?;
    Ok(ProcView { mounts })
}

impl ProcView {
    /// In the container's first process (PID 1 of its namespace), between fork and exec:
    /// raw mount calls on data prepared before the fork.
    pub fn mount(&self) -> std::io::Result<()> {
        let check = |rc: libc::c_int| {
            if rc < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        let nothing = std::ptr::null::<libc::c_char>();
        let hardened = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        // SAFETY: mount with static NUL-terminated strings and integer flags.
        check(unsafe {
            libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                hardened,
                std::ptr::null(),
            )
        })?;
        for (path, kind) in &self.mounts {
            let path = path.as_ptr();
            // SAFETY: mount with NUL-terminated strings prepared before the fork (or static)
            // and integer flags.
            unsafe {
                match kind {
                    ProcMount::MaskFile => check(libc::mount(
                        c"/dev/null".as_ptr(),
                        path,
                        nothing,
                        libc::MS_BIND,
                        std::ptr::null(),
                    ))?,
                    ProcMount::MaskDirectory => check(libc::mount(
                        c"tmpfs".as_ptr(),
                        path,
                        c"tmpfs".as_ptr(),
                        libc::MS_RDONLY | hardened,
                        c"size=0,mode=755".as_ptr().cast(),
                    ))?,
                    ProcMount::ReadOnly => {
                        check(libc::mount(
                            path,
                            path,
                            nothing,
                            libc::MS_BIND | libc::MS_REC,
                            std::ptr::null(),
                        ))?;
                        check(libc::mount(
                            nothing,
                            path,
                            nothing,
                            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | hardened,
                            std::ptr::null(),
                        ))?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A new cgroup2 mount of the guest's hierarchy, as a descriptor only.
fn detached_cgroup2_mount() -> std::io::Result<OwnedFd> {
    detached_mount(c"cgroup2")
}

fn check_syscall(rc: libc::c_long) -> std::io::Result<RawFd> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc as RawFd)
    }
}

/// A new mount of a `fstype` file system with default options, as a descriptor only: attached
/// nowhere in the file tree, so nothing in the guest can reach it by a path.
pub fn detached_mount(fstype: &std::ffi::CStr) -> std::io::Result<OwnedFd> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    // SAFETY: fsopen reads a NUL-terminated name; returns a new fd.
    let fs =
        check_syscall(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: a fresh descriptor we own from here on.
    let fs = unsafe { OwnedFd::from_raw_fd(fs) };
    // SAFETY: fsconfig on our fs context; CMD_CREATE takes no key or value.
    check_syscall(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    // SAFETY: fsmount on our fs context with integer flags; returns a new mount fd.
    let mnt = check_syscall(unsafe {
        libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0)
    })?;
    // SAFETY: a fresh descriptor we own from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(mnt) })
}

/// Attach a detached mount (from [`detached_mount`]) at the directory `target`.
pub fn attach_mount(mount: &OwnedFd, target: &str) -> std::io::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    let target = std::ffi::CString::new(target).map_err(std::io::Error::other)?;
    // SAFETY: move_mount of our detached mount (empty path: the fd itself) onto a
    // NUL-terminated absolute path.
    check_syscall(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })?;
    Ok(())
}

/// Refuse a path that goes through a symlink (a mask would then not cover what its name
/// says); `Ok(false)` when it does not exist, which needs no mask, as with runc.
fn exists_without_symlinks(path: &Path) -> Result<bool, String> {
    let mut prefix = std::path::PathBuf::from("/");
    for part in path.components().skip(1) {
        prefix.push(part);
        match std::fs::symlink_metadata(&prefix) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!(
                    "masked or read-only path {} goes through the symlink {}",
                    path.display(),
                    prefix.display()
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(format!("inspecting {}: {e}", prefix.display())),
        }
    }
    Ok(true)
}

/// runc's mask: a file is covered by /dev/null, a directory by an empty read-only tmpfs.
fn mask(path: &Path) -> Result<(), String> {
    if !exists_without_symlinks(path)? {
        return Ok(());
    }
    let failed = |e| format!("masking {}: {e}", path.display());
    if path.is_dir() {
        let flags =
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            flags,
            Some("size=0,mode=755"),
        )
        .map_err(failed)
    } else {
        mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(failed)
    }
}

/// A read-only path: bound over itself (with what is mounted below it), then made read-only.
fn make_readonly(path: &Path) -> Result<(), String> {
    if !exists_without_symlinks(path)? {
        return Ok(());
    }
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("binding {} for read-only: {e}", path.display()))?;
    remount_readonly(path)
}

fn remount_readonly(path: &Path) -> Result<(), String> {
    let flags = MsFlags::MS_REMOUNT
        | MsFlags::MS_BIND
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
        .map_err(|e| format!("making {} read-only: {e}", path.display()))
}

/// Whether `path` is the root of a mount: its device differs from its parent's.
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(here), Some(Ok(parent))) = (
        std::fs::symlink_metadata(path),
        path.parent().map(std::fs::metadata),
    ) else {
        return false;
    };
    here.dev() != parent.dev()
}

/// Mount the container's volumes, binds and tmpfs mounts in the guest's root, in order. The
/// guest is the container's sandbox, so a symlink on the way to a target resolves in the
/// guest's view and cannot reach the host; read-only shares are also read-only in the daemon
/// that serves them, so remounting them writable in the guest gains nothing.
fn mount_guest_mounts(mounts: &[GuestMount]) -> Result<(), String> {
    for m in mounts {
        let target = Path::new(&m.target);
        if let Some(subpath) = &m.subpath {
            mount_share_subpath(m, subpath)?;
            continue;
        }
        if !target.is_dir() {
            std::fs::create_dir_all(target)
                .map_err(|e| format!("creating the mount point {}: {e}", m.target))?;
        }
        let mut flags = MsFlags::empty();
        if m.readonly {
            flags |= MsFlags::MS_RDONLY;
        }
        let result = match m.kind {
            GuestMountKind::Virtiofs => mount(
                Some(m.source.as_str()),
                target,
                Some("virtiofs"),
                flags,
                None::<&str>,
            ),
            // As the process isolation mounts it (and Docker): nosuid, nodev, mode 1777.
            GuestMountKind::Tmpfs => mount(
                Some("tmpfs"),
                target,
                Some("tmpfs"),
                flags | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some("mode=1777"),
            ),
        };
        result.map_err(|e| {
            let source = match m.kind {
                GuestMountKind::Virtiofs => format!("virtio-fs {}", m.source),
                GuestMountKind::Tmpfs => "tmpfs".to_string(),
            };
            format!("mounting {source} on {}: {e}", m.target)
        })?;
        if m.kind == GuestMountKind::Virtiofs {
            widen_readahead(target);
        }
    }
    Ok(())
}

/// Bind one file or directory of a share onto the mount's target: the share is mounted on a
/// scratch point in the guest's /dev (memory, outside anything the container keeps), the
/// entry bound, and the scratch mount detached again, so the rest of the share is never
/// reachable from the container.
fn mount_share_subpath(m: &GuestMount, subpath: &str) -> Result<(), String> {
    let scratch = Path::new("/dev/.husk-share");
    std::fs::create_dir_all(scratch).map_err(|e| format!("creating {}: {e}", scratch.display()))?;
    mount(
        Some(m.source.as_str()),
        scratch,
        Some("virtiofs"),
        MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| format!("mounting virtio-fs {}: {e}", m.source))?;
    let result = bind_share_entry(&scratch.join(subpath), m);
    let _ = nix::mount::umount2(scratch, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir(scratch);
    result
}

fn bind_share_entry(source: &Path, m: &GuestMount) -> Result<(), String> {
    let target = Path::new(&m.target);
    let meta = std::fs::symlink_metadata(source)
        .map_err(|e| format!("{} in virtio-fs {}: {e}", source.display(), m.source))?;
    if meta.is_dir() {
        std::fs::create_dir_all(target)
    } else {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating the mount point {}: {e}", m.target))?;
        }
        match std::fs::symlink_metadata(target) {
            Ok(_) => Ok(()),
            Err(_) => std::fs::File::create(target).map(drop),
        }
    }
    .map_err(|e| format!("creating the mount point {}: {e}", m.target))?;
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("binding {} on {}: {e}", source.display(), m.target))?;
    if m.readonly {
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
        mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
            .map_err(|e| format!("making {} read-only: {e}", m.target))?;
    }
    Ok(())
}

/// Read ahead of a virtio-fs share in requests of 1 MiB (FUSE's largest) instead of the
/// default 128 KiB: every request is a round trip to the host daemon, the dearest part of a
/// read. Best effort: a share whose knob cannot be found still works.
fn widen_readahead(target: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(target) else {
        return;
    };
    let dev = meta.dev();
    let knob = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    let _ = std::fs::write(knob, "1024");
}
