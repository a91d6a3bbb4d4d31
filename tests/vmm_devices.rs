//! T0: virtio-blk, virtio-console, virtio-net and the virtio-mmio transport driven from the driver side
//! with virtio-queue's MockSplitQueue, including hostile descriptor chains. No privileges.

use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::Arc;

use husk::vmm::bus::BusDevice;
use husk::vmm::devices::virtio_block::{block_from_file, Block};
use husk::vmm::devices::virtio_console::{Console, RX_QUEUE, TX_QUEUE};
use husk::vmm::devices::virtio_mmio::{reg, status, MmioTransport, MMIO_MAGIC_VALUE};
use husk::vmm::devices::virtio_net::{self, net_from_file, Net};
use husk::vmm::devices::{Interrupt, VirtioDevice, VIRTIO_F_VERSION_1, VIRTIO_MMIO_INT_VRING};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Descriptor, Queue};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const MEM_SIZE: usize = 4 << 20;
const QSIZE: u16 = 16;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;

const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const STATUS: u64 = 0x30_0000;

fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

/// Link `(addr, len, writable)` buffers into one chain starting at descriptor `first`.
fn chain(first: u16, bufs: &[(u64, u32, bool)]) -> Vec<Descriptor> {
    bufs.iter()
        .enumerate()
        .map(|(i, &(addr, len, w))| {
            let last = i + 1 == bufs.len();
            let flags = if w { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            Descriptor::new(
                addr,
                len,
                flags,
                if last { 0 } else { first + i as u16 + 1 },
            )
        })
        .collect()
}

fn write_header(mem: &GuestMemoryMmap, at: u64, req: u32, sector: u64) {
    mem.write_obj(req, GuestAddress(at)).unwrap();
    mem.write_obj(0u32, GuestAddress(at + 4)).unwrap();
    mem.write_obj(sector, GuestAddress(at + 8)).unwrap();
}

fn disk(len: u64, read_only: bool) -> (tempfile::NamedTempFile, Block) {
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut content: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    content.truncate(len as usize);
    std::fs::write(file.path(), &content).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(file.path())
        .unwrap();
    let blk = block_from_file(f, read_only, b"husk-test-serial").unwrap();
    (file, blk)
}

/// Put one chain in the ring, run the device, return (used len, status byte).
fn run_one(blk: &mut Block, mem: &GuestMemoryMmap, descs: &[Descriptor]) -> (u32, u8) {
    let mock = MockSplitQueue::new(mem, QSIZE);
    mock.add_desc_chains(descs, 0).unwrap();
    let mut queues = vec![mock.create_queue::<Queue>().unwrap()];
    mem.write_obj(0xeeu8, GuestAddress(STATUS)).unwrap();
    let notify = blk.process_queue(0, &mut queues, mem).unwrap();
    assert!(notify, "a used chain must be signalled");
    let used = mock.used().ring().ref_at(0).unwrap().load();
    assert_eq!(used.id(), 0);
    assert_eq!(mock.used().idx().load(), 1, "exactly one chain returned");
    (used.len(), mem.read_obj(GuestAddress(STATUS)).unwrap())
}

#[test]
fn blk_write_then_read_round_trips_through_the_file() {
    let mem = guest_memory();
    let (file, mut blk) = disk(64 * 512, false);
    let payload: Vec<u8> = (0..1024u32).map(|i| (i * 7 % 256) as u8).collect();
    mem.write_slice(&payload, GuestAddress(DATA)).unwrap();
    write_header(&mem, HDR, T_OUT, 2);
    let out = chain(
        0,
        &[(HDR, 16, false), (DATA, 1024, false), (STATUS, 1, true)],
    );
    assert_eq!(run_one(&mut blk, &mem, &out), (1, S_OK));
    let on_disk = std::fs::read(file.path()).unwrap();
    assert_eq!(&on_disk[1024..2048], &payload[..]);

    // Read it back into two buffers (scatter).
    write_header(&mem, HDR, T_IN, 2);
    let inp = chain(
        0,
        &[
            (HDR, 16, false),
            (DATA + 0x10000, 512, true),
            (DATA + 0x20000, 512, true),
            (STATUS, 1, true),
        ],
    );
    assert_eq!(run_one(&mut blk, &mem, &inp), (1025, S_OK));
    let mut back = vec![0u8; 1024];
    mem.read_slice(&mut back[..512], GuestAddress(DATA + 0x10000))
        .unwrap();
    mem.read_slice(&mut back[512..], GuestAddress(DATA + 0x20000))
        .unwrap();
    assert_eq!(back, payload);
}

#[test]
fn blk_flush_get_id_and_unsupported() {
    let mem = guest_memory();
    let (_f, mut blk) = disk(8 * 512, false);
    write_header(&mem, HDR, T_FLUSH, 0);
    assert_eq!(
        run_one(
            &mut blk,
            &mem,
            &chain(0, &[(HDR, 16, false), (STATUS, 1, true)])
        ),
        (1, S_OK)
    );

    write_header(&mem, HDR, T_GET_ID, 0);
    let c = chain(0, &[(HDR, 16, false), (DATA, 20, true), (STATUS, 1, true)]);
    assert_eq!(
        run_one(&mut blk, &mem, &c),
        (21, S_OK),
        "20 id bytes, zero padded"
    );
    let mut id = [0u8; 20];
    mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id[..16], b"husk-test-serial");

    write_header(&mem, HDR, 0x1234, 0);
    assert_eq!(
        run_one(
            &mut blk,
            &mem,
            &chain(0, &[(HDR, 16, false), (STATUS, 1, true)])
        ),
        (1, S_UNSUPP)
    );
}

