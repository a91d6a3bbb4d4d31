//! OCI hooks (config.md "POSIX-platform Hooks", runtime.md "Lifecycle"): a program run with
//! the container's state as JSON on its stdin, its own args and env, and an optional timeout
//! in seconds after which it is killed.

use std::io::Write;
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
    let path = hook.path().display().to_string();
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
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| HookError::Spawn {
            stage,
            path: path.clone(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine: a broken pipe is not its failure.
        let _ = stdin.write_all(&serde_json::to_vec(state).unwrap_or_default());
    }
    // Drained by a thread: a hook that fills the pipe must not stall on us while we wait.
    let stderr_reader = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            use std::io::Read;
            let mut kept = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let room = 4096usize.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            String::from_utf8_lossy(&kept).into_owned()
        })
    });
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| (t, Instant::now() + Duration::from_secs(t as u64)));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => {
                return Err(HookError::Spawn {
                    stage,
                    path,
                    source,
                })
            }
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
    let stderr = stderr_reader
        .and_then(|reader| reader.join().ok())
        .unwrap_or_default();
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
