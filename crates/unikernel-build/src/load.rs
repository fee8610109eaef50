//! A small HTTP/1.1 load generator (one request per connection, `Connection: close`), used by
//! the benchmark and the tests so every target is measured with the same client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Result of a load run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadResult {
    /// Successful requests (status 200, full body).
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl LoadResult {
    /// Successful requests per second.
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// One `GET path`; returns (status, body).
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    // One write: a server that answers after the first segment must see the whole request.
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed HTTP response");
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head = std::str::from_utf8(&resp[..split]).map_err(|_| bad())?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    let body = resp[split + 4..].to_vec();
    let len = head.lines().find_map(|l| {
        l.strip_prefix("Content-Length: ")
            .and_then(|v| v.trim().parse().ok())
    });
    if len.is_some_and(|l: usize| l != body.len()) {
        return Err(bad());
    }
    Ok((status, body))
}

/// Sends requests from `concurrency` clients for `duration` (or until `max_requests`).
pub fn run(
    addr: SocketAddr,
    path: &str,
    concurrency: usize,
    duration: Duration,
    max_requests: u64,
) -> LoadResult {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let issued = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (ok, errors, issued, stop) =
                (ok.clone(), errors.clone(), issued.clone(), stop.clone());
            let path = path.to_owned();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) && start.elapsed() < duration {
                    if issued.fetch_add(1, Ordering::Relaxed) >= max_requests {
                        break;
                    }
                    match get(addr, &path, Duration::from_secs(10)) {
                        Ok((200, body)) if !body.is_empty() => ok.fetch_add(1, Ordering::Relaxed),
                        _ => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    stop.store(true, Ordering::Relaxed);
    LoadResult {
        ok: ok.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_against_a_local_server() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for _ in 0..5 {
                let (mut s, _) = l.accept().unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).unwrap();
                    assert!(n > 0);
                    req.extend_from_slice(&buf[..n]);
                }
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .unwrap();
            }
        });
        let r = run(addr, "/", 1, Duration::from_secs(10), 5);
        server.join().unwrap();
        assert_eq!((r.ok, r.errors), (5, 0));
        assert!(r.rps() > 0.0);
    }
}
