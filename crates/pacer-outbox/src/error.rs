//! Why an enqueue did not store its operation: typed, at the call site, never a silent drop.

use std::fmt;
use std::time::Duration;

/// The error of an enqueue. Nothing was stored; the caller decides what to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum EnqueueError {
    /// The operation would be refused by Customer.io (bad id, attributes over the limits, over
    /// 32 KB…): the same checks as the client's.
    Invalid(pacer_customerio::Error),
    /// The store holds its capacity of undelivered operations (after waiting, if the outbox
    /// was built to wait).
    Full {
        /// The store's capacity.
        capacity: usize,
    },
    /// The store did not answer in time (Redis down or slow) and no fallback was chosen.
    Unavailable {
        /// How long the enqueue waited at most.
        timeout: Duration,
        /// What the store said, if anything.
        reason: String,
    },
    /// The outbox is shutting down and takes nothing more.
    Closed,
}

impl fmt::Display for EnqueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnqueueError::Invalid(error) => write!(f, "not enqueued: {error}"),
            EnqueueError::Full { capacity } => write!(
                f,
                "not enqueued: the outbox holds its capacity of {capacity} undelivered operations"
            ),
            EnqueueError::Unavailable { timeout, reason } => write!(
                f,
                "not enqueued: the store did not answer within {timeout:?} ({reason})"
            ),
            EnqueueError::Closed => f.write_str("not enqueued: the outbox is shutting down"),
        }
    }
}

impl std::error::Error for EnqueueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EnqueueError::Invalid(error) => Some(error),
            _ => None,
        }
    }
}

impl From<pacer_customerio::Error> for EnqueueError {
    fn from(error: pacer_customerio::Error) -> Self {
        EnqueueError::Invalid(error)
    }
}

impl EnqueueError {
    /// The metric label of this error.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            EnqueueError::Invalid(_) => "invalid",
            EnqueueError::Full { .. } => "full",
            EnqueueError::Unavailable { .. } => "unavailable",
            EnqueueError::Closed => "closed",
        }
    }
}
