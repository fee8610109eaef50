//! IPv6: router advertisements and SLAAC are left to the kernel; this turns them on and reports
//! what they produced.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::addr::{Address, IpFamily, SCOPE_UNIVERSE};
use crate::error::NetConfigError;
use crate::netlink::Rtnl;

fn conf_path(iface: &str, key: &str) -> Result<PathBuf, NetConfigError> {
    if iface.is_empty() || iface.contains('/') || iface == "." || iface == ".." {
        return Err(NetConfigError::Invalid(format!("interface name {iface:?}")));
    }
    Ok(Path::new("/proc/sys/net/ipv6/conf").join(iface).join(key))
}

fn write_sysctl(path: &Path, value: &str) -> Result<(), NetConfigError> {
    fs::write(path, value).map_err(|source| NetConfigError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Whether the kernel has IPv6 (the guest kernel may be built without it).
pub fn ipv6_available() -> bool {
    Path::new("/proc/sys/net/ipv6").exists()
}

/// Turns router-advertisement processing and SLAAC on (or off) for `iface`.
///
/// Sets `disable_ipv6=0`, `autoconf=1` and `accept_ra=1` — or `accept_ra=2` when forwarding is
/// enabled on the interface, since the kernel ignores RAs on forwarding interfaces otherwise.
/// Best done before the link goes up, so the first router solicitation is answered.
pub fn set_accept_ra(iface: &str, enable: bool) -> Result<(), NetConfigError> {
    if !ipv6_available() {
        return Ok(());
    }
    if enable {
        write_sysctl(&conf_path(iface, "disable_ipv6")?, "0")?;
        write_sysctl(&conf_path(iface, "autoconf")?, "1")?;
        let forwarding =
            fs::read_to_string(conf_path(iface, "forwarding")?).is_ok_and(|s| s.trim() == "1");
        write_sysctl(
            &conf_path(iface, "accept_ra")?,
            if forwarding { "2" } else { "1" },
        )
    } else {
        write_sysctl(&conf_path(iface, "accept_ra")?, "0")?;
        write_sysctl(&conf_path(iface, "autoconf")?, "0")
    }
}

/// Global IPv6 addresses on `index` that the kernel configured by itself (SLAAC or temporary
/// addresses: they carry a lifetime) and that passed duplicate address detection.
pub fn slaac_addresses(rtnl: &mut Rtnl, index: u32) -> Result<Vec<Address>, NetConfigError> {
    Ok(rtnl
        .addresses(Some(IpFamily::V6))?
        .into_iter()
        .filter(|a| {
            a.index == index && a.scope == SCOPE_UNIVERSE && a.is_dynamic() && !a.is_tentative()
        })
        .collect())
}

/// Waits until every interface in `indexes` has a SLAAC address or `deadline` passes; returns
/// what each one has by then (interfaces without RAs simply report none).
pub fn wait_for_slaac(
    rtnl: &mut Rtnl,
    indexes: &[u32],
    deadline: Instant,
) -> Result<Vec<(u32, Vec<Address>)>, NetConfigError> {
    loop {
        let mut all = true;
        let mut out = Vec::new();
        for &i in indexes {
            let a = slaac_addresses(rtnl, i)?;
            all &= !a.is_empty();
            out.push((i, a));
        }
        if all || Instant::now() >= deadline {
            return Ok(out);
        }
        std::thread::sleep(
            Duration::from_millis(100).min(deadline.saturating_duration_since(Instant::now())),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_cannot_escape_the_sysctl_tree() {
        assert!(conf_path("../../kernel", "x").is_err());
        assert!(conf_path("..", "x").is_err());
        assert!(conf_path("", "x").is_err());
        assert_eq!(
            conf_path("eth0", "accept_ra").unwrap(),
            Path::new("/proc/sys/net/ipv6/conf/eth0/accept_ra")
        );
    }
}
