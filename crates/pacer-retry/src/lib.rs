//! A retry [`Layer`](tower_layer::Layer) for any `tower::Service<http::Request<B>>` that recovers
//! from transient failures without amplifying an outage, without repeating side effects, and
//! without sleeping less than the server asked.
//!
//! - **What is retried** ([`DefaultClassifier`], or your own [`Classify`]): 429, 408, 500, 502,
//!   503, 504, refused/reset/aborted connections, timeouts, incomplete messages; never other 4xx
//!   and never body or decoding errors. Transport errors are recognised by type in the source
//!   chain ([`classify_error`]): `io::Error` kinds, tokio's `Elapsed`, hyper's and hyper-util's
//!   predicates (feature `hyper`, on by default) and reqwest's (feature `reqwest`).
//! - **How long to wait**: `max(backoff, server hint)`. [`Backoff`] is exponential with full
//!   (default), equal, decorrelated or no [`Jitter`]; the hint is the response's
//!   [`Throttle`](pacer_throttle::Throttle) (Retry-After, or a reset with nothing remaining).
//!   A hint beyond `max_server_wait` (60 s) ends the request with
//!   [`ServerWaitTooLong`]. A refusal the throttle layer fed back to its limiter
//!   (marked [`Paced`](pacer_throttle::Paced)) waits only for the hint: the retry then waits
//!   for the key's next slot at its slowed rate, which is the backoff.
//! - **When to stop**: `max_retries` (2 after the first attempt), a total deadline
//!   (`max_elapsed` or a [`Deadline`] request extension), and a retry budget shared by every
//!   clone: retries add at most 20 % to the load plus 10 per second, so a server failing every
//!   request sees 1.2x the requests, not 3x. An optional per-attempt timeout cancels slow
//!   attempts.
//! - **What may be repeated**: GET, HEAD, OPTIONS, TRACE, PUT and DELETE; POST and PATCH only
//!   when marked [`Idempotent`] or carrying an `Idempotency-Key` header, or when the server
//!   certainly did not process them (a 429, a refused connection). Bodies are replayed
//!   by [`CloneBody`] (any `Clone` body, such as `Full<Bytes>`); with [`NoReplay`], for bodies
//!   that cannot be copied, each request is sent once.
//!
//! Each retry drives the inner service to readiness before calling it, on a clone of it: the
//! inner service must be `Clone`, as hyper-util's client and every pacer layer are. Put the
//! layer *outside* the rate limiter: every attempt then waits for, and spends, a slot of the
//! quota.
//!
//! # Errors
//!
//! The service fails with a [`BoxError`], as tower's own middleware (`Buffer`, `Timeout`,
//! `LoadShed`); the inner service needs only `S::Error: Into<BoxError>`, so the pacer layers
//! and any tower service stack under it. What the error holds, and how to tell:
//!
//! | the request | the error | downcast to |
//! |---|---|---|
//! | failed in a way not worth retrying: an inner error the classifier does not retry, a limiter's refusal, a throttle's wait too long | the inner error, unchanged | its own type: [`RateLimited`](https://docs.rs/pacer-limit/latest/pacer_limit/struct.RateLimited.html), [`WaitTooLong`](pacer_throttle::WaitTooLong), `std::io::Error`, … |
//! | failed on its first attempt in a retryable way and was not retried (attempt limit, budget, deadline, not repeatable) | the inner error, unchanged | its own type |
//! | timed out on its first attempt and was not retried | [`AttemptTimedOut`] | [`AttemptTimedOut`] |
//! | was retried, then the layer gave up on a retryable failure | [`RetriesExhausted`]; its [`source`](std::error::Error::source) is the last attempt's error (the inner error, or an [`AttemptTimedOut`]) | [`RetriesExhausted`], or [`find`] for the last error |
//! | got an answer asking for a wait beyond `max_server_wait` | [`ServerWaitTooLong`] (the answer is dropped) | [`ServerWaitTooLong`] |
//! | got a retryable answer (a 503, say) and the layer gave up | none: the answer is returned | — |
//!
//! So a client-side `RateLimited` or a `WaitTooLong` from the layers below is always at the top
//! (with the [`DefaultClassifier`], which retries neither), and
//! [`find`] finds any type wherever it is in the chain.
//!
//! # Why not `tower::retry::Retry` with a `Policy`
//! The budget is tower's own [`TpsBudget`](tower::retry::budget::TpsBudget). The service is our
//! own because a `Policy` cannot time out an attempt it did not start, cannot end a request with
//! a typed error of its own (a server wait too long, a timed-out last attempt), and sees the
//! request only as a value to clone, not its deadline; and tower's `Retry` clones the policy
//! per request, where our counters and random source are shared.
//!
//! # Example
//!
//! ```
//! # mod pacer { pub mod retry { pub use ::pacer_retry::*; } }
//! use std::convert::Infallible;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use http::{Request, Response, StatusCode};
//! use pacer::retry::RetryLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let calls = Arc::new(AtomicU32::new(0));
//! let counter = Arc::clone(&calls);
//! let retry = RetryLayer::new();
//! let client = ServiceBuilder::new()
//!     .layer(retry.clone())
//!     .service(tower::service_fn(move |_req: Request<String>| {
//!         // Unavailable once, then fine.
//!         let status = match counter.fetch_add(1, Ordering::SeqCst) {
//!             0 => StatusCode::SERVICE_UNAVAILABLE,
//!             _ => StatusCode::OK,
//!         };
//!         async move { Ok::<_, Infallible>(Response::builder().status(status).body(()).unwrap()) }
//!     }));
//!
//! let response = client.oneshot(Request::get("/").body(String::new()).unwrap()).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(calls.load(Ordering::SeqCst), 2);
//! assert_eq!(retry.stats().retries, 1);
//! # }
//! ```

mod backoff;
mod classify;
mod error;
mod future;
mod layer;
mod metrics;
mod request;
mod service;
mod stats;

pub use backoff::{Backoff, Jitter};
pub use classify::{classify_error, Classify, DefaultClassifier, RetryReason};
pub use error::{find, AttemptTimedOut, BoxError, GaveUp, RetriesExhausted, ServerWaitTooLong};
pub use future::ResponseFuture;
pub use layer::RetryLayer;
pub use request::{is_repeatable, CloneBody, Deadline, Idempotent, NoReplay, ReplayBody};
pub use service::Retry;
pub use stats::RetryStats;
