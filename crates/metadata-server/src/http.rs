//! A small, total HTTP/1.x request parser and response writer.
//!
//! [`parse_head`] looks at the bytes received so far and returns the parsed request head and
//! its length once the blank line has arrived, `Ok(None)` while more bytes are needed, or an
//! [`HttpError`] (which carries the status to answer with). It never panics, never allocates
//! more than the head it was given, and refuses heads over [`Limits::max_head`], more than
//! [`Limits::max_headers`] fields and bodies over [`Limits::max_body`] before reading them.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};

/// Size limits for requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request line plus header fields, in bytes (default 16 KiB).
    pub max_head: usize,
    /// Most header fields (default 64).
    pub max_headers: usize,
    /// Largest request body (default 16 KiB: metadata requests have none).
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 16 * 1024,
            max_headers: 64,
            max_body: 16 * 1024,
        }
    }
}

/// Request method. Anything else is kept as [`Method::Other`] so the service can answer 405.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// HEAD.
    Head,
    /// PUT.
    Put,
    /// Any other (syntactically valid) method.
    Other(String),
}

impl Method {
    /// The method as sent.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Put => "PUT",
            Method::Other(m) => m,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// HTTP version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: the connection closes after the response unless `Connection: keep-alive`.
    Http10,
    /// HTTP/1.1: the connection stays open unless `Connection: close`.
    Http11,
}

/// A parsed request line and header section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Method.
    pub method: Method,
    /// Path of the request target (origin form; an absolute-form target is reduced to its
    /// path). Not percent-decoded.
    pub path: String,
    /// Query string without the `?`, if any.
    pub query: Option<String>,
    /// Version.
    pub version: Version,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// Body length announced by `Content-Length` (0 when absent).
    pub content_length: usize,
}

impl RequestHead {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// True when header `name` is present at all.
    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// Whether the connection may serve another request after this one.
    pub fn keep_alive(&self) -> bool {
        let tokens = |v: &str, t: &str| v.split(',').any(|x| x.trim().eq_ignore_ascii_case(t));
        let conn = self.header("connection").unwrap_or("");
        match self.version {
            Version::Http11 => !tokens(conn, "close"),
            Version::Http10 => tokens(conn, "keep-alive"),
        }
    }

    /// True for `Expect: 100-continue`.
    pub fn expects_continue(&self) -> bool {
        self.header("expect")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
    }
}

/// A full request: head and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Request line and headers.
    pub head: RequestHead,
    /// Body (at most [`Limits::max_body`] bytes).
    pub body: Vec<u8>,
}

