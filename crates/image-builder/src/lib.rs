//! The image builder: `ImageSpec` in, bootable artifacts and an `ImageManifest` out.
//!
//! Pipeline position: second stage. It acquires the kernel ([`kernel`], [`apt`]), picks the
//! module closure ([`kmod`]), lays out the guest userland in a [`tree::Tree`], encodes it as a
//! reproducible compressed newc cpio, and writes `vmlinuz`, `initramfs.img` and `manifest.json`
//! into the output directory — built in a temporary directory and renamed into place at the end,
//! so a failed build never leaves artifacts that look complete.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use boot_contract::{CONTRACT_VERSION, IMAGE_CONFIG_PATH, ImageConfig, ModuleEntry};
use image_spec::{
    Artifact, Compression, ImageManifest, ImageSpec, InitKind, KernelInfo, KernelSource,
    MANIFEST_FILE, Profile, parse_mode,
};
use sha2::{Digest, Sha256};

pub mod apt;
pub mod disk;
pub mod kbuild;
pub mod kconfig;
pub mod kernel;
pub mod kmod;
pub mod tree;

use apt::PackageCache;
pub use disk_image::formats::DiskFormat;
use tree::Tree;

/// Debian package carrying the static BusyBox.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// File names inside an output directory.
pub const VMLINUZ: &str = "vmlinuz";
/// File names inside an output directory.
pub const INITRAMFS: &str = "initramfs.img";
/// A disk build's slot initramfs (also `/initrd-a` on the ESP): only what mounting the slot
/// needs; the rest is in the slot's verified `/usr`. [`INITRAMFS`] stays whole, for a direct
/// kernel boot (`virga run --out`, `qemu -kernel -initrd`) of the same build.
pub const SLOT_INITRAMFS: &str = "initramfs-slot.img";
/// Where the guest binary lives inside the image.
pub const GUEST_PATH: &str = "/sbin/virga";
/// Applets of the guest binary linked into the image (besides `/init`).
pub const GUEST_LINKS: &[&str] = &["/sbin/init", "/sbin/poweroff", "/sbin/reboot", "/sbin/halt"];

/// What went wrong while building.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A Debian package could not be resolved, fetched or unpacked.
    #[error("package {package}: {message}")]
    Package {
        /// `name` or `name=version`.
        package: String,
        /// What happened and what to do.
        message: String,
    },
    /// The kernel or its modules are unusable.
    #[error("kernel: {0}")]
    Kernel(String),
    /// A requested module does not exist in the kernel.
    #[error(
        "kernel module `{name}` is not in kernel {release}{}; fix or remove it in kernel.modules",
        suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default()
    )]
    UnknownModule {
        /// As requested.
        name: String,
        /// Kernel release searched.
        release: String,
        /// Closest existing name.
        suggestion: Option<String>,
    },
    /// The guest binary is missing or unsuitable.
    #[error("guest binary {path}: {message}")]
    Guest {
        /// The binary.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A spec `[[files]]` entry cannot be used.
    #[error("files: {0}")]
    Files(String),
    /// The disk image could not be made.
    #[error("disk image: {0}")]
    Disk(#[from] disk_image::DiskImageError),
    /// The output directory cannot be written.
    #[error("cannot write the output directory {path}: {source}")]
    Output {
        /// The directory.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A step of the lean kernel's build failed.
    #[error("kernel build: {step} failed: {message}{}", log.as_ref().map(|l| format!("\n  full log: {}", l.display())).unwrap_or_default())]
    KernelBuild {
        /// The step (`make bzImage`, `unpacking the kernel source`, …).
        step: String,
        /// What happened: the end of the output, or the reason.
        message: String,
        /// The step's full log, when it is kept.
        log: Option<PathBuf>,
    },
    /// Settings of the configuration fragments did not survive `make olddefconfig`: the
    /// fragment does not fit this kernel version.
    #[error(
        "kernel config: the fragments do not fit the kernel source in {}:\n  {}\n  Fix the \
         fragment (docs/kernel.md: how to add an option): an option may have been renamed or \
         removed in this version, or need another option turned on first",
        source_dir.display(),
        mismatches.join("\n  ")
    )]
    KernelConfig {
        /// The kernel source tree.
        source_dir: PathBuf,
        /// One line per setting that did not survive.
        mismatches: Vec<String>,
    },
    /// The kernel lacks options the image needs.
    #[error(
        "kernel {release} lacks options this image needs:\n  {}\n  {fix}",
        missing.join("\n  ")
    )]
    MissingFeatures {
        /// Kernel release.
        release: String,
        /// One line per missing option, with who needs it.
        missing: Vec<String>,
        /// What to do about it for this kernel source.
        fix: String,
    },
}

impl BuildError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        BuildError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// A progress event, for the CLI to print.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A step started.
    Step {
        /// 1-based index.
        index: usize,
        /// Number of steps.
        total: usize,
        /// What it does.
        what: String,
    },
    /// Detail about the current step.
    Detail(String),
    /// Transient status of a long step (the kernel compilation), replaced by the next one:
    /// a terminal shows it on one line.
    Status(String),
}

