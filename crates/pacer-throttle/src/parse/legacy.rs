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
/// seconds; above: epoch milliseconds). Epoch values are measured against `now` when it reads
/// within the second of the response's `Date`, against `Date` when `now` is outside it (a
/// skewed local clock), and against `now` without a valid `Date`. Values that are not numbers
/// are ignored.
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
    let date = headers
        .get(http::header::DATE)
        .and_then(|date| httpdate::parse_http_date(date.to_str().ok()?.trim()).ok());
    let reference = match date {
        // `Date` has whole seconds, truncated: the server's clock reads somewhere in the second
        // after it. While the local clock reads within that second too, it is the same clock
        // with the fraction the header dropped; measured from `Date` alone, a reset at the next
        // second would always look a whole second away. A local clock outside that second is
        // skewed, and `Date` (the earliest the server's clock can read) keeps the reset from
        // looking sooner than it is.
        Some(date) if now >= date && now < date + Duration::from_secs(1) => now,
        Some(date) => date,
        None => now,
    };
    let since_epoch = reference
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    epoch_offset.saturating_sub(since_epoch).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(reset: &str, date: SystemTime) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-reset", reset.parse().unwrap());
        headers.insert(
            http::header::DATE,
            httpdate::fmt_http_date(date).parse().unwrap(),
        );
        headers
    }

    const MAX: Duration = Duration::from_secs(3600);

    #[test]
    fn an_epoch_reset_is_measured_to_the_fraction_of_a_second_date_drops() {
        let second = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let now = second + Duration::from_millis(700);
        for (reset, format) in [
            ("1700000001", ResetFormat::Auto),
            ("1700000001000", ResetFormat::Auto),
        ] {
            let parsed = legacy(&headers(reset, now), now, format, MAX);
            assert_eq!(parsed.reset, Some(Duration::from_millis(300)), "{reset}");
        }
    }

    #[test]
    fn a_skewed_local_clock_falls_back_on_date() {
        let second = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let headers = headers("1700000001", second);
        // The local clock runs 5 s ahead: the reset is a second from the server's `Date`.
        let ahead = second + Duration::from_secs(5);
        let parsed = legacy(&headers, ahead, ResetFormat::Auto, MAX);
        assert_eq!(parsed.reset, Some(Duration::from_secs(1)));
        let behind = second - Duration::from_secs(5);
        let parsed = legacy(&headers, behind, ResetFormat::Auto, MAX);
        assert_eq!(parsed.reset, Some(Duration::from_secs(1)));
    }
}
