//! The image configuration the builder writes for PID 1.

use serde::{Deserialize, Serialize};

/// Where the builder puts [`ImageConfig`] inside the initramfs.
pub const IMAGE_CONFIG_PATH: &str = "/etc/virga/image.json";

/// Kernel-tree directories whose modules a disk image keeps in its initramfs: what PID 1 needs
/// to mount the slot's verified `/usr` and the state partition (disk controllers, virtio, the
/// device mapper, filesystems). Every other module lives only in the slot, under
/// [`SLOT_MODULES_PREFIX`], and loads once `/usr` is mounted.
pub const EARLY_MODULE_DIRS: &[&str] = &[
    "drivers/ata/",
    "drivers/scsi/",
    "drivers/block/",
    "drivers/nvme/",
    "drivers/cdrom/",
    "drivers/md/",
    "drivers/virtio/",
    "fs/",
];

/// Where a [`ModuleEntry::path`] that lives in the slot's `/usr` starts: such a module loads
/// only after the verified system is mounted.
pub const SLOT_MODULES_PREFIX: &str = "/usr/lib/modules/";

/// Whether the module at `path` (`…/kernel/drivers/md/dm-verity.ko`) is one PID 1 needs before
/// `/usr` is mounted ([`EARLY_MODULE_DIRS`]).
pub fn early_module(path: &str) -> bool {
    let rel = path.split_once("/kernel/").map_or(path, |(_, r)| r);
    EARLY_MODULE_DIRS.iter().any(|d| rel.starts_with(d))
}

/// One kernel module PID 1 loads at boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleEntry {
    /// Module name (`virtio_net`).
    pub name: String,
    /// Absolute path of the `.ko` file inside the image; under [`SLOT_MODULES_PREFIX`] when it
    /// is in the slot's verified `/usr` rather than in the initramfs.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_modules_are_what_mounting_the_system_needs() {
        let k = "/lib/modules/6.1.0-1-cloud-amd64/kernel";
        for m in [
            "drivers/md/dm-verity.ko",
            "drivers/block/virtio_blk.ko",
            "drivers/virtio/virtio_pci.ko",
            "drivers/scsi/virtio_scsi.ko",
            "drivers/nvme/host/nvme.ko",
            "fs/squashfs/squashfs.ko",
            "fs/overlayfs/overlay.ko",
        ] {
            assert!(early_module(&format!("{k}/{m}")), "{m}");
        }
        for m in [
            "drivers/net/virtio_net.ko",
            "drivers/acpi/button.ko",
            "net/8021q/8021q.ko",
            "drivers/char/hw_random/virtio-rng.ko",
            "lib/crc32c_generic.ko",
        ] {
            assert!(!early_module(&format!("{k}/{m}")), "{m}");
        }
        // A path without the kernel tree prefix is taken as relative to it.
        assert!(early_module("fs/ext4/ext4.ko"));
    }
}
