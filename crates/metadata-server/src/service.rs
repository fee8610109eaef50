//! The metadata service: EC2 IMDS and OpenStack metadata answered from a directory laid out
//! the way the cloud serves it (see `docs/metadata-server.md`).
//!
//! - EC2: `DIR/<version>/meta-data/…`, `DIR/<version>/user-data`, `DIR/<version>/dynamic/…`.
//!   `<version>` is `latest` or a date (`2009-04-04`); a version that is not on disk is served
//!   from `latest`, or else from the newest dated version, so a tree captured once answers
//!   every version a client probes. Directories list their entries one per line,
//!   sub-directories with a trailing `/`; `meta-data/public-keys/` lists `N=name` (directory
//!   `N=name` or plain `N`), and `public-keys/N/…` finds either. IMDSv2 tokens: see
//!   [`ImdsMode`].
//! - OpenStack: `DIR/openstack/<version>/{meta_data.json,user_data,vendor_data.json,
//!   vendor_data2.json,network_data.json}`; `/openstack` lists the versions present plus
//!   `latest`. Nova also serves the EC2 tree, and so does `Cloud::OpenStack` when `DIR` has
//!   one.
//!
//! Paths are never taken at face value: components starting with `.` are refused, and every
//! resolved path is canonicalised and must stay inside `DIR` (symlinks cannot escape it).

use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::SystemTime;

use crate::MetadataServerError;
use crate::conn::Handler;
use crate::http::{Body, Method, Request, Response, Status};
use crate::token::{MAX_TTL, MIN_TTL, TokenKey};

/// Request header carrying an IMDSv2 token.
pub const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
/// Request header asking for a token lifetime (and response header echoing it).
pub const TOKEN_TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
/// The token endpoint.
pub const TOKEN_PATH: &str = "/latest/api/token";

/// EC2 metadata versions listed at `/` (plus any dated version present on disk).
pub const EC2_VERSIONS: &[&str] = &[
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
    "2011-01-01",
    "2011-05-01",
    "2012-01-12",
    "2014-02-25",
    "2014-11-05",
    "2015-10-20",
    "2016-04-19",
    "2016-06-30",
    "2016-09-02",
    "2018-03-28",
    "2018-08-17",
    "2018-09-24",
    "2019-10-01",
    "2020-10-27",
    "2021-01-03",
    "2021-03-23",
    "2021-07-15",
    "2022-09-24",
];

/// Default limit on a served file (user-data is 16 KiB on EC2, 64 KiB on OpenStack).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Which cloud's metadata service to emulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cloud {
    /// EC2 IMDS: the versioned tree and IMDSv2 tokens.
    Ec2,
    /// OpenStack (Nova) metadata service: `/openstack/…`, plus the EC2 tree when present.
    OpenStack,
}

impl Cloud {
    /// The IMDS mode used when none is given: tokens for EC2, none for OpenStack (Nova has
    /// no token endpoint).
    pub fn default_imds(self) -> ImdsMode {
        match self {
            Cloud::Ec2 => ImdsMode::V1AndV2,
            Cloud::OpenStack => ImdsMode::V1Only,
        }
    }
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cloud::Ec2 => "ec2",
            Cloud::OpenStack => "openstack",
        })
    }
}

impl FromStr for Cloud {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ec2" | "aws" => Ok(Cloud::Ec2),
            "openstack" => Ok(Cloud::OpenStack),
            other => Err(format!("unknown cloud {other:?} (ec2 or openstack)")),
        }
    }
}

/// How the service treats IMDSv2 session tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImdsMode {
    /// AWS `HttpTokens=optional`: `PUT /latest/api/token` issues tokens; a GET may omit the
    /// token, but a token it carries must be valid (else `401`).
    V1AndV2,
    /// AWS `HttpTokens=required`: every GET needs a valid token (else `401`).
    V2Only,
    /// An EC2-compatible service without IMDSv2 (older or non-AWS implementations): the token
    /// endpoint answers `404`, so clients fall back to IMDSv1, and token headers are ignored.
    /// (AWS's own `403` on the token request means "IMDS disabled", which cloud-init treats
    /// as fatal: that is [`ImdsMode::Disabled`].)
    V1Only,
    /// AWS `HttpEndpoint=disabled`: every request answers `403`.
    Disabled,
}

