//! End-to-end tests of the SSH server with the real OpenSSH client (`ssh`, `scp`, `sftp`,
//! `ssh-keygen`, `ssh-keyscan`) against `virga-sshd-dev` on 127.0.0.1 with a free port.
//!
//! Every external command runs under a deadline and is killed when it passes; every server is
//! killed when its test ends. The tests run as root (as CI does): the server then drops
//! privileges for non-root users, which one test checks.
#![allow(
    clippy::disallowed_methods,
    reason = "the tests set up and inspect files directly; clippy.toml guards the server's runtime thread"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SERVER: &str = env!("CARGO_BIN_EXE_virga-sshd-dev");
const DEADLINE: Duration = Duration::from_secs(30);

/// Runs `cmd` with `input` on stdin, killing it after `deadline`.
fn run(mut cmd: Command, input: &[u8], deadline: Duration) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn keygen(dir: &Path, kind: &str, bits: Option<&str>) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("id_{kind}"));
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-N", "", "-t", kind, "-f"]).arg(&path);
    if let Some(b) = bits {
        cmd.args(["-b", b]);
    }
    let out = run(cmd, b"", DEADLINE);
    assert!(out.status.success(), "ssh-keygen: {}", text(&out.stderr));
    path
}

fn public(key: &Path) -> String {
    std::fs::read_to_string(key.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

struct TestServer {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    stdout_lines: Vec<String>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Options<'a> {
    authorized: &'a [String],
    extra: &'a [&'a str],
    host_key_dir: Option<&'a Path>,
    /// `--shell` (the shell of every user); `None`: the passwd entries' shells.
    shell: Option<&'a str>,
}

impl TestServer {
    fn start(dir: &Path, authorized: &[String], extra: &[&str]) -> TestServer {
        Self::start_with(
            dir,
            Options {
                authorized,
                extra,
                host_key_dir: None,
                shell: Some("/bin/sh"),
            },
        )
    }

    fn start_with(dir: &Path, o: Options<'_>) -> TestServer {
        assert!(
            rustix::process::geteuid().is_root(),
            "these tests log in as root and switch users: run them as root (CI does)"
        );
        let ak = dir.join("authorized_keys");
        std::fs::write(&ak, o.authorized.join("\n") + "\n").unwrap();
        // Keys files are read with the user's identity (as OpenSSH does): a shared root-owned
        // file must be readable by the users it serves (and not writable by them).
        std::fs::set_permissions(&ak, std::fs::Permissions::from_mode(0o644)).unwrap();
        let hk = o
            .host_key_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.join("hostkeys"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .unwrap();
        let mut cmd = Command::new(SERVER);
        cmd.args(["--listen", "127.0.0.1:0", "--print-host-keys"]);
        if let Some(shell) = o.shell {
            cmd.args(["--shell", shell]);
        }
        cmd.arg("--host-key-dir")
            .arg(&hk)
            .arg("--authorized-keys")
            .arg(&ak)
            .args(["--log", "info,ssh_server=debug"])
            .args(o.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().expect("start virga-sshd-dev");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let addr = loop {
            match rx.recv_timeout(DEADLINE) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("listening on ") {
                        break a.parse().unwrap();
                    }
                    lines.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "server did not start: {}",
                        std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
                    );
                }
            }
        };
        TestServer {
            child,
            addr,
            dir: dir.to_path_buf(),
            stdout_lines: lines,
        }
    }

    fn port(&self) -> String {
        self.addr.port().to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn ssh_cmd(&self, key: &Path, extra: &[&str]) -> Command {
        let mut c = Command::new("ssh");
        c.args(common_opts())
            .arg("-p")
            .arg(self.port())
            .arg("-i")
            .arg(key)
            .args(extra);
        c
    }

    /// `ssh -i key [extra…] user@127.0.0.1 command`.
    fn ssh(&self, key: &Path, user: &str, extra: &[&str], command: &str, input: &[u8]) -> Output {
        let mut c = self.ssh_cmd(key, extra);
        c.arg(format!("{user}@127.0.0.1")).arg(command);
        run(c, input, DEADLINE)
    }
}

fn common_opts() -> Vec<&'static str> {
    vec![
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=10",
    ]
}

fn code(s: ExitStatus) -> i32 {
    s.code().unwrap_or(-1)
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn sha256(path: &Path) -> String {
    let out = run(
        {
            let mut c = Command::new("sha256sum");
            c.arg(path);
            c
        },
        b"",
        DEADLINE,
    );
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn random_file(path: &Path, len: usize) {
    let mut f = std::fs::File::open("/dev/urandom").unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).unwrap();
    std::fs::write(path, buf).unwrap();
}

#[test]
fn ed25519_and_ecdsa_keys_log_in() {
    let dir = tempdir();
    let ed = keygen(dir.path(), "ed25519", None);
    let ec = keygen(dir.path(), "ecdsa", Some("384"));
    let s = TestServer::start(dir.path(), &[public(&ed), public(&ec)], &[]);
    for key in [&ed, &ec] {
        let out = s.ssh(key, "root", &[], "echo ok", b"");
        assert_eq!(
            text(&out.stdout),
            "ok\n",
            "{}: {}",
            key.display(),
            text(&out.stderr)
        );
    }
}

#[cfg(feature = "rsa")]
#[test]
fn rsa_keys_log_in_with_sha2_signatures_only() {
    let dir = tempdir();
    let rsa = keygen(dir.path(), "rsa", Some("2048"));
    let s = TestServer::start(dir.path(), &[public(&rsa)], &[]);
    for alg in ["rsa-sha2-256", "rsa-sha2-512"] {
        let opt = format!("PubkeyAcceptedAlgorithms={alg}");
        let out = s.ssh(&rsa, "root", &["-o", &opt], "echo ok", b"");
        assert_eq!(text(&out.stdout), "ok\n", "{alg}: {}", text(&out.stderr));
        assert!(
            s.log().contains(&format!("algorithm=\"{alg}\"")),
            "server saw {alg}"
        );
    }
    // RSA with SHA-1 signatures is refused.
    let out = s.ssh(
        &rsa,
        "root",
        &["-o", "PubkeyAcceptedAlgorithms=ssh-rsa"],
        "echo ok",
        b"",
    );
    assert_ne!(code(out.status), 0, "ssh-rsa (SHA-1) must be refused");
    assert!(out.stdout.is_empty());
}

#[test]
fn exec_output_exit_status_stdin_and_signals() {
    let dir = tempdir();
    let key = keygen(dir.path(), "ed25519", None);
    let s = TestServer::start(dir.path(), &[public(&key)], &[]);

    let local = run(
        {
            let mut c = Command::new("uname");
            c.arg("-a");
            c
        },
        b"",
        DEADLINE,
    );
    let remote = s.ssh(&key, "root", &[], "uname -a", b"");
    assert!(remote.status.success(), "{}", text(&remote.stderr));
    assert_eq!(text(&remote.stdout), text(&local.stdout));

    assert_eq!(code(s.ssh(&key, "root", &[], "exit 7", b"").status), 7);
    assert_eq!(code(s.ssh(&key, "root", &[], "true", b"").status), 0);

    let out = s.ssh(&key, "root", &[], "cat", b"hi\n");
    assert_eq!(text(&out.stdout), "hi\n");

    // stderr arrives as extended data, separately from stdout.
    let out = s.ssh(&key, "root", &[], "echo out; echo err >&2; exit 3", b"");
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err"));
    assert_eq!(code(out.status), 3);

    // Killed by a signal: exit-signal, which the OpenSSH client reports as 255.
    let out = s.ssh(&key, "root", &[], "kill -TERM $$", b"");
    assert_eq!(code(out.status), 255, "{}", text(&out.stderr));

    // 4 MiB through `cat` and back: input flow control must not deadlock or lose data.
    let mut big = vec![0u8; 4 << 20];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut big)
        .unwrap();
    let out = s.ssh(&key, "root", &[], "cat", &big);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        out.stdout == big,
        "cat round trip differs ({} bytes back)",
        out.stdout.len()
    );

    // Session environment.
    let out = s.ssh(
        &key,
        "root",
        &[],
        "echo \"$HOME|$USER|$LOGNAME|$SHELL|$PATH|$SSH_CONNECTION\"",
        b"",
    );
    let line = text(&out.stdout);
    let parts: Vec<&str> = line.trim().split('|').collect();
    assert_eq!(parts[..4], ["/root", "root", "root", "/bin/sh"]);
    assert!(parts[4].contains("/usr/bin"));
    assert!(parts[5].starts_with("127.0.0.1 ") && parts[5].ends_with(&format!(" {}", s.port())));
}

