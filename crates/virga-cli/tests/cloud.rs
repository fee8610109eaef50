//! End-to-end: every datasource booted in QEMU, user-data and cloud-config applied, per-instance
//! semantics across reboots on a state disk, and bad metadata that must not stop the boot.

mod common;

use std::time::Duration;

use common::*;
use vm_runner::DriveKind;
use vm_runner::instance::Datasource;

fn assert_identity(g: &mut Guest, hostname: &str) {
    assert_eq!(g.sh1("hostname"), hostname);
    let keys = g.sh1("cat /root/.ssh/authorized_keys");
    assert!(keys.contains("virga-e2e"), "authorized_keys: {keys}");
    assert_eq!(g.sh1("stat -c %a /root/.ssh/authorized_keys"), "600");
}

#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn nocloud_iso_per_instance_script_runs_once_per_instance_id() {
    let state_dir = tempfile::tempdir().unwrap();
    let mut o = instance(Datasource::NoCloud);
    o.hostname = "nc-iso".into();
    o.state = Some(state_dir.path().join("state.img"));
    o.instance_id = Some("i-first".into());
    o.user_data = Some(b"#!/bin/sh\necho run >> /var/lib/virga/count\n".to_vec());

    let mut g = boot_instance(&o, "");
    assert_identity(&mut g, "nc-iso");
    assert_eq!(g.sh1("wc -l < /var/lib/virga/count"), "1");
    let s = g.status();
    let ds = s.datasource.clone().unwrap();
    assert_eq!(
        (ds.name.as_str(), ds.instance_id.as_str(), ds.new_instance),
        ("nocloud", "i-first", true)
    );
    assert!(ds.source.contains("iso9660 cidata"), "{ds:?}");
    assert!(s.persistent_state);
    let saved_seed = |g: &Guest| g.vm.lines().iter().any(|l| l.contains("saved seed"));
    assert!(!saved_seed(&g), "a new state disk has no random seed yet");
    g.poweroff();

    // Same instance, same state disk: the script does not run again, and the random seed the
    // first boot saved on the disk is mixed in (the rng stage runs after the state stage).
    let mut g = boot_instance(&o, "");
    assert!(saved_seed(&g), "{}", g.vm.lines().join("\n"));
    assert_eq!(g.sh1("wc -l < /var/lib/virga/count"), "1");
    let s = g.status();
    assert!(!s.datasource.unwrap().new_instance);
    let actions = s.user_data.unwrap().actions;
    assert!(
        actions
            .iter()
            .any(|a| a.starts_with("scripts-user.part-000: skipped")),
        "{actions:?}"
    );
    g.poweroff();

    // A new instance id on the same disk: it runs again.
    o.instance_id = Some("i-second".into());
    let mut g = boot_instance(&o, "");
    assert_eq!(g.sh1("wc -l < /var/lib/virga/count"), "2");
    assert!(g.status().datasource.unwrap().new_instance);
    g.poweroff();

    // `virga.state=none`: the disk is there but not looked for, so this boot remembers
    // nothing: a first boot, whose script runs once more into a count file on the tmpfs.
    let mut g = boot_instance(&o, "virga.state=none");
    let s = g.status();
    assert!(!s.persistent_state);
    let state = s.stages.iter().find(|st| st.name == "state").unwrap();
    assert_eq!(state.result, boot_contract::StageResult::Skipped);
    assert!(g.status().datasource.unwrap().new_instance);
    assert_eq!(g.sh1("wc -l < /var/lib/virga/count"), "1");
    g.poweroff();
}

#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn nitro_like_machine_with_nvme_disks_and_no_ide() {
    // As on EC2 Nitro: a PCIe machine without an IDE controller, disks on NVMe (built into the
    // cloud kernel, found on a work queue after boot begins).
    let state_dir = tempfile::tempdir().unwrap();
    let mut o = instance(Datasource::NoCloud);
    o.hostname = "nitro-like".into();
    o.seed_format = seed_image::SeedFormat::Vfat;
    o.seed_bus = DriveKind::Nvme;
    o.state = Some(state_dir.path().join("state.img"));
    o.state_bus = DriveKind::Nvme;
    let mut g = boot_instance_on(&o, "", vm_runner::Machine::Q35);
    assert_identity(&mut g, "nitro-like");
    let s = g.status();
    assert!(s.persistent_state, "{:?}", s.warnings);
    assert!(s.datasource.unwrap().source.contains("vfat cidata"));
    let lines = g.vm.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("persistent state on /dev/nvme")),
        "{}",
        lines.join("\n")
    );
    if lean_kernel() {
        // Every driver is built in: nothing to load, nothing to wait for.
        assert!(
            !lines.iter().any(|l| l.contains("no device here for")),
            "{}",
            lines.join("\n")
        );
        g.poweroff();
        return;
    }
    // No stage waited for the IDE or other clouds' drivers: nothing here for them to drive.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("no device here for libata, ata_piix, ena, gve;")),
        "{}",
        lines.join("\n")
    );
    // They are still loaded in the background (hot-plug).
    let loaded = g.sh1("for i in $(seq 60); do grep -qE '\"modules_ms\": [0-9]' /run/virga/status.json && break; sleep 0.5; done; grep -c -E '^(ata_piix|ena|gve) .* Live ' /proc/modules");
    if loaded != "3" {
        let modules = g
            .sh("cat /proc/modules; cat /run/virga/status.json")
            .join("\n");
        panic!(
            "{loaded} of ata_piix, ena, gve loaded:\n{modules}\nconsole:\n{}",
            g.vm.lines().join("\n")
        );
    }
    g.poweroff();
}

