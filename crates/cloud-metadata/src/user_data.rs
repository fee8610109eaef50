//! User-data (and vendor-data) decoding: gzip, MIME multipart, `#cloud-config-archive`, and
//! classification of each part by its header line or content type.
//!
//! The procedure follows cloud-init's `user_data.py`:
//! 1. gzip data (magic `1f 8b`) is decompressed, within [`Limits::max_decoded_bytes`].
//! 2. If `mime-version:` appears in the first 4096 bytes (or the data starts with
//!    `Content-Type:`), it is a MIME message: multiparts are walked (nested up to
//!    [`Limits::max_user_data_depth`]), `base64` / `quoted-printable` bodies decoded, gzip
//!    parts (`application/x-gzip` …) decompressed.
//! 3. Each part's kind comes from its content type; `text/plain`, `text/x-not-multipart`,
//!    `text/x-shellscript`, `application/octet-stream` and untyped parts are classified by their
//!    first line instead (`#!`, `#cloud-config`, `#include` …, leading blanks skipped,
//!    case-insensitive, longest prefix first).
//! 4. `#cloud-config-archive` parts are expanded into their entries (untyped entries default
//!    to `text/cloud-config`, as in cloud-init).
//!
//! Nothing is executed or fetched here: `#include` parts carry their URLs
//! ([`Part::include_urls`]) for the driver to fetch and feed back through [`parse_user_data`].

use serde::{Deserialize, Serialize};

use crate::model::{decode_base64, gunzip_bounded};
use crate::value::{Node, parse_yaml_capped, yaml_top_level_scalar};
use crate::{Limits, MetadataError};

/// The kind of one user-data part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartKind {
    /// `#!…` / `text/x-shellscript`: a script run once per instance (by default).
    ShellScript,
    /// `#cloud-config` / `text/cloud-config`: YAML configuration ([`crate::cloud_config`]).
    CloudConfig,
    /// `#cloud-boothook` / `text/cloud-boothook`: a script run early, every boot.
    CloudBoothook,
    /// `#include` / `text/x-include-url`: URLs to fetch and process as user-data.
    Include,
    /// `#include-once` / `text/x-include-once-url`: URLs fetched once per instance.
    IncludeOnce,
    /// `## template: jinja` / `text/jinja2`: not supported (warning).
    JinjaTemplate,
    /// `#part-handler` / `text/part-handler`: Python part handlers, not supported (warning).
    PartHandler,
    /// `#upstart-job` / `text/upstart-job`: not supported (warning).
    UpstartJob,
    /// `#cloud-config-jsonp` / `text/cloud-config-jsonp`: JSON patch, not supported (warning).
    CloudConfigJsonp,
    /// Plain text with no known header: ignored (warning), as cloud-init does.
    Plain,
    /// Any other content type (kept, with a warning).
    Other(String),
}

impl PartKind {
    /// cloud-init's content type for this kind.
    pub fn content_type(&self) -> &str {
        match self {
            PartKind::ShellScript => "text/x-shellscript",
            PartKind::CloudConfig => "text/cloud-config",
            PartKind::CloudBoothook => "text/cloud-boothook",
            PartKind::Include => "text/x-include-url",
            PartKind::IncludeOnce => "text/x-include-once-url",
            PartKind::JinjaTemplate => "text/jinja2",
            PartKind::PartHandler => "text/part-handler",
            PartKind::UpstartJob => "text/upstart-job",
            PartKind::CloudConfigJsonp => "text/cloud-config-jsonp",
            PartKind::Plain => "text/plain",
            PartKind::Other(ct) => ct,
        }
    }

    /// Whether virga acts on this kind.
    pub fn is_supported(&self) -> bool {
        matches!(
            self,
            PartKind::ShellScript
                | PartKind::CloudConfig
                | PartKind::CloudBoothook
                | PartKind::Include
                | PartKind::IncludeOnce
        )
    }
}

