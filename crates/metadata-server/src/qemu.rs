//! How a VM reaches this server: QEMU user networking (slirp) moved to 169.254.169.0/24 so
//! that 169.254.169.254 lies inside the virtual network, and a `guestfwd` rule that runs
//! `virga metadata-server --stdio …` for every guest connection to 169.254.169.254:80.
//!
//! Why not simply let the guest connect to 169.254.169.254: slirp turns a guest connection to
//! an outside address into a host connection to that address, and a host in a cloud has its
//! *own* metadata service there; virga must never send guest (or test) traffic to it. QEMU
//! 7.2 refuses a `guestfwd` address outside the slirp network ("Conflicting/invalid
//! host:port"), and a chardev-backed `guestfwd` is a single persistent connection, useless
//! for HTTP; `cmd:` gets one process per connection, with the connection on stdin and
//! stdout — and on stderr too (libslirp passes the socket as fds 0, 1 and 2), which is why
//! `--stdio` sends logs to `--log-file` or /dev/null.
//!
//! QEMU starts one process per connection without any limit, so the command carries
//! `--slot-dir`: the processes of one VM share its connection slots ([`crate::slots`]) and at
//! most `--max-connections` of them serve at once; each also ends at its connection's time
//! limit (`--max-connection-secs`).

use std::path::PathBuf;

/// The slirp network used when the metadata server is attached.
pub const NET: &str = "169.254.169.0/24";
/// The slirp gateway (the host side; also the guest's default route).
pub const HOST: &str = "169.254.169.1";
/// The slirp DNS forwarder.
pub const DNS: &str = "169.254.169.3";
/// First address handed out by slirp's DHCP server (the guest gets this one).
pub const DHCP_START: &str = "169.254.169.15";
/// The metadata address the guest connects to.
pub const METADATA_ADDR: &str = "169.254.169.254";
/// The metadata port.
pub const METADATA_PORT: u16 = 80;

/// Quotes one argument for `g_shell_parse_argv`, which libslirp uses to split the `cmd:`
/// string: plain words stay as they are, anything else is single-quoted.
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Escapes a value for QEMU's `-netdev` option syntax (a comma is written `,,`).
pub fn qemu_opt_escape(value: &str) -> String {
    value.replace(',', ",,")
}

/// The slirp options (without `user,id=…`) that attach the metadata server: the moved
/// network and `guestfwd=tcp:169.254.169.254:80-cmd:<argv>`. `argv` is the server command,
/// e.g. from [`StdioCommand::argv`]. Append `hostfwd=…` options as usual.
pub fn netdev_options(argv: &[String]) -> String {
    let cmd: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
    format!(
        "net={NET},host={HOST},dns={DNS},dhcpstart={DHCP_START},guestfwd=tcp:{METADATA_ADDR}:{METADATA_PORT}-cmd:{}",
        qemu_opt_escape(&cmd.join(" "))
    )
}

/// The command QEMU runs per connection. All paths should be absolute (QEMU runs it in its
/// own working directory).
#[derive(Debug, Clone)]
pub struct StdioCommand {
    /// The `virga` executable.
    pub virga: PathBuf,
    /// The cloud to emulate.
    pub cloud: crate::Cloud,
    /// The metadata directory.
    pub dir: PathBuf,
    /// Directory of the connection slots shared by this VM's server processes (one per VM).
    pub slot_dir: PathBuf,
    /// The IMDSv2 token secret shared by this VM's server processes.
    pub token_secret_file: Option<PathBuf>,
    /// Access log shared by this VM's server processes.
    pub access_log: Option<PathBuf>,
    /// Where the processes' logs go (their stderr is the guest's socket).
    pub log_file: Option<PathBuf>,
    /// More server options (e.g. `--fault 500`, `--max-connections 4`), appended as they are.
    pub extra: Vec<String>,
}

impl StdioCommand {
    /// A command for `cloud` over `dir` with the slots in `slot_dir`, nothing optional set.
    pub fn new(
        virga: impl Into<PathBuf>,
        cloud: crate::Cloud,
        dir: impl Into<PathBuf>,
        slot_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            virga: virga.into(),
            cloud,
            dir: dir.into(),
            slot_dir: slot_dir.into(),
            token_secret_file: None,
            access_log: None,
            log_file: None,
            extra: Vec::new(),
        }
    }

    /// `<virga> metadata-server --stdio --cloud <cloud> --dir <dir> --slot-dir <slots>
    /// [--token-secret-file F] [--access-log F] [--log-file F] [extra…]`.
    pub fn argv(&self) -> Vec<String> {
        let mut argv = vec![
            self.virga.display().to_string(),
            "metadata-server".into(),
            "--stdio".into(),
            "--cloud".into(),
            self.cloud.to_string(),
            "--dir".into(),
            self.dir.display().to_string(),
            "--slot-dir".into(),
            self.slot_dir.display().to_string(),
        ];
        for (flag, path) in [
            ("--token-secret-file", &self.token_secret_file),
            ("--access-log", &self.access_log),
            ("--log-file", &self.log_file),
        ] {
            if let Some(p) = path {
                argv.push(flag.into());
                argv.push(p.display().to_string());
            }
        }
        argv.extend(self.extra.iter().cloned());
        argv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/usr/bin/virga"), "/usr/bin/virga");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(qemu_opt_escape("a,b"), "a,,b");
    }

    #[test]
    fn netdev_string() {
        let mut cmd = StdioCommand::new(
            "/opt/virga",
            crate::Cloud::Ec2,
            "/run/vm 1/md",
            "/run/vm 1/slots",
        );
        cmd.token_secret_file = Some("/run/vm/imds.key".into());
        cmd.extra = vec!["--fault".into(), "500".into()];
        assert_eq!(
            netdev_options(&cmd.argv()),
            "net=169.254.169.0/24,host=169.254.169.1,dns=169.254.169.3,dhcpstart=169.254.169.15,\
             guestfwd=tcp:169.254.169.254:80-cmd:/opt/virga metadata-server --stdio --cloud ec2 \
             --dir '/run/vm 1/md' --slot-dir '/run/vm 1/slots' \
             --token-secret-file /run/vm/imds.key --fault 500"
        );
    }
}
