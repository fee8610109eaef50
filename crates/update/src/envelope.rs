//! Signed JSON documents: `{"signed": {...}, "signatures": [{"keyid": "...", "sig": "..."}]}`.
//!
//! **What is signed** is the exact byte string of the `signed` member as it appears in the file
//! (from its `{` to its matching `}`), prefixed by a context string that names the document
//! type ([`MANIFEST_CONTEXT`], [`KEYSET_CONTEXT`]), so a signature on one kind of document can
//! never be replayed as another. Nothing is re-serialised before checking: there is no
//! canonical-JSON step to get wrong, and the signed member is parsed only *after* a trusted key
//! has vouched for its bytes.
//!
//! Before anything is parsed, the document is checked for size ([`MAX_DOCUMENT`] or a smaller
//! cap) and nesting depth ([`MAX_DEPTH`]) by a byte scan, so serde never sees pathological
//! input. Signatures are ed25519 (`verify_strict`: no malleable or small-order forms); the
//! threshold is one valid signature by a trusted key. A signature that names a trusted key but
//! does not verify is an error, not a skip: it means the bytes were altered.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::keys::{KeyId, KeySet, SecretKey};

/// Context prefix of a channel manifest's signed bytes.
pub const MANIFEST_CONTEXT: &[u8] = b"virga-update manifest v1\n";
/// Context prefix of a key-set rotation's signed bytes.
pub const KEYSET_CONTEXT: &[u8] = b"virga-update keyset v1\n";
/// Largest signed document accepted at all (1 MiB: a manifest for a 15 GiB slot in 1 MiB
/// chunks).
pub const MAX_DOCUMENT: usize = 1 << 20;
/// Deepest nesting of arrays and objects accepted (manifests need 4).
pub const MAX_DEPTH: usize = 8;
/// Most signatures on one document.
pub const MAX_SIGNATURES: usize = 16;

/// Why a signed document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Over the size cap.
    #[error("document is {size} bytes, over the {max}-byte limit")]
    TooLarge {
        /// Its size (or the bytes read before giving up).
        size: usize,
        /// The cap.
        max: usize,
    },
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("document nests deeper than {0} levels")]
    TooDeep(usize),
    /// Not a `{signed, signatures}` envelope.
    #[error("not a signed document: {0}")]
    Malformed(String),
    /// The trusted key set is empty: verification is mandatory, never skipped.
    #[error(
        "no trusted keys: the image's update key set is empty or missing, so nothing can be verified (this is an error, never a skip)"
    )]
    NoTrustedKeys,
    /// No signature by a trusted key.
    #[error("not signed by a trusted key (signed by {listed:?}; trusted: {trusted:?})")]
    NotSigned {
        /// Key ids on the document.
        listed: Vec<String>,
        /// Key ids trusted.
        trusted: Vec<String>,
    },
    /// A trusted key's signature does not match the bytes.
    #[error(
        "signature by trusted key {0} does not match the document: it was altered or signed for other content"
    )]
    BadSignature(String),
}

/// One signature in an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEntry {
    /// Hex SHA-256 of the signing public key.
    pub keyid: String,
    /// Base64 (standard, padded) ed25519 signature.
    pub sig: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvelope<'a> {
    #[serde(borrow)]
    signed: &'a RawValue,
    signatures: Vec<SignatureEntry>,
}

/// Checks size and nesting of a JSON text with a byte scan (strings and escapes respected)
/// before any parser sees it.
pub fn check_shape(bytes: &[u8], max_len: usize) -> Result<(), SignatureError> {
    if bytes.len() > max_len {
        return Err(SignatureError::TooLarge {
            size: bytes.len(),
            max: max_len,
        });
    }
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for &b in bytes {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(SignatureError::TooDeep(MAX_DEPTH));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// A document whose signature checked out: the signed bytes and the key that vouched for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<'a> {
    /// The exact bytes of the `signed` member.
    pub signed: &'a [u8],
    /// The trusted key whose signature verified.
    pub key: KeyId,
}

/// Verifies `bytes` (an envelope of at most `max_len` bytes) against `keys` under `context`.
pub fn verify<'a>(
    bytes: &'a [u8],
    context: &[u8],
    keys: &KeySet,
    max_len: usize,
) -> Result<Verified<'a>, SignatureError> {
    if keys.is_empty() {
        return Err(SignatureError::NoTrustedKeys);
    }
    check_shape(bytes, max_len)?;
    let env: RawEnvelope<'a> =
        serde_json::from_slice(bytes).map_err(|e| SignatureError::Malformed(e.to_string()))?;
    let signed = env.signed.get().as_bytes();
    if !signed.starts_with(b"{") {
        return Err(SignatureError::Malformed(
            "`signed` is not a JSON object".into(),
        ));
    }
    if env.signatures.len() > MAX_SIGNATURES {
        return Err(SignatureError::Malformed(format!(
            "{} signatures (at most {MAX_SIGNATURES})",
            env.signatures.len()
        )));
    }
    let mut message = Vec::with_capacity(context.len() + signed.len());
    message.extend_from_slice(context);
    message.extend_from_slice(signed);
    let mut seen: Vec<&str> = Vec::new();
    let mut good = None;
    for s in &env.signatures {
        if seen.contains(&s.keyid.as_str()) {
            return Err(SignatureError::Malformed(format!(
                "two signatures by key {}",
                s.keyid
            )));
        }
        seen.push(&s.keyid);
        let Ok(id) = s.keyid.parse::<KeyId>() else {
            return Err(SignatureError::Malformed(format!(
                "key id {:?} is not 64 lowercase hex digits",
                s.keyid.chars().take(80).collect::<String>()
            )));
        };
        let Some(key) = keys.get(&id) else {
            continue;
        };
        let raw = B64
            .decode(s.sig.as_bytes())
            .ok()
            .and_then(|v| <[u8; 64]>::try_from(v).ok())
            .ok_or_else(|| SignatureError::BadSignature(s.keyid.clone()))?;
        let sig = ed25519_dalek::Signature::from_bytes(&raw);
        key.verifying_key()
            .verify_strict(&message, &sig)
            .map_err(|_| SignatureError::BadSignature(s.keyid.clone()))?;
        good.get_or_insert(id);
    }
    match good {
        Some(key) => Ok(Verified { signed, key }),
        None => Err(SignatureError::NotSigned {
            listed: env.signatures.iter().map(|s| s.keyid.clone()).collect(),
            trusted: keys.ids().map(|k| k.to_string()).collect(),
        }),
    }
}

