//! Pure parsers for the throttle signals servers send: no I/O, no panics, every duration
//! clamped to a maximum (the unclamped wait is kept as [`Throttle::requested`], for messages). [`throttle`] combines them into one [`Throttle`].

mod ietf;
mod legacy;
mod number;
mod retry_after;

use std::time::{Duration, SystemTime};

use http::{header, HeaderMap};
use tokio::time::Instant;

pub use ietf::{rate_limit_fields, RateLimitFields};
pub use legacy::{legacy, Legacy};
pub use retry_after::retry_after;

use crate::{Source, Throttle};

/// How `X-RateLimit-Reset` and its relatives express the reset time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResetFormat {
    /// Decide by magnitude: below 10⁹ delta-seconds, below 10¹² epoch seconds, else epoch
    /// milliseconds. Right for every server seen in the field.
    #[default]
    Auto,
    /// Seconds from now (GitLab, the IETF drafts).
    DeltaSeconds,
    /// Unix time in seconds (GitHub, Twitter/X).
    EpochSeconds,
    /// Unix time in milliseconds.
    EpochMillis,
}

/// How the parsers read headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParseOptions {
    /// Every parsed duration is clamped to this (default 1 hour). What a layer does with a long
    /// wait is the layer's business; this only keeps absurd values finite.
    pub max: Duration,
    /// How to read legacy `*-Reset` values (default [`ResetFormat::Auto`]).
    pub reset_format: ResetFormat,
}

impl Default for ParseOptions {
    fn default() -> Self {
        Self {
            max: Duration::from_secs(3600),
            reset_format: ResetFormat::Auto,
        }
    }
}

impl ParseOptions {
    /// Clamps every parsed duration to `max`.
    #[must_use]
    pub fn max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// Reads legacy `*-Reset` values as `format`.
    #[must_use]
    pub fn reset_format(mut self, format: ResetFormat) -> Self {
        self.reset_format = format;
        self
    }
}

/// Everything the headers of one response say about the server's rate limit, or `None` when
/// they say nothing.
///
/// `received` is when the response arrived (tokio's clock, for `wait_until`), `now` the wall
/// clock used for HTTP-dates and epoch resets when the response has no valid `Date`.
///
/// `Retry-After` wins over the rate-limit fields for the wait, as the IETF draft says. Without
/// it, a window with nothing remaining asks to wait until its reset. The IETF fields win over
/// the legacy headers for the quota figures.
///
/// ```
/// # mod pacer { pub mod throttle { pub use ::pacer_throttle::*; } }
/// use std::time::{Duration, SystemTime};
/// use http::HeaderMap;
/// use pacer::throttle::parse::{throttle, ParseOptions};
/// use pacer::throttle::Source;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("ratelimit-policy", "\"default\";q=100;w=1".parse().unwrap());
/// headers.insert("ratelimit", "\"default\";r=0;t=1".parse().unwrap());
/// let received = tokio::time::Instant::now();
/// let signal = throttle(&headers, &ParseOptions::default(), received, SystemTime::now()).unwrap();
/// assert_eq!(signal.wait, Some(Duration::from_secs(1)));
/// assert_eq!((signal.remaining, signal.limit), (Some(0), Some(100)));
/// assert_eq!(signal.source, Source::RateLimitFields);
/// ```
#[must_use]
pub fn throttle(
    headers: &HeaderMap,
    options: &ParseOptions,
    received: Instant,
    now: SystemTime,
) -> Option<Throttle> {
    // Parsed unclamped, then clamped here: the signal keeps what the server really asked for
    // (`requested`) next to the clamped figures, so an error can say "99999999999s" rather
    // than the clamp.
    let unclamped = Duration::MAX;
    let clamp = |duration: Duration| duration.min(options.max);
    let date = headers.get(header::DATE);
    let retry = headers
        .get_all(header::RETRY_AFTER)
        .iter()
        .filter_map(|value| Some((retry_after(value, date, now, unclamped)?, value)))
        .max_by_key(|&(delay, _)| delay);
    let fields = rate_limit_fields(headers, unclamped);
    let legacy = legacy(headers, now, options.reset_format, unclamped);

    let (figures_source, remaining, reset, limit) = if fields.is_empty() {
        (
            Source::LegacyHeaders,
            legacy.remaining,
            legacy.reset,
            legacy.limit,
        )
    } else {
        (
            Source::RateLimitFields,
            fields.remaining,
            fields.reset,
            fields.limit,
        )
    };
    let mut signal = Throttle::new(figures_source);
    signal.remaining = remaining;
    signal.reset = reset.map(clamp);
    signal.limit = limit;
    signal.window = fields.window.map(clamp);
    if let Some((delay, value)) = retry {
        signal.requested = Some(delay);
        signal.retry_after = Some(raw_text(value));
        signal.source = Source::RetryAfter;
    } else if remaining == Some(0) {
        signal.requested = reset;
    }
    signal.wait = signal.requested.map(clamp);
    signal.wait_until = signal.wait.and_then(|wait| received.checked_add(wait));

    let said_something = retry.is_some() || !fields.is_empty() || !legacy.is_empty();
    said_something.then_some(signal)
}

/// The most bytes of a header value kept in a [`Throttle`]: enough for any HTTP-date or
/// number, bounded whatever the server sends.
const MAX_RAW_BYTES: usize = 64;

/// A header value as text for messages: lossy, at most [`MAX_RAW_BYTES`] bytes (cut on a
/// character boundary, marked with `…`).
fn raw_text(value: &http::HeaderValue) -> String {
    let text = String::from_utf8_lossy(value.as_bytes());
    let text = text.trim();
    if text.len() <= MAX_RAW_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_RAW_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The wait a response asks for, given its headers and extensions: its [`Throttle`] when a
/// throttle layer already read it, or else read from the headers now. What a retry layer or a
/// client needs from an answer.
#[must_use]
pub fn server_wait(headers: &HeaderMap, extensions: &http::Extensions) -> Option<Duration> {
    server_signal(headers, extensions).and_then(|signal| signal.wait)
}

/// The whole [`Throttle`] of a response, given its headers and extensions: the one a throttle
/// layer already read, or else read from the headers now (with the default options). For a
/// layer that needs more than [`server_wait`], such as what the server asked for before the
/// clamp ([`Throttle::requested`]).
#[must_use]
pub fn server_signal(headers: &HeaderMap, extensions: &http::Extensions) -> Option<Throttle> {
    if let Some(signal) = extensions.get::<Throttle>() {
        return Some(signal.clone());
    }
    throttle(
        headers,
        &ParseOptions::default(),
        Instant::now(),
        SystemTime::now(),
    )
}
