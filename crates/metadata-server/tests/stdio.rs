//! The `--stdio` mode as QEMU's guestfwd `cmd:` runs it: one process per connection, the
//! connection on stdin/stdout, nothing on stderr.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, INSTANCE_ID, metadata_dir, read_response};

fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Child {
    Command::new(BIN)
        .arg("--stdio")
        .args(args)
        .envs(envs.iter().copied())
        .env("RUST_LOG", "debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for the child to exit (at most `limit`), returning its exit code and stderr.
fn finish(mut child: Child, limit: Duration) -> (i32, String) {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code().unwrap_or(-1), err);
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("server did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_keep_alive_requests_on_one_connection() {
    let dir = metadata_dir();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("server.log");
    let mut child = spawn(
        &[
            "--cloud",
            "ec2",
            "--imds",
            "v1-only",
            "--dir",
            dir.path().to_str().unwrap(),
            "--log-file",
            log.to_str().unwrap(),
        ],
        &[],
    );
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    stdin
        .write_all(b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n")
        .unwrap();
    let r1 = read_response(&mut out);
    assert_eq!((r1.status, r1.text().as_str()), (200, INSTANCE_ID));
    assert_eq!(r1.header("connection"), Some("keep-alive"));
    stdin
        .write_all(b"GET /latest/meta-data/public-keys/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n")
        .unwrap();
    let r2 = read_response(&mut out);
    assert_eq!((r2.status, r2.text().as_str()), (200, "0=tester@virga"));
    drop(stdin); // the guest closes the connection
    let (code, stderr) = finish(child, Duration::from_secs(10));
    assert_eq!(code, 0);
    assert!(
        stderr.is_empty(),
        "stderr must stay clean (it is the guest socket under QEMU): {stderr}"
    );
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("/latest/meta-data/public-keys/"), "{log}");
}

#[test]
fn connection_close_ends_the_process() {
    let dir = metadata_dir();
    let mut child = spawn(
        &[
            "--cloud",
            "openstack",
            "--dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    stdin
        .write_all(b"GET /openstack HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r = read_response(&mut out);
    assert_eq!((r.status, r.text().as_str()), (200, "2018-08-27\nlatest"));
    // stdin stays open: the process must still exit on its own.
    let (code, stderr) = finish(child, Duration::from_secs(10));
    drop(stdin);
    assert_eq!(code, 0);
    assert!(stderr.is_empty(), "{stderr}");
    let mut rest = Vec::new();
    out.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn tokens_from_one_process_validate_in_the_next() {
    let dir = metadata_dir();
    let secret = metadata_server::TokenKey::generate().unwrap().to_hex();
    let env = [(metadata_server::token::SECRET_ENV, secret.as_str())];
    let args = [
        "--cloud",
        "ec2",
        "--imds",
        "v2-only",
        "--dir",
        dir.path().to_str().unwrap(),
    ];

    let mut a = spawn(&args, &env);
    let mut out = BufReader::new(a.stdout.take().unwrap());
    a.stdin
        .take()
        .unwrap()
        .write_all(b"PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 300\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r = read_response(&mut out);
    assert_eq!(r.status, 200);
    let token = r.text();
    assert_eq!(finish(a, Duration::from_secs(10)).0, 0);

    let mut b = spawn(&args, &env);
    let mut out = BufReader::new(b.stdout.take().unwrap());
    let mut stdin = b.stdin.take().unwrap();
    stdin
        .write_all(b"GET /latest/meta-data/instance-id HTTP/1.1\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_response(&mut out).status,
        401,
        "v2-only without a token"
    );
    stdin
        .write_all(
            format!("GET /latest/meta-data/instance-id HTTP/1.1\r\nX-aws-ec2-metadata-token: {token}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let r = read_response(&mut out);
    assert_eq!((r.status, r.text().as_str()), (200, INSTANCE_ID));
    drop(stdin);
    assert_eq!(finish(b, Duration::from_secs(10)).0, 0);
}

#[test]
fn stdio_without_a_shared_secret_refuses_to_start() {
    let dir = metadata_dir();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("err.log");
    let mut child = spawn(
        &[
            "--cloud",
            "ec2",
            "--dir",
            dir.path().to_str().unwrap(),
            "--log-file",
            log.to_str().unwrap(),
        ],
        &[],
    );
    let mut stdout = child.stdout.take().unwrap();
    let (code, stderr) = finish(child, Duration::from_secs(10));
    assert_eq!(code, 1);
    assert!(stderr.is_empty(), "{stderr}");
    let mut out = Vec::new();
    stdout.read_to_end(&mut out).unwrap();
    assert!(out.is_empty(), "nothing may reach the guest");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("--token-secret-file"), "{log}");
}

#[test]
fn idle_connection_times_out() {
    let dir = metadata_dir();
    let mut child = spawn(
        &[
            "--cloud",
            "ec2",
            "--imds",
            "v1-only",
            "--dir",
            dir.path().to_str().unwrap(),
            "--idle-timeout-secs",
            "1",
        ],
        &[],
    );
    let _stdin = child.stdin.take().unwrap(); // held open, silent
    let t0 = Instant::now();
    let (code, _) = finish(child, Duration::from_secs(10));
    assert_eq!(code, 0);
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
}

#[test]
fn oversized_request_gets_an_error_then_close() {
    let dir = metadata_dir();
    let mut child = spawn(
        &[
            "--cloud",
            "ec2",
            "--imds",
            "v1-only",
            "--dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let big = format!("GET /{} HTTP/1.1\r\n\r\n", "x".repeat(40_000));
    // The server may close before reading everything; a broken pipe is fine.
    let _ = stdin.write_all(big.as_bytes());
    let r = read_response(&mut out);
    assert_eq!(r.status, 431);
    assert_eq!(r.header("connection"), Some("close"));
    drop(stdin);
    assert_eq!(finish(child, Duration::from_secs(10)).0, 0);
}

/// `--stdio` processes sharing one `--slot-dir`, as QEMU starts them for one VM.
fn spawn_capped(dir: &std::path::Path, slots: &std::path::Path, extra: &[&str]) -> Child {
    let mut args = vec![
        "--cloud",
        "ec2",
        "--imds",
        "v1-only",
        "--dir",
        dir.to_str().unwrap(),
        "--slot-dir",
        slots.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    spawn(&args, &[])
}

#[test]
fn a_connection_flood_gets_at_most_max_connections_handlers() {
    const MAX: usize = 3;
    const FLOOD: usize = 24;
    let dir = metadata_dir();
    let state = tempfile::tempdir().unwrap();
    let slots = state.path().join("slots");
    let max = MAX.to_string();
    // A guest opens FLOOD connections at once and holds them all open without a word.
    let mut children: Vec<Child> = (0..FLOOD)
        .map(|_| spawn_capped(dir.path(), &slots, &["--max-connections", &max]))
        .collect();
    let held: Vec<_> = children.iter_mut().map(|c| c.stdin.take()).collect();

    // Every connection beyond MAX is answered 503 and its process exits right away.
    let t0 = Instant::now();
    let alive = |children: &mut Vec<Child>| {
        children
            .iter_mut()
            .filter_map(|c| c.try_wait().unwrap().is_none().then_some(()))
            .count()
    };
    while alive(&mut children) > MAX {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{} handlers still running with a cap of {MAX}",
            alive(&mut children)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // …and no more than that: MAX stay, serving (the default idle timeout is 30 s).
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(alive(&mut children), MAX);

    let mut served = Vec::new();
    for (mut child, stdin) in children.into_iter().zip(held) {
        let mut out = BufReader::new(child.stdout.take().unwrap());
        if child.try_wait().unwrap().is_some() {
            let r = read_response(&mut out);
            assert_eq!(r.status, 503);
            assert_eq!(r.header("retry-after"), Some("1"));
            let (code, stderr) = finish(child, Duration::from_secs(5));
            assert_eq!(code, 0);
            assert!(stderr.is_empty(), "{stderr}");
        } else {
            let mut stdin = stdin.unwrap();
            stdin
                .write_all(b"GET /latest/meta-data/instance-id HTTP/1.1\r\n\r\n")
                .unwrap();
            let r = read_response(&mut out);
            assert_eq!((r.status, r.text().as_str()), (200, INSTANCE_ID));
            served.push((child, stdin));
        }
    }
    assert_eq!(served.len(), MAX);

    // The flood is over (the guest closes its connections): the server answers again.
    for (child, stdin) in served {
        drop(stdin);
        assert_eq!(finish(child, Duration::from_secs(10)).0, 0);
    }
    let mut child = spawn_capped(dir.path(), &slots, &["--max-connections", &max]);
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    stdin
        .write_all(b"GET /latest/meta-data/instance-id HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r = read_response(&mut out);
    assert_eq!((r.status, r.text().as_str()), (200, INSTANCE_ID));
    assert_eq!(finish(child, Duration::from_secs(10)).0, 0);
}

#[test]
fn a_busy_connection_ends_at_its_time_limit() {
    let dir = metadata_dir();
    let state = tempfile::tempdir().unwrap();
    let slots = state.path().join("slots");
    let mut child = spawn_capped(dir.path(), &slots, &["--max-connection-secs", "2"]);
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    // Keep-alive requests well inside the idle timeout: only the time limit can end it.
    let t0 = Instant::now();
    let mut answered = 0;
    let request = b"GET /latest/meta-data/instance-id HTTP/1.1\r\n\r\n";
    while stdin.write_all(request).is_ok() {
        if out.fill_buf().map_or(true, |b| b.is_empty()) {
            break; // the server closed the connection
        }
        let r = read_response(&mut out);
        assert_eq!((r.status, r.text().as_str()), (200, INSTANCE_ID));
        answered += 1;
        assert!(t0.elapsed() < Duration::from_secs(15), "never closed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = t0.elapsed();
    assert!(answered > 5, "{answered}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(15),
        "{took:?}"
    );
    assert_eq!(finish(child, Duration::from_secs(10)).0, 0);
}

#[test]
fn a_guest_that_stops_reading_cannot_hold_the_process() {
    // A response bigger than the pipe's buffer, never read: the server blocks in write(2),
    // which stdio cannot time out. The process must still end after the time limit.
    let dir = metadata_dir();
    let big = dir.path().join("latest/user-data");
    std::fs::write(&big, vec![b'x'; 4 << 20]).unwrap();
    let state = tempfile::tempdir().unwrap();
    let slots = state.path().join("slots");
    let mut child = spawn_capped(dir.path(), &slots, &["--max-connection-secs", "1"]);
    let mut stdin = child.stdin.take().unwrap();
    let _out = child.stdout.take().unwrap(); // open, never read
    stdin
        .write_all(b"GET /latest/user-data HTTP/1.1\r\n\r\n")
        .unwrap();
    let t0 = Instant::now();
    let (code, stderr) = finish(child, Duration::from_secs(30));
    assert_eq!(code, metadata_server::cli::STDIO_DEADLINE_EXIT, "{stderr}");
    assert!(
        t0.elapsed()
            < Duration::from_secs(1)
                + metadata_server::cli::STDIO_EXIT_GRACE
                + Duration::from_secs(5)
    );
    // The slot is free again.
    assert!(
        metadata_server::slots::try_acquire(&slots, 1)
            .unwrap()
            .is_some()
    );
}
