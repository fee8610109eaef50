//! virtio-mmio (version 2) transport and the block and network drivers, polled, on top of the
//! safe [`SplitQueue`].

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, Ordering};

use super::arch::MmioRegion;
use super::microvm::monotonic_ns;
use crate::UnikernelError;
use crate::virtio::queue::{Buf, SplitQueue};

const VERSION: u64 = 0x004;
const DEVICE_FEATURES: u64 = 0x010;
const DEVICE_FEATURES_SEL: u64 = 0x014;
const DRIVER_FEATURES: u64 = 0x020;
const DRIVER_FEATURES_SEL: u64 = 0x024;
const QUEUE_SEL: u64 = 0x030;
const QUEUE_NUM_MAX: u64 = 0x034;
const QUEUE_NUM: u64 = 0x038;
const QUEUE_READY: u64 = 0x044;
const QUEUE_NOTIFY: u64 = 0x050;
const STATUS: u64 = 0x070;
const QUEUE_DESC: u64 = 0x080;
const QUEUE_DRIVER: u64 = 0x090;
const QUEUE_DEVICE: u64 = 0x0a0;
const CONFIG: u64 = 0x100;

const S_ACK: u32 = 1;
const S_DRIVER: u32 = 2;
const S_DRIVER_OK: u32 = 4;
const S_FEATURES_OK: u32 = 8;
const S_FAILED: u32 = 128;

const F_VERSION_1: u64 = 1 << 32;
const NET_F_MAC: u64 = 1 << 5;

/// Longest a request may take before the driver gives up on the device.
const IO_TIMEOUT_NS: u64 = 10_000_000_000;

fn dev_err(msg: &'static str) -> UnikernelError {
    UnikernelError::Device(msg)
}

/// An initialised virtio-mmio transport.
#[derive(Debug)]
struct Transport {
    regs: MmioRegion,
}

