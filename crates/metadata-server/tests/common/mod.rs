//! Helpers shared by the integration tests: a generated metadata directory, the server binary
//! on 127.0.0.1, curl, and a minimal HTTP response reader for the stdio tests. Nothing here
//! ever talks to 169.254.169.254.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use metadata_server::{InstanceSpec, Layout, PublicKey, write_tree};

pub const BIN: &str = env!("CARGO_BIN_EXE_virga-metadata-server");
pub const INSTANCE_ID: &str = "i-0123456789abcdef0";
pub const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests tester@virga";

/// A metadata directory with both the EC2 and the OpenStack trees.
pub fn metadata_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = InstanceSpec::new(INSTANCE_ID, "virga-test");
    spec.public_keys = PublicKey::parse_all(KEY);
    spec.user_data = Some(b"#!/bin/sh\necho hello\n".to_vec());
    spec.availability_zone = Some("virga-1a".into());
    write_tree(
        &spec.generate(Layout::OpenStackService).unwrap(),
        dir.path(),
    )
    .unwrap();
    dir
}

/// A 0600 secret file.
pub fn secret_file(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    metadata_server::TokenKey::generate()
        .unwrap()
        .save_new(&p)
        .unwrap();
    p
}

/// The server binary listening on 127.0.0.1 (killed on drop).
pub struct Server {
    child: Child,
    pub base: String,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning the server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        assert!(base.starts_with("http://127.0.0.1:"), "{base}");
        Server { child, base }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// True while the process is running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What curl saw.
#[derive(Debug)]
pub struct Curl {
    /// curl's exit code (0 ok, 28 timeout, …).
    pub exit: i32,
    /// HTTP status (0 when there was none).
    pub status: u16,
    /// Body.
    pub body: String,
    /// Response headers as printed by `-D -`… kept raw.
    pub headers: String,
    /// curl's stderr.
    pub stderr: String,
}

/// Runs curl with `args` (URLs included); never follows redirects.
pub fn curl(args: &[&str]) -> Curl {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("h");
    let out = match Command::new("curl")
        .args(["-sS", "--noproxy", "*", "-D"])
        .arg(&headers)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("curl not found: apt-get install curl")
        }
        Err(e) => panic!("running curl: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    Curl {
        exit: out.status.code().unwrap_or(-1),
        status: code.trim().parse().unwrap_or(0),
        body: body.to_owned(),
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A response read off a stream.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one `Content-Length`-framed response.
pub fn read_response(r: &mut impl BufRead) -> Resp {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("bad status line {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':').unwrap();
        headers.push((n.to_owned(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    Resp {
        status,
        headers,
        body,
    }
}
