//! `husk info` and `husk vm boot` through the real binary: output lines, exit codes, and one
//! clear error line for bad input. The boot cases need /dev/kvm (T1) and skip without it.
mod common;

use std::process::Command;

fn husk() -> Command {
    Command::new(env!("CARGO_BIN_EXE_husk"))
}

/// Whether this process may open /dev/kvm read-write (the boot cases need it).
fn kvm_accessible() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// A 5-byte guest: mov al, 0xfe; out 0x64, al; hlt (an i8042 reset).
fn write_reset_elf(path: &std::path::Path) {
    write_elf(path, &[0xb0u8, 0xfe, 0xe6, 0x64, 0xf4]);
}

/// An ELF64 with `code` loaded and entered at 1 MiB.
fn write_elf(path: &std::path::Path, code: &[u8]) {
    let len = code.len() as u64;
    let load: u64 = 0x10_0000;
    let mut f = b"\x7fELF\x02\x01\x01\x00".to_vec();
    f.extend_from_slice(&[0; 8]);
    for (v, n) in [
        (2u64, 2),
        (0x3e, 2),
        (1, 4),
        (load, 8),
        (64, 8),
        (0, 8),
        (0, 4),
        (64, 2),
        (56, 2),
        (1, 2),
        (64, 2),
        (0, 2),
        (0, 2),
    ] {
        f.extend_from_slice(&v.to_le_bytes()[..n]);
    }
    for (v, n) in [
        (1u64, 4),
        (7, 4),
        (120, 8),
        (load, 8),
        (load, 8),
        (len, 8),
        (len, 8),
        (0x1000, 8),
    ] {
        f.extend_from_slice(&v.to_le_bytes()[..n]);
    }
    f.extend_from_slice(code);
    std::fs::write(path, f).unwrap();
}

#[test]
fn info_reports_kvm_kind_kernel_and_availability() {
    let out = husk().arg("info").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for field in ["KVM:", "Virtualization:", "Guest kernel:", "VM isolation:"] {
        assert!(text.contains(field), "missing {field} in:\n{text}");
    }
    let pvm_host = std::path::Path::new("/sys/module/kvm_pvm").exists();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = cpuinfo.split_whitespace().collect();
    let hw = flags.iter().any(|f| *f == "vmx" || *f == "svm");
    // In the nested tier's L1 (emulated SVM under a hypervisor) the kind is hardware, and
    // husk says why.
    if hw && flags.contains(&"hypervisor") && text.contains("API version") {
        assert!(
            text.contains("Virtualization:  hardware (VMX/SVM; nested"),
            "{text}"
        );
    }
    if pvm_host && !hw && std::env::var_os("HUSK_KERNEL").is_none() {
        assert!(text.contains("PVM (software virtualization"), "{text}");
        assert!(
            text.contains(husk::vmm::PVM_NOTICE),
            "the one clear PVM line:\n{text}"
        );
    }
}

#[test]
fn vm_boot_rejects_absurd_memory_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("k.elf");
    write_reset_elf(&kernel);
    let out = husk()
        .args(["vm", "boot", "--kernel"])
        .arg(&kernel)
        .args(["--memory", "100000G"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<_> = err
        .lines()
        .filter(|l| l.starts_with("husk: ") && !l.starts_with("husk: warning"))
        .collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("memory"), "{err}");
}

