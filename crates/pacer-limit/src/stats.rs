//! Counters readable from the [`Limiter`](crate::Limiter) handle.

use std::time::Duration;

use crate::priority::{Priority, LANES};

/// Counters kept under the limiter's lock, so the hot path pays no extra atomic.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) acquired: u64,
    pub(crate) waited: u64,
    pub(crate) rejected: u64,
    pub(crate) cancelled: u64,
    pub(crate) evicted: u64,
    pub(crate) total_wait: Duration,
}

impl Counters {
    /// A queued waiter took its slot after `waited`.
    pub(crate) fn count_wait(&mut self, waited: Duration) {
        self.acquired += 1;
        self.waited += 1;
        self.total_wait += waited;
    }

    pub(crate) fn snapshot(&self, live_keys: usize) -> LimiterStats {
        LimiterStats {
            acquired: self.acquired,
            waited: self.waited,
            rejected: self.rejected,
            cancelled: self.cancelled,
            evicted_keys: self.evicted,
            live_keys,
            total_wait: self.total_wait,
        }
    }
}

/// A snapshot of a limiter's counters, summed over all keys since it was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimiterStats {
    /// Slots granted (immediately or after waiting).
    pub acquired: u64,
    /// Of those, how many had to wait.
    pub waited: u64,
    /// Requests refused at once (maximum wait, full queue, or a failed `try_acquire`).
    pub rejected: u64,
    /// Waiters dropped before their turn; they took no capacity.
    pub cancelled: u64,
    /// Buckets of idle keys dropped.
    pub evicted_keys: u64,
    /// Keys with a bucket right now.
    pub live_keys: usize,
    /// Time spent waiting, summed over all granted requests.
    pub total_wait: Duration,
}

/// One key's queue at a glance: what a p-queue user reads as `size` and `isPaused`. A snapshot:
/// the queue moves on as soon as it is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Requests waiting for a slot of the key (p-queue's `size`).
    pub waiting: usize,
    /// Whether a pause (a server's Retry-After) holds the key now (p-queue's `isPaused`).
    pub paused: bool,
    /// How long a request arriving now would wait, behind everybody queued.
    pub estimated_wait: Duration,
    /// Per lane, in [`Priority::ALL`]'s order; read with [`Self::lane`].
    pub(crate) lanes: [LaneStats; LANES],
}

impl QueueStats {
    /// The queue of one lane: how many wait in it, and how long a newcomer in it would wait
    /// (behind the lanes above it and its own, as far as the queue knows now).
    #[must_use]
    pub fn lane(&self, priority: Priority) -> LaneStats {
        self.lanes[priority.index()]
    }
}

/// One lane of a key's queue at a glance ([`QueueStats::lane`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LaneStats {
    /// Requests waiting in the lane.
    pub waiting: usize,
    /// How long a request arriving now in the lane would wait.
    pub estimated_wait: Duration,
}
