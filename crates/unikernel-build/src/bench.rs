//! `virga unikernel bench`: one run, printed as a table. Image sizes per target; boot time from
//! process start to the application's first console output for each target, against the virga
//! Linux image booting to PID 1 under the same QEMU (when `out/` holds one); the hvt monitor's own
//! start-up cost against a plain fork/exec; HTTP requests/s of the `http` example per target
//! against the same application as a Linux process.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{
    App, BuildOptions, Machine, MonitorCommand, NetMode, RunOptions, Target, UnikernelBuildError,
    load, netns::TapNamespace,
};

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Boot samples per target (median reported).
    pub runs: usize,
    /// Seconds of HTTP load per target.
    pub http_seconds: f64,
    /// Concurrent HTTP clients.
    pub concurrency: usize,
    /// Build options (the target field is overwritten per target).
    pub build: BuildOptions,
    /// The hvt monitor.
    pub monitor: MonitorCommand,
    /// A virga Linux image (`vmlinuz`, `initramfs.img`, `manifest.json`), if built.
    pub linux_out: Option<PathBuf>,
    /// How to run the load generator inside a network namespace (`virga unikernel load`);
    /// `None` skips the hvt HTTP measurement.
    pub load_command: Option<(PathBuf, Vec<OsString>)>,
}

fn median(mut v: Vec<Duration>) -> Option<Duration> {
    v.sort();
    v.get(v.len() / 2).copied()
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "n/a".into(),
        |d| format!("{:.1} ms", d.as_secs_f64() * 1e3),
    )
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a / b < 0.1 => format!("{:.4}x", a / b),
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "n/a".into(),
    }
}

fn secs(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}

fn free_port() -> Result<u16, UnikernelBuildError> {
    let l =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| UnikernelBuildError::Io {
            what: "free port".into(),
            source,
        })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|source| UnikernelBuildError::Io {
            what: "free port".into(),
            source,
        })
}

fn hvt_available() -> bool {
    Path::new("/dev/kvm").exists()
}

/// Builds `example` for every target.
fn build_all(
    cfg: &BenchConfig,
    example: &str,
) -> Result<Vec<(Target, PathBuf)>, UnikernelBuildError> {
    Target::ALL
        .into_iter()
        .map(|t| {
            let mut b = cfg.build.clone();
            b.target = t;
            crate::build(&App::bundled_example(example), &b).map(|p| (t, p))
        })
        .collect()
}

fn run_opts(cfg: &BenchConfig, target: Target, kernel: &Path) -> RunOptions {
    let mut o = RunOptions::new(target, kernel);
    o.monitor = cfg.monitor.clone();
    o.echo = false;
    o.accel = crate::Accel::Tcg;
    o.timeout = Some(Duration::from_secs(120));
    o
}

/// Spawn → first output of `hello`, `runs` times.
fn boot_samples(
    cfg: &BenchConfig,
    target: Target,
    kernel: &Path,
    machine: Machine,
) -> Vec<Duration> {
    (0..cfg.runs)
        .filter_map(|_| {
            let mut o = run_opts(cfg, target, kernel);
            o.machine = machine;
            o.args = vec!["sleep_ms=0".into()];
            let out = crate::run(&o).ok()?;
            (out.exit_code == 0).then_some(out.first_output).flatten()
        })
        .collect()
}

/// The monitor's own start-up: `virga-hvt --timings` reports main() → first KVM_RUN; the whole
/// process (spawn → exit) is measured here, next to fork/exec of `/bin/true`.
fn hvt_startup(cfg: &BenchConfig, kernel: &Path) -> (Vec<Duration>, Vec<Duration>) {
    let mut setup = Vec::new();
    let mut total = Vec::new();
    for _ in 0..cfg.runs {
        let start = Instant::now();
        let out = Command::new(&cfg.monitor.program)
            .args(&cfg.monitor.prefix)
            .args(["--mem", "16", "--timings", "--timeout", "60"])
            .arg(kernel)
            .arg("sleep_ms=0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        let elapsed = start.elapsed();
        let Ok(out) = out else { continue };
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let Some(us) = stderr
            .lines()
            .find_map(|l| l.strip_prefix("virga-hvt: setup_us="))
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            setup.push(Duration::from_micros(us));
            total.push(elapsed);
        }
    }
    (setup, total)
}

fn fork_exec_true(runs: usize) -> Vec<Duration> {
    (0..runs)
        .filter_map(|_| {
            let start = Instant::now();
            Command::new("/bin/true").status().ok()?;
            Some(start.elapsed())
        })
        .collect()
}