/// Header prefixes, longest first so `#cloud-config-archive` wins over `#cloud-config`.
const STARTS_WITH: &[(&str, Detected)] = &[
    ("#cloud-config-archive", Detected::Archive),
    (
        "## template: jinja",
        Detected::Kind(PartKind::JinjaTemplate),
    ),
    (
        "#cloud-config-jsonp",
        Detected::Kind(PartKind::CloudConfigJsonp),
    ),
    ("#cloud-boothook", Detected::Kind(PartKind::CloudBoothook)),
    ("#include-once", Detected::Kind(PartKind::IncludeOnce)),
    ("#cloud-config", Detected::Kind(PartKind::CloudConfig)),
    ("#part-handler", Detected::Kind(PartKind::PartHandler)),
    ("#upstart-job", Detected::Kind(PartKind::UpstartJob)),
    ("#include", Detected::Kind(PartKind::Include)),
    ("#!", Detected::Kind(PartKind::ShellScript)),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Detected {
    Kind(PartKind),
    Archive,
}

/// Classifies data by its first characters (leading whitespace skipped, case-insensitive).
fn detect(data: &[u8]) -> Option<Detected> {
    let start = data
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(data.len());
    let head = &data[start..data.len().min(start + 32)];
    STARTS_WITH
        .iter()
        .find(|(p, _)| head.len() >= p.len() && head[..p.len()].eq_ignore_ascii_case(p.as_bytes()))
        .map(|(_, d)| d.clone())
}

/// Content type → kind (`None` for types whose kind comes from the content).
fn from_content_type(ct: &str) -> Option<Detected> {
    Some(match ct {
        "text/plain"
        | "text/x-not-multipart"
        | "text/x-shellscript"
        | "application/octet-stream"
        | "" => {
            return None;
        }
        "text/cloud-config" => Detected::Kind(PartKind::CloudConfig),
        "text/cloud-boothook" => Detected::Kind(PartKind::CloudBoothook),
        "text/x-include-url" => Detected::Kind(PartKind::Include),
        "text/x-include-once-url" => Detected::Kind(PartKind::IncludeOnce),
        "text/cloud-config-archive" => Detected::Archive,
        "text/jinja2" => Detected::Kind(PartKind::JinjaTemplate),
        "text/part-handler" => Detected::Kind(PartKind::PartHandler),
        "text/upstart-job" => Detected::Kind(PartKind::UpstartJob),
        "text/cloud-config-jsonp" => Detected::Kind(PartKind::CloudConfigJsonp),
        other => Detected::Kind(PartKind::Other(other.to_owned())),
    })
}

const GZIP_TYPES: &[&str] = &[
    "application/gzip",
    "application/gzip-compressed",
    "application/gzipped",
    "application/x-compress",
    "application/x-compressed",
    "application/x-gunzip",
    "application/x-gzip",
    "application/x-gzip-compressed",
];

/// One decoded part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// What it is.
    pub kind: PartKind,
    /// File name from `Content-Disposition`/`filename` (archive), if any.
    pub filename: Option<String>,
    /// `Launch-Index` header, archive `launch-index`, or a cloud-config's `launch-index` key.
    pub launch_index: Option<u64>,
    /// The decoded content (transfer encoding and compression removed); base64 when serialised.
    #[serde(with = "crate::model::b64")]
    pub content: Vec<u8>,
}

impl Part {
    /// For `#include`/`#include-once` parts: the URLs to fetch, one per line (blank lines and
    /// `#` comments skipped), each checked by [`parse_include_url`]: `http`/`https` only, a
    /// valid host, no credentials, no whitespace or control characters, at most 2048 bytes.
    /// At most [`Limits::max_include_urls`] are returned; invalid lines and the excess are
    /// reported in [`IncludeUrls::warnings`]. Fetched content goes back through
    /// [`parse_user_data`] (its own limits apply; includes found there count again).
    pub fn include_urls(&self, limits: &Limits) -> IncludeUrls {
        let mut out = IncludeUrls::default();
        let text = String::from_utf8_lossy(&self.content);
        let lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        for (i, line) in lines.enumerate() {
            if out.urls.len() >= limits.max_include_urls {
                out.warnings.push(format!(
                    "user-data #include: more than {} URLs; the rest ignored",
                    limits.max_include_urls
                ));
                break;
            }
            match parse_include_url(line) {
                Ok(u) => out.urls.push(u),
                Err(e) => out
                    .warnings
                    .push(format!("user-data #include: line {}: {e}; ignored", i + 1)),
            }
        }
        out
    }
}

/// The URLs of an `#include` part ([`Part::include_urls`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncludeUrls {
    /// Valid URLs, in order.
    pub urls: Vec<IncludeUrl>,
    /// Lines refused and URLs left out, one message each.
    pub warnings: Vec<String>,
}

