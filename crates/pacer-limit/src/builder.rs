//! Configuration of a [`Limiter`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::limiter::{Config, Key, Limiter, QueueFn, QuotaFn};
use crate::priority::{Priority, LANES};
use crate::quota::Quota;
use crate::source::SlotSources;

/// Builds a [`Limiter`]. Defaults: every key gets the same quota, waiting is unbounded in time,
/// at most 10,000 waiters queue per key (counted per lane, see [`Self::max_queue`]), the normal
/// and bulk lanes each keep at least 10 % of the slots while they wait
/// ([`Self::min_share`]), a wait over one second is logged, and keys spaced under 50 ms apart
/// get [precise wake-ups](Self::precise_wakeups).
///
/// ```
/// # mod pacer { pub mod limit { pub use ::pacer_limit::*; } }
/// use std::time::Duration;
/// use pacer::limit::{Limiter, Quota};
///
/// #[derive(Clone, Debug, PartialEq, Eq, Hash)]
/// enum Api { Track, App }
///
/// let limiter = Limiter::builder(Quota::per_second(100))
///     .quota_fn(|api: &Api| match api {
///         Api::Track => Quota::per_second(100),
///         Api::App => Quota::per_second(10),
///     })
///     .max_wait(Duration::from_secs(30))
///     .build();
/// assert_eq!(limiter.quota(&Api::App).limit(), 10);
/// ```
#[must_use]
pub struct LimiterBuilder<K> {
    quota_fn: QuotaFn<K>,
    max_wait: [Option<Duration>; LANES],
    max_queue: QueueFn<K>,
    max_queue_default: usize,
    min_share: f64,
    log_wait_over: Duration,
    min_sweep_len: usize,
    precise_wakeups: Option<bool>,
    sources: Option<Arc<dyn SlotSources<K>>>,
}

impl<K: Key> LimiterBuilder<K> {
    pub(crate) fn new(quota: Quota) -> Self {
        Self {
            quota_fn: Arc::new(move |_: &K| quota),
            max_wait: [None; LANES],
            max_queue: Arc::new(|_: &K| 10_000),
            max_queue_default: 10_000,
            min_share: DEFAULT_MIN_SHARE,
            log_wait_over: Duration::from_secs(1),
            min_sweep_len: 1024,
            precise_wakeups: None,
            sources: None,
        }
    }

    /// Gives each key its own quota. Called once when a key is first seen (and again after an
    /// idle key was evicted), never on the hot path.
    pub fn quota_fn<F>(mut self, quota_fn: F) -> Self
    where
        F: Fn(&K) -> Quota + Send + Sync + 'static,
    {
        self.quota_fn = Arc::new(quota_fn);
        self
    }

