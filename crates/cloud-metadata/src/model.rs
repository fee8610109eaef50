//! The unified instance metadata model and its flat `query` view.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::MetadataError;
use crate::hostname::HostnameError;
use crate::network::NetworkConfig;

/// Where the metadata came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Datasource {
    /// NoCloud seed on a local filesystem (`cidata` disk or seed directory).
    NoCloud,
    /// NoCloud seed fetched over HTTP (`ds=nocloud-net;s=http://…/`).
    NoCloudNet,
    /// OpenStack config drive (`config-2` disk).
    ConfigDrive,
    /// OpenStack metadata service (`http://169.254.169.254/openstack/`).
    Openstack,
    /// EC2 instance metadata service (IMDS).
    Ec2,
    /// No datasource: built-in defaults only.
    None,
}

impl Datasource {
    /// The name used on the kernel command line (`virga.ds=`), in status and by `query`.
    pub fn as_str(self) -> &'static str {
        match self {
            Datasource::NoCloud => "nocloud",
            Datasource::NoCloudNet => "nocloud-net",
            Datasource::ConfigDrive => "configdrive",
            Datasource::Openstack => "openstack",
            Datasource::Ec2 => "ec2",
            Datasource::None => "none",
        }
    }

    /// Parses a datasource name; accepts the cloud-init/CirrOS spellings (`NoCloud`,
    /// `ConfigDrive`, `config-drive`, `OpenStack`, `Ec2`, `None`), case-insensitively.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "nocloud" => Datasource::NoCloud,
            "nocloud-net" | "nocloudnet" => Datasource::NoCloudNet,
            "configdrive" | "config-drive" | "config_drive" | "configdrive2" => {
                Datasource::ConfigDrive
            }
            "openstack" => Datasource::Openstack,
            "ec2" | "aws" => Datasource::Ec2,
            "none" => Datasource::None,
            _ => return None,
        })
    }
}

impl fmt::Display for Datasource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A file the datasource asks to be placed in the guest (ConfigDrive / OpenStack `files`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectedFile {
    /// Target path in the guest, as given (validate with [`crate::write_files::validate_path`]).
    pub path: String,
    /// Where the content lives, relative to `openstack/` (e.g. `/content/0000`).
    pub content_path: Option<String>,
    /// The content, once the crawler (or the driver) has read it.
    #[serde(default, with = "b64_opt", skip_serializing_if = "Option::is_none")]
    pub content: Option<Vec<u8>>,
}

/// Everything a datasource provided, in one shape for every datasource.
///
/// Serializes to JSON (binary fields as base64) so the guest can keep it in
/// `/run/virga/datasource.json` and `query` can read it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceMetadata {
    /// The datasource that provided it.
    pub datasource: Datasource,
    /// The instance id (NoCloud `instance-id`, OpenStack `uuid`, EC2 `instance-id`).
    pub instance_id: String,
    /// The hostname as the datasource gave it (may be a FQDN).
    pub local_hostname: Option<String>,
    /// The fully qualified name, when the datasource's hostname has a domain part.
    pub fqdn: Option<String>,
    /// OpenStack display `name`.
    pub name: Option<String>,
    /// Valid SSH public key lines (invalid ones are dropped with a warning).
    pub public_keys: Vec<String>,
    /// Availability zone.
    pub availability_zone: Option<String>,
    /// Launch index (EC2 `ami-launch-index`, OpenStack `launch_index`).
    pub launch_index: Option<u64>,
    /// Instance type / flavour.
    pub instance_type: Option<String>,
    /// Private IPv4 address (EC2).
    pub local_ipv4: Option<String>,
    /// Public IPv4 address (EC2).
    pub public_ipv4: Option<String>,
    /// Seed for the kernel entropy pool (OpenStack `random_seed`, decoded).
    #[serde(default, with = "b64_opt", skip_serializing_if = "Option::is_none")]
    pub random_seed: Option<Vec<u8>>,
    /// User-data as delivered (not yet decoded: see [`crate::user_data`]).
    #[serde(default, with = "b64_opt", skip_serializing_if = "Option::is_none")]
    pub user_data: Option<Vec<u8>>,
    /// Vendor-data as delivered (for OpenStack, the `cloud-init` member of `vendor_data.json`).
    #[serde(default, with = "b64_opt", skip_serializing_if = "Option::is_none")]
    pub vendor_data: Option<Vec<u8>>,
    /// Network configuration, when the datasource provided one.
    pub network: Option<NetworkConfig>,
    /// Files to inject (ConfigDrive / OpenStack).
    pub files: Vec<InjectedFile>,
    /// Free-form string metadata (OpenStack `meta`; other scalar NoCloud keys).
    pub meta: BTreeMap<String, String>,
    /// Everything that was wrong and dropped, replaced or ignored, per file and field; the
    /// rest of the datasource was kept (see [`Problem`]).
    pub problems: Vec<Problem>,
}

