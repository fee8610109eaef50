//! The metadata worker: everything that reads untrusted metadata — finding and crawling the
//! datasources, parsing meta-data, decoding user-data (gzip, MIME, cloud-config) and fetching
//! its `#include` URLs — runs in a child process of PID 1, never in PID 1 itself.
//!
//! PID 1 cannot be killed by the OOM killer, so an allocation blow-up inside it is a dead
//! machine. The worker is this same binary (`virga metadata-worker JOB`) started with a hard
//! heap limit ([`MEMORY_LIMIT`], `RLIMIT_DATA`) and the stage's deadline: a parser bug, a bomb
//! or a hang kills the worker, the stage records why, and boot goes on. The parsers themselves
//! are bounded too (`cloud_metadata::MEMORY_BUDGET`); the limit is the second wall.
//!
//! PID 1 hands the job over as JSON on the worker's stdin and reads the outcome, JSON too, from
//! its stdout, streamed and capped at [`MAX_OUTPUT`] bytes. Bytes travel as base64.

use std::io::{BufReader, Read, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use cloud_metadata::{
    CloudConfig, Datasource, InstanceMetadata, Limits, UserData, parse_user_data,
};
use serde::{Deserialize, Serialize};

use super::datasource::{self, Detection};

/// The worker's heap limit (`RLIMIT_DATA`: brk and private anonymous mappings). The parsers
/// stay under `cloud_metadata::MEMORY_BUDGET` (48 MiB) per call; the rest is for the decoded
/// result and the runtime.
pub const MEMORY_LIMIT: u64 = 96 << 20;
/// The most PID 1 reads back from a worker: the largest legitimate outcome (16 MiB of raw
/// user-data and 16 MiB decoded, as base64, plus the rest) with room to spare.
pub const MAX_OUTPUT: u64 = 64 << 20;
/// The applet name the worker runs under.
pub const APPLET: &str = "metadata-worker";

/// What the worker is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Job {
    /// Try the local datasources of `order` (seed directories, `cidata`, `config-2`).
    Local {
        /// Datasources, in order.
        order: Vec<Datasource>,
        /// The kernel command line (NoCloud's `ds=` seed).
        cmdline: String,
        /// The machine's own id (DMI product UUID), for instance-id fallbacks.
        platform_id: Option<String>,
    },
    /// Try the network datasources of `order` under one deadline.
    Network {
        /// Datasources, in order.
        order: Vec<Datasource>,
        /// The kernel command line (NoCloud's `ds=nocloud-net` seed).
        cmdline: String,
        /// The machine's own id.
        platform_id: Option<String>,
        /// Overall deadline of the crawl, in milliseconds.
        deadline_ms: u64,
        /// Base URL of the metadata services.
        url: String,
    },
    /// Decode vendor-data and user-data (fetching `#include` URLs) into a merged cloud-config.
    Decode {
        /// The datasource's answer.
        md: Box<InstanceMetadata>,
    },
}

/// What the worker found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Outcome {
    /// For [`Job::Local`] and [`Job::Network`].
    Detection(Box<Detection>),
    /// For [`Job::Decode`].
    Decoded(Box<Decoded>),
}

/// Decoded user-data and the cloud-config merged from vendor-data and user-data.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Decoded {
    /// User-data's parts (with the parts of its `#include`s appended).
    pub user_data: Option<UserData>,
    /// Vendor cloud-config, then user cloud-config merged over it.
    pub cloud_config: CloudConfig,
    /// `(source, message)` warnings.
    pub warnings: Vec<(String, String)>,
    /// `(source, message)` errors.
    pub errors: Vec<(String, String)>,
}