#[test]
#[ignore = "builds the default image; run with --include-ignored (./dev test)"]
fn a_cdrom_on_q35_is_refused_with_the_fix() {
    let out = default_image();
    let o = run(virga()
        .args([
            "run",
            "--machine",
            "q35",
            "--expect-ready",
            "--quiet",
            "--out",
        ])
        .arg(&out));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--seed-bus virtio or nvme"), "{err}");
}

#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn nocloud_vfat_on_virtio_and_no_state_disk() {
    let mut o = instance(Datasource::NoCloud);
    o.hostname = "nc-fat".into();
    o.seed_format = seed_image::SeedFormat::Vfat;
    o.seed_bus = DriveKind::Virtio;
    let mut g = boot_instance(&o, "");
    assert_identity(&mut g, "nc-fat");
    let s = g.status();
    assert!(!s.persistent_state);
    assert!(s.datasource.unwrap().source.contains("vfat cidata"));
    g.poweroff();
}

#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn configdrive_with_static_network_data() {
    let mut o = instance(Datasource::ConfigDrive);
    o.hostname = "cd-box.example.org".into();
    // QEMU's default MAC; slirp's network is 10.0.2.0/24 with the gateway at .2.
    // A VLAN on top, as OpenStack describes tagged networks: the image carries 8021q.
    o.network_config = Some(
        br#"{"links":[{"id":"l0","type":"phy","ethernet_mac_address":"52:54:00:12:34:56","mtu":1400},
                      {"id":"vlan42","name":"vlan42","type":"vlan","vlan_link":"l0","vlan_id":42,
                       "vlan_mac_address":"52:54:00:12:34:57"}],
            "networks":[{"id":"n0","link":"l0","type":"ipv4","ip_address":"10.0.2.77","netmask":"255.255.255.0",
                         "routes":[{"network":"0.0.0.0","netmask":"0.0.0.0","gateway":"10.0.2.2"}]},
                        {"id":"n1","link":"vlan42","type":"ipv4","ip_address":"192.168.42.5","netmask":"255.255.255.0"}],
            "services":[{"type":"dns","address":"10.0.2.3"}]}"#
            .to_vec(),
    );
    let mut g = boot_instance(&o, "");
    assert_identity(&mut g, "cd-box");
    let addrs = g.sh1("ip -4 -o addr show dev eth0");
    assert!(addrs.contains("10.0.2.77/24"), "{addrs}");
    assert!(g.sh1("cat /sys/class/net/eth0/mtu") == "1400");
    assert!(g.sh1("ip route").contains("default via 10.0.2.2"));
    let vlan = g.sh1("ip -4 -o addr show dev vlan42; cat /proc/net/vlan/config");
    assert!(
        vlan.contains("192.168.42.5/24") && vlan.contains("vlan42") && vlan.contains("| 42"),
        "{vlan}"
    );
    let resolv = g.sh1("cat /etc/resolv.conf; ls -la /etc/resolv.conf; virga status");
    assert!(resolv.contains("nameserver 10.0.2.3"), "{resolv}");
    assert!(
        g.sh1("cat /etc/hosts")
            .contains("cd-box.example.org cd-box")
    );
    assert_eq!(g.status().datasource.unwrap().name, "configdrive");
    g.poweroff();
}

