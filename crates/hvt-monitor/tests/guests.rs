//! Runs tiny hand-assembled guests under the real monitor binary (`virga-hvt`) on /dev/kvm:
//! normal halt, console output, a spinning guest, bad hypercall pointers, faults, bad kernels.
//! Each case is bounded by the monitor's `--timeout` and by a kill timer here.
//!
//! The VM cases are `#[ignore]`d so a plain `cargo test` needs no KVM; asked for with
//! `--include-ignored` (as CI does, as root with /dev/kvm), they fail on a host without a usable
//! /dev/kvm rather than pass without running.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hvt_abi::exit;
use hvt_monitor::elf::testing::tiny_elf;

const BASE: u32 = 0x10_0000;

/// Fails the test unless /dev/kvm can be opened read-write (what the monitor does).
fn require_kvm() {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        panic!(
            "this test boots an hvt guest and needs /dev/kvm, which cannot be opened here ({e}); \
             run it on a host with KVM (as root or in the kvm group), or leave out \
             --include-ignored"
        );
    }
}

/// `mov eax, arg; mov dx, port; out dx, eax` (11 bytes).
fn hypercall(port: u16, arg: u32) -> Vec<u8> {
    let mut c = vec![0xb8];
    c.extend_from_slice(&arg.to_le_bytes());
    c.extend_from_slice(&[0x66, 0xba]);
    c.extend_from_slice(&port.to_le_bytes());
    c.push(0xef);
    c
}

/// Code followed (at offset 0x100) by `data`.
fn program(code: &[u8], data: &[u8]) -> Vec<u8> {
    let mut p = code.to_vec();
    assert!(p.len() <= 0x100);
    p.resize(0x100, 0x90);
    p.extend_from_slice(data);
    p
}

