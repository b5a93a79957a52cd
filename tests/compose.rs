//! The limiter composed over a real hyper client talking to a real hyper server on loopback.
//! These tests check composition and behaviour, not rates: rates are tested in paused time.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pacer::limit::{LimitLayer, Limiter, Quota, RateLimited, Reason};
use pacer::retry::{Idempotent, RetryLayer};
use pacer::throttle::{PaceLayer, Paced, Source, Throttle};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};

/// Serves 200 to every request but those to `/throttled` (429, Retry-After: 30) and a first
/// request to `/flaky` (429, Retry-After: 0.05) on an ephemeral loopback port and counts the requests it saw.
async fn start_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let nth = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    let response = if req.uri().path() == "/flaky" && nth == 1 {
                        // /flaky as the server's first request is refused with a short wait.
                        Response::builder()
                            .status(StatusCode::TOO_MANY_REQUESTS)
                            .header("retry-after", "0.05")
                            .body(Full::new(Bytes::from("slow down")))
                            .unwrap()
                    } else if req.uri().path() == "/throttled" {
                        Response::builder()
                            .status(StatusCode::TOO_MANY_REQUESTS)
                            .header("retry-after", "30")
                            .header("ratelimit-policy", "\"default\";q=100;w=1")
                            .header("ratelimit", "\"default\";r=0;t=1")
                            .body(Full::new(Bytes::from("slow down")))
                            .unwrap()
                    } else {
                        Response::new(Full::new(Bytes::from("ok")))
                    };
                    async { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Api {
    Track,
    App,
}

fn api_of<B>(req: &Request<B>) -> Api {
    if req.uri().path().starts_with("/v1/") {
        Api::App
    } else {
        Api::Track
    }
}

fn request(addr: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    Request::post(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap()
}

#[tokio::test]
async fn cloned_clients_share_one_keyed_limiter_over_real_http() {
    let (addr, seen) = start_server().await;
    let limiter = Limiter::builder(Quota::per_second(1_000))
        .quota_fn(|api: &Api| match api {
            Api::Track => Quota::per_second(10_000),
            Api::App => Quota::per_second(1_000).gcra(1),
        })
        .build();
    let client = ServiceBuilder::new()
        .layer(LimitLayer::keyed(limiter.clone(), api_of))
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());

    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let path = if i % 4 == 0 {
                "/v1/send/email"
            } else {
                "/api/v2/batch"
            };
            tokio::spawn(client.clone().oneshot(request(addr, path)))
        })
        .collect();
    for task in tasks {
        let response = task.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(seen.load(Ordering::SeqCst), 40);
    let stats = limiter.stats();
    assert_eq!(stats.acquired, 40);
    assert_eq!(stats.live_keys, 2);
}

#[tokio::test]
async fn a_refused_request_never_reaches_the_server() {
    let (addr, seen) = start_server().await;
    let limiter = Limiter::builder(Quota::per_minute(1).gcra(1).with_margin(Duration::ZERO))
        .max_wait(Duration::from_secs(1))
        .build();
    let client = ServiceBuilder::new()
        .layer(LimitLayer::keyed(limiter, api_of))
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());

    let first = client
        .clone()
        .oneshot(request(addr, "/v1/campaigns/1/triggers"))
        .await;
    assert_eq!(first.unwrap().status(), StatusCode::OK);
    let second = client
        .clone()
        .oneshot(request(addr, "/v1/campaigns/1/triggers"))
        .await;
    let Some(limited) = second
        .as_ref()
        .err()
        .and_then(|e| e.downcast_ref::<RateLimited>())
    else {
        panic!("expected a client-side refusal, got {second:?}");
    };
    assert_eq!(limited.reason(), Reason::MaxWait);
    let retry_after = limited.retry_after().unwrap();
    assert!(retry_after > Duration::from_secs(58) && retry_after <= Duration::from_secs(60));
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn one_429_slows_every_caller_of_its_key_over_real_http() {
    let (addr, seen) = start_server().await;
    let limiter = Limiter::builder(Quota::per_second(100))
        .max_wait(Duration::from_secs(1))
        .build();
    let client = ServiceBuilder::new()
        .layer(PaceLayer::keyed(limiter.clone(), api_of))
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());

    let refused = client
        .clone()
        .oneshot(request(addr, "/throttled"))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let throttle = refused.extensions().get::<Throttle>().unwrap();
    assert_eq!(throttle.source, Source::RetryAfter);
    assert_eq!(throttle.wait, Some(Duration::from_secs(30)));
    assert_eq!((throttle.limit, throttle.remaining), (Some(100), Some(0)));

    // Another caller on the same key is held (here: refused at once, since it would wait
    // longer than its 1 s maximum) and never reaches the server...
    let held = client.clone().oneshot(request(addr, "/api/v2/batch")).await;
    let Some(limited) = held
        .as_ref()
        .err()
        .and_then(|e| e.downcast_ref::<RateLimited>())
    else {
        panic!("expected the key to be paused, got {held:?}");
    };
    assert!(limited.retry_after().unwrap() > Duration::from_secs(29));
    // ...while the other key is untouched.
    let other = client
        .clone()
        .oneshot(request(addr, "/v1/customers"))
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_full_stack_retries_a_429_through_the_limiter_over_real_http() {
    let (addr, seen) = start_server().await;
    let limiter = Limiter::builder(Quota::per_second(100)).build();
    let retry = RetryLayer::new();
    let client = ServiceBuilder::new()
        .layer(retry.clone())
        .layer(PaceLayer::keyed(limiter.clone(), api_of))
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());

    // A POST is retried only when repeating it is safe, e.g. an event carrying its own id.
    let mut post = request(addr, "/flaky");
    post.extensions_mut().insert(Idempotent);
    let start = std::time::Instant::now();
    let response = client.oneshot(post).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Refused once, then retried after the server's 50 ms...
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert_eq!(retry.stats().retries, 1);
    // ...and both attempts went through the limiter: the retry spent a slot of the quota.
    assert_eq!(limiter.stats().acquired, 2);
}

