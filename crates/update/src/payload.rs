//! The update payload: one file, a header then four segments, streamed and verified chunk by
//! chunk.
//!
//! ```text
//! offset  size  field (little-endian)
//! 0       8     magic "VIRGAUPD"
//! 8       4     format (1)
//! 12      4     header length (72 + 48 × segments)
//! 16      4     chunk size
//! 20      4     segment count (4)
//! 24      12    version: days, minor, patch (u32 each)
//! 36      4     reserved, 0
//! 40      32    dm-verity root hash of the usr segment
//! 72      48×n  per segment: kind (u32: 1 usr, 2 usr-verity, 3 kernel, 4 initramfs),
//!               flags (u32, 0: stored raw), size (u64), SHA-256 (32 bytes)
//! then          the segments' bytes, in header order, back to back
//! ```
//!
//! Segments are stored raw: the slot filesystem is squashfs-xz (or erofs-lz4hc), the kernel a
//! compressed bzImage, the initramfs zstd/gzip, the verity tree random digests, so another
//! compression layer gains nothing measurable (see `docs/updates.md`) and would cost the guest a
//! decoder. The `flags` field is where a per-segment compression would be declared.
//!
//! **Chunks.** The manifest lists the header's hash and, for each segment, the SHA-256 of every
//! `chunk_size` piece of it (the last piece may be shorter; chunks never straddle segments).
//! [`StreamVerifier`] takes the payload's bytes as they arrive, holds at most one chunk, and
//! hands a chunk to the [`Sink`] only once its hash matched, so no unverified byte is ever
//! written anywhere; the first bad chunk is an error. It can resume at any byte offset (HTTP
//! `Range`) or at a chunk index persisted across a restart.

use std::fmt;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::{HeaderInfo, Hex32, PayloadInfo, SegmentInfo, VerifiedManifest};
use crate::verity::{VerityError, VerityHasher};
use crate::version::Version;

/// Payload magic.
pub const MAGIC: &[u8; 8] = b"VIRGAUPD";
/// Payload format.
pub const FORMAT: u32 = 1;
const FIXED: usize = 72;
const PER_SEGMENT: usize = 48;
/// Most segments a header may declare.
pub const MAX_SEGMENTS: usize = 8;

/// Header length for `n` segments.
pub const fn header_len(n: usize) -> usize {
    FIXED + PER_SEGMENT * n
}

/// What a segment holds and where the guest writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SegmentKind {
    /// The slot's filesystem image → partition `usr-X`.
    Usr,
    /// Its dm-verity hash device → partition `usr-X-verity`.
    UsrVerity,
    /// The kernel → `/vmlinuz-x` on the ESP.
    Kernel,
    /// The initramfs (with the slot's `image.json`) → `/initrd-x` on the ESP.
    Initramfs,
}

impl SegmentKind {
    /// Every kind, in payload order.
    pub const ALL: [SegmentKind; 4] = [
        SegmentKind::Usr,
        SegmentKind::UsrVerity,
        SegmentKind::Kernel,
        SegmentKind::Initramfs,
    ];

    fn code(self) -> u32 {
        self as u32 + 1
    }

    fn from_code(c: u32) -> Option<SegmentKind> {
        SegmentKind::ALL
            .get(usize::try_from(c).ok()?.checked_sub(1)?)
            .copied()
    }

    /// The name used in manifests.
    pub fn name(self) -> &'static str {
        match self {
            SegmentKind::Usr => "usr",
            SegmentKind::UsrVerity => "usr-verity",
            SegmentKind::Kernel => "kernel",
            SegmentKind::Initramfs => "initramfs",
        }
    }
}

impl fmt::Display for SegmentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One segment as the header declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderSegment {
    /// Kind.
    pub kind: SegmentKind,
    /// Bytes.
    pub size: u64,
    /// SHA-256.
    pub sha256: [u8; 32],
}

