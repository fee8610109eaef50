//! End-to-end: build the default image, boot it in QEMU, talk to it over the serial console.

mod common;

use std::time::Duration;

use boot_contract::console::{POWEROFF_LINE, READY_PREFIX, REBOOT_LINE};
use boot_contract::{ReadyReport, StageResult};
use common::*;

#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn virga_run_expect_ready_boots_and_powers_off() {
    let out = default_image();
    let o = run(virga()
        .args([
            "run",
            "--expect-ready",
            "--quiet",
            "--json",
            "--timeout",
            "90",
            "--out",
        ])
        .arg(&out));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "exit {:?}\n{stderr}", o.status.code());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(v["powered_off"], true, "{v}");
    assert!(v["wall_ms"].as_f64().unwrap() > 0.0);
    let report: ReadyReport = serde_json::from_value(v["ready"].clone()).expect("ready report");
    assert_eq!(report.errors, 0, "{report:?}");
    assert!(report.kernel_ms > 0.0 && report.init_ms > 0.0);
    let names: Vec<&str> = report.stages.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "mounts", "console", "modules", "loopback", "rng", "hostname",
    ] {
        assert!(names.contains(&want), "stage {want} missing: {names:?}");
    }
    assert!(
        report
            .stages
            .iter()
            .all(|s| s.result != StageResult::Failed),
        "{report:?}"
    );
}

/// The artifacts boot with plain QEMU and only `console=ttyS0`: nothing `virga run` adds is
/// essential.
#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn plain_qemu_reaches_ready() {
    let out = default_image();
    let mut child = std::process::Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "256",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(out.join("vmlinuz"))
        .arg("-initrd")
        .arg(out.join("initramfs.img"))
        .args(["-append", "console=ttyS0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + BOOT_TIMEOUT;
    let mut seen = Vec::new();
    let ready = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(READY_PREFIX) => break Some(l),
            Ok(l) => seen.push(l),
            Err(_) => break None,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let line = ready.unwrap_or_else(|| panic!("no ready line:\n{}", seen.join("\n")));
    let report = ReadyReport::parse_line(&line).expect("well-formed ready line");
    assert_eq!(report.errors, 0, "{line}");
    // The README's command gives the guest no network and no datasource: the platform is plain
    // QEMU, so no metadata service is probed and nothing waits for one (it used to retry
    // 169.254.169.254 for 60 s).
    let ds_net = report
        .stages
        .iter()
        .find(|s| s.name == "datasource-net")
        .expect("datasource-net stage");
    assert!(ds_net.ms < 5000.0, "{line}");
    assert!(report.uptime_ms < 45_000.0, "{line}");
}

/// The console shell is a supervised service: kill it and it comes back; the `poweroff`
/// applet typed at it powers off cleanly; zombies are reaped.
#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn console_shell_is_supervised_and_poweroff_command_works() {
    let out = default_image();
    let cfg = vm_config(&out, "");
    let (mut vm, _) = boot_ready(&cfg);
    let t = Duration::from_secs(30);
    // The console shell starts right after the ready line, like a getty after rc.
    vm.wait_for("console shell", t, |l| {
        l.contains("service console-shell started")
    })
    .unwrap();
    // Modules no stage waited for were still loading at the ready line; they all load in the
    // background, and the status document says so when they are done (at once when there are
    // none: a lean kernel without /proc/modules has every driver built in).
    let want = image_spec::ImageManifest::load(&out).unwrap().modules.len();
    vm.send("for i in $(seq 60); do grep -qE '\"modules_ms\": [0-9]' /run/virga/status.json && break; sleep 0.5; done; echo MOD''S=$(grep -cE '\"modules_ms\": [0-9]' /run/virga/status.json),$(cat /proc/modules 2>/dev/null | grep -c ' Live ')\n").unwrap();
    let mods = vm
        .wait_for("modules loaded", t, |l| l.starts_with("MODS="))
        .unwrap();
    assert_eq!(
        mods.trim(),
        format!("MODS=1,{want}"),
        "background module loading"
    );

    // An orphaned child must be reaped by PID 1: leave a zombie-to-be behind, then count.
    vm.send("sh -c 'sleep 0.2 &' ; sleep 1; echo ZOMB''IES=$(grep -l '^State:.Z' /proc/[0-9]*/status 2>/dev/null | wc -l)\n").unwrap();
    let z = vm
        .wait_for("zombie count", t, |l| l.starts_with("ZOMBIES="))
        .unwrap();
    assert_eq!(z.trim(), "ZOMBIES=0", "PID 1 left zombies");
    vm.send("kill -9 $$\n").unwrap();
    vm.wait_for("restart notice", t, |l| {
        l.contains("service console-shell killed by SIGKILL")
    })
    .unwrap();
    vm.wait_for("shell restart", t, |l| {
        l.contains("service console-shell started")
    })
    .unwrap();
    vm.send("virga status --json | grep -c '\"restarts\": 1'\n")
        .unwrap();
    vm.wait_for("status shows the restart", t, |l| l.trim() == "1")
        .unwrap();
    vm.send("poweroff\n").unwrap();
    vm.wait_for("power-off line", t, |l| l.contains(POWEROFF_LINE))
        .unwrap();
    let status = vm
        .wait_exit(Duration::from_secs(20))
        .expect("QEMU exits after power-off");
    assert!(status.success());
}

/// Ctrl-Alt-Del makes PID 1 reboot cleanly (QEMU runs with -no-reboot, so it then exits).
#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn ctrl_alt_del_reboots_cleanly() {
    let out = image("minimal", &["--profile", "minimal"]);
    let cfg = vm_config(&out, "");
    let (mut vm, _) = boot_ready(&cfg);
    vm.ctrl_alt_del().unwrap();
    vm.wait_for("reboot line", Duration::from_secs(30), |l| {
        l.contains(REBOOT_LINE)
    })
    .unwrap();
    assert!(vm.wait_exit(Duration::from_secs(20)).is_some());
}

/// The minimal profile has no toolbox and no shell, and still boots to ready.
#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn minimal_profile_boots_without_busybox() {
    let out = image("minimal", &["--profile", "minimal"]);
    let m = image_spec::ImageManifest::load(&out).unwrap();
    assert_eq!(m.busybox, None);
    assert_eq!(m.profile, "minimal");
    let o = run(virga()
        .args([
            "run",
            "--expect-ready",
            "--quiet",
            "--timeout",
            "90",
            "--out",
        ])
        .arg(&out));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A kernel command line that sends init into a panic makes `virga run` fail with the panic
/// exit code instead of waiting for the timeout.
#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn kernel_panic_is_reported() {
    let out = image("minimal", &["--profile", "minimal"]);
    let o = run(virga()
        .args([
            "run",
            "--expect-ready",
            "--quiet",
            "--timeout",
            "90",
            "--append",
            "rdinit=/nonexistent init=/nonexistent",
            "--out",
        ])
        .arg(&out));
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("panic"));
}