#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn ec2_imdsv2_with_cloud_config() {
    let mut o = instance(Datasource::Ec2);
    o.hostname = "ec2-box".into();
    o.user_data = Some(
        b"#cloud-config
users:
  - default
  - name: alice
    groups: [wheel]
    shell: /bin/sh
    ssh_authorized_keys:
      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGh3KHDLrAa4DoEK0lmKyPg9QVMSYmOJvdtl6JVo8aEk alice
write_files:
  - path: /etc/motd
    content: aGVsbG8gZnJvbSBiNjQK
    encoding: b64
    permissions: '0600'
  - path: /home/alice/notes.txt
    content: deferred
    owner: alice:alice
    defer: true
  - path: /etc/motd
    content: appended
    append: true
    permissions: '0640'
bootcmd:
  - echo boot >> /run/bootcmd.log
runcmd:
  - [sh, -c, 'echo runcmd-argv > /root/runcmd.txt']
  - echo runcmd-shell >> /root/runcmd.txt
final_message: virga finished on $DATASOURCE
no_such_module: true
"
        .to_vec(),
    );
    let mut g = boot_instance(&o, "");
    assert_identity(&mut g, "ec2-box");
    assert_eq!(g.sh("cat /etc/motd"), ["hello from b64", "appended"]);
    assert_eq!(g.sh1("stat -c %a /etc/motd"), "640");
    assert_eq!(
        g.sh1("stat -c %U:%G:%s /home/alice/notes.txt"),
        "alice:alice:8"
    );
    assert_eq!(
        g.sh("cat /root/runcmd.txt"),
        ["runcmd-argv", "runcmd-shell"]
    );
    assert_eq!(g.sh1("cat /run/bootcmd.log"), "boot");
    assert!(g.sh1("grep ^wheel: /etc/group").ends_with("alice"));
    assert!(
        g.sh1("cat /home/alice/.ssh/authorized_keys")
            .contains("alice")
    );
    assert!(
        g.vm.lines()
            .iter()
            .any(|l| l.trim() == "virga finished on ec2")
    );
    let s = g.status();
    assert_eq!(s.datasource.as_ref().unwrap().name, "ec2");
    assert_eq!(s.user_data.unwrap().unknown_keys, ["no_such_module"]);
    assert!(
        s.warnings
            .iter()
            .any(|w| w.message.contains("no_such_module"))
    );
    let log = std::fs::read_to_string(g.runtime.path().join("metadata-access.log")).unwrap();
    assert!(
        log.contains("PUT /latest/api/token"),
        "IMDSv2 token not requested:\n{log}"
    );
    g.poweroff();
}

/// On an EC2-like machine (SMBIOS as Nitro presents it) with the image's own datasource list
/// (no `virga.ds=`), the guest identifies the platform: it never probes OpenStack, and its
/// first request to the metadata service is the IMDSv2 token.
#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn the_platform_decides_which_services_are_probed() {
    let mut o = instance(Datasource::Ec2);
    o.as_cloud = true;
    o.hostname = "nitro-box".into();
    let mut g = boot_instance(&o, "");
    assert_identity(&mut g, "nitro-box");
    let s = g.status();
    let ds = s.datasource.unwrap();
    assert_eq!(ds.name, "ec2");
    assert!(
        ds.tried
            .iter()
            .any(|t| t.starts_with("openstack: not probed")),
        "{:?}",
        ds.tried
    );
    let log = std::fs::read_to_string(g.runtime.path().join("metadata-access.log")).unwrap();
    let first = log.lines().next().unwrap_or_default();
    assert!(first.contains("PUT /latest/api/token"), "{log}");
    assert!(!log.contains("/openstack"), "{log}");
    assert!(
        !s.warnings.iter().any(|w| w.message.contains("401")),
        "{:?}",
        s.warnings
    );
    g.poweroff();
}

/// User-data `#include` URLs are fetched (here from a server on the host's loopback, which
/// the guest reaches at QEMU's 10.0.2.2) and their parts run; a bad one is reported.
#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn include_urls_are_fetched() {
    use std::io::{BufRead, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut r = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let body = if line.contains("/part.sh") {
                "#!/bin/sh\necho included > /root/included.txt\n"
            } else {
                ""
            };
            let status = if body.is_empty() {
                "404 Not Found"
            } else {
                "200 OK"
            };
            let mut s = stream;
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let mut o = instance(Datasource::NoCloud);
    o.user_data = Some(
        format!("#include\nhttp://10.0.2.2:{port}/part.sh\nhttp://10.0.2.2:{port}/missing\n")
            .into_bytes(),
    );
    let mut g = boot_instance(&o, "");
    assert_eq!(g.sh1("cat /root/included.txt"), "included");
    let s = g.status();
    assert!(
        s.errors
            .iter()
            .any(|e| e.source == "user-data" && e.message.contains("404")),
        "{:?}",
        s.errors
    );
    g.poweroff();
}

