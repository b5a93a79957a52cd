//! The Redis scripts against a real `redis-server` on a random loopback port: several
//! connections (as several processes would) reserve slots of one quota, and the invariants hold
//! across all of them. Skipped, with a line saying so, when `redis-server` is not installed.

use std::time::Duration;

use pacer_limit::Quota;
use pacer_limit_redis::RedisStore;
use pacer_testkit::RedisServer;

/// Four connections reserving `leases` x `size` slots each, concurrently; all slots, absolute,
/// in microseconds on Redis's clock, sorted.
async fn reserve_from_four(
    redis: &RedisServer,
    key: &str,
    quota: Quota,
    leases: usize,
    size: u32,
) -> Vec<u64> {
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = RedisStore::connect(&redis.url(), "test").await.unwrap();
        let key = key.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut slots = Vec::new();
            for _ in 0..leases {
                let reservation = store.reserve(&key, &quota, size).await.unwrap();
                slots.extend(
                    reservation
                        .slots
                        .iter()
                        .map(|offset| reservation.redis_now_micros + offset.as_micros() as u64),
                );
            }
            slots
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    all
}

#[tokio::test]
async fn evenly_spaced_slots_never_crowd_across_connections() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let quota = Quota::per_second(100).gcra(1).with_margin(Duration::ZERO);
    let slots = reserve_from_four(&redis, "gcra", quota, 10, 5).await;
    assert_eq!(slots.len(), 200);
    let interval = quota.emission_interval().as_micros() as u64;
    for pair in slots.windows(2) {
        assert!(
            pair[1] - pair[0] >= interval,
            "slots {} us apart",
            pair[1] - pair[0]
        );
    }
}

#[tokio::test]
async fn a_burst_is_allowed_then_the_rate_holds() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let quota = Quota::per_second(100).gcra(10).with_margin(Duration::ZERO);
    let store = RedisStore::connect(&redis.url(), "test").await.unwrap();
    let reservation = store.reserve("burst", &quota, 12).await.unwrap();
    let immediate = reservation
        .slots
        .iter()
        .filter(|slot| slot.is_zero())
        .count();
    assert_eq!(immediate, 10, "{:?}", reservation.slots);
    assert!(reservation.slots[11] >= Duration::from_millis(19));
}

#[tokio::test]
async fn a_sliding_window_never_holds_more_than_the_limit_across_connections() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let quota = Quota::new(20, Duration::from_millis(200))
        .sliding_window()
        .with_margin(Duration::ZERO);
    let slots = reserve_from_four(&redis, "sliding", quota, 10, 3).await;
    assert_eq!(slots.len(), 120);
    let window = quota.effective_window().as_micros() as u64;
    for (i, &start) in slots.iter().enumerate() {
        let inside = slots[i..]
            .iter()
            .take_while(|&&slot| slot < start + window)
            .count();
        assert!(inside <= 20, "{inside} slots in one window from {start}");
    }
    // And the quota is used: 120 slots take six windows, not more.
    assert!(slots[119] - slots[0] < 6 * window);
}

#[tokio::test]
async fn a_pause_holds_every_connection() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let quota = Quota::per_second(1000)
        .sliding_window()
        .with_margin(Duration::ZERO);
    let pauser = RedisStore::connect(&redis.url(), "test").await.unwrap();
    let other = RedisStore::connect(&redis.url(), "test").await.unwrap();
    let paused = pauser
        .pause_for("paused", Duration::from_millis(500))
        .await
        .unwrap();
    assert!(paused > Duration::from_millis(450));
    // A shorter pause does not shorten it.
    let still = pauser
        .pause_for("paused", Duration::from_millis(10))
        .await
        .unwrap();
    assert!(still > Duration::from_millis(400));
    let reservation = other.reserve("paused", &quota, 3).await.unwrap();
    assert!(
        reservation
            .slots
            .iter()
            .all(|slot| *slot >= Duration::from_millis(400)),
        "{:?}",
        reservation.slots
    );
}

