//! cloud-init network-config version 2 (the netplan subset cloud-init passes through).

use super::{
    Interface, InterfaceKind, IpPrefix, NetworkConfig, NetworkSource, Route, finish_route,
    normalize_mac, parameters, parse_ip, parse_mtu, scalar_list, valid_ifname, warn_unknown_keys,
};
use crate::MetadataError;
use crate::value::Node;

const WHAT: &str = "network-config";

/// Keys understood on every device type.
const COMMON_KEYS: &[&str] = &[
    "match",
    "set-name",
    "dhcp4",
    "dhcp6",
    "accept-ra",
    "addresses",
    "gateway4",
    "gateway6",
    "routes",
    "nameservers",
    "mtu",
];
/// Keys accepted and deliberately ignored (they change nothing the guest does).
const IGNORED_KEYS: &[&str] = &["optional", "critical", "renderer", "wakeonlan"];

pub(super) fn parse(node: &Node) -> Result<NetworkConfig, MetadataError> {
    let mut cfg = NetworkConfig::new(NetworkSource::V2);
    if node.get("config").and_then(Node::as_str) == Some("disabled") {
        cfg.disabled = true;
        return Ok(cfg);
    }
    warn_unknown_keys(
        node,
        &[
            "version",
            "renderer",
            "ethernets",
            "bonds",
            "bridges",
            "vlans",
        ],
        WHAT,
        &mut cfg.warnings,
    );
    for section in ["ethernets", "bonds", "bridges", "vlans"] {
        let Some(devices) = node.get(section) else {
            continue;
        };
        let Some(devices) = devices.as_map() else {
            if !devices.is_null() {
                cfg.warnings
                    .push(format!("{WHAT}: {section} must be a mapping; ignored"));
            }
            continue;
        };
        for (id, dev) in devices {
            let ctx = format!("{WHAT}: {section}.{id}");
            if cfg.interfaces.iter().any(|i| &i.id == id) {
                cfg.warnings.push(format!("{ctx}: duplicate id ignored"));
                continue;
            }
            if let Some(iface) = device(section, id, dev, &ctx, &mut cfg.warnings) {
                cfg.interfaces.push(iface);
            }
        }
    }
    Ok(cfg)
}

