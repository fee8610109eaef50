//! UTC time without a time-zone database: seconds since 1970, civil dates, weekdays and the
//! one timestamp form manifests use, RFC 3339 in UTC with whole seconds
//! (`2026-12-07T18:00:00Z`).
//!
//! Everything here is plain arithmetic on `i64` (days from civil dates after Howard Hinnant's
//! published algorithm), so the guest needs no time crate and the policy code takes "now" as an
//! input.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Seconds in a day.
pub const DAY: i64 = 86_400;

/// A point in time: whole seconds since 1970-01-01T00:00:00Z (leap seconds ignored, as Unix
/// time does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

/// A calendar date (proleptic Gregorian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Year, e.g. 2026.
    pub year: i32,
    /// Month 1–12.
    pub month: u8,
    /// Day of the month 1–31.
    pub day: u8,
}

/// A timestamp that is not `YYYY-MM-DDTHH:MM:SSZ` with valid fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a UTC timestamp like 2026-12-07T18:00:00Z")]
pub struct TimestampError(pub String);

/// Days since 1970-01-01 of a civil date (negative before it).
pub fn days_from_civil(year: i32, month: u8, day: u8) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number (days since 1970-01-01).
pub fn civil_from_days(days: i64) -> Date {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Date {
        year: year.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
        month,
        day,
    }
}

fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            if leap { 29 } else { 28 }
        }
    }
}

impl Date {
    /// A valid date, or `None`.
    pub fn new(year: i32, month: u8, day: u8) -> Option<Date> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(Date { year, month, day })
    }

    /// Days since 1970-01-01.
    pub fn days(self) -> i64 {
        days_from_civil(self.year, self.month, self.day)
    }

    /// Midnight UTC at the start of this date.
    pub fn midnight(self) -> Timestamp {
        Timestamp(self.days().saturating_mul(DAY))
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Weekday {
    /// Monday first.
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    /// 0 for Monday … 6 for Sunday.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The weekday of a day number (1970-01-01 was a Thursday).
    pub fn of_day(days: i64) -> Weekday {
        Weekday::ALL[(days + 3).rem_euclid(7) as usize]
    }

    /// Three-letter English name (`Mon`).
    pub fn name(self) -> &'static str {
        ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][self.index()]
    }

    /// Parses a three-letter name, case-insensitively.
    pub fn parse(s: &str) -> Option<Weekday> {
        Weekday::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(s))
    }
}

impl Timestamp {
    /// Days since 1970-01-01 (floor).
    pub fn day_number(self) -> i64 {
        self.0.div_euclid(DAY)
    }

    /// Seconds since midnight UTC.
    pub fn second_of_day(self) -> i64 {
        self.0.rem_euclid(DAY)
    }

    /// The civil date (UTC).
    pub fn date(self) -> Date {
        civil_from_days(self.day_number())
    }

