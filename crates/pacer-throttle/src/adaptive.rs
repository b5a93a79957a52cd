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
const SLOTS: usize = 8;

/// Requests accepted in the last window, counted in `SLOTS` sub-windows.
#[derive(Clone, Debug)]
struct AcceptedCount {
    slot_length: Duration,
    /// Start of the newest slot.
    newest_start: Instant,
    /// `slots[0]` is the newest.
    slots: [u64; SLOTS],
}

impl AcceptedCount {
    fn new(window: Duration, now: Instant) -> Self {
        Self {
            slot_length: (window / SLOTS as u32).max(Duration::from_micros(1)),
            newest_start: now,
            slots: [0; SLOTS],
        }
    }

    fn advance(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.newest_start);
        let steps = (elapsed.as_nanos() / self.slot_length.as_nanos()).min(SLOTS as u128 + 1);
        if steps == 0 {
            return;
        }
        let steps = steps as usize;
        if steps > SLOTS {
            self.slots = [0; SLOTS];
            self.newest_start = now;
        } else {
            self.slots.rotate_right(steps);
            self.slots[..steps].fill(0);
            self.newest_start += self.slot_length * steps as u32;
        }
    }

    fn add(&mut self, now: Instant) {
        self.advance(now);
        self.slots[0] += 1;
    }

    /// Accepted in the last window: the full newer slots, and the oldest in proportion to the
    /// part of it still inside the window.
    fn count(&mut self, now: Instant) -> f64 {
        self.advance(now);
        let into_newest = now
            .saturating_duration_since(self.newest_start)
            .as_secs_f64()
            / self.slot_length.as_secs_f64();
        let newer: u64 = self.slots[..SLOTS - 1].iter().sum();
        newer as f64 + self.slots[SLOTS - 1] as f64 * (1.0 - into_newest.min(1.0))
    }

    fn is_empty(&mut self, now: Instant) -> bool {
        self.advance(now);
        self.slots.iter().all(|&slot| slot == 0)
    }
}

/// The state after a decrease: where the cubic curve starts and aims.
#[derive(Clone, Copy, Debug)]
struct Recovery {
    /// The learned limit, in requests per window.
    peak: f64,
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

    /// A request the server accepted. `ceiling` is the configured limit per window.
    pub(crate) fn on_success(&mut self, params: &Adaptive, ceiling: u32, now: Instant) -> Change {
        self.accepted.add(now);
        let Some(recovery) = self.recovery.as_mut() else {
            return Change::Keep;
        };
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
        let accepted = self.accepted.count(now);
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
    fn counts_acceptances_in_the_last_window() {
        let start = Instant::now();
        let mut count = AcceptedCount::new(WINDOW, start);
        for i in 0..100 {
            count.add(start + Duration::from_millis(i * 10));
        }
        assert!((count.count(start + Duration::from_millis(999)) - 100.0).abs() <= 13.0);
        assert!(count.count(start + Duration::from_millis(1500)) <= 63.0);
        assert_eq!(count.count(start + Duration::from_secs(3)), 0.0);
    }

    #[test]
    fn a_refusal_drops_to_just_under_the_accepted_rate_once() {
        let params = Adaptive::default();
        let start = Instant::now();
        let mut rate = KeyRate::new(WINDOW, start);
        for _ in 0..100 {
            assert_eq!(rate.on_success(&params, 1000, start), Change::Keep);
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
            rate.on_success(&params, 200, start);
        }
        rate.on_refusal(&params, 200, start, start);
        let limit_at = |rate: &mut KeyRate, secs: u64| match rate.on_success(
            &params,
            200,
            start + Duration::from_secs(secs),
        ) {
            Change::Limit(limit) => Some(limit),
            Change::Recovered => Some(200),
            Change::Keep => None,
        };
        assert_eq!(limit_at(&mut rate, 5), Some(99)); // concave: most of the way in half the time
        assert_eq!(limit_at(&mut rate, 10), Some(100)); // the learned limit after 10 windows
        assert_eq!(limit_at(&mut rate, 12), None); // flat around it
        assert_eq!(limit_at(&mut rate, 20), Some(105)); // then probing beyond
        assert_eq!(limit_at(&mut rate, 40), Some(200)); // and back to the configured quota
        assert!(rate.recovery.is_none());
    }
}