#[tokio::test]
async fn two_configurations_of_one_key_keep_separate_state_and_keys_expire() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let store = RedisStore::connect(&redis.url(), "test").await.unwrap();
    let slow = Quota::per_second(1).gcra(1).with_margin(Duration::ZERO);
    let fast = Quota::per_second(1000).gcra(1).with_margin(Duration::ZERO);
    store.reserve("shared", &slow, 3).await.unwrap();
    // The slow quota's backlog (two seconds) does not leak into the fast one's state.
    let reservation = store.reserve("shared", &fast, 1).await.unwrap();
    assert_eq!(reservation.slots, [Duration::ZERO]);
    let mut connection = redis::Client::open(redis.url().as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(
        keys.iter()
            .all(|key| key.starts_with("{pacer:test:shared}:")),
        "{keys:?}"
    );
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl < 10_000, "{key} expires in {ttl} ms");
    }
}

#[tokio::test]
async fn unused_slots_come_back_while_nobody_reserved_after_them() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let store = RedisStore::connect(&redis.url(), "test").await.unwrap();
    let other = RedisStore::connect(&redis.url(), "test").await.unwrap();

    // GCRA: the tail of the newest reservation comes back; the next one starts where it began.
    let gcra = Quota::per_second(10).gcra(1).with_margin(Duration::ZERO);
    let held = store.reserve("gcra", &gcra, 5).await.unwrap();
    assert_eq!(
        store.release_unused("gcra", &gcra, &held, 1).await.unwrap(),
        4
    );
    let next = other.reserve("gcra", &gcra, 1).await.unwrap();
    let gap = next.redis_now_micros + next.slots[0].as_micros() as u64
        - (held.redis_now_micros + held.slots[0].as_micros() as u64);
    assert!(
        (99_000..=101_000).contains(&gap),
        "next slot {gap} us after the first"
    );
    // Once somebody reserved after it, a reservation can no longer be taken back.
    assert_eq!(
        store.release_unused("gcra", &gcra, &held, 0).await.unwrap(),
        0
    );

    // Sliding window: unused slots leave the window, so the next reservation takes them.
    let sliding = Quota::new(3, Duration::from_secs(10))
        .sliding_window()
        .with_margin(Duration::ZERO);
    let held = store.reserve("sliding", &sliding, 3).await.unwrap();
    assert!(held.slots.iter().all(|slot| slot.is_zero()));
    assert_eq!(
        store
            .release_unused("sliding", &sliding, &held, 1)
            .await
            .unwrap(),
        2
    );
    let freed = other.reserve("sliding", &sliding, 3).await.unwrap();
    assert!(
        freed.slots[..2].iter().all(|slot| slot.is_zero()),
        "{:?}",
        freed.slots
    );
    assert!(freed.slots[2] > Duration::from_secs(9), "{:?}", freed.slots);
}

#[tokio::test]
async fn a_dead_redis_fails_fast_and_a_restarted_one_is_used_at_once() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let store = RedisStore::connect(&redis.url(), "test").await.unwrap();
    let quota = Quota::per_second(1000)
        .sliding_window()
        .with_margin(Duration::ZERO);
    store.reserve("k", &quota, 1).await.unwrap();
    redis.kill();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(1), store.reserve("k", &quota, 1))
            .await
            .expect("a dead Redis answers with an error, not silence");
        assert!(outcome.is_err());
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
    }
    redis.restart();
    // The connection comes back on the first call after the restart, with no backoff.
    let outcome = tokio::time::timeout(Duration::from_secs(1), store.reserve("k", &quota, 1)).await;
    assert!(matches!(outcome, Ok(Ok(_))), "{outcome:?}");
}

#[tokio::test]
async fn scripts_flushed_from_redis_are_loaded_again() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let store = RedisStore::connect(&redis.url(), "test").await.unwrap();
    let quota = Quota::per_second(10).gcra(1).with_margin(Duration::ZERO);
    store.reserve("k", &quota, 1).await.unwrap();
    let mut connection = redis::Client::open(redis.url().as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut connection)
        .await
        .unwrap();
    // EVALSHA answers NOSCRIPT; the store loads the script and the state carries on.
    let next = store.reserve("k", &quota, 1).await.unwrap();
    assert!(
        next.slots[0] > Duration::from_millis(50),
        "{:?}",
        next.slots
    );
    store
        .pause_for("k", Duration::from_millis(10))
        .await
        .unwrap();
}

