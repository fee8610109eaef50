//! The etcd driver for the reboot semaphore (feature `etcd`).
//!
//! etcd's v3 API is gRPC; every etcd since 3.3 also serves it as JSON over HTTP/1.1 (the
//! "gRPC gateway", on the client port, enabled by default): `POST /v3/kv/range`,
//! `/v3/kv/txn`, `/v3/lease/grant`, `/v3/lease/keepalive`, `/v3/lease/revoke`, with keys and
//! values base64-encoded and 64-bit integers as strings. Talking to it with the guest's
//! existing blocking HTTP client is "the v3 API through a Rust client" without a gRPC stack,
//! protobuf code or an async runtime in the guest binary. The transactions themselves are
//! planned sans-IO in [`crate::semaphore`]; this module only runs them.
//!
//! Endpoints are tried in order on transport errors; every response body is capped at 1 MiB.

use std::io::Read;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::semaphore::{
    AcquirePlan, Compare, Keys, Observed, Op, Semaphore, SemaphoreError, Txn, plan_acquire,
    plan_release, plan_set_max,
};

const MAX_RESPONSE: u64 = 1 << 20;

/// What went wrong talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// An endpoint that is not `http://host:port`.
    #[error("etcd endpoint {0:?} is not http://host:port")]
    Endpoint(String),
    /// No endpoint answered.
    #[error("etcd unreachable ({endpoints}): {last}")]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// The last error.
        last: String,
    },
    /// An error status.
    #[error("etcd {path}: HTTP {status}: {body}")]
    Status {
        /// API path.
        path: String,
        /// Status.
        status: u16,
        /// Error body (truncated).
        body: String,
    },
    /// A response that is not what the API returns.
    #[error("etcd {path}: unexpected response: {message}")]
    Response {
        /// API path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The semaphore value or a holder id.
    #[error(transparent)]
    Semaphore(#[from] SemaphoreError),
    /// The lease is gone (expired or revoked).
    #[error("etcd lease {0:x} has expired")]
    LeaseExpired(i64),
    /// Waiting for a slot took too long.
    #[error("no reboot slot within {waited:?}; holders: {holders:?}")]
    Timeout {
        /// How long.
        waited: Duration,
        /// Who held the slots at the last look.
        holders: Vec<String>,
    },
    /// Transactions kept losing races.
    #[error("reboot semaphore: {0} transactions in a row lost a race; giving up for now")]
    Contended(u32),
}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Lease id.
    pub id: i64,
    /// TTL granted, seconds.
    pub ttl: i64,
}

/// A blocking etcd v3 JSON-gateway client.
#[derive(Debug)]
pub struct EtcdClient {
    agent: ureq::Agent,
    endpoints: Vec<String>,
}

fn b64(s: &[u8]) -> String {
    B64.encode(s)
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// The smallest key after every key with this prefix (etcd's `range_end` for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// One key-value pair as etcd returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// Key.
    pub key: Vec<u8>,
    /// Value.
    pub value: Vec<u8>,
    /// Revision of its last change.
    pub mod_revision: i64,
    /// Revision that created it.
    pub create_revision: i64,
    /// Lease, 0 for none.
    pub lease: i64,
}

