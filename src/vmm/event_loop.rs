//! The device thread: one epoll loop over queue notifications (ioeventfds), device host fds
//! (the console socket), the i8042 reset line, host stop signals and the vCPUs' stop event.

use std::sync::{Arc, Mutex};

use seccompiler::SeccompAction;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::bus::lock;
use super::devices::serial::Serial;
use super::devices::virtio_mmio::MmioTransport;
use super::devices::HostInterest;
use super::host_signals::SignalGuard;
use super::seccomp::{self, ThreadRole};
use super::vcpu::{StopOnExit, StopState};
use super::ExitReason;

const TOKEN_STOP: u64 = 1;
const TOKEN_RESET: u64 = 2;
const TOKEN_SIGNAL: u64 = 3;
/// A device was activated or reset: re-evaluate host fd interest.
const TOKEN_ACTIVATION: u64 = 4;
/// Host input for the serial console.
const TOKEN_STDIN: u64 = 5;
/// Queue notification tokens: QUEUE_BASE + device << 8 | queue.
const TOKEN_QUEUE_BASE: u64 = 1 << 16;
/// Host fd tokens: HOST_BASE + device.
const TOKEN_HOST_BASE: u64 = 1 << 32;

pub struct VirtioSlot {
    pub transport: Arc<Mutex<MmioTransport>>,
    /// One ioeventfd per queue, registered with KVM on the QUEUE_NOTIFY address.
    pub queue_evts: Vec<EventFd>,
}

/// Terminal input forwarded to the guest's serial port (`husk vm boot --debug`).
pub struct SerialInput {
    pub fd: std::os::fd::RawFd,
    pub serial: Arc<Mutex<Serial>>,
}

pub struct EventLoop {
    pub devices: Vec<VirtioSlot>,
    pub reset_evt: EventFd,
    pub signal_evt: EventFd,
    /// Written by transports whose activation state changed (see MmioTransport).
    pub activation_evt: EventFd,
    pub serial_input: Option<SerialInput>,
    pub stop: Arc<StopState>,
    pub seccomp: Option<SeccompAction>,
}

impl EventLoop {
    /// Runs until the VM stops; the reason is recorded in `stop`.
    pub fn run(self) {
        let _stop_on_exit = StopOnExit {
            stop: self.stop.clone(),
            thread: "device".into(),
        };
        if let Err(reason) = self.run_inner() {
            self.stop.stop(reason);
        }
    }

