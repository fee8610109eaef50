//! Hostile and broken input: every parser must return an error or warnings, never panic,
//! and stay within its limits. Fixtures in tests/fixtures/malformed/ (written for virga).

mod common;

use cloud_metadata::cloud_config::parse_cloud_config;
use cloud_metadata::network::{parse_network_config, parse_network_data};
use cloud_metadata::{Datasource, Limits, MetadataError, nocloud, openstack, parse_user_data};

fn l() -> Limits {
    Limits::default()
}

#[test]
fn broken_documents_are_errors() {
    let err = openstack::parse_meta_data(
        &common::read("malformed/broken-meta_data.json"),
        Datasource::ConfigDrive,
        &l(),
    )
    .unwrap_err();
    assert!(matches!(err, MetadataError::Json { .. }), "{err}");
    let err = nocloud::parse_meta_data(&common::read("malformed/broken-meta-data.yaml"), &l())
        .unwrap_err();
    assert!(matches!(err, MetadataError::Yaml { .. }), "{err}");
    let err = nocloud::parse_meta_data(&common::read("malformed/missing-instance-id.yaml"), &l())
        .unwrap_err();
    assert!(
        matches!(
            err,
            MetadataError::MissingField {
                field: "instance-id",
                ..
            }
        ),
        "{err}"
    );
    let err = openstack::parse_meta_data(
        &common::read("malformed/missing-uuid.json"),
        Datasource::Openstack,
        &l(),
    )
    .unwrap_err();
    assert!(
        matches!(err, MetadataError::MissingField { field: "uuid", .. }),
        "{err}"
    );
    let err =
        parse_network_data(&common::read("malformed/broken-network_data.json"), &l()).unwrap_err();
    assert!(matches!(err, MetadataError::InvalidField { .. }), "{err}");
}

#[test]
fn binary_junk_everywhere() {
    let junk = common::read("malformed/binary-junk.bin");
    assert!(nocloud::parse_meta_data(&junk, &l()).is_err());
    assert!(openstack::parse_meta_data(&junk, Datasource::Openstack, &l()).is_err());
    assert!(openstack::parse_vendor_data(&junk, &l()).is_err());
    assert!(parse_network_config(&junk, &l()).is_err());
    assert!(parse_network_data(&junk, &l()).is_err());
    assert!(parse_cloud_config(&junk, &l()).is_err());
    // Binary user-data is a plain part (ignored with a warning), not an error.
    let ud = parse_user_data(&junk, &l()).unwrap();
    assert!(ud.parts.iter().all(|p| !p.kind.is_supported()));
    assert!(!ud.warnings.is_empty());
}

#[test]
fn gzip_bomb_is_stopped_at_the_limit() {
    let bomb = common::read("malformed/gzip-bomb.gz");
    assert!(
        bomb.len() < 100 * 1024,
        "64 MiB of zeros in {} bytes",
        bomb.len()
    );
    // 1000:1 trips the ratio limit long before the 16 MiB output cap.
    let err = parse_user_data(&bomb, &l()).unwrap_err();
    assert!(
        matches!(err, MetadataError::CompressionRatio { ratio: 100, .. }),
        "{err}"
    );
    let err = parse_user_data(
        &bomb,
        &Limits {
            max_decompression_ratio: 10_000,
            ..l()
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, MetadataError::TooLarge { limit, .. } if limit == 16 << 20),
        "{err}"
    );
    let ok = parse_user_data(
        &bomb,
        &Limits {
            max_decoded_bytes: 80 << 20,
            max_decompression_ratio: 10_000,
            ..l()
        },
    )
    .unwrap();
    assert_eq!(ok.parts.len(), 1);
}

