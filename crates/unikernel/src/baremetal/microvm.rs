//! The `microvm` platform: PVH boot on QEMU `-M microvm` (or any PVH loader), 16550 serial
//! console, TSC clock calibrated against the PIT, CMOS RTC wall clock, RDRAND entropy, virtio-mmio
//! block and network devices, and QEMU's `isa-debug-exit` to end the VM.

use core::sync::atomic::{AtomicU64, Ordering};

use super::virtio_drv::{VirtioBlk, VirtioNet};
use super::{Early, arch};
use crate::{BlockInfo, Result, UnikernelError};

static TSC_HZ: AtomicU64 = AtomicU64::new(1_000_000_000);
static TSC_START: AtomicU64 = AtomicU64::new(0);
static WALL_AT_START: AtomicU64 = AtomicU64::new(0);

/// `hvm_start_info` magic.
const PVH_MAGIC: u32 = 0x336e_c578;
/// Heap used when the loader gives no memory map.
const FALLBACK_HEAP: u64 = 16 * 1024 * 1024;
/// The console line that carries the exit code to `unikernel-build`.
pub use hvt_abi::exit::CONSOLE_MARKER as EXIT_MARKER;

fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from(u32_at(b, off)) | (u64::from(u32_at(b, off + 4)) << 32)
}

/// Measures the TSC frequency against PIT channel 0 over ~10 ms.
fn calibrate_tsc() -> Option<u64> {
    arch::pit::start_free_running();
    let target = arch::pit::HZ / 100;
    let mut prev = arch::pit::read();
    let t0 = arch::rdtsc();
    let mut elapsed = 0u64;
    let mut spins = 0u64;
    while elapsed < target {
        let cur = arch::pit::read();
        elapsed += u64::from(prev.wrapping_sub(cur));
        prev = cur;
        spins += 1;
        if spins > 50_000_000 || (spins > 100_000 && elapsed == 0) {
            return None; // no PIT
        }
    }
    let ticks = arch::rdtsc().wrapping_sub(t0);
    Some((u128::from(ticks) * u128::from(arch::pit::HZ) / u128::from(elapsed)) as u64)
}

fn bcd(v: u8, binary: bool) -> u64 {
    u64::from(if binary {
        v
    } else {
        (v & 0x0f) + (v >> 4) * 10
    })
}

/// Days from 1970-01-01 to the civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: u64, d: u64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Reads the CMOS RTC as seconds since the epoch.
fn rtc_unix_secs() -> u64 {
    use arch::rtc::read;
    for _ in 0..1_000_000 {
        if read(0x0a) & 0x80 == 0 {
            break;
        }
    }
    let b = read(0x0b);
    let binary = b & 0x04 != 0;
    let sec = bcd(read(0x00), binary);
    let min = bcd(read(0x02), binary);
    let hour_raw = read(0x04);
    let pm = hour_raw & 0x80 != 0;
    let mut hour = bcd(hour_raw & 0x7f, binary);
    if b & 0x02 == 0 && pm {
        hour = (hour % 12) + 12;
    }
    let day = bcd(read(0x07), binary);
    let month = bcd(read(0x08), binary);
    let year = bcd(read(0x09), binary);
    let century = match bcd(read(0x32), binary) {
        c @ 19..=30 => c,
        _ => 20,
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return 0;
    }
    let days = days_from_civil((century * 100 + year) as i64, month, day);
    (days.max(0) as u64) * 86_400 + hour * 3600 + min * 60 + sec
}

