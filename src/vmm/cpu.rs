//! vCPU register state for the Linux 64-bit boot protocol: CPUID with topology, MSRs, FPU,
//! LAPIC LINT pins, and long mode (identity page tables, GDT/IDT, segments).

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, CpuId, Msrs,
};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDE_START, PDPTE_START, PML4_START,
    ZERO_PAGE_START,
};

#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error("KVM {op} failed: {source}")]
    Kvm {
        op: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("writing {what} into guest memory failed (guest too small?)")]
    GuestMemory { what: &'static str },
    #[error("KVM accepted only {set} of {wanted} MSRs")]
    PartialMsrs { set: usize, wanted: usize },
}

fn kvm(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> CpuError {
    move |source| CpuError::Kvm { op, source }
}

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// Hypervisor-present bit of CPUID.1:ECX.
const CPUID_HYPERVISOR_BIT: u32 = 1 << 31;
/// HTT bit of CPUID.1:EDX: the logical processor count in EBX[23:16] is valid.
const CPUID_HTT_BIT: u32 = 1 << 28;
/// KVM's paravirt signature, reported at leaf 0x4000_0000.
const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d]; // "KVMKVMKVM\0\0\0"

/// Adjust leaves 1, 4 and 0x4000_0000 for vCPU `id` of `count`: initial APIC id, logical CPU
/// count and HTT, cores per package, the hypervisor bit and the KVM signature.
pub fn filter_cpuid(cpuid: &mut CpuId, id: u8, count: u8) {
    let count32 = u32::from(count.max(1));
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                entry.ebx = (u32::from(id) << 24) | (count32 << 16) | (8 << 8);
                entry.ecx |= CPUID_HYPERVISOR_BIT;
                if count > 1 {
                    entry.edx |= CPUID_HTT_BIT;
                } else {
                    entry.edx &= !CPUID_HTT_BIT;
                }
            }
            4 => {
                // EAX[31:26] = cores per package - 1; keep cache description bits.
                entry.eax = (entry.eax & 0x03ff_ffff) | ((count32 - 1) << 26);
            }
            0x4000_0000 => {
                entry.ebx = KVM_SIGNATURE[0];
                entry.ecx = KVM_SIGNATURE[1];
                entry.edx = KVM_SIGNATURE[2];
            }
            _ => {}
        }
    }
}

/// KVM_CPUID_FLAG_SIGNIFCANT_INDEX: the entry depends on the subleaf in ECX.
const CPUID_FLAG_SIGNIFICANT_INDEX: u32 = 1;

/// Leaf 0xB (extended topology) for vCPU `id` of `count`: an SMT level with one thread per
/// core, a core level with every vCPU, and the terminating invalid level. KVM often reports
/// only subleaf 0 (all zero), so the monitor writes the whole leaf.
pub fn topology_leaf(id: u8, count: u8) -> [kvm_cpuid_entry2; 3] {
    let count32 = u32::from(count.max(1));
    // Bits needed to number `count` cores (x2APIC id shift to the package level).
    let core_bits = u32::BITS - (count32 - 1).leading_zeros();
    let entry = |index: u32, eax: u32, ebx: u32, level_type: u32| kvm_cpuid_entry2 {
        function: 0xb,
        index,
        flags: CPUID_FLAG_SIGNIFICANT_INDEX,
        eax,
        ebx,
        ecx: (level_type << 8) | index,
        edx: u32::from(id),
        ..Default::default()
    };
    [
        entry(0, 0, 1, 1),
        entry(1, core_bits, count32, 2),
        entry(2, 0, 0, 0),
    ]
}

/// The CPUID table for vCPU `id`: KVM's supported table with `filter_cpuid` applied and leaf
/// 0xB replaced by `topology_leaf` when the CPU's maximum basic leaf reaches it.
pub fn vcpu_cpuid(supported: &CpuId, id: u8, count: u8) -> CpuId {
    let mut entries: Vec<kvm_cpuid_entry2> = supported
        .as_slice()
        .iter()
        .filter(|e| e.function != 0xb)
        .copied()
        .collect();
    let max_basic = entries
        .iter()
        .find(|e| e.function == 0)
        .map_or(0, |e| e.eax);
    if max_basic >= 0xb {
        entries.extend(topology_leaf(id, count));
    }
    // KVM's own table has at most KVM_MAX_CPUID_ENTRIES; three extra entries still fit the
    // FAM wrapper's limit, and from_entries only fails past it.
    let mut cpuid = CpuId::from_entries(&entries).unwrap_or_else(|_| supported.clone());
    filter_cpuid(&mut cpuid, id, count);
    cpuid
}

