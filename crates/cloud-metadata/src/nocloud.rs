//! NoCloud: `meta-data`, `network-config`, `vendor-data`, the `ds=nocloud;…` seed string, and
//! a sans-IO crawler for seeds served over HTTP (`nocloud-net`) or read from a directory.

use std::time::Duration;

use crate::http::{
    Crawler, Exchange, HttpOutcome, HttpRequest, Step, check_body, status_error, transport_error,
};
use crate::network::{network_config_from_node, parse_network_config};
use crate::value::{Node, parse_yaml_or_json};
use crate::{Datasource, InstanceMetadata, Limits, MetadataError};

/// Parses NoCloud `meta-data` (YAML or JSON). `instance-id` is required; `local-hostname`
/// (or `hostname`), `public-keys` (string, list or mapping, nested lists allowed), EC2-style
/// keys (`availability-zone` or `placement.availability-zone`, `ami-launch-index`/
/// `launch-index`, `instance-type`, `local-ipv4`, `public-ipv4`) and an embedded
/// `network-config` are read; other scalar keys land in [`InstanceMetadata::meta`].
pub fn parse_meta_data(input: &[u8], limits: &Limits) -> Result<InstanceMetadata, MetadataError> {
    const WHAT: &str = "meta-data";
    let node = parse_yaml_or_json(input, WHAT, limits)?;
    let entries = match &node {
        Node::Map(entries) => entries.as_slice(),
        Node::Null => &[],
        other => {
            return Err(MetadataError::invalid(
                WHAT,
                "(top level)",
                format!("expected a mapping, found {}", other.kind()),
            ));
        }
    };
    let iid = node
        .get("instance-id")
        .and_then(Node::scalar_string)
        .ok_or(MetadataError::MissingField {
            what: WHAT,
            field: "instance-id",
        })?;
    let iid = check_instance_id(WHAT, "instance-id", &iid)?;
    let mut md = InstanceMetadata::new(Datasource::NoCloud, iid);
    let s = |k: &str| {
        node.get(k)
            .and_then(Node::scalar_string)
            .filter(|v| !v.is_empty())
    };
    if let Some(h) = s("local-hostname").or_else(|| s("hostname")) {
        md.set_hostname(&h);
    }
    md.availability_zone = s("availability-zone").or_else(|| {
        node.get("placement")
            .and_then(|p| p.get("availability-zone"))
            .and_then(Node::scalar_string)
    });
    md.launch_index = node
        .get_any(&["launch-index", "ami-launch-index"])
        .and_then(Node::as_u64_loose);
    md.instance_type = s("instance-type");
    md.local_ipv4 = s("local-ipv4");
    md.public_ipv4 = s("public-ipv4");
    md.name = s("name");
    let mut keys = Vec::new();
    if let Some(pk) = node.get_any(&["public-keys", "public_keys"]) {
        flatten_keys(pk, &mut keys, 0, limits.max_list_entries);
    }
    md.set_public_keys(keys);
    if let Some(nc) = node.get("network-config") {
        match network_config_from_node(nc) {
            Ok(n) => md.network = Some(n),
            Err(e) => md
                .warnings
                .push(format!("meta-data: {e}; network-config ignored")),
        }
    }
    if node.get("network-interfaces").is_some() {
        md.warnings
            .push("meta-data: network-interfaces (ENI format) is not supported; ignored".into());
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
    for (k, v) in entries.iter().take(limits.max_list_entries) {
        if !USED.contains(&k.as_str())
            && let Some(v) = v.scalar_string()
        {
            md.meta.insert(k.clone(), v);
        }
    }
    Ok(md)
}

/// Checks an instance id: non-empty after trimming, at most 256 bytes, no control characters.
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

/// Flattens a `public-keys` value: a string (one key per line), a list, or a mapping of
/// name → key / list of keys (the EC2 and OpenStack shapes), to at most `max` lines.
pub(crate) fn flatten_keys(node: &Node, out: &mut Vec<String>, depth: usize, max: usize) {
    if depth > 4 || out.len() >= max {
        return;
    }
    match node {
        Node::Str(s) => {
            for line in s.lines().map(str::trim).filter(|l| !l.is_empty()) {
                if out.len() < max {
                    out.push(line.to_owned());
                }
            }
        }
        Node::Seq(items) => items
            .iter()
            .for_each(|i| flatten_keys(i, out, depth + 1, max)),
        Node::Map(entries) => entries
            .iter()
            .for_each(|(_, v)| flatten_keys(v, out, depth + 1, max)),
        _ => {}
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
}

/// Builds the metadata of a NoCloud seed. A broken `network-config` is a warning (the guest
/// then falls back to DHCP); a broken `meta-data` is an error. An empty `network-config` file
/// means none. `network-config` overrides one embedded in `meta-data`.
pub fn assemble(
    files: NoCloudFiles<'_>,
    datasource: Datasource,
    limits: &Limits,
) -> Result<InstanceMetadata, MetadataError> {
    let mut md = parse_meta_data(files.meta_data, limits)?;
    md.datasource = datasource;
    if let Some(u) = files.user_data {
        Limits::check_size("user-data", u, limits.max_user_data_bytes)?;
        md.user_data = Some(u.to_vec());
    }
    if let Some(v) = files.vendor_data {
        Limits::check_size("vendor-data", v, limits.max_user_data_bytes)?;
        md.vendor_data = Some(v.to_vec());
    }
    if let Some(n) = files
        .network_config
        .filter(|n| !n.iter().all(u8::is_ascii_whitespace))
    {
        match parse_network_config(n, limits) {
            Ok(cfg) => md.network = Some(cfg),
            Err(e) => md.warnings.push(format!("{e}; network-config ignored")),
        }
    }
    Ok(md)
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
    /// as in cloud-init).
    pub fn apply_overrides(&self, md: &mut InstanceMetadata) {
        if let Some(iid) = &self.instance_id {
            md.instance_id = iid.clone();
        }
        if let Some(h) = &self.local_hostname {
            md.set_hostname(h);
        }
        md.warnings.extend(self.warnings.iter().cloned());
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
        }
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
                HttpOutcome::Response { status: 200, body } => {
                    check_body(NOCLOUD_FILES[self.index], &req, &body)?;
                    match self.index {
                        0 => self.meta_data = Some(body),
                        i => self.others[i - 1] = Some(body),
                    }
                }
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
            },
            self.datasource,
            &self.limits,
        )?;
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
    fn bad_network_config_is_a_warning() {
        let md = assemble(
            NoCloudFiles {
                meta_data: b"instance-id: x",
                network_config: Some(b"version: [\n"),
                ..Default::default()
            },
            Datasource::NoCloud,
            &Limits::default(),
        )
        .unwrap();
        assert!(md.network.is_none());
        assert!(md.warnings.iter().any(|w| w.contains("network-config")));
    }

    proptest! {
        #[test]
        fn meta_data_never_panics(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_meta_data(&b, &Limits::default());
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
