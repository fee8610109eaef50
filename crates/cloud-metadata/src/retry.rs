//! Sans-IO retry policy: capped exponential backoff with caller-supplied jitter and an overall
//! deadline.
//!
//! The driver keeps the clock and the randomness:
//!
//! ```
//! use std::time::Duration;
//! use cloud_metadata::retry::{Backoff, Retry};
//! let policy = Backoff::default();
//! let mut state = policy.start(Duration::ZERO); // now, from a monotonic clock
//! let now = Duration::from_millis(300);          // an attempt failed at this time
//! match state.next(&policy, now, 0x8000_0000) {  // jitter: any random u32
//!     Retry::After(delay) => assert!(delay <= policy.max_delay),
//!     Retry::GiveUp => unreachable!(),
//! }
//! ```

use std::time::Duration;

/// Retry policy (immutable; the per-operation state is [`BackoffState`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry (default 250 ms).
    pub initial_delay: Duration,
    /// Ceiling of any single delay (default 8 s).
    pub max_delay: Duration,
    /// Growth factor per attempt (default 2).
    pub multiplier: u32,
    /// Fraction of each delay that is randomised, in percent (default 50: a delay lies in
    /// `[d/2, d]`). 0 disables jitter; values over 100 count as 100.
    pub jitter_percent: u8,
    /// Give up when the next attempt would start after this much time since the first
    /// (default 120 s, cloud-init's `max_wait`).
    pub deadline: Duration,
    /// Give up after this many attempts in total (default: no limit besides the deadline).
    pub max_attempts: Option<u32>,
    /// Timeout of a single attempt (default 10 s), clipped to the time left.
    pub attempt_timeout: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            multiplier: 2,
            jitter_percent: 50,
            deadline: Duration::from_secs(120),
            max_attempts: None,
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Sleep this long, then try again.
    After(Duration),
    /// Stop: the deadline or the attempt limit is reached.
    GiveUp,
}

/// The state of one retried operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffState {
    started: Duration,
    attempts: u32,
}

impl Backoff {
    /// Starts an operation at monotonic time `now` (the first attempt is about to run).
    pub fn start(&self, now: Duration) -> BackoffState {
        BackoffState {
            started: now,
            attempts: 1,
        }
    }

    /// The un-jittered delay after `failed` attempts (1 → `initial_delay`), capped.
    pub fn base_delay(&self, failed: u32) -> Duration {
        let factor = self
            .multiplier
            .max(1)
            .checked_pow(failed.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

impl BackoffState {
    /// Attempts made so far (the first counts).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Time left before the deadline at `now`.
    pub fn remaining(&self, policy: &Backoff, now: Duration) -> Duration {
        (self.started + policy.deadline).saturating_sub(now)
    }

    /// Timeout for the attempt starting at `now`: `attempt_timeout` clipped to the time left.
    pub fn attempt_timeout(&self, policy: &Backoff, now: Duration) -> Duration {
        policy.attempt_timeout.min(self.remaining(policy, now))
    }

    /// Decides after a failed attempt at time `now`. `jitter` is a uniformly random `u32`
    /// supplied by the caller. A retry is granted only if it would start before the deadline
    /// (the delay is shortened to end exactly at the deadline when needed).
    pub fn next(&mut self, policy: &Backoff, now: Duration, jitter: u32) -> Retry {
        if policy.max_attempts.is_some_and(|m| self.attempts >= m) {
            return Retry::GiveUp;
        }
        let remaining = self.remaining(policy, now);
        if remaining.is_zero() {
            return Retry::GiveUp;
        }
        let base = policy.base_delay(self.attempts);
        let pct = u128::from(policy.jitter_percent.min(100));
        // delay = base * (1 - pct/100 * jitter/2^32), computed in integer nanoseconds.
        let base_ns = base.as_nanos();
        let cut = (base_ns.saturating_mul(pct) / 100).saturating_mul(u128::from(jitter)) >> 32;
        let delay =
            Duration::from_nanos(u64::try_from(base_ns.saturating_sub(cut)).unwrap_or(u64::MAX));
        self.attempts += 1;
        Retry::After(delay.min(remaining))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn grows_and_caps() {
        let p = Backoff {
            jitter_percent: 0,
            ..Backoff::default()
        };
        let mut s = p.start(Duration::ZERO);
        let delays: Vec<Duration> = (0..8)
            .map(|_| match s.next(&p, Duration::ZERO, u32::MAX) {
                Retry::After(d) => d,
                Retry::GiveUp => panic!("gave up early"),
            })
            .collect();
        assert_eq!(delays[0], 250 * MS);
        assert_eq!(delays[1], 500 * MS);
        assert_eq!(delays[4], 4000 * MS);
        assert_eq!(delays[5], 8000 * MS);
        assert_eq!(delays[7], 8000 * MS);
        assert_eq!(s.attempts(), 9);
    }

    #[test]
    fn jitter_stays_in_range() {
        let p = Backoff::default();
        let mut s = p.start(Duration::ZERO);
        assert_eq!(s.next(&p, Duration::ZERO, 0), Retry::After(250 * MS));
        let mut s = p.start(Duration::ZERO);
        let Retry::After(d) = s.next(&p, Duration::ZERO, u32::MAX) else {
            panic!()
        };
        assert!(d >= 125 * MS && d < 126 * MS, "{d:?}");
    }

    #[test]
    fn deadline_and_attempts() {
        let p = Backoff {
            deadline: Duration::from_secs(1),
            ..Backoff::default()
        };
        let mut s = p.start(Duration::from_secs(100));
        assert_eq!(
            s.next(&p, Duration::from_millis(100_900), 0),
            Retry::After(100 * MS)
        );
        assert_eq!(s.next(&p, Duration::from_secs(101), 0), Retry::GiveUp);
        assert_eq!(
            s.attempt_timeout(&p, Duration::from_millis(100_500)),
            500 * MS
        );
        let p = Backoff {
            max_attempts: Some(2),
            ..Backoff::default()
        };
        let mut s = p.start(Duration::ZERO);
        assert!(matches!(s.next(&p, Duration::ZERO, 0), Retry::After(_)));
        assert_eq!(s.next(&p, Duration::ZERO, 0), Retry::GiveUp);
    }

    proptest! {
        #[test]
        fn delays_are_bounded(init in 0u64..10_000, max in 0u64..100_000, mult in 0u32..10,
                              pct in any::<u8>(), jitter in any::<u32>(), n in 1u32..200,
                              now in 0u64..1_000_000) {
            let p = Backoff {
                initial_delay: Duration::from_millis(init),
                max_delay: Duration::from_millis(max),
                multiplier: mult,
                jitter_percent: pct,
                deadline: Duration::from_secs(600),
                max_attempts: None,
                attempt_timeout: Duration::from_secs(1),
            };
            let mut s = p.start(Duration::ZERO);
            for _ in 0..n {
                match s.next(&p, Duration::from_millis(now), jitter) {
                    Retry::After(d) => {
                        prop_assert!(d <= p.max_delay);
                        prop_assert!(Duration::from_millis(now) + d <= p.deadline);
                    }
                    Retry::GiveUp => prop_assert!(Duration::from_millis(now) >= p.deadline),
                }
            }
        }
    }
}
