//! What a key learned from the server's answers: its rate ([`KeyRate`]), its spacing margin
//! ([`Spacing`]), whether it must send evenly, and when its sends reach the server
//! ([`Arrivals`]). Lives in the key's bucket, under the limiter's one lock, and is swept with
//! it.

use std::time::Duration;

use tokio::time::Instant;

use crate::adaptive::{Adaptive, Change, InForce, KeyRate};
use crate::arrival::Arrivals;
use crate::quota::Quota;
use crate::spacing::Spacing;

/// A quota change is handed out once the pace moved by this fraction of the configured rate.
const PACE_STEP: f64 = 0.002;
/// A repeated refusal within this many windows of sending after the last pause escalates the
/// spacing margin; later, the rate's own rules apply.
const QUICK_ROUND_WINDOWS: u32 = 2;

#[derive(Clone, Debug)]
pub(crate) struct Learned {
    rate: KeyRate,
    spacing: Spacing,
    /// Requests per window of the configured quota the key is paced at before its spacing
    /// margin; `None`: the configured rate.
    rate_in_force: Option<f64>,
    /// The server refused a burst: the key sends evenly from now on, at any rate.
    smoothed: bool,
    /// The fraction of the configured rate last put in force.
    applied: f64,
    /// The latencies of the key's answers.
    arrivals: Arrivals,
    /// The server refused the key for its spacing: it measures the gaps between arrivals, and
    /// a late one holds the next send (see `crate::arrival`).
    strict: bool,
}

/// What one answer changed: the quota to put in force, and the spacing margin when it widened.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lesson {
    pub(crate) quota: Quota,
    /// The new margin and its half-life, when it widened.
    pub(crate) widened: Option<(f64, Duration)>,
}

/// Who else spends the key's quota, as [`Learned::on_answer`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sharing {
    /// This process alone: the key's margin paces its sends here.
    Alone,
    /// Other processes too (a quota shared through Redis), whose margin is the fleet's.
    /// `spaced`: the source spaces this process's slots by it too, so the key's own pacing
    /// leaves it out (see `SlotSource::applies_shared_spacing`).
    Shared { spaced: bool },
}

/// One answer, as [`Learned::on_answer`] takes it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Answer {
    pub(crate) refused: bool,
    pub(crate) sent_at: Instant,
    /// The pause the server asked for, when it asked for one.
    pub(crate) paused_until: Option<Instant>,
}

impl Learned {
    pub(crate) fn new(window: Duration, now: Instant) -> Self {
        Self {
            rate: KeyRate::new(window, now),
            spacing: Spacing::new(window, now),
            rate_in_force: None,
            smoothed: false,
            applied: 1.0,
            arrivals: Arrivals::new(),
            strict: false,
        }
    }

    /// An accepted request sent at `sent_at` was answered at `now`: on a key the server
    /// refused for its spacing (or one whose quota's users found the server strict, as
    /// `shared_strict` tells when asked, see `SlotSource::is_strict`), the instant before which
    /// the next send could reach the server within the key's interval of this one (see
    /// `crate::arrival`).
    pub(crate) fn hold_after(
        &self,
        configured: &Quota,
        sent_at: Instant,
        now: Instant,
        shared_strict: impl FnOnce() -> bool,
    ) -> Option<Instant> {
        let rate = self
            .rate_in_force
            .unwrap_or_else(|| f64::from(configured.limit()));
        let interval = configured.effective_window().div_f64(rate.max(1.0));
        (self.strict || shared_strict())
            .then(|| self.arrivals.hold(sent_at, now, interval))
            .flatten()
    }

