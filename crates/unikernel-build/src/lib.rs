//! `unikernel-build`: builds a unikernel application crate for a target and runs it.
//!
//! Pipeline position: application crate → **unikernel-build** → process / QEMU microvm / hvt
//! monitor. Used by `virga unikernel build|run|bench`.
//!
//! * **build** runs `cargo build --release` on the application: for `unix` as a normal host
//!   binary; for `microvm` and `hvt` for `x86_64-unknown-none` with a static relocation model,
//!   virga's linker script and `--cfg virga_target="…"`, in a target directory of their own so the
//!   flags never mix with host builds.
//! * **run** starts the result: `unix` as a process (`VIRGA_BLOCK` names the disk, host sockets
//!   are the network), `microvm` under `qemu-system-x86_64 -M microvm` with TCG, `hvt` under the
//!   `virga-hvt` monitor. The exit code is the application's, or one of [`hvt_abi::exit`].

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod bench;
pub mod load;
pub mod netns;

/// The linker script of bare-metal unikernels.
pub const LINKER_SCRIPT: &str = include_str!("../../unikernel/link.ld");
/// Rust target of the bare-metal targets.
pub const BARE_METAL_TRIPLE: &str = "x86_64-unknown-none";
/// The console line a microvm unikernel prints its exit code on (defined in `hvt-abi`).
pub use hvt_abi::exit::CONSOLE_MARKER as EXIT_MARKER;

/// Where an application runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// A Linux process.
    Unix,
    /// A PVH kernel on QEMU `-M microvm`.
    Microvm,
    /// A kernel on virga's own KVM monitor.
    Hvt,
}

impl Target {
    /// All targets.
    pub const ALL: [Target; 3] = [Target::Unix, Target::Microvm, Target::Hvt];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Target::Unix => "unix",
            Target::Microvm => "microvm",
            Target::Hvt => "hvt",
        }
    }
}

impl std::str::FromStr for Target {
    type Err = UnikernelBuildError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnikernelBuildError::Usage(format!("unknown target {s:?}")))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors of building and running.
#[derive(Debug, thiserror::Error)]
pub enum UnikernelBuildError {
    /// Bad options.
    #[error("{0}")]
    Usage(String),
    /// A tool could not be started.
    #[error("cannot run {tool}")]
    Spawn {
        /// The program.
        tool: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// cargo failed.
    #[error("cargo build failed ({0})")]
    Cargo(String),
    /// Other I/O.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl UnikernelBuildError {
    /// Exit code for this error ([`hvt_abi::exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::Cargo(_) | Self::Io { .. } => hvt_abi::exit::USAGE,
            Self::Spawn { .. } => hvt_abi::exit::HYPERVISOR,
        }
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> UnikernelBuildError {
    let what = what.into();
    move |source| UnikernelBuildError::Io { what, source }
}

/// Which application to build.
#[derive(Debug, Clone)]
pub struct App {
    /// Directory of the crate (holding `Cargo.toml`) or the manifest itself.
    pub path: PathBuf,
    /// Build this example of the crate instead of its binary.
    pub example: Option<String>,
    /// Build this binary of the crate (when it has several).
    pub bin: Option<String>,
}

impl App {
    /// One of the examples bundled with the runtime (`hello`, `block`, `http`).
    pub fn bundled_example(name: &str) -> Self {
        Self {
            path: Path::new(env!("CARGO_MANIFEST_DIR")).join("../unikernel"),
            example: Some(name.to_owned()),
            bin: None,
        }
    }

    fn manifest(&self) -> PathBuf {
        if self.path.extension().is_some_and(|e| e == "toml") {
            self.path.clone()
        } else {
            self.path.join("Cargo.toml")
        }
    }
}

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Target.
    pub target: Target,
    /// Cargo target directory root; each target builds in `<dir>/unikernel-<target>`.
    /// `None`: `CARGO_TARGET_DIR`, else the application workspace's target directory.
    pub target_dir: Option<PathBuf>,
    /// The cargo program.
    pub cargo: OsString,
}

impl BuildOptions {
    /// Options for `target` with the target directory from `CARGO_TARGET_DIR` (else the
    /// application workspace's).
    pub fn new(target: Target) -> Self {
        let target_dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from);
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        Self {
            target,
            target_dir,
            cargo,
        }
    }
}

