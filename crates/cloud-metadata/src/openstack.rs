//! OpenStack metadata: `meta_data.json`, `vendor_data.json`, version selection, and one sans-IO
//! crawler for both the config drive (`config-2` disk) and the metadata service.
//!
//! Crawl: `GET /openstack/` (the version listing; `404` → `latest` only), then
//! `/openstack/<version>/meta_data.json` for each candidate from [`version_order`] until one
//! exists, then `user_data`, `vendor_data.json`, `network_data.json` of that version (each
//! optional: `404` = absent), then each `files[].content_path` under `/openstack/`.
//!
//! For a config drive the driver answers from the mounted filesystem: the request path is the
//! path below the mount point, `/openstack/` answers with the directory names, one per line.

use std::time::Duration;

use crate::http::{
    Crawler, Exchange, HttpOutcome, HttpRequest, Step, check_body, status_error, transport_error,
};
use crate::model::{decode_base64, error_problem};
use crate::network::{network_data_from_node, parse_network_data};
use crate::value::{Node, parse_json};
use crate::{Datasource, InjectedFile, InstanceMetadata, Limits, MetadataError, Problem};

/// Dated `openstack/` versions virga knows, oldest first (each adds to the previous).
pub const KNOWN_VERSIONS: &[&str] = &[
    "2012-08-10",
    "2013-04-04",
    "2013-10-17",
    "2015-10-15",
    "2016-06-30",
    "2016-10-06",
    "2017-02-22",
    "2018-08-27",
    "2020-10-14",
];

/// The order in which to try the versions offered in `listing` (the `/openstack/` listing, or
/// the directory names of `openstack/` on a config drive; one per line or whitespace-separated,
/// trailing `/` allowed):
/// `latest` first when offered, then the known dated versions newest first, then other
/// well-formed dated versions newest first. Unparseable entries are ignored. An empty result
/// means nothing usable was offered; callers then try `latest` alone.
pub fn version_order(listing: &str) -> Vec<String> {
    let offered: Vec<&str> = listing
        .split_ascii_whitespace()
        .map(|e| e.trim_end_matches('/'))
        .filter(|e| *e == "latest" || is_date(e))
        .collect();
    let mut order: Vec<String> = Vec::new();
    if offered.contains(&"latest") {
        order.push("latest".to_owned());
    }
    for v in KNOWN_VERSIONS.iter().rev() {
        if offered.contains(v) {
            order.push((*v).to_owned());
        }
    }
    let mut unknown: Vec<&str> = offered
        .iter()
        .copied()
        .filter(|e| *e != "latest" && !KNOWN_VERSIONS.contains(e))
        .collect();
    unknown.sort_unstable_by(|a, b| b.cmp(a));
    unknown.dedup();
    order.extend(unknown.into_iter().map(str::to_owned));
    order
}

