//! The monitor's seccomp allow-list, applied after setup and before the guest's first
//! instruction. Anything else kills the process (SIGSYS).
//!
//! Besides the system call numbers, the filter checks arguments wherever the run loop's use is
//! narrow enough to describe:
//!
//! * no executable memory: `mmap` only anonymous and without `PROT_EXEC`, `mprotect` only without
//!   `PROT_EXEC` (so a compromised monitor cannot map or make code, nor map a file);
//! * `ioctl` only `KVM_RUN`, and only on the vCPU descriptor;
//! * descriptors: `read` only from the TAP, `write`/`writev` only to stdout, stderr and the TAP,
//!   `pread64`/`pwrite64` only on the block file; `fcntl` only `F_GETFD` (std's debug checks).
//!
//! `poll`/`ppoll` take their descriptors through a pointer, which seccomp cannot inspect; `close`
//! stays unrestricted (closing a descriptor grants nothing).

use std::collections::BTreeMap;
use std::os::fd::RawFd;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// `KVM_RUN` ioctl request number.
const KVM_RUN: u64 = 0xae80;

/// System calls the run loop needs with any arguments.
pub const ALLOWED: &[i64] = &[
    libc::SYS_poll,            // POLL with a TAP
    libc::SYS_ppoll,           //
    libc::SYS_clock_gettime,   // WALLTIME, deadline (vDSO fallback)
    libc::SYS_clock_nanosleep, // POLL without a TAP
    libc::SYS_nanosleep,       //
    libc::SYS_getrandom,       // RANDOM
    libc::SYS_rt_sigreturn,    // watchdog ticks (SIGALRM)
    libc::SYS_rt_sigprocmask,
    libc::SYS_futex,       // stdout lock
    libc::SYS_brk,         // allocator
    libc::SYS_munmap,      //
    libc::SYS_madvise,     //
    libc::SYS_sigaltstack, // thread teardown
    libc::SYS_close,       // teardown
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// The descriptors the run loop uses once the filter is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunFds {
    /// The vCPU (`KVM_RUN`).
    pub vcpu: RawFd,
    /// The block device file, if attached.
    pub block: Option<RawFd>,
    /// The TAP device, if attached.
    pub tap: Option<RawFd>,
}

/// Standard output (guest console) and standard error (logs).
const STDOUT: RawFd = 1;
const STDERR: RawFd = 2;

/// Why the filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// A descriptor in [`RunFds`] is negative.
    #[error("invalid descriptor {0} for the seccomp filter")]
    BadDescriptor(RawFd),
    /// seccompiler refused the rules or the kernel refused the program.
    #[error(transparent)]
    Filter(#[from] seccompiler::Error),
}

impl From<seccompiler::BackendError> for SeccompError {
    fn from(e: seccompiler::BackendError) -> Self {
        Self::Filter(seccompiler::Error::Backend(e))
    }
}

fn fd_arg(fd: RawFd) -> Result<u64, SeccompError> {
    u64::try_from(fd).map_err(|_| SeccompError::BadDescriptor(fd))
}

fn arg_eq(arg: u8, value: u64) -> Result<SeccompCondition, seccompiler::BackendError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
}

/// `arg & mask == value`.
fn arg_masked(
    arg: u8,
    mask: u64,
    value: u64,
) -> Result<SeccompCondition, seccompiler::BackendError> {
    SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(mask),
        value,
    )
}

/// One rule per descriptor: argument 0 is one of `fds`.
fn on_fds(fds: &[RawFd]) -> Result<Vec<SeccompRule>, SeccompError> {
    fds.iter()
        .map(|&fd| Ok(SeccompRule::new(vec![arg_eq(0, fd_arg(fd)?)?])?))
        .collect()
}

/// Builds the filter for a run loop using `fds`.
pub fn filter(fds: &RunFds) -> Result<BpfProgram, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|nr| (*nr, Vec::new())).collect();

    let prot_exec = libc::PROT_EXEC as u64;
    let anon = libc::MAP_ANONYMOUS as u64;
    // mmap(addr, len, prot, flags, fd, off): prot without PROT_EXEC, flags with MAP_ANONYMOUS.
    rules.insert(
        libc::SYS_mmap,
        vec![SeccompRule::new(vec![
            arg_masked(2, prot_exec, 0)?,
            arg_masked(3, anon, anon)?,
        ])?],
    );
    // mprotect(addr, len, prot): glibc's allocator may change protections, never to PROT_EXEC.
    rules.insert(
        libc::SYS_mprotect,
        vec![SeccompRule::new(vec![arg_masked(2, prot_exec, 0)?])?],
    );

    let vcpu = fd_arg(fds.vcpu)?;
    rules.insert(
        libc::SYS_ioctl,
        vec![SeccompRule::new(vec![
            arg_eq(0, vcpu)?,
            arg_eq(1, KVM_RUN)?,
        ])?],
    );

    let tap: Vec<RawFd> = fds.tap.into_iter().collect();
    let mut out = vec![STDOUT, STDERR];
    out.extend(&tap);
    if !tap.is_empty() {
        rules.insert(libc::SYS_read, on_fds(&tap)?);
    }
    rules.insert(libc::SYS_write, on_fds(&out)?);
    rules.insert(libc::SYS_writev, on_fds(&[STDOUT, STDERR])?);
    if let Some(block) = fds.block {
        rules.insert(libc::SYS_pread64, on_fds(&[block])?);
        rules.insert(libc::SYS_pwrite64, on_fds(&[block])?);
    }

    // std's debug builds check descriptors with fcntl(F_GETFD) when closing them.
    rules.insert(
        libc::SYS_fcntl,
        vec![SeccompRule::new(vec![arg_eq(1, libc::F_GETFD as u64)?])?],
    );
    let program = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        std::env::consts::ARCH.try_into()?,
    )?
    .try_into()?;
    Ok(program)
}

/// Installs the filter on the calling thread (and, with TSYNC semantics absent, only it: the
/// monitor is single-threaded).
pub fn apply(fds: &RunFds) -> Result<(), SeccompError> {
    Ok(seccompiler::apply_filter(&filter(fds)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_builds_with_and_without_devices() {
        let bare = RunFds {
            vcpu: 5,
            block: None,
            tap: None,
        };
        let f = filter(&bare).unwrap();
        assert!(f.len() > ALLOWED.len());
        let full = RunFds {
            block: Some(6),
            tap: Some(7),
            ..bare
        };
        // More rules (read, pread64, pwrite64, the TAP in write) make a longer program.
        assert!(filter(&full).unwrap().len() > f.len());
    }

    #[test]
    fn negative_descriptors_are_refused() {
        let bad = |fds: RunFds| matches!(filter(&fds), Err(SeccompError::BadDescriptor(-1)));
        let ok = RunFds {
            vcpu: 3,
            block: None,
            tap: None,
        };
        assert!(bad(RunFds { vcpu: -1, ..ok }));
        assert!(bad(RunFds {
            block: Some(-1),
            ..ok
        }));
        assert!(bad(RunFds {
            tap: Some(-1),
            ..ok
        }));
    }
}
