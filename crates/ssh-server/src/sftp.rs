//! An SFTP version 3 server (draft-ietf-secsh-filexfer-02, with the OpenSSH extensions that
//! `scp` and `sftp` use), run as a separate process on stdin/stdout.
//!
//! Why a process and not a task in the SSH server: file access must happen with the user's
//! uid, gid and groups. The SSH server starts it exactly like an `exec` request (credentials
//! dropped, working directory = home), as OpenSSH starts `sftp-server`. The guest's multi-call
//! binary exposes it as its `sftp-server` applet, which calls [`serve_stdio`].
//!
//! The loop is synchronous (no async runtime in the helper) and bounded: one request of at
//! most [`MAX_PACKET`] bytes is held at a time, at most [`MAX_HANDLES`] handles are open, and
//! reads return at most [`MAX_READ`] bytes. Requests are parsed by [`parse_request`], a total
//! function with a fuzz target; a malformed request gets `SSH_FX_BAD_MESSAGE`, an oversized
//! length ends the session (the stream cannot be resynchronised).
#![allow(
    clippy::disallowed_methods,
    reason = "the SFTP helper is its own process, run as the user; no runtime thread to stall"
)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions, ReadDir};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::users;

/// Largest request accepted, in bytes (OpenSSH's `SFTP_MAX_MSG_LENGTH`).
pub const MAX_PACKET: u32 = 256 * 1024;
/// Largest read returned and write accepted, in bytes.
pub const MAX_READ: u32 = MAX_PACKET - 1024;
/// Most handles open at once.
pub const MAX_HANDLES: usize = 256;
/// Directory entries returned per `READDIR`.
const READDIR_BATCH: usize = 100;

const FXP_INIT: u8 = 1;
const FXP_VERSION: u8 = 2;
const FXP_OPEN: u8 = 3;
const FXP_CLOSE: u8 = 4;
const FXP_READ: u8 = 5;
const FXP_WRITE: u8 = 6;
const FXP_LSTAT: u8 = 7;
const FXP_FSTAT: u8 = 8;
const FXP_SETSTAT: u8 = 9;
const FXP_FSETSTAT: u8 = 10;
const FXP_OPENDIR: u8 = 11;
const FXP_READDIR: u8 = 12;
const FXP_REMOVE: u8 = 13;
const FXP_MKDIR: u8 = 14;
const FXP_RMDIR: u8 = 15;
const FXP_REALPATH: u8 = 16;
const FXP_STAT: u8 = 17;
const FXP_RENAME: u8 = 18;
const FXP_READLINK: u8 = 19;
const FXP_SYMLINK: u8 = 20;
const FXP_STATUS: u8 = 101;
const FXP_HANDLE: u8 = 102;
const FXP_DATA: u8 = 103;
const FXP_NAME: u8 = 104;
const FXP_ATTRS: u8 = 105;
const FXP_EXTENDED: u8 = 200;
const FXP_EXTENDED_REPLY: u8 = 201;

/// Status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// End of file or directory.
    Eof = 1,
    /// No such file.
    NoSuchFile = 2,
    /// Permission denied.
    PermissionDenied = 3,
    /// Any other failure.
    Failure = 4,
    /// Malformed request.
    BadMessage = 5,
    /// Request not supported.
    OpUnsupported = 8,
}

const ATTR_SIZE: u32 = 0x1;
const ATTR_UIDGID: u32 = 0x2;
const ATTR_PERMISSIONS: u32 = 0x4;
const ATTR_ACMODTIME: u32 = 0x8;
const ATTR_EXTENDED: u32 = 0x8000_0000;

const OPEN_READ: u32 = 0x1;
const OPEN_WRITE: u32 = 0x2;
const OPEN_APPEND: u32 = 0x4;
const OPEN_CREAT: u32 = 0x8;
const OPEN_TRUNC: u32 = 0x10;
const OPEN_EXCL: u32 = 0x20;

/// File attributes (`ATTRS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    /// Size in bytes.
    pub size: Option<u64>,
    /// Owner and group.
    pub uid_gid: Option<(u32, u32)>,
    /// Mode bits including the file type.
    pub permissions: Option<u32>,
    /// Access and modification times (seconds since the epoch).
    pub atime_mtime: Option<(u32, u32)>,
}

impl Attrs {
    fn from_metadata(m: &Metadata) -> Attrs {
        Attrs {
            size: Some(m.size()),
            uid_gid: Some((m.uid(), m.gid())),
            permissions: Some(m.mode()),
            atime_mtime: Some((clamp_time(m.atime()), clamp_time(m.mtime()))),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let mut flags = 0;
        if self.size.is_some() {
            flags |= ATTR_SIZE;
        }
        if self.uid_gid.is_some() {
            flags |= ATTR_UIDGID;
        }
        if self.permissions.is_some() {
            flags |= ATTR_PERMISSIONS;
        }
        if self.atime_mtime.is_some() {
            flags |= ATTR_ACMODTIME;
        }
        put_u32(out, flags);
        if let Some(s) = self.size {
            put_u64(out, s);
        }
        if let Some((u, g)) = self.uid_gid {
            put_u32(out, u);
            put_u32(out, g);
        }
        if let Some(p) = self.permissions {
            put_u32(out, p);
        }
        if let Some((a, m)) = self.atime_mtime {
            put_u32(out, a);
            put_u32(out, m);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Attrs, Malformed> {
        let flags = r.u32()?;
        let mut a = Attrs::default();
        if flags & ATTR_SIZE != 0 {
            a.size = Some(r.u64()?);
        }
        if flags & ATTR_UIDGID != 0 {
            a.uid_gid = Some((r.u32()?, r.u32()?));
        }
        if flags & ATTR_PERMISSIONS != 0 {
            a.permissions = Some(r.u32()?);
        }
        if flags & ATTR_ACMODTIME != 0 {
            a.atime_mtime = Some((r.u32()?, r.u32()?));
        }
        if flags & ATTR_EXTENDED != 0 {
            let count = r.u32()?;
            for _ in 0..count {
                r.bytes()?;
                r.bytes()?;
            }
        }
        Ok(a)
    }
}

fn clamp_time(t: i64) -> u32 {
    u32::try_from(t.max(0)).unwrap_or(u32::MAX)
}

/// What a request handler returns: `Err((id, status))` turns into a STATUS reply.
type Reply = Result<(), (u32, Status)>;

/// A request that is not well-formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, Malformed> {
        let hi = u64::from(self.u32()?);
        let lo = u64::from(self.u32()?);
        Ok(hi << 32 | lo)
    }
    fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn path(&mut self) -> Result<PathBuf, Malformed> {
        let b = self.bytes()?;
        if b.contains(&0) {
            return Err(Malformed);
        }
        Ok(PathBuf::from(OsStr::from_bytes(b)))
    }
    fn string(&mut self) -> Result<String, Malformed> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| Malformed)
    }
}

