//! The seccomp allow-list really kills the process on a call outside it — including calls whose
//! number is allowed but whose arguments are not (executable memory, a file mapping, an ioctl
//! other than `KVM_RUN` or on another descriptor, a write to a descriptor the run loop does not
//! use) — while the calls the run loop makes still work.
//!
//! Each case runs in a child process (this test binary again, selected by an environment
//! variable) that installs the filter and then makes one call.

// The cases call mmap/mprotect/ioctl/write directly: that is what the filter is about.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};

use hvt_monitor::seccomp::{RunFds, apply};

const CASE_ENV: &str = "VIRGA_SECCOMP_CASE";
/// Exit code of a child whose forbidden call returned instead of killing it.
const SURVIVED: i32 = 77;
const PAGE: usize = 4096;

/// `KVM_RUN` and a request that is not it (`KVM_GET_REGS`).
const KVM_RUN: libc::c_ulong = 0xae80;
const KVM_GET_REGS: libc::c_ulong = 0x8090_ae81;

fn map(prot: libc::c_int, flags: libc::c_int, fd: RawFd) -> *mut libc::c_void {
    // SAFETY: a fresh mapping at an address of the kernel's choice; nothing aliases it and it is
    // never dereferenced.
    unsafe { libc::mmap(std::ptr::null_mut(), PAGE, prot, flags, fd, 0) }
}

fn anon(prot: libc::c_int) -> *mut libc::c_void {
    map(prot, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1)
}

fn protect(addr: *mut libc::c_void, prot: libc::c_int) -> libc::c_int {
    // SAFETY: `addr` is a page this process mapped and never uses as memory.
    unsafe { libc::mprotect(addr, PAGE, prot) }
}

fn ioctl(fd: RawFd, request: libc::c_ulong) -> libc::c_int {
    // SAFETY: both requests are refused by the descriptors used here (/dev/null, a regular
    // file: ENOTTY) before any argument is read; the argument is null.
    unsafe { libc::ioctl(fd, request, std::ptr::null_mut::<u8>()) }
}

fn write(fd: RawFd, bytes: &[u8]) -> isize {
    // SAFETY: writes from a live buffer of `bytes.len()` bytes.
    unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) }
}

/// In the child: installs the filter, makes the case's call(s), exits 0 if all of them returned.
fn child(case: &str) -> ! {
    let dir = std::env::temp_dir();
    let file = tempfile::tempfile_in(&dir).expect("temp file");
    let vcpu = std::fs::File::open("/dev/null").expect("/dev/null");
    let fds = RunFds {
        vcpu: vcpu.as_raw_fd(),
        block: None,
        tap: None,
    };
    // Set up what the case needs before the filter goes on.
    let page = anon(libc::PROT_READ | libc::PROT_WRITE);
    assert_ne!(page, libc::MAP_FAILED);
    apply(&fds).expect("install the filter");
    match case {
        // What the run loop does: all of it must be allowed.
        "allowed" => {
            assert_ne!(anon(libc::PROT_READ | libc::PROT_WRITE), libc::MAP_FAILED);
            assert_eq!(protect(page, libc::PROT_READ), 0);
            let big = vec![1u8; 8 << 20]; // an mmap'd allocation, then munmap
            drop(std::hint::black_box(big));
            assert_eq!(write(1, b"console\n"), 8);
            // KVM_RUN on the vCPU descriptor passes the filter (/dev/null says ENOTTY).
            assert_eq!(ioctl(fds.vcpu, KVM_RUN), -1);
            std::process::exit(0);
        }
        "socket" => {
            let _ = std::net::UdpSocket::bind("127.0.0.1:0");
        }
        "mmap-exec" => {
            map(
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
            );
        }
        "mmap-rwx" => {
            anon(libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC);
        }
        "mprotect-exec" => {
            protect(page, libc::PROT_READ | libc::PROT_EXEC);
        }
        "mmap-file" => {
            map(libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd());
        }
        "ioctl-other-request" => {
            ioctl(fds.vcpu, KVM_GET_REGS);
        }
        "ioctl-other-fd" => {
            ioctl(file.as_raw_fd(), KVM_RUN);
        }
        "write-other-fd" => {
            write(file.as_raw_fd(), b"x");
        }
        other => panic!("unknown case {other}"),
    }
    // Reaching this line means the filter let the call through.
    std::process::exit(SURVIVED);
}

fn run_case(case: &str) -> ExitStatus {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "filter_cases",
            "--test-threads",
            "1",
            "--nocapture",
        ])
        .env(CASE_ENV, case)
        .output()
        .unwrap();
    eprintln!(
        "case {case}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.status
}

#[test]
fn filter_cases() {
    if let Some(case) = std::env::var_os(CASE_ENV) {
        child(&case.to_string_lossy());
    }
    let allowed = run_case("allowed");
    assert_eq!(
        allowed.code(),
        Some(0),
        "the run loop's own calls: {allowed:?}"
    );
    for case in [
        "socket",
        "mmap-exec",
        "mmap-rwx",
        "mprotect-exec",
        "mmap-file",
        "ioctl-other-request",
        "ioctl-other-fd",
        "write-other-fd",
    ] {
        let status = run_case(case);
        assert_eq!(
            status.signal(),
            Some(libc::SIGSYS),
            "{case}: the child was not killed by seccomp: {status:?}"
        );
    }
}
