//! [`PaceLayer`]: the rate limit and the throttle feedback as one layer, in the right order.
//!
//! A [`LimitLayer`] waits for a slot of the request's key; a [`ThrottleLayer`] reads the
//! server's answer and pauses or slows that key. They must share one [`Limiter`] and one key
//! extractor, and the throttle must sit *inside* the rate limit, next to the HTTP service, so
//! that a 429 pauses the key before anyone (a retry included) asks for its next slot. Two
//! separate layers in the wrong order compile; `PaceLayer` cannot be assembled wrong:
//!
//! ```text
//! RetryLayer ──► PaceLayer = LimitLayer ──► ThrottleLayer ──► HTTP service
//! ```
//!
//! # Example
//!
//! ```
//! # mod pacer { pub mod limit { pub use ::pacer_limit::*; } pub mod throttle { pub use ::pacer_throttle::*; } pub use ::pacer_throttle::PaceLayer; }
//! use std::convert::Infallible;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use http::{Request, Response, StatusCode};
//! use pacer::limit::{Limiter, Quota};
//! use pacer::PaceLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let calls = Arc::new(AtomicU32::new(0));
//! let counter = Arc::clone(&calls);
//! let limiter = Limiter::new(Quota::per_second(100));
//! let client = ServiceBuilder::new()
//!     .layer(PaceLayer::new(limiter.clone()).max_pause(Duration::from_secs(30)))
//!     .service(tower::service_fn(move |_req: Request<()>| {
//!         // The first request is refused for 2 s; the others are fine.
//!         let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
//!         let mut response = Response::new(());
//!         if first {
//!             *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
//!             response.headers_mut().insert("retry-after", "2".parse().unwrap());
//!         }
//!         async move { Ok::<_, Infallible>(response) }
//!     }));
//!
//! let start = tokio::time::Instant::now();
//! let refused = client.clone().oneshot(Request::new(())).await.unwrap();
//! assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
//! // Another caller (another clone, another task) waits out the server's two seconds.
//! let next = client.clone().oneshot(Request::new(())).await.unwrap();
//! assert_eq!(next.status(), StatusCode::OK);
//! assert_eq!(start.elapsed(), Duration::from_secs(2));
//! assert_eq!(limiter.stats().acquired, 2);
//! # }
//! ```

use std::time::Duration;

use http::StatusCode;
use pacer_limit::{GlobalKey, Key, LimitLayer, Limited, Limiter};
use tower_layer::Layer;

use crate::layer::ThrottleLayer;
use crate::parse::ResetFormat;
use crate::service::Throttled;
use pacer_limit::Adaptive;

/// The service [`PaceLayer`] builds: the rate limit over the throttle feedback over `S`.
///
/// Fails with a [`BoxError`](crate::BoxError): a
/// [`RateLimited`](pacer_limit::RateLimited) (the limiter refused the request, it was not
/// sent), a [`WaitTooLong`](crate::WaitTooLong) (the server asked for a wait beyond the cap),
/// or `S`'s own error, unchanged.
pub type Pace<S, K = (), X = GlobalKey> = Limited<Throttled<S, K, X>, K, X>;

/// Paces a service by a shared [`Limiter`] and feeds the server's throttle signals back to it:
/// a [`LimitLayer`] with a [`ThrottleLayer`] inside it, both on the same limiter and key
/// extractor. Put a retry layer *outside* it, so that every attempt waits for (and spends) a
/// slot.
///
/// The throttle is configured through this layer's methods (the same as
/// [`ThrottleLayer`]'s, with the same defaults); the limiter's quota, maximum wait and queue
/// bound are the [`Limiter`]'s. See the [module docs](crate::pace) for an example.
///
/// To put a layer of your own *between* the two, take them apart with
/// [`into_layers`](Self::into_layers). A layer that only observes requests and their answers
/// (a counter of requests in flight, a timeout) can instead go below it, next to the service:
/// the throttle calls its inner service in the same poll as the limiter hands it the request.
#[derive(Debug)]
#[must_use]
pub struct PaceLayer<K = (), X = GlobalKey> {
    rate_limit: LimitLayer<K, X>,
    throttle: ThrottleLayer<K, X>,
}

