//! The retry layer over the limiter and the throttle layer, in paused time: a refusal the
//! throttle layer fed back to the limiter is retried at the key's next slot, without a backoff
//! of its own (the slowed key is the backoff), and without the throttle layer it backs off.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use pacer::limit::{LimitLayer, Limiter, Quota};
use pacer::retry::{Backoff, Idempotent, Jitter, RetryLayer};
use pacer::throttle::{Adaptive, Paced, ThrottleLayer};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

/// Sends one idempotent request through retry → rate limit → throttle to a server that refuses
/// the first attempt with a bare 429 (no Retry-After, as nginx and HAProxy answer); returns the
/// gap between the two attempts and whether the refusal was marked [`Paced`].
async fn gap_after_a_bare_429(adaptive: Adaptive) -> (Duration, bool) {
    gap_after_a_bare_refusal(StatusCode::TOO_MANY_REQUESTS, adaptive).await
}

/// The same with the refusal's status of choice.
async fn gap_after_a_bare_refusal(refusal: StatusCode, adaptive: Adaptive) -> (Duration, bool) {
    let limiter = Limiter::new(Quota::per_second(1000).with_margin(Duration::ZERO));
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&arrivals);
    let marked = Arc::new(Mutex::new(false));
    let seen = Arc::clone(&marked);
    // Without jitter, so that a backoff is 100 ms for certain.
    let retry = RetryLayer::new().backoff(
        Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).jitter(Jitter::None),
    );
    let client = ServiceBuilder::new()
        .layer(retry)
        .layer(LimitLayer::new(limiter.clone()))
        .map_response(move |response: Response<()>| {
            if response.status() == refusal {
                *seen.lock().unwrap() = response.extensions().get::<Paced>().is_some();
            }
            response
        })
        .layer(ThrottleLayer::new(limiter.clone()).adaptive(adaptive))
        .service_fn(move |_request: Request<()>| {
            let mut log = log.lock().unwrap();
            log.push(Instant::now());
            let status = if log.len() == 1 {
                refusal
            } else {
                StatusCode::OK
            };
            let response = Response::builder().status(status).body(()).unwrap();
            async move { Ok::<_, Infallible>(response) }
        });
    let mut request = Request::post("/events").body(()).unwrap();
    request.extensions_mut().insert(Idempotent);
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let arrivals = arrivals.lock().unwrap();
    assert_eq!(arrivals.len(), 2);
    let marked = *marked.lock().unwrap();
    (arrivals[1] - arrivals[0], marked)
}

#[tokio::test(start_paused = true)]
async fn a_refusal_fed_back_to_the_limiter_is_retried_at_the_next_slot() {
    let (gap, paced) = gap_after_a_bare_429(Adaptive::default()).await;
    assert!(paced, "the throttle layer marks the refusal it fed back");
    // The key's next slot at its slowed rate (about 1 ms), not a 100 ms backoff.
    assert!(gap <= Duration::from_millis(2), "retried after {gap:?}");
}

#[tokio::test(start_paused = true)]
async fn a_refusal_the_limiter_never_heard_of_backs_off() {
    // Without adaptation and without a Retry-After, the refusal changes nothing in the
    // limiter: the retry layer's own backoff applies.
    let (gap, paced) = gap_after_a_bare_429(Adaptive::off()).await;
    assert!(!paced);
    assert_eq!(gap, Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn a_503_keeps_the_backoff_that_spreads_attempts_over_an_outage() {
    let (gap, paced) =
        gap_after_a_bare_refusal(StatusCode::SERVICE_UNAVAILABLE, Adaptive::default()).await;
    assert!(!paced, "a 503 is not marked");
    assert_eq!(gap, Duration::from_millis(100));
}
