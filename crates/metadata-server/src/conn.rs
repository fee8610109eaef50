//! Serving connections: one connection over any `Read` + `Write` pair (stdin/stdout for QEMU's
//! guestfwd `cmd:`), and a TCP listener that serves each connection on its own thread.
//!
//! Every wait has a deadline: a reader thread feeds received chunks through a small bounded
//! channel, and the connection loop waits on it with `recv_timeout` (idle time before a
//! request, time to receive a whole request, how long a hang fault lasts). Memory per
//! connection is bounded by the request limits plus two 8 KiB chunks in flight.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::fault::{Fault, FaultKind, GARBAGE};
use crate::http::{HttpError, Limits, Method, Request, Response, Status, parse_head};

/// Answers requests. [`crate::MetadataService`] is the implementation; tests use others.
pub trait Handler: Send + Sync {
    /// The response to `req`, received at wall-clock time `now`.
    fn handle(&self, req: &Request, now: SystemTime) -> Response;
}

/// Default of [`ServerConfig::max_connections`]: a guest crawls its metadata over a handful of
/// connections at most.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;
/// Default of [`ServerConfig::max_connection_time`], in seconds: above the idle timeout (30)
/// and the default `--fault hang` (120), so neither is cut short.
pub const DEFAULT_MAX_CONNECTION_SECS: u64 = 180;

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Request size limits.
    pub limits: Limits,
    /// How long an open connection may sit idle before (or between) requests.
    pub idle_timeout: Duration,
    /// How long a client may take to send one whole request once it started.
    pub request_timeout: Duration,
    /// Longest a connection may stay open, however busy (keep-alive cannot hold it forever).
    pub max_connection_time: Duration,
    /// Longest a TCP write may block (TCP only; stdio cannot time out writes).
    pub write_timeout: Duration,
    /// Most requests served on one connection.
    pub max_requests_per_connection: usize,
    /// Most connections served at once; more are answered `503` and closed (TCP: by the
    /// listener; `--stdio`: through [`crate::slots`], shared by the processes of one VM).
    pub max_connections: usize,
    /// Fault to inject, if any.
    pub fault: Option<Fault>,
    /// Where to append one line per request (shared by all processes of a VM).
    pub access_log: Option<Arc<Mutex<File>>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits::default(),
            idle_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            max_connection_time: Duration::from_secs(DEFAULT_MAX_CONNECTION_SECS),
            write_timeout: Duration::from_secs(30),
            max_requests_per_connection: 1000,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            fault: None,
            access_log: None,
        }
    }
}

/// What happened on one connection (for logs and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionSummary {
    /// Requests answered (faulted ones included).
    pub requests: usize,
    /// Why the connection ended.
    pub end: ConnectionEnd,
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConnectionEnd {
    /// The client closed it between requests.
    #[default]
    ClientClosed,
    /// The client closed it in the middle of a request.
    ClientClosedMidRequest,
    /// A request asked for `Connection: close`, or HTTP/1.0 without keep-alive.
    RequestedClose,
    /// Nothing arrived for [`ServerConfig::idle_timeout`].
    IdleTimeout,
    /// A request took longer than [`ServerConfig::request_timeout`] (answered `408`).
    RequestTimeout,
    /// A malformed or oversized request (answered with its error status).
    BadRequest,
    /// [`ServerConfig::max_requests_per_connection`] reached.
    RequestLimit,
    /// [`ServerConfig::max_connection_time`] reached.
    TimeLimit,
    /// A fault (hang, garbage) ended it.
    Fault,
    /// Reading or writing failed.
    IoError,
}

enum Chunk {
    Data(Vec<u8>),
    Eof,
    Error(io::Error),
}

/// Reads from a `Read` on a helper thread so waits can have deadlines.
struct Input {
    rx: Receiver<Chunk>,
    done: bool,
}

