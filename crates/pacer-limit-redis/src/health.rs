//! What every bucket of a shared limiter shares: the options, whether Redis is up, counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::RedisClock;
use crate::{SharedQuota, SharedStats};

/// The part of a shared limiter that is not per key.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) options: SharedQuota,
    health: Mutex<Health>,
    clock: Mutex<RedisClock>,
    reservations: AtomicU64,
    slots_reserved: AtomicU64,
    slots_unused: AtomicU64,
    failures: AtomicU64,
    fallback_grants: AtomicU64,
}

#[derive(Debug)]
struct Health {
    down_since: Option<Instant>,
    /// While down: when to try Redis again.
    retry_at: Instant,
}

/// Whether slots come from Redis now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Shared,
    /// Redis is away; `retry_at` is when it is tried again.
    Fallback {
        retry_at: Instant,
    },
}

impl Core {
    pub(crate) fn new(options: SharedQuota) -> Self {
        Self {
            options,
            health: Mutex::new(Health {
                down_since: None,
                retry_at: Instant::now(),
            }),
            clock: Mutex::new(RedisClock::default()),
            reservations: AtomicU64::new(0),
            slots_reserved: AtomicU64::new(0),
            slots_unused: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            fallback_grants: AtomicU64::new(0),
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn mode(&self) -> Mode {
        let health = self.health();
        match health.down_since {
            None => Mode::Shared,
            Some(_) => Mode::Fallback {
                retry_at: health.retry_at,
            },
        }
    }

    /// Learns Redis's clock from a reply: Redis read `redis_micros` before `received`.
    /// Returns how much sooner the slots already leased now map.
    pub(crate) fn observe_clock(&self, redis_micros: u64, received: Instant) -> Duration {
        self.clock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(redis_micros, received)
    }

    /// The local instant of a Redis instant: never earlier than the true one.
    pub(crate) fn local_instant(&self, redis_micros: u64) -> Instant {
        let clock = self.clock.lock().unwrap_or_else(|e| e.into_inner());
        // Slots exist only after a reply, which set the clock.
        clock.local(redis_micros).unwrap_or_else(Instant::now)
    }

    /// While Redis is down, lets one caller per retry interval try it again.
    pub(crate) fn claim_retry(&self, now: Instant) -> bool {
        let mut health = self.health();
        if health.down_since.is_some() && health.retry_at <= now {
            health.retry_at = later(now, self.options.retry_every);
            return true;
        }
        false
    }

    /// Returns whether Redis was counted as down until now.
    pub(crate) fn succeeded(&self, slots: usize, now: Instant) -> bool {
        self.reservations.fetch_add(1, Ordering::Relaxed);
        self.slots_reserved
            .fetch_add(slots as u64, Ordering::Relaxed);
        let mut health = self.health();
        if let Some(since) = health.down_since.take() {
            tracing::info!(
                down_for = ?now.saturating_duration_since(since),
                "Redis answers again; the quota is shared again"
            );
            return true;
        }
        false
    }

    pub(crate) fn failed(&self, error: &dyn std::fmt::Display, now: Instant) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut health = self.health();
        health.retry_at = later(now, self.options.retry_every);
        if health.down_since.is_none() {
            health.down_since = Some(now);
            crate::metrics::redis_fallback();
            tracing::warn!(
                %error,
                fallback = ?self.options.fallback,
                retry_every = ?self.options.retry_every,
                "Redis is unreachable or slow; pacing with the local fallback until it answers"
            );
        } else {
            tracing::debug!(%error, "Redis still unreachable");
        }
    }

    /// A reservation that came back after its timeout (its slots are then given back).
    pub(crate) fn count_late(&self, slots: usize) {
        self.reservations.fetch_add(1, Ordering::Relaxed);
        self.slots_reserved
            .fetch_add(slots as u64, Ordering::Relaxed);
    }

    pub(crate) fn count_unused(&self, slots: usize) {
        self.slots_unused.fetch_add(slots as u64, Ordering::Relaxed);
    }

    pub(crate) fn count_fallback_grant(&self) {
        self.fallback_grants.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> SharedStats {
        SharedStats {
            reservations: self.reservations.load(Ordering::Relaxed),
            slots_reserved: self.slots_reserved.load(Ordering::Relaxed),
            slots_unused: self.slots_unused.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            fallback_grants: self.fallback_grants.load(Ordering::Relaxed),
            redis_down: self.health().down_since.is_some(),
        }
    }
}

/// `now + wait`, saturating far in the future rather than overflowing.
pub(crate) fn later(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
}
