//! Paths resolved inside a root directory, as the kernel would resolve them if that directory
//! were `/`: an absolute symlink starts over at the root, `..` stops at it, and the result is
//! an `O_PATH` descriptor, so a mount made through `/proc/self/fd/N` lands on exactly what was
//! resolved even if the image or another container swaps a component for a symlink afterwards
//! (runc: filepath-securejoin + mounting through /proc/self/fd; CVE-2021-30465).
//!
//! openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) does this in the kernel where it exists;
//! otherwise, and to create missing components, one component at a time with
//! `openat(O_PATH | O_NOFOLLOW)`, reading each symlink from its own descriptor.

use std::collections::VecDeque;
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed in one resolution before giving up, as the kernel's limit.
const MAX_SYMLINKS: u32 = 40;

#[derive(Debug, thiserror::Error)]
pub enum InRootError {
    #[error("{0} goes through a symlink")]
    Symlink(PathBuf),
    #[error("{0}: too many levels of symlinks")]
    SymlinkLoop(PathBuf),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl InRootError {
    /// The path (or one of its directories) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// What to make when the path (or part of it) is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    Nothing,
    /// Directories all the way (a mount point for a directory).
    Directory,
    /// Directories, then an empty file at the end (a mount point for a file).
    File,
}

/// How symlinks on the way are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symlinks {
    /// Followed, but resolved inside the root.
    Contain,
    /// Refused: for paths that must be exactly what they name (masks, read-only paths).
    Refuse,
}

/// `/proc/self/fd/N` for a descriptor: the path that mount(2) and open(2) take to mean
/// exactly that file.
pub fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// A directory to resolve paths in.
pub fn open_root(path: &Path) -> Result<OwnedFd, InRootError> {
    let c = cpath(path.as_os_str(), path)?;
    // SAFETY: open reads a NUL-terminated path and returns a new descriptor or -1.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    owned(fd).map_err(io("opening", path))
}

/// Open `path` inside `root` (an `O_PATH` descriptor), creating what `create` asks for.
pub fn open(
    root: BorrowedFd,
    path: &Path,
    create: Create,
    symlinks: Symlinks,
) -> Result<OwnedFd, InRootError> {
    match open_in_kernel(root, path, symlinks) {
        Ok(fd) => return Ok(fd),
        // No openat2 (or a filter refusing it): the walk below does the same.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create != Create::Nothing => {}
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) && symlinks == Symlinks::Refuse => {
            return Err(InRootError::Symlink(path.to_path_buf()))
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(InRootError::SymlinkLoop(path.to_path_buf()))
        }
        // EXDEV would be a magic link; the walk reads it as plain text instead.
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {}
        Err(e) => return Err(io("resolving", path)(e)),
    }
    walk(root, path, create, symlinks)
}

/// struct open_how of openat2(2) (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn open_in_kernel(root: BorrowedFd, path: &Path, symlinks: Symlinks) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    if symlinks == Symlinks::Refuse {
        resolve |= libc::RESOLVE_NO_SYMLINKS;
    }
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve,
    };
    // SAFETY: openat2 reads the NUL-terminated path and the open_how struct, both of which
    // outlive the call, and returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    owned(fd as i32)
}

/// Resolve one component at a time, creating missing ones as asked.
pub(crate) fn walk(
    root: BorrowedFd,
    path: &Path,
    create: Create,
    symlinks: Symlinks,
) -> Result<OwnedFd, InRootError> {
    let mut pending: VecDeque<OsString> = parts(path).collect();
    // The directories resolved so far, below the root; `..` pops one.
    let mut dirs: Vec<OwnedFd> = Vec::new();
    let mut followed = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            dirs.pop();
            continue;
        }
        let parent = dirs.last().map_or(root, |d| d.as_fd());
        let name = cpath(&part, path)?;
        // SAFETY: openat with a descriptor we hold and a NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                parent.as_raw_fd(),
                name.as_ptr(),
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        let fd = match owned(fd) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create != Create::Nothing => {
                let file = pending.is_empty() && create == Create::File;
                make(parent, &name, file).map_err(io("creating", path))?;
                pending.push_front(part);
                continue;
            }
            Err(e) => return Err(io("resolving", path)(e)),
        };
        if !is_symlink(&fd).map_err(io("resolving", path))? {
            dirs.push(fd);
            continue;
        }
        if symlinks == Symlinks::Refuse {
            return Err(InRootError::Symlink(path.to_path_buf()));
        }
        followed += 1;
        if followed > MAX_SYMLINKS {
            return Err(InRootError::SymlinkLoop(path.to_path_buf()));
        }
        let target = read_link(&fd).map_err(io("reading a symlink in", path))?;
        if target.as_bytes().starts_with(b"/") {
            dirs.clear();
        }
        for target_part in parts(Path::new(&target))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            pending.push_front(target_part);
        }
    }
    match dirs.pop() {
        Some(fd) => Ok(fd),
        None => root
            .try_clone_to_owned()
            .map_err(io("duplicating the root of", path)),
    }
}

