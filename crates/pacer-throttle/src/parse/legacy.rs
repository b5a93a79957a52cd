//! The legacy rate-limit headers: `X-RateLimit-*`, `X-Rate-Limit-*`, `RateLimit-Limit/-Remaining/-Reset`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

use super::number::{first_element, Decimal};
use super::ResetFormat;

/// The header names of each field, most common family first (static: nothing is formatted per
/// response).
const LIMIT: [&str; 3] = ["x-ratelimit-limit", "x-rate-limit-limit", "ratelimit-limit"];
const REMAINING: [&str; 3] = [
    "x-ratelimit-remaining",
    "x-rate-limit-remaining",
    "ratelimit-remaining",
];
const RESET: [&str; 3] = ["x-ratelimit-reset", "x-rate-limit-reset", "ratelimit-reset"];

/// What the legacy headers say. Each field comes from the first family that has it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Legacy {
    /// `*-Limit`: requests allowed per window.
    pub limit: Option<u64>,
    /// `*-Remaining`: requests left in this window.
    pub remaining: Option<u64>,
    /// `*-Reset`: time until the window resets, clamped to `[0, max]`.
    pub reset: Option<Duration>,
}

impl Legacy {
    /// Whether any of the headers was present and readable.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Reads the legacy rate-limit headers of a response.
///
/// `*-Reset` is delta-seconds, epoch seconds or epoch milliseconds depending on the server;
/// [`ResetFormat::Auto`] tells them apart by magnitude (below 10⁹: delta; below 10¹²: epoch
/// seconds; above: epoch milliseconds). Epoch values are measured against the response's `Date`
/// when valid, or else `now`. Values that are not numbers are ignored.
#[must_use]
pub fn legacy(headers: &HeaderMap, now: SystemTime, format: ResetFormat, max: Duration) -> Legacy {
    let number = |names: &[&str; 3]| {
        names.iter().find_map(|name| {
            let value = headers.get(*name)?;
            Decimal::parse(first_element(value.to_str().ok()?))
        })
    };
    Legacy {
        limit: number(&LIMIT).map(Decimal::as_count),
        remaining: number(&REMAINING).map(Decimal::as_count),
        reset: number(&RESET).map(|reset| reset_delay(reset, headers, now, format, max)),
    }
}

fn reset_delay(
    reset: Decimal,
    headers: &HeaderMap,
    now: SystemTime,
    format: ResetFormat,
    max: Duration,
) -> Duration {
    let format = match format {
        ResetFormat::Auto if reset.negative || reset.whole < 1_000_000_000 => {
            ResetFormat::DeltaSeconds
        }
        ResetFormat::Auto if reset.whole < 1_000_000_000_000 => ResetFormat::EpochSeconds,
        ResetFormat::Auto => ResetFormat::EpochMillis,
        explicit => explicit,
    };
    let epoch_offset = match format {
        ResetFormat::EpochSeconds => Duration::new(reset.whole, reset.nanos),
        ResetFormat::EpochMillis => Duration::from_millis(reset.whole),
        _ => return reset.as_seconds(max),
    };
    if reset.negative {
        return Duration::ZERO;
    }
    let reference = headers
        .get(http::header::DATE)
        .and_then(|date| httpdate::parse_http_date(date.to_str().ok()?.trim()).ok())
        .unwrap_or(now);
    let since_epoch = reference
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    epoch_offset.saturating_sub(since_epoch).min(max)
}
