//! The EFI system partition, as the update agent uses it: GRUB's environment block (the slot
//! state) and the slots' kernels and initramfs images.
//!
//! The ESP is found by its GPT name (`esp`) and mounted read-write on `/run/virga/esp` only for
//! as long as the agent needs it. The environment block is rewritten whole, in place (GRUB
//! writes it through its block list, so it must never move): one 1024-byte `pwrite` at offset 0
//! and an `fsync`.

use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use nix::mount::MsFlags;
use update::grubenv::EnvBlock;

/// Where the ESP is mounted while the agent works on it.
pub const ESP_MOUNT: &str = "/run/virga/esp";
/// GRUB's environment block on the ESP.
pub const GRUBENV: &str = "grub/grubenv";

/// Why the ESP could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EspError {
    /// No partition named `esp`.
    #[error("no EFI system partition (GPT name `esp`) on this machine: not a virga disk image")]
    Missing,
    /// It did not mount.
    #[error("mount {device} (vfat) on {ESP_MOUNT}: {source}")]
    Mount {
        /// Device.
        device: String,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// A file on it.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The environment block is damaged.
    #[error("{GRUBENV}: {0}")]
    Env(String),
}

fn io_err(path: impl Into<String>) -> impl FnOnce(std::io::Error) -> EspError {
    let path = path.into();
    move |source| EspError::Io { path, source }
}

/// The mounted ESP; unmounted when dropped.
#[derive(Debug)]
pub struct Esp {
    dir: PathBuf,
    mounted_here: bool,
}

impl Esp {
    /// Finds and mounts the ESP (or uses it where it is already mounted).
    pub fn mount() -> Result<Esp, EspError> {
        let dir = PathBuf::from(ESP_MOUNT);
        if dir.join(GRUBENV).is_file() {
            return Ok(Esp {
                dir,
                mounted_here: false,
            });
        }
        let part = crate::init::system::partitions()
            .into_iter()
            .find(|p| p.partname.as_deref() == Some("esp"))
            .ok_or(EspError::Missing)?;
        let device = format!("/dev/{}", part.name);
        std::fs::create_dir_all(&dir).map_err(io_err(ESP_MOUNT))?;
        nix::mount::mount(
            Some(device.as_str()),
            &dir,
            Some("vfat"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("iocharset=utf8,shortname=mixed"),
        )
        .map_err(|source| EspError::Mount { device, source })?;
        Ok(Esp {
            dir,
            mounted_here: true,
        })
    }

    /// A path on the ESP.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel.trim_start_matches('/'))
    }

    /// Reads GRUB's environment block.
    pub fn read_env(&self) -> Result<EnvBlock, EspError> {
        let path = self.path(GRUBENV);
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(4096).read_to_end(&mut bytes))
            .map_err(io_err(path.display().to_string()))?;
        EnvBlock::parse(&bytes).map_err(|e| EspError::Env(e.to_string()))
    }

    /// Rewrites GRUB's environment block in place (same size, same blocks) and syncs it.
    pub fn write_env(&self, block: &EnvBlock) -> Result<(), EspError> {
        let path = self.path(GRUBENV);
        let bytes = block.render().map_err(|e| EspError::Env(e.to_string()))?;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err(path.display().to_string()))?;
        let len = f
            .metadata()
            .map_err(io_err(path.display().to_string()))?
            .len();
        if len != bytes.len() as u64 {
            return Err(EspError::Env(format!(
                "is {len} bytes, not {}: refusing to write it (GRUB rewrites it in place)",
                bytes.len()
            )));
        }
        f.write_all_at(&bytes, 0)
            .and_then(|()| f.sync_all())
            .map_err(io_err(path.display().to_string()))
    }

    /// Opens `name.new` on the ESP for a slot file being written (truncated when `fresh`).
    pub fn create_new(&self, name: &str, fresh: bool) -> Result<std::fs::File, EspError> {
        let path = self.path(&format!("{name}.new"));
        std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .create(true)
            .truncate(fresh)
            .open(&path)
            .map_err(io_err(path.display().to_string()))
    }

    /// Moves `name.new` over `name` (FAT renames are not atomic across a power cut, which is why
    /// the slot is armed only after this, and the other slot stays bootable meanwhile).
    pub fn commit_new(&self, name: &str) -> Result<(), EspError> {
        let from = self.path(&format!("{name}.new"));
        let to = self.path(name);
        std::fs::File::open(&from)
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(&from, &to))
            .map_err(io_err(to.display().to_string()))?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Drop for Esp {
    fn drop(&mut self) {
        if self.mounted_here {
            nix::unistd::sync();
            let _ = nix::mount::umount(&self.dir);
        }
    }
}

/// Writes `data` at `offset` of an open file (a partition or an ESP file).
pub fn write_at(file: &std::fs::File, offset: u64, data: &[u8]) -> std::io::Result<()> {
    file.write_all_at(data, offset)?;
    Ok(())
}

/// Flushes an open file.
pub fn flush(file: &mut std::fs::File) -> std::io::Result<()> {
    file.flush()?;
    file.sync_all()
}
