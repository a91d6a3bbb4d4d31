//! T1: tiny guest programs on /dev/kvm (hardware or PVM), loaded through husk's real boot path
//! (ELF loader, zero page, long-mode page tables, vCPU thread, PIO/MMIO buses, event loop).
mod common;

use std::io::Write;
use std::path::Path;

use husk::vmm::{run_vm, DiskConfig, ExitReason, SerialOutput, VmConfig};

/// Guest physical load address of the test program (what the kernel loader requires: >= 1 MiB).
const LOAD_ADDR: u64 = 0x10_0000;

/// Wrap `code` in a minimal ELF64 executable with one PT_LOAD segment at LOAD_ADDR.
fn write_elf(path: &Path, code: &[u8]) {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let offset = (EHDR + PHDR) as u64;
    let mut f = Vec::new();
    f.extend_from_slice(b"\x7fELF");
    f.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little endian, version 1, SysV
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&0x3eu16.to_le_bytes()); // x86_64
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // entry
    f.extend_from_slice(&(EHDR as u64).to_le_bytes()); // phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // flags
    f.extend_from_slice(&(EHDR as u16).to_le_bytes());
    f.extend_from_slice(&(PHDR as u16).to_le_bytes());
    f.extend_from_slice(&1u16.to_le_bytes()); // phnum
    f.extend_from_slice(&64u16.to_le_bytes()); // shentsize
    f.extend_from_slice(&0u16.to_le_bytes()); // shnum
    f.extend_from_slice(&0u16.to_le_bytes()); // shstrndx
    assert_eq!(f.len(), EHDR);
    f.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    f.extend_from_slice(&7u32.to_le_bytes()); // RWX
    f.extend_from_slice(&offset.to_le_bytes());
    f.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // vaddr
    f.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // paddr
    f.extend_from_slice(&(code.len() as u64).to_le_bytes());
    f.extend_from_slice(&(code.len() as u64).to_le_bytes());
    f.extend_from_slice(&0x1000u64.to_le_bytes());
    assert_eq!(f.len(), EHDR + PHDR);
    f.extend_from_slice(code);
    std::fs::write(path, f).unwrap();
}

/// 64-bit code: print `msg` on COM1, read the first virtio-mmio register and print its four
/// bytes, then reset through the i8042.
fn serial_mmio_reset_program(msg: &[u8]) -> Vec<u8> {
    let mut c = vec![
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0x48, 0x8d, 0x35, 0x25, 0x00, 0x00, 0x00, // lea rsi, [rip + 0x25] -> msg at 48
        0xac, // lodsb
        0x84, 0xc0, // test al, al
        0x74, 0x03, // jz +3
        0xee, // out dx, al
        0xeb, 0xf8, // jmp lodsb
        0xa1, 0x00, 0x00, 0x00, 0xd0, 0x00, 0x00, 0x00, 0x00, // mov eax, [0xd0000000]
        0xee, 0xc1, 0xe8, 0x08, // out dx, al; shr eax, 8
        0xee, 0xc1, 0xe8, 0x08, //
        0xee, 0xc1, 0xe8, 0x08, //
        0xee, // out dx, al
        0xb0, 0xfe, // mov al, 0xfe
        0xe6, 0x64, // out 0x64, al
        0xf4, // hlt
        0xeb, 0xfd, // jmp hlt
    ];
    assert_eq!(c.len(), 48);
    c.extend_from_slice(msg);
    c.push(0);
    c
}

/// A guest that prints `msg` on COM1 and then runs `tail`.
fn print_then(msg: &[u8], tail: &[u8]) -> Vec<u8> {
    let disp = 8 + tail.len() as u8; // msg sits right after the tail
    let mut c = vec![
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0x48, 0x8d, 0x35, disp, 0x00, 0x00, 0x00, // lea rsi, [rip + disp] -> msg
        0xac, // lodsb
        0x84, 0xc0, // test al, al
        0x74, 0x03, // jz +3
        0xee, // out dx, al
        0xeb, 0xf8, // jmp lodsb
    ];
    c.extend_from_slice(tail);
    c.extend_from_slice(msg);
    c.push(0);
    c
}

