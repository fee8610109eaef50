//! Update signing keys: ed25519 key pairs, the trusted key set and its rotation.
//!
//! **Trust model.** A machine trusts the key set baked into its verified system image (a
//! [`KeySet`] document, version N, unsigned: it is trusted because dm-verity vouches for the
//! image that carries it). A channel manifest is accepted when at least one signature on it is
//! by a key of that set (threshold 1). To rotate, the release owner publishes a rotation: the
//! next key set (version N+1) signed by a key of set N. A machine walks rotations one version at
//! a time from its baked-in set ([`KeySet::rotate`]), so a machine that still trusts only the
//! old key can move to the new one; nothing else can change what it trusts, and a rotation can
//! never go back to an older version. The walk is repeated from the baked-in set whenever keys
//! are needed (rotation documents may be cached on the state partition, but their signatures
//! are checked every time). Images built after a rotation bake the new set in. A compromised
//! key can rotate to a key of the attacker's choice; recovering from that needs images with a
//! new baked-in set (the same as any threshold-1 scheme).
//!
//! Key ids are the lowercase hex SHA-256 of the 32-byte public key. Files:
//! - secret key `{"type":"virga-update-secret-key","keyid":…,"secret":base64(32-byte seed)}`
//!   (mode 0600, written by `virga keys new`),
//! - public key `{"type":"virga-update-public-key","keyid":…,"public":base64(32 bytes)}`,
//! - key set `{"type":"virga-keyset","version":N,"keys":[{"keyid":…,"public":…}]}`, and a
//!   rotation is a key set wrapped in a signed envelope ([`crate::envelope`], context
//!   [`crate::envelope::KEYSET_CONTEXT`]).

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::envelope::{self, KEYSET_CONTEXT, SignatureError};

/// Largest key-set or key file accepted.
pub const MAX_KEY_DOCUMENT: usize = 64 * 1024;
/// Most keys in one set.
pub const MAX_KEYS: usize = 16;

/// What is wrong with a key, key file or key set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not the JSON document expected.
    #[error("not a {what}: {message}")]
    Format {
        /// The kind of document expected.
        what: &'static str,
        /// What the parser said.
        message: String,
    },
    /// The key id does not belong to the key.
    #[error("key id {keyid} does not match its key (expected {expected})")]
    KeyIdMismatch {
        /// As written.
        keyid: String,
        /// SHA-256 of the key.
        expected: String,
    },
    /// Not a valid ed25519 public key.
    #[error("key {0} is not a valid ed25519 public key")]
    BadKey(String),
    /// A key set without keys.
    #[error("a key set must hold at least one key")]
    Empty,
    /// Too many keys.
    #[error("a key set holds at most {MAX_KEYS} keys")]
    TooMany,
    /// The same key twice.
    #[error("key {0} is listed twice")]
    Duplicate(String),
    /// A rotation that is not the next version.
    #[error("key set rotation to version {got} does not follow the trusted version {have}")]
    RotationVersion {
        /// Trusted version.
        have: u64,
        /// Version of the rotation document.
        got: u64,
    },
    /// A rotation whose signature did not check out.
    #[error("key set rotation: {0}")]
    Signature(#[source] SignatureError),
}

/// A key id: SHA-256 of the public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 32]);

impl KeyId {
    /// The id of a 32-byte public key.
    pub fn of(public: &[u8; 32]) -> KeyId {
        KeyId(Sha256::digest(public).into())
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = ();
    /// Exactly 64 lowercase hex digits.
    fn from_str(s: &str) -> Result<Self, ()> {
        crate::manifest::Hex32::from_str(s)
            .map(|h| KeyId(h.0))
            .map_err(|_| ())
    }
}

/// A trusted public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    id: KeyId,
    key: VerifyingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id)
    }
}

/// A key as it appears in key files and key sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Hex SHA-256 of the public key.
    pub keyid: String,
    /// Base64 of the 32-byte public key.
    pub public: String,
}

