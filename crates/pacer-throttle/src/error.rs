//! Errors of the throttle layer.

use std::error::Error as StdError;
use std::fmt;
use std::time::{Duration, SystemTime};

use http::StatusCode;
use pacer_limit::Cap;

/// A type-erased error, as tower's `BoxError` (the same type as [`pacer_limit::BoxError`]): what
/// the [`Throttled`](crate::Throttled) service fails with. It is either a [`WaitTooLong`] or the
/// inner service's error, converted with `Into<BoxError>` and otherwise untouched: downcast it to
/// tell them apart.
pub use pacer_limit::BoxError;

/// The server refused a request and asked for a wait longer than the stack's cap: the one
/// error for it, whichever layer saw it first. The throttle layer pauses the key for the cap
/// only (so one lying or misconfigured server cannot stall the process for a day) and fails the
/// request rather than let it look like it could be retried soon; `pacer-retry`'s layer, over
/// an answer the throttle did not judge, gives up with the same error.
///
/// A refusal without a wait while one of the key's [`Cap`]s is spent by the limiter's own count
/// (Customer.io's daily quota answers 429 without `Retry-After`) is this error too, when the
/// cap frees beyond the stack's cap: [`spent_cap`](Self::spent_cap) says which window and
/// [`frees_at`](Self::frees_at) when, and the message says so ("quota of 50000 per 86400s
/// spent … frees at …") rather than a generic retry exhaustion.
///
/// The services return it boxed in a [`BoxError`]: `error.downcast_ref::<WaitTooLong>()`.
/// `pacer-retry`'s default classifier does not retry it, so it reaches the top of a full stack
/// as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitTooLong {
    status: StatusCode,
    wait: Duration,
    cap: Duration,
    retry_after: Option<String>,
    attempts: u32,
    spent: Option<(Cap, SystemTime)>,
}

impl WaitTooLong {
    /// The server answered `status` and asked for `wait` (unclamped), beyond `cap`, on the
    /// first attempt.
    #[must_use]
    pub fn new(status: StatusCode, wait: Duration, cap: Duration) -> Self {
        Self {
            status,
            wait,
            cap,
            retry_after: None,
            attempts: 1,
            spent: None,
        }
    }

    /// The `Retry-After` value as the server sent it, when the wait came from one.
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Option<String>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// The wait is for `cap` of the key's quota, spent by the limiter's own count, to free at
    /// `frees_at` (the server refused without saying how long).
    #[must_use]
    pub fn with_spent_cap(mut self, cap: Cap, frees_at: SystemTime) -> Self {
        self.spent = Some((cap, frees_at));
        self
    }

    /// The window of the key's quota that is spent, when the wait is for it to free.
    #[must_use]
    pub fn spent_cap(&self) -> Option<Cap> {
        self.spent.map(|(cap, _)| cap)
    }

    /// When the [spent cap](Self::spent_cap) frees, on the wall clock.
    #[must_use]
    pub fn frees_at(&self) -> Option<SystemTime> {
        self.spent.map(|(_, at)| at)
    }

    /// The attempts made, the last one included (a retry layer gave up after them).
    #[must_use]
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// Attempts made, the last one included (1 when the throttle layer failed the request).
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

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

    /// The longest wait the stack honours (the throttle's `max_pause`, the retry layer's
    /// `max_server_wait`; the Customer.io client's builder sets both with `max_server_wait`).
    #[must_use]
    pub fn cap(&self) -> Duration {
        self.cap
    }
}

impl fmt::Display for WaitTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((cap, frees_at)) = &self.spent {
            write!(
                f,
                "server refused the request ({}) without a wait, and the limiter counts the quota of {} per {:?} spent: it frees in {:?}, at {}",
                self.status,
                cap.limit(),
                cap.window(),
                self.wait,
                httpdate::fmt_http_date(*frees_at)
            )?;
        } else {
            write!(
                f,
                "server refused the request ({}) and asked to wait {:?}",
                self.status, self.wait
            )?;
        }
        if let Some(value) = &self.retry_after {
            write!(f, " (Retry-After: {value})")?;
        }
        write!(f, ", beyond the {:?} cap", self.cap)?;
        if self.attempts > 1 {
            write!(f, "; gave up after {} attempts", self.attempts)?;
        }
        Ok(())
    }
}

impl StdError for WaitTooLong {}
