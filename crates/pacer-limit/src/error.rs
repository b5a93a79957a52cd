//! Errors of the limiter and of the [`Limited`](crate::Limited) service.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// A type-erased error, as tower's `BoxError`: what the [`Limited`](crate::Limited) service
/// fails with, as tower's own middleware (`Buffer`, `Timeout`, `LoadShed`) do. It is either the
/// limiter's refusal, a [`RateLimited`], or the inner service's error converted with
/// `Into<BoxError>` and otherwise untouched. Tell them apart by downcasting:
///
/// ```
/// # mod pacer { pub mod limit { pub use ::pacer_limit::*; } }
/// # use pacer::limit::{BoxError, RateLimited};
/// fn describe(error: &BoxError) -> String {
///     match error.downcast_ref::<RateLimited>() {
///         Some(limited) => format!("not sent, try again in {:?}", limited.retry_after()),
///         None => format!("the service failed: {error}"),
///     }
/// }
/// ```
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a request was refused without being sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// Its turn would come later than the configured maximum wait.
    MaxWait,
    /// The key's queue of waiters is at its configured bound.
    QueueFull,
}

/// A request was refused by the client-side limiter instead of queueing: sending it now would
/// exceed the quota, and waiting for its turn is not allowed (see
/// [`LimiterBuilder::max_wait`](crate::LimiterBuilder::max_wait) and
/// [`LimiterBuilder::max_queue`](crate::LimiterBuilder::max_queue)).
///
/// Returned by [`Limiter::acquire`](crate::Limiter::acquire) as is, and by the
/// [`Limited`](crate::Limited) service boxed in a [`BoxError`]:
/// `error.downcast_ref::<RateLimited>()`. The request was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimited {
    retry_after: Option<Duration>,
    reason: Reason,
}

impl RateLimited {
    pub(crate) fn new(reason: Reason, retry_after: Option<Duration>) -> Self {
        Self {
            retry_after,
            reason,
        }
    }

    /// How long from now the request would have had to wait, when known: a hint, not a promise,
    /// since other callers may take the slot first.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Why the request was refused.
    #[must_use]
    pub fn reason(&self) -> Reason {
        self.reason
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.reason {
            Reason::MaxWait => "its turn is later than the maximum wait",
            Reason::QueueFull => "the queue of waiting requests is full",
        };
        write!(f, "rate limited by the client: {why}")?;
        if let Some(after) = self.retry_after {
            write!(f, " (next slot in {after:?})")?;
        }
        Ok(())
    }
}

impl StdError for RateLimited {}
