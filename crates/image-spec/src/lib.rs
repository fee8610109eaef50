//! The image spec (`virga.toml`) and the build manifest (`manifest.json`).
//!
//! Pipeline position: this is the first and the second typed hand-off. [`ImageSpec`] says what to
//! build; the image builder turns it into artifacts and records what it built in an
//! [`ImageManifest`]. Parsing is strict (unknown keys are errors) and validation names the fix, so
//! a typo never silently builds the wrong image. Reference: `docs/image-spec.md`.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod manifest;
pub use manifest::{
    Artifact, DiskInfo, ImageManifest, KernelInfo, MANIFEST_FILE, PartitionInfo, SlotContents,
    VerityInfo,
};

/// The built-in default spec: the repository's `virga.toml`.
pub const DEFAULT_SPEC_TOML: &str = include_str!("../../../virga.toml");

/// x86 kernels accept at most 2048 bytes of command line, including the terminating NUL.
pub const MAX_CMDLINE: usize = 2047;

/// What went wrong with a spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The spec file could not be read.
    #[error("cannot read spec {path}: {source}")]
    Read {
        /// The spec file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown or mistyped keys.
    #[error("{origin}: {message}")]
    Parse {
        /// File name or `built-in default`.
        origin: String,
        /// The parser's message, which includes line and column.
        message: String,
    },
    /// The spec parses but asks for something impossible.
    #[error("{origin}: `{field}`: {message}")]
    Invalid {
        /// File name or `built-in default`.
        origin: String,
        /// The offending key, dotted (`kernel.modules[3]`).
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// Image profile: a set of defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Cloud test image: BusyBox toolbox and a console shell.
    #[default]
    Default,
    /// Only the virga binary: no shell, no toolbox.
    Minimal,
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "default" => Ok(Profile::Default),
            "minimal" => Ok(Profile::Minimal),
            other => Err(format!(
                "unknown profile `{other}`: use `default` or `minimal`"
            )),
        }
    }
}

/// Where the kernel comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KernelSource {
    /// A Debian package fetched with `apt-get download`.
    #[default]
    Debian,
    /// A local vmlinuz and modules directory.
    Local,
    /// The lean kernel: Debian's `linux-source` package compiled with virga's configuration
    /// fragments (`kernel/*.config`), every driver built in. Reference: `docs/kernel.md`.
    Build,
}

/// Kernel configurations the repository ships (`kernel/<name>.config`), for `source = "build"`.
pub const KERNEL_CONFIGS: &[&str] = &["cloud", "container-host"];

/// A kernel option an image needs, and who asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFeature {
    /// Option name as in `.config`: `CONFIG_DM_VERITY`.
    pub option: String,
    /// Who needs it, for the error message: `kernel.features[0]`, `PID 1 mounts devtmpfs`, …
    pub needed_by: String,
}

impl KernelFeature {
    /// A requirement and its reason.
    pub fn new(option: &str, needed_by: impl Into<String>) -> Self {
        Self {
            option: option.to_owned(),
            needed_by: needed_by.into(),
        }
    }
}

/// Whether `name` is spelled like a Kconfig option in `.config`: `CONFIG_` and upper-case
/// letters, digits or `_`.
pub fn is_kernel_option(name: &str) -> bool {
    name.strip_prefix("CONFIG_").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    })
}

/// `config = "cloud"` or `config = ["cloud", "extra.config"]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Which program is PID 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum InitKind {
    /// virga's Rust PID 1.
    #[default]
    Virga,
    /// BusyBox init with `/etc/inittab` from the spec's files (baseline images).
    Busybox,
}

/// initramfs compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip: read by every Linux kernel.
    #[default]
    Gzip,
    /// zstd: faster to unpack; needs `CONFIG_RD_ZSTD`.
    Zstd,
    /// No compression.
    None,
}

/// `[kernel]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSpec {
    /// Where the kernel comes from.
    #[serde(default)]
    pub source: KernelSource,
    /// Debian package (source = debian); with source = build, the kernel whose version the
    /// `linux-source` package must match (or a `linux-source-*` package itself).
    #[serde(default = "default_kernel_package")]
    pub package: String,
    /// Pinned package version (source = debian or build).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Configuration fragments for source = build, applied in order on top of `tinyconfig`:
    /// names from [`KERNEL_CONFIGS`] or paths to `.config` fragments (relative to the spec).
    /// Empty = `["cloud"]`.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub config: Vec<String>,
    /// Kernel options the image requires (`CONFIG_DM_VERITY`): checked against the kernel's
    /// configuration at build time; built in, or a module the image carries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// Kernel image (source = local).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmlinuz: Option<PathBuf>,
    /// `/lib/modules/<release>` directory (source = local).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules_dir: Option<PathBuf>,
    /// Kernel command line baked into the image's manifest.
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    /// Driver modules wanted, by name.
    #[serde(default)]
    pub modules: Vec<String>,
}

