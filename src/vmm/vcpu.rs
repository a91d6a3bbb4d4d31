//! The vCPU threads: run KVM_RUN and dispatch port I/O and MMIO exits through the buses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::Instant;

use kvm_ioctls::{VcpuExit, VcpuFd};
use seccompiler::SeccompAction;
use vmm_sys_util::eventfd::EventFd;

use super::bus::{lock, Bus};
use super::devices::i8042::I8042_PIO_BASE;
use super::exits::{ExitClass, ExitCounters};
use super::seccomp::{self, ThreadRole};
use super::ExitReason;

/// KVM_SYSTEM_EVENT types (linux/kvm.h).
const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const KVM_SYSTEM_EVENT_RESET: u32 = 2;
const KVM_SYSTEM_EVENT_CRASH: u32 = 3;

/// Port 0x64 of the i8042, where 0xFE means "pulse the CPU reset line".
const I8042_COMMAND_PORT: u16 = I8042_PIO_BASE as u16 + 4;
const I8042_CMD_RESET_CPU: u8 = 0xfe;

/// Shared "the VM is stopping" state: the first reason wins; `evt` wakes the event loop.
pub struct StopState {
    /// When any vCPU first came back from the guest (benchmarks: start to first instruction).
    first_exit: OnceLock<Instant>,
    stopping: AtomicBool,
    reason: Mutex<Option<ExitReason>>,
    /// What the vCPU that recorded the reason saw (which vCPU, where), for the report.
    detail: Mutex<Option<String>>,
    evt: EventFd,
}

impl StopState {
    pub fn new() -> std::io::Result<Self> {
        Ok(StopState {
            first_exit: OnceLock::new(),
            stopping: AtomicBool::new(false),
            reason: Mutex::new(None),
            detail: Mutex::new(None),
            evt: EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?,
        })
    }

    pub fn stop(&self, reason: ExitReason) {
        self.stop_with_detail(reason, None);
    }

    /// As `stop`, keeping `detail` when this call is the one whose reason wins.
    pub fn stop_with_detail(&self, reason: ExitReason, detail: Option<String>) {
        let mut slot = lock(&self.reason);
        if slot.is_none() {
            *slot = Some(reason);
            *lock(&self.detail) = detail;
        }
        self.stopping.store(true, Ordering::SeqCst);
        // A full eventfd counter still leaves it readable, which is all the loop needs.
        let _ = self.evt.write(1);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    pub fn reason(&self) -> Option<ExitReason> {
        lock(&self.reason).clone()
    }

    pub fn detail(&self) -> Option<String> {
        lock(&self.detail).clone()
    }

    pub fn first_exit(&self) -> Option<Instant> {
        self.first_exit.get().copied()
    }

    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}

/// Records a stop when dropped: a thread that unwinds (a bug, never guest input) still stops
/// the VM instead of leaving the others waiting. After a normal stop it changes nothing, since
/// the first recorded reason wins.
pub struct StopOnExit {
    pub stop: Arc<StopState>,
    pub thread: String,
}

impl Drop for StopOnExit {
    fn drop(&mut self) {
        if !self.stop.is_stopping() {
            self.stop.stop(ExitReason::Fault(format!(
                "{} thread exited unexpectedly",
                self.thread
            )));
        }
    }
}

/// The signal used to knock a vCPU thread out of KVM_RUN when the VM stops.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Install the (empty) kick handler once per process: its only job is to make KVM_RUN return
/// EINTR instead of the default action killing the process.
pub fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = vmm_sys_util::signal::register_signal_handler(kick_signal(), kick_handler);
    });
    result
}

pub struct Vcpu {
    pub fd: VcpuFd,
    pub id: u8,
    pub pio: Bus,
    pub mmio: Bus,
    pub stop: Arc<StopState>,
    pub seccomp: Option<SeccompAction>,
    pub exits: Arc<ExitCounters>,
}

impl Vcpu {
    /// Thread body: returns when the VM stops (for any reason, recorded in `stop`).
    pub fn run(mut self) {
        let _stop_on_exit = StopOnExit {
            stop: self.stop.clone(),
            thread: format!("vCPU {}", self.id),
        };
        if let Some(action) = self.seccomp.clone() {
            if let Err(err) = seccomp::apply(ThreadRole::Vcpu, action) {
                self.stop
                    .stop(ExitReason::Fault(format!("vCPU {}: {err}", self.id)));
                return;
            }
        }
        while !self.stop.is_stopping() {
            if let Some(reason) = self.run_once() {
                let detail = self.where_it_stopped(&reason);
                self.stop.stop_with_detail(reason, detail);
                break;
            }
        }
    }

