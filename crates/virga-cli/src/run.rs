//! `virga run`: boot built artifacts in QEMU.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use boot_contract::ReadyReport;
use boot_contract::console::{POWEROFF_LINE, READY_PREFIX};
use clap::{Args, ValueEnum};
use image_spec::ImageManifest;
use vm_runner::disk::{DiskBoot, Firmware};
use vm_runner::instance::InstanceOptions;
use vm_runner::{AccelChoice, KernelCmdline, Vm, VmConfig, VmError};

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

/// Machine type on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MachineArg {
    /// i440fx + PIIX (QEMU's and OpenStack's default; IDE CD-ROMs).
    Pc,
    /// ICH9, PCIe, no IDE: disks on virtio or NVMe.
    Q35,
}

/// Firmware for `--disk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FirmwareArg {
    /// SeaBIOS (legacy BIOS) on the `pc` machine.
    Bios,
    /// OVMF (UEFI) on the `q35` machine.
    Uefi,
}

/// Arguments of `virga run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Directory with vmlinuz, initramfs.img and manifest.json (direct kernel boot).
    #[arg(long, value_name = "DIR", default_value = "out")]
    pub out: PathBuf,
    /// Boot this disk image through firmware instead (`out/virga.qcow2`, raw, vmdk, vhd). The
    /// image itself is not written: the VM writes to a qcow2 overlay, a fresh one per run, or
    /// the one at --state, which then keeps the instance across runs.
    #[arg(long, value_name = "FILE")]
    pub disk: Option<PathBuf>,
    /// Firmware for --disk: bios (SeaBIOS, machine pc) or uefi (OVMF, machine q35, seeds on
    /// virtio unless --seed-bus says otherwise).
    #[arg(long, value_enum, default_value = "bios", requires = "disk")]
    pub firmware: FirmwareArg,
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
    /// Machine type (default: pc; q35 for --firmware uefi).
    #[arg(long, value_enum)]
    pub machine: Option<MachineArg>,
    /// Print `{"wall_ms", "powered_off", "ready": <ready report>}` as JSON on stdout (with
    /// --expect-ready).
    #[arg(long)]
    pub json: bool,
    /// Forward this host port (on 127.0.0.1) to the guest's SSH port; `virga ssh` finds it.
    #[arg(long, value_name = "PORT")]
    pub ssh_port: Option<u16>,
    /// Forward host TCP port HOST (on 127.0.0.1) to guest port GUEST; repeatable.
    #[arg(
        long = "forward",
        value_name = "HOST:GUEST",
        value_parser = parse_forward,
        conflicts_with = "no_net"
    )]
    pub forwards: Vec<(u16, u16)>,
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
    /// NVMe namespace (`/dev/nvmeNn1`).
    Nvme,
}

/// State disk bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateBusArg {
    /// virtio-blk disk (`/dev/vdX`).
    Virtio,
    /// NVMe namespace (`/dev/nvmeNn1`), as EC2 Nitro attaches EBS volumes.
    Nvme,
}

impl SeedBusArg {
    fn drive_kind(self) -> vm_runner::DriveKind {
        match self {
            SeedBusArg::Cdrom => vm_runner::DriveKind::Cdrom,
            SeedBusArg::Virtio => vm_runner::DriveKind::Virtio,
            SeedBusArg::Nvme => vm_runner::DriveKind::Nvme,
        }
    }
}

