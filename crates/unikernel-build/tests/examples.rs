//! End to end: the bundled examples (`hello`, `block`, `http`) built and run on every target —
//! unix as a process, microvm under QEMU TCG, hvt under the monitor on /dev/kvm. Every run is
//! bounded by a timeout. VM tests are `#[ignore]`d so plain `cargo test` stays quick; CI runs
//! them with `--include-ignored` (as root, with /dev/kvm). Once asked for, they run or fail: a
//! missing /dev/kvm (hvt) or missing root (the hvt network namespace) fails the test with what
//! is missing, never passes it unrun.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use unikernel_build::netns::TapNamespace;
use unikernel_build::{
    Accel, App, BuildOptions, MonitorCommand, NetMode, RunOptions, RunOutcome, Target,
};

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn built(target: Target, example: &str) -> PathBuf {
    static CACHE: OnceLock<Mutex<HashMap<(Target, String), PathBuf>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    cache
        .entry((target, example.to_owned()))
        .or_insert_with(|| {
            unikernel_build::build(&App::bundled_example(example), &BuildOptions::new(target))
                .unwrap_or_else(|e| panic!("building {example} for {target}: {e}"))
        })
        .clone()
}

/// The `virga-hvt` binary of this workspace, built on demand.
fn monitor() -> MonitorCommand {
    static MONITOR: OnceLock<PathBuf> = OnceLock::new();
    let program = MONITOR.get_or_init(|| {
        // Test binaries live in <target>/<profile>/deps; build the monitor next to them.
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "hvt-monitor", "--bin", "virga-hvt"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        if let Some(target_dir) = profile_dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target_dir);
        }
        assert!(cmd.status().expect("cargo").success(), "building virga-hvt");
        profile_dir.join("virga-hvt")
    });
    MonitorCommand {
        program: program.clone(),
        prefix: Vec::new(),
    }
}

/// Fails the test unless /dev/kvm can be opened read-write (what the monitor does).
fn require_kvm(what: &str) {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        panic!(
            "{what} runs the hvt target, which needs /dev/kvm, and it cannot be opened here \
             ({e}); run it on a host with KVM (as root or in the kvm group), or leave out \
             --include-ignored"
        );
    }
}

fn opts(target: Target, example: &str) -> RunOptions {
    let mut o = RunOptions::new(target, built(target, example));
    o.timeout = Some(RUN_TIMEOUT);
    o.accel = Accel::Tcg;
    o.echo = false;
    if target == Target::Hvt {
        o.monitor = monitor();
    }
    o
}

fn console(out: &RunOutcome) -> String {
    String::from_utf8_lossy(&out.console).replace('\r', "")
}

fn check_hello(target: Target) {
    let mut o = opts(target, "hello");
    o.args = vec!["exit=42".into()];
    let out = unikernel_build::run(&o).unwrap();
    let text = console(&out);
    assert_eq!(out.exit_code, 42, "console:\n{text}");
    assert!(text.contains("hello from a virga unikernel\n"), "{text}");
    let wall: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("wall clock: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no wall clock line in {text}"));
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        wall.abs_diff(host) < 120,
        "guest wall clock {wall} vs host {host}"
    );
    let slept: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("monotonic: slept "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no monotonic line in {text}"));
    assert!(
        (20_000..5_000_000).contains(&slept),
        "slept {slept} us for a 20 ms sleep"
    );
    assert!(!text.contains(unikernel_build::EXIT_MARKER));
}

fn check_block(target: Target) {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    for boot in 1..=2 {
        let mut o = opts(target, "block");
        o.disk = Some(disk.clone());
        let out = unikernel_build::run(&o).unwrap();
        let text = console(&out);
        assert_eq!(out.exit_code, 0, "boot {boot}:\n{text}");
        assert!(text.contains("block: 2048 sectors of 512 bytes"), "{text}");
        assert!(
            text.contains(&format!("block: boot {boot}: wrote and verified")),
            "{text}"
        );
        if boot == 2 {
            assert!(text.contains("block: data of boot 1 verified"), "{text}");
        }
    }
    // The data really is in the file: header + boot counter 2.
    let bytes = std::fs::read(&disk).unwrap();
    assert_eq!(&bytes[..8], b"VIRGABLK");
    assert_eq!(u64::from_le_bytes(bytes[8..16].try_into().unwrap()), 2);
    // No disk: the application reports it and exits 2.
    let out = unikernel_build::run(&opts(target, "block")).unwrap();
    assert_eq!(out.exit_code, 2, "{}", console(&out));
}

