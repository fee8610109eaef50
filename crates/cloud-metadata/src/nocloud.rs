//! NoCloud: `meta-data`, `network-config`, `vendor-data`, the `ds=nocloud;…` seed string, and
//! a sans-IO crawler for seeds served over HTTP (`nocloud-net`) or read from a directory.

use std::time::Duration;

use crate::http::{
    Crawler, Exchange, HttpOutcome, HttpRequest, Step, status_error, transport_error,
};
use crate::model::error_problem;
use crate::network::{network_config_from_node, parse_network_config};
use crate::value::{Node, parse_yaml_or_json};
use crate::{Datasource, InstanceMetadata, Limits, MetadataError, Problem, fallback_instance_id};

const WHAT: &str = "meta-data";

/// Parses NoCloud `meta-data` (YAML or JSON), strictly: a document that does not parse, is
/// not a mapping, or lacks a valid `instance-id` is an error. `local-hostname` (or
/// `hostname`), `public-keys` (string, list or mapping, nested lists allowed), EC2-style keys
/// (`availability-zone` or `placement.availability-zone`, `ami-launch-index`/`launch-index`,
/// `instance-type`, `local-ipv4`, `public-ipv4`) and an embedded `network-config` are read;
/// other scalar keys land in [`InstanceMetadata::meta`]. A bad field is dropped and recorded
/// in [`InstanceMetadata::problems`]. Seeds are read with [`assemble`] (and the crawler),
/// which never discard a seed for a bad `meta-data`.
pub fn parse_meta_data(input: &[u8], limits: &Limits) -> Result<InstanceMetadata, MetadataError> {
    let node = parse_yaml_or_json(input, WHAT, limits)?;
    if !matches!(node, Node::Map(_) | Node::Null) {
        return Err(MetadataError::invalid(
            WHAT,
            "(top level)",
            format!("expected a mapping, found {}", node.kind()),
        ));
    }
    let iid = node
        .get("instance-id")
        .and_then(Node::scalar_string)
        .ok_or(MetadataError::MissingField {
            what: WHAT,
            field: "instance-id",
        })?;
    let iid = check_instance_id(WHAT, "instance-id", &iid)?;
    let mut md = InstanceMetadata::new(Datasource::NoCloud, iid);
    read_fields(&node, &mut md, limits);
    Ok(md)
}

