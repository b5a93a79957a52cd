//! What every bucket of a shared limiter shares: the options, whether Redis is up, counters.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pacer_limit::Quota;

use tokio::time::Instant;

use crate::clock::RedisClock;
use crate::{Fallback, SharedQuota, SharedStats};

/// The part of a shared limiter that is not per key.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) options: SharedQuota,
    health: Mutex<Health>,
    clock: Mutex<RedisClock>,
    /// This limiter's name among the processes sharing the prefix (random).
    member: String,
    fleet: Mutex<Fleet>,
    /// The servers' pauses shared from this process, per key name, until they end: written
    /// back when Redis answers again after an outage.
    pauses: Mutex<HashMap<Arc<str>, (Quota, Instant)>>,
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

/// How many processes share the quota, as the membership heartbeats last said.
#[derive(Debug)]
struct Fleet {
    /// The most processes heard of lately: the share while Redis is away is `1 / peak`.
    peak: Option<NonZeroU32>,
    /// When `peak` was last heard; a smaller count replaces it only a member's life later,
    /// so that a restarted Redis, which hears of the processes one by one, never shrinks it.
    peak_at: Instant,
    /// This limiter's rank among the members at the last heartbeat.
    rank: Option<u32>,
    next_heartbeat: Instant,
}

impl Fleet {
    /// A heartbeat's count at `now`, members living `life`: a count at least the peak
    /// replaces it; a smaller one only once the peak is older than a member's life.
    fn observe(&mut self, alive: NonZeroU32, now: Instant, life: Duration) {
        let aged = later(self.peak_at, life) <= now;
        if self.peak.is_none_or(|peak| alive >= peak) || aged {
            if self.peak != Some(alive) {
                tracing::debug!(processes = alive, "processes sharing the quota");
            }
            self.peak = Some(alive);
            self.peak_at = now;
        }
    }
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
            member: random_member(),
            fleet: Mutex::new(Fleet {
                peak: None,
                peak_at: Instant::now(),
                rank: None,
                next_heartbeat: Instant::now(),
            }),
            pauses: Mutex::new(HashMap::new()),
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

    fn fleet(&self) -> std::sync::MutexGuard<'_, Fleet> {
        self.fleet.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This limiter's member name in the prefix's membership.
    pub(crate) fn member(&self) -> &str {
        &self.member
    }

    /// How long a member counts as alive after its heartbeat: three heartbeats and a timeout.
    pub(crate) fn member_life(&self) -> Duration {
        self.heartbeat_every()
            .saturating_mul(3)
            .saturating_add(self.options.timeout)
    }

    fn heartbeat_every(&self) -> Duration {
        self.options.retry_every.max(Duration::from_millis(10))
    }

    /// Whether to send a heartbeat now (at most one per `retry_every`).
    pub(crate) fn claim_heartbeat(&self, now: Instant) -> bool {
        let mut fleet = self.fleet();
        if fleet.next_heartbeat <= now {
            fleet.next_heartbeat = later(now, self.heartbeat_every());
            return true;
        }
        false
    }

    /// A heartbeat's answer: `alive` processes share the prefix now, this one at `rank`.
    pub(crate) fn observe_fleet(&self, alive: u32, rank: u32, now: Instant) {
        let Some(alive) = NonZeroU32::new(alive) else {
            return;
        };
        let life = self.member_life();
        let mut fleet = self.fleet();
        fleet.observe(alive, now, life);
        fleet.rank = Some(rank);
    }

    /// The grid of this process's local slots at `period` (its share's interval) among
    /// `processes`: every process's slots lie on Redis's clock at `k x period` plus its rank's
    /// offset, `rank x period / processes`, so that the shares interleave evenly as the shared
    /// schedule did, mapped through each one's clock anchor. `None` before Redis has said this
    /// process's rank (each share then paces on its own).
    pub(crate) fn local_grid(
        &self,
        now: Instant,
        period: Duration,
        processes: NonZeroU32,
        grace: Duration,
    ) -> Option<crate::slots::Grid> {
        let rank = self.fleet().rank?;
        let period_us = u64::try_from(period.as_micros()).ok()?.max(1);
        let offset_us = period_us / u64::from(processes.get()) * u64::from(rank % processes);
        let clock = self.clock.lock().unwrap_or_else(|e| e.into_inner());
        let redis_now = clock.redis_at(now)?;
        // The first slot of this rank at or after now, on Redis's clock.
        let index = redis_now.saturating_sub(offset_us).div_ceil(period_us);
        let origin = clock.local(index.saturating_mul(period_us).saturating_add(offset_us))?;
        Some(crate::slots::Grid::new(origin, period, grace))
    }

