//! End-to-end networking: the guest's DHCP client against a real dnsmasq in a network namespace
//! this test creates (QEMU runs inside it on a TAP device), then SSH from the namespace to the
//! leased address; and a network whose DHCP server never answers.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use vm_runner::instance::Datasource;

/// A network namespace with a TAP device at 192.168.77.1/24 and, optionally, dnsmasq on it.
struct Netns {
    name: String,
    dnsmasq: Option<Child>,
    leases: PathBuf,
    _dir: tempfile::TempDir,
}

const TAP: &str = "vtap0";

fn ip(args: &[&str]) {
    let st = Command::new("ip")
        .args(args)
        .status()
        .expect("ip (iproute2)");
    assert!(st.success(), "ip {args:?} failed (this test needs root)");
}

impl Netns {
    fn new(tag: &str, with_dhcp: bool) -> Netns {
        let name = format!("virga-e2e-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        ip(&["netns", "add", &name]);
        let dir = tempfile::tempdir().unwrap();
        let leases = dir.path().join("leases");
        let mut ns = Netns {
            name,
            dnsmasq: None,
            leases,
            _dir: dir,
        };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns.exec(&["ip", "tuntap", "add", "dev", TAP, "mode", "tap"]);
        ns.exec(&["ip", "addr", "add", "192.168.77.1/24", "dev", TAP]);
        ns.exec(&["ip", "link", "set", TAP, "up"]);
        if with_dhcp {
            let child = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns.name,
                    "dnsmasq",
                    "--no-daemon",
                    "--conf-file=/dev/null",
                ])
                .args([
                    "--port=0",
                    "--bind-interfaces",
                    &format!("--interface={TAP}"),
                    "--except-interface=lo",
                ])
                .arg("--dhcp-range=192.168.77.50,192.168.77.60,255.255.255.0,2m")
                .arg(format!("--dhcp-leasefile={}", ns.leases.display()))
                .args([
                    "--dhcp-option=option:router,192.168.77.1",
                    "--dhcp-option=option:dns-server,192.168.77.1",
                ])
                .args([
                    "--dhcp-option=option:mtu,1400",
                    "--dhcp-option=option:domain-search,e2e.test",
                ])
                .arg("--dhcp-option=121,10.99.0.0/16,192.168.77.1,0.0.0.0/0,192.168.77.1")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("dnsmasq (apt-get install dnsmasq-base)");
            ns.dnsmasq = Some(child);
        }
        ns
    }

    fn exec(&self, args: &[&str]) {
        let st = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "{args:?} in {} failed", self.name);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(c) = self.dnsmasq.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn boot_in(
    ns: &Netns,
    opts: &vm_runner::instance::InstanceOptions,
    extra: &str,
) -> (Vm, tempfile::TempDir) {
    let out = default_image();
    let mut cfg = vm_config(&out, extra);
    cfg.tap = Some(TAP.into());
    cfg.netns = Some(ns.name.clone());
    let runtime = tempfile::tempdir().unwrap();
    vm_runner::instance::attach(opts, &mut cfg, runtime.path()).unwrap();
    let (vm, _) = boot_ready(&cfg);
    (vm, runtime)
}

#[test]
#[ignore = "boots QEMU in a network namespace (root); run with --include-ignored (./dev test)"]
fn dhcp_from_dnsmasq_then_ssh_over_the_lease() {
    let ns = Netns::new("dhcp", true);
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("id");
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap()
            .success()
    );
    let mut o = instance(Datasource::NoCloud);
    o.public_keys = vec![
        std::fs::read_to_string(key.with_extension("pub"))
            .unwrap()
            .trim()
            .to_owned(),
    ];
    let (mut vm, _rt) = boot_in(&ns, &o, "");

    // The console's if-info / ip-route lines (CirrOS format) show the lease.
    let lines = vm.lines();
    let info = lines
        .iter()
        .find(|l| l.starts_with("if-info: eth0,up,192.168.77."))
        .unwrap_or_else(|| panic!("{}", lines.join("\n")));
    let addr = info.split(',').nth(2).unwrap().to_owned();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ip-route:10.99.0.0/16 via 192.168.77.1 dev eth0")),
        "{}",
        lines.join("\n")
    );
    assert!(std::fs::read_to_string(&ns.leases).unwrap().contains(&addr));

    // "ready" means the SSH server accepts connections.
    let run = |cmd: &str| {
        Command::new("ip")
            .args(["netns", "exec", &ns.name, "timeout", "60", "ssh", "-i"])
            .arg(&key)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
            ])
            .args(["-o", "ConnectTimeout=20", &format!("root@{addr}"), cmd])
            .output()
            .unwrap()
    };
    let o = run("cat /sys/class/net/eth0/mtu; cat /etc/resolv.conf; virga status --json");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.starts_with("1400\n"), "{text}");
    assert!(
        text.contains("nameserver 192.168.77.1") && text.contains("search e2e.test"),
        "{text}"
    );
    let json_start = text.find('{').unwrap();
    let status: boot_contract::Status = serde_json::from_str(&text[json_start..]).unwrap();
    let net = status.network.unwrap().to_string();
    assert!(net.contains("192.168.77.1") && net.contains(&addr), "{net}");

    // Shutdown releases the lease: dnsmasq forgets it.
    vm.press_power_button().unwrap();
    vm.wait_for("power-off", Duration::from_secs(30), |l| {
        l.contains(boot_contract::console::POWEROFF_LINE)
    })
    .unwrap();
    // dnsmasq rewrites its lease file when it handles the RELEASE: give it time (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&ns.leases).unwrap().contains(&addr)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !std::fs::read_to_string(&ns.leases).unwrap().contains(&addr),
        "lease not released"
    );
}

#[test]
#[ignore = "boots QEMU in a network namespace (root); run with --include-ignored (./dev test)"]
fn silent_dhcp_server_does_not_stop_the_boot() {
    let ns = Netns::new("silent", false);
    let o = instance(Datasource::NoCloud);
    let (mut vm, _rt) = boot_in(&ns, &o, "virga.dhcp_timeout=5");
    let ready = vm
        .lines()
        .into_iter()
        .find(|l| l.contains("virga: ready "))
        .unwrap();
    let report = boot_contract::ReadyReport::parse_line(&ready).unwrap();
    assert!(report.warnings >= 1, "{ready}");
    let net = report.stages.iter().find(|s| s.name == "network").unwrap();
    assert!(net.ms >= 4000.0 && net.ms < 20_000.0, "{net:?}");
    vm.press_power_button().unwrap();
    vm.wait_for("power-off", Duration::from_secs(30), |l| {
        l.contains(boot_contract::console::POWEROFF_LINE)
    })
    .unwrap();
}
