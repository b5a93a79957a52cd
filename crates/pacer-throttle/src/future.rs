//! The response future of [`Throttled`](crate::Throttled).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::Response;
use pacer_limit::Key;
use pin_project_lite::pin_project;
use tokio::time::Instant;

use crate::error::BoxError;
use crate::service::Shared;

pin_project! {
    /// Waits for the inner response, then applies its throttle signals to the shared limiter.
    ///
    /// Fails with a [`WaitTooLong`](crate::WaitTooLong) (boxed) when the server asked for a wait beyond the cap, or
    /// with the inner service's error, converted into a [`BoxError`] and otherwise unchanged.
    pub struct ResponseFuture<F, K> {
        #[pin]
        inner: F,
        shared: Arc<Shared<K>>,
        key: Option<K>,
        sent_at: Instant,
    }
}

impl<F, K> ResponseFuture<F, K> {
    pub(crate) fn new(inner: F, shared: Arc<Shared<K>>, key: K, sent_at: Instant) -> Self {
        Self {
            inner,
            shared,
            key: Some(key),
            sent_at,
        }
    }
}

impl<F, K: std::fmt::Debug> std::fmt::Debug for ResponseFuture<F, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("key", &self.key)
            .field("sent_at", &self.sent_at)
            .finish_non_exhaustive()
    }
}

impl<F, K, B, E> Future for ResponseFuture<F, K>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    K: Key,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx)).map_err(Into::into)?;
        let key = this
            .key
            .take()
            .expect("ResponseFuture polled after completion");
        match this.shared.observe(&key, *this.sent_at, &mut response) {
            Ok(()) => Poll::Ready(Ok(response)),
            Err(too_long) => Poll::Ready(Err(BoxError::from(too_long))),
        }
    }
}
