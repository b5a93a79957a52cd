//! What the throttle layer reports through the `metrics` facade (feature `metrics`); without
//! the feature every function here is empty and compiles away. Keys are labelled by their
//! `Debug` form.

use std::fmt::Debug;

use http::StatusCode;

/// The server refused a request of `key` with `status`.
pub(crate) fn refusal<K: Debug>(key: &K, status: StatusCode) {
    #[cfg(feature = "metrics")]
    metrics::counter!(
        "pacer_throttle_refusals_total",
        "key" => format!("{key:?}"),
        "status" => status.as_str().to_owned()
    )
    .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (key, status);
}

/// `key` was paused for a server's wait (Retry-After, or a reset with nothing remaining).
pub(crate) fn pause<K: Debug>(key: &K) {
    #[cfg(feature = "metrics")]
    metrics::counter!("pacer_throttle_pauses_total", "key" => format!("{key:?}")).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = key;
}

/// `key` is now paced at `per_second` (learned, or back at its configured quota).
pub(crate) fn rate<K: Debug>(key: &K, per_second: f64) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("pacer_throttle_rate_per_second", "key" => format!("{key:?}")).set(per_second);
    #[cfg(not(feature = "metrics"))]
    let _ = (key, per_second);
}

/// A server's wait for `key` (in an answer with `status`) was beyond the cap, so the pause was
/// cut to the cap.
pub(crate) fn capped<K: Debug>(key: &K, status: StatusCode) {
    #[cfg(feature = "metrics")]
    metrics::counter!(
        "pacer_throttle_pauses_capped_total",
        "key" => format!("{key:?}"),
        "status" => status.as_str().to_owned()
    )
    .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (key, status);
}
