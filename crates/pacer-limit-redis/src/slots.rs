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

use pacer_limit::{Admission, Cap, Demand, HeadWaker, LocalSlots, Model, Quota, SlotSource};
use tokio::time::Instant;

use crate::health::{later, Core, Mode};
use crate::store::{Reservation, Token};

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
    /// Book no slot later than this from now: the waiters still without a slot are all bulk.
    pub(crate) horizon: Option<Duration>,
    /// Back from the local share: rejoin the shared schedule first, which the first process
    /// back pauses for this long (see `KeySlots::recovery_pause`).
    pub(crate) rejoin_after: Option<Duration>,
    /// When the request was decided: local sends after it are not covered by its pause.
    pub(crate) requested_at: Instant,
    /// The TAT this process's last reservation left (see `KeySlots::booked_until`).
    pub(crate) follows: Option<i64>,
}

/// The local limiter used while Redis is away.
#[derive(Debug)]
struct LocalShare {
    slots: LocalSlots,
    /// The fleet's common grid of local slots, when this process knows its place in it.
    grid: Option<Grid>,
    not_before: Instant,
    /// Back in Redis: the local share goes on until the shared schedule starts again here,
    /// so that the processes still away keep their pace and those back keep theirs.
    until: Option<Instant>,
}

/// A process's slots on its local share when the fleet interleaves them: instants `origin + k
/// x period`, where every process's origin lies on Redis's clock at its rank's offset in the
/// period (see `Core::local_grid`). Independent local shares at `1 / n` each would drift into
/// step and send together; on the grid they keep the shared schedule's even spacing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grid {
    pub(crate) origin: Instant,
    pub(crate) period: Duration,
    /// How late after its instant a slot may still be used, as a leased slot's grace: a slot
    /// used later would crowd the next process's.
    grace: Duration,
    /// The index of the next slot allowed (a send at or after slot `k` allows `k + 1` next).
    next: u64,
}

impl Grid {
    pub(crate) fn new(origin: Instant, period: Duration, grace: Duration) -> Self {
        Self {
            origin,
            period: period.max(Duration::from_micros(1)),
            grace,
            next: 0,
        }
    }

    /// Skips the slots whose grace is over at `now`: the next one usable is then the first
    /// one at or after `now`.
    fn skip_missed(&mut self, now: Instant) {
        if later(self.at(0), self.grace) < now {
            self.start_at(now);
        }
    }

    fn at(&self, n: u64) -> Instant {
        self.at_index(self.next.saturating_add(n))
    }

    /// The index of the latest slot at or before `at` (0 before the origin).
    fn index(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin);
        u64::try_from(since.as_nanos() / self.period.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Makes the next slot the first one at or after `at`.
    fn start_at(&mut self, at: Instant) {
        let index = self.index(at);
        self.next = if self.at_index(index) < at {
            index.saturating_add(1)
        } else {
            index
        };
    }

    fn at_index(&self, index: u64) -> Instant {
        // In nanoseconds, saturating: a microsecond period over a long outage outgrows `u32`.
        let nanos = self.period.as_nanos().saturating_mul(u128::from(index));
        later(
            self.origin,
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)),
        )
    }
}

/// One key's slots from a quota shared through Redis: the [`SlotSource`] in the limiter's
/// bucket. Its state is shared with the lease task in flight, which delivers the reply and
/// then wakes the key's head waiter.
#[derive(Debug)]
pub(crate) struct RemoteSlots {
    state: Arc<Mutex<KeySlots>>,
    waker: HeadWaker,
}

