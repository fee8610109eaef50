//! Host keys: generated once, stored in OpenSSH format, reused, and announced on the console.
//!
//! Files in the host key directory, named as OpenSSH names them so `ssh-keygen -l -f` and other
//! tools work on them: `ssh_host_ed25519_key`, `ssh_host_ecdsa_key` (NIST P-256) and, when
//! enabled, `ssh_host_rsa_key`, each with its `.pub`. Private keys are written with mode 0600
//! through a temporary file and `rename`, so a crash never leaves half a key.
//!
//! When an instance id is given, it is recorded in `instance-id` next to the keys; a different
//! (or missing) record means the directory belongs to another instance (e.g. a disk cloned from
//! a snapshot), and the keys are replaced — cloud-init's `ssh_deletekeys` behaviour.
//!
//! RSA is off by default: generating a 3072-bit key takes seconds under QEMU TCG (see
//! `docs/ssh.md`), and every current client accepts Ed25519 or ECDSA.
#![allow(
    clippy::disallowed_methods,
    reason = "host keys are made and read before the runtime starts, in root's own directory"
)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, EcdsaCurve, HashAlg, PrivateKey};

use crate::SshError;

/// Which host keys to have and how to label them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeyOptions {
    /// Also keep an RSA host key (slow to generate under emulation; off by default).
    pub rsa: bool,
    /// RSA modulus size when generating.
    pub rsa_bits: usize,
    /// Comment stored in new keys; `None` means `root@<hostname>` as OpenSSH's keygen does.
    pub comment: Option<String>,
    /// The instance the keys belong to; keys recorded for another instance are replaced.
    pub instance_id: Option<String>,
}

impl Default for HostKeyOptions {
    fn default() -> Self {
        HostKeyOptions {
            rsa: false,
            rsa_bits: 3072,
            comment: None,
            instance_id: None,
        }
    }
}

/// What the console and the logs say about one host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeyInfo {
    /// Key type as in the public key line (`ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`).
    pub key_type: String,
    /// Upper-case family as `ssh-keygen -l` prints it: `ED25519`, `ECDSA`, `RSA`.
    pub family: &'static str,
    /// Key size in bits as `ssh-keygen -l` prints it.
    pub bits: u32,
    /// The public key line (`ssh-ed25519 AAAA… root@host`).
    pub public_line: String,
    /// SHA-256 fingerprint (`SHA256:…`, unpadded base64).
    pub fingerprint: String,
    /// The key's comment.
    pub comment: String,
    /// The private key file.
    pub path: PathBuf,
}

impl HostKeyInfo {
    fn from_key(key: &PrivateKey, path: PathBuf) -> Result<HostKeyInfo, SshError> {
        let public = key.public_key();
        let (family, bits) = match key.algorithm() {
            Algorithm::Ed25519 => ("ED25519", 256),
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            } => ("ECDSA", 256),
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP384,
            } => ("ECDSA", 384),
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP521,
            } => ("ECDSA", 521),
            Algorithm::Rsa { .. } => (
                "RSA",
                public.key_data().rsa().map(|r| r.key_size()).unwrap_or(0),
            ),
            other => {
                return Err(SshError::HostKey {
                    path,
                    reason: format!("unsupported host key type {}", other.as_str()),
                });
            }
        };
        let public_line = public.to_openssh().map_err(|e| SshError::HostKey {
            path: path.clone(),
            reason: format!("cannot encode public key: {e}"),
        })?;
        Ok(HostKeyInfo {
            key_type: key.algorithm().as_str().to_string(),
            family,
            bits,
            public_line,
            fingerprint: public.fingerprint(HashAlg::Sha256).to_string(),
            comment: key.comment().to_string(),
            path,
        })
    }

    /// The line `ssh-keygen -l -f` prints for this key: `256 SHA256:… root@host (ED25519)`.
    pub fn fingerprint_line(&self) -> String {
        let comment = if self.comment.is_empty() {
            "no comment"
        } else {
            &self.comment
        };
        format!(
            "{} {} {} ({})",
            self.bits, self.fingerprint, comment, self.family
        )
    }
}

