//! The files that go on a seed disk, held in memory with their relative paths.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::SeedImageError;

/// Most files a seed tree may hold.
pub const MAX_FILES: usize = 4096;
/// Most bytes (sum of file sizes) a seed tree may hold: 64 MiB, far above any cloud's limits.
pub const MAX_TOTAL_BYTES: u64 = 64 * 1024 * 1024;
/// Deepest directory nesting accepted (ISO9660 without relocation allows 8 levels).
pub const MAX_DEPTH: usize = 8;

/// The files of a seed disk: relative `/`-separated paths (`meta-data`,
/// `openstack/latest/meta_data.json`) to contents. Directories are implied by the paths;
/// empty directories are not represented.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedTree {
    files: BTreeMap<String, Vec<u8>>,
    total: u64,
}

impl SeedTree {
    /// An empty tree.
    pub fn new() -> Self {
        SeedTree::default()
    }

    /// Adds (or replaces) one file. The path is relative, `/`-separated, without empty, `.`
    /// or `..` components, at most [`MAX_DEPTH`] directories deep; a path that is already a
    /// directory of the tree (or has a file as its parent) is refused.
    pub fn insert(&mut self, path: &str, contents: Vec<u8>) -> Result<(), SeedImageError> {
        check_path(path)?;
        let prefix = format!("{path}/");
        if self.files.keys().any(|k| k.starts_with(&prefix)) {
            return Err(SeedImageError::InvalidPath {
                path: path.to_owned(),
                reason: "already a directory in the tree",
            });
        }
        let mut parent = path;
        while let Some((p, _)) = parent.rsplit_once('/') {
            if self.files.contains_key(p) {
                return Err(SeedImageError::InvalidPath {
                    path: path.to_owned(),
                    reason: "a parent is a file",
                });
            }
            parent = p;
        }
        if self.files.len() >= MAX_FILES && !self.files.contains_key(path) {
            return Err(SeedImageError::TooLarge(format!(
                "more than {MAX_FILES} files"
            )));
        }
        let old = self.files.get(path).map_or(0, |c| c.len() as u64);
        let total = self.total - old + contents.len() as u64;
        if total > MAX_TOTAL_BYTES {
            return Err(SeedImageError::TooLarge(format!(
                "more than {MAX_TOTAL_BYTES} bytes of files"
            )));
        }
        self.total = total;
        self.files.insert(path.to_owned(), contents);
        Ok(())
    }

    /// Builds a tree from `(path, contents)` pairs (for instance a generated metadata layout).
    pub fn from_files<I, P>(files: I) -> Result<Self, SeedImageError>
    where
        I: IntoIterator<Item = (P, Vec<u8>)>,
        P: AsRef<str>,
    {
        let mut tree = SeedTree::new();
        for (path, contents) in files {
            tree.insert(path.as_ref(), contents)?;
        }
        Ok(tree)
    }

    /// Reads a directory recursively. Regular files and directories only: a symbolic link,
    /// device or socket is an error (a seed should not depend on what a link points to), as
    /// are names that are not UTF-8 and the limits above.
    pub fn from_dir(dir: &Path) -> Result<Self, SeedImageError> {
        let mut tree = SeedTree::new();
        walk(dir, "", 0, &mut tree)?;
        Ok(tree)
    }

