//! Clean shutdown: stop every process, sync, unmount, then power off, reboot or halt.

use std::io::Write;
use std::time::{Duration, Instant};

use boot_contract::console::{HALT_LINE, POWEROFF_LINE, REBOOT_LINE, SHUTDOWN_PREFIX};
use nix::mount::{MntFlags, MsFlags, umount2};
use nix::sys::reboot::{RebootMode, reboot};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::ctx::Ctx;

/// What to do at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// ACPI power off: the VM exits.
    Poweroff,
    /// Restart the machine.
    Reboot,
    /// Stop the CPU, leave the machine on.
    Halt,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Poweroff => "poweroff",
            Action::Reboot => "reboot",
            Action::Halt => "halt",
        }
    }

    /// The signal that asks PID 1 for this action. The conventions are BusyBox init's, so
    /// BusyBox's own `poweroff`/`reboot`/`halt` work against virga's PID 1 too.
    pub fn signal(self) -> Signal {
        match self {
            Action::Poweroff => Signal::SIGUSR2,
            Action::Reboot => Signal::SIGTERM,
            Action::Halt => Signal::SIGUSR1,
        }
    }

    /// The action a signal to PID 1 asks for: also SIGPWR (power failure: power off) and
    /// SIGINT (Ctrl-Alt-Del: reboot).
    pub fn from_signal(sig: Signal) -> Option<Self> {
        match sig {
            Signal::SIGUSR2 | Signal::SIGPWR => Some(Action::Poweroff),
            Signal::SIGTERM | Signal::SIGINT => Some(Action::Reboot),
            Signal::SIGUSR1 => Some(Action::Halt),
            _ => None,
        }
    }

    /// The `reboot(2)` command that ends the machine this way.
    pub fn reboot_mode(self) -> RebootMode {
        match self {
            Action::Poweroff => RebootMode::RB_POWER_OFF,
            Action::Reboot => RebootMode::RB_AUTOBOOT,
            Action::Halt => RebootMode::RB_HALT_SYSTEM,
        }
    }
}

/// Asks PID 1 for `action` after `delay` (cloud-config `power_state`), printing `message` first.
pub fn schedule(action: Action, delay: Duration, message: Option<String>) {
    let _ = std::thread::Builder::new()
        .name("power-state".into())
        .spawn(move || {
            std::thread::sleep(delay);
            if let Some(m) = message {
                println!("{m}");
            }
            let _ = kill(Pid::from_raw(1), action.signal());
        });
}

/// Grace period between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(3);

/// Shuts the machine down. Never returns.
pub fn shutdown(ctx: &Ctx, action: Action, reason: &str) -> ! {
    println!("{SHUTDOWN_PREFIX} ({}: {reason})", action.name());
    let _ = std::io::stdout().flush();
    ctx.update(|s| s.ready = false);
    super::network::release();
    terminate_all();
    nix::unistd::sync();
    let failed = unmount_all();
    nix::unistd::sync();
    for m in failed {
        tracing::warn!("could not unmount {m}");
    }
    let line = match action {
        Action::Poweroff => POWEROFF_LINE,
        Action::Reboot => REBOOT_LINE,
        Action::Halt => HALT_LINE,
    };
    let mode = action.reboot_mode();
    println!("{line}");
    let _ = std::io::stdout().flush();
    let Err(e) = reboot(mode);
    tracing::error!("reboot({mode:?}) failed: {e}");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// SIGTERM to every process, a grace period, then SIGKILL; reaps all of them.
fn terminate_all() {
    let all = Pid::from_raw(-1);
    // Interactive shells ignore SIGTERM but exit on SIGHUP, as on a terminal hang-up.
    let _ = kill(all, Signal::SIGTERM);
    let _ = kill(all, Signal::SIGHUP);
    let _ = kill(all, Signal::SIGCONT);
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline {
        match waitpid(all, Some(WaitPidFlag::WNOHANG)) {
            Err(nix::errno::Errno::ECHILD) => return,
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(20)),
            _ => {}
        }
    }
    let _ = kill(all, Signal::SIGKILL);
    while waitpid(all, None).is_ok() {}
}

/// Unmounts everything but the API filesystems and the root, newest first; what cannot be
/// unmounted is remounted read-only. Returns what could not be unmounted.
fn unmount_all() -> Vec<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut failed = Vec::new();
    for line in mounts.lines().rev() {
        let mut f = line.split_whitespace();
        let (Some(source), Some(target), Some(fstype)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if target == "/"
            || matches!(
                fstype,
                "proc" | "sysfs" | "devtmpfs" | "devpts" | "rootfs" | "cgroup2"
            )
        {
            continue;
        }
        let target = target.replace("\\040", " ");
        if umount2(target.as_str(), MntFlags::empty()).is_ok() {
            continue;
        }
        if source.starts_with("/dev/") {
            let ro = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            if nix::mount::mount(
                None::<&str>,
                target.as_str(),
                None::<&str>,
                ro,
                None::<&str>,
            )
            .is_ok()
            {
                continue;
            }
            failed.push(target);
        }
    }
    failed
}