impl fmt::Display for ImdsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImdsMode::V1AndV2 => "v1-and-v2",
            ImdsMode::V2Only => "v2-only",
            ImdsMode::V1Only => "v1-only",
            ImdsMode::Disabled => "disabled",
        })
    }
}

impl FromStr for ImdsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v1-and-v2" => Ok(ImdsMode::V1AndV2),
            "v2-only" => Ok(ImdsMode::V2Only),
            "v1-only" => Ok(ImdsMode::V1Only),
            "disabled" => Ok(ImdsMode::Disabled),
            other => Err(format!(
                "unknown IMDS mode {other:?} (v1-and-v2, v2-only, v1-only, disabled)"
            )),
        }
    }
}

impl ImdsMode {
    fn issues_tokens(self) -> bool {
        matches!(self, ImdsMode::V1AndV2 | ImdsMode::V2Only)
    }
}

/// The metadata service: a [`Handler`] answering from a directory.
#[derive(Debug)]
pub struct MetadataService {
    cloud: Cloud,
    imds: ImdsMode,
    root: PathBuf,
    token_key: Option<TokenKey>,
    max_file_bytes: u64,
}

impl MetadataService {
    /// A service for `cloud` answering from `dir`. `token_key` is required when `imds`
    /// issues tokens ([`ImdsMode::V1AndV2`], [`ImdsMode::V2Only`]).
    pub fn new(
        cloud: Cloud,
        dir: &Path,
        imds: ImdsMode,
        token_key: Option<TokenKey>,
    ) -> Result<Self, MetadataServerError> {
        let root = fs::canonicalize(dir).map_err(|source| MetadataServerError::Io {
            context: format!("opening the metadata directory {}", dir.display()),
            source,
        })?;
        if !root.is_dir() {
            return Err(MetadataServerError::NotADirectory(dir.to_path_buf()));
        }
        if imds.issues_tokens() && token_key.is_none() {
            return Err(MetadataServerError::NoTokenKey);
        }
        let svc = MetadataService {
            cloud,
            imds,
            root,
            token_key,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        };
        if svc.ec2_versions_present().is_empty() && cloud == Cloud::Ec2 {
            tracing::warn!(dir = %dir.display(), "no EC2 version directory (latest/, 2009-04-04/, …): every request will be 404");
        }
        if cloud == Cloud::OpenStack && !svc.root.join("openstack").is_dir() {
            tracing::warn!(dir = %dir.display(), "no openstack/ directory: /openstack requests will be 404");
        }
        Ok(svc)
    }

    /// Changes the largest file served (larger ones answer `500`).
    pub fn with_max_file_bytes(mut self, max: u64) -> Self {
        self.max_file_bytes = max;
        self
    }

    /// The cloud emulated.
    pub fn cloud(&self) -> Cloud {
        self.cloud
    }

    /// The IMDS token mode.
    pub fn imds(&self) -> ImdsMode {
        self.imds
    }

    fn route(&self, req: &Request, now: u64) -> Response {
        let path = req.head.path.as_str();
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if segs.iter().any(|s| s.starts_with('.')) {
            return Response::error(Status::NOT_FOUND);
        }
        if self.imds == ImdsMode::Disabled {
            return Response::error(Status::FORBIDDEN);
        }
        if segs == ["latest", "api", "token"] {
            return self.token_endpoint(req, now);
        }
        match req.head.method {
            Method::Get | Method::Head => {}
            _ => {
                return Response::error(Status::METHOD_NOT_ALLOWED)
                    .with_header("Allow", "GET, HEAD");
            }
        }
        if let Err(r) = self.check_token(req, now) {
            return r;
        }
        match segs.split_first() {
            None => self.root_listing(),
            Some((&"openstack", rest)) if self.cloud == Cloud::OpenStack => self.openstack(rest),
            Some((v, rest)) if is_ec2_version(v) => {
                match resolve_version(&self.root, v, is_ec2_version) {
                    Some(vdir) => self.serve(&vdir, rest, true),
                    None => Response::error(Status::NOT_FOUND),
                }
            }
            _ => Response::error(Status::NOT_FOUND),
        }
    }

