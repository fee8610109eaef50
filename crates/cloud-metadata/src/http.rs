//! Sans-IO request/response types shared by the metadata-service crawlers.
//!
//! A crawler ([`Crawler`]) never does I/O: it hands out one [`HttpRequest`] at a time and is
//! fed the [`HttpOutcome`]. A driver is a loop (see [`drive`]):
//!
//! ```
//! # use cloud_metadata::http::{Crawler, HttpOutcome, HttpRequest, Step};
//! # fn send(_: &HttpRequest) -> HttpOutcome { HttpOutcome::Failed("offline".into()) }
//! # fn run(crawler: &mut impl Crawler) -> Result<(), cloud_metadata::MetadataError> {
//! let mut last = None;
//! let md = loop {
//!     match crawler.step(last.take())? {
//!         Step::Send(req) => last = Some(send(&req)), // URL = base + req.path
//!         Step::Done(md) => break md,
//!     }
//! };
//! # let _ = md; Ok(()) }
//! ```
//!
//! The driver owns everything about the wire: the base URL (`http://169.254.169.254`,
//! `http://[fd00:ec2::254]`, a NoCloud `s=` URL, or a mounted config drive), connect/read
//! timeouts (use [`HttpRequest::timeout`]), refusing redirects, and stopping a body read at
//! [`HttpRequest::max_body`] bytes. Any status code is acceptable input: crawlers decide what a
//! status means and return a clear error when they cannot go on. A file-backed driver (config
//! drive, NoCloud seed directory) answers `200` with the file's bytes, `404` when the file does
//! not exist, and for a path ending in `/` the directory's entry names, one per line.

use std::fmt;
use std::time::Duration;

use crate::{InstanceMetadata, MetadataError};

/// HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// PUT (only the IMDSv2 token request).
    Put,
}

impl Method {
    /// `"GET"` / `"PUT"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request a crawler wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Method.
    pub method: Method,
    /// Path to append to the driver's base URL (`/latest/meta-data/instance-id`, `meta-data`).
    pub path: String,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// How long the driver should wait for the whole exchange.
    pub timeout: Duration,
    /// Largest body the crawler will accept; the driver may stop reading after this many
    /// bytes plus one (the crawler then reports [`MetadataError::TooLarge`]).
    pub max_body: usize,
}

impl HttpRequest {
    pub(crate) fn get(path: String, timeout: Duration, max_body: usize) -> Self {
        HttpRequest {
            method: Method::Get,
            path,
            headers: Vec::new(),
            timeout,
            max_body,
        }
    }

    /// The value of header `name` (case-insensitive), if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What happened to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpOutcome {
    /// A response arrived (any status; redirects should be reported as they are, not followed).
    Response {
        /// Status code.
        status: u16,
        /// Body (possibly cut at `max_body + 1` bytes).
        body: Vec<u8>,
    },
    /// No response: timeout, connection refused or reset, DNS, TLS … (the reason, for messages).
    Failed(String),
}

impl HttpOutcome {
    /// A `200 OK` response with this body.
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        HttpOutcome::Response {
            status: 200,
            body: body.into(),
        }
    }

    /// An empty response with this status.
    pub fn status(status: u16) -> Self {
        HttpOutcome::Response {
            status,
            body: Vec::new(),
        }
    }
}

/// What a crawler wants next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Send this request and pass the outcome to the next [`Crawler::step`].
    Send(HttpRequest),
    /// The crawl is complete.
    Done(Box<InstanceMetadata>),
}

/// A sans-IO metadata crawl.
pub trait Crawler {
    /// Advances the crawl. The first call takes `None`; every later call takes the outcome of
    /// the request returned by the previous call. Errors are final: start a new crawler to
    /// retry (see [`crate::retry::Backoff`]).
    fn step(&mut self, last: Option<HttpOutcome>) -> Result<Step, MetadataError>;
}

/// Runs `crawler` to completion with `send` doing the I/O. The loop is bounded: every crawler
/// stops after [`crate::Limits::max_requests`] requests.
pub fn drive<C, F>(crawler: &mut C, mut send: F) -> Result<InstanceMetadata, MetadataError>
where
    C: Crawler + ?Sized,
    F: FnMut(&HttpRequest) -> HttpOutcome,
{
    let mut last = None;
    loop {
        match crawler.step(last.take())? {
            Step::Send(req) => last = Some(send(&req)),
            Step::Done(md) => return Ok(*md),
        }
    }
}

/// Bookkeeping shared by the crawlers: the request budget and the pending request.
#[derive(Debug, Clone)]
pub(crate) struct Exchange {
    pub(crate) sent: usize,
    pub(crate) max_requests: usize,
    pub(crate) pending: Option<HttpRequest>,
}

impl Exchange {
    pub(crate) fn new(max_requests: usize) -> Self {
        Exchange {
            sent: 0,
            max_requests,
            pending: None,
        }
    }

    /// Records `req` as sent and wraps it in a step.
    pub(crate) fn send(&mut self, req: HttpRequest) -> Result<Step, MetadataError> {
        if self.sent >= self.max_requests {
            return Err(MetadataError::Protocol {
                reason: format!("crawl needed more than {} requests", self.max_requests),
            });
        }
        self.sent += 1;
        self.pending = Some(req.clone());
        Ok(Step::Send(req))
    }

    /// Pairs `last` with the pending request; protocol errors when they don't match up.
    pub(crate) fn receive(
        &mut self,
        last: Option<HttpOutcome>,
    ) -> Result<Option<(HttpRequest, HttpOutcome)>, MetadataError> {
        match (self.pending.take(), last) {
            (None, None) => Ok(None),
            (Some(req), Some(out)) => Ok(Some((req, out))),
            (Some(req), None) => Err(MetadataError::Protocol {
                reason: format!("no outcome given for {} {}", req.method, req.path),
            }),
            (None, Some(_)) => Err(MetadataError::Protocol {
                reason: "an outcome was given but no request was pending".to_owned(),
            }),
        }
    }
}

/// Checks a 200 body against the request's cap.
pub(crate) fn check_body(
    what: &'static str,
    req: &HttpRequest,
    body: &[u8],
) -> Result<(), MetadataError> {
    if body.len() > req.max_body {
        return Err(MetadataError::TooLarge {
            what,
            size: body.len(),
            limit: req.max_body,
        });
    }
    Ok(())
}

pub(crate) fn status_error(req: &HttpRequest, status: u16) -> MetadataError {
    MetadataError::HttpStatus {
        method: req.method.as_str(),
        path: req.path.clone(),
        status,
    }
}

pub(crate) fn transport_error(req: &HttpRequest, reason: String) -> MetadataError {
    MetadataError::Transport {
        method: req.method.as_str(),
        path: req.path.clone(),
        reason,
    }
}