#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn openstack_service_and_mime_gzip_user_data() {
    let mut o = instance(Datasource::OpenStack);
    o.hostname = "os-box".into();
    let mime = b"Content-Type: multipart/mixed; boundary=\"XX\"\nMIME-Version: 1.0\n\n--XX\nContent-Type: text/x-shellscript\n\n#!/bin/sh\necho from-mime > /root/mime.txt\n--XX\nContent-Type: text/cloud-config\n\n#cloud-config\nruncmd:\n  - echo from-cc >> /root/mime.txt\n--XX--\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, mime).unwrap();
    o.user_data = Some(gz.finish().unwrap());
    let mut g = boot_instance(&o, "");
    assert_identity(&mut g, "os-box");
    assert_eq!(g.sh("cat /root/mime.txt"), ["from-mime", "from-cc"]);
    assert_eq!(
        g.sh1("virga query instance-id"),
        g.status().datasource.unwrap().instance_id
    );
    assert_eq!(g.status().datasource.unwrap().name, "openstack");
    g.poweroff();
}

#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn power_state_powers_off_after_ready() {
    let mut o = instance(Datasource::NoCloud);
    o.user_data = Some(b"#cloud-config\npower_state:\n  mode: poweroff\n  delay: now\n  message: bye from power_state\n".to_vec());
    let out = default_image();
    let mut cfg = vm_config(&out, "");
    let runtime = tempfile::tempdir().unwrap();
    vm_runner::instance::attach(&o, &mut cfg, runtime.path()).unwrap();
    let (mut vm, _) = boot_ready(&cfg);
    vm.wait_for("power-off", Duration::from_secs(30), |l| {
        l.contains(boot_contract::console::POWEROFF_LINE)
    })
    .unwrap();
    assert!(vm.wait_exit(Duration::from_secs(20)).is_some());
    assert!(
        vm.lines()
            .iter()
            .any(|l| l.contains("bye from power_state"))
    );
}

/// A metadata service that hangs, fails or redirects, and user-data that is junk or hostile:
/// the boot completes, with the problems in the status document.
#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn bad_metadata_never_stops_the_boot() {
    for fault in ["hang", "500", "redirect"] {
        let mut o = instance(Datasource::Ec2);
        o.server_args = vec![format!("--fault={fault}")];
        let mut g = boot_instance(&o, "virga.ds_timeout=8");
        let s = g.status();
        assert!(s.ready);
        let ds = s.datasource.unwrap();
        assert_eq!(ds.name, "none", "fault {fault}: {:?}", ds.tried);
        assert!(
            ds.tried
                .iter()
                .any(|t| t.starts_with("ec2:") && !t.contains("found")),
            "{:?}",
            ds.tried
        );
        assert!(
            s.warnings.iter().any(|w| w.source == "datasource"),
            "fault {fault}: {:?}",
            s.warnings
        );
        g.poweroff();
    }

    let mut o = instance(Datasource::NoCloud);
    let mut junk = vec![0u8, 159, 146, 150];
    junk.extend((0..4096u32).map(|i| (i * 7 % 256) as u8));
    o.user_data = Some(junk);
    let mut g = boot_instance(&o, "");
    assert!(g.status().ready);
    g.poweroff();

    let mut o = instance(Datasource::NoCloud);
    o.public_keys = vec!["ssh-ed25519 not-base64!! bad".into(), TEST_KEY.into()];
    o.user_data = Some(
        b"#cloud-config\nwrite_files:\n  - path: /etc/../../tmp/escape\n    content: x\n  - path: /root/link/evil\n    content: x\nbootcmd:\n  - ln -sf /etc /root/link\n"
            .to_vec(),
    );
    let mut g = boot_instance(&o, "");
    let s = g.status();
    assert!(s.ready);
    assert!(
        s.errors.iter().any(|e| e.message.contains("write_files")),
        "{:?}",
        s.errors
    );
    assert_eq!(
        g.sh1("ls /etc/evil /tmp/escape 2>&1 | grep -c 'No such file'"),
        "2"
    );
    let keys = g.sh1("cat /root/.ssh/authorized_keys");
    assert!(
        keys.contains("virga-e2e") && !keys.contains("not-base64"),
        "{keys}"
    );
    g.poweroff();
}