    fn token_endpoint(&self, req: &Request, now: u64) -> Response {
        let Some(key) = self
            .token_key
            .as_ref()
            .filter(|_| self.imds.issues_tokens())
        else {
            return Response::error(Status::NOT_FOUND);
        };
        if req.head.method != Method::Put {
            return Response::error(Status::METHOD_NOT_ALLOWED).with_header("Allow", "PUT");
        }
        if req.head.has_header("x-forwarded-for") {
            tracing::warn!("token request with X-Forwarded-For refused (403), as AWS does");
            return Response::error(Status::FORBIDDEN);
        }
        let ttl = req
            .head
            .header(TOKEN_TTL_HEADER)
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|t| (MIN_TTL..=MAX_TTL).contains(t));
        let Some(ttl) = ttl else {
            tracing::info!(
                header = req.head.header(TOKEN_TTL_HEADER).unwrap_or("(missing)"),
                "token request without a valid TTL (1..21600): 400"
            );
            return Response::error(Status::BAD_REQUEST);
        };
        Response::text(Status::OK, key.issue(now, ttl))
            .with_header("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", ttl.to_string())
    }

    fn check_token(&self, req: &Request, now: u64) -> Result<(), Response> {
        let token = req.head.header(TOKEN_HEADER);
        let key = match self.imds {
            ImdsMode::V1Only | ImdsMode::Disabled => return Ok(()),
            ImdsMode::V1AndV2 | ImdsMode::V2Only => self.token_key.as_ref(),
        };
        match (token, key) {
            (None, _) if self.imds == ImdsMode::V2Only => {
                tracing::info!(path = %req.head.path, "no token and IMDSv2 is required: 401");
                Err(Response::error(Status::UNAUTHORIZED))
            }
            (None, _) => Ok(()),
            (Some(t), Some(key)) => key.validate(t, now).map_err(|e| {
                tracing::info!(path = %req.head.path, error = %e, "token refused: 401");
                Response::error(Status::UNAUTHORIZED)
            }),
            (Some(_), None) => Err(Response::error(Status::UNAUTHORIZED)),
        }
    }

    fn ec2_versions_present(&self) -> Vec<String> {
        dir_names(&self.root)
            .into_iter()
            .filter(|(n, is_dir)| *is_dir && is_ec2_version(n))
            .map(|(n, _)| n)
            .collect()
    }

    fn root_listing(&self) -> Response {
        let present = self.ec2_versions_present();
        let mut lines: Vec<String> = Vec::new();
        if !present.is_empty() {
            let mut versions: Vec<String> = EC2_VERSIONS.iter().map(|v| (*v).to_owned()).collect();
            versions.extend(present.into_iter().filter(|v| v != "latest"));
            versions.sort_by(|a, b| version_key(a).cmp(&version_key(b)));
            versions.dedup();
            lines.extend(versions);
            lines.push("latest".into());
        }
        if self.cloud == Cloud::OpenStack && self.root.join("openstack").is_dir() {
            lines.push("openstack".into());
        }
        if lines.is_empty() {
            return Response::error(Status::NOT_FOUND);
        }
        Response::text(Status::OK, lines.join("\n"))
    }

    fn openstack(&self, rest: &[&str]) -> Response {
        let base = self.root.join("openstack");
        if !base.is_dir() {
            return Response::error(Status::NOT_FOUND);
        }
        let Some((first, rest)) = rest.split_first() else {
            let mut versions: Vec<String> = dir_names(&base)
                .into_iter()
                .filter(|(n, is_dir)| *is_dir && is_date(n))
                .map(|(n, _)| n)
                .collect();
            versions.sort();
            let any = !versions.is_empty() || base.join("latest").is_dir();
            if any {
                versions.push("latest".into());
            }
            return Response::text(Status::OK, versions.join("\n"));
        };
        if is_openstack_version(first) {
            match resolve_version(&base, first, is_openstack_version) {
                Some(vdir) => self.serve(&vdir, rest, false),
                None => Response::error(Status::NOT_FOUND),
            }
        } else {
            // `openstack/content/NNNN` (injected files) and anything else present.
            self.serve(&base, &[&[*first], rest].concat(), false)
        }
    }

    /// Serves `rest` below `base`: a file, or a directory listing.
    fn serve(&self, base: &Path, rest: &[&str], ec2: bool) -> Response {
        let mut cur = base.to_path_buf();
        for seg in rest {
            let next = cur.join(seg);
            let in_public_keys = cur.file_name().is_some_and(|n| n == "public-keys");
            cur = if ec2 && in_public_keys && !next.exists() && is_index(seg) {
                match find_indexed(&cur, seg) {
                    Some(p) => p,
                    None => return Response::error(Status::NOT_FOUND),
                }
            } else {
                next
            };
        }
        let Ok(real) = fs::canonicalize(&cur) else {
            return Response::error(Status::NOT_FOUND);
        };
        if !real.starts_with(&self.root) {
            tracing::warn!(path = %cur.display(), target = %real.display(), "refusing a path that leaves the metadata directory");
            return Response::error(Status::NOT_FOUND);
        }
        let Ok(meta) = fs::metadata(&real) else {
            return Response::error(Status::NOT_FOUND);
        };
        if meta.is_dir() {
            let public_keys = ec2 && real.file_name().is_some_and(|n| n == "public-keys");
            return Response::text(Status::OK, listing(&real, public_keys).join("\n"));
        }
        if !meta.is_file() {
            return Response::error(Status::NOT_FOUND);
        }
        if meta.len() > self.max_file_bytes {
            tracing::warn!(path = %real.display(), size = meta.len(), max = self.max_file_bytes, "file too large to serve: 500");
            return Response::error(Status::INTERNAL_SERVER_ERROR);
        }
        let file = match File::open(&real) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %real.display(), error = %e, "cannot open: 500");
                return Response::error(Status::INTERNAL_SERVER_ERROR);
            }
        };
        let name = real.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let content_type = if name.ends_with(".json") {
            "application/json"
        } else if matches!(name, "user-data" | "user_data") {
            "application/octet-stream"
        } else {
            "text/plain"
        };
        Response {
            status: Status::OK,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: Body::File {
                file,
                len: meta.len(),
            },
        }
    }
}

