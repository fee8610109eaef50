//! Bootable disk images for virga: GPT layout, dm-verity, ESP, GRUB, output formats.
//!
//! Pipeline position: the image builder's last stage. Given the kernel, the initramfs and the
//! slot's system filesystem it lays out one disk ([`layout`]): a BIOS boot partition for GRUB's
//! core.img, an EFI system partition (FAT) with GRUB, `vmlinuz-a`/`initrd-a` and the slot state
//! (`grubenv`), two system slots A and B (a read-only filesystem + its dm-verity hash tree
//! ([`verity`]) each; B empty until the first update) and an ext4 state partition. Every GUID
//! and timestamp is derived from the inputs, so the same inputs give the same bytes; the raw
//! disk is then converted ([`formats`]) to qcow2, VMDK, VHD or a KubeVirt containerDisk.
//! Layout and protocols: `docs/disk-layout.md`.

use std::path::{Path, PathBuf};

pub mod ext4;
pub mod formats;
pub mod grub;
pub mod guid;
pub mod layout;
pub mod oci;
pub mod sysfs;
pub mod tools;
pub mod verity;
pub mod writer;

/// What went wrong while making a disk image.
#[derive(Debug, thiserror::Error)]
pub enum DiskImageError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A program or data file from a Debian package is missing.
    #[error("{what}; install it with `apt-get install {package}`")]
    MissingTool {
        /// What is missing.
        what: String,
        /// The Debian package that provides it.
        package: String,
    },
    /// A tool ran and failed.
    #[error("{tool} failed: {message}")]
    ToolFailed {
        /// The program.
        tool: String,
        /// Its error output.
        message: String,
    },
    /// Something does not fit where it must go.
    #[error("{what} needs {need} bytes ({need_mib} MiB) but {place} has {have} bytes ({have_mib} MiB); {fix}", need_mib = need.div_ceil(1 << 20), have_mib = have / (1 << 20))]
    TooSmall {
        /// What is being placed.
        what: String,
        /// Where.
        place: String,
        /// Bytes needed.
        need: u64,
        /// Bytes available.
        have: u64,
        /// How to fix it.
        fix: String,
    },
    /// An invalid request or a malformed input.
    #[error("{0}")]
    Invalid(String),
    /// A dm-verity check failed.
    #[error("verity: {0}")]
    Verity(String),
    /// The ESP's FAT filesystem could not be written.
    #[error("ESP: {0}")]
    Fat(#[source] seed_image::SeedImageError),
    /// The partition table could not be written.
    #[error("GPT: {0}")]
    Gpt(String),
}

impl DiskImageError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DiskImageError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// 1 MiB: partitions start and end on MiB boundaries; disk sizes are whole MiB (Azure needs it).
pub const MIB: u64 = 1 << 20;
