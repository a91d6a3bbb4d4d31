//! The husk binary under test: a temp `--root`, an environment (isolation, kernel, ...), a
//! busybox image, and cleanup of every container a test leaves, so no mounts or cgroups
//! outlive the suite.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Husk {
    pub root: tempfile::TempDir,
    env: Vec<(&'static str, OsString)>,
}

impl Husk {
    pub fn new(env: Vec<(&'static str, OsString)>) -> Self {
        Self {
            root: tempfile::tempdir().unwrap(),
            env,
        }
    }

    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_husk"));
        cmd.arg("--root").arg(self.root.path());
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Run with stdin closed; the output is printed (seen when the test fails).
    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd().args(args).stdin(Stdio::null()).output().unwrap();
        eprintln!(
            "husk {args:?} -> {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Run, require success, return stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "husk {args:?} failed");
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn lines(&self, args: &[&str]) -> Vec<String> {
        self.ok(args).lines().map(str::to_string).collect()
    }

    pub fn status(&self, name: &str) -> String {
        self.ok(&["inspect", "-f", "{{.State.Status}}", name])
            .trim()
            .to_string()
    }

    pub fn logs(&self, name: &str) -> String {
        self.ok(&["logs", name])
    }

    pub fn wait_for(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `husk import` a busybox rootfs (plus what `extra` adds to it) as `busybox:latest`
    /// with CMD ["sh"].
    pub fn import_busybox(&self, extra: impl FnOnce(&Path)) {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        super::make_busybox_rootfs(&rootfs).unwrap();
        extra(&rootfs);
        let tar = dir.path().join("rootfs.tar");
        super::tar_dir(&rootfs, &tar);
        self.ok(&[
            "import",
            "--change",
            "CMD [\"sh\"]",
            tar.to_str().unwrap(),
            "busybox:latest",
        ]);
    }
}

impl Drop for Husk {
    fn drop(&mut self) {
        if let Ok(out) = self.cmd().args(["ps", "-a", "-q"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self.cmd().args(["rm", "-f", id]).output();
            }
        }
    }
}

/// A husk for process isolation with a busybox image, or None (with the reason noted) when
/// this host cannot run it.
pub fn process_husk(test: &str, extra: impl FnOnce(&Path)) -> Option<Husk> {
    if !super::is_root() {
        super::note_skip(test, "process isolation needs root");
        return None;
    }
    if super::host_busybox().is_none() {
        super::note_skip(
            test,
            "busybox-static is not installed (scripts/setup.sh installs it)",
        );
        return None;
    }
    let husk = Husk::new(vec![("HUSK_ISOLATION", "process".into())]);
    husk.import_busybox(extra);
    Some(husk)
}
