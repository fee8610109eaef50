//! What a login attempt must know about the account before any key is compared: the passwd
//! entry, whether its shell allows logins at all, and the keys of its `authorized_keys` files.
//!
//! Everything here touches files that users control, so none of it runs on the server's one
//! runtime thread, and none of it with root's rights:
//! - the work runs on a throwaway thread ([`crate::sys::spawn_throwaway`]); the login attempt
//!   waits for it at most [`LOAD_TIMEOUT`], and at most [`MAX_LOADS_PER_USER`] loads of one
//!   login name (and [`MAX_LOADS`] in all) may be unfinished at once, so a file that never
//!   answers (a hung network file system) stalls only its own user's attempts;
//! - after the passwd lookup (a root-owned file) the thread takes the user's filesystem identity
//!   (fsuid, fsgid, groups; [`crate::sys::assume_fs_identity`]): a symlink, a hard link or a
//!   path through a directory the user cannot read gives the user nothing they could not read
//!   themselves;
//! - each `authorized_keys` file is opened `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY`
//!   relative to its already opened directory, checked with `fstat` before any read (a regular
//!   file, owned by the user or root, not group- or world-writable; likewise its directory and,
//!   inside the home directory, every directory up to it, like OpenSSH's `StrictModes`), and
//!   read up to [`MAX_FILE`] bytes. A FIFO, a device or a socket is never read from;
//! - an account whose shell is a `nologin` shell, or whose shell does not exist or is not an
//!   executable file, gets no session at all (OpenSSH runs every session, subsystems included,
//!   through the user's shell, so such users get nothing there either).
#![allow(
    clippy::disallowed_methods,
    reason = "runs on throwaway threads with the user's identity: the one place for users' files"
)]

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::authorized_keys::{self, AuthorizedKey, MAX_FILE, MAX_KEYS};
use crate::sys::{self, Credentials};
use crate::users::{self, User};

/// Longest a login attempt waits for its account to be read.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Most unfinished account loads for one login name; more attempts are refused at once.
pub const MAX_LOADS_PER_USER: usize = 2;
/// Most unfinished account loads in all.
pub const MAX_LOADS: usize = 32;

