//! T0: boot parameters, e820 map, command line, initramfs placement, config validation and the
//! monitor threads' seccomp filters. No privileges, no /dev/kvm.

use std::path::PathBuf;

use husk::vmm::boot::{self, LoadedKernel, E820_RAM, E820_RESERVED};
use husk::vmm::layout::{self, CMDLINE_START, HIMEM_START, MMIO_GAP_START};
use husk::vmm::seccomp::{build_filter, ThreadRole};
use husk::vmm::{validate, DiskConfig, VmConfig};
use seccompiler::SeccompAction;
use vm_memory::{Bytes, GuestAddress};

fn elf_kernel() -> LoadedKernel {
    LoadedKernel {
        entry: GuestAddress(0x100_0000),
        end: 0x200_0000,
        setup_header: None,
    }
}

#[test]
fn e820_covers_ram_around_the_gap() {
    let small = boot::e820_map(128);
    assert_eq!(small.len(), 3);
    assert_eq!((small[0].addr, small[0].type_), (0, E820_RAM));
    assert_eq!({ small[1].type_ }, E820_RESERVED);
    assert_eq!(
        (small[2].addr, small[2].size, small[2].type_),
        (HIMEM_START, (128 << 20) - HIMEM_START, E820_RAM)
    );

    let big = boot::e820_map(6144);
    let ram: Vec<_> = big.iter().filter(|e| e.type_ == E820_RAM).collect();
    assert_eq!(ram.len(), 3);
    assert_eq!(
        ram[1].addr + ram[1].size,
        MMIO_GAP_START,
        "low RAM ends at the MMIO hole"
    );
    assert_eq!({ ram[2].addr }, 1 << 32);
    let total: u64 = ram.iter().map(|e| e.size).sum::<u64>() + (HIMEM_START - ram[0].size);
    assert_eq!(total, 6144 << 20);
}

#[test]
fn boot_params_carry_cmdline_initrd_and_e820() {
    let cmdline = boot::build_cmdline(
        "console=ttyS0 quiet",
        &[(0xd000_0000, 0x200, 5), (0xd000_1000, 0x200, 6)],
    )
    .unwrap();
    let text = cmdline.as_cstring().unwrap().into_string().unwrap();
    assert_eq!(
        text,
        "console=ttyS0 quiet virtio_mmio.device=512@0xd0000000:5 virtio_mmio.device=512@0xd0001000:6"
    );
    let params = boot::build_boot_params(&elf_kernel(), text.len(), Some((0x700_0000, 4096)), 256);
    let hdr = params.hdr;
    assert_eq!({ hdr.boot_flag }, 0xaa55);
    assert_eq!({ hdr.header }, 0x5372_6448);
    assert_eq!({ hdr.type_of_loader }, 0xff);
    assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_START as u32);
    assert_eq!({ hdr.cmdline_size } as usize, text.len());
    assert_eq!(
        ({ hdr.ramdisk_image }, { hdr.ramdisk_size }),
        (0x700_0000, 4096)
    );
    assert_eq!(params.e820_entries, 3);

    let mem = layout::create_guest_memory(256).unwrap();
    boot::write_boot_data(&mem, &cmdline, &params).unwrap();
    let mut written = vec![0u8; text.len() + 1];
    mem.read_slice(&mut written, GuestAddress(CMDLINE_START))
        .unwrap();
    assert_eq!(&written[..text.len()], text.as_bytes());
    assert_eq!(written[text.len()], 0, "NUL terminated");
}

#[test]
fn cmdline_longer_than_the_kernel_accepts_is_rejected() {
    let long = "x".repeat(4096);
    assert!(boot::build_cmdline(&long, &[]).is_err());
}

#[test]
fn initrd_is_loaded_high_page_aligned_above_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd");
    let content: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    std::fs::write(&initrd, &content).unwrap();
    let mem = layout::create_guest_memory(64).unwrap();
    let (addr, size) = boot::load_initrd(&mem, &initrd, 64, &elf_kernel()).unwrap();
    assert_eq!(size as usize, content.len());
    assert_eq!(addr % 4096, 0);
    assert!(addr + u64::from(size) <= 64 << 20 && addr + u64::from(size) > (64 << 20) - 8192);
    let mut back = vec![0u8; content.len()];
    mem.read_slice(&mut back, GuestAddress(addr)).unwrap();
    assert_eq!(back, content);

    // One that cannot fit above the kernel is refused with a clear error.
    let big = dir.path().join("big");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(63 << 20)
        .unwrap();
    let err = boot::load_initrd(&mem, &big, 64, &elf_kernel()).unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
}

#[test]
fn garbage_kernel_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("not-a-kernel");
    std::fs::write(&k, b"hello, I am not a kernel").unwrap();
    let mem = layout::create_guest_memory(64).unwrap();
    let err = boot::load_kernel(&mem, &k).unwrap_err().to_string();
    assert!(err.contains("cannot load kernel"), "{err}");
}

