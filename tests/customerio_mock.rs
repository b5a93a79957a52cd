//! The whole stack (retry → rate limit per API class → throttle → Customer.io requests) over a
//! real hyper client against the mock Customer.io server on loopback.
#![cfg(feature = "https")]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use pacer::customerio::{ApiClass, Client, Credentials, Error, Event};
use pacer::limit::Quota;
use pacer::retry::RetryLayer;
use pacer_mock::{Faults, Limit, MockConfig, MockServer};
use serde_json::{json, Map, Value};

fn http() -> HttpClient<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    HttpClient::builder(TokioExecutor::new()).build_http()
}

/// A default mock and a default client pointed at it.
async fn mock_and_client() -> (MockServer, Client<hyper::body::Incoming>) {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let client = Client::builder()
        .base_url(&mock.base_url())
        .credentials(credentials())
        .build(http());
    (mock, client)
}

fn credentials() -> Credentials {
    Credentials::track("site-id", "track-key").with_app_key("app-key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_calls_at_the_limit_through_faults_lose_and_double_nothing() {
    const PEOPLE: usize = 2_500; // 5,000 calls: an identify and a track each
    const TASKS: usize = 32;
    const LIMIT: u32 = 2_000; // per second, so that the test takes seconds, not minutes
    let faults = Faults {
        server_errors: 0.05,
        drop_after: 0.02,
        ..Faults::default()
    };
    let mock = MockServer::start(
        MockConfig::default()
            .limit(pacer_mock::Api::Track, Some(Limit::per_second(LIMIT)))
            .faults(faults)
            .seed(7),
    )
    .await
    .unwrap();
    let client = Client::builder()
        .base_url(&mock.base_url())
        .credentials(credentials())
        .quota(
            ApiClass::Track,
            // A wide margin: this test asserts zero 429s on a busy CI machine, where a request
            // can sit 20 ms between the limiter and the server's clock.
            Quota::per_second(LIMIT).with_margin(Duration::from_millis(100)),
        )
        // Enough attempts that 7 % faults never exhaust them; the budget still applies.
        .retry(RetryLayer::new().max_retries(5))
        .build(http());

    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let client = client.clone();
            tokio::spawn(async move {
                for person in (task..PEOPLE).step_by(TASKS) {
                    let id = format!("user-{person}");
                    let mut attributes = Map::new();
                    attributes.insert("plan".into(), json!("pro"));
                    client.identify(&id, &attributes).await.unwrap();
                    let event = Event::new("signed_up").data(json!({"n": person}));
                    client.track(&id, event).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    let ledger = mock.ledger();
    let counts = ledger.counts();
    eprintln!("{counts:?}; retries {:?}", client.retry_layer().stats());
    assert_eq!(counts.throttled, 0, "paced under the limit: no 429");
    assert!(
        counts.faults > 0 && counts.dropped > 0,
        "faults were injected"
    );
    assert_eq!(ledger.people_count(), PEOPLE, "every person arrived");
    let events = ledger.events();
    assert_eq!(events.len(), PEOPLE, "every event arrived exactly once");
    let mut numbers: Vec<u64> = events
        .iter()
        .map(|e| e.data["n"].as_u64().unwrap())
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), PEOPLE);
}

#[tokio::test]
async fn typed_errors_and_partial_batches() {
    let (mock, client) = mock_and_client().await;

    // A v1 validation error, in the meta.errors envelope.
    let long = json!({"bio": "x".repeat(1001)});
    let error = client
        .identify("1", long.as_object().unwrap())
        .await
        .unwrap_err();
    let Error::Api { status, error } = error else {
        panic!("expected an API error, got {error:?}");
    };
    assert_eq!(status, 400);
    assert_eq!(
        error.messages,
        ["value for attribute 'bio' cannot be longer than 1000 bytes"]
    );

    // A v2 batch with a bad entry: 207, the entry reported with its index.
    let operations = vec![
        json!({"type": "person", "action": "identify", "identifiers": {"id": "a"}, "attributes": {"x": 1}}),
        json!({"type": "person", "action": "event", "identifiers": {"id": "a"}}),
        json!({"type": "person", "action": "event", "identifiers": {"id": "a"}, "name": "ok"}),
    ];
    let report = client.batch(operations).await.unwrap();
    assert_eq!(report.requests, 1);
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].batch_index, Some(1));
    assert_eq!(mock.ledger().events().len(), 1);

    // Transactional: the meta.error envelope; then a good send.
    let error = client
        .send_email(&json!({"identifiers": {"id": "a"}}))
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Api { status, .. } if status == 400),
        "{error:?}"
    );
    let sent = client
        .send_email(
            &json!({"transactional_message_id": 3, "to": "a@x.com", "identifiers": {"id": "a"}}),
        )
        .await
        .unwrap();
    assert!(sent["delivery_id"].is_string());

    // Reads.
    let attributes = client.customer_attributes("a").await.unwrap();
    assert_eq!(attributes["customer"]["attributes"]["x"], 1);
    let missing = client.customer_attributes("nobody").await.unwrap_err();
    assert!(matches!(missing, Error::Api { status, .. } if status == 404));
}

#[tokio::test]
async fn wrong_credentials_are_reported_without_the_key() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let client = Client::builder()
        .base_url(&mock.base_url())
        .credentials(Credentials::track("site-id", "sk_wrong_secret_123"))
        .build(http());
    let error = client.identify("1", &Map::new()).await.unwrap_err();
    assert!(matches!(error, Error::Unauthorized));
    let printed = format!("{error} {error:?} {client:?}");
    assert!(!printed.contains("sk_wrong_secret_123"), "{printed}");
}

#[tokio::test]
async fn a_hostile_customer_id_stays_a_customer_id() {
    let (mock, client) = mock_and_client().await;
    client
        .identify("../../v1/send/email", &Map::new())
        .await
        .unwrap();
    client
        .track("jane+news@example.com", Event::new("x"))
        .await
        .unwrap();
    assert!(mock.ledger().person("../../v1/send/email").is_some());
    assert!(mock.ledger().transactional().is_empty());
    assert_eq!(
        mock.ledger().events()[0].customer.as_deref(),
        Some("jane+news@example.com")
    );
}

#[tokio::test]
async fn the_app_limit_paces_instead_of_collecting_429s() {
    // The mock allows 10 App reads per second; 25 reads from 5 tasks must pace, not fail.
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let client = Client::builder()
        .base_url(&mock.base_url())
        .credentials(credentials())
        .quota(
            ApiClass::App,
            Quota::per_second(10).with_margin(Duration::from_millis(100)),
        )
        .build(http());
    client.identify("a", &Map::new()).await.unwrap();
    let start = std::time::Instant::now();
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                for _ in 0..5 {
                    let answer: Value = client.customer_attributes("a").await.unwrap();
                    assert_eq!(answer["customer"]["id"], "a");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(mock.ledger().counts().throttled, 0);
    assert!(start.elapsed() >= Duration::from_secs(2));
}

#[tokio::test]
async fn the_ready_https_client_speaks_plain_http_to_the_mock_too() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let client = Client::builder()
        .base_url(&mock.base_url())
        .credentials(credentials())
        .build_https(pacer::customerio::Roots::Webpki)
        .unwrap();
    client.identify("https-user", &Map::new()).await.unwrap();
    client
        .track(
            "https-user",
            Event::new("x").kind(pacer::customerio::EventKind::Page),
        )
        .await
        .unwrap();
    assert!(mock.ledger().person("https-user").is_some());
    assert_eq!(mock.ledger().events()[0].kind, "page");
}
