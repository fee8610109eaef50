//! Writing files for metadata and user-data without following symlinks.
//!
//! Every directory on the way is opened with `O_NOFOLLOW | O_DIRECTORY` relative to its parent
//! (created 0755 when missing), and the file itself with `O_NOFOLLOW`, so a symlink planted in
//! the path (by an earlier write_files entry, say) can never redirect a write.

use std::io::Write;
use std::os::fd::OwnedFd;

use rustix::fs::{CWD, Gid, Mode, OFlags, Uid, fchmod, fchown, mkdirat, openat};

/// How to write.
#[derive(Debug, Clone, Copy)]
pub struct WriteOpts {
    /// Permission bits of the file.
    pub mode: u32,
    /// Append instead of truncating.
    pub append: bool,
    /// Owner (uid, gid), if not root.
    pub owner: Option<(u32, u32)>,
}

impl Default for WriteOpts {
    fn default() -> Self {
        Self {
            mode: 0o644,
            append: false,
            owner: None,
        }
    }
}

/// Writes `content` to the absolute path made of `components` (no `.`/`..`; validated by the
/// caller), creating parent directories.
pub fn write_file(components: &[String], content: &[u8], opts: WriteOpts) -> std::io::Result<()> {
    let invalid = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad path");
    let (name, dirs) = components.split_last().ok_or_else(invalid)?;
    let mut dir = open_dir(None, "/")?;
    for d in dirs {
        if d.is_empty() || d == "." || d == ".." || d.contains('/') {
            return Err(invalid());
        }
        dir = match open_dir(Some(&dir), d) {
            Ok(fd) => fd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match mkdirat(&dir, d.as_str(), Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                open_dir(Some(&dir), d)?
            }
            Err(e) => return Err(e),
        };
    }
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(invalid());
    }
    let mut flags = OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    flags |= if opts.append {
        OFlags::APPEND
    } else {
        OFlags::TRUNC
    };
    let fd = openat(
        &dir,
        name.as_str(),
        flags,
        Mode::from_bits_truncate(opts.mode),
    )?;
    fchmod(&fd, Mode::from_bits_truncate(opts.mode))?;
    if let Some((uid, gid)) = opts.owner {
        fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
    }
    let file = std::fs::File::from(fd);
    (&file).write_all(content)?;
    Ok(())
}

fn open_dir(parent: Option<&OwnedFd>, name: &str) -> std::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match parent {
        Some(p) => openat(p, name, flags, Mode::empty())?,
        None => openat(CWD, name, flags, Mode::empty())?,
    };
    Ok(fd)
}

/// Splits an absolute path into components (for paths virga itself builds).
pub fn components(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_refuses_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let base = components(&d.path().to_string_lossy());
        let mut p = base.clone();
        p.extend(["a".to_owned(), "b".to_owned(), "f.txt".to_owned()]);
        write_file(
            &p,
            b"one",
            WriteOpts {
                mode: 0o600,
                ..Default::default()
            },
        )
        .unwrap();
        write_file(
            &p,
            b"two",
            WriteOpts {
                mode: 0o600,
                append: true,
                owner: None,
            },
        )
        .unwrap();
        assert_eq!(
            std::fs::read(d.path().join("a/b/f.txt")).unwrap(),
            b"onetwo"
        );
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(d.path().join("a/b/f.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o777, 0o600);
        // A symlinked directory or file in the path is refused.
        std::os::unix::fs::symlink("/etc", d.path().join("link")).unwrap();
        let mut via = base.clone();
        via.extend(["link".to_owned(), "evil".to_owned()]);
        assert!(write_file(&via, b"x", WriteOpts::default()).is_err());
        std::os::unix::fs::symlink("/etc/hostname", d.path().join("flink")).unwrap();
        let mut file_link = base.clone();
        file_link.push("flink".to_owned());
        assert!(write_file(&file_link, b"x", WriteOpts::default()).is_err());
        let mut dots = base;
        dots.push("..".to_owned());
        assert!(write_file(&dots, b"x", WriteOpts::default()).is_err());
    }
}
