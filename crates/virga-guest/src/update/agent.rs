//! The update agent: the `update` crate's policy driven against this machine's disk.
//!
//! At boot (after the ready line): a rollback is noticed and recorded, a `try` boot that reached
//! ready marks its slot good, a held reboot lock is released. On a check: the trusted keys
//! (baked into the verified system, rotated through the repository), the channel's manifest,
//! verified. On an apply: the other slot is disarmed first, the payload streamed into it chunk
//! by verified chunk, everything read back, the slot's partitions given their root hash's
//! PARTUUIDs, the slot armed in GRUB's environment block, and the machine rebooted by policy.
//! Nothing here ever writes to the running slot. The protocol is `docs/updates.md`.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use boot_contract::SystemImage;
use update::config::UpdateConfig;
use update::fetch::{Client, DownloadEnv, FetchOptions};
use update::manifest::{self, CheckContext, Outcome, VerifiedManifest};
use update::payload::{ReadbackChecker, SegmentKind, Sink, StreamVerifier};
use update::slots::{self, BootMode, Booted, Slot, SlotEnv};
use update::status::{AgentState, DownloadRecord, RollbackRecord, SlotRecord};
use update::{KeySet, Timestamp, Version};

use super::esp::{Esp, EspError};

/// The agent's persistent state (on the state partition).
pub const STATE_FILE: &str = "/var/lib/virga/update/state.json";
/// The `virga.update` section PID 1 received, for the applets.
pub const CONFIG_FILE: &str = "/run/virga/update.json";
/// The trusted update keys, baked into the verified system.
pub const KEYS_FILE: &str = "/usr/share/virga/update-keys.json";

