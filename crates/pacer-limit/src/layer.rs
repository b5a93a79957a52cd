//! [`RateLimitLayer`]: applies a shared [`Limiter`] to any HTTP service.

use tower_layer::Layer;

use crate::key::GlobalKey;
use crate::limiter::{Key, Limiter};
use crate::service::RateLimit;

/// Applies a shared [`Limiter`] to a service. Every service this layer builds, and every clone of
/// them, spends the same budget.
///
/// See the [crate docs](crate) for an example.
#[derive(Debug)]
#[must_use]
pub struct RateLimitLayer<K = (), X = GlobalKey> {
    limiter: Limiter<K>,
    extractor: X,
}

impl RateLimitLayer<(), GlobalKey> {
    /// All requests spend the limiter's single quota (key `()`).
    pub fn new(limiter: Limiter<()>) -> Self {
        Self {
            limiter,
            extractor: GlobalKey,
        }
    }
}

impl<K: Key, X> RateLimitLayer<K, X> {
    /// Each request spends the quota of the key `extractor` picks for it.
    pub fn keyed(limiter: Limiter<K>, extractor: X) -> Self {
        Self { limiter, extractor }
    }

    /// The shared limiter, for other layers (pausing a key on a 429) or for reading its stats.
    #[must_use]
    pub fn limiter(&self) -> &Limiter<K> {
        &self.limiter
    }
}

impl<K, X: Clone> Clone for RateLimitLayer<K, X> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            extractor: self.extractor.clone(),
        }
    }
}

impl<S, K: Key, X: Clone> Layer<S> for RateLimitLayer<K, X> {
    type Service = RateLimit<S, K, X>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::keyed(inner, self.limiter.clone(), self.extractor.clone())
    }
}
