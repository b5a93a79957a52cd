//! Quotas of several windows ([`Quota::and`]) shared through a real `redis-server` on a random
//! loopback port: the scripts enforce every window together, across connections, and admit a
//! slot as soon as every window has room. Skipped, with a line saying so, when `redis-server`
//! is not installed (and failed in CI, where `PACER_REQUIRE_REDIS` is set).

mod common;

use std::time::Duration;

use common::max_in_any_window;
use common::shared::{acquire_until, shared_limiter};
use pacer_limit::{Model, Quota};
use pacer_limit_redis::RedisStore;
use pacer_testkit::RedisServer;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio::time::Instant;

/// A primary window and a cap of `stretch` primary windows whose limit is a share of what the
/// primary alone allows in it, so that it binds; whole milliseconds, no margins.
fn two_windows() -> impl Strategy<Value = Quota> {
    (
        1u32..6,
        2u64..15,
        any::<bool>(),
        1u32..4,
        2u32..6,
        20u32..90,
    )
        .prop_map(|(limit, interval_ms, sliding, burst, stretch, cap_pct)| {
            let window = Duration::from_millis(interval_ms * u64::from(limit));
            let primary = Quota::new(limit, window).with_margin(Duration::ZERO);
            let primary = if sliding {
                primary.sliding_window()
            } else {
                primary.gcra(burst.min(limit))
            };
            let cap_limit = (limit * stretch * cap_pct / 100).max(1);
            primary.and(Quota::new(cap_limit, window * stretch).with_margin(Duration::ZERO))
        })
}

/// Redis's now at each reservation and the slots it gave, absolute, in reservation order.
type Reserved = Vec<(Duration, Vec<Duration>)>;

/// Checks every window on the slots, and that each slot is exactly where a perfect greedy
/// limiter puts it: at the later of its reservation's now and what each window allows.
fn check(quota: &Quota, reserved: &Reserved) -> Result<(), TestCaseError> {
    let cap = quota.caps().next().unwrap();
    let all: Vec<Duration> = reserved.iter().flat_map(|(_, s)| s.clone()).collect();
    let in_cap = max_in_any_window(&all, cap.effective_window());
    prop_assert!(
        in_cap <= cap.limit() as usize,
        "{in_cap} slots in one long window"
    );
    let interval = quota.emission_interval();
    let mut tat = Duration::ZERO;
    let mut previous: Vec<Duration> = Vec::new();
    for (now, slots) in reserved {
        for &slot in slots {
            let mut at = *now;
            match quota.model() {
                Model::Gcra { burst } => {
                    at = at.max(tat.saturating_sub(interval * (burst.get() - 1)));
                }
                _ => {
                    at = at.max(previous.last().copied().unwrap_or_default());
                    let limit = quota.limit() as usize;
                    if previous.len() >= limit {
                        at = at.max(previous[previous.len() - limit] + quota.effective_window());
                    }
                }
            }
            let cap_limit = cap.limit() as usize;
            if previous.len() >= cap_limit {
                at = at.max(previous[previous.len() - cap_limit] + cap.effective_window());
            }
            prop_assert_eq!(slot, at, "slot {} of {:?}", previous.len(), quota);
            if let Model::Gcra { .. } = quota.model() {
                tat = tat.max(slot) + interval;
            }
            previous.push(slot);
        }
    }
    if let Model::SlidingWindow = quota.model() {
        let most = max_in_any_window(&all, quota.effective_window());
        prop_assert!(
            most <= quota.limit() as usize,
            "{most} slots in one short window"
        );
    }
    Ok(())
}

