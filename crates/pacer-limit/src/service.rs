//! [`Limited`]: the service that waits for a slot before each call.

use std::task::{Context, Poll};

use http::Request;
use tower_service::Service;

use crate::error::BoxError;
use crate::future::ResponseFuture;
use crate::key::{GlobalKey, KeyExtractor};
use crate::layer::LimitLayer;
use crate::limiter::{Key, Limiter};
use crate::priority::Priority;

/// Paces the requests of an inner service by a shared [`Limiter`].
///
/// The key of a request is only known once the request is, so `poll_ready` is always ready and
/// the waiting happens in the [`ResponseFuture`]: first a slot of the key (in the lane of the
/// request's [`Priority`] extension, normal without one; FIFO within a lane), then the inner
/// service's own readiness, then the call. Each call uses a fresh clone of the inner service,
/// which is why `S: Clone`; the clone is driven to readiness before it is called.
///
/// # Errors
/// A [`BoxError`], as tower's own middleware: a [`RateLimited`](crate::RateLimited) when the
/// limiter refused the request (it was not sent), or the inner service's error, converted with
/// `Into<BoxError>` and otherwise unchanged (an inner `BoxError` passes through as it is), so
/// `error.downcast_ref::<RateLimited>()` or `downcast_ref::<std::io::Error>()` tells them apart.
#[derive(Debug)]
pub struct Limited<S, K = (), X = GlobalKey> {
    inner: S,
    limiter: Limiter<K>,
    extractor: X,
}

impl<S> Limited<S> {
    /// Paces `inner` by `limiter`'s single quota.
    pub fn new(inner: S, limiter: Limiter<()>) -> Self {
        Self {
            inner,
            limiter,
            extractor: GlobalKey,
        }
    }
}

impl<S, K: Key, X> Limited<S, K, X> {
    /// Paces `inner` by `limiter`, spending the quota of the key `extractor` picks per request.
    pub fn keyed(inner: S, limiter: Limiter<K>, extractor: X) -> Self {
        Self {
            inner,
            limiter,
            extractor,
        }
    }

    /// A layer that wraps services the way this one is wrapped.
    pub fn layer(limiter: Limiter<K>, extractor: X) -> LimitLayer<K, X> {
        LimitLayer::keyed(limiter, extractor)
    }

    /// The shared limiter.
    pub fn limiter(&self) -> &Limiter<K> {
        &self.limiter
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, K, X: Clone> Clone for Limited<S, K, X> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            extractor: self.extractor.clone(),
        }
    }
}

impl<S, B, K, X> Service<Request<B>> for Limited<S, K, X>
where
    S: Service<Request<B>> + Clone,
    S::Error: Into<BoxError>,
    K: Key,
    X: KeyExtractor<B, Key = K>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Request<B>, K>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Nothing is reserved here: the key depends on the request. See the type's docs.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let key = self.extractor.extract(&request);
        let priority = request
            .extensions()
            .get::<Priority>()
            .copied()
            .unwrap_or_default();
        let acquire = self.limiter.acquire_with_priority(key, priority);
        ResponseFuture::new(acquire, self.inner.clone(), request)
    }
}
