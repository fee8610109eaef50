//! Login names → uid, gid, groups, home and shell, read from `/etc/passwd` and `/etc/group`.
//!
//! The guest has no NSS (static musl, no `getpwnam`), so the files are parsed here. Parsing is
//! total: malformed lines are skipped, sizes are capped, and a missing `/etc/passwd` still lets
//! `root` log in (uid 0, home `/root`, shell `/bin/sh`) so a fresh image is reachable.

use std::path::{Path, PathBuf};

/// Largest passwd/group file read (bytes); the rest is ignored.
pub const MAX_DB_FILE: u64 = 1024 * 1024;
/// Largest number of supplementary groups given to a session.
pub const MAX_GROUPS: usize = 64;

/// One account, as a session needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids (from `/etc/group`; includes `gid`).
    pub groups: Vec<u32>,
    /// Home directory (`HOME`, working directory, `%h` in authorized_keys paths).
    pub home: PathBuf,
    /// Login shell; empty in the file means `/bin/sh`.
    pub shell: PathBuf,
}

impl User {
    /// The fallback account used when `/etc/passwd` has no `root` entry.
    pub fn default_root() -> User {
        User {
            name: "root".into(),
            uid: 0,
            gid: 0,
            groups: vec![0],
            home: PathBuf::from("/root"),
            shell: PathBuf::from("/bin/sh"),
        }
    }
}

/// One `/etc/passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
    /// Login shell (may be empty).
    pub shell: String,
}

/// One `/etc/group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
    /// Member login names.
    pub members: Vec<String>,
}

/// Parses one `name:passwd:uid:gid:gecos:home:shell` line; `None` for comments and bad lines.
pub fn parse_passwd_line(line: &str) -> Option<PasswdEntry> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let fields: Vec<&str> = line.split(':').collect();
    if fields.len() != 7 {
        return None;
    }
    let name = fields[0];
    if !valid_name(name) {
        return None;
    }
    let uid = fields[2].parse().ok()?;
    let gid = fields[3].parse().ok()?;
    Some(PasswdEntry {
        name: name.to_string(),
        uid,
        gid,
        home: fields[5].to_string(),
        shell: fields[6].to_string(),
    })
}

/// Parses one `name:passwd:gid:member,member` line; `None` for comments and bad lines.
pub fn parse_group_line(line: &str) -> Option<GroupEntry> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let fields: Vec<&str> = line.split(':').collect();
    if fields.len() != 4 || !valid_name(fields[0]) {
        return None;
    }
    let gid = fields[2].parse().ok()?;
    let members = fields[3]
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect();
    Some(GroupEntry {
        name: fields[0].to_string(),
        gid,
        members,
    })
}

/// Login names: what `useradd` accepts, plus a length cap. Rejects `:`, `/`, spaces, controls.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'$'))
}

/// Looks `name` up in passwd text and group text (either may be empty).
///
/// `root` always resolves (to [`User::default_root`] when the passwd text lacks it).
pub fn lookup_in(passwd: &str, group: &str, name: &str) -> Option<User> {
    if !valid_name(name) {
        return None;
    }
    let entry = passwd
        .lines()
        .filter_map(parse_passwd_line)
        .find(|e| e.name == name);
    let mut user = match entry {
        Some(e) => User {
            name: e.name,
            uid: e.uid,
            gid: e.gid,
            groups: Vec::new(),
            home: PathBuf::from(if e.home.is_empty() {
                "/"
            } else {
                e.home.as_str()
            }),
            shell: PathBuf::from(if e.shell.is_empty() {
                "/bin/sh"
            } else {
                e.shell.as_str()
            }),
        },
        None if name == "root" => User::default_root(),
        None => return None,
    };
    let mut groups = vec![user.gid];
    for g in group.lines().filter_map(parse_group_line) {
        if groups.len() >= MAX_GROUPS {
            break;
        }
        if g.members.iter().any(|m| m == name) && !groups.contains(&g.gid) {
            groups.push(g.gid);
        }
    }
    user.groups = groups;
    Some(user)
}

