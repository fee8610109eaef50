//! Admission of unauthenticated connections: OpenSSH's `MaxStartups` random early drop, per
//! source address and over all sources.
//!
//! Sans-IO: the caller passes the random numbers, so the policy is tested without a network.
//! A connection counts from `accept` until it authenticates or closes. With `start:rate:full`
//! and `n` connections of the kind already counted, a new one is always admitted while
//! `n < start`, always refused once `n >= full`, and in between refused with a probability
//! that grows linearly from `rate` % at `start` to 100 % at `full` (OpenSSH's
//! `drop_connection`). The per-source count (IPv6 by /64, like the rate limiter) keeps one
//! address from filling the server; the overall count bounds memory against many addresses.
//! Memory: one map entry per source with at least one counted connection, so at most the
//! overall `full` entries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;

use crate::ratelimit::source_key;

/// `start:rate:full`, as in OpenSSH's `MaxStartups`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxStartups {
    /// Connections admitted without any drop.
    pub start: usize,
    /// Drop probability at `start`, in percent (0–100).
    pub rate: u32,
    /// Connections at which every new one is refused.
    pub full: usize,
}

impl MaxStartups {
    /// A hard limit of `n` (no random drop before it).
    pub const fn hard(n: usize) -> MaxStartups {
        MaxStartups {
            start: n,
            rate: 100,
            full: n,
        }
    }

    /// Whether to refuse a new connection when `current` are counted; `roll` is uniform in
    /// `0..100`.
    pub fn refuses(&self, current: usize, roll: u32) -> bool {
        if current < self.start {
            return false;
        }
        if current >= self.full || self.rate >= 100 {
            return true;
        }
        // full > current >= start here, so full > start.
        let span = (self.full - self.start) as u64;
        let over = (current - self.start) as u64;
        let rate = u64::from(self.rate);
        let p = rate + (100 - rate) * over / span;
        u64::from(roll) < p
    }
}

impl std::fmt::Display for MaxStartups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.start, self.rate, self.full)
    }
}

/// A `start:rate:full` or plain `n` that does not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad MaxStartups {0:?}: want N or START:RATE:FULL with START <= FULL and RATE <= 100")]
pub struct BadMaxStartups(pub String);

impl FromStr for MaxStartups {
    type Err = BadMaxStartups;

    /// `N` (a hard limit) or `START:RATE:FULL`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadMaxStartups(s.chars().take(64).collect());
        let nums: Vec<&str> = s.split(':').collect();
        let m = match nums[..] {
            [n] => MaxStartups::hard(n.parse().map_err(|_| bad())?),
            [start, rate, full] => MaxStartups {
                start: start.parse().map_err(|_| bad())?,
                rate: rate.parse().map_err(|_| bad())?,
                full: full.parse().map_err(|_| bad())?,
            },
            _ => return Err(bad()),
        };
        if m.start > m.full || m.rate > 100 {
            return Err(bad());
        }
        Ok(m)
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its source has too many unauthenticated connections.
    PerSource {
        /// The source's count.
        current: usize,
    },
    /// The server has too many unauthenticated connections.
    Global {
        /// The overall count.
        current: usize,
    },
}

/// The counts of unauthenticated connections.
#[derive(Debug)]
pub struct Startups {
    per_source: MaxStartups,
    global: MaxStartups,
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

impl Startups {
    /// No connections yet.
    pub fn new(per_source: MaxStartups, global: MaxStartups) -> Startups {
        Startups {
            per_source,
            global,
            total: 0,
            by_source: HashMap::new(),
        }
    }

    /// Decides about a new connection from `ip` (`rolls`: two numbers uniform in `0..100`)
    /// and counts it when admitted; every admitted connection must be [`Startups::release`]d.
    pub fn admit(&mut self, ip: IpAddr, rolls: [u32; 2]) -> Result<(), Refusal> {
        let key = source_key(ip);
        let current = self.by_source.get(&key).copied().unwrap_or(0);
        if self.per_source.refuses(current, rolls[0]) {
            return Err(Refusal::PerSource { current });
        }
        if self.global.refuses(self.total, rolls[1]) {
            return Err(Refusal::Global {
                current: self.total,
            });
        }
        self.total += 1;
        *self.by_source.entry(key).or_insert(0) += 1;
        Ok(())
    }

