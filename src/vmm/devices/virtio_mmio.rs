//! The virtio-mmio transport, version 2 (virtio 1.2, section 4.2.2): feature negotiation, queue
//! setup, the device status state machine, interrupt status/ack and config space.
//!
//! Every register write from the driver is checked against the status it is allowed in; a
//! driver that breaks the protocol gets DEVICE_NEEDS_RESET and a config interrupt instead of a
//! half-configured device.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::{
    DeviceError, HostInterest, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1, VIRTIO_MMIO_INT_CONFIG,
    VIRTIO_MMIO_INT_VRING,
};
use crate::vmm::bus::BusDevice;

pub const MMIO_MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
pub const MMIO_VERSION: u32 = 2;
/// Vendor id reported to the guest ("HUSK" would do; any value is fine for the Linux driver).
pub const MMIO_VENDOR_ID: u32 = 0x4b53_5548;

pub mod reg {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    pub const FAILED: u32 = 128;
}

pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    queues: Vec<Queue>,
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    config_generation: u32,
    /// Written when activation state changes, so the event loop re-arms the device's host fd
    /// (activation happens on a vCPU thread, which the event loop would not otherwise notice).
    activation_evt: Option<EventFd>,
    /// DRIVER_OK was set and the device's own activation has not run yet (the event loop runs
    /// it: a vhost-user device talks to its backend then, which a vCPU thread may not).
    activation_pending: bool,
}

