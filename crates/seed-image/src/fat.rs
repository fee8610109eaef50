//! FAT12/16 images, written directly (no FAT library at run time).
//!
//! Why not `fatfs`: fatfs 0.3.6 (the last release) writes long-file-name entries in front of
//! the `.` and `..` entries of every directory it creates, which `fsck.vfat` reports as
//! corruption ("Expected a valid '.' entry in this slot") — fatal for a config drive's
//! `openstack/latest/`. A seed is a small, fully known tree, so the whole image is laid out in
//! one pass instead: boot sector, two FATs, a fixed root directory, then every directory and
//! file in contiguous clusters. Names that are not plain upper-case 8.3 get VFAT long-name
//! entries (so `meta-data`, `meta_data.json`, `latest` keep their exact case); the label goes
//! in the boot sector and in the root directory's volume-label entry, where `blkid` reads it.
//! Timestamps are fixed (2000-01-01), so the same tree always gives the same bytes. The
//! images pass `fsck.vfat -n` and read back with mtools and the kernel (see `tests/`).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use crate::{SeedFormat, SeedImageError, SeedTree};

const SECTOR: usize = 512;
/// Smallest image written.
const MIN_SIZE: u64 = 1024 * 1024;
/// Root directory entries (FAT12/16 keep the root in a fixed area), at least.
const MIN_ROOT_ENTRIES: usize = 512;
const DIR_ENTRY: usize = 32;
/// Largest cluster count of FAT12 (Linux and dosfstools decide the FAT type by this count).
const MAX_FAT12_CLUSTERS: usize = 4084;
/// Largest cluster count of FAT16.
const MAX_FAT16_CLUSTERS: usize = 65524;
/// 2000-01-01 00:00:00 as DOS date and time.
const DOS_DATE: u16 = (20 << 9) | (1 << 5) | 1;
const DOS_TIME: u16 = 0;

const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_LFN: u8 = 0x0F;

/// Writes `tree` as a FAT image labelled `label` (at most 11 bytes, stored as given: keep
/// `cidata` / `config-2` lowercase for CirrOS, or use `CIDATA` / `CONFIG-2`) to `out`;
/// returns the image size.
pub fn write_vfat(tree: &SeedTree, label: &str, out: &Path) -> Result<u64, SeedImageError> {
    let image = build_vfat(tree, label)?;
    std::fs::write(out, &image)
        .map_err(|e| SeedImageError::io(format!("writing {}", out.display()), e))?;
    Ok(image.len() as u64)
}

/// Layout choices for [`build_vfat_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VfatOptions {
    /// Image size in bytes (a multiple of 512): the free space stays free for files written
    /// later (an EFI system partition). `None`: the smallest image with a quarter of slack.
    pub size: Option<u64>,
    /// Volume serial number; `None`: a hash of the tree.
    pub volume_id: Option<u32>,
}

/// Builds the FAT image of `tree` in memory.
pub(crate) fn build_vfat(tree: &SeedTree, label: &str) -> Result<Vec<u8>, SeedImageError> {
    build_vfat_with(tree, label, VfatOptions::default())
}

