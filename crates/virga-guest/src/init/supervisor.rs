//! After boot: supervise services (restart with backoff), reap zombies, and turn signals into
//! shutdowns. Signal conventions follow BusyBox init, so its `poweroff`/`reboot` work too:
//! SIGUSR2 or SIGPWR → power off, SIGTERM → reboot, SIGUSR1 → halt, SIGINT (Ctrl-Alt-Del) →
//! reboot.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boot_contract::ServiceStatus;
use boot_contract::cmdline::SHELL;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::Ctx;
use super::shutdown::{self, Action};

const SIGNALS: [Signal; 7] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGPWR,
    Signal::SIGHUP,
];

fn sigset() -> SigSet {
    let mut set = SigSet::empty();
    for s in SIGNALS {
        set.add(s);
    }
    set
}

/// Blocks the signals PID 1 handles, before any thread starts (threads inherit the mask), and
/// asks the kernel to send SIGINT on Ctrl-Alt-Del instead of rebooting at once.
pub fn block_signals() {
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&sigset()), None);
    let _ = nix::sys::reboot::set_cad_enabled(false);
}

/// Restart policy: 1 s, doubling to 30 s; reset after 30 s of uptime.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    current: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(30);
    const STABLE: Duration = Duration::from_secs(30);

    fn new() -> Self {
        Self { current: Self::MIN }
    }

    /// The delay before the next start, given how long the last run lasted.
    pub fn next(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= Self::STABLE {
            self.current = Self::MIN;
        }
        let d = self.current;
        self.current = (self.current * 2).min(Self::MAX);
        d
    }
}

/// A supervised process.
#[derive(Debug)]
pub struct Service {
    name: String,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    /// Terminal to attach as stdin/stdout/stderr and controlling tty.
    tty: Option<String>,
    pid: Option<Pid>,
    started: Instant,
    next_start: Option<Instant>,
    restarts: u32,
    backoff: Backoff,
    /// Started by the supervision loop after the ready line instead of before it: nothing
    /// "ready" promises depends on it (the console shell, like a getty after rc).
    after_ready: bool,
}

impl Service {
    fn new(name: &str, argv: &[&str], env: &[(&str, &str)], tty: Option<String>) -> Self {
        Self {
            name: name.into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tty,
            pid: None,
            started: Instant::now(),
            next_start: Some(Instant::now()),
            restarts: 0,
            backoff: Backoff::new(),
            after_ready: false,
        }
    }

    fn start(&mut self) {
        self.next_start = None;
        self.started = Instant::now();
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let spawned = match &self.tty {
            Some(tty) => match open_tty(tty) {
                Ok((i, o, e)) => {
                    cmd.stdin(i).stdout(o).stderr(e);
                    crate::sys::spawn_session_leader(&mut cmd).spawn()
                }
                Err(e) => Err(e),
            },
            None => {
                cmd.stdin(Stdio::null());
                crate::sys::spawn_new_session(&mut cmd).spawn()
            }
        };
        match spawned {
            Ok(child) => {
                let pid = Pid::from_raw(child.id() as i32);
                tracing::info!("service {} started (pid {pid})", self.name);
                self.pid = Some(pid);
            }
            Err(e) => {
                let delay = self.backoff.next(Duration::ZERO);
                tracing::warn!(
                    "service {}: cannot start {}: {e}; retrying in {}s",
                    self.name,
                    self.argv[0],
                    delay.as_secs()
                );
                self.next_start = Some(Instant::now() + delay);
            }
        }
    }

    fn exited(&mut self, how: &str) {
        let ran = self.started.elapsed();
        let delay = self.backoff.next(ran);
        self.pid = None;
        self.restarts += 1;
        self.next_start = Some(Instant::now() + delay);
        tracing::info!(
            "service {} {how} after {:.1}s; restarting in {}s",
            self.name,
            ran.as_secs_f64(),
            delay.as_secs()
        );
    }
}

fn open_tty(path: &str) -> std::io::Result<(Stdio, Stdio, Stdio)> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    Ok((
        Stdio::from(f.try_clone()?),
        Stdio::from(f.try_clone()?),
        Stdio::from(f),
    ))
}

