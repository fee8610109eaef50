//! Stage `system`: the slot's verified, read-only system (`/usr`) on a disk image.
//!
//! The image builder puts the userland (BusyBox, the kernel modules) into a squashfs (or erofs)
//! in the slot's `usr-X` partition, its dm-verity hash tree into `usr-X-verity`, and the root
//! hash into the slot's own initramfs (`/etc/virga/image.json`, `system`): the slot never vouches
//! for itself. Here PID 1 finds both partitions by their PARTUUIDs (the two halves of the root
//! hash), creates a read-only dm-verity device over them with `restart_on_corruption`, and
//! mounts it on `/usr`. A block that does not match its hash reboots the machine, so GRUB's boot
//! counting falls back to the other slot: a tampered system never runs silently
//! (`docs/disk-layout.md`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use boot_contract::{StageResult, SystemImage};

use super::modules::{self, Class};
use crate::ctx::Ctx;

/// Where the verified system is mounted.
pub const MOUNT_POINT: &str = "/usr";
/// The device-mapper name of the verity device.
pub const DM_NAME: &str = "virga-usr";

/// Why the verified system could not be mounted.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// A partition the initramfs names is not on any disk.
    #[error("no partition with PARTUUID {0} (the slot's {1}); is the disk attached?")]
    NoPartition(String, &'static str),
    /// The verity parameters in image.json are unusable.
    #[error("image.json: system: {0}")]
    Params(String),
    /// The device-mapper device could not be made.
    #[error("dm-verity device over {data} and {hash}: {source}")]
    DeviceMapper {
        /// Data partition.
        data: String,
        /// Hash partition.
        hash: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The filesystem could not be mounted (a corrupted first block is reported by the kernel
    /// as a verity error, and the machine restarts).
    #[error("mount {device} ({fs}) on {MOUNT_POINT}: {source}")]
    Mount {
        /// The dm device.
        device: String,
        /// Filesystem type.
        fs: String,
        /// Why.
        #[source]
        source: nix::Error,
    },
}

/// A partition as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// `vda3`.
    pub name: String,
    /// `major:minor`.
    pub dev: String,
    /// `PARTUUID`, lowercase.
    pub partuuid: Option<String>,
    /// `PARTNAME` (the GPT partition name).
    pub partname: Option<String>,
}

/// Every partition the kernel knows (`/sys/class/block/*/uevent`), with the PARTUUID read from
/// its disk's GPT (the kernel's uevent names partitions but does not carry their GUIDs).
pub fn partitions() -> Vec<Partition> {
    let Ok(dir) = std::fs::read_dir("/sys/class/block") else {
        return Vec::new();
    };
    let mut out: Vec<Partition> = dir
        .flatten()
        .filter_map(|e| {
            let uevent = std::fs::read_to_string(e.path().join("uevent")).ok()?;
            let mut p = parse_uevent(&uevent)?;
            if p.partuuid.is_none() {
                p.partuuid = gpt_partuuid(&e.path());
            }
            Some(p)
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The PARTUUID of the partition at `sys` (`/sys/class/block/vda3`), from its disk's GPT.
fn gpt_partuuid(sys: &std::path::Path) -> Option<String> {
    use crate::cloud::gpt;
    use std::io::Read;
    let number: u32 = std::fs::read_to_string(sys.join("partition"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let disk = std::fs::canonicalize(sys).ok()?;
    let disk = disk.parent()?.file_name()?.to_str()?.to_owned();
    let mut f = std::fs::File::open(format!("/dev/{disk}")).ok()?;
    let mut lba01 = vec![0u8; 2 * gpt::SECTOR as usize];
    f.read_exact(&mut lba01).ok()?;
    let len = gpt::head_len(&lba01[gpt::SECTOR as usize..])?;
    let mut head = lba01;
    head.resize(len as usize, 0);
    f.read_exact(&mut head[2 * gpt::SECTOR as usize..]).ok()?;
    gpt::entries(&head)
        .ok()?
        .into_iter()
        .find(|e| e.number == number)
        .map(|e| e.partuuid)
}

/// A partition from its `uevent` text (`DEVTYPE=partition`, `MAJOR`, `MINOR`, `DEVNAME`,
/// `PARTUUID`, `PARTNAME`); `None` for whole disks and anything malformed.
pub fn parse_uevent(text: &str) -> Option<Partition> {
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
    };
    if get("DEVTYPE")? != "partition" {
        return None;
    }
    let major: u32 = get("MAJOR")?.parse().ok()?;
    let minor: u32 = get("MINOR")?.parse().ok()?;
    Some(Partition {
        name: get("DEVNAME")?.to_owned(),
        dev: format!("{major}:{minor}"),
        partuuid: get("PARTUUID").map(str::to_ascii_lowercase),
        partname: get("PARTNAME").map(str::to_owned),
    })
}

/// The dm-verity table parameters for this system image on these devices.
pub fn verity_params(sys: &SystemImage, data_dev: &str, hash_dev: &str) -> Result<String, String> {
    let hex = |s: &str, what: &str| {
        if !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(())
        } else {
            Err(format!("{what} is not hex"))
        }
    };
    hex(&sys.root_hash, "root_hash")?;
    hex(&sys.salt, "salt")?;
    if sys.hash_algorithm != "sha256" {
        return Err(format!("hash {:?} is not sha256", sys.hash_algorithm));
    }
    if sys.block_size != 4096 || sys.data_blocks == 0 || !sys.hash_offset.is_multiple_of(4096) {
        return Err("block size, data blocks or hash offset out of range".into());
    }
    Ok(format!(
        "1 {data_dev} {hash_dev} 4096 4096 {} {} sha256 {} {} 1 restart_on_corruption",
        sys.data_blocks,
        sys.hash_offset / 4096,
        sys.root_hash.to_ascii_lowercase(),
        sys.salt.to_ascii_lowercase()
    ))
}

/// Stage `system`: mounts the slot's verified system on `/usr` (disk images only).
pub fn stage(ctx: &Ctx, _deadline: Instant) -> anyhow::Result<StageResult> {
    let Some(sys) = ctx.image.system.clone() else {
        return Ok(StageResult::Skipped);
    };
    modules::wait_for(
        ctx,
        "system",
        &[Class::Storage, Class::Bus, Class::Fs],
        Duration::from_secs(20),
    );
    crate::cloud::blockdev::settle_nvme(Duration::from_secs(2));
    // The modules that live in /usr wait for this outcome, whatever it is (a panic included).
    struct Tell(Option<Result<(), String>>);
    impl Drop for Tell {
        fn drop(&mut self) {
            let outcome = self
                .0
                .take()
                .unwrap_or_else(|| Err("stage `system` stopped early".to_owned()));
            modules::usr_mounted(outcome);
        }
    }
    let mut tell = Tell(None);
    let mounted = mount_verified(&sys);
    tell.0 = Some(mounted.as_ref().map(drop).map_err(ToString::to_string));
    drop(tell);
    let device = mounted?;
    tracing::info!(
        "verified system {} (root hash {}…) on {MOUNT_POINT}",
        device.display(),
        &sys.root_hash[..sys.root_hash.len().min(16)]
    );
    ctx.update(|s| s.verified_system = Some(sys.root_hash.clone()));
    Ok(StageResult::Ok)
}

fn mount_verified(sys: &SystemImage) -> Result<PathBuf, SystemError> {
    let parts = partitions();
    let find = |uuid: &str, what: &'static str| {
        parts
            .iter()
            .find(|p| p.partuuid.as_deref() == Some(&uuid.to_ascii_lowercase()))
            .cloned()
            .ok_or_else(|| SystemError::NoPartition(uuid.to_owned(), what))
    };
    let data = find(&sys.usr_partuuid, "system partition")?;
    let hash = find(&sys.verity_partuuid, "verity partition")?;
    let params = verity_params(sys, &data.dev, &hash.dev).map_err(SystemError::Params)?;
    let sectors = sys.data_blocks * 8;
    let uuid = format!(
        "VIRGA-VERITY-{}",
        &sys.root_hash[..sys.root_hash.len().min(32)]
    );
    let (major, minor) = crate::sys::dm_create_readonly(DM_NAME, &uuid, "verity", sectors, &params)
        .map_err(|source| SystemError::DeviceMapper {
            data: data.name.clone(),
            hash: hash.name.clone(),
            source,
        })?;
    // devtmpfs names it dm-N; wait briefly for the node.
    let device = PathBuf::from(format!("/dev/dm-{minor}"));
    let t = Instant::now();
    while !device.exists() && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    tracing::debug!(
        "dm-verity device {major}:{minor} over {} and {}",
        data.name,
        hash.name
    );
    let flags = nix::mount::MsFlags::MS_RDONLY | nix::mount::MsFlags::MS_NODEV;
    nix::mount::mount(
        Some(device.as_path()),
        MOUNT_POINT,
        Some(sys.filesystem.as_str()),
        flags,
        None::<&str>,
    )
    .map_err(|source| SystemError::Mount {
        device: device.display().to_string(),
        fs: sys.filesystem.clone(),
        source,
    })?;
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_from_uevent() {
        let p = parse_uevent(
            "MAJOR=253\nMINOR=3\nDEVNAME=vda3\nDEVTYPE=partition\nDISKSEQ=9\nPARTN=3\nPARTUUID=AB12cd34-0000-4000-8000-000000000001\nPARTNAME=usr-A\n",
        )
        .unwrap();
        assert_eq!(p.dev, "253:3");
        assert_eq!(
            p.partuuid.as_deref(),
            Some("ab12cd34-0000-4000-8000-000000000001")
        );
        assert_eq!(p.partname.as_deref(), Some("usr-A"));
        assert!(parse_uevent("MAJOR=253\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n").is_none());
        assert!(parse_uevent("garbage").is_none());
        assert!(parse_uevent("DEVTYPE=partition\nMAJOR=x\nMINOR=1\nDEVNAME=a\n").is_none());
    }

    fn sys() -> SystemImage {
        SystemImage {
            filesystem: "squashfs".into(),
            usr_partuuid: "u".into(),
            verity_partuuid: "v".into(),
            root_hash: "ab".repeat(32),
            salt: "cd".repeat(32),
            hash_algorithm: "sha256".into(),
            block_size: 4096,
            data_blocks: 3,
            hash_offset: 4096,
        }
    }

    #[test]
    fn the_verity_table_matches_the_builders() {
        let t = verity_params(&sys(), "253:3", "253:4").unwrap();
        assert_eq!(
            t,
            format!(
                "1 253:3 253:4 4096 4096 3 1 sha256 {} {} 1 restart_on_corruption",
                "ab".repeat(32),
                "cd".repeat(32)
            )
        );
        let mut bad = sys();
        bad.root_hash = "zz".into();
        assert!(verity_params(&bad, "a", "b").is_err());
        let mut bad = sys();
        bad.salt = "ab cd 1 ignore_corruption".into();
        assert!(verity_params(&bad, "a", "b").is_err());
        let mut bad = sys();
        bad.hash_algorithm = "md5".into();
        assert!(verity_params(&bad, "a", "b").is_err());
    }
}
