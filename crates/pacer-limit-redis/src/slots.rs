//! One key's share of a Redis-backed quota: the slots this process has leased, the lease on its
//! way, and the local fallback while Redis is away.
//!
//! The bucket's queue stays the source of fairness: the head of the queue takes the earliest
//! leased slot when it is due. Slots are requested for the waiters that have none (at most a
//! lease per round trip), so a quiet process holds nothing and a busy one holds a few slots
//! ahead of use.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pacer_limit::{Admission, HeadWaker, LocalSlots, Model, Quota, SlotSource};
use tokio::time::Instant;

use crate::health::{later, Core, Mode};
use crate::store::{Reservation, Token};
use crate::Fallback;

/// A slot reserved in Redis, at its instant on Redis's clock (mapped to the local clock when
/// used, through the process's best estimate of the two clocks' offset).
#[derive(Clone, Copy, Debug)]
struct Lease {
    redis_micros: u64,
    token: Token,
}

/// A lease to ask Redis for, sent by [`crate::refill`].
#[derive(Debug)]
pub(crate) struct RefillRequest {
    pub(crate) core: Arc<Core>,
    pub(crate) name: Arc<str>,
    pub(crate) quota: Quota,
    pub(crate) slots: u32,
    /// Pause the key in Redis first for this long (see `KeySlots::recovery_pause`).
    pub(crate) pause_first: Option<Duration>,
    /// When the request was decided: local sends after it are not covered by its pause.
    pub(crate) requested_at: Instant,
}

/// The local limiter used while Redis is away.
#[derive(Debug)]
struct LocalShare {
    slots: LocalSlots,
    not_before: Instant,
}

/// One key's slots from a quota shared through Redis: the [`SlotSource`] in the limiter's
/// bucket. Its state is shared with the lease task in flight, which delivers the reply and
/// then wakes the key's head waiter.
#[derive(Debug)]
pub(crate) struct RemoteSlots {
    state: Arc<Mutex<KeySlots>>,
    waker: HeadWaker,
}

impl RemoteSlots {
    pub(crate) fn new(core: Arc<Core>, name: String, quota: Quota, waker: HeadWaker) -> Self {
        Self {
            state: Arc::new(Mutex::new(KeySlots::new(core, name, quota))),
            waker,
        }
    }

    fn state(&self) -> MutexGuard<'_, KeySlots> {
        lock(&self.state)
    }
}

/// Locks a key's slots; every mutation is one step, so a poisoned lock is recovered.
pub(crate) fn lock(state: &Mutex<KeySlots>) -> MutexGuard<'_, KeySlots> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SlotSource for RemoteSlots {
    fn admit(&mut self, now: Instant, demand: usize) -> Admission {
        let mut state = self.state();
        let admission = state.admit(now, demand);
        if let Some(request) = state.take_request() {
            if !crate::refill::dispatch(&self.state, &self.waker, request) {
                state.request_not_sent();
            }
        }
        admission
    }

    fn nth_earliest(&self, now: Instant, n: usize) -> Instant {
        self.state().nth_earliest(now, n)
    }

    fn on_pause(&mut self, until: Instant) {
        self.state().release_before(until);
    }

    fn share_pause(&self, now: Instant, until: Instant) {
        self.state()
            .share_pause(until.saturating_duration_since(now));
    }

    fn share_spacing(&self, _now: Instant, extra: f64, half_life: Duration) {
        let state = self.state();
        // Only an evenly spaced quota has an interval to widen in Redis.
        if let Model::Gcra { .. } = state.quota.model() {
            crate::refill::spawn_spacing(&state.core, &state.name, extra, half_life);
        }
    }

    fn on_leave(&mut self, waiting: usize) {
        // A waiter that gave up leaves its leased slot to the others, or to Redis.
        self.state().release_surplus(waiting);
    }

    fn is_idle(&self, now: Instant) -> bool {
        self.state().is_idle(now)
    }
}

