//! Building a session's child process: program and argv, environment, working directory,
//! credentials and stdio; and mapping its end back to SSH `exit-status` / `exit-signal`.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use russh::Sig;

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

/// Builds the command; the caller spawns it (and drops it right after, which closes the
/// server's copies of the terminal's slave side).
pub fn build_command(req: SpawnRequest<'_>) -> std::io::Result<tokio::process::Command> {
    let env = session_env(&req);
    let mut cmd = match &req.program {
        Program::LoginShell => {
            let mut c = tokio::process::Command::new(req.shell);
            let base = req.shell.file_name().unwrap_or(req.shell.as_os_str());
            let mut argv0 = OsString::from("-");
            argv0.push(base);
            c.arg0(argv0);
            c
        }
        Program::ShellCommand(command) => {
            let mut c = tokio::process::Command::new(req.shell);
            c.arg("-c").arg(command);
            c
        }
        Program::Direct {
            program,
            args,
            argv0,
        } => {
            let mut c = tokio::process::Command::new(program);
            c.args(args);
            if let Some(a0) = argv0 {
                c.arg0(a0);
            }
            c
        }
    };
    cmd.env_clear();
    cmd.envs(env);
    let home = &req.user.home;
    cmd.current_dir(if home.is_dir() {
        home.as_path()
    } else {
        Path::new("/")
    });
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
    prepare_child(&mut cmd, creds, ctty);
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

/// Sends `sig` to the process group led by `pid` (every child is a session leader).
pub fn signal_group(pid: u32, sig: rustix::process::Signal) {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    if let Err(e) = rustix::process::kill_process_group(pid, sig) {
        tracing::debug!(pid = pid.as_raw_nonzero().get(), error = %e, "signal not delivered");
    }
}

#[cfg(test)]
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
