//! The future that waits for a slot: by lane then FIFO per key, one timer per key,
//! cancellation-safe.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::error::{RateLimited, Reason};
use crate::limiter::{Key, Limiter};
use crate::metrics;
use crate::precise::WakeAt;
use crate::priority::Priority;
use crate::source::Admission;

/// Waits for a slot of one key's quota. Returned by [`Limiter::acquire`] and
/// [`Limiter::acquire_with_priority`].
///
/// The slot is consumed when this future completes with `Ok`. Dropping it earlier removes it from
/// the queue: no capacity is lost, and if it was at the head, the next waiter takes over.
#[must_use = "futures do nothing unless polled"]
pub struct Acquire<K: Key> {
    limiter: Limiter<K>,
    key: K,
    priority: Priority,
    phase: Phase,
    /// The head of the queue sleeps until its slot; other waiters need no timer.
    sleep: Option<Pin<Box<Sleep>>>,
    /// With precise wake-ups, the head is also woken by the high-resolution timer thread.
    wake_at: Option<WakeAt>,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Start,
    Queued { id: u64, since: Instant },
    Done,
}

impl<K: Key> Acquire<K> {
    pub(crate) fn new(limiter: Limiter<K>, key: K, priority: Priority) -> Self {
        Self {
            limiter,
            key,
            priority,
            phase: Phase::Start,
            sleep: None,
            wake_at: None,
        }
    }

