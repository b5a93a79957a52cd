//! A client-side rate limiter as a tower [`Layer`](tower_layer::Layer): paces requests to an HTTP
//! API so that the server's limit is used almost fully and never exceeded.
//!
//! - **One budget, shared.** A [`Limiter`] is a handle to shared state. Every clone of a
//!   [`LimitLayer`], of the [`Limited`] services it builds, and of the limiter itself spends
//!   the same budget, with no `Buffer` and no background task, unlike
//!   `tower::limit::RateLimit`, which is not `Clone`.
//! - **Keyed.** A [`KeyExtractor`] picks the bucket of each request (an API class, a workspace),
//!   each with its own [`Quota`]. Buckets of idle keys are dropped.
//! - **Defaults that real servers accept.** A [`Quota`] spaces sends evenly (GCRA, burst 1) with
//!   a margin of 1 % of the window, which nginx's `limit_req`, HAProxy's rate counters and
//!   sliding windows all accept. Bursting is explicit: [`Model::SlidingWindow`] never sends more
//!   than N in any window W, [`Model::Gcra`] allows a chosen burst. After a pause, waiters leave
//!   evenly spaced, never in a herd.
//! - **Fair and cancellation-safe.** Waiters of a key are served by [`Priority`] lane
//!   (interactive, normal, bulk), first in, first out within a lane; each lower lane keeps a
//!   minimum share ([`LimiterBuilder::min_share`]), so nothing starves. Only the head of the
//!   key's queue holds a timer, so no thundering herd. A request dropped while it waits gives
//!   its place back.
//! - **Bounded.** An optional maximum wait and a bounded queue fail fast with [`RateLimited`]
//!   instead of queueing without end.
//! - **Pluggable.** The [`Limiter`] handle lets other layers pause a key until a server's
//!   Retry-After ([`Limiter::pause_until`]) or change its quota ([`Limiter::set_quota`]), or report each response with [`Limiter::observe`].
//! - **Pluggable slot sources.** The queue, pauses and wake-ups are one core; where slots come
//!   from is a [`SlotSource`]: each key's own [`LocalSlots`] model by default, or, through
//!   [`LimiterBuilder::slot_sources`], a quota shared with other processes (the
//!   `pacer-limit-redis` crate keeps it in Redis: processes reserve slot times with one atomic
//!   script call, wait locally, share pauses, and fall back to a local share while Redis is away).
//!
//! # Example
//!
//! ```
//! # mod pacer { pub mod limit { pub use ::pacer_limit::*; } }
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use http::{Request, Response};
//! use pacer::limit::{Limiter, Quota, LimitLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // 100 requests per second, evenly spaced: one every 10.1 ms (the window's 1 % margin
//! // absorbs network jitter).
//! let limiter = Limiter::new(Quota::per_second(100));
//! let client = ServiceBuilder::new()
//!     .layer(LimitLayer::new(limiter.clone()))
//!     .service(tower::service_fn(|_req: Request<String>| async {
//!         Ok::<_, Infallible>(Response::new("ok"))
//!     }));
//!
//! // Clones share the budget: 150 requests from 150 tasks go out one by one, 10.1 ms apart
//! // (11 ms in this paused-time example: tokio's timer fires on whole milliseconds; in real
//! // time the precise wake-ups keep the 10.1 ms).
//! let start = tokio::time::Instant::now();
//! let tasks: Vec<_> = (0..150)
//!     .map(|_| tokio::spawn(client.clone().oneshot(Request::new(String::new()))))
//!     .collect();
//! for task in tasks {
//!     task.await.unwrap().unwrap();
//! }
//! assert_eq!(start.elapsed(), Duration::from_millis(149 * 11));
//! assert_eq!(limiter.stats().acquired, 150);
//! # }
//! ```

mod acquire;
mod adaptive;
mod arrival;
mod bucket;
mod builder;
mod caps;
mod error;
mod feedback;
mod future;
mod key;
mod lanes;
mod layer;
mod learned;
mod limiter;
mod metrics;
mod model;
mod precise;
mod priority;
mod quota;
mod service;
mod sliding;
mod source;
mod spacing;
mod stats;

pub use acquire::Acquire;
pub use adaptive::Adaptive;
pub use builder::LimiterBuilder;
pub use error::{BoxError, RateLimited, Reason};
pub use feedback::{Feedback, Outcome, Spent, Verdict};
pub use future::ResponseFuture;
pub use key::{GlobalKey, KeyExtractor};
pub use layer::LimitLayer;
pub use limiter::{Key, Limiter};
pub use priority::{Demand, Priority};
pub use quota::{Cap, Model, Quota, MAX_CAPS};
pub use service::Limited;
pub use source::{Admission, HeadWaker, LocalSlots, SlotSource, SlotSources};
pub use stats::{LaneStats, LimiterStats, QueueStats};

/// Re-exported so that users can name instants without depending on tokio's paths.
pub use tokio::time::Instant;