/// Why a request was refused; [`HttpError::status`] is the response to send before closing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// No blank line within [`Limits::max_head`] bytes.
    #[error("request head larger than {0} bytes")]
    HeadTooLarge(usize),
    /// More than [`Limits::max_headers`] fields.
    #[error("more than {0} header fields")]
    TooManyHeaders(usize),
    /// The request line is malformed.
    #[error("malformed request line: {0}")]
    BadRequestLine(&'static str),
    /// A header field is malformed.
    #[error("malformed header field: {0}")]
    BadHeader(&'static str),
    /// Not HTTP/1.0 or HTTP/1.1.
    #[error("unsupported HTTP version")]
    UnsupportedVersion,
    /// `Content-Length` is not a number, or repeated with different values.
    #[error("invalid Content-Length")]
    BadContentLength,
    /// The body is larger than [`Limits::max_body`].
    #[error("body of {len} bytes is larger than {max}")]
    BodyTooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `Transfer-Encoding` (chunked bodies) is not supported.
    #[error("Transfer-Encoding is not supported")]
    TransferEncoding,
}

impl HttpError {
    /// The status code to answer with.
    pub fn status(&self) -> Status {
        match self {
            HttpError::HeadTooLarge(_) | HttpError::TooManyHeaders(_) => {
                Status::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            HttpError::BodyTooLarge { .. } => Status::PAYLOAD_TOO_LARGE,
            HttpError::UnsupportedVersion => Status::HTTP_VERSION_NOT_SUPPORTED,
            HttpError::TransferEncoding => Status::NOT_IMPLEMENTED,
            HttpError::BadRequestLine(_)
            | HttpError::BadHeader(_)
            | HttpError::BadContentLength => Status::BAD_REQUEST,
        }
    }
}

/// Finds the end of the head: the index just past the blank line (`\r\n\r\n` or `\n\n`).
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(off) = buf.get(i..)?.iter().position(|&b| b == b'\n') {
        let nl = i + off;
        let next = nl + 1;
        match buf.get(next..) {
            Some([b'\n', ..]) => return Some(next + 1),
            Some([b'\r', b'\n', ..]) => return Some(next + 2),
            _ => {}
        }
        i = next;
    }
    None
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses a request head from the start of `buf` (leading empty lines are skipped, as RFC
/// 9112 allows). Returns the head and the number of bytes it used, `Ok(None)` when the blank
/// line has not arrived yet, or the reason to refuse the request.
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<(RequestHead, usize)>, HttpError> {
    // Skip leading CRLFs (left over after a previous body).
    let skip = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let rest = &buf[skip..];
    let Some(end) = head_end(rest) else {
        if rest.len() > limits.max_head {
            return Err(HttpError::HeadTooLarge(limits.max_head));
        }
        return Ok(None);
    };
    if end > limits.max_head {
        return Err(HttpError::HeadTooLarge(limits.max_head));
    }
    let head = &rest[..end];
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let (method, path, query, version) = parse_request_line(request_line)?;

    let mut headers = Vec::new();
    let mut content_length: Option<usize> = None;
    for line in lines {
        if line.is_empty() {
            break;
        }
        if headers.len() >= limits.max_headers {
            return Err(HttpError::TooManyHeaders(limits.max_headers));
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(HttpError::BadHeader("obsolete line folding"));
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(HttpError::BadHeader("no colon"))?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(HttpError::BadHeader("invalid field name"));
        }
        let value = &line[colon + 1..];
        if value.iter().any(|&b| b == 0 || b == b'\r') {
            return Err(HttpError::BadHeader("control character in value"));
        }
        let value = String::from_utf8_lossy(value.trim_ascii()).into_owned();
        // Field names are tchars, hence ASCII.
        let name = String::from_utf8_lossy(name).into_owned();
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(&value)?;
            if content_length.is_some_and(|old| old != n) {
                return Err(HttpError::BadContentLength);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::TransferEncoding);
        }
        headers.push((name, value));
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > limits.max_body {
        return Err(HttpError::BodyTooLarge {
            len: content_length,
            max: limits.max_body,
        });
    }
    Ok(Some((
        RequestHead {
            method,
            path,
            query,
            version,
            headers,
            content_length,
        },
        skip + end,
    )))
}

fn parse_content_length(v: &str) -> Result<usize, HttpError> {
    if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::BadContentLength);
    }
    v.parse().map_err(|_| HttpError::BadContentLength)
}

type RequestLine = (Method, String, Option<String>, Version);

fn parse_request_line(line: &[u8]) -> Result<RequestLine, HttpError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::BadRequestLine(
            "expected `METHOD TARGET VERSION`",
        ));
    };
    if method.is_empty() || method.len() > 32 || !method.iter().all(|&b| is_tchar(b)) {
        return Err(HttpError::BadRequestLine("invalid method"));
    }
    let method = match method {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        b"PUT" => Method::Put,
        other => Method::Other(String::from_utf8_lossy(other).into_owned()),
    };
    let version = match version {
        b"HTTP/1.1" => Version::Http11,
        b"HTTP/1.0" => Version::Http10,
        v if v.starts_with(b"HTTP/") => return Err(HttpError::UnsupportedVersion),
        _ => return Err(HttpError::BadRequestLine("invalid version")),
    };
    if target.is_empty() || !target.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return Err(HttpError::BadRequestLine("invalid request target"));
    }
    // Targets are visible ASCII, so this is lossless.
    let target = String::from_utf8_lossy(target);
    let origin = if target.starts_with('/') {
        &target[..]
    } else if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        // Absolute form: drop the authority.
        rest.find('/').map_or("/", |i| &rest[i..])
    } else {
        return Err(HttpError::BadRequestLine("request target is not a path"));
    };
    let (path, query) = match origin.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (origin, None),
    };
    let path = path.split_once('#').map_or(path, |(p, _)| p);
    Ok((method, path.to_owned(), query, version))
}

