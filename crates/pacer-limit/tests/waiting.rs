//! FIFO order, cancellation, keyed independence, eviction, maximum wait, queue bound, pauses.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Recorder;
use http::Request;
use pacer_limit::{LimitLayer, Limiter, Quota, RateLimited, Reason};
use tokio::task::JoinHandle;
use tokio::time::{advance, Instant};
use tower::{Layer, ServiceExt};

/// Yields until `n` requests are queued on the limiter's key.
async fn until_queued(limiter: &Limiter, n: usize) {
    while limiter.queue_len(&()) < n {
        tokio::task::yield_now().await;
    }
}

/// Queues `n` waiters one after the other (each is queued before the next is spawned), lets
/// them all through, and returns the order in which they were granted.
async fn grant_order(limiter: &Limiter, n: usize) -> Vec<usize> {
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (waiter, order) = (limiter.clone(), Arc::clone(&order));
        tasks.push(tokio::spawn(async move {
            waiter.acquire(()).await.unwrap();
            order.lock().unwrap().push(i);
        }));
        until_queued(limiter, i + 1).await;
    }
    for task in tasks {
        task.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    order
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_arrival_order() {
    let limiter = Limiter::new(Quota::per_second(10).gcra(1).with_margin(Duration::ZERO));
    limiter.try_acquire(&()).unwrap();
    assert_eq!(grant_order(&limiter, 50).await, (0..50).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_freed_window_drains_in_arrival_order() {
    // A sliding window frees all 100 slots at once; the queue must still drain in order, one
    // grant per poll, not by every waiter racing for them.
    let limiter = Limiter::new(
        Quota::per_second(100)
            .sliding_window()
            .with_margin(Duration::ZERO),
    );
    for _ in 0..100 {
        limiter.try_acquire(&()).unwrap();
    }
    assert_eq!(
        grant_order(&limiter, 200).await,
        (0..200).collect::<Vec<_>>()
    );
    assert_eq!(limiter.stats().waited, 200);
}

#[tokio::test(start_paused = true)]
async fn dropped_waiters_give_their_capacity_back() {
    let quota = Quota::per_second(100).gcra(1).with_margin(Duration::ZERO);
    let limiter = Limiter::new(quota);
    limiter.try_acquire(&()).unwrap();
    // 1,000 waiters queue, then all are cancelled (the head included) before their turn.
    let waiters: Vec<JoinHandle<()>> = (0..1_000)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let _ = limiter.acquire(()).await;
            })
        })
        .collect();
    until_queued(&limiter, 1_000).await;
    assert_eq!(
        limiter.estimated_wait(&()),
        Duration::from_millis(10) * 1_001
    );
    for waiter in &waiters {
        waiter.abort();
    }
    for waiter in waiters {
        assert!(waiter.await.unwrap_err().is_cancelled());
    }
    assert_eq!(limiter.stats().cancelled, 1_000);
    assert_eq!(limiter.queue_len(&()), 0);
    assert_eq!(limiter.estimated_wait(&()), Duration::from_millis(10));

    // The next 100 requests run exactly as if the 1,000 had never existed.
    let start = Instant::now();
    for _ in 0..100 {
        limiter.acquire(()).await.unwrap();
    }
    assert_eq!(start.elapsed(), Duration::from_millis(1_000));
    assert_eq!(limiter.stats().acquired, 101);
}

