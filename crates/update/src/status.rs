//! What the update agent keeps on the state partition and reports in
//! `virga update status --json`: the contract between the agent and its users.
//!
//! The agent persists an [`AgentState`] (`/var/lib/virga/update/state.json`, written
//! temp + fsync + rename) and prints an [`UpdateStatus`]. Both are plain serde types; readers
//! must tolerate unknown fields (new ones are added, never repurposed).

use serde::{Deserialize, Serialize};

use crate::reboot::RebootAction;
use crate::slots::{BootMode, OtherSlot, Slot};
use crate::time::Timestamp;
use crate::version::{Channel, Version};

/// Largest state file read back.
pub const MAX_STATE: usize = 256 * 1024;

/// What a slot holds, as recorded when it was installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    /// Release installed.
    pub version: Version,
    /// Its dm-verity root hash, hex (ties the record to the slot's content: the running
    /// version is only trusted when this equals the booted `image.json` root hash).
    pub root_hash: String,
    /// When it was armed.
    pub installed: Timestamp,
}

/// A download in progress (resume after a restart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadRecord {
    /// Release being installed.
    pub version: Version,
    /// Slot being written.
    pub slot: Slot,
    /// SHA-256 of the payload (a different manifest restarts from zero).
    pub payload_sha256: String,
    /// Chunks verified and written (re-check them by reading back before trusting).
    pub chunks_done: usize,
}

/// A slot given up at boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackRecord {
    /// When it was noticed.
    pub at: Timestamp,
    /// The abandoned slot.
    pub slot: Slot,
    /// The release it held, if recorded.
    pub version: Option<Version>,
    /// Why (the slot machine's reason, plus what the failed boot recorded).
    pub reason: String,
}

/// A held reboot-lock slot (kept across the reboot so the updated machine can release it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// etcd lease id.
    pub lease: i64,
    /// Holder id.
    pub holder: String,
    /// Lock group.
    pub group: String,
    /// etcd revision of the acquiring transaction.
    pub revision: i64,
}

/// The agent's persistent state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentState {
    /// Per slot (A, B): what was installed there.
    pub slots: [Option<SlotRecord>; 2],
    /// An unfinished download.
    pub download: Option<DownloadRecord>,
    /// The last rollback.
    pub rollback: Option<RollbackRecord>,
    /// A held reboot lock.
    pub lock: Option<LockRecord>,
    /// The last check.
    pub last_check: Option<Timestamp>,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
    /// What a failing try boot managed to record before resetting (e.g. "dm-verity: /usr
    /// failed to open"), folded into the next rollback's reason.
    pub failed_boot_note: Option<String>,
}

impl AgentState {
    /// Reads a state file; a damaged one is reported, not trusted.
    pub fn parse(bytes: &[u8]) -> Result<AgentState, String> {
        crate::envelope::check_shape(bytes, MAX_STATE).map_err(|e| e.to_string())?;
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }

    /// The file's bytes.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// Where the agent is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// No `virga.update.url`, or a one-slot image.
    Disabled,
    /// Nothing to do.
    Idle,
    /// Fetching and verifying a manifest.
    Checking,
    /// Writing the inactive slot.
    Downloading,
    /// Reading back what was written.
    Verifying,
    /// Armed; the reboot strategy decides when.
    RebootPending,
    /// Waiting for a reboot-lock slot.
    WaitingForLock,
    /// Rebooting.
    Rebooting,
    /// A try boot waiting for its health check.
    Trying,
}

/// `virga update status --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// Phase.
    pub phase: Phase,
    /// The running release (`None`: unknown, e.g. a factory image).
    pub version: Option<Version>,
    /// Booted slot.
    pub slot: Option<Slot>,
    /// How it was booted.
    pub boot: Option<BootMode>,
    /// The other slot.
    pub other_slot: Option<OtherSlot>,
    /// Channel followed.
    pub channel: Channel,
    /// Reboot strategy name.
    pub strategy: String,
    /// A newer release seen at the last check.
    pub available: Option<Version>,
    /// Bytes of the payload verified and written, and its size.
    pub progress: Option<(u64, u64)>,
    /// The next reboot action, when armed.
    pub reboot: Option<RebootAction>,
    /// The last check.
    pub last_check: Option<Timestamp>,
    /// The last error.
    pub last_error: Option<String>,
    /// The last rollback, with its reason.
    pub rollback: Option<RollbackRecord>,
    /// A held reboot-lock slot.
    pub lock: Option<LockRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip_and_bounds() {
        let s = AgentState {
            slots: [
                Some(SlotRecord {
                    version: Version::new(340, 0, 0),
                    root_hash: "ab".repeat(32),
                    installed: Timestamp(1_800_000_000),
                }),
                None,
            ],
            rollback: Some(RollbackRecord {
                at: Timestamp(1_800_000_100),
                slot: Slot::B,
                version: Some(Version::new(341, 0, 0)),
                reason: "never marked good".into(),
            }),
            ..AgentState::default()
        };
        assert_eq!(AgentState::parse(&s.to_json()).unwrap(), s);
        assert_eq!(AgentState::parse(b"{}").unwrap(), AgentState::default());
        assert!(AgentState::parse(b"{\"slots\": 5}").is_err());
        assert!(AgentState::parse(&[b'['; 100]).is_err());
    }
}
