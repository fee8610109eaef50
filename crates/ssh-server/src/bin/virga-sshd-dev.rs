//! Runs virga's SSH server on the host, for tests and benchmarks.
//!
//! ```text
//! virga-sshd-dev --listen 127.0.0.1:2222 --host-key-dir DIR [--authorized-keys FILE]…
//!                [--shell /bin/sh] [--passwd FILE] [--group FILE] [--print-host-keys] …
//! virga-sshd-dev --sftp-server        # the SFTP helper the server starts per session
//! ```
//!
//! Prints `listening on ADDR` on stdout for every bound address (port 0 picks a free port),
//! after the console host-key blocks when `--print-host-keys` is given. Logs go to stderr
//! (`RUST_LOG` or `--log` sets the filter). Exit codes: 0 never (serves until killed), 1 on
//! a startup error, 2 on a usage error.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use ssh_server::{SftpSubsystem, SshConfig};

const USAGE: &str = "usage: virga-sshd-dev --host-key-dir DIR [--listen ADDR]... \
[--authorized-keys TEMPLATE]... [--shell PATH] [--passwd FILE] [--group FILE] \
[--print-host-keys] [--rsa-host-key] [--comment TEXT] [--instance-id ID] [--no-sftp] \
[--sftp-program PATH] \
[--login-grace SECS] [--idle-timeout SECS] [--max-connections N] [--max-startups S:R:F] \
[--max-startups-per-source S:R:F] [--max-sessions N] [--max-auth-tries N] [--rate-burst N] [--rate-per-minute N] [--log FILTER]
       virga-sshd-dev --sftp-server";

struct Args {
    config: SshConfig,
    print_host_keys: bool,
    log: Option<String>,
}

fn secs(v: &str) -> anyhow::Result<Duration> {
    let s: f64 = v
        .parse()
        .with_context(|| format!("not a number of seconds: {v}"))?;
    if !(0.0..=86_400.0 * 365.0).contains(&s) {
        bail!("seconds out of range: {v}");
    }
    Ok(Duration::from_secs_f64(s))
}

fn parse_args() -> anyhow::Result<Option<Args>> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let mut listen: Vec<SocketAddr> = Vec::new();
    let mut host_key_dir: Option<PathBuf> = None;
    let mut keys: Vec<String> = Vec::new();
    let mut config = SshConfig::new(Vec::new(), PathBuf::new());
    let mut print_host_keys = false;
    let mut sftp = true;
    let mut sftp_program: Option<PathBuf> = None;
    let mut log = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Long("sftp-server") => return Ok(None),
            Long("listen") => listen.push(parser.value()?.parse()?),
            Long("host-key-dir") => host_key_dir = Some(parser.value()?.into()),
            Long("authorized-keys") => keys.push(parser.value()?.string()?),
            Long("shell") => config.shell_override = Some(parser.value()?.into()),
            Long("passwd") => config.passwd_path = parser.value()?.into(),
            Long("group") => config.group_path = parser.value()?.into(),
            Long("print-host-keys") => print_host_keys = true,
            Long("rsa-host-key") => config.host_keys.rsa = true,
            Long("comment") => config.host_keys.comment = Some(parser.value()?.string()?),
            Long("instance-id") => config.host_keys.instance_id = Some(parser.value()?.string()?),
            Long("no-sftp") => sftp = false,
            Long("sftp-program") => sftp_program = Some(PathBuf::from(parser.value()?)),
            Long("login-grace") => config.limits.login_grace = secs(&parser.value()?.string()?)?,
            Long("idle-timeout") => {
                config.limits.idle_timeout = Some(secs(&parser.value()?.string()?)?)
            }
            Long("max-connections") => config.limits.max_connections = parser.value()?.parse()?,
            Long("max-startups") => config.limits.max_startups = parser.value()?.parse()?,
            Long("max-startups-per-source") => {
                config.limits.max_startups_per_source = parser.value()?.parse()?
            }
            Long("max-sessions") => {
                config.limits.max_sessions_per_connection = parser.value()?.parse()?
            }
            Long("max-auth-tries") => config.limits.max_auth_attempts = parser.value()?.parse()?,
            Long("rate-burst") => config.limits.auth_rate.burst = parser.value()?.parse()?,
            Long("rate-per-minute") => {
                config.limits.auth_rate.per_minute = parser.value()?.parse()?
            }
            Long("log") => log = Some(parser.value()?.string()?),
            Short('h') | Long("help") => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let Some(dir) = host_key_dir else {
        bail!("--host-key-dir is required")
    };
    config.host_key_dir = dir;
    config.listen = if listen.is_empty() {
        vec!["127.0.0.1:2222".parse()?]
    } else {
        listen
    };
    if !keys.is_empty() {
        config.authorized_keys_files = keys;
    }
    if let Some(program) = sftp_program {
        config.sftp = SftpSubsystem::Command {
            program,
            args: Vec::new(),
            argv0: None,
        };
    } else if sftp {
        let exe = std::env::current_exe().context("cannot find this executable")?;
        config.sftp = SftpSubsystem::Command {
            program: exe,
            args: vec!["--sftp-server".into()],
            argv0: None,
        };
    }
    Ok(Some(Args {
        config,
        print_host_keys,
        log,
    }))
}

fn run(args: Args) -> anyhow::Result<()> {
    let filter = args
        .log
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let server = ssh_server::Server::bind(args.config).context("cannot start the SSH server")?;
    let mut out = std::io::stdout().lock();
    if args.print_host_keys {
        write!(
            out,
            "{}",
            ssh_server::render_console_blocks(server.host_keys())
        )?;
    }
    for addr in server.local_addrs() {
        writeln!(out, "listening on {addr}")?;
    }
    out.flush()?;
    drop(out);
    server.run().context("SSH server failed")?;
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            // The SFTP helper: stdin/stdout are the channel; stay quiet on stderr unless broken.
            if let Err(e) = ssh_server::sftp::serve_stdio() {
                eprintln!(
                    "sftp-server: {e}: {}",
                    std::error::Error::source(&e)
                        .map(|s| s.to_string())
                        .unwrap_or_default()
                );
                std::process::exit(1);
            }
            return;
        }
        Err(e) => {
            eprintln!("virga-sshd-dev: {e:#}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args) {
        eprintln!("virga-sshd-dev: {e:#}");
        std::process::exit(1);
    }
}
