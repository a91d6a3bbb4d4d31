//! What this host can do for VM isolation: is there a KVM, is it hardware-assisted or PVM
//! (software virtualization, on which a stock guest kernel cannot boot), and which guest
//! kernel would be used.

use std::path::{Path, PathBuf};

/// How the host's /dev/kvm virtualizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmKind {
    /// VMX or SVM in the CPU flags: any x86_64 guest kernel boots.
    Hardware,
    /// The kvm_pvm module without VMX/SVM: only PVM-capable guest kernels boot.
    Pvm,
    /// /dev/kvm exists but neither hardware support nor PVM was recognised.
    Unknown,
    /// No usable /dev/kvm.
    None,
}

#[derive(Debug, Clone)]
pub struct HostVirt {
    pub kind: KvmKind,
    /// The CPU flags say this host is itself a guest ("hypervisor"): with VMX/SVM that is
    /// nested virtualization, which counts as hardware for husk.
    pub nested: bool,
    /// KVM_GET_API_VERSION, when /dev/kvm could be opened.
    pub kvm_api_version: Option<i32>,
    /// Why /dev/kvm is unusable, when it is.
    pub kvm_error: Option<String>,
    /// The guest kernel `husk` would boot (the chosen one, else the cached guest-kernel build).
    pub guest_kernel: Option<PathBuf>,
    /// The kernel was chosen (HUSK_KERNEL): on a PVM host only such a kernel may boot.
    pub kernel_chosen: bool,
}

/// The one line said to users on PVM hosts.
pub const PVM_NOTICE: &str = "this host's KVM is PVM (software virtualization): a stock guest \
kernel cannot boot here; set HUSK_KERNEL to a PVM-capable kernel, or HUSK_VMM=qemu to run the \
same guest under QEMU";

impl HostVirt {
    /// Whether `husk` can run VM-isolated containers with the kernel it would use.
    pub fn can_run_vms(&self) -> bool {
        match self.kind {
            KvmKind::Hardware | KvmKind::Unknown => self.guest_kernel.is_some(),
            // Only an explicitly chosen kernel may be PVM-capable; the default build is stock.
            KvmKind::Pvm => self.kernel_chosen,
            KvmKind::None => false,
        }
    }

    /// One line saying why VMs cannot run, or None when they can.
    pub fn blocker(&self) -> Option<String> {
        match self.kind {
            KvmKind::None => Some(format!(
                "VM isolation unavailable: /dev/kvm is not usable ({})",
                self.kvm_error.as_deref().unwrap_or("missing")
            )),
            KvmKind::Pvm if !self.can_run_vms() => Some(PVM_NOTICE.to_string()),
            _ if self.guest_kernel.is_none() => Some(
                "no guest kernel: build one with guest-kernel/build.sh or set HUSK_KERNEL".into(),
            ),
            _ => None,
        }
    }
}

/// Classify from the pieces of host state (separate from the probing for tests).
pub fn classify(cpuinfo: &str, pvm_module_loaded: bool, kvm_usable: bool) -> KvmKind {
    if !kvm_usable {
        return KvmKind::None;
    }
    let hw = has_cpu_flag(cpuinfo, "vmx") || has_cpu_flag(cpuinfo, "svm");
    match (hw, pvm_module_loaded) {
        (true, _) => KvmKind::Hardware,
        (false, true) => KvmKind::Pvm,
        (false, false) => KvmKind::Unknown,
    }
}

fn has_cpu_flag(cpuinfo: &str, flag: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == flag))
}

fn pvm_module_loaded() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
        || std::fs::read_to_string("/proc/modules")
            .map(|m| {
                m.lines()
                    .any(|l| l.split_whitespace().next() == Some("kvm_pvm"))
            })
            .unwrap_or(false)
}

