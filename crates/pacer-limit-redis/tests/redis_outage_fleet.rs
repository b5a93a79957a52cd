//! A fleet of limiters on one Redis quota, Redis SIGKILLed and restarted empty: the fallback
//! starts within the call timeout, at each process's share of the fleet Redis counted, with no
//! burst at the switch or at the rejoin, and a server's pause survives the restart. Real time
//! over loopback (Redis's clock is real); skipped when `redis-server` is missing, unless
//! `PACER_REQUIRE_REDIS` is set.

mod common;

use std::time::Duration;

use common::max_in_any_window;
use common::shared::{acquire_until, shared_limiter};
use pacer_limit::{Limiter, Quota};
use pacer_limit_redis::{Fallback, LimiterBuilderExt, LimiterExt, RedisStore, SharedQuota};
use pacer_testkit::RedisServer;
use tokio::time::Instant;

/// Kills or restarts `redis` off the runtime's workers (a restart waits for the port).
async fn on_blocking_pool(mut redis: RedisServer, action: fn(&mut RedisServer)) -> RedisServer {
    tokio::task::spawn_blocking(move || {
        action(&mut redis);
        redis
    })
    .await
    .unwrap()
}

fn count_between(grants: &[Instant], from: Instant, to: Instant) -> usize {
    grants.iter().filter(|&&t| t >= from && t < to).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_rides_through_an_outage_at_its_share_without_bursts() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let quota = Quota::per_second(100);
    // Each limiter is told it is alone: its share must come from the fleet Redis counted.
    // The default timeout: a shorter one times out on a busy machine, and a process whose
    // probe of the restarted Redis times out rejoins after the shared schedule started.
    let settings = |s: SharedQuota| {
        s.timeout(Duration::from_millis(250))
            .retry_every(Duration::from_millis(200))
            .fallback(Fallback::Local {
                processes: 1.try_into().unwrap(),
            })
    };
    let mut limiters = Vec::new();
    for _ in 0..4 {
        limiters.push(shared_limiter(&redis, quota, settings).await);
    }
    let start = Instant::now();
    let end = start + Duration::from_millis(3000);
    let run = tokio::spawn({
        let limiters = limiters.clone();
        async move { acquire_until(&limiters, 3, end).await }
    });
    tokio::time::sleep_until(start + Duration::from_millis(1000)).await;
    let redis = on_blocking_pool(redis, RedisServer::kill).await;
    let killed = Instant::now();
    tokio::time::sleep_until(start + Duration::from_millis(2000)).await;
    let down_stats: Vec<_> = limiters.iter().map(|l| l.shared_stats().unwrap()).collect();
    let _redis = on_blocking_pool(redis, RedisServer::restart).await;
    let restarted = Instant::now();
    let grants = run.await.unwrap();

    let at = |t: Instant| t - start;
    assert!(down_stats.iter().all(|s| s.redis_down), "{down_stats:?}");
    // Never more than the quota in any window: not while each process paces on its own
    // (a quarter each, though told it was alone), not at the switch, not at the rejoin.
    let busiest_100ms = max_in_any_window(&grants, Duration::from_millis(100));
    let busiest_1s = max_in_any_window(&grants, Duration::from_secs(1));
    let busiest_at = (0..grants.len())
        .max_by_key(|&i| count_between(&grants, grants[i], grants[i] + Duration::from_millis(100)))
        .map(|i| at(grants[i]));
    assert!(
        busiest_100ms <= 12 && busiest_1s <= 102,
        "{busiest_100ms} in 100 ms (from {busiest_at:?}), {busiest_1s} in 1 s; killed at {:?}, \
         restarted at {:?}",
        at(killed),
        at(restarted)
    );
    // The fallback started within the call timeout: no gap in the fleet's sends longer than
    // a share's interval and some (the old share waited a whole window first; the kill
    // refuses the connection at once, so the timeout is not even needed).
    let longest_gap = grants
        .windows(2)
        .filter(|pair| pair[1] > killed - Duration::from_millis(100) && pair[0] < restarted)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap();
    assert!(
        longest_gap <= Duration::from_millis(200),
        "a gap of {longest_gap:?} after the kill at {:?}",
        at(killed)
    );
    // The fleet kept (nearly) the whole quota while Redis was away, and after it came back
    // (the old rejoin paused everyone for more than a second).
    let rate = |from: Instant, to: Instant| {
        count_between(&grants, from, to) as f64 / (to - from).as_secs_f64()
    };
    let down = rate(killed + Duration::from_millis(200), restarted);
    let back = rate(restarted + Duration::from_millis(200), end);
    let buckets: Vec<usize> = (0..30)
        .map(|i| {
            let from = start + Duration::from_millis(100 * i);
            count_between(&grants, from, from + Duration::from_millis(100))
        })
        .collect();
    assert!(
        down >= 85.0 && back >= 85.0,
        "{down}/s down, {back}/s back; per 100 ms: {buckets:?}"
    );
    for limiter in &limiters {
        let stats = limiter.shared_stats().unwrap();
        assert!(stats.fallback_grants > 0 && !stats.redis_down, "{stats:?}");
    }
}

