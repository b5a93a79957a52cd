//! Hostile input for every parser: arbitrary bytes never panic, and every duration stays within
//! `[0, max]`. Plus round trips for the well-formed cases.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use pacer_throttle::parse::{
    legacy, rate_limit_fields, retry_after, throttle, ParseOptions, ResetFormat,
};
use proptest::prelude::*;

const MAX: Duration = Duration::from_secs(60);

/// Any bytes a header value can hold (HeaderValue refuses only control characters).
fn value_bytes() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        // Near-misses of the real syntax are where parsers break.
        "[-0-9., ;=\"a-zA-Z()?*:]{0,48}".prop_map(String::into_bytes),
    ]
    .prop_filter_map("not a valid header value", |bytes| {
        HeaderValue::from_bytes(&bytes).ok()
    })
}

fn any_time() -> impl Strategy<Value = SystemTime> {
    (0_u64..=253_402_300_799).prop_map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
}

fn reset_format() -> impl Strategy<Value = ResetFormat> {
    prop_oneof![
        Just(ResetFormat::Auto),
        Just(ResetFormat::DeltaSeconds),
        Just(ResetFormat::EpochSeconds),
        Just(ResetFormat::EpochMillis),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn retry_after_never_panics_and_stays_in_bounds(
        value in value_bytes(),
        date in proptest::option::of(value_bytes()),
        now in any_time(),
    ) {
        if let Some(delay) = retry_after(&value, date.as_ref(), now, MAX) {
            prop_assert!(delay <= MAX);
        }
    }

    #[test]
    fn every_parser_survives_any_headers(
        values in prop::collection::vec((0_usize..12, value_bytes()), 0..8),
        now in any_time(),
        format in reset_format(),
    ) {
        const NAMES: [&str; 12] = [
            "retry-after", "date", "ratelimit", "ratelimit-policy", "x-ratelimit-limit",
            "x-ratelimit-remaining", "x-ratelimit-reset", "x-rate-limit-reset",
            "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "x-rate-limit-remaining",
        ];
        let mut map = HeaderMap::new();
        for (name, value) in values {
            map.append(HeaderName::from_static(NAMES[name]), value);
        }
        let legacy = legacy(&map, now, format, MAX);
        prop_assert!(legacy.reset.is_none_or(|reset| reset <= MAX));
        let fields = rate_limit_fields(&map, MAX);
        prop_assert!(fields.reset.is_none_or(|reset| reset <= MAX));
        prop_assert!(fields.window.is_none_or(|window| window <= MAX));
        let options = ParseOptions::default().max(MAX).reset_format(format);
        let received = tokio::time::Instant::now();
        if let Some(signal) = throttle(&map, &options, received, now) {
            prop_assert!(signal.wait.is_none_or(|wait| wait <= MAX));
            prop_assert_eq!(signal.wait_until, signal.wait.map(|wait| received + wait));
        }
    }

    #[test]
    fn delay_seconds_round_trip(seconds in any::<u64>(), millis in 0_u32..1000) {
        let text = format!("{seconds}.{millis:03}");
        let value = HeaderValue::from_str(&text).unwrap();
        let expected = if seconds >= MAX.as_secs() {
            MAX
        } else {
            Duration::new(seconds, millis * 1_000_000)
        };
        prop_assert_eq!(retry_after(&value, None, SystemTime::now(), MAX), Some(expected));
    }

    #[test]
    fn http_dates_round_trip_against_the_date_header(
        server_now in any_time(),
        delay in 0_u64..120,
        client_skew in -100_000_i64..100_000,
    ) {
        let at = server_now + Duration::from_secs(delay);
        prop_assume!(at.duration_since(UNIX_EPOCH).unwrap().as_secs() <= 253_402_300_799);
        let value = HeaderValue::from_str(&httpdate::fmt_http_date(at)).unwrap();
        let date = HeaderValue::from_str(&httpdate::fmt_http_date(server_now)).unwrap();
        let client_now = if client_skew >= 0 {
            server_now + Duration::from_secs(client_skew as u64)
        } else {
            server_now.checked_sub(Duration::from_secs(client_skew.unsigned_abs())).unwrap_or(UNIX_EPOCH)
        };
        prop_assert_eq!(
            retry_after(&value, Some(&date), client_now, MAX),
            Some(Duration::from_secs(delay).min(MAX))
        );
    }
}