impl Input {
    fn spawn<R: Read + Send + 'static>(mut reader: R) -> Input {
        let (tx, rx): (SyncSender<Chunk>, _) = sync_channel(2);
        let spawned = thread::Builder::new()
            .name("mdserver-read".into())
            .spawn(move || {
                let mut buf = vec![0u8; 8192];
                loop {
                    let msg = match reader.read(&mut buf) {
                        Ok(0) => Chunk::Eof,
                        Ok(n) => Chunk::Data(buf[..n].to_vec()),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => Chunk::Error(e),
                    };
                    let last = !matches!(msg, Chunk::Data(_));
                    if tx.send(msg).is_err() || last {
                        break;
                    }
                }
            });
        if let Err(e) = spawned {
            // Without a reader thread the connection reads as failed right away.
            let (tx, rx) = sync_channel(1);
            let _ = tx.send(Chunk::Error(e));
            return Input { rx, done: false };
        }
        Input { rx, done: false }
    }

    /// The next chunk, or `None` at the deadline.
    fn recv(&mut self, deadline: Instant) -> Option<Chunk> {
        if self.done {
            return Some(Chunk::Eof);
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(wait) {
            Ok(chunk) => {
                if !matches!(chunk, Chunk::Data(_)) {
                    self.done = true;
                }
                Some(chunk)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                self.done = true;
                Some(Chunk::Eof)
            }
        }
    }
}

/// A writer that sends one byte at a time with a delay, for [`FaultKind::Slow`].
struct Trickle<'a> {
    inner: &'a mut dyn Write,
    delay: Duration,
    until: Instant,
}

impl Write for Trickle<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if Instant::now() >= self.until {
            return self.inner.write(buf);
        }
        let n = self.inner.write(&buf[..1])?;
        self.inner.flush()?;
        thread::sleep(self.delay);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Serves one connection until it ends; never panics on client behaviour.
///
/// `reader` is moved to a helper thread (it may stay blocked there after this returns, until
/// the peer closes: for TCP, shut the socket down; for stdio the process exits).
pub fn serve_connection<R, W>(
    reader: R,
    writer: W,
    handler: &dyn Handler,
    cfg: &ServerConfig,
    peer: &str,
) -> ConnectionSummary
where
    R: Read + Send + 'static,
    W: Write,
{
    let mut conn = Connection {
        deadline: Instant::now() + cfg.max_connection_time,
        input: Input::spawn(reader),
        out: BufWriter::new(writer),
        buf: Vec::new(),
        handler,
        cfg,
        peer,
        requests: 0,
    };
    let end = conn.run();
    let _ = conn.out.flush();
    tracing::debug!(peer, requests = conn.requests, ?end, "connection ended");
    ConnectionSummary {
        requests: conn.requests,
        end,
    }
}

struct Connection<'a, W: Write> {
    /// When the connection ends at the latest ([`ServerConfig::max_connection_time`]).
    deadline: Instant,
    input: Input,
    out: BufWriter<W>,
    buf: Vec<u8>,
    handler: &'a dyn Handler,
    cfg: &'a ServerConfig,
    peer: &'a str,
    requests: usize,
}