/// Why a worker gave no outcome.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// It could not be started.
    #[error("cannot start the metadata worker: {0}")]
    Spawn(#[source] std::io::Error),
    /// It ran past its deadline and was killed.
    #[error("the metadata worker did not finish within {0} s and was killed")]
    Timeout(u64),
    /// It died: a parser bug, or its memory limit (`{MEMORY_LIMIT}` bytes) was reached.
    #[error("the metadata worker died ({0}); its input is not used")]
    Died(String),
    /// Its answer was unreadable or too large.
    #[error("the metadata worker's answer is unusable: {0}")]
    Answer(String),
}

/// Runs `job` in a worker process, until `deadline` at the latest.
pub fn run(job: &Job, deadline: Instant) -> Result<Outcome, WorkerError> {
    let exe = std::env::current_exe().map_err(WorkerError::Spawn)?;
    let mut cmd = Command::new(exe);
    cmd.args([APPLET])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    crate::sys::limit_heap(&mut cmd, MEMORY_LIMIT);
    let started = Instant::now();
    let mut child = crate::children::spawn(&mut cmd).map_err(WorkerError::Spawn)?;
    let (stdin, stdout) = child.take_pipes();
    let (Some(mut stdin), Some(stdout)) = (stdin, stdout) else {
        return Err(WorkerError::Spawn(std::io::Error::other("no pipes")));
    };
    let request = serde_json::to_vec(job).map_err(|e| WorkerError::Answer(e.to_string()))?;
    // The request can be large (raw user-data): written from its own thread, so that a worker
    // that writes before it has read everything cannot deadlock with us.
    let writer = std::thread::Builder::new()
        .name("worker-stdin".into())
        .spawn(move || {
            let _ = stdin.write_all(&request);
        })
        .map_err(WorkerError::Spawn)?;
    let reader = std::thread::Builder::new()
        .name("worker-stdout".into())
        .spawn(move || {
            let capped = BufReader::new(stdout).take(MAX_OUTPUT);
            serde_json::from_reader::<_, Outcome>(capped)
        })
        .map_err(WorkerError::Spawn)?;
    let status = match child.wait_until(deadline) {
        Ok(Some(s)) => s,
        Ok(None) => {
            child.kill_group();
            let _ = reader.join();
            return Err(WorkerError::Timeout(started.elapsed().as_secs()));
        }
        Err(e) => {
            child.kill_group();
            return Err(WorkerError::Died(e.to_string()));
        }
    };
    let _ = writer.join();
    let answer = reader
        .join()
        .map_err(|_| WorkerError::Answer("reader panicked".into()))?;
    if !status.success() {
        return Err(WorkerError::Died(status.to_string()));
    }
    answer.map_err(|e| WorkerError::Answer(e.to_string()))
}

/// The `metadata-worker` applet: one job from stdin, its outcome on stdout.
pub fn main() -> ExitCode {
    crate::log::init(tracing::Level::INFO);
    let mut input = Vec::new();
    // The job is PID 1's own JSON; the cap only guards against a confused caller.
    if let Err(e) = std::io::stdin().take(MAX_OUTPUT).read_to_end(&mut input) {
        eprintln!("metadata-worker: stdin: {e}");
        return ExitCode::from(2);
    }
    let job: Job = match serde_json::from_slice(&input) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("metadata-worker: bad job: {e}");
            return ExitCode::from(2);
        }
    };
    drop(input);
    let outcome = perform(job);
    let mut out = std::io::stdout().lock();
    let written = serde_json::to_writer(&mut out, &outcome)
        .map_err(std::io::Error::from)
        .and_then(|()| out.flush());
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("metadata-worker: {e}");
            ExitCode::from(1)
        }
    }
}

/// Does the work of a job (in the worker; in-process only as a fallback, see
/// [`run_or_perform`]).
pub fn perform(job: Job) -> Outcome {
    let limits = super::limits();
    match job {
        Job::Local {
            order,
            cmdline,
            platform_id,
        } => {
            let devices = super::devices();
            Outcome::Detection(Box::new(datasource::detect_local(
                &order,
                &cmdline,
                &devices,
                &limits,
                platform_id.as_deref(),
            )))
        }
        Job::Network {
            order,
            cmdline,
            platform_id,
            deadline_ms,
            url,
        } => Outcome::Detection(Box::new(datasource::detect_network(
            &order,
            &cmdline,
            &limits,
            Duration::from_millis(deadline_ms),
            &url,
            platform_id.as_deref(),
        ))),
        Job::Decode { md } => Outcome::Decoded(Box::new(decode(&md, &limits))),
    }
}

