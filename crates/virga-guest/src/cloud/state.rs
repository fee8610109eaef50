//! The persistent state: the ext4 filesystem labelled `virga-state` (a partition of a disk
//! image, or a whole disk given to the VM), grown to the end of its disk, holding `/var` and
//! `/home`.
//!
//! Layout of the filesystem: `var/` and `home/` at its root, and `.var-work/` for overlayfs.
//! `/var` is an overlay whose lower layer is the image's own `/var` (seed directories a spec put
//! there stay visible) and whose upper layer is `var/` on the state; `/home` is a bind mount of
//! `home/`. So `/var/lib/virga` (markers, instance id, host keys, random seed), `/var/log` and
//! later container data persist, as on Container Linux. A filesystem in the older layout (the
//! contents of `/var/lib/virga` at its root) is moved into `var/lib/virga/` once.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::gpt;

/// Where the state filesystem itself is mounted.
pub const STATE_MOUNT: &str = "/run/virga/state";
/// Entries of the older layout kept at the filesystem's root (the contents of /var/lib/virga).
const LAYOUT_DIRS: &[&str] = &["var", "home", ".var-work", "lost+found"];

/// Why the state could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The filesystem did not mount (corrupted, or not ext4).
    #[error(
        "mount {device} ({fs}) on {STATE_MOUNT}: {source}; the state is left alone for recovery (boot goes on without persistence)"
    )]
    Mount {
        /// Device.
        device: String,
        /// Filesystem.
        fs: String,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// The layout could not be made.
    #[error("{path}: {source}")]
    Layout {
        /// Path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `/var` or `/home` could not be mounted from the state.
    #[error("mount {what}: {source}")]
    Bind {
        /// Which.
        what: String,
        /// Why.
        #[source]
        source: nix::Error,
    },
}

/// What happened to the state, for the status document.
#[derive(Debug, Default)]
pub struct Mounted {
    /// Growth: `vda7 grown from X to Y MiB`.
    pub grown: Option<String>,
    /// The old layout was moved into `var/lib/virga`.
    pub migrated: bool,
    /// Non-fatal problems.
    pub warnings: Vec<String>,
}

/// Mounts the state filesystem on `device`, grows it when its disk has grown, and puts `/var`
/// and `/home` on it.
pub fn mount(device: &Path, fstype: &str) -> Result<Mounted, StateError> {
    let mut out = Mounted::default();
    match grow_partition(device) {
        Ok(Some(msg)) => out.grown = Some(msg),
        Ok(None) => {}
        Err(e) => out
            .warnings
            .push(format!("growing {}: {e}", device.display())),
    }
    std::fs::create_dir_all(STATE_MOUNT).map_err(layout_err(STATE_MOUNT))?;
    nix::mount::mount(
        Some(device),
        STATE_MOUNT,
        Some(fstype),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|source| StateError::Mount {
        device: device.display().to_string(),
        fs: fstype.to_owned(),
        source,
    })?;
    match grow_filesystem(device) {
        Ok(Some(msg)) => {
            out.grown = Some(match out.grown.take() {
                Some(p) => format!("{p}; {msg}"),
                None => msg,
            })
        }
        Ok(None) => {}
        Err(e) => out.warnings.push(format!("growing the filesystem: {e}")),
    }
    let root = Path::new(STATE_MOUNT);
    out.migrated = migrate_layout(root)?;
    for d in ["var", "home", ".var-work"] {
        let p = root.join(d);
        std::fs::create_dir_all(&p).map_err(layout_err(p.display().to_string()))?;
    }
    std::fs::create_dir_all("/home").map_err(layout_err("/home"))?;
    nix::mount::mount(
        Some(&root.join("home")),
        "/home",
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|source| StateError::Bind {
        what: "/home".into(),
        source,
    })?;
    let opts = format!("lowerdir=/var,upperdir={STATE_MOUNT}/var,workdir={STATE_MOUNT}/.var-work");
    if let Err(e) = nix::mount::mount(
        Some("overlay"),
        "/var",
        Some("overlay"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(opts.as_str()),
    ) {
        // Without overlayfs, at least virga's own state persists.
        out.warnings.push(format!(
            "overlay on /var: {e}; only /var/lib/virga is on the state"
        ));
        let src = root.join("var/lib/virga");
        std::fs::create_dir_all(&src).map_err(layout_err(src.display().to_string()))?;
        std::fs::create_dir_all(super::STATE_DIR).map_err(layout_err(super::STATE_DIR))?;
        nix::mount::mount(
            Some(&src),
            super::STATE_DIR,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|source| StateError::Bind {
            what: super::STATE_DIR.into(),
            source,
        })?;
    }
    Ok(out)
}

/// Whether the first MiB of `device` is all zeros (never formatted, or wiped).
pub fn is_blank(device: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut buf = vec![0u8; 1 << 20];
    let mut f = std::fs::File::open(device)?;
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(buf[..got].iter().all(|b| *b == 0))
}

/// Makes a filesystem labelled `virga-state` on a blank `device` with the image's `mke2fs`
/// (BusyBox's: ext2 with directory indexes and file types, which the ext4 driver mounts and
/// grows online). Returns the filesystem type to mount it as.
pub fn make_filesystem(device: &Path) -> std::io::Result<&'static str> {
    let mke2fs = [
        "/sbin/mke2fs",
        "/usr/sbin/mke2fs",
        "/bin/mke2fs",
        "/usr/bin/mke2fs",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no mke2fs in this image (the minimal profile has none)",
        )
    })?;
    let out = std::process::Command::new(mke2fs)
        .args(["-F", "-b", "4096", "-L", super::STATE_LABEL])
        .arg(device)
        .stdin(std::process::Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{mke2fs} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok("ext4")
}