#[test]
fn environment_allow_list() {
    let dir = tempdir();
    let key = keygen(dir.path(), "ed25519", None);
    let s = TestServer::start(dir.path(), &[public(&key)], &[]);
    let out = s.ssh(
        &key,
        "root",
        &["-o", "SetEnv=LANG=C.UTF-8 LC_TIME=C FOO=bar PATH=/evil"],
        "echo \"$LANG/$LC_TIME/${FOO:-unset}/$PATH\"",
        b"",
    );
    let line = text(&out.stdout);
    assert!(line.starts_with("C.UTF-8/C/unset/"), "{line}");
    assert!(!line.contains("/evil"), "PATH must not be settable: {line}");
    // SendEnv forwards from the client's environment.
    let mut c = s.ssh_cmd(&key, &["-o", "SendEnv=LANG"]);
    c.env("LANG", "en_US.UTF-8")
        .arg("root@127.0.0.1")
        .arg("echo $LANG");
    let out = run(c, b"", DEADLINE);
    assert_eq!(text(&out.stdout), "en_US.UTF-8\n");
}

/// Runs an ssh command inside `script`'s terminal of the given size.
fn in_terminal(shell_cmd: &str) -> Output {
    let mut c = Command::new("script");
    c.args(["-q", "-e", "-c", shell_cmd, "/dev/null"]);
    run(c, b"", DEADLINE)
}

#[test]
fn pty_sessions_get_a_terminal_of_the_requested_size_and_resizes() {
    let dir = tempdir();
    let key = keygen(dir.path(), "ed25519", None);
    let s = TestServer::start(dir.path(), &[public(&key)], &[]);
    let ssh = format!(
        "ssh {} -p {} -i {} -tt root@127.0.0.1",
        common_opts().join(" "),
        s.port(),
        key.display()
    );
    // The resize happens once the remote side has printed its first size (marker file on the
    // shared file system); the remote then waits for the size to change, so timing under load
    // does not matter.
    let ready = dir.path().join("ready");
    let cmd = format!(
        "stty rows 33 cols 111; \
         (i=0; while [ ! -e {ready} ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; \
          stty rows 44 cols 122 </dev/tty) & \
         {ssh} 'tty; stty size; echo TERM=$TERM; touch {ready}; i=0; \
          while [ \"$(stty size)\" = \"33 111\" ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; \
          stty size; exit 5'",
        ready = ready.display()
    );
    let out = in_terminal(&cmd);
    let got = text(&out.stdout).replace('\r', "");
    // `script` may echo a NUL from the terminal as `^@` before the first line.
    let lines: Vec<&str> = got
        .lines()
        .map(|l| l.trim_start_matches(['\0', '^', '@']))
        .collect();
    assert!(
        lines.first().is_some_and(|l| l.starts_with("/dev/pts/")),
        "{got:?}"
    );
    assert_eq!(lines.get(1), Some(&"33 111"), "{got:?}");
    assert!(
        lines
            .get(2)
            .is_some_and(|l| l.starts_with("TERM=") && l.len() > 5),
        "{got:?}"
    );
    assert_eq!(
        lines.get(3),
        Some(&"44 122"),
        "window-change applied: {got:?}"
    );
    assert_eq!(code(out.status), 5, "exit status through script -e");

    // An interactive login shell on the terminal.
    let out = s.ssh(
        &key,
        "root",
        &["-tt"],
        "",
        b"echo \"shell=$0 tty=$(tty)\"; exit 4\n",
    );
    let got = text(&out.stdout);
    assert!(got.contains("shell=-sh tty=/dev/pts/"), "{got:?}");
    assert_eq!(code(out.status), 4);
}

