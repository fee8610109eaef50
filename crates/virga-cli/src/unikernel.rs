//! `virga unikernel …`: build and run unikernel applications on the unix, microvm and hvt
//! targets (see `docs/unikernel.md`). Thin: the work is in `unikernel-build` and `hvt-monitor`.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use unikernel_build::{Accel, App, BuildOptions, MonitorCommand, NetMode, RunOptions, Target};

/// `virga unikernel` subcommands.
#[derive(Debug, Subcommand)]
pub enum UnikernelCommand {
    /// Build an application crate for a target; prints the path of the result.
    Build(BuildArgs),
    /// Build (unless --kernel is given) and run an application; exits with its exit code.
    Run(RunArgs),
    /// Benchmark the bundled examples on every target and print a table.
    Bench(BenchArgs),
    /// The hvt monitor (what `run --target hvt` starts): virga-hvt's command line.
    #[command(hide = true)]
    Monitor {
        /// Monitor arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// HTTP load generator (used by `bench` inside network namespaces); prints JSON.
    #[command(hide = true)]
    Load(LoadArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TargetArg {
    Unix,
    Microvm,
    Hvt,
}

impl From<TargetArg> for Target {
    fn from(t: TargetArg) -> Self {
        match t {
            TargetArg::Unix => Target::Unix,
            TargetArg::Microvm => Target::Microvm,
            TargetArg::Hvt => Target::Hvt,
        }
    }
}

/// Which application.
#[derive(Debug, Args)]
pub struct AppArgs {
    /// Target.
    #[arg(long, value_enum)]
    target: TargetArg,
    /// Application crate directory (default: the bundled runtime crate with --example, else `.`).
    #[arg(value_name = "CRATE")]
    krate: Option<PathBuf>,
    /// Build this example (`hello`, `block`, `http` are bundled with the runtime).
    #[arg(long)]
    example: Option<String>,
    /// Build this binary of the crate.
    #[arg(long)]
    bin: Option<String>,
}

impl AppArgs {
    fn app(&self) -> App {
        match (&self.krate, &self.example) {
            (None, Some(e)) => App::bundled_example(e),
            (krate, example) => App {
                path: krate.clone().unwrap_or_else(|| ".".into()),
                example: example.clone(),
                bin: self.bin.clone(),
            },
        }
    }
}

/// `virga unikernel build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    app: AppArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum NetArg {
    /// unix: host sockets; microvm: QEMU user networking (DHCP, --forward).
    User,
    /// A TAP interface (--tap).
    Tap,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AccelArg {
    Auto,
    Tcg,
    Kvm,
}

/// `virga unikernel run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    app: AppArgs,
    /// Run this already built kernel/binary instead of building.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// File used as the block device.
    #[arg(long)]
    disk: Option<PathBuf>,
    /// Network.
    #[arg(long, value_enum)]
    net: Option<NetArg>,
    /// TAP interface for --net tap.
    #[arg(long, default_value = "virga-tap0")]
    tap: String,
    /// microvm with --net user: forward 127.0.0.1:HOST to guest port GUEST (HOST:GUEST).
    #[arg(long, value_parser = parse_forward)]
    forward: Vec<(u16, u16)>,
    /// Guest memory in MiB (microvm, hvt).
    #[arg(long, default_value_t = 64)]
    memory: u64,
    /// Stop the application after this many seconds (exit code 204).
    #[arg(long)]
    timeout: Option<f64>,
    /// QEMU accelerator for microvm (auto probes whether KVM really runs guests).
    #[arg(long, value_enum, default_value = "auto")]
    accel: AccelArg,
    /// Application arguments (its command line).
    #[arg(last = true)]
    args: Vec<String>,
}

fn parse_forward(s: &str) -> Result<(u16, u16), String> {
    let (h, g) = s.split_once(':').ok_or("expected HOST:GUEST")?;
    Ok((
        h.parse().map_err(|_| "bad host port")?,
        g.parse().map_err(|_| "bad guest port")?,
    ))
}

/// `virga unikernel bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Boot samples per target.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Seconds of HTTP load per target.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Directory of a virga Linux image for the boot baseline (skipped when absent).
    #[arg(long, default_value = "out")]
    out: PathBuf,
}

/// `virga unikernel load` (hidden).
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Server address.
    #[arg(long)]
    addr: SocketAddr,
    /// Seconds of load.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Wait up to this many seconds for the server to answer first.
    #[arg(long, default_value_t = 0.0)]
    wait: f64,
    /// Send `GET /quit` afterwards.
    #[arg(long)]
    quit: bool,
}