/// One validated `#include` URL, split for an HTTP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncludeUrl {
    /// The URL as given (without a `#fragment`).
    pub url: String,
    /// `https` (else `http`).
    pub https: bool,
    /// Host name, IPv4 address, or IPv6 address without brackets.
    pub host: String,
    /// Port (80/443 when not given).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl IncludeUrl {
    /// `scheme://host:port`, the base a driver sends [`IncludeUrl::path`] to.
    pub fn base(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Validates one `#include` URL (see [`Part::include_urls`]).
pub fn parse_include_url(line: &str) -> Result<IncludeUrl, String> {
    if line.len() > 2048 {
        return Err("URL longer than 2048 bytes".into());
    }
    if line.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("URL contains whitespace or control characters".into());
    }
    let url = line.split('#').next().unwrap_or(line);
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{:?} is not an http(s) URL", truncate(url)))?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "http" => false,
        "https" => true,
        other => return Err(format!("scheme {other:?} is not http or https")),
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.contains('@') {
        return Err("credentials in URLs are not supported".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or("unclosed [ in the host")?;
        addr.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{addr:?} is not an IPv6 address"))?;
        (addr.to_owned(), after.strip_prefix(':'))
    } else {
        let (h, p) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        if h.parse::<std::net::Ipv4Addr>().is_err() {
            crate::hostname::validate(h).map_err(|e| e.to_string())?;
        }
        (h.to_owned(), p)
    };
    let port = match port {
        None => {
            if https {
                443
            } else {
                80
            }
        }
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid port {:?}", truncate(p)))?,
    };
    let path = if path.is_empty() {
        "/".to_owned()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    Ok(IncludeUrl {
        url: url.to_owned(),
        https,
        host,
        port,
        path,
    })
}

fn truncate(s: &str) -> &str {
    crate::model::truncate_at_char(s, 64)
}

/// A decoded user-data blob: its parts in order, and what was ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserData {
    /// Parts in document order.
    pub parts: Vec<Part>,
    /// Unsupported or skipped things, one message each.
    pub warnings: Vec<String>,
}

impl UserData {
    /// The parts meant for `launch_index` (parts without an index are for every instance).
    pub fn for_launch_index(&self, launch_index: Option<u64>) -> impl Iterator<Item = &Part> {
        self.parts.iter().filter(move |p| {
            p.launch_index.is_none() || launch_index.is_none() || p.launch_index == launch_index
        })
    }

    /// The parts of one kind, in order.
    pub fn of_kind<'a>(&'a self, kind: &'a PartKind) -> impl Iterator<Item = &'a Part> + 'a {
        self.parts.iter().filter(move |p| &p.kind == kind)
    }
}

/// Decodes a user-data (or vendor-data) blob. Empty input gives no parts. Errors only for
/// limit violations and broken gzip at the top level; problems inside parts become warnings.
pub fn parse_user_data(input: &[u8], limits: &Limits) -> Result<UserData, MetadataError> {
    Limits::check_size("user-data", input, limits.max_user_data_bytes)?;
    let mut ctx = Ctx {
        limits,
        decoded_left: limits.max_decoded_bytes,
        out: UserData::default(),
    };
    // Borrowed unless decompressed: a MIME message is split in place, only a single part is
    // copied (it becomes the part's content).
    let data: std::borrow::Cow<'_, [u8]> = if is_gzip(input) {
        ctx.gunzip(input)?.into()
    } else {
        input.into()
    };
    if data.iter().all(u8::is_ascii_whitespace) {
        return Ok(ctx.out);
    }
    if is_mime(&data) {
        let msg = mime::Message::parse(&data);
        ctx.message(&msg, 0)?;
    } else {
        ctx.part(data.into_owned(), "", None, None, 0)?;
    }
    Ok(ctx.out)
}

fn is_gzip(data: &[u8]) -> bool {
    data.starts_with(&[0x1f, 0x8b])
}

fn is_mime(data: &[u8]) -> bool {
    let head = &data[..data.len().min(4096)];
    let lower = head.to_ascii_lowercase();
    lower.windows(13).any(|w| w == b"mime-version:") || lower.starts_with(b"content-type:")
}

struct Ctx<'l> {
    limits: &'l Limits,
    decoded_left: usize,
    out: UserData,
}