#[tokio::test(start_paused = true)]
async fn cancelling_the_head_hands_the_timer_to_the_next_waiter() {
    let limiter = Limiter::new(Quota::per_second(1).gcra(1).with_margin(Duration::ZERO));
    limiter.try_acquire(&()).unwrap();
    let head = tokio::spawn({
        let limiter = limiter.clone();
        async move { limiter.acquire(()).await }
    });
    until_queued(&limiter, 1).await;
    let second = tokio::spawn({
        let limiter = limiter.clone();
        async move {
            limiter.acquire(()).await.unwrap();
            Instant::now()
        }
    });
    until_queued(&limiter, 2).await;
    let start = Instant::now();
    head.abort();
    let granted_at = second.await.unwrap();
    // The second waiter takes the head's slot, one second after the first send.
    assert_eq!(granted_at - start, Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn dropping_a_pending_response_future_frees_its_place() {
    let recorder = Recorder::default();
    let limiter = Limiter::new(Quota::per_second(1).gcra(1).with_margin(Duration::ZERO));
    let service = LimitLayer::new(limiter.clone()).layer(recorder.service());
    service.clone().oneshot(Request::new(())).await.unwrap();
    {
        let pending = service.clone().oneshot(Request::new(()));
        let timed_out = tokio::time::timeout(Duration::from_millis(500), pending).await;
        assert!(timed_out.is_err(), "must still be waiting after 500 ms");
    }
    assert_eq!(limiter.stats().cancelled, 1);
    let start = Instant::now();
    service.clone().oneshot(Request::new(())).await.unwrap();
    // Its slot was free half a second after the timeout: not pushed back by the dropped request.
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    assert_eq!(recorder.sends().len(), 2);
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Api {
    Track,
    App,
}

#[tokio::test(start_paused = true)]
async fn keys_have_independent_quotas() {
    let limiter = Limiter::builder(
        Quota::per_second(100)
            .sliding_window()
            .with_margin(Duration::ZERO),
    )
    .quota_fn(|api: &Api| match api {
        Api::Track => Quota::per_second(100).gcra(1).with_margin(Duration::ZERO),
        Api::App => Quota::per_second(10).gcra(1).with_margin(Duration::ZERO),
    })
    .build();
    let recorder = Recorder::default();
    let extractor = |req: &Request<()>| {
        if req.uri().path().starts_with("/v1/") {
            Api::App
        } else {
            Api::Track
        }
    };
    let service = LimitLayer::keyed(limiter.clone(), extractor).layer(recorder.service());
    let start = Instant::now();
    let app = tokio::spawn({
        let service = service.clone();
        async move {
            for _ in 0..11 {
                let req = Request::get("/v1/send/email").body(()).unwrap();
                service.clone().oneshot(req).await.unwrap();
            }
            Instant::now()
        }
    });
    let track = tokio::spawn({
        let service = service.clone();
        async move {
            for _ in 0..101 {
                let req = Request::post("/api/v2/batch").body(()).unwrap();
                service.clone().oneshot(req).await.unwrap();
            }
            Instant::now()
        }
    });
    // Each key runs at its own rate: neither waits for the other.
    assert_eq!(app.await.unwrap() - start, Duration::from_secs(1));
    assert_eq!(track.await.unwrap() - start, Duration::from_secs(1));
    assert_eq!(limiter.quota(&Api::App).limit(), 10);
    assert_eq!(limiter.stats().live_keys, 2);
}

#[tokio::test(start_paused = true)]
async fn idle_keys_are_evicted_and_memory_stays_bounded() {
    let limiter = Limiter::<u64>::builder(
        Quota::per_second(5)
            .sliding_window()
            .with_margin(Duration::ZERO),
    )
    .eviction_threshold(64)
    .build();
    for key in 0..10_000u64 {
        limiter.try_acquire(&key).unwrap();
        if key % 100 == 99 {
            // Every hundred keys, a second passes: the older keys fall idle.
            advance(Duration::from_secs(1)).await;
        }
    }
    let stats = limiter.stats();
    assert!(stats.live_keys <= 256, "{stats:?}");
    assert!(stats.evicted_keys >= 9_700, "{stats:?}");
    // A busy key is never evicted: its history still limits it.
    for _ in 0..4 {
        limiter.try_acquire(&7).unwrap();
    }
    limiter.evict_idle();
    limiter.try_acquire(&7).unwrap();
    assert!(limiter.try_acquire(&7).is_err());
    advance(Duration::from_secs(1)).await;
    limiter.evict_idle();
    assert_eq!(limiter.stats().live_keys, 0);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_would_wait_too_long_fails_at_once() {
    let limiter = Limiter::builder(Quota::per_second(10).gcra(1).with_margin(Duration::ZERO))
        .max_wait(Duration::from_millis(250))
        .build();
    let recorder = Recorder::default();
    let service = LimitLayer::new(limiter.clone()).layer(recorder.service());
    let start = Instant::now();
    let tasks: Vec<_> = (0..5)
        .map(|_| tokio::spawn(service.clone().oneshot(Request::new(()))))
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    // Slots at 0, 100 and 200 ms fit in 250 ms; 300 and 400 ms do not.
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 3);
    for result in &results[3..] {
        let Some(limited) = result
            .as_ref()
            .err()
            .and_then(|e| e.downcast_ref::<RateLimited>())
        else {
            panic!("expected a refusal, got {result:?}");
        };
        assert_eq!(limited.reason(), Reason::MaxWait);
        assert!(limited.retry_after().unwrap() >= Duration::from_millis(300));
    }
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    assert_eq!(recorder.sends().len(), 3);
    assert_eq!(limiter.stats().rejected, 2);
}

#[tokio::test(start_paused = true)]
async fn the_queue_is_bounded() {
    let limiter = Limiter::builder(Quota::per_second(1).gcra(1).with_margin(Duration::ZERO))
        .max_queue(3)
        .build();
    limiter.try_acquire(&()).unwrap();
    let waiters: Vec<_> = (0..3)
        .map(|_| tokio::spawn(limiter.clone().acquire(())))
        .collect();
    until_queued(&limiter, 3).await;
    let refused = limiter.acquire(()).await.unwrap_err();
    assert_eq!(refused.reason(), Reason::QueueFull);
    assert_eq!(refused.retry_after(), Some(Duration::from_secs(4)));
    for waiter in waiters {
        waiter.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn each_key_can_have_its_own_queue_bound() {
    // Key 0 allows one waiter (a broadcast trigger, say); key 1 the default.
    let limiter: Limiter<u8> =
        Limiter::builder(Quota::per_second(1).gcra(1).with_margin(Duration::ZERO))
            .max_queue_fn(|key: &u8| if *key == 0 { 1 } else { 10_000 })
            .build();
    for key in [0, 1] {
        limiter.try_acquire(&key).unwrap();
    }
    let _waiting = tokio::spawn(limiter.clone().acquire(0));
    let _also_waiting = tokio::spawn(limiter.clone().acquire(1));
    while limiter.queue_len(&0) < 1 || limiter.queue_len(&1) < 1 {
        tokio::task::yield_now().await;
    }
    let refused = limiter.acquire(0).await.unwrap_err();
    assert_eq!(refused.reason(), Reason::QueueFull);
    let queued = tokio::spawn(limiter.clone().acquire(1));
    while limiter.queue_len(&1) < 2 {
        tokio::task::yield_now().await;
    }
    queued.await.unwrap().unwrap();
}

/// Every waiter and new request waits out a pause; then they leave evenly spaced at the key's
/// rate, even on a quota that would otherwise release a whole window at once: a strict server
/// refuses a herd, and a refusal pauses again.
#[tokio::test(start_paused = true)]
async fn a_pause_holds_every_waiter_then_releases_them_evenly_spaced() {
    for quota in [
        Quota::per_second(100)
            .sliding_window()
            .with_margin(Duration::ZERO),
        Quota::per_second(100).gcra(50).with_margin(Duration::ZERO),
        Quota::per_second(100).with_margin(Duration::ZERO),
    ] {
        let limiter = Limiter::new(quota);
        let start = Instant::now();
        limiter.pause_until(&(), start + Duration::from_secs(5));
        let waiters: Vec<_> = (0..32)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    limiter.acquire(()).await.unwrap();
                    Instant::now()
                })
            })
            .collect();
        for (i, waiter) in waiters.into_iter().enumerate() {
            let expected = Duration::from_secs(5) + Duration::from_millis(10) * i as u32;
            assert_eq!(waiter.await.unwrap() - start, expected, "{quota:?}");
        }
        // A shorter pause never shortens a longer one.
        let start = Instant::now();
        limiter.pause_until(&(), start + Duration::from_secs(8));
        limiter.pause_until(&(), start + Duration::from_secs(6));
        limiter.acquire(()).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(8));
    }
}

