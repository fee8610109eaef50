//! The generator: one [`InstanceSpec`] → the metadata tree of each datasource, in the cloud's
//! own layout.
//!
//! `virga run` builds the default instance here (a generated instance-id, the user's SSH
//! public key) and either serves the EC2/OpenStack tree with [`crate::MetadataService`] or
//! turns the NoCloud/ConfigDrive tree into a seed disk with the `seed-image` crate. The
//! layouts are those cloud-init and CirrOS read (docs/metadata-server.md lists every file):
//!
//! | [`Layout`] | files |
//! |---|---|
//! | `NoCloud` | `meta-data` (JSON, which is also YAML), `user-data`, `vendor-data`, `network-config` |
//! | `ConfigDrive` | `openstack/{latest,2018-08-27}/…`, `ec2/{latest,2009-04-04}/meta-data.json`, `ec2/…/user-data` |
//! | `Ec2Imds` | `latest/meta-data/…`, `latest/user-data`, `latest/dynamic/instance-identity/document` |
//! | `OpenStackService` | `openstack/{latest,2018-08-27}/…` plus the `Ec2Imds` tree (Nova serves both) |

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::MetadataServerError;

/// A metadata tree: relative `/`-separated paths to contents.
pub type FileTree = BTreeMap<String, Vec<u8>>;

/// The dated OpenStack version written next to `latest` (it has every file virga writes:
/// `network_data.json` needs 2015-10-15, `vendor_data2.json` 2016-10-06).
pub const OPENSTACK_VERSION: &str = "2018-08-27";
/// The dated EC2 version written next to `latest` in a config drive (the oldest one
/// cloud-init and CirrOS read).
pub const EC2_VERSION: &str = "2009-04-04";

/// An SSH public key with the name clouds list it under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// Key name (EC2 `public-keys/0=<name>`, OpenStack `public_keys` key). Letters, digits,
    /// `-`, `_`, `.`, `@`.
    pub name: String,
    /// The key in OpenSSH `authorized_keys` form (`ssh-ed25519 AAAA… comment`).
    pub key: String,
}

impl PublicKey {
    /// Parses one OpenSSH public key line (from `~/.ssh/id_ed25519.pub`). The name is the
    /// key's comment with unusual characters replaced by `_`, or `key-<index>`. `None` for
    /// a blank or comment line or one that does not look like `TYPE BASE64 [COMMENT]`.
    pub fn from_openssh(line: &str, index: usize) -> Option<Self> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.len() > 16 * 1024 {
            return None;
        }
        let mut parts = line.split_whitespace();
        let kind = parts.next()?;
        let blob = parts.next()?;
        let looks_like_type =
            kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-");
        let looks_like_b64 = blob
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
        if !looks_like_type || !looks_like_b64 {
            return None;
        }
        let comment: String = parts
            .collect::<Vec<_>>()
            .join("_")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.@".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        let name = if comment.is_empty() {
            format!("key-{index}")
        } else {
            comment
        };
        Some(PublicKey {
            name,
            key: line.to_owned(),
        })
    }

    /// Renames keys whose name repeats an earlier one to `key-<index>` (clouds key the list
    /// by name, so duplicates would lose keys).
    pub fn make_names_unique(keys: &mut [PublicKey]) {
        let mut seen = std::collections::HashSet::new();
        for (i, key) in keys.iter_mut().enumerate() {
            let mut name = key.name.clone();
            let mut n = i;
            while seen.contains(&name) {
                name = format!("key-{n}");
                n += 1;
            }
            seen.insert(name.clone());
            key.name = name;
        }
    }

    /// Every key of an `authorized_keys`-style text (one per line).
    pub fn parse_all(text: &str) -> Vec<PublicKey> {
        text.lines()
            .filter_map(|l| PublicKey::from_openssh(l, 0))
            .enumerate()
            .map(|(i, mut k)| {
                if k.name == "key-0" {
                    k.name = format!("key-{i}");
                }
                k
            })
            .collect()
    }
}

/// The user's SSH public keys, for injecting by default: every one of
/// `<home>/.ssh/id_ed25519.pub`, `id_ecdsa.pub` and `id_rsa.pub` that exists and parses
/// (the identities `ssh` offers by default), in that order, named after their comments.
pub fn default_public_keys(home: &Path) -> Vec<PublicKey> {
    let mut keys: Vec<PublicKey> = Vec::new();
    for name in ["id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"] {
        let Ok(text) = fs::read_to_string(home.join(".ssh").join(name)) else {
            continue;
        };
        keys.extend(PublicKey::parse_all(&text));
    }
    PublicKey::make_names_unique(&mut keys);
    keys
}

