//! `pacer`: tower middleware for calling rate-limited HTTP APIs hard, fast and without losing data.
//!
//! This umbrella crate re-exports the layer crates behind features:
//!
//! | feature | crate | what |
//! |---|---|---|
//! | `limit` (default) | [`pacer-limit`](limit) | shared, keyed, fair client-side rate limiting |
//! | `throttle` (default) | [`pacer-throttle`](throttle) | 429 / Retry-After / RateLimit headers slow every caller |
//! | `retry` (default) | [`pacer-retry`](retry) | jittered backoff with budgets, deadlines and idempotency |
//! | `customerio` (default) | [`pacer-customerio`](customerio) | typed Customer.io operations and the default stack, over any HTTP service |
//! | `https` (default) | — | `ClientBuilder::build_https`: hyper over rustls (ring; webpki or native roots) |
//! | `outbox` | [`pacer-outbox`](outbox) | enqueue without waiting; deliver as paced Track v2 batches (in memory, or Redis Streams with `redis`) |
//! | `reqwest` | [`reqwest`](mod@reqwest) | a `reqwest::Client` as the service under the stack |
//! | `reqwest-middleware` | [`middleware`](mod@middleware) | the stack as a `reqwest_middleware::Middleware` |
//! | `redis` | [`pacer-limit-redis`](redis) | one quota shared by many processes through Redis |
//! | `mock` | [`pacer-mock`](mock) | the mock Customer.io server, in-process, for your tests |
//! | `metrics` | — | counters, gauges and histograms through the [`metrics`](https://docs.rs/metrics) facade |
//!
//! Over reqwest with its own TLS, and no second TLS stack:
//! `pacer = { version = "0.1", default-features = false, features = ["customerio", "reqwest"] }`.
//!
//! # The stack
//!
//! Retry outside, then [`PaceLayer`] (the rate limit, with the throttle feedback inside it, on
//! one shared limiter), then any `tower::Service<http::Request<B>> + Clone`:
//!
//! ```
//! # #[cfg(feature = "retry")]
//! # {
//! use pacer::limit::{Limiter, Quota};
//! use pacer::retry::RetryLayer;
//! use pacer::PaceLayer;
//! # let http = tower::service_fn(|_req: http::Request<()>| async {
//! #     Ok::<_, std::convert::Infallible>(http::Response::new(()))
//! # });
//!
//! let limiter = Limiter::new(Quota::per_second(100));
//! let client = tower::ServiceBuilder::new()
//!     .layer(RetryLayer::new())
//!     .layer(PaceLayer::new(limiter.clone()))
//!     .service(http);
//! # let _ = client;
//! # }
//! ```
//!
//! Every layer fails with a `BoxError`, as tower's own middleware; each layer's own failure is
//! a concrete type to downcast to, and the inner service's error passes through unchanged:
//! `limit::RateLimited` (refused by the limiter, not sent), `throttle::WaitTooLong` (the
//! server asked for a wait beyond the cap), `retry::AttemptTimedOut`,
//! `retry::ServerWaitTooLong` and `retry::RetriesExhausted` (whose source is the last
//! attempt's error). `retry::find` looks for a type through a source chain; when each is
//! returned is in the [`retry`](retry#errors) crate docs.
//!
//! # Metrics (feature `metrics`)
//!
//! Reported through the `metrics` facade, so any exporter (Prometheus, StatsD, OpenTelemetry…)
//! installed as the global recorder sees them; without the feature they compile away. `key` is
//! the limiter key's `Debug` form (for the Customer.io client: `Track`, `App`, …; a `&str` key
//! keeps its quotes). Each key is a series, and each event formats its label: meant for few
//! keys (API classes, workspaces), not one per user or URL. Series are per process, and two
//! limiters whose keys print alike share them (the last gauge written wins).
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `pacer_limit_admitted_total` | counter | `key`, `priority` (`interactive`, `normal`, `bulk`) | requests that took a slot |
//! | `pacer_limit_wait_seconds` | histogram | `key`, `priority` | how long each waited for it (0 on the fast path) |
//! | `pacer_limit_queue_length` | gauge | `key`, `priority` | requests waiting for a slot now, in the lane |
//! | `pacer_limit_refused_total` | counter | `key`, `priority`, `reason` (`max_wait`, `queue_full`) | refused by the limiter: at once, or after queueing when a pause pushed the turn past the maximum wait |
//! | `pacer_limit_redis_fallbacks_total` | counter | | times Redis went away and the local fallback took over |
//! | `pacer_throttle_refusals_total` | counter | `key`, `status` (`429`, `503`) | refusals from the server |
//! | `pacer_throttle_pauses_total` | counter | `key` | pauses for a server's wait (Retry-After, an exhausted window) |
//! | `pacer_throttle_pauses_capped_total` | counter | `key`, `status` | a server's wait beyond the layer's cap, cut to the cap (a refusal then fails with `WaitTooLong`; a success is warned of) |
//! | `pacer_throttle_rate_per_second` | gauge | `key` | the rate the key is paced at after adapting (back at its quota once recovered) |
//! | `pacer_retry_retries_total` | counter | `reason` (`429`, `503`, …, `connection`, `refused`, `timeout`) | retries sent |
//! | `pacer_retry_gave_up_total` | counter | `why` (`exhausted`, `budget`, `deadline`, `server_wait`, `not_repeatable`), `reason` | retryable failures returned to the caller |

#[cfg(feature = "limit")]
#[doc(inline)]
pub use pacer_limit as limit;

#[cfg(feature = "redis")]
#[doc(inline)]
pub use pacer_limit_redis as redis;

#[cfg(feature = "throttle")]
#[doc(inline)]
pub use pacer_throttle as throttle;

/// The rate limit and the throttle feedback as one layer, in the right order (also
/// [`throttle::PaceLayer`]).
#[cfg(feature = "throttle")]
pub use pacer_throttle::PaceLayer;

#[cfg(feature = "retry")]
#[doc(inline)]
pub use pacer_retry as retry;

#[cfg(feature = "customerio")]
#[doc(inline)]
pub use pacer_customerio as customerio;

#[cfg(feature = "outbox")]
#[doc(inline)]
pub use pacer_outbox as outbox;

#[cfg(feature = "mock")]
#[doc(inline)]
pub use pacer_mock as mock;

#[cfg(feature = "reqwest")]
pub mod reqwest;

#[cfg(feature = "reqwest-middleware")]
pub mod middleware;

/// The README's Rust blocks, compiled as doctests: each is a complete program a user can copy.
#[cfg(all(
    doctest,
    feature = "https",
    feature = "reqwest-middleware",
    feature = "redis",
    feature = "outbox"
))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