/// Host keys loaded for serving, with what to announce about them.
pub struct HostKeys {
    /// Private keys, in the order of [`HostKeys::info`].
    pub keys: Vec<PrivateKey>,
    /// Public facts, sorted by file name (ecdsa, ed25519, rsa) as cloud-init lists them.
    pub info: Vec<HostKeyInfo>,
}

impl std::fmt::Debug for HostKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostKeys")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// The kinds of key kept, by file name.
fn wanted(opts: &HostKeyOptions) -> Vec<(&'static str, Algorithm)> {
    let mut v = vec![
        (
            "ssh_host_ecdsa_key",
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
        ),
        ("ssh_host_ed25519_key", Algorithm::Ed25519),
    ];
    if opts.rsa {
        v.push(("ssh_host_rsa_key", Algorithm::Rsa { hash: None }));
    }
    v
}

/// All file names a host key directory may hold (removed when the instance changes).
const ALL_KEY_FILES: &[&str] = &[
    "ssh_host_ecdsa_key",
    "ssh_host_ed25519_key",
    "ssh_host_rsa_key",
];
/// Name of the instance-id record.
pub const INSTANCE_ID_FILE: &str = "instance-id";

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> SshError + 'a {
    move |source| SshError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Makes sure the host keys exist in `dir` (creating the directory if needed) and loads them.
///
/// Existing keys are reused (their mode is tightened to 0600 if it was looser); missing ones
/// are generated. An unreadable key file is moved aside to `<name>.corrupt` and replaced.
pub fn ensure_host_keys(dir: &Path, opts: &HostKeyOptions) -> Result<HostKeys, SshError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir, "create host key directory"))?;
    if let Some(id) = &opts.instance_id {
        let record = dir.join(INSTANCE_ID_FILE);
        let recorded = std::fs::read_to_string(&record).ok();
        if recorded.as_deref().map(str::trim) != Some(id.as_str()) {
            for name in ALL_KEY_FILES {
                for file in [dir.join(name), dir.join(format!("{name}.pub"))] {
                    match std::fs::remove_file(&file) {
                        Ok(()) => tracing::info!(path = %file.display(),
                            "removed host key of another instance"),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_err(&file, "remove old host key")(e)),
                    }
                }
            }
            write_atomically(&record, format!("{id}\n").as_bytes(), 0o644)?;
        }
    }
    let comment = opts.comment.clone().unwrap_or_else(default_comment);
    let mut keys = Vec::new();
    let mut info = Vec::new();
    for (name, algorithm) in wanted(opts) {
        let path = dir.join(name);
        let key = match load_key(&path)? {
            Some(key) => key,
            None => {
                let started = std::time::Instant::now();
                let key = generate(algorithm.clone(), opts.rsa_bits, &comment, &path)?;
                save_key(&key, &path)?;
                tracing::info!(path = %path.display(), ms = started.elapsed().as_millis() as u64,
                    "generated host key");
                key
            }
        };
        info.push(HostKeyInfo::from_key(&key, path)?);
        keys.push(key);
    }
    Ok(HostKeys { keys, info })
}

/// `root@<hostname>`, the comment OpenSSH's host key generation uses.
fn default_comment() -> String {
    let uname = rustix::system::uname();
    let host = uname.nodename().to_string_lossy();
    format!("root@{}", if host.is_empty() { "localhost" } else { &host })
}

