//! When to reboot into an installed update (Flatcar's strategy names), sans-IO.
//!
//! - `reboot`: right away.
//! - `window`: only inside a maintenance window, e.g. `Mon..Fri 02:00 1h`.
//! - `etcd-lock`: take a slot of the fleet's reboot semaphore in etcd first
//!   ([`crate::semaphore`]), optionally also only inside a window; the slot is released once the
//!   updated machine is healthy (locksmith's behaviour).
//! - `off`: never by itself; `virga update status` says a reboot is pending.
//!
//! **Window syntax**: `[DAYS] HH:MM DURATION`, in UTC. `DAYS` is a comma-separated list of
//! days (`Mon`) or ranges (`Mon..Fri`, wrapping allowed: `Sat..Mon`); omitted means every day.
//! `DURATION` is `30m`, `1h`, `1h30m`, up to `7d`. A window opens on each listed day at `HH:MM`
//! and stays open for `DURATION`, so it may run past midnight (`Fri 23:00 3h` ends Saturday
//! 02:00).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::time::{DAY, Timestamp, Weekday, parse_duration};

/// A maintenance window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Days it opens on (Monday first).
    pub days: [bool; 7],
    /// Opening time, seconds after midnight UTC.
    pub start: i64,
    /// How long it stays open, seconds.
    pub length: i64,
}

/// A window string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a reboot window like \"Mon..Fri 02:00 1h\" ([DAYS] HH:MM DURATION, UTC)")]
pub struct WindowError(pub String);

impl FromStr for Window {
    type Err = WindowError;

    fn from_str(s: &str) -> Result<Self, WindowError> {
        let err = || WindowError(s.chars().take(60).collect());
        let parts: Vec<&str> = s.split_whitespace().collect();
        let (days_s, time_s, len_s) = match parts.as_slice() {
            [t, l] => (None, *t, *l),
            [d, t, l] => (Some(*d), *t, *l),
            _ => return Err(err()),
        };
        let mut days = [days_s.is_none(); 7];
        if let Some(d) = days_s {
            for item in d.split(',') {
                match item.split_once("..") {
                    Some((a, b)) => {
                        let (a, b) = (
                            Weekday::parse(a).ok_or_else(err)?.index(),
                            Weekday::parse(b).ok_or_else(err)?.index(),
                        );
                        let mut i = a;
                        loop {
                            days[i] = true;
                            if i == b {
                                break;
                            }
                            i = (i + 1) % 7;
                        }
                    }
                    None => days[Weekday::parse(item).ok_or_else(err)?.index()] = true,
                }
            }
        }
        let (h, m) = time_s.split_once(':').ok_or_else(err)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(err());
        }
        let h: i64 = h.parse().map_err(|_| err())?;
        let m: i64 = m.parse().map_err(|_| err())?;
        if !(0..24).contains(&h) || !(0..60).contains(&m) {
            return Err(err());
        }
        let length = parse_duration(len_s, 7 * DAY).ok_or_else(err)?;
        Ok(Window {
            days,
            start: h * 3600 + m * 60,
            length,
        })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.days.iter().all(|&d| d) {
            let names: Vec<&str> = Weekday::ALL
                .iter()
                .filter(|d| self.days[d.index()])
                .map(|d| d.name())
                .collect();
            write!(f, "{} ", names.join(","))?;
        }
        write!(f, "{:02}:{:02} ", self.start / 3600, self.start / 60 % 60)?;
        let (d, h, m, s) = (
            self.length / DAY,
            self.length % DAY / 3600,
            self.length % 3600 / 60,
            self.length % 60,
        );
        for (n, u) in [(d, "d"), (h, "h"), (m, "m"), (s, "s")] {
            if n > 0 {
                write!(f, "{n}{u}")?;
            }
        }
        Ok(())
    }
}

impl Window {
    /// Openings that could cover `t`: the last 8 days' and the next 8 days'.
    fn openings(&self, t: Timestamp) -> impl Iterator<Item = Timestamp> + '_ {
        let today = t.day_number();
        (-8i64..=8).filter_map(move |d| {
            let day = today + d;
            self.days[Weekday::of_day(day).index()].then_some(Timestamp(day * DAY + self.start))
        })
    }

    /// Is the window open at `t`?
    pub fn contains(&self, t: Timestamp) -> bool {
        self.openings(t).any(|o| o <= t && t < o.plus(self.length))
    }

    /// `t` if the window is open then, else when it next opens (`None` for a window without
    /// days).
    pub fn next_open(&self, t: Timestamp) -> Option<Timestamp> {
        if self.contains(t) {
            return Some(t);
        }
        self.openings(t).find(|&o| o > t)
    }
}

/// How the agent reboots into an installed update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Right away.
    Reboot,
    /// Inside the window.
    Window(Window),
    /// After taking a slot of the etcd semaphore (optionally only inside a window).
    EtcdLock {
        /// Only inside this window.
        window: Option<Window>,
    },
    /// Never by itself.
    Off,
}

impl Strategy {
    /// The strategy's name: `reboot`, `window`, `etcd-lock`, `off`.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Reboot => "reboot",
            Strategy::Window(_) => "window",
            Strategy::EtcdLock { .. } => "etcd-lock",
            Strategy::Off => "off",
        }
    }
}

