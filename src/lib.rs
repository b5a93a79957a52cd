//! `pacer`: tower middleware for calling rate-limited HTTP APIs hard, fast and without losing data.
//!
//! This umbrella crate re-exports the layer crates behind features:
//!
//! | feature | crate | what |
//! |---|---|---|
//! | `limit` (default) | [`pacer-limit`](limit) | shared, keyed, fair client-side rate limiting |
//! | `throttle` (default) | [`pacer-throttle`](throttle) | 429 / Retry-After / RateLimit headers slow every caller |
//! | `retry` (default) | [`pacer-retry`](retry) | jittered backoff with budgets, deadlines and idempotency |
//! | `customerio` (default) | [`pacer-customerio`](customerio) | typed Customer.io operations and the default stack |
//! | `reqwest` | [`reqwest`](mod@reqwest) | a `reqwest::Client` as the service under the stack |
//!
//! The mock Customer.io server is the `pacer-mock` crate (and binary).
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

#[cfg(feature = "customerio")]
#[doc(inline)]
pub use pacer_customerio as customerio;

#[cfg(feature = "reqwest")]
pub mod reqwest;
