//! One key's state: its quota, its admission history, a pause, and its waiters in their lanes.

use std::task::Waker;

use tokio::time::Instant;

use crate::adaptive::Adaptive;
use crate::lanes::{Lanes, Place};
use crate::learned::{Answer, Learned, Sharing};
use crate::priority::{Demand, Priority};
use crate::quota::{Cap, Quota};
use crate::source::{Admission, LocalSlots, SlotSource};

#[derive(Debug)]
pub(crate) struct Bucket {
    quota: Quota,
    /// Whether the quota in force differs from the configured one (set at run time, see
    /// [`crate::Limiter::set_quota`], or learned): with a shared source it paces this process
    /// below the shared quota, and the bucket is not evicted, or the change would be forgotten.
    overridden: bool,
    /// What the key learned from the server's answers ([`crate::Limiter::observe`]).
    learned: Option<Box<Learned>>,
    /// The key's own pacing at `quota`; every send is recorded here. With a `shared` source it
    /// paces only a quota set at run time, which slows this process below the shared one.
    local: LocalSlots,
    /// Slots from beyond this process (e.g. a quota shared through Redis), when the limiter has
    /// [slot sources](crate::LimiterBuilder::slot_sources).
    shared: Option<Box<dyn SlotSource>>,
    /// Nothing is admitted before this instant: a server's Retry-After, or a model switch.
    paused_until: Option<Instant>,
    waiters: Lanes,
}

impl Bucket {
    pub(crate) fn new(
        quota: Quota,
        now: Instant,
        shared: Option<Box<dyn SlotSource>>,
        min_share: f64,
    ) -> Self {
        Self {
            quota,
            overridden: false,
            learned: None,
            local: LocalSlots::new(&quota, now),
            shared,
            paused_until: None,
            waiters: Lanes::new(min_share),
        }
    }

    pub(crate) fn quota(&self) -> Quota {
        self.quota
    }

    /// The cap that is about spent, and when it frees (see [`crate::caps::Caps::about_spent`]),
    /// counted by this process's sends or by the shared source, whichever counts more.
    pub(crate) fn about_spent(&self, now: Instant) -> Option<(Cap, Instant)> {
        let shared = |cap: &Cap| self.shared.as_ref()?.cap_count(cap, now);
        self.local.caps().about_spent(now, shared)
    }

    /// The earliest instant the `n`-th next send (0-based) could go out.
    pub(crate) fn nth_earliest(&self, now: Instant, n: usize) -> Instant {
        let Some(shared) = &self.shared else {
            let at = self.local.nth_earliest(now, n);
            return match self.paused_until {
                // After a pause the model restarts from `until`, not from `now`.
                Some(until) if until > now => at.max(self.local.nth_earliest(until, n)),
                _ => at,
            };
        };
        let mut at = shared.nth_earliest(now, n);
        if self.overridden {
            at = at.max(self.local.nth_earliest(now, n));
        }
        self.paused_until.map_or(at, |until| at.max(until))
    }

    /// Admits one send at `now` if the source and any pause allow it: for the head of the
    /// queue, or for a `newcomer` in its lane that would lead it.
    pub(crate) fn try_admit(&mut self, now: Instant, newcomer: Option<Priority>) -> Admission {
        let Some(shared) = &mut self.shared else {
            let earliest = self.nth_earliest(now, 0);
            if earliest > now {
                return Admission::NotBefore(earliest);
            }
            self.local.record(now);
            self.paused_until = None;
            return Admission::Granted;
        };
        if let Some(until) = self.paused_until.filter(|until| *until > now) {
            return Admission::NotBefore(until);
        }
        // A rate learned at run time paces this process below the shared quota.
        if self.overridden {
            let at = self.local.nth_earliest(now, 0);
            if at > now {
                return Admission::NotBefore(at);
            }
        }
        // The caller is among the demand, queued or not.
        let mut demand = self.waiters.demand();
        if let Some(lane) = newcomer {
            demand = demand_plus(demand, lane);
        }
        let admission = shared.admit(now, demand);
        if admission == Admission::Granted {
            self.local.record(now);
            self.paused_until = None;
        }
        admission
    }

