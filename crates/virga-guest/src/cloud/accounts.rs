//! Users and groups in `/etc/passwd`, `/etc/group` and `/etc/shadow` (no NSS in the guest), and
//! SSH authorized keys.

#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;

use super::fsutil::{WriteOpts, components, write_file};

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
    pub fn ensure_group(&self, name: &str) -> Result<u32, String> {
        if !valid_name(name) {
            return Err(format!("invalid group name {name:?}"));
        }
        if let Some(g) = self.gid(name) {
            return Ok(g);
        }
        let groups = self.groups();
        let gid = (1000..60000)
            .find(|g| !groups.iter().any(|x| x.1 == *g))
            .ok_or("no free gid")?;
        let mut text = self.read("/etc/group");
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("{name}:x:{gid}:\n"));
        self.write("/etc/group", &text, 0o644)
            .map_err(|e| format!("/etc/group: {e}"))?;
        Ok(gid)
    }

    /// Adds `user` to the member list of `group` (created if missing).
    pub fn add_to_group(&self, user: &str, group: &str) -> Result<(), String> {
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
            .map_err(|e| format!("/etc/group: {e}"))
    }

    /// Creates a user (locked password) with a home directory, unless it exists. Returns it.
    pub fn ensure_user(
        &self,
        name: &str,
        uid: Option<u32>,
        primary_group: Option<&str>,
        home: Option<&str>,
        shell: Option<&str>,
        gecos: Option<&str>,
    ) -> Result<Account, String> {
        if !valid_name(name) {
            return Err(format!("invalid user name {name:?}"));
        }
        if let Some(a) = self.user(name) {
            return Ok(a);
        }
        let users = self.users();
        let uid = match uid {
            Some(u) if users.iter().any(|a| a.uid == u) => return Err(format!("uid {u} is taken")),
            Some(u) => u,
            None => (1000..60000)
                .find(|u| !users.iter().any(|a| a.uid == *u))
                .ok_or("no free uid")?,
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
            .map_err(|e| format!("/etc/passwd: {e}"))?;
        let mut shadow = self.read("/etc/shadow");
        shadow.push_str(&format!("{name}:!:0:0:99999:7:::\n"));
        self.write("/etc/shadow", &shadow, 0o600)
            .map_err(|e| format!("/etc/shadow: {e}"))?;
        let home_path = self.path(&home);
        std::fs::create_dir_all(&home_path).map_err(|e| format!("{home}: {e}"))?;
        let _ = nix::unistd::chown(
            &home_path,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        );
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
    pub fn authorize_keys(
        &self,
        account: &Account,
        keys: &[String],
        replace: bool,
    ) -> Result<usize, String> {
        let file = format!(
            "{}/.ssh/authorized_keys",
            account.home.trim_end_matches('/')
        );
        let existing = if replace {
            String::new()
        } else {
            self.read(&file)
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
        let owner = Some((account.uid, account.gid));
        let ssh_dir = self.path(&format!("{}/.ssh", account.home.trim_end_matches('/')));
        std::fs::create_dir_all(&ssh_dir).map_err(|e| format!("{}: {e}", ssh_dir.display()))?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&ssh_dir, std::fs::Permissions::from_mode(0o700));
        let _ = nix::unistd::chown(
            &ssh_dir,
            Some(nix::unistd::Uid::from_raw(account.uid)),
            Some(nix::unistd::Gid::from_raw(account.gid)),
        );
        let full = self.path(&file);
        write_file(
            &components(&full.to_string_lossy()),
            text.as_bytes(),
            WriteOpts {
                mode: 0o600,
                append: false,
                owner,
            },
        )
        .map_err(|e| format!("{file}: {e}"))?;
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
}
