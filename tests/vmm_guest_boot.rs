//! T3: husk's monitor boots our guest kernel (guest-kernel/build.sh) to an init in an
//! initramfs, which lists the virtio block devices it sees and reboots; the VM must stop with
//! a clean reset. Needs hardware KVM, or a PVM host with a PVM-capable kernel in HUSK_KERNEL.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use husk::vmm::{
    probe_host, run_vm, DiskConfig, ExitReason, KvmKind, SerialOutput, VmConfig, PVM_NOTICE,
};

/// Append one newc cpio entry.
fn cpio_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
    let fields = [
        ino,
        mode,
        0,
        0,
        1,
        0,
        data.len() as u32,
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// An initramfs with busybox and an /init that reports the block devices and reboots.
fn make_initramfs(path: &Path, busybox: &Path) {
    let init = b"#!/bin/busybox sh\n\
/bin/busybox mkdir -p /sys /proc\n\
/bin/busybox mount -t sysfs sysfs /sys\n\
/bin/busybox echo \"HUSK_INIT_OK blocks: $(/bin/busybox ls /sys/block | /bin/busybox tr '\\n' ' ')\"\n\
/bin/busybox reboot -f\n";
    let mut cpio = Vec::new();
    cpio_entry(&mut cpio, 1, "dev", 0o040755, (0, 0), &[]);
    cpio_entry(&mut cpio, 2, "dev/console", 0o020600, (5, 1), &[]);
    cpio_entry(&mut cpio, 3, "bin", 0o040755, (0, 0), &[]);
    cpio_entry(
        &mut cpio,
        4,
        "bin/busybox",
        0o100755,
        (0, 0),
        &std::fs::read(busybox).unwrap(),
    );
    cpio_entry(&mut cpio, 5, "init", 0o100755, (0, 0), init);
    cpio_entry(&mut cpio, 6, "TRAILER!!!", 0, (0, 0), &[]);
    std::fs::write(path, cpio).unwrap();
}

/// HUSK_KERNEL, else what guest-kernel/build.sh prints (last line of its stdout).
fn guest_kernel() -> Result<PathBuf, String> {
    if let Some(k) = std::env::var_os("HUSK_KERNEL") {
        return Ok(k.into());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest-kernel/build.sh");
    if !script.exists() {
        return Err(format!(
            "{} does not exist and HUSK_KERNEL is not set",
            script.display()
        ));
    }
    let out = Command::new(&script)
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    Ok(PathBuf::from(path))
}

/// The guest kernel to boot, or None (with the reason noted) when this host cannot.
fn bootable_kernel() -> Option<PathBuf> {
    let host = probe_host();
    match host.kind {
        KvmKind::None => {
            let why = host.kvm_error.unwrap_or_default();
            common::note_skip(module_path!(), &format!("no usable /dev/kvm: {why}"));
            return None;
        }
        KvmKind::Pvm if std::env::var_os("HUSK_KERNEL").is_none() => {
            common::note_skip(
                module_path!(),
                &format!("{PVM_NOTICE} (scripts/test-nested.sh runs this test on emulated SVM)"),
            );
            return None;
        }
        _ => {}
    }
    match guest_kernel() {
        Ok(k) => Some(k),
        Err(why) => {
            common::note_skip(module_path!(), &format!("no guest kernel: {why}"));
            None
        }
    }
}

/// Boot `kernel` with 2 vCPUs, an 8 MiB disk and the reporting initramfs; require a clean
/// reset after init saw the disk.
fn boot_to_init_and_reset(kernel: &Path) {
    let Some(busybox) = common::host_busybox() else {
        skip!("busybox-static is not installed (apt-get install busybox-static)");
    };
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initramfs.cpio");
    make_initramfs(&initrd, &busybox);
    let disk = dir.path().join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let log = dir.path().join("serial.log");

    let mut cfg = VmConfig::new(kernel);
    cfg.initrd = Some(initrd);
    cfg.memory_mib = 256;
    cfg.vcpus = 2;
    cfg.disks = vec![DiskConfig {
        path: disk,
        read_only: true,
    }];
    cfg.serial = SerialOutput::File(log.clone());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(run_vm(cfg));
    });
    let exit = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(result) => result.expect("run_vm"),
        Err(_) => {
            // SAFETY: signalling our own process; run_vm's handler turns it into a VM stop.
            unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
            let _ = rx.recv_timeout(Duration::from_secs(10));
            panic!(
                "guest did not reach init within 120 s; serial:\n{}",
                String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default())
            );
        }
    };
    let serial = String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
    assert_eq!(
        exit.reason,
        ExitReason::Reset,
        "{:?}; {}; serial:\n{serial}",
        exit.detail,
        exit.exits.summary()
    );
    let line = serial
        .lines()
        .find(|l| l.contains("HUSK_INIT_OK"))
        .unwrap_or_else(|| panic!("init never ran; serial:\n{serial}"));
    assert!(
        line.contains("vda"),
        "virtio-blk not found by the guest: {line}"
    );
    // The monitor counted the exits that reached it, virtio's among them (the disk was read).
    let virtio = exit
        .exits
        .monitor
        .iter()
        .find(|(what, _)| *what == "mmio virtio")
        .map(|(_, n)| *n);
    assert!(virtio.unwrap_or(0) > 0, "{:?}", exit.exits);
    eprintln!("{}", exit.exits.summary());
}

#[test]
fn our_guest_kernel_boots_to_init_and_resets() {
    let Some(kernel) = bootable_kernel() else {
        return;
    };
    boot_to_init_and_reset(&kernel);
}

/// The same kernel as a bzImage (guest-kernel/build.sh keeps it beside the vmlinux): the
/// linux-loader bzImage path and the 64-bit boot protocol's setup header.
#[test]
fn our_guest_kernel_boots_from_its_bzimage() {
    let Some(kernel) = bootable_kernel() else {
        return;
    };
    let bzimage = kernel.with_file_name("bzImage");
    if !bzimage.is_file() {
        skip!("no bzImage beside {}", kernel.display());
    }
    boot_to_init_and_reset(&bzimage);
}
