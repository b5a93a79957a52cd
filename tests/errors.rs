//! Every typed error of the stack, downcast from the top of the whole stack (retry → pace →
//! an in-memory HTTP service), in paused time.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use pacer::limit::{BoxError, Limiter, Quota, RateLimited, Reason};
use pacer::retry::{
    find, AttemptTimedOut, GaveUp, RetriesExhausted, RetryLayer, RetryReason, ServerWaitTooLong,
};
use pacer::throttle::WaitTooLong;
use pacer::PaceLayer;
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};

/// The HTTP client's own error, keeping its cause as `source()` as hyper-util's does.
#[derive(Debug)]
struct ClientError(io::Error);

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("client error")
    }
}

impl StdError for ClientError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.0)
    }
}

/// Answers by path: `/ok` 200, `/unavailable` 503, `/wait/<s>` 429 with Retry-After `<s>`,
/// `/reset` a reset connection, `/tls` a certificate error, `/hang` never.
async fn server(request: Request<()>) -> Result<Response<()>, ClientError> {
    let path = request.uri().path().to_owned();
    let answer = |status: StatusCode| Response::builder().status(status).body(()).unwrap();
    match path.as_str() {
        "/ok" => Ok(answer(StatusCode::OK)),
        "/unavailable" => Ok(answer(StatusCode::SERVICE_UNAVAILABLE)),
        "/reset" => Err(ClientError(io::ErrorKind::ConnectionReset.into())),
        "/tls" => Err(ClientError(io::Error::other("certificate expired"))),
        "/hang" => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        wait => {
            let seconds = wait.strip_prefix("/wait/").expect("a known path");
            let mut response = answer(StatusCode::TOO_MANY_REQUESTS);
            response
                .headers_mut()
                .insert("retry-after", seconds.parse().unwrap());
            Ok(response)
        }
    }
}

type Client = BoxCloneService<Request<()>, Response<()>, BoxError>;

fn stack(retry: RetryLayer, pace: PaceLayer) -> Client {
    ServiceBuilder::new()
        .layer(retry)
        .layer(pace)
        .service_fn(server)
        .boxed_clone()
}

fn get(path: &str) -> Request<()> {
    Request::get(path).body(()).unwrap()
}

async fn fail(client: &Client, path: &str) -> BoxError {
    client.clone().oneshot(get(path)).await.unwrap_err()
}

