//! The guest's initial state: GDT, identity page tables, boot info and command line in guest
//! memory, and the register values that enter long mode directly (no BIOS, no real mode).

use hvt_abi::{BootInfo, layout};

use crate::memory::{GuestMemory, OutOfBounds};

/// Flat 64-bit code segment (selector 0x08).
pub const GDT_CODE: u64 = 0x00af_9b00_0000_ffff;
/// Flat data segment (selector 0x10).
pub const GDT_DATA: u64 = 0x00cf_9300_0000_ffff;
/// Code segment selector.
pub const SEL_CODE: u16 = 0x08;
/// Data segment selector.
pub const SEL_DATA: u16 = 0x10;
/// Number of GDT entries (null, code, data, TSS low/high).
pub const GDT_ENTRIES: u64 = 5;

/// Control register values for long mode with paging.
pub const CR0: u64 = 0x8005_0033; // PG | WP | NE | ET | MP | PE
/// CR4: PAE only (the guest is soft-float: no OSFXSR, no XSAVE).
pub const CR4: u64 = 0x20;
/// EFER: LME | LMA.
pub const EFER: u64 = 0x500;

const PTE_P: u64 = 1;
const PTE_RW: u64 = 2;
const PTE_PS: u64 = 0x80;

/// Writes GDT and page tables that identity-map the first 4 GiB with 2 MiB pages.
pub fn write_tables(mem: &mut GuestMemory) -> Result<(), OutOfBounds> {
    let gdt = [0, GDT_CODE, GDT_DATA, 0, 0];
    for (i, e) in gdt.iter().enumerate() {
        mem.write(layout::GDT + 8 * i as u64, &e.to_le_bytes())?;
    }
    let pml4 = layout::PML4;
    let pdpt = pml4 + 0x1000;
    let pd = pdpt + 0x1000;
    mem.write(pml4, &(pdpt | PTE_P | PTE_RW).to_le_bytes())?;
    for g in 0..4u64 {
        let pd_g = pd + g * 0x1000;
        mem.write(pdpt + 8 * g, &(pd_g | PTE_P | PTE_RW).to_le_bytes())?;
        for e in 0..512u64 {
            let addr = (g << 30) | (e << 21);
            mem.write(
                pd_g + 8 * e,
                &(addr | PTE_P | PTE_RW | PTE_PS).to_le_bytes(),
            )?;
        }
    }
    Ok(())
}

/// Writes the command line and the boot info.
pub fn write_boot_info(
    mem: &mut GuestMemory,
    mut info: BootInfo,
    cmdline: &[u8],
) -> Result<(), OutOfBounds> {
    let len = cmdline.len().min(layout::CMDLINE_MAX as usize);
    mem.write(layout::CMDLINE, &cmdline[..len])?;
    info.cmdline = layout::CMDLINE;
    info.cmdline_len = len as u64;
    info.abi_version = u64::from(hvt_abi::ABI_VERSION);
    info.mem_size = mem.size();
    mem.write_obj(layout::BOOT_INFO, &info)
}

/// The page-table root for CR3.
pub const fn cr3() -> u64 {
    layout::PML4
}

#[cfg(test)]
mod tests {
    use super::*;
    use hvt_abi::Wire;

    #[test]
    fn tables_identity_map() {
        let mut m = GuestMemory::new(4 << 20).unwrap();
        write_tables(&mut m).unwrap();
        let word = |m: &GuestMemory, a: u64| {
            u64::from_le_bytes(m.slice(a, 8).unwrap().try_into().unwrap())
        };
        assert_eq!(word(&m, layout::PML4) & !0xfff, layout::PML4 + 0x1000);
        // Last 2 MiB page of the 4th GiB maps to itself.
        let last = word(&m, layout::PML4 + 0x2000 + 3 * 0x1000 + 511 * 8);
        assert_eq!(last & !0xfff, (3 << 30) | (511 << 21));
        assert_eq!(word(&m, layout::GDT + 8), GDT_CODE);
        const { assert!(layout::PML4 + 6 * 0x1000 <= layout::KERNEL_MIN) };
    }

    #[test]
    fn boot_info_round_trip() {
        let mut m = GuestMemory::new(4 << 20).unwrap();
        let long = vec![b'x'; 10_000];
        write_boot_info(
            &mut m,
            BootInfo {
                kernel_end: 5,
                ..Default::default()
            },
            &long,
        )
        .unwrap();
        let b: BootInfo = m.read_obj(layout::BOOT_INFO).unwrap();
        assert_eq!(b.cmdline_len, layout::CMDLINE_MAX);
        assert_eq!(b.mem_size, 4 << 20);
        assert_eq!(b.kernel_end, 5);
        const { assert!(layout::BOOT_INFO + BootInfo::SIZE as u64 <= layout::CMDLINE) };
    }
}
