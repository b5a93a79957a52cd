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
    /// The connection could not be made: the request never reached the server.
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

/// Retries 429, 408, 500, 502, 503 and 504, and errors whose source chain holds an
/// [`io::Error`] of a broken or refused connection or a timeout, or a message saying the
/// connection closed before the response was complete (hyper's "incomplete message"). Never
/// other 4xx, and never body or decoding errors: repeating those changes nothing.
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

/// Walks `error`'s source chain for a transient transport failure.
pub fn classify_error(error: &(dyn StdError + 'static)) -> Option<RetryReason> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::TimedOut => Some(RetryReason::Timeout),
                io::ErrorKind::ConnectionRefused => Some(RetryReason::Refused),
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::NotConnected
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => Some(RetryReason::Connection),
                _ => None,
            };
        }
        if error.is::<tokio::time::error::Elapsed>() {
            return Some(RetryReason::Timeout);
        }
        // hyper names these in its Display; matching the text keeps us free of a hyper
        // dependency and works through any wrapper that keeps the source chain.
        let text = error.to_string();
        if text.contains("operation timed out") {
            return Some(RetryReason::Timeout);
        }
        if text.contains("error trying to connect") {
            // The cause further down may say more (a timeout, say); without one, refused.
            return Some(
                error
                    .source()
                    .and_then(classify_error)
                    .unwrap_or(RetryReason::Refused),
            );
        }
        if text.contains("connection closed before message completed") {
            return Some(RetryReason::Connection);
        }
        current = error.source();
    }
    None
}
