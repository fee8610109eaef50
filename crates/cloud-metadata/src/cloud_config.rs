//! `#cloud-config` (YAML): the supported subset, unknown keys as data, and the merge rule.
//!
//! Supported keys: `hostname`, `fqdn`, `prefer_fqdn_over_hostname`, `preserve_hostname`,
//! `manage_etc_hosts`, `users`, `groups`, `ssh_authorized_keys`, `disable_root`,
//! `write_files`, `bootcmd`, `runcmd`, `final_message`, `power_state`, and `ssh_pwauth`
//! (`false` silently: virga never accepts passwords; `true` is a warning). `hostname` and
//! `fqdn` must be valid hostnames ([`crate::hostname`]). Every other top-level
//! key is listed in [`CloudConfig::unknown_keys`] (with a warning) and parsing goes on; a
//! supported key with a malformed value is dropped with a warning. Only YAML that does not
//! parse at all, or a top level that is not a mapping, is an error.
//!
//! Merge rule for several cloud-config parts (user-data parts in order, vendor-data first):
//! scalars and `power_state` — a later part that sets the key wins; lists (`users`, `groups`,
//! `ssh_authorized_keys`, `write_files`, `bootcmd`, `runcmd`) — the later part's items are
//! appended, except that a user or group with the same name replaces the earlier definition in
//! place, `default` appears once and duplicate SSH keys are dropped. (cloud-init's default
//! `merge_how` replaces lists instead; `merge_how`/`merge_type` are not supported.)

use serde::{Deserialize, Serialize};

use crate::user_data::{PartKind, UserData};
use crate::value::{Node, parse_yaml_capped};
use crate::write_files::validate_path;
use crate::{Limits, MetadataError};

/// A parsed (or merged) cloud-config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudConfig {
    /// `hostname`.
    pub hostname: Option<String>,
    /// `fqdn`.
    pub fqdn: Option<String>,
    /// `prefer_fqdn_over_hostname`.
    pub prefer_fqdn_over_hostname: Option<bool>,
    /// `preserve_hostname`: do not touch the hostname.
    pub preserve_hostname: Option<bool>,
    /// `manage_etc_hosts`.
    pub manage_etc_hosts: Option<ManageEtcHosts>,
    /// `users`, in order.
    pub users: Vec<UserSpec>,
    /// `groups`, in order.
    pub groups: Vec<Group>,
    /// `ssh_authorized_keys` for the default user (valid keys only).
    pub ssh_authorized_keys: Vec<String>,
    /// `disable_root`: root login gets a forced command pointing to the default user.
    pub disable_root: Option<bool>,
    /// `write_files` (paths already validated, see [`crate::write_files`]).
    pub write_files: Vec<WriteFile>,
    /// `bootcmd`: run early, every boot.
    pub bootcmd: Vec<Command>,
    /// `runcmd`: run once per instance, late.
    pub runcmd: Vec<Command>,
    /// `final_message`.
    pub final_message: Option<String>,
    /// `power_state`.
    pub power_state: Option<PowerState>,
    /// virga's own sections (`virga.update`, `virga.containers`, …: top-level keys starting
    /// with `virga.`), as JSON, for the agents that own them to validate. A later part's
    /// section replaces an earlier one's.
    #[serde(default)]
    pub virga: std::collections::BTreeMap<String, serde_json::Value>,
    /// Top-level keys virga does not support, sorted, without duplicates.
    pub unknown_keys: Vec<String>,
    /// Everything dropped or ignored, one message each.
    pub warnings: Vec<String>,
}

/// `manage_etc_hosts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManageEtcHosts {
    /// `false`: leave `/etc/hosts` alone.
    Disabled,
    /// `true` or `template`: write `/etc/hosts` for the hostname/fqdn.
    Template,
    /// `localhost`: only keep a `127.0.1.1 fqdn hostname` line up to date.
    Localhost,
}

/// One `users` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UserSpec {
    /// The string `default`: the image's default user (`cirros` compatible).
    Default,
    /// An explicit user.
    User(Box<User>),
}

impl UserSpec {
    fn name(&self) -> Option<&str> {
        match self {
            UserSpec::Default => None,
            UserSpec::User(u) => Some(&u.name),
        }
    }
}

/// A user to create or update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Login name.
    pub name: String,
    /// `gecos`.
    pub gecos: Option<String>,
    /// `primary_group`.
    pub primary_group: Option<String>,
    /// Supplementary `groups`.
    pub groups: Vec<String>,
    /// Login `shell`.
    pub shell: Option<String>,
    /// `homedir`.
    pub homedir: Option<String>,
    /// sudoers rules (`sudo`); empty: no sudo.
    pub sudo: Vec<String>,
    /// `lock_passwd` (default true: no password login).
    pub lock_passwd: bool,
    /// `hashed_passwd` or `passwd` (a crypt(3) hash).
    pub hashed_passwd: Option<String>,
    /// `ssh_authorized_keys` (valid keys only).
    pub ssh_authorized_keys: Vec<String>,
    /// `system` account.
    pub system: bool,
    /// `uid`.
    pub uid: Option<u32>,
}

/// One `groups` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// Members to add.
    pub members: Vec<String>,
}

