//! `pacer`: tower middleware for calling rate-limited HTTP APIs hard, fast and without losing data.
//!
//! This umbrella crate re-exports the layer crates behind features:
//!
//! | feature | crate | what |
//! |---|---|---|
//! | `limit` (default) | [`pacer-limit`](limit) | shared, keyed, fair client-side rate limiting |
//! | `throttle` (default) | [`pacer-throttle`](throttle) | 429 / Retry-After / RateLimit headers slow every caller |
//! | `retry` (default) | [`pacer-retry`](retry) | jittered backoff with budgets, deadlines and idempotency |
//!
//! The Customer.io crates join here as they land.
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

#[cfg(feature = "limit")]
#[doc(inline)]
pub use pacer_limit as limit;

#[cfg(feature = "throttle")]
#[doc(inline)]
pub use pacer_throttle as throttle;

#[cfg(feature = "retry")]
#[doc(inline)]
pub use pacer_retry as retry;