/// What one instance looks like, whatever the datasource.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InstanceSpec {
    /// Instance id (EC2 style `i-0123456789abcdef0` works everywhere; CirrOS's EC2 source
    /// insists on the `i-` prefix). Also the OpenStack `uuid`.
    pub instance_id: String,
    /// Host name (`local-hostname`, `hostname`, OpenStack `name`).
    pub hostname: String,
    /// SSH public keys.
    pub public_keys: Vec<PublicKey>,
    /// User-data, verbatim.
    pub user_data: Option<Vec<u8>>,
    /// Vendor-data (NoCloud `vendor-data` verbatim; OpenStack `vendor_data.json` as is when
    /// it is JSON, else wrapped as `{"cloud-init": "<text>"}`).
    pub vendor_data: Option<Vec<u8>>,
    /// NoCloud `network-config` (v1 or v2, YAML or JSON), verbatim.
    pub network_config: Option<Vec<u8>>,
    /// OpenStack `network_data.json`.
    pub network_data: Option<Value>,
    /// Availability zone.
    pub availability_zone: Option<String>,
    /// EC2 instance type (`instance-type`).
    pub instance_type: Option<String>,
    /// Private IPv4 address (`local-ipv4`).
    pub local_ipv4: Option<String>,
    /// Public IPv4 address (`public-ipv4`).
    pub public_ipv4: Option<String>,
    /// Launch index (`ami-launch-index`, `launch_index`).
    pub launch_index: u32,
    /// OpenStack `meta` key/value pairs.
    pub meta: BTreeMap<String, String>,
}

/// A datasource layout to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// A NoCloud seed (what goes on a `cidata` disk).
    NoCloud,
    /// An OpenStack config drive (what goes on a `config-2` disk).
    ConfigDrive,
    /// The EC2 IMDS tree served by `--cloud ec2`.
    Ec2Imds,
    /// The OpenStack metadata-service tree served by `--cloud openstack`.
    OpenStackService,
}

impl InstanceSpec {
    /// A spec with just an instance id and host name.
    pub fn new(instance_id: impl Into<String>, hostname: impl Into<String>) -> Self {
        InstanceSpec {
            instance_id: instance_id.into(),
            hostname: hostname.into(),
            ..InstanceSpec::default()
        }
    }

    /// A fresh EC2-style instance id, `i-` and 17 random hex digits.
    pub fn generate_instance_id() -> Result<String, MetadataServerError> {
        let mut b = [0u8; 9];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .map_err(|source| MetadataServerError::Io {
                context: "reading /dev/urandom".into(),
                source,
            })?;
        Ok(format!("i-{}", &hex::encode(b)[..17]))
    }

    /// Checks the fields that end up in file names or single-line files.
    pub fn validate(&self) -> Result<(), MetadataServerError> {
        let bad = |field: &'static str, reason: &'static str| {
            Err(MetadataServerError::InvalidSpec { field, reason })
        };
        let id = &self.instance_id;
        if id.is_empty()
            || id.len() > 255
            || !id.bytes().all(|b| b.is_ascii_graphic())
            || id.contains('/')
        {
            return bad(
                "instance_id",
                "must be 1-255 visible ASCII characters without `/`",
            );
        }
        let h = &self.hostname;
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if h.is_empty() || h.len() > 253 || !h.split('.').all(label_ok) {
            return bad(
                "hostname",
                "must be a DNS name (labels of letters, digits and `-`)",
            );
        }
        let mut names = std::collections::HashSet::new();
        if !self
            .public_keys
            .iter()
            .all(|k| names.insert(k.name.as_str()))
        {
            return bad(
                "public_keys",
                "key names must be unique (see PublicKey::make_names_unique)",
            );
        }
        for k in &self.public_keys {
            if k.name.is_empty()
                || !k
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
            {
                return bad(
                    "public_keys",
                    "key names are letters, digits, `-`, `_`, `.`, `@`",
                );
            }
            if k.key.contains('\n') {
                return bad("public_keys", "a key is one line");
            }
        }
        for (field, v) in [
            ("availability_zone", &self.availability_zone),
            ("instance_type", &self.instance_type),
            ("local_ipv4", &self.local_ipv4),
            ("public_ipv4", &self.public_ipv4),
        ] {
            if v.as_deref()
                .is_some_and(|v| v.is_empty() || v.contains(['\n', '/']))
            {
                return bad(field, "must be non-empty, one line, without `/`");
            }
        }
        Ok(())
    }