/// The slots this process holds for one key, the lease on its way, the local fallback.
#[derive(Debug)]
pub(crate) struct KeySlots {
    core: Arc<Core>,
    name: Arc<str>,
    /// The quota every process agrees on (the key's configured one): a rate learned at run
    /// time only slows this process down, and never forks the shared state.
    quota: Quota,
    leases: VecDeque<Lease>,
    refilling: bool,
    /// When the request in flight counts as lost.
    refill_deadline: Option<Instant>,
    requested: Option<RefillRequest>,
    local: Option<LocalShare>,
    /// The last send on the local share: Redis must hear of it on return (see `request`).
    last_local_send: Option<Instant>,
    /// How many waiters wanted a slot when the limiter last asked (or one left): a delivery
    /// asks again at once for those still without one, without waiting for the head's turn.
    demand: usize,
    /// The key's pause (from the limiter): no reservation is chained before it ends.
    paused_until: Option<Instant>,
}

impl KeySlots {
    fn new(core: Arc<Core>, name: String, quota: Quota) -> Self {
        Self {
            core,
            name: name.into(),
            quota,
            leases: VecDeque::new(),
            refilling: false,
            refill_deadline: None,
            requested: None,
            local: None,
            last_local_send: None,
            demand: 0,
            paused_until: None,
        }
    }

    fn at(&self, lease: &Lease) -> Instant {
        self.core.local_instant(lease.redis_micros)
    }

    /// Admits one send at `now` from a leased slot, or from the local share while Redis is
    /// away. `demand` is how many waiters want a slot (the head among them); slots are
    /// requested for those that have none.
    fn admit(&mut self, now: Instant, demand: usize) -> Admission {
        self.demand = demand;
        self.expire(now);
        // One reading of the mode for the whole decision: Redis may be marked down meanwhile.
        let mode = self.core.mode();
        if let Some(lease) = self.leases.front() {
            let at = self.at(lease);
            if at > now {
                self.request_more(mode, now, demand);
                return Admission::NotBefore(at);
            }
            self.leases.pop_front();
            // The head has its slot: the others may need theirs.
            self.request_more(mode, now, demand - 1);
            return Admission::Granted;
        }
        match (mode, self.core.options.fallback) {
            (Mode::Fallback { .. }, Fallback::Local { processes }) => {
                let admission = self.admit_locally(now, processes);
                // After the local grant, so that the recovery pause covers it; at least one
                // slot, so that Redis is tried again while traffic flows.
                let waiting = if admission == Admission::Granted {
                    (demand - 1).max(1)
                } else {
                    demand
                };
                self.request_more(mode, now, waiting);
                admission
            }
            (Mode::Fallback { retry_at }, _) => {
                self.request_more(mode, now, demand);
                match self.refill_deadline {
                    Some(deadline) if self.refilling => Admission::Pending(deadline),
                    _ => Admission::NotBefore(retry_at),
                }
            }
            (Mode::Shared, _) => {
                self.request_more(mode, now, demand);
                // Redis is up and nothing is leased, so a request is on its way.
                Admission::Pending(self.refill_deadline.unwrap_or(now))
            }
        }
    }

    /// A slot from this process's share of the quota (a rate learned at run time still paces
    /// it too: the limiter applies it before asking here).
    fn admit_locally(&mut self, now: Instant, processes: NonZeroU32) -> Admission {
        let (quota, window) = (self.quota, self.quota.effective_window());
        let local = self.local.get_or_insert_with(|| LocalShare {
            slots: LocalSlots::new(&local_share(&quota, processes), now),
            not_before: later(now, window),
        });
        let at = local.slots.nth_earliest(now, 0).max(local.not_before);
        if at > now {
            return Admission::NotBefore(at);
        }
        local.slots.admit(now, 1);
        self.last_local_send = Some(now);
        self.core.count_fallback_grant();
        Admission::Granted
    }

