//! One key's share of a Redis-backed quota: the slots this process has leased, the lease on its
//! way, and the local fallback while Redis is away.
//!
//! The bucket's queue stays the source of fairness: the head of the queue takes the earliest
//! leased slot when it is due. Slots are requested for the waiters that have none (at most a
//! lease per round trip), so a quiet process holds nothing and a busy one holds a few slots
//! ahead of use.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::health::Mode;
use super::store::{Reservation, Token};
use super::{Core, Fallback};
use crate::bucket::Admission;
use crate::model::ModelState;
use crate::quota::Quota;

/// A slot reserved in Redis, on the local clock.
#[derive(Clone, Copy, Debug)]
struct Lease {
    at: Instant,
    token: Token,
}

/// A lease to ask Redis for, handed to [`super::refill`] by whoever holds the limiter.
#[derive(Debug)]
pub(crate) struct RefillRequest {
    pub(crate) core: Arc<Core>,
    pub(crate) name: Arc<str>,
    pub(crate) quota: Quota,
    pub(crate) slots: u32,
    /// Pause the key in Redis first for this long: this process sent on its own share lately,
    /// which Redis does not know about.
    pub(crate) pause_first: Option<Duration>,
}

/// The local limiter used while Redis is away.
#[derive(Debug)]
struct LocalShare {
    model: ModelState,
    not_before: Instant,
}

#[derive(Debug)]
pub(crate) struct RemoteSlots {
    core: Arc<Core>,
    name: Arc<str>,
    /// The quota every process agrees on (the key's configured one): a rate learned at run
    /// time only slows this process down, and never forks the shared state.
    quota: Quota,
    leases: VecDeque<Lease>,
    refilling: bool,
    requested: Option<RefillRequest>,
    local: Option<LocalShare>,
    /// The last send on the local share: Redis must hear of it on return (see `request`).
    last_local_send: Option<Instant>,
}

impl RemoteSlots {
    pub(crate) fn new(core: Arc<Core>, name: String, quota: Quota) -> Self {
        Self {
            core,
            name: name.into(),
            quota,
            leases: VecDeque::new(),
            refilling: false,
            requested: None,
            local: None,
            last_local_send: None,
        }
    }

    /// Admits one send at `now` from a leased slot, or from the local share while Redis is
    /// away. `demand` is how many waiters want a slot (the head among them); slots are
    /// requested for those that have none.
    pub(crate) fn admit(&mut self, now: Instant, demand: usize, current: &Quota) -> Admission {
        self.expire(now);
        let mode = self.core.mode();
        let shared = mode == Mode::Shared;
        if shared || self.core.claim_retry(now) {
            self.request(demand);
        }
        if let Some(lease) = self.leases.front() {
            if lease.at > now {
                return Admission::NotBefore(lease.at);
            }
            self.leases.pop_front();
            return Admission::Granted;
        }
        match mode {
            Mode::Shared => Admission::Pending,
            Mode::Fallback { retry_at } => self.admit_locally(now, current, retry_at),
        }
    }

    fn admit_locally(&mut self, now: Instant, current: &Quota, retry_at: Instant) -> Admission {
        let Fallback::Local { processes } = self.core.options.fallback else {
            return if self.refilling {
                Admission::Pending
            } else {
                Admission::NotBefore(retry_at)
            };
        };
        let window = self.quota.effective_window();
        let local = self.local.get_or_insert_with(|| {
            let share = (current.limit() / processes.get()).max(1);
            LocalShare {
                model: ModelState::new(&current.scaled(share), now),
                not_before: now + window,
            }
        });
        let at = local.model.earliest(now).max(local.not_before);
        if at > now {
            return Admission::NotBefore(at);
        }
        local.model.record(now);
        self.last_local_send = Some(now);
        self.core.count_fallback_grant();
        Admission::Granted
    }

    /// After a delivery: asks for slots for the waiters still without one, if Redis is up.
    pub(crate) fn request_more(&mut self, demand: usize) {
        if self.core.mode() == Mode::Shared {
            self.request(demand);
        }
    }

