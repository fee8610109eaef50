//! End to end through QEMU: a Linux guest on the 169.254.169.0/24 slirp network talks to the
//! server that QEMU's `guestfwd=…-cmd:` starts per connection. Ignored by default (it needs a
//! kernel); run with
//!
//! ```text
//! VIRGA_TEST_KERNEL=/path/to/vmlinuz VIRGA_TEST_KMODS=/lib/modules/<ver>/kernel \
//!   cargo test -p metadata-server --test qemu_guestfwd -- --ignored
//! ```
//!
//! `VIRGA_TEST_KMODS` is the `kernel/` directory of that kernel's modules (Debian's cloud
//! kernel has virtio_net as a module). Needs `qemu-system-x86_64`, `busybox-static` and
//! `cpio`. The guest never reaches the host's own 169.254.169.254: the address is inside the
//! slirp network and answered by the guestfwd command.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{BIN, INSTANCE_ID, metadata_dir, secret_file};

/// Modules for virtio-net on Debian's 6.1 cloud kernel, in load order.
const MODULES: &[&str] = &[
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
];

const INIT: &str = r#"#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in MODLIST; do insmod /mods/$m; done
ip link set lo up; ip link set eth0 up
udhcpc -i eth0 -n -q -t 5 -s /dhcp.sh
T=$(printf 'PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 300\r\nConnection: close\r\n\r\n' | nc -w 10 169.254.169.254 80 | tail -n 1)
echo "TOKEN=$T"
printf "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token: $T\r\n\r\nGET /latest/meta-data/public-keys/ HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token: $T\r\nConnection: close\r\n\r\n" | nc -w 10 169.254.169.254 80 | sed 's/^/KA: /'
echo
printf "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token: bogus\r\nConnection: close\r\n\r\n" | nc -w 10 169.254.169.254 80 | head -n 1 | sed 's/^/BAD: /'
echo "GUEST DONE"
poweroff -f
"#;

const DHCP_SCRIPT: &str = r#"#!/bin/sh
case "$1" in bound|renew)
  ip addr flush dev $interface; ip addr add $ip/${mask:-24} dev $interface
  [ -n "$router" ] && ip route add default via ${router%% *} dev $interface
  echo "DHCP: $ip" ;;
esac
"#;

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(name).unwrap_or_else(|| {
        panic!("set {name} (see the comment at the top of tests/qemu_guestfwd.rs)")
    }))
}

fn build_initramfs(work: &Path, kmods: &Path) -> PathBuf {
    let root = work.join("root");
    for d in ["bin", "proc", "sys", "dev", "mods"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("/bin/busybox: apt-get install busybox-static");
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    let mut names = Vec::new();
    for m in MODULES {
        let name = Path::new(m)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        std::fs::copy(kmods.join(m), root.join("mods").join(&name))
            .unwrap_or_else(|e| panic!("{}: {e}", kmods.join(m).display()));
        names.push(name);
    }
    let init = INIT.replace("MODLIST", &names.join(" "));
    std::fs::write(root.join("init"), init).unwrap();
    std::fs::write(root.join("dhcp.sh"), DHCP_SCRIPT).unwrap();
    for f in ["init", "dhcp.sh"] {
        Command::new("chmod")
            .arg("+x")
            .arg(root.join(f))
            .status()
            .unwrap();
    }
    let out = work.join("initrd.cpio");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && find . | cpio -o -H newc --quiet > '{}'",
            root.display(),
            out.display()
        ))
        .status()
        .unwrap();
    assert!(status.success(), "cpio failed (apt-get install cpio)");
    out
}

#[test]
#[ignore = "boots a Linux guest in QEMU; needs VIRGA_TEST_KERNEL and VIRGA_TEST_KMODS"]
fn guest_reaches_the_server_through_guestfwd_cmd() {
    let kernel = env_path("VIRGA_TEST_KERNEL");
    let kmods = env_path("VIRGA_TEST_KMODS");
    let work = tempfile::tempdir().unwrap();
    let initrd = build_initramfs(work.path(), &kmods);
    let md = metadata_dir();
    let key = secret_file(work.path(), "imds.key");
    let access = work.path().join("access.log");
    let log = work.path().join("server.log");
    let argv = metadata_server::qemu::server_argv(
        Path::new(BIN),
        metadata_server::Cloud::Ec2,
        md.path(),
        Some(&key),
        Some(&access),
        Some(&log),
        &[],
    );
    // The standalone binary has no subcommand: drop `metadata-server`.
    let argv: Vec<String> = argv
        .into_iter()
        .filter(|a| a != "metadata-server")
        .collect();
    let netdev = format!(
        "user,id=n0,{}",
        metadata_server::qemu::netdev_options(&argv)
    );
    let out = Command::new("timeout")
        .args([
            "300",
            "qemu-system-x86_64",
            "-M",
            "pc",
            "-accel",
            "tcg",
            "-m",
            "256",
        ])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args([
            "-append",
            "console=ttyS0 quiet panic=-1",
            "-nographic",
            "-no-reboot",
        ])
        .args(["-netdev", &netdev, "-device", "virtio-net-pci,netdev=n0"])
        .output()
        .expect("qemu-system-x86_64 (apt-get install qemu-system-x86)");
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(
        console.contains("GUEST DONE"),
        "guest did not finish:\n{console}"
    );
    assert!(console.contains("DHCP: 169.254.169.15"), "{console}");
    let token = console
        .lines()
        .find_map(|l| l.trim().strip_prefix("TOKEN="))
        .unwrap_or_default();
    assert_eq!(token.len(), 82, "no token:\n{console}");
    assert!(console.contains(&format!("KA: {INSTANCE_ID}")), "{console}");
    assert!(console.contains("0=tester@virga"), "{console}");
    // Two responses on one keep-alive connection (the second follows the first body).
    assert_eq!(console.matches("HTTP/1.1 200 OK").count(), 2, "{console}");
    assert!(
        console.contains("BAD: HTTP/1.1 401 Unauthorized"),
        "{console}"
    );
    let access = std::fs::read_to_string(&access).unwrap();
    assert_eq!(access.lines().count(), 4, "{access}");
    // Logs went to the log file, never into the guest's TCP stream.
    assert!(!console.contains("metadata_server::"), "{console}");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("metadata server starting")
    );
}
