//! Interface addresses: list, add/replace (with lifetimes), delete.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use serde::Serialize;

use crate::error::NetConfigError;
use crate::netlink::{
    MsgBuilder, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, RTM_DELADDR, RTM_GETADDR,
    RTM_NEWADDR, Rtnl, attr_u32, attrs,
};

pub(crate) const AF_INET: u8 = 2;
pub(crate) const AF_INET6: u8 = 10;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const IFA_CACHEINFO: u16 = 6;
const IFA_FLAGS: u16 = 8;

/// `IFA_F_TENTATIVE`: IPv6 duplicate address detection still running.
pub const IFA_F_TENTATIVE: u32 = 0x40;
/// `IFA_F_PERMANENT`: no lifetime (static).
pub const IFA_F_PERMANENT: u32 = 0x80;

/// `RT_SCOPE_UNIVERSE`.
pub const SCOPE_UNIVERSE: u8 = 0;
/// `RT_SCOPE_LINK`.
pub const SCOPE_LINK: u8 = 253;
/// `RT_SCOPE_HOST`.
pub const SCOPE_HOST: u8 = 254;

const INFINITY_LIFE: u32 = u32::MAX;

/// Address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum IpFamily {
    /// IPv4.
    #[serde(rename = "inet")]
    V4,
    /// IPv6.
    #[serde(rename = "inet6")]
    V6,
}

impl IpFamily {
    pub(crate) fn af(self) -> u8 {
        match self {
            IpFamily::V4 => AF_INET,
            IpFamily::V6 => AF_INET6,
        }
    }

    pub(crate) fn of(a: &IpAddr) -> Self {
        if a.is_ipv4() {
            IpFamily::V4
        } else {
            IpFamily::V6
        }
    }
}

/// An address configured on an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address {
    /// Interface index.
    pub index: u32,
    /// The address.
    pub address: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// `RT_SCOPE_*`: 0 global, 253 link, 254 host.
    pub scope: u8,
    /// `IFA_F_*` flags.
    pub flags: u32,
    /// Seconds of validity left; `None` = forever.
    pub valid_lft: Option<u32>,
    /// Seconds of preference left; `None` = forever.
    pub preferred_lft: Option<u32>,
}

impl Address {
    /// The family of the address.
    pub fn family(&self) -> IpFamily {
        IpFamily::of(&self.address)
    }

    /// IPv6 duplicate address detection has not finished.
    pub fn is_tentative(&self) -> bool {
        self.flags & IFA_F_TENTATIVE != 0
    }

    /// Has a finite lifetime (DHCP, SLAAC), as opposed to static.
    pub fn is_dynamic(&self) -> bool {
        self.flags & IFA_F_PERMANENT == 0
    }

    /// Scope name as `ip addr` prints it.
    pub fn scope_name(&self) -> &'static str {
        scope_name(self.scope)
    }
}

/// `ip` style scope name.
pub(crate) fn scope_name(scope: u8) -> &'static str {
    match scope {
        SCOPE_UNIVERSE => "global",
        200 => "site",
        SCOPE_LINK => "link",
        SCOPE_HOST => "host",
        255 => "nowhere",
        _ => "other",
    }
}

pub(crate) fn ip_from(family: u8, data: &[u8]) -> Option<IpAddr> {
    match family {
        AF_INET => <[u8; 4]>::try_from(data)
            .ok()
            .map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        AF_INET6 => <[u8; 16]>::try_from(data)
            .ok()
            .map(|o| IpAddr::V6(Ipv6Addr::from(o))),
        _ => None,
    }
}

pub(crate) fn ip_bytes(a: &IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

/// Parses an `RTM_NEWADDR` payload.
pub(crate) fn parse_address(p: &[u8]) -> Option<Address> {
    let h = p.get(..8)?;
    let (family, prefix_len, flags8, scope) = (h[0], h[1], h[2], h[3]);
    let index = u32::from_ne_bytes([h[4], h[5], h[6], h[7]]);
    let (mut local, mut address, mut flags) = (None, None, u32::from(flags8));
    let (mut valid, mut preferred) = (None, None);
    for (ty, data) in attrs(&p[8..]) {
        match ty {
            IFA_LOCAL => local = ip_from(family, data),
            IFA_ADDRESS => address = ip_from(family, data),
            IFA_FLAGS => flags = attr_u32(data).unwrap_or(flags),
            IFA_CACHEINFO if data.len() >= 8 => {
                let pref = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]);
                let val = u32::from_ne_bytes([data[4], data[5], data[6], data[7]]);
                preferred = (pref != INFINITY_LIFE).then_some(pref);
                valid = (val != INFINITY_LIFE).then_some(val);
            }
            _ => {}
        }
    }
    // IPv4: IFA_LOCAL is the interface's address (IFA_ADDRESS is the peer on point-to-point).
    let address = local.or(address)?;
    Some(Address {
        index,
        address,
        prefix_len,
        scope,
        flags,
        valid_lft: valid,
        preferred_lft: preferred,
    })
}

fn ifaddrmsg(family: u8, prefix_len: u8, scope: u8, index: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = family;
    b[1] = prefix_len;
    b[3] = scope;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b
}

