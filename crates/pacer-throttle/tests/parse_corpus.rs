//! Header corpus: what servers send in the field, and what each parser must make of it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};
use pacer_throttle::parse::{
    legacy, rate_limit_fields, retry_after, throttle, Legacy, ParseOptions, ResetFormat,
};
use pacer_throttle::Source;

const MAX: Duration = Duration::from_secs(3600);

/// 2015-10-21 07:28:00 UTC, the RFC 9110 example date.
fn rfc_date() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_445_412_480)
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for &(name, value) in pairs {
        map.append(name, HeaderValue::from_static(value));
    }
    map
}

#[test]
fn retry_after_corpus() {
    let now = rfc_date();
    let date = HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT");
    let cases: &[(&str, Option<&HeaderValue>, Option<Duration>)] = &[
        // delay-seconds
        ("120", None, Some(Duration::from_secs(120))),
        ("0", None, Some(Duration::ZERO)),
        ("  7  ", None, Some(Duration::from_secs(7))),
        // fractional seconds
        ("0.5", None, Some(Duration::from_millis(500))),
        ("1.25", None, Some(Duration::from_millis(1250))),
        // lists from repeated or merged headers: the longest
        ("30, 15", None, Some(Duration::from_secs(30))),
        ("15,30", None, Some(Duration::from_secs(30))),
        ("junk, 4", None, Some(Duration::from_secs(4))),
        // negative: zero
        ("-5", None, Some(Duration::ZERO)),
        // absurd: clamped
        ("99999999999", None, Some(MAX)),
        ("999999999999999999999999999999", None, Some(MAX)),
        // IMF-fixdate, rfc850 and asctime, measured against the response's Date
        (
            "Wed, 21 Oct 2015 07:28:30 GMT",
            Some(&date),
            Some(Duration::from_secs(30)),
        ),
        (
            "Wednesday, 21-Oct-15 07:29:00 GMT",
            Some(&date),
            Some(Duration::from_secs(60)),
        ),
        (
            "Wed Oct 21 07:30:00 2015",
            Some(&date),
            Some(Duration::from_secs(120)),
        ),
        // a date in the past: zero
        (
            "Wed, 21 Oct 2015 07:00:00 GMT",
            Some(&date),
            Some(Duration::ZERO),
        ),
        // a date far ahead: clamped
        ("Fri, 31 Dec 9999 23:59:59 GMT", Some(&date), Some(MAX)),
        // garbage
        ("", None, None),
        ("soon", None, None),
        ("1e3", None, None),
        ("Thu, 32 Oct 2015 07:28:00 GMT", Some(&date), None),
    ];
    for &(value, date, expected) in cases {
        let value = HeaderValue::from_str(value).unwrap();
        assert_eq!(
            retry_after(&value, date, now, MAX),
            expected,
            "Retry-After: {value:?}"
        );
    }
}

#[test]
fn retry_after_dates_use_the_servers_clock_not_ours() {
    // The client's clock is an hour fast; the server's Date says what time it is there.
    let skewed_now = rfc_date() + Duration::from_secs(3600);
    let date = HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT");
    let at = HeaderValue::from_static("Wed, 21 Oct 2015 07:28:10 GMT");
    assert_eq!(
        retry_after(&at, Some(&date), skewed_now, MAX),
        Some(Duration::from_secs(10))
    );
    // Without a Date, only the client's clock is left.
    assert_eq!(
        retry_after(&at, None, skewed_now, MAX),
        Some(Duration::ZERO)
    );
    // An unreadable Date is ignored too.
    let bad_date = HeaderValue::from_static("yesterday");
    assert_eq!(
        retry_after(&at, Some(&bad_date), rfc_date(), MAX),
        Some(Duration::from_secs(10))
    );
}

#[test]
fn legacy_corpus() {
    let now = rfc_date();
    let epoch = 1_445_412_480_u64;
    let cases: Vec<(HeaderMap, ResetFormat, Legacy)> = vec![
        // GitHub: epoch seconds
        (
            headers(&[
                ("x-ratelimit-limit", "5000"),
                ("x-ratelimit-remaining", "4999"),
                ("x-ratelimit-reset", "1445412540"),
            ]),
            ResetFormat::Auto,
            Legacy {
                limit: Some(5000),
                remaining: Some(4999),
                reset: Some(Duration::from_secs(60)),
            },
        ),
        // Twitter/X style prefix, delta seconds
        (
            headers(&[
                ("x-rate-limit-remaining", "0"),
                ("x-rate-limit-reset", "15"),
            ]),
            ResetFormat::Auto,
            Legacy {
                limit: None,
                remaining: Some(0),
                reset: Some(Duration::from_secs(15)),
            },
        ),
        // epoch milliseconds
        (
            headers(&[("x-ratelimit-reset", "1445412482500")]),
            ResetFormat::Auto,
            Legacy {
                reset: Some(Duration::from_millis(2500)),
                ..Legacy::default()
            },
        ),
        // draft-03 style RateLimit-* with parameters
        (
            headers(&[
                ("ratelimit-limit", "100, 100;w=60"),
                ("ratelimit-remaining", "40"),
                ("ratelimit-reset", "30"),
            ]),
            ResetFormat::Auto,
            Legacy {
                limit: Some(100),
                remaining: Some(40),
                reset: Some(Duration::from_secs(30)),
            },
        ),
        // explicit override: a small epoch-looking value read as epoch seconds is in the past
        (
            headers(&[("x-ratelimit-reset", "60")]),
            ResetFormat::EpochSeconds,
            Legacy {
                reset: Some(Duration::ZERO),
                ..Legacy::default()
            },
        ),
        // explicit override: a large delta is clamped
        (
            headers(&[("x-ratelimit-reset", "1445412540")]),
            ResetFormat::DeltaSeconds,
            Legacy {
                reset: Some(MAX),
                ..Legacy::default()
            },
        ),
        // negative remaining: zero; garbage: absent
        (
            headers(&[
                ("x-ratelimit-remaining", "-3"),
                ("x-ratelimit-limit", "lots"),
                ("x-ratelimit-reset", "soon"),
            ]),
            ResetFormat::Auto,
            Legacy {
                remaining: Some(0),
                ..Legacy::default()
            },
        ),
    ];
    for (map, format, expected) in cases {
        assert_eq!(legacy(&map, now, format, MAX), expected, "{map:?}");
    }
    // Epoch resets are measured against the response's Date when it has one.
    let map = headers(&[
        ("x-ratelimit-reset", "1445412540"),
        ("date", "Wed, 21 Oct 2015 07:28:30 GMT"),
    ]);
    let skewed_now = UNIX_EPOCH + Duration::from_secs(epoch + 7200);
    assert_eq!(
        legacy(&map, skewed_now, ResetFormat::Auto, MAX).reset,
        Some(Duration::from_secs(30))
    );
}

