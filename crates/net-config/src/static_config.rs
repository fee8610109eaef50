//! Static network configuration: the input the guest maps network-config v1/v2 and
//! network_data.json onto, and its application through netlink.

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Serialize;

use crate::addr::broadcast_of;
use crate::error::NetConfigError;
use crate::link::{BondMode, Link};
use crate::netlink::Rtnl;
use crate::resolv::{self, ResolvConf};
use crate::route::{RTPROT_STATIC, RouteSpec};
use crate::status::format_mac;

/// How a configured interface is found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceMatch {
    /// By kernel name (required for VLANs and bonds: the name to create).
    Name(String),
    /// By MAC address (the usual way for cloud NICs).
    #[serde(serialize_with = "ser_mac")]
    Mac([u8; 6]),
}

fn ser_mac<S: serde::Serializer>(m: &[u8; 6], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_mac(m))
}

impl std::fmt::Display for InterfaceMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InterfaceMatch::Name(n) => write!(f, "name {n}"),
            InterfaceMatch::Mac(m) => write!(f, "MAC {}", format_mac(m)),
        }
    }
}

/// An address with its prefix length, e.g. `10.0.0.5/24` or `2001:db8::5/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IpPrefix {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
}

impl FromStr for IpPrefix {
    type Err = NetConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NetConfigError::Invalid(format!("`{s}` is not address/prefix"));
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let prefix_len: u8 = p.parse().map_err(|_| bad())?;
        if prefix_len > if addr.is_ipv4() { 32 } else { 128 } {
            return Err(bad());
        }
        Ok(IpPrefix { addr, prefix_len })
    }
}

/// A static route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaticRoute {
    /// Destination (`0.0.0.0/0` or `::/0` for a default route).
    pub destination: IpPrefix,
    /// Next hop; `None` for on-link.
    pub gateway: Option<IpAddr>,
    /// Metric; `None` for the kernel default.
    pub metric: Option<u32>,
}

/// What kind of interface to configure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum InterfaceKind {
    /// An existing NIC.
    Physical,
    /// An 802.1Q VLAN to create on `parent`.
    Vlan {
        /// The underlying interface.
        parent: InterfaceMatch,
        /// VLAN id, 1..=4094.
        id: u16,
    },
    /// A bond to create over `members`.
    Bond {
        /// Member interfaces (enslaved, brought up).
        members: Vec<InterfaceMatch>,
        /// Bonding mode.
        mode: BondMode,
        /// Link monitoring interval in ms.
        miimon_ms: Option<u32>,
    },
}

/// One interface's static configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaticInterface {
    /// Which interface (for VLAN and bond: `Name` of the one to create).
    pub id: InterfaceMatch,
    /// Physical, VLAN or bond.
    pub kind: InterfaceKind,
    /// MTU to set.
    pub mtu: Option<u32>,
    /// Addresses to add (permanent).
    pub addresses: Vec<IpPrefix>,
    /// Routes via this interface.
    pub routes: Vec<StaticRoute>,
    /// Run DHCPv4 on it (reported back in [`StaticOutcome::dhcp4`]; `apply_static` does not
    /// run DHCP itself).
    pub dhcp4: bool,
    /// Turn IPv6 router advertisements on or off; `None` leaves the kernel default.
    pub accept_ra: Option<bool>,
}

impl StaticInterface {
    /// A physical interface with nothing configured yet.
    pub fn physical(id: InterfaceMatch) -> Self {
        StaticInterface {
            id,
            kind: InterfaceKind::Physical,
            mtu: None,
            addresses: Vec::new(),
            routes: Vec::new(),
            dhcp4: false,
            accept_ra: None,
        }
    }
}

/// The static network configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StaticConfig {
    /// Interfaces, applied in order (bonds and VLANs after the links they use).
    pub interfaces: Vec<StaticInterface>,
    /// Name servers.
    pub nameservers: Vec<IpAddr>,
    /// Search domains.
    pub search: Vec<String>,
    /// Where to write DNS; `None` leaves resolv.conf alone.
    pub resolv_conf: Option<PathBuf>,
}

/// What [`apply_static`] did.
#[derive(Debug, Default)]
pub struct StaticOutcome {
    /// Interfaces configured without error.
    pub configured: Vec<String>,
    /// Interfaces that asked for DHCPv4 (the caller runs it).
    pub dhcp4: Vec<String>,
    /// Per-interface failures; the other interfaces were still configured.
    pub errors: Vec<(String, NetConfigError)>,
}

fn find<'a>(links: &'a [Link], m: &InterfaceMatch) -> Option<&'a Link> {
    links.iter().find(|l| match m {
        InterfaceMatch::Name(n) => &l.name == n,
        InterfaceMatch::Mac(mac) => l.mac == Some(*mac) && l.master.is_none(),
    })
}

fn resolve(rtnl: &mut Rtnl, m: &InterfaceMatch) -> Result<Link, NetConfigError> {
    let links = rtnl.links()?;
    find(&links, m)
        .cloned()
        .ok_or_else(|| NetConfigError::NoSuchInterface(m.to_string()))
}

