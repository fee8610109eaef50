//! OpenSSH public key line validation (light, hand-written, no crypto).
//!
//! A line is `[options] type base64 [comment]`. The check decodes the base64 blob and walks its
//! SSH wire structure: the embedded type string must equal the line's type, and the blob must
//! hold exactly the fields that type has (e.g. ed25519: a 32-byte key; RSA: `e` and `n`;
//! ECDSA: the curve name matching the type and a point). Certificates (`*-cert-v01@openssh.com`)
//! are checked for the type string only. DSA keys are refused: OpenSSH no longer accepts them.

use base64::Engine as _;

use crate::MetadataError;

/// Key types accepted, with the wire layout checked for each.
const KEY_TYPES: &[(&str, Layout)] = &[
    ("ssh-ed25519", Layout::Ed25519),
    ("ssh-rsa", Layout::Rsa),
    ("ecdsa-sha2-nistp256", Layout::Ecdsa("nistp256")),
    ("ecdsa-sha2-nistp384", Layout::Ecdsa("nistp384")),
    ("ecdsa-sha2-nistp521", Layout::Ecdsa("nistp521")),
    ("sk-ssh-ed25519@openssh.com", Layout::SkEd25519),
    (
        "sk-ecdsa-sha2-nistp256@openssh.com",
        Layout::SkEcdsa("nistp256"),
    ),
    ("ssh-ed25519-cert-v01@openssh.com", Layout::Certificate),
    ("ssh-rsa-cert-v01@openssh.com", Layout::Certificate),
    (
        "ecdsa-sha2-nistp256-cert-v01@openssh.com",
        Layout::Certificate,
    ),
    (
        "ecdsa-sha2-nistp384-cert-v01@openssh.com",
        Layout::Certificate,
    ),
    (
        "ecdsa-sha2-nistp521-cert-v01@openssh.com",
        Layout::Certificate,
    ),
    ("sk-ssh-ed25519-cert-v01@openssh.com", Layout::Certificate),
    (
        "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
        Layout::Certificate,
    ),
];

/// Longest line accepted (an RSA-16384 key is about 2.8 KB of base64).
const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy)]
enum Layout {
    Ed25519,
    Rsa,
    Ecdsa(&'static str),
    SkEd25519,
    SkEcdsa(&'static str),
    Certificate,
}

/// A validated public key line, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// `authorized_keys` options before the key type, if any (e.g. `no-pty,command="…"`).
    pub options: Option<String>,
    /// Key type, e.g. `ssh-ed25519`.
    pub key_type: String,
    /// The base64 blob as given.
    pub base64: String,
    /// The comment, if any (whitespace-normalised).
    pub comment: Option<String>,
}

impl PublicKey {
    /// The key as an `authorized_keys` line (options, type, blob, comment).
    pub fn to_line(&self) -> String {
        let mut line = String::new();
        if let Some(o) = &self.options {
            line.push_str(o);
            line.push(' ');
        }
        line.push_str(&self.key_type);
        line.push(' ');
        line.push_str(&self.base64);
        if let Some(c) = &self.comment {
            line.push(' ');
            line.push_str(c);
        }
        line
    }
}

/// Validates one public key line (surrounding whitespace ignored).
pub fn parse_public_key(line: &str) -> Result<PublicKey, MetadataError> {
    let err = |reason| MetadataError::SshKey { reason };
    let line = line.trim();
    if line.is_empty() {
        return Err(err("empty line"));
    }
    if line.len() > MAX_LINE {
        return Err(err("line too long"));
    }
    if line.contains(['\n', '\r', '\0']) {
        return Err(err("control character in key line"));
    }
    let (options, rest) = if is_key_type(first_word(line)) {
        (None, line)
    } else {
        let end = options_end(line).ok_or_else(|| err("unknown key type"))?;
        let (opts, rest) = line.split_at(end);
        let rest = rest.trim_start();
        if !is_key_type(first_word(rest)) {
            return Err(err("unknown key type"));
        }
        (Some(opts.to_owned()), rest)
    };
    let mut words = rest.split_ascii_whitespace();
    let key_type = words.next().ok_or_else(|| err("missing key type"))?;
    let blob_b64 = words.next().ok_or_else(|| err("missing base64 key data"))?;
    let comment: Vec<&str> = words.collect();
    let layout = KEY_TYPES
        .iter()
        .find(|(t, _)| *t == key_type)
        .map(|(_, l)| *l)
        .ok_or_else(|| err("unknown key type"))?;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(blob_b64)
        .map_err(|_| err("key data is not valid base64"))?;
    check_blob(&blob, key_type, layout)?;
    Ok(PublicKey {
        options,
        key_type: key_type.to_owned(),
        base64: blob_b64.to_owned(),
        comment: (!comment.is_empty()).then(|| comment.join(" ")),
    })
}

/// Keeps the valid keys of `keys` (as normalised lines, duplicates removed, order kept) and
/// returns a warning for each line dropped. Blank lines and `#` comments are skipped silently.
pub fn filter_public_keys<I, S>(keys: I) -> (Vec<String>, Vec<String>)
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut good: Vec<String> = Vec::new();
    let mut warnings = Vec::new();
    for key in keys {
        for line in key.as_ref().lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_public_key(line) {
                Ok(k) => {
                    let l = k.to_line();
                    if !good.contains(&l) {
                        good.push(l);
                    }
                }
                Err(e) => warnings.push(format!("dropped SSH key {:?}: {e}", preview(line))),
            }
        }
    }
    (good, warnings)
}

