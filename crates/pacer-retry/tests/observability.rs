//! The retry layer's `tracing` events at its decision points: retried, gave up and why.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use pacer_retry::RetryLayer;
use pacer_testkit::capture;
use tower::{ServiceBuilder, ServiceExt};
use tracing::Level;

fn answering(
    status: StatusCode,
    retry_after: Option<&'static str>,
) -> impl tower::Service<
    Request<String>,
    Response = Response<()>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone {
    let calls = Arc::new(AtomicU32::new(0));
    tower::service_fn(move |_req: Request<String>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let mut response = Response::builder().status(status);
        if let Some(value) = retry_after {
            response = response.header("retry-after", value);
        }
        let response = response.body(()).unwrap();
        async move { Ok::<_, std::io::Error>(response) }
    })
}

fn layer() -> RetryLayer {
    RetryLayer::new().seed(1).no_budget()
}

#[tokio::test(start_paused = true)]
async fn retries_and_each_way_of_giving_up_are_reported() {
    let (capture, _guard) = capture();
    let get = || Request::get("/").body(String::new()).unwrap();

    let client = ServiceBuilder::new()
        .layer(layer())
        .service(answering(StatusCode::SERVICE_UNAVAILABLE, None));
    let _ = client.oneshot(get()).await;
    let retries = capture.find(Level::DEBUG, "retrying");
    assert_eq!(retries.len(), 2);
    assert!(
        retries[0].has("attempt=2") && retries[0].has("reason=Status(503)"),
        "{retries:?}"
    );
    assert_eq!(capture.find(Level::INFO, "attempts exhausted").len(), 1);

    let client = ServiceBuilder::new()
        .layer(layer())
        .service(answering(StatusCode::TOO_MANY_REQUESTS, Some("86400")));
    let _ = client.oneshot(get()).await;
    assert_eq!(capture.find(Level::WARN, "too long a wait").len(), 1);

    let spent = RetryLayer::new().seed(1).budget(0.0, 0);
    let client = ServiceBuilder::new()
        .layer(spent)
        .service(answering(StatusCode::BAD_GATEWAY, None));
    let _ = client.oneshot(get()).await;
    assert_eq!(
        capture.find(Level::INFO, "retry budget spent").len(),
        1,
        "{:?}",
        capture.events()
    );

    let post = Request::post("/").body(String::new()).unwrap();
    let client = ServiceBuilder::new()
        .layer(layer())
        .service(answering(StatusCode::SERVICE_UNAVAILABLE, None));
    let _ = client.oneshot(post).await;
    assert_eq!(capture.find(Level::DEBUG, "may not be repeated").len(), 1);
}
