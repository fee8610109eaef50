//! User-data and cloud-config against cloud-init's documentation examples and test data.

mod common;

use cloud_metadata::cloud_config::{
    Command, ContentEncoding, PowerMode, UserSpec, parse_cloud_config,
};
use cloud_metadata::sshkey::{filter_public_keys, parse_public_key};
use cloud_metadata::user_data::PartKind;
use cloud_metadata::write_files::{decode_content, plan};
use cloud_metadata::{CloudConfig, Limits, parse_user_data};

fn ud(rel: &str) -> cloud_metadata::UserData {
    parse_user_data(&common::read(rel), &Limits::default()).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn every_example_is_classified() {
    let mut seen = 0;
    for entry in std::fs::read_dir(common::path("cloud-init/examples")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !name.ends_with(".txt") {
            continue;
        }
        seen += 1;
        let u = ud(&format!("cloud-init/examples/{name}"));
        let first = u.parts.first().map(|p| p.kind.clone());
        let expected = match name.as_str() {
            "boothook.txt" => PartKind::CloudBoothook,
            "include.txt" => PartKind::Include,
            "include-once.txt" => PartKind::IncludeOnce,
            "part-handler.txt" | "part-handler-v2.txt" => PartKind::PartHandler,
            "plain-ignored.txt" => PartKind::Plain,
            "user-script.txt" => PartKind::ShellScript,
            "kernel-command-line.txt" => PartKind::Plain,
            n if n.starts_with("cloud-config-archive") => {
                assert!(u.parts.len() >= 2, "{name}: archive not expanded");
                continue;
            }
            n if n.starts_with("cloud-config") => PartKind::CloudConfig,
            other => panic!("unexpected example {other}"),
        };
        assert_eq!(first, Some(expected), "{name}");
    }
    assert!(seen >= 35, "{seen}");
}

#[test]
fn every_cloud_config_example_parses() {
    for entry in std::fs::read_dir(common::path("cloud-init/examples")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !name.starts_with("cloud-config") || name.contains("archive") {
            continue;
        }
        let data = common::read(&format!("cloud-init/examples/{name}"));
        let cc =
            parse_cloud_config(&data, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Every unknown key is also reported as a warning.
        for k in &cc.unknown_keys {
            assert!(
                cc.warnings.iter().any(|w| w.contains(&format!("{k:?}"))),
                "{name}: {k}"
            );
        }
    }
}

#[test]
fn write_files_example() {
    let cc = parse_cloud_config(
        &common::read("cloud-init/examples/cloud-config-write-files.txt"),
        &Limits::default(),
    )
    .unwrap();
    let paths: Vec<&str> = cc.write_files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/etc/sysconfig/selinux",
            "/etc/sysconfig/samba",
            "/bin/arch",
            "/usr/bin/hello"
        ]
    );
    assert_eq!(cc.write_files[0].encoding, ContentEncoding::Base64);
    assert_eq!(cc.write_files[0].owner, "root");
    assert_eq!(cc.write_files[0].group.as_deref(), Some("root"));
    assert_eq!(cc.write_files[2].permissions, 0o555);
    let l = Limits::default();
    // The samba entry is text.
    assert!(
        decode_content(&cc.write_files[1], &l)
            .unwrap()
            .starts_with(b"# My new /etc/sysconfig/samba file")
    );
    // The gzip entry is a YAML !!binary: base64 text, then gzip.
    let hello = plan(&cc.write_files[3], &l).unwrap();
    assert_eq!(hello.mode, 0o755);
    assert_eq!(hello.components, ["usr", "bin", "hello"]);
    assert!(
        hello.content.starts_with(b"#!/bin/sh"),
        "{:?}",
        String::from_utf8_lossy(&hello.content)
    );
    // The selinux entry's base64 is elided ("...") in the example: decoding reports it.
    assert!(plan(&cc.write_files[0], &l).is_err());
}