/// Inputs to [`build`].
#[derive(Debug)]
pub struct BuildOptions {
    /// Output directory (replaced atomically).
    pub out_dir: PathBuf,
    /// Guest binary (`virga-guest`, static musl); required when `userland.init = "virga"`.
    pub guest_binary: Option<PathBuf>,
    /// Package cache.
    pub cache: PackageCache,
    /// Version string recorded in the manifest.
    pub virga_version: String,
    /// mtime stamped on every initramfs entry (`SOURCE_DATE_EPOCH`; default 0).
    pub mtime: u32,
    /// Disk image formats to write besides vmlinuz and initramfs.img (none: no disk).
    pub formats: Vec<DiskFormat>,
}

/// One timed build step, for the summary table.
#[derive(Debug, Clone)]
pub struct StepTime {
    /// Step name.
    pub name: &'static str,
    /// Wall time.
    pub elapsed: Duration,
}

/// What [`build`] returns.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The manifest written to the output directory.
    pub manifest: ImageManifest,
    /// Step timings.
    pub steps: Vec<StepTime>,
    /// Uncompressed initramfs size.
    pub cpio_size: u64,
    /// Number of entries in the initramfs.
    pub entries: usize,
    /// Whether the kernel came from the cache.
    pub kernel_cached: bool,
    /// Whether apt was unreachable and cached records were used.
    pub offline: bool,
    /// How long building the kernel took, when this run built it (`source = "build"`).
    pub kernel_build_time: Option<Duration>,
}

/// The numbered steps of one build: progress lines and timings.
struct Steps<'p> {
    total: usize,
    done: usize,
    times: Vec<StepTime>,
    progress: &'p mut dyn FnMut(Progress),
}

impl Steps<'_> {
    /// Runs step `what` (timed as `name`), announcing it first.
    fn run<T>(
        &mut self,
        what: &str,
        name: &'static str,
        f: impl FnOnce(&mut dyn FnMut(Progress)) -> Result<T, BuildError>,
    ) -> Result<T, BuildError> {
        self.done += 1;
        (self.progress)(Progress::Step {
            index: self.done,
            total: self.total,
            what: what.to_owned(),
        });
        let t = Instant::now();
        let r = f(&mut *self.progress)?;
        self.times.push(StepTime {
            name,
            elapsed: t.elapsed(),
        });
        Ok(r)
    }
}

/// What the userland step gathers: BusyBox (path, version) and the guest binary.
struct Userland {
    busybox: Option<(PathBuf, String)>,
    guest: Option<Vec<u8>>,
}

