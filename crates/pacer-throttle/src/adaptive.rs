//! Learning a key's real rate from the server's refusals.
//!
//! On a refusal the key's quota drops to just under what the server *accepted* over the last
//! window, which, when the client was pushing, is the server's limit: a client configured 10x
//! too fast lands under the real limit after one refusal instead of halving its way down over
//! many. Successes then raise the quota along a cubic curve (CUBIC's shape: fast at first, flat
//! near the learned limit, probing beyond it ever faster the longer no refusal comes), bounded
//! by the configured quota. Refusals of requests sent before the last decrease are old news and
//! do not decrease again, so a burst of refusals counts once.
//!
//! Compared with AWS's adaptive retry mode, which also uses CUBIC: it decreases from its own
//! send rate, so a client far above the limit needs many rounds; it ignores Retry-After; and
//! it is per process. Here the decrease starts from the accepted rate, Retry-After pauses the
//! key, and the state lives in the shared limiter every clone and task use.

use std::time::Duration;

use tokio::time::Instant;

/// How a [`ThrottleLayer`](crate::ThrottleLayer) adapts a key's rate (on by default).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adaptive {
    enabled: bool,
    backoff: f64,
    recovery_windows: u32,
}

impl Default for Adaptive {
    fn default() -> Self {
        Self {
            enabled: true,
            backoff: 0.95,
            recovery_windows: 10,
        }
    }
}

impl Adaptive {
    /// No adaptation: the key's quota stays as configured; refusals only pause it.
    #[must_use]
    pub fn off() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// After a refusal, pace at this fraction of the rate the server accepted over the last
    /// window (default 0.95; clamped to `0.1..=1.0`).
    #[must_use]
    pub fn backoff(mut self, fraction: f64) -> Self {
        self.backoff = if fraction.is_nan() {
            Self::default().backoff
        } else {
            fraction.clamp(0.1, 1.0)
        };
        self
    }

    /// How many windows of the key's quota the rate takes to climb back to the learned limit
    /// (default 10, at least 1). Longer means fewer probes past the limit, so fewer refusals.
    #[must_use]
    pub fn recovery_windows(mut self, windows: u32) -> Self {
        self.recovery_windows = windows.max(1);
        self
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled
    }
}

/// What the caller should do with the key's quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Keep,
    /// Pace the key at this many requests per window of its configured quota.
    Limit(u32),
    /// Back at the configured quota: restore it and forget the key's adaptive state.
    Recovered,
}

/// Sub-windows of the accepted-requests counter: the count is exact to one sub-window.
const SLOTS: u32 = 8;
/// How many sub-windows the counter remembers: three windows, so that answers arriving late
/// still find the slot of their send time.
const KEPT_SLOTS: usize = 3 * SLOTS as usize;

/// Accepted requests counted by when they were *sent*, in sub-windows of `window / SLOTS`. A
/// success that comes back late still counts where it belongs, so the count for a window is
/// not short of the requests still in flight when it was first read.
#[derive(Clone, Debug)]
struct AcceptedCount {
    origin: Instant,
    window: Duration,
    slot_length: Duration,
    /// `(slot number, accepted)`, oldest first.
    slots: std::collections::VecDeque<(u64, u64)>,
}

impl AcceptedCount {
    fn new(window: Duration, now: Instant) -> Self {
        let slot_length = (window / SLOTS).max(Duration::from_micros(1));
        Self {
            // Early enough that any send time of a request still in flight is after it.
            origin: now.checked_sub(window * 4).unwrap_or(now),
            window,
            slot_length,
            slots: std::collections::VecDeque::with_capacity(KEPT_SLOTS + 1),
        }
    }

