//! `husk info` and `husk vm boot` through the real binary: output lines, exit codes, and one
//! clear error line for bad input. The boot cases need /dev/kvm (T1) and skip without it.
mod common;

use std::process::Command;

fn husk() -> Command {
    Command::new(env!("CARGO_BIN_EXE_husk"))
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
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
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
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
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