/// The payload header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadHeader {
    /// Release.
    pub version: Version,
    /// dm-verity root hash of the usr segment.
    pub root_hash: [u8; 32],
    /// Chunk size.
    pub chunk_size: u32,
    /// Segments in payload order.
    pub segments: Vec<HeaderSegment>,
}

/// Why a payload was refused.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The header is malformed.
    #[error("payload header: {0}")]
    Header(String),
    /// The header disagrees with the signed manifest.
    #[error("payload header does not match the signed manifest: {0}")]
    HeaderMismatch(String),
    /// A chunk's bytes do not hash to the manifest's value.
    #[error(
        "payload chunk {index} ({what}, payload bytes {start}..{end}) does not match its signed SHA-256: the payload is corrupt or not the one the manifest was signed for"
    )]
    ChunkMismatch {
        /// Chunk index (0 is the header).
        index: usize,
        /// `header` or the segment and offset.
        what: String,
        /// Payload offset of the chunk.
        start: u64,
        /// End offset.
        end: u64,
    },
    /// More bytes than the manifest's size.
    #[error("payload is longer than its signed size {size}")]
    TrailingData {
        /// Signed size.
        size: u64,
    },
    /// Fewer bytes than the manifest's size.
    #[error("payload ended at byte {at} of {size}")]
    Truncated {
        /// Bytes verified.
        at: u64,
        /// Signed size.
        size: u64,
    },
    /// A resume point beyond the payload.
    #[error("cannot resume at chunk {0}")]
    BadResume(usize),
    /// The sink could not write a verified chunk.
    #[error("writing {segment} at offset {offset}")]
    Write {
        /// Segment.
        segment: SegmentKind,
        /// Offset in the segment.
        offset: u64,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// What was written could not be made durable.
    #[error("syncing what was written")]
    Sync(#[source] io::Error),
    /// What was read back does not match the manifest.
    #[error("read back {segment}: {message}")]
    Readback {
        /// Segment.
        segment: SegmentKind,
        /// What differs.
        message: String,
    },
    /// The verity root of what was read back is wrong.
    #[error("read back usr: {0}")]
    Verity(#[from] VerityError),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

impl PayloadHeader {
    /// Encodes the header.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(header_len(self.segments.len()));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.extend_from_slice(&(header_len(self.segments.len()) as u32).to_le_bytes());
        out.extend_from_slice(&self.chunk_size.to_le_bytes());
        out.extend_from_slice(&(self.segments.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.version.days.to_le_bytes());
        out.extend_from_slice(&self.version.minor.to_le_bytes());
        out.extend_from_slice(&self.version.patch.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.root_hash);
        for s in &self.segments {
            out.extend_from_slice(&s.kind.code().to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&s.size.to_le_bytes());
            out.extend_from_slice(&s.sha256);
        }
        out
    }

    /// Parses a header that is exactly `bytes` long. Total: any input gives a header or an
    /// error.
    pub fn parse(bytes: &[u8]) -> Result<PayloadHeader, PayloadError> {
        let bad = |m: String| PayloadError::Header(m);
        if bytes.len() < FIXED {
            return Err(bad(format!("{} bytes, shorter than {FIXED}", bytes.len())));
        }
        if &bytes[0..8] != MAGIC {
            return Err(bad("not a virga payload (magic)".into()));
        }
        if u32_at(bytes, 8) != FORMAT {
            return Err(bad(format!("format {}", u32_at(bytes, 8))));
        }
        let n = u32_at(bytes, 20) as usize;
        if n == 0 || n > MAX_SEGMENTS {
            return Err(bad(format!("{n} segments")));
        }
        let len = u32_at(bytes, 12) as usize;
        if len != header_len(n) || bytes.len() != len {
            return Err(bad(format!(
                "length {len} for {n} segments, {} bytes given",
                bytes.len()
            )));
        }
        if u32_at(bytes, 36) != 0 {
            return Err(bad("reserved field is not zero".into()));
        }
        let mut root_hash = [0u8; 32];
        root_hash.copy_from_slice(&bytes[40..72]);
        let mut segments = Vec::with_capacity(n);
        for i in 0..n {
            let at = FIXED + i * PER_SEGMENT;
            let code = u32_at(bytes, at);
            let kind = SegmentKind::from_code(code)
                .ok_or_else(|| bad(format!("segment {i}: unknown kind {code}")))?;
            let flags = u32_at(bytes, at + 4);
            if flags != 0 {
                return Err(bad(format!(
                    "segment {i} ({kind}): unsupported flags {flags:#x}"
                )));
            }
            let mut sha256 = [0u8; 32];
            sha256.copy_from_slice(&bytes[at + 16..at + 48]);
            segments.push(HeaderSegment {
                kind,
                size: u64_at(bytes, at + 8),
                sha256,
            });
        }
        Ok(PayloadHeader {
            version: Version::new(u32_at(bytes, 24), u32_at(bytes, 28), u32_at(bytes, 32)),
            root_hash,
            chunk_size: u32_at(bytes, 16),
            segments,
        })
    }

    fn matches(&self, m: &VerifiedManifest) -> Result<(), String> {
        let b = m.body();
        if self.version != b.version {
            return Err(format!("version {} vs {}", self.version, b.version));
        }
        if self.root_hash != b.system.root_hash.0 {
            return Err("verity root hash".into());
        }
        if self.chunk_size != b.payload.chunk_size {
            return Err(format!("chunk size {}", self.chunk_size));
        }
        let same = self.segments.len() == b.segments.len()
            && self
                .segments
                .iter()
                .zip(&b.segments)
                .all(|(h, s)| h.kind == s.kind && h.size == s.size && h.sha256 == s.sha256.0);
        if !same {
            return Err("segment table".into());
        }
        Ok(())
    }
}

/// SHA-256 of each `chunk_size` piece and of the whole of a segment read from `r` (`size`
/// bytes). Pass one of writing a payload.
pub fn describe_segment(
    kind: SegmentKind,
    r: &mut dyn Read,
    size: u64,
    chunk_size: u32,
) -> io::Result<SegmentInfo> {
    let mut whole = Sha256::new();
    let mut chunks = Vec::new();
    let mut buf = vec![0u8; chunk_size as usize];
    let mut left = size;
    while left > 0 {
        let n = left.min(u64::from(chunk_size)) as usize;
        r.read_exact(&mut buf[..n])?;
        whole.update(&buf[..n]);
        chunks.push(Hex32(Sha256::digest(&buf[..n]).into()));
        left -= n as u64;
    }
    Ok(SegmentInfo {
        kind,
        size,
        sha256: Hex32(whole.finalize().into()),
        chunks,
    })
}

/// Writes a payload: the header, then each segment's bytes from its reader, checking every
/// chunk against `segments` (pass two: a source that changed since [`describe_segment`] is an
/// error). Returns the manifest's `payload` record for `path`.
pub fn write_payload(
    out: &mut dyn Write,
    version: Version,
    root_hash: [u8; 32],
    chunk_size: u32,
    segments: &[SegmentInfo],
    sources: &mut [&mut dyn Read],
    path: &str,
) -> io::Result<PayloadInfo> {
    let header = PayloadHeader {
        version,
        root_hash,
        chunk_size,
        segments: segments
            .iter()
            .map(|s| HeaderSegment {
                kind: s.kind,
                size: s.size,
                sha256: s.sha256.0,
            })
            .collect(),
    }
    .encode();
    let mut whole = Sha256::new();
    whole.update(&header);
    out.write_all(&header)?;
    let mut total = header.len() as u64;
    let mut buf = vec![0u8; chunk_size as usize];
    for (s, r) in segments.iter().zip(sources.iter_mut()) {
        let mut left = s.size;
        for (i, want) in s.chunks.iter().enumerate() {
            let n = left.min(u64::from(chunk_size)) as usize;
            r.read_exact(&mut buf[..n])?;
            if Sha256::digest(&buf[..n]).as_slice() != want.0 {
                return Err(io::Error::other(format!(
                    "{} chunk {i} changed while the payload was written",
                    s.kind
                )));
            }
            whole.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            left -= n as u64;
            total += n as u64;
        }
    }
    Ok(PayloadInfo {
        path: path.to_owned(),
        size: total,
        sha256: Hex32(whole.finalize().into()),
        chunk_size,
        header: HeaderInfo {
            size: header.len() as u32,
            sha256: Hex32(Sha256::digest(&header).into()),
        },
    })
}

/// Builds a payload in memory (tests and small tools).
#[derive(Debug)]
pub struct PayloadBuilder {
    version: Version,
    root_hash: [u8; 32],
    chunk_size: u32,
    segments: Vec<(SegmentKind, Vec<u8>)>,
}

impl PayloadBuilder {
    /// A payload for `version`.
    pub fn new(version: Version, root_hash: [u8; 32], chunk_size: u32) -> PayloadBuilder {
        PayloadBuilder {
            version,
            root_hash,
            chunk_size,
            segments: Vec::new(),
        }
    }

    /// Appends a segment.
    pub fn segment(&mut self, kind: SegmentKind, data: Vec<u8>) -> &mut Self {
        self.segments.push((kind, data));
        self
    }

    /// The payload bytes and its manifest records.
    pub fn build(&self, path: &str) -> (Vec<u8>, PayloadInfo, Vec<SegmentInfo>) {
        let infos: Vec<SegmentInfo> = self
            .segments
            .iter()
            .map(|(k, d)| {
                describe_segment(*k, &mut &d[..], d.len() as u64, self.chunk_size)
                    .unwrap_or_else(|_| unreachable_info(*k))
            })
            .collect();
        let mut readers: Vec<&[u8]> = self.segments.iter().map(|(_, d)| &d[..]).collect();
        let mut sources: Vec<&mut dyn Read> =
            readers.iter_mut().map(|r| r as &mut dyn Read).collect();
        let mut out = Vec::new();
        let info = write_payload(
            &mut out,
            self.version,
            self.root_hash,
            self.chunk_size,
            &infos,
            &mut sources,
            path,
        )
        .unwrap_or_else(|_| PayloadInfo {
            path: path.into(),
            size: 0,
            sha256: Hex32::default(),
            chunk_size: self.chunk_size,
            header: HeaderInfo {
                size: 0,
                sha256: Hex32::default(),
            },
        });
        (out, info, infos)
    }
}

// Reading from a slice of the right length cannot fail; this keeps `build` free of panics.
fn unreachable_info(kind: SegmentKind) -> SegmentInfo {
    SegmentInfo {
        kind,
        size: 0,
        sha256: Hex32::default(),
        chunks: Vec::new(),
    }
}

/// Where verified chunks go: the guest writes them to the inactive slot's partitions and ESP
/// files; tests to files.
pub trait Sink {
    /// Writes `data` at `offset` of `segment`'s target. Only ever called with verified bytes.
    fn write(&mut self, segment: SegmentKind, offset: u64, data: &[u8]) -> io::Result<()>;

    /// Makes everything written so far durable (`fsync`). A download calls it before it
    /// records progress, so that a resume never skips chunks a power cut lost.
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct PlannedChunk {
    segment: Option<SegmentKind>,
    start: u64,
    seg_offset: u64,
    len: usize,
    sha256: [u8; 32],
}

/// Verifies a payload as it streams in; see the module documentation.
#[derive(Debug)]
pub struct StreamVerifier {
    manifest: VerifiedManifest,
    plan: Vec<PlannedChunk>,
    next: usize,
    buf: Vec<u8>,
    size: u64,
}

impl StreamVerifier {
    /// A verifier for the payload `manifest` describes, from its first byte.
    pub fn new(manifest: &VerifiedManifest) -> StreamVerifier {
        let b = manifest.body();
        let p = &b.payload;
        let mut plan = vec![PlannedChunk {
            segment: None,
            start: 0,
            seg_offset: 0,
            len: p.header.size as usize,
            sha256: p.header.sha256.0,
        }];
        let mut at = u64::from(p.header.size);
        for s in &b.segments {
            let mut off = 0u64;
            for h in &s.chunks {
                let len = (s.size - off).min(u64::from(p.chunk_size));
                plan.push(PlannedChunk {
                    segment: Some(s.kind),
                    start: at,
                    seg_offset: off,
                    len: len as usize,
                    sha256: h.0,
                });
                at += len;
                off += len;
            }
        }
        StreamVerifier {
            manifest: manifest.clone(),
            plan,
            next: 0,
            buf: Vec::new(),
            size: p.size,
        }
    }

    /// A verifier that continues after `chunks_done` chunks verified and written earlier (a
    /// restart; the caller should re-check them with [`ReadbackChecker`] or re-fetch).
    pub fn resume(
        manifest: &VerifiedManifest,
        chunks_done: usize,
    ) -> Result<StreamVerifier, PayloadError> {
        let mut v = StreamVerifier::new(manifest);
        if chunks_done > v.plan.len() {
            return Err(PayloadError::BadResume(chunks_done));
        }
        v.next = chunks_done;
        Ok(v)
    }

    /// Payload offset of the next byte expected (where an HTTP `Range` request resumes).
    pub fn position(&self) -> u64 {
        self.plan
            .get(self.next)
            .map_or(self.size, |c| c.start + self.buf.len() as u64)
    }

    /// Chunks verified so far (the header counts as one).
    pub fn chunks_done(&self) -> usize {
        self.next
    }

    /// Chunks in the payload.
    pub fn chunk_count(&self) -> usize {
        self.plan.len()
    }

    /// Payload size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Every chunk verified.
    pub fn is_complete(&self) -> bool {
        self.next == self.plan.len()
    }

    /// Drops bytes of a partly received chunk (to resume at a chunk boundary).
    pub fn discard_partial(&mut self) {
        self.buf.clear();
    }

    /// Feeds the next bytes of the payload; verified chunks go to `sink` as they complete.
    /// On a bad chunk nothing of it is written, the partial bytes are dropped and
    /// [`StreamVerifier::position`] is the bad chunk's start.
    pub fn feed(&mut self, mut data: &[u8], sink: &mut dyn Sink) -> Result<(), PayloadError> {
        while !data.is_empty() {
            let Some(chunk) = self.plan.get(self.next) else {
                return Err(PayloadError::TrailingData { size: self.size });
            };
            if self.buf.capacity() < chunk.len {
                self.buf.reserve_exact(chunk.len - self.buf.len());
            }
            let take = (chunk.len - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() < chunk.len {
                break;
            }
            let chunk = chunk.clone();
            if Sha256::digest(&self.buf).as_slice() != chunk.sha256 {
                self.buf.clear();
                return Err(PayloadError::ChunkMismatch {
                    index: self.next,
                    what: match chunk.segment {
                        None => "header".into(),
                        Some(k) => format!("{k} bytes {}..", chunk.seg_offset),
                    },
                    start: chunk.start,
                    end: chunk.start + chunk.len as u64,
                });
            }
            match chunk.segment {
                None => {
                    let checked = PayloadHeader::parse(&self.buf).and_then(|h| {
                        h.matches(&self.manifest)
                            .map_err(PayloadError::HeaderMismatch)
                    });
                    if let Err(e) = checked {
                        self.buf.clear();
                        return Err(e);
                    }
                }
                Some(kind) => {
                    if let Err(source) = sink.write(kind, chunk.seg_offset, &self.buf) {
                        self.buf.clear();
                        return Err(PayloadError::Write {
                            segment: kind,
                            offset: chunk.seg_offset,
                            source,
                        });
                    }
                }
            }
            self.buf.clear();
            self.next += 1;
        }
        Ok(())
    }

    /// Ok once every chunk has been verified and written.
    pub fn finish(&self) -> Result<(), PayloadError> {
        if self.is_complete() {
            Ok(())
        } else {
            Err(PayloadError::Truncated {
                at: self.position() - self.buf.len() as u64,
                size: self.size,
            })
        }
    }
}

/// Checks what was written for one segment, read back from its target: every chunk's hash, the
/// whole segment's hash and, for `usr`, the dm-verity root hash. Streaming; memory is one chunk.
#[derive(Debug)]
pub struct ReadbackChecker {
    info: SegmentInfo,
    chunk_size: u64,
    whole: Sha256,
    chunk: Sha256,
    in_chunk: u64,
    index: usize,
    seen: u64,
    verity: Option<(VerityHasher, [u8; 32])>,
}

impl ReadbackChecker {
    /// A checker for `kind` of `manifest`.
    pub fn new(manifest: &VerifiedManifest, kind: SegmentKind) -> Option<ReadbackChecker> {
        let b = manifest.body();
        let info = b.segment(kind)?.clone();
        let verity = (kind == SegmentKind::Usr).then(|| {
            (
                VerityHasher::new(&b.system.salt_bytes(), b.system.data_blocks),
                b.system.root_hash.0,
            )
        });
        Some(ReadbackChecker {
            info,
            chunk_size: u64::from(b.payload.chunk_size),
            whole: Sha256::new(),
            chunk: Sha256::new(),
            in_chunk: 0,
            index: 0,
            seen: 0,
            verity,
        })
    }

    /// Bytes the segment has (read exactly this many from the target).
    pub fn size(&self) -> u64 {
        self.info.size
    }

    /// Feeds the next bytes read back.
    pub fn update(&mut self, mut data: &[u8]) -> Result<(), PayloadError> {
        let bad = |m: String| PayloadError::Readback {
            segment: self.info.kind,
            message: m,
        };
        if self.seen + data.len() as u64 > self.info.size {
            return Err(bad(format!("more than {} bytes", self.info.size)));
        }
        self.seen += data.len() as u64;
        self.whole.update(data);
        if let Some((v, _)) = &mut self.verity {
            v.update(data)?;
        }
        while !data.is_empty() {
            let take = (self.chunk_size - self.in_chunk).min(data.len() as u64) as usize;
            self.chunk.update(&data[..take]);
            self.in_chunk += take as u64;
            data = &data[take..];
            let end_of_segment = self.seen == self.info.size && data.is_empty();
            if self.in_chunk == self.chunk_size || end_of_segment {
                let got: [u8; 32] = std::mem::take(&mut self.chunk).finalize().into();
                if self.info.chunks.get(self.index).map(|h| h.0) != Some(got) {
                    return Err(PayloadError::Readback {
                        segment: self.info.kind,
                        message: format!("chunk {} differs from what was verified", self.index),
                    });
                }
                self.index += 1;
                self.in_chunk = 0;
            }
        }
        Ok(())
    }

    /// Ok when every byte was read back and matched.
    pub fn finish(self) -> Result<(), PayloadError> {
        let kind = self.info.kind;
        if self.seen != self.info.size {
            return Err(PayloadError::Readback {
                segment: kind,
                message: format!("{} of {} bytes", self.seen, self.info.size),
            });
        }
        let whole: [u8; 32] = self.whole.finalize().into();
        if whole != self.info.sha256.0 {
            return Err(PayloadError::Readback {
                segment: kind,
                message: "SHA-256 differs".into(),
            });
        }
        if let Some((v, root)) = self.verity {
            v.finish_expecting(&root)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeySet, SecretKey};
    use crate::manifest::{self, CheckContext, Outcome, tests::release};
    use crate::version::Channel;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Mem(HashMap<SegmentKind, Vec<u8>>);
    impl Sink for Mem {
        fn write(&mut self, s: SegmentKind, off: u64, d: &[u8]) -> io::Result<()> {
            let v = self.0.entry(s).or_default();
            let end = off as usize + d.len();
            if v.len() < end {
                v.resize(end, 0);
            }
            v[off as usize..end].copy_from_slice(d);
            Ok(())
        }
    }

    pub(crate) fn verified(version: Version) -> (VerifiedManifest, Vec<u8>) {
        let k = SecretKey::from_seed([1; 32]);
        let keys = KeySet::new(1, vec![k.public()]).unwrap();
        let (body, payload) = release(version);
        let doc = manifest::sign(&body, &k).unwrap();
        let ctx = CheckContext {
            keys: &keys,
            channel: Channel::Stable,
            running: Version::new(1, 0, 0),
            now: "2026-12-08T00:00:00Z".parse().unwrap(),
            allow_downgrade: false,
        };
        match manifest::check(&doc, &ctx).unwrap() {
            Outcome::Update { manifest, .. } => (manifest, payload),
            other => panic!("{other:?}"),
        }
    }

    fn segments_of(m: &VerifiedManifest, payload: &[u8]) -> HashMap<SegmentKind, Vec<u8>> {
        let mut at = m.body().payload.header.size as usize;
        let mut out = HashMap::new();
        for s in &m.body().segments {
            out.insert(s.kind, payload[at..at + s.size as usize].to_vec());
            at += s.size as usize;
        }
        out
    }

    #[test]
    fn header_round_trip_and_refusals() {
        let h = PayloadHeader {
            version: Version::new(340, 1, 2),
            root_hash: [7; 32],
            chunk_size: 1 << 20,
            segments: SegmentKind::ALL
                .iter()
                .map(|&kind| HeaderSegment {
                    kind,
                    size: 12345,
                    sha256: [kind as u8; 32],
                })
                .collect(),
        };
        let b = h.encode();
        assert_eq!(b.len(), header_len(4));
        assert_eq!(PayloadHeader::parse(&b).unwrap(), h);
        let mut bad = b.clone();
        bad[0] = b'X';
        assert!(PayloadHeader::parse(&bad).is_err());
        let mut bad = b.clone();
        bad[72] = 9;
        assert!(PayloadHeader::parse(&bad).is_err());
        let mut bad = b.clone();
        bad[76] = 1;
        assert!(PayloadHeader::parse(&bad).is_err());
        assert!(PayloadHeader::parse(&b[..100]).is_err());
        let mut longer = b.clone();
        longer.push(0);
        assert!(PayloadHeader::parse(&longer).is_err());
    }

    #[test]
    fn stream_in_any_pieces() {
        let (m, payload) = verified(Version::new(340, 0, 0));
        let want = segments_of(&m, &payload);
        for piece in [1usize, 7, 4096, 65536, 100_000, payload.len()] {
            let mut v = StreamVerifier::new(&m);
            let mut sink = Mem::default();
            for p in payload.chunks(piece) {
                v.feed(p, &mut sink).unwrap();
            }
            v.finish().unwrap();
            assert_eq!(sink.0, want, "{piece}");
            assert_eq!(v.position(), payload.len() as u64);
        }
    }

    #[test]
    fn bad_bytes_are_never_written() {
        let (m, payload) = verified(Version::new(340, 0, 0));
        // Flip a byte in the kernel segment's second chunk.
        let kernel_start = m.body().payload.header.size as u64
            + m.body().segments[0].size
            + m.body().segments[1].size;
        let at = (kernel_start + 65_536 + 10) as usize;
        let mut bad = payload.clone();
        bad[at] ^= 1;
        let mut v = StreamVerifier::new(&m);
        let mut sink = Mem::default();
        let err = v.feed(&bad, &mut sink).unwrap_err();
        assert!(matches!(err, PayloadError::ChunkMismatch { .. }), "{err}");
        // Everything before the bad chunk was written; nothing of it or after.
        let kernel = &sink.0[&SegmentKind::Kernel];
        assert_eq!(kernel.len(), 65_536);
        assert!(!sink.0.contains_key(&SegmentKind::Initramfs));
        assert_eq!(v.position(), kernel_start + 65_536);
        // Resume from there with good bytes.
        v.feed(&payload[v.position() as usize..], &mut sink)
            .unwrap();
        v.finish().unwrap();
        assert_eq!(sink.0, segments_of(&m, &payload));
    }

    #[test]
    fn header_flip_writes_nothing_and_other_payloads_are_refused() {
        let (m, payload) = verified(Version::new(340, 0, 0));
        let mut bad = payload.clone();
        bad[30] ^= 0x80;
        let mut sink = Mem::default();
        assert!(StreamVerifier::new(&m).feed(&bad, &mut sink).is_err());
        assert!(sink.0.is_empty());
        // The payload of another release under this manifest.
        let (_, other) = verified(Version::new(341, 0, 0));
        let err = StreamVerifier::new(&m).feed(&other, &mut sink).unwrap_err();
        assert!(
            matches!(err, PayloadError::ChunkMismatch { index: 0, .. }),
            "{err}"
        );
        assert!(sink.0.is_empty());
    }

    #[test]
    fn truncation_and_trailing_data() {
        let (m, payload) = verified(Version::new(340, 0, 0));
        let mut v = StreamVerifier::new(&m);
        let mut sink = Mem::default();
        v.feed(&payload[..payload.len() - 1], &mut sink).unwrap();
        let e = v.finish().unwrap_err();
        assert!(matches!(e, PayloadError::Truncated { .. }), "{e}");
        let mut longer = payload.clone();
        longer.push(0);
        let mut v = StreamVerifier::new(&m);
        assert!(matches!(
            v.feed(&longer, &mut sink),
            Err(PayloadError::TrailingData { .. })
        ));
    }

    #[test]
    fn resume_by_offset_and_by_chunk() {
        let (m, payload) = verified(Version::new(340, 0, 0));
        let mut v = StreamVerifier::new(&m);
        let mut sink = Mem::default();
        v.feed(&payload[..50_000], &mut sink).unwrap();
        // A cut connection: continue at position() (partial bytes kept).
        let at = v.position() as usize;
        assert_eq!(at, 50_000);
        v.feed(&payload[at..], &mut sink).unwrap();
        v.finish().unwrap();
        // A restart: a new verifier after 3 chunks, fed from that chunk's start.
        let mut v2 = StreamVerifier::resume(&m, 3).unwrap();
        let at = v2.position() as usize;
        let mut sink2 = Mem::default();
        v2.feed(&payload[at..], &mut sink2).unwrap();
        v2.finish().unwrap();
        assert!(StreamVerifier::resume(&m, 1000).is_err());
    }

    #[test]
    fn readback() {
        let (m, payload) = verified(Version::new(340, 0, 0));
        let segs = segments_of(&m, &payload);
        for kind in SegmentKind::ALL {
            let mut c = ReadbackChecker::new(&m, kind).unwrap();
            for p in segs[&kind].chunks(5000) {
                c.update(p).unwrap();
            }
            c.finish().unwrap();
            // One flipped byte is caught.
            let mut bad = segs[&kind].clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            let mut c = ReadbackChecker::new(&m, kind).unwrap();
            let r = c.update(&bad).and_then(|()| c.finish());
            assert!(r.is_err(), "{kind}");
        }
    }

    proptest! {
        #[test]
        fn header_parse_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = PayloadHeader::parse(&bytes);
        }

        #[test]
        fn any_corruption_is_caught(at in 0usize..200_000, bit in 0u8..8, piece in 1usize..70_000) {
            let (m, payload) = verified(Version::new(340, 0, 0));
            let at = at % payload.len();
            let mut bad = payload.clone();
            bad[at] ^= 1 << bit;
            let mut v = StreamVerifier::new(&m);
            let mut sink = Mem::default();
            let mut failed = false;
            for p in bad.chunks(piece) {
                if v.feed(p, &mut sink).is_err() {
                    failed = true;
                    break;
                }
            }
            prop_assert!(failed);
            // What reached the sink is a prefix of the right bytes.
            let good = segments_of(&m, &payload);
            for (k, d) in &sink.0 {
                prop_assert_eq!(&good[k][..d.len()], &d[..]);
            }
        }
    }
}
