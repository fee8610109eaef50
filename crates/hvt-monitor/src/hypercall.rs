//! Hypercall dispatch: decode the argument struct the guest points at, validate every guest
//! pointer and length against guest memory, do the call through [`Host`], write results back.
//!
//! Pure with respect to KVM: it only sees guest memory and a [`Host`], so it is unit tested and
//! fuzzed (`fuzz/fuzz_targets/hvt_hypercall.rs`) without a VM.

use std::io;
use std::time::Duration;

use hvt_abi::{BlockIo, HcResult, Hypercall, NetIo, Poll, Puts, Random, Walltime};

use crate::memory::{GuestMemory, OutOfBounds};

/// What the host side offers the guest.
pub trait Host {
    /// Writes console output.
    fn console_write(&mut self, bytes: &[u8]);
    /// Wall-clock time, nanoseconds since the Unix epoch.
    fn wall_nsecs(&mut self) -> u64;
    /// Waits up to `timeout` for a network frame; `true` when one is waiting.
    fn wait(&mut self, timeout: Duration) -> io::Result<bool>;
    /// `(sectors, sector_size)` of the block device, if one is attached.
    fn block_info(&self) -> Option<(u64, u64)>;
    /// Reads `buf.len()` bytes at byte offset `offset` of the block device.
    fn block_read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `buf` at byte offset `offset` of the block device.
    fn block_write(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Whether a network device is attached.
    fn net_present(&self) -> bool;
    /// Sends one Ethernet frame.
    fn net_send(&mut self, frame: &[u8]) -> io::Result<()>;
    /// Receives one frame into `buf`; `Ok(None)` when none is waiting.
    fn net_recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>>;
    /// Fills `buf` with random bytes.
    fn random(&mut self, buf: &mut [u8]) -> io::Result<()>;
}

/// A hypercall the guest got wrong; the monitor ends the guest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestFault {
    /// `out` to a port that is not a hypercall.
    #[error("write to unknown I/O port {port:#x}")]
    UnknownPort {
        /// The port.
        port: u16,
    },
    /// The `out` was not 32 bits wide.
    #[error("hypercall {call:?} with a {size}-byte operand (expected 4)")]
    OperandSize {
        /// The hypercall.
        call: Hypercall,
        /// Operand size.
        size: usize,
    },
    /// A pointer or length outside guest memory.
    #[error("hypercall {call:?}: {source}")]
    Memory {
        /// The hypercall.
        call: Hypercall,
        /// The bad access.
        #[source]
        source: OutOfBounds,
    },
    /// A length above the ABI's limit.
    #[error("hypercall {call:?}: length {len} exceeds the limit {max}")]
    TooLong {
        /// The hypercall.
        call: Hypercall,
        /// Requested length.
        len: u64,
        /// The limit.
        max: u64,
    },
}

/// What the run loop does after a hypercall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Resume the guest.
    Continue,
    /// The guest halted with this exit code.
    Halt(u8),
    /// A host device failed; end the guest with [`hvt_abi::exit::HOST_IO`].
    HostIo(String),
}

fn mem_err(call: Hypercall) -> impl Fn(OutOfBounds) -> GuestFault {
    move |source| GuestFault::Memory { call, source }
}

fn check_len(call: Hypercall, len: u64, max: u64) -> Result<(), GuestFault> {
    if len > max {
        Err(GuestFault::TooLong { call, len, max })
    } else {
        Ok(())
    }
}

