//! Choosing the limiter key of a request.

use http::Request;

/// Picks the limiter key of a request: which quota it spends.
///
/// Implemented for every `Fn(&Request<B>) -> K` (so a closure works) and by [`GlobalKey`], which
/// puts every request under one quota.
///
/// ```
/// # mod pacer { pub mod limit { pub use ::pacer_limit::*; } }
/// use pacer::limit::KeyExtractor;
///
/// // One quota per host.
/// let by_host = |req: &http::Request<()>| req.uri().host().map(str::to_owned);
/// let req = http::Request::get("https://track.customer.io/api/v1").body(()).unwrap();
/// assert_eq!(by_host.extract(&req).as_deref(), Some("track.customer.io"));
/// ```
pub trait KeyExtractor<B> {
    /// The key type.
    type Key;

    /// The key of `request`.
    fn extract(&self, request: &Request<B>) -> Self::Key;
}

impl<B, K, F> KeyExtractor<B> for F
where
    F: Fn(&Request<B>) -> K,
{
    type Key = K;

    fn extract(&self, request: &Request<B>) -> K {
        self(request)
    }
}

/// Every request spends the one quota of the key `()`.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct GlobalKey;

impl<B> KeyExtractor<B> for GlobalKey {
    type Key = ();

    fn extract(&self, _: &Request<B>) {}
}