/// What can go wrong in an update.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// Not a slot boot of a disk image.
    #[error(
        "updates need a virga disk image booted through GRUB (no virga.slot= on the command line)"
    )]
    NoSlot,
    /// The image has one slot.
    #[error("this image has one slot (disk.slots = 1): it cannot be updated in place")]
    OneSlot,
    /// No `virga.update.url`.
    #[error("updates are off: no virga.update url in the cloud-config")]
    Disabled,
    /// The configuration is refused.
    #[error("virga.update: {0}")]
    Config(String),
    /// No trusted keys: verification is mandatory.
    #[error(
        "{KEYS_FILE}: {0} (verification is mandatory: without trusted keys nothing is installed)"
    )]
    Keys(String),
    /// The ESP.
    #[error(transparent)]
    Esp(#[from] EspError),
    /// The slot state machine refused.
    #[error("{0}")]
    Slots(String),
    /// The repository.
    #[error("{0}")]
    Fetch(String),
    /// The manifest.
    #[error("{0}")]
    Manifest(String),
    /// A partition.
    #[error("{what}: {source}")]
    Io {
        /// What.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Read-back found a difference.
    #[error("read back {0}: {1}")]
    Readback(&'static str, String),
    /// The GPT.
    #[error("partition table: {0}")]
    Gpt(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> UpdateError {
    let what = what.into();
    move |source| UpdateError::Io { what, source }
}

/// The booted slot, from the command line GRUB wrote.
pub fn booted(cmdline: &str) -> Option<Booted> {
    let c = boot_contract::cmdline::Cmdline::parse(cmdline);
    let slot = Slot::parse(c.get(boot_contract::cmdline::SLOT)?)?;
    let mode = c
        .get(boot_contract::cmdline::BOOT_MODE)
        .and_then(BootMode::parse)
        .unwrap_or(BootMode::Fallback);
    Some(Booted { slot, mode })
}

/// Reads the agent's state; a damaged file is reported and replaced by a fresh state.
pub fn load_state() -> (AgentState, Option<String>) {
    match std::fs::read(STATE_FILE) {
        Ok(b) => match AgentState::parse(&b) {
            Ok(s) => (s, None),
            Err(e) => (AgentState::default(), Some(format!("{STATE_FILE}: {e}"))),
        },
        Err(_) => (AgentState::default(), None),
    }
}

/// Writes the agent's state durably.
pub fn save_state(state: &AgentState) -> Result<(), UpdateError> {
    crate::fsutil::write_atomic(STATE_FILE, &state.to_json(), 0o600, false).map_err(io(STATE_FILE))
}

/// The update configuration: the `virga.update` section PID 1 saved at boot.
pub fn load_config() -> Result<UpdateConfig, UpdateError> {
    let Ok(bytes) = std::fs::read(CONFIG_FILE) else {
        return Ok(UpdateConfig::default());
    };
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| UpdateError::Config(e.to_string()))?;
    UpdateConfig::from_value(&v).map_err(|e| UpdateError::Config(e.0))
}

/// The trusted keys baked into the running system.
pub fn baked_keys() -> Result<KeySet, UpdateError> {
    let bytes = std::fs::read(KEYS_FILE).map_err(|e| UpdateError::Keys(e.to_string()))?;
    let set = KeySet::from_json(&bytes).map_err(|e| UpdateError::Keys(e.to_string()))?;
    if set.is_empty() {
        return Err(UpdateError::Keys("the key set is empty".into()));
    }
    Ok(set)
}

/// What happened at boot.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct BootReport {
    /// A slot given up, with the reason.
    pub rollback: Option<String>,
    /// This boot's slot was marked good.
    pub marked_good: bool,
    /// Problems (none stops anything).
    pub problems: Vec<String>,
}

/// The boot step, once the machine is ready (services up, SSH listening): records a rollback,
/// marks a `try` boot good, releases a held reboot lock.
pub fn at_boot(cmdline: &str) -> Result<BootReport, UpdateError> {
    let booted = booted(cmdline).ok_or(UpdateError::NoSlot)?;
    let esp = Esp::mount()?;
    let mut block = esp.read_env()?;
    let mut env = SlotEnv::from_block(&block);
    let (mut state, damaged) = load_state();
    let mut report = BootReport::default();
    report.problems.extend(damaged);
    if let Some((next, rb)) = slots::detect_rollback(&env, booted) {
        let mut reason = rb.reason.clone();
        if let Some(note) = state.failed_boot_note.take() {
            reason.push_str(&format!("; the failed boot recorded: {note}"));
        }
        let version = state.slots[slot_index(rb.abandoned)]
            .as_ref()
            .map(|r| r.version);
        state.rollback = Some(RollbackRecord {
            at: Timestamp::now(),
            slot: rb.abandoned,
            version,
            reason: reason.clone(),
        });
        next.apply(&mut block);
        esp.write_env(&block)?;
        env = next;
        report.rollback = Some(reason);
    }
    if booted.mode == BootMode::Try {
        let next = slots::mark_good(&env, booted).map_err(|e| UpdateError::Slots(e.to_string()))?;
        next.apply(&mut block);
        esp.write_env(&block)?;
        report.marked_good = true;
        if let Some(lock) = state.lock.take()
            && let Err(e) = release_lock(&lock)
        {
            report
                .problems
                .push(format!("releasing the reboot lock: {e}"));
            state.lock = Some(lock);
        }
    }
    save_state(&state)?;
    Ok(report)
}

fn slot_index(s: Slot) -> usize {
    match s {
        Slot::A => 0,
        Slot::B => 1,
    }
}

fn release_lock(lock: &update::status::LockRecord) -> Result<(), UpdateError> {
    let cfg = load_config()?;
    let Some(etcd) = cfg.etcd else {
        return Ok(());
    };
    let client = update::etcd::EtcdClient::new(&etcd.endpoints, Duration::from_secs(10))
        .map_err(|e| UpdateError::Fetch(e.to_string()))?;
    let l = update::etcd::RebootLock::new(&client, &lock.group, &lock.holder, etcd.max)
        .map_err(|e| UpdateError::Fetch(e.to_string()))?;
    l.release().map_err(|e| UpdateError::Fetch(e.to_string()))?;
    client
        .revoke(lock.lease)
        .map_err(|e| UpdateError::Fetch(e.to_string()))?;
    Ok(())
}

/// The running release: the recorded version of the booted slot when its root hash is the one
/// the booted image carries, else `0.0.0` (a factory image).
pub fn running_version(
    state: &AgentState,
    booted: Booted,
    system: Option<&SystemImage>,
) -> Version {
    let Some(rec) = &state.slots[slot_index(booted.slot)] else {
        return Version::default();
    };
    match system {
        Some(s) if s.root_hash.eq_ignore_ascii_case(&rec.root_hash) => rec.version,
        _ => Version::default(),
    }
}

/// Checks the channel: `Ok(None)` when up to date.
pub fn check(
    cfg: &UpdateConfig,
    running: Version,
) -> Result<Option<VerifiedManifest>, UpdateError> {
    let url = cfg.url.as_deref().ok_or(UpdateError::Disabled)?;
    let client =
        Client::new(url, FetchOptions::default()).map_err(|e| UpdateError::Fetch(e.to_string()))?;
    // Trusted keys: the baked-in set, then any rotations the repository publishes.
    let mut keys = baked_keys()?;
    loop {
        let path = format!("keys/{}.json", keys.version() + 1);
        match client.fetch_small(&path, 64 * 1024) {
            Ok(Some(doc)) => match keys.rotate(&doc) {
                Ok(next) => keys = next,
                Err(e) => return Err(UpdateError::Manifest(format!("{path}: {e}"))),
            },
            Ok(None) => break,
            Err(e) => return Err(UpdateError::Fetch(e.to_string())),
        }
    }
    let bytes = client
        .fetch_manifest(&cfg.channel)
        .map_err(|e| UpdateError::Fetch(e.to_string()))?;
    let ctx = CheckContext {
        keys: &keys,
        channel: cfg.channel,
        running,
        now: Timestamp::now(),
        allow_downgrade: cfg.allow_downgrade,
    };
    match manifest::check(&bytes, &ctx).map_err(|e| UpdateError::Manifest(e.to_string()))? {
        Outcome::UpToDate(_) => Ok(None),
        Outcome::Update { manifest, .. } => Ok(Some(manifest)),
    }
}

/// The devices and files the other slot is written to.
#[derive(Debug)]
struct Targets {
    usr: PathBuf,
    verity: PathBuf,
    kernel: String,
    initramfs: String,
    slot: Slot,
}

fn targets(slot: Slot) -> Result<Targets, UpdateError> {
    let parts = crate::init::system::partitions();
    let find = |name: String| {
        parts
            .iter()
            .find(|p| p.partname.as_deref() == Some(name.as_str()))
            .map(|p| PathBuf::from(format!("/dev/{}", p.name)))
            .ok_or(UpdateError::OneSlot)
    };
    Ok(Targets {
        usr: find(format!("usr-{slot}"))?,
        verity: find(format!("usr-{slot}-verity"))?,
        kernel: format!("vmlinuz-{}", slot.letter().to_ascii_lowercase()),
        initramfs: format!("initrd-{}", slot.letter().to_ascii_lowercase()),
        slot,
    })
}

/// Writes verified chunks to the other slot's partitions and ESP files.
struct SlotSink<'a> {
    esp: &'a Esp,
    usr: std::fs::File,
    verity: std::fs::File,
    kernel: std::fs::File,
    initramfs: std::fs::File,
}

impl Sink for SlotSink<'_> {
    fn write(&mut self, segment: SegmentKind, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let f = match segment {
            SegmentKind::Usr => &self.usr,
            SegmentKind::UsrVerity => &self.verity,
            SegmentKind::Kernel => &self.kernel,
            SegmentKind::Initramfs => &self.initramfs,
        };
        let _ = self.esp;
        super::esp::write_at(f, offset, data)
    }

    fn sync(&mut self) -> std::io::Result<()> {
        for f in [&self.usr, &self.verity, &self.kernel, &self.initramfs] {
            f.sync_data()?;
        }
        Ok(())
    }
}

