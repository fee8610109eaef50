//! Network status: a serialisable snapshot for the status JSON, and the CirrOS-style console
//! lines cloud test tools scrape.
//!
//! Console format (as CirrOS's `cirros-status` prints it):
//! ```text
//! if-info: <if>,<up|down>,<ipv4>,<masklen>,<v6-link-local/len>,<v6-global/len>
//! ip-route:<line as `ip route` prints it>
//! ip-route6:<line as `ip -6 route` prints it>
//! ```
//! CirrOS builds the route lines with `sed 's,^,ip-route:,'`, so there is no space after the
//! colon; we keep that byte for byte.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::{Serialize, Serializer};

use crate::addr::{Address, IpFamily, SCOPE_LINK, SCOPE_UNIVERSE, scope_name};
use crate::error::NetConfigError;
use crate::link::{Link, OperState};
use crate::netlink::Rtnl;
use crate::route::{RT_TABLE_MAIN, RTN_UNICAST, RTPROT_BOOT, RouteEntry};

pub(crate) fn ser_mac<S: Serializer>(mac: &Option<[u8; 6]>, s: S) -> Result<S::Ok, S::Error> {
    match mac {
        Some(m) => s.serialize_str(&format_mac(m)),
        None => s.serialize_none(),
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// One address in the status document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddressStatus {
    /// `inet` or `inet6`.
    pub family: IpFamily,
    /// The address.
    pub address: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// `global`, `link`, `host` …
    pub scope: &'static str,
    /// Has a lifetime (DHCP, SLAAC) rather than being static.
    pub dynamic: bool,
    /// IPv6 duplicate address detection still running.
    pub tentative: bool,
    /// Seconds of validity left; `None` = forever.
    pub valid_lft: Option<u32>,
}

/// One interface in the status document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterfaceStatus {
    /// Name.
    pub name: String,
    /// Index.
    pub index: u32,
    /// MAC address.
    pub mac: Option<String>,
    /// Administratively up.
    pub up: bool,
    /// Carrier present.
    pub carrier: bool,
    /// Operational state.
    pub operstate: OperState,
    /// MTU.
    pub mtu: u32,
    /// Kind of virtual link, if virtual.
    pub kind: Option<String>,
    /// Addresses, IPv4 first, in kernel order.
    pub addresses: Vec<AddressStatus>,
}

/// One route in the status document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteStatus {
    /// `inet` or `inet6`.
    pub family: IpFamily,
    /// `default` or `network/len` (or a host address).
    pub destination: String,
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// Output interface name.
    pub dev: Option<String>,
    /// `kernel`, `dhcp`, `static`, `ra` … or the number.
    pub protocol: String,
    /// Preferred source address.
    pub source: Option<IpAddr>,
    /// Metric.
    pub metric: Option<u32>,
    /// The route as `ip route` prints it.
    pub line: String,
}

/// A DHCP lease in the status document (filled by the DHCP service).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseStatus {
    /// Interface name.
    pub interface: String,
    /// Client state (`bound`, `renewing` …).
    pub state: &'static str,
    /// Leased address.
    pub address: Option<IpAddr>,
    /// Prefix length.
    pub prefix_len: Option<u8>,
    /// DHCP server.
    pub server: Option<IpAddr>,
    /// Routers (option 3).
    pub routers: Vec<IpAddr>,
    /// Routes installed for the lease (`dest/len via gw`).
    pub routes: Vec<String>,
    /// DNS servers.
    pub dns_servers: Vec<IpAddr>,
    /// Search domains.
    pub search: Vec<String>,
    /// Host name offered by the server.
    pub hostname: Option<String>,
    /// MTU offered by the server.
    pub mtu: Option<u16>,
    /// Lease length in seconds (`None` = infinite or no lease).
    pub lease_secs: Option<u64>,
    /// Seconds until T1.
    pub renew_in_secs: Option<u64>,
    /// Seconds until T2.
    pub rebind_in_secs: Option<u64>,
    /// Seconds until expiry.
    pub expires_in_secs: Option<u64>,
}

