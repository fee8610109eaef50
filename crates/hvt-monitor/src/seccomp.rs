//! The monitor's seccomp allow-list, applied after setup and before the guest's first
//! instruction. Anything else kills the process (SIGSYS).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// `KVM_RUN` ioctl request number.
const KVM_RUN: u64 = 0xae80;

/// System calls the run loop needs.
pub const ALLOWED: &[i64] = &[
    libc::SYS_read,            // TAP frames
    libc::SYS_write,           // console, TAP frames, logs
    libc::SYS_writev,          // logs
    libc::SYS_pread64,         // block reads
    libc::SYS_pwrite64,        // block writes
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
    libc::SYS_mmap,        //
    libc::SYS_munmap,      //
    libc::SYS_madvise,     //
    libc::SYS_sigaltstack, // thread teardown
    libc::SYS_close,       // teardown
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// Builds the filter: the syscalls in [`ALLOWED`], plus `ioctl(_, KVM_RUN, _)` only.
pub fn filter() -> Result<BpfProgram, seccompiler::Error> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|nr| (*nr, Vec::new())).collect();
    let kvm_run = SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, KVM_RUN)?;
    rules.insert(libc::SYS_ioctl, vec![SeccompRule::new(vec![kvm_run])?]);
    // std's debug builds check descriptors with fcntl(F_GETFD) when closing them.
    let getfd = SeccompCondition::new(
        1,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        libc::F_GETFD as u64,
    )?;
    rules.insert(libc::SYS_fcntl, vec![SeccompRule::new(vec![getfd])?]);
    SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        std::env::consts::ARCH.try_into()?,
    )?
    .try_into()
    .map_err(seccompiler::Error::Backend)
}

/// Installs the filter on the calling thread (and, with TSYNC semantics absent, only it: the
/// monitor is single-threaded).
pub fn apply() -> Result<(), seccompiler::Error> {
    seccompiler::apply_filter(&filter()?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn filter_builds() {
        let f = super::filter().unwrap();
        assert!(f.len() > super::ALLOWED.len());
    }
}