/// Progress of a download, saved so that a restart resumes.
struct Progress<'a> {
    state: &'a mut AgentState,
    record: DownloadRecord,
}

impl DownloadEnv for Progress<'_> {
    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }

    fn random(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
        u64::from_ne_bytes(b)
    }

    fn progress(&mut self, v: &StreamVerifier) {
        self.record.chunks_done = v.chunks_done();
        self.state.download = Some(self.record.clone());
        let _ = save_state(self.state);
    }
}

/// Installs `manifest` into the other slot and arms it (see the module documentation).
/// Returns the slot armed.
pub fn apply(manifest: &VerifiedManifest, cmdline: &str) -> Result<Slot, UpdateError> {
    let booted = booted(cmdline).ok_or(UpdateError::NoSlot)?;
    let cfg = load_config()?;
    let url = cfg.url.as_deref().ok_or(UpdateError::Disabled)?;
    let esp = Esp::mount()?;
    let mut block = esp.read_env()?;
    let env = SlotEnv::from_block(&block);
    // Disarm the other slot before a byte of it changes.
    let (env, other) =
        slots::begin_install(&env, booted).map_err(|e| UpdateError::Slots(e.to_string()))?;
    env.apply(&mut block);
    esp.write_env(&block)?;
    let t = targets(other)?;
    let (mut state, _) = load_state();
    let body = manifest.body();
    let payload_sha = hex::encode(body.payload.sha256.0);
    // Resume only the same payload into the same slot; re-check what was written first.
    let resume = state
        .download
        .as_ref()
        .filter(|d| {
            d.slot == other && d.payload_sha256 == payload_sha && d.version == manifest.version()
        })
        .map(|d| d.chunks_done)
        .unwrap_or(0);
    let fresh = resume == 0;
    let open = |p: &Path| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .map_err(io(p.display().to_string()))
    };
    let mut sink = SlotSink {
        esp: &esp,
        usr: open(&t.usr)?,
        verity: open(&t.verity)?,
        kernel: esp.create_new(&t.kernel, fresh)?,
        initramfs: esp.create_new(&t.initramfs, fresh)?,
    };
    let mut verifier = if fresh {
        StreamVerifier::new(manifest)
    } else {
        StreamVerifier::resume(manifest, resume)
            .map_err(|e| UpdateError::Manifest(e.to_string()))?
    };
    let record = DownloadRecord {
        version: manifest.version(),
        slot: other,
        payload_sha256: payload_sha,
        chunks_done: verifier.chunks_done(),
    };
    let client =
        Client::new(url, FetchOptions::default()).map_err(|e| UpdateError::Fetch(e.to_string()))?;
    {
        let mut progress = Progress {
            state: &mut state,
            record,
        };
        client
            .download(manifest, &mut verifier, &mut sink, &mut progress)
            .map_err(|e| UpdateError::Fetch(e.to_string()))?;
    }
    verifier
        .finish()
        .map_err(|e| UpdateError::Manifest(e.to_string()))?;
    for f in [
        &mut sink.usr,
        &mut sink.verity,
        &mut sink.kernel,
        &mut sink.initramfs,
    ] {
        super::esp::flush(f).map_err(io("flush"))?;
    }
    drop(sink);
    // Read everything back from where it was written: chunks, hashes, the verity root.
    for (kind, path) in [
        (SegmentKind::Usr, t.usr.clone()),
        (SegmentKind::UsrVerity, t.verity.clone()),
        (SegmentKind::Kernel, esp.path(&format!("{}.new", t.kernel))),
        (
            SegmentKind::Initramfs,
            esp.path(&format!("{}.new", t.initramfs)),
        ),
    ] {
        readback(manifest, kind, &path)?;
    }
    esp.commit_new(&t.kernel)?;
    esp.commit_new(&t.initramfs)?;
    set_partuuids(&t, &body.system.root_hash.0)?;
    let mut block = esp.read_env()?;
    let env = SlotEnv::from_block(&block);
    let armed = slots::arm(&env, booted).map_err(|e| UpdateError::Slots(e.to_string()))?;
    armed.apply(&mut block);
    esp.write_env(&block)?;
    state.download = None;
    state.slots[slot_index(t.slot)] = Some(SlotRecord {
        version: manifest.version(),
        root_hash: hex::encode(body.system.root_hash.0),
        installed: Timestamp::now(),
    });
    state.last_error = None;
    save_state(&state)?;
    Ok(t.slot)
}

