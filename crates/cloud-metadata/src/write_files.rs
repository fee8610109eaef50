//! `write_files` safety policy (sans-IO): target path validation and content decoding.
//!
//! Contract with the guest's I/O driver, which makes the policy hold against symlinks:
//! - Use [`WritePlan::components`], never the path string: open `/` with
//!   `O_DIRECTORY|O_NOFOLLOW|O_CLOEXEC`, then for each parent component `openat(dir, c,
//!   O_DIRECTORY|O_NOFOLLOW)` (creating missing ones with `mkdirat(…, 0o755)`), so no symlink in
//!   the path is ever followed.
//! - Open the file with `openat(parent, name, O_WRONLY|O_CREAT|O_NOFOLLOW|O_CLOEXEC|(O_APPEND or
//!   O_TRUNC), mode)`; `ELOOP` (the name is a symlink) is an error, not something to resolve.
//!   Replace non-append files atomically (write a temporary name in the same directory, then
//!   `renameat`).
//! - `fchmod` to [`WritePlan::mode`] and `fchown` to the owner after writing (the creation mode
//!   is filtered by the umask); resolve user/group names without NSS (parse `/etc/passwd`).
//! - Entries with [`WritePlan::defer`] run after users are created.

use crate::cloud_config::{ContentEncoding, WriteFile};
use crate::model::{decode_base64, truncate_at_char};
use crate::{Limits, MetadataError};

/// Top-level directories that are never written to (kernel interfaces).
const FORBIDDEN_ROOTS: &[&str] = &["proc", "sys", "dev"];

/// Validates and normalises an absolute target path: it must start with `/`, name a file (not
/// `/` nor end in `/`), contain no `..` component, no NUL or control characters, no component
/// over 255 bytes, at most 4096 bytes in all, and not lie under `/proc`, `/sys` or `/dev`.
/// Repeated slashes and `.` components are removed.
pub fn validate_path(path: &str) -> Result<String, MetadataError> {
    Ok(format!("/{}", path_components(path)?.join("/")))
}

fn path_components(path: &str) -> Result<Vec<String>, MetadataError> {
    let err = |reason| MetadataError::UnsafePath {
        path: truncate_at_char(path, 256).to_owned(),
        reason,
    };
    if path.len() > 4096 {
        return Err(err("longer than 4096 bytes"));
    }
    if !path.starts_with('/') {
        return Err(err("not absolute"));
    }
    if path.chars().any(char::is_control) {
        return Err(err("contains a control character"));
    }
    if path.ends_with('/') || path.ends_with("/.") {
        return Err(err("names a directory"));
    }
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(err("contains '..'")),
            c if c.len() > 255 => return Err(err("has a component over 255 bytes")),
            c => out.push(c.to_owned()),
        }
    }
    match out.first() {
        None => Err(err("names the root directory")),
        Some(first) if FORBIDDEN_ROOTS.contains(&first.as_str()) => {
            Err(err("is under /proc, /sys or /dev"))
        }
        Some(_) => Ok(out),
    }
}

/// Decodes a `write_files` entry's content according to its encoding. gzip output is bounded
/// by [`Limits::max_decoded_bytes`]. For `gz`/`gzip`, content that is not gzip data is taken
/// as base64 first (a YAML `!!binary` value reaches us as its base64 text).
pub fn decode_content(file: &WriteFile, limits: &Limits) -> Result<Vec<u8>, MetadataError> {
    let what = format!("write_files {}", file.path);
    let raw = file.content.as_bytes();
    Ok(match file.encoding {
        ContentEncoding::Text => raw.to_vec(),
        ContentEncoding::Base64 => decode_base64(&what, raw)?,
        ContentEncoding::Gzip if raw.starts_with(&[0x1f, 0x8b]) => gunzip(raw, limits)?,
        ContentEncoding::Gzip | ContentEncoding::GzipBase64 => {
            gunzip(&decode_base64(&what, raw)?, limits)?
        }
    })
}

fn gunzip(data: &[u8], limits: &Limits) -> Result<Vec<u8>, MetadataError> {
    crate::model::gunzip_bounded(
        data,
        "write_files content",
        limits.max_decoded_bytes,
        limits.max_decompression_ratio,
    )
}

/// Everything the driver needs to write one file safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WritePlan {
    /// Normalised absolute path (for messages).
    pub path: String,
    /// Path components, to walk with `openat(…, O_NOFOLLOW)`; the last one is the file name.
    pub components: Vec<String>,
    /// Decoded content.
    pub content: Vec<u8>,
    /// Permission bits (≤ `0o7777`).
    pub mode: u32,
    /// Owner user (name or numeric id).
    pub owner: String,
    /// Owner group; `None`: the user's primary group.
    pub group: Option<String>,
    /// Append instead of replacing.
    pub append: bool,
    /// Write late, after users are created.
    pub defer: bool,
}

