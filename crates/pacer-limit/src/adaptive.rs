//! Learning a key's real rate from the server's refusals, without ever collapsing.
//!
//! A refusal is answered in this order:
//! 0. **A refusal's cost decides the answer.** A refusal with a wait (`Retry-After`) already
//!    costs every caller of the key the pause. When the key was sending evenly and its own
//!    count does not show the server accepting less than it sends, the refusal was timing
//!    noise: it widens the key's spacing margin (see `crate::spacing`: 3 %, then in
//!    escalating rounds while refusals keep coming within two windows of sending after each
//!    pause, each step worth what it saves, or at once to the noise the key's latencies show
//!    when requests in flight are refused too; shrinking back over minutes) and leaves the
//!    rate alone; on a quota shared through Redis the margin is the fleet's (one step per
//!    round of refusals). From then on the key is known strict: a late answer holds its next
//!    send (see `crate::arrival`). A repeated refusal after longer (noise no margin absorbs)
//!    goes to the rules below. A round in which every request still in flight comes back
//!    refused as well shows a full window rather than an early arrival: the rate then drops
//!    at once to just under what the server accepted over the window (at most halving). A refusal without a wait, or a busy window's count that shows the rate is
//!    wrong, goes on to the rules below too.
//! 1. **A burst is shrunk before the rate.** While the key's quota lets sends go out back to
//!    back (a sliding window, a GCRA burst), a refusal switches it to even spacing at the same
//!    rate: real limiters refuse bursts long before they refuse the rate.
//! 2. **A measured rate is trusted only over a whole busy window.** When the key sent in every
//!    part of the last window, at about its rate (95 % of it or more, refusals included), its
//!    quota drops to just under what the server *accepted* in it:
//!    a client configured 10x too fast lands under the real limit in a few rounds. A key that
//!    was running at its rate steps just under it (`backoff`, default 0.99): a single 429 from
//!    a strict server's jitter costs 1 % for a few windows, not 5 % for a minute. After
//!    start-up, an idle spell or a pause, or while the key sends well below its rate, the
//!    count says nothing about the server's limit (one early 429 would read as "1 per
//!    second", a quiet key's demand as the server's limit); the rate then
//!    steps down by `1 - backoff`, four times as far each further round within the climb back
//!    (1 %, 4 %, 16 %, then half), and never below what the partial window got accepted.
//! 3. **Never below half per round.** Whatever the estimate, one round of refusals at most
//!    halves the rate in force. Refusals of requests sent before the last decrease are old
//!    news and do not decrease again, so a burst of refusals counts once.
//!
//! Rates are fractional (a learned 99.4 per window stays 99.4, see `Quota::slowed`), so a 1 %
//! step is a 1 % step. The rate then climbs back on a concave cubic to the rate in force when
//! the server refused, or to what it accepted when that was well below it
//! (`recovery_windows`, default 3 windows), stays there `probe_windows` (default 10), and then
//! probes upward by one request per window, doubling every window, until it is back at the
//! configured quota: within `recovery_windows + probe_windows + log2(quota)` windows, whatever
//! the learned value.
//!
//! Compared with AWS's adaptive retry mode, which uses CUBIC: it decreases from its own send
//! rate, so a client far above the limit needs many rounds; it ignores Retry-After; and it is
//! per process. Here the decrease starts from the accepted rate, Retry-After pauses the key,
//! and the state lives in the shared limiter every clone and task use.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// How a key's rate adapts to the server's refusals reported through
/// [`Limiter::observe`](crate::Limiter::observe) (on by default): the throttle layer's
/// `adaptive` setting.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adaptive {
    enabled: bool,
    backoff: f64,
    recovery_windows: u32,
    probe_windows: u32,
}

impl Default for Adaptive {
    fn default() -> Self {
        Self {
            enabled: true,
            backoff: 0.99,
            recovery_windows: 3,
            probe_windows: 10,
        }
    }
}

