//! The smallest program that runs the SSH server, to measure what SSH adds to a static binary
//! (compare with `size_baseline`, which has the same log subscriber; see `docs/ssh.md`,
//! "Size"). It really serves: `size_sshd ADDR HOST_KEY_DIR` (keys from
//! `%h/.ssh/authorized_keys`, SFTP via `--sftp`).
fn main() {
    // With no subscriber at all, LTO would drop every log statement of the server.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let first = args.next().unwrap_or_else(|| "127.0.0.1:2222".into());
    if first == "--sftp" {
        if let Err(e) = ssh_server::sftp::serve_stdio() {
            eprintln!("sftp-server: {e}");
            std::process::exit(1);
        }
        return;
    }
    let addr = first.parse().unwrap_or_else(|e| {
        eprintln!("bad address {first}: {e}");
        std::process::exit(2)
    });
    let dir = args.next().unwrap_or_else(|| "/etc/ssh".into());
    let mut config = ssh_server::SshConfig::new(vec![addr], dir);
    if let Ok(exe) = std::env::current_exe() {
        config.sftp = ssh_server::SftpSubsystem::Command {
            program: exe,
            args: vec!["--sftp".into()],
            argv0: None,
        };
    }
    if let Err(e) = ssh_server::serve(config) {
        eprintln!("sshd: {e}");
        std::process::exit(1);
    }
}
