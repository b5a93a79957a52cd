//! The client's time bounds: which phase of a call timed out, and the response-head timeout
//! that sits next to the HTTP service, below the pacing, so that it bounds the server's
//! silence and never the time a request waits for its slot of the quota.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::error::Elapsed;
use tokio::time::Timeout;
use tower::BoxError;

/// The default bound on opening a connection (TCP and TLS): 10 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default bound on the head of an answer, from when the request is handed to the HTTP
/// client (after its slot of the quota) to its status and headers: 30 s.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// The default bound on reading a whole answer body once its head arrived: 30 s.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// What a call was waiting for when it timed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutPhase {
    /// Opening the connection.
    Connect,
    /// The answer's status and headers.
    ResponseHead,
    /// The rest of the answer's body.
    Body,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Connect => "accept the connection",
            TimeoutPhase::ResponseHead => "answer",
            TimeoutPhase::Body => "finish its answer's body",
        })
    }
}

/// The HTTP service gave no answer head within the client's response timeout. Its
/// [`source`](std::error::Error::source) is tokio's `Elapsed`, so `pacer-retry`'s classifier
/// counts it as a retryable timeout; [`Client`](crate::Client) turns it into
/// [`Error::TimedOut`](crate::Error::TimedOut).
#[derive(Debug)]
pub struct ResponseTimedOut {
    after: Duration,
    elapsed: Elapsed,
}

impl ResponseTimedOut {
    /// The bound it exceeded.
    #[must_use]
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for ResponseTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no answer within {:?}", self.after)
    }
}

impl std::error::Error for ResponseTimedOut {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.elapsed)
    }
}

/// Fails a call whose answer head takes longer than `after` with a [`ResponseTimedOut`].
#[derive(Clone, Debug)]
pub(crate) struct HeadTimeout<S> {
    inner: S,
    after: Duration,
}

impl<S> HeadTimeout<S> {
    pub(crate) fn new(inner: S, after: Duration) -> Self {
        Self { inner, after }
    }
}

impl<S, R> tower::Service<R> for HeadTimeout<S>
where
    S: tower::Service<R>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = HeadTimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: R) -> Self::Future {
        HeadTimeoutFuture {
            inner: tokio::time::timeout(self.after, self.inner.call(request)),
            after: self.after,
        }
    }
}

pin_project! {
    /// The future of [`HeadTimeout`].
    #[derive(Debug)]
    pub(crate) struct HeadTimeoutFuture<F> {
        #[pin]
        inner: Timeout<F>,
        after: Duration,
    }
}

impl<F, T, E> Future for HeadTimeoutFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let after = *this.after;
        Poll::Ready(match ready!(this.inner.poll(cx)) {
            Ok(result) => result.map_err(Into::into),
            Err(elapsed) => {
                tracing::warn!(?after, "no answer head within the response timeout");
                Err(Box::new(ResponseTimedOut { after, elapsed }))
            }
        })
    }
}
