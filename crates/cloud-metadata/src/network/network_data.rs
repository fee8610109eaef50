//! OpenStack `network_data.json` (`links`, `networks`, `services`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{
    Interface, InterfaceKind, IpPrefix, NetworkConfig, NetworkSource, Route, netmask_to_prefix,
    normalize_mac, parse_ip, parse_mtu, scalar_list, valid_ifname,
};
use crate::MetadataError;
use crate::value::Node;

const WHAT: &str = "network_data.json";

/// Link types that are a plain NIC as far as the guest is concerned (cloud-init's list).
const PHYSICAL_TYPES: &[&str] = &[
    "bridge",
    "dvs",
    "ethernet",
    "hw_veb",
    "hyperv",
    "ovs",
    "phy",
    "tap",
    "vhostuser",
    "vif",
    "vrouter",
    "macvtap",
];

pub(super) fn parse(node: &Node) -> Result<NetworkConfig, MetadataError> {
    if !matches!(node, Node::Map(_)) {
        return Err(MetadataError::invalid(
            WHAT,
            "(top level)",
            format!("expected an object, found {}", node.kind()),
        ));
    }
    let mut cfg = NetworkConfig::new(NetworkSource::OpenstackNetworkData);
    let list = |key: &str| -> Result<&[Node], MetadataError> {
        match node.get(key) {
            None | Some(Node::Null) => Ok(&[]),
            Some(Node::Seq(items)) => Ok(items),
            Some(other) => Err(MetadataError::invalid(
                WHAT,
                key,
                format!("expected a list, found {}", other.kind()),
            )),
        }
    };

    for (i, link) in list("links")?.iter().enumerate() {
        let ctx = format!("{WHAT}: links[{i}]");
        let Some(id) = link.get("id").and_then(Node::scalar_string) else {
            cfg.warnings
                .push(format!("{ctx}: link without an id ignored"));
            continue;
        };
        if cfg.interfaces.iter().any(|o| o.id == id) {
            cfg.warnings
                .push(format!("{ctx}: duplicate link id {id:?} ignored"));
            continue;
        }
        let ctx = format!("{ctx} ({id})");
        let ltype = link.get("type").and_then(Node::as_str).unwrap_or("phy");
        let kind = match ltype {
            "bond" => {
                let mut parameters = BTreeMap::new();
                for (k, v) in link.as_map().unwrap_or_default() {
                    if let Some(name) = k.strip_prefix("bond_")
                        && !matches!(name, "links" | "mode")
                        && let Some(s) = v.scalar_string()
                    {
                        parameters.insert(name.to_owned(), s);
                    }
                }
                InterfaceKind::Bond {
                    members: link.get("bond_links").map(scalar_list).unwrap_or_default(),
                    mode: link.get("bond_mode").and_then(Node::scalar_string),
                    parameters,
                }
            }
            "vlan" => {
                let parent = link.get("vlan_link").and_then(Node::scalar_string);
                let vid = link
                    .get("vlan_id")
                    .and_then(Node::as_u64_loose)
                    .filter(|v| (1..=4094).contains(v));
                match (parent, vid) {
                    (Some(parent), Some(vid)) => InterfaceKind::Vlan {
                        vlan_id: vid as u16,
                        link: parent,
                    },
                    _ => {
                        cfg.warnings.push(format!(
                            "{ctx}: vlan needs vlan_link and a vlan_id in 1..4094; ignored"
                        ));
                        continue;
                    }
                }
            }
            t if PHYSICAL_TYPES.contains(&t) => InterfaceKind::Physical,
            other => {
                cfg.warnings.push(format!(
                    "{ctx}: unknown link type {other:?}, treated as a physical NIC"
                ));
                InterfaceKind::Physical
            }
        };
        let physical = matches!(kind, InterfaceKind::Physical);
        let mut iface = Interface::new(&id, kind);
        // A bond's or VLAN's `ethernet_mac_address` is its own (generated) MAC, not something
        // to find it by: only physical links are matched by MAC.
        let mac_key = if physical {
            link.get("ethernet_mac_address")
        } else {
            None
        };
        if let Some(mac) = mac_key.and_then(Node::scalar_string) {
            match normalize_mac(&mac) {
                Some(m) => iface.mac = Some(m),
                None => cfg.warnings.push(format!(
                    "{ctx}: invalid ethernet_mac_address {mac:?} ignored"
                )),
            }
        }
        if let Some(name) = link.get("name").and_then(Node::scalar_string) {
            if valid_ifname(&name) {
                iface.name = Some(name);
            } else {
                cfg.warnings
                    .push(format!("{ctx}: invalid name {name:?} ignored"));
            }
        }
        if let Some(mtu) = link.get("mtu") {
            iface.mtu = parse_mtu(mtu, &ctx, &mut cfg.warnings);
        }
        if iface.mac.is_none()
            && iface.name.is_none()
            && matches!(iface.kind, InterfaceKind::Physical)
        {
            cfg.warnings.push(format!(
                "{ctx}: physical link without a MAC address or name cannot be matched"
            ));
        }
        cfg.interfaces.push(iface);
    }

    for (i, net) in list("networks")?.iter().enumerate() {
        let ctx = format!("{WHAT}: networks[{i}]");
        let Some(link) = net.get("link").and_then(Node::scalar_string) else {
            cfg.warnings
                .push(format!("{ctx}: network without a link ignored"));
            continue;
        };
        let Some(iface) = cfg.interfaces.iter_mut().find(|l| l.id == link) else {
            cfg.warnings
                .push(format!("{ctx}: link {link:?} is not in links; ignored"));
            continue;
        };
        let ntype = net.get("type").and_then(Node::as_str).unwrap_or("");
        match ntype {
            "ipv4_dhcp" | "dhcp4" => iface.dhcp4 = true,
            "ipv6_dhcp" | "dhcp6" | "ipv6_dhcpv6-stateful" => iface.dhcp6 = true,
            "ipv6_slaac" => iface.ipv6_slaac = true,
            "ipv6_dhcpv6-stateless" => {
                iface.ipv6_slaac = true;
                iface.dhcp6 = true;
            }
            "ipv4" | "ipv6" => {
                let addr = net.get("ip_address").and_then(Node::scalar_string);
                let mask = net.get("netmask").and_then(Node::scalar_string);
                match addr
                    .as_deref()
                    .and_then(|a| static_address(a, mask.as_deref()))
                {
                    Some(p) if p.addr.is_ipv4() == (ntype == "ipv4") => {
                        if !iface.addresses.contains(&p) {
                            iface.addresses.push(p);
                        }
                    }
                    _ => {
                        cfg.warnings.push(format!(
                            "{ctx}: invalid {ntype} ip_address/netmask; ignored"
                        ));
                        continue;
                    }
                }
            }
            other => {
                cfg.warnings
                    .push(format!("{ctx}: unsupported network type {other:?} ignored"));
                continue;
            }
        }
        if let Some(Node::Seq(routes)) = net.get("routes") {
            for (k, r) in routes.iter().enumerate() {
                let rctx = format!("{ctx}: routes[{k}]");
                match route(r) {
                    Some(r) => iface.routes.push(r),
                    None => cfg.warnings.push(format!("{rctx}: invalid route ignored")),
                }
            }
        }
        if let Some(gw) = net.get("gateway").and_then(parse_ip) {
            iface.set_gateway(gw, &mut cfg.warnings, &ctx);
        }
        if let Some(Node::Seq(services)) = net.get("services") {
            for s in services {
                if s.get("type").and_then(Node::as_str) == Some("dns")
                    && let Some(a) = s.get("address")
                {
                    iface.dns.read_nameservers(a, &ctx, &mut cfg.warnings);
                }
            }
        }
        if let Some(ns) = net.get("dns_nameservers") {
            iface.dns.read_nameservers(ns, &ctx, &mut cfg.warnings);
        }
    }

    for (i, svc) in list("services")?.iter().enumerate() {
        let ctx = format!("{WHAT}: services[{i}]");
        match svc.get("type").and_then(Node::as_str) {
            Some("dns") => {
                if let Some(a) = svc.get("address") {
                    cfg.dns.read_nameservers(a, &ctx, &mut cfg.warnings);
                }
            }
            other => cfg
                .warnings
                .push(format!("{ctx}: unsupported service type {other:?} ignored")),
        }
    }
    Ok(cfg)
}

fn static_address(addr: &str, mask: Option<&str>) -> Option<IpPrefix> {
    if addr.contains('/') {
        return addr.parse().ok();
    }
    let ip: IpAddr = addr.trim().parse().ok()?;
    let prefix = match mask {
        Some(m) => netmask_to_prefix(m, ip.is_ipv4())?,
        None if ip.is_ipv4() => 32,
        None => 64,
    };
    IpPrefix::new(ip, prefix)
}

fn route(r: &Node) -> Option<Route> {
    let via = r.get("gateway").and_then(parse_ip);
    let network: IpAddr = r.get("network").and_then(parse_ip)?;
    let prefix = match r.get("netmask").and_then(Node::scalar_string) {
        Some(m) => netmask_to_prefix(&m, network.is_ipv4())?,
        None => r
            .get("prefix")
            .and_then(Node::as_u64_loose)
            .and_then(|p| u8::try_from(p).ok())?,
    };
    let to = IpPrefix::new(network, prefix)?;
    if via.is_some_and(|v| v.is_ipv4() != network.is_ipv4()) {
        return None;
    }
    Some(Route {
        to,
        via,
        metric: None,
    })
}
