//! End-to-end: the bootable disk image. Built in every format and checked with the real tools
//! (sgdisk, systemd-dissect, blkid, fsck.vfat, e2fsck, veritysetup, qemu-img), built twice for byte-identical
//! output, booted to ready under SeaBIOS and OVMF, rebooted with its own state partition, and
//! refused with clear errors on bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use image_spec::{DiskInfo, ImageManifest};

const ALL_FORMATS: &str = "raw,qcow2,vmdk,vhd,containerdisk";
/// GRUB reads a 14 MB kernel through the firmware under TCG: allow more than a direct boot.
const DISK_BOOT_TIMEOUT: u64 = 240;

fn disk_image() -> PathBuf {
    image("disk", &["--format", ALL_FORMATS])
}

fn tool(cmd: &mut Command, package: &str) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} ({e}); apt-get install {package}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn ok(cmd: &mut Command, package: &str) -> String {
    let what = format!("{cmd:?}");
    let (good, text) = tool(cmd, package);
    assert!(good, "{what}:\n{text}");
    text
}

fn part<'a>(d: &'a DiskInfo, label: &str) -> &'a image_spec::PartitionInfo {
    d.partitions
        .iter()
        .find(|p| p.label == label)
        .unwrap_or_else(|| panic!("no partition {label}: {d:?}"))
}

fn extract(raw: &Path, p: &image_spec::PartitionInfo, to: &Path) {
    std::fs::write(
        to,
        disk_image::writer::read_region(raw, p.start, p.size).unwrap(),
    )
    .unwrap();
}

/// `/etc/virga/image.json` from a zstd newc initramfs.
fn image_json(initramfs: &Path) -> boot_contract::ImageConfig {
    let cpio = zstd::stream::decode_all(&std::fs::read(initramfs).unwrap()[..]).unwrap();
    let json = image_builder::tree::cpio_file(&cpio, "etc/virga/image.json")
        .unwrap_or_else(|| panic!("no etc/virga/image.json in {}", initramfs.display()));
    serde_json::from_slice(json).unwrap()
}

