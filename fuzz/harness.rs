//! Shared by the cargo-fuzz target (fuzz_targets/virtio_requests.rs) and the deterministic
//! random-chain test (tests/vmm_fuzz_chains.rs): turn arbitrary bytes into a driver's view of
//! a virtio queue (descriptor table, avail ring, request headers, data) and let virtio-blk,
//! virtio-console or virtio-net process it. The device must never panic, never return more
//! chains than were offered, never modify a read-only disk, and never send the host a frame
//! larger than its MTU allows.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::{UnixDatagram, UnixStream};

use husk::vmm::devices::virtio_block::block_from_file;
use husk::vmm::devices::virtio_console::Console;
use husk::vmm::devices::virtio_net::{net_from_file, HEADER_LEN};
use husk::vmm::devices::VirtioDevice;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest memory size; descriptor addresses are drawn from twice this range so that about half
/// of them point outside guest memory.
const MEM_SIZE: u64 = 256 << 10;
const QSIZE: u16 = 16;
const DISK_SECTORS: u64 = 16;
/// Descriptor tables and rings of all queues live below this address.
const RINGS_END: u64 = 0x1_0000;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        let mut v = head.to_vec();
        v.resize(n, 0);
        v
    }
    fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }
    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
}

fn memfd_disk(content: &[u8]) -> File {
    // SAFETY: the name is a valid NUL-terminated string; the returned fd is checked and then
    // owned by exactly one File.
    let file = unsafe {
        let fd = libc::memfd_create(c"husk-fuzz-disk".as_ptr(), libc::MFD_CLOEXEC);
        assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
        File::from_raw_fd(fd)
    };
    (&file).write_all(content).unwrap();
    file
}

/// Queue rings at `base`: descriptor table, then avail ring at +0x1000, used ring at +0x2000.
/// (virtio-queue's MockSplitQueue places the used ring inside the avail ring for 16-entry
/// queues, so the harness lays rings out itself.)
struct Rings {
    base: u64,
}

impl Rings {
    fn desc_table_addr(&self) -> GuestAddress {
        GuestAddress(self.base)
    }
    fn avail_addr(&self) -> GuestAddress {
        GuestAddress(self.base + 0x1000)
    }
    fn used_addr(&self) -> GuestAddress {
        GuestAddress(self.base + 0x2000)
    }
    fn create_queue(&self) -> Queue {
        let mut q = Queue::new(QSIZE).unwrap();
        q.set_size(QSIZE);
        q.try_set_desc_table_address(self.desc_table_addr())
            .unwrap();
        q.try_set_avail_ring_address(self.avail_addr()).unwrap();
        q.try_set_used_ring_address(self.used_addr()).unwrap();
        q.set_ready(true);
        q
    }
}

/// Write a driver-side queue state drawn from `inp` into `mem` and return how many chains the
/// driver made available, and whether any descriptor is indirect (an indirect table's entries
/// come from the fuzz data and may point buffers back at the rings).
fn write_queue(mem: &GuestMemoryMmap, mock: &Rings, inp: &mut Input) -> (u16, bool) {
    let mut any_indirect = false;
    for i in 0..QSIZE {
        // Buffers never overlap the rings at [0, RINGS_END): a device writing a driver's ring
        // because the driver pointed a buffer at it is the driver's own doing, and would make
        // the used-count invariant meaningless.
        let addr = RINGS_END + inp.u64() % (2 * MEM_SIZE - RINGS_END);
        // Mostly plausible lengths, sometimes absurd ones.
        let len = if inp.u8() < 32 {
            inp.u32()
        } else {
            u32::from(inp.u16())
        };
        let flags = inp.u16() & 0x7; // NEXT, WRITE, INDIRECT
        any_indirect |= flags & 0x4 != 0;
        let next = inp.u16() % (QSIZE + 4);
        let base = mock.desc_table_addr().0 + u64::from(i) * 16;
        mem.write_obj(addr, GuestAddress(base)).unwrap();
        mem.write_obj(len, GuestAddress(base + 8)).unwrap();
        mem.write_obj(flags, GuestAddress(base + 12)).unwrap();
        mem.write_obj(next, GuestAddress(base + 14)).unwrap();
    }
    let avail_idx = u16::from(inp.u8() % 24); // sometimes more than the queue holds
    let avail = mock.avail_addr().0;
    mem.write_obj(0u16, GuestAddress(avail)).unwrap();
    mem.write_obj(avail_idx, GuestAddress(avail + 2)).unwrap();
    for i in 0..QSIZE {
        let head = u16::from(inp.u8()) % (QSIZE + 2);
        mem.write_obj(head, GuestAddress(avail + 4 + u64::from(i) * 2))
            .unwrap();
    }
    (avail_idx, any_indirect)
}

/// No queue returned more chains than the driver offered.
fn assert_used_within_offered(mem: &GuestMemoryMmap, queues: &[(&Rings, u16)]) {
    for (mock, offered) in queues {
        let used_idx: u16 = mem.read_obj(GuestAddress(mock.used_addr().0 + 2)).unwrap();
        assert!(
            used_idx <= (*offered).min(QSIZE),
            "used {used_idx} > offered {offered}"
        );
    }
}

fn fill_memory(mem: &GuestMemoryMmap, inp: &mut Input) {
    let fill = inp.bytes(4096);
    mem.write_slice(&fill, GuestAddress(0x1_0000)).unwrap();
}

