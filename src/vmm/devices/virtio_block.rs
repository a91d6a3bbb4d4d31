//! virtio-blk over a raw host file: IN, OUT, FLUSH and GET_ID requests.
//!
//! Requests come from the guest and are treated as hostile. Every chain is validated before
//! the file is touched: a header the device can read, a one-byte writable status at the end,
//! data buffers in the right direction, sector ranges inside the disk, and guest addresses
//! inside guest memory (vm-memory refuses anything else). A chain without a usable status byte
//! is returned with length 0; every other bad request gets VIRTIO_BLK_S_IOERR or _UNSUPP.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::{Descriptor, Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestMemory, GuestMemoryMmap};

use super::{read_config_bytes, DeviceError, VirtioDevice, VIRTIO_F_VERSION_1};

pub const SECTOR_SIZE: u64 = 512;
pub const QUEUE_SIZE: u16 = 256;
/// Request header: type (u32), reserved (u32), sector (u64).
const HEADER_LEN: u32 = 16;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("cannot open disk image {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("disk image {path} is {size} bytes, not a multiple of 512")]
    Size { path: String, size: u64 },
}

pub struct Block {
    file: File,
    read_only: bool,
    capacity_sectors: u64,
    id: [u8; VIRTIO_BLK_ID_BYTES as usize],
    config: [u8; 8],
    acked_features: u64,
}