impl PaceLayer<(), GlobalKey> {
    /// All requests spend the limiter's single quota (key `()`), and every response throttles it.
    pub fn new(limiter: Limiter<()>) -> Self {
        Self::keyed(limiter, GlobalKey::default())
    }
}

impl<K: Key, X: Clone> PaceLayer<K, X> {
    /// Each request spends the quota of the key `extractor` picks for it, and its response
    /// throttles that same key.
    pub fn keyed(limiter: Limiter<K>, extractor: X) -> Self {
        Self {
            rate_limit: LimitLayer::keyed(limiter.clone(), extractor.clone()),
            throttle: ThrottleLayer::keyed(limiter, extractor),
        }
    }
}

impl<K: Key, X> PaceLayer<K, X> {
    /// The longest pause one response may impose (default 60 s). A refusal asking for longer
    /// pauses the key for `max` and fails with [`WaitTooLong`](crate::WaitTooLong). See
    /// [`ThrottleLayer::max_pause`].
    pub fn max_pause(self, max: Duration) -> Self {
        self.map_throttle(|throttle| throttle.max_pause(max))
    }

    /// The statuses that mean "refused, slow down" (default 429 and 503). See
    /// [`ThrottleLayer::refusal_statuses`].
    pub fn refusal_statuses(self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.map_throttle(|throttle| throttle.refusal_statuses(statuses))
    }

    /// How the key's rate adapts to refusals (default [`Adaptive::default`]; [`Adaptive::off`]
    /// keeps the configured quota and only pauses). See [`ThrottleLayer::adaptive`].
    pub fn adaptive(self, adaptive: Adaptive) -> Self {
        self.map_throttle(|throttle| throttle.adaptive(adaptive))
    }

    /// Whether to space requests out when `Remaining` would not last until the reset at the
    /// key's current rate (default on). See [`ThrottleLayer::pace_ahead`].
    pub fn pace_ahead(self, enabled: bool) -> Self {
        self.map_throttle(|throttle| throttle.pace_ahead(enabled))
    }

    /// How legacy `*-Reset` headers express time (default: told apart by magnitude). See
    /// [`ThrottleLayer::reset_format`].
    pub fn reset_format(self, format: ResetFormat) -> Self {
        self.map_throttle(|throttle| throttle.reset_format(format))
    }

    /// The shared limiter both halves use, for its stats, pauses and learned rates.
    #[must_use]
    pub fn limiter(&self) -> &Limiter<K> {
        self.rate_limit.limiter()
    }

    /// The two layers, outer first, for a stack that needs a layer of its own between them:
    /// `ServiceBuilder::new().layer(rate_limit).layer(yours).layer(throttle)`.
    pub fn into_layers(self) -> (LimitLayer<K, X>, ThrottleLayer<K, X>) {
        (self.rate_limit, self.throttle)
    }

    fn map_throttle(self, f: impl FnOnce(ThrottleLayer<K, X>) -> ThrottleLayer<K, X>) -> Self {
        Self {
            rate_limit: self.rate_limit,
            throttle: f(self.throttle),
        }
    }
}

impl<K, X: Clone> Clone for PaceLayer<K, X> {
    fn clone(&self) -> Self {
        Self {
            rate_limit: self.rate_limit.clone(),
            throttle: self.throttle.clone(),
        }
    }
}

impl<S, K: Key, X: Clone> Layer<S> for PaceLayer<K, X> {
    type Service = Pace<S, K, X>;

    fn layer(&self, inner: S) -> Self::Service {
        self.rate_limit.layer(self.throttle.layer(inner))
    }
}
