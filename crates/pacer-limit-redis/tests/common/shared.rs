//! Limiters sharing a quota through a test's own `redis-server`.

use std::sync::{Arc, Mutex};

use pacer_limit::{Limiter, Quota};
use pacer_limit_redis::{LimiterBuilderExt, RedisStore, SharedQuota};
use pacer_testkit::RedisServer;
use tokio::time::Instant;

/// A limiter of `quota` shared through `redis` (prefix `test`, four expected processes),
/// with `shared` applied to the default settings.
pub(crate) async fn shared_limiter(
    redis: &RedisServer,
    quota: Quota,
    shared: impl Fn(SharedQuota) -> SharedQuota,
) -> Limiter {
    let store = RedisStore::connect(&redis.url(), "test").await.unwrap();
    Limiter::builder(quota)
        .shared(shared(SharedQuota::new(store, 4)))
        .build()
}

/// `tasks` tasks per limiter acquire in a loop until `until`; every grant's instant, sorted.
pub(crate) async fn acquire_until(
    limiters: &[Limiter],
    tasks: usize,
    until: Instant,
) -> Vec<Instant> {
    let grants = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for limiter in limiters {
        for _ in 0..tasks {
            let (limiter, grants) = (limiter.clone(), Arc::clone(&grants));
            handles.push(tokio::spawn(async move {
                while let Ok(Ok(())) = tokio::time::timeout_at(until, limiter.acquire(())).await {
                    grants.lock().unwrap().push(Instant::now());
                }
            }));
        }
    }
    for handle in handles {
        handle.await.unwrap();
    }
    let mut grants = Arc::try_unwrap(grants).unwrap().into_inner().unwrap();
    grants.sort_unstable();
    grants
}