#[test]
fn vm_boot_runs_a_guest_to_reset_and_exits_zero() {
    if !kvm_accessible() {
        skip!("/dev/kvm is missing or not accessible");
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("k.elf");
    write_reset_elf(&kernel);
    let out = husk()
        .args(["vm", "boot", "--kernel"])
        .arg(&kernel)
        .args(["--memory", "64M", "--cpus", "2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("VM stopped: Reset"), "{err}");
}

#[test]
fn vm_boot_debug_connects_the_serial_console_to_stdin_and_stdout() {
    if !kvm_accessible() {
        skip!("/dev/kvm is missing or not accessible");
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("echo.elf");
    // Poll the UART's line status for received data, echo one byte back, then reset.
    let code = [
        0x66, 0xba, 0xfd, 0x03, // mov dx, 0x3fd (LSR)
        0xec, // in al, dx
        0xa8, 0x01, // test al, 1 (data ready)
        0x74, 0xfb, // jz -5
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xec, // in al, dx (RBR)
        0xee, // out dx, al (THR)
        0xb0, 0xfe, 0xe6, 0x64, 0xf4, // i8042 reset
    ];
    write_elf(&kernel, &code);
    let mut child = husk()
        .args(["vm", "boot", "--debug", "--memory", "64M", "--kernel"])
        .arg(&kernel)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"Q").unwrap();
    // A guest that never sees the byte polls forever: fail after 20 s instead of hanging.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"Q");
}

/// One `Name:\tvalue` line of a /proc status file.
fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// The jail, shown in /proc while the VM runs: every thread of the monitor process under a
/// seccomp filter and an unprivileged uid of its own, no capabilities, no_new_privs, not
/// dumpable, and namespaces of its own whose root is empty.
#[test]
fn vm_boot_as_root_jails_every_monitor_thread() {
    if !kvm_accessible() {
        skip!("/dev/kvm is missing or not accessible");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip!("the monitor jail needs root");
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("idle.elf");
    // cli; hlt; jmp back: parked in KVM (in-kernel LAPIC) until the test stops it.
    write_elf(&kernel, &[0xfa, 0xf4, 0xeb, 0xfd]);
    let child = husk()
        .args(["vm", "boot", "--memory", "64M", "--cpus", "2", "--kernel"])
        .arg(&kernel)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            // SAFETY: signalling the child this test spawned.
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
    let _guard = KillOnDrop(pid);
    // main, the device thread and one thread per vCPU, each filtered (comm is cut at 15 bytes),
    // beside which KVM may run a worker of its own in the process ("kvm-nx-lpage-recovery").
    const MONITOR_THREADS: [&str; 4] = ["husk", "husk-vcpu0", "husk-vcpu1", "husk-vmm-device"];
    let statuses = || -> Vec<(String, String)> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|tasks| {
                tasks
                    .flatten()
                    .map(|t| {
                        let comm =
                            std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
                        let status =
                            std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
                        (comm.trim().to_string(), status)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let threads = loop {
        let threads = statuses();
        let all_filtered = threads
            .iter()
            .all(|(_, s)| status_field(s, "Seccomp") == "2");
        let started = MONITOR_THREADS
            .iter()
            .all(|name| threads.iter().any(|(c, _)| c == name));
        if started && all_filtered {
            break threads;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the monitor's threads never were all filtered: {:?}",
            threads
                .iter()
                .map(|(c, s)| (c, status_field(s, "Seccomp"), status_field(s, "Uid")))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let id = (0x7000_0000u32 + pid).to_string();
    for (comm, _) in &threads {
        assert!(
            MONITOR_THREADS.contains(&comm.as_str()) || comm.starts_with("kvm-"),
            "an unexpected thread in the monitor: {comm}"
        );
    }
    for (comm, status) in &threads {
        let ids = |field| {
            status_field(status, field)
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids("Uid"),
            [id.as_str(); 4],
            "{comm}: real, effective, saved, fs uid"
        );
        assert_eq!(ids("Gid"), [id.as_str(); 4], "{comm}");
        assert_eq!(status_field(status, "Groups"), "", "{comm}");
        assert_eq!(status_field(status, "CapEff"), "0000000000000000", "{comm}");
        assert_eq!(status_field(status, "CapPrm"), "0000000000000000", "{comm}");
        assert_eq!(status_field(status, "NoNewPrivs"), "1", "{comm}");
    }
    for ns in ["mnt", "net", "ipc", "uts", "cgroup"] {
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let its = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_ne!(ours, its, "the monitor shares the {ns} namespace");
    }
    // Its root is the empty tmpfs: no kernel, no disks, no /dev/kvm, no host files.
    let root: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/root"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(root.is_empty(), "{root:?}");
    // Not dumpable: /proc/<pid>/environ and mem belong to root, not to the monitor's uid.
    let meta = std::fs::metadata(format!("/proc/{pid}/environ")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);

    // SAFETY: signalling the child this test spawned.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM), "{err}");
    assert!(err.contains("VM stopped: Signal(15)"), "{err}");
}