fn readback(m: &VerifiedManifest, kind: SegmentKind, path: &Path) -> Result<(), UpdateError> {
    let mut c = ReadbackChecker::new(m, kind)
        .ok_or_else(|| UpdateError::Readback(kind.name(), "no such segment".into()))?;
    let len = c.size();
    let mut f = std::fs::File::open(path).map_err(io(path.display().to_string()))?;
    f.seek(SeekFrom::Start(0))
        .map_err(io(path.display().to_string()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = f
            .read(&mut buf[..want])
            .map_err(io(path.display().to_string()))?;
        if n == 0 {
            return Err(UpdateError::Readback(kind.name(), "ends early".into()));
        }
        c.update(&buf[..n])
            .map_err(|e| UpdateError::Readback(kind.name(), e.to_string()))?;
        left -= n as u64;
    }
    c.finish()
        .map_err(|e| UpdateError::Readback(kind.name(), e.to_string()))
}

/// The GPT edit that makes the new slot findable: `usr-Y` and `usr-Y-verity` get the two halves
/// of its root hash as PARTUUIDs, and lose the "no auto" bit of an empty slot.
fn set_partuuids(t: &Targets, root_hash: &[u8; 32]) -> Result<(), UpdateError> {
    use crate::cloud::gpt;
    let usr = partition_number(&t.usr)?;
    let verity = partition_number(&t.verity)?;
    let disk = disk_device(&t.usr)?;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk)
        .map_err(io(disk.display().to_string()))?;
    let disk_sectors = f
        .seek(SeekFrom::End(0))
        .map_err(io(disk.display().to_string()))?
        / gpt::SECTOR;
    let mut first = [0u8; 16];
    first.copy_from_slice(&root_hash[..16]);
    let mut last = [0u8; 16];
    last.copy_from_slice(&root_hash[16..]);
    for (number, id) in [(usr, first), (verity, last)] {
        let mut lba01 = vec![0u8; 2 * gpt::SECTOR as usize];
        f.seek(SeekFrom::Start(0)).map_err(io("gpt"))?;
        f.read_exact(&mut lba01).map_err(io("gpt"))?;
        let len = gpt::head_len(&lba01[gpt::SECTOR as usize..])
            .ok_or_else(|| UpdateError::Gpt("no GPT header".into()))?;
        let mut head = vec![0u8; len as usize];
        f.seek(SeekFrom::Start(0)).map_err(io("gpt"))?;
        f.read_exact(&mut head).map_err(io("gpt"))?;
        let writes = gpt::set_identity(
            &head,
            disk_sectors,
            number,
            gpt::uuid_to_gpt(id),
            gpt::NO_AUTO,
        )
        .map_err(|e| UpdateError::Gpt(e.to_string()))?;
        for (off, bytes) in writes {
            f.seek(SeekFrom::Start(off)).map_err(io("gpt"))?;
            std::io::Write::write_all(&mut f, &bytes).map_err(io("gpt"))?;
            f.sync_all().map_err(io("gpt"))?;
        }
    }
    Ok(())
}

