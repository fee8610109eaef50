//! `virga release`: publish a built disk image as a signed release in a static update
//! repository (`docs/updates.md`):
//!
//! ```text
//! REPO/channels/<channel>.json   signed manifest of the channel's current release
//! REPO/versions/<version>.json   signed manifest of every release (what `pin:VERSION` reads)
//! REPO/payloads/<version>.bin    the payload: header + usr + usr-verity + kernel + initramfs
//! REPO/keys/<N>.json             key-set rotations (`virga keys rotate --repo`)
//! ```
//!
//! The payload is written first, the per-version manifest next and the channel manifest last,
//! each to a temporary file that is fsynced and renamed, so a client never sees a manifest
//! whose payload is missing or half-written. A version's payload is immutable: releasing the
//! same version again with other content is refused.
//!
//! The parts come from `virga build --format raw` output ([`read_build`], the one place that
//! knows that layout): the slot's squashfs and verity hash device are read from `virga.raw` at
//! the offsets `manifest.json` gives for `usr-A` and `usr-A-verity`; the kernel and initramfs
//! are `vmlinuz` and `initramfs.img`. Before anything is written, the parts are checked against
//! each other: the verity tree is recomputed from the filesystem and must equal the hash
//! partition and the recorded root hash, and the initramfs's `image.json` must carry that root
//! hash.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use update::manifest::{self, DEFAULT_CHUNK_SIZE, FORMAT, Hex32, ManifestBody, SystemInfo};
use update::payload::{self, SegmentKind};
use update::verity::{self, VerityHasher};
use update::{Channel, Timestamp, Version};

use crate::update_keys::{read_secret, write_atomic};

/// `virga release`.
#[derive(Debug, clap::Args)]
pub struct ReleaseArgs {
    /// A `virga build --format raw` output directory (manifest.json, virga.raw, vmlinuz,
    /// initramfs.img).
    #[arg(long, value_name = "OUT")]
    pub from: PathBuf,
    /// Release channel: alpha, beta or stable.
    #[arg(long, value_name = "NAME")]
    pub channel: Channel,
    /// Version DAYS.MINOR.PATCH (DAYS: days since 2026-01-01; not after today).
    #[arg(long, value_name = "VERSION")]
    pub version: Version,
    /// Secret signing key (`virga keys new`), mode 0600.
    #[arg(long, value_name = "KEYFILE")]
    pub key: PathBuf,
    /// Repository directory (created).
    #[arg(long, value_name = "REPO")]
    pub out: PathBuf,
    /// Days until the manifests expire (re-run `virga release` before then to re-sign).
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    pub expires: u32,
    /// Publish a version older than the channel's current one.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Where a slot's parts are in a build output.
#[derive(Debug, Clone)]
pub struct BuildParts {
    /// The raw disk.
    pub raw: PathBuf,
    /// Offset and length of the slot filesystem in the raw disk.
    pub usr: (u64, u64),
    /// Offset and length of the verity hash device in the raw disk.
    pub usr_verity: (u64, u64),
    /// The kernel.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initramfs: PathBuf,
    /// The slot's verity parameters.
    pub system: SystemInfo,
}

fn field<'a>(v: &'a Value, path: &[&str]) -> Result<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur
            .get(p)
            .with_context(|| format!("manifest.json has no {}", path.join(".")))?;
    }
    Ok(cur)
}

fn u64_field(v: &Value, path: &[&str]) -> Result<u64> {
    field(v, path)?
        .as_u64()
        .with_context(|| format!("manifest.json: {} is not a number", path.join(".")))
}

fn str_field<'a>(v: &'a Value, path: &[&str]) -> Result<&'a str> {
    field(v, path)?
        .as_str()
        .with_context(|| format!("manifest.json: {} is not a string", path.join(".")))
}

