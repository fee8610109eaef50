//! Growing the last GPT partition to the end of an enlarged disk (CirrOS's `growroot`), sans-IO.
//!
//! A disk image is built small; a cloud gives it a bigger disk (or `qemu-img resize` does). At
//! the next boot the state partition takes the new space: the backup GPT moves to the new end,
//! the partition's last LBA moves up (aligned down to a MiB), and both headers get their CRCs.
//! The input is untrusted (a disk's first sectors): parsing is total and bounded, and any doubt
//! (a bad CRC, an odd sector size, the partition not last) means "do not touch".
//!
//! What to write, in this order, so that a power cut at any point leaves a valid GPT: the new
//! backup entries and header at the new end; then the primary entries and header; then the old
//! backup header (now inside the partition) is cleared.

/// GPT sector size this code handles (the logical block size of virtio, IDE and NVMe disks).
pub const SECTOR: u64 = 512;
/// Partitions end on MiB boundaries.
const ALIGN: u64 = 1 << 20;
/// The most entry bytes accepted (128 entries of 128 bytes is 16 KiB).
const MAX_ENTRY_BYTES: u64 = 1 << 20;

/// Why a GPT is left alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GptError {
    /// Not a GPT, or a damaged one.
    #[error("no valid GPT: {0}")]
    Invalid(&'static str),
    /// The partition asked for is not there.
    #[error("partition {0} is not in the GPT")]
    NoPartition(u32),
    /// Another partition ends after it: it cannot grow into the free space.
    #[error("partition {0} is not the last one on the disk")]
    NotLast(u32),
}

/// The writes that grow a partition: `(byte offset, bytes)`, in the order to apply them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Growth {
    /// The partition's old and new last LBA.
    pub old_last_lba: u64,
    /// New last LBA (inclusive).
    pub new_last_lba: u64,
    /// Writes, in order.
    pub writes: Vec<(u64, Vec<u8>)>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// How many bytes from the start of the disk [`plan`] needs to see (through the primary
/// entries), given the primary header sector (LBA 1); `None` when it is not a GPT header.
pub fn head_len(lba1: &[u8]) -> Option<u64> {
    if lba1.len() < 92 || &lba1[..8] != b"EFI PART" {
        return None;
    }
    let entries_lba = u64_at(lba1, 72);
    let bytes = u64::from(u32_at(lba1, 80)).checked_mul(u64::from(u32_at(lba1, 84)))?;
    if bytes == 0 || bytes > MAX_ENTRY_BYTES || !(2..=64).contains(&entries_lba) {
        return None;
    }
    Some(entries_lba * SECTOR + bytes)
}

/// A primary GPT header and its entry array, checked (signature, sizes, both CRCs).
struct Parsed<'a> {
    hdr: &'a [u8],
    hsize: usize,
    alternate: u64,
    last_usable: u64,
    entries_lba: u64,
    count: u32,
    esize: u32,
    entries: &'a [u8],
}

fn parse(head: &[u8]) -> Result<Parsed<'_>, GptError> {
    let s = SECTOR as usize;
    if head.len() < 2 * s {
        return Err(GptError::Invalid("too short"));
    }
    let hdr = &head[s..2 * s];
    if &hdr[..8] != b"EFI PART" {
        return Err(GptError::Invalid("no signature"));
    }
    let hsize = u32_at(hdr, 12) as usize;
    if !(92..=s).contains(&hsize) {
        return Err(GptError::Invalid("header size"));
    }
    let mut check = hdr[..hsize].to_vec();
    check[16..20].fill(0);
    if crc32fast::hash(&check) != u32_at(hdr, 16) {
        return Err(GptError::Invalid("header CRC"));
    }
    if u64_at(hdr, 24) != 1 {
        return Err(GptError::Invalid("not the primary header"));
    }
    let entries_lba = u64_at(hdr, 72);
    let count = u32_at(hdr, 80);
    let esize = u32_at(hdr, 84);
    let entry_bytes = u64::from(count) * u64::from(esize);
    if esize < 128
        || !esize.is_multiple_of(8)
        || entry_bytes > MAX_ENTRY_BYTES
        || !(2..=64).contains(&entries_lba)
    {
        return Err(GptError::Invalid("entry array"));
    }
    let start = (entries_lba * SECTOR) as usize;
    let end = start + entry_bytes as usize;
    if head.len() < end {
        return Err(GptError::Invalid("entries cut off"));
    }
    let entries = &head[start..end];
    if crc32fast::hash(entries) != u32_at(hdr, 88) {
        return Err(GptError::Invalid("entries CRC"));
    }
    Ok(Parsed {
        hdr,
        hsize,
        alternate: u64_at(hdr, 32),
        last_usable: u64_at(hdr, 48),
        entries_lba,
        count,
        esize,
        entries,
    })
}