impl<W: Write> Connection<'_, W> {
    fn run(&mut self) -> ConnectionEnd {
        loop {
            let (request, started) = match self.read_request() {
                Ok(r) => r,
                Err(end) => return end,
            };
            self.requests += 1;
            let keep_alive = request.head.keep_alive();
            if let Some(fault) = self
                .cfg
                .fault
                .as_ref()
                .filter(|f| f.applies_to(&request.head.path))
            {
                match self.inject(fault, &request, started, keep_alive) {
                    Some(end) => return end,
                    None if !keep_alive => return ConnectionEnd::RequestedClose,
                    None => {}
                }
            } else {
                let response = self.handler.handle(&request, SystemTime::now());
                if let Err(e) = self.send(&request, response, started, keep_alive, None, None) {
                    tracing::warn!(peer = self.peer, error = %e, "writing a response failed");
                    return ConnectionEnd::IoError;
                }
                if !keep_alive {
                    return ConnectionEnd::RequestedClose;
                }
            }
            if self.requests >= self.cfg.max_requests_per_connection {
                return ConnectionEnd::RequestLimit;
            }
        }
    }

    /// Waits for and parses the next request.
    fn read_request(&mut self) -> Result<(Request, Instant), ConnectionEnd> {
        let now = Instant::now();
        if now >= self.deadline {
            return Err(self.time_limit());
        }
        let idle_deadline = (now + self.cfg.idle_timeout).min(self.deadline);
        let mut started: Option<Instant> = None;
        let head = loop {
            if started.is_none() && self.buf.iter().any(|&b| b != b'\r' && b != b'\n') {
                started = Some(Instant::now());
            }
            match parse_head(&self.buf, &self.cfg.limits) {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(e) => return Err(self.refuse(&e, started)),
            }
            let deadline = started.map_or(idle_deadline, |s| self.request_deadline(s));
            self.fill(deadline, started.is_some())?;
        };
        let started = started.unwrap_or_else(Instant::now);
        let (head, used) = head;
        self.buf.drain(..used);
        let len = head.content_length;
        if len > self.buf.len() && head.expects_continue() {
            let sent = self
                .out
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .and_then(|()| self.out.flush());
            if sent.is_err() {
                return Err(ConnectionEnd::IoError);
            }
        }
        while self.buf.len() < len {
            self.fill(self.request_deadline(started), true)?;
        }
        let body: Vec<u8> = self.buf.drain(..len).collect();
        Ok((Request { head, body }, started))
    }

    /// When a request that started at `started` must be complete.
    fn request_deadline(&self, started: Instant) -> Instant {
        (started + self.cfg.request_timeout).min(self.deadline)
    }

    fn time_limit(&self) -> ConnectionEnd {
        tracing::info!(
            peer = self.peer,
            limit = ?self.cfg.max_connection_time,
            requests = self.requests,
            "connection open too long: closing it"
        );
        ConnectionEnd::TimeLimit
    }

    /// Receives one chunk into the buffer, or ends the connection at the deadline / EOF.
    fn fill(&mut self, deadline: Instant, mid_request: bool) -> Result<(), ConnectionEnd> {
        match self.input.recv(deadline) {
            Some(Chunk::Data(d)) => {
                self.buf.extend_from_slice(&d);
                Ok(())
            }
            Some(Chunk::Eof) if mid_request => {
                tracing::info!(peer = self.peer, "client closed the connection mid-request");
                Err(ConnectionEnd::ClientClosedMidRequest)
            }
            Some(Chunk::Eof) => Err(ConnectionEnd::ClientClosed),
            Some(Chunk::Error(e)) => {
                tracing::info!(peer = self.peer, error = %e, "reading from the client failed");
                Err(ConnectionEnd::IoError)
            }
            None if mid_request => {
                tracing::warn!(
                    peer = self.peer,
                    timeout = ?self.cfg.request_timeout,
                    "request not received in time: answering 408"
                );
                let mut r = Response::error(Status::REQUEST_TIMEOUT);
                let _ = r.write_to(&mut self.out, false, false);
                self.log_line("-", "-", Status::REQUEST_TIMEOUT, 0, None, None);
                Err(ConnectionEnd::RequestTimeout)
            }
            None if Instant::now() >= self.deadline => Err(self.time_limit()),
            None => Err(ConnectionEnd::IdleTimeout),
        }
    }

    fn refuse(&mut self, e: &HttpError, started: Option<Instant>) -> ConnectionEnd {
        let status = e.status();
        tracing::warn!(peer = self.peer, error = %e, status = status.0, "refusing request");
        let mut r = Response::error(status);
        let _ = r.write_to(&mut self.out, false, false);
        let _ = self.out.flush();
        self.log_line("-", "-", status, 0, started, Some(&e.to_string()));
        ConnectionEnd::BadRequest
    }

    /// Applies a fault to `req`. `Some(end)` closes the connection.
    fn inject(
        &mut self,
        fault: &Fault,
        req: &Request,
        started: Instant,
        keep_alive: bool,
    ) -> Option<ConnectionEnd> {
        let kind = fault.kind;
        tracing::info!(peer = self.peer, path = %req.head.path, fault = %kind, "injecting fault");
        match kind {
            FaultKind::Hang => {
                self.log_line(
                    req.head.method.as_str(),
                    &req.head.path,
                    Status(0, "hang"),
                    0,
                    Some(started),
                    Some("hang"),
                );
                let until = (Instant::now() + fault.hang_for).min(self.deadline);
                // Hold the connection, discarding input, until the client gives up.
                loop {
                    match self.input.recv(until) {
                        Some(Chunk::Data(_)) => continue,
                        _ => return Some(ConnectionEnd::Fault),
                    }
                }
            }
            FaultKind::Status500 => {
                let r = Response::error(Status::INTERNAL_SERVER_ERROR);
                self.send(req, r, started, keep_alive, None, Some("500"))
                    .err()
                    .map(|_| ConnectionEnd::IoError)
            }
            FaultKind::Redirect => {
                let location = format!(
                    "{}{}",
                    fault.redirect_to.trim_end_matches('/'),
                    req.head.path
                );
                let r = Response::text(Status::FOUND, "Found").with_header("Location", location);
                self.send(req, r, started, keep_alive, None, Some("redirect"))
                    .err()
                    .map(|_| ConnectionEnd::IoError)
            }
            FaultKind::Slow => {
                let r = self.handler.handle(req, SystemTime::now());
                let slow = (
                    fault.slow_delay,
                    (Instant::now() + fault.slow_max).min(self.deadline),
                );
                self.send(req, r, started, keep_alive, Some(slow), Some("slow"))
                    .err()
                    .map(|_| ConnectionEnd::IoError)
            }
            FaultKind::Garbage => {
                let _ = self.out.write_all(GARBAGE).and_then(|()| self.out.flush());
                self.log_line(
                    req.head.method.as_str(),
                    &req.head.path,
                    Status(0, "garbage"),
                    GARBAGE.len() as u64,
                    Some(started),
                    Some("garbage"),
                );
                Some(ConnectionEnd::Fault)
            }
        }
    }

    fn send(
        &mut self,
        req: &Request,
        mut response: Response,
        started: Instant,
        keep_alive: bool,
        slow: Option<(Duration, Instant)>,
        fault: Option<&str>,
    ) -> io::Result<()> {
        let head_only = req.head.method == Method::Head;
        let sent = match slow {
            None => response.write_to(&mut self.out, head_only, keep_alive),
            Some((delay, until)) => {
                self.out.flush()?;
                let mut t = Trickle {
                    inner: self.out.get_mut(),
                    delay,
                    until,
                };
                response.write_to(&mut t, head_only, keep_alive)
            }
        };
        let flushed = sent.and_then(|n| self.out.flush().map(|()| n));
        let bytes = *flushed.as_ref().unwrap_or(&0);
        self.log_line(
            req.head.method.as_str(),
            &req.head.path,
            response.status,
            bytes,
            Some(started),
            fault,
        );
        flushed.map(|_| ())
    }

    fn log_line(
        &self,
        method: &str,
        path: &str,
        status: Status,
        bytes: u64,
        started: Option<Instant>,
        note: Option<&str>,
    ) {
        let ms = started.map_or(0, |s| s.elapsed().as_millis());
        tracing::info!(
            peer = self.peer,
            method,
            path,
            status = status.0,
            bytes,
            ms,
            note = note.unwrap_or(""),
            "request"
        );
        if let Some(log) = &self.cfg.access_log {
            let ts = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            // Paths are visible ASCII (checked by the parser), so one line per request.
            let line = format!(
                "{ts:.3} {} {method} {path} {} {bytes} {ms}ms{}\n",
                self.peer,
                status.0,
                note.map(|n| format!(" fault={n}")).unwrap_or_default()
            );
            if let Ok(mut f) = log.lock() {
                let _ = f.write_all(line.as_bytes());
            }
        }
    }
}