pub fn setup_cpuid(vcpu: &VcpuFd, supported: &CpuId, id: u8, count: u8) -> Result<(), CpuError> {
    let cpuid = vcpu_cpuid(supported, id, count);
    vcpu.set_cpuid2(&cpuid).map_err(kvm("KVM_SET_CPUID2"))
}

/// The MSRs Linux expects a firmware to have initialised.
pub fn boot_msr_entries() -> Vec<kvm_msr_entry> {
    const MSR_IA32_SYSENTER_CS: u32 = 0x174;
    const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
    const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
    const MSR_STAR: u32 = 0xc000_0081;
    const MSR_LSTAR: u32 = 0xc000_0082;
    const MSR_CSTAR: u32 = 0xc000_0083;
    const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
    const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
    const MSR_IA32_TSC: u32 = 0x10;
    const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
    const MSR_IA32_MISC_ENABLE_FAST_STRING: u64 = 1;
    const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
    // MTRRs enabled, default type write-back.
    const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;
    [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MSR_IA32_MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
    ]
    .into_iter()
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect()
}

pub fn setup_msrs(vcpu: &VcpuFd) -> Result<(), CpuError> {
    let entries = boot_msr_entries();
    let msrs = Msrs::from_entries(&entries).map_err(|_| CpuError::PartialMsrs {
        set: 0,
        wanted: entries.len(),
    })?;
    let set = vcpu.set_msrs(&msrs).map_err(kvm("KVM_SET_MSRS"))?;
    if set != entries.len() {
        return Err(CpuError::PartialMsrs {
            set,
            wanted: entries.len(),
        });
    }
    Ok(())
}

pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), CpuError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm("KVM_SET_FPU"))
}

/// General registers at the 64-bit entry point: %rsi points at the zero page.
pub fn boot_regs(entry: GuestAddress) -> kvm_regs {
    kvm_regs {
        rflags: 0x2,
        rip: entry.0,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_START,
        ..Default::default()
    }
}

pub fn setup_regs(vcpu: &VcpuFd, entry: GuestAddress) -> Result<(), CpuError> {
    vcpu.set_regs(&boot_regs(entry))
        .map_err(kvm("KVM_SET_REGS"))
}

/// A GDT entry from flags, base and limit (Intel SDM vol. 3, 3.4.5).
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The GDT of the boot path: null, 64-bit code, data, TSS.
pub const BOOT_GDT: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

pub fn segment_from_gdt(entry: u64, table_index: u8) -> kvm_segment {
    let g = ((entry >> 55) & 1) as u8;
    let raw_limit = (((entry >> 32) & 0x000f_0000) | (entry & 0xffff)) as u32;
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base: ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: u16::from(table_index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// GiBs identity-mapped at entry: all of the 32-bit space, so early code (and the T1 test
/// programs) can reach the MMIO hole before the kernel builds its own page tables.
pub const BOOT_IDENTITY_MAP_GIB: u64 = 4;

/// Write the GDT, an empty IDT and identity page tables for the first 4 GiB (2 MiB pages).
pub fn write_long_mode_tables<M: GuestMemory>(mem: &M) -> Result<(), CpuError> {
    let gm = |what| move |_| CpuError::GuestMemory { what };
    for (i, entry) in BOOT_GDT.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(BOOT_GDT_START + i as u64 * 8))
            .map_err(gm("GDT"))?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(gm("IDT"))?;
    mem.write_obj(PDPTE_START | 0x03, GuestAddress(PML4_START))
        .map_err(gm("PML4"))?;
    for gib in 0..BOOT_IDENTITY_MAP_GIB {
        let pd = PDE_START + gib * 0x1000;
        mem.write_obj(pd | 0x03, GuestAddress(PDPTE_START + gib * 8))
            .map_err(gm("PDPT"))?;
        for i in 0..512u64 {
            // Present, writable, 2 MiB page.
            let phys = (gib << 30) | (i << 21);
            mem.write_obj(phys | 0x83, GuestAddress(pd + i * 8))
                .map_err(gm("page directory"))?;
        }
    }
    Ok(())
}

/// Special registers for long mode using the tables written by `write_long_mode_tables`.
pub fn long_mode_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    let code = segment_from_gdt(BOOT_GDT[1], 1);
    let data = segment_from_gdt(BOOT_GDT[2], 2);
    let tss = segment_from_gdt(BOOT_GDT[3], 3);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (BOOT_GDT.len() * 8 - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr0 |= X86_CR0_PE | X86_CR0_PG;
    sregs.cr3 = PML4_START;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.efer |= EFER_LME | EFER_LMA;
    sregs
}

pub fn setup_sregs(vcpu: &VcpuFd) -> Result<(), CpuError> {
    let sregs = vcpu.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
    vcpu.set_sregs(&long_mode_sregs(sregs))
        .map_err(kvm("KVM_SET_SREGS"))
}

/// Route LINT0 as ExtINT (the legacy PIC) and LINT1 as NMI, as firmware would.
pub fn setup_lapic(vcpu: &VcpuFd) -> Result<(), CpuError> {
    const APIC_LVT0: usize = 0x350;
    const APIC_LVT1: usize = 0x360;
    const APIC_MODE_NMI: u32 = 0x4;
    const APIC_MODE_EXTINT: u32 = 0x7;
    let mut lapic = vcpu.get_lapic().map_err(kvm("KVM_GET_LAPIC"))?;
    let mut set = |reg: usize, mode: u32| {
        let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[reg + i] as u8);
        let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
        for (i, b) in value.to_le_bytes().iter().enumerate() {
            lapic.regs[reg + i] = *b as _;
        }
    };
    set(APIC_LVT0, APIC_MODE_EXTINT);
    set(APIC_LVT1, APIC_MODE_NMI);
    vcpu.set_lapic(&lapic).map_err(kvm("KVM_SET_LAPIC"))
}