fn run(image: &[u8], extra: &[&str], guest_timeout: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("k.elf");
    std::fs::write(&kernel, image).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_virga-hvt"))
        .args(["--mem", "4", "--timeout", guest_timeout])
        .args(extra)
        .arg(&kernel)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("monitor did not exit within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    eprintln!("stderr: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn halt_with(code: u64) -> Vec<u8> {
    let halt = hypercall(hvt_abi::Hypercall::Halt.port(), BASE + 0x100);
    program(&halt, &code.to_le_bytes())
}

#[test]
#[ignore = "boots a VM; run with --include-ignored"]
fn guest_exit_code_and_console() {
    require_kvm();
    let out = run(
        &tiny_elf(&halt_with(42), 0, Some(hvt_abi::ABI_VERSION)),
        &[],
        "20",
    );
    assert_eq!(out.status.code(), Some(42));

    // PUTS "hello\n" then HALT 0. Data: Puts{data,len} at +0x100, Halt{0} at +0x110, text +0x118.
    let mut code = hypercall(hvt_abi::Hypercall::Puts.port(), BASE + 0x100);
    code.extend(hypercall(hvt_abi::Hypercall::Halt.port(), BASE + 0x110));
    let mut data = Vec::new();
    data.extend_from_slice(&u64::from(BASE + 0x118).to_le_bytes());
    data.extend_from_slice(&6u64.to_le_bytes());
    data.extend_from_slice(&0u64.to_le_bytes());
    data.extend_from_slice(b"hello\n");
    let out = run(
        &tiny_elf(&program(&code, &data), 0, Some(hvt_abi::ABI_VERSION)),
        &[],
        "20",
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"hello\n");
}

#[test]
#[ignore = "boots a VM; run with --include-ignored"]
fn console_escape_sequences_are_neutralised() {
    require_kvm();
    // PUTS of text with terminal controls, then HALT 0 (layout as in the test above).
    let text: &[u8] = b"\x1b[2J\x1b]0;title\x07ok\rspoof\xc2\x9b\xff\n";
    let mut code = hypercall(hvt_abi::Hypercall::Puts.port(), BASE + 0x100);
    code.extend(hypercall(hvt_abi::Hypercall::Halt.port(), BASE + 0x110));
    let mut data = Vec::new();
    data.extend_from_slice(&u64::from(BASE + 0x118).to_le_bytes());
    data.extend_from_slice(&(text.len() as u64).to_le_bytes());
    data.extend_from_slice(&0u64.to_le_bytes());
    data.extend_from_slice(text);
    let out = run(
        &tiny_elf(&program(&code, &data), 0, Some(hvt_abi::ABI_VERSION)),
        &[],
        "20",
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        r"\x1b[2J\x1b]0;title\x07ok\x0dspoof\u{009b}\xff".to_owned() + "\n"
    );
}

#[test]
#[ignore = "boots a VM; run with --include-ignored"]
fn spinning_guest_times_out() {
    require_kvm();
    let start = Instant::now();
    let out = run(
        &tiny_elf(&[0xeb, 0xfe], 0, Some(hvt_abi::ABI_VERSION)),
        &[],
        "1",
    );
    assert_eq!(out.status.code(), Some(i32::from(exit::TIMEOUT)));
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
#[ignore = "boots a VM; run with --include-ignored"]
fn bad_hypercalls_are_guest_faults() {
    require_kvm();
    let fault = i32::from(exit::GUEST_FAULT);
    // Argument struct far outside guest memory.
    let code = hypercall(hvt_abi::Hypercall::Halt.port(), 0xffff_fff0);
    let out = run(&tiny_elf(&code, 0, Some(hvt_abi::ABI_VERSION)), &[], "20");
    assert_eq!(out.status.code(), Some(fault));
    // PUTS whose data pointer + length overflows.
    let code = hypercall(hvt_abi::Hypercall::Puts.port(), BASE + 0x100);
    let mut data = (u64::MAX - 3).to_le_bytes().to_vec();
    data.extend_from_slice(&16u64.to_le_bytes());
    let out = run(
        &tiny_elf(&program(&code, &data), 0, Some(hvt_abi::ABI_VERSION)),
        &[],
        "20",
    );
    assert_eq!(out.status.code(), Some(fault));
    assert!(out.stdout.is_empty());
    // Unknown port.
    let code = hypercall(0x5ff, BASE);
    let out = run(&tiny_elf(&code, 0, Some(hvt_abi::ABI_VERSION)), &[], "20");
    assert_eq!(out.status.code(), Some(fault));
    // A write outside guest memory (mov [0x3000_0000], eax) and a bare hlt.
    let code = [0xa3, 0, 0, 0, 0x30, 0, 0, 0, 0];
    let out = run(&tiny_elf(&code, 0, Some(hvt_abi::ABI_VERSION)), &[], "20");
    assert_eq!(out.status.code(), Some(fault));
    let out = run(&tiny_elf(&[0xf4], 0, Some(hvt_abi::ABI_VERSION)), &[], "20");
    assert_eq!(out.status.code(), Some(fault));
}

#[test]
fn bad_kernels_and_options_have_defined_codes() {
    // These never reach KVM, so they run everywhere.
    let bad = i32::from(exit::BAD_KERNEL);
    assert_eq!(run(b"not an elf at all", &[], "5").status.code(), Some(bad));
    assert_eq!(
        run(&tiny_elf(&[0xf4], 0, None), &[], "5").status.code(),
        Some(bad)
    );
    let mut corrupt = tiny_elf(&[0xf4], 0, Some(hvt_abi::ABI_VERSION));
    corrupt[64..72].copy_from_slice(&[0xff; 8]);
    assert_eq!(run(&corrupt, &[], "5").status.code(), Some(bad));
    let usage = i32::from(exit::USAGE);
    let ok = tiny_elf(&[0xf4], 0, Some(hvt_abi::ABI_VERSION));
    assert_eq!(
        run(&ok, &["--block", "/nonexistent/disk"], "5")
            .status
            .code(),
        Some(usage)
    );
    assert_eq!(
        run(&ok, &["--mem", "100000"], "5").status.code(),
        Some(usage)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_virga-hvt"))
        .arg("/nonexistent.elf")
        .output();
    assert_eq!(out.unwrap().status.code(), Some(usage));
}
