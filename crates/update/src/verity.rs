//! dm-verity (format 1, SHA-256, 4096-byte blocks) as the update path needs it: the root hash
//! of a slot's filesystem computed by streaming over it with bounded memory (the guest checks
//! what it wrote to the inactive slot against the signed root hash), and the whole hash device
//! (superblock + tree) for the release tool's consistency check.
//!
//! The layout is `veritysetup format`'s and `disk_image::verity`'s: digests are
//! `sha256(salt ‖ block)`, 128 to a zero-padded 4096-byte hash block; level 0 hashes the data,
//! each level above hashes the one below until a level has one block, whose digest is the root
//! hash (one data block: the root is that block's digest). The hash device is a 512-byte
//! superblock padded to 4096 bytes, then the levels, top first. Checked against `veritysetup`
//! in `tests/veritysetup.rs`.

use sha2::{Digest, Sha256};

/// Data and hash block size.
pub const BLOCK_SIZE: u64 = 4096;
const BS: usize = BLOCK_SIZE as usize;
const DIGEST: usize = 32;
const PER_BLOCK: u64 = (BS / DIGEST) as u64;
const SIGNATURE: &[u8; 8] = b"verity\0\0";

/// Blocks per tree level, level 0 (hashing the data) first. Empty for one data block.
pub fn level_sizes(data_blocks: u64) -> Vec<u64> {
    let mut sizes = Vec::new();
    let mut n = data_blocks;
    while n > 1 {
        n = n.div_ceil(PER_BLOCK);
        sizes.push(n);
    }
    sizes
}

/// Bytes of a hash device for `data_blocks` blocks: superblock block + tree.
pub fn hash_device_size(data_blocks: u64) -> u64 {
    (1 + level_sizes(data_blocks).iter().sum::<u64>()) * BLOCK_SIZE
}

fn digest(salt: &[u8], block: &[u8]) -> [u8; DIGEST] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    h.finalize().into()
}

struct Level {
    cur: Vec<u8>,
    kept: Vec<u8>,
}

/// Streams a filesystem image into its dm-verity root hash. Memory: one 4096-byte block per
/// tree level (plus the whole tree when built with [`VerityHasher::keeping_tree`]).
pub struct VerityHasher {
    salt: Vec<u8>,
    data_blocks: u64,
    fed: u64,
    partial: Vec<u8>,
    levels: Vec<Level>,
    keep: bool,
    root: Option<[u8; DIGEST]>,
}

impl std::fmt::Debug for VerityHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerityHasher({}/{} blocks)", self.fed, self.data_blocks)
    }
}

/// What the hasher found wrong with its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerityError {
    /// Fed more or fewer bytes than `data_blocks` × 4096.
    #[error("verity: got {got} bytes of filesystem, expected {want}")]
    Length {
        /// Bytes fed.
        got: u64,
        /// Bytes expected.
        want: u64,
    },
    /// The computed root hash is not the expected one.
    #[error("verity root hash {got} does not match the signed {want}")]
    Mismatch {
        /// Computed, hex.
        got: String,
        /// Expected, hex.
        want: String,
    },
}

impl VerityHasher {
    /// A hasher for `data_blocks` blocks with `salt`.
    pub fn new(salt: &[u8], data_blocks: u64) -> VerityHasher {
        let levels = level_sizes(data_blocks)
            .iter()
            .map(|_| Level {
                cur: Vec::with_capacity(BS),
                kept: Vec::new(),
            })
            .collect();
        VerityHasher {
            salt: salt.to_vec(),
            data_blocks,
            fed: 0,
            partial: Vec::with_capacity(BS),
            levels,
            keep: false,
            root: None,
        }
    }

    /// Like [`VerityHasher::new`], also keeping the tree (host side).
    pub fn keeping_tree(salt: &[u8], data_blocks: u64) -> VerityHasher {
        let mut h = VerityHasher::new(salt, data_blocks);
        h.keep = true;
        h
    }

