//! A key's learned spacing margin: how much wider than its rate's interval its sends go out
//! after the server paused it for sends that came too close.
//!
//! A server that refuses a request arriving a little early (nginx `limit_req` without burst,
//! on its millisecond clock) refuses an evenly paced client now and then however right its
//! rate is: the network or a timer put two sends a millisecond too close. When the refusal
//! carries a wait, every caller of the key pauses for it, so a refusal costs a whole pause;
//! cutting the rate after each one (and further after the next) would compound into a rate far
//! below the limit, and a rate climbs back within seconds, into the next refusal. The spacing
//! margin instead widens the interval between sends:
//!
//! - an **isolated** refusal widens it by [`FIRST_STEP`] (3 %): one refusal costs its pause
//!   and 3 % of the rate, which makes the next one unlikely;
//! - a refusal within [`ROUND_WINDOWS`] windows of the last one (after its pause) is a
//!   **repeated** round: the margin did not cover how far apart the sends really arrive (a
//!   busy machine, a link with jitter, several processes), so the next step is twice the last
//!   (3 %, 6 %, 12 %, … at most [`MAX_STEP`], and at most what the refusals cost, see
//!   [`COST_SHARE`]): a server that takes half the rate is reached in a few rounds, where a
//!   blind cut of the rate (1 %, 4 %, 16 %) needs as many and then climbs back into refusals;
//! - a request **in flight** at a widening that comes back refused too went out at the margin
//!   that round found too narrow: it widens the margin at once by how far apart the key's
//!   answers say its sends may arrive (see `crate::arrival`), at no further pause (behind a
//!   link with jitter half the requests in flight are refused at first, and each would
//!   otherwise be a round of its own, with its pause);
//! - the margin then **shrinks back slowly**, halving every [`HALF_LIFE_WINDOWS`] windows after
//!   an isolated refusal, and twice as slowly for each further round it took: a margin that
//!   needed five rounds is what the link needs, and probing it away within seconds would cost
//!   a refusal (a whole pause) each time, where keeping it costs a few percent (an isolated
//!   refusal while such a margin is left keeps its half-life).
//!
//! The caller bounds a widening by what the server is known to take (see
//! `Spacing::widen`), so the rounds never overshoot below a limit the key's own count shows.

use std::time::Duration;

use tokio::time::Instant;

/// How far an isolated refusal widens the interval: 3 %.
pub(crate) const FIRST_STEP: f64 = 0.03;
/// The largest step of a repeated round: the interval at most doubles per round.
pub(crate) const MAX_STEP: f64 = 1.0;
/// The widest margin: the interval at most doubles in all. Timing noise a doubled interval
/// does not absorb (a machine whose stalls outlast any spacing) is not worth more of the rate;
/// only the rate's own evidence goes further.
pub(crate) const MAX_EXTRA: f64 = 1.0;
/// A repeated refusal less than this share of a window after the last pause ended (ten sends
/// at the rate) grows the step fourfold.
pub(crate) const QUICK_WINDOWS: f64 = 0.1;
/// What a repeated round's step may cost, as a share of what the refusals it prevents cost: a
/// refusal after `sending` of sending costs its pause, a share `pause / sending` of the time
/// sent, and a margin `m` costs about `m`; half of break-even, since a margin makes refusals
/// rarer, not impossible (a one-second pause after each second of sending is worth a 50 %
/// margin, after ten seconds 5 %; the step is never under [`FIRST_STEP`]).
pub(crate) const COST_SHARE: f64 = 0.5;
/// A refusal within this many windows after the end of the last refusal's pause is a repeated
/// round.
pub(crate) const ROUND_WINDOWS: u32 = 5;
/// The margin of an isolated refusal halves every this many windows without a refusal; each
/// further round doubles the half-life (up to [`MAX_HALF_LIFE_WINDOWS`]).
pub(crate) const HALF_LIFE_WINDOWS: u32 = 30;
/// The longest half-life: after a long quiet spell a key still returns to its configured rate.
pub(crate) const MAX_HALF_LIFE_WINDOWS: u32 = 16 * HALF_LIFE_WINDOWS;
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
    /// When the key started learning: it sent from here before its first refusal.
    started: Instant,
    /// The pause of the key's last refusal.
    pause: Duration,
    /// The step of the last widening (0: none yet).
    step: f64,
    /// The half-life of the margin, in windows.
    half_life: u32,
    window: Duration,
}

