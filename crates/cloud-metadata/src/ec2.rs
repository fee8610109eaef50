//! EC2 instance metadata service (IMDS): a sans-IO crawl with IMDSv2 and v1 fallback.
//!
//! Sequence: `PUT /latest/api/token` (`X-aws-ec2-metadata-token-ttl-seconds: 21600`); a `200`
//! switches to IMDSv2 (every GET then carries `X-aws-ec2-metadata-token`), while `403`, `404`,
//! `405`, any other status or a transport failure falls back to IMDSv1 (noted in the warnings).
//! Then `GET /<version>/meta-data/instance-id` for each configured version until one answers
//! `200` (`404` → next version). Then the leaves: `local-hostname`, `hostname`,
//! `public-keys/` (lines `N=name` → `public-keys/N/openssh-key`),
//! `placement/availability-zone`, `instance-type`, `local-ipv4`, `public-ipv4`,
//! `ami-launch-index`, and finally `/<version>/user-data` (`404` = no user-data).
//!
//! A `401` on any GET fetches a new token once per crawl and repeats the request; a second
//! `401` is an error. Missing (`404`) or failing optional leaves become warnings; a failing
//! `instance-id` or `user-data` ends the crawl with an error ([`MetadataError::is_retryable`]
//! tells the driver whether to try again).

use std::collections::VecDeque;
use std::time::Duration;

use crate::http::{
    Crawler, Exchange, HttpOutcome, HttpRequest, Method, Step, check_body, status_error,
    transport_error,
};
use crate::model::error_problem;
use crate::{Datasource, InstanceMetadata, Limits, MetadataError, Problem};

/// The file name problems of the IMDS meta-data tree carry (fields are paths below it).
const EC2_FILE: &str = "ec2 meta-data";

/// IMDS addresses: IPv4 link-local, and the IPv6 one on Nitro instances.
pub const EC2_BASE_URLS: &[&str] = &["http://169.254.169.254", "http://[fd00:ec2::254]"];
/// Token request path.
pub const TOKEN_PATH: &str = "/latest/api/token";
/// Header asking for a token lifetime.
pub const TOKEN_TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
/// Header carrying the token.
pub const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
/// Versions tried by default, newest first (`2009-04-04` is the oldest every IMDS serves).
pub const DEFAULT_VERSIONS: &[&str] = &["2021-03-23", "2018-09-24", "2016-09-02", "2009-04-04"];

/// Crawl settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Config {
    /// Metadata versions to probe, in order (`latest` is allowed).
    pub versions: Vec<String>,
    /// Try IMDSv2 first (default true). When false, a token is only fetched after a `401`.
    pub use_token: bool,
    /// Token lifetime requested, in seconds (default 21600, the maximum).
    pub token_ttl_seconds: u32,
    /// Timeout passed with every request (default 5 s).
    pub request_timeout: Duration,
    /// Size and count limits.
    pub limits: Limits,
}