impl EtcdClient {
    /// A client for these endpoints (`http://host:port`), with a per-request timeout.
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<EtcdClient, EtcdError> {
        if endpoints.is_empty() {
            return Err(EtcdError::Endpoint(String::new()));
        }
        let endpoints = endpoints
            .iter()
            .map(|e| {
                crate::config::check_http_url(e)
                    .map(|u| u.trim_end_matches('/').to_owned())
                    .map_err(|_| EtcdError::Endpoint(e.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout.min(Duration::from_secs(5))))
            .user_agent(concat!("virga-update/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(EtcdClient { agent, endpoints })
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let data = body.to_string();
        let mut last = String::new();
        for ep in &self.endpoints {
            let url = format!("{ep}{path}");
            let resp = match self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(data.as_bytes())
            {
                Ok(r) => r,
                Err(e) => {
                    last = format!("{url}: {e}");
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let mut text = Vec::new();
            if let Err(e) = resp
                .into_body()
                .into_reader()
                .take(MAX_RESPONSE + 1)
                .read_to_end(&mut text)
            {
                last = format!("{url}: reading response: {e}");
                continue;
            }
            if text.len() as u64 > MAX_RESPONSE {
                return Err(EtcdError::Response {
                    path: path.into(),
                    message: "over 1 MiB".into(),
                });
            }
            if status != 200 {
                return Err(EtcdError::Status {
                    path: path.into(),
                    status,
                    body: String::from_utf8_lossy(&text).chars().take(300).collect(),
                });
            }
            return serde_json::from_slice(&text).map_err(|e| EtcdError::Response {
                path: path.into(),
                message: e.to_string(),
            });
        }
        Err(EtcdError::Unreachable {
            endpoints: self.endpoints.join(", "),
            last,
        })
    }

    fn bad(path: &str, message: impl Into<String>) -> EtcdError {
        EtcdError::Response {
            path: path.into(),
            message: message.into(),
        }
    }

    fn kvs(path: &str, range: &Value) -> Result<Vec<KeyValue>, EtcdError> {
        let Some(list) = range.get("kvs") else {
            return Ok(Vec::new());
        };
        let list = list.as_array().ok_or_else(|| Self::bad(path, "kvs"))?;
        list.iter()
            .map(|kv| {
                let dec = |f: &str| {
                    kv.get(f)
                        .and_then(Value::as_str)
                        .map_or(Ok(Vec::new()), |s| B64.decode(s))
                        .map_err(|_| Self::bad(path, format!("{f} is not base64")))
                };
                let num = |f: &str| kv.get(f).and_then(int).unwrap_or(0);
                Ok(KeyValue {
                    key: dec("key")?,
                    value: dec("value")?,
                    mod_revision: num("mod_revision"),
                    create_revision: num("create_revision"),
                    lease: num("lease"),
                })
            })
            .collect()
    }

    fn header_revision(path: &str, v: &Value) -> Result<i64, EtcdError> {
        v.get("header")
            .and_then(|h| h.get("revision"))
            .and_then(int)
            .ok_or_else(|| Self::bad(path, "no header.revision"))
    }

    /// Grants a lease of `ttl` seconds.
    pub fn grant(&self, ttl: i64) -> Result<Lease, EtcdError> {
        let p = "/v3/lease/grant";
        let v = self.post(p, &json!({ "TTL": ttl.to_string() }))?;
        let id = v
            .get("ID")
            .and_then(int)
            .ok_or_else(|| Self::bad(p, "no ID"))?;
        let ttl = v.get("TTL").and_then(int).unwrap_or(0);
        Ok(Lease { id, ttl })
    }

    /// Renews a lease; returns its new TTL, or [`EtcdError::LeaseExpired`].
    pub fn keepalive(&self, id: i64) -> Result<i64, EtcdError> {
        let v = self.post("/v3/lease/keepalive", &json!({ "ID": id.to_string() }))?;
        let ttl = v
            .get("result")
            .and_then(|r| r.get("TTL"))
            .and_then(int)
            .unwrap_or(0);
        if ttl <= 0 {
            return Err(EtcdError::LeaseExpired(id));
        }
        Ok(ttl)
    }

    /// Revokes a lease (its keys are deleted). An unknown lease is not an error.
    pub fn revoke(&self, id: i64) -> Result<(), EtcdError> {
        match self.post("/v3/lease/revoke", &json!({ "ID": id.to_string() })) {
            Ok(_) => Ok(()),
            Err(EtcdError::Status { body, .. }) if body.contains("not found") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One key, at `revision` (0: the latest).
    pub fn get(&self, key: &str, revision: i64) -> Result<Option<KeyValue>, EtcdError> {
        let p = "/v3/kv/range";
        let mut body = json!({ "key": b64(key.as_bytes()) });
        if revision > 0 {
            body["revision"] = json!(revision.to_string());
        }
        let v = self.post(p, &body)?;
        Ok(Self::kvs(p, &v)?.into_iter().next())
    }

    /// The current revision.
    pub fn revision(&self) -> Result<i64, EtcdError> {
        let p = "/v3/kv/range";
        let v = self.post(p, &json!({ "key": b64(b"\0"), "count_only": true }))?;
        Self::header_revision(p, &v)
    }

    /// Runs a transaction; returns whether its compares held, and the revision after it.
    pub fn txn(&self, t: &Txn) -> Result<(bool, i64), EtcdError> {
        let p = "/v3/kv/txn";
        let compare: Vec<Value> = t
            .compares
            .iter()
            .map(|c| match c {
                Compare::ModRevision(k, r) => json!({
                    "key": b64(k.as_bytes()), "result": "EQUAL", "target": "MOD",
                    "mod_revision": r.to_string()
                }),
                Compare::Absent(k) => json!({
                    "key": b64(k.as_bytes()), "result": "EQUAL", "target": "CREATE",
                    "create_revision": "0"
                }),
            })
            .collect();
        let success: Vec<Value> = t
            .ops
            .iter()
            .map(|o| match o {
                Op::Put { key, value, lease } => {
                    let mut put = json!({ "key": b64(key.as_bytes()), "value": b64(value) });
                    if *lease != 0 {
                        put["lease"] = json!(lease.to_string());
                    }
                    json!({ "request_put": put })
                }
                Op::Delete(k) => json!({ "request_delete_range": { "key": b64(k.as_bytes()) } }),
            })
            .collect();
        let v = self.post(p, &json!({ "compare": compare, "success": success }))?;
        // proto3 JSON leaves out false booleans.
        let ok = v.get("succeeded").and_then(Value::as_bool).unwrap_or(false);
        Ok((ok, Self::header_revision(p, &v)?))
    }

    /// Reads the semaphore and the live holders at one revision.
    pub fn observe(&self, keys: &Keys) -> Result<(Observed, i64), EtcdError> {
        let p = "/v3/kv/txn";
        let hp = keys.holder_prefix();
        let v = self.post(
            p,
            &json!({ "success": [
                { "request_range": { "key": b64(keys.semaphore().as_bytes()) } },
                { "request_range": {
                    "key": b64(hp.as_bytes()),
                    "range_end": b64(&prefix_end(hp.as_bytes())),
                    "keys_only": true
                } }
            ] }),
        )?;
        let rev = Self::header_revision(p, &v)?;
        let responses = v
            .get("responses")
            .and_then(Value::as_array)
            .filter(|r| r.len() == 2)
            .ok_or_else(|| Self::bad(p, "expected two range responses"))?;
        let range = |i: usize| {
            responses[i]
                .get("response_range")
                .cloned()
                .unwrap_or(Value::Null)
        };
        let sem = match Self::kvs(p, &range(0))?.into_iter().next() {
            Some(kv) => Some((Semaphore::parse(&kv.value)?, kv.mod_revision)),
            None => None,
        };
        let live = Self::kvs(p, &range(1))?
            .into_iter()
            .filter_map(|kv| {
                String::from_utf8(kv.key)
                    .ok()
                    .and_then(|k| k.strip_prefix(&hp).map(str::to_owned))
            })
            .collect();
        Ok((
            Observed {
                semaphore: sem,
                live,
            },
            rev,
        ))
    }
}

/// The outcome of one attempt to take a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockAttempt {
    /// Taken in the transaction at this revision (holders whose lease had expired dropped).
    Acquired {
        /// Revision of the transaction.
        revision: i64,
        /// Dropped holders.
        reclaimed: Vec<String>,
    },
    /// Already held by this machine.
    AlreadyHeld,
    /// Every slot is held.
    Full {
        /// Live holders.
        holders: Vec<String>,
    },
}

/// One machine's handle on the fleet's reboot semaphore.
#[derive(Debug)]
pub struct RebootLock<'a> {
    client: &'a EtcdClient,
    keys: Keys,
    id: String,
    max: u32,
}

/// Transactions that may lose races in a row before an attempt gives up.
const MAX_RACES: u32 = 8;

impl<'a> RebootLock<'a> {
    /// `id` (this machine) in `group`; `max` is used if the semaphore does not exist yet.
    pub fn new(
        client: &'a EtcdClient,
        group: &str,
        id: &str,
        max: u32,
    ) -> Result<RebootLock<'a>, EtcdError> {
        crate::semaphore::check_holder(id)?;
        crate::semaphore::check_holder(group)?;
        Ok(RebootLock {
            client,
            keys: Keys::group(group),
            id: id.to_owned(),
            max,
        })
    }

    /// The keys used.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// One attempt to take a slot whose holder key lives as long as `lease`.
    pub fn try_acquire(&self, lease: i64) -> Result<LockAttempt, EtcdError> {
        for _ in 0..MAX_RACES {
            let (seen, _) = self.client.observe(&self.keys)?;
            match plan_acquire(&self.keys, &seen, &self.id, lease, self.max)? {
                AcquirePlan::Held(None) => return Ok(LockAttempt::AlreadyHeld),
                AcquirePlan::Held(Some(t)) => {
                    if self.client.txn(&t)?.0 {
                        return Ok(LockAttempt::AlreadyHeld);
                    }
                }
                AcquirePlan::Full { holders } => return Ok(LockAttempt::Full { holders }),
                AcquirePlan::Try { txn, reclaimed } => {
                    let (ok, revision) = self.client.txn(&txn)?;
                    if ok {
                        if !reclaimed.is_empty() {
                            tracing::warn!(
                                "reboot lock: dropped holders whose lease expired: {reclaimed:?}"
                            );
                        }
                        return Ok(LockAttempt::Acquired {
                            revision,
                            reclaimed,
                        });
                    }
                }
            }
        }
        Err(EtcdError::Contended(MAX_RACES))
    }

    /// Takes a slot, polling every `poll` until `wait` has passed; keeps `lease` alive
    /// meanwhile. `sleep` does the waiting.
    pub fn acquire(
        &self,
        lease: i64,
        wait: Duration,
        poll: Duration,
        sleep: &mut dyn FnMut(Duration),
    ) -> Result<LockAttempt, EtcdError> {
        let start = Instant::now();
        loop {
            match self.try_acquire(lease)? {
                LockAttempt::Full { holders } => {
                    if start.elapsed() + poll > wait {
                        return Err(EtcdError::Timeout {
                            waited: start.elapsed(),
                            holders,
                        });
                    }
                    sleep(poll);
                    self.client.keepalive(lease)?;
                }
                done => return Ok(done),
            }
        }
    }

    /// Gives the slot back; returns the revision of the release, `None` if not held.
    pub fn release(&self) -> Result<Option<i64>, EtcdError> {
        for _ in 0..MAX_RACES {
            let (seen, _) = self.client.observe(&self.keys)?;
            let Some(t) = plan_release(&self.keys, &seen, &self.id) else {
                return Ok(None);
            };
            let (ok, rev) = self.client.txn(&t)?;
            if ok {
                return Ok(Some(rev));
            }
        }
        Err(EtcdError::Contended(MAX_RACES))
    }

    /// Changes the number of machines that may reboot at once.
    pub fn set_max(&self, max: u32) -> Result<(), EtcdError> {
        for _ in 0..MAX_RACES {
            let (seen, _) = self.client.observe(&self.keys)?;
            if self.client.txn(&plan_set_max(&self.keys, &seen, max)?)?.0 {
                return Ok(());
            }
        }
        Err(EtcdError::Contended(MAX_RACES))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }

    #[test]
    fn endpoints_are_checked() {
        let t = Duration::from_secs(1);
        assert!(EtcdClient::new(&[], t).is_err());
        assert!(EtcdClient::new(&["https://x:2379".into()], t).is_err());
        assert!(EtcdClient::new(&["http://127.0.0.1:2379/".into()], t).is_ok());
    }

    #[test]
    fn unreachable_is_reported() {
        // A port nothing listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = EtcdClient::new(
            &[format!("http://127.0.0.1:{port}")],
            Duration::from_secs(2),
        )
        .unwrap();
        let e = c.grant(10).unwrap_err();
        assert!(matches!(e, EtcdError::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains("etcd unreachable"), "{e}");
    }
}