/// Random quotas of two windows and random lease sizes from two connections: every window
/// holds on the slots Redis hands out, and none is later than a perfect limiter's. The slots
/// are times to send, not sends, so nothing waits for them: Redis's real clock only moves
/// between calls.
#[test]
fn every_window_holds_on_redis_and_no_slot_is_wasted() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stores = runtime.block_on(async {
        let a = RedisStore::connect(&redis.url(), "windows").await.unwrap();
        let b = RedisStore::connect(&redis.url(), "windows").await.unwrap();
        [a, b]
    });
    let case = std::cell::Cell::new(0u32);
    let mut runner = TestRunner::new(Config::with_cases(24));
    let leases = prop::collection::vec((1u32..6, any::<bool>(), 0u64..3), 1..25);
    runner
        .run(&(two_windows(), leases), |(quota, leases)| {
            case.set(case.get() + 1);
            let key = format!("case-{}", case.get());
            let reserved = runtime.block_on(async {
                let mut reserved = Vec::new();
                for (size, second, pause_ms) in leases {
                    if pause_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                    }
                    let store = &stores[usize::from(second)];
                    let reservation = store.reserve(&key, &quota, size).await.unwrap();
                    let now = Duration::from_micros(reservation.redis_now_micros);
                    reserved.push((now, reservation.slots.iter().map(|s| now + *s).collect()));
                }
                reserved
            });
            check(&quota, &reserved)
        })
        .unwrap();
}

/// Slots given back unused leave the cap's count: the next reservation takes their places.
#[tokio::test]
async fn slots_given_back_free_the_cap() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let store = RedisStore::connect(&redis.url(), "windows").await.unwrap();
    let cap = Quota::new(5, Duration::from_secs(60)).with_margin(Duration::ZERO);
    let quota = Quota::per_second(1000).with_margin(Duration::ZERO).and(cap);
    let first = store.reserve("give-back", &quota, 5).await.unwrap();
    assert!(first.slots.iter().all(|s| *s < Duration::from_millis(10)));
    // Spent: the next slot waits for the minute.
    let spent = store.reserve("give-back", &quota, 1).await.unwrap();
    assert!(
        spent.slots[0] > Duration::from_secs(59),
        "{:?}",
        spent.slots
    );
    let back = store
        .release_unused("give-back", &quota, &spent, 0)
        .await
        .unwrap();
    assert_eq!(back, 1);
    // Two of the first five are not sent after all: two places free now.
    store
        .release_unused("give-back", &quota, &first, 3)
        .await
        .unwrap();
    let again = store.reserve("give-back", &quota, 3).await.unwrap();
    assert!(again.slots[..2]
        .iter()
        .all(|s| *s < Duration::from_millis(10)));
    assert!(
        again.slots[2] > Duration::from_secs(59),
        "{:?}",
        again.slots
    );
}

/// A daily cap's state lives a day, not the seconds the per-second window's state does.
#[tokio::test]
async fn a_long_window_outlives_the_short_one_in_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let store = RedisStore::connect(&redis.url(), "windows").await.unwrap();
    let quota = Quota::per_second(10).and(Quota::per_day(50_000));
    store.reserve("daily", &quota, 3).await.unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*daily*")
        .query_async(&mut connection)
        .await
        .unwrap();
    let mut cap_keys = 0;
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut connection)
            .await
            .unwrap();
        if key.contains(":cap:") {
            cap_keys += 1;
            assert!(ttl > 86_400_000, "{key} expires in {ttl} ms");
        } else {
            assert!((0..10_000).contains(&ttl), "{key} expires in {ttl} ms");
        }
    }
    assert_eq!(cap_keys, 2, "{keys:?}");
}