/// Instance and datasource options of `virga run`.
#[derive(Debug, Args)]
pub struct InstanceArgs {
    /// Datasource to give the guest. By default virga generates the metadata: a fresh
    /// instance id, the hostname, virga's SSH key and your ~/.ssh/id_{ed25519,ecdsa,rsa}.pub.
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
    /// Seed disk bus (nocloud, configdrive); default cdrom, virtio on the q35 that
    /// --firmware uefi picks.
    #[arg(long, value_enum)]
    pub seed_bus: Option<SeedBusArg>,
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
    /// host keys and the random seed survive reboots. With --disk: the qcow2 overlay the VM
    /// writes to (the disk's own state partition lives in it), created when missing.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// State disk bus: virtio (`/dev/vdX`) or nvme (`/dev/nvmeNn1`, as on EC2 Nitro).
    #[arg(long, value_enum, default_value = "virtio")]
    pub state_bus: StateBusArg,
    /// Point the guest's update agent at this repository (`virga update-server`, or any static
    /// HTTP server): adds a `virga.update` cloud-config section with this `url` (and
    /// `--update-channel`) to the user-data. From the guest, the host is 10.0.2.2.
    #[arg(long, value_name = "URL")]
    pub update_url: Option<String>,
    /// The channel for `--update-url`.
    #[arg(
        long,
        value_name = "CHANNEL",
        default_value = "stable",
        requires = "update_url"
    )]
    pub update_channel: String,
    /// Make the VM look like an instance of the datasource's cloud (SMBIOS system strings as EC2
    /// or OpenStack present them) and let the guest choose its datasources from its image's
    /// list, as it would there, instead of passing `virga.ds=`.
    #[arg(long)]
    pub as_cloud: bool,
    /// Extra argument for the metadata server, e.g. `--metadata-server-arg=--fault=hang`.
    #[arg(
        long = "metadata-server-arg",
        value_name = "ARG",
        allow_hyphen_values = true
    )]
    pub server_args: Vec<String>,
}