/// One parsed request (with its id, except `Init`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `SSH_FXP_INIT` with the client's version.
    Init(u32),
    /// Open a file.
    Open {
        id: u32,
        path: PathBuf,
        pflags: u32,
        attrs: Attrs,
    },
    /// Close a handle.
    Close { id: u32, handle: Vec<u8> },
    /// Read from a file handle.
    Read {
        id: u32,
        handle: Vec<u8>,
        offset: u64,
        len: u32,
    },
    /// Write to a file handle.
    Write {
        id: u32,
        handle: Vec<u8>,
        offset: u64,
        data: Vec<u8>,
    },
    /// `lstat`.
    Lstat { id: u32, path: PathBuf },
    /// `fstat` on a handle.
    Fstat { id: u32, handle: Vec<u8> },
    /// Change attributes of a path.
    Setstat {
        id: u32,
        path: PathBuf,
        attrs: Attrs,
    },
    /// Change attributes of a handle.
    Fsetstat {
        id: u32,
        handle: Vec<u8>,
        attrs: Attrs,
    },
    /// Open a directory.
    Opendir { id: u32, path: PathBuf },
    /// Next directory entries.
    Readdir { id: u32, handle: Vec<u8> },
    /// Remove a file.
    Remove { id: u32, path: PathBuf },
    /// Make a directory.
    Mkdir {
        id: u32,
        path: PathBuf,
        attrs: Attrs,
    },
    /// Remove a directory.
    Rmdir { id: u32, path: PathBuf },
    /// Canonical absolute path.
    Realpath { id: u32, path: PathBuf },
    /// `stat`.
    Stat { id: u32, path: PathBuf },
    /// Rename (fails if the target exists, per the draft).
    Rename { id: u32, from: PathBuf, to: PathBuf },
    /// Read a symlink.
    Readlink { id: u32, path: PathBuf },
    /// Make a symlink (`target`, `link`: OpenSSH's argument order).
    Symlink {
        id: u32,
        target: PathBuf,
        link: PathBuf,
    },
    /// `posix-rename@openssh.com`.
    PosixRename { id: u32, from: PathBuf, to: PathBuf },
    /// `hardlink@openssh.com`.
    Hardlink {
        id: u32,
        target: PathBuf,
        link: PathBuf,
    },
    /// `fsync@openssh.com`.
    Fsync { id: u32, handle: Vec<u8> },
    /// `limits@openssh.com`.
    Limits { id: u32 },
    /// `expand-path@openssh.com`.
    ExpandPath { id: u32, path: PathBuf },
    /// A request type or extension this server does not implement.
    Unsupported { id: u32 },
}

/// Parses one request payload (type byte first, no length prefix). Total: never panics.
///
/// `Err(Some(id))` is a malformed request whose id could be read (answered with
/// `SSH_FX_BAD_MESSAGE`); `Err(None)` one without even an id.
pub fn parse_request(payload: &[u8]) -> Result<Request, Option<u32>> {
    let mut r = Reader(payload);
    let kind = r.u8().map_err(|_| None)?;
    if kind == FXP_INIT {
        return r.u32().map(Request::Init).map_err(|_| None);
    }
    let id = r.u32().map_err(|_| None)?;
    parse_body(kind, id, &mut r).map_err(|_| Some(id))
}

fn parse_body(kind: u8, id: u32, r: &mut Reader<'_>) -> Result<Request, Malformed> {
    let req = match kind {
        FXP_OPEN => Request::Open {
            id,
            path: r.path()?,
            pflags: r.u32()?,
            attrs: Attrs::decode(r)?,
        },
        FXP_CLOSE => Request::Close {
            id,
            handle: r.bytes()?.to_vec(),
        },
        FXP_READ => Request::Read {
            id,
            handle: r.bytes()?.to_vec(),
            offset: r.u64()?,
            len: r.u32()?,
        },
        FXP_WRITE => Request::Write {
            id,
            handle: r.bytes()?.to_vec(),
            offset: r.u64()?,
            data: r.bytes()?.to_vec(),
        },
        FXP_LSTAT => Request::Lstat {
            id,
            path: r.path()?,
        },
        FXP_FSTAT => Request::Fstat {
            id,
            handle: r.bytes()?.to_vec(),
        },
        FXP_SETSTAT => Request::Setstat {
            id,
            path: r.path()?,
            attrs: Attrs::decode(r)?,
        },
        FXP_FSETSTAT => Request::Fsetstat {
            id,
            handle: r.bytes()?.to_vec(),
            attrs: Attrs::decode(r)?,
        },
        FXP_OPENDIR => Request::Opendir {
            id,
            path: r.path()?,
        },
        FXP_READDIR => Request::Readdir {
            id,
            handle: r.bytes()?.to_vec(),
        },
        FXP_REMOVE => Request::Remove {
            id,
            path: r.path()?,
        },
        FXP_MKDIR => Request::Mkdir {
            id,
            path: r.path()?,
            attrs: Attrs::decode(r)?,
        },
        FXP_RMDIR => Request::Rmdir {
            id,
            path: r.path()?,
        },
        FXP_REALPATH => Request::Realpath {
            id,
            path: r.path()?,
        },
        FXP_STAT => Request::Stat {
            id,
            path: r.path()?,
        },
        FXP_RENAME => Request::Rename {
            id,
            from: r.path()?,
            to: r.path()?,
        },
        FXP_READLINK => Request::Readlink {
            id,
            path: r.path()?,
        },
        FXP_SYMLINK => Request::Symlink {
            id,
            target: r.path()?,
            link: r.path()?,
        },
        FXP_EXTENDED => {
            let name = r.string()?;
            match name.as_str() {
                "posix-rename@openssh.com" => Request::PosixRename {
                    id,
                    from: r.path()?,
                    to: r.path()?,
                },
                "hardlink@openssh.com" => Request::Hardlink {
                    id,
                    target: r.path()?,
                    link: r.path()?,
                },
                "fsync@openssh.com" => Request::Fsync {
                    id,
                    handle: r.bytes()?.to_vec(),
                },
                "limits@openssh.com" => Request::Limits { id },
                "expand-path@openssh.com" => Request::ExpandPath {
                    id,
                    path: r.path()?,
                },
                _ => Request::Unsupported { id },
            }
        }
        _ => Request::Unsupported { id },
    };
    Ok(req)
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Every string sent is bounded by MAX_READ or a path length, far below u32::MAX.
    put_u32(out, u32::try_from(b.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(b);
}

enum Handle {
    File(File),
    Dir { path: PathBuf, entries: ReadDir },
}

/// One SFTP session's state.
pub struct SftpServer {
    handles: HashMap<u32, Handle>,
    next_handle: u32,
    home: PathBuf,
    passwd: String,
    group: String,
}

impl std::fmt::Debug for SftpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SftpServer")
            .field("open_handles", &self.handles.len())
            .field("home", &self.home)
            .finish()
    }
}

