//! The asynchronous side of a shared limiter: lease requests, give-backs and pauses run as
//! tasks on the current tokio runtime, so that no waiter ever holds the limiter's lock across a
//! Redis round trip.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use pacer_limit::{HeadWaker, Quota};
use redis::RedisError;
use tokio::time::Instant;

use crate::health::Core;
use crate::slots::{lock, KeySlots, RefillRequest};
use crate::store::{Rejoin, Reservation, Token};

/// Sends a lease request for a key on the current tokio runtime. Returns `false` outside a
/// runtime (e.g. `try_acquire` from a plain thread), where nothing can be awaited.
pub(crate) fn dispatch(
    slots: &Arc<Mutex<KeySlots>>,
    waker: &HeadWaker,
    request: RefillRequest,
) -> bool {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return false;
    };
    runtime.spawn(lease(Arc::downgrade(slots), waker.clone(), request));
    true
}

/// Lease requests for one key while its waiters lack slots: each reply is delivered to the
/// key's slots, which decide on the next request at once; the key's head waiter is woken to
/// take what arrived.
async fn lease(slots: Weak<Mutex<KeySlots>>, waker: HeadWaker, mut request: RefillRequest) {
    // Should this task end early (its runtime shut down), the key must not wait for it forever.
    let mut guard = Undelivered {
        slots: slots.clone(),
        waker: waker.clone(),
        armed: true,
    };
    loop {
        let outcome = reserve(&request).await;
        let received = Instant::now();
        let core = Arc::clone(&request.core);
        let (wake_all, shared_from) = match &outcome {
            Ok((reservation, rejoin)) => {
                // Slots mapped through a tighter anchor come due sooner than heads slept for.
                let sooner = core.observe_clock(reservation.redis_now_micros, received);
                let recovered = core.succeeded(reservation.slots.len(), received);
                if recovered {
                    restore_pauses(&core, received);
                }
                heartbeat(&core, received);
                let shared_from = rejoin.map(|rejoin| local_share_until(&request, rejoin));
                (recovered || sooner > Duration::from_millis(1), shared_from)
            }
            // Down for every key: their heads look again, and take the local share.
            Err(error) => (core.failed(error, received), None),
        };
        let outcome = outcome.map(|(reservation, _)| reservation);
        let Some(key_slots) = slots.upgrade() else {
            // The key's bucket is gone: the limiter was dropped.
            guard.armed = false;
            give_back_all(&request, outcome.ok());
            return;
        };
        let next = {
            let mut state = lock(&key_slots);
            state.deliver(outcome.ok(), request.requested_at, shared_from);
            state.chain(received)
        };
        drop(key_slots);
        if wake_all {
            // Heads sleeping on a local share's schedule, or on a looser clock anchor, may
            // take their slots sooner.
            waker.wake_all_heads();
        } else {
            waker.wake_head();
        }
        match next {
            Some(next) => request = next,
            None => {
                guard.armed = false;
                return;
            }
        }
    }
}

/// Delivers "no lease" if the lease task ends without delivering, so the key asks again.
struct Undelivered {
    slots: Weak<Mutex<KeySlots>>,
    waker: HeadWaker,
    armed: bool,
}

impl Drop for Undelivered {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(slots) = self.slots.upgrade() {
            lock(&slots).deliver(None, Instant::now(), None);
            self.waker.wake_head();
        }
    }
}

/// How long a reservation that timed out is still awaited, so its slots can be given back.
const FOLLOW_UP: Duration = Duration::from_secs(30);

/// Until when a key back from its local share keeps sending on it: until the shared schedule
/// starts again, as Redis said, less a window for a sliding-window quota (whose local share may
/// have sent its whole window at once). A server's pause in force beyond that instant ends the
/// local share at once: every process then waits for it.
fn local_share_until(request: &RefillRequest, rejoin: Rejoin) -> Instant {
    let now = Instant::now();
    if rejoin.shared_from == 0 || rejoin.paused_until > rejoin.shared_from {
        return now;
    }
    let from = request.core.local_instant(rejoin.shared_from);
    match request.quota.model() {
        pacer_limit::Model::Gcra { .. } => from,
        _ => from
            .checked_sub(request.quota.effective_window())
            .unwrap_or(now),
    }
}

/// Tells Redis, at most once per `retry_every`, that this limiter shares the prefix, and
/// learns how many do: the local share's divisor should Redis go away.
fn heartbeat(core: &Arc<Core>, now: Instant) {
    if !core.claim_heartbeat(now) {
        return;
    }
    let core = Arc::clone(core);
    tokio::spawn(async move {
        let call = core
            .options
            .store
            .heartbeat(core.member(), core.member_life());
        match tokio::time::timeout(core.options.timeout, call).await {
            Ok(Ok((alive, rank))) => core.observe_fleet(alive, rank, Instant::now()),
            // The reservations notice an outage; a heartbeat lost costs nothing.
            Ok(Err(error)) => tracing::debug!(%error, "heartbeat failed"),
            Err(_) => tracing::debug!("heartbeat timed out"),
        }
    });
}

