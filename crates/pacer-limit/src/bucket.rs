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
    /// With a quota shared through Redis: the slots leased from it.
    #[cfg(feature = "redis")]
    remote: Option<crate::redis::slots::RemoteSlots>,
}

/// The outcome of asking a bucket for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Admitted now; the send is recorded.
    Granted,
    /// Not before this instant.
    NotBefore(Instant),
    /// When slots on their way from the shared store arrive: their arrival wakes the head, or,
    /// should they never come, this instant, when they are asked for again.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Pending(Instant),
}

impl Bucket {
    pub(crate) fn new(quota: Quota, now: Instant) -> Self {
        Self {
            quota,
            overridden: false,
            model: ModelState::new(&quota, now),
            paused_until: None,
            waiters: VecDeque::new(),
            #[cfg(feature = "redis")]
            remote: None,
        }
    }

    /// Takes slots from a quota shared through Redis rather than from the local model alone.
    #[cfg(feature = "redis")]
    pub(crate) fn share(&mut self, remote: crate::redis::slots::RemoteSlots) {
        self.remote = Some(remote);
    }

    #[cfg(feature = "redis")]
    pub(crate) fn remote_mut(&mut self) -> Option<&mut crate::redis::slots::RemoteSlots> {
        self.remote.as_mut()
    }

    pub(crate) fn quota(&self) -> Quota {
        self.quota
    }

    /// The earliest instant the `n`-th next send (0-based) could go out.
    pub(crate) fn nth_earliest(&self, now: Instant, n: usize) -> Instant {
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.remote {
            let mut at = remote.nth_earliest(now, n);
            if self.overridden {
                at = at.max(self.model.nth_earliest(now, n));
            }
            return self.paused_until.map_or(at, |until| at.max(until));
        }
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
        #[cfg(feature = "redis")]
        if let Some(remote) = &mut self.remote {
            if let Some(until) = self.paused_until.filter(|until| *until > now) {
                return Admission::NotBefore(until);
            }
            // A rate learned at run time paces this process below the shared quota.
            let local = self.model.earliest(now);
            if self.overridden && local > now {
                return Admission::NotBefore(local);
            }
            let admission = remote.admit(now, self.waiters.len().max(1), &self.quota);
            if admission == Admission::Granted {
                self.model.record(now);
                self.paused_until = None;
            }
            return admission;
        }
        let earliest = self.nth_earliest(now, 0);
        if earliest <= now {
            self.model.record(now);
            self.paused_until = None;
            Admission::Granted
        } else {
            Admission::NotBefore(earliest)
        }
    }

    /// Whether a pause holds the key at `now`.
    pub(crate) fn is_paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|until| until > now)
    }

    /// Returns whether the pause is longer than the one in force. When the pause ends, the
    /// waiters leave evenly spaced at the key's rate, never in a herd.
    pub(crate) fn pause_until(&mut self, until: Instant) -> bool {
        if self.paused_until.is_some_and(|p| p >= until) {
            return false;
        }
        self.paused_until = Some(until);
        self.model.fill_until(until);
        #[cfg(feature = "redis")]
        if let Some(remote) = &mut self.remote {
            remote.release_before(until);
        }
        true
    }

    /// Shares a pause of `pause` with every process on the quota (when it is shared).
    pub(crate) fn share_pause(&self, pause: std::time::Duration) {
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.remote {
            remote.share_pause(pause);
        }
        let _ = pause;
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
            && self.remote_is_idle(now)
    }

    fn remote_is_idle(&self, now: Instant) -> bool {
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.remote {
            return remote.is_idle(now);
        }
        let _ = now;
        true
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
        #[cfg(feature = "redis")]
        if let Some(remote) = &mut self.remote {
            // A waiter that gave up leaves its leased slot to the others, or to Redis.
            remote.release_surplus(self.waiters.len());
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