impl Handler for MetadataService {
    fn handle(&self, req: &Request, now: SystemTime) -> Response {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.route(req, now)
    }
}

/// `YYYY-MM-DD`.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

fn is_ec2_version(s: &str) -> bool {
    s == "latest" || s == "1.0" || is_date(s)
}

fn is_openstack_version(s: &str) -> bool {
    s == "latest" || is_date(s)
}

fn is_index(s: &str) -> bool {
    !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Sort key putting `1.0` before the dates.
fn version_key(v: &str) -> (u8, &str) {
    (u8::from(v != "1.0"), v)
}

/// The directory serving version `v` under `base`: `base/v` when present, else `latest`, else
/// the newest dated version.
fn resolve_version(base: &Path, v: &str, is_version: fn(&str) -> bool) -> Option<PathBuf> {
    let direct = base.join(v);
    if direct.is_dir() {
        return Some(direct);
    }
    let latest = base.join("latest");
    if latest.is_dir() {
        return Some(latest);
    }
    dir_names(base)
        .into_iter()
        .filter(|(n, is_dir)| *is_dir && n != "latest" && is_version(n))
        .map(|(n, _)| n)
        .max_by(|a, b| version_key(a).cmp(&version_key(b)))
        .map(|n| base.join(n))
}

/// In `public-keys/`, the entry for index `idx`: a directory named `idx=name`.
fn find_indexed(dir: &Path, idx: &str) -> Option<PathBuf> {
    let prefix = format!("{idx}=");
    dir_names(dir)
        .into_iter()
        .find(|(n, _)| n.starts_with(&prefix))
        .map(|(n, _)| dir.join(n))
}

/// Visible entries of `dir` as (name, is_dir), sorted; hidden names and names that would
/// break a line-per-entry listing are skipped. Bounded to 10 000 entries.
fn dir_names(dir: &Path) -> Vec<(String, bool)> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, bool)> = rd
        .filter_map(Result::ok)
        .take(10_000)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if name.starts_with('.') || name.chars().any(char::is_control) {
                return None;
            }
            // Follow symlinks for the type; `serve` checks where they lead.
            let is_dir = fs::metadata(e.path()).ok()?.is_dir();
            Some((name, is_dir))
        })
        .collect();
    out.sort();
    out
}