impl Spacing {
    pub(crate) fn new(window: Duration, now: Instant) -> Self {
        Self {
            extra: 0.0,
            widened_at: None,
            refused_until: None,
            started: now,
            pause: Duration::ZERO,
            step: 0.0,
            half_life: HALF_LIFE_WINDOWS,
            window,
        }
    }

    /// The margin at `now`: the last widening, decayed since.
    pub(crate) fn extra(&self, now: Instant) -> f64 {
        let Some(at) = self.widened_at else {
            return 0.0;
        };
        let windows = now.saturating_duration_since(at).as_secs_f64() / self.window.as_secs_f64();
        let extra = self.extra * (-windows / f64::from(self.half_life)).exp2();
        if extra < NEGLIGIBLE {
            0.0
        } else {
            extra
        }
    }

    /// How long the margin takes to halve now.
    pub(crate) fn half_life(&self) -> Duration {
        self.window * self.half_life
    }

    /// Whether the key's last refusal, whatever it changed, came within [`ROUND_WINDOWS`]
    /// windows before `now` (counted from the end of its pause): a refusal now is a repeated
    /// round, which the margin in force did not prevent.
    pub(crate) fn is_recent(&self, now: Instant) -> bool {
        self.refused_until
            .is_some_and(|until| now.saturating_duration_since(until) < self.window * ROUND_WINDOWS)
    }