fn status_of(e: &io::Error) -> Status {
    match e.kind() {
        io::ErrorKind::NotFound => Status::NoSuchFile,
        io::ErrorKind::PermissionDenied => Status::PermissionDenied,
        _ => Status::Failure,
    }
}

fn message_of(s: Status) -> &'static str {
    match s {
        Status::Ok => "Success",
        Status::Eof => "End of file",
        Status::NoSuchFile => "No such file",
        Status::PermissionDenied => "Permission denied",
        Status::Failure => "Failure",
        Status::BadMessage => "Bad message",
        Status::OpUnsupported => "Operation unsupported",
    }
}

impl SftpServer {
    /// A server whose `~` is `home`; user and group names for listings come from the given
    /// passwd and group texts.
    pub fn new(home: PathBuf, passwd: String, group: String) -> SftpServer {
        SftpServer {
            handles: HashMap::new(),
            next_handle: 0,
            home,
            passwd,
            group,
        }
    }

    /// Handles one request payload and returns the response payload (type byte first), or
    /// `None` when nothing is to be sent.
    pub fn process(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        match parse_request(payload) {
            Ok(req) => self.handle(req, &mut out),
            Err(Some(id)) => status(&mut out, id, Status::BadMessage, None),
            Err(None) => return None,
        }
        Some(out)
    }

    fn handle(&mut self, req: Request, out: &mut Vec<u8>) {
        let result = match req {
            Request::Init(_) => {
                out.push(FXP_VERSION);
                put_u32(out, 3);
                for (name, data) in [
                    ("posix-rename@openssh.com", "1"),
                    ("hardlink@openssh.com", "1"),
                    ("fsync@openssh.com", "1"),
                    ("limits@openssh.com", "1"),
                    ("expand-path@openssh.com", "1"),
                ] {
                    put_bytes(out, name.as_bytes());
                    put_bytes(out, data.as_bytes());
                }
                return;
            }
            Request::Open {
                id,
                path,
                pflags,
                attrs,
            } => self.open(id, &path, pflags, &attrs, out),
            Request::Close { id, handle } => match self.take_handle(&handle) {
                Some(_) => ok(out, id),
                None => Err((id, Status::Failure)),
            },
            Request::Read {
                id,
                handle,
                offset,
                len,
            } => self.read(id, &handle, offset, len, out),
            Request::Write {
                id,
                handle,
                offset,
                data,
            } => match self.file(&handle) {
                Some(f) => f
                    .write_all_at(&data, offset)
                    .map(|_| status(out, id, Status::Ok, None))
                    .map_err(|e| (id, status_of(&e))),
                None => Err((id, Status::Failure)),
            },
            Request::Lstat { id, path } => attrs_reply(out, id, std::fs::symlink_metadata(&path)),
            Request::Stat { id, path } => attrs_reply(out, id, std::fs::metadata(&path)),
            Request::Fstat { id, handle } => match self.file(&handle) {
                Some(f) => attrs_reply(out, id, f.metadata()),
                None => Err((id, Status::Failure)),
            },
            Request::Setstat { id, path, attrs } => set_path_attrs(&path, &attrs)
                .map(|_| status(out, id, Status::Ok, None))
                .map_err(|e| (id, status_of(&e))),
            Request::Fsetstat { id, handle, attrs } => match self.file(&handle) {
                Some(f) => set_file_attrs(f, &attrs)
                    .map(|_| status(out, id, Status::Ok, None))
                    .map_err(|e| (id, status_of(&e))),
                None => Err((id, Status::Failure)),
            },
            Request::Opendir { id, path } => match std::fs::read_dir(&path) {
                Ok(entries) => self.new_handle(id, Handle::Dir { path, entries }, out),
                Err(e) => Err((id, status_of(&e))),
            },
            Request::Readdir { id, handle } => self.readdir(id, &handle, out),
            Request::Remove { id, path } => simple(out, id, std::fs::remove_file(&path)),
            Request::Mkdir { id, path, attrs } => {
                let mode = attrs.permissions.map(|p| p & 0o7777).unwrap_or(0o777);
                simple(out, id, std::fs::DirBuilder::new().mode(mode).create(&path))
            }
            Request::Rmdir { id, path } => simple(out, id, std::fs::remove_dir(&path)),
            Request::Realpath { id, path } => match realpath(&path) {
                Ok(p) => name_reply(out, id, &p),
                Err(e) => Err((id, status_of(&e))),
            },
            Request::Rename { id, from, to } => {
                if std::fs::symlink_metadata(&to).is_ok() {
                    Err((id, Status::Failure))
                } else {
                    simple(out, id, std::fs::rename(&from, &to))
                }
            }
            Request::PosixRename { id, from, to } => simple(out, id, std::fs::rename(&from, &to)),
            Request::Readlink { id, path } => match std::fs::read_link(&path) {
                Ok(p) => name_reply(out, id, &p),
                Err(e) => Err((id, status_of(&e))),
            },
            Request::Symlink { id, target, link } => {
                simple(out, id, std::os::unix::fs::symlink(&target, &link))
            }
            Request::Hardlink { id, target, link } => {
                simple(out, id, std::fs::hard_link(&target, &link))
            }
            Request::Fsync { id, handle } => match self.file(&handle) {
                Some(f) => simple(out, id, f.sync_all()),
                None => Err((id, Status::Failure)),
            },
            Request::Limits { id } => {
                out.push(FXP_EXTENDED_REPLY);
                put_u32(out, id);
                put_u64(out, u64::from(MAX_PACKET));
                put_u64(out, u64::from(MAX_READ));
                put_u64(out, u64::from(MAX_READ));
                put_u64(out, MAX_HANDLES as u64);
                Ok(())
            }
            Request::ExpandPath { id, path } => match self.expand(&path).and_then(|p| realpath(&p))
            {
                Ok(p) => name_reply(out, id, &p),
                Err(e) => Err((id, status_of(&e))),
            },
            Request::Unsupported { id } => Err((id, Status::OpUnsupported)),
        };
        if let Err((id, code)) = result {
            out.clear();
            status(out, id, code, None);
        }
    }