#[tokio::test(start_paused = true)]
async fn a_pause_past_the_maximum_wait_fails_queued_waiters() {
    let limiter = Limiter::builder(Quota::per_second(1).gcra(1).with_margin(Duration::ZERO))
        .max_wait(Duration::from_secs(3))
        .build();
    limiter.try_acquire(&()).unwrap();
    let waiter = tokio::spawn(limiter.clone().acquire(()));
    until_queued(&limiter, 1).await;
    limiter.pause_until(&(), Instant::now() + Duration::from_secs(60));
    let refused = waiter.await.unwrap().unwrap_err();
    assert_eq!(refused.reason(), Reason::MaxWait);
    assert_eq!(refused.retry_after(), Some(Duration::from_secs(60)));
}

#[tokio::test(start_paused = true)]
async fn set_quota_changes_the_rate_without_a_burst() {
    let limiter = Limiter::new(
        Quota::per_second(100)
            .sliding_window()
            .with_margin(Duration::ZERO),
    );
    for _ in 0..100 {
        limiter.try_acquire(&()).unwrap();
    }
    // Learned from the server: only 10 per second. The 100 recent sends still count.
    limiter.set_quota(
        &(),
        Quota::per_second(10)
            .sliding_window()
            .with_margin(Duration::ZERO),
    );
    assert!(limiter.try_acquire(&()).is_err());
    let start = Instant::now();
    limiter.acquire(()).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    for _ in 0..9 {
        limiter.try_acquire(&()).unwrap();
    }
    assert!(limiter.try_acquire(&()).is_err());
    limiter.set_quota(
        &(),
        Quota::per_second(100)
            .sliding_window()
            .with_margin(Duration::ZERO),
    );
    assert_eq!(limiter.quota(&()).limit(), 100);
    for _ in 0..90 {
        limiter.try_acquire(&()).unwrap();
    }
    assert!(limiter.try_acquire(&()).is_err());
}

