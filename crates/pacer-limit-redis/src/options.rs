//! How a limiter shares its quota through Redis, and what it does when Redis is away.

use std::num::NonZeroU32;
use std::time::Duration;

use super::RedisStore;

/// The longest duration setting, so that instant arithmetic never overflows.
const MAX_SETTING: Duration = Duration::from_secs(3600);

/// What a limiter does while Redis is unreachable or slower than [`SharedQuota::timeout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fallback {
    /// Pace locally at `1 / processes` of the quota (the limit divided, or, when the limit is
    /// smaller than `processes`, the window stretched), so that the processes together stay
    /// within it. The number is the one Redis counted through the limiters' heartbeats while it
    /// was up; `processes` is the guess until the first heartbeat's answer. An evenly spaced
    /// quota's local share goes on from the process's own pace (no burst, no gap); a sliding
    /// window's first local send waits one window, so that what the others sent through Redis
    /// (possibly the whole window at its start) has aged out.
    Local {
        /// How many processes share the quota, until Redis says.
        processes: NonZeroU32,
    },
    /// Send nothing until Redis answers again; waiters queue, bounded by
    /// [`LimiterBuilder::max_wait`](pacer_limit::LimiterBuilder::max_wait) and the queue bound.
    Wait,
}

/// Shares a [`Limiter`](pacer_limit::Limiter)'s quotas with every process that uses the same
/// Redis and prefix. Pass it to [`LimiterBuilderExt::shared`](crate::LimiterBuilderExt::shared).
///
/// Defaults: leases of up to 8 slots, a slot usable up to half the quota's margin (at least
/// 5 ms) after its time, a 250 ms timeout per Redis call, another try every second while Redis
/// is away, and the [`Fallback::Local`] share of `expected_processes`.
#[derive(Clone, Debug)]
#[must_use]
pub struct SharedQuota {
    pub(crate) store: RedisStore,
    pub(crate) lease: u32,
    pub(crate) slot_grace: Option<Duration>,
    pub(crate) timeout: Duration,
    pub(crate) retry_every: Duration,
    pub(crate) fallback: Fallback,
}

impl SharedQuota {
    /// Shares through `store`, among about `expected_processes` processes: the size of each
    /// one's share when Redis is away, until Redis has counted the processes that share it.
    pub fn new(store: RedisStore, expected_processes: u32) -> Self {
        Self {
            store,
            lease: 8,
            slot_grace: None,
            timeout: Duration::from_millis(250),
            retry_every: Duration::from_secs(1),
            fallback: Fallback::Local {
                processes: NonZeroU32::new(expected_processes).unwrap_or(NonZeroU32::MIN),
            },
        }
    }

    /// Reserves up to `slots` slots per Redis round trip when that many requests wait (default
    /// 8; 1 asks Redis once per request). Larger leases cost fewer round trips under load; a
    /// process then holds slots a little ahead of use, which the others cannot take, and which
    /// come back to Redis only where the model allows when their waiters give up.
    pub fn lease(mut self, slots: u32) -> Self {
        self.lease = slots.max(1);
        self
    }

    /// How late after its time a reserved slot may still be used (default: half the quota's
    /// [margin](pacer_limit::Quota::with_margin), at least 5 ms). A slot used later could crowd the
    /// slots of other processes at the server; it is given back instead. The margin should
    /// exceed this plus the network's jitter; a quota without a margin still gets 5 ms, as
    /// timers wake a millisecond or two late. At most an hour.
    pub fn slot_grace(mut self, grace: Duration) -> Self {
        self.slot_grace = Some(grace.min(MAX_SETTING));
        self
    }

    /// How long a Redis call may take before Redis counts as down (default 250 ms; at most an
    /// hour). A call that times out is still awaited in the background, and the slots it
    /// reserved are given back.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.min(MAX_SETTING);
        self
    }

    /// How often to try Redis again while it is down, and to tell it this limiter is alive
    /// while it is up (default one second; at most an hour). Back after an outage, the key
    /// pauses `retry_every + timeout` (plus a window for a sliding window), while every process
    /// keeps its local pace: long enough for the others to find Redis again.
    pub fn retry_every(mut self, every: Duration) -> Self {
        self.retry_every = every.min(MAX_SETTING);
        self
    }

    /// How late a slot of `quota` may be used.
    pub(crate) fn grace_for(&self, quota: &pacer_limit::Quota) -> Duration {
        self.slot_grace
            .unwrap_or_else(|| (quota.margin() / 2).max(Duration::from_millis(5)))
    }

    /// What to do while Redis is away (default [`Fallback::Local`] at `1 / expected_processes`).
    pub fn fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = fallback;
        self
    }
}

/// Counters of a shared limiter's traffic with Redis, from
/// [`LimiterExt::shared_stats`](crate::LimiterExt::shared_stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedStats {
    /// Reservation calls that succeeded.
    pub reservations: u64,
    /// Slots those calls reserved.
    pub slots_reserved: u64,
    /// Reserved slots not used (their waiter gave up, a pause came, or they expired), offered back.
    pub slots_unused: u64,
    /// Calls that failed or timed out.
    pub failures: u64,
    /// Slots granted by the local fallback while Redis was away.
    pub fallback_grants: u64,
    /// Whether Redis is counted as down right now.
    pub redis_down: bool,
}
