//! The shared limiter handle: one budget per key, shared by every clone.

use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::acquire::Acquire;
use crate::bucket::Bucket;
use crate::builder::LimiterBuilder;
use crate::error::{RateLimited, Reason};
use crate::feedback::{Feedback, Outcome, Spent, Verdict};
use crate::learned::Answer;
use crate::priority::{Priority, LANES};
use crate::quota::Quota;
use crate::source::{Admission, HeadWaker, SlotSources, Wake};
use crate::stats::{Counters, LimiterStats};

/// The bounds a [`Key`] must satisfy: hashable, cheap to clone, printable in logs.
pub trait Key: Hash + Eq + Clone + fmt::Debug + Send + Unpin + 'static {}
impl<T: Hash + Eq + Clone + fmt::Debug + Send + Unpin + 'static> Key for T {}

pub(crate) type QuotaFn<K> = Arc<dyn Fn(&K) -> Quota + Send + Sync>;
pub(crate) type QueueFn<K> = Arc<dyn Fn(&K) -> usize + Send + Sync>;

/// A shared, keyed rate limiter: the state every [`Limited`](crate::Limited) clone and every
/// other layer of the stack use to pace one quota.
///
/// `Limiter` is a cheap handle (an `Arc`): clones share one budget. Each key gets its own bucket
/// and its own quota (from [`LimiterBuilder::quota_fn`]); buckets of idle keys are dropped, so
/// memory stays bounded by the number of keys in use.
///
/// Waiting is fair: the waiters of a key are served by [lane](Priority) (interactive, normal,
/// bulk), first in, first out within a lane, and each lower lane keeps a minimum share of the
/// slots ([`LimiterBuilder::min_share`]) so nothing starves. Only the head of the key's queue
/// holds a timer, so no thundering herd forms. A waiter dropped before its turn leaves the queue
/// and takes no capacity with it.
///
/// ```
/// # mod pacer { pub mod limit { pub use ::pacer_limit::*; } }
/// use std::time::Duration;
/// use pacer::limit::{Limiter, Quota};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let limiter = Limiter::new(Quota::per_second(2));
/// let start = tokio::time::Instant::now();
/// for _ in 0..3 {
///     limiter.acquire(()).await.unwrap();
/// }
/// // Evenly spaced, 505 ms apart (1 s plus the 1 % margin, over 2): the third send goes out
/// // 1.01 s after the first.
/// assert_eq!(start.elapsed(), Duration::from_millis(1010));
/// # }
/// ```
pub struct Limiter<K = ()> {
    pub(crate) shared: Arc<Shared<K>>,
}

pub(crate) struct Shared<K> {
    pub(crate) state: Mutex<State<K>>,
    pub(crate) config: Config<K>,
}

pub(crate) struct Config<K> {
    pub(crate) quota_fn: QuotaFn<K>,
    /// Per lane, in [`Priority::ALL`]'s order.
    pub(crate) max_wait: [Option<Duration>; LANES],
    pub(crate) max_queue: QueueFn<K>,
    /// The share of slots each lane below the top keeps while it waits.
    pub(crate) min_share: f64,
    pub(crate) log_wait_over: Duration,
    pub(crate) min_sweep_len: usize,
    /// `None`: decided per key by [`PRECISE_BELOW`].
    pub(crate) precise_wakeups: Option<bool>,
    /// Where slots come from beyond each key's own model (e.g. a quota shared through Redis).
    pub(crate) sources: Option<Arc<dyn SlotSources<K>>>,
    /// The limiter itself, for the [`HeadWaker`]s of slot sources.
    pub(crate) this: Weak<Shared<K>>,
}

pub(crate) struct State<K> {
    buckets: hashbrown::HashMap<K, Bucket>,
    pub(crate) counters: Counters,
    next_waiter_id: u64,
    /// Sweep idle buckets when the map grows past this; doubles with the live set, so sweeping
    /// costs O(1) amortised per new key.
    sweep_at_len: usize,
}

/// Keys whose sends are spaced closer than this wake with sub-millisecond precision by default:
/// tokio's timer loses 1–2 ms per wake-up, 2–4 % of a 50 ms spacing and more below it.
pub(crate) const PRECISE_BELOW: Duration = Duration::from_millis(50);

