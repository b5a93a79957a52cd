//! What the retry layer reports through the `metrics` facade (feature `metrics`); without the
//! feature every function here is empty and compiles away.

use crate::classify::RetryReason;

/// The label of a retry reason: the status code (`429`, `503`, …), `connection`, `refused` or
/// `timeout`.
#[cfg(feature = "metrics")]
fn label(reason: &RetryReason) -> String {
    match reason {
        RetryReason::Status(status) => status.as_str().to_owned(),
        RetryReason::Connection => "connection".to_owned(),
        RetryReason::Refused => "refused".to_owned(),
        RetryReason::Timeout => "timeout".to_owned(),
    }
}

/// A retry is on its way, for `reason`.
pub(crate) fn retry(reason: &RetryReason) {
    #[cfg(feature = "metrics")]
    metrics::counter!("pacer_retry_retries_total", "reason" => label(reason)).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = reason;
}

/// The layer gave up on a retryable failure: `why` is `exhausted`, `budget`, `deadline`,
/// `server_wait` or `not_repeatable`.
pub(crate) fn gave_up(why: &'static str, reason: &RetryReason) {
    #[cfg(feature = "metrics")]
    metrics::counter!("pacer_retry_gave_up_total", "why" => why, "reason" => label(reason))
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (why, reason);
}
