//! dm-verity hash trees, written the way `veritysetup format` writes them (format 1, SHA-256).
//!
//! The hash device starts with a 512-byte superblock padded to one hash block, followed by the
//! tree: the level nearest the root first, the level that hashes the data blocks last. Every
//! digest is `sha256(salt || block)` (format 1; Chrome OS's format 0 appends the salt), packed
//! 128 to a 4096-byte hash block and zero-padded. The root hash is the digest of the single block
//! of the top level. `veritysetup verify DATA HASH ROOT` and the kernel's dm-verity accept what
//! this module writes (checked against the real tool in `tests/real_tools.rs`).

use sha2::{Digest, Sha256};

use crate::DiskImageError;

/// Data and hash block size: 4096 bytes, as the kernel and `veritysetup` use by default.
pub const BLOCK_SIZE: u32 = 4096;
/// The hash algorithm.
pub const ALGORITHM: &str = "sha256";
const DIGEST: usize = 32;
/// Digests per hash block: 4096 / 32.
const PER_BLOCK_BITS: u32 = 7;
const SUPERBLOCK_SIZE: usize = 512;
const SIGNATURE: &[u8; 8] = b"verity\0\0";

/// Everything needed to open a verity device, besides the two devices themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityParams {
    /// Number of data blocks covered (the data device may be longer).
    pub data_blocks: u64,
    /// Salt, prepended to every hashed block.
    pub salt: Vec<u8>,
    /// UUID stored in the superblock (informational).
    pub uuid: [u8; 16],
    /// The root hash.
    pub root_hash: [u8; DIGEST],
    /// Bytes of the hash device that are used: superblock block + tree.
    pub hash_size: u64,
}

impl VerityParams {
    /// The root hash as lowercase hex, as `veritysetup` prints and takes it.
    pub fn root_hash_hex(&self) -> String {
        hex::encode(self.root_hash)
    }

    /// The salt as lowercase hex.
    pub fn salt_hex(&self) -> String {
        hex::encode(&self.salt)
    }

    /// Offset of the first tree block on the hash device (after the superblock's block): the
    /// kernel's `<hash_start_block>` in a dm table line is this / 4096.
    pub fn tree_offset(&self) -> u64 {
        u64::from(BLOCK_SIZE)
    }

    /// The device-mapper table line for `dmsetup create --readonly` / `dm-mod.create=`, with
    /// the two devices given (e.g. `PARTUUID=…` or `/dev/vda3`).
    pub fn dm_table(&self, data_dev: &str, hash_dev: &str) -> String {
        let sectors = self.data_blocks * u64::from(BLOCK_SIZE) / 512;
        format!(
            "0 {sectors} verity 1 {data_dev} {hash_dev} {BLOCK_SIZE} {BLOCK_SIZE} {} {} {ALGORITHM} {} {}",
            self.data_blocks,
            self.tree_offset() / u64::from(BLOCK_SIZE),
            self.root_hash_hex(),
            self.salt_hex()
        )
    }
}

/// Number of blocks in each tree level, level 0 (hashing the data) first.
fn level_sizes(data_blocks: u64) -> Vec<u64> {
    let mut levels = 0u32;
    while PER_BLOCK_BITS * levels < 64 && (data_blocks - 1) >> (PER_BLOCK_BITS * levels) != 0 {
        levels += 1;
    }
    (0..levels)
        .map(|i| {
            let shift = (i + 1) * PER_BLOCK_BITS;
            if shift >= 64 {
                1
            } else {
                data_blocks.div_ceil(1u64 << shift)
            }
        })
        .collect()
}

/// Bytes of hash device that a tree over `data_blocks` blocks needs (superblock included).
pub fn hash_device_size(data_blocks: u64) -> u64 {
    let tree: u64 = if data_blocks == 0 {
        0
    } else {
        level_sizes(data_blocks).iter().sum()
    };
    (1 + tree) * u64::from(BLOCK_SIZE)
}

fn digest(salt: &[u8], block: &[u8]) -> [u8; DIGEST] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    h.finalize().into()
}

/// Hashes consecutive `BLOCK_SIZE` blocks of `data` into packed, zero-padded hash blocks.
fn hash_level(salt: &[u8], data: &[u8]) -> Vec<u8> {
    let bs = BLOCK_SIZE as usize;
    let blocks = data.len() / bs;
    let per = bs / DIGEST;
    let mut out = vec![0u8; blocks.div_ceil(per) * bs];
    for (i, block) in data.chunks_exact(bs).enumerate() {
        out[i * DIGEST..(i + 1) * DIGEST].copy_from_slice(&digest(salt, block));
    }
    out
}

