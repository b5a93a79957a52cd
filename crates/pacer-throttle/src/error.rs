//! Errors of the throttle layer.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use http::StatusCode;

/// The server refused a request and asked for a wait longer than the layer's cap. The key was
/// paused for the cap only, so one lying or misconfigured server cannot stall the process for a
/// day; the request fails rather than look like it could be retried soon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitTooLong {
    pub(crate) status: StatusCode,
    pub(crate) wait: Duration,
    pub(crate) cap: Duration,
}

impl WaitTooLong {
    /// The status of the refusal (429 or 503, say).
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The wait the server asked for.
    #[must_use]
    pub fn wait(&self) -> Duration {
        self.wait
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
            "server refused the request ({}) and asked to wait {:?}, beyond the {:?} cap",
            self.status, self.wait, self.cap
        )
    }
}

impl StdError for WaitTooLong {}

/// The error of the [`Throttled`](crate::Throttled) service.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error<E> {
    /// The server asked for a wait beyond the cap.
    WaitTooLong(WaitTooLong),
    /// The inner service failed.
    Inner(E),
}

impl<E> Error<E> {
    /// The inner service's error, if that is what this is.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Error::Inner(inner) => Some(inner),
            Error::WaitTooLong(_) => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::WaitTooLong(too_long) => too_long.fmt(f),
            Error::Inner(inner) => write!(f, "inner service failed: {inner}"),
        }
    }
}

impl<E: StdError + 'static> StdError for Error<E> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::WaitTooLong(too_long) => Some(too_long),
            Error::Inner(inner) => Some(inner),
        }
    }
}