pub(crate) fn early(start_info: u64) -> Early {
    let hz = calibrate_tsc().unwrap_or(1_000_000_000);
    TSC_HZ.store(hz.max(1), Ordering::Relaxed);
    TSC_START.store(arch::rdtsc(), Ordering::Relaxed);
    WALL_AT_START.store(
        rtc_unix_secs().saturating_mul(1_000_000_000),
        Ordering::Relaxed,
    );

    let kernel_end = arch::kernel_end().next_multiple_of(4096);
    let si = arch::boot_bytes(start_info, 56).filter(|s| u32_at(s, 0) == PVH_MAGIC);
    let mut heap_end = kernel_end + FALLBACK_HEAP;
    let mut cmdline: &'static [u8] = &[];
    if let Some(si) = si {
        let cmd = u64_at(si, 24);
        if let Some(bytes) = arch::boot_bytes(cmd, 4096) {
            let len = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
            cmdline = &bytes[..len];
        }
        let version = u32_at(si, 4);
        let (map, entries) = (u64_at(si, 40), u32_at(si, 48) as usize);
        if version >= 1
            && let Some(m) = arch::boot_bytes(map, entries.min(128) * 24)
        {
            // Largest usable end of the RAM entry that holds the kernel, below the MMIO hole.
            for e in m.chunks_exact(24) {
                let (addr, size, kind) = (u64_at(e, 0), u64_at(e, 8), u32_at(e, 16));
                let end = addr.saturating_add(size).min(arch::VIRTIO_MMIO_BASE);
                if kind == 1 && addr <= kernel_end && end > kernel_end {
                    heap_end = end;
                }
            }
        }
    }
    Early {
        heap_start: kernel_end,
        heap_end,
        cmdline,
    }
}

pub(crate) fn console_write(bytes: &[u8]) {
    for &b in bytes {
        if b == b'\n' {
            arch::serial::put(b'\r');
        }
        arch::serial::put(b);
    }
}

pub(crate) fn monotonic_ns() -> u64 {
    let ticks = arch::rdtsc().wrapping_sub(TSC_START.load(Ordering::Relaxed));
    (u128::from(ticks) * 1_000_000_000 / u128::from(TSC_HZ.load(Ordering::Relaxed))) as u64
}

pub(crate) fn wall_ns() -> u64 {
    WALL_AT_START
        .load(Ordering::Relaxed)
        .saturating_add(monotonic_ns())
}

pub(crate) fn idle(_deadline_ns: u64) {
    // No interrupts: waiting is polling.
    for _ in 0..64 {
        arch::pause();
    }
}

pub(crate) fn random(buf: &mut [u8]) -> Result<()> {
    for chunk in buf.chunks_mut(8) {
        let v = arch::rdrand()
            .ok_or(UnikernelError::NoEntropy)?
            .to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    Ok(())
}

pub(crate) fn exit(code: u8) -> ! {
    crate::print!("\n{EXIT_MARKER}{code}\n");
    arch::debug_exit(code);
    arch::halt_forever()
}

fn find_device(device_id: u32) -> Option<arch::MmioRegion> {
    (0..arch::VIRTIO_MMIO_SLOTS)
        .rev()
        .filter_map(arch::MmioRegion::probe)
        .find(|r| r.read32(0x008) == device_id)
}

/// The virtio-blk device.
#[derive(Debug)]
pub struct Block(VirtioBlk);

impl Block {
    pub(crate) fn open() -> Option<Self> {
        match VirtioBlk::new(find_device(2)?) {
            Ok(b) => Some(Self(b)),
            Err(e) => {
                crate::println!("virtio-blk: {e}");
                None
            }
        }
    }
    pub(crate) fn info(&self) -> BlockInfo {
        BlockInfo {
            sector_size: 512,
            sectors: self.0.capacity(),
        }
    }
    pub(crate) fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<()> {
        self.0.read(sector, buf)
    }
    pub(crate) fn write(&mut self, sector: u64, buf: &[u8]) -> Result<()> {
        self.0.write(sector, buf)
    }
    pub(crate) fn flush(&mut self) -> Result<()> {
        self.0.flush()
    }
}

/// The virtio-net device.
#[derive(Debug)]
pub struct Nic(VirtioNet);

impl Nic {
    pub(crate) fn open() -> Option<Self> {
        match VirtioNet::new(find_device(1)?) {
            Ok(n) => Some(Self(n)),
            Err(e) => {
                crate::println!("virtio-net: {e}");
                None
            }
        }
    }
}

impl crate::netstack::Nic for Nic {
    fn mac(&self) -> [u8; 6] {
        self.0.mac()
    }
    fn send(&mut self, frame: &[u8]) -> bool {
        self.0.send(frame)
    }
    fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.0.recv(buf)
    }
    fn now_ns(&self) -> u64 {
        monotonic_ns()
    }
    fn wait(&mut self, deadline_ns: u64) {
        while !self.0.rx_ready() && monotonic_ns() < deadline_ns {
            idle(deadline_ns);
        }
    }
}