/// Everything the status document and the console report about the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetStatus {
    /// Interfaces by index.
    pub interfaces: Vec<InterfaceStatus>,
    /// Main-table IPv4 then IPv6 routes.
    pub routes: Vec<RouteStatus>,
    /// DHCP leases.
    pub leases: Vec<LeaseStatus>,
}

fn address_status(a: &Address) -> AddressStatus {
    AddressStatus {
        family: a.family(),
        address: a.address,
        prefix_len: a.prefix_len,
        scope: a.scope_name(),
        dynamic: a.is_dynamic(),
        tentative: a.is_tentative(),
        valid_lft: a.valid_lft,
    }
}

/// `RTPROT_*` name as iproute2 prints it.
pub fn protocol_name(p: u8) -> String {
    match p {
        0 => "unspec".into(),
        1 => "redirect".into(),
        2 => "kernel".into(),
        3 => "boot".into(),
        4 => "static".into(),
        8 => "gated".into(),
        9 => "ra".into(),
        10 => "mrt".into(),
        11 => "zebra".into(),
        12 => "bird".into(),
        16 => "dhcp".into(),
        42 => "babel".into(),
        other => other.to_string(),
    }
}

fn type_name(t: u8) -> &'static str {
    match t {
        2 => "local",
        3 => "broadcast",
        4 => "anycast",
        5 => "multicast",
        6 => "blackhole",
        7 => "unreachable",
        8 => "prohibit",
        9 => "throw",
        10 => "nat",
        _ => "",
    }
}

fn destination_text(r: &RouteEntry) -> String {
    let host_len = if r.family == IpFamily::V4 { 32 } else { 128 };
    match r.destination {
        None if r.prefix_len == 0 => "default".into(),
        None => format!(
            "{}/{}",
            if r.family == IpFamily::V4 {
                "0.0.0.0"
            } else {
                "::"
            },
            r.prefix_len
        ),
        Some(d) if r.prefix_len == host_len => d.to_string(),
        Some(d) => format!("{d}/{}", r.prefix_len),
    }
}

/// Formats a route the way `ip route` / `ip -6 route` print it (main table, no details).
pub fn route_line(r: &RouteEntry, ifname: &dyn Fn(u32) -> Option<String>) -> String {
    let mut parts: Vec<String> = Vec::new();
    if r.route_type != RTN_UNICAST {
        let t = type_name(r.route_type);
        if !t.is_empty() {
            parts.push(t.into());
        }
    }
    parts.push(destination_text(r));
    if let Some(gw) = r.gateway {
        parts.push(format!("via {gw}"));
    }
    if let Some(oif) = r.oif {
        parts.push(format!(
            "dev {}",
            ifname(oif).unwrap_or_else(|| format!("if{oif}"))
        ));
    }
    if r.table != RT_TABLE_MAIN {
        parts.push(format!("table {}", r.table));
    }
    if r.protocol != RTPROT_BOOT {
        parts.push(format!("proto {}", protocol_name(r.protocol)));
    }
    if r.scope != SCOPE_UNIVERSE {
        parts.push(format!("scope {}", scope_name(r.scope)));
    }
    if let Some(src) = r.prefsrc {
        parts.push(format!("src {src}"));
    }
    if let Some(m) = r.metric {
        parts.push(format!("metric {m}"));
    }
    for (bit, name) in [
        (1, "dead"),
        (4, "onlink"),
        (2, "pervasive"),
        (8, "offload"),
        (16, "linkdown"),
    ] {
        if r.flags & bit != 0 {
            parts.push(name.into());
        }
    }
    if let Some(e) = r.expires_secs {
        parts.push(format!("expires {e}sec"));
    }
    if let Some(mtu) = r.mtu {
        parts.push(format!("mtu {mtu}"));
    }
    if let Some(h) = r.hoplimit {
        parts.push(format!("hoplimit {h}"));
    }
    if let Some(p) = r.pref {
        parts.push(
            match p {
                0 => "pref medium",
                1 => "pref high",
                3 => "pref low",
                _ => "pref unknown",
            }
            .into(),
        );
    }
    parts.join(" ")
}