/// Builds the FAT image of `tree` labelled `label` in memory, with [`VfatOptions`]. The same
/// tree and options always give the same bytes.
pub fn build_vfat_with(
    tree: &SeedTree,
    label: &str,
    opts: VfatOptions,
) -> Result<Vec<u8>, SeedImageError> {
    let label11 = fat_label(label)?;
    let nodes = Nodes::new(tree)?;
    let geo = match opts.size {
        None => Geometry::choose(&nodes)?,
        Some(size) => Geometry::fixed(&nodes, size)?,
    };
    let cs = geo.cluster_bytes();

    // Cluster allocation: directories (parents first), then files, each contiguous.
    let mut next = 2usize;
    let mut first_cluster: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for dir in &nodes.dirs {
        let n = nodes.dir_bytes(dir).div_ceil(cs).max(1);
        first_cluster.insert(dir, (next, n));
        next += n;
    }
    for (path, contents) in tree.files() {
        let n = contents.len().div_ceil(cs);
        first_cluster.insert(path, (if n == 0 { 0 } else { next }, n));
        next += n;
    }
    debug_assert!(next - 2 <= geo.clusters);

    let mut img = vec![0u8; geo.total_sectors * SECTOR];
    geo.write_boot_sector(
        &mut img,
        &label11,
        opts.volume_id.unwrap_or_else(|| volume_id(tree)),
    );

    // FAT: media descriptor, end-of-chain marker, then one chain per allocation.
    let mut fat = Fat::new(geo.fat12, geo.fat_sectors * SECTOR);
    fat.set(0, if geo.fat12 { 0xFF8 } else { 0xFFF8 });
    fat.set(1, fat.eoc());
    for &(start, n) in first_cluster.values() {
        for i in 0..n {
            let c = start + i;
            fat.set(c, if i + 1 == n { fat.eoc() } else { c + 1 });
        }
    }
    for copy in 0..2 {
        let at = (geo.reserved_sectors + copy * geo.fat_sectors) * SECTOR;
        img[at..at + fat.bytes.len()].copy_from_slice(&fat.bytes);
    }

    // Directories: the root in its fixed area, the others in their clusters.
    let cluster_of = |path: &str| first_cluster.get(path).map_or(0, |&(c, _)| c);
    let root_at = geo.root_dir_sector() * SECTOR;
    let mut root = vec![sfn_entry(&label11, ATTR_VOLUME_ID, 0, 0)];
    root.extend(nodes.entries("", &cluster_of));
    if root.len() > geo.root_entries {
        return Err(SeedImageError::TooLarge(format!(
            "{} entries in the root directory",
            root.len()
        )));
    }
    write_entries(&mut img, root_at, &root);
    for dir in &nodes.dirs {
        let parent = dir.rsplit_once('/').map_or("", |(p, _)| p);
        let mut entries = vec![
            sfn_entry(b".          ", ATTR_DIRECTORY, cluster_of(dir), 0),
            sfn_entry(b"..         ", ATTR_DIRECTORY, cluster_of(parent), 0),
        ];
        entries.extend(nodes.entries(dir, &cluster_of));
        write_entries(&mut img, geo.cluster_offset(cluster_of(dir)), &entries);
    }
    for (path, contents) in tree.files() {
        if !contents.is_empty() {
            let at = geo.cluster_offset(cluster_of(path));
            img[at..at + contents.len()].copy_from_slice(contents);
        }
    }
    Ok(img)
}

fn write_entries(img: &mut [u8], at: usize, entries: &[[u8; DIR_ENTRY]]) {
    for (i, e) in entries.iter().enumerate() {
        img[at + i * DIR_ENTRY..at + (i + 1) * DIR_ENTRY].copy_from_slice(e);
    }
}

/// One entry of a directory, named and aliased once so sizing and writing agree.
struct Child {
    /// Path in the tree.
    full: String,
    /// The 8.3 alias.
    sfn: [u8; 11],
    /// Long-name entries in front of the 8.3 entry (0 = none).
    lfn_count: usize,
    /// The long name, when `lfn_count > 0`.
    name: String,
    /// File size; `None` for a directory.
    size: Option<u32>,
}

/// The directory structure of the tree: every directory and the entries of each.
struct Nodes {
    /// Directories, parents first (sorted paths).
    dirs: Vec<String>,
    /// Directory path ("" = root) → its entries, sorted by name.
    children: BTreeMap<String, Vec<Child>>,
    /// Size of every file.
    file_sizes: Vec<usize>,
}

impl Nodes {
    fn new(tree: &SeedTree) -> Result<Self, SeedImageError> {
        let dirs = tree.dirs();
        let mut names: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        names.insert(String::new(), Vec::new());
        let mut add = |path: &str| -> Result<(), SeedImageError> {
            let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
            check_fat_name(path, name)?;
            names.entry(parent.to_owned()).or_default();
            Ok(())
        };
        for d in &dirs {
            add(d)?;
        }
        for (path, _) in tree.files() {
            add(path)?;
        }
        for path in dirs
            .iter()
            .map(String::as_str)
            .chain(tree.files().map(|(p, _)| p))
        {
            let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
            if let Some(list) = names.get_mut(parent) {
                list.push(name);
            }
        }
        let mut children = BTreeMap::new();
        for (dir, mut list) in names {
            list.sort_unstable();
            list.dedup();
            let mut used: HashSet<[u8; 11]> = HashSet::new();
            let mut entries = Vec::with_capacity(list.len());
            for name in list {
                let full = join(&dir, name);
                let (sfn, needs_lfn) =
                    short_name(name, &mut used).ok_or_else(|| SeedImageError::InvalidPath {
                        path: full.clone(),
                        reason: "no free 8.3 alias for this name",
                    })?;
                let size = match tree.get(&full) {
                    Some(c) => Some(u32::try_from(c.len()).map_err(|_| {
                        SeedImageError::TooLarge(format!("{full} is 4 GiB or more"))
                    })?),
                    None => None,
                };
                entries.push(Child {
                    full,
                    sfn,
                    lfn_count: if needs_lfn {
                        lfn_units(name).len() / 13
                    } else {
                        0
                    },
                    name: name.to_owned(),
                    size,
                });
            }
            children.insert(dir, entries);
        }
        Ok(Nodes {
            dirs,
            children,
            file_sizes: tree.files().map(|(_, c)| c.len()).collect(),
        })
    }

