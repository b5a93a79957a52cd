//! The throttle layer's `tracing` events at its decision points: throttled, gave up, adapted.

use std::convert::Infallible;

use http::{Request, Response, StatusCode};
use pacer_limit::{LimitLayer, Limiter, Quota};
use pacer_testkit::capture;
use pacer_throttle::ThrottleLayer;
use tower::{ServiceBuilder, ServiceExt};
use tracing::Level;

fn refusal(retry_after: &'static str) -> Response<()> {
    Response::builder()
        .status(StatusCode::TOO_MANY_REQUESTS)
        .header("retry-after", retry_after)
        .body(())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn throttling_giving_up_and_adapting_are_reported() {
    let (capture, _guard) = capture();
    let limiter = Limiter::new(Quota::per_second(100));
    let client = |retry_after: &'static str| {
        ServiceBuilder::new()
            .layer(LimitLayer::new(limiter.clone()))
            .layer(ThrottleLayer::new(limiter.clone()))
            .service(tower::service_fn(move |_req: Request<()>| async move {
                Ok::<_, Infallible>(refusal(retry_after))
            }))
    };
    let _ = client("2").oneshot(Request::new(())).await.unwrap();
    let throttled = capture.find(Level::INFO, "throttled by the server");
    assert_eq!(throttled.len(), 1);
    assert!(
        throttled[0].has("wait=2s") && throttled[0].has("status=429"),
        "{throttled:?}"
    );
    assert_eq!(capture.find(Level::DEBUG, "adapted key rate").len(), 1);

    let _ = client("86400").oneshot(Request::new(())).await;
    let gave_up = capture.find(Level::WARN, "beyond the cap");
    assert_eq!(gave_up.len(), 1, "{:?}", capture.events());
    assert!(gave_up[0].has("cap=60s"));
}
