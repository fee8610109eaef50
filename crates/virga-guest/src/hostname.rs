//! Hostname policy, in one place: what a valid name is, and how a name is applied (the kernel
//! hostname, `/etc/hostname` and `/etc/hosts`). Every source — the image, `virga.hostname=`,
//! the datasource's meta-data, cloud-config's `hostname`/`fqdn`, DHCP — goes through here.

use crate::fsutil::write_atomic;

/// Why a hostname could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum HostnameError {
    /// Not an RFC 1123 host name.
    #[error(
        "{0:?} is not a valid host name (RFC 1123: letters, digits and '-', labels of 1-63, at most 253 bytes)"
    )]
    Invalid(String),
    /// `sethostname` failed.
    #[error("sethostname {name}: {source}")]
    Kernel {
        /// The name.
        name: String,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// `/etc/hostname` or `/etc/hosts` could not be written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// RFC 1123 host name: dot-separated labels of letters, digits and `-` (not at either end), each
/// 1–63 bytes, at most 253 bytes in all.
pub fn valid(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

/// The short name: up to the first dot.
pub fn short(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// Sets the kernel hostname and `/etc/hostname` to `name`, and `/etc/hosts` to map it (and
/// `fqdn`, when given and different) to 127.0.1.1. Invalid names are refused before anything
/// is written, so no metadata can put a newline into a file or onto the console.
pub fn set(name: &str, fqdn: Option<&str>) -> Result<(), HostnameError> {
    for n in std::iter::once(name).chain(fqdn) {
        if !valid(n) {
            return Err(HostnameError::Invalid(n.to_owned()));
        }
    }
    nix::unistd::sethostname(name).map_err(|source| HostnameError::Kernel {
        name: name.to_owned(),
        source,
    })?;
    write_atomic(
        "/etc/hostname",
        format!("{name}\n").as_bytes(),
        0o644,
        false,
    )
    .map_err(|source| HostnameError::File {
        path: "/etc/hostname",
        source,
    })?;
    write_atomic("/etc/hosts", hosts(name, fqdn).as_bytes(), 0o644, false).map_err(|source| {
        HostnameError::File {
            path: "/etc/hosts",
            source,
        }
    })
}

fn hosts(name: &str, fqdn: Option<&str>) -> String {
    let mut hosts = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n");
    match fqdn {
        Some(f) if f != name => hosts.push_str(&format!("127.0.1.1\t{f} {name}\n")),
        _ => hosts.push_str(&format!("127.0.1.1\t{name}\n")),
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert!(valid("virga"));
        assert!(valid("a-1.example.com"));
        assert!(!valid(""));
        assert!(!valid("-a"));
        assert!(!valid("a..b"));
        assert!(!valid("a b"));
        assert!(!valid("a\nb"));
        assert!(!valid(&"a".repeat(64)));
        assert!(!valid(&format!("{}.{}", "a".repeat(63), "b".repeat(200))));
        assert_eq!(short("web.example.com"), "web");
    }

    #[test]
    fn a_forged_line_never_reaches_a_file() {
        let e = set("x\n127.0.0.1 evil", None).unwrap_err();
        assert!(matches!(e, HostnameError::Invalid(_)));
        let e = set("ok", Some("bad name")).unwrap_err();
        assert!(matches!(e, HostnameError::Invalid(_)));
        assert_eq!(
            hosts("web", Some("web.example.com")),
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\tweb.example.com web\n"
        );
    }
}
