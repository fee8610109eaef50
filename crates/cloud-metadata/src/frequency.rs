//! Run frequencies and the semaphore (marker file) policy, sans-IO.
//!
//! The guest keeps one empty marker file per thing that ran, in [`semaphore_dir`]; this module
//! decides, from which markers exist, whether to run and which marker to write afterwards
//! (written whatever the exit status, like CirrOS `cirros-per`). Marker names:
//! `instance.<instance-id>.<name>`, `boot.<boot-id>.<name>`, `once.<name>` — ids are escaped so
//! every marker is a single safe file name.

use std::fmt;
use std::str::FromStr;

use crate::MetadataError;

/// Marker directory on a persistent root filesystem.
pub const PERSISTENT_SEM_DIR: &str = "/var/lib/virga/sem";
/// Marker directory when the root is not persistent (RAM root): markers last one boot.
pub const VOLATILE_SEM_DIR: &str = "/run/virga/sem";
/// Where the guest records the last instance id seen (next to the markers).
pub const PERSISTENT_INSTANCE_ID_FILE: &str = "/var/lib/virga/instance-id";

/// The marker directory to use.
pub fn semaphore_dir(persistent_root: bool) -> &'static str {
    if persistent_root {
        PERSISTENT_SEM_DIR
    } else {
        VOLATILE_SEM_DIR
    }
}

/// How often something runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Frequency {
    /// Every time it is asked (`always`).
    Always,
    /// Once per boot (`per-boot`, CirrOS `boot`).
    PerBoot,
    /// Once per instance id (`per-instance`, CirrOS `instance`).
    PerInstance,
    /// Once ever on this disk (`per-once`, `once`).
    PerOnce,
}

impl Frequency {
    /// cloud-init's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Frequency::Always => "always",
            Frequency::PerBoot => "per-boot",
            Frequency::PerInstance => "per-instance",
            Frequency::PerOnce => "per-once",
        }
    }
}

impl fmt::Display for Frequency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Frequency {
    type Err = MetadataError;

    /// Accepts cloud-init (`per-boot`, `per-instance`, `per-once`, `always`, `once`) and
    /// CirrOS (`always`, `boot`, `instance`, `once`) names, with `_` for `-`.
    fn from_str(s: &str) -> Result<Self, MetadataError> {
        Ok(
            match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
                "always" => Frequency::Always,
                "per-boot" | "boot" => Frequency::PerBoot,
                "per-instance" | "instance" => Frequency::PerInstance,
                "per-once" | "once" => Frequency::PerOnce,
                _ => return Err(MetadataError::UnknownFrequency(s.to_owned())),
            },
        )
    }
}

/// What identifies "this instance" and "this boot".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunContext<'a> {
    /// Current instance id.
    pub instance_id: &'a str,
    /// Current boot id (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: &'a str,
}

/// The decision for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run, then create `marker` (if any) in the semaphore directory.
    Run {
        /// Marker to create after running; `None` for [`Frequency::Always`].
        marker: Option<String>,
    },
    /// Skip: `marker` exists.
    Skip {
        /// The marker found.
        marker: String,
    },
}

/// The marker name for `name` at `freq`; `None` for [`Frequency::Always`].
/// `name` may use `[A-Za-z0-9._-]` (1–100 bytes).
pub fn marker_name(
    freq: Frequency,
    name: &str,
    ctx: &RunContext<'_>,
) -> Result<Option<String>, MetadataError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(MetadataError::InvalidSemaphoreName(name.to_owned()));
    }
    Ok(match freq {
        Frequency::Always => None,
        Frequency::PerBoot => Some(format!("boot.{}.{name}", escape_id(ctx.boot_id))),
        Frequency::PerInstance => Some(format!("instance.{}.{name}", escape_id(ctx.instance_id))),
        Frequency::PerOnce => Some(format!("once.{name}")),
    })
}

/// Decides whether to run `name` at `freq`; `exists` tells whether a marker file exists.
pub fn decide(
    freq: Frequency,
    name: &str,
    ctx: &RunContext<'_>,
    exists: impl Fn(&str) -> bool,
) -> Result<Decision, MetadataError> {
    Ok(match marker_name(freq, name, ctx)? {
        None => Decision::Run { marker: None },
        Some(m) if exists(&m) => Decision::Skip { marker: m },
        Some(m) => Decision::Run { marker: Some(m) },
    })
}

/// Markers among `existing` that can never match again in this context: per-boot markers of
/// other boots and per-instance markers of other instance ids. The guest may delete them.
pub fn stale_markers<'a>(existing: &'a [String], ctx: &RunContext<'_>) -> Vec<&'a str> {
    let boot = format!("boot.{}.", escape_id(ctx.boot_id));
    let inst = format!("instance.{}.", escape_id(ctx.instance_id));
    existing
        .iter()
        .map(String::as_str)
        .filter(|m| {
            (m.starts_with("boot.") && !m.starts_with(&boot))
                || (m.starts_with("instance.") && !m.starts_with(&inst))
        })
        .collect()
}

/// Whether the instance changed since the last boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceChange {
    /// No instance id was recorded: first boot of this disk.
    FirstBoot,
    /// Same instance as last boot.
    Same,
    /// A new instance (the disk was cloned or re-attached): per-instance work runs again.
    Changed {
        /// The instance id recorded before.
        previous: String,
    },
}