/// Why an `authorized_keys` file was not used.
#[derive(Debug, thiserror::Error)]
pub enum KeysFileError {
    /// The path has no directory or no file name.
    #[error("{} is not a file path", .0.display())]
    BadPath(PathBuf),
    /// The file is a symbolic link (never followed).
    #[error("{} is a symbolic link; not followed", .0.display())]
    Symlink(PathBuf),
    /// The file is a FIFO, device, socket or directory.
    #[error("{} is not a regular file ({kind:?})", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is.
        kind: FileType,
    },
    /// The file or a directory above it belongs to someone other than the user or root.
    #[error("{} is owned by uid {owner}, not by the user or root", path.display())]
    BadOwner {
        /// The file or directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
    },
    /// The file or a directory above it may be written by others.
    #[error("{} is group- or world-writable (mode {mode:o})", path.display())]
    Writable {
        /// The file or directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A system call failed (permission denied when the user cannot read it).
    #[error("cannot {what} {}", path.display())]
    Io {
        /// The operation.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a login attempt found no usable account.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// No such login name.
    #[error("unknown user")]
    UnknownUser,
    /// The account's shell forbids logins.
    #[error("shell {} refuses logins", .0.display())]
    NoLoginShell(PathBuf),
    /// The shell cannot be run.
    #[error("shell {} is not an executable file", path.display())]
    ShellNotExecutable {
        /// The shell.
        path: PathBuf,
        /// Why (missing, not a regular file, no execute bit).
        #[source]
        source: std::io::Error,
    },
    /// The reading thread could not take the user's identity.
    #[error("cannot read the account's files as {user}")]
    Identity {
        /// The login name.
        user: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Earlier loads of this account (or too many in all) have not finished.
    #[error("earlier lookups of this account are still running")]
    Busy,
    /// The load did not finish in time (it goes on in the background).
    #[error("account lookup took longer than {0:?}")]
    TimedOut(Duration),
    /// The reading thread could not be started, or ended without an answer.
    #[error("account lookup failed")]
    Thread(#[source] std::io::Error),
}

/// What a login attempt needs from the configuration to load an account.
#[derive(Debug, Clone)]
pub struct LoadRequest {
    /// The login name the client sent.
    pub name: String,
    /// The passwd database.
    pub passwd_path: PathBuf,
    /// The group database.
    pub group_path: PathBuf,
    /// The shell sessions run instead of the passwd one, if any.
    pub shell_override: Option<PathBuf>,
    /// `AuthorizedKeysFile` templates.
    pub authorized_keys_files: Vec<String>,
}

/// A user allowed to log in, and the keys from their files.
#[derive(Debug, Clone)]
pub struct Account {
    /// The passwd entry (with groups).
    pub user: User,
    /// Keys from the `authorized_keys` files, in file order.
    pub keys: Vec<AuthorizedKey>,
}

/// Account loads not finished yet, per login name (bounded: see [`MAX_LOADS`]).
#[derive(Debug, Default)]
pub struct InFlight {
    by_name: Mutex<HashMap<String, usize>>,
}

/// One unfinished load; dropped when its thread ends (not when the login attempt gives up).
#[derive(Debug)]
pub struct InFlightGuard {
    set: Arc<InFlight>,
    name: String,
}

impl InFlight {
    /// Takes a place for a load of `name`, if one is free.
    pub fn enter(self: &Arc<Self>, name: &str) -> Option<InFlightGuard> {
        let mut map = self.by_name.lock().ok()?;
        let total: usize = map.values().sum();
        let mine = map.get(name).copied().unwrap_or(0);
        if total >= MAX_LOADS || mine >= MAX_LOADS_PER_USER {
            return None;
        }
        *map.entry(name.to_string()).or_insert(0) += 1;
        Some(InFlightGuard {
            set: self.clone(),
            name: name.to_string(),
        })
    }

    /// Loads not finished yet.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_name
            .lock()
            .map(|m| m.values().sum())
            .unwrap_or(usize::MAX)
    }

    /// Whether every load has finished.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Ok(mut map) = self.set.by_name.lock()
            && let Some(n) = map.get_mut(&self.name)
        {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.name);
            }
        }
    }
}

/// Loads the account of `req.name` off the runtime (see the module documentation).
pub async fn load(req: LoadRequest, inflight: &Arc<InFlight>) -> Result<Account, AccountError> {
    if !users::valid_name(&req.name) {
        return Err(AccountError::UnknownUser);
    }
    let name = req.name.clone();
    run_bounded(inflight, &name, LOAD_TIMEOUT, move || load_blocking(&req)).await
}

/// Runs `job` on a throwaway thread counted under `name` in `inflight`, waiting at most
/// `timeout` for it.
pub async fn run_bounded<F>(
    inflight: &Arc<InFlight>,
    name: &str,
    timeout: Duration,
    job: F,
) -> Result<Account, AccountError>
where
    F: FnOnce() -> Result<Account, AccountError> + Send + 'static,
{
    let guard = inflight.enter(name).ok_or(AccountError::Busy)?;
    let rx = sys::spawn_throwaway("sshd-account", move || {
        let _guard = guard;
        job()
    })
    .map_err(AccountError::Thread)?;
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(AccountError::Thread(std::io::Error::other(
            "the lookup thread ended without an answer",
        ))),
        Err(_) => Err(AccountError::TimedOut(timeout)),
    }
}

/// The blocking part, on the throwaway thread.
fn load_blocking(req: &LoadRequest) -> Result<Account, AccountError> {
    let user = users::lookup(&req.passwd_path, &req.group_path, &req.name)
        .ok_or(AccountError::UnknownUser)?;
    let creds = Credentials {
        uid: user.uid,
        gid: user.gid,
        groups: user.groups.clone(),
    };
    sys::assume_fs_identity(&creds).map_err(|source| AccountError::Identity {
        user: user.name.clone(),
        source,
    })?;
    let shell = session_shell(&user, req.shell_override.as_deref());
    check_shell(&user.shell, &shell)?;
    let mut keys = Vec::new();
    for template in &req.authorized_keys_files {
        let path = authorized_keys::expand_path(template, &user);
        keys.extend(load_keys_file(&path, &user));
        keys.truncate(MAX_KEYS);
    }
    Ok(Account { user, keys })
}