    fn run_inner(&self) -> Result<(), ExitReason> {
        let fault =
            |what: &str, e: std::io::Error| ExitReason::Fault(format!("event loop: {what}: {e}"));
        let epoll = Epoll::new().map_err(|e| fault("epoll_create", e))?;
        let add = |fd, token| {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
        };
        use std::os::fd::AsRawFd;
        add(self.stop.eventfd().as_raw_fd(), TOKEN_STOP).map_err(|e| fault("epoll_ctl", e))?;
        add(self.reset_evt.as_raw_fd(), TOKEN_RESET).map_err(|e| fault("epoll_ctl", e))?;
        add(self.signal_evt.as_raw_fd(), TOKEN_SIGNAL).map_err(|e| fault("epoll_ctl", e))?;
        add(self.activation_evt.as_raw_fd(), TOKEN_ACTIVATION)
            .map_err(|e| fault("epoll_ctl", e))?;
        if let Some(input) = &self.serial_input {
            add(input.fd, TOKEN_STDIN).map_err(|e| fault("epoll_ctl", e))?;
        }
        let mut host_regs: Vec<Option<HostInterest>> = vec![None; self.devices.len()];
        for (d, slot) in self.devices.iter().enumerate() {
            // A vhost-user device's backend reads its ioeventfds itself.
            let watched = lock(&slot.transport).handles_queue_notifications();
            for (q, evt) in slot.queue_evts.iter().enumerate().filter(|_| watched) {
                add(
                    evt.as_raw_fd(),
                    TOKEN_QUEUE_BASE + ((d as u64) << 8) + q as u64,
                )
                .map_err(|e| fault("epoll_ctl", e))?;
            }
            if lock(&slot.transport).host_fd().is_some() {
                // Registered by update_host_interest once the device wants something.
                host_regs[d] = Some(HostInterest::default());
            }
        }

        if let Some(action) = self.seccomp.clone() {
            seccomp::apply(ThreadRole::EventLoop, action)
                .map_err(|e| ExitReason::Fault(format!("event loop: {e}")))?;
        }

        let mut events = vec![EpollEvent::default(); 32];
        loop {
            self.update_host_interest(&epoll, &mut host_regs)
                .map_err(|e| fault("epoll_ctl", e))?;
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(fault("epoll_wait", e)),
            };
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_STOP => return Ok(()),
                    TOKEN_RESET => {
                        let _ = self.reset_evt.read();
                        self.stop.stop(ExitReason::Reset);
                        return Ok(());
                    }
                    TOKEN_SIGNAL => {
                        let _ = self.signal_evt.read();
                        let sig = SignalGuard::received().unwrap_or(libc::SIGTERM);
                        self.stop.stop(ExitReason::Signal(sig));
                        return Ok(());
                    }
                    TOKEN_STDIN => {
                        if let Some(input) = &self.serial_input {
                            if !forward_input(input) {
                                let _ = epoll.ctl(
                                    ControlOperation::Delete,
                                    input.fd,
                                    EpollEvent::default(),
                                );
                            }
                        }
                    }
                    TOKEN_ACTIVATION => {
                        // Interest is re-evaluated at the top of the loop.
                        let _ = self.activation_evt.read();
                        for slot in &self.devices {
                            lock(&slot.transport).activate_pending();
                        }
                    }
                    t if t >= TOKEN_HOST_BASE => {
                        if let Some(slot) = self.devices.get((t - TOKEN_HOST_BASE) as usize) {
                            lock(&slot.transport).host_event();
                        }
                    }
                    t if t >= TOKEN_QUEUE_BASE => {
                        let d = ((t - TOKEN_QUEUE_BASE) >> 8) as usize;
                        let q = ((t - TOKEN_QUEUE_BASE) & 0xff) as usize;
                        if let Some(slot) = self.devices.get(d) {
                            if let Some(evt) = slot.queue_evts.get(q) {
                                let _ = evt.read();
                            }
                            lock(&slot.transport).notify_queue(q);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Re-arm each device's host fd for exactly the readiness it can use now (back-pressure:
    /// a console with no guest receive buffers stops watching its socket for input). A device
    /// that wants nothing is removed from the epoll set altogether, since epoll reports hang-up
    /// even for an empty event mask and a closed socket would otherwise spin the loop.
    fn update_host_interest(
        &self,
        epoll: &Epoll,
        regs: &mut [Option<HostInterest>],
    ) -> std::io::Result<()> {
        let none = HostInterest::default();
        for (d, slot) in self.devices.iter().enumerate() {
            let Some(current) = regs[d] else { continue };
            let transport = lock(&slot.transport);
            let wanted = transport.host_interest();
            if wanted == current {
                continue;
            }
            let Some(fd) = transport.host_fd() else {
                continue;
            };
            let mut set = EventSet::empty();
            if wanted.readable {
                set |= EventSet::IN;
            }
            if wanted.writable {
                set |= EventSet::OUT;
            }
            let event = EpollEvent::new(set, TOKEN_HOST_BASE + d as u64);
            let op = match (current == none, wanted == none) {
                (true, _) => ControlOperation::Add,
                (false, true) => ControlOperation::Delete,
                (false, false) => ControlOperation::Modify,
            };
            epoll.ctl(op, fd, event)?;
            regs[d] = Some(wanted);
        }
        Ok(())
    }
}

/// Move available input into the serial FIFO; false once the input is closed or broken.
fn forward_input(input: &SerialInput) -> bool {
    let mut buf = [0u8; 64];
    // SAFETY: `buf` is valid for writes of its length; `fd` stays open for the VM's lifetime.
    let n = unsafe { libc::read(input.fd, buf.as_mut_ptr().cast(), buf.len()) };
    match n {
        0 => false,
        n if n < 0 => {
            let err = std::io::Error::last_os_error();
            matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            )
        }
        n => {
            lock(&input.serial).enqueue_input(&buf[..n as usize]);
            true
        }
    }
}
