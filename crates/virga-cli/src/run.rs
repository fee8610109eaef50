//! `virga run`: boot built artifacts in QEMU.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use boot_contract::ReadyReport;
use boot_contract::console::{POWEROFF_LINE, READY_PREFIX};
use clap::{Args, ValueEnum};
use image_spec::ImageManifest;
use vm_runner::{AccelChoice, Vm, VmConfig, VmError};

/// Exit codes of `virga run --expect-ready` (documented in docs/cli.md).
pub mod exit {
    /// The guest reached the ready line and powered off cleanly.
    pub const OK: u8 = 0;
    /// No ready line before the timeout.
    pub const TIMEOUT: u8 = 3;
    /// The guest kernel panicked.
    pub const PANIC: u8 = 4;
    /// The VM stopped before the ready line.
    pub const STOPPED: u8 = 5;
    /// Ready, but no clean power-off after the power button.
    pub const NO_POWEROFF: u8 = 6;
}

/// Accelerator selection on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AccelArg {
    /// Probe KVM and fall back to TCG.
    Auto,
    /// KVM without probing.
    Kvm,
    /// Software emulation.
    Tcg,
}

/// Arguments of `virga run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Directory with vmlinuz, initramfs.img and manifest.json.
    #[arg(long, value_name = "DIR", default_value = "out")]
    pub out: PathBuf,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 256)]
    pub memory: u32,
    /// Guest vCPUs.
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    /// Give up after this many seconds (with --expect-ready: waiting for the ready line).
    #[arg(long, value_name = "S")]
    pub timeout: Option<u64>,
    /// Extra kernel command-line arguments, appended to the image's.
    #[arg(long, value_name = "ARGS")]
    pub append: Option<String>,
    /// Also write the serial console to this file.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Boot, wait for the ready line, power off with the ACPI button, exit 0 (or non-zero with
    /// the reason).
    #[arg(long)]
    pub expect_ready: bool,
    /// Do not echo the console (with --expect-ready).
    #[arg(long, short)]
    pub quiet: bool,
    /// Accelerator.
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelArg,
    /// Print `{"wall_ms", "powered_off", "ready": <ready report>}` as JSON on stdout (with
    /// --expect-ready).
    #[arg(long)]
    pub json: bool,
}

/// Runs `virga run`.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let (kernel, initrd) = vm_runner::artifacts(&args.out)?;
    let manifest = ImageManifest::load(&args.out).with_context(|| {
        format!(
            "{}: no readable manifest.json; run `virga build`",
            args.out.display()
        )
    })?;
    let accel = vm_runner::accel::choose(match args.accel {
        AccelArg::Auto => AccelChoice::Auto,
        AccelArg::Kvm => AccelChoice::Kvm,
        AccelArg::Tcg => AccelChoice::Tcg,
    });
    if let vm_runner::Accel::Tcg { reason } = &accel
        && !matches!(args.accel, AccelArg::Tcg)
    {
        eprintln!("virga: KVM not usable ({reason}); using TCG software emulation");
    }
    let mut cmdline = format!("{} panic=-1", manifest.cmdline);
    if let Some(extra) = &args.append {
        cmdline.push(' ');
        cmdline.push_str(extra);
    }
    let mut cfg = VmConfig::new(kernel, initrd, cmdline, accel);
    cfg.memory_mb = args.memory;
    cfg.cpus = args.cpus;
    cfg.log_file = args.log.clone();
    if args.expect_ready {
        cfg.echo = !args.quiet;
        expect_ready(&cfg, args.timeout.unwrap_or(120), args.json)
    } else {
        cfg.interactive = true;
        cfg.echo = true;
        eprintln!(
            "virga: booting {} (serial console; Ctrl-A X quits QEMU)",
            args.out.display()
        );
        let mut vm = Vm::launch(&cfg)?;
        let status = match args.timeout {
            Some(t) => vm.wait_exit(Duration::from_secs(t)),
            None => Some(vm.wait()?),
        };
        Ok(match status {
            Some(s) if s.success() => ExitCode::SUCCESS,
            Some(s) => {
                eprintln!("virga: QEMU exited with {s}");
                ExitCode::from(1)
            }
            None => {
                eprintln!("virga: timed out; VM killed");
                ExitCode::from(exit::TIMEOUT)
            }
        })
    }
}

fn expect_ready(cfg: &VmConfig, timeout: u64, json: bool) -> anyhow::Result<ExitCode> {
    let mut vm = Vm::launch(cfg)?;
    let line = match vm.wait_for("the ready line", Duration::from_secs(timeout), |l| {
        l.contains(READY_PREFIX)
    }) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("virga: {e}");
            if !cfg.echo {
                for l in vm
                    .lines()
                    .iter()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .iter()
                    .rev()
                {
                    eprintln!("  | {l}");
                }
            }
            return Ok(ExitCode::from(match e {
                VmError::Timeout(..) => exit::TIMEOUT,
                VmError::KernelPanic(_) => exit::PANIC,
                VmError::Exited(..) => exit::STOPPED,
                _ => 1,
            }));
        }
    };
    let report = ReadyReport::parse_line(&line);
    let wall = vm.elapsed();
    vm.press_power_button()?;
    let off = vm.wait_for("the power-off line", Duration::from_secs(30), |l| {
        l.contains(POWEROFF_LINE)
    });
    let exited = vm.wait_exit(Duration::from_secs(15));
    let clean = off.is_ok() && exited.is_some_and(|s| s.success());
    match (&report, json) {
        (Some(r), true) => println!(
            "{}",
            serde_json::json!({
                "wall_ms": wall.as_secs_f64() * 1000.0,
                "powered_off": clean,
                "ready": r,
            })
        ),
        (Some(r), false) => eprintln!(
            "virga: ready after {:.2}s wall (guest: kernel {:.0} ms, init→ready {:.0} ms, {} errors, \
             {} warnings){}",
            wall.as_secs_f64(),
            r.kernel_ms,
            r.init_ms,
            r.errors,
            r.warnings,
            if clean { "; powered off cleanly" } else { "" }
        ),
        (None, _) => eprintln!("virga: ready line is malformed: {line}"),
    }
    if !clean {
        eprintln!("virga: the guest did not power off cleanly after the ACPI power button");
        return Ok(ExitCode::from(exit::NO_POWEROFF));
    }
    Ok(ExitCode::from(exit::OK))
}