fn generate(
    algorithm: Algorithm,
    rsa_bits: usize,
    comment: &str,
    path: &Path,
) -> Result<PrivateKey, SshError> {
    let mut rng = rand::rng();
    let fail = |e: russh::keys::ssh_key::Error| SshError::HostKey {
        path: path.to_path_buf(),
        reason: format!("key generation failed: {e}"),
    };
    let mut key = match algorithm {
        #[cfg(feature = "rsa")]
        Algorithm::Rsa { .. } => {
            use russh::keys::ssh_key::private::{KeypairData, RsaKeypair};
            let pair = RsaKeypair::random(&mut rng, rsa_bits).map_err(fail)?;
            PrivateKey::new(KeypairData::from(pair), comment).map_err(fail)?
        }
        #[cfg(not(feature = "rsa"))]
        Algorithm::Rsa { .. } => {
            let _ = rsa_bits;
            return Err(SshError::HostKey {
                path: path.to_path_buf(),
                reason: "RSA support is not built in (feature `rsa`)".into(),
            });
        }
        other => PrivateKey::random(&mut rng, other).map_err(fail)?,
    };
    key.set_comment(comment);
    Ok(key)
}

/// Loads a key file; `Ok(None)` if it is missing or was unusable (then moved aside).
fn load_key(path: &Path) -> Result<Option<PrivateKey>, SshError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path, "read host key")(e)),
    };
    match PrivateKey::from_openssh(&text) {
        Ok(key) if !key.is_encrypted() => {
            let meta = std::fs::metadata(path).map_err(io_err(path, "stat host key"))?;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "host key readable by others; mode set to 0600");
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io_err(path, "chmod host key"))?;
            }
            // Keep the .pub next to it in step (it may be missing, e.g. after a manual copy).
            let pub_path = pub_path(path);
            if !pub_path.exists() {
                write_public(&key, &pub_path)?;
            }
            Ok(Some(key))
        }
        Ok(_) | Err(_) => {
            let aside = path.with_extension("corrupt");
            tracing::warn!(path = %path.display(), aside = %aside.display(),
                "host key unreadable or encrypted; moved aside and regenerated");
            std::fs::rename(path, &aside).map_err(io_err(path, "move aside host key"))?;
            Ok(None)
        }
    }
}

fn pub_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

fn save_key(key: &PrivateKey, path: &Path) -> Result<(), SshError> {
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| SshError::HostKey {
            path: path.to_path_buf(),
            reason: format!("cannot encode private key: {e}"),
        })?;
    write_atomically(path, pem.as_bytes(), 0o600)?;
    write_public(key, &pub_path(path))
}

fn write_public(key: &PrivateKey, path: &Path) -> Result<(), SshError> {
    let line = key
        .public_key()
        .to_openssh()
        .map_err(|e| SshError::HostKey {
            path: path.to_path_buf(),
            reason: format!("cannot encode public key: {e}"),
        })?;
    write_atomically(path, format!("{line}\n").as_bytes(), 0o644)
}

/// Writes `data` to `path` with `mode` through a temporary file, fsync and rename.
fn write_atomically(path: &Path, data: &[u8], mode: u32) -> Result<(), SshError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp, "create key file"))?;
    f.write_all(data).map_err(io_err(&tmp, "write key file"))?;
    f.sync_all().map_err(io_err(&tmp, "sync key file"))?;
    // The umask may have masked bits off a public file's mode; set it exactly.
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(io_err(&tmp, "chmod key file"))?;
    std::fs::rename(&tmp, path).map_err(io_err(path, "rename key file"))?;
    Ok(())
}

/// The public-key block cloud tooling scrapes from the console:
///
/// ```text
/// -----BEGIN SSH HOST KEY KEYS-----
/// ecdsa-sha2-nistp256 AAAA… root@host
/// ssh-ed25519 AAAA… root@host
/// -----END SSH HOST KEY KEYS-----
/// ```
pub fn render_keys_block(info: &[HostKeyInfo]) -> String {
    let mut s = String::from("-----BEGIN SSH HOST KEY KEYS-----\n");
    for k in info {
        let _ = writeln!(s, "{}", k.public_line);
    }
    s.push_str("-----END SSH HOST KEY KEYS-----\n");
    s
}