#[test]
#[ignore = "builds the default image; run with --include-ignored (./dev test)"]
fn disk_in_every_format_passes_the_tools() {
    let out = disk_image();
    let m = ImageManifest::load(&out).unwrap();
    let d = m.disk.clone().expect("manifest.disk");
    for f in ALL_FORMATS.split(',') {
        let name = f
            .parse::<disk_image::formats::DiskFormat>()
            .unwrap()
            .file_name();
        let a = m
            .artifact(name)
            .unwrap_or_else(|| panic!("{name} not in the manifest"));
        assert_eq!(std::fs::metadata(out.join(name)).unwrap().len(), a.size);
    }
    let raw = out.join("virga.raw");
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), d.size);
    assert!(d.size.is_multiple_of(1 << 20));
    let v = ok(Command::new("sgdisk").arg("-v").arg(&raw), "gdisk");
    assert!(v.contains("No problems found"), "{v}");

    // systemd recognises the UAPI layout: /usr (with its os-release), its verity partition,
    // the ESP and /var (grow-fs). systemd-dissect attaches a loop device to read the image.
    let dissect = ok(
        Command::new("systemd-dissect")
            .args(["--json=short"])
            .arg(&raw),
        "systemd-container",
    );
    let j: serde_json::Value =
        serde_json::from_str(dissect.trim()).unwrap_or_else(|e| panic!("{e}: {dissect}"));
    assert!(j["osRelease"].to_string().contains("ID=virga"), "{dissect}");
    let mounts = j["mounts"].as_array().unwrap();
    let by = |designator: &str| {
        mounts
            .iter()
            .find(|m| m["designator"] == designator)
            .unwrap_or_else(|| panic!("no {designator} in {dissect}"))
    };
    assert_eq!(by("usr")["partition_label"], "usr-A");
    assert_eq!(by("usr")["fstype"], "squashfs");
    assert_eq!(by("usr")["partition_uuid"], part(&d, "usr-A").guid.as_str());
    assert_eq!(by("usr-verity")["partition_label"], "usr-A-verity");
    assert_eq!(by("esp")["fstype"], "vfat");
    assert_eq!(by("var")["partition_label"], "virga-state");
    assert_eq!(by("var")["growfs"], true);

    // qcow2 (compressed), vmdk, fixed vhd.
    ok(
        Command::new("qemu-img")
            .args(["check", "-f", "qcow2"])
            .arg(out.join("virga.qcow2")),
        "qemu-utils",
    );
    ok(
        Command::new("qemu-img")
            .args(["check", "-f", "vmdk"])
            .arg(out.join("virga.vmdk")),
        "qemu-utils",
    );
    for (file, fmt) in [
        ("virga.qcow2", "qcow2"),
        ("virga.vmdk", "vmdk"),
        ("virga.vhd", "vpc"),
    ] {
        let info = ok(
            Command::new("qemu-img")
                .args(["info", "--output=json", "-f", fmt])
                .arg(out.join(file)),
            "qemu-utils",
        );
        let j: serde_json::Value = serde_json::from_str(&info).unwrap();
        assert_eq!(j["virtual-size"].as_u64(), Some(d.size), "{file}: {info}");
    }
    let vhd = std::fs::metadata(out.join("virga.vhd")).unwrap().len();
    assert_eq!(vhd, d.size + 512, "a fixed VHD is the disk plus its footer");
    let qcow2 = std::fs::metadata(out.join("virga.qcow2")).unwrap().len();
    assert!(qcow2 < d.size / 10, "qcow2 is compressed: {qcow2} bytes");

    // Every filesystem where the table says, each passing its checker.
    let dir = tempfile::tempdir().unwrap();
    let esp = dir.path().join("esp");
    extract(&raw, part(&d, "esp"), &esp);
    ok(Command::new("fsck.vfat").arg("-n").arg(&esp), "dosfstools");
    let state = dir.path().join("state");
    extract(&raw, part(&d, "virga-state"), &state);
    ok(Command::new("e2fsck").arg("-fn").arg(&state), "e2fsprogs");
    for (label, ty) in [
        ("esp", "vfat"),
        ("usr-A", "squashfs"),
        ("usr-A-verity", "DM_verity_hash"),
        ("virga-state", "ext4"),
    ] {
        let p = part(&d, label);
        let b = ok(
            Command::new("blkid")
                .args(["-p", "-o", "export", "-O", &p.start.to_string()])
                .arg(&raw),
            "util-linux",
        );
        assert!(b.contains(&format!("TYPE={ty}")), "{label}: {b}");
    }

    // The slot verifies against the root hash that slot A's initramfs carries (and the
    // manifest records); PARTUUIDs are the root hash's halves.
    let cfg = image_json(&out.join("initramfs-slot.img"));
    // The slot's initramfs carries the modules that mounting the slot needs; the others
    // load from the slot's /usr. The whole initramfs (direct kernel boot) carries them all.
    let (early, in_slot): (Vec<_>, Vec<_>) = cfg
        .modules
        .iter()
        .partition(|m| !m.path.starts_with(boot_contract::SLOT_MODULES_PREFIX));
    assert!(
        early.iter().any(|m| m.name == "dm_verity")
            && in_slot.iter().any(|m| m.name == "virtio_net"),
        "{:?}",
        cfg.modules
    );
    let whole = image_json(&out.join("initramfs.img"));
    assert!(
        whole
            .modules
            .iter()
            .all(|m| m.path.starts_with("/lib/modules/"))
    );
    assert_eq!(whole.system, cfg.system);
    let sys = cfg.system.expect("image.json has the system image");
    assert_eq!(sys.root_hash, d.verity.root_hash);
    assert_eq!(sys.usr_partuuid, part(&d, "usr-A").guid);
    assert_eq!(sys.verity_partuuid, part(&d, "usr-A-verity").guid);
    assert_eq!(
        format!("{}{}", sys.usr_partuuid, sys.verity_partuuid).replace('-', ""),
        sys.root_hash
    );
    let usr = dir.path().join("usr");
    let hash = dir.path().join("hash");
    extract(&raw, part(&d, "usr-A"), &usr);
    extract(&raw, part(&d, "usr-A-verity"), &hash);
    ok(
        Command::new("veritysetup")
            .arg("verify")
            .arg(&usr)
            .arg(&hash)
            .arg(&sys.root_hash),
        "cryptsetup-bin",
    );
    assert!(
        m.modules.iter().any(|x| x == "dm_verity"),
        "{:?}",
        m.modules
    );
    assert!(m.modules.iter().any(|x| x == "squashfs"), "{:?}", m.modules);

    // One flipped byte in slot A's data is detected.
    let mut bytes = std::fs::read(&usr).unwrap();
    let at = (d.verity.data_blocks as usize / 2) * 4096 + 123;
    bytes[at] ^= 0x40;
    std::fs::write(&usr, &bytes).unwrap();
    let (good, text) = tool(
        Command::new("veritysetup")
            .arg("verify")
            .arg(&usr)
            .arg(&hash)
            .arg(&sys.root_hash),
        "cryptsetup-bin",
    );
    assert!(
        !good,
        "a flipped byte in slot A passed verification: {text}"
    );

    // The containerDisk holds the qcow2 as KubeVirt expects.
    let archive = std::fs::read(out.join("virga.containerdisk.tar")).unwrap();
    let layer = disk_image::oci::read_layer_entries(&archive).unwrap();
    assert_eq!(
        layer[1],
        ("disk/virga.qcow2".to_owned(), 107, 107, 0o440, qcow2)
    );
}

