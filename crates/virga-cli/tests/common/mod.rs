//! Shared helpers for the end-to-end tests: the `virga` binary, images built once per test
//! process, and booting them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

pub use vm_runner::{Vm, VmConfig};

/// Why QEMU-booting tests are ignored by a plain `cargo test`.
pub const NEEDS_VM: &str = "boots QEMU; run with --include-ignored (./dev test)";

/// The `virga` binary under test.
pub fn virga() -> Command {
    Command::new(env!("CARGO_BIN_EXE_virga"))
}

/// Runs a command, returning its output; panics with the output if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Directory for test images, inside the workspace's target dir.
pub fn scratch(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let p = target.join("e2e").join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    p
}

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// Builds an image once per test process and returns its output directory.
pub fn image(name: &str, extra_args: &[&str]) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let out = scratch(name);
    if built.lock().unwrap().iter().any(|n| n == name) {
        return out;
    }
    let o = run(virga()
        .arg("build")
        .arg("-q")
        .arg("--out")
        .arg(&out)
        .args(extra_args));
    assert!(
        o.status.success(),
        "virga build {extra_args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    built.lock().unwrap().push(name.to_owned());
    out
}

/// The default image.
pub fn default_image() -> PathBuf {
    image("default", &[])
}

/// A VM config for an output directory, as `virga run` would make it (TCG, no echo).
pub fn vm_config(out: &Path, extra_cmdline: &str) -> VmConfig {
    let manifest = image_spec::ImageManifest::load(out).expect("manifest.json");
    let (k, i) = vm_runner::artifacts(out).unwrap();
    let accel = vm_runner::accel::choose(vm_runner::AccelChoice::Auto);
    let mut cfg = VmConfig::new(
        k,
        i,
        format!("{} panic=-1 {extra_cmdline}", manifest.cmdline),
        accel,
    );
    cfg.echo = std::env::var_os("VIRGA_TEST_ECHO").is_some();
    cfg
}

/// Boot timeout under TCG on a loaded 2-core machine.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// Boots and waits for the ready line.
pub fn boot_ready(cfg: &VmConfig) -> (Vm, boot_contract::ReadyReport) {
    let mut vm = Vm::launch(cfg).expect("launch QEMU");
    let line = vm
        .wait_for("ready line", BOOT_TIMEOUT, |l| {
            l.contains(boot_contract::console::READY_PREFIX)
        })
        .unwrap_or_else(|e| panic!("{e}\nconsole:\n{}", vm.lines().join("\n")));
    let report = boot_contract::ReadyReport::parse_line(&line).expect("ready JSON");
    (vm, report)
}