impl PublicKey {
    /// From the 32 raw bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<PublicKey, KeyError> {
        let key = VerifyingKey::from_bytes(bytes)
            .map_err(|_| KeyError::BadKey(KeyId::of(bytes).to_string()))?;
        if key.is_weak() {
            return Err(KeyError::BadKey(KeyId::of(bytes).to_string()));
        }
        Ok(PublicKey {
            id: KeyId::of(bytes),
            key,
        })
    }

    /// From a key entry, checking that the id belongs to the key.
    pub fn from_entry(e: &KeyEntry) -> Result<PublicKey, KeyError> {
        let bytes = B64
            .decode(e.public.as_bytes())
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
            .ok_or_else(|| KeyError::BadKey(e.keyid.clone()))?;
        let k = PublicKey::from_bytes(&bytes)?;
        if k.id.to_string() != e.keyid {
            return Err(KeyError::KeyIdMismatch {
                keyid: e.keyid.chars().take(80).collect(),
                expected: k.id.to_string(),
            });
        }
        Ok(k)
    }

    /// The key id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key's entry form.
    pub fn entry(&self) -> KeyEntry {
        KeyEntry {
            keyid: self.id.to_string(),
            public: B64.encode(self.key.as_bytes()),
        }
    }

    pub(crate) fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The public key file (`virga-update-public-key`).
    pub fn to_file(&self) -> Vec<u8> {
        let e = self.entry();
        let doc = TypedKey {
            kind: PUBLIC_TYPE.into(),
            keyid: e.keyid,
            public: Some(e.public),
            secret: None,
        };
        to_json(&doc)
    }

    /// Reads a public key file.
    pub fn from_file(bytes: &[u8]) -> Result<PublicKey, KeyError> {
        let doc: TypedKey = parse_doc(bytes, "public key file")?;
        if doc.kind != PUBLIC_TYPE || doc.secret.is_some() {
            return Err(fmt_err("public key file", "wrong type"));
        }
        PublicKey::from_entry(&KeyEntry {
            keyid: doc.keyid,
            public: doc.public.unwrap_or_default(),
        })
    }
}

const SECRET_TYPE: &str = "virga-update-secret-key";
const PUBLIC_TYPE: &str = "virga-update-public-key";
const KEYSET_TYPE: &str = "virga-keyset";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TypedKey {
    #[serde(rename = "type")]
    kind: String,
    keyid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

fn fmt_err(what: &'static str, message: impl Into<String>) -> KeyError {
    KeyError::Format {
        what,
        message: message.into(),
    }
}

fn parse_doc<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, KeyError> {
    envelope::check_shape(bytes, MAX_KEY_DOCUMENT).map_err(|e| fmt_err(what, e.to_string()))?;
    serde_json::from_slice(bytes).map_err(|e| fmt_err(what, e.to_string()))
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // The types serialised here hold only strings and integers: this cannot fail.
    let mut out = serde_json::to_vec_pretty(v).unwrap_or_default();
    out.push(b'\n');
    out
}

/// A signing key (host side: `virga keys`, `virga release`).
pub struct SecretKey {
    key: SigningKey,
    id: KeyId,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.id)
    }
}

impl SecretKey {
    /// From a 32-byte seed (read it from the OS's random source to make a new key).
    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        let key = SigningKey::from_bytes(&seed);
        let id = KeyId::of(key.verifying_key().as_bytes());
        SecretKey { key, id }
    }

    /// The key id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// An ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// The secret key file (`virga-update-secret-key`); write it with mode 0600.
    pub fn to_file(&self) -> Vec<u8> {
        to_json(&TypedKey {
            kind: SECRET_TYPE.into(),
            keyid: self.id.to_string(),
            public: None,
            secret: Some(B64.encode(self.key.to_bytes())),
        })
    }

    /// Reads a secret key file.
    pub fn from_file(bytes: &[u8]) -> Result<SecretKey, KeyError> {
        let what = "secret key file";
        let doc: TypedKey = parse_doc(bytes, what)?;
        if doc.kind != SECRET_TYPE || doc.public.is_some() {
            return Err(fmt_err(what, format!("type is {:?}", doc.kind)));
        }
        let seed = doc
            .secret
            .and_then(|s| B64.decode(s.as_bytes()).ok())
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
            .ok_or_else(|| fmt_err(what, "`secret` is not 32 base64 bytes"))?;
        let k = SecretKey::from_seed(seed);
        if k.id.to_string() != doc.keyid {
            return Err(KeyError::KeyIdMismatch {
                keyid: doc.keyid.chars().take(80).collect(),
                expected: k.id.to_string(),
            });
        }
        Ok(k)
    }
}

