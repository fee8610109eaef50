//! The disk-image pieces checked by the real tools: `veritysetup` (cryptsetup-bin), `sgdisk`
//! (gdisk), `blkid` (util-linux), `fsck.vfat` (dosfstools), `e2fsck` (e2fsprogs),
//! `grub-editenv` (grub-common), `qemu-img` (qemu-utils), `tar`. A missing tool fails the test
//! with the package to install: `./dev test` installs them all.

use std::path::{Path, PathBuf};
use std::process::Command;

use disk_image::formats::DiskFormat;
use disk_image::layout::{Layout, LayoutParams, Role};
use disk_image::sysfs::SystemFs;
use disk_image::{MIB, grub, guid, verity};

fn tool(cmd: &mut Command, package: &str) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?} ({e}); install it: apt-get install {package}")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn ok(cmd: &mut Command, package: &str) -> String {
    let dbg = format!("{cmd:?}");
    let (good, text) = tool(cmd, package);
    assert!(good, "{dbg} failed:\n{text}");
    text
}

fn data(blocks: usize) -> Vec<u8> {
    (0..blocks * 4096)
        .map(|i| ((i * 31 + i / 4096) % 251) as u8)
        .collect()
}

/// Our hash device is byte-for-byte what `veritysetup format` writes for the same salt and
/// UUID, and `veritysetup verify` accepts it; a flipped data byte makes verify fail.
#[test]
fn verity_tree_matches_veritysetup() {
    let d = tempfile::tempdir().unwrap();
    for blocks in [1usize, 2, 128, 129, 300, 16385] {
        let payload = data(blocks);
        let data_path = d.path().join("data");
        std::fs::write(&data_path, &payload).unwrap();
        let salt = [0x5au8; 32];
        let uuid = guid::derive(b"test", "verity");
        let (ours, params) = verity::build(&payload, &salt, uuid.into_bytes()).unwrap();
        let theirs_path = d.path().join("theirs");
        let _ = std::fs::remove_file(&theirs_path);
        let out = ok(
            Command::new("veritysetup")
                .args(["format", "--hash", "sha256", "--data-block-size", "4096"])
                .args(["--hash-block-size", "4096", "--salt", &hex::encode(salt)])
                .arg(format!("--uuid={uuid}"))
                .arg(&data_path)
                .arg(&theirs_path),
            "cryptsetup-bin",
        );
        assert!(
            out.contains(&params.root_hash_hex()),
            "{blocks} blocks: {out}"
        );
        let theirs = std::fs::read(&theirs_path).unwrap();
        assert_eq!(theirs.len(), ours.len(), "{blocks} blocks");
        assert!(theirs == ours, "{blocks} blocks: hash devices differ");
        let ours_path = d.path().join("ours");
        std::fs::write(&ours_path, &ours).unwrap();
        ok(
            Command::new("veritysetup")
                .arg("verify")
                .arg(&data_path)
                .arg(&ours_path)
                .arg(params.root_hash_hex()),
            "cryptsetup-bin",
        );
        if blocks > 100 {
            let mut bad = payload.clone();
            bad[4096 * 77 + 5] ^= 0x01;
            std::fs::write(&data_path, &bad).unwrap();
            let (good, text) = tool(
                Command::new("veritysetup")
                    .arg("verify")
                    .arg(&data_path)
                    .arg(&ours_path)
                    .arg(params.root_hash_hex()),
                "cryptsetup-bin",
            );
            assert!(!good, "a flipped byte passed veritysetup verify: {text}");
        }
    }
}

#[test]
fn grubenv_reads_back_with_grub_editenv() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("grubenv");
    std::fs::write(&p, grub::fresh_env_block(2).unwrap()).unwrap();
    let out = ok(
        Command::new("grub-editenv").arg(&p).arg("list"),
        "grub-common",
    );
    assert_eq!(out, "ORDER=A B\nA_OK=1\nA_TRY=0\nB_OK=0\nB_TRY=0\n");
    // What the update agent will do: grub-editenv's writes keep the block GRUB reads.
    ok(
        Command::new("grub-editenv")
            .arg(&p)
            .args(["set", "A_TRY=1"]),
        "grub-common",
    );
    let back = grub::parse_env_block(&std::fs::read(&p).unwrap()).unwrap();
    assert!(back.contains(&("A_TRY".into(), "1".into())), "{back:?}");
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 1024);
}