    fn slot_of(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.origin).as_nanos() / self.slot_length.as_nanos()) as u64
    }

    /// One more request sent at `sent_at` was accepted.
    fn add(&mut self, sent_at: Instant) {
        let slot = self.slot_of(sent_at);
        match self.slots.iter().rposition(|&(number, _)| number <= slot) {
            Some(index) if self.slots[index].0 == slot => self.slots[index].1 += 1,
            Some(index) => self.slots.insert(index + 1, (slot, 1)),
            None => self.slots.push_front((slot, 1)),
        }
        while self.slots.len() > KEPT_SLOTS {
            self.slots.pop_front();
        }
    }

    /// Accepted among the requests sent in the window ending at `end`: whole sub-windows, and
    /// the oldest in proportion to the part of it inside the window.
    fn sent_in_window_before(&self, end: Instant) -> f64 {
        let Some(start) = end.checked_sub(self.window) else {
            return self.slots.iter().map(|&(_, count)| count as f64).sum();
        };
        let (first, last) = (self.slot_of(start), self.slot_of(end));
        let first_end = self.origin + self.slot_length * (first as u32 + 1);
        let first_share = first_end.saturating_duration_since(start).as_secs_f64()
            / self.slot_length.as_secs_f64();
        self.slots
            .iter()
            .filter(|&&(number, _)| number >= first && number <= last)
            .map(|&(number, count)| {
                if number == first {
                    count as f64 * first_share.min(1.0)
                } else {
                    count as f64
                }
            })
            .sum()
    }

    fn is_empty(&self, now: Instant) -> bool {
        let oldest_useful = self.slot_of(now.checked_sub(self.window * 2).unwrap_or(now));
        self.slots
            .back()
            .is_none_or(|&(number, _)| number < oldest_useful)
    }
}

/// The state after a decrease: where the cubic curve starts and aims.
#[derive(Clone, Copy, Debug)]
struct Recovery {
    /// The learned limit, in requests per window.
    peak: f64,
    /// The rate in force when the server refused: the learned limit never exceeds it.
    cap: f64,
    /// When the refusal was seen: the window that ends here is the one measured.
    refused_at: Instant,
    decreased_at: Instant,
    limit: u32,
}

/// The adaptive state of one key.
#[derive(Clone, Debug)]
pub(crate) struct KeyRate {
    accepted: AcceptedCount,
    recovery: Option<Recovery>,
    window: Duration,
}

impl KeyRate {
    pub(crate) fn new(window: Duration, now: Instant) -> Self {
        Self {
            accepted: AcceptedCount::new(window, now),
            recovery: None,
            window,
        }
    }

    /// Nothing to remember: no recent acceptances and no decrease in force.
    pub(crate) fn is_idle(&mut self, now: Instant) -> bool {
        self.recovery.is_none() && self.accepted.is_empty(now)
    }

    /// A request sent at `sent_at` was accepted. `ceiling` is the configured limit per window.
    pub(crate) fn on_success(
        &mut self,
        params: &Adaptive,
        ceiling: u32,
        sent_at: Instant,
        now: Instant,
    ) -> Change {
        self.accepted.add(sent_at);
        let Some(recovery) = self.recovery.as_mut() else {
            return Change::Keep;
        };
        // A success sent before the refusal arrived late: the measured window held more than
        // was counted then, so the learned limit rises to match.
        if sent_at <= recovery.refused_at {
            let measured = self.accepted.sent_in_window_before(recovery.refused_at);
            recovery.peak = recovery.peak.max(measured.min(recovery.cap));
        }
        let k = self.window.as_secs_f64() * f64::from(params.recovery_windows);
        let c = recovery.peak * (1.0 - params.backoff) / k.powi(3);
        let t = now
            .saturating_duration_since(recovery.decreased_at)
            .as_secs_f64();
        let target = recovery.peak + c * (t - k).powi(3);
        if target >= f64::from(ceiling) {
            self.recovery = None;
            return Change::Recovered;
        }
        let limit = (target.floor() as u32).max(1);
        if limit == recovery.limit {
            return Change::Keep;
        }
        recovery.limit = limit;
        Change::Limit(limit)
    }