    /// The tree of `layout` for this instance.
    pub fn generate(&self, layout: Layout) -> Result<FileTree, MetadataServerError> {
        self.validate()?;
        let mut t = FileTree::new();
        match layout {
            Layout::NoCloud => self.nocloud(&mut t),
            Layout::ConfigDrive => {
                for v in ["latest", OPENSTACK_VERSION] {
                    self.openstack(&mut t, &format!("openstack/{v}"));
                }
                for v in ["latest", EC2_VERSION] {
                    let base = format!("ec2/{v}");
                    t.insert(format!("{base}/meta-data.json"), pretty(&self.ec2_json()));
                    if let Some(ud) = &self.user_data {
                        t.insert(format!("{base}/user-data"), ud.clone());
                    }
                }
            }
            Layout::Ec2Imds => self.ec2_tree(&mut t),
            Layout::OpenStackService => {
                for v in ["latest", OPENSTACK_VERSION] {
                    self.openstack(&mut t, &format!("openstack/{v}"));
                }
                self.ec2_tree(&mut t);
            }
        }
        Ok(t)
    }

    fn nocloud(&self, t: &mut FileTree) {
        let mut md = Map::new();
        md.insert("instance-id".into(), json!(self.instance_id));
        md.insert("local-hostname".into(), json!(self.hostname));
        if !self.public_keys.is_empty() {
            let keys: Vec<&str> = self.public_keys.iter().map(|k| k.key.as_str()).collect();
            md.insert("public-keys".into(), json!(keys));
        }
        if let Some(az) = &self.availability_zone {
            md.insert("availability-zone".into(), json!(az));
        }
        // JSON: valid YAML for cloud-init, and the only form CirrOS parses.
        t.insert("meta-data".into(), pretty(&Value::Object(md)));
        // cloud-init requires the file even when there is no user-data.
        t.insert(
            "user-data".into(),
            self.user_data.clone().unwrap_or_default(),
        );
        if let Some(v) = &self.vendor_data {
            t.insert("vendor-data".into(), v.clone());
        }
        if let Some(n) = &self.network_config {
            t.insert("network-config".into(), n.clone());
        }
    }

    fn openstack(&self, t: &mut FileTree, base: &str) {
        let mut md = Map::new();
        md.insert("uuid".into(), json!(self.instance_id));
        md.insert("name".into(), json!(self.hostname));
        md.insert("hostname".into(), json!(self.hostname));
        md.insert("launch_index".into(), json!(self.launch_index));
        if let Some(az) = &self.availability_zone {
            md.insert("availability_zone".into(), json!(az));
        }
        if !self.public_keys.is_empty() {
            let map: Map<String, Value> = self
                .public_keys
                .iter()
                .map(|k| (k.name.clone(), json!(k.key)))
                .collect();
            md.insert("public_keys".into(), Value::Object(map));
            let keys: Vec<Value> = self
                .public_keys
                .iter()
                .map(|k| json!({"name": k.name, "type": "ssh", "data": k.key}))
                .collect();
            md.insert("keys".into(), Value::Array(keys));
        }
        md.insert("meta".into(), json!(self.meta));
        t.insert(format!("{base}/meta_data.json"), pretty(&Value::Object(md)));
        if let Some(ud) = &self.user_data {
            t.insert(format!("{base}/user_data"), ud.clone());
        }
        let vendor = match &self.vendor_data {
            None => json!({}),
            Some(v) => match serde_json::from_slice::<Value>(v) {
                Ok(json) => json,
                Err(_) => json!({"cloud-init": String::from_utf8_lossy(v)}),
            },
        };
        t.insert(format!("{base}/vendor_data.json"), pretty(&vendor));
        t.insert(format!("{base}/vendor_data2.json"), pretty(&json!({})));
        if let Some(nd) = &self.network_data {
            t.insert(format!("{base}/network_data.json"), pretty(nd));
        }
    }

