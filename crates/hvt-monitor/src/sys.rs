//! The monitor's only unsafe code: raw mappings, the TAP ioctl, signals and the interval timer,
//! and registering guest memory with KVM.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// An anonymous private read/write mapping, unmapped on drop.
#[derive(Debug)]
pub struct Mmap {
    addr: *mut u8,
    len: usize,
}

impl Mmap {
    /// Maps `len` zeroed bytes (`len > 0`).
    pub fn anonymous(len: usize) -> io::Result<Self> {
        if len == 0 {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choice; it aliases no
        // Rust object. The result is checked before use.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            addr: addr.cast(),
            len,
        })
    }

    /// Length in bytes.
    pub fn size(&self) -> usize {
        self.len
    }

    /// Host address of the first byte.
    pub fn addr(&self) -> usize {
        self.addr as usize
    }

    /// The mapping as bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `addr..addr+len` is a live read/write mapping owned by `self`; the guest only
        // writes it inside KVM_RUN, which needs `&mut` access to the vCPU and never overlaps a
        // borrow of this slice (single-threaded monitor).
        unsafe { std::slice::from_raw_parts(self.addr, self.len) }
    }

    /// The mapping as mutable bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` makes this the only borrow.
        unsafe { std::slice::from_raw_parts_mut(self.addr, self.len) }
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `anonymous`; no borrow outlives `self`.
        unsafe {
            libc::munmap(self.addr.cast(), self.len);
        }
    }
}

/// Registers `mem` as slot 0 at guest address 0.
pub fn register_memory(vm: &kvm_ioctls::VmFd, mem: &crate::memory::GuestMemory) -> io::Result<()> {
    let region = kvm_bindings::kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: mem.size(),
        userspace_addr: mem.host_addr(),
    };
    // SAFETY: the region is a live mapping of exactly `memory_size` bytes owned by `mem`, and the
    // caller keeps `mem` alive for as long as the VM exists (both live in `Vm`, memory dropped
    // last).
    unsafe { vm.set_user_memory_region(region) }
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))
}

/// Opens (or creates, with CAP_NET_ADMIN) the TAP interface `name`, non-blocking, without packet
/// information headers.
pub fn open_tap(name: &str) -> io::Result<File> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.bytes().any(|b| b == 0 || b == b'/')
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "invalid TAP interface name",
        ));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags_nonblock()
        .open("/dev/net/tun")?;
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads an `ifreq`, which `ifr` is, on a file descriptor we own.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlock for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
    }
}

/// Waits until `fd` is readable or `timeout_ms` passes. `Ok(false)` on timeout or when a signal
/// interrupted the wait.
pub fn poll_readable(fd: &impl AsRawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid `pollfd` for the duration of the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return if err.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(err)
        };
    }
    Ok(rc > 0 && pfd.revents & libc::POLLIN != 0)
}

extern "C" fn on_alarm(_: libc::c_int) {}

/// Makes SIGALRM interrupt blocking calls (KVM_RUN returns EINTR) and arms a periodic interval
/// timer, so the run loop gets control back every `period_ms` to check its deadline.
pub fn start_watchdog_ticks(period_ms: u32) -> io::Result<()> {
    // SAFETY: `sigaction` is plain old data; all-zero is a valid value.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as usize;
    sa.sa_flags = 0; // no SA_RESTART: blocking calls return EINTR
    // SAFETY: installs an async-signal-safe (empty) handler for SIGALRM.
    let rc = unsafe { libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let period = libc::timeval {
        tv_sec: (period_ms / 1000) as libc::time_t,
        tv_usec: ((period_ms % 1000) * 1000) as libc::suseconds_t,
    };
    let it = libc::itimerval {
        it_interval: period,
        it_value: period,
    };
    // SAFETY: `it` is a valid itimerval; the old value is not requested.
    let rc = unsafe { libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Fills `buf` from the kernel's CSPRNG.
pub fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: writes at most `rest.len()` bytes into `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        done += n as usize;
    }
    Ok(())
}
