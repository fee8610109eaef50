//! End-to-end: the guest's SSH server against the real OpenSSH client (`ssh`, `scp`,
//! `ssh-keyscan`) through a QEMU host forward.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use vm_runner::instance::Datasource;

fn keygen(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen (apt-get install openssh-client)");
    assert!(st.success());
    key
}

fn ssh(key: &Path, port: u16, extra: &[&str], cmd: &str) -> std::process::Output {
    Command::new("timeout")
        .arg("60")
        .arg("ssh")
        .arg("-i")
        .arg(key)
        .args(["-p", &port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=20",
        ])
        .args(extra)
        .arg("root@127.0.0.1")
        .arg(cmd)
        .output()
        .expect("ssh")
}

#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn openssh_client_logs_in_runs_commands_and_copies_files() {
    let keys = tempfile::tempdir().unwrap();
    let good = keygen(keys.path(), "good");
    let bad = keygen(keys.path(), "bad");
    let port = vm_runner::free_port().unwrap();
    let mut o = instance(Datasource::NoCloud);
    o.public_keys = vec![
        std::fs::read_to_string(good.with_extension("pub"))
            .unwrap()
            .trim()
            .to_owned(),
    ];
    let out = default_image();
    let mut cfg = vm_config(&out, "");
    cfg.user_net = Some(vec![vm_runner::PortForward {
        host_addr: "127.0.0.1".into(),
        host_port: port,
        guest_port: 22,
    }]);
    let runtime = tempfile::tempdir().unwrap();
    vm_runner::instance::attach(&o, &mut cfg, runtime.path()).unwrap();
    let (mut vm, _) = boot_ready(&cfg);
    let lines = vm.lines();
    let begin = lines
        .iter()
        .position(|l| l.contains("-----BEGIN SSH HOST KEY FINGERPRINTS-----"));
    assert!(begin.is_some(), "no fingerprint block on the console");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("-----BEGIN SSH HOST KEY KEYS-----"))
    );
    let console_ed25519 = lines
        .iter()
        .find(|l| l.contains("SHA256:") && l.ends_with("(ED25519)"))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(str::to_owned)
        .expect("ed25519 fingerprint line");

    // The ready line promises that the SSH server accepts logins: no retries.
    let uname = ssh(&good, port, &[], "uname -a");
    assert!(
        uname.status.success(),
        "{}",
        String::from_utf8_lossy(&uname.stderr)
    );
    let text = String::from_utf8_lossy(&uname.stdout);
    let manifest = image_spec::ImageManifest::load(&out).unwrap();
    assert!(text.contains(&manifest.kernel.release), "{text}");

    // The host key the server presents is the one printed on the console.
    let scan = Command::new("ssh-keyscan")
        .args(["-t", "ed25519", "-p", &port.to_string(), "127.0.0.1"])
        .output()
        .unwrap();
    let scanned = String::from_utf8_lossy(&scan.stdout).into_owned();
    let kf = keys.path().join("scanned");
    std::fs::write(&kf, &scanned).unwrap();
    let fp = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&kf)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&fp.stdout).contains(&console_ed25519),
        "{scanned}"
    );

    let exit = ssh(&good, port, &[], "exit 7");
    assert_eq!(exit.status.code(), Some(7));

    // scp round trip of 1 MiB.
    let data: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let src = keys.path().join("up.bin");
    std::fs::write(&src, &data).unwrap();
    let scp = |from: &str, to: &str| {
        Command::new("timeout")
            .args(["60", "scp", "-q", "-i"])
            .arg(&good)
            .args(["-P", &port.to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
            ])
            .args([from, to])
            .status()
            .unwrap()
    };
    assert!(scp(src.to_str().unwrap(), "root@127.0.0.1:/tmp/up.bin").success());
    let back = keys.path().join("down.bin");
    assert!(scp("root@127.0.0.1:/tmp/up.bin", back.to_str().unwrap()).success());
    assert_eq!(std::fs::read(&back).unwrap(), data);

    // Wrong key and password logins are refused.
    assert!(!ssh(&bad, port, &[], "true").status.success());
    let pw = ssh(
        &good,
        port,
        &[
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
        ],
        "true",
    );
    assert!(!pw.status.success());

    // Garbage on the port does not take the server down.
    if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
        let _ = std::io::Write::write_all(&mut s, &[0xffu8; 4096]);
    }
    assert!(ssh(&good, port, &[], "true").status.success());

    vm.press_power_button().unwrap();
    vm.wait_for("power-off", Duration::from_secs(30), |l| {
        l.contains(boot_contract::console::POWEROFF_LINE)
    })
    .unwrap();
}
