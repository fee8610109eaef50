//! The unikernel command line: space-separated words, `key=value` pairs among them.

use core::net::Ipv4Addr;

use crate::netstack::IpMode;

/// The value of the last `key=value` word.
pub fn value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .next_back()
}

/// Parses `A.B.C.D/PREFIX`.
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix) = s.split_once('/')?;
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= 32).then_some((addr.parse().ok()?, prefix))
}

/// How to configure IPv4: `ip=ADDR/PREFIX` (and `gw=ADDR`) for a static address, DHCP otherwise.
pub fn ip_mode(cmdline: &str) -> Result<IpMode, crate::UnikernelError> {
    let bad = crate::UnikernelError::InvalidArgument;
    match value(cmdline, "ip") {
        None | Some("dhcp") => Ok(IpMode::Dhcp),
        Some(ip) => {
            let (addr, prefix) = parse_cidr(ip).ok_or(bad("ip= is not ADDR/PREFIX"))?;
            let gw = match value(cmdline, "gw") {
                Some(g) => Some(g.parse().map_err(|_| bad("gw= is not an IPv4 address"))?),
                None => None,
            };
            Ok(IpMode::Static(addr, prefix, gw))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_modes() {
        let c = "quiet ip=10.0.0.2/24 gw=10.0.0.1 port=8080 port=9090";
        assert_eq!(value(c, "port"), Some("9090"));
        assert_eq!(value(c, "missing"), None);
        assert_eq!(
            ip_mode(c),
            Ok(IpMode::Static(
                Ipv4Addr::new(10, 0, 0, 2),
                24,
                Some(Ipv4Addr::new(10, 0, 0, 1))
            ))
        );
        assert_eq!(ip_mode(""), Ok(IpMode::Dhcp));
        assert_eq!(ip_mode("ip=dhcp"), Ok(IpMode::Dhcp));
        assert!(ip_mode("ip=10.0.0.2").is_err());
        assert!(ip_mode("ip=10.0.0.2/33").is_err());
        assert!(ip_mode("ip=10.0.0.2/8 gw=x").is_err());
        assert_eq!(parse_cidr("300.1.1.1/8"), None);
    }
}