/// The version to use: the first of [`version_order`], else `latest`.
pub fn select_version(listing: &str) -> String {
    version_order(listing)
        .into_iter()
        .next()
        .unwrap_or_else(|| "latest".to_owned())
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

const WHAT: &str = "meta_data.json";

/// Parses `meta_data.json` into the unified model, strictly: invalid JSON, a top level that
/// is not an object, or a missing `uuid` is an error. `datasource` is
/// [`Datasource::ConfigDrive`] or [`Datasource::Openstack`]. File contents are not filled in.
/// Bad fields are dropped and recorded in [`InstanceMetadata::problems`].
pub fn parse_meta_data(
    input: &[u8],
    datasource: Datasource,
    limits: &Limits,
) -> Result<InstanceMetadata, MetadataError> {
    let node = parse_json(input, WHAT, limits)?;
    meta_data_from_node(&node, datasource, limits)
}

/// Reads `meta_data.json` from an already parsed tree (strictly, as [`parse_meta_data`]).
pub fn meta_data_from_node(
    node: &Node,
    datasource: Datasource,
    limits: &Limits,
) -> Result<InstanceMetadata, MetadataError> {
    if !matches!(node, Node::Map(_)) {
        return Err(MetadataError::invalid(
            WHAT,
            "(top level)",
            format!("expected an object, found {}", node.kind()),
        ));
    }
    let uuid =
        node.get("uuid")
            .and_then(Node::scalar_string)
            .ok_or(MetadataError::MissingField {
                what: WHAT,
                field: "uuid",
            })?;
    let uuid = crate::nocloud::check_instance_id(WHAT, "uuid", &uuid)?;
    let mut md = InstanceMetadata::new(datasource, uuid);
    read_fields(node, &mut md, limits);
    Ok(md)
}

/// Parses `meta_data.json` keeping whatever is usable: a missing or invalid `uuid` gets
/// [`crate::fallback_instance_id`] (recorded as a problem). On a config drive a document that
/// is not a JSON object is a problem too (the drive is there, its other files are used); from
/// the metadata service it is an error (whatever answered is not OpenStack's service).
pub fn parse_meta_data_lenient(
    input: &[u8],
    datasource: Datasource,
    platform_id: Option<&str>,
    limits: &Limits,
) -> Result<InstanceMetadata, MetadataError> {
    let mut problems = Vec::new();
    let node = match parse_json(input, WHAT, limits) {
        Ok(n @ Node::Map(_)) => Some(n),
        Ok(other) if datasource == Datasource::ConfigDrive => {
            problems.push(Problem::file(
                WHAT,
                format!("expected an object, found {}; ignored", other.kind()),
            ));
            None
        }
        Err(e) if datasource == Datasource::ConfigDrive => {
            problems.push(error_problem(WHAT, &e, "ignored"));
            None
        }
        Ok(other) => {
            return Err(MetadataError::invalid(
                WHAT,
                "(top level)",
                format!("expected an object, found {}", other.kind()),
            ));
        }
        Err(e) => return Err(e),
    };
    let given = node
        .as_ref()
        .and_then(|n| n.get("uuid"))
        .and_then(Node::scalar_string);
    let iid = crate::nocloud::instance_id_or_fallback(
        WHAT,
        "uuid",
        given.as_deref(),
        datasource,
        platform_id,
        input,
        &mut problems,
    );
    let mut md = InstanceMetadata::new(datasource, iid);
    md.problems = problems;
    if let Some(node) = &node {
        read_fields(node, &mut md, limits);
    }
    Ok(md)
}

/// Every field but `uuid`; bad ones become problems.
fn read_fields(node: &Node, md: &mut InstanceMetadata, limits: &Limits) {
    let s = |k: &str| {
        node.get(k)
            .and_then(Node::scalar_string)
            .filter(|v| !v.is_empty())
    };
    let mut named = false;
    for key in ["hostname", "local-hostname"] {
        if let Some(h) = s(key)
            && !named
        {
            named = md.set_hostname_from(WHAT, key, &h);
        }
    }
    // Nova derives `hostname` from the display name; when it is missing or bad, a display
    // name that is a valid hostname will do (an invalid one is just a display name).
    if !named
        && let Some(name) = s("name")
        && crate::hostname::is_valid(&name)
    {
        md.set_hostname_from(WHAT, "name", &name);
    }
    md.name = md.text_field(WHAT, "name", s("name"));
    md.availability_zone = md.text_field(WHAT, "availability_zone", s("availability_zone"));
    md.instance_type = md.text_field(WHAT, "instance_type", s("instance_type"));
    if let Some(v) = node.get("launch_index") {
        md.launch_index = v.as_u64_loose();
        if md.launch_index.is_none() && !v.is_null() {
            md.field_problem(WHAT, "launch_index", "not a non-negative integer; ignored");
        }
    }

    let mut keys: Vec<(String, String)> = Vec::new();
    if let Some(pk) = node.get("public_keys")
        && crate::nocloud::flatten_keys(
            pk,
            "public_keys".into(),
            &mut keys,
            0,
            limits.max_list_entries,
        )
    {
        md.field_problem(
            WHAT,
            "public_keys",
            format!(
                "more than {} keys; the rest ignored",
                limits.max_list_entries
            ),
        );
    }
    if let Some(Node::Seq(list)) = node.get("keys") {
        for (i, k) in list.iter().enumerate().take(limits.max_list_entries) {
            if k.get("type")
                .and_then(Node::as_str)
                .is_none_or(|t| t == "ssh")
                && let Some(data) = k.get("data").and_then(Node::scalar_string)
            {
                keys.push((format!("keys[{i}].data"), data));
            }
        }
    }
    md.set_public_keys(WHAT, keys);

    if let Some(seed) = node.get("random_seed").and_then(Node::as_str) {
        match decode_base64("random_seed", seed.as_bytes()) {
            Ok(bytes) => md.random_seed = Some(bytes),
            Err(_) => md.field_problem(WHAT, "random_seed", "invalid base64; ignored"),
        }
    }
    if let Some(Node::Seq(files)) = node.get("files") {
        for (i, f) in files.iter().enumerate() {
            if i >= limits.max_list_entries {
                md.field_problem(
                    WHAT,
                    "files",
                    format!(
                        "more than {} files; the rest ignored",
                        limits.max_list_entries
                    ),
                );
                break;
            }
            match f.get("path").and_then(Node::scalar_string) {
                Some(path) => md.files.push(InjectedFile {
                    path,
                    content_path: f.get("content_path").and_then(Node::scalar_string),
                    content: None,
                }),
                None => md.field_problem(WHAT, &format!("files[{i}]"), "no path; ignored"),
            }
        }
    }
    if let Some(Node::Map(meta)) = node.get("meta") {
        for (k, v) in meta.iter().take(limits.max_list_entries) {
            let v = v.scalar_string().unwrap_or_else(|| v.to_json().to_string());
            md.meta.insert(k.clone(), v);
        }
    }
}

/// Extracts the cloud-init vendor-data from `vendor_data.json` (as cloud-init's
/// `convert_vendordata`): a JSON string is the vendor-data; an object's `cloud-init` member is
/// (a string, or a list/object re-encoded as `#cloud-config-archive`/JSON is not supported and
/// is reported); anything else means no vendor-data.
pub fn parse_vendor_data(input: &[u8], limits: &Limits) -> Result<Option<Vec<u8>>, MetadataError> {
    let node = parse_json(input, "vendor_data.json", limits)?;
    let value = match &node {
        Node::Map(_) => match node.get("cloud-init") {
            Some(v) => v,
            None => return Ok(None),
        },
        other => other,
    };
    match value {
        Node::Str(s) => Ok(Some(s.clone().into_bytes())),
        Node::Null => Ok(None),
        other => Err(MetadataError::invalid(
            "vendor_data.json",
            "cloud-init",
            format!("expected a string, found {}", other.kind()),
        )),
    }
}

/// Crawl settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenstackConfig {
    /// [`Datasource::ConfigDrive`] (file-backed) or [`Datasource::Openstack`] (HTTP).
    pub datasource: Datasource,
    /// Fetch `files[].content_path` (default true).
    pub fetch_files: bool,
    /// Timeout passed with every request (default 5 s).
    pub request_timeout: Duration,
    /// Size and count limits.
    pub limits: Limits,
    /// The machine's id (the DMI product UUID) for a fallback instance id when
    /// `meta_data.json` has no usable `uuid` ([`crate::fallback_instance_id`]).
    pub platform_id: Option<String>,
}

