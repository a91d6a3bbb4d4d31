//! Building and running a microVM, straight-line like Firecracker's build_microvm_for_boot.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{IoEventAddress, Kvm, VmFd};
use seccompiler::SeccompAction;
use vm_memory::{Address, GuestMemory, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::Killable;

use super::boot::{self, LoadedKernel};
use super::bus::{Bus, BusDevice};
use super::devices::i8042::{I8042, I8042_PIO_BASE, I8042_PIO_LEN};
use super::devices::serial::{ConsoleWriter, Serial, SERIAL_IRQ, SERIAL_PIO_BASE, SERIAL_PIO_LEN};
use super::devices::vhost_user_fs::VhostUserFs;
use super::devices::virtio_block::Block;
use super::devices::virtio_console::Console;
use super::devices::virtio_mmio::{reg, MmioTransport};
use super::devices::virtio_net::Net;
use super::devices::{Interrupt, VirtioDevice};
use super::event_loop::{EventLoop, SerialInput, VirtioSlot};
use super::exits::{self, ExitCounters, ExitReport};
use super::host::{probe_host, KvmKind};
use super::host_signals::SignalGuard;
use super::layout::{
    self, IRQ_MAX, KVM_IDENTITY_MAP_ADDRESS, KVM_TSS_ADDRESS, MIN_MEMORY_MIB, VIRTIO_IRQ_BASE,
    VIRTIO_MMIO_SIZE, VIRTIO_MMIO_START, VIRTIO_MMIO_STRIDE,
};
use super::vcpu::{install_kick_handler, kick_signal, StopState, Vcpu};
use super::{cpu, mptable, ExitReason, SerialOutput, VmConfig, VmExit, VmmError, MAX_VCPUS};

/// The largest guest we accept: the host's RAM (a bigger guest can only end in the OOM killer).
pub fn max_memory_mib() -> u32 {
    let total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                })
        })
        .unwrap_or(1 << 20);
    u32::try_from(total_kib / 1024).unwrap_or(u32::MAX)
}

/// Reject configurations that cannot work before touching KVM.
pub fn validate(cfg: &VmConfig) -> Result<(), VmmError> {
    let max = max_memory_mib();
    if cfg.memory_mib < MIN_MEMORY_MIB || cfg.memory_mib > max {
        return Err(VmmError::Config(format!(
            "memory {} MiB is outside {MIN_MEMORY_MIB}..={max} MiB (this host's RAM)",
            cfg.memory_mib
        )));
    }
    if cfg.vcpus == 0 || cfg.vcpus > MAX_VCPUS {
        return Err(VmmError::Config(format!(
            "{} vCPUs is outside 1..={MAX_VCPUS}",
            cfg.vcpus
        )));
    }
    let devices = cfg.disks.len()
        + cfg.shares.len()
        + usize::from(cfg.console.is_some())
        + usize::from(cfg.net.is_some());
    if devices as u32 > IRQ_MAX - VIRTIO_IRQ_BASE + 1 {
        return Err(VmmError::Config(format!(
            "{devices} virtio devices exceed the free IRQ lines"
        )));
    }
    if !cfg.kernel.is_file() {
        return Err(VmmError::Config(format!(
            "kernel {} is not a file",
            cfg.kernel.display()
        )));
    }
    Ok(())
}

fn kvm_err(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
    move |source| VmmError::Kvm { op, source }
}

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> VmmError {
    move |source| VmmError::Io { what, source }
}

fn create_vm(kvm: &Kvm, mem: &GuestMemoryMmap) -> Result<VmFd, VmmError> {
    let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
    vm.set_tss_address(KVM_TSS_ADDRESS as usize)
        .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
    vm.set_identity_map_address(KVM_IDENTITY_MAP_ADDRESS)
        .map_err(kvm_err("KVM_SET_IDENTITY_MAP_ADDR"))?;
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|_| VmmError::Config("guest memory region without host mapping".into()))?;
        let region_desc = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the mapping is owned by `mem`, which outlives the VM: run_vm keeps it alive
        // until every vCPU thread has been joined and the VM fd is dropped.
        unsafe { vm.set_user_memory_region(region_desc) }
            .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
    }
    vm.create_irq_chip()
        .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;
    Ok(vm)
}

