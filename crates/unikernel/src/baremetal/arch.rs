//! The runtime's only unsafe code: x86_64 instructions, port and MMIO access, raw boot
//! structures, the heap region, the PVH entry trampoline and the ELF notes.
//!
//! Everything exported is a safe function with a narrow purpose (a given port, a probed virtio
//! window), so the rest of the runtime stays in safe Rust.

#![allow(unsafe_code)]
// The hvt platform uses only the hypercall, TSC and boot-structure helpers.
#![cfg_attr(virga_target = "hvt", allow(dead_code))]

use core::arch::{asm, global_asm};

/// `in al, dx`.
fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: port reads of the fixed legacy devices used below have no memory effects.
    unsafe {
        asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    v
}

/// `out dx, al`.
fn outb(port: u16, v: u8) {
    // SAFETY: port writes to the fixed legacy devices used below (serial, PIT, RTC index,
    // debug-exit) have no effect on memory.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags))
    };
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reads the TSC; no memory effects.
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// `cpuid` of `leaf` (subleaf 0): (eax, ebx, ecx, edx).
pub fn cpuid(leaf: u32) -> (u32, u32, u32, u32) {
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// A hardware random number, if the CPU has RDRAND and it delivered one.
pub fn rdrand() -> Option<u64> {
    if cpuid(1).2 & (1 << 30) == 0 {
        return None;
    }
    for _ in 0..10 {
        let v: u64;
        let ok: u8;
        // SAFETY: rdrand writes only its register operands and CF.
        unsafe {
            asm!("rdrand {v}", "setc {ok}", v = out(reg) v, ok = out(reg_byte) ok, options(nomem, nostack))
        };
        if ok != 0 {
            return Some(v);
        }
    }
    None
}

/// Spin-loop hint.
pub fn pause() {
    core::hint::spin_loop();
}

/// Stops the CPU for good.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: with interrupts off, `cli; hlt` parks the CPU; no memory effects.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

#[cfg(virga_target = "hvt")]
/// One hvt hypercall: `out` of the argument's guest-physical address to `port`.
///
/// The monitor reads and writes the argument struct at `arg_addr` during the instruction; the
/// asm is not `nomem`, so the compiler treats memory as read and written.
pub fn hypercall(port: u16, arg_addr: u32) {
    // SAFETY: the monitor only touches the argument struct the caller passed (a live, exclusively
    // borrowed local), and buffers it names, which the caller also borrows for the call.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") arg_addr, options(nostack, preserves_flags))
    };
}

/// The 16550 UART at 0x3f8.
pub mod serial {
    const COM1: u16 = 0x3f8;

    /// Writes one byte, waiting for the transmitter (bounded, so a missing UART cannot hang).
    pub fn put(b: u8) {
        for _ in 0..100_000 {
            if super::inb(COM1 + 5) & 0x20 != 0 {
                break;
            }
            super::pause();
        }
        super::outb(COM1, b);
    }
}

/// The i8254 PIT, channel 0, used to calibrate the TSC.
pub mod pit {
    /// Input clock of the PIT in Hz.
    pub const HZ: u64 = 1_193_182;

    /// Puts channel 0 in rate-generator mode with the full 16-bit count.
    pub fn start_free_running() {
        super::outb(0x43, 0x34);
        super::outb(0x40, 0);
        super::outb(0x40, 0);
    }

    /// Latches and reads channel 0's counter.
    pub fn read() -> u16 {
        super::outb(0x43, 0x00);
        let lo = super::inb(0x40);
        let hi = super::inb(0x40);
        u16::from_le_bytes([lo, hi])
    }
}

/// The CMOS real-time clock.
pub mod rtc {
    /// Reads CMOS register `reg` (with NMIs left enabled).
    pub fn read(reg: u8) -> u8 {
        super::outb(0x70, reg & 0x7f);
        super::inb(0x71)
    }
}

