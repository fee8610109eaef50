//! The signed channel manifest: what a release is, where its payload is, and the hash of every
//! chunk of it.
//!
//! A manifest is a signed envelope ([`crate::envelope`], context
//! [`crate::envelope::MANIFEST_CONTEXT`]) around a [`ManifestBody`]. [`check`] takes the bytes
//! as fetched and, in this order: caps the size ([`MAX_MANIFEST`]) and nesting, verifies the
//! signature against the trusted [`KeySet`] (an empty set is an error), only then parses the
//! body (unknown fields refused), checks it is self-consistent ([`ManifestBody::validate`]),
//! that it is for the channel asked for, that the clock is plausible, that it has not expired,
//! and that its version is newer than the running one (a downgrade only with
//! `allow_downgrade`).
//!
//! **Clock.** Expiry needs a trustworthy clock, and a guest's may be wrong. A manifest is
//! refused when the clock reads earlier than the running version's release day (a system
//! running `340.0.0` cannot be living before 2026-12-07: e.g. a clock at 1970 after a dead
//! RTC), or earlier than the manifest's `issued` time by more than [`MAX_CLOCK_SKEW`]. It is
//! expired once the clock passes `expires` by more than [`MAX_CLOCK_SKEW`]. Both refusals say
//! what the clock reads and what it should at least read.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::envelope::{self, MANIFEST_CONTEXT, SignatureError};
use crate::keys::{KeyId, KeySet};
use crate::payload::{self, SegmentKind};
use crate::time::Timestamp;
use crate::verity;
use crate::version::{Channel, Version};

/// Largest manifest accepted.
pub const MAX_MANIFEST: usize = envelope::MAX_DOCUMENT;
/// How far the guest's clock may be off in either direction before expiry decisions change:
/// 10 minutes (guests without NTP drift; a manifest stays valid this long past `expires`).
pub const MAX_CLOCK_SKEW: i64 = 600;
/// The manifest format this code reads and writes.
pub const FORMAT: u32 = 1;
/// Largest segment (16 GiB).
pub const MAX_SEGMENT: u64 = 16 << 30;
/// Most chunks in a payload.
pub const MAX_CHUNKS: usize = 1 << 16;
/// Smallest and largest chunk size; a power of two.
pub const CHUNK_SIZES: (u32, u32) = (64 << 10, 4 << 20);
/// The chunk size `virga release` uses: 1 MiB.
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;

/// 32 bytes written as 64 lowercase hex digits (SHA-256 digests, root hashes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hex32(pub [u8; 32]);

impl fmt::Display for Hex32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Hex32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl FromStr for Hex32 {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.len() != 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!(
                "{:?} is not 64 lowercase hex digits",
                s.chars().take(80).collect::<String>()
            ));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| e.to_string())?;
        Ok(Hex32(out))
    }
}

impl Serialize for Hex32 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Hex32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The signed part of a channel manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestBody {
    /// [`FORMAT`].
    pub format: u32,
    /// The release channel this manifest was published to (`alpha`, `beta`, `stable`).
    pub channel: String,
    /// The release.
    pub version: Version,
    /// When it was signed.
    pub issued: Timestamp,
    /// After this (plus [`MAX_CLOCK_SKEW`]) it is refused.
    pub expires: Timestamp,
    /// The slot's verified filesystem.
    pub system: SystemInfo,
    /// The payload file.
    pub payload: PayloadInfo,
    /// The payload's segments in payload order, with every chunk's hash.
    pub segments: Vec<SegmentInfo>,
}

/// The slot's read-only filesystem and its dm-verity parameters (as in the image's
/// `image.json` `system` field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemInfo {
    /// `squashfs` or `erofs`.
    pub filesystem: String,
    /// dm-verity root hash (format 1, sha256).
    pub root_hash: Hex32,
    /// Salt, hex (at most 256 bytes).
    pub salt: String,
    /// Data blocks the tree covers (the `usr` segment is exactly this many blocks).
    pub data_blocks: u64,
    /// Data and hash block size: 4096.
    pub block_size: u32,
    /// Offset of the tree in the `usr-verity` segment: 4096 (after the superblock).
    pub hash_offset: u64,
}