impl LocalShare {
    /// The local share at the switch, at `1 / processes` of `quota`. An evenly spaced quota
    /// goes on at this process's pace: the first local send one share interval after its last
    /// leased one (`last_shared_send`), then evenly spaced, with no burst allowance and no gap.
    /// A sliding window's shared schedule may have sent a whole window at its start, which a
    /// local share cannot see: its first local send waits one window, so that what the others
    /// sent through Redis has aged out.
    ///
    /// With a `grid` (an evenly spaced quota whose share's interval is the grid's period), the
    /// local slots are the grid's, from the first one at or after that first local send: a
    /// send late by less than the grace does not push the next one later (no drift into step
    /// with the others); a slot missed by more is skipped (no catch-up).
    fn start(
        quota: &Quota,
        processes: NonZeroU32,
        last_shared_send: Option<Instant>,
        now: Instant,
        grid: Option<Grid>,
    ) -> Self {
        let share = local_share(quota, processes);
        let mut slots = LocalSlots::new(&share, now);
        let mut grid = grid.filter(|_| matches!(quota.model(), Model::Gcra { .. }));
        let not_before = match quota.model() {
            Model::Gcra { .. } => {
                let next =
                    last_shared_send.map_or(now, |sent| later(sent, share.emission_interval()));
                // As if the share had been spent evenly up to its next slot: no burst.
                slots.on_pause(next.max(now));
                if let Some(grid) = grid.as_mut() {
                    grid.start_at(next.max(now));
                }
                now
            }
            _ => later(now, quota.effective_window()),
        };
        Self {
            slots,
            grid,
            not_before,
            until: None,
        }
    }

    /// The earliest instant of the `n`-th next local send (0-based).
    fn nth_earliest(&self, now: Instant, n: usize) -> Instant {
        let at = match &self.grid {
            Some(grid) => grid.at(u64::try_from(n).unwrap_or(u64::MAX)).max(now),
            None => self.slots.nth_earliest(now, n),
        };
        at.max(self.not_before)
    }

    /// Takes a local slot at `now` if one is free, never at or after `until`.
    fn admit(&mut self, now: Instant) -> Admission {
        if let Some(grid) = self.grid.as_mut() {
            grid.skip_missed(now);
        }
        let at = self.nth_earliest(now, 0);
        if let Some(until) = self.until.filter(|&until| at >= until) {
            // The shared schedule takes over there.
            return Admission::NotBefore(until.max(now));
        }
        if at > now {
            return Admission::NotBefore(at);
        }
        match self.grid.as_mut() {
            Some(grid) => grid.next = grid.next.saturating_add(1),
            None => {
                self.slots
                    .admit(now, Demand::new(pacer_limit::Priority::Normal, 1));
            }
        }
        Admission::Granted
    }

