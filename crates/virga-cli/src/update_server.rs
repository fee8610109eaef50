//! `virga update-server DIR`: serves an update repository (`virga release` output) as static
//! files over HTTP/1.1, with single-range `Range` requests so clients resume downloads. Any
//! static web server does the same job; this one exists so tests and `virga run` need nothing
//! else. Connection handling, limits and fault injection (for tests of bad servers) are the
//! metadata server's (`metadata_server::TcpServer`).

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use metadata_server::http::{Body, Method, Status};
use metadata_server::{Fault, FaultKind, Handler, Request, Response, ServerConfig, TcpServer};

/// `virga update-server`.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The repository directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Address to listen on (port 0 picks one); prints `listening on http://ADDR/`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Inject a fault (tests): hang, 500, redirect, slow, garbage.
    #[arg(long, value_name = "KIND")]
    pub fault: Option<FaultKind>,
    /// Only for paths starting with this prefix.
    #[arg(long, value_name = "PREFIX", requires = "fault")]
    pub fault_path: Option<String>,
    /// Delay between bytes for `--fault slow`, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub slow_delay_ms: u64,
    /// Where `--fault redirect` points.
    #[arg(long, value_name = "URL", default_value = "http://other-host.invalid")]
    pub redirect_to: String,
}

/// A `Range` header's meaning for a file of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeReq {
    /// No (usable) range: the whole file.
    Whole,
    /// Bytes `start..=end`.
    Part(u64, u64),
    /// Not satisfiable (416).
    Unsatisfiable,
}

/// Interprets `Range: bytes=…` (one range; several, or other units, serve the whole file as
/// RFC 9110 allows).
pub fn parse_range(header: Option<&str>, len: u64) -> RangeReq {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeReq::Whole;
    };
    if spec.contains(',') {
        return RangeReq::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeReq::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.len() <= 19 && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.is_empty(), num(a), num(b)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                RangeReq::Unsatisfiable
            } else {
                RangeReq::Part(len.saturating_sub(n), len - 1)
            }
        }
        (false, Some(start), end) if b.is_empty() || end.is_some() => {
            if start >= len {
                return RangeReq::Unsatisfiable;
            }
            let end = end.unwrap_or(u64::MAX).min(len - 1);
            if end < start {
                RangeReq::Whole
            } else {
                RangeReq::Part(start, end)
            }
        }
        _ => RangeReq::Whole,
    }
}

/// Serves files under a root.
#[derive(Debug)]
pub struct StaticFiles {
    root: PathBuf,
}

impl StaticFiles {
    /// Files under `root`.
    pub fn new(root: &Path) -> Result<StaticFiles> {
        let root = root
            .canonicalize()
            .with_context(|| format!("cannot open the repository {}", root.display()))?;
        if !root.is_dir() {
            anyhow::bail!("{} is not a directory", root.display());
        }
        Ok(StaticFiles { root })
    }

    /// The file a request path names, if it is a regular file inside the root.
    fn resolve(&self, path: &str) -> Option<PathBuf> {
        let rel = path.strip_prefix('/')?;
        if rel.is_empty()
            || rel.len() > 512
            || !rel
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
            || rel
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == ".." || s.starts_with('.'))
        {
            return None;
        }
        let p = self.root.join(rel).canonicalize().ok()?;
        (p.starts_with(&self.root) && p.is_file()).then_some(p)
    }
}

impl Handler for StaticFiles {
    fn handle(&self, req: &Request, _now: SystemTime) -> Response {
        if !matches!(req.head.method, Method::Get | Method::Head) {
            return Response::error(Status::METHOD_NOT_ALLOWED).with_header("Allow", "GET, HEAD");
        }
        let Some(path) = self.resolve(&req.head.path) else {
            return Response::error(Status::NOT_FOUND);
        };
        let Ok(mut file) = File::open(&path) else {
            return Response::error(Status::NOT_FOUND);
        };
        let Ok(len) = file.metadata().map(|m| m.len()) else {
            return Response::error(Status::INTERNAL_SERVER_ERROR);
        };
        let ctype = if path.extension().is_some_and(|e| e == "json") {
            "application/json"
        } else {
            "application/octet-stream"
        };
        let (status, start, count, range) = match parse_range(req.head.header("range"), len) {
            RangeReq::Whole => (Status::OK, 0, len, None),
            RangeReq::Part(a, b) => (
                Status(206, "Partial Content"),
                a,
                b - a + 1,
                Some(format!("bytes {a}-{b}/{len}")),
            ),
            RangeReq::Unsatisfiable => {
                return Response::error(Status(416, "Range Not Satisfiable"))
                    .with_header("Content-Range", format!("bytes */{len}"));
            }
        };
        if file.seek(SeekFrom::Start(start)).is_err() {
            return Response::error(Status::INTERNAL_SERVER_ERROR);
        }
        let mut resp = Response {
            status,
            headers: vec![
                ("Content-Type".into(), ctype.into()),
                ("Accept-Ranges".into(), "bytes".into()),
            ],
            body: Body::File { file, len: count },
        };
        if let Some(r) = range {
            resp = resp.with_header("Content-Range", r);
        }
        resp
    }
}

/// Runs `virga update-server` until killed.
pub fn run(args: ServerArgs) -> Result<()> {
    let files = StaticFiles::new(&args.dir)?;
    let fault = args.fault.map(|kind| Fault {
        path_prefix: args.fault_path.clone(),
        redirect_to: args.redirect_to.clone(),
        slow_delay: Duration::from_millis(args.slow_delay_ms),
        ..Fault::new(kind)
    });
    let cfg = ServerConfig {
        fault,
        ..ServerConfig::default()
    };
    let server = TcpServer::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let bound = server.local_addr()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on http://{bound}/")?;
    out.flush()?;
    drop(out);
    server
        .run(Arc::new(files), Arc::new(cfg))
        .with_context(|| format!("serving on {bound}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeReq::*;
        assert_eq!(parse_range(None, 100), Whole);
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Part(0, 9));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Part(90, 99));
        assert_eq!(parse_range(Some("bytes=90-1000"), 100), Part(90, 99));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Part(90, 99));
        assert_eq!(parse_range(Some("bytes=-1000"), 100), Part(0, 99));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-1"), 100), Whole);
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Whole);
        assert_eq!(parse_range(Some("items=0-1"), 100), Whole);
        assert_eq!(parse_range(Some("bytes=a-b"), 100), Whole);
        assert_eq!(parse_range(Some("bytes=99999999999999999999-"), 100), Whole);
        assert_eq!(parse_range(Some("bytes=0-0"), 0), Unsatisfiable);
    }

    #[test]
    fn paths_stay_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("channels")).unwrap();
        std::fs::write(d.path().join("channels/stable.json"), b"{}").unwrap();
        std::fs::write(d.path().join(".secret"), b"x").unwrap();
        let s = StaticFiles::new(d.path()).unwrap();
        assert!(s.resolve("/channels/stable.json").is_some());
        for bad in [
            "/",
            "/channels",
            "/../etc/passwd",
            "/channels/../.secret",
            "/.secret",
            "channels/stable.json",
            "/channels//stable.json",
            "/channels/%2e%2e/x",
        ] {
            assert!(s.resolve(bad).is_none(), "{bad}");
        }
    }
}