impl SystemInfo {
    /// The salt's bytes.
    pub fn salt_bytes(&self) -> Vec<u8> {
        hex::decode(&self.salt).unwrap_or_default()
    }
}

/// Where the payload is and how it is cut into chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadInfo {
    /// Path relative to the repository root (`payloads/340.0.0.bin`): letters, digits,
    /// `._-/`, no `..`, no leading `/`, so it can only name a file on the same server.
    pub path: String,
    /// Total bytes.
    pub size: u64,
    /// SHA-256 of the whole file (for mirrors and `sha256sum`; the guest checks chunks).
    pub sha256: Hex32,
    /// Chunk size: a power of two between 64 KiB and 4 MiB.
    pub chunk_size: u32,
    /// The header (the payload's first bytes; its own chunk).
    pub header: HeaderInfo,
}

/// The payload header's size and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderInfo {
    /// Bytes.
    pub size: u32,
    /// SHA-256.
    pub sha256: Hex32,
}

/// One segment of the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentInfo {
    /// What it is and where it goes.
    pub kind: SegmentKind,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the whole segment (checked again when reading back what was written).
    pub sha256: Hex32,
    /// SHA-256 of each `chunk_size` piece (the last may be shorter).
    pub chunks: Vec<Hex32>,
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Signature, size or envelope problem.
    #[error("manifest signature: {0}")]
    Signature(#[from] SignatureError),
    /// The signed body is not a manifest.
    #[error("manifest body: {0}")]
    Body(String),
    /// The body contradicts itself.
    #[error("inconsistent manifest: {0}")]
    Invalid(String),
    /// For another channel than the one asked for.
    #[error(
        "manifest is for channel {got:?}, not {want}: refusing a manifest served for the wrong channel"
    )]
    WrongChannel {
        /// Asked for.
        want: Channel,
        /// In the manifest.
        got: String,
    },
    /// A pin asked for one version, the manifest is for another.
    #[error("pinned to {want}, but the manifest is for {got}")]
    WrongVersion {
        /// Pinned.
        want: Version,
        /// In the manifest.
        got: Version,
    },
    /// The clock is not plausible.
    #[error(
        "the clock reads {now}, before {floor} ({why}); set the clock (NTP or the RTC): manifest expiry cannot be checked with this time"
    )]
    ClockWrong {
        /// What the clock says.
        now: Timestamp,
        /// The earliest plausible time.
        floor: Timestamp,
        /// Where the floor comes from.
        why: String,
    },
    /// Expired.
    #[error(
        "manifest for {version} expired at {expires} (clock reads {now}, {skew} s skew allowed); the repository must re-sign it"
    )]
    Expired {
        /// The release.
        version: Version,
        /// Its expiry.
        expires: Timestamp,
        /// The clock.
        now: Timestamp,
        /// Allowed skew in seconds.
        skew: i64,
    },
    /// Older than the running system.
    #[error(
        "manifest offers {offered}, older than the running {running}: a downgrade needs allow_downgrade"
    )]
    Downgrade {
        /// Running.
        running: Version,
        /// Offered.
        offered: Version,
    },
}

fn invalid(m: impl Into<String>) -> ManifestError {
    ManifestError::Invalid(m.into())
}

/// Is `p` a safe repository-relative path?
pub fn safe_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 256
        && !p.starts_with('/')
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
        && p.split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

impl ManifestBody {
    /// Parses the signed body (after [`envelope::verify`]; use [`check`] for fetched bytes).
    pub fn from_json(signed: &[u8]) -> Result<ManifestBody, ManifestError> {
        envelope::check_shape(signed, MAX_MANIFEST)?;
        serde_json::from_slice(signed).map_err(|e| ManifestError::Body(e.to_string()))
    }