/// The IPv4 broadcast address of `addr/prefix_len` (none for /31 and /32).
pub(crate) fn broadcast_of(addr: Ipv4Addr, prefix_len: u8) -> Option<Ipv4Addr> {
    if prefix_len >= 31 {
        return None;
    }
    let host = u32::MAX >> prefix_len;
    Some(Ipv4Addr::from(u32::from(addr) | host))
}

fn lifetime_secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs())
        .unwrap_or(INFINITY_LIFE - 1)
        .min(INFINITY_LIFE - 1)
}

impl Rtnl {
    /// Addresses of one family, or of both with `None`.
    pub fn addresses(&mut self, family: Option<IpFamily>) -> Result<Vec<Address>, NetConfigError> {
        let af = family.map_or(0, IpFamily::af);
        let msg = MsgBuilder::new(RTM_GETADDR, NLM_F_DUMP).header(&ifaddrmsg(af, 0, 0, 0));
        let payloads = self.dump(msg, RTM_NEWADDR, "list addresses")?;
        Ok(payloads.iter().filter_map(|p| parse_address(p)).collect())
    }

    /// Adds or replaces `addr/prefix_len` on `index`.
    ///
    /// `lifetime` = `None` makes the address permanent; otherwise the kernel removes it when the
    /// lifetime runs out (a DHCP lease whose client died does not linger). For IPv4 the
    /// broadcast address is set (from `broadcast` or computed).
    pub fn add_address(
        &mut self,
        index: u32,
        addr: IpAddr,
        prefix_len: u8,
        lifetime: Option<Duration>,
        broadcast: Option<Ipv4Addr>,
    ) -> Result<(), NetConfigError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(NetConfigError::Invalid(format!(
                "prefix length /{prefix_len} for {addr}"
            )));
        }
        let family = IpFamily::of(&addr).af();
        let mut msg = MsgBuilder::new(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE)
            .header(&ifaddrmsg(family, prefix_len, SCOPE_UNIVERSE, index));
        let bytes = ip_bytes(&addr);
        msg.attr(IFA_LOCAL, &bytes);
        msg.attr(IFA_ADDRESS, &bytes);
        if let IpAddr::V4(v4) = addr
            && let Some(b) = broadcast.or_else(|| broadcast_of(v4, prefix_len))
        {
            msg.attr(IFA_BROADCAST, &b.octets());
        }
        if let Some(life) = lifetime {
            let secs = lifetime_secs(life);
            let mut ci = [0u8; 16];
            ci[0..4].copy_from_slice(&secs.to_ne_bytes()); // preferred
            ci[4..8].copy_from_slice(&secs.to_ne_bytes()); // valid
            msg.attr(IFA_CACHEINFO, &ci);
        }
        self.request(msg, "add address")
    }

    /// Removes `addr/prefix_len` from `index`.
    pub fn del_address(
        &mut self,
        index: u32,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<(), NetConfigError> {
        let family = IpFamily::of(&addr).af();
        let mut msg = MsgBuilder::new(RTM_DELADDR, NLM_F_ACK)
            .header(&ifaddrmsg(family, prefix_len, 0, index));
        let bytes = ip_bytes(&addr);
        msg.attr(IFA_LOCAL, &bytes);
        msg.attr(IFA_ADDRESS, &bytes);
        self.request(msg, "delete address")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast() {
        let a = Ipv4Addr::new(10, 0, 2, 15);
        assert_eq!(broadcast_of(a, 24), Some(Ipv4Addr::new(10, 0, 2, 255)));
        assert_eq!(broadcast_of(a, 0), Some(Ipv4Addr::BROADCAST));
        assert_eq!(broadcast_of(a, 31), None);
    }

    #[test]
    fn parse_ipv4_address_with_lifetime() {
        let mut b = MsgBuilder::new(RTM_NEWADDR, 0).header(&ifaddrmsg(AF_INET, 24, 0, 3));
        b.attr(IFA_ADDRESS, &[10, 0, 0, 9]);
        b.attr(IFA_LOCAL, &[10, 0, 0, 5]);
        let mut ci = [0u8; 16];
        ci[0..4].copy_from_slice(&100u32.to_ne_bytes());
        ci[4..8].copy_from_slice(&INFINITY_LIFE.to_ne_bytes());
        b.attr(IFA_CACHEINFO, &ci);
        let bytes = b.finish(1);
        let a = parse_address(&bytes[16..]).unwrap();
        assert_eq!(
            a.address,
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
            "IFA_LOCAL wins"
        );
        assert_eq!(
            (a.index, a.prefix_len, a.preferred_lft, a.valid_lft),
            (3, 24, Some(100), None)
        );
        assert_eq!(a.scope_name(), "global");
        // Wrong-length address: no address, no entry.
        let mut b = MsgBuilder::new(RTM_NEWADDR, 0).header(&ifaddrmsg(AF_INET6, 64, 0, 3));
        b.attr(IFA_ADDRESS, &[1, 2, 3]);
        let bytes = b.finish(1);
        assert_eq!(parse_address(&bytes[16..]), None);
    }
}
