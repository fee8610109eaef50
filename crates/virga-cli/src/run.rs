//! `virga run`: boot built artifacts in QEMU.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use boot_contract::ReadyReport;
use boot_contract::console::{POWEROFF_LINE, READY_PREFIX};
use clap::{Args, ValueEnum};
use image_spec::ImageManifest;
use vm_runner::instance::InstanceOptions;
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
    /// Forward this host port (on 127.0.0.1) to the guest's SSH port; `virga ssh` finds it.
    #[arg(long, value_name = "PORT")]
    pub ssh_port: Option<u16>,
    /// No network card at all (the guest boots without network).
    #[arg(long, conflicts_with = "ssh_port")]
    pub no_net: bool,
    /// Datasource, metadata and state disk.
    #[command(flatten)]
    pub instance: InstanceArgs,
}

/// Where the guest's metadata comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DatasourceArg {
    /// A `cidata` seed disk.
    Nocloud,
    /// A `config-2` config drive.
    Configdrive,
    /// The EC2 instance metadata service (IMDSv2 and v1), at 169.254.169.254 inside the VM.
    Ec2,
    /// The OpenStack metadata service, at 169.254.169.254 inside the VM.
    Openstack,
    /// Nothing: the guest uses its built-in defaults.
    None,
}

/// Seed disk filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SeedFormatArg {
    /// ISO9660 with Rock Ridge and Joliet.
    Iso,
    /// FAT.
    Vfat,
}

/// Seed disk bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SeedBusArg {
    /// IDE CD-ROM (`/dev/sr0`), as OpenStack attaches config drives.
    Cdrom,
    /// virtio-blk disk (`/dev/vdX`).
    Virtio,
}

/// Instance and datasource options of `virga run`.
#[derive(Debug, Args)]
pub struct InstanceArgs {
    /// Datasource to give the guest. By default virga generates the metadata: a fresh
    /// instance id, the hostname, virga's SSH key and your ~/.ssh/id_*.pub.
    #[arg(long, value_enum, default_value = "nocloud")]
    pub datasource: DatasourceArg,
    /// Attach or serve this directory, laid out in the cloud's own format (NoCloud seed files;
    /// a config drive's `openstack/…`; an EC2 `latest/meta-data/…` tree; an OpenStack
    /// `openstack/…` tree), e.g. metadata captured from a real cloud.
    #[arg(long, value_name = "DIR")]
    pub metadata: Option<PathBuf>,
    /// Seed disk filesystem (nocloud, configdrive).
    #[arg(long, value_enum, default_value = "iso")]
    pub seed_format: SeedFormatArg,
    /// Seed disk bus (nocloud, configdrive).
    #[arg(long, value_enum, default_value = "cdrom")]
    pub seed_bus: SeedBusArg,
    /// Instance id (default: kept next to --state, else a fresh one per run).
    #[arg(long, value_name = "ID")]
    pub instance_id: Option<String>,
    /// Hostname the metadata gives.
    #[arg(long, value_name = "NAME", default_value = "virga-vm")]
    pub hostname: String,
    /// User-data file (script, #cloud-config, MIME multipart, gzip…).
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<PathBuf>,
    /// NoCloud network-config, or network_data.json for configdrive/openstack.
    #[arg(long, value_name = "FILE")]
    pub network_config: Option<PathBuf>,
    /// More SSH public key files to inject.
    #[arg(long = "ssh-key", value_name = "FILE")]
    pub ssh_keys: Vec<PathBuf>,
    /// Persistent state disk (ext4 labelled virga-state), created when missing: semaphores,
    /// host keys and the random seed survive reboots.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Extra argument for the metadata server, e.g. `--metadata-server-arg=--fault=hang`.
    #[arg(
        long = "metadata-server-arg",
        value_name = "ARG",
        allow_hyphen_values = true
    )]
    pub server_args: Vec<String>,
}

impl InstanceArgs {
    fn options(&self) -> anyhow::Result<InstanceOptions> {
        use vm_runner::instance::Datasource as D;
        let ds = match self.datasource {
            DatasourceArg::Nocloud => D::NoCloud,
            DatasourceArg::Configdrive => D::ConfigDrive,
            DatasourceArg::Ec2 => D::Ec2,
            DatasourceArg::Openstack => D::OpenStack,
            DatasourceArg::None => D::None,
        };
        let exe = std::env::current_exe().context("cannot find the virga executable")?;
        let mut o = InstanceOptions::new(ds, exe);
        o.metadata_dir = self.metadata.clone();
        o.seed_format = match self.seed_format {
            SeedFormatArg::Iso => seed_image::SeedFormat::Iso,
            SeedFormatArg::Vfat => seed_image::SeedFormat::Vfat,
        };
        o.seed_bus = match self.seed_bus {
            SeedBusArg::Cdrom => vm_runner::DriveKind::Cdrom,
            SeedBusArg::Virtio => vm_runner::DriveKind::Virtio,
        };
        o.instance_id = self.instance_id.clone();
        o.hostname = self.hostname.clone();
        o.state = self.state.clone();
        o.server_args = self.server_args.clone();
        let read =
            |f: &PathBuf| std::fs::read(f).with_context(|| format!("cannot read {}", f.display()));
        o.user_data = self.user_data.as_ref().map(read).transpose()?;
        o.network_config = self.network_config.as_ref().map(read).transpose()?;
        if self.datasource != DatasourceArg::None && self.metadata.is_none() {
            o.public_keys = crate::keys::public_keys()?;
            for f in &self.ssh_keys {
                let text = String::from_utf8_lossy(&read(f)?).into_owned();
                o.public_keys.extend(
                    text.lines()
                        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                        .map(str::to_owned),
                );
            }
        }
        Ok(o)
    }
}

/// What `virga run` leaves in the output directory for `virga ssh`.
pub const RUN_STATE: &str = ".virga-run.json";

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
    let runtime = tempfile::Builder::new()
        .prefix("virga-run-")
        .tempdir()
        .context("cannot create a runtime directory")?;
    let attached =
        vm_runner::instance::attach(&args.instance.options()?, &mut cfg, runtime.path())?;
    if let Some(id) = &attached.instance_id {
        eprintln!(
            "virga: instance {id} ({}) via {:?}",
            args.instance.hostname, args.instance.datasource
        );
    }
    if args.no_net {
        if !cfg.user_net_extra.is_empty() {
            anyhow::bail!("--no-net: the ec2 and openstack datasources need the network");
        }
        cfg.user_net = None;
    }
    if let Some(port) = args.ssh_port {
        if let Some(fwds) = cfg.user_net.as_mut() {
            fwds.push(vm_runner::PortForward {
                host_addr: "127.0.0.1".into(),
                host_port: port,
                guest_port: 22,
            });
        }
        let state = serde_json::json!({ "ssh_port": port, "pid": std::process::id() });
        let _ = std::fs::write(args.out.join(RUN_STATE), format!("{state}\n"));
    }
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