/// Parses NoCloud `meta-data` without ever failing: whatever is wrong is recorded in
/// [`InstanceMetadata::problems`] and the rest kept. A document that does not parse counts
/// as empty; a missing or invalid `instance-id` is replaced by
/// [`fallback_instance_id`]`(datasource, platform_id, input)` (the problem names it).
pub fn parse_meta_data_lenient(
    input: &[u8],
    datasource: Datasource,
    platform_id: Option<&str>,
    limits: &Limits,
) -> InstanceMetadata {
    let mut problems = Vec::new();
    let node = match parse_yaml_or_json(input, WHAT, limits) {
        Ok(n @ (Node::Map(_) | Node::Null)) => Some(n),
        Ok(other) => {
            problems.push(Problem::file(
                WHAT,
                format!("expected a mapping, found {}; ignored", other.kind()),
            ));
            None
        }
        Err(e) => {
            problems.push(error_problem(WHAT, &e, "ignored"));
            None
        }
    };
    let given = node
        .as_ref()
        .and_then(|n| n.get("instance-id"))
        .and_then(Node::scalar_string);
    let iid = instance_id_or_fallback(
        WHAT,
        "instance-id",
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
    md
}

/// Reads every field but `instance-id`; bad ones become problems.
fn read_fields(node: &Node, md: &mut InstanceMetadata, limits: &Limits) {
    let s = |k: &str| {
        node.get(k)
            .and_then(Node::scalar_string)
            .filter(|v| !v.is_empty())
    };
    let mut named = false;
    for key in ["local-hostname", "hostname"] {
        if let Some(h) = s(key)
            && !named
        {
            named = md.set_hostname_from(WHAT, key, &h);
        }
    }
    let az = s("availability-zone").or_else(|| {
        node.get("placement")
            .and_then(|p| p.get("availability-zone"))
            .and_then(Node::scalar_string)
    });
    md.availability_zone = md.text_field(WHAT, "availability-zone", az);
    if let Some((key, v)) = ["launch-index", "ami-launch-index"]
        .iter()
        .find_map(|k| node.get(k).map(|v| (*k, v)))
    {
        md.launch_index = v.as_u64_loose();
        if md.launch_index.is_none() && !v.is_null() {
            md.field_problem(WHAT, key, "not a non-negative integer; ignored");
        }
    }
    md.instance_type = md.text_field(WHAT, "instance-type", s("instance-type"));
    md.local_ipv4 = md.ipv4_field(WHAT, "local-ipv4", s("local-ipv4"));
    md.public_ipv4 = md.ipv4_field(WHAT, "public-ipv4", s("public-ipv4"));
    md.name = md.text_field(WHAT, "name", s("name"));
    let mut keys = Vec::new();
    for key in ["public-keys", "public_keys"] {
        if let Some(pk) = node.get(key)
            && flatten_keys(pk, key.to_owned(), &mut keys, 0, limits.max_list_entries)
        {
            md.field_problem(
                WHAT,
                key,
                format!(
                    "more than {} keys; the rest ignored",
                    limits.max_list_entries
                ),
            );
        }
    }
    md.set_public_keys(WHAT, keys);
    if let Some(nc) = node.get("network-config") {
        match network_config_from_node(nc) {
            Ok(n) => md.network = Some(n),
            Err(e) => md
                .problems
                .push(error_problem(WHAT, &e, "network-config ignored")),
        }
    }
    if node.get("network-interfaces").is_some() {
        md.field_problem(
            WHAT,
            "network-interfaces",
            "the ENI format is not supported; ignored",
        );
    }
    const USED: &[&str] = &[
        "instance-id",
        "local-hostname",
        "hostname",
        "availability-zone",
        "placement",
        "launch-index",
        "ami-launch-index",
        "instance-type",
        "local-ipv4",
        "public-ipv4",
        "name",
        "public-keys",
        "public_keys",
        "network-config",
        "network-interfaces",
    ];
    for (k, v) in node
        .as_map()
        .unwrap_or_default()
        .iter()
        .take(limits.max_list_entries)
    {
        if !USED.contains(&k.as_str())
            && let Some(v) = v.scalar_string()
        {
            md.meta.insert(k.clone(), v);
        }
    }
}

/// Checks an instance id: non-empty after trimming, at most 256 bytes, no control characters.
/// The instance id given in `field` of `what`, or — when it is missing or unusable — the
/// stable fallback of [`fallback_instance_id`], with a problem that names it.
pub(crate) fn instance_id_or_fallback(
    what: &'static str,
    field: &str,
    given: Option<&str>,
    datasource: Datasource,
    platform_id: Option<&str>,
    input: &[u8],
    problems: &mut Vec<Problem>,
) -> String {
    match given.map(|i| check_instance_id(what, field, i)) {
        Some(Ok(iid)) => iid,
        other => {
            let iid = fallback_instance_id(datasource, platform_id, input);
            let why = match other {
                Some(Err(_)) => "not 1-256 bytes without control characters",
                _ => "missing",
            };
            problems.push(Problem::field(
                what,
                field,
                format!("{why}; using the fallback {iid}"),
            ));
            iid
        }
    }
}

pub(crate) fn check_instance_id(
    what: &'static str,
    field: &str,
    iid: &str,
) -> Result<String, MetadataError> {
    let iid = iid.trim();
    if iid.is_empty() || iid.len() > 256 || iid.chars().any(char::is_control) {
        return Err(MetadataError::invalid(
            what,
            field,
            "must be 1-256 bytes without control characters",
        ));
    }
    Ok(iid.to_owned())
}

/// Flattens a `public-keys` value: a string (keys one per line), a list, or a mapping of
/// name → key / list of keys (the EC2 and OpenStack shapes) into `(field, text)` pairs, the
/// field naming where each came from (`public-keys[2]`, `public_keys.mykey`). Returns true
/// when entries past `max` were left out.
pub(crate) fn flatten_keys(
    node: &Node,
    path: String,
    out: &mut Vec<(String, String)>,
    depth: usize,
    max: usize,
) -> bool {
    if depth > 4 {
        return false;
    }
    match node {
        Node::Null => false,
        Node::Seq(items) => {
            let mut cut = false;
            for (i, item) in items.iter().enumerate() {
                cut |= flatten_keys(item, format!("{path}[{i}]"), out, depth + 1, max);
            }
            cut
        }
        Node::Map(entries) => {
            let mut cut = false;
            for (k, v) in entries {
                cut |= flatten_keys(v, format!("{path}.{k}"), out, depth + 1, max);
            }
            cut
        }
        scalar => {
            if out.len() >= max {
                return true;
            }
            out.push((path, scalar.scalar_string().unwrap_or_default()));
            false
        }
    }
}

/// The files of a NoCloud seed, as read by the driver (only `meta-data` is required).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCloudFiles<'a> {
    /// `meta-data`.
    pub meta_data: &'a [u8],
    /// `user-data`.
    pub user_data: Option<&'a [u8]>,
    /// `vendor-data`.
    pub vendor_data: Option<&'a [u8]>,
    /// `network-config`.
    pub network_config: Option<&'a [u8]>,
    /// The machine's id for a fallback instance id (the DMI product UUID), when known.
    pub platform_id: Option<&'a str>,
}

