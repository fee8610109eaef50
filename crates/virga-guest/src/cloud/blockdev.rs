//! Block devices: find filesystems by label (seed disks, config drives, the state disk) and
//! mount them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

/// Waits (up to `timeout`) until every NVMe controller is live and shows a namespace. The
/// NVMe driver is built into Debian's cloud kernel and finds its namespaces on a work queue
/// the kernel does not wait for before starting PID 1, so on EC2 Nitro (EBS volumes are NVMe)
/// a disk can appear a little after boot begins. No controller, no wait.
pub fn settle_nvme(timeout: Duration) {
    let start = Instant::now();
    loop {
        let unsettled = nvme_unsettled(Path::new("/sys/class/nvme"));
        if unsettled.is_empty() {
            return;
        }
        if start.elapsed() >= timeout {
            tracing::info!(
                "NVMe controllers without a namespace after {timeout:?}: {}",
                unsettled.join(", ")
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Controllers under `class_dir` (`/sys/class/nvme`) that are not live or have no namespace.
fn nvme_unsettled(class_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(class_dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let dir = e.path();
        let live = std::fs::read_to_string(dir.join("state")).is_ok_and(|s| s.trim() == "live");
        // Namespaces are children named like `nvme0n1` (or `nvme0c0n1` with multipath).
        let has_ns = std::fs::read_dir(&dir).is_ok_and(|d| {
            d.flatten().any(|c| {
                let c = c.file_name();
                let c = c.to_string_lossy();
                c.starts_with("nvme") && c.trim_start_matches("nvme").contains('n')
            })
        });
        if !(live && has_ns) {
            out.push(name);
        }
    }
    out.sort();
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvme_controllers_settle_when_live_with_a_namespace() {
        let d = tempfile::tempdir().unwrap();
        let ctrl = |name: &str, state: &str, children: &[&str]| {
            let dir = d.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("state"), format!("{state}\n")).unwrap();
            for c in children {
                std::fs::create_dir_all(dir.join(c)).unwrap();
            }
        };
        assert!(nvme_unsettled(&d.path().join("absent")).is_empty());
        ctrl("nvme0", "live", &["nvme0n1", "power"]);
        ctrl("nvme1", "live", &["power", "hwmon1"]);
        ctrl("nvme2", "connecting", &["nvme2n1"]);
        ctrl("nvme3", "live", &["nvme3c3n1"]);
        assert_eq!(nvme_unsettled(d.path()), ["nvme1", "nvme2"]);
    }
}
