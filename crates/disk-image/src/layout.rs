//! The partition layout: one GPT disk that boots under BIOS and UEFI and carries two system
//! slots.
//!
//! ```text
//! | MBR+GPT | bios-boot | esp (FAT) | usr-A | usr-A-verity | usr-B | usr-B-verity | virga-state (ext4) ...| GPT |
//!   1 MiB      1 MiB      esp_size   usr_size  ≈usr_size/128  (B: empty until an update)   the rest
//! ```
//! Every partition starts and ends on a MiB boundary. `slots = 1` leaves out usr-B and its
//! verity partition. The state partition is last so that it can grow into a larger disk.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};

use uuid::Uuid;

use crate::guid::{self, attrs, types};
use crate::{DiskImageError, MIB, verity};

/// Size of the BIOS boot partition (GRUB's core.img is ~180 KiB).
pub const BIOS_BOOT_SIZE: u64 = MIB;
/// The smallest state partition the builder writes.
pub const MIN_STATE_SIZE: u64 = 32 * MIB;
/// Sector size of the image.
pub const SECTOR: u64 = 512;
/// The ESP's partition number (GRUB's BIOS prefix names it).
pub const ESP_PARTITION: u32 = 2;
/// GPT partition name and ext4 label of the state partition.
pub const STATE_LABEL: &str = "virga-state";
/// GPT partition name of the ESP.
pub const ESP_LABEL: &str = "esp";
/// GPT partition name of the BIOS boot partition.
pub const BIOS_BOOT_LABEL: &str = "bios-boot";
/// FAT volume label of the ESP.
pub const ESP_FS_LABEL: &str = "VIRGA-ESP";

/// What the layout is asked to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutParams {
    /// Virtual disk size in bytes (whole MiB).
    pub disk_size: u64,
    /// EFI system partition size.
    pub esp_size: u64,
    /// Size of each slot's `/usr` partition.
    pub usr_size: u64,
    /// System slots: 1 (A) or 2 (A and B).
    pub slots: u8,
}

/// What a partition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// BIOS boot partition: GRUB's core.img.
    BiosBoot,
    /// EFI system partition: GRUB for UEFI, the slots' kernels and initramfs, grub.cfg, grubenv.
    Esp,
    /// A slot's read-only system filesystem.
    Usr(char),
    /// A slot's dm-verity hash tree.
    UsrVerity(char),
    /// The writable state (ext4).
    State,
}

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based GPT entry number.
    pub number: u32,
    /// What it is for.
    pub role: Role,
    /// GPT partition name.
    pub label: String,
    /// Partition type GUID.
    pub type_guid: Uuid,
    /// Unique partition GUID (PARTUUID).
    pub guid: Uuid,
    /// GPT attribute bits.
    pub attributes: u64,
    /// Offset in bytes.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
}

impl Partition {
    /// First sector.
    pub fn first_lba(&self) -> u64 {
        self.start / SECTOR
    }
}

/// The whole disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Virtual size in bytes.
    pub disk_size: u64,
    /// Disk GUID.
    pub disk_guid: Uuid,
    /// Partitions in table order.
    pub partitions: Vec<Partition>,
}

/// Size of a slot's verity partition for a `/usr` partition of `usr_size` bytes: the hash tree
/// of a filesystem that fills the partition, rounded up to a MiB.
pub fn verity_size(usr_size: u64) -> u64 {
    verity::hash_device_size(usr_size / u64::from(verity::BLOCK_SIZE)).next_multiple_of(MIB)
}

