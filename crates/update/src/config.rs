//! The `virga.update:` cloud-config section: the contract the guest agent implements.
//!
//! ```yaml
//! #cloud-config
//! virga.update:
//!   url: http://10.0.2.2:8080/        # repository root (plain HTTP; signatures carry the trust)
//!   channel: stable                   # alpha | beta | stable | pin:VERSION
//!   interval: 1h                      # between checks (first check 5 min after boot)
//!   reboot: etcd-lock                 # reboot | window | etcd-lock | off
//!   window: "Mon..Fri 02:00 1h"       # required for `window`, optional for `etcd-lock`
//!   allow_downgrade: false
//!   health_timeout: 5m                # a try boot not healthy by then reboots (falls back)
//!   etcd:
//!     endpoints: [http://10.0.2.2:2379]
//!     group: default
//!     max: 1                          # machines rebooting at once (set when creating)
//!     lease_ttl: 15m                  # a holder that stops renewing loses its slot after this
//! ```
//!
//! Every key is optional; without `url` updates are disabled. Unknown keys are refused (a typo
//! must not silently turn updates off). [`UpdateConfig::from_value`] takes the section as a
//! `serde_json::Value` (the guest's YAML parser converts to one).

use serde::Deserialize;

use crate::reboot::{Strategy, Window};
use crate::semaphore;
use crate::time::{DAY, parse_duration};
use crate::version::Channel;

/// The cloud-config key.
pub const KEY: &str = "virga.update";

/// What is wrong with the section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("virga.update: {0}")]
pub struct ConfigError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    url: Option<String>,
    channel: Option<String>,
    interval: Option<String>,
    reboot: Option<String>,
    window: Option<String>,
    allow_downgrade: Option<bool>,
    health_timeout: Option<String>,
    etcd: Option<RawEtcd>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEtcd {
    endpoints: Vec<String>,
    group: Option<String>,
    max: Option<u32>,
    lease_ttl: Option<String>,
}

/// The etcd reboot lock settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs (`http://host:port`), tried in order.
    pub endpoints: Vec<String>,
    /// Lock group (a key prefix).
    pub group: String,
    /// Machines rebooting at once, used when the semaphore is created.
    pub max: u32,
    /// Lease TTL in seconds.
    pub lease_ttl: i64,
}

/// The update agent's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateConfig {
    /// Repository root URL, `None`: updates disabled.
    pub url: Option<String>,
    /// What to follow.
    pub channel: Channel,
    /// Seconds between checks.
    pub interval: i64,
    /// How to reboot.
    pub strategy: Strategy,
    /// Accept older versions.
    pub allow_downgrade: bool,
    /// Seconds a try boot has to become healthy.
    pub health_timeout: i64,
    /// The etcd lock (with `reboot: etcd-lock`).
    pub etcd: Option<EtcdConfig>,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            url: None,
            channel: Channel::Stable,
            interval: 3600,
            strategy: Strategy::Reboot,
            allow_downgrade: false,
            health_timeout: 300,
            etcd: None,
        }
    }
}

fn err(m: impl Into<String>) -> ConfigError {
    ConfigError(m.into())
}

/// Checks an `http://host[:port][/path]` URL (no TLS in the guest; no user info, query or
/// fragment). Returns it with a trailing `/`.
pub fn check_http_url(u: &str) -> Result<String, ConfigError> {
    if u.starts_with("https://") {
        return Err(err(format!(
            "{u:?}: https is not supported (the guest has no TLS); use http:// — manifests and payloads are verified by signature and hash, not by the transport"
        )));
    }
    let rest = u
        .strip_prefix("http://")
        .ok_or_else(|| err(format!("{u:?} is not an http:// URL")))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty()
        || u.len() > 512
        || u.contains(['@', '?', '#', ' ', '\\'])
        || !u.is_ascii()
        || u.bytes().any(|b| b.is_ascii_control())
    {
        return Err(err(format!(
            "{u:?} is not a plain http://host[:port]/path URL"
        )));
    }
    let mut out = u.to_owned();
    if !out.ends_with('/') {
        out.push('/');
    }
    Ok(out)
}

fn duration(key: &str, v: Option<String>, default: i64, max: i64) -> Result<i64, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => parse_duration(&s, max)
            .ok_or_else(|| err(format!("{key}: {s:?} is not a duration like 30m or 1h"))),
    }
}