/// An HTTP status code with its reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16, pub &'static str);

#[allow(missing_docs)]
impl Status {
    pub const CONTINUE: Status = Status(100, "Continue");
    pub const OK: Status = Status(200, "OK");
    pub const FOUND: Status = Status(302, "Found");
    pub const BAD_REQUEST: Status = Status(400, "Bad Request");
    pub const UNAUTHORIZED: Status = Status(401, "Unauthorized");
    pub const FORBIDDEN: Status = Status(403, "Forbidden");
    pub const NOT_FOUND: Status = Status(404, "Not Found");
    pub const METHOD_NOT_ALLOWED: Status = Status(405, "Method Not Allowed");
    pub const REQUEST_TIMEOUT: Status = Status(408, "Request Timeout");
    pub const PAYLOAD_TOO_LARGE: Status = Status(413, "Payload Too Large");
    pub const REQUEST_HEADER_FIELDS_TOO_LARGE: Status =
        Status(431, "Request Header Fields Too Large");
    pub const INTERNAL_SERVER_ERROR: Status = Status(500, "Internal Server Error");
    pub const NOT_IMPLEMENTED: Status = Status(501, "Not Implemented");
    pub const SERVICE_UNAVAILABLE: Status = Status(503, "Service Unavailable");
    pub const HTTP_VERSION_NOT_SUPPORTED: Status = Status(505, "HTTP Version Not Supported");
}

/// A response body.
#[derive(Debug)]
pub enum Body {
    /// Bytes in memory.
    Bytes(Vec<u8>),
    /// The first `len` bytes of an open file, streamed (bounded memory for large user-data).
    File {
        /// The file, positioned at its start.
        file: File,
        /// Bytes to send.
        len: u64,
    },
}

impl Body {
    /// Body length.
    pub fn len(&self) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64,
            Body::File { len, .. } => *len,
        }
    }

    /// True for an empty body.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A response to send.
#[derive(Debug)]
pub struct Response {
    /// Status.
    pub status: Status,
    /// Extra header fields (`Content-Length`, `Connection`, `Server` and `Date`-less framing
    /// are added by [`Response::write_to`]).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Body,
}

