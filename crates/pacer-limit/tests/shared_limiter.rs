//! Limiters in several "processes" (each with its own Redis connection, as separate processes
//! would have) sharing one quota through a real `redis-server`. Redis keeps real time, so these
//! tests run in real time, briefly, and assert with margins. Skipped, with a line saying so,
//! when `redis-server` is not installed (and failed in CI, where `PACER_REQUIRE_REDIS` is set).
#![cfg(feature = "redis")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pacer_limit::redis::{Fallback, RedisStore, SharedQuota};
use pacer_limit::{Limiter, Quota};
use pacer_testkit::RedisServer;
use tokio::time::Instant;

async fn shared_limiter(
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
async fn acquire_until(limiters: &[Limiter], tasks: usize, until: Instant) -> Vec<Instant> {
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

/// The most grants in any window of `window`.
fn busiest_window(grants: &[Instant], window: Duration) -> usize {
    (0..grants.len())
        .map(|i| {
            grants[i..]
                .iter()
                .take_while(|&&t| t < grants[i] + window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_limiters_share_one_sliding_window() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // 40 per 200 ms (200/s) with a 20 ms margin, shared by four limiters of eight tasks each.
    let quota = Quota::new(40, Duration::from_millis(200)).with_margin(Duration::from_millis(20));
    let mut limiters = Vec::new();
    for _ in 0..4 {
        limiters.push(shared_limiter(&redis, quota, |s| s).await);
    }
    let start = Instant::now();
    let grants = acquire_until(&limiters, 8, start + Duration::from_millis(1500)).await;

    // Never more than the limit in any window the server could count (the grace of a slot,
    // 5 ms, is within the margin).
    let busiest = busiest_window(&grants, Duration::from_millis(200));
    assert!(busiest <= 40, "{busiest} grants in one 200 ms window");
    // And the quota is used: a window of 220 ms opens every 220 ms, so 1.5 s hold 7 windows
    // (a slot whose task ran more than 5 ms late goes back, so a busy machine loses a few).
    assert!(
        grants.len() >= 7 * 40 * 9 / 10,
        "{} grants in 1.5 s",
        grants.len()
    );
    let stats: Vec<_> = limiters.iter().map(|l| l.shared_stats().unwrap()).collect();
    for (limiter, stats) in limiters.iter().zip(&stats) {
        assert!(stats.reservations > 0 && !stats.redis_down, "{stats:?}");
        // Every limiter got its turn: FIFO per process, first come first served in Redis.
        assert!(
            limiter.stats().acquired > grants.len() as u64 / 8,
            "{:?}",
            limiter.stats()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evenly_spaced_sends_stay_spaced_across_limiters() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let quota = Quota::per_second(100).gcra(1);
    let mut limiters = Vec::new();
    for _ in 0..3 {
        limiters.push(shared_limiter(&redis, quota, |s| s).await);
    }
    let start = Instant::now();
    let grants = acquire_until(&limiters, 4, start + Duration::from_secs(1)).await;
    // 10 ms apart: ten in any 100 ms, give or take one whose task ran late (each grant's
    // instant is read by its task after waking, which a busy machine delays).
    let busiest = busiest_window(&grants, Duration::from_millis(100));
    assert!(busiest <= 11, "{busiest} grants in one 100 ms window");
    assert!(grants.len() >= 95, "{} grants in one second", grants.len());
}

#[tokio::test]
async fn a_pause_in_one_process_holds_the_others() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let quota = Quota::per_second(1000);
    let refused = shared_limiter(&redis, quota, |s| s).await;
    let other = shared_limiter(&redis, quota, |s| s).await;
    refused.acquire(()).await.unwrap();
    other.acquire(()).await.unwrap();

    // The throttle layer does this on a 429 with Retry-After.
    refused.pause_until(&(), Instant::now() + Duration::from_millis(300));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let start = Instant::now();
    other.acquire(()).await.unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "the other process waited {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(400),
        "the other process waited {waited:?}"
    );
}

#[tokio::test]
async fn a_waiter_that_gives_up_returns_its_slot() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // One send per 100 ms; eight waiters lease eight slots (0 to 700 ms) in one round trip.
    let quota = Quota::per_second(10).gcra(1);
    let holder = shared_limiter(&redis, quota, |s| s.lease(8)).await;
    let other = shared_limiter(&redis, quota, |s| s).await;
    let waiters: Vec<_> = (0..8)
        .map(|_| {
            let holder = holder.clone();
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_millis(50), holder.acquire(())).await
            })
        })
        .collect();
    let mut granted = 0;
    for waiter in waiters {
        granted += usize::from(waiter.await.unwrap().is_ok());
    }
    assert_eq!(granted, 1, "only the first slot was due within 50 ms");
    let stats = holder.shared_stats().unwrap();
    assert_eq!(stats.slots_reserved, 8, "{stats:?}");
    assert_eq!(stats.slots_unused, 7, "{stats:?}");

    // The seven given back: the other process's next slot is the second, not the ninth.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let start = Instant::now();
    other.acquire(()).await.unwrap();
    let waited = start.elapsed();
    assert!(waited < Duration::from_millis(100), "waited {waited:?}");
}

#[tokio::test]
async fn leases_cut_round_trips_under_load() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let quota = Quota::per_second(100_000);
    let mut trips = Vec::new();
    for lease in [1, 8] {
        let limiter = shared_limiter(&redis, quota, |s| s.lease(lease)).await;
        let tasks: Vec<_> = (0..400)
            .map(|_| {
                tokio::spawn({
                    let limiter = limiter.clone();
                    async move { limiter.acquire(()).await }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let stats = limiter.shared_stats().unwrap();
        assert_eq!(stats.slots_reserved - stats.slots_unused, 400, "{stats:?}");
        trips.push(stats.reservations);
    }
    assert_eq!(trips[0], 400, "lease 1: one round trip per request");
    assert!(
        trips[1] <= 400 / 8 + 2,
        "lease 8: {} round trips for 400 requests",
        trips[1]
    );
}

#[tokio::test]
async fn redis_down_falls_back_to_a_local_share_and_recovers() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let (events, _guard) = pacer_testkit::capture();
    // Two processes share 40 per 200 ms; each may send 20 per 200 ms on its own.
    let quota = Quota::new(40, Duration::from_millis(200)).with_margin(Duration::from_millis(20));
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
        "no warning that Redis is down"
    );
    // Never unlimited: while Redis was down, the two local shares together stayed within the
    // quota (each first waited one window, then sent its half).
    let down: Vec<Instant> = grants
        .iter()
        .copied()
        .filter(|&t| t > killed + Duration::from_millis(30) && t < restarted)
        .collect();
    assert!(
        busiest_window(&down, Duration::from_millis(200)) <= 40,
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
