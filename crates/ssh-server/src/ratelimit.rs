//! Per-source authentication-failure rate limit: one token bucket per client address.
//!
//! Sans-IO: the caller passes the time (milliseconds on any monotonic clock), so the policy is
//! tested with a fake clock. Every failed authentication attempt (a refused key, a password or
//! keyboard-interactive attempt) takes one token; a source whose bucket is empty is refused at
//! `accept` and disconnected at its next failure. Buckets refill continuously at
//! `per_minute` tokens a minute up to `burst`. IPv6 clients are grouped by /64 (one host
//! usually owns a whole /64), IPv4-mapped IPv6 addresses count as IPv4. Memory is bounded by
//! `max_sources`: when full, sources that have refilled completely are forgotten first, then the
//! least-limited one.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

/// Rate-limit parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthRateLimit {
    /// Failures a source may make in a burst (bucket size). 0 disables the limit.
    pub burst: u32,
    /// Failures a source regains per minute.
    pub per_minute: u32,
    /// Most sources tracked at once.
    pub max_sources: usize,
}

impl Default for AuthRateLimit {
    fn default() -> Self {
        AuthRateLimit {
            burst: 10,
            per_minute: 10,
            max_sources: 4096,
        }
    }
}

/// Units per token: one minute in milliseconds, so `per_minute` units accrue per millisecond.
const UNIT: u64 = 60_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens × [`UNIT`].
    units: u64,
    /// Time of the last update, ms.
    updated_ms: u64,
}

/// The token buckets.
#[derive(Debug)]
pub struct RateLimiter {
    limit: AuthRateLimit,
    buckets: HashMap<IpAddr, Bucket>,
}

/// The address a bucket belongs to: IPv4 as is, IPv6 by /64.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

impl RateLimiter {
    /// An empty limiter.
    pub fn new(limit: AuthRateLimit) -> Self {
        RateLimiter {
            limit,
            buckets: HashMap::new(),
        }
    }

    fn full(&self) -> u64 {
        u64::from(self.limit.burst) * UNIT
    }

    /// Brings a bucket up to `now_ms`. Exact: one millisecond adds `per_minute` units and a
    /// token is 60 000 units, so no refill is lost to rounding however often this runs.
    fn refill(limit: &AuthRateLimit, b: &mut Bucket, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(b.updated_ms);
        let gained = elapsed.saturating_mul(u64::from(limit.per_minute));
        b.units = b
            .units
            .saturating_add(gained)
            .min(u64::from(limit.burst) * UNIT);
        b.updated_ms = b.updated_ms.max(now_ms);
    }

    /// Whether `ip` may (still) try to authenticate at `now_ms`.
    pub fn allowed(&mut self, ip: IpAddr, now_ms: u64) -> bool {
        if self.limit.burst == 0 {
            return true;
        }
        let limit = self.limit;
        match self.buckets.get_mut(&source_key(ip)) {
            None => true,
            Some(b) => {
                Self::refill(&limit, b, now_ms);
                b.units >= UNIT
            }
        }
    }

    /// Records one failed attempt by `ip` at `now_ms`; returns whether `ip` may go on trying.
    pub fn record_failure(&mut self, ip: IpAddr, now_ms: u64) -> bool {
        if self.limit.burst == 0 {
            return true;
        }
        let key = source_key(ip);
        if !self.buckets.contains_key(&key) {
            self.make_room(now_ms);
        }
        let limit = self.limit;
        let full = self.full();
        let b = self.buckets.entry(key).or_insert(Bucket {
            units: full,
            updated_ms: now_ms,
        });
        Self::refill(&limit, b, now_ms);
        b.units = b.units.saturating_sub(UNIT);
        b.units >= UNIT
    }

    /// Number of sources tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    fn make_room(&mut self, now_ms: u64) {
        if self.buckets.len() < self.limit.max_sources.max(1) {
            return;
        }
        let limit = self.limit;
        let full = self.full();
        self.buckets.retain(|_, b| {
            Self::refill(&limit, b, now_ms);
            b.units < full
        });
        while self.buckets.len() >= self.limit.max_sources.max(1) {
            let Some(victim) = self
                .buckets
                .iter()
                .max_by_key(|(_, b)| b.units)
                .map(|(k, _)| *k)
            else {
                break;
            };
            self.buckets.remove(&victim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, n))
    }

    fn limiter(burst: u32, per_minute: u32) -> RateLimiter {
        RateLimiter::new(AuthRateLimit {
            burst,
            per_minute,
            max_sources: 16,
        })
    }

    #[test]
    fn burst_then_block() {
        let mut l = limiter(3, 6);
        assert!(l.allowed(ip(1), 0));
        assert!(l.record_failure(ip(1), 0));
        assert!(l.record_failure(ip(1), 0));
        assert!(
            !l.record_failure(ip(1), 0),
            "third failure empties a bucket of 3"
        );
        assert!(!l.allowed(ip(1), 0));
        assert!(l.allowed(ip(2), 0), "other sources are not affected");
    }

    #[test]
    fn refills_over_time() {
        let mut l = limiter(3, 6); // one token per 10 s
        for _ in 0..3 {
            l.record_failure(ip(1), 1_000);
        }
        assert!(!l.allowed(ip(1), 1_000));
        assert!(!l.allowed(ip(1), 10_999));
        assert!(l.allowed(ip(1), 11_000), "one token back after 10 s");
        // Frequent polling does not lose refill to rounding.
        let mut l2 = limiter(1, 7);
        l2.record_failure(ip(1), 0);
        for t in 0..8_571 {
            assert!(!l2.allowed(ip(1), t), "at {t}");
        }
        assert!(l2.allowed(ip(1), 8_572), "1 token at 7/min takes 8571.4 ms");
        assert!(!l.record_failure(ip(1), 11_000));
        // A long pause refills to the burst, not beyond.
        assert!(l.allowed(ip(1), 1_000_000));
        assert!(l.record_failure(ip(1), 1_000_000));
        assert!(l.record_failure(ip(1), 1_000_000));
        assert!(!l.record_failure(ip(1), 1_000_000));
    }

    #[test]
    fn clock_going_backwards_does_not_refill() {
        let mut l = limiter(2, 60);
        l.record_failure(ip(1), 50_000);
        l.record_failure(ip(1), 50_000);
        assert!(!l.allowed(ip(1), 10_000));
        assert!(!l.allowed(ip(1), 50_500));
        assert!(l.allowed(ip(1), 51_000));
    }

    #[test]
    fn zero_burst_disables() {
        let mut l = limiter(0, 0);
        for _ in 0..100 {
            assert!(l.record_failure(ip(1), 0));
        }
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn ipv6_grouped_by_prefix() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        assert_eq!(source_key(mapped), ip(1));
        let mut l = limiter(1, 1);
        assert!(!l.record_failure(a, 0));
        assert!(!l.allowed(b, 0));
        assert!(l.allowed(c, 0));
    }

    #[test]
    fn memory_is_bounded() {
        let mut l = limiter(5, 1);
        for n in 0..=255u8 {
            l.record_failure(ip(n), 0);
            assert!(l.tracked() <= 16);
        }
        // A blocked source survives eviction of less-limited ones.
        let mut l = limiter(2, 1);
        l.record_failure(ip(0), 0);
        l.record_failure(ip(0), 0);
        for n in 1..=100u8 {
            l.record_failure(ip(n), 0);
        }
        assert!(!l.allowed(ip(0), 0));
    }
}
