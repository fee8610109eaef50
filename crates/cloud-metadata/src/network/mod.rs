//! One network model for network-config v1, v2 (netplan) and OpenStack `network_data.json`.
//!
//! The parsers describe; the guest applies. Interfaces are referred to by [`Interface::id`]
//! (v1: the `name`; v2: the key under `ethernets`/`bonds`/…; `network_data.json`: the link `id`),
//! and bond members, bridge ports and VLAN parents use those ids. A physical interface is found
//! on the machine by [`Interface::mac`] when set, else by [`Interface::match_name`] or
//! [`Interface::name`]. Unknown or unsupported items end up in [`NetworkConfig::warnings`].
//!
//! Normalisation shared by all three formats: a default route (`0.0.0.0/0` or `::/0`) with a
//! gateway and no metric, on an interface that has no gateway of that family yet, becomes
//! [`Interface::gateway4`]/[`Interface::gateway6`]; every other route stays in
//! [`Interface::routes`]. MAC addresses are lowercase `aa:bb:…`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::value::{Node, parse_json, parse_yaml_or_json};
use crate::{Limits, MetadataError};

mod network_data;
mod v1;
mod v2;

/// Which format a [`NetworkConfig`] was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkSource {
    /// cloud-init network-config version 1.
    V1,
    /// cloud-init network-config version 2 (netplan subset).
    V2,
    /// OpenStack `network_data.json`.
    OpenstackNetworkData,
}

/// The network configuration a datasource asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// The format it came from.
    pub source: NetworkSource,
    /// `config: disabled` (v1/v2): the datasource asks the guest not to configure networking.
    pub disabled: bool,
    /// Interfaces in document order.
    pub interfaces: Vec<Interface>,
    /// Resolvers not tied to an interface (v1 `nameserver` entries, `network_data` services).
    pub dns: Dns,
    /// Routes not tied to an interface (v1 `route` entries).
    pub routes: Vec<Route>,
    /// Items that were not understood or are not supported, one message each.
    pub warnings: Vec<String>,
}

impl NetworkConfig {
    fn new(source: NetworkSource) -> Self {
        NetworkConfig {
            source,
            disabled: false,
            interfaces: Vec::new(),
            dns: Dns::default(),
            routes: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The interface with this id.
    pub fn interface(&self, id: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.id == id)
    }

    /// All nameservers: the global ones first, then per-interface ones, without duplicates.
    pub fn all_nameservers(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = Vec::new();
        let per_if = self
            .interfaces
            .iter()
            .flat_map(|i| i.dns.nameservers.iter());
        for ns in self.dns.nameservers.iter().chain(per_if) {
            if !out.contains(ns) {
                out.push(*ns);
            }
        }
        out
    }

    fn finish(mut self) -> Self {
        for iface in &mut self.interfaces {
            iface.promote_default_routes();
        }
        self
    }
}

/// One interface to configure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    /// Reference id (see the module docs).
    pub id: String,
    /// Name the interface should have (v1 `name`, v2 `set-name` or an unmatched id,
    /// `network_data` link `name`). `None`: keep the kernel's name, find it by MAC.
    pub name: Option<String>,
    /// MAC address to find a physical interface by (lowercase).
    pub mac: Option<String>,
    /// v2 `match: {name: …}` pattern (may contain `*` globs).
    pub match_name: Option<String>,
    /// What kind of interface.
    pub kind: InterfaceKind,
    /// MTU.
    pub mtu: Option<u32>,
    /// Run a DHCPv4 client.
    pub dhcp4: bool,
    /// Run a DHCPv6 client.
    pub dhcp6: bool,
    /// Accept router advertisements / autoconfigure IPv6 (SLAAC).
    pub ipv6_slaac: bool,
    /// Static addresses with their prefix length.
    pub addresses: Vec<IpPrefix>,
    /// IPv4 default gateway.
    pub gateway4: Option<Ipv4Addr>,
    /// IPv6 default gateway.
    pub gateway6: Option<Ipv6Addr>,
    /// Routes through this interface.
    pub routes: Vec<Route>,
    /// Resolvers learnt with this interface's configuration.
    pub dns: Dns,
}