/// Builds the image described by `spec`: kernel, module closure, userland, (the slot's verified
/// system), initramfs, (the disk image), output, one function per step.
pub fn build(
    spec: &ImageSpec,
    opts: &BuildOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<BuildReport, BuildError> {
    let disk_wanted = !opts.formats.is_empty();
    let mut steps = Steps {
        total: if disk_wanted { 7 } else { 5 },
        done: 0,
        times: Vec::new(),
        progress,
    };
    let staging = Staging::new(&opts.out_dir)?;
    let work = staging.dir().join(".work");
    std::fs::create_dir(&work).map_err(|e| BuildError::io(&work, e))?;

    let k = steps.run("kernel", "kernel", |p| kernel_step(spec, opts, p))?;
    let (closure, index) = steps.run("module closure", "modules", |p| {
        modules_step(spec, &k, disk_wanted, p)
    })?;
    let (userland, mut tree, module_entries) = steps.run("userland", "userland", |p| {
        let userland = userland_step(spec, opts, p)?;
        let (tree, entries) = assemble_tree(spec, &k, &closure, index.as_ref(), &userland)?;
        Ok((userland, tree, entries))
    })?;
    let mut system = if disk_wanted {
        Some(steps.run(
            "system image (slot filesystem + dm-verity)",
            "system",
            |p| system_step(spec, opts, &tree, &work, p),
        )?)
    } else {
        None
    };
    let (initramfs, cpio_size, slot_initramfs) = steps.run("initramfs", "initramfs", |p| {
        // The slot's own, slimmed: made first, from a copy, so the tree stays whole.
        let slot = match &mut system {
            Some(sys) if userland.guest.is_some() => {
                let mut slot_tree = tree.clone();
                let mut entries = module_entries.clone();
                sys.contents.also_in_initramfs = slim_step(&mut slot_tree, &mut entries, p);
                let (data, _) = initramfs_step(
                    spec,
                    opts,
                    &k,
                    &mut slot_tree,
                    entries,
                    &userland,
                    Some(sys),
                    p,
                )?;
                Some(data)
            }
            _ => None,
        };
        let (data, size) = initramfs_step(
            spec,
            opts,
            &k,
            &mut tree,
            module_entries,
            &userland,
            system.as_ref(),
            p,
        )?;
        Ok((data, size, slot))
    })?;

    let vmlinuz = std::fs::read(&k.vmlinuz).map_err(|e| BuildError::io(&k.vmlinuz, e))?;
    let mut artifacts = vec![artifact(VMLINUZ, &vmlinuz), artifact(INITRAMFS, &initramfs)];
    if let Some(slot) = &slot_initramfs {
        artifacts.push(artifact(SLOT_INITRAMFS, slot));
    }
    let slot_or_whole = slot_initramfs.as_deref().unwrap_or(&initramfs);
    let disk = match &system {
        Some(sys) => {
            let names: Vec<&str> = opts.formats.iter().map(|f| f.name()).collect();
            let built = steps.run(&format!("disk image ({})", names.join(", ")), "disk", |p| {
                disk::build_disk(
                    spec,
                    &opts.formats,
                    sys,
                    &vmlinuz,
                    slot_or_whole,
                    staging.dir(),
                    &work,
                    u64::from(opts.mtime),
                    p,
                )
            })?;
            for (f, path) in &built.files {
                artifacts.push(file_artifact(f.file_name(), path)?);
            }
            Some(built.info)
        }
        None => None,
    };

    let manifest = ImageManifest {
        virga_version: opts.virga_version.clone(),
        name: spec.name.clone(),
        profile: match spec.profile {
            Profile::Default => "default".into(),
            Profile::Minimal => "minimal".into(),
        },
        spec_sha256: spec.hash(),
        kernel: KernelInfo {
            release: k.release.clone(),
            origin: k.origin.clone(),
            origin_sha256: k.origin_sha256.clone(),
        },
        cmdline: spec.kernel.cmdline.clone(),
        modules: closure.order.iter().map(|m| m.name.clone()).collect(),
        builtin_modules: closure.builtin.clone(),
        init: match spec.userland.init {
            InitKind::Virga => "virga".into(),
            InitKind::Busybox => "busybox".into(),
        },
        busybox: userland.busybox.as_ref().map(|(_, v)| v.clone()),
        guest_binary_size: userland.guest.as_ref().map(|g| g.len() as u64),
        artifacts,
        disk,
    };
    steps.run(
        &format!("write {}", opts.out_dir.display()),
        "write",
        |_| {
            let _ = std::fs::remove_dir_all(&work);
            staging.write(VMLINUZ, &vmlinuz)?;
            staging.write(INITRAMFS, &initramfs)?;
            if let Some(slot) = &slot_initramfs {
                staging.write(SLOT_INITRAMFS, slot)?;
            }
            staging.write(MANIFEST_FILE, manifest.to_json().as_bytes())?;
            staging.commit()
        },
    )?;

    Ok(BuildReport {
        manifest,
        steps: steps.times,
        cpio_size,
        entries: tree.len(),
        kernel_cached: k.cached,
        offline: k.offline,
        kernel_build_time: k.build_time,
    })
}

/// Step 1: the kernel, from a Debian package, a local file or built from source.
fn kernel_step(
    spec: &ImageSpec,
    opts: &BuildOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<kernel::KernelFiles, BuildError> {
    let k = match spec.kernel.source {
        KernelSource::Debian => kernel::debian(
            &opts.cache,
            &spec.kernel.package,
            spec.kernel.version.as_deref(),
        )?,
        KernelSource::Local => {
            let base = &spec.base_dir;
            let vmlinuz = base.join(spec.kernel.vmlinuz.as_deref().unwrap_or(Path::new("")));
            let modules = spec.kernel.modules_dir.as_ref().map(|m| base.join(m));
            kernel::local(&vmlinuz, modules.as_deref())?
        }
        KernelSource::Build => {
            let req = kbuild::KernelRequest {
                package: spec.kernel.package.clone(),
                version: spec.kernel.version.clone(),
                fragments: kbuild::fragments(&spec.kernel_configs(), &spec.base_dir)?,
                jobs: None,
            };
            kernel::build(&opts.cache, &req, progress)?
        }
    };
    progress(Progress::Detail(format!(
        "{} from {}{}",
        k.release,
        k.origin,
        if k.offline {
            " (offline: cached)"
        } else if k.cached {
            " (cached)"
        } else if k.build_time.is_some() {
            " (built)"
        } else {
            " (downloaded)"
        }
    )));
    Ok(k)
}

/// Step 2: the closure of the modules the spec asks for (and a disk image's slot needs), and
/// the kernel features the image needs.
fn modules_step(
    spec: &ImageSpec,
    k: &kernel::KernelFiles,
    disk_wanted: bool,
    progress: &mut dyn FnMut(Progress),
) -> Result<(kmod::Closure, Option<kmod::ModuleIndex>), BuildError> {
    let (closure, index) = match (&k.modules_dir, spec.kernel.modules.is_empty()) {
        (_, true) => (kmod::Closure::default(), None),
        (None, false) => {
            return Err(BuildError::Kernel(format!(
                "modules are requested but kernel {} comes without a modules directory",
                k.release
            )));
        }
        (Some(dir), false) => {
            let index = kmod::ModuleIndex::scan(dir)?;
            let mut wanted = spec.kernel.modules.clone();
            if disk_wanted {
                for m in disk::slot_modules(spec) {
                    if !wanted.contains(&m) {
                        wanted.push(m);
                    }
                }
            }
            let closure = index.resolve(&wanted).map_err(|e| match e {
                BuildError::UnknownModule { name, release, .. }
                    if spec.kernel.source == KernelSource::Build =>
                {
                    BuildError::Kernel(format!(
                        "kernel module `{name}` is not built into kernel {release} (a lean \
                         kernel has no loadable modules); add its CONFIG_ option to the kernel \
                         config fragment (docs/kernel.md) or remove it from kernel.modules"
                    ))
                }
                other => other,
            })?;
            (closure, Some(index))
        }
    };
    progress(Progress::Detail(format!(
        "{} requested → {} modules to load, {} built in",
        spec.kernel.modules.len(),
        closure.order.len(),
        closure.builtin.len()
    )));
    check_kernel_features(spec, k, &closure, disk_wanted)?;
    Ok((closure, index))
}

/// Step 3: BusyBox (when the spec has a toolbox) and the guest binary (checked).
fn userland_step(
    spec: &ImageSpec,
    opts: &BuildOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Userland, BuildError> {
    let busybox = if spec.toolbox() {
        let p = opts.cache.fetch(BUSYBOX_PACKAGE, None)?;
        let dir = opts.cache.unpack(&p)?;
        let bin = dir.join("bin/busybox");
        if !bin.is_file() {
            return Err(BuildError::Package {
                package: BUSYBOX_PACKAGE.into(),
                message: "the package has no /bin/busybox".into(),
            });
        }
        progress(Progress::Detail(format!("busybox {}", p.record.version)));
        Some((bin, p.record.version))
    } else {
        None
    };
    let guest = match spec.userland.init {
        InitKind::Virga => {
            let path = opts.guest_binary.clone().ok_or_else(|| BuildError::Guest {
                path: PathBuf::from("virga-guest"),
                message: "no guest binary given; build it with `cargo build --release \
                          --target x86_64-unknown-linux-musl -p virga-guest`"
                    .into(),
            })?;
            let data = std::fs::read(&path).map_err(|e| BuildError::Guest {
                path: path.clone(),
                message: format!("{e}; build it with `cargo build --release --target x86_64-unknown-linux-musl -p virga-guest`"),
            })?;
            check_guest_binary(&data).map_err(|message| BuildError::Guest {
                path: path.clone(),
                message,
            })?;
            progress(Progress::Detail(format!(
                "guest binary {} bytes",
                data.len()
            )));
            Some(data)
        }
        InitKind::Busybox => None,
    };
    Ok(Userland { busybox, guest })
}

/// The initramfs tree: base layout, the module closure (uncompressed, with `modules.dep`),
/// BusyBox, the guest binary and its links, the spec's files. Returns it with the module
/// entries PID 1 gets.
fn assemble_tree(
    spec: &ImageSpec,
    k: &kernel::KernelFiles,
    closure: &kmod::Closure,
    index: Option<&kmod::ModuleIndex>,
    userland: &Userland,
) -> Result<(Tree, Vec<ModuleEntry>), BuildError> {
    let mut tree = base_tree(spec);
    let mut module_entries = Vec::new();
    if let Some(index) = index {
        let mod_root = format!("/lib/modules/{}", k.release);
        // Modules go into the image uncompressed; `installed` is the closure with the paths they
        // have there, for modules.dep.
        let mut installed = closure.clone();
        for m in &mut installed.order {
            let src = index.root().join(&m.rel_path);
            let mut data = std::fs::read(&src).map_err(|e| BuildError::io(&src, e))?;
            if m.rel_path.extension().is_some_and(|e| e == "zst") {
                data = zstd::stream::decode_all(&data[..]).map_err(|e| BuildError::io(&src, e))?;
                m.rel_path.set_extension("");
            }
            let path = format!("{mod_root}/{}", m.rel_path.display());
            tree.file(&path, data, 0o644);
            module_entries.push(ModuleEntry {
                name: m.name.clone(),
                path,
                depends: m.depends.clone(),
                pci: m.pci_aliases.clone(),
            });
        }
        tree.file(
            &format!("{mod_root}/modules.dep"),
            kmod::ModuleIndex::modules_dep(&installed).into_bytes(),
            0o644,
        );
    }
    if let Some((bin, _)) = &userland.busybox {
        add_busybox(&mut tree, bin, spec.userland.init == InitKind::Busybox)?;
    }
    if let Some(data) = &userland.guest {
        tree.file(GUEST_PATH, data.clone(), 0o755);
        tree.symlink("/init", GUEST_PATH);
        for link in GUEST_LINKS {
            tree.symlink(link, "virga");
        }
        tree.symlink("/usr/bin/virga", GUEST_PATH);
    }
    // Spec files (and the update keys) go in before the slot is cut: those under /usr belong to
    // the verified system, which is mounted over the initramfs's /usr.
    add_spec_files(&mut tree, spec)?;
    Ok((tree, module_entries))
}

/// Step 4 (disk images): the slot's verified system, cut from the tree's `/usr` content.
fn system_step(
    spec: &ImageSpec,
    opts: &BuildOptions,
    tree: &Tree,
    work: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<disk::SystemBuild, BuildError> {
    let sys = disk::build_system(spec, tree, work, u64::from(opts.mtime))?;
    progress(Progress::Detail(format!(
        "{} {} bytes ({} files, {} bytes) → verity root {}",
        sys.contents.filesystem,
        sys.contents.filesystem_bytes,
        sys.contents.files,
        sys.contents.file_bytes,
        sys.verity.root_hash_hex()
    )));
    Ok(sys)
}

/// A disk image's initramfs without what the slot carries ([`slim_for_slot`]); returns what it
/// still shares with the slot, for the manifest.
fn slim_step(
    tree: &mut Tree,
    entries: &mut [ModuleEntry],
    progress: &mut dyn FnMut(Progress),
) -> Vec<String> {
    let (kept, moved) = slim_for_slot(tree, entries);
    progress(Progress::Detail(format!(
        "{kept} modules kept to mount the slot; {moved} modules and BusyBox only in the slot"
    )));
    if kept > 0 {
        vec![format!(
            "/lib/modules: the {kept} modules that mounting the slot needs"
        )]
    } else {
        Vec::new()
    }
}

/// Step 5: PID 1's image configuration into the tree, then the compressed cpio. Returns it
/// with the uncompressed size.
#[allow(clippy::too_many_arguments)]
fn initramfs_step(
    spec: &ImageSpec,
    opts: &BuildOptions,
    k: &kernel::KernelFiles,
    tree: &mut Tree,
    module_entries: Vec<ModuleEntry>,
    userland: &Userland,
    system: Option<&disk::SystemBuild>,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Vec<u8>, u64), BuildError> {
    let config = ImageConfig {
        contract: CONTRACT_VERSION,
        name: spec.name.clone(),
        hostname: spec.hostname.clone(),
        console_shell: spec.console_shell(),
        shell: userland.busybox.as_ref().map(|_| "/bin/sh".to_owned()),
        kernel_release: k.release.clone(),
        modules: module_entries,
        datasources: spec.datasources.clone(),
        default_user: "root".into(),
        ssh: spec.userland.ssh.unwrap_or(true),
        system: system.map(|s| s.system.clone()),
    };
    let config_json = serde_json::to_string_pretty(&config).unwrap_or_default();
    tree.file(IMAGE_CONFIG_PATH, config_json.into_bytes(), 0o644);

    let mut cpio = Vec::new();
    let cpio_size = tree
        .write_cpio(&mut cpio, opts.mtime)
        .map_err(|e| BuildError::io(Path::new("initramfs.cpio"), e))?;
    let initramfs = compress(&cpio, spec.initramfs.compression)
        .map_err(|e| BuildError::io(Path::new("initramfs.img"), e))?;
    progress(Progress::Detail(format!(
        "{} entries, {} bytes cpio → {} bytes {:?}",
        tree.len(),
        cpio_size,
        initramfs.len(),
        spec.initramfs.compression
    )));
    Ok((initramfs, cpio_size))
}

/// Checks the options the image needs ([`ImageSpec::required_kernel_features`]) against the
/// kernel's configuration. A kernel without a known configuration (a local one without
/// `config-<release>` beside it) passes the implied checks, but not explicit `kernel.features`.
fn check_kernel_features(
    spec: &ImageSpec,
    k: &kernel::KernelFiles,
    closure: &kmod::Closure,
    disk: bool,
) -> Result<(), BuildError> {
    let Some(path) = &k.config else {
        if spec.kernel.features.is_empty() {
            return Ok(());
        }
        return Err(BuildError::Kernel(format!(
            "kernel.features cannot be checked: kernel {} comes without its configuration; put it \
             at config-{} next to the vmlinuz",
            k.release, k.release
        )));
    };
    let text = std::fs::read_to_string(path).map_err(|e| BuildError::io(path, e))?;
    let config = kconfig::KernelConfig::parse(&text);
    let carried: Vec<String> = closure.order.iter().map(|m| m.name.clone()).collect();
    let mut wanted = spec.required_kernel_features();
    if disk {
        // A disk image's PID 1 opens the slot's dm-verity device and mounts its filesystem, and
        // puts /var on an overlay on the state partition.
        let fs = match spec.disk.system_fs {
            image_spec::SystemFs::Squashfs => "CONFIG_SQUASHFS",
            image_spec::SystemFs::Erofs => "CONFIG_EROFS_FS",
        };
        for (o, why) in [
            (
                "CONFIG_BLK_DEV_DM",
                "a disk image's verified system (device mapper)",
            ),
            (
                "CONFIG_DM_VERITY",
                "a disk image's verified system (dm-verity)",
            ),
            (fs, "the filesystem of a disk image's system slot"),
            ("CONFIG_EXT4_FS", "a disk image's state partition"),
            (
                "CONFIG_OVERLAY_FS",
                "/var on a disk image's state partition",
            ),
            (
                "CONFIG_VFAT_FS",
                "the ESP (GRUB's environment block, slot kernels)",
            ),
        ] {
            wanted.push(image_spec::KernelFeature::new(o, why));
        }
    }
    let missing = kconfig::check_features(&config, &wanted, &carried);
    if missing.is_empty() {
        return Ok(());
    }
    let fix = match spec.kernel.source {
        KernelSource::Build => {
            "Set them =y in a kernel config fragment (kernel.config; docs/kernel.md)".to_owned()
        }
        KernelSource::Debian => format!(
            "Carry their modules (kernel.modules), or choose a kernel that has them: \
             another kernel.package, or source = \"build\" (docs/kernel.md); checked against {}",
            path.display()
        ),
        KernelSource::Local => format!("Checked against {}", path.display()),
    };
    Err(BuildError::MissingFeatures {
        release: k.release.clone(),
        missing: missing.iter().map(ToString::to_string).collect(),
        fix,
    })
}

/// An artifact record for a file on disk (hashed in 1 MiB pieces).
fn file_artifact(name: &str, path: &Path) -> Result<Artifact, BuildError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| BuildError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| BuildError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Artifact {
        name: name.into(),
        size,
        sha256: hex::encode(h.finalize()),
    })
}

fn artifact(name: &str, data: &[u8]) -> Artifact {
    Artifact {
        name: name.into(),
        size: data.len() as u64,
        sha256: hex::encode(Sha256::digest(data)),
    }
}

/// Checks that `data` is a static x86-64 ELF executable.
pub fn check_guest_binary(data: &[u8]) -> Result<(), String> {
    use object::{Architecture, Object, ObjectKind};
    let file = object::File::parse(data).map_err(|_| {
        "not an ELF executable; build it with `cargo build --release --target x86_64-unknown-linux-musl -p virga-guest`".to_owned()
    })?;
    if file.architecture() != Architecture::X86_64 {
        return Err(format!(
            "built for {:?}, the image needs x86_64",
            file.architecture()
        ));
    }
    if !matches!(file.kind(), ObjectKind::Executable | ObjectKind::Dynamic) {
        return Err("not an executable".into());
    }
    if file.section_by_name(".interp").is_some() {
        return Err(
            "dynamically linked (has an ELF interpreter); build it for the \
                    x86_64-unknown-linux-musl target so it is static"
                .into(),
        );
    }
    Ok(())
}

fn base_tree(spec: &ImageSpec) -> Tree {
    let mut t = Tree::new();
    for (d, mode) in [
        ("/proc", 0o555),
        ("/sys", 0o555),
        ("/dev", 0o755),
        ("/run", 0o755),
        ("/tmp", 0o1777),
        ("/root", 0o700),
        ("/home", 0o755),
        ("/mnt", 0o755),
        ("/var/lib/virga", 0o755),
        ("/var/log", 0o755),
        ("/etc/virga", 0o755),
        ("/bin", 0o755),
        ("/sbin", 0o755),
        ("/usr/bin", 0o755),
        ("/usr/sbin", 0o755),
    ] {
        t.dir(d, mode);
    }
    t.char_dev("/dev/console", 5, 1, 0o600);
    t.char_dev("/dev/null", 1, 3, 0o666);
    let shell = if spec.toolbox() {
        "/bin/sh"
    } else {
        "/sbin/nologin"
    };
    // Root has no password (`*`): there is no default password to guess. Access is by SSH key
    // (from metadata) or, in the default test profile, the console shell.
    t.file(
        "/etc/passwd",
        format!("root:x:0:0:root:/root:{shell}\n").into_bytes(),
        0o644,
    );
    t.file("/etc/shadow", b"root:*:0:0:99999:7:::\n".to_vec(), 0o600);
    t.file("/etc/group", b"root:x:0:\n".to_vec(), 0o644);
    t.file(
        "/etc/hosts",
        b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n".to_vec(),
        0o644,
    );
    t.file(
        "/etc/hostname",
        format!("{}\n", spec.hostname).into_bytes(),
        0o644,
    );
    t.file(
        "/etc/os-release",
        format!(
            "NAME=virga\nID=virga\nPRETTY_NAME=\"virga {v}\"\nVERSION_ID={v}\nVARIANT_ID={name}\n",
            v = env!("CARGO_PKG_VERSION"),
            name = spec.name
        )
        .into_bytes(),
        0o644,
    );
    t.file(
        "/etc/profile",
        b"export PATH=/usr/sbin:/usr/bin:/sbin:/bin\nexport PS1='\\h:\\w\\$ '\n".to_vec(),
        0o644,
    );
    t
}

/// A disk image's initramfs keeps only what PID 1 needs to mount the slot: the modules under
/// [`boot_contract::EARLY_MODULE_DIRS`] and what they depend on. The other modules and BusyBox
/// are in the slot's verified `/usr` ([`disk::usr_tree`] took them from `tree`): their entries
/// point there (PID 1 loads them once `/usr` is mounted), and `/bin/busybox` becomes a link to
/// `/usr/bin/busybox`, which the applet links resolve through once `/usr` is mounted. Returns
/// how many modules stay and how many moved.
fn slim_for_slot(tree: &mut Tree, entries: &mut [ModuleEntry]) -> (usize, usize) {
    let index: std::collections::HashMap<String, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.name.clone(), i))
        .collect();
    let mut early = vec![false; entries.len()];
    let mut stack: Vec<usize> = (0..entries.len())
        .filter(|&i| boot_contract::early_module(&entries[i].path))
        .collect();
    while let Some(i) = stack.pop() {
        if !std::mem::replace(&mut early[i], true) {
            stack.extend(entries[i].depends.iter().filter_map(|d| index.get(d)));
        }
    }
    let mut moved = 0;
    for (e, keep) in entries.iter_mut().zip(&early) {
        if !keep && e.path.starts_with("/lib/modules/") {
            tree.remove(&e.path);
            e.path = format!("/usr{}", e.path);
            moved += 1;
        }
    }
    if matches!(tree.get("/bin/busybox"), Some(tree::Node::File { .. })) {
        tree.symlink("/bin/busybox", "/usr/bin/busybox");
    }
    (entries.len() - moved, moved)
}

