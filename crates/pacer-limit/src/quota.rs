//! What a server allows: N requests per window W, counted the way the server counts them.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

/// How the server counts requests against a quota.
///
/// Pick the model the server enforces. When in doubt, [`Model::Gcra`] with a burst of 1 (evenly
/// spaced sends) is accepted by every model, at the price of never bursting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Model {
    /// Never more than `limit` sends in any window of length `window` (a sliding log), the model
    /// HAProxy-style gateways enforce and the one commonly described for Customer.io. A full burst
    /// of `limit` is allowed at once.
    SlidingWindow,
    /// The generic cell rate algorithm (a token bucket): one send per `window / limit` on average,
    /// and up to `burst` sends at once after an idle period. `burst: 1` spaces every send evenly,
    /// as a strict nginx `limit_req` without `burst` demands.
    Gcra {
        /// How many sends may go out back to back after an idle period.
        burst: NonZeroU32,
    },
}

/// A rate limit: `limit` requests per `window`, counted by a [`Model`], widened by a safety margin.
///
/// ```
/// use std::time::Duration;
/// use pacer_limit::Quota;
///
/// // Customer.io's Track API: 100 requests per second, counted in a sliding window, with 20 ms
/// // of headroom for network jitter.
/// let track = Quota::per_second(100).with_margin(Duration::from_millis(20));
/// // A strict gateway that rejects any two requests closer than 100 ms.
/// let strict = Quota::per_second(10).gcra(1);
/// assert_eq!(strict.emission_interval(), Duration::from_millis(100));
/// # let _ = track;
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    limit: NonZeroU32,
    window: Duration,
    model: Model,
    margin: Duration,
}

impl Quota {
    /// `limit` requests per `window`, counted in a sliding window, with no margin.
    ///
    /// # Panics
    /// If `limit` is zero or `window` is zero: such a quota admits nothing and is always a bug.
    #[must_use]
    pub fn new(limit: u32, window: Duration) -> Self {
        let limit = NonZeroU32::new(limit).expect("Quota limit must be at least 1");
        assert!(!window.is_zero(), "Quota window must be longer than zero");
        Self {
            limit,
            window,
            model: Model::SlidingWindow,
            margin: Duration::ZERO,
        }
    }

    /// `limit` requests per second, counted in a sliding window.
    ///
    /// # Panics
    /// If `limit` is zero.
    #[must_use]
    pub fn per_second(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(1))
    }

    /// `limit` requests per minute, counted in a sliding window.
    ///
    /// # Panics
    /// If `limit` is zero.
    #[must_use]
    pub fn per_minute(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(60))
    }

    /// Counts with a sliding window: never more than `limit` sends in any `window`.
    #[must_use]
    pub fn sliding_window(mut self) -> Self {
        self.model = Model::SlidingWindow;
        self
    }

    /// Counts with GCRA and allows `burst` back-to-back sends (clamped to at least 1).
    #[must_use]
    pub fn gcra(mut self, burst: u32) -> Self {
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        self.model = Model::Gcra { burst };
        self
    }

    /// Treats the window as `window + margin`, so that sends delayed by up to `margin` on the way
    /// still arrive at the server within its limit. The server sees arrival times, not send times.
    #[must_use]
    pub fn with_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The same quota with `limit` requests per window: same window, model and margin, and a
    /// GCRA burst scaled in proportion (at least 1), so a slower rate never keeps the old burst.
    /// Used to pace a key below its configured quota, e.g. after the server refused requests.
    ///
    /// ```
    /// use pacer_limit::{Model, Quota};
    ///
    /// let quota = Quota::per_second(100).gcra(20).scaled(50);
    /// assert_eq!(quota.limit(), 50);
    /// assert!(matches!(quota.model(), Model::Gcra { burst } if burst.get() == 10));
    /// ```
    ///
    /// # Panics
    /// If `limit` is zero.
    #[must_use]
    pub fn scaled(mut self, limit: u32) -> Self {
        let limit = NonZeroU32::new(limit).expect("Quota limit must be at least 1");
        if let Model::Gcra { burst } = self.model {
            let scaled =
                u64::from(burst.get()) * u64::from(limit.get()) / u64::from(self.limit.get());
            let scaled = u32::try_from(scaled).unwrap_or(u32::MAX);
            self.model = Model::Gcra {
                burst: NonZeroU32::new(scaled).unwrap_or(NonZeroU32::MIN),
            };
        }
        self.limit = limit;
        self
    }

    /// The number of requests allowed per window.
    #[must_use]
    pub fn limit(&self) -> u32 {
        self.limit.get()
    }

    /// The server's window, without the margin.
    #[must_use]
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The counting model.
    #[must_use]
    pub fn model(&self) -> Model {
        self.model
    }

    /// The safety margin added to the window.
    #[must_use]
    pub fn margin(&self) -> Duration {
        self.margin
    }

    /// The window the limiter enforces: the server's window plus the margin.
    #[must_use]
    pub fn effective_window(&self) -> Duration {
        self.window.saturating_add(self.margin)
    }

    /// The average spacing between sends at full rate: `effective_window / limit`.
    #[must_use]
    pub fn emission_interval(&self) -> Duration {
        self.effective_window() / self.limit.get()
    }

    /// Sends per second the limiter allows at full rate (after the margin).
    #[must_use]
    pub fn rate_per_second(&self) -> f64 {
        f64::from(self.limit.get()) / self.effective_window().as_secs_f64()
    }
}

impl fmt::Debug for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quota")
            .field("limit", &self.limit.get())
            .field("window", &self.window)
            .field("model", &self.model)
            .field("margin", &self.margin)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_widens_the_window_and_the_interval() {
        let quota = Quota::per_second(100).with_margin(Duration::from_millis(30));
        assert_eq!(quota.effective_window(), Duration::from_millis(1030));
        assert_eq!(quota.emission_interval(), Duration::from_micros(10_300));
        assert!((quota.rate_per_second() - 100.0 / 1.03).abs() < 1e-9);
    }

    #[test]
    fn gcra_burst_zero_is_clamped_to_one() {
        let quota = Quota::per_second(5).gcra(0);
        assert_eq!(
            quota.model(),
            Model::Gcra {
                burst: NonZeroU32::MIN
            }
        );
    }

    #[test]
    #[should_panic(expected = "at least 1")]
    fn zero_limit_is_rejected() {
        let _ = Quota::per_second(0);
    }
}
