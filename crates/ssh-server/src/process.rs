//! Building a session's child process: program and argv, environment, working directory,
//! credentials and stdio; holding it by a pidfd from spawn to reaping ([`SessionProcess`]);
//! and mapping its end back to SSH `exit-status` / `exit-signal`.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;

use russh::Sig;
use rustix::process::{Pid, PidfdFlags, Signal, WaitId, WaitIdOptions, WaitIdStatus};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::sys::{Credentials, prepare_child};
use crate::users::User;

/// Longest command accepted in an `exec` request, in bytes.
pub const MAX_COMMAND: usize = 256 * 1024;
/// Most client environment variables kept per session.
pub const MAX_ENV_VARS: usize = 64;
/// Longest client environment value, in bytes.
pub const MAX_ENV_VALUE: usize = 4096;

/// What the child should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// The user's login shell (`-sh`).
    LoginShell,
    /// `shell -c <command>`.
    ShellCommand(OsString),
    /// A program run directly (the SFTP helper).
    Direct {
        /// Program path.
        program: PathBuf,
        /// Arguments after argv\[0\].
        args: Vec<OsString>,
        /// argv\[0\] override.
        argv0: Option<OsString>,
    },
}

/// A terminal handed to a child.
#[derive(Debug)]
pub struct ChildTty {
    /// `TERM` from the pty request.
    pub term: String,
    /// Slave path (`SSH_TTY`).
    pub name: String,
    /// The slave side: stdin/stdout/stderr and controlling terminal of the child.
    pub slave: OwnedFd,
}

/// Everything needed to start one session's child.
#[derive(Debug)]
pub struct SpawnRequest<'a> {
    /// The authenticated user.
    pub user: &'a User,
    /// The shell to use for [`Program::LoginShell`] and [`Program::ShellCommand`].
    pub shell: &'a Path,
    /// What to run.
    pub program: Program,
    /// Accepted client variables (already filtered).
    pub client_env: &'a [(String, String)],
    /// The terminal, when a PTY was requested.
    pub pty: Option<ChildTty>,
    /// `SSH_CONNECTION` value: `client_ip client_port server_ip server_port`.
    pub connection: String,
    /// `SSH_ORIGINAL_COMMAND` when a forced command replaced the client's.
    pub original_command: Option<OsString>,
}

/// `PATH` for sessions: root gets the sbin directories too.
pub fn default_path(uid: u32) -> &'static str {
    if uid == 0 {
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    } else {
        "/usr/local/bin:/usr/bin:/bin"
    }
}

/// The environment a session starts with, in order (later entries win).
pub fn session_env(req: &SpawnRequest<'_>) -> Vec<(OsString, OsString)> {
    let user = req.user;
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    let mut set = |k: &str, v: &OsStr| {
        env.retain(|(name, _)| name != k);
        env.push((k.into(), v.to_owned()));
    };
    for (k, v) in req.client_env {
        set(k, OsStr::new(v));
    }
    set("HOME", user.home.as_os_str());
    set("USER", OsStr::new(&user.name));
    set("LOGNAME", OsStr::new(&user.name));
    set("SHELL", req.shell.as_os_str());
    set("PATH", OsStr::new(default_path(user.uid)));
    set("SSH_CONNECTION", OsStr::new(&req.connection));
    // SSH_CLIENT is the older form: client address, client port, server port.
    let parts: Vec<&str> = req.connection.split(' ').collect();
    if let [client_ip, client_port, _server_ip, server_port] = parts[..] {
        set(
            "SSH_CLIENT",
            OsStr::new(&format!("{client_ip} {client_port} {server_port}")),
        );
    }
    if let Some(tty) = &req.pty {
        set("TERM", OsStr::new(&tty.term));
        set("SSH_TTY", OsStr::new(&tty.name));
    }
    if let Some(orig) = &req.original_command {
        set("SSH_ORIGINAL_COMMAND", orig);
    }
    env
}