impl Interface {
    fn new(id: &str, kind: InterfaceKind) -> Self {
        Interface {
            id: id.to_owned(),
            name: None,
            mac: None,
            match_name: None,
            kind,
            mtu: None,
            dhcp4: false,
            dhcp6: false,
            ipv6_slaac: false,
            addresses: Vec::new(),
            gateway4: None,
            gateway6: None,
            routes: Vec::new(),
            dns: Dns::default(),
        }
    }

    /// Whether a kernel interface with this name and MAC is the one described: by MAC when one
    /// is given, else by `match_name` (with `*` globs), else by `name`/`id`.
    pub fn matches(&self, kernel_name: &str, kernel_mac: &str) -> bool {
        if let Some(mac) = &self.mac {
            return normalize_mac(kernel_mac).as_deref() == Some(mac.as_str());
        }
        if let Some(pattern) = &self.match_name {
            return glob_match(pattern, kernel_name);
        }
        self.name.as_deref().unwrap_or(&self.id) == kernel_name
    }

    fn set_gateway(&mut self, gw: IpAddr, warnings: &mut Vec<String>, ctx: &str) {
        match gw {
            IpAddr::V4(v4) => {
                if self.gateway4.is_some_and(|g| g != v4) {
                    warnings.push(format!("{ctx}: second IPv4 gateway {v4} ignored"));
                } else {
                    self.gateway4 = Some(v4);
                }
            }
            IpAddr::V6(v6) => {
                if self.gateway6.is_some_and(|g| g != v6) {
                    warnings.push(format!("{ctx}: second IPv6 gateway {v6} ignored"));
                } else {
                    self.gateway6 = Some(v6);
                }
            }
        }
    }

    fn promote_default_routes(&mut self) {
        let mut kept = Vec::with_capacity(self.routes.len());
        for route in std::mem::take(&mut self.routes) {
            let promoted = match (route.to.prefix, route.to.addr, route.via, route.metric) {
                (0, IpAddr::V4(_), Some(IpAddr::V4(gw)), None) if self.gateway4.is_none() => {
                    self.gateway4 = Some(gw);
                    true
                }
                (0, IpAddr::V6(_), Some(IpAddr::V6(gw)), None) if self.gateway6.is_none() => {
                    self.gateway6 = Some(gw);
                    true
                }
                _ => false,
            };
            if !promoted && !kept.contains(&route) {
                kept.push(route);
            }
        }
        self.routes = kept;
    }
}

/// The kind of an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum InterfaceKind {
    /// A physical (or virtual NIC) interface.
    Physical,
    /// A bond of `members` (interface ids).
    Bond {
        /// Member interface ids.
        members: Vec<String>,
        /// Bonding mode (`active-backup`, `802.3ad`, `balance-rr`, or a numeric mode as given).
        mode: Option<String>,
        /// Other bonding parameters as given (`miimon`, `xmit_hash_policy`, …).
        parameters: BTreeMap<String, String>,
    },
    /// An 802.1Q VLAN on top of `link` (an interface id).
    Vlan {
        /// VLAN id, 1–4094.
        vlan_id: u16,
        /// Parent interface id.
        link: String,
    },
    /// A bridge over `members` (interface ids).
    Bridge {
        /// Port interface ids.
        members: Vec<String>,
        /// Bridge parameters as given (`stp`, `forward-delay`, …).
        parameters: BTreeMap<String, String>,
    },
}

/// A route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination network.
    pub to: IpPrefix,
    /// Gateway; `None` for an on-link route.
    pub via: Option<IpAddr>,
    /// Metric, if given.
    pub metric: Option<u32>,
}

/// Resolver configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Nameserver addresses.
    pub nameservers: Vec<IpAddr>,
    /// Search domains.
    pub search: Vec<String>,
}

