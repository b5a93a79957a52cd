//! A key's learned spacing margin: how much wider than its rate's interval its sends go out
//! after the server paused it for sends that came too close.
//!
//! A server that refuses a request arriving a little early (nginx `limit_req` without burst,
//! on its millisecond clock) refuses an evenly paced client now and then however right its
//! rate is: the network or a timer put two sends a millisecond too close. When the refusal
//! carries a wait, every caller of the key pauses for it, so a refusal costs a whole pause;
//! cutting the rate after each one (and further after the next) would compound into a rate far
//! below the limit. The spacing margin instead widens the interval between sends:
//!
//! - an **isolated** refusal widens it by [`FIRST_STEP`] (3 %): one refusal costs its pause
//!   and 3 % of the rate, which makes the next one unlikely;
//! - a refusal within [`ROUND_WINDOWS`] windows of the last widening (after its pause) is not
//!   timing noise: the margin did not help, so the rate is what is wrong, and the rate's own
//!   rules apply (see `crate::adaptive`);
//! - the margin then **shrinks back slowly**, halving every [`HALF_LIFE_WINDOWS`] windows, so
//!   a key returns to its configured rate over minutes and does not probe back into refusals
//!   within seconds.

use std::time::Duration;

use tokio::time::Instant;

/// How far an isolated refusal widens the interval: 3 %.
pub(crate) const FIRST_STEP: f64 = 0.03;
/// A refusal within this many windows after the end of the last widening's pause says the
/// widening did not help.
pub(crate) const ROUND_WINDOWS: u32 = 5;
/// The margin halves every this many windows without a refusal.
pub(crate) const HALF_LIFE_WINDOWS: u32 = 30;
/// Below this the margin counts as gone.
const NEGLIGIBLE: f64 = 0.001;

/// The spacing margin of one key, as a factor on its interval minus one (0.03: 3 % wider).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spacing {
    /// The margin when it was last widened.
    extra: f64,
    /// When it was last widened: the margin decays from here.
    widened_at: Option<Instant>,
    /// When the pause of the key's last refusal (of any kind) ended.
    refused_until: Option<Instant>,
    window: Duration,
}

impl Spacing {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            extra: 0.0,
            widened_at: None,
            refused_until: None,
            window,
        }
    }

    /// The margin at `now`: the last widening, decayed since.
    pub(crate) fn extra(&self, now: Instant) -> f64 {
        let Some(at) = self.widened_at else {
            return 0.0;
        };
        let windows = now.saturating_duration_since(at).as_secs_f64() / self.window.as_secs_f64();
        let extra = self.extra * (-windows / f64::from(HALF_LIFE_WINDOWS)).exp2();
        if extra < NEGLIGIBLE {
            0.0
        } else {
            extra
        }
    }

    /// Whether the key's last refusal, whatever it changed, came within [`ROUND_WINDOWS`]
    /// windows before `now` (counted from the end of its pause): a refusal now is a repeated
    /// round, which a margin did not prevent, so the rate is what is wrong.
    pub(crate) fn is_recent(&self, now: Instant) -> bool {
        self.refused_until
            .is_some_and(|until| now.saturating_duration_since(until) < self.window * ROUND_WINDOWS)
    }

    /// The server refused a request at `now` and paused the key until `paused_until` (or not
    /// at all: `now`).
    pub(crate) fn note_refusal(&mut self, now: Instant, paused_until: Instant) {
        let until = paused_until.max(now);
        self.refused_until = Some(self.refused_until.map_or(until, |last| last.max(until)));
    }

    /// Widens the interval by [`FIRST_STEP`] over what is left of the margin at `now`. Returns
    /// the new margin.
    pub(crate) fn widen(&mut self, now: Instant) -> f64 {
        let factor = (1.0 + self.extra(now)) * (1.0 + FIRST_STEP);
        self.extra = factor - 1.0;
        self.widened_at = Some(now);
        self.extra
    }

    /// Folds the margin away: a rate learned from the server's count replaces it.
    pub(crate) fn clear(&mut self) {
        self.extra = 0.0;
        self.widened_at = None;
    }

    /// Whether the margin is gone at `now`.
    pub(crate) fn is_gone(&self, now: Instant) -> bool {
        self.extra(now) == 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(1);

    #[test]
    fn an_isolated_refusal_widens_three_percent_and_shrinks_back_slowly() {
        let start = Instant::now();
        let mut spacing = Spacing::new(WINDOW);
        let extra = spacing.widen(start);
        assert!((extra - 0.03).abs() < 1e-9);
        let later = |s: u64| start + Duration::from_secs(s);
        assert!((spacing.extra(later(30)) - 0.015).abs() < 1e-9);
        assert!(spacing.extra(later(10)) > 0.02);
        assert!(spacing.is_gone(later(300)));
        // Long after, another refusal is isolated again: 3 % on what is left, not compounded.
        let extra = spacing.widen(later(120));
        assert!(extra < 0.04, "{extra}");
    }

    #[test]
    fn a_refusal_after_the_round_window_counts_as_isolated() {
        let start = Instant::now();
        let mut spacing = Spacing::new(WINDOW);
        assert!(!spacing.is_recent(start));
        spacing.note_refusal(start, start + WINDOW);
        spacing.widen(start);
        assert!(spacing.is_recent(start + WINDOW * ROUND_WINDOWS));
        let late = start + WINDOW * (ROUND_WINDOWS + 2);
        let before = spacing.extra(late);
        assert!(!spacing.is_recent(late));
        let after = spacing.widen(late);
        assert!(((1.0 + after) / (1.0 + before) - 1.03).abs() < 1e-9);
    }
}
