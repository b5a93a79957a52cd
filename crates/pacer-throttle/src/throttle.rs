//! The typed server signal every layer above can read from a response's extensions.

use std::time::Duration;

use tokio::time::Instant;

/// Which header family a [`Throttle`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// `Retry-After` (RFC 9110), in seconds or as an HTTP-date.
    RetryAfter,
    /// The IETF `RateLimit` / `RateLimit-Policy` structured fields
    /// (draft-ietf-httpapi-ratelimit-headers-10/11).
    RateLimitFields,
    /// The legacy `X-RateLimit-*`, `X-Rate-Limit-*` and `RateLimit-Limit/-Remaining/-Reset`
    /// headers.
    LegacyHeaders,
}

/// A response extension: the [`ThrottleLayer`](crate::ThrottleLayer) fed this 429 back to the
/// shared limiter (it paused the key, or adapts its rate; a 503 is not marked, so that retries
/// keep their backoff through an outage). A retry of the request through
/// that limiter is paced by it, so it needs no backoff of its own: `pacer-retry` waits only for
/// the server's hint, if any, and then for the key's next slot like any other request.
/// Another layer that feeds refusals back to a limiter may insert it too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Paced;

/// What a server said about its rate limit in one response: when to send again, how much of the
/// quota is left, and which header said so.
///
/// [`ThrottleLayer`](crate::ThrottleLayer) puts one into the extensions of every response that
/// carries a signal, so the layers above (a retry layer, the caller) can read it:
///
/// ```
/// # mod pacer { pub mod throttle { pub use ::pacer_throttle::*; } }
/// # use pacer::throttle::Throttle;
/// # fn check(response: &http::Response<()>) {
/// if let Some(throttle) = response.extensions().get::<Throttle>() {
///     println!("server asks to wait {:?}, {:?} left", throttle.wait, throttle.remaining);
/// }
/// # }
/// ```
///
/// Every duration but [`requested`](Self::requested) is clamped to the parser's maximum, so no
/// field a layer acts on is absurd or overflows.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Throttle {
    /// How long the server asks the client to wait before the next request, measured from when
    /// the response was received: from `Retry-After`, or the reset time when nothing remains.
    /// Clamped to the parser's maximum ([`ParseOptions::max`](crate::parse::ParseOptions)).
    pub wait: Option<Duration>,
    /// `wait` as the server asked for it, before the clamp (`Retry-After: 99999999999` is
    /// 99999999999 s here, one hour in `wait`): for messages that say what the server sent.
    pub requested: Option<Duration>,
    /// The `Retry-After` value `wait` came from, as sent (an HTTP-date stays a date), at most 64
    /// bytes.
    pub retry_after: Option<String>,
    /// `wait` as an instant on tokio's clock.
    pub wait_until: Option<Instant>,
    /// Requests left in the current window.
    pub remaining: Option<u64>,
    /// Requests allowed per window.
    pub limit: Option<u64>,
    /// The length of the server's window, when it says.
    pub window: Option<Duration>,
    /// Time until the current window resets (and `remaining` is refilled).
    pub reset: Option<Duration>,
    /// The header family `wait` came from, or else the one that gave the quota figures.
    pub source: Source,
}

impl Throttle {
    /// A signal from `source` with no figures yet; fill in the public fields.
    #[must_use]
    pub fn new(source: Source) -> Self {
        Self {
            wait: None,
            requested: None,
            retry_after: None,
            wait_until: None,
            remaining: None,
            limit: None,
            window: None,
            reset: None,
            source,
        }
    }

    /// Whether the server asked for a pause: a `Retry-After`, or nothing remaining until a reset.
    #[must_use]
    pub fn asks_to_wait(&self) -> bool {
        self.wait.is_some()
    }
}