/// Builds the metadata of a NoCloud seed. Nothing in a present seed discards the rest: a
/// `meta-data` that does not parse or lacks `instance-id` gets a fallback id
/// ([`parse_meta_data_lenient`]); an oversized `user-data`/`vendor-data` or a broken
/// `network-config` is ignored (the guest then falls back to DHCP); each is recorded in
/// [`InstanceMetadata::problems`]. An empty `network-config` file means none; a
/// `network-config` file overrides one embedded in `meta-data`.
pub fn assemble(
    files: NoCloudFiles<'_>,
    datasource: Datasource,
    limits: &Limits,
) -> InstanceMetadata {
    let mut md = parse_meta_data_lenient(files.meta_data, datasource, files.platform_id, limits);
    md.user_data = blob(&mut md, "user-data", files.user_data, limits);
    md.vendor_data = blob(&mut md, "vendor-data", files.vendor_data, limits);
    if let Some(n) = files
        .network_config
        .filter(|n| !n.iter().all(u8::is_ascii_whitespace))
    {
        match parse_network_config(n, limits) {
            Ok(cfg) => md.network = Some(cfg),
            Err(e) => md
                .problems
                .push(error_problem("network-config", &e, "ignored")),
        }
    }
    md
}

/// User-data or vendor-data within [`Limits::max_user_data_bytes`], else a problem.
pub(crate) fn blob(
    md: &mut InstanceMetadata,
    file: &'static str,
    data: Option<&[u8]>,
    limits: &Limits,
) -> Option<Vec<u8>> {
    let data = data?;
    match Limits::check_size(file, data, limits.max_user_data_bytes) {
        Ok(()) => Some(data.to_vec()),
        Err(e) => {
            md.problems.push(error_problem(file, &e, "ignored"));
            None
        }
    }
}

/// Whether the seed is read locally or fetched over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedMode {
    /// `ds=nocloud`: a local disk (`cidata`) or seed directory.
    Local,
    /// `ds=nocloud-net` or an `http(s)://` seed URL.
    Net,
}

/// A parsed `ds=nocloud;…` string (kernel command line or SMBIOS system serial).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoCloudSeed {
    /// Local or net.
    pub mode: SeedMode,
    /// `s=` / `seedfrom=`: an `http(s)://…/` URL (always ending in `/`), `file://` URL or
    /// absolute directory path.
    pub seedfrom: Option<String>,
    /// `h=` / `local-hostname=`.
    pub local_hostname: Option<String>,
    /// `i=` / `instance-id=`.
    pub instance_id: Option<String>,
    /// Things that were ignored.
    pub warnings: Vec<String>,
}

