//! The client's stack over an in-memory service, in paused time.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use pacer_customerio::{ApiClass, Body, Client, Credentials, Error};
use serde_json::json;
use tokio::time::Instant;

/// Arrival instants and paths of the requests the in-memory server saw.
type Log = Arc<Mutex<Vec<(Instant, String)>>>;

/// Answers every request with `status` and `body`, logging arrival instants and paths.
fn server(
    status: StatusCode,
    body: &'static str,
) -> (
    impl tower::Service<
            Request<Body>,
            Response = Response<Full<Bytes>>,
            Error = Infallible,
            Future = impl Send,
        > + Clone
        + Send
        + Sync
        + 'static,
    Log,
) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&log);
    let service = tower::service_fn(move |request: Request<Body>| {
        seen.lock()
            .unwrap()
            .push((Instant::now(), request.uri().path().to_owned()));
        let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = status;
        async move { Ok::<_, Infallible>(response) }
    });
    (service, log)
}

fn credentials() -> Credentials {
    Credentials::track("site", "key").with_app_key("app")
}

#[tokio::test(start_paused = true)]
async fn broadcast_triggers_are_spaced_and_at_most_five_wait() {
    let (http, log) = server(StatusCode::OK, r#"{"id":1}"#);
    let client = Client::builder()
        .base_url("http://customerio.test")
        .credentials(credentials())
        .build(http);
    let start = Instant::now();
    let tasks: Vec<_> = (0..7)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.trigger_broadcast(9, &json!({})).await })
        })
        .collect();
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(answer) => assert_eq!(answer["id"], 1),
            Err(Error::RateLimited(limited)) => {
                assert_eq!(limited.reason(), pacer_limit::Reason::QueueFull);
                refused += 1;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(refused, 1, "one beyond the five allowed to wait");
    let arrivals: Vec<Duration> = log
        .lock()
        .unwrap()
        .iter()
        .map(|(at, _)| *at - start)
        .collect();
    assert_eq!(
        arrivals,
        (0..6)
            .map(|n| Duration::from_millis(10_100 * n))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn a_transactional_send_is_not_retried_after_a_server_error() {
    let (http, log) = server(
        StatusCode::INTERNAL_SERVER_ERROR,
        r#"{"meta":{"error":"boom"}}"#,
    );
    let client = Client::builder()
        .base_url("http://customerio.test")
        .credentials(credentials())
        .build(http);
    let message = json!({"transactional_message_id": 1, "identifiers": {"id": "1"}});
    let error = client.send_email(&message).await.unwrap_err();
    let Error::Api { status, error } = error else {
        panic!("expected an API error");
    };
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error.messages, ["boom"]);
    assert_eq!(
        log.lock().unwrap().len(),
        1,
        "a possibly delivered email is never resent"
    );
    // An event, which carries its id, is retried (3 attempts by default).
    let _ = client.track("1", pacer_customerio::Event::new("x")).await;
    assert_eq!(log.lock().unwrap().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_transactional_send_is_retried_after_a_429() {
    let (http, log) = server(
        StatusCode::TOO_MANY_REQUESTS,
        r#"{"errors":[{"detail":"slow","status":"429"}]}"#,
    );
    let client = Client::builder()
        .base_url("http://customerio.test")
        .credentials(credentials())
        .build(http);
    let message = json!({"transactional_message_id": 1, "identifiers": {"id": "1"}});
    let error = client.send_email(&message).await.unwrap_err();
    assert!(
        matches!(error, Error::Throttled { retry_after: None }),
        "{error:?}"
    );
    // Nothing was processed on a 429, so the send was repeated.
    assert_eq!(log.lock().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn each_api_class_has_its_own_budget() {
    let (http, log) = server(StatusCode::OK, "{}");
    let client = Client::builder()
        .base_url("http://customerio.test")
        .credentials(credentials())
        .build(http);
    let start = Instant::now();
    // 20 App reads at 10/s take about two seconds; Track calls meanwhile go at once.
    let reads = {
        let client = client.clone();
        tokio::spawn(async move {
            for _ in 0..20 {
                client.customer_attributes("1").await.unwrap();
            }
        })
    };
    for _ in 0..50 {
        client.identify("1", &serde_json::Map::new()).await.unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(1));
    reads.await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(1900));
    assert_eq!(log.lock().unwrap().len(), 70);
    assert_eq!(client.limiter().quota(&ApiClass::App).limit(), 10);
}

/// `queue_stats` shows what a p-queue user reads as `size`, `pending` and `isPaused`: requests
/// waiting for their slot, requests in flight, and a pause.
#[tokio::test(start_paused = true)]
async fn queue_stats_show_waiting_in_flight_and_paused() {
    // A server that takes a second to answer.
    let http = tower::service_fn(|_request: Request<Body>| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
    });
    let client = Client::builder()
        .base_url("http://customerio.test")
        .credentials(credentials())
        .quota(ApiClass::Track, pacer_limit::Quota::per_second(10))
        .build(http);
    let idle = client.queue_stats(ApiClass::Track);
    assert_eq!((idle.waiting, idle.in_flight, idle.paused), (0, 0, false));
    let tasks: Vec<_> = (0..5)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .identify(&n.to_string(), &serde_json::json!({}))
                    .await
            })
        })
        .collect();
    // 10 per second, 101 ms apart: at 250 ms three are out, awaiting the slow server.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let busy = client.queue_stats(ApiClass::Track);
    assert_eq!((busy.waiting, busy.in_flight, busy.paused), (2, 3, false));
    client
        .limiter()
        .pause_until(&ApiClass::Track, Instant::now() + Duration::from_secs(5));
    let paused = client.queue_stats(ApiClass::Track);
    assert!(paused.paused);
    assert!(paused.estimated_wait >= Duration::from_secs(5));
    // Other classes are untouched.
    assert_eq!(client.queue_stats(ApiClass::App), Default::default());
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let done = client.queue_stats(ApiClass::Track);
    assert_eq!((done.waiting, done.in_flight), (0, 0));
}