/// Compares the recorded instance id (contents of [`PERSISTENT_INSTANCE_ID_FILE`], trimmed)
/// with the current one.
pub fn instance_change(previous: Option<&str>, current: &str) -> InstanceChange {
    match previous.map(str::trim).filter(|p| !p.is_empty()) {
        None => InstanceChange::FirstBoot,
        Some(p) if p == current.trim() => InstanceChange::Same,
        Some(p) => InstanceChange::Changed {
            previous: p.to_owned(),
        },
    }
}

/// Escapes an id into a file-name-safe string: `[A-Za-z0-9_-]` kept, everything else
/// (including `.`, which separates marker fields) as `%XX`; ids whose escape exceeds 120 bytes
/// are cut and suffixed with `~` and a 64-bit FNV-1a hash of the whole id.
pub fn escape_id(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    if out.len() > 120 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in id.bytes() {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        out.truncate(100);
        out.push_str(&format!("~{hash:016x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const CTX: RunContext<'static> = RunContext {
        instance_id: "i-123",
        boot_id: "b1",
    };

    #[test]
    fn names() {
        for (s, f) in [
            ("per-boot", Frequency::PerBoot),
            ("boot", Frequency::PerBoot),
            ("PER_INSTANCE", Frequency::PerInstance),
            ("instance", Frequency::PerInstance),
            ("once", Frequency::PerOnce),
            ("per-once", Frequency::PerOnce),
            ("always", Frequency::Always),
        ] {
            assert_eq!(s.parse::<Frequency>().unwrap(), f);
            assert_eq!(f.as_str().parse::<Frequency>().unwrap(), f);
        }
        assert!("weekly".parse::<Frequency>().is_err());
    }

    #[test]
    fn run_then_skip() {
        let mut markers = BTreeSet::new();
        for freq in [
            Frequency::PerBoot,
            Frequency::PerInstance,
            Frequency::PerOnce,
        ] {
            let d = decide(freq, "userdata", &CTX, |m| markers.contains(m)).unwrap();
            let Decision::Run { marker: Some(m) } = d else {
                panic!("{d:?}")
            };
            markers.insert(m.clone());
            assert_eq!(
                decide(freq, "userdata", &CTX, |m| markers.contains(m)).unwrap(),
                Decision::Skip { marker: m }
            );
        }
        assert_eq!(
            decide(Frequency::Always, "x", &CTX, |_| true).unwrap(),
            Decision::Run { marker: None }
        );
        // A new boot reruns per-boot only; a new instance reruns per-instance too.
        let boot2 = RunContext {
            boot_id: "b2",
            ..CTX
        };
        let runs = |ctx: &RunContext<'_>| {
            [
                Frequency::PerBoot,
                Frequency::PerInstance,
                Frequency::PerOnce,
            ]
            .map(|f| {
                matches!(
                    decide(f, "userdata", ctx, |m| markers.contains(m)).unwrap(),
                    Decision::Run { .. }
                )
            })
        };
        assert_eq!(runs(&boot2), [true, false, false]);
        assert_eq!(
            runs(&RunContext {
                instance_id: "i-456",
                boot_id: "b2"
            }),
            [true, true, false]
        );
        let all: Vec<String> = markers.iter().cloned().collect();
        assert_eq!(
            stale_markers(
                &all,
                &RunContext {
                    instance_id: "i-456",
                    boot_id: "b2"
                }
            )
            .len(),
            2
        );
        assert!(stale_markers(&all, &CTX).is_empty());
    }

    #[test]
    fn invalid_names_and_ids() {
        for bad in ["", "a/b", "..", "a b", &"x".repeat(101)] {
            assert!(
                decide(Frequency::PerOnce, bad, &CTX, |_| false).is_err(),
                "{bad:?}"
            );
        }
        let ctx = RunContext {
            instance_id: "../../etc/x",
            boot_id: "b",
        };
        let m = marker_name(Frequency::PerInstance, "n", &ctx)
            .unwrap()
            .unwrap();
        assert!(!m.contains('/'));
        assert_eq!(m, "instance.%2E%2E%2F%2E%2E%2Fetc%2Fx.n");
        let long = "é".repeat(100);
        assert!(escape_id(&long).len() <= 120);
        assert_ne!(escape_id(&long), escape_id(&"é".repeat(101)));
    }

    #[test]
    fn instance_changes() {
        assert_eq!(instance_change(None, "a"), InstanceChange::FirstBoot);
        assert_eq!(instance_change(Some(" \n"), "a"), InstanceChange::FirstBoot);
        assert_eq!(instance_change(Some("a\n"), "a"), InstanceChange::Same);
        assert_eq!(
            instance_change(Some("a"), "b"),
            InstanceChange::Changed {
                previous: "a".into()
            }
        );
        assert_eq!(semaphore_dir(true), PERSISTENT_SEM_DIR);
        assert_eq!(semaphore_dir(false), VOLATILE_SEM_DIR);
    }

    proptest! {
        #[test]
        fn escaped_ids_are_file_names(id in "\\PC{0,200}") {
            let e = escape_id(&id);
            prop_assert!(!e.is_empty() && e.len() <= 120);
            prop_assert!(e.bytes().all(|b| b.is_ascii_alphanumeric() || b"%_-~".contains(&b)));
        }

        #[test]
        fn escape_is_injective_for_short_ids(a in "[ -~]{0,30}", b in "[ -~]{0,30}") {
            prop_assume!(a != b);
            prop_assert_ne!(escape_id(&a), escape_id(&b));
        }
    }
}