/// A directory listing, EC2 style: one entry per line, directories with a trailing `/`.
/// `public-keys/` lists `N=name`, by index.
fn listing(dir: &Path, public_keys: bool) -> Vec<String> {
    let names = dir_names(dir);
    if public_keys {
        let mut keys: Vec<(u64, String)> = names
            .into_iter()
            .filter_map(|(n, _)| {
                let (idx, name) = match n.split_once('=') {
                    Some((i, name)) => (i.to_owned(), name.to_owned()),
                    None => (n.clone(), format!("key-{n}")),
                };
                let i: u64 = idx.parse().ok().filter(|_| is_index(&idx))?;
                Some((i, format!("{i}={name}")))
            })
            .collect();
        keys.sort();
        return keys.into_iter().map(|(_, l)| l).collect();
    }
    names
        .into_iter()
        .map(|(n, is_dir)| if is_dir { format!("{n}/") } else { n })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Limits, parse_head};
    use std::io::Read;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let w = |p: &str, c: &str| {
            let p = d.path().join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, c).unwrap();
        };
        w("2009-04-04/meta-data/instance-id", "i-old");
        w("latest/meta-data/instance-id", "i-0123456789abcdef0");
        w("latest/meta-data/local-hostname", "vm1");
        w("latest/meta-data/placement/availability-zone", "virga-1a");
        w(
            "latest/meta-data/public-keys/0=mykey/openssh-key",
            "ssh-ed25519 AAAA me\n",
        );
        w(
            "latest/meta-data/public-keys/1/openssh-key",
            "ssh-rsa BBBB you\n",
        );
        w("latest/user-data", "#!/bin/sh\n");
        w("latest/.hidden", "no");
        w("openstack/2012-08-10/meta_data.json", "{\"uuid\":\"old\"}");
        w("openstack/latest/meta_data.json", "{\"uuid\":\"u\"}");
        w("openstack/content/0000", "file");
        w("secret-outside-versions", "x");
        d
    }

    fn get(svc: &MetadataService, raw: &str) -> (u16, String, Vec<(String, String)>) {
        get_at(svc, raw, 1_000)
    }

    fn get_at(svc: &MetadataService, raw: &str, now: u64) -> (u16, String, Vec<(String, String)>) {
        let (head, _) = parse_head(raw.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap();
        let r = svc.route(
            &Request {
                head,
                body: Vec::new(),
            },
            now,
        );
        let body = match r.body {
            Body::Bytes(b) => String::from_utf8(b).unwrap(),
            Body::File { mut file, .. } => {
                let mut s = String::new();
                file.read_to_string(&mut s).unwrap();
                s
            }
        };
        (r.status.0, body, r.headers)
    }

    fn ec2(d: &tempfile::TempDir, mode: ImdsMode) -> MetadataService {
        MetadataService::new(
            Cloud::Ec2,
            d.path(),
            mode,
            Some(TokenKey::from_bytes([3; 32])),
        )
        .unwrap()
    }

    #[test]
    fn ec2_files_listings_and_aliases() {
        let d = tree();
        let s = ec2(&d, ImdsMode::V1AndV2);
        let g = |p: &str| get(&s, &format!("GET {p} HTTP/1.1\r\n\r\n"));
        assert_eq!(g("/latest/meta-data/instance-id").1, "i-0123456789abcdef0");
        assert_eq!(g("/2009-04-04/meta-data/instance-id").1, "i-old");
        // Versions not on disk come from `latest`.
        assert_eq!(
            g("/2021-03-23/meta-data/instance-id").1,
            "i-0123456789abcdef0"
        );
        let (st, body, _) = g("/latest/meta-data/");
        assert_eq!(st, 200);
        assert_eq!(
            body,
            "instance-id\nlocal-hostname\nplacement/\npublic-keys/"
        );
        assert_eq!(
            g("/latest/meta-data").1,
            body,
            "no trailing slash lists too"
        );
        assert_eq!(g("/latest/meta-data/public-keys/").1, "0=mykey\n1=key-1");
        assert_eq!(g("/latest/meta-data/public-keys/0/").1, "openssh-key");
        assert_eq!(
            g("/latest/meta-data/public-keys/0/openssh-key").1,
            "ssh-ed25519 AAAA me\n"
        );
        assert_eq!(
            g("/latest/meta-data/public-keys/1/openssh-key").1,
            "ssh-rsa BBBB you\n"
        );
        assert_eq!(g("/latest/").1, "meta-data/\nuser-data");
        let (_, root, _) = g("/");
        assert!(root.starts_with("1.0\n2007-01-19\n"), "{root}");
        assert!(root.ends_with("\n2022-09-24\nlatest"), "{root}");
        assert_eq!(g("/latest/user-data").2[0].1, "application/octet-stream");
    }

    #[test]
    fn ec2_refusals() {
        let d = tree();
        let s = ec2(&d, ImdsMode::V1AndV2);
        let g = |p: &str| get(&s, &format!("GET {p} HTTP/1.1\r\n\r\n")).0;
        for p in [
            "/latest/meta-data/nope",
            "/latest/.hidden",
            "/latest/../secret-outside-versions",
            "/secret-outside-versions",
            "/openstack/latest/meta_data.json",
            "/latest/meta-data/public-keys/7/openssh-key",
        ] {
            assert_eq!(g(p), 404, "{p}");
        }
        assert_eq!(get(&s, "POST /latest/meta-data/ HTTP/1.1\r\n\r\n").0, 405);
        assert_eq!(get(&s, "PUT /latest/meta-data/ HTTP/1.1\r\n\r\n").0, 405);
    }

    #[test]
    fn symlinks_cannot_escape() {
        let d = tree();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("passwd"), "root:x").unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("passwd"),
            d.path().join("latest/meta-data/leak"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            d.path().join("latest/meta-data/local-hostname"),
            d.path().join("latest/meta-data/hostname"),
        )
        .unwrap();
        let s = ec2(&d, ImdsMode::V1AndV2);
        assert_eq!(
            get(&s, "GET /latest/meta-data/leak HTTP/1.1\r\n\r\n").0,
            404
        );
        assert_eq!(
            get(&s, "GET /latest/meta-data/hostname HTTP/1.1\r\n\r\n").1,
            "vm1"
        );
    }

    fn put_token(s: &MetadataService, extra: &str, now: u64) -> (u16, String) {
        let (st, body, _) = get_at(
            s,
            &format!("PUT /latest/api/token HTTP/1.1\r\n{extra}\r\n"),
            now,
        );
        (st, body)
    }

    #[test]
    fn imds_v2_tokens() {
        let d = tree();
        let s = ec2(&d, ImdsMode::V1AndV2);
        let (st, token) = put_token(&s, "X-aws-ec2-metadata-token-ttl-seconds: 60\r\n", 1_000);
        assert_eq!(st, 200);
        let with = |t: &str, now| {
            get_at(
                &s,
                &format!("GET /latest/meta-data/instance-id HTTP/1.1\r\nX-aws-ec2-metadata-token: {t}\r\n\r\n"),
                now,
            )
            .0
        };
        assert_eq!(with(&token, 1_030), 200);
        assert_eq!(with(&token, 1_060), 401, "expired");
        assert_eq!(with("garbage", 1_000), 401);
        assert_eq!(
            get(&s, "GET /latest/meta-data/instance-id HTTP/1.1\r\n\r\n").0,
            200,
            "v1 still allowed"
        );

        for bad in [
            "",
            "X-aws-ec2-metadata-token-ttl-seconds: 0\r\n",
            "X-aws-ec2-metadata-token-ttl-seconds: 21601\r\n",
            "X-aws-ec2-metadata-token-ttl-seconds: x\r\n",
        ] {
            assert_eq!(put_token(&s, bad, 0).0, 400, "{bad:?}");
        }
        let xff = "X-aws-ec2-metadata-token-ttl-seconds: 60\r\nX-Forwarded-For: 1.2.3.4\r\n";
        assert_eq!(put_token(&s, xff, 0).0, 403);
        assert_eq!(get(&s, "GET /latest/api/token HTTP/1.1\r\n\r\n").0, 405);

        // A token from another process with the same secret validates here.
        let other = ec2(&d, ImdsMode::V2Only);
        let (_, t2) = put_token(
            &other,
            "X-aws-ec2-metadata-token-ttl-seconds: 21600\r\n",
            1_000,
        );
        assert_eq!(with(&t2, 2_000), 200);
    }

    #[test]
    fn imds_modes() {
        let d = tree();
        let v2 = ec2(&d, ImdsMode::V2Only);
        assert_eq!(
            get(&v2, "GET /latest/meta-data/instance-id HTTP/1.1\r\n\r\n").0,
            401
        );
        let v1 = ec2(&d, ImdsMode::V1Only);
        assert_eq!(
            put_token(&v1, "X-aws-ec2-metadata-token-ttl-seconds: 60\r\n", 0).0,
            404
        );
        assert_eq!(
            get(&v1, "GET /latest/meta-data/instance-id HTTP/1.1\r\nX-aws-ec2-metadata-token: junk\r\n\r\n").0,
            200,
            "v1-only ignores tokens"
        );
        let off = ec2(&d, ImdsMode::Disabled);
        assert_eq!(
            get(&off, "GET /latest/meta-data/instance-id HTTP/1.1\r\n\r\n").0,
            403
        );
        assert!(matches!(
            MetadataService::new(Cloud::Ec2, d.path(), ImdsMode::V2Only, None),
            Err(MetadataServerError::NoTokenKey)
        ));
    }

    #[test]
    fn openstack_service() {
        let d = tree();
        let s = MetadataService::new(Cloud::OpenStack, d.path(), ImdsMode::V1Only, None).unwrap();
        let g = |p: &str| get(&s, &format!("GET {p} HTTP/1.1\r\n\r\n"));
        assert_eq!(g("/openstack").1, "2012-08-10\nlatest");
        assert_eq!(g("/openstack/").1, "2012-08-10\nlatest");
        assert_eq!(g("/openstack/latest/meta_data.json").1, "{\"uuid\":\"u\"}");
        assert_eq!(
            g("/openstack/latest/meta_data.json").2[0].1,
            "application/json"
        );
        assert_eq!(
            g("/openstack/2012-08-10/meta_data.json").1,
            "{\"uuid\":\"old\"}"
        );
        assert_eq!(
            g("/openstack/2018-08-27/meta_data.json").1,
            "{\"uuid\":\"u\"}"
        );
        assert_eq!(g("/openstack/latest/user_data").0, 404);
        assert_eq!(g("/openstack/latest").1, "meta_data.json");
        assert_eq!(g("/openstack/content/0000").1, "file");
        // The EC2 tree is served too, as Nova does.
        assert_eq!(g("/latest/meta-data/instance-id").1, "i-0123456789abcdef0");
        assert!(g("/").1.ends_with("latest\nopenstack"));
        assert_eq!(
            put_token(&s, "X-aws-ec2-metadata-token-ttl-seconds: 60\r\n", 0).0,
            404
        );
    }

    #[test]
    fn latest_aliases_newest_dated_version() {
        let d = tempfile::tempdir().unwrap();
        for v in ["2009-04-04", "2016-09-02"] {
            fs::create_dir_all(d.path().join(v).join("meta-data")).unwrap();
            fs::write(d.path().join(v).join("meta-data/instance-id"), v).unwrap();
        }
        let s = ec2(&d, ImdsMode::V1AndV2);
        let g = |p: &str| get(&s, &format!("GET {p} HTTP/1.1\r\n\r\n")).1;
        assert_eq!(g("/latest/meta-data/instance-id"), "2016-09-02");
        assert_eq!(g("/2009-04-04/meta-data/instance-id"), "2009-04-04");
        assert_eq!(g("/2021-03-23/meta-data/instance-id"), "2016-09-02");
    }

    #[test]
    fn version_names() {
        assert!(is_date("2009-04-04") && !is_date("2009-4-04") && !is_date("latest"));
        assert!(is_ec2_version("1.0") && !is_openstack_version("1.0"));
        assert!(is_index("0") && !is_index("") && !is_index("0=x") && !is_index("1234567890"));
    }
}
