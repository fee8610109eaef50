//! `virga build`: spec → artifacts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::Args;
use image_builder::{BuildOptions, DiskFormat, Progress, apt};
use image_spec::{ImageSpec, InitKind, Profile};

/// Arguments of `virga build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Image spec to build (default: ./virga.toml if present, else the built-in default).
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// Output directory; replaced atomically when the build succeeds.
    #[arg(long, value_name = "DIR", default_value = "out")]
    pub out: PathBuf,
    /// Override the spec's profile: `default` or `minimal`.
    #[arg(long)]
    pub profile: Option<Profile>,
    /// Use this prebuilt guest binary instead of building `virga-guest` with cargo.
    #[arg(long, value_name = "PATH")]
    pub guest_binary: Option<PathBuf>,
    /// Also write a bootable disk image in these formats (repeatable or comma-separated):
    /// raw, qcow2 (compressed), vmdk (streamOptimized), vhd (fixed, Azure), containerdisk
    /// (KubeVirt OCI archive). Default: the spec's `disk.formats` (none in the default spec).
    #[arg(long = "format", value_name = "FORMAT", value_delimiter = ',', value_parser = parse_format)]
    pub formats: Vec<DiskFormat>,
    /// Print the manifest as JSON on stdout instead of the summary table (no progress lines).
    #[arg(long)]
    pub json: bool,
    /// Progress lines off.
    #[arg(long, short)]
    pub quiet: bool,
}

fn parse_format(s: &str) -> Result<DiskFormat, String> {
    s.parse()
}

/// Loads the spec the way `virga build` and `virga run` agree on.
pub fn load_spec(path: Option<&Path>, profile: Option<Profile>) -> anyhow::Result<ImageSpec> {
    let spec = match path {
        Some(p) => ImageSpec::load(p)?,
        None if Path::new("virga.toml").is_file() => ImageSpec::load(Path::new("virga.toml"))?,
        None => ImageSpec::builtin(),
    };
    Ok(match profile {
        Some(p) => spec.with_profile(p),
        None => spec,
    })
}

/// Runs `virga build`.
pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    let spec = load_spec(args.spec.as_deref(), args.profile)?;
    let quiet = args.quiet || args.json;
    let mut formats: Vec<DiskFormat> = if args.formats.is_empty() {
        spec.disk
            .formats
            .iter()
            .map(|f| parse_format(f).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<_>>()?
    } else {
        args.formats.clone()
    };
    formats.sort();
    formats.dedup();
    let mut status = StatusLine::new();
    let mut progress = |p: Progress| {
        if quiet {
            return;
        }
        match p {
            Progress::Step { index, total, what } => {
                status.clear();
                eprintln!("[{index}/{total}] {what}");
            }
            Progress::Detail(d) => {
                status.clear();
                eprintln!("      {d}");
            }
            Progress::Status(s) => status.show(&s),
        }
    };
    let guest_binary = match spec.userland.init {
        InitKind::Busybox => None,
        InitKind::Virga => Some(resolve_guest_binary(
            args.guest_binary
                .as_deref()
                .or(spec.userland.guest_binary.as_deref()),
            &spec.base_dir,
            quiet,
        )?),
    };
    let mtime = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let opts = BuildOptions {
        out_dir: args.out.clone(),
        guest_binary,
        cache: apt::PackageCache::new(apt::cache_dir()),
        virga_version: env!("CARGO_PKG_VERSION").into(),
        mtime,
        formats,
    };
    let report = image_builder::build(&spec, &opts, &mut progress);
    status.clear();
    let report = report?;
    let m = &report.manifest;
    if args.json {
        print!("{}", m.to_json());
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\nbuilt {} ({} profile) in {}",
        m.name,
        m.profile,
        args.out.display()
    )?;
    writeln!(out, "  {:<16} {:>12}  sha256", "artifact", "bytes")?;
    for a in &m.artifacts {
        writeln!(out, "  {:<16} {:>12}  {}", a.name, a.size, &a.sha256[..16])?;
    }
    writeln!(
        out,
        "  kernel           {} ({})",
        m.kernel.release, m.kernel.origin
    )?;
    if let Some(t) = report.kernel_build_time {
        writeln!(
            out,
            "  kernel build     {} (cached for the next builds)",
            image_builder::kbuild::human_duration(t)
        )?;
    }
    writeln!(
        out,
        "  modules          {} in image ({} requested built in)",
        m.modules.len(),
        m.builtin_modules.len()
    )?;
    if let Some(d) = &m.disk {
        writeln!(
            out,
            "  disk             {} MiB, {} slot(s), {} partitions; slot A {} {} bytes, verity root {}",
            d.size >> 20,
            d.slots,
            d.partitions.len(),
            d.slot.filesystem,
            d.slot.filesystem_bytes,
            &d.verity.root_hash[..16]
        )?;
    }
    if let Some(g) = m.guest_binary_size {
        writeln!(out, "  guest binary     {g} bytes")?;
    }
    writeln!(
        out,
        "  busybox          {}",
        m.busybox.as_deref().unwrap_or("(not included)")
    )?;
    writeln!(
        out,
        "  initramfs        {} entries, {} bytes uncompressed",
        report.entries, report.cpio_size
    )?;
    let steps: Vec<String> = report
        .steps
        .iter()
        .map(|s| format!("{} {:.2}s", s.name, s.elapsed.as_secs_f64()))
        .collect();
    writeln!(out, "  time             {}", steps.join(", "))?;
    if report.offline {
        writeln!(
            out,
            "  note: apt was unreachable; cached packages were used"
        )?;
    }
    Ok(())
}