/// Reads where slot A's parts are in a `virga build --format raw` output. The only code that
/// knows the build output's layout (the disk-image branch's `manifest.json` `disk` section).
pub fn read_build(out: &Path) -> Result<BuildParts> {
    let mpath = out.join("manifest.json");
    let text = std::fs::read(&mpath).with_context(|| {
        format!(
            "cannot read {} (is it a `virga build` output?)",
            mpath.display()
        )
    })?;
    let m: Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not JSON", mpath.display()))?;
    let disk = m.get("disk").filter(|d| !d.is_null()).with_context(|| {
        format!(
            "{} describes no disk image: build one with `virga build --format raw`",
            out.display()
        )
    })?;
    let raw = out.join("virga.raw");
    if !raw.is_file() {
        bail!(
            "{} is missing: the release reads the slot from the raw disk; build with `virga build --format raw` (other formats may be added)",
            raw.display()
        );
    }
    let parts = field(disk, &["partitions"])?
        .as_array()
        .context("manifest.json: disk.partitions is not a list")?;
    let part = |label: &str| -> Result<(u64, u64)> {
        let p = parts
            .iter()
            .find(|p| p.get("label").and_then(Value::as_str) == Some(label))
            .with_context(|| format!("manifest.json: no partition {label}"))?;
        Ok((u64_field(p, &["start"])?, u64_field(p, &["size"])?))
    };
    let (usr_start, usr_size) = part("usr-A")?;
    let (hash_start, hash_size) = part("usr-A-verity")?;
    let v = field(disk, &["verity"])?;
    let data_blocks = u64_field(v, &["data_blocks"])?;
    let block = u64_field(v, &["data_block_size"])?;
    if block != verity::BLOCK_SIZE
        || u64_field(v, &["hash_block_size"])? != verity::BLOCK_SIZE
        || str_field(v, &["hash_algorithm"])? != "sha256"
        || u64_field(v, &["hash_offset"])? != verity::BLOCK_SIZE
    {
        bail!("manifest.json: verity must be sha256 with 4096-byte blocks and the tree at 4096");
    }
    let fs_len = data_blocks * verity::BLOCK_SIZE;
    let hash_len = verity::hash_device_size(data_blocks);
    if fs_len == 0 || fs_len > usr_size || hash_len > hash_size {
        bail!(
            "manifest.json: {data_blocks} verity blocks do not fit partitions usr-A ({usr_size} bytes) and usr-A-verity ({hash_size} bytes)"
        );
    }
    let root_hash: Hex32 = str_field(v, &["root_hash"])?
        .parse()
        .map_err(|e: String| anyhow::anyhow!("manifest.json: disk.verity.root_hash: {e}"))?;
    let system = SystemInfo {
        filesystem: str_field(disk, &["slot", "filesystem"])?.to_owned(),
        root_hash,
        salt: str_field(v, &["salt"])?.to_owned(),
        data_blocks,
        block_size: verity::BLOCK_SIZE as u32,
        hash_offset: verity::BLOCK_SIZE,
    };
    Ok(BuildParts {
        raw,
        usr: (usr_start, fs_len),
        usr_verity: (hash_start, hash_len),
        kernel: out.join("vmlinuz"),
        // A disk build's slot initramfs (what `/initrd-a` holds); a build from before it
        // existed has only the whole one.
        initramfs: [image_builder::SLOT_INITRAMFS, image_builder::INITRAMFS]
            .iter()
            .map(|n| out.join(n))
            .find(|p| p.is_file())
            .unwrap_or_else(|| out.join(image_builder::INITRAMFS)),
        system,
    })
}

fn section(path: &Path, (start, len): (u64, u64)) -> Result<std::io::Take<File>> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let total = f.metadata()?.len();
    if start + len > total {
        bail!(
            "{} is {total} bytes; the slot needs bytes {start}..{}",
            path.display(),
            start + len
        );
    }
    f.seek(SeekFrom::Start(start))?;
    Ok(f.take(len))
}

fn whole(path: &Path) -> Result<(std::io::Take<File>, u64)> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = f.metadata()?.len();
    if len == 0 {
        bail!("{} is empty", path.display());
    }
    Ok((f.take(len), len))
}