/// Name of `uid` in passwd text, if any (used for SFTP `ls -l` listings).
pub fn name_of_uid(passwd: &str, uid: u32) -> Option<String> {
    passwd
        .lines()
        .filter_map(parse_passwd_line)
        .find(|e| e.uid == uid)
        .map(|e| e.name)
}

/// Name of `gid` in group text, if any.
pub fn name_of_gid(group: &str, gid: u32) -> Option<String> {
    group
        .lines()
        .filter_map(parse_group_line)
        .find(|e| e.gid == gid)
        .map(|e| e.name)
}

/// Reads a small text database (passwd/group), capped at [`MAX_DB_FILE`] bytes. A missing or
/// unreadable file reads as empty: the caller's fallbacks apply. Blocking: the server calls it
/// from the account loader's throwaway thread, the SFTP helper from its own process.
#[expect(
    clippy::disallowed_methods,
    reason = "root-owned databases, read off the runtime (see above)"
)]
pub fn read_db(path: &Path) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Ok(f) = std::fs::File::open(path) {
        let mut buf = Vec::new();
        if f.take(MAX_DB_FILE).read_to_end(&mut buf).is_ok() {
            text = String::from_utf8_lossy(&buf).into_owned();
        }
    }
    text
}

/// Looks `name` up in the passwd and group files at the given paths.
pub fn lookup(passwd_path: &Path, group_path: &Path, name: &str) -> Option<User> {
    lookup_in(&read_db(passwd_path), &read_db(group_path), name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
# comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
cirros:x:1000:1000:CirrOS:/home/cirros:
broken:x:notanumber:1::/home/b:/bin/sh
short:x:1:1
bad name:x:5:5::/:/bin/sh
";
    const GROUP: &str = "\
root:x:0:
wheel:x:10:cirros,other
users:x:100: cirros
bad
";

    #[test]
    fn parses_passwd_entries() {
        let e = parse_passwd_line("cirros:x:1000:1000:CirrOS:/home/cirros:/bin/sh").unwrap();
        assert_eq!(e.name, "cirros");
        assert_eq!((e.uid, e.gid), (1000, 1000));
        assert_eq!(e.home, "/home/cirros");
        assert_eq!(e.shell, "/bin/sh");
        assert!(parse_passwd_line("# root:x:0:0::/root:/bin/sh").is_none());
        assert!(parse_passwd_line("").is_none());
        assert!(parse_passwd_line("a:x:1:2:3:4").is_none(), "six fields");
        assert!(
            parse_passwd_line("a:x:1:2:3:4:5:6").is_none(),
            "eight fields"
        );
        assert!(
            parse_passwd_line("a:x:-1:2::/:/bin/sh").is_none(),
            "negative uid"
        );
        assert!(
            parse_passwd_line("a:x:4294967296:2::/:/bin/sh").is_none(),
            "uid overflow"
        );
    }

    #[test]
    fn looks_up_users_with_groups() {
        let u = lookup_in(PASSWD, GROUP, "cirros").unwrap();
        assert_eq!(u.uid, 1000);
        assert_eq!(
            u.shell,
            PathBuf::from("/bin/sh"),
            "empty shell means /bin/sh"
        );
        assert_eq!(u.home, PathBuf::from("/home/cirros"));
        assert_eq!(u.groups, vec![1000, 10, 100]);
        let r = lookup_in(PASSWD, GROUP, "root").unwrap();
        assert_eq!(r.shell, PathBuf::from("/bin/bash"));
        assert_eq!(r.groups, vec![0]);
        assert!(lookup_in(PASSWD, GROUP, "broken").is_none());
        assert!(lookup_in(PASSWD, GROUP, "nobody").is_none());
        assert!(lookup_in(PASSWD, GROUP, "bad name").is_none());
        assert!(lookup_in(PASSWD, GROUP, "").is_none());
        assert!(lookup_in(PASSWD, GROUP, "../etc").is_none());
    }

    #[test]
    fn root_falls_back_without_passwd() {
        assert_eq!(lookup_in("", "", "root"), Some(User::default_root()));
        assert_eq!(
            lookup_in("garbage\n\0\n", "", "root"),
            Some(User::default_root())
        );
        assert!(lookup_in("", "", "cirros").is_none());
    }

    #[test]
    fn names_of_ids() {
        assert_eq!(name_of_uid(PASSWD, 1000).as_deref(), Some("cirros"));
        assert_eq!(name_of_gid(GROUP, 10).as_deref(), Some("wheel"));
        assert_eq!(name_of_uid(PASSWD, 4242), None);
    }

    #[test]
    fn missing_files_read_empty() {
        assert_eq!(read_db(Path::new("/nonexistent/passwd")), "");
    }

    /// passwd-like lines: mostly well-formed, with odd fields and garbage mixed in.
    fn passwd_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let line = prop_oneof![
            (
                "[a-z][a-z0-9._-]{0,8}|root|alice",
                "[0-9]{1,11}|-1|x",
                "[0-9]{1,6}",
                "[^:\n]{0,12}",
                "(/[a-z]{1,6}){0,3}",
                "(/[a-z]{1,6}){0,3}",
            )
                .prop_map(|(n, uid, gid, gecos, home, shell)| {
                    format!("{n}:x:{uid}:{gid}:{gecos}:{home}:{shell}")
                }),
            "[^\n]{0,60}",
        ];
        proptest::collection::vec(line, 0..20).prop_map(|v| v.join("\n"))
    }

    /// group-like lines whose member lists often name `alice`.
    fn group_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let line = prop_oneof![
            (
                "[a-z]{1,6}",
                0u32..200,
                proptest::collection::vec("alice|bob| alice |[a-z]{0,4}", 0..6)
            )
                .prop_map(|(n, gid, m)| format!("{n}:x:{gid}:{}", m.join(","))),
            "[^\n]{0,40}",
        ];
        proptest::collection::vec(line, 0..120).prop_map(|v| v.join("\n"))
    }

    proptest::proptest! {
        #[test]
        fn passwd_parser_is_total(s in "\\PC{0,200}") {
            let _ = parse_passwd_line(&s);
            let _ = parse_group_line(&s);
            let _ = lookup_in(&s, &s, "root");
        }

        /// Entries only hold pieces of their line; lookups give a consistent, bounded user.
        #[test]
        fn lookups_are_consistent_and_bounded(
            passwd in passwd_text(),
            group in group_text(),
            name in "alice|root|bob|[a-z]{1,3}",
        ) {
            for line in passwd.lines() {
                if let Some(e) = parse_passwd_line(line) {
                    proptest::prop_assert!(e.name.len() + e.home.len() + e.shell.len() <= line.len());
                    proptest::prop_assert!(valid_name(&e.name));
                }
            }
            for line in group.lines() {
                if let Some(g) = parse_group_line(line) {
                    let members: usize = g.members.iter().map(String::len).sum();
                    proptest::prop_assert!(g.name.len() + members <= line.len());
                }
            }
            if let Some(u) = lookup_in(&passwd, &group, &name) {
                proptest::prop_assert_eq!(&u.name, &name);
                proptest::prop_assert!(!u.groups.is_empty() && u.groups.len() <= MAX_GROUPS);
                proptest::prop_assert_eq!(u.groups[0], u.gid);
                let mut dedup = u.groups.clone();
                dedup.sort_unstable();
                dedup.dedup();
                proptest::prop_assert_eq!(dedup.len(), u.groups.len(), "duplicate groups");
                proptest::prop_assert!(!u.home.as_os_str().is_empty());
                proptest::prop_assert!(!u.shell.as_os_str().is_empty());
            } else {
                proptest::prop_assert!(name != "root", "root always resolves");
            }
        }
    }
}