/// Arrival instants of the requests an in-memory server saw.
type Arrivals = Arc<std::sync::Mutex<Vec<tokio::time::Instant>>>;

/// A scripted in-memory server: answers the n-th request (from 0) with `script[n]` (the last
/// entry repeats), logging arrival instants.
fn scripted(
    script: Vec<Response<()>>,
) -> (
    impl tower::Service<Request<()>, Response = Response<()>, Error = Infallible, Future = impl Send>
        + Clone
        + Send,
    Arrivals,
) {
    let script = Arc::new(script);
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let arrivals = Arc::clone(&log);
    let service = tower::service_fn(move |_request: Request<()>| {
        let mut log = log.lock().unwrap();
        log.push(tokio::time::Instant::now());
        let model = &script[(log.len() - 1).min(script.len() - 1)];
        let mut response = Response::new(());
        *response.status_mut() = model.status();
        *response.headers_mut() = model.headers().clone();
        async move { Ok::<_, Infallible>(response) }
    });
    (service, arrivals)
}

fn answer(status: StatusCode, retry_after: Option<&'static str>) -> Response<()> {
    let mut response = Response::builder().status(status);
    if let Some(wait) = retry_after {
        response = response.header("retry-after", wait);
    }
    response.body(()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn pace_layer_puts_the_throttle_inside_the_rate_limit() {
    // A 429 with Retry-After: 5 through PaceLayer pauses the key in the limiter before the
    // response is handed back, so the next caller, on another clone, waits for it.
    let (server, arrivals) = scripted(vec![
        answer(StatusCode::TOO_MANY_REQUESTS, Some("5")),
        answer(StatusCode::OK, None),
    ]);
    let limiter = Limiter::new(Quota::per_second(100));
    let client = ServiceBuilder::new()
        .layer(PaceLayer::new(limiter.clone()))
        .service(server);
    let start = tokio::time::Instant::now();
    let refused = client.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    // Tagged by the throttle on its way out through the rate limit.
    assert!(refused.extensions().get::<Paced>().is_some());
    assert_eq!(limiter.estimated_wait(&()), Duration::from_secs(5));
    let next = client.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(next.status(), StatusCode::OK);
    let arrivals = arrivals.lock().unwrap();
    assert_eq!(arrivals[1] - start, Duration::from_secs(5));
    assert_eq!(limiter.stats().acquired, 2);
}

#[tokio::test(start_paused = true)]
async fn a_retry_above_pace_layer_waits_for_a_slot_of_the_quota() {
    // One request per second, no margin; the server fails the first attempt with a 503 and no
    // Retry-After. The retry's own backoff is 10 ms, but the retry goes back through the
    // limiter: it waits for the next slot, a second after the first.
    let (server, arrivals) = scripted(vec![
        answer(StatusCode::SERVICE_UNAVAILABLE, None),
        answer(StatusCode::OK, None),
    ]);
    let limiter = Limiter::new(Quota::per_second(1).gcra(1).with_margin(Duration::ZERO));
    let retry = RetryLayer::new().backoff(
        pacer::retry::Backoff::new(Duration::from_millis(10), Duration::from_millis(10))
            .jitter(pacer::retry::Jitter::None),
    );
    let client = ServiceBuilder::new()
        .layer(retry.clone())
        .layer(PaceLayer::new(limiter.clone()).adaptive(pacer::throttle::Adaptive::off()))
        .service(server);
    let start = tokio::time::Instant::now();
    let response = client
        .oneshot(Request::get("/").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let arrivals = arrivals.lock().unwrap();
    assert_eq!(arrivals.len(), 2);
    assert_eq!(arrivals[0] - start, Duration::ZERO);
    assert_eq!(arrivals[1] - start, Duration::from_secs(1));
    assert_eq!(retry.stats().retries, 1);
    assert_eq!(limiter.stats().acquired, 2);
}