/// One used GPT entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based number (the `N` of `vdaN`).
    pub number: u32,
    /// Unique partition GUID as the kernel and `blkid` print it (the PARTUUID), lowercase.
    pub partuuid: String,
    /// Partition name (UTF-16 in the entry).
    pub name: String,
}

/// The used entries of a GPT (`head` as for [`plan`]).
pub fn entries(head: &[u8]) -> Result<Vec<Entry>, GptError> {
    let p = parse(head)?;
    let mut out = Vec::new();
    for i in 0..p.count as usize {
        let e = &p.entries[i * p.esize as usize..(i + 1) * p.esize as usize];
        if e[..16].iter().all(|b| *b == 0) {
            continue;
        }
        let name: Vec<u16> = e[56..128]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|c| *c != 0)
            .collect();
        out.push(Entry {
            number: i as u32 + 1,
            partuuid: gpt_to_uuid(&e[16..32]),
            name: String::from_utf16_lossy(&name),
        });
    }
    Ok(out)
}

/// A GUID in GPT's mixed-endian byte order, as text.
fn gpt_to_uuid(b: &[u8]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3],
        b[2],
        b[1],
        b[0],
        b[5],
        b[4],
        b[7],
        b[6],
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

/// The GPT bytes of a GUID given as its 16 bytes in text order (as a root hash's halves are).
pub fn uuid_to_gpt(b: [u8; 16]) -> [u8; 16] {
    [
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
        b[14], b[15],
    ]
}

/// Attribute bit 63: "do not discover automatically" (an empty slot).
pub const NO_AUTO: u64 = 1 << 63;

/// The writes that give partition `number` the unique GUID `guid` (GPT byte order) and clear
/// the attribute bits `clear`: the backup entries and header first, then the primary ones.
pub fn set_identity(
    head: &[u8],
    disk_sectors: u64,
    number: u32,
    guid: [u8; 16],
    clear: u64,
) -> Result<Vec<(u64, Vec<u8>)>, GptError> {
    let p = parse(head)?;
    if p.alternate >= disk_sectors {
        return Err(GptError::Invalid("backup header beyond the disk"));
    }
    if number == 0 || number > p.count {
        return Err(GptError::NoPartition(number));
    }
    let at = (number as usize - 1) * p.esize as usize;
    if p.entries[at..at + 16].iter().all(|b| *b == 0) {
        return Err(GptError::NoPartition(number));
    }
    let mut new_entries = p.entries.to_vec();
    new_entries[at + 16..at + 32].copy_from_slice(&guid);
    let attrs = u64_at(&new_entries, at + 48) & !clear;
    new_entries[at + 48..at + 56].copy_from_slice(&attrs.to_le_bytes());
    let entry_sectors = (new_entries.len() as u64).div_ceil(SECTOR);
    let backup_entries = p.alternate - entry_sectors;
    let crc = crc32fast::hash(&new_entries);
    let primary = header(&p, 1, p.alternate, p.entries_lba, p.last_usable, crc);
    let backup = header(&p, p.alternate, 1, backup_entries, p.last_usable, crc);
    Ok(vec![
        (backup_entries * SECTOR, new_entries.clone()),
        (p.alternate * SECTOR, backup),
        (p.entries_lba * SECTOR, new_entries),
        (SECTOR, primary),
    ])
}

/// A header sector from `p`'s with these fields and its CRC.
fn header(
    p: &Parsed<'_>,
    my_lba: u64,
    alt_lba: u64,
    entries_at: u64,
    last_usable: u64,
    entries_crc: u32,
) -> Vec<u8> {
    let mut h = p.hdr[..p.hsize].to_vec();
    h[24..32].copy_from_slice(&my_lba.to_le_bytes());
    h[32..40].copy_from_slice(&alt_lba.to_le_bytes());
    h[48..56].copy_from_slice(&last_usable.to_le_bytes());
    h[72..80].copy_from_slice(&entries_at.to_le_bytes());
    h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
    h[16..20].fill(0);
    let crc = crc32fast::hash(&h);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h.resize(SECTOR as usize, 0);
    h
}

