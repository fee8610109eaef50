//! The contract between `hvt-monitor` (host) and a unikernel built for the `hvt` target (guest).
//!
//! Pipeline position: application crate → `unikernel-build` → ELF → **hvt monitor ⇄ guest**.
//! Everything both sides must agree on lives here and nowhere else:
//!
//! * how the guest is entered ([`BootInfo`], [`layout`]),
//! * how it calls the host ([`Hypercall`], the argument structs, [`HcResult`]),
//! * how the ELF declares which ABI it speaks ([`note`]),
//! * what the monitor's exit status means, and how a microvm guest reports its own ([`exit`]).
//!
//! # Calling convention
//! A hypercall is one `out` instruction: `out dx, eax` with `dx = PORT_BASE + nr` and `eax` the
//! guest-physical address of the argument struct (so argument structs live below 4 GiB; the
//! monitor caps guest memory at [`layout::MAX_MEMORY`]). The monitor validates the address and
//! every pointer/length inside the struct against guest memory, performs the call, writes the
//! `out` fields back into the struct and resumes the guest after the `out` instruction.
//! Any invalid call ends the guest with [`exit::GUEST_FAULT`].
//!
//! All argument structs are `#[repr(C)]` and made of `u64` fields only, so their layout is the
//! field order in little-endian with no padding. The host never reinterprets guest memory as a
//! Rust type: it decodes with [`Wire::decode`] from bytes it has bounds-checked.
//!
//! Changing anything here is an ABI change: bump [`ABI_VERSION`] and update `docs/unikernel.md`.

#![no_std]

/// Version of this ABI. The guest ELF carries it in a [`note`]; the monitor refuses other
/// versions, and passes it back in [`BootInfo::abi_version`].
pub const ABI_VERSION: u32 = 1;

/// Port of hypercall number 0; hypercall `nr` is `out` to `PORT_BASE + nr`.
pub const PORT_BASE: u16 = 0x500;

/// Hypercall numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Hypercall {
    /// [`Walltime`]: wall-clock time in nanoseconds since the Unix epoch.
    Walltime = 1,
    /// [`Puts`]: write bytes to the console.
    Puts = 2,
    /// [`Poll`]: wait until the network has a frame or the timeout passes.
    Poll = 3,
    /// [`BlockIo`]: write whole sectors to the block device.
    BlockWrite = 4,
    /// [`BlockIo`]: read whole sectors from the block device.
    BlockRead = 5,
    /// [`NetIo`]: send one Ethernet frame.
    NetWrite = 6,
    /// [`NetIo`]: receive one Ethernet frame, [`HcResult::Again`] when none is waiting.
    NetRead = 7,
    /// [`Halt`]: end the guest with an exit code.
    Halt = 8,
    /// [`Random`]: fill a buffer with bytes from the host's CSPRNG.
    Random = 9,
}

impl Hypercall {
    /// All hypercalls, in number order.
    pub const ALL: [Self; 9] = [
        Self::Walltime,
        Self::Puts,
        Self::Poll,
        Self::BlockWrite,
        Self::BlockRead,
        Self::NetWrite,
        Self::NetRead,
        Self::Halt,
        Self::Random,
    ];

    /// The hypercall for an I/O port, if the port is one.
    pub fn from_port(port: u16) -> Option<Self> {
        let nr = port.checked_sub(PORT_BASE)?;
        Self::ALL.into_iter().find(|h| *h as u16 == nr)
    }

    /// The I/O port the guest writes to for this hypercall.
    pub const fn port(self) -> u16 {
        PORT_BASE + self as u16
    }

    /// Size in bytes of the argument struct of this hypercall.
    pub const fn arg_size(self) -> usize {
        match self {
            Self::Walltime => Walltime::SIZE,
            Self::Puts => Puts::SIZE,
            Self::Poll => Poll::SIZE,
            Self::BlockWrite | Self::BlockRead => BlockIo::SIZE,
            Self::NetWrite | Self::NetRead => NetIo::SIZE,
            Self::Halt => Halt::SIZE,
            Self::Random => Random::SIZE,
        }
    }
}

/// Result of a hypercall, written to the struct's `ret` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum HcResult {
    /// Done.
    Ok = 0,
    /// Nothing to do now (no frame waiting); try again after [`Hypercall::Poll`].
    Again = 1,
    /// The request was well-formed but not valid for this device (bad sector, no device, too
    /// long).
    Invalid = 2,
    /// The host failed to carry it out (I/O error).
    Unspecified = 3,
}

impl HcResult {
    /// Decodes a `ret` field; unknown values read as [`HcResult::Unspecified`].
    pub const fn from_u64(v: u64) -> Self {
        match v {
            0 => Self::Ok,
            1 => Self::Again,
            2 => Self::Invalid,
            _ => Self::Unspecified,
        }
    }
}

