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
    loop {
        let outcome = reserve(&request).await;
        let received = Instant::now();
        let core = Arc::clone(&request.core);
        match &outcome {
            Ok(reservation) => core.succeeded(reservation.slots.len(), received),
            Err(error) => core.failed(error, received),
        }
        let Some(shared) = shared.upgrade() else {
            give_back_all(&request, outcome.ok());
            return;
        };
        let next = {
            let mut state = shared.lock();
            let Some(bucket) = state.existing(&key) else {
                // A refilling bucket is never evicted; this is the limiter being torn down.
                drop(state);
                give_back_all(&request, outcome.ok());
                return;
            };
            let demand = bucket.queue_len();
            let next = bucket.remote_mut().and_then(|remote| {
                remote.deliver(outcome.ok(), received);
                // Waiters still without a slot: ask again now rather than when the head wakes.
                remote.request_more(demand);
                remote.take_request()
            });
            bucket.wake_head();
            next
        };
        match next {
            Some(next) => request = next,
            None => return,
        }
    }
}

async fn reserve(request: &RefillRequest) -> Result<Reservation, RedisError> {
    let store = &request.core.options.store;
    let call = async {
        if let Some(pause) = request.pause_first {
            store.pause_for(&request.name, pause).await?;
        }
        store
            .reserve(&request.name, &request.quota, request.slots)
            .await
    };
    match tokio::time::timeout(request.core.options.timeout, call).await {
        Ok(result) => result,
        Err(_) => Err(RedisError::from((
            redis::ErrorKind::IoError,
            "Redis did not answer within the timeout",
        ))),
    }
}

fn give_back_all(request: &RefillRequest, reservation: Option<Reservation>) {
    if let Some(reservation) = reservation {
        request.core.count_unused(reservation.tokens.len());
        spawn_release(
            &request.core,
            &request.name,
            request.quota,
            reservation.tokens,
        );
    }
}

/// Offers unused slots back to Redis, in the background; a failure only costs those slots.
pub(crate) fn spawn_release(core: &Arc<Core>, name: &Arc<str>, quota: Quota, tokens: Vec<Token>) {
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
pub(crate) fn spawn_pause(core: &Arc<Core>, name: &Arc<str>, pause: Duration) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (core, name) = (Arc::clone(core), Arc::clone(name));
    runtime.spawn(async move {
        let call = core.options.store.pause_for(&name, pause);
        match tokio::time::timeout(core.options.timeout, call).await {
            Ok(Ok(in_force)) => {
                tracing::debug!(key = %name, ?in_force, "pause shared with every process");
            }
            Ok(Err(error)) => core.failed(&error, Instant::now()),
            Err(_) => core.failed(&"timeout", Instant::now()),
        }
    });
}