/// `curl` (inside `netns`, if given) until it gets the page or the deadline passes.
fn curl(url: &str, netns: Option<&str>) -> String {
    let start = Instant::now();
    loop {
        let mut c = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "curl"]);
                c
            }
            None => Command::new("curl"),
        };
        let out = c
            .args(["-sS", "-f", "-m", "20", url])
            .output()
            .expect("curl");
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn serve_and_fetch(o: RunOptions, base: &str, netns: Option<&str>) {
    let server = std::thread::spawn(move || unikernel_build::run(&o));
    let index = curl(&format!("{base}/"), netns);
    assert!(
        index.contains("<h1>Hello from a virga unikernel</h1>"),
        "{index}"
    );
    let about = curl(&format!("{base}/about"), netns);
    assert_eq!(about, "virga unikernel http example\n");
    let out = server.join().unwrap().unwrap();
    let text = console(&out);
    assert_eq!(out.exit_code, 0, "{text}");
    assert!(text.contains("http: served 2 requests"), "{text}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.to_owned())
        })
        .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        .unwrap_or(false)
}

#[test]
#[ignore = "builds the examples with cargo; run with --include-ignored"]
fn unix_hello() {
    check_hello(Target::Unix);
}

#[test]
#[ignore = "boots a VM; run with --include-ignored"]
fn microvm_hello() {
    check_hello(Target::Microvm);
}

#[test]
#[ignore = "boots a VM; run with --include-ignored"]
fn hvt_hello() {
    require_kvm("hvt_hello");
    check_hello(Target::Hvt);
}

#[test]
#[ignore = "builds the examples with cargo; run with --include-ignored"]
fn unix_block() {
    check_block(Target::Unix);
}

#[test]
#[ignore = "boots a VM; run with --include-ignored"]
fn microvm_block() {
    check_block(Target::Microvm);
}

#[test]
#[ignore = "boots a VM; run with --include-ignored"]
fn hvt_block() {
    require_kvm("hvt_block");
    check_block(Target::Hvt);
}

#[test]
#[ignore = "builds the examples with cargo; run with --include-ignored"]
fn unix_http() {
    let port = free_port();
    let mut o = opts(Target::Unix, "http");
    o.net = Some(NetMode::User);
    o.args = vec![format!("port={port}"), "requests=2".into()];
    serve_and_fetch(o, &format!("http://127.0.0.1:{port}"), None);
}

#[test]
#[ignore = "boots a VM; run with --include-ignored"]
fn microvm_http() {
    let port = free_port();
    let mut o = opts(Target::Microvm, "http");
    o.net = Some(NetMode::User);
    o.forwards = vec![(Ipv4Addr::LOCALHOST, port, 8080)];
    o.args = vec!["port=8080".into(), "requests=2".into()];
    serve_and_fetch(o, &format!("http://127.0.0.1:{port}"), None);
}

#[test]
#[ignore = "boots a VM; run with --include-ignored"]
fn hvt_http() {
    require_kvm("hvt_http");
    assert!(
        is_root(),
        "hvt_http creates a network namespace with a TAP device, which needs root; run it as \
         root (as CI does), or leave out --include-ignored"
    );
    let ns = TapNamespace::create("test", 9).expect("network namespace with a TAP device");
    let mut o = opts(Target::Hvt, "http");
    o.net = Some(NetMode::Tap(ns.tap.clone()));
    o.wrapper = ns.exec_prefix();
    o.args = vec![
        format!("ip={}/24", ns.guest_ip),
        "port=8080".into(),
        "requests=2".into(),
    ];
    serve_and_fetch(o, &format!("http://{}:8080", ns.guest_ip), Some(&ns.name));
}

#[test]
#[ignore = "boots a VM; run with --include-ignored"]
fn bad_kernels_have_defined_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.elf");
    std::fs::write(&junk, b"this is not an ELF file\n").unwrap();
    // The monitor refuses these before it opens /dev/kvm: they run on any host.
    let mut o = RunOptions::new(Target::Hvt, &junk);
    o.monitor = monitor();
    o.timeout = Some(RUN_TIMEOUT);
    o.echo = false;
    assert_eq!(
        unikernel_build::run(&o).unwrap().exit_code,
        hvt_abi::exit::BAD_KERNEL
    );
    // A microvm kernel has no hvt ABI note: refused, not run.
    let mut o = RunOptions::new(Target::Hvt, built(Target::Microvm, "hello"));
    o.monitor = monitor();
    o.timeout = Some(RUN_TIMEOUT);
    o.echo = false;
    assert_eq!(
        unikernel_build::run(&o).unwrap().exit_code,
        hvt_abi::exit::BAD_KERNEL
    );
    let mut o = RunOptions::new(Target::Microvm, &junk);
    o.accel = Accel::Tcg;
    o.timeout = Some(RUN_TIMEOUT);
    o.echo = false;
    assert_eq!(
        unikernel_build::run(&o).unwrap().exit_code,
        hvt_abi::exit::HYPERVISOR
    );
    let missing = RunOptions::new(Target::Unix, dir.path().join("missing"));
    assert_eq!(
        unikernel_build::run(&missing).unwrap_err().exit_code(),
        hvt_abi::exit::USAGE
    );
}