#[test]
fn blk_read_only_disk_refuses_writes() {
    let mem = guest_memory();
    let (file, mut blk) = disk(8 * 512, true);
    assert_ne!(
        blk.device_features() & (1 << 5),
        0,
        "VIRTIO_BLK_F_RO offered"
    );
    let before = std::fs::read(file.path()).unwrap();
    mem.write_slice(&[0xaa; 512], GuestAddress(DATA)).unwrap();
    write_header(&mem, HDR, T_OUT, 0);
    let c = chain(
        0,
        &[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)],
    );
    assert_eq!(run_one(&mut blk, &mem, &c), (1, S_IOERR));
    assert_eq!(std::fs::read(file.path()).unwrap(), before);
}

#[test]
fn blk_hostile_chains_get_errors_not_panics() {
    let mem = guest_memory();
    let (file, mut blk) = disk(8 * 512, false);
    let before = std::fs::read(file.path()).unwrap();
    let outside = MEM_SIZE as u64 + 0x1000;

    // Too short: a lone header, no status byte to answer in.
    write_header(&mem, HDR, T_IN, 0);
    assert_eq!(run_one(&mut blk, &mem, &chain(0, &[(HDR, 16, false)])).0, 0);
    // Status descriptor not device-writable: dropped, status byte untouched.
    assert_eq!(
        run_one(
            &mut blk,
            &mem,
            &chain(0, &[(HDR, 16, false), (STATUS, 1, false)])
        ),
        (0, 0xee)
    );
    // Header in the wrong direction, or too short.
    assert_eq!(
        run_one(
            &mut blk,
            &mem,
            &chain(0, &[(HDR, 16, true), (STATUS, 1, true)])
        ),
        (1, S_IOERR)
    );
    assert_eq!(
        run_one(
            &mut blk,
            &mem,
            &chain(0, &[(HDR, 8, false), (STATUS, 1, true)])
        ),
        (1, S_IOERR)
    );
    // IN into a device-readable buffer (wrong direction).
    let c = chain(
        0,
        &[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)],
    );
    assert_eq!(run_one(&mut blk, &mem, &c), (1, S_IOERR));
    // Sector past the end, and a sector that overflows when the length is added.
    for sector in [8, 7 + 1, u64::MAX] {
        write_header(&mem, HDR, T_IN, sector);
        let c = chain(0, &[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
        assert_eq!(run_one(&mut blk, &mem, &c), (1, S_IOERR), "sector {sector}");
    }
    // Length not a whole sector.
    write_header(&mem, HDR, T_IN, 0);
    let c = chain(0, &[(HDR, 16, false), (DATA, 100, true), (STATUS, 1, true)]);
    assert_eq!(run_one(&mut blk, &mem, &c), (1, S_IOERR));
    // Data buffer outside guest memory, or straddling its end.
    for addr in [outside, MEM_SIZE as u64 - 256] {
        write_header(&mem, HDR, T_IN, 0);
        let c = chain(0, &[(HDR, 16, false), (addr, 512, true), (STATUS, 1, true)]);
        assert_eq!(run_one(&mut blk, &mem, &c), (1, S_IOERR));
    }
    // Absurd length.
    write_header(&mem, HDR, T_OUT, 0);
    let c = chain(
        0,
        &[
            (HDR, 16, false),
            (DATA, 0xffff_fe00, false),
            (STATUS, 1, true),
        ],
    );
    assert_eq!(run_one(&mut blk, &mem, &c), (1, S_IOERR));
    // Header outside guest memory.
    let c = chain(0, &[(outside, 16, false), (STATUS, 1, true)]);
    assert_eq!(run_one(&mut blk, &mem, &c), (1, S_IOERR));
    // Status byte outside guest memory: nothing to answer in, chain dropped.
    write_header(&mem, HDR, T_FLUSH, 0);
    let c = chain(0, &[(HDR, 16, false), (outside, 1, true)]);
    assert_eq!(run_one(&mut blk, &mem, &c).0, 0);
    assert_eq!(
        std::fs::read(file.path()).unwrap(),
        before,
        "no hostile chain wrote the disk"
    );
}

#[test]
fn blk_descriptor_loop_terminates() {
    let mem = guest_memory();
    let (_f, mut blk) = disk(8 * 512, false);
    write_header(&mem, HDR, T_IN, 0);
    // 0 -> 1 -> 0 -> ...: the chain iterator stops after the queue size.
    let descs = [
        Descriptor::new(HDR, 16, F_NEXT, 1),
        Descriptor::new(DATA, 512, F_NEXT | F_WRITE, 0),
    ];
    let (len, _status) = run_one(&mut blk, &mem, &descs);
    assert!(len <= 1, "a looping chain must not be served as a transfer");
}

#[test]
fn blk_avail_index_running_ahead_is_a_queue_error() {
    let mem = guest_memory();
    let (_f, mut blk) = disk(8 * 512, false);
    let mock = MockSplitQueue::new(&mem, QSIZE);
    let mut queues = vec![mock.create_queue::<Queue>().unwrap()];
    mock.avail().idx().store(QSIZE * 10);
    assert!(blk.process_queue(0, &mut queues, &mem).is_err());
    // Out-of-range queue index is ignored.
    assert!(!blk.process_queue(7, &mut queues, &mem).unwrap());
}

#[test]
fn console_moves_bytes_both_ways_with_back_pressure() {
    let mem = guest_memory();
    let (host, guest_end) = UnixStream::pair().unwrap();
    let mut con = Console::new(guest_end).unwrap();
    let rx_mock = MockSplitQueue::create(&mem, GuestAddress(0), QSIZE);
    let tx_mock = MockSplitQueue::create(&mem, GuestAddress(0x8000), QSIZE);
    let mut queues = vec![
        rx_mock.create_queue::<Queue>().unwrap(),
        tx_mock.create_queue::<Queue>().unwrap(),
    ];

    // Host -> guest with no receive buffers posted: nothing consumed, socket not watched.
    (&host).write_all(b"ping").unwrap();
    assert!(!con.process_host_event(&mut queues, &mem).unwrap());
    assert!(
        !con.host_interest().readable,
        "stop reading the socket without rx buffers"
    );

    // The guest posts a buffer and notifies: the pending bytes arrive.
    rx_mock
        .add_desc_chains(&chain(0, &[(DATA, 64, true)]), 0)
        .unwrap();
    assert!(con.process_queue(RX_QUEUE, &mut queues, &mem).unwrap());
    let used = rx_mock.used().ring().ref_at(0).unwrap().load();
    assert_eq!(used.len(), 4);
    let mut got = [0u8; 4];
    mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(&got, b"ping");

    // Guest -> host.
    mem.write_slice(b"pong", GuestAddress(DATA + 0x1000))
        .unwrap();
    tx_mock
        .add_desc_chains(&chain(0, &[(DATA + 0x1000, 4, false)]), 0)
        .unwrap();
    assert!(con.process_queue(TX_QUEUE, &mut queues, &mem).unwrap());
    let mut buf = [0u8; 4];
    (&host).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");

    // A tx buffer outside guest memory is consumed without reading host memory.
    tx_mock
        .add_desc_chains(&chain(1, &[(MEM_SIZE as u64 * 2, 4096, false)]), 1)
        .unwrap();
    assert!(con.process_queue(TX_QUEUE, &mut queues, &mem).unwrap());
    assert_eq!(tx_mock.used().idx().load(), 2);
}

/// A net device over a datagram socket (frame boundaries kept, as on a tap) and its rings.
fn net_device(
    mem: &GuestMemoryMmap,
) -> (UnixDatagram, Net, [MockSplitQueue<'_, GuestMemoryMmap>; 2]) {
    let (host, guest_end) = UnixDatagram::pair().unwrap();
    host.set_nonblocking(true).unwrap();
    let net = net_from_file(
        std::fs::File::from(std::os::fd::OwnedFd::from(guest_end)),
        [0x02, 0x42, 10, 87, 0, 2],
        1500,
    )
    .unwrap();
    let rx = MockSplitQueue::create(mem, GuestAddress(0), QSIZE);
    let tx = MockSplitQueue::create(mem, GuestAddress(0x8000), QSIZE);
    (host, net, [rx, tx])
}

#[test]
fn net_config_space_has_the_mac_and_mtu_and_no_offloads() {
    let mem = guest_memory();
    let (_host, net, _) = net_device(&mem);
    let mut config = [0u8; 12];
    net.read_config(0, &mut config);
    assert_eq!(&config[..6], &[0x02, 0x42, 10, 87, 0, 2]);
    assert_eq!(u16::from_le_bytes([config[10], config[11]]), 1500);
    // VERSION_1, MAC (5) and MTU (3) only: no checksum or segmentation offload to honour.
    assert_eq!(
        net.device_features(),
        VIRTIO_F_VERSION_1 | (1 << 5) | (1 << 3)
    );
}

#[test]
fn net_moves_frames_both_ways_without_the_virtio_header_on_the_host() {
    let mem = guest_memory();
    let (host, mut net, [rx, tx]) = net_device(&mem);
    let mut queues = vec![
        rx.create_queue::<Queue>().unwrap(),
        tx.create_queue::<Queue>().unwrap(),
    ];
    // Guest -> host: header and frame in two descriptors; the host sees the frame only.
    let frame: Vec<u8> = (0..60u8).collect();
    mem.write_slice(&[0u8; virtio_net::HEADER_LEN], GuestAddress(DATA))
        .unwrap();
    mem.write_slice(&frame, GuestAddress(DATA + 0x100)).unwrap();
    tx.add_desc_chains(
        &chain(0, &[(DATA, 12, false), (DATA + 0x100, 60, false)]),
        0,
    )
    .unwrap();
    assert!(net
        .process_queue(virtio_net::TX_QUEUE, &mut queues, &mem)
        .unwrap());
    let mut got = [0u8; 2048];
    assert_eq!(host.recv(&mut got).unwrap(), 60);
    assert_eq!(&got[..60], &frame[..]);

    // Host -> guest with no buffers posted: nothing taken, the tap no longer watched.
    host.send(&frame).unwrap();
    assert!(!net.process_host_event(&mut queues, &mem).unwrap());
    assert!(!net.host_interest().readable);
    // A buffer arrives: header (num_buffers = 1) and the frame in it.
    rx.add_desc_chains(&chain(0, &[(DATA + 0x1000, 1526, true)]), 0)
        .unwrap();
    assert!(net
        .process_queue(virtio_net::RX_QUEUE, &mut queues, &mem)
        .unwrap());
    let used = rx.used().ring().ref_at(0).unwrap().load();
    assert_eq!(used.len(), 12 + 60);
    let mut header = [0xffu8; 12];
    mem.read_slice(&mut header, GuestAddress(DATA + 0x1000))
        .unwrap();
    assert_eq!(header, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    let mut body = [0u8; 60];
    mem.read_slice(&mut body, GuestAddress(DATA + 0x1000 + 12))
        .unwrap();
    assert_eq!(&body[..], &frame[..]);
}

#[test]
fn net_hostile_chains_are_dropped_not_sent_or_half_written() {
    let mem = guest_memory();
    let (host, mut net, [rx, tx]) = net_device(&mem);
    let mut queues = vec![
        rx.create_queue::<Queue>().unwrap(),
        tx.create_queue::<Queue>().unwrap(),
    ];
    // Transmit: longer than one frame, a writable descriptor, outside memory, too short.
    let bad = [
        chain(0, &[(DATA, 12, false), (DATA + 0x100, 9000, false)]),
        chain(2, &[(DATA, 12, false), (DATA + 0x100, 60, true)]),
        chain(4, &[(MEM_SIZE as u64 * 2, 72, false)]),
        chain(5, &[(DATA, 20, false)]),
    ];
    tx.add_desc_chains(&bad.concat(), 0).unwrap();
    assert!(net
        .process_queue(virtio_net::TX_QUEUE, &mut queues, &mem)
        .unwrap());
    assert_eq!(tx.used().idx().load(), 4, "every chain is returned");
    let mut got = [0u8; 16];
    assert!(host.recv(&mut got).is_err(), "nothing reached the host");
    assert_eq!(net.drops().bad_tx_chains, 4);

    // Receive: a frame larger than the posted buffer is dropped, the buffer kept for the
    // next frame, which fits.
    rx.add_desc_chains(&chain(0, &[(DATA + 0x1000, 100, true)]), 0)
        .unwrap();
    mem.write_slice(&[0xeeu8; 100], GuestAddress(DATA + 0x1000))
        .unwrap();
    host.send(&[0x11u8; 1000]).unwrap();
    host.send(&[0x22u8; 50]).unwrap();
    assert!(net
        .process_queue(virtio_net::RX_QUEUE, &mut queues, &mem)
        .unwrap());
    assert_eq!(rx.used().idx().load(), 1);
    assert_eq!(rx.used().ring().ref_at(0).unwrap().load().len(), 62);
    let mut body = [0u8; 88];
    mem.read_slice(&mut body, GuestAddress(DATA + 0x1000 + 12))
        .unwrap();
    assert_eq!(&body[..50], &[0x22u8; 50][..], "the second frame, whole");
    assert_eq!(
        &body[50..],
        &[0xeeu8; 38][..],
        "nothing of the first one past it"
    );
    assert_eq!(net.drops().rx_too_large, 1);
}

fn transport() -> (
    GuestMemoryMmap,
    MmioTransport,
    Arc<Interrupt>,
    tempfile::NamedTempFile,
) {
    let mem = guest_memory();
    let (f, blk) = disk(16 * 512, false);
    let irq = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
    let t = MmioTransport::new(Box::new(blk), mem.clone(), irq.clone());
    (mem, t, irq, f)
}

fn rd(t: &mut MmioTransport, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

fn wr(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

fn negotiate(t: &mut MmioTransport) {
    wr(t, reg::STATUS, status::ACKNOWLEDGE);
    wr(t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    wr(t, reg::DRIVER_FEATURES_SEL, 1);
    wr(t, reg::DRIVER_FEATURES, (VIRTIO_F_VERSION_1 >> 32) as u32);
    wr(t, reg::DRIVER_FEATURES_SEL, 0);
    wr(t, reg::DRIVER_FEATURES, 1 << 9);
    wr(
        t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
}

#[test]
fn mmio_identity_registers_and_config_space() {
    let (_m, mut t, _i, _f) = transport();
    assert_eq!(rd(&mut t, reg::MAGIC_VALUE), MMIO_MAGIC_VALUE);
    assert_eq!(rd(&mut t, reg::VERSION), 2);
    assert_eq!(rd(&mut t, reg::DEVICE_ID), 2);
    wr(&mut t, reg::DEVICE_FEATURES_SEL, 1);
    assert_eq!(
        rd(&mut t, reg::DEVICE_FEATURES),
        1,
        "VIRTIO_F_VERSION_1 in word 1"
    );
    assert_eq!(rd(&mut t, reg::QUEUE_NUM_MAX), 256);
    let mut cap = [0u8; 8];
    t.read(reg::CONFIG, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 16, "capacity in sectors");
    let mut past = [0xffu8; 4];
    t.read(reg::CONFIG + 0x80, &mut past);
    assert_eq!(past, [0; 4]);
    // Sub-word access to registers reads zero instead of a torn value.
    let mut half = [0xffu8; 2];
    t.read(reg::MAGIC_VALUE, &mut half);
    assert_eq!(half, [0, 0]);
}

#[test]
fn mmio_status_state_machine() {
    let (_m, mut t, _i, _f) = transport();
    negotiate(&mut t);
    assert_ne!(t.device_status() & status::FEATURES_OK, 0);

    // Reset, then skip steps: DEVICE_NEEDS_RESET.
    wr(&mut t, reg::STATUS, 0);
    assert_eq!(t.device_status(), 0);
    wr(
        &mut t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK,
    );
    assert_ne!(t.device_status() & status::DEVICE_NEEDS_RESET, 0);

    // Features the device did not offer: FEATURES_OK stays clear (refused).
    wr(&mut t, reg::STATUS, 0);
    wr(&mut t, reg::STATUS, status::ACKNOWLEDGE);
    wr(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    wr(&mut t, reg::DRIVER_FEATURES_SEL, 0);
    wr(&mut t, reg::DRIVER_FEATURES, 1 << 6);
    wr(
        &mut t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_eq!(t.device_status() & status::FEATURES_OK, 0);

    // Queue setup before FEATURES_OK is a protocol violation.
    wr(&mut t, reg::STATUS, 0);
    wr(&mut t, reg::STATUS, status::ACKNOWLEDGE);
    wr(&mut t, reg::QUEUE_NUM, 16);
    assert_ne!(t.device_status() & status::DEVICE_NEEDS_RESET, 0);

    // DRIVER_OK with a ready queue whose rings lie outside guest memory.
    wr(&mut t, reg::STATUS, 0);
    negotiate(&mut t);
    wr(&mut t, reg::QUEUE_SEL, 0);
    wr(&mut t, reg::QUEUE_NUM, 16);
    wr(&mut t, reg::QUEUE_DESC_LOW, 0);
    wr(&mut t, reg::QUEUE_DESC_HIGH, 0x10);
    wr(&mut t, reg::QUEUE_READY, 1);
    wr(
        &mut t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
    );
    assert_ne!(t.device_status() & status::DEVICE_NEEDS_RESET, 0);
    assert!(!t.is_activated());

    // Selecting a queue that does not exist and configuring it.
    wr(&mut t, reg::STATUS, 0);
    negotiate(&mut t);
    wr(&mut t, reg::QUEUE_SEL, 5);
    assert_eq!(rd(&mut t, reg::QUEUE_NUM_MAX), 0);
    wr(&mut t, reg::QUEUE_NUM, 16);
    assert_ne!(t.device_status() & status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn mmio_full_setup_notify_interrupt_and_ack() {
    let (mem, mut t, irq, _f) = transport();
    let mock = MockSplitQueue::new(&mem, QSIZE);
    negotiate(&mut t);
    wr(&mut t, reg::QUEUE_SEL, 0);
    wr(&mut t, reg::QUEUE_NUM, u32::from(QSIZE));
    wr(&mut t, reg::QUEUE_DESC_LOW, mock.desc_table_addr().0 as u32);
    wr(&mut t, reg::QUEUE_DRIVER_LOW, mock.avail_addr().0 as u32);
    wr(&mut t, reg::QUEUE_DEVICE_LOW, mock.used_addr().0 as u32);
    wr(&mut t, reg::QUEUE_READY, 1);
    assert_eq!(rd(&mut t, reg::QUEUE_READY), 1);
    wr(
        &mut t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
    );
    assert!(t.is_activated());
    // Queue registers are frozen after DRIVER_OK.
    wr(&mut t, reg::QUEUE_NUM, 8);
    assert_ne!(t.device_status() & status::DEVICE_NEEDS_RESET, 0);
    wr(&mut t, reg::STATUS, 0);
    assert_eq!(
        irq.eventfd().read().unwrap(),
        1,
        "config interrupt for the violation"
    );

    // Again, cleanly, then a request.
    negotiate(&mut t);
    wr(&mut t, reg::QUEUE_SEL, 0);
    wr(&mut t, reg::QUEUE_NUM, u32::from(QSIZE));
    wr(&mut t, reg::QUEUE_DESC_LOW, mock.desc_table_addr().0 as u32);
    wr(&mut t, reg::QUEUE_DRIVER_LOW, mock.avail_addr().0 as u32);
    wr(&mut t, reg::QUEUE_DEVICE_LOW, mock.used_addr().0 as u32);
    wr(&mut t, reg::QUEUE_READY, 1);
    wr(
        &mut t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
    );
    assert!(t.is_activated());
    write_header(&mem, HDR, T_FLUSH, 0);
    mock.add_desc_chains(&chain(0, &[(HDR, 16, false), (STATUS, 1, true)]), 0)
        .unwrap();
    wr(&mut t, reg::QUEUE_NOTIFY, 0);
    assert_eq!(mock.used().idx().load(), 1);
    assert_eq!(rd(&mut t, reg::INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
    assert_eq!(irq.eventfd().read().unwrap(), 1, "irqfd signalled");
    wr(&mut t, reg::INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
    assert_eq!(rd(&mut t, reg::INTERRUPT_STATUS), 0);

    // A ring the driver corrupts (avail index too far ahead) makes the device need a reset
    // and raises a config interrupt.
    mock.avail().idx().store(1000);
    wr(&mut t, reg::QUEUE_NOTIFY, 0);
    assert_ne!(t.device_status() & status::DEVICE_NEEDS_RESET, 0);
    assert_ne!(rd(&mut t, reg::INTERRUPT_STATUS) & 2, 0);
    assert!(!t.is_activated());
}
