//! virtio-net over a tap device: receiveq 0 carries frames host -> guest, transmitq 1 guest ->
//! host. The tap is opened and put on the container network's bridge by husk before the
//! monitor starts (src/network); the monitor only reads and writes frames on its descriptor.
//!
//! Deliberately plain: no offloads (checksum, TSO, mergeable buffers) are offered, so every
//! frame is at most one MTU and the 12-byte virtio header carries nothing the device must
//! honour. Chains come from the guest and are treated as hostile: a transmit chain longer than
//! one frame, with writable descriptors, or pointing outside guest memory is dropped (and
//! returned), and a receive chain too small for the frame gets the frame dropped, never a
//! partial write. Back-pressure as in virtio-console: the tap is read only while the guest has
//! posted receive buffers.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU};
use virtio_queue::{Descriptor, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestMemory, GuestMemoryMmap};

use super::{read_config_bytes, DeviceError, HostInterest, VirtioDevice, VIRTIO_F_VERSION_1};

pub const QUEUE_SIZE: u16 = 256;
pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
/// `struct virtio_net_hdr_v1`: with VERSION_1 it always has `num_buffers`.
pub const HEADER_LEN: usize = 12;
/// The largest Ethernet frame a tap delivers for an MTU: header and a VLAN tag on top.
const ETHERNET_OVERHEAD: usize = 18;
/// Most frames moved per notification before the other queue gets a turn.
const BURST: usize = 64;

/// Frames the device dropped, by cause: kept for tests and for the monitor's report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetDrops {
    /// A guest transmit chain that was not one well-formed frame.
    pub bad_tx_chains: u64,
    /// Frames the tap refused (link down, queue full).
    pub tap_refused: u64,
    /// Frames from the tap larger than the guest's receive buffer.
    pub rx_too_large: u64,
}

pub struct Net {
    tap: File,
    mtu: u16,
    /// mac[6], status u16, max_virtqueue_pairs u16, mtu u16.
    config: [u8; 12],
    /// Readable is wanted but the guest has no receive buffers: wait for a receiveq kick.
    rx_starved: bool,
    /// The tap went away (EBADFD, EIO): nothing more to deliver to the guest.
    tap_closed: bool,
    frame: Vec<u8>,
    drops: NetDrops,
}

impl Net {
    /// `tap` must be a tap (IFF_TAP | IFF_NO_PI) descriptor; it is made non-blocking here.
    pub fn new(tap: File, mac: [u8; 6], mtu: u16) -> std::io::Result<Self> {
        set_nonblocking(&tap)?;
        let mut config = [0u8; 12];
        config[..6].copy_from_slice(&mac);
        config[6..8].copy_from_slice(&1u16.to_le_bytes()); // VIRTIO_NET_S_LINK_UP (unused)
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        config[10..12].copy_from_slice(&mtu.to_le_bytes());
        Ok(Net {
            tap,
            mtu,
            config,
            rx_starved: false,
            tap_closed: false,
            frame: vec![0u8; HEADER_LEN + usize::from(mtu) + ETHERNET_OVERHEAD],
            drops: NetDrops::default(),
        })
    }

    pub fn drops(&self) -> NetDrops {
        self.drops
    }

    fn max_frame(&self) -> usize {
        usize::from(self.mtu) + ETHERNET_OVERHEAD
    }

