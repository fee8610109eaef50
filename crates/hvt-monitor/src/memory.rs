//! Guest memory: one anonymous mapping shared with KVM, with bounds-checked accessors.
//!
//! Every guest-supplied address goes through [`GuestMemory::slice`] or
//! [`GuestMemory::slice_mut`], which check `gpa + len` with checked arithmetic against the size of
//! guest memory. Nothing in the monitor touches guest memory any other way.

use std::ops::Range;

use hvt_abi::Wire;

use crate::sys::Mmap;

/// An access outside guest memory (or an overflowing one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("guest access of {len} bytes at {gpa:#x} is outside guest memory ({size:#x} bytes)")]
pub struct OutOfBounds {
    /// Guest-physical address of the access.
    pub gpa: u64,
    /// Length of the access.
    pub len: u64,
    /// Size of guest memory.
    pub size: u64,
}

/// Guest-physical memory, identity-mapped from address 0.
#[derive(Debug)]
pub struct GuestMemory {
    map: Mmap,
}

impl GuestMemory {
    /// Maps `size` bytes of zeroed anonymous memory (rounded up to 4 KiB).
    pub fn new(size: u64) -> std::io::Result<Self> {
        let size = usize::try_from(size)
            .ok()
            .and_then(|s| s.checked_next_multiple_of(4096))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        Ok(Self {
            map: Mmap::anonymous(size)?,
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.map.size() as u64
    }

    /// Host address of guest address 0 (for `KVM_SET_USER_MEMORY_REGION`).
    pub fn host_addr(&self) -> u64 {
        self.map.addr() as u64
    }

    fn range(&self, gpa: u64, len: u64) -> Result<Range<usize>, OutOfBounds> {
        let size = self.size();
        let oob = OutOfBounds { gpa, len, size };
        let end = gpa.checked_add(len).ok_or(oob)?;
        if end > size {
            return Err(oob);
        }
        // Both fit in usize because they are at most `size`, which came from a usize.
        let start = usize::try_from(gpa).map_err(|_| oob)?;
        let end = usize::try_from(end).map_err(|_| oob)?;
        Ok(start..end)
    }

    /// The bytes `gpa..gpa+len`.
    pub fn slice(&self, gpa: u64, len: u64) -> Result<&[u8], OutOfBounds> {
        let r = self.range(gpa, len)?;
        Ok(&self.map.as_slice()[r])
    }

    /// The bytes `gpa..gpa+len`, writable.
    pub fn slice_mut(&mut self, gpa: u64, len: u64) -> Result<&mut [u8], OutOfBounds> {
        let r = self.range(gpa, len)?;
        Ok(&mut self.map.as_mut_slice()[r])
    }

    /// Copies `bytes` to `gpa`.
    pub fn write(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), OutOfBounds> {
        self.slice_mut(gpa, bytes.len() as u64)?
            .copy_from_slice(bytes);
        Ok(())
    }

    /// Decodes an ABI struct at `gpa`.
    pub fn read_obj<T: Wire>(&self, gpa: u64) -> Result<T, OutOfBounds> {
        let bytes = self.slice(gpa, T::SIZE as u64)?;
        // `bytes` has exactly T::SIZE bytes, so decoding cannot fail.
        T::decode(bytes).ok_or(OutOfBounds {
            gpa,
            len: T::SIZE as u64,
            size: self.size(),
        })
    }

    /// Encodes an ABI struct at `gpa`.
    pub fn write_obj<T: Wire>(&mut self, gpa: u64, obj: &T) -> Result<(), OutOfBounds> {
        let size = self.size();
        let out = self.slice_mut(gpa, T::SIZE as u64)?;
        if obj.encode(out) {
            Ok(())
        } else {
            Err(OutOfBounds {
                gpa,
                len: T::SIZE as u64,
                size,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let mut m = GuestMemory::new(8192).unwrap();
        assert_eq!(m.size(), 8192);
        assert!(m.slice(0, 8192).is_ok());
        assert!(m.slice(8191, 1).is_ok());
        assert!(m.slice(8192, 0).is_ok());
        assert!(m.slice(8192, 1).is_err());
        assert!(m.slice(1, 8192).is_err());
        assert!(m.slice(u64::MAX, 2).is_err());
        assert!(m.slice(2, u64::MAX).is_err());
        assert!(m.slice_mut(u64::MAX - 1, 1).is_err());
        m.write(100, b"abc").unwrap();
        assert_eq!(m.slice(100, 3).unwrap(), b"abc");
        assert!(m.write(8190, b"abc").is_err());
        let h = hvt_abi::Halt { code: 9 };
        m.write_obj(8, &h).unwrap();
        assert_eq!(m.read_obj::<hvt_abi::Halt>(8).unwrap(), h);
        assert!(m.read_obj::<hvt_abi::BootInfo>(8190).is_err());
    }

    #[test]
    fn size_rounds_up() {
        assert_eq!(GuestMemory::new(1).unwrap().size(), 4096);
        assert!(GuestMemory::new(u64::MAX).is_err());
    }
}
