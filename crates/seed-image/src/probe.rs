//! A tiny, dependency-free filesystem prober: which filesystem and label does a block device
//! hold? Enough for the guest to find its `cidata` / `config-2` seed and its state disk without
//! util-linux.
//!
//! Give [`probe`] the first bytes of the device ([`PROBE_LEN`] is enough for every format
//! here). It recognises:
//! - **ISO9660**: the primary volume descriptor at byte 32768 (`CD001`), volume identifier at
//!   offset 40; when that is blank, the Joliet supplementary descriptor's UCS-2 identifier.
//! - **FAT12/16/32**: a plausible BIOS parameter block, the volume-label entry of the root
//!   directory when it lies inside the buffer (what `blkid` reports first), else the boot
//!   sector label (`NO NAME` means none).
//! - **ext2/3/4**: the superblock at byte 1024 (magic `0xEF53`), `s_volume_name`; the type
//!   follows blkid's rule (ext4 features → ext4, a journal → ext3, else ext2).
//!
//! The parser is total: every offset is bounds-checked, nothing allocates more than a label,
//! and arbitrary bytes yield `None` or a result, never a panic (property test and the
//! `mdserver_label_probe` fuzz target).

use std::fmt;
use std::io::Read;
use std::path::Path;

/// How many leading bytes of a device [`probe`] needs to see everything it looks at (ISO9660
/// descriptors up to sector 31 included).
pub const PROBE_LEN: usize = 64 * 1024;

/// A recognised filesystem type (names as `blkid` prints them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsType {
    /// ISO9660 (CD-ROM), with or without Joliet/Rock Ridge.
    Iso9660,
    /// FAT12, FAT16 or FAT32.
    Vfat,
    /// ext2.
    Ext2,
    /// ext3 (ext2 plus a journal).
    Ext3,
    /// ext4.
    Ext4,
}

impl FsType {
    /// The name `blkid` uses (`iso9660`, `vfat`, `ext2`, `ext3`, `ext4`), which is also the
    /// Linux `mount -t` type.
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Iso9660 => "iso9660",
            FsType::Vfat => "vfat",
            FsType::Ext2 => "ext2",
            FsType::Ext3 => "ext3",
            FsType::Ext4 => "ext4",
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Filesystem type.
    pub fs_type: FsType,
    /// Volume label with trailing blanks removed; `None` when the volume has none.
    pub label: Option<String>,
}

impl Probe {
    /// True when the label equals `wanted`, ignoring ASCII case (cloud-init accepts `cidata`
    /// and `CIDATA`, `config-2` and `CONFIG-2`).
    pub fn label_is(&self, wanted: &str) -> bool {
        self.label
            .as_deref()
            .is_some_and(|l| l.eq_ignore_ascii_case(wanted))
    }
}

/// Identifies the filesystem in `head`, the first bytes of a device (pass at least
/// [`PROBE_LEN`] bytes when the device is that large; fewer bytes just means formats whose
/// structures lie beyond the end are not recognised). ISO9660 is checked first (a hybrid ISO
/// also carries a boot sector), then ext, then FAT.
pub fn probe(head: &[u8]) -> Option<Probe> {
    probe_iso9660(head)
        .or_else(|| probe_ext(head))
        .or_else(|| probe_fat(head))
}

/// Reads the first [`PROBE_LEN`] bytes of `path` (a block device or an image file) and
/// [`probe`]s them. A device shorter than that is read to its end.
pub fn probe_path(path: &Path) -> std::io::Result<Option<Probe>> {
    let file = std::fs::File::open(path)?;
    let mut head = Vec::with_capacity(PROBE_LEN);
    file.take(PROBE_LEN as u64).read_to_end(&mut head)?;
    Ok(probe(&head))
}

fn bytes(buf: &[u8], at: usize, len: usize) -> Option<&[u8]> {
    buf.get(at..at.checked_add(len)?)
}

fn u8_at(buf: &[u8], at: usize) -> Option<u8> {
    buf.get(at).copied()
}