    /// Asks for slots for `demand` waiters, less those leased: while Redis is up, or, while it
    /// is down, when it is time to try it again. A request that has not come back long after
    /// its timeout (its task died with its runtime) is given up and asked again.
    fn request_more(&mut self, mode: Mode, now: Instant, demand: usize) {
        if self.refilling && self.refill_deadline.is_some_and(|deadline| deadline <= now) {
            self.refilling = false;
        }
        if self.refilling || self.leases.len() >= demand {
            return;
        }
        if mode != Mode::Shared && !self.core.claim_retry(now) {
            return;
        }
        let options = &self.core.options;
        let wanted = (demand - self.leases.len()).min(options.lease as usize);
        let pause_first = self.last_local_send.map(|_| self.recovery_pause());
        self.refilling = true;
        // The lease task answers within the timeout; twice that and a little is a lost task.
        let lost_after = options
            .timeout
            .saturating_mul(2)
            .saturating_add(Duration::from_millis(100));
        self.refill_deadline = Some(later(now, lost_after));
        self.requested = Some(RefillRequest {
            core: Arc::clone(&self.core),
            name: Arc::clone(&self.name),
            quota: self.quota,
            slots: u32::try_from(wanted).unwrap_or(u32::MAX),
            pause_first,
            requested_at: now,
        });
    }

    /// The request [`admit`](Self::admit) decided on, for the caller to send.
    fn take_request(&mut self) -> Option<RefillRequest> {
        self.requested.take()
    }

    /// The request could not be sent (no async runtime here).
    fn request_not_sent(&mut self) {
        self.refilling = false;
    }

    /// A lease asked for at `requested_at` arrived, or did not (`None`).
    pub(crate) fn deliver(&mut self, reservation: Option<Reservation>, requested_at: Instant) {
        self.refilling = false;
        let Some(reservation) = reservation else {
            return;
        };
        if self.last_local_send.is_some_and(|sent| sent > requested_at) {
            // The local share sent after the request's pause was decided: these slots could
            // crowd that send. Give them back; the next request carries a pause that covers it.
            crate::refill::give_back(&self.core, &self.name, self.quota, reservation.tokens);
            return;
        }
        self.local = None;
        self.last_local_send = None;
        let now = reservation.redis_now_micros;
        for (offset, token) in reservation.slots.into_iter().zip(reservation.tokens) {
            let offset = u64::try_from(offset.as_micros()).unwrap_or(u64::MAX);
            self.leases.push_back(Lease {
                redis_micros: now.saturating_add(offset),
                token,
            });
        }
    }

    /// After a delivery at `now`: the next request for the waiters still without a slot, if
    /// any and the key is not paused. The lease task sends it at once, so a busy key keeps one
    /// reservation in flight rather than waiting for its head to be polled.
    pub(crate) fn chain(&mut self, now: Instant) -> Option<RefillRequest> {
        if self.paused_until.is_some_and(|until| until > now) {
            return None;
        }
        let mode = self.core.mode();
        self.request_more(mode, now, self.demand);
        self.take_request()
    }

    /// Slots further ahead than the waiters need go back to Redis (a waiter gave up).
    fn release_surplus(&mut self, demand: usize) {
        self.demand = demand;
        if self.leases.len() > demand {
            let surplus: Vec<Lease> = self.leases.drain(demand..).collect();
            self.give_back(&surplus);
        }
    }

    /// Slots before `until` (a pause) are unusable: give them back.
    fn release_before(&mut self, until: Instant) {
        self.paused_until = Some(until);
        let unusable = self
            .leases
            .iter()
            .take_while(|l| self.at(l) < until)
            .count();
        if unusable > 0 {
            let unusable: Vec<Lease> = self.leases.drain(..unusable).collect();
            self.give_back(&unusable);
        }
    }

    /// Slots whose time passed by more than the grace would crowd other processes' slots.
    fn expire(&mut self, now: Instant) {
        let grace = self.core.options.grace_for(&self.quota);
        let expired = self
            .leases
            .iter()
            .take_while(|l| later(self.at(l), grace) < now)
            .count();
        if expired > 0 {
            let expired: Vec<Lease> = self.leases.drain(..expired).collect();
            self.give_back(&expired);
        }
    }

