//! Loading the guest: kernel (ELF vmlinux or bzImage, via linux-loader), initramfs, command
//! line, and the zero page (boot_params) with its e820 map.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::{load_cmdline, BzImage, Elf, KernelLoader};
use vm_memory::{Address, GuestAddress, GuestMemory, GuestMemoryMmap};

use super::layout::{
    low_ram_end, ram_regions, CMDLINE_MAX_SIZE, CMDLINE_START, EBDA_START, HIMEM_START,
    ZERO_PAGE_START,
};

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;
/// Highest initrd end address for boot protocol >= 2.03 when the kernel does not say.
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x7fff_ffff;
/// The 64-bit entry point of a bzImage is 0x200 past its protected-mode load address.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot open {what} {path}: {source}")]
    Open {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("cannot load kernel {path}: {source} (expected an ELF vmlinux or a bzImage)")]
    Kernel {
        path: String,
        source: linux_loader::loader::Error,
    },
    #[error("initramfs {path} ({size} bytes) does not fit in guest memory above the kernel; raise --memory")]
    InitrdTooLarge { path: String, size: u64 },
    #[error("reading initramfs {path} into guest memory failed: {source}")]
    Initrd {
        path: String,
        source: vm_memory::GuestMemoryError,
    },
    #[error("kernel command line: {0}")]
    Cmdline(#[from] linux_loader::cmdline::Error),
    #[error("writing the command line into guest memory: {0}")]
    CmdlineLoad(linux_loader::loader::Error),
    #[error("writing boot params: {0}")]
    BootParams(#[from] linux_loader::configurator::Error),
}

/// Where the kernel landed and how to enter it.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    pub entry: GuestAddress,
    pub end: u64,
    pub setup_header: Option<setup_header>,
}

pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, BootError> {
    let mut file = File::open(path).map_err(|source| BootError::Open {
        what: "kernel",
        path: path.display().to_string(),
        source,
    })?;
    let mut magic = [0u8; 4];
    let is_elf = file.read_exact(&mut magic).is_ok() && magic == *b"\x7fELF";
    let kernel_err = |source| BootError::Kernel {
        path: path.display().to_string(),
        source,
    };
    let himem = Some(GuestAddress(HIMEM_START));
    if is_elf {
        let r = Elf::load(mem, None, &mut file, himem).map_err(kernel_err)?;
        Ok(LoadedKernel {
            entry: r.kernel_load,
            end: r.kernel_end,
            setup_header: None,
        })
    } else {
        let r = BzImage::load(mem, None, &mut file, himem).map_err(kernel_err)?;
        Ok(LoadedKernel {
            entry: r.kernel_load.unchecked_add(BZIMAGE_64BIT_ENTRY_OFFSET),
            end: r.kernel_end,
            setup_header: r.setup_header,
        })
    }
}

/// Load the initramfs as high as the kernel allows, page aligned. Returns (address, size).
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    memory_mib: u32,
    kernel: &LoadedKernel,
) -> Result<(u64, u32), BootError> {
    let display = path.display().to_string();
    let mut file = File::open(path).map_err(|source| BootError::Open {
        what: "initramfs",
        path: display.clone(),
        source,
    })?;
    let size = file
        .metadata()
        .map_err(|source| BootError::Open {
            what: "initramfs",
            path: display.clone(),
            source,
        })?
        .len();
    let addr_max = kernel
        .setup_header
        .map(|h| u64::from(h.initrd_addr_max))
        .filter(|&m| m != 0)
        .unwrap_or(DEFAULT_INITRD_ADDR_MAX);
    let top = low_ram_end(memory_mib).min(addr_max + 1);
    let too_large = || BootError::InitrdTooLarge {
        path: display.clone(),
        size,
    };
    let size32 = u32::try_from(size).map_err(|_| too_large())?;
    let addr = top.checked_sub(size).ok_or_else(too_large)? & !0xfff;
    if addr < kernel.end || size == 0 {
        return Err(too_large());
    }
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|source| BootError::Initrd {
            path: display,
            source,
        })?;
    Ok((addr, size32))
}

/// The kernel command line: defaults for a fast, quiet microVM boot, the caller's arguments,
/// then one `virtio_mmio.device=` entry per device.
pub fn build_cmdline(user: &str, virtio_devices: &[(u64, u64, u32)]) -> Result<Cmdline, BootError> {
    let mut cmdline = Cmdline::new(CMDLINE_MAX_SIZE)?;
    cmdline.insert_str(user)?;
    for &(base, size, irq) in virtio_devices {
        cmdline.add_virtio_mmio_device(size, GuestAddress(base), irq, None)?;
    }
    Ok(cmdline)
}

/// The e820 map: conventional memory below the EBDA, then RAM from 1 MiB up to the MMIO hole,
/// then RAM above 4 GiB for large guests. The EBDA and the BIOS area are reserved.
pub fn e820_map(memory_mib: u32) -> Vec<boot_e820_entry> {
    let mut map = vec![
        boot_e820_entry {
            addr: 0,
            size: EBDA_START,
            type_: E820_RAM,
        },
        boot_e820_entry {
            addr: EBDA_START,
            size: HIMEM_START - EBDA_START,
            type_: E820_RESERVED,
        },
    ];
    for (start, size) in ram_regions(memory_mib) {
        let (start, size) = (start.raw_value(), size as u64);
        let (start, size) = if start < HIMEM_START {
            (HIMEM_START, size.saturating_sub(HIMEM_START - start))
        } else {
            (start, size)
        };
        if size > 0 {
            map.push(boot_e820_entry {
                addr: start,
                size,
                type_: E820_RAM,
            });
        }
    }
    map
}

/// Fill the zero page.
pub fn build_boot_params(
    kernel: &LoadedKernel,
    cmdline_len: usize,
    initrd: Option<(u64, u32)>,
    memory_mib: u32,
) -> boot_params {
    let mut params = boot_params::default();
    if let Some(hdr) = kernel.setup_header {
        params.hdr = hdr;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if params.hdr.kernel_alignment == 0 {
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size;
    }
    let map = e820_map(memory_mib);
    for (slot, entry) in params.e820_table.iter_mut().zip(&map) {
        *slot = *entry;
    }
    params.e820_entries = map.len() as u8;
    params
}

/// Write the command line and the zero page into guest memory.
pub fn write_boot_data(
    mem: &GuestMemoryMmap,
    cmdline: &Cmdline,
    params: &boot_params,
) -> Result<(), BootError> {
    load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline).map_err(BootError::CmdlineLoad)?;
    let zero_page = BootParams::new::<boot_params>(params, GuestAddress(ZERO_PAGE_START));
    LinuxBootConfigurator::write_bootparams(&zero_page, mem)?;
    Ok(())
}

/// Length of the command line as the kernel will see it (without the NUL).
pub fn cmdline_len(cmdline: &Cmdline) -> Result<usize, BootError> {
    Ok(cmdline.as_cstring()?.as_bytes().len())
}