/// The virga Linux image under QEMU TCG (vm-runner, `-M pc`): QEMU start → PID 1, computed as
/// (host time to the ready line) − (PID 1's own time to ready from the ready report).
fn linux_boot(out: &Path) -> Result<Duration, String> {
    let (kernel, initrd) = vm_runner::artifacts(out).map_err(|e| e.to_string())?;
    let manifest = image_spec::ImageManifest::load(out).map_err(|e| e.to_string())?;
    let accel = vm_runner::Accel::Tcg {
        reason: "benchmark under TCG".into(),
    };
    let mut cmdline = vm_runner::KernelCmdline::new(&manifest.cmdline);
    cmdline.panic_stops_vm();
    let cfg = vm_runner::VmConfig::new(kernel, initrd, cmdline, accel);
    let mut vm = vm_runner::Vm::launch(&cfg).map_err(|e| e.to_string())?;
    let line = vm
        .wait_for("ready line", Duration::from_secs(180), |l| {
            l.contains(boot_contract::console::READY_PREFIX)
        })
        .map_err(|e| e.to_string());
    let host = vm.elapsed();
    vm.kill();
    let report = boot_contract::ReadyReport::parse_line(&line?).ok_or("unreadable ready line")?;
    Ok(host.saturating_sub(Duration::from_secs_f64(report.init_ms / 1e3)))
}

/// Waits until `GET /` works.
fn wait_http(addr: SocketAddr, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if matches!(load::get(addr, "/", Duration::from_secs(5)), Ok((200, _))) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn http_local(
    cfg: &BenchConfig,
    target: Target,
    kernel: &Path,
) -> Result<load::LoadResult, String> {
    let host_port = free_port().map_err(|e| e.to_string())?;
    let mut o = run_opts(cfg, target, kernel);
    o.net = Some(NetMode::User);
    let guest_port = if target == Target::Unix {
        host_port
    } else {
        8080
    };
    o.forwards = vec![(Ipv4Addr::LOCALHOST, host_port, guest_port)];
    o.args = vec![format!("port={guest_port}")];
    o.timeout = Some(Duration::from_secs_f64(cfg.http_seconds + 180.0));
    let server = std::thread::spawn(move || crate::run(&o));
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, host_port));
    let result = if wait_http(addr, Duration::from_secs(120)) {
        Ok(load::run(
            addr,
            "/",
            cfg.concurrency,
            Duration::from_secs_f64(cfg.http_seconds),
            u64::MAX,
        ))
    } else {
        Err("server did not answer".to_owned())
    };
    let _ = load::get(addr, "/quit", Duration::from_secs(10));
    let _ = server.join();
    result
}

fn http_hvt(cfg: &BenchConfig, kernel: &Path) -> Result<load::LoadResult, String> {
    let (prog, prefix) = cfg
        .load_command
        .clone()
        .ok_or("no load generator for a namespace")?;
    let ns = TapNamespace::create("bench", 7).map_err(|e| e.to_string())?;
    let mut o = run_opts(cfg, Target::Hvt, kernel);
    o.net = Some(NetMode::Tap(ns.tap.clone()));
    o.args = vec![format!("ip={}/24", ns.guest_ip), "port=8080".into()];
    o.wrapper = ns.exec_prefix();
    o.timeout = Some(Duration::from_secs_f64(cfg.http_seconds + 300.0));
    let server = std::thread::spawn(move || crate::run(&o));
    let url = format!("{}:8080", ns.guest_ip);
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(&prog)
        .args(&prefix)
        .args([
            "--addr",
            &url,
            "--seconds",
            &cfg.http_seconds.to_string(),
            "--wait",
            "120",
        ])
        .args(["--concurrency", "1", "--quit"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| e.to_string())?;
    let _ = server.join();
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(text.trim()).map_err(|e| format!("{e}: {text}"))?;
    Ok(load::LoadResult {
        ok: v["ok"].as_u64().unwrap_or(0),
        errors: v["errors"].as_u64().unwrap_or(0),
        elapsed: Duration::from_secs_f64(v["seconds"].as_f64().unwrap_or(0.0)),
    })
}

fn size(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.len())
}