    /// The file at `path`, if any.
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(Vec::as_slice)
    }

    /// True when `path` is a file of the tree.
    pub fn contains(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }

    /// All files, sorted by path.
    pub fn files(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files.iter().map(|(p, c)| (p.as_str(), c.as_slice()))
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when the tree holds no file.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Sum of the file sizes.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// The directories implied by the paths (`a/b/c` → `a`, `a/b`), sorted, parents first.
    pub fn dirs(&self) -> Vec<String> {
        let mut dirs: Vec<String> = Vec::new();
        for path in self.files.keys() {
            let mut end = 0;
            while let Some(i) = path[end..].find('/') {
                end += i;
                dirs.push(path[..end].to_owned());
                end += 1;
            }
        }
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

fn check_path(path: &str) -> Result<(), SeedImageError> {
    let bad = |reason| {
        Err(SeedImageError::InvalidPath {
            path: path.to_owned(),
            reason,
        })
    };
    if path.is_empty() {
        return bad("empty path");
    }
    if path.len() > 1024 {
        return bad("longer than 1024 bytes");
    }
    let mut depth = 0;
    for comp in path.split('/') {
        if comp.is_empty() || comp == "." || comp == ".." {
            return bad("empty, `.` or `..` component");
        }
        if comp.len() > 255 {
            return bad("component longer than 255 bytes");
        }
        if comp.contains(['\0', '\\']) {
            return bad("NUL or backslash in a name");
        }
        depth += 1;
    }
    if depth > MAX_DEPTH + 1 {
        return bad("nested deeper than 8 directories");
    }
    Ok(())
}

fn walk(dir: &Path, prefix: &str, depth: usize, tree: &mut SeedTree) -> Result<(), SeedImageError> {
    if depth > MAX_DEPTH {
        return Err(SeedImageError::InvalidPath {
            path: prefix.to_owned(),
            reason: "nested deeper than 8 directories",
        });
    }
    let io = |path: &Path, source| SeedImageError::Io {
        context: format!("reading {}", path.display()),
        source,
    };
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| SeedImageError::InvalidPath {
                path: format!("{prefix}{}", n.to_string_lossy()),
                reason: "name is not UTF-8",
            })?;
        entries.push((name, entry.path()));
        if entries.len() > MAX_FILES {
            return Err(SeedImageError::TooLarge(format!(
                "{} has more than {MAX_FILES} entries",
                dir.display()
            )));
        }
    }
    entries.sort();
    for (name, path) in entries {
        let rel = format!("{prefix}{name}");
        let meta = fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
        if meta.is_dir() {
            walk(&path, &format!("{rel}/"), depth + 1, tree)?;
        } else if meta.is_file() {
            if tree.total + meta.len() > MAX_TOTAL_BYTES {
                return Err(SeedImageError::TooLarge(format!(
                    "more than {MAX_TOTAL_BYTES} bytes of files"
                )));
            }
            let contents = fs::read(&path).map_err(|e| io(&path, e))?;
            tree.insert(&rel, contents)?;
        } else {
            return Err(SeedImageError::InvalidPath {
                path: rel,
                reason: "not a regular file or directory (symlinks are not followed)",
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_paths() {
        let mut t = SeedTree::new();
        for p in ["", "/abs", "a//b", "a/../b", "./a", "a/", "a\\b"] {
            assert!(t.insert(p, vec![]).is_err(), "{p:?} accepted");
        }
        t.insert("a/b", b"x".to_vec()).unwrap();
        assert!(t.insert("a", vec![]).is_err(), "file over a directory");
        assert!(t.insert("a/b/c", vec![]).is_err(), "file below a file");
        t.insert("a/b", b"yy".to_vec()).unwrap();
        assert_eq!(t.total_bytes(), 2);
    }

    #[test]
    fn dirs_are_implied() {
        let t = SeedTree::from_files([
            ("openstack/latest/meta_data.json", vec![]),
            ("openstack/2012-08-10/user_data", vec![]),
            ("ec2/latest/meta-data.json", vec![]),
            ("top", vec![]),
        ])
        .unwrap();
        assert_eq!(
            t.dirs(),
            [
                "ec2",
                "ec2/latest",
                "openstack",
                "openstack/2012-08-10",
                "openstack/latest"
            ]
        );
    }

    #[test]
    fn from_dir_reads_files_and_refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("openstack/latest")).unwrap();
        fs::write(dir.path().join("openstack/latest/meta_data.json"), b"{}").unwrap();
        fs::write(dir.path().join("meta-data"), b"instance-id: i-1\n").unwrap();
        let t = SeedTree::from_dir(dir.path()).unwrap();
        assert_eq!(t.get("openstack/latest/meta_data.json"), Some(&b"{}"[..]));
        assert_eq!(t.len(), 2);
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("leak")).unwrap();
        let err = SeedTree::from_dir(dir.path()).unwrap_err();
        assert!(err.to_string().contains("leak"), "{err}");
    }

    #[test]
    fn depth_limit() {
        let deep = (0..=MAX_DEPTH)
            .map(|i| format!("d{i}"))
            .collect::<Vec<_>>()
            .join("/");
        let mut t = SeedTree::new();
        t.insert(&format!("{deep}/f"), vec![]).unwrap_err();
        let ok = (0..MAX_DEPTH)
            .map(|i| format!("d{i}"))
            .collect::<Vec<_>>()
            .join("/");
        t.insert(&format!("{ok}/f"), vec![]).unwrap();
    }
}
