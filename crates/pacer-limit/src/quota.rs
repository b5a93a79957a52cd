//! What a server allows: N requests per window W, counted the way the server counts them.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

/// How the server counts requests against a quota.
///
/// The default, [`Model::Gcra`] with a burst of 1 (evenly spaced sends), is accepted by every
/// server model: real limiters such as nginx's `limit_req` refuse two requests closer than
/// `window / limit`, and HAProxy-style "sliding window counters" keep counting the previous
/// window's burst. Choose a burst only for a server known to allow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Model {
    /// Never more than `limit` sends in any window of length `window` (a sliding log), with a
    /// full burst of `limit` allowed at once. An idealised server accepts it; real gateways
    /// mostly do not (nginx wants sends spaced, HAProxy's rate counter keeps counting the
    /// previous window's burst): choose it only for a server known to count this way.
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
/// The defaults are the ones every real server accepts: sends evenly spaced (GCRA, burst 1) and
/// a margin of 1 % of the window, so that a request delayed on its way by up to 1 % of the
/// spacing still arrives after its predecessor's interval. Bursting is an explicit choice
/// ([`sliding_window`](Self::sliding_window), [`gcra`](Self::gcra) with a burst above 1).
///
/// Longer windows stack on top with [`and`](Self::and) (a rate and a daily quota): the first
/// window paces, the others ([`Cap`]s) only hold the key back when spent. The figures below
/// ([`limit`](Self::limit), [`emission_interval`](Self::emission_interval), …) are the first
/// window's.
///
/// ```
/// # mod pacer { pub mod limit { pub use ::pacer_limit::*; } }
/// use std::time::Duration;
/// use pacer::limit::{Model, Quota};
///
/// // 100 requests per second: one every 10.1 ms (the window plus its 1 % margin, over 100).
/// let track = Quota::per_second(100);
/// assert_eq!(track.model(), Model::EVENLY_SPACED);
/// assert_eq!(track.margin(), Duration::from_millis(10));
/// assert_eq!(track.emission_interval(), Duration::from_micros(10_100));
/// // A server known to accept a whole window at once, with 20 ms of headroom.
/// let bursty = Quota::per_second(100).sliding_window().with_margin(Duration::from_millis(20));
/// assert_eq!(bursty.model(), Model::SlidingWindow);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    limit: NonZeroU32,
    window: Duration,
    model: Model,
    margin: Duration,
    /// Longer windows enforced on top of this one ([`Quota::and`]). A fixed array rather than a
    /// `Vec` keeps `Quota` `Copy`: it is copied into every key's bucket and every layer.
    caps: [Option<Cap>; MAX_CAPS],
}

/// How many windows [`Quota::and`] stacks on top of a quota's own: real APIs document two
/// (a rate and a daily quota, or 1000/s and 3000 per 3 s), so two extra leave room.
pub const MAX_CAPS: usize = 2;

/// A window stacked on top of a quota's own by [`Quota::and`]: never more than `limit` sends in
/// any window of length `window + margin`, counted as a sliding window whatever the quota's
/// model. A cap only holds sends back when it is spent (the key then waits until its oldest
/// send leaves the window); it never slows the pacing of the quota's own window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cap {
    limit: NonZeroU32,
    window: Duration,
    margin: Duration,
}

impl Cap {
    /// The number of sends allowed per window.
    #[must_use]
    pub fn limit(&self) -> u32 {
        self.limit.get()
    }

    /// The server's window, without the margin.
    #[must_use]
    pub fn window(&self) -> Duration {
        self.window
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
}

impl Model {
    /// GCRA with a burst of 1: every send `window / limit` after the previous one. The default.
    pub const EVENLY_SPACED: Model = Model::Gcra {
        burst: NonZeroU32::MIN,
    };

