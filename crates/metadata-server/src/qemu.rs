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

use std::path::Path;

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
/// e.g. from [`server_argv`]. Append `hostfwd=…` options as usual.
pub fn netdev_options(argv: &[String]) -> String {
    let cmd: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
    format!(
        "net={NET},host={HOST},dns={DNS},dhcpstart={DHCP_START},guestfwd=tcp:{METADATA_ADDR}:{METADATA_PORT}-cmd:{}",
        qemu_opt_escape(&cmd.join(" "))
    )
}

/// The command QEMU runs per connection:
/// `<virga> metadata-server --stdio --cloud <cloud> --dir <dir> [--token-secret-file F]
/// [--access-log F] [--log-file F] [extra…]`. All paths should be absolute (QEMU runs it in
/// its own working directory).
pub fn server_argv(
    virga: &Path,
    cloud: crate::Cloud,
    dir: &Path,
    token_secret_file: Option<&Path>,
    access_log: Option<&Path>,
    log_file: Option<&Path>,
    extra: &[String],
) -> Vec<String> {
    let mut argv = vec![
        virga.display().to_string(),
        "metadata-server".into(),
        "--stdio".into(),
        "--cloud".into(),
        cloud.to_string(),
        "--dir".into(),
        dir.display().to_string(),
    ];
    for (flag, path) in [
        ("--token-secret-file", token_secret_file),
        ("--access-log", access_log),
        ("--log-file", log_file),
    ] {
        if let Some(p) = path {
            argv.push(flag.into());
            argv.push(p.display().to_string());
        }
    }
    argv.extend(extra.iter().cloned());
    argv
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
        let argv = server_argv(
            Path::new("/opt/virga"),
            crate::Cloud::Ec2,
            Path::new("/run/vm 1/md"),
            Some(Path::new("/run/vm/imds.key")),
            None,
            None,
            &["--fault".into(), "500".into()],
        );
        assert_eq!(
            netdev_options(&argv),
            "net=169.254.169.0/24,host=169.254.169.1,dns=169.254.169.3,dhcpstart=169.254.169.15,\
             guestfwd=tcp:169.254.169.254:80-cmd:/opt/virga metadata-server --stdio --cloud ec2 \
             --dir '/run/vm 1/md' --token-secret-file /run/vm/imds.key --fault 500"
        );
    }
}