    fn is_idle(&self, now: Instant) -> bool {
        self.not_before <= now
            && match &self.grid {
                Some(grid) => grid.at(0) <= now,
                None => self.slots.is_idle(now),
            }
    }
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

/// How much of the junction gap (see gcra.lua) this process's last slot before another's may
/// go late by: the rest is left for the two processes' clocks and their ways to the server.
/// The room is the gap divided by this.
const JUNCTION_ROOM: u32 = 3;
/// The least junction room, as a fraction of the interval (500 µs at 100 per second): a
/// decayed margin's room is within the noise of a waking task and of the fleet's clocks, and
/// holding a slot to it would only lose slots.
const ROOM_FLOOR: u32 = 20;

/// Whether the slot of `next` directly follows that of `first` on the shared schedule: nobody
/// booked a slot between them (the TAT one left is the one the other found, to the
/// microsecond the reply rounds to).
fn continues(first: Token, next: Token) -> bool {
    match (first.tat_after(), next.tat_before()) {
        (Some(after), Some(before)) => after.abs_diff(before) <= 1,
        _ => false,
    }
}

/// Locks a key's slots; every mutation is one step, so a poisoned lock is recovered.
pub(crate) fn lock(state: &Mutex<KeySlots>) -> MutexGuard<'_, KeySlots> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SlotSource for RemoteSlots {
    fn admit(&mut self, now: Instant, demand: Demand) -> Admission {
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

    fn hold_until(&mut self, until: Instant) {
        self.state().hold_until(until);
    }

    fn share_pause(&self, now: Instant, until: Instant) {
        let state = self.state();
        // Kept, to write back should Redis lose it or not hear of it.
        state.core.remember_pause(&state.name, state.quota, until);
        state.share_pause(until.saturating_duration_since(now));
    }

    fn share_spacing(&self, _now: Instant, extra: f64, half_life: Duration) {
        let state = self.state();
        // Only an evenly spaced quota has an interval to widen in Redis.
        if let Model::Gcra { .. } = state.quota.model() {
            crate::refill::spawn_spacing(&state.core, &state.name, state.quota, extra, half_life);
        }
    }

    fn applies_shared_spacing(&self) -> bool {
        // gcra.lua spaces every process's slots by the margin; a sliding window spaces nothing,
        // nor does the local share while Redis is away.
        let state = self.state();
        matches!(state.quota.model(), Model::Gcra { .. }) && state.local.is_none()
    }

    fn cap_count(&self, cap: &Cap, _now: Instant) -> Option<(u64, Instant)> {
        self.state().cap_count(cap)
    }

    fn is_strict(&self) -> bool {
        !self.state().junction.is_zero()
    }

    fn on_leave(&mut self, waiting: Demand) {
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
    /// The last send on the local share before rejoining: Redis must hear of it on return
    /// (see `request_more`).
    last_local_send: Option<Instant>,
    /// The last send on a leased slot: the local share continues this process's spacing.
    last_shared_send: Option<Instant>,
    /// How many waiters wanted a slot, per lane, when the limiter last asked (or one left): a
    /// delivery asks again at once for those still without one, without waiting for the
    /// head's turn.
    demand: Demand,
    /// When slots for bulk waiters alone may be booked again: the last bulk reservation was
    /// cut short by its horizon, and Redis said when the next slot comes within it.
    bulk_not_before: Option<Instant>,
    /// The key's pause (from the limiter): no reservation is chained before it ends.
    paused_until: Option<Instant>,
    /// What Redis counted against each cap of the quota at the last reservation: the count
    /// and when its oldest slot leaves (Redis's clock, microseconds).
    cap_counts: Vec<(u64, u64)>,
    /// The TAT this process's last reservation left: the next one that still finds it
    /// continues this process's block of slots; one that does not follows another process's
    /// slot, which gcra.lua spaces wider while a margin is in force.
    booked_until: Option<i64>,
    /// The junction gap in force at the last reservation (see gcra.lua): non-zero while a
    /// spacing margin is, i.e. some process found the server strict (see
    /// [`SlotSource::is_strict`]).
    junction: Duration,
    /// A hold that came while no slot was leased (a reservation on its way): the next slots
    /// delivered are held by it (see [`hold_until`](Self::hold_until)).
    held_until: Option<Instant>,
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
            last_shared_send: None,
            demand: Demand::default(),
            bulk_not_before: None,
            paused_until: None,
            cap_counts: Vec::new(),
            booked_until: None,
            junction: Duration::ZERO,
            held_until: None,
        }
    }

    fn at(&self, lease: &Lease) -> Instant {
        self.core.local_instant(lease.redis_micros)
    }