/// The `if-info:` line of one interface.
///
/// IPv4 is the interface's first (primary) address; the IPv6 fields carry `/prefix` like
/// `ip addr` prints them. Empty fields stay empty, as in CirrOS.
pub fn if_info_line(i: &InterfaceStatus) -> String {
    let v4 = i.addresses.iter().find(|a| a.family == IpFamily::V4);
    let v6_ll = i
        .addresses
        .iter()
        .find(|a| a.family == IpFamily::V6 && a.scope == scope_name(SCOPE_LINK));
    let v6_global = i
        .addresses
        .iter()
        .find(|a| a.family == IpFamily::V6 && a.scope == "global");
    format!(
        "if-info: {},{},{},{},{},{}",
        i.name,
        if i.up { "up" } else { "down" },
        v4.map(|a| a.address.to_string()).unwrap_or_default(),
        v4.map(|a| a.prefix_len.to_string()).unwrap_or_default(),
        v6_ll
            .map(|a| format!("{}/{}", a.address, a.prefix_len))
            .unwrap_or_default(),
        v6_global
            .map(|a| format!("{}/{}", a.address, a.prefix_len))
            .unwrap_or_default(),
    )
}

impl NetStatus {
    /// Reads interfaces, addresses and main-table routes from the kernel; `leases` comes from
    /// the DHCP service (empty if it does not run).
    pub fn collect(rtnl: &mut Rtnl, leases: Vec<LeaseStatus>) -> Result<NetStatus, NetConfigError> {
        let links = rtnl.links()?;
        let addrs = rtnl.addresses(None)?;
        let mut routes = rtnl.routes(Some(IpFamily::V4))?;
        routes.extend(rtnl.routes(Some(IpFamily::V6))?);
        Ok(NetStatus::from_tables(links, addrs, routes, leases))
    }

    /// The status from the kernel's tables as parsed from its replies (no I/O: fuzzed through
    /// `crate::fuzzing`).
    pub(crate) fn from_tables(
        mut links: Vec<Link>,
        mut addrs: Vec<Address>,
        mut kernel_routes: Vec<RouteEntry>,
        leases: Vec<LeaseStatus>,
    ) -> NetStatus {
        links.sort_by_key(|l| l.index);
        // IPv4 first, then IPv6, each in kernel order.
        addrs.sort_by_key(|a| a.family() == IpFamily::V6);
        let names: HashMap<u32, String> = links.iter().map(|l| (l.index, l.name.clone())).collect();
        let ifname = |i: u32| names.get(&i).cloned();

        let interfaces = links
            .iter()
            .map(|l| InterfaceStatus {
                name: l.name.clone(),
                index: l.index,
                mac: l.mac.filter(|m| *m != [0; 6]).map(|m| format_mac(&m)),
                up: l.is_up(),
                carrier: l.has_carrier(),
                operstate: l.operstate,
                mtu: l.mtu,
                kind: l.kind.clone(),
                addresses: addrs
                    .iter()
                    .filter(|a| a.index == l.index)
                    .map(address_status)
                    .collect(),
            })
            .collect();

        // IPv4 routes first, then IPv6, each in kernel order.
        kernel_routes.sort_by_key(|r| r.family == IpFamily::V6);
        let routes = kernel_routes
            .iter()
            // `ip route` shows the main table, without cached clones (RTM_F_CLONED).
            .filter(|r| r.table == RT_TABLE_MAIN && r.flags & 0x200 == 0)
            .map(|r| RouteStatus {
                family: r.family,
                destination: destination_text(r),
                gateway: r.gateway,
                dev: r.oif.and_then(ifname),
                protocol: protocol_name(r.protocol),
                source: r.prefsrc,
                metric: r.metric,
                line: route_line(r, &ifname),
            })
            .collect();
        NetStatus {
            interfaces,
            routes,
            leases,
        }
    }