    /// Move frames from the tap into posted receive buffers until either runs out.
    fn fill_rx(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, DeviceError> {
        let mut used_any = false;
        for _ in 0..BURST {
            if self.tap_closed {
                break;
            }
            let Some(chain) = queue.iter(mem)?.next() else {
                self.rx_starved = true;
                break;
            };
            self.rx_starved = false;
            let head = chain.head_index();
            let descs: Vec<Descriptor> = chain.collect();
            // The header goes in front; a tap read returns exactly one frame.
            let n = match self.tap.read(&mut self.frame[HEADER_LEN..]) {
                Ok(0) => {
                    // Only a socket standing in for the tap ends; a tap has no end of file.
                    queue.go_to_previous_position();
                    self.tap_closed = true;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    queue.go_to_previous_position();
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {
                    queue.go_to_previous_position();
                    continue;
                }
                Err(_) => {
                    queue.go_to_previous_position();
                    self.tap_closed = true;
                    break;
                }
            };
            self.frame[..HEADER_LEN].fill(0);
            // num_buffers = 1: the frame fits one chain (no mergeable buffers).
            self.frame[10..12].copy_from_slice(&1u16.to_le_bytes());
            let len = HEADER_LEN + n;
            match write_to_chain(&descs, &self.frame[..len], mem) {
                Some(written) => {
                    queue.add_used(mem, head, written)?;
                    used_any = true;
                }
                None => {
                    // Too small or outside guest memory: the frame is lost, the chain is
                    // offered again for the next one.
                    self.drops.rx_too_large += 1;
                    queue.go_to_previous_position();
                }
            }
        }
        Ok(used_any)
    }

    /// Send every transmit chain the guest posted; each is returned whether or not it held a
    /// frame the tap accepted.
    fn drain_tx(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, DeviceError> {
        let mut used_any = false;
        loop {
            queue.disable_notification(mem)?;
            let chains: Vec<_> = queue.iter(mem)?.collect();
            for chain in chains {
                let head = chain.head_index();
                let descs: Vec<Descriptor> = chain.collect();
                match self.read_tx_frame(&descs, mem) {
                    Some(len) => match self.tap.write(&self.frame[HEADER_LEN..len]) {
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::Interrupted => {
                            if self.tap.write(&self.frame[HEADER_LEN..len]).is_err() {
                                self.drops.tap_refused += 1;
                            }
                        }
                        Err(_) => self.drops.tap_refused += 1,
                    },
                    None => self.drops.bad_tx_chains += 1,
                }
                queue.add_used(mem, head, 0)?;
                used_any = true;
            }
            if !queue.enable_notification(mem)? {
                break;
            }
        }
        Ok(used_any)
    }

    /// Gather one transmit chain into `self.frame`; its length including the header, or None
    /// when the chain is not a frame the device may send.
    fn read_tx_frame(&mut self, descs: &[Descriptor], mem: &GuestMemoryMmap) -> Option<usize> {
        let limit = HEADER_LEN + self.max_frame();
        let mut len = 0usize;
        for d in descs {
            let dlen = d.len() as usize;
            if d.is_write_only() || dlen > limit - len || !mem.check_range(d.addr(), dlen) {
                return None;
            }
            mem.read_slice(&mut self.frame[len..len + dlen], d.addr())
                .ok()?;
            len += dlen;
        }
        // A header and at least an Ethernet header (dst, src, type).
        (len >= HEADER_LEN + 14).then_some(len)
    }
}

/// Write `bytes` across the chain's writable descriptors; None (and nothing written) unless
/// all of it fits and every buffer is in guest memory.
fn write_to_chain(descs: &[Descriptor], bytes: &[u8], mem: &GuestMemoryMmap) -> Option<u32> {
    let mut room = 0usize;
    for d in descs {
        if !d.is_write_only() || !mem.check_range(d.addr(), d.len() as usize) {
            return None;
        }
        room = room.saturating_add(d.len() as usize);
    }
    if room < bytes.len() {
        return None;
    }
    let mut written = 0usize;
    for d in descs {
        if written == bytes.len() {
            break;
        }
        let take = (bytes.len() - written).min(d.len() as usize);
        mem.write_slice(&bytes[written..written + take], d.addr())
            .ok()?;
        written += take;
    }
    u32::try_from(written).ok()
}

fn set_nonblocking(file: &File) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor `file` owns; no pointers involved.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn device_features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | (1 << VIRTIO_NET_F_MAC) | (1 << VIRTIO_NET_F_MTU)
    }

    fn ack_features(&mut self, _features: u64) {}

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // The MAC is the one husk allocated: a guest cannot change it (VIRTIO_NET_F_CTRL_MAC
        // is not offered), so it cannot pose as another container on the bridge by this
        // device's config either.
    }

    fn process_queue(
        &mut self,
        index: usize,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<bool, DeviceError> {
        match (index, queues) {
            (RX_QUEUE, [rx, ..]) => self.fill_rx(rx, mem),
            (TX_QUEUE, [_, tx, ..]) => self.drain_tx(tx, mem),
            _ => Ok(false),
        }
    }

    fn host_fd(&self) -> Option<RawFd> {
        Some(self.tap.as_raw_fd())
    }

    fn host_interest(&self) -> HostInterest {
        HostInterest {
            readable: !self.tap_closed && !self.rx_starved,
            writable: false,
        }
    }

    fn process_host_event(
        &mut self,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<bool, DeviceError> {
        let [rx, ..] = queues else {
            return Ok(false);
        };
        self.fill_rx(rx, mem)
    }

    fn reset(&mut self) {
        self.rx_starved = false;
    }
}

/// For tests and fuzzing: the device over any descriptor that behaves like a tap (a
/// SOCK_SEQPACKET or datagram socket keeps frame boundaries the same way).
pub fn net_from_file(file: File, mac: [u8; 6], mtu: u16) -> std::io::Result<Net> {
    Net::new(file, mac, mtu)
}