impl MmioTransport {
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
    ) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            // Max sizes are compile-time powers of two, which Queue::new accepts.
            .filter_map(|&max| Queue::new(max).ok())
            .collect();
        MmioTransport {
            device,
            queues,
            mem,
            interrupt,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            config_generation: 0,
            activation_evt: None,
            activation_pending: false,
        }
    }

    pub fn set_activation_notifier(&mut self, evt: EventFd) {
        self.activation_evt = Some(evt);
    }

    fn activation_changed(&self) {
        if let Some(evt) = &self.activation_evt {
            if let Err(err) = evt.write(1) {
                log::error!("virtio activation event: {err}");
            }
        }
    }

    pub fn device_status(&self) -> u32 {
        self.status
    }

    pub fn is_activated(&self) -> bool {
        self.status & status::DRIVER_OK != 0 && self.status & status::DEVICE_NEEDS_RESET == 0
    }

    /// Whether the event loop should watch this device's queue ioeventfds.
    pub fn handles_queue_notifications(&self) -> bool {
        self.device.handles_queue_notifications()
    }

    /// Run the device's activation if DRIVER_OK is waiting for it (event loop only).
    pub fn activate_pending(&mut self) {
        if !self.activation_pending {
            return;
        }
        self.activation_pending = false;
        if !self.is_activated() {
            return;
        }
        if let Err(err) = self.device.activate(&self.queues, &self.mem) {
            log::warn!(
                "virtio device {}: activation: {err}; needs reset",
                self.device.device_type()
            );
            self.needs_reset();
        }
    }

    pub fn interrupt(&self) -> &Arc<Interrupt> {
        &self.interrupt
    }

    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    pub fn host_fd(&self) -> Option<std::os::fd::RawFd> {
        self.device.host_fd()
    }

    pub fn host_interest(&self) -> HostInterest {
        if self.is_activated() && !self.activation_pending {
            self.device.host_interest()
        } else {
            HostInterest::default()
        }
    }

    /// The guest notified queue `index` (through the ioeventfd or a trapped write).
    pub fn notify_queue(&mut self, index: usize) {
        if !self.is_activated() || index >= self.queues.len() || !self.queues[index].ready() {
            return;
        }
        let result = self
            .device
            .process_queue(index, &mut self.queues, &self.mem);
        self.finish(result);
    }

    /// The device's host fd is ready.
    pub fn host_event(&mut self) {
        if !self.is_activated() || self.activation_pending {
            return;
        }
        let result = self.device.process_host_event(&mut self.queues, &self.mem);
        self.finish(result);
    }

    fn finish(&mut self, result: Result<bool, DeviceError>) {
        match result {
            Ok(true) => self.raise(VIRTIO_MMIO_INT_VRING),
            Ok(false) => {}
            Err(err) => {
                log::warn!(
                    "virtio device {}: {err}; needs reset",
                    self.device.device_type()
                );
                self.needs_reset();
            }
        }
    }

    fn raise(&self, bits: u32) {
        if let Err(err) = self.interrupt.trigger(bits) {
            log::error!("virtio interrupt: {err}");
        }
    }

    fn needs_reset(&mut self) {
        if self.status & status::DRIVER_OK != 0 {
            self.status |= status::DEVICE_NEEDS_RESET;
            self.raise(VIRTIO_MMIO_INT_CONFIG);
        } else {
            // Before DRIVER_OK the driver polls status; the bit alone tells it.
            self.status |= status::DEVICE_NEEDS_RESET;
        }
    }

    fn reset(&mut self) {
        let was_active = self.is_activated();
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.activation_pending = false;
        self.interrupt.ack(u32::MAX);
        for q in &mut self.queues {
            q.reset();
        }
        self.device.reset();
        if was_active {
            self.activation_changed();
        }
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue registers may be written only between FEATURES_OK and DRIVER_OK.
    fn queue_setup_allowed(&self) -> bool {
        self.status & status::FEATURES_OK != 0 && self.status & status::DRIVER_OK == 0
    }

    fn read_u32(&self, offset: u64) -> u32 {
        match offset {
            reg::MAGIC_VALUE => MMIO_MAGIC_VALUE,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => MMIO_VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.device_features() as u32,
                1 => (self.device.device_features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_READY => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => self.status,
            reg::CONFIG_GENERATION => self.config_generation,
            _ => 0,
        }
    }

    fn write_u32(&mut self, offset: u64, v: u32) {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            reg::DRIVER_FEATURES => {
                if self.status & status::DRIVER == 0 || self.status & status::FEATURES_OK != 0 {
                    return self.needs_reset();
                }
                match self.driver_features_sel {
                    0 => {
                        self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                    }
                    // Feature words beyond 64 bits: we offer nothing there.
                    _ if v != 0 => self.needs_reset(),
                    _ => {}
                }
            }
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::QUEUE_NUM
            | reg::QUEUE_READY
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH => self.write_queue_reg(offset, v),
            reg::QUEUE_NOTIFY => self.notify_queue(v as usize),
            reg::INTERRUPT_ACK => self.interrupt.ack(v),
            reg::STATUS => self.write_status(v),
            _ => log::debug!("virtio-mmio: write to read-only/unknown register {offset:#x}"),
        }
    }

    fn write_queue_reg(&mut self, offset: u64, v: u32) {
        if !self.queue_setup_allowed() {
            return self.needs_reset();
        }
        let Some(q) = self.selected_queue() else {
            return self.needs_reset();
        };
        match offset {
            reg::QUEUE_NUM => q.set_size(v.min(u32::from(u16::MAX)) as u16),
            reg::QUEUE_READY => q.set_ready(v == 1),
            reg::QUEUE_DESC_LOW => q.set_desc_table_address(Some(v), None),
            reg::QUEUE_DESC_HIGH => q.set_desc_table_address(None, Some(v)),
            reg::QUEUE_DRIVER_LOW => q.set_avail_ring_address(Some(v), None),
            reg::QUEUE_DRIVER_HIGH => q.set_avail_ring_address(None, Some(v)),
            reg::QUEUE_DEVICE_LOW => q.set_used_ring_address(Some(v), None),
            reg::QUEUE_DEVICE_HIGH => q.set_used_ring_address(None, Some(v)),
            _ => {}
        }
    }

    fn write_status(&mut self, v: u32) {
        use status::*;
        if v == 0 {
            return self.reset();
        }
        let old = self.status & !DEVICE_NEEDS_RESET;
        if v & FAILED != 0 {
            self.status |= FAILED;
            return;
        }
        // The driver sets bits one step at a time and never clears them (other than by reset).
        if v & old != old {
            return self.needs_reset();
        }
        let added = v & !old;
        let allowed = match old {
            0 => ACKNOWLEDGE,
            ACKNOWLEDGE => DRIVER,
            x if x == ACKNOWLEDGE | DRIVER => FEATURES_OK,
            x if x == ACKNOWLEDGE | DRIVER | FEATURES_OK => DRIVER_OK,
            _ => 0,
        };
        if added == 0 {
            return;
        }
        if added != allowed {
            return self.needs_reset();
        }
        match added {
            FEATURES_OK => {
                let offered = self.device.device_features();
                // Leaving FEATURES_OK clear tells the driver we refuse this feature set.
                if self.driver_features & !offered != 0
                    || self.driver_features & VIRTIO_F_VERSION_1 == 0
                {
                    return;
                }
                self.device.ack_features(self.driver_features);
                self.status |= FEATURES_OK;
            }
            DRIVER_OK => {
                let all_ready_valid = self
                    .queues
                    .iter()
                    .all(|q| !q.ready() || q.is_valid(&self.mem));
                if !all_ready_valid || !self.queues.iter().any(|q| q.ready()) {
                    return self.needs_reset();
                }
                self.status |= DRIVER_OK;
                self.activation_pending = true;
                self.activation_changed();
            }
            bit => self.status |= bit,
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.device.read_config(offset - reg::CONFIG, data);
            return;
        }
        // Registers below the config space are 32-bit only (spec 4.2.2.2).
        if data.len() != 4 || !offset.is_multiple_of(4) {
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_u32(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            if self.status & status::DRIVER == 0 {
                return self.needs_reset();
            }
            self.device.write_config(offset - reg::CONFIG, data);
            self.config_generation = self.config_generation.wrapping_add(1);
            return;
        }
        let Ok(word) = <[u8; 4]>::try_from(data) else {
            return;
        };
        if offset.is_multiple_of(4) {
            self.write_u32(offset, u32::from_le_bytes(word));
        }
    }
}

impl std::fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport")
            .field("device_type", &self.device.device_type())
            .field("status", &self.status)
            .finish()
    }
}
