//! OCI hooks (config.md "POSIX-platform Hooks", runtime.md "Lifecycle"): a program run with
//! the container's state as JSON on its stdin, its own args and env, and an optional timeout
//! in seconds after which it is killed.

use std::io::{Read, Seek, Write};
use std::os::fd::FromRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use super::State;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{stage} hook {path}: {source}")]
    Spawn {
        stage: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{stage} hook {path} failed ({status}){stderr}")]
    Failed {
        stage: &'static str,
        path: String,
        status: String,
        stderr: String,
    },
    #[error("{stage} hook {path} ran past its timeout of {seconds}s and was killed")]
    TimedOut {
        stage: &'static str,
        path: String,
        seconds: i64,
    },
}

/// Run one hook to completion; an error when it cannot start, exits non-zero or times out.
pub fn run(hook: &Hook, state: &State, stage: &'static str) -> Result<(), HookError> {
    run_with_state(hook, &serde_json::to_vec(state).unwrap_or_default(), stage)
}

/// [`run`] with the state already serialized. No thread and no pipe: the container's init
/// runs the createContainer and startContainer hooks with this (it must stay single-threaded
/// for the confinement that follows), and a hook that leaves a daemon holding its stderr
/// cannot stall the runtime. stdin is a memfd holding the state; stderr another, of which
/// the first 4 KiB go into the error.
pub fn run_with_state(hook: &Hook, state: &[u8], stage: &'static str) -> Result<(), HookError> {
    let path = hook.path().display().to_string();
    let spawn_error = |source: std::io::Error| HookError::Spawn {
        stage,
        path: path.clone(),
        source,
    };
    let mut stdin = memfd("husk-hook-state").map_err(spawn_error)?;
    stdin
        .write_all(state)
        .and_then(|()| stdin.rewind())
        .map_err(spawn_error)?;
    let mut stderr = memfd("husk-hook-stderr").map_err(spawn_error)?;
    let mut command = Command::new(hook.path());
    let args = hook.args().clone().unwrap_or_default();
    // args[0] is argv[0], as execv takes it (config.md).
    if let Some((argv0, rest)) = args.split_first() {
        command.arg0(argv0).args(rest);
    }
    command.env_clear();
    for pair in hook.env().iter().flatten() {
        if let Some((key, value)) = pair.split_once('=') {
            command.env(key, value);
        }
    }
    let mut child = command
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr.try_clone().map_err(spawn_error)?))
        .spawn()
        .map_err(spawn_error)?;
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| (t, Instant::now() + Duration::from_secs(t as u64)));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => return Err(spawn_error(source)),
        }
        if let Some((seconds, at)) = deadline {
            if Instant::now() >= at {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HookError::TimedOut {
                    stage,
                    path,
                    seconds,
                });
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if status.success() {
        return Ok(());
    }
    let mut kept = Vec::new();
    let _ = stderr.rewind();
    let _ = (&mut stderr).take(4096).read_to_end(&mut kept);
    let stderr = String::from_utf8_lossy(&kept);
    let stderr = stderr.trim();
    Err(HookError::Failed {
        stage,
        path,
        status: status.to_string(),
        stderr: if stderr.is_empty() {
            String::new()
        } else {
            format!(": {stderr}")
        },
    })
}

/// An anonymous file (close-on-exec; the hook gets its own copy as 0 or 2).
fn memfd(name: &str) -> std::io::Result<std::fs::File> {
    let name = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: memfd_create reads a NUL-terminated name and returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor is new and ours alone.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}