impl Default for Ec2Config {
    fn default() -> Self {
        Ec2Config {
            versions: DEFAULT_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
            use_token: true,
            token_ttl_seconds: 21600,
            request_timeout: Duration::from_secs(5),
            limits: Limits::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaf {
    LocalHostname,
    Hostname,
    AvailabilityZone,
    InstanceType,
    LocalIpv4,
    PublicIpv4,
    LaunchIndex,
}

impl Leaf {
    const ALL: [Leaf; 7] = [
        Leaf::LocalHostname,
        Leaf::Hostname,
        Leaf::AvailabilityZone,
        Leaf::InstanceType,
        Leaf::LocalIpv4,
        Leaf::PublicIpv4,
        Leaf::LaunchIndex,
    ];

    fn path(self) -> &'static str {
        match self {
            Leaf::LocalHostname => "local-hostname",
            Leaf::Hostname => "hostname",
            Leaf::AvailabilityZone => "placement/availability-zone",
            Leaf::InstanceType => "instance-type",
            Leaf::LocalIpv4 => "local-ipv4",
            Leaf::PublicIpv4 => "public-ipv4",
            Leaf::LaunchIndex => "ami-launch-index",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Job {
    InstanceId(usize),
    Leaf(Leaf),
    KeyList,
    Key(String),
    UserData,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Start,
    /// Waiting for a token; `retry` is the job to repeat afterwards (None: initial token).
    Token {
        retry: Option<Job>,
    },
    Job(Job),
    Done,
}

/// The EC2 IMDS crawler. See the module docs for the exact sequence.
#[derive(Debug, Clone)]
pub struct Ec2Crawler {
    config: Ec2Config,
    phase: Phase,
    exchange: Exchange,
    token: Option<String>,
    refreshed: bool,
    version: Option<String>,
    queue: VecDeque<Job>,
    instance_id: Option<String>,
    leaves: Vec<(Leaf, String)>,
    keys: Vec<(String, String)>,
    user_data: Option<Vec<u8>>,
    problems: Vec<Problem>,
}

impl Ec2Crawler {
    /// A crawler with these settings.
    pub fn new(config: Ec2Config) -> Self {
        let exchange = Exchange::new(config.limits.max_requests);
        Ec2Crawler {
            config,
            phase: Phase::Start,
            exchange,
            token: None,
            refreshed: false,
            version: None,
            queue: VecDeque::new(),
            instance_id: None,
            leaves: Vec::new(),
            keys: Vec::new(),
            user_data: None,
            problems: Vec::new(),
        }
    }

    /// The metadata version in use, once `instance-id` answered.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// Whether the crawl uses IMDSv2 (holds a token).
    pub fn uses_token(&self) -> bool {
        self.token.is_some()
    }

    fn token_request(&self) -> HttpRequest {
        HttpRequest {
            method: Method::Put,
            path: TOKEN_PATH.to_owned(),
            headers: vec![(
                TOKEN_TTL_HEADER.to_owned(),
                self.config.token_ttl_seconds.to_string(),
            )],
            timeout: self.config.request_timeout,
            max_body: 4096,
        }
    }

    fn job_request(&self, job: &Job) -> HttpRequest {
        let limits = &self.config.limits;
        let v = |i: usize| self.config.versions.get(i).map_or("latest", String::as_str);
        let ver = self.version.as_deref().unwrap_or("latest");
        let (path, max) = match job {
            Job::InstanceId(i) => (
                format!("/{}/meta-data/instance-id", v(*i)),
                limits.max_metadata_bytes,
            ),
            Job::Leaf(l) => (
                format!("/{ver}/meta-data/{}", l.path()),
                limits.max_metadata_bytes,
            ),
            Job::KeyList => (
                format!("/{ver}/meta-data/public-keys/"),
                limits.max_metadata_bytes,
            ),
            Job::Key(n) => (
                format!("/{ver}/meta-data/public-keys/{n}/openssh-key"),
                limits.max_metadata_bytes,
            ),
            Job::UserData => (format!("/{ver}/user-data"), limits.max_user_data_bytes),
        };
        let mut req = HttpRequest::get(path, self.config.request_timeout, max);
        if let Some(t) = &self.token {
            req.headers.push((TOKEN_HEADER.to_owned(), t.clone()));
        }
        req
    }

    fn run_job(&mut self, job: Job) -> Result<Step, MetadataError> {
        let req = self.job_request(&job);
        self.phase = Phase::Job(job);
        self.exchange.send(req)
    }

    fn next_job(&mut self) -> Result<Step, MetadataError> {
        match self.queue.pop_front() {
            Some(job) => self.run_job(job),
            None => {
                self.phase = Phase::Done;
                Ok(Step::Done(Box::new(self.finish())))
            }
        }
    }

    fn refresh_token(&mut self, job: Job, req: &HttpRequest) -> Result<Step, MetadataError> {
        if self.refreshed {
            return Err(MetadataError::Protocol {
                reason: format!(
                    "{} {} was refused (401) again after a new token",
                    req.method, req.path
                ),
            });
        }
        self.refreshed = true;
        self.token = None;
        self.phase = Phase::Token { retry: Some(job) };
        let t = self.token_request();
        self.exchange.send(t)
    }

    fn on_token(
        &mut self,
        retry: Option<Job>,
        outcome: HttpOutcome,
    ) -> Result<Step, MetadataError> {
        let token = match outcome {
            HttpOutcome::Response { status: 200, body } => valid_token(&body),
            HttpOutcome::Response { status, .. } => {
                self.problems.push(Problem::file(
                    TOKEN_PATH,
                    format!("IMDSv2 token request answered HTTP {status}; using IMDSv1"),
                ));
                None
            }
            HttpOutcome::Failed(reason) => {
                self.problems.push(Problem::file(
                    TOKEN_PATH,
                    format!("IMDSv2 token request failed ({reason}); using IMDSv1"),
                ));
                None
            }
        };
        match (token, retry) {
            (Some(t), retry) => {
                self.token = Some(t);
                self.run_job(retry.unwrap_or(Job::InstanceId(0)))
            }
            (None, None) => self.run_job(Job::InstanceId(0)),
            (None, Some(job)) => Err(MetadataError::Protocol {
                reason: format!(
                    "{} needs an IMDSv2 token (401) and none could be obtained",
                    self.job_request(&job).path
                ),
            }),
        }
    }

    fn on_job(
        &mut self,
        job: Job,
        req: HttpRequest,
        outcome: HttpOutcome,
    ) -> Result<Step, MetadataError> {
        let (status, body) = match outcome {
            HttpOutcome::Response { status, body } => (status, body),
            HttpOutcome::Failed(reason) => {
                return match job {
                    Job::InstanceId(_) | Job::UserData => Err(transport_error(&req, reason)),
                    _ => {
                        self.problems.push(Problem::file(
                            req.path.as_str(),
                            format!("request failed ({reason}); skipped"),
                        ));
                        self.next_job()
                    }
                };
            }
        };
        if status == 401 {
            return self.refresh_token(job, &req);
        }
        match (job, status) {
            (Job::InstanceId(i), 200) => {
                check_body("ec2 instance-id", &req, &body)?;
                let iid = String::from_utf8_lossy(&body).trim().to_owned();
                if iid.is_empty() || iid.len() > 256 || iid.chars().any(char::is_control) {
                    return Err(MetadataError::Protocol {
                        reason: format!("unusable instance-id from {}", req.path),
                    });
                }
                self.instance_id = Some(iid);
                self.version = Some(
                    self.config
                        .versions
                        .get(i)
                        .cloned()
                        .unwrap_or_else(|| "latest".to_owned()),
                );
                self.queue.extend(Leaf::ALL.iter().map(|l| Job::Leaf(*l)));
                self.queue.push_back(Job::KeyList);
                self.queue.push_back(Job::UserData);
                self.next_job()
            }
            (Job::InstanceId(i), 404) if i + 1 < self.config.versions.len() => {
                self.run_job(Job::InstanceId(i + 1))
            }
            (Job::InstanceId(_), 404) => Err(MetadataError::Protocol {
                reason: format!(
                    "no metadata version answered (tried {})",
                    self.config.versions.join(", ")
                ),
            }),
            (Job::InstanceId(_) | Job::UserData, s) if s != 200 && s != 404 => {
                Err(status_error(&req, s))
            }
            (Job::UserData, 404) => self.next_job(),
            (Job::UserData, _) => {
                match check_body("user-data", &req, &body) {
                    Ok(()) => self.user_data = Some(body),
                    Err(e) => self
                        .problems
                        .push(error_problem("user-data", &e, "ignored")),
                }
                self.next_job()
            }
            (_, 404) => self.next_job(),
            (job, 200) => {
                if let Err(e) = check_body("ec2 meta-data", &req, &body) {
                    self.problems.push(error_problem(&req.path, &e, "skipped"));
                    return self.next_job();
                }
                let text = String::from_utf8_lossy(&body);
                match job {
                    Job::Leaf(leaf) => {
                        let v = text.trim();
                        if !v.is_empty() {
                            self.leaves.push((leaf, v.to_owned()));
                        }
                    }
                    Job::KeyList => self.queue_keys(&text),
                    Job::Key(n) => self
                        .keys
                        .push((format!("public-keys/{n}/openssh-key"), text.into_owned())),
                    Job::InstanceId(_) | Job::UserData => {}
                }
                self.next_job()
            }
            (_, s) => {
                self.problems.push(Problem::file(
                    req.path.as_str(),
                    format!("answered HTTP {s}; skipped"),
                ));
                self.next_job()
            }
        }
    }

    fn queue_keys(&mut self, listing: &str) {
        let mut count = 0;
        for line in listing.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let index = line
                .split_once('=')
                .map_or(line, |(i, _)| i)
                .trim_end_matches('/');
            if index.is_empty() || index.len() > 9 || !index.bytes().all(|b| b.is_ascii_digit()) {
                self.problems.push(Problem::field(
                    EC2_FILE,
                    "public-keys/",
                    format!("unexpected entry {line:?}; skipped"),
                ));
                continue;
            }
            count += 1;
            if count > self.config.limits.max_list_entries {
                self.problems.push(Problem::field(
                    EC2_FILE,
                    "public-keys/",
                    format!(
                        "more than {} keys; the rest skipped",
                        self.config.limits.max_list_entries
                    ),
                ));
                break;
            }
            // Queue before user-data so the order of keys is kept.
            let pos = self.queue.len().saturating_sub(1);
            self.queue.insert(pos, Job::Key(index.to_owned()));
        }
    }

    fn finish(&mut self) -> InstanceMetadata {
        let iid = self.instance_id.clone().unwrap_or_default();
        let mut md = InstanceMetadata::new(Datasource::Ec2, iid);
        let get = |l: Leaf| {
            self.leaves
                .iter()
                .find(|(k, _)| *k == l)
                .map(|(_, v)| v.clone())
        };
        md.problems = std::mem::take(&mut self.problems);
        let mut named = false;
        for leaf in [Leaf::LocalHostname, Leaf::Hostname] {
            if let Some(h) = get(leaf)
                && !named
            {
                named = md.set_hostname_from(EC2_FILE, leaf.path(), &h);
            }
        }
        md.availability_zone = md.text_field(
            EC2_FILE,
            Leaf::AvailabilityZone.path(),
            get(Leaf::AvailabilityZone),
        );
        md.instance_type =
            md.text_field(EC2_FILE, Leaf::InstanceType.path(), get(Leaf::InstanceType));
        md.local_ipv4 = md.ipv4_field(EC2_FILE, Leaf::LocalIpv4.path(), get(Leaf::LocalIpv4));
        md.public_ipv4 = md.ipv4_field(EC2_FILE, Leaf::PublicIpv4.path(), get(Leaf::PublicIpv4));
        if let Some(i) = get(Leaf::LaunchIndex) {
            md.launch_index = i.parse().ok();
            if md.launch_index.is_none() {
                md.field_problem(
                    EC2_FILE,
                    Leaf::LaunchIndex.path(),
                    "not a non-negative integer; ignored",
                );
            }
        }
        if let Some(v) = &self.version {
            md.meta.insert("ec2-metadata-version".to_owned(), v.clone());
        }
        md.meta.insert(
            "imds".to_owned(),
            if self.token.is_some() { "v2" } else { "v1" }.to_owned(),
        );
        md.user_data = self.user_data.take();
        md.set_public_keys(EC2_FILE, std::mem::take(&mut self.keys));
        md
    }
}

fn valid_token(body: &[u8]) -> Option<String> {
    let t = std::str::from_utf8(body).ok()?.trim();
    (!t.is_empty() && t.len() <= 1024 && t.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| t.to_owned())
}

impl Crawler for Ec2Crawler {
    fn step(&mut self, last: Option<HttpOutcome>) -> Result<Step, MetadataError> {
        let received = self.exchange.receive(last)?;
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        match (phase, received) {
            (Phase::Start, None) => {
                if self.config.versions.is_empty() {
                    return Err(MetadataError::Protocol {
                        reason: "no EC2 metadata versions configured".into(),
                    });
                }
                if self.config.use_token {
                    self.phase = Phase::Token { retry: None };
                    let t = self.token_request();
                    self.exchange.send(t)
                } else {
                    self.run_job(Job::InstanceId(0))
                }
            }
            (Phase::Token { retry }, Some((_, outcome))) => self.on_token(retry, outcome),
            (Phase::Job(job), Some((req, outcome))) => self.on_job(job, req, outcome),
            (Phase::Done, _) => Err(MetadataError::Protocol {
                reason: "the crawl is already finished".into(),
            }),
            (_, _) => Err(MetadataError::Protocol {
                reason: "step called out of order".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::drive;
    use crate::sshkey::tests::make_key;
    use std::collections::BTreeMap;

    /// A fake IMDS: paths under `/2009-04-04/` and `/latest/` map to bodies.
    struct Fake {
        files: BTreeMap<String, Vec<u8>>,
        token: Option<&'static str>,
        token_status: u16,
        require_token: bool,
        expire_once: bool,
        log: Vec<String>,
    }

    impl Fake {
        fn new() -> Self {
            let key = make_key("ssh-ed25519", "brickies");
            let mut files = BTreeMap::new();
            for v in ["2009-04-04", "latest"] {
                let md = format!("/{v}/meta-data/");
                files.insert(
                    format!("{md}instance-id"),
                    b"i-0a33f80f09c96477f\n".to_vec(),
                );
                files.insert(
                    format!("{md}local-hostname"),
                    b"ip-172-3-3-15.us-east-2.compute.internal".to_vec(),
                );
                files.insert(
                    format!("{md}placement/availability-zone"),
                    b"us-east-2b".to_vec(),
                );
                files.insert(format!("{md}instance-type"), b"t2.small".to_vec());
                files.insert(format!("{md}ami-launch-index"), b"0".to_vec());
                files.insert(
                    format!("{md}public-keys/"),
                    b"0=brickies\n1=second".to_vec(),
                );
                files.insert(
                    format!("{md}public-keys/0/openssh-key"),
                    key.clone().into_bytes(),
                );
                files.insert(
                    format!("{md}public-keys/1/openssh-key"),
                    b"not a key".to_vec(),
                );
            }
            Fake {
                files,
                token: Some("AQAEAtoken=="),
                token_status: 200,
                require_token: false,
                expire_once: false,
                log: Vec::new(),
            }
        }

        fn send(&mut self, req: &HttpRequest) -> HttpOutcome {
            self.log.push(format!("{} {}", req.method, req.path));
            if req.method == Method::Put {
                assert_eq!(req.header(TOKEN_TTL_HEADER), Some("21600"));
                return match (self.token_status, self.token) {
                    (200, Some(t)) => HttpOutcome::ok(t),
                    (0, _) => HttpOutcome::Failed("timed out".into()),
                    (s, _) => HttpOutcome::status(s),
                };
            }
            let has_token = req.header(TOKEN_HEADER).is_some();
            if self.require_token && !has_token {
                return HttpOutcome::status(401);
            }
            if has_token && self.expire_once {
                self.expire_once = false;
                return HttpOutcome::status(401);
            }
            match self.files.get(&req.path) {
                Some(b) => HttpOutcome::ok(b.clone()),
                None => HttpOutcome::status(404),
            }
        }
    }

    fn crawl(fake: &mut Fake, config: Ec2Config) -> Result<InstanceMetadata, MetadataError> {
        let mut c = Ec2Crawler::new(config);
        drive(&mut c, |r| fake.send(r))
    }

    #[test]
    fn imdsv2_crawl_with_version_fallback() {
        let mut fake = Fake::new();
        let md = crawl(&mut fake, Ec2Config::default()).unwrap();
        assert_eq!(md.datasource, Datasource::Ec2);
        assert_eq!(md.instance_id, "i-0a33f80f09c96477f");
        assert_eq!(
            md.local_hostname.as_deref(),
            Some("ip-172-3-3-15.us-east-2.compute.internal")
        );
        assert_eq!(md.short_hostname(), Some("ip-172-3-3-15"));
        assert_eq!(md.availability_zone.as_deref(), Some("us-east-2b"));
        assert_eq!(md.launch_index, Some(0));
        assert_eq!(md.public_keys.len(), 1, "the bad key is dropped");
        assert!(
            md.problems.iter().any(|p| p.to_string()
                == "ec2 meta-data: public-keys/1/openssh-key: not an SSH key (unknown key type); ignored"),
            "{:?}",
            md.problems
        );
        assert_eq!(md.user_data, None);
        assert_eq!(md.meta["imds"], "v2");
        assert_eq!(md.meta["ec2-metadata-version"], "2009-04-04");
        assert_eq!(fake.log[0], "PUT /latest/api/token");
        assert_eq!(fake.log[1], "GET /2021-03-23/meta-data/instance-id");
        assert_eq!(fake.log[4], "GET /2009-04-04/meta-data/instance-id");
        assert!(
            fake.log
                .contains(&"GET /2009-04-04/meta-data/public-keys/1/openssh-key".to_owned())
        );
        assert_eq!(fake.log.last().unwrap(), "GET /2009-04-04/user-data");
    }

    #[test]
    fn the_token_request_comes_before_anything_else() {
        let mut c = Ec2Crawler::new(Ec2Config::default());
        let Step::Send(first) = c.step(None).unwrap() else {
            panic!("the crawl cannot be done before it starts")
        };
        assert_eq!(first.method, Method::Put);
        assert_eq!(first.path, TOKEN_PATH);
        assert_eq!(first.header(TOKEN_TTL_HEADER), Some("21600"));
        assert_eq!(first.header(TOKEN_HEADER), None);
        // Every later request carries the token and stays in the EC2 tree.
        let mut fake = Fake::new();
        fake.require_token = true;
        let md = crawl(&mut fake, Ec2Config::default()).unwrap();
        assert_eq!(md.meta["imds"], "v2");
        assert_eq!(fake.log.iter().filter(|l| l.starts_with("PUT")).count(), 1);
        assert!(
            fake.log[1..]
                .iter()
                .all(|l| l.starts_with("GET /") && !l.contains("openstack"))
        );
    }

    #[test]
    fn bad_leaves_degrade() {
        let mut fake = Fake::new();
        let md = "/2009-04-04/meta-data/";
        fake.files.insert(
            format!("{md}local-hostname"),
            b"evil\n=== datasource: forged ===".to_vec(),
        );
        fake.files.insert(
            format!("{md}hostname"),
            b"ip-10-0-0-1.ec2.internal".to_vec(),
        );
        fake.files
            .insert(format!("{md}local-ipv4"), b"not-an-ip".to_vec());
        fake.files
            .insert(format!("{md}ami-launch-index"), b"-1".to_vec());
        fake.files
            .insert("/2009-04-04/user-data".into(), vec![b'x'; (16 << 20) + 1]);
        let md = crawl(&mut fake, Ec2Config::default()).unwrap();
        assert_eq!(md.instance_id, "i-0a33f80f09c96477f");
        assert_eq!(
            md.local_hostname.as_deref(),
            Some("ip-10-0-0-1.ec2.internal")
        );
        assert_eq!(md.local_ipv4, None);
        assert_eq!(md.launch_index, None);
        assert_eq!(md.user_data, None);
        assert_eq!(md.public_keys.len(), 1, "the valid key is kept");
        let text: Vec<String> = md.problems.iter().map(ToString::to_string).collect();
        for want in [
            "ec2 meta-data: local-hostname: hostname \"evil\\n=== datasource: forged ===\" contains '\\n'",
            "ec2 meta-data: local-ipv4: \"not-an-ip\" is not an IPv4 address; ignored",
            "ec2 meta-data: ami-launch-index: not a non-negative integer; ignored",
            "user-data: over the 16 MiB limit; ignored",
            "ec2 meta-data: public-keys/1/openssh-key: not an SSH key",
        ] {
            assert!(
                text.iter().any(|t| t.starts_with(want)),
                "{want}: {text:#?}"
            );
        }
        assert!(text.iter().all(|t| !t.contains('\n')));
    }

    #[test]
    fn token_refusals_fall_back_to_v1() {
        for status in [403, 404, 405, 0, 500] {
            let mut fake = Fake::new();
            fake.token_status = status;
            let md = crawl(&mut fake, Ec2Config::default()).unwrap();
            assert_eq!(md.meta["imds"], "v1", "status {status}");
            assert!(md.problems.iter().any(|p| p.message.contains("IMDSv1")));
        }
    }

    #[test]
    fn expired_token_is_refreshed_once() {
        let mut fake = Fake::new();
        fake.expire_once = true;
        let md = crawl(&mut fake, Ec2Config::default()).unwrap();
        assert_eq!(md.instance_id, "i-0a33f80f09c96477f");
        assert_eq!(fake.log.iter().filter(|l| l.starts_with("PUT")).count(), 2);
    }

    #[test]
    fn v1_config_gets_token_on_401() {
        let mut fake = Fake::new();
        fake.require_token = true;
        let config = Ec2Config {
            use_token: false,
            ..Ec2Config::default()
        };
        let md = crawl(&mut fake, config).unwrap();
        assert_eq!(md.meta["imds"], "v2");
    }

    #[test]
    fn repeated_401_is_an_error() {
        let mut fake = Fake::new();
        fake.require_token = true;
        fake.token_status = 403;
        let err = crawl(&mut fake, Ec2Config::default()).unwrap_err();
        assert!(matches!(err, MetadataError::Protocol { .. }), "{err}");
    }

    #[test]
    fn user_data_and_errors() {
        let mut fake = Fake::new();
        fake.files
            .insert("/latest/user-data".into(), b"#!/bin/sh\n".to_vec());
        let config = Ec2Config {
            versions: vec!["latest".into()],
            ..Ec2Config::default()
        };
        let md = crawl(&mut fake, config.clone()).unwrap();
        assert_eq!(md.user_data.as_deref(), Some(&b"#!/bin/sh\n"[..]));

        // A 500 on instance-id: retryable error.
        let mut c = Ec2Crawler::new(config.clone());
        let _ = c.step(None).unwrap();
        let _ = c.step(Some(HttpOutcome::ok("tok"))).unwrap();
        let err = c.step(Some(HttpOutcome::status(500))).unwrap_err();
        assert!(err.is_retryable());

        // A redirect on instance-id is not followed: clear error.
        let mut c = Ec2Crawler::new(config.clone());
        let _ = c.step(None).unwrap();
        let _ = c.step(Some(HttpOutcome::ok("tok"))).unwrap();
        let err = c.step(Some(HttpOutcome::status(302))).unwrap_err();
        assert!(matches!(err, MetadataError::HttpStatus { status: 302, .. }));

        // Timeout on instance-id: retryable transport error.
        let mut c = Ec2Crawler::new(config);
        let _ = c.step(None).unwrap();
        let _ = c.step(Some(HttpOutcome::ok("tok"))).unwrap();
        let err = c
            .step(Some(HttpOutcome::Failed("timeout".into())))
            .unwrap_err();
        assert!(err.is_retryable());
    }

    #[test]
    fn misuse_is_an_error_not_a_panic() {
        let mut c = Ec2Crawler::new(Ec2Config::default());
        assert!(c.step(Some(HttpOutcome::ok("x"))).is_err());
        let mut c = Ec2Crawler::new(Ec2Config::default());
        c.step(None).unwrap();
        assert!(c.step(None).is_err());
        let mut c = Ec2Crawler::new(Ec2Config {
            versions: vec![],
            ..Ec2Config::default()
        });
        assert!(c.step(None).is_err());
    }

    #[test]
    fn request_budget_bounds_the_crawl() {
        let mut fake = Fake::new();
        let listing: String = (0..200).map(|i| format!("{i}=k{i}\n")).collect();
        fake.files.insert(
            "/2009-04-04/meta-data/public-keys/".into(),
            listing.into_bytes(),
        );
        let limits = Limits {
            max_requests: 50,
            ..Limits::default()
        };
        let err = crawl(
            &mut fake,
            Ec2Config {
                limits,
                ..Ec2Config::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, MetadataError::Protocol { .. }));
    }
}