/// QEMU's `isa-debug-exit` device at 0xf4: QEMU exits with status `(code << 1) | 1`.
pub fn debug_exit(code: u8) {
    let v = u32::from(code);
    // SAFETY: a port write to QEMU's debug-exit device; no memory effects.
    unsafe {
        asm!("out dx, eax", in("dx") 0xf4u16, in("eax") v, options(nomem, nostack, preserves_flags))
    };
}

/// A probed virtio-mmio register window (512 bytes).
#[derive(Debug)]
pub struct MmioRegion {
    base: u64,
}

/// Base of QEMU microvm's virtio-mmio windows.
pub const VIRTIO_MMIO_BASE: u64 = 0xfeb0_0000;
/// Size of one window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x200;
/// Number of windows QEMU microvm provides (devices are placed from the top slot down).
pub const VIRTIO_MMIO_SLOTS: u64 = 24;

impl MmioRegion {
    /// The window of slot `i`, if it holds a virtio device (magic "virt").
    pub fn probe(i: u64) -> Option<Self> {
        if i >= VIRTIO_MMIO_SLOTS {
            return None;
        }
        let r = Self {
            base: VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_SIZE,
        };
        (r.read32(0) == 0x7472_6976).then_some(r)
    }

    fn addr(&self, off: u64, width: u64) -> Option<u64> {
        (off.is_multiple_of(width) && off + width <= VIRTIO_MMIO_SIZE).then_some(self.base + off)
    }

    /// Reads the 32-bit register at `off` (0 for an offset outside the window).
    pub fn read32(&self, off: u64) -> u32 {
        let Some(a) = self.addr(off, 4) else { return 0 };
        // SAFETY: `a` is an aligned register inside a virtio-mmio window, identity-mapped
        // uncached device memory below 4 GiB; volatile so the access really happens.
        unsafe { core::ptr::read_volatile(a as *const u32) }
    }

    /// Reads the byte at `off`.
    pub fn read8(&self, off: u64) -> u8 {
        let Some(a) = self.addr(off, 1) else { return 0 };
        // SAFETY: as in `read32`.
        unsafe { core::ptr::read_volatile(a as *const u8) }
    }

    /// Writes the 32-bit register at `off` (ignored outside the window).
    pub fn write32(&self, off: u64, v: u32) {
        let Some(a) = self.addr(off, 4) else { return };
        // SAFETY: as in `read32`; device registers, not Rust memory.
        unsafe { core::ptr::write_volatile(a as *mut u32, v) };
    }
}

/// `len` bytes of boot-loader-provided memory at physical address `addr` (start info, memory
/// map, command line), or `None` for a null or wrapping range.
pub fn boot_bytes(addr: u64, len: usize) -> Option<&'static [u8]> {
    if addr == 0 || addr.checked_add(len as u64)? > (1 << 32) {
        return None;
    }
    // SAFETY: the loader (QEMU's PVH code or the hvt monitor) placed these structures in RAM
    // that is identity-mapped, lies outside the kernel image and the heap, and is never written
    // after boot.
    Some(unsafe { core::slice::from_raw_parts(addr as *const u8, len) })
}

/// Hands `start..end` to the allocator.
pub fn init_heap(heap: &linked_list_allocator::LockedHeap, start: u64, end: u64) {
    let size = end.saturating_sub(start) as usize;
    // SAFETY: the platform computed `start..end` from the memory map as RAM above the kernel image
    // and below the stack, used by nothing else; called once at boot.
    unsafe { heap.lock().init(start as *mut u8, size) };
}

unsafe extern "C" {
    static __virga_end: u8;
}

/// First byte after the kernel image (from the linker script).
pub fn kernel_end() -> u64 {
    // Only the address of the linker-defined symbol is taken, never its contents.
    core::ptr::addr_of!(__virga_end) as u64
}