impl Dns {
    /// Whether there are neither nameservers nor search domains.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty() && self.search.is_empty()
    }

    fn add_nameserver(&mut self, ns: IpAddr) {
        if !self.nameservers.contains(&ns) {
            self.nameservers.push(ns);
        }
    }

    fn add_search(&mut self, domain: &str) {
        if !domain.is_empty() && !self.search.iter().any(|d| d == domain) {
            self.search.push(domain.to_owned());
        }
    }

    /// Reads `addresses`-like (list or space/comma separated string) nameservers.
    fn read_nameservers(&mut self, node: &Node, ctx: &str, warnings: &mut Vec<String>) {
        for s in string_list(node) {
            match s.parse::<IpAddr>() {
                Ok(ip) => self.add_nameserver(ip),
                Err(_) => warnings.push(format!("{ctx}: invalid nameserver {s:?} ignored")),
            }
        }
    }

    fn read_search(&mut self, node: &Node) {
        for s in string_list(node) {
            self.add_search(&s);
        }
    }
}

/// An address with a prefix length, written `addr/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length (≤ 32 for IPv4, ≤ 128 for IPv6).
    pub prefix: u8,
}

impl IpPrefix {
    /// Builds a prefix, checking the length against the address family.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(IpPrefix { addr, prefix })
    }

    /// The default route of `addr`'s family.
    pub fn default_for(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => IpPrefix {
                addr: Ipv4Addr::UNSPECIFIED.into(),
                prefix: 0,
            },
            IpAddr::V6(_) => IpPrefix {
                addr: Ipv6Addr::UNSPECIFIED.into(),
                prefix: 0,
            },
        }
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpPrefix {
    type Err = String;

    /// `addr/len`, or a bare address (a host prefix: /32 or /128).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("invalid address {s:?}"))?;
        let prefix = match prefix {
            None => {
                if addr.is_ipv4() {
                    32
                } else {
                    128
                }
            }
            Some(p) => netmask_to_prefix(p, addr.is_ipv4())
                .ok_or_else(|| format!("invalid prefix {s:?}"))?,
        };
        IpPrefix::new(addr, prefix).ok_or_else(|| format!("invalid prefix {s:?}"))
    }
}

impl Serialize for IpPrefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpPrefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses NoCloud/cloud-init `network-config` (v1 or v2, YAML or JSON, optionally wrapped in a
/// top-level `network:` key).
pub fn parse_network_config(input: &[u8], limits: &Limits) -> Result<NetworkConfig, MetadataError> {
    let node = parse_yaml_or_json(input, "network-config", limits)?;
    network_config_from_node(&node)
}

/// Reads network-config v1/v2 from an already parsed tree.
pub fn network_config_from_node(node: &Node) -> Result<NetworkConfig, MetadataError> {
    const WHAT: &str = "network-config";
    let node = match node.get("network") {
        Some(inner @ Node::Map(_)) => inner,
        _ => node,
    };
    if !matches!(node, Node::Map(_)) {
        return Err(MetadataError::invalid(
            WHAT,
            "(top level)",
            format!("expected a mapping, found {}", node.kind()),
        ));
    }
    let version = match node.get("version") {
        Some(v) => v
            .as_u64_loose()
            .ok_or_else(|| MetadataError::invalid(WHAT, "version", "expected 1 or 2"))?,
        None if node.get("config").is_some() => 1,
        None if ["ethernets", "bonds", "vlans", "bridges"]
            .iter()
            .any(|k| node.get(k).is_some()) =>
        {
            2
        }
        None => {
            return Err(MetadataError::MissingField {
                what: WHAT,
                field: "version",
            });
        }
    };
    let cfg = match version {
        1 => v1::parse(node)?,
        2 => v2::parse(node)?,
        other => {
            return Err(MetadataError::invalid(
                WHAT,
                "version",
                format!("unsupported version {other}"),
            ));
        }
    };
    Ok(cfg.finish())
}

/// Parses OpenStack `network_data.json`.
pub fn parse_network_data(input: &[u8], limits: &Limits) -> Result<NetworkConfig, MetadataError> {
    let node = parse_json(input, "network_data.json", limits)?;
    network_data_from_node(&node)
}

/// Reads `network_data.json` from an already parsed tree.
pub fn network_data_from_node(node: &Node) -> Result<NetworkConfig, MetadataError> {
    Ok(network_data::parse(node)?.finish())
}

// ---------------------------------------------------------------------------------------------
// Shared helpers.

/// Normalises a MAC address (`AA-BB-…`, `aa:bb:…`) to lowercase colon form; 6 or 20 bytes
/// (Ethernet or InfiniBand).
pub fn normalize_mac(s: &str) -> Option<String> {
    let s = s.trim();
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if !(parts.len() == 6 || parts.len() == 20) {
        return None;
    }
    let mut out = String::with_capacity(parts.len() * 3);
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        if i > 0 {
            out.push(':');
        }
        out.push_str(&p.to_ascii_lowercase());
    }
    Some(out)
}

