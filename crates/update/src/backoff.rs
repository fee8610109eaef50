//! Retry delays: exponential with full jitter, randomness supplied by the caller.

use std::time::Duration;

/// Exponential backoff: the n-th delay is uniform in `[d/2, d]` with `d = min(max, base × 2ⁿ)`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays starting near `base`, never above `max`.
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The next delay; `random` is any random number.
    pub fn next_delay(&mut self, random: u64) -> Duration {
        let d = self
            .base
            .saturating_mul(1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let ms = d.as_millis() as u64;
        let half = ms / 2;
        Duration::from_millis(half + random % (ms - half + 1))
    }

    /// Failures since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn grows_and_caps() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let d: Vec<u64> = (0..10)
            .map(|_| b.next_delay(u64::MAX).as_millis() as u64)
            .collect();
        assert!((500..=1000).contains(&d[0]), "{d:?}");
        assert!((4000..=8000).contains(&d[3]), "{d:?}");
        assert!(d.iter().all(|&x| x <= 60_000));
        assert_eq!(b.attempts(), 10);
        b.reset();
        assert!(b.next_delay(0).as_millis() >= 500);
    }

    proptest! {
        #[test]
        fn bounded(base in 1u64..10_000, max in 1u64..1_000_000, r: u64, n in 0usize..80) {
            let mut b = Backoff::new(Duration::from_millis(base), Duration::from_millis(max));
            for _ in 0..n {
                let d = b.next_delay(r);
                prop_assert!(d <= Duration::from_millis(max.max(base)));
            }
        }
    }
}