#[cfg(test)]
mod tests {
    use kvm_bindings::kvm_cpuid_entry2;
    use vm_memory::GuestMemoryMmap;

    use super::*;

    #[test]
    fn gdt_segments_decode_to_flat_long_mode() {
        let code = segment_from_gdt(BOOT_GDT[1], 1);
        assert_eq!(
            (code.l, code.db, code.g, code.present, code.selector),
            (1, 0, 1, 1, 8)
        );
        assert_eq!((code.base, code.limit, code.type_), (0, 0xffff_ffff, 0xb));
        let data = segment_from_gdt(BOOT_GDT[2], 2);
        assert_eq!((data.l, data.db, data.selector, data.type_), (0, 1, 16, 3));
        let null = segment_from_gdt(BOOT_GDT[0], 0);
        assert_eq!(null.unusable, 1);
    }

    #[test]
    fn identity_page_tables_map_the_32bit_space() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_long_mode_tables(&mem).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPTE_START | 3);
        let pde511: u64 = mem.read_obj(GuestAddress(PDE_START + 511 * 8)).unwrap();
        assert_eq!(pde511, (511 << 21) | 0x83);
        // The MMIO hole at 0xd000_0000 (GiB 3) is mapped too.
        let pdpt3: u64 = mem.read_obj(GuestAddress(PDPTE_START + 3 * 8)).unwrap();
        assert_eq!(pdpt3, (PDE_START + 0x3000) | 3);
        let pd3_128: u64 = mem
            .read_obj(GuestAddress(PDE_START + 0x3000 + 128 * 8))
            .unwrap();
        assert_eq!(pd3_128, 0xd000_0000 | 0x83);
        let sregs = long_mode_sregs(kvm_sregs::default());
        assert_eq!(sregs.cr3, PML4_START);
        assert_ne!(sregs.efer & EFER_LMA, 0);
        assert_ne!(sregs.cr0 & X86_CR0_PG, 0);
    }

    #[test]
    fn cpuid_topology_and_hypervisor_leaves() {
        let entries = [
            kvm_cpuid_entry2 {
                function: 0,
                eax: 0x1c,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 1,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 0,
                flags: 1,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0x4000_0000,
                ..Default::default()
            },
        ];
        let supported = CpuId::from_entries(&entries).unwrap();
        let cpuid = vcpu_cpuid(&supported, 3, 4);
        let e = cpuid.as_slice();
        let leaf = |f: u32, i: u32| *e.iter().find(|x| x.function == f && x.index == i).unwrap();
        assert_eq!(leaf(1, 0).ebx >> 24, 3, "initial APIC id");
        assert_eq!((leaf(1, 0).ebx >> 16) & 0xff, 4, "logical processor count");
        assert_ne!(leaf(1, 0).ecx & CPUID_HYPERVISOR_BIT, 0);
        assert_ne!(leaf(1, 0).edx & CPUID_HTT_BIT, 0);
        let (smt, core, end) = (leaf(0xb, 0), leaf(0xb, 1), leaf(0xb, 2));
        assert_eq!((smt.ebx, smt.edx, smt.ecx >> 8), (1, 3, 1));
        assert_eq!((core.eax, core.ebx, core.ecx >> 8), (2, 4, 2));
        assert_eq!(end.ecx >> 8, 0, "terminating level");
        assert_eq!(e.iter().filter(|x| x.function == 0xb).count(), 3);
        assert_eq!(leaf(0x4000_0000, 0).ebx, 0x4b4d_564b);
    }
}
