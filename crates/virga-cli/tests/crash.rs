//! End-to-end: power loss. QEMU is killed at random moments of 50 boots that share one state
//! disk; every write the guest makes there (instance id, random seed, run-frequency markers,
//! SSH host keys) goes through a temporary file, fsync, rename and a directory fsync, so the
//! next boot must never read a half-written file back.

mod common;

use std::time::{Duration, Instant};

use common::*;
use vm_runner::instance::Datasource;

/// A small deterministic generator (xorshift), seeded from the clock and printed, so that a
/// failing sequence of kill times can be replayed with `VIRGA_CRASH_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
#[ignore = "boots QEMU; run with --include-ignored (./dev test)"]
fn killing_the_vm_at_random_moments_never_tears_a_file() {
    let seed = std::env::var("VIRGA_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed: VIRGA_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut o = instance(Datasource::NoCloud);
    o.instance_id = Some("i-crash".into());
    o.hostname = "crash-box".into();
    o.state = Some(dir.path().join("state.img"));
    // A per-boot marker and a per-instance script: both write to the state disk.
    o.user_data = Some(
        b"#cloud-config\nbootcmd:\n  - echo boot >> /var/lib/virga/boots.log\nruncmd:\n  - echo once > /var/lib/virga/once.txt\n"
            .to_vec(),
    );

    // One whole boot first, to learn how long a boot takes here.
    let t = Instant::now();
    let g = boot_instance(&o, "");
    let full = t.elapsed();
    g.poweroff();

    let out = default_image();
    for i in 0..50 {
        // Kill anywhere from QEMU's start to a little after the ready line.
        let span = full.as_millis() as u64 + 1000;
        let at = Duration::from_millis(300 + rng.next() % span);
        let mut cfg = vm_config(&out, "");
        let runtime = tempfile::tempdir().unwrap();
        vm_runner::instance::attach(&o, &mut cfg, runtime.path()).unwrap();
        let mut vm = vm_runner::Vm::launch(&cfg).expect("launch QEMU");
        let _ = vm.wait_for("the kill time", at, |_| false);
        vm.kill();
        eprintln!("boot {i}: killed after {} ms", at.as_millis());
    }

    // Then a normal boot: everything it reads back from the state disk is whole.
    let mut g = boot_instance(&o, "");
    let s = g.status();
    assert!(s.ready);
    assert!(s.persistent_state);
    assert!(
        s.errors.is_empty(),
        "a torn file showed up as an error: {:?}",
        s.errors
    );
    let ds = s.datasource.unwrap();
    assert_eq!(ds.instance_id, "i-crash");
    assert!(!ds.new_instance, "the instance-id file was lost or torn");
    assert_eq!(g.sh1("cat /var/lib/virga/instance-id"), "i-crash");
    assert_eq!(g.sh1("wc -c < /var/lib/virga/random-seed"), "64");
    assert_eq!(g.sh1("stat -c %a /var/lib/virga/random-seed"), "600");
    // The per-instance script ran once, whatever the kills did; no temporary file is left.
    assert_eq!(g.sh1("cat /var/lib/virga/once.txt"), "once");
    assert_eq!(
        g.sh1("find /var/lib/virga -name '*virga-tmp*' -o -name '*.tmp' | wc -l"),
        "0"
    );
    // Host keys: both halves of each pair match (the server loaded them and serves them).
    for t in ["ed25519", "ecdsa"] {
        let pubkey = g.sh1(&format!(
            "cut -d' ' -f2 /var/lib/virga/ssh/ssh_host_{t}_key.pub"
        ));
        assert!(pubkey.len() > 40, "{t}: {pubkey}");
    }
    assert!(
        g.vm.lines()
            .iter()
            .any(|l| l.contains("BEGIN SSH HOST KEY KEYS")),
        "no host keys on the console"
    );
    g.poweroff();
}