impl Ctx<'_> {
    fn gunzip(&mut self, data: &[u8]) -> Result<Vec<u8>, MetadataError> {
        let out = gunzip_bounded(
            data,
            "user-data",
            self.decoded_left,
            self.limits.max_decompression_ratio,
        )
        .map_err(|e| match e {
            MetadataError::TooLarge { size, .. } => MetadataError::TooLarge {
                what: "decompressed user-data",
                size,
                limit: self.limits.max_decoded_bytes,
            },
            other => other,
        })?;
        self.decoded_left -= out.len();
        Ok(out)
    }

    fn charge(&mut self, len: usize) -> Result<(), MetadataError> {
        self.decoded_left = self
            .decoded_left
            .checked_sub(len)
            .ok_or(MetadataError::TooLarge {
                what: "decoded user-data",
                size: len,
                limit: self.limits.max_decoded_bytes,
            })?;
        Ok(())
    }

    fn message(&mut self, msg: &mime::Message<'_>, depth: usize) -> Result<(), MetadataError> {
        if depth > self.limits.max_user_data_depth {
            return Err(MetadataError::Mime {
                reason: format!("nested deeper than {}", self.limits.max_user_data_depth),
            });
        }
        self.out.warnings.extend(msg.warnings.iter().cloned());
        let (ct, params) = msg.content_type();
        if ct.starts_with("multipart/") {
            let Some(boundary) = mime::param(&params, "boundary") else {
                return Err(MetadataError::Mime {
                    reason: format!("{ct} without a boundary"),
                });
            };
            let split =
                mime::split_multipart(msg.body, &boundary, self.limits.max_user_data_parts)?;
            if !split.closed {
                self.out
                    .warnings
                    .push("user-data MIME: closing boundary missing".into());
            }
            for body in split.parts {
                let part = mime::Message::parse(body);
                self.message(&part, depth + 1)?;
            }
            return Ok(());
        }
        if ct.starts_with("message/") {
            self.out
                .warnings
                .push(format!("user-data MIME: {ct} part ignored"));
            return Ok(());
        }
        let data = match msg.decoded_body() {
            Ok(d) => d,
            Err(e) => {
                self.out.warnings.push(format!("{e}; part skipped"));
                return Ok(());
            }
        };
        self.charge(data.len())?;
        let launch_index = msg
            .header("launch-index")
            .and_then(|v| v.trim().parse().ok());
        self.part(data, &ct, msg.filename(), launch_index, depth)
    }

    fn part(
        &mut self,
        mut data: Vec<u8>,
        content_type: &str,
        filename: Option<String>,
        mut launch_index: Option<u64>,
        depth: usize,
    ) -> Result<(), MetadataError> {
        let mut ct = content_type.to_ascii_lowercase();
        if GZIP_TYPES.contains(&ct.as_str()) || (depth > 0 && is_gzip(&data)) {
            match self.gunzip(&data) {
                Ok(d) => {
                    data = d;
                    ct.clear();
                }
                Err(
                    e @ (MetadataError::TooLarge { .. } | MetadataError::CompressionRatio { .. }),
                ) => {
                    return Err(e);
                }
                Err(e) => {
                    self.out.warnings.push(format!("{e}; part skipped"));
                    return Ok(());
                }
            }
        }
        let detected = from_content_type(&ct)
            .or_else(|| detect(&data))
            .unwrap_or(Detected::Kind(PartKind::Plain));
        let kind = match detected {
            Detected::Archive => return self.archive(&data, depth),
            Detected::Kind(k) => k,
        };
        if self.out.parts.len() >= self.limits.max_user_data_parts {
            return Err(MetadataError::Mime {
                reason: format!("more than {} parts", self.limits.max_user_data_parts),
            });
        }
        let name = filename
            .as_deref()
            .map(|f| format!(" ({f})"))
            .unwrap_or_default();
        match &kind {
            PartKind::Plain => self
                .out
                .warnings
                .push(format!("user-data: plain text part{name} ignored")),
            PartKind::Other(t) => self
                .out
                .warnings
                .push(format!("user-data: part{name} of type {t} ignored")),
            k if !k.is_supported() => {
                self.out.warnings.push(format!(
                    "user-data: {} part{name} is not supported; ignored",
                    k.content_type()
                ));
            }
            _ => {}
        }
        if kind == PartKind::CloudConfig && launch_index.is_none() {
            // Streamed, no tree: classifying a part must not cost what parsing it does.
            launch_index = yaml_top_level_scalar(&data, "launch-index", self.limits)
                .and_then(|v| v.trim().parse().ok());
        }
        self.out.parts.push(Part {
            kind,
            filename,
            launch_index,
            content: data,
        });
        Ok(())
    }

    fn archive(&mut self, data: &[u8], depth: usize) -> Result<(), MetadataError> {
        if depth >= self.limits.max_user_data_depth {
            return Err(MetadataError::Mime {
                reason: "cloud-config-archive nested too deep".into(),
            });
        }
        let node = match parse_yaml_capped(
            data,
            "cloud-config-archive",
            self.limits,
            self.limits.max_user_data_bytes,
        ) {
            Ok(n) => n,
            Err(e) => {
                self.out.warnings.push(format!("{e}; archive ignored"));
                return Ok(());
            }
        };
        let Some(entries) = node.as_seq() else {
            self.out
                .warnings
                .push("user-data: #cloud-config-archive is not a list; ignored".into());
            return Ok(());
        };
        for (i, entry) in entries.iter().enumerate() {
            let (content, ctype, filename, launch_index) = match entry {
                Node::Str(s) => (s.clone(), None, None, None),
                Node::Map(_) => (
                    entry
                        .get("content")
                        .and_then(Node::scalar_string)
                        .unwrap_or_default(),
                    entry
                        .get("type")
                        .and_then(Node::scalar_string)
                        .filter(|t| !t.is_empty()),
                    entry.get("filename").and_then(Node::scalar_string),
                    entry.get("launch-index").and_then(Node::as_u64_loose),
                ),
                _ => {
                    self.out.warnings.push(format!(
                        "user-data: archive entry {i} is not a string or mapping; ignored"
                    ));
                    continue;
                }
            };
            // Untyped archive entries default to cloud-config (cloud-init's ARCHIVE_UNDEF_TYPE).
            let ctype = ctype.unwrap_or_else(|| match detect(content.as_bytes()) {
                Some(Detected::Kind(k)) => k.content_type().to_owned(),
                Some(Detected::Archive) => "text/cloud-config-archive".to_owned(),
                None => "text/cloud-config".to_owned(),
            });
            let bytes = content.into_bytes();
            self.charge(bytes.len())?;
            self.part(bytes, &ctype, filename, launch_index, depth + 1)?;
        }
        Ok(())
    }
}