#[test]
#[ignore = "builds the default image twice; run with --include-ignored (./dev test)"]
fn disk_images_are_reproducible() {
    let a = disk_image();
    let b = scratch("disk-again");
    let o = run(virga()
        .args(["build", "-q", "--format", ALL_FORMATS, "--out"])
        .arg(&b));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in [
        "virga.raw",
        "virga.qcow2",
        "virga.containerdisk.tar",
        "virga.vmdk",
        "virga.vhd",
        "initramfs.img",
        "initramfs-slot.img",
        "manifest.json",
    ] {
        let (x, y) = (
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
        );
        assert!(x == y, "{f} differs between two builds of the same spec");
    }
}

/// A VM booting an overlay of the built qcow2 (the image stays pristine), as `virga run --disk`.
fn disk_vm(
    overlay: &Path,
    firmware: vm_runner::disk::Firmware,
    opts: &vm_runner::instance::InstanceOptions,
    runtime: &Path,
) -> VmConfig {
    let accel = vm_runner::accel::choose(vm_runner::AccelChoice::Auto);
    let boot = vm_runner::disk::DiskBoot::new(overlay, firmware, runtime).unwrap();
    let mut cmdline = vm_runner::KernelCmdline::new("");
    cmdline.panic_stops_vm();
    let mut cfg = VmConfig::for_disk(boot, cmdline, accel);
    if firmware == vm_runner::disk::Firmware::Uefi {
        cfg.machine = vm_runner::Machine::Q35;
    }
    cfg.echo = std::env::var_os("VIRGA_TEST_ECHO").is_some();
    vm_runner::instance::attach(opts, &mut cfg, runtime).expect("attach datasource");
    cfg
}

fn boot_disk_guest(cfg: &VmConfig, runtime: tempfile::TempDir) -> Guest {
    let mut vm = Vm::launch(cfg).expect("launch QEMU");
    let line = vm
        .wait_for("ready line", Duration::from_secs(DISK_BOOT_TIMEOUT), |l| {
            l.contains(boot_contract::console::READY_PREFIX)
        })
        .unwrap_or_else(|e| panic!("{e}\nconsole:\n{}", vm.lines().join("\n")));
    let ready = boot_contract::ReadyReport::parse_line(&line).unwrap_or_else(|| {
        panic!(
            "ready line is not the report: {line:?}\nconsole:\n{}",
            vm.lines().join("\n")
        )
    });
    wait_shell(&mut vm);
    Guest::new(vm, ready, runtime)
}