fn default_kernel_package() -> String {
    "linux-image-cloud-amd64".to_owned()
}

fn default_cmdline() -> String {
    "console=ttyS0".to_owned()
}

/// `[userland]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserlandSpec {
    /// PID 1.
    #[serde(default)]
    pub init: InitKind,
    /// Carry BusyBox; `None` = the profile's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toolbox: Option<bool>,
    /// Root shell on the console; `None` = the profile's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_shell: Option<bool>,
    /// Run virga's SSH server (default: on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<bool>,
    /// A prebuilt guest binary to use instead of building one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_binary: Option<PathBuf>,
}

/// `[update]`: A/B updates of disk images (`docs/updates.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSpec {
    /// The trusted update key set (`keyset.json` from `virga keys new`), relative to the spec:
    /// baked into the verified system as `/usr/share/virga/update-keys.json`. Without it the
    /// image installs no update (verification is mandatory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<PathBuf>,
}

/// `[initramfs]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitramfsSpec {
    /// Compression of the cpio archive.
    #[serde(default)]
    pub compression: Compression,
}

/// The slot's read-only system filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SystemFs {
    /// squashfs, xz: the smallest (the default).
    #[default]
    Squashfs,
    /// erofs, LZ4HC: faster reads, larger.
    Erofs,
}

/// Disk image formats `virga build --format` (and `disk.formats`) accept.
pub const DISK_FORMATS: &[&str] = &["raw", "qcow2", "vmdk", "vhd", "containerdisk"];

/// `[disk]`: the bootable disk image (docs/disk-layout.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// Formats `virga build` writes when no `--format` is given; empty: no disk image.
    #[serde(default)]
    pub formats: Vec<String>,
    /// System slots: 2 (A and B, for updates) or 1 (a test image that never updates).
    #[serde(default = "default_slots")]
    pub slots: u8,
    /// Virtual disk size (`512M`, `1G`): whole MiB; the state partition gets what the other
    /// partitions leave.
    #[serde(default = "default_disk_size")]
    pub size: String,
    /// EFI system partition size (GRUB, each slot's kernel and initramfs).
    #[serde(default = "default_esp_size")]
    pub esp_size: String,
    /// Size of each slot's system partition (its verity partition comes on top).
    #[serde(default = "default_usr_size")]
    pub usr_size: String,
    /// The slot's filesystem.
    #[serde(default)]
    pub system_fs: SystemFs,
}

impl Default for DiskSpec {
    fn default() -> Self {
        DiskSpec {
            formats: Vec::new(),
            slots: default_slots(),
            size: default_disk_size(),
            esp_size: default_esp_size(),
            usr_size: default_usr_size(),
            system_fs: SystemFs::default(),
        }
    }
}

impl DiskSpec {
    /// `size` in bytes (validated).
    pub fn size_bytes(&self) -> u64 {
        parse_size(&self.size).unwrap_or(0)
    }
    /// `esp_size` in bytes (validated).
    pub fn esp_bytes(&self) -> u64 {
        parse_size(&self.esp_size).unwrap_or(0)
    }
    /// `usr_size` in bytes (validated).
    pub fn usr_bytes(&self) -> u64 {
        parse_size(&self.usr_size).unwrap_or(0)
    }
}

fn default_slots() -> u8 {
    2
}
fn default_disk_size() -> String {
    "512M".into()
}
fn default_esp_size() -> String {
    "64M".into()
}
fn default_usr_size() -> String {
    "128M".into()
}

/// Parses a disk size: a whole number with `M`/`MiB` or `G`/`GiB` (`64M`, `1G`).
pub fn parse_size(s: &str) -> Option<u64> {
    const MIB: u64 = 1 << 20;
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "M" | "MiB" => MIB,
        "G" | "GiB" => 1024 * MIB,
        _ => return None,
    };
    n.checked_mul(mult).filter(|v| *v > 0)
}