impl<K> Config<K> {
    /// Whether the head waiter of a key paced by `quota` uses the precise timer.
    pub(crate) fn precise_for(&self, quota: &Quota) -> bool {
        self.precise_wakeups
            .unwrap_or_else(|| quota.emission_interval() < PRECISE_BELOW)
    }
}

impl<K> Clone for Limiter<K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K> fmt::Debug for Limiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.shared.config;
        f.debug_struct("Limiter")
            .field("max_wait", &c.max_wait)
            .field("min_share", &c.min_share)
            .field("precise_wakeups", &c.precise_wakeups)
            .finish_non_exhaustive()
    }
}

impl Limiter<()> {
    /// A limiter with one quota for all requests (the key is `()`).
    #[must_use]
    pub fn new(quota: Quota) -> Self {
        Self::builder(quota).build()
    }
}

impl<K: Key> Limiter<K> {
    /// A builder whose every key gets `quota` unless [`LimiterBuilder::quota_fn`] says otherwise.
    pub fn builder(quota: Quota) -> LimiterBuilder<K> {
        LimiterBuilder::new(quota)
    }

    pub(crate) fn from_config(mut config: Config<K>) -> Self {
        let sweep_at_len = config.min_sweep_len;
        Self {
            shared: Arc::new_cyclic(|this| {
                config.this = this.clone();
                Shared {
                    state: Mutex::new(State {
                        buckets: hashbrown::HashMap::new(),
                        counters: Counters::default(),
                        next_waiter_id: 0,
                        sweep_at_len,
                    }),
                    config,
                }
            }),
        }
    }

    /// Waits for a slot of `key`'s quota in the [normal](Priority::Normal) lane, in FIFO order
    /// with the other waiters of that lane. See [`acquire_with_priority`](Self::acquire_with_priority).
    ///
    /// The slot is taken when the returned future completes with `Ok`; dropping the future before
    /// then gives its place back. It fails at once with [`RateLimited`] when the wait would exceed
    /// the maximum wait or the queue is full.
    pub fn acquire(&self, key: K) -> Acquire<K> {
        self.acquire_with_priority(key, Priority::Normal)
    }

    /// Waits for a slot of `key`'s quota in `priority`'s lane: after the waiters of the lanes
    /// above it and those ahead in its own, except that a lower lane keeps its minimum share
    /// ([`LimiterBuilder::min_share`]). The lane's maximum wait applies
    /// ([`LimiterBuilder::max_wait_in`]).
    ///
    /// ```
    /// # mod pacer { pub mod limit { pub use ::pacer_limit::*; } }
    /// use std::time::Duration;
    /// use pacer::limit::{Limiter, Priority, Quota};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let limiter = Limiter::new(Quota::per_second(10));
    /// limiter.acquire(()).await.unwrap();
    /// // An import queues 50 requests; a password reset arrives after them and goes first.
    /// let import: Vec<_> = (0..50)
    ///     .map(|_| tokio::spawn(limiter.acquire_with_priority((), Priority::Bulk)))
    ///     .collect();
    /// tokio::task::yield_now().await;
    /// let start = tokio::time::Instant::now();
    /// limiter.acquire_with_priority((), Priority::Interactive).await.unwrap();
    /// assert!(start.elapsed() <= Duration::from_millis(101));
    /// # for task in import { task.abort(); }
    /// # }
    /// ```
    pub fn acquire_with_priority(&self, key: K, priority: Priority) -> Acquire<K> {
        Acquire::new(self.clone(), key, priority)
    }

    /// Takes a slot of `key`'s quota if one is free now and nobody is queued for it.
    ///
    /// With [slot sources](crate::LimiterBuilder::slot_sources) that fetch slots from elsewhere
    /// (a quota shared through Redis), a slot is free now only if this process already holds
    /// one: a miss may ask for one in the background, so a later call may succeed. Prefer
    /// [`acquire`](Self::acquire).
    ///
    /// # Errors
    /// [`RateLimited`] with the time until the next slot when none is free now.
    pub fn try_acquire(&self, key: &K) -> Result<(), RateLimited> {
        let now = Instant::now();
        let mut state = self.shared.lock();
        match state.admit_now(&self.shared.config, key, Priority::Normal, now) {
            Ok(()) => {
                crate::metrics::admitted(key, Priority::Normal, Duration::ZERO);
                Ok(())
            }
            Err((at, _)) => {
                state.counters.rejected += 1;
                crate::metrics::refused(key, Priority::Normal, Reason::MaxWait);
                Err(RateLimited::new(Reason::MaxWait, Some(at - now)))
            }
        }
    }

