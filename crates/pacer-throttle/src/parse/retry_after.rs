//! `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date, as servers really send it.

use std::time::{Duration, SystemTime};

use http::HeaderValue;

use super::number::Decimal;

/// The delay a `Retry-After` value asks for, clamped to `[0, max]`.
///
/// - delay-seconds, plus what servers send in the field: fractions (`0.5`), negative values
///   (zero), absurd values (`max`), lists from repeated or merged headers (`30, 15`: the
///   longest, since waiting too little is what gets a client refused again);
/// - an HTTP-date in any of the three RFC 9110 forms (IMF-fixdate, rfc850, asctime), measured
///   against the response's own `Date` when it has a valid one, so a skewed client clock does
///   not matter, or else against `now`.
///
/// `None` when the value says nothing usable.
///
/// ```
/// # mod pacer { pub mod throttle { pub use ::pacer_throttle::*; } }
/// use std::time::{Duration, SystemTime};
/// use http::HeaderValue;
/// use pacer::throttle::parse::retry_after;
///
/// let max = Duration::from_secs(60);
/// let now = SystemTime::now();
/// assert_eq!(retry_after(&HeaderValue::from_static("1.5"), None, now, max), Some(Duration::from_millis(1500)));
/// // Measured against the server's Date, not the client's clock.
/// let date = HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT");
/// let at = HeaderValue::from_static("Wed, 21 Oct 2015 07:28:30 GMT");
/// assert_eq!(retry_after(&at, Some(&date), now, max), Some(Duration::from_secs(30)));
/// ```
#[must_use]
pub fn retry_after(
    value: &HeaderValue,
    date: Option<&HeaderValue>,
    now: SystemTime,
    max: Duration,
) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(at) = httpdate::parse_http_date(text) {
        let reference = date
            .and_then(|date| httpdate::parse_http_date(date.to_str().ok()?.trim()).ok())
            .unwrap_or(now);
        let delay = at.duration_since(reference).unwrap_or(Duration::ZERO);
        return Some(delay.min(max));
    }
    text.split(',')
        .filter_map(Decimal::parse)
        .map(|seconds| seconds.as_seconds(max))
        .max()
}