/// Prints a build/run error with its causes; returns its documented exit code.
fn report(e: &unikernel_build::UnikernelBuildError) -> ExitCode {
    eprintln!("virga: error: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        eprintln!("  caused by: {s}");
        src = s.source();
    }
    ExitCode::from(e.exit_code())
}

fn self_monitor() -> anyhow::Result<MonitorCommand> {
    Ok(MonitorCommand {
        program: std::env::current_exe().context("locating the virga executable")?,
        prefix: vec!["unikernel".into(), "monitor".into()],
    })
}

/// Runs a `virga unikernel` subcommand.
pub fn run(cmd: UnikernelCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        UnikernelCommand::Build(a) => {
            let path =
                unikernel_build::build(&a.app.app(), &BuildOptions::new(a.app.target.into()))?;
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        UnikernelCommand::Run(a) => {
            let target: Target = a.app.target.into();
            let kernel = match &a.kernel {
                Some(k) => k.clone(),
                None => match unikernel_build::build(&a.app.app(), &BuildOptions::new(target)) {
                    Ok(k) => k,
                    Err(e) => return Ok(report(&e)),
                },
            };
            let mut o = RunOptions::new(target, kernel);
            o.monitor = self_monitor()?;
            o.disk = a.disk;
            o.net = a.net.map(|n| match n {
                NetArg::User => NetMode::User,
                NetArg::Tap => NetMode::Tap(a.tap.clone()),
            });
            o.forwards = a
                .forward
                .iter()
                .map(|(h, g)| (Ipv4Addr::LOCALHOST, *h, *g))
                .collect();
            o.memory_mib = a.memory;
            o.timeout = a.timeout.map(Duration::from_secs_f64);
            o.accel = match a.accel {
                AccelArg::Auto => Accel::Auto,
                AccelArg::Tcg => Accel::Tcg,
                AccelArg::Kvm => Accel::Kvm,
            };
            o.args = a.args;
            match unikernel_build::run(&o) {
                Ok(out) => Ok(ExitCode::from(out.exit_code)),
                Err(e) => Ok(report(&e)),
            }
        }
        UnikernelCommand::Bench(a) => {
            let cfg = unikernel_build::bench::BenchConfig {
                runs: a.runs.max(1),
                http_seconds: a.seconds,
                concurrency: a.concurrency.max(1),
                build: BuildOptions::new(Target::Unix),
                monitor: self_monitor()?,
                linux_out: a.out.is_dir().then_some(a.out),
                load_command: Some((
                    std::env::current_exe()?,
                    vec!["unikernel".into(), "load".into()],
                )),
            };
            print!("{}", unikernel_build::bench::run(&cfg)?);
            Ok(ExitCode::SUCCESS)
        }
        UnikernelCommand::Monitor { args } => Ok(ExitCode::from(hvt_monitor::cli::main(args))),
        UnikernelCommand::Load(a) => {
            if a.wait > 0.0 {
                let start = std::time::Instant::now();
                while start.elapsed().as_secs_f64() < a.wait
                    && !matches!(
                        unikernel_build::load::get(a.addr, "/", Duration::from_secs(10)),
                        Ok((200, _))
                    )
                {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            let r = unikernel_build::load::run(
                a.addr,
                "/",
                a.concurrency.max(1),
                Duration::from_secs_f64(a.seconds),
                u64::MAX,
            );
            if a.quit {
                let _ = unikernel_build::load::get(a.addr, "/quit", Duration::from_secs(30));
            }
            println!(
                "{}",
                serde_json::json!({"ok": r.ok, "errors": r.errors, "seconds": r.elapsed.as_secs_f64()})
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
