//! What the shared limiter reports through the `metrics` facade (feature `metrics`); without
//! the feature every function here is empty and compiles away.

/// Redis became unreachable or slow: the limiter paces on its local fallback.
pub(crate) fn redis_fallback() {
    #[cfg(feature = "metrics")]
    metrics::counter!("pacer_limit_redis_fallbacks_total").increment(1);
}
