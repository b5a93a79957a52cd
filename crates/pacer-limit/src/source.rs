//! Where a key's send slots come from, apart from how waiters queue for them. The rules are
//! on [`SlotSource`].

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::caps::Caps;
use crate::model::ModelState;
use crate::priority::Demand;
use crate::quota::{Cap, Quota};

/// The outcome of asking a [`SlotSource`] for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admission {
    /// A slot is taken now; the send goes out.
    Granted,
    /// No slot before this instant: the head of the queue sleeps until then.
    NotBefore(Instant),
    /// Slots are on their way (e.g. a reservation in flight): the source wakes the head through
    /// its [`HeadWaker`] when they arrive, or, should they never come, the head looks again at
    /// this instant. The limiter's maximum wait does not apply to it.
    Pending(Instant),
}

/// Gives out the send slots of one key.
///
/// The limiter's core (the FIFO queue, pauses, quota overrides, the head's timer) asks a
/// [`SlotSource`] for each slot. [`LocalSlots`], the key's own GCRA or sliding-window model, is
/// the source of every key by default. A limiter built with
/// [`LimiterBuilder::slot_sources`](crate::LimiterBuilder::slot_sources) takes its slots from
/// elsewhere too, e.g. a quota kept in Redis and shared with other processes (the
/// `pacer-limit-redis` crate): the core keeps queueing, pausing and waking exactly as for a
/// local key, and the source only says when a slot is free.
///
/// A source is called under the limiter's lock: its methods must not block, must not call back
/// into the limiter, and must not wake heads synchronously (a [`HeadWaker`] is for tasks the
/// source spawns).
pub trait SlotSource: fmt::Debug + Send + 'static {
    /// Takes a slot at `now` if one is free. `demand` is how many waiters want a slot in each
    /// lane, the caller among them (at least 1 in all): a source that fetches slots ahead knows
    /// how many, and how urgent they are (slots for bulk waiters are best fetched just in
    /// time: in a quota shared with other processes, a slot booked far ahead is one their
    /// interactive requests wait behind).
    fn admit(&mut self, now: Instant, demand: Demand) -> Admission;

    /// The earliest instant the `n`-th next send (0-based) could go out, never before `now`:
    /// exact where the source knows, an estimate at the quota's rate beyond. Queued waiters
    /// check their maximum wait against it.
    fn nth_earliest(&self, now: Instant, n: usize) -> Instant;

    /// The key admits nothing before `until` (a server's Retry-After, a quota change). Slots
    /// before it are unusable; after it, sends should leave evenly spaced, not in a herd.
    fn on_pause(&mut self, until: Instant);

    /// The key's next send must not go out before `until`: its last accepted send reached a
    /// strict server late (its answer came back late), and a send before `until` could arrive
    /// within the server's interval of it ([`Limiter::observe`](crate::Limiter::observe)).
    /// Unlike a pause, this is about the next send only. A source whose later slots are other
    /// processes' too may send its next slot late, as far as the room its schedule leaves
    /// before another process's slot allows, and skip the slots before `until` beyond that: a
    /// skipped slot stays spent (given back, another process could send on it, as close to
    /// the late arrival). Default: as a pause.
    fn hold_until(&mut self, until: Instant) {
        self.on_pause(until);
    }

    /// A server asked the key to wait until `until` ([`Limiter::pause_until`](crate::Limiter::pause_until)):
    /// tell whoever else takes slots from the same quota. Default: nobody else does.
    fn share_pause(&self, now: Instant, until: Instant) {
        let _ = (now, until);
    }

    /// The key's learned spacing margin widened to `extra` (0.03: sends 3 % further apart than
    /// the quota's interval) at `now`, after a refusal with a wait on an evenly paced key; it
    /// halves every `half_life` ([`Limiter::observe`](crate::Limiter::observe)). Tell whoever
    /// else takes slots from the same quota, so that they space their sends as widely: a
    /// margin one process keeps to itself does not slow the others. Default: nobody else does.
    fn share_spacing(&self, now: Instant, extra: f64, half_life: Duration) {
        let _ = (now, extra, half_life);
    }

    /// Whether the margin given to [`share_spacing`](Self::share_spacing) spaces this process's
    /// slots too (the source's schedule widens for every process, this one included). The
    /// limiter then does not pace the key by the margin itself: that would add to the source's
    /// spacing, and carry one late send's delay on to every slot after it, into the next
    /// process's slot. Default: no (the limiter paces the key by its margin).
    fn applies_shared_spacing(&self) -> bool {
        false
    }

    /// Whether the users of the same quota found the server strict: a spacing margin one of
    /// them learned and [shared](Self::share_spacing) (this process or another) is in force.
    /// The key then holds its next send after a late answer as if the server had refused the
    /// key itself (see [`hold_until`](Self::hold_until)): otherwise each process of a fleet
    /// learns that the server measures arrivals only from a refusal of its own, and each such
    /// refusal pauses the whole fleet. Default: no other user, nothing shared.
    fn is_strict(&self) -> bool {
        false
    }

    /// A waiter left the queue, with its slot or giving up; `waiting` remain, per lane. A
    /// source holding slots for more waiters than that may give the surplus back.
    fn on_leave(&mut self, waiting: Demand) {
        let _ = waiting;
    }

    /// How many slots the source counts against `cap`, one of the windows stacked on the
    /// key's quota ([`Quota::and`]), and when the oldest of them leaves its window: a quota
    /// shared with other processes counts their sends too. The limiter asks on a refusal
    /// without a wait, to tell a spent cap (a daily quota) from a rate too high; it uses the
    /// larger of this and its own count of this process's sends. Default: `None`, only the
    /// limiter's own count.
    fn cap_count(&self, cap: &Cap, now: Instant) -> Option<(u64, Instant)> {
        let _ = (cap, now);
        None
    }

    /// Whether dropping the source at `now` forgets nothing: the limiter then drops the key.
    fn is_idle(&self, now: Instant) -> bool;
}

