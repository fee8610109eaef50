//! An in-memory file tree for the initramfs, and its reproducible newc cpio encoding.
//!
//! Every entry gets uid/gid 0, a fixed mtime and an inode number from its sorted position, so
//! the same tree always encodes to the same bytes.

use std::collections::BTreeMap;
use std::io::{self, Write};

/// One node of the image tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory with permission bits.
    Dir { mode: u32 },
    /// A regular file.
    File { data: Vec<u8>, mode: u32 },
    /// A symbolic link.
    Symlink { target: String },
    /// A character device node.
    CharDev { major: u32, minor: u32, mode: u32 },
}

/// A file tree keyed by absolute path (`/sbin/init`).
#[derive(Debug, Clone, Default)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory and its parents.
    pub fn dir(&mut self, path: &str, mode: u32) {
        self.parents(path);
        self.nodes.insert(normalise(path), Node::Dir { mode });
    }

    /// Adds (or replaces) a file, creating parent directories.
    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.parents(path);
        self.nodes
            .insert(normalise(path), Node::File { data, mode });
    }

    /// Adds (or replaces) a symlink, creating parent directories.
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.parents(path);
        self.nodes.insert(
            normalise(path),
            Node::Symlink {
                target: target.to_owned(),
            },
        );
    }

    /// Adds a character device node, creating parent directories.
    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32, mode: u32) {
        self.parents(path);
        self.nodes
            .insert(normalise(path), Node::CharDev { major, minor, mode });
    }

    /// Removes the entry at `path` (not what is under it); whether there was one.
    pub fn remove(&mut self, path: &str) -> bool {
        self.nodes.remove(&normalise(path)).is_some()
    }

    /// Whether the tree has an entry at `path`.
    pub fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(&normalise(path))
    }

    /// The entry at `path`.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(&normalise(path))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Entries in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(p, n)| (p.as_str(), n))
    }

    /// Materialises the tree under `root` (an empty directory): directories, files and symlinks
    /// with their modes, for the filesystem tools. Device nodes are refused (they need root and
    /// belong in the initramfs only).
    pub fn write_dir(&self, root: &std::path::Path) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        // Directories last (sorted paths put a parent before its children, so reverse order
        // sets a directory's mode after its contents are in place).
        for (path, node) in &self.nodes {
            let dest = root.join(path.trim_start_matches('/'));
            match node {
                Node::Dir { .. } => std::fs::create_dir_all(&dest)?,
                Node::File { data, mode } => {
                    std::fs::write(&dest, data)?;
                    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(*mode))?;
                }
                Node::Symlink { target } => std::os::unix::fs::symlink(target, &dest)?,
                Node::CharDev { .. } => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{path}: device nodes cannot go into a directory tree"),
                    ));
                }
            }
        }
        for (path, node) in self.nodes.iter().rev() {
            if let Node::Dir { mode } = node {
                let dest = root.join(path.trim_start_matches('/'));
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(*mode))?;
            }
        }
        Ok(())
    }

    fn parents(&mut self, path: &str) {
        let p = normalise(path);
        let mut at = 0;
        while let Some(i) = p[at + 1..].find('/') {
            let parent = &p[..at + 1 + i];
            self.nodes
                .entry(parent.to_owned())
                .or_insert(Node::Dir { mode: 0o755 });
            at += 1 + i;
        }
    }

    /// Writes the tree as a newc cpio archive (the format the kernel unpacks as initramfs).
    /// `mtime` is stamped on every entry.
    pub fn write_cpio<W: Write>(&self, out: &mut W, mtime: u32) -> io::Result<u64> {
        let mut w = CountingWriter {
            inner: out,
            count: 0,
        };
        for (ino, (path, node)) in self.nodes.iter().enumerate() {
            let name = path.trim_start_matches('/');
            let (mode, data, nlink, rdev): (u32, &[u8], u32, (u32, u32)) = match node {
                Node::Dir { mode } => (0o040000 | mode, &[], 2, (0, 0)),
                Node::File { data, mode } => (0o100000 | mode, data, 1, (0, 0)),
                Node::Symlink { target } => (0o120777, target.as_bytes(), 1, (0, 0)),
                Node::CharDev { major, minor, mode } => (0o020000 | mode, &[], 1, (*major, *minor)),
            };
            write_entry(&mut w, ino as u32 + 1, name, mode, nlink, mtime, data, rdev)?;
        }
        write_entry(&mut w, 0, "TRAILER!!!", 0, 1, 0, &[], (0, 0))?;
        Ok(w.count)
    }
}