fn add_busybox(tree: &mut Tree, bin: &Path, busybox_init: bool) -> Result<(), BuildError> {
    let data = std::fs::read(bin).map_err(|e| BuildError::io(bin, e))?;
    let out = std::process::Command::new(bin)
        .arg("--list-full")
        .output()
        .map_err(|e| BuildError::Package {
            package: BUSYBOX_PACKAGE.into(),
            message: format!("cannot run {} --list-full: {e}", bin.display()),
        })?;
    tree.file("/bin/busybox", data, 0o755);
    let list = String::from_utf8_lossy(&out.stdout);
    let mut links = 0;
    for applet in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = format!("/{applet}");
        if !busybox_init && (GUEST_LINKS.contains(&path.as_str()) || path == "/init") {
            continue;
        }
        if tree.contains(&path) {
            continue;
        }
        tree.symlink(&path, "/bin/busybox");
        links += 1;
    }
    if links == 0 {
        return Err(BuildError::Package {
            package: BUSYBOX_PACKAGE.into(),
            message: "busybox --list-full printed no applets".into(),
        });
    }
    if busybox_init {
        tree.symlink("/init", "/bin/busybox");
    }
    Ok(())
}

/// Where a disk image's update agent finds its trusted keys (in the verified `/usr`).
pub const UPDATE_KEYS_PATH: &str = "/usr/share/virga/update-keys.json";