impl InstanceArgs {
    fn options(&self, default_seed_bus: SeedBusArg) -> anyhow::Result<InstanceOptions> {
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
        o.seed_bus = self.seed_bus.unwrap_or(default_seed_bus).drive_kind();
        o.state_bus = match self.state_bus {
            StateBusArg::Virtio => vm_runner::DriveKind::Virtio,
            StateBusArg::Nvme => vm_runner::DriveKind::Nvme,
        };
        o.instance_id = self.instance_id.clone();
        o.hostname = self.hostname.clone();
        o.state = self.state.clone();
        o.server_args = self.server_args.clone();
        o.as_cloud = self.as_cloud;
        if let Some(url) = &self.update_url {
            o.cloud_config_sections.push((
                "virga.update".into(),
                serde_json::json!({ "url": url, "channel": self.update_channel }),
            ));
        }
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
    let runtime = tempfile::Builder::new()
        .prefix("virga-run-")
        .tempdir()
        .context("cannot create a runtime directory")?;
    let uefi = args.disk.is_some() && args.firmware == FirmwareArg::Uefi;
    let machine = args.machine.unwrap_or(if uefi {
        MachineArg::Q35
    } else {
        MachineArg::Pc
    });
    // The q35 that UEFI picks by itself has no IDE for a CD-ROM: seeds go on virtio there.
    let default_seed_bus = if uefi && args.machine.is_none() {
        SeedBusArg::Virtio
    } else {
        SeedBusArg::Cdrom
    };
    let mut instance = args.instance.options(default_seed_bus)?;
    let mut cfg = match &args.disk {
        Some(disk) => {
            let (image, instance_id) =
                disk_overlay(disk, args.instance.state.as_deref(), runtime.path())?;
            if instance.instance_id.is_none() {
                instance.instance_id = instance_id;
            }
            // The disk carries its own state partition.
            instance.state = None;
            let firmware = match args.firmware {
                FirmwareArg::Bios => Firmware::Bios,
                FirmwareArg::Uefi => Firmware::Uefi,
            };
            let boot = DiskBoot::new(&image, firmware, runtime.path())?;
            let mut cmdline = KernelCmdline::new("");
            cmdline.panic_stops_vm();
            if let Some(extra) = &args.append {
                cmdline.append(extra);
            }
            VmConfig::for_disk(boot, cmdline, accel)
        }
        None => {
            let (kernel, initrd) = vm_runner::artifacts(&args.out)?;
            let manifest = ImageManifest::load(&args.out).with_context(|| {
                format!(
                    "{}: no readable manifest.json; run `virga build`",
                    args.out.display()
                )
            })?;
            let mut cmdline = KernelCmdline::new(&manifest.cmdline);
            cmdline.panic_stops_vm();
            if let Some(extra) = &args.append {
                cmdline.append(extra);
            }
            VmConfig::new(kernel, initrd, cmdline, accel)
        }
    };
    cfg.machine = match machine {
        MachineArg::Pc => vm_runner::Machine::Pc,
        MachineArg::Q35 => vm_runner::Machine::Q35,
    };
    cfg.memory_mb = args.memory;
    cfg.cpus = args.cpus;
    cfg.log_file = args.log.clone();
    let attached = vm_runner::instance::attach(&instance, &mut cfg, runtime.path())?;
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
    add_forwards(&mut cfg, args.ssh_port, &args.forwards)?;
    if let Some(port) = args.ssh_port {
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
            args.disk.as_deref().unwrap_or(&args.out).display()
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

/// The image a disk boot writes to: a fresh overlay of `disk` in `runtime`, or the overlay at
/// `state` (created when missing; refused when `disk` was rebuilt since). Returns it and, with
/// `state`, the instance id kept next to it.
fn disk_overlay(
    disk: &std::path::Path,
    state: Option<&std::path::Path>,
    runtime: &std::path::Path,
) -> anyhow::Result<(PathBuf, Option<String>)> {
    let format = vm_runner::disk::detect_format(disk)?;
    let meta = std::fs::metadata(disk).with_context(|| format!("{}", disk.display()))?;
    let stamp = format!(
        "{}\n{}\n{:?}\n",
        disk.canonicalize()?.display(),
        meta.len(),
        meta.modified().ok()
    );
    let Some(state) = state else {
        let ov = runtime.join("disk.qcow2");
        vm_runner::disk::overlay(disk, format, &ov)?;
        return Ok((ov, None));
    };
    let sidecar = |ext: &str| {
        let mut name = state
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(ext);
        state.with_file_name(name)
    };
    let base = sidecar(".base");
    if state.exists() {
        let was = std::fs::read_to_string(&base).unwrap_or_default();
        anyhow::ensure!(
            was == stamp,
            "--state {} was made on top of another build of {}; delete it (and {}) to start a \
             fresh instance on this one",
            state.display(),
            disk.display(),
            base.display()
        );
    } else {
        vm_runner::disk::overlay(disk, format, state)?;
        std::fs::write(&base, &stamp).with_context(|| format!("{}", base.display()))?;
    }
    let id_file = sidecar(".instance-id");
    let id = match std::fs::read_to_string(&id_file) {
        Ok(id) if !id.trim().is_empty() => id.trim().to_owned(),
        _ => {
            let id = metadata_server::InstanceSpec::generate_instance_id()?;
            std::fs::write(&id_file, format!("{id}\n"))
                .with_context(|| format!("{}", id_file.display()))?;
            id
        }
    };
    Ok((state.to_owned(), Some(id)))
}

/// Parses `--forward HOST:GUEST` (two TCP ports, neither 0).
fn parse_forward(s: &str) -> Result<(u16, u16), String> {
    let (host, guest) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}`: expected HOST:GUEST, e.g. 2222:2222"))?;
    let port = |p: &str| match p.parse::<u16>() {
        Ok(n) if n != 0 => Ok(n),
        _ => Err(format!("`{p}` is not a TCP port (1-65535)")),
    };
    Ok((port(host)?, port(guest)?))
}

/// Adds the `--ssh-port` (to guest port 22) and `--forward` forwards to the user-mode network,
/// all bound to 127.0.0.1 on the host.
fn add_forwards(
    cfg: &mut VmConfig,
    ssh_port: Option<u16>,
    forwards: &[(u16, u16)],
) -> anyhow::Result<()> {
    let Some(fwds) = cfg.user_net.as_mut() else {
        anyhow::ensure!(
            forwards.is_empty(),
            "--forward needs QEMU user-mode networking, which this VM does not use"
        );
        return Ok(());
    };
    let all = ssh_port
        .map(|p| (p, 22))
        .into_iter()
        .chain(forwards.iter().copied());
    for (host_port, guest_port) in all {
        anyhow::ensure!(
            !fwds.iter().any(|f| f.host_port == host_port),
            "host port {host_port} is forwarded twice"
        );
        fwds.push(vm_runner::PortForward {
            host_addr: "127.0.0.1".into(),
            host_port,
            guest_port,
        });
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied())).map(|c| c.run)
    }

    fn cfg() -> VmConfig {
        VmConfig::new(
            "k".into(),
            "i".into(),
            KernelCmdline::new("console=ttyS0"),
            vm_runner::Accel::Tcg { reason: "t".into() },
        )
    }

    #[test]
    fn disk_overlay_keeps_the_instance_and_refuses_a_rebuilt_disk() {
        let d = tempfile::tempdir().unwrap();
        let disk = d.path().join("virga.raw");
        std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
        // Without --state: a fresh overlay in the runtime directory, no kept instance id.
        let (ov, id) = disk_overlay(&disk, None, d.path()).unwrap();
        assert_eq!(ov, d.path().join("disk.qcow2"));
        assert!(id.is_none());
        assert_eq!(vm_runner::disk::detect_format(&ov).unwrap(), "qcow2");
        // With --state: made once, reused with the same instance id.
        let state = d.path().join("vm.qcow2");
        let (a, id1) = disk_overlay(&disk, Some(&state), d.path()).unwrap();
        let (b, id2) = disk_overlay(&disk, Some(&state), d.path()).unwrap();
        assert_eq!(
            (a.as_path(), b.as_path()),
            (state.as_path(), state.as_path())
        );
        assert!(id1.is_some());
        assert_eq!(id1, id2);
        // A rebuilt disk under the same name: the overlay would no longer match it.
        std::fs::write(&disk, vec![0u8; 2 << 20]).unwrap();
        let e = disk_overlay(&disk, Some(&state), d.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("another build") && e.contains("delete it"),
            "{e}"
        );
    }

    #[test]
    fn firmware_needs_a_disk_and_uefi_defaults() {
        assert!(parse(&["--firmware", "uefi"]).is_err());
        let a = parse(&["--disk", "x.qcow2", "--firmware", "uefi"]).unwrap();
        assert_eq!(a.firmware, FirmwareArg::Uefi);
        assert!(a.machine.is_none() && a.instance.seed_bus.is_none());
    }

    #[test]
    fn forward_is_repeatable_and_checked() {
        let a = parse(&["--forward", "2222:2222", "--forward", "8080:80"]).unwrap();
        assert_eq!(a.forwards, vec![(2222, 2222), (8080, 80)]);
        assert!(parse(&[]).unwrap().forwards.is_empty());
        assert!(parse(&["--forward", "2222:2222", "--no-net"]).is_err());
        for bad in [
            "2222", "2222:", ":22", "0:22", "22:0", "70000:22", "a:b", "1:2:3",
        ] {
            let e = parse(&["--forward", bad]).unwrap_err().to_string();
            assert!(e.contains("--forward"), "{bad}: {e}");
        }
    }

    #[test]
    fn forwards_reach_user_net_next_to_the_ssh_port() {
        let a = parse(&["--ssh-port", "10022", "--forward", "10222:2222"]).unwrap();
        let mut c = cfg();
        add_forwards(&mut c, a.ssh_port, &a.forwards).unwrap();
        let fwd = |host_port, guest_port| vm_runner::PortForward {
            host_addr: "127.0.0.1".into(),
            host_port,
            guest_port,
        };
        assert_eq!(c.user_net, Some(vec![fwd(10022, 22), fwd(10222, 2222)]));
        let q = c.qemu_args().join(" ");
        assert!(
            q.contains("hostfwd=tcp:127.0.0.1:10022-:22,hostfwd=tcp:127.0.0.1:10222-:2222"),
            "{q}"
        );
    }

    #[test]
    fn forward_errors_are_clear() {
        let mut c = cfg();
        let e = add_forwards(&mut c, Some(10022), &[(10022, 2222)]).unwrap_err();
        assert!(e.to_string().contains("10022 is forwarded twice"), "{e}");
        let mut c = cfg();
        c.user_net = None;
        assert!(add_forwards(&mut c, None, &[(1, 2)]).is_err());
        // --ssh-port alone on a VM without user networking stays a no-op, as before.
        add_forwards(&mut c, Some(10022), &[]).unwrap();
        assert_eq!(c.user_net, None);
    }
}