/// Builds the command; the caller spawns it with [`SessionProcess::spawn`] (and drops it right
/// after, which closes the server's copies of the terminal's slave side). A standard `Command`:
/// tokio's would have its children reaped by pid behind [`SessionProcess`]'s back.
pub fn build_command(req: SpawnRequest<'_>) -> std::io::Result<std::process::Command> {
    let env = session_env(&req);
    let mut cmd = match &req.program {
        Program::LoginShell => {
            let mut c = std::process::Command::new(req.shell);
            let base = req.shell.file_name().unwrap_or(req.shell.as_os_str());
            let mut argv0 = OsString::from("-");
            argv0.push(base);
            c.arg0(argv0);
            c
        }
        Program::ShellCommand(command) => {
            let mut c = std::process::Command::new(req.shell);
            c.arg("-c").arg(command);
            c
        }
        Program::Direct {
            program,
            args,
            argv0,
        } => {
            let mut c = std::process::Command::new(program);
            c.args(args);
            if let Some(a0) = argv0 {
                c.arg0(a0);
            }
            c
        }
    };
    cmd.env_clear();
    cmd.envs(env);
    let ctty = match req.pty {
        Some(tty) => {
            let slave = tty.slave;
            cmd.stdin(Stdio::from(slave.try_clone()?))
                .stdout(Stdio::from(slave.try_clone()?))
                .stderr(Stdio::from(slave.try_clone()?));
            Some(slave)
        }
        None => {
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            None
        }
    };
    let creds = Credentials {
        uid: req.user.uid,
        gid: req.user.gid,
        groups: req.user.groups.clone(),
    };
    // The working directory is entered in the child, as the user (home, else `/`): the
    // server's thread never looks at the user's directories.
    prepare_child(&mut cmd, creds, ctty, &req.user.home);
    Ok(cmd)
}

/// Bytes of an exec request as an OS string (commands need not be UTF-8).
pub fn command_from_bytes(bytes: &[u8]) -> OsString {
    OsStr::from_bytes(bytes).to_owned()
}

/// How a child ended, in SSH terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// `exit-status`.
    Status(u32),
    /// `exit-signal` (signal name without `SIG`, core dumped).
    Signal(String, bool),
}

/// Maps a wait status to what the client is told.
pub fn exit_of(status: ExitStatus) -> Exit {
    if let Some(code) = status.code() {
        return Exit::Status(code as u32 & 0xff);
    }
    match status.signal() {
        Some(sig) => Exit::Signal(signal_name(sig), status.core_dumped()),
        None => Exit::Status(255),
    }
}

/// SSH signal names (RFC 4254 §6.10) for Linux signal numbers.
pub fn signal_name(sig: i32) -> String {
    match sig {
        1 => "HUP",
        2 => "INT",
        3 => "QUIT",
        4 => "ILL",
        6 => "ABRT",
        8 => "FPE",
        9 => "KILL",
        10 => "USR1",
        11 => "SEGV",
        12 => "USR2",
        13 => "PIPE",
        14 => "ALRM",
        15 => "TERM",
        other => return format!("SIG{other}"),
    }
    .to_string()
}

/// The russh form of a signal name.
pub fn sig_of(name: &str) -> Sig {
    match name {
        "ABRT" => Sig::ABRT,
        "ALRM" => Sig::ALRM,
        "FPE" => Sig::FPE,
        "HUP" => Sig::HUP,
        "ILL" => Sig::ILL,
        "INT" => Sig::INT,
        "KILL" => Sig::KILL,
        "PIPE" => Sig::PIPE,
        "QUIT" => Sig::QUIT,
        "SEGV" => Sig::SEGV,
        "TERM" => Sig::TERM,
        "USR1" => Sig::USR1,
        other => Sig::Custom(other.to_string()),
    }
}

