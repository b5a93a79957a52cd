//! The pure admission arithmetic of each [`Model`]: no locks, no waiting, only instants.
//!
//! Every admission is recorded at the instant it really happened (never at the instant it was
//! scheduled for), so the invariants hold on real send times: a waiter woken late by the timer
//! loses its lateness rather than letting the next send crowd it.

use std::time::Duration;

use tokio::time::Instant;

use crate::quota::{Model, Quota};
use crate::sliding::SlidingLog;

/// The admission state of one key under one quota.
#[derive(Debug, Clone)]
pub(crate) enum ModelState {
    /// GCRA: `tat` is the theoretical arrival time of the next send at the steady rate.
    Gcra {
        tat: Instant,
        interval: Duration,
        /// How far before `tat` a send may go out: `(burst - 1) * interval`.
        tolerance: Duration,
    },
    /// Sliding window: a log of recent sends.
    Sliding(SlidingLog),
}

impl ModelState {
    pub(crate) fn new(quota: &Quota, now: Instant) -> Self {
        match quota.model() {
            Model::Gcra { burst } => {
                let interval = quota.emission_interval();
                ModelState::Gcra {
                    tat: now,
                    interval,
                    tolerance: interval.saturating_mul(burst.get() - 1),
                }
            }
            Model::SlidingWindow => ModelState::Sliding(SlidingLog::new(
                quota.limit() as usize,
                quota.effective_window(),
                now,
            )),
        }
    }

    /// A state for `quota` that inherits the history of `self`, so that switching quotas never
    /// grants a burst the old history forbids. Used when a key's rate is changed at run time.
    ///
    /// Across models the history cannot be translated; the second value is then the instant
    /// before which nothing may be sent (the old model's next free slot).
    pub(crate) fn requota(&self, quota: &Quota, now: Instant) -> (Self, Option<Instant>) {
        let mut next = ModelState::new(quota, now);
        match (self, &mut next) {
            (ModelState::Gcra { tat: old, .. }, ModelState::Gcra { tat, .. }) => *tat = *old,
            (ModelState::Sliding(old), ModelState::Sliding(log)) => {
                *log =
                    SlidingLog::inherit(quota.limit() as usize, quota.effective_window(), old, now);
            }
            _ => return (next, Some(self.earliest(now))),
        }
        (next, None)
    }

    /// The earliest instant at or after `now` at which one send is admitted.
    pub(crate) fn earliest(&self, now: Instant) -> Instant {
        self.nth_earliest(now, 0)
    }

    /// The instant the `n`-th next send (0-based) would be admitted if every earlier one went out
    /// as soon as it could: the estimate a waiter at queue position `n` uses for its maximum wait.
    pub(crate) fn nth_earliest(&self, now: Instant, n: usize) -> Instant {
        match self {
            ModelState::Gcra {
                tat,
                interval,
                tolerance,
            } => {
                let base = (*tat).max(now);
                let steps = u32::try_from(n).unwrap_or(u32::MAX);
                let at = base + interval.saturating_mul(steps);
                at.checked_sub(*tolerance).unwrap_or(now).max(now)
            }
            ModelState::Sliding(log) => log.nth_earliest(now, n),
        }
    }

    /// Records a send at `now`. The caller has checked `earliest(now) <= now`.
    pub(crate) fn record(&mut self, now: Instant) {
        match self {
            ModelState::Gcra { tat, interval, .. } => *tat = (*tat).max(now) + *interval,
            ModelState::Sliding(log) => log.record(now),
        }
    }

    /// Makes the state as constraining as if the key had sent at its full rate until `until`
    /// (and at least as constraining as it is): after a pause, sends leave evenly spaced at the
    /// quota's rate rather than all at once, which strict servers would refuse.
    pub(crate) fn fill_until(&mut self, until: Instant) {
        match self {
            ModelState::Gcra { tat, tolerance, .. } => *tat = (*tat).max(until + *tolerance),
            ModelState::Sliding(log) => log.fill_evenly_before(until),
        }
    }

    /// Whether the state is indistinguishable from a fresh one at `now`, so it can be dropped.
    pub(crate) fn is_idle(&self, now: Instant) -> bool {
        match self {
            ModelState::Gcra { tat, .. } => *tat <= now,
            ModelState::Sliding(log) => log.is_idle(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn quota() -> impl Strategy<Value = Quota> {
        (1u32..50, 1u64..2_000, any::<bool>(), 1u32..50).prop_map(|(limit, ms, sliding, burst)| {
            let quota = Quota::new(limit, Duration::from_millis(ms));
            if sliding {
                quota.sliding_window()
            } else {
                quota.gcra(burst)
            }
        })
    }

    /// A state that admitted one send after each gap of `history` (in milliseconds) as soon as
    /// the quota allowed it, and the instant of the last send.
    fn replay(quota: &Quota, history: &[u64]) -> (ModelState, Instant) {
        let mut t = Instant::now();
        let mut state = ModelState::new(quota, t);
        for &gap in history {
            t = state.earliest(t + Duration::from_millis(gap));
            state.record(t);
        }
        (state, t)
    }

    proptest! {
        /// The estimate a queued waiter uses for its maximum wait is exactly when it would be
        /// admitted if everybody ahead of it went out as soon as allowed.
        #[test]
        fn nth_earliest_predicts_sequential_admissions(
            quota in quota(),
            history in prop::collection::vec(0u64..300, 0..80),
            n in 0usize..120,
        ) {
            let (state, t) = replay(&quota, &history);
            let predicted = state.nth_earliest(t, n);
            let mut simulated = state.clone();
            let mut at = t;
            for _ in 0..=n {
                at = simulated.earliest(at);
                simulated.record(at);
            }
            prop_assert_eq!(predicted, at);
        }

        /// Idle means forgettable: an idle state admits exactly what a fresh one admits.
        #[test]
        fn an_idle_state_behaves_like_a_fresh_one(
            quota in quota(),
            history in prop::collection::vec(0u64..300, 0..40),
            later in 0u64..5_000,
        ) {
            let (state, t) = replay(&quota, &history);
            let now = t + Duration::from_millis(later);
            if state.is_idle(now) {
                let fresh = ModelState::new(&quota, now);
                for n in 0..(quota.limit() as usize + 2) {
                    prop_assert_eq!(state.nth_earliest(now, n), fresh.nth_earliest(now, n));
                }
            }
        }
    }
}