fn add_spec_files(tree: &mut Tree, spec: &ImageSpec) -> Result<(), BuildError> {
    if let Some(keys) = &spec.update.keys {
        let p = spec.base_dir.join(keys);
        let bytes = std::fs::read(&p).map_err(|e| {
            BuildError::Files(format!("update.keys: cannot read {}: {e}", p.display()))
        })?;
        let set = update::KeySet::from_json(&bytes).map_err(|e| {
            BuildError::Files(format!(
                "update.keys: {} is not a key set ({e}); make one with `virga keys new`",
                p.display()
            ))
        })?;
        if set.is_empty() {
            return Err(BuildError::Files(format!(
                "update.keys: {} holds no key",
                p.display()
            )));
        }
        tree.file(UPDATE_KEYS_PATH, bytes, 0o644);
    }
    for f in &spec.files {
        let data = match (&f.source, &f.content) {
            (Some(src), _) => {
                let p = spec.base_dir.join(src);
                std::fs::read(&p).map_err(|e| {
                    BuildError::Files(format!("{}: cannot read {}: {e}", f.path, p.display()))
                })?
            }
            (None, Some(c)) => c.clone().into_bytes(),
            (None, None) => Vec::new(),
        };
        let mode = parse_mode(&f.mode).unwrap_or(0o644);
        if matches!(tree.get(&f.path), Some(tree::Node::Dir { .. })) {
            return Err(BuildError::Files(format!(
                "{} is a directory in the image",
                f.path
            )));
        }
        tree.file(&f.path, data, mode);
    }
    Ok(())
}