/// Validates the path and decodes the content of one entry.
pub fn plan(file: &WriteFile, limits: &Limits) -> Result<WritePlan, MetadataError> {
    let components = path_components(&file.path)?;
    if file.permissions > 0o7777 {
        return Err(MetadataError::invalid(
            "write_files",
            file.path.clone(),
            "permissions over 0o7777",
        ));
    }
    Ok(WritePlan {
        path: format!("/{}", components.join("/")),
        components,
        content: decode_content(file, limits)?,
        mode: file.permissions,
        owner: file.owner.clone(),
        group: file.group.clone(),
        append: file.append,
        defer: file.defer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn wf(path: &str, content: &str, encoding: ContentEncoding) -> WriteFile {
        WriteFile {
            path: path.into(),
            content: content.into(),
            encoding,
            permissions: 0o644,
            owner: "root".into(),
            group: None,
            append: false,
            defer: false,
        }
    }

    #[test]
    fn paths() {
        assert_eq!(
            validate_path("/etc//foo/./bar.conf").unwrap(),
            "/etc/foo/bar.conf"
        );
        for bad in [
            "",
            "etc/x",
            "/",
            "//",
            "/etc/",
            "/etc/.",
            "/etc/../x",
            "/../etc/passwd",
            "/a/..",
            "/proc/sys/x",
            "/dev/sda",
            "/sys/x",
            "/etc/a\nb",
            "/etc/a\0b",
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_path(&format!("/{}", "a".repeat(256))).is_err());
        assert!(validate_path(&"/a".repeat(3000)).is_err());
        assert_eq!(validate_path("/devices/x").unwrap(), "/devices/x");
        assert_eq!(validate_path("/etc/..foo").unwrap(), "/etc/..foo");
    }

    #[test]
    fn encodings() {
        use std::io::Write as _;
        let l = Limits::default();
        assert_eq!(
            decode_content(&wf("/a", "hi", ContentEncoding::Text), &l).unwrap(),
            b"hi"
        );
        assert_eq!(
            decode_content(&wf("/a", "aGk=\n", ContentEncoding::Base64), &l).unwrap(),
            b"hi"
        );
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b"zipped").unwrap();
        let gz = e.finish().unwrap();
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&gz);
        assert_eq!(
            decode_content(&wf("/a", &b64, ContentEncoding::GzipBase64), &l).unwrap(),
            b"zipped"
        );
        assert_eq!(
            decode_content(&wf("/a", &b64, ContentEncoding::Gzip), &l).unwrap(),
            b"zipped"
        );
        assert!(decode_content(&wf("/a", "%%%", ContentEncoding::Base64), &l).is_err());
        assert!(decode_content(&wf("/a", "aGk=", ContentEncoding::GzipBase64), &l).is_err());
    }

    #[test]
    fn gzip_bomb_is_refused() {
        use std::io::Write as _;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&vec![0u8; 8 << 20]).unwrap();
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(e.finish().unwrap());
        let l = Limits {
            max_decoded_bytes: 1 << 20,
            ..Limits::default()
        };
        let err = decode_content(&wf("/a", &b64, ContentEncoding::GzipBase64), &l).unwrap_err();
        assert!(matches!(err, MetadataError::TooLarge { .. }));
    }

    #[test]
    fn plans() {
        let p = plan(
            &wf("/etc//motd", "hi", ContentEncoding::Text),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(p.components, ["etc", "motd"]);
        assert_eq!(p.path, "/etc/motd");
        assert_eq!(p.mode, 0o644);
        assert!(
            plan(
                &wf("/etc/../motd", "", ContentEncoding::Text),
                &Limits::default()
            )
            .is_err()
        );
    }

    proptest! {
        #[test]
        fn validated_paths_are_safe(s in "(/|\\.|\\.\\.|a|b|/proc|\n){0,20}") {
            if let Ok(p) = validate_path(&s) {
                prop_assert!(p.starts_with('/'));
                prop_assert!(!p.split('/').any(|c| c == ".."  || c == "."));
                prop_assert!(!p.contains("//"));
                prop_assert_eq!(validate_path(&p).unwrap(), p.clone(), "idempotent");
            }
        }

        #[test]
        fn never_panics(s in "\\PC{0,100}") {
            let _ = validate_path(&s);
        }
    }
}