fn squashfs_of(dir: &Path, files: &[(&str, &[u8])]) {
    for (p, c) in files {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, c).unwrap();
    }
}

#[test]
fn system_filesystems_and_ext4_are_reproducible() {
    let d = tempfile::tempdir().unwrap();
    let files: Vec<(&str, &[u8])> = vec![
        ("bin/busybox", b"not really busybox"),
        ("lib/modules/6.1/kernel/x.ko", b"ko"),
        ("lib/os-release", b"ID=virga\n"),
    ];
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    squashfs_of(&a, &files);
    let mut rev = files.clone();
    rev.reverse();
    squashfs_of(&b, &rev);
    for kind in [SystemFs::Squashfs, SystemFs::Erofs] {
        let id = guid::derive(b"s", "fs");
        let x = disk_image::sysfs::build(kind, &a, &d.path().join("x.img"), 0, id).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let y = disk_image::sysfs::build(kind, &b, &d.path().join("y.img"), 0, id).unwrap();
        assert!(x == y, "{kind:?} images differ");
        assert!(x.len().is_multiple_of(4096));
    }
    let e1 = d.path().join("e1");
    let e2 = d.path().join("e2");
    for e in [&e1, &e2] {
        disk_image::ext4::make(
            e,
            64 * MIB,
            "virga-state",
            guid::derive(b"s", "u"),
            guid::derive(b"s", "h"),
            0,
            d.path(),
        )
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert!(
        std::fs::read(&e1).unwrap() == std::fs::read(&e2).unwrap(),
        "ext4 images differ"
    );
    ok(Command::new("e2fsck").args(["-fn"]).arg(&e1), "e2fsprogs");
    let label = ok(
        Command::new("blkid")
            .args(["-p", "-s", "LABEL", "-o", "value"])
            .arg(&e1),
        "util-linux",
    );
    assert_eq!(label.trim(), "virga-state");
}

/// A small disk with every piece in place, checked partition by partition.
struct SmallDisk {
    _dir: tempfile::TempDir,
    raw: PathBuf,
    layout: Layout,
    root: String,
}

fn small_disk() -> SmallDisk {
    let d = tempfile::tempdir().unwrap();
    let usr_dir = d.path().join("usr");
    squashfs_of(
        &usr_dir,
        &[("bin/busybox", b"bb"), ("lib/os-release", b"ID=virga\n")],
    );
    let usr = disk_image::sysfs::build(
        SystemFs::Squashfs,
        &usr_dir,
        &d.path().join("usr.img"),
        0,
        guid::derive(b"s", "fs"),
    )
    .unwrap();
    let (hash, v) = verity::build(&usr, &[1; 32], [2; 16]).unwrap();
    let params = LayoutParams {
        disk_size: 128 * MIB,
        esp_size: 16 * MIB,
        usr_size: 16 * MIB,
        slots: 2,
    };
    let layout = Layout::plan(&params, b"seed", &v.root_hash).unwrap();
    let mut esp = seed_image::SeedTree::new();
    esp.insert(grub::paths::GRUB_ENV, grub::fresh_env_block(2).unwrap())
        .unwrap();
    esp.insert(
        grub::paths::GRUB_CFG,
        grub::grub_cfg("console=ttyS0", 2).into_bytes(),
    )
    .unwrap();
    esp.insert("vmlinuz-a", vec![7; 100_000]).unwrap();
    let esp_img = seed_image::build_vfat_with(
        &esp,
        disk_image::layout::ESP_FS_LABEL,
        seed_image::VfatOptions {
            size: Some(16 * MIB),
            volume_id: Some(0xabcd_1234),
        },
    )
    .unwrap();
    let core = grub::mkimage(
        "i386-pc",
        &grub::bios_prefix(2),
        &[grub::MODULES, grub::BIOS_MODULES].concat(),
        d.path(),
    )
    .unwrap();
    let boot = grub::boot_img().unwrap();
    let state = d.path().join("state");
    let sp = layout.require(Role::State).unwrap();
    disk_image::ext4::make(
        &state,
        sp.size,
        "virga-state",
        guid::derive(b"s", "u"),
        guid::derive(b"s", "h"),
        0,
        d.path(),
    )
    .unwrap();
    let raw = d.path().join("disk.raw");
    disk_image::writer::write_raw(
        &raw,
        &disk_image::writer::DiskContents {
            layout: &layout,
            boot_img: &boot,
            core_img: &core,
            esp: &esp_img,
            usr_a: &usr,
            usr_a_verity: &hash,
            state: Some(&state),
        },
    )
    .unwrap();
    SmallDisk {
        _dir: d,
        raw,
        layout,
        root: v.root_hash_hex(),
    }
}

fn extract(disk: &SmallDisk, role: Role, name: &str) -> PathBuf {
    let p = disk.layout.require(role).unwrap();
    let out = disk.raw.with_file_name(name);
    std::fs::write(
        &out,
        disk_image::writer::read_region(&disk.raw, p.start, p.size).unwrap(),
    )
    .unwrap();
    out
}

#[test]
fn small_disk_passes_the_partitioning_and_filesystem_tools() {
    let disk = small_disk();
    let v = ok(Command::new("sgdisk").arg("-v").arg(&disk.raw), "gdisk");
    assert!(v.contains("No problems found"), "{v}");
    let expect = [
        ("bios-boot", guid::types::BIOS_BOOT),
        ("esp", guid::types::ESP),
        ("usr-A", guid::types::USR_X86_64),
        ("usr-A-verity", guid::types::USR_VERITY_X86_64),
        ("usr-B", guid::types::USR_X86_64),
        ("usr-B-verity", guid::types::USR_VERITY_X86_64),
        ("virga-state", guid::types::VAR),
    ];
    let mut partuuid = Vec::new();
    for (i, (name, type_guid)) in expect.iter().enumerate() {
        let info = ok(
            Command::new("sgdisk")
                .arg(format!("-i{}", i + 1))
                .arg(&disk.raw),
            "gdisk",
        );
        let field = |key: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in {info}"))
                .trim()
                .to_owned()
        };
        assert_eq!(field("Partition name:"), format!("'{name}'"), "{info}");
        let code = field("Partition GUID code:").to_lowercase();
        assert!(code.starts_with(&type_guid.to_string()), "{info}");
        partuuid.push(
            field("Partition unique GUID:")
                .to_lowercase()
                .replace('-', ""),
        );
    }
    // sgdisk knows the UAPI types by name.
    let usr = ok(Command::new("sgdisk").arg("-i3").arg(&disk.raw), "gdisk");
    assert!(usr.contains("/usr"), "{usr}");
    // The root hash halves are the PARTUUIDs of usr-A and usr-A-verity.
    assert_eq!(format!("{}{}", partuuid[2], partuuid[3]), disk.root);
    // blkid finds each filesystem at its partition's offset.
    for (role, fstype, label) in [
        (Role::Esp, "vfat", Some(disk_image::layout::ESP_FS_LABEL)),
        (Role::Usr('A'), "squashfs", None),
        (Role::UsrVerity('A'), "DM_verity_hash", None),
        (Role::State, "ext4", Some("virga-state")),
    ] {
        let p = disk.layout.require(role).unwrap();
        let out = ok(
            Command::new("blkid")
                .args(["-p", "-o", "export", "-O", &p.start.to_string()])
                .arg(&disk.raw),
            "util-linux",
        );
        assert!(out.contains(&format!("TYPE={fstype}")), "{role:?}: {out}");
        if let Some(l) = label {
            assert!(out.contains(&format!("LABEL={l}")), "{role:?}: {out}");
        }
    }
    let esp = extract(&disk, Role::Esp, "esp.img");
    ok(Command::new("fsck.vfat").arg("-n").arg(&esp), "dosfstools");
    let state = extract(&disk, Role::State, "state.img");
    ok(Command::new("e2fsck").arg("-fn").arg(&state), "e2fsprogs");
    let usr = extract(&disk, Role::Usr('A'), "usr.img");
    let hash = extract(&disk, Role::UsrVerity('A'), "hash.img");
    ok(
        Command::new("veritysetup")
            .arg("verify")
            .arg(&usr)
            .arg(&hash)
            .arg(&disk.root),
        "cryptsetup-bin",
    );
    // GRUB's boot code points at core.img in the BIOS boot partition.
    let mbr = disk_image::writer::read_region(&disk.raw, 0, 512).unwrap();
    assert_eq!(&mbr[0x5c..0x64], &2048u64.to_le_bytes());
    assert_eq!(&mbr[510..], &[0x55, 0xaa]);
}