    /// Admits nothing on `key` before `until`, e.g. because the server answered 429 with a
    /// Retry-After. Every waiter and every new request on the key waits, not only the refused one.
    /// A pause never shortens an existing one. When it ends, the waiters leave evenly spaced at
    /// the key's rate, as if the key had been sending at its full rate until `until`: a burst
    /// allowance is used up by the pause, and nobody leaves in a herd.
    pub fn pause_until(&self, key: &K, until: Instant) {
        let now = Instant::now();
        let mut state = self.shared.lock();
        let bucket = state.bucket(&self.shared.config, key, now);
        if bucket.pause_until(until) {
            bucket.share_pause(now, until);
        }
        // Queued waiters re-check their maximum wait against the new horizon.
        bucket.wake_all();
        tracing::debug!(key = ?key, pause = ?until.saturating_duration_since(now), "limiter key paused");
    }

    /// Replaces `key`'s quota at run time, forgetting what the key learned from the server. The
    /// key's recent history carries over, so the change never grants a burst the old quota
    /// forbade. `quota`'s [caps](Quota::and) replace the key's: a cap both quotas have keeps
    /// its count (a daily quota is not reset by a new rate), a new one starts counting now.
    pub fn set_quota(&self, key: &K, quota: Quota) {
        let now = Instant::now();
        let mut state = self.shared.lock();
        let bucket = state.bucket(&self.shared.config, key, now);
        bucket.set_quota(quota, now);
        bucket.wake_head();
    }

    /// Applies what the server said about one request of `key`, under one lock: the pause it
    /// asked for (every waiter and new request on the key waits; a pause never shortens one in
    /// force, and ends with the waiters leaving evenly spaced), what the answer teaches about
    /// the key's rate and spacing (see [`Adaptive`](crate::Adaptive)), and the allowance left until a reset
    /// (spent evenly by then). The limiter is the one owner of everything it learns: a layer
    /// reports each response once and acts on the [`Verdict`].
    ///
    /// A refusal with a wait on a key that was sending evenly at its rate widens the key's
    /// spacing margin (3 % for an isolated refusal, further for repeated rounds, shrinking back
    /// over minutes) rather than cutting its rate; the rate is cut only when the key's own count
    /// over a whole busy window shows the server accepts less, or when the server refused
    /// without a wait.
    ///
    /// A refusal without a wait while one of the key's [`Cap`](crate::Cap)s is about spent
    /// (95 % of it used; Customer.io's daily quota answers 429 without a
    /// `Retry-After`) is put down to that cap: the key is paused until the cap frees (at most
    /// [`Feedback::max_pause`]), its rate is left alone, and [`Verdict::spent`] says which cap
    /// and when. The count is the larger of this process's own and its slot source's (a quota
    /// shared through Redis counts every process's slots, see [`SlotSource::cap_count`](crate::SlotSource::cap_count)).
    pub fn observe(&self, key: &K, feedback: Feedback) -> Verdict {
        let now = Instant::now();
        let config = &self.shared.config;
        let configured = (config.quota_fn)(key);
        let adapting = feedback.adaptive.is_enabled();
        let refused = feedback.outcome == Outcome::Refused;
        let mut state = self.shared.lock();
        let bucket = state.bucket(config, key, now);
        // A refusal without a wait while a cap of the key's is about spent: the server's count
        // of that window (a daily quota's 429 carries no Retry-After) ran out. The key waits
        // until the window frees; it is not the primary rate's fault, so nothing is learned.
        // Counted on refusals only: a cap's count walks its log.
        let spent = (refused && feedback.pause_until.is_none())
            .then(|| bucket.about_spent(now))
            .flatten()
            .map(|(cap, frees_at)| Spent { cap, frees_at });
        let pause_until = match spent {
            Some(spent) => {
                let max = feedback.max_pause.unwrap_or(Duration::MAX);
                Some(
                    spent
                        .frees_at
                        .min(now.checked_add(max).unwrap_or(spent.frees_at)),
                )
            }
            None => feedback.pause_until,
        };
        if let Some(until) = pause_until {
            if bucket.pause_until(until) {
                bucket.share_pause(now, until);
            }
            // Queued waiters re-check their maximum wait against the new horizon.
            bucket.wake_all();
        }
        let rate_per_second = match feedback.outcome {
            _ if spent.is_some() => None,
            Outcome::Accepted | Outcome::Refused if adapting => {
                let answer = Answer {
                    refused,
                    sent_at: feedback.sent_at,
                    paused_until: feedback.pause_until.filter(|_| refused),
                };
                bucket.learn(&feedback.adaptive, &configured, answer, now)
            }
            _ => None,
        };
        if let Some((remaining, reset_at)) = feedback.allowance.filter(|_| !refused) {
            if feedback.pause_until.is_none() {
                bucket.pace_ahead(remaining, reset_at, now);
            }
        }
        let paused_until = bucket.paused_until(now);
        drop(state);
        if let Some(per_second) = rate_per_second {
            tracing::debug!(key = ?key, per_second, "adapted key rate");
        }
        if let Some(spent) = spent {
            tracing::info!(key = ?key, cap = ?spent.cap, frees_in = ?spent.frees_at.saturating_duration_since(now), "refused without a wait while a cap is spent; key paused until it frees");
        }
        Verdict {
            paused_until,
            paced: refused && (adapting || paused_until.is_some()),
            rate_per_second,
            spent,
        }
    }