/// Builds the hash device (superblock + tree) for `data`, whose length must be a positive
/// multiple of [`BLOCK_SIZE`]. `salt` is at most 256 bytes.
pub fn build(
    data: &[u8],
    salt: &[u8],
    uuid: [u8; 16],
) -> Result<(Vec<u8>, VerityParams), DiskImageError> {
    let bs = BLOCK_SIZE as usize;
    if data.is_empty() || !data.len().is_multiple_of(bs) {
        return Err(DiskImageError::Invalid(format!(
            "verity data must be a positive multiple of {bs} bytes, not {}",
            data.len()
        )));
    }
    if salt.len() > 256 {
        return Err(DiskImageError::Invalid("verity salt over 256 bytes".into()));
    }
    let data_blocks = (data.len() / bs) as u64;
    let sizes = level_sizes(data_blocks);
    // Levels from the data upwards; each level hashes the one below it.
    let mut levels: Vec<Vec<u8>> = Vec::with_capacity(sizes.len());
    for (i, &n) in sizes.iter().enumerate() {
        let below: &[u8] = if i == 0 { data } else { &levels[i - 1] };
        let level = hash_level(salt, below);
        debug_assert_eq!(level.len() as u64, n * u64::from(BLOCK_SIZE));
        levels.push(level);
    }
    let root_hash = match levels.last() {
        Some(top) => digest(salt, top),
        None => digest(salt, data),
    };
    let mut dev = superblock(data_blocks, salt, uuid);
    dev.resize(bs, 0);
    for level in levels.iter().rev() {
        dev.extend_from_slice(level);
    }
    let params = VerityParams {
        data_blocks,
        salt: salt.to_vec(),
        uuid,
        root_hash,
        hash_size: dev.len() as u64,
    };
    debug_assert_eq!(params.hash_size, hash_device_size(data_blocks));
    Ok((dev, params))
}

/// The 512-byte format-1 superblock (`struct verity_sb` of cryptsetup's `lib/verity`).
fn superblock(data_blocks: u64, salt: &[u8], uuid: [u8; 16]) -> Vec<u8> {
    let mut sb = vec![0u8; SUPERBLOCK_SIZE];
    sb[0..8].copy_from_slice(SIGNATURE);
    sb[8..12].copy_from_slice(&1u32.to_le_bytes()); // superblock version
    sb[12..16].copy_from_slice(&1u32.to_le_bytes()); // hash type: normal
    sb[16..32].copy_from_slice(&uuid);
    sb[32..32 + ALGORITHM.len()].copy_from_slice(ALGORITHM.as_bytes());
    sb[64..68].copy_from_slice(&BLOCK_SIZE.to_le_bytes());
    sb[68..72].copy_from_slice(&BLOCK_SIZE.to_le_bytes());
    sb[72..80].copy_from_slice(&data_blocks.to_le_bytes());
    // The salt length fits: checked by the caller (≤ 256).
    sb[80..82].copy_from_slice(&(salt.len() as u16).to_le_bytes());
    sb[88..88 + salt.len()].copy_from_slice(salt);
    sb
}