/// `[[files]]`: one extra file in the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Absolute destination path inside the image.
    pub path: String,
    /// Host file to copy, relative to the spec file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
    /// Inline content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Octal permission bits, e.g. `"0755"`.
    #[serde(default = "default_mode")]
    pub mode: String,
}

fn default_mode() -> String {
    "0644".to_owned()
}

/// A parsed and validated `virga.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// Image name.
    pub name: String,
    /// Profile (defaults for toolbox and console shell).
    #[serde(default)]
    pub profile: Profile,
    /// Fallback hostname.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// `[kernel]`
    pub kernel: KernelSpec,
    /// `[userland]`
    #[serde(default)]
    pub userland: UserlandSpec,
    /// `[initramfs]`
    #[serde(default)]
    pub initramfs: InitramfsSpec,
    /// `[[files]]`
    #[serde(default)]
    pub files: Vec<FileSpec>,
    /// Datasources the guest tries, in order, unless `virga.ds=` says otherwise.
    #[serde(default = "default_datasources")]
    pub datasources: Vec<String>,
    /// `[disk]`
    #[serde(default)]
    pub disk: DiskSpec,
    /// `[update]`
    #[serde(default)]
    pub update: UpdateSpec,
    /// Directory relative `source` paths are resolved against; not part of the spec text.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// Datasource names the guest knows.
pub use boot_contract::datasource::NAMES as DATASOURCES;

fn default_datasources() -> Vec<String> {
    boot_contract::default_datasources()
}

fn default_hostname() -> String {
    "virga".to_owned()
}

impl ImageSpec {
    /// The built-in default spec.
    pub fn builtin() -> Self {
        // The embedded spec is checked by a unit test; failing here would be a build defect.
        Self::parse(DEFAULT_SPEC_TOML, "built-in default", Path::new("."))
            .expect("the built-in virga.toml is valid")
    }