/// Checks the parts against each other: the verity tree recomputed from the filesystem equals
/// the hash device and the root hash, and the initramfs carries the root hash.
pub fn check_parts(p: &BuildParts) -> Result<()> {
    let salt = hex::decode(&p.system.salt).context("manifest.json: verity salt is not hex")?;
    let mut hasher = VerityHasher::keeping_tree(&salt, p.system.data_blocks);
    let mut r = section(&p.raw, p.usr)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n])?;
    }
    let (root, tree) = hasher.finish_tree()?;
    if root != p.system.root_hash.0 {
        bail!(
            "the slot filesystem in {} hashes to verity root {}, not the recorded {}: the build output is inconsistent",
            p.raw.display(),
            hex::encode(root),
            p.system.root_hash
        );
    }
    let mut dev = Vec::new();
    section(&p.raw, p.usr_verity)?.read_to_end(&mut dev)?;
    let sb = verity::parse_superblock(&dev)
        .context("usr-A-verity has no dm-verity superblock (format 1, sha256, 4096)")?;
    if sb.data_blocks != p.system.data_blocks || sb.salt != salt {
        bail!("usr-A-verity's superblock does not match manifest.json's verity parameters");
    }
    if dev[verity::BLOCK_SIZE as usize..] != tree[..] {
        bail!("usr-A-verity's hash tree is not the tree of usr-A's filesystem");
    }
    let want = p.system.root_hash.to_string();
    match initramfs_root_hash(&p.initramfs)? {
        Some(h) if h == want => Ok(()),
        Some(h) => bail!(
            "{} carries root hash {h} in {}, not the slot's {want}",
            p.initramfs.display(),
            boot_contract::IMAGE_CONFIG_PATH
        ),
        None => bail!(
            "{}'s {} has no system.root_hash: the initramfs would not find the slot",
            p.initramfs.display(),
            boot_contract::IMAGE_CONFIG_PATH
        ),
    }
}

/// `system.root_hash` of the initramfs's `image.json` (zstd, gzip or plain newc cpio).
fn initramfs_root_hash(path: &Path) -> Result<Option<String>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let cpio = if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::decode_all(&data[..]).context("decompressing the initramfs (zstd)")?
    } else if data.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&data[..])
            .read_to_end(&mut out)
            .context("decompressing the initramfs (gzip)")?;
        out
    } else {
        data
    };
    let want = boot_contract::IMAGE_CONFIG_PATH.trim_start_matches('/');
    let Some(json) = image_builder::tree::cpio_file(&cpio, want) else {
        bail!("{} has no {want}", path.display());
    };
    let v: Value = serde_json::from_slice(json).context("image.json is not JSON")?;
    Ok(v.get("system")
        .and_then(|s| s.get("root_hash"))
        .and_then(Value::as_str)
        .map(str::to_owned))
}

/// The version in a stored signed manifest (unverified: for the downgrade check only).
fn stored_version(path: &Path) -> Option<Version> {
    let bytes = std::fs::read(path).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("signed")?.get("version")?.as_str()?.parse().ok()
}

