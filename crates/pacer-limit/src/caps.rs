//! The windows a quota stacks on top of its own ([`Quota::and`]): one sliding log per cap, so
//! that never more than a cap's limit of sends falls in any of its windows.
//!
//! A cap only says when the key may send at the earliest; the primary model paces. Caps are not
//! filled by a pause (a 30 s Retry-After must not cost a daily window), and they keep their
//! history when the primary quota changes (learning and [`crate::Limiter::set_quota`] pace the
//! primary window; a cap stays as configured).

use tokio::time::Instant;

use crate::quota::{Cap, Quota};
use crate::sliding::SlidingLog;

/// How much of a cap its own count must have used for a refusal without a wait to be put down
/// to it: the server may count a few sends the limiter did not see (another client, a restart).
pub(crate) const ABOUT_SPENT_PERCENT: u64 = 95;

/// The sliding log of each cap of one key's quota.
#[derive(Debug, Clone, Default)]
pub(crate) struct Caps {
    /// In the order of [`Quota::caps`]; empty (no allocation) for a quota of one window.
    logs: Vec<(Cap, SlidingLog)>,
}

impl Caps {
    pub(crate) fn new(quota: &Quota, now: Instant) -> Self {
        Self {
            logs: quota.caps().map(|cap| (cap, log_for(&cap, now))).collect(),
        }
    }

    /// The caps of `quota`, each keeping the history of the same cap in `self`: a cap that was
    /// already counted keeps its count, a new one starts empty (the limiter knows no earlier
    /// sends against it), and a cap `quota` lacks is dropped.
    pub(crate) fn requota(&self, quota: &Quota, now: Instant) -> Self {
        let logs = quota
            .caps()
            .map(|cap| {
                let log = match self.logs.iter().find(|(old, _)| *old == cap) {
                    Some((_, old)) => old.clone(),
                    None => log_for(&cap, now),
                };
                (cap, log)
            })
            .collect();
        Self { logs }
    }

    /// Whether the quota has any cap at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.logs.is_empty()
    }

    /// The earliest instant at or after `now` at which every cap has room for the `n`-th next
    /// send (0-based), if each earlier one went out as soon as the caps allowed. Exact for
    /// `n = 0`; for a later send a lower bound once combined with the primary model's own
    /// estimate (exact when the logged sends were spaced at least at the primary's pace).
    pub(crate) fn nth_earliest(&self, now: Instant, n: usize) -> Instant {
        self.logs
            .iter()
            .map(|(_, log)| log.nth_earliest(now, n))
            .fold(now, Instant::max)
    }

    /// Records a send at `now` in every cap.
    pub(crate) fn record(&mut self, now: Instant) {
        for (_, log) in &mut self.logs {
            log.record(now);
        }
    }

    /// The cap that is (about) spent at `now`, at least [`ABOUT_SPENT_PERCENT`] of it used,
    /// with the instant it has room for one send more than now (its oldest counted send leaves
    /// the window); the one freeing last when several are. What a refusal without a wait is
    /// put down to (see [`crate::Limiter::observe`]). Each cap is counted by the key's own log
    /// or by `shared` (a quota shared with other processes: how many slots it counts and when
    /// its oldest leaves), whichever counts more.
    pub(crate) fn about_spent(
        &self,
        now: Instant,
        shared: impl Fn(&Cap) -> Option<(u64, Instant)>,
    ) -> Option<(Cap, Instant)> {
        self.logs
            .iter()
            .filter_map(|(cap, log)| {
                let room = log.room(now);
                let limit = u64::from(cap.limit());
                let own = (limit - room as u64, log.nth_earliest(now, room));
                let (used, frees_at) = match shared(cap) {
                    Some((used, frees_at)) if used > own.0 => (used, frees_at.max(now)),
                    _ => own,
                };
                (used * 100 >= limit * ABOUT_SPENT_PERCENT).then_some((*cap, frees_at))
            })
            .max_by_key(|(_, frees_at)| *frees_at)
    }

    pub(crate) fn is_idle(&self, now: Instant) -> bool {
        self.logs.iter().all(|(_, log)| log.is_idle(now))
    }
}

fn log_for(cap: &Cap, now: Instant) -> SlidingLog {
    SlidingLog::new(cap.limit() as usize, cap.effective_window(), now)
}
