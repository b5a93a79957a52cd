//! The limiter's `tracing` events at its decision points: waited long, refused, paused.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pacer_limit::{Limiter, Quota};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// One recorded event: its level and its fields rendered as `name=value`.
#[derive(Debug, Clone)]
struct Captured {
    level: Level,
    fields: Vec<String>,
}

impl Captured {
    fn has(&self, needle: &str) -> bool {
        self.fields.iter().any(|f| f.contains(needle))
    }
}

/// A minimal subscriber that keeps every event, so tests can assert on them.
#[derive(Clone, Default)]
struct Capture {
    events: Arc<Mutex<Vec<Captured>>>,
}

struct Fields<'a>(&'a mut Vec<String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.push(format!("{}={:?}", field.name(), value));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        let level = *event.metadata().level();
        self.events.lock().unwrap().push(Captured { level, fields });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

impl Capture {
    fn events(&self) -> Vec<Captured> {
        self.events.lock().unwrap().clone()
    }
}

#[tokio::test(start_paused = true)]
async fn long_waits_refusals_and_pauses_are_reported() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());

    let limiter = Limiter::<&'static str>::builder(Quota::per_second(1).gcra(1))
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
