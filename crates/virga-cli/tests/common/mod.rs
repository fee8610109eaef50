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

/// Which kernel the end-to-end tests boot: `VIRGA_TEST_KERNEL=lean` runs them on the lean
/// kernel (`[kernel] source = "build"`, built once and cached), anything else (or nothing) on
/// the default spec's Debian kernel. docs/kernel.md lists what differs.
pub fn lean_kernel() -> bool {
    std::env::var("VIRGA_TEST_KERNEL").is_ok_and(|v| v == "lean")
}

/// The repository's default spec with the lean kernel: same modules list (each must be built
/// in), same everything else.
pub fn lean_spec_text() -> String {
    let text = image_spec::DEFAULT_SPEC_TOML;
    assert!(
        text.contains("\nsource = \"debian\"\n"),
        "virga.toml changed shape"
    );
    text.replacen(
        "\nsource = \"debian\"\n",
        "\nsource = \"build\"\nconfig = \"cloud\"\n",
        1,
    )
}

/// [`lean_spec_text`] written to a file in the scratch area.
pub fn lean_spec() -> PathBuf {
    let p = scratch("lean.toml");
    std::fs::write(&p, lean_spec_text()).unwrap();
    p
}

/// Builds an image once per test process and returns its output directory. With
/// `VIRGA_TEST_KERNEL=lean`, images built from the default spec get the lean kernel.
pub fn image(name: &str, extra_args: &[&str]) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let lean = lean_kernel() && !extra_args.contains(&"--spec");
    let name = if lean {
        format!("{name}-lean")
    } else {
        name.to_owned()
    };
    let out = scratch(&name);
    if built.lock().unwrap().contains(&name) {
        return out;
    }
    let mut cmd = virga();
    cmd.arg("build")
        .arg("-q")
        .arg("--out")
        .arg(&out)
        .args(extra_args);
    if lean {
        cmd.arg("--spec").arg(lean_spec());
    }
    let o = run(&mut cmd);
    assert!(
        o.status.success(),
        "virga build {extra_args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    built.lock().unwrap().push(name);
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
    let mut cmdline = vm_runner::KernelCmdline::new(&manifest.cmdline);
    cmdline.panic_stops_vm().append(extra_cmdline);
    let mut cfg = VmConfig::new(k, i, cmdline, accel);
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
    let report = boot_contract::ReadyReport::parse_line(&line).unwrap_or_else(|| {
        panic!(
            "ready line is not the report: {line:?}\nconsole:\n{}",
            vm.lines().join("\n")
        )
    });
    (vm, report)
}

/// A booted guest with a console shell, driven over the serial line.
pub struct Guest {
    /// The VM.
    pub vm: Vm,
    /// The ready report.
    pub ready: boot_contract::ReadyReport,
    seq: u32,
    /// Keeps seed images and the metadata directory alive as long as the VM.
    pub runtime: tempfile::TempDir,
}

/// Waits for the console shell, which PID 1 starts right after the ready line.
pub fn wait_shell(vm: &mut Vm) {
    vm.wait_for("console shell", Duration::from_secs(30), |l| {
        l.contains("service console-shell started")
    })
    .unwrap_or_else(|e| panic!("{e}\nconsole:\n{}", vm.lines().join("\n")));
}

/// Boots the default image with this instance (and extra kernel arguments).
pub fn boot_instance(opts: &vm_runner::instance::InstanceOptions, extra_cmdline: &str) -> Guest {
    boot_instance_on(opts, extra_cmdline, vm_runner::Machine::Pc)
}

/// [`boot_instance`] on another machine type.
pub fn boot_instance_on(
    opts: &vm_runner::instance::InstanceOptions,
    extra_cmdline: &str,
    machine: vm_runner::Machine,
) -> Guest {
    boot_instance_with(opts, extra_cmdline, |cfg| cfg.machine = machine)
}