/// After a pause, every connection's slots leave evenly spaced at the quota's rate, for a
/// sliding window and for a GCRA burst alike, rather than a whole window at the pause's end.
#[tokio::test]
async fn after_a_pause_slots_leave_evenly_spaced() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let pause = Duration::from_millis(300);
    for (key, quota) in [
        (
            "sliding-paused",
            Quota::per_second(100)
                .sliding_window()
                .with_margin(Duration::ZERO),
        ),
        (
            "burst-paused",
            Quota::per_second(100).gcra(50).with_margin(Duration::ZERO),
        ),
    ] {
        let store = RedisStore::connect(&redis.url(), "test").await.unwrap();
        store.pause_for(key, pause).await.unwrap();
        let slots = reserve_from_four(&redis, key, quota, 5, 4).await;
        assert_eq!(slots.len(), 80);
        let interval = quota.emission_interval().as_micros() as u64;
        for pair in slots.windows(2) {
            assert!(
                pair[1] - pair[0] >= interval,
                "{key}: slots {} us apart after the pause",
                pair[1] - pair[0]
            );
        }
    }
}

/// A window longer than the second a plain pause stays on record: the pause is kept for the
/// quota's window, so reservations made late in it are still spaced (rather than taking what is
/// left of the window at once).
#[tokio::test]
async fn a_pause_is_kept_on_record_for_the_window_after_it() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let quota = Quota::new(10, Duration::from_secs(3))
        .sliding_window()
        .with_margin(Duration::ZERO);
    let store = RedisStore::connect(&redis.url(), "test").await.unwrap();
    store
        .pause_for_quota("long-window", &quota, Duration::from_millis(100))
        .await
        .unwrap();
    // Redis's keys expire in Redis's real time: wait past the plain pause's second.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let reservation = store.reserve("long-window", &quota, 5).await.unwrap();
    let spacing = quota.emission_interval();
    for pair in reservation.slots.windows(2) {
        assert!(pair[1] - pair[0] >= spacing, "{:?}", reservation.slots);
    }
}

/// A spacing margin one connection learned spaces every connection's slots (issue 22): four
/// connections reserving after one widened the margin by 50 % get slots 1.5 intervals apart;
/// a second widening by another connection widens further, by at least the step.
#[tokio::test]
async fn a_widened_spacing_spaces_every_connection() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let quota = Quota::per_second(100).gcra(1).with_margin(Duration::ZERO);
    let interval = quota.emission_interval().as_micros() as u64;
    let store = RedisStore::connect(&redis.url(), "test").await.unwrap();
    let half_life = Duration::from_secs(3600);
    let margin = store
        .widen_spacing("spaced", 0.5, 0.03, half_life)
        .await
        .unwrap();
    assert!((margin - 0.5).abs() < 1e-3, "{margin}");
    let slots = reserve_from_four(&redis, "spaced", quota, 5, 5).await;
    for pair in slots.windows(2) {
        let apart = pair[1] - pair[0];
        assert!(apart >= interval * 3 / 2 - 1, "slots {apart} us apart");
    }
    // Another connection learned less: the margin in force, widened by its step, stands.
    let other = RedisStore::connect(&redis.url(), "test").await.unwrap();
    let margin = other
        .widen_spacing("spaced", 0.03, 0.03, half_life)
        .await
        .unwrap();
    assert!(margin > 0.5 * 1.03 + 0.02, "{margin}");
    // Within a round of that widening, another refusal takes no step: it was of a slot
    // booked before it. A wider margin of its own still stands.
    let round = Duration::from_secs(60);
    let within = other
        .widen_spacing_within("spaced", 0.03, 0.03, half_life, round)
        .await
        .unwrap();
    assert!((within - margin).abs() < 1e-3, "{margin} then {within}");
    let wider = other
        .widen_spacing_within("spaced", 0.9, 0.03, half_life, round)
        .await
        .unwrap();
    assert!((wider - 0.9).abs() < 1e-3, "{wider}");
    // Another key is not affected.
    let slots = reserve_from_four(&redis, "unspaced", quota, 2, 5).await;
    assert!(slots
        .windows(2)
        .any(|pair| pair[1] - pair[0] < interval * 3 / 2));
}
