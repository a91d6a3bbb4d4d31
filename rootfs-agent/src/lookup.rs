//! Finding the program a container's process runs, by Docker's rules, for both isolations
//! (husk's process init on the host, the agent in the guest): a name with a slash is used as
//! is, otherwise the process's PATH is searched (an empty entry is the current directory, as
//! Go's exec.LookPath takes it); a file that exists but cannot be executed is 126, nothing
//! found is 127.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Docker's exit code for a command that cannot be invoked.
pub const CODE_NOT_EXECUTABLE: i32 = 126;
/// Docker's exit code for a command that is not found.
pub const CODE_NOT_FOUND: i32 = 127;

/// The PATH a process gets when its environment has none (runc's and Docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why the program cannot run, with Docker's exit code for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupError {
    pub code: i32,
    pub message: String,
}

/// The PATH of an environment (its last PATH= entry), else [`DEFAULT_PATH`].
pub fn path_of(env: &[String]) -> &str {
    env.iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
}

/// The file to execve for `program`, searched in `path_var`; relative paths are taken from
/// `cwd` (the process's working directory, which may not be the caller's).
pub fn find_executable(program: &str, path_var: &str, cwd: &Path) -> Result<PathBuf, LookupError> {
    let check = |path: &Path| -> Result<(), LookupError> {
        let meta = std::fs::metadata(path).map_err(|e| LookupError {
            // A name too long for the kernel, or a file as a directory on the way, is not
            // there either: 127, as execve's ENOENT.
            code: if e.kind() == std::io::ErrorKind::NotFound
                || matches!(e.raw_os_error(), Some(libc::ENAMETOOLONG | libc::ENOTDIR))
            {
                CODE_NOT_FOUND
            } else {
                CODE_NOT_EXECUTABLE
            },
            message: format!("exec {program:?}: stat {}: {e}", path.display()),
        })?;
        if meta.is_dir() {
            // execve's own answer for a directory (EACCES), as runc reports it: the docker
            // CLI turns a start error that says "permission denied" into 126.
            return Err(LookupError {
                code: CODE_NOT_EXECUTABLE,
                message: format!(
                    "exec {program:?}: {} is a directory: permission denied",
                    path.display()
                ),
            });
        }
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(LookupError {
                code: CODE_NOT_EXECUTABLE,
                message: format!("exec {program:?}: permission denied"),
            });
        }
        Ok(())
    };
    if program.contains('/') {
        let path = cwd.join(program);
        check(&path)?;
        return Ok(path);
    }
    let mut not_executable = None;
    for dir in path_var.split(':') {
        let candidate = cwd
            .join(if dir.is_empty() { "." } else { dir })
            .join(program);
        match check(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(failure) if failure.code == CODE_NOT_EXECUTABLE && candidate.exists() => {
                not_executable.get_or_insert(failure);
            }
            Err(_) => {}
        }
    }
    Err(not_executable.unwrap_or_else(|| LookupError {
        code: CODE_NOT_FOUND,
        message: format!("exec: {program:?}: executable file not found in $PATH"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_lookup_follows_docker_codes() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let tool = bin.join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = bin.join("data");
        std::fs::write(&data, "x").unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = format!("/nonexistent:{}", bin.display());

        assert_eq!(
            find_executable("tool", &path, Path::new("/")).ok(),
            Some(tool.clone())
        );
        assert_eq!(
            find_executable(tool.to_str().unwrap(), "", Path::new("/")).ok(),
            Some(tool)
        );
        let missing = find_executable("nope", &path, Path::new("/")).unwrap_err();
        assert_eq!(missing.code, CODE_NOT_FOUND);
        assert_eq!(
            missing.message,
            "exec: \"nope\": executable file not found in $PATH"
        );
        assert_eq!(
            find_executable("data", &path, Path::new("/"))
                .unwrap_err()
                .code,
            CODE_NOT_EXECUTABLE
        );
        assert_eq!(
            find_executable(data.to_str().unwrap(), "", Path::new("/"))
                .unwrap_err()
                .code,
            CODE_NOT_EXECUTABLE
        );
        assert_eq!(
            find_executable(bin.to_str().unwrap(), "", Path::new("/"))
                .unwrap_err()
                .code,
            CODE_NOT_EXECUTABLE
        );
        assert_eq!(
            find_executable("/no/such/file", "", Path::new("/"))
                .unwrap_err()
                .code,
            CODE_NOT_FOUND
        );
    }
}
