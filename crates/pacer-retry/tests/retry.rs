//! The retry layer in paused time against scripted servers.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::{Method, Request, Response, StatusCode};
use pacer_retry::{
    find, AttemptTimedOut, Backoff, Deadline, GaveUp, Idempotent, Jitter, RetriesExhausted,
    RetryLayer, RetryReason, ServerWaitTooLong,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

/// A server that answers from a script (the last entry repeats) and logs arrival instants.
#[derive(Clone, Debug)]
struct Scripted {
    script: Arc<Vec<Result<Response<()>, &'static str>>>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl Scripted {
    fn new(script: Vec<Result<Response<()>, &'static str>>) -> Self {
        Self {
            script: Arc::new(script),
            arrivals: Arc::default(),
        }
    }

    fn arrivals(&self) -> Vec<Instant> {
        self.arrivals.lock().unwrap().clone()
    }

    fn answer(&self) -> Result<Response<()>, std::io::Error> {
        let mut arrivals = self.arrivals.lock().unwrap();
        arrivals.push(Instant::now());
        let index = (arrivals.len() - 1).min(self.script.len() - 1);
        match &self.script[index] {
            Ok(response) => {
                let mut copy = Response::new(());
                *copy.status_mut() = response.status();
                *copy.headers_mut() = response.headers().clone();
                Ok(copy)
            }
            Err(kind) => Err(match *kind {
                "reset" => std::io::Error::from(std::io::ErrorKind::ConnectionReset),
                "refused" => std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
                _ => std::io::Error::other(*kind),
            }),
        }
    }
}

fn status(code: u16) -> Result<Response<()>, &'static str> {
    Ok(Response::builder().status(code).body(()).unwrap())
}

