//! Test helpers shared by the pacer crates: a `tracing` subscriber that records events, so that
//! tests can assert that a layer reports its decisions (waited, throttled, retried, gave up), and
//! a throwaway `redis-server` for the shared-quota tests, a proxy that makes it slow, and a
//! [`HostileServer`] that misbehaves in one chosen way.

mod hostile;
#[cfg(feature = "metrics")]
pub mod metrics;
mod redis_server;
mod slow_proxy;
pub use hostile::{Behaviour, HostileServer};
pub use redis_server::RedisServer;
pub use slow_proxy::SlowProxy;

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// One recorded event: its level and its fields rendered as `name=value`.
#[derive(Debug, Clone)]
pub struct Captured {
    /// The event's level.
    pub level: Level,
    /// Its fields as `name=value`, the message among them.
    pub fields: Vec<String>,
}

impl Captured {
    /// Whether a field contains `needle`.
    #[must_use]
    pub fn has(&self, needle: &str) -> bool {
        self.fields.iter().any(|f| f.contains(needle))
    }
}

/// A minimal subscriber that keeps every event, so tests can assert on them.
#[derive(Clone, Debug, Default)]
pub struct Capture {
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
    /// Every event recorded so far.
    #[must_use]
    pub fn events(&self) -> Vec<Captured> {
        self.events.lock().unwrap().clone()
    }
}

/// Records every event on this thread until the guard is dropped.
#[must_use]
pub fn capture() -> (Capture, tracing::subscriber::DefaultGuard) {
    let capture = Capture::default();
    let guard = tracing::subscriber::set_default(capture.clone());
    (capture, guard)
}

impl Capture {
    /// The events at `level` whose fields contain `needle`.
    #[must_use]
    pub fn find(&self, level: Level, needle: &str) -> Vec<Captured> {
        self.events()
            .into_iter()
            .filter(|event| event.level == level && event.has(needle))
            .collect()
    }
}

/// The most sends found in any half-open window `[t, t + window)`, for any instant type
/// (`std`'s or tokio's).
pub fn max_in_any_window<T>(sends: &[T], window: std::time::Duration) -> usize
where
    T: Ord + Copy + std::ops::Sub<Output = std::time::Duration>,
{
    let mut sorted = sends.to_vec();
    sorted.sort();
    let mut most = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end] - sorted[start] >= window {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}
