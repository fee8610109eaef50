//! The fleet's reboot semaphore: at most `max` machines reboot at once (locksmith's
//! `etcd-lock`), as compare-and-swap transactions planned here and run by the etcd driver
//! ([`crate::etcd`]).
//!
//! **Keys.** Under a prefix (default `virga/reboot-lock/` + group, default `default`):
//! - `<prefix>semaphore`: locksmith's JSON `{"semaphore": FREE, "max": N, "holders": [ID…]}`
//!   (`semaphore` = `max` − holders), so locksmith-style tooling can read it;
//! - `<prefix>holders/<ID>`: one key per holder, attached to the holder's etcd **lease**.
//!
//! Locksmith's holders list alone has no liveness: a machine that dies while holding the lock
//! blocks the fleet until someone runs `locksmithctl unlock`. Here a holder keeps its lease alive
//! (also across its reboot: the lease id is persisted and the TTL, default 15 minutes, covers a
//! reboot); when a holder's lease expires, etcd deletes its holder key, and the next machine that
//! wants the lock drops that holder from the list in the same transaction that takes its slot.
//!
//! Every change is one etcd transaction guarded by the semaphore key's `mod_revision` (and, for
//! each holder it drops, by that holder key still being absent), so two machines racing for the
//! last slot cannot both win: the loser's compare fails and it re-reads.

use serde::{Deserialize, Serialize};

/// Default key prefix (the group name is appended).
pub const DEFAULT_PREFIX: &str = "virga/reboot-lock/";
/// Largest semaphore value accepted.
pub const MAX_VALUE: usize = 64 * 1024;
/// Most holders in one semaphore.
pub const MAX_HOLDERS: usize = 1024;

/// Why a semaphore value or holder id is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SemaphoreError {
    /// Not locksmith's JSON, or inconsistent.
    #[error("reboot semaphore value: {0}")]
    Value(String),
    /// A holder id that cannot be a key.
    #[error("holder id {0:?}: use 1–128 characters from [A-Za-z0-9._:-]")]
    HolderId(String),
    /// `max` of 0.
    #[error("semaphore max must be at least 1")]
    ZeroMax,
}

/// locksmith's semaphore value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Semaphore {
    /// Free slots (`max` − holders).
    pub semaphore: u32,
    /// Most holders at once.
    pub max: u32,
    /// Who holds a slot.
    pub holders: Vec<String>,
}

/// Checks a holder id (machine id, instance id).
pub fn check_holder(id: &str) -> Result<(), SemaphoreError> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
    {
        return Err(SemaphoreError::HolderId(id.chars().take(60).collect()));
    }
    Ok(())
}

impl Semaphore {
    /// An empty semaphore with `max` slots.
    pub fn new(max: u32) -> Result<Semaphore, SemaphoreError> {
        if max == 0 {
            return Err(SemaphoreError::ZeroMax);
        }
        Ok(Semaphore {
            semaphore: max,
            max,
            holders: Vec::new(),
        })
    }

    /// Parses a stored value (bounded; `semaphore` must equal `max` − holders).
    pub fn parse(bytes: &[u8]) -> Result<Semaphore, SemaphoreError> {
        if bytes.len() > MAX_VALUE {
            return Err(SemaphoreError::Value(format!("{} bytes", bytes.len())));
        }
        crate::envelope::check_shape(bytes, MAX_VALUE)
            .map_err(|e| SemaphoreError::Value(e.to_string()))?;
        let s: Semaphore =
            serde_json::from_slice(bytes).map_err(|e| SemaphoreError::Value(e.to_string()))?;
        if s.holders.len() > MAX_HOLDERS {
            return Err(SemaphoreError::Value(format!(
                "{} holders",
                s.holders.len()
            )));
        }
        for (i, h) in s.holders.iter().enumerate() {
            check_holder(h)?;
            if s.holders[..i].contains(h) {
                return Err(SemaphoreError::Value(format!("holder {h} listed twice")));
            }
        }
        if s.max == 0 || u64::from(s.semaphore) + s.holders.len() as u64 != u64::from(s.max) {
            return Err(SemaphoreError::Value(format!(
                "semaphore {} + {} holders != max {}",
                s.semaphore,
                s.holders.len(),
                s.max
            )));
        }
        Ok(s)
    }

