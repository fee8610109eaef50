//! Network configuration against cloud-init's published configs and afterburn fixtures.

mod common;

use std::collections::BTreeSet;

use cloud_metadata::Limits;
use cloud_metadata::network::{
    InterfaceKind, NetworkConfig, NetworkSource, parse_network_config, parse_network_data,
};

fn nc(rel: &str) -> NetworkConfig {
    parse_network_config(&common::read(rel), &Limits::default())
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn nd(rel: &str) -> NetworkConfig {
    parse_network_data(&common::read(rel), &Limits::default())
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn every_published_config_parses() {
    let mut count = 0;
    for dir in ["cloud-init/network-config", "cloud-init/examples"] {
        for entry in std::fs::read_dir(common::path(dir)).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if !name.ends_with(".yaml") {
                continue;
            }
            let cfg = nc(&format!("{dir}/{name}"));
            let expect = if name.contains(".v2.") {
                NetworkSource::V2
            } else {
                NetworkSource::V1
            };
            assert_eq!(cfg.source, expect, "{name}");
            assert!(
                !cfg.interfaces.is_empty() || !cfg.dns.is_empty() || !cfg.routes.is_empty(),
                "{name} is empty"
            );
            count += 1;
        }
    }
    assert!(count >= 30, "only {count} configs found");
}

#[test]
fn v1_and_v2_of_the_same_config_agree() {
    // Pairs from cloud-init's NETWORK_CONFIGS that describe the same interfaces in both
    // versions. Global v1 `nameserver` entries have no v2 equivalent, so only interfaces are
    // compared, by id.
    for name in [
        "small_v1.v1|small_v2.v2",
        "static6.v1|static6.v2",
        "dhcpv6_only.v1|dhcpv6_only.v2",
        "v4_and_v6.v1|v4_and_v6.v2",
        "small_suse_dhcp6.v1|small_suse_dhcp6.v2",
    ] {
        let (a, b) = name.split_once('|').unwrap();
        let v1 = nc(&format!("cloud-init/network-config/{a}.yaml"));
        let v2 = nc(&format!("cloud-init/network-config/{b}.yaml"));
        let ids = |c: &NetworkConfig| {
            c.interfaces
                .iter()
                .map(|i| i.id.clone())
                .collect::<BTreeSet<_>>()
        };
        assert_eq!(ids(&v1), ids(&v2), "{name}");
        for i1 in &v1.interfaces {
            let i2 = v2.interface(&i1.id).unwrap();
            assert_eq!(i1.mac, i2.mac, "{name} {}", i1.id);
            assert_eq!(
                (i1.dhcp4, i1.dhcp6),
                (i2.dhcp4, i2.dhcp6),
                "{name} {}",
                i1.id
            );
            assert_eq!(i1.addresses, i2.addresses, "{name} {}", i1.id);
            assert_eq!(
                (i1.gateway4, i1.gateway6),
                (i2.gateway4, i2.gateway6),
                "{name} {}",
                i1.id
            );
            assert_eq!(i1.routes, i2.routes, "{name} {}", i1.id);
            assert_eq!(i1.dns, i2.dns, "{name} {}", i1.id);
        }
    }
}

#[test]
fn small_v1_details() {
    let c = nc("cloud-init/network-config/small_v1.v1.yaml");
    let eth99 = c.interface("eth99").unwrap();
    assert_eq!(eth99.mac.as_deref(), Some("c0:d6:9f:2c:e8:80"));
    assert!(eth99.dhcp4);
    assert_eq!(eth99.addresses[0].to_string(), "192.168.21.3/24");
    assert_eq!(eth99.dns.search, ["barley.maas", "sach.maas"]);
    // The default route has a metric, so it stays a route instead of becoming gateway4.
    assert_eq!(eth99.gateway4, None);
    assert_eq!(eth99.routes[0].to.to_string(), "0.0.0.0/0");
    assert_eq!(eth99.routes[0].metric, Some(10000));
    assert_eq!(c.dns.nameservers.len(), 2);
    assert_eq!(c.dns.search, ["wark.maas"]);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn bonds_vlans_bridges() {
    let c = nc("cloud-init/network-config/bond_v2.v2.yaml");
    let bond = c.interface("bond0").unwrap();
    let InterfaceKind::Bond {
        members,
        mode,
        parameters,
    } = &bond.kind
    else {
        panic!("{:?}", bond.kind)
    };
    assert_eq!(members, &["bond0s0", "bond0s1"]);
    assert_eq!(mode.as_deref(), Some("active-backup"));
    assert_eq!(parameters["mii-monitor-interval"], "100");
    assert_eq!(bond.mtu, Some(9000));
    assert_eq!(bond.addresses.len(), 3);
    assert_eq!(bond.gateway4, Some("192.168.0.1".parse().unwrap()));
    assert!(c.warnings.iter().any(|w| w.contains("match.driver")));
    assert!(c.warnings.iter().any(|w| w.contains("macaddress")));

    let c = nc("cloud-init/network-config/bond_v1.v1.yaml");
    let bond = c.interface("bond0").unwrap();
    let InterfaceKind::Bond { members, mode, .. } = &bond.kind else {
        panic!()
    };
    assert_eq!(members.len(), 2);
    assert!(mode.is_some());

    let c = nc("cloud-init/network-config/vlan_v2.v2.yaml");
    assert!(
        c.interfaces
            .iter()
            .any(|i| matches!(&i.kind, InterfaceKind::Vlan { vlan_id: 99, link } if link == "en0")),
        "{:#?}",
        c.interfaces
    );

    let c = nc("cloud-init/examples/network-config-v1-bonded-vlan.yaml");
    assert!(
        c.interfaces
            .iter()
            .any(|i| matches!(i.kind, InterfaceKind::Bond { .. }))
    );
    assert!(
        c.interfaces
            .iter()
            .any(|i| matches!(i.kind, InterfaceKind::Vlan { .. }))
    );

    let c = nc("cloud-init/examples/network-config-v1-bridge.yaml");
    assert!(
        c.interfaces.iter().any(
            |i| matches!(&i.kind, InterfaceKind::Bridge { members, .. } if !members.is_empty())
        )
    );
}

#[test]
fn ipv6_modes() {
    let c = nc("cloud-init/network-config/ipv6_slaac.v1.yaml");
    assert!(c.interfaces.iter().any(|i| i.ipv6_slaac));
    let c = nc("cloud-init/network-config/dhcpv6_stateless.v1.yaml");
    assert!(c.interfaces.iter().any(|i| i.ipv6_slaac && i.dhcp6));
    let c = nc("cloud-init/network-config/static6.v1.yaml");
    assert!(
        c.interfaces
            .iter()
            .flat_map(|i| &i.addresses)
            .all(|a| a.addr.is_ipv6())
    );
}

#[test]
fn openstack_network_data_fixtures() {
    let c = nd("cloud-init/network_data/network_data.json");
    assert_eq!(c.source, NetworkSource::OpenstackNetworkData);
    assert_eq!(c.interfaces.len(), 3);
    assert!(c.interfaces.iter().all(|i| i.dhcp4 && i.mac.is_some()));
    assert_eq!(c.interfaces[2].name.as_deref(), Some("nic0"));
    assert_eq!(c.dns.nameservers.len(), 2);

    for f in ["network_data_2", "network_data_3"] {
        let c = nd(&format!("cloud-init/network_data/{f}.json"));
        assert!(!c.interfaces.is_empty(), "{f}");
        assert!(c.interfaces.iter().any(|i| !i.addresses.is_empty()), "{f}");
    }

    let c = nd("cloud-init/network_data/network_data_bond.json");
    let bond = c.interface("bond0").unwrap();
    let InterfaceKind::Bond {
        members,
        mode,
        parameters,
    } = &bond.kind
    else {
        panic!()
    };
    assert_eq!(members, &["eth0", "eth1"]);
    assert_eq!(mode.as_deref(), Some("4"));
    assert_eq!(parameters["miimon"], "100");
    assert_eq!(parameters["xmit_hash_policy"], "layer3+4");
    assert_eq!(bond.mac, None, "a bond's own MAC is not a match key");
    let vlan2 = c.interface("vlan2").unwrap();
    assert_eq!(
        vlan2.kind,
        InterfaceKind::Vlan {
            vlan_id: 602,
            link: "bond0".into()
        }
    );
    assert_eq!(vlan2.addresses[0].to_string(), "2.2.2.13/29");
    assert_eq!(vlan2.gateway4, Some("2.2.2.9".parse().unwrap()));
    let vlan3 = c.interface("vlan3").unwrap();
    assert_eq!(vlan3.routes[0].to.to_string(), "192.168.1.0/32");

    let c = nd("cloud-init/network_data/network_data_vlan.json");
    assert_eq!(
        c.interface("vlan1").unwrap().kind,
        InterfaceKind::Vlan {
            vlan_id: 602,
            link: "eth0".into()
        }
    );
    assert_eq!(c.interface("eth0").unwrap().mtu, Some(1500));
}

#[test]
fn network_data_matches_known_macs() {
    // test_configdrive.py's KNOWN_MACS: the interfaces of network_data.json are found by MAC.
    let macs: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&common::read("cloud-init/network_data/known_macs.json")).unwrap();
    let c = nd("cloud-init/network_data/network_data.json");
    let found: Vec<&str> = c
        .interfaces
        .iter()
        .filter_map(|i| {
            macs.iter()
                .find(|(mac, name)| i.matches(name.as_str().unwrap(), mac))
                .map(|(_, n)| n.as_str().unwrap())
        })
        .collect();
    assert_eq!(found, ["enp0s1", "enp0s2"]);
}

#[test]
fn unknown_items_are_warnings() {
    let c = parse_network_config(
        b"version: 1\nconfig:\n  - type: physical\n    name: eth0\n    wibble: 1\n    subnets:\n      - type: static\n        address: 10.0.0.2/8\n      - type: fancy\n  - type: infiniband\n    name: ib0\n  - type: physical\n    name: 'this-name-is-far-too-long'\n",
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(c.interfaces.len(), 1);
    assert_eq!(c.warnings.len(), 4, "{:#?}", c.warnings);
    let c = parse_network_config(
        b"version: 2\nethernets:\n  eth0: {dhcp4: yes}\nwifis:\n  wl0: {}\n",
        &Limits::default(),
    )
    .unwrap();
    assert!(c.interfaces[0].dhcp4);
    assert!(c.warnings.iter().any(|w| w.contains("wifis")));
    let c = parse_network_config(
        b"network:\n  version: 2\n  config: disabled\n",
        &Limits::default(),
    )
    .unwrap();
    assert!(c.disabled);
    assert!(parse_network_config(b"version: 3\n", &Limits::default()).is_err());
    assert!(parse_network_config(b"just a string", &Limits::default()).is_err());
}