#[test]
fn absurd_configurations_are_rejected_before_kvm() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("k");
    std::fs::write(&kernel, b"\x7fELF").unwrap();
    let cfg = |f: &dyn Fn(&mut VmConfig)| {
        let mut c = VmConfig::new(&kernel);
        f(&mut c);
        validate(&c)
    };
    assert!(cfg(&|_| {}).is_ok());
    assert!(cfg(&|c| c.memory_mib = 1).is_err());
    assert!(cfg(&|c| c.memory_mib = u32::MAX).is_err());
    assert!(cfg(&|c| c.vcpus = 0).is_err());
    assert!(cfg(&|c| c.vcpus = 200).is_err());
    assert!(cfg(&|c| c.kernel = PathBuf::from("/nonexistent/vmlinux")).is_err());
    let many = |c: &mut VmConfig| {
        c.disks = (0..40)
            .map(|i| DiskConfig {
                path: format!("/d{i}").into(),
                read_only: true,
            })
            .collect()
    };
    assert!(cfg(&many).is_err());
    let msg = cfg(&|c| c.memory_mib = 1 << 30).unwrap_err().to_string();
    assert!(msg.contains("memory"), "{msg}");
}

/// Run `f` in a fresh thread with the `role` filter installed (EPERM on mismatch).
fn in_filtered_thread<T: Send + 'static>(
    role: ThreadRole,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let prog = build_filter(role, SeccompAction::Errno(libc::EPERM as u32)).unwrap();
    std::thread::spawn(move || {
        seccompiler::apply_filter(&prog).unwrap();
        f()
    })
    .join()
    .unwrap()
}

#[test]
fn seccomp_event_loop_filter_refuses_unlisted_syscalls() {
    let (open_err, socket_err, pid_ok) = in_filtered_thread(ThreadRole::EventLoop, || {
        let open = std::fs::File::open("/etc/hostname").map_err(|e| e.raw_os_error());
        // SAFETY: plain syscall with constant arguments.
        let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        let sock_errno = std::io::Error::last_os_error().raw_os_error();
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        (open.err().flatten(), (sock, sock_errno), pid > 0)
    });
    assert_eq!(open_err, Some(libc::EPERM), "openat must be refused");
    assert_eq!(
        socket_err,
        (-1, Some(libc::EPERM)),
        "socket must be refused"
    );
    assert!(pid_ok, "allowed syscalls keep working");
}

#[test]
fn seccomp_vcpu_filter_allows_only_kvm_run_ioctl() {
    let (other_ioctl, kvm_run) = in_filtered_thread(ThreadRole::Vcpu, || {
        // SAFETY: ioctls on fd -1 fail harmlessly; we only look at which errno comes back.
        let a = unsafe { libc::ioctl(-1, libc::FIONBIO, 0) };
        let a_errno = std::io::Error::last_os_error().raw_os_error();
        // SAFETY: as above.
        let b = unsafe { libc::ioctl(-1, 0xae80, 0) };
        let b_errno = std::io::Error::last_os_error().raw_os_error();
        ((a, a_errno), (b, b_errno))
    });
    assert_eq!(
        other_ioctl,
        (-1, Some(libc::EPERM)),
        "non-KVM_RUN ioctl refused by the filter"
    );
    assert_eq!(
        kvm_run,
        (-1, Some(libc::EBADF)),
        "KVM_RUN passes the filter (fails on fd -1)"
    );
}

/// Arguments are checked too: no role may map or protect memory as executable, and signals
/// reach only this process's own threads.
#[test]
fn seccomp_filters_refuse_executable_memory_and_foreign_signals() {
    for role in [ThreadRole::Vcpu, ThreadRole::EventLoop, ThreadRole::Main] {
        let (exec_map, data_map, protect, foreign_kill) = in_filtered_thread(role, || {
            let errno = || std::io::Error::last_os_error().raw_os_error();
            let map = |prot| {
                // SAFETY: an anonymous private mapping; unmapped below when it succeeds.
                let p = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        prot,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                (p, errno())
            };
            let (exec, exec_errno) = map(libc::PROT_READ | libc::PROT_EXEC);
            let (data, _) = map(libc::PROT_READ | libc::PROT_WRITE);
            // SAFETY: `data` is our mapping of 4096 bytes (or MAP_FAILED, and then it fails).
            let protect = unsafe { libc::mprotect(data, 4096, libc::PROT_READ | libc::PROT_EXEC) };
            let protect_errno = errno();
            // SAFETY: unmapping our own mapping.
            unsafe { libc::munmap(data, 4096) };
            // SAFETY: signal 0 to pid 1's thread 1 only checks permission; refused by the
            // filter before the kernel looks.
            let kill = unsafe { libc::syscall(libc::SYS_tgkill, 1, 1, 0) };
            let kill_errno = errno();
            (
                (exec == libc::MAP_FAILED, exec_errno),
                data != libc::MAP_FAILED,
                (protect, protect_errno),
                (kill, kill_errno),
            )
        });
        assert_eq!(
            exec_map,
            (true, Some(libc::EPERM)),
            "{role:?}: PROT_EXEC mmap"
        );
        assert!(data_map, "{role:?}: plain allocation keeps working");
        assert_eq!(
            protect,
            (-1, Some(libc::EPERM)),
            "{role:?}: PROT_EXEC mprotect"
        );
        assert_eq!(
            foreign_kill,
            (-1, Some(libc::EPERM)),
            "{role:?}: tgkill of pid 1"
        );
    }
}
