//! Datasource drivers: thin I/O around the sans-IO crawlers of `cloud-metadata`.
//!
//! Local sources (a NoCloud seed directory or `cidata` disk, a `config-2` config drive) are read
//! before the network is up; network sources (OpenStack and EC2 metadata services at
//! 169.254.169.254, a `ds=nocloud-net;s=http://…/` seed) after it. Every source is bounded:
//! sizes by `Limits`, time by per-request timeouts and an overall deadline with capped backoff.

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use cloud_metadata::ec2::{Ec2Config, Ec2Crawler};
use cloud_metadata::http::{Crawler, HttpOutcome, HttpRequest, drive};
use cloud_metadata::nocloud::{NoCloudCrawler, NoCloudSeed, SeedMode};
use cloud_metadata::openstack::{OpenstackConfig, OpenstackCrawler};
use cloud_metadata::retry::{Backoff, Retry};
use cloud_metadata::{Datasource, InstanceMetadata, Limits, MetadataError};

use super::blockdev::{self, Labelled, Mounted};

/// Seed directories NoCloud reads, as cloud-init does.
pub const SEED_DIRS: &[&str] = &[
    "/var/lib/cloud/seed/nocloud",
    "/var/lib/cloud/seed/nocloud-net",
];

/// Why a datasource that is present could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The NoCloud seed string on the command line (`ds=nocloud;…`) is malformed.
    #[error("kernel command line: {0}")]
    Seed(#[source] MetadataError),
    /// A seed disk or config drive could not be mounted.
    #[error("mount {device}: {source}")]
    Mount {
        /// The device.
        device: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The medium or service answered, but not with usable metadata.
    #[error("{location}: {source}")]
    Read {
        /// The device, directory or URL.
        location: String,
        /// Why.
        #[source]
        source: MetadataError,
    },
    /// The service did not answer in time.
    #[error("{source} (gave up after {attempts} attempts)")]
    GaveUp {
        /// The last failure.
        #[source]
        source: MetadataError,
        /// How many tries.
        attempts: u32,
    },
    /// `ds=nocloud-net;s=https://…`.
    #[error("https seeds are not supported (no TLS in the guest)")]
    Https,
}

/// A datasource that answered.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Found {
    /// What it said.
    pub md: InstanceMetadata,
    /// Where: a device, directory or URL.
    pub source: String,
}

/// The outcome of trying a list of datasources.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Detection {
    /// The first that answered.
    pub found: Option<Found>,
    /// `name: outcome` for each one tried.
    pub tried: Vec<String>,
    /// Datasources that were present but failed (for the status document's warnings).
    pub problems: Vec<String>,
}

/// Whether a datasource is read before the network is up.
pub fn is_local(ds: Datasource) -> bool {
    matches!(ds, Datasource::NoCloud | Datasource::ConfigDrive)
}

/// Parses a datasource list (`virga.ds=` or the image's), dropping unknown names with a
/// warning message.
pub fn parse_order(names: &[String]) -> (Vec<Datasource>, Vec<String>) {
    let mut order = Vec::new();
    let mut unknown = Vec::new();
    for n in names
        .iter()
        .flat_map(|n| n.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        match Datasource::from_name(n) {
            Some(d) if !order.contains(&d) => order.push(d),
            Some(_) => {}
            None => unknown.push(format!("unknown datasource `{n}` ignored")),
        }
    }
    (order, unknown)
}

/// Tries the local datasources of `order`, in order, on these labelled devices. `platform_id`
/// (the DMI product UUID) backs a missing instance id.
pub fn detect_local(
    order: &[Datasource],
    cmdline: &str,
    devices: &[Labelled],
    limits: &Limits,
    platform_id: Option<&str>,
) -> Detection {
    let mut det = Detection::default();
    for ds in order.iter().copied().filter(|d| is_local(*d)) {
        let result = match ds {
            Datasource::NoCloud => nocloud_local(cmdline, devices, limits, platform_id),
            Datasource::ConfigDrive => config_drive(devices, limits, platform_id),
            _ => Ok(None),
        };
        if record(&mut det, ds, result) {
            break;
        }
    }
    det
}

