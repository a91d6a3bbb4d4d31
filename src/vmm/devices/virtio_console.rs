//! virtio-console with one port (no MULTIPORT): receiveq 0 carries host -> guest bytes,
//! transmitq 1 carries guest -> host bytes. The host end is a Unix stream socket given by the
//! caller; the VM backend runs the agent protocol over it.
//!
//! Back-pressure both ways: the socket is read only while the guest has posted receive buffers,
//! and transmit chains are consumed only while the socket accepts the bytes (what it refuses is
//! kept, bounded, until it is writable again).

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestMemoryMmap};

use super::{read_config_bytes, DeviceError, HostInterest, VirtioDevice, VIRTIO_F_VERSION_1};

pub const QUEUE_SIZE: u16 = 256;
pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
/// Most we move through one descriptor chain, so a hostile length cannot make us allocate much.
const MAX_CHUNK: usize = 64 * 1024;

pub struct Console {
    socket: UnixStream,
    /// Guest bytes the socket has not accepted yet (at most one chain's worth).
    tx_pending: Vec<u8>,
    /// The socket reached end-of-file: nothing more to deliver to the guest.
    host_closed: bool,
    /// Readable is wanted but the guest has no buffers: wait for a receiveq notification.
    rx_starved: bool,
    config: [u8; 12],
}

impl Console {
    pub fn new(socket: UnixStream) -> std::io::Result<Self> {
        socket.set_nonblocking(true)?;
        Ok(Console {
            socket,
            tx_pending: Vec::new(),
            host_closed: false,
            rx_starved: false,
            // cols, rows (u16), max_nr_ports (u32), emerg_wr (u32): a single 80x25 port.
            config: [80, 0, 25, 0, 1, 0, 0, 0, 0, 0, 0, 0],
        })
    }

    /// Move socket bytes into posted receive buffers until either runs out.
    fn fill_rx(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, DeviceError> {
        let mut used_any = false;
        let mut buf = vec![0u8; MAX_CHUNK];
        while !self.host_closed {
            let Some(chain) = queue.iter(mem)?.next() else {
                self.rx_starved = true;
                break;
            };
            self.rx_starved = false;
            let head = chain.head_index();
            let descs: Vec<_> = chain.collect();
            let capacity: usize = descs
                .iter()
                .filter(|d| d.is_write_only())
                .map(|d| d.len() as usize)
                .fold(0usize, usize::saturating_add)
                .min(MAX_CHUNK);
            if capacity == 0 {
                queue.add_used(mem, head, 0)?;
                used_any = true;
                continue;
            }
            let n = match self.socket.read(&mut buf[..capacity]) {
                Ok(0) => {
                    self.host_closed = true;
                    0
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    // Nothing to deliver: give the chain back for the next read.
                    queue.go_to_previous_position();
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {
                    queue.go_to_previous_position();
                    continue;
                }
                Err(e) => {
                    queue.go_to_previous_position();
                    self.host_closed = true;
                    return Err(DeviceError::HostIo(e));
                }
            };
            if n == 0 {
                queue.go_to_previous_position();
                break;
            }
            let mut written = 0usize;
            for d in descs.iter().filter(|d| d.is_write_only()) {
                if written == n {
                    break;
                }
                let take = (n - written).min(d.len() as usize);
                if mem
                    .write_slice(&buf[written..written + take], d.addr())
                    .is_err()
                {
                    // A buffer outside guest memory: the rest of the bytes are lost for this
                    // guest, which broke the ring contract.
                    break;
                }
                written += take;
            }
            queue.add_used(mem, head, written as u32)?;
            used_any = true;
        }
        Ok(used_any)
    }

    /// Push pending bytes; false when the socket still holds some back.
    fn flush_tx(&mut self) -> Result<bool, DeviceError> {
        while !self.tx_pending.is_empty() {
            match self.socket.write(&self.tx_pending) {
                Ok(0) => {
                    // The reader is gone: drop what the guest sends from now on.
                    self.tx_pending.clear();
                }
                Ok(n) => {
                    self.tx_pending.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::BrokenPipe => self.tx_pending.clear(),
                Err(e) => return Err(DeviceError::HostIo(e)),
            }
        }
        Ok(true)
    }

    fn drain_tx(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, DeviceError> {
        let mut used_any = false;
        while self.flush_tx()? {
            let Some(chain) = queue.iter(mem)?.next() else {
                break;
            };
            let head = chain.head_index();
            for d in chain.readable() {
                let room = MAX_CHUNK.saturating_sub(self.tx_pending.len());
                let len = (d.len() as usize).min(room);
                let start = self.tx_pending.len();
                self.tx_pending.resize(start + len, 0);
                if mem
                    .read_slice(&mut self.tx_pending[start..], d.addr())
                    .is_err()
                {
                    self.tx_pending.truncate(start);
                }
            }
            queue.add_used(mem, head, 0)?;
            used_any = true;
        }
        Ok(used_any)
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn device_features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn ack_features(&mut self, _features: u64) {}

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

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
        Some(self.socket.as_raw_fd())
    }

    fn host_interest(&self) -> HostInterest {
        HostInterest {
            readable: !self.host_closed && !self.rx_starved,
            writable: !self.tx_pending.is_empty(),
        }
    }

    fn process_host_event(
        &mut self,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<bool, DeviceError> {
        let [rx, tx, ..] = queues else {
            return Ok(false);
        };
        let tx_used = self.drain_tx(tx, mem)?;
        let rx_used = self.fill_rx(rx, mem)?;
        Ok(tx_used || rx_used)
    }

    fn reset(&mut self) {
        self.tx_pending.clear();
        self.rx_starved = false;
    }
}
