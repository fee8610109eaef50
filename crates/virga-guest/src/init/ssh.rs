//! The SSH server: host keys made once per instance (kept on the state disk when there is
//! one), their fingerprints on the console in the blocks cloud tooling scrapes, and `sshd` as a
//! supervised service (this binary's `sshd` applet).

use std::time::Instant;

use std::path::PathBuf;

use boot_contract::StageResult;
use ssh_server::{HostKeyOptions, SftpSubsystem, SshConfig};

use crate::ctx::Ctx;

/// The port the guest listens on.
pub const SSH_PORT: u16 = 22;

/// Host keys live here: on the state disk when mounted, else in /run.
pub fn key_dir(ctx: &Ctx) -> PathBuf {
    if ctx.persistent() {
        PathBuf::from("/var/lib/virga/ssh")
    } else {
        PathBuf::from("/run/virga/ssh")
    }
}

/// Whether this boot runs the SSH server.
pub fn enabled(ctx: &Ctx) -> bool {
    ctx.params.ssh.unwrap_or(ctx.image.ssh)
}

/// Stage `ssh`: host keys and the console blocks. The service starts after the ready line.
pub fn stage(ctx: &Ctx, _deadline: Instant) -> anyhow::Result<StageResult> {
    if !enabled(ctx) {
        return Ok(StageResult::Skipped);
    }
    let instance_id = ctx.cloud().md.as_ref().map(|m| m.instance_id.clone());
    let hostname = ctx.status().hostname;
    let opts = HostKeyOptions {
        instance_id,
        comment: Some(format!("root@{hostname}")),
        ..HostKeyOptions::default()
    };
    let dir = key_dir(ctx);
    let keys = ssh_server::ensure_host_keys(&dir, &opts)?;
    print!("{}", ssh_server::render_console_blocks(&keys.info));
    let summary: Vec<serde_json::Value> = keys
        .info
        .iter()
        .map(|k| serde_json::json!({ "type": k.key_type, "bits": k.bits, "fingerprint": k.fingerprint }))
        .collect();
    ctx.update(|s| {
        s.ssh =
            Some(serde_json::json!({ "port": SSH_PORT, "host_key_dir": dir, "host_keys": summary }))
    });
    Ok(StageResult::Ok)
}

/// Waits until something accepts TCP connections on the SSH port (the service has bound it).
pub fn wait_listening(deadline: std::time::Duration) -> bool {
    let end = std::time::Instant::now() + deadline;
    let addr = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, SSH_PORT));
    loop {
        if std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200))
            .is_ok()
        {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The `sshd` applet: serves until killed. `--host-key-dir DIR`, `--port N`.
pub fn sshd_main(args: &[String]) -> std::process::ExitCode {
    let mut dir = key_dir(&Ctx::standalone());
    let mut port = SSH_PORT;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--host-key-dir", Some(v)) => dir = PathBuf::from(v),
            ("--port", Some(v)) => match v.parse() {
                Ok(p) => port = p,
                Err(_) => {
                    eprintln!("sshd: bad port {v}");
                    return std::process::ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("usage: virga sshd [--host-key-dir DIR] [--port N]");
                return std::process::ExitCode::from(2);
            }
        }
    }
    crate::log::init(tracing::Level::INFO);
    let listen = vec![std::net::SocketAddr::from((
        std::net::Ipv6Addr::UNSPECIFIED,
        port,
    ))];
    let mut config = SshConfig::new(listen, dir);
    config.sftp = SftpSubsystem::Command {
        program: PathBuf::from("/proc/self/exe"),
        args: Vec::new(),
        argv0: Some("sftp-server".into()),
    };
    match ssh_server::serve(config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sshd: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

/// The `sftp-server` applet (the SFTP subsystem of `sshd`).
pub fn sftp_main() -> std::process::ExitCode {
    match ssh_server::sftp::serve_stdio() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sftp-server: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
