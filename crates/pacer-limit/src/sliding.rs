//! The sliding-window log: never more than `limit` sends in any window of length `window`.
//!
//! The log keeps runs of sends (an instant and a count), so memory is bounded whatever the
//! limit. Up to [`EXACT_UP_TO`] sends per window, each run is one real send instant and the log is
//! exact. Above that, send instants are rounded *up* to a grid of `window / GRANULES`, so a
//! recorded send expires no earlier than the real one: the log stays conservative (never more
//! than `limit` in any real window) at a cost of at most one granule, 0.1 % of the window.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Quotas up to this many sends per window are tracked exactly.
const EXACT_UP_TO: usize = 1024;
/// Above [`EXACT_UP_TO`], the window is cut into this many granules.
const GRANULES: u32 = 1024;

#[derive(Debug, Clone, Copy)]
struct Run {
    at: Instant,
    count: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct SlidingLog {
    /// Oldest first; instants strictly increase.
    runs: VecDeque<Run>,
    /// Sends in `runs`.
    count: usize,
    limit: usize,
    window: Duration,
    /// Zero when exact.
    granule: Duration,
    origin: Instant,
}

impl SlidingLog {
    pub(crate) fn new(limit: usize, window: Duration, now: Instant) -> Self {
        let granule = if limit <= EXACT_UP_TO {
            Duration::ZERO
        } else {
            // Rounded up to the nanosecond: GRANULES granules cover the whole window, so a
            // window's live runs fall on at most GRANULES + 1 grid points (a granule cut short
            // by the division left a window one point more).
            let nanos = window.as_nanos().div_ceil(u128::from(GRANULES));
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        };
        Self {
            runs: VecDeque::new(),
            count: 0,
            limit,
            window,
            granule,
            origin: now,
        }
    }

    /// A log for a new limit or window that keeps `old`'s sends (conservative either way).
    pub(crate) fn inherit(limit: usize, window: Duration, old: &SlidingLog, now: Instant) -> Self {
        let mut log = Self::new(limit, window, now);
        log.runs.clone_from(&old.runs);
        log.count = old.count;
        log.forget_beyond_limit();
        log
    }

    /// When the `n`-th next send (0-based) would go out if each earlier one went out as soon as
    /// it could: `window` after the send `limit` places before it, which is either recorded or an
    /// earlier future send.
    pub(crate) fn nth_earliest(&self, now: Instant, n: usize) -> Instant {
        let mut j = n;
        let mut hops: u32 = 0;
        loop {
            match (self.count + j).checked_sub(self.limit) {
                None => return now + self.window.saturating_mul(hops),
                Some(i) if i < self.count => {
                    let at = (self.instant_of(i) + self.window).max(now);
                    return at + self.window.saturating_mul(hops);
                }
                Some(i) => {
                    j = i - self.count;
                    hops += 1;
                }
            }
        }
    }

    /// The recorded instant of the `index`-th logged send, oldest first.
    fn instant_of(&self, index: usize) -> Instant {
        let mut seen = 0;
        for run in &self.runs {
            seen += run.count;
            if index < seen {
                return run.at;
            }
        }
        unreachable!("index {index} beyond the {} logged sends", self.count)
    }

    pub(crate) fn record(&mut self, now: Instant) {
        while let Some(front) = self.runs.front() {
            if front.at + self.window > now {
                break;
            }
            self.count -= front.count;
            self.runs.pop_front();
        }
        let at = self.stamp(now);
        match self.runs.back_mut() {
            Some(last) if last.at == at => last.count += 1,
            _ => self.runs.push_back(Run { at, count: 1 }),
        }
        self.count += 1;
        self.forget_beyond_limit();
    }

    /// Drops runs that lie entirely more than `limit` sends back: they constrain nothing.
    fn forget_beyond_limit(&mut self) {
        while let Some(front) = self.runs.front() {
            if self.count - front.count < self.limit {
                break;
            }
            self.count -= front.count;
            self.runs.pop_front();
        }
    }

    /// Makes the log at least as full as if `limit` sends had gone out evenly spaced over the
    /// window that ends at `until`, so that for one window after `until` sends leave one per
    /// `window / limit`, never in a burst into an empty window. Sends already logged stay: the
    /// log afterwards constrains at least as much as before, and as much as the even sends.
    /// Works on runs: O(runs + limit) when exact (at most 1,024 sends), O(runs + granules)
    /// otherwise; called when a key is paused, not per send.
    pub(crate) fn fill_evenly_before(&mut self, until: Instant) {
        let start = until
            .checked_sub(self.window)
            .unwrap_or_else(|| self.origin.min(until));
        let even = self.even_runs(start);
        // Align the newest logged sends with the newest even ones: both sorted, so the later
        // of each pair is sorted too and dominates both. Logged sends more than `limit` back
        // constrain nothing and are dropped.
        let mut logged = self.runs.iter().rev().copied();
        let mut log_run = logged.next();
        let mut newest_first: Vec<Run> = Vec::with_capacity(even.len() + self.runs.len());
        for mut run in even.into_iter().rev() {
            while run.count > 0 {
                match &mut log_run {
                    Some(log) => {
                        let n = run.count.min(log.count);
                        append(&mut newest_first, run.at.max(log.at), n);
                        run.count -= n;
                        log.count -= n;
                        if log.count == 0 {
                            log_run = logged.next();
                        }
                    }
                    None => {
                        append(&mut newest_first, run.at, run.count);
                        run.count = 0;
                    }
                }
            }
        }
        self.runs = newest_first.into_iter().rev().collect();
        self.count = self.limit;
    }

