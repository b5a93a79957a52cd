//! Errors of the throttle layer.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use http::StatusCode;

/// A type-erased error, as tower's `BoxError` (the same type as [`pacer_limit::BoxError`]): what
/// the [`Throttled`](crate::Throttled) service fails with. It is either a [`WaitTooLong`] or the
/// inner service's error, converted with `Into<BoxError>` and otherwise untouched: downcast it to
/// tell them apart.
pub use pacer_limit::BoxError;

/// The server refused a request and asked for a wait longer than the layer's cap. The key was
/// paused for the cap only, so one lying or misconfigured server cannot stall the process for a
/// day; the request fails rather than look like it could be retried soon.
///
/// The [`Throttled`](crate::Throttled) service returns it boxed in a [`BoxError`]:
/// `error.downcast_ref::<WaitTooLong>()`. `pacer-retry`'s default classifier does not retry it, so it
/// reaches the top of a full stack as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitTooLong {
    pub(crate) status: StatusCode,
    pub(crate) wait: Duration,
    pub(crate) cap: Duration,
    pub(crate) retry_after: Option<String>,
}

impl WaitTooLong {
    /// The status of the refusal (429 or 503, say).
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The wait the server asked for, unclamped (`Retry-After: 99999999999` is 99999999999 s).
    #[must_use]
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// The `Retry-After` value the wait came from, as the server sent it (an HTTP-date stays a
    /// date), when the wait came from one.
    #[must_use]
    pub fn retry_after(&self) -> Option<&str> {
        self.retry_after.as_deref()
    }

    /// The longest pause the layer applies.
    #[must_use]
    pub fn cap(&self) -> Duration {
        self.cap
    }
}

impl fmt::Display for WaitTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "server refused the request ({}) and asked to wait {:?}",
            self.status, self.wait
        )?;
        if let Some(value) = &self.retry_after {
            write!(f, " (Retry-After: {value})")?;
        }
        write!(f, ", beyond the {:?} cap", self.cap)
    }
}

impl StdError for WaitTooLong {}