/// The `CARGO_ENCODED_RUSTFLAGS` of a bare-metal target.
pub fn bare_metal_rustflags(target: Target, linker_script: &Path) -> Option<String> {
    let (cfg, keep) = match target {
        Target::Unix => return None,
        Target::Microvm => ("microvm", "virga_pvh_entry"),
        Target::Hvt => ("hvt", "virga_abi_note"),
    };
    let flags = [
        "-Crelocation-model=static".to_owned(),
        format!("-Clink-arg=-T{}", linker_script.display()),
        format!("-Clink-arg=--undefined={keep}"),
        "--cfg".to_owned(),
        format!("virga_target=\"{cfg}\""),
    ];
    Some(flags.join("\x1f"))
}

/// The target directory cargo uses for `app`'s workspace.
fn workspace_target_dir(app: &App, cargo: &OsString) -> Result<PathBuf, UnikernelBuildError> {
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(app.manifest())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| UnikernelBuildError::Spawn {
            tool: cargo.to_string_lossy().into_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(UnikernelBuildError::Cargo(format!(
            "cargo metadata: {}",
            out.status
        )));
    }
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v["target_directory"].as_str().map(PathBuf::from))
        .ok_or_else(|| UnikernelBuildError::Cargo("cargo metadata has no target_directory".into()))
}

/// Builds `app` for the target; returns the path of the executable.
pub fn build(app: &App, opts: &BuildOptions) -> Result<PathBuf, UnikernelBuildError> {
    let root = match &opts.target_dir {
        Some(d) => d.clone(),
        None => workspace_target_dir(app, &opts.cargo)?,
    };
    let dir = root.join(format!("unikernel-{}", opts.target));
    std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
    let dir = dir
        .canonicalize()
        .map_err(io(format!("resolve {}", dir.display())))?;
    let mut cmd = Command::new(&opts.cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--message-format=json-render-diagnostics")
        .arg("--manifest-path")
        .arg(app.manifest())
        .env("CARGO_TARGET_DIR", &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(e) = &app.example {
        cmd.args(["--example", e]);
    }
    if let Some(b) = &app.bin {
        cmd.args(["--bin", b]);
    }
    let ld = dir.join("link.ld");
    if let Some(flags) = bare_metal_rustflags(opts.target, &ld) {
        std::fs::write(&ld, LINKER_SCRIPT).map_err(io(format!("write {}", ld.display())))?;
        cmd.args(["--target", BARE_METAL_TRIPLE])
            .env("CARGO_ENCODED_RUSTFLAGS", flags);
        cmd.env_remove("RUSTFLAGS");
    }
    tracing::info!(?cmd, "building");
    let out = cmd.output().map_err(|source| UnikernelBuildError::Spawn {
        tool: opts.cargo.to_string_lossy().into_owned(),
        source,
    })?;
    if !out.status.success() {
        return Err(UnikernelBuildError::Cargo(out.status.to_string()));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let exe = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact")
        .filter_map(|v| v["executable"].as_str().map(PathBuf::from))
        .next_back();
    exe.ok_or_else(|| UnikernelBuildError::Cargo("no executable was produced".into()))
}

/// The application's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetMode {
    /// unix: host sockets; microvm: QEMU user networking (DHCP, forwarded ports).
    User,
    /// A TAP interface (microvm and hvt).
    Tap(String),
}

/// How to start the hvt monitor.
#[derive(Debug, Clone)]
pub struct MonitorCommand {
    /// Program.
    pub program: PathBuf,
    /// Arguments before the monitor's own (e.g. `unikernel monitor` for the `virga` binary).
    pub prefix: Vec<OsString>,
}

impl MonitorCommand {
    /// `virga-hvt` from `VIRGA_HVT`, next to the current executable (or one directory up, for
    /// test binaries in `deps/`), or from `PATH`.
    pub fn locate() -> Self {
        let program = std::env::var_os("VIRGA_HVT")
            .map(PathBuf::from)
            .or_else(|| {
                let exe = std::env::current_exe().ok()?;
                let dir = exe.parent()?;
                [dir.join("virga-hvt"), dir.parent()?.join("virga-hvt")]
                    .into_iter()
                    .find(|p| p.is_file())
            });
        Self {
            program: program.unwrap_or_else(|| "virga-hvt".into()),
            prefix: Vec::new(),
        }
    }
}

/// Which accelerator QEMU uses for microvm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Probe whether KVM really runs guests (`vm_runner::accel`), else TCG.
    Auto,
    /// TCG software emulation (always works).
    Tcg,
    /// KVM without probing.
    Kvm,
}

impl Accel {
    /// The QEMU `-accel` value, probing for [`Accel::Auto`].
    pub fn resolve(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
            Accel::Auto => match vm_runner::accel::choose(vm_runner::accel::AccelChoice::Auto) {
                vm_runner::Accel::Kvm => "kvm",
                vm_runner::Accel::Tcg { reason } => {
                    tracing::info!(%reason, "KVM not usable for QEMU; using TCG");
                    "tcg"
                }
            },
        }
    }
}