    /// How long the key sent before `now` since its last refusal's pause ended, or since it
    /// started.
    pub(crate) fn sending(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.refused_until.unwrap_or(self.started).max(self.started))
    }

    /// The server refused a request at `now` and paused the key until `paused_until` (or not
    /// at all: `now`).
    pub(crate) fn note_refusal(&mut self, now: Instant, paused_until: Instant) {
        let until = paused_until.max(now);
        self.pause = until - now;
        self.refused_until = Some(self.refused_until.map_or(until, |last| last.max(until)));
    }

    /// Widens the interval over what is left of the margin at `now`: by [`FIRST_STEP`] after an
    /// isolated refusal, by twice the last step after a `repeated` one. `widest` bounds the
    /// resulting factor (`1 + margin`): the server is known to take the rate the key would
    /// fall below (the margin never narrows for it, though). Returns the new margin.
    ///
    /// `sending` is how long the key sent since its last pause ended (or since it started)
    /// before this refusal. A repeated refusal within [`QUICK_WINDOWS`] of a window is far from
    /// timing noise: the step grows fourfold, not twofold. And no repeated step costs more than
    /// the refusals it prevents: a refusal every `sending` costs a pause per `sending`, so the
    /// step is at most [`COST_SHARE`] of `pause / sending` (never under [`FIRST_STEP`]).
    ///
    /// An isolated refusal while more than the first step of a margin from repeated rounds is
    /// left keeps that margin's half-life: the margin is shrinking into the noise those rounds
    /// measured, and starting over at the shortest half-life would shrink it into the next
    /// refusal within seconds.
    pub(crate) fn widen(
        &mut self,
        now: Instant,
        repeated: bool,
        sending: Duration,
        widest: Option<f64>,
    ) -> f64 {
        let (step, half_life) = if repeated && self.step > 0.0 {
            let windows = sending.as_secs_f64() / self.window.as_secs_f64();
            let growth = if windows < QUICK_WINDOWS { 4.0 } else { 2.0 };
            let worth =
                (COST_SHARE * self.pause.as_secs_f64() / sending.as_secs_f64()).max(FIRST_STEP);
            (
                (self.step * growth).min(worth).min(MAX_STEP),
                (self.half_life * 2).min(MAX_HALF_LIFE_WINDOWS),
            )
        } else if self.extra(now) > FIRST_STEP {
            (FIRST_STEP, self.half_life)
        } else {
            (FIRST_STEP, HALF_LIFE_WINDOWS)
        };
        self.apply(now, step, half_life, widest)
    }

    /// Widens again after another request sent before the last widening came back refused,
    /// when the key's answers say how far apart its sends may arrive: `noise`, as a share of
    /// the interval (see `crate::arrival`). Several refusals in one round are noise on that
    /// scale, so the step is the noise (up to [`MAX_STEP`]) rather than doubling towards it
    /// round after round, and the half-life doubles as a repeated round's. It cost no pause
    /// of its own (the key is already paused), so no cost bound applies. Nothing changes when
    /// the noise is no wider than the last step: the refusals in flight then say nothing the
    /// round did not (a server whose window is full refuses them all, and that is the rate's
    /// business). Returns the new margin when it widened. `widest` as [`Spacing::widen`]'s.
    pub(crate) fn widen_to_noise(
        &mut self,
        now: Instant,
        noise: f64,
        widest: Option<f64>,
    ) -> Option<f64> {
        let step = noise.min(MAX_STEP);
        if step <= self.step {
            return None;
        }
        let half_life = (self.half_life * 2).min(MAX_HALF_LIFE_WINDOWS);
        Some(self.apply(now, step, half_life, widest))
    }

    /// Widens the margin left at `now` by `step`, within [`MAX_EXTRA`] and `widest`, never
    /// narrowing it; returns the new margin.
    fn apply(&mut self, now: Instant, step: f64, half_life: u32, widest: Option<f64>) -> f64 {
        let before = 1.0 + self.extra(now);
        let mut factor = (before * (1.0 + step)).min(1.0 + MAX_EXTRA);
        if let Some(widest) = widest {
            factor = factor.min(widest);
        }
        let factor = factor.max(before);
        self.extra = factor - 1.0;
        self.step = step;
        self.half_life = half_life;
        self.widened_at = Some(now);
        self.extra
    }

    /// Folds the margin away: a rate learned from the server's count replaces it.
    pub(crate) fn clear(&mut self) {
        self.extra = 0.0;
        self.widened_at = None;
        self.step = 0.0;
        self.half_life = HALF_LIFE_WINDOWS;
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
        let mut spacing = Spacing::new(WINDOW, start);
        let extra = spacing.widen(start, false, WINDOW, None);
        assert!((extra - 0.03).abs() < 1e-9);
        let later = |s: u64| start + Duration::from_secs(s);
        assert!((spacing.extra(later(30)) - 0.015).abs() < 1e-9);
        assert!(spacing.extra(later(10)) > 0.02);
        assert!(spacing.is_gone(later(300)));
        // Long after, another refusal is isolated again: 3 % on what is left, not compounded.
        let extra = spacing.widen(later(120), false, WINDOW, None);
        assert!(extra < 0.04, "{extra}");
    }

    #[test]
    fn a_refusal_after_the_round_window_counts_as_isolated() {
        let start = Instant::now();
        let mut spacing = Spacing::new(WINDOW, start);
        assert!(!spacing.is_recent(start));
        spacing.note_refusal(start, start + WINDOW);
        spacing.widen(start, false, WINDOW, None);
        assert!(spacing.is_recent(start + WINDOW * ROUND_WINDOWS));
        let late = start + WINDOW * (ROUND_WINDOWS + 2);
        let before = spacing.extra(late);
        assert!(!spacing.is_recent(late));
        let after = spacing.widen(late, spacing.is_recent(late), WINDOW, None);
        assert!(((1.0 + after) / (1.0 + before) - 1.03).abs() < 1e-9);
    }

    #[test]
    fn repeated_rounds_double_the_step_and_the_half_life() {
        let start = Instant::now();
        let mut spacing = Spacing::new(WINDOW, start);
        spacing.note_refusal(start, start + WINDOW);
        let mut factor: f64 = 1.0;
        // 3 %, 6 %, 12 %, 24 %, 48 %, each after a fifth of a window of sending (a pause of a
        // window per fifth of one: worth up to 250 %): a server that takes half the rate in
        // five rounds, the fifth held to the widest margin (the interval doubled).
        for (round, step) in [0.03, 0.06, 0.12, 0.24, 0.48].into_iter().enumerate() {
            let extra = spacing.widen(start, round > 0, WINDOW / 5, None);
            factor = (factor * (1.0 + step)).min(1.0 + MAX_EXTRA);
            assert!(
                (1.0 + extra - factor).abs() < 1e-9,
                "round {round}: {extra}"
            );
        }
        assert!((factor - 2.0).abs() < 1e-9);
        assert_eq!(spacing.half_life(), WINDOW * HALF_LIFE_WINDOWS * 16);
        // Held for minutes: after 60 windows, still most of it.
        assert!(spacing.extra(start + WINDOW * 60) > 0.9 * (factor - 1.0));
        // The steps stop at doubling the interval per round, the half-life at its longest.
        for _ in 0..5 {
            spacing.widen(start, true, WINDOW / 20, None);
        }
        assert_eq!(spacing.step, MAX_STEP);
        assert!((spacing.extra(start) - MAX_EXTRA).abs() < 1e-9);
        assert_eq!(spacing.half_life(), WINDOW * MAX_HALF_LIFE_WINDOWS);
        // An isolated refusal later starts over at 3 % and the shortest half-life.
        let mut spacing = Spacing::new(WINDOW, start);
        spacing.widen(start, true, WINDOW, None);
        assert!((spacing.extra(start) - FIRST_STEP).abs() < 1e-9);
        assert_eq!(spacing.half_life(), WINDOW * HALF_LIFE_WINDOWS);
    }

    #[test]
    fn refusals_in_flight_widen_straight_to_the_noise_the_answers_show() {
        let start = Instant::now();
        let mut spacing = Spacing::new(WINDOW, start);
        spacing.widen(start, false, WINDOW * 10, None);
        // Sends that may arrive 40 % of an interval apart: the step goes there at once, and
        // the half-life doubles.
        let extra = spacing.widen_to_noise(start, 0.4, None);
        assert!(
            (1.0 + extra.unwrap() - 1.03 * 1.4).abs() < 1e-9,
            "{extra:?}"
        );
        assert_eq!(spacing.half_life(), WINDOW * HALF_LIFE_WINDOWS * 2);
        // Noise no wider than the last step says nothing new.
        assert_eq!(spacing.widen_to_noise(start, 0.3, None), None);
        // Never beyond the widest margin.
        spacing.widen_to_noise(start, 5.0, None);
        assert!((spacing.extra(start) - MAX_EXTRA).abs() < 1e-9);
    }

    #[test]
    fn a_widening_stops_at_the_widest_the_caller_allows_and_never_narrows() {
        let start = Instant::now();
        let mut spacing = Spacing::new(WINDOW, start);
        spacing.widen(start, false, WINDOW, None);
        let extra = spacing.widen(start, true, WINDOW, Some(1.05));
        assert!((extra - 0.05).abs() < 1e-9, "{extra}");
        // Already wider than allowed: stays where it is.
        let extra = spacing.widen(start, true, WINDOW, Some(1.01));
        assert!((extra - 0.05).abs() < 1e-9, "{extra}");
    }

    #[test]
    fn quick_refusals_grow_the_step_fourfold_and_no_step_costs_more_than_it_saves() {
        let start = Instant::now();
        let mut spacing = Spacing::new(WINDOW, start);
        // Every refusal pauses the key for a window.
        spacing.note_refusal(start, start + WINDOW);
        spacing.widen(start, false, WINDOW, None);
        // Refused again 50 ms of sending after the pause: 3 % -> 12 %.
        let before = 1.0 + spacing.extra(start);
        let extra = spacing.widen(start, true, WINDOW / 20, None);
        assert!(((1.0 + extra) / before - 1.12).abs() < 1e-9, "{extra}");
        // Then after five windows of sending: twice 12 % would be 24 %, but a pause of a
        // window per five windows of sending is worth half of a fifth: 10 %.
        let before = 1.0 + spacing.extra(start);
        let extra = spacing.widen(start, true, WINDOW * 5, None);
        assert!(((1.0 + extra) / before - 1.1).abs() < 1e-9, "{extra}");
        // A refusal after twenty windows of sending is worth 2.5 %: the step stays at 3 %.
        let before = 1.0 + spacing.extra(start);
        let extra = spacing.widen(start, true, WINDOW * 20, None);
        assert!(((1.0 + extra) / before - 1.03).abs() < 1e-9, "{extra}");
        // A shorter pause is worth less: a tenth of a window per five windows of sending, 1 %.
        let mut spacing = Spacing::new(WINDOW, start);
        spacing.note_refusal(start, start + WINDOW / 10);
        spacing.widen(start, false, WINDOW, None);
        let before = 1.0 + spacing.extra(start);
        let extra = spacing.widen(start, true, WINDOW * 5, None);
        assert!(((1.0 + extra) / before - 1.03).abs() < 1e-9, "{extra}");
    }

    #[test]
    fn an_isolated_refusal_keeps_the_half_life_of_a_margin_from_repeated_rounds() {
        let start = Instant::now();
        let mut spacing = Spacing::new(WINDOW, start);
        spacing.note_refusal(start, start + WINDOW);
        for round in 0..5 {
            spacing.widen(start, round > 0, WINDOW / 5, None);
        }
        let half_life = spacing.half_life();
        assert!(half_life > WINDOW * HALF_LIFE_WINDOWS);
        // Long after, most of the margin left: the link still needs it.
        let later = start + WINDOW * 60;
        spacing.widen(later, false, WINDOW * 60, None);
        assert_eq!(spacing.half_life(), half_life);
        // Once the margin is about gone, an isolated refusal starts over.
        let much_later = later + half_life * 12;
        spacing.widen(much_later, false, half_life * 12, None);
        assert_eq!(spacing.half_life(), WINDOW * HALF_LIFE_WINDOWS);
    }
}
