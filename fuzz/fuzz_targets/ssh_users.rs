//! passwd/group parsing (ssh-server): arbitrary text (split at the first NUL into a passwd and
//! a group file) must never panic; entries hold only pieces of their line, and lookups give a
//! consistent user with a bounded group list (`root` always resolves).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssh_server::users::{
    MAX_GROUPS, lookup_in, name_of_gid, name_of_uid, parse_group_line, parse_passwd_line,
    valid_name,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (passwd, group) = text.split_once('\0').unwrap_or((&text, &text));
    let mut names = vec!["root".to_string()];
    for line in passwd.lines() {
        if let Some(e) = parse_passwd_line(line) {
            assert!(valid_name(&e.name));
            assert!(e.name.len() + e.home.len() + e.shell.len() <= line.len());
            if names.len() < 8 {
                names.push(e.name.clone());
            }
            let _ = name_of_uid(passwd, e.uid);
        }
    }
    for line in group.lines() {
        if let Some(g) = parse_group_line(line) {
            let members: usize = g.members.iter().map(String::len).sum();
            assert!(g.name.len() + members <= line.len());
            let _ = name_of_gid(group, g.gid);
        }
    }
    // Names that are not in the file, or not valid at all, too.
    names.push(passwd.chars().take(16).collect());
    for name in &names {
        match lookup_in(passwd, group, name) {
            Some(u) => {
                assert_eq!(&u.name, name);
                assert!(!u.groups.is_empty() && u.groups.len() <= MAX_GROUPS);
                assert_eq!(u.groups[0], u.gid);
                assert!(!u.home.as_os_str().is_empty() && !u.shell.as_os_str().is_empty());
            }
            None => assert!(name != "root", "root always resolves"),
        }
    }
});