/// Byte-level encoding of the `u64`-only argument structs (little-endian, field order).
pub trait Wire: Sized {
    /// Number of `u64` fields.
    const FIELDS: usize;
    /// Encoded size in bytes.
    const SIZE: usize = Self::FIELDS * 8;
    /// Decodes from exactly [`Wire::SIZE`] bytes; `None` when `bytes` has another length.
    fn decode(bytes: &[u8]) -> Option<Self>;
    /// Encodes into exactly [`Wire::SIZE`] bytes; returns `false` when `out` has another length.
    fn encode(&self, out: &mut [u8]) -> bool;
}

macro_rules! wire_struct {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        #[repr(C)]
        pub struct $name { $($(#[$fm])* pub $field: u64),+ }

        impl Wire for $name {
            const FIELDS: usize = [$(stringify!($field)),+].len();
            fn decode(bytes: &[u8]) -> Option<Self> {
                if bytes.len() != Self::SIZE {
                    return None;
                }
                let mut words = bytes.chunks_exact(8).map(|c| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(c);
                    u64::from_le_bytes(w)
                });
                Some(Self { $($field: words.next()?),+ })
            }
            fn encode(&self, out: &mut [u8]) -> bool {
                if out.len() != Self::SIZE {
                    return false;
                }
                let words = [$(self.$field),+];
                for (chunk, w) in out.chunks_exact_mut(8).zip(words) {
                    chunk.copy_from_slice(&w.to_le_bytes());
                }
                true
            }
        }

        // The in-memory layout the guest uses must equal the wire encoding.
        const _: () = assert!(core::mem::size_of::<$name>() == <$name as Wire>::SIZE);
    };
}

wire_struct!(
    /// Arguments of [`Hypercall::Walltime`].
    Walltime {
        /// out: nanoseconds since 1970-01-01T00:00:00Z.
        nsecs,
    }
);

wire_struct!(
    /// Arguments of [`Hypercall::Puts`]. At most [`MAX_IO`] bytes per call.
    Puts {
        /// in: guest-physical address of the bytes.
        data,
        /// in: number of bytes.
        len,
    }
);

wire_struct!(
    /// Arguments of [`Hypercall::Poll`].
    Poll {
        /// in: longest time to wait, in nanoseconds (capped by the monitor at 1 s per call).
        timeout_nsecs,
        /// out: 1 when a network frame is waiting, else 0.
        ready,
    }
);

wire_struct!(
    /// Arguments of [`Hypercall::BlockRead`] and [`Hypercall::BlockWrite`].
    BlockIo {
        /// in: first sector.
        sector,
        /// in: guest-physical address of the buffer.
        data,
        /// in: bytes; a non-zero multiple of the sector size, at most [`MAX_IO`].
        len,
        /// out: an [`HcResult`].
        ret,
    }
);

wire_struct!(
    /// Arguments of [`Hypercall::NetRead`] and [`Hypercall::NetWrite`].
    NetIo {
        /// in: guest-physical address of the frame buffer.
        data,
        /// in: frame length (write) or buffer capacity (read); out (read): frame length.
        len,
        /// out: an [`HcResult`].
        ret,
    }
);

wire_struct!(
    /// Arguments of [`Hypercall::Halt`].
    Halt {
        /// in: exit code; the monitor exits with `code & 0xff`.
        code,
    }
);

wire_struct!(
    /// Arguments of [`Hypercall::Random`]. At most [`MAX_RANDOM`] bytes per call.
    Random {
        /// in: guest-physical address of the buffer.
        data,
        /// in: number of bytes.
        len,
        /// out: an [`HcResult`].
        ret,
    }
);

wire_struct!(
    /// What the monitor tells the guest at entry; its guest-physical address is in `rdi`.
    BootInfo {
        /// [`ABI_VERSION`] of the monitor.
        abi_version,
        /// Bytes of guest memory, identity-mapped from address 0.
        mem_size,
        /// First byte after the loaded kernel image (end of its highest segment).
        kernel_end,
        /// TSC frequency in kHz (0 when the host does not know it).
        tsc_khz,
        /// Guest-physical address of the command line (UTF-8, not NUL-terminated).
        cmdline,
        /// Length of the command line in bytes.
        cmdline_len,
        /// Block device size in sectors (0 when no block device is attached).
        block_sectors,
        /// Block device sector size in bytes (0 when no block device is attached).
        block_sector_size,
        /// 1 when a network device is attached.
        net_present,
        /// MAC address of the guest's network interface, in the low 48 bits (big-endian order:
        /// byte 0 of the address is bits 40..48).
        net_mac,
        /// MTU of the network interface (payload bytes of an Ethernet frame).
        net_mtu,
    }
);

/// Largest `len` of one console, block or network transfer.
pub const MAX_IO: u64 = 64 * 1024;
/// Largest `len` of one [`Hypercall::Random`] call.
pub const MAX_RANDOM: u64 = 256;
/// Largest timeout honoured by one [`Hypercall::Poll`] call, in nanoseconds.
pub const MAX_POLL_NSECS: u64 = 1_000_000_000;

/// Guest-physical memory layout set up by the monitor.
pub mod layout {
    /// Global descriptor table.
    pub const GDT: u64 = 0x1000;
    /// [`crate::BootInfo`].
    pub const BOOT_INFO: u64 = 0x2000;
    /// Command line, at most [`CMDLINE_MAX`] bytes.
    pub const CMDLINE: u64 = 0x3000;
    /// Largest command line.
    pub const CMDLINE_MAX: u64 = 0x1000;
    /// Level-4 page table; followed by one PDPT page and four page-directory pages that
    /// identity-map the first 4 GiB with 2 MiB pages.
    pub const PML4: u64 = 0x10000;
    /// Lowest address a kernel segment may be loaded at; everything below belongs to the monitor.
    pub const KERNEL_MIN: u64 = 0x10_0000;
    /// Smallest guest memory.
    pub const MIN_MEMORY: u64 = 2 * 1024 * 1024;
    /// Largest guest memory (hypercall argument addresses are 32-bit).
    pub const MAX_MEMORY: u64 = 3 * 1024 * 1024 * 1024;
}

/// The ELF note that marks an hvt unikernel and carries its ABI version.
///
/// Owner `"VIRGA"`, type [`note::TYPE_ABI`], descriptor: the ABI version as a little-endian
/// `u32`. The monitor refuses an ELF without it.
pub mod note {
    /// Note owner name (without the NUL terminator).
    pub const OWNER: &[u8] = b"VIRGA";
    /// Note type of the ABI version note.
    pub const TYPE_ABI: u32 = 0x5649_0001;
}

/// Exit status of the `hvt` monitor (and of `virga unikernel run` on every target).
///
/// `0..=199` is the application's own exit code, passed through unchanged; the values below are
/// the monitor's and runner's own outcomes.
pub mod exit {
    /// The console line that carries a unikernel's exit code to `unikernel-build` on targets
    /// whose VMM cannot return it (QEMU microvm: QEMU's own exit status can only carry
    /// `(code << 1) | 1`): `virga-unikernel-exit: CODE` on a line of its own.
    pub const CONSOLE_MARKER: &str = "virga-unikernel-exit: ";
    /// The application panicked (same code as a panicking Rust process).
    pub const PANIC: u8 = 101;
    /// Bad command line or configuration of the monitor/runner (missing file, bad option).
    pub const USAGE: u8 = 200;
    /// The kernel file is not a loadable hvt unikernel (not ELF, corrupt, wrong ABI, too big).
    pub const BAD_KERNEL: u8 = 201;
    /// The hypervisor (KVM or QEMU) is missing or could not set up the VM.
    pub const HYPERVISOR: u8 = 202;
    /// The guest did something invalid: a hypercall with a bad number, pointer or size, an access
    /// outside its memory, a triple fault, an unexpected VM exit.
    pub const GUEST_FAULT: u8 = 203;
    /// The guest ran past its time budget and was stopped.
    pub const TIMEOUT: u8 = 204;
    /// A host-side device failed (TAP, block file).
    pub const HOST_IO: u8 = 205;
    /// Largest exit code an application should use to stay distinguishable.
    pub const APP_MAX: u8 = 199;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_round_trip() {
        for h in Hypercall::ALL {
            assert_eq!(Hypercall::from_port(h.port()), Some(h));
        }
        assert_eq!(Hypercall::from_port(PORT_BASE), None);
        assert_eq!(Hypercall::from_port(PORT_BASE + 10), None);
        assert_eq!(Hypercall::from_port(0x3f8), None);
        assert_eq!(Hypercall::from_port(0), None);
    }

    #[test]
    fn wire_round_trip_and_layout() {
        let b = BlockIo {
            sector: 7,
            data: 0x20_0000,
            len: 512,
            ret: 3,
        };
        let mut buf = [0u8; BlockIo::SIZE];
        assert!(b.encode(&mut buf));
        assert_eq!(&buf[..8], &7u64.to_le_bytes());
        assert_eq!(&buf[16..24], &512u64.to_le_bytes());
        assert_eq!(BlockIo::decode(&buf), Some(b));
        assert_eq!(BlockIo::decode(&buf[1..]), None);
        assert!(!b.encode(&mut [0u8; 8]));
        assert_eq!(BootInfo::SIZE, 88);
        assert_eq!(Hypercall::Halt.arg_size(), 8);
    }

    #[test]
    fn result_codes() {
        for r in [
            HcResult::Ok,
            HcResult::Again,
            HcResult::Invalid,
            HcResult::Unspecified,
        ] {
            assert_eq!(HcResult::from_u64(r as u64), r);
        }
        assert_eq!(HcResult::from_u64(99), HcResult::Unspecified);
    }
}