/// Tries the network datasources of `order`, in order, sharing one overall deadline.
pub fn detect_network(
    order: &[Datasource],
    cmdline: &str,
    limits: &Limits,
    deadline: Duration,
    metadata_url: &str,
    platform_id: Option<&str>,
) -> Detection {
    let mut det = Detection::default();
    let start = Instant::now();
    for ds in order.iter().copied().filter(|d| !is_local(*d)) {
        let left = deadline.saturating_sub(start.elapsed());
        let result = match ds {
            Datasource::Ec2 => {
                let config = Ec2Config {
                    limits: *limits,
                    ..Ec2Config::default()
                };
                with_retries(left, || Ec2Crawler::new(config.clone()), metadata_url).map(Some)
            }
            Datasource::Openstack => {
                let config = OpenstackConfig {
                    limits: *limits,
                    platform_id: platform_id.map(str::to_owned),
                    ..OpenstackConfig::metadata_service()
                };
                with_retries(left, || OpenstackCrawler::new(config.clone()), metadata_url).map(Some)
            }
            Datasource::NoCloudNet => nocloud_net(cmdline, limits, left, platform_id),
            Datasource::None => Ok(Some(Found {
                md: InstanceMetadata::none(),
                source: "built-in".into(),
            })),
            _ => Ok(None),
        };
        if record(&mut det, ds, result) {
            break;
        }
        if start.elapsed() >= deadline {
            det.tried
                .push(format!("deadline of {}s reached", deadline.as_secs()));
            // `none` needs no time: it still answers after the deadline.
            if order.contains(&Datasource::None) {
                let none = Found {
                    md: InstanceMetadata::none(),
                    source: "built-in".into(),
                };
                record(&mut det, Datasource::None, Ok(Some(none)));
            }
            break;
        }
    }
    det
}

fn record(det: &mut Detection, ds: Datasource, result: Result<Option<Found>, SourceError>) -> bool {
    match result {
        Ok(Some(found)) => {
            det.tried.push(format!("{ds}: found at {}", found.source));
            det.found = Some(found);
            true
        }
        Ok(None) => {
            det.tried.push(format!("{ds}: not present"));
            false
        }
        Err(e) => {
            det.tried.push(format!("{ds}: {e}"));
            det.problems.push(format!("{ds}: {e}"));
            false
        }
    }
}

/// Runs fresh crawlers until one completes, retrying retryable failures with capped backoff
/// until `deadline`. A definite "not here" (404 on the instance id, a parse error) ends at once.
fn with_retries<C: Crawler>(
    deadline: Duration,
    mut crawler: impl FnMut() -> C,
    base: &str,
) -> Result<Found, SourceError> {
    let policy = Backoff {
        deadline,
        attempt_timeout: Duration::from_secs(5),
        ..Backoff::default()
    };
    let start = Instant::now();
    let mut state = policy.start(Duration::ZERO);
    loop {
        let mut c = crawler();
        let client = super::http::Client::new();
        match drive(&mut c, |req| {
            send_with_deadline(&client, base, req, &policy, &state, start)
        }) {
            Ok(md) => {
                return Ok(Found {
                    md,
                    source: base.to_owned(),
                });
            }
            Err(e) if e.is_retryable() => match state.next(&policy, start.elapsed(), jitter()) {
                Retry::After(d) => {
                    tracing::debug!("{base}: {e}; retrying in {} ms", d.as_millis());
                    std::thread::sleep(d);
                }
                Retry::GiveUp => {
                    return Err(SourceError::GaveUp {
                        source: e,
                        attempts: state.attempts(),
                    });
                }
            },
            Err(e) => {
                return Err(SourceError::Read {
                    location: base.to_owned(),
                    source: e,
                });
            }
        }
    }
}

