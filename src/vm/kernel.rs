//! Locating the guest kernel built by guest-kernel/build.sh and the static guest agent, and
//! naming them (kernel release + config hash) so every result can say what it ran.

use std::fs;
use std::path::{Path, PathBuf};

use super::VmError;

/// A built guest kernel: guest-kernel/build.sh writes these files side by side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestKernel {
    /// ELF vmlinux (has a PVH note, so QEMU can load it too).
    pub vmlinux: PathBuf,
    /// bzImage, when it was built alongside.
    pub bzimage: Option<PathBuf>,
    /// `make kernelrelease`, e.g. "6.1.192".
    pub release: String,
    /// sha256 of the kernel's .config.
    pub config_sha256: String,
}

impl GuestKernel {
    /// Describe the kernel at `vmlinux` from the metadata next to it.
    pub fn from_vmlinux(vmlinux: &Path) -> Result<GuestKernel, VmError> {
        if !vmlinux.is_file() {
            return Err(VmError::Invalid(format!(
                "guest kernel {} does not exist: run guest-kernel/build.sh",
                vmlinux.display()
            )));
        }
        let read = |name: &str| -> Result<String, VmError> {
            let path = vmlinux.with_file_name(name);
            fs::read_to_string(&path)
                .map(|s| s.trim().to_string())
                .map_err(VmError::io("reading kernel metadata", &path))
        };
        let bzimage = vmlinux.with_file_name("bzImage");
        Ok(GuestKernel {
            vmlinux: vmlinux.to_path_buf(),
            bzimage: bzimage.is_file().then_some(bzimage),
            release: read("kernel.release")?,
            config_sha256: read("config.sha256")?,
        })
    }

    /// The most recently built kernel in a guest-kernel/cache directory, if any.
    pub fn newest_in(cache: &Path) -> Option<GuestKernel> {
        let mut built: Vec<(std::time::SystemTime, GuestKernel)> = fs::read_dir(cache)
            .ok()?
            .flatten()
            .filter_map(|e| {
                let vmlinux = e.path().join("vmlinux");
                let kernel = GuestKernel::from_vmlinux(&vmlinux).ok()?;
                Some((fs::metadata(&vmlinux).ok()?.modified().ok()?, kernel))
            })
            .collect();
        built.sort_by_key(|(t, _)| *t);
        built.pop().map(|(_, k)| k)
    }

    /// "6.1.192 (config a788cd70cfe1)": how results name the kernel.
    pub fn describe(&self) -> String {
        let short = self.config_sha256.get(..12).unwrap_or(&self.config_sha256);
        format!("{} (config {short})", self.release)
    }
}

/// The static guest agent: `$HUSK_AGENT` if set, else `rootfs-agent` next to the running
/// executable, else the static build rootfs-agent/build-static.sh leaves in the target dir.
pub fn locate_agent(chosen: Option<&Path>) -> Result<PathBuf, VmError> {
    if let Some(path) = chosen {
        let path = path.to_path_buf();
        return if path.is_file() {
            Ok(path)
        } else {
            Err(VmError::Invalid(format!(
                "HUSK_AGENT={} does not exist",
                path.display()
            )))
        };
    }
    let exe = std::env::current_exe().map_err(VmError::io("locating", Path::new("current exe")))?;
    let mut candidates = Vec::new();
    if let Some(dir) = exe.parent() {
        candidates.push(dir.join("rootfs-agent"));
        // target/<profile>/husk or target/<profile>/deps/test-binary
        for up in dir.ancestors().take(3) {
            for profile in ["release", "debug"] {
                candidates.push(
                    up.join("x86_64-unknown-linux-gnu")
                        .join(profile)
                        .join("rootfs-agent"),
                );
            }
        }
    }
    candidates.into_iter().find(|p| is_static_elf(p)).ok_or_else(|| {
        VmError::Invalid(
            "no static guest agent found: build it with rootfs-agent/build-static.sh or set HUSK_AGENT".into(),
        )
    })
}

/// A dynamically linked agent would die as PID 1 in a guest with no libc: check for an ELF
/// without a PT_INTERP program header.
fn is_static_elf(path: &Path) -> bool {
    let Ok(bytes) = fs::read(path) else {
        return false;
    };
    if bytes.len() < 64 || !bytes.starts_with(b"\x7fELF") || bytes[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap_or_default()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).all(|i| {
        let at = phoff.saturating_add(i.saturating_mul(phentsize));
        // PT_INTERP = 3
        bytes
            .get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) != 3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_check_tells_static_from_dynamic() {
        if let Ok(bb) = fs::canonicalize("/bin/busybox") {
            // Debian's busybox-static is static; skip quietly otherwise.
            let out = std::process::Command::new("file")
                .arg("-L")
                .arg(&bb)
                .output();
            if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("statically linked")) {
                assert!(is_static_elf(&bb));
            }
        }
        assert!(
            !is_static_elf(Path::new("/bin/ls")),
            "/bin/ls is dynamic on Debian"
        );
        assert!(!is_static_elf(Path::new("/etc/passwd")));
    }

    #[test]
    fn kernel_metadata_is_read_next_to_vmlinux() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("abc");
        fs::create_dir_all(&dir).unwrap();
        assert!(GuestKernel::from_vmlinux(&dir.join("vmlinux")).is_err());
        fs::write(dir.join("vmlinux"), b"\x7fELF").unwrap();
        fs::write(dir.join("kernel.release"), "6.1.192\n").unwrap();
        fs::write(dir.join("config.sha256"), "a788cd70cfe1fc257e3c\n").unwrap();
        let k = GuestKernel::newest_in(tmp.path()).unwrap();
        assert_eq!(k.describe(), "6.1.192 (config a788cd70cfe1)");
        assert_eq!(k.bzimage, None);
    }
}