    /// The EC2 `meta-data.json` of a config drive.
    fn ec2_json(&self) -> Value {
        let mut md = Map::new();
        md.insert("instance-id".into(), json!(self.instance_id));
        md.insert("hostname".into(), json!(self.hostname));
        md.insert("local-hostname".into(), json!(self.hostname));
        md.insert("ami-launch-index".into(), json!(self.launch_index));
        if let Some(v) = &self.instance_type {
            md.insert("instance-type".into(), json!(v));
        }
        if let Some(v) = &self.local_ipv4 {
            md.insert("local-ipv4".into(), json!(v));
        }
        if let Some(v) = &self.public_ipv4 {
            md.insert("public-ipv4".into(), json!(v));
        }
        if let Some(az) = &self.availability_zone {
            md.insert("placement".into(), json!({"availability-zone": az}));
        }
        if !self.public_keys.is_empty() {
            let keys: Map<String, Value> = self
                .public_keys
                .iter()
                .enumerate()
                .map(|(i, k)| (i.to_string(), json!({"openssh-key": k.key})))
                .collect();
            md.insert("public-keys".into(), Value::Object(keys));
        }
        Value::Object(md)
    }

    fn ec2_tree(&self, t: &mut FileTree) {
        let md = "latest/meta-data";
        let mut put = |p: &str, v: &str| {
            t.insert(format!("{md}/{p}"), v.as_bytes().to_vec());
        };
        put("instance-id", &self.instance_id);
        put("hostname", &self.hostname);
        put("local-hostname", &self.hostname);
        put("ami-launch-index", &self.launch_index.to_string());
        if let Some(v) = &self.instance_type {
            put("instance-type", v);
        }
        if let Some(v) = &self.local_ipv4 {
            put("local-ipv4", v);
        }
        if let Some(v) = &self.public_ipv4 {
            put("public-ipv4", v);
        }
        if let Some(az) = &self.availability_zone {
            put("placement/availability-zone", az);
        }
        for (i, k) in self.public_keys.iter().enumerate() {
            put(
                &format!("public-keys/{i}={}/openssh-key", k.name),
                &format!("{}\n", k.key),
            );
        }
        if let Some(ud) = &self.user_data {
            t.insert("latest/user-data".into(), ud.clone());
        }
        let mut doc = Map::new();
        doc.insert("instanceId".into(), json!(self.instance_id));
        doc.insert("architecture".into(), json!("x86_64"));
        doc.insert("version".into(), json!("2017-09-30"));
        if let Some(az) = &self.availability_zone {
            doc.insert("availabilityZone".into(), json!(az));
        }
        if let Some(v) = &self.instance_type {
            doc.insert("instanceType".into(), json!(v));
        }
        if let Some(v) = &self.local_ipv4 {
            doc.insert("privateIp".into(), json!(v));
        }
        t.insert(
            "latest/dynamic/instance-identity/document".into(),
            pretty(&Value::Object(doc)),
        );
    }
}

fn pretty(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    out
}

/// Writes `tree` below `dir` (created if needed). Existing files with the same paths are
/// replaced; nothing else in `dir` is touched.
pub fn write_tree(tree: &FileTree, dir: &Path) -> Result<(), MetadataServerError> {
    for (path, contents) in tree {
        if path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(MetadataServerError::InvalidSpec {
                field: "path",
                reason: "empty, `.` or `..` component",
            });
        }
        let full = dir.join(path);
        let io = |what: &str, source| MetadataServerError::Io {
            context: format!("{what} {}", full.display()),
            source,
        };
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent).map_err(|e| io("creating the directory of", e))?;
        }
        fs::write(&full, contents).map_err(|e| io("writing", e))?;
    }
    Ok(())
}

/// The seed tree of `spec` for a NoCloud or ConfigDrive disk, checked against the layout
/// the datasource expects.
pub fn seed_tree(
    spec: &InstanceSpec,
    kind: seed_image::SeedKind,
) -> Result<seed_image::SeedTree, MetadataServerError> {
    let layout = match kind {
        seed_image::SeedKind::NoCloud => Layout::NoCloud,
        seed_image::SeedKind::ConfigDrive => Layout::ConfigDrive,
    };
    let mut tree = seed_image::SeedTree::from_files(spec.generate(layout)?)?;
    for w in kind.check_layout(&mut tree)? {
        tracing::warn!("{w}");
    }
    Ok(tree)
}

