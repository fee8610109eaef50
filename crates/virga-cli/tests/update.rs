//! End-to-end: A/B updates of a disk image in QEMU. A v1 disk follows a repository served by
//! `virga update-server`; `virga update apply` installs the signed v2 into slot B and reboots
//! (QEMU runs with -no-reboot: the test starts it again on the same disk, which is a reboot);
//! GRUB tries B, the guest marks it good, the state partition is kept. A QEMU killed in the
//! middle of an install leaves A booting and the install resumable; a slot whose system is
//! tampered with after install rolls back to A by itself, with the reason in
//! `virga update status`; `virga update rollback` goes back on request.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use image_spec::ImageManifest;
use vm_runner::disk::Firmware;

const DISK_BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// A spec for a disk image that trusts `keys` and says which release it is.
fn spec(dir: &Path, keys: &Path, release: &str) -> PathBuf {
    let p = dir.join(format!("{release}.toml"));
    let base = include_str!("../../../virga.toml");
    let text = format!(
        "{base}\n[update]\nkeys = \"{}\"\n\n[[files]]\npath = \"/usr/share/virga/release\"\ncontent = \"{release}\\n\"\n",
        keys.display()
    );
    std::fs::write(&p, text).unwrap();
    p
}

fn build(dir: &Path, spec: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let o = run(virga()
        .args(["build", "-q", "--format", "raw,qcow2", "--spec"])
        .arg(spec)
        .arg("--out")
        .arg(&out));
    assert!(
        o.status.success(),
        "build {name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// `virga update-server` on a free loopback port; killed on drop.
struct Server(Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(repo: &Path) -> Server {
    let port = vm_runner::free_port().unwrap();
    let child = virga()
        .args(["update-server"])
        .arg(repo)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "update-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server(child, port)
}

fn opts(port: u16) -> vm_runner::instance::InstanceOptions {
    let mut o = instance(vm_runner::instance::Datasource::NoCloud);
    o.instance_id = Some("i-update".into());
    o.hostname = "updated".into();
    o.cloud_config_sections = vec![(
        "virga.update".into(),
        serde_json::json!({ "url": format!("http://10.0.2.2:{port}/"), "channel": "stable" }),
    )];
    o
}

fn launch(disk: &Path, o: &vm_runner::instance::InstanceOptions) -> (Vm, tempfile::TempDir) {
    let runtime = tempfile::tempdir().unwrap();
    let accel = vm_runner::accel::choose(vm_runner::AccelChoice::Auto);
    let boot = vm_runner::disk::DiskBoot::new(disk, Firmware::Bios, runtime.path()).unwrap();
    let mut cmdline = vm_runner::KernelCmdline::new("");
    cmdline.panic_stops_vm();
    let mut cfg = VmConfig::for_disk(boot, cmdline, accel);
    cfg.echo = std::env::var_os("VIRGA_TEST_ECHO").is_some();
    vm_runner::instance::attach(o, &mut cfg, runtime.path()).expect("attach datasource");
    (Vm::launch(&cfg).expect("launch QEMU"), runtime)
}

fn boot(disk: &Path, o: &vm_runner::instance::InstanceOptions) -> Guest {
    let (mut vm, runtime) = launch(disk, o);
    let line = vm
        .wait_for("ready line", DISK_BOOT_TIMEOUT, |l| {
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

/// Waits until the update agent's boot step has run (it runs after the ready line).
fn boot_step(g: &mut Guest) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(u) = g.status().update {
            return u;
        }
        assert!(
            Instant::now() < deadline,
            "the update agent's boot step never ran"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn update_status(g: &mut Guest) -> serde_json::Value {
    let text = g.sh1("virga update status --json");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Waits for QEMU to stop (the guest rebooted, and QEMU runs with -no-reboot).
fn wait_reboot(mut g: Guest) {
    assert!(
        g.vm.wait_exit(Duration::from_secs(120)).is_some(),
        "the guest did not reboot:\n{}",
        g.vm.lines().join("\n")
    );
}

#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn a_signed_update_installs_into_the_other_slot_and_rolls_back_when_needed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Keys, two releases, a repository holding v2.
    let o = run(virga().args(["keys", "new", "--out"]).arg(d.join("keys")));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let keys = d.join("keys/keyset.json");
    let v1 = build(d, &spec(d, &keys, "v1"), "v1");
    let v2 = build(d, &spec(d, &keys, "v2"), "v2");
    let version = update::Version::today(update::Timestamp::now()).unwrap();
    let o = run(virga()
        .args([
            "release",
            "--channel",
            "stable",
            "--version",
            &version.to_string(),
            "--from",
        ])
        .arg(&v2)
        .arg("--key")
        .arg(d.join("keys/update.key"))
        .arg("--out")
        .arg(d.join("repo")));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let server = serve(&d.join("repo"));
    let o = opts(server.1);

    // The machine: an overlay of v1's qcow2.
    let disk = d.join("machine.qcow2");
    vm_runner::disk::overlay(&v1.join("virga.qcow2"), "qcow2", &disk).unwrap();

    // 1. v1 boots, marks A good, keeps something on the state partition.
    let mut g = boot(&disk, &o);
    assert_eq!(g.sh1("cat /usr/share/virga/release"), "v1");
    assert!(
        g.sh1("cat /proc/cmdline")
            .contains("virga.slot=A virga.boot=try")
    );
    assert_eq!(boot_step(&mut g)["marked_good"], true);
    g.sh("echo kept > /var/lib/virga/kept.txt; sync");
    let st = update_status(&mut g);
    assert_eq!(st["slot"], "A", "{st}");
    assert_eq!(st["other_slot"], "empty", "{st}");

    // 2. An install killed halfway (once some chunks are written): A still boots, nothing of
    // B is armed.
    g.sh("(virga update apply --json > /run/apply.log 2>&1 &)");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = g.sh1("grep -o '\"chunks_done\": *[0-9]*' /var/lib/virga/update/state.json");
        if st
            .split(':')
            .nth(1)
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
            > 0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the install never started: {}",
            g.sh1("cat /run/apply.log")
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    g.vm.kill();
    let mut g = boot(&disk, &o);
    assert!(g.sh1("cat /proc/cmdline").contains("virga.slot=A"));
    assert_eq!(g.sh1("cat /usr/share/virga/release"), "v1");

    // 3. The install again (resumed where it was cut), then the reboot into B.
    let report = g.sh1("virga update apply --json");
    // The report's JSON line; the console may also carry PID 1's shutdown line by then.
    let json = report
        .lines()
        .rfind(|l| l.trim_start().starts_with('{'))
        .unwrap_or_default();
    let r: serde_json::Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("{e}: {report}\nconsole:\n{}", g.vm.lines().join("\n")));
    assert_eq!(r["installed"], "B", "{r}");
    wait_reboot(g);
    let mut g = boot(&disk, &o);
    assert!(
        g.sh1("cat /proc/cmdline")
            .contains("virga.slot=B virga.boot=try"),
        "GRUB did not try B"
    );
    assert_eq!(g.sh1("cat /usr/share/virga/release"), "v2");
    assert_eq!(g.sh1("cat /var/lib/virga/kept.txt"), "kept");
    assert_eq!(boot_step(&mut g)["marked_good"], true);
    let st = update_status(&mut g);
    assert_eq!(st["slot"], "B", "{st}");
    assert_eq!(st["version"], version.to_string(), "{st}");

    // 4. Back to A on request.
    g.vm.send("virga update rollback\n").unwrap();
    wait_reboot(g);
    let mut g = boot(&disk, &o);
    assert_eq!(g.sh1("cat /usr/share/virga/release"), "v1");
    assert!(g.sh1("cat /proc/cmdline").contains("virga.slot=A"));
    boot_step(&mut g);
    g.poweroff();

    // 5. B's system tampered with on disk: trying B fails dm-verity (the machine resets), and
    // the next boot is A again, with the rollback and its reason in `virga update status`.
    let mut g = boot(&disk, &o);
    let report = g.sh1("virga update apply --json");
    assert!(report.contains("\"installed\":\"B\""), "{report}");
    wait_reboot(g);
    let m = ImageManifest::load(&v1).unwrap().disk.unwrap();
    let usr_b = m.partitions.iter().find(|p| p.label == "usr-B").unwrap();
    let o2 = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c"])
        .arg(format!("write -P 85 {} 512", usr_b.start))
        .arg(&disk)
        .output()
        .unwrap();
    assert!(o2.status.success(), "{o2:?}");
    let (mut vm, _rt) = launch(&disk, &o);
    let r = vm.wait_for("ready line", DISK_BOOT_TIMEOUT, |l| {
        l.contains(boot_contract::console::READY_PREFIX)
    });
    let console = vm.lines().join("\n");
    assert!(r.is_err(), "the tampered slot reached ready:\n{console}");
    assert!(
        console.contains("virga.slot=B") || console.contains("verity"),
        "{console}"
    );
    drop(vm);
    let mut g = boot(&disk, &o);
    assert!(g.sh1("cat /proc/cmdline").contains("virga.slot=A"));
    assert_eq!(g.sh1("cat /usr/share/virga/release"), "v1");
    let step = boot_step(&mut g);
    assert!(
        step["rollback"].as_str().is_some_and(|r| r.contains('B')),
        "{step}"
    );
    let st = update_status(&mut g);
    assert!(st["rollback"]["reason"].is_string(), "{st}");
    g.poweroff();
    drop(server);
}
