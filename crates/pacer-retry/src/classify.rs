//! Which results are worth another attempt.

use std::error::Error as StdError;
use std::io;

use http::{Response, StatusCode};

/// Why an attempt is worth repeating.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryReason {
    /// The server answered with a retryable status (429, 408, 500, 502, 503, 504 by default).
    Status(StatusCode),
    /// The connection broke or closed early: the server may have processed the request.
    Connection,
    /// The connection could not be made, or hyper canceled the request before writing any of
    /// it: the request never reached the server.
    Refused,
    /// The attempt timed out.
    Timeout,
}

impl RetryReason {
    /// Whether the server certainly did not process the request: a 429 (refused by the rate
    /// limit) or a connection that was never made. Such failures are retried even for requests
    /// that may not be repeated (a POST without an idempotency mark): nothing happened yet.
    #[must_use]
    pub fn request_not_processed(&self) -> bool {
        matches!(
            self,
            RetryReason::Status(StatusCode::TOO_MANY_REQUESTS) | RetryReason::Refused
        )
    }
}

/// Decides whether a result is worth another attempt. Implemented by [`DefaultClassifier`] and
/// by any `Fn(&Result<Response<B>, E>) -> Option<RetryReason>`. The [`Retry`](crate::Retry)
/// service classifies its attempts with `E` = [`BoxError`](crate::BoxError).
pub trait Classify<B, E> {
    /// `Some(reason)` to retry (when the request may be repeated), `None` to return the result.
    fn classify(&self, result: &Result<Response<B>, E>) -> Option<RetryReason>;
}

impl<B, E, F> Classify<B, E> for F
where
    F: Fn(&Result<Response<B>, E>) -> Option<RetryReason>,
{
    fn classify(&self, result: &Result<Response<B>, E>) -> Option<RetryReason> {
        self(result)
    }
}

/// Retries 429, 408, 500, 502, 503 and 504, and the transport failures [`classify_error`]
/// finds in an error's source chain. Never other 4xx, and never body or decoding errors:
/// repeating those changes nothing.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct DefaultClassifier;

impl DefaultClassifier {
    /// The statuses retried by default.
    pub const STATUSES: [StatusCode; 6] = [
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::REQUEST_TIMEOUT,
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::BAD_GATEWAY,
        StatusCode::SERVICE_UNAVAILABLE,
        StatusCode::GATEWAY_TIMEOUT,
    ];
}

impl<B> Classify<B, crate::BoxError> for DefaultClassifier {
    fn classify(&self, result: &Result<Response<B>, crate::BoxError>) -> Option<RetryReason> {
        match result {
            Ok(response) => {
                let status = response.status();
                Self::STATUSES
                    .contains(&status)
                    .then_some(RetryReason::Status(status))
            }
            Err(error) => classify_error(&**error),
        }
    }
}

/// Walks `error`'s source chain for a transient transport failure, recognised by type (never
/// by its text), the first error of the chain that says anything deciding:
///
/// | in the chain | reason |
/// | --- | --- |
/// | [`io::Error`] `TimedOut` / `ConnectionRefused` / `ConnectionReset`, `ConnectionAborted`, `NotConnected`, `BrokenPipe`, `UnexpectedEof` (any other kind: not retried) | `Timeout` / `Refused` / `Connection` |
/// | `tokio::time::error::Elapsed` | `Timeout` |
/// | `reqwest::Error` with `is_timeout()` / `is_connect()` (feature `reqwest`) | `Timeout` / as a connect error |
/// | `hyper_util::client::legacy::Error` with `is_connect()` (feature `hyper`) | the cause's reason, else `Refused` |
/// | `hyper::Error` with `is_timeout()` / `is_incomplete_message()` / `is_canceled()` / `is_closed()` (feature `hyper`) | `Timeout` / `Connection` / `Refused` / `Connection` |
///
/// A canceled hyper request is one hyper never started writing (its connection closed or was
/// not ready), so it counts as not processed; a closed channel may be mid-request, so it
/// counts as a broken connection. Any other error is looked through to its source.
pub fn classify_error(error: &(dyn StdError + 'static)) -> Option<RetryReason> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(verdict) = verdict_of(error) {
            return verdict;
        }
        current = error.source();
    }
    None
}

/// What one error of a chain decides: `Some(verdict)` ends the walk (`Some(None)`: not worth
/// another attempt), `None` looks at its source.
fn verdict_of(error: &(dyn StdError + 'static)) -> Option<Option<RetryReason>> {
    if let Some(io) = error.downcast_ref::<io::Error>() {
        return Some(io_reason(io));
    }
    if error.is::<tokio::time::error::Elapsed>() {
        return Some(Some(RetryReason::Timeout));
    }
    #[cfg(feature = "reqwest")]
    if let Some(reason) = reqwest_reason(error) {
        return Some(Some(reason));
    }
    #[cfg(feature = "hyper")]
    if let Some(reason) = hyper_reason(error) {
        return Some(Some(reason));
    }
    None
}

fn io_reason(error: &io::Error) -> Option<RetryReason> {
    match error.kind() {
        io::ErrorKind::TimedOut => Some(RetryReason::Timeout),
        io::ErrorKind::ConnectionRefused => Some(RetryReason::Refused),
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::NotConnected
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => Some(RetryReason::Connection),
        _ => None,
    }
}

/// A connection that could not be made: its cause may say more (a timeout, say); without one
/// that does, the request never left, so it is refused.
#[cfg(any(feature = "hyper", feature = "reqwest"))]
fn connect_reason(error: &(dyn StdError + 'static)) -> RetryReason {
    error
        .source()
        .and_then(classify_error)
        .unwrap_or(RetryReason::Refused)
}

/// reqwest's own timeout (its private `TimedOut` in the chain) and connect failures.
#[cfg(feature = "reqwest")]
fn reqwest_reason(error: &(dyn StdError + 'static)) -> Option<RetryReason> {
    let error = error.downcast_ref::<reqwest::Error>()?;
    if error.is_timeout() {
        Some(RetryReason::Timeout)
    } else if error.is_connect() {
        Some(connect_reason(error))
    } else {
        None
    }
}

#[cfg(feature = "hyper")]
fn hyper_reason(error: &(dyn StdError + 'static)) -> Option<RetryReason> {
    if let Some(client) = error.downcast_ref::<hyper_util::client::legacy::Error>() {
        // Other kinds (send request, canceled, channel closed) hold the hyper::Error that says
        // which, as their source.
        return client.is_connect().then(|| connect_reason(client));
    }
    let error = error.downcast_ref::<hyper::Error>()?;
    if error.is_timeout() {
        Some(RetryReason::Timeout)
    } else if error.is_incomplete_message() || error.is_closed() {
        Some(RetryReason::Connection)
    } else if error.is_canceled() {
        Some(RetryReason::Refused)
    } else {
        None
    }
}