fn with_header(code: u16, name: &'static str, value: String) -> Result<Response<()>, &'static str> {
    Ok(Response::builder()
        .status(code)
        .header(name, value)
        .body(())
        .unwrap())
}

type Client = tower::util::BoxCloneService<Request<String>, Response<()>, BoxError>;

fn client(layer: RetryLayer, server: &Scripted) -> Client {
    let server = server.clone();
    ServiceBuilder::new()
        .layer(layer)
        .service_fn(move |_request: Request<String>| {
            let answer = server.answer();
            async move { answer }
        })
        .boxed_clone()
}

fn seeded() -> RetryLayer {
    RetryLayer::new().seed(7).no_budget()
}

fn get() -> Request<String> {
    Request::get("/").body(String::new()).unwrap()
}

fn gaps(arrivals: &[Instant]) -> Vec<Duration> {
    arrivals.windows(2).map(|pair| pair[1] - pair[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn retries_transient_failures_until_success() {
    let server = Scripted::new(vec![status(503), Err("reset"), status(200)]);
    let layer = seeded();
    let response = client(layer.clone(), &server).oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(server.arrivals().len(), 3);
    assert_eq!(layer.stats().retries, 2);
}

#[tokio::test(start_paused = true)]
async fn the_delays_follow_the_seeded_backoff_exactly() {
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    for jitter in [
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
    ] {
        let server = Scripted::new(vec![status(500)]);
        let layer = seeded().max_retries(5).backoff(backoff.jitter(jitter));
        let response = client(layer, &server).oneshot(get()).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        // The same seed drawn directly gives the same delays.
        let mut rng = SmallRng::seed_from_u64(7);
        let backoff = backoff.jitter(jitter);
        let mut previous = backoff.base();
        let expected: Vec<Duration> = (0..5)
            .map(|retry| {
                previous = backoff.delay(retry, previous, rng.random());
                previous
            })
            .collect();
        // Tokio's timer fires on whole milliseconds: each wait ends at the next one.
        let expected: Vec<Duration> = expected
            .into_iter()
            .map(|delay| Duration::from_millis(delay.as_nanos().div_ceil(1_000_000) as u64))
            .collect();
        assert_eq!(gaps(&server.arrivals()), expected, "{jitter:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_seconds_is_honoured_to_the_millisecond() {
    let server = Scripted::new(vec![
        with_header(429, "retry-after", "2.5".into()),
        status(200),
    ]);
    let response = client(seeded(), &server).oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(gaps(&server.arrivals()), [Duration::from_millis(2500)]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_http_date_is_measured_against_the_servers_date() {
    let now = SystemTime::now();
    let retry_at = httpdate::fmt_http_date(now + Duration::from_secs(7));
    let response = Response::builder()
        .status(503)
        .header("retry-after", retry_at)
        .header("date", httpdate::fmt_http_date(now))
        .body(())
        .unwrap();
    let server = Scripted::new(vec![Ok(response), status(200)]);
    client(seeded(), &server).oneshot(get()).await.unwrap();
    assert_eq!(gaps(&server.arrivals()), [Duration::from_secs(7)]);
}

#[tokio::test(start_paused = true)]
async fn the_backoff_wins_when_longer_than_the_server_hint() {
    let server = Scripted::new(vec![
        with_header(503, "retry-after", "0".into()),
        status(200),
    ]);
    let backoff = Backoff::new(Duration::from_secs(3), Duration::from_secs(3)).jitter(Jitter::None);
    client(seeded().backoff(backoff), &server)
        .oneshot(get())
        .await
        .unwrap();
    assert_eq!(gaps(&server.arrivals()), [Duration::from_secs(3)]);
}

#[tokio::test(start_paused = true)]
async fn a_server_wait_beyond_the_limit_gives_up_at_once() {
    let server = Scripted::new(vec![with_header(429, "retry-after", "86400".into())]);
    let start = Instant::now();
    let error = client(seeded(), &server).oneshot(get()).await.unwrap_err();
    let Some(too_long) = error.downcast_ref::<ServerWaitTooLong>() else {
        panic!("expected ServerWaitTooLong, got {error:?}");
    };
    assert!(too_long.wait() > Duration::from_secs(60));
    assert_eq!(too_long.cap(), Duration::from_secs(60));
    assert_eq!(too_long.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(too_long.attempts(), 1);
    assert_eq!(server.arrivals().len(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_server_wait_too_long_reports_what_the_server_sent() {
    for (value, asked) in [
        ("99999999999", Some(Duration::from_secs(99_999_999_999))),
        ("Thu, 01 Jan 2099 00:00:00 GMT", None),
    ] {
        let server = Scripted::new(vec![with_header(503, "retry-after", value.into())]);
        let start = Instant::now();
        let error = client(seeded(), &server).oneshot(get()).await.unwrap_err();
        let too_long = error.downcast_ref::<ServerWaitTooLong>().unwrap();
        // Not the parser's one-hour clamp: the server's own value.
        assert!(too_long.wait() > Duration::from_secs(70 * 365 * 86_400));
        if let Some(asked) = asked {
            assert_eq!(too_long.wait(), asked);
        }
        assert_eq!(too_long.retry_after(), Some(value));
        let message = too_long.to_string();
        assert!(
            message.contains(&format!("(Retry-After: {value})")),
            "{message}"
        );
        assert_eq!(server.arrivals().len(), 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}

#[tokio::test(start_paused = true)]
async fn attempts_are_capped_and_the_last_result_returned() {
    let server = Scripted::new(vec![status(502)]);
    let layer = seeded().max_retries(3);
    let response = client(layer.clone(), &server).oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(server.arrivals().len(), 4);
    assert_eq!(layer.stats().exhausted, 1);
    // Errors come back in a RetriesExhausted whose source is the last attempt's error.
    let server = Scripted::new(vec![Err("reset")]);
    let error = client(seeded(), &server).oneshot(get()).await.unwrap_err();
    let exhausted = error.downcast_ref::<RetriesExhausted>().unwrap();
    assert_eq!(exhausted.attempts(), 3);
    assert_eq!(exhausted.why(), GaveUp::Attempts);
    assert_eq!(exhausted.reason(), RetryReason::Connection);
    let inner = exhausted
        .last_error()
        .downcast_ref::<std::io::Error>()
        .unwrap();
    assert_eq!(inner.kind(), std::io::ErrorKind::ConnectionReset);
    let source = std::error::Error::source(exhausted).unwrap();
    assert!(source.is::<std::io::Error>());
    assert_eq!(
        find::<std::io::Error>(&*error).unwrap().kind(),
        std::io::ErrorKind::ConnectionReset
    );
    assert_eq!(server.arrivals().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_error_of_a_request_sent_once_or_not_worth_retrying_is_unwrapped() {
    // Sent once: a POST that may not be repeated, after a reset.
    let server = Scripted::new(vec![Err("reset")]);
    let post = Request::post("/").body(String::new()).unwrap();
    let error = client(seeded(), &server).oneshot(post).await.unwrap_err();
    let inner = error.downcast_ref::<std::io::Error>().unwrap();
    assert_eq!(inner.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(server.arrivals().len(), 1);
    // Sent once: no retries allowed.
    let server = Scripted::new(vec![Err("reset")]);
    let error = client(seeded().max_retries(0), &server)
        .oneshot(get())
        .await
        .unwrap_err();
    assert!(error.is::<std::io::Error>(), "{error:?}");
    // Retried once, then a failure not worth retrying: returned as it is.
    let server = Scripted::new(vec![status(503), Err("certificate expired")]);
    let error = client(seeded(), &server).oneshot(get()).await.unwrap_err();
    assert!(error.downcast_ref::<RetriesExhausted>().is_none());
    assert_eq!(
        error.downcast_ref::<std::io::Error>().unwrap().to_string(),
        "certificate expired"
    );
    assert_eq!(server.arrivals().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn what_is_not_transient_is_never_retried() {
    for script in [
        status(400),
        status(401),
        status(404),
        status(422),
        Err("decode"),
    ] {
        let server = Scripted::new(vec![script]);
        let _ = client(seeded(), &server).oneshot(get()).await;
        assert_eq!(server.arrivals().len(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn idempotency_matrix() {
    // (method, marked idempotent, idempotency-key header, expected attempts)
    let cases = [
        (Method::GET, false, false, 3),
        (Method::HEAD, false, false, 3),
        (Method::OPTIONS, false, false, 3),
        (Method::PUT, false, false, 3),
        (Method::DELETE, false, false, 3),
        (Method::POST, false, false, 1),
        (Method::PATCH, false, false, 1),
        (Method::POST, true, false, 3),
        (Method::PATCH, true, false, 3),
        (Method::POST, false, true, 3),
    ];
    for (method, marked, keyed, expected) in cases {
        let server = Scripted::new(vec![status(503)]);
        let layer = seeded();
        let mut request = Request::builder().method(method.clone()).uri("/");
        if keyed {
            request = request.header("idempotency-key", "k-1");
        }
        let mut request = request.body("{}".to_owned()).unwrap();
        if marked {
            request.extensions_mut().insert(Idempotent);
        }
        client(layer.clone(), &server)
            .oneshot(request)
            .await
            .unwrap();
        assert_eq!(
            server.arrivals().len(),
            expected,
            "{method} marked={marked} keyed={keyed}"
        );
        assert_eq!(layer.stats().not_repeatable, u64::from(expected == 1));
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_that_may_not_be_repeated_is_still_retried_when_it_was_not_processed() {
    // (first answer, expected attempts) for an unmarked POST.
    let cases = [
        (status(429), 2),    // refused by the rate limit: nothing happened
        (Err("refused"), 2), // the connection was never made
        (status(503), 1),    // may have been processed
        (Err("reset"), 1),   // broke mid-way: may have been processed
    ];
    for (first, expected) in cases {
        let label = format!("{first:?}");
        let server = Scripted::new(vec![first, status(200)]);
        let post = Request::post("/v1/send/email")
            .body("{}".to_owned())
            .unwrap();
        let _ = client(seeded(), &server).oneshot(post).await;
        assert_eq!(server.arrivals().len(), expected, "{label}");
    }
}

/// A body that cannot be copied, like a stream.
#[derive(Debug)]
struct Stream;

#[tokio::test(start_paused = true)]
async fn a_body_that_cannot_be_copied_is_sent_once() {
    let server = Scripted::new(vec![status(503)]);
    let handle = server.clone();
    let layer = seeded().no_replay();
    let mut client =
        ServiceBuilder::new()
            .layer(layer)
            .service_fn(move |_request: Request<Stream>| {
                let answer = handle.answer();
                async move { answer }
            });
    let response = client
        .ready()
        .await
        .unwrap()
        .call(Request::get("/").body(Stream).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(server.arrivals().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_mid_backoff_stops_everything() {
    let server = Scripted::new(vec![status(503)]);
    let backoff =
        Backoff::new(Duration::from_secs(10), Duration::from_secs(10)).jitter(Jitter::None);
    let future = client(seeded().backoff(backoff), &server).oneshot(get());
    // Let the first attempt fail and the backoff start, then drop the request.
    let outcome = tokio::time::timeout(Duration::from_secs(1), future).await;
    assert!(outcome.is_err());
    assert_eq!(server.arrivals().len(), 1);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(server.arrivals().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_slow_attempt_is_cut_and_retried() {
    let calls = Arc::new(Mutex::new(0));
    let counter = Arc::clone(&calls);
    let layer = seeded().attempt_timeout(Duration::from_secs(1)).backoff(
        Backoff::new(Duration::from_millis(10), Duration::from_millis(10)).jitter(Jitter::None),
    );
    let mut client =
        ServiceBuilder::new()
            .layer(layer)
            .service_fn(move |_request: Request<String>| {
                let call = {
                    let mut calls = counter.lock().unwrap();
                    *calls += 1;
                    *calls
                };
                async move {
                    if call == 1 {
                        // The first attempt hangs.
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    Ok::<_, Infallible>(Response::new(()))
                }
            });
    let start = Instant::now();
    client.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(*calls.lock().unwrap(), 2);
    assert_eq!(start.elapsed(), Duration::from_millis(1010));

    // When every attempt hangs, the last timeout is the error.
    let layer = seeded()
        .attempt_timeout(Duration::from_secs(1))
        .max_retries(1);
    let mut hanging =
        ServiceBuilder::new()
            .layer(layer)
            .service_fn(|_request: Request<String>| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok::<_, Infallible>(Response::new(()))
            });
    let error = hanging
        .ready()
        .await
        .unwrap()
        .call(get())
        .await
        .unwrap_err();
    let exhausted = error.downcast_ref::<RetriesExhausted>().unwrap();
    assert_eq!(exhausted.attempts(), 2);
    assert_eq!(exhausted.reason(), RetryReason::Timeout);
    let timed_out = find::<AttemptTimedOut>(&*error).unwrap();
    assert_eq!(timed_out.attempt(), 2);
    assert_eq!(timed_out.timeout(), Duration::from_secs(1));

    // A single attempt that hangs fails with the timeout itself.
    let mut once = ServiceBuilder::new()
        .layer(
            seeded()
                .attempt_timeout(Duration::from_secs(1))
                .max_retries(0),
        )
        .service_fn(|_request: Request<String>| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, Infallible>(Response::new(()))
        });
    let error = once.ready().await.unwrap().call(get()).await.unwrap_err();
    let timed_out = error.downcast_ref::<AttemptTimedOut>().unwrap();
    assert_eq!(timed_out.attempt(), 1);
}

#[tokio::test(start_paused = true)]
async fn no_retry_starts_that_would_end_past_the_deadline() {
    let server = Scripted::new(vec![status(503)]);
    let backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(2)).jitter(Jitter::None);
    let layer = seeded()
        .max_retries(9)
        .backoff(backoff)
        .max_elapsed(Duration::from_secs(5));
    let start = Instant::now();
    client(layer.clone(), &server).oneshot(get()).await.unwrap();
    // Attempts at 0, 2 and 4 s; one at 6 s would end past the 5 s deadline.
    assert_eq!(server.arrivals().len(), 3);
    assert_eq!(start.elapsed(), Duration::from_secs(4));
    assert_eq!(layer.stats().deadline, 1);

    // A Deadline extension shortens it for one request.
    let server = Scripted::new(vec![status(503)]);
    let mut request = get();
    request
        .extensions_mut()
        .insert(Deadline(Instant::now() + Duration::from_secs(3)));
    client(seeded().max_retries(9).backoff(backoff), &server)
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(server.arrivals().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn each_retry_waits_for_the_inner_service_to_be_ready() {
    // A concurrency limit of 1 held elsewhere: the retry must wait for readiness, not call an
    // unready service.
    let server = Scripted::new(vec![status(503), status(200)]);
    let handle = server.clone();
    let inner =
        ServiceBuilder::new()
            .concurrency_limit(1)
            .service_fn(move |_request: Request<String>| {
                let answer = handle.answer();
                async move { answer }
            });
    let mut holder = inner.clone();
    let backoff =
        Backoff::new(Duration::from_millis(10), Duration::from_millis(10)).jitter(Jitter::None);
    let mut client = ServiceBuilder::new()
        .layer(seeded().backoff(backoff))
        .service(inner);
    let response = client.ready().await.unwrap().call(get());
    // Take the only permit while the first attempt backs off, and keep it for 1 s.
    let hold = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        holder.ready().await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(holder);
    });
    let start = Instant::now();
    assert_eq!(response.await.unwrap().status(), StatusCode::OK);
    hold.await.unwrap();
    assert!(start.elapsed() >= Duration::from_secs(1));
    assert_eq!(server.arrivals().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_budget_stops_a_retry_storm() {
    // A server failing every request, 50 requests per second for 20 s from many tasks.
    let seconds = 20;
    let per_second = 50;
    let budgeted = RetryLayer::new().seed(1).max_retries(5).budget(0.2, 10);
    let naive = RetryLayer::new().seed(1).max_retries(5).no_budget();
    let mut results = Vec::new();
    let mut budgeted_run = Duration::ZERO;
    for layer in [budgeted, naive] {
        let start = Instant::now();
        let server = Scripted::new(vec![status(503)]);
        let client = client(layer.clone(), &server);
        let mut tasks = Vec::new();
        for _ in 0..seconds * per_second {
            tasks.push(tokio::spawn(client.clone().oneshot(get())));
            tokio::time::sleep(Duration::from_millis(1000 / per_second)).await;
        }
        for task in tasks {
            let _ = task.await.unwrap();
        }
        if results.is_empty() {
            budgeted_run = start.elapsed();
        }
        results.push((server.arrivals().len(), layer.stats()));
    }
    let requests = (seconds * per_second) as f64;
    let (budgeted_attempts, budgeted_stats) = results[0];
    let (naive_attempts, _) = results[1];
    // At most (1 + fraction) x requests + floor x seconds of the run.
    let bound = requests * 1.2 + 10.0 * budgeted_run.as_secs_f64().ceil();
    eprintln!(
        "storm: {requests} requests; budgeted {budgeted_attempts} attempts ({:.2}x, bound {bound}), \
         naive {naive_attempts} attempts ({:.2}x); {budgeted_stats:?}",
        budgeted_attempts as f64 / requests,
        naive_attempts as f64 / requests,
    );
    assert!(
        budgeted_attempts as f64 <= bound,
        "{budgeted_attempts} > {bound}"
    );
    assert_eq!(naive_attempts as f64, requests * 6.0);
    assert!(budgeted_stats.budget_spent > 0);
}

#[tokio::test(start_paused = true)]
async fn errors_of_a_wrapped_stack_are_classified_through_their_source_chain() {
    // A BoxError around an io::Error, as tower stacks produce.
    let layer = seeded();
    let calls = Arc::new(Mutex::new(0));
    let counter = Arc::clone(&calls);
    let mut client =
        ServiceBuilder::new()
            .layer(layer)
            .service_fn(move |_request: Request<String>| {
                *counter.lock().unwrap() += 1;
                async {
                    let error: BoxError =
                        Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
                    Err::<Response<()>, _>(Wrapped(error))
                }
            });
    let _ = client.ready().await.unwrap().call(get()).await;
    assert_eq!(*calls.lock().unwrap(), 3);
}

/// An error that keeps its cause as `source()`, like hyper-util's.
#[derive(Debug)]
struct Wrapped(BoxError);

impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("client error")
    }
}

impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}