    /// The quota `key` is paced by now.
    #[must_use]
    pub fn quota(&self, key: &K) -> Quota {
        let state = self.shared.lock();
        match state.buckets.get(key) {
            Some(bucket) => bucket.quota(),
            None => (self.shared.config.quota_fn)(key),
        }
    }

    /// How long a request on `key` arriving now in the normal lane would wait, behind the
    /// waiters served before it (see [`QueueStats::lane`](crate::QueueStats::lane) for the
    /// other lanes).
    #[must_use]
    pub fn estimated_wait(&self, key: &K) -> Duration {
        let now = Instant::now();
        let state = self.shared.lock();
        match state.buckets.get(key) {
            Some(bucket) => {
                bucket.nth_earliest(now, bucket.ahead_of_newcomer(Priority::Normal)) - now
            }
            None => Duration::ZERO,
        }
    }

    /// How many requests are queued on `key` right now.
    #[must_use]
    pub fn queue_len(&self, key: &K) -> usize {
        let state = self.shared.lock();
        state.buckets.get(key).map_or(0, Bucket::queue_len)
    }

    /// `key`'s queue now: how many wait, whether a pause holds it, how long a newcomer would
    /// wait, in all and [per lane](crate::QueueStats::lane). A key never seen (or evicted as
    /// idle) has an empty, unpaused queue.
    ///
    /// ```
    /// # mod pacer { pub mod limit { pub use ::pacer_limit::*; } }
    /// use std::time::Duration;
    /// use pacer::limit::{Limiter, Quota};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let limiter = Limiter::new(Quota::per_second(10));
    /// limiter.pause_until(&(), tokio::time::Instant::now() + Duration::from_secs(2));
    /// let waiting = tokio::spawn(limiter.clone().acquire(()));
    /// tokio::task::yield_now().await;
    /// let queue = limiter.queue_stats(&());
    /// assert_eq!((queue.waiting, queue.paused), (1, true));
    /// assert!(queue.estimated_wait > Duration::from_secs(2));
    /// waiting.await.unwrap().unwrap();
    /// assert!(!limiter.queue_stats(&()).paused);
    /// # }
    /// ```
    #[must_use]
    pub fn queue_stats(&self, key: &K) -> crate::QueueStats {
        let now = Instant::now();
        let state = self.shared.lock();
        match state.buckets.get(key) {
            Some(bucket) => crate::QueueStats {
                waiting: bucket.queue_len(),
                paused: bucket.is_paused(now),
                estimated_wait: bucket.nth_earliest(now, bucket.queue_len()) - now,
                lanes: Priority::ALL.map(|lane| crate::LaneStats {
                    waiting: bucket.queue_len_in(lane),
                    estimated_wait: bucket.nth_earliest(now, bucket.ahead_of_newcomer(lane)) - now,
                }),
            },
            None => crate::QueueStats::default(),
        }
    }