    /// Bytes of the directory `dir`'s entries (with `.` and `..` for sub-directories, the
    /// volume label for the root).
    fn dir_bytes(&self, dir: &str) -> usize {
        let fixed = if dir.is_empty() { 1 } else { 2 };
        let n: usize = self
            .children
            .get(dir)
            .into_iter()
            .flatten()
            .map(|c| 1 + c.lfn_count)
            .sum();
        (fixed + n) * DIR_ENTRY
    }

    /// The raw entries (long names, then 8.3) of `dir`'s children.
    fn entries(&self, dir: &str, cluster_of: &dyn Fn(&str) -> usize) -> Vec<[u8; DIR_ENTRY]> {
        let mut out = Vec::new();
        for c in self.children.get(dir).into_iter().flatten() {
            if c.lfn_count > 0 {
                out.extend(lfn_entries(&c.name, &c.sfn));
            }
            let (attr, size) = match c.size {
                Some(size) => (ATTR_ARCHIVE, size),
                None => (ATTR_DIRECTORY, 0),
            };
            out.push(sfn_entry(&c.sfn, attr, cluster_of(&c.full), size));
        }
        out
    }

    /// Data clusters the tree needs at `cluster_bytes` per cluster (directories and files).
    fn data_clusters(&self, cluster_bytes: usize) -> usize {
        self.dirs
            .iter()
            .map(|d| self.dir_bytes(d).div_ceil(cluster_bytes).max(1))
            .sum::<usize>()
            + self
                .file_sizes
                .iter()
                .map(|s| s.div_ceil(cluster_bytes))
                .sum::<usize>()
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Characters a VFAT long name may not contain.
fn check_fat_name(path: &str, name: &str) -> Result<(), SeedImageError> {
    if name
        .chars()
        .any(|c| c < ' ' || matches!(c, '"' | '*' | '/' | ':' | '<' | '>' | '?' | '\\' | '|'))
    {
        return Err(SeedImageError::InvalidPath {
            path: path.to_owned(),
            reason: "contains a character FAT cannot store (control, \"*/:<>?\\|)",
        });
    }
    if name.ends_with(['.', ' ']) {
        return Err(SeedImageError::InvalidPath {
            path: path.to_owned(),
            reason: "FAT drops trailing dots and spaces",
        });
    }
    Ok(())
}

/// Characters allowed in an 8.3 name besides A-Z and 0-9.
const SFN_SPECIAL: &[u8] = b"!#$%&'()-@^_`{}~";

fn sfn_char_ok(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || SFN_SPECIAL.contains(&b)
}

fn pack_sfn(base: &[u8], ext: &[u8]) -> [u8; 11] {
    let mut out = [b' '; 11];
    out[..base.len()].copy_from_slice(base);
    out[8..8 + ext.len()].copy_from_slice(ext);
    out
}

/// The 8.3 alias of `name`, unique among `used`, and whether a long name is needed. A name
/// that is already a valid 8.3 name, all upper case, stands alone. Otherwise the alias is the
/// upper-cased name when that is valid 8.3 and free (`latest` → `LATEST`), else a
/// Windows-style `BASIS~N.EXT`.
fn short_name(name: &str, used: &mut HashSet<[u8; 11]>) -> Option<([u8; 11], bool)> {
    let (base, ext) = match name.rfind('.') {
        Some(0) | None => (name, ""),
        Some(i) => (&name[..i], &name[i + 1..]),
    };
    let plain = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| sfn_char_ok(b.to_ascii_uppercase()))
    };
    let valid_83 = plain(base, 8) && (ext.is_empty() || plain(ext, 3));
    if valid_83 {
        let sfn = pack_sfn(
            base.to_ascii_uppercase().as_bytes(),
            ext.to_ascii_uppercase().as_bytes(),
        );
        let exact = !name.bytes().any(|b| b.is_ascii_lowercase());
        if used.insert(sfn) {
            return Some((sfn, !exact));
        }
    }
    let clean = |s: &str, max: usize| -> Vec<u8> {
        s.bytes()
            .filter(|&b| b != b' ' && b != b'.')
            .map(|b| {
                let u = b.to_ascii_uppercase();
                if sfn_char_ok(u) { u } else { b'_' }
            })
            .take(max)
            .collect()
    };
    let basis = clean(base, 8);
    let ext = clean(ext, 3);
    for n in 1..1_000_000u32 {
        let tail = format!("~{n}");
        let keep = basis.len().min(8 - tail.len());
        let mut b = basis[..keep].to_vec();
        b.extend_from_slice(tail.as_bytes());
        let sfn = pack_sfn(&b, &ext);
        if used.insert(sfn) {
            return Some((sfn, true));
        }
    }
    None
}