    /// The key this future waits on.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// The lane this future waits in.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// Arms the head's timer for `at` (and the precise timer too when `precise`) and polls it;
    /// `Ready` means the instant has already passed.
    fn sleep_until(&mut self, at: Instant, precise: bool, cx: &mut Context<'_>) -> Poll<()> {
        if !precise {
            self.wake_at = None;
        } else {
            let real = at.into_std();
            if self.wake_at.as_ref().is_none_or(|w| w.deadline() != real) {
                self.wake_at = Some(WakeAt::new(real, cx.waker().clone()));
            }
        }
        match &mut self.sleep {
            Some(sleep) if sleep.deadline() == at => {}
            Some(sleep) => sleep.as_mut().reset(at),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        self.sleep
            .as_mut()
            .expect("sleep was just armed")
            .as_mut()
            .poll(cx)
    }

    /// One attempt under the lock: take a slot, join the queue, or learn when to look again.
    fn step(&mut self, cx: &mut Context<'_>) -> Step {
        let now = Instant::now();
        match self.phase {
            Phase::Start => self.arrive(now, cx),
            Phase::Queued { id, since } => self.look_again(id, since, now, cx),
            Phase::Done => panic!("`Acquire` polled after it completed"),
        }
    }

    /// The first poll: the fast path, a refusal, or a place at the back of its lane.
    fn arrive(&mut self, now: Instant, cx: &mut Context<'_>) -> Step {
        let config = &self.limiter.shared.config;
        let lane = self.priority;
        let mut state = self.limiter.shared.lock();
        let (at, ahead) = match state.admit_now(config, &self.key, lane, now) {
            Ok(()) => {
                self.phase = Phase::Done;
                return Step::Granted(Duration::ZERO);
            }
            Err(turn) => turn,
        };
        let bucket = state
            .existing(&self.key)
            .expect("admit_now created the bucket");
        // Only the waiters served before it count against a request's queue bound: a bulk
        // backlog never fills the queue for an interactive request.
        let refusal = if bucket.queue_len_up_to(lane) >= (config.max_queue)(&self.key) {
            Some(Reason::QueueFull)
        } else if config.max_wait[lane.index()].is_some_and(|max| at - now > max) {
            Some(Reason::MaxWait)
        } else {
            None
        };
        if let Some(reason) = refusal {
            state.counters.rejected += 1;
            self.phase = Phase::Done;
            return Step::Refused(RateLimited::new(reason, Some(at - now)));
        }
        let id = state.next_waiter_id();
        let bucket = state
            .existing(&self.key)
            .expect("admit_now created the bucket");
        bucket.enqueue(lane, id, cx.waker().clone());
        metrics::queue_length(&self.key, lane, bucket.queue_len_in(lane));
        self.phase = Phase::Queued { id, since: now };
        if ahead == 0 {
            Step::Sleep(at, config.precise_for(&bucket.quota()))
        } else {
            Step::Wait
        }
    }

    /// A later poll of a queued waiter: the head asks for its slot, the others re-check their
    /// maximum wait against the key's horizon.
    fn look_again(&mut self, id: u64, since: Instant, now: Instant, cx: &mut Context<'_>) -> Step {
        let config = &self.limiter.shared.config;
        let mut state = self.limiter.shared.lock();
        let lane = self.priority;
        let Some((bucket, place)) = state
            .existing(&self.key)
            .and_then(|b| b.place(lane, id).map(|p| (b, p)))
        else {
            // Unreachable while the queue holds us; recover by queueing again.
            self.phase = Phase::Start;
            return Step::Retry;
        };
        let position = bucket.ahead_of(place);
        let admission = if position == 0 {
            bucket.try_admit(now, None)
        } else {
            Admission::NotBefore(bucket.nth_earliest(now, position))
        };
        let step = match admission {
            Admission::Granted => {
                bucket.grant(place);
                metrics::queue_length(&self.key, lane, bucket.queue_len_in(lane));
                let waited = now - since;
                state.counters.count_wait(waited);
                Step::Granted(waited)
            }
            Admission::NotBefore(at)
                if config.max_wait[lane.index()].is_some_and(|max| at - since > max) =>
            {
                // A pause arrived after we queued and pushed our turn past the maximum.
                bucket.remove(place);
                metrics::queue_length(&self.key, lane, bucket.queue_len_in(lane));
                state.counters.rejected += 1;
                Step::Refused(RateLimited::new(Reason::MaxWait, Some(at - now)))
            }
            Admission::Pending(backstop) => {
                // The slots' arrival wakes the head; the backstop, if they never come.
                // Not a turn: the maximum wait does not apply to it.
                bucket.set_waker(place, cx.waker());
                return Step::Sleep(backstop, false);
            }
            Admission::NotBefore(at) => {
                bucket.set_waker(place, cx.waker());
                return if position == 0 {
                    Step::Sleep(at, config.precise_for(&bucket.quota()))
                } else {
                    Step::Wait
                };
            }
        };
        self.phase = Phase::Done;
        step
    }
}

enum Step {
    Granted(Duration),
    Refused(RateLimited),
    /// Sleep until the instant, with the precise timer too when the flag says so.
    Sleep(Instant, bool),
    Wait,
    Retry,
}

impl<K: Key> Future for Acquire<K> {
    type Output = Result<(), RateLimited>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match this.step(cx) {
                Step::Granted(waited) => {
                    let lane = this.priority;
                    metrics::admitted(&this.key, lane, waited);
                    let threshold = this.limiter.shared.config.log_wait_over;
                    if waited > threshold {
                        tracing::info!(key = ?this.key, lane = lane.as_str(), ?waited, "request waited for a rate-limit slot");
                    } else if !waited.is_zero() {
                        tracing::trace!(key = ?this.key, lane = lane.as_str(), ?waited, "request waited for a rate-limit slot");
                    }
                    return Poll::Ready(Ok(()));
                }
                Step::Refused(limited) => {
                    let lane = this.priority;
                    metrics::refused(&this.key, lane, limited.reason());
                    tracing::debug!(key = ?this.key, lane = lane.as_str(), reason = ?limited.reason(), retry_after = ?limited.retry_after(), "request refused by the rate limiter");
                    return Poll::Ready(Err(limited));
                }
                Step::Wait => {
                    // Not (or no longer: a more urgent newcomer leads) the head: only the head
                    // holds the key's timer.
                    this.sleep = None;
                    this.wake_at = None;
                    return Poll::Pending;
                }
                Step::Retry => continue,
                Step::Sleep(at, precise) => match this.sleep_until(at, precise, cx) {
                    // The instant passed while we were computing it: try again at once.
                    Poll::Ready(()) => continue,
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }
}

impl<K: Key> Drop for Acquire<K> {
    fn drop(&mut self) {
        if let Phase::Queued { id, .. } = self.phase {
            let lane = self.priority;
            let mut state = self.limiter.shared.lock();
            if let Some(bucket) = state.existing(&self.key) {
                if let Some(place) = bucket.place(lane, id) {
                    bucket.remove(place);
                    metrics::queue_length(&self.key, lane, bucket.queue_len_in(lane));
                }
            }
            state.counters.cancelled += 1;
        }
    }
}

impl<K: Key> fmt::Debug for Acquire<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acquire")
            .field("key", &self.key)
            .field("priority", &self.priority)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}
