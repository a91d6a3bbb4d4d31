//! VM exits, counted. Every exit is a world switch (and under nested virtualization several),
//! so the monitor counts the exits that reach it by reason and by the device they were for,
//! and reads KVM's own per-vCPU statistics for the exits the kernel handles without us
//! (interrupt windows, halts, MSR and APIC accesses, ...).

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

use super::devices::i8042::{I8042_PIO_BASE, I8042_PIO_LEN};
use super::devices::serial::{SERIAL_PIO_BASE, SERIAL_PIO_LEN};

/// Where an exit to the monitor went. The port classes are the legacy devices a Linux guest
/// touches while booting; each one seen here is a candidate for a kernel option that stops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitClass {
    Serial,
    I8042,
    /// Port 0x80, written by `outb_p`-style I/O delays.
    Port80,
    /// The 8254 PIT (0x40-0x43) and the speaker gate (0x61).
    Pit,
    /// CMOS / RTC (0x70-0x71).
    Cmos,
    /// PCI configuration mechanism 1 (0xcf8-0xcff).
    PciConfig,
    OtherPort,
    VirtioMmio,
    OtherMmio,
    Hlt,
    /// KVM_RUN interrupted by a signal (the kick used to stop a vCPU).
    Interrupted,
    Other,
}

impl ExitClass {
    const ALL: [ExitClass; 12] = [
        ExitClass::Serial,
        ExitClass::I8042,
        ExitClass::Port80,
        ExitClass::Pit,
        ExitClass::Cmos,
        ExitClass::PciConfig,
        ExitClass::OtherPort,
        ExitClass::VirtioMmio,
        ExitClass::OtherMmio,
        ExitClass::Hlt,
        ExitClass::Interrupted,
        ExitClass::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ExitClass::Serial => "pio serial",
            ExitClass::I8042 => "pio i8042",
            ExitClass::Port80 => "pio port 0x80",
            ExitClass::Pit => "pio pit",
            ExitClass::Cmos => "pio cmos",
            ExitClass::PciConfig => "pio pci config",
            ExitClass::OtherPort => "pio other",
            ExitClass::VirtioMmio => "mmio virtio",
            ExitClass::OtherMmio => "mmio other",
            ExitClass::Hlt => "hlt",
            ExitClass::Interrupted => "interrupted",
            ExitClass::Other => "other",
        }
    }

    pub fn of_port(port: u16) -> Self {
        let port = u64::from(port);
        match port {
            p if (SERIAL_PIO_BASE..SERIAL_PIO_BASE + SERIAL_PIO_LEN).contains(&p) => {
                ExitClass::Serial
            }
            0x61 => ExitClass::Pit,
            p if (I8042_PIO_BASE..I8042_PIO_BASE + I8042_PIO_LEN).contains(&p) => ExitClass::I8042,
            0x80 => ExitClass::Port80,
            0x40..=0x43 => ExitClass::Pit,
            0x70..=0x71 => ExitClass::Cmos,
            0xcf8..=0xcff => ExitClass::PciConfig,
            _ => ExitClass::OtherPort,
        }
    }
}

/// Exits that reached the monitor, shared by every vCPU thread.
#[derive(Debug, Default)]
pub struct ExitCounters {
    counts: [AtomicU64; ExitClass::ALL.len()],
    /// The guest-physical window of the virtio-mmio devices, to tell their exits apart.
    virtio_window: (u64, u64),
}

impl ExitCounters {
    pub fn new(virtio_window: (u64, u64)) -> Self {
        Self {
            virtio_window,
            ..Self::default()
        }
    }