    /// Reads and validates a spec file.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().map(Path::to_owned).unwrap_or_default();
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        Self::parse(&text, &path.display().to_string(), &base)
    }

    /// Parses and validates spec text. `origin` names the source in error messages.
    pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<Self, SpecError> {
        let mut spec: ImageSpec = toml::from_str(text).map_err(|e| SpecError::Parse {
            origin: origin.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        spec.base_dir = base_dir.to_owned();
        spec.validate(origin)?;
        Ok(spec)
    }

    /// Whether BusyBox goes into the image.
    pub fn toolbox(&self) -> bool {
        self.userland
            .toolbox
            .unwrap_or(self.profile == Profile::Default)
            || self.userland.init == InitKind::Busybox
    }

    /// Whether PID 1 starts a root shell on the console.
    pub fn console_shell(&self) -> bool {
        self.userland
            .console_shell
            .unwrap_or(self.profile == Profile::Default)
            && self.toolbox()
    }

    /// The configuration fragments of a `source = "build"` kernel, in order: `["cloud"]` when
    /// the spec names none.
    pub fn kernel_configs(&self) -> Vec<String> {
        if self.kernel.config.is_empty() {
            vec!["cloud".to_owned()]
        } else {
            self.kernel.config.clone()
        }
    }

    /// Kernel options this image needs: the spec's `kernel.features`, and what the rest of the
    /// spec implies (PID 1's mounts and system calls, the initramfs compression, the serial
    /// console). `virga build` checks them against the chosen kernel's configuration.
    pub fn required_kernel_features(&self) -> Vec<KernelFeature> {
        let mut out = Vec::new();
        let add = |out: &mut Vec<KernelFeature>, o: &str, why: &str| {
            out.push(KernelFeature::new(o, why));
        };
        add(&mut out, "CONFIG_BLK_DEV_INITRD", "the initramfs");
        match self.initramfs.compression {
            Compression::Zstd => add(
                &mut out,
                "CONFIG_RD_ZSTD",
                "initramfs.compression = \"zstd\"",
            ),
            Compression::Gzip => add(
                &mut out,
                "CONFIG_RD_GZIP",
                "initramfs.compression = \"gzip\"",
            ),
            Compression::None => {}
        }
        add(&mut out, "CONFIG_BINFMT_ELF", "static ELF programs (/init)");
        if self
            .kernel
            .cmdline
            .split_whitespace()
            .any(|a| a.starts_with("console=ttyS"))
        {
            add(
                &mut out,
                "CONFIG_SERIAL_8250_CONSOLE",
                "console=ttyS… on kernel.cmdline",
            );
        }
        if self.userland.init == InitKind::Virga {
            for (o, why) in [
                ("CONFIG_DEVTMPFS", "PID 1 mounts devtmpfs on /dev"),
                ("CONFIG_PROC_FS", "PID 1 mounts /proc"),
                ("CONFIG_SYSFS", "PID 1 mounts /sys"),
                ("CONFIG_TMPFS", "PID 1 mounts tmpfs on /run and /tmp"),
                (
                    "CONFIG_UNIX98_PTYS",
                    "PID 1 mounts devpts (console shell, SSH sessions)",
                ),
                ("CONFIG_FUTEX", "the guest binary's threads"),
                ("CONFIG_SIGNALFD", "PID 1's service supervisor"),
                ("CONFIG_INET", "the network stage"),
                ("CONFIG_PACKET", "the DHCP client (raw packet sockets)"),
            ] {
                add(&mut out, o, why);
            }
        }
        for (i, f) in self.kernel.features.iter().enumerate() {
            add(&mut out, f, &format!("kernel.features[{i}]"));
        }
        out
    }

    /// Applies a profile chosen on the command line.
    pub fn with_profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// SHA-256 of the spec's canonical JSON form (key order fixed, defaults filled in).
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(&json))
    }

    fn validate(&self, origin: &str) -> Result<(), SpecError> {
        let invalid = |field: &str, message: String| SpecError::Invalid {
            origin: origin.to_owned(),
            field: field.to_owned(),
            message,
        };
        if self.name.trim().is_empty() || self.name.contains(['/', '\n']) {
            return Err(invalid(
                "name",
                "must be a non-empty single word without `/`".into(),
            ));
        }
        if !valid_hostname(&self.hostname) {
            return Err(invalid(
                "hostname",
                "must be 1-63 letters, digits or `-`, not starting or ending with `-`".into(),
            ));
        }
        let k = &self.kernel;
        match k.source {
            KernelSource::Debian => {
                if k.package.is_empty() || !k.package.chars().all(is_deb_name_char) {
                    return Err(invalid(
                        "kernel.package",
                        format!("`{}` is not a Debian package name", k.package),
                    ));
                }
                if k.vmlinuz.is_some() || k.modules_dir.is_some() {
                    return Err(invalid(
                        "kernel.vmlinuz",
                        "only used with source = \"local\"; remove it or set source = \"local\""
                            .into(),
                    ));
                }
            }
            KernelSource::Build => {
                if k.package.is_empty() || !k.package.chars().all(is_deb_name_char) {
                    return Err(invalid(
                        "kernel.package",
                        format!(
                            "`{}` is not a Debian package name (with source = \"build\" it names \
                             the kernel whose linux-source version is built)",
                            k.package
                        ),
                    ));
                }
                if k.vmlinuz.is_some() || k.modules_dir.is_some() {
                    return Err(invalid(
                        "kernel.vmlinuz",
                        "only used with source = \"local\"; remove it or set source = \"local\""
                            .into(),
                    ));
                }
                for (i, c) in k.config.iter().enumerate() {
                    let is_path = c.ends_with(".config") || c.contains('/');
                    if c.trim().is_empty() || !(KERNEL_CONFIGS.contains(&c.as_str()) || is_path) {
                        return Err(invalid(
                            &format!("kernel.config[{i}]"),
                            format!(
                                "unknown kernel configuration `{c}`; use one of {} or a path to \
                                 a fragment ending in `.config`",
                                KERNEL_CONFIGS.join(", ")
                            ),
                        ));
                    }
                }
            }
            KernelSource::Local => {
                if k.vmlinuz.is_none() {
                    return Err(invalid(
                        "kernel.vmlinuz",
                        "source = \"local\" needs `vmlinuz = \"/path/to/vmlinuz\"`".into(),
                    ));
                }
                if k.modules_dir.is_none() && !k.modules.is_empty() {
                    return Err(invalid(
                        "kernel.modules_dir",
                        "modules are requested but no `modules_dir` (/lib/modules/<release>) is set"
                            .into(),
                    ));
                }
            }
        }
        if k.source != KernelSource::Build && !k.config.is_empty() {
            return Err(invalid(
                "kernel.config",
                "configuration fragments are only used with source = \"build\"; remove it or \
                 set source = \"build\""
                    .into(),
            ));
        }
        for (i, f) in k.features.iter().enumerate() {
            if !is_kernel_option(f) {
                return Err(invalid(
                    &format!("kernel.features[{i}]"),
                    format!(
                        "`{f}` is not a kernel option; write it as in .config, e.g. \
                         \"CONFIG_DM_VERITY\""
                    ),
                ));
            }
        }
        if k.cmdline.len() > MAX_CMDLINE || k.cmdline.contains(['\n', '\0']) {
            return Err(invalid(
                "kernel.cmdline",
                format!("must be one line of at most {MAX_CMDLINE} bytes"),
            ));
        }
        for (i, m) in k.modules.iter().enumerate() {
            if m.is_empty()
                || m.len() > 55
                || !m
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(invalid(
                    &format!("kernel.modules[{i}]"),
                    format!("`{m}` is not a module name (letters, digits, `_`, `-`)"),
                ));
            }
        }
        for (i, d) in self.datasources.iter().enumerate() {
            if !DATASOURCES.contains(&d.as_str()) {
                return Err(invalid(
                    &format!("datasources[{i}]"),
                    format!(
                        "unknown datasource `{d}`; known: {}",
                        DATASOURCES.join(", ")
                    ),
                ));
            }
        }
        let d = &self.disk;
        for (i, f) in d.formats.iter().enumerate() {
            if !DISK_FORMATS.contains(&f.as_str()) {
                return Err(invalid(
                    &format!("disk.formats[{i}]"),
                    format!(
                        "unknown disk format `{f}`; use one of: {}",
                        DISK_FORMATS.join(", ")
                    ),
                ));
            }
        }
        if !(1..=2).contains(&d.slots) {
            return Err(invalid(
                "disk.slots",
                format!(
                    "must be 2 (A and B) or 1 (an image that never updates), not {}",
                    d.slots
                ),
            ));
        }
        for (field, v) in [
            ("disk.size", &d.size),
            ("disk.esp_size", &d.esp_size),
            ("disk.usr_size", &d.usr_size),
        ] {
            if parse_size(v).is_none() {
                return Err(invalid(
                    field,
                    format!("`{v}` is not a size such as \"512M\" or \"1G\" (whole MiB)"),
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, f) in self.files.iter().enumerate() {
            let field = format!("files[{i}]");
            let p = Path::new(&f.path);
            if !p.is_absolute()
                || p.components().any(|c| matches!(c, Component::ParentDir))
                || f.path.ends_with('/')
            {
                return Err(invalid(
                    &format!("{field}.path"),
                    format!("`{}` must be an absolute file path without `..`", f.path),
                ));
            }
            if !seen.insert(f.path.trim_end_matches('/').to_owned()) {
                return Err(invalid(
                    &format!("{field}.path"),
                    format!("`{}` is listed twice", f.path),
                ));
            }
            match (&f.source, &f.content) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(invalid(
                        &field,
                        "give exactly one of `source` or `content`".into(),
                    ));
                }
                _ => {}
            }
            if parse_mode(&f.mode).is_none() {
                return Err(invalid(
                    &format!("{field}.mode"),
                    format!("`{}` is not an octal mode such as \"0644\"", f.mode),
                ));
            }
        }
        Ok(())
    }
}