    fn give_back(&self, leases: &[Lease]) {
        let tokens: Vec<Token> = leases.iter().map(|l| l.token).collect();
        crate::refill::give_back(&self.core, &self.name, self.quota, tokens);
    }

    /// How long the key pauses in Redis when this process comes back from its local share:
    /// the other processes may still be on theirs until their next try of Redis succeeds
    /// (within `retry_every` plus a call's timeout), and what they send there stays in the
    /// window for one more window; Redis knows none of it.
    fn recovery_pause(&self) -> Duration {
        let options = &self.core.options;
        options
            .retry_every
            .saturating_add(options.timeout)
            .saturating_add(self.quota.effective_window())
    }

    /// Writes a pause to Redis, so that every process on the key pauses.
    fn share_pause(&self, pause: Duration) {
        crate::refill::spawn_pause(&self.core, &self.name, self.quota, pause);
    }

    /// The earliest instant the `n`-th next send (0-based) could go out: exact for leased
    /// slots, an estimate at the quota's steady rate beyond them.
    fn nth_earliest(&self, now: Instant, n: usize) -> Instant {
        if let (Mode::Fallback { .. }, Some(local)) = (self.core.mode(), &self.local) {
            if self.leases.is_empty() {
                return local.slots.nth_earliest(now, n).max(local.not_before);
            }
        }
        if let Some(lease) = self.leases.get(n) {
            return self.at(lease).max(now);
        }
        let beyond = u32::try_from(n - self.leases.len()).unwrap_or(u32::MAX);
        let base = self.leases.back().map_or(now, |l| self.at(l).max(now));
        let steps = beyond + u32::from(!self.leases.is_empty());
        later(base, self.quota.emission_interval().saturating_mul(steps))
    }

    /// Whether dropping this state forgets nothing: no lease on its way, no slot still usable,
    /// no local share still pacing, and no local send recent enough to tell Redis about.
    fn is_idle(&self, now: Instant) -> bool {
        let grace = self.core.options.grace_for(&self.quota);
        !self.refilling
            && self
                .leases
                .back()
                .is_none_or(|l| later(self.at(l), grace) < now)
            && self
                .local
                .as_ref()
                .is_none_or(|l| l.not_before <= now && l.slots.is_idle(now))
            && self
                .last_local_send
                .is_none_or(|sent| later(sent, self.recovery_pause()) <= now)
    }
}

/// `1 / processes` of `quota`: its limit divided when it is at least `processes`, otherwise
/// one send per window stretched `processes / limit` times.
fn local_share(quota: &Quota, processes: NonZeroU32) -> Quota {
    let (limit, processes) = (quota.limit(), processes.get());
    if limit >= processes {
        return quota.scaled(limit / processes);
    }
    // Integer arithmetic: saturates rather than panics on an enormous window.
    let window = quota.window().saturating_mul(processes) / limit;
    let share = Quota::new(1, window).with_margin(quota.margin());
    match quota.model() {
        Model::SlidingWindow => share.sliding_window(),
        // GCRA, and any other model: one send per stretched window, evenly spaced.
        _ => share.gcra(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_share_never_exceeds_its_part_of_the_quota() {
        let four = NonZeroU32::new(4).unwrap();
        let track = local_share(&Quota::per_second(100), four);
        assert_eq!(
            (track.limit(), track.window()),
            (25, Duration::from_secs(1))
        );
        // One broadcast per 10 s among four processes: one per 40 s each, not one per 10 s.
        let broadcast = local_share(&Quota::new(1, Duration::from_secs(10)).gcra(1), four);
        assert_eq!(broadcast.limit(), 1);
        assert_eq!(broadcast.window(), Duration::from_secs(40));
        assert!(matches!(broadcast.model(), Model::Gcra { .. }));
        let three = local_share(
            &Quota::new(2, Duration::from_secs(1)),
            NonZeroU32::new(3).unwrap(),
        );
        assert_eq!(three.window(), Duration::from_millis(1500));
    }
}