/// A command: a string for `sh -c`, or an argument vector run directly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Command {
    /// Run with `sh -c`.
    Shell(String),
    /// Run directly (`argv[0]` looked up in `PATH`).
    Argv(Vec<String>),
}

/// `write_files[].encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContentEncoding {
    /// Plain text (`text/plain` or absent).
    Text,
    /// `b64`, `base64`.
    Base64,
    /// `gz`, `gzip` (binary, e.g. a YAML `!!binary` value).
    Gzip,
    /// `gz+b64`, `gz+base64`, `gzip+b64`, `gzip+base64`.
    GzipBase64,
}

impl ContentEncoding {
    /// Parses cloud-init's spellings (case-insensitive).
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "" | "text/plain" | "text" => ContentEncoding::Text,
            "b64" | "base64" => ContentEncoding::Base64,
            "gz" | "gzip" => ContentEncoding::Gzip,
            "gz+b64" | "gz+base64" | "gzip+b64" | "gzip+base64" => ContentEncoding::GzipBase64,
            _ => return None,
        })
    }
}

/// One `write_files` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteFile {
    /// Normalised absolute path.
    pub path: String,
    /// `content` as written in the YAML (decode with [`crate::write_files::decode_content`]).
    pub content: String,
    /// `encoding`.
    pub encoding: ContentEncoding,
    /// `permissions` (default `0o644`).
    pub permissions: u32,
    /// `owner` user (default `root`).
    pub owner: String,
    /// `owner` group (default: the user's primary group, `root` for root).
    pub group: Option<String>,
    /// `append` instead of replacing.
    pub append: bool,
    /// `defer`: write after users are created (late), instead of early.
    pub defer: bool,
}

/// `power_state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerState {
    /// `mode`.
    pub mode: PowerMode,
    /// `delay` in minutes (`now` = 0, `+5` = 5).
    pub delay_minutes: u32,
    /// `message` to log before.
    pub message: Option<String>,
    /// `timeout`: seconds to wait for the user-data scripts before acting (default 30).
    pub timeout_seconds: u64,
    /// `condition`.
    pub condition: PowerCondition,
}

/// `power_state.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PowerMode {
    /// `poweroff`.
    Poweroff,
    /// `reboot`.
    Reboot,
    /// `halt`.
    Halt,
}

/// `power_state.condition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PowerCondition {
    /// `true` or absent.
    Always,
    /// `false`.
    Never,
    /// Act only if this command exits 0.
    Command(Command),
}

/// The top-level keys this module understands.
pub const SUPPORTED_KEYS: &[&str] = &[
    "hostname",
    "fqdn",
    "prefer_fqdn_over_hostname",
    "preserve_hostname",
    "manage_etc_hosts",
    "users",
    "groups",
    "ssh_authorized_keys",
    "disable_root",
    "write_files",
    "bootcmd",
    "runcmd",
    "final_message",
    "power_state",
    "ssh_pwauth",
];

/// Parses one cloud-config document (the `#cloud-config` line is a YAML comment). The size
/// cap is [`Limits::max_user_data_bytes`].
pub fn parse_cloud_config(input: &[u8], limits: &Limits) -> Result<CloudConfig, MetadataError> {
    let node = parse_yaml_capped(input, "cloud-config", limits, limits.max_user_data_bytes)?;
    cloud_config_from_node(&node, limits)
}

/// Reads a cloud-config from an already parsed tree.
pub fn cloud_config_from_node(node: &Node, limits: &Limits) -> Result<CloudConfig, MetadataError> {
    let mut cc = CloudConfig::default();
    let entries = match node {
        Node::Map(e) => e.as_slice(),
        Node::Null => return Ok(cc),
        other => {
            return Err(MetadataError::invalid(
                "cloud-config",
                "(top level)",
                format!("expected a mapping, found {}", other.kind()),
            ));
        }
    };
    let w = &mut cc.warnings;
    for (key, value) in entries {
        let key = key.as_str();
        match key {
            "hostname" | "fqdn" => {
                let name = string(value, key, w).and_then(|h| {
                    match crate::hostname::validate(&h) {
                        Ok(v) => Some(v.to_owned()),
                        Err(e) => {
                            w.push(format!("cloud-config: {key}: {e}; ignored"));
                            None
                        }
                    }
                });
                if key == "hostname" {
                    cc.hostname = name;
                } else {
                    cc.fqdn = name;
                }
            }
            // virga's SSH server never accepts passwords: `false` (and cloud-init's
            // `unchanged`) is what it does anyway, `true` cannot be honoured.
            "ssh_pwauth" => match value.as_bool_loose() {
                Some(false) => {}
                _ if matches!(value, Node::Str(s) if s.eq_ignore_ascii_case("unchanged")) => {}
                Some(true) => w.push(
                    "cloud-config: ssh_pwauth: true is ignored: virga's SSH server never accepts passwords"
                        .to_owned(),
                ),
                None => w.push(format!(
                    "cloud-config: ssh_pwauth: expected a boolean, found {}; ignored",
                    value.kind()
                )),
            },
            "prefer_fqdn_over_hostname" => cc.prefer_fqdn_over_hostname = boolean(value, key, w),
            "preserve_hostname" => cc.preserve_hostname = boolean(value, key, w),
            "disable_root" => cc.disable_root = boolean(value, key, w),
            "final_message" => cc.final_message = string(value, key, w),
            "manage_etc_hosts" => {
                cc.manage_etc_hosts = match value {
                    Node::Str(s) if s.eq_ignore_ascii_case("localhost") => {
                        Some(ManageEtcHosts::Localhost)
                    }
                    Node::Str(s) if s.eq_ignore_ascii_case("template") => {
                        Some(ManageEtcHosts::Template)
                    }
                    v => {
                        match v.as_bool_loose() {
                            Some(true) => Some(ManageEtcHosts::Template),
                            Some(false) => Some(ManageEtcHosts::Disabled),
                            None => {
                                w.push(format!("cloud-config: manage_etc_hosts: unsupported value {v:?} ignored"));
                                None
                            }
                        }
                    }
                };
            }
            "ssh_authorized_keys" => {
                cc.ssh_authorized_keys = ssh_keys(value, "ssh_authorized_keys", w)
            }
            "users" => cc.users = users(value, w),
            "groups" => cc.groups = groups(value, w),
            "write_files" => cc.write_files = write_files(value, limits, w),
            "bootcmd" => cc.bootcmd = commands(value, key, w),
            "runcmd" => cc.runcmd = commands(value, key, w),
            "power_state" => cc.power_state = power_state(value, w),
            // Per-part metadata, handled by the user-data layer.
            "launch-index" => {}
            "merge_how" | "merge_type" => {
                w.push(format!(
                    "cloud-config: {key} is not supported; virga's merge rule applies"
                ));
            }
            section if section.starts_with("virga.") && section.len() > "virga.".len() => {
                cc.virga.insert(section.to_owned(), value.to_json());
            }
            other => {
                cc.unknown_keys.push(other.to_owned());
            }
        }
    }
    cc.unknown_keys.sort_unstable();
    cc.unknown_keys.dedup();
    for k in &cc.unknown_keys {
        cc.warnings.push(format!(
            "cloud-config: key {k:?} is not supported by virga; ignored"
        ));
    }
    Ok(cc)
}