fn lfn_units(name: &str) -> Vec<u16> {
    let mut units: Vec<u16> = name.encode_utf16().collect();
    if !units.len().is_multiple_of(13) {
        units.push(0);
        while !units.len().is_multiple_of(13) {
            units.push(0xFFFF);
        }
    }
    units
}

fn lfn_checksum(sfn: &[u8; 11]) -> u8 {
    sfn.iter()
        .fold(0u8, |sum, &b| sum.rotate_right(1).wrapping_add(b))
}

/// Long-name entries for `name`, in on-disk order (last part first).
fn lfn_entries(name: &str, sfn: &[u8; 11]) -> Vec<[u8; DIR_ENTRY]> {
    let units = lfn_units(name);
    let count = units.len() / 13;
    let sum = lfn_checksum(sfn);
    (0..count)
        .rev()
        .map(|i| {
            let part = &units[i * 13..(i + 1) * 13];
            let mut e = [0u8; DIR_ENTRY];
            // count <= 20 (255 units), so the ordinal fits in 5 bits.
            e[0] = (i as u8 + 1) | if i + 1 == count { 0x40 } else { 0 };
            e[11] = ATTR_LFN;
            e[13] = sum;
            let slots = (1..11)
                .step_by(2)
                .chain((14..26).step_by(2))
                .chain((28..32).step_by(2));
            for (at, unit) in slots.zip(part) {
                e[at..at + 2].copy_from_slice(&unit.to_le_bytes());
            }
            e
        })
        .collect()
}

fn sfn_entry(name: &[u8; 11], attr: u8, cluster: usize, size: u32) -> [u8; DIR_ENTRY] {
    let mut e = [0u8; DIR_ENTRY];
    e[..11].copy_from_slice(name);
    e[11] = attr;
    if attr != ATTR_VOLUME_ID {
        e[14..16].copy_from_slice(&DOS_TIME.to_le_bytes());
        e[16..18].copy_from_slice(&DOS_DATE.to_le_bytes());
        e[18..20].copy_from_slice(&DOS_DATE.to_le_bytes());
    }
    e[22..24].copy_from_slice(&DOS_TIME.to_le_bytes());
    e[24..26].copy_from_slice(&DOS_DATE.to_le_bytes());
    // FAT12/16 cluster numbers fit in 16 bits (at most 65526).
    e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
    e[28..32].copy_from_slice(&size.to_le_bytes());
    e
}

/// Image layout: sizes in sectors.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    total_sectors: usize,
    sectors_per_cluster: usize,
    reserved_sectors: usize,
    fat_sectors: usize,
    root_entries: usize,
    clusters: usize,
    fat12: bool,
}

impl Geometry {
    /// The smallest image (at least 1 MiB, a multiple of 64 KiB) with a quarter of slack that
    /// holds the tree, and the smallest cluster size that keeps it FAT12/16.
    fn choose(nodes: &Nodes) -> Result<Self, SeedImageError> {
        // Sum of sizes is capped by SeedTree (64 MiB), so this stays far below FAT16's 2 GiB.
        let tree_root_entries = nodes.dir_bytes("") / DIR_ENTRY;
        let root_entries = tree_root_entries.next_multiple_of(16).max(MIN_ROOT_ENTRIES);
        let mut size = MIN_SIZE as usize;
        loop {
            for spc in [1usize, 2, 4, 8, 16, 32, 64] {
                let Some(geo) = Geometry::layout(size / SECTOR, spc, root_entries) else {
                    continue;
                };
                let needed = nodes.data_clusters(geo.cluster_bytes());
                if needed + needed / 4 <= geo.clusters {
                    return Ok(geo);
                }
                break;
            }
            size = (size + size / 4).next_multiple_of(64 * 1024);
            if size > 2 << 30 {
                return Err(SeedImageError::TooLarge(
                    "does not fit a FAT16 image".into(),
                ));
            }
        }
    }

