//! Limiters in several "processes" (each with its own Redis connection, as separate processes
//! would have) sharing one quota through a real `redis-server`. Redis keeps real time, so these
//! tests run in real time, briefly, and assert with margins. Skipped, with a line saying so,
//! when `redis-server` is not installed (and failed in CI, where `PACER_REQUIRE_REDIS` is set).

mod common;

use std::time::Duration;

use common::max_in_any_window;
use common::shared::{acquire_until, shared_limiter};
use pacer_limit::Quota;
use pacer_limit_redis::{Fallback, LimiterExt};
use pacer_testkit::RedisServer;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_limiters_share_one_sliding_window() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // 40 per 200 ms (200/s) with a 20 ms margin, shared by four limiters of eight tasks each.
    let quota = Quota::new(40, Duration::from_millis(200))
        .with_margin(Duration::from_millis(20))
        .sliding_window();
    let mut limiters = Vec::new();
    for _ in 0..4 {
        limiters.push(shared_limiter(&redis, quota, |s| s).await);
    }
    let start = Instant::now();
    let grants = acquire_until(&limiters, 8, start + Duration::from_millis(1500)).await;

    // Never more than the limit in any window the server could count (the grace of a slot,
    // 5 ms, is within the margin).
    let busiest = max_in_any_window(&grants, Duration::from_millis(200));
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
    let quota = Quota::per_second(100).gcra(1).with_margin(Duration::ZERO);
    let mut limiters = Vec::new();
    for _ in 0..3 {
        limiters.push(shared_limiter(&redis, quota, |s| s).await);
    }
    let start = Instant::now();
    let grants = acquire_until(&limiters, 4, start + Duration::from_secs(1)).await;
    // 10 ms apart: ten in any 100 ms, give or take one whose task ran late (each grant's
    // instant is read by its task after waking, which a busy machine delays).
    let busiest = max_in_any_window(&grants, Duration::from_millis(100));
    assert!(busiest <= 11, "{busiest} grants in one 100 ms window");
    assert!(grants.len() >= 95, "{} grants in one second", grants.len());
}

#[tokio::test]
async fn a_pause_in_one_process_holds_the_others() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let quota = thousand_per_second();
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
    // One send per 100 ms; eight waiters lease eight slots (0 to 700 ms): the first waiter's,
    // then the seven queued behind it.
    let quota = Quota::per_second(10).gcra(1).with_margin(Duration::ZERO);
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

    // The seven given back: the other process's next slot is the second (due at 100 ms, so at
    // once by now), not the ninth (at 800 ms). The give-backs are Redis calls of their own:
    // leave them 200 ms even on a loaded machine.
    tokio::time::sleep(Duration::from_millis(200)).await;
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
    let quota = Quota::per_second(100_000)
        .sliding_window()
        .with_margin(Duration::ZERO);
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
    // Lease 1: a round trip per request (more if a slot went back after its task ran late).
    assert!(
        trips[0] >= 400,
        "lease 1: {} round trips for 400 requests",
        trips[0]
    );
    assert!(
        trips[1] * 5 <= trips[0],
        "lease 8: {} round trips for 400 requests",
        trips[1]
    );
}

#[tokio::test]
async fn the_wait_fallback_sends_nothing_until_redis_is_back() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let limiter = shared_limiter(&redis, thousand_per_second(), |s| {
        s.retry_every(Duration::from_millis(50))
            .fallback(Fallback::Wait)
    })
    .await;
    limiter.acquire(()).await.unwrap();
    redis.kill();
    let waiting = tokio::spawn({
        let limiter = limiter.clone();
        async move {
            limiter.acquire(()).await.unwrap();
            Instant::now()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "granted while Redis was down");
    assert!(limiter.shared_stats().unwrap().redis_down);
    redis.restart();
    let restarted = Instant::now();
    let granted = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .expect("granted once Redis is back")
        .unwrap();
    assert!(granted >= restarted);
    assert_eq!(limiter.shared_stats().unwrap().fallback_grants, 0);
}

/// 1,000 per second in a sliding window, no margin: slots are at hand, and come in leases.
fn thousand_per_second() -> Quota {
    Quota::per_second(1000)
        .sliding_window()
        .with_margin(Duration::ZERO)
}

#[tokio::test]
async fn a_paused_key_asks_redis_for_nothing_until_the_pause_ends() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let limiter = shared_limiter(&redis, thousand_per_second(), |s| s).await;
    limiter.acquire(()).await.unwrap();
    let before = limiter.shared_stats().unwrap();
    let until = Instant::now() + Duration::from_millis(200);
    limiter.pause_until(&(), until);
    let waiting = tokio::spawn({
        let limiter = limiter.clone();
        async move { limiter.acquire(()).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // No slot is reserved for a waiter that cannot use it yet: the others could.
    assert_eq!(
        limiter.shared_stats().unwrap().reservations,
        before.reservations
    );
    waiting.await.unwrap().unwrap();
    assert!(Instant::now() >= until);
    assert!(limiter.shared_stats().unwrap().reservations > before.reservations);
}

#[tokio::test]
async fn a_lone_request_reserves_only_its_own_slot() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let limiter = shared_limiter(&redis, thousand_per_second(), |s| s).await;
    for _ in 0..20 {
        limiter.acquire(()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = limiter.shared_stats().unwrap();
    assert_eq!(stats.slots_reserved, 20, "{stats:?}");
    assert_eq!(stats.slots_unused, 0, "{stats:?}");
}

/// A pause written by another process reaches this one with its next reservation, and the
/// slots it holds inside the pause are dropped then (they were booked before it), not sent:
/// before, every leased slot went out, up to a lease of sends inside the server's pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_held_inside_another_process_pause_are_dropped_at_the_next_reservation() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // One send per 200 ms; six waiters lease six slots (0 to 1,000 ms).
    let quota = Quota::per_second(5).gcra(1).with_margin(Duration::ZERO);
    let holder = shared_limiter(&redis, quota, |s| s.lease(8)).await;
    let other = shared_limiter(&redis, quota, |s| s).await;
    let grants = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let waiter = |holder: pacer_limit::Limiter| {
        let grants = std::sync::Arc::clone(&grants);
        tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(5), holder.acquire(()))
                .await
                .unwrap()
                .unwrap();
            grants.lock().unwrap().push(Instant::now());
        })
    };
    let mut waiters: Vec<_> = (0..6).map(|_| waiter(holder.clone())).collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    // The other process is refused and pauses the key for 800 ms (written to Redis).
    let paused_at = Instant::now();
    let pause_end = paused_at + Duration::from_millis(800);
    other.pause_until(&(), pause_end);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // One more waiter: the holder asks Redis for a slot, and hears of the pause. Its slots at
    // 400, 600 and 800 ms are inside the pause; the one at 200 ms may go before it hears.
    waiters.push(waiter(holder.clone()));
    for waiter in waiters {
        waiter.await.unwrap();
    }
    let grants = grants.lock().unwrap();
    let inside: Vec<_> = grants
        .iter()
        .filter(|&&at| at > paused_at + Duration::from_millis(250) && at < pause_end)
        .map(|&at| at - paused_at)
        .collect();
    assert!(inside.is_empty(), "sent inside the pause: {inside:?}");
    assert_eq!(grants.len(), 7);
}