/// What to do now that an update is armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum RebootAction {
    /// Reboot now.
    Now,
    /// Check again at this time (the window opens).
    WaitUntil {
        /// When.
        at: Timestamp,
    },
    /// Take a semaphore slot, then reboot (re-check the window after a long wait).
    AcquireLock,
    /// Do not reboot; report that a reboot is pending.
    Never,
}

/// The action for `strategy` at `now`.
pub fn decide(strategy: &Strategy, now: Timestamp) -> RebootAction {
    let in_window = |w: &Window| match w.next_open(now) {
        Some(t) if t == now => None,
        Some(t) => Some(RebootAction::WaitUntil { at: t }),
        None => Some(RebootAction::Never),
    };
    match strategy {
        Strategy::Reboot => RebootAction::Now,
        Strategy::Off => RebootAction::Never,
        Strategy::Window(w) => in_window(w).unwrap_or(RebootAction::Now),
        Strategy::EtcdLock { window } => window
            .as_ref()
            .and_then(in_window)
            .unwrap_or(RebootAction::AcquireLock),
    }
}

impl Serialize for Window {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop_assert, prop_assert_eq, proptest};

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn window_syntax() {
        let w: Window = "Mon..Fri 02:00 1h".parse().unwrap();
        assert_eq!(w.days, [true, true, true, true, true, false, false]);
        assert_eq!((w.start, w.length), (7200, 3600));
        assert_eq!(w.to_string(), "Mon,Tue,Wed,Thu,Fri 02:00 1h");
        let w: Window = "Sat..Mon 23:30 1h30m".parse().unwrap();
        assert_eq!(w.days, [true, false, false, false, false, true, true]);
        let w: Window = "04:00 30m".parse().unwrap();
        assert!(w.days.iter().all(|&d| d));
        assert_eq!(w.to_string(), "04:00 30m");
        for bad in [
            "",
            "Mon",
            "Mon 02:00",
            "Mon 2:00 1h",
            "Mon 24:00 1h",
            "Mon 02:60 1h",
            "Funday 02:00 1h",
            "Mon..Xyz 02:00 1h",
            "Mon 02:00 8d",
            "Mon 02:00 0m",
            "Mon 02:00 1h extra",
        ] {
            assert!(bad.parse::<Window>().is_err(), "{bad}");
        }
    }

    #[test]
    fn window_membership_and_next() {
        // 2026-12-07 is a Monday.
        let w: Window = "Mon..Fri 02:00 1h".parse().unwrap();
        assert!(w.contains(t("2026-12-07T02:00:00Z")));
        assert!(w.contains(t("2026-12-07T02:59:59Z")));
        assert!(!w.contains(t("2026-12-07T03:00:00Z")));
        assert!(!w.contains(t("2026-12-12T02:30:00Z")), "Saturday");
        assert_eq!(
            w.next_open(t("2026-12-11T05:00:00Z")),
            Some(t("2026-12-14T02:00:00Z")),
            "Friday after the window: Monday"
        );
        // Past midnight.
        let w: Window = "Fri 23:00 3h".parse().unwrap();
        assert!(w.contains(t("2026-12-12T01:59:00Z")), "Saturday 01:59");
        assert!(!w.contains(t("2026-12-12T02:00:00Z")));
    }

    #[test]
    fn decisions() {
        let now = t("2026-12-07T12:00:00Z");
        assert_eq!(decide(&Strategy::Reboot, now), RebootAction::Now);
        assert_eq!(decide(&Strategy::Off, now), RebootAction::Never);
        let w: Window = "Mon..Fri 02:00 1h".parse().unwrap();
        assert_eq!(
            decide(&Strategy::Window(w), now),
            RebootAction::WaitUntil {
                at: t("2026-12-08T02:00:00Z")
            }
        );
        assert_eq!(
            decide(&Strategy::Window(w), t("2026-12-08T02:10:00Z")),
            RebootAction::Now
        );
        assert_eq!(
            decide(&Strategy::EtcdLock { window: None }, now),
            RebootAction::AcquireLock
        );
        assert_eq!(
            decide(&Strategy::EtcdLock { window: Some(w) }, now),
            RebootAction::WaitUntil {
                at: t("2026-12-08T02:00:00Z")
            }
        );
        let never = Window {
            days: [false; 7],
            start: 0,
            length: 60,
        };
        assert_eq!(decide(&Strategy::Window(never), now), RebootAction::Never);
    }

    proptest! {
        #[test]
        fn next_open_is_open_and_soonest(secs in 1_700_000_000i64..1_900_000_000, step in 60i64..7200) {
            let w: Window = "Tue,Thu 03:15 45m".parse().unwrap();
            let now = Timestamp(secs);
            let next = w.next_open(now).unwrap();
            prop_assert!(next >= now);
            prop_assert!(w.contains(next));
            let mut probe = now;
            while probe < next {
                prop_assert!(!w.contains(probe));
                probe = probe.plus(step);
            }
        }

        #[test]
        fn window_parse_is_total(s in ".{0,40}") {
            if let Ok(w) = s.parse::<Window>() {
                prop_assert_eq!(w.to_string().parse::<Window>().unwrap(), w);
            }
        }
    }
}
