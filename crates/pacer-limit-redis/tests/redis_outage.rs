//! Redis killed and restarted under a shared limiter: the local fallback keeps pacing (never
//! unlimited), a warning says so, and the quota is shared again once Redis is back. Alone in
//! its binary because it asserts on `tracing` events, which a concurrent test hitting the same
//! callsites first without a subscriber would hide. Skipped when `redis-server` is missing.

mod common;

use std::time::Duration;

use common::max_in_any_window;
use common::shared::{acquire_until, shared_limiter};
use pacer_limit::Quota;
use pacer_limit_redis::{Fallback, LimiterExt, SharedQuota};
use pacer_testkit::RedisServer;
use tokio::time::Instant;

#[tokio::test]
async fn redis_down_falls_back_to_a_local_share_and_recovers() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let (events, _guard) = pacer_testkit::capture();
    // Two processes share 40 per 200 ms; each may send 20 per 200 ms on its own.
    let quota = Quota::new(40, Duration::from_millis(200))
        .with_margin(Duration::from_millis(20))
        .sliding_window();
    let settings = |s: SharedQuota| {
        s.retry_every(Duration::from_millis(100))
            .fallback(Fallback::Local {
                processes: 2.try_into().unwrap(),
            })
    };
    let limiters = [
        shared_limiter(&redis, quota, settings).await,
        shared_limiter(&redis, quota, settings).await,
    ];
    let start = Instant::now();
    let run = tokio::spawn({
        let limiters = limiters.clone();
        async move { acquire_until(&limiters, 4, start + Duration::from_millis(2000)).await }
    });

    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let down_stats = limiters[0].shared_stats().unwrap();
    redis.restart();
    let restarted = Instant::now();
    let grants = run.await.unwrap();

    assert!(down_stats.redis_down, "{down_stats:?}");
    assert!(
        !events
            .find(tracing::Level::WARN, "Redis is unreachable")
            .is_empty(),
        "no warning that Redis is down: {:?}",
        events.events()
    );
    // Never unlimited: while Redis was down, the two local shares together stayed within the
    // quota (each first waited one window, then sent its half).
    let down: Vec<Instant> = grants
        .iter()
        .copied()
        .filter(|&t| t > killed + Duration::from_millis(30) && t < restarted)
        .collect();
    assert!(
        max_in_any_window(&down, Duration::from_millis(200)) <= 40,
        "{down:?}"
    );
    let fallback: u64 = limiters
        .iter()
        .map(|l| l.shared_stats().unwrap().fallback_grants)
        .sum();
    assert!(fallback > 0, "the local shares granted nothing");
    // And Redis took over again once it was back.
    let after = limiters[0].shared_stats().unwrap();
    assert!(!after.redis_down, "{after:?}");
    assert!(after.reservations > down_stats.reservations, "{after:?}");
    assert!(
        !events
            .find(tracing::Level::INFO, "Redis answers again")
            .is_empty(),
        "no event saying Redis is back"
    );
    // No window ever held more than the quota, across the kill and the restart.
    let window = Duration::from_millis(200);
    let (busiest, at) = (0..grants.len())
        .map(|i| {
            (
                grants[i..]
                    .iter()
                    .take_while(|&&t| t < grants[i] + window)
                    .count(),
                grants[i] - start,
            )
        })
        .max()
        .unwrap();
    assert!(
        busiest <= 40,
        "{busiest} grants in the window from {at:?}; killed at {:?}, restarted at {:?}",
        killed - start,
        restarted - start
    );
}