    /// A connection from `ip` authenticated or closed.
    pub fn release(&mut self, ip: IpAddr) {
        let key = source_key(ip);
        if let Some(n) = self.by_source.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.by_source.remove(&key);
            }
            self.total = self.total.saturating_sub(1);
        }
    }

    /// Unauthenticated connections counted, overall.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Unauthenticated connections counted for `ip`'s source.
    pub fn of(&self, ip: IpAddr) -> usize {
        self.by_source.get(&source_key(ip)).copied().unwrap_or(0)
    }

    /// Sources with at least one counted connection.
    pub fn sources(&self) -> usize {
        self.by_source.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, n))
    }

    #[test]
    fn drop_probability_follows_openssh() {
        let m: MaxStartups = "10:30:100".parse().unwrap();
        let p = |n| (0..100).filter(|&r| m.refuses(n, r)).count();
        assert_eq!(p(0), 0);
        assert_eq!(p(9), 0);
        assert_eq!(p(10), 30, "rate at start");
        assert_eq!(p(55), 65, "halfway: 30 + 70/2");
        assert_eq!(p(99), 99);
        assert_eq!(p(100), 100, "full");
        assert_eq!(p(1000), 100);
        for n in 10..100 {
            assert!(p(n) <= p(n + 1), "monotonic at {n}");
        }
        let hard = MaxStartups::hard(5);
        assert!(!hard.refuses(4, 0) && hard.refuses(5, 99));
        assert_eq!("7".parse::<MaxStartups>().unwrap(), hard_7());
        for bad in ["", "1:2", "10:101:20", "20:30:10", "a:b:c", "1:2:3:4", "-1"] {
            assert!(bad.parse::<MaxStartups>().is_err(), "{bad}");
        }
        assert_eq!(m.to_string(), "10:30:100");
    }

    fn hard_7() -> MaxStartups {
        MaxStartups::hard(7)
    }

    #[test]
    fn one_source_cannot_fill_the_server() {
        let mut s = Startups::new("2:50:4".parse().unwrap(), "6:30:10".parse().unwrap());
        // Rolls of 99 are never dropped before `full`; rolls of 0 always are past `start`.
        for _ in 0..4 {
            assert!(s.admit(ip(1), [99, 99]).is_ok());
        }
        assert_eq!(
            s.admit(ip(1), [99, 99]),
            Err(Refusal::PerSource { current: 4 })
        );
        assert!(
            s.admit(ip(2), [0, 0]).is_ok(),
            "another source is unaffected"
        );
        assert_eq!(s.of(ip(1)), 4);
        assert_eq!(s.total(), 5);
        // Past the per-source start, a low roll is dropped.
        assert!(s.admit(ip(2), [99, 99]).is_ok());
        assert_eq!(
            s.admit(ip(2), [0, 99]),
            Err(Refusal::PerSource { current: 2 })
        );
        // The overall count applies across sources.
        assert!(s.admit(ip(3), [99, 99]).is_ok());
        assert_eq!(s.total(), 7);
        assert_eq!(s.admit(ip(4), [99, 0]), Err(Refusal::Global { current: 7 }));
        for _ in 0..4 {
            s.release(ip(1));
        }
        assert_eq!(s.of(ip(1)), 0);
        assert_eq!(s.sources(), 2, "empty sources are forgotten");
        assert!(s.admit(ip(1), [0, 0]).is_ok());
        // Releasing a source that was never admitted changes nothing.
        s.release(ip(9));
        assert_eq!(s.total(), 4);
    }

    #[test]
    fn ipv6_sources_are_grouped_by_prefix() {
        let mut s = Startups::new(MaxStartups::hard(1), MaxStartups::hard(100));
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        assert!(s.admit(a, [0, 0]).is_ok());
        assert!(s.admit(b, [99, 99]).is_err());
    }

    proptest::proptest! {
        /// The CLI parser is total, and what it accepts prints back the same.
        #[test]
        fn parsing_is_total_and_round_trips(s in "[0-9:]{0,12}|\\PC{0,16}") {
            if let Ok(m) = s.parse::<MaxStartups>() {
                proptest::prop_assert!(m.start <= m.full && m.rate <= 100);
                proptest::prop_assert_eq!(m.to_string().parse::<MaxStartups>(), Ok(m));
            }
        }

        #[test]
        fn counts_stay_consistent(ops in proptest::collection::vec((0u8..6, proptest::prelude::any::<bool>(), 0u32..100, 0u32..100), 0..300)) {
            let mut s = Startups::new("3:30:8".parse().unwrap(), "10:30:20".parse().unwrap());
            let mut admitted: Vec<u8> = Vec::new();
            for (src, open, r1, r2) in ops {
                if open {
                    if s.admit(ip(src), [r1, r2]).is_ok() {
                        admitted.push(src);
                    }
                } else if let Some(i) = admitted.iter().position(|&a| a == src) {
                    admitted.remove(i);
                    s.release(ip(src));
                }
                proptest::prop_assert_eq!(s.total(), admitted.len());
                proptest::prop_assert!(s.total() <= 20);
                proptest::prop_assert!(s.of(ip(src)) <= 8);
                proptest::prop_assert!(s.sources() <= s.total());
            }
        }
    }
}
