//! What the limiter reports through the `metrics` facade (feature `metrics`); without the
//! feature every function here is empty and compiles away. Keys are labelled by their `Debug`
//! form. The names are listed in the crate docs.

use std::fmt::Debug;
use std::time::Duration;

/// A request took its slot after waiting `waited` (zero on the fast path).
pub(crate) fn admitted<K: Debug>(key: &K, waited: Duration) {
    #[cfg(feature = "metrics")]
    {
        let key = format!("{key:?}");
        metrics::counter!("pacer_limit_admitted_total", "key" => key.clone()).increment(1);
        metrics::histogram!("pacer_limit_wait_seconds", "key" => key).record(waited.as_secs_f64());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (key, waited);
}

/// A request was refused at once (`reason`: `max_wait` or `queue_full`).
pub(crate) fn refused<K: Debug>(key: &K, reason: crate::Reason) {
    #[cfg(feature = "metrics")]
    {
        let reason = match reason {
            crate::Reason::QueueFull => "queue_full",
            _ => "max_wait",
        };
        metrics::counter!("pacer_limit_refused_total", "key" => format!("{key:?}"), "reason" => reason)
            .increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (key, reason);
}

/// `key`'s queue now holds `waiting` requests.
pub(crate) fn queue_length<K: Debug>(key: &K, waiting: usize) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("pacer_limit_queue_length", "key" => format!("{key:?}")).set(waiting as f64);
    #[cfg(not(feature = "metrics"))]
    let _ = (key, waiting);
}
