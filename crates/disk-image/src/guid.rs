//! GUIDs: the UAPI Discoverable Partitions types virga uses, and identifiers derived from the
//! image's inputs instead of drawn at random, so that the same inputs give the same disk.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Partition type GUIDs (UAPI Discoverable Partitions Specification, x86-64).
pub mod types {
    use uuid::{Uuid, uuid};
    /// EFI system partition.
    pub const ESP: Uuid = uuid!("c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
    /// BIOS boot partition (GRUB's core.img on a GPT disk).
    pub const BIOS_BOOT: Uuid = uuid!("21686148-6449-6e6f-744e-656564454649");
    /// `/usr` partition, x86-64.
    pub const USR_X86_64: Uuid = uuid!("8484680c-9521-48c6-9c11-b0720656f69e");
    /// dm-verity hash data for the `/usr` partition, x86-64.
    pub const USR_VERITY_X86_64: Uuid = uuid!("77ff5f63-e7b6-4633-acf4-1565b864c0e6");
    /// `/var` partition (virga's state partition).
    pub const VAR: Uuid = uuid!("4d21b016-b534-45c2-a9fb-5c16e091fd2d");
}

/// GPT partition attribute bits (UAPI Discoverable Partitions Specification).
pub mod attrs {
    /// Mount read-only (bit 60).
    pub const READ_ONLY: u64 = 1 << 60;
    /// Grow the filesystem to the partition on mount (bit 59).
    pub const GROW_FS: u64 = 1 << 59;
    /// Not for automatic discovery (bit 63): an empty slot.
    pub const NO_AUTO: u64 = 1 << 63;
}

/// A version-4-style UUID from `SHA-256(seed || 0 || name)`: stable for the same inputs,
/// different for different names, and shaped like the random UUIDs tools expect.
pub fn derive(seed: &[u8], name: &str) -> Uuid {
    let mut h = Sha256::new();
    h.update(seed);
    h.update([0]);
    h.update(name.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid()
}

/// The `/usr` partition's UUID for a verity root hash: its first 128 bits, and the verity
/// partition's: its last 128 bits (the specification's rule, so that the root hash alone finds
/// both partitions).
pub fn from_root_hash(root_hash: &[u8; 32]) -> (Uuid, Uuid) {
    let mut first = [0u8; 16];
    let mut last = [0u8; 16];
    first.copy_from_slice(&root_hash[..16]);
    last.copy_from_slice(&root_hash[16..]);
    (Uuid::from_bytes(first), Uuid::from_bytes(last))
}

/// A UUID in the mixed-endian byte order GPT stores.
pub fn gpt_bytes(u: &Uuid) -> [u8; 16] {
    u.to_bytes_le()
}

/// A 32-bit FAT volume serial number from the seed.
pub fn volume_id(seed: &[u8], name: &str) -> u32 {
    let b = derive(seed, name).into_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let a = derive(b"seed", "esp");
        assert_eq!(a, derive(b"seed", "esp"));
        assert_ne!(a, derive(b"seed", "state"));
        assert_ne!(a, derive(b"other", "esp"));
        assert_eq!(a.get_version_num(), 4);
    }

    #[test]
    fn root_hash_halves() {
        let mut h = [0u8; 32];
        for (i, b) in h.iter_mut().enumerate() {
            *b = i as u8;
        }
        let (u, v) = from_root_hash(&h);
        assert_eq!(u.to_string(), "00010203-0405-0607-0809-0a0b0c0d0e0f");
        assert_eq!(v.to_string(), "10111213-1415-1617-1819-1a1b1c1d1e1f");
    }

    #[test]
    fn gpt_order_is_mixed_endian() {
        let b = gpt_bytes(&types::ESP);
        assert_eq!(&b[..4], &[0x28, 0x73, 0x2a, 0xc1]);
        assert_eq!(&b[8..], &[0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b]);
    }
}
