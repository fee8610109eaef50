//! virga's A/B update core: what a release is, how it is verified, how the slot state moves,
//! when to reboot, and the fleet's reboot lock.
//!
//! Pipeline position: after the image builder. `virga release` (host) turns a built disk's
//! parts into a signed channel manifest and a payload in a static repository; the guest's update
//! agent (part of the one guest binary) fetches the manifest, verifies it, streams the payload
//! into the inactive slot chunk by verified chunk, reads it back, arms the slot in GRUB's
//! environment block, and reboots according to policy; GRUB boots the new slot once, and the
//! guest marks it good or the next reset falls back. Formats and protocols:
//! `docs/updates.md`.
//!
//! Sans-IO cores (time and randomness are inputs; no I/O):
//! - [`version`]: `DAYS.MINOR.PATCH` since the 2026-01-01 epoch, channels.
//! - [`keys`], [`envelope`]: ed25519 keys, trusted key sets and their rotation, signed JSON.
//! - [`manifest`]: the signed channel manifest and every check made on it.
//! - [`payload`]: the payload container, the streaming chunk verifier and read-back checks.
//! - [`verity`]: dm-verity root hash by streaming, hash device for release checks.
//! - [`grubenv`], [`slots`]: GRUB's environment block and the A/B transitions.
//! - [`reboot`], [`semaphore`], [`backoff`]: reboot strategies and windows, the locksmith-style
//!   semaphore as etcd transactions, retry delays.
//! - [`config`], [`status`]: the `virga.update:` cloud-config section, persisted agent state
//!   and `virga update status --json`.
//!
//! Thin blocking drivers (cargo features, on by default; plain HTTP through `ureq`, no TLS, no
//! async runtime, no gRPC):
//! - `http` → [`fetch`]: manifests and payloads with `Range` resume, bounded memory and time.
//! - `etcd` → [`etcd`]: the reboot semaphore through etcd's v3 JSON gateway.
//!
//! Every parser of fetched bytes is total and bounded (fuzz targets `update_*` in `fuzz/`).

pub mod backoff;
pub mod config;
pub mod envelope;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "http")]
pub mod fetch;
pub mod grubenv;
pub mod keys;
pub mod manifest;
pub mod payload;
pub mod reboot;
pub mod semaphore;
pub mod slots;
pub mod status;
pub mod time;
pub mod verity;
pub mod version;

pub use keys::{KeyId, KeySet, PublicKey, SecretKey};
pub use manifest::{CheckContext, ManifestBody, ManifestError, Outcome, VerifiedManifest};
pub use payload::{PayloadError, ReadbackChecker, SegmentKind, Sink, StreamVerifier};
pub use time::Timestamp;
pub use version::{Channel, Version};
