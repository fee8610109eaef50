//! The few system calls nix does not wrap safely. Every `unsafe` block of the guest lives here.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// In a forked child: unblock every signal. PID 1 blocks the signals it handles and a fork
/// inherits the mask across exec, which would make services immune to SIGTERM and SIGHUP.
///
/// # Safety
/// Only call between fork and exec; it uses async-signal-safe calls only.
unsafe fn clear_signal_mask() -> io::Result<()> {
    // SAFETY: `set` is a local sigset_t initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        if libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Makes the child a session leader with `/dev/<tty>` (its stdin) as controlling terminal.
pub fn spawn_session_leader(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the forked child before exec and only calls async-signal-safe
    // functions (sigprocmask, setsid, ioctl) on file descriptor 0, which the parent set up.
    unsafe {
        cmd.pre_exec(|| {
            clear_signal_mask()?;
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY, 1) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Puts the child in a new session without a controlling terminal (services).
pub fn spawn_new_session(cmd: &mut Command) -> &mut Command {
    // SAFETY: sigprocmask and setsid are async-signal-safe and touch no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            clear_signal_mask()?;
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Limits the child's heap (`RLIMIT_DATA`: brk and private anonymous mappings) to `bytes`: an
/// allocation beyond it fails, and the child (a Rust program aborts on allocation failure)
/// dies instead of exhausting the machine's memory.
pub fn limit_heap(cmd: &mut Command, bytes: u64) -> &mut Command {
    // SAFETY: the closure runs in the forked child before exec and only calls setrlimit, which
    // is async-signal-safe; the rlimit struct lives on the child's stack.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: bytes as libc::rlim_t,
                rlim_max: bytes as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_DATA, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// `struct dm_ioctl` (linux/dm-ioctl.h), 312 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct DmIoctl {
    version: [u32; 3],
    data_size: u32,
    data_start: u32,
    target_count: u32,
    open_count: i32,
    flags: u32,
    event_nr: u32,
    padding: u32,
    dev: u64,
    name: [u8; 128],
    uuid: [u8; 129],
    data: [u8; 7],
}

/// `struct dm_target_spec`, 40 bytes; the parameter string follows it.
#[repr(C)]
#[derive(Clone, Copy)]
struct DmTargetSpec {
    sector_start: u64,
    length: u64,
    status: i32,
    next: u32,
    target_type: [u8; 16],
}

const DM_READONLY_FLAG: u32 = 1;
const DM_CMD_DEV_CREATE: u32 = 3;
const DM_CMD_DEV_SUSPEND: u32 = 6;
const DM_CMD_TABLE_LOAD: u32 = 9;

/// `_IOWR(0xfd, cmd, struct dm_ioctl)`.
fn dm_request(cmd: u32) -> libc::c_ulong {
    let size = std::mem::size_of::<DmIoctl>() as libc::c_ulong;
    (3 << 30) | (size << 16) | (0xfd << 8) | libc::c_ulong::from(cmd)
}

fn dm_header(name: &str, uuid: &str) -> io::Result<DmIoctl> {
    if name.is_empty() || name.len() >= 128 || uuid.len() >= 129 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad dm name"));
    }
    let mut h = DmIoctl {
        // The interface version this code speaks; the kernel checks the major number.
        version: [4, 0, 0],
        data_size: std::mem::size_of::<DmIoctl>() as u32,
        data_start: std::mem::size_of::<DmIoctl>() as u32,
        target_count: 0,
        open_count: 0,
        flags: 0,
        event_nr: 0,
        padding: 0,
        dev: 0,
        name: [0; 128],
        uuid: [0; 129],
        data: [0; 7],
    };
    h.name[..name.len()].copy_from_slice(name.as_bytes());
    h.uuid[..uuid.len()].copy_from_slice(uuid.as_bytes());
    Ok(h)
}

fn dm_call(control: &std::fs::File, cmd: u32, buf: &mut [u8]) -> io::Result<DmIoctl> {
    // SAFETY: `buf` starts with an initialised `DmIoctl` (written by the callers with
    // `write_unaligned`), is `data_size` bytes long as that header says, and lives across the
    // call; the kernel reads and writes at most `data_size` bytes of it.
    let r = unsafe { libc::ioctl(control.as_raw_fd(), dm_request(cmd) as _, buf.as_mut_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `buf` is at least `size_of::<DmIoctl>()` bytes, and `DmIoctl` is plain data for
    // which any bit pattern is valid; the read is unaligned-safe.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<DmIoctl>()) })
}

fn dm_buffer(header: DmIoctl, extra: usize) -> Vec<u8> {
    let total = std::mem::size_of::<DmIoctl>() + extra;
    let mut buf = vec![0u8; total];
    let mut h = header;
    h.data_size = total as u32;
    // SAFETY: `buf` has room for a `DmIoctl` at offset 0; `write_unaligned` has no alignment
    // requirement.
    unsafe { std::ptr::write_unaligned(buf.as_mut_ptr().cast::<DmIoctl>(), h) };
    buf
}

/// Creates a read-only device-mapper device `name` with one target (`target_type` over
/// `sectors` 512-byte sectors, with `params`) and activates it, through the kernel's
/// device-mapper interface (`/dev/mapper/control`), as `dmsetup create --readonly` does.
/// Returns the device number of the new `/dev/dm-N`.
pub fn dm_create_readonly(
    name: &str,
    uuid: &str,
    target_type: &str,
    sectors: u64,
    params: &str,
) -> io::Result<(u32, u32)> {
    if target_type.len() >= 16 || params.contains('\0') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad dm target"));
    }
    let control = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/mapper/control")?;
    // Create the (empty) device.
    let mut buf = dm_buffer(dm_header(name, uuid)?, 0);
    dm_call(&control, DM_CMD_DEV_CREATE, &mut buf)?;
    // Load the table: one target spec, then its NUL-terminated parameters, padded to 8 bytes.
    let spec_size = std::mem::size_of::<DmTargetSpec>();
    let extra = (spec_size + params.len() + 1).next_multiple_of(8);
    let mut h = dm_header(name, "")?;
    h.target_count = 1;
    h.flags = DM_READONLY_FLAG;
    let mut buf = dm_buffer(h, extra);
    let mut spec = DmTargetSpec {
        sector_start: 0,
        length: sectors,
        status: 0,
        next: 0,
        target_type: [0; 16],
    };
    spec.target_type[..target_type.len()].copy_from_slice(target_type.as_bytes());
    let at = std::mem::size_of::<DmIoctl>();
    // SAFETY: `buf` has `extra >= spec_size` bytes after the header at offset `at`;
    // `write_unaligned` has no alignment requirement.
    unsafe { std::ptr::write_unaligned(buf[at..].as_mut_ptr().cast::<DmTargetSpec>(), spec) };
    buf[at + spec_size..at + spec_size + params.len()].copy_from_slice(params.as_bytes());
    dm_call(&control, DM_CMD_TABLE_LOAD, &mut buf)?;
    // Resume (a suspend call without the suspend flag): the table goes live.
    let mut buf = dm_buffer(dm_header(name, "")?, 0);
    let out = dm_call(&control, DM_CMD_DEV_SUSPEND, &mut buf)?;
    // The kernel's huge dev_t encoding: major in bits 8..20, minor in 0..8 and 20..32.
    let dev = out.dev;
    let major = ((dev >> 8) & 0xfff) as u32;
    let minor = ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32;
    Ok((major, minor))
}

/// `struct blkpg_partition`.
#[repr(C)]
struct BlkpgPartition {
    start: i64,
    length: i64,
    pno: i32,
    devname: [u8; 64],
    volname: [u8; 64],
}

/// `struct blkpg_ioctl_arg`.
#[repr(C)]
struct BlkpgArg {
    op: i32,
    flags: i32,
    datalen: i32,
    data: *mut BlkpgPartition,
}

/// Tells the kernel that partition `number` of the disk open as `disk` now spans `length`
/// bytes from `start` (`BLKPG_RESIZE_PARTITION`, as `resizepart` does), without a re-read of
/// the whole table (which fails while a partition is in use).
pub fn blkpg_resize(disk: &std::fs::File, number: u32, start: u64, length: u64) -> io::Result<()> {
    const BLKPG: libc::c_ulong = 0x1269;
    const BLKPG_RESIZE_PARTITION: i32 = 3;
    let mut part = BlkpgPartition {
        start: i64::try_from(start).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        length: i64::try_from(length).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        pno: i32::try_from(number).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        devname: [0; 64],
        volname: [0; 64],
    };
    let mut arg = BlkpgArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as i32,
        data: &raw mut part,
    };
    // SAFETY: `arg` and the partition it points to are initialised, have the kernel's layout and
    // live across the call; the kernel only reads them.
    if unsafe { libc::ioctl(disk.as_raw_fd(), BLKPG as _, &raw mut arg) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Grows the mounted ext4 filesystem whose directory `dir_fd` is open to `blocks` blocks
/// (`EXT4_IOC_RESIZE_FS`, online, as `resize2fs` does).
pub fn ext4_resize(dir_fd: i32, blocks: u64) -> io::Result<()> {
    const EXT4_IOC_RESIZE_FS: libc::c_ulong = 0x4008_6610;
    let count = blocks;
    // SAFETY: the ioctl reads one u64 from the pointer, which points at `count`, alive across
    // the call.
    if unsafe { libc::ioctl(dir_fd, EXT4_IOC_RESIZE_FS as _, &raw const count) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    // SAFETY: ifreq is a plain C struct for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

fn inet_socket() -> io::Result<OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)
}

/// Sets IFF_UP on an interface (`ip link set NAME up`).
pub fn interface_up(name: &str) -> io::Result<()> {
    let sock = inet_socket()?;
    let mut req = ifreq(name)?;
    // SAFETY: `req` is a valid, initialised ifreq that outlives the call; SIOCGIFFLAGS writes
    // only into it.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFFLAGS the union holds the flags member.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: as above; SIOCSIFFLAGS reads the flags from `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `RNDADDENTROPY`: mixes `data` into the kernel pool and credits `bits` of entropy.
pub fn add_entropy(random: &std::fs::File, data: &[u8], bits: u32) -> io::Result<()> {
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut buf = Vec::with_capacity(8 + data.len());
    let bits = i32::try_from(bits.min(data.len() as u32 * 8)).unwrap_or(0);
    buf.extend_from_slice(&bits.to_ne_bytes());
    buf.extend_from_slice(&(data.len() as i32).to_ne_bytes());
    buf.extend_from_slice(data);
    // Pad to a whole number of u32 words as the kernel reads buf_size bytes only.
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
    const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
    // SAFETY: `buf` is a correctly laid out rand_pool_info of 8 + data.len() bytes that lives
    // across the call; the kernel only reads it.
    if unsafe { libc::ioctl(random.as_raw_fd(), RNDADDENTROPY as _, buf.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the kernel's CRNG is initialised (getrandom would not block).
pub fn crng_ready() -> bool {
    let mut b = [0u8; 1];
    // SAFETY: the buffer is valid for 1 byte; GRND_NONBLOCK makes the call return at once.
    let r = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 1, libc::GRND_NONBLOCK) };
    r == 1
}

/// The calling thread's id (`gettid`), for [`set_background`] from another thread.
pub fn thread_id() -> i32 {
    nix::unistd::gettid().as_raw()
}

/// Moves thread `tid` to `SCHED_IDLE` (`background`: it runs only when nothing else wants the
/// CPU) or back to the normal policy. Errors are ignored by callers: scheduling is a hint.
pub fn set_background(tid: i32, background: bool) -> io::Result<()> {
    let policy = if background {
        libc::SCHED_IDLE
    } else {
        libc::SCHED_OTHER
    };
    // The kernel's `struct sched_param` (musl's is larger, and musl's sched_setscheduler()
    // only returns ENOSYS, so the system call is made directly).
    #[repr(C)]
    struct Param {
        priority: libc::c_int,
    }
    let param = Param { priority: 0 };
    // SAFETY: `param` has the kernel's layout and outlives the call, which only reads it.
    // A stale `tid` makes the call fail with ESRCH, nothing worse.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_setscheduler,
            libc::c_long::from(tid),
            libc::c_long::from(policy),
            &raw const param,
        )
    };

    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits for `child` to exit, for at most `timeout`; `Ok(None)` when it is still running. The
/// wait wakes the moment the child exits (a pidfd polled with the remaining time), rather than
/// at the next tick of a sleep loop; kernels without `pidfd_open` (before 5.3) fall back to
/// polling every few milliseconds.
pub fn wait_timeout(
    child: &mut std::process::Child,
    timeout: std::time::Duration,
) -> io::Result<Option<std::process::ExitStatus>> {
    use std::os::fd::FromRawFd;
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + timeout;
    let pid = libc::c_long::from(child.id() as libc::pid_t);
    // SAFETY: pidfd_open takes a pid and flags, passes no memory, and returns a new descriptor
    // or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_long) };
    let pidfd = if raw >= 0 {
        // SAFETY: `raw` is a descriptor the kernel just created for us and nobody else owns.
        Some(unsafe { OwnedFd::from_raw_fd(raw as i32) })
    } else {
        None
    };
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        match &pidfd {
            Some(fd) => {
                let mut pfd = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
                // SAFETY: `pfd` is one valid pollfd that outlives the call.
                let r = unsafe { libc::poll(&raw mut pfd, 1, ms) };
                if r < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
            None => std::thread::sleep(left.min(Duration::from_millis(5))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn device_mapper_structures_have_the_kernels_layout() {
        assert_eq!(std::mem::size_of::<DmIoctl>(), 312);
        assert_eq!(std::mem::size_of::<DmTargetSpec>(), 40);
        assert_eq!(dm_request(DM_CMD_TABLE_LOAD), 0xc138_fd09);
        assert!(dm_header("", "").is_err());
        assert!(dm_header(&"x".repeat(128), "").is_err());
    }

    #[test]
    fn a_heap_limit_stops_a_big_allocation() {
        // dd allocates one 200 MB buffer: fine without a limit, refused under a 64 MiB one.
        let dd = || {
            let mut c = Command::new("dd");
            c.args(["if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"]);
            c
        };
        let free = dd().output().unwrap();
        assert!(free.status.success(), "{free:?}");
        let limited = limit_heap(&mut dd(), 64 << 20).output().unwrap();
        assert!(!limited.status.success(), "{limited:?}");
    }

    #[test]
    fn wait_timeout_returns_at_exit_or_at_the_deadline() {
        let mut quick = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let status = wait_timeout(&mut quick, Duration::from_secs(10)).unwrap();
        assert_eq!(status.and_then(|s| s.code()), Some(3));

        let mut slow = Command::new("sleep").arg("10").spawn().unwrap();
        let t = Instant::now();
        assert!(
            wait_timeout(&mut slow, Duration::from_millis(100))
                .unwrap()
                .is_none()
        );
        assert!(t.elapsed() >= Duration::from_millis(100));
        slow.kill().unwrap();
        assert!(
            wait_timeout(&mut slow, Duration::from_secs(10))
                .unwrap()
                .is_some()
        );
    }
}