    /// Admits one send at `now` from a leased slot, or from the local share while Redis is
    /// away (and, back in Redis, until the shared schedule starts again). `demand` is how many
    /// waiters want a slot in each lane (the head among them); slots are requested for those
    /// that have none.
    fn admit(&mut self, now: Instant, demand: Demand) -> Admission {
        self.demand = demand;
        self.expire(now);
        self.end_local_share(now);
        // One reading of the mode for the whole decision: Redis may be marked down meanwhile.
        let mode = self.core.mode();
        let lease_at = self.leases.front().map(|lease| self.at(lease));
        let processes = self.core.processes();
        let local = match (mode, processes) {
            (Mode::Fallback { .. }, Some(processes)) => Some(processes),
            (_, Some(processes)) if self.local.is_some() => Some(processes),
            _ => None,
        };
        // While Redis is away, the local share paces every send, leased or not: the slots
        // leased ahead lie on the fleet's schedule (a lease at the fleet's rate), and sending
        // them at their times while the processes that hold none go local would be a burst.
        let away = matches!(mode, Mode::Fallback { .. }) && local.is_some();
        if !away && lease_at.is_some_and(|at| at <= now) {
            self.leases.pop_front();
            self.last_shared_send = Some(now);
            // The head has its slot: the others may need theirs.
            self.request_more(mode, now, demand.less_one());
            return Admission::Granted;
        }
        if let Some(processes) = local {
            let admission = self.admit_locally(now, processes);
            if away && admission == Admission::Granted && lease_at.is_some_and(|at| at <= now) {
                // That send took the place of the slot leased for it.
                self.leases.pop_front();
            }
            // After the local grant, so that the recovery pause covers it; at least one
            // slot, so that Redis is tried again while traffic flows.
            let waiting = if admission == Admission::Granted && demand.total() > 1 {
                demand.less_one()
            } else {
                demand
            };
            self.request_more(mode, now, waiting);
            return match (admission, lease_at) {
                (Admission::NotBefore(at), Some(lease)) if !away => {
                    Admission::NotBefore(at.min(lease))
                }
                (admission, _) => admission,
            };
        }
        self.request_more(mode, now, demand);
        if let Some(at) = lease_at {
            return Admission::NotBefore(at);
        }
        match mode {
            Mode::Fallback { retry_at } => match self.refill_deadline {
                Some(deadline) if self.refilling => Admission::Pending(deadline),
                _ => Admission::NotBefore(retry_at),
            },
            Mode::Shared => {
                if !self.refilling {
                    if let Some(at) = self.bulk_not_before.filter(|at| *at > now) {
                        // Bulk waiters only: their next slot is booked just in time.
                        return Admission::NotBefore(at);
                    }
                }
                // Redis is up and nothing is leased, so a request is on its way.
                Admission::Pending(self.refill_deadline.unwrap_or(now))
            }
        }
    }

    /// A slot from this process's share of the quota (a rate learned at run time still paces
    /// it too: the limiter applies it before asking here).
    fn admit_locally(&mut self, now: Instant, processes: NonZeroU32) -> Admission {
        let local = self.local.get_or_insert_with(|| {
            tracing::debug!(key = %self.name, processes, "pacing on the local share");
            let share = local_share(&self.quota, processes);
            let grace = self.core.options.grace_for(&self.quota);
            let grid = self
                .core
                .local_grid(now, share.emission_interval(), processes, grace);
            LocalShare::start(&self.quota, processes, self.last_shared_send, now, grid)
        });
        let admission = local.admit(now);
        if admission == Admission::Granted {
            if local.until.is_none() {
                // A send after rejoining is covered by the rejoin pause; one before is not yet.
                self.last_local_send = Some(now);
            }
            self.core.count_fallback_grant();
        }
        admission
    }

    /// Whether the key rejoined the shared schedule and its local share still runs: it holds
    /// the slots its rejoin reserved and asks for more once the shared schedule starts. Waiters
    /// served locally meanwhile must not turn slots over: each slot reserved and given back
    /// is lost to the fleet once another reservation follows it.
    fn rejoining(&self) -> bool {
        self.local
            .as_ref()
            .is_some_and(|local| local.until.is_some())
    }

    /// Ends a local share whose time is over: the shared schedule has started again.
    fn end_local_share(&mut self, now: Instant) {
        if self
            .local
            .as_ref()
            .and_then(|local| local.until)
            .is_some_and(|until| until <= now)
        {
            self.local = None;
        }
    }