/// One problem with the metadata a datasource delivered, naming the file (or IMDS path) and
/// field it concerns. Displays as `meta-data: public-keys[2]: not an SSH key (…)` or
/// `user-data: 17.0 MiB exceeds the 16 MiB limit; ignored`, on one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The file or document: `meta-data`, `user-data`, `meta_data.json`, `network_data.json`,
    /// `ec2 meta-data`, `ds=nocloud` …
    pub file: String,
    /// The field inside it, when the problem is about one: `instance-id`, `public-keys[2]`,
    /// `public-keys/0/openssh-key` …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong and what was done about it.
    pub message: String,
}

impl Problem {
    /// A problem with a whole file.
    pub fn file(file: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            file: file.into(),
            field: None,
            message: one_line(message.into()),
        }
    }

    /// A problem with one field of a file.
    pub fn field(
        file: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            file: file.into(),
            field: Some(one_line(field.into())),
            message: one_line(message.into()),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: {field}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Control characters escaped, so that a message is one console line whatever it quotes.
fn one_line(s: String) -> String {
    if !s.chars().any(char::is_control) {
        return s;
    }
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

impl InstanceMetadata {
    /// Empty metadata for `datasource` with this instance id.
    pub fn new(datasource: Datasource, instance_id: impl Into<String>) -> Self {
        InstanceMetadata {
            datasource,
            instance_id: instance_id.into(),
            local_hostname: None,
            fqdn: None,
            name: None,
            public_keys: Vec::new(),
            availability_zone: None,
            launch_index: None,
            instance_type: None,
            local_ipv4: None,
            public_ipv4: None,
            random_seed: None,
            user_data: None,
            vendor_data: None,
            network: None,
            files: Vec::new(),
            meta: BTreeMap::new(),
            problems: Vec::new(),
        }
    }

    /// Records a problem with a whole file.
    pub fn problem(&mut self, file: &str, message: impl Into<String>) {
        self.problems.push(Problem::file(file, message));
    }

    /// Records a problem with one field of a file.
    pub fn field_problem(&mut self, file: &str, field: &str, message: impl Into<String>) {
        self.problems.push(Problem::field(file, field, message));
    }

    /// The `none` datasource: CirrOS's instance id `i-dsnone`, nothing else.
    pub fn none() -> Self {
        InstanceMetadata::new(Datasource::None, "i-dsnone")
    }

    /// Sets `local_hostname`, and `fqdn` when the name has a domain part, after validating it
    /// ([`crate::hostname::validate`]); an invalid name changes nothing.
    pub fn set_hostname(&mut self, hostname: &str) -> Result<(), HostnameError> {
        let h = crate::hostname::validate(hostname)?;
        self.local_hostname = Some(h.to_owned());
        self.fqdn = h.contains('.').then(|| h.to_owned());
        Ok(())
    }

    /// Sets the hostname from `field` of `file`, recording a problem (and keeping the
    /// previous value) when it is not a valid hostname. Returns whether it was set.
    pub(crate) fn set_hostname_from(&mut self, file: &str, field: &str, hostname: &str) -> bool {
        match self.set_hostname(hostname) {
            Ok(()) => true,
            Err(e) => {
                self.field_problem(file, field, format!("{e}; ignored"));
                false
            }
        }
    }

    /// The short hostname: the first label of `local_hostname` (what CirrOS writes to
    /// `/etc/hostname`); `None` when absent or not a valid hostname.
    pub fn short_hostname(&self) -> Option<&str> {
        crate::hostname::short_name(self.local_hostname.as_deref()?)
    }

    /// Sets the public keys from `(field, text)` pairs of `file` (a text may hold several
    /// lines), keeping the valid, distinct keys in order and recording a problem for each
    /// line dropped: `meta-data: public-keys[2]: not an SSH key (unknown key type); ignored`.
    pub fn set_public_keys<I, F, S>(&mut self, file: &str, keys: I)
    where
        I: IntoIterator<Item = (F, S)>,
        F: AsRef<str>,
        S: AsRef<str>,
    {
        let mut good: Vec<String> = Vec::new();
        for (field, text) in keys {
            let lines: Vec<&str> = text
                .as_ref()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .collect();
            for (n, line) in lines.iter().enumerate() {
                let label = if lines.len() > 1 {
                    format!("{} line {}", field.as_ref(), n + 1)
                } else {
                    field.as_ref().to_owned()
                };
                match crate::sshkey::parse_public_key(line) {
                    Ok(k) => {
                        let line = k.to_line();
                        if !good.contains(&line) {
                            good.push(line);
                        }
                    }
                    Err(e) => {
                        let why = match e {
                            MetadataError::SshKey { reason } => reason.to_owned(),
                            other => other.to_string(),
                        };
                        self.field_problem(
                            file,
                            &label,
                            format!("not an SSH key ({why}); ignored"),
                        );
                    }
                }
            }
        }
        self.public_keys = good;
    }

    /// Sets a short free-text field (availability zone, instance type, display name …):
    /// at most 255 bytes without control characters, else a problem and no value.
    pub(crate) fn text_field(
        &mut self,
        file: &str,
        field: &str,
        value: Option<String>,
    ) -> Option<String> {
        let v = value?;
        let v = v.trim();
        if v.is_empty() {
            return None;
        }
        if v.len() > 255 || v.chars().any(char::is_control) {
            self.field_problem(
                file,
                field,
                "longer than 255 bytes or has control characters; ignored",
            );
            return None;
        }
        Some(v.to_owned())
    }

    /// Sets an IPv4 address field, recording a problem when it is not one.
    pub(crate) fn ipv4_field(
        &mut self,
        file: &str,
        field: &str,
        value: Option<String>,
    ) -> Option<String> {
        let v = value?;
        match v.trim().parse::<std::net::Ipv4Addr>() {
            Ok(ip) => Some(ip.to_string()),
            Err(_) => {
                self.field_problem(
                    file,
                    field,
                    format!(
                        "{:?} is not an IPv4 address; ignored",
                        truncate_at_char(&v, 64)
                    ),
                );
                None
            }
        }
    }

    /// Looks up one `query` key (see [`QUERY_KEYS`]); `meta.NAME` reads [`Self::meta`].
    /// `Ok(None)`: the key is known but has no value for this instance.
    pub fn query(&self, key: &str) -> Result<Option<QueryValue<'_>>, MetadataError> {
        use QueryValue::{Bytes, Text};
        fn text(s: &Option<String>) -> Option<QueryValue<'_>> {
            s.as_deref().map(|s| QueryValue::Text(Cow::Borrowed(s)))
        }
        if let Some(name) = key.strip_prefix("meta.") {
            return Ok(self.meta.get(name).map(|v| Text(Cow::Borrowed(v.as_str()))));
        }
        Ok(match key {
            "datasource" => Some(Text(Cow::Borrowed(self.datasource.as_str()))),
            "instance-id" => Some(Text(Cow::Borrowed(&self.instance_id))),
            "local-hostname" => text(&self.local_hostname),
            "hostname" => self.short_hostname().map(|s| Text(Cow::Borrowed(s))),
            "fqdn" => text(&self.fqdn),
            "name" => text(&self.name),
            "public-keys" => (!self.public_keys.is_empty())
                .then(|| Text(Cow::Owned(self.public_keys.join("\n")))),
            "availability-zone" => text(&self.availability_zone),
            "launch-index" => self.launch_index.map(|i| Text(Cow::Owned(i.to_string()))),
            "instance-type" => text(&self.instance_type),
            "local-ipv4" => text(&self.local_ipv4),
            "public-ipv4" => text(&self.public_ipv4),
            "random-seed" => self.random_seed.as_deref().map(Bytes),
            "user-data" => self.user_data.as_deref().map(Bytes),
            "vendor-data" => self.vendor_data.as_deref().map(Bytes),
            "network-config" => self.network.as_ref().map(|n| {
                Text(Cow::Owned(
                    serde_json::to_string_pretty(n).unwrap_or_default(),
                ))
            }),
            "meta" => (!self.meta.is_empty()).then(|| {
                Text(Cow::Owned(
                    serde_json::to_string_pretty(&self.meta).unwrap_or_default(),
                ))
            }),
            "problems" | "warnings" => (!self.problems.is_empty()).then(|| {
                Text(Cow::Owned(
                    self.problems
                        .iter()
                        .map(Problem::to_string)
                        .collect::<Vec<_>>()
                        .join("\n"),
                ))
            }),
            _ => return Err(MetadataError::UnknownQueryKey(key.to_owned())),
        })
    }

    /// Every `query` key with a value, as one JSON object (`query --json`). Byte values are
    /// UTF-8 strings when they are valid UTF-8 and base64 under `<key>-base64` otherwise;
    /// `random-seed` is always base64; `network-config` and `meta` are nested objects.
    pub fn to_query_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for &key in QUERY_KEYS {
            let value = match key {
                "network-config" => self
                    .network
                    .as_ref()
                    .and_then(|n| serde_json::to_value(n).ok()),
                "meta" => (!self.meta.is_empty())
                    .then(|| serde_json::to_value(&self.meta).unwrap_or_default()),
                "public-keys" => Some(serde_json::to_value(&self.public_keys).unwrap_or_default()),
                "problems" => Some(serde_json::Value::Array(
                    self.problems.iter().map(|p| p.to_string().into()).collect(),
                )),
                "launch-index" => self.launch_index.map(serde_json::Value::from),
                "random-seed" => self.random_seed.as_deref().map(|b| B64.encode(b).into()),
                _ => match self.query(key) {
                    Ok(Some(QueryValue::Text(t))) => Some(t.into_owned().into()),
                    Ok(Some(QueryValue::Bytes(b))) => match std::str::from_utf8(b) {
                        Ok(s) => Some(s.into()),
                        Err(_) => {
                            out.insert(format!("{key}-base64"), B64.encode(b).into());
                            None
                        }
                    },
                    _ => None,
                },
            };
            if let Some(v) = value {
                out.insert(key.to_owned(), v);
            }
        }
        serde_json::Value::Object(out)
    }
}