    pub fn count(&self, class: ExitClass) {
        self.counts[class as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_mmio(&self, addr: u64) {
        let (start, end) = self.virtio_window;
        self.count(if (start..end).contains(&addr) {
            ExitClass::VirtioMmio
        } else {
            ExitClass::OtherMmio
        });
    }

    /// The non-zero counts, in [`ExitClass`] order.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        ExitClass::ALL
            .iter()
            .map(|c| {
                let n = self.counts[*c as usize].load(Ordering::Relaxed);
                (c.label().to_string(), n)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// Exits counted for one run: those the monitor handled and, where the kernel offers binary
/// statistics (KVM_GET_STATS_FD, Linux 5.14+), KVM's own counters summed over the vCPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitReport {
    pub monitor: Vec<(String, u64)>,
    /// KVM's `exits` (every exit, handled in the kernel or not), each `*_exits` counter, and
    /// page faults taken, instructions emulated and hypercalls.
    pub kvm: Vec<(String, u64)>,
}

impl ExitReport {
    pub fn monitor_total(&self) -> u64 {
        self.monitor.iter().map(|(_, n)| n).sum()
    }

    /// KVM's count of every exit, when the kernel reports it.
    pub fn kvm_total(&self) -> Option<u64> {
        self.kvm.iter().find(|(k, _)| k == "exits").map(|(_, n)| *n)
    }

    /// One line: `exits: 1234 (kvm), to the monitor 56: pio serial 40, mmio virtio 16`.
    pub fn summary(&self) -> String {
        let monitor = self
            .monitor
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let kvm = self
            .kvm
            .iter()
            .filter(|(k, _)| k != "exits")
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let total = self
            .kvm_total()
            .map(|n| format!("{n} in all"))
            .unwrap_or_else(|| "KVM statistics unavailable".into());
        format!(
            "exits: {total}; to the monitor {}: {monitor}; in KVM: {kvm}",
            self.monitor_total()
        )
    }
}

/// KVM_GET_STATS_FD: _IO(KVMIO, 0xce).
const KVM_GET_STATS_FD: libc::c_ulong = 0xae << 8 | 0xce;

/// A vCPU's binary statistics file, or None when the kernel has none.
pub fn open_vcpu_stats(vcpu: &impl AsRawFd) -> Option<File> {
    // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new descriptor or -1.
    let fd = unsafe { libc::ioctl(vcpu.as_raw_fd(), KVM_GET_STATS_FD as _) };
    // SAFETY: a non-negative return is a descriptor we now own.
    (fd >= 0).then(|| unsafe { File::from_raw_fd(fd) })
}

/// The `exits` and `*_exits` counters of one statistics file (kvm_stats_header, then
/// descriptors of `name_size`-byte names, then u64 data; Documentation/virt/kvm/api.rst).
/// Anything malformed reads as no counters: statistics never stop a VM.
pub fn read_exit_stats(stats: &File) -> Vec<(String, u64)> {
    let read_u32 = |buf: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
    };
    let mut header = [0u8; 24];
    if stats.read_exact_at(&mut header, 0).is_err() {
        return Vec::new();
    }
    let (Some(name_size), Some(num_desc), Some(desc_offset), Some(data_offset)) = (
        read_u32(&header, 4),
        read_u32(&header, 8),
        read_u32(&header, 16),
        read_u32(&header, 20),
    ) else {
        return Vec::new();
    };
    // kvm_stats_desc: flags u32, exponent s16, size u16, offset u32, bucket_size u32, name.
    let desc_len = 16 + name_size as usize;
    if num_desc > 4096 || name_size > 4096 {
        return Vec::new();
    }
    let mut descs = vec![0u8; desc_len * num_desc as usize];
    if stats
        .read_exact_at(&mut descs, u64::from(desc_offset))
        .is_err()
    {
        return Vec::new();
    }
    let mut out = Vec::new();
    for desc in descs.chunks_exact(desc_len) {
        let name_bytes = &desc[16..];
        let name_end = name_bytes
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(name_bytes.len());
        let Ok(name) = std::str::from_utf8(&name_bytes[..name_end]) else {
            continue;
        };
        if !is_exit_counter(name) {
            continue;
        }
        let Some(offset) = read_u32(desc, 8) else {
            continue;
        };
        let mut value = [0u8; 8];
        if stats
            .read_exact_at(&mut value, u64::from(data_offset) + u64::from(offset))
            .is_ok()
        {
            out.push((name.to_string(), u64::from_ne_bytes(value)));
        }
    }
    out
}

/// KVM's `exits`, its `*_exits` counters, and the few others that say what the exits were
/// for: nested page faults taken, instructions emulated, hypercalls.
fn is_exit_counter(name: &str) -> bool {
    name == "exits"
        || name.ends_with("_exits")
        || matches!(name, "pf_taken" | "insn_emulation" | "hypercalls")
}

/// Sum per-vCPU counters by name, keeping the first vCPU's order.
pub fn sum_by_name(per_vcpu: Vec<Vec<(String, u64)>>) -> Vec<(String, u64)> {
    let mut total: Vec<(String, u64)> = Vec::new();
    for counters in per_vcpu {
        for (name, n) in counters {
            match total.iter_mut().find(|(k, _)| *k == name) {
                Some((_, sum)) => *sum += n,
                None => total.push((name, n)),
            }
        }
    }
    total.retain(|(_, n)| *n > 0);
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_classified_by_device() {
        assert_eq!(ExitClass::of_port(0x3f8), ExitClass::Serial);
        assert_eq!(ExitClass::of_port(0x3fd), ExitClass::Serial);
        assert_eq!(ExitClass::of_port(0x64), ExitClass::I8042);
        assert_eq!(ExitClass::of_port(0x60), ExitClass::I8042);
        assert_eq!(ExitClass::of_port(0x61), ExitClass::Pit);
        assert_eq!(ExitClass::of_port(0x43), ExitClass::Pit);
        assert_eq!(ExitClass::of_port(0x80), ExitClass::Port80);
        assert_eq!(ExitClass::of_port(0x71), ExitClass::Cmos);
        assert_eq!(ExitClass::of_port(0xcfc), ExitClass::PciConfig);
        assert_eq!(ExitClass::of_port(0x2f8), ExitClass::OtherPort);
    }

    #[test]
    fn counters_snapshot_only_what_happened() {
        let c = ExitCounters::new((0xd000_0000, 0xd000_2000));
        c.count(ExitClass::Serial);
        c.count(ExitClass::Serial);
        c.count_mmio(0xd000_1050);
        c.count_mmio(0xfee0_0000);
        let snapshot = c.snapshot();
        let names: Vec<(&str, u64)> = snapshot.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        assert_eq!(
            names,
            vec![("pio serial", 2), ("mmio virtio", 1), ("mmio other", 1)]
        );
    }

    #[test]
    fn summed_and_summarised() {
        let a = vec![("exits".to_string(), 10), ("io_exits".to_string(), 4)];
        let b = vec![("exits".to_string(), 5), ("halt_exits".to_string(), 0)];
        let report = ExitReport {
            monitor: vec![("pio serial".to_string(), 4)],
            kvm: sum_by_name(vec![a, b]),
        };
        assert_eq!(report.kvm_total(), Some(15));
        assert_eq!(
            report.summary(),
            "exits: 15 in all; to the monitor 4: pio serial 4; in KVM: io_exits 4"
        );
    }

    #[test]
    fn malformed_statistics_read_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats");
        // A header claiming descriptors past the end of the file.
        let mut header = vec![0u8; 24];
        header[4..8].copy_from_slice(&48u32.to_ne_bytes());
        header[8..12].copy_from_slice(&1000u32.to_ne_bytes());
        header[16..20].copy_from_slice(&24u32.to_ne_bytes());
        std::fs::write(&path, &header).unwrap();
        assert!(read_exit_stats(&File::open(&path).unwrap()).is_empty());
        std::fs::write(&path, b"short").unwrap();
        assert!(read_exit_stats(&File::open(&path).unwrap()).is_empty());
    }
}
