//! Fixtures shared by the integration tests: skips that say why, root checks and a busybox
//! rootfs made from the host's busybox-static.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub mod cli;

/// Skip the current test with a reason, never passing silently: printed to stderr (seen with
/// --nocapture or when a test fails) and appended to target/tmp/skips.log, which
/// scripts/test.sh prints after the suite, since cargo hides a passing test's output.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => {{
        $crate::common::note_skip(module_path!(), &format!($($arg)*));
        return;
    }};
}

/// Record why (part of) a test did not run: see [`skip!`]. `HUSK_SKIP_LOG` names another log
/// (the nested tier's, whose target directory is read-only).
/// A cleanup that failed, in `target/tmp/leftovers.log` (HUSK_LEFTOVER_LOG): a passing
/// test's output is not shown, and scripts/test.sh prints this file when it finds state left.
pub fn note_leftover(what: &str) {
    use std::io::Write;
    eprintln!("LEFTOVER {what}");
    let log = std::env::var_os("HUSK_LEFTOVER_LOG")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("leftovers.log"));
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = file.write_all(format!("{what}\n").as_bytes());
    }
}

pub fn note_skip(test: &str, reason: &str) {
    use std::io::Write;
    eprintln!("SKIP {test}: {reason}");
    let log = std::env::var_os("HUSK_SKIP_LOG")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("skips.log"));
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        // One write per line: tests skipping at once must not interleave their lines.
        let _ = file.write_all(format!("SKIP {test}: {reason}\n").as_bytes());
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Path of the host's static busybox (Debian's busybox-static), if installed.
pub fn host_busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists() && is_static(p))
}

fn is_static(path: &Path) -> bool {
    Command::new("file")
        .arg("-L")
        .arg(path)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("statically linked"))
        .unwrap_or(true)
}

/// Fill `dir` with a minimal busybox rootfs: /bin/busybox plus one symlink per applet and the
/// directories a container expects.
pub fn make_busybox_rootfs(dir: &Path) -> std::io::Result<()> {
    let busybox = host_busybox().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "busybox-static is not installed",
        )
    })?;
    for sub in [
        "bin", "etc", "tmp", "proc", "sys", "dev", "root", "var", "home",
    ] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::copy(&busybox, dir.join("bin/busybox"))?;
    let out = Command::new(&busybox).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let link = dir.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            std::os::unix::fs::symlink("busybox", link)?;
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
    )?;
    std::fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    Ok(())
}

/// `tar` of a directory's contents with numeric owners, as an image import wants it.
pub fn tar_dir(dir: &Path, out: &Path) {
    let status = Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(dir)
        .arg("-cf")
        .arg(out)
        .arg(".")
        .status()
        .expect("running tar");
    assert!(status.success(), "tar of {} failed", dir.display());
}

/// The guest kernel and static agent for VM isolation (`HUSK_KERNEL` and `HUSK_AGENT` when
/// both are set, as in the nested tier; else built on first use by the project's scripts,
/// cached after), or why VM tests cannot run here.
pub fn guest_assets() -> Result<&'static (PathBuf, PathBuf), String> {
    static ASSETS: OnceLock<Result<(PathBuf, PathBuf), String>> = OnceLock::new();
    ASSETS
        .get_or_init(|| {
            if !is_root() {
                return Err("VM isolation tests need root".into());
            }
            if Command::new("qemu-system-x86_64")
                .arg("--version")
                .output()
                .is_err()
            {
                return Err("qemu-system-x86_64 is not installed (Debian: qemu-system-x86)".into());
            }
            if host_busybox().is_none() {
                return Err("busybox-static is not installed".into());
            }
            if let (Some(kernel), Some(agent)) = (
                std::env::var_os("HUSK_KERNEL"),
                std::env::var_os("HUSK_AGENT"),
            ) {
                return Ok((kernel.into(), agent.into()));
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

/// The monitor VM tests use: `HUSK_VMM` when set (the nested tier sets `husk`), else husk's
/// own on hardware KVM and QEMU elsewhere (PVM hosts, where a stock guest cannot boot).
pub fn vm_monitor() -> String {
    match std::env::var("HUSK_VMM") {
        Ok(vmm) if !vmm.is_empty() => vmm,
        _ if hardware_kvm() => "husk".into(),
        _ => "qemu".into(),
    }
}

/// VMX or SVM: husk's own monitor can boot a stock guest kernel here.
pub fn hardware_kvm() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.split_whitespace().any(|f| f == "vmx" || f == "svm"))
        .unwrap_or(false)
}