/// Makes the [`SlotSource`] of each key a limiter creates
/// ([`LimiterBuilder::slot_sources`](crate::LimiterBuilder::slot_sources)).
pub trait SlotSources<K>: Send + Sync + 'static {
    /// The source for `key`, paced by its configured `quota`. `waker` wakes the key's head
    /// waiter, for slots that arrive later ([`Admission::Pending`]).
    fn source(&self, key: &K, quota: &Quota, waker: HeadWaker) -> Box<dyn SlotSource>;

    /// `self`, so that the crate that made the sources finds them again on a limiter
    /// ([`Limiter::slot_sources`](crate::Limiter::slot_sources)), e.g. for its statistics.
    fn as_any(&self) -> &dyn Any;
}

/// What a [`HeadWaker`] wakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The head waiter of the source's key.
    Head,
    /// The head waiter of every key of the limiter.
    AllHeads,
}

/// Wakes the head waiter of the key a [`SlotSource`] serves, so that it asks the source again.
/// Call it from a task, never from inside a `SlotSource` method (the limiter's lock is held
/// there). Waking a limiter that was dropped does nothing.
#[derive(Clone)]
pub struct HeadWaker {
    wake: Arc<dyn Fn(Wake) + Send + Sync>,
}

impl HeadWaker {
    pub(crate) fn new(wake: impl Fn(Wake) + Send + Sync + 'static) -> Self {
        Self {
            wake: Arc::new(wake),
        }
    }

    /// Wakes the key's head waiter: slots arrived, or the source can say more now.
    pub fn wake_head(&self) {
        (self.wake)(Wake::Head);
    }

    /// Wakes the head waiter of every key of the limiter, e.g. when slots of every key may
    /// come sooner than their heads sleep for.
    pub fn wake_all_heads(&self) {
        (self.wake)(Wake::AllHeads);
    }
}

impl fmt::Debug for HeadWaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeadWaker").finish_non_exhaustive()
    }
}

/// A key's slots from its own model of its [`Quota`] (GCRA or sliding window), in this process
/// alone: the default source, and what a shared source may fall back on.
///
/// ```
/// # mod pacer { pub mod limit { pub use ::pacer_limit::*; } }
/// use pacer::limit::{Admission, Demand, LocalSlots, Priority, Quota, SlotSource};
/// use std::time::Duration;
/// use tokio::time::Instant;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let now = Instant::now();
/// let mut slots = LocalSlots::new(&Quota::per_second(10).with_margin(Duration::ZERO), now);
/// let one = Demand::new(Priority::Normal, 1);
/// assert_eq!(slots.admit(now, one), Admission::Granted);
/// assert_eq!(slots.admit(now, one), Admission::NotBefore(now + Duration::from_millis(100)));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LocalSlots {
    model: ModelState,
    /// The windows stacked on the quota's own ([`Quota::and`]), enforced with the model.
    caps: Caps,
}

impl LocalSlots {
    /// A fresh model of `quota` at `now`: nothing sent yet.
    #[must_use]
    pub fn new(quota: &Quota, now: Instant) -> Self {
        Self {
            model: ModelState::new(quota, now),
            caps: Caps::new(quota, now),
        }
    }

    /// Records a send at `now`, admitted elsewhere (by a shared source).
    pub(crate) fn record(&mut self, now: Instant) {
        self.model.record(now);
        self.caps.record(now);
    }

    /// Switches to `quota`, keeping the history (see [`ModelState::requota`] and
    /// [`Caps::requota`]); returns the instant before which nothing may be sent when the
    /// history cannot carry over.
    pub(crate) fn requota(&mut self, quota: &Quota, now: Instant) -> Option<Instant> {
        let (model, not_before) = self.model.requota(quota, now);
        self.model = model;
        self.caps = self.caps.requota(quota, now);
        not_before
    }

    /// The key's own count of its caps ([`Quota::and`]).
    pub(crate) fn caps(&self) -> &Caps {
        &self.caps
    }

    /// The earliest instant at or after `now` the `n`-th next send could go out under the
    /// model and every cap.
    fn combined(&self, now: Instant, n: usize) -> Instant {
        let at = self.model.nth_earliest(now, n);
        if self.caps.is_empty() {
            return at;
        }
        at.max(self.caps.nth_earliest(now, n))
    }
}

impl SlotSource for LocalSlots {
    fn admit(&mut self, now: Instant, _demand: Demand) -> Admission {
        let at = self.combined(now, 0);
        if at <= now {
            self.record(now);
            Admission::Granted
        } else {
            Admission::NotBefore(at)
        }
    }

    fn nth_earliest(&self, now: Instant, n: usize) -> Instant {
        self.combined(now, n)
    }

    fn on_pause(&mut self, until: Instant) {
        // Only the model: its sends leave evenly spaced after the pause. The caps count real
        // sends only; filling a daily cap for a short pause would stop the key for a day.
        self.model.fill_until(until);
    }

    fn is_idle(&self, now: Instant) -> bool {
        self.model.is_idle(now) && self.caps.is_idle(now)
    }
}