fn normalise(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}

#[allow(clippy::too_many_arguments)]
fn write_entry<W: Write>(
    w: &mut CountingWriter<W>,
    ino: u32,
    name: &str,
    mode: u32,
    nlink: u32,
    mtime: u32,
    data: &[u8],
    rdev: (u32, u32),
) -> io::Result<()> {
    let size = u32::try_from(data.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: over 4 GiB")))?;
    let namesize = name.len() as u32 + 1;
    let header = format!(
        "070701{ino:08X}{mode:08X}{uid:08X}{gid:08X}{nlink:08X}{mtime:08X}{size:08X}\
         {dmaj:08X}{dmin:08X}{rmaj:08X}{rmin:08X}{namesize:08X}{check:08X}",
        uid = 0,
        gid = 0,
        dmaj = 0,
        dmin = 0,
        rmaj = rdev.0,
        rmin = rdev.1,
        check = 0,
    );
    w.write_all(header.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    w.pad4()?;
    w.write_all(data)?;
    w.pad4()
}

struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> CountingWriter<W> {
    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        self.inner.write_all(b)?;
        self.count += b.len() as u64;
        Ok(())
    }

    fn pad4(&mut self) -> io::Result<()> {
        let pad = (4 - (self.count % 4) as usize) % 4;
        self.write_all(&[0u8; 3][..pad])
    }
}

/// A regular file's data in a newc cpio archive (`name` without a leading `/`); `None` when
/// it is not there or the archive is malformed.
pub fn cpio_file<'a>(cpio: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let hex = |b: &[u8]| {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| usize::from_str_radix(s, 16).ok())
    };
    let mut at = 0usize;
    while at + 110 <= cpio.len() {
        let h = &cpio[at..at + 110];
        if &h[..6] != b"070701" && &h[..6] != b"070702" {
            return None;
        }
        let size = hex(&h[54..62])?;
        let namesize = hex(&h[94..102])?;
        let name_start = at + 110;
        let name_end = name_start.checked_add(namesize)?;
        let entry = cpio.get(name_start..name_end.checked_sub(1)?)?;
        let data_start = name_end.next_multiple_of(4);
        let data_end = data_start.checked_add(size)?;
        let data = cpio.get(data_start..data_end)?;
        let entry = std::str::from_utf8(entry).ok()?;
        if entry == "TRAILER!!!" {
            return None;
        }
        if entry.trim_start_matches("./").trim_start_matches('/') == name {
            return Some(data);
        }
        at = data_end.next_multiple_of(4);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sample() -> Tree {
        let mut t = Tree::new();
        t.file("/sbin/virga", b"\x7fELF fake".to_vec(), 0o755);
        t.symlink("/sbin/init", "virga");
        t.char_dev("/dev/console", 5, 1, 0o600);
        t.dir("/proc", 0o555);
        t.file("/etc/hostname", b"virga\n".to_vec(), 0o644);
        t
    }

    fn encode(t: &Tree) -> Vec<u8> {
        let mut v = Vec::new();
        t.write_cpio(&mut v, 0).unwrap();
        v
    }

    #[test]
    fn parents_are_created() {
        let t = sample();
        assert_eq!(t.get("/sbin"), Some(&Node::Dir { mode: 0o755 }));
        assert_eq!(t.get("/dev"), Some(&Node::Dir { mode: 0o755 }));
        assert!(t.contains("/etc/hostname"));
    }

    #[test]
    fn encoding_is_deterministic_and_aligned() {
        let a = encode(&sample());
        assert_eq!(a, encode(&sample()));
        assert_eq!(a.len() % 4, 0);
        assert!(a.starts_with(b"070701"));
    }

    /// The real `cpio` tool must list exactly our entries with the right types.
    #[test]
    fn real_cpio_reads_it() {
        let archive = encode(&sample());
        let mut child = match Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("this test needs GNU cpio (apt-get install cpio): {e}"),
        };
        child.stdin.take().unwrap().write_all(&archive).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listing = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 8, "{listing}");
        let find = |name: &str| {
            *lines
                .iter()
                .find(|l| l.ends_with(name) || l.contains(&format!(" {name} ->")))
                .unwrap()
        };
        assert!(find("sbin/virga").starts_with("-rwxr-xr-x"));
        assert!(find("sbin/init").starts_with("lrwxrwxrwx"));
        assert!(find("sbin/init").ends_with("-> virga"));
        assert!(find("dev/console").starts_with("crw-------"));
        assert!(find("dev/console").contains("5,"));
        assert!(find("proc").starts_with("dr-xr-xr-x"));
    }

    /// Extracting with the real `cpio -i` gives back the file contents.
    #[test]
    fn real_cpio_extracts_contents() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tree::new();
        let payload: Vec<u8> = (0..10_001u32).map(|i| (i % 251) as u8).collect();
        t.file("/a/b/data.bin", payload.clone(), 0o600);
        let archive = encode(&t);
        let mut child = Command::new("cpio")
            .args(["-i", "-d", "--quiet"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&archive).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(
            std::fs::read(dir.path().join("a/b/data.bin")).unwrap(),
            payload
        );
    }

    #[test]
    fn write_dir_materialises_modes_and_links() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let mut t = Tree::new();
        t.file("/bin/busybox", b"bb".to_vec(), 0o755);
        t.symlink("/bin/sh", "busybox");
        t.dir("/lib/x", 0o700);
        t.write_dir(d.path()).unwrap();
        let m = std::fs::metadata(d.path().join("bin/busybox")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o755);
        assert_eq!(
            std::fs::read_link(d.path().join("bin/sh")).unwrap(),
            std::path::Path::new("busybox")
        );
        let m = std::fs::metadata(d.path().join("lib/x")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o700);
        let mut dev = Tree::new();
        dev.char_dev("/dev/null", 1, 3, 0o666);
        assert!(dev.write_dir(&d.path().join("other")).is_err());
    }

    proptest::proptest! {
        #[test]
        fn archive_length_is_aligned(names in proptest::collection::vec("[a-z]{1,12}", 1..20),
                                     sizes in proptest::collection::vec(0usize..300, 1..20)) {
            let mut t = Tree::new();
            for (n, s) in names.iter().zip(sizes.iter()) {
                t.file(&format!("/d/{n}"), vec![7; *s], 0o644);
            }
            let v = encode(&t);
            proptest::prop_assert_eq!(v.len() % 4, 0);
            let trailer_pos = v.windows(10).rposition(|w| w == b"TRAILER!!!");
            proptest::prop_assert!(trailer_pos.is_some());
        }
    }

    #[test]
    fn finds_files_in_newc() {
        let mut t = Tree::new();
        t.file("/etc/virga/image.json", b"{\"x\":1}".to_vec(), 0o644);
        let mut a = Vec::new();
        t.write_cpio(&mut a, 0).unwrap();
        assert_eq!(
            cpio_file(&a, "etc/virga/image.json"),
            Some(&b"{\"x\":1}"[..])
        );
        assert_eq!(cpio_file(&a, "nope"), None);
        assert_eq!(cpio_file(&a[..50], "etc"), None);
        assert_eq!(cpio_file(b"garbage", "etc"), None);
    }
}
