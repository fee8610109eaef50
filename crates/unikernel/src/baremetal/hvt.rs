//! The `hvt` platform: every device is a hypercall to virga's monitor (see `hvt_abi`).

use core::sync::atomic::{AtomicU64, Ordering};

use hvt_abi::{BlockIo, BootInfo, HcResult, Hypercall, NetIo, Wire};

use super::{Early, arch};
use crate::{BlockInfo, Result, UnikernelError};

/// Stack the monitor's `rsp` starts from; kept out of the heap.
const STACK_RESERVE: u64 = 256 * 1024;

static TSC_KHZ: AtomicU64 = AtomicU64::new(0);
static TSC_START: AtomicU64 = AtomicU64::new(0);
static LAST_NS: AtomicU64 = AtomicU64::new(0);
static BLOCK_SECTORS: AtomicU64 = AtomicU64::new(0);
static BLOCK_SECTOR_SIZE: AtomicU64 = AtomicU64::new(0);
static NET_MAC: AtomicU64 = AtomicU64::new(0);
static NET_PRESENT: AtomicU64 = AtomicU64::new(0);

fn call<T: Wire>(h: Hypercall, arg: &mut T) {
    // Guest memory is at most 3 GiB (hvt_abi::layout::MAX_MEMORY), so the address fits in 32 bits.
    arch::hypercall(h.port(), arg as *mut T as usize as u32);
}

pub(crate) fn early(boot_info: u64) -> Early {
    let info = arch::boot_bytes(boot_info, BootInfo::SIZE).and_then(BootInfo::decode);
    let Some(info) = info.filter(|i| i.abi_version == u64::from(hvt_abi::ABI_VERSION)) else {
        exit(hvt_abi::exit::BAD_KERNEL)
    };
    TSC_KHZ.store(info.tsc_khz, Ordering::Relaxed);
    TSC_START.store(arch::rdtsc(), Ordering::Relaxed);
    BLOCK_SECTORS.store(info.block_sectors, Ordering::Relaxed);
    BLOCK_SECTOR_SIZE.store(info.block_sector_size, Ordering::Relaxed);
    NET_PRESENT.store(info.net_present, Ordering::Relaxed);
    NET_MAC.store(info.net_mac, Ordering::Relaxed);
    let cmdline = usize::try_from(info.cmdline_len)
        .ok()
        .and_then(|len| arch::boot_bytes(info.cmdline, len))
        .unwrap_or(&[]);
    let heap_start = arch::kernel_end()
        .max(info.kernel_end)
        .next_multiple_of(4096);
    Early {
        heap_start,
        heap_end: info.mem_size.saturating_sub(STACK_RESERVE),
        cmdline,
    }
}

pub(crate) fn console_write(bytes: &[u8]) {
    for chunk in bytes.chunks(hvt_abi::MAX_IO as usize) {
        let mut a = hvt_abi::Puts {
            data: chunk.as_ptr() as u64,
            len: chunk.len() as u64,
        };
        call(Hypercall::Puts, &mut a);
    }
}

pub(crate) fn wall_ns() -> u64 {
    let mut a = hvt_abi::Walltime::default();
    call(Hypercall::Walltime, &mut a);
    a.nsecs
}

pub(crate) fn monotonic_ns() -> u64 {
    let khz = TSC_KHZ.load(Ordering::Relaxed);
    let ns = if khz == 0 {
        wall_ns()
    } else {
        let ticks = arch::rdtsc().wrapping_sub(TSC_START.load(Ordering::Relaxed));
        (u128::from(ticks) * 1_000_000 / u128::from(khz)) as u64
    };
    // Never go backwards, whatever the source.
    LAST_NS.fetch_max(ns, Ordering::Relaxed).max(ns)
}

/// Waits in the monitor until `deadline_ns` or a network frame; `true` if a frame is waiting.
fn poll(deadline_ns: u64) -> bool {
    let timeout = deadline_ns.saturating_sub(monotonic_ns());
    let mut a = hvt_abi::Poll {
        timeout_nsecs: timeout,
        ready: 0,
    };
    call(Hypercall::Poll, &mut a);
    a.ready != 0
}

