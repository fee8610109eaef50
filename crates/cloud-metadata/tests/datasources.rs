//! Datasources against published fixtures (cloud-init, afterburn): see tests/fixtures/README.md.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;

use cloud_metadata::ec2::{Ec2Config, Ec2Crawler};
use cloud_metadata::http::{HttpOutcome, HttpRequest, Method, drive};
use cloud_metadata::nocloud::{self, NoCloudFiles};
use cloud_metadata::openstack::{self, OpenstackConfig, OpenstackCrawler};
use cloud_metadata::{Datasource, Limits, MetadataError};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn nocloud_kubevirt_seeds() {
    let l = Limits::default();
    let cases = [
        (
            "nocloud_v1",
            "5d307ca9-b3ef-428c-8861-06e72d69f223",
            "test-nocloud-v1.foo.cloud",
        ),
        (
            "nocloud_v1_json",
            "5d307ca9-b3ef-428c-8861-06e72d69f225",
            "test-nocloud-v1-json.foo.cloud",
        ),
        (
            "nocloud_v2",
            "5d307ca9-b3ef-428c-8861-06e72d69f224",
            "test-nocloud-v2.foo.cloud",
        ),
    ];
    let mut networks = Vec::new();
    for (dir, iid, host) in cases {
        let md_bytes = common::read(&format!("afterburn/kubevirt/{dir}/meta-data"));
        let nc = common::read(&format!("afterburn/kubevirt/{dir}/network-config"));
        let ud = common::read(&format!("afterburn/kubevirt/{dir}/user-data"));
        let md = nocloud::assemble(
            NoCloudFiles {
                meta_data: &md_bytes,
                user_data: Some(&ud),
                vendor_data: None,
                network_config: Some(&nc),
                platform_id: None,
            },
            Datasource::NoCloud,
            &l,
        );
        assert_eq!(md.instance_id, iid);
        assert_eq!(md.local_hostname.as_deref(), Some(host));
        assert_eq!(md.short_hostname(), host.split('.').next());
        assert!(
            md.user_data
                .as_deref()
                .unwrap()
                .starts_with(b"#cloud-config")
        );
        let net = md.network.unwrap();
        assert_eq!(net.interfaces.len(), 3, "{dir}");
        networks.push(net);
    }
    // v1 (YAML), v1 (JSON) and v2 describe the same three NICs.
    for net in &networks {
        let eth0 = &net.interfaces[0];
        assert_eq!(
            eth0.addresses
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["192.168.1.10/24", "2001:db8::10/64"]
        );
        assert_eq!(eth0.gateway4, Some("192.168.1.1".parse().unwrap()));
        assert_eq!(eth0.gateway6, Some("2001:db8::1".parse().unwrap()));
        assert!(!eth0.dhcp4);
        let eth1 = &net.interfaces[1];
        assert!(eth1.dhcp4 && eth1.dhcp6);
        let third = &net.interfaces[2];
        assert_eq!(third.mac.as_deref(), Some("06:aa:bb:cc:dd:02"));
        assert!(third.dhcp4);
        assert!(net.all_nameservers().contains(&ip("2001:4860:4860::8844")));
        assert_eq!(net.all_nameservers().len(), 4);
    }
    assert_eq!(networks[0], networks[1], "YAML and JSON v1 agree");
}

#[test]
fn nocloud_kubevirt_static_gateways_and_routes() {
    let l = Limits::default();
    for dir in [
        "dhcp_static_gw_dns_nocloud_v1",
        "dhcp_static_gw_dns_nocloud_v2",
        "gateway_and_routes_nocloud_v1",
        "gateway_and_routes_nocloud_v2",
    ] {
        let md_bytes = common::read(&format!("afterburn/kubevirt/{dir}/meta-data"));
        let nc = common::read(&format!("afterburn/kubevirt/{dir}/network-config"));
        let md = nocloud::assemble(
            NoCloudFiles {
                meta_data: &md_bytes,
                network_config: Some(&nc),
                ..Default::default()
            },
            Datasource::NoCloud,
            &l,
        );
        let net = md.network.unwrap();
        let eth0 = &net.interfaces[0];
        assert!(eth0.dhcp4 && eth0.dhcp6, "{dir}");
        assert_eq!(
            eth0.dns.nameservers,
            [ip("8.8.8.8"), ip("8.8.4.4")],
            "{dir}"
        );
        if dir.starts_with("gateway_and_routes") {
            // Explicit gateway4/6 come first; the default routes stay routes.
            assert_eq!(eth0.gateway4, Some("192.168.1.2".parse().unwrap()), "{dir}");
            assert_eq!(eth0.gateway6, Some("2001:db8::2".parse().unwrap()), "{dir}");
            assert_eq!(eth0.routes.len(), 2, "{dir}");
        } else {
            assert_eq!(eth0.gateway4, Some("192.168.1.1".parse().unwrap()), "{dir}");
            assert_eq!(eth0.gateway6, Some("2001:db8::1".parse().unwrap()), "{dir}");
            assert!(eth0.routes.is_empty(), "{dir}");
        }
        if dir == "dhcp_static_gw_dns_nocloud_v2" {
            assert!(
                net.warnings.iter().any(|w| w.contains("dhcp4-overrides")),
                "{:?}",
                net.warnings
            );
        }
    }
}

