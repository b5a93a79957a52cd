//! The Customer.io client and the pacer layers over a `reqwest::Client`, against the mock over
//! loopback (feature `reqwest`).
#![cfg(all(feature = "reqwest", feature = "customerio"))]

use std::error::Error as StdError;
use std::time::Duration;

use pacer::customerio::{Client, Credentials, Error, Event};
use pacer::reqwest::ReqwestService;
use pacer_mock::{Api, Limit, MockConfig, MockServer};
use serde_json::json;

fn client_at(base_url: &str) -> Client<reqwest::Body> {
    Client::builder()
        .base_url(base_url)
        .credentials(Credentials::track("site-id", "track-key"))
        .build(ReqwestService::new(reqwest::Client::new()))
}

#[tokio::test]
async fn identify_and_track_reach_the_mock_through_reqwest() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let client = client_at(&mock.base_url());
    let attributes = json!({"email": "ada@example.com"});
    client
        .identify("ada", attributes.as_object().unwrap())
        .await
        .unwrap();
    client
        .track("ada", Event::new("signed_up").data(json!({"plan": "pro"})))
        .await
        .unwrap();
    let ledger = mock.ledger();
    let ada = ledger.person("ada").expect("identified");
    assert_eq!(ada.attributes["email"], "ada@example.com");
    let events = ledger.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].name, "signed_up");
}

/// A 429 from the server reaches the throttle layer through reqwest, and the request is
/// retried until it goes through: nothing is lost.
#[tokio::test]
async fn refusals_through_reqwest_are_fed_back_and_retried() {
    // A server allowing 2 per second against a client pacing at 100.
    let config = MockConfig::default().limit(Api::Track, Some(Limit::per_second(2)));
    let mock = MockServer::start(config).await.unwrap();
    let client = client_at(&mock.base_url());
    for n in 0..4 {
        client
            .identify(&format!("person-{n}"), &serde_json::json!({}))
            .await
            .unwrap();
    }
    assert_eq!(mock.ledger().people_count(), 4);
    assert!(
        mock.ledger().counts().throttled >= 1,
        "the mock never refused"
    );
    assert!(
        client.limiter().stats().acquired >= 5,
        "the retries went through the limiter"
    );
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_error_with_reqwest_as_its_source() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = client_at(&format!("http://127.0.0.1:{port}"));
    let started = std::time::Instant::now();
    let error = client
        .identify("ada", &serde_json::json!({}))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    let Error::Transport(transport) = &error else {
        panic!("expected a transport error, got {error:?}");
    };
    let mut source: Option<&(dyn StdError + 'static)> = Some(transport.as_ref());
    let mut found = false;
    while let Some(error) = source {
        if let Some(reqwest) = error.downcast_ref::<reqwest::Error>() {
            assert!(reqwest.is_connect(), "{reqwest:?}");
            found = true;
        }
        source = error.source();
    }
    assert!(found, "no reqwest::Error in the chain of {error:?}");
    // The retry layer found the refused connection in the chain and tried again.
    assert!(
        client.retry_layer().stats().retries >= 1,
        "not retried: {error:?}"
    );
}