impl NoCloudSeed {
    /// Finds and parses `ds=nocloud…` in a kernel command line or SMBIOS serial string.
    /// `Ok(None)`: no `ds=nocloud` / `ds=nocloud-net` parameter is present.
    pub fn from_cmdline(cmdline: &str) -> Result<Option<Self>, MetadataError> {
        let cl = boot_contract::cmdline::Cmdline::parse(cmdline);
        let Some(value) = cl.params().iter().rev().find_map(|p| {
            (p.key == "ds").then_some(p.value).flatten().filter(|v| {
                let name = v.split(';').next().unwrap_or("").to_ascii_lowercase();
                name == "nocloud" || name == "nocloud-net"
            })
        }) else {
            return Ok(None);
        };
        Self::parse(value).map(Some)
    }

    /// Parses the value of `ds=`: `nocloud[-net][;key=value]…`.
    pub fn parse(value: &str) -> Result<Self, MetadataError> {
        let err = |reason: String| MetadataError::NoCloudSeed { reason };
        if value.len() > 4096 {
            return Err(err("longer than 4096 bytes".into()));
        }
        let mut parts = value.split(';');
        let name = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut seed = NoCloudSeed {
            mode: match name.as_str() {
                "nocloud" => SeedMode::Local,
                "nocloud-net" => SeedMode::Net,
                other => return Err(err(format!("unknown datasource {other:?}"))),
            },
            seedfrom: None,
            local_hostname: None,
            instance_id: None,
            warnings: Vec::new(),
        };
        for part in parts.filter(|p| !p.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                seed.warnings
                    .push(format!("nocloud: {part:?} has no value; ignored"));
                continue;
            };
            if v.contains("__dmi.") {
                seed.warnings.push(format!(
                    "nocloud: DMI variable expansion in {k} is not supported"
                ));
            }
            match k {
                "s" | "seedfrom" => seed.seedfrom = Some(v.to_owned()),
                "h" | "local-hostname" => seed.local_hostname = Some(v.to_owned()),
                "i" | "instance-id" => {
                    seed.instance_id = Some(check_instance_id("ds=nocloud", "i", v)?)
                }
                other => seed
                    .warnings
                    .push(format!("nocloud: unknown key {other:?} ignored")),
            }
        }
        if let Some(s) = seed.seedfrom.as_mut() {
            let lower = s.to_ascii_lowercase();
            if lower.starts_with("http://") || lower.starts_with("https://") {
                seed.mode = SeedMode::Net;
                if !s.ends_with('/') {
                    seed.warnings
                        .push(format!("nocloud: seed URL {s:?} should end in '/'; added"));
                    s.push('/');
                }
            } else if let Some(path) = s.strip_prefix("file://") {
                if !path.starts_with('/') {
                    return Err(err(format!("file seed {s:?} is not absolute")));
                }
            } else if !s.starts_with('/') {
                return Err(err(format!(
                    "unsupported seed {s:?} (expected http(s)://, file:// or /path)"
                )));
            }
        } else if seed.mode == SeedMode::Net {
            return Err(err("nocloud-net needs s=URL".into()));
        }
        Ok(seed)
    }

    /// Applies the `h=`/`i=` overrides to metadata read from the seed (the command line wins,
    /// as in cloud-init). An `i=` also settles a missing `instance-id`; an invalid `h=` is a
    /// problem. Things this seed string ignored are recorded as problems of `ds=nocloud`.
    pub fn apply_overrides(&self, md: &mut InstanceMetadata) {
        if let Some(iid) = &self.instance_id {
            md.instance_id = iid.clone();
            md.problems
                .retain(|p| !(p.file == WHAT && p.field.as_deref() == Some("instance-id")));
        }
        if let Some(h) = &self.local_hostname {
            md.set_hostname_from("ds=nocloud", "h", h);
        }
        md.problems.extend(
            self.warnings
                .iter()
                .map(|w| Problem::file("ds=nocloud", w.trim_start_matches("nocloud: "))),
        );
    }
}

