//! A virtio 1.x split virtqueue of `N` descriptors, in safe code.
//!
//! The three rings are shared with the device, so every field is an atomic: the driver publishes
//! with `Release` and reads the device's progress with `Acquire`. The memory is identity-mapped
//! on bare metal, so a ring's address is its physical address. Everything the device writes (used
//! ring ids and lengths) is validated before use: a buggy device makes [`SplitQueue::pop_used`]
//! return an error, never index out of bounds.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering, fence};

/// Descriptor continues in `next`.
pub const DESC_F_NEXT: u16 = 1;
/// The device writes this buffer.
pub const DESC_F_WRITE: u16 = 2;

/// One descriptor.
#[derive(Debug)]
#[repr(C, align(16))]
pub struct Desc {
    addr: AtomicU64,
    len: AtomicU32,
    flags: AtomicU16,
    next: AtomicU16,
}

impl Desc {
    const fn new() -> Self {
        Self {
            addr: AtomicU64::new(0),
            len: AtomicU32::new(0),
            flags: AtomicU16::new(0),
            next: AtomicU16::new(0),
        }
    }
}

/// The driver ("available") ring.
#[derive(Debug)]
#[repr(C, align(2))]
pub struct AvailRing<const N: usize> {
    flags: AtomicU16,
    idx: AtomicU16,
    ring: [AtomicU16; N],
    used_event: AtomicU16,
}

/// One used-ring element.
#[derive(Debug)]
#[repr(C)]
pub struct UsedElem {
    id: AtomicU32,
    len: AtomicU32,
}

/// The device ("used") ring.
#[derive(Debug)]
#[repr(C, align(4))]
pub struct UsedRing<const N: usize> {
    flags: AtomicU16,
    idx: AtomicU16,
    ring: [UsedElem; N],
    avail_event: AtomicU16,
}

/// A buffer of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buf {
    /// Physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// The device writes it (else reads it).
    pub device_writes: bool,
}

/// Queue errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// Not enough free descriptors for the chain (or an empty chain).
    Full,
    /// The device returned an id that is not an outstanding chain.
    BadUsedId(u32),
}

/// A split virtqueue of `N` descriptors (`N` a power of two, at most 32768).
#[derive(Debug)]
pub struct SplitQueue<const N: usize> {
    desc: Box<[Desc; N]>,
    avail: Box<AvailRing<N>>,
    used: Box<UsedRing<N>>,
    free_head: u16,
    num_free: u16,
    avail_idx: u16,
    last_used: u16,
    /// Number of descriptors of each outstanding chain, by head (0: not outstanding).
    chain_len: [u16; N],
}

impl<const N: usize> Default for SplitQueue<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> SplitQueue<N> {
    const VALID: () = assert!(N.is_power_of_two() && N <= 32768);

    /// An empty queue with all descriptors free.
    pub fn new() -> Self {
        let () = Self::VALID;
        let desc = Box::new([const { Desc::new() }; N]);
        for (i, d) in desc.iter().enumerate() {
            d.next.store(((i + 1) % N) as u16, Ordering::Relaxed);
        }
        Self {
            desc,
            avail: Box::new(AvailRing {
                flags: AtomicU16::new(0),
                idx: AtomicU16::new(0),
                ring: [const { AtomicU16::new(0) }; N],
                used_event: AtomicU16::new(0),
            }),
            used: Box::new(UsedRing {
                flags: AtomicU16::new(0),
                idx: AtomicU16::new(0),
                ring: [const {
                    UsedElem {
                        id: AtomicU32::new(0),
                        len: AtomicU32::new(0),
                    }
                }; N],
                avail_event: AtomicU16::new(0),
            }),
            free_head: 0,
            num_free: N as u16,
            avail_idx: 0,
            last_used: 0,
            chain_len: [0; N],
        }
    }

    /// Queue size.
    pub const fn size(&self) -> u16 {
        N as u16
    }

    /// Physical addresses of the descriptor table, driver ring and device ring.
    pub fn addresses(&self) -> (u64, u64, u64) {
        (
            self.desc.as_ptr() as u64,
            &*self.avail as *const AvailRing<N> as u64,
            &*self.used as *const UsedRing<N> as u64,
        )
    }

    /// Free descriptors.
    pub fn num_free(&self) -> u16 {
        self.num_free
    }