#[test]
fn scp_and_sftp_round_trip() {
    let dir = tempdir();
    let key = keygen(dir.path(), "ed25519", None);
    let s = TestServer::start(dir.path(), &[public(&key)], &[]);
    let src = dir.path().join("src.bin");
    random_file(&src, 1 << 20);
    let remote = dir.path().join("remote.bin");
    let back = dir.path().join("back.bin");
    let scp = |from: String, to: String| {
        let mut c = Command::new("scp");
        c.args(common_opts())
            .arg("-P")
            .arg(s.port())
            .arg("-i")
            .arg(&key)
            .arg(from)
            .arg(to);
        run(c, b"", DEADLINE)
    };
    let up = scp(
        src.display().to_string(),
        format!("root@127.0.0.1:{}", remote.display()),
    );
    assert!(up.status.success(), "scp upload: {}", text(&up.stderr));
    let down = scp(
        format!("root@127.0.0.1:{}", remote.display()),
        back.display().to_string(),
    );
    assert!(
        down.status.success(),
        "scp download: {}",
        text(&down.stderr)
    );
    assert_eq!(sha256(&src), sha256(&remote));
    assert_eq!(sha256(&src), sha256(&back));

    let sdir = dir.path().join("sftp");
    let batch = dir.path().join("batch");
    std::fs::write(
        &batch,
        format!(
            "mkdir {d}\nput {src} {d}/a.bin\nrename {d}/a.bin {d}/b.bin\nls -l {d}\nget {d}/b.bin {got}\n\
             symlink {d}/b.bin {d}/c.lnk\nls {d}\nrm {d}/b.bin\nrm {d}/c.lnk\nrmdir {d}\n",
            d = sdir.display(),
            src = src.display(),
            got = dir.path().join("got.bin").display()
        ),
    )
    .unwrap();
    let mut c = Command::new("sftp");
    c.args(common_opts())
        .arg("-P")
        .arg(s.port())
        .arg("-i")
        .arg(&key)
        .arg("-b")
        .arg(&batch)
        .arg("root@127.0.0.1");
    let out = run(c, b"", DEADLINE);
    assert!(
        out.status.success(),
        "sftp batch: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let listing = text(&out.stdout);
    assert!(
        listing.contains("b.bin") && listing.contains("1048576"),
        "{listing}"
    );
    assert!(listing.contains("c.lnk"), "{listing}");
    assert_eq!(sha256(&src), sha256(&dir.path().join("got.bin")));
    assert!(!sdir.exists(), "directory removed over sftp");

    // A failing batch command makes sftp fail: errors are reported, not swallowed.
    std::fs::write(&batch, "get /nonexistent/file /tmp/x\n").unwrap();
    let mut c = Command::new("sftp");
    c.args(common_opts())
        .arg("-P")
        .arg(s.port())
        .arg("-i")
        .arg(&key)
        .arg("-b")
        .arg(&batch)
        .arg("root@127.0.0.1");
    let out = run(c, b"", DEADLINE);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn wrong_key_password_and_unknown_user_are_refused() {
    let dir = tempdir();
    let key = keygen(dir.path(), "ed25519", None);
    let other = keygen(dir.path(), "ecdsa", None);
    let s = TestServer::start(dir.path(), &[public(&key)], &[]);

    let out = s.ssh(&other, "root", &[], "echo in", b"");
    assert_eq!(code(out.status), 255);
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("Permission denied (publickey)"),
        "{}",
        text(&out.stderr)
    );

    let out = s.ssh(&key, "nosuchuser", &[], "echo in", b"");
    assert_eq!(code(out.status), 255);
    assert!(out.stdout.is_empty());

    // Password and keyboard-interactive only: nothing to try, refused.
    let out = s.ssh(
        &key,
        "root",
        &[
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
            "-o",
            "NumberOfPasswordPrompts=1",
        ],
        "echo in",
        b"",
    );
    assert_eq!(code(out.status), 255);
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("Permission denied (publickey)"),
        "{}",
        text(&out.stderr)
    );

    // The server offers publickey and nothing else.
    let out = s.ssh(&other, "root", &["-v"], "echo in", b"");
    let verbose = text(&out.stderr);
    let offers: Vec<&str> = verbose
        .lines()
        .filter(|l| l.contains("Authentications that can continue:"))
        .collect();
    assert!(!offers.is_empty(), "{verbose}");
    for l in offers {
        assert!(
            l.trim_end()
                .ends_with("Authentications that can continue: publickey"),
            "{l}"
        );
    }
    assert!(s.log().contains("authentication refused"));
}

#[test]
fn forced_command_and_no_pty_from_authorized_keys() {
    let dir = tempdir();
    let forced = keygen(dir.path(), "ed25519", None);
    let nopty = keygen(dir.path(), "ecdsa", None);
    let s = TestServer::start(
        dir.path(),
        &[
            format!(
                "no-port-forwarding,command=\"echo forced:$SSH_ORIGINAL_COMMAND; exit 43\" {}",
                public(&forced)
            ),
            format!("no-pty {}", public(&nopty)),
        ],
        &[],
    );
    let out = s.ssh(&forced, "root", &[], "whoami", b"");
    assert_eq!(text(&out.stdout), "forced:whoami\n");
    assert_eq!(code(out.status), 43);
    // With -tt the OpenSSH client gives up when the PTY is refused (as with OpenSSH's sshd).
    let out = s.ssh(&nopty, "root", &["-tt"], "tty", b"");
    assert!(
        !text(&out.stdout).contains("/dev/pts"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("PTY allocation request failed"),
        "{}",
        text(&out.stderr)
    );
    assert!(s.log().contains("pty request refused"));
    // Without a PTY the key works.
    let out = s.ssh(&nopty, "root", &[], "tty || echo no-tty", b"");
    assert_eq!(text(&out.stdout), "not a tty\nno-tty\n");
}

#[test]
fn non_root_users_run_with_their_own_ids() {
    let dir = tempdir();
    let key = keygen(dir.path(), "ed25519", None);
    let home = dir.path().join("home-alice");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(4242), Some(4343)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let passwd = dir.path().join("passwd");
    std::fs::write(
        &passwd,
        format!(
            "root:x:0:0:root:/root:/bin/sh\nalice:x:4242:4343:Alice:{}:/bin/sh\n",
            home.display()
        ),
    )
    .unwrap();
    let group = dir.path().join("group");
    std::fs::write(&group, "root:x:0:\nalice:x:4343:\nextra:x:4444:alice\n").unwrap();
    let s = TestServer::start(
        dir.path(),
        &[public(&key)],
        &[
            "--passwd",
            passwd.to_str().unwrap(),
            "--group",
            group.to_str().unwrap(),
        ],
    );
    let out = s.ssh(
        &key,
        "alice",
        &[],
        "id -u; id -g; id -G; echo $HOME; pwd; echo $USER",
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got = text(&out.stdout);
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines[0], "4242");
    assert_eq!(lines[1], "4343");
    assert_eq!(lines[2], "4343 4444");
    assert_eq!(lines[3], home.display().to_string());
    assert_eq!(lines[4], home.display().to_string());
    assert_eq!(lines[5], "alice");

    // SFTP runs as alice too: a root-only directory is not writable.
    let locked = dir.path().join("root-only");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    let src = dir.path().join("f");
    std::fs::write(&src, b"data").unwrap();
    let mut c = Command::new("scp");
    c.args(common_opts())
        .arg("-P")
        .arg(s.port())
        .arg("-i")
        .arg(&key)
        .arg(&src);
    c.arg(format!("alice@127.0.0.1:{}/f", locked.display()));
    let out = run(c, b"", DEADLINE);
    assert!(
        !out.status.success(),
        "alice must not write into a 0700 root directory"
    );
    assert!(!locked.join("f").exists());
    // …but can write in her home, and the file is hers.
    let mut c = Command::new("scp");
    c.args(common_opts())
        .arg("-P")
        .arg(s.port())
        .arg("-i")
        .arg(&key)
        .arg(&src);
    c.arg("alice@127.0.0.1:copied");
    let out = run(c, b"", DEADLINE);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let meta = std::fs::metadata(home.join("copied")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 4242);
}

/// Reads from `stream` until EOF or `limit`; returns the bytes and how long EOF took.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Option<Duration>) {
    let start = Instant::now();
    let mut got = Vec::new();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return (got, Some(start.elapsed())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (got, Some(start.elapsed())),
        }
    }
    (got, None)
}

