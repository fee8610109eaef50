//! `virga ssh`: OpenSSH into a guest started with `virga run --ssh-port`.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::Args;

/// Arguments of `virga ssh`.
#[derive(Debug, Args)]
pub struct SshArgs {
    /// Output directory the guest was started from (its `.virga-run.json` has the port).
    #[arg(long, value_name = "DIR", default_value = "out")]
    pub out: PathBuf,
    /// Host port forwarded to the guest's SSH (default: from the output directory).
    #[arg(long)]
    pub port: Option<u16>,
    /// User to log in as.
    #[arg(long, short, default_value = "root")]
    pub user: String,
    /// Command to run instead of a login shell.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Runs `virga ssh` (replaces this process with `ssh`).
pub fn run(args: SshArgs) -> anyhow::Result<ExitCode> {
    let port = match args.port {
        Some(p) => p,
        None => {
            let path = args.out.join(crate::run::RUN_STATE);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "{}: no running guest with --ssh-port; pass --port",
                    path.display()
                )
            })?;
            let v: serde_json::Value = serde_json::from_str(&text)?;
            v["ssh_port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .context("no ssh_port in run state")?
        }
    };
    let key = crate::keys::virga_key()?;
    let mut cmd = Command::new("ssh");
    cmd.arg("-i")
        .arg(&key)
        .args(["-p", &port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes"])
        .arg(format!("{}@127.0.0.1", args.user))
        .args(&args.command);
    let err = cmd.exec();
    if err.kind() == std::io::ErrorKind::NotFound {
        bail!("ssh not found; install it with `sudo apt-get install openssh-client`");
    }
    Err(err).context("cannot run ssh")
}