/// Plans growing partition `number` (1-based) to the end of a disk of `disk_sectors` sectors.
/// `head` is the disk from byte 0 through the primary entries (see [`head_len`]). `Ok(None)`:
/// nothing to gain (less than a MiB of new space).
pub fn plan(head: &[u8], disk_sectors: u64, number: u32) -> Result<Option<Growth>, GptError> {
    let s = SECTOR as usize;
    let p = parse(head)?;
    let (alternate, last_usable, entries_lba, count, esize, entries) = (
        p.alternate,
        p.last_usable,
        p.entries_lba,
        p.count,
        p.esize,
        p.entries,
    );
    let entry_bytes = entries.len() as u64;
    let entry_sectors = entry_bytes.div_ceil(SECTOR);
    if alternate >= disk_sectors || last_usable >= alternate {
        return Err(GptError::Invalid("backup header beyond the disk"));
    }
    if number == 0 || number > count {
        return Err(GptError::NoPartition(number));
    }
    let at = (number as usize - 1) * esize as usize;
    let entry = &entries[at..at + esize as usize];
    if entry[..16].iter().all(|b| *b == 0) {
        return Err(GptError::NoPartition(number));
    }
    let first_lba = u64_at(entry, 32);
    let old_last = u64_at(entry, 40);
    if old_last < first_lba || old_last > last_usable {
        return Err(GptError::Invalid("partition bounds"));
    }
    for i in 0..count as usize {
        let e = &entries[i * esize as usize..(i + 1) * esize as usize];
        if i != number as usize - 1 && e[..16].iter().any(|b| *b != 0) && u64_at(e, 40) > old_last {
            return Err(GptError::NotLast(number));
        }
    }
    // The new backup: the header in the last sector, its entries just before it.
    let new_alternate = disk_sectors - 1;
    let Some(new_backup_entries) = new_alternate.checked_sub(entry_sectors) else {
        return Err(GptError::Invalid("disk too small"));
    };
    let Some(new_last_usable) = new_backup_entries.checked_sub(1) else {
        return Err(GptError::Invalid("disk too small"));
    };
    let new_last = ((new_last_usable + 1) * SECTOR / ALIGN * ALIGN / SECTOR).saturating_sub(1);
    if new_last < old_last + ALIGN / SECTOR || new_alternate <= alternate {
        return Ok(None);
    }
    let mut new_entries = entries.to_vec();
    new_entries[at + 40..at + 48].copy_from_slice(&new_last.to_le_bytes());
    let entries_crc = crc32fast::hash(&new_entries);
    let primary = header(
        &p,
        1,
        new_alternate,
        entries_lba,
        new_last_usable,
        entries_crc,
    );
    let backup = header(
        &p,
        new_alternate,
        1,
        new_backup_entries,
        new_last_usable,
        entries_crc,
    );
    Ok(Some(Growth {
        old_last_lba: old_last,
        new_last_lba: new_last,
        writes: vec![
            (new_backup_entries * SECTOR, new_entries.clone()),
            (new_alternate * SECTOR, backup),
            (entries_lba * SECTOR, new_entries),
            (SECTOR, primary),
            (alternate * SECTOR, vec![0u8; s]),
        ],
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A GPT for a disk of `sectors` sectors with partitions `(first, last)`, the last header
    /// at the disk's end.
    pub fn disk(sectors: u64, parts: &[(u64, u64)]) -> Vec<u8> {
        let s = SECTOR as usize;
        let mut d = vec![0u8; sectors as usize * s];
        let mut entries = vec![0u8; 128 * 128];
        for (i, (first, last)) in parts.iter().enumerate() {
            let e = &mut entries[i * 128..(i + 1) * 128];
            e[..16].copy_from_slice(&[0x4d; 16]);
            e[16..32].copy_from_slice(&[i as u8 + 1; 16]);
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
        }
        let ecrc = crc32fast::hash(&entries);
        let header = |my: u64, alt: u64, at: u64| {
            let mut h = vec![0u8; 92];
            h[..8].copy_from_slice(b"EFI PART");
            h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
            h[12..16].copy_from_slice(&92u32.to_le_bytes());
            h[24..32].copy_from_slice(&my.to_le_bytes());
            h[32..40].copy_from_slice(&alt.to_le_bytes());
            h[40..48].copy_from_slice(&34u64.to_le_bytes());
            h[48..56].copy_from_slice(&(sectors - 34).to_le_bytes());
            h[72..80].copy_from_slice(&at.to_le_bytes());
            h[80..84].copy_from_slice(&128u32.to_le_bytes());
            h[84..88].copy_from_slice(&128u32.to_le_bytes());
            h[88..92].copy_from_slice(&ecrc.to_le_bytes());
            let crc = crc32fast::hash(&h);
            h[16..20].copy_from_slice(&crc.to_le_bytes());
            h
        };
        d[s..s + 92].copy_from_slice(&header(1, sectors - 1, 2));
        d[2 * s..2 * s + entries.len()].copy_from_slice(&entries);
        let last = (sectors - 1) as usize * s;
        d[last..last + 92].copy_from_slice(&header(sectors - 1, 1, sectors - 33));
        let be = (sectors - 33) as usize * s;
        d[be..be + entries.len()].copy_from_slice(&entries);
        d
    }

    fn apply(d: &mut [u8], g: &Growth) {
        for (off, bytes) in &g.writes {
            let o = *off as usize;
            d[o..o + bytes.len()].copy_from_slice(bytes);
        }
    }

    #[test]
    fn the_last_partition_grows_to_the_last_whole_mib() {
        // A 16 MiB image with partitions at 1-8 MiB and 8-15 MiB, on a disk grown to 64 MiB.
        let small = 16 * 2048;
        let mut d = disk(small, &[(2048, 16383), (16384, small - 2048 - 1)]);
        d.resize(64 * 2048 * 512, 0);
        let g = plan(&d, 64 * 2048, 2).unwrap().unwrap();
        assert_eq!(g.old_last_lba, small - 2049);
        assert_eq!(g.new_last_lba, 63 * 2048 - 1);
        apply(&mut d, &g);
        // The result is a valid GPT that needs no more growth, and the first partition did not
        // move.
        assert_eq!(plan(&d, 64 * 2048, 2), Ok(None));
        let e1 = &d[2 * 512..2 * 512 + 128];
        assert_eq!(u64_at(e1, 40), 16383);
        // The backup header at the new end is valid and points back at LBA 1.
        let b = &d[(64 * 2048 - 1) * 512..(64 * 2048 - 1) * 512 + 92];
        assert_eq!(&b[..8], b"EFI PART");
        assert_eq!(u64_at(b, 24), 64 * 2048 - 1);
        assert_eq!(u64_at(b, 32), 1);
        // The old backup header is gone.
        assert!(
            d[(small as usize - 1) * 512..small as usize * 512]
                .iter()
                .all(|b| *b == 0)
        );
    }

    #[test]
    fn entries_are_listed_and_an_identity_set() {
        let n = 16 * 2048;
        let mut d = disk(n, &[(2048, 8191), (8192, 16383)]);
        let e = entries(&d).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].number, 2);
        assert_eq!(e[1].partuuid, "02020202-0202-0202-0202-020202020202");
        let id: [u8; 16] = core::array::from_fn(|i| i as u8);
        let writes = set_identity(&d, n, 2, uuid_to_gpt(id), NO_AUTO).unwrap();
        apply(
            &mut d,
            &Growth {
                old_last_lba: 0,
                new_last_lba: 0,
                writes,
            },
        );
        let e = entries(&d).unwrap();
        assert_eq!(e[1].partuuid, "00010203-0405-0607-0809-0a0b0c0d0e0f");
        // The backup header is valid and describes the same entries.
        let b = (n as usize - 1) * 512;
        assert_eq!(&d[b..b + 8], b"EFI PART");
        assert_eq!(u64_at(&d[b..], 24), n - 1);
        assert!(set_identity(&d, n, 3, [0; 16], 0).is_err());
    }

    #[test]
    fn doubts_leave_the_disk_alone() {
        let n = 16 * 2048;
        let mut d = disk(n, &[(2048, 8191), (8192, 16383)]);
        d.resize(64 * 2048 * 512, 0);
        // Not the last partition.
        assert_eq!(plan(&d, 64 * 2048, 1), Err(GptError::NotLast(1)));
        assert_eq!(plan(&d, 64 * 2048, 3), Err(GptError::NoPartition(3)));
        // Nothing gained on the same disk.
        assert_eq!(plan(&d, n, 2), Ok(None));
        // A damaged header or entry array.
        let mut bad = d.clone();
        bad[512 + 60] ^= 1;
        assert_eq!(
            plan(&bad, 64 * 2048, 2),
            Err(GptError::Invalid("header CRC"))
        );
        let mut bad = d.clone();
        bad[2 * 512 + 200] ^= 1;
        assert_eq!(
            plan(&bad, 64 * 2048, 2),
            Err(GptError::Invalid("entries CRC"))
        );
        assert!(plan(&d[..700], 64 * 2048, 2).is_err());
        assert_eq!(head_len(&d[512..1024]), Some(2 * 512 + 128 * 128));
        assert_eq!(head_len(b"not a header"), None);
    }

    proptest! {
        #[test]
        fn plan_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..20000), n in 0u32..200, sectors in 0u64..1_000_000) {
            let _ = plan(&bytes, sectors, n);
            let _ = head_len(&bytes);
        }

        #[test]
        fn mutated_gpts_never_panic(flips in proptest::collection::vec((0usize..20000, any::<u8>()), 1..8), grow in 0u64..4096) {
            let n = 16 * 2048;
            let mut d = disk(n, &[(2048, 8191), (8192, 16383)]);
            for (at, v) in flips {
                let at = at % d.len();
                d[at] = v;
            }
            let _ = plan(&d[..20000.min(d.len())], n + grow * 2048, 2);
        }
    }
}