/// The fingerprint block as cloud-init's `write-ssh-key-fingerprints` prints it (without the
/// syslog tag): a blank line, a rule of 61 `#`, the BEGIN marker, one `ssh-keygen -l` line per
/// key, the END marker and the rule again.
pub fn render_fingerprints_block(info: &[HostKeyInfo]) -> String {
    let rule = "#".repeat(61);
    let mut s = format!("\n{rule}\n-----BEGIN SSH HOST KEY FINGERPRINTS-----\n");
    for k in info {
        let _ = writeln!(s, "{}", k.fingerprint_line());
    }
    let _ = writeln!(s, "-----END SSH HOST KEY FINGERPRINTS-----\n{rule}");
    s
}

/// Both blocks, fingerprints first, as cloud-init prints them.
pub fn render_console_blocks(info: &[HostKeyInfo]) -> String {
    let mut s = render_fingerprints_block(info);
    s.push_str(&render_keys_block(info));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> HostKeyOptions {
        HostKeyOptions {
            comment: Some("root@test".into()),
            ..HostKeyOptions::default()
        }
    }

    #[test]
    fn generates_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_host_keys(dir.path(), &opts()).unwrap();
        assert_eq!(first.info.len(), 2);
        assert_eq!(first.info[0].key_type, "ecdsa-sha2-nistp256");
        assert_eq!(first.info[1].key_type, "ssh-ed25519");
        for k in &first.info {
            let mode = std::fs::metadata(&k.path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", k.path.display());
            let public = std::fs::read_to_string(pub_path(&k.path)).unwrap();
            assert_eq!(public.trim_end(), k.public_line);
            assert!(k.public_line.ends_with(" root@test"));
        }
        let second = ensure_host_keys(dir.path(), &opts()).unwrap();
        assert_eq!(first.info, second.info, "keys are reused, not regenerated");
    }

    #[test]
    fn loosened_mode_is_tightened_and_corrupt_key_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_host_keys(dir.path(), &opts()).unwrap();
        let ed = &first.info[1].path;
        std::fs::set_permissions(ed, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&first.info[0].path, "not a key").unwrap();
        let second = ensure_host_keys(dir.path(), &opts()).unwrap();
        assert_eq!(
            std::fs::metadata(ed).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(first.info[1], second.info[1]);
        assert_ne!(first.info[0].fingerprint, second.info[0].fingerprint);
        assert!(dir.path().join("ssh_host_ecdsa_key.corrupt").exists());
    }

    #[test]
    fn new_instance_gets_new_keys() {
        let dir = tempfile::tempdir().unwrap();
        let a = HostKeyOptions {
            instance_id: Some("i-1".into()),
            ..opts()
        };
        let b = HostKeyOptions {
            instance_id: Some("i-2".into()),
            ..opts()
        };
        let k1 = ensure_host_keys(dir.path(), &a).unwrap();
        let k1again = ensure_host_keys(dir.path(), &a).unwrap();
        assert_eq!(k1.info, k1again.info);
        let k2 = ensure_host_keys(dir.path(), &b).unwrap();
        assert_ne!(k1.info[1].fingerprint, k2.info[1].fingerprint);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(INSTANCE_ID_FILE)).unwrap(),
            "i-2\n"
        );
    }

    #[test]
    fn console_blocks_have_the_scraped_shape() {
        let info = vec![HostKeyInfo {
            key_type: "ssh-ed25519".into(),
            family: "ED25519",
            bits: 256,
            public_line: "ssh-ed25519 AAAAC3Nza root@h".into(),
            fingerprint: "SHA256:abc".into(),
            comment: "root@h".into(),
            path: PathBuf::from("/x"),
        }];
        assert_eq!(
            render_keys_block(&info),
            "-----BEGIN SSH HOST KEY KEYS-----\nssh-ed25519 AAAAC3Nza root@h\n\
             -----END SSH HOST KEY KEYS-----\n"
        );
        let rule = "#".repeat(61);
        assert_eq!(
            render_fingerprints_block(&info),
            format!(
                "\n{rule}\n-----BEGIN SSH HOST KEY FINGERPRINTS-----\n256 SHA256:abc root@h \
                 (ED25519)\n-----END SSH HOST KEY FINGERPRINTS-----\n{rule}\n"
            )
        );
    }
}
