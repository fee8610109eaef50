//! SSH keys `virga run` injects into guests and `virga ssh` logs in with.
//!
//! virga keeps its own ed25519 key pair under `$XDG_DATA_HOME/virga/ssh/` (else
//! `~/.local/share/virga/ssh/`), made once with `ssh-keygen`. Guests get that public key plus the
//! user's default identities (`~/.ssh/id_{ed25519,ecdsa,rsa}.pub`), so both `virga ssh` and a plain `ssh` work.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Directory holding virga's key pair.
pub fn key_dir() -> PathBuf {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".local/share"));
    data.join("virga/ssh")
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// virga's private key, created on first use.
pub fn virga_key() -> anyhow::Result<PathBuf> {
    let dir = key_dir();
    let key = dir.join("id_ed25519");
    if key.is_file() && key.with_extension("pub").is_file() {
        return Ok(key);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "virga", "-f"])
        .arg(&key)
        .status()
        .context("cannot run ssh-keygen; install it with `sudo apt-get install openssh-client`")?;
    if !status.success() {
        bail!("ssh-keygen failed ({status}) creating {}", key.display());
    }
    Ok(key)
}

/// Public keys to inject: virga's own, then the user's default identities (the same ones
/// `virga seed` injects: `~/.ssh/id_{ed25519,ecdsa,rsa}.pub`).
pub fn public_keys() -> anyhow::Result<Vec<String>> {
    let mut keys = vec![read_key(&virga_key()?.with_extension("pub"))?];
    for k in metadata_server::default_public_keys(&home()) {
        if !keys.contains(&k.key) {
            keys.push(k.key);
        }
    }
    Ok(keys)
}

fn read_key(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .unwrap_or("");
    if line.split_whitespace().count() < 2 {
        bail!("{} is not an OpenSSH public key", path.display());
    }
    Ok(line.trim().to_owned())
}