#[tokio::test(start_paused = true)]
async fn a_client_side_refusal_is_at_the_top() {
    // Max wait: one request per 10 s, and no waiting beyond 1 s.
    let limiter = Limiter::builder(Quota::new(1, Duration::from_secs(10)).gcra(1))
        .max_wait(Duration::from_secs(1))
        .build();
    let client = stack(RetryLayer::new(), PaceLayer::new(limiter));
    client.clone().oneshot(get("/ok")).await.unwrap();
    let error = fail(&client, "/ok").await;
    let limited = error.downcast_ref::<RateLimited>().expect("RateLimited");
    assert_eq!(limited.reason(), Reason::MaxWait);
    assert!(limited.retry_after().unwrap() > Duration::from_secs(9));

    // Also when it refuses a retry: a 503, then no slot within the maximum wait.
    let limiter = Limiter::builder(Quota::new(1, Duration::from_secs(10)).gcra(1))
        .max_wait(Duration::from_secs(1))
        .build();
    let retry = RetryLayer::new();
    let client = stack(retry.clone(), PaceLayer::new(limiter));
    let error = fail(&client, "/unavailable").await;
    assert!(error.is::<RateLimited>(), "{error:?}");
    assert_eq!(retry.stats().retries, 1);

    // Queue full: one waiting at most.
    let limiter = Limiter::builder(Quota::new(1, Duration::from_secs(10)).gcra(1))
        .max_queue(1)
        .build();
    let client = stack(RetryLayer::new(), PaceLayer::new(limiter.clone()));
    client.clone().oneshot(get("/ok")).await.unwrap();
    let waiting = tokio::spawn(client.clone().oneshot(get("/ok")));
    while limiter.queue_stats(&()).waiting == 0 {
        tokio::task::yield_now().await;
    }
    let error = fail(&client, "/ok").await;
    let limited = error.downcast_ref::<RateLimited>().expect("RateLimited");
    assert_eq!(limited.reason(), Reason::QueueFull);
    waiting.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_server_wait_beyond_the_throttle_cap_is_at_the_top() {
    let limiter = Limiter::new(Quota::per_second(100));
    let client = stack(RetryLayer::new(), PaceLayer::new(limiter.clone()));
    let error = fail(&client, "/wait/600").await;
    let too_long = error.downcast_ref::<WaitTooLong>().expect("WaitTooLong");
    assert_eq!(too_long.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(too_long.wait(), Duration::from_secs(600));
    assert_eq!(too_long.cap(), Duration::from_secs(60));
    // Paused for the cap, and not retried.
    assert_eq!(limiter.estimated_wait(&()), Duration::from_secs(60));
    assert_eq!(limiter.stats().acquired, 1);
}

#[tokio::test(start_paused = true)]
async fn a_server_wait_beyond_the_retry_limit_is_at_the_top() {
    // The throttle accepts pausing for up to an hour; the retry layer sleeps 60 s at most.
    let limiter = Limiter::new(Quota::per_second(100));
    let pace = PaceLayer::new(limiter).max_pause(Duration::from_secs(3600));
    let client = stack(RetryLayer::new(), pace);
    let error = fail(&client, "/wait/120").await;
    let too_long = error
        .downcast_ref::<ServerWaitTooLong>()
        .expect("ServerWaitTooLong");
    assert_eq!(too_long.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(too_long.wait(), Duration::from_secs(120));
    assert_eq!(too_long.cap(), Duration::from_secs(60));
    assert_eq!(too_long.attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_attempt_is_at_the_top_or_under_retries_exhausted() {
    let limiter = Limiter::new(Quota::per_second(100));
    let once = RetryLayer::new()
        .attempt_timeout(Duration::from_secs(1))
        .max_retries(0);
    let client = stack(once, PaceLayer::new(limiter.clone()));
    let error = fail(&client, "/hang").await;
    let timed_out = error
        .downcast_ref::<AttemptTimedOut>()
        .expect("AttemptTimedOut");
    assert_eq!(timed_out.attempt(), 1);
    assert_eq!(timed_out.timeout(), Duration::from_secs(1));

    let twice = RetryLayer::new()
        .attempt_timeout(Duration::from_secs(1))
        .max_retries(1);
    let client = stack(twice, PaceLayer::new(limiter));
    let error = fail(&client, "/hang").await;
    let exhausted = error
        .downcast_ref::<RetriesExhausted>()
        .expect("RetriesExhausted");
    assert_eq!(exhausted.attempts(), 2);
    assert_eq!(exhausted.reason(), RetryReason::Timeout);
    let last = exhausted.last_error().downcast_ref::<AttemptTimedOut>();
    assert_eq!(last.map(AttemptTimedOut::attempt), Some(2));
}

#[tokio::test(start_paused = true)]
async fn retries_exhausted_keeps_the_inner_error_as_its_source() {
    let limiter = Limiter::new(Quota::per_second(100));
    let retry = RetryLayer::new();
    let client = stack(retry.clone(), PaceLayer::new(limiter.clone()));
    let error = fail(&client, "/reset").await;
    let exhausted = error
        .downcast_ref::<RetriesExhausted>()
        .expect("RetriesExhausted");
    assert_eq!(exhausted.attempts(), 3);
    assert_eq!(exhausted.why(), GaveUp::Attempts);
    assert_eq!(exhausted.reason(), RetryReason::Connection);
    // The chain: RetriesExhausted → ClientError → io::Error.
    let source = exhausted.source().expect("a source");
    assert!(source.is::<ClientError>());
    let io = find::<io::Error>(&*error).expect("an io::Error in the chain");
    assert_eq!(io.kind(), io::ErrorKind::ConnectionReset);
    assert!(error.to_string().starts_with("gave up after 3 attempts"));
    // Every attempt went through the limiter.
    assert_eq!(limiter.stats().acquired, 3);
    assert_eq!(retry.stats().exhausted, 1);
}

#[tokio::test(start_paused = true)]
async fn the_inner_services_own_error_is_at_the_top_unchanged() {
    let limiter = Limiter::new(Quota::per_second(100));
    let client = stack(RetryLayer::new(), PaceLayer::new(limiter.clone()));
    let error = fail(&client, "/tls").await;
    let own = error.downcast_ref::<ClientError>().expect("ClientError");
    assert_eq!(own.0.to_string(), "certificate expired");
    assert_eq!(limiter.stats().acquired, 1, "not worth retrying");
    // And a service that cannot fail needs no conversion at all.
    let infallible = ServiceBuilder::new()
        .layer(RetryLayer::new())
        .layer(PaceLayer::new(limiter))
        .service_fn(|_request: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
    infallible.oneshot(get("/ok")).await.unwrap();
}