/// Runs everything and returns the report (a Markdown table with notes).
pub fn run(cfg: &BenchConfig) -> Result<String, UnikernelBuildError> {
    let hello = build_all(cfg, "hello")?;
    let http = build_all(cfg, "http")?;
    let path = |v: &[(Target, PathBuf)], t: Target| {
        v.iter().find(|(x, _)| *x == t).map(|(_, p)| p.clone())
    };
    let mut r = String::new();
    let _ = writeln!(r, "## Image size (release, bytes)\n");
    let _ = writeln!(
        r,
        "| target | hello | http | hello vs MirageOS hello (3.3 MB, published) |"
    );
    let _ = writeln!(r, "|---|---|---|---|");
    for t in Target::ALL {
        let (h, w) = (
            path(&hello, t).and_then(|p| size(&p)),
            path(&http, t).and_then(|p| size(&p)),
        );
        let _ = writeln!(
            r,
            "| {t} | {} | {} | {} |",
            h.map_or("n/a".into(), |v| v.to_string()),
            w.map_or("n/a".into(), |v| v.to_string()),
            ratio(h.map(|v| v as f64), Some(3.3e6)),
        );
    }
    let _ = writeln!(
        r,
        "\nUnikraft hello is ~0.2–0.3 MB (published); unix is a std Linux binary.\n"
    );

    // Boot.
    let _ = writeln!(
        r,
        "## Boot: process start → application's first console output (median of {})\n",
        cfg.runs
    );
    let micro_kernel = path(&hello, Target::Microvm).unwrap_or_default();
    let unix_kernel = path(&hello, Target::Unix).unwrap_or_default();
    let unix_boot = median(boot_samples(
        cfg,
        Target::Unix,
        &unix_kernel,
        Machine::Microvm,
    ));
    let micro_boot = median(boot_samples(
        cfg,
        Target::Microvm,
        &micro_kernel,
        Machine::Microvm,
    ));
    let pc_boot = median(boot_samples(
        cfg,
        Target::Microvm,
        &micro_kernel,
        Machine::Pc,
    ));
    let hvt_kernel = path(&hello, Target::Hvt).unwrap_or_default();
    let (hvt_boot, (hvt_setup, hvt_total)) = if hvt_available() {
        (
            median(boot_samples(
                cfg,
                Target::Hvt,
                &hvt_kernel,
                Machine::Microvm,
            )),
            hvt_startup(cfg, &hvt_kernel),
        )
    } else {
        (None, (Vec::new(), Vec::new()))
    };
    let true_exec = median(fork_exec_true(cfg.runs));
    let linux = match &cfg.linux_out {
        Some(out) => linux_boot(out),
        None => Err("no Linux image (run `virga build` to create out/)".into()),
    };
    let linux_d = linux.as_ref().ok().copied();
    let _ = writeln!(r, "| what | time | ratio |");
    let _ = writeln!(r, "|---|---|---|");
    let _ = writeln!(
        r,
        "| unix hello (fork/exec → first line) | {} | baseline |",
        ms(unix_boot)
    );
    let _ = writeln!(
        r,
        "| microvm hello, QEMU TCG `-M microvm` (QEMU start → first line; incl. 10 ms TSC calibration) | {} | {} of Linux to PID 1 |",
        ms(micro_boot),
        ratio(secs(micro_boot), secs(linux_d))
    );
    let _ = writeln!(
        r,
        "| the same microvm hello ELF on QEMU TCG `-M pc` (QEMU start → first line) | {} | {} of Linux to PID 1 |",
        ms(pc_boot),
        ratio(secs(pc_boot), secs(linux_d))
    );
    match &linux {
        Ok(d) => {
            let _ = writeln!(
                r,
                "| virga Linux image, QEMU TCG `-M pc` (QEMU start → PID 1) | {} | 1.00x |",
                ms(Some(*d))
            );
        }
        Err(e) => {
            let _ = writeln!(
                r,
                "| virga Linux image (QEMU start → PID 1) | skipped: {e} | n/a |"
            );
        }
    }
    let setup = median(hvt_setup);
    let total = median(hvt_total);
    let _ = writeln!(
        r,
        "| hvt monitor start-up: main() → first guest instruction (native) | {} | {} of fork/exec /bin/true |",
        ms(setup),
        ratio(secs(setup), secs(true_exec))
    );
    let _ = writeln!(
        r,
        "| hvt whole run of hello (spawn → exit), PVM guest | {} | {} of fork/exec /bin/true |",
        ms(total),
        ratio(secs(total), secs(true_exec))
    );
    let _ = writeln!(
        r,
        "| hvt hello (spawn → first line), PVM guest | {} | guest side under PVM: not meaningful |",
        ms(hvt_boot)
    );
    let _ = writeln!(r, "| fork/exec /bin/true | {} | |", ms(true_exec));

    // HTTP.
    let _ = writeln!(
        r,
        "\n## HTTP: `http` example, {} s, {} client(s), one request per connection\n",
        cfg.http_seconds, cfg.concurrency
    );
    let _ = writeln!(
        r,
        "| target | requests/s | ok | errors | ratio to Linux process |"
    );
    let _ = writeln!(r, "|---|---|---|---|---|");
    let unix = http_local(
        cfg,
        Target::Unix,
        &path(&http, Target::Unix).unwrap_or_default(),
    );
    let base = unix.as_ref().ok().map(|l| l.rps());
    let mut row = |name: &str, res: &Result<load::LoadResult, String>| {
        let _ = match res {
            Ok(l) => writeln!(
                r,
                "| {name} | {:.1} | {} | {} | {} |",
                l.rps(),
                l.ok,
                l.errors,
                ratio(Some(l.rps()), base)
            ),
            Err(e) => writeln!(r, "| {name} | skipped: {e} | | | |"),
        };
    };
    row("unix (Linux process, host sockets)", &unix);
    let micro = http_local(
        cfg,
        Target::Microvm,
        &path(&http, Target::Microvm).unwrap_or_default(),
    );
    row("microvm (QEMU TCG, user net)", &micro);
    let hvt = if hvt_available() {
        http_hvt(cfg, &path(&http, Target::Hvt).unwrap_or_default())
    } else {
        Err("/dev/kvm absent".into())
    };
    row("hvt (PVM, TAP in a netns)", &hvt);
    Ok(r)
}