/// The shell a session of `user` runs: the override, or the passwd one.
pub fn session_shell(user: &User, shell_override: Option<&Path>) -> PathBuf {
    shell_override
        .map(Path::to_path_buf)
        .unwrap_or_else(|| user.shell.clone())
}

/// Whether a shell's name says "no logins" (`nologin`, `false`).
pub fn is_nologin_shell(shell: &Path) -> bool {
    matches!(
        shell.file_name().and_then(|n| n.to_str()),
        Some("nologin" | "false")
    )
}

/// Refuses an account whose passwd shell is a `nologin` shell (whatever shell sessions would
/// run instead), or whose session shell is missing, not a regular file or has no execute bit.
/// Run with the user's identity, so a shell the user cannot reach counts as missing.
pub fn check_shell(passwd_shell: &Path, session_shell: &Path) -> Result<(), AccountError> {
    for s in [passwd_shell, session_shell] {
        if is_nologin_shell(s) {
            return Err(AccountError::NoLoginShell(s.to_path_buf()));
        }
    }
    let refuse = |source: std::io::Error| AccountError::ShellNotExecutable {
        path: session_shell.to_path_buf(),
        source,
    };
    let st = rustix::fs::stat(session_shell).map_err(|e| refuse(e.into()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(refuse(std::io::Error::other("not a regular file")));
    }
    if st.st_mode & 0o111 == 0 {
        return Err(refuse(std::io::ErrorKind::PermissionDenied.into()));
    }
    Ok(())
}

/// Reads and parses one `authorized_keys` file of `user`; problems are logged and give no keys.
pub fn load_keys_file(path: &Path, user: &User) -> Vec<AuthorizedKey> {
    match read_keys_file(path, user) {
        Ok(Some(bytes)) => authorized_keys::keys_from_text(
            &String::from_utf8_lossy(&bytes),
            &path.display().to_string(),
        ),
        Ok(None) => Vec::new(),
        Err(e) => {
            tracing::warn!(user = %user.name, path = %path.display(),
                "authorized_keys ignored: {}", crate::error_chain(&e));
            Vec::new()
        }
    }
}

/// Reads an `authorized_keys` file with the calling thread's identity. `Ok(None)`: there is
/// no such file (or directory).
pub fn read_keys_file(path: &Path, user: &User) -> Result<Option<Vec<u8>>, KeysFileError> {
    let (Some(dir_path), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(KeysFileError::BadPath(path.to_path_buf()));
    };
    let io = |what: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |e: Errno| KeysFileError::Io {
            what,
            path: p,
            source: e.into(),
        }
    };
    let dir = match rustix::fs::open(
        dir_path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(d) => d,
        Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
        Err(e) => return Err(io("open directory", dir_path)(e)),
    };
    let st = rustix::fs::fstat(&dir).map_err(io("stat", dir_path))?;
    check_owner_and_mode(dir_path, st.st_uid, st.st_mode, user)?;
    // Inside the home directory, every directory up to it (OpenSSH's StrictModes).
    if dir_path != user.home && dir_path.starts_with(&user.home) {
        for ancestor in dir_path.ancestors().skip(1) {
            let st = rustix::fs::stat(ancestor).map_err(io("stat", ancestor))?;
            check_owner_and_mode(ancestor, st.st_uid, st.st_mode, user)?;
            if ancestor == user.home {
                break;
            }
        }
    }
    let file: OwnedFd = match rustix::fs::openat(
        &dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    ) {
        Ok(f) => f,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) => return Err(KeysFileError::Symlink(path.to_path_buf())),
        Err(e) => return Err(io("open", path)(e)),
    };
    let st = rustix::fs::fstat(&file).map_err(io("stat", path))?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return Err(KeysFileError::NotRegular {
            path: path.to_path_buf(),
            kind,
        });
    }
    check_owner_and_mode(path, st.st_uid, st.st_mode, user)?;
    if u64::try_from(st.st_size).unwrap_or(0) > MAX_FILE {
        tracing::warn!(path = %path.display(), size = st.st_size,
            "authorized_keys larger than {MAX_FILE} bytes; reading only the start");
    }
    let mut buf = Vec::new();
    std::fs::File::from(file)
        .take(MAX_FILE)
        .read_to_end(&mut buf)
        .map_err(|source| KeysFileError::Io {
            what: "read",
            path: path.to_path_buf(),
            source,
        })?;
    Ok(Some(buf))
}