/// The signal a client's `signal` request names, if it is one we deliver.
pub fn signal_of(sig: &Sig) -> Option<rustix::process::Signal> {
    use rustix::process::Signal;
    Some(match sig {
        Sig::ABRT => Signal::ABORT,
        Sig::ALRM => Signal::ALARM,
        Sig::FPE => Signal::FPE,
        Sig::HUP => Signal::HUP,
        Sig::ILL => Signal::ILL,
        Sig::INT => Signal::INT,
        Sig::KILL => Signal::KILL,
        Sig::PIPE => Signal::PIPE,
        Sig::QUIT => Signal::QUIT,
        Sig::SEGV => Signal::SEGV,
        Sig::TERM => Signal::TERM,
        Sig::USR1 => Signal::USR1,
        Sig::Custom(name) if name == "USR2" => Signal::USR2,
        Sig::Custom(_) => return None,
    })
}

/// Maps a `waitid` result to what the client is told.
pub fn exit_of_waitid(status: &WaitIdStatus) -> Exit {
    if let Some(code) = status.exit_status() {
        return Exit::Status(code as u32 & 0xff);
    }
    match status.terminating_signal() {
        Some(sig) => Exit::Signal(signal_name(sig), status.dumped()),
        None => Exit::Status(255),
    }
}

/// A session's child process, held by a pidfd opened right after `fork` (before anyone could
/// reap it), and reaped only here (`waitid(P_PIDFD)`; the server never waits for "any child").
///
/// Signals can therefore never reach a process that merely got the same pid later:
/// - [`SessionProcess::signal`] goes through the pidfd, which names this process and no
///   other; once it is reaped, the kernel answers `ESRCH`;
/// - [`SessionProcess::signal_group`] (the hang-up of a whole session, whose leader this child
///   is) uses the pid as a process-group id, which is only safe while the child is not reaped:
///   until then its pid (and so the group id) cannot be given to anyone else. Reaping and the
///   group signal take the same lock, and after reaping the group signal is not sent.
#[derive(Debug)]
pub struct SessionProcess {
    pid: Pid,
    pidfd: AsyncFd<OwnedFd>,
    /// `Some` once reaped.
    reaped: Mutex<Option<Exit>>,
}

impl SessionProcess {
    /// Spawns `cmd` and takes its pidfd. The `Child` is returned for its pipes only: never
    /// wait for it or signal it through its pid.
    pub fn spawn(
        cmd: &mut std::process::Command,
    ) -> std::io::Result<(SessionProcess, std::process::Child)> {
        let mut child = cmd.spawn()?;
        let pid = i32::try_from(child.id())
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| std::io::Error::other("child without a pid"))?;
        // Nobody reaps the child before this (the server has no "wait for any child"), so the
        // pid still names it.
        let opened = rustix::process::pidfd_open(pid, PidfdFlags::empty())
            .map_err(std::io::Error::from)
            .and_then(|fd| crate::sys::register_fd_with_interest(fd, Interest::READABLE));
        match opened {
            Ok(pidfd) => Ok((
                SessionProcess {
                    pid,
                    pidfd,
                    reaped: Mutex::new(None),
                },
                child,
            )),
            Err(e) => {
                // Not yet reaped: the pid is still this child's.
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// The child's pid (for logs).
    pub fn pid(&self) -> u32 {
        self.pid.as_raw_nonzero().get().unsigned_abs()
    }

    /// Sends `sig` to the child itself (an SSH `signal` request). `ESRCH` once it is reaped.
    pub fn signal(&self, sig: Signal) -> std::io::Result<()> {
        rustix::process::pidfd_send_signal(self.pidfd.get_ref(), sig)?;
        Ok(())
    }

    /// Sends `sig` to the child's process group while the child is not reaped; `false` when
    /// it is (or the signal could not be sent).
    pub fn signal_group(&self, sig: Signal) -> bool {
        let Ok(reaped) = self.reaped.lock() else {
            return false;
        };
        if reaped.is_some() {
            return false;
        }
        match rustix::process::kill_process_group(self.pid, sig) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(pid = self.pid(), error = %e, "signal not delivered");
                false
            }
        }
    }