    /// A layout of exactly `size` bytes: the smallest cluster size that keeps the cluster count
    /// within FAT16's (FAT12 when small enough), if the tree fits.
    fn fixed(nodes: &Nodes, size: u64) -> Result<Self, SeedImageError> {
        let root_entries = (nodes.dir_bytes("") / DIR_ENTRY)
            .next_multiple_of(16)
            .max(MIN_ROOT_ENTRIES);
        if !size.is_multiple_of(SECTOR as u64) || !(MIN_SIZE..=2 << 30).contains(&size) {
            return Err(SeedImageError::TooLarge(format!(
                "a FAT image of {size} bytes: use a multiple of 512 between 1 MiB and 2 GiB"
            )));
        }
        let total = (size / SECTOR as u64) as usize;
        for spc in [1usize, 2, 4, 8, 16, 32, 64] {
            let Some(geo) = Geometry::layout(total, spc, root_entries) else {
                continue;
            };
            let needed = nodes.data_clusters(geo.cluster_bytes());
            if needed <= geo.clusters {
                return Ok(geo);
            }
            return Err(SeedImageError::TooLarge(format!(
                "the files need {} bytes, the {size}-byte FAT image holds {}",
                needed * geo.cluster_bytes(),
                geo.clusters * geo.cluster_bytes()
            )));
        }
        Err(SeedImageError::TooLarge(format!(
            "no FAT12/16 layout for {size} bytes"
        )))
    }

    /// The layout of `total` sectors with `spc` sectors per cluster, if its cluster count is
    /// valid for FAT16 (FAT12 when small enough).
    fn layout(total: usize, spc: usize, root_entries: usize) -> Option<Self> {
        let reserved = 1;
        let root_sectors = root_entries * DIR_ENTRY / SECTOR;
        let mut fat_sectors = 1;
        for _ in 0..8 {
            let data = total.checked_sub(reserved + 2 * fat_sectors + root_sectors)?;
            let clusters = data / spc;
            let fat12 = clusters <= MAX_FAT12_CLUSTERS;
            let fat_bytes = if fat12 {
                (clusters + 2) * 3 / 2 + 1
            } else {
                (clusters + 2) * 2
            };
            let needed = fat_bytes.div_ceil(SECTOR);
            if needed == fat_sectors {
                if clusters == 0 || clusters > MAX_FAT16_CLUSTERS {
                    return None;
                }
                return Some(Geometry {
                    total_sectors: total,
                    sectors_per_cluster: spc,
                    reserved_sectors: reserved,
                    fat_sectors,
                    root_entries,
                    clusters,
                    fat12,
                });
            }
            fat_sectors = needed;
        }
        None
    }

    fn cluster_bytes(&self) -> usize {
        self.sectors_per_cluster * SECTOR
    }

    fn root_dir_sector(&self) -> usize {
        self.reserved_sectors + 2 * self.fat_sectors
    }

    fn cluster_offset(&self, cluster: usize) -> usize {
        let data = self.root_dir_sector() + self.root_entries * DIR_ENTRY / SECTOR;
        (data + (cluster - 2) * self.sectors_per_cluster) * SECTOR
    }