/// [`boot_instance`] with the VM configuration adjusted by `adjust` (memory, machine, …).
pub fn boot_instance_with(
    opts: &vm_runner::instance::InstanceOptions,
    extra_cmdline: &str,
    adjust: impl FnOnce(&mut VmConfig),
) -> Guest {
    let out = default_image();
    let mut cfg = vm_config(&out, extra_cmdline);
    adjust(&mut cfg);
    let runtime = tempfile::tempdir().unwrap();
    vm_runner::instance::attach(opts, &mut cfg, runtime.path()).expect("attach datasource");
    let (mut vm, ready) = boot_ready(&cfg);
    wait_shell(&mut vm);
    Guest {
        vm,
        ready,
        seq: 0,
        runtime,
    }
}

/// Instance options for tests: the metadata server is this test's `virga` binary.
pub fn instance(ds: vm_runner::instance::Datasource) -> vm_runner::instance::InstanceOptions {
    let mut o = vm_runner::instance::InstanceOptions::new(ds, env!("CARGO_BIN_EXE_virga").into());
    o.public_keys = vec![TEST_KEY.to_owned()];
    o
}

/// A syntactically valid ed25519 public key for injection tests.
pub const TEST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGh3KHDLrAa4DoEK0lmKyPg9QVMSYmOJvdtl6JVo8aEk virga-e2e";

impl Guest {
    /// A guest booted by the caller (its console shell started).
    pub fn new(vm: Vm, ready: boot_contract::ReadyReport, runtime: tempfile::TempDir) -> Self {
        Guest {
            vm,
            ready,
            seq: 0,
            runtime,
        }
    }

    /// Runs a shell command on the console and returns its output lines.
    pub fn sh(&mut self, cmd: &str) -> Vec<String> {
        self.seq += 1;
        let (b, e) = (format!("__B{}__", self.seq), format!("__E{}__", self.seq));
        // The extra `echo` ends output that lacks a final newline; its empty line is dropped.
        // The markers are split by '' in the command, so that the terminal's echo of a long
        // command line (wrapped by the shell's line editor) can never look like them.
        let split = |m: &str| format!("{}''{}", &m[..3], &m[3..]);
        self.vm
            .send(&format!(
                "echo {}; {cmd}; echo; echo {}\n",
                split(&b),
                split(&e)
            ))
            .unwrap();
        self.vm
            .wait_for(&e, Duration::from_secs(60), |l| l.trim() == e)
            .unwrap_or_else(|err| panic!("{err}\nconsole:\n{}", self.vm.lines().join("\n")));
        let lines = self.vm.lines();
        let end = lines.iter().rposition(|l| l.trim() == e).unwrap();
        let start = lines[..end]
            .iter()
            .rposition(|l| l.trim() == b)
            .unwrap_or_else(|| panic!("no {b} line; console:\n{}", lines.join("\n")));
        let mut out: Vec<String> = lines[start + 1..end]
            .iter()
            .map(|l| l.trim_end().to_owned())
            .filter(|l| !l.contains("virga:  INFO") && !l.contains("virga:  WARN"))
            .collect();
        if out.last().is_some_and(|l| l.is_empty()) {
            out.pop();
        }
        out
    }

    /// One line of output.
    pub fn sh1(&mut self, cmd: &str) -> String {
        self.sh(cmd).join("\n").trim().to_owned()
    }

    /// The guest's status document.
    pub fn status(&mut self) -> boot_contract::Status {
        let text = self.sh("cat /run/virga/status.json").join("\n");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("status.json: {e}\n{text}"))
    }

    /// Powers off with the `poweroff` applet and waits for QEMU to exit.
    pub fn poweroff(mut self) {
        self.vm.send("poweroff\n").unwrap();
        self.vm
            .wait_for("power-off", Duration::from_secs(30), |l| {
                l.contains(boot_contract::console::POWEROFF_LINE)
            })
            .unwrap();
        assert!(self.vm.wait_exit(Duration::from_secs(20)).is_some());
    }
}
