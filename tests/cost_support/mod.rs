//! Shared setup of the cost tests: a husk root with a busybox image, and the guest kernel and
//! agent for VM runs when this host can build them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use crate::common;

/// Kernel and agent for VM isolation, or why VM runs cannot happen here.
pub fn guest_assets() -> Result<&'static (PathBuf, PathBuf), String> {
    static ASSETS: OnceLock<Result<(PathBuf, PathBuf), String>> = OnceLock::new();
    ASSETS
        .get_or_init(|| {
            if Command::new("qemu-system-x86_64")
                .arg("--version")
                .output()
                .is_err()
            {
                return Err("qemu-system-x86_64 is not installed (Debian: qemu-system-x86)".into());
            }
            let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
            let built = |script: &str| -> Result<PathBuf, String> {
                let out = Command::new(repo.join(script))
                    .stderr(Stdio::inherit())
                    .output()
                    .map_err(|e| format!("{script}: {e}"))?;
                if !out.status.success() {
                    return Err(format!("{script} failed"));
                }
                Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
            };
            Ok((
                built("guest-kernel/build.sh")?,
                built("rootfs-agent/build-static.sh")?,
            ))
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn hardware_kvm() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.split_whitespace().any(|f| f == "vmx" || f == "svm"))
        .unwrap_or(false)
}

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
        assert!(Command::new("tar")
            .args(["--numeric-owner", "-C"])
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap()
            .success());
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
        ];
        if !hardware_kvm() {
            self.env.push(("HUSK_VMM".into(), "qemu".into()));
        }
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
