//! Assembles the raw disk: partition table, GRUB's boot code, and each partition's contents,
//! written sparsely (zero blocks are skipped, so the file takes only the space its data needs).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::layout::{Layout, Role};
use crate::{DiskImageError, grub};

/// What goes on the disk.
#[derive(Debug)]
pub struct DiskContents<'a> {
    /// The layout.
    pub layout: &'a Layout,
    /// GRUB's boot.img (512 bytes).
    pub boot_img: &'a [u8],
    /// GRUB's core.img for BIOS (patched here).
    pub core_img: &'a [u8],
    /// The ESP's FAT image (exactly the ESP's size).
    pub esp: &'a [u8],
    /// Slot A's system filesystem.
    pub usr_a: &'a [u8],
    /// Slot A's hash device (verity superblock + tree).
    pub usr_a_verity: &'a [u8],
    /// An ext4 image file for the state partition (exactly its size), if any.
    pub state: Option<&'a Path>,
}

const CHUNK: usize = 4096;

/// Writes `data` at `offset`, skipping all-zero 4 KiB blocks (the file is zero there already).
fn write_sparse(f: &mut File, offset: u64, data: &[u8]) -> std::io::Result<()> {
    for (i, block) in data.chunks(CHUNK).enumerate() {
        if block.iter().all(|b| *b == 0) {
            continue;
        }
        f.seek(SeekFrom::Start(offset + (i * CHUNK) as u64))?;
        f.write_all(block)?;
    }
    Ok(())
}

fn fits(what: &str, len: u64, layout: &Layout, role: Role) -> Result<u64, DiskImageError> {
    let p = layout.require(role)?;
    if len > p.size {
        return Err(DiskImageError::TooSmall {
            what: what.to_owned(),
            place: format!("partition {} ({})", p.number, p.label),
            need: len,
            have: p.size,
            fix: "enlarge it in the spec's [disk] section".into(),
        });
    }
    Ok(p.start)
}

/// Writes the raw disk image to `path` (created or truncated).
pub fn write_raw(path: &Path, c: &DiskContents<'_>) -> Result<(), DiskImageError> {
    let io = |e| DiskImageError::io(path, e);
    let l = c.layout;
    let core_at = fits("GRUB core.img", c.core_img.len() as u64, l, Role::BiosBoot)?;
    let esp_at = fits("the ESP's FAT image", c.esp.len() as u64, l, Role::Esp)?;
    let usr_at = fits(
        "slot A's system filesystem",
        c.usr_a.len() as u64,
        l,
        Role::Usr('A'),
    )?;
    let hash_at = fits(
        "slot A's verity hash tree",
        c.usr_a_verity.len() as u64,
        l,
        Role::UsrVerity('A'),
    )?;
    let mut f = File::options()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(io)?;
    f.set_len(l.disk_size).map_err(io)?;
    l.write_gpt(&mut f)?;
    // GRUB's boot code goes into the protective MBR, around its partition table.
    let mut mbr = [0u8; 512];
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    f.read_exact(&mut mbr).map_err(io)?;
    let mut core = c.core_img.to_vec();
    grub::install_bios(
        &mut mbr,
        c.boot_img,
        &mut core,
        core_at / crate::layout::SECTOR,
    )?;
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    f.write_all(&mbr).map_err(io)?;
    write_sparse(&mut f, core_at, &core).map_err(io)?;
    write_sparse(&mut f, esp_at, c.esp).map_err(io)?;
    write_sparse(&mut f, usr_at, c.usr_a).map_err(io)?;
    write_sparse(&mut f, hash_at, c.usr_a_verity).map_err(io)?;
    if let Some(state) = c.state {
        let len = std::fs::metadata(state)
            .map_err(|e| DiskImageError::io(state, e))?
            .len();
        let at = fits("the state filesystem", len, l, Role::State)?;
        let mut src = File::open(state).map_err(|e| DiskImageError::io(state, e))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        loop {
            let n = read_full(&mut src, &mut buf).map_err(|e| DiskImageError::io(state, e))?;
            if n == 0 {
                break;
            }
            write_sparse(&mut f, at + off, &buf[..n]).map_err(io)?;
            off += n as u64;
        }
    }
    f.sync_all().map_err(io)?;
    Ok(())
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Reads `len` bytes at `offset` of a raw disk (tests, verification).
pub fn read_region(path: &Path, offset: u64, len: u64) -> Result<Vec<u8>, DiskImageError> {
    let mut f = File::open(path).map_err(|e| DiskImageError::io(path, e))?;
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| DiskImageError::io(path, e))?;
    let mut buf = vec![
        0u8;
        usize::try_from(len)
            .map_err(|_| DiskImageError::Invalid("region too large".into()))?
    ];
    f.read_exact(&mut buf)
        .map_err(|e| DiskImageError::io(path, e))?;
    Ok(buf)
}