/// Parses an octal permission string (`"0755"`, `"644"`) into mode bits.
pub fn parse_mode(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 4 {
        return None;
    }
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o7777)
}

fn is_deb_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.')
}

/// The hostname policy every source is checked against (`boot_contract::hostname`).
pub fn valid_hostname(h: &str) -> bool {
    boot_contract::hostname::is_valid(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ImageSpec, SpecError> {
        ImageSpec::parse(text, "test.toml", Path::new("/tmp"))
    }

    const MINIMAL: &str = "name = \"t\"\n[kernel]\n";

    #[test]
    fn builtin_default_is_valid() {
        let s = ImageSpec::builtin();
        assert_eq!(s.profile, Profile::Default);
        assert!(s.toolbox());
        assert!(s.console_shell());
        assert!(s.kernel.modules.iter().any(|m| m == "virtio_net"));
    }

    #[test]
    fn minimal_profile_drops_toolbox_and_shell() {
        let s = ImageSpec::builtin().with_profile(Profile::Minimal);
        assert!(!s.toolbox());
        assert!(!s.console_shell());
    }

    #[test]
    fn defaults_fill_in() {
        let s = parse(MINIMAL).unwrap();
        assert_eq!(s.kernel.package, "linux-image-cloud-amd64");
        assert_eq!(s.kernel.cmdline, "console=ttyS0");
        assert_eq!(s.initramfs.compression, Compression::Gzip);
        assert_eq!(s.hostname, "virga");
    }

    #[test]
    fn unknown_keys_are_errors_with_position() {
        let e = parse("name = \"t\"\n[kernel]\nmodulez = []\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("modulez"), "{e}");
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn malformed_toml_is_an_error() {
        assert!(matches!(parse("name = \n"), Err(SpecError::Parse { .. })));
    }

    #[test]
    fn bad_module_name_is_named() {
        let e = parse("name = \"t\"\n[kernel]\nmodules = [\"ok\", \"../evil\"]\n").unwrap_err();
        assert!(e.to_string().contains("kernel.modules[1]"), "{e}");
    }

    #[test]
    fn local_kernel_needs_vmlinuz() {
        let e = parse("name = \"t\"\n[kernel]\nsource = \"local\"\n").unwrap_err();
        assert!(e.to_string().contains("vmlinuz"), "{e}");
    }

    #[test]
    fn build_kernel_spec() {
        let s = parse("name = \"t\"\n[kernel]\nsource = \"build\"\n").unwrap();
        assert_eq!(s.kernel.source, KernelSource::Build);
        assert_eq!(s.kernel_configs(), ["cloud"]);
        let s = parse("name = \"t\"\n[kernel]\nsource = \"build\"\nconfig = \"container-host\"\n")
            .unwrap();
        assert_eq!(s.kernel_configs(), ["container-host"]);
        let s = parse(
            "name = \"t\"\n[kernel]\nsource = \"build\"\nconfig = [\"cloud\", \"extra/my.config\"]\n",
        )
        .unwrap();
        assert_eq!(s.kernel_configs(), ["cloud", "extra/my.config"]);
        let e =
            parse("name = \"t\"\n[kernel]\nsource = \"build\"\nconfig = [\"cloud\", \"tiny\"]\n")
                .unwrap_err()
                .to_string();
        assert!(
            e.contains("kernel.config[1]") && e.contains("container-host"),
            "{e}"
        );
        let e = parse("name = \"t\"\n[kernel]\nconfig = \"cloud\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`kernel.config`") && e.contains("source = \"build\""),
            "{e}"
        );
        let e = parse("name = \"t\"\n[kernel]\nsource = \"build\"\nvmlinuz = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("kernel.vmlinuz"), "{e}");
    }

    #[test]
    fn kernel_features_are_checked_and_implied() {
        let e = parse("name = \"t\"\n[kernel]\nfeatures = [\"CONFIG_DM_VERITY\", \"dm_verity\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("kernel.features[1]") && e.contains("CONFIG_DM_VERITY"),
            "{e}"
        );
        let s = parse("name = \"t\"\n[kernel]\nfeatures = [\"CONFIG_DM_VERITY\"]\n").unwrap();
        let f = s.required_kernel_features();
        let find = |o: &str| {
            f.iter()
                .find(|x| x.option == o)
                .map(|x| x.needed_by.clone())
        };
        assert_eq!(
            find("CONFIG_DM_VERITY").as_deref(),
            Some("kernel.features[0]")
        );
        assert!(find("CONFIG_RD_GZIP").is_some(), "{f:?}");
        assert!(find("CONFIG_RD_ZSTD").is_none(), "{f:?}");
        assert!(find("CONFIG_DEVTMPFS").is_some(), "{f:?}");
        assert!(find("CONFIG_SERIAL_8250_CONSOLE").is_some(), "{f:?}");
        let b = ImageSpec::builtin();
        let f = b.required_kernel_features();
        assert!(f.iter().any(|x| x.option == "CONFIG_RD_ZSTD"), "{f:?}");
        let busybox =
            parse("name = \"t\"\n[kernel]\ncmdline = \"quiet\"\n[userland]\ninit = \"busybox\"\n")
                .unwrap();
        let f = busybox.required_kernel_features();
        assert!(!f.iter().any(|x| x.option == "CONFIG_DEVTMPFS"), "{f:?}");
        assert!(
            !f.iter().any(|x| x.option == "CONFIG_SERIAL_8250_CONSOLE"),
            "{f:?}"
        );
    }

    #[test]
    fn files_are_checked() {
        let bad_path = "name = \"t\"\n[kernel]\n[[files]]\npath = \"etc/x\"\ncontent = \"\"\n";
        assert!(
            parse(bad_path)
                .unwrap_err()
                .to_string()
                .contains("absolute")
        );
        let traversal = "name = \"t\"\n[kernel]\n[[files]]\npath = \"/etc/../x\"\ncontent = \"\"\n";
        assert!(parse(traversal).is_err());
        let both =
            "name = \"t\"\n[kernel]\n[[files]]\npath = \"/x\"\ncontent = \"\"\nsource = \"y\"\n";
        assert!(parse(both).unwrap_err().to_string().contains("exactly one"));
        let mode =
            "name = \"t\"\n[kernel]\n[[files]]\npath = \"/x\"\ncontent = \"\"\nmode = \"rwx\"\n";
        assert!(parse(mode).unwrap_err().to_string().contains("octal"));
        let dup = "name = \"t\"\n[kernel]\n[[files]]\npath = \"/x\"\ncontent = \"\"\n[[files]]\npath = \"/x\"\ncontent = \"\"\n";
        assert!(parse(dup).unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn datasources_are_checked() {
        assert_eq!(
            parse(MINIMAL)
                .unwrap()
                .datasources
                .last()
                .map(String::as_str),
            Some("none")
        );
        let bad = "name = \"t\"\ndatasources = [\"nocloud\", \"azure\"]\n[kernel]\n";
        let e = parse(bad).unwrap_err().to_string();
        assert!(e.contains("datasources[1]") && e.contains("azure"), "{e}");
    }

    #[test]
    fn long_cmdline_rejected() {
        let text = format!(
            "name = \"t\"\n[kernel]\ncmdline = \"{}\"\n",
            "a".repeat(3000)
        );
        assert!(
            parse(&text)
                .unwrap_err()
                .to_string()
                .contains("kernel.cmdline")
        );
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        let a = parse(MINIMAL).unwrap();
        let b = parse(MINIMAL).unwrap();
        assert_eq!(a.hash(), b.hash());
        let c = parse("name = \"u\"\n[kernel]\n").unwrap();
        assert_ne!(a.hash(), c.hash());
    }

    #[test]
    fn disk_section_defaults_and_checks() {
        let s = parse(MINIMAL).unwrap();
        assert_eq!(s.disk.slots, 2);
        assert!(s.disk.formats.is_empty());
        assert_eq!(s.disk.size_bytes(), 512 << 20);
        assert_eq!(s.disk.system_fs, SystemFs::Squashfs);
        let ok = "name = \"t\"\n[kernel]\n[disk]\nformats = [\"qcow2\", \"vhd\"]\nslots = 1\nsize = \"1G\"\nsystem_fs = \"erofs\"\n";
        let s = parse(ok).unwrap();
        assert_eq!(s.disk.size_bytes(), 1 << 30);
        assert_eq!(s.disk.system_fs, SystemFs::Erofs);
        let bad_fmt = "name = \"t\"\n[kernel]\n[disk]\nformats = [\"vdi\"]\n";
        let e = parse(bad_fmt).unwrap_err().to_string();
        assert!(e.contains("disk.formats[0]") && e.contains("qcow2"), "{e}");
        let bad_slots = "name = \"t\"\n[kernel]\n[disk]\nslots = 3\n";
        assert!(
            parse(bad_slots)
                .unwrap_err()
                .to_string()
                .contains("disk.slots")
        );
        let bad_size = "name = \"t\"\n[kernel]\n[disk]\nusr_size = \"1.5G\"\n";
        assert!(
            parse(bad_size)
                .unwrap_err()
                .to_string()
                .contains("disk.usr_size")
        );
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("512 MiB"), Some(512 << 20));
        for bad in ["", "12", "1K", "-1M", "0M", "M", "1.5G"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn modes_parse() {
        assert_eq!(parse_mode("0755"), Some(0o755));
        assert_eq!(parse_mode("644"), Some(0o644));
        assert_eq!(parse_mode("0o600"), Some(0o600));
        assert_eq!(parse_mode("9"), None);
        assert_eq!(parse_mode(""), None);
        assert_eq!(parse_mode("77777"), None);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(text in "\\PC{0,300}") {
            let _ = parse(&text);
        }
    }
}
