//! Users and groups in `/etc/passwd`, `/etc/group` and `/etc/shadow` (no NSS in the guest), and
//! SSH authorized keys.

#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;

use crate::fsutil::{
    WriteOpts, components, ensure_dir_at, open_dirs, read_at, write_at, write_file,
};

/// The largest `authorized_keys` file read back before keys are appended.
const MAX_AUTHORIZED_KEYS: u64 = 1 << 20;

/// What can go wrong with users, groups and keys.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    /// A user or group name that `useradd` would refuse.
    #[error("invalid {kind} name {name:?}")]
    InvalidName {
        /// `user` or `group`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// The uid asked for belongs to another user.
    #[error("uid {0} is taken")]
    UidTaken(u32),
    /// Every id from 1000 to 59999 is used.
    #[error("no free {0} between 1000 and 59999")]
    NoFreeId(&'static str),
    /// A file or directory could not be read or written (symlinks and FIFOs are refused).
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: impl Into<String>) -> impl FnOnce(std::io::Error) -> AccountsError {
    let path = path.into();
    move |source| AccountsError::Io { path, source }
}

/// One `/etc/passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
}

/// The account database under a root directory (`/` in the guest; a temp dir in tests).
#[derive(Debug, Clone)]
pub struct Accounts {
    root: PathBuf,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 32
        && !n.starts_with('-')
        && n.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
        })
}

impl Accounts {
    /// The guest's own database.
    pub fn system() -> Self {
        Self {
            root: PathBuf::from("/"),
        }
    }

