//! virtio-fs (virtio 1.2, section 5.11) as a vhost-user frontend: the rings are served by a
//! virtiofsd in another process, which maps guest memory (a shared memfd) and reads the
//! guest's notifications straight from the queues' ioeventfds. The monitor only emulates the
//! transport and config space (tag, number of request queues), hands the backend the ring
//! addresses when the driver sets DRIVER_OK, and turns the backend's "used buffers" eventfd
//! into the transport's interrupt (the virtio-mmio interrupt status must say why, so the
//! backend cannot write KVM's irqfd directly).
//!
//! The connection and the first handshake (owner, features, protocol features) happen while
//! the VM is built, before the jail; what depends on the driver (features it took, memory
//! table, rings) is sent from the event loop, under its seccomp filter (sendmsg, recvmsg).

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::{read_config_bytes, DeviceError, HostInterest, VirtioDevice, VIRTIO_F_VERSION_1};

pub const VIRTIO_ID_FS: u32 = 26;
/// One high-priority queue (FUSE_INTERRUPT, FORGET) and one request queue, as virtiofsd serves.
const NUM_QUEUES: usize = 2;
const QUEUE_SIZE: u16 = 1024;
/// Ring features the backend may offer the driver; the transport needs none of them itself.
const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
const PASSED_THROUGH: u64 =
    VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC | VIRTIO_RING_F_EVENT_IDX;

#[derive(Debug, thiserror::Error)]
pub enum VhostFsError {
    #[error("virtio-fs tag {0:?} must be 1..=36 bytes")]
    BadTag(String),
    #[error("connecting to the virtio-fs daemon at {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("virtio-fs daemon: {op}: {source}")]
    Backend {
        op: &'static str,
        source: vhost::Error,
    },
    #[error("the virtio-fs daemon does not offer VIRTIO_F_VERSION_1")]
    NotModern,
    #[error("guest memory is not shared (a vhost-user device needs a memfd behind it)")]
    MemoryNotShared,
    #[error("eventfd: {0}")]
    EventFd(std::io::Error),
}

fn backend(op: &'static str) -> impl FnOnce(vhost::Error) -> VhostFsError {
    move |source| VhostFsError::Backend { op, source }
}

pub struct VhostUserFs {
    frontend: Frontend,
    config: [u8; 40],
    backend_features: u64,
    acked_features: u64,
    /// The backend raises this when it has used buffers on any queue.
    call: EventFd,
    /// The queues' ioeventfds (clones): the backend reads them, the event loop does not.
    kicks: Vec<EventFd>,
    memory: Vec<VhostUserMemoryRegionInfo>,
    started: bool,
}

impl VhostUserFs {
    /// Connect to the daemon at `socket` and agree on what it offers. `mem` must be shared
    /// (see `layout::create_shared_guest_memory`): its regions are what the daemon maps.
    pub fn connect(socket: &Path, tag: &str, mem: &GuestMemoryMmap) -> Result<Self, VhostFsError> {
        if tag.is_empty() || tag.len() > 36 {
            return Err(VhostFsError::BadTag(tag.to_string()));
        }
        let memory = memory_table(mem)?;
        let stream = UnixStream::connect(socket).map_err(|source| VhostFsError::Connect {
            path: socket.display().to_string(),
            source,
        })?;
        let mut frontend = Frontend::from_stream(stream, NUM_QUEUES as u64);
        frontend.set_owner().map_err(backend("SET_OWNER"))?;
        let backend_features = frontend.get_features().map_err(backend("GET_FEATURES"))?;
        if backend_features & VIRTIO_F_VERSION_1 == 0 {
            return Err(VhostFsError::NotModern);
        }
        if backend_features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0 {
            let offered = frontend
                .get_protocol_features()
                .map_err(backend("GET_PROTOCOL_FEATURES"))?;
            // Replies to every request, and several queues: nothing else is needed here.
            let wanted = VhostUserProtocolFeatures::REPLY_ACK | VhostUserProtocolFeatures::MQ;
            frontend
                .set_protocol_features(offered & wanted)
                .map_err(backend("SET_PROTOCOL_FEATURES"))?;
        }
        let mut config = [0u8; 40];
        config[..tag.len()].copy_from_slice(tag.as_bytes());
        config[36..].copy_from_slice(&(NUM_QUEUES as u32 - 1).to_le_bytes());
        Ok(VhostUserFs {
            frontend,
            config,
            backend_features,
            acked_features: 0,
            call: EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
                .map_err(VhostFsError::EventFd)?,
            kicks: Vec::new(),
            memory,
            started: false,
        })
    }

