#![cfg(feature = "write")]
//! Seed images checked with the tools a distribution uses: `blkid` (util-linux), `isoinfo`
//! (genisoimage), `xorriso`, `fsck.vfat`/`mkfs.vfat` (dosfstools), `mdir`/`mcopy` (mtools),
//! `mkfs.ext4` (e2fsprogs). The label prober is compared with `blkid` on images those tools
//! made.
//!
//! A missing tool fails the test with the Debian package to install (`./dev deps` installs them
//! all): a test that did not check anything never passes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use seed_image::{FsType, SeedFormat, SeedKind, SeedTree, probe_path, write_image};

/// Runs `tool args…`, returns stdout; panics with stderr on failure, and with the package to
/// install when the tool is missing.
fn run(tool: &str, package: &str, args: &[&str]) -> String {
    let out = match Command::new(tool).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("{tool} not found: apt-get install {package} (or run ./dev deps)");
        }
        Err(e) => panic!("running {tool}: {e}"),
    };
    assert!(
        out.status.success(),
        "{tool} {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `blkid -p -o export` as a map (`TYPE`, `LABEL`, …). `-p` probes the file itself, bypassing
/// the cache.
fn blkid(path: &Path) -> BTreeMap<String, String> {
    let out = run(
        "blkid",
        "util-linux",
        &["-p", "-o", "export", path.to_str().unwrap()],
    );
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn nocloud_tree() -> SeedTree {
    SeedTree::from_files([
        (
            "meta-data",
            b"{\"instance-id\": \"i-0abc123\", \"local-hostname\": \"virga-test\"}\n".to_vec(),
        ),
        (
            "user-data",
            b"#!/bin/sh\necho hello from user-data\n".to_vec(),
        ),
        ("vendor-data", b"#cloud-config\n{}\n".to_vec()),
        (
            "network-config",
            b"version: 2\nethernets:\n  eth0:\n    dhcp4: true\n".to_vec(),
        ),
    ])
    .unwrap()
}

fn configdrive_tree() -> SeedTree {
    let md = b"{\"uuid\": \"83679162-1378-4288-a2d4-70e13ec132aa\", \"hostname\": \"cd\"}".to_vec();
    SeedTree::from_files([
        ("openstack/latest/meta_data.json", md.clone()),
        ("openstack/latest/user_data", b"#!/bin/sh\ntrue\n".to_vec()),
        ("openstack/latest/vendor_data.json", b"{}".to_vec()),
        ("openstack/latest/vendor_data2.json", b"{}".to_vec()),
        (
            "openstack/latest/network_data.json",
            b"{\"links\": []}".to_vec(),
        ),
        ("openstack/2018-08-27/meta_data.json", md),
        ("openstack/content/0000", b"injected file".to_vec()),
        (
            "ec2/latest/meta-data.json",
            b"{\"instance-id\": \"i-1\"}".to_vec(),
        ),
        ("ec2/latest/user-data", Vec::new()),
    ])
    .unwrap()
}

/// Every file of `dir`, recursively, as relative path → contents.
fn read_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_str().unwrap().to_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn tree_map(tree: &SeedTree) -> BTreeMap<String, Vec<u8>> {
    tree.files()
        .map(|(p, c)| (p.to_owned(), c.to_vec()))
        .collect()
}

fn check_iso(tree: &SeedTree, label: &str) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("seed.iso");
    write_image(tree, SeedFormat::Iso, label, &img).unwrap();

    let b = blkid(&img);
    assert_eq!(b.get("TYPE").map(String::as_str), Some("iso9660"), "{b:?}");
    assert_eq!(b.get("LABEL").map(String::as_str), Some(label), "{b:?}");
    let p = probe_path(&img).unwrap().unwrap();
    assert_eq!(
        (p.fs_type, p.label.as_deref()),
        (FsType::Iso9660, Some(label))
    );

    // Rock Ridge and Joliet listings both carry the exact names.
    let img_s = img.to_str().unwrap();
    let rr = run("isoinfo", "genisoimage", &["-R", "-l", "-i", img_s]);
    let joliet = run("isoinfo", "genisoimage", &["-J", "-l", "-i", img_s]);
    for (path, _) in tree.files() {
        let name = path.rsplit('/').next().unwrap();
        assert!(
            rr.lines()
                .any(|l| l.trim_end().ends_with(&format!(" {name}"))),
            "{name} missing from the Rock Ridge listing:\n{rr}"
        );
        assert!(
            joliet
                .lines()
                .any(|l| l.trim_end().ends_with(&format!(" {name}"))),
            "{name} missing from the Joliet listing:\n{joliet}"
        );
    }

    // xorriso extracts exactly the tree (names and bytes).
    let out = dir.path().join("x");
    run(
        "xorriso",
        "xorriso",
        &[
            "-osirrox",
            "on",
            "-indev",
            img_s,
            "-extract",
            "/",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(read_tree(&out), tree_map(tree));
}

#[test]
fn nocloud_iso_reads_back_with_xorriso_and_isoinfo() {
    check_iso(&nocloud_tree(), "cidata");
}

#[test]
fn configdrive_iso_reads_back_with_xorriso_and_isoinfo() {
    check_iso(&configdrive_tree(), "config-2");
}

#[test]
fn uppercase_iso_label() {
    check_iso(&nocloud_tree(), "CIDATA");
}

fn check_vfat(tree: &SeedTree, label: &str) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("seed.img");
    write_image(tree, SeedFormat::Vfat, label, &img).unwrap();
    let img_s = img.to_str().unwrap();

    let b = blkid(&img);
    assert_eq!(b.get("TYPE").map(String::as_str), Some("vfat"), "{b:?}");
    assert_eq!(b.get("LABEL").map(String::as_str), Some(label), "{b:?}");
    let p = probe_path(&img).unwrap().unwrap();
    assert_eq!((p.fs_type, p.label.as_deref()), (FsType::Vfat, Some(label)));

    let fsck = run("fsck.vfat", "dosfstools", &["-n", img_s]);
    assert!(!fsck.contains("differences between boot sector"), "{fsck}");

    let listing = run("mdir", "mtools", &["-i", img_s, "-/", "-b", "::"]);
    for (path, _) in tree.files() {
        assert!(
            listing.lines().any(|l| l.trim() == format!("::/{path}")),
            "{path} missing from mdir:\n{listing}"
        );
    }
    for (path, contents) in tree.files() {
        let out = Command::new("mtype")
            .args(["-i", img_s, &format!("::/{path}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "mtype {path}");
        assert_eq!(out.stdout, contents, "{path}");
    }
    let out = dir.path().join("x");
    std::fs::create_dir(&out).unwrap();
    run(
        "mcopy",
        "mtools",
        &["-s", "-n", "-i", img_s, "::/*", out.to_str().unwrap()],
    );
    assert_eq!(read_tree(&out), tree_map(tree));
}

#[test]
fn nocloud_vfat_passes_fsck_and_mtools() {
    check_vfat(&nocloud_tree(), "cidata");
}

#[test]
fn configdrive_vfat_passes_fsck_and_mtools() {
    check_vfat(&configdrive_tree(), "config-2");
}

#[test]
fn uppercase_vfat_label_and_big_tree() {
    let mut tree = configdrive_tree();
    // 3 MiB of user-data pushes the image past FAT12's comfortable size.
    tree.insert(
        "openstack/latest/user_data",
        (0..3 << 20).map(|i| (i % 251) as u8).collect(),
    )
    .unwrap();
    check_vfat(&tree, "CONFIG-2");
}

#[test]
fn many_files_multi_cluster_directories_vfat_and_iso() {
    // 600 root entries (more than the usual 512-entry root) and a sub-directory whose
    // long-name entries span several clusters.
    let mut tree = SeedTree::new();
    for i in 0..200 {
        tree.insert(
            &format!("root-file-{i:03}.json"),
            format!("{i}").into_bytes(),
        )
        .unwrap();
    }
    for i in 0..300 {
        tree.insert(
            &format!("openstack/content/a-rather-long-file-name-number-{i:04}.txt"),
            vec![b'x'; i],
        )
        .unwrap();
    }
    check_vfat(&tree, "config-2");
    check_iso(&tree, "config-2");
}

#[test]
fn layout_checks() {
    let mut t = nocloud_tree();
    assert!(SeedKind::NoCloud.check_layout(&mut t).unwrap().is_empty());
    let mut t = SeedTree::from_files([("meta-data", b"instance-id: x\n".to_vec())]).unwrap();
    let warnings = SeedKind::NoCloud.check_layout(&mut t).unwrap();
    assert_eq!(t.get("user-data"), Some(&b""[..]), "{warnings:?}");
    let mut t = SeedTree::from_files([("user-data", Vec::new())]).unwrap();
    assert!(SeedKind::NoCloud.check_layout(&mut t).is_err());
    let mut t = configdrive_tree();
    assert!(
        SeedKind::ConfigDrive
            .check_layout(&mut t)
            .unwrap()
            .is_empty()
    );
    assert!(
        SeedKind::ConfigDrive
            .check_layout(&mut nocloud_tree())
            .is_err()
    );
}

// --- the prober against images made by real tools ------------------------------------------

fn sparse(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    p
}

/// Probes `img` and compares with what blkid says.
fn agrees_with_blkid(img: &Path, fs_type: FsType, label: &str) {
    let b = blkid(img);
    assert_eq!(
        b.get("TYPE").map(String::as_str),
        Some(fs_type.as_str()),
        "{b:?}"
    );
    assert_eq!(b.get("LABEL").map(String::as_str), Some(label), "{b:?}");
    let p = probe_path(img).unwrap().expect("probe found nothing");
    assert_eq!(p.fs_type, fs_type);
    assert_eq!(p.label.as_deref(), Some(label));
}

#[test]
fn probe_matches_blkid_on_mkfs_vfat() {
    let dir = tempfile::tempdir().unwrap();
    for (bits, size, label) in [
        ("12", 2u64 << 20, "CIDATA"),
        ("16", 20 << 20, "config-2"),
        ("32", 40 << 20, "cidata"),
    ] {
        let img = sparse(dir.path(), &format!("fat{bits}.img"), size);
        run(
            "mkfs.vfat",
            "dosfstools",
            &["-F", bits, "-n", label, img.to_str().unwrap()],
        );
        agrees_with_blkid(&img, FsType::Vfat, label);
    }
}

#[test]
fn probe_matches_blkid_on_xorriso_and_genisoimage() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("meta-data"), b"instance-id: i-1\n").unwrap();
    let iso = dir.path().join("x.iso");
    run(
        "xorriso",
        "xorriso",
        &[
            "-as",
            "mkisofs",
            "-quiet",
            "-V",
            "cidata",
            "-J",
            "-R",
            "-o",
            iso.to_str().unwrap(),
            src.to_str().unwrap(),
        ],
    );
    agrees_with_blkid(&iso, FsType::Iso9660, "cidata");
    let iso2 = dir.path().join("g.iso");
    run(
        "genisoimage",
        "genisoimage",
        &[
            "-quiet",
            "-V",
            "config-2",
            "-r",
            "-J",
            "-o",
            iso2.to_str().unwrap(),
            src.to_str().unwrap(),
        ],
    );
    agrees_with_blkid(&iso2, FsType::Iso9660, "config-2");
}

#[test]
fn probe_matches_blkid_on_mkfs_ext() {
    let dir = tempfile::tempdir().unwrap();
    for (tool, fs_type, label) in [
        ("mkfs.ext4", FsType::Ext4, "virga-state"),
        ("mkfs.ext3", FsType::Ext3, "old-state"),
        ("mkfs.ext2", FsType::Ext2, "ext2-label"),
    ] {
        let img = sparse(dir.path(), &format!("{tool}.img"), 16 << 20);
        run(
            tool,
            "e2fsprogs",
            &["-q", "-F", "-L", label, img.to_str().unwrap()],
        );
        agrees_with_blkid(&img, fs_type, label);
    }
}