    /// Whether a pause holds the key at `now`.
    pub(crate) fn is_paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|until| until > now)
    }

    /// The pause in force at `now`, if any.
    pub(crate) fn paused_until(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|until| *until > now)
    }

    /// Returns whether the pause is longer than the one in force. When the pause ends, the
    /// waiters leave evenly spaced at the key's rate, never in a herd.
    pub(crate) fn pause_until(&mut self, until: Instant) -> bool {
        if self.paused_until.is_some_and(|p| p >= until) {
            return false;
        }
        self.paused_until = Some(until);
        self.local.on_pause(until);
        if let Some(shared) = &mut self.shared {
            shared.on_pause(until);
        }
        true
    }

    /// Tells every other user of a shared quota about a server's pause until `until`.
    pub(crate) fn share_pause(&self, now: Instant, until: Instant) {
        if let Some(shared) = &self.shared {
            shared.share_pause(now, until);
        }
    }

    /// Puts `quota` in force from now on, replacing anything learned.
    pub(crate) fn set_quota(&mut self, quota: Quota, now: Instant) {
        self.learned = None;
        self.requota(quota, now, true);
    }

    /// Switches to `quota`, keeping the key's history; `overridden`: it is not the configured one.
    fn requota(&mut self, quota: Quota, now: Instant, overridden: bool) {
        let not_before = self.local.requota(&quota, now);
        self.quota = quota;
        self.overridden = overridden;
        if let Some(at) = not_before {
            self.pause_until(at);
        }
    }

    /// Learns from one answer of the server (see [`crate::Limiter::observe`]); returns the new
    /// rate per second when the quota in force changed.
    pub(crate) fn learn(
        &mut self,
        params: &Adaptive,
        configured: &Quota,
        answer: Answer,
        now: Instant,
    ) -> Option<f64> {
        let learned = self
            .learned
            .get_or_insert_with(|| Box::new(Learned::new(configured.effective_window(), now)));
        let sharing = match &self.shared {
            None => Sharing::Alone,
            Some(shared) => Sharing::Shared {
                spaced: shared.applies_shared_spacing(),
            },
        };
        // Asked only when the key did not learn it itself (a look into the source's state).
        let shared = &self.shared;
        let shared_strict = || shared.as_ref().is_some_and(|shared| shared.is_strict());
        let lesson = learned.on_answer(params, configured, answer, sharing, now);
        let hold = (!answer.refused)
            .then(|| learned.hold_after(configured, answer.sent_at, now, shared_strict))
            .flatten();
        let Some(lesson) = lesson else {
            if let Some(at) = hold {
                self.hold_until(at, now);
            }
            return None;
        };
        let overridden = !learned.at_configured();
        if !overridden && learned.is_idle(now) {
            self.learned = None;
        }
        if let (Some((extra, half_life)), Some(shared)) = (lesson.widened, &self.shared) {
            shared.share_spacing(now, extra, half_life);
        }
        let quota = lesson.quota;
        self.requota(quota, now, overridden);
        if let Some(at) = hold {
            self.hold_until(at, now);
        }
        self.wake_head();
        Some(quota.rate_per_second())
    }

    /// Holds the key's next send until `at` when its pacing alone would let it go sooner: an
    /// answer showed the last accepted send reached a strict server late (see
    /// `crate::arrival`). This process's own pacing moves on from `at`; a shared source decides
    /// how (the other processes' slots after its own do not move, see
    /// [`SlotSource::hold_until`]). Nobody is woken; a waiter due sooner finds the hold and
    /// waits on.
    fn hold_until(&mut self, at: Instant, now: Instant) {
        let due = self.nth_earliest(now, 0);
        if at <= due {
            return;
        }
        tracing::trace!(held = ?at - due, "last accepted send reached the server late; next send held");
        match &mut self.shared {
            Some(shared) => shared.hold_until(at),
            None => self.local.on_pause(at),
        }
    }

    /// Spends `remaining` sends evenly before `reset_at`: when the key's own rate would spend
    /// them sooner, the next send waits one share of the time left, a share being a
    /// `remaining + 1`-th: the last of them then goes out one share before the reset, inside the
    /// window that granted it (a `remaining`-th would put it on the reset itself, where it
    /// starts the next window and the allowance is lost). Returns the pause, if any.
    pub(crate) fn pace_ahead(
        &mut self,
        remaining: u64,
        reset_at: Instant,
        now: Instant,
    ) -> Option<Instant> {
        if remaining == 0 || reset_at <= now {
            return None;
        }
        let shares = u32::try_from(remaining.saturating_add(1)).unwrap_or(u32::MAX);
        let share = (reset_at - now) / shares;
        if share <= self.quota.emission_interval() {
            return None;
        }
        let until = now + share;
        if self.pause_until(until) {
            self.share_pause(now, until);
        }
        Some(until)
    }

    /// Whether dropping this bucket would forget nothing.
    pub(crate) fn is_idle(&self, now: Instant) -> bool {
        !self.overridden
            && self
                .learned
                .as_ref()
                .is_none_or(|learned| learned.is_idle(now))
            && self.waiters.is_empty()
            && self.paused_until.is_none_or(|p| p <= now)
            && self.local.is_idle(now)
            && self
                .shared
                .as_ref()
                .is_none_or(|shared| shared.is_idle(now))
    }

    // ===== the waiters, in their lanes =====

    pub(crate) fn queue_len(&self) -> usize {
        self.waiters.len()
    }

    pub(crate) fn queue_len_in(&self, lane: Priority) -> usize {
        self.waiters.len_in(lane)
    }

    /// How many wait in `lane` and the lanes above it: what its queue bound counts.
    pub(crate) fn queue_len_up_to(&self, lane: Priority) -> usize {
        self.waiters.len_up_to(lane)
    }

    /// A newcomer in `lane` took a slot before the queued waiters (it leads them): the lower
    /// lanes waiting earn their share of it (and one that earned its turn is woken to take it).
    pub(crate) fn count_newcomer_grant(&mut self, lane: Priority) {
        self.waiters.count_grant(lane);
    }

    /// How many are served before a newcomer in `lane` (0: it would be the head).
    pub(crate) fn ahead_of_newcomer(&self, lane: Priority) -> usize {
        self.waiters.ahead_of_newcomer(lane)
    }

    pub(crate) fn enqueue(&mut self, lane: Priority, id: u64, waker: Waker) {
        self.waiters.push(lane, id, waker);
    }

    /// Where the waiter stands, if it is queued.
    pub(crate) fn place(&self, lane: Priority, id: u64) -> Option<Place> {
        self.waiters.place(lane, id)
    }

    /// How many are served before the waiter at `place` (0 = it is the head).
    pub(crate) fn ahead_of(&self, place: Place) -> usize {
        self.waiters.ahead_of(place)
    }

    /// Stores the waker to use when this waiter's turn may have come.
    pub(crate) fn set_waker(&mut self, place: Place, waker: &Waker) {
        self.waiters.set_waker(place, waker);
    }

    /// The head at `place` took its slot and leaves; the next head is woken to arm its timer.
    pub(crate) fn grant(&mut self, place: Place) {
        self.waiters.grant(place);
        self.left();
    }

    /// Removes a waiter (refused or cancelled). When it was the head, the next waiter is woken
    /// so that it arms its own timer: a cancelled head never strands the queue, in any lane.
    pub(crate) fn remove(&mut self, place: Place) {
        self.waiters.remove(place);
        self.left();
    }

    fn left(&mut self) {
        if let Some(shared) = &mut self.shared {
            shared.on_leave(self.waiters.demand());
        }
    }

    pub(crate) fn wake_head(&mut self) {
        self.waiters.wake_head();
    }

    /// Wakes every waiter so each re-checks its maximum wait, e.g. after a long pause arrives.
    pub(crate) fn wake_all(&mut self) {
        self.waiters.wake_all();
    }
}

/// `demand` with one more waiter in `lane`.
fn demand_plus(demand: Demand, lane: Priority) -> Demand {
    let mut lanes = Priority::ALL.map(|p| demand.in_lane(p));
    lanes[lane.index()] += 1;
    Demand::from_lanes(lanes)
}