#[test]
fn nocloud_cloud_init_seed_example() {
    let md = nocloud::parse_meta_data(
        &common::read("cloud-init/examples/seed-meta-data"),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(md.instance_id, "i-87018aed");
    assert_eq!(
        md.local_hostname.as_deref(),
        Some("domU-12-31-38-07-19-44.compute-1.internal")
    );
    assert_eq!(md.availability_zone.as_deref(), Some("us-east-1d"));
    assert_eq!(md.launch_index, Some(0));
    assert_eq!(md.instance_type.as_deref(), Some("m1.large"));
    assert_eq!(md.public_ipv4.as_deref(), Some("184.72.174.120"));
    // public-keys is {name: [key, '']}: the key is 2048-bit RSA and valid.
    assert_eq!(md.public_keys.len(), 1);
    assert!(md.public_keys[0].starts_with("ssh-rsa AAAAB3NzaC1yc2E"));
    assert_eq!(
        md.meta.get("reservation-id").map(String::as_str),
        Some("r-e2225889")
    );
}

#[test]
fn config_drive_v2_tree_from_cloud_init() {
    let mut c = OpenstackCrawler::new(OpenstackConfig::config_drive());
    let md = drive(
        &mut c,
        common::dir_driver(common::path("cloud-init/configdrive-v2")),
    )
    .unwrap();
    assert_eq!(md.datasource, Datasource::ConfigDrive);
    assert_eq!(md.instance_id, "b0fa911b-69d4-4476-bbe2-1c92bff6535c");
    assert_eq!(md.meta["openstack-version"], "latest");
    assert_eq!(md.local_hostname.as_deref(), Some("sm-foo-test.novalocal"));
    assert_eq!(md.name.as_deref(), Some("sm-foo-test"));
    assert_eq!(md.availability_zone.as_deref(), Some("nova"));
    assert_eq!(md.meta["dsmode"], "local");
    assert_eq!(md.meta["my-meta"], "my-value");
    assert_eq!(
        md.user_data.as_deref(),
        Some(&b"#!/bin/sh\necho This is user data\n"[..])
    );
    assert_eq!(md.files.len(), 2);
    assert_eq!(md.files[0].path, "/etc/foo.cfg");
    assert_eq!(
        md.files[0].content.as_deref(),
        Some(&b"This is contents of /etc/foo.cfg\n"[..])
    );
    assert_eq!(
        md.files[1].content.as_deref(),
        Some(&b"# this is /etc/bar/bar.cfg\n"[..])
    );
    // PUBKEY in test_configdrive.py is an elided placeholder ("AAAAB3NzaC1....sIkJ…"):
    // it is dropped, with a warning naming it.
    assert!(md.public_keys.is_empty());
    assert_eq!(md.problems.len(), 1, "{:?}", md.problems);
    assert!(md.problems[0].message.contains("not an SSH key"));
    assert_eq!(md.problems[0].file, "meta_data.json");
    // vendor_data.json is {"magic": ""}: no cloud-init member, so no vendor-data.
    assert_eq!(md.vendor_data, None);
    let net = md.network.expect("network_data.json");
    assert_eq!(net.interfaces.len(), 3);
    assert_eq!(
        net.dns.nameservers,
        [ip("199.204.44.24"), ip("199.204.47.54")]
    );
}

#[test]
fn config_drive_version_selection_on_the_tree() {
    let listing = std::fs::read_dir(common::path("cloud-init/configdrive-v2/openstack"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        openstack::version_order(&listing),
        ["latest", "2015-10-15", "2012-08-10"]
    );
    assert_eq!(
        openstack::select_version("2012-08-10\n2015-10-15\ncontent\n"),
        "2015-10-15"
    );
}

#[test]
fn openstack_metadata_service_files() {
    let mut c = OpenstackCrawler::new(OpenstackConfig::metadata_service());
    let md = drive(
        &mut c,
        common::dir_driver(common::path("cloud-init/openstack-metadata-service")),
    )
    .unwrap();
    assert_eq!(md.datasource, Datasource::Openstack);
    assert_eq!(md.instance_id, "b0fa911b-69d4-4476-bbe2-1c92bff6535c");
    let net = md.network.unwrap();
    assert!(net.interfaces.is_empty());
    assert_eq!(md.files.iter().filter(|f| f.content.is_some()).count(), 2);
}

#[test]
fn afterburn_config_drives() {
    let l = Limits::default();
    let md = openstack::parse_meta_data(
        &common::read("afterburn/openstack-config-drive/openstack/meta_data.json"),
        Datasource::ConfigDrive,
        &l,
    )
    .unwrap();
    assert_eq!(md.instance_id, "b3c7f4de-da0b-44ae-a42c-fa3806b61d7f");
    assert_eq!(md.availability_zone.as_deref(), Some("nova"));
    assert_eq!(
        md.random_seed.as_ref().map(Vec::len),
        Some(512),
        "random_seed is 512 bytes of base64"
    );
    assert_eq!(md.launch_index, Some(0));

    let md = openstack::parse_meta_data(
        &common::read("afterburn/openstack-config-drive/openstack-config-drive2/openstack/latest/meta_data.json"),
        Datasource::ConfigDrive,
        &l,
    )
    .unwrap();
    assert_eq!(md.instance_id, "b3f43d9c-9198-4cd4-ac9f-bed14960794b");
    assert_eq!(md.local_hostname, None);

    let md = openstack::parse_meta_data(
        &common::read("afterburn/openstack-metadata/openstack/2012-08-10/meta_data.json"),
        Datasource::Openstack,
        &l,
    )
    .unwrap();
    assert!(!md.instance_id.is_empty());

    // kubevirt config drive: static v4+v6 on eth0, DHCP on eth1, match-by-MAC on eth2.
    let mut c = OpenstackCrawler::new(OpenstackConfig::config_drive());
    let md = drive(
        &mut c,
        common::dir_driver(common::path("afterburn/kubevirt/config_drive")),
    )
    .unwrap();
    assert_eq!(md.instance_id, "5d307ca9-b3ef-428c-8861-06e72d69f223");
    assert_eq!(md.instance_type.as_deref(), Some("some_type"));
    // The fixture's hostname has an underscore, which RFC 1123 does not allow: dropped,
    // with a problem naming it; everything else is kept.
    assert_eq!(md.local_hostname, None);
    assert!(
        md.problems
            .iter()
            .any(|p| p.field.as_deref() == Some("hostname")
                && p.message.contains("test_instance-kubevirt.foo.cloud")
                && p.message.contains("'_'")),
        "{:?}",
        md.problems
    );
    assert_eq!(md.public_keys.len(), 1);
    let net = md.network.unwrap();
    let eth0 = net.interface("eth0").unwrap();
    assert_eq!(eth0.name.as_deref(), Some("eth0"));
    assert_eq!(
        eth0.addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["192.168.1.10/24", "2001:db8::10/64"]
    );
    assert_eq!(eth0.gateway4, Some("192.168.1.1".parse().unwrap()));
    assert_eq!(eth0.gateway6, Some("2001:db8::1".parse().unwrap()));
    let eth1 = net.interface("eth1").unwrap();
    assert!(eth1.dhcp4 && eth1.dhcp6);
    let eth2 = net.interface("eth2").unwrap();
    assert_eq!(eth2.name, None);
    assert!(eth2.matches("ens5", "06:AA:BB:CC:DD:02"));

    let md = openstack::assemble_config_drive(
        &common::read("afterburn/kubevirt/dhcp_static_gw_dns/openstack/latest/meta_data.json"),
        None,
        None,
        Some(&common::read(
            "afterburn/kubevirt/dhcp_static_gw_dns/openstack/latest/network_data.json",
        )),
        &l,
    );
    let net = md.network.unwrap();
    let eth0 = &net.interfaces[0];
    assert!(eth0.dhcp4 && eth0.dhcp6);
    assert_eq!(eth0.gateway4, Some("192.168.1.1".parse().unwrap()));
    assert_eq!(net.dns.nameservers, [ip("8.8.8.8"), ip("8.8.4.4")]);
}

/// Serves a cloud-init test_ec2.py metadata tree the way IMDS does.
struct FakeImds {
    tree: serde_json::Value,
    versions: Vec<&'static str>,
    user_data: Option<Vec<u8>>,
    log: Vec<String>,
}

impl FakeImds {
    fn answer(&mut self, req: &HttpRequest) -> HttpOutcome {
        self.log.push(format!("{} {}", req.method, req.path));
        if req.method == Method::Put {
            return HttpOutcome::ok("fake-token");
        }
        if req.header("X-aws-ec2-metadata-token") != Some("fake-token") {
            return HttpOutcome::status(401);
        }
        let mut segs = req.path.trim_start_matches('/').splitn(2, '/');
        let (version, rest) = (segs.next().unwrap_or(""), segs.next().unwrap_or(""));
        if !self.versions.contains(&version) {
            return HttpOutcome::status(404);
        }
        if rest == "user-data" {
            return self
                .user_data
                .clone()
                .map_or(HttpOutcome::status(404), HttpOutcome::ok);
        }
        let Some(rest) = rest.strip_prefix("meta-data/") else {
            return HttpOutcome::status(404);
        };
        if let Some(keys) = rest.strip_prefix("public-keys/") {
            let pk = self.tree["public-keys"].as_object().unwrap();
            if keys.is_empty() {
                let list: Vec<String> = pk
                    .keys()
                    .enumerate()
                    .map(|(i, k)| format!("{i}={k}"))
                    .collect();
                return HttpOutcome::ok(list.join("\n"));
            }
            let idx: usize = keys.split('/').next().unwrap().parse().unwrap();
            let v = pk.values().nth(idx).unwrap();
            let text = v
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap())
                .collect::<Vec<_>>()
                .join("\n");
            return HttpOutcome::ok(text);
        }
        let mut node = &self.tree;
        for seg in rest.trim_end_matches('/').split('/') {
            match node.get(seg) {
                Some(n) => node = n,
                None => return HttpOutcome::status(404),
            }
        }
        match node {
            serde_json::Value::String(s) => HttpOutcome::ok(s.clone()),
            serde_json::Value::Object(m) => HttpOutcome::ok(
                m.iter()
                    .map(|(k, v)| {
                        if v.is_object() {
                            format!("{k}/")
                        } else {
                            k.clone()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            other => HttpOutcome::ok(other.to_string()),
        }
    }
}

#[test]
fn ec2_crawl_of_cloud_init_default_metadata() {
    let tree: serde_json::Value =
        serde_json::from_slice(&common::read("cloud-init/ec2/default-metadata.json")).unwrap();
    let mut fake = FakeImds {
        tree,
        versions: vec!["2016-09-02", "2009-04-04"],
        user_data: Some(b"#!/bin/sh\necho hi\n".to_vec()),
        log: Vec::new(),
    };
    let mut c = Ec2Crawler::new(Ec2Config::default());
    let md = drive(&mut c, |r| fake.answer(r)).unwrap();
    assert_eq!(c.version(), Some("2016-09-02"));
    assert!(c.uses_token());
    assert_eq!(md.datasource, Datasource::Ec2);
    assert_eq!(md.instance_id, "i-0a33f80f09c96477f");
    assert_eq!(
        md.local_hostname.as_deref(),
        Some("ip-172-3-3-15.us-east-2.compute.internal")
    );
    assert_eq!(md.availability_zone.as_deref(), Some("us-east-2b"));
    assert_eq!(md.instance_type.as_deref(), Some("t2.small"));
    assert_eq!(md.local_ipv4.as_deref(), Some("172.3.3.15"));
    assert_eq!(md.public_ipv4.as_deref(), Some("13.59.77.202"));
    assert_eq!(md.launch_index, Some(0));
    assert_eq!(md.user_data.as_deref(), Some(&b"#!/bin/sh\necho hi\n"[..]));
    // The fixture's key is a truncated placeholder ("AAAAB3Nz....w=="): dropped with a warning.
    assert!(md.public_keys.is_empty());
    assert!(
        md.problems
            .iter()
            .any(|p| p.field.as_deref() == Some("public-keys/0/openssh-key")),
        "{:?}",
        md.problems
    );
    assert_eq!(fake.log[0], "PUT /latest/api/token");
    assert!(fake.log.iter().all(|l| !l.contains("security-credentials")));
    let q = md.to_query_json();
    assert_eq!(q["instance-id"], "i-0a33f80f09c96477f");
    assert_eq!(q["hostname"], "ip-172-3-3-15");
}

#[test]
fn ec2_unreachable_and_odd_statuses() {
    for (outcome, retryable) in [
        (HttpOutcome::Failed("connection refused".into()), true),
        (HttpOutcome::status(500), true),
        (HttpOutcome::status(429), true),
        (HttpOutcome::status(301), false),
        (HttpOutcome::status(403), false),
    ] {
        let mut c = Ec2Crawler::new(Ec2Config::default());
        let o = outcome.clone();
        // Token request gets the same outcome (falls back to v1), then instance-id fails.
        let err = drive(&mut c, move |_| o.clone()).unwrap_err();
        assert_eq!(err.is_retryable(), retryable, "{outcome:?}: {err}");
    }
    // Every version 404: a clear protocol error.
    let mut c = Ec2Crawler::new(Ec2Config::default());
    let err = drive(&mut c, |_| HttpOutcome::status(404)).unwrap_err();
    assert!(matches!(err, MetadataError::Protocol { .. }));
    assert!(err.to_string().contains("2009-04-04"));
}

#[test]
fn ec2_oversized_user_data_is_dropped() {
    let tree: serde_json::Value =
        serde_json::from_slice(&common::read("cloud-init/ec2/default-metadata.json")).unwrap();
    let mut fake = FakeImds {
        tree,
        versions: vec!["latest"],
        user_data: Some(vec![b'x'; 2048]),
        log: Vec::new(),
    };
    let limits = Limits {
        max_user_data_bytes: 1024,
        ..Limits::default()
    };
    let mut c = Ec2Crawler::new(Ec2Config {
        versions: vec!["latest".into()],
        limits,
        ..Ec2Config::default()
    });
    // Degraded, not discarded: the user-data is dropped with a problem, the rest is kept.
    let md = drive(&mut c, |r| fake.answer(r)).unwrap();
    assert_eq!(md.user_data, None);
    assert_eq!(md.instance_id, "i-0a33f80f09c96477f");
    assert_eq!(
        md.problems[0].to_string(),
        "user-data: 2 KiB exceeds the 1 KiB limit; ignored"
    );
}

#[test]
fn nocloud_net_seed_served_from_a_directory() {
    let seed = nocloud::NoCloudSeed::from_cmdline(
        "console=ttyS0 ds=nocloud-net;s=http://10.0.2.2/kv/;i=override-iid",
    )
    .unwrap()
    .unwrap();
    let mut c = nocloud::NoCloudCrawler::new(
        Datasource::NoCloudNet,
        Limits::default(),
        std::time::Duration::from_secs(2),
    );
    let mut md = drive(
        &mut c,
        common::dir_driver(common::path("afterburn/kubevirt/nocloud_v2")),
    )
    .unwrap();
    seed.apply_overrides(&mut md);
    assert_eq!(md.instance_id, "override-iid");
    assert_eq!(md.datasource, Datasource::NoCloudNet);
    assert!(md.network.is_some());
    let json = serde_json::to_string(&md).unwrap();
    let back: cloud_metadata::InstanceMetadata = serde_json::from_str(&json).unwrap();
    assert_eq!(back, md);
}

#[test]
fn query_view_of_a_config_drive() {
    let mut c = OpenstackCrawler::new(OpenstackConfig::config_drive());
    let md = drive(
        &mut c,
        common::dir_driver(common::path("cloud-init/configdrive-v2")),
    )
    .unwrap();
    let mut got = BTreeMap::new();
    for key in cloud_metadata::QUERY_KEYS {
        if let Some(v) = md.query(key).unwrap() {
            got.insert(*key, String::from_utf8_lossy(v.as_bytes()).into_owned());
        }
    }
    assert_eq!(got["instance-id"], "b0fa911b-69d4-4476-bbe2-1c92bff6535c");
    assert_eq!(got["hostname"], "sm-foo-test");
    assert_eq!(got["availability-zone"], "nova");
    assert_eq!(got["datasource"], "configdrive");
    assert!(!got.contains_key("public-keys"));
    assert!(
        got["problems"].contains("not an SSH key"),
        "{}",
        got["problems"]
    );
    assert!(got["network-config"].contains("fa:16:3e:69:b0:58"));
    assert_eq!(
        md.query("meta.my-meta").unwrap().unwrap().as_bytes(),
        b"my-value"
    );
}