/// A TCP metadata server: one thread per connection, at most
/// [`ServerConfig::max_connections`] at once.
#[derive(Debug)]
pub struct TcpServer {
    listener: TcpListener,
}

impl TcpServer {
    /// Binds `addr` (use port 0 for any free port).
    pub fn bind(addr: SocketAddr) -> io::Result<TcpServer> {
        Ok(TcpServer {
            listener: TcpListener::bind(addr)?,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts and serves connections forever (returns only if accepting fails hard).
    pub fn run(self, handler: Arc<dyn Handler>, cfg: Arc<ServerConfig>) -> io::Result<()> {
        let active = Arc::new(AtomicUsize::new(0));
        loop {
            let (stream, peer) = match self.listener.accept() {
                Ok(x) => x,
                Err(e) if is_transient_accept_error(&e) => {
                    tracing::warn!(error = %e, "accept failed; continuing");
                    thread::sleep(Duration::from_millis(50));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if active.fetch_add(1, Ordering::SeqCst) >= cfg.max_connections {
                active.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!(%peer, max = cfg.max_connections, "too many connections: answering 503");
                let mut s = stream;
                let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = Response::error(Status::SERVICE_UNAVAILABLE).write_to(&mut s, false, false);
                let _ = s.shutdown(Shutdown::Both);
                continue;
            }
            let (handler, cfg, active2) = (handler.clone(), cfg.clone(), active.clone());
            let spawned = thread::Builder::new()
                .name(format!("mdserver-{peer}"))
                .spawn(move || {
                    serve_tcp_stream(stream, peer, handler.as_ref(), &cfg);
                    active2.fetch_sub(1, Ordering::SeqCst);
                });
            if let Err(e) = spawned {
                active.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!(%peer, error = %e, "could not start a connection thread");
            }
        }
    }
}

fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::OutOfMemory
    ) || matches!(e.raw_os_error(), Some(23 | 24)) // ENFILE, EMFILE: wait for fds to free up
}

/// Serves one accepted TCP connection and shuts the socket down afterwards.
pub fn serve_tcp_stream(
    stream: TcpStream,
    peer: SocketAddr,
    handler: &dyn Handler,
    cfg: &ServerConfig,
) -> ConnectionSummary {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(cfg.write_timeout));
    let reader = match stream.try_clone() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cloning the socket failed");
            return ConnectionSummary {
                requests: 0,
                end: ConnectionEnd::IoError,
            };
        }
    };
    let summary = serve_connection(reader, &stream, handler, cfg, &peer.to_string());
    // Wakes the reader thread (its read returns) and tells the client we are done.
    let _ = stream.shutdown(Shutdown::Both);
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    struct Echo;
    impl Handler for Echo {
        fn handle(&self, req: &Request, _now: SystemTime) -> Response {
            Response::text(Status::OK, format!("{} {}", req.head.method, req.head.path))
        }
    }