    /// Which vCPU stopped the VM and at which guest instruction: a triple fault or a reset
    /// from the wrong place is otherwise indistinguishable from a clean one.
    fn where_it_stopped(&self, reason: &ExitReason) -> Option<String> {
        let regs = self.fd.get_regs().ok()?;
        let cr = self
            .fd
            .get_sregs()
            .map(|s| format!(" cr0 {:#x} cr3 {:#x} cr4 {:#x}", s.cr0, s.cr3, s.cr4))
            .unwrap_or_default();
        Some(format!(
            "{reason:?} on vCPU {} at rip {:#x} rsp {:#x}{cr}",
            self.id, regs.rip, regs.rsp
        ))
    }

    /// One KVM_RUN; Some(reason) when the VM must stop.
    fn run_once(&mut self) -> Option<ExitReason> {
        let exit = match self.fd.run() {
            Ok(exit) => {
                if self.stop.first_exit.get().is_none() {
                    let _ = self.stop.first_exit.set(Instant::now());
                }
                exit
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.exits.count(ExitClass::Interrupted);
                self.fd.set_kvm_immediate_exit(0);
                return None;
            }
            Err(e) => return Some(ExitReason::Fault(format!("vCPU {}: KVM_RUN: {e}", self.id))),
        };
        let exits = &self.exits;
        match exit {
            VcpuExit::IoOut(port, data) => {
                exits.count(ExitClass::of_port(port));
                self.pio.write(u64::from(port), data);
                if port == I8042_COMMAND_PORT && data == [I8042_CMD_RESET_CPU] {
                    return Some(ExitReason::Reset);
                }
                None
            }
            VcpuExit::IoIn(port, data) => {
                exits.count(ExitClass::of_port(port));
                // Unmapped ports float high, as on real hardware (probes then see "absent").
                if !self.pio.read(u64::from(port), data) {
                    data.fill(0xff);
                }
                None
            }
            VcpuExit::MmioRead(addr, data) => {
                exits.count_mmio(addr);
                if !self.mmio.read(addr, data) {
                    data.fill(0);
                }
                None
            }
            VcpuExit::MmioWrite(addr, data) => {
                exits.count_mmio(addr);
                self.mmio.write(addr, data);
                None
            }
            VcpuExit::Hlt => {
                exits.count(ExitClass::Hlt);
                Some(ExitReason::Halt)
            }
            VcpuExit::Shutdown => Some(ExitReason::Shutdown),
            VcpuExit::SystemEvent(kind, _) => match kind {
                KVM_SYSTEM_EVENT_RESET => Some(ExitReason::Reset),
                KVM_SYSTEM_EVENT_SHUTDOWN => Some(ExitReason::Shutdown),
                KVM_SYSTEM_EVENT_CRASH => Some(ExitReason::Panic),
                other => Some(ExitReason::Fault(format!(
                    "unknown KVM system event {other}"
                ))),
            },
            VcpuExit::FailEntry(reason, cpu) => Some(ExitReason::Fault(format!(
                "KVM entry failed on cpu {cpu}: hardware reason {reason:#x}"
            ))),
            VcpuExit::InternalError => {
                let run = self.fd.get_kvm_run();
                // SAFETY: after KVM_EXIT_INTERNAL_ERROR the kvm_run union holds `internal`.
                let suberror = unsafe { run.__bindgen_anon_1.internal.suberror };
                let hint = if suberror == 1 {
                    " (instruction emulation failed; on PVM hosts a stock kernel stops here)"
                } else {
                    ""
                };
                Some(ExitReason::Fault(format!(
                    "vCPU {}: KVM internal error, suberror {suberror}{hint}",
                    self.id
                )))
            }
            VcpuExit::Intr => {
                exits.count(ExitClass::Interrupted);
                None
            }
            other => Some(ExitReason::Fault(format!(
                "vCPU {}: unhandled exit {other:?}",
                self.id
            ))),
        }
    }
}
