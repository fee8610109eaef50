//! After boot: supervise services (restart with backoff), reap zombies, and turn signals into
//! shutdowns. Signal conventions follow BusyBox init, so its `poweroff`/`reboot` work too:
//! SIGUSR2 or SIGPWR → power off, SIGTERM → reboot, SIGUSR1 → halt, SIGINT (Ctrl-Alt-Del) →
//! reboot.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boot_contract::ServiceStatus;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

use super::shutdown::{self, Action};
use crate::ctx::Ctx;

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
    let shell_wanted = ctx.params.shell.unwrap_or(ctx.image.console_shell);
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
    start(&ctx);
    supervise(ctx)
}

/// The services once started: kept here rather than on the boot sequence's stack, so that the
/// degraded mode after a panic in the boot sequence supervises the services already running
/// instead of starting them a second time.
static STARTED: std::sync::Mutex<Option<Vec<Service>>> = std::sync::Mutex::new(None);

fn started() -> std::sync::MutexGuard<'static, Option<Vec<Service>>> {
    STARTED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts the image's services (before the ready line, so that "ready" means they run); those
/// marked `after_ready` are left to the supervision loop, which starts them at once. Does
/// nothing when they have been started already.
pub fn start(ctx: &Ctx) {
    start_these(ctx, || services(ctx));
}

fn start_these(ctx: &Ctx, make: impl FnOnce() -> Vec<Service>) {
    let mut slot = started();
    if slot.is_some() {
        tracing::debug!("services already started");
        return;
    }
    let mut services = make();
    for s in services.iter_mut().filter(|s| !s.after_ready) {
        s.start();
    }
    // Into the status document only: the ready line writes the document next.
    ctx.update(|st| st.services = service_status(&services));
    *slot = Some(services);
}

/// The supervision loop over the started services. Never returns: it ends in a shutdown.
pub fn supervise(ctx: Arc<Ctx>) -> ! {
    let mut services = started().take().unwrap_or_default();
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
        if sig == Signal::SIGCHLD {
            reap(&mut services);
            continue;
        }
        let Some(action) = Action::from_signal(sig) else {
            continue;
        };
        let reason = format!("{sig} from pid {}", info.ssi_pid);
        shutdown::shutdown(&ctx, action, &reason);
    }
}

/// Reaps every exited child; schedules restarts for services.
fn reap(services: &mut [Service]) {
    let pids: Vec<Pid> = services.iter().filter_map(|s| s.pid).collect();
    crate::children::reap_others(&pids, |pid, how| exited(services, pid, &how));
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
        ctx.write_status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_start_once_even_when_asked_twice() {
        let ctx = Ctx::new(String::new(), Default::default(), Default::default());
        let marker = tempfile::tempdir().unwrap();
        let log = marker.path().join("starts");
        let script = format!("echo x >> {}; sleep 30", log.display());
        let svc = || vec![Service::new("t", &["/bin/sh", "-c", &script], &[], None)];
        start_these(&ctx, svc);
        start_these(&ctx, svc);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&log).unwrap_or_default().is_empty() {
            assert!(Instant::now() < deadline, "the service never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1);
        let mut s = started().take().unwrap();
        assert_eq!(s.len(), 1);
        if let Some(pid) = s[0].pid.take() {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
    }

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
