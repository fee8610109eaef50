//! SFTP sessions (ssh-server): arbitrary byte streams through the packet framing
//! (`sftp::serve_frames`, as the `sftp-server` helper reads its stdin) into
//! `SftpServer::process`, which really executes the requests, in a scratch directory that is
//! the working directory and `~`. Every frame is parsed; the harness only holds back requests
//! that could reach outside the scratch directory (absolute paths, `..`, links) before they
//! execute. Checks: no panic, every response is at most `MAX_PACKET` bytes and answers its
//! request's id, and the output is exactly the responses, framed, in order.
//!
//! The scratch directory is `$TMPDIR/virga-fuzz-sftp-<pid>`, emptied before every input (so a
//! crash reproduces from its input alone); directories of fuzzers no longer running are removed
//! at start.
#![no_main]

use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ssh_server::sftp::{self, MAX_PACKET, Request, SftpServer, parse_request};

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n";
const GROUP: &str = "root:x:0:\nalice:x:1000:\n";
const PREFIX: &str = "virga-fuzz-sftp-";

static SCRATCH: OnceLock<PathBuf> = OnceLock::new();

fn setup() {
    let tmp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(PREFIX)
                && !Path::new("/proc").join(pid).exists()
            {
                wipe(&e.path());
            }
        }
    }
    let dir = tmp.join(format!("{PREFIX}{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    SCRATCH.set(dir).expect("set once");
}

/// Removes `dir`, first making every directory in it traversable (a request may have set
/// mode 0 on one).
fn wipe(dir: &Path) {
    fn open_up(d: &Path) {
        let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700));
        if let Ok(entries) = std::fs::read_dir(d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    open_up(&e.path());
                }
            }
        }
    }
    open_up(dir);
    let _ = std::fs::remove_dir_all(dir);
}

/// A relative path of plain names: resolves inside the working directory (the scratch one,
/// where the harness never lets a link be made).
fn confined(p: &Path) -> bool {
    p.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Whether executing `payload` can touch nothing outside the scratch directory.
fn allowed(payload: &[u8]) -> bool {
    let Ok(req) = parse_request(payload) else {
        return true; // answered (or ignored) without touching any file
    };
    match req {
        Request::Init(_) | Request::Limits { .. } | Request::Unsupported { .. } => true,
        // Handles only ever name what a confined request opened.
        Request::Close { .. }
        | Request::Read { .. }
        | Request::Write { .. }
        | Request::Fstat { .. }
        | Request::Fsetstat { .. }
        | Request::Readdir { .. }
        | Request::Fsync { .. } => true,
        Request::Open { path, .. }
        | Request::Lstat { path, .. }
        | Request::Setstat { path, .. }
        | Request::Opendir { path, .. }
        | Request::Remove { path, .. }
        | Request::Mkdir { path, .. }
        | Request::Rmdir { path, .. }
        | Request::Realpath { path, .. }
        | Request::Stat { path, .. }
        | Request::Readlink { path, .. } => confined(&path),
        Request::ExpandPath { path, .. } => match path.strip_prefix("~") {
            Ok(rest) => confined(rest),
            Err(_) => confined(&path),
        },
        Request::Rename { from, to, .. } | Request::PosixRename { from, to, .. } => {
            confined(&from) && confined(&to)
        }
        // A link made here could point anywhere; later requests would follow it.
        Request::Symlink { .. } | Request::Hardlink { .. } => false,
    }
}

fuzz_target!(init: setup(), |data: &[u8]| {
    let scratch = SCRATCH.get().expect("initialised");
    let work = scratch.join("w");
    wipe(&work);
    std::fs::create_dir(&work).expect("work directory");
    std::env::set_current_dir(&work).expect("enter the work directory");
    let mut server = SftpServer::new(work.clone(), PASSWD.into(), GROUP.into());
    let mut responses: Vec<Vec<u8>> = Vec::new();
    let mut out = Vec::new();
    let _ = sftp::serve_frames(data, &mut out, |payload| {
        assert!(!payload.is_empty() && payload.len() <= MAX_PACKET as usize);
        if !allowed(payload) {
            return None;
        }
        let resp = server.process(payload)?;
        assert!(resp.len() <= MAX_PACKET as usize, "response of {} bytes", resp.len());
        if payload[0] != 1 {
            // Everything but INIT answers with the request's id.
            assert_eq!(resp.get(1..5), payload.get(1..5), "reply to another id");
        }
        responses.push(resp.clone());
        Some(resp)
    });
    let mut framed = Vec::new();
    for r in &responses {
        framed.extend((r.len() as u32).to_be_bytes());
        framed.extend(r);
    }
    assert!(out == framed, "output is not the framed responses");
    std::env::set_current_dir(scratch).expect("leave the work directory");
});