    /// The stored form.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn with_holders(&self, holders: Vec<String>) -> Semaphore {
        Semaphore {
            semaphore: self.max.saturating_sub(holders.len() as u32),
            max: self.max,
            holders,
        }
    }
}

/// An etcd key comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's `mod_revision` equals this (it has not changed since it was read).
    ModRevision(String, i64),
    /// The key does not exist (`create_revision` is 0).
    Absent(String),
}

/// An etcd write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Put a value, attached to a lease (0: none).
    Put {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
        /// Lease id, 0 for none.
        lease: i64,
    },
    /// Delete a key.
    Delete(String),
}

/// A transaction: if every compare holds, apply the ops.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Txn {
    /// Guards.
    pub compares: Vec<Compare>,
    /// Writes.
    pub ops: Vec<Op>,
}

/// The semaphore's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (e.g. `virga/reboot-lock/default/`).
    pub fn new(prefix: &str) -> Keys {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Keys { prefix }
    }

    /// The default keys for a group.
    pub fn group(group: &str) -> Keys {
        Keys::new(&format!("{DEFAULT_PREFIX}{group}/"))
    }

    /// The semaphore value's key.
    pub fn semaphore(&self) -> String {
        format!("{}semaphore", self.prefix)
    }

    /// Prefix of the holder keys.
    pub fn holder_prefix(&self) -> String {
        format!("{}holders/", self.prefix)
    }

    /// A holder's key.
    pub fn holder(&self, id: &str) -> String {
        format!("{}holders/{id}", self.prefix)
    }
}

/// What one consistent read (one etcd revision) showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The semaphore value and its `mod_revision`, if the key exists.
    pub semaphore: Option<(Semaphore, i64)>,
    /// Holder ids whose holder key exists (their lease is alive).
    pub live: Vec<String>,
}

/// What to do to take a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcquirePlan {
    /// Already a holder: nothing to write (refresh the holder key if it vanished).
    Held(Option<Txn>),
    /// Run this transaction; if its compares fail, read again.
    Try {
        /// The transaction.
        txn: Txn,
        /// Holders dropped because their lease expired.
        reclaimed: Vec<String>,
    },
    /// Every slot is held by a live holder: wait and read again.
    Full {
        /// The holders.
        holders: Vec<String>,
    },
}

/// Plans taking a slot for `id` with `lease` (its holder key dies with the lease). `max` is used
/// when the semaphore does not exist yet.
pub fn plan_acquire(
    keys: &Keys,
    seen: &Observed,
    id: &str,
    lease: i64,
    max: u32,
) -> Result<AcquirePlan, SemaphoreError> {
    check_holder(id)?;
    let holder_put = Op::Put {
        key: keys.holder(id),
        value: id.as_bytes().to_vec(),
        lease,
    };
    let Some((sem, rev)) = &seen.semaphore else {
        let sem = Semaphore::new(max)?.with_holders(vec![id.to_owned()]);
        return Ok(AcquirePlan::Try {
            txn: Txn {
                compares: vec![Compare::Absent(keys.semaphore())],
                ops: vec![
                    Op::Put {
                        key: keys.semaphore(),
                        value: sem.to_json(),
                        lease: 0,
                    },
                    holder_put,
                ],
            },
            reclaimed: Vec::new(),
        });
    };
    if sem.holders.iter().any(|h| h == id) {
        let refresh = (!seen.live.iter().any(|h| h == id)).then(|| Txn {
            compares: vec![Compare::ModRevision(keys.semaphore(), *rev)],
            ops: vec![holder_put.clone()],
        });
        return Ok(AcquirePlan::Held(refresh));
    }
    let (live, dead): (Vec<String>, Vec<String>) = sem
        .holders
        .iter()
        .cloned()
        .partition(|h| seen.live.contains(h));
    if live.len() >= sem.max as usize {
        return Ok(AcquirePlan::Full { holders: live });
    }
    let mut holders = live;
    holders.push(id.to_owned());
    let mut compares = vec![Compare::ModRevision(keys.semaphore(), *rev)];
    compares.extend(dead.iter().map(|h| Compare::Absent(keys.holder(h))));
    Ok(AcquirePlan::Try {
        txn: Txn {
            compares,
            ops: vec![
                Op::Put {
                    key: keys.semaphore(),
                    value: sem.with_holders(holders).to_json(),
                    lease: 0,
                },
                holder_put,
            ],
        },
        reclaimed: dead,
    })
}

