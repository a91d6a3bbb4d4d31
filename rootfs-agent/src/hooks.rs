//! OCI startContainer hooks in the guest (config.md "POSIX-platform Hooks"): husk-runc's VM
//! containers run them here, in the container's root and mount namespace, after its mounts
//! and before its process, as Kata's agent does. A hook gets the container's state on stdin,
//! only its own environment, and is killed at its timeout.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::protocol::{GuestHook, StartRequest};

/// How much of a failing hook's stderr goes into the error.
const KEPT_STDERR: usize = 4096;

/// Run the request's startContainer hooks in order; the first failure is the error.
pub fn run_start_hooks(start: &StartRequest) -> Result<(), String> {
    for hook in &start.start_hooks {
        run(hook, start.hook_state.as_bytes())
            .map_err(|why| format!("startContainer hook {}: {why}", hook.path))?;
    }
    Ok(())
}

fn run(hook: &GuestHook, state: &[u8]) -> Result<(), String> {
    let mut command = Command::new(&hook.path);
    // args[0] is argv[0], as execv takes it (config.md).
    if let Some((argv0, rest)) = hook.args.split_first() {
        command.arg0(argv0).args(rest);
    }
    command.env_clear();
    for pair in &hook.env {
        if let Some((key, value)) = pair.split_once('=') {
            command.env(key, value);
        }
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        // The state is bounded (MAX_HOOK_STATE) below the pipe's size, so this never blocks;
        // a hook that does not read it is fine.
        let _ = stdin.write_all(state);
    }
    let mut stderr = child.stderr.take();
    if let Some(pipe) = &stderr {
        // Drained as the hook runs, so that it never stalls on a full pipe; a daemon it
        // leaves holding the pipe cannot stall the agent either.
        let fd = pipe.as_raw_fd();
        // SAFETY: fcntl on the pipe we own.
        unsafe {
            libc::fcntl(
                fd,
                libc::F_SETFL,
                libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK,
            )
        };
    }
    let mut kept = Vec::new();
    let deadline = hook
        .timeout
        .filter(|t| *t > 0)
        .map(|t| (t, Instant::now() + Duration::from_secs(u64::from(t))));
    let status = loop {
        drain(stderr.as_mut(), &mut kept);
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        if let Some((seconds, at)) = deadline {
            if Instant::now() >= at {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("ran past its timeout of {seconds}s and was killed"));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    drain(stderr.as_mut(), &mut kept);
    if status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&kept);
    let text = text.trim();
    Err(if text.is_empty() {
        format!("failed ({status})")
    } else {
        format!("failed ({status}): {text}")
    })
}

/// Read what the pipe holds now, keeping the first [`KEPT_STDERR`] bytes.
fn drain(pipe: Option<&mut std::process::ChildStderr>, kept: &mut Vec<u8>) {
    let Some(pipe) = pipe else { return };
    let mut buf = [0u8; 4096];
    while let Ok(n) = pipe.read(&mut buf) {
        if n == 0 {
            break;
        }
        let room = KEPT_STDERR.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}