/// Fetches a NoCloud seed: `meta-data` (required), then `user-data`, `vendor-data`,
/// `network-config` (each `404` = absent). Paths are relative (`meta-data`): the driver joins
/// them to the seed URL (which ends in `/`) or to the seed directory.
#[derive(Debug, Clone)]
pub struct NoCloudCrawler {
    datasource: Datasource,
    limits: Limits,
    timeout: Duration,
    exchange: Exchange,
    index: usize,
    started: bool,
    meta_data: Option<Vec<u8>>,
    others: [Option<Vec<u8>>; 3],
    platform_id: Option<String>,
}

const NOCLOUD_FILES: [&str; 4] = ["meta-data", "user-data", "vendor-data", "network-config"];

impl NoCloudCrawler {
    /// A crawler reporting `datasource` ([`Datasource::NoCloud`] or [`Datasource::NoCloudNet`]).
    pub fn new(datasource: Datasource, limits: Limits, timeout: Duration) -> Self {
        NoCloudCrawler {
            datasource,
            limits,
            timeout,
            exchange: Exchange::new(limits.max_requests),
            index: 0,
            started: false,
            meta_data: None,
            others: [None, None, None],
            platform_id: None,
        }
    }

    /// The machine's id (the DMI product UUID), used for a fallback instance id when the
    /// seed has none ([`crate::fallback_instance_id`]).
    pub fn with_platform_id(mut self, platform_id: Option<String>) -> Self {
        self.platform_id = platform_id;
        self
    }

    fn request(&mut self) -> Result<Step, MetadataError> {
        let max = if self.index == 0 || self.index == 3 {
            self.limits.max_metadata_bytes
        } else {
            self.limits.max_user_data_bytes
        };
        let path = NOCLOUD_FILES[self.index].to_owned();
        self.exchange
            .send(HttpRequest::get(path, self.timeout, max))
    }
}