#[test]
fn users_and_groups_example() {
    let cc = parse_cloud_config(
        &common::read("cloud-init/examples/cloud-config-user-groups.txt"),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(cc.users[0], UserSpec::Default);
    let names: Vec<String> = cc
        .users
        .iter()
        .filter_map(|u| match u {
            UserSpec::User(u) => Some(u.name.clone()),
            UserSpec::Default => None,
        })
        .collect();
    assert_eq!(
        names,
        [
            "foobar",
            "barfoo",
            "testuser",
            "cloudy",
            "fizzbuzz",
            "nosshlogins"
        ]
    );
    let UserSpec::User(barfoo) = &cc.users[2] else {
        panic!()
    };
    assert_eq!(barfoo.groups, ["users", "admin"]);
    assert_eq!(barfoo.sudo, ["ALL=(ALL) NOPASSWD:ALL"]);
    assert!(barfoo.lock_passwd);
    assert_eq!(barfoo.ssh_authorized_keys.len(), 1);
    let UserSpec::User(foobar) = &cc.users[1] else {
        panic!()
    };
    assert!(!foobar.lock_passwd);
    assert!(foobar.hashed_passwd.as_deref().unwrap().starts_with("$6$"));
    assert_eq!(
        cc.groups
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>(),
        ["admingroup", "cloud-users"]
    );
    assert_eq!(cc.groups[0].members, ["root", "sys"]);
    let w = cc.warnings.join("\n");
    for unsupported in [
        "ssh_import_id",
        "selinux_user",
        "snapuser",
        "ssh_redirect_user",
    ] {
        assert!(w.contains(unsupported), "no warning for {unsupported}: {w}");
    }
}

#[test]
fn commands_and_power_state_examples() {
    let l = Limits::default();
    let run = parse_cloud_config(
        &common::read("cloud-init/examples/cloud-config-run-cmds.txt"),
        &l,
    )
    .unwrap();
    assert!(!run.runcmd.is_empty());
    assert!(
        run.runcmd
            .iter()
            .any(|c| matches!(c, Command::Argv(a) if a.len() > 1))
    );
    assert!(run.runcmd.iter().any(|c| matches!(c, Command::Shell(_))));
    let boot = parse_cloud_config(
        &common::read("cloud-init/examples/cloud-config-boot-cmds.txt"),
        &l,
    )
    .unwrap();
    assert!(boot.bootcmd.len() >= 2);
    let all =
        parse_cloud_config(&common::read("cloud-init/examples/cloud-config.txt"), &l).unwrap();
    assert!(!all.unknown_keys.is_empty());
    if let Some(ps) = &all.power_state {
        assert!(matches!(
            ps.mode,
            PowerMode::Poweroff | PowerMode::Reboot | PowerMode::Halt
        ));
    }
}

#[test]
fn multipart_emails_and_launch_index() {
    // filter_cloud_multipart_1: a single text/plain MIME message with a cloud-config body.
    let u = ud("cloud-init/multipart/filter_cloud_multipart_1.email");
    assert_eq!(u.parts.len(), 1);
    assert_eq!(u.parts[0].kind, PartKind::CloudConfig);
    assert_eq!(
        u.parts[0].launch_index,
        Some(2),
        "from the launch-index key in the YAML"
    );
    // …_header: the Launch-Index header wins.
    let u = ud("cloud-init/multipart/filter_cloud_multipart_header.email");
    assert_eq!(u.parts[0].launch_index, Some(5));
    // …_2: a real multipart with several parts.
    let u = ud("cloud-init/multipart/filter_cloud_multipart_2.email");
    assert!(u.parts.len() >= 2, "{:?}", u.parts);
    // The archive: launch-index per entry, "1" as a string too.
    let u = ud("cloud-init/multipart/filter_cloud_multipart.yaml");
    let idx: Vec<Option<u64>> = u.parts.iter().map(|p| p.launch_index).collect();
    assert_eq!(
        idx,
        [
            Some(3),
            Some(4),
            Some(0),
            Some(3),
            Some(2),
            Some(2),
            Some(1),
            Some(1)
        ]
    );
    assert_eq!(u.for_launch_index(Some(3)).count(), 2);
    // `plain/text` entries are an unknown type: kept as Other with a warning.
    assert!(matches!(&u.parts[2].kind, PartKind::Other(t) if t == "plain/text"));
    let cc = CloudConfig::from_user_data(&u, Some(3), &Limits::default());
    assert_eq!(cc.unknown_keys, ["blah"]);
    // user_data.1.txt: cloud-config with an integer permission (493 = 0755).
    let cc = parse_cloud_config(
        &common::read("cloud-init/multipart/user_data.1.txt"),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(cc.write_files[0].permissions, 0o755);
}

#[test]
fn vendor_and_user_data_merge() {
    let l = Limits::default();
    let kubevirt = ud("afterburn/kubevirt/nocloud_v2/user-data");
    let mut cc = CloudConfig::from_user_data(
        &parse_user_data(
            b"#cloud-config\nhostname: vendor\nruncmd: [vendor-cmd]\n",
            &l,
        )
        .unwrap(),
        None,
        &l,
    );
    cc.merge(CloudConfig::from_user_data(&kubevirt, None, &l));
    assert_eq!(cc.hostname.as_deref(), Some("test-nocloud-v2"));
    assert_eq!(cc.runcmd, [Command::Shell("vendor-cmd".into())]);
    assert_eq!(cc.ssh_authorized_keys.len(), 1);
}

#[test]
fn real_ssh_keys_of_every_type_validate() {
    let text = String::from_utf8(common::read("ssh/authorized_keys")).unwrap();
    for line in text.lines() {
        let k = parse_public_key(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(k.to_line(), line);
    }
    let (good, warnings) = filter_public_keys([text.as_str()]);
    assert_eq!(good.len(), 7);
    assert!(warnings.is_empty());
}