    /// `limit` sends evenly spaced from `start` over one window, as runs on the log's grid.
    fn even_runs(&self, start: Instant) -> Vec<Run> {
        let spacing = self.window / u32::try_from(self.limit).unwrap_or(u32::MAX);
        if self.granule.is_zero() || spacing.is_zero() {
            // Exact (at most EXACT_UP_TO sends), or all at once when the spacing rounds to 0.
            let mut runs: Vec<Run> = Vec::new();
            let mut at = self.stamp(start);
            for _ in 0..self.limit {
                append(&mut runs, at, 1);
                at = self.stamp(at + spacing);
            }
            return runs;
        }
        // Granular: count the sends whose instant rounds up to each granule boundary.
        let (granule, spacing) = (self.granule.as_nanos(), spacing.as_nanos());
        let offset = start.saturating_duration_since(self.origin).as_nanos();
        // Sends at or before `origin + nanos`.
        let sent_by = |nanos: u128| -> usize {
            match nanos.checked_sub(offset) {
                Some(after) => usize::try_from(after / spacing + 1)
                    .unwrap_or(usize::MAX)
                    .min(self.limit),
                None => 0,
            }
        };
        let mut runs = Vec::new();
        let mut boundary = offset.div_ceil(granule) * granule;
        let mut before = 0;
        while before < self.limit {
            let by = sent_by(boundary);
            if by > before {
                let at =
                    self.origin + Duration::from_nanos(u64::try_from(boundary).unwrap_or(u64::MAX));
                runs.push(Run {
                    at,
                    count: by - before,
                });
                before = by;
            }
            boundary += granule;
        }
        runs
    }

    /// `now`, rounded up to the granule grid when the log is not exact.
    fn stamp(&self, now: Instant) -> Instant {
        if self.granule.is_zero() {
            return now;
        }
        let granule = self.granule.as_nanos();
        let since = now.saturating_duration_since(self.origin).as_nanos();
        let rounded = since.div_ceil(granule) * granule;
        self.origin + Duration::from_nanos(u64::try_from(rounded).unwrap_or(u64::MAX))
    }

    /// How many more sends the log admits at `now` before one of its windows is full.
    pub(crate) fn room(&self, now: Instant) -> usize {
        let live: usize = self
            .runs
            .iter()
            .filter(|run| run.at + self.window > now)
            .map(|run| run.count)
            .sum();
        self.limit.saturating_sub(live)
    }

