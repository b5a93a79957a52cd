//! How long to wait before a retry: exponential backoff with a choice of jitter.
//!
//! Jitter spreads the retries of many clients that failed together, so they do not come back
//! together and fail again (see the AWS Architecture Blog, "Exponential Backoff And Jitter").

use std::time::Duration;

/// The jitter applied to exponential backoff. `n` is the retry number (0 for the first retry),
/// `exp(n) = min(cap, base · 2ⁿ)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Jitter {
    /// `U(0, exp(n))`: the most spread, the fewest total attempts (the default, as AWS and
    /// gRPC recommend).
    #[default]
    Full,
    /// `exp(n)/2 + U(0, exp(n)/2)`: never retries almost at once.
    Equal,
    /// `min(cap, U(base, 3 · previous))`: grows from the previous delay rather than the count.
    Decorrelated,
    /// `exp(n)` exactly: every client that failed together retries together.
    None,
}

/// Exponential backoff: a base, a cap and a [`Jitter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: Jitter,
}

impl Default for Backoff {
    /// 100 ms base, 30 s cap, full jitter.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(30),
            jitter: Jitter::Full,
        }
    }
}

impl Backoff {
    /// Backoff from `base`, never longer than `cap` (raised to `base` if smaller), with full jitter.
    #[must_use]
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            jitter: Jitter::Full,
        }
    }

    /// Uses `jitter`.
    #[must_use]
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The base delay.
    #[must_use]
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The longest delay.
    #[must_use]
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// `min(cap, base · 2ⁿ)`, without overflow.
    fn exponential(&self, retry: u32) -> Duration {
        let factor = 1_u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before retry number `retry` (0-based). `previous` is the delay before the
    /// previous retry (ignored but by [`Jitter::Decorrelated`]; pass `base` at first). `unit` is
    /// a uniform random draw from `[0, 1)` (e.g. `rand::random::<f64>()`), which places the
    /// delay within the jitter's range; any source will do.
    #[must_use]
    pub fn delay(&self, retry: u32, previous: Duration, unit: f64) -> Duration {
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let within = |low: Duration, high: Duration| {
            if high <= low {
                return low;
            }
            low + (high - low).mul_f64(unit)
        };
        match self.jitter {
            Jitter::None => self.exponential(retry),
            Jitter::Full => within(Duration::ZERO, self.exponential(retry)),
            Jitter::Equal => {
                let half = self.exponential(retry) / 2;
                half + within(Duration::ZERO, half)
            }
            Jitter::Decorrelated => {
                let high = previous.max(self.base).saturating_mul(3).min(self.cap);
                within(self.base, high).min(self.cap)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    const BASE: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(5);

    fn sequence(jitter: Jitter, seed: u64) -> Vec<Duration> {
        let backoff = Backoff::new(BASE, CAP).jitter(jitter);
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut previous = BASE;
        (0..8)
            .map(|retry| {
                previous = backoff.delay(retry, previous, rng.random());
                previous
            })
            .collect()
    }

    fn millis(sequence: &[Duration]) -> Vec<u128> {
        sequence.iter().map(Duration::as_millis).collect()
    }

    #[test]
    fn no_jitter_doubles_up_to_the_cap() {
        assert_eq!(
            millis(&sequence(Jitter::None, 1)),
            [100, 200, 400, 800, 1600, 3200, 5000, 5000]
        );
    }

    fn micros(sequence: &[Duration]) -> Vec<u128> {
        sequence.iter().map(Duration::as_micros).collect()
    }

    /// The exact sequences for seed 42: a change here changes every user's delays, on purpose
    /// or not.
    #[test]
    fn seed_42_gives_these_exact_sequences() {
        assert_eq!(
            micros(&sequence(Jitter::Full, 42)),
            [81430, 63764, 393557, 560908, 1269607, 1881915, 626762, 3025612]
        );
        assert_eq!(
            micros(&sequence(Jitter::Equal, 42)),
            [90715, 131882, 396778, 680454, 1434803, 2540957, 2813381, 4012806]
        );
        assert_eq!(
            micros(&sequence(Jitter::Decorrelated, 42)),
            [262861, 319534, 944775, 2017134, 3988171, 2981682, 714226, 1336072]
        );
    }

    #[test]
    fn a_seed_fixes_every_sequence() {
        for jitter in [Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
            assert_eq!(sequence(jitter, 42), sequence(jitter, 42));
            assert_ne!(sequence(jitter, 42), sequence(jitter, 43));
        }
    }

    #[test]
    fn each_jitter_stays_in_its_range() {
        let none = sequence(Jitter::None, 0);
        for seed in 0..200 {
            for (retry, (full, equal)) in sequence(Jitter::Full, seed)
                .into_iter()
                .zip(sequence(Jitter::Equal, seed))
                .enumerate()
            {
                assert!(full <= none[retry]);
                assert!(equal >= none[retry] / 2 && equal <= none[retry]);
            }
            let mut previous = BASE;
            for delay in sequence(Jitter::Decorrelated, seed) {
                assert!(delay >= BASE && delay <= (previous * 3).min(CAP));
                previous = delay;
            }
        }
    }

    #[test]
    fn huge_retry_numbers_do_not_overflow() {
        let backoff = Backoff::new(BASE, Duration::MAX).jitter(Jitter::None);
        let mut rng = SmallRng::seed_from_u64(0);
        assert!(backoff.delay(u32::MAX, BASE, rng.random()) >= BASE * 1024);
    }
}
