//! Guest physical memory layout and the guest RAM itself.
//!
//! RAM starts at 0 and is split around a 768 MiB hole below 4 GiB where the MMIO devices live
//! (the same place real chipsets put PCI holes), so guests larger than 3.25 GiB continue at 4 GiB.

use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Global descriptor table used by the 64-bit boot path.
pub const BOOT_GDT_START: u64 = 0x500;
/// Interrupt descriptor table (empty, the kernel installs its own).
pub const BOOT_IDT_START: u64 = 0x520;
/// The boot stack grows down from here.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Zero page (struct boot_params) handed to the kernel in %rsi.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Identity-mapped page tables: PML4, PDPT and four PDs (first 4 GiB with 2 MiB pages).
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line we pass (the kernel's COMMAND_LINE_SIZE on x86_64).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// End of conventional memory; the EBDA (and our MP table) sits just below 640 KiB.
pub const EBDA_START: u64 = 0x9fc00;
/// Kernels are loaded at or above 1 MiB.
pub const HIMEM_START: u64 = 0x10_0000;

/// Size of the MMIO hole below 4 GiB.
pub const MMIO_GAP_SIZE: u64 = 768 << 20;
/// First byte of the MMIO hole.
pub const MMIO_GAP_START: u64 = (1 << 32) - MMIO_GAP_SIZE;
/// RAM above the hole restarts here.
pub const HIGH_RAM_START: u64 = 1 << 32;

/// KVM's TSS (three pages) and identity-map page must be inside the guest address space but
/// outside RAM: put them at the top of the MMIO hole, above the IOAPIC/LAPIC pages.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;

/// Each virtio-mmio device gets one page of the hole; the register window itself is 0x200 bytes.
pub const VIRTIO_MMIO_START: u64 = MMIO_GAP_START;
pub const VIRTIO_MMIO_STRIDE: u64 = 0x1000;
pub const VIRTIO_MMIO_SIZE: u64 = 0x200;
/// Legacy ISA IRQs 0-4 are PIT, keyboard, cascade, COM2, COM1; virtio devices start after.
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// The IOAPIC has 24 pins.
pub const IRQ_MAX: u32 = 23;

// KVM's TSS and identity page sit in the hole, above the IOAPIC and LAPIC pages.
const _: () = assert!(KVM_TSS_ADDRESS + 3 * 4096 <= 1 << 32);
const _: () = assert!(KVM_IDENTITY_MAP_ADDRESS >= 0xfee0_1000);
const _: () = assert!(KVM_IDENTITY_MAP_ADDRESS + 4096 <= KVM_TSS_ADDRESS);
const _: () = assert!(KVM_IDENTITY_MAP_ADDRESS >= MMIO_GAP_START);

/// Smallest guest we accept: a kernel and an initramfs need a few tens of MiB.
pub const MIN_MEMORY_MIB: u32 = 32;

/// The RAM regions (start, size) for `memory_mib` of guest memory.
pub fn ram_regions(memory_mib: u32) -> Vec<(GuestAddress, usize)> {
    let size = u64::from(memory_mib) << 20;
    if size <= MMIO_GAP_START {
        vec![(GuestAddress(0), size as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START as usize),
            (
                GuestAddress(HIGH_RAM_START),
                (size - MMIO_GAP_START) as usize,
            ),
        ]
    }
}

/// Create (mmap) the guest's RAM. Anonymous private memory: pages are only backed when touched.
pub fn create_guest_memory(memory_mib: u32) -> Result<GuestMemoryMmap, vm_memory::Error> {
    GuestMemoryMmap::from_ranges(&ram_regions(memory_mib))
}

/// Create the guest's RAM in one shared memfd (MAP_SHARED), which a vhost-user backend in
/// another process maps too. Pages are still only backed when touched.
pub fn create_shared_guest_memory(memory_mib: u32) -> Result<GuestMemoryMmap, vm_memory::Error> {
    use std::sync::Arc;
    use vm_memory::FileOffset;
    let regions = ram_regions(memory_mib);
    let total: usize = regions.iter().map(|(_, len)| len).sum();
    let memfd = nix::sys::memfd::memfd_create(
        c"husk-guest-ram",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .map_err(|e| vm_memory::Error::MmapRegion(vm_memory::mmap::MmapRegionError::Mmap(e.into())))?;
    let file = Arc::new(std::fs::File::from(memfd));
    file.set_len(total as u64)
        .map_err(|e| vm_memory::Error::MmapRegion(vm_memory::mmap::MmapRegionError::Mmap(e)))?;
    let mut offset = 0u64;
    let ranges: Vec<_> = regions
        .iter()
        .map(|&(start, len)| {
            let range = (start, len, Some(FileOffset::from_arc(file.clone(), offset)));
            offset += len as u64;
            range
        })
        .collect();
    GuestMemoryMmap::from_ranges_with_files(&ranges)
}

/// End (exclusive) of the RAM below the MMIO hole.
pub fn low_ram_end(memory_mib: u32) -> u64 {
    (u64::from(memory_mib) << 20).min(MMIO_GAP_START)
}

#[cfg(test)]
mod tests {
    use vm_memory::{GuestMemory, GuestMemoryRegion};

    use super::*;

    #[test]
    fn small_guest_is_one_region_below_the_gap() {
        let regions = ram_regions(128);
        assert_eq!(regions, vec![(GuestAddress(0), 128 << 20)]);
    }

    #[test]
    fn large_guest_is_split_around_the_mmio_gap() {
        let regions = ram_regions(4096);
        assert_eq!(regions.len(), 2);
        assert_eq!(regions[0], (GuestAddress(0), MMIO_GAP_START as usize));
        assert_eq!(regions[1].0, GuestAddress(1 << 32));
        assert_eq!(regions[0].1 + regions[1].1, 4096 << 20);
        assert_eq!(MMIO_GAP_START, 0xd000_0000);
    }

    #[test]
    fn guest_memory_has_no_ram_in_the_gap() {
        let mem = create_guest_memory(3400).unwrap();
        assert!(mem.address_in_range(GuestAddress(MMIO_GAP_START - 1)));
        assert!(!mem.address_in_range(GuestAddress(MMIO_GAP_START)));
        assert!(!mem.address_in_range(GuestAddress(KVM_TSS_ADDRESS)));
        assert!(mem.address_in_range(GuestAddress(HIGH_RAM_START)));
        let total: u64 = mem.iter().map(|r| r.len()).sum();
        assert_eq!(total, 3400 << 20);
    }

    #[test]
    fn fixed_boot_structures_do_not_overlap() {
        let ranges = [
            (BOOT_GDT_START, 4 * 8),
            (BOOT_IDT_START, 8),
            (ZERO_PAGE_START, 4096),
            (PML4_START, 4096),
            (PDPTE_START, 4096),
            (PDE_START, 4 * 4096),
            (CMDLINE_START, CMDLINE_MAX_SIZE as u64),
        ];
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                assert!(a.0 + a.1 <= b.0 || b.0 + b.1 <= a.0, "{a:?} overlaps {b:?}");
            }
            assert!(a.0 + a.1 <= EBDA_START);
        }
    }
}