    fn new_handle(&mut self, id: u32, h: Handle, out: &mut Vec<u8>) -> Reply {
        if self.handles.len() >= MAX_HANDLES {
            return Err((id, Status::Failure));
        }
        let mut n = self.next_handle;
        while self.handles.contains_key(&n) {
            n = n.wrapping_add(1);
        }
        self.next_handle = n.wrapping_add(1);
        self.handles.insert(n, h);
        out.push(FXP_HANDLE);
        put_u32(out, id);
        put_bytes(out, n.to_string().as_bytes());
        Ok(())
    }

    fn handle_id(h: &[u8]) -> Option<u32> {
        std::str::from_utf8(h).ok()?.parse().ok()
    }

    fn take_handle(&mut self, h: &[u8]) -> Option<Handle> {
        self.handles.remove(&Self::handle_id(h)?)
    }

    fn file(&mut self, h: &[u8]) -> Option<&File> {
        match self.handles.get(&Self::handle_id(h)?) {
            Some(Handle::File(f)) => Some(f),
            _ => None,
        }
    }

    fn open(
        &mut self,
        id: u32,
        path: &Path,
        pflags: u32,
        attrs: &Attrs,
        out: &mut Vec<u8>,
    ) -> Reply {
        let mut o = OpenOptions::new();
        let write = pflags & (OPEN_WRITE | OPEN_APPEND) != 0;
        o.read(pflags & OPEN_READ != 0 || !write)
            .write(write)
            .append(pflags & OPEN_APPEND != 0)
            .truncate(pflags & OPEN_TRUNC != 0);
        if pflags & OPEN_CREAT != 0 {
            if pflags & OPEN_EXCL != 0 {
                o.create_new(true);
            } else {
                o.create(true);
            }
        }
        o.mode(attrs.permissions.map(|p| p & 0o7777).unwrap_or(0o666));
        let file = o.open(path).map_err(|e| (id, status_of(&e)))?;
        self.new_handle(id, Handle::File(file), out)
    }

    fn read(&mut self, id: u32, handle: &[u8], offset: u64, len: u32, out: &mut Vec<u8>) -> Reply {
        let f = self.file(handle).ok_or((id, Status::Failure))?;
        let len = len.min(MAX_READ) as usize;
        out.push(FXP_DATA);
        put_u32(out, id);
        let len_at = out.len();
        put_u32(out, 0);
        let start = out.len();
        out.resize(start + len, 0);
        let mut got = 0;
        while got < len {
            match f.read_at(&mut out[start + got..start + len], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if got == 0 => return Err((id, status_of(&e))),
                Err(_) => break,
            }
        }
        if got == 0 && len > 0 {
            return Err((id, Status::Eof));
        }
        out.truncate(start + got);
        out[len_at..len_at + 4].copy_from_slice(&(got as u32).to_be_bytes());
        Ok(())
    }

    fn readdir(&mut self, id: u32, handle: &[u8], out: &mut Vec<u8>) -> Reply {
        let key = Self::handle_id(handle).ok_or((id, Status::Failure))?;
        let Some(Handle::Dir { path, entries }) = self.handles.get_mut(&key) else {
            return Err((id, Status::Failure));
        };
        let mut names = Vec::new();
        for entry in entries.by_ref().take(READDIR_BATCH) {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            let Ok(meta) = std::fs::symlink_metadata(path.join(&name)) else {
                continue;
            };
            names.push((name, meta));
        }
        if names.is_empty() {
            return Err((id, Status::Eof));
        }
        out.push(FXP_NAME);
        put_u32(out, id);
        put_u32(out, names.len() as u32);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        for (name, meta) in names {
            put_bytes(out, name.as_bytes());
            let long = long_name(&name, &meta, now, &self.passwd, &self.group);
            put_bytes(out, long.as_bytes());
            Attrs::from_metadata(&meta).encode(out);
        }
        Ok(())
    }

    fn expand(&self, path: &Path) -> io::Result<PathBuf> {
        let bytes = path.as_os_str().as_bytes();
        if bytes == b"~" {
            return Ok(self.home.clone());
        }
        if let Some(rest) = bytes.strip_prefix(b"~/") {
            return Ok(self.home.join(OsStr::from_bytes(rest)));
        }
        if bytes.starts_with(b"~") {
            // ~otheruser is not supported.
            return Err(io::ErrorKind::NotFound.into());
        }
        Ok(path.to_path_buf())
    }
}

fn status(out: &mut Vec<u8>, id: u32, code: Status, msg: Option<&str>) {
    out.push(FXP_STATUS);
    put_u32(out, id);
    put_u32(out, code as u32);
    put_bytes(out, msg.unwrap_or(message_of(code)).as_bytes());
    put_bytes(out, b"en");
}

fn simple(out: &mut Vec<u8>, id: u32, r: io::Result<()>) -> Reply {
    r.map(|_| status(out, id, Status::Ok, None))
        .map_err(|e| (id, status_of(&e)))
}

fn attrs_reply(out: &mut Vec<u8>, id: u32, m: io::Result<Metadata>) -> Reply {
    let m = m.map_err(|e| (id, status_of(&e)))?;
    out.push(FXP_ATTRS);
    put_u32(out, id);
    Attrs::from_metadata(&m).encode(out);
    Ok(())
}

fn name_reply(out: &mut Vec<u8>, id: u32, p: &Path) -> Reply {
    out.push(FXP_NAME);
    put_u32(out, id);
    put_u32(out, 1);
    put_bytes(out, p.as_os_str().as_bytes());
    put_bytes(out, p.as_os_str().as_bytes());
    Attrs::default().encode(out);
    Ok(())
}