impl OpenstackConfig {
    /// Settings for a config drive.
    pub fn config_drive() -> Self {
        OpenstackConfig {
            datasource: Datasource::ConfigDrive,
            fetch_files: true,
            request_timeout: Duration::from_secs(5),
            limits: Limits::default(),
            platform_id: None,
        }
    }

    /// Settings for the HTTP metadata service.
    pub fn metadata_service() -> Self {
        OpenstackConfig {
            datasource: Datasource::Openstack,
            ..Self::config_drive()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Job {
    Listing,
    MetaData(usize),
    UserData,
    VendorData,
    NetworkData,
    File(usize),
}

/// The OpenStack / config drive crawler. See the module docs for the sequence.
#[derive(Debug, Clone)]
pub struct OpenstackCrawler {
    config: OpenstackConfig,
    exchange: Exchange,
    job: Option<Job>,
    started: bool,
    versions: Vec<String>,
    md: Option<InstanceMetadata>,
    problems: Vec<Problem>,
}

impl OpenstackCrawler {
    /// A crawler with these settings.
    pub fn new(config: OpenstackConfig) -> Self {
        let exchange = Exchange::new(config.limits.max_requests);
        OpenstackCrawler {
            config,
            exchange,
            job: None,
            started: false,
            versions: Vec::new(),
            md: None,
            problems: Vec::new(),
        }
    }

    /// The version in use, once `meta_data.json` was found.
    pub fn version(&self) -> Option<&str> {
        self.md
            .as_ref()
            .and_then(|m| m.meta.get("openstack-version"))
            .map(String::as_str)
    }

    fn version_str(&self) -> &str {
        self.md
            .as_ref()
            .and_then(|m| m.meta.get("openstack-version"))
            .map_or("latest", String::as_str)
    }

    fn send(&mut self, job: Job) -> Result<Step, MetadataError> {
        let l = &self.config.limits;
        let (path, max) = match &job {
            Job::Listing => ("/openstack/".to_owned(), l.max_metadata_bytes),
            Job::MetaData(i) => (
                format!("/openstack/{}/meta_data.json", self.versions[*i]),
                l.max_metadata_bytes,
            ),
            Job::UserData => (
                format!("/openstack/{}/user_data", self.version_str()),
                l.max_user_data_bytes,
            ),
            Job::VendorData => (
                format!("/openstack/{}/vendor_data.json", self.version_str()),
                l.max_metadata_bytes,
            ),
            Job::NetworkData => (
                format!("/openstack/{}/network_data.json", self.version_str()),
                l.max_metadata_bytes,
            ),
            Job::File(i) => {
                let cp = self
                    .md
                    .as_ref()
                    .and_then(|m| m.files.get(*i))
                    .and_then(|f| f.content_path.as_deref());
                (
                    format!("/openstack/{}", cp.unwrap_or("").trim_start_matches('/')),
                    l.max_user_data_bytes,
                )
            }
        };
        self.job = Some(job);
        self.exchange
            .send(HttpRequest::get(path, self.config.request_timeout, max))
    }

    fn after(&mut self, job: &Job) -> Result<Step, MetadataError> {
        let next = match job {
            Job::Listing | Job::MetaData(_) => Some(Job::UserData),
            Job::UserData => Some(Job::VendorData),
            Job::VendorData => Some(Job::NetworkData),
            Job::NetworkData => self.next_file(0),
            Job::File(i) => self.next_file(i + 1),
        };
        match next {
            Some(j) => self.send(j),
            None => {
                let mut md = self.md.take().ok_or_else(|| MetadataError::Protocol {
                    reason: "crawl finished without meta_data.json".into(),
                })?;
                md.problems.append(&mut self.problems);
                Ok(Step::Done(Box::new(md)))
            }
        }
    }

    /// The next file (from index `from`) with a safe `content_path`.
    fn next_file(&mut self, from: usize) -> Option<Job> {
        if !self.config.fetch_files {
            return None;
        }
        let files = &self.md.as_ref()?.files;
        for (i, f) in files.iter().enumerate().skip(from) {
            match f.content_path.as_deref() {
                Some(cp) if safe_content_path(cp) => return Some(Job::File(i)),
                Some(cp) => self.problems.push(Problem::field(
                    WHAT,
                    format!("files[{i}].content_path"),
                    format!("unsafe content_path {cp:?}; file skipped"),
                )),
                None => self.problems.push(Problem::field(
                    WHAT,
                    format!("files[{i}]"),
                    format!("{:?} has no content_path; skipped", f.path),
                )),
            }
        }
        None
    }

    fn on_outcome(
        &mut self,
        job: Job,
        req: HttpRequest,
        outcome: HttpOutcome,
    ) -> Result<Step, MetadataError> {
        let (status, body) = match outcome {
            HttpOutcome::Response { status, body } => (status, body),
            HttpOutcome::Failed(reason) => return Err(transport_error(&req, reason)),
        };
        let limits = self.config.limits;
        match (&job, status) {
            (Job::Listing, 200) => {
                check_body("openstack version listing", &req, &body)?;
                self.versions = version_order(&String::from_utf8_lossy(&body));
                if self.versions.is_empty() {
                    self.problems.push(Problem::file(
                        "openstack/",
                        "the version listing offers no usable version; trying latest",
                    ));
                    self.versions.push("latest".into());
                }
                self.send(Job::MetaData(0))
            }
            (Job::Listing, 404) => {
                self.versions = vec!["latest".into()];
                self.send(Job::MetaData(0))
            }
            (Job::MetaData(i), 200) => {
                let mut md = parse_meta_data_lenient(
                    &body,
                    self.config.datasource,
                    self.config.platform_id.as_deref(),
                    &limits,
                )?;
                md.meta
                    .insert("openstack-version".into(), self.versions[*i].clone());
                self.md = Some(md);
                self.after(&job)
            }
            (Job::MetaData(i), 404) if i + 1 < self.versions.len() => {
                self.send(Job::MetaData(i + 1))
            }
            (Job::MetaData(_), 404) => Err(MetadataError::Protocol {
                reason: format!(
                    "no meta_data.json in any offered version ({})",
                    self.versions.join(", ")
                ),
            }),
            (Job::UserData, 200) => {
                if let Some(md) = self.md.as_mut() {
                    md.user_data = crate::nocloud::blob(md, "user_data", Some(&body), &limits);
                }
                self.after(&job)
            }
            (Job::VendorData, 200) => {
                match parse_vendor_data(&body, &limits) {
                    Ok(v) => {
                        if let Some(md) = self.md.as_mut() {
                            md.vendor_data = v;
                        }
                    }
                    Err(e) => self
                        .problems
                        .push(error_problem("vendor_data.json", &e, "ignored")),
                }
                self.after(&job)
            }
            (Job::NetworkData, 200) => {
                match parse_network_data(&body, &limits) {
                    Ok(n) => {
                        if let Some(md) = self.md.as_mut() {
                            md.network = Some(n);
                        }
                    }
                    Err(e) => self
                        .problems
                        .push(error_problem("network_data.json", &e, "ignored")),
                }
                self.after(&job)
            }
            (Job::File(i), 200) => {
                match check_body("openstack file content", &req, &body) {
                    Ok(()) => {
                        if let Some(f) = self.md.as_mut().and_then(|m| m.files.get_mut(*i)) {
                            f.content = Some(body);
                        }
                    }
                    Err(e) => self
                        .problems
                        .push(error_problem(&req.path, &e, "file skipped")),
                }
                self.after(&job)
            }
            (Job::File(_), s) => {
                self.problems.push(Problem::file(
                    req.path.as_str(),
                    format!("answered HTTP {s}; file skipped"),
                ));
                self.after(&job)
            }
            (_, 404) => self.after(&job),
            (_, s) => Err(status_error(&req, s)),
        }
    }
}

/// `content_path` must be a relative path below `openstack/` (a leading `/` is allowed, as
/// Nova writes `/content/0000`), without `..`, `.` or empty components.
fn safe_content_path(cp: &str) -> bool {
    let rel = cp.strip_prefix('/').unwrap_or(cp);
    !rel.is_empty()
        && rel.len() <= 255
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains(['\\', '\0']))
}

impl Crawler for OpenstackCrawler {
    fn step(&mut self, last: Option<HttpOutcome>) -> Result<Step, MetadataError> {
        let received = self.exchange.receive(last)?;
        match (self.job.take(), received) {
            (None, None) if !self.started => {
                self.started = true;
                self.send(Job::Listing)
            }
            (Some(job), Some((req, outcome))) => self.on_outcome(job, req, outcome),
            _ => Err(MetadataError::Protocol {
                reason: "step called out of order or after the end".into(),
            }),
        }
    }
}

/// Builds the metadata of a config drive from already read files (for drivers that prefer
/// reading a few files over running the crawler). Never fails: a broken `meta_data.json`,
/// oversized `user_data`, or bad `vendor_data.json`/`network_data.json` is recorded in
/// [`InstanceMetadata::problems`] and the rest kept (see [`parse_meta_data_lenient`]).
pub fn assemble_config_drive(
    meta_data: &[u8],
    user_data: Option<&[u8]>,
    vendor_data: Option<&[u8]>,
    network_data: Option<&[u8]>,
    limits: &Limits,
) -> InstanceMetadata {
    // On a config drive the lenient parse does not fail; should it, the drive still counts.
    let mut md = match parse_meta_data_lenient(meta_data, Datasource::ConfigDrive, None, limits) {
        Ok(md) => md,
        Err(e) => {
            let iid = crate::fallback_instance_id(Datasource::ConfigDrive, None, meta_data);
            let mut md = InstanceMetadata::new(Datasource::ConfigDrive, iid);
            md.problems.push(error_problem(WHAT, &e, "ignored"));
            md
        }
    };
    md.user_data = crate::nocloud::blob(&mut md, "user_data", user_data, limits);
    if let Some(v) = vendor_data {
        match parse_vendor_data(v, limits) {
            Ok(v) => md.vendor_data = v,
            Err(e) => md
                .problems
                .push(error_problem("vendor_data.json", &e, "ignored")),
        }
    }
    if let Some(n) = network_data {
        match parse_json(n, "network_data.json", limits)
            .and_then(|node| network_data_from_node(&node))
        {
            Ok(n) => md.network = Some(n),
            Err(e) => md
                .problems
                .push(error_problem("network_data.json", &e, "ignored")),
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::drive;
    use std::collections::BTreeMap;

    #[test]
    fn version_ordering() {
        let listing = "2012-08-10\n2013-04-04\n2015-10-15\n2099-01-01\nlatest\njunk\n";
        assert_eq!(
            version_order(listing),
            [
                "latest",
                "2015-10-15",
                "2013-04-04",
                "2012-08-10",
                "2099-01-01"
            ]
        );
        assert_eq!(select_version("2012-08-10/ 2016-06-30/"), "2016-06-30");
        assert_eq!(select_version(""), "latest");
        assert_eq!(select_version("2030-01-01\n2031-02-02"), "2031-02-02");
        assert!(version_order("../etc\n2012-08-1x").is_empty());
    }

    #[test]
    fn content_paths() {
        assert!(safe_content_path("/content/0000"));
        assert!(safe_content_path("content/0001"));
        assert!(!safe_content_path("/../etc/shadow"));
        assert!(!safe_content_path("/content/./x"));
        assert!(!safe_content_path("/"));
        assert!(!safe_content_path("//content"));
    }

    #[test]
    fn meta_data_requires_uuid() {
        let l = Limits::default();
        assert!(matches!(
            parse_meta_data(br#"{"hostname":"x"}"#, Datasource::Openstack, &l),
            Err(MetadataError::MissingField { field: "uuid", .. })
        ));
        assert!(parse_meta_data(b"[]", Datasource::Openstack, &l).is_err());
        assert!(parse_meta_data(b"{", Datasource::Openstack, &l).is_err());
    }

    #[test]
    fn vendor_data_shapes() {
        let l = Limits::default();
        assert_eq!(
            parse_vendor_data(br##""#cloud-config\n""##, &l)
                .unwrap()
                .unwrap(),
            b"#cloud-config\n"
        );
        assert_eq!(
            parse_vendor_data(br#"{"cloud-init": "x"}"#, &l)
                .unwrap()
                .unwrap(),
            b"x"
        );
        assert_eq!(parse_vendor_data(br#"{"other": 1}"#, &l).unwrap(), None);
        assert!(parse_vendor_data(br#"{"cloud-init": {"a": 1}}"#, &l).is_err());
    }

    fn tree(files: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        files
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn crawl_picks_newest_and_reads_files() {
        let files = tree(&[
            ("/openstack/", "2012-08-10\n2015-10-15\n"),
            (
                "/openstack/2015-10-15/meta_data.json",
                r#"{"uuid":"u1","hostname":"h.example","files":[{"path":"/etc/x","content_path":"/content/0000"},{"path":"/etc/y","content_path":"/../../etc/shadow"}]}"#,
            ),
            ("/openstack/2015-10-15/user_data", "#!/bin/sh\n"),
            (
                "/openstack/2015-10-15/network_data.json",
                r#"{"links":[],"networks":[],"services":[{"type":"dns","address":"8.8.8.8"}]}"#,
            ),
            ("/openstack/content/0000", "hello"),
        ]);
        let mut log = Vec::new();
        let mut c = OpenstackCrawler::new(OpenstackConfig::metadata_service());
        let md = drive(&mut c, |r| {
            log.push(r.path.clone());
            files
                .get(&r.path)
                .map_or(HttpOutcome::status(404), |b| HttpOutcome::ok(b.clone()))
        })
        .unwrap();
        assert_eq!(md.instance_id, "u1");
        assert_eq!(md.meta["openstack-version"], "2015-10-15");
        assert_eq!(md.user_data.as_deref(), Some(&b"#!/bin/sh\n"[..]));
        assert_eq!(md.files[0].content.as_deref(), Some(&b"hello"[..]));
        assert_eq!(md.files[1].content, None);
        assert!(
            md.problems
                .iter()
                .any(|p| p.message.contains("unsafe content_path"))
        );
        assert_eq!(md.network.unwrap().dns.nameservers.len(), 1);
        assert!(!log.iter().any(|p| p.contains("..")));
    }

    #[test]
    fn bad_files_degrade_and_a_broken_drive_is_kept() {
        let key = crate::sshkey::tests::make_key("ssh-ed25519", "os");
        let meta = format!(
            r#"{{"hostname":"bad_name.novalocal","name":"vm-1","public_keys":{{"k":"{key}"}},"launch_index":"x"}}"#
        );
        let big = vec![b'#'; (16 << 20) + 1];
        let files = tree(&[
            ("/openstack/", "latest\n"),
            ("/openstack/latest/meta_data.json", &meta),
            ("/openstack/latest/vendor_data.json", "{not json"),
            ("/openstack/latest/network_data.json", r#"{"links": 5}"#),
        ]);
        let run = |config: OpenstackConfig| {
            let mut c = OpenstackCrawler::new(config);
            drive(&mut c, |r| match r.path.as_str() {
                "/openstack/latest/user_data" => HttpOutcome::ok(big.clone()),
                p => files
                    .get(p)
                    .map_or(HttpOutcome::status(404), |b| HttpOutcome::ok(b.clone())),
            })
        };
        for config in [
            OpenstackConfig::config_drive(),
            OpenstackConfig {
                platform_id: Some("B0FA911B-69D4-4476-BBE2-1C92BFF6535C".into()),
                ..OpenstackConfig::metadata_service()
            },
        ] {
            let ds = config.datasource;
            let md = run(config).unwrap();
            assert_eq!(md.public_keys, std::slice::from_ref(&key));
            // `hostname` is invalid: the display name, a valid hostname, is used instead.
            assert_eq!(md.local_hostname.as_deref(), Some("vm-1"));
            assert_eq!(md.user_data, None);
            let files: Vec<&str> = md.problems.iter().map(|p| p.file.as_str()).collect();
            assert_eq!(
                files,
                [
                    "meta_data.json",
                    "meta_data.json",
                    "meta_data.json",
                    "user_data",
                    "vendor_data.json",
                    "network_data.json"
                ],
                "{:#?}",
                md.problems
            );
            if ds == Datasource::Openstack {
                assert_eq!(
                    md.instance_id,
                    "iid-openstack-b0fa911b-69d4-4476-bbe2-1c92bff6535c"
                );
            } else {
                assert!(md.instance_id.starts_with("iid-configdrive-"));
            }
        }

        // A config drive whose meta_data.json is garbage still hands over its user_data; the
        // metadata service answering garbage is not OpenStack.
        let drive_files = tree(&[
            ("/openstack/", "latest\n"),
            ("/openstack/latest/meta_data.json", "<html>nope</html>"),
            ("/openstack/latest/user_data", "#!/bin/sh\n"),
        ]);
        let answer = |r: &HttpRequest| {
            drive_files
                .get(&r.path)
                .map_or(HttpOutcome::status(404), |b| HttpOutcome::ok(b.clone()))
        };
        let mut c = OpenstackCrawler::new(OpenstackConfig::config_drive());
        let md = drive(&mut c, answer).unwrap();
        assert_eq!(md.user_data.as_deref(), Some(&b"#!/bin/sh\n"[..]));
        assert!(md.problems[0].message.starts_with("not valid JSON"));
        let mut c = OpenstackCrawler::new(OpenstackConfig::metadata_service());
        assert!(matches!(
            drive(&mut c, answer),
            Err(MetadataError::Json { .. })
        ));
        let md = assemble_config_drive(
            b"[]",
            Some(b"#!/bin/sh\n"),
            Some(b"7"),
            None,
            &Limits::default(),
        );
        assert!(md.user_data.is_some());
        assert_eq!(md.problems.len(), 3, "{:#?}", md.problems);
    }

    #[test]
    fn crawl_falls_back_through_versions() {
        let files = tree(&[
            ("/openstack/", "latest\n2012-08-10\n"),
            ("/openstack/2012-08-10/meta_data.json", r#"{"uuid":"u2"}"#),
        ]);
        let mut c = OpenstackCrawler::new(OpenstackConfig::config_drive());
        let md = drive(&mut c, |r| {
            files
                .get(&r.path)
                .map_or(HttpOutcome::status(404), |b| HttpOutcome::ok(b.clone()))
        })
        .unwrap();
        assert_eq!(md.datasource, Datasource::ConfigDrive);
        assert_eq!(md.meta["openstack-version"], "2012-08-10");

        let mut c = OpenstackCrawler::new(OpenstackConfig::config_drive());
        let err = drive(&mut c, |_| HttpOutcome::status(404)).unwrap_err();
        assert!(matches!(err, MetadataError::Protocol { .. }));

        let mut c = OpenstackCrawler::new(OpenstackConfig::metadata_service());
        let err = drive(&mut c, |_| HttpOutcome::status(503)).unwrap_err();
        assert!(err.is_retryable());
    }
}