/// The QEMU machine of the microvm target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// `-M microvm` with virtio-mmio devices (the target's machine).
    Microvm,
    /// `-M pc` (PVH boot too, but no virtio-mmio: no disk or network). Used by the benchmark to
    /// compare with Linux on the same machine type.
    Pc,
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// QEMU machine (microvm target).
    pub machine: Machine,
    /// Target.
    pub target: Target,
    /// The executable from [`build`].
    pub kernel: PathBuf,
    /// File used as block device.
    pub disk: Option<PathBuf>,
    /// Network, if any.
    pub net: Option<NetMode>,
    /// microvm with user networking: TCP ports forwarded as (host address, host port, guest port).
    pub forwards: Vec<(std::net::Ipv4Addr, u16, u16)>,
    /// Guest memory in MiB (microvm, hvt).
    pub memory_mib: u64,
    /// Command line / arguments of the application.
    pub args: Vec<String>,
    /// Stop the application after this long ([`hvt_abi::exit::TIMEOUT`]).
    pub timeout: Option<Duration>,
    /// The hvt monitor.
    pub monitor: MonitorCommand,
    /// microvm accelerator.
    pub accel: Accel,
    /// Forward the application's console to our stdout (else it is only captured).
    pub echo: bool,
    /// Command prefix the target's process runs under (e.g. `ip netns exec NAME`).
    pub wrapper: Vec<OsString>,
}

impl RunOptions {
    /// Defaults for running `kernel` on `target`.
    pub fn new(target: Target, kernel: impl Into<PathBuf>) -> Self {
        Self {
            machine: Machine::Microvm,
            target,
            kernel: kernel.into(),
            disk: None,
            net: None,
            forwards: Vec::new(),
            memory_mib: 64,
            args: Vec::new(),
            timeout: None,
            monitor: MonitorCommand::locate(),
            accel: Accel::Auto,
            echo: true,
            wrapper: Vec::new(),
        }
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The application's exit code, or one of [`hvt_abi::exit`].
    pub exit_code: u8,
    /// Console output (microvm: without the exit marker line).
    pub console: Vec<u8>,
    /// Start of the process → first console byte (≈ application entry).
    pub first_output: Option<Duration>,
    /// Start → exit.
    pub total: Duration,
}

/// The QEMU command line for a microvm run.
pub fn qemu_command(opts: &RunOptions) -> Result<Command, UnikernelBuildError> {
    let mut c = Command::new("qemu-system-x86_64");
    let accel = opts.accel.resolve();
    c.args([
        "-M",
        "microvm,pit=on,rtc=on,isa-serial=on,pic=off",
        "-accel",
        accel,
    ])
    .args(["-cpu", "qemu64,+rdrand", "-m", &opts.memory_mib.to_string()])
    .args([
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-serial",
        "stdio",
        "-no-reboot",
    ])
    .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"])
    .args(["-global", "virtio-mmio.force-legacy=false"])
    .arg("-kernel")
    .arg(&opts.kernel)
    .args(["-append", &opts.args.join(" ")]);
    if let Some(d) = &opts.disk {
        let spec = format!("id=blk0,file={},format=raw,if=none", d.display());
        if d.to_string_lossy().contains(',') {
            return Err(UnikernelBuildError::Usage(
                "disk path must not contain ','".into(),
            ));
        }
        c.args(["-drive", &spec, "-device", "virtio-blk-device,drive=blk0"]);
    }
    match &opts.net {
        None => {}
        Some(NetMode::User) => {
            let mut spec = "user,id=n0,restrict=on".to_owned();
            for (addr, host, guest) in &opts.forwards {
                spec.push_str(&format!(",hostfwd=tcp:{addr}:{host}-:{guest}"));
            }
            c.args(["-netdev", &spec, "-device", "virtio-net-device,netdev=n0"]);
        }
        Some(NetMode::Tap(name)) => {
            let spec = format!("tap,id=n0,ifname={name},script=no,downscript=no");
            c.args(["-netdev", &spec, "-device", "virtio-net-device,netdev=n0"]);
        }
    }
    Ok(c)
}

fn monitor_command(opts: &RunOptions) -> Result<Command, UnikernelBuildError> {
    let mut c = Command::new(&opts.monitor.program);
    c.args(&opts.monitor.prefix)
        .args(["--mem", &opts.memory_mib.to_string()]);
    if let Some(d) = &opts.disk {
        c.arg("--block").arg(d);
    }
    match &opts.net {
        None => {}
        Some(NetMode::Tap(name)) => {
            c.args(["--net", name]);
        }
        Some(NetMode::User) => {
            return Err(UnikernelBuildError::Usage(
                "hvt has no user-mode network; use --net tap (with --tap NAME)".into(),
            ));
        }
    }
    if let Some(t) = opts.timeout {
        // The monitor enforces the budget itself; the runner's kill timer is the backstop.
        c.args(["--timeout", &format!("{:.3}", t.as_secs_f64())]);
    }
    c.arg(&opts.kernel).arg("--").args(&opts.args);
    Ok(c)
}

fn unix_command(opts: &RunOptions) -> Result<Command, UnikernelBuildError> {
    let mut c = Command::new(&opts.kernel);
    c.args(&opts.args);
    match &opts.disk {
        Some(d) => c.env("VIRGA_BLOCK", d),
        None => c.env_remove("VIRGA_BLOCK"),
    };
    if let Some(NetMode::Tap(_)) = opts.net {
        return Err(UnikernelBuildError::Usage(
            "the unix target uses host sockets; run it with --net user".into(),
        ));
    }
    Ok(c)
}

/// Echo filter that hides the exit marker line, passing everything else through as soon as it
/// cannot be the start of a marker line.
#[derive(Debug, Default)]
struct EchoFilter {
    pending: Vec<u8>,
}

impl EchoFilter {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let marker = EXIT_MARKER.as_bytes();
        for &b in bytes {
            self.pending.push(b);
            let p = &self.pending;
            if b == b'\n' {
                if !p.starts_with(marker) {
                    out.extend_from_slice(p);
                }
                self.pending.clear();
            } else if !(marker.starts_with(p) || p.starts_with(marker)) {
                out.extend_from_slice(p);
                self.pending.clear();
            }
        }
    }
}

