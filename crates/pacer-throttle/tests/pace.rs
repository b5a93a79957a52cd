//! `PaceLayer`: one limiter and one key for both halves, and the throttle's configuration
//! reaching the throttle, in paused time.

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use pacer_limit::{Limiter, Quota};
use pacer_throttle::{Adaptive, PaceLayer, Paced, WaitTooLong};
use tower::{ServiceBuilder, ServiceExt};

fn refusing(
    status: StatusCode,
    retry_after: Option<&'static str>,
) -> impl tower::Service<Request<&'static str>, Response = Response<()>, Error = Infallible> + Clone
{
    tower::service_fn(move |request: Request<&'static str>| async move {
        let mut response = Response::new(());
        if *request.body() == "refuse" {
            *response.status_mut() = status;
            if let Some(wait) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", wait.parse().unwrap());
            }
        }
        Ok(response)
    })
}

#[tokio::test(start_paused = true)]
async fn the_cap_and_the_refusal_statuses_reach_the_throttle() {
    let limiter = Limiter::new(Quota::per_second(10));
    let client = ServiceBuilder::new()
        .layer(
            PaceLayer::new(limiter.clone())
                .max_pause(Duration::from_secs(10))
                .refusal_statuses([StatusCode::IM_A_TEAPOT]),
        )
        .service(refusing(StatusCode::IM_A_TEAPOT, Some("120")));
    let error = client
        .clone()
        .oneshot(Request::new("refuse"))
        .await
        .unwrap_err();
    // Through the rate limit above it, unwrapped.
    let too_long = error.downcast_ref::<WaitTooLong>().unwrap();
    assert_eq!(too_long.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(too_long.wait(), Duration::from_secs(120));
    assert_eq!(too_long.cap(), Duration::from_secs(10));
    assert_eq!(limiter.estimated_wait(&()), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn adaptation_can_be_turned_off() {
    // A 429 without a wait is marked Paced only when the key's rate adapts to it.
    for (adaptive, paced) in [(Adaptive::default(), true), (Adaptive::off(), false)] {
        let limiter = Limiter::new(Quota::per_second(10));
        let client = ServiceBuilder::new()
            .layer(PaceLayer::new(limiter.clone()).adaptive(adaptive))
            .service(refusing(StatusCode::TOO_MANY_REQUESTS, None));
        let response = client.oneshot(Request::new("refuse")).await.unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.extensions().get::<Paced>().is_some(), paced);
    }
}

#[tokio::test(start_paused = true)]
async fn keyed_pacing_pauses_only_the_refused_key() {
    let limiter = Limiter::<bool>::builder(Quota::per_second(10)).build();
    // The key: whether the request is one the server refuses.
    let key = |request: &Request<&'static str>| *request.body() == "refuse";
    let pace = PaceLayer::keyed(limiter.clone(), key);
    assert_eq!(pace.limiter().stats().acquired, 0);
    let client = ServiceBuilder::new()
        .layer(pace)
        .service(refusing(StatusCode::TOO_MANY_REQUESTS, Some("30")));
    let refused = client
        .clone()
        .oneshot(Request::new("refuse"))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limiter.estimated_wait(&true), Duration::from_secs(30));
    assert!(limiter.estimated_wait(&false) < Duration::from_secs(1));
    let start = tokio::time::Instant::now();
    client.oneshot(Request::new("fine")).await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn the_two_halves_compose_by_hand_with_a_layer_between() {
    let limiter = Limiter::new(Quota::per_second(100));
    let (rate_limit, throttle) = PaceLayer::new(limiter.clone()).into_layers();
    let client = ServiceBuilder::new()
        .layer(rate_limit)
        .map_response(|response: Response<()>| response)
        .layer(throttle)
        .service(refusing(StatusCode::TOO_MANY_REQUESTS, Some("2")));
    client
        .clone()
        .oneshot(Request::new("refuse"))
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    client.oneshot(Request::new("fine")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}
