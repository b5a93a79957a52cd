//! One key's state: its quota, its admission history, a pause, and its FIFO queue of waiters.

use std::collections::VecDeque;
use std::task::Waker;

use tokio::time::Instant;

use crate::adaptive::Adaptive;
use crate::learned::{Answer, Learned};
use crate::quota::Quota;
use crate::source::{Admission, LocalSlots, SlotSource};

/// A waiter's place in its key's queue. Ids grow monotonically, so the queue stays sorted by id
/// and a waiter finds itself by binary search.
#[derive(Debug)]
struct Waiter {
    id: u64,
    waker: Option<Waker>,
}

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
    waiters: VecDeque<Waiter>,
}

impl Bucket {
    pub(crate) fn new(quota: Quota, now: Instant, shared: Option<Box<dyn SlotSource>>) -> Self {
        Self {
            quota,
            overridden: false,
            learned: None,
            local: LocalSlots::new(&quota, now),
            shared,
            paused_until: None,
            waiters: VecDeque::new(),
        }
    }

    pub(crate) fn quota(&self) -> Quota {
        self.quota
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

    /// Admits one send at `now` if the source and any pause allow it.
    pub(crate) fn try_admit(&mut self, now: Instant) -> Admission {
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
        let admission = shared.admit(now, self.waiters.len().max(1));
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
        let shared = self.shared.is_some();
        let lesson = learned.on_answer(params, configured, answer, shared, now)?;
        let overridden = !learned.at_configured();
        if !overridden && learned.is_idle(now) {
            self.learned = None;
        }
        if let (Some((extra, half_life)), Some(shared)) = (lesson.widened, &self.shared) {
            shared.share_spacing(now, extra, half_life);
        }
        let quota = lesson.quota;
        self.requota(quota, now, overridden);
        self.wake_head();
        Some(quota.rate_per_second())
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

    // ===== the FIFO queue =====

    pub(crate) fn queue_len(&self) -> usize {
        self.waiters.len()
    }

    pub(crate) fn enqueue(&mut self, id: u64, waker: Waker) {
        debug_assert!(self.waiters.back().is_none_or(|w| w.id < id));
        self.waiters.push_back(Waiter {
            id,
            waker: Some(waker),
        });
    }

    /// The waiter's position in the queue (0 = head), if it is queued.
    pub(crate) fn position(&self, id: u64) -> Option<usize> {
        self.waiters.binary_search_by_key(&id, |w| w.id).ok()
    }

    /// Stores the waker to use when this waiter's turn may have come.
    pub(crate) fn set_waker(&mut self, position: usize, waker: &Waker) {
        let slot = &mut self.waiters[position].waker;
        match slot {
            Some(current) if current.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    /// Removes a waiter (granted, refused or cancelled). When it was the head, the next waiter is
    /// woken so that it arms its own timer: a cancelled head never strands the queue.
    pub(crate) fn remove(&mut self, position: usize) {
        self.waiters.remove(position);
        if let Some(shared) = &mut self.shared {
            shared.on_leave(self.waiters.len());
        }
        if position == 0 {
            self.wake_head();
        }
    }

    pub(crate) fn wake_head(&mut self) {
        if let Some(waker) = self.waiters.front_mut().and_then(|w| w.waker.take()) {
            waker.wake();
        }
    }

    /// Wakes every waiter so each re-checks its maximum wait, e.g. after a long pause arrives.
    pub(crate) fn wake_all(&mut self) {
        for waiter in &mut self.waiters {
            if let Some(waker) = waiter.waker.take() {
                waker.wake();
            }
        }
    }
}
