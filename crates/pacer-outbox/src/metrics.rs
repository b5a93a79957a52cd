//! What the outbox reports through the `metrics` facade (feature `metrics`); without the
//! feature every function here is empty and compiles away. Names are listed in the crate docs.

use std::time::Duration;

/// An operation was stored.
pub(crate) fn enqueued(store: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("pacer_outbox_enqueued_total", "store" => store).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = store;
}

/// An enqueue failed (`reason`: invalid, full, unavailable, closed).
pub(crate) fn enqueue_failed(reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("pacer_outbox_enqueue_failed_total", "reason" => reason).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = reason;
}

/// Customer.io accepted `count` operations.
pub(crate) fn delivered(count: usize) {
    #[cfg(feature = "metrics")]
    metrics::counter!("pacer_outbox_delivered_total").increment(count as u64);
    #[cfg(not(feature = "metrics"))]
    let _ = count;
}

/// `count` operations were dead-lettered.
pub(crate) fn dead(count: usize) {
    #[cfg(feature = "metrics")]
    metrics::counter!("pacer_outbox_dead_total").increment(count as u64);
    #[cfg(not(feature = "metrics"))]
    let _ = count;
}

/// A batch request left with `operations` entries filling `fill` (0 to 1) of 500 KB.
pub(crate) fn batch(operations: usize, fill: f64) {
    #[cfg(feature = "metrics")]
    {
        metrics::histogram!("pacer_outbox_batch_operations").record(operations as f64);
        metrics::histogram!("pacer_outbox_batch_fill").record(fill);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (operations, fill);
}

/// The oldest entry of the batch just packed had waited `lag` since its enqueue.
pub(crate) fn lag(lag: Duration) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("pacer_outbox_oldest_lag_seconds").set(lag.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = lag;
}

/// Operations stored and not yet delivered (this process's view).
pub(crate) fn pending(count: usize) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("pacer_outbox_pending").set(count as f64);
    #[cfg(not(feature = "metrics"))]
    let _ = count;
}