    fn run(input: &[u8], cfg: &ServerConfig) -> (String, ConnectionSummary) {
        let mut out = Vec::new();
        let s = serve_connection(Cursor::new(input.to_vec()), &mut out, &Echo, cfg, "test");
        (String::from_utf8_lossy(&out).into_owned(), s)
    }

    #[test]
    fn keep_alive_and_pipelining() {
        let (out, s) = run(
            b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nHEAD /c HTTP/1.1\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\n\r\n",
            &ServerConfig::default(),
        );
        assert_eq!(s.requests, 3);
        assert_eq!(s.end, ConnectionEnd::RequestedClose);
        assert!(out.contains("GET /a") && out.contains("GET /b"), "{out}");
        assert!(!out.contains("HEAD /c") && !out.contains("/never"), "{out}");
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 3);
    }

    #[test]
    fn body_is_read_and_next_request_follows() {
        let (out, s) = run(
            b"PUT /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /y HTTP/1.1\r\n\r\n",
            &ServerConfig::default(),
        );
        assert_eq!(s.requests, 2, "{out}");
        assert_eq!(s.end, ConnectionEnd::ClientClosed);
        assert!(out.contains("PUT /x") && out.contains("GET /y"));
    }

    #[test]
    fn eof_mid_request() {
        let (out, s) = run(b"GET /a HTTP/1.1\r\nHost", &ServerConfig::default());
        assert_eq!(s.end, ConnectionEnd::ClientClosedMidRequest);
        assert!(out.is_empty());
        let (_, s) = run(
            b"PUT /x HTTP/1.1\r\nContent-Length: 50\r\n\r\nshort",
            &ServerConfig::default(),
        );
        assert_eq!(s.end, ConnectionEnd::ClientClosedMidRequest);
    }

    #[test]
    fn oversized_requests_are_refused() {
        let big = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(20_000));
        let (out, s) = run(big.as_bytes(), &ServerConfig::default());
        assert_eq!(s.end, ConnectionEnd::BadRequest);
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
        let (out, _) = run(
            b"PUT /x HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n",
            &ServerConfig::default(),
        );
        assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
    }

    /// A reader that yields some bytes, then blocks (like a silent client) until dropped.
    struct Stall(Option<Vec<u8>>, std::sync::mpsc::Receiver<()>);
    impl Read for Stall {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if let Some(d) = self.0.take() {
                buf[..d.len()].copy_from_slice(&d);
                return Ok(d.len());
            }
            let _ = self.1.recv();
            Ok(0)
        }
    }

    fn stalled(prefix: &[u8], cfg: &ServerConfig) -> (String, ConnectionSummary, Duration) {
        let (_tx, rx) = std::sync::mpsc::channel();
        let mut out = Vec::new();
        let t = Instant::now();
        let s = serve_connection(Stall(Some(prefix.to_vec()), rx), &mut out, &Echo, cfg, "t");
        (String::from_utf8_lossy(&out).into_owned(), s, t.elapsed())
    }

    #[test]
    fn timeouts() {
        let cfg = ServerConfig {
            idle_timeout: Duration::from_millis(200),
            request_timeout: Duration::from_millis(300),
            ..ServerConfig::default()
        };
        let (out, s, took) = stalled(b"GET /a HTTP/1.1\r\n\r\n", &cfg);
        assert_eq!(
            (s.requests, s.end),
            (1, ConnectionEnd::IdleTimeout),
            "{out}"
        );
        assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(5));
        let (out, s, took) = stalled(b"GET /a HTTP/1.1\r\nHo", &cfg);
        assert_eq!(s.end, ConnectionEnd::RequestTimeout);
        assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
        assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(5));
    }

    #[test]
    fn faults() {
        let mut cfg = ServerConfig::default();
        let mut fault = Fault::new(FaultKind::Status500);
        fault.path_prefix = Some("/bad".into());
        cfg.fault = Some(fault.clone());
        let (out, s) = run(
            b"GET /bad/x HTTP/1.1\r\n\r\nGET /good HTTP/1.1\r\n\r\n",
            &cfg,
        );
        assert_eq!(s.requests, 2);
        assert!(out.starts_with("HTTP/1.1 500 "), "{out}");
        assert!(out.contains("GET /good"), "{out}");

        fault.kind = FaultKind::Redirect;
        cfg.fault = Some(fault.clone());
        let (out, _) = run(b"GET /bad/x HTTP/1.1\r\n\r\n", &cfg);
        assert!(out.starts_with("HTTP/1.1 302 "), "{out}");
        assert!(
            out.contains("Location: http://metadata.invalid/bad/x\r\n"),
            "{out}"
        );

        fault.kind = FaultKind::Garbage;
        cfg.fault = Some(fault.clone());
        let (out, s) = run(b"GET /bad HTTP/1.1\r\n\r\nGET /good HTTP/1.1\r\n\r\n", &cfg);
        assert_eq!(s.end, ConnectionEnd::Fault);
        assert!(!out.starts_with("HTTP/"));
        assert!(!out.contains("/good"));

        fault.kind = FaultKind::Slow;
        fault.slow_delay = Duration::from_millis(5);
        cfg.fault = Some(fault.clone());
        let t = Instant::now();
        let (out, _) = run(b"GET /bad HTTP/1.1\r\n\r\n", &cfg);
        assert!(out.ends_with("GET /bad"), "{out}");
        // Every byte was delayed.
        assert!(t.elapsed() >= Duration::from_millis(5 * out.len() as u64));

        fault.kind = FaultKind::Hang;
        fault.hang_for = Duration::from_millis(300);
        cfg.fault = Some(fault);
        let (out, s, took) = stalled(b"GET /bad HTTP/1.1\r\n\r\n", &cfg);
        assert_eq!(s.end, ConnectionEnd::Fault);
        assert!(out.is_empty(), "{out}");
        assert!(took >= Duration::from_millis(300));
    }

    /// A client that sends a keep-alive request every `period`, forever.
    struct Chatty(Duration);
    impl Read for Chatty {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            thread::sleep(self.0);
            let req = b"GET /again HTTP/1.1\r\n\r\n";
            buf[..req.len()].copy_from_slice(req);
            Ok(req.len())
        }
    }

    #[test]
    fn busy_connections_end_at_the_time_limit() {
        let cfg = ServerConfig {
            idle_timeout: Duration::from_millis(300),
            max_connection_time: Duration::from_millis(600),
            ..ServerConfig::default()
        };
        let t = Instant::now();
        let mut out = Vec::new();
        let s = serve_connection(
            Chatty(Duration::from_millis(50)),
            &mut out,
            &Echo,
            &cfg,
            "t",
        );
        let took = t.elapsed();
        // Never idle, far below the request limit: only the time limit ends it.
        assert_eq!(s.end, ConnectionEnd::TimeLimit);
        assert!(s.requests > 2, "{s:?}");
        assert!(
            took >= Duration::from_millis(600) && took < Duration::from_secs(5),
            "{took:?}"
        );
        // A hang fault does not outlast it either.
        let mut fault = Fault::new(FaultKind::Hang);
        fault.hang_for = Duration::from_secs(60);
        let cfg = ServerConfig {
            fault: Some(fault),
            ..cfg
        };
        let (_, s, took) = stalled(b"GET /x HTTP/1.1\r\n\r\n", &cfg);
        assert_eq!(s.end, ConnectionEnd::Fault);
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    /// Yields its chunks one `read` at a time.
    struct Chunks(std::collections::VecDeque<&'static [u8]>);
    impl Read for Chunks {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some(c) = self.0.pop_front() else {
                return Ok(0);
            };
            buf[..c.len()].copy_from_slice(c);
            Ok(c.len())
        }
    }

    #[test]
    fn expect_continue() {
        let reader = Chunks(
            [
                &b"PUT /t HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"[..],
                b"ok",
            ]
            .into(),
        );
        let mut out = Vec::new();
        let s = serve_connection(reader, &mut out, &Echo, &ServerConfig::default(), "t");
        let out = String::from_utf8(out).unwrap();
        assert_eq!(s.requests, 1);
        assert!(
            out.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"),
            "{out}"
        );
        // Without Expect, no interim response.
        let (out, _) = run(
            b"PUT /t HTTP/1.1\r\nContent-Length: 2\r\n\r\nok",
            &ServerConfig::default(),
        );
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    }
}