/// Writes the seed disk of `spec` (what `virga run --datasource nocloud|configdrive`
/// attaches): `kind`'s layout as `format`, labelled `label` or the datasource's default
/// (`cidata`, `config-2`). Returns the image size.
pub fn write_seed_image(
    spec: &InstanceSpec,
    kind: seed_image::SeedKind,
    format: seed_image::SeedFormat,
    label: Option<&str>,
    out: &Path,
) -> Result<u64, MetadataServerError> {
    let tree = seed_tree(spec, kind)?;
    let label = label.unwrap_or(kind.default_label());
    Ok(seed_image::write_image(&tree, format, label, out)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> InstanceSpec {
        let mut s = InstanceSpec::new("i-0123456789abcdef0", "virga-vm");
        s.public_keys = PublicKey::parse_all(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG me@laptop\n# comment\n\nssh-rsa AAAAB3Nza==\n",
        );
        s.user_data = Some(b"#!/bin/sh\necho hi\n".to_vec());
        s.availability_zone = Some("virga-1a".into());
        s
    }

    fn text(t: &FileTree, p: &str) -> String {
        String::from_utf8(
            t.get(p)
                .unwrap_or_else(|| panic!("{p} missing: {:?}", t.keys()))
                .clone(),
        )
        .unwrap()
    }

    #[test]
    fn keys_are_named() {
        let s = spec();
        assert_eq!(s.public_keys.len(), 2);
        assert_eq!(s.public_keys[0].name, "me@laptop");
        assert_eq!(s.public_keys[1].name, "key-1");
        assert!(PublicKey::from_openssh("not a key", 0).is_none());
        assert!(PublicKey::from_openssh("ssh-ed25519 AAA!! x", 0).is_none());
        assert_eq!(
            PublicKey::from_openssh("ssh-ed25519 AAAA a b/c", 0)
                .unwrap()
                .name,
            "a_b_c"
        );
    }

    #[test]
    fn nocloud_layout() {
        let t = spec().generate(Layout::NoCloud).unwrap();
        assert_eq!(t.keys().collect::<Vec<_>>(), ["meta-data", "user-data"]);
        let md: Value = serde_json::from_str(&text(&t, "meta-data")).unwrap();
        assert_eq!(md["instance-id"], "i-0123456789abcdef0");
        assert_eq!(md["local-hostname"], "virga-vm");
        assert_eq!(
            md["public-keys"][0],
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG me@laptop"
        );
        let empty = InstanceSpec::new("i-1", "h")
            .generate(Layout::NoCloud)
            .unwrap();
        assert_eq!(empty.get("user-data"), Some(&Vec::new()));
    }

    #[test]
    fn config_drive_layout() {
        let mut s = spec();
        s.vendor_data = Some(b"#cloud-config\npackages: []\n".to_vec());
        s.network_data = Some(json!({"links": [], "networks": [], "services": []}));
        let t = s.generate(Layout::ConfigDrive).unwrap();
        for v in ["latest", OPENSTACK_VERSION] {
            let md: Value =
                serde_json::from_str(&text(&t, &format!("openstack/{v}/meta_data.json"))).unwrap();
            assert_eq!(md["uuid"], "i-0123456789abcdef0");
            assert_eq!(md["hostname"], "virga-vm");
            assert_eq!(md["public_keys"]["me@laptop"], s.public_keys[0].key);
            assert_eq!(md["keys"][1]["name"], "key-1");
            assert_eq!(md["availability_zone"], "virga-1a");
            assert_eq!(
                text(&t, &format!("openstack/{v}/user_data")),
                "#!/bin/sh\necho hi\n"
            );
            let vd: Value =
                serde_json::from_str(&text(&t, &format!("openstack/{v}/vendor_data.json")))
                    .unwrap();
            assert_eq!(vd["cloud-init"], "#cloud-config\npackages: []\n");
            assert!(t.contains_key(&format!("openstack/{v}/network_data.json")));
        }
        let ec2: Value = serde_json::from_str(&text(&t, "ec2/latest/meta-data.json")).unwrap();
        assert_eq!(ec2["public-keys"]["0"]["openssh-key"], s.public_keys[0].key);
        assert_eq!(ec2["placement"]["availability-zone"], "virga-1a");
        assert!(t.contains_key("ec2/2009-04-04/meta-data.json"));
    }

    #[test]
    fn ec2_and_openstack_service_layouts() {
        let t = spec().generate(Layout::Ec2Imds).unwrap();
        assert_eq!(
            text(&t, "latest/meta-data/instance-id"),
            "i-0123456789abcdef0"
        );
        assert_eq!(
            text(&t, "latest/meta-data/placement/availability-zone"),
            "virga-1a"
        );
        assert!(
            text(&t, "latest/meta-data/public-keys/0=me@laptop/openssh-key")
                .starts_with("ssh-ed25519 ")
        );
        assert!(t.contains_key("latest/meta-data/public-keys/1=key-1/openssh-key"));
        assert_eq!(text(&t, "latest/user-data"), "#!/bin/sh\necho hi\n");
        let doc: Value =
            serde_json::from_str(&text(&t, "latest/dynamic/instance-identity/document")).unwrap();
        assert_eq!(doc["instanceId"], "i-0123456789abcdef0");
        let o = spec().generate(Layout::OpenStackService).unwrap();
        assert!(o.contains_key("openstack/latest/meta_data.json"));
        assert!(o.contains_key("latest/meta-data/instance-id"));
    }

    #[test]
    fn validation() {
        assert!(
            InstanceSpec::new("", "h")
                .generate(Layout::NoCloud)
                .is_err()
        );
        assert!(
            InstanceSpec::new("i-1/..", "h")
                .generate(Layout::Ec2Imds)
                .is_err()
        );
        assert!(
            InstanceSpec::new("i-1", "bad_host")
                .generate(Layout::NoCloud)
                .is_err()
        );
        assert!(
            InstanceSpec::new("i-1", "a.b-c.example")
                .generate(Layout::NoCloud)
                .is_ok()
        );
        let mut s = InstanceSpec::new("i-1", "h");
        s.public_keys.push(PublicKey {
            name: "../x".into(),
            key: "ssh-rsa AAAA".into(),
        });
        assert!(s.generate(Layout::Ec2Imds).is_err());
        let id = InstanceSpec::generate_instance_id().unwrap();
        assert!(id.starts_with("i-") && id.len() == 19, "{id}");
        assert_ne!(id, InstanceSpec::generate_instance_id().unwrap());
    }

    #[test]
    fn default_keys_from_home() {
        let home = tempfile::tempdir().unwrap();
        assert!(default_public_keys(home.path()).is_empty());
        fs::create_dir(home.path().join(".ssh")).unwrap();
        fs::write(
            home.path().join(".ssh/id_rsa.pub"),
            "ssh-rsa AAAAB3 me@host\n",
        )
        .unwrap();
        fs::write(
            home.path().join(".ssh/id_ed25519.pub"),
            "ssh-ed25519 AAAAC3 me@host\n",
        )
        .unwrap();
        fs::write(home.path().join(".ssh/id_ecdsa.pub"), "not a key\n").unwrap();
        let keys = default_public_keys(home.path());
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].name, "me@host");
        assert!(keys[0].key.starts_with("ssh-ed25519 "));
        assert_eq!(keys[1].name, "key-1", "duplicate names are made unique");
    }

    #[test]
    fn seed_images_carry_the_layout() {
        let d = tempfile::tempdir().unwrap();
        for (kind, format, file, label) in [
            (
                seed_image::SeedKind::NoCloud,
                seed_image::SeedFormat::Iso,
                "meta-data",
                "cidata",
            ),
            (
                seed_image::SeedKind::ConfigDrive,
                seed_image::SeedFormat::Vfat,
                "openstack/latest/meta_data.json",
                "config-2",
            ),
        ] {
            let out = d.path().join(format!("{kind}.img"));
            write_seed_image(&spec(), kind, format, None, &out).unwrap();
            let p = seed_image::probe_path(&out).unwrap().unwrap();
            assert_eq!(p.label.as_deref(), Some(label));
            assert!(seed_tree(&spec(), kind).unwrap().contains(file));
        }
    }

    #[test]
    fn write_tree_to_disk() {
        let d = tempfile::tempdir().unwrap();
        let t = spec().generate(Layout::OpenStackService).unwrap();
        write_tree(&t, d.path()).unwrap();
        assert_eq!(
            fs::read(d.path().join("openstack/latest/user_data")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
    }
}
