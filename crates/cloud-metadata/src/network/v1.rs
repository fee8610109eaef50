//! cloud-init network-config version 1.

use std::net::IpAddr;

use super::{
    Dns, Interface, InterfaceKind, IpPrefix, NetworkConfig, NetworkSource, Route, finish_route,
    netmask_to_prefix, normalize_mac, parameters, parse_ip, parse_mtu, scalar_list, valid_ifname,
    warn_unknown_keys,
};
use crate::MetadataError;
use crate::value::Node;

const WHAT: &str = "network-config";

const COMMON_KEYS: &[&str] = &["type", "name", "mac_address", "mtu", "subnets", "accept-ra"];

pub(super) fn parse(node: &Node) -> Result<NetworkConfig, MetadataError> {
    let mut cfg = NetworkConfig::new(NetworkSource::V1);
    let config = match node.get("config") {
        Some(Node::Str(s)) if s == "disabled" => {
            cfg.disabled = true;
            return Ok(cfg);
        }
        Some(Node::Seq(items)) => items,
        Some(Node::Null) | None => return Ok(cfg),
        Some(other) => {
            return Err(MetadataError::invalid(
                WHAT,
                "config",
                format!("expected a list, found {}", other.kind()),
            ));
        }
    };
    warn_unknown_keys(node, &["version", "config"], WHAT, &mut cfg.warnings);
    for (i, item) in config.iter().enumerate() {
        let ctx = format!("{WHAT}: config[{i}]");
        let Some(kind) = item.get("type").and_then(Node::as_str) else {
            cfg.warnings
                .push(format!("{ctx}: entry without a type ignored"));
            continue;
        };
        match kind {
            "physical" | "bond" | "bridge" | "vlan" => {
                if let Some(iface) = interface(item, kind, &ctx, &mut cfg.warnings) {
                    if cfg.interfaces.iter().any(|o| o.id == iface.id) {
                        cfg.warnings
                            .push(format!("{ctx}: duplicate interface {:?} ignored", iface.id));
                    } else {
                        cfg.interfaces.push(iface);
                    }
                }
            }
            "nameserver" => {
                let mut dns = Dns::default();
                if let Some(a) = item.get("address") {
                    dns.read_nameservers(a, &ctx, &mut cfg.warnings);
                }
                if let Some(s) = item.get("search") {
                    dns.read_search(s);
                }
                warn_unknown_keys(
                    item,
                    &["type", "address", "search", "interface"],
                    &ctx,
                    &mut cfg.warnings,
                );
                let target = item
                    .get("interface")
                    .and_then(Node::as_str)
                    .and_then(|name| cfg.interfaces.iter_mut().find(|i| i.id == name));
                let into = match target {
                    Some(iface) => &mut iface.dns,
                    None => &mut cfg.dns,
                };
                for ns in dns.nameservers {
                    into.add_nameserver(ns);
                }
                for s in &dns.search {
                    into.add_search(s);
                }
            }
            "route" => {
                if let Some(r) = route(item, &ctx, &mut cfg.warnings) {
                    cfg.routes.push(r);
                }
            }
            other => cfg
                .warnings
                .push(format!("{ctx}: unsupported type {other:?} ignored")),
        }
    }
    Ok(cfg)
}

fn interface(item: &Node, kind: &str, ctx: &str, warnings: &mut Vec<String>) -> Option<Interface> {
    let Some(name) = item.get("name").and_then(Node::scalar_string) else {
        warnings.push(format!("{ctx}: {kind} without a name ignored"));
        return None;
    };
    if !valid_ifname(&name) {
        warnings.push(format!(
            "{ctx}: invalid interface name {name:?}; entry ignored"
        ));
        return None;
    }
    let ctx = format!("{ctx} ({name})");
    let (iface_kind, extra): (InterfaceKind, &[&str]) = match kind {
        "bond" => (
            {
                let params = item
                    .get("params")
                    .map(|p| parameters(p, &ctx, warnings))
                    .unwrap_or_default();
                let mut parameters = std::collections::BTreeMap::new();
                let mut mode = None;
                for (k, v) in params {
                    let k = k
                        .strip_prefix("bond-")
                        .or_else(|| k.strip_prefix("bond_"))
                        .unwrap_or(&k)
                        .to_owned();
                    if k == "mode" {
                        mode = Some(v);
                    } else {
                        parameters.insert(k, v);
                    }
                }
                InterfaceKind::Bond {
                    members: item
                        .get("bond_interfaces")
                        .map(scalar_list)
                        .unwrap_or_default(),
                    mode,
                    parameters,
                }
            },
            &["bond_interfaces", "params"],
        ),
        "bridge" => (
            InterfaceKind::Bridge {
                members: item
                    .get("bridge_interfaces")
                    .map(scalar_list)
                    .unwrap_or_default(),
                parameters: item
                    .get("params")
                    .map(|p| parameters(p, &ctx, warnings))
                    .unwrap_or_default(),
            },
            &["bridge_interfaces", "params"],
        ),
        "vlan" => {
            let link = item.get("vlan_link").and_then(Node::scalar_string);
            let id = item
                .get("vlan_id")
                .and_then(Node::as_u64_loose)
                .filter(|v| (1..=4094).contains(v));
            match (link, id) {
                (Some(link), Some(id)) => (
                    InterfaceKind::Vlan {
                        vlan_id: id as u16,
                        link,
                    },
                    &["vlan_link", "vlan_id"],
                ),
                _ => {
                    warnings.push(format!(
                        "{ctx}: vlan needs vlan_link and a vlan_id in 1..4094; ignored"
                    ));
                    return None;
                }
            }
        }
        _ => (InterfaceKind::Physical, &[]),
    };
    let mut iface = Interface::new(&name, iface_kind);
    iface.name = Some(name.clone());
    let known: Vec<&str> = COMMON_KEYS.iter().chain(extra).copied().collect();
    warn_unknown_keys(item, &known, &ctx, warnings);
    if let Some(mac) = item.get("mac_address").and_then(Node::scalar_string) {
        if kind != "physical" {
            warnings.push(format!(
                "{ctx}: setting mac_address on a {kind} is not supported; ignored"
            ));
        } else {
            match normalize_mac(&mac) {
                Some(m) => iface.mac = Some(m),
                None => warnings.push(format!("{ctx}: invalid mac_address {mac:?} ignored")),
            }
        }
    }
    if let Some(mtu) = item.get("mtu") {
        iface.mtu = parse_mtu(mtu, &ctx, warnings);
    }
    if let Some(ra) = item.get("accept-ra").and_then(Node::as_bool_loose) {
        iface.ipv6_slaac = ra;
    }
    match item.get("subnets") {
        Some(Node::Seq(subnets)) => {
            for (j, s) in subnets.iter().enumerate() {
                subnet(&mut iface, s, &format!("{ctx}: subnets[{j}]"), warnings);
            }
        }
        None | Some(Node::Null) => {}
        Some(_) => warnings.push(format!("{ctx}: subnets must be a list")),
    }
    Some(iface)
}