#[test]
fn formats_pass_qemu_img() {
    let disk = small_disk();
    let dir = disk.raw.parent().unwrap().to_owned();
    std::fs::create_dir_all(dir.join("b")).unwrap();
    for f in [DiskFormat::Qcow2, DiskFormat::Vmdk, DiskFormat::Vhd] {
        // The same file name: a VMDK descriptor names its extent file.
        let a = dir.join(f.file_name());
        let b = dir.join("b").join(f.file_name());
        disk_image::formats::convert(&disk.raw, f, &a, b"seed", 1_700_000_000).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        disk_image::formats::convert(&disk.raw, f, &b, b"seed", 1_700_000_000).unwrap();
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "{f}: two conversions differ"
        );
        let qfmt = if f == DiskFormat::Vhd {
            "vpc"
        } else {
            f.name()
        };
        if f != DiskFormat::Vhd {
            ok(
                Command::new("qemu-img").args(["check", "-f", qfmt]).arg(&a),
                "qemu-utils",
            );
        }
        let info = ok(
            Command::new("qemu-img")
                .args(["info", "--output=json", "-f", qfmt])
                .arg(&a),
            "qemu-utils",
        );
        let j: serde_json::Value = serde_json::from_str(&info).unwrap();
        assert_eq!(j["virtual-size"].as_u64(), Some(128 * MIB), "{f}: {info}");
        // The contents survive the conversion.
        let back = dir.join("back.raw");
        ok(
            Command::new("qemu-img")
                .args(["convert", "-f", qfmt, "-O", "raw"])
                .arg(&a)
                .arg(&back),
            "qemu-utils",
        );
        ok(Command::new("cmp").arg(&back).arg(&disk.raw), "diffutils");
    }
    let vhd = std::fs::read(dir.join("virga.vhd")).unwrap();
    assert_eq!(
        vhd.len() as u64,
        128 * MIB + 512,
        "fixed VHD: data + footer"
    );
    let footer = &vhd[vhd.len() - 512..];
    assert_eq!(&footer[..8], b"conectix");
    assert_eq!(
        u32::from_be_bytes(footer[60..64].try_into().unwrap()),
        2,
        "fixed disk type"
    );
    let sum = footer
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |s, (_, b)| s.wrapping_add(u32::from(*b)));
    assert_eq!(u32::from_be_bytes(footer[64..68].try_into().unwrap()), !sum);
    let q = std::fs::read(dir.join("virga.qcow2")).unwrap();
    let archive = disk_image::oci::containerdisk(&q, "localhost/virga/t:latest", 0).unwrap();
    let tar = dir.join("cd.tar");
    std::fs::write(&tar, &archive).unwrap();
    let listing = ok(Command::new("tar").args(["-tvf"]).arg(&tar), "tar");
    for want in ["oci-layout", "index.json", "blobs/sha256/"] {
        assert!(listing.contains(want), "{listing}");
    }
    let layer = disk_image::oci::read_layer_entries(&archive).unwrap();
    assert_eq!(
        layer[1],
        (
            "disk/virga.qcow2".to_owned(),
            107,
            107,
            0o440,
            q.len() as u64
        )
    );
}