    /// Refuses at once, with [`RateLimited`](crate::RateLimited), a request whose turn would come
    /// later than `max_wait` from now, instead of queueing it, in every lane (see
    /// [`Self::max_wait_in`] for one lane).
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = [Some(max_wait); LANES];
        self
    }

    /// The maximum wait of `priority`'s lane alone (`None`: unbounded), e.g. a short one for
    /// interactive requests while bulk ones wait as long as they must. A request is measured
    /// by its turn in its lane: the waiters of the lanes above it and those ahead in its own.
    ///
    /// ```
    /// # mod pacer { pub mod limit { pub use ::pacer_limit::*; } }
    /// use std::time::Duration;
    /// use pacer::limit::{Limiter, Priority, Quota};
    ///
    /// let limiter = Limiter::<()>::builder(Quota::per_second(10))
    ///     .max_wait_in(Priority::Interactive, Some(Duration::from_millis(500)))
    ///     .build();
    /// ```
    pub fn max_wait_in(mut self, priority: Priority, max_wait: Option<Duration>) -> Self {
        self.max_wait[priority.index()] = max_wait;
        self
    }

    /// The share of slots each lane below the interactive one keeps while it has waiters
    /// (default 0.1, at most 0.5): the normal lane gets at least that share of the slots
    /// granted while it waits, whatever the interactive lane asks, and the bulk lane as much,
    /// whatever the lanes above ask. 0 serves lanes strictly by priority (a busy lane above can
    /// then starve the ones below).
    pub fn min_share(mut self, share: f64) -> Self {
        self.min_share = if share.is_nan() {
            DEFAULT_MIN_SHARE
        } else {
            share.clamp(0.0, MAX_MIN_SHARE)
        };
        self
    }

    /// Bounds the waiters queued per key (default 10,000); a request beyond it is refused at once.
    /// A request counts the waiters of its own lane and of the lanes above it, so a bulk backlog
    /// never fills the queue for an interactive request (a key may hold up to twice the bound).
    pub fn max_queue(mut self, max_queue: usize) -> Self {
        self.max_queue = Arc::new(move |_: &K| max_queue);
        self.max_queue_default = max_queue;
        self
    }

    /// Bounds each key's queue by its own figure, e.g. a broadcast trigger that allows five
    /// waiting. Called when a request would queue, not on the fast path.
    pub fn max_queue_fn<F>(mut self, max_queue: F) -> Self
    where
        F: Fn(&K) -> usize + Send + Sync + 'static,
    {
        self.max_queue = Arc::new(max_queue);
        self
    }

    /// Emits a `tracing` event at `INFO` for each request that waited longer than this
    /// (default one second); shorter waits are logged at `TRACE`.
    pub fn log_wait_over(mut self, threshold: Duration) -> Self {
        self.log_wait_over = threshold;
        self
    }

    /// How many keys may exist before the first sweep of idle keys (default 1,024). Later sweeps
    /// run each time the number of keys doubles.
    pub fn eviction_threshold(mut self, keys: usize) -> Self {
        self.min_sweep_len = keys.max(1);
        self
    }

    /// Wakes the head waiter of each key with sub-millisecond precision, from one process-wide
    /// timer thread started on first use: `true` for every key, `false` for none. By default,
    /// only keys whose quota spaces sends less than 50 ms apart
    /// ([`Quota::emission_interval`]) use it.
    ///
    /// Tokio's timer rounds deadlines up to its 1 ms grid and typically wakes 1–2 ms late. Sends
    /// are recorded at their real instants, so that lateness is lost capacity: about 10 % of a
    /// quota of 100 evenly spaced sends per second. The thread sleeps on the OS's
    /// high-resolution timer and spins the last 150 µs: at 100 wake-ups per second, about 1.5 %
    /// of one core, and never more than 10 % of one core whatever the number of keys (beyond
    /// that it wakes on the OS timer alone, 50–100 µs late). Under `tokio::time::pause()` it
    /// changes nothing: tokio's clock still decides when a slot is due. Not calling this keeps
    /// the automatic choice.
    pub fn precise_wakeups(mut self, enabled: bool) -> Self {
        self.precise_wakeups = Some(enabled);
        self
    }

    /// Takes each key's slots from `sources` as well as from its own model: e.g. a quota kept
    /// in Redis and shared with other processes (`pacer-limit-redis`'s `LimiterBuilderExt::shared`
    /// calls this). Waiting stays local, FIFO and cancellation-safe; pauses, quota overrides and
    /// maximum waits work as for a local key. See [`SlotSource`](crate::SlotSource).
    pub fn slot_sources(mut self, sources: impl SlotSources<K>) -> Self {
        self.sources = Some(Arc::new(sources));
        self
    }

    /// Builds the limiter.
    #[must_use]
    pub fn build(self) -> Limiter<K> {
        Limiter::from_config(Config {
            quota_fn: self.quota_fn,
            max_wait: self.max_wait,
            max_queue: self.max_queue,
            min_share: self.min_share,
            log_wait_over: self.log_wait_over,
            min_sweep_len: self.min_sweep_len,
            precise_wakeups: self.precise_wakeups,
            sources: self.sources,
            this: std::sync::Weak::new(),
        })
    }
}

impl<K> fmt::Debug for LimiterBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimiterBuilder")
            .field("max_wait", &self.max_wait)
            .field("max_queue", &self.max_queue_default)
            .field("min_share", &self.min_share)
            .field("log_wait_over", &self.log_wait_over)
            .field("eviction_threshold", &self.min_sweep_len)
            .field("precise_wakeups", &self.precise_wakeups)
            .field("slot_sources", &self.sources.is_some())
            .finish_non_exhaustive()
    }
}

/// The minimum share of a lower lane by default.
const DEFAULT_MIN_SHARE: f64 = 0.1;

/// Two lower lanes at half the slots each leave the top lane nothing, but never less.
const MAX_MIN_SHARE: f64 = 0.5;