/// Plans giving a slot back: `None` when `id` holds none.
pub fn plan_release(keys: &Keys, seen: &Observed, id: &str) -> Option<Txn> {
    let (sem, rev) = seen.semaphore.as_ref()?;
    if !sem.holders.iter().any(|h| h == id) {
        return None;
    }
    let holders = sem.holders.iter().filter(|h| *h != id).cloned().collect();
    Some(Txn {
        compares: vec![Compare::ModRevision(keys.semaphore(), *rev)],
        ops: vec![
            Op::Put {
                key: keys.semaphore(),
                value: sem.with_holders(holders).to_json(),
                lease: 0,
            },
            Op::Delete(keys.holder(id)),
        ],
    })
}

/// Plans changing `max` (locksmith's `set-max`), keeping the holders.
pub fn plan_set_max(keys: &Keys, seen: &Observed, max: u32) -> Result<Txn, SemaphoreError> {
    let new = Semaphore::new(max)?;
    Ok(match &seen.semaphore {
        None => Txn {
            compares: vec![Compare::Absent(keys.semaphore())],
            ops: vec![Op::Put {
                key: keys.semaphore(),
                value: new.to_json(),
                lease: 0,
            }],
        },
        Some((sem, rev)) => {
            let mut s = sem.clone();
            s.max = max;
            let s = s.with_holders(sem.holders.clone());
            Txn {
                compares: vec![Compare::ModRevision(keys.semaphore(), *rev)],
                ops: vec![Op::Put {
                    key: keys.semaphore(),
                    value: s.to_json(),
                    lease: 0,
                }],
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn locksmith_json() {
        let s = Semaphore::parse(br#"{"semaphore":1,"max":1,"holders":[]}"#).unwrap();
        assert_eq!(s, Semaphore::new(1).unwrap());
        assert_eq!(
            String::from_utf8(s.to_json()).unwrap(),
            r#"{"semaphore":1,"max":1,"holders":[]}"#
        );
        for bad in [
            &br#"{"semaphore":1,"max":1,"holders":["a"]}"#[..],
            br#"{"semaphore":0,"max":0,"holders":[]}"#,
            br#"{"semaphore":0,"max":2,"holders":["a","a"]}"#,
            br#"{"semaphore":0,"max":1,"holders":["a b"]}"#,
            br#"{"semaphore":-1,"max":1,"holders":[]}"#,
            b"[]",
            b"",
        ] {
            assert!(
                Semaphore::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(check_holder("i-0123 x").is_err());
        assert!(check_holder("i-0123:abc.def-x").is_ok());
    }

    /// A tiny in-memory etcd: revisions, compares, leases.
    #[derive(Default)]
    struct Store {
        rev: i64,
        kv: BTreeMap<String, (Vec<u8>, i64, i64)>, // value, mod_revision, lease
    }

    impl Store {
        fn observe(&self, keys: &Keys) -> Observed {
            Observed {
                semaphore: self
                    .kv
                    .get(&keys.semaphore())
                    .map(|(v, r, _)| (Semaphore::parse(v).unwrap(), *r)),
                live: self
                    .kv
                    .keys()
                    .filter_map(|k| k.strip_prefix(&keys.holder_prefix()).map(str::to_owned))
                    .collect(),
            }
        }

        fn txn(&mut self, t: &Txn) -> bool {
            let ok = t.compares.iter().all(|c| match c {
                Compare::ModRevision(k, r) => self.kv.get(k).map(|e| e.1) == Some(*r),
                Compare::Absent(k) => !self.kv.contains_key(k),
            });
            if ok {
                self.rev += 1;
                for op in &t.ops {
                    match op {
                        Op::Put { key, value, lease } => {
                            self.kv
                                .insert(key.clone(), (value.clone(), self.rev, *lease));
                        }
                        Op::Delete(k) => {
                            self.kv.remove(k);
                        }
                    }
                }
            }
            ok
        }

        fn expire(&mut self, lease: i64) {
            self.rev += 1;
            self.kv.retain(|_, e| e.2 != lease);
        }

        fn holders(&self, keys: &Keys) -> Vec<String> {
            self.observe(keys)
                .semaphore
                .map(|(s, _)| s.holders)
                .unwrap_or_default()
        }
    }

    fn acquire(st: &mut Store, keys: &Keys, id: &str, lease: i64, max: u32) -> bool {
        for _ in 0..5 {
            match plan_acquire(keys, &st.observe(keys), id, lease, max).unwrap() {
                AcquirePlan::Held(t) => {
                    if let Some(t) = t {
                        st.txn(&t);
                    }
                    return true;
                }
                AcquirePlan::Full { .. } => return false,
                AcquirePlan::Try { txn, .. } => {
                    if st.txn(&txn) {
                        return true;
                    }
                }
            }
        }
        false
    }

    fn release(st: &mut Store, keys: &Keys, id: &str) {
        if let Some(t) = plan_release(keys, &st.observe(keys), id) {
            assert!(st.txn(&t));
        }
    }

    #[test]
    fn max_one_second_waits_then_gets_it() {
        let keys = Keys::group("default");
        let mut st = Store::default();
        assert!(acquire(&mut st, &keys, "m1", 11, 1));
        assert!(acquire(&mut st, &keys, "m1", 11, 1), "re-entrant");
        assert!(!acquire(&mut st, &keys, "m2", 12, 1));
        release(&mut st, &keys, "m1");
        assert!(acquire(&mut st, &keys, "m2", 12, 1));
        assert_eq!(st.holders(&keys), vec!["m2"]);
    }

    #[test]
    fn a_dead_holder_is_reclaimed_after_its_lease() {
        let keys = Keys::group("g");
        let mut st = Store::default();
        assert!(acquire(&mut st, &keys, "m1", 11, 1));
        assert!(!acquire(&mut st, &keys, "m2", 12, 1));
        st.expire(11);
        match plan_acquire(&keys, &st.observe(&keys), "m2", 12, 1).unwrap() {
            AcquirePlan::Try { reclaimed, .. } => assert_eq!(reclaimed, vec!["m1"]),
            other => panic!("{other:?}"),
        }
        assert!(acquire(&mut st, &keys, "m2", 12, 1));
        assert_eq!(st.holders(&keys), vec!["m2"]);
    }

    #[test]
    fn a_stale_read_loses_the_race() {
        let keys = Keys::group("g");
        let mut st = Store::default();
        assert!(acquire(&mut st, &keys, "m0", 10, 2));
        let seen = st.observe(&keys);
        let p1 = plan_acquire(&keys, &seen, "m1", 11, 2).unwrap();
        let p2 = plan_acquire(&keys, &seen, "m2", 12, 2).unwrap();
        let (AcquirePlan::Try { txn: t1, .. }, AcquirePlan::Try { txn: t2, .. }) = (p1, p2) else {
            panic!()
        };
        assert!(st.txn(&t1));
        assert!(
            !st.txn(&t2),
            "both planned on the same revision: only one wins"
        );
        assert!(!acquire(&mut st, &keys, "m2", 12, 2));
    }

    #[test]
    fn set_max() {
        let keys = Keys::group("g");
        let mut st = Store::default();
        assert!(st.txn(&plan_set_max(&keys, &st.observe(&keys), 3).unwrap()));
        for m in ["a", "b", "c"] {
            assert!(acquire(&mut st, &keys, m, 1, 1));
        }
        assert!(!acquire(&mut st, &keys, "d", 1, 1));
        assert!(st.txn(&plan_set_max(&keys, &st.observe(&keys), 4).unwrap()));
        assert!(acquire(&mut st, &keys, "d", 1, 1));
    }

    proptest! {
        /// Random interleavings of acquire, release and lease expiry never let more than `max`
        /// live holders in.
        #[test]
        fn never_more_than_max(max in 1u32..4, ops in proptest::collection::vec((0u8..3, 0usize..6), 1..60)) {
            let keys = Keys::group("p");
            let mut st = Store::default();
            for (op, m) in ops {
                let id = format!("m{m}");
                match op {
                    0 => { acquire(&mut st, &keys, &id, m as i64 + 1, max); }
                    1 => release(&mut st, &keys, &id),
                    _ => st.expire(m as i64 + 1),
                }
                let live = st.observe(&keys).live;
                prop_assert!(live.len() <= max as usize);
                let holders = st.holders(&keys);
                prop_assert!(holders.len() <= max as usize);
                for l in &live {
                    prop_assert!(holders.contains(l));
                }
            }
        }

        #[test]
        fn parse_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Semaphore::parse(&bytes);
        }
    }
}