/// User-data over the 16 MiB limit on a seed disk is refused at the size limit without
/// exhausting the guest, and the rest of the seed (instance id, hostname, keys) is still applied.
#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn huge_user_data_is_refused() {
    let mut o = instance(Datasource::NoCloud);
    o.hostname = "big-ud".into();
    o.user_data = Some(vec![b'#'; 20 * 1024 * 1024]);
    let mut g = boot_instance(&o, "");
    let s = g.status();
    assert!(s.ready);
    let ds = s.datasource.clone().unwrap();
    assert_eq!(ds.name, "nocloud", "{:?}", ds.tried);
    assert!(
        s.warnings
            .iter()
            .any(|w| w.message.contains("user-data") && w.message.contains("limit")),
        "{:?}",
        s.warnings
    );
    assert_identity(&mut g, "big-ud");
    g.poweroff();
}

/// Parser bombs in user-data and meta-data, at 128 MiB of guest RAM (PID 1 cannot be killed
/// by the OOM killer, so a blow-up in it would deadlock the machine): every boot reaches ready,
/// with the problem named in the status document, and what the seed holds besides is used.
#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn metadata_bombs_never_stop_the_boot() {
    use std::io::Write as _;
    let gzip = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    // One long YAML flow list just under the 16 MiB decompressed limit, gzipped (the incident).
    let mut flow = b"#cloud-config\nruncmd: [".to_vec();
    while flow.len() < 15 * 1024 * 1024 {
        flow.extend_from_slice(b"a,");
    }
    flow.extend_from_slice(b"a]\n");
    let flow_gz = gzip(&flow);
    assert!(flow_gz.len() < 64 * 1024, "{}", flow_gz.len());
    // Nested lists, 200,000 deep.
    let mut nested = b"#cloud-config\nruncmd: ".to_vec();
    nested.extend(std::iter::repeat_n(b'[', 200_000));
    nested.extend(std::iter::repeat_n(b']', 200_000));
    // Billion laughs: nine levels of ten aliases.
    let mut laughs =
        String::from("#cloud-config\na0: &a0 [lol,lol,lol,lol,lol,lol,lol,lol,lol,lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(",");
        laughs.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    laughs.push_str("runcmd: *a9\n");
    // 10,000 MIME parts.
    let mut mime =
        String::from("Content-Type: multipart/mixed; boundary=\"B\"\nMIME-Version: 1.0\n\n");
    for i in 0..10_000 {
        mime.push_str(&format!(
            "--B\nContent-Type: text/x-shellscript\n\n#!/bin/sh\necho {i}\n"
        ));
    }
    mime.push_str("--B--\n");
    // A gzip bomb: 256 MiB of zeros, some 250 KiB compressed; the guest must stop early.
    let zeros = vec![0u8; 256 * 1024 * 1024];
    let gz_bomb = gzip(&zeros);
    drop(zeros);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("flow list (gzip)", flow_gz),
        ("nested lists", nested),
        ("billion laughs", laughs.into_bytes()),
        ("10,000 MIME parts", mime.into_bytes()),
        ("gzip bomb", gz_bomb),
    ];
    for (name, user_data) in cases {
        let mut o = instance(Datasource::NoCloud);
        o.hostname = "bombed".into();
        o.user_data = Some(user_data);
        let mut g = boot_instance_with(&o, "", |cfg| cfg.memory_mb = 128);
        let s = g.status();
        assert!(s.ready, "{name}");
        assert_eq!(s.datasource.as_ref().unwrap().name, "nocloud", "{name}");
        assert!(
            s.errors
                .iter()
                .chain(&s.warnings)
                .any(|p| p.source == "user-data" || p.source == "cloud-config"),
            "{name}: {:?} {:?}",
            s.errors,
            s.warnings
        );
        // Everything else the seed holds was applied: the hostname and the keys.
        assert_identity(&mut g, "bombed");
        g.poweroff();
    }

    // Meta-data that is deep JSON (valid YAML syntax), with no instance id: the seed is still
    // used, with a stable fallback instance id named in the status document.
    let dir = tempfile::tempdir().unwrap();
    let deep = format!("{{\"a\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    std::fs::write(dir.path().join("meta-data"), deep).unwrap();
    std::fs::write(
        dir.path().join("user-data"),
        "#!/bin/sh\necho seeded > /run/seeded\n",
    )
    .unwrap();
    let mut o = instance(Datasource::NoCloud);
    o.metadata_dir = Some(dir.path().to_owned());
    let mut g = boot_instance_with(&o, "", |cfg| cfg.memory_mb = 128);
    let s = g.status();
    assert!(s.ready);
    let ds = s.datasource.clone().unwrap();
    assert!(
        ds.instance_id.starts_with("iid-nocloud-"),
        "{}",
        ds.instance_id
    );
    assert!(
        s.warnings.iter().any(|w| w.message.contains("meta-data")),
        "{:?}",
        s.warnings
    );
    assert_eq!(g.sh1("cat /run/seeded"), "seeded");
    g.poweroff();
}