pub fn run(data: &[u8]) {
    let mut inp = Input(data);
    let kind = inp.u8() % 4;
    let mem: GuestMemoryMmap =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap();
    // A good share of plausible request headers; the rest of the input (after the queues)
    // fills guest memory with payload and indirect tables.
    for slot in 0..8u64 {
        let req_type = [0u32, 1, 4, 8, 0x55][usize::from(inp.u8() % 5)];
        let sector = if inp.u8() < 200 {
            u64::from(inp.u8()) % (DISK_SECTORS + 2)
        } else {
            inp.u64()
        };
        let at = GuestAddress(0x2_0000 + slot * 0x100);
        mem.write_obj(req_type, at).unwrap();
        mem.write_obj(sector, GuestAddress(at.0 + 8)).unwrap();
    }

    match kind {
        0 | 1 => {
            let read_only = kind == 1;
            let content: Vec<u8> = (0..DISK_SECTORS * 512)
                .map(|i| (i * 13 % 256) as u8)
                .collect();
            let file = memfd_disk(&content);
            let mut check = file.try_clone().unwrap();
            let mut dev = block_from_file(file, read_only, b"fuzz").unwrap();
            let mock = Rings { base: 0 };
            let (offered, indirect) = write_queue(&mem, &mock, &mut inp);
            fill_memory(&mem, &mut inp);
            let mut queues = vec![mock.create_queue()];
            let _ = dev.process_queue(0, &mut queues, &mem);
            let used_idx: u16 = mem.read_obj(GuestAddress(mock.used_addr().0 + 2)).unwrap();
            let avail_now: u16 = mem.read_obj(GuestAddress(mock.avail_addr().0 + 2)).unwrap();
            if !indirect {
                assert!(
                    used_idx <= offered.min(QSIZE),
                    "used {used_idx} > offered {offered}"
                );
                assert_eq!(
                    used_idx,
                    queues[0].next_used(),
                    "used ring and device state agree"
                );
                assert_eq!(avail_now, offered, "the device never writes the avail ring");
            }
            let mut after = Vec::new();
            check.seek(SeekFrom::Start(0)).unwrap();
            check.read_to_end(&mut after).unwrap();
            assert_eq!(after.len(), content.len(), "disk size changed");
            if read_only {
                assert!(after == content, "read-only disk modified");
            }
        }
        3 => {
            // A datagram socket keeps frame boundaries as a tap does.
            let (host, guest) = UnixDatagram::pair().unwrap();
            host.set_nonblocking(true).unwrap();
            const MTU: u16 = 1500;
            let mut dev = net_from_file(
                File::from(std::os::fd::OwnedFd::from(guest)),
                [2, 0x42, 10, 0, 0, 2],
                MTU,
            )
            .unwrap();
            let rx = Rings { base: 0 };
            let tx = Rings { base: 0x8000 };
            let (offered_rx, indirect_rx) = write_queue(&mem, &rx, &mut inp);
            let (offered_tx, indirect_tx) = write_queue(&mem, &tx, &mut inp);
            let mut queues = vec![rx.create_queue(), tx.create_queue()];
            // Frames from the host side: some ordinary, some larger than any guest buffer.
            for _ in 0..usize::from(inp.u8() % 4) {
                let len = if inp.u8() < 32 {
                    9000
                } else {
                    usize::from(inp.u16() % 1600)
                };
                let frame = inp.bytes(len.min(64));
                let mut full = frame.clone();
                full.resize(len, 0xab);
                let _ = host.send(&full);
            }
            fill_memory(&mem, &mut inp);
            let _ = dev.process_queue(1, &mut queues, &mem);
            let _ = dev.process_host_event(&mut queues, &mem);
            let _ = dev.process_queue(0, &mut queues, &mem);
            let mut sink = vec![0u8; 1 << 17];
            while let Ok(n) = host.recv(&mut sink) {
                assert!(
                    n <= usize::from(MTU) + 18 && n >= 14,
                    "the device sent the host a {n}-byte frame"
                );
            }
            if !(indirect_rx || indirect_tx) {
                assert_used_within_offered(&mem, &[(&rx, offered_rx), (&tx, offered_tx)]);
            }
            if !indirect_rx {
                // Every receive chain the device returned holds a header and a frame.
                let used = rx.used_addr().0;
                let used_idx: u16 = mem.read_obj(GuestAddress(used + 2)).unwrap();
                for i in 0..u64::from(used_idx.min(QSIZE)) {
                    let len: u32 = mem.read_obj(GuestAddress(used + 4 + i * 8 + 4)).unwrap();
                    assert!(len as usize >= HEADER_LEN, "a used rx chain of {len} bytes");
                }
            }
        }
        _ => {
            let (host, guest) = UnixStream::pair().unwrap();
            host.set_nonblocking(true).unwrap();
            let mut dev = Console::new(guest).unwrap();
            let rx = Rings { base: 0 };
            let tx = Rings { base: 0x8000 };
            let (offered_rx, indirect_rx) = write_queue(&mem, &rx, &mut inp);
            let (offered_tx, indirect_tx) = write_queue(&mem, &tx, &mut inp);
            let mut queues = vec![rx.create_queue(), tx.create_queue()];
            let host_len = usize::from(inp.u8()) * 8;
            let host_bytes = inp.bytes(host_len);
            fill_memory(&mem, &mut inp);
            let _ = (&host).write(&host_bytes);
            let _ = dev.process_queue(1, &mut queues, &mem);
            let _ = dev.process_host_event(&mut queues, &mem);
            let _ = dev.process_queue(0, &mut queues, &mem);
            let mut sink = vec![0u8; 1 << 17];
            let _ = (&host).read(&mut sink);
            if !(indirect_rx || indirect_tx) {
                assert_used_within_offered(&mem, &[(&rx, offered_rx), (&tx, offered_tx)]);
            }
        }
    }
}