    /// Asks for slots for `demand` waiters, less those leased: while Redis is up, or, while it
    /// is down, when it is time to try it again. A request that has not come back long after
    /// its timeout (its task died with its runtime) is given up and asked again.
    ///
    /// When the waiters beyond the leased slots are all bulk, the request books no slot more
    /// than one interval of the quota ahead of now, and is not sent before Redis said such a
    /// slot can be had: a bulk backlog then holds at most about one slot ahead of now, so an
    /// urgent request of another process waits at most about two intervals behind it.
    fn request_more(&mut self, mode: Mode, now: Instant, demand: Demand) {
        if self.refilling && self.refill_deadline.is_some_and(|deadline| deadline <= now) {
            self.refilling = false;
        }
        let waiting = demand.total();
        if self.refilling || self.leases.len() >= waiting || self.rejoining() {
            return;
        }
        let bulk_only = demand.urgent() <= self.leases.len();
        if bulk_only && self.bulk_not_before.is_some_and(|at| at > now) {
            return;
        }
        if mode != Mode::Shared && !self.core.claim_retry(now) {
            return;
        }
        let options = &self.core.options;
        // Urgent waiters get their slots booked ahead; bulk ones only once no urgent one lacks
        // a slot, and then just in time.
        let lacking = if bulk_only { waiting } else { demand.urgent() };
        let wanted = (lacking - self.leases.len()).min(options.lease as usize);
        let rejoin_after = self.last_local_send.map(|_| self.recovery_pause());
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
            horizon: bulk_only.then(|| self.bulk_horizon()),
            rejoin_after,
            requested_at: now,
            follows: self.booked_until,
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

    /// A lease asked for at `requested_at` arrived, or did not (`None`). `shared_from` is
    /// set when the request rejoined the shared schedule after an outage: the local share goes
    /// on until then.
    pub(crate) fn deliver(
        &mut self,
        reservation: Option<Reservation>,
        requested_at: Instant,
        shared_from: Option<Instant>,
    ) {
        self.refilling = false;
        let Some(reservation) = reservation else {
            return;
        };
        // Every process's slots, as of this reservation: fresh enough to judge a refusal of
        // the slots that follow it.
        self.cap_counts.clone_from(&reservation.caps);
        self.junction = reservation.junction;
        match (shared_from, self.local.as_mut()) {
            (Some(until), Some(local)) => {
                local.until = Some(local.until.map_or(until, |old| old.min(until)));
            }
            (Some(_), None) => {}
            (None, _) if self.last_local_send.is_some_and(|sent| sent > requested_at) => {
                // The local share sent after this request, which did not rejoin, was decided:
                // these slots could crowd that send. Give them back; the next request rejoins.
                crate::refill::give_back(&self.core, &self.name, self.quota, reservation.tokens);
                return;
            }
            (None, _) => {
                // A local share not yet rejoined (no send on it) ends with these slots; one
                // rejoined runs to its end.
                if self
                    .local
                    .as_ref()
                    .is_some_and(|local| local.until.is_none())
                {
                    self.local = None;
                }
            }
        }
        self.last_local_send = None;
        if let Some(last) = reservation.tokens.last() {
            self.booked_until = last.tat_after();
        }
        let now = reservation.redis_now_micros;
        // Another process's pause, heard of with this reservation: the slots held inside it
        // were booked before it and go back (the waiters that held them take these, after it).
        if let Some(paused_for) = reservation.paused_for {
            let until = self.core.local_instant(
                now.saturating_add(u64::try_from(paused_for.as_micros()).unwrap_or(u64::MAX)),
            );
            if self.paused_until.is_none_or(|known| known < until) {
                self.release_before(until);
            }
        }
        // Cut short by the horizon: bulk slots can be had again once the next one is within it.
        self.bulk_not_before = reservation.beyond.map(|beyond| {
            let beyond = u64::try_from(beyond.as_micros()).unwrap_or(u64::MAX);
            let horizon = u64::try_from(self.bulk_horizon().as_micros()).unwrap_or(u64::MAX);
            self.core
                .local_instant(now.saturating_add(beyond).saturating_sub(horizon))
        });
        for (offset, token) in reservation.slots.into_iter().zip(reservation.tokens) {
            let offset = u64::try_from(offset.as_micros()).unwrap_or(u64::MAX);
            self.leases.push_back(Lease {
                redis_micros: now.saturating_add(offset),
                token,
            });
        }
        if let Some(until) = self.held_until.take() {
            self.hold_until(until);
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

    /// What Redis counted against `cap` at the last reservation, and when the oldest of those
    /// slots leaves its window.
    fn cap_count(&self, cap: &Cap) -> Option<(u64, Instant)> {
        let index = self.quota.caps().position(|c| c == *cap)?;
        let (count, frees_at) = *self.cap_counts.get(index)?;
        (count > 0).then(|| (count, self.core.local_instant(frees_at)))
    }

    /// How far ahead of now a reservation for bulk waiters alone may book: one interval.
    fn bulk_horizon(&self) -> Duration {
        self.quota.emission_interval()
    }

    /// Slots further ahead than the waiters need go back to Redis (a waiter gave up).
    fn release_surplus(&mut self, demand: Demand) {
        self.demand = demand;
        let demand = demand.total();
        if self.leases.len() > demand && !self.rejoining() {
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

    /// The next send must not go out before `until` (see `SlotSource::hold_until`): the first
    /// leased slot goes late, when there is room after it. Followed by this process's own next
    /// slot, the room is half the way to it (that slot's send is held in turn, after this
    /// one's answer, and the margin takes the lateness back slot by slot). Else it is half the
    /// [junction room](Self::junction_room) (the other half is for the task that takes the
    /// slot, which wakes a little late too: see [`expire`](Self::expire)). Lateness counts
    /// from the slot's booked time, so holds never add up past the room. Beyond the room, the
    /// leased slots before `until` go unused and stay spent. With no slot leased (a
    /// reservation on its way), the hold waits for the slots it brings. The local share while
    /// Redis is away paces by a grid of its own, which no hold moves.
    fn hold_until(&mut self, until: Instant) {
        let Some(first) = self.leases.front() else {
            // Kept for the slots on their way: they may come before `until`.
            self.held_until = Some(self.held_until.map_or(until, |held| held.max(until)));
            return;
        };
        if until <= self.at(first) {
            return;
        }
        let booked = self.booked(first);
        let room = match self.leases.get(1) {
            Some(next) if continues(first.token, next.token) => {
                self.booked(next).saturating_duration_since(booked) / 2
            }
            _ => self.junction_room() / 2,
        };
        let late = until.saturating_duration_since(booked);
        if late <= room {
            let late = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
            if let Some(first) = self.leases.front_mut() {
                let booked = u64::try_from(first.token.at()).unwrap_or(0);
                let held = booked.saturating_add(late).saturating_add(1);
                first.redis_micros = first.redis_micros.max(held);
            }
            return;
        }
        let skipped = self
            .leases
            .iter()
            .take_while(|l| self.at(l) < until)
            .count();
        self.leases.drain(..skipped);
    }

    /// When a leased slot was booked for, on this process's clock (a hold may send it later).
    fn booked(&self, lease: &Lease) -> Instant {
        self.core
            .local_instant(u64::try_from(lease.token.at()).unwrap_or(0))
    }

    /// How late after its booked time a slot that another process's may follow (this process
    /// leased none right after it) may still go out without crowding that one: a
    /// [share](JUNCTION_ROOM) of the junction gap, never less than a [floor](ROOM_FLOOR).
    fn junction_room(&self) -> Duration {
        (self.junction / JUNCTION_ROOM).max(self.quota.emission_interval() / ROOM_FLOOR)
    }

    /// Slots whose time passed by more than the grace would crowd other processes' slots.
    /// While a junction gap is in force (the server was found strict), a slot another
    /// process's may follow is worth its use only within the
    /// [junction room](Self::junction_room) after its booked time: a send later than that
    /// (its task was descheduled for milliseconds) would reach the server within an interval
    /// of the other process's next, which knows nothing of it.
    fn expire(&mut self, now: Instant) {
        let grace = self.core.options.grace_for(&self.quota);
        let mut expired = 0;
        while let Some(lease) = self.leases.get(expired) {
            let mut deadline = later(self.at(lease), grace);
            let own_next = self
                .leases
                .get(expired + 1)
                .is_some_and(|next| continues(lease.token, next.token));
            if !self.junction.is_zero() && !own_next {
                deadline = deadline.min(later(self.booked(lease), self.junction_room()));
            }
            if deadline >= now {
                break;
            }
            expired += 1;
        }
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
        let pause = options.retry_every.saturating_add(options.timeout);
        match self.quota.model() {
            // Every process keeps its even pace on its local share until the shared schedule
            // starts: nothing to age out.
            Model::Gcra { .. } => pause,
            // A sliding window's local shares end a window before it (see
            // `refill::local_share_until`).
            _ => pause.saturating_add(self.quota.effective_window()),
        }
    }

    /// Writes a pause to Redis, so that every process on the key pauses.
    fn share_pause(&self, pause: Duration) {
        crate::refill::spawn_pause(&self.core, &self.name, self.quota, pause);
    }

    /// The earliest instant the `n`-th next send (0-based) could go out: exact for leased
    /// slots, an estimate at the quota's steady rate beyond them.
    fn nth_earliest(&self, now: Instant, n: usize) -> Instant {
        if let Some(local) = &self.local {
            let on_local = local.nth_earliest(now, n);
            // Before the shared schedule starts (rejoined), or with no slot leased (away).
            let before_shared = local.until.is_none_or(|until| on_local < until);
            if before_shared && (self.leases.is_empty() || local.until.is_some()) {
                return on_local;
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
            && self.local.as_ref().is_none_or(|l| l.is_idle(now))
            && self
                .last_local_send
                .is_none_or(|sent| later(sent, self.recovery_pause()) <= now)
    }
}

/// `1 / processes` of `quota`, each of its caps included ([`Quota::and`]): a limit divided
/// when it is at least `processes`, otherwise one send per window stretched `processes / limit`
/// times.
fn local_share(quota: &Quota, processes: NonZeroU32) -> Quota {
    quota
        .caps()
        .fold(primary_share(quota, processes), |share, cap| {
            let cap = Quota::new(cap.limit(), cap.window()).with_margin(cap.margin());
            share.and(primary_share(&cap, processes).without_caps())
        })
}

/// `1 / processes` of `quota`'s own window (its caps are left out).
fn primary_share(quota: &Quota, processes: NonZeroU32) -> Quota {
    let quota = &quota.without_caps();
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

    /// Every grant of `local` from `now` on, taken as soon as it is free, up to `count`.
    fn grants(local: &mut LocalShare, mut now: Instant, count: usize) -> Vec<Instant> {
        let mut granted = Vec::new();
        // Bounded: each round either grants or moves `now` forward to a later instant.
        for _ in 0..count * 4 {
            match local.admit(now) {
                Admission::Granted => granted.push(now),
                // Nothing more from this share (it ended).
                Admission::NotBefore(at) | Admission::Pending(at) if at <= now => break,
                Admission::NotBefore(at) | Admission::Pending(at) => now = at,
                other => panic!("unexpected {other:?}"),
            }
            if granted.len() == count {
                break;
            }
        }
        granted
    }

    #[tokio::test(start_paused = true)]
    async fn the_local_share_goes_on_at_the_process_pace_without_burst_or_gap() {
        let four = NonZeroU32::new(4).unwrap();
        let now = Instant::now();
        // The process's last leased slot went out 5 ms ago; its share is one per 40 ms.
        let last = now - Duration::from_millis(5);
        let quota = Quota::per_second(100);
        let interval = local_share(&quota, four).emission_interval();
        let mut local = LocalShare::start(&quota, four, Some(last), now, None);
        let sent = grants(&mut local, now, 60);
        assert_eq!(sent.len(), 60);
        // No burst at the switch: the first local send one interval after the last shared
        // one, not at once; and no gap either (the old share waited a whole window).
        assert_eq!(sent[0], last + interval);
        for pair in sent.windows(2) {
            assert_eq!(pair[1] - pair[0], interval, "{sent:?}");
        }
        let mut with_last = vec![last];
        with_last.extend(&sent);
        assert!(pacer_testkit::max_in_any_window(&with_last, Duration::from_secs(1)) <= 25);
    }

    #[tokio::test(start_paused = true)]
    async fn a_process_that_sent_nothing_lately_starts_at_once_and_evenly() {
        let four = NonZeroU32::new(4).unwrap();
        let now = Instant::now();
        let quota = Quota::per_second(100).gcra(20);
        let mut local = LocalShare::start(&quota, four, None, now, None);
        let sent = grants(&mut local, now, 5);
        // However large the quota's burst, the share's first second is not spent at once.
        assert_eq!(sent[0], now);
        assert!(sent[1] - sent[0] >= local_share(&quota, four).emission_interval());
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejoined_local_share_ends_where_the_shared_schedule_starts() {
        let four = NonZeroU32::new(4).unwrap();
        let now = Instant::now();
        let mut local = LocalShare::start(&Quota::per_second(100), four, None, now, None);
        let shared_from = now + Duration::from_millis(200);
        local.until = Some(shared_from);
        let sent = grants(&mut local, now, 10);
        assert_eq!(sent.len(), 5, "{sent:?}");
        assert!(sent.iter().all(|&at| at < shared_from));
        assert_eq!(
            local.admit(shared_from - Duration::from_millis(1)),
            Admission::NotBefore(shared_from)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn on_the_fleet_grid_a_late_send_neither_drifts_nor_catches_up() {
        let four = NonZeroU32::new(4).unwrap();
        let now = Instant::now();
        let quota = Quota::per_second(100);
        let period = local_share(&quota, four).emission_interval();
        // This process's slots lie 3 ms after now, then every period.
        let origin = now + Duration::from_millis(3);
        let grid = Grid::new(origin, period, Duration::from_millis(8));
        let last = now - Duration::from_millis(30);
        let mut local = LocalShare::start(&quota, four, Some(last), now, Some(grid));
        // The first slot on the grid at or after one period after the last leased send.
        let first = origin + period;
        assert_eq!(local.admit(now), Admission::NotBefore(first));
        assert_eq!(local.admit(first), Admission::Granted);
        // Woken 7 ms late for the next slot: sent then, and the one after stays on the grid.
        let late = first + period + Duration::from_millis(7);
        assert_eq!(local.admit(late), Admission::Granted);
        assert_eq!(local.admit(late), Admission::NotBefore(first + period * 2));
        // Asleep for three periods: the slots missed by more than the grace are gone, not
        // sent at once; the next is the grid's.
        let asleep = first + period * 5 + Duration::from_millis(9);
        assert_eq!(
            local.admit(asleep),
            Admission::NotBefore(first + period * 6)
        );
        assert_eq!(local.admit(first + period * 6), Admission::Granted);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sliding_window_share_waits_out_the_window_the_others_may_have_spent() {
        let two = NonZeroU32::new(2).unwrap();
        let now = Instant::now();
        let quota = Quota::new(40, Duration::from_millis(200)).sliding_window();
        let mut local = LocalShare::start(&quota, two, Some(now), now, None);
        let sent = grants(&mut local, now, 1);
        assert!(sent[0] >= now + quota.effective_window(), "{sent:?}");
    }

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
        // Each cap is shared too: four processes on their own never send a day's quota each.
        let app = Quota::per_second(10).and(Quota::per_day(50_000));
        let share = local_share(&app, four);
        assert_eq!(
            share.without_caps(),
            local_share(&Quota::per_second(10), four)
        );
        let daily = share.caps().next().unwrap();
        assert_eq!(
            (daily.limit(), daily.window()),
            (12_500, Duration::from_secs(86_400))
        );
    }
}