fn check_owner_and_mode(
    path: &Path,
    owner: u32,
    mode: u32,
    user: &User,
) -> Result<(), KeysFileError> {
    if owner != 0 && owner != user.uid {
        return Err(KeysFileError::BadOwner {
            path: path.to_path_buf(),
            owner,
        });
    }
    if mode & 0o022 != 0 {
        return Err(KeysFileError::Writable {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIbDSLZU7zXzFk656TyrTFviWgmUsNBkZN/mvAL4Rvkt a@b";

    fn user(home: &Path, uid: u32) -> User {
        User {
            name: "alice".into(),
            uid,
            gid: uid,
            groups: vec![uid],
            home: home.to_path_buf(),
            shell: "/bin/sh".into(),
        }
    }

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn assert_root() {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test sets owners and modes: run it as root (CI does)"
        );
    }

    /// `home/.ssh/authorized_keys` with one key, owned by `uid`, modes 0755/0700/0600.
    fn home_with_keys(uid: u32) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        chmod(t.path(), 0o755);
        let home = t.path().join("home");
        let ssh = home.join(".ssh");
        std::fs::create_dir_all(&ssh).unwrap();
        let ak = ssh.join("authorized_keys");
        std::fs::write(&ak, format!("{ED}\n")).unwrap();
        for (p, m) in [(&home, 0o755), (&ssh, 0o700), (&ak, 0o600)] {
            std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
            chmod(p, m);
        }
        (t, home, ak)
    }

    #[test]
    fn reads_a_proper_file_and_reports_missing_ones() {
        assert_root();
        let (_t, home, ak) = home_with_keys(0);
        let u = user(&home, 0);
        assert_eq!(load_keys_file(&ak, &u).len(), 1);
        assert!(
            read_keys_file(&home.join(".ssh/none"), &u)
                .unwrap()
                .is_none()
        );
        assert!(
            read_keys_file(&home.join("nodir/ak"), &u)
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            read_keys_file(Path::new("/"), &u),
            Err(KeysFileError::BadPath(_))
        ));
    }

    #[test]
    fn strict_modes() {
        assert_root();
        let (_t, home, ak) = home_with_keys(0);
        let u = user(&home, 0);
        chmod(&ak, 0o620);
        let e = read_keys_file(&ak, &u).unwrap_err();
        assert!(
            matches!(e, KeysFileError::Writable { mode: 0o620, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("group- or world-writable"), "{e}");
        chmod(&ak, 0o600);
        chmod(&home.join(".ssh"), 0o770);
        let e = read_keys_file(&ak, &u).unwrap_err();
        assert!(
            matches!(&e, KeysFileError::Writable { path, .. } if path.ends_with(".ssh")),
            "{e}"
        );
        chmod(&home.join(".ssh"), 0o700);
        chmod(&home, 0o777);
        assert!(
            matches!(read_keys_file(&ak, &u), Err(KeysFileError::Writable { .. })),
            "a world-writable home lets anyone replace .ssh"
        );
        chmod(&home, 0o755);
        std::os::unix::fs::chown(&ak, Some(4242), None).unwrap();
        assert!(matches!(
            read_keys_file(&ak, &u),
            Err(KeysFileError::BadOwner { owner: 4242, .. })
        ));
        std::os::unix::fs::chown(&ak, Some(0), None).unwrap();
        assert_eq!(load_keys_file(&ak, &u).len(), 1);
    }

    #[test]
    fn fifos_and_symlinks_are_never_read() {
        assert_root();
        let (_t, home, ak) = home_with_keys(0);
        let u = user(&home, 0);
        std::fs::remove_file(&ak).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &ak,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let start = Instant::now();
        let e = read_keys_file(&ak, &u).unwrap_err();
        assert!(
            matches!(
                e,
                KeysFileError::NotRegular {
                    kind: FileType::Fifo,
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "a FIFO must not block"
        );
        std::fs::remove_file(&ak).unwrap();
        let real = home.join("real");
        std::fs::write(&real, format!("{ED}\n")).unwrap();
        chmod(&real, 0o600);
        std::os::unix::fs::symlink(&real, &ak).unwrap();
        assert!(matches!(
            read_keys_file(&ak, &u),
            Err(KeysFileError::Symlink(_))
        ));
    }

    #[test]
    fn shells() {
        assert!(is_nologin_shell(Path::new("/usr/sbin/nologin")));
        assert!(is_nologin_shell(Path::new("/bin/false")));
        assert!(!is_nologin_shell(Path::new("/bin/sh")));
        assert!(check_shell(Path::new("/bin/sh"), Path::new("/bin/sh")).is_ok());
        assert!(matches!(
            check_shell(Path::new("/sbin/nologin"), Path::new("/bin/sh")),
            Err(AccountError::NoLoginShell(_))
        ));
        assert!(matches!(
            check_shell(Path::new("/bin/sh"), Path::new("/nonexistent/sh")),
            Err(AccountError::ShellNotExecutable { .. })
        ));
        assert!(matches!(
            check_shell(Path::new("/bin/sh"), Path::new("/")),
            Err(AccountError::ShellNotExecutable { .. })
        ));
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("sh");
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        chmod(&f, 0o644);
        assert!(matches!(
            check_shell(&f, &f),
            Err(AccountError::ShellNotExecutable { .. })
        ));
        chmod(&f, 0o755);
        assert!(check_shell(&f, &f).is_ok());
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn a_hung_load_times_out_stalls_only_its_own_user_and_is_bounded() {
        let inflight = Arc::new(InFlight::default());
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        rt().block_on(async {
            let hung = |rx: Arc<Mutex<std::sync::mpsc::Receiver<()>>>| {
                move || {
                    let _ = rx.lock().unwrap().recv();
                    Err(AccountError::UnknownUser)
                }
            };
            let start = Instant::now();
            let r = run_bounded(
                &inflight,
                "bob",
                Duration::from_millis(100),
                hung(release_rx.clone()),
            )
            .await;
            assert!(matches!(r, Err(AccountError::TimedOut(_))), "{r:?}");
            assert!(start.elapsed() < Duration::from_secs(2));
            // Another user is served at once while bob's load hangs.
            let u = User::default_root();
            let r = run_bounded(&inflight, "root", Duration::from_secs(5), move || {
                Ok(Account {
                    user: u,
                    keys: vec![],
                })
            })
            .await;
            assert!(r.is_ok());
            // bob may have MAX_LOADS_PER_USER hung loads, then is refused without a thread.
            let r = run_bounded(
                &inflight,
                "bob",
                Duration::from_millis(50),
                hung(release_rx.clone()),
            )
            .await;
            assert!(matches!(r, Err(AccountError::TimedOut(_))));
            assert_eq!(inflight.len(), MAX_LOADS_PER_USER);
            let r = run_bounded(&inflight, "bob", Duration::from_secs(5), || {
                unreachable!("no thread for a busy user")
            })
            .await;
            assert!(matches!(r, Err(AccountError::Busy)), "{r:?}");
        });
        // Once the file system answers, the places are given back.
        for _ in 0..MAX_LOADS_PER_USER {
            release_tx.send(()).unwrap();
        }
        let start = Instant::now();
        while !inflight.is_empty() {
            assert!(start.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn in_flight_is_bounded_overall() {
        let set = Arc::new(InFlight::default());
        let guards: Vec<_> = (0..MAX_LOADS)
            .map(|i| set.enter(&format!("u{i}")).expect("free place"))
            .collect();
        assert!(set.enter("another").is_none());
        drop(guards);
        assert!(set.is_empty());
        assert!(set.enter("another").is_some());
    }
}
