//! `unikernel`: virga's unikernel runtime. One application API, three targets.
//!
//! Pipeline position: **application crate** → `unikernel-build` → ELF/process → monitor or VMM.
//! An application is an ordinary crate with one entry point, written once:
//!
//! ```text
//! #![cfg_attr(target_os = "none", no_std, no_main)]
//! fn app(rt: &mut unikernel::Runtime) -> u8 {
//!     unikernel::println!("hello at {:?}", rt.wall_clock());
//!     0
//! }
//! unikernel::main!(app);
//! ```
//!
//! The target is chosen at build time, by the compilation target and one cfg that
//! `unikernel-build` sets:
//!
//! | target | compilation target | cfg | console | block | network |
//! |---|---|---|---|---|---|
//! | `unix` | host (`std`) | — | stdout | a file (`VIRGA_BLOCK`) | host sockets |
//! | `microvm` | `x86_64-unknown-none` | `virga_target="microvm"` (default) | 16550 serial | virtio-mmio blk | virtio-mmio net + smoltcp |
//! | `hvt` | `x86_64-unknown-none` | `virga_target="hvt"` | hypercall | hypercall | hypercall + smoltcp |
//!
//! Everything is single-threaded and interrupt-free: blocking calls poll the devices.

#![cfg_attr(target_os = "none", no_std)]

extern crate alloc;

use alloc::string::String;
use core::fmt;
pub use core::net::{Ipv4Addr, SocketAddrV4};
pub use core::time::Duration;

pub mod cmdline;
pub mod netstack;
pub mod virtio;

#[cfg(target_os = "none")]
mod baremetal;
#[cfg(target_os = "none")]
use baremetal as sys;
#[cfg(target_os = "none")]
#[doc(hidden)]
pub use baremetal::boot as __boot;

#[cfg(not(target_os = "none"))]
mod unix;
#[cfg(not(target_os = "none"))]
use unix as sys;
#[cfg(not(target_os = "none"))]
#[doc(hidden)]
pub use unix::main as __unix_main;

/// The network of the current target: smoltcp over the target's NIC on bare metal, host sockets
/// on unix. Same methods on every target.
pub use sys::{Network, TcpListener, TcpStream, UdpSocket};

/// Errors of the runtime's devices and sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UnikernelError {
    /// The device is not attached to this unikernel.
    #[error("no {0} device")]
    NoDevice(&'static str),
    /// The operation did not complete before its timeout.
    #[error("timed out")]
    Timeout,
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
    /// A bad argument (unaligned buffer, sector out of range, port in use …).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The device reported an error.
    #[error("device error: {0}")]
    Device(&'static str),
    /// No entropy source on this target.
    #[error("no entropy source")]
    NoEntropy,
    /// The network got no address (DHCP timed out).
    #[error("network not configured")]
    NotConfigured,
}

/// Result alias of the runtime.
pub type Result<T> = core::result::Result<T, UnikernelError>;

/// A point on the monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instant(u64);

impl Instant {
    /// Nanoseconds since an arbitrary start (boot or process start).
    pub const fn as_nanos(self) -> u64 {
        self.0
    }
    /// Time from `earlier` to `self` (zero if `earlier` is later).
    pub fn duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// Wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct WallTime {
    /// Nanoseconds since 1970-01-01T00:00:00Z.
    pub unix_nanos: u64,
}

impl WallTime {
    /// Whole seconds since the Unix epoch.
    pub const fn unix_secs(self) -> u64 {
        self.unix_nanos / 1_000_000_000
    }
}

/// Geometry of a block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInfo {
    /// Bytes per sector.
    pub sector_size: u32,
    /// Number of sectors.
    pub sectors: u64,
}

/// Network configuration in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// MAC address (zero on unix, where the host's sockets are used).
    pub mac: [u8; 6],
    /// IPv4 address and prefix length, once configured.
    pub address: Option<(Ipv4Addr, u8)>,
    /// Default gateway.
    pub gateway: Option<Ipv4Addr>,
}

/// A block device: whole-sector reads and writes.
#[derive(Debug)]
pub struct BlockDevice {
    inner: sys::Block,
}

impl BlockDevice {
    /// Sector size and count.
    pub fn info(&self) -> BlockInfo {
        self.inner.info()
    }

