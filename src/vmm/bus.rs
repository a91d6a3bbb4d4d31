//! Address-range dispatch of port I/O and MMIO exits to devices.
//!
//! A guest access is delivered only when it lies entirely inside one device's range; anything
//! else (unmapped, straddling two devices, or overflowing the address space) is refused so
//! devices never see offsets outside the window they registered.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device reachable through a bus. Offsets are relative to the registered base.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} overlaps an existing device or is empty")]
    Overlap { base: u64, len: u64 },
}

struct BusRange {
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

#[derive(Default, Clone)]
pub struct Bus {
    devices: Arc<BTreeMap<u64, Arc<BusRange>>>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Register `device` for `[base, base + len)`. Must be called before the bus is shared
    /// with vCPU threads (clones taken earlier do not see later insertions).
    pub fn insert(
        &mut self,
        device: Arc<Mutex<dyn BusDevice>>,
        base: u64,
        len: u64,
    ) -> Result<(), BusError> {
        let overlap = BusError::Overlap { base, len };
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(overlap.clone())?;
        if let Some((&prev_base, prev)) = self.devices.range(..end).next_back() {
            if prev_base + prev.len > base {
                return Err(overlap);
            }
        }
        let mut map = (*self.devices).clone();
        map.insert(base, Arc::new(BusRange { len, device }));
        self.devices = Arc::new(map);
        Ok(())
    }

    fn resolve(&self, addr: u64, access_len: usize) -> Option<(&BusRange, u64)> {
        let (&base, entry) = self.devices.range(..=addr).next_back()?;
        let offset = addr - base;
        let end = offset.checked_add(access_len as u64)?;
        (access_len > 0 && end <= entry.len).then_some((entry, offset))
    }

    /// Deliver a read. Returns false (and leaves `data` untouched) when nothing is mapped.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((range, offset)) => {
                lock(&range.device).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Deliver a write. Returns false when nothing is mapped.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((range, offset)) => {
                lock(&range.device).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Device state stays consistent across a panic in another thread (every handler finishes its
/// register update before returning), so a poisoned lock is still usable.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        reads: Vec<(u64, usize)>,
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            self.reads.push((offset, data.len()));
            data.fill(0xab);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_inside_range_with_relative_offset() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new();
        bus.insert(dev.clone(), 0x1000, 0x200).unwrap();
        let mut buf = [0u8; 4];
        assert!(bus.read(0x1000, &mut buf));
        assert_eq!(buf, [0xab; 4]);
        assert!(bus.write(0x11fc, &[1, 2, 3, 4]));
        let d = dev.lock().unwrap();
        assert_eq!(d.reads, vec![(0, 4)]);
        assert_eq!(d.writes, vec![(0x1fc, vec![1, 2, 3, 4])]);
    }

    #[test]
    fn refuses_accesses_outside_or_straddling_the_range() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new();
        bus.insert(dev.clone(), 0x1000, 0x200).unwrap();
        let mut buf = [0u8; 4];
        assert!(!bus.read(0xfff, &mut buf));
        assert!(!bus.read(0x1200, &mut buf));
        assert!(!bus.read(0x11fe, &mut buf), "access straddling the end");
        assert!(!bus.write(u64::MAX - 1, &[0; 4]), "address overflow");
        assert!(!bus.write(0x1000, &[]));
        let d = dev.lock().unwrap();
        assert!(d.reads.is_empty() && d.writes.is_empty());
    }

    #[test]
    fn rejects_overlapping_and_empty_ranges() {
        let mut bus = Bus::new();
        bus.insert(Arc::new(Mutex::new(Recorder::default())), 0x1000, 0x200)
            .unwrap();
        for (base, len) in [(0x1100, 0x10), (0xf00, 0x101), (0x1000, 0x200), (0x3000, 0)] {
            let err = bus
                .insert(Arc::new(Mutex::new(Recorder::default())), base, len)
                .unwrap_err();
            assert_eq!(err, BusError::Overlap { base, len });
        }
        bus.insert(Arc::new(Mutex::new(Recorder::default())), 0x1200, 0x10)
            .unwrap();
        assert!(bus
            .insert(Arc::new(Mutex::new(Recorder::default())), u64::MAX, 2)
            .is_err());
    }
}