fn layout_err(path: impl Into<String>) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.into();
    move |source| StateError::Layout { path, source }
}

/// Moves an older layout (the contents of `/var/lib/virga` at the filesystem's root) into
/// `var/lib/virga/`, entry by entry (each a rename within the filesystem: atomic).
fn migrate_layout(root: &Path) -> Result<bool, StateError> {
    let entries: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(layout_err(STATE_MOUNT))?
        .flatten()
        .filter(|e| !LAYOUT_DIRS.contains(&e.file_name().to_string_lossy().as_ref()))
        .map(|e| e.path())
        .collect();
    if entries.is_empty() {
        return Ok(false);
    }
    let dest = root.join("var/lib/virga");
    std::fs::create_dir_all(&dest).map_err(layout_err(dest.display().to_string()))?;
    for e in entries {
        let Some(name) = e.file_name() else { continue };
        let to = dest.join(name);
        if to.exists() {
            continue;
        }
        std::fs::rename(&e, &to).map_err(layout_err(e.display().to_string()))?;
    }
    if let Ok(d) = std::fs::File::open(root) {
        let _ = d.sync_all();
    }
    tracing::info!("state: moved the older layout into var/lib/virga");
    Ok(true)
}

/// The disk and partition number of a partition device (`/dev/vda7` → (`vda`, 7)), from sysfs;
/// `None` for a whole disk.
fn disk_of(device: &Path) -> Option<(String, u32)> {
    let name = device.file_name()?.to_str()?;
    let sys = PathBuf::from(format!("/sys/class/block/{name}"));
    let number: u32 = std::fs::read_to_string(sys.join("partition"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let real = std::fs::canonicalize(&sys).ok()?;
    let disk = real.parent()?.file_name()?.to_str()?.to_owned();
    Some((disk, number))
}

fn sectors(name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/sys/class/block/{name}/size"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Grows the partition to the end of its disk when the disk has grown (GPT only).
fn grow_partition(device: &Path) -> std::io::Result<Option<String>> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let Some((disk, number)) = disk_of(device) else {
        return Ok(None);
    };
    let logical: u64 =
        std::fs::read_to_string(format!("/sys/class/block/{disk}/queue/logical_block_size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(gpt::SECTOR);
    if logical != gpt::SECTOR {
        return Ok(None);
    }
    let Some(disk_sectors) = sectors(&disk) else {
        return Ok(None);
    };
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/{disk}"))?;
    let mut lba01 = vec![0u8; 2 * gpt::SECTOR as usize];
    f.read_exact(&mut lba01)?;
    let Some(len) = gpt::head_len(&lba01[gpt::SECTOR as usize..]) else {
        return Ok(None);
    };
    let mut head = vec![0u8; len as usize];
    f.seek(SeekFrom::Start(0))?;
    f.read_exact(&mut head)?;
    let growth = match gpt::plan(&head, disk_sectors, number) {
        Ok(Some(g)) => g,
        Ok(None) => return Ok(None),
        Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
    };
    for (i, (off, bytes)) in growth.writes.iter().enumerate() {
        f.seek(SeekFrom::Start(*off))?;
        f.write_all(bytes)?;
        // The new backup first, then the primary: each step leaves a valid GPT behind.
        if i == 1 || i == 3 {
            f.sync_all()?;
        }
    }
    f.sync_all()?;
    let first = std::fs::read_to_string(format!(
        "/sys/class/block/{disk}/{}/start",
        device_name(device)
    ))
    .ok()
    .and_then(|s| s.trim().parse::<u64>().ok())
    .unwrap_or(0);
    crate::sys::blkpg_resize(
        &f,
        number,
        first * gpt::SECTOR,
        (growth.new_last_lba + 1 - first) * gpt::SECTOR,
    )?;
    Ok(Some(format!(
        "{} grown from {} to {} MiB",
        device_name(device),
        ((growth.old_last_lba + 1 - first) * gpt::SECTOR) >> 20,
        ((growth.new_last_lba + 1 - first) * gpt::SECTOR) >> 20
    )))
}

fn device_name(device: &Path) -> String {
    device
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The block count and block size of the ext4 superblock on `device` (1024 bytes in).
fn ext4_geometry(device: &Path) -> std::io::Result<Option<(u64, u64)>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(device)?;
    let mut sb = [0u8; 1024];
    f.seek(SeekFrom::Start(1024))?;
    f.read_exact(&mut sb)?;
    if sb[0x38..0x3a] != [0x53, 0xef] {
        return Ok(None);
    }
    let le32 = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
    let log = le32(0x18);
    if log > 6 {
        return Ok(None);
    }
    let block = 1024u64 << log;
    let hi = if le32(0x60) & 0x80 != 0 {
        u64::from(le32(0x150))
    } else {
        0
    };
    Ok(Some((u64::from(le32(0x4)) | hi << 32, block)))
}

/// Grows the mounted ext4 filesystem to the size of its device (`EXT4_IOC_RESIZE_FS`, online).
fn grow_filesystem(device: &Path) -> std::io::Result<Option<String>> {
    let name = device_name(device);
    let Some(dev_sectors) = sectors(&name) else {
        return Ok(None);
    };
    let Some((fs_blocks, block)) = ext4_geometry(device)? else {
        return Ok(None);
    };
    let dev_blocks = dev_sectors * 512 / block;
    // Only for a real gain (at least a MiB).
    if dev_blocks * block < fs_blocks * block + (1 << 20) {
        return Ok(None);
    }
    let dir = std::fs::File::open(STATE_MOUNT)?;
    crate::sys::ext4_resize(dir.as_raw_fd(), dev_blocks)?;
    Ok(Some(format!(
        "filesystem grown from {} to {} MiB",
        (fs_blocks * block) >> 20,
        (dev_blocks * block) >> 20
    )))
}