impl CloudConfig {
    /// Merges `later` into `self` (see the module docs for the rule).
    pub fn merge(&mut self, later: CloudConfig) {
        fn set<T>(slot: &mut Option<T>, v: Option<T>) {
            if v.is_some() {
                *slot = v;
            }
        }
        set(&mut self.hostname, later.hostname);
        set(&mut self.fqdn, later.fqdn);
        set(
            &mut self.prefer_fqdn_over_hostname,
            later.prefer_fqdn_over_hostname,
        );
        set(&mut self.preserve_hostname, later.preserve_hostname);
        set(&mut self.manage_etc_hosts, later.manage_etc_hosts);
        set(&mut self.disable_root, later.disable_root);
        set(&mut self.final_message, later.final_message);
        set(&mut self.power_state, later.power_state);
        for u in later.users {
            let slot = match u.name() {
                None => self
                    .users
                    .iter()
                    .position(|e| matches!(e, UserSpec::Default)),
                Some(n) => self.users.iter().position(|e| e.name() == Some(n)),
            };
            match slot {
                Some(i) => self.users[i] = u,
                None => self.users.push(u),
            }
        }
        for g in later.groups {
            match self.groups.iter_mut().find(|e| e.name == g.name) {
                Some(e) => *e = g,
                None => self.groups.push(g),
            }
        }
        for k in later.ssh_authorized_keys {
            if !self.ssh_authorized_keys.contains(&k) {
                self.ssh_authorized_keys.push(k);
            }
        }
        self.virga.extend(later.virga);
        self.write_files.extend(later.write_files);
        self.bootcmd.extend(later.bootcmd);
        self.runcmd.extend(later.runcmd);
        self.unknown_keys.extend(later.unknown_keys);
        self.unknown_keys.sort_unstable();
        self.unknown_keys.dedup();
        self.warnings.extend(later.warnings);
    }

    /// Parses and merges the cloud-config parts of `user_data` meant for `launch_index`, in
    /// order. A part that does not parse is skipped with a warning.
    pub fn from_user_data(
        user_data: &UserData,
        launch_index: Option<u64>,
        limits: &Limits,
    ) -> CloudConfig {
        let mut merged = CloudConfig::default();
        for (i, part) in user_data.for_launch_index(launch_index).enumerate() {
            if part.kind != PartKind::CloudConfig {
                continue;
            }
            match parse_cloud_config(&part.content, limits) {
                Ok(cc) => merged.merge(cc),
                Err(e) => merged
                    .warnings
                    .push(format!("cloud-config part {i}: {e}; skipped")),
            }
        }
        merged
    }

    /// The users to set up, with `default` resolved to `default_user` (CirrOS: `cirros`).
    /// An empty `users` list means just the default user, as in cloud-init.
    pub fn effective_users(&self, default_user: &User) -> Vec<User> {
        if self.users.is_empty() {
            return vec![default_user.clone()];
        }
        self.users
            .iter()
            .map(|u| match u {
                UserSpec::Default => default_user.clone(),
                UserSpec::User(u) => (**u).clone(),
            })
            .collect()
    }
}

