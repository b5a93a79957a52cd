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

/// `tasks` tasks of `limiter` send `count` requests in turn; every answer comes back after
/// 2 ms but the one to the `late`-th send (0-based), after 40 ms (a send that reached the
/// server late). Returns how long after that send the next one went out.
async fn gap_after_a_late_answer(
    limiter: &pacer_limit::Limiter,
    tasks: usize,
    count: usize,
    late: usize,
) -> Duration {
    use pacer_limit::{Feedback, Outcome};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let sent = Arc::new(AtomicUsize::new(0));
    let grants = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..tasks)
        .map(|_| {
            let (limiter, sent, grants) = (limiter.clone(), Arc::clone(&sent), Arc::clone(&grants));
            tokio::spawn(async move {
                loop {
                    tokio::time::timeout(Duration::from_secs(5), limiter.acquire(()))
                        .await
                        .unwrap()
                        .unwrap();
                    let at = Instant::now();
                    let n = sent.fetch_add(1, Ordering::SeqCst);
                    if n >= count {
                        return;
                    }
                    grants.lock().unwrap().push((at, n == late));
                    let latency = if n == late { 40 } else { 2 };
                    tokio::time::sleep(Duration::from_millis(latency)).await;
                    let _ = limiter.observe(&(), Feedback::new(Outcome::Accepted, at));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let mut grants = grants.lock().unwrap().clone();
    grants.sort_unstable();
    let at = grants.iter().position(|&(_, late)| late).unwrap();
    grants[at + 1].0 - grants[at].0
}

/// A process the server never refused learns from Redis that another one found it strict (a
/// spacing margin is in force), and from then on holds its next send after a late answer, as
/// the refused process does: otherwise each process of a fleet learns it from a refusal of its
/// own, and each pauses the whole fleet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_never_refused_holds_after_a_late_answer_once_the_fleet_is_spaced() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // One send per 100 ms.
    let quota = Quota::per_second(10).gcra(1).with_margin(Duration::ZERO);
    let never_refused = shared_limiter(&redis, quota, |s| s).await;
    // Nobody found the server strict: the send after the late one keeps its slot, 100 ms on.
    let gap = gap_after_a_late_answer(&never_refused, 3, 9, 7).await;
    assert!(gap < Duration::from_millis(125), "{gap:?}");
    // Another process was refused and widened the fleet's margin to 10 %: slots 110 ms apart.
    another_process_widened_the_margin(&redis).await;
    // The next send waits out the late answer's excess (38 ms) past the interval: 138 ms. It
    // goes late on its slot (110 ms), which this process's own next slot follows, rather than
    // skipping it (220 ms).
    let gap = gap_after_a_late_answer(&never_refused, 3, 9, 7).await;
    assert!(gap >= Duration::from_millis(130), "{gap:?}");
    assert!(gap < Duration::from_millis(200), "{gap:?}");
}

/// Runs one send of `limiter` whose task wakes about 50 ms after its slot (the runtime's only
/// thread is busy then), after one send on time; returns how many slots went unused.
async fn a_send_that_wakes_late(limiter: &pacer_limit::Limiter) -> u64 {
    limiter.acquire(()).await.unwrap();
    let start = Instant::now();
    let late = {
        let limiter = limiter.clone();
        tokio::spawn(async move { limiter.acquire(()).await.unwrap() })
    };
    // The second slot is 100 ms (110 with the margin) after the first; the thread is busy
    // from 100 to 160 ms.
    tokio::time::sleep_until(start + Duration::from_millis(100)).await;
    std::thread::sleep(Duration::from_millis(60));
    tokio::time::timeout(Duration::from_secs(2), late)
        .await
        .unwrap()
        .unwrap();
    limiter.shared_stats().unwrap().slots_unused
}

/// While the server is known to be strict (a margin, and so a junction gap, is in force), a
/// slot another process's may follow goes unused when its send would leave later than a share
/// of the junction gap after it (a descheduled task): it would reach the server too close to
/// the other process's next send, which knows nothing of it. The key takes the next slot
/// instead. Without a margin, the slot grace alone decides.
#[tokio::test]
async fn a_slot_before_another_process_goes_unused_when_its_send_is_later_than_the_junction_allows()
{
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // One send per 100 ms; a grace long enough for a send 50 ms late.
    let quota = Quota::per_second(10).gcra(1).with_margin(Duration::ZERO);
    let grace = |s: pacer_limit_redis::SharedQuota| s.slot_grace(Duration::from_millis(100));
    let plain = shared_limiter(&redis, quota, grace).await;
    assert_eq!(a_send_that_wakes_late(&plain).await, 0);

    // With a margin of 10 %: a junction gap of 60 ms, a third of it is 20 ms.
    let redis = RedisServer::start().unwrap();
    another_process_widened_the_margin(&redis).await;
    let spaced = shared_limiter(&redis, quota, grace).await;
    // (At least one: on a busy machine the next slot's task may wake too late as well.)
    assert!(a_send_that_wakes_late(&spaced).await >= 1);
}

/// A hold that comes while the process holds no slot (its one task was waiting for the
/// answer; its next slot is not yet booked) waits for the slot on its way: otherwise a process
/// of one task would never hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_with_no_slot_leased_waits_for_the_slots_on_their_way() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let quota = Quota::per_second(10).gcra(1).with_margin(Duration::ZERO);
    another_process_widened_the_margin(&redis).await;
    let one_task = shared_limiter(&redis, quota, |s| s).await;
    // The slot after the late send (110 ms on) is before the hold (138 ms on): the hold
    // skips it, as the only slot held, which another process's may follow.
    let gap = gap_after_a_late_answer(&one_task, 1, 9, 7).await;
    assert!(gap >= Duration::from_millis(130), "{gap:?}");
}

/// What a refusal of another process leaves in `redis` for the key `()`: a spacing margin of
/// 10 % (for an hour).
async fn another_process_widened_the_margin(redis: &RedisServer) {
    let store = pacer_limit_redis::RedisStore::connect(&redis.url(), "test")
        .await
        .unwrap();
    let hour = Duration::from_secs(3600);
    store.widen_spacing("()", 0.1, 0.1, hour).await.unwrap();
}