    fn write_boot_sector(&self, img: &mut [u8], label: &[u8; 11], volume_id: u32) {
        let bs = &mut img[..SECTOR];
        bs[0..3].copy_from_slice(&[0xEB, 0x3C, 0x90]);
        bs[3..11].copy_from_slice(b"VIRGA   ");
        bs[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes());
        bs[13] = self.sectors_per_cluster as u8;
        bs[14..16].copy_from_slice(&(self.reserved_sectors as u16).to_le_bytes());
        bs[16] = 2;
        bs[17..19].copy_from_slice(&(self.root_entries as u16).to_le_bytes());
        match u16::try_from(self.total_sectors) {
            Ok(n) => bs[19..21].copy_from_slice(&n.to_le_bytes()),
            Err(_) => bs[32..36].copy_from_slice(&(self.total_sectors as u32).to_le_bytes()),
        }
        bs[21] = 0xF8;
        bs[22..24].copy_from_slice(&(self.fat_sectors as u16).to_le_bytes());
        bs[24..26].copy_from_slice(&32u16.to_le_bytes());
        bs[26..28].copy_from_slice(&64u16.to_le_bytes());
        bs[36] = 0x80;
        bs[38] = 0x29;
        bs[39..43].copy_from_slice(&volume_id.to_le_bytes());
        bs[43..54].copy_from_slice(label);
        bs[54..62].copy_from_slice(if self.fat12 { b"FAT12   " } else { b"FAT16   " });
        // Boot code: `int 18h` (no bootable disk), then spin.
        bs[62..66].copy_from_slice(&[0xCD, 0x18, 0xEB, 0xFE]);
        bs[510] = 0x55;
        bs[511] = 0xAA;
    }
}

struct Fat {
    fat12: bool,
    bytes: Vec<u8>,
}

impl Fat {
    fn new(fat12: bool, len: usize) -> Self {
        Fat {
            fat12,
            bytes: vec![0; len],
        }
    }

    fn eoc(&self) -> usize {
        if self.fat12 { 0xFFF } else { 0xFFFF }
    }

    fn set(&mut self, n: usize, v: usize) {
        if self.fat12 {
            let at = n * 3 / 2;
            let v = v as u16 & 0xFFF;
            if n.is_multiple_of(2) {
                self.bytes[at] = v as u8;
                self.bytes[at + 1] = (self.bytes[at + 1] & 0xF0) | (v >> 8) as u8;
            } else {
                self.bytes[at] = (self.bytes[at] & 0x0F) | ((v & 0x0F) << 4) as u8;
                self.bytes[at + 1] = (v >> 4) as u8;
            }
        } else {
            self.bytes[n * 2..n * 2 + 2].copy_from_slice(&(v as u16).to_le_bytes());
        }
    }
}

/// Pads `label` to the 11-byte FAT field, refusing what FAT cannot store.
fn fat_label(label: &str) -> Result<[u8; 11], SeedImageError> {
    let bad = |reason| {
        Err(SeedImageError::InvalidLabel {
            label: label.to_owned(),
            format: SeedFormat::Vfat,
            reason,
        })
    };
    if label.is_empty() {
        return bad("empty");
    }
    if label.len() > 11 {
        return bad("longer than 11 bytes");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"\"*+,./:;<=>?[\\]|".contains(&b))
    {
        return bad("only printable ASCII, no spaces and none of \"*+,./:;<=>?[\\]|");
    }
    let mut out = [b' '; 11];
    out[..label.len()].copy_from_slice(label.as_bytes());
    Ok(out)
}

