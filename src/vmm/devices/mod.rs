//! Emulated devices: legacy PIO (8250 serial, i8042) and virtio over the MMIO transport.

pub mod i8042;
pub mod serial;
pub mod vhost_user_fs;
pub mod virtio_block;
pub mod virtio_console;
pub mod virtio_mmio;
pub mod virtio_net;

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// `VIRTIO_F_VERSION_1`: we implement only the modern (non-legacy) interface.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// Interrupt status bits of the virtio-mmio transport.
pub const VIRTIO_MMIO_INT_VRING: u32 = 0x1;
pub const VIRTIO_MMIO_INT_CONFIG: u32 = 0x2;

/// Failures of device request handling that make a queue unusable. Malformed requests are
/// answered on the ring instead; these mean the driver broke the ring itself.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("virtio queue: {0}")]
    Queue(#[from] virtio_queue::Error),
    #[error("host I/O: {0}")]
    HostIo(#[from] std::io::Error),
    #[error("interrupt eventfd: {0}")]
    Interrupt(std::io::Error),
}

/// The interrupt line of one virtio-mmio device: the status register the driver reads and acks,
/// plus the eventfd KVM turns into a guest interrupt (irqfd).
pub struct Interrupt {
    status: AtomicU32,
    eventfd: EventFd,
}

impl Interrupt {
    pub fn new(eventfd: EventFd) -> Self {
        Interrupt {
            status: AtomicU32::new(0),
            eventfd,
        }
    }

    pub fn trigger(&self, bits: u32) -> Result<(), DeviceError> {
        self.status.fetch_or(bits, Ordering::SeqCst);
        self.eventfd.write(1).map_err(DeviceError::Interrupt)
    }

    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    pub fn eventfd(&self) -> &EventFd {
        &self.eventfd
    }
}

/// What a device wants from its host-side file descriptor (the console's socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostInterest {
    pub readable: bool,
    pub writable: bool,
}

/// A virtio device behind the MMIO transport. The transport owns the queues and the
/// negotiation; the device only sees activated queues and guest memory.
pub trait VirtioDevice: Send {
    /// Virtio device id (2 = block, 3 = console).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits offered to the driver.
    fn device_features(&self) -> u64;
    /// The driver's accepted subset (only called with a subset of `device_features`).
    fn ack_features(&mut self, features: u64);
    /// Read device config space; bytes past the end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Write device config space; read-only fields ignore writes.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// False when another process (a vhost-user backend) reads the queues' notifications
    /// itself: the event loop then leaves their ioeventfds alone.
    fn handles_queue_notifications(&self) -> bool {
        true
    }
    /// The queues' ioeventfds, for a device whose backend reads them (see above).
    fn set_queue_notifiers(&mut self, _kicks: Vec<EventFd>) {}
    /// The driver set DRIVER_OK with these queues; called from the event loop before any host
    /// event. An error marks the device as needing a reset.
    fn activate(&mut self, _queues: &[Queue], _mem: &GuestMemoryMmap) -> Result<(), DeviceError> {
        Ok(())
    }
    /// Handle a notification for queue `index`. Returns true when the used ring changed.
    fn process_queue(
        &mut self,
        index: usize,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<bool, DeviceError>;
    /// Host-side file descriptor the event loop should watch, if any.
    fn host_fd(&self) -> Option<RawFd> {
        None
    }
    /// Which host-side readiness the device currently wants.
    fn host_interest(&self) -> HostInterest {
        HostInterest::default()
    }
    /// The host fd became ready. Returns true when the used ring changed.
    fn process_host_event(
        &mut self,
        _queues: &mut [Queue],
        _mem: &GuestMemoryMmap,
    ) -> Result<bool, DeviceError> {
        Ok(false)
    }
    /// Back to the initial state after a driver reset (status 0).
    fn reset(&mut self) {}
}

/// Copy `src` into `data` starting at `offset` within a config space, zero-filling past its end.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= config.len() {
        return;
    }
    let n = data.len().min(config.len() - start);
    data[..n].copy_from_slice(&config[start..start + n]);
}
