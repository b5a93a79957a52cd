//! Errors of the retry layer, and [`find`] for a typed error anywhere in a source chain.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use crate::classify::RetryReason;

/// A type-erased error, as tower's `BoxError` (the same type as `pacer_limit::BoxError` and
/// [`pacer_throttle::BoxError`]): what the [`Retry`](crate::Retry) service fails with. Which
/// error it holds when is in the [crate docs](crate#errors).
pub use pacer_throttle::BoxError;

/// The layer's per-attempt timeout (see
/// [`RetryLayer::attempt_timeout`](crate::RetryLayer::attempt_timeout)) cancelled an attempt
/// and the layer did not retry it. After retries, it is the [`source`](StdError::source) of a
/// [`RetriesExhausted`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttemptTimedOut {
    attempt: u32,
    timeout: Duration,
}

impl AttemptTimedOut {
    pub(crate) fn new(attempt: u32, timeout: Duration) -> Self {
        Self { attempt, timeout }
    }

    /// Which attempt timed out, counting from 1 (the first attempt).
    #[must_use]
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The per-attempt timeout it exceeded.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl fmt::Display for AttemptTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "attempt {} did not finish within {:?}",
            self.attempt, self.timeout
        )
    }
}

impl StdError for AttemptTimedOut {}

/// The server answered with a retryable status and asked for a wait (Retry-After, or a reset
/// with nothing remaining) longer than the layer accepts to sleep (see
/// [`RetryLayer::max_server_wait`](crate::RetryLayer::max_server_wait)); the answer is dropped
/// and the request ends with this error. It is the throttle layer's
/// [`WaitTooLong`](pacer_throttle::WaitTooLong), one type for one failure whichever layer saw
/// it ([`cap`](pacer_throttle::WaitTooLong::cap) is the limit,
/// [`attempts`](pacer_throttle::WaitTooLong::attempts) the attempts made).
pub type ServerWaitTooLong = pacer_throttle::WaitTooLong;

/// Why the retry layer stopped retrying a retryable failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GaveUp {
    /// The retry limit ([`RetryLayer::max_retries`](crate::RetryLayer::max_retries)).
    Attempts,
    /// Another attempt would end past the deadline
    /// ([`RetryLayer::max_elapsed`](crate::RetryLayer::max_elapsed) or a
    /// [`Deadline`](crate::Deadline)).
    Deadline,
    /// The retry budget shared by the layer's clones was spent.
    Budget,
    /// The last failure may have reached the server and the request may not be repeated (a
    /// POST without an idempotency mark).
    NotRepeatable,
}

impl GaveUp {
    fn describe(self) -> &'static str {
        match self {
            GaveUp::Attempts => "the retry limit was reached",
            GaveUp::Deadline => "another attempt would end past the deadline",
            GaveUp::Budget => "the retry budget is spent",
            GaveUp::NotRepeatable => "the request may not be repeated",
        }
    }
}

/// The request was retried at least once, and the layer then gave up on a retryable failure.
/// Its [`source`](StdError::source) is the last attempt's error: the inner service's error as
/// it was, or an [`AttemptTimedOut`].
///
/// A request that failed on its first attempt and was not retried fails with that attempt's
/// error unwrapped, and a failure not worth retrying is never wrapped: see
/// the [crate docs](crate#errors) for the whole table, and [`find`] to look for a type in the
/// chain.
#[derive(Debug)]
pub struct RetriesExhausted {
    attempts: u32,
    reason: RetryReason,
    why: GaveUp,
    last: BoxError,
}

impl RetriesExhausted {
    pub(crate) fn new(attempts: u32, reason: RetryReason, why: GaveUp, last: BoxError) -> Self {
        Self {
            attempts,
            reason,
            why,
            last,
        }
    }

    /// Attempts made, the first and the last included (at least 2).
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// What made the last attempt retryable.
    #[must_use]
    pub fn reason(&self) -> RetryReason {
        self.reason
    }

    /// Why the layer stopped.
    #[must_use]
    pub fn why(&self) -> GaveUp {
        self.why
    }

    /// The last attempt's error (also its [`source`](StdError::source)).
    #[must_use]
    pub fn last_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.last
    }

    /// Unwraps the last attempt's error.
    #[must_use]
    pub fn into_last_error(self) -> BoxError {
        self.last
    }
}

impl fmt::Display for RetriesExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The last error is the `source()`, not part of this message: a printer that walks the
        // chain (anyhow's `{:#}`, tracing) shows it once.
        write!(
            f,
            "gave up after {} attempts ({})",
            self.attempts,
            self.why.describe()
        )
    }
}

impl StdError for RetriesExhausted {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.last)
    }
}

/// The first error of type `T` in `error`'s source chain, `error` itself included: e.g. the
/// `std::io::Error` under a [`RetriesExhausted`] and a hyper error, or a `RateLimited` wherever
/// a custom classifier or another layer wrapped it.
///
/// ```
/// # mod pacer { pub mod retry { pub use ::pacer_retry::*; } }
/// use pacer::retry::{find, AttemptTimedOut, BoxError, RetriesExhausted};
///
/// fn timed_out(error: &BoxError) -> bool {
///     find::<AttemptTimedOut>(&**error).is_some()
/// }
/// fn retried(error: &BoxError) -> Option<u32> {
///     find::<RetriesExhausted>(&**error).map(RetriesExhausted::attempts)
/// }
/// let io: BoxError = std::io::Error::from(std::io::ErrorKind::ConnectionReset).into();
/// assert!(find::<std::io::Error>(&*io).is_some());
/// assert!(!timed_out(&io));
/// assert_eq!(retried(&io), None);
/// ```
#[must_use]
pub fn find<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
        }
        current = error.source();
    }
    None
}