/// One round of refusals never takes the rate below this fraction of the rate in force.
const MAX_DECREASE: f64 = 0.5;
/// A key that sent (and got through) this share of its rate over a busy window was running at
/// its rate: its count measures the server, and a refusal then steps just under that rate.
pub(crate) const AT_RATE: f64 = 0.95;
/// A recovering rate is handed out when it moved by this fraction of the configured rate.
const RATE_STEP: f64 = 0.002;

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
    /// busy window; without a whole window to measure, step the rate in force down by
    /// `1 - fraction`, four times as far each repeated round (default 0.99; clamped to
    /// `0.5..=0.999`: one round never more than halves, and always steps down).
    #[must_use]
    pub fn backoff(mut self, fraction: f64) -> Self {
        self.backoff = if fraction.is_nan() {
            Self::default().backoff
        } else {
            fraction.clamp(MAX_DECREASE, 0.999)
        };
        self
    }

    /// How many windows of the key's quota the rate takes to climb back to the rate in force
    /// when the server refused (default 3, at least 1).
    #[must_use]
    pub fn recovery_windows(mut self, windows: u32) -> Self {
        self.recovery_windows = windows.max(1);
        self
    }

    /// How many windows the rate then holds before it probes beyond (default 10). Longer means
    /// fewer probes past a server's real limit, so fewer refusals, and a slower return to the
    /// configured quota after a transient refusal.
    #[must_use]
    pub fn probe_windows(mut self, windows: u32) -> Self {
        self.probe_windows = windows;
        self
    }

    /// The fraction of a measured rate a decrease paces at.
    pub(crate) fn backoff_fraction(&self) -> f64 {
        self.backoff
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled
    }
}

/// What the caller should do with the key's quota.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Change {
    Keep,
    /// Pace the key at this many requests (fractional) per window of its configured quota.
    Rate(f64),
    /// Keep the rate, but space the key's sends evenly: the server refused a burst.
    Smooth,
    /// Back at the configured quota: restore it and forget the key's adaptive state.
    Recovered,
    /// The key was sending evenly at its rate and the server paused it: keep the rate, widen
    /// the spacing between sends (see `crate::spacing`).
    Widen,
    /// Another request in flight at a [`Change::Widen`] came back refused: it went out at the
    /// spacing that round widened, which was further off than one step, so the margin may
    /// widen again, to the noise the key's answers show, at no further pause.
    WidenAgain,
}

/// What the server said about the key's requests lately, and the quota in force.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InForce {
    /// Requests per window of the configured quota now in force (fractional).
    pub(crate) rate: f64,
    /// Whether the quota in force lets sends go out back to back.
    pub(crate) bursts: bool,
    /// Whether the server asked for a wait (and the key is paused for it): the refusal then
    /// costs a whole pause, and unless the key's count shows its rate is wrong, it widens the
    /// key's spacing rather than cutting its rate ([`Change::Widen`]).
    pub(crate) asked_wait: bool,
}

/// Sub-windows of the answers counter: the count is exact to one sub-window.
const SLOTS: u32 = 8;
/// How many sub-windows the counter remembers: three windows, so that answers arriving late
/// still find the slot of their send time.
const KEPT_SLOTS: usize = 3 * SLOTS as usize;

/// One sub-window of the answers counter.
#[derive(Clone, Copy, Debug)]
struct Slot {
    number: u64,
    accepted: u64,
    answered: u64,
}

/// Answers counted by when their request was *sent*, in sub-windows of `window / SLOTS`. An
/// answer that comes back late still counts where it belongs, so the count for a window is
/// not short of the requests still in flight when it was first read.
#[derive(Clone, Debug)]
struct Answers {
    origin: Instant,
    window: Duration,
    slot_length: Duration,
    /// Oldest first.
    slots: VecDeque<Slot>,
}

impl Answers {
    fn new(window: Duration, now: Instant) -> Self {
        let slot_length = (window / SLOTS).max(Duration::from_micros(1));
        Self {
            // Early enough that any send time of a request still in flight is after it.
            origin: now.checked_sub(window * 4).unwrap_or(now),
            window,
            slot_length,
            slots: VecDeque::with_capacity(KEPT_SLOTS + 1),
        }
    }