    /// `self + secs`, saturating.
    pub fn plus(self, secs: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(secs))
    }

    /// The current time from the system clock (whatever it says: callers that make security
    /// decisions check it against a floor, see [`crate::manifest`]).
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Timestamp(d)
    }
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |acc, &b| {
        acc.checked_mul(10)?.checked_add(u32::from(b - b'0'))
    })
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    /// Exactly `YYYY-MM-DDTHH:MM:SSZ`, years 1970–9999.
    fn from_str(s: &str) -> Result<Self, TimestampError> {
        let err = || TimestampError(s.chars().take(40).collect());
        let b = s.as_bytes();
        if b.len() != 20
            || b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b'T'
            || b[13] != b':'
            || b[16] != b':'
            || b[19] != b'Z'
        {
            return Err(err());
        }
        let year = digits(&b[0..4]).ok_or_else(err)?;
        let month = digits(&b[5..7]).ok_or_else(err)?;
        let day = digits(&b[8..10]).ok_or_else(err)?;
        let hour = digits(&b[11..13]).ok_or_else(err)?;
        let minute = digits(&b[14..16]).ok_or_else(err)?;
        let second = digits(&b[17..19]).ok_or_else(err)?;
        if year < 1970 || hour > 23 || minute > 59 || second > 59 {
            return Err(err());
        }
        let date = Date::new(year as i32, month as u8, day as u8).ok_or_else(err)?;
        Ok(Timestamp(
            date.days() * DAY + i64::from(hour * 3600 + minute * 60 + second),
        ))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.second_of_day();
        write!(
            f,
            "{}T{:02}:{:02}:{:02}Z",
            self.date(),
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a duration like `90s`, `30m`, `1h`, `1h30m`, `2d` (units d, h, m, s, each at most
/// once, largest first) into seconds. At most `max` seconds.
pub fn parse_duration(s: &str, max: i64) -> Option<i64> {
    let mut rest = s.trim();
    if rest.is_empty() || rest.len() > 32 {
        return None;
    }
    let mut total: i64 = 0;
    let mut last_unit = 5;
    while !rest.is_empty() {
        let n_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        if n_len == 0 || n_len > 9 {
            return None;
        }
        let n: i64 = rest[..n_len].parse().ok()?;
        let unit = rest[n_len..].chars().next()?;
        let (rank, mult) = match unit {
            'd' => (4, DAY),
            'h' => (3, 3600),
            'm' => (2, 60),
            's' => (1, 1),
            _ => return None,
        };
        if rank >= last_unit {
            return None;
        }
        last_unit = rank;
        total = total.checked_add(n.checked_mul(mult)?)?;
        rest = &rest[n_len + 1..];
    }
    (total > 0 && total <= max).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2026, 1, 1), 20_454);
        assert_eq!(civil_from_days(20_454), Date::new(2026, 1, 1).unwrap());
        assert_eq!(Weekday::of_day(0), Weekday::Thu);
        assert_eq!(Weekday::of_day(days_from_civil(2026, 12, 7)), Weekday::Mon);
        assert_eq!(civil_from_days(-1), Date::new(1969, 12, 31).unwrap());
        assert!(Date::new(2025, 2, 29).is_none());
        assert!(Date::new(2024, 2, 29).is_some());
    }

    #[test]
    fn timestamps_parse_strictly() {
        let t: Timestamp = "2026-12-07T18:00:05Z".parse().unwrap();
        assert_eq!(t.to_string(), "2026-12-07T18:00:05Z");
        assert_eq!(t.date().to_string(), "2026-12-07");
        for bad in [
            "",
            "2026-12-07",
            "2026-12-07T18:00:05",
            "2026-12-07T18:00:05+00:00",
            "2026-13-07T18:00:05Z",
            "2026-02-30T18:00:05Z",
            "2026-12-07T24:00:00Z",
            "1969-12-31T23:59:59Z",
            "2026-12-07t18:00:05Z",
            "+026-12-07T18:00:05Z",
            "2026-12-07T18:00:5.Z",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad}");
        }
        let j = serde_json::to_string(&t).unwrap();
        assert_eq!(j, "\"2026-12-07T18:00:05Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&j).unwrap(), t);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h", DAY), Some(3600));
        assert_eq!(parse_duration("1h30m", DAY), Some(5400));
        assert_eq!(parse_duration("2d", 7 * DAY), Some(2 * DAY));
        assert_eq!(parse_duration("2d", DAY), None);
        for bad in ["", "h", "1", "30m1h", "1h1h", "0m", "1x", "-1h", "1 h"] {
            assert_eq!(parse_duration(bad, DAY), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn days_round_trip(d in -1_000_000i64..3_000_000) {
            let c = civil_from_days(d);
            prop_assert_eq!(c.days(), d);
            prop_assert!(Date::new(c.year, c.month, c.day).is_some());
        }

        #[test]
        fn timestamp_round_trip(t in 0i64..253_402_300_799) {
            let ts = Timestamp(t);
            prop_assert_eq!(ts.to_string().parse::<Timestamp>().unwrap(), ts);
        }

        #[test]
        fn timestamp_parse_is_total(s in ".{0,30}") {
            let _ = s.parse::<Timestamp>();
            let _ = parse_duration(&s, DAY);
        }
    }
}