/// One limiter with string keys on `redis`, quick to notice an outage and to try again.
async fn keyed_limiter(redis: &RedisServer, quota: Quota) -> Limiter<&'static str> {
    let store = RedisStore::connect(&redis.url(), "test").await.unwrap();
    Limiter::builder(quota)
        .shared(
            SharedQuota::new(store, 1)
                .timeout(Duration::from_millis(100))
                .retry_every(Duration::from_millis(100)),
        )
        .build()
}

/// How long from now Redis holds `key`'s next slot (its pause, if any), as another process
/// reserving from the restarted Redis would find it.
async fn next_shared_slot(redis: &RedisServer, key: &str, quota: &Quota) -> Duration {
    let store = RedisStore::connect(&redis.url(), "test").await.unwrap();
    store
        .reserve(&format!("{key:?}"), quota, 1)
        .await
        .unwrap()
        .slots[0]
}

/// Waits (bounded, 2 s) until Redis holds `key`'s pause of about 5 s: its next shared slot at
/// least 4 s away. The limiter writes a pause back in the background, so this polls rather
/// than sleeping for a guess.
async fn until_the_pause_is_in_redis(redis: &RedisServer, key: &str, quota: &Quota) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let next = next_shared_slot(redis, key, quota).await;
        if next >= Duration::from_secs(4) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the next shared slot in {next:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (bounded) until `limiter` counts Redis as `down`.
async fn until_redis_down_is(limiter: &Limiter<&'static str>, down: bool) {
    for _ in 0..200 {
        if limiter.shared_stats().unwrap().redis_down == down {
            return;
        }
        // A send on another key makes the limiter call Redis (and try it again when due).
        let _ = tokio::time::timeout(Duration::from_millis(20), limiter.acquire("probe")).await;
    }
    panic!("Redis never counted as down = {down}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_recorded_while_redis_was_away_is_written_back() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let quota = Quota::per_second(100);
    let limiter = keyed_limiter(&redis, quota).await;
    limiter.acquire("paced").await.unwrap();
    let redis = on_blocking_pool(redis, RedisServer::kill).await;
    until_redis_down_is(&limiter, true).await;
    // A server's Retry-After while Redis is away: the pause cannot reach it now.
    limiter.pause_until(&"paced", Instant::now() + Duration::from_secs(5));
    let redis = on_blocking_pool(redis, RedisServer::restart).await;
    until_redis_down_is(&limiter, false).await;
    // The write-back is in the background, right after the first reply.
    until_the_pause_is_in_redis(&redis, "paced", &quota).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_lost_with_a_restarted_redis_is_written_back() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let quota = Quota::per_second(100);
    let limiter = keyed_limiter(&redis, quota).await;
    limiter.acquire("paced").await.unwrap();
    limiter.pause_until(&"paced", Instant::now() + Duration::from_secs(5));
    until_the_pause_is_in_redis(&redis, "paced", &quota).await;
    // Restarted empty: the pause is gone from Redis, and comes back from the limiter.
    let redis = on_blocking_pool(redis, RedisServer::kill).await;
    until_redis_down_is(&limiter, true).await;
    let redis = on_blocking_pool(redis, RedisServer::restart).await;
    until_redis_down_is(&limiter, false).await;
    until_the_pause_is_in_redis(&redis, "paced", &quota).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_slower_than_the_timeout_puts_every_key_on_its_share_within_it() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let proxy = pacer_testkit::SlowProxy::start(redis.port());
    let url = format!("redis://127.0.0.1:{}/", proxy.port());
    let store = RedisStore::connect(&url, "slow").await.unwrap();
    let timeout = Duration::from_millis(100);
    let limiter: Limiter<&'static str> = Limiter::builder(Quota::per_second(100))
        .shared(
            SharedQuota::new(store, 1)
                .timeout(timeout)
                .retry_every(Duration::from_secs(5)),
        )
        .build();
    let start = Instant::now();
    let end = start + Duration::from_millis(1200);
    let tasks: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|key| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let mut grants = Vec::new();
                while let Ok(Ok(())) = tokio::time::timeout_at(end, limiter.acquire(key)).await {
                    grants.push(Instant::now());
                }
                grants
            })
        })
        .collect();
    tokio::time::sleep_until(start + Duration::from_millis(400)).await;
    // Every reply now comes a second late: each call times out.
    proxy.set_delay(Duration::from_secs(1));
    let slowed = Instant::now();
    for task in tasks {
        let grants = task.await.unwrap();
        // Each key went on at its share within the timeout: no gap longer than the timeout,
        // a slot's interval and some scheduling (the old share waited a whole window more).
        let longest_gap = grants
            .windows(2)
            .filter(|pair| pair[1] > slowed)
            .map(|pair| pair[1] - pair[0])
            .max()
            .unwrap();
        assert!(
            longest_gap <= timeout + Duration::from_millis(100),
            "a gap of {longest_gap:?} after Redis slowed down"
        );
        assert!(grants.iter().filter(|&&t| t > slowed).count() > 40);
    }
    assert!(limiter.shared_stats().unwrap().redis_down);
}