    fn slot_of(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.origin).as_nanos() / self.slot_length.as_nanos()) as u64
    }

    /// One more request sent at `sent_at` was answered, and accepted or not.
    fn add(&mut self, sent_at: Instant, accepted: bool) {
        let number = self.slot_of(sent_at);
        let index = match self.slots.iter().rposition(|slot| slot.number <= number) {
            Some(index) if self.slots[index].number == number => index,
            found => {
                let index = found.map_or(0, |index| index + 1);
                let slot = Slot {
                    number,
                    accepted: 0,
                    answered: 0,
                };
                self.slots.insert(index, slot);
                index
            }
        };
        self.slots[index].answered += 1;
        self.slots[index].accepted += u64::from(accepted);
        while self.slots.len() > KEPT_SLOTS {
            self.slots.pop_front();
        }
    }

    /// Accepted and answered among the requests sent in the window ending at `end`: whole
    /// sub-windows inside it, and the two at its edges in proportion to their part inside.
    fn in_window_before(&self, end: Instant) -> (f64, f64) {
        let start = end.checked_sub(self.window).unwrap_or(self.origin);
        let (first, last) = (self.slot_of(start), self.slot_of(end));
        let share = |number: u64| {
            let slot_start = self.slot_start(number);
            let inside = (slot_start + self.slot_length).min(end) - slot_start.max(start).min(end);
            (inside.as_secs_f64() / self.slot_length.as_secs_f64()).clamp(0.0, 1.0)
        };
        self.slots
            .iter()
            .filter(|slot| slot.number >= first && slot.number <= last)
            .map(|slot| {
                let share = if slot.number == first || slot.number == last {
                    share(slot.number)
                } else {
                    1.0
                };
                (slot.accepted as f64 * share, slot.answered as f64 * share)
            })
            .fold((0.0, 0.0), |(a, n), (da, dn)| (a + da, n + dn))
    }

    /// Accepted among the requests sent in the window ending at `end`.
    fn accepted_in_window_before(&self, end: Instant) -> f64 {
        self.in_window_before(end).0
    }

    fn slot_start(&self, number: u64) -> Instant {
        let nanos = u128::from(number) * self.slot_length.as_nanos();
        self.origin + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Whether requests went out in every sub-window of the window ending at `now` (but the
    /// last two, whose answers may still be on their way): only then does the accepted count
    /// measure the server's limit rather than the key's start-up, idle spell or pause.
    fn busy_for_window_before(&self, now: Instant) -> bool {
        let Some(start) = now.checked_sub(self.window) else {
            return false;
        };
        let first = self.slot_of(start);
        let Some(last) = self
            .slot_of(now)
            .checked_sub(2)
            .filter(|&last| last >= first)
        else {
            return false;
        };
        let busy = self
            .slots
            .iter()
            .filter(|slot| slot.number >= first && slot.number <= last && slot.answered > 0)
            .count();
        busy as u64 == last - first + 1
    }

    fn is_empty(&self, now: Instant) -> bool {
        let oldest_useful = self.slot_of(now.checked_sub(self.window * 2).unwrap_or(now));
        self.slots
            .back()
            .is_none_or(|slot| slot.number < oldest_useful)
    }
}

/// The state after a decrease: where the recovery starts and aims.
#[derive(Clone, Copy, Debug)]
struct Recovery {
    /// The rate set by the decrease, in requests per window.
    start: f64,
    /// The rate the recovery climbs back to: what the server accepted over a busy window, or
    /// the rate in force when it refused.
    peak: f64,
    /// The rate in force when the server refused: the peak never exceeds it.
    cap: f64,
    /// When the refused request was sent: the window that ends here is the one measured (the
    /// requests sent before it have mostly been answered; those after it may be in flight).
    measured_until: Instant,
    /// Whether `peak` was measured over a busy window (late answers may then raise it).
    measured: bool,
    /// The rate last handed out.
    rate: f64,
    /// Rounds of refusals in a row, each within `recovery_windows` of the one before.
    rounds: u32,
}

/// The adaptive state of one key.
#[derive(Clone, Debug)]
pub(crate) struct KeyRate {
    answers: Answers,
    recovery: Option<Recovery>,
    /// The last decrease (or smoothing): refusals of requests sent before it are old news.
    decreased_at: Option<Instant>,
    /// The answers to the requests in flight at the last decrease.
    round: Round,
    window: Duration,
}

/// How many answers in flight at a decrease must all be refusals for the round to show a
/// server whose window is full (see [`KeyRate::on_full_round`]).
const FULL_ROUND: u32 = 4;

/// The answers to the requests sent before the key's last decrease that came back after it.
/// A strict server refuses one request that arrived early and accepts the next; a key too fast
/// for its server finds every request in flight refused as well.
#[derive(Clone, Copy, Debug, Default)]
struct Round {
    refused: u32,
    accepted: u32,
    /// The round already cut the rate once.
    acted: bool,
    /// The round widened the key's spacing rather than cutting its rate.
    widened: bool,
}

impl KeyRate {
    pub(crate) fn new(window: Duration, now: Instant) -> Self {
        Self {
            answers: Answers::new(window, now),
            recovery: None,
            decreased_at: None,
            round: Round::default(),
            window,
        }
    }

    /// Nothing to remember: no recent answers and no decrease in force.
    pub(crate) fn is_idle(&self, now: Instant) -> bool {
        self.recovery.is_none() && self.answers.is_empty(now)
    }

    /// A request sent at `sent_at` was accepted. `ceiling` is the configured limit per window.
    pub(crate) fn on_success(
        &mut self,
        params: &Adaptive,
        ceiling: f64,
        sent_at: Instant,
        now: Instant,
    ) -> Change {
        self.answers.add(sent_at, true);
        let Some(decreased_at) = self.decreased_at else {
            return Change::Keep;
        };
        if sent_at <= decreased_at {
            self.round.accepted += 1;
        }
        let Some(recovery) = self.recovery.as_mut() else {
            return Change::Keep;
        };
        // A success sent before the refusal arrived late: the measured window held more than
        // was counted then, so the learned limit rises to match.
        if recovery.measured && sent_at <= recovery.measured_until {
            let measured = self
                .answers
                .accepted_in_window_before(recovery.measured_until);
            recovery.peak = recovery.peak.max(measured.min(recovery.cap));
        }
        let since = now.saturating_duration_since(decreased_at).as_secs_f64();
        let target = recovery.target(params, since / self.window.as_secs_f64());
        if target >= ceiling {
            self.recovery = None;
            return Change::Recovered;
        }
        // Hand out a change only once it is worth a quota update: 0.2 % of the ceiling.
        if (target - recovery.rate).abs() < ceiling * RATE_STEP {
            return Change::Keep;
        }
        recovery.rate = target;
        Change::Rate(target)
    }

    /// A request sent at `sent_at` was refused; `in_force` is the key's quota now.
    pub(crate) fn on_refusal(
        &mut self,
        params: &Adaptive,
        in_force: InForce,
        sent_at: Instant,
        now: Instant,
    ) -> Change {
        self.answers.add(sent_at, false);
        if let Some(at) = self.decreased_at.filter(|&at| sent_at <= at) {
            self.round.refused += 1;
            let change = self.on_full_round(params, in_force, at);
            // Each such refusal would have been a round of its own had it come alone: over a
            // link with jitter, half the requests in flight come back refused at first.
            if matches!(change, Change::Keep) && self.round.widened && in_force.asked_wait {
                return Change::WidenAgain;
            }
            return change;
        }
        let current = in_force.rate;
        // A round within the climb back from the last one escalates a blind decrease.
        let rounds = match (self.recovery, self.decreased_at) {
            (Some(recovery), Some(at))
                if now.saturating_duration_since(at) < self.window * params.recovery_windows =>
            {
                recovery.rounds + 1
            }
            _ => 1,
        };
        self.decreased_at = Some(now);
        self.round = Round::default();
        if in_force.asked_wait && !in_force.bursts && !self.rate_is_wrong(current, sent_at) {
            // Evenly at its rate, and the count does not say the rate is wrong: timing noise
            // (a strict server's clock, jitter on the way) put two sends too close. A cut of
            // the rate would compound with every such refusal; the spacing margin does not.
            // A climb or probe under way stops where it is and holds there: the rate in force
            // got refused once, so it is not raised further for a while.
            if let Some(recovery) = self.recovery.as_mut() {
                recovery.start = recovery.rate;
                recovery.peak = recovery.rate;
            }
            self.round.widened = true;
            return Change::Widen;
        }
        if in_force.bursts {
            self.recovery = Some(Recovery {
                start: current,
                peak: current,
                cap: current,
                measured_until: sent_at,
                measured: false,
                rate: current,
                // Not a round of the rate: the first cut after smoothing is the first step.
                rounds: 0,
            });
            return Change::Smooth;
        }
        let (accepted, answered) = self.answers.in_window_before(sent_at);
        // Measured: the key sent in every sub-window, and about its rate. A key sending well
        // below its rate got through what it asked for, which says nothing of the server's limit.
        let measured =
            self.answers.busy_for_window_before(sent_at) && answered >= current * AT_RATE;
        let (peak, target) = if measured {
            if accepted >= 1.0 {
                // Running at its rate, the key climbs back to that rate (the rate at the
                // refusal, as CUBIC's W_max); far above what got through, to what got through.
                let peak = if accepted >= current * AT_RATE {
                    current
                } else {
                    accepted
                };
                (peak, peak * params.backoff)
            } else {
                // A whole window and nothing got through: all we know is "too fast".
                (current, 0.0)
            }
        } else {
            // A partial window: step down, further each round, but not below what it already
            // got accepted (the server's limit is at least that). An isolated refusal climbs
            // back to the rate in force; a repeated one does not go back to a refused rate.
            let step = (1.0 - params.backoff) * 4f64.powi((rounds - 1).min(16) as i32);
            let floor = (accepted * params.backoff).min(current);
            let target = (current * (1.0 - step)).max(floor);
            let peak = if rounds > 1 { target } else { current };
            (peak, target)
        };
        let target = target.max(current * MAX_DECREASE);
        self.recovery = Some(Recovery {
            start: target,
            // Never a climb down: what the half-floor kept is where the recovery holds.
            peak: peak.max(target),
            cap: current,
            measured_until: sent_at,
            measured,
            rate: target,
            rounds,
        });
        Change::Rate(target)
    }
}

impl KeyRate {
    /// One more request in flight at the decrease of `decided_at` came back refused. When the
    /// first [`FULL_ROUND`] of them all did, the server's window is full, not its clock
    /// strict: what it accepted over the window before is its limit, so the rate goes just
    /// under that at once (at most halving, as any round), instead of widening the spacing
    /// round after round. Once per round; not while the key may burst (smoothing comes first).
    fn on_full_round(
        &mut self,
        params: &Adaptive,
        in_force: InForce,
        decided_at: Instant,
    ) -> Change {
        let round = self.round;
        if round.acted || round.accepted > 0 || round.refused < FULL_ROUND || in_force.bursts {
            return Change::Keep;
        }
        let current = in_force.rate;
        let accepted = self.answers.accepted_in_window_before(decided_at);
        if accepted < 1.0 || accepted >= current * AT_RATE {
            return Change::Keep;
        }
        self.round.acted = true;
        let target = (accepted * params.backoff).max(current * MAX_DECREASE);
        self.recovery = Some(Recovery {
            start: target,
            peak: target,
            cap: current,
            measured_until: decided_at,
            measured: false,
            rate: target,
            rounds: 1,
        });
        tracing::debug!(
            accepted,
            rate = target,
            "every request in flight refused: rate cut to what the server took"
        );
        Change::Rate(target)
    }

    /// What the server accepted of the requests sent in the window before `sent_at`.
    pub(crate) fn accepted_before(&self, sent_at: Instant) -> f64 {
        self.answers.accepted_in_window_before(sent_at)
    }

    /// Whether the key's own count shows its rate is wrong: it sent about its rate over a whole
    /// busy window before `sent_at`, and the server accepted clearly less than that.
    fn rate_is_wrong(&self, current: f64, sent_at: Instant) -> bool {
        let (accepted, answered) = self.answers.in_window_before(sent_at);
        self.answers.busy_for_window_before(sent_at)
            && answered >= current * AT_RATE
            && accepted < current * AT_RATE
    }
}

impl Recovery {
    /// The rate `windows` windows after the decrease: a concave cubic from `start` back to
    /// `peak` over `recovery_windows`, `peak` for `probe_windows`, then a probe that adds one
    /// request per window and doubles every window.
    fn target(&self, params: &Adaptive, windows: f64) -> f64 {
        let climb = f64::from(params.recovery_windows);
        if windows < climb {
            let left = 1.0 - windows / climb;
            return self.peak - (self.peak - self.start) * left.powi(3);
        }
        let probing = windows - climb - f64::from(params.probe_windows);
        if probing < 0.0 {
            return self.peak;
        }
        // 2^probing, bounded so that a long-idle recovery cannot overflow.
        self.peak + probing.min(60.0).exp2()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(1);
    const EVEN: InForce = InForce {
        rate: 100.0,
        bursts: false,
        asked_wait: false,
    };

    fn even(rate: f64) -> InForce {
        InForce {
            rate,
            bursts: false,
            asked_wait: false,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The rate a change hands out, to 0.1 (None: no new rate).
    fn rate_of(change: Change) -> Option<f64> {
        match change {
            Change::Rate(rate) => Some((rate * 10.0).round() / 10.0),
            _ => None,
        }
    }

    /// A key that sent `sent` requests per window, evenly, for `windows` windows from `start`,
    /// of which the server accepted `accepted` per window (spread evenly) and refused the rest.
    /// The answers of the last `withheld` accepted requests are not in yet: their send
    /// instants are returned, with the instant after the last send.
    fn traffic(
        rate: &mut KeyRate,
        start: Instant,
        (sent, accepted): (u32, u32),
        windows: u32,
        withheld: usize,
    ) -> (Instant, Vec<Instant>) {
        let spacing = WINDOW / sent;
        let mut at = start;
        let mut answers = Vec::new();
        for i in 0..sent * windows {
            let n = i % sent;
            answers.push((at, (n + 1) * accepted / sent != n * accepted / sent));
            at += spacing;
        }
        let mut late = Vec::new();
        while late.len() < withheld {
            let index = answers
                .iter()
                .rposition(|&(_, ok)| ok)
                .expect("enough accepted");
            late.push(answers.remove(index).0);
        }
        for (sent_at, ok) in answers {
            rate.answers.add(sent_at, ok);
        }
        (at, late)
    }

    /// [`traffic`] with everything accepted and answered.
    fn busy(rate: &mut KeyRate, start: Instant, per_window: u32, windows: u32) -> Instant {
        traffic(rate, start, (per_window, per_window), windows, 0).0
    }

    #[test]
    fn counts_answers_by_send_time_in_the_window() {
        let start = Instant::now();
        let mut answers = Answers::new(WINDOW, start);
        // Answers arrive in any order; each counts at its send time.
        for i in (0..100).rev() {
            answers.add(start + ms(i * 10), i % 4 != 0);
        }
        let within = |end_ms: u64| answers.in_window_before(start + ms(end_ms));
        // Both edge sub-windows are prorated: exact for even traffic, to a request or two.
        let (accepted, answered) = within(999);
        assert!((accepted - 75.0).abs() <= 1.5, "{accepted}");
        assert!((answered - 100.0).abs() <= 1.5, "{answered}");
        let (accepted, answered) = within(1500);
        assert!((accepted - 37.5).abs() <= 1.5, "{accepted}");
        assert!((answered - 50.0).abs() <= 1.5, "{answered}");
        assert_eq!(within(3000), (0.0, 0.0));
        assert!(!answers.is_empty(start + Duration::from_secs(2)));
        assert!(answers.is_empty(start + Duration::from_secs(4)));
    }

    #[test]
    fn only_a_whole_busy_window_counts_as_measured() {
        let start = Instant::now();
        let mut answers = Answers::new(WINDOW, start);
        answers.add(start, true);
        // Start-up: one answer in the first milliseconds measures nothing.
        assert!(!answers.busy_for_window_before(start + ms(10)));
        for i in 1..100 {
            answers.add(start + ms(i * 10), true);
        }
        assert!(answers.busy_for_window_before(start + ms(1000)));
        // Refusals show the key was busy too.
        for i in 100..200 {
            answers.add(start + ms(i * 10), false);
        }
        assert!(answers.busy_for_window_before(start + ms(2000)));
        // A pause of half a window leaves a gap: not measured until a whole window is busy again.
        for i in 250..400 {
            answers.add(start + ms(i * 10), true);
        }
        assert!(!answers.busy_for_window_before(start + ms(3000)));
        assert!(answers.busy_for_window_before(start + ms(3800)));
    }

    #[test]
    fn a_key_running_at_its_rate_steps_just_under_it_once() {
        let params = Adaptive::default();
        let start = Instant::now();
        let mut rate = KeyRate::new(WINDOW, start);
        let now = busy(&mut rate, start, 100, 2);
        let change = rate.on_refusal(&params, EVEN, now, now);
        assert_eq!(rate_of(change), Some(99.0));
        // Refusals of requests sent before the decrease are the same news.
        assert_eq!(rate.on_refusal(&params, even(99.0), now, now), Change::Keep);
    }

    #[test]
    fn a_key_sending_well_below_its_rate_takes_a_blind_step_not_its_demand() {
        let params = Adaptive::default();
        let start = Instant::now();
        let mut rate = KeyRate::new(WINDOW, start);
        // 10 per window on a quota of 100, every sub-window busy: what got through is the
        // demand, not the server's limit. One 429 steps 1 %, never to 10 or to half.
        let now = busy(&mut rate, start, 10, 3);
        assert_eq!(
            rate_of(rate.on_refusal(&params, EVEN, now, now)),
            Some(99.0)
        );
    }

    #[test]
    fn far_above_what_got_through_the_rate_drops_to_it_at_most_halving_per_round() {
        let params = Adaptive::default();
        let start = Instant::now();
        let mut rate = KeyRate::new(WINDOW, start);
        // Sending 120, the server took 100: just under 100.
        let (now, _) = traffic(&mut rate, start, (120, 100), 2, 0);
        assert_eq!(
            rate_of(rate.on_refusal(&params, even(120.0), now, now)),
            Some(99.0)
        );
        // Sending 1000: half per round, however far the server is below.
        let mut rate = KeyRate::new(WINDOW, start);
        let (now, _) = traffic(&mut rate, start, (1000, 100), 2, 0);
        assert_eq!(
            rate_of(rate.on_refusal(&params, even(1000.0), now, now)),
            Some(500.0)
        );
    }

    #[test]
    fn a_busy_window_with_nothing_accepted_halves() {
        let params = Adaptive::default();
        let start = Instant::now();
        let mut rate = KeyRate::new(WINDOW, start);
        let (now, _) = traffic(&mut rate, start, (100, 0), 2, 0);
        assert_eq!(
            rate_of(rate.on_refusal(&params, EVEN, now, now)),
            Some(50.0)
        );
    }

    #[test]
    fn a_start_up_refusal_steps_down_one_percent_then_further_each_round() {
        let params = Adaptive::default();
        let start = Instant::now();
        let mut rate = KeyRate::new(WINDOW, start);
        // One early 429: the second request, 10 ms in. The old rule read "1 per second".
        rate.on_success(&params, 100.0, start, start + ms(1));
        let refused = start + ms(10);
        assert_eq!(
            rate_of(rate.on_refusal(&params, EVEN, refused, refused)),
            Some(99.0)
        );
        // Further rounds within the climb back step 4x as far each, never more than halving:
        // 99 -> 95.0 (4 %) -> 79.8 (16 %) -> 39.9 (64 %, held to half) -> 20.0.
        let mut current = 99.0;
        let mut now = refused;
        for expected in [95.0, 79.8, 39.9, 20.0] {
            now += ms(100);
            let next = rate_of(rate.on_refusal(&params, even(current), now, now)).unwrap();
            assert_eq!(next, expected);
            assert!(next * 2.0 >= current - 0.1);
            current = next;
        }
    }

    #[test]
    fn a_partial_window_never_steps_below_what_it_got_accepted() {
        let params = Adaptive::default();
        let start = Instant::now();
        let mut rate = KeyRate::new(WINDOW, start);
        // 100 accepted in the first 100 ms, then refusals: the server allows at least 100.
        for i in 0..100 {
            let at = start + Duration::from_micros(i * 1000);
            rate.on_success(&params, 1000.0, at, at);
        }
        let mut current = 1000.0;
        let mut now = start + ms(100);
        for _ in 0..12 {
            if let Some(next) = rate_of(rate.on_refusal(&params, even(current), now, now)) {
                current = next;
            }
            now += ms(50);
        }
        assert_eq!(current, 99.0);
    }

    #[test]
    fn a_burst_is_smoothed_before_the_rate_is_cut() {
        let params = Adaptive::default();
        let start = Instant::now();
        let bursting = InForce {
            rate: 100.0,
            bursts: true,
            asked_wait: false,
        };
        let mut rate = KeyRate::new(WINDOW, start);
        let now = busy(&mut rate, start, 100, 2);
        assert_eq!(rate.on_refusal(&params, bursting, now, now), Change::Smooth);
        assert_eq!(rate.on_refusal(&params, EVEN, now, now), Change::Keep);
        // The first cut after smoothing is a first round: 1 %, measured or not.
        let later = now + ms(10);
        assert_eq!(
            rate_of(rate.on_refusal(&params, EVEN, later, later)),
            Some(99.0)
        );
        let mut rate = KeyRate::new(WINDOW, start);
        rate.on_success(&params, 100.0, start, start);
        let refused = start + ms(5);
        assert_eq!(
            rate.on_refusal(&params, bursting, refused, refused),
            Change::Smooth
        );
        let later = start + ms(20);
        assert_eq!(
            rate_of(rate.on_refusal(&params, EVEN, later, later)),
            Some(99.0)
        );
    }

    /// The rate handed out `windows` windows after the decrease (None: unchanged).
    fn rate_at(rate: &mut KeyRate, decreased: Instant, ceiling: f64, windows: f64) -> Option<f64> {
        let at = decreased + WINDOW.mul_f64(windows);
        match rate.on_success(&Adaptive::default(), ceiling, at, at) {
            Change::Recovered => Some(ceiling),
            change => rate_of(change),
        }
    }

    #[test]
    fn recovery_climbs_back_holds_then_probes_to_the_configured_quota() {
        let params = Adaptive::default();
        let start = Instant::now();
        let mut rate = KeyRate::new(WINDOW, start);
        let (now, _) = traffic(&mut rate, start, (150, 100), 2, 0);
        assert_eq!(
            rate_of(rate.on_refusal(&params, even(150.0), now, now)),
            Some(99.0)
        );
        // Concave: most of the way in half the climb.
        assert_eq!(rate_at(&mut rate, now, 200.0, 1.5), Some(99.9));
        // At the learned limit (100, less than 0.2 % of the ceiling from 99.9: no new rate),
        // held there for 10 windows.
        assert_eq!(rate_at(&mut rate, now, 200.0, 3.0), None);
        assert_eq!(rate_at(&mut rate, now, 200.0, 12.9), None);
        assert_eq!(rate_at(&mut rate, now, 200.0, 13.0), Some(101.0)); // probing: +1,
        assert_eq!(rate_at(&mut rate, now, 200.0, 15.0), Some(104.0)); // +4, doubling
        assert_eq!(rate_at(&mut rate, now, 200.0, 20.0), Some(200.0)); // back at the quota
        assert!(rate.recovery.is_none());
    }

    #[test]
    fn a_key_that_ran_at_its_quota_is_back_at_it_after_the_climb() {
        let params = Adaptive::default();
        let start = Instant::now();
        let mut rate = KeyRate::new(WINDOW, start);
        let now = busy(&mut rate, start, 100, 2);
        assert_eq!(
            rate_of(rate.on_refusal(&params, EVEN, now, now)),
            Some(99.0)
        );
        assert_eq!(rate_at(&mut rate, now, 100.0, 1.0), Some(99.7));
        assert!(rate.recovery.is_some());
        assert_eq!(rate_at(&mut rate, now, 100.0, 3.0), Some(100.0));
        assert!(rate.recovery.is_none());
    }

    #[test]
    fn recovery_takes_a_bounded_time_whatever_the_learned_value() {
        let params = Adaptive::default();
        let start = Instant::now();
        // Collapsed to about 1 per window by a server that accepted almost nothing for a while.
        let mut rate = KeyRate::new(WINDOW, start);
        let (mut now, _) = traffic(&mut rate, start, (10_000, 1), 3, 0);
        let mut current = 10_000.0;
        for _ in 0..20 {
            if let Some(next) = rate_of(rate.on_refusal(&params, even(current), now, now)) {
                current = next;
            }
            now += ms(10);
        }
        assert!(current <= 1.0, "{current}");
        // 3 windows back, 10 held, then doubling: 10,000 per window within 14 more.
        let decreased = rate.decreased_at.unwrap();
        assert!(rate_at(&mut rate, decreased, 10_000.0, 26.0).unwrap() < 10_000.0);
        assert_eq!(
            rate_at(&mut rate, decreased, 10_000.0, 27.0),
            Some(10_000.0)
        );
    }

    #[test]
    fn late_successes_raise_an_early_estimate() {
        let params = Adaptive::default();
        let start = Instant::now();
        let mut rate = KeyRate::new(WINDOW, start);
        // Sending 120 per window to a server that takes 100: when a refusal arrives, 5 accepted
        // answers of the last window are still on their way, so it counts 95.
        let (now, late) = traffic(&mut rate, start, (120, 100), 2, 5);
        assert_eq!(
            rate_of(rate.on_refusal(&params, even(120.0), now, now)),
            Some(94.1)
        );
        // They come back: the learned limit is 100 after all, and the recovery climbs to it.
        for sent in late {
            rate.on_success(&params, 1000.0, sent, now + ms(5));
        }
        assert_eq!(rate_at(&mut rate, now, 1000.0, 3.0), Some(100.0));
    }
}
