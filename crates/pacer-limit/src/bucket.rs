//! One key's state: its quota, its admission history, a pause, and its FIFO queue of waiters.

use std::collections::VecDeque;
use std::task::Waker;

use tokio::time::Instant;

use crate::model::ModelState;
use crate::quota::Quota;

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
    /// Whether the quota was set at run time (see [`crate::Limiter::set_quota`]); such a bucket
    /// is never evicted, or the override would be forgotten.
    overridden: bool,
    model: ModelState,
    /// Nothing is admitted before this instant: a server's Retry-After, or a model switch.
    paused_until: Option<Instant>,
    waiters: VecDeque<Waiter>,
}

/// The outcome of asking a bucket for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Admitted now; the send is recorded.
    Granted,
    /// Not before this instant.
    NotBefore(Instant),
}

impl Bucket {
    pub(crate) fn new(quota: Quota, now: Instant) -> Self {
        Self {
            quota,
            overridden: false,
            model: ModelState::new(&quota, now),
            paused_until: None,
            waiters: VecDeque::new(),
        }
    }

    pub(crate) fn quota(&self) -> Quota {
        self.quota
    }

    /// The earliest instant the `n`-th next send (0-based) could go out.
    pub(crate) fn nth_earliest(&self, now: Instant, n: usize) -> Instant {
        let at = self.model.nth_earliest(now, n);
        match self.paused_until {
            Some(until) if until > now => {
                // After a pause the model restarts from `until`, not from `now`.
                at.max(self.model.nth_earliest(until, n))
            }
            _ => at,
        }
    }

    /// Admits one send at `now` if the model and any pause allow it.
    pub(crate) fn try_admit(&mut self, now: Instant) -> Admission {
        let earliest = self.nth_earliest(now, 0);
        if earliest <= now {
            self.model.record(now);
            self.paused_until = None;
            Admission::Granted
        } else {
            Admission::NotBefore(earliest)
        }
    }

    pub(crate) fn pause_until(&mut self, until: Instant) {
        if self.paused_until.is_none_or(|p| p < until) {
            self.paused_until = Some(until);
        }
    }

    pub(crate) fn set_quota(&mut self, quota: Quota, now: Instant) {
        let (model, not_before) = self.model.requota(&quota, now);
        self.model = model;
        self.quota = quota;
        self.overridden = true;
        if let Some(at) = not_before {
            self.pause_until(at);
        }
    }

    pub(crate) fn reset_quota(&mut self, quota: Quota, now: Instant) {
        self.set_quota(quota, now);
        self.overridden = false;
    }

    /// Whether dropping this bucket would forget nothing.
    pub(crate) fn is_idle(&self, now: Instant) -> bool {
        !self.overridden
            && self.waiters.is_empty()
            && self.paused_until.is_none_or(|p| p <= now)
            && self.model.is_idle(now)
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