impl Block {
    pub fn open(path: &Path, read_only: bool) -> Result<Self, BlockError> {
        let open_err = |source| BlockError::Open {
            path: path.display().to_string(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        let size = meta.len();
        if size % SECTOR_SIZE != 0 {
            return Err(BlockError::Size {
                path: path.display().to_string(),
                size,
            });
        }
        // A stable serial per backing file, as the guest sees it in /sys/block/vdX/serial.
        let serial = format!("husk{:x}{:x}", meta.dev(), meta.ino());
        Ok(Self::from_file(
            file,
            read_only,
            size / SECTOR_SIZE,
            serial.as_bytes(),
        ))
    }

    fn from_file(file: File, read_only: bool, capacity_sectors: u64, serial: &[u8]) -> Self {
        let mut id = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        let n = serial.len().min(id.len());
        id[..n].copy_from_slice(&serial[..n]);
        Block {
            file,
            read_only,
            capacity_sectors,
            id,
            config: capacity_sectors.to_le_bytes(),
            acked_features: 0,
        }
    }

    pub fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
    }

    /// Handle one chain; returns the number of bytes written into guest memory (the used length).
    fn handle_chain(&mut self, descs: &[Descriptor], mem: &GuestMemoryMmap) -> u32 {
        let Some((status, rest)) = descs.split_last() else {
            return 0;
        };
        if !status.is_write_only() || status.len() < 1 || rest.is_empty() {
            return 0;
        }
        if !mem.check_range(status.addr(), 1) {
            return 0;
        }
        let (header, data) = (&rest[0], &rest[1..]);
        let (code, written) = match self.execute(header, data, mem) {
            Ok(written) => (VIRTIO_BLK_S_OK, written),
            Err(code) => (code, 0),
        };
        if mem.write_obj(code as u8, status.addr()).is_err() {
            return 0;
        }
        written.saturating_add(1)
    }

    /// Run the request; Ok(bytes written to the guest) or Err(virtio status code).
    fn execute(
        &mut self,
        header: &Descriptor,
        data: &[Descriptor],
        mem: &GuestMemoryMmap,
    ) -> Result<u32, u32> {
        if header.is_write_only() || header.len() < HEADER_LEN {
            return Err(VIRTIO_BLK_S_IOERR);
        }
        let request_type: u32 = mem
            .read_obj(header.addr())
            .map_err(|_| VIRTIO_BLK_S_IOERR)?;
        let sector_addr = header.addr().checked_add(8).ok_or(VIRTIO_BLK_S_IOERR)?;
        let sector: u64 = mem.read_obj(sector_addr).map_err(|_| VIRTIO_BLK_S_IOERR)?;
        match request_type {
            VIRTIO_BLK_T_IN => self.transfer(sector, data, mem, true),
            VIRTIO_BLK_T_OUT if self.read_only => Err(VIRTIO_BLK_S_IOERR),
            VIRTIO_BLK_T_OUT => self.transfer(sector, data, mem, false).map(|_| 0),
            VIRTIO_BLK_T_FLUSH => {
                if !self.read_only {
                    self.file.sync_data().map_err(|_| VIRTIO_BLK_S_IOERR)?;
                }
                Ok(0)
            }
            VIRTIO_BLK_T_GET_ID => self.get_id(data, mem),
            _ => Err(VIRTIO_BLK_S_UNSUPP),
        }
    }

    fn transfer(
        &mut self,
        sector: u64,
        data: &[Descriptor],
        mem: &GuestMemoryMmap,
        to_guest: bool,
    ) -> Result<u32, u32> {
        let mut total: u64 = 0;
        for d in data {
            if d.is_write_only() != to_guest || !mem.check_range(d.addr(), d.len() as usize) {
                return Err(VIRTIO_BLK_S_IOERR);
            }
            total += u64::from(d.len());
        }
        // Sum of at most QUEUE_SIZE u32 lengths cannot overflow u64, but the used length is u32.
        let total32 = u32::try_from(total).map_err(|_| VIRTIO_BLK_S_IOERR)?;
        if !total.is_multiple_of(SECTOR_SIZE) {
            return Err(VIRTIO_BLK_S_IOERR);
        }
        sector
            .checked_add(total / SECTOR_SIZE)
            .filter(|&end| end <= self.capacity_sectors)
            .ok_or(VIRTIO_BLK_S_IOERR)?;
        self.file
            .seek(SeekFrom::Start(sector * SECTOR_SIZE))
            .map_err(|_| VIRTIO_BLK_S_IOERR)?;
        for d in data {
            let len = d.len() as usize;
            let res = if to_guest {
                mem.read_exact_volatile_from(d.addr(), &mut self.file, len)
            } else {
                mem.write_all_volatile_to(d.addr(), &mut self.file, len)
            };
            res.map_err(|_| VIRTIO_BLK_S_IOERR)?;
        }
        Ok(total32)
    }

    fn get_id(&self, data: &[Descriptor], mem: &GuestMemoryMmap) -> Result<u32, u32> {
        let mut remaining: &[u8] = &self.id;
        let mut written = 0u32;
        for d in data {
            if !d.is_write_only() {
                return Err(VIRTIO_BLK_S_IOERR);
            }
            let n = remaining.len().min(d.len() as usize);
            mem.write_slice(&remaining[..n], d.addr())
                .map_err(|_| VIRTIO_BLK_S_IOERR)?;
            remaining = &remaining[n..];
            written += n as u32;
        }
        Ok(written)
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn device_features(&self) -> u64 {
        let ro = if self.read_only {
            1 << VIRTIO_BLK_F_RO
        } else {
            0
        };
        VIRTIO_F_VERSION_1 | (1 << VIRTIO_BLK_F_FLUSH) | ro
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // Capacity is read-only; writeback-cache toggling is not offered.
    }

    fn process_queue(
        &mut self,
        index: usize,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<bool, DeviceError> {
        let Some(queue) = queues.get_mut(index) else {
            return Ok(false);
        };
        let mut used_any = false;
        loop {
            queue.disable_notification(mem)?;
            // The iterator bounds each chain to the queue size (loops end there) and refuses
            // an avail index that runs further ahead than the ring allows.
            let chains: Vec<_> = queue.iter(mem)?.collect();
            for chain in chains {
                let head = chain.head_index();
                let descs: Vec<Descriptor> = chain.collect();
                let used_len = self.handle_chain(&descs, mem);
                queue.add_used(mem, head, used_len)?;
                used_any = true;
            }
            if !queue.enable_notification(mem)? {
                break;
            }
        }
        Ok(used_any && queue.needs_notification(mem)?)
    }
}

/// For tests and fuzzing: a block device over any file with an explicit capacity and serial.
pub fn block_from_file(file: File, read_only: bool, serial: &[u8]) -> std::io::Result<Block> {
    let capacity = file.metadata()?.len() / SECTOR_SIZE;
    Ok(Block::from_file(file, read_only, capacity, serial))
}
