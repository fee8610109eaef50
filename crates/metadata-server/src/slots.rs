//! A cap on concurrent connections shared by separate processes.
//!
//! Under QEMU's `guestfwd=…-cmd:` every guest connection to the metadata address starts a new
//! `metadata-server --stdio` process ([`crate::qemu`]); nothing in QEMU limits how many. The
//! processes of one VM therefore share a directory of `N` slot files (`slot-0` … `slot-N-1`)
//! and each holds an exclusive `flock` on one of them for as long as it serves its
//! connection. A process that finds every slot taken answers `503` at once and exits, so a
//! guest flooding the address gets at most `N` connections served at a time, and the processes
//! beyond them live for milliseconds. The kernel drops a lock when its process exits however
//! it exits (crash, kill), so a slot can never leak.

use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Most slots a directory may have (a sanity bound on `--max-connections`).
pub const MAX_SLOTS: usize = 1024;

/// One held slot; the slot is free again when this is dropped or the process ends.
#[derive(Debug)]
pub struct ConnectionSlot {
    index: usize,
    _lock: File,
}

impl ConnectionSlot {
    /// Which slot (`0..max`).
    pub fn index(&self) -> usize {
        self.index
    }
}

/// Takes a free slot among `max` in `dir` (created, mode 0700, if missing). `Ok(None)`: all
/// `max` are held by other connections.
pub fn try_acquire(dir: &Path, max: usize) -> io::Result<Option<ConnectionSlot>> {
    if max == 0 || max > MAX_SLOTS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the connection limit must be between 1 and {MAX_SLOTS}"),
        ));
    }
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    for index in 0..max {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join(format!("slot-{index}")))?;
        match file.try_lock() {
            Ok(()) => {
                return Ok(Some(ConnectionSlot { index, _lock: file }));
            }
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(e),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_max_slots_are_held_and_freed_ones_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let slots = dir.path().join("slots");
        let a = try_acquire(&slots, 2).unwrap().unwrap();
        let b = try_acquire(&slots, 2).unwrap().unwrap();
        assert_ne!(a.index(), b.index());
        assert!(try_acquire(&slots, 2).unwrap().is_none());
        let freed = a.index();
        drop(a);
        let c = try_acquire(&slots, 2).unwrap().unwrap();
        assert_eq!(c.index(), freed);
        // A larger limit over the same directory sees the same two held slots.
        assert_eq!(try_acquire(&slots, 3).unwrap().unwrap().index(), 2);
        assert!(try_acquire(&slots, 0).is_err());
        assert!(try_acquire(&slots, MAX_SLOTS + 1).is_err());
    }
}