    /// Checks that the body is self-consistent: known format and channel name, expiry after
    /// issue, safe payload path, chunk size, the four segments in order with sizes that add up
    /// to the payload, one hash per chunk, verity geometry matching the `usr` and
    /// `usr-verity` segments, and the header size for four segments.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.format != FORMAT {
            return Err(invalid(format!(
                "format {} (this agent reads {FORMAT})",
                self.format
            )));
        }
        if !Channel::RELEASE
            .iter()
            .any(|c| c.release_name() == Some(self.channel.as_str()))
        {
            return Err(invalid(format!("channel {:?}", self.channel)));
        }
        if self.expires <= self.issued {
            return Err(invalid("expires is not after issued"));
        }
        let p = &self.payload;
        if !safe_path(&p.path) {
            return Err(invalid(format!("payload path {:?}", p.path)));
        }
        if !p.chunk_size.is_power_of_two()
            || p.chunk_size < CHUNK_SIZES.0
            || p.chunk_size > CHUNK_SIZES.1
        {
            return Err(invalid(format!("chunk size {}", p.chunk_size)));
        }
        let kinds: Vec<SegmentKind> = self.segments.iter().map(|s| s.kind).collect();
        if kinds != SegmentKind::ALL {
            return Err(invalid(format!(
                "segments {kinds:?}; expected {:?}",
                SegmentKind::ALL
            )));
        }
        if p.header.size as usize != payload::header_len(self.segments.len()) {
            return Err(invalid(format!("header size {}", p.header.size)));
        }
        let mut total = u64::from(p.header.size);
        let mut chunks = 1usize;
        for s in &self.segments {
            if s.size == 0 || s.size > MAX_SEGMENT {
                return Err(invalid(format!("{} segment size {}", s.kind, s.size)));
            }
            let n = s.size.div_ceil(u64::from(p.chunk_size));
            if s.chunks.len() as u64 != n {
                return Err(invalid(format!(
                    "{} segment has {} chunk hashes for {} chunks",
                    s.kind,
                    s.chunks.len(),
                    n
                )));
            }
            chunks += s.chunks.len();
            total += s.size;
        }
        if chunks > MAX_CHUNKS {
            return Err(invalid(format!("{chunks} chunks (at most {MAX_CHUNKS})")));
        }
        if total != p.size {
            return Err(invalid(format!(
                "payload size {} is not header + segments = {total}",
                p.size
            )));
        }
        let sys = &self.system;
        if sys.filesystem != "squashfs" && sys.filesystem != "erofs" {
            return Err(invalid(format!("filesystem {:?}", sys.filesystem)));
        }
        if sys.block_size != verity::BLOCK_SIZE as u32 || sys.hash_offset != verity::BLOCK_SIZE {
            return Err(invalid("verity block size and hash offset must be 4096"));
        }
        if sys.salt.len() > 512
            || !sys.salt.len().is_multiple_of(2)
            || hex::decode(&sys.salt).is_err()
            || sys.salt.bytes().any(|b| b.is_ascii_uppercase())
        {
            return Err(invalid(
                "verity salt is not lowercase hex of at most 256 bytes",
            ));
        }
        let usr = &self.segments[0];
        if sys.data_blocks == 0 || Some(usr.size) != sys.data_blocks.checked_mul(verity::BLOCK_SIZE)
        {
            return Err(invalid(format!(
                "usr segment is {} bytes, not data_blocks × 4096 = {} × 4096",
                usr.size, sys.data_blocks
            )));
        }
        let hash = &self.segments[1];
        if hash.size != verity::hash_device_size(sys.data_blocks) {
            return Err(invalid(format!(
                "usr-verity segment is {} bytes; a tree over {} blocks needs {}",
                hash.size,
                sys.data_blocks,
                verity::hash_device_size(sys.data_blocks)
            )));
        }
        Ok(())
    }

    /// The segment of this kind.
    pub fn segment(&self, kind: SegmentKind) -> Option<&SegmentInfo> {
        self.segments.iter().find(|s| s.kind == kind)
    }
}

/// A manifest whose signature, consistency, channel, clock and expiry checked out. Only
/// [`check`] makes one; the payload verifier takes nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedManifest {
    body: ManifestBody,
    key: KeyId,
}

impl VerifiedManifest {
    /// The manifest.
    pub fn body(&self) -> &ManifestBody {
        &self.body
    }

    /// The release.
    pub fn version(&self) -> Version {
        self.body.version
    }

    /// The trusted key that signed it.
    pub fn signed_by(&self) -> KeyId {
        self.key
    }
}

