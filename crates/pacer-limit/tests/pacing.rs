//! Paced streams through cloned services, in paused time.

mod common;

use std::time::Duration;

use common::{conforms_to_gcra, max_in_any_window, Recorder};
use http::Request;
use pacer_limit::{LimitLayer, Limiter, Quota};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const REQUESTS: usize = 10_000;
const TASKS: usize = 64;

/// Sends `REQUESTS` requests from `TASKS` tasks, each through its own clone of the service.
async fn run_stream(quota: Quota) -> (Vec<Instant>, Duration, Limiter) {
    run_stream_with(Limiter::new(quota)).await
}

async fn run_stream_with(limiter: Limiter) -> (Vec<Instant>, Duration, Limiter) {
    let recorder = Recorder::default();
    let service = LimitLayer::new(limiter.clone()).layer(recorder.service());
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let service = service.clone();
            tokio::spawn(async move {
                for _ in (task..REQUESTS).step_by(TASKS) {
                    service.clone().oneshot(Request::new(())).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (recorder.sends(), start.elapsed(), limiter)
}

#[tokio::test(start_paused = true)]
async fn sliding_window_stream_never_exceeds_and_takes_ideal_time() {
    let (sends, elapsed, limiter) = run_stream(
        Quota::per_second(100)
            .sliding_window()
            .with_margin(Duration::ZERO),
    )
    .await;
    assert_eq!(sends.len(), REQUESTS);
    assert_eq!(max_in_any_window(&sends, Duration::from_secs(1)), 100);
    // Ideal: 100 at t = 0, then a full window each second: the last hundred at 99 s.
    let ideal = Duration::from_secs(99);
    assert!(elapsed >= ideal, "{elapsed:?}");
    assert!(elapsed <= ideal.mul_f64(1.01), "{elapsed:?}");
    let stats = limiter.stats();
    assert_eq!(stats.acquired, REQUESTS as u64);
    assert_eq!(stats.rejected, 0);
}

#[tokio::test(start_paused = true)]
async fn gcra_burst_one_stream_is_evenly_spaced() {
    let quota = Quota::per_second(100).gcra(1).with_margin(Duration::ZERO);
    let (sends, elapsed, _) = run_stream(quota).await;
    assert_eq!(sends.len(), REQUESTS);
    assert!(conforms_to_gcra(&sends, Duration::from_millis(10), 1));
    assert!(max_in_any_window(&sends, Duration::from_secs(1)) <= 100);
    let ideal = Duration::from_millis(10) * (REQUESTS as u32 - 1);
    assert!(elapsed >= ideal, "{elapsed:?}");
    assert!(elapsed <= ideal.mul_f64(1.01), "{elapsed:?}");
}

#[tokio::test(start_paused = true)]
async fn precise_wakeups_change_nothing_in_paused_time() {
    let quota = Quota::per_second(100).gcra(1).with_margin(Duration::ZERO);
    let limiter = Limiter::builder(quota).precise_wakeups(true).build();
    let (sends, elapsed, _) = run_stream_with(limiter).await;
    assert!(conforms_to_gcra(&sends, Duration::from_millis(10), 1));
    assert_eq!(elapsed, Duration::from_millis(10) * (REQUESTS as u32 - 1));
}

#[tokio::test(start_paused = true)]
async fn gcra_with_burst_allows_the_burst_then_the_rate() {
    let quota = Quota::per_second(100).gcra(20).with_margin(Duration::ZERO);
    let (sends, elapsed, _) = run_stream(quota).await;
    assert!(conforms_to_gcra(&sends, Duration::from_millis(10), 20));
    let first = sends.iter().min().unwrap();
    assert_eq!(sends.iter().filter(|&&s| s == *first).count(), 20);
    let ideal = Duration::from_millis(10) * (REQUESTS as u32 - 20);
    assert!(
        elapsed >= ideal && elapsed <= ideal.mul_f64(1.01),
        "{elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn margin_widens_every_window() {
    let margin = Duration::from_millis(30);
    let quota = Quota::per_second(100).with_margin(margin).sliding_window();
    let recorder = Recorder::default();
    let service = LimitLayer::new(Limiter::new(quota)).layer(recorder.service());
    for _ in 0..1_000 {
        service.clone().oneshot(Request::new(())).await.unwrap();
    }
    let sends = recorder.sends();
    // Even if every send were delayed by up to the margin on the way, no server-side window of
    // one second could hold 101.
    assert_eq!(
        max_in_any_window(&sends, Duration::from_secs(1) + margin),
        100
    );
}