impl Response {
    /// A `text/plain` response.
    pub fn text(status: Status, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: Body::Bytes(body.into()),
        }
    }

    /// An error response whose body is the reason phrase (as IMDS does, e.g. `Not Found`).
    pub fn error(status: Status) -> Self {
        Response::text(status, status.1)
    }

    /// Adds a header field.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Writes the status line, headers and (unless `head_only`) the body; returns the body
    /// bytes sent. Adds `Content-Length`, `Connection` and `Server`.
    pub fn write_to(
        &mut self,
        w: &mut dyn Write,
        head_only: bool,
        keep_alive: bool,
    ) -> io::Result<u64> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status.0, self.status.1);
        for (n, v) in &self.headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: {}\r\nServer: virga-metadata\r\n\r\n",
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" }
        ));
        w.write_all(head.as_bytes())?;
        if head_only {
            return Ok(0);
        }
        match &mut self.body {
            Body::Bytes(b) => {
                w.write_all(b)?;
                Ok(b.len() as u64)
            }
            Body::File { file, len } => {
                let sent = io::copy(&mut file.take(*len), w)?;
                if sent != *len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while being sent",
                    ));
                }
                Ok(sent)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<(RequestHead, usize)>, HttpError> {
        parse_head(s.as_bytes(), &Limits::default())
    }

    #[test]
    fn simple_get() {
        let (h, n) = parse("GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\n\r\nrest")
            .unwrap()
            .unwrap();
        assert_eq!(n, 44);
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.path, "/latest/meta-data/");
        assert_eq!(h.header("HOST"), Some("x"));
        assert!(h.keep_alive());
        assert_eq!(h.content_length, 0);
    }

    #[test]
    fn incomplete_then_complete() {
        assert_eq!(parse("GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        assert_eq!(parse(""), Ok(None));
        assert!(parse("GET / HTTP/1.1\n\n").unwrap().is_some());
    }

    #[test]
    fn leading_blank_lines_are_skipped() {
        let (h, n) = parse("\r\n\r\nGET /x HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.path, "/x");
        assert_eq!(n, 23);
        assert!(!h.keep_alive());
    }

    #[test]
    fn absolute_form_and_query() {
        let (h, _) = parse("GET http://169.254.169.254/latest?x=1 HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.path, "/latest");
        assert_eq!(h.query.as_deref(), Some("x=1"));
        let (h, _) = parse("GET http://host HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.path, "/");
    }

    #[test]
    fn connection_tokens() {
        let (h, _) = parse("GET / HTTP/1.1\r\nConnection: foo, Close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive());
        let (h, _) = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive());
    }

    #[test]
    fn errors_and_statuses() {
        let cases: &[(&str, u16)] = &[
            ("GET /\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\n\r\n", 505),
            ("GET / FTP/1.0\r\n\r\n", 400),
            ("GET relative HTTP/1.1\r\n\r\n", 400),
            ("G(T / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (
                "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            ("PUT / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
            ("PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
        ];
        for (req, status) in cases {
            let err = parse(req).unwrap_err();
            assert_eq!(err.status().0, *status, "{req:?}: {err}");
        }
    }

    #[test]
    fn head_size_limit() {
        let limits = Limits {
            max_head: 64,
            ..Limits::default()
        };
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(100));
        assert_eq!(
            parse_head(long.as_bytes(), &limits),
            Err(HttpError::HeadTooLarge(64))
        );
        let complete = format!("{long}\r\n");
        assert_eq!(
            parse_head(complete.as_bytes(), &limits),
            Err(HttpError::HeadTooLarge(64))
        );
        let many: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(&req), Err(HttpError::TooManyHeaders(64)));
    }

    #[test]
    fn response_framing() {
        let mut r = Response::text(Status::OK, "hello").with_header("X-A", "1");
        let mut out = Vec::new();
        r.write_to(&mut out, false, true).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: 1\r\n"));
        assert!(s.contains("Content-Length: 5\r\nConnection: keep-alive\r\n"));
        assert!(s.ends_with("\r\n\r\nhello"));
        let mut out = Vec::new();
        Response::error(Status::NOT_FOUND)
            .write_to(&mut out, true, false)
            .unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.contains("Content-Length: 9\r\n") && s.ends_with("\r\n\r\n"),
            "{s}"
        );
    }

    proptest::proptest! {
        #[test]
        fn parser_is_total(data in proptest::collection::vec(proptest::num::u8::ANY, 0..4096)) {
            let limits = Limits { max_head: 1024, max_headers: 8, max_body: 100 };
            match parse_head(&data, &limits) {
                Ok(Some((head, used))) => {
                    proptest::prop_assert!(used <= data.len());
                    proptest::prop_assert!(head.headers.len() <= 8);
                    proptest::prop_assert!(head.content_length <= 100);
                    proptest::prop_assert!(head.path.starts_with('/'));
                }
                Ok(None) => {
                    // Waiting for more is only allowed while the head is within the limit.
                    let skip = data.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
                    proptest::prop_assert!(data.len() - skip <= 1024);
                }
                Err(e) => { let _ = e.status(); }
            }
        }

        #[test]
        fn parser_is_total_on_requestish_input(
            method in "[A-Z]{0,8}",
            path in "[ -~]{0,40}",
            headers in proptest::collection::vec(("[ -~]{0,20}", "[\\x00-\\xff]{0,20}"), 0..12),
            sep in proptest::sample::select(vec!["\r\n", "\n", "\r"]),
        ) {
            let mut req = format!("{method} {path} HTTP/1.1{sep}");
            for (n, v) in headers {
                req.push_str(&format!("{n}: {v}{sep}"));
            }
            req.push_str(sep);
            let _ = parse_head(req.as_bytes(), &Limits::default());
        }
    }
}