/// Handles one `out` of `data` to `port`.
pub fn dispatch(
    mem: &mut GuestMemory,
    host: &mut dyn Host,
    port: u16,
    data: &[u8],
) -> Result<Step, GuestFault> {
    let call = Hypercall::from_port(port).ok_or(GuestFault::UnknownPort { port })?;
    let gpa = match <[u8; 4]>::try_from(data) {
        Ok(b) => u64::from(u32::from_le_bytes(b)),
        Err(_) => {
            return Err(GuestFault::OperandSize {
                call,
                size: data.len(),
            });
        }
    };
    let me = mem_err(call);
    match call {
        Hypercall::Walltime => {
            let _: Walltime = mem.read_obj(gpa).map_err(&me)?;
            mem.write_obj(
                gpa,
                &Walltime {
                    nsecs: host.wall_nsecs(),
                },
            )
            .map_err(&me)?;
        }
        Hypercall::Puts => {
            let a: Puts = mem.read_obj(gpa).map_err(&me)?;
            check_len(call, a.len, hvt_abi::MAX_IO)?;
            host.console_write(mem.slice(a.data, a.len).map_err(&me)?);
        }
        Hypercall::Poll => {
            let mut a: Poll = mem.read_obj(gpa).map_err(&me)?;
            let ns = a.timeout_nsecs.min(hvt_abi::MAX_POLL_NSECS);
            match host.wait(Duration::from_nanos(ns)) {
                Ok(ready) => a.ready = u64::from(ready),
                Err(e) => return Ok(Step::HostIo(format!("poll: {e}"))),
            }
            mem.write_obj(gpa, &a).map_err(&me)?;
        }
        Hypercall::BlockRead | Hypercall::BlockWrite => {
            let mut a: BlockIo = mem.read_obj(gpa).map_err(&me)?;
            check_len(call, a.len, hvt_abi::MAX_IO)?;
            // The buffer must be inside guest memory even when the request is refused.
            mem.slice(a.data, a.len).map_err(&me)?;
            a.ret = block_io(mem, host, call, &a).map_err(&me)? as u64;
            mem.write_obj(gpa, &a).map_err(&me)?;
        }
        Hypercall::NetWrite => {
            let mut a: NetIo = mem.read_obj(gpa).map_err(&me)?;
            check_len(call, a.len, hvt_abi::MAX_IO)?;
            let frame = mem.slice(a.data, a.len).map_err(&me)?;
            a.ret = if !host.net_present() || frame.is_empty() {
                HcResult::Invalid
            } else {
                match host.net_send(frame) {
                    Ok(()) => HcResult::Ok,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => HcResult::Again,
                    Err(e) => return Ok(Step::HostIo(format!("network write: {e}"))),
                }
            } as u64;
            mem.write_obj(gpa, &a).map_err(&me)?;
        }
        Hypercall::NetRead => {
            let mut a: NetIo = mem.read_obj(gpa).map_err(&me)?;
            check_len(call, a.len, hvt_abi::MAX_IO)?;
            let present = host.net_present();
            let buf = mem.slice_mut(a.data, a.len).map_err(&me)?;
            let (ret, len) = if !present {
                (HcResult::Invalid, 0)
            } else {
                match host.net_recv(buf) {
                    Ok(Some(n)) => (HcResult::Ok, n.min(buf.len()) as u64),
                    Ok(None) => (HcResult::Again, 0),
                    Err(e) => return Ok(Step::HostIo(format!("network read: {e}"))),
                }
            };
            a.ret = ret as u64;
            a.len = len;
            mem.write_obj(gpa, &a).map_err(&me)?;
        }
        Hypercall::Halt => {
            let a: hvt_abi::Halt = mem.read_obj(gpa).map_err(&me)?;
            return Ok(Step::Halt((a.code & 0xff) as u8));
        }
        Hypercall::Random => {
            let mut a: Random = mem.read_obj(gpa).map_err(&me)?;
            check_len(call, a.len, hvt_abi::MAX_RANDOM)?;
            let buf = mem.slice_mut(a.data, a.len).map_err(&me)?;
            a.ret = match host.random(buf) {
                Ok(()) => HcResult::Ok,
                Err(_) => HcResult::Unspecified,
            } as u64;
            mem.write_obj(gpa, &a).map_err(&me)?;
        }
    }
    Ok(Step::Continue)
}

fn block_io(
    mem: &mut GuestMemory,
    host: &mut dyn Host,
    call: Hypercall,
    a: &BlockIo,
) -> Result<HcResult, OutOfBounds> {
    let Some((sectors, sector_size)) = host.block_info() else {
        return Ok(HcResult::Invalid);
    };
    if sector_size == 0 || a.len == 0 || !a.len.is_multiple_of(sector_size) {
        return Ok(HcResult::Invalid);
    }
    let count = a.len / sector_size;
    let in_range = a
        .sector
        .checked_add(count)
        .is_some_and(|end| end <= sectors);
    let Some(offset) = a.sector.checked_mul(sector_size).filter(|_| in_range) else {
        return Ok(HcResult::Invalid);
    };
    let res = if call == Hypercall::BlockRead {
        host.block_read(offset, mem.slice_mut(a.data, a.len)?)
    } else {
        host.block_write(offset, mem.slice(a.data, a.len)?)
    };
    Ok(if res.is_ok() {
        HcResult::Ok
    } else {
        HcResult::Unspecified
    })
}