/// One reservation (after rejoining the shared schedule, if asked),
/// within the timeout. A call that times out goes on in the background, and whatever it
/// reserved is given back.
async fn reserve(request: &RefillRequest) -> Result<(Reservation, Option<Rejoin>), RedisError> {
    let core = Arc::clone(&request.core);
    let (name, quota, slots, horizon, rejoin_after, follows) = (
        Arc::clone(&request.name),
        request.quota,
        request.slots,
        request.horizon,
        request.rejoin_after,
        request.follows,
    );
    let mut call = tokio::spawn({
        let store = core.options.store.clone();
        let name = Arc::clone(&name);
        async move {
            let attempt = || async {
                let rejoin = match rejoin_after {
                    Some(after) => Some(store.rejoin(&name, &quota, after).await?),
                    None => None,
                };
                let reservation = store
                    .reserve_within(&name, &quota, slots, horizon, follows)
                    .await?;
                Ok::<_, RedisError>((reservation, rejoin))
            };
            match attempt().await {
                // The connection manager reconnects only after a call fails on the old
                // connection: after a restart, the first call fails and the next one finds
                // Redis. One more attempt (within the same timeout) spares the whole fleet a
                // retry interval on its local shares, and a dropped connection to a Redis that
                // is up never counts as an outage. The scripts are atomic: a failed attempt
                // reserved nothing, or its reply was lost with slots Redis still holds (at
                // most a lease, not used, aging out with the key).
                Err(error) if error.is_io_error() || error.is_connection_dropped() => {
                    tracing::debug!(%error, "Redis call failed; trying once more");
                    attempt().await
                }
                result => result,
            }
        }
    });
    match tokio::time::timeout(core.options.timeout, &mut call).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(RedisError::from((
            redis::ErrorKind::IoError,
            "the Redis call failed",
            join.to_string(),
        ))),
        Err(_) => {
            tokio::spawn(async move {
                if let Ok(Ok(Ok((reservation, _)))) = tokio::time::timeout(FOLLOW_UP, call).await {
                    core.count_late(reservation.tokens.len());
                    give_back(&core, &name, quota, reservation.tokens);
                }
            });
            Err(RedisError::from((
                redis::ErrorKind::IoError,
                "Redis did not answer within the timeout",
            )))
        }
    }
}

fn give_back_all(request: &RefillRequest, reservation: Option<Reservation>) {
    if let Some(reservation) = reservation {
        give_back(
            &request.core,
            &request.name,
            request.quota,
            reservation.tokens,
        );
    }
}

/// Counts slots as unused and offers them back to Redis, in the background; a failure only
/// costs those slots.
pub(crate) fn give_back(core: &Arc<Core>, name: &Arc<str>, quota: Quota, tokens: Vec<Token>) {
    core.count_unused(tokens.len());
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (core, name) = (Arc::clone(core), Arc::clone(name));
    runtime.spawn(async move {
        let call = core.options.store.release(&name, &quota, &tokens);
        match tokio::time::timeout(core.options.timeout, call).await {
            Ok(Ok(applied)) => {
                tracing::trace!(key = %name, offered = tokens.len(), applied, "unused slots given back");
            }
            Ok(Err(error)) => tracing::debug!(key = %name, %error, "unused slots not given back"),
            Err(_) => tracing::debug!(key = %name, "unused slots not given back: timeout"),
        }
    });
}

/// Writes a pause to Redis in the background, so every process on the key pauses.
pub(crate) fn spawn_pause(core: &Arc<Core>, name: &Arc<str>, quota: Quota, pause: Duration) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (core, name) = (Arc::clone(core), Arc::clone(name));
    runtime.spawn(async move {
        let call = core.options.store.pause_for_quota(&name, &quota, pause);
        match tokio::time::timeout(core.options.timeout, call).await {
            Ok(Ok(in_force)) => {
                tracing::debug!(key = %name, ?in_force, "pause shared with every process");
            }
            Ok(Err(error)) => {
                core.failed(&error, Instant::now());
            }
            Err(_) => {
                core.failed(&"timeout", Instant::now());
            }
        }
    });
}

/// Writes back, after an outage, the servers' pauses this process shared that still hold:
/// Redis may never have heard of them (recorded while it was away) or lost them (restarted).
fn restore_pauses(core: &Arc<Core>, now: Instant) {
    for (name, quota, until) in core.pauses_in_force(now) {
        let pause = until.saturating_duration_since(now);
        tracing::debug!(key = %name, ?pause, "a pause kept while Redis was away goes back to it");
        spawn_pause(core, &name, quota, pause);
    }
}

/// Widens the key's spacing margin in Redis for every process, in the background (see
/// [`RedisStore::widen_spacing`](crate::RedisStore::widen_spacing)).
pub(crate) fn spawn_spacing(
    core: &Arc<Core>,
    name: &Arc<str>,
    quota: Quota,
    extra: f64,
    half_life: Duration,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (core, name) = (Arc::clone(core), Arc::clone(name));
    runtime.spawn(async move {
        let call = core
            .options
            .store
            // A round: a refusal within a window of the fleet's last widening was of a slot
            // booked before it.
            .widen_spacing_within(
                &name,
                extra,
                SPACING_STEP,
                half_life,
                quota.effective_window(),
            );
        match tokio::time::timeout(core.options.timeout, call).await {
            Ok(Ok(margin)) => {
                tracing::debug!(key = %name, margin, "spacing margin shared with every process");
            }
            Ok(Err(error)) => {
                core.failed(&error, Instant::now());
            }
            Err(_) => {
                core.failed(&"timeout", Instant::now());
            }
        }
    });
}

/// How far one process's refusal widens the shared margin over the one in force: the step
/// of the limiter's own (3 %).
const SPACING_STEP: f64 = 0.03;
