//! Directories no other host user may enter. husk's `--root` holds unpacked image layers and
//! every container's upper dir, where container root can leave setuid-root files; the runtime
//! dir holds control sockets. Docker keeps the same trees closed (CVE-2021-41091): a host user
//! who can traverse them can run those files with root's privileges.

use std::fs::{self, DirBuilder, Permissions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Owner only: Docker's 0710/0701 exist for its remapped-root groups, which husk has none of.
pub const MODE: u32 = 0o700;

/// husk's runtime files (control sockets of VM containers).
pub const RUNTIME_DIR: &str = "/run/husk";

/// Create `dir` (with any missing parents) owner-only, or close an existing one that others
/// could enter, as a root made by an older husk or by `mkdir -p` is.
pub fn ensure(dir: &Path) -> std::io::Result<()> {
    match fs::metadata(dir) {
        Ok(meta) => {
            let mode = meta.permissions().mode();
            // A shared directory like /tmp given as --root: closing it would break the host,
            // leaving it open would expose every container.
            if mode & 0o1000 != 0 || mode & 0o002 != 0 {
                return Err(std::io::Error::other(format!(
                    "{} is shared with other users (mode {:o}): give husk a directory of its own",
                    dir.display(),
                    mode & 0o7777
                )));
            }
            if mode & 0o077 != 0 {
                let mode = meta.permissions().mode() & 0o7700;
                fs::set_permissions(dir, Permissions::from_mode(mode | MODE))?;
            }
            Ok(())
        }
        Err(err) if err.kind() == ErrorKind::NotFound => {
            DirBuilder::new().recursive(true).mode(MODE).create(dir)
        }
        Err(err) => Err(err),
    }
}

/// A new directory below one made by [`ensure`], owner-only as well.
pub fn create(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().mode(MODE).create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn new_directories_are_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("a/root");
        ensure(&root).unwrap();
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        create(&root.join("child")).unwrap();
        assert_eq!(mode(&root.join("child")), 0o700);
    }

    #[test]
    fn a_shared_directory_is_refused_not_closed() {
        let tmp = tempfile::tempdir().unwrap();
        let shared = tmp.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, Permissions::from_mode(0o1777)).unwrap();
        let err = ensure(&shared).unwrap_err();
        assert!(err.to_string().contains("shared with other users"), "{err}");
        assert_eq!(mode(&shared), 0o1777);
    }

    #[test]
    fn an_existing_open_directory_is_closed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, Permissions::from_mode(0o755)).unwrap();
        ensure(&root).unwrap();
        assert_eq!(mode(&root), 0o700);
    }
}