/// Runs `virga release`.
pub fn run(args: ReleaseArgs) -> Result<()> {
    let Some(channel_name) = args.channel.release_name() else {
        bail!("--channel must be alpha, beta or stable (a pin is a client setting)");
    };
    let now = Timestamp::now();
    let today = Version::today(now)?;
    if args.version.days > today.days + 1 {
        bail!(
            "version {} is dated {} (DAYS counts from 2026-01-01), after today ({}): guests treat a release's day as a floor for their clock; use at most {}",
            args.version,
            args.version.release_day().date(),
            now.date(),
            today
        );
    }
    if args.expires == 0 || args.expires > 3650 {
        bail!("--expires must be 1 to 3650 days");
    }
    let key = read_secret(&args.key)?;
    let parts = read_build(&args.from)?;
    check_parts(&parts)?;

    let repo = &args.out;
    let chan_path = repo.join(Channel::manifest_path(&args.channel));
    if let Some(current) = stored_version(&chan_path)
        && current > args.version
        && !args.allow_downgrade
    {
        bail!(
            "channel {channel_name} is at {current}; publishing the older {} needs --allow-downgrade (guests refuse downgrades unless they allow them too)",
            args.version
        );
    }

    // Pass one: chunk hashes of every segment.
    let chunk = DEFAULT_CHUNK_SIZE;
    let (mut kernel, kernel_len) = whole(&parts.kernel)?;
    let (mut initrd, initrd_len) = whole(&parts.initramfs)?;
    let segments = vec![
        payload::describe_segment(
            SegmentKind::Usr,
            &mut section(&parts.raw, parts.usr)?,
            parts.usr.1,
            chunk,
        )?,
        payload::describe_segment(
            SegmentKind::UsrVerity,
            &mut section(&parts.raw, parts.usr_verity)?,
            parts.usr_verity.1,
            chunk,
        )?,
        payload::describe_segment(SegmentKind::Kernel, &mut kernel, kernel_len, chunk)?,
        payload::describe_segment(SegmentKind::Initramfs, &mut initrd, initrd_len, chunk)?,
    ];

    // Pass two: the payload, into a temporary file next to its final name.
    let rel = format!("payloads/{}.bin", args.version);
    let final_path = repo.join(&rel);
    let dir = final_path.parent().unwrap_or(repo);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(".{}.bin.tmp-{}", args.version, std::process::id()));
    let info = (|| -> Result<_> {
        let mut f = std::io::BufWriter::new(
            File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?,
        );
        let (mut k, _) = whole(&parts.kernel)?;
        let (mut i, _) = whole(&parts.initramfs)?;
        let mut u = section(&parts.raw, parts.usr)?;
        let mut h = section(&parts.raw, parts.usr_verity)?;
        let mut sources: [&mut dyn Read; 4] = [&mut u, &mut h, &mut k, &mut i];
        let info = payload::write_payload(
            &mut f,
            args.version,
            parts.system.root_hash.0,
            chunk,
            &segments,
            &mut sources,
            &rel,
        )?;
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok(info)
    })();
    let info = match info {
        Ok(i) => i,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.context(format!("writing {}", tmp.display())));
        }
    };
    if final_path.exists() {
        let existing = sha256_file(&final_path)?;
        let _ = std::fs::remove_file(&tmp);
        if existing != info.sha256.0 {
            bail!(
                "{} exists with other content: version {} was already released; versions are immutable, bump the version",
                final_path.display(),
                args.version
            );
        }
    } else {
        std::fs::rename(&tmp, &final_path)
            .with_context(|| format!("renaming to {}", final_path.display()))?;
    }

    let expires = now.plus(i64::from(args.expires) * update::time::DAY);
    let body = ManifestBody {
        format: FORMAT,
        channel: channel_name.to_owned(),
        version: args.version,
        issued: now,
        expires,
        system: parts.system.clone(),
        payload: info,
        segments,
    };
    let signed = manifest::sign(&body, &key)?;
    write_atomic(
        &repo.join(Channel::Pin(args.version).manifest_path()),
        &signed,
    )?;
    write_atomic(&chan_path, &signed)?;

    let chunks: usize = 1 + body.segments.iter().map(|s| s.chunks.len()).sum::<usize>();
    if args.json {
        let summary = serde_json::json!({
            "channel": channel_name,
            "version": args.version,
            "manifest": chan_path,
            "payload": final_path,
            "payload_size": body.payload.size,
            "payload_sha256": body.payload.sha256,
            "chunks": chunks,
            "root_hash": body.system.root_hash,
            "signed_by": key.id().to_string(),
            "expires": expires,
        });
        println!("{summary:#}");
    } else {
        println!(
            "released {} on {channel_name}: {} ({} bytes, {chunks} chunks), signed by {}, expires {expires}",
            args.version,
            final_path.display(),
            body.payload.size,
            key.id()
        );
    }
    std::io::stdout().flush().ok();
    Ok(())
}

fn sha256_file(path: &Path) -> Result<[u8; 32]> {
    use sha2::{Digest, Sha256};
    let mut f = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(h.finalize().into())
}
