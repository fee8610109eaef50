//! The `--stdio` mode as QEMU's guestfwd `cmd:` runs it: one process per connection, the
//! connection on stdin/stdout, nothing on stderr.

mod common;

use std::io::{BufReader, Read, Write};
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