/// A netmask (`255.255.255.0`, `ffff:ffff::`) or a prefix length (`24`) to a prefix length.
/// Non-contiguous masks are refused.
pub fn netmask_to_prefix(mask: &str, ipv4: bool) -> Option<u8> {
    let mask = mask.trim();
    let max = if ipv4 { 32 } else { 128 };
    if !mask.is_empty() && mask.bytes().all(|b| b.is_ascii_digit()) {
        let p: u8 = mask.parse().ok()?;
        return (p <= max).then_some(p);
    }
    let bits: u128 = match mask.parse::<IpAddr>().ok()? {
        IpAddr::V4(m) if ipv4 => u128::from(u32::from(m)) << 96,
        IpAddr::V6(m) if !ipv4 => u128::from(m),
        _ => return None,
    };
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// Whether `name` matches a netplan-style glob (`*` any run, `?` one character).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matcher with one backtrack point: linear in practice, never recursive.
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A string or a list of scalars; strings are split on whitespace and commas.
fn string_list(node: &Node) -> Vec<String> {
    match node {
        Node::Seq(items) => items.iter().filter_map(Node::scalar_string).collect(),
        Node::Str(s) => s
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        other => other.scalar_string().into_iter().collect(),
    }
}

/// A list of scalars, without splitting strings.
fn scalar_list(node: &Node) -> Vec<String> {
    match node {
        Node::Seq(items) => items.iter().filter_map(Node::scalar_string).collect(),
        other => other.scalar_string().into_iter().collect(),
    }
}

/// Validates a Linux interface name (1–15 bytes, no `/`, whitespace, `:` or control chars).
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b.is_ascii_control())
}

fn parse_mtu(node: &Node, ctx: &str, warnings: &mut Vec<String>) -> Option<u32> {
    match node.as_u64_loose() {
        Some(m) if (68..=65535).contains(&m) => Some(m as u32),
        _ if node.is_null() => None,
        _ => {
            warnings.push(format!("{ctx}: invalid mtu {node:?} ignored"));
            None
        }
    }
}

/// The checks every route format shares: a destination, one address family, an optional
/// `metric`. Problems become warnings and drop the route.
fn finish_route(
    r: &Node,
    to: Option<IpPrefix>,
    via: Option<IpAddr>,
    ctx: &str,
    warnings: &mut Vec<String>,
) -> Option<Route> {
    let Some(to) = to else {
        warnings.push(format!("{ctx}: route without a valid destination ignored"));
        return None;
    };
    if via.is_some_and(|v| v.is_ipv4() != to.addr.is_ipv4()) {
        warnings.push(format!("{ctx}: route mixes address families; ignored"));
        return None;
    }
    let metric = r
        .get("metric")
        .and_then(Node::as_u64_loose)
        .and_then(|m| u32::try_from(m).ok());
    Some(Route { to, via, metric })
}

fn parse_ip(node: &Node) -> Option<IpAddr> {
    node.scalar_string()?.trim().parse().ok()
}

/// Bond/bridge parameters as strings (nested values are skipped with a warning).
fn parameters(node: &Node, ctx: &str, warnings: &mut Vec<String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(entries) = node.as_map() {
        for (k, v) in entries {
            match v {
                Node::Seq(items) => {
                    let joined: Vec<String> =
                        items.iter().filter_map(Node::scalar_string).collect();
                    out.insert(k.clone(), joined.join(" "));
                }
                Node::Map(_) => warnings.push(format!("{ctx}: parameter {k} (a mapping) ignored")),
                other => {
                    if let Some(s) = other.scalar_string() {
                        out.insert(k.clone(), s);
                    }
                }
            }
        }
    } else if !node.is_null() {
        warnings.push(format!("{ctx}: parameters must be a mapping"));
    }
    out
}