    /// Hand the backend everything the driver set up, then start each ready ring.
    fn start(&mut self, queues: &[Queue], mem: &GuestMemoryMmap) -> Result<(), VhostFsError> {
        let mut features = self.acked_features;
        if self.backend_features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0 {
            features |= VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        }
        self.frontend
            .set_features(features)
            .map_err(backend("SET_FEATURES"))?;
        self.frontend
            .set_mem_table(&self.memory)
            .map_err(backend("SET_MEM_TABLE"))?;
        for (index, queue) in queues.iter().enumerate() {
            if !queue.ready() {
                continue;
            }
            let Some(kick) = self.kicks.get(index) else {
                continue;
            };
            let host = |gpa: u64| -> Result<u64, VhostFsError> {
                mem.get_host_address(GuestAddress(gpa))
                    .map(|p| p as u64)
                    .map_err(|_| VhostFsError::Backend {
                        op: "SET_VRING_ADDR",
                        source: vhost::Error::InvalidGuestMemory,
                    })
            };
            let ring = VringConfigData {
                queue_max_size: queue.max_size(),
                queue_size: queue.size(),
                flags: 0,
                desc_table_addr: host(queue.desc_table())?,
                used_ring_addr: host(queue.used_ring())?,
                avail_ring_addr: host(queue.avail_ring())?,
                log_addr: None,
            };
            self.frontend
                .set_vring_num(index, queue.size())
                .map_err(backend("SET_VRING_NUM"))?;
            self.frontend
                .set_vring_addr(index, &ring)
                .map_err(backend("SET_VRING_ADDR"))?;
            self.frontend
                .set_vring_base(index, 0)
                .map_err(backend("SET_VRING_BASE"))?;
            self.frontend
                .set_vring_call(index, &self.call)
                .map_err(backend("SET_VRING_CALL"))?;
            self.frontend
                .set_vring_kick(index, kick)
                .map_err(backend("SET_VRING_KICK"))?;
            if self.backend_features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0 {
                self.frontend
                    .set_vring_enable(index, true)
                    .map_err(backend("SET_VRING_ENABLE"))?;
            }
        }
        self.started = true;
        Ok(())
    }
}

/// The guest's RAM as the backend maps it: each region's memfd, offset and our address.
fn memory_table(mem: &GuestMemoryMmap) -> Result<Vec<VhostUserMemoryRegionInfo>, VhostFsError> {
    mem.iter()
        .map(|region| {
            let file = region.file_offset().ok_or(VhostFsError::MemoryNotShared)?;
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|_| VhostFsError::MemoryNotShared)?;
            Ok(VhostUserMemoryRegionInfo {
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
                mmap_offset: file.start(),
                mmap_handle: file.file().as_raw_fd(),
            })
        })
        .collect()
}

impl VirtioDevice for VhostUserFs {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; NUM_QUEUES]
    }

    fn device_features(&self) -> u64 {
        self.backend_features & PASSED_THROUGH
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // Both fields are read-only for the driver.
    }

    fn handles_queue_notifications(&self) -> bool {
        false
    }

    fn set_queue_notifiers(&mut self, kicks: Vec<EventFd>) {
        self.kicks = kicks;
    }

    fn activate(&mut self, queues: &[Queue], mem: &GuestMemoryMmap) -> Result<(), DeviceError> {
        self.start(queues, mem)
            .map_err(|err| DeviceError::HostIo(std::io::Error::other(err.to_string())))
    }

    fn process_queue(
        &mut self,
        _index: usize,
        _queues: &mut [Queue],
        _mem: &GuestMemoryMmap,
    ) -> Result<bool, DeviceError> {
        // The backend reads the rings; a notification that reached us changed nothing here.
        Ok(false)
    }

    fn host_fd(&self) -> Option<RawFd> {
        Some(self.call.as_raw_fd())
    }

    fn host_interest(&self) -> HostInterest {
        HostInterest {
            readable: self.started,
            writable: false,
        }
    }

    fn process_host_event(
        &mut self,
        _queues: &mut [Queue],
        _mem: &GuestMemoryMmap,
    ) -> Result<bool, DeviceError> {
        match self.call.read() {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(err) => Err(DeviceError::Interrupt(err)),
        }
    }

    fn reset(&mut self) {
        if !self.started {
            return;
        }
        // GET_VRING_BASE stops a ring in the backend.
        for index in 0..NUM_QUEUES {
            if let Err(err) = self.frontend.get_vring_base(index) {
                log::warn!("virtio-fs: stopping ring {index}: {err}");
            }
        }
        self.started = false;
        self.acked_features = 0;
    }
}