/// Two limiters ("processes") on one quota of two windows through Redis, in real time: the
/// long window holds on the real grants, and every window's allowance is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_limiters_keep_both_windows() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // 100/s evenly spaced, capped at 20 per 500 ms.
    let quota = Quota::new(10, Duration::from_millis(100))
        .with_margin(Duration::ZERO)
        .and(Quota::new(20, Duration::from_millis(500)).with_margin(Duration::ZERO));
    let mut limiters = Vec::new();
    for _ in 0..2 {
        limiters.push(shared_limiter(&redis, quota, |s| s).await);
    }
    let start = Instant::now();
    let grants = acquire_until(&limiters, 4, start + Duration::from_millis(1_600)).await;
    // Each grant lies within the 5 ms grace after its slot, and the slots hold the cap: a
    // window that much shorter holds at most 20 grants.
    let busiest = max_in_any_window(&grants, Duration::from_millis(490));
    assert!(busiest <= 20, "{busiest} grants in one 490 ms window");
    let short = max_in_any_window(&grants, Duration::from_millis(95));
    assert!(short <= 10, "{short} grants in one 95 ms window");
    // Windows open at 0, 0.5, 1 and 1.5 s: 20 + 20 + 20 and 11 more by 1.6 s (a slot whose
    // task ran late goes back, so a busy machine loses a few); never more than the cap lets.
    assert!(grants.len() >= 54, "{} grants in 1.6 s", grants.len());
    assert!(grants.len() <= 72, "{} grants in 1.6 s", grants.len());
}

/// A refusal without a wait in one process while the cap is about spent by every process's
/// sends together: Redis's count, not this process's own, puts it down to the spent cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_spent_by_other_processes_explains_a_refusal() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let cap = Quota::new(20, Duration::from_secs(60)).with_margin(Duration::ZERO);
    let quota = Quota::per_second(1000).and(cap);
    let (a, b) = (
        shared_limiter(&redis, quota, |s| s).await,
        shared_limiter(&redis, quota, |s| s).await,
    );
    let first = Instant::now();
    for _ in 0..15 {
        a.acquire(()).await.unwrap();
    }
    for _ in 0..4 {
        b.acquire(()).await.unwrap();
    }
    // b sent 4 of the minute's 20 itself; with a's 15, 19 are spent.
    let refused = pacer_limit::Feedback::new(pacer_limit::Outcome::Refused, Instant::now())
        .max_pause(Duration::from_secs(120));
    let verdict = b.observe(&(), refused);
    let spent = verdict.spent.expect("Redis counts 19 of 20");
    assert_eq!(Some(spent.cap), quota.caps().next());
    // The minute frees when a's first slot leaves it (clocks mapped within a few ms).
    let frees_in = spent.frees_at - first;
    assert!(
        frees_in > Duration::from_millis(59_900) && frees_in < Duration::from_millis(60_100),
        "{frees_in:?}"
    );
    assert_eq!(verdict.paused_until, Some(spent.frees_at));
    assert_eq!(verdict.rate_per_second, None);
}

/// A cap over 1,024 per window is counted on a grid of 1/1,024 of its window: conservative
/// (never more than the limit in any real window) and losing at most one grid step.
#[tokio::test]
async fn a_large_cap_is_counted_on_a_grid_and_stays_conservative() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let store = RedisStore::connect(&redis.url(), "windows").await.unwrap();
    let window = Duration::from_secs(2);
    let cap = Quota::new(2_000, window).with_margin(Duration::ZERO);
    let quota = Quota::per_second(1_000_000)
        .with_margin(Duration::ZERO)
        .and(cap);
    let mut slots = Vec::new();
    for _ in 0..25 {
        let reservation = store.reserve("grid", &quota, 100).await.unwrap();
        let now = Duration::from_micros(reservation.redis_now_micros);
        slots.extend(reservation.slots.iter().map(|s| now + *s));
    }
    assert!(max_in_any_window(&slots, window) <= 2_000);
    // The first 2,000 go at once (1 µs apart); the next waits for the first to leave the
    // window, rounded up to the grid: at most one step (window / 1,024) late.
    let step = window / 1_024;
    let freed = slots[0] + window;
    assert!(slots[1_999] < slots[0] + Duration::from_secs(1));
    assert!(
        slots[2_000] >= freed && slots[2_000] <= freed + step + Duration::from_millis(1),
        "{:?} after the first",
        slots[2_000] - slots[0]
    );
}
