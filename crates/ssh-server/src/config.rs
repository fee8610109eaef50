//! What the server is told: addresses, keys, users, the SFTP helper and the limits.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::hostkeys::HostKeyOptions;
use crate::ratelimit::AuthRateLimit;
use crate::startups::MaxStartups;
use crate::users::User;

/// Extra authorized keys for a user, in authorized_keys format (e.g. keys from the instance
/// metadata held in memory). Called on every authentication attempt.
pub type KeysProvider = Arc<dyn Fn(&User) -> String + Send + Sync>;

/// How the `sftp` subsystem is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SftpSubsystem {
    /// Refuse `subsystem sftp` (then `scp` and `sftp` fail).
    Disabled,
    /// Run this program as the user, with the channel on its stdin/stdout, like OpenSSH's
    /// `Subsystem sftp /usr/lib/openssh/sftp-server`. The guest points this at its own
    /// binary, whose `sftp-server` applet calls [`crate::sftp::serve_stdio`].
    Command {
        /// Program to run (an absolute path).
        program: PathBuf,
        /// Arguments after `argv[0]`.
        args: Vec<OsString>,
        /// `argv[0]`, if it must differ from `program` (multi-call binaries dispatch on it).
        argv0: Option<OsString>,
    },
}

/// Connection and authentication limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most simultaneous connections; more are closed right after `accept`.
    pub max_connections: usize,
    /// Connections not authenticated yet, from one source address (IPv6: one /64): OpenSSH's
    /// `MaxStartups` random early drop (see [`MaxStartups`]) applied per source. Refused
    /// connections are closed right after `accept`.
    pub max_startups_per_source: MaxStartups,
    /// Connections not authenticated yet, from all sources together (the global ceiling,
    /// OpenSSH's `MaxStartups`). Keep its `start` above the per-source `full`, so that one
    /// source alone never makes others' connections drop.
    pub max_startups: MaxStartups,
    /// Most session channels open at once on one connection (OpenSSH's `MaxSessions`).
    pub max_sessions_per_connection: usize,
    /// Failed authentication attempts allowed on one connection (OpenSSH's `MaxAuthTries`).
    pub max_auth_attempts: usize,
    /// Per-source failure rate limit across connections.
    pub auth_rate: AuthRateLimit,
    /// Time a connection has to authenticate, from `accept` (OpenSSH's `LoginGraceTime`).
    /// Slow or silent clients are cut off when it runs out, and the expiry counts as one
    /// failure of the source in [`Limits::auth_rate`].
    pub login_grace: Duration,
    /// Close a connection after this long without any traffic; `None` keeps idle sessions.
    pub idle_timeout: Option<Duration>,
    /// Send a keepalive after this long without traffic from the client; `None` never.
    pub keepalive_interval: Option<Duration>,
    /// Unanswered keepalives before the connection is dropped.
    pub keepalive_max: usize,
    /// Client input (stdin of children) buffered per connection before the server stops
    /// reading from the socket, in bytes.
    pub max_input_buffer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            max_startups_per_source: MaxStartups {
                start: 10,
                rate: 30,
                full: 100,
            },
            max_startups: MaxStartups {
                start: 128,
                rate: 30,
                full: 192,
            },
            max_sessions_per_connection: 10,
            max_auth_attempts: 6,
            auth_rate: AuthRateLimit::default(),
            login_grace: Duration::from_secs(30),
            idle_timeout: None,
            keepalive_interval: Some(Duration::from_secs(60)),
            keepalive_max: 3,
            max_input_buffer: 4 * 1024 * 1024,
        }
    }
}

/// Environment variables accepted from clients by default (`SendEnv`/`SetEnv`): locale,
/// terminal and time zone only. A trailing `*` matches any suffix.
pub const DEFAULT_ACCEPT_ENV: &[&str] = &["LANG", "LANGUAGE", "LC_*", "TERM", "COLORTERM", "TZ"];