    /// A request the server refused. `sent_at` is when it was sent, `current` the key's limit per
    /// window now in force.
    pub(crate) fn on_refusal(
        &mut self,
        params: &Adaptive,
        current: u32,
        sent_at: Instant,
        now: Instant,
    ) -> Change {
        if self.recovery.is_some_and(|r| sent_at <= r.decreased_at) {
            return Change::Keep;
        }
        let accepted = self.accepted.sent_in_window_before(now);
        let current = f64::from(current);
        let (peak, target) = if accepted >= 1.0 {
            let peak = accepted.min(current);
            (peak, peak * params.backoff)
        } else {
            // Nothing got through: all we know is that the current rate is too fast.
            (current, current / 2.0)
        };
        let limit = (target.floor() as u32).max(1);
        self.recovery = Some(Recovery {
            peak,
            cap: current,
            refused_at: now,
            decreased_at: now,
            limit,
        });
        Change::Limit(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(1);

    #[test]
    fn counts_acceptances_by_send_time_in_the_window() {
        let start = Instant::now();
        let mut count = AcceptedCount::new(WINDOW, start);
        // Answers arrive in any order; each counts at its send time.
        for i in (0..100).rev() {
            count.add(start + Duration::from_millis(i * 10));
        }
        let within =
            |end_ms: u64| count.sent_in_window_before(start + Duration::from_millis(end_ms));
        assert!((within(999) - 100.0).abs() <= 13.0, "{}", within(999));
        assert!((within(1500) - 50.0).abs() <= 13.0, "{}", within(1500));
        assert_eq!(within(3000), 0.0);
        assert!(!count.is_empty(start + Duration::from_secs(2)));
        assert!(count.is_empty(start + Duration::from_secs(4)));
    }

    #[test]
    fn a_refusal_drops_to_just_under_the_accepted_rate_once() {
        let params = Adaptive::default();
        let start = Instant::now();
        let mut rate = KeyRate::new(WINDOW, start);
        for _ in 0..100 {
            assert_eq!(rate.on_success(&params, 1000, start, start), Change::Keep);
        }
        assert_eq!(
            rate.on_refusal(&params, 1000, start, start),
            Change::Limit(95)
        );
        // Refusals of requests sent before the decrease are the same news.
        assert_eq!(rate.on_refusal(&params, 95, start, start), Change::Keep);
        // A later one, with nothing accepted since, halves.
        let later = start + Duration::from_secs(5);
        assert_eq!(
            rate.on_refusal(&params, 95, later, later),
            Change::Limit(47)
        );
    }

    #[test]
    fn recovery_climbs_back_and_hands_the_quota_back() {
        let params = Adaptive::default().recovery_windows(10);
        let start = Instant::now();
        let mut rate = KeyRate::new(WINDOW, start);
        for _ in 0..100 {
            rate.on_success(&params, 200, start, start);
        }
        rate.on_refusal(&params, 200, start, start);
        let limit_at = |rate: &mut KeyRate, secs: u64| {
            let at = start + Duration::from_secs(secs);
            match rate.on_success(&params, 200, at, at) {
                Change::Limit(limit) => Some(limit),
                Change::Recovered => Some(200),
                Change::Keep => None,
            }
        };
        assert_eq!(limit_at(&mut rate, 5), Some(99)); // concave: most of the way in half the time
        assert_eq!(limit_at(&mut rate, 10), Some(100)); // the learned limit after 10 windows
        assert_eq!(limit_at(&mut rate, 12), None); // flat around it
        assert_eq!(limit_at(&mut rate, 20), Some(105)); // then probing beyond
        assert_eq!(limit_at(&mut rate, 40), Some(200)); // and back to the configured quota
        assert!(rate.recovery.is_none());
    }

    #[test]
    fn late_successes_raise_an_early_estimate() {
        let params = Adaptive::default();
        let start = Instant::now();
        let mut rate = KeyRate::new(WINDOW, start);
        // 100 sent at once; only 40 answered when the 101st is refused.
        for _ in 0..40 {
            rate.on_success(&params, 1000, start, start);
        }
        let refused = start + Duration::from_millis(20);
        assert_eq!(
            rate.on_refusal(&params, 1000, start, refused),
            Change::Limit(38)
        );
        // The other 60 come back: the learned limit is 100 after all.
        let mut last = Change::Keep;
        for _ in 0..60 {
            let change = rate.on_success(&params, 1000, start, refused + Duration::from_millis(5));
            if change != Change::Keep {
                last = change;
            }
        }
        assert_eq!(last, Change::Limit(95));
    }
}