/// A volume serial derived from the contents (FNV-1a), so the same tree gives the same image.
fn volume_id(tree: &SeedTree) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for (path, contents) in tree.files() {
        for b in path.bytes().chain([0]).chain(contents.iter().copied()) {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FsType, probe};
    use std::io::Read;

    fn read_with_fatfs(img: &[u8], path: &str) -> Vec<u8> {
        let fs =
            fatfs::FileSystem::new(std::io::Cursor::new(img.to_vec()), fatfs::FsOptions::new())
                .unwrap();
        let mut out = Vec::new();
        fs.root_dir()
            .open_file(path)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn fixed_size_keeps_free_space_and_volume_id() {
        let mut tree = SeedTree::new();
        tree.insert("EFI/BOOT/BOOTX64.EFI", vec![1; 70_000])
            .unwrap();
        tree.insert("grub/grubenv", vec![b'#'; 1024]).unwrap();
        let opts = VfatOptions {
            size: Some(64 << 20),
            volume_id: Some(0x1234_5678),
        };
        let img = build_vfat_with(&tree, "ESP", opts).unwrap();
        assert_eq!(img.len(), 64 << 20);
        assert_eq!(&img[39..43], &0x1234_5678u32.to_le_bytes());
        assert_eq!(&img[54..62], b"FAT16   ");
        assert_eq!(read_with_fatfs(&img, "grub/grubenv"), vec![b'#'; 1024]);
        assert_eq!(img, build_vfat_with(&tree, "ESP", opts).unwrap());
        let small = VfatOptions {
            size: Some(1 << 20),
            volume_id: None,
        };
        let mut big = SeedTree::new();
        big.insert("k", vec![0; 2 << 20]).unwrap();
        assert!(build_vfat_with(&big, "ESP", small).is_err());
        let odd = VfatOptions {
            size: Some((1 << 20) + 1),
            volume_id: None,
        };
        assert!(build_vfat_with(&tree, "ESP", odd).is_err());
    }

    #[test]
    fn round_trip_through_fatfs_and_probe() {
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let tree = SeedTree::from_files([
            (
                "openstack/latest/meta_data.json",
                b"{\"uuid\": \"i-1\"}".to_vec(),
            ),
            ("openstack/latest/user_data", big.clone()),
            ("openstack/latest/vendor_data2.json", Vec::new()),
            ("ec2/latest/meta-data.json", b"{}".to_vec()),
            ("README", b"plain 8.3 name".to_vec()),
        ])
        .unwrap();
        let img = build_vfat(&tree, "config-2").unwrap();
        let p = probe(&img).unwrap();
        assert_eq!(p.fs_type, FsType::Vfat);
        assert_eq!(p.label.as_deref(), Some("config-2"));
        for (path, contents) in tree.files() {
            assert_eq!(read_with_fatfs(&img, path), contents, "{path}");
        }
        // fatfs sees the long names with their case.
        let fs = fatfs::FileSystem::new(std::io::Cursor::new(img.clone()), fatfs::FsOptions::new())
            .unwrap();
        let names: Vec<String> = fs
            .root_dir()
            .open_dir("openstack/latest")
            .unwrap()
            .iter()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            [
                ".",
                "..",
                "meta_data.json",
                "user_data",
                "vendor_data2.json"
            ]
        );
        // Same tree, same bytes.
        assert_eq!(build_vfat(&tree, "config-2").unwrap(), img);
    }

    #[test]
    fn short_names() {
        let mut used = HashSet::new();
        assert_eq!(
            short_name("README", &mut used),
            Some((*b"README     ", false))
        );
        assert_eq!(
            short_name("latest", &mut used),
            Some((*b"LATEST     ", true))
        );
        assert_eq!(
            short_name("Latest", &mut used),
            Some((*b"LATEST~1   ", true))
        );
        assert_eq!(
            short_name("meta_data.json", &mut used),
            Some((*b"META_D~1JSO", true))
        );
        assert_eq!(
            short_name("meta_data.jsonx", &mut used),
            Some((*b"META_D~2JSO", true))
        );
        assert_eq!(short_name("a+b", &mut used), Some((*b"A_B~1      ", true)));
        assert_eq!(
            short_name(".hidden", &mut used),
            Some((*b"HIDDEN~1   ", true))
        );
    }

    #[test]
    fn lfn_checksum_matches_reference() {
        // Independently computed with the specification's rotate-and-add over the 11 bytes.
        assert_eq!(lfn_checksum(b"README  TXT"), 0x73);
    }

    #[test]
    fn labels_are_checked() {
        assert!(fat_label("CONFIG-2").is_ok());
        assert_eq!(&fat_label("cidata").unwrap(), b"cidata     ");
        for bad in ["", "twelve-chars", "a b", "a.b", "x/y"] {
            assert!(fat_label(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn geometry_picks_fat12_then_fat16() {
        let small = SeedTree::from_files([("meta-data", vec![1; 10])]).unwrap();
        let img = build_vfat(&small, "cidata").unwrap();
        assert_eq!(img.len() as u64, MIN_SIZE);
        assert_eq!(&img[54..59], b"FAT12");
        let big = SeedTree::from_files([("user-data", vec![7; 8 << 20])]).unwrap();
        let img = build_vfat(&big, "cidata").unwrap();
        assert!(img.len() > 10 << 20);
        assert_eq!(&img[54..59], b"FAT16");
        assert_eq!(read_with_fatfs(&img, "user-data"), vec![7; 8 << 20]);
    }

    #[test]
    fn refuses_names_fat_cannot_store() {
        let t = SeedTree::from_files([("a:b", vec![])]).unwrap();
        assert!(build_vfat(&t, "cidata").is_err());
        let t = SeedTree::from_files([("trailing.", vec![])]).unwrap();
        assert!(build_vfat(&t, "cidata").is_err());
    }
}
