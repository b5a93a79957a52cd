//! [`LimitLayer`]: applies a shared [`Limiter`] to any HTTP service.

use tower_layer::Layer;

use crate::key::GlobalKey;
use crate::limiter::{Key, Limiter};
use crate::service::Limited;

/// Applies a shared [`Limiter`] to a service. Every service this layer builds, and every clone of
/// them, spends the same budget.
///
/// See the [crate docs](crate) for an example.
#[derive(Debug)]
#[must_use]
pub struct LimitLayer<K = (), X = GlobalKey> {
    limiter: Limiter<K>,
    extractor: X,
}

impl LimitLayer<(), GlobalKey> {
    /// All requests spend the limiter's single quota (key `()`).
    pub fn new(limiter: Limiter<()>) -> Self {
        Self {
            limiter,
            extractor: GlobalKey,
        }
    }
}

impl<K: Key, X> LimitLayer<K, X> {
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

impl<K, X: Clone> Clone for LimitLayer<K, X> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            extractor: self.extractor.clone(),
        }
    }
}

impl<S, K: Key, X: Clone> Layer<S> for LimitLayer<K, X> {
    type Service = Limited<S, K, X>;

    fn layer(&self, inner: S) -> Self::Service {
        Limited::keyed(inner, self.limiter.clone(), self.extractor.clone())
    }
}