/// [`run`], or — when no worker can be started at all (a broken image) — the job in this
/// process, with a warning: metadata is better read unprotected than not at all.
pub fn run_or_perform(
    job: Job,
    deadline: Instant,
    warn: &mut dyn FnMut(String),
) -> Result<Outcome, WorkerError> {
    match run(&job, deadline) {
        Err(WorkerError::Spawn(e)) => {
            warn(format!(
                "cannot start the metadata worker ({e}); reading metadata in PID 1 without a memory limit"
            ));
            Ok(perform(job))
        }
        other => other,
    }
}

/// Decodes vendor-data and user-data: user cloud-config is merged over vendor cloud-config;
/// `#include` URLs are fetched (http only, each at most the user-data size limit, at most
/// `max_include_urls` in all, not recursively) and their parts appended. Problems are
/// reported, never fatal.
pub fn decode(md: &InstanceMetadata, limits: &Limits) -> Decoded {
    let mut d = Decoded::default();
    if let Some(vd) = &md.vendor_data {
        match parse_user_data(vd, limits) {
            Ok(ud) => {
                d.cloud_config
                    .merge(CloudConfig::from_user_data(&ud, md.launch_index, limits))
            }
            Err(e) => d.warnings.push(("vendor-data".into(), e.to_string())),
        }
    }
    if let Some(raw) = &md.user_data {
        match parse_user_data(raw, limits) {
            Ok(mut ud) => {
                include(&mut ud, limits, &mut d);
                for w in &ud.warnings {
                    d.warnings.push(("user-data".into(), w.clone()));
                }
                d.cloud_config
                    .merge(CloudConfig::from_user_data(&ud, md.launch_index, limits));
                d.user_data = Some(ud);
            }
            Err(e) => d
                .errors
                .push(("user-data".into(), format!("{e}; user-data ignored"))),
        }
    }
    for w in &d.cloud_config.warnings {
        d.warnings.push(("cloud-config".into(), w.clone()));
    }
    if !d.cloud_config.unknown_keys.is_empty() {
        d.warnings.push((
            "cloud-config".into(),
            format!(
                "unsupported keys ignored: {}",
                d.cloud_config.unknown_keys.join(", ")
            ),
        ));
    }
    d
}