#[test]
fn ietf_fields_corpus() {
    // draft -10/-11 syntax: the RateLimit item names its policy.
    let map = headers(&[
        (
            "ratelimit-policy",
            "\"burst\";q=100;w=1, \"daily\";q=1000;w=86400",
        ),
        ("ratelimit", "\"burst\";r=40;t=1, \"daily\";r=900;t=3000"),
    ]);
    let fields = rate_limit_fields(&map, MAX);
    assert_eq!(fields.policy.as_deref(), Some("burst"));
    assert_eq!(fields.remaining, Some(40));
    assert_eq!(fields.reset, Some(Duration::from_secs(1)));
    assert_eq!(fields.limit, Some(100));
    assert_eq!(fields.window, Some(Duration::from_secs(1)));

    // The most constrained policy wins; tokens are accepted as names.
    let map = headers(&[
        ("ratelimit-policy", "burst;q=100;w=1, daily;q=1000;w=86400"),
        ("ratelimit", "burst;r=40;t=1, daily;r=0;t=3000"),
    ]);
    let fields = rate_limit_fields(&map, MAX);
    assert_eq!(fields.policy.as_deref(), Some("daily"));
    assert_eq!((fields.remaining, fields.limit), (Some(0), Some(1000)));
    assert_eq!(fields.reset, Some(Duration::from_secs(3000)));

    // Fields split over several lines are one list.
    let map = headers(&[
        ("ratelimit", "\"a\";r=5;t=2"),
        ("ratelimit", "\"b\";r=3;t=9"),
    ]);
    assert_eq!(rate_limit_fields(&map, MAX).remaining, Some(3));

    // Malformed fields are ignored as a whole; members without their required parameter are
    // skipped; negative or non-integer parameters count as absent.
    for value in [
        "\"a\";r=5;t=2, (",
        "\"a\";r=5;t=",
        "r=5, t=2",
        "\"a\";r=-1",
        "\"a\";r=1.5",
        "\"a\";t=5",
    ] {
        let map = headers(&[("ratelimit", value)]);
        assert_eq!(
            rate_limit_fields(&map, MAX).remaining,
            None,
            "RateLimit: {value}"
        );
    }
    // Absurd windows and resets are clamped.
    let map = headers(&[
        ("ratelimit-policy", "\"x\";q=1;w=999999999999"),
        ("ratelimit", "\"x\";r=0;t=999999999999"),
    ]);
    let fields = rate_limit_fields(&map, MAX);
    assert_eq!((fields.window, fields.reset), (Some(MAX), Some(MAX)));
}

#[test]
fn combined_retry_after_wins_and_ietf_beats_legacy() {
    let received = tokio::time::Instant::now();
    let options = ParseOptions::default();
    let map = headers(&[
        ("retry-after", "3"),
        ("ratelimit", "\"default\";r=0;t=10"),
        ("x-ratelimit-remaining", "7"),
    ]);
    let signal = throttle(&map, &options, received, rfc_date()).unwrap();
    assert_eq!(signal.source, Source::RetryAfter);
    assert_eq!(signal.wait, Some(Duration::from_secs(3)));
    assert_eq!(signal.wait_until, Some(received + Duration::from_secs(3)));
    assert_eq!(signal.remaining, Some(0));
    assert_eq!(signal.reset, Some(Duration::from_secs(10)));

    // Nothing left and no Retry-After: wait for the reset.
    let map = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "4")]);
    let signal = throttle(&map, &options, received, rfc_date()).unwrap();
    assert_eq!(signal.source, Source::LegacyHeaders);
    assert_eq!(signal.wait, Some(Duration::from_secs(4)));

    // Plenty left: figures, no wait.
    let map = headers(&[("x-ratelimit-remaining", "50"), ("x-ratelimit-limit", "60")]);
    let signal = throttle(&map, &options, received, rfc_date()).unwrap();
    assert_eq!(
        (signal.wait, signal.remaining, signal.limit),
        (None, Some(50), Some(60))
    );

    // No signal at all.
    assert_eq!(
        throttle(
            &headers(&[("content-type", "application/json")]),
            &options,
            received,
            rfc_date()
        ),
        None
    );
}
