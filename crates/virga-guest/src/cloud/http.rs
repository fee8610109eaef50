//! The HTTP driver for the sans-IO metadata crawlers: one request, one deadline, a bounded body,
//! redirects reported, never followed.

use std::io::Read;

use cloud_metadata::http::{HttpOutcome, HttpRequest, Method};

/// An HTTP client for one crawl. Connections are not kept alive: measured through QEMU's user
/// networking, every request on a kept-alive connection stalled ~40 ms on a delayed ACK, while a
/// fresh connection (even one that starts a metadata-server process behind `guestfwd`) took
/// ~15 ms. Metadata crawls are a dozen tiny requests, so this costs little anywhere else.
#[derive(Debug)]
pub struct Client {
    agent: ureq::Agent,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A client that never follows redirects and reports every status as it is.
    pub fn new() -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .max_response_header_size(16 * 1024)
            .max_idle_connections_per_host(0)
            .user_agent(concat!("virga/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self { agent }
    }

    /// Sends `req` to `base` (e.g. `http://169.254.169.254`) and reports what happened.
    pub fn send(&self, base: &str, req: &HttpRequest) -> HttpOutcome {
        let t = std::time::Instant::now();
        let out = send_with(&self.agent, base, req);
        let what = match &out {
            HttpOutcome::Response { status, body } => format!("{status}, {} bytes", body.len()),
            HttpOutcome::Failed(e) => e.clone(),
        };
        tracing::debug!(
            "{} {}: {what} in {:.1} ms",
            req.method,
            req.path,
            t.elapsed().as_secs_f64() * 1e3
        );
        out
    }
}

fn send_with(agent: &ureq::Agent, base: &str, req: &HttpRequest) -> HttpOutcome {
    let url = if base.ends_with('/') && req.path.starts_with('/') {
        format!("{}{}", base.trim_end_matches('/'), req.path)
    } else if !base.ends_with('/') && !req.path.starts_with('/') {
        format!("{base}/{}", req.path)
    } else {
        format!("{base}{}", req.path)
    };
    let timeout = Some(req.timeout);
    let result = match req.method {
        Method::Get => {
            let mut r = agent.get(&url).config().timeout_global(timeout).build();
            for (k, v) in &req.headers {
                r = r.header(k.as_str(), v.as_str());
            }
            r.call()
        }
        Method::Put => {
            let mut r = agent.put(&url).config().timeout_global(timeout).build();
            for (k, v) in &req.headers {
                r = r.header(k.as_str(), v.as_str());
            }
            r.send_empty()
        }
    };
    match result {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let mut body = Vec::new();
            let limit = req.max_body as u64 + 1;
            match resp
                .into_body()
                .into_reader()
                .take(limit)
                .read_to_end(&mut body)
            {
                Ok(_) => HttpOutcome::Response { status, body },
                Err(e) => HttpOutcome::Failed(format!("{} {url}: reading body: {e}", req.method)),
            }
        }
        Err(e) => HttpOutcome::Failed(format!("{} {url}: {e}", req.method)),
    }
}
