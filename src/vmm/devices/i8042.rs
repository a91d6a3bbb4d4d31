//! The i8042 keyboard controller, present only for its CPU-reset line: the guest writing 0xFE
//! to port 0x64 (Linux `reboot=k`, and `panic=-1` after a panic) stops the VM.

use vm_superio::{I8042Device, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::vmm::bus::BusDevice;

/// Port range 0x60-0x64 (data at 0x60, command/status at 0x64).
pub const I8042_PIO_BASE: u64 = 0x60;
pub const I8042_PIO_LEN: u64 = 5;

/// vm-superio's trigger for an eventfd.
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

pub struct I8042 {
    inner: I8042Device<EventFdTrigger>,
}

impl I8042 {
    /// `reset_evt` is written when the guest asks for a CPU reset.
    pub fn new(reset_evt: EventFd) -> Self {
        I8042 {
            inner: I8042Device::new(EventFdTrigger(reset_evt)),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Ok(off), [byte]) = (u8::try_from(offset), data) {
            *byte = self.inner.read(off);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(off), [byte]) = (u8::try_from(offset), data) {
            if let Err(err) = self.inner.write(off, *byte) {
                log::error!("i8042: signalling the reset event failed: {err}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_on_port_0x64_signals_the_event() {
        let evt = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).unwrap();
        let mut dev = I8042::new(evt.try_clone().unwrap());
        dev.write(0, &[0xfe]);
        assert!(evt.read().is_err(), "data port must not reset");
        dev.write(4, &[0xfe]);
        assert_eq!(evt.read().unwrap(), 1);
        let mut status = [0xffu8];
        dev.read(4, &mut status);
        assert_eq!(
            status,
            [0],
            "input buffer empty so the guest may send its command"
        );
    }
}
