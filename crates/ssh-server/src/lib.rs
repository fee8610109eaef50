//! virga's SSH server: public-key logins to the guest, with shells, commands, PTYs and SFTP.
//!
//! Pipeline position: `ImageSpec` → image builder → artifacts → VM → PID 1 → **agents**. The
//! guest's multi-call binary runs [`serve`] as its `sshd` applet, a service supervised by PID 1,
//! once the network is up and the metadata agent has written `authorized_keys`. Before that, the
//! status agent prints the host key blocks ([`render_console_blocks`]) that cloud tooling scrapes
//! from the serial console. The `sftp-server` applet is [`sftp::serve_stdio`].
//!
//! Built on [russh](https://docs.rs/russh) (protocol, crypto via `ring`). What this crate adds:
//! the policy (public keys only, `authorized_keys` with forced commands read as the user off the
//! runtime, no logins for `nologin` shells, per-source failure rate limit, per-source and global
//! `MaxStartups`, connection and session limits, login grace), the sessions (PTY, login shell,
//! exec with exit status and signals through pidfds, environment allow-list, window changes,
//! privilege drop to the user), host key management, and an SFTP v3 server run as the user.
//!
//! Parsers of untrusted input ([`authorized_keys`], [`users`], [`sftp::parse_request`]) are
//! total, bounded and fuzzed. Reference: `docs/ssh.md`.

mod account;
pub mod authorized_keys;
pub mod config;
pub mod hostkeys;
pub mod process;
pub mod pty;
pub mod ratelimit;
mod server;
mod session;
pub mod sftp;
pub mod startups;
mod sys;
pub mod users;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use config::{DEFAULT_ACCEPT_ENV, KeysProvider, Limits, SftpSubsystem, SshConfig};
pub use hostkeys::{
    HostKeyInfo, HostKeyOptions, HostKeys, ensure_host_keys, render_console_blocks,
    render_fingerprints_block, render_keys_block,
};
pub use ratelimit::AuthRateLimit;
pub use server::{KEY_ALGORITHMS, Server};
pub use startups::MaxStartups;
pub use users::User;

/// What can stop the SSH server from starting or the SFTP helper from serving. Problems of
/// single connections are logged and never end the server.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// A file operation failed.
    #[error("cannot {what} {}", path.display())]
    Io {
        /// The operation.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A host key could not be made, read or encoded.
    #[error("host key {}: {reason}", path.display())]
    HostKey {
        /// The key file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A listening socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The async runtime could not be started.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// The configuration is unusable.
    #[error("bad configuration: {0}")]
    Config(String),
    /// The SFTP session failed (I/O or a protocol violation).
    #[error("sftp session failed")]
    Sftp {
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// An error and its sources, `: `-separated, for a log line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

/// Runs the SSH server until the process ends: host keys made or loaded from
/// [`SshConfig::host_key_dir`], sockets bound, connections served on a single-threaded runtime.
///
/// Use [`Server::bind`] then [`Server::run`] to print the console blocks or learn the bound
/// addresses in between.
pub fn serve(config: SshConfig) -> Result<(), SshError> {
    Server::bind(config)?.run()
}