fn serial_writer(out: &SerialOutput) -> Result<Option<Box<dyn Write + Send>>, VmmError> {
    Ok(match out {
        SerialOutput::None => None,
        SerialOutput::Stdout => Some(Box::new(std::io::stdout())),
        SerialOutput::File(path) => Some(Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(io_err("opening the serial log"))?,
        )),
    })
}

/// Build the VM described by `cfg`, run it until it stops, and report why.
pub fn run_vm(mut cfg: VmConfig) -> Result<VmExit, VmmError> {
    let started = Instant::now();
    validate(&cfg)?;
    let kvm = Kvm::new().map_err(VmmError::KvmOpen)?;

    // A vhost-user backend maps guest memory itself: with shares, RAM is one shared memfd.
    let mem = if cfg.shares.is_empty() {
        layout::create_guest_memory(cfg.memory_mib)
    } else {
        layout::create_shared_guest_memory(cfg.memory_mib)
    }
    .map_err(|source| VmmError::Memory {
        mib: cfg.memory_mib,
        source,
    })?;
    let vm = create_vm(&kvm, &mem)?;
    // Kernel and initramfs first: a bad image fails before anything (a serial log) is created.
    let kernel: LoadedKernel = boot::load_kernel(&mem, &cfg.kernel)?;
    let initrd = match &cfg.initrd {
        Some(path) => Some(boot::load_initrd(&mem, path, cfg.memory_mib, &kernel)?),
        None => None,
    };

    // Devices first: the kernel command line names every virtio-mmio window.
    let stop = Arc::new(StopState::new().map_err(io_err("eventfd"))?);
    let reset_evt =
        EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(io_err("eventfd"))?;
    let panicked = Arc::new(AtomicBool::new(false));
    let mut pio = Bus::new();
    let mut mmio = Bus::new();

    let serial_irq =
        EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(io_err("eventfd"))?;
    vm.register_irqfd(&serial_irq, SERIAL_IRQ)
        .map_err(kvm_err("KVM_IRQFD"))?;
    let serial = Arc::new(Mutex::new(Serial::new(
        serial_irq,
        ConsoleWriter::new(
            serial_writer(&cfg.serial)?,
            panicked.clone(),
            matches!(cfg.serial, SerialOutput::File(_)).then_some(cfg.serial_limit),
        ),
    )));
    pio.insert(serial.clone(), SERIAL_PIO_BASE, SERIAL_PIO_LEN)?;
    // With the console on our stdout, our stdin is its keyboard.
    let serial_input = (cfg.serial == SerialOutput::Stdout).then(|| SerialInput {
        fd: libc::STDIN_FILENO,
        serial: serial.clone(),
    });
    let _terminal = match serial_input {
        Some(_) => TerminalMode::char_at_a_time(libc::STDIN_FILENO),
        None => None,
    };
    let i8042 = I8042::new(reset_evt.try_clone().map_err(io_err("eventfd"))?);
    pio.insert(Arc::new(Mutex::new(i8042)), I8042_PIO_BASE, I8042_PIO_LEN)?;

    let mut virtio: Vec<Box<dyn VirtioDevice>> = Vec::new();
    for disk in &cfg.disks {
        virtio.push(Box::new(Block::open(&disk.path, disk.read_only)?));
    }
    for share in &cfg.shares {
        virtio.push(Box::new(
            VhostUserFs::connect(&share.socket, &share.tag, &mem).map_err(VmmError::Share)?,
        ));
    }
    if let Some(net) = cfg.net.take() {
        virtio.push(Box::new(
            Net::new(net.tap, net.mac, net.mtu).map_err(io_err("tap device"))?,
        ));
    }
    if let Some(sock) = cfg.console.take() {
        virtio.push(Box::new(
            Console::new(sock).map_err(io_err("console socket"))?,
        ));
    }
    let activation_evt =
        EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(io_err("eventfd"))?;
    let mut slots = Vec::new();
    let mut mmio_windows = Vec::new();
    for (i, device) in virtio.into_iter().enumerate() {
        let base = VIRTIO_MMIO_START + i as u64 * VIRTIO_MMIO_STRIDE;
        let irq = VIRTIO_IRQ_BASE + i as u32;
        let irq_evt =
            EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(io_err("eventfd"))?;
        vm.register_irqfd(&irq_evt, irq)
            .map_err(kvm_err("KVM_IRQFD"))?;
        let mut queue_evts = Vec::new();
        for q in 0..device.queue_max_sizes().len() {
            let evt =
                EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(io_err("eventfd"))?;
            vm.register_ioevent(
                &evt,
                &IoEventAddress::Mmio(base + reg::QUEUE_NOTIFY),
                q as u32,
            )
            .map_err(kvm_err("KVM_IOEVENTFD"))?;
            queue_evts.push(evt);
        }
        let mut device = device;
        if !device.handles_queue_notifications() {
            let kicks = queue_evts
                .iter()
                .map(EventFd::try_clone)
                .collect::<Result<Vec<_>, _>>()
                .map_err(io_err("eventfd"))?;
            device.set_queue_notifiers(kicks);
        }
        let mut transport =
            MmioTransport::new(device, mem.clone(), Arc::new(Interrupt::new(irq_evt)));
        // Every device learns of DRIVER_OK through the event loop (its activation runs there).
        transport.set_activation_notifier(activation_evt.try_clone().map_err(io_err("eventfd"))?);
        let transport = Arc::new(Mutex::new(transport));
        mmio.insert(
            transport.clone() as Arc<Mutex<dyn BusDevice>>,
            base,
            VIRTIO_MMIO_SIZE,
        )?;
        slots.push(VirtioSlot {
            transport,
            queue_evts,
        });
        mmio_windows.push((base, VIRTIO_MMIO_SIZE, irq));
    }

    // The rest of guest memory: command line, zero page, MP table, page tables.
    let cmdline = boot::build_cmdline(&cfg.cmdline, &mmio_windows)?;
    let params = boot::build_boot_params(
        &kernel,
        boot::cmdline_len(&cmdline)?,
        initrd,
        cfg.memory_mib,
    );
    boot::write_boot_data(&mem, &cmdline, &params)?;
    mptable::setup_mptable(&mem, cfg.vcpus)?;
    cpu::write_long_mode_tables(&mem)?;

    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    let seccomp = match cfg.seccomp {
        super::SeccompMode::Kill => Some(SeccompAction::KillProcess),
        super::SeccompMode::Log => Some(SeccompAction::Log),
        super::SeccompMode::Off => None,
    };
    let exit_counters = Arc::new(ExitCounters::new((
        VIRTIO_MMIO_START,
        VIRTIO_MMIO_START + VIRTIO_MMIO_STRIDE * mmio_windows.len() as u64,
    )));
    let mut vcpu_stats = Vec::new();
    let mut vcpus = Vec::new();
    for id in 0..cfg.vcpus {
        let fd = vm
            .create_vcpu(u64::from(id))
            .map_err(kvm_err("KVM_CREATE_VCPU"))?;
        vcpu_stats.extend(exits::open_vcpu_stats(&fd));
        cpu::setup_cpuid(&fd, &supported, id, cfg.vcpus)?;
        cpu::setup_msrs(&fd)?;
        cpu::setup_regs(&fd, kernel.entry)?;
        cpu::setup_sregs(&fd)?;
        cpu::setup_fpu(&fd)?;
        cpu::setup_lapic(&fd)?;
        if id > 0 {
            // Application processors wait for the BSP's INIT/SIPI.
            let mp = kvm_bindings::kvm_mp_state {
                mp_state: kvm_bindings::KVM_MP_STATE_UNINITIALIZED,
            };
            fd.set_mp_state(mp).map_err(kvm_err("KVM_SET_MP_STATE"))?;
        }
        vcpus.push(Vcpu {
            fd,
            id,
            pio: pio.clone(),
            mmio: mmio.clone(),
            stop: stop.clone(),
            seccomp: seccomp.clone(),
            exits: exit_counters.clone(),
        });
    }

    install_kick_handler().map_err(|e| VmmError::Io {
        what: "vCPU kick handler",
        source: e.into(),
    })?;
    let signal_evt =
        EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(io_err("eventfd"))?;
    let _signals = SignalGuard::new(signal_evt.as_raw_fd())?;
    // Everything is open and loaded: /dev/kvm itself is needed no more (the VM's and vCPUs'
    // descriptors are), nor is any path.
    drop(kvm);
    if cfg.jail {
        super::jail::enter()?;
    }

    let event_loop = EventLoop {
        devices: slots,
        reset_evt,
        signal_evt,
        activation_evt,
        serial_input,
        stop: stop.clone(),
        seccomp: seccomp.clone(),
    };
    let loop_thread = thread::Builder::new()
        .name("husk-vmm-devices".into())
        .spawn(move || event_loop.run())
        .map_err(|_| VmmError::Thread("device"))?;
    let mut vcpu_threads = Vec::new();
    for vcpu in vcpus {
        let name = format!("husk-vcpu{}", vcpu.id);
        match thread::Builder::new().name(name).spawn(move || vcpu.run()) {
            Ok(handle) => vcpu_threads.push(handle),
            Err(_) => {
                stop.stop(ExitReason::Fault("spawning a vCPU thread failed".into()));
                break;
            }
        }
    }

    // The jailed monitor's own thread is filtered too, once it has spawned the others (each
    // installs its own filter before touching guest data).
    if let (true, Some(action)) = (cfg.jail, seccomp.clone()) {
        if let Err(err) = super::seccomp::apply(super::seccomp::ThreadRole::Main, action) {
            stop.stop(ExitReason::Fault(format!("monitor thread: {err}")));
        }
    }
    let _ = loop_thread.join();
    // The event loop only returns once a stop reason is recorded; knock every vCPU out of
    // KVM_RUN until it notices.
    stop.stop(ExitReason::Fault(
        "event loop ended without a reason".into(),
    ));
    while vcpu_threads.iter().any(|h| !h.is_finished()) {
        for h in vcpu_threads.iter().filter(|h| !h.is_finished()) {
            let _ = h.kill(kick_signal());
        }
        thread::sleep(Duration::from_millis(1));
    }
    for h in vcpu_threads {
        let _ = h.join();
    }
    let mut reason = stop.reason().unwrap_or(ExitReason::Shutdown);
    if reason == ExitReason::Reset && panicked.load(std::sync::atomic::Ordering::SeqCst) {
        reason = ExitReason::Panic;
    }
    // Runtime ends at the stop; KVM's VM teardown (closing the fds) comes after.
    let runtime = started.elapsed();
    let exits = ExitReport {
        monitor: exit_counters.snapshot(),
        kvm: exits::sum_by_name(vcpu_stats.iter().map(exits::read_exit_stats).collect()),
    };
    drop(vm);
    drop(mem);
    let first_exit = stop.first_exit().map(|t| t.duration_since(started));
    Ok(VmExit {
        reason,
        runtime,
        first_exit,
        exits,
        detail: stop.detail(),
    })
}

