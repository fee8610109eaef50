//! Release versions `DAYS.MINOR.PATCH` and release channels.
//!
//! `DAYS` counts days since virga's epoch, **2026-01-01** (UTC): the year this update system was
//! designed, so version numbers start small (a release made on 2026-12-07 is `340.0.0`) and no
//! valid release can predate it. Like Flatcar's (days since 2013-07-01), the first number says
//! when a release branched; `MINOR` bumps when a build is promoted to a more stable channel
//! (alpha → beta → stable), `PATCH` for fixes on a branch. Versions order numerically, field by
//! field. The epoch also gives the guest a floor for its clock: a system running `340.0.0`
//! knows that the date is at least 2026-12-07 (see [`crate::manifest`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::time::{DAY, Date, Timestamp};

/// virga's version epoch: `DAYS` = days since this date.
pub const EPOCH: Date = Date {
    year: 2026,
    month: 1,
    day: 1,
};

/// A release version, ordered by `(days, minor, patch)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    /// Days since [`EPOCH`] when the release branched.
    pub days: u32,
    /// Promotion count (alpha 0, beta 1, stable 2 … is a convention, not a rule).
    pub minor: u32,
    /// Fixes on the branch.
    pub patch: u32,
}

/// What is wrong with a version or channel string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Not `DAYS.MINOR.PATCH` with plain decimal numbers.
    #[error("{0:?} is not a version like 340.0.0 (DAYS.MINOR.PATCH, decimal, no leading zeros)")]
    Syntax(String),
    /// A date before the epoch has no version.
    #[error("{date} is before virga's version epoch {EPOCH}")]
    BeforeEpoch {
        /// The date asked for.
        date: Date,
    },
    /// Not a channel name.
    #[error("{0:?} is not a channel: alpha, beta, stable or pin:VERSION")]
    Channel(String),
}

impl Version {
    /// `DAYS.MINOR.PATCH`.
    pub const fn new(days: u32, minor: u32, patch: u32) -> Version {
        Version { days, minor, patch }
    }

    /// `DAYS.0.0` for the day `now` falls on.
    pub fn today(now: Timestamp) -> Result<Version, VersionError> {
        let date = now.date();
        let days = now.day_number() - EPOCH.days();
        let days = u32::try_from(days).map_err(|_| VersionError::BeforeEpoch { date })?;
        Ok(Version::new(days, 0, 0))
    }

    /// Midnight (UTC) of the day `DAYS` names: no system running this version can be living
    /// before it.
    pub fn release_day(self) -> Timestamp {
        Timestamp((EPOCH.days() + i64::from(self.days)) * DAY)
    }
}

fn number(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, VersionError> {
        let err = || VersionError::Syntax(s.chars().take(40).collect());
        let mut it = s.split('.');
        let (Some(d), Some(m), Some(p), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(err());
        };
        Ok(Version::new(
            number(d).ok_or_else(err)?,
            number(m).ok_or_else(err)?,
            number(p).ok_or_else(err)?,
        ))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.days, self.minor, self.patch)
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a machine follows: one of the three release channels, or one pinned version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Newest builds.
    Alpha,
    /// Promoted from alpha.
    Beta,
    /// Promoted from beta.
    Stable,
    /// Exactly this version (installed from `versions/VERSION.json`; going back to it from a
    /// newer version still needs `allow_downgrade`).
    Pin(Version),
}

impl Channel {
    /// The three release channels.
    pub const RELEASE: [Channel; 3] = [Channel::Alpha, Channel::Beta, Channel::Stable];

    /// Where the channel's signed manifest lives, relative to the repository root:
    /// `channels/<name>.json`, or `versions/<version>.json` for a pin.
    pub fn manifest_path(&self) -> String {
        match self {
            Channel::Pin(v) => format!("versions/{v}.json"),
            other => format!("channels/{other}.json"),
        }
    }

    /// The name a manifest carries in its `channel` field (`None` for a pin, which is not a
    /// release channel).
    pub fn release_name(&self) -> Option<&'static str> {
        match self {
            Channel::Alpha => Some("alpha"),
            Channel::Beta => Some("beta"),
            Channel::Stable => Some("stable"),
            Channel::Pin(_) => None,
        }
    }
}

impl FromStr for Channel {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, VersionError> {
        match s {
            "alpha" => Ok(Channel::Alpha),
            "beta" => Ok(Channel::Beta),
            "stable" => Ok(Channel::Stable),
            _ => match s.strip_prefix("pin:") {
                Some(v) => {
                    Ok(Channel::Pin(v.parse().map_err(|_| {
                        VersionError::Channel(s.chars().take(40).collect())
                    })?))
                }
                None => Err(VersionError::Channel(s.chars().take(40).collect())),
            },
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Channel::Pin(v) => write!(f, "pin:{v}"),
            other => f.write_str(other.release_name().unwrap_or_default()),
        }
    }
}

impl Serialize for Channel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Channel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_display_order() {
        let v: Version = "340.1.2".parse().unwrap();
        assert_eq!(v, Version::new(340, 1, 2));
        assert_eq!(v.to_string(), "340.1.2");
        assert!(Version::new(340, 0, 9) < Version::new(340, 1, 0));
        assert!(Version::new(339, 9, 9) < Version::new(340, 0, 0));
        assert!(Version::new(340, 0, 10) > Version::new(340, 0, 9));
        for bad in [
            "",
            "1",
            "1.2",
            "1.2.3.4",
            "01.2.3",
            "1.02.3",
            "1.2.-3",
            "+1.2.3",
            "1.2.3 ",
            "a.b.c",
            "1..3",
            "99999999999.0.0",
            "1.2.3-rc1",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad}");
        }
        assert_eq!("0.0.0".parse::<Version>().unwrap(), Version::default());
    }

    #[test]
    fn today_and_release_day() {
        let t: Timestamp = "2026-12-07T18:00:00Z".parse().unwrap();
        assert_eq!(Version::today(t).unwrap(), Version::new(340, 0, 0));
        assert_eq!(
            Version::new(340, 3, 1).release_day().to_string(),
            "2026-12-07T00:00:00Z"
        );
        let t: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(Version::today(t).unwrap(), Version::new(0, 0, 0));
        let err = Version::today(Timestamp(0)).unwrap_err();
        assert!(
            err.to_string()
                .contains("before virga's version epoch 2026-01-01")
        );
    }

    #[test]
    fn channels() {
        for c in ["alpha", "beta", "stable", "pin:340.0.1"] {
            assert_eq!(c.parse::<Channel>().unwrap().to_string(), c);
        }
        assert_eq!(Channel::Stable.manifest_path(), "channels/stable.json");
        assert_eq!(
            "pin:3.0.1".parse::<Channel>().unwrap().manifest_path(),
            "versions/3.0.1.json"
        );
        for bad in ["", "Stable", "lts", "pin:", "pin:1.2", "pin:../x"] {
            assert!(bad.parse::<Channel>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn version_round_trip(d: u32, m: u32, p: u32) {
            let v = Version::new(d, m, p);
            prop_assert_eq!(v.to_string().parse::<Version>().unwrap(), v);
        }

        #[test]
        fn version_order_is_numeric(a: (u32, u32, u32), b: (u32, u32, u32)) {
            let va = Version::new(a.0, a.1, a.2);
            let vb = Version::new(b.0, b.1, b.2);
            prop_assert_eq!(va.cmp(&vb), a.cmp(&b));
        }

        #[test]
        fn parse_is_total(s in ".{0,24}") {
            let _ = s.parse::<Version>();
            let _ = s.parse::<Channel>();
        }
    }
}