    /// Learns from one answer; returns what changed, if anything.
    pub(crate) fn on_answer(
        &mut self,
        params: &Adaptive,
        configured: &Quota,
        answer: Answer,
        sharing: Sharing,
        now: Instant,
    ) -> Option<Lesson> {
        let shared = sharing != Sharing::Alone;
        let window = configured.effective_window();
        let ceiling = f64::from(configured.limit());
        let rate = self.rate_in_force.unwrap_or(ceiling);
        self.arrivals.record(answer.sent_at, now);
        let recent = self.spacing.is_recent(now);
        let sending = self.spacing.sending(now);
        if answer.refused {
            self.spacing
                .note_refusal(now, answer.paused_until.unwrap_or(now));
        }
        let change = if answer.refused {
            let in_force = InForce {
                rate: rate / (1.0 + self.spacing.extra(now)),
                bursts: configured.model().bursts() && !self.smoothed,
                // A refusal with a wait on an even key widens the margin unless the key's
                // count shows its rate is wrong: an isolated one, or a repeated one that came
                // within two windows of sending after the last pause (a margin too narrow for
                // how far apart the sends arrive: the rounds escalate). A repeated refusal
                // after longer is noise no margin absorbs (a loaded machine's stalls): the
                // rate's own rules apply, which climb back within seconds where a margin is
                // held for minutes. On a quota shared with other processes the fleet's margin
                // is the only lever (a rate learned here slows this process only).
                asked_wait: answer.paused_until.is_some()
                    && (!recent || shared || sending < window * QUICK_ROUND_WINDOWS),
            };
            self.rate.on_refusal(params, in_force, answer.sent_at, now)
        } else {
            self.rate.on_success(params, ceiling, answer.sent_at, now)
        };
        let mut widened = None;
        let forced = match change {
            Change::Keep => false,
            Change::Rate(rate) => {
                if answer.refused {
                    // Measured from what the server took: the margin is in that count already.
                    self.spacing.clear();
                }
                self.rate_in_force = Some(rate);
                false
            }
            Change::Smooth => {
                self.smoothed = true;
                true
            }
            Change::Recovered => {
                self.rate_in_force = None;
                true
            }
            Change::WidenAgain => {
                let noise = self
                    .arrivals
                    .spread()
                    .map(|spread| spread.as_secs_f64() * rate / window.as_secs_f64());
                let widest = self.widest(params, rate, answer.sent_at, now);
                // On a shared quota the fleet's margin is Redis's (see the `Widen` arm): a
                // refusal in flight there is one more of the round, and takes no step.
                let extra = noise
                    .filter(|_| !shared)
                    .and_then(|noise| self.spacing.widen_to_noise(now, noise, widest));
                if let Some(extra) = extra {
                    tracing::debug!(
                        extra,
                        ?noise,
                        "a request in flight refused too; spacing widened to the answers' noise"
                    );
                    widened = Some((extra, self.spacing.half_life()));
                }
                extra.is_some()
            }
            Change::Widen => {
                self.strict = true;
                let widest = if shared {
                    // The key's count is this process's share: it says nothing of the limit.
                    None
                } else {
                    self.widest(params, rate, answer.sent_at, now)
                };
                // On a shared quota each round of refusals widens the fleet's margin by one
                // step (see spacing.lua of pacer-limit-redis): escalating there cost the real
                // fleet throughput (BENCHMARKS.md, issue 22).
                let extra = self.spacing.widen(now, recent && !shared, sending, widest);
                tracing::debug!(
                    extra,
                    repeated = recent,
                    ?window,
                    "key paused by the server while even; spacing widened"
                );
                widened = Some((extra, self.spacing.half_life()));
                true
            }
        };
        let fraction = self.fraction(ceiling, sharing, now);
        if !forced && (fraction - self.applied).abs() < PACE_STEP {
            return None;
        }
        self.applied = fraction;
        Some(Lesson {
            quota: self.quota(configured, fraction),
            widened,
        })
    }

    /// The widest factor a margin may take the key's `rate` down by: when the key sent at its
    /// pace and the server accepted clearly less over the window before `sent_at` (a partial
    /// window after a pause, so not proof enough to cut the rate), the server takes at least
    /// what it accepted, and the rounds stop just under that (as the rate's own decrease does).
    /// A key whose count keeps up with its pace is refused for timing, not for its rate: no
    /// bound.
    fn widest(&self, params: &Adaptive, rate: f64, sent_at: Instant, now: Instant) -> Option<f64> {
        let paced = rate / (1.0 + self.spacing.extra(now));
        let accepted = self.rate.accepted_before(sent_at);
        (accepted >= 1.0 && accepted < paced * crate::adaptive::AT_RATE)
            .then(|| rate / (accepted * params.backoff_fraction()))
    }

    /// The share of the configured rate in force at `now`: the learned rate over the margin,
    /// unless the source spaces the key's slots by the margin already.
    fn fraction(&self, ceiling: f64, sharing: Sharing, now: Instant) -> f64 {
        let rate = self.rate_in_force.unwrap_or(ceiling) / ceiling;
        if matches!(sharing, Sharing::Shared { spaced: true }) {
            return rate.min(1.0);
        }
        (rate / (1.0 + self.spacing.extra(now))).min(1.0)
    }

    fn quota(&self, configured: &Quota, fraction: f64) -> Quota {
        let paced = if self.smoothed {
            configured.gcra(1)
        } else {
            *configured
        };
        paced.slowed(fraction)
    }

    /// Whether the key is back at its configured quota with nothing left to remember.
    pub(crate) fn is_idle(&self, now: Instant) -> bool {
        !self.smoothed
            && self.rate_in_force.is_none()
            && self.spacing.is_gone(now)
            && self.rate.is_idle(now)
    }

    /// Whether the quota in force is exactly the configured one.
    pub(crate) fn at_configured(&self) -> bool {
        !self.smoothed && self.applied >= 1.0
    }
}