fn warn_unknown_keys(node: &Node, known: &[&str], ctx: &str, warnings: &mut Vec<String>) {
    if let Some(entries) = node.as_map() {
        for (k, _) in entries {
            if !known.contains(&k.as_str()) {
                warnings.push(format!("{ctx}: unsupported key {k:?} ignored"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn netmasks() {
        assert_eq!(netmask_to_prefix("255.255.255.0", true), Some(24));
        assert_eq!(netmask_to_prefix("255.255.255.248", true), Some(29));
        assert_eq!(netmask_to_prefix("0.0.0.0", true), Some(0));
        assert_eq!(netmask_to_prefix("255.255.255.255", true), Some(32));
        assert_eq!(netmask_to_prefix("255.0.255.0", true), None);
        assert_eq!(netmask_to_prefix("ffff:ffff:ffff:ffff::", false), Some(64));
        assert_eq!(netmask_to_prefix("::", false), Some(0));
        assert_eq!(netmask_to_prefix("64", false), Some(64));
        assert_eq!(netmask_to_prefix("33", true), None);
        assert_eq!(netmask_to_prefix("ffff::", true), None);
    }

    #[test]
    fn prefixes() {
        let p: IpPrefix = "192.168.1.10/24".parse().unwrap();
        assert_eq!(p.prefix, 24);
        assert_eq!(p.to_string(), "192.168.1.10/24");
        assert_eq!("10.0.0.1".parse::<IpPrefix>().unwrap().prefix, 32);
        assert_eq!("2001:db8::1/64".parse::<IpPrefix>().unwrap().prefix, 64);
        assert_eq!(
            "10.0.0.1/255.255.0.0".parse::<IpPrefix>().unwrap().prefix,
            16
        );
        assert!("10.0.0.1/40".parse::<IpPrefix>().is_err());
        assert!("nope/1".parse::<IpPrefix>().is_err());
    }

    #[test]
    fn macs() {
        assert_eq!(
            normalize_mac("AA-BB-cc-dd-ee-FF").as_deref(),
            Some("aa:bb:cc:dd:ee:ff")
        );
        assert_eq!(normalize_mac("aa:bb:cc:dd:ee"), None);
        assert_eq!(normalize_mac("aa:bb:cc:dd:ee:gg"), None);
        assert_eq!(normalize_mac("a:bb:cc:dd:ee:ff"), None);
    }

    #[test]
    fn globs() {
        assert!(glob_match("en*", "ens3"));
        assert!(glob_match("*", ""));
        assert!(glob_match("e?h0", "eth0"));
        assert!(!glob_match("en*", "eth0"));
        assert!(glob_match("*0", "eth0"));
        assert!(!glob_match("eth0", "eth01"));
    }

    #[test]
    fn interface_matching() {
        let mut i = Interface::new("id0", InterfaceKind::Physical);
        assert!(i.matches("id0", "00:00:00:00:00:01"));
        i.mac = Some("06:aa:bb:cc:dd:02".into());
        assert!(i.matches("whatever", "06:AA:BB:CC:DD:02"));
        assert!(!i.matches("id0", "06:aa:bb:cc:dd:03"));
    }

    proptest! {
        #[test]
        fn prefix_display_round_trips(a in any::<[u8; 4]>(), p in 0u8..=32) {
            let pre = IpPrefix::new(IpAddr::from(a), p).unwrap();
            prop_assert_eq!(pre.to_string().parse::<IpPrefix>().unwrap(), pre);
        }

        #[test]
        fn v4_masks_round_trip(p in 0u32..=32) {
            let mask = Ipv4Addr::from(u32::MAX.checked_shl(32 - p).unwrap_or(0));
            prop_assert_eq!(netmask_to_prefix(&mask.to_string(), true), Some(p as u8));
        }

        #[test]
        fn glob_never_panics(p in "[a-z*?]{0,12}", n in "[a-z]{0,12}") {
            let _ = glob_match(&p, &n);
            prop_assert!(glob_match(&n, &n));
        }
    }
}