/// A small, total MIME reader: RFC 5322 headers with folding, RFC 2045/2046 multiparts.
mod mime {
    use super::{MetadataError, decode_base64};

    pub(super) struct Message<'a> {
        headers: Vec<(String, String)>,
        pub(super) body: &'a [u8],
        pub(super) warnings: Vec<String>,
    }

    impl<'a> Message<'a> {
        /// Splits headers from body. Never fails: a line that is not a header ends the headers.
        pub(super) fn parse(data: &'a [u8]) -> Self {
            let mut headers: Vec<(String, String)> = Vec::new();
            let mut pos = 0;
            let mut first = true;
            let mut body_start = data.len();
            while pos < data.len() {
                let end = data[pos..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(data.len(), |i| pos + i);
                let next = (end + 1).min(data.len());
                let line = &data[pos..end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.is_empty() {
                    body_start = next;
                    break;
                }
                if first && line.starts_with(b"From ") {
                    // mbox "From " envelope line.
                    first = false;
                    pos = next;
                    continue;
                }
                first = false;
                if matches!(line[0], b' ' | b'\t')
                    && let Some((_, v)) = headers.last_mut()
                {
                    v.push(' ');
                    v.push_str(String::from_utf8_lossy(line).trim());
                    pos = next;
                    continue;
                }
                match line.iter().position(|&b| b == b':') {
                    Some(colon)
                        if colon > 0
                            && line[..colon].iter().all(|b| b.is_ascii_graphic())
                            && headers.len() < 128 =>
                    {
                        let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
                        let value = String::from_utf8_lossy(&line[colon + 1..])
                            .trim()
                            .to_owned();
                        headers.push((name, value));
                    }
                    _ => {
                        body_start = pos;
                        break;
                    }
                }
                pos = next;
            }
            Message {
                headers,
                body: &data[body_start.min(data.len())..],
                warnings: Vec::new(),
            }
        }

        pub(super) fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }

        /// Lowercased `type/subtype` (empty when absent) and the parameters.
        pub(super) fn content_type(&self) -> (String, Vec<(String, String)>) {
            let Some(v) = self.header("content-type") else {
                return (String::new(), Vec::new());
            };
            let mut fields = split_params(v).into_iter();
            let ct = fields
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            let params = fields.filter_map(|f| parse_param(&f)).collect();
            (ct, params)
        }

        pub(super) fn filename(&self) -> Option<String> {
            let from = |h: &str, key: &str| {
                self.header(h).and_then(|v| {
                    let params: Vec<_> = split_params(v)
                        .iter()
                        .skip(1)
                        .filter_map(|f| parse_param(f))
                        .collect();
                    param(&params, key)
                })
            };
            from("content-disposition", "filename").or_else(|| from("content-type", "name"))
        }

        pub(super) fn decoded_body(&self) -> Result<Vec<u8>, MetadataError> {
            let cte = self
                .header("content-transfer-encoding")
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            match cte.as_str() {
                "base64" => decode_base64("user-data MIME part", self.body),
                "quoted-printable" => Ok(decode_qp(self.body)),
                "" | "7bit" | "8bit" | "binary" => Ok(self.body.to_vec()),
                other => Err(MetadataError::Mime {
                    reason: format!("unknown transfer encoding {other:?}"),
                }),
            }
        }
    }

    /// Splits on `;` outside double quotes.
    fn split_params(v: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        for c in v.chars() {
            match c {
                '"' => {
                    quoted = !quoted;
                    cur.push(c);
                }
                ';' if !quoted => out.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            }
        }
        out.push(cur);
        out
    }

    fn parse_param(field: &str) -> Option<(String, String)> {
        let (k, v) = field.split_once('=')?;
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or(v);
        Some((k.trim().to_ascii_lowercase(), v.replace("\\\"", "\"")))
    }

    pub(super) fn param(params: &[(String, String)], key: &str) -> Option<String> {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    pub(super) struct Split<'a> {
        pub(super) parts: Vec<&'a [u8]>,
        pub(super) closed: bool,
    }

    /// Splits a multipart body at `--boundary` lines. The line break before a delimiter
    /// belongs to the delimiter; the preamble and epilogue are dropped.
    /// More than `max_parts` bodies is refused as soon as the next delimiter is seen, so a
    /// message with millions of parts costs one scan of the first few.
    pub(super) fn split_multipart<'a>(
        body: &'a [u8],
        boundary: &str,
        max_parts: usize,
    ) -> Result<Split<'a>, MetadataError> {
        if boundary.is_empty() || boundary.len() > 200 {
            return Err(MetadataError::Mime {
                reason: "invalid boundary".into(),
            });
        }
        let delim = format!("--{boundary}");
        let delim = delim.as_bytes();
        let mut parts = Vec::new();
        let mut start: Option<usize> = None;
        let mut pos = 0;
        let mut closed = false;
        let mut seen = false;
        while pos < body.len() {
            let end = body[pos..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(body.len(), |i| pos + i);
            let line = &body[pos..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(rest) = line.strip_prefix(delim) {
                let is_close = rest.starts_with(b"--");
                let tail = if is_close { &rest[2..] } else { rest };
                if tail.iter().all(|b| matches!(b, b' ' | b'\t')) {
                    seen = true;
                    if let Some(s) = start.take() {
                        let mut e = pos;
                        if e > s && body[e - 1] == b'\n' {
                            e -= 1;
                            if e > s && body[e - 1] == b'\r' {
                                e -= 1;
                            }
                        }
                        if parts.len() >= max_parts {
                            return Err(MetadataError::Mime {
                                reason: format!("more than {max_parts} parts"),
                            });
                        }
                        parts.push(&body[s..e.max(s)]);
                    }
                    if is_close {
                        closed = true;
                        break;
                    }
                    start = Some((end + 1).min(body.len()));
                }
            }
            pos = end + 1;
        }
        if !seen {
            return Err(MetadataError::Mime {
                reason: "multipart body has no boundary line".into(),
            });
        }
        if let Some(s) = start {
            if parts.len() >= max_parts {
                return Err(MetadataError::Mime {
                    reason: format!("more than {max_parts} parts"),
                });
            }
            parts.push(&body[s.min(body.len())..]);
        }
        Ok(Split { parts, closed })
    }

    /// Quoted-printable decoding; malformed escapes are kept literally.
    pub(super) fn decode_qp(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        let mut i = 0;
        while i < input.len() {
            if input[i] == b'=' {
                let rest = &input[i + 1..];
                if rest.starts_with(b"\r\n") {
                    i += 3;
                    continue;
                }
                if rest.starts_with(b"\n") {
                    i += 2;
                    continue;
                }
                if rest.len() >= 2
                    && let (Some(h), Some(l)) = (hex(rest[0]), hex(rest[1]))
                {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
            }
            out.push(input[i]);
            i += 1;
        }
        out
    }

    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write as _;

    fn parse(data: &[u8]) -> UserData {
        parse_user_data(data, &Limits::default()).unwrap()
    }

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn single_parts_by_header() {
        for (text, kind) in [
            ("#!/bin/sh\necho hi\n", PartKind::ShellScript),
            ("#cloud-config\nhostname: x\n", PartKind::CloudConfig),
            ("  #Cloud-Config\n", PartKind::CloudConfig),
            ("#cloud-boothook\n#!/bin/sh\n", PartKind::CloudBoothook),
            ("#include\nhttp://a/b\n", PartKind::Include),
            ("#include-once\nhttp://a/b\n", PartKind::IncludeOnce),
            (
                "## template: jinja\n#cloud-config\n",
                PartKind::JinjaTemplate,
            ),
            ("#part-handler\n", PartKind::PartHandler),
            ("#upstart-job\n", PartKind::UpstartJob),
            ("just text\n", PartKind::Plain),
        ] {
            let ud = parse(text.as_bytes());
            assert_eq!(ud.parts.len(), 1, "{text:?}");
            assert_eq!(ud.parts[0].kind, kind, "{text:?}");
            assert_eq!(ud.parts[0].content, text.as_bytes());
            assert_eq!(
                ud.warnings.is_empty(),
                kind.is_supported(),
                "{text:?}: {:?}",
                ud.warnings
            );
        }
        assert!(parse(b"").parts.is_empty());
        assert!(parse(b" \n\t").parts.is_empty());
    }

    #[test]
    fn include_urls() {
        let ud = parse(b"#include\n# comment\nhttp://a/1\n\n  https://b.example:8443/2?x=1#frag  \nftp://c/3\nhttp://user:pw@d/\nhttp://[fd00:ec2::254]/latest\nhttp://bad_host/\nhttp://e:0/\n");
        let inc = ud.parts[0].include_urls(&Limits::default());
        let urls: Vec<&str> = inc.urls.iter().map(|u| u.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "http://a/1",
                "https://b.example:8443/2?x=1",
                "http://[fd00:ec2::254]/latest"
            ]
        );
        assert_eq!(inc.urls[0].base(), "http://a:80");
        assert_eq!(inc.urls[0].path, "/1");
        assert_eq!((inc.urls[1].https, inc.urls[1].port), (true, 8443));
        assert_eq!(inc.urls[1].path, "/2?x=1");
        assert_eq!(inc.urls[2].host, "fd00:ec2::254");
        assert_eq!(inc.urls[2].base(), "http://[fd00:ec2::254]:80");
        assert_eq!(inc.warnings.len(), 4, "{:?}", inc.warnings);
        for needle in ["ftp", "credentials", "bad_host", "port"] {
            assert!(
                inc.warnings.iter().any(|w| w.contains(needle)),
                "{needle}: {:?}",
                inc.warnings
            );
        }
        let many: String = std::iter::once("#include\n".to_owned())
            .chain((0..40).map(|i| format!("http://h/{i}\n")))
            .collect();
        let inc = parse(many.as_bytes()).parts[0].include_urls(&Limits::default());
        assert_eq!(inc.urls.len(), 16);
        assert!(inc.warnings[0].contains("more than 16 URLs"));
    }

    #[test]
    fn gzip_is_decompressed_and_bombs_are_stopped() {
        let ud = parse(&gzip(b"#cloud-config\nruncmd: [ls]\n"));
        assert_eq!(ud.parts[0].kind, PartKind::CloudConfig);
        let bomb = gzip(&vec![b'A'; 4 << 20]);
        assert!(bomb.len() < 16 * 1024);
        let limits = Limits {
            max_decoded_bytes: 1 << 20,
            ..Limits::default()
        };
        let err = parse_user_data(&bomb, &limits).unwrap_err();
        assert!(matches!(err, MetadataError::TooLarge { .. }), "{err:?}");
        assert!(matches!(
            parse_user_data(&[0x1f, 0x8b, 8, 0, 0, 0], &Limits::default()),
            Err(MetadataError::Gzip { .. })
        ));
    }

    const MULTI: &str = "Content-Type: multipart/mixed; boundary=\"===XYZ==\"\r\n\
MIME-Version: 1.0\r\n\
\r\n\
preamble\r\n\
--===XYZ==\r\n\
Content-Type: text/cloud-config; charset=\"us-ascii\"\r\n\
Content-Disposition: attachment; filename=\"cc.txt\"\r\n\
\r\n\
#cloud-config\r\n\
hostname: a\r\n\
--===XYZ==\r\n\
Content-Type: text/x-shellscript\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
IyEvYmluL3NoCmVjaG8gaGkK\r\n\
--===XYZ==\r\n\
Content-Type: text/plain\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
Launch-Index: 3\r\n\
\r\n\
#!/bin/sh=0Aecho =3D=\r\n\
x\r\n\
--===XYZ==--\r\n\
epilogue\r\n";

    #[test]
    fn multipart_with_encodings() {
        let ud = parse(MULTI.as_bytes());
        let kinds: Vec<_> = ud.parts.iter().map(|p| p.kind.clone()).collect();
        assert_eq!(
            kinds,
            [
                PartKind::CloudConfig,
                PartKind::ShellScript,
                PartKind::ShellScript
            ]
        );
        assert_eq!(ud.parts[0].filename.as_deref(), Some("cc.txt"));
        assert_eq!(ud.parts[0].content, b"#cloud-config\r\nhostname: a");
        assert_eq!(ud.parts[1].content, b"#!/bin/sh\necho hi\n");
        assert_eq!(ud.parts[2].content, b"#!/bin/sh\necho =x");
        assert_eq!(ud.parts[2].launch_index, Some(3));
        assert_eq!(ud.for_launch_index(Some(0)).count(), 2);
        assert_eq!(ud.for_launch_index(Some(3)).count(), 3);
        assert!(ud.warnings.is_empty(), "{:?}", ud.warnings);
    }

    #[test]
    fn nested_multipart_depth_is_bounded() {
        fn nest(level: usize) -> String {
            if level == 0 {
                return "Content-Type: text/x-shellscript\n\n#!/bin/sh\n".to_owned();
            }
            format!(
                "Content-Type: multipart/mixed; boundary=b{level}\nMIME-Version: 1.0\n\n--b{level}\n{}\n--b{level}--\n",
                nest(level - 1)
            )
        }
        let ud = parse(nest(3).as_bytes());
        assert_eq!(ud.parts.len(), 1);
        assert_eq!(ud.parts[0].content, b"#!/bin/sh\n");
        let err = parse_user_data(nest(50).as_bytes(), &Limits::default()).unwrap_err();
        assert!(matches!(err, MetadataError::Mime { .. }));
    }

    #[test]
    fn part_count_is_bounded() {
        let mut doc =
            String::from("Content-Type: multipart/mixed; boundary=b\nMIME-Version: 1.0\n\n");
        for _ in 0..300 {
            doc.push_str("--b\nContent-Type: text/x-shellscript\n\n#!/bin/sh\n");
        }
        doc.push_str("--b--\n");
        assert!(parse_user_data(doc.as_bytes(), &Limits::default()).is_err());
    }

    #[test]
    fn gzip_part_inside_mime() {
        use base64::Engine as _;
        let gz = base64::engine::general_purpose::STANDARD.encode(gzip(b"#cloud-config\na: 1\n"));
        let doc = format!(
            "Content-Type: multipart/mixed; boundary=b\nMIME-Version: 1.0\n\n--b\nContent-Type: application/x-gzip\nContent-Transfer-Encoding: base64\n\n{gz}\n--b--\n"
        );
        let ud = parse(doc.as_bytes());
        assert_eq!(ud.parts[0].kind, PartKind::CloudConfig);
        assert_eq!(ud.parts[0].content, b"#cloud-config\na: 1\n");
    }

    #[test]
    fn archive_is_expanded() {
        let ud = parse(b"#cloud-config-archive\n- type: text/x-shellscript\n  content: '#!/bin/sh'\n  filename: s.sh\n- '#cloud-config\n\n  a: 1'\n- untyped: 1\n  content: 'b: 2'\n- 42\n");
        let kinds: Vec<_> = ud.parts.iter().map(|p| p.kind.clone()).collect();
        assert_eq!(
            kinds,
            [
                PartKind::ShellScript,
                PartKind::CloudConfig,
                PartKind::CloudConfig
            ]
        );
        assert_eq!(ud.parts[0].filename.as_deref(), Some("s.sh"));
        assert_eq!(ud.warnings.len(), 1, "{:?}", ud.warnings);
    }

    #[test]
    fn broken_mime_is_an_error_or_warning_never_a_panic() {
        assert!(
            parse_user_data(
                b"Content-Type: multipart/mixed\nMIME-Version: 1.0\n\nx",
                &Limits::default()
            )
            .is_err()
        );
        assert!(
            parse_user_data(
                b"Content-Type: multipart/mixed; boundary=q\nMIME-Version: 1.0\n\nno delimiters",
                &Limits::default()
            )
            .is_err()
        );
        let ud = parse(b"Content-Type: multipart/mixed; boundary=q\nMIME-Version: 1.0\n\n--q\nContent-Type: text/x-shellscript\n\n#!/bin/sh\n");
        assert_eq!(ud.parts.len(), 1);
        assert!(ud.warnings.iter().any(|w| w.contains("closing boundary")));
        let ud = parse(b"MIME-Version: 1.0\nContent-Type: text/x-shellscript\nContent-Transfer-Encoding: base64\n\n!!!!");
        assert!(ud.parts.is_empty());
        assert_eq!(ud.warnings.len(), 1);
    }

    #[test]
    fn qp() {
        assert_eq!(mime::decode_qp(b"a=3Db=\r\nc=ZZ="), b"a=bc=ZZ=");
    }

    proptest! {
        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_user_data(&b, &Limits::default());
        }

        #[test]
        fn never_panics_mime_like(body in "[-a-zA-Z0-9:;=\"/ \n#!]{0,300}") {
            let doc = format!("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=zz\n\n--zz\n{body}\n--zz--\n");
            let _ = parse_user_data(doc.as_bytes(), &Limits::default());
        }

        #[test]
        fn scripts_survive_base64_multipart(script in "#![ -~\n]{0,200}") {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::STANDARD.encode(&script);
            let doc = format!("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=zz\n\n--zz\nContent-Transfer-Encoding: base64\n\n{b64}\n--zz--\n");
            let ud = parse_user_data(doc.as_bytes(), &Limits::default()).unwrap();
            prop_assert_eq!(ud.parts.len(), 1);
            prop_assert_eq!(&ud.parts[0].kind, &PartKind::ShellScript);
            prop_assert_eq!(&ud.parts[0].content, script.as_bytes());
        }

        #[test]
        fn include_urls_are_total_and_clean(line in "\\PC{0,80}") {
            if let Ok(u) = parse_include_url(&line) {
                prop_assert!(u.path.starts_with('/'));
                prop_assert!(u.port > 0);
                prop_assert!(!u.url.chars().any(|c| c.is_whitespace() || c.is_control()));
                prop_assert!(!u.host.is_empty() && !u.host.contains('@'));
            }
        }

        #[test]
        fn include_urls_round_trip(host in "[a-z]([a-z0-9-]{0,10}[a-z0-9])?(\\.[a-z]{2,4})?", port in 1u16.., path in "(/[a-zA-Z0-9._~-]{0,8}){0,4}", https in any::<bool>()) {
            let scheme = if https { "https" } else { "http" };
            let url = format!("{scheme}://{host}:{port}{path}");
            let u = parse_include_url(&url).unwrap();
            prop_assert_eq!(&u.host, &host);
            prop_assert_eq!(u.port, port);
            prop_assert_eq!(u.https, https);
            let want = if path.is_empty() { "/".to_owned() } else { path.clone() };
            prop_assert_eq!(&u.path, &want);
            prop_assert_eq!(format!("{}{}", u.base(), u.path), format!("{scheme}://{host}:{port}{want}"));
        }

        #[test]
        fn gzip_round_trips(text in "#cloud-config\n[ -~\n]{0,200}") {
            let ud = parse_user_data(&gzip(text.as_bytes()), &Limits::default()).unwrap();
            prop_assert_eq!(&ud.parts[0].content, text.as_bytes());
        }
    }
}