/// The keys `query KEY` understands (CirrOS `cirros-query` names), plus `meta.NAME` (and
/// `warnings`, the former name of `problems`).
pub const QUERY_KEYS: &[&str] = &[
    "datasource",
    "instance-id",
    "local-hostname",
    "hostname",
    "fqdn",
    "name",
    "public-keys",
    "availability-zone",
    "launch-index",
    "instance-type",
    "local-ipv4",
    "public-ipv4",
    "random-seed",
    "user-data",
    "vendor-data",
    "network-config",
    "meta",
    "problems",
];

/// One `query` answer: text, or raw bytes (user-data, vendor-data, random-seed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryValue<'a> {
    /// Text (multi-valued keys are newline-separated).
    Text(Cow<'a, str>),
    /// Raw bytes, to be written out unchanged.
    Bytes(&'a [u8]),
}

impl QueryValue<'_> {
    /// The value as bytes, as `query` prints it.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            QueryValue::Text(t) => t.as_bytes(),
            QueryValue::Bytes(b) => b,
        }
    }
}

/// The instance id used when a datasource does not give a usable one: `iid-<kind>-<id>`,
/// where `<kind>` is `nocloud` (NoCloud, local or net), `configdrive` or `openstack`, and
/// `<id>` is the platform id when one is given and usable (the DMI product UUID, lowercased;
/// all-zero, all-F and other placeholder UUIDs are not usable), else the first 16 hex digits of
/// the SHA-256 of the raw meta-data document. Stable across boots as long as the machine or the
/// seed stays the same; the caller records it as a problem.
pub fn fallback_instance_id(
    datasource: Datasource,
    platform_id: Option<&str>,
    meta_data: &[u8],
) -> String {
    use sha2::Digest as _;
    let kind = match datasource {
        Datasource::NoCloud | Datasource::NoCloudNet => "nocloud",
        other => other.as_str(),
    };
    if let Some(uuid) = platform_id.and_then(usable_platform_id) {
        return format!("iid-{kind}-{uuid}");
    }
    let digest = sha2::Sha256::digest(meta_data);
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("iid-{kind}-{hex}")
}

