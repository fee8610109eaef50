//! Stateless IMDSv2 session tokens.
//!
//! With QEMU's `guestfwd=…-cmd:` every guest TCP connection is served by a new process, so a
//! token issued by one process must validate in another. Tokens therefore carry their own
//! expiry and are authenticated with HMAC-SHA256 under a secret the parent (`virga run`)
//! creates once per VM and hands to every server process through a 0600 file
//! (`--token-secret-file`) or the `VIRGA_IMDS_TOKEN_SECRET` environment variable (64 hex
//! digits).
//!
//! Format: `01` (format version) + expiry as 16 hex digits (Unix seconds) + the 64-hex-digit
//! HMAC of `"virga-imds-token\x01" || expiry (u64 big-endian)`. Time is an input, so the
//! logic is tested without a clock.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Environment variable that may carry the secret (64 hex digits).
pub const SECRET_ENV: &str = "VIRGA_IMDS_TOKEN_SECRET";
/// Shortest token lifetime a client may ask for, in seconds (as AWS).
pub const MIN_TTL: u32 = 1;
/// Longest token lifetime a client may ask for, in seconds (6 hours, as AWS).
pub const MAX_TTL: u32 = 21600;

const VERSION: &str = "01";
const TOKEN_LEN: usize = 2 + 16 + 64;
const DOMAIN: &[u8] = b"virga-imds-token\x01";

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token this server issued (wrong length, characters or version).
    #[error("malformed token")]
    Malformed,
    /// The signature does not match: issued under another secret, or tampered with.
    #[error("token signature does not match")]
    BadSignature,
    /// The token's lifetime is over.
    #[error("token expired")]
    Expired,
}

/// Problems with the secret itself.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret file could not be read or written.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// The secret file is readable by group or others.
    #[error("{path} is accessible by group or others (mode {mode:o}); chmod 600 it")]
    Permissions {
        /// The file.
        path: String,
        /// Its mode bits.
        mode: u32,
    },
    /// Not 64 hex digits.
    #[error("a token secret must be 64 hex digits (32 bytes)")]
    Format,
}

/// The HMAC key tokens are signed with.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey([u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(…)")
    }
}

impl TokenKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        TokenKey(bytes)
    }

    /// A fresh random key (from the kernel's CSPRNG, `/dev/urandom`).
    pub fn generate() -> Result<Self, SecretError> {
        let mut key = [0u8; 32];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .map_err(|source| SecretError::Io {
                context: "reading /dev/urandom".into(),
                source,
            })?;
        Ok(TokenKey(key))
    }

    /// Parses 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(s: &str) -> Result<Self, SecretError> {
        let bytes = hex::decode(s.trim()).map_err(|_| SecretError::Format)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| SecretError::Format)?;
        Ok(TokenKey(key))
    }

    /// The key as 64 hex digits (what the secret file and the environment variable hold).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Reads a secret file, refusing one that group or others can access.
    pub fn load(path: &Path) -> Result<Self, SecretError> {
        let io_err = |source| SecretError::Io {
            context: format!("reading the token secret {}", path.display()),
            source,
        };
        let meta = fs::metadata(path).map_err(io_err)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretError::Permissions {
                path: path.display().to_string(),
                mode,
            });
        }
        let mut text = String::new();
        fs::File::open(path)
            .and_then(|f| f.take(256).read_to_string(&mut text))
            .map_err(io_err)?;
        TokenKey::from_hex(&text)
    }

    /// Writes the key to a new file created with mode 0600 (fails if `path` exists).
    pub fn save_new(&self, path: &Path) -> Result<(), SecretError> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut f| f.write_all(format!("{}\n", self.to_hex()).as_bytes()))
            .map_err(|source| SecretError::Io {
                context: format!("writing the token secret {}", path.display()),
                source,
            })
    }

    /// The key from [`SECRET_ENV`], if set.
    pub fn from_env() -> Result<Option<Self>, SecretError> {
        match std::env::var(SECRET_ENV) {
            Ok(v) => TokenKey::from_hex(&v).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::Format),
        }
    }

    fn mac(&self, expiry: u64) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(DOMAIN);
        mac.update(&expiry.to_be_bytes());
        mac
    }

    /// Issues a token valid from `now` (Unix seconds) for `ttl` seconds.
    pub fn issue(&self, now: u64, ttl: u32) -> String {
        let expiry = now.saturating_add(u64::from(ttl));
        let tag = self.mac(expiry).finalize().into_bytes();
        format!("{VERSION}{expiry:016x}{}", hex::encode(tag))
    }

    /// Checks a token at time `now` (Unix seconds).
    pub fn validate(&self, token: &str, now: u64) -> Result<(), TokenError> {
        let token = token.trim();
        if token.len() != TOKEN_LEN
            || !token.starts_with(VERSION)
            || !token
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(TokenError::Malformed);
        }
        let expiry = u64::from_str_radix(&token[2..18], 16).map_err(|_| TokenError::Malformed)?;
        let tag = hex::decode(&token[18..]).map_err(|_| TokenError::Malformed)?;
        self.mac(expiry)
            .verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        if now >= expiry {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> TokenKey {
        TokenKey::from_bytes([b; 32])
    }

    #[test]
    fn issue_and_validate() {
        let k = key(7);
        let t = k.issue(1_000, 60);
        assert_eq!(t.len(), TOKEN_LEN);
        assert_eq!(k.validate(&t, 1_000), Ok(()));
        assert_eq!(k.validate(&t, 1_059), Ok(()));
        assert_eq!(k.validate(&t, 1_060), Err(TokenError::Expired));
        assert_eq!(key(8).validate(&t, 1_000), Err(TokenError::BadSignature));
    }

    #[test]
    fn tampering_is_detected() {
        let k = key(1);
        let t = k.issue(0, 21600);
        // Extending the expiry without the key breaks the signature.
        let forged = format!("01{:016x}{}", 99_999_999u64, &t[18..]);
        assert_eq!(k.validate(&forged, 10), Err(TokenError::BadSignature));
        for bad in [
            "",
            "01",
            &t[1..],
            &t.to_uppercase(),
            &format!("02{}", &t[2..]),
        ] {
            assert_eq!(k.validate(bad, 0), Err(TokenError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        // RFC 4231 test case 2, to pin the HMAC construction itself.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn secret_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("imds.key");
        let k = TokenKey::generate().unwrap();
        k.save_new(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(TokenKey::load(&p).unwrap(), k);
        assert!(k.save_new(&p).is_err(), "must not overwrite");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            TokenKey::load(&p),
            Err(SecretError::Permissions { .. })
        ));
        assert!(TokenKey::from_hex("abcd").is_err());
        assert_eq!(TokenKey::from_hex(&k.to_hex()).unwrap(), k);
    }
}