#[test]
fn garbage_and_malformed_packets_do_not_hurt_the_server() {
    let dir = tempdir();
    let key = keygen(dir.path(), "ed25519", None);
    let s = TestServer::start(dir.path(), &[public(&key)], &[]);

    // Random bytes instead of a version line.
    let mut noise = vec![0u8; 64 * 1024];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut noise)
        .unwrap();
    let mut c = TcpStream::connect(s.addr).unwrap();
    let _ = c.write_all(&noise);
    let (_, closed) = read_until_closed(&mut c, Duration::from_secs(10));
    assert!(closed.is_some(), "garbage connection must be dropped");

    // An HTTP request.
    let mut c = TcpStream::connect(s.addr).unwrap();
    let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let (got, closed) = read_until_closed(&mut c, Duration::from_secs(10));
    assert!(closed.is_some());
    assert!(
        text(&got).starts_with("SSH-2.0-virga_"),
        "banner first: {:?}",
        text(&got)
    );

    // A valid version line, then a packet claiming 2 GiB, then one with junk padding.
    for packet in [
        &[0x7f, 0xff, 0xff, 0xff, 0x00][..],
        &[0, 0, 0, 12, 200, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11][..],
    ] {
        let mut c = TcpStream::connect(s.addr).unwrap();
        let _ = c.write_all(b"SSH-2.0-fuzz\r\n");
        let _ = c.write_all(packet);
        let (_, closed) = read_until_closed(&mut c, Duration::from_secs(10));
        assert!(closed.is_some(), "malformed packet must end the connection");
    }

    // A huge key blob offered... is the client's business; the server keeps serving.
    let out = s.ssh(&key, "root", &[], "echo alive", b"");
    assert_eq!(text(&out.stdout), "alive\n", "{}", text(&out.stderr));
    assert!(
        s.log().contains("connection dropped before authentication"),
        "{}",
        s.log()
    );
}

#[test]
fn silent_and_slow_clients_are_cut_off_after_the_grace_time() {
    let dir = tempdir();
    let key = keygen(dir.path(), "ed25519", None);
    let s = TestServer::start(dir.path(), &[public(&key)], &["--login-grace", "2"]);
    let start = Instant::now();
    let mut silent = TcpStream::connect(s.addr).unwrap();
    let mut banner_only = TcpStream::connect(s.addr).unwrap();
    banner_only.write_all(b"SSH-2.0-slow\r\n").unwrap();
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(10));
    let closed = closed.expect("silent client must be disconnected");
    assert!(
        closed >= Duration::from_millis(1500),
        "closed too early: {closed:?}"
    );
    let (_, closed2) = read_until_closed(&mut banner_only, Duration::from_secs(10));
    assert!(
        closed2.is_some(),
        "client stuck after the banner must be disconnected"
    );
    assert!(start.elapsed() < Duration::from_secs(8));
    assert!(s.log().contains("login grace time expired"));
    // A logged-in session outlives the grace time.
    let out = s.ssh(&key, "root", &[], "sleep 3; echo still-here", b"");
    assert_eq!(text(&out.stdout), "still-here\n", "{}", text(&out.stderr));
}