pub(crate) fn idle(deadline_ns: u64) {
    poll(deadline_ns);
}

pub(crate) fn random(buf: &mut [u8]) -> Result<()> {
    for chunk in buf.chunks_mut(hvt_abi::MAX_RANDOM as usize) {
        let mut a = hvt_abi::Random {
            data: chunk.as_mut_ptr() as u64,
            len: chunk.len() as u64,
            ret: 0,
        };
        call(Hypercall::Random, &mut a);
        if HcResult::from_u64(a.ret) != HcResult::Ok {
            return Err(UnikernelError::NoEntropy);
        }
    }
    Ok(())
}

pub(crate) fn exit(code: u8) -> ! {
    let mut a = hvt_abi::Halt {
        code: u64::from(code),
    };
    call(Hypercall::Halt, &mut a);
    arch::halt_forever()
}

/// The monitor's block device.
#[derive(Debug)]
pub struct Block {
    info: BlockInfo,
}

impl Block {
    pub(crate) fn open() -> Option<Self> {
        let sectors = BLOCK_SECTORS.load(Ordering::Relaxed);
        let size = u32::try_from(BLOCK_SECTOR_SIZE.load(Ordering::Relaxed)).ok()?;
        (sectors > 0 && size > 0).then_some(Self {
            info: BlockInfo {
                sector_size: size,
                sectors,
            },
        })
    }

    pub(crate) fn info(&self) -> BlockInfo {
        self.info
    }

    fn io(&mut self, h: Hypercall, sector: u64, addr: u64, len: usize) -> Result<()> {
        let ss = self.info.sector_size as usize;
        let chunk = (hvt_abi::MAX_IO as usize / ss) * ss;
        let mut done = 0;
        while done < len {
            let n = chunk.min(len - done);
            let mut a = BlockIo {
                sector: sector + (done / ss) as u64,
                data: addr + done as u64,
                len: n as u64,
                ret: 0,
            };
            call(h, &mut a);
            if HcResult::from_u64(a.ret) != HcResult::Ok {
                return Err(UnikernelError::Device("block I/O refused by the monitor"));
            }
            done += n;
        }
        Ok(())
    }

    pub(crate) fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<()> {
        self.io(
            Hypercall::BlockRead,
            sector,
            buf.as_mut_ptr() as u64,
            buf.len(),
        )
    }

    pub(crate) fn write(&mut self, sector: u64, buf: &[u8]) -> Result<()> {
        self.io(
            Hypercall::BlockWrite,
            sector,
            buf.as_ptr() as u64,
            buf.len(),
        )
    }

    pub(crate) fn flush(&mut self) -> Result<()> {
        // The monitor writes through to the file with pwrite; nothing is cached in the guest.
        Ok(())
    }
}

/// The monitor's network device.
#[derive(Debug)]
pub struct Nic {
    mac: [u8; 6],
}

impl Nic {
    pub(crate) fn open() -> Option<Self> {
        if NET_PRESENT.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let m = NET_MAC.load(Ordering::Relaxed).to_be_bytes();
        Some(Self {
            mac: [m[2], m[3], m[4], m[5], m[6], m[7]],
        })
    }
}

impl crate::netstack::Nic for Nic {
    fn mac(&self) -> [u8; 6] {
        self.mac
    }
    fn send(&mut self, frame: &[u8]) -> bool {
        let mut a = NetIo {
            data: frame.as_ptr() as u64,
            len: frame.len() as u64,
            ret: 0,
        };
        call(Hypercall::NetWrite, &mut a);
        HcResult::from_u64(a.ret) == HcResult::Ok
    }
    fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        let mut a = NetIo {
            data: buf.as_mut_ptr() as u64,
            len: buf.len() as u64,
            ret: 0,
        };
        call(Hypercall::NetRead, &mut a);
        (HcResult::from_u64(a.ret) == HcResult::Ok).then_some((a.len as usize).min(buf.len()))
    }
    fn now_ns(&self) -> u64 {
        monotonic_ns()
    }
    fn wait(&mut self, deadline_ns: u64) {
        poll(deadline_ns);
    }
}
