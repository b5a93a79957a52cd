//! Errors of the limiter and of the [`RateLimit`](crate::RateLimit) service.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

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

/// The error of the [`RateLimit`](crate::RateLimit) service: refused by the limiter, or an error
/// of the inner service, kept with its type so that layers above can classify it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error<E> {
    /// The limiter refused the request; it was not sent.
    RateLimited(RateLimited),
    /// The inner service failed, in `poll_ready` or in its response future.
    Inner(E),
}

impl<E> Error<E> {
    /// The limiter's refusal, if that is what this is.
    #[must_use]
    pub fn as_rate_limited(&self) -> Option<&RateLimited> {
        match self {
            Error::RateLimited(limited) => Some(limited),
            Error::Inner(_) => None,
        }
    }

    /// The inner service's error, if that is what this is.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Error::Inner(inner) => Some(inner),
            Error::RateLimited(_) => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::RateLimited(limited) => limited.fmt(f),
            Error::Inner(inner) => write!(f, "inner service failed: {inner}"),
        }
    }
}

impl<E: StdError + 'static> StdError for Error<E> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::RateLimited(limited) => Some(limited),
            Error::Inner(inner) => Some(inner),
        }
    }
}

impl<E> From<RateLimited> for Error<E> {
    fn from(limited: RateLimited) -> Self {
        Error::RateLimited(limited)
    }
}
