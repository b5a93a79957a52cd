//! The asynchronous side of a shared limiter: lease requests, give-backs and pauses run as
//! tasks on the current tokio runtime, so that no waiter ever holds the limiter's lock across a
//! Redis round trip.

use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::RedisError;
use tokio::time::Instant;

use super::slots::RefillRequest;
use super::store::{Reservation, Token};
use super::Core;
use crate::bucket::Bucket;
use crate::limiter::{Key, Shared};
use crate::quota::Quota;

/// Sends the lease request `bucket` decided on, if any. Called under the limiter's lock right
/// after an admission attempt.
pub(crate) fn dispatch<K: Key>(shared: &Arc<Shared<K>>, bucket: &mut Bucket, key: &K) {
    let Some(request) = bucket.remote_mut().and_then(|r| r.take_request()) else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        // Outside a runtime (e.g. `try_acquire` from a plain thread) nothing can be awaited.
        if let Some(remote) = bucket.remote_mut() {
            remote.request_not_sent();
        }
        return;
    };
    runtime.spawn(lease_loop(Arc::downgrade(shared), key.clone(), request));
}

/// Requests leases until the key's waiters have slots: each reply is delivered under the lock,
/// which decides whether another round trip is needed.
async fn lease_loop<K: Key>(shared: Weak<Shared<K>>, key: K, mut request: RefillRequest) {
    // Should this task end early (its runtime shut down), the key must not wait for it forever.
    let mut guard = Undelivered {
        shared: shared.clone(),
        key: Some(key.clone()),
    };
    loop {
        let outcome = reserve(&request).await;
        let received = Instant::now();
        let core = Arc::clone(&request.core);
        let wake_all = match &outcome {
            Ok(reservation) => {
                // Slots mapped through a tighter anchor come due sooner than heads slept for.
                let sooner = core.observe_clock(reservation.redis_now_micros, received);
                let recovered = core.succeeded(reservation.slots.len(), received);
                recovered || sooner > Duration::from_millis(1)
            }
            Err(error) => {
                core.failed(error, received);
                false
            }
        };
        let Some(shared) = shared.upgrade() else {
            guard.key = None;
            give_back_all(&request, outcome.ok());
            return;
        };
        let mut state = shared.lock();
        if wake_all {
            // Heads sleeping on a local share's schedule, or on a looser clock anchor, may
            // take their slots sooner.
            state.wake_heads();
        }
        let Some(bucket) = state.existing(&key) else {
            // A refilling bucket is never evicted; this is the limiter being torn down.
            drop(state);
            guard.key = None;
            give_back_all(&request, outcome.ok());
            return;
        };
        let demand = bucket.queue_len();
        let paused = bucket.is_paused(received);
        let next = bucket.remote_mut().and_then(|remote| {
            remote.deliver(outcome.ok(), request.requested_at);
            // Waiters still without a slot: ask again now rather than when the head wakes.
            if !paused {
                remote.request_after_delivery(received, demand);
            }
            remote.take_request()
        });
        bucket.wake_head();
        drop(state);
        match next {
            Some(next) => request = next,
            None => {
                guard.key = None;
                return;
            }
        }
    }
}

/// Delivers "no lease" if the lease task ends without delivering, so the key asks again.
struct Undelivered<K: Key> {
    shared: Weak<Shared<K>>,
    key: Option<K>,
}

impl<K: Key> Drop for Undelivered<K> {
    fn drop(&mut self) {
        let (Some(key), Some(shared)) = (self.key.take(), self.shared.upgrade()) else {
            return;
        };
        let mut state = shared.lock();
        if let Some(bucket) = state.existing(&key) {
            if let Some(remote) = bucket.remote_mut() {
                remote.deliver(None, Instant::now());
            }
            bucket.wake_head();
        }
    }
}

/// How long a reservation that timed out is still awaited, so its slots can be given back.
const FOLLOW_UP: Duration = Duration::from_secs(30);

/// One reservation (after the recovery pause, if any), within the timeout. A call that times
/// out goes on in the background, and whatever it reserved is given back.
async fn reserve(request: &RefillRequest) -> Result<Reservation, RedisError> {
    let core = Arc::clone(&request.core);
    let (name, quota, slots, pause_first) = (
        Arc::clone(&request.name),
        request.quota,
        request.slots,
        request.pause_first,
    );
    let mut call = tokio::spawn({
        let store = core.options.store.clone();
        let name = Arc::clone(&name);
        async move {
            if let Some(pause) = pause_first {
                store.pause_for_quota(&name, &quota, pause).await?;
            }
            store.reserve(&name, &quota, slots).await
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
                if let Ok(Ok(Ok(reservation))) = tokio::time::timeout(FOLLOW_UP, call).await {
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
            Ok(Err(error)) => core.failed(&error, Instant::now()),
            Err(_) => core.failed(&"timeout", Instant::now()),
        }
    });
}