fn send_with_deadline(
    client: &super::http::Client,
    base: &str,
    req: &HttpRequest,
    policy: &Backoff,
    state: &cloud_metadata::retry::BackoffState,
    start: Instant,
) -> HttpOutcome {
    let mut req = req.clone();
    req.timeout = req
        .timeout
        .min(state.attempt_timeout(policy, start.elapsed()))
        .max(Duration::from_millis(100));
    client.send(base, &req)
}

fn jitter() -> u32 {
    let mut b = [0u8; 4];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        return std::process::id();
    }
    u32::from_ne_bytes(b)
}

fn nocloud_local(
    cmdline: &str,
    devices: &[Labelled],
    limits: &Limits,
    platform_id: Option<&str>,
) -> Result<Option<Found>, SourceError> {
    let crawler = |c| {
        NoCloudCrawler::new(Datasource::NoCloud, *limits, c)
            .with_platform_id(platform_id.map(str::to_owned))
    };
    let seed = NoCloudSeed::from_cmdline(cmdline).map_err(SourceError::Seed)?;
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(s) = &seed
        && s.mode == SeedMode::Local
        && let Some(from) = &s.seedfrom
    {
        dirs.push(PathBuf::from(from.strip_prefix("file://").unwrap_or(from)));
    }
    dirs.extend(SEED_DIRS.iter().map(PathBuf::from));
    let apply_seed = |mut md: InstanceMetadata| {
        if let Some(s) = &seed {
            s.apply_overrides(&mut md);
        }
        md
    };
    if let Some(dir) = dirs.iter().find(|d| d.join("meta-data").is_file()) {
        let md = read_tree(dir, crawler).map_err(|source| SourceError::Read {
            location: dir.display().to_string(),
            source,
        })?;
        return Ok(Some(Found {
            md: apply_seed(md),
            source: dir.display().to_string(),
        }));
    }
    let mut last_error = None;
    for dev in blockdev::with_label(devices, &["cidata"]) {
        let attempt = Mounted::read_only(dev, Path::new("/run/virga/mnt/cidata"))
            .map_err(|source| SourceError::Mount {
                device: dev.device.display().to_string(),
                source,
            })
            .and_then(|mnt| {
                read_tree(&mnt.path, crawler).map_err(|source| SourceError::Read {
                    location: format!("{} ({})", dev.device.display(), dev.fstype),
                    source,
                })
            });
        match attempt {
            Ok(md) => {
                let source = format!("{} ({} {})", dev.device.display(), dev.fstype, dev.label);
                return Ok(Some(Found {
                    md: apply_seed(md),
                    source,
                }));
            }
            Err(e) => last_error = Some(e),
        }
    }
    match last_error {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

fn nocloud_net(
    cmdline: &str,
    limits: &Limits,
    deadline: Duration,
    platform_id: Option<&str>,
) -> Result<Option<Found>, SourceError> {
    let Some(seed) = NoCloudSeed::from_cmdline(cmdline).map_err(SourceError::Seed)? else {
        return Ok(None);
    };
    let Some(url) = seed.seedfrom.clone().filter(|u| u.starts_with("http://")) else {
        return match seed.seedfrom {
            Some(u) if u.starts_with("https://") => Err(SourceError::Https),
            _ => Ok(None),
        };
    };
    let mut found = with_retries(
        deadline,
        || {
            NoCloudCrawler::new(Datasource::NoCloudNet, *limits, Duration::from_secs(5))
                .with_platform_id(platform_id.map(str::to_owned))
        },
        &url,
    )?;
    seed.apply_overrides(&mut found.md);
    Ok(Some(found))
}

fn config_drive(
    devices: &[Labelled],
    limits: &Limits,
    platform_id: Option<&str>,
) -> Result<Option<Found>, SourceError> {
    let Some(dev) = blockdev::with_label(devices, &["config-2"])
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    let mnt = Mounted::read_only(dev, Path::new("/run/virga/mnt/config-2")).map_err(|source| {
        SourceError::Mount {
            device: dev.device.display().to_string(),
            source,
        }
    })?;
    let config = OpenstackConfig {
        limits: *limits,
        platform_id: platform_id.map(str::to_owned),
        ..OpenstackConfig::config_drive()
    };
    let md = read_tree(&mnt.path, |_| OpenstackCrawler::new(config.clone())).map_err(|source| {
        SourceError::Read {
            location: format!("{} ({})", dev.device.display(), dev.fstype),
            source,
        }
    })?;
    Ok(Some(Found {
        md,
        source: format!("{} ({} {})", dev.device.display(), dev.fstype, dev.label),
    }))
}

/// Drives a crawler against a directory tree: a file is a 200 with its content, a directory a
/// 200 with its entry names one per line, anything else a 404. Paths never leave `root`.
pub fn read_tree<C: Crawler>(
    root: &Path,
    make: impl FnOnce(Duration) -> C,
) -> Result<InstanceMetadata, MetadataError> {
    let mut c = make(Duration::from_secs(5));
    drive(&mut c, |req| read_path(root, req))
}

fn read_path(root: &Path, req: &HttpRequest) -> HttpOutcome {
    let rel = Path::new(req.path.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return HttpOutcome::status(404);
    }
    let path = root.join(rel);
    // A symlink must not lead outside the medium.
    let root_real = root.canonicalize().unwrap_or_else(|_| root.to_owned());
    match path.canonicalize() {
        Ok(real) if real.starts_with(&root_real) => {}
        _ => return HttpOutcome::status(404),
    }
    if path.is_dir() {
        let mut names: Vec<String> = match std::fs::read_dir(&path) {
            Ok(e) => e
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(e) => return HttpOutcome::Failed(e.to_string()),
        };
        names.sort();
        return HttpOutcome::ok(names.join("\n"));
    }
    let mut body = Vec::new();
    match std::fs::File::open(&path)
        .and_then(|f| f.take(req.max_body as u64 + 1).read_to_end(&mut body))
    {
        Ok(_) => HttpOutcome::ok(body),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HttpOutcome::status(404),
        Err(e) => HttpOutcome::Failed(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_parsing_keeps_order_and_reports_unknowns() {
        let (o, w) = parse_order(&[
            "nocloud,ec2".into(),
            "azure".into(),
            "ec2".into(),
            "none".into(),
        ]);
        assert_eq!(
            o,
            vec![Datasource::NoCloud, Datasource::Ec2, Datasource::None]
        );
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn nocloud_seed_directory_is_read() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("meta-data"),
            "instance-id: iid-test\nlocal-hostname: box\n",
        )
        .unwrap();
        std::fs::write(d.path().join("user-data"), "#!/bin/sh\necho hi\n").unwrap();
        let md = read_tree(d.path(), |c| {
            NoCloudCrawler::new(Datasource::NoCloud, Limits::default(), c)
        })
        .unwrap();
        assert_eq!(md.instance_id, "iid-test");
        assert_eq!(md.local_hostname.as_deref(), Some("box"));
        assert_eq!(md.user_data.as_deref(), Some(&b"#!/bin/sh\necho hi\n"[..]));
    }

    #[test]
    fn config_drive_tree_is_read_and_traversal_refused() {
        let d = tempfile::tempdir().unwrap();
        let v = d.path().join("openstack/latest");
        std::fs::create_dir_all(&v).unwrap();
        std::fs::write(v.join("meta_data.json"), r#"{"uuid":"u-1","hostname":"cd.example","files":[{"path":"/etc/x","content_path":"/../../../etc/passwd"}]}"#).unwrap();
        let md = read_tree(d.path(), |_| {
            OpenstackCrawler::new(OpenstackConfig::config_drive())
        });
        let md = md.unwrap();
        assert_eq!(md.instance_id, "u-1");
        assert!(
            md.files.iter().all(|f| f.content.is_none()),
            "{:?}",
            md.files
        );
        let outside = HttpRequest {
            method: cloud_metadata::http::Method::Get,
            path: "/../etc/passwd".into(),
            headers: vec![],
            timeout: Duration::from_secs(1),
            max_body: 10,
        };
        assert_eq!(read_path(d.path(), &outside), HttpOutcome::status(404));
    }
}
