//! The real [`Host`]: stdout console (sanitised, [`crate::console`]), a file as block device, a
//! TAP interface as network.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::time::{Duration, SystemTime};

use crate::console::ConsoleFilter;
use crate::hypercall::Host;
use crate::sys;

/// Sector size of file-backed block devices.
pub const SECTOR_SIZE: u64 = 512;

/// A file used as block device; its size must be a multiple of [`SECTOR_SIZE`].
#[derive(Debug)]
pub struct BlockFile {
    file: File,
    sectors: u64,
}

impl BlockFile {
    /// Opens `file` read-write.
    pub fn open(path: &std::path::Path) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let len = file.metadata()?.len();
        if len == 0 || !len.is_multiple_of(SECTOR_SIZE) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("size {len} is not a non-zero multiple of {SECTOR_SIZE} bytes"),
            ));
        }
        Ok(Self {
            file,
            sectors: len / SECTOR_SIZE,
        })
    }
}

impl AsRawFd for BlockFile {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// A TAP interface.
#[derive(Debug)]
pub struct Tap {
    file: File,
}

impl Tap {
    /// Opens the TAP interface `name`.
    pub fn open(name: &str) -> io::Result<Self> {
        Ok(Self {
            file: sys::open_tap(name)?,
        })
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// Console, block and network devices of one guest.
#[derive(Debug)]
pub struct Devices {
    /// Console output goes here, through [`ConsoleFilter`].
    pub console: io::Stdout,
    console_filter: ConsoleFilter,
    /// Optional block device.
    pub block: Option<BlockFile>,
    /// Optional network device.
    pub net: Option<Tap>,
}

impl Devices {
    /// Devices with the console on stdout.
    pub fn new(block: Option<BlockFile>, net: Option<Tap>) -> Self {
        Self {
            console: io::stdout(),
            console_filter: ConsoleFilter::new(),
            block,
            net,
        }
    }

    /// Writes console output the filter still held back (the guest has ended).
    pub fn finish_console(&mut self) {
        let mut text = String::new();
        self.console_filter.finish(&mut text);
        self.write_console(&text);
    }

    fn write_console(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        // Console output is best effort, like a serial line: a closed stdout must not kill the
        // guest.
        let mut out = self.console.lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

impl Host for Devices {
    fn console_write(&mut self, bytes: &[u8]) {
        // The guest's bytes never reach the terminal raw: see `crate::console`.
        let mut text = String::with_capacity(bytes.len());
        self.console_filter.push(bytes, &mut text);
        self.write_console(&text);
    }

    fn wall_nsecs(&mut self) -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        match &self.net {
            Some(tap) => {
                let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
                // Round sub-millisecond waits up so a guest polling with a short deadline does not
                // spin through the monitor.
                let ms = if ms == 0 && !timeout.is_zero() { 1 } else { ms };
                sys::poll_readable(&tap.file, ms)
            }
            None => {
                std::thread::sleep(timeout);
                Ok(false)
            }
        }
    }

    fn block_info(&self) -> Option<(u64, u64)> {
        self.block.as_ref().map(|b| (b.sectors, SECTOR_SIZE))
    }

    fn block_read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let b = self.block.as_ref().ok_or(io::ErrorKind::NotFound)?;
        b.file.read_exact_at(buf, offset)
    }

    fn block_write(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let b = self.block.as_ref().ok_or(io::ErrorKind::NotFound)?;
        b.file.write_all_at(buf, offset)
    }

    fn net_present(&self) -> bool {
        self.net.is_some()
    }

    fn net_send(&mut self, frame: &[u8]) -> io::Result<()> {
        let tap = self.net.as_mut().ok_or(io::ErrorKind::NotFound)?;
        match tap.file.write(frame) {
            Ok(_) => Ok(()),
            // A full TAP queue drops the frame, as a NIC would.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn net_recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let tap = self.net.as_mut().ok_or(io::ErrorKind::NotFound)?;
        match tap.file.read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn random(&mut self, buf: &mut [u8]) -> io::Result<()> {
        sys::getrandom(buf)
    }
}