    /// Feeds the next bytes of the filesystem image.
    pub fn update(&mut self, mut data: &[u8]) -> Result<(), VerityError> {
        let want = self.data_blocks * BLOCK_SIZE;
        let got = self.fed * BLOCK_SIZE + (self.partial.len() + data.len()) as u64;
        if got > want {
            return Err(VerityError::Length { got, want });
        }
        while !data.is_empty() {
            if self.partial.is_empty() && data.len() >= BS {
                let (block, rest) = data.split_at(BS);
                self.data_block(block);
                data = rest;
                continue;
            }
            let take = (BS - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() == BS {
                let block = std::mem::take(&mut self.partial);
                self.data_block(&block);
                self.partial = block;
                self.partial.clear();
            }
        }
        Ok(())
    }

    fn data_block(&mut self, block: &[u8]) {
        self.fed += 1;
        let d = digest(&self.salt, block);
        if self.levels.is_empty() {
            self.root = Some(d);
        } else {
            self.push(0, &d);
        }
    }

    fn push(&mut self, level: usize, d: &[u8; DIGEST]) {
        self.levels[level].cur.extend_from_slice(d);
        if self.levels[level].cur.len() == BS {
            self.emit(level);
        }
    }

    fn emit(&mut self, level: usize) {
        let mut block = std::mem::take(&mut self.levels[level].cur);
        block.resize(BS, 0);
        let d = digest(&self.salt, &block);
        if self.keep {
            self.levels[level].kept.extend_from_slice(&block);
        }
        block.clear();
        self.levels[level].cur = block;
        if level + 1 < self.levels.len() {
            self.push(level + 1, &d);
        } else {
            self.root = Some(d);
        }
    }

    fn complete(&mut self) -> Result<[u8; DIGEST], VerityError> {
        let want = self.data_blocks * BLOCK_SIZE;
        let got = self.fed * BLOCK_SIZE + self.partial.len() as u64;
        if got != want || want == 0 {
            return Err(VerityError::Length { got, want });
        }
        for i in 0..self.levels.len() {
            if !self.levels[i].cur.is_empty() {
                self.emit(i);
            }
        }
        self.root.ok_or(VerityError::Length { got, want })
    }

    /// The root hash, once exactly `data_blocks` blocks were fed.
    pub fn finish(mut self) -> Result<[u8; DIGEST], VerityError> {
        self.complete()
    }

    /// Like [`VerityHasher::finish`], comparing with the expected root.
    pub fn finish_expecting(self, want: &[u8; DIGEST]) -> Result<(), VerityError> {
        let got = self.finish()?;
        if &got != want {
            return Err(VerityError::Mismatch {
                got: hex::encode(got),
                want: hex::encode(want),
            });
        }
        Ok(())
    }

    /// The root hash and the tree levels, top first (needs [`VerityHasher::keeping_tree`]).
    pub fn finish_tree(mut self) -> Result<([u8; DIGEST], Vec<u8>), VerityError> {
        let root = self.complete()?;
        let mut tree = Vec::new();
        for l in self.levels.iter().rev() {
            tree.extend_from_slice(&l.kept);
        }
        Ok((root, tree))
    }
}

/// A whole hash device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashDevice {
    /// Superblock block + tree, as `veritysetup format` writes it.
    pub device: Vec<u8>,
    /// The root hash.
    pub root_hash: [u8; DIGEST],
}

/// The format-1 superblock (`struct verity_sb` of cryptsetup), 512 bytes.
pub fn superblock(data_blocks: u64, salt: &[u8], uuid: [u8; 16]) -> [u8; 512] {
    let mut sb = [0u8; 512];
    sb[0..8].copy_from_slice(SIGNATURE);
    sb[8..12].copy_from_slice(&1u32.to_le_bytes());
    sb[12..16].copy_from_slice(&1u32.to_le_bytes());
    sb[16..32].copy_from_slice(&uuid);
    sb[32..38].copy_from_slice(b"sha256");
    sb[64..68].copy_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
    sb[68..72].copy_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
    sb[72..80].copy_from_slice(&data_blocks.to_le_bytes());
    let n = salt.len().min(256);
    sb[80..82].copy_from_slice(&(n as u16).to_le_bytes());
    sb[88..88 + n].copy_from_slice(&salt[..n]);
    sb
}

/// What a hash device's superblock says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// Data blocks.
    pub data_blocks: u64,
    /// Salt.
    pub salt: Vec<u8>,
    /// UUID.
    pub uuid: [u8; 16],
}

/// Reads a format-1 SHA-256 4096/4096 superblock; `None` for anything else.
pub fn parse_superblock(dev: &[u8]) -> Option<Superblock> {
    let sb = dev.get(..512)?;
    let u32_at = |i: usize| u32::from_le_bytes([sb[i], sb[i + 1], sb[i + 2], sb[i + 3]]);
    if &sb[0..8] != SIGNATURE
        || u32_at(8) != 1
        || u32_at(12) != 1
        || &sb[32..38] != b"sha256"
        || sb[38..64].iter().any(|&b| b != 0)
        || u64::from(u32_at(64)) != BLOCK_SIZE
        || u64::from(u32_at(68)) != BLOCK_SIZE
    {
        return None;
    }
    let mut db = [0u8; 8];
    db.copy_from_slice(&sb[72..80]);
    let salt_len = usize::from(u16::from_le_bytes([sb[80], sb[81]]));
    if salt_len > 256 {
        return None;
    }
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&sb[16..32]);
    Some(Superblock {
        data_blocks: u64::from_le_bytes(db),
        salt: sb[88..88 + salt_len].to_vec(),
        uuid,
    })
}