fn virga_run_disk(firmware: &str) {
    let out = disk_image();
    let o = run(virga()
        .args(["run", "--expect-ready", "--quiet", "--json", "--timeout"])
        .arg(DISK_BOOT_TIMEOUT.to_string())
        .args(["--firmware", firmware, "--disk"])
        .arg(out.join("virga.qcow2")));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "exit {:?}\n{stderr}", o.status.code());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(v["powered_off"], true, "{v}");
    assert_eq!(v["ready"]["errors"], 0, "{v}");
    let stages = v["ready"]["stages"].as_array().unwrap();
    let state = stages.iter().find(|s| s["name"] == "state").unwrap();
    assert_eq!(
        state["result"], "ok",
        "the disk's own state partition is mounted: {v}"
    );
    let ds = stages
        .iter()
        .find(|s| s["name"] == "datasource-local")
        .unwrap();
    assert_eq!(ds["result"], "ok", "the NoCloud seed is found: {v}");
    // The built image is untouched (the VM wrote to an overlay).
    let m = ImageManifest::load(&out).unwrap();
    let q = std::fs::read(out.join("virga.qcow2")).unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&q))
    };
    assert_eq!(m.artifact("virga.qcow2").unwrap().sha256, sha);
}

#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn qcow2_boots_to_ready_under_seabios() {
    virga_run_disk("bios");
}

#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn qcow2_boots_to_ready_under_ovmf() {
    virga_run_disk("uefi");
}

/// The state partition on the disk keeps per-instance semaphores across a reboot; GRUB's
/// environment block records the try (written with save_env on the ESP), and the system marks
/// its slot good once ready, so the second boot is a try again, not a fallback.
#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn per_instance_script_runs_once_across_a_reboot_of_the_disk() {
    let out = disk_image();
    let dir = tempfile::tempdir().unwrap();
    let overlay = dir.path().join("instance.qcow2");
    vm_runner::disk::overlay(&out.join("virga.qcow2"), "qcow2", &overlay).unwrap();
    let mut o = instance(vm_runner::instance::Datasource::NoCloud);
    o.hostname = "disk-vm".into();
    o.instance_id = Some("i-disk".into());
    o.user_data = Some(b"#!/bin/sh\necho run >> /var/lib/virga/count\n".to_vec());

    let runtime = tempfile::tempdir().unwrap();
    let cfg = disk_vm(
        &overlay,
        vm_runner::disk::Firmware::Bios,
        &o,
        runtime.path(),
    );
    let mut g = boot_disk_guest(&cfg, runtime);
    let cmdline = g.sh1("cat /proc/cmdline");
    assert!(cmdline.contains("virga.slot=A virga.boot=try"), "{cmdline}");
    assert!(
        cmdline.contains("virga.ds=nocloud,none"),
        "SMBIOS arguments reach the kernel: {cmdline}"
    );
    assert_eq!(g.sh1("wc -l < /var/lib/virga/count"), "1");
    let mounts = g.sh1("cat /proc/mounts");
    assert!(
        mounts.contains("/dev/vda7 /run/virga/state ext4"),
        "state on the boot disk: {mounts}"
    );
    assert!(
        mounts.contains("overlay /var overlay"),
        "/var on the state: {mounts}"
    );
    assert!(
        mounts.contains(" /home ext4"),
        "/home on the state: {mounts}"
    );
    assert!(
        mounts.contains("/dev/dm-0 /usr squashfs ro"),
        "the verified system on /usr: {mounts}"
    );
    // The system's own BusyBox answers from the verified /usr.
    assert!(g.sh1("/usr/bin/busybox true && echo yes").ends_with("yes"));
    let s = g.status();
    assert!(s.persistent_state);
    let m = ImageManifest::load(&out).unwrap();
    assert_eq!(
        s.verified_system.as_deref(),
        Some(m.disk.as_ref().unwrap().verity.root_hash.as_str())
    );
    // The update agent marks the slot good after the ready line.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while g.status().update.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "slot A never marked good"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(g.status().update.unwrap()["marked_good"], true);
    g.poweroff();

    let runtime = tempfile::tempdir().unwrap();
    let cfg = disk_vm(
        &overlay,
        vm_runner::disk::Firmware::Bios,
        &o,
        runtime.path(),
    );
    let mut g = boot_disk_guest(&cfg, runtime);
    assert_eq!(
        g.sh1("wc -l < /var/lib/virga/count"),
        "1",
        "the script ran twice"
    );
    assert!(!g.status().datasource.unwrap().new_instance);
    // The first boot marked slot A good (its update agent, after the ready line), so GRUB
    // tries it again instead of falling back.
    let cmdline = g.sh1("cat /proc/cmdline");
    assert!(cmdline.contains("virga.slot=A virga.boot=try"), "{cmdline}");
    g.poweroff();
}