/// Fetches the `#include` parts' URLs and appends what they hold.
fn include(ud: &mut UserData, limits: &Limits, d: &mut Decoded) {
    use cloud_metadata::user_data::PartKind;
    let includes: Vec<_> = ud
        .parts
        .iter()
        .filter(|p| matches!(p.kind, PartKind::Include | PartKind::IncludeOnce))
        .map(|p| p.include_urls(limits))
        .collect();
    if includes.is_empty() {
        return;
    }
    let client = super::http::Client::new();
    let mut fetched = 0usize;
    for inc in includes {
        for w in inc.warnings {
            d.warnings.push(("user-data".into(), w));
        }
        for url in inc.urls {
            if fetched >= limits.max_include_urls {
                d.warnings.push((
                    "user-data".into(),
                    format!(
                        "#include: more than {} URLs in all; {} not fetched",
                        limits.max_include_urls, url.url
                    ),
                ));
                continue;
            }
            fetched += 1;
            if url.https {
                d.errors.push((
                    "user-data".into(),
                    format!(
                        "#include {}: https is not supported (no TLS in the guest)",
                        url.url
                    ),
                ));
                continue;
            }
            let req = cloud_metadata::http::HttpRequest {
                method: cloud_metadata::http::Method::Get,
                path: url.path.clone(),
                headers: vec![],
                timeout: Duration::from_secs(10),
                max_body: limits.max_user_data_bytes,
            };
            let body = match client.send(&url.base(), &req) {
                cloud_metadata::http::HttpOutcome::Response { status: 200, body } => body,
                cloud_metadata::http::HttpOutcome::Response { status, .. } => {
                    d.errors.push((
                        "user-data".into(),
                        format!("#include {}: HTTP {status}", url.url),
                    ));
                    continue;
                }
                cloud_metadata::http::HttpOutcome::Failed(e) => {
                    d.errors
                        .push(("user-data".into(), format!("#include {}: {e}", url.url)));
                    continue;
                }
            };
            match parse_user_data(&body, limits) {
                Ok(inner) => {
                    let nested = inner
                        .parts
                        .iter()
                        .filter(|p| matches!(p.kind, PartKind::Include | PartKind::IncludeOnce))
                        .count();
                    if nested > 0 {
                        d.warnings.push((
                            "user-data".into(),
                            format!("#include {}: nested #include not followed", url.url),
                        ));
                    }
                    d.warnings.extend(
                        inner
                            .warnings
                            .into_iter()
                            .map(|w| ("user-data".into(), format!("#include {}: {w}", url.url))),
                    );
                    ud.parts.extend(
                        inner.parts.into_iter().filter(|p| {
                            !matches!(p.kind, PartKind::Include | PartKind::IncludeOnce)
                        }),
                    );
                    tracing::info!("user-data: #include {} fetched", url.url);
                }
                Err(e) => d
                    .errors
                    .push(("user-data".into(), format!("#include {}: {e}", url.url))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_and_outcomes_cross_the_pipe_intact() {
        let mut md = InstanceMetadata::new(Datasource::NoCloud, "iid-1");
        md.user_data = Some(b"#cloud-config\nruncmd: [echo hi]\n".to_vec());
        let job = Job::Decode {
            md: Box::new(md.clone()),
        };
        let back: Job = serde_json::from_slice(&serde_json::to_vec(&job).unwrap()).unwrap();
        let Job::Decode { md: back } = back else {
            panic!()
        };
        assert_eq!(*back, md);
        let out = perform(Job::Decode { md: back });
        let text = serde_json::to_vec(&out).unwrap();
        let Outcome::Decoded(d) = serde_json::from_slice::<Outcome>(&text).unwrap() else {
            panic!()
        };
        assert_eq!(d.cloud_config.runcmd.len(), 1);
        assert_eq!(d.user_data.unwrap().parts.len(), 1);
    }

    #[test]
    fn includes_are_fetched_and_bad_ones_reported() {
        use std::io::{BufRead, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(2).flatten() {
                let mut r = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let body = if line.contains("/a.sh") {
                    "#!/bin/sh\necho included\n"
                } else {
                    ""
                };
                let status = if body.is_empty() {
                    "404 Not Found"
                } else {
                    "200 OK"
                };
                let mut s = stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        let mut md = InstanceMetadata::new(Datasource::NoCloud, "iid-1");
        md.user_data = Some(
            format!(
                "#include\nhttp://127.0.0.1:{port}/a.sh\nhttp://127.0.0.1:{port}/missing\nhttps://example.invalid/x\nftp://nope/\n"
            )
            .into_bytes(),
        );
        let d = decode(&md, &Limits::default());
        let ud = d.user_data.unwrap();
        assert!(
            ud.parts
                .iter()
                .any(|p| p.content == b"#!/bin/sh\necho included\n"),
            "{:?}",
            ud.parts
        );
        let errors: Vec<String> = d.errors.iter().map(|e| e.1.clone()).collect();
        assert!(errors.iter().any(|e| e.contains("HTTP 404")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("https")), "{errors:?}");
        assert!(
            d.warnings.iter().any(|w| w.1.contains("ftp")),
            "{:?}",
            d.warnings
        );
    }
}