/// The error of one `track` through the default stack over `http`.
async fn track_error_over<S, E>(http: S) -> Error
where
    S: tower::Service<Request<Body>, Response = Response<Full<Bytes>>, Error = E>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    E: Into<tower::BoxError>,
{
    let client = Client::builder()
        .base_url("http://customerio.test")
        .credentials(credentials())
        .build(http);
    client
        .track("1", pacer_customerio::Event::new("x"))
        .await
        .unwrap_err()
}

#[tokio::test(start_paused = true)]
async fn stack_errors_map_by_downcast() {
    // A 429 asking for longer than the throttle layer's 60 s cap: Throttled, with the wait.
    let http = tower::service_fn(|_request: Request<Body>| async {
        let mut response = Response::new(Full::new(Bytes::from_static(b"slow down")));
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        response
            .headers_mut()
            .insert("retry-after", http::HeaderValue::from_static("600"));
        Ok::<_, Infallible>(response)
    });
    let error = track_error_over(http).await;
    let Error::Throttled { retry_after } = error else {
        panic!("expected Throttled, got {error:?}");
    };
    assert_eq!(retry_after, Some(Duration::from_secs(600)));

    // The HTTP client's own error: Transport, downcastable to its type.
    let http = tower::service_fn(|_request: Request<Body>| async {
        Err::<Response<Full<Bytes>>, _>(std::io::Error::other("certificate expired"))
    });
    let error = track_error_over(http).await;
    let Error::Transport(transport) = error else {
        panic!("expected Transport, got {error:?}");
    };
    assert_eq!(
        transport
            .downcast_ref::<std::io::Error>()
            .unwrap()
            .to_string(),
        "certificate expired"
    );
}

/// The App API answers a spent daily quota with a 429 without `Retry-After`. With the plan's
/// daily quota on the builder, the client pauses the class instead of retrying into it, and
/// the caller learns the quota is spent and when it frees.
#[tokio::test(start_paused = true)]
async fn a_spent_daily_quota_fails_with_when_it_frees() {
    // The server's day allows 20 App calls, 2 of which another client spent.
    let served = Arc::new(Mutex::new(0usize));
    let counter = Arc::clone(&served);
    let log: Log = Arc::default();
    let seen = Arc::clone(&log);
    let http = tower::service_fn(move |request: Request<Body>| {
        seen.lock()
            .unwrap()
            .push((Instant::now(), request.uri().path().to_owned()));
        let app = request.uri().path().ends_with("/attributes");
        let mut served = counter.lock().unwrap();
        let status = if app && *served + 2 >= 20 {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            *served += 1;
            StatusCode::OK
        };
        let body = if status == StatusCode::OK {
            "{}"
        } else {
            r#"{"errors":[{"detail":"daily quota reached","status":"429"}]}"#
        };
        let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = status;
        async move { Ok::<_, Infallible>(response) }
    });
    let client = Client::builder()
        .base_url("http://customerio.test")
        .credentials(credentials())
        .daily_quota(ApiClass::App, 20)
        .build(http);
    let quota = client.limiter().quota(&ApiClass::App);
    assert_eq!(quota.limit(), 10, "the per-second pacing stays");
    assert_eq!(quota.caps().next().map(|c| c.limit()), Some(20));
    for _ in 0..18 {
        client.customer_attributes("1").await.unwrap();
    }
    let error = client.customer_attributes("1").await.unwrap_err();
    match &error {
        Error::QuotaSpent {
            limit,
            window,
            frees_in,
            ..
        } => {
            assert_eq!((*limit, *window), (20, Duration::from_secs(86_400)));
            assert!(*frees_in > Duration::from_secs(86_000), "{frees_in:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(error.to_string().contains("frees in"), "{error}");
    // One refusal, not retried; the class is paused, Track is not.
    assert_eq!(log.lock().unwrap().len(), 19);
    assert!(client.limiter().queue_stats(&ApiClass::App).paused);
    client.identify("1", &serde_json::Map::new()).await.unwrap();
}
