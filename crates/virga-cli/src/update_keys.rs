//! `virga keys new|rotate`: the ed25519 keys that sign update manifests (the `update` crate's
//! key formats and trust model; `docs/updates.md`).
//!
//! A key directory holds `update.key` (secret, mode 0600), `update.pub` and `keyset.json` (the
//! key set to bake into images). Keys are never overwritten.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use update::{KeySet, SecretKey};

/// Secret key file name in a key directory.
pub const SECRET: &str = "update.key";
/// Public key file name.
pub const PUBLIC: &str = "update.pub";
/// Key set file name.
pub const KEYSET: &str = "keyset.json";

/// `virga keys`.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Make a new signing key: DIR/update.key (secret, 0600), DIR/update.pub and
    /// DIR/keyset.json (version 1, to bake into images).
    New {
        /// Directory to write (created; existing key files are never overwritten).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Replace the signing key: a new key in --out, the next key set, and that key set signed
    /// by the current key (machines that trust the current set follow it).
    Rotate {
        /// The current key directory (update.key, keyset.json).
        #[arg(long, value_name = "DIR")]
        keys: PathBuf,
        /// Directory for the new key and key set.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Keep trusting the current key in the new set (for an overlap period).
        #[arg(long)]
        keep_old: bool,
        /// Also publish the rotation as REPO/keys/<version>.json.
        #[arg(long, value_name = "REPO")]
        repo: Option<PathBuf>,
    },
}

/// Runs `virga keys …`.
pub fn run(cmd: KeysCommand) -> Result<()> {
    match cmd {
        KeysCommand::New { out } => {
            let key = new_key()?;
            let set = KeySet::new(1, vec![key.public()])?;
            write_key_dir(&out, &key, &set)?;
            println!("key {} written to {}", key.id(), out.display());
            Ok(())
        }
        KeysCommand::Rotate {
            keys,
            out,
            keep_old,
            repo,
        } => rotate(&keys, &out, keep_old, repo.as_deref()),
    }
}

fn new_key() -> Result<SecretKey> {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .context("reading /dev/urandom for a new key")?;
    Ok(SecretKey::from_seed(seed))
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow::anyhow!(
                    "{} exists: key files are never overwritten (choose another directory)",
                    path.display()
                )
            } else {
                anyhow::anyhow!("cannot create {}: {e}", path.display())
            }
        })?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn write_key_dir(dir: &Path, key: &SecretKey, set: &KeySet) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for name in [SECRET, PUBLIC, KEYSET] {
        if dir.join(name).exists() {
            bail!(
                "{} exists: key files are never overwritten (choose another --out)",
                dir.join(name).display()
            );
        }
    }
    write_new(&dir.join(SECRET), &key.to_file(), 0o600)?;
    write_new(&dir.join(PUBLIC), &key.public().to_file(), 0o644)?;
    write_new(&dir.join(KEYSET), &set.to_json(), 0o644)?;
    Ok(())
}

/// Reads a secret key file, refusing one that others can read.
pub fn read_secret(path: &Path) -> Result<SecretKey> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read the signing key {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{}: permissions {mode:04o} are too open for a secret key; run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    SecretKey::from_file(&bytes)
        .with_context(|| format!("{} is not a virga update secret key", path.display()))
}

fn read_keyset(path: &Path) -> Result<KeySet> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    KeySet::from_json(&bytes).with_context(|| format!("{} is not a virga key set", path.display()))
}

/// Writes `data` to `path` atomically (temp file in the same directory, fsync, rename).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

fn rotate(keys: &Path, out: &Path, keep_old: bool, repo: Option<&Path>) -> Result<()> {
    let old = read_secret(&keys.join(SECRET))?;
    let set = read_keyset(&keys.join(KEYSET))?;
    if set.get(&old.id()).is_none() {
        bail!(
            "{} (key {}) is not in {}: it cannot sign a rotation of that key set",
            keys.join(SECRET).display(),
            old.id(),
            keys.join(KEYSET).display()
        );
    }
    let new = new_key()?;
    let mut members = vec![new.public()];
    if keep_old {
        members.extend(set.keys().iter().cloned());
    }
    let next = KeySet::new(set.version() + 1, members)?;
    let rotation = set.sign_rotation(&next, &old)?;
    write_key_dir(out, &new, &next)?;
    let name = format!("rotation-{}.json", next.version());
    write_new(&out.join(&name), &rotation, 0o644)?;
    if let Some(repo) = repo {
        let dest = repo.join("keys").join(format!("{}.json", next.version()));
        if let Ok(existing) = std::fs::read(&dest)
            && existing != rotation
        {
            bail!(
                "{} exists with another rotation: key set version {} was already published",
                dest.display(),
                next.version()
            );
        }
        write_atomic(&dest, &rotation)?;
        println!("published {}", dest.display());
    }
    println!(
        "key {} (key set version {}) written to {}; the rotation is signed by {}",
        new.id(),
        next.version(),
        out.display(),
        old.id()
    );
    Ok(())
}
