//! The one place with `unsafe`: the hook that runs in a forked child before `exec`.
//!
//! `std::process::Command::pre_exec` is unsafe because the closure runs between `fork` and
//! `exec`, where only async-signal-safe operations are allowed. The closure here makes plain
//! system calls through rustix (no libc locks, no allocation): new session, controlling
//! terminal, supplementary groups, gid, uid — in that order, since after `setuid` the others
//! would be refused. Also the registration of a pty master with tokio's reactor, which tokio
//! marks unsafe (I/O safety). rustix's `set_thread_*` calls are the raw per-thread syscalls; right after
//! `fork` the child has a single thread, so they change the whole process.
#![allow(unsafe_code)]

use std::os::fd::OwnedFd;

use rustix::process::{Gid, Uid};

/// Who the child runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// Makes the child a session leader (so signals and hangups reach its whole job tree), gives it
/// `ctty` as controlling terminal when there is one, and switches to `creds` when the server
/// runs as root. When the server is not root and `creds` name another user, `exec` fails with
/// `EPERM` rather than silently running as the server's user.
pub fn prepare_child(cmd: &mut tokio::process::Command, creds: Credentials, ctty: Option<OwnedFd>) {
    let groups: Vec<Gid> = creds.groups.iter().map(|&g| Gid::from_raw(g)).collect();
    let uid = Uid::from_raw(creds.uid);
    let gid = Gid::from_raw(creds.gid);
    let switch = rustix::process::geteuid().is_root() || rustix::process::getuid() != uid;
    let hook = move || -> std::io::Result<()> {
        rustix::process::setsid()?;
        if let Some(tty) = &ctty {
            rustix::process::ioctl_tiocsctty(tty)?;
        }
        if switch {
            rustix::thread::set_thread_groups(&groups)?;
            rustix::thread::set_thread_gid(gid)?;
            rustix::thread::set_thread_uid(uid)?;
        }
        Ok(())
    };
    // SAFETY: `hook` runs in the child between fork and exec. It only issues raw system calls
    // (setsid, ioctl(TIOCSCTTY), setgroups, setgid, setuid) via rustix, which are
    // async-signal-safe; it allocates nothing (the group list was built before the fork) and
    // touches no locks or state shared with other threads of the parent.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Registers a non-blocking descriptor with the runtime's reactor.
pub fn register_fd(fd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: `register` requires that the descriptor stays open and the same while the
    // `AsyncFd` owns it. An `OwnedFd` is closed only when dropped (which happens when the
    // `AsyncFd` is dropped), and its `as_raw_fd` always returns the same number; this crate
    // never calls `get_mut` to replace it.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(std::io::Error::from)
}