    /// Asks for slots for the waiters that have none, unless a lease is on its way.
    fn request(&mut self, demand: usize) {
        if self.refilling || self.leases.len() >= demand {
            return;
        }
        let wanted = (demand - self.leases.len()).min(self.core.options.lease as usize);
        // Back from the local share. The other processes may still be on theirs until their
        // next try of Redis succeeds (within `retry_every` plus a call's timeout), and what
        // they send there stays in the window for one more window: Redis knows none of it.
        // Pause the key for everyone till then.
        let options = &self.core.options;
        let pause_first = self
            .last_local_send
            .map(|_| options.retry_every + options.timeout + self.quota.effective_window());
        self.refilling = true;
        self.requested = Some(RefillRequest {
            core: Arc::clone(&self.core),
            name: Arc::clone(&self.name),
            quota: self.quota,
            slots: u32::try_from(wanted).unwrap_or(u32::MAX),
            pause_first,
        });
    }

    /// The request [`admit`](Self::admit) decided on, for the caller to send.
    pub(crate) fn take_request(&mut self) -> Option<RefillRequest> {
        self.requested.take()
    }

    /// The request could not be sent (no async runtime here).
    pub(crate) fn request_not_sent(&mut self) {
        self.refilling = false;
    }

    /// A lease arrived (`received` is when its reply came back), or did not (`None`).
    pub(crate) fn deliver(&mut self, reservation: Option<Reservation>, received: Instant) {
        self.refilling = false;
        let Some(reservation) = reservation else {
            return;
        };
        self.local = None;
        self.last_local_send = None;
        for (offset, token) in reservation.slots.into_iter().zip(reservation.tokens) {
            // Redis's instant maps to no earlier than the reply's arrival plus the offset: late
            // by at most the reply's flight, never early. Kept in order whatever the mapping.
            let floor = self.leases.back().map_or(received, |last| last.at);
            self.leases.push_back(Lease {
                at: (received + offset).max(floor),
                token,
            });
        }
    }

    /// Slots further ahead than the waiters need go back to Redis (a waiter gave up).
    pub(crate) fn release_surplus(&mut self, demand: usize) {
        if self.leases.len() > demand {
            let surplus: Vec<Lease> = self.leases.drain(demand..).collect();
            self.give_back(&surplus);
        }
    }

    /// Slots before `until` (a pause) are unusable: give them back.
    pub(crate) fn release_before(&mut self, until: Instant) {
        let unusable = self.leases.iter().take_while(|l| l.at < until).count();
        if unusable > 0 {
            let unusable: Vec<Lease> = self.leases.drain(..unusable).collect();
            self.give_back(&unusable);
        }
    }

    /// Slots whose time passed by more than the grace would crowd other processes' slots.
    fn expire(&mut self, now: Instant) {
        let grace = self.core.options.slot_grace;
        let expired = self
            .leases
            .iter()
            .take_while(|l| l.at + grace < now)
            .count();
        if expired > 0 {
            let expired: Vec<Lease> = self.leases.drain(..expired).collect();
            self.give_back(&expired);
        }
    }

    fn give_back(&self, leases: &[Lease]) {
        self.core.count_unused(leases.len());
        let tokens: Vec<Token> = leases.iter().map(|l| l.token).collect();
        super::refill::spawn_release(&self.core, &self.name, self.quota, tokens);
    }

    /// Writes a pause to Redis, so that every process on the key pauses.
    pub(crate) fn share_pause(&self, pause: Duration) {
        super::refill::spawn_pause(&self.core, &self.name, pause);
    }

    /// The earliest instant the `n`-th next send (0-based) could go out: exact for leased
    /// slots, an estimate at the quota's steady rate beyond them.
    pub(crate) fn nth_earliest(&self, now: Instant, n: usize) -> Instant {
        if let (Mode::Fallback { .. }, Some(local)) = (self.core.mode(), &self.local) {
            if self.leases.is_empty() {
                return local.model.nth_earliest(now, n).max(local.not_before);
            }
        }
        if let Some(lease) = self.leases.get(n) {
            return lease.at.max(now);
        }
        let beyond = u32::try_from(n - self.leases.len()).unwrap_or(u32::MAX);
        let base = self.leases.back().map_or(now, |l| l.at.max(now));
        let steps = beyond + u32::from(!self.leases.is_empty());
        base + self.quota.emission_interval().saturating_mul(steps)
    }

    /// Whether dropping this state forgets nothing: no lease on its way, no slot still usable,
    /// and no local share still pacing.
    pub(crate) fn is_idle(&self, now: Instant) -> bool {
        let grace = self.core.options.slot_grace;
        !self.refilling
            && self.leases.back().is_none_or(|l| l.at + grace < now)
            && self
                .local
                .as_ref()
                .is_none_or(|l| l.not_before <= now && l.model.is_idle(now))
            && self.last_local_send.is_none()
    }
}