    /// Reaps the child if it has exited; `Ok(None)` while it runs.
    pub fn try_reap(&self) -> std::io::Result<Option<Exit>> {
        let mut reaped = self
            .reaped
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        if let Some(exit) = &*reaped {
            return Ok(Some(exit.clone()));
        }
        let status = rustix::process::waitid(
            WaitId::PidFd(self.pidfd.get_ref().as_fd()),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        )?;
        Ok(status.map(|st| {
            let exit = exit_of_waitid(&st);
            *reaped = Some(exit.clone());
            exit
        }))
    }

    /// Waits for the child to exit and reaps it. Cancel-safe.
    pub async fn wait(&self) -> std::io::Result<Exit> {
        loop {
            if let Some(exit) = self.try_reap()? {
                return Ok(exit);
            }
            // The pidfd turns readable when the process exits.
            let mut guard = self.pidfd.readable().await?;
            if let Some(exit) = self.try_reap()? {
                return Ok(exit);
            }
            guard.clear_ready();
        }
    }

    /// Whether the child has been reaped.
    pub fn is_reaped(&self) -> bool {
        self.reaped.lock().map(|r| r.is_some()).unwrap_or(true)
    }
}

impl Drop for SessionProcess {
    /// A safety net: every session path reaps its child. If one did not, the whole session is
    /// killed (still unreaped, so the group id is the child's) and reaped on a thread.
    fn drop(&mut self) {
        if self.is_reaped() || matches!(self.try_reap(), Ok(Some(_))) {
            return;
        }
        self.signal_group(Signal::KILL);
        let _ = self.signal(Signal::KILL);
        if let Ok(fd) = self.pidfd.get_ref().try_clone() {
            let _ = std::thread::Builder::new()
                .name("sshd-reap".into())
                .spawn(move || {
                    let _ =
                        rustix::process::waitid(WaitId::PidFd(fd.as_fd()), WaitIdOptions::EXITED);
                });
        }
    }
}