/// What the machine asks for, and what it knows.
#[derive(Debug, Clone)]
pub struct CheckContext<'a> {
    /// Trusted keys (empty: every check fails).
    pub keys: &'a KeySet,
    /// The channel the manifest was fetched for.
    pub channel: Channel,
    /// The running system's version (`0.0.0` when unknown).
    pub running: Version,
    /// The clock.
    pub now: Timestamp,
    /// Accept an older version than the running one.
    pub allow_downgrade: bool,
}

/// What a valid manifest means for this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It offers the running version.
    UpToDate(VerifiedManifest),
    /// It offers another version to install (`downgrade`: older, and allowed).
    Update {
        /// The manifest.
        manifest: VerifiedManifest,
        /// Older than the running version.
        downgrade: bool,
    },
}

/// Checks fetched manifest bytes for this machine (see the module documentation for the
/// order of checks).
pub fn check(bytes: &[u8], ctx: &CheckContext<'_>) -> Result<Outcome, ManifestError> {
    let v = envelope::verify(bytes, MANIFEST_CONTEXT, ctx.keys, MAX_MANIFEST)?;
    let body = ManifestBody::from_json(v.signed)?;
    body.validate()?;
    match ctx.channel {
        Channel::Pin(want) => {
            if body.version != want {
                return Err(ManifestError::WrongVersion {
                    want,
                    got: body.version,
                });
            }
        }
        c => {
            if c.release_name() != Some(body.channel.as_str()) {
                return Err(ManifestError::WrongChannel {
                    want: c,
                    got: body.channel.chars().take(40).collect(),
                });
            }
        }
    }
    check_clock(&body, ctx)?;
    let manifest = VerifiedManifest { body, key: v.key };
    let offered = manifest.version();
    Ok(match offered.cmp(&ctx.running) {
        std::cmp::Ordering::Equal => Outcome::UpToDate(manifest),
        std::cmp::Ordering::Greater => Outcome::Update {
            manifest,
            downgrade: false,
        },
        std::cmp::Ordering::Less if ctx.allow_downgrade => Outcome::Update {
            manifest,
            downgrade: true,
        },
        std::cmp::Ordering::Less => {
            return Err(ManifestError::Downgrade {
                running: ctx.running,
                offered,
            });
        }
    })
}

fn check_clock(body: &ManifestBody, ctx: &CheckContext<'_>) -> Result<(), ManifestError> {
    let now = ctx.now;
    let epoch = crate::version::EPOCH.midnight();
    let running_day = ctx.running.release_day();
    let (floor, why) = if running_day > epoch {
        (
            running_day,
            format!("the running version {} was released that day", ctx.running),
        )
    } else {
        (epoch, "virga's version epoch".to_owned())
    };
    if now.plus(MAX_CLOCK_SKEW) < floor {
        return Err(ManifestError::ClockWrong { now, floor, why });
    }
    if now.plus(MAX_CLOCK_SKEW) < body.issued {
        return Err(ManifestError::ClockWrong {
            now,
            floor: body.issued,
            why: format!(
                "the manifest for {} was signed then; the clock is behind by more than {MAX_CLOCK_SKEW} s",
                body.version
            ),
        });
    }
    if now > body.expires.plus(MAX_CLOCK_SKEW) {
        return Err(ManifestError::Expired {
            version: body.version,
            expires: body.expires,
            now,
            skew: MAX_CLOCK_SKEW,
        });
    }
    Ok(())
}