    /// A database below `root`.
    #[cfg(test)]
    pub fn at(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    fn read(&self, p: &str) -> String {
        std::fs::read_to_string(self.path(p)).unwrap_or_default()
    }

    fn write(&self, p: &str, text: &str, mode: u32) -> std::io::Result<()> {
        let full = self.path(p);
        write_file(
            &components(&full.to_string_lossy()),
            text.as_bytes(),
            WriteOpts {
                mode,
                ..Default::default()
            },
        )
    }

    /// All passwd entries.
    pub fn users(&self) -> Vec<Account> {
        self.read("/etc/passwd")
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                if f.len() < 7 {
                    return None;
                }
                Some(Account {
                    name: f[0].into(),
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                    home: f[5].into(),
                    shell: f[6].into(),
                })
            })
            .collect()
    }

    /// Looks up a user by name.
    pub fn user(&self, name: &str) -> Option<Account> {
        self.users().into_iter().find(|a| a.name == name)
    }

    /// `(name, gid, members)` of every group.
    pub fn groups(&self) -> Vec<(String, u32, Vec<String>)> {
        self.read("/etc/group")
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                if f.len() < 4 {
                    return None;
                }
                let members = f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect();
                Some((f[0].to_owned(), f[2].parse().ok()?, members))
            })
            .collect()
    }

    /// The gid of a group name or number.
    pub fn gid(&self, group: &str) -> Option<u32> {
        group.parse().ok().or_else(|| {
            self.groups()
                .into_iter()
                .find(|g| g.0 == group)
                .map(|g| g.1)
        })
    }

    /// Adds a group if missing; returns its gid.
    pub fn ensure_group(&self, name: &str) -> Result<u32, AccountsError> {
        if !valid_name(name) {
            return Err(AccountsError::InvalidName {
                kind: "group",
                name: name.to_owned(),
            });
        }
        if let Some(g) = self.gid(name) {
            return Ok(g);
        }
        let groups = self.groups();
        let gid = (1000..60000)
            .find(|g| !groups.iter().any(|x| x.1 == *g))
            .ok_or(AccountsError::NoFreeId("gid"))?;
        let mut text = self.read("/etc/group");
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("{name}:x:{gid}:\n"));
        self.write("/etc/group", &text, 0o644)
            .map_err(io_err("/etc/group"))?;
        Ok(gid)
    }

    /// Adds `user` to the member list of `group` (created if missing).
    pub fn add_to_group(&self, user: &str, group: &str) -> Result<(), AccountsError> {
        self.ensure_group(group)?;
        let text = self.read("/etc/group");
        let mut out = String::new();
        for line in text.lines() {
            let mut f: Vec<String> = line.split(':').map(str::to_owned).collect();
            if f.len() >= 4 && f[0] == group {
                let mut members: Vec<String> = f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect();
                if !members.iter().any(|m| m == user) {
                    members.push(user.to_owned());
                }
                f[3] = members.join(",");
            }
            out.push_str(&f.join(":"));
            out.push('\n');
        }
        self.write("/etc/group", &out, 0o644)
            .map_err(io_err("/etc/group"))
    }

    /// Creates a user (locked password) with a home directory, unless it exists. Returns it.
    /// The home directory is created and handed to the user through descriptors opened without
    /// following symlinks, so no path the user controls can redirect it.
    pub fn ensure_user(
        &self,
        name: &str,
        uid: Option<u32>,
        primary_group: Option<&str>,
        home: Option<&str>,
        shell: Option<&str>,
        gecos: Option<&str>,
    ) -> Result<Account, AccountsError> {
        if !valid_name(name) {
            return Err(AccountsError::InvalidName {
                kind: "user",
                name: name.to_owned(),
            });
        }
        if let Some(a) = self.user(name) {
            return Ok(a);
        }
        let users = self.users();
        let uid = match uid {
            Some(u) if users.iter().any(|a| a.uid == u) => return Err(AccountsError::UidTaken(u)),
            Some(u) => u,
            None => (1000..60000)
                .find(|u| !users.iter().any(|a| a.uid == *u))
                .ok_or(AccountsError::NoFreeId("uid"))?,
        };
        let gid = self.ensure_group(primary_group.unwrap_or(name))?;
        let home = home
            .map(str::to_owned)
            .unwrap_or_else(|| format!("/home/{name}"));
        let shell = shell.unwrap_or("/bin/sh");
        let clean = |s: &str| s.replace([':', '\n'], " ");
        let mut passwd = self.read("/etc/passwd");
        passwd.push_str(&format!(
            "{name}:x:{uid}:{gid}:{}:{}:{}\n",
            clean(gecos.unwrap_or(name)),
            clean(&home),
            clean(shell)
        ));
        self.write("/etc/passwd", &passwd, 0o644)
            .map_err(io_err("/etc/passwd"))?;
        let mut shadow = self.read("/etc/shadow");
        shadow.push_str(&format!("{name}:!:0:0:99999:7:::\n"));
        self.write("/etc/shadow", &shadow, 0o600)
            .map_err(io_err("/etc/shadow"))?;
        let home_path = self.path(&home);
        let parts = components(&home_path.to_string_lossy());
        if let Some((last, parents)) = parts.split_last() {
            let parent = open_dirs(parents).map_err(io_err(home.clone()))?;
            ensure_dir_at(&parent, last, 0o755, Some((uid, gid))).map_err(io_err(home.clone()))?;
        }
        Ok(Account {
            name: name.into(),
            uid,
            gid,
            home,
            shell: shell.into(),
        })
    }

    /// Writes `~/.ssh/authorized_keys` of `account`: `replace` sets the file to `keys`, otherwise
    /// missing keys are appended. Directory 0700, file 0600, owned by the user.
    ///
    /// This runs as root on paths inside the user's home, which the user controls (and which
    /// may persist on the state disk from an earlier boot): every step is an `openat` with
    /// `O_NOFOLLOW` from the home directory down, ownership and modes are set on descriptors,
    /// and the old file is read only if it is a regular file (never a symlink or a FIFO).
    pub fn authorize_keys(
        &self,
        account: &Account,
        keys: &[String],
        replace: bool,
    ) -> Result<usize, AccountsError> {
        let home = account.home.trim_end_matches('/');
        let ssh = format!("{home}/.ssh");
        let file = format!("{ssh}/authorized_keys");
        let owner = Some((account.uid, account.gid));
        let home_dir =
            open_dirs(&components(&self.path(home).to_string_lossy())).map_err(io_err(home))?;
        let ssh_dir = ensure_dir_at(&home_dir, ".ssh", 0o700, owner).map_err(io_err(ssh))?;
        let existing = if replace {
            String::new()
        } else {
            read_at(&ssh_dir, "authorized_keys", MAX_AUTHORIZED_KEYS)
                .map_err(io_err(file.clone()))?
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        let mut lines: Vec<String> = existing.lines().map(str::to_owned).collect();
        let mut added = 0;
        for k in keys {
            if !lines.iter().any(|l| l.trim() == k.trim()) {
                lines.push(k.trim().to_owned());
                added += 1;
            }
        }
        let mut text = lines.join("\n");
        text.push('\n');
        write_at(
            &ssh_dir,
            "authorized_keys",
            text.as_bytes(),
            WriteOpts {
                mode: 0o600,
                append: false,
                owner,
            },
        )
        .map_err(io_err(file))?;
        Ok(added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Accounts) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\n").unwrap();
        std::fs::write(d.path().join("etc/shadow"), "root:*:0:0:99999:7:::\n").unwrap();
        let a = Accounts::at(d.path());
        (d, a)
    }

    #[test]
    fn users_groups_and_keys() {
        let (d, a) = db();
        let u = a
            .ensure_user("alice", None, None, None, Some("/bin/ash"), None)
            .unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/alice"));
        assert_eq!(
            a.ensure_user("alice", None, None, None, None, None)
                .unwrap(),
            u
        );
        a.add_to_group("alice", "wheel").unwrap();
        a.add_to_group("alice", "wheel").unwrap();
        let wheel = a.groups().into_iter().find(|g| g.0 == "wheel").unwrap();
        assert_eq!(wheel.2, vec!["alice".to_string()]);
        assert!(
            std::fs::read_to_string(d.path().join("etc/shadow"))
                .unwrap()
                .contains("alice:!:")
        );
        assert!(
            a.ensure_user("Bad:Name", None, None, None, None, None)
                .is_err()
        );
        assert!(
            a.ensure_user("bob", Some(1000), None, None, None, None)
                .is_err()
        );
        let keys = vec![
            "ssh-ed25519 AAAA one".to_string(),
            "ssh-ed25519 AAAA one".to_string(),
        ];
        assert_eq!(a.authorize_keys(&u, &keys, false).unwrap(), 1);
        assert_eq!(
            a.authorize_keys(&u, &["ssh-ed25519 BBBB two".into()], false)
                .unwrap(),
            1
        );
        let text =
            std::fs::read_to_string(d.path().join("home/alice/.ssh/authorized_keys")).unwrap();
        assert_eq!(text.lines().count(), 2);
        a.authorize_keys(&u, &["ssh-ed25519 CCCC three".into()], true)
            .unwrap();
        let text =
            std::fs::read_to_string(d.path().join("home/alice/.ssh/authorized_keys")).unwrap();
        assert_eq!(text, "ssh-ed25519 CCCC three\n");
    }

    #[test]
    fn a_users_symlinks_are_never_followed_as_root() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let (d, a) = db();
        let u = a
            .ensure_user("mallory", None, None, None, None, None)
            .unwrap();
        let home = d.path().join("home/mallory");
        // ~/.ssh pointing at a root-owned directory: refused, the directory untouched.
        let target = d.path().join("etc-like");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&target, home.join(".ssh")).unwrap();
        let e = a
            .authorize_keys(&u, &["ssh-ed25519 AAAA k".into()], false)
            .unwrap_err();
        assert!(e.to_string().contains(".ssh"), "{e}");
        let m = std::fs::metadata(&target).unwrap();
        assert_eq!(
            (m.uid(), m.mode() & 0o777),
            (0, 0o755),
            "the target was handed over"
        );
        assert!(!target.join("authorized_keys").exists());
        // authorized_keys pointing at a secret: never read, the link replaced.
        std::fs::remove_file(home.join(".ssh")).unwrap();
        std::fs::create_dir(home.join(".ssh")).unwrap();
        let secret = d.path().join("etc/shadow");
        std::os::unix::fs::symlink(&secret, home.join(".ssh/authorized_keys")).unwrap();
        let e = a
            .authorize_keys(&u, &["ssh-ed25519 AAAA k".into()], false)
            .unwrap_err();
        assert!(e.to_string().contains("authorized_keys"), "{e}");
        a.authorize_keys(&u, &["ssh-ed25519 AAAA k".into()], true)
            .unwrap();
        let keys = std::fs::read_to_string(home.join(".ssh/authorized_keys")).unwrap();
        assert_eq!(keys, "ssh-ed25519 AAAA k\n");
        assert!(
            std::fs::read_to_string(&secret)
                .unwrap()
                .starts_with("root:")
        );
        let m = std::fs::symlink_metadata(home.join(".ssh/authorized_keys")).unwrap();
        assert!(m.is_file() && m.uid() == u.uid && m.mode() & 0o777 == 0o600);
        // A FIFO does not block the boot.
        std::fs::remove_file(home.join(".ssh/authorized_keys")).unwrap();
        nix::unistd::mkfifo(
            &home.join(".ssh/authorized_keys"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let t = std::time::Instant::now();
        assert!(
            a.authorize_keys(&u, &["ssh-ed25519 AAAA k".into()], false)
                .is_err()
        );
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
    }
}
