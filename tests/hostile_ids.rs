//! Any identifier the client encodes reaches the mock as the same identifier, on the intended
//! endpoint: percent-encoding on one side and decoding on the other agree, over real HTTP.

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use pacer::customerio::{check_identifier, ApiClass, Client, Credentials, Event};
use pacer::limit::Quota;
use pacer_mock::{MockConfig, MockServer};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Map;

#[test]
fn every_identifier_round_trips_through_the_path() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mock = runtime
        .block_on(MockServer::start(
            MockConfig::default().limit(pacer_mock::Api::Track, None),
        ))
        .unwrap();
    let client = runtime.block_on(async {
        Client::builder()
            .base_url(&mock.base_url())
            .credentials(Credentials::track("site-id", "track-key"))
            // Pacing is not under test here.
            .quota(ApiClass::Track, Quota::per_second(1_000_000))
            .build(HttpClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>())
    });
    let ids = prop_oneof![
        any::<String>(),
        r"[./?#%@+ &=;:a-z]{1,20}",
        Just("../../v1/send/email".to_owned()),
    ]
    // The ids the client sends at all (1 to 150 bytes, not blank, no control characters, not
    // `.` or `..`); the others are refused before sending (`crates/pacer-customerio/tests`).
    .prop_filter("ids the client accepts", |id| {
        check_identifier("id", id).is_ok()
    });
    let mut runner = TestRunner::new(Config::with_cases(256));
    runner
        .run(&ids, |id| {
            runtime
                .block_on(client.identify(&id, &Map::new()))
                .map_err(|error| TestCaseError::fail(format!("{id:?}: {error}")))?;
            runtime
                .block_on(client.track(&id, Event::new("probe")))
                .map_err(|error| TestCaseError::fail(format!("{id:?}: {error}")))?;
            prop_assert!(
                mock.ledger().person(&id).is_some(),
                "{:?} arrived as another id",
                id
            );
            let events = mock.ledger().events();
            prop_assert_eq!(
                events.last().and_then(|e| e.customer.as_deref()),
                Some(id.as_str())
            );
            Ok(())
        })
        .unwrap();
    assert!(
        mock.ledger().transactional().is_empty(),
        "no id reached another endpoint"
    );
}
