//! Shared setup of the cost tests: a husk root with a busybox image, and the guest kernel and
//! agent for VM runs when this host can build them.

use std::process::{Command, Output, Stdio};

use crate::common;
pub use crate::common::guest_assets;

pub struct Husk {
    pub root: tempfile::TempDir,
    /// Environment for VM runs (kernel, agent, monitor choice).
    pub env: Vec<(String, String)>,
}

impl Husk {
    /// A root with a `busybox` image; Err says why the host cannot run containers.
    pub fn new() -> Result<Self, String> {
        if !common::is_root() {
            return Err("containers need root".into());
        }
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        common::make_busybox_rootfs(&rootfs).map_err(|e| e.to_string())?;
        let tar = dir.path().join("rootfs.tar");
        common::tar_dir(&rootfs, &tar);
        let husk = Self {
            root: tempfile::tempdir().unwrap(),
            env: Vec::new(),
        };
        let out = husk.run(&[
            "import",
            "--change",
            "CMD [\"sh\"]",
            tar.to_str().unwrap(),
            "busybox",
        ]);
        assert!(out.status.success(), "import failed");
        Ok(husk)
    }

    /// Set up VM runs; Err says why they cannot happen on this host.
    pub fn with_vm(mut self) -> Result<Self, String> {
        let (kernel, agent) = guest_assets()?.clone();
        self.env = vec![
            ("HUSK_KERNEL".into(), kernel.display().to_string()),
            ("HUSK_AGENT".into(), agent.display().to_string()),
            ("HUSK_VMM".into(), common::vm_monitor()),
        ];
        Ok(self)
    }

    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_husk"));
        cmd.arg("--root").arg(self.root.path());
        cmd.env_remove("HUSK_ISOLATION");
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd().args(args).output().unwrap();
        eprintln!(
            "husk {args:?} -> {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
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