/// A platform UUID that identifies a machine: `8-4-4-4-12` hex digits, not a placeholder.
fn usable_platform_id(id: &str) -> Option<String> {
    let id = id.trim().to_ascii_lowercase();
    let shape = id.len() == 36
        && id.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    let placeholder = hex.bytes().all(|b| b == b'0')
        || hex.bytes().all(|b| b == b'f')
        || id == "03000200-0400-0500-0006-000700080009";
    (shape && !placeholder).then_some(id)
}

pub(crate) const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Lenient base64 decoding (whitespace removed, padding optional), as Python's `b64decode`.
/// Whitespace is skipped in 64 KiB chunks, so the only large allocation is the output.
pub(crate) fn decode_base64(what: &str, text: &[u8]) -> Result<Vec<u8>, MetadataError> {
    const CHUNK: usize = 64 * 1024;
    let engine = base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT;
    let err = |source| MetadataError::Base64 {
        what: what.to_owned(),
        source,
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 3);
    let mut chunk = Vec::with_capacity(CHUNK.min(text.len()));
    for &b in text {
        if b.is_ascii_whitespace() {
            continue;
        }
        chunk.push(b);
        if chunk.len() == CHUNK {
            engine.decode_vec(&chunk, &mut out).map_err(err)?;
            chunk.clear();
        }
    }
    engine.decode_vec(&chunk, &mut out).map_err(err)?;
    out.shrink_to_fit();
    Ok(out)
}