fn subnet(iface: &mut Interface, s: &Node, ctx: &str, warnings: &mut Vec<String>) {
    let Some(kind) = s.get("type").and_then(Node::as_str) else {
        warnings.push(format!("{ctx}: subnet without a type ignored"));
        return;
    };
    warn_unknown_keys(
        s,
        &[
            "type",
            "address",
            "addresses",
            "netmask",
            "prefix",
            "gateway",
            "dns_nameservers",
            "dns_search",
            "routes",
            "control",
            "mtu",
            "ipv6",
            "metric",
        ],
        ctx,
        warnings,
    );
    match kind {
        "dhcp" | "dhcp4" => iface.dhcp4 = true,
        "dhcp6" | "ipv6_dhcpv6-stateful" => iface.dhcp6 = true,
        "ipv6_slaac" => iface.ipv6_slaac = true,
        "ipv6_dhcpv6-stateless" => {
            iface.ipv6_slaac = true;
            iface.dhcp6 = true;
        }
        "static" | "static6" => {
            let addrs = s.get("address").or_else(|| s.get("addresses"));
            let addrs = addrs.map(scalar_list).unwrap_or_default();
            if addrs.is_empty() {
                warnings.push(format!("{ctx}: static subnet without an address ignored"));
            }
            let mask = s
                .get("netmask")
                .or_else(|| s.get("prefix"))
                .and_then(Node::scalar_string);
            for a in addrs {
                match static_address(&a, mask.as_deref()) {
                    Some(p) => {
                        if kind == "static6" && p.addr.is_ipv4() {
                            warnings.push(format!("{ctx}: IPv4 address {a} in a static6 subnet"));
                        }
                        if !iface.addresses.contains(&p) {
                            iface.addresses.push(p);
                        }
                    }
                    None => warnings.push(format!("{ctx}: invalid address {a:?} ignored")),
                }
            }
        }
        "manual" => {}
        other => {
            warnings.push(format!("{ctx}: unsupported subnet type {other:?} ignored"));
            return;
        }
    }
    if let Some(gw) = s.get("gateway") {
        match parse_ip(gw) {
            Some(ip) => iface.set_gateway(ip, warnings, ctx),
            None => warnings.push(format!("{ctx}: invalid gateway {gw:?} ignored")),
        }
    }
    if let Some(ns) = s.get("dns_nameservers") {
        iface.dns.read_nameservers(ns, ctx, warnings);
    }
    if let Some(search) = s.get("dns_search") {
        iface.dns.read_search(search);
    }
    if let Some(Node::Seq(routes)) = s.get("routes") {
        for (k, r) in routes.iter().enumerate() {
            if let Some(r) = route(r, &format!("{ctx}: routes[{k}]"), warnings) {
                iface.routes.push(r);
            }
        }
    }
}

/// `address` possibly with `/len`, or with a separate `netmask`/`prefix`.
fn static_address(addr: &str, mask: Option<&str>) -> Option<IpPrefix> {
    if addr.contains('/') {
        return addr.parse().ok();
    }
    let ip: IpAddr = addr.trim().parse().ok()?;
    let prefix = match mask {
        Some(m) => netmask_to_prefix(m, ip.is_ipv4())?,
        None if ip.is_ipv4() => 24, // cloud-init's default for a bare IPv4 static address
        None => 64,
    };
    IpPrefix::new(ip, prefix)
}

/// A v1 route: `destination` or `network` (+ `netmask`/`prefix`), `gateway`, `metric`.
pub(super) fn route(r: &Node, ctx: &str, warnings: &mut Vec<String>) -> Option<Route> {
    let gateway = r.get("gateway").and_then(parse_ip);
    let dest = r
        .get("destination")
        .or_else(|| r.get("network"))
        .and_then(Node::scalar_string);
    let mask = r
        .get("netmask")
        .or_else(|| r.get("prefix"))
        .and_then(Node::scalar_string);
    let to = match (dest.as_deref(), mask.as_deref()) {
        (Some("default"), _) | (None, _) => gateway.as_ref().map(IpPrefix::default_for),
        (Some(d), Some(m)) if !d.contains('/') => d
            .parse::<IpAddr>()
            .ok()
            .and_then(|ip| IpPrefix::new(ip, netmask_to_prefix(m, ip.is_ipv4())?)),
        (Some(d), _) => d.parse().ok(),
    };
    finish_route(r, to, gateway, ctx, warnings)
}
