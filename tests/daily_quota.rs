//! A 429 without `Retry-After` once a long window is spent (Customer.io's App API answers a
//! spent daily quota so), end to end through retry → rate limit → throttle, in paused time:
//! the key pauses until the window frees, within the stack's wait cap, and beyond it the caller
//! gets a `WaitTooLong` that names the spent window and when it frees, not a retry exhaustion.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use pacer::limit::{LimitLayer, Limiter, Quota};
use pacer::retry::{Idempotent, RetryLayer};
use pacer::throttle::{ThrottleLayer, WaitTooLong};
use tokio::time::Instant;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

/// A server with a long quota of `limit` per `window`, counted as a sliding window, of which
/// `elsewhere` were spent by another client at the start: a refusal carries no `Retry-After`.
/// Records every arrival with its status.
#[derive(Clone)]
struct Server {
    limit: usize,
    window: Duration,
    start: Instant,
    elsewhere: usize,
    log: Arc<Mutex<Vec<(Instant, StatusCode)>>>,
}

impl Server {
    fn new(limit: usize, window: Duration, elsewhere: usize) -> Self {
        Self {
            limit,
            window,
            start: Instant::now(),
            elsewhere,
            log: Arc::default(),
        }
    }

    fn answer(&self) -> StatusCode {
        let now = Instant::now();
        let mut log = self.log.lock().unwrap();
        let recent = log
            .iter()
            .filter(|(at, status)| *status == StatusCode::OK && *at + self.window > now)
            .count();
        let other = if self.start + self.window > now {
            self.elsewhere
        } else {
            0
        };
        let status = if recent + other >= self.limit {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::OK
        };
        log.push((now, status));
        status
    }

    fn refusals(&self) -> Vec<Instant> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(_, s)| *s != StatusCode::OK)
            .map(|(at, _)| *at)
            .collect()
    }
}

/// retry → rate limit → throttle (wait cap `max_wait`) → `server`.
fn stack(
    quota: Quota,
    max_wait: Duration,
    server: &Server,
) -> (
    Limiter,
    impl Service<Request<()>, Response = Response<()>, Error = BoxError> + Clone,
) {
    let limiter = Limiter::new(quota);
    let server = server.clone();
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new().max_server_wait(max_wait))
        .layer(LimitLayer::new(limiter.clone()))
        .layer(ThrottleLayer::new(limiter.clone()).max_pause(max_wait))
        .service_fn(move |_request: Request<()>| {
            let response = Response::builder()
                .status(server.answer())
                .body(())
                .unwrap();
            async move { Ok::<_, Infallible>(response) }
        });
    (limiter, client)
}

fn request() -> Request<()> {
    let mut request = Request::post("/v1/customers").body(()).unwrap();
    request.extensions_mut().insert(Idempotent);
    request
}

#[tokio::test(start_paused = true)]
async fn a_spent_daily_quota_fails_clearly_beyond_the_wait_cap() {
    // 10/s and 50 a day; another client spent 3 of the day's 50.
    let daily = Quota::per_day(50);
    let quota = Quota::per_second(10).and(daily);
    let server = Server::new(50, Duration::from_secs(86_400), 3);
    let (limiter, mut client) = stack(quota, Duration::from_secs(60), &server);
    let start = Instant::now();
    for _ in 0..47 {
        let response = client.ready().await.unwrap().call(request()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    // The 48th: the server's day is spent, its 429 says nothing about when it frees.
    let error = client
        .ready()
        .await
        .unwrap()
        .call(request())
        .await
        .unwrap_err();
    let too_long = error
        .downcast_ref::<WaitTooLong>()
        .unwrap_or_else(|| panic!("not a WaitTooLong: {error}"));
    assert_eq!(too_long.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(too_long.spent_cap(), quota.caps().next());
    // The day frees when the first send leaves it (the window plus its 1 % margin).
    let frees_in = daily.effective_window() - start.elapsed();
    assert_eq!(too_long.wait(), frees_in);
    assert!(too_long.frees_at().is_some());
    let message = too_long.to_string();
    assert!(
        message.contains("quota of 50 per 86400s spent") && message.contains("frees in"),
        "{message}"
    );
    // One refusal, no retry of it, and the key is paused for the wait cap.
    assert_eq!(server.refusals().len(), 1);
    assert!(limiter.queue_stats(&()).paused);
    assert!(limiter.estimated_wait(&()) >= Duration::from_secs(59));
}

#[tokio::test(start_paused = true)]
async fn a_spent_long_window_within_the_cap_is_waited_out_at_full_pace() {
    // 10/s and 30 a minute; another client spent 2 of the first minute's 30.
    let minute = Quota::per_minute(30).with_margin(Duration::ZERO);
    let quota = Quota::per_second(10)
        .with_margin(Duration::ZERO)
        .and(minute);
    let server = Server::new(30, Duration::from_secs(60), 2);
    let (limiter, client) = stack(quota, Duration::from_secs(300), &server);
    let start = Instant::now();
    let mut done = Vec::new();
    for _ in 0..40 {
        let response = client.clone().oneshot(request()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        done.push(Instant::now() - start);
    }
    // The 29th send was refused at 2.8 s; the key waited for the minute to free (its first
    // send at 0 s leaves it at 60 s) and the retry went out then, once, not in a storm.
    let refusals = server.refusals();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0] - start, Duration::from_millis(2_800));
    assert_eq!(done[28], Duration::from_secs(60));
    // The rate was not cut: the next sends leave at 10/s, as the minute's slots free.
    assert_eq!(done[29] - done[28], Duration::from_millis(100));
    assert_eq!(limiter.quota(&()), quota);
}
