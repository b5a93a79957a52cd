//! Priority lanes on one key: order by lane then FIFO, the lower lanes' minimum share,
//! cancellation in each lane, the maximum wait per lane, and the lane from a request extension.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use common::{conforms_to_gcra, Recorder};
use http::Request;
use pacer_limit::{LimitLayer, Limiter, Priority, Quota, Reason};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

/// 10 per second, 100 ms apart exactly.
fn quota() -> Quota {
    Quota::per_second(10).gcra(1).with_margin(Duration::ZERO)
}

/// Yields until `n` requests are queued on the key.
async fn until_queued(limiter: &Limiter, n: usize) {
    for _ in 0..10_000 {
        if limiter.queue_len(&()) >= n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("{n} waiters never queued");
}

type Grants = Arc<Mutex<Vec<(Priority, usize)>>>;

/// Starts a waiter of `lane` tagged `tag` that records its grant; it has asked for its slot
/// (and queued, unless granted at once) before this returns.
async fn queue(limiter: &Limiter, grants: &Grants, lane: Priority, tag: usize) -> JoinHandle<()> {
    let asked = Arc::new(AtomicBool::new(false));
    let (waiter, grants, flag) = (limiter.clone(), Arc::clone(grants), Arc::clone(&asked));
    let task = tokio::spawn(async move {
        let mut acquire = std::pin::pin!(waiter.acquire_with_priority((), lane));
        let first = std::future::poll_fn(|cx| Poll::Ready(acquire.as_mut().poll(cx))).await;
        flag.store(true, Ordering::SeqCst);
        match first {
            Poll::Ready(result) => result.unwrap(),
            Poll::Pending => acquire.await.unwrap(),
        }
        grants.lock().unwrap().push((lane, tag));
    });
    for _ in 0..10_000 {
        if asked.load(Ordering::SeqCst) {
            return task;
        }
        tokio::task::yield_now().await;
    }
    panic!("the waiter never asked for its slot");
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_by_lane_then_in_arrival_order() {
    // Strict priority (no share) to see the order alone.
    let limiter = Limiter::builder(quota()).min_share(0.0).build();
    limiter.try_acquire(&()).unwrap();
    let grants = Grants::default();
    let arrivals = [
        Priority::Bulk,
        Priority::Normal,
        Priority::Bulk,
        Priority::Interactive,
        Priority::Normal,
        Priority::Interactive,
        Priority::Bulk,
    ];
    let mut tasks = Vec::new();
    for (tag, lane) in arrivals.into_iter().enumerate() {
        tasks.push(queue(&limiter, &grants, lane, tag).await);
    }
    for task in tasks {
        task.await.unwrap();
    }
    let order: Vec<usize> = grants.lock().unwrap().iter().map(|g| g.1).collect();
    assert_eq!(order, [3, 5, 1, 4, 0, 2, 6]);
}

#[tokio::test(start_paused = true)]
async fn an_interactive_request_overtakes_a_bulk_backlog_within_one_slot() {
    let limiter = Limiter::new(quota());
    limiter.try_acquire(&()).unwrap();
    let grants = Grants::default();
    let mut backlog = Vec::new();
    for tag in 0..100 {
        backlog.push(queue(&limiter, &grants, Priority::Bulk, tag).await);
    }
    tokio::time::sleep(Duration::from_millis(1_030)).await;
    // Ten bulk sends went out (at 100 ms, ..., 1,000 ms); the next slot is at 1,100 ms.
    let start = Instant::now();
    limiter
        .acquire_with_priority((), Priority::Interactive)
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(70));
    assert_eq!(grants.lock().unwrap().len(), 10);
    for task in backlog {
        task.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn a_bulk_lane_keeps_its_minimum_share_under_constant_interactive_load() {
    let limiter = Limiter::builder(quota()).min_share(0.1).build();
    limiter.try_acquire(&()).unwrap();
    let grants = Grants::default();
    let mut tasks = Vec::new();
    for tag in 0..100 {
        tasks.push(queue(&limiter, &grants, Priority::Bulk, tag).await);
    }
    // Interactive traffic that never lets up: always 20 queued, refilled as they leave.
    let mut interactive = Vec::new();
    for tag in 0..20 {
        interactive.push(queue(&limiter, &grants, Priority::Interactive, tag).await);
    }
    let mut next_tag = 20;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        interactive.retain(|task| !task.is_finished());
        while interactive.len() < 20 {
            interactive.push(queue(&limiter, &grants, Priority::Interactive, next_tag).await);
            next_tag += 1;
        }
    }
    let grants = grants.lock().unwrap().clone();
    let bulk = grants.iter().filter(|g| g.0 == Priority::Bulk).count();
    // 200 slots passed with both lanes waiting the whole time: at least 10 % went to bulk,
    // and bulk went in its own arrival order.
    assert!(grants.len() >= 199, "{} grants", grants.len());
    assert!(
        bulk * 10 >= grants.len(),
        "bulk got {bulk} of {}",
        grants.len()
    );
    let bulk_order: Vec<usize> = grants
        .iter()
        .filter(|g| g.0 == Priority::Bulk)
        .map(|g| g.1)
        .collect();
    assert_eq!(bulk_order, (0..bulk).collect::<Vec<_>>());
    // And not much more than its share: interactive traffic still comes first.
    assert!(
        bulk * 10 <= grants.len() + 10,
        "bulk got {bulk} of {}",
        grants.len()
    );
    for task in tasks.into_iter().chain(interactive) {
        task.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn a_normal_lane_keeps_its_share_and_bulk_still_gets_through() {
    let limiter = Limiter::builder(quota()).min_share(0.2).build();
    limiter.try_acquire(&()).unwrap();
    let grants = Grants::default();
    let mut tasks = Vec::new();
    for tag in 0..30 {
        tasks.push(queue(&limiter, &grants, Priority::Bulk, tag).await);
        tasks.push(queue(&limiter, &grants, Priority::Normal, tag).await);
        tasks.push(queue(&limiter, &grants, Priority::Interactive, tag).await);
    }
    tokio::time::sleep(Duration::from_millis(3_050)).await;
    // The first 30 slots, interactive waiting the whole time: each lower lane got its 20 %.
    let grants = grants.lock().unwrap().clone();
    let count = |lane| grants.iter().filter(|g| g.0 == lane).count();
    assert_eq!(grants.len(), 30);
    assert!(count(Priority::Normal) >= 5, "{grants:?}");
    assert!(count(Priority::Bulk) >= 5, "{grants:?}");
    assert!(count(Priority::Interactive) >= 15, "{grants:?}");
    for task in tasks {
        task.abort();
    }
}

/// Cancels waiters of `lane` (the key's head among them) in a queue of every lane: nobody is
/// stranded, and the remaining waiters use every slot.
async fn cancellation_in(lane: Priority) {
    let limiter = Limiter::builder(quota()).min_share(0.0).build();
    limiter.try_acquire(&()).unwrap();
    let start = Instant::now();
    let grants = Grants::default();
    let mut kept = Vec::new();
    let mut cancelled = Vec::new();
    for tag in 0..4 {
        for each in Priority::ALL {
            let task = queue(&limiter, &grants, each, tag).await;
            if each == lane && tag % 2 == 0 {
                cancelled.push(task);
            } else {
                kept.push(task);
            }
        }
    }
    // Half of the lane leaves, its first waiter (the head, when the lane leads) among them,
    // while the head sleeps on the key's timer.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for task in &cancelled {
        task.abort();
    }
    for task in kept {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("a waiter was stranded")
            .unwrap();
    }
    // Ten waiters are left: they take the slots at 100, 200, ..., 1,000 ms.
    assert_eq!(start.elapsed(), Duration::from_millis(1_000));
    assert_eq!(limiter.queue_len(&()), 0);
    assert_eq!(limiter.stats().cancelled, 2);
    let lane_order: Vec<usize> = grants
        .lock()
        .unwrap()
        .iter()
        .filter(|g| g.0 == lane)
        .map(|g| g.1)
        .collect();
    assert_eq!(lane_order, [1, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_interactive_waiter_strands_nobody() {
    cancellation_in(Priority::Interactive).await;
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_normal_waiter_strands_nobody() {
    cancellation_in(Priority::Normal).await;
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_bulk_waiter_strands_nobody() {
    cancellation_in(Priority::Bulk).await;
}

#[tokio::test(start_paused = true)]
async fn a_displaced_bulk_head_takes_its_turn_after_the_interactive_newcomer() {
    let limiter = Limiter::builder(quota()).min_share(0.0).build();
    limiter.try_acquire(&()).unwrap();
    let start = Instant::now();
    let grants = Grants::default();
    let bulk = queue(&limiter, &grants, Priority::Bulk, 0).await;
    tokio::time::sleep(Duration::from_millis(40)).await;
    let interactive = queue(&limiter, &grants, Priority::Interactive, 1).await;
    interactive.await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    bulk.await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    let order: Vec<usize> = grants.lock().unwrap().iter().map(|g| g.1).collect();
    assert_eq!(order, [1, 0]);
}

#[tokio::test(start_paused = true)]
async fn the_maximum_wait_applies_per_lane() {
    let limiter = Limiter::builder(quota())
        .max_wait_in(Priority::Interactive, Some(Duration::from_millis(250)))
        .build();
    limiter.try_acquire(&()).unwrap();
    let grants = Grants::default();
    // A long bulk backlog queues: its lane has no maximum wait.
    let mut backlog = Vec::new();
    for tag in 0..50 {
        backlog.push(queue(&limiter, &grants, Priority::Bulk, tag).await);
    }
    // Interactive requests wait behind each other only: turns at 100 and 200 ms queue,
    // the third (300 ms) is refused at once.
    let first = queue(&limiter, &grants, Priority::Interactive, 0).await;
    let second = queue(&limiter, &grants, Priority::Interactive, 1).await;
    let refused = limiter
        .acquire_with_priority((), Priority::Interactive)
        .await
        .unwrap_err();
    assert_eq!(refused.reason(), Reason::MaxWait);
    assert_eq!(refused.retry_after(), Some(Duration::from_millis(300)));
    // A pause pushes queued interactive waiters past their maximum: they are refused, while
    // the bulk lane keeps waiting.
    limiter.pause_until(&(), Instant::now() + Duration::from_secs(1));
    let (first, second) = (first.await, second.await);
    assert!(first.unwrap_err().is_panic() && second.unwrap_err().is_panic());
    assert_eq!(limiter.stats().rejected, 3);
    assert_eq!(limiter.queue_stats(&()).lane(Priority::Bulk).waiting, 50);
    for task in backlog {
        task.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn the_limited_service_reads_the_priority_extension() {
    let limiter = Limiter::builder(quota()).min_share(0.0).build();
    limiter.try_acquire(&()).unwrap();
    let recorder = Recorder::default();
    let service = LimitLayer::new(limiter.clone()).layer(recorder.service());
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (tag, lane) in [None, Some(Priority::Bulk), Some(Priority::Interactive)]
        .into_iter()
        .enumerate()
    {
        let mut request = Request::new(());
        if let Some(lane) = lane {
            request.extensions_mut().insert(lane);
        }
        let (service, order) = (service.clone(), Arc::clone(&order));
        let queued = limiter.queue_len(&());
        tasks.push(tokio::spawn(async move {
            service.oneshot(request).await.unwrap();
            order.lock().unwrap().push(tag);
        }));
        until_queued(&limiter, queued + 1).await;
    }
    let stats = limiter.queue_stats(&());
    assert_eq!(stats.waiting, 3);
    for lane in Priority::ALL {
        assert_eq!(stats.lane(lane).waiting, 1, "{lane:?}");
    }
    // A newcomer's wait by lane: interactive behind one, normal behind two, bulk behind three.
    assert_eq!(
        stats.lane(Priority::Interactive).estimated_wait,
        Duration::from_millis(200)
    );
    assert_eq!(
        stats.lane(Priority::Normal).estimated_wait,
        Duration::from_millis(300)
    );
    assert_eq!(
        stats.lane(Priority::Bulk).estimated_wait,
        Duration::from_millis(400)
    );
    for task in tasks {
        task.await.unwrap();
    }
    // No extension: the normal lane, between interactive and bulk.
    assert_eq!(*order.lock().unwrap(), [2, 0, 1]);
    assert!(conforms_to_gcra(
        &recorder.sends(),
        Duration::from_millis(100),
        1
    ));
}

#[tokio::test(start_paused = true)]
async fn a_displaced_head_is_woken_to_drop_its_timer() {
    let limiter = Limiter::builder(quota()).min_share(0.0).build();
    limiter.try_acquire(&()).unwrap();
    let mut bulk = tokio_test::task::spawn(limiter.acquire_with_priority((), Priority::Bulk));
    assert!(bulk.poll().is_pending());
    assert!(!bulk.is_woken());
    // The interactive newcomer leads now: the bulk waiter is told, polls, and goes back to
    // waiting without a timer (only the head holds one).
    let mut interactive =
        tokio_test::task::spawn(limiter.acquire_with_priority((), Priority::Interactive));
    assert!(interactive.poll().is_pending());
    assert!(bulk.is_woken());
    assert!(bulk.poll().is_pending());
    // At the slot, only the head wakes and takes it; the bulk waiter is woken once it leads.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(interactive.is_woken());
    assert!(!bulk.is_woken());
    assert!(interactive.poll().is_ready());
    assert!(bulk.is_woken());
    assert!(bulk.poll().is_pending());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(bulk.poll().is_ready());
}

#[tokio::test(start_paused = true)]
async fn after_a_pause_the_lanes_leave_evenly_spaced_most_urgent_first() {
    let limiter = Limiter::builder(quota()).min_share(0.0).build();
    let start = Instant::now();
    limiter.pause_until(&(), start + Duration::from_secs(1));
    let grants = Grants::default();
    let mut tasks = Vec::new();
    for tag in 0..3 {
        tasks.push(queue(&limiter, &grants, Priority::Bulk, tag).await);
        tasks.push(queue(&limiter, &grants, Priority::Interactive, tag).await);
    }
    for task in tasks {
        task.await.unwrap();
    }
    // One per interval from the pause's end, never in a herd: the last at 1,500 ms.
    assert_eq!(start.elapsed(), Duration::from_millis(1_500));
    let order: Vec<(Priority, usize)> = grants.lock().unwrap().clone();
    assert_eq!(
        order,
        [
            (Priority::Interactive, 0),
            (Priority::Interactive, 1),
            (Priority::Interactive, 2),
            (Priority::Bulk, 0),
            (Priority::Bulk, 1),
            (Priority::Bulk, 2),
        ]
    );
}