/// cli; hlt; jmp hlt: waits forever.
const HALT_FOREVER: &[u8] = &[0xfa, 0xf4, 0xeb, 0xfd];
/// ud2 with no IDT: #UD -> #GP -> #DF -> triple fault.
const TRIPLE_FAULT: &[u8] = &[0x0f, 0x0b];
/// mov al, 0xfe; out 0x64, al: i8042 CPU reset.
const I8042_RESET: &[u8] = &[0xb0, 0xfe, 0xe6, 0x64, 0xf4];

/// run_vm, but a guest that never stops is stopped with SIGTERM after `secs` (the monitor's
/// handler turns it into ExitReason::Signal), so a regression fails instead of hanging.
fn run_vm_with_deadline(cfg: VmConfig, secs: u64) -> husk::vmm::VmExit {
    let (tx, rx) = std::sync::mpsc::channel();
    let vm = std::thread::spawn(move || {
        let r = run_vm(cfg);
        let _ = tx.send(());
        r
    });
    if rx
        .recv_timeout(std::time::Duration::from_secs(secs))
        .is_err()
    {
        // SAFETY: signalling our own process while run_vm's handler is installed.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    }
    vm.join().unwrap().expect("run_vm")
}

/// The VM tests share the process's SIGTERM handling: run them one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn kvm_or_skip() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

#[test]
fn tiny_guest_writes_serial_reads_virtio_magic_and_resets() {
    if !kvm_or_skip() {
        skip!("/dev/kvm is missing or not accessible");
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("guest.elf");
    write_elf(
        &kernel,
        &serial_mmio_reset_program(b"hello from the guest\n"),
    );
    let disk = dir.path().join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let log = dir.path().join("serial.log");

    let mut cfg = VmConfig::new(&kernel);
    cfg.memory_mib = 64;
    cfg.disks = vec![DiskConfig {
        path: disk,
        read_only: true,
    }];
    cfg.serial = SerialOutput::File(log.clone());
    let exit = run_vm_with_deadline(cfg, 20);
    let out = std::fs::read(&log).unwrap();
    assert_eq!(
        exit.reason,
        ExitReason::Reset,
        "serial: {:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(exit.status(), 0);
    // 0x74726976 little endian is "virt".
    assert_eq!(out, b"hello from the guest\nvirt");
    let _ = std::io::stderr().flush();
}

/// Boot `code` with a serial log; returns the exit and what the guest printed.
fn boot(code: &[u8], vcpus: u8) -> (husk::vmm::VmExit, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("guest.elf");
    write_elf(&kernel, code);
    let log = dir.path().join("serial.log");
    let mut cfg = VmConfig::new(&kernel);
    cfg.memory_mib = 64;
    cfg.vcpus = vcpus;
    cfg.serial = SerialOutput::File(log.clone());
    let exit = run_vm_with_deadline(cfg, 20);
    (exit, std::fs::read(&log).unwrap_or_default())
}

/// A hostile guest floods its serial console: the log stops at the limit, with a note, and
/// the flood neither stops nor slows the VM into a timeout.
#[test]
fn serial_flood_is_cut_at_the_log_limit() {
    if !kvm_or_skip() {
        skip!("/dev/kvm is missing or not accessible");
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut code = vec![
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb9, 0x20, 0x4e, 0x00, 0x00, // mov ecx, 20000
        0xb0, b'x', // mov al, 'x'
        0xee, // out dx, al
        0xff, 0xc9, // dec ecx
        0x75, 0xfb, // jnz out
    ];
    code.extend_from_slice(I8042_RESET);
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("guest.elf");
    write_elf(&kernel, &code);
    let log = dir.path().join("serial.log");
    let mut cfg = VmConfig::new(&kernel);
    cfg.memory_mib = 64;
    cfg.serial = SerialOutput::File(log.clone());
    cfg.serial_limit = 4096;
    let exit = run_vm_with_deadline(cfg, 60);
    assert_eq!(exit.reason, ExitReason::Reset);
    let out = std::fs::read(&log).unwrap();
    let mut want = vec![b'x'; 4096];
    want.extend_from_slice(husk::vmm::devices::serial::TRUNCATED_NOTE);
    assert_eq!(out, want);
    // Every byte was still an exit to the monitor: the guest printed all 20000.
    let serial = exit.exits.monitor.iter().find(|(k, _)| *k == "pio serial");
    assert_eq!(serial.map(|(_, n)| *n), Some(20000), "{:?}", exit.exits);
}

#[test]
fn smp_guest_boots_with_application_processors_parked() {
    if !kvm_or_skip() {
        skip!("/dev/kvm is missing or not accessible");
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (exit, out) = boot(&print_then(b"bsp\n", I8042_RESET), 4);
    assert_eq!(exit.reason, ExitReason::Reset);
    assert_eq!(
        out, b"bsp\n",
        "only the BSP runs until it starts the others"
    );
}

#[test]
fn kernel_panic_banner_then_reset_is_reported_as_panic() {
    if !kvm_or_skip() {
        skip!("/dev/kvm is missing or not accessible");
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (exit, _) = boot(
        &print_then(b"Kernel panic - not syncing: test\n", I8042_RESET),
        1,
    );
    assert_eq!(exit.reason, ExitReason::Panic);
    assert_eq!(exit.status(), 1);
}

#[test]
fn triple_fault_stops_the_vm() {
    if !kvm_or_skip() {
        skip!("/dev/kvm is missing or not accessible");
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (exit, out) = boot(&print_then(b"faulting\n", TRIPLE_FAULT), 1);
    assert_eq!(out, b"faulting\n");
    assert_eq!(exit.reason, ExitReason::Shutdown);
    // The report names the vCPU and where it faulted (the vCPU's filter allows reading it).
    let detail = exit.detail.expect("a vCPU recorded the stop");
    assert!(
        detail.starts_with("Shutdown on vCPU 0 at rip 0x"),
        "{detail}"
    );
}

#[test]
fn sigterm_stops_a_halted_guest() {
    if !kvm_or_skip() {
        skip!("/dev/kvm is missing or not accessible");
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serial.log");
    let kernel = dir.path().join("guest.elf");
    write_elf(&kernel, &print_then(b"up\n", HALT_FOREVER));
    let mut cfg = VmConfig::new(&kernel);
    cfg.memory_mib = 64;
    cfg.serial = SerialOutput::File(log.clone());
    let vm = std::thread::spawn(move || run_vm(cfg));
    // Wait until the guest is running (it printed), so the monitor's handler is installed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read(&log).unwrap_or_default() != b"up\n" {
        assert!(std::time::Instant::now() < deadline, "guest never printed");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SAFETY: signalling our own process; run_vm's handler turns it into a VM stop.
    unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    let exit = vm.join().unwrap().expect("run_vm");
    assert_eq!(exit.reason, ExitReason::Signal(libc::SIGTERM));
    assert_eq!(exit.status(), 128 + libc::SIGTERM);
}

#[test]
fn console_socket_is_accepted_and_vm_still_boots() {
    if !kvm_or_skip() {
        skip!("/dev/kvm is missing or not accessible");
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("guest.elf");
    write_elf(&kernel, &serial_mmio_reset_program(b"con\n"));
    let log = dir.path().join("serial.log");
    let (host, guest) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut cfg = VmConfig::new(&kernel);
    cfg.memory_mib = 64;
    cfg.console = Some(guest);
    cfg.serial = SerialOutput::File(log.clone());
    let exit = run_vm_with_deadline(cfg, 20);
    assert_eq!(exit.reason, ExitReason::Reset);
    // The first (and only) virtio device is the console: magic still "virt".
    assert_eq!(std::fs::read(&log).unwrap(), b"con\nvirt");
    drop(host);
}

#[test]
fn absurd_memory_is_rejected_with_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("guest.elf");
    write_elf(&kernel, &print_then(b"", I8042_RESET));
    let mut cfg = VmConfig::new(&kernel);
    cfg.memory_mib = u32::MAX;
    let err = run_vm(cfg).unwrap_err().to_string();
    assert!(err.starts_with("invalid VM configuration: memory"), "{err}");
}

/// Guest-physical layout of the virtio-blk driver program below.
const DESC: u64 = 0x10_1000;
const AVAIL: u64 = 0x10_1100;
const USED: u64 = 0x10_1200;
const REQ_HDR: u64 = 0x10_1400;
const REQ_DATA: u64 = 0x10_2000;
const REQ_STATUS: u64 = 0x10_2400;

/// A minimal virtio-blk driver: negotiate, set up queue 0 with one prepared read request for
/// sector 0, notify (through the ioeventfd), poll the used ring, print the sector as a string
/// and the status byte as a digit, then reset. Descriptors and rings are part of the image.
fn virtio_blk_reader_program() -> Vec<u8> {
    let mut c: Vec<u8> = vec![0x48, 0xbf];
    c.extend_from_slice(&0xd000_0000u64.to_le_bytes()); // mov rdi, first virtio-mmio window
    let mut mmio = |off: u32, val: u32| {
        c.extend_from_slice(&[0xc7, 0x87]); // mov dword [rdi + disp32], imm32
        c.extend_from_slice(&off.to_le_bytes());
        c.extend_from_slice(&val.to_le_bytes());
    };
    mmio(0x70, 1); // ACKNOWLEDGE
    mmio(0x70, 3); // DRIVER
    mmio(0x24, 1);
    mmio(0x20, 1); // VIRTIO_F_VERSION_1 (bit 32)
    mmio(0x24, 0);
    mmio(0x20, 0);
    mmio(0x70, 0xb); // FEATURES_OK
    mmio(0x30, 0);
    mmio(0x38, 16);
    mmio(0x80, DESC as u32);
    mmio(0x90, AVAIL as u32);
    mmio(0xa0, USED as u32);
    mmio(0x44, 1); // QUEUE_READY
    mmio(0x70, 0xf); // DRIVER_OK
    mmio(0x50, 0); // QUEUE_NOTIFY queue 0
                   // Poll used->idx until the device returned the chain.
    c.extend_from_slice(&[0x0f, 0xb7, 0x04, 0x25]);
    c.extend_from_slice(&(USED as u32 + 2).to_le_bytes()); // movzx eax, word [used.idx]
    c.extend_from_slice(&[0x66, 0x83, 0xf8, 0x01, 0x75, 0xf2]); // cmp ax, 1; jne poll
    c.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03, 0x48, 0xbe]); // mov dx, 0x3f8; mov rsi, imm64
    c.extend_from_slice(&REQ_DATA.to_le_bytes());
    c.extend_from_slice(&[0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8]); // print string
    c.extend_from_slice(&[0x8a, 0x04, 0x25]); // mov al, [status]
    c.extend_from_slice(&(REQ_STATUS as u32).to_le_bytes());
    c.extend_from_slice(&[0x04, 0x30, 0xee]); // add al, '0'; out dx, al
    c.extend_from_slice(I8042_RESET);

    let base = LOAD_ADDR as usize;
    let mut image = vec![0u8; (REQ_STATUS + 1) as usize - base];
    assert!(c.len() < (DESC as usize - base));
    image[..c.len()].copy_from_slice(&c);
    let mut put = |addr: u64, bytes: &[u8]| {
        let off = addr as usize - base;
        image[off..off + bytes.len()].copy_from_slice(bytes);
    };
    let desc = |addr: u64, len: u32, flags: u16, next: u16| {
        let mut d = addr.to_le_bytes().to_vec();
        d.extend_from_slice(&len.to_le_bytes());
        d.extend_from_slice(&flags.to_le_bytes());
        d.extend_from_slice(&next.to_le_bytes());
        d
    };
    put(DESC, &desc(REQ_HDR, 16, 1, 1));
    put(DESC + 16, &desc(REQ_DATA, 512, 1 | 2, 2));
    put(DESC + 32, &desc(REQ_STATUS, 1, 2, 0));
    put(AVAIL, &[0, 0, 1, 0, 0, 0]); // flags 0, idx 1, ring[0] = 0
    put(REQ_HDR, &[0; 16]); // VIRTIO_BLK_T_IN, sector 0
    put(REQ_STATUS, &[0xcc]);
    image
}

#[test]
fn tiny_guest_driver_reads_a_disk_through_ioeventfd_and_virtio_blk() {
    if !kvm_or_skip() {
        skip!("/dev/kvm is missing or not accessible");
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("guest.elf");
    write_elf(&kernel, &virtio_blk_reader_program());
    let disk = dir.path().join("disk.img");
    let mut sector = b"disk says hi\n".to_vec();
    sector.resize(4096, 0);
    std::fs::write(&disk, &sector).unwrap();
    let log = dir.path().join("serial.log");
    let mut cfg = VmConfig::new(&kernel);
    cfg.memory_mib = 64;
    cfg.disks = vec![DiskConfig {
        path: disk,
        read_only: true,
    }];
    cfg.serial = SerialOutput::File(log.clone());
    let exit = run_vm_with_deadline(cfg, 20);
    let out = std::fs::read(&log).unwrap();
    assert_eq!(
        exit.reason,
        ExitReason::Reset,
        "serial: {:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(out, b"disk says hi\n0", "sector 0 then VIRTIO_BLK_S_OK");
}

/// A minimal virtio-console driver: queue 0 (receive) gets one 64-byte buffer, queue 1
/// (transmit) one chain holding "pong"; both are notified, then the guest polls the receive
/// used ring and prints what the host sent.
fn virtio_console_program(notify: bool) -> Vec<u8> {
    const RX_RINGS: u64 = 0x10_1000;
    const TX_RINGS: u64 = 0x10_1800;
    const RX_BUF: u64 = 0x10_2000;
    const TX_BUF: u64 = 0x10_2100;
    let mut c: Vec<u8> = vec![0x48, 0xbf];
    c.extend_from_slice(&0xd000_0000u64.to_le_bytes()); // mov rdi, first virtio-mmio window
    let mut mmio = |off: u32, val: u32| {
        c.extend_from_slice(&[0xc7, 0x87]);
        c.extend_from_slice(&off.to_le_bytes());
        c.extend_from_slice(&val.to_le_bytes());
    };
    mmio(0x70, 1);
    mmio(0x70, 3);
    mmio(0x24, 1);
    mmio(0x20, 1);
    mmio(0x70, 0xb);
    for (q, rings) in [(0u32, RX_RINGS), (1, TX_RINGS)] {
        mmio(0x30, q);
        mmio(0x38, 16);
        mmio(0x80, rings as u32);
        mmio(0x90, rings as u32 + 0x100);
        mmio(0xa0, rings as u32 + 0x200);
        mmio(0x44, 1);
    }
    mmio(0x70, 0xf);
    if notify {
        mmio(0x50, 1); // transmit "pong"
        mmio(0x50, 0); // receive buffer posted
    }
    c.extend_from_slice(&[0x0f, 0xb7, 0x04, 0x25]);
    c.extend_from_slice(&(RX_RINGS as u32 + 0x202).to_le_bytes()); // movzx eax, [rx used.idx]
    c.extend_from_slice(&[0x66, 0x83, 0xf8, 0x01, 0x75, 0xf2]);
    c.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03, 0x48, 0xbe]);
    c.extend_from_slice(&RX_BUF.to_le_bytes());
    c.extend_from_slice(&[0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8]);
    c.extend_from_slice(I8042_RESET);

    let base = LOAD_ADDR as usize;
    let mut image = vec![0u8; (TX_BUF + 16) as usize - base];
    image[..c.len()].copy_from_slice(&c);
    let mut put = |addr: u64, bytes: &[u8]| {
        let off = addr as usize - base;
        image[off..off + bytes.len()].copy_from_slice(bytes);
    };
    let desc = |addr: u64, len: u32, flags: u16| {
        let mut d = addr.to_le_bytes().to_vec();
        d.extend_from_slice(&len.to_le_bytes());
        d.extend_from_slice(&flags.to_le_bytes());
        d.extend_from_slice(&0u16.to_le_bytes());
        d
    };
    put(RX_RINGS, &desc(RX_BUF, 64, 2));
    put(RX_RINGS + 0x100, &[0, 0, 1, 0, 0, 0]);
    put(TX_RINGS, &desc(TX_BUF, 4, 0));
    put(TX_RINGS + 0x100, &[0, 0, 1, 0, 0, 0]);
    put(TX_BUF, b"pong");
    image
}

#[test]
fn tiny_guest_driver_talks_over_virtio_console_to_a_host_socket() {
    if !kvm_or_skip() {
        skip!("/dev/kvm is missing or not accessible");
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("guest.elf");
    write_elf(&kernel, &virtio_console_program(true));
    let log = dir.path().join("serial.log");
    let (host, guest) = std::os::unix::net::UnixStream::pair().unwrap();
    // Sent before the guest exists: it waits in the socket until the guest posts a buffer.
    (&host).write_all(b"ping from host\n").unwrap();
    let mut cfg = VmConfig::new(&kernel);
    cfg.memory_mib = 64;
    cfg.console = Some(guest);
    cfg.serial = SerialOutput::File(log.clone());
    let exit = run_vm_with_deadline(cfg, 20);
    let out = std::fs::read(&log).unwrap();
    assert_eq!(
        exit.reason,
        ExitReason::Reset,
        "serial: {:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(out, b"ping from host\n");
    let mut got = [0u8; 4];
    use std::io::Read;
    host.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    (&host).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong");
}

#[test]
fn console_input_reaches_a_guest_that_never_kicks_its_receive_queue() {
    if !kvm_or_skip() {
        skip!("/dev/kvm is missing or not accessible");
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("guest.elf");
    // Only activation (DRIVER_OK) can make the monitor start reading the socket here.
    write_elf(&kernel, &virtio_console_program(false));
    let log = dir.path().join("serial.log");
    let (host, guest) = std::os::unix::net::UnixStream::pair().unwrap();
    (&host).write_all(b"late\n").unwrap();
    let mut cfg = VmConfig::new(&kernel);
    cfg.memory_mib = 64;
    cfg.console = Some(guest);
    cfg.serial = SerialOutput::File(log.clone());
    let exit = run_vm_with_deadline(cfg, 20);
    assert_eq!(exit.reason, ExitReason::Reset);
    assert_eq!(std::fs::read(&log).unwrap(), b"late\n");
}

#[test]
fn bad_kernel_fails_cleanly_without_creating_the_serial_log() {
    if !kvm_or_skip() {
        skip!("/dev/kvm is missing or not accessible");
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("garbage");
    std::fs::write(&kernel, vec![0x5a; 8192]).unwrap();
    let log = dir.path().join("serial.log");
    let mut cfg = VmConfig::new(&kernel);
    cfg.memory_mib = 64;
    cfg.serial = SerialOutput::File(log.clone());
    let err = run_vm(cfg).unwrap_err().to_string();
    assert!(err.starts_with("cannot load kernel"), "{err}");
    assert!(!log.exists(), "nothing half-written");
}

/// Print the NUL-terminated string at guest address `addr`, then read the device-id register
/// of the virtio-mmio window at `mmio` and print its low byte, then reset.
fn print_memory_and_device_id_program(addr: u64, mmio: u64) -> Vec<u8> {
    let mut c = vec![0x66, 0xba, 0xf8, 0x03, 0x48, 0xbe]; // mov dx, 0x3f8; mov rsi, imm64
    c.extend_from_slice(&addr.to_le_bytes());
    c.extend_from_slice(&[0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8]); // print string
    c.push(0xa1); // mov eax, [moffs64]
    c.extend_from_slice(&(mmio + 8).to_le_bytes());
    c.push(0xee); // out dx, al
    c.extend_from_slice(I8042_RESET);
    c
}

#[test]
fn several_disks_and_a_console_appear_on_the_cmdline_and_the_bus() {
    if !kvm_or_skip() {
        skip!("/dev/kvm is missing or not accessible");
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("guest.elf");
    // The third window (two disks, then the console) should report device id 3.
    write_elf(
        &kernel,
        &print_memory_and_device_id_program(0x20000, 0xd000_2000),
    );
    let mut disks = Vec::new();
    for (i, ro) in [(0, true), (1, false)] {
        let path = dir.path().join(format!("disk{i}.img"));
        std::fs::File::create(&path)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        disks.push(DiskConfig {
            path,
            read_only: ro,
        });
    }
    let (_host, guest) = std::os::unix::net::UnixStream::pair().unwrap();
    let log = dir.path().join("serial.log");
    let mut cfg = VmConfig::new(&kernel);
    cfg.memory_mib = 64;
    cfg.cmdline = "console=ttyS0 panic=-1".into();
    cfg.disks = disks;
    cfg.console = Some(guest);
    cfg.serial = SerialOutput::File(log.clone());
    let exit = run_vm_with_deadline(cfg, 20);
    let out = std::fs::read(&log).unwrap();
    assert_eq!(exit.reason, ExitReason::Reset);
    let (cmdline, id) = out.split_at(out.len() - 1);
    assert_eq!(
        String::from_utf8_lossy(cmdline),
        "console=ttyS0 panic=-1 virtio_mmio.device=512@0xd0000000:5 \
         virtio_mmio.device=512@0xd0001000:6 virtio_mmio.device=512@0xd0002000:7"
    );
    assert_eq!(id, [3], "virtio-console device id in the third window");
}

/// Execute CPUID as the guest sees it and print: the hypervisor signature (leaf 0x4000_0000,
/// 12 bytes), the core count of leaf 0xB subleaf 1, the top byte of leaf 1 ECX (hypervisor
/// bit), and the logical processor count of leaf 1 EBX.
fn cpuid_program() -> Vec<u8> {
    let mut c = vec![0xb8, 0x00, 0x00, 0x00, 0x40, 0x0f, 0xa2]; // mov eax, 0x40000000; cpuid
    c.extend_from_slice(&[0x89, 0xd6, 0x89, 0xcf]); // mov esi, edx; mov edi, ecx
    c.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03]); // mov dx, 0x3f8
    for mov_eax in [[0x89, 0xd8], [0x89, 0xf8], [0x89, 0xf0]] {
        c.extend_from_slice(&mov_eax); // mov eax, ebx / edi / esi
        c.extend_from_slice(&[0xee, 0xc1, 0xe8, 0x08, 0xee, 0xc1, 0xe8, 0x08]);
        c.extend_from_slice(&[0xee, 0xc1, 0xe8, 0x08, 0xee]);
    }
    c.extend_from_slice(&[0xb8, 0x0b, 0, 0, 0, 0xb9, 0x01, 0, 0, 0, 0x0f, 0xa2]); // leaf 0xb.1
    c.extend_from_slice(&[0x89, 0xd8, 0x66, 0xba, 0xf8, 0x03, 0xee]); // print ebx low byte
    c.extend_from_slice(&[0xb8, 0x01, 0, 0, 0, 0x0f, 0xa2]); // leaf 1
    c.extend_from_slice(&[0x89, 0xc8, 0xc1, 0xe8, 0x18, 0x66, 0xba, 0xf8, 0x03, 0xee]); // ecx >> 24
    c.extend_from_slice(&[0x89, 0xd8, 0xc1, 0xe8, 0x10, 0xee]); // ebx >> 16
    c.extend_from_slice(I8042_RESET);
    c
}

#[test]
fn guest_sees_the_cpuid_topology_and_hypervisor_leaves() {
    if !kvm_or_skip() {
        skip!("/dev/kvm is missing or not accessible");
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (exit, out) = boot(&cpuid_program(), 3);
    assert_eq!(exit.reason, ExitReason::Reset);
    assert_eq!(out.len(), 15, "{out:?}");
    assert_eq!(&out[..12], b"KVMKVMKVM\0\0\0");
    assert_eq!(out[12], 3, "leaf 0xB core level: 3 logical processors");
    assert_ne!(out[13] & 0x80, 0, "leaf 1 ECX hypervisor bit");
    assert_eq!(out[14], 3, "leaf 1 EBX logical processor count");
}