fn device(
    section: &str,
    id: &str,
    dev: &Node,
    ctx: &str,
    warnings: &mut Vec<String>,
) -> Option<Interface> {
    if !matches!(dev, Node::Map(_) | Node::Null) {
        warnings.push(format!("{ctx}: expected a mapping; ignored"));
        return None;
    }
    let (kind, extra): (InterfaceKind, &[&str]) = match section {
        "bonds" | "bridges" => {
            let members = dev.get("interfaces").map(scalar_list).unwrap_or_default();
            let mut params = dev
                .get("parameters")
                .map(|p| parameters(p, ctx, warnings))
                .unwrap_or_default();
            if section == "bonds" {
                let mode = params.remove("mode");
                (
                    InterfaceKind::Bond {
                        members,
                        mode,
                        parameters: params,
                    },
                    &["interfaces", "parameters", "macaddress"],
                )
            } else {
                (
                    InterfaceKind::Bridge {
                        members,
                        parameters: params,
                    },
                    &["interfaces", "parameters", "macaddress"],
                )
            }
        }
        "vlans" => {
            let link = dev.get("link").and_then(Node::scalar_string);
            let vid = dev
                .get("id")
                .and_then(Node::as_u64_loose)
                .filter(|v| (1..=4094).contains(v));
            match (link, vid) {
                (Some(link), Some(vid)) => (
                    InterfaceKind::Vlan {
                        vlan_id: vid as u16,
                        link,
                    },
                    &["id", "link", "macaddress"],
                ),
                _ => {
                    warnings.push(format!(
                        "{ctx}: vlan needs link and an id in 1..4094; ignored"
                    ));
                    return None;
                }
            }
        }
        _ => (InterfaceKind::Physical, &[]),
    };
    let mut iface = Interface::new(id, kind);
    let known: Vec<&str> = COMMON_KEYS
        .iter()
        .chain(extra)
        .chain(IGNORED_KEYS)
        .copied()
        .collect();
    warn_unknown_keys(dev, &known, ctx, warnings);
    if dev.get("macaddress").is_some() {
        warnings.push(format!(
            "{ctx}: setting macaddress is not supported; ignored"
        ));
    }

    let matcher = dev.get("match");
    if let Some(m) = matcher {
        warn_unknown_keys(
            m,
            &["macaddress", "name", "driver"],
            &format!("{ctx}.match"),
            warnings,
        );
        if let Some(mac) = m.get("macaddress").and_then(Node::scalar_string) {
            match normalize_mac(&mac) {
                Some(mac) => iface.mac = Some(mac),
                None => warnings.push(format!("{ctx}: invalid match.macaddress {mac:?} ignored")),
            }
        }
        iface.match_name = m.get("name").and_then(Node::scalar_string);
        if m.get("driver").is_some() {
            warnings.push(format!("{ctx}: match.driver is not supported; ignored"));
        }
    }
    let set_name = dev.get("set-name").and_then(Node::scalar_string);
    iface.name = match set_name {
        Some(n) if valid_ifname(&n) => Some(n),
        Some(n) => {
            warnings.push(format!("{ctx}: invalid set-name {n:?} ignored"));
            None
        }
        // Without a match the id is the interface name (netplan semantics).
        None if matcher.is_none() && valid_ifname(id) => Some(id.to_owned()),
        None if matcher.is_none() => {
            warnings.push(format!(
                "{ctx}: id is not a valid interface name and there is no match; ignored"
            ));
            return None;
        }
        None => None,
    };

    if let Some(v) = dev.get("dhcp4") {
        iface.dhcp4 = v.as_bool_loose().unwrap_or(false);
    }
    if let Some(v) = dev.get("dhcp6") {
        iface.dhcp6 = v.as_bool_loose().unwrap_or(false);
    }
    if let Some(v) = dev.get("accept-ra") {
        iface.ipv6_slaac = v.as_bool_loose().unwrap_or(false);
    }
    if let Some(mtu) = dev.get("mtu") {
        iface.mtu = parse_mtu(mtu, ctx, warnings);
    }
    if let Some(addrs) = dev.get("addresses") {
        let items: Vec<String> = match addrs {
            Node::Seq(items) => items
                .iter()
                .filter_map(|a| match a {
                    // `- 10.0.0.2/24: {label: …}` : the address is the key.
                    Node::Map(entries) => entries.first().map(|(k, _)| k.clone()),
                    other => other.scalar_string(),
                })
                .collect(),
            other => scalar_list(other),
        };
        for a in items {
            match a.parse::<IpPrefix>() {
                Ok(p) if a.contains('/') => {
                    if !iface.addresses.contains(&p) {
                        iface.addresses.push(p);
                    }
                }
                _ => warnings.push(format!("{ctx}: address {a:?} needs a /prefix; ignored")),
            }
        }
    }
    for key in ["gateway4", "gateway6"] {
        if let Some(gw) = dev.get(key) {
            match parse_ip(gw) {
                Some(ip) if ip.is_ipv4() == (key == "gateway4") => {
                    iface.set_gateway(ip, warnings, ctx)
                }
                _ => warnings.push(format!("{ctx}: invalid {key} {gw:?} ignored")),
            }
        }
    }
    if let Some(routes) = dev.get("routes") {
        match routes {
            Node::Seq(items) => {
                for (k, r) in items.iter().enumerate() {
                    if let Some(r) = route(r, &format!("{ctx}: routes[{k}]"), warnings) {
                        iface.routes.push(r);
                    }
                }
            }
            _ => warnings.push(format!("{ctx}: routes must be a list")),
        }
    }
    if let Some(ns) = dev.get("nameservers") {
        warn_unknown_keys(
            ns,
            &["addresses", "search"],
            &format!("{ctx}.nameservers"),
            warnings,
        );
        if let Some(a) = ns.get("addresses") {
            iface.dns.read_nameservers(a, ctx, warnings);
        }
        if let Some(s) = ns.get("search") {
            iface.dns.read_search(s);
        }
    }
    Some(iface)
}

fn route(r: &Node, ctx: &str, warnings: &mut Vec<String>) -> Option<Route> {
    warn_unknown_keys(
        r,
        &[
            "to", "via", "metric", "on-link", "table", "scope", "type", "from",
        ],
        ctx,
        warnings,
    );
    for k in ["table", "from"] {
        if r.get(k).is_some() {
            warnings.push(format!("{ctx}: route {k} is not supported; route ignored"));
            return None;
        }
    }
    let via = r.get("via").and_then(parse_ip);
    let to = match r.get("to").and_then(Node::scalar_string).as_deref() {
        Some("default") | None => via.as_ref().map(IpPrefix::default_for),
        Some(t) => t.parse().ok(),
    };
    finish_route(r, to, via, ctx, warnings)
}