impl User {
    /// A user with this name and cloud-init's defaults (locked password, no sudo).
    pub fn named(name: &str) -> Self {
        User {
            name: name.to_owned(),
            gecos: None,
            primary_group: None,
            groups: Vec::new(),
            shell: None,
            homedir: None,
            sudo: Vec::new(),
            lock_passwd: true,
            hashed_passwd: None,
            ssh_authorized_keys: Vec::new(),
            system: false,
            uid: None,
        }
    }
}

fn string(v: &Node, key: &str, w: &mut Vec<String>) -> Option<String> {
    match v.scalar_string() {
        Some(s) => Some(s),
        None if v.is_null() => None,
        None => {
            w.push(format!(
                "cloud-config: {key}: expected a string, found {}; ignored",
                v.kind()
            ));
            None
        }
    }
}

fn boolean(v: &Node, key: &str, w: &mut Vec<String>) -> Option<bool> {
    let b = v.as_bool_loose();
    if b.is_none() && !v.is_null() {
        w.push(format!(
            "cloud-config: {key}: expected a boolean, found {v:?}; ignored"
        ));
    }
    b
}

fn list_of_strings(v: &Node) -> Vec<String> {
    match v {
        Node::Seq(items) => items.iter().filter_map(Node::scalar_string).collect(),
        Node::Str(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

fn ssh_keys(v: &Node, ctx: &str, w: &mut Vec<String>) -> Vec<String> {
    let raw: Vec<String> = match v {
        Node::Seq(items) => items.iter().filter_map(Node::scalar_string).collect(),
        Node::Str(s) => vec![s.clone()],
        Node::Null => Vec::new(),
        other => {
            w.push(format!(
                "cloud-config: {ctx}: expected a list, found {}; ignored",
                other.kind()
            ));
            Vec::new()
        }
    };
    let (good, warnings) = crate::sshkey::filter_public_keys(raw);
    w.extend(
        warnings
            .into_iter()
            .map(|m| format!("cloud-config: {ctx}: {m}")),
    );
    good
}

/// POSIX-ish user/group names: `[a-z_][a-z0-9_-]*[$]?`, at most 32 bytes.
fn valid_account_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter().enumerate().all(|(i, &c)| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || c == b'_'
                || c == b'-'
                || (c == b'$' && i == b.len() - 1)
        })
}

fn users(v: &Node, w: &mut Vec<String>) -> Vec<UserSpec> {
    let items: Vec<Node> = match v {
        Node::Seq(items) => items.clone(),
        Node::Str(s) => s
            .split(',')
            .map(|p| Node::Str(p.trim().to_owned()))
            .collect(),
        // Legacy form: {name: {…}} or {name: true}.
        Node::Map(entries) => entries
            .iter()
            .map(|(name, cfg)| {
                let mut m = vec![("name".to_owned(), Node::Str(name.clone()))];
                if let Node::Map(e) = cfg {
                    m.extend(e.iter().filter(|(k, _)| k != "name").cloned());
                }
                Node::Map(m)
            })
            .collect(),
        Node::Null => Vec::new(),
        other => {
            w.push(format!(
                "cloud-config: users: expected a list, found {}; ignored",
                other.kind()
            ));
            return Vec::new();
        }
    };
    let mut out: Vec<UserSpec> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let spec = match item {
            Node::Str(s) if s == "default" => Some(UserSpec::Default),
            Node::Str(s) if s.is_empty() => None,
            Node::Str(s) => {
                if valid_account_name(s) {
                    Some(UserSpec::User(Box::new(User::named(s))))
                } else {
                    w.push(format!(
                        "cloud-config: users[{i}]: invalid user name {s:?}; ignored"
                    ));
                    None
                }
            }
            Node::Map(_) => user(item, i, w).map(|u| UserSpec::User(Box::new(u))),
            other => {
                w.push(format!(
                    "cloud-config: users[{i}]: expected a name or mapping, found {}; ignored",
                    other.kind()
                ));
                None
            }
        };
        if let Some(spec) = spec {
            // Within one document a repeated name also replaces the earlier entry.
            let dup = out.iter().position(|e| match (&spec, e) {
                (UserSpec::Default, UserSpec::Default) => true,
                (a, b) => a.name().is_some() && a.name() == b.name(),
            });
            match dup {
                Some(d) => out[d] = spec,
                None => out.push(spec),
            }
        }
    }
    out
}