fn ok(out: &mut Vec<u8>, id: u32) -> Reply {
    status(out, id, Status::Ok, None);
    Ok(())
}

/// Canonical absolute form of `path`: symlinks resolved where the path exists; a missing last
/// component (a file about to be created) is appended to its resolved parent; otherwise the
/// path is normalised lexically.
pub fn realpath(path: &Path) -> io::Result<PathBuf> {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    if let Ok(p) = std::fs::canonicalize(&abs) {
        return Ok(p);
    }
    let lexical = normalize(&abs);
    if let (Some(parent), Some(name)) = (lexical.parent(), lexical.file_name())
        && let Ok(p) = std::fs::canonicalize(parent)
    {
        return Ok(p.join(name));
    }
    Ok(lexical)
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn set_path_attrs(path: &Path, a: &Attrs) -> io::Result<()> {
    if let Some(size) = a.size {
        OpenOptions::new().write(true).open(path)?.set_len(size)?;
    }
    if let Some(p) = a.permissions {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(p & 0o7777))?;
    }
    if let Some((u, g)) = a.uid_gid {
        std::os::unix::fs::chown(path, Some(u), Some(g))?;
    }
    if let Some((at, mt)) = a.atime_mtime {
        rustix::fs::utimensat(
            rustix::fs::CWD,
            path,
            &timestamps(at, mt),
            rustix::fs::AtFlags::empty(),
        )?;
    }
    Ok(())
}

fn set_file_attrs(f: &File, a: &Attrs) -> io::Result<()> {
    if let Some(size) = a.size {
        f.set_len(size)?;
    }
    if let Some(p) = a.permissions {
        f.set_permissions(std::fs::Permissions::from_mode(p & 0o7777))?;
    }
    if let Some((u, g)) = a.uid_gid {
        std::os::unix::fs::fchown(f, Some(u), Some(g))?;
    }
    if let Some((at, mt)) = a.atime_mtime {
        rustix::fs::futimens(f, &timestamps(at, mt))?;
    }
    Ok(())
}

fn timestamps(atime: u32, mtime: u32) -> rustix::fs::Timestamps {
    let ts = |s: u32| rustix::fs::Timespec {
        tv_sec: i64::from(s),
        tv_nsec: 0,
    };
    rustix::fs::Timestamps {
        last_access: ts(atime),
        last_modification: ts(mtime),
    }
}

/// An `ls -l` line as OpenSSH's sftp-server makes it (`-rw-r--r--    1 root     root  …`).
pub fn long_name(name: &OsStr, m: &Metadata, now: i64, passwd: &str, group: &str) -> String {
    let mode = m.mode();
    let user = users::name_of_uid(passwd, m.uid()).unwrap_or_else(|| m.uid().to_string());
    let grp = users::name_of_gid(group, m.gid()).unwrap_or_else(|| m.gid().to_string());
    format!(
        "{} {:>3} {:<8} {:<8} {:>8} {} {}",
        mode_string(mode),
        m.nlink(),
        user,
        grp,
        m.size(),
        ls_time(m.mtime(), now),
        name.to_string_lossy()
    )
}

/// `drwxr-xr-x`-style mode string.
pub fn mode_string(mode: u32) -> String {
    let kind = match mode & 0o170000 {
        0o040000 => 'd',
        0o120000 => 'l',
        0o020000 => 'c',
        0o060000 => 'b',
        0o010000 => 'p',
        0o140000 => 's',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    let bit = |m: u32, c: char| if mode & m != 0 { c } else { '-' };
    let exec =
        |x: u32, special: u32, set: char, unset: char| match (mode & x != 0, mode & special != 0) {
            (true, true) => set,
            (false, true) => unset,
            (true, false) => 'x',
            (false, false) => '-',
        };
    s.push(bit(0o400, 'r'));
    s.push(bit(0o200, 'w'));
    s.push(exec(0o100, 0o4000, 's', 'S'));
    s.push(bit(0o040, 'r'));
    s.push(bit(0o020, 'w'));
    s.push(exec(0o010, 0o2000, 's', 'S'));
    s.push(bit(0o004, 'r'));
    s.push(bit(0o002, 'w'));
    s.push(exec(0o001, 0o1000, 't', 'T'));
    s
}

/// `ls` time column in UTC: `Mon dd HH:MM` within six months of `now`, else `Mon dd  YYYY`.
pub fn ls_time(t: i64, now: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let month = MONTHS[(m as usize).saturating_sub(1).min(11)];
    let six_months = 182 * 86_400;
    if t <= now + 86_400 && now - t < six_months {
        format!("{month} {d:>2} {:02}:{:02}", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{month} {d:>2}  {y}")
    }
}

/// Days since 1970-01-01 → (year, month 1-12, day 1-31), proleptic Gregorian (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Runs an SFTP session over `input`/`output` until the client closes it.
pub fn serve<R: Read, W: Write>(input: R, output: W, server: &mut SftpServer) -> io::Result<()> {
    serve_frames(input, output, |payload| server.process(payload))
}

/// The packet framing of [`serve`]: reads length-prefixed requests (at most [`MAX_PACKET`]
/// bytes each, one held at a time), hands each payload to `handle` and writes back the
/// responses it returns, length-prefixed. Ends at end of input (a request cut short there is
/// dropped); a length of 0 or above [`MAX_PACKET`] is an error (the stream cannot be
/// resynchronised).
pub fn serve_frames<R, W, F>(input: R, output: W, mut handle: F) -> io::Result<()>
where
    R: Read,
    W: Write,
    F: FnMut(&[u8]) -> Option<Vec<u8>>,
{
    let mut input = BufReader::with_capacity(64 * 1024, input);
    let mut output = BufWriter::with_capacity(64 * 1024, output);
    let mut payload = Vec::new();
    loop {
        // Flush before we would block waiting for the client.
        if input.buffer().is_empty() {
            output.flush()?;
        }
        let mut len = [0u8; 4];
        match input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes(len);
        if len == 0 || len > MAX_PACKET {
            output.flush()?;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("request of {len} bytes"),
            ));
        }
        payload.clear();
        (&mut input)
            .take(u64::from(len))
            .read_to_end(&mut payload)?;
        if payload.len() != len as usize {
            break;
        }
        if let Some(resp) = handle(&payload) {
            let Ok(n) = u32::try_from(resp.len()) else {
                return Err(io::Error::other("response too large"));
            };
            output.write_all(&n.to_be_bytes())?;
            output.write_all(&resp)?;
        }
    }
    output.flush()
}

