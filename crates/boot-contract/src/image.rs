//! The image configuration the builder writes for PID 1.

use serde::{Deserialize, Serialize};

/// Where the builder puts [`ImageConfig`] inside the initramfs.
pub const IMAGE_CONFIG_PATH: &str = "/etc/virga/image.json";

/// One kernel module PID 1 loads at boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleEntry {
    /// Module name (`virtio_net`).
    pub name: String,
    /// Absolute path of the `.ko` file inside the image.
    pub path: String,
    /// Names of modules (also in the list) that must be loaded first.
    #[serde(default)]
    pub depends: Vec<String>,
    /// The module's PCI device patterns (its `alias=pci:…` fields, shell globs matched against
    /// a device's sysfs `modalias`). Empty for drivers not bound to PCI ids (virtio devices,
    /// upper layers, filesystems).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pci: Vec<String>,
}

/// What the builder tells PID 1 about the image it is part of.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// Contract version ([`crate::CONTRACT_VERSION`]).
    pub contract: u32,
    /// Image name from the spec.
    pub name: String,
    /// Hostname when no datasource and no `virga.hostname=` provides one.
    pub hostname: String,
    /// Start a root shell on the console (overridden by `virga.shell=` on the command line).
    pub console_shell: bool,
    /// Shell to run on the console, when `console_shell` is set.
    #[serde(default)]
    pub shell: Option<String>,
    /// Kernel release the modules were built for.
    pub kernel_release: String,
    /// Modules to load, dependencies first.
    pub modules: Vec<ModuleEntry>,
    /// Datasources to try, in order, when `virga.ds=` is not on the command line.
    #[serde(default = "default_datasources")]
    pub datasources: Vec<String>,
    /// The default user SSH keys from metadata are installed for.
    #[serde(default = "default_user")]
    pub default_user: String,
    /// Run the SSH server (overridden by `virga.ssh=` on the command line).
    #[serde(default = "yes")]
    pub ssh: bool,
    /// The verified system image of the slot this initramfs belongs to, when the image was
    /// built as a disk (absent in older images and in kernel + initramfs builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemImage>,
}

/// The slot's read-only system filesystem and how to verify it (docs/disk-layout.md). It
/// travels in the initramfs, next to the kernel, never inside the filesystem it vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemImage {
    /// Filesystem type to mount (`squashfs` or `erofs`), to be mounted read-only on `/usr`.
    pub filesystem: String,
    /// PARTUUID of the slot's system partition: the first 128 bits of `root_hash`.
    pub usr_partuuid: String,
    /// PARTUUID of its dm-verity hash partition: the last 128 bits of `root_hash`.
    pub verity_partuuid: String,
    /// dm-verity root hash, hex (format 1, sha256).
    pub root_hash: String,
    /// Salt, hex.
    pub salt: String,
    /// Hash algorithm (`sha256`).
    pub hash_algorithm: String,
    /// Data and hash block size (4096).
    pub block_size: u32,
    /// Data blocks covered.
    pub data_blocks: u64,
    /// Offset of the hash tree on the hash partition, in bytes (after the superblock).
    pub hash_offset: u64,
}

fn yes() -> bool {
    true
}

/// The datasource order of an image that does not say: local sources first, then network ones.
pub fn default_datasources() -> Vec<String> {
    crate::datasource::DEFAULT_ORDER
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn default_user() -> String {
    "root".to_owned()
}