fn user(item: &Node, i: usize, w: &mut Vec<String>) -> Option<User> {
    let ctx = format!("cloud-config: users[{i}]");
    let Some(name) = item.get("name").and_then(Node::scalar_string) else {
        let keys: Vec<&str> = item
            .as_map()
            .unwrap_or_default()
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        w.push(format!(
            "{ctx}: user without a name (keys: {}) ignored",
            keys.join(", ")
        ));
        return None;
    };
    if name == "default" {
        w.push(format!(
            "{ctx}: a mapping named \"default\" is not supported; use the string default"
        ));
        return None;
    }
    if !valid_account_name(&name) {
        w.push(format!("{ctx}: invalid user name {name:?}; ignored"));
        return None;
    }
    let mut u = User::named(&name);
    for (k, v) in item.as_map().unwrap_or_default() {
        let key = format!("users[{i}].{k}");
        match k.as_str() {
            "name" => {}
            "gecos" => u.gecos = string(v, &key, w),
            "primary_group" | "primary-group" => u.primary_group = string(v, &key, w),
            "groups" => u.groups = list_of_strings(v),
            "shell" => u.shell = string(v, &key, w),
            "homedir" => u.homedir = string(v, &key, w),
            "sudo" => {
                u.sudo = match v {
                    Node::Str(s) => vec![s.clone()],
                    Node::Seq(items) => items.iter().filter_map(Node::scalar_string).collect(),
                    Node::Null | Node::Bool(false) => Vec::new(),
                    other => {
                        w.push(format!("{ctx}: sudo: unsupported value {other:?} ignored"));
                        Vec::new()
                    }
                }
            }
            "lock_passwd" | "lock-passwd" => u.lock_passwd = boolean(v, &key, w).unwrap_or(true),
            "hashed_passwd" | "passwd" => u.hashed_passwd = string(v, &key, w),
            "ssh_authorized_keys" | "ssh-authorized-keys" => {
                u.ssh_authorized_keys = ssh_keys(v, &key, w)
            }
            "system" => u.system = boolean(v, &key, w).unwrap_or(false),
            "uid" => u.uid = v.as_u64_loose().and_then(|x| u32::try_from(x).ok()),
            "plain_text_passwd" => w.push(format!(
                "{ctx}: plain_text_passwd is not supported (use hashed_passwd); ignored"
            )),
            other => w.push(format!("{ctx}: key {other:?} is not supported; ignored")),
        }
    }
    Some(u)
}

fn groups(v: &Node, w: &mut Vec<String>) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    let mut add = |name: &str, members: Vec<String>, w: &mut Vec<String>| {
        if !valid_account_name(name) {
            w.push(format!(
                "cloud-config: groups: invalid group name {name:?}; ignored"
            ));
            return;
        }
        match out.iter_mut().find(|g| g.name == name) {
            Some(g) => g.members = members,
            None => out.push(Group {
                name: name.to_owned(),
                members,
            }),
        }
    };
    let mut one = |item: &Node, w: &mut Vec<String>| match item {
        Node::Str(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .for_each(|s| add(s, Vec::new(), w)),
        Node::Map(entries) => entries
            .iter()
            .for_each(|(name, m)| add(name, list_of_strings(m), w)),
        other => w.push(format!(
            "cloud-config: groups: unsupported entry {other:?} ignored"
        )),
    };
    match v {
        Node::Seq(items) => items.iter().for_each(|i| one(i, w)),
        Node::Null => {}
        other => one(other, w),
    }
    out
}