/// log2 of the zstd window of a compressed initramfs (1 MiB): what the kernel allocates to
/// unpack it.
pub const ZSTD_WINDOW_LOG: u32 = 20;

/// Compresses an initramfs deterministically (no timestamps, no file names).
pub fn compress(data: &[u8], how: Compression) -> std::io::Result<Vec<u8>> {
    match how {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(3)
                .write(Vec::new(), flate2::Compression::best());
            enc.write_all(data)?;
            enc.finish()
        }
        Compression::Zstd => {
            // The kernel's initramfs unpacker allocates a decoding buffer as large as the
            // frame's window, while RAM is at its tightest (kernel, compressed and unpacked
            // archive all in memory): level 19's default 8 MiB window would cost 8 MiB of the
            // VM's minimum RAM. A 1 MiB window costs about 1% of size on a virga image.
            let mut enc = zstd::stream::Encoder::new(Vec::new(), 19)?;
            enc.window_log(ZSTD_WINDOW_LOG)?;
            enc.include_checksum(true)?;
            enc.write_all(data)?;
            enc.finish()
        }
    }
}

/// The output directory under construction: a sibling `.<out>.building-<pid>` that replaces
/// `out_dir` only in [`Staging::commit`], and is removed when dropped uncommitted, so a failed
/// build never leaves anything that looks complete.
#[derive(Debug)]
struct Staging {
    out_dir: PathBuf,
    parent: PathBuf,
    name: String,
    tmp: PathBuf,
    committed: bool,
}