fn u16_le(buf: &[u8], at: usize) -> Option<u16> {
    let b = bytes(buf, at, 2)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_le(buf: &[u8], at: usize) -> Option<u32> {
    let b = bytes(buf, at, 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Decodes a fixed-size 8-bit label field: stops at the first NUL, drops trailing spaces.
fn label_8bit(raw: &[u8]) -> Option<String> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let text = String::from_utf8_lossy(&raw[..end]);
    let trimmed = text.trim_end_matches(' ');
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

const ISO_SECTOR: usize = 2048;
const ISO_FIRST_VD: usize = 16;
/// Volume descriptors scanned at most (sectors 16..32), so the scan stays inside [`PROBE_LEN`].
const ISO_MAX_VDS: usize = 16;

fn probe_iso9660(head: &[u8]) -> Option<Probe> {
    let mut pvd_label: Option<Option<String>> = None;
    let mut joliet_label = None;
    for i in 0..ISO_MAX_VDS {
        let at = (ISO_FIRST_VD + i) * ISO_SECTOR;
        let Some(vd) = bytes(head, at, ISO_SECTOR) else {
            break;
        };
        if &vd[1..6] != b"CD001" {
            break;
        }
        match vd[0] {
            1 if pvd_label.is_none() => pvd_label = Some(label_8bit(&vd[40..72])),
            2 if is_joliet_escape(&vd[88..120]) => joliet_label = label_ucs2_be(&vd[40..72]),
            255 => break,
            _ => {}
        }
    }
    let label = pvd_label?;
    Some(Probe {
        fs_type: FsType::Iso9660,
        label: label.or(joliet_label),
    })
}

fn is_joliet_escape(esc: &[u8]) -> bool {
    matches!(esc.get(..3), Some([0x25, 0x2f, 0x40 | 0x43 | 0x45]))
}

fn label_ucs2_be(raw: &[u8]) -> Option<String> {
    let units = raw
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0);
    let text: String = char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect();
    let trimmed = text.trim_end_matches(' ');
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

const EXT_SUPERBLOCK: usize = 1024;
const EXT_MAGIC: u16 = 0xEF53;
const EXT3_FEATURE_COMPAT_HAS_JOURNAL: u32 = 0x0004;
/// Incompat features blkid treats as ext4-only: extents, 64bit, mmp, flex_bg, ea_inode,
/// dirdata, csum_seed, large_dir, inline_data, encrypt, casefold.
const EXT4_INCOMPAT: u32 = 0x0040
    | 0x0080
    | 0x0100
    | 0x0200
    | 0x0400
    | 0x1000
    | 0x2000
    | 0x4000
    | 0x8000
    | 0x10000
    | 0x20000;
/// Ro-compat features blkid treats as ext4-only: huge_file, gdt_csum, dir_nlink,
/// extra_isize, quota, bigalloc, metadata_csum, ...
const EXT4_RO_COMPAT: u32 = 0x0008 | 0x0010 | 0x0020 | 0x0040 | 0x0100 | 0x0200 | 0x0400;

fn probe_ext(head: &[u8]) -> Option<Probe> {
    let sb = bytes(head, EXT_SUPERBLOCK, 1024)?;
    if u16_le(sb, 56)? != EXT_MAGIC {
        return None;
    }
    // s_log_block_size: block size is 1024 << n, at most 64 KiB.
    if u32_le(sb, 24)? > 6 {
        return None;
    }
    let compat = u32_le(sb, 92)?;
    let incompat = u32_le(sb, 96)?;
    let ro_compat = u32_le(sb, 100)?;
    let fs_type = if incompat & EXT4_INCOMPAT != 0 || ro_compat & EXT4_RO_COMPAT != 0 {
        FsType::Ext4
    } else if compat & EXT3_FEATURE_COMPAT_HAS_JOURNAL != 0 {
        FsType::Ext3
    } else {
        FsType::Ext2
    };
    Some(Probe {
        fs_type,
        label: label_8bit(bytes(sb, 120, 16)?),
    })
}

const FAT_NO_LABEL: &[u8; 11] = b"NO NAME    ";
const FAT_ATTR_VOLUME_ID: u8 = 0x08;
const FAT_ATTR_LFN: u8 = 0x0F;
const FAT_DIR_ENTRY: usize = 32;

fn probe_fat(head: &[u8]) -> Option<Probe> {
    let bs = bytes(head, 0, 512)?;
    if bs[510] != 0x55 || bs[511] != 0xAA || !matches!(bs[0], 0xEB | 0xE9) {
        return None;
    }
    let bytes_per_sector = usize::from(u16_le(bs, 11)?);
    let sectors_per_cluster = usize::from(u8_at(bs, 13)?);
    let reserved = usize::from(u16_le(bs, 14)?);
    let num_fats = usize::from(u8_at(bs, 16)?);
    let root_entries = usize::from(u16_le(bs, 17)?);
    let fat_size_16 = usize::from(u16_le(bs, 22)?);
    if !bytes_per_sector.is_power_of_two()
        || !(512..=4096).contains(&bytes_per_sector)
        || !sectors_per_cluster.is_power_of_two()
        || reserved == 0
        || !(1..=4).contains(&num_fats)
    {
        return None;
    }
    let fat32 = fat_size_16 == 0;
    // Extended boot signature and label/type fields sit at different offsets on FAT32.
    let (sig_at, label_at, type_at) = if fat32 { (66, 71, 82) } else { (38, 43, 54) };
    let fs_type_field = bytes(bs, type_at, 8)?;
    if !fs_type_field.starts_with(b"FAT") {
        return None;
    }
    let boot_label = (bs[sig_at] == 0x29)
        .then(|| bytes(bs, label_at, 11))
        .flatten()
        .filter(|raw| *raw != FAT_NO_LABEL)
        .and_then(label_8bit);

    // The root directory: a fixed area after the FATs (FAT12/16), or the first cluster of the
    // root cluster chain (FAT32). Only the part inside `head` is scanned.
    let (root_start, root_len) = if fat32 {
        let fat_size = usize::try_from(u32_le(bs, 36)?).ok()?;
        let root_cluster = usize::try_from(u32_le(bs, 44)?).ok()?;
        let data = reserved.checked_add(num_fats.checked_mul(fat_size)?)?;
        let sector = data.checked_add(
            root_cluster
                .checked_sub(2)?
                .checked_mul(sectors_per_cluster)?,
        )?;
        (
            sector.checked_mul(bytes_per_sector)?,
            sectors_per_cluster.checked_mul(bytes_per_sector)?,
        )
    } else {
        let sector = reserved.checked_add(num_fats.checked_mul(fat_size_16)?)?;
        (
            sector.checked_mul(bytes_per_sector)?,
            root_entries.checked_mul(FAT_DIR_ENTRY)?,
        )
    };
    let dir_label = root_dir_label(head, root_start, root_len);
    Some(Probe {
        fs_type: FsType::Vfat,
        label: dir_label.or(boot_label),
    })
}

fn root_dir_label(head: &[u8], start: usize, len: usize) -> Option<String> {
    let end = start.saturating_add(len).min(head.len());
    let area = head.get(start..end)?;
    for entry in area.chunks_exact(FAT_DIR_ENTRY) {
        match entry[0] {
            0x00 => break,
            0xE5 => continue,
            _ => {}
        }
        let attr = entry[11];
        if attr & FAT_ATTR_LFN == FAT_ATTR_LFN {
            continue;
        }
        if attr & FAT_ATTR_VOLUME_ID != 0 {
            return label_8bit(&entry[..11]);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso_with_pvd(label: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 20 * ISO_SECTOR];
        let pvd = 16 * ISO_SECTOR;
        img[pvd] = 1;
        img[pvd + 1..pvd + 6].copy_from_slice(b"CD001");
        img[pvd + 6] = 1;
        let field = &mut img[pvd + 40..pvd + 72];
        field.fill(b' ');
        field[..label.len()].copy_from_slice(label);
        let term = 17 * ISO_SECTOR;
        img[term] = 255;
        img[term + 1..term + 6].copy_from_slice(b"CD001");
        img
    }

    #[test]
    fn iso_label_is_trimmed() {
        let p = probe(&iso_with_pvd(b"cidata")).unwrap();
        assert_eq!(p.fs_type, FsType::Iso9660);
        assert_eq!(p.label.as_deref(), Some("cidata"));
        assert!(p.label_is("CIDATA"));
        assert!(!p.label_is("config-2"));
    }

    #[test]
    fn iso_blank_pvd_label_falls_back_to_joliet() {
        let mut img = iso_with_pvd(b"");
        // Joliet SVD in sector 17, terminator moved to 18.
        let svd = 17 * ISO_SECTOR;
        img[svd] = 2;
        img[svd + 88..svd + 91].copy_from_slice(&[0x25, 0x2f, 0x45]);
        let name: Vec<u8> = "config-2"
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        img[svd + 40..svd + 40 + name.len()].copy_from_slice(&name);
        let term = 18 * ISO_SECTOR;
        img[term] = 255;
        img[term + 1..term + 6].copy_from_slice(b"CD001");
        assert_eq!(probe(&img).unwrap().label.as_deref(), Some("config-2"));
    }

    #[test]
    fn truncated_iso_is_not_recognised() {
        let img = iso_with_pvd(b"cidata");
        assert_eq!(probe(&img[..16 * ISO_SECTOR + 100]), None);
    }

    fn ext_sb(incompat: u32, compat: u32, label: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 4096];
        let sb = EXT_SUPERBLOCK;
        img[sb + 56..sb + 58].copy_from_slice(&EXT_MAGIC.to_le_bytes());
        img[sb + 92..sb + 96].copy_from_slice(&compat.to_le_bytes());
        img[sb + 96..sb + 100].copy_from_slice(&incompat.to_le_bytes());
        img[sb + 120..sb + 120 + label.len()].copy_from_slice(label);
        img
    }

    #[test]
    fn ext_types_and_label() {
        let p = probe(&ext_sb(0x0040, 0x4, b"virga-state")).unwrap();
        assert_eq!(p.fs_type, FsType::Ext4);
        assert_eq!(p.label.as_deref(), Some("virga-state"));
        assert_eq!(probe(&ext_sb(0, 0x4, b"")).unwrap().fs_type, FsType::Ext3);
        let p = probe(&ext_sb(0, 0, b"")).unwrap();
        assert_eq!(p.fs_type, FsType::Ext2);
        assert_eq!(p.label, None);
    }

    fn fat16(boot_label: &[u8; 11], dir_label: Option<&[u8; 11]>) -> Vec<u8> {
        let mut img = vec![0u8; 64 * 1024];
        img[0] = 0xEB;
        img[11..13].copy_from_slice(&512u16.to_le_bytes());
        img[13] = 4;
        img[14..16].copy_from_slice(&1u16.to_le_bytes());
        img[16] = 2;
        img[17..19].copy_from_slice(&512u16.to_le_bytes());
        img[22..24].copy_from_slice(&8u16.to_le_bytes());
        img[38] = 0x29;
        img[43..54].copy_from_slice(boot_label);
        img[54..62].copy_from_slice(b"FAT16   ");
        img[510] = 0x55;
        img[511] = 0xAA;
        if let Some(l) = dir_label {
            let root = (1 + 2 * 8) * 512;
            // A deleted entry and an LFN entry first: both must be skipped.
            img[root] = 0xE5;
            img[root + 32 + 11] = FAT_ATTR_LFN;
            img[root + 32] = b'A';
            img[root + 64..root + 75].copy_from_slice(l);
            img[root + 64 + 11] = FAT_ATTR_VOLUME_ID;
        }
        img
    }

    #[test]
    fn fat_prefers_root_dir_label() {
        let p = probe(&fat16(b"BOOTLABEL  ", Some(b"config-2   "))).unwrap();
        assert_eq!(p.fs_type, FsType::Vfat);
        assert_eq!(p.label.as_deref(), Some("config-2"));
        let p = probe(&fat16(b"CIDATA     ", None)).unwrap();
        assert_eq!(p.label.as_deref(), Some("CIDATA"));
        assert_eq!(probe(&fat16(b"NO NAME    ", None)).unwrap().label, None);
    }

    #[test]
    fn ntfs_like_boot_sector_is_not_fat() {
        let mut img = fat16(b"X          ", None);
        img[54..62].copy_from_slice(b"NTFS    ");
        assert_eq!(probe(&img), None);
    }

    #[test]
    fn empty_and_short_inputs() {
        assert_eq!(probe(&[]), None);
        assert_eq!(probe(&[0u8; 511]), None);
        assert_eq!(probe(&vec![0u8; PROBE_LEN]), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(data in proptest::collection::vec(proptest::num::u8::ANY, 0..70_000)) {
            let _ = probe(&data);
        }

        #[test]
        fn never_panics_on_mutated_images(
            which in 0usize..3,
            flips in proptest::collection::vec((0usize..65536, proptest::num::u8::ANY), 0..64),
            cut in 0usize..70_000,
        ) {
            let mut img = match which {
                0 => iso_with_pvd(b"cidata"),
                1 => ext_sb(0x40, 4, b"state"),
                _ => fat16(b"CIDATA     ", Some(b"cidata     ")),
            };
            img.resize(PROBE_LEN, 0);
            for (at, v) in flips {
                img[at % PROBE_LEN] = v;
            }
            img.truncate(cut);
            let _ = probe(&img);
        }
    }
}
