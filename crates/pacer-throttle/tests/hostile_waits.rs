//! Absurd server waits: clamped where the layer acts on them, kept as sent where a message
//! reports them, and a success's pause never beyond the cap without a warning.

use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Request, Response, StatusCode};
use pacer_limit::{LimitLayer, Limiter, Quota};
use pacer_testkit::capture;
use pacer_throttle::parse::{throttle, ParseOptions};
use pacer_throttle::{ThrottleLayer, WaitTooLong};
use tower::{ServiceBuilder, ServiceExt};
use tracing::Level;

const HOUR: Duration = Duration::from_secs(3600);
const SEVENTY_YEARS: Duration = Duration::from_secs(70 * 365 * 86_400);

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(name, value)| (http::HeaderName::from_static(name), value.parse().unwrap()))
        .collect()
}

fn parse(pairs: &[(&'static str, &str)]) -> pacer_throttle::Throttle {
    let now = tokio::time::Instant::now();
    throttle(
        &headers(pairs),
        &ParseOptions::default(),
        now,
        SystemTime::now(),
    )
    .unwrap()
}

#[test]
fn the_wait_is_clamped_and_what_the_server_asked_is_kept() {
    let signal = parse(&[("retry-after", "99999999999")]);
    assert_eq!(signal.wait, Some(HOUR));
    assert_eq!(signal.requested, Some(Duration::from_secs(99_999_999_999)));
    assert_eq!(signal.retry_after.as_deref(), Some("99999999999"));

    let date = "Thu, 01 Jan 2099 00:00:00 GMT";
    let signal = parse(&[("retry-after", date)]);
    assert_eq!(signal.wait, Some(HOUR));
    assert!(signal.requested.unwrap() > SEVENTY_YEARS);
    assert_eq!(signal.retry_after.as_deref(), Some(date));

    let signal = parse(&[
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", "86400"),
    ]);
    assert_eq!(signal.wait, Some(HOUR));
    assert_eq!(signal.reset, Some(HOUR));
    assert_eq!(signal.requested, Some(Duration::from_secs(86_400)));
    assert_eq!(signal.retry_after, None);

    // A huge value saturates rather than overflows, and its text stays bounded.
    let huge = "9".repeat(400);
    let signal = parse(&[("retry-after", &huge)]);
    assert_eq!(signal.wait, Some(HOUR));
    assert_eq!(signal.requested, Some(Duration::from_secs(u64::MAX)));
    let kept = signal.retry_after.unwrap();
    assert_eq!(kept, format!("{}…", "9".repeat(64)));
}

async fn refused_with(retry_after: &'static str) -> WaitTooLong {
    let limiter = Limiter::new(Quota::per_second(100));
    let client = ServiceBuilder::new()
        .layer(LimitLayer::new(limiter.clone()))
        .layer(ThrottleLayer::new(limiter.clone()))
        .service(tower::service_fn(move |_req: Request<()>| async move {
            let response = Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header("retry-after", retry_after)
                .body(())
                .unwrap();
            Ok::<_, Infallible>(response)
        }));
    let error = client.oneshot(Request::new(())).await.unwrap_err();
    // The key is paused for the cap only, whatever the server asked.
    assert!(limiter.estimated_wait(&()) <= Duration::from_secs(60));
    *error.downcast::<WaitTooLong>().unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_wait_too_long_says_what_the_server_sent() {
    let too_long = refused_with("99999999999").await;
    assert_eq!(too_long.wait(), Duration::from_secs(99_999_999_999));
    assert_eq!(too_long.retry_after(), Some("99999999999"));
    let message = too_long.to_string();
    assert!(
        message.contains("asked to wait 99999999999s (Retry-After: 99999999999)"),
        "{message}"
    );

    let date = "Thu, 01 Jan 2099 00:00:00 GMT";
    let too_long = refused_with(date).await;
    assert!(too_long.wait() > SEVENTY_YEARS);
    assert!(too_long.to_string().contains(date), "{too_long}");
}

#[tokio::test(start_paused = true)]
async fn a_success_spending_the_quota_for_a_day_pauses_for_the_cap_with_a_warning() {
    let (capture, _guard) = capture();
    let limiter = Limiter::new(Quota::per_second(100));
    let client = ServiceBuilder::new()
        .layer(LimitLayer::new(limiter.clone()))
        .layer(ThrottleLayer::new(limiter.clone()))
        .service(tower::service_fn(|_req: Request<()>| async {
            let response = Response::builder()
                .header("x-ratelimit-remaining", "0")
                .header("x-ratelimit-reset", "86400")
                .body(())
                .unwrap();
            Ok::<_, Infallible>(response)
        }));
    let response = client.oneshot(Request::new(())).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let wait = limiter.estimated_wait(&());
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    let warned = capture.find(Level::WARN, "beyond the cap");
    assert_eq!(warned.len(), 1, "{:?}", capture.events());
    assert!(
        warned[0].has("wait=86400s") && warned[0].has("cap=60s"),
        "{warned:?}"
    );
}