#[tokio::test(start_paused = true)]
async fn try_acquire_never_jumps_the_queue() {
    let limiter = Limiter::new(Quota::per_second(2).gcra(1).with_margin(Duration::ZERO));
    limiter.try_acquire(&()).unwrap();
    let waiter = tokio::spawn(limiter.clone().acquire(()));
    until_queued(&limiter, 1).await;
    advance(Duration::from_millis(600)).await;
    // The slot at 500 ms belongs to the queued waiter, not to this late caller.
    // It is granted at 600 ms when it runs, so this caller's turn is 500 ms after that.
    let refused = limiter.try_acquire(&()).unwrap_err();
    assert_eq!(refused.retry_after(), Some(Duration::from_millis(500)));
    waiter.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_freed_slot_wakes_only_the_head_of_the_queue() {
    use tokio_test::{assert_pending, assert_ready_ok, task};

    let limiter = Limiter::new(Quota::per_second(10).gcra(1).with_margin(Duration::ZERO));
    limiter.try_acquire(&()).unwrap();
    let mut waiters: Vec<_> = (0..100).map(|_| task::spawn(limiter.acquire(()))).collect();
    for waiter in &mut waiters {
        assert_pending!(waiter.poll());
    }
    for turn in 0..100 {
        advance(Duration::from_millis(100)).await;
        // Exactly one task is woken per slot: the head. The rest sleep without a timer.
        let woken: Vec<usize> = (turn..100).filter(|&i| waiters[i].is_woken()).collect();
        assert_eq!(woken, vec![turn], "turn {turn}");
        assert_ready_ok!(waiters[turn].poll());
        // Granting the head hands the timer to the next waiter, and only to it.
        let woken: Vec<usize> = (turn + 1..100).filter(|&i| waiters[i].is_woken()).collect();
        let expected: Vec<usize> = (turn + 1..100).take(1).collect();
        assert_eq!(woken, expected, "after turn {turn}");
        if let Some(next) = waiters.get_mut(turn + 1) {
            assert_pending!(next.poll());
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_inner_service_is_driven_to_readiness_before_each_call() {
    // `ConcurrencyLimit` panics when called before `poll_ready` said ready, and its clones start
    // without a permit: every call must wait for the inner service's own readiness.
    let slow = tower::service_fn(|_req: Request<()>| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok::<_, std::convert::Infallible>(http::Response::new(()))
    });
    let inner = tower::limit::ConcurrencyLimitLayer::new(1).layer(slow);
    let limiter = Limiter::new(
        Quota::per_second(1_000)
            .sliding_window()
            .with_margin(Duration::ZERO),
    );
    let service = LimitLayer::new(limiter).layer(inner);
    let start = Instant::now();
    let tasks: Vec<_> = (0..3)
        .map(|_| tokio::spawn(service.clone().oneshot(Request::new(()))))
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    // One at a time, as the inner service demands.
    assert_eq!(start.elapsed(), Duration::from_millis(300));
}