/// Wraps `signed` (a serialised JSON object) in an envelope signed by `signers` under
/// `context`. The output ends with a newline.
pub fn seal(signed: &[u8], context: &[u8], signers: &[&SecretKey]) -> Vec<u8> {
    let mut message = Vec::with_capacity(context.len() + signed.len());
    message.extend_from_slice(context);
    message.extend_from_slice(signed);
    let sigs: Vec<SignatureEntry> = signers
        .iter()
        .map(|k| SignatureEntry {
            keyid: k.id().to_string(),
            sig: B64.encode(k.sign(&message)),
        })
        .collect();
    let mut out = b"{\n\"signed\": ".to_vec();
    out.extend_from_slice(signed);
    out.extend_from_slice(b",\n\"signatures\": ");
    // Serialising plain strings cannot fail.
    out.extend_from_slice(&serde_json::to_vec(&sigs).unwrap_or_default());
    out.extend_from_slice(b"\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed([n; 32])
    }

    #[test]
    fn seal_and_verify() {
        let k = key(1);
        let set = KeySet::new(1, vec![k.public()]).unwrap();
        let doc = seal(br#"{"a": 1}"#, MANIFEST_CONTEXT, &[&k]);
        let v = verify(&doc, MANIFEST_CONTEXT, &set, MAX_DOCUMENT).unwrap();
        assert_eq!(v.signed, br#"{"a": 1}"#);
        assert_eq!(v.key, k.id());
        // Another context (a key set signature replayed as a manifest) fails.
        assert!(matches!(
            verify(&doc, KEYSET_CONTEXT, &set, MAX_DOCUMENT),
            Err(SignatureError::BadSignature(_))
        ));
        // One changed byte inside `signed`, even whitespace, fails.
        let s = String::from_utf8(doc.clone()).unwrap();
        for (from, to) in [(r#""a": 1"#, r#""a": 2"#), (r#""a": 1"#, r#""a":  1"#)] {
            let bad = s.replacen(from, to, 1);
            assert!(matches!(
                verify(bad.as_bytes(), MANIFEST_CONTEXT, &set, MAX_DOCUMENT),
                Err(SignatureError::BadSignature(_))
            ));
        }
        // Whitespace outside `signed` is not covered and does not matter.
        let spaced = s.replacen("{\n", "{  \n", 1);
        assert!(verify(spaced.as_bytes(), MANIFEST_CONTEXT, &set, MAX_DOCUMENT).is_ok());
    }

    #[test]
    fn keys_are_mandatory_and_must_match() {
        let (k1, k2) = (key(1), key(2));
        let doc = seal(br#"{"a": 1}"#, MANIFEST_CONTEXT, &[&k1]);
        let empty = KeySet::empty();
        assert_eq!(
            verify(&doc, MANIFEST_CONTEXT, &empty, MAX_DOCUMENT),
            Err(SignatureError::NoTrustedKeys)
        );
        let other = KeySet::new(1, vec![k2.public()]).unwrap();
        let err = verify(&doc, MANIFEST_CONTEXT, &other, MAX_DOCUMENT).unwrap_err();
        assert!(matches!(err, SignatureError::NotSigned { .. }), "{err}");
        // Two signers, one trusted: accepted (threshold 1).
        let both = seal(br#"{"a": 1}"#, MANIFEST_CONTEXT, &[&k1, &k2]);
        assert_eq!(
            verify(&both, MANIFEST_CONTEXT, &other, MAX_DOCUMENT)
                .unwrap()
                .key,
            k2.id()
        );
        // Unsigned.
        let none = seal(br#"{"a": 1}"#, MANIFEST_CONTEXT, &[]);
        assert!(matches!(
            verify(&none, MANIFEST_CONTEXT, &other, MAX_DOCUMENT),
            Err(SignatureError::NotSigned { .. })
        ));
    }

    #[test]
    fn shape_limits() {
        let k = key(1);
        let set = KeySet::new(1, vec![k.public()]).unwrap();
        let deep = format!("{}{}", "[".repeat(20), "]".repeat(20));
        assert_eq!(
            check_shape(deep.as_bytes(), 100),
            Err(SignatureError::TooDeep(MAX_DEPTH))
        );
        // Brackets inside strings do not count.
        let s = format!("{{\"x\": \"{}\\\"\"}}", "[".repeat(50));
        assert!(check_shape(s.as_bytes(), 1000).is_ok());
        assert!(matches!(
            verify(&[b' '; 2000], MANIFEST_CONTEXT, &set, 1000),
            Err(SignatureError::TooLarge { .. })
        ));
        for bad in [
            &b""[..],
            b"null",
            b"{}",
            br#"{"signed": [], "signatures": []}"#,
            br#"{"signed": {}, "signatures": [], "extra": 1}"#,
            br#"{"signed": {}, "signatures": [{"keyid": "zz", "sig": ""}]}"#,
        ] {
            assert!(
                verify(bad, MANIFEST_CONTEXT, &set, 1000).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