/// The services this image runs.
fn services(ctx: &Ctx) -> Vec<Service> {
    let mut v = Vec::new();
    #[cfg(feature = "ssh")]
    if super::ssh::enabled(ctx) {
        let dir = super::ssh::key_dir(ctx);
        let dir = dir.to_string_lossy();
        v.push(Service::new(
            "sshd",
            &["/sbin/virga", "sshd", "--host-key-dir", &dir],
            &[("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")],
            None,
        ));
    }
    let shell_wanted = ctx.cmd().flag(SHELL).unwrap_or(ctx.image.console_shell);
    if let (true, Some(shell)) = (shell_wanted, ctx.image.shell.as_deref()) {
        if std::path::Path::new(shell).exists() {
            let tty = super::early::console_tty().unwrap_or_else(|| "/dev/console".into());
            let mut svc = Service::new(
                "console-shell",
                &[shell, "-l"],
                &[
                    ("HOME", "/root"),
                    ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                    ("TERM", "vt100"),
                    ("SHELL", shell),
                    ("USER", "root"),
                    ("LOGNAME", "root"),
                ],
                Some(tty),
            );
            svc.after_ready = true;
            v.push(svc);
        } else {
            ctx.warn(
                "services",
                format!("console shell {shell} is not in the image"),
            );
        }
    }
    v
}

/// The supervision loop. Never returns: it ends in a shutdown.
pub fn run(ctx: Arc<Ctx>) -> ! {
    let services = start(&ctx);
    supervise(ctx, services)
}

/// Starts the image's services (before the ready line, so that "ready" means they run); those
/// marked `after_ready` are left to the supervision loop, which starts them at once.
pub fn start(ctx: &Ctx) -> Vec<Service> {
    let mut services = services(ctx);
    for s in services.iter_mut().filter(|s| !s.after_ready) {
        s.start();
    }
    // Into the status document only: the ready line writes the document next.
    ctx.update(|st| st.services = service_status(&services));
    services
}

/// The supervision loop over started services. Never returns: it ends in a shutdown.
pub fn supervise(ctx: Arc<Ctx>, mut services: Vec<Service>) -> ! {
    let sfd = match SignalFd::with_flags(&sigset(), SfdFlags::SFD_CLOEXEC) {
        Ok(s) => Some(s),
        Err(e) => {
            ctx.error(
                "supervisor",
                format!("signalfd: {e}; signals will not be handled"),
            );
            None
        }
    };
    loop {
        let now = Instant::now();
        for s in services.iter_mut() {
            if s.next_start.is_some_and(|t| t <= now) {
                s.start();
            }
        }
        publish(&ctx, &services);
        let wait = services
            .iter()
            .filter_map(|s| s.next_start)
            .min()
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        let Some(sfd) = &sfd else {
            std::thread::sleep(wait.min(Duration::from_secs(1)));
            reap(&mut services);
            continue;
        };
        let ms = u16::try_from(wait.as_millis().clamp(1, 60_000)).unwrap_or(60_000);
        let mut fds = [PollFd::new(
            std::os::fd::AsFd::as_fd(sfd),
            PollFlags::POLLIN,
        )];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) if n > 0 => {}
            _ => continue,
        }
        let Ok(Some(info)) = sfd.read_signal() else {
            continue;
        };
        let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
            continue;
        };
        let action = match sig {
            Signal::SIGCHLD => {
                reap(&mut services);
                continue;
            }
            Signal::SIGUSR2 | Signal::SIGPWR => Action::Poweroff,
            Signal::SIGTERM | Signal::SIGINT => Action::Reboot,
            Signal::SIGUSR1 => Action::Halt,
            _ => continue,
        };
        let reason = format!("{sig} from pid {}", info.ssi_pid);
        shutdown::shutdown(&ctx, action, &reason);
    }
}

/// Reaps every exited child; schedules restarts for services.
fn reap(services: &mut [Service]) {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => {
                exited(services, pid, &format!("exited with {code}"))
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                exited(services, pid, &format!("killed by {sig}"))
            }
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

fn exited(services: &mut [Service], pid: Pid, how: &str) {
    if let Some(s) = services.iter_mut().find(|s| s.pid == Some(pid)) {
        s.exited(how);
    }
}

fn service_status(services: &[Service]) -> Vec<ServiceStatus> {
    services
        .iter()
        .map(|s| ServiceStatus {
            name: s.name.clone(),
            pid: s.pid.map(|p| p.as_raw() as u32),
            restarts: s.restarts,
        })
        .collect()
}

fn publish(ctx: &Ctx, services: &[Service]) {
    let list = service_status(services);

    let changed = ctx.status().services != list;
    if changed {
        ctx.update(|st| st.services = list);
        super::report::write_status(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::new();
        let quick = Duration::from_millis(10);
        let delays: Vec<u64> = (0..7).map(|_| b.next(quick).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.next(Duration::from_secs(60)).as_secs(), 1);
        assert_eq!(b.next(quick).as_secs(), 2);
    }
}