/// Everything [`crate::serve`] needs.
#[derive(Clone)]
pub struct SshConfig {
    /// Addresses to listen on (e.g. `0.0.0.0:22` and `[::]:22`).
    pub listen: Vec<SocketAddr>,
    /// Directory of the host keys (see [`crate::hostkeys`]); created if missing. Put it on
    /// persistent state when there is some, so the keys survive reboots.
    pub host_key_dir: PathBuf,
    /// Which host keys to keep.
    pub host_keys: HostKeyOptions,
    /// `AuthorizedKeysFile` templates (`%h` home, `%u` user, `%U` uid, `%%`), re-read on every
    /// attempt. Default: `%h/.ssh/authorized_keys`.
    pub authorized_keys_files: Vec<String>,
    /// Keys supplied by the caller in addition to the files.
    pub authorized_keys_provider: Option<KeysProvider>,
    /// The passwd database (no NSS in the guest).
    pub passwd_path: PathBuf,
    /// The group database.
    pub group_path: PathBuf,
    /// Shell for every user instead of the one in passwd (`None`: passwd's, or `/bin/sh`).
    pub shell_override: Option<PathBuf>,
    /// How `subsystem sftp` is served.
    pub sftp: SftpSubsystem,
    /// Client environment variables accepted (see [`DEFAULT_ACCEPT_ENV`]).
    pub accept_env: Vec<String>,
    /// Limits.
    pub limits: Limits,
}

impl SshConfig {
    /// A configuration with the defaults: keys from `%h/.ssh/authorized_keys`, users from
    /// `/etc/passwd` and `/etc/group`, SFTP disabled (set [`SshConfig::sftp`]), default limits.
    pub fn new(listen: Vec<SocketAddr>, host_key_dir: impl Into<PathBuf>) -> SshConfig {
        SshConfig {
            listen,
            host_key_dir: host_key_dir.into(),
            host_keys: HostKeyOptions::default(),
            authorized_keys_files: vec!["%h/.ssh/authorized_keys".into()],
            authorized_keys_provider: None,
            passwd_path: PathBuf::from("/etc/passwd"),
            group_path: PathBuf::from("/etc/group"),
            shell_override: None,
            sftp: SftpSubsystem::Disabled,
            accept_env: DEFAULT_ACCEPT_ENV.iter().map(|s| s.to_string()).collect(),
            limits: Limits::default(),
        }
    }

    /// Whether a client-sent variable name is accepted.
    pub fn env_accepted(&self, name: &str) -> bool {
        valid_env_name(name)
            && self
                .accept_env
                .iter()
                .any(|pat| match pat.strip_suffix('*') {
                    Some(prefix) => name.starts_with(prefix),
                    None => pat == name,
                })
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`, at most 64 bytes.
fn valid_env_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

impl std::fmt::Debug for SshConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshConfig")
            .field("listen", &self.listen)
            .field("host_key_dir", &self.host_key_dir)
            .field("host_keys", &self.host_keys)
            .field("authorized_keys_files", &self.authorized_keys_files)
            .field(
                "authorized_keys_provider",
                &self.authorized_keys_provider.is_some(),
            )
            .field("passwd_path", &self.passwd_path)
            .field("group_path", &self.group_path)
            .field("shell_override", &self.shell_override)
            .field("sftp", &self.sftp)
            .field("accept_env", &self.accept_env)
            .field("limits", &self.limits)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_allow_list() {
        let c = SshConfig::new(vec![], "/tmp/x");
        for ok in ["LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ"] {
            assert!(c.env_accepted(ok), "{ok}");
        }
        for bad in [
            "PATH",
            "LD_PRELOAD",
            "HOME",
            "LANGX",
            "",
            "LC-ALL",
            "LC_A=B",
            "1LC",
        ] {
            assert!(!c.env_accepted(bad), "{bad}");
        }
    }
}