/// The keys a machine trusts to sign updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet {
    version: u64,
    keys: Vec<PublicKey>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeySetDoc {
    #[serde(rename = "type")]
    kind: String,
    version: u64,
    keys: Vec<KeyEntry>,
}

impl KeySet {
    /// A set of `keys` at `version`: not empty, no duplicates, at most [`MAX_KEYS`].
    pub fn new(version: u64, keys: Vec<PublicKey>) -> Result<KeySet, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        if keys.len() > MAX_KEYS {
            return Err(KeyError::TooMany);
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.id == k.id) {
                return Err(KeyError::Duplicate(k.id.to_string()));
            }
        }
        Ok(KeySet { version, keys })
    }

    /// The empty set: what a machine without a baked-in key set has. Every verification
    /// against it fails ([`SignatureError::NoTrustedKeys`]).
    pub fn empty() -> KeySet {
        KeySet {
            version: 0,
            keys: Vec::new(),
        }
    }

    /// No keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The set's version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The key with this id, if trusted.
    pub fn get(&self, id: &KeyId) -> Option<&PublicKey> {
        self.keys.iter().find(|k| k.id == *id)
    }

    /// Trusted key ids.
    pub fn ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.iter().map(|k| k.id)
    }

    /// The keys.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    fn to_doc(&self) -> KeySetDoc {
        KeySetDoc {
            kind: KEYSET_TYPE.into(),
            version: self.version,
            keys: self.keys.iter().map(PublicKey::entry).collect(),
        }
    }

    fn from_doc(doc: KeySetDoc) -> Result<KeySet, KeyError> {
        if doc.kind != KEYSET_TYPE {
            return Err(fmt_err("key set", format!("type is {:?}", doc.kind)));
        }
        if doc.keys.len() > MAX_KEYS {
            return Err(KeyError::TooMany);
        }
        let keys = doc
            .keys
            .iter()
            .map(PublicKey::from_entry)
            .collect::<Result<Vec<_>, _>>()?;
        KeySet::new(doc.version, keys)
    }

    /// The key set file (unsigned: what an image bakes in).
    pub fn to_json(&self) -> Vec<u8> {
        to_json(&self.to_doc())
    }

    /// Reads a baked-in key set file.
    pub fn from_json(bytes: &[u8]) -> Result<KeySet, KeyError> {
        KeySet::from_doc(parse_doc(bytes, "key set")?)
    }

    /// A rotation to `next`, signed by `signer` (a key of this set).
    pub fn sign_rotation(&self, next: &KeySet, signer: &SecretKey) -> Result<Vec<u8>, KeyError> {
        if next.version != self.version + 1 {
            return Err(KeyError::RotationVersion {
                have: self.version,
                got: next.version,
            });
        }
        if self.get(&signer.id()).is_none() {
            return Err(KeyError::Signature(SignatureError::NotSigned {
                listed: vec![signer.id().to_string()],
                trusted: self.ids().map(|k| k.to_string()).collect(),
            }));
        }
        let body = serde_json::to_vec_pretty(&next.to_doc()).unwrap_or_default();
        Ok(envelope::seal(&body, KEYSET_CONTEXT, &[signer]))
    }

    /// Applies one rotation document: verified against this set, it must be the next version.
    pub fn rotate(&self, doc: &[u8]) -> Result<KeySet, KeyError> {
        let v = envelope::verify(doc, KEYSET_CONTEXT, self, MAX_KEY_DOCUMENT)
            .map_err(KeyError::Signature)?;
        let next = KeySet::from_doc(
            serde_json::from_slice(v.signed).map_err(|e| fmt_err("key set", e.to_string()))?,
        )?;
        if next.version != self.version + 1 {
            return Err(KeyError::RotationVersion {
                have: self.version,
                got: next.version,
            });
        }
        Ok(next)
    }

    /// Walks rotation documents in order from this set; stops at the first that fails and
    /// returns the last good set with that error.
    pub fn rotate_all<'a>(
        &self,
        docs: impl IntoIterator<Item = &'a [u8]>,
    ) -> (KeySet, Option<KeyError>) {
        let mut cur = self.clone();
        for d in docs {
            match cur.rotate(d) {
                Ok(next) => cur = next,
                Err(e) => return (cur, Some(e)),
            }
        }
        (cur, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip() {
        let k = SecretKey::from_seed([7; 32]);
        let back = SecretKey::from_file(&k.to_file()).unwrap();
        assert_eq!(back.id(), k.id());
        let p = PublicKey::from_file(&k.public().to_file()).unwrap();
        assert_eq!(p, k.public());
        // A secret file is not a public one and vice versa.
        assert!(PublicKey::from_file(&k.to_file()).is_err());
        assert!(SecretKey::from_file(&k.public().to_file()).is_err());
        // A key id that does not match.
        let s = String::from_utf8(k.public().to_file()).unwrap();
        let other = SecretKey::from_seed([8; 32]).id().to_string();
        let bad = s.replace(&k.id().to_string(), &other);
        assert!(matches!(
            PublicKey::from_file(bad.as_bytes()),
            Err(KeyError::KeyIdMismatch { .. })
        ));
        assert_eq!(k.id().to_string().len(), 64);
    }

    #[test]
    fn key_sets() {
        let (a, b) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
        let set = KeySet::new(1, vec![a.public()]).unwrap();
        assert_eq!(KeySet::from_json(&set.to_json()).unwrap(), set);
        assert_eq!(KeySet::new(1, vec![]), Err(KeyError::Empty));
        assert!(matches!(
            KeySet::new(1, vec![a.public(), a.public()]),
            Err(KeyError::Duplicate(_))
        ));
        assert!(KeySet::from_json(br#"{"type":"virga-keyset","version":1,"keys":[]}"#).is_err());
        assert!(KeySet::from_json(b"[[[[[[[[[[[[[]]]]]]]]]]]]]").is_err());
        let _ = b;
    }

    #[test]
    fn rotation_chain() {
        let (a, b, c) = (
            SecretKey::from_seed([1; 32]),
            SecretKey::from_seed([2; 32]),
            SecretKey::from_seed([3; 32]),
        );
        let v1 = KeySet::new(1, vec![a.public()]).unwrap();
        let v2 = KeySet::new(2, vec![a.public(), b.public()]).unwrap();
        let v3 = KeySet::new(3, vec![c.public()]).unwrap();
        let r2 = v1.sign_rotation(&v2, &a).unwrap();
        let r3 = v2.sign_rotation(&v3, &b).unwrap();
        assert_eq!(v1.rotate(&r2).unwrap(), v2);
        // A machine that trusts only v1 reaches v3 through v2.
        let (end, err) = v1.rotate_all([&r2[..], &r3[..]]);
        assert_eq!(end, v3);
        assert!(err.is_none());
        // Skipping a step fails: r3 is signed by b, which v1 does not trust.
        assert!(matches!(v1.rotate(&r3), Err(KeyError::Signature(_))));
        // Replaying an old rotation does not go back.
        assert!(matches!(
            v2.rotate(&r2),
            Err(KeyError::RotationVersion { have: 2, got: 2 })
        ));
        // A signer outside the set cannot rotate it.
        assert!(v1.sign_rotation(&v2, &c).is_err());
        let forged = KeySet::new(1, vec![c.public()])
            .unwrap()
            .sign_rotation(&v2, &c)
            .unwrap();
        assert!(v1.rotate(&forged).is_err());
        // The empty set trusts nothing, rotations included.
        assert!(matches!(
            KeySet::empty().rotate(&r2),
            Err(KeyError::Signature(SignatureError::NoTrustedKeys))
        ));
    }
}
