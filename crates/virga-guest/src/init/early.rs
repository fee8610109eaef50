//! The first things PID 1 does: API filesystems and the console.

use std::os::fd::AsRawFd;

use nix::mount::{MsFlags, mount};

/// (source, target, fstype, flags, data, required)
type MountSpec = (
    &'static str,
    &'static str,
    &'static str,
    MsFlags,
    &'static str,
    bool,
);

fn mounts() -> [MountSpec; 8] {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    [
        ("proc", "/proc", "proc", nosuid_nodev_noexec, "", true),
        ("sysfs", "/sys", "sysfs", nosuid_nodev_noexec, "", true),
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            "mode=0755",
            true,
        ),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            "gid=5,mode=620,ptmxmode=666",
            true,
        ),
        (
            "tmpfs",
            "/dev/shm",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            "mode=1777",
            false,
        ),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            "mode=0755",
            true,
        ),
        (
            "tmpfs",
            "/tmp",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            "mode=1777",
            true,
        ),
        (
            "cgroup2",
            "/sys/fs/cgroup",
            "cgroup2",
            nosuid_nodev_noexec,
            "",
            false,
        ),
    ]
}

/// Mounts proc, sys, devtmpfs, devpts, run, tmp (and shm, cgroup2). Returns one message per
/// failed required mount; never panics.
pub fn mount_all() -> Vec<String> {
    let mut errors = Vec::new();
    for (source, target, fstype, flags, data, required) in mounts() {
        if let Err(e) = std::fs::create_dir_all(target) {
            if required {
                errors.push(format!("mkdir {target}: {e}"));
            }
            continue;
        }
        let data = if data.is_empty() { None } else { Some(data) };
        match mount(Some(source), target, Some(fstype), flags, data) {
            Ok(()) => {}
            Err(nix::errno::Errno::EBUSY) => {} // already mounted (e.g. devtmpfs automount)
            Err(e) if required => errors.push(format!("mount {fstype} on {target}: {e}")),
            Err(_) => {}
        }
    }
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(target, link);
    }
    errors
}

/// Kernel protections that a system with users and a persistent home needs: no following a
/// symlink or opening a FIFO/file another user planted in a world-writable sticky directory,
/// no hard links to files one does not own. Returns one message per setting that failed.
pub fn protect_links() -> Vec<String> {
    let mut errors = Vec::new();
    for (knob, value) in [
        ("protected_symlinks", "1"),
        ("protected_hardlinks", "1"),
        ("protected_fifos", "1"),
        ("protected_regular", "2"),
    ] {
        let path = format!("/proc/sys/fs/{knob}");
        if let Err(e) = std::fs::write(&path, value) {
            errors.push(format!("{path}: {e}"));
        }
    }
    errors
}

/// Makes sure fds 0, 1 and 2 are the console. The kernel opens `/dev/console` for PID 1 when
/// the initramfs has that node; otherwise (or if it was unusable) open it now from devtmpfs.
pub fn console() -> bool {
    let fd_ok = |fd: i32| nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_ok();
    if fd_ok(0) && fd_ok(1) && fd_ok(2) {
        return true;
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        Ok(f) => {
            for fd in 0..3 {
                if !fd_ok(fd) {
                    let _ = nix::unistd::dup2(f.as_raw_fd(), fd);
                }
            }
            // Keep the descriptor if it landed on 0..=2 itself.
            if f.as_raw_fd() <= 2 {
                std::mem::forget(f);
            }
            true
        }
        Err(_) => false,
    }
}

/// The tty behind `/dev/console` (`ttyS0`), from the kernel's active console list.
pub fn console_tty() -> Option<String> {
    let active = std::fs::read_to_string("/sys/class/tty/console/active").ok()?;
    // The kernel lists consoles so that the one /dev/console writes to primarily is last.
    active
        .split_whitespace()
        .last()
        .map(|s| format!("/dev/{s}"))
}