/// Writes `len` bytes of `pattern` at `offset` of a qcow2 (the guest's view of the disk).
fn poke(qcow2: &Path, offset: u64, len: u64, pattern: u8) {
    ok(
        Command::new("qemu-io")
            .args(["-f", "qcow2", "-c"])
            .arg(format!("write -P {pattern} {offset} {len}"))
            .arg(qcow2),
        "qemu-utils",
    );
}

fn fresh_overlay(dir: &Path) -> (PathBuf, DiskInfo) {
    let out = disk_image();
    let overlay = dir.join("instance.qcow2");
    vm_runner::disk::overlay(&out.join("virga.qcow2"), "qcow2", &overlay).unwrap();
    let disk = ImageManifest::load(&out).unwrap().disk.unwrap();
    (overlay, disk)
}

/// A disk enlarged with `qemu-img resize` gets its state partition and filesystem grown at the
/// next boot (CirrOS's growroot), with what the state held kept.
#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn the_state_grows_to_fill_an_enlarged_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (overlay, _) = fresh_overlay(dir.path());
    let mut o = instance(vm_runner::instance::Datasource::NoCloud);
    o.instance_id = Some("i-grow".into());
    let runtime = tempfile::tempdir().unwrap();
    let cfg = disk_vm(
        &overlay,
        vm_runner::disk::Firmware::Bios,
        &o,
        runtime.path(),
    );
    let mut g = boot_disk_guest(&cfg, runtime);
    let before: u64 = g
        .sh1("df -m /run/virga/state | tail -1 | awk '{print $2}'")
        .parse()
        .unwrap();
    g.sh("echo kept > /var/lib/virga/kept.txt; sync");
    g.poweroff();
    ok(
        Command::new("qemu-img")
            .arg("resize")
            .arg(&overlay)
            .arg("+512M"),
        "qemu-utils",
    );
    let runtime = tempfile::tempdir().unwrap();
    let cfg = disk_vm(
        &overlay,
        vm_runner::disk::Firmware::Bios,
        &o,
        runtime.path(),
    );
    let mut g = boot_disk_guest(&cfg, runtime);
    let after: u64 = g
        .sh1("df -m /run/virga/state | tail -1 | awk '{print $2}'")
        .parse()
        .unwrap();
    assert!(after >= before + 400, "{before} MiB → {after} MiB");
    let s = g.status();
    assert!(s.state_grown.is_some(), "{:?}", s.state_grown);
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(g.sh1("cat /var/lib/virga/kept.txt"), "kept");
    g.poweroff();
    // The GPT is valid at its new size, for the host's tools too.
    let raw = dir.path().join("grown.raw");
    ok(
        Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&overlay)
            .arg(&raw),
        "qemu-utils",
    );
    let v = ok(Command::new("sgdisk").arg("-v").arg(&raw), "gdisk");
    assert!(v.contains("No problems found"), "{v}");
}

/// One flipped byte in slot A's system: the kernel's dm-verity catches the read, and the
/// machine restarts (here QEMU, run with -no-reboot, stops) instead of running a tampered
/// system; it never reaches ready.
#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn a_flipped_byte_in_the_system_never_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (overlay, disk) = fresh_overlay(dir.path());
    // The squashfs superblock, read by the mount.
    poke(&overlay, part(&disk, "usr-A").start + 8, 1, 0x55);
    let o = instance(vm_runner::instance::Datasource::NoCloud);
    let runtime = tempfile::tempdir().unwrap();
    let cfg = disk_vm(
        &overlay,
        vm_runner::disk::Firmware::Bios,
        &o,
        runtime.path(),
    );
    let mut vm = Vm::launch(&cfg).expect("launch QEMU");
    let r = vm.wait_for("ready line", Duration::from_secs(DISK_BOOT_TIMEOUT), |l| {
        l.contains(boot_contract::console::READY_PREFIX)
    });
    let console = vm.lines().join("\n");
    assert!(r.is_err(), "a tampered system reached ready:\n{console}");
    assert!(
        console.contains("verity") && console.contains("corrupted"),
        "no verity error on the console:\n{console}"
    );
}

