//! The in-memory outbox against the mock Customer.io: batches, 207s, faults, bounds, shutdown.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use pacer_customerio::{Body, Client, Credentials, Event, Operation, Roots};
use pacer_mock::{Faults, MockConfig, MockServer};
use pacer_outbox::{EnqueueError, Outbox, WhenFull};
use serde_json::json;

fn client(mock: &MockServer) -> Client {
    Client::builder()
        .base_url(&mock.base_url())
        .credentials(Credentials::track("site-id", "track-key"))
        .build_https(Roots::Webpki)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_go_out_in_few_batches_and_every_receipt_is_in_the_ledger() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let outbox = Outbox::builder(client(&mock)).build();
    let mut ids = Vec::new();
    for n in 0..5000 {
        let event = Event::new("signed_up").data(json!({ "n": n }));
        ids.push(
            outbox
                .track(&format!("u{n}"), event)
                .await
                .unwrap()
                .event_id
                .unwrap(),
        );
    }
    let report = outbox.shutdown(Duration::from_secs(20)).await;
    assert_eq!((report.delivered, report.dead, report.left), (5000, 0, 0));
    let events = mock.ledger().events();
    assert_eq!(events.len(), 5000);
    let mut seen: Vec<String> = events.into_iter().filter_map(|e| e.id).collect();
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
    // Each request carried hundreds of events, not one.
    let requests = mock.ledger().counts().requests;
    assert!(requests <= 20, "{requests} requests for 5000 events");
    assert!(matches!(
        outbox.track("u1", Event::new("late")).await,
        Err(EnqueueError::Closed)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_operations_are_dead_lettered_with_the_reason_and_the_rest_delivered() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let outbox = Outbox::builder(client(&mock)).build();
    outbox
        .identify("p1", &serde_json::Map::new())
        .await
        .unwrap();
    // Valid JSON for the outbox, refused by Customer.io: an event without a name.
    let nameless = json!({"type": "person", "action": "event", "identifiers": {"id": "p1"}});
    outbox
        .enqueue(Operation::from_value(nameless).unwrap())
        .await
        .unwrap();
    outbox.track("p1", Event::new("ok")).await.unwrap();
    let report = outbox.shutdown(Duration::from_secs(10)).await;
    assert_eq!((report.delivered, report.dead, report.left), (2, 1, 0));
    let dead = outbox.take_dead_letters();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("name"), "{}", dead[0].reason);
    assert!(dead[0].operation.contains("\"p1\""));
    assert_eq!(mock.ledger().events().len(), 1);
}

#[tokio::test]
async fn invalid_input_is_refused_at_the_call_site() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let outbox = Outbox::builder(client(&mock)).build();
    assert!(matches!(
        outbox.track("", Event::new("x")).await,
        Err(EnqueueError::Invalid(_))
    ));
    let big = json!({"bio": "x".repeat(1001)});
    assert!(matches!(
        outbox.identify("1", big.as_object().unwrap()).await,
        Err(EnqueueError::Invalid(_))
    ));
    assert_eq!(outbox.stats().enqueued, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_lose_nothing_and_double_nothing() {
    let faults = Faults {
        server_errors: 0.3,
        drop_after: 0.1,
        ..Faults::default()
    };
    let mock = MockServer::start(MockConfig::default().faults(faults).seed(7))
        .await
        .unwrap();
    let backoff = pacer_retry::Backoff::new(Duration::from_millis(5), Duration::from_millis(50));
    let outbox = Outbox::builder(client(&mock))
        .max_operations(50)
        .backoff(backoff)
        .build();
    for n in 0..1000 {
        outbox
            .track(&format!("u{n}"), Event::new("e").data(json!({ "n": n })))
            .await
            .unwrap();
    }
    let report = outbox.shutdown(Duration::from_secs(30)).await;
    assert_eq!((report.delivered, report.left), (1000, 0));
    let events = mock.ledger().events();
    assert_eq!(events.len(), 1000, "each event once, under its one id");
    assert!(mock.ledger().counts().faults > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_refuses_or_waits_and_never_trims() {
    // Customer.io answers 503 forever: nothing leaves the store.
    let faults = Faults {
        unavailable: 1.0,
        ..Faults::default()
    };
    let mock = MockServer::start(MockConfig::default().faults(faults))
        .await
        .unwrap();
    let outbox = Outbox::builder(client(&mock)).capacity(3).build();
    for n in 0..3 {
        outbox
            .track(&format!("u{n}"), Event::new("e"))
            .await
            .unwrap();
    }
    assert!(matches!(
        outbox.track("u4", Event::new("e")).await,
        Err(EnqueueError::Full { capacity: 3 })
    ));
    let waiting = Outbox::builder(client(&mock))
        .capacity(1)
        .when_full(WhenFull::Wait(Duration::from_millis(50)))
        .build();
    waiting.track("a", Event::new("e")).await.unwrap();
    let started = std::time::Instant::now();
    assert!(matches!(
        waiting.track("b", Event::new("e")).await,
        Err(EnqueueError::Full { .. })
    ));
    assert!(started.elapsed() >= Duration::from_millis(50));
    let report = outbox.shutdown(Duration::from_millis(300)).await;
    assert_eq!((report.delivered, report.left), (0, 3));
    let _ = waiting.shutdown(Duration::from_millis(100)).await;
}

/// A Customer.io stand-in: `answer` maps each request (its number, from 0, and its body) to a
/// status and a body.
fn server(
    calls: Arc<AtomicUsize>,
    answer: fn(usize, &str) -> (StatusCode, String),
) -> impl tower::Service<
    Request<Body>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
       + Send
       + Sync
       + 'static {
    tower::service_fn(move |request: Request<Body>| {
        let call = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            use http_body_util::BodyExt;
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let (status, text) = answer(call, &String::from_utf8_lossy(&body));
            let mut response = Response::new(Full::new(Bytes::from(text)));
            *response.status_mut() = status;
            Ok::<_, Infallible>(response)
        }
    })
}

/// The first batch gets a 207 whose body is not Customer.io's, the next ones a 200.
fn garbled_then_ok(call: usize, _body: &str) -> (StatusCode, String) {
    if call == 0 {
        (StatusCode::MULTI_STATUS, "<html>proxy error</html>".into())
    } else {
        (StatusCode::OK, "{}".into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_207_delivers_nothing_and_is_sent_again() {
    let calls = Arc::new(AtomicUsize::new(0));
    let client = Client::builder()
        .base_url("http://customerio.test")
        .credentials(Credentials::track("site", "key"))
        .build(server(Arc::clone(&calls), garbled_then_ok));
    let outbox = Outbox::builder(client)
        .backoff(pacer_retry::Backoff::new(
            Duration::from_millis(1),
            Duration::from_millis(5),
        ))
        .build();
    outbox.track("1", Event::new("e")).await.unwrap();
    let report = outbox.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.delivered, 1);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "sent again after the garbled 207"
    );
}

/// A batch carrying the operation for person `poison` is refused whole with a 400, as a proxy
/// validating strictly might; any other gets a 200.
fn refuses_poison(_call: usize, body: &str) -> (StatusCode, String) {
    if body.contains("\"poison\"") {
        let refusal = r#"{"errors":[{"reason":"invalid","field":"identifiers","message":"no"}]}"#;
        (StatusCode::BAD_REQUEST, refusal.into())
    } else {
        (StatusCode::OK, "{}".into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_whole_is_split_until_the_operation_at_fault_is_alone() {
    let calls = Arc::new(AtomicUsize::new(0));
    let client = Client::builder()
        .base_url("http://customerio.test")
        .credentials(Credentials::track("site", "key"))
        .build(server(Arc::clone(&calls), refuses_poison));
    let outbox = Outbox::builder(client)
        .linger(Duration::from_millis(200))
        .build();
    for n in 0..64 {
        let id = if n == 37 {
            "poison".to_owned()
        } else {
            format!("u{n}")
        };
        outbox.track(&id, Event::new("e")).await.unwrap();
    }
    let report = outbox.shutdown(Duration::from_secs(5)).await;
    assert_eq!((report.delivered, report.dead, report.left), (63, 1, 0));
    let dead = outbox.take_dead_letters();
    assert!(dead[0].operation.contains("poison") && dead[0].reason.contains("400"));
    // One batch, then halves down to the one operation: about 2·log2(64) requests, not 64.
    assert!(calls.load(Ordering::SeqCst) <= 16, "{calls:?}");
}

/// Every batch gets a 207 that asks again (`rate_limited`) for the operation of person
/// `stubborn`, and accepts the rest.
fn asks_again_for_stubborn(_call: usize, body: &str) -> (StatusCode, String) {
    let batch: serde_json::Value = serde_json::from_str(body).unwrap();
    let stubborn = batch["batch"]
        .as_array()
        .unwrap()
        .iter()
        .position(|operation| operation.to_string().contains("\"stubborn\""));
    match stubborn {
        Some(index) => (
            StatusCode::MULTI_STATUS,
            format!(
                r#"{{"errors":[{{"batch_index":{index},"reason":"rate_limited","field":"","message":"slow down"}}]}}"#
            ),
        ),
        None => (StatusCode::OK, "{}".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_asked_for_again_and_again_is_dead_lettered_with_the_reason() {
    let calls = Arc::new(AtomicUsize::new(0));
    let client = Client::builder()
        .base_url("http://customerio.test")
        .credentials(Credentials::track("site", "key"))
        .build(server(Arc::clone(&calls), asks_again_for_stubborn));
    let outbox = Outbox::builder(client)
        .linger(Duration::from_millis(100))
        .backoff(pacer_retry::Backoff::new(
            Duration::from_millis(1),
            Duration::from_millis(5),
        ))
        .max_entry_retries(3)
        .build();
    for id in ["a", "stubborn", "b"] {
        outbox.track(id, Event::new("e")).await.unwrap();
    }
    let report = outbox.shutdown(Duration::from_secs(5)).await;
    assert_eq!((report.delivered, report.dead, report.left), (2, 1, 0));
    let dead = outbox.take_dead_letters();
    assert!(dead[0].operation.contains("stubborn"), "{dead:?}");
    assert!(
        dead[0].reason.contains("sent 4 times") && dead[0].reason.contains("rate_limited"),
        "{dead:?}"
    );
    // The stubborn operation was sent 4 times (its reason says so), alone after the first;
    // the other two went with it or, when the enqueues straddled the linger, in a batch or
    // two of their own: never more requests than that.
    let calls = calls.load(Ordering::SeqCst);
    assert!((4..=6).contains(&calls), "{calls} requests");
}
