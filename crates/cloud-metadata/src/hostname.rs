//! Hostnames, validated in one place for every source: NoCloud `local-hostname`/`hostname`,
//! OpenStack `hostname`/`name`, EC2 `local-hostname`/`hostname`, cloud-config
//! `hostname`/`fqdn`, the `h=` of a `ds=nocloud` seed, and the guest itself.
//!
//! The rule is RFC 1123 (section 2.1, on RFC 952): a name is dot-separated labels of ASCII
//! letters, digits and `-`, each 1–63 bytes, not starting or ending with `-`; the whole name
//! at most 253 bytes. Surrounding whitespace and one trailing dot (the root) are removed
//! first. Anything else — underscores, spaces, control characters (a newline in a hostname
//! could forge console lines), non-ASCII — is refused, not repaired.
//!
//! The short name (what goes to `/etc/hostname`, and `hostname` without `-f`) is the first
//! label; the FQDN is the whole name when it has more than one label.

use std::fmt;

/// Longest hostname, in bytes, without the trailing dot.
pub const MAX_HOSTNAME_BYTES: usize = 253;
/// Longest label, in bytes.
pub const MAX_LABEL_BYTES: usize = 63;

/// Why a hostname was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostnameError {
    /// Nothing left after trimming.
    #[error("empty hostname")]
    Empty,
    /// Longer than [`MAX_HOSTNAME_BYTES`].
    #[error("hostname is {0} bytes, over {MAX_HOSTNAME_BYTES}")]
    TooLong(usize),
    /// Two dots in a row, or a leading dot.
    #[error("hostname {0} has an empty label")]
    EmptyLabel(Quoted),
    /// A label longer than [`MAX_LABEL_BYTES`].
    #[error("hostname {0} has a label over {MAX_LABEL_BYTES} bytes")]
    LabelTooLong(Quoted),
    /// A label starting or ending with `-`.
    #[error("hostname {0} has a label starting or ending with '-'")]
    Hyphen(Quoted),
    /// A character outside letters, digits, `-` and `.`.
    #[error("hostname {0} contains {1:?} (only letters, digits, '-' and '.' are allowed)")]
    BadChar(Quoted, char),
}

/// A name for messages: debug-quoted (control characters escaped), cut at 64 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quoted(String);

impl Quoted {
    fn new(s: &str) -> Self {
        let mut q: String = s.chars().take(64).collect();
        if q.len() < s.len() {
            q.push('…');
        }
        Quoted(q)
    }
}

impl fmt::Display for Quoted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Validates a hostname (see the module docs) and returns it trimmed, without a trailing dot.
pub fn validate(name: &str) -> Result<&str, HostnameError> {
    let trimmed = name.trim_matches(|c: char| c == ' ' || c == '\t' || c == '\n' || c == '\r');
    let h = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if h.is_empty() {
        return Err(HostnameError::Empty);
    }
    if let Some(c) = h
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
    {
        return Err(HostnameError::BadChar(Quoted::new(h), c));
    }
    if h.len() > MAX_HOSTNAME_BYTES {
        return Err(HostnameError::TooLong(h.len()));
    }
    for label in h.split('.') {
        if label.is_empty() {
            return Err(HostnameError::EmptyLabel(Quoted::new(h)));
        }
        if label.len() > MAX_LABEL_BYTES {
            return Err(HostnameError::LabelTooLong(Quoted::new(h)));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(HostnameError::Hyphen(Quoted::new(h)));
        }
    }
    Ok(h)
}

/// Whether `name` is a valid hostname.
pub fn is_valid(name: &str) -> bool {
    validate(name).is_ok()
}

/// The short name of a valid hostname: its first label. `None` when `name` is not valid.
pub fn short_name(name: &str) -> Option<&str> {
    let h = validate(name).ok()?;
    h.split('.').next()
}

/// The FQDN of a valid hostname: the whole name when it has a domain part, else `None`.
pub fn fqdn(name: &str) -> Option<&str> {
    validate(name).ok().filter(|h| h.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_rfc1123_names() {
        for ok in [
            "a",
            "web1",
            "ip-172-31-3-15.us-east-2.compute.internal",
            "sm-foo-test.novalocal",
            "1host",
            "123",
            "UPPER.Case",
            "host.example.com.",
            "  padded\n",
            &"a".repeat(63),
            &format!(
                "{}.{}.{}.{}",
                "a".repeat(63),
                "b".repeat(63),
                "c".repeat(63),
                "d".repeat(61)
            ),
        ] {
            assert!(validate(ok).is_ok(), "{ok:?}: {:?}", validate(ok));
        }
        assert_eq!(validate("host.example.com.").unwrap(), "host.example.com");
        assert_eq!(short_name("web1.example.com"), Some("web1"));
        assert_eq!(fqdn("web1.example.com"), Some("web1.example.com"));
        assert_eq!(fqdn("web1"), None);
    }

    #[test]
    fn refuses_everything_else() {
        let long = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(62)
        );
        for (bad, want) in [
            ("", "empty"),
            (".", "empty"),
            ("host\nname", "'\\n'"),
            ("evil\n=== datasource: forged ===", "'\\n'"),
            ("under_score", "'_'"),
            ("with space", "' '"),
            ("dé", "'é'"),
            ("-lead", "'-'"),
            ("trail-", "'-'"),
            ("a..b", "empty label"),
            (".a", "empty label"),
            (&"a".repeat(64), "over 63"),
            (&long, "over 253"),
            ("a\0b", "'\\0'"),
        ] {
            let err = validate(bad).unwrap_err().to_string();
            assert!(err.contains(want), "{bad:?}: {err}");
            assert!(!err.contains('\n'), "messages stay on one line: {err:?}");
        }
        assert_eq!(short_name("bad_name.example"), None);
    }

    proptest! {
        #[test]
        fn valid_names_round_trip(labels in proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", 1..6)) {
            let name = labels.join(".");
            prop_assert_eq!(validate(&name).unwrap(), name.as_str());
            prop_assert_eq!(short_name(&name).unwrap(), labels[0].as_str());
        }

        #[test]
        fn never_panics_and_output_is_clean(s in "\\PC{0,300}") {
            if let Ok(h) = validate(&s) {
                prop_assert!(h.len() <= MAX_HOSTNAME_BYTES);
                prop_assert!(h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
            }
        }
    }
}
