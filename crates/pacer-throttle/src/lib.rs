//! Throttle signals as a tower [`Layer`](tower_layer::Layer): turns a server's `429`,
//! `Retry-After` and rate-limit headers into typed data and feeds them to the shared
//! [`Limiter`](pacer_limit::Limiter), so every caller slows down, not only the one refused.
//!
//! - **Parsing** ([`parse`]): `Retry-After` in seconds and all three HTTP-date forms, measured
//!   against the response's own `Date` (client clock skew does not matter); the legacy
//!   `X-RateLimit-*` family with reset as delta, epoch seconds or epoch milliseconds; the IETF
//!   `RateLimit` / `RateLimit-Policy` structured fields. Hostile values are clamped, never
//!   panic, never overflow. The result is one [`Throttle`] in the response's extensions.
//! - **Pausing**: a 429 or 503 with a wait pauses the request's key in the shared limiter, so
//!   every queued and new request on that key waits. Waits beyond a cap (default 60 s) pause
//!   for the cap and fail the request with [`WaitTooLong`].
//! - **One report per response**: the layer parses the answer and reports it once to the
//!   limiter ([`Limiter::observe`](pacer_limit::Limiter::observe)), which owns everything it
//!   learns about the key and applies the pause, the adaptation and pacing ahead under one lock.
//! - **A refusal's cost decides the answer**: a refusal with a wait on an evenly paced key
//!   widens its spacing by 3 % (shrinking back over minutes) instead of cutting its rate,
//!   further in escalating rounds while refusals keep coming soon after each pause; the rate
//!   is cut only on evidence that it is wrong.
//! - **Adapting, without collapsing**: a refusal first shrinks a bursting quota to even
//!   spacing; then it lowers the key's rate to just under what the server accepted over the
//!   last *busy* window (after start-up, idle or a pause, a partial window says nothing of the
//!   server's limit, and the rate only steps down by 1 %, further each repeated round), never
//!   by more than half per round. Successes bring it back to the configured quota in a bounded
//!   time (see [`Adaptive`]). A client that starts 10x too fast converges within a few rounds.
//! - **Pacing ahead**: when `Remaining` is too low to last until the reset at the current rate,
//!   the key is spaced out to spend it all, evenly, before the reset (epoch resets measured
//!   against the local clock while it agrees with the response's `Date` to the second).
//!
//! # Example
//!
//! [`PaceLayer`] installs the rate limit and, inside it, next to the HTTP service, the throttle
//! layer, both on the same [`Limiter`](pacer_limit::Limiter) and key (see [`pace`]; the two
//! layers, [`LimitLayer`](pacer_limit::LimitLayer) and [`ThrottleLayer`], stay public
//! for stacks that need a layer between them):
//!
//! ```
//! # mod pacer { pub mod limit { pub use ::pacer_limit::*; } pub mod throttle { pub use ::pacer_throttle::*; } }
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use http::{Request, Response, StatusCode};
//! use pacer::limit::{Limiter, Quota};
//! use pacer::throttle::{PaceLayer, Throttle};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let limiter = Limiter::new(Quota::per_second(100));
//! let client = ServiceBuilder::new()
//!     .layer(PaceLayer::new(limiter.clone()))
//!     .service(tower::service_fn(|_req: Request<()>| async {
//!         let response = Response::builder()
//!             .status(StatusCode::TOO_MANY_REQUESTS)
//!             .header("retry-after", "2")
//!             .body(())
//!             .unwrap();
//!         Ok::<_, Infallible>(response)
//!     }));
//!
//! let response = client.clone().oneshot(Request::new(())).await.unwrap();
//! assert_eq!(response.extensions().get::<Throttle>().unwrap().wait, Some(Duration::from_secs(2)));
//! // Every caller on the key now waits two seconds, not only the one that was refused.
//! assert_eq!(limiter.estimated_wait(&()), Duration::from_secs(2));
//! # }
//! ```
//!
//! # Errors
//!
//! The services fail with a [`BoxError`], as tower's own middleware: a [`WaitTooLong`] of this
//! layer, a [`RateLimited`](pacer_limit::RateLimited) of the limiter, or the inner service's
//! error, unchanged. Downcast to tell them apart (`error.downcast_ref::<WaitTooLong>()`).

mod error;
mod future;
mod layer;
mod metrics;
pub mod pace;
pub mod parse;
mod service;
mod throttle;

pub use error::{BoxError, WaitTooLong};
pub use future::ResponseFuture;
pub use layer::ThrottleLayer;
pub use pace::{Pace, PaceLayer};
pub use pacer_limit::Adaptive;
pub use service::Throttled;
pub use throttle::{Paced, Source, Throttle};