/// Normal components and `..`, in order; `/` and `.` say nothing inside a root.
fn parts(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(p) => Some(p.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

fn make(parent: BorrowedFd, name: &CString, file: bool) -> std::io::Result<()> {
    let rc = if file {
        // SAFETY: openat with O_CREAT|O_EXCL|O_NOFOLLOW creates a new file (never through a
        // link) and returns a descriptor we close at once, or -1.
        let fd = unsafe {
            libc::openat(
                parent.as_raw_fd(),
                name.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_WRONLY | libc::O_CLOEXEC,
                0o644 as libc::c_uint,
            )
        };
        owned(fd).map(drop).err()
    } else {
        // SAFETY: mkdirat with a descriptor we hold and a NUL-terminated name.
        let rc = unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o755) };
        (rc != 0).then(std::io::Error::last_os_error)
    };
    match rc {
        // Someone else made it first: resolving it again decides what it is.
        Some(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn is_symlink(fd: &OwnedFd) -> std::io::Result<bool> {
    // SAFETY: stat is plain data; fstat fills it in for a descriptor we hold.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into the struct we own.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat.st_mode & libc::S_IFMT == libc::S_IFLNK)
}

/// The target of the symlink `fd` (an O_PATH|O_NOFOLLOW descriptor of the link itself), so
/// that what is read is what was opened.
fn read_link(fd: &OwnedFd) -> std::io::Result<OsString> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: readlinkat with an empty path reads the link `fd` refers to into our buffer of
    // the given length.
    let len = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if len < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(len as usize);
    Ok(OsString::from(OsStr::from_bytes(&buf)))
}

fn owned(fd: i32) -> std::io::Result<OwnedFd> {
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the call that returned `fd` just created it; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn cpath(part: &OsStr, path: &Path) -> Result<CString, InRootError> {
    CString::new(part.as_bytes())
        .map_err(|_| io("resolving", path)(std::io::Error::from_raw_os_error(libc::EINVAL)))
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InRootError {
    let path = path.to_path_buf();
    move |source| InRootError::Io { op, path, source }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// Where a descriptor points, as a path on the host.
    fn target(fd: &OwnedFd) -> PathBuf {
        std::fs::read_link(fd_path(fd)).unwrap()
    }

    /// The kernel's resolution and the component walk, which must agree.
    fn both(
        root: &Path,
        path: &str,
        create: Create,
        symlinks: Symlinks,
    ) -> [Result<PathBuf, String>; 2] {
        let fd = open_root(root).unwrap();
        let show =
            |r: Result<OwnedFd, InRootError>| r.map(|fd| target(&fd)).map_err(|e| e.to_string());
        [
            show(open(fd.as_fd(), Path::new(path), create, symlinks)),
            show(walk(fd.as_fd(), Path::new(path), create, symlinks)),
        ]
    }

    fn image() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hosts"), "").unwrap();
        symlink("/", root.join("to-root")).unwrap();
        symlink("../../../../etc", root.join("up-and-out")).unwrap();
        symlink("/etc/hosts", root.join("etc/hosts-link")).unwrap();
        symlink("loop-b", root.join("loop-a")).unwrap();
        symlink("loop-a", root.join("loop-b")).unwrap();
        tmp
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let tmp = image();
        let root = tmp.path().canonicalize().unwrap();
        for path in [
            "/to-root/etc/hosts",
            "/up-and-out/hosts",
            "/etc/hosts-link",
            "../etc/hosts",
        ] {
            for got in both(&root, path, Create::Nothing, Symlinks::Contain) {
                assert_eq!(got, Ok(root.join("etc/hosts")), "{path}");
            }
        }
        for got in both(&root, "/to-root/../..", Create::Nothing, Symlinks::Contain) {
            assert_eq!(got, Ok(root.clone()));
        }
    }

    #[test]
    fn missing_parts_are_created_inside_the_root() {
        let tmp = image();
        let root = tmp.path().canonicalize().unwrap();
        for (i, got) in both(
            &root,
            "/to-root/new/dir",
            Create::Directory,
            Symlinks::Contain,
        )
        .into_iter()
        .enumerate()
        {
            assert_eq!(got, Ok(root.join("new/dir")), "attempt {i}");
        }
        for got in both(&root, "/up-and-out/file", Create::File, Symlinks::Contain) {
            assert_eq!(got, Ok(root.join("etc/file")));
        }
        assert!(root.join("etc/file").is_file());
    }

    #[test]
    fn refusing_symlinks_refuses_any_on_the_way() {
        let tmp = image();
        let root = tmp.path().canonicalize().unwrap();
        for got in both(
            &root,
            "/to-root/etc/hosts",
            Create::Nothing,
            Symlinks::Refuse,
        ) {
            assert_eq!(got, Err("/to-root/etc/hosts goes through a symlink".into()));
        }
        for got in both(&root, "/etc/hosts", Create::Nothing, Symlinks::Refuse) {
            assert_eq!(got, Ok(root.join("etc/hosts")));
        }
        let missing = walk(
            open_root(&root).unwrap().as_fd(),
            Path::new("/etc/nothing"),
            Create::Nothing,
            Symlinks::Refuse,
        )
        .unwrap_err();
        assert!(missing.is_not_found());
    }

    #[test]
    fn symlink_loops_end() {
        let tmp = image();
        for got in both(
            tmp.path(),
            "/loop-a/x",
            Create::Directory,
            Symlinks::Contain,
        ) {
            let err = got.unwrap_err();
            assert!(err.contains("too many levels of symlinks"), "{err}");
        }
    }
}