    pub(crate) fn is_idle(&self, now: Instant) -> bool {
        self.runs
            .back()
            .is_none_or(|last| last.at + self.window <= now)
    }
}

/// Adds `count` sends at `at` to the end of `runs`, merged into the last run at the same instant.
fn append(runs: &mut Vec<Run>, at: Instant, count: usize) {
    match runs.last_mut() {
        Some(last) if last.at == at => last.count += count,
        _ => runs.push(Run { at, count }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pacer_testkit::max_in_any_window;

    /// `count` greedy sends, each as early as the log allows, from `start`.
    fn saturate(log: &mut SlidingLog, start: Instant, count: usize) -> Vec<Instant> {
        let mut t = start;
        (0..count)
            .map(|_| {
                t = log.nth_earliest(t, 0);
                log.record(t);
                t
            })
            .collect()
    }

    #[test]
    fn a_large_limit_keeps_memory_bounded_and_stays_conservative() {
        let window = Duration::from_secs(3);
        let origin = Instant::now();
        let mut log = SlidingLog::new(3_000, window, origin);
        // Send in small steps so that instants are spread over the granules.
        let mut sends = Vec::new();
        let mut t = origin;
        for _ in 0..30_000 {
            t = log.nth_earliest(t + Duration::from_micros(300), 0);
            log.record(t);
            sends.push(t);
            assert!(log.runs.len() <= GRANULES as usize + 1);
        }
        assert!(max_in_any_window(&sends, window) <= 3_000);
        // At most one granule (0.1 %) of each window is lost to rounding.
        let achieved = sends.len() as f64 / (*sends.last().unwrap() - origin).as_secs_f64();
        assert!(achieved >= 1_000.0 * 0.99, "{achieved}");
    }

    #[test]
    fn a_small_limit_is_exact() {
        let origin = Instant::now();
        let mut log = SlidingLog::new(100, Duration::from_secs(1), origin);
        let sends = saturate(&mut log, origin, 1_000);
        assert_eq!(max_in_any_window(&sends, Duration::from_secs(1)), 100);
        // Exactly 100 per window: bursts of 100 at 0 s, 1 s, ... 9 s.
        assert_eq!(*sends.last().unwrap() - origin, Duration::from_secs(9));
        assert_eq!(log.runs.len(), 1);
    }

    #[test]
    fn after_filling_sends_leave_evenly_spaced() {
        let origin = Instant::now();
        let window = Duration::from_secs(1);
        let mut log = SlidingLog::new(100, window, origin);
        let until = origin + Duration::from_secs(5);
        log.fill_evenly_before(until);
        let sends = saturate(&mut log, origin, 200);
        let gaps: Vec<_> = sends.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(sends[0], until);
        assert!(
            gaps.iter().all(|&gap| gap == Duration::from_millis(10)),
            "{gaps:?}"
        );
    }

    #[test]
    fn filling_keeps_the_sends_already_logged() {
        let origin = Instant::now();
        let window = Duration::from_secs(1);
        let mut log = SlidingLog::new(10, window, origin);
        // A burst of 10 just before a short pause: the next send still waits for the window.
        saturate(&mut log, origin, 10);
        log.fill_evenly_before(origin + Duration::from_millis(100));
        assert_eq!(log.nth_earliest(origin, 0), origin + window);
        assert_eq!(log.nth_earliest(origin, 9), origin + window);
        assert_eq!(log.count, 10);
    }

    #[test]
    fn a_granular_fill_is_cheap_and_spaces_the_next_window() {
        let origin = Instant::now();
        let window = Duration::from_secs(1);
        let mut log = SlidingLog::new(1_000_000, window, origin);
        let until = origin + Duration::from_secs(3);
        log.fill_evenly_before(until);
        assert!(
            log.runs.len() <= GRANULES as usize + 1,
            "{}",
            log.runs.len()
        );
        assert_eq!(log.count, 1_000_000);
        // The next window's sends are spread over it: no granule holds more than its share
        // (plus one for the rounding), and none goes before `until`.
        let mut sends = Vec::new();
        let mut t = until;
        for _ in 0..20_000 {
            t = log.nth_earliest(t, 0);
            log.record(t);
            sends.push(t);
        }
        assert!(sends[0] >= until);
        let per_granule = 1_000_000 / GRANULES as usize + 1;
        let mut counts = std::collections::BTreeMap::new();
        for at in &sends {
            *counts.entry(*at).or_insert(0usize) += 1;
        }
        assert!(counts.values().all(|&n| n <= per_granule), "{counts:?}");
    }

    proptest::proptest! {
        /// Filling never loosens the log, and it spaces the window after `until` evenly.
        #[test]
        fn filling_is_conservative(
            limit in 1usize..1_500,
            window_ms in 10u64..3_000,
            gaps in proptest::collection::vec(0u64..200, 0..300),
            pause_ms in 0u64..4_000,
            n in 0usize..1_600,
        ) {
            let window = Duration::from_millis(window_ms);
            let origin = Instant::now();
            let mut log = SlidingLog::new(limit, window, origin);
            let mut t = origin;
            for gap in gaps {
                t = log.nth_earliest(t + Duration::from_millis(gap), 0);
                log.record(t);
            }
            let until = t + Duration::from_millis(pause_ms);
            let before = log.clone();
            log.fill_evenly_before(until);
            let spacing = window / u32::try_from(limit).unwrap();
            let even = until + spacing * u32::try_from(n.min(limit - 1)).unwrap();
            proptest::prop_assert!(log.nth_earliest(until, n) >= before.nth_earliest(until, n));
            proptest::prop_assert!(log.nth_earliest(until, n) >= even);
        }

        /// Rounding to granules never lets a real window hold more than the limit.
        #[test]
        fn granular_logs_are_conservative(
            limit in 1_025usize..4_000,
            window_ms in 10u64..5_000,
            gaps in proptest::collection::vec(0u64..2_000, 1..3_000),
        ) {
            let window = Duration::from_millis(window_ms);
            let origin = Instant::now();
            let mut log = SlidingLog::new(limit, window, origin);
            let mut t = origin;
            let mut sends = Vec::new();
            for gap in gaps {
                t = log.nth_earliest(t + Duration::from_micros(gap), 0);
                log.record(t);
                sends.push(t);
            }
            proptest::prop_assert!(max_in_any_window(&sends, window) <= limit);
            proptest::prop_assert!(log.runs.len() <= GRANULES as usize + 1);
        }
    }
}