    /// The console lines: one `if-info:` per interface, then `ip-route:` and `ip-route6:`.
    pub fn console_lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self.interfaces.iter().map(if_info_line).collect();
        for r in &self.routes {
            let prefix = if r.family == IpFamily::V4 {
                "ip-route:"
            } else {
                "ip-route6:"
            };
            out.push(format!("{prefix}{}", r.line));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{RTPROT_DHCP, RTPROT_KERNEL, RTPROT_RA};

    fn route(family: IpFamily, dst: Option<&str>, len: u8) -> RouteEntry {
        RouteEntry {
            family,
            destination: dst.map(|d| d.parse().unwrap()),
            prefix_len: len,
            gateway: None,
            oif: Some(2),
            prefsrc: None,
            metric: None,
            table: RT_TABLE_MAIN,
            protocol: RTPROT_KERNEL,
            scope: SCOPE_UNIVERSE,
            route_type: RTN_UNICAST,
            pref: None,
            flags: 0,
            expires_secs: None,
            mtu: None,
            hoplimit: None,
        }
    }

    #[test]
    fn route_lines_match_iproute2() {
        let name = |i: u32| (i == 2).then(|| "eth0".to_string());
        let mut r = route(IpFamily::V4, None, 0);
        r.gateway = Some("10.0.2.2".parse().unwrap());
        r.protocol = RTPROT_DHCP;
        r.prefsrc = Some("10.0.2.15".parse().unwrap());
        r.metric = Some(1024);
        assert_eq!(
            route_line(&r, &name),
            "default via 10.0.2.2 dev eth0 proto dhcp src 10.0.2.15 metric 1024"
        );
        let mut r = route(IpFamily::V4, Some("10.0.2.0"), 24);
        r.scope = SCOPE_LINK;
        r.prefsrc = Some("10.0.2.15".parse().unwrap());
        assert_eq!(
            route_line(&r, &name),
            "10.0.2.0/24 dev eth0 proto kernel scope link src 10.0.2.15"
        );
        let mut r = route(IpFamily::V4, Some("169.254.169.254"), 32);
        r.gateway = Some("10.0.2.2".parse().unwrap());
        r.protocol = RTPROT_BOOT;
        assert_eq!(
            route_line(&r, &name),
            "169.254.169.254 via 10.0.2.2 dev eth0"
        );
        let mut r = route(IpFamily::V6, None, 0);
        r.gateway = Some("fe80::1".parse().unwrap());
        r.protocol = RTPROT_RA;
        r.metric = Some(1024);
        r.expires_secs = Some(1798);
        r.hoplimit = Some(64);
        r.pref = Some(0);
        assert_eq!(
            route_line(&r, &name),
            "default via fe80::1 dev eth0 proto ra metric 1024 expires 1798sec hoplimit 64 pref medium"
        );
        let mut r = route(IpFamily::V6, Some("fe80::"), 64);
        r.metric = Some(256);
        r.pref = Some(0);
        r.flags = 16;
        assert_eq!(
            route_line(&r, &name),
            "fe80::/64 dev eth0 proto kernel metric 256 linkdown pref medium"
        );
    }

    fn addr(family: IpFamily, a: &str, len: u8, scope: &'static str) -> AddressStatus {
        AddressStatus {
            family,
            address: a.parse().unwrap(),
            prefix_len: len,
            scope,
            dynamic: false,
            tentative: false,
            valid_lft: None,
        }
    }

    #[test]
    fn if_info_lines() {
        let mut i = InterfaceStatus {
            name: "eth0".into(),
            index: 2,
            mac: Some("52:54:00:12:34:56".into()),
            up: true,
            carrier: true,
            operstate: OperState::Up,
            mtu: 1500,
            kind: None,
            addresses: vec![
                addr(IpFamily::V4, "10.0.2.15", 24, "global"),
                addr(IpFamily::V6, "2001:db8::5054:ff:fe12:3456", 64, "global"),
                addr(IpFamily::V6, "fe80::5054:ff:fe12:3456", 64, "link"),
            ],
        };
        assert_eq!(
            if_info_line(&i),
            "if-info: eth0,up,10.0.2.15,24,fe80::5054:ff:fe12:3456/64,2001:db8::5054:ff:fe12:3456/64"
        );
        i.up = false;
        i.addresses.clear();
        assert_eq!(if_info_line(&i), "if-info: eth0,down,,,,");
        let s = NetStatus {
            interfaces: vec![i],
            routes: vec![],
            leases: vec![],
        };
        assert_eq!(
            s.console_lines(),
            vec!["if-info: eth0,down,,,,".to_string()]
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["interfaces"][0]["operstate"], "up");
    }
}