fn preview(line: &str) -> String {
    let mut s: String = line.chars().take(40).collect();
    if s.len() < line.len() {
        s.push('…');
    }
    s
}

fn first_word(s: &str) -> &str {
    s.split_ascii_whitespace().next().unwrap_or("")
}

fn is_key_type(word: &str) -> bool {
    KEY_TYPES.iter().any(|(t, _)| *t == word)
}

/// Byte index where an options field (`a,b="x y",c`) ends: the first unquoted whitespace.
fn options_end(line: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c.is_ascii_whitespace() && !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// Reads SSH wire-format strings (`u32` big-endian length + bytes).
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn string(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.0.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        if len > rest.len() {
            return None;
        }
        let (s, rest) = rest.split_at(len);
        self.0 = rest;
        Some(s)
    }

    fn mpint_positive(&mut self) -> Option<&'a [u8]> {
        let v = self.string()?;
        // Non-empty, non-negative (top bit clear).
        (!v.is_empty() && v[0] & 0x80 == 0).then_some(v)
    }
}

fn check_blob(blob: &[u8], key_type: &str, layout: Layout) -> Result<(), MetadataError> {
    let err = |reason| MetadataError::SshKey { reason };
    let mut w = Wire(blob);
    let embedded = w.string().ok_or_else(|| err("truncated key data"))?;
    if embedded != key_type.as_bytes() {
        return Err(err("embedded key type does not match"));
    }
    let ok = match layout {
        Layout::Ed25519 => w.string().is_some_and(|k| k.len() == 32),
        Layout::Rsa => {
            let e = w.mpint_positive();
            let n = w.mpint_positive();
            // A modulus under 1024 bits is refused by every current OpenSSH.
            e.is_some() && n.is_some_and(|n| n.len() >= 128)
        }
        Layout::Ecdsa(curve) => {
            w.string() == Some(curve.as_bytes()) && w.string().is_some_and(|q| !q.is_empty())
        }
        Layout::SkEd25519 => {
            w.string().is_some_and(|k| k.len() == 32) && w.string().is_some_and(|a| !a.is_empty())
        }
        Layout::SkEcdsa(curve) => {
            w.string() == Some(curve.as_bytes())
                && w.string().is_some_and(|q| !q.is_empty())
                && w.string().is_some_and(|a| !a.is_empty())
        }
        Layout::Certificate => return Ok(()),
    };
    if !ok {
        return Err(err("malformed key data"));
    }
    if !w.0.is_empty() {
        return Err(err("trailing bytes in key data"));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds a syntactically valid key blob of `key_type` for tests.
    pub(crate) fn make_key(key_type: &str, comment: &str) -> String {
        fn put(out: &mut Vec<u8>, s: &[u8]) {
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s);
        }
        let mut blob = Vec::new();
        put(&mut blob, key_type.as_bytes());
        match key_type {
            "ssh-ed25519" => put(&mut blob, &[7u8; 32]),
            "ssh-rsa" => {
                put(&mut blob, &[1, 0, 1]);
                let mut n = vec![0u8; 257];
                n[1] = 0xc3;
                put(&mut blob, &n);
            }
            t if t.starts_with("ecdsa-sha2-") => {
                put(&mut blob, t.trim_start_matches("ecdsa-sha2-").as_bytes());
                put(&mut blob, &[4u8; 65]);
            }
            _ => {}
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
        format!("{key_type} {b64} {comment}").trim_end().to_owned()
    }

    #[test]
    fn accepts_common_types() {
        for t in [
            "ssh-ed25519",
            "ssh-rsa",
            "ecdsa-sha2-nistp256",
            "ecdsa-sha2-nistp521",
        ] {
            let line = make_key(t, "me@host");
            let k = parse_public_key(&line).unwrap_or_else(|e| panic!("{t}: {e}"));
            assert_eq!(k.key_type, t);
            assert_eq!(k.comment.as_deref(), Some("me@host"));
            assert_eq!(k.to_line(), line);
        }
    }

    #[test]
    fn accepts_options_prefix() {
        let key = make_key("ssh-ed25519", "c");
        let line = format!(r#"no-pty,command="echo hi; exit 1" {key}"#);
        let k = parse_public_key(&line).unwrap();
        assert_eq!(
            k.options.as_deref(),
            Some(r#"no-pty,command="echo hi; exit 1""#)
        );
        assert_eq!(k.to_line(), line);
    }

    #[test]
    fn rejects_malformed_keys() {
        let good = make_key("ssh-ed25519", "");
        let blob = good.split(' ').nth(1).unwrap();
        for bad in [
            String::new(),
            "ssh-ed25519".to_owned(),
            "ssh-ed25519 !!!notbase64".to_owned(),
            format!("ssh-rsa {blob}"), // embedded type mismatch
            format!("ssh-dss {blob}"), // unsupported type
            format!("foo bar {blob}"), // junk options, unknown type
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5".to_owned(), // truncated
            "ssh-rsa AAAAB3Nz....w== brickies".to_owned(), // cloud-init test placeholder
        ] {
            assert!(parse_public_key(&bad).is_err(), "accepted {bad:?}");
        }
        // A real-world (short, 1024-bit) key from the afterburn fixtures is accepted.
        let nova = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDYVEprvtYJXVOBN0XNKVVRNCRX6BlnNbI+USLGais1sUWPwtSg7z9K9vhbYAPUZcq8c/s5S9dg5vTHbsiyPCIDOKyeHba4MUJq8Oh5b2i71/3BISpyxTBH/uZDHdslW2a+SrPDCeuMMoss9NFhBdKtDkdG9zyi0ibmCP6yMdEX8Q== Generated by Nova";
        assert!(parse_public_key(nova).is_ok());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let good = make_key("ssh-ed25519", "");
        let blob = good.split(' ').nth(1).unwrap();
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(blob)
            .unwrap();
        raw.push(0);
        let bad = format!(
            "ssh-ed25519 {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        );
        assert!(parse_public_key(&bad).is_err());
    }

    #[test]
    fn filter_keeps_good_drops_bad_and_dedups() {
        let a = make_key("ssh-ed25519", "a");
        let (keys, warns) =
            filter_public_keys([a.as_str(), "garbage", "", "# comment", a.as_str()]);
        assert_eq!(keys, vec![a]);
        assert_eq!(warns.len(), 1);
        assert!(warns[0].contains("garbage"));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,300}") {
            let _ = parse_public_key(&s);
        }

        #[test]
        fn never_panics_on_key_like(t in prop::sample::select(vec!["ssh-rsa", "ssh-ed25519", "ecdsa-sha2-nistp256"]),
                                    blob in proptest::collection::vec(any::<u8>(), 0..300)) {
            let line = format!("{t} {}", base64::engine::general_purpose::STANDARD.encode(blob));
            let _ = parse_public_key(&line);
        }

        #[test]
        fn valid_keys_round_trip(t in prop::sample::select(vec!["ssh-rsa", "ssh-ed25519", "ecdsa-sha2-nistp384"]),
                                 comment in "[a-zA-Z0-9@._-]{0,20}") {
            let line = make_key(t, &comment);
            let k = parse_public_key(&line).unwrap();
            prop_assert_eq!(k.to_line(), line);
        }
    }
}