/// Sets a descriptor non-blocking and registers it with the runtime for `interest`.
pub fn async_fd(fd: OwnedFd, interest: Interest) -> std::io::Result<AsyncFd<OwnedFd>> {
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)?;
    crate::sys::register_fd_with_interest(fd, interest)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "tests set up files directly")]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
            groups: vec![1000],
            home: "/home/alice".into(),
            shell: "/bin/sh".into(),
        }
    }

    #[test]
    fn environment_is_built_and_core_vars_win() {
        let u = user();
        let client = vec![
            ("LANG".to_string(), "C.UTF-8".to_string()),
            ("TERM".to_string(), "dumb".to_string()),
        ];
        let req = SpawnRequest {
            user: &u,
            shell: Path::new("/bin/sh"),
            program: Program::LoginShell,
            client_env: &client,
            pty: None,
            connection: "192.0.2.1 50000 192.0.2.2 22".into(),
            original_command: Some("ls".into()),
        };
        let env = session_env(&req);
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        assert_eq!(get("HOME").as_deref(), Some("/home/alice"));
        assert_eq!(get("USER").as_deref(), Some("alice"));
        assert_eq!(get("LOGNAME").as_deref(), Some("alice"));
        assert_eq!(get("PATH").as_deref(), Some("/usr/local/bin:/usr/bin:/bin"));
        assert_eq!(get("LANG").as_deref(), Some("C.UTF-8"));
        assert_eq!(
            get("TERM").as_deref(),
            Some("dumb"),
            "no pty: client TERM kept"
        );
        assert_eq!(get("SSH_CLIENT").as_deref(), Some("192.0.2.1 50000 22"));
        assert_eq!(get("SSH_ORIGINAL_COMMAND").as_deref(), Some("ls"));
        assert_eq!(get("SSH_TTY"), None);
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .unwrap()
    }

    /// A session-like child: leader of its own process group.
    fn leader(script: &str) -> std::process::Command {
        let mut c = std::process::Command::new("/bin/sh");
        c.args(["-c", script]).process_group(0);
        c
    }

    /// Starts `sleep 60` as a process-group leader with pid `want`, by setting the kernel's
    /// last allocated pid (needs root). Other processes take pids too: retried for a second.
    fn spawn_with_pid(want: u32) -> std::process::Child {
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(1) {
            std::fs::write("/proc/sys/kernel/ns_last_pid", (want - 1).to_string())
                .expect("cannot set ns_last_pid: run the tests as root (CI does)");
            let mut c = std::process::Command::new("sleep")
                .arg("60")
                .process_group(0)
                .spawn()
                .unwrap();
            if c.id() == want {
                return c;
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        panic!("could not start a process with pid {want}");
    }

    #[test]
    fn signals_never_reach_a_recycled_pid() {
        rt().block_on(async {
            let (p, _child) = SessionProcess::spawn(&mut leader("exit 7")).unwrap();
            assert_eq!(p.wait().await.unwrap(), Exit::Status(7));
            assert!(p.is_reaped());
            // An unrelated process group now has the reaped child's pid.
            let mut victim = spawn_with_pid(p.pid());
            let err = p.signal(Signal::KILL).unwrap_err();
            assert_eq!(
                err.raw_os_error(),
                Some(rustix::io::Errno::SRCH.raw_os_error())
            );
            assert!(!p.signal_group(Signal::KILL));
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let alive = victim.try_wait().unwrap().is_none();
            let _ = victim.kill();
            let _ = victim.wait();
            assert!(
                alive,
                "a signal reached the process that got the reaped pid"
            );
        });
    }

    #[test]
    fn the_group_is_signalled_until_reaped_and_the_status_kept() {
        rt().block_on(async {
            let (p, _child) = SessionProcess::spawn(&mut leader("sleep 30 & echo; wait")).unwrap();
            assert_eq!(p.try_reap().unwrap(), None);
            assert!(p.signal_group(Signal::TERM));
            let exit = p.wait().await.unwrap();
            assert_eq!(exit, Exit::Signal("TERM".into(), false));
            assert_eq!(
                p.try_reap().unwrap(),
                Some(exit),
                "status kept after reaping"
            );
            let (p, _child) = SessionProcess::spawn(&mut leader("sleep 30")).unwrap();
            p.signal(Signal::KILL).unwrap();
            assert_eq!(p.wait().await.unwrap(), Exit::Signal("KILL".into(), false));
        });
    }

    #[test]
    fn dropping_an_unreaped_child_kills_and_reaps_it() {
        rt().block_on(async {
            let (p, _child) = SessionProcess::spawn(&mut leader("sleep 30")).unwrap();
            let proc_dir = format!("/proc/{}", p.pid());
            assert!(Path::new(&proc_dir).exists());
            drop(p);
            let start = std::time::Instant::now();
            while Path::new(&proc_dir).exists() {
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(5),
                    "not reaped"
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        });
    }

    #[test]
    fn exit_mapping() {
        assert_eq!(exit_of(ExitStatus::from_raw(7 << 8)), Exit::Status(7));
        assert_eq!(
            exit_of(ExitStatus::from_raw(15)),
            Exit::Signal("TERM".into(), false)
        );
        assert_eq!(
            exit_of(ExitStatus::from_raw(11 | 0x80)),
            Exit::Signal("SEGV".into(), true)
        );
        assert_eq!(signal_name(40), "SIG40");
        assert!(matches!(sig_of("USR2"), Sig::Custom(_)));
        assert_eq!(
            signal_of(&Sig::Custom("USR2".into())),
            Some(rustix::process::Signal::USR2)
        );
        assert_eq!(signal_of(&Sig::Custom("WINCH".into())), None);
    }
}