fn commands(v: &Node, key: &str, w: &mut Vec<String>) -> Vec<Command> {
    let items = match v {
        Node::Seq(items) => items.as_slice(),
        Node::Str(s) => return vec![Command::Shell(s.clone())],
        Node::Null => return Vec::new(),
        other => {
            w.push(format!(
                "cloud-config: {key}: expected a list, found {}; ignored",
                other.kind()
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match command(item) {
            Some(c) => out.push(c),
            None => w.push(format!(
                "cloud-config: {key}[{i}]: expected a string or a list of strings; ignored"
            )),
        }
    }
    out
}

fn command(item: &Node) -> Option<Command> {
    match item {
        Node::Seq(args) => {
            let argv: Option<Vec<String>> = args.iter().map(Node::scalar_string).collect();
            argv.filter(|a| !a.is_empty()).map(Command::Argv)
        }
        Node::Null | Node::Map(_) => None,
        other => other.scalar_string().map(Command::Shell),
    }
}

fn power_state(v: &Node, w: &mut Vec<String>) -> Option<PowerState> {
    const CTX: &str = "cloud-config: power_state";
    if !matches!(v, Node::Map(_)) {
        w.push(format!("{CTX}: expected a mapping; ignored"));
        return None;
    }
    let mode = match v.get("mode").and_then(Node::as_str) {
        Some("poweroff") => PowerMode::Poweroff,
        Some("reboot") => PowerMode::Reboot,
        Some("halt") => PowerMode::Halt,
        other => {
            w.push(format!(
                "{CTX}: mode must be poweroff, reboot or halt (found {other:?}); ignored"
            ));
            return None;
        }
    };
    let delay_minutes = match v.get("delay") {
        None | Some(Node::Null) => 0,
        Some(Node::Str(s)) if s == "now" => 0,
        Some(d) => match d
            .scalar_string()
            .and_then(|s| s.trim().trim_start_matches('+').parse::<u32>().ok())
        {
            Some(m) => m,
            None => {
                w.push(format!("{CTX}: invalid delay {d:?}; ignored"));
                return None;
            }
        },
    };
    let timeout_seconds = match v.get("timeout") {
        None | Some(Node::Null) => 30,
        Some(t) => t.as_u64_loose().unwrap_or_else(|| {
            w.push(format!("{CTX}: invalid timeout {t:?}; using 30"));
            30
        }),
    };
    let condition = match v.get("condition") {
        None | Some(Node::Null) => PowerCondition::Always,
        Some(Node::Bool(true)) => PowerCondition::Always,
        Some(Node::Bool(false)) => PowerCondition::Never,
        Some(c) => match command(c) {
            Some(cmd) => PowerCondition::Command(cmd),
            None => {
                w.push(format!("{CTX}: invalid condition; ignored"));
                return None;
            }
        },
    };
    warn_unknown(
        v,
        &["mode", "delay", "message", "timeout", "condition"],
        CTX,
        w,
    );
    Some(PowerState {
        mode,
        delay_minutes,
        message: v.get("message").and_then(Node::scalar_string),
        timeout_seconds,
        condition,
    })
}

fn write_files(v: &Node, limits: &Limits, w: &mut Vec<String>) -> Vec<WriteFile> {
    let Some(items) = v.as_seq() else {
        if !v.is_null() {
            w.push(format!(
                "cloud-config: write_files: expected a list, found {}; ignored",
                v.kind()
            ));
        }
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate().take(limits.max_list_entries) {
        let ctx = format!("cloud-config: write_files[{i}]");
        match write_file(item, &ctx, w) {
            Ok(f) => out.push(f),
            Err(reason) => w.push(format!("{ctx}: {reason}; ignored")),
        }
    }
    if items.len() > limits.max_list_entries {
        w.push(format!(
            "cloud-config: write_files: more than {} entries; the rest ignored",
            limits.max_list_entries
        ));
    }
    out
}

fn write_file(item: &Node, ctx: &str, w: &mut Vec<String>) -> Result<WriteFile, String> {
    if !matches!(item, Node::Map(_)) {
        return Err(format!("expected a mapping, found {}", item.kind()));
    }
    let path = item
        .get("path")
        .and_then(Node::scalar_string)
        .ok_or("no path")?;
    let path = validate_path(&path).map_err(|e| e.to_string())?;
    let content = match item.get("content") {
        None | Some(Node::Null) => String::new(),
        Some(c) => c.scalar_string().ok_or("content must be a string")?,
    };
    if item.get("source").is_some() {
        w.push(format!(
            "{ctx}: source (download) is not supported; using content"
        ));
    }
    let encoding = match item.get("encoding").and_then(Node::scalar_string) {
        None => ContentEncoding::Text,
        Some(e) => {
            ContentEncoding::from_name(&e).ok_or_else(|| format!("unknown encoding {e:?}"))?
        }
    };
    let permissions = match item.get("permissions") {
        None | Some(Node::Null) => 0o644,
        Some(p) => parse_permissions(p).ok_or_else(|| format!("invalid permissions {p:?}"))?,
    };
    let (owner, group) = match item.get("owner").and_then(Node::scalar_string) {
        None => ("root".to_owned(), None),
        Some(o) => {
            let (u, g) = match o.split_once(':') {
                Some((u, g)) => (u.trim(), Some(g.trim())),
                None => (o.trim(), None),
            };
            if !valid_owner(u) || g.is_some_and(|g| !valid_owner(g)) {
                return Err(format!("invalid owner {o:?}"));
            }
            (u.to_owned(), g.map(str::to_owned))
        }
    };
    let flag = |k: &str| item.get(k).and_then(Node::as_bool_loose).unwrap_or(false);
    warn_unknown(
        item,
        &[
            "path",
            "content",
            "source",
            "encoding",
            "permissions",
            "owner",
            "append",
            "defer",
        ],
        ctx,
        w,
    );
    Ok(WriteFile {
        path,
        content,
        encoding,
        permissions,
        owner,
        group,
        append: flag("append"),
        defer: flag("defer"),
    })
}

/// An owner or group: an account name or a numeric id.
fn valid_owner(s: &str) -> bool {
    valid_account_name(s)
        || (!s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit()))
}

/// Octal string (`'0644'`, `0o644`, `'644'`) or an integer taken as the mode value itself
/// (YAML `420`, or `0o644` which YAML 1.2 reads as 420). At most `0o7777`.
pub fn parse_permissions(p: &Node) -> Option<u32> {
    let mode = match p {
        Node::UInt(n) => u32::try_from(*n).ok()?,
        Node::Str(s) => {
            let s = s.trim();
            let digits = s
                .strip_prefix("0o")
                .or_else(|| s.strip_prefix("0O"))
                .unwrap_or(s);
            if digits.is_empty() || digits.len() > 6 {
                return None;
            }
            u32::from_str_radix(digits, 8).ok()?
        }
        _ => return None,
    };
    (mode <= 0o7777).then_some(mode)
}

fn warn_unknown(node: &Node, known: &[&str], ctx: &str, w: &mut Vec<String>) {
    for (k, _) in node.as_map().unwrap_or_default() {
        if !known.contains(&k.as_str()) {
            w.push(format!("{ctx}: key {k:?} is not supported; ignored"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sshkey::tests::make_key;
    use proptest::prelude::*;

    fn cc(s: &str) -> CloudConfig {
        parse_cloud_config(s.as_bytes(), &Limits::default()).unwrap()
    }

    #[test]
    fn full_document() {
        let key = make_key("ssh-ed25519", "u");
        let doc = format!(
            "#cloud-config\n\
hostname: web1\nfqdn: web1.example.com\nprefer_fqdn_over_hostname: true\nmanage_etc_hosts: localhost\n\
users:\n  - default\n  - name: alice\n    groups: [wheel, adm]\n    shell: /bin/sh\n    sudo: ALL=(ALL) NOPASSWD:ALL\n    lock_passwd: false\n    ssh_authorized_keys: ['{key}', 'bogus']\n    favourite_colour: blue\n\
ssh_authorized_keys:\n  - {key}\n\
write_files:\n  - path: /etc/motd\n    content: hello\n    permissions: '0600'\n    owner: alice:adm\n  - path: /etc/../shadow\n    content: x\n  - path: /tmp/b\n    encoding: b64\n    content: aGk=\n    append: true\n    defer: yes\n\
bootcmd:\n  - echo early\n  - [cloud-init-per, once, x, echo, 1]\n\
runcmd:\n  - ls -l /\n  - [sh, -c, 'echo $HOME']\n  - {{bad: map}}\n\
final_message: done after $UPTIME\n\
power_state:\n  mode: poweroff\n  delay: '+5'\n  message: bye\n  timeout: 10\n  condition: test -f /x\n\
apt:\n  preserve_sources_list: true\npackages: [vim]\n"
        );
        let c = cc(&doc);
        assert_eq!(c.hostname.as_deref(), Some("web1"));
        assert_eq!(c.fqdn.as_deref(), Some("web1.example.com"));
        assert_eq!(c.prefer_fqdn_over_hostname, Some(true));
        assert_eq!(c.manage_etc_hosts, Some(ManageEtcHosts::Localhost));
        assert_eq!(c.users.len(), 2);
        assert_eq!(c.users[0], UserSpec::Default);
        let UserSpec::User(alice) = &c.users[1] else {
            panic!()
        };
        assert_eq!(alice.groups, ["wheel", "adm"]);
        assert_eq!(alice.sudo, ["ALL=(ALL) NOPASSWD:ALL"]);
        assert!(!alice.lock_passwd);
        assert_eq!(alice.ssh_authorized_keys, std::slice::from_ref(&key));
        assert_eq!(c.ssh_authorized_keys, [key]);
        assert_eq!(c.write_files.len(), 2, "the traversal entry is dropped");
        assert_eq!(c.write_files[0].permissions, 0o600);
        assert_eq!(
            (
                c.write_files[0].owner.as_str(),
                c.write_files[0].group.as_deref()
            ),
            ("alice", Some("adm"))
        );
        assert_eq!(c.write_files[1].encoding, ContentEncoding::Base64);
        assert!(c.write_files[1].append && c.write_files[1].defer);
        assert_eq!(
            c.bootcmd[1],
            Command::Argv(vec![
                "cloud-init-per".into(),
                "once".into(),
                "x".into(),
                "echo".into(),
                "1".into()
            ])
        );
        assert_eq!(c.runcmd.len(), 2);
        let ps = c.power_state.as_ref().unwrap();
        assert_eq!(
            (ps.mode, ps.delay_minutes, ps.timeout_seconds),
            (PowerMode::Poweroff, 5, 10)
        );
        assert_eq!(
            ps.condition,
            PowerCondition::Command(Command::Shell("test -f /x".into()))
        );
        assert_eq!(c.unknown_keys, ["apt", "packages"]);
        let w = c.warnings.join("\n");
        for needle in [
            "favourite_colour",
            "bogus",
            "shadow",
            "runcmd[2]",
            "\"apt\"",
            "\"packages\"",
        ] {
            assert!(w.contains(needle), "missing warning about {needle}: {w}");
        }
    }

    #[test]
    fn virga_sections_are_kept_raw_and_later_parts_win() {
        let a = cc("virga.update:\n  url: http://10.0.2.2:8080/\n  channel: beta\nvirga.: x\n");
        assert_eq!(
            a.virga["virga.update"],
            serde_json::json!({"url": "http://10.0.2.2:8080/", "channel": "beta"})
        );
        assert_eq!(a.unknown_keys, ["virga."]);
        let mut m = a.clone();
        m.merge(cc("virga.update: {channel: alpha}\n"));
        assert_eq!(
            m.virga["virga.update"],
            serde_json::json!({"channel": "alpha"})
        );
    }

    #[test]
    fn ssh_pwauth() {
        for quiet in ["false", "no", "False", "unchanged", "0"] {
            let c = cc(&format!("ssh_pwauth: {quiet}\n"));
            assert!(c.warnings.is_empty(), "{quiet}: {:?}", c.warnings);
            assert!(c.unknown_keys.is_empty());
        }
        let c = cc("ssh_pwauth: true\n");
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("never accepts passwords"), "{c:?}");
        assert!(c.unknown_keys.is_empty());
        assert!(cc("ssh_pwauth: [x]\n").warnings[0].contains("expected a boolean"));
    }

    #[test]
    fn hostnames_are_validated() {
        let c = cc("hostname: \"evil\\n=== forged\"\nfqdn: good.example.com\n");
        assert_eq!(c.hostname, None);
        assert_eq!(c.fqdn.as_deref(), Some("good.example.com"));
        assert!(
            c.warnings[0].starts_with("cloud-config: hostname: hostname"),
            "{:?}",
            c.warnings
        );
        assert!(!c.warnings[0].contains('\n'));
        let c = cc("hostname: ok-name\nfqdn: bad_name.example\n");
        assert_eq!(c.hostname.as_deref(), Some("ok-name"));
        assert_eq!(c.fqdn, None);
    }

    #[test]
    fn non_mapping_is_an_error_and_empty_is_empty() {
        assert!(parse_cloud_config(b"- a\n- b\n", &Limits::default()).is_err());
        assert!(parse_cloud_config(b"a: [\n", &Limits::default()).is_err());
        assert_eq!(cc("#cloud-config\n"), CloudConfig::default());
    }

    #[test]
    fn merge_rule() {
        let mut a = cc(
            "hostname: a\nruncmd: [one]\nusers: [default, bob]\nssh_authorized_keys: []\nfoo: 1\n",
        );
        let b = cc(
            "runcmd: [two]\nusers:\n  - name: bob\n    shell: /bin/zsh\n  - carol\n  - default\nbar: 2\npower_state: {mode: reboot}\n",
        );
        a.merge(b);
        assert_eq!(
            a.hostname.as_deref(),
            Some("a"),
            "unset in the later part: kept"
        );
        assert_eq!(
            a.runcmd,
            [Command::Shell("one".into()), Command::Shell("two".into())]
        );
        let names: Vec<_> = a
            .users
            .iter()
            .map(|u| u.name().unwrap_or("default"))
            .collect();
        assert_eq!(names, ["default", "bob", "carol"]);
        let UserSpec::User(bob) = &a.users[1] else {
            panic!()
        };
        assert_eq!(bob.shell.as_deref(), Some("/bin/zsh"));
        assert_eq!(a.unknown_keys, ["bar", "foo"]);
        assert_eq!(a.power_state.unwrap().mode, PowerMode::Reboot);
        let c = cc("hostname: c\n");
        let mut a2 = cc("hostname: a\n");
        a2.merge(c);
        assert_eq!(a2.hostname.as_deref(), Some("c"));
    }

    #[test]
    fn users_forms() {
        assert_eq!(cc("users: default, bob\n").users.len(), 2);
        let c = cc("users:\n  alice:\n    shell: /bin/sh\n");
        let UserSpec::User(a) = &c.users[0] else {
            panic!()
        };
        assert_eq!(a.shell.as_deref(), Some("/bin/sh"));
        let c = cc("users: ['Bad Name', root]\n");
        assert_eq!(c.users.len(), 1);
        let d = User::named("cirros");
        assert_eq!(cc("").effective_users(&d), std::slice::from_ref(&d));
        assert_eq!(
            cc("users: [default, bob]").effective_users(&d)[0].name,
            "cirros"
        );
    }

    #[test]
    fn permissions() {
        let p = |s: &str| {
            parse_permissions(
                &crate::value::parse_yaml(format!("p: {s}").as_bytes(), "t", &Limits::default())
                    .unwrap()
                    .get("p")
                    .unwrap()
                    .clone(),
            )
        };
        assert_eq!(p("'0644'"), Some(0o644));
        assert_eq!(
            p("0644"),
            Some(0o644),
            "unquoted 0644 stays a string and is octal, as in PyYAML"
        );
        assert_eq!(p("0o755"), Some(0o755));
        assert_eq!(p("493"), Some(0o755));
        assert_eq!(p("'755'"), Some(0o755));
        assert_eq!(p("'0999'"), None);
        assert_eq!(p("99999"), None);
        assert_eq!(p("-1"), None);
    }

    #[test]
    fn power_state_forms() {
        let ps = cc("power_state: {mode: halt, delay: now, condition: false}\n")
            .power_state
            .unwrap();
        assert_eq!(
            (ps.mode, ps.delay_minutes, ps.condition),
            (PowerMode::Halt, 0, PowerCondition::Never)
        );
        assert_eq!(cc("power_state: {mode: suspend}\n").power_state, None);
        assert_eq!(
            cc("power_state: {mode: reboot, delay: 3}\n")
                .power_state
                .unwrap()
                .delay_minutes,
            3
        );
        assert_eq!(
            cc("power_state: {mode: reboot, delay: soon}\n").power_state,
            None
        );
    }

    #[test]
    fn from_user_data_merges_parts_in_order() {
        let ud = crate::user_data::parse_user_data(
            b"#cloud-config-archive\n- '#cloud-config\n\n  hostname: a\n\n  runcmd: [x]'\n- '#cloud-config\n\n  hostname: b\n\n  runcmd: [y]'\n- '#cloud-config\n\n  - not a map'\n",
            &Limits::default(),
        )
        .unwrap();
        let c = CloudConfig::from_user_data(&ud, None, &Limits::default());
        assert_eq!(c.hostname.as_deref(), Some("b"));
        assert_eq!(c.runcmd.len(), 2);
        assert!(c.warnings.iter().any(|w| w.contains("part 2")));
    }

    proptest! {
        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_cloud_config(&b, &Limits::default());
        }

        #[test]
        fn never_panics_on_yaml_like(s in "(hostname|users|runcmd|write_files|power_state|path|mode|- |  |: |\n|\\[|\\]|\\{|\\}|default|0644|true|x){0,60}") {
            let _ = parse_cloud_config(s.as_bytes(), &Limits::default());
        }

        #[test]
        fn runcmd_strings_round_trip(cmds in proptest::collection::vec("[a-z][a-z0-9 ./-]{0,30}", 0..8)) {
            let doc = serde_json::json!({"runcmd": cmds}).to_string();
            let c = parse_cloud_config(doc.as_bytes(), &Limits::default()).unwrap();
            let back: Vec<String> = c.runcmd.iter().map(|c| match c { Command::Shell(s) => s.clone(), Command::Argv(_) => unreachable!() }).collect();
            prop_assert_eq!(back, cmds);
        }
    }
}
