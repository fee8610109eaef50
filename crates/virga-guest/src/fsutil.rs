//! Writing files: never following symlinks, and never leaving a torn file behind.
//!
//! Every directory on the way is opened with `O_NOFOLLOW | O_DIRECTORY` relative to its parent
//! (created 0755 when missing), so a symlink planted in the path (by an earlier write_files
//! entry, or by a user whose home is on the state disk) can never redirect a write made as root.
//!
//! A whole-file write goes to a temporary file in the same directory, which gets its mode and
//! owner on the descriptor, is `fsync`ed, renamed over the target, and the directory is
//! `fsync`ed: after a power cut the file is either the old one or the new one, never half of
//! either. An append is `fsync`ed before the call returns. Every persistent write of the guest
//! goes through [`write_file`] (or [`write_atomic`] for paths virga itself builds).

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{
    AtFlags, CWD, Gid, Mode, OFlags, Uid, fchmod, fchown, fsync, mkdirat, openat, renameat,
    unlinkat,
};

/// How to write.
#[derive(Debug, Clone, Copy)]
pub struct WriteOpts {
    /// Permission bits of the file.
    pub mode: u32,
    /// Append instead of replacing.
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

fn invalid() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad path")
}

fn valid_component(c: &str) -> bool {
    !c.is_empty() && c != "." && c != ".." && !c.contains('/') && !c.contains('\0')
}

/// Opens (creating 0755 when missing) the directory made of `dirs` below `/`, one component at
/// a time, never following a symlink.
pub fn open_dirs(dirs: &[String]) -> std::io::Result<OwnedFd> {
    let mut dir = open_dir(None, "/")?;
    for d in dirs {
        if !valid_component(d) {
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
    Ok(dir)
}

/// Writes `content` to the absolute path made of `components` (no `.`/`..`; validated by the
/// caller), creating parent directories. See the module documentation for the guarantees.
pub fn write_file(components: &[String], content: &[u8], opts: WriteOpts) -> std::io::Result<()> {
    let (name, dirs) = components.split_last().ok_or_else(invalid)?;
    if !valid_component(name) {
        return Err(invalid());
    }
    write_at(&open_dirs(dirs)?, name, content, opts)
}

/// [`write_file`] into an open directory.
pub fn write_at(dir: &OwnedFd, name: &str, content: &[u8], opts: WriteOpts) -> std::io::Result<()> {
    if !valid_component(name) {
        return Err(invalid());
    }
    let mode = Mode::from_bits_truncate(opts.mode);
    if opts.append {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::APPEND | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = openat(dir, name, flags, mode)?;
        finish(&fd, opts)?;
        let file = std::fs::File::from(fd);
        (&file).write_all(content)?;
        fsync(&file)?;
        return Ok(());
    }
    // A name nobody else uses in this directory: O_EXCL refuses anything already there,
    // a symlink included.
    let mut n = 0u32;
    let (tmp, fd) = loop {
        let tmp = format!(".{name}.virga-tmp-{}-{n}", std::process::id());
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match openat(dir, tmp.as_str(), flags, mode) {
            Ok(fd) => break (tmp, fd),
            Err(rustix::io::Errno::EXIST) if n < 100 => n += 1,
            Err(e) => return Err(e.into()),
        }
    };
    let written = (|| {
        finish(&fd, opts)?;
        let file = std::fs::File::from(fd);
        (&file).write_all(content)?;
        fsync(&file)?;
        renameat(dir, tmp.as_str(), dir, name)?;
        Ok::<(), std::io::Error>(())
    })();
    if let Err(e) = written {
        let _ = unlinkat(dir, tmp.as_str(), AtFlags::empty());
        return Err(e);
    }
    fsync(dir)?;
    Ok(())
}

/// Mode and owner, set on the descriptor (never on a path).
fn finish(fd: &impl AsFd, opts: WriteOpts) -> std::io::Result<()> {
    fchmod(fd, Mode::from_bits_truncate(opts.mode))?;
    if let Some((uid, gid)) = opts.owner {
        fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
    }
    Ok(())
}

/// [`write_file`] for an absolute path virga itself builds, with this mode, owned by root.
pub fn write_atomic(path: &str, content: &[u8], mode: u32, append: bool) -> std::io::Result<()> {
    write_file(
        &components(path),
        content,
        WriteOpts {
            mode,
            append,
            owner: None,
        },
    )
}

/// Reads `name` in `dir` without following a symlink or blocking on a FIFO: only a regular
/// file of at most `max` bytes is read. `Ok(None)` when there is no such entry.
pub fn read_at(dir: &OwnedFd, name: &str, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&fd)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{name} is not a regular file"),
        ));
    }
    if st.st_size as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{name} is larger than {max} bytes"),
        ));
    }
    let mut out = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::from(fd), max),
        &mut out,
    )?;
    Ok(Some(out))
}

/// Opens (creating with `mode` when missing) the directory `name` in `dir` without following a
/// symlink, and gives it this mode and owner on the descriptor.
pub fn ensure_dir_at(
    dir: &OwnedFd,
    name: &str,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> std::io::Result<OwnedFd> {
    if !valid_component(name) {
        return Err(invalid());
    }
    match mkdirat(dir, name, Mode::from_bits_truncate(mode)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let fd = open_dir(Some(dir), name)?;
    finish(
        &fd,
        WriteOpts {
            mode,
            append: false,
            owner,
        },
    )?;
    Ok(fd)
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
        assert!(
            write_file(
                &file_link,
                b"x",
                WriteOpts {
                    append: true,
                    ..Default::default()
                }
            )
            .is_err()
        );
        let mut dots = base;
        dots.push("..".to_owned());
        assert!(write_file(&dots, b"x", WriteOpts::default()).is_err());
    }

    #[test]
    fn a_replaced_symlink_is_not_followed_and_no_temporary_is_left() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::write(&outside, b"keep").unwrap();
        std::os::unix::fs::symlink(&outside, d.path().join("f")).unwrap();
        // A whole-file write replaces the link itself; the file it pointed to is untouched.
        write_atomic(&d.path().join("f").to_string_lossy(), b"new", 0o600, false).unwrap();
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
        assert!(!d.path().join("f").is_symlink());
        assert_eq!(std::fs::read(d.path().join("f")).unwrap(), b"new");
        let names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains("virga-tmp")), "{names:?}");
    }

    #[test]
    fn the_old_content_stays_whole_until_the_rename() {
        // The temporary file is a different inode: a reader holding the old file sees it
        // whole, never truncated.
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("f").to_string_lossy().into_owned();
        write_atomic(&path, b"old content", 0o644, false).unwrap();
        let held = std::fs::File::open(&path).unwrap();
        write_atomic(&path, b"new", 0o644, false).unwrap();
        let mut old = String::new();
        std::io::Read::read_to_string(&mut &held, &mut old).unwrap();
        assert_eq!(old, "old content");
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }
}