impl Staging {
    fn new(out_dir: &Path) -> Result<Self, BuildError> {
        let parent = match out_dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let output_err = |source| BuildError::Output {
            path: parent.clone(),
            source,
        };
        std::fs::create_dir_all(&parent).map_err(output_err)?;
        let name = out_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("out")
            .to_owned();
        let tmp = parent.join(format!(".{name}.building-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).map_err(output_err)?;
        Ok(Staging {
            out_dir: out_dir.to_owned(),
            parent,
            name,
            tmp,
            committed: false,
        })
    }

    fn dir(&self) -> &Path {
        &self.tmp
    }

    fn write(&self, file: &str, data: &[u8]) -> Result<(), BuildError> {
        let p = self.tmp.join(file);
        std::fs::write(&p, data).map_err(|e| BuildError::io(&p, e))
    }

    fn commit(mut self) -> Result<(), BuildError> {
        let old = self
            .parent
            .join(format!(".{}.old-{}", self.name, std::process::id()));
        if self.out_dir.exists() {
            std::fs::rename(&self.out_dir, &old).map_err(|e| BuildError::io(&self.out_dir, e))?;
        }
        std::fs::rename(&self.tmp, &self.out_dir).map_err(|e| BuildError::io(&self.out_dir, e))?;
        self.committed = true;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Writes files into `out_dir` atomically (see [`Staging`]).
#[cfg(test)]
fn write_output(out_dir: &Path, files: &[(&str, &[u8])]) -> Result<(), BuildError> {
    let staging = Staging::new(out_dir)?;
    for (file, data) in files {
        staging.write(file, data)?;
    }
    staging.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_initramfs_keeps_only_what_mounting_the_slot_needs() {
        let k = "/lib/modules/6.1.0-1-cloud-amd64/kernel";
        let entry = |name: &str, rel: &str, deps: &[&str]| ModuleEntry {
            name: name.into(),
            path: format!("{k}/{rel}"),
            depends: deps.iter().map(|d| (*d).to_owned()).collect(),
            pci: Vec::new(),
        };
        let mut entries = vec![
            entry("crc32c_generic", "crypto/crc32c_generic.ko", &[]),
            entry("libcrc32c", "lib/libcrc32c.ko", &["crc32c_generic"]),
            entry("dm_verity", "drivers/md/dm-verity.ko", &["libcrc32c"]),
            entry("virtio_net", "drivers/net/virtio_net.ko", &[]),
            entry("button", "drivers/acpi/button.ko", &[]),
        ];
        let mut tree = Tree::new();
        for e in &entries {
            tree.file(&e.path, b"ko".to_vec(), 0o644);
        }
        tree.file("/bin/busybox", b"\x7fELF".to_vec(), 0o755);
        tree.symlink("/bin/ls", "/bin/busybox");
        let (kept, moved) = slim_for_slot(&mut tree, &mut entries);
        assert_eq!((kept, moved), (3, 2));
        // dm-verity and what it needs stay, found where they were.
        for e in &entries[..3] {
            assert!(e.path.starts_with("/lib/modules/"), "{}", e.path);
            assert!(tree.contains(&e.path));
        }
        // The rest point into the slot and left the initramfs.
        for e in &entries[3..] {
            assert!(
                e.path.starts_with(boot_contract::SLOT_MODULES_PREFIX),
                "{}",
                e.path
            );
            assert!(!tree.contains(&e.path["/usr".len()..]));
        }
        assert_eq!(
            tree.get("/bin/busybox"),
            Some(&tree::Node::Symlink {
                target: "/usr/bin/busybox".into()
            })
        );
        assert!(tree.contains("/bin/ls"));
    }

    #[test]
    fn gzip_is_deterministic_and_readable() {
        let data = b"hello initramfs".repeat(100);
        let a = compress(&data, Compression::Gzip).unwrap();
        assert_eq!(a, compress(&data, Compression::Gzip).unwrap());
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&a[..]), &mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn zstd_round_trips() {
        let data = b"zstd initramfs".repeat(100);
        let a = compress(&data, Compression::Zstd).unwrap();
        assert_eq!(zstd::stream::decode_all(&a[..]).unwrap(), data);
    }

    #[test]
    fn zstd_window_is_small_for_the_kernel() {
        // Frame header: magic, descriptor, then (without the single-segment flag) the window
        // descriptor: exponent in the high 5 bits, 2^(10 + exponent) bytes, plus mantissa.
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let a = compress(&data, Compression::Zstd).unwrap();
        assert_eq!(&a[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
        let descriptor = a[4];
        assert_eq!(
            descriptor & 0x20,
            0,
            "single-segment frames have no window descriptor"
        );
        let window_log = 10 + u32::from(a[5] >> 3);
        assert!(window_log <= ZSTD_WINDOW_LOG, "window 2^{window_log}");
        assert_eq!(zstd::stream::decode_all(&a[..]).unwrap(), data);
    }

    #[test]
    fn guest_binary_checks() {
        assert!(
            check_guest_binary(b"#!/bin/sh")
                .unwrap_err()
                .contains("not an ELF")
        );
        // The test binary itself is a dynamically linked (or static-pie) x86-64 executable.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        match check_guest_binary(&me) {
            Ok(()) => {}
            Err(e) => assert!(e.contains("dynamically linked"), "{e}"),
        }
    }

    #[test]
    fn output_replaces_atomically() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        write_output(&out, &[("a", b"1")]).unwrap();
        write_output(&out, &[("b", b"2")]).unwrap();
        assert!(!out.join("a").exists());
        assert_eq!(std::fs::read(out.join("b")).unwrap(), b"2");
        let leftovers: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }

    #[test]
    fn failed_output_leaves_nothing_complete() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        // A file name with a slash into a missing directory fails midway.
        assert!(write_output(&out, &[("a", b"1"), ("missing/b", b"2")]).is_err());
        assert!(!out.exists());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn base_tree_has_console_and_locked_root() {
        let t = base_tree(&ImageSpec::builtin());
        assert!(matches!(
            t.get("/dev/console"),
            Some(tree::Node::CharDev {
                major: 5,
                minor: 1,
                ..
            })
        ));
        match t.get("/etc/shadow") {
            Some(tree::Node::File { data, .. }) => assert!(data.starts_with(b"root:*:")),
            other => panic!("{other:?}"),
        }
    }
}