/// The transient status line of a long step: rewritten in place on a terminal; elsewhere (CI
/// logs) printed as a normal line at most every 30 seconds.
struct StatusLine {
    tty: bool,
    shown: bool,
    last: Option<std::time::Instant>,
}

impl StatusLine {
    fn new() -> Self {
        use std::io::IsTerminal;
        Self {
            tty: std::io::stderr().is_terminal(),
            shown: false,
            last: None,
        }
    }

    fn show(&mut self, s: &str) {
        if self.tty {
            let width = terminal_width().saturating_sub(7).max(20);
            let line: String = s.chars().take(width).collect();
            eprint!("\r\x1b[2K      {line}");
            let _ = std::io::stderr().flush();
            self.shown = true;
        } else if self
            .last
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(30))
        {
            self.last = Some(std::time::Instant::now());
            eprintln!("      {s}");
        }
    }

    fn clear(&mut self) {
        if self.shown {
            eprint!("\r\x1b[2K");
            self.shown = false;
        }
    }
}

fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(100)
}

/// Finds the guest binary: an explicit path, `$VIRGA_GUEST_BINARY`, a fresh cargo build when
/// running from the source tree, or `virga-guest` next to the `virga` executable.
pub fn resolve_guest_binary(
    explicit: Option<&Path>,
    base: &Path,
    quiet: bool,
) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        let p = if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        };
        return Ok(p);
    }
    if let Some(p) = std::env::var_os("VIRGA_GUEST_BINARY").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if workspace.join("crates/virga-guest/Cargo.toml").is_file() {
        return cargo_build_guest(&workspace, quiet);
    }
    let exe = std::env::current_exe().context("cannot find the virga executable")?;
    let sibling = exe.with_file_name("virga-guest");
    if sibling.is_file() {
        return Ok(sibling);
    }
    bail!(
        "no guest binary: pass --guest-binary PATH, set VIRGA_GUEST_BINARY, or install virga-guest \
         next to {}",
        exe.display()
    )
}

const GUEST_TARGET: &str = "x86_64-unknown-linux-musl";

fn cargo_build_guest(workspace: &Path, quiet: bool) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    if !quiet {
        eprintln!(
            "[0] guest binary (cargo build --release --target {GUEST_TARGET} -p virga-guest)"
        );
    }
    let status = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--target",
            GUEST_TARGET,
            "-p",
            "virga-guest",
        ])
        .arg(if quiet { "-q" } else { "--color=never" })
        .current_dir(workspace)
        .status()
        .with_context(|| format!("cannot run {}", cargo.to_string_lossy()))?;
    if !status.success() {
        bail!(
            "building the guest binary failed ({status}); if the target is missing, run \
             `rustup target add {GUEST_TARGET}`"
        );
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let target_dir = if target_dir.is_absolute() {
        target_dir
    } else {
        workspace.join(target_dir)
    };
    Ok(target_dir.join(GUEST_TARGET).join("release/virga-guest"))
}