#[test]
fn deep_structures_are_bounded() {
    let err = parse_user_data(&common::read("malformed/deep-mime.txt"), &l()).unwrap_err();
    assert!(matches!(err, MetadataError::Mime { .. }), "{err}");
    let ok = parse_user_data(
        &common::read("malformed/deep-mime.txt"),
        &Limits {
            max_user_data_depth: 64,
            ..l()
        },
    )
    .unwrap();
    assert_eq!(ok.parts[0].content, b"#!/bin/sh\necho deep\n");
    let err = parse_network_data(&common::read("malformed/deep-json.json"), &l()).unwrap_err();
    assert!(
        matches!(
            err,
            MetadataError::TooDeep { .. } | MetadataError::Json { .. }
        ),
        "{err}"
    );
    let err =
        nocloud::parse_meta_data(&common::read("malformed/deep-yaml.yaml"), &l()).unwrap_err();
    assert!(
        matches!(
            err,
            MetadataError::TooDeep { .. } | MetadataError::Yaml { .. }
        ),
        "{err}"
    );
}

#[test]
fn yaml_alias_bomb_is_bounded() {
    let bomb = common::read("malformed/yaml-alias-bomb.yaml");
    let err = parse_cloud_config(&bomb, &l()).unwrap_err();
    assert!(
        matches!(
            err,
            MetadataError::TooManyNodes { .. } | MetadataError::Yaml { .. }
        ),
        "{err}"
    );
}

#[test]
fn huge_documents_are_refused_before_parsing() {
    let mut big = b"instance-id: x\nfiller: '".to_vec();
    big.resize(2 << 20, b'a');
    big.extend_from_slice(b"'\n");
    let err = nocloud::parse_meta_data(&big, &l()).unwrap_err();
    assert!(
        matches!(err, MetadataError::TooLarge { limit, .. } if limit == 1 << 20),
        "{err}"
    );
    let huge_ud = vec![b'#'; (16 << 20) + 1];
    assert!(matches!(
        parse_user_data(&huge_ud, &l()),
        Err(MetadataError::TooLarge { .. })
    ));
    // Raising the limit makes the same document acceptable.
    let md = nocloud::parse_meta_data(
        &big,
        &Limits {
            max_metadata_bytes: 4 << 20,
            ..l()
        },
    )
    .unwrap();
    assert_eq!(md.instance_id, "x");
}

#[test]
fn write_files_traversal_is_dropped() {
    let cc =
        parse_cloud_config(&common::read("malformed/write-files-traversal.yaml"), &l()).unwrap();
    let paths: Vec<&str> = cc.write_files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["/etc/cron.d/ok"]);
    let w = cc.warnings.join("\n");
    for needle in [
        "contains '..'",
        "not absolute",
        "/proc",
        "names a directory",
        "rot13",
        "permissions",
    ] {
        assert!(w.contains(needle), "no warning with {needle:?}: {w}");
    }
}

#[test]
fn invalid_ssh_keys_are_dropped_with_warnings() {
    let md =
        nocloud::parse_meta_data(&common::read("malformed/invalid-ssh-keys.yaml"), &l()).unwrap();
    assert_eq!(md.public_keys.len(), 1);
    assert!(md.public_keys[0].ends_with("valid@example"));
    assert_eq!(md.problems.len(), 4, "{:#?}", md.problems);
    assert!(
        md.problems.iter().all(|p| p.file == "meta-data"
            && p.field
                .as_deref()
                .is_some_and(|f| f.starts_with("public-keys"))),
        "{:#?}",
        md.problems
    );
}

#[test]
fn odd_network_config_yields_warnings_not_errors() {
    let c =
        parse_network_config(&common::read("malformed/weird-network-config.yaml"), &l()).unwrap();
    let eth0 = c.interface("eth0").unwrap();
    assert_eq!(eth0.mac, None);
    assert_eq!(
        eth0.addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["fe80::1/64"]
    );
    assert_eq!(eth0.gateway4, None);
    assert_eq!(eth0.mtu, None);
    assert!(eth0.routes.is_empty());
    assert!(c.interface("bad/name").is_none());
    assert!(c.interface("v1").is_none());
    assert!(c.warnings.len() >= 9, "{:#?}", c.warnings);
}
