//! The 8250 UART at COM1 (0x3f8, IRQ 4), vm-superio's emulation. Its output is the guest's
//! console: discarded by default, or a file, or the terminal (`--debug`). Output is also
//! watched for the kernel's panic banner so a panic-triggered reset can be told from a clean one.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vm_superio::Serial as Uart;
use vmm_sys_util::eventfd::EventFd;

use super::i8042::EventFdTrigger;
use crate::vmm::bus::BusDevice;

pub const SERIAL_PIO_BASE: u64 = 0x3f8;
pub const SERIAL_PIO_LEN: u64 = 8;
pub const SERIAL_IRQ: u32 = 4;

const PANIC_BANNER: &[u8] = b"Kernel panic - not syncing";

/// Passes the guest console through to `out` and raises `panicked` when the kernel's panic
/// banner goes by (across write boundaries).
pub struct ConsoleWriter {
    out: Option<Box<dyn Write + Send>>,
    tail: Vec<u8>,
    panicked: Arc<AtomicBool>,
    /// Bytes the sink may still take: a guest printing without end must not fill the host's
    /// disk. None: no bound (a terminal).
    room: Option<u64>,
}

/// Written once, when the bound is reached.
pub const TRUNCATED_NOTE: &[u8] = b"\n[husk: serial console output truncated here]\n";

impl ConsoleWriter {
    /// `limit`: how many bytes of guest output `out` takes in all (the note of truncation
    /// comes on top); panics are still noticed after it.
    pub fn new(
        out: Option<Box<dyn Write + Send>>,
        panicked: Arc<AtomicBool>,
        limit: Option<u64>,
    ) -> Self {
        ConsoleWriter {
            out,
            tail: Vec::with_capacity(2 * PANIC_BANNER.len()),
            panicked,
            room: limit,
        }
    }
}

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            self.tail.push(b);
            if self.tail.ends_with(PANIC_BANNER) {
                self.panicked.store(true, Ordering::SeqCst);
            }
            if self.tail.len() >= 2 * PANIC_BANNER.len() {
                self.tail.drain(..PANIC_BANNER.len());
            }
        }
        if let Some(out) = self.out.as_mut() {
            let take = match self.room {
                None => buf.len(),
                Some(room) => buf.len().min(usize::try_from(room).unwrap_or(usize::MAX)),
            };
            // A broken console sink (closed terminal, full disk) must not stop the guest.
            let _ = out.write_all(&buf[..take]);
            if let Some(room) = self.room.as_mut() {
                *room -= take as u64;
                if *room == 0 {
                    // Nothing more will be written: say so and close the sink.
                    let _ = out.write_all(TRUNCATED_NOTE);
                    let _ = out.flush();
                    self.out = None;
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(out) = self.out.as_mut() {
            let _ = out.flush();
        }
        Ok(())
    }
}

pub struct Serial {
    uart: Uart<EventFdTrigger, vm_superio::serial::NoEvents, ConsoleWriter>,
}

impl Serial {
    /// `irq_evt` is the irqfd for IRQ 4.
    pub fn new(irq_evt: EventFd, out: ConsoleWriter) -> Self {
        Serial {
            uart: Uart::new(EventFdTrigger(irq_evt), out),
        }
    }
}

impl Serial {
    /// Queue host input (the terminal, with `--debug`) for the guest to read; returns how many
    /// bytes fit the 64-byte receive FIFO (the rest is dropped: a debug console, not a channel).
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        self.uart.enqueue_raw_bytes(bytes).unwrap_or(0)
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Ok(off), [byte]) = (u8::try_from(offset), data) {
            *byte = self.uart.read(off);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(off), [byte]) = (u8::try_from(offset), data) {
            if let Err(err) = self.uart.write(off, *byte) {
                log::warn!("serial: {err}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn guest_bytes_reach_the_sink_and_panic_banner_is_noticed() {
        let sink = Arc::new(Mutex::new(Vec::new()));
        let panicked = Arc::new(AtomicBool::new(false));
        let writer =
            ConsoleWriter::new(Some(Box::new(Shared(sink.clone()))), panicked.clone(), None);
        let mut serial = Serial::new(
            EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).unwrap(),
            writer,
        );
        for b in b"hello\n[ 1.0] Kernel pan" {
            serial.write(0, &[*b]);
        }
        assert!(!panicked.load(Ordering::SeqCst));
        for b in b"ic - not syncing: VFS" {
            serial.write(0, &[*b]);
        }
        assert!(panicked.load(Ordering::SeqCst));
        assert!(sink.lock().unwrap().starts_with(b"hello\n"));
        // Multi-byte and out-of-window accesses are ignored, not misinterpreted.
        serial.write(0, b"xy");
        serial.write(0x1_0000, b"z");
        assert!(!sink.lock().unwrap().ends_with(b"z"));
    }

    #[test]
    fn a_guest_printing_without_end_is_cut_at_the_limit_and_panics_still_count() {
        let sink = Arc::new(Mutex::new(Vec::new()));
        let panicked = Arc::new(AtomicBool::new(false));
        let mut writer = ConsoleWriter::new(
            Some(Box::new(Shared(sink.clone()))),
            panicked.clone(),
            Some(10),
        );
        writer.write_all(b"0123456").unwrap();
        writer.write_all(b"789abc").unwrap();
        writer.write_all(b"more and more").unwrap();
        let mut want = b"0123456789".to_vec();
        want.extend_from_slice(TRUNCATED_NOTE);
        assert_eq!(*sink.lock().unwrap(), want);
        writer.write_all(b"Kernel panic - not syncing").unwrap();
        assert!(panicked.load(Ordering::SeqCst));
        assert_eq!(*sink.lock().unwrap(), want);
    }
}