    fn check(&self, sector: u64, len: usize) -> Result<()> {
        let info = self.info();
        let ss = info.sector_size as usize;
        if len == 0 || ss == 0 || !len.is_multiple_of(ss) {
            return Err(UnikernelError::InvalidArgument(
                "buffer is not a non-empty multiple of the sector size",
            ));
        }
        let count = (len / ss) as u64;
        match sector.checked_add(count) {
            Some(end) if end <= info.sectors => Ok(()),
            _ => Err(UnikernelError::InvalidArgument(
                "sector range beyond the end of the device",
            )),
        }
    }

    /// Reads `buf.len() / sector_size` sectors starting at `sector`.
    pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<()> {
        self.check(sector, buf.len())?;
        self.inner.read(sector, buf)
    }

    /// Writes `buf` (whole sectors) starting at `sector`.
    pub fn write(&mut self, sector: u64, buf: &[u8]) -> Result<()> {
        self.check(sector, buf.len())?;
        self.inner.write(sector, buf)
    }

    /// Makes previous writes durable.
    pub fn flush(&mut self) -> Result<()> {
        self.inner.flush()
    }
}

/// What the application gets: its command line, clocks, entropy and devices.
pub struct Runtime {
    cmdline: String,
    block: Option<BlockDevice>,
    net: Option<Network>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("cmdline", &self.cmdline)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    #[cfg_attr(not(target_os = "none"), allow(dead_code))]
    pub(crate) fn new(cmdline: String, block: Option<sys::Block>) -> Self {
        Self {
            cmdline,
            block: block.map(|inner| BlockDevice { inner }),
            net: None,
        }
    }

    /// The command line (unix: the process arguments joined by spaces).
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }

    /// The value of `key=value` on the command line.
    pub fn arg(&self, key: &str) -> Option<&str> {
        cmdline::value(&self.cmdline, key)
    }

    /// The monotonic clock.
    pub fn now(&self) -> Instant {
        Instant(sys::monotonic_ns())
    }

    /// The wall clock.
    pub fn wall_clock(&self) -> WallTime {
        WallTime {
            unix_nanos: sys::wall_ns(),
        }
    }

    /// Sleeps for `d`; the network (if up) keeps being served meanwhile.
    pub fn sleep(&mut self, d: Duration) {
        let deadline =
            sys::monotonic_ns().saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        match &mut self.net {
            Some(net) => net.serve_until(deadline),
            None => sys::sleep_until(deadline),
        }
    }

    /// Fills `buf` with random bytes from the platform's entropy source.
    pub fn fill_random(&mut self, buf: &mut [u8]) -> Result<()> {
        sys::random(buf)
    }

    /// The block device.
    pub fn block(&mut self) -> Result<&mut BlockDevice> {
        self.block.as_mut().ok_or(UnikernelError::NoDevice("block"))
    }

    /// The network, brought up on first use: `ip=ADDR/PREFIX [gw=ADDR]` on the command line for a
    /// static address, DHCP otherwise (bare metal); host sockets on unix (`bind=ADDR`, default
    /// 127.0.0.1).
    pub fn net(&mut self) -> Result<&mut Network> {
        if self.net.is_none() {
            self.net = Some(sys::open_network(&self.cmdline)?);
        }
        self.net.as_mut().ok_or(UnikernelError::NoDevice("network"))
    }
}

/// Writes to the console.
pub mod console {
    /// Writes raw bytes.
    pub fn write(bytes: &[u8]) {
        super::sys::console_write(bytes);
    }

    struct Console;
    impl core::fmt::Write for Console {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            write(s.as_bytes());
            Ok(())
        }
    }

    #[doc(hidden)]
    pub fn _print(args: core::fmt::Arguments<'_>) {
        let _ = core::fmt::Write::write_fmt(&mut Console, args);
    }
}

/// Prints to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::_print(format_args!($($arg)*)) };
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::console::write(b"\n") };
    ($($arg:tt)*) => { $crate::console::_print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Ends the application now with `code` (0..=199 reach the caller unchanged).
pub fn exit(code: u8) -> ! {
    sys::exit(code)
}

/// Declares the application's entry point, `fn(&mut Runtime) -> u8` (the exit code).
///
/// On unix it becomes `fn main`; on bare metal the kernel entry `_start`, which boots the
/// platform and calls the function.
#[macro_export]
macro_rules! main {
    ($f:path) => {
        #[cfg(not(target_os = "none"))]
        fn main() -> ::std::process::ExitCode {
            $crate::__unix_main($f)
        }

        #[cfg(target_os = "none")]
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        /// Kernel entry, called in 64-bit mode with the platform's boot argument.
        pub extern "C" fn _start(boot_arg: u64) -> ! {
            $crate::__boot(boot_arg, $f)
        }
    };
}