    /// Keeps a server's pause of `name` until it ends, to write back after an outage.
    pub(crate) fn remember_pause(&self, name: &Arc<str>, quota: Quota, until: Instant) {
        let mut pauses = self.pauses.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        pauses.retain(|_, (_, end)| *end > now);
        let entry = pauses.entry(Arc::clone(name)).or_insert((quota, until));
        *entry = (quota, entry.1.max(until));
    }

    /// The pauses remembered that still hold at `now`.
    pub(crate) fn pauses_in_force(&self, now: Instant) -> Vec<(Arc<str>, Quota, Instant)> {
        let mut pauses = self.pauses.lock().unwrap_or_else(|e| e.into_inner());
        pauses.retain(|_, (_, end)| *end > now);
        pauses
            .iter()
            .map(|(name, &(quota, until))| (Arc::clone(name), quota, until))
            .collect()
    }

    /// How many processes share the quota: as heard from Redis, or the configured guess
    /// until then. `None` when the fallback is not a local share.
    pub(crate) fn processes(&self) -> Option<NonZeroU32> {
        let Fallback::Local { processes } = self.options.fallback else {
            return None;
        };
        Some(self.fleet().peak.unwrap_or(processes))
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

    /// A call failed or timed out: Redis counts as down for every key at once. Returns
    /// whether it was counted as up until now (every key's head should then look again).
    pub(crate) fn failed(&self, error: &dyn std::fmt::Display, now: Instant) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut health = self.health();
        health.retry_at = later(now, self.options.retry_every);
        if health.down_since.is_none() {
            health.down_since = Some(now);
            drop(health);
            crate::metrics::redis_fallback();
            tracing::warn!(
                %error,
                fallback = ?self.options.fallback,
                processes = self.processes().map(NonZeroU32::get),
                retry_every = ?self.options.retry_every,
                "Redis is unreachable or slow; pacing with the local fallback until it answers"
            );
            return true;
        }
        tracing::debug!(%error, "Redis still unreachable");
        false
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

/// A member name no other limiter picks: the process id and a randomly keyed hash of the
/// time (std's hasher keys are random per process), so no dependency is needed for it.
fn random_member() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(since) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(since.as_nanos());
    }
    format!("{}-{:016x}", std::process::id(), hasher.finish())
}

/// `now + wait`, saturating far in the future rather than overflowing.
pub(crate) fn later(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(now: Instant) -> Fleet {
        Fleet {
            peak: None,
            peak_at: now,
            rank: None,
            next_heartbeat: now,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_fleet_grows_at_once_and_shrinks_only_after_a_member_life() {
        let (now, life) = (Instant::now(), Duration::from_secs(3));
        let n = |n: u32| NonZeroU32::new(n).unwrap();
        let mut fleet = fleet(now);
        fleet.observe(n(2), now, life);
        fleet.observe(n(4), now + Duration::from_millis(10), life);
        assert_eq!(fleet.peak, Some(n(4)));
        // A restarted Redis hears of the processes one by one: the share stays a quarter.
        fleet.observe(n(1), now + Duration::from_secs(1), life);
        fleet.observe(n(3), now + Duration::from_secs(2), life);
        assert_eq!(fleet.peak, Some(n(4)));
        // Four heard again: the peak is fresh again.
        fleet.observe(n(4), now + Duration::from_millis(2500), life);
        fleet.observe(n(3), now + Duration::from_secs(5), life);
        assert_eq!(fleet.peak, Some(n(4)));
        // A process gone for longer than a member's life: the share grows.
        fleet.observe(n(3), now + Duration::from_secs(6), life);
        assert_eq!(fleet.peak, Some(n(3)));
    }
}