    /// Counters since the limiter was built, summed over all keys.
    #[must_use]
    pub fn stats(&self) -> LimiterStats {
        let state = self.shared.lock();
        state.counters.snapshot(state.buckets.len())
    }

    /// The [slot sources](crate::LimiterBuilder::slot_sources) the limiter was built with, if
    /// they are a `T`: how the crate that made them reaches them again (e.g. the statistics of
    /// a quota shared through Redis).
    #[must_use]
    pub fn slot_sources<T: 'static>(&self) -> Option<&T> {
        let sources = self.shared.config.sources.as_ref()?;
        sources.as_any().downcast_ref()
    }

    /// Drops the buckets of every idle key now. This also happens on its own as keys come and go.
    pub fn evict_idle(&self) {
        let now = Instant::now();
        self.shared.lock().sweep(now);
    }
}

impl<K> Shared<K> {
    /// Locks the state. A panic while holding the lock leaves the state consistent (every
    /// mutation is a single step), so a poisoned lock is recovered rather than propagated.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State<K>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<K: Key> State<K> {
    /// The bucket of `key`, created on first use.
    pub(crate) fn bucket(&mut self, config: &Config<K>, key: &K, now: Instant) -> &mut Bucket {
        if !self.buckets.contains_key(key) {
            if self.buckets.len() >= self.sweep_at_len {
                self.sweep(now);
                self.sweep_at_len = (self.buckets.len() * 2).max(config.min_sweep_len);
            }
            let quota = (config.quota_fn)(key);
            let shared = config
                .sources
                .as_ref()
                .map(|sources| sources.source(key, &quota, head_waker(&config.this, key)));
            let bucket = Bucket::new(quota, now, shared, config.min_share);
            self.buckets.insert(key.clone(), bucket);
        }
        self.buckets.get_mut(key).expect("bucket was just inserted")
    }

    /// Admits one send on `key` at `now` for a newcomer in `lane` if nobody queued would be
    /// served before it and the quota allows it. Otherwise returns when it would get its turn,
    /// and how many are served before it.
    pub(crate) fn admit_now(
        &mut self,
        config: &Config<K>,
        key: &K,
        lane: Priority,
        now: Instant,
    ) -> Result<(), (Instant, usize)> {
        let bucket = self.bucket(config, key, now);
        let ahead = bucket.ahead_of_newcomer(lane);
        if ahead == 0 && bucket.try_admit(now, Some(lane)) == Admission::Granted {
            bucket.count_newcomer_grant(lane);
            self.counters.acquired += 1;
            return Ok(());
        }
        Err((bucket.nth_earliest(now, ahead), ahead))
    }

    /// The bucket of `key` if it exists (a queued waiter's bucket always does: it is not idle).
    pub(crate) fn existing(&mut self, key: &K) -> Option<&mut Bucket> {
        self.buckets.get_mut(key)
    }

    /// Wakes the head waiter of every key, e.g. when slots may now come sooner than they slept for.
    pub(crate) fn wake_heads(&mut self) {
        for bucket in self.buckets.values_mut() {
            bucket.wake_head();
        }
    }

    pub(crate) fn next_waiter_id(&mut self) -> u64 {
        self.next_waiter_id += 1;
        self.next_waiter_id
    }

    fn sweep(&mut self, now: Instant) {
        let before = self.buckets.len();
        self.buckets.retain(|_, bucket| !bucket.is_idle(now));
        let evicted = before - self.buckets.len();
        if evicted > 0 {
            self.counters.evicted += evicted as u64;
            tracing::trace!(
                evicted,
                live = self.buckets.len(),
                "evicted idle limiter keys"
            );
        }
    }
}

/// Wakes `key`'s head waiter (or every key's) on the limiter `this`, if it still exists.
fn head_waker<K: Key>(this: &Weak<Shared<K>>, key: &K) -> HeadWaker {
    // A key need not be `Sync`; a mutex makes the waker shareable. It is locked only to read.
    let (this, key) = (this.clone(), Mutex::new(key.clone()));
    HeadWaker::new(move |wake| {
        let Some(shared) = this.upgrade() else {
            return;
        };
        let key = key.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut state = shared.lock();
        match wake {
            Wake::Head => {
                if let Some(bucket) = state.existing(&key) {
                    bucket.wake_head();
                }
            }
            Wake::AllHeads => state.wake_heads(),
        }
    })
}