/// Checks `data` against a hash device written by [`build`] (or `veritysetup format`) and the
/// expected root hash, the way dm-verity does when every block is read: `Ok(())` or the first
/// data block whose hash does not match. For tests and `virga` self-checks; the guest uses the
/// kernel.
pub fn verify(
    data: &[u8],
    hash_dev: &[u8],
    root_hash: &[u8; DIGEST],
) -> Result<(), DiskImageError> {
    let bad = |m: String| DiskImageError::Verity(m);
    if hash_dev.len() < SUPERBLOCK_SIZE || &hash_dev[0..8] != SIGNATURE {
        return Err(bad("no verity superblock".into()));
    }
    let u32_at = |at: usize| {
        u32::from_le_bytes([
            hash_dev[at],
            hash_dev[at + 1],
            hash_dev[at + 2],
            hash_dev[at + 3],
        ])
    };
    if u32_at(8) != 1 || u32_at(12) != 1 || u32_at(64) != BLOCK_SIZE || u32_at(68) != BLOCK_SIZE {
        return Err(bad(
            "unsupported verity superblock (want version 1, type 1, 4096-byte blocks)".into(),
        ));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&hash_dev[72..80]);
    let data_blocks = u64::from_le_bytes(n);
    let salt_len = usize::from(u16::from_le_bytes([hash_dev[80], hash_dev[81]]));
    if salt_len > 256 {
        return Err(bad("verity salt over 256 bytes".into()));
    }
    let salt = &hash_dev[88..88 + salt_len];
    let bs = BLOCK_SIZE as usize;
    let need = usize::try_from(data_blocks)
        .unwrap_or(usize::MAX)
        .saturating_mul(bs);
    if data_blocks == 0 || data.len() < need {
        return Err(bad(format!(
            "the data device has fewer than {data_blocks} blocks"
        )));
    }
    let uuid = {
        let mut u = [0u8; 16];
        u.copy_from_slice(&hash_dev[16..32]);
        u
    };
    let (expected, params) = build(&data[..need], salt, uuid)?;
    if hash_dev.len() < expected.len() {
        return Err(bad("the hash device is shorter than its tree".into()));
    }
    if &params.root_hash != root_hash {
        // Find the first data block whose level-0 digest differs from the stored tree.
        let level0_start =
            expected.len() - level_sizes(data_blocks).first().copied().unwrap_or(0) as usize * bs;
        for (i, block) in data[..need].chunks_exact(bs).enumerate() {
            let at = level0_start + i * DIGEST;
            if hash_dev.get(at..at + DIGEST) != Some(&digest(salt, block)[..]) {
                return Err(bad(format!("data block {i} does not match its hash")));
            }
        }
        return Err(bad("the root hash does not match the hash tree".into()));
    }
    if hash_dev[..expected.len()] != expected[..] {
        return Err(bad("the hash tree does not match the data".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(blocks: usize) -> Vec<u8> {
        (0..blocks * BLOCK_SIZE as usize)
            .map(|i| (i * 7 % 251) as u8)
            .collect()
    }

    #[test]
    fn level_sizes_match_cryptsetup() {
        assert_eq!(level_sizes(1), Vec::<u64>::new());
        assert_eq!(level_sizes(2), vec![1]);
        assert_eq!(level_sizes(128), vec![1]);
        assert_eq!(level_sizes(129), vec![2, 1]);
        assert_eq!(level_sizes(16384), vec![128, 1]);
        assert_eq!(level_sizes(16385), vec![129, 2, 1]);
        assert_eq!(hash_device_size(16384), (1 + 129) * 4096);
    }

    #[test]
    fn layout_and_root() {
        let d = data(300);
        let salt = [9u8; 32];
        let (dev, p) = build(&d, &salt, [1; 16]).unwrap();
        assert_eq!(dev.len() as u64, hash_device_size(300));
        assert_eq!(p.data_blocks, 300);
        assert_eq!(&dev[..8], SIGNATURE);
        // Top level (1 block) right after the superblock's block; the root hashes it.
        let top = &dev[4096..8192];
        assert_eq!(p.root_hash, digest(&salt, top));
        // Level 0 last: its first digest is block 0's.
        let l0 = &dev[dev.len() - 3 * 4096..];
        assert_eq!(&l0[..32], &digest(&salt, &d[..4096]));
        verify(&d, &dev, &p.root_hash).unwrap();
    }

    #[test]
    fn one_flipped_bit_is_found() {
        let mut d = data(200);
        let (dev, p) = build(&d, b"salt", [0; 16]).unwrap();
        d[4096 * 150 + 17] ^= 1;
        let e = verify(&d, &dev, &p.root_hash).unwrap_err().to_string();
        assert!(e.contains("data block 150"), "{e}");
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(build(&[], b"", [0; 16]).is_err());
        assert!(build(&[0; 100], b"", [0; 16]).is_err());
        assert!(build(&[0; 4096], &[0; 300], [0; 16]).is_err());
        assert!(verify(&[0; 4096], &[0; 10], &[0; 32]).is_err());
    }

    #[test]
    fn dm_table_names_everything() {
        let (_, p) = build(&data(3), &[0xab; 32], [0; 16]).unwrap();
        let t = p.dm_table("/dev/vda3", "/dev/vda4");
        assert!(
            t.starts_with("0 24 verity 1 /dev/vda3 /dev/vda4 4096 4096 3 1 sha256 "),
            "{t}"
        );
        assert!(t.ends_with(&"ab".repeat(32)), "{t}");
    }
}