/// An in-memory [`Host`] for tests and fuzzing: records console output and sent frames, serves
/// queued frames, keeps the block device in a `Vec`.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct FakeHost {
    /// Console output.
    pub console: Vec<u8>,
    /// Block device contents (`None`: no device).
    pub disk: Option<Vec<u8>>,
    /// Frames the guest will receive.
    pub rx: std::collections::VecDeque<Vec<u8>>,
    /// Frames the guest sent (`None` in `net`: no device).
    pub tx: Vec<Vec<u8>>,
    /// Whether a network device is attached.
    pub net: bool,
}

impl Host for FakeHost {
    fn console_write(&mut self, bytes: &[u8]) {
        self.console.extend_from_slice(bytes);
    }
    fn wall_nsecs(&mut self) -> u64 {
        1_700_000_000_000_000_000
    }
    fn wait(&mut self, _: Duration) -> io::Result<bool> {
        Ok(!self.rx.is_empty())
    }
    fn block_info(&self) -> Option<(u64, u64)> {
        self.disk.as_ref().map(|d| (d.len() as u64 / 512, 512))
    }
    fn block_read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let d = self.disk.as_ref().ok_or(io::ErrorKind::NotFound)?;
        let o = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let src = d
            .get(o..o + buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn block_write(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let d = self.disk.as_mut().ok_or(io::ErrorKind::NotFound)?;
        let o = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let dst = d
            .get_mut(o..o + buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        dst.copy_from_slice(buf);
        Ok(())
    }
    fn net_present(&self) -> bool {
        self.net
    }
    fn net_send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.tx.push(frame.to_vec());
        Ok(())
    }
    fn net_recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let Some(f) = self.rx.pop_front() else {
            return Ok(None);
        };
        let n = f.len().min(buf.len());
        buf[..n].copy_from_slice(&f[..n]);
        Ok(Some(n))
    }
    fn random(&mut self, buf: &mut [u8]) -> io::Result<()> {
        buf.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hvt_abi::Halt;

    const ARG: u64 = 0x1000;
    const BUF: u64 = 0x2000;
    const MEM: u64 = 64 * 1024;

    fn call(mem: &mut GuestMemory, host: &mut FakeHost, h: Hypercall) -> Result<Step, GuestFault> {
        dispatch(mem, host, h.port(), &(ARG as u32).to_le_bytes())
    }

    fn setup() -> (GuestMemory, FakeHost) {
        (GuestMemory::new(MEM).unwrap(), FakeHost::default())
    }

    #[test]
    fn puts_and_halt() {
        let (mut m, mut h) = setup();
        m.write(BUF, b"hello").unwrap();
        m.write_obj(ARG, &Puts { data: BUF, len: 5 }).unwrap();
        assert_eq!(call(&mut m, &mut h, Hypercall::Puts), Ok(Step::Continue));
        assert_eq!(h.console, b"hello");
        m.write_obj(ARG, &Halt { code: 0x1_07 }).unwrap();
        assert_eq!(call(&mut m, &mut h, Hypercall::Halt), Ok(Step::Halt(7)));
    }

    #[test]
    fn bad_pointers_and_sizes_are_faults() {
        let (mut m, mut h) = setup();
        // Argument struct outside memory, straddling the end, and the port operand size.
        let at = |gpa: u32| gpa.to_le_bytes();
        assert!(matches!(
            dispatch(&mut m, &mut h, Hypercall::Halt.port(), &at(0xffff_fff8)),
            Err(GuestFault::Memory { .. })
        ));
        assert!(matches!(
            dispatch(
                &mut m,
                &mut h,
                Hypercall::Walltime.port(),
                &at(MEM as u32 - 4)
            ),
            Err(GuestFault::Memory { .. })
        ));
        assert!(matches!(
            dispatch(&mut m, &mut h, Hypercall::Halt.port(), &[0, 0x10]),
            Err(GuestFault::OperandSize { size: 2, .. })
        ));
        assert_eq!(
            dispatch(&mut m, &mut h, 0x3f8, &at(0)),
            Err(GuestFault::UnknownPort { port: 0x3f8 })
        );
        // Data pointer that overflows, data outside memory, too long.
        m.write_obj(
            ARG,
            &Puts {
                data: u64::MAX - 2,
                len: 5,
            },
        )
        .unwrap();
        assert!(matches!(
            call(&mut m, &mut h, Hypercall::Puts),
            Err(GuestFault::Memory { .. })
        ));
        m.write_obj(
            ARG,
            &Puts {
                data: MEM - 2,
                len: 5,
            },
        )
        .unwrap();
        assert!(matches!(
            call(&mut m, &mut h, Hypercall::Puts),
            Err(GuestFault::Memory { .. })
        ));
        m.write_obj(
            ARG,
            &Puts {
                data: 0,
                len: 1 << 40,
            },
        )
        .unwrap();
        assert!(matches!(
            call(&mut m, &mut h, Hypercall::Puts),
            Err(GuestFault::TooLong { .. })
        ));
        m.write_obj(
            ARG,
            &Random {
                data: BUF,
                len: 4096,
                ret: 0,
            },
        )
        .unwrap();
        assert!(matches!(
            call(&mut m, &mut h, Hypercall::Random),
            Err(GuestFault::TooLong { .. })
        ));
        m.write_obj(
            ARG,
            &NetIo {
                data: MEM,
                len: 1,
                ret: 0,
            },
        )
        .unwrap();
        assert!(matches!(
            call(&mut m, &mut h, Hypercall::NetRead),
            Err(GuestFault::Memory { .. })
        ));
        assert!(h.console.is_empty());
    }

    #[test]
    fn block_io_checks_range_and_alignment() {
        let (mut m, mut h) = setup();
        h.disk = Some(vec![0; 4 * 512]);
        m.write(BUF, &[0xab; 1024]).unwrap();
        let io = |sector, len| BlockIo {
            sector,
            data: BUF,
            len,
            ret: 99,
        };
        let ret = |m: &GuestMemory| HcResult::from_u64(m.read_obj::<BlockIo>(ARG).unwrap().ret);

        m.write_obj(ARG, &io(2, 1024)).unwrap();
        assert_eq!(
            call(&mut m, &mut h, Hypercall::BlockWrite),
            Ok(Step::Continue)
        );
        assert_eq!(ret(&m), HcResult::Ok);
        assert!(h.disk.as_ref().unwrap()[1024..].iter().all(|b| *b == 0xab));

        m.write(BUF, &[0; 1024]).unwrap();
        m.write_obj(ARG, &io(3, 512)).unwrap();
        call(&mut m, &mut h, Hypercall::BlockRead).unwrap();
        assert_eq!(ret(&m), HcResult::Ok);
        assert_eq!(m.slice(BUF, 512).unwrap(), &[0xab; 512]);

        for (sector, len) in [
            (3, 1024),
            (4, 512),
            (0, 100),
            (0, 0),
            (u64::MAX, 512),
            (1 << 60, 512),
        ] {
            m.write_obj(ARG, &io(sector, len)).unwrap();
            call(&mut m, &mut h, Hypercall::BlockWrite).unwrap();
            assert_eq!(ret(&m), HcResult::Invalid, "sector {sector} len {len}");
        }
        h.disk = None;
        m.write_obj(ARG, &io(0, 512)).unwrap();
        call(&mut m, &mut h, Hypercall::BlockRead).unwrap();
        assert_eq!(ret(&m), HcResult::Invalid);
    }

    #[test]
    fn net_read_write_and_poll() {
        let (mut m, mut h) = setup();
        m.write_obj(
            ARG,
            &NetIo {
                data: BUF,
                len: 64,
                ret: 9,
            },
        )
        .unwrap();
        call(&mut m, &mut h, Hypercall::NetRead).unwrap();
        assert_eq!(
            m.read_obj::<NetIo>(ARG).unwrap().ret,
            HcResult::Invalid as u64
        );

        h.net = true;
        call(&mut m, &mut h, Hypercall::NetRead).unwrap();
        assert_eq!(
            m.read_obj::<NetIo>(ARG).unwrap().ret,
            HcResult::Again as u64
        );

        h.rx.push_back(vec![1; 100]);
        m.write_obj(
            ARG,
            &Poll {
                timeout_nsecs: u64::MAX,
                ready: 0,
            },
        )
        .unwrap();
        call(&mut m, &mut h, Hypercall::Poll).unwrap();
        assert_eq!(m.read_obj::<Poll>(ARG).unwrap().ready, 1);

        m.write_obj(
            ARG,
            &NetIo {
                data: BUF,
                len: 64,
                ret: 9,
            },
        )
        .unwrap();
        call(&mut m, &mut h, Hypercall::NetRead).unwrap();
        let got = m.read_obj::<NetIo>(ARG).unwrap();
        assert_eq!((got.ret, got.len), (HcResult::Ok as u64, 64));

        m.write(BUF, b"frame").unwrap();
        m.write_obj(
            ARG,
            &NetIo {
                data: BUF,
                len: 5,
                ret: 9,
            },
        )
        .unwrap();
        call(&mut m, &mut h, Hypercall::NetWrite).unwrap();
        assert_eq!(h.tx, vec![b"frame".to_vec()]);
    }
}