/// The guest kernel `husk` would boot: $HUSK_KERNEL; else `vmlinux` in $HUSK_KERNEL_CACHE
/// (default /var/cache/husk/guest-kernel); else, for a development build, the newest
/// `guest-kernel/cache/<hash>/vmlinux` that guest-kernel/build.sh left in the source tree.
pub fn default_guest_kernel() -> Option<PathBuf> {
    if let Some(k) = std::env::var_os("HUSK_KERNEL") {
        return Some(PathBuf::from(k));
    }
    cached_guest_kernel()
}

/// The cached guest-kernel build (no HUSK_KERNEL).
fn cached_guest_kernel() -> Option<PathBuf> {
    let cache = std::env::var_os("HUSK_KERNEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/husk/guest-kernel"));
    let installed = cache.join("vmlinux");
    if installed.is_file() {
        return Some(installed);
    }
    newest_vmlinux_under(&Path::new(env!("CARGO_MANIFEST_DIR")).join("guest-kernel/cache"))
}

fn newest_vmlinux_under(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("vmlinux"))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
}

/// The host as the environment (HUSK_KERNEL) describes it: for the edges (`husk info`, `vm
/// boot`, tests). The runtime passes its configured kernel to [`probe_host_for`].
pub fn probe_host() -> HostVirt {
    probe_host_for(std::env::var_os("HUSK_KERNEL").map(PathBuf::from))
}

/// The host with `kernel` as the chosen guest kernel (None: the cached build).
pub fn probe_host_for(kernel: Option<PathBuf>) -> HostVirt {
    let (api, err) = match kvm_ioctls::Kvm::new() {
        Ok(kvm) => (Some(kvm.get_api_version()), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    HostVirt {
        kind: classify(&cpuinfo, pvm_module_loaded(), api.is_some()),
        nested: has_cpu_flag(&cpuinfo, "hypervisor"),
        kvm_api_version: api,
        kvm_error: err,
        kernel_chosen: kernel.is_some(),
        guest_kernel: kernel.or_else(cached_guest_kernel),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let hw = "processor: 0\nflags\t\t: fpu vme vmx sse\n";
        let plain = "processor: 0\nflags\t\t: fpu vme sse hypervisor\n";
        assert_eq!(classify(hw, false, true), KvmKind::Hardware);
        assert_eq!(classify(plain, true, true), KvmKind::Pvm);
        assert_eq!(classify(plain, false, true), KvmKind::Unknown);
        assert_eq!(classify(hw, true, false), KvmKind::None);
        // "vmx" must be a whole flag, not a substring of another one.
        assert_eq!(classify("flags : avx512vmxfoo\n", true, true), KvmKind::Pvm);
        // A guest whose hypervisor passes SVM through (nested) is hardware too.
        let nested = "flags\t\t: fpu svm hypervisor\n";
        assert_eq!(classify(nested, false, true), KvmKind::Hardware);
        assert!(has_cpu_flag(nested, "hypervisor") && !has_cpu_flag(hw, "hypervisor"));
    }

    #[test]
    fn newest_cached_kernel_is_found() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(newest_vmlinux_under(dir.path()), None);
        for (name, age) in [("aaaa", 100u64), ("bbbb", 10)] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            let f = std::fs::File::create(dir.path().join(name).join("vmlinux")).unwrap();
            let t = std::time::SystemTime::now() - std::time::Duration::from_secs(age);
            f.set_modified(t).unwrap();
        }
        std::fs::create_dir(dir.path().join("build-cccc")).unwrap(); // no vmlinux: ignored
        assert_eq!(
            newest_vmlinux_under(dir.path()),
            Some(dir.path().join("bbbb/vmlinux"))
        );
    }

    #[test]
    fn pvm_blocker_is_the_one_line_notice() {
        let h = HostVirt {
            kind: KvmKind::Pvm,
            nested: true,
            kvm_api_version: Some(12),
            kvm_error: None,
            guest_kernel: Some("/k".into()),
            kernel_chosen: false,
        };
        assert_eq!(h.blocker().as_deref(), Some(PVM_NOTICE));
    }
}