/// Parses a size: `64M`, `1G`, `512MiB`, `2GiB`; whole MiB only.
pub fn parse_size(s: &str) -> Option<u64> {
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

fn mib(v: u64) -> String {
    format!("{} MiB", v / MIB)
}

impl Layout {
    /// Lays out the disk. `seed` makes the derived GUIDs (the image's identity: spec and
    /// content hashes); `root_hash_a` is slot A's verity root hash, whose halves are the
    /// PARTUUIDs of usr-A and usr-A-verity.
    pub fn plan(
        p: &LayoutParams,
        seed: &[u8],
        root_hash_a: &[u8; 32],
    ) -> Result<Layout, DiskImageError> {
        let invalid = DiskImageError::Invalid;
        if !(1..=2).contains(&p.slots) {
            return Err(invalid(format!(
                "disk.slots must be 1 or 2, not {}",
                p.slots
            )));
        }
        for (name, v) in [
            ("disk.size", p.disk_size),
            ("disk.esp_size", p.esp_size),
            ("disk.usr_size", p.usr_size),
        ] {
            if v == 0 || !v.is_multiple_of(MIB) {
                return Err(invalid(format!(
                    "{name} must be a positive whole number of MiB, not {v} bytes"
                )));
            }
        }
        let mut parts: Vec<Partition> = Vec::new();
        let add = |parts: &mut Vec<Partition>,
                   role: Role,
                   label: &str,
                   type_guid: Uuid,
                   guid: Uuid,
                   attributes: u64,
                   size: u64| {
            let start = parts.last().map_or(MIB, |p| p.start + p.size);
            parts.push(Partition {
                number: parts.len() as u32 + 1,
                role,
                label: label.to_owned(),
                type_guid,
                guid,
                attributes,
                start,
                size,
            });
        };
        add(
            &mut parts,
            Role::BiosBoot,
            BIOS_BOOT_LABEL,
            types::BIOS_BOOT,
            guid::derive(seed, BIOS_BOOT_LABEL),
            0,
            BIOS_BOOT_SIZE,
        );
        add(
            &mut parts,
            Role::Esp,
            ESP_LABEL,
            types::ESP,
            guid::derive(seed, ESP_LABEL),
            0,
            p.esp_size,
        );
        let vsize = verity_size(p.usr_size);
        for slot in ['A', 'B'].into_iter().take(usize::from(p.slots)) {
            let (usr, hash) = if slot == 'A' {
                guid::from_root_hash(root_hash_a)
            } else {
                (
                    guid::derive(seed, "usr-B"),
                    guid::derive(seed, "usr-B-verity"),
                )
            };
            // An empty slot is kept out of automatic discovery until an update fills it.
            let extra = if slot == 'A' { 0 } else { attrs::NO_AUTO };
            add(
                &mut parts,
                Role::Usr(slot),
                &format!("usr-{slot}"),
                types::USR_X86_64,
                usr,
                attrs::READ_ONLY | extra,
                p.usr_size,
            );
            add(
                &mut parts,
                Role::UsrVerity(slot),
                &format!("usr-{slot}-verity"),
                types::USR_VERITY_X86_64,
                hash,
                attrs::READ_ONLY | extra,
                vsize,
            );
        }
        // The last MiB holds the backup GPT (33 sectors), as partitioning tools that align to
        // MiB leave it.
        let end = p.disk_size.saturating_sub(MIB);
        let at = parts.last().map_or(MIB, |p| p.start + p.size);
        let state = end.saturating_sub(at);
        if end < at + MIN_STATE_SIZE {
            return Err(DiskImageError::TooSmall {
                what: format!(
                    "the partitions (bios-boot {}, esp {}, {} slot(s) of usr {} + verity {}) and a state partition of at least {}",
                    mib(BIOS_BOOT_SIZE),
                    mib(p.esp_size),
                    p.slots,
                    mib(p.usr_size),
                    mib(vsize),
                    mib(MIN_STATE_SIZE)
                ),
                place: "the disk (disk.size, less 2 MiB for the partition tables)".into(),
                need: at + MIN_STATE_SIZE + MIB,
                have: p.disk_size,
                fix: "raise disk.size or lower disk.usr_size / disk.esp_size".into(),
            });
        }
        add(
            &mut parts,
            Role::State,
            STATE_LABEL,
            types::VAR,
            guid::derive(seed, STATE_LABEL),
            attrs::GROW_FS,
            state,
        );
        Ok(Layout {
            disk_size: p.disk_size,
            disk_guid: guid::derive(seed, "disk"),
            partitions: parts,
        })
    }

    /// The partition with this role.
    pub fn get(&self, role: Role) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.role == role)
    }

    /// The partition with this role; an error naming it when the layout has none.
    pub fn require(&self, role: Role) -> Result<&Partition, DiskImageError> {
        self.get(role)
            .ok_or_else(|| DiskImageError::Invalid(format!("the layout has no {role:?} partition")))
    }

    /// Writes the protective MBR (without boot code) and both GPT copies into `file`, which
    /// must already be `disk_size` bytes long.
    pub fn write_gpt(&self, file: &mut File) -> Result<(), DiskImageError> {
        let gpt_err = |e: gptman::Error| DiskImageError::Gpt(e.to_string());
        let mut gpt = gptman::GPT::new_from(file, SECTOR, guid::gpt_bytes(&self.disk_guid))
            .map_err(gpt_err)?;
        gpt.align = MIB / SECTOR;
        for p in &self.partitions {
            gpt[p.number] = gptman::GPTPartitionEntry {
                partition_type_guid: guid::gpt_bytes(&p.type_guid),
                unique_partition_guid: guid::gpt_bytes(&p.guid),
                starting_lba: p.start / SECTOR,
                ending_lba: (p.start + p.size) / SECTOR - 1,
                attribute_bits: p.attributes,
                partition_name: p.label.as_str().into(),
            };
        }
        gptman::GPT::write_protective_mbr_into(file, SECTOR).map_err(gpt_err)?;
        gpt.write_into(file).map_err(gpt_err)?;
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.flush())
            .map_err(|e| DiskImageError::Gpt(e.to_string()))?;
        Ok(())
    }

    /// A table for humans (`virga build`, docs).
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<3} {:<14} {:>9} {:>9}  {:<36}  type\n",
            "#", "label", "start", "size", "PARTUUID"
        );
        for p in &self.partitions {
            s.push_str(&format!(
                "{:<3} {:<14} {:>9} {:>9}  {:<36}  {}\n",
                p.number,
                p.label,
                mib(p.start),
                mib(p.size),
                p.guid,
                p.type_guid
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: [u8; 32] = [
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
        26, 27, 28, 29, 30, 31, 32,
    ];

    fn params(slots: u8) -> LayoutParams {
        LayoutParams {
            disk_size: 512 * MIB,
            esp_size: 64 * MIB,
            usr_size: 128 * MIB,
            slots,
        }
    }

    #[test]
    fn two_slot_layout() {
        let l = Layout::plan(&params(2), b"seed", &[7; 32]).unwrap();
        let labels: Vec<&str> = l.partitions.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "bios-boot",
                "esp",
                "usr-A",
                "usr-A-verity",
                "usr-B",
                "usr-B-verity",
                "virga-state"
            ]
        );
        assert_eq!(l.get(Role::Esp).unwrap().number, ESP_PARTITION);
        for w in l.partitions.windows(2) {
            assert_eq!(w[0].start + w[0].size, w[1].start);
        }
        for p in &l.partitions {
            assert!(
                p.start.is_multiple_of(MIB) && p.size.is_multiple_of(MIB),
                "{p:?}"
            );
        }
        let state = l.get(Role::State).unwrap();
        assert_eq!(state.start + state.size, 511 * MIB);
        assert_eq!(l.get(Role::Usr('A')).unwrap().guid.as_bytes(), &[7; 16]);
        assert_eq!(l.get(Role::UsrVerity('A')).unwrap().size, 2 * MIB);
        assert_ne!(
            l.get(Role::Usr('B')).unwrap().attributes & attrs::NO_AUTO,
            0
        );
        assert_eq!(l, Layout::plan(&params(2), b"seed", &[7; 32]).unwrap());
        assert_ne!(
            l.disk_guid,
            Layout::plan(&params(2), b"other", &[7; 32])
                .unwrap()
                .disk_guid
        );
    }

    #[test]
    fn one_slot_layout_and_too_small_disk() {
        let l = Layout::plan(&params(1), b"s", &[1; 32]).unwrap();
        assert!(l.get(Role::Usr('B')).is_none());
        assert_eq!(l.partitions.last().unwrap().number, 5);
        let mut p = params(2);
        p.disk_size = 300 * MIB;
        let e = Layout::plan(&p, b"s", &[1; 32]).unwrap_err().to_string();
        assert!(e.contains("disk.size") && e.contains("MiB"), "{e}");
        p.slots = 3;
        assert!(Layout::plan(&p, b"s", &[1; 32]).is_err());
        p.slots = 1;
        p.usr_size = 1000;
        assert!(Layout::plan(&p, b"s", &[1; 32]).is_err());
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64M"), Some(64 * MIB));
        assert_eq!(parse_size("1G"), Some(1024 * MIB));
        assert_eq!(parse_size("2GiB"), Some(2048 * MIB));
        assert_eq!(parse_size("512 MiB"), Some(512 * MIB));
        for bad in ["", "12", "1K", "-1M", "0M", "M", "1.5G"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn gpt_round_trips_through_gptman() {
        let l = Layout::plan(&params(2), b"seed", &ROOT).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.raw");
        let mut f = File::options()
            .create(true)
            .read(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(l.disk_size).unwrap();
        l.write_gpt(&mut f).unwrap();
        let back = gptman::GPT::find_from(&mut f).unwrap();
        assert_eq!(back.header.disk_guid, guid::gpt_bytes(&l.disk_guid));
        let (n, e) = back
            .iter()
            .find(|(_, e)| e.partition_name.as_str() == "usr-A")
            .unwrap();
        assert_eq!(n, 3);
        assert_eq!(e.starting_lba, 66 * MIB / SECTOR);
    }
}