/// Reads the child's stdout, echoing it, until EOF. Returns (console, time of first byte).
fn pump(mut out: impl Read, echo: bool, start: Instant) -> (Vec<u8>, Option<Duration>) {
    let mut console = Vec::new();
    let mut first = None;
    let mut buf = [0u8; 4096];
    let mut filter = EchoFilter::default();
    let stdout = std::io::stdout();
    loop {
        match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                first.get_or_insert_with(|| start.elapsed());
                console.extend_from_slice(&buf[..n]);
                if echo {
                    let mut shown = Vec::new();
                    filter.feed(&buf[..n], &mut shown);
                    let mut s = stdout.lock();
                    let _ = s.write_all(&shown);
                    let _ = s.flush();
                }
            }
        }
    }
    (console, first)
}

fn wait_with_timeout(
    child: &mut Child,
    timeout: Option<Duration>,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if timeout.is_some_and(|t| start.elapsed() >= t) {
            child.kill()?;
            child.wait()?;
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Extracts the exit code from a microvm console, removing the marker line.
pub fn take_exit_marker(console: &mut Vec<u8>) -> Option<u8> {
    let text = String::from_utf8_lossy(console).into_owned();
    let mut code = None;
    let kept: String = text
        .split_inclusive('\n')
        .filter(|l| match l.strip_prefix(EXIT_MARKER) {
            Some(rest) => {
                code = rest.trim().parse().ok();
                false
            }
            None => true,
        })
        .collect();
    *console = kept.into_bytes();
    code
}

/// Runs a built application to its end.
pub fn run(opts: &RunOptions) -> Result<RunOutcome, UnikernelBuildError> {
    if !opts.kernel.is_file() {
        return Err(UnikernelBuildError::Usage(format!(
            "{} does not exist",
            opts.kernel.display()
        )));
    }
    if let Some(d) = &opts.disk
        && !d.is_file()
    {
        return Err(UnikernelBuildError::Usage(format!(
            "disk {} does not exist",
            d.display()
        )));
    }
    let mut cmd = match opts.target {
        Target::Unix => unix_command(opts)?,
        Target::Microvm => qemu_command(opts)?,
        Target::Hvt => monitor_command(opts)?,
    };
    if let Some((program, rest)) = opts.wrapper.split_first() {
        let mut wrapped = Command::new(program);
        wrapped
            .args(rest)
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        cmd = wrapped;
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    tracing::info!(?cmd, "running");
    let start = Instant::now();
    let tool = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .spawn()
        .map_err(|source| UnikernelBuildError::Spawn { tool, source })?;
    let out = child
        .stdout
        .take()
        .ok_or_else(|| UnikernelBuildError::Usage("no stdout".into()))?;
    let echo = opts.echo;
    let pumper = std::thread::spawn(move || pump(out, echo, start));
    // The hvt monitor enforces the timeout itself; give it a grace period before killing it.
    let kill_after = opts.timeout.map(|t| match opts.target {
        Target::Hvt => t + Duration::from_secs(5),
        _ => t,
    });
    let status =
        wait_with_timeout(&mut child, kill_after).map_err(io("wait for the application"))?;
    let total = start.elapsed();
    let (mut console, first_output) = pumper.join().unwrap_or_default();
    let exit_code = match (opts.target, status) {
        (_, None) => hvt_abi::exit::TIMEOUT,
        (Target::Microvm, Some(s)) => match take_exit_marker(&mut console) {
            Some(code) => code,
            // No marker: QEMU ended by itself (0 = reset/triple fault with -no-reboot) or failed.
            None if s.code() == Some(0) => hvt_abi::exit::GUEST_FAULT,
            None => hvt_abi::exit::HYPERVISOR,
        },
        (_, Some(s)) => match s.code() {
            Some(c) => u8::try_from(c).unwrap_or(hvt_abi::exit::GUEST_FAULT),
            // Killed by a signal (e.g. SIGSYS from the monitor's seccomp filter).
            None => hvt_abi::exit::GUEST_FAULT,
        },
    };
    Ok(RunOutcome {
        exit_code,
        console,
        first_output,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustflags_per_target() {
        let ld = Path::new("/x/link.ld");
        assert_eq!(bare_metal_rustflags(Target::Unix, ld), None);
        let hvt = bare_metal_rustflags(Target::Hvt, ld).unwrap();
        let parts: Vec<&str> = hvt.split('\x1f').collect();
        assert!(parts.contains(&"-Clink-arg=-T/x/link.ld"));
        assert!(parts.contains(&"virga_target=\"hvt\""));
        assert!(
            bare_metal_rustflags(Target::Microvm, ld)
                .unwrap()
                .contains("virga_pvh_entry")
        );
        assert_eq!("hvt".parse::<Target>().unwrap(), Target::Hvt);
        assert!("xen".parse::<Target>().is_err());
    }

    #[test]
    fn echo_hides_marker_split_across_reads() {
        let mut f = EchoFilter::default();
        let mut out = Vec::new();
        for chunk in [
            &b"hi\r\nvirga-uni"[..],
            b"kernel-exit: 3\r",
            b"\n",
            b"virgo\n",
            b"v",
        ] {
            f.feed(chunk, &mut out);
        }
        assert_eq!(out, b"hi\r\nvirgo\n");
    }

    #[test]
    fn exit_marker_is_extracted() {
        let mut c = b"hello\r\n\r\nvirga-unikernel-exit: 42\r\n".to_vec();
        assert_eq!(take_exit_marker(&mut c), Some(42));
        assert_eq!(c, b"hello\r\n\r\n");
        let mut none = b"no marker\n".to_vec();
        assert_eq!(take_exit_marker(&mut none), None);
    }

    #[test]
    fn qemu_command_line() {
        let mut o = RunOptions::new(Target::Microvm, "/k");
        o.disk = Some("/d.img".into());
        o.net = Some(NetMode::User);
        o.forwards = vec![(std::net::Ipv4Addr::LOCALHOST, 18080, 8080)];
        o.args = vec!["port=8080".into()];
        o.accel = Accel::Tcg;
        let c = qemu_command(&o).unwrap();
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(joined.contains("-accel tcg"));
        assert!(joined.contains("hostfwd=tcp:127.0.0.1:18080-:8080"));
        assert!(joined.contains("virtio-blk-device,drive=blk0"));
        assert!(joined.contains("-append port=8080"));
        o.disk = Some("/a,b".into());
        assert!(qemu_command(&o).is_err());
    }
}