/// Fail early, with the one clear line, when the host cannot boot `kernel`: on PVM hosts only
/// an explicitly chosen (PVM-capable) kernel is attempted.
pub fn check_host_for(kernel_explicit: bool) -> Result<(), VmmError> {
    let host = probe_host();
    match host.kind {
        KvmKind::None => Err(VmmError::Config(host.blocker().unwrap_or_default())),
        KvmKind::Pvm if !kernel_explicit => Err(VmmError::PvmHost(super::PVM_NOTICE)),
        _ => Ok(()),
    }
}

/// While alive, a terminal on `fd` delivers keys one at a time without echo (the guest echoes).
/// Signals stay enabled so Ctrl-C still stops the VM. Restored on drop.
struct TerminalMode {
    fd: std::os::fd::RawFd,
    saved: nix::sys::termios::Termios,
}

impl TerminalMode {
    fn char_at_a_time(fd: std::os::fd::RawFd) -> Option<Self> {
        use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
        // SAFETY: fd 0 stays open for the life of the process; the borrow ends with this call.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let saved = tcgetattr(borrowed).ok()?; // not a terminal: nothing to change
        let mut raw = saved.clone();
        raw.local_flags
            .remove(LocalFlags::ICANON | LocalFlags::ECHO);
        tcsetattr(borrowed, SetArg::TCSANOW, &raw).ok()?;
        Some(TerminalMode { fd, saved })
    }
}

impl Drop for TerminalMode {
    fn drop(&mut self) {
        // SAFETY: as in char_at_a_time.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd) };
        let _ =
            nix::sys::termios::tcsetattr(borrowed, nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}