    /// Publishes a chain of buffers; returns its head id.
    pub fn add(&mut self, bufs: &[Buf]) -> Result<u16, QueueError> {
        if bufs.is_empty() || bufs.len() > usize::from(self.num_free) {
            return Err(QueueError::Full);
        }
        let head = self.free_head;
        let mut id = head;
        for (i, b) in bufs.iter().enumerate() {
            let d = &self.desc[usize::from(id)];
            let last = i + 1 == bufs.len();
            d.addr.store(b.addr, Ordering::Relaxed);
            d.len.store(b.len, Ordering::Relaxed);
            let mut flags = if b.device_writes { DESC_F_WRITE } else { 0 };
            if !last {
                flags |= DESC_F_NEXT;
            }
            d.flags.store(flags, Ordering::Relaxed);
            let next = d.next.load(Ordering::Relaxed);
            if last {
                self.free_head = next;
            } else {
                id = next;
            }
        }
        self.num_free -= bufs.len() as u16;
        self.chain_len[usize::from(head)] = bufs.len() as u16;
        let slot = usize::from(self.avail_idx) % N;
        self.avail.ring[slot].store(head, Ordering::Relaxed);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        // Descriptors and ring entry are visible before the index that publishes them.
        fence(Ordering::Release);
        self.avail.idx.store(self.avail_idx, Ordering::Release);
        Ok(head)
    }

    /// Whether the device has returned a chain not yet popped.
    pub fn has_used(&self) -> bool {
        self.used.idx.load(Ordering::Acquire) != self.last_used
    }

