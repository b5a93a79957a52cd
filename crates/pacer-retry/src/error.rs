//! Errors of the retry layer.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// The error of the [`Retry`](crate::Retry) service.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error<E> {
    /// The inner service's error from the last attempt, returned as it was when it was not
    /// worth retrying or when retries ran out (attempts, budget or deadline).
    Inner(E),
    /// The last attempt did not finish within the per-attempt timeout.
    TimedOut {
        /// Attempts made, the timed-out one included.
        attempts: u32,
    },
    /// The server asked for a wait longer than the layer accepts to sleep.
    ServerWaitTooLong {
        /// What the server asked for.
        wait: Duration,
        /// The longest wait the layer honours.
        max: Duration,
    },
}

impl<E> Error<E> {
    /// The inner service's error, if that is what this is.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Error::Inner(inner) => Some(inner),
            _ => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Inner(inner) => write!(f, "inner service failed: {inner}"),
            Error::TimedOut { attempts } => {
                write!(f, "attempt {attempts} timed out; gave up")
            }
            Error::ServerWaitTooLong { wait, max } => write!(
                f,
                "server asked to wait {wait:?} before retrying, beyond the {max:?} limit; gave up"
            ),
        }
    }
}

impl<E: StdError + 'static> StdError for Error<E> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Inner(inner) => Some(inner),
            _ => None,
        }
    }
}
