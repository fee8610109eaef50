//! The privileged and `unsafe` corner: the hook that runs in a forked child before `exec`, the
//! registration of descriptors with tokio's reactor, and the throwaway threads that take a
//! user's filesystem identity to read that user's files.
//!
//! `std::process::Command::pre_exec` is unsafe because the closure runs between `fork` and
//! `exec`, where only async-signal-safe operations are allowed. The closure here makes plain
//! system calls through rustix (no libc locks, no allocation): new session, controlling
//! terminal, supplementary groups, gid, uid — in that order, since after `setuid` the others
//! would be refused. rustix's `set_thread_*` calls are the raw per-thread syscalls; right after
//! `fork` the child has a single thread, so they change the whole process. Registering a
//! descriptor with tokio's reactor is marked unsafe by tokio (I/O safety).
//!
//! Reading a user's files as that user (their `authorized_keys`, the check of their shell) must
//! not change the credentials of the runtime thread or of any other thread: on Linux, the raw
//! `setfsuid`, `setfsgid` and `setgroups` system calls change only the calling thread (libc's
//! `setgroups`, `setuid` … would change every thread). [`spawn_throwaway`] starts a thread
//! that exists for one job, and [`assume_fs_identity`] works only on such a thread, so a user's
//! identity can never leak into a thread that serves someone else. The identity is never given
//! back: the thread ends with the job.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::process::{Gid, Uid};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

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
/// `ctty` as controlling terminal when there is one, switches to `creds` when the server runs
/// as root, then enters `home` (as the user, like OpenSSH; `/` when that fails). When the
/// server is not root and `creds` name another user, `exec` fails with `EPERM` rather than
/// silently running as the server's user.
pub fn prepare_child(
    cmd: &mut std::process::Command,
    creds: Credentials,
    ctty: Option<OwnedFd>,
    home: &Path,
) {
    use std::os::unix::process::CommandExt;
    // Built before the fork: the hook must not allocate. A home with a NUL byte cannot be
    // entered; `/` is used.
    let home = CString::new(home.as_os_str().as_bytes()).unwrap_or_else(|_| c"/".into());
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
        if rustix::process::chdir(home.as_c_str()).is_err() {
            rustix::process::chdir(c"/")?;
        }
        Ok(())
    };
    // SAFETY: `hook` runs in the child between fork and exec. It only issues raw system calls
    // (setsid, ioctl(TIOCSCTTY), setgroups, setgid, setuid, chdir) via rustix, which are
    // async-signal-safe; it allocates nothing (the group list and the home path were built
    // before the fork) and touches no locks or state shared with other threads of the parent.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Registers a non-blocking descriptor with the runtime's reactor, for reading and writing.
pub fn register_fd(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    register_fd_with_interest(fd, Interest::READABLE | Interest::WRITABLE)
}

/// Registers a descriptor with the runtime's reactor for `interest` only (a pidfd is only
/// ever readable: when its process has exited).
pub fn register_fd_with_interest(
    fd: OwnedFd,
    interest: Interest,
) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: `register_with_interest` requires that the descriptor stays open and the same
    // while the `AsyncFd` owns it. An `OwnedFd` is closed only when dropped (which happens
    // when the `AsyncFd` is dropped), and its `as_raw_fd` always returns the same number; this
    // crate never calls `get_mut` to replace it.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(std::io::Error::from)
}

thread_local! {
    /// Set on threads made by [`spawn_throwaway`]: the only ones allowed to change identity.
    static THROWAWAY: Cell<bool> = const { Cell::new(false) };
}

/// Runs `job` on a new thread that ends with it; the result arrives on the returned channel
/// (which closes without a value if the job panics). The thread may take a user's filesystem
/// identity with [`assume_fs_identity`]. Blocking is fine here: the caller waits on the
/// channel, with a timeout, without blocking its runtime.
pub fn spawn_throwaway<T, F>(
    name: &str,
    job: F,
) -> std::io::Result<tokio::sync::oneshot::Receiver<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            THROWAWAY.with(|t| t.set(true));
            let _ = tx.send(job());
        })?;
    Ok(rx)
}

/// Makes the calling thread access files as `creds` (fsuid, fsgid, supplementary groups),
/// leaving its real and effective ids — and every other thread — as they were. Refused on
/// threads not made by [`spawn_throwaway`], and when the server is not root and `creds` are not
/// its own (the read would silently happen with the server's rights).
///
/// Side effect of any credential change (kernel rule): the process becomes non-dumpable, as
/// OpenSSH's sshd makes itself on purpose (no core files with host keys, no ptrace by users).
pub fn assume_fs_identity(creds: &Credentials) -> std::io::Result<()> {
    use nix::unistd::{setfsgid, setfsuid};
    if !THROWAWAY.with(Cell::get) {
        return Err(std::io::Error::other(
            "filesystem identity may change only on a throwaway thread",
        ));
    }
    if !rustix::process::geteuid().is_root() {
        return if rustix::process::getuid().as_raw() == creds.uid {
            Ok(())
        } else {
            Err(std::io::ErrorKind::PermissionDenied.into())
        };
    }
    let groups: Vec<Gid> = creds.groups.iter().map(|&g| Gid::from_raw(g)).collect();
    rustix::thread::set_thread_groups(&groups)?;
    // setfsuid/setfsgid return the previous id and never fail visibly; asking again with the
    // invalid id -1 returns the current one, which tells whether the change took.
    setfsgid(nix::unistd::Gid::from_raw(creds.gid));
    if setfsgid(nix::unistd::Gid::from_raw(u32::MAX)).as_raw() != creds.gid {
        return Err(std::io::Error::other("setfsgid did not take"));
    }
    setfsuid(nix::unistd::Uid::from_raw(creds.uid));
    if setfsuid(nix::unistd::Uid::from_raw(u32::MAX)).as_raw() != creds.uid {
        return Err(std::io::Error::other("setfsuid did not take"));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "tests set up files directly")]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn wait<T>(rx: tokio::sync::oneshot::Receiver<T>) -> T {
        rx.blocking_recv().expect("job result")
    }

    #[test]
    fn identity_changes_only_on_throwaway_threads() {
        let creds = Credentials {
            uid: 4242,
            gid: 4343,
            groups: vec![4343],
        };
        let err = assume_fs_identity(&creds).unwrap_err();
        assert!(err.to_string().contains("throwaway"), "{err}");
    }

    /// Needs root (CI runs the tests as root): fails rather than passing vacuously.
    #[test]
    fn a_user_thread_cannot_read_root_files_and_the_rest_of_the_process_still_can() {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test switches identities: run it as root (CI does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"root only").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let creds = Credentials {
            uid: 4242,
            gid: 4343,
            groups: vec![4343, 4444],
        };
        let path = secret.clone();
        let rx = spawn_throwaway("test-as-user", move || {
            assume_fs_identity(&creds)?;
            let groups = rustix::process::getgroups()?;
            let read = std::fs::read(&path);
            Ok::<_, std::io::Error>((groups, read.map_err(|e| e.kind())))
        })
        .unwrap();
        let (groups, read) = wait(rx).unwrap();
        assert_eq!(read, Err(std::io::ErrorKind::PermissionDenied));
        let groups: Vec<u32> = groups.iter().map(|g| g.as_raw()).collect();
        assert_eq!(groups, vec![4343, 4444]);
        // This thread (and so the process) kept root's rights and groups.
        assert_eq!(std::fs::read(&secret).unwrap(), b"root only");
        assert!(
            !rustix::process::getgroups()
                .unwrap()
                .iter()
                .any(|g| g.as_raw() == 4444)
        );
    }
}