/// Makes sure the interface exists (creating VLANs and bonds), returns it.
fn ensure_link(rtnl: &mut Rtnl, i: &StaticInterface) -> Result<Link, NetConfigError> {
    let name = match (&i.kind, &i.id) {
        (InterfaceKind::Physical, _) => return resolve(rtnl, &i.id),
        (_, InterfaceMatch::Name(n)) => n.clone(),
        (_, InterfaceMatch::Mac(_)) => {
            return Err(NetConfigError::Invalid(
                "VLANs and bonds are identified by the name to create".into(),
            ));
        }
    };
    if let Some(l) = rtnl.link_by_name(&name)? {
        return Ok(l);
    }
    match &i.kind {
        InterfaceKind::Physical => unreachable!("handled above"),
        InterfaceKind::Vlan { parent, id } => {
            let p = resolve(rtnl, parent)?;
            rtnl.set_link_up(p.index, true)?;
            rtnl.create_vlan(&name, p.index, *id)?;
        }
        InterfaceKind::Bond {
            members,
            mode,
            miimon_ms,
        } => {
            rtnl.create_bond(&name, *mode, *miimon_ms)?;
            let bond = resolve(rtnl, &InterfaceMatch::Name(name.clone()))?;
            for m in members {
                let l = resolve(rtnl, m)?;
                // A member must be down to be enslaved.
                rtnl.set_link_up(l.index, false)?;
                rtnl.set_master(l.index, Some(bond.index))?;
                rtnl.set_link_up(l.index, true)?;
            }
        }
    }
    resolve(rtnl, &InterfaceMatch::Name(name))
}

fn apply_one(rtnl: &mut Rtnl, i: &StaticInterface) -> Result<Link, NetConfigError> {
    let link = ensure_link(rtnl, i)?;
    if let Some(ra) = i.accept_ra {
        crate::ipv6::set_accept_ra(&link.name, ra)?;
    }
    if let Some(mtu) = i.mtu
        && mtu != link.mtu
    {
        rtnl.set_mtu(link.index, mtu)?;
    }
    if !link.is_up() {
        rtnl.set_link_up(link.index, true)?;
    }
    for a in &i.addresses {
        let bcast = match a.addr {
            IpAddr::V4(v4) => broadcast_of(v4, a.prefix_len),
            IpAddr::V6(_) => None,
        };
        rtnl.add_address(link.index, a.addr, a.prefix_len, None, bcast)?;
    }
    for r in &i.routes {
        let family_src = i
            .addresses
            .iter()
            .find(|a| a.addr.is_ipv4() == r.destination.addr.is_ipv4());
        // Off-link IPv4 gateways get an on-link host route first (as for DHCP).
        if let Some(IpAddr::V4(g)) = r.gateway {
            let reachable = i.addresses.iter().any(|a| match a.addr {
                IpAddr::V4(v4) => {
                    let mask = u32::MAX
                        .checked_shl(32 - u32::from(a.prefix_len))
                        .unwrap_or(0);
                    u32::from(g) & mask == u32::from(v4) & mask
                }
                IpAddr::V6(_) => false,
            });
            if !reachable {
                rtnl.add_route(&RouteSpec {
                    destination: IpAddr::V4(g),
                    prefix_len: 32,
                    gateway: None,
                    oif: link.index,
                    prefsrc: family_src.map(|a| a.addr),
                    metric: r.metric,
                    protocol: RTPROT_STATIC,
                })?;
            }
        }
        rtnl.add_route(&RouteSpec {
            destination: r.destination.addr,
            prefix_len: r.destination.prefix_len,
            gateway: r.gateway,
            oif: link.index,
            prefsrc: None,
            metric: r.metric,
            protocol: RTPROT_STATIC,
        })?;
    }
    Ok(link)
}

/// Applies a static configuration, best effort: an interface that fails is reported in
/// [`StaticOutcome::errors`] and the others are still configured. Only failing to talk to the
/// kernel at all, or to write resolv.conf, is an `Err`.
pub fn apply_static(cfg: &StaticConfig) -> Result<StaticOutcome, NetConfigError> {
    let mut rtnl = Rtnl::open()?;
    let mut out = StaticOutcome::default();
    // Physical links first, then bonds, then VLANs (which may sit on bonds).
    let rank = |k: &InterfaceKind| match k {
        InterfaceKind::Physical => 0,
        InterfaceKind::Bond { .. } => 1,
        InterfaceKind::Vlan { .. } => 2,
    };
    let mut order: Vec<&StaticInterface> = cfg.interfaces.iter().collect();
    order.sort_by_key(|i| rank(&i.kind));
    for i in order {
        match apply_one(&mut rtnl, i) {
            Ok(link) => {
                tracing::info!(iface = %link.name, "static network configuration applied");
                if i.dhcp4 {
                    out.dhcp4.push(link.name.clone());
                }
                out.configured.push(link.name);
            }
            Err(e) => {
                tracing::warn!(iface = %i.id, error = %e, "static network configuration failed");
                out.errors.push((i.id.to_string(), e));
            }
        }
    }
    if let Some(path) = &cfg.resolv_conf {
        let rc = ResolvConf {
            nameservers: cfg.nameservers.clone(),
            search: cfg.search.clone(),
        };
        if !rc.is_empty() {
            resolv::write_resolv_conf(path, &rc)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let p: IpPrefix = "10.0.0.5/24".parse().unwrap();
        assert_eq!((p.addr, p.prefix_len), ("10.0.0.5".parse().unwrap(), 24));
        assert!("2001:db8::1/64".parse::<IpPrefix>().is_ok());
        assert!("10.0.0.5/33".parse::<IpPrefix>().is_err());
        assert!("10.0.0.5".parse::<IpPrefix>().is_err());
        assert!("x/1".parse::<IpPrefix>().is_err());
    }
}