impl Crawler for NoCloudCrawler {
    fn step(&mut self, last: Option<HttpOutcome>) -> Result<Step, MetadataError> {
        match self.exchange.receive(last)? {
            None if !self.started => {
                self.started = true;
                return self.request();
            }
            None => {
                return Err(MetadataError::Protocol {
                    reason: "step called out of order or after the end".into(),
                });
            }
            Some((req, outcome)) => match outcome {
                HttpOutcome::Failed(reason) => return Err(transport_error(&req, reason)),
                // Sizes are checked by `assemble`, which keeps the rest of the seed.
                HttpOutcome::Response { status: 200, body } => match self.index {
                    0 => self.meta_data = Some(body),
                    i => self.others[i - 1] = Some(body),
                },
                HttpOutcome::Response { status: 404, .. } if self.index > 0 => {}
                HttpOutcome::Response { status, .. } => return Err(status_error(&req, status)),
            },
        }
        self.index += 1;
        if self.index < NOCLOUD_FILES.len() {
            return self.request();
        }
        let md = assemble(
            NoCloudFiles {
                meta_data: self.meta_data.as_deref().unwrap_or_default(),
                user_data: self.others[0].as_deref(),
                vendor_data: self.others[1].as_deref(),
                network_config: self.others[2].as_deref(),
                platform_id: self.platform_id.as_deref(),
            },
            self.datasource,
            &self.limits,
        );
        self.index = usize::MAX / 2;
        Ok(Step::Done(Box::new(md)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::drive;
    use crate::sshkey::tests::make_key;
    use proptest::prelude::*;

    #[test]
    fn meta_data_yaml_and_json() {
        let l = Limits::default();
        let k = make_key("ssh-ed25519", "x");
        let yaml = format!(
            "instance-id: iid-local01\nlocal-hostname: cloudimg.example.com\npublic-keys:\n  - {k}\ncustom: 42\n"
        );
        let md = parse_meta_data(yaml.as_bytes(), &l).unwrap();
        assert_eq!(md.instance_id, "iid-local01");
        assert_eq!(md.local_hostname.as_deref(), Some("cloudimg.example.com"));
        assert_eq!(md.fqdn.as_deref(), Some("cloudimg.example.com"));
        assert_eq!(md.public_keys, vec![k.clone()]);
        assert_eq!(md.meta["custom"], "42");
        let json = format!(r#"{{"instance-id": 12345, "public-keys": {{"a": "{k}"}}}}"#);
        let md = parse_meta_data(json.as_bytes(), &l).unwrap();
        assert_eq!(md.instance_id, "12345");
        assert_eq!(md.public_keys, vec![k.clone()]);
        let md = parse_meta_data(
            format!("instance-id: i\npublic-keys: \"{k}\"\n").as_bytes(),
            &l,
        )
        .unwrap();
        assert_eq!(md.public_keys.len(), 1);
    }

    #[test]
    fn meta_data_errors() {
        let l = Limits::default();
        for bad in [
            &b""[..],
            b"local-hostname: x\n",
            b"[1, 2]",
            b"instance-id: ''\n",
            b"{{{{",
            b"\xff\xfe\x00",
        ] {
            assert!(
                parse_meta_data(bad, &l).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            parse_meta_data(b"local-hostname: x\n", &l),
            Err(MetadataError::MissingField {
                field: "instance-id",
                ..
            })
        ));
    }

    #[test]
    fn seed_strings() {
        let s = NoCloudSeed::from_cmdline(
            "ro console=ttyS0 ds=nocloud;s=http://10.0.2.2:8000/seed;h=myhost;i=iid-9 quiet",
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.mode, SeedMode::Net);
        assert_eq!(s.seedfrom.as_deref(), Some("http://10.0.2.2:8000/seed/"));
        assert_eq!(s.local_hostname.as_deref(), Some("myhost"));
        assert_eq!(s.instance_id.as_deref(), Some("iid-9"));
        assert_eq!(s.warnings.len(), 1);
        let s = NoCloudSeed::from_cmdline("ds=nocloud-net;seedfrom=https://x/y/")
            .unwrap()
            .unwrap();
        assert_eq!(s.mode, SeedMode::Net);
        assert!(s.warnings.is_empty());
        let s = NoCloudSeed::from_cmdline("ds=nocloud").unwrap().unwrap();
        assert_eq!((s.mode, s.seedfrom), (SeedMode::Local, None));
        let s = NoCloudSeed::from_cmdline("ds=nocloud;s=/var/lib/cloud/seed/x/")
            .unwrap()
            .unwrap();
        assert_eq!(s.mode, SeedMode::Local);
        assert_eq!(
            NoCloudSeed::from_cmdline("ds=ec2 root=/dev/vda").unwrap(),
            None
        );
        assert_eq!(NoCloudSeed::from_cmdline("").unwrap(), None);
        assert!(NoCloudSeed::from_cmdline("ds=nocloud-net").is_err());
        assert!(NoCloudSeed::from_cmdline("ds=nocloud;s=ftp://x/").is_err());
        assert!(NoCloudSeed::from_cmdline("ds=nocloud;s=file://rel").is_err());
    }

    #[test]
    fn overrides_win() {
        let mut md =
            parse_meta_data(b"instance-id: a\nlocal-hostname: b\n", &Limits::default()).unwrap();
        NoCloudSeed::parse("nocloud;i=c;h=d.e")
            .unwrap()
            .apply_overrides(&mut md);
        assert_eq!(md.instance_id, "c");
        assert_eq!(md.fqdn.as_deref(), Some("d.e"));
        assert!(md.problems.is_empty());
    }

    #[test]
    fn crawler_fetches_the_seed() {
        let mut seen = Vec::new();
        let mut c = NoCloudCrawler::new(
            Datasource::NoCloudNet,
            Limits::default(),
            Duration::from_secs(1),
        );
        let md = drive(&mut c, |r| {
            seen.push(r.path.clone());
            match r.path.as_str() {
                "meta-data" => HttpOutcome::ok("instance-id: net-1\n"),
                "user-data" => HttpOutcome::ok("#cloud-config\n"),
                "network-config" => {
                    HttpOutcome::ok("version: 2\nethernets:\n  eth0:\n    dhcp4: true\n")
                }
                _ => HttpOutcome::status(404),
            }
        })
        .unwrap();
        assert_eq!(seen, NOCLOUD_FILES);
        assert_eq!(md.datasource, Datasource::NoCloudNet);
        assert_eq!(md.instance_id, "net-1");
        assert!(md.network.unwrap().interfaces[0].dhcp4);
        assert_eq!(md.vendor_data, None);
        let mut c = NoCloudCrawler::new(
            Datasource::NoCloudNet,
            Limits::default(),
            Duration::from_secs(1),
        );
        assert!(drive(&mut c, |_| HttpOutcome::status(404)).is_err());
        assert!(c.step(None).is_err());
    }

    #[test]
    fn bad_network_config_is_a_problem() {
        let md = assemble(
            NoCloudFiles {
                meta_data: b"instance-id: x",
                network_config: Some(b"version: [\n"),
                ..Default::default()
            },
            Datasource::NoCloud,
            &Limits::default(),
        );
        assert!(md.network.is_none());
        assert!(md.problems.iter().any(|p| p.file == "network-config"));
    }

    fn seed(files: NoCloudFiles<'_>) -> InstanceMetadata {
        assemble(files, Datasource::NoCloud, &Limits::default())
    }

    #[test]
    fn a_bad_file_never_discards_the_seed() {
        let k = make_key("ssh-ed25519", "ok");
        let good_meta = format!(
            "instance-id: iid-1\nlocal-hostname: box.example\npublic-keys:\n  - {k}\n  - ssh-rsa AAAA junk\n  - {k}\n"
        );
        let script = b"#!/bin/sh\necho hi\n";
        // Oversized user-data: ignored with a problem; keys, hostname, id kept.
        let big = vec![b'#'; (16 << 20) + 1];
        let md = seed(NoCloudFiles {
            meta_data: good_meta.as_bytes(),
            user_data: Some(&big),
            vendor_data: Some(script),
            ..Default::default()
        });
        assert_eq!(md.instance_id, "iid-1");
        assert_eq!(md.public_keys, std::slice::from_ref(&k));
        assert_eq!(md.local_hostname.as_deref(), Some("box.example"));
        assert_eq!(md.user_data, None);
        assert_eq!(md.vendor_data.as_deref(), Some(&script[..]));
        let text: Vec<String> = md.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "meta-data: public-keys[1]: not an SSH key (truncated key data); ignored",
                "user-data: over the 16 MiB limit; ignored",
            ]
        );
        let bigger = vec![b'#'; 17 << 20];
        let md = seed(NoCloudFiles {
            meta_data: good_meta.as_bytes(),
            user_data: Some(&bigger),
            ..Default::default()
        });
        assert!(
            md.problems
                .iter()
                .any(|p| p.to_string() == "user-data: 17 MiB exceeds the 16 MiB limit; ignored"),
            "{:?}",
            md.problems
        );

        // meta-data that is not YAML: fallback id, user-data kept.
        let md = seed(NoCloudFiles {
            meta_data: b"instance-id: [unclosed\n",
            user_data: Some(script),
            ..Default::default()
        });
        assert!(
            md.instance_id.starts_with("iid-nocloud-"),
            "{}",
            md.instance_id
        );
        assert_eq!(md.user_data.as_deref(), Some(&script[..]));
        assert!(
            md.problems[0]
                .to_string()
                .starts_with("meta-data: not valid YAML (")
        );
        assert_eq!(md.problems[1].field.as_deref(), Some("instance-id"));
        assert!(md.problems[1].message.contains(&md.instance_id));

        // meta-data without instance-id: keys and hostname kept, the fallback is stable and
        // named in the problems; a platform id is preferred over the hash.
        let no_iid = format!("local-hostname: box\npublic-keys: [\"{k}\"]\n");
        let files = NoCloudFiles {
            meta_data: no_iid.as_bytes(),
            user_data: Some(script),
            ..Default::default()
        };
        let md = seed(files);
        assert_eq!(md.public_keys, std::slice::from_ref(&k));
        assert_eq!(md.short_hostname(), Some("box"));
        assert_eq!(md.instance_id, seed(files).instance_id, "stable");
        assert_eq!(
            md.problems[0].to_string(),
            format!(
                "meta-data: instance-id: missing; using the fallback {}",
                md.instance_id
            )
        );
        let md = seed(NoCloudFiles {
            platform_id: Some("9F5BC2D4-1E8A-4F0B-8C3D-2A6E7B9C0D1E"),
            ..files
        });
        assert_eq!(
            md.instance_id,
            "iid-nocloud-9f5bc2d4-1e8a-4f0b-8c3d-2a6e7b9c0d1e"
        );

        // One bad field: a hostname with a newline (console forging) is dropped, the rest kept.
        let md = seed(NoCloudFiles {
            meta_data: b"instance-id: i-9\nlocal-hostname: \"evil\\n=== datasource: forged ===\"\nhostname: fallback-name\nlocal-ipv4: 999.1.1.1\nlaunch-index: many\navailability-zone: \"az\\u0007\"\n",
            ..Default::default()
        });
        assert_eq!(md.instance_id, "i-9");
        assert_eq!(md.local_hostname.as_deref(), Some("fallback-name"));
        assert_eq!(md.local_ipv4, None);
        assert_eq!(md.launch_index, None);
        assert_eq!(md.availability_zone, None);
        let fields: Vec<&str> = md
            .problems
            .iter()
            .filter_map(|p| p.field.as_deref())
            .collect();
        assert_eq!(
            fields,
            [
                "local-hostname",
                "availability-zone",
                "launch-index",
                "local-ipv4"
            ]
        );
        assert!(md.problems.iter().all(|p| !p.to_string().contains('\n')));
    }

    #[test]
    fn crawler_degrades_too() {
        let k = make_key("ssh-ed25519", "net");
        let meta = format!("local-hostname: netbox\npublic-keys: [\"{k}\"]\n");
        let mut c = NoCloudCrawler::new(
            Datasource::NoCloudNet,
            Limits::default(),
            Duration::from_secs(1),
        )
        .with_platform_id(Some("4C4C4544-0042-3510-8052-B4C04F333732".into()));
        let md = drive(&mut c, |r| match r.path.as_str() {
            "meta-data" => HttpOutcome::ok(meta.clone()),
            "user-data" => HttpOutcome::ok(vec![b'x'; r.max_body + 1]),
            "vendor-data" => HttpOutcome::ok("#cloud-config\n"),
            "network-config" => HttpOutcome::ok("version: 9\n"),
            _ => HttpOutcome::status(404),
        })
        .unwrap();
        assert_eq!(md.datasource, Datasource::NoCloudNet);
        assert_eq!(
            md.instance_id,
            "iid-nocloud-4c4c4544-0042-3510-8052-b4c04f333732"
        );
        assert_eq!(md.public_keys, [k]);
        assert_eq!(md.user_data, None);
        assert!(md.vendor_data.is_some());
        let files: Vec<&str> = md.problems.iter().map(|p| p.file.as_str()).collect();
        assert_eq!(files, ["meta-data", "user-data", "network-config"]);
        // The command line's i= settles the missing id.
        let mut md = md;
        NoCloudSeed::parse("nocloud;i=from-cmdline;h=bad_host")
            .unwrap()
            .apply_overrides(&mut md);
        assert_eq!(md.instance_id, "from-cmdline");
        assert!(
            !md.problems
                .iter()
                .any(|p| p.field.as_deref() == Some("instance-id"))
        );
        assert_eq!(md.local_hostname.as_deref(), Some("netbox"));
        assert!(md.problems.iter().any(|p| p.file == "ds=nocloud"));
    }

    proptest! {
        #[test]
        fn meta_data_never_panics(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_meta_data(&b, &Limits::default());
            let md = parse_meta_data_lenient(&b, Datasource::NoCloud, None, &Limits::default());
            prop_assert!(!md.instance_id.is_empty());
            prop_assert!(md.local_hostname.as_deref().is_none_or(crate::hostname::is_valid));
        }

        #[test]
        fn seed_never_panics(s in "\\PC{0,120}") {
            let _ = NoCloudSeed::from_cmdline(&s);
            let _ = NoCloudSeed::parse(&s);
        }

        #[test]
        fn instance_id_round_trips(iid in "[a-zA-Z0-9][a-zA-Z0-9._-]{0,40}") {
            let doc = serde_json::json!({"instance-id": iid}).to_string();
            let md = parse_meta_data(doc.as_bytes(), &Limits::default()).unwrap();
            prop_assert_eq!(md.instance_id, iid);
        }
    }
}