    /// Whether the model lets more than one send go out back to back.
    #[must_use]
    pub fn bursts(&self) -> bool {
        *self != Self::EVENLY_SPACED
    }
}

/// The default margin, as a fraction of the window: 1 %.
const DEFAULT_MARGIN_DIVISOR: u32 = 100;

impl Quota {
    /// `limit` requests per `window`, evenly spaced, with a margin of 1 % of the window.
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
            model: Model::EVENLY_SPACED,
            margin: window / DEFAULT_MARGIN_DIVISOR,
            caps: [None; MAX_CAPS],
        }
    }

    /// `limit` requests per second, evenly spaced, with a 10 ms margin.
    ///
    /// # Panics
    /// If `limit` is zero.
    #[must_use]
    pub fn per_second(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(1))
    }

    /// `limit` requests per minute, evenly spaced, with a 600 ms margin.
    ///
    /// # Panics
    /// If `limit` is zero.
    #[must_use]
    pub fn per_minute(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(60))
    }

    /// `limit` requests per hour, evenly spaced, with a 36 s margin. Mostly a cap on top of a
    /// shorter quota ([`and`](Self::and)).
    ///
    /// # Panics
    /// If `limit` is zero.
    #[must_use]
    pub fn per_hour(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(3_600))
    }

    /// `limit` requests per day (24 h), evenly spaced, with a 14.4 min margin. Mostly a cap on
    /// top of a shorter quota ([`and`](Self::and)), e.g. a daily quota behind a rate.
    ///
    /// # Panics
    /// If `limit` is zero.
    #[must_use]
    pub fn per_day(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(86_400))
    }

    /// This quota with `other`'s windows stacked on top: every window is enforced together.
    ///
    /// `self` stays the primary window: its model paces the sends (evenly spaced by default),
    /// and [`limit`](Self::limit), [`window`](Self::window), [`emission_interval`](Self::emission_interval),
    /// [`rate_per_second`](Self::rate_per_second), [`scaled`](Self::scaled) and a rate the
    /// limiter learns from the server all concern it alone. `other`'s window (with its own
    /// margin) and any it stacks already become [`Cap`]s: each counts sends as a sliding window
    /// and holds the key back only once it is spent, until its oldest send leaves the window.
    /// A cap is never smoothed into the pacing, so a daily quota never lowers the per-second
    /// rate; and it is never filled by a pause, so a short Retry-After never costs a day.
    ///
    /// ```
    /// # mod pacer { pub mod limit { pub use ::pacer_limit::*; } }
    /// use std::time::Duration;
    /// use pacer::limit::Quota;
    ///
    /// // Customer.io's App API: 10 per second, behind a daily quota of the workspace's plan.
    /// let app = Quota::per_second(10).and(Quota::per_day(50_000));
    /// assert_eq!(app.rate_per_second(), Quota::per_second(10).rate_per_second());
    /// let daily = app.caps().next().unwrap();
    /// assert_eq!((daily.limit(), daily.window()), (50_000, Duration::from_secs(86_400)));
    /// ```
    ///
    /// # Panics
    /// If the result would stack more than [`MAX_CAPS`] windows on top of `self`'s.
    #[must_use]
    pub fn and(mut self, other: Quota) -> Self {
        let primary = Cap {
            limit: other.limit,
            window: other.window,
            margin: other.margin,
        };
        for cap in std::iter::once(primary).chain(other.caps()) {
            if self.caps().any(|c| c == cap) {
                continue;
            }
            let free = self.caps.iter_mut().find(|slot| slot.is_none());
            let slot = free.unwrap_or_else(|| {
                panic!("a Quota stacks at most {MAX_CAPS} windows on top of its own")
            });
            *slot = Some(cap);
        }
        self
    }

    /// The windows stacked on top of this quota's own ([`and`](Self::and)), in the order added.
    pub fn caps(&self) -> impl Iterator<Item = Cap> + '_ {
        self.caps.iter().flatten().copied()
    }

    /// The same quota without the windows stacked on top of its own.
    #[must_use]
    pub fn without_caps(mut self) -> Self {
        self.caps = [None; MAX_CAPS];
        self
    }

    /// Counts with a sliding window: never more than `limit` sends in any `window`, a whole
    /// window's worth at once when the key was idle. Only for servers that accept such bursts
    /// (an idealised sliding log): most real gateways do not.
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
    /// Evenly spaced, each send has `margin / limit` of slack. Default: 1 % of the window.
    #[must_use]
    pub fn with_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The same quota with `limit` requests per window: same window, model, margin and caps
    /// (the caps are not scaled: they stay as configured), and a
    /// GCRA burst scaled in proportion (at least 1), so a slower rate never keeps the old burst.
    /// Used to pace a key below its configured quota, e.g. after the server refused requests.
    ///
    /// ```
    /// # mod pacer { pub mod limit { pub use ::pacer_limit::*; } }
    /// use pacer::limit::{Model, Quota};
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

    /// The same quota at `fraction` of its rate, exactly: the window and the margin stretched
    /// by `1 / fraction`, the limit, model, burst and caps kept. Where [`scaled`](Self::scaled) rounds
    /// the rate to a whole number of requests per window, this keeps a learned rate of, say,
    /// 99.4 per window as it is. `fraction` is clamped to `1e-6..=1` (NaN counts as 1). The
    /// limiter's own learning uses it (see [`crate::Limiter::observe`]).
    #[must_use]
    pub(crate) fn slowed(mut self, fraction: f64) -> Self {
        if fraction.is_nan() || fraction >= 1.0 {
            return self;
        }
        let fraction = fraction.max(1e-6);
        let stretch = |d: Duration| Duration::try_from_secs_f64(d.as_secs_f64() / fraction);
        self.window = stretch(self.window).unwrap_or(Duration::MAX);
        self.margin = stretch(self.margin).unwrap_or(Duration::MAX);
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
        let mut debug = f.debug_struct("Quota");
        debug
            .field("limit", &self.limit.get())
            .field("window", &self.window)
            .field("model", &self.model)
            .field("margin", &self.margin);
        if self.caps().next().is_some() {
            debug.field("caps", &self.caps().collect::<Vec<_>>());
        }
        debug.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_evenly_spaced_with_one_percent_margin() {
        let quota = Quota::new(3000, Duration::from_secs(3));
        assert_eq!(quota.model(), Model::EVENLY_SPACED);
        assert!(!quota.model().bursts());
        assert!(quota.sliding_window().model().bursts());
        assert!(quota.gcra(2).model().bursts());
        assert_eq!(quota.margin(), Duration::from_millis(30));
        assert_eq!(
            quota.with_margin(Duration::ZERO).emission_interval(),
            Duration::from_millis(1)
        );
    }

    #[test]
    fn margin_widens_the_window_and_the_interval() {
        let quota = Quota::per_second(100).with_margin(Duration::from_millis(30));
        assert_eq!(quota.effective_window(), Duration::from_millis(1030));
        assert_eq!(quota.emission_interval(), Duration::from_micros(10_300));
        assert!((quota.rate_per_second() - 100.0 / 1.03).abs() < 1e-9);
    }

    #[test]
    fn slowed_keeps_the_model_and_stretches_the_interval_exactly() {
        let quota = Quota::per_second(100).gcra(4);
        let slowed = quota.slowed(0.994);
        assert_eq!((slowed.limit(), slowed.model()), (100, quota.model()));
        let ratio = slowed.rate_per_second() / quota.rate_per_second();
        assert!((ratio - 0.994).abs() < 1e-9, "{ratio}");
        assert_eq!(quota.slowed(1.5), quota);
        assert_eq!(quota.slowed(f64::NAN), quota);
        assert!(quota.slowed(0.0).emission_interval() > Duration::from_secs(1000));
        // Hostile fractions and windows: clamped, saturated, never a panic.
        for fraction in [
            -1.0,
            f64::MIN_POSITIVE,
            1e-300,
            f64::NEG_INFINITY,
            f64::INFINITY,
        ] {
            let slowed = quota.slowed(fraction);
            assert!(slowed.emission_interval() >= quota.emission_interval());
        }
        let endless = Quota::new(1, Duration::MAX).slowed(0.5);
        assert_eq!(endless.window(), Duration::MAX);
        assert_eq!(endless.effective_window(), Duration::MAX);
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
    fn stacked_windows_leave_the_primary_pacing_alone() {
        let primary = Quota::per_second(1000).gcra(4);
        let quota =
            primary.and(Quota::new(3000, Duration::from_secs(3)).and(Quota::per_day(50_000)));
        let caps: Vec<_> = quota.caps().map(|c| (c.limit(), c.window())).collect();
        assert_eq!(
            caps,
            [
                (3000, Duration::from_secs(3)),
                (50_000, Duration::from_secs(86_400))
            ]
        );
        assert_eq!(quota.without_caps(), primary);
        assert_eq!(quota.emission_interval(), primary.emission_interval());
        assert_eq!(quota.rate_per_second(), primary.rate_per_second());
        // Scaling and slowing concern the primary window; the caps stay as configured.
        assert!(quota.scaled(500).caps().eq(quota.caps()));
        assert!(quota.slowed(0.5).caps().eq(quota.caps()));
        assert_eq!(quota.scaled(500).without_caps(), primary.scaled(500));
        // The same window twice is one cap.
        let daily = Quota::per_day(10);
        assert_eq!(Quota::per_second(1).and(daily).and(daily).caps().count(), 1);
        // A cap keeps the margin of the quota it came from.
        let cap = Quota::per_second(1)
            .and(Quota::per_hour(100))
            .caps()
            .next()
            .unwrap();
        assert_eq!(cap.margin(), Duration::from_secs(36));
        assert_eq!(cap.effective_window(), Duration::from_secs(3_636));
    }

    #[test]
    #[should_panic(expected = "at most 2 windows")]
    fn more_caps_than_room_is_rejected() {
        let _ = Quota::per_second(10)
            .and(Quota::per_minute(300))
            .and(Quota::per_hour(5_000))
            .and(Quota::per_day(50_000));
    }

    #[test]
    #[should_panic(expected = "at least 1")]
    fn zero_limit_is_rejected() {
        let _ = Quota::per_second(0);
    }
}