    /// Takes the next returned chain: `(head id, bytes the device wrote)`.
    pub fn pop_used(&mut self) -> Result<Option<(u16, u32)>, QueueError> {
        if !self.has_used() {
            return Ok(None);
        }
        fence(Ordering::Acquire);
        let e = &self.used.ring[usize::from(self.last_used) % N];
        let id = e.id.load(Ordering::Acquire);
        let len = e.len.load(Ordering::Acquire);
        let head = match usize::try_from(id) {
            Ok(h) if h < N && self.chain_len[h] > 0 => h,
            _ => return Err(QueueError::BadUsedId(id)),
        };
        self.last_used = self.last_used.wrapping_add(1);
        // Return the chain to the free list: walk it to its tail, link tail → old free head.
        let count = self.chain_len[head];
        self.chain_len[head] = 0;
        let mut tail = head;
        for _ in 1..count {
            tail = usize::from(self.desc[tail].next.load(Ordering::Relaxed)) % N;
        }
        self.desc[tail]
            .next
            .store(self.free_head, Ordering::Relaxed);
        self.free_head = head as u16;
        self.num_free += count;
        Ok(Some((head as u16, len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// A chain as the device sees it: head id and (addr, len, flags) per descriptor.
    type Chain = (u16, Vec<(u64, u32, u16)>);

    /// The device side, reading and writing the same rings.
    struct FakeDevice {
        next_avail: u16,
        used_idx: u16,
    }

    impl FakeDevice {
        /// Takes every newly available chain; returns (head, [(addr, len, flags)]).
        fn take<const N: usize>(&mut self, q: &SplitQueue<N>) -> Vec<Chain> {
            let mut out = Vec::new();
            let avail = q.avail.idx.load(Ordering::Acquire);
            while self.next_avail != avail {
                let head = q.avail.ring[usize::from(self.next_avail) % N].load(Ordering::Acquire);
                let mut chain = Vec::new();
                let mut id = usize::from(head);
                loop {
                    let d = &q.desc[id];
                    let flags = d.flags.load(Ordering::Acquire);
                    chain.push((
                        d.addr.load(Ordering::Acquire),
                        d.len.load(Ordering::Acquire),
                        flags,
                    ));
                    if flags & DESC_F_NEXT == 0 {
                        break;
                    }
                    id = usize::from(d.next.load(Ordering::Acquire));
                    assert!(chain.len() <= N, "descriptor loop");
                }
                out.push((head, chain));
                self.next_avail = self.next_avail.wrapping_add(1);
            }
            out
        }

        fn complete<const N: usize>(&mut self, q: &SplitQueue<N>, id: u32, len: u32) {
            let e = &q.used.ring[usize::from(self.used_idx) % N];
            e.id.store(id, Ordering::Release);
            e.len.store(len, Ordering::Release);
            self.used_idx = self.used_idx.wrapping_add(1);
            q.used.idx.store(self.used_idx, Ordering::Release);
        }
    }

    fn buf(addr: u64, len: u32, w: bool) -> Buf {
        Buf {
            addr,
            len,
            device_writes: w,
        }
    }

    #[test]
    fn chains_are_published_and_recycled() {
        let mut q = SplitQueue::<4>::new();
        let mut dev = FakeDevice {
            next_avail: 0,
            used_idx: 0,
        };
        let h = q
            .add(&[
                buf(0x1000, 16, false),
                buf(0x2000, 512, true),
                buf(0x3000, 1, true),
            ])
            .unwrap();
        assert_eq!(q.num_free(), 1);
        assert_eq!(
            q.add(&[buf(0, 1, false), buf(0, 1, false)]),
            Err(QueueError::Full)
        );
        let taken = dev.take(&q);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].0, h);
        assert_eq!(
            taken[0].1,
            vec![
                (0x1000, 16, DESC_F_NEXT),
                (0x2000, 512, DESC_F_NEXT | DESC_F_WRITE),
                (0x3000, 1, DESC_F_WRITE)
            ]
        );
        assert_eq!(q.pop_used(), Ok(None));
        dev.complete(&q, u32::from(h), 513);
        assert_eq!(q.pop_used(), Ok(Some((h, 513))));
        assert_eq!(q.num_free(), 4);
        assert_eq!(q.pop_used(), Ok(None));
    }

    #[test]
    fn indices_wrap_over_many_requests() {
        let mut q = SplitQueue::<8>::new();
        let mut dev = FakeDevice {
            next_avail: 0,
            used_idx: 0,
        };
        for round in 0..70_000u32 {
            let n = 1 + (round % 3) as usize;
            let bufs: Vec<Buf> = (0..n)
                .map(|i| buf(u64::from(round), i as u32, i > 0))
                .collect();
            let h = q.add(&bufs).unwrap();
            let taken = dev.take(&q);
            assert_eq!(taken.len(), 1);
            assert_eq!(taken[0].1.len(), n);
            assert_eq!(taken[0].1[0].0, u64::from(round));
            dev.complete(&q, u32::from(h), round);
            assert_eq!(q.pop_used(), Ok(Some((h, round))));
            assert_eq!(q.num_free(), 8);
        }
    }

    #[test]
    fn out_of_order_completion() {
        let mut q = SplitQueue::<4>::new();
        let mut dev = FakeDevice {
            next_avail: 0,
            used_idx: 0,
        };
        let a = q.add(&[buf(1, 1, true)]).unwrap();
        let b = q.add(&[buf(2, 1, true), buf(3, 1, true)]).unwrap();
        let c = q.add(&[buf(4, 1, true)]).unwrap();
        assert_eq!(dev.take(&q).len(), 3);
        dev.complete(&q, u32::from(b), 2);
        dev.complete(&q, u32::from(c), 3);
        dev.complete(&q, u32::from(a), 1);
        assert_eq!(q.pop_used(), Ok(Some((b, 2))));
        assert_eq!(q.pop_used(), Ok(Some((c, 3))));
        assert_eq!(q.pop_used(), Ok(Some((a, 1))));
        // All four descriptors are reusable in one chain.
        let all: Vec<Buf> = (0..4).map(|i| buf(i, 1, false)).collect();
        q.add(&all).unwrap();
        assert_eq!(dev.take(&q)[0].1.len(), 4);
    }

    #[test]
    fn bogus_device_ids_are_rejected() {
        let mut q = SplitQueue::<4>::new();
        let mut dev = FakeDevice {
            next_avail: 0,
            used_idx: 0,
        };
        let h = q.add(&[buf(1, 1, true)]).unwrap();
        dev.take(&q);
        dev.complete(&q, 99, 0);
        assert_eq!(q.pop_used(), Err(QueueError::BadUsedId(99)));
        let mut q2 = SplitQueue::<4>::new();
        let mut dev2 = FakeDevice {
            next_avail: 0,
            used_idx: 0,
        };
        q2.add(&[buf(1, 1, true)]).unwrap();
        dev2.take(&q2);
        // Id in range but not outstanding.
        dev2.complete(&q2, u32::from(h) + 1, 0);
        assert!(matches!(q2.pop_used(), Err(QueueError::BadUsedId(_))));
    }

    #[test]
    fn ring_layout_matches_the_spec() {
        assert_eq!(core::mem::size_of::<Desc>(), 16);
        assert_eq!(core::mem::size_of::<AvailRing<8>>(), 6 + 2 * 8);
        assert_eq!(core::mem::size_of::<UsedRing<8>>(), 4 + 8 * 8 + 4);
        let q = SplitQueue::<8>::new();
        let (d, a, u) = q.addresses();
        assert_eq!((d % 16, a % 2, u % 4), (0, 0, 0));
    }
}