/// Builds the hash device for `data` (a positive multiple of 4096 bytes).
pub fn build_hash_device(data: &[u8], salt: &[u8], uuid: [u8; 16]) -> HashDevice {
    let blocks = data.len() as u64 / BLOCK_SIZE;
    let mut h = VerityHasher::keeping_tree(salt, blocks);
    let _ = h.update(&data[..(blocks * BLOCK_SIZE) as usize]);
    let (root_hash, tree) = h.finish_tree().unwrap_or(([0; DIGEST], Vec::new()));
    let mut device = superblock(blocks, salt, uuid).to_vec();
    device.resize(BS, 0);
    device.extend_from_slice(&tree);
    HashDevice { device, root_hash }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The straightforward level-by-level construction, to check the streaming one against.
    fn naive(data: &[u8], salt: &[u8]) -> ([u8; 32], Vec<u8>) {
        let mut levels: Vec<Vec<u8>> = Vec::new();
        let mut below = data.to_vec();
        if below.len() == BS {
            return (digest(salt, &below), Vec::new());
        }
        loop {
            let mut level = Vec::new();
            for b in below.chunks(BS) {
                level.extend_from_slice(&digest(salt, b));
            }
            level.resize(level.len().div_ceil(BS) * BS, 0);
            levels.push(level.clone());
            if level.len() == BS {
                let root = digest(salt, &level);
                let tree = levels.iter().rev().flatten().copied().collect();
                return (root, tree);
            }
            below = level;
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(level_sizes(1), Vec::<u64>::new());
        assert_eq!(level_sizes(2), vec![1]);
        assert_eq!(level_sizes(128), vec![1]);
        assert_eq!(level_sizes(129), vec![2, 1]);
        assert_eq!(level_sizes(16_385), vec![129, 2, 1]);
        assert_eq!(hash_device_size(431), 6 * 4096);
        assert_eq!(hash_device_size(1), 4096);
    }

    #[test]
    fn streaming_matches_naive_across_level_boundaries() {
        let salt = b"salty";
        for blocks in [1u64, 2, 127, 128, 129, 255, 256, 257, 431] {
            let data: Vec<u8> = (0..blocks * BLOCK_SIZE)
                .map(|i| (i * 7 % 253) as u8)
                .collect();
            let (root, tree) = naive(&data, salt);
            let dev = build_hash_device(&data, salt, [3; 16]);
            assert_eq!(dev.root_hash, root, "{blocks}");
            assert_eq!(&dev.device[BS..], &tree[..], "{blocks}");
            assert_eq!(dev.device.len() as u64, hash_device_size(blocks));
            let sb = parse_superblock(&dev.device).unwrap();
            assert_eq!(sb.data_blocks, blocks);
            assert_eq!(sb.salt, salt);
            // Fed in odd pieces.
            let mut h = VerityHasher::new(salt, blocks);
            for piece in data.chunks(1000) {
                h.update(piece).unwrap();
            }
            h.finish_expecting(&root).unwrap();
        }
    }

    #[test]
    fn wrong_lengths_and_roots() {
        let mut h = VerityHasher::new(b"", 2);
        h.update(&[0; 4096]).unwrap();
        assert!(matches!(h.finish(), Err(VerityError::Length { .. })));
        let mut h = VerityHasher::new(b"", 1);
        assert!(h.update(&[0; 4097]).is_err());
        let mut h = VerityHasher::new(b"", 1);
        h.update(&[0; 4096]).unwrap();
        assert!(matches!(
            h.finish_expecting(&[0; 32]),
            Err(VerityError::Mismatch { .. })
        ));
        assert!(VerityHasher::new(b"", 0).finish().is_err());
        assert!(parse_superblock(&[0; 512]).is_none());
        assert!(parse_superblock(&[0; 10]).is_none());
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_root(blocks in 1u64..200, cut in 1usize..9000, seed: u8) {
            let data: Vec<u8> = (0..blocks * BLOCK_SIZE).map(|i| (i as u8) ^ seed).collect();
            let (root, _) = naive(&data, &[seed]);
            let mut h = VerityHasher::new(&[seed], blocks);
            for piece in data.chunks(cut) {
                h.update(piece).unwrap();
            }
            prop_assert_eq!(h.finish().unwrap(), root);
        }
    }
}
