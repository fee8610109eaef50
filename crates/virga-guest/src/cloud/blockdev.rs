//! Block devices: find filesystems by label (seed disks, config drives, the state disk) and
//! mount them.

use std::io::Read;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount, umount2};

/// A block device with a recognised filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    /// `/dev/sr0`, `/dev/vdb`, `/dev/vda1`.
    pub device: PathBuf,
    /// `iso9660`, `vfat` or `ext4`.
    pub fstype: &'static str,
    /// The volume label.
    pub label: String,
}

/// Reads the first 64 KiB of every block device (disks and partitions, not loop or ram) and
/// returns those with a recognised filesystem.
pub fn scan() -> Vec<Labelled> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/class/block") else {
        return found;
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        if name.starts_with("loop") || name.starts_with("ram") || name.starts_with("dm-") {
            continue;
        }
        let device = PathBuf::from(format!("/dev/{name}"));
        let mut head = Vec::with_capacity(64 * 1024);
        let read =
            std::fs::File::open(&device).and_then(|f| f.take(64 * 1024).read_to_end(&mut head));
        if read.is_err() {
            continue; // empty CD-ROM drive, unreadable device
        }
        if let Some(probe) = seed_image::probe::probe(&head) {
            found.push(Labelled {
                device,
                fstype: probe.fs_type.as_str(),
                label: probe.label.unwrap_or_default(),
            });
        }
    }
    found
}

/// Devices whose label is one of `labels`, ignoring ASCII case (cloud-init accepts `cidata`
/// and `CIDATA`, `config-2` and `CONFIG-2`).
pub fn with_label<'a>(all: &'a [Labelled], labels: &[&str]) -> Vec<&'a Labelled> {
    all.iter()
        .filter(|d| labels.iter().any(|l| d.label.eq_ignore_ascii_case(l)))
        .collect()
}

/// A read-only mount that is undone when dropped.
#[derive(Debug)]
pub struct Mounted {
    /// Where it is mounted.
    pub path: PathBuf,
}

impl Mounted {
    /// Mounts `dev` read-only at `path` (created if needed).
    pub fn read_only(dev: &Labelled, path: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(path)?;
        let flags =
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        // FAT defaults to the kernel's iocharset (ascii on Debian), a module of its own; UTF-8
        // (nls_utf8 is in the image) reads every long name.
        let data = (dev.fstype == "vfat").then_some("iocharset=utf8,shortname=mixed");
        mount(
            Some(dev.device.as_path()),
            path,
            Some(dev.fstype),
            flags,
            data,
        )
        .map_err(std::io::Error::from)?;
        Ok(Mounted {
            path: path.to_owned(),
        })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.path);
    }
}
