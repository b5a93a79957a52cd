//! The pacer stack as a reqwest-middleware `Middleware`, against a loopback server: paced, a
//! 429 waited out and retried, reqwest's errors and the pacer's decisions told apart.
#![cfg(feature = "reqwest-middleware")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::get;
use pacer::limit::{Limiter, Quota, RateLimited};
use pacer::middleware::PacerMiddleware;
use pacer::retry::RetryLayer;
use pacer::PaceLayer;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};

/// A server whose first `refusals` answers are 429 with `Retry-After: 1`, then 200 `ok`.
async fn server(refusals: usize) -> (String, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/",
        get(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < refusals {
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "1")],
                        "slow down",
                    )
                } else {
                    (StatusCode::OK, [("x-served", "yes")], "ok")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn client(limiter: &Limiter<()>, retry: RetryLayer) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(PacerMiddleware::new(retry, PaceLayer::new(limiter.clone())))
        .build()
}

/// reqwest's own builder goes through the limiter; the answer is a reqwest::Response.
#[tokio::test]
async fn requests_built_with_reqwest_are_paced_and_read_as_usual() {
    let (url, seen) = server(0).await;
    let limiter = Limiter::new(Quota::per_second(1000));
    let client = client(&limiter, RetryLayer::new());
    for _ in 0..5 {
        let response = client
            .get(&url)
            .header("accept", "text/plain")
            .bearer_auth("token")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        assert_eq!(response.headers()["x-served"], "yes");
        assert_eq!(response.text().await.unwrap(), "ok");
    }
    assert_eq!(seen.load(Ordering::SeqCst), 5);
    assert_eq!(limiter.stats().acquired, 5);
}

/// A 429 with `Retry-After: 1` pauses the limiter and the GET is retried after it: the caller
/// gets the 200, about a second later, in two requests.
#[tokio::test]
async fn a_429_is_waited_out_and_retried() {
    let (url, seen) = server(1).await;
    let limiter = Limiter::new(Quota::per_second(1000));
    let client = client(&limiter, RetryLayer::new());
    let started = Instant::now();
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(limiter.stats().acquired, 2, "the retry spent a slot too");
}

/// A refused connection is reqwest's error, as reqwest-middleware users expect; a refusal by
/// the limiter is a middleware error that downcasts to the pacer's type.
#[tokio::test]
async fn reqwest_errors_and_pacer_decisions_come_back_told_apart() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let limiter = Limiter::new(Quota::per_second(1000));
    let refused = client(&limiter, RetryLayer::new().max_retries(0));
    let error = refused
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap_err();
    match &error {
        reqwest_middleware::Error::Reqwest(error) => assert!(error.is_connect(), "{error:?}"),
        other => panic!("not reqwest's error: {other:?}"),
    }

    let (url, _) = server(0).await;
    let strict = Limiter::builder(Quota::new(1, Duration::from_secs(3600)))
        .max_wait(Duration::ZERO)
        .build();
    let client = client(&strict, RetryLayer::new());
    client.get(&url).send().await.unwrap();
    let error = client.get(&url).send().await.unwrap_err();
    match &error {
        reqwest_middleware::Error::Middleware(error) => {
            assert!(error.downcast_ref::<RateLimited>().is_some(), "{error:?}");
        }
        other => panic!("not the limiter's decision: {other:?}"),
    }
}

/// `RequestBuilder::timeout` holds through the middleware: a server that never answers fails
/// the request within it (it was dropped on the way, and the request waited forever).
#[tokio::test]
async fn a_requests_own_timeout_holds_through_the_middleware() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    // Accepts and never answers (the connections are held until the test ends).
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let limiter = Limiter::new(Quota::per_second(1000));
    let client = client(&limiter, RetryLayer::new().max_retries(0));
    let started = Instant::now();
    let error = tokio::time::timeout(
        Duration::from_secs(10),
        client.get(&url).timeout(Duration::from_millis(200)).send(),
    )
    .await
    .expect("the request's own timeout ends it")
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    match &error {
        reqwest_middleware::Error::Reqwest(error) => assert!(error.is_timeout(), "{error:?}"),
        other => panic!("not reqwest's timeout: {other:?}"),
    }
    silent.abort();
}
