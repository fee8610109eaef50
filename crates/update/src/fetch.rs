//! The blocking HTTP driver: fetch a channel manifest and stream a payload through the
//! [`StreamVerifier`] into a [`Sink`], resuming with `Range` requests (feature `http`).
//!
//! Plain HTTP through `ureq` (the client the guest already links), no TLS: integrity comes from
//! the signed manifest and the chunk hashes, never from the transport. What the server can do
//! to us is bounded:
//! - **size**: a manifest body is read up to [`MAX_MANIFEST`] bytes (more is an error); a
//!   payload body is read only as far as the manifest's size, one 64 KiB buffer and one chunk
//!   at a time;
//! - **redirects** are not followed (the repository layout needs none; a redirect could point
//!   anywhere): a `3xx` is an error naming the `Location`;
//! - **time**: connect and per-read timeouts (a stalled server), and each request's body must
//!   arrive at a minimum rate ([`FetchOptions::min_rate`]) or it is cut (a slow-drip server);
//! - **resume**: a payload is fetched in windows of [`FetchOptions::window`] bytes with
//!   `Range: bytes=A-B`; a cut or timed-out request is retried with exponential backoff from
//!   the verifier's position (partly received chunks are kept), up to
//!   [`FetchOptions::max_failures`] failures in a row without progress;
//! - **lies**: a `206` whose `Content-Range` is not the range asked for, or whose total is not
//!   the signed size, is refused; a `200` to a range request is read from the start, skipping
//!   what is already verified.
//!
//! Verification failures (a bad chunk) and client errors (`4xx`) are not retried here: the agent
//! reports them and tries again at its next scheduled check.

use std::io::Read;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::manifest::{MAX_MANIFEST, VerifiedManifest};
use crate::payload::{PayloadError, Sink, StreamVerifier};
use crate::version::Channel;

/// Settings of the HTTP driver.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Longest a single read may wait for bytes.
    pub read_timeout: Duration,
    /// Whole-request limit for a manifest.
    pub manifest_timeout: Duration,
    /// Bytes per second a payload request must sustain on average (after
    /// [`FetchOptions::slack`]).
    pub min_rate: u64,
    /// Extra time every payload request gets.
    pub slack: Duration,
    /// Bytes per `Range` request.
    pub window: u64,
    /// Failures in a row (without a verified chunk in between) before giving up.
    pub max_failures: u32,
    /// First retry delay.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            manifest_timeout: Duration::from_secs(60),
            min_rate: 32 * 1024,
            slack: Duration::from_secs(15),
            window: 8 << 20,
            max_failures: 6,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(120),
        }
    }
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// A URL that is not plain `http://`.
    #[error("{0}")]
    Url(String),
    /// An HTTP status other than the one expected.
    #[error("GET {url}: HTTP {status}")]
    Status {
        /// URL.
        url: String,
        /// Status.
        status: u16,
    },
    /// A redirect (never followed).
    #[error(
        "GET {url}: redirect to {location:?} refused (update repositories are served without redirects)"
    )]
    Redirect {
        /// URL.
        url: String,
        /// `Location`.
        location: String,
    },
    /// Connection, timeout or read failure.
    #[error("GET {url}: {message}")]
    Transport {
        /// URL.
        url: String,
        /// What happened.
        message: String,
    },
    /// A manifest over the size limit.
    #[error("GET {url}: response over {max} bytes refused")]
    TooLarge {
        /// URL.
        url: String,
        /// Limit.
        max: usize,
    },
    /// The server answered a range request with another range or size.
    #[error("GET {url}: {message}")]
    Range {
        /// URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The payload failed verification or could not be written.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// Too many failures in a row.
    #[error("gave up after {attempts} failed attempts in a row")]
    GaveUp {
        /// Attempts.
        attempts: u32,
        /// The last failure.
        #[source]
        last: Box<FetchError>,
    },
}

