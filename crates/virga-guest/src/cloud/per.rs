//! Run-frequency semaphores (`per-boot`, `per-instance`, `per-once`), CirrOS's `cirros-per`.
//!
//! Markers live in `/var/lib/virga/sem` when the state disk is mounted (they survive reboots),
//! else in `/run/virga/sem` (every boot is then a first boot, which is the truth for a machine
//! that remembers nothing). A marker is written whatever the command's exit status, as CirrOS
//! does, so a failing per-instance script is not retried at every boot.

use std::path::PathBuf;

use cloud_metadata::frequency::{Decision, Frequency, RunContext, decide, semaphore_dir};

/// Why a frequency could not be decided or recorded.
#[derive(Debug, thiserror::Error)]
pub enum PerError {
    /// A name that cannot be a marker (path separators, `..`).
    #[error(transparent)]
    Name(#[from] cloud_metadata::MetadataError),
    /// The marker could not be written.
    #[error("{}: {source}", path.display())]
    Marker {
        /// The marker file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Where markers are kept and which instance/boot they belong to.
#[derive(Debug, Clone)]
pub struct Semaphores {
    dir: PathBuf,
    instance_id: String,
    boot_id: String,
}

impl Semaphores {
    /// Semaphores for this instance and boot.
    pub fn new(persistent: bool, instance_id: &str) -> Self {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown-boot".into());
        Self {
            dir: PathBuf::from(semaphore_dir(persistent)),
            instance_id: instance_id.to_owned(),
            boot_id,
        }
    }

    /// With an explicit directory (tests, and the `per` applet's `--dir`).
    #[cfg(test)]
    pub fn in_dir(dir: PathBuf, instance_id: &str, boot_id: &str) -> Self {
        Self {
            dir,
            instance_id: instance_id.into(),
            boot_id: boot_id.into(),
        }
    }

    /// Runs `f` unless `name` already ran at this frequency; records the marker afterwards.
    /// Returns `None` when skipped, else `f`'s result.
    pub fn run<T>(
        &self,
        freq: Frequency,
        name: &str,
        f: impl FnOnce() -> T,
    ) -> Result<Option<T>, PerError> {
        let ctx = RunContext {
            instance_id: &self.instance_id,
            boot_id: &self.boot_id,
        };
        let decision = decide(freq, name, &ctx, |m| self.dir.join(m).exists())?;
        match decision {
            Decision::Skip { .. } => Ok(None),
            Decision::Run { marker } => {
                let out = f();
                if let Some(m) = marker {
                    // Durable: a marker lost to a power cut would run a per-instance script
                    // twice.
                    let path = self.dir.join(&m);
                    crate::fsutil::write_atomic(&path.to_string_lossy(), b"", 0o600, false)
                        .map_err(|source| PerError::Marker { path, source })?;
                }
                Ok(Some(out))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_instance_runs_once_per_instance_id() {
        let d = tempfile::tempdir().unwrap();
        let a = Semaphores::in_dir(d.path().into(), "i-1", "boot-1");
        assert_eq!(a.run(Frequency::PerInstance, "x", || 1).unwrap(), Some(1));
        let a2 = Semaphores::in_dir(d.path().into(), "i-1", "boot-2");
        assert_eq!(a2.run(Frequency::PerInstance, "x", || 2).unwrap(), None);
        let b = Semaphores::in_dir(d.path().into(), "i-2", "boot-3");
        assert_eq!(b.run(Frequency::PerInstance, "x", || 3).unwrap(), Some(3));
        assert_eq!(b.run(Frequency::PerBoot, "y", || 4).unwrap(), Some(4));
        assert_eq!(b.run(Frequency::PerBoot, "y", || 5).unwrap(), None);
        assert_eq!(b.run(Frequency::Always, "z", || 6).unwrap(), Some(6));
        assert_eq!(b.run(Frequency::Always, "z", || 7).unwrap(), Some(7));
        assert_eq!(b.run(Frequency::PerOnce, "o", || 8).unwrap(), Some(8));
        assert_eq!(a.run(Frequency::PerOnce, "o", || 9).unwrap(), None);
        assert!(b.run(Frequency::PerOnce, "../evil", || 0).is_err());
    }
}