#[test]
fn connection_limit_is_enforced() {
    let dir = tempdir();
    let key = keygen(dir.path(), "ed25519", None);
    let s = TestServer::start(
        dir.path(),
        &[public(&key)],
        &["--max-connections", "2", "--login-grace", "20"],
    );
    let a = TcpStream::connect(s.addr).unwrap();
    let b = TcpStream::connect(s.addr).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut third = TcpStream::connect(s.addr).unwrap();
    let (got, closed) = read_until_closed(&mut third, Duration::from_secs(5));
    assert!(
        closed.is_some() && got.is_empty(),
        "third connection must be closed without a banner"
    );
    let out = s.ssh(&key, "root", &[], "echo in", b"");
    assert_ne!(code(out.status), 0, "ssh over the limit must fail");
    drop(a);
    drop(b);
    // Slots free up as soon as the server sees the two connections close.
    let start = Instant::now();
    loop {
        let out = s.ssh(&key, "root", &[], "echo in", b"");
        if text(&out.stdout) == "in\n" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(s.log().contains("max_connections reached"));
}

#[test]
fn auth_failures_are_rate_limited_per_source() {
    let dir = tempdir();
    let key = keygen(dir.path(), "ed25519", None);
    let other = keygen(dir.path(), "ecdsa", None);
    let s = TestServer::start(
        dir.path(),
        &[public(&key)],
        &["--rate-burst", "3", "--rate-per-minute", "1"],
    );
    for _ in 0..3 {
        let out = s.ssh(&other, "root", &[], "true", b"");
        assert_eq!(code(out.status), 255);
    }
    // The source has used up its failures: even the right key is turned away now.
    let out = s.ssh(&key, "root", &[], "echo in", b"");
    assert_ne!(code(out.status), 0);
    assert!(out.stdout.is_empty());
    assert!(
        s.log().contains("too many authentication failures"),
        "{}",
        s.log()
    );
}

#[test]
fn session_limit_per_connection() {
    let dir = tempdir();
    let key = keygen(dir.path(), "ed25519", None);
    let s = TestServer::start(dir.path(), &[public(&key)], &["--max-sessions", "1"]);
    let sock = dir.path().join("mux");
    let sock_opt = format!("ControlPath={}", sock.display());
    let mut master = s.ssh_cmd(&key, &["-o", "ControlMaster=yes", "-o", &sock_opt, "-N"]);
    master
        .arg("root@127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut master = master.spawn().unwrap();
    let start = Instant::now();
    while !sock.exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut first = s.ssh_cmd(&key, &["-o", &sock_opt]);
    first.arg("root@127.0.0.1").arg("sleep 4; echo first");
    let first = std::thread::spawn(move || run(first, b"", DEADLINE));
    // Wait until the first session runs on the shared connection.
    let start = Instant::now();
    while !s.log().contains("session started") {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "first session did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = s.ssh(&key, "root", &["-o", &sock_opt], "echo second", b"");
    let first = first.join().unwrap();
    let _ = master.kill();
    let _ = master.wait();
    assert_eq!(text(&first.stdout), "first\n", "{}", text(&first.stderr));
    // The multiplexed session is refused on the shared connection (the OpenSSH client then
    // falls back to a connection of its own, which is allowed).
    assert!(
        text(&second.stderr).contains("Session open refused by peer"),
        "{}",
        text(&second.stderr)
    );
    assert!(s.log().contains("session channel refused"), "{}", s.log());
}

#[test]
fn host_keys_are_made_once_with_mode_0600_and_match_ssh_keygen() {
    let dir = tempdir();
    let key = keygen(dir.path(), "ed25519", None);
    let hk = dir.path().join("persistent-hk");
    let block = |s: &TestServer| s.stdout_lines.join("\n");
    let first = {
        let s = TestServer::start_with(
            dir.path(),
            Options {
                authorized: &[public(&key)],
                extra: &["--comment", "root@virga"],
                host_key_dir: Some(&hk),
                shell: Some("/bin/sh"),
            },
        );
        // The key the client sees is the one announced.
        let mut c = Command::new("ssh-keyscan");
        c.args(["-p", &s.port(), "-t", "ed25519,ecdsa", "127.0.0.1"]);
        let scan = text(&run(c, b"", DEADLINE).stdout);
        for line in scan.lines().filter(|l| !l.starts_with('#')) {
            let body: Vec<&str> = line.split_whitespace().skip(1).take(2).collect();
            assert!(
                block(&s).contains(&body.join(" ")),
                "scanned key {line} not announced"
            );
        }
        block(&s)
    };
    for name in ["ssh_host_ed25519_key", "ssh_host_ecdsa_key"] {
        let mode = std::fs::metadata(hk.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
    let second = {
        let s = TestServer::start_with(
            dir.path(),
            Options {
                authorized: &[public(&key)],
                extra: &["--comment", "other"],
                host_key_dir: Some(&hk),
                shell: Some("/bin/sh"),
            },
        );
        block(&s)
    };
    assert_eq!(first, second, "keys reused across restarts");

    // The fingerprint block is exactly what ssh-keygen -l prints, in cloud-init's frame.
    let rule = "#".repeat(61);
    let mut want = vec![
        String::new(),
        rule.clone(),
        "-----BEGIN SSH HOST KEY FINGERPRINTS-----".into(),
    ];
    for name in ["ssh_host_ecdsa_key.pub", "ssh_host_ed25519_key.pub"] {
        let mut c = Command::new("ssh-keygen");
        c.arg("-l").arg("-f").arg(hk.join(name));
        want.push(text(&run(c, b"", DEADLINE).stdout).trim().to_string());
    }
    want.push("-----END SSH HOST KEY FINGERPRINTS-----".into());
    want.push(rule);
    want.push("-----BEGIN SSH HOST KEY KEYS-----".into());
    for name in ["ssh_host_ecdsa_key.pub", "ssh_host_ed25519_key.pub"] {
        want.push(
            std::fs::read_to_string(hk.join(name))
                .unwrap()
                .trim()
                .to_string(),
        );
    }
    want.push("-----END SSH HOST KEY KEYS-----".into());
    assert_eq!(first, want.join("\n"));
    assert!(first.contains("root@virga (ED25519)"));

    // A new instance id replaces the keys.
    let third = {
        let s = TestServer::start_with(
            dir.path(),
            Options {
                authorized: &[public(&key)],
                extra: &["--instance-id", "i-new"],
                host_key_dir: Some(&hk),
                shell: Some("/bin/sh"),
            },
        );
        block(&s)
    };
    assert_ne!(first, third);
}

#[test]
fn disconnecting_hangs_up_children_and_leaves_no_zombies() {
    let dir = tempdir();
    let key = keygen(dir.path(), "ed25519", None);
    let s = TestServer::start(dir.path(), &[public(&key)], &[]);
    let pidfile = dir.path().join("pids");
    let mut c = s.ssh_cmd(&key, &[]);
    c.arg("root@127.0.0.1")
        .arg(format!(
            "sleep 300 & echo $! > {p}; echo $$ >> {p}; sleep 300",
            p = pidfile.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut client = c.spawn().unwrap();
    let start = Instant::now();
    let pids = loop {
        let t = std::fs::read_to_string(&pidfile).unwrap_or_default();
        if t.lines().count() >= 2 {
            break t.lines().map(|l| l.trim().to_string()).collect::<Vec<_>>();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "remote command did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    client.kill().unwrap();
    client.wait().unwrap();
    let alive = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|st| !st.contains(") Z "))
            .unwrap_or(false)
    };
    let start = Instant::now();
    while pids.iter().any(|p| alive(p)) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !pids.iter().any(|p| alive(p)),
        "session processes survived the disconnect"
    );
    // No zombie children left under the server (it reaps them soon; wait, bounded).
    let server_pid = s.child.id().to_string();
    let zombies = || -> Vec<String> {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
            .filter(|st| {
                let after = st.rsplit(')').next().unwrap_or("");
                let f: Vec<&str> = after.split_whitespace().collect();
                f.first() == Some(&"Z") && f.get(1) == Some(&server_pid.as_str())
            })
            .collect()
    };
    let start = Instant::now();
    while !zombies().is_empty() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = zombies();
    assert!(left.is_empty(), "zombies: {left:?}");
}

#[test]
fn library_api_with_keys_from_a_provider() {
    // The guest uses the library directly; keys can come from memory instead of files.
    let dir = tempdir();
    let key = keygen(dir.path(), "ed25519", None);
    let line = public(&key);
    let mut cfg =
        ssh_server::SshConfig::new(vec!["127.0.0.1:0".parse().unwrap()], dir.path().join("hk"));
    cfg.authorized_keys_files = vec![dir.path().join("none").display().to_string()];
    cfg.authorized_keys_provider = Some(std::sync::Arc::new(move |u: &ssh_server::User| {
        if u.name == "root" {
            line.clone()
        } else {
            String::new()
        }
    }));
    cfg.shell_override = Some("/bin/sh".into());
    let server = ssh_server::Server::bind(cfg).unwrap();
    let addr = server.local_addrs()[0];
    assert_eq!(server.host_keys().len(), 2);
    let blocks = ssh_server::render_console_blocks(server.host_keys());
    assert!(blocks.contains("-----BEGIN SSH HOST KEY KEYS-----\necdsa-sha2-nistp256 AAAA"));
    // The server thread lives until the test process exits.
    std::thread::spawn(move || server.run());
    let mut c = Command::new("ssh");
    c.args(common_opts())
        .arg("-p")
        .arg(addr.port().to_string())
        .arg("-i")
        .arg(&key);
    c.arg("root@127.0.0.1").arg("echo provided");
    let out = run(c, b"", DEADLINE);
    assert_eq!(text(&out.stdout), "provided\n", "{}", text(&out.stderr));
}

#[test]
fn a_missing_shell_refuses_the_login_sftp_included() {
    let dir = tempdir();
    let key = keygen(dir.path(), "ed25519", None);
    let s = TestServer::start(dir.path(), &[public(&key)], &["--shell", "/nonexistent/sh"]);
    let out = s.ssh(&key, "root", &[], "true", b"");
    assert_eq!(code(out.status), 255);
    assert!(
        text(&out.stderr).contains("Permission denied (publickey)"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        s.log()
            .contains("shell /nonexistent/sh is not an executable file"),
        "{}",
        s.log()
    );
    // SFTP does not use the shell, but a user without a usable shell gets no session at all
    // (OpenSSH runs subsystems through the shell, so they fail there too).
    let src = dir.path().join("f");
    std::fs::write(&src, b"data").unwrap();
    let mut c = Command::new("scp");
    c.args(common_opts())
        .arg("-P")
        .arg(s.port())
        .arg("-i")
        .arg(&key)
        .arg(&src);
    c.arg(format!("root@127.0.0.1:{}/g", dir.path().display()));
    let out = run(c, b"", DEADLINE);
    assert!(!out.status.success(), "scp must be refused too");
    assert!(!dir.path().join("g").exists());
    // The server goes on serving.
    let mut c = TcpStream::connect(s.addr).unwrap();
    let (got, _) = read_until_closed(&mut c, Duration::from_millis(500));
    assert!(text(&got).starts_with("SSH-2.0-virga_"), "{:?}", text(&got));
}

/// A login account for the tests that need users other than root.
struct TestUser<'a> {
    name: &'a str,
    uid: u32,
    shell: &'a str,
    /// Public key line put in `~/.ssh/authorized_keys` (0600, the user's, in a 0700 `.ssh`).
    key: Option<String>,
}

/// Writes passwd and group files and the users' homes (`dir/home-NAME`, 0755, the user's)
/// under `dir`, which is made 0755 so that users can reach their homes and the shared
/// `authorized_keys`. Returns the server arguments: the databases and the `%h` keys file.
fn setup_users(dir: &Path, users: &[TestUser<'_>]) -> Vec<String> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
    let mut group = String::from("root:x:0:\n");
    for u in users {
        let home = dir.join(format!("home-{}", u.name));
        let ssh = home.join(".ssh");
        std::fs::create_dir_all(&ssh).unwrap();
        let mut owned = vec![(home.clone(), 0o755), (ssh.clone(), 0o700)];
        if let Some(k) = &u.key {
            let ak = ssh.join("authorized_keys");
            std::fs::write(&ak, format!("{k}\n")).unwrap();
            owned.push((ak, 0o600));
        }
        for (p, mode) in owned {
            std::os::unix::fs::chown(&p, Some(u.uid), Some(u.uid)).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        passwd.push_str(&format!(
            "{n}:x:{id}:{id}:{n}:{h}:{s}\n",
            n = u.name,
            id = u.uid,
            h = home.display(),
            s = u.shell
        ));
        group.push_str(&format!("{}:x:{}:\n", u.name, u.uid));
    }
    let (p, g) = (dir.join("passwd"), dir.join("group"));
    std::fs::write(&p, passwd).unwrap();
    std::fs::write(&g, group).unwrap();
    vec![
        "--passwd".into(),
        p.display().to_string(),
        "--group".into(),
        g.display().to_string(),
        "--authorized-keys".into(),
        "%h/.ssh/authorized_keys".into(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Waits (bounded) until the server log contains `needle`.
fn wait_for_log(s: &TestServer, needle: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if s.log().contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_fifo_as_authorized_keys_does_not_stall_other_logins() {
    let dir = tempdir();
    let alice_key = keygen(&dir.path().join("a"), "ed25519", None);
    let bob_key = keygen(&dir.path().join("b"), "ed25519", None);
    let args = setup_users(
        dir.path(),
        &[
            TestUser {
                name: "alice",
                uid: 4242,
                shell: "/bin/sh",
                key: None,
            },
            TestUser {
                name: "bob",
                uid: 4343,
                shell: "/bin/sh",
                key: Some(public(&bob_key)),
            },
        ],
    );
    let fifo = dir.path().join("home-alice/.ssh/authorized_keys");
    let out = run(
        {
            let mut c = Command::new("mkfifo");
            c.arg("-m").arg("0600").arg(&fifo);
            c
        },
        b"",
        DEADLINE,
    );
    assert!(out.status.success(), "mkfifo: {}", text(&out.stderr));
    std::os::unix::fs::chown(&fifo, Some(4242), Some(4242)).unwrap();
    let s = TestServer::start(dir.path(), &[], &strs(&args));

    // alice's attempt opens her FIFO, which has no writer: whatever reads it must not stall
    // the server. Her attempt is under way (or over) before bob connects.
    let mut c = s.ssh_cmd(&alice_key, &[]);
    c.arg("alice@127.0.0.1").arg("echo alice-in");
    let alice = std::thread::spawn(move || run(c, b"", DEADLINE));
    assert!(
        wait_for_log(&s, "connection accepted", Duration::from_secs(10)),
        "{}",
        s.log()
    );
    wait_for_log(&s, "authorized_keys ignored", Duration::from_secs(1));
    let bob = s.ssh(&bob_key, "bob", &[], "echo bob-in", b"");
    assert_eq!(text(&bob.stdout), "bob-in\n", "{}", text(&bob.stderr));
    let alice = alice.join().expect("alice's ssh must end");
    assert_eq!(code(alice.status), 255, "{}", text(&alice.stderr));
    assert!(
        s.log().contains("is not a regular file (Fifo)"),
        "{}",
        s.log()
    );
    // And again: a second connection is served just as well.
    let bob = s.ssh(&bob_key, "bob", &[], "echo bob-again", b"");
    assert_eq!(text(&bob.stdout), "bob-again\n", "{}", text(&bob.stderr));
}

#[test]
fn authorized_keys_are_read_as_the_user_and_never_through_a_final_symlink() {
    let dir = tempdir();
    let key = keygen(&dir.path().join("k"), "ed25519", None);
    let args = setup_users(
        dir.path(),
        &[TestUser {
            name: "alice",
            uid: 4242,
            shell: "/bin/sh",
            key: None,
        }],
    );
    let s = TestServer::start(dir.path(), &[], &strs(&args));
    let ssh_dir = dir.path().join("home-alice/.ssh");
    let ak = ssh_dir.join("authorized_keys");
    let login = || s.ssh(&key, "alice", &[], "echo in", b"");

    // 1. authorized_keys is a symlink to a root-only file holding alice's key.
    let secret = dir.path().join("root-only-keys");
    std::fs::write(&secret, format!("{}\n", public(&key))).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&secret, &ak).unwrap();
    let out = login();
    assert_eq!(
        code(out.status),
        255,
        "symlink to a root-only file let alice in"
    );
    assert!(out.stdout.is_empty());
    assert!(
        s.log().contains("is a symbolic link; not followed"),
        "{}",
        s.log()
    );

    // 2. ~/.ssh is a symlink into a root-only directory: reading as alice, it is unreadable.
    let locked = dir.path().join("root-only-dir");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(
        locked.join("authorized_keys"),
        format!("{}\n", public(&key)),
    )
    .unwrap();
    std::fs::set_permissions(
        locked.join("authorized_keys"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::remove_file(&ak).unwrap();
    std::fs::remove_dir(&ssh_dir).unwrap();
    std::os::unix::fs::symlink(&locked, &ssh_dir).unwrap();
    let out = login();
    assert_eq!(code(out.status), 255, "root-only directory read for alice");
    assert!(out.stdout.is_empty());
    assert!(
        s.log().contains("cannot open directory") && s.log().contains("Permission denied"),
        "{}",
        s.log()
    );

    // Control: the same key in a proper file of alice's lets her in.
    std::fs::remove_file(&ssh_dir).unwrap();
    std::fs::create_dir(&ssh_dir).unwrap();
    std::fs::write(&ak, format!("{}\n", public(&key))).unwrap();
    for (p, mode) in [(&ssh_dir, 0o700), (&ak, 0o600)] {
        std::os::unix::fs::chown(p, Some(4242), Some(4242)).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let out = login();
    assert_eq!(text(&out.stdout), "in\n", "{}", text(&out.stderr));
}

#[test]
fn group_writable_authorized_keys_or_ssh_dir_are_refused_with_a_clear_log_line() {
    let dir = tempdir();
    let key = keygen(&dir.path().join("k"), "ed25519", None);
    let args = setup_users(
        dir.path(),
        &[TestUser {
            name: "alice",
            uid: 4242,
            shell: "/bin/sh",
            key: Some(public(&key)),
        }],
    );
    let s = TestServer::start(dir.path(), &[], &strs(&args));
    let ssh_dir = dir.path().join("home-alice/.ssh");
    let ak = ssh_dir.join("authorized_keys");
    let chmod =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();

    chmod(&ak, 0o660);
    let out = s.ssh(&key, "alice", &[], "echo in", b"");
    assert_eq!(
        code(out.status),
        255,
        "group-writable authorized_keys accepted"
    );
    let line = format!("{} is group- or world-writable (mode 660)", ak.display());
    assert!(s.log().contains(&line), "{}", s.log());

    chmod(&ak, 0o600);
    chmod(&ssh_dir, 0o770);
    let out = s.ssh(&key, "alice", &[], "echo in", b"");
    assert_eq!(code(out.status), 255, "group-writable ~/.ssh accepted");
    let line = format!(
        "{} is group- or world-writable (mode 770)",
        ssh_dir.display()
    );
    assert!(s.log().contains(&line), "{}", s.log());

    chmod(&ssh_dir, 0o700);
    let out = s.ssh(&key, "alice", &[], "echo in", b"");
    assert_eq!(text(&out.stdout), "in\n", "{}", text(&out.stderr));
}

#[test]
fn nologin_false_missing_and_non_executable_shells_get_no_session_not_even_sftp() {
    let dir = tempdir();
    let key = keygen(&dir.path().join("k"), "ed25519", None);
    let not_exec = dir.path().join("not-executable-sh");
    std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&not_exec, std::fs::Permissions::from_mode(0o644)).unwrap();
    let shells = [
        ("bob", "/usr/sbin/nologin", "refuses logins"),
        ("carol", "/bin/false", "refuses logins"),
        ("dave", "/nonexistent/sh", "is not an executable file"),
        (
            "erin",
            not_exec.to_str().unwrap(),
            "is not an executable file",
        ),
    ];
    let mut users: Vec<TestUser<'_>> = shells
        .iter()
        .zip(5000..)
        .map(|(&(name, shell, _), uid)| TestUser {
            name,
            uid,
            shell,
            key: Some(public(&key)),
        })
        .collect();
    users.push(TestUser {
        name: "alice",
        uid: 4242,
        shell: "/bin/sh",
        key: Some(public(&key)),
    });
    let args = setup_users(dir.path(), &users);
    // Every refused attempt costs the source; this test makes a dozen.
    let mut extra = strs(&args);
    extra.extend(["--rate-burst", "100"]);
    let s = TestServer::start_with(
        dir.path(),
        Options {
            authorized: &[],
            extra: &extra,
            host_key_dir: None,
            shell: None,
        },
    );
    let batch = dir.path().join("batch");
    std::fs::write(&batch, "pwd\nls\n").unwrap();
    let sftp = |user: &str| {
        let mut c = Command::new("sftp");
        c.args(common_opts())
            .arg("-P")
            .arg(s.port())
            .arg("-i")
            .arg(&key)
            .arg("-b")
            .arg(&batch)
            .arg(format!("{user}@127.0.0.1"));
        run(c, b"", DEADLINE)
    };
    for (user, shell, why) in shells {
        let out = s.ssh(&key, user, &[], "echo in", b"");
        assert_eq!(
            code(out.status),
            255,
            "{user} ({shell}): {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{user}");
        assert!(
            text(&out.stderr).contains("Permission denied (publickey)"),
            "{user}: {}",
            text(&out.stderr)
        );
        let out = s.ssh(&key, user, &["-tt"], "", b"exit\n");
        assert_eq!(code(out.status), 255, "{user}: interactive shell");
        let out = sftp(user);
        assert!(
            !out.status.success(),
            "{user} ({shell}) got an SFTP session"
        );
        assert!(
            !text(&out.stdout).contains("Remote working directory"),
            "{user}"
        );
        let line = format!("shell {shell} {why}");
        assert!(s.log().contains(&line), "{line}: {}", s.log());
    }
    // Control: the same key, a real shell.
    let out = s.ssh(&key, "alice", &[], "echo in", b"");
    assert_eq!(text(&out.stdout), "in\n", "{}", text(&out.stderr));
    let out = sftp("alice");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Remote working directory"));
}

/// A TCP connection to `to` from the local address `from` (any of 127/8 is loopback).
fn connect_from(from: std::net::Ipv4Addr, to: SocketAddr) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType};
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    rustix::net::bind(&fd, &SocketAddr::from((from, 0))).unwrap();
    rustix::net::connect(&fd, &to).unwrap();
    TcpStream::from(fd)
}

/// Whether the server has closed `c` (EOF), without waiting.
fn closed_by_server(c: &TcpStream) -> bool {
    let mut reader = c;
    c.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    let closed = loop {
        match reader.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    c.set_nonblocking(false).unwrap();
    closed
}

#[test]
fn one_source_holding_100_idle_connections_does_not_lock_out_another() {
    let dir = tempdir();
    let key = keygen(dir.path(), "ed25519", None);
    // Default limits: MaxStartups 10:30:100 per source under a global 128:30:192.
    let s = TestServer::start(dir.path(), &[public(&key)], &[]);
    let attacker = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let idle: Vec<TcpStream> = (0..100).map(|_| connect_from(attacker, s.addr)).collect();
    // Let the server accept (or refuse) all of them (before the fix, nothing was logged: the
    // wait runs out and the login below fails).
    let refused_logged = wait_for_log(&s, "MaxStartups per source", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));

    let start = Instant::now();
    let out = s.ssh(&key, "root", &[], "echo in from 127.0.0.1", b"");
    assert_eq!(
        text(&out.stdout),
        "in from 127.0.0.1\n",
        "after {:?}: {}",
        start.elapsed(),
        text(&out.stderr)
    );
    assert!(refused_logged, "{}", s.log());
    let closed = idle.iter().filter(|c| closed_by_server(c)).count();
    assert!(closed > 0, "some of the 100 must have been dropped");
    assert!(
        100 - closed >= 10,
        "the first 10 are always admitted ({closed} closed)"
    );
    drop(idle);
}

#[test]
fn login_grace_expiry_counts_as_a_failure_for_its_source() {
    let dir = tempdir();
    let key = keygen(dir.path(), "ed25519", None);
    let s = TestServer::start(
        dir.path(),
        &[public(&key)],
        &[
            "--login-grace",
            "1",
            "--rate-burst",
            "3",
            "--rate-per-minute",
            "1",
        ],
    );
    let slow = std::net::Ipv4Addr::new(127, 0, 0, 3);
    let mut idle: Vec<TcpStream> = (0..3).map(|_| connect_from(slow, s.addr)).collect();
    for c in &mut idle {
        let (_, closed) = read_until_closed(c, Duration::from_secs(10));
        assert!(closed.is_some(), "grace time must cut idle connections");
    }
    // Three expiries used up the source's budget: its next connection is refused at once.
    let mut next = connect_from(slow, s.addr);
    let (got, closed) = read_until_closed(&mut next, Duration::from_secs(5));
    assert!(
        closed.is_some() && got.is_empty(),
        "a source that let its grace time run out 3 times must be refused: {:?}",
        text(&got)
    );
    assert!(
        s.log()
            .contains("too many authentication failures from this source"),
        "{}",
        s.log()
    );
    // Other sources are not affected.
    let out = s.ssh(&key, "root", &[], "echo in", b"");
    assert_eq!(text(&out.stdout), "in\n", "{}", text(&out.stderr));
}

/// Starts `sleep 60` as a process-group leader that has pid `want`, by setting the kernel's
/// last allocated pid (root). Other processes on the machine take pids too: retried.
fn spawn_with_pid(want: u32) -> Child {
    use std::os::unix::process::CommandExt;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (want - 1).to_string())
            .expect("cannot set ns_last_pid (needs root)");
        let mut child = Command::new("sleep")
            .arg("60")
            .process_group(0)
            .spawn()
            .unwrap();
        if child.id() == want {
            return child;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("could not start a process with pid {want}");
}

struct AcceptAnyHostKey;

impl russh::client::Handler for AcceptAnyHostKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

#[test]
fn a_signal_after_the_child_was_reaped_reaches_no_other_process() {
    let dir = tempdir();
    let key = keygen(dir.path(), "ed25519", None);
    let s = TestServer::start(dir.path(), &[public(&key)], &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = std::sync::Arc::new(russh::client::Config::default());
        let mut session = russh::client::connect(config, s.addr, AcceptAnyHostKey)
            .await
            .unwrap();
        let secret = russh::keys::load_secret_key(&key, None).unwrap();
        let auth = session
            .authenticate_publickey(
                "root",
                russh::keys::PrivateKeyWithHashAlg::new(std::sync::Arc::new(secret), None),
            )
            .await
            .unwrap();
        assert!(auth.success());
        let mut ch = session.channel_open_session().await.unwrap();
        // On a terminal, the server forwards output for up to 2 s after the session's process
        // exits: the channel stays open while the leader is already reaped. The ticker, in a
        // session of its own (so nothing uses the leader's pid as a group id any more), keeps
        // the terminal busy.
        ch.request_pty(false, "dumb", 80, 24, 0, 0, &[])
            .await
            .unwrap();
        ch.exec(
            true,
            "echo leader=$$; setsid sh -c 'i=0; while [ $i -lt 60 ]; do echo tick; \
             sleep 0.05; i=$((i+1)); done' & sleep 0.2; exit 0",
        )
        .await
        .unwrap();
        let mut out = String::new();
        let leader: u32 = loop {
            match tokio::time::timeout(DEADLINE, ch.wait()).await {
                Ok(Some(russh::ChannelMsg::Data { data })) => {
                    out.push_str(&String::from_utf8_lossy(&data));
                    if let Some(rest) = out.split("leader=").nth(1)
                        && let Some(pid) = rest.split(['\r', '\n']).next()
                        && rest.contains('\n')
                    {
                        break pid.trim().parse().unwrap();
                    }
                }
                Ok(Some(_)) => {}
                other => panic!("no leader pid: {other:?} {out:?}"),
            }
        };
        // The server reaps the leader: its /proc entry (a zombie's too) goes away.
        let start = Instant::now();
        while Path::new(&format!("/proc/{leader}")).exists() {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "leader {leader} not reaped"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // An unrelated process-group leader now has that pid.
        let mut victim = spawn_with_pid(leader);
        ch.signal(russh::Sig::KILL).await.unwrap();
        // The request is handled (logged as not delivered: the pidfd's process is gone) while
        // the channel is still open; the unrelated process lives on. (The client's connection
        // runs on this runtime: wait here, not outside.)
        let start = Instant::now();
        while !s.log().contains("signal not delivered") && start.elapsed() < Duration::from_secs(5)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let alive = victim.try_wait().unwrap().is_none();
        let _ = victim.kill();
        let _ = victim.wait();
        assert!(
            alive,
            "the SIGKILL meant for reaped pid {leader} killed another process"
        );
        assert!(
            s.log().contains("signal not delivered"),
            "the signal request was not handled: {}",
            s.log()
        );
        let _ = ch.close().await;
        drop(session);
    });
}