impl FetchError {
    /// Worth retrying after a pause (transport problems, server errors, a cut body).
    pub fn is_retryable(&self) -> bool {
        match self {
            FetchError::Transport { .. } => true,
            FetchError::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }
}

/// What a download needs from its environment: sleeping, randomness for jitter, progress.
pub trait DownloadEnv {
    /// Waits this long (tests may record instead).
    fn sleep(&mut self, d: Duration);
    /// Any random number.
    fn random(&mut self) -> u64;
    /// Called after every request with the verified position, once the sink has synced what
    /// it covers; persist `chunks_done` to resume
    /// after a restart.
    fn progress(&mut self, _verifier: &StreamVerifier) {}
    /// Called before each retry, with the failure.
    fn retrying(&mut self, _error: &FetchError, _delay: Duration) {}
}

/// Real sleeps, std's random seeds, no progress reports.
#[derive(Debug, Default)]
pub struct StdEnv;

impl DownloadEnv for StdEnv {
    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }

    fn random(&mut self) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    }
}

/// A client for one repository.
#[derive(Debug)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    opts: FetchOptions,
}

/// What a finished download did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadReport {
    /// Requests made.
    pub requests: u32,
    /// Failed requests that were retried.
    pub retries: u32,
}

impl Client {
    /// A client for the repository at `base` (`http://host[:port][/path]`).
    pub fn new(base: &str, opts: FetchOptions) -> Result<Client, FetchError> {
        let base = crate::config::check_http_url(base).map_err(|e| FetchError::Url(e.0))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .max_response_header_size(16 * 1024)
            .timeout_connect(Some(opts.connect_timeout))
            .timeout_per_read(Some(opts.read_timeout))
            .user_agent(concat!("virga-update/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Client { agent, base, opts })
    }

    /// The URL of a repository path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path.trim_start_matches('/'))
    }

    fn get(
        &self,
        url: &str,
        range: Option<(u64, u64)>,
        timeout: Duration,
    ) -> Result<ureq::http::Response<ureq::Body>, FetchError> {
        let mut req = self
            .agent
            .get(url)
            .config()
            .timeout_global(Some(timeout))
            .build();
        if let Some((a, b)) = range {
            req = req.header("Range", format!("bytes={a}-{b}"));
        }
        let resp = req.call().map_err(|e| FetchError::Transport {
            url: url.to_owned(),
            message: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        if (300..400).contains(&status) {
            let location = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            return Err(FetchError::Redirect {
                url: url.to_owned(),
                location,
            });
        }
        Ok(resp)
    }

    /// Fetches a small document (`None` on 404), at most `max` bytes.
    pub fn fetch_small(&self, path: &str, max: usize) -> Result<Option<Vec<u8>>, FetchError> {
        let url = self.url(path);
        let resp = self.get(&url, None, self.opts.manifest_timeout)?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            status => return Err(FetchError::Status { url, status }),
        }
        let mut body = Vec::new();
        resp.into_body()
            .into_reader()
            .take(max as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| FetchError::Transport {
                url: url.clone(),
                message: format!("reading body: {e}"),
            })?;
        if body.len() > max {
            return Err(FetchError::TooLarge { url, max });
        }
        Ok(Some(body))
    }

    /// Fetches a channel's signed manifest (verify it with [`crate::manifest::check`]).
    pub fn fetch_manifest(&self, channel: &Channel) -> Result<Vec<u8>, FetchError> {
        let path = channel.manifest_path();
        self.fetch_small(&path, MAX_MANIFEST)?
            .ok_or_else(|| FetchError::Status {
                url: self.url(&path),
                status: 404,
            })
    }

    /// Streams the payload of `manifest` through `verifier` into `sink`, from the verifier's
    /// position to the end, retrying with backoff; see the module documentation.
    pub fn download(
        &self,
        manifest: &VerifiedManifest,
        verifier: &mut StreamVerifier,
        sink: &mut dyn Sink,
        env: &mut dyn DownloadEnv,
    ) -> Result<DownloadReport, FetchError> {
        let url = self.url(&manifest.body().payload.path);
        let mut backoff = Backoff::new(self.opts.backoff_base, self.opts.backoff_max);
        let mut report = DownloadReport {
            requests: 0,
            retries: 0,
        };
        let mut failures = 0u32;
        while !verifier.is_complete() {
            let before = verifier.chunks_done();
            report.requests += 1;
            let result = self.fetch_window(&url, verifier, sink);
            // Progress is recorded only once what it covers is durable.
            sink.sync().map_err(PayloadError::Sync)?;
            env.progress(verifier);
            match result {
                Ok(()) => {
                    failures = 0;
                    backoff.reset();
                }
                Err(e) if e.is_retryable() => {
                    if verifier.chunks_done() > before {
                        failures = 0;
                        backoff.reset();
                    }
                    failures += 1;
                    if failures >= self.opts.max_failures {
                        return Err(FetchError::GaveUp {
                            attempts: failures,
                            last: Box::new(e),
                        });
                    }
                    let d = backoff.next_delay(env.random());
                    env.retrying(&e, d);
                    tracing::info!(
                        "{e}; retrying in {:.1} s from byte {}",
                        d.as_secs_f64(),
                        verifier.position()
                    );
                    report.retries += 1;
                    env.sleep(d);
                }
                Err(e) => return Err(e),
            }
        }
        verifier.finish()?;
        Ok(report)
    }

    /// One request: bytes `position .. position + window` of the payload.
    fn fetch_window(
        &self,
        url: &str,
        verifier: &mut StreamVerifier,
        sink: &mut dyn Sink,
    ) -> Result<(), FetchError> {
        let size = verifier.size();
        let start = verifier.position();
        let end = (start + self.opts.window).min(size) - 1;
        let want = end + 1 - start;
        let timeout = self.opts.slack
            + Duration::from_secs_f64(want as f64 / self.opts.min_rate.max(1) as f64);
        let resp = self.get(url, Some((start, end)), timeout)?;
        let status = resp.status().as_u16();
        let skip = match status {
            206 => {
                let cr = resp
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let expect = format!("bytes {start}-{end}/{size}");
                if cr != expect {
                    let total = cr.rsplit('/').next().and_then(|t| t.parse::<u64>().ok());
                    let message = match total {
                        Some(t) if t != size => format!(
                            "the server's payload is {t} bytes but the signed manifest says {size}: refusing a truncated or different payload"
                        ),
                        _ => format!(
                            "asked for bytes {start}-{end}/{size}, got Content-Range {cr:?}"
                        ),
                    };
                    return Err(FetchError::Range {
                        url: url.to_owned(),
                        message,
                    });
                }
                0
            }
            // A server that ignores Range: read from the start, skip what is verified.
            200 => start,
            416 => {
                return Err(FetchError::Range {
                    url: url.to_owned(),
                    message: format!(
                        "range {start}-{end} not satisfiable: the server's payload is shorter than the signed {size} bytes"
                    ),
                });
            }
            status => {
                return Err(FetchError::Status {
                    url: url.to_owned(),
                    status,
                });
            }
        };
        let mut reader = resp.into_body().into_reader();
        let mut buf = vec![0u8; 64 * 1024];
        let mut skipped = 0u64;
        let mut got = 0u64;
        while got < want {
            let n = match reader.read(&mut buf) {
                Ok(0) => {
                    return Err(FetchError::Transport {
                        url: url.to_owned(),
                        message: format!(
                            "connection closed after {got} of {want} bytes (resuming at byte {})",
                            verifier.position()
                        ),
                    });
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(FetchError::Transport {
                        url: url.to_owned(),
                        message: format!(
                            "reading body after {got} of {want} bytes: {e} (resuming at byte {})",
                            verifier.position()
                        ),
                    });
                }
            };
            let mut data = &buf[..n];
            if skipped < skip {
                let s = (skip - skipped).min(data.len() as u64) as usize;
                skipped += s as u64;
                data = &data[s..];
            }
            let take = (want - got).min(data.len() as u64) as usize;
            verifier.feed(&data[..take], sink)?;
            got += take as u64;
        }
        Ok(())
    }
}