/// A state partition whose filesystem is damaged: the boot reaches ready, says so in status,
/// and leaves the partition alone; a blank one (all zeros) gets a new filesystem.
#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn a_damaged_state_is_left_alone_and_a_blank_one_is_made_anew() {
    let dir = tempfile::tempdir().unwrap();
    let (overlay, disk) = fresh_overlay(dir.path());
    let state = part(&disk, "virga-state");
    // Garbage over the ext4 superblock.
    poke(&overlay, state.start + 1024, 1024, 0xa5);
    let o = instance(vm_runner::instance::Datasource::NoCloud);
    let runtime = tempfile::tempdir().unwrap();
    let cfg = disk_vm(
        &overlay,
        vm_runner::disk::Firmware::Bios,
        &o,
        runtime.path(),
    );
    let mut g = boot_disk_guest(&cfg, runtime);
    let s = g.status();
    assert!(s.ready && !s.persistent_state);
    assert!(
        s.errors
            .iter()
            .any(|e| e.source == "state" && e.message.contains("left alone")),
        "{:?}",
        s.errors
    );
    g.poweroff();
    // Untouched: the garbage is still there.
    let raw = dir.path().join("after.raw");
    ok(
        Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&overlay)
            .arg(&raw),
        "qemu-utils",
    );
    let sb = disk_image::writer::read_region(&raw, state.start + 1024, 16).unwrap();
    assert!(
        sb.iter().all(|b| *b == 0xa5),
        "the damaged state was written to"
    );

    // All zeros: made anew, and used.
    poke(&overlay, state.start, 1 << 20, 0);
    let runtime = tempfile::tempdir().unwrap();
    let cfg = disk_vm(
        &overlay,
        vm_runner::disk::Firmware::Bios,
        &o,
        runtime.path(),
    );
    let mut g = boot_disk_guest(&cfg, runtime);
    let s = g.status();
    assert!(s.persistent_state, "{:?}", s.errors);
    assert!(
        s.warnings.iter().any(|w| w.message.contains("was blank")),
        "{:?}",
        s.warnings
    );
    g.poweroff();
}

fn build_fails(args: &[&str], spec: Option<&str>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = virga();
    cmd.args(["build", "-q"]).args(args);
    if let Some(text) = spec {
        let p = dir.path().join("virga.toml");
        std::fs::write(&p, text).unwrap();
        cmd.arg("--spec").arg(&p);
    }
    if !args.contains(&"--out") {
        cmd.arg("--out").arg(dir.path().join("out"));
    }
    let o = run(&mut cmd);
    assert!(!o.status.success(), "virga build {args:?} succeeded");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "virga.toml")
        .collect();
    assert!(left.is_empty(), "a failed build left {left:?}");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn unknown_format_is_refused() {
    let e = build_fails(&["--format", "vdi"], None);
    assert!(
        e.contains("unknown disk format `vdi`") && e.contains("qcow2"),
        "{e}"
    );
}

#[test]
#[ignore = "builds the default image; run with --include-ignored (./dev test)"]
fn disk_bad_input_gives_clear_errors_and_no_output() {
    // Contents that do not fit the slot.
    let spec = format!(
        "{}\n",
        image_spec::DEFAULT_SPEC_TOML.replace("usr_size = \"128M\"", "usr_size = \"1M\"")
    );
    let e = build_fails(&["--format", "qcow2"], Some(&spec));
    assert!(
        e.contains("system filesystem") && e.contains("disk.usr_size") && e.contains("1 MiB"),
        "{e}"
    );
    // A missing loader package names the package.
    let dir = tempfile::tempdir().unwrap();
    let o = run(virga()
        .env("VIRGA_GRUB_LIB", dir.path())
        .args(["build", "-q", "--format", "raw", "--out"])
        .arg(dir.path().join("out")));
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("apt-get install grub-pc-bin"), "{e}");
    assert!(!dir.path().join("out").exists());
    // An output directory that cannot be written.
    let o = run(virga().args(["build", "-q", "--format", "raw", "--out", "/proc/virga/out"]));
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("cannot write the output directory /proc/virga"),
        "{e}"
    );
}
