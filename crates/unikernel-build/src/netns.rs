//! A throw-away network namespace with a TAP interface, for running `hvt` (and `microvm` with
//! TAP) network tests and benchmarks without touching the host's network: the guest and the
//! client both live inside the namespace. Needs root and `ip` (iproute2).

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::process::Command;

use crate::UnikernelBuildError;

/// A namespace `name` holding `tap` with `host_ip/24`; the guest should use `guest_ip`.
#[derive(Debug)]
pub struct TapNamespace {
    /// Namespace name.
    pub name: String,
    /// TAP interface inside it.
    pub tap: String,
    /// Address of the TAP on the host side.
    pub host_ip: Ipv4Addr,
    /// Address for the guest.
    pub guest_ip: Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<(), UnikernelBuildError> {
    let out =
        Command::new("ip")
            .args(args)
            .output()
            .map_err(|source| UnikernelBuildError::Spawn {
                tool: "ip".into(),
                source,
            })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(UnikernelBuildError::Usage(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl TapNamespace {
    /// Creates the namespace (unique per process and `tag`) with the TAP up. Subnet
    /// 10.213.`subnet`.0/24 exists only inside the namespace.
    pub fn create(tag: &str, subnet: u8) -> Result<Self, UnikernelBuildError> {
        let name = format!("virga-uk-{}-{tag}", std::process::id());
        let tap = "uktap0".to_owned();
        let ns = Self {
            name,
            tap,
            host_ip: Ipv4Addr::new(10, 213, subnet, 1),
            guest_ip: Ipv4Addr::new(10, 213, subnet, 2),
        };
        ip(&["netns", "add", &ns.name])?;
        let n = ns.name.as_str();
        let cidr = format!("{}/24", ns.host_ip);
        let setup = ip(&["-n", n, "link", "set", "lo", "up"])
            .and_then(|()| ip(&["-n", n, "tuntap", "add", "dev", &ns.tap, "mode", "tap"]))
            .and_then(|()| ip(&["-n", n, "addr", "add", &cidr, "dev", &ns.tap]))
            .and_then(|()| ip(&["-n", n, "link", "set", &ns.tap, "up"]));
        // On error `ns` is dropped, which deletes the namespace.
        setup.map(|()| ns)
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn exec_prefix(&self) -> Vec<OsString> {
        ["ip", "netns", "exec", &self.name]
            .iter()
            .map(OsString::from)
            .collect()
    }
}

impl Drop for TapNamespace {
    fn drop(&mut self) {
        let _ = ip(&["netns", "delete", &self.name]);
    }
}
