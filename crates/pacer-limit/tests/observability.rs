//! The limiter's `tracing` events at its decision points: waited long, refused, paused.

use std::time::Duration;

use pacer_limit::{Limiter, Quota};
use pacer_testkit::capture;
use tracing::Level;

#[tokio::test(start_paused = true)]
async fn long_waits_refusals_and_pauses_are_reported() {
    let (capture, _guard) = capture();

    let limiter =
        Limiter::<&'static str>::builder(Quota::per_second(1).gcra(1).with_margin(Duration::ZERO))
            .log_wait_over(Duration::from_millis(500))
            .max_queue(1)
            .build();
    limiter.acquire("track").await.unwrap();
    // Waits one second, over the 500 ms threshold: one INFO event naming the key.
    let waiter = tokio::spawn(limiter.clone().acquire("track"));
    while limiter.queue_len(&"track") == 0 {
        tokio::task::yield_now().await;
    }
    // The queue bound is 1: this one is refused at once.
    assert!(limiter.acquire("track").await.is_err());
    waiter.await.unwrap().unwrap();
    limiter.pause_until(
        &"track",
        tokio::time::Instant::now() + Duration::from_secs(30),
    );

    let events = capture.events();
    let waited: Vec<_> = events
        .iter()
        .filter(|e| e.has("waited for a rate-limit slot"))
        .collect();
    assert_eq!(waited.len(), 1, "{events:?}");
    assert_eq!(waited[0].level, Level::INFO);
    assert!(
        waited[0].has("key=\"track\"") && waited[0].has("waited=1s"),
        "{waited:?}"
    );

    let refused: Vec<_> = events
        .iter()
        .filter(|e| e.has("refused by the rate limiter"))
        .collect();
    assert_eq!(refused.len(), 1, "{events:?}");
    assert!(refused[0].has("reason=QueueFull"), "{refused:?}");

    let paused: Vec<_> = events
        .iter()
        .filter(|e| e.has("limiter key paused"))
        .collect();
    assert_eq!(paused.len(), 1, "{events:?}");
    assert!(paused[0].has("pause=30s"), "{paused:?}");
}