impl Transport {
    /// Resets and negotiates `wanted` features (VERSION_1 is required).
    fn new(regs: MmioRegion, wanted: u64) -> Result<(Self, u64), UnikernelError> {
        if regs.read32(VERSION) != 2 {
            return Err(dev_err(
                "legacy virtio-mmio (run QEMU with virtio-mmio.force-legacy=false)",
            ));
        }
        let t = Self { regs };
        t.regs.write32(STATUS, 0);
        t.regs.write32(STATUS, S_ACK);
        t.regs.write32(STATUS, S_ACK | S_DRIVER);
        t.regs.write32(DEVICE_FEATURES_SEL, 0);
        let lo = u64::from(t.regs.read32(DEVICE_FEATURES));
        t.regs.write32(DEVICE_FEATURES_SEL, 1);
        let hi = u64::from(t.regs.read32(DEVICE_FEATURES));
        let features = ((hi << 32) | lo) & (wanted | F_VERSION_1);
        if features & F_VERSION_1 == 0 {
            t.regs.write32(STATUS, S_FAILED);
            return Err(dev_err("device does not offer VIRTIO_F_VERSION_1"));
        }
        t.regs.write32(DRIVER_FEATURES_SEL, 0);
        t.regs.write32(DRIVER_FEATURES, features as u32);
        t.regs.write32(DRIVER_FEATURES_SEL, 1);
        t.regs.write32(DRIVER_FEATURES, (features >> 32) as u32);
        t.regs.write32(STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
        if t.regs.read32(STATUS) & S_FEATURES_OK == 0 {
            t.regs.write32(STATUS, S_FAILED);
            return Err(dev_err("device refused the features"));
        }
        Ok((t, features))
    }

    fn setup_queue<const N: usize>(
        &self,
        idx: u32,
        q: &SplitQueue<N>,
    ) -> Result<(), UnikernelError> {
        self.regs.write32(QUEUE_SEL, idx);
        if self.regs.read32(QUEUE_READY) != 0 {
            return Err(dev_err("queue already in use"));
        }
        if (self.regs.read32(QUEUE_NUM_MAX) as usize) < N {
            return Err(dev_err("queue too small"));
        }
        self.regs.write32(QUEUE_NUM, N as u32);
        let (d, a, u) = q.addresses();
        for (reg, addr) in [(QUEUE_DESC, d), (QUEUE_DRIVER, a), (QUEUE_DEVICE, u)] {
            self.regs.write32(reg, addr as u32);
            self.regs.write32(reg + 4, (addr >> 32) as u32);
        }
        self.regs.write32(QUEUE_READY, 1);
        Ok(())
    }

    fn driver_ok(&self) {
        self.regs
            .write32(STATUS, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    }

    fn notify(&self, idx: u32) {
        self.regs.write32(QUEUE_NOTIFY, idx);
    }
}

/// Waits (polling) for the device to return a chain.
fn wait_used<const N: usize>(q: &mut SplitQueue<N>) -> Result<(u16, u32), UnikernelError> {
    let deadline = monotonic_ns().saturating_add(IO_TIMEOUT_NS);
    loop {
        match q.pop_used() {
            Ok(Some(x)) => return Ok(x),
            Ok(None) if monotonic_ns() > deadline => return Err(dev_err("device timed out")),
            Ok(None) => core::hint::spin_loop(),
            Err(_) => return Err(dev_err("device returned a bad descriptor id")),
        }
    }
}

const BLK_T_IN: u32 = 0;
const BLK_T_OUT: u32 = 1;
const BLK_T_FLUSH: u32 = 4;
/// Largest data buffer of one block request.
const BLK_MAX_IO: usize = 64 * 1024;

/// The virtio-blk driver: one synchronous request at a time.
#[derive(Debug)]
pub struct VirtioBlk {
    t: Transport,
    q: SplitQueue<8>,
    capacity: u64,
    header: Box<[u8; 16]>,
    status: Box<AtomicU8>,
}

impl VirtioBlk {
    pub fn new(regs: MmioRegion) -> Result<Self, UnikernelError> {
        let (t, _) = Transport::new(regs, 0)?;
        let q = SplitQueue::new();
        t.setup_queue(0, &q)?;
        let capacity =
            u64::from(t.regs.read32(CONFIG)) | (u64::from(t.regs.read32(CONFIG + 4)) << 32);
        t.driver_ok();
        Ok(Self {
            t,
            q,
            capacity,
            header: Box::new([0; 16]),
            status: Box::new(AtomicU8::new(0xff)),
        })
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    fn request(&mut self, kind: u32, sector: u64, data: Option<Buf>) -> Result<(), UnikernelError> {
        self.header[..4].copy_from_slice(&kind.to_le_bytes());
        self.header[4..8].fill(0);
        self.header[8..].copy_from_slice(&sector.to_le_bytes());
        self.status.store(0xff, Ordering::Relaxed);
        let hdr = Buf {
            addr: self.header.as_ptr() as u64,
            len: 16,
            device_writes: false,
        };
        let st = Buf {
            addr: &*self.status as *const AtomicU8 as u64,
            len: 1,
            device_writes: true,
        };
        let mut chain: Vec<Buf> = Vec::with_capacity(3);
        chain.push(hdr);
        chain.extend(data);
        chain.push(st);
        self.q
            .add(&chain)
            .map_err(|_| dev_err("block queue full"))?;
        self.t.notify(0);
        wait_used(&mut self.q)?;
        match self.status.load(Ordering::Acquire) {
            0 => Ok(()),
            1 => Err(dev_err("block I/O error")),
            _ => Err(dev_err("block request unsupported")),
        }
    }

    pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), UnikernelError> {
        for (i, chunk) in buf.chunks_mut(BLK_MAX_IO).enumerate() {
            let b = Buf {
                addr: chunk.as_mut_ptr() as u64,
                len: chunk.len() as u32,
                device_writes: true,
            };
            self.request(BLK_T_IN, sector + (i * BLK_MAX_IO / 512) as u64, Some(b))?;
            // The device wrote `chunk` behind the compiler's back; make sure it is re-read.
            core::hint::black_box(&mut *chunk);
        }
        Ok(())
    }

    pub fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), UnikernelError> {
        for (i, chunk) in buf.chunks(BLK_MAX_IO).enumerate() {
            let b = Buf {
                addr: chunk.as_ptr() as u64,
                len: chunk.len() as u32,
                device_writes: false,
            };
            self.request(BLK_T_OUT, sector + (i * BLK_MAX_IO / 512) as u64, Some(b))?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), UnikernelError> {
        self.request(BLK_T_FLUSH, 0, None)
    }
}

/// virtio-net header with VIRTIO_F_VERSION_1 (num_buffers included).
const NET_HDR: usize = 12;
const NET_BUF: usize = NET_HDR + crate::netstack::MAX_FRAME;
const NET_QUEUE: usize = 16;

/// The virtio-net driver: `NET_QUEUE` receive buffers kept posted, `NET_QUEUE` transmit buffers.
#[derive(Debug)]
pub struct VirtioNet {
    t: Transport,
    mac: [u8; 6],
    rxq: SplitQueue<NET_QUEUE>,
    txq: SplitQueue<NET_QUEUE>,
    /// Receive buffers; never resized, so their addresses stay valid for the device.
    rx_bufs: Vec<[u8; NET_BUF]>,
    /// Receive buffer index by descriptor head.
    rx_of_head: [usize; NET_QUEUE],
    /// Transmit buffers; never resized.
    tx_bufs: Vec<[u8; NET_BUF]>,
    tx_free: Vec<usize>,
    tx_of_head: [usize; NET_QUEUE],
}

impl VirtioNet {
    pub fn new(regs: MmioRegion) -> Result<Self, UnikernelError> {
        let (t, features) = Transport::new(regs, NET_F_MAC)?;
        let mut mac = [0x02, 0, 0, 0, 0, 0x01];
        if features & NET_F_MAC != 0 {
            for (i, b) in mac.iter_mut().enumerate() {
                *b = t.regs.read8(CONFIG + i as u64);
            }
        }
        let rxq = SplitQueue::new();
        let txq = SplitQueue::new();
        t.setup_queue(0, &rxq)?;
        t.setup_queue(1, &txq)?;
        let mut net = Self {
            t,
            mac,
            rxq,
            txq,
            rx_bufs: vec![[0; NET_BUF]; NET_QUEUE],
            rx_of_head: [0; NET_QUEUE],
            tx_bufs: vec![[0; NET_BUF]; NET_QUEUE],
            tx_free: (0..NET_QUEUE).collect(),
            tx_of_head: [0; NET_QUEUE],
        };
        net.t.driver_ok();
        for i in 0..NET_QUEUE {
            net.post_rx(i)?;
        }
        net.t.notify(0);
        Ok(net)
    }

    fn post_rx(&mut self, i: usize) -> Result<(), UnikernelError> {
        let b = Buf {
            addr: self.rx_bufs[i].as_mut_ptr() as u64,
            len: NET_BUF as u32,
            device_writes: true,
        };
        let head = self.rxq.add(&[b]).map_err(|_| dev_err("rx queue full"))?;
        self.rx_of_head[usize::from(head)] = i;
        Ok(())
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn rx_ready(&self) -> bool {
        self.rxq.has_used()
    }

    pub fn recv(&mut self, out: &mut [u8]) -> Option<usize> {
        let (head, len) = self.rxq.pop_used().ok()??;
        let i = self.rx_of_head[usize::from(head)];
        let buf = core::hint::black_box(&mut self.rx_bufs[i]);
        let len = (len as usize).clamp(NET_HDR, NET_BUF);
        let frame = &buf[NET_HDR..len];
        let n = frame.len().min(out.len());
        out[..n].copy_from_slice(&frame[..n]);
        // Give the buffer back to the device.
        if self.post_rx(i).is_ok() {
            self.t.notify(0);
        }
        Some(n)
    }

    fn reclaim_tx(&mut self) {
        while let Ok(Some((head, _))) = self.txq.pop_used() {
            self.tx_free.push(self.tx_of_head[usize::from(head)]);
        }
    }

    pub fn send(&mut self, frame: &[u8]) -> bool {
        self.reclaim_tx();
        if frame.len() > crate::netstack::MAX_FRAME {
            return false;
        }
        let Some(i) = self.tx_free.pop() else {
            return false;
        };
        let buf = &mut self.tx_bufs[i];
        buf[..NET_HDR].fill(0);
        buf[NET_HDR..NET_HDR + frame.len()].copy_from_slice(frame);
        let b = Buf {
            addr: buf.as_ptr() as u64,
            len: (NET_HDR + frame.len()) as u32,
            device_writes: false,
        };
        match self.txq.add(&[b]) {
            Ok(head) => {
                self.tx_of_head[usize::from(head)] = i;
                self.t.notify(1);
                true
            }
            Err(_) => {
                self.tx_free.push(i);
                false
            }
        }
    }
}