// The hvt ABI note: tells the monitor which ABI this kernel speaks (hvt_abi::note).
#[cfg(virga_target = "hvt")]
global_asm!(
    ".section .note.virga, \"a\", @note",
    ".balign 4",
    ".global virga_abi_note",
    "virga_abi_note:",
    ".long 6",
    ".long 4",
    ".long {kind}",
    ".asciz \"VIRGA\"",
    ".balign 4",
    ".long {version}",
    ".balign 4",
    ".text",
    kind = const hvt_abi::note::TYPE_ABI,
    version = const hvt_abi::ABI_VERSION,
);

// PVH entry for QEMU microvm (and any PVH loader): the Xen ELF note names a 32-bit entry point,
// entered in protected mode, paging off, with %ebx = struct hvm_start_info. The trampoline clears
// .bss, identity-maps 4 GiB with 2 MiB pages, enables long mode and calls `_start(start_info)`.
#[cfg(not(virga_target = "hvt"))]
global_asm!(
    ".section .note.Xen, \"a\", @note",
    ".balign 4",
    ".global virga_pvh_note",
    "virga_pvh_note:",
    ".long 4",
    ".long 4",
    ".long 18", // XEN_ELFNOTE_PHYS32_ENTRY
    ".asciz \"Xen\"",
    ".balign 4",
    ".long virga_pvh_entry",
    ".balign 4",
    ".section .text.boot, \"ax\"",
    ".code32",
    ".global virga_pvh_entry",
    "virga_pvh_entry:",
    "cli",
    "mov esi, ebx",
    "cld",
    "mov edi, offset __bss_start",
    "mov ecx, offset __bss_end",
    "sub ecx, edi",
    "xor eax, eax",
    "rep stosb",
    "mov eax, offset virga_pdpt",
    "or eax, 3",
    "mov dword ptr [virga_pml4], eax",
    "xor ecx, ecx",
    "2:",
    "mov eax, ecx",
    "shl eax, 12",
    "add eax, offset virga_pd",
    "or eax, 3",
    "mov dword ptr [virga_pdpt + ecx * 8], eax",
    "inc ecx",
    "cmp ecx, 4",
    "jb 2b",
    "xor ecx, ecx",
    "3:",
    "mov eax, ecx",
    "shl eax, 21",
    "or eax, 0x83",
    "mov dword ptr [virga_pd + ecx * 8], eax",
    "inc ecx",
    "cmp ecx, 2048",
    "jb 3b",
    "mov eax, cr4",
    "or eax, 0x20",
    "mov cr4, eax",
    "mov eax, offset virga_pml4",
    "mov cr3, eax",
    "mov ecx, 0xc0000080",
    "rdmsr",
    "or eax, 0x100",
    "wrmsr",
    "mov eax, cr0",
    "or eax, 0x80000001",
    "mov cr0, eax",
    "lgdt [virga_gdt_ptr]",
    ".byte 0xea",
    ".long virga_long_mode",
    ".word 0x08",
    ".code64",
    "virga_long_mode:",
    "mov ax, 0x10",
    "mov ds, ax",
    "mov es, ax",
    "mov ss, ax",
    "mov fs, ax",
    "mov gs, ax",
    "lea rsp, [rip + virga_stack_top]",
    "mov edi, esi",
    "call _start",
    "4:",
    "cli",
    "hlt",
    "jmp 4b",
    ".section .rodata.virga_gdt, \"a\"",
    ".balign 8",
    "virga_gdt:",
    ".quad 0",
    ".quad 0x00af9a000000ffff",
    ".quad 0x00cf92000000ffff",
    "virga_gdt_ptr:",
    ".word 23",
    ".long virga_gdt",
    ".section .bss.virga_boot, \"aw\", @nobits",
    ".balign 4096",
    "virga_pml4: .skip 4096",
    "virga_pdpt: .skip 4096",
    "virga_pd: .skip 16384",
    "virga_stack: .skip 262144",
    "virga_stack_top:",
    ".text",
);
