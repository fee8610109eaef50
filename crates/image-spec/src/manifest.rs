//! `manifest.json`: what a build produced.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// File name of the manifest inside an output directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// One built file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// File name inside the output directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// The kernel that went into the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// Kernel release (`uname -r`), e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// Where it came from: `debian:<package>=<version>` or `local:<path>`.
    pub origin: String,
    /// SHA-256 of the package file (Debian) or of the vmlinuz (local).
    pub origin_sha256: String,
}

/// What `virga build` produced; written as `manifest.json` next to the artifacts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    /// Version of the `virga` tool that built the image.
    pub virga_version: String,
    /// Image name from the spec.
    pub name: String,
    /// Profile from the spec.
    pub profile: String,
    /// SHA-256 of the spec's canonical form ([`crate::ImageSpec::hash`]).
    pub spec_sha256: String,
    /// The kernel.
    pub kernel: KernelInfo,
    /// Kernel command line to boot with.
    pub cmdline: String,
    /// Modules in the image, in the order PID 1 loads them.
    pub modules: Vec<String>,
    /// Requested modules that are built into the kernel (nothing to load).
    pub builtin_modules: Vec<String>,
    /// PID 1 program (`virga` or `busybox`).
    pub init: String,
    /// BusyBox version when the toolbox is in, e.g. `1:1.35.0-4+deb12u1+b1`.
    pub busybox: Option<String>,
    /// Size in bytes of the stripped guest binary, when it is in the image.
    pub guest_binary_size: Option<u64>,
    /// Files in the output directory: `vmlinuz`, `initramfs.img`, and the disk images.
    pub artifacts: Vec<Artifact>,
    /// The bootable disk, when one was built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskInfo>,
}

/// One GPT partition of the disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// GPT entry number (1-based).
    pub number: u32,
    /// GPT partition name (`esp`, `usr-A`, `virga-state`, …).
    pub label: String,
    /// Partition type GUID.
    pub type_guid: String,
    /// Unique partition GUID (PARTUUID).
    pub guid: String,
    /// Offset in bytes.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
}

/// dm-verity parameters of a slot's system filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerityInfo {
    /// Root hash, hex.
    pub root_hash: String,
    /// Salt, hex.
    pub salt: String,
    /// Hash algorithm (`sha256`).
    pub hash_algorithm: String,
    /// Data block size in bytes.
    pub data_block_size: u32,
    /// Hash block size in bytes.
    pub hash_block_size: u32,
    /// Data blocks covered (the filesystem's size / data_block_size).
    pub data_blocks: u64,
    /// Offset of the tree on the hash partition, in bytes (after the superblock).
    pub hash_offset: u64,
}

/// What the slot's system filesystem holds, and what the initramfs still carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotContents {
    /// Filesystem (`squashfs`, `erofs`).
    pub filesystem: String,
    /// Image size in bytes (what verity covers).
    pub filesystem_bytes: u64,
    /// Regular files in it.
    pub files: u64,
    /// Their bytes, uncompressed.
    pub file_bytes: u64,
    /// Top-level groups of content, e.g. `/usr/bin/busybox (+ 400 applet links)`.
    pub holds: Vec<String>,
    /// What the initramfs carries that the slot also has (to be dropped from the initramfs
    /// once the guest mounts the slot).
    pub also_in_initramfs: Vec<String>,
}

/// The bootable disk image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// Virtual size in bytes.
    pub size: u64,
    /// System slots (1 or 2).
    pub slots: u8,
    /// Disk GUID.
    pub disk_guid: String,
    /// The partition table.
    pub partitions: Vec<PartitionInfo>,
    /// Slot A's verity parameters (the same values are in slot A's initramfs).
    pub verity: VerityInfo,
    /// Slot A's system filesystem.
    pub slot: SlotContents,
    /// Kernel command line GRUB passes (before the slot keys).
    pub cmdline: String,
    /// Formats written (`qcow2`, …).
    pub formats: Vec<String>,
}

impl ImageManifest {
    /// Looks up an artifact by file name.
    pub fn artifact(&self, name: &str) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| a.name == name)
    }

    /// Reads `manifest.json` from an output directory.
    pub fn load(dir: &Path) -> Result<Self, std::io::Error> {
        let text = std::fs::read_to_string(dir.join(MANIFEST_FILE))?;
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }

    /// Canonical JSON text (pretty, trailing newline) — byte-identical for identical builds.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}
