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
    /// Run inside this network namespace (`/run/netns/NAME`, made by `ip netns add`).
    netns: Option<String>,
}

impl Husk {
    pub fn new(env: Vec<(&'static str, OsString)>) -> Self {
        Self {
            root: tempfile::tempdir().unwrap(),
            env,
            netns: None,
        }
    }

    /// Every husk call of this one runs in the network namespace `name` (through nsenter,
    /// which, unlike `ip netns exec`, keeps the host's /sys and so its cgroup mounts).
    pub fn in_netns(mut self, name: &str) -> Self {
        self.netns = Some(name.to_string());
        self
    }

    pub fn cmd(&self) -> Command {
        let mut cmd = match &self.netns {
            Some(name) => {
                let mut cmd = Command::new("nsenter");
                cmd.arg(format!("--net=/run/netns/{name}"))
                    .arg(env!("CARGO_BIN_EXE_husk"));
                cmd
            }
            None => Command::new(env!("CARGO_BIN_EXE_husk")),
        };
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
        self.import_busybox_as("busybox:latest", &[], extra);
    }

    /// The same busybox under another `tag`, with more `--change` lines (`EXPOSE 80`).
    pub fn import_busybox_as(&self, tag: &str, changes: &[&str], extra: impl FnOnce(&Path)) {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        super::make_busybox_rootfs(&rootfs).unwrap();
        extra(&rootfs);
        let tar = dir.path().join("rootfs.tar");
        super::tar_dir(&rootfs, &tar);
        let mut args = vec!["import", "--change", "CMD [\"sh\"]"];
        for change in changes {
            args.extend(["--change", change]);
        }
        args.extend([tar.to_str().unwrap(), tag]);
        self.ok(&args);
    }
}

impl Drop for Husk {
    fn drop(&mut self) {
        // A container being started or restarted may refuse an rm -f for a moment: a few
        // rounds, and what still stands is written down (a passing test's output is not
        // shown) for scripts/test.sh to name beside the cgroups it finds left.
        let mut failures = Vec::new();
        for round in 0..5 {
            let Ok(out) = self.cmd().args(["ps", "-a", "-q", "--no-trunc"]).output() else {
                return;
            };
            let ids = String::from_utf8_lossy(&out.stdout).into_owned();
            if ids.trim().is_empty() {
                return;
            }
            failures.clear();
            for id in ids.lines() {
                if let Ok(rm) = self.cmd().args(["rm", "-f", id]).output() {
                    if !rm.status.success() {
                        failures.push(format!(
                            "{id}: {}",
                            String::from_utf8_lossy(&rm.stderr).trim()
                        ));
                    }
                }
            }
            if failures.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200 << round));
        }
        super::note_leftover(&format!(
            "rm -f failed under {}: {}",
            self.root.path().display(),
            failures.join("; ")
        ));
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

/// Whether `program` is on PATH.
pub fn tool_exists(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