fn partition_number(dev: &Path) -> Result<u32, UpdateError> {
    let name = dev
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| UpdateError::Gpt(format!("{}: no name", dev.display())))?;
    std::fs::read_to_string(format!("/sys/class/block/{name}/partition"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| UpdateError::Gpt(format!("{name} is not a partition")))
}

fn disk_device(dev: &Path) -> Result<PathBuf, UpdateError> {
    let name = dev
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| UpdateError::Gpt(format!("{}: no name", dev.display())))?;
    let real = std::fs::canonicalize(format!("/sys/class/block/{name}"))
        .map_err(io(format!("/sys/class/block/{name}")))?;
    let disk = real
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .ok_or_else(|| UpdateError::Gpt(format!("{name}: no disk")))?;
    Ok(PathBuf::from(format!("/dev/{disk}")))
}

/// `virga update rollback`: the other (good) slot first again, then reboot.
pub fn rollback(cmdline: &str) -> Result<Slot, UpdateError> {
    let booted = booted(cmdline).ok_or(UpdateError::NoSlot)?;
    let esp = Esp::mount()?;
    let mut block = esp.read_env()?;
    let env = SlotEnv::from_block(&block);
    let next =
        slots::manual_rollback(&env, booted).map_err(|e| UpdateError::Slots(e.to_string()))?;
    next.apply(&mut block);
    esp.write_env(&block)?;
    Ok(booted.slot.other())
}