/// Signs a manifest body (host side). The body is validated first.
pub fn sign(body: &ManifestBody, key: &crate::keys::SecretKey) -> Result<Vec<u8>, ManifestError> {
    body.validate()?;
    let signed = serde_json::to_vec_pretty(body).map_err(|e| ManifestError::Body(e.to_string()))?;
    Ok(envelope::seal(&signed, MANIFEST_CONTEXT, &[key]))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::keys::SecretKey;
    use crate::payload::{PayloadBuilder, SegmentKind};

    /// A small valid release: segments of a few blocks, 64 KiB chunks.
    pub(crate) fn release(version: Version) -> (ManifestBody, Vec<u8>) {
        let data: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 251) as u8).collect();
        let salt = [9u8; 32];
        let tree = verity::build_hash_device(&data, &salt, [1; 16]);
        let kernel: Vec<u8> = (0..70_000u32).map(|i| (i % 13) as u8).collect();
        let initrd = vec![5u8; 1000];
        let mut b = PayloadBuilder::new(version, tree.root_hash, CHUNK_SIZES.0);
        b.segment(SegmentKind::Usr, data.clone());
        b.segment(SegmentKind::UsrVerity, tree.device.clone());
        b.segment(SegmentKind::Kernel, kernel);
        b.segment(SegmentKind::Initramfs, initrd);
        let (payload, info, segments) = b.build(&format!("payloads/{version}.bin"));
        let body = ManifestBody {
            format: FORMAT,
            channel: "stable".into(),
            version,
            issued: "2026-12-07T00:00:00Z".parse().unwrap(),
            expires: "2027-01-07T00:00:00Z".parse().unwrap(),
            system: SystemInfo {
                filesystem: "squashfs".into(),
                root_hash: Hex32(tree.root_hash),
                salt: hex::encode(salt),
                data_blocks: 3,
                block_size: 4096,
                hash_offset: 4096,
            },
            payload: info,
            segments,
        };
        body.validate().unwrap();
        (body, payload)
    }

    fn ctx(keys: &KeySet) -> CheckContext<'_> {
        CheckContext {
            keys,
            channel: Channel::Stable,
            running: Version::new(300, 0, 0),
            now: "2026-12-08T00:00:00Z".parse().unwrap(),
            allow_downgrade: false,
        }
    }

    #[test]
    fn a_good_manifest_passes() {
        let k = SecretKey::from_seed([1; 32]);
        let keys = KeySet::new(1, vec![k.public()]).unwrap();
        let (body, _) = release(Version::new(340, 0, 0));
        let doc = sign(&body, &k).unwrap();
        match check(&doc, &ctx(&keys)).unwrap() {
            Outcome::Update {
                manifest,
                downgrade,
            } => {
                assert!(!downgrade);
                assert_eq!(manifest.body(), &body);
                assert_eq!(manifest.signed_by(), k.id());
            }
            other => panic!("{other:?}"),
        }
        let mut c = ctx(&keys);
        c.running = Version::new(340, 0, 0);
        assert!(matches!(check(&doc, &c).unwrap(), Outcome::UpToDate(_)));
    }

    #[test]
    fn policy_refusals() {
        let k = SecretKey::from_seed([1; 32]);
        let keys = KeySet::new(1, vec![k.public()]).unwrap();
        let (body, _) = release(Version::new(340, 0, 0));
        let doc = sign(&body, &k).unwrap();

        let mut c = ctx(&keys);
        c.running = Version::new(341, 0, 0);
        let e = check(&doc, &c).unwrap_err();
        assert!(matches!(e, ManifestError::Downgrade { .. }), "{e}");
        c.allow_downgrade = true;
        assert!(matches!(
            check(&doc, &c).unwrap(),
            Outcome::Update {
                downgrade: true,
                ..
            }
        ));

        let mut c = ctx(&keys);
        c.channel = Channel::Beta;
        assert!(matches!(
            check(&doc, &c),
            Err(ManifestError::WrongChannel { .. })
        ));
        c.channel = Channel::Pin(Version::new(340, 0, 0));
        assert!(check(&doc, &c).is_ok());
        c.channel = Channel::Pin(Version::new(340, 0, 1));
        assert!(matches!(
            check(&doc, &c),
            Err(ManifestError::WrongVersion { .. })
        ));

        // Expiry with skew.
        let mut c = ctx(&keys);
        c.now = "2027-01-07T00:09:59Z".parse().unwrap();
        assert!(check(&doc, &c).is_ok(), "within the skew allowance");
        c.now = "2027-01-07T00:10:01Z".parse().unwrap();
        let e = check(&doc, &c).unwrap_err();
        assert!(matches!(e, ManifestError::Expired { .. }), "{e}");
        assert!(e.to_string().contains("expired at 2027-01-07T00:00:00Z"));

        // A clock in 1970.
        let mut c = ctx(&keys);
        c.now = Timestamp(5);
        let e = check(&doc, &c).unwrap_err();
        assert!(matches!(e, ManifestError::ClockWrong { .. }), "{e}");
        assert!(e.to_string().contains("1970-01-01T00:00:05Z"), "{e}");
        // A clock before the running version's day (but after the epoch).
        let mut c = ctx(&keys);
        c.now = "2026-06-01T00:00:00Z".parse().unwrap();
        let e = check(&doc, &c).unwrap_err();
        assert!(e.to_string().contains("running version 300.0.0"), "{e}");
        // A clock behind the manifest's issue time.
        let mut c = ctx(&keys);
        c.running = Version::new(1, 0, 0);
        c.now = "2026-12-06T23:00:00Z".parse().unwrap();
        let e = check(&doc, &c).unwrap_err();
        assert!(e.to_string().contains("clock is behind"), "{e}");
    }

    #[test]
    fn inconsistent_bodies_are_refused() {
        let (body, _) = release(Version::new(340, 0, 0));
        type Edit = Box<dyn Fn(&mut ManifestBody)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("format", Box::new(|b| b.format = 2)),
            ("channel", Box::new(|b| b.channel = "lts".into())),
            ("expiry", Box::new(|b| b.expires = b.issued)),
            ("path", Box::new(|b| b.payload.path = "../x".into())),
            (
                "abs path",
                Box::new(|b| b.payload.path = "/etc/passwd".into()),
            ),
            ("url", Box::new(|b| b.payload.path = "http://evil/x".into())),
            ("chunk", Box::new(|b| b.payload.chunk_size = 1000)),
            ("size", Box::new(|b| b.payload.size += 1)),
            (
                "chunks",
                Box::new(|b| {
                    b.segments[2].chunks.pop();
                }),
            ),
            ("order", Box::new(|b| b.segments.swap(2, 3))),
            (
                "missing",
                Box::new(|b| {
                    b.segments.pop();
                }),
            ),
            ("blocks", Box::new(|b| b.system.data_blocks = 4)),
            ("fs", Box::new(|b| b.system.filesystem = "ext4".into())),
            ("salt", Box::new(|b| b.system.salt = "XYZ".into())),
            ("header", Box::new(|b| b.payload.header.size += 1)),
        ];
        for (name, f) in cases {
            let mut b = body.clone();
            f(&mut b);
            assert!(b.validate().is_err(), "{name}");
        }
    }

    #[test]
    fn body_parse_is_strict() {
        let (body, _) = release(Version::new(340, 0, 0));
        let mut v = serde_json::to_value(&body).unwrap();
        v["extra"] = serde_json::json!(1);
        assert!(ManifestBody::from_json(v.to_string().as_bytes()).is_err());
        let mut v = serde_json::to_value(&body).unwrap();
        v["system"]["root_hash"] = serde_json::json!("ABCDEF");
        assert!(ManifestBody::from_json(v.to_string().as_bytes()).is_err());
        assert!(ManifestBody::from_json(b"{}").is_err());
        assert!(ManifestBody::from_json(&[0xff; 10]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn check_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let k = SecretKey::from_seed([1; 32]);
            let keys = KeySet::new(1, vec![k.public()]).unwrap();
            let _ = check(&bytes, &ctx(&keys));
            let _ = ManifestBody::from_json(&bytes).map(|b| b.validate());
        }

        #[test]
        fn flipping_any_signed_byte_is_refused(at in 0usize..4096, bit in 0u8..8) {
            let k = SecretKey::from_seed([1; 32]);
            let keys = KeySet::new(1, vec![k.public()]).unwrap();
            let (body, _) = release(Version::new(340, 0, 0));
            let mut doc = sign(&body, &k).unwrap();
            let start = doc.windows(10).position(|w| w == b"\"signed\": ").unwrap() + 10;
            let end = doc.windows(14).position(|w| w == b",\n\"signatures\"").unwrap();
            let i = start + at % (end - start);
            doc[i] ^= 1 << bit;
            proptest::prop_assert!(check(&doc, &ctx(&keys)).is_err());
        }
    }
}