impl UpdateConfig {
    /// Reads the `virga.update:` section.
    pub fn from_value(v: &serde_json::Value) -> Result<UpdateConfig, ConfigError> {
        let raw: Raw = serde_json::from_value(v.clone()).map_err(|e| err(e.to_string()))?;
        let d = UpdateConfig::default();
        let url = raw.url.as_deref().map(check_http_url).transpose()?;
        let channel = match raw.channel {
            None => d.channel,
            Some(c) => c.parse().map_err(|e| err(format!("channel: {e}")))?,
        };
        let interval = duration("interval", raw.interval, d.interval, 7 * DAY)?;
        if interval < 60 {
            return Err(err("interval: at least 1m"));
        }
        let health_timeout = duration("health_timeout", raw.health_timeout, d.health_timeout, DAY)?;
        let window = raw
            .window
            .as_deref()
            .map(str::parse::<Window>)
            .transpose()
            .map_err(|e| err(format!("window: {e}")))?;
        let strategy = match raw.reboot.as_deref().unwrap_or("reboot") {
            "reboot" => Strategy::Reboot,
            "off" => Strategy::Off,
            "window" => {
                Strategy::Window(window.ok_or_else(|| err("reboot: window needs a `window:` key"))?)
            }
            "etcd-lock" => Strategy::EtcdLock { window },
            other => {
                return Err(err(format!(
                    "reboot: {other:?} is not reboot, window, etcd-lock or off"
                )));
            }
        };
        if window.is_some() && !matches!(strategy, Strategy::Window(_) | Strategy::EtcdLock { .. })
        {
            return Err(err("window: only used with reboot: window or etcd-lock"));
        }
        let etcd = match raw.etcd {
            None => None,
            Some(e) => {
                if e.endpoints.is_empty() || e.endpoints.len() > 16 {
                    return Err(err("etcd.endpoints: 1 to 16 URLs"));
                }
                let endpoints = e
                    .endpoints
                    .iter()
                    .map(|u| check_http_url(u).map(|u| u.trim_end_matches('/').to_owned()))
                    .collect::<Result<Vec<_>, _>>()?;
                let group = e.group.unwrap_or_else(|| "default".into());
                semaphore::check_holder(&group)
                    .map_err(|_| err(format!("etcd.group: {group:?} (letters, digits, ._:-)")))?;
                let max = e.max.unwrap_or(1);
                if max == 0 {
                    return Err(err("etcd.max: at least 1"));
                }
                let lease_ttl = duration("etcd.lease_ttl", e.lease_ttl, 900, DAY)?;
                if lease_ttl < 10 {
                    return Err(err("etcd.lease_ttl: at least 10s"));
                }
                Some(EtcdConfig {
                    endpoints,
                    group,
                    max,
                    lease_ttl,
                })
            }
        };
        if matches!(strategy, Strategy::EtcdLock { .. }) && etcd.is_none() {
            return Err(err(
                "reboot: etcd-lock needs an `etcd:` section with endpoints",
            ));
        }
        Ok(UpdateConfig {
            url,
            channel,
            interval,
            strategy,
            allow_downgrade: raw.allow_downgrade.unwrap_or(false),
            health_timeout,
            etcd,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn full_section() {
        let c = UpdateConfig::from_value(&json!({
            "url": "http://10.0.2.2:8080",
            "channel": "beta",
            "interval": "45m",
            "reboot": "etcd-lock",
            "window": "Mon..Fri 02:00 1h",
            "etcd": {"endpoints": ["http://10.0.2.2:2379/"], "max": 2, "lease_ttl": "10m"}
        }))
        .unwrap();
        assert_eq!(c.url.as_deref(), Some("http://10.0.2.2:8080/"));
        assert_eq!(c.channel, Channel::Beta);
        assert_eq!(c.interval, 2700);
        assert!(matches!(c.strategy, Strategy::EtcdLock { window: Some(_) }));
        let e = c.etcd.unwrap();
        assert_eq!(e.endpoints, vec!["http://10.0.2.2:2379"]);
        assert_eq!((e.max, e.lease_ttl, e.group.as_str()), (2, 600, "default"));
    }

    #[test]
    fn defaults_and_refusals() {
        let c = UpdateConfig::from_value(&json!({})).unwrap();
        assert_eq!(c, UpdateConfig::default());
        for bad in [
            json!({"url": "https://x/"}),
            json!({"url": "ftp://x/"}),
            json!({"url": "http://user@x/"}),
            json!({"channel": "lts"}),
            json!({"reboot": "sometimes"}),
            json!({"reboot": "window"}),
            json!({"reboot": "etcd-lock"}),
            json!({"reboot": "reboot", "window": "02:00 1h"}),
            json!({"interval": "10s"}),
            json!({"intervall": "1h"}),
            json!({"etcd": {"endpoints": []}}),
            json!({"etcd": {"endpoints": ["http://x:2379"], "max": 0}}),
            json!({"etcd": {"endpoints": ["http://x:2379"], "group": "a/b"}}),
            json!("stable"),
        ] {
            assert!(UpdateConfig::from_value(&bad).is_err(), "{bad}");
        }
        let e = UpdateConfig::from_value(&json!({"url": "https://x/"})).unwrap_err();
        assert!(e.to_string().contains("no TLS"), "{e}");
    }
}
