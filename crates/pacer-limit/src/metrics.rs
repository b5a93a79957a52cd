//! What the limiter reports through the `metrics` facade (feature `metrics`); without the
//! feature every function here is empty and compiles away. Keys are labelled by their `Debug`
//! form. The names are listed in the crate docs.

use std::fmt::Debug;
use std::time::Duration;

use crate::priority::Priority;

/// A request of `lane` took its slot after waiting `waited` (zero on the fast path).
pub(crate) fn admitted<K: Debug>(key: &K, lane: Priority, waited: Duration) {
    #[cfg(feature = "metrics")]
    {
        let key = format!("{key:?}");
        let lane = lane.as_str();
        metrics::counter!("pacer_limit_admitted_total", "key" => key.clone(), "priority" => lane)
            .increment(1);
        metrics::histogram!("pacer_limit_wait_seconds", "key" => key, "priority" => lane)
            .record(waited.as_secs_f64());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (key, lane, waited);
}

/// A request of `lane` was refused at once (`reason`: `max_wait` or `queue_full`).
pub(crate) fn refused<K: Debug>(key: &K, lane: Priority, reason: crate::Reason) {
    #[cfg(feature = "metrics")]
    {
        let reason = match reason {
            crate::Reason::QueueFull => "queue_full",
            _ => "max_wait",
        };
        metrics::counter!("pacer_limit_refused_total", "key" => format!("{key:?}"), "priority" => lane.as_str(), "reason" => reason)
            .increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (key, lane, reason);
}

/// `key`'s `lane` now holds `waiting` requests.
pub(crate) fn queue_length<K: Debug>(key: &K, lane: Priority, waiting: usize) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("pacer_limit_queue_length", "key" => format!("{key:?}"), "priority" => lane.as_str())
        .set(waiting as f64);
    #[cfg(not(feature = "metrics"))]
    let _ = (key, lane, waiting);
}
