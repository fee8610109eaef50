//! The system calls vm-runner makes that std does not wrap. Every `unsafe` block of the crate
//! lives here.
#![allow(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes the kernel kill the child (QEMU) with SIGKILL when the thread that started it dies,
/// so a `virga run` killed by SIGTERM, SIGHUP (a closed terminal) or a CI timeout never leaves
/// its VM running. `ip netns exec` execs QEMU in place, so QEMU keeps the setting.
pub fn kill_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the forked child before exec and calls only prctl and
    // getppid, which are async-signal-safe and touch no memory of the parent.
    unsafe {
        let parent = libc::getpid();
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would send the signal.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn the_child_dies_with_the_thread_that_started_it() {
        let mut child = std::thread::spawn(|| {
            kill_with_parent(Command::new("sleep").arg("60"))
                .spawn()
                .unwrap()
        })
        .join()
        .unwrap();
        // The starting thread has exited: the kernel has sent SIGKILL (or is about to).
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    }
}