/// Output a gzip stream may produce whatever its ratio (small inputs legitimately compress
/// well past any ratio).
pub(crate) const GZIP_RATIO_FLOOR: usize = 1 << 20;

/// Decompresses gzip (concatenated members allowed) while streaming, refusing as soon as the
/// output passes `cap` bytes or `max(ratio × input, 1 MiB)`. The output buffer grows by
/// doubling up to that bound and never past it, and starts at the size the gzip trailer
/// announces when that is within bounds, so an honest stream is one allocation.
pub(crate) fn gunzip_bounded(
    data: &[u8],
    what: &'static str,
    cap: usize,
    ratio: usize,
) -> Result<Vec<u8>, MetadataError> {
    use std::io::Read as _;
    let ratio_cap = data.len().saturating_mul(ratio).max(GZIP_RATIO_FLOOR);
    let limit = cap.min(ratio_cap);
    let hint = data
        .len()
        .checked_sub(4)
        .and_then(|i| data.get(i..))
        .and_then(|t| <[u8; 4]>::try_from(t).ok())
        .map_or(0, |t| u32::from_le_bytes(t) as usize);
    let mut out: Vec<u8> = Vec::with_capacity(if hint <= limit { hint } else { 0 });
    let mut decoder = flate2::read::MultiGzDecoder::new(data);
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = decoder
            .read(&mut buf)
            .map_err(|source| MetadataError::Gzip { what, source })?;
        if n == 0 {
            return Ok(out);
        }
        let size = out.len() + n;
        if size > limit {
            return Err(if limit < cap {
                MetadataError::CompressionRatio {
                    what,
                    input: data.len(),
                    ratio,
                }
            } else {
                MetadataError::TooLarge {
                    what,
                    size,
                    limit: cap,
                }
            });
        }
        if out.capacity() < size {
            let want = (out.capacity() * 2).clamp(64 * 1024, limit).max(size);
            out.reserve_exact(want - out.len());
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// A size for messages: `512 bytes`, `64 KiB`, `16 MiB`, `16.5 MiB`.
pub(crate) fn human_size(n: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    let unit = |n: usize, u: usize, name: &str| {
        if n.is_multiple_of(u) {
            format!("{} {name}", n / u)
        } else {
            format!("{:.1} {name}", n as f64 / u as f64)
        }
    };
    match n {
        n if n >= MIB => unit(n, MIB, "MiB"),
        n if n >= KIB => unit(n, KIB, "KiB"),
        n => format!("{n} bytes"),
    }
}

/// A [`Problem`] for a parse error of `file`, worded without repeating the file name, ending
/// with what was done (`ignored`, `network-config ignored` …).
pub(crate) fn error_problem(file: &str, e: &MetadataError, action: &str) -> Problem {
    let message = match e {
        MetadataError::TooLarge { size, limit, .. } if *size <= limit + 1 => {
            format!("over the {} limit; {action}", human_size(*limit))
        }
        MetadataError::TooLarge { size, limit, .. } => format!(
            "{} exceeds the {} limit; {action}",
            human_size(*size),
            human_size(*limit)
        ),
        MetadataError::TooDeep { limit, .. } => {
            format!("nests deeper than {limit} levels; {action}")
        }
        MetadataError::TooManyNodes { limit, .. } => {
            format!("has more than {limit} nodes or string bytes; {action}")
        }
        MetadataError::Json { source, .. } => format!("not valid JSON ({source}); {action}"),
        MetadataError::Yaml { source, .. } => format!("not valid YAML ({source}); {action}"),
        MetadataError::NotUtf8 { .. } => format!("not UTF-8 text; {action}"),
        MetadataError::InvalidField { field, reason, .. } => {
            return Problem::field(file, field.as_str(), format!("{reason}; {action}"));
        }
        MetadataError::MissingField { field, .. } => {
            return Problem::field(file, *field, format!("missing; {action}"));
        }
        other => format!("{other}; {action}"),
    };
    Problem::file(file, message)
}

pub(crate) fn truncate_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `Vec<u8>` as base64 text in serde formats (a third bigger than the bytes, where a JSON
/// array of numbers is four times bigger).
pub(crate) mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::B64.encode(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        super::B64
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

mod b64_opt {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_some(&super::B64.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| {
            super::B64
                .decode(s.as_bytes())
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InstanceMetadata {
        let mut md = InstanceMetadata::new(Datasource::ConfigDrive, "b0fa911b");
        md.set_hostname("sm-foo-test.novalocal").unwrap();
        md.name = Some("sm-foo-test".into());
        md.launch_index = Some(0);
        md.random_seed = Some(vec![0, 1, 2, 255]);
        md.user_data = Some(b"#!/bin/sh\necho hi\n".to_vec());
        md.vendor_data = Some(vec![0xff, 0xfe]);
        md.meta.insert("dsmode".into(), "local".into());
        md.set_public_keys(
            "meta_data.json",
            [
                (
                    "public_keys.a",
                    crate::sshkey::tests::make_key("ssh-ed25519", "k"),
                ),
                ("public_keys.b", "junk".into()),
            ],
        );
        md
    }

    #[test]
    fn query_keys() {
        let md = sample();
        let q = |k| md.query(k).unwrap().map(|v| v.as_bytes().to_vec());
        assert_eq!(q("instance-id").unwrap(), b"b0fa911b");
        assert_eq!(q("local-hostname").unwrap(), b"sm-foo-test.novalocal");
        assert_eq!(q("hostname").unwrap(), b"sm-foo-test");
        assert_eq!(q("fqdn").unwrap(), b"sm-foo-test.novalocal");
        assert_eq!(q("launch-index").unwrap(), b"0");
        assert_eq!(q("meta.dsmode").unwrap(), b"local");
        assert_eq!(q("meta.nope"), None);
        assert_eq!(q("availability-zone"), None);
        assert_eq!(q("random-seed").unwrap(), vec![0, 1, 2, 255]);
        assert!(q("public-keys").unwrap().starts_with(b"ssh-ed25519 "));
        assert_eq!(
            md.problems.len(),
            1,
            "the junk key is dropped with a problem"
        );
        assert_eq!(
            q("problems").unwrap(),
            b"meta_data.json: public_keys.b: not an SSH key (unknown key type); ignored"
        );
        assert!(matches!(
            md.query("bogus"),
            Err(MetadataError::UnknownQueryKey(_))
        ));
        for k in QUERY_KEYS {
            assert!(md.query(k).is_ok());
        }
    }

    #[test]
    fn query_json_and_serde_round_trip() {
        let md = sample();
        let j = md.to_query_json();
        assert_eq!(j["instance-id"], "b0fa911b");
        assert_eq!(j["user-data"], "#!/bin/sh\necho hi\n");
        assert_eq!(j["vendor-data-base64"], "//4=");
        assert_eq!(j["random-seed"], "AAEC/w==");
        assert_eq!(j["meta"]["dsmode"], "local");
        let text = serde_json::to_string(&md).unwrap();
        let back: InstanceMetadata = serde_json::from_str(&text).unwrap();
        assert_eq!(back, md);
    }

    #[test]
    fn hostnames() {
        let mut md = InstanceMetadata::none();
        assert_eq!(md.instance_id, "i-dsnone");
        md.set_hostname("host").unwrap();
        assert_eq!(md.fqdn, None);
        assert_eq!(md.short_hostname(), Some("host"));
        md.set_hostname("a.b.c.").unwrap();
        assert_eq!(md.fqdn.as_deref(), Some("a.b.c"));
        assert_eq!(md.short_hostname(), Some("a"));
        assert!(md.set_hostname(&"é".repeat(40)).is_err());
        assert!(md.set_hostname("x\n=== forged ===").is_err());
        assert_eq!(md.local_hostname.as_deref(), Some("a.b.c"), "unchanged");
        // A bad name that got in by other means is not handed out as a short name.
        md.local_hostname = Some("bad name".into());
        assert_eq!(md.short_hostname(), None);
    }

    #[test]
    fn fallback_instance_ids() {
        let a = fallback_instance_id(Datasource::NoCloud, None, b"local-hostname: x\n");
        assert!(
            a.starts_with("iid-nocloud-") && a.len() == "iid-nocloud-".len() + 16,
            "{a}"
        );
        assert_eq!(
            a,
            fallback_instance_id(Datasource::NoCloudNet, None, b"local-hostname: x\n")
        );
        assert_ne!(a, fallback_instance_id(Datasource::NoCloud, None, b"other"));
        assert_eq!(
            fallback_instance_id(
                Datasource::NoCloud,
                Some("EC2E1916-9099-7CAF-FD21-012345ABCDEF\n"),
                b""
            ),
            "iid-nocloud-ec2e1916-9099-7caf-fd21-012345abcdef"
        );
        for unusable in [
            "00000000-0000-0000-0000-000000000000",
            "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
            "03000200-0400-0500-0006-000700080009",
            "Not Settable",
            "",
        ] {
            assert!(
                fallback_instance_id(Datasource::ConfigDrive, Some(unusable), b"x")
                    .starts_with("iid-configdrive-"),
            );
            assert_eq!(
                fallback_instance_id(Datasource::NoCloud, Some(unusable), b"x"),
                fallback_instance_id(Datasource::NoCloud, None, b"x")
            );
        }
    }

    #[test]
    fn problems_are_one_line() {
        let p = Problem::field("meta-data", "name", "bad \"x\ny\"");
        assert_eq!(p.to_string(), "meta-data: name: bad \"x\\ny\"");
    }

    #[test]
    fn datasource_names() {
        for ds in [
            Datasource::NoCloud,
            Datasource::NoCloudNet,
            Datasource::ConfigDrive,
            Datasource::Openstack,
            Datasource::Ec2,
            Datasource::None,
        ] {
            assert_eq!(Datasource::from_name(ds.as_str()), Some(ds));
        }
        assert_eq!(
            Datasource::from_name("ConfigDrive"),
            Some(Datasource::ConfigDrive)
        );
        assert_eq!(Datasource::from_name("x"), None);
    }
}