/// The `sftp-server` applet: serves stdin/stdout with the process's own credentials and
/// working directory (set up by the SSH server). `HOME` gives `~`.
pub fn serve_stdio() -> Result<(), crate::SshError> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from("/"));
    let passwd = users::read_db(Path::new("/etc/passwd"));
    let group = users::read_db(Path::new("/etc/group"));
    let mut server = SftpServer::new(home, passwd, group);
    serve(io::stdin().lock(), io::stdout().lock(), &mut server)
        .map_err(|source| crate::SshError::Sftp { source })
}

/// Encodes a path for requests (used by tests and fuzzing helpers).
pub fn path_bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().to_owned().into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(kind: u8, id: u32, body: &[&[u8]]) -> Vec<u8> {
        let mut v = vec![kind];
        put_u32(&mut v, id);
        for b in body {
            v.extend_from_slice(b);
        }
        v
    }
    fn s(b: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        put_bytes(&mut v, b);
        v
    }
    fn u32b(x: u32) -> Vec<u8> {
        x.to_be_bytes().to_vec()
    }
    fn u64b(x: u64) -> Vec<u8> {
        x.to_be_bytes().to_vec()
    }
    fn status_code(resp: &[u8]) -> u32 {
        assert_eq!(resp[0], FXP_STATUS, "not a status: {resp:?}");
        u32::from_be_bytes([resp[5], resp[6], resp[7], resp[8]])
    }
    fn handle_of(resp: &[u8]) -> Vec<u8> {
        assert_eq!(resp[0], FXP_HANDLE);
        let mut r = Reader(&resp[5..]);
        r.bytes().unwrap().to_vec()
    }

    fn server(dir: &Path) -> SftpServer {
        SftpServer::new(dir.to_path_buf(), String::new(), String::new())
    }

    #[test]
    fn init_advertises_version_3_and_extensions() {
        let dir = tempfile::tempdir().unwrap();
        let mut sv = server(dir.path());
        let resp = sv.process(&[FXP_INIT, 0, 0, 0, 3]).unwrap();
        assert_eq!(&resp[..5], &[FXP_VERSION, 0, 0, 0, 3]);
        let text = String::from_utf8_lossy(&resp);
        assert!(text.contains("limits@openssh.com") && text.contains("posix-rename@openssh.com"));
    }

    #[test]
    fn write_read_stat_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let pb = path_bytes(&path);
        let mut sv = server(dir.path());
        let mut attrs = Vec::new();
        Attrs {
            permissions: Some(0o640),
            ..Attrs::default()
        }
        .encode(&mut attrs);
        let open = req(
            FXP_OPEN,
            1,
            &[&s(&pb), &u32b(OPEN_WRITE | OPEN_CREAT | OPEN_TRUNC), &attrs],
        );
        let h = handle_of(&sv.process(&open).unwrap());
        let w = req(FXP_WRITE, 2, &[&s(&h), &u64b(0), &s(b"hello world")]);
        assert_eq!(status_code(&sv.process(&w).unwrap()), 0);
        let w = req(FXP_WRITE, 3, &[&s(&h), &u64b(6), &s(b"there")]);
        assert_eq!(status_code(&sv.process(&w).unwrap()), 0);
        assert_eq!(
            status_code(&sv.process(&req(FXP_CLOSE, 4, &[&s(&h)])).unwrap()),
            0
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"hello there");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o022, 0o640 & !0o022);

        let open = req(FXP_OPEN, 5, &[&s(&pb), &u32b(OPEN_READ), &u32b(0)]);
        let h = handle_of(&sv.process(&open).unwrap());
        let r = sv
            .process(&req(FXP_READ, 6, &[&s(&h), &u64b(6), &u32b(100)]))
            .unwrap();
        assert_eq!(r[0], FXP_DATA);
        assert_eq!(&r[9..], b"there");
        let r = sv
            .process(&req(FXP_READ, 7, &[&s(&h), &u64b(11), &u32b(100)]))
            .unwrap();
        assert_eq!(status_code(&r), Status::Eof as u32);
        let st = sv.process(&req(FXP_FSTAT, 8, &[&s(&h)])).unwrap();
        assert_eq!(st[0], FXP_ATTRS);
        let a = Attrs::decode(&mut Reader(&st[5..])).unwrap();
        assert_eq!(a.size, Some(11));
        assert_eq!(
            status_code(&sv.process(&req(FXP_CLOSE, 9, &[&s(&h)])).unwrap()),
            0
        );
        assert_eq!(
            status_code(&sv.process(&req(FXP_CLOSE, 10, &[&s(&h)])).unwrap()),
            4,
            "closed twice"
        );
    }

    #[test]
    fn errors_map_to_statuses() {
        let dir = tempfile::tempdir().unwrap();
        let mut sv = server(dir.path());
        let missing = path_bytes(&dir.path().join("missing"));
        let r = sv.process(&req(FXP_STAT, 1, &[&s(&missing)])).unwrap();
        assert_eq!(status_code(&r), Status::NoSuchFile as u32);
        let r = sv
            .process(&req(FXP_READ, 2, &[&s(b"999"), &u64b(0), &u32b(1)]))
            .unwrap();
        assert_eq!(status_code(&r), Status::Failure as u32);
        let r = sv.process(&req(99, 3, &[])).unwrap();
        assert_eq!(status_code(&r), Status::OpUnsupported as u32);
        let r = sv.process(&req(FXP_OPEN, 4, &[&u32b(1000)])).unwrap();
        assert_eq!(status_code(&r), Status::BadMessage as u32);
        assert_eq!(sv.process(&[]), None);
        assert_eq!(sv.process(&[FXP_OPEN, 0]), None);
    }

    #[test]
    fn directories_and_renames() {
        let dir = tempfile::tempdir().unwrap();
        let mut sv = server(dir.path());
        let sub = path_bytes(&dir.path().join("sub"));
        assert_eq!(
            status_code(
                &sv.process(&req(FXP_MKDIR, 1, &[&s(&sub), &u32b(0)]))
                    .unwrap()
            ),
            0
        );
        for n in 0..150 {
            std::fs::write(dir.path().join("sub").join(format!("f{n}")), b"x").unwrap();
        }
        let h = handle_of(&sv.process(&req(FXP_OPENDIR, 2, &[&s(&sub)])).unwrap());
        let mut seen = 0;
        loop {
            let r = sv.process(&req(FXP_READDIR, 3, &[&s(&h)])).unwrap();
            if r[0] == FXP_STATUS {
                assert_eq!(status_code(&r), Status::Eof as u32);
                break;
            }
            assert_eq!(r[0], FXP_NAME);
            seen += u32::from_be_bytes([r[5], r[6], r[7], r[8]]);
        }
        assert_eq!(seen, 150);
        let a = path_bytes(&dir.path().join("sub/f1"));
        let b = path_bytes(&dir.path().join("sub/f2"));
        let r = sv.process(&req(FXP_RENAME, 4, &[&s(&a), &s(&b)])).unwrap();
        assert_eq!(
            status_code(&r),
            Status::Failure as u32,
            "plain rename refuses to overwrite"
        );
        let mut ext = s(b"posix-rename@openssh.com");
        ext.extend(s(&a));
        ext.extend(s(&b));
        assert_eq!(
            status_code(&sv.process(&req(FXP_EXTENDED, 5, &[&ext])).unwrap()),
            0
        );
        assert!(!dir.path().join("sub/f1").exists());
    }

    #[test]
    fn realpath_and_expand() {
        let dir = tempfile::tempdir().unwrap();
        let canon = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(
            realpath(&canon.join("a/../new")).unwrap(),
            canon.join("new")
        );
        assert_eq!(realpath(&canon.join("x/y/..")).unwrap(), canon.join("x"));
        let sv = server(&canon);
        assert_eq!(sv.expand(Path::new("~")).unwrap(), canon);
        assert_eq!(sv.expand(Path::new("~/f")).unwrap(), canon.join("f"));
        assert!(sv.expand(Path::new("~bob/f")).is_err());
    }

    #[test]
    fn listing_format() {
        assert_eq!(mode_string(0o100644), "-rw-r--r--");
        assert_eq!(mode_string(0o040755), "drwxr-xr-x");
        assert_eq!(mode_string(0o104755), "-rwsr-xr-x");
        assert_eq!(mode_string(0o041777), "drwxrwxrwt");
        assert_eq!(mode_string(0o120777), "lrwxrwxrwx");
        // 2024-02-29 12:34 UTC.
        let t = 1_709_210_040;
        assert_eq!(ls_time(t, t + 60), "Feb 29 12:34");
        assert_eq!(ls_time(t, t + 400 * 86_400), "Feb 29  2024");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn serve_loop_frames_and_rejects_oversize() {
        let dir = tempfile::tempdir().unwrap();
        let mut sv = server(dir.path());
        let mut input = Vec::new();
        let init = [FXP_INIT, 0, 0, 0, 3];
        input.extend((init.len() as u32).to_be_bytes());
        input.extend(init);
        let mut out = Vec::new();
        serve(&input[..], &mut out, &mut sv).unwrap();
        let n = u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
        assert_eq!(out.len(), 4 + n);
        assert_eq!(out[4], FXP_VERSION);
        let huge = (MAX_PACKET + 1).to_be_bytes();
        assert!(serve(&huge[..], &mut Vec::new(), &mut sv).is_err());
    }

    /// Bytes a parsed request owns (paths, handles, data): the parser's allocations.
    fn owned_len(r: &Request) -> usize {
        let p = |p: &PathBuf| p.as_os_str().len();
        match r {
            Request::Init(_) | Request::Limits { .. } | Request::Unsupported { .. } => 0,
            Request::Open { path, .. }
            | Request::Lstat { path, .. }
            | Request::Setstat { path, .. }
            | Request::Opendir { path, .. }
            | Request::Remove { path, .. }
            | Request::Mkdir { path, .. }
            | Request::Rmdir { path, .. }
            | Request::Realpath { path, .. }
            | Request::Stat { path, .. }
            | Request::Readlink { path, .. }
            | Request::ExpandPath { path, .. } => p(path),
            Request::Close { handle, .. }
            | Request::Fstat { handle, .. }
            | Request::Fsetstat { handle, .. }
            | Request::Readdir { handle, .. }
            | Request::Fsync { handle, .. }
            | Request::Read { handle, .. } => handle.len(),
            Request::Write { handle, data, .. } => handle.len() + data.len(),
            Request::Rename { from, to, .. } | Request::PosixRename { from, to, .. } => {
                p(from) + p(to)
            }
            Request::Symlink { target, link, .. } | Request::Hardlink { target, link, .. } => {
                p(target) + p(link)
            }
        }
    }

    /// Request-shaped bytes: a known type, an id, then fields that often fit that type.
    fn request_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let field = prop_oneof![
            any::<u32>().prop_map(|v| v.to_be_bytes().to_vec()),
            any::<u64>().prop_map(|v| v.to_be_bytes().to_vec()),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| s(&b)),
            prop_oneof![
                Just(&b"posix-rename@openssh.com"[..]),
                Just(&b"hardlink@openssh.com"[..]),
                Just(&b"fsync@openssh.com"[..]),
                Just(&b"limits@openssh.com"[..]),
                Just(&b"expand-path@openssh.com"[..]),
            ]
            .prop_map(s),
            // An ATTRS with every flag and an extended count.
            Just(
                [
                    u32b(0x8000_000f),
                    u64b(1),
                    u32b(0),
                    u32b(0),
                    u32b(0o644),
                    u32b(0),
                    u32b(0),
                    u32b(1),
                    s(b"k"),
                    s(b"v")
                ]
                .concat()
            ),
        ];
        (
            prop_oneof![1u8..=20, Just(FXP_EXTENDED), any::<u8>()],
            any::<u32>(),
            proptest::collection::vec(field, 0..5),
            proptest::collection::vec(any::<u8>(), 0..3),
        )
            .prop_map(|(kind, id, fields, tail)| {
                let mut v = vec![kind];
                v.extend(id.to_be_bytes());
                for f in fields {
                    v.extend(f);
                }
                v.extend(tail);
                v
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn parser_is_total(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = parse_request(&data);
        }

        /// Never panics, and allocates at most what the request carries (no length field is
        /// trusted for an allocation).
        #[test]
        fn parser_copies_at_most_its_input(data in request_bytes()) {
            if let Ok(req) = parse_request(&data) {
                proptest::prop_assert!(owned_len(&req) <= data.len());
            }
        }

        /// Whatever the stream, every payload handed on is one whole frame of at most
        /// MAX_PACKET bytes, and the responses come back framed, in order.
        #[test]
        fn framing_is_total_and_bounded(
            frames in proptest::collection::vec(
                (proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
                 proptest::prelude::any::<bool>(),
                 proptest::prelude::any::<u32>()),
                0..8),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8),
        ) {
            let mut input = Vec::new();
            for (body, honest, fake_len) in &frames {
                let len = if *honest { body.len() as u32 } else { *fake_len };
                input.extend(len.to_be_bytes());
                input.extend(body);
            }
            input.extend(&tail);
            let mut seen = Vec::new();
            let mut out = Vec::new();
            let r = serve_frames(&input[..], &mut out, |p| {
                seen.push(p.to_vec());
                Some(p.iter().rev().copied().collect())
            });
            for p in &seen {
                proptest::prop_assert!(!p.is_empty() && p.len() <= MAX_PACKET as usize);
            }
            // The output is exactly the framed responses.
            let mut rest = &out[..];
            for p in &seen {
                proptest::prop_assert!(rest.len() >= 4 + p.len());
                let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                proptest::prop_assert_eq!(n, p.len());
                let back: Vec<u8> = rest[4..4 + n].iter().rev().copied().collect();
                proptest::prop_assert_eq!(&back, p);
                rest = &rest[4 + n..];
            }
            proptest::prop_assert!(rest.is_empty());
            let well_formed = frames.iter().all(|(b, honest, _)| *honest && !b.is_empty());
            if well_formed && tail.len() < 4 {
                proptest::prop_assert!(r.is_ok(), "{r:?}");
                proptest::prop_assert_eq!(seen.len(), frames.len());
            }
        }
    }

    /// One step of an SFTP session confined to a temp dir: a request type, a path among a few
    /// names under the dir, a handle among the first few, and raw numbers.
    #[derive(Debug, Clone)]
    struct Step {
        kind: u8,
        name: usize,
        other: usize,
        handle: u32,
        num: u64,
        len: u32,
        pflags: u32,
        attr_flags: u32,
        data: Vec<u8>,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        (
            prop_oneof![1u8..=20, Just(FXP_EXTENDED)],
            0usize..6,
            0usize..6,
            0u32..4,
            prop_oneof![
                Just(0u64),
                0u64..70_000,
                Just(u64::MAX),
                Just(i64::MAX as u64)
            ],
            prop_oneof![Just(0u32), 0u32..70_000, Just(u32::MAX)],
            any::<u32>(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(
                |(kind, name, other, handle, num, len, pflags, attr_flags, data)| Step {
                    kind,
                    name,
                    other,
                    handle,
                    num,
                    len,
                    pflags,
                    attr_flags,
                    data,
                },
            )
    }

    const NAMES: [&str; 6] = ["", "a", "b", "d", "d/e", "d/../a"];

    fn encode_step(dir: &Path, st: &Step) -> Vec<u8> {
        let path = |i: usize| s(&path_bytes(&dir.join(NAMES[i])));
        let handle = s(st.handle.to_string().as_bytes());
        // Sizes and times kept small: a sparse file of 2^64 bytes is not the point here.
        let mut attrs = u32b(st.attr_flags & 0x8000_000f);
        if st.attr_flags & ATTR_SIZE != 0 {
            attrs.extend(u64b(st.num % 100_000));
        }
        if st.attr_flags & ATTR_UIDGID != 0 {
            attrs.extend([u32b(0), u32b(0)].concat());
        }
        if st.attr_flags & ATTR_PERMISSIONS != 0 {
            attrs.extend(u32b(st.len & 0o7777 | 0o600));
        }
        if st.attr_flags & ATTR_ACMODTIME != 0 {
            attrs.extend([u32b(st.len), u32b(st.len)].concat());
        }
        if st.attr_flags & ATTR_EXTENDED != 0 {
            attrs.extend([u32b(1), s(b"x"), s(&st.data)].concat());
        }
        let body: Vec<Vec<u8>> = match st.kind {
            FXP_OPEN => vec![path(st.name), u32b(st.pflags & 0x3f), attrs],
            FXP_CLOSE | FXP_FSTAT | FXP_READDIR => vec![handle],
            FXP_READ => vec![handle, u64b(st.num), u32b(st.len)],
            FXP_WRITE => vec![handle, u64b(st.num % 1_000_000), s(&st.data)],
            FXP_SETSTAT | FXP_MKDIR => vec![path(st.name), attrs],
            FXP_FSETSTAT => vec![handle, attrs],
            FXP_RENAME => vec![path(st.name), path(st.other)],
            // Links would point outside the dir: not generated here (see the fuzz target).
            FXP_SYMLINK => return req(FXP_STAT, st.handle, &[&path(st.name)]),
            FXP_EXTENDED => {
                let names: [&[u8]; 4] = [
                    b"posix-rename@openssh.com",
                    b"fsync@openssh.com",
                    b"limits@openssh.com",
                    b"expand-path@openssh.com",
                ];
                let ext = names[st.name % names.len()];
                let rest = match ext {
                    b"posix-rename@openssh.com" => [path(st.name), path(st.other)].concat(),
                    b"fsync@openssh.com" => handle,
                    b"expand-path@openssh.com" => s(b"~/a"),
                    _ => Vec::new(),
                };
                vec![s(ext), rest]
            }
            _ => vec![path(st.name)],
        };
        let refs: Vec<&[u8]> = body.iter().map(Vec::as_slice).collect();
        if st.kind == FXP_INIT {
            return vec![FXP_INIT, 0, 0, 0, 3];
        }
        req(st.kind, st.handle.wrapping_add(1000), &refs)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]

        /// Any sequence of requests on a few files of a temp dir: no panic, replies within
        /// MAX_PACKET, each reply names its request's id, and the handle table stays bounded.
        #[test]
        fn sessions_never_panic_and_replies_are_bounded(steps in proptest::collection::vec(step(), 1..40)) {
            let dir = tempfile::tempdir().unwrap();
            let mut sv = server(dir.path());
            for st in &steps {
                let payload = encode_step(dir.path(), st);
                let Some(resp) = sv.process(&payload) else { continue };
                proptest::prop_assert!(resp.len() <= MAX_PACKET as usize);
                if payload[0] != FXP_INIT {
                    proptest::prop_assert_eq!(&resp[1..5], &payload[1..5], "reply to another id");
                }
                proptest::prop_assert!(sv.handles.len() <= MAX_HANDLES);
            }
        }
    }
}
