//! What the outbox reports through the `metrics` facade, read back from `metrics-util`'s
//! debugging recorder: the names and labels in the crate docs, with the values a known run
//! must give.
#![cfg(feature = "metrics")]

use std::time::Duration;

use metrics_util::debugging::DebuggingRecorder;
use pacer_customerio::{Client, Credentials, Event, Operation, Roots};
use pacer_mock::{MockConfig, MockServer};
use pacer_outbox::Outbox;
use pacer_testkit::metrics::readings;
use serde_json::json;

async fn run() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let client = Client::builder()
        .base_url(&mock.base_url())
        .credentials(Credentials::track("site-id", "track-key"))
        .build_https(Roots::Webpki)
        .unwrap();
    let outbox = Outbox::builder(client).build();
    for n in 0..10 {
        outbox
            .track(&format!("u{n}"), Event::new("e"))
            .await
            .unwrap();
    }
    let nameless = json!({"type": "person", "action": "event", "identifiers": {"id": "x"}});
    outbox
        .enqueue(Operation::from_value(nameless).unwrap())
        .await
        .unwrap();
    assert!(outbox.track("", Event::new("e")).await.is_err());
    assert_eq!(outbox.stats().pending, 11);
    let report = outbox.shutdown(Duration::from_secs(10)).await;
    assert_eq!((report.delivered, report.dead), (10, 1));
}

#[test]
fn every_outbox_metric_is_reported() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || runtime.block_on(run()));
    let metrics = readings(&snapshotter);
    let value = |name: &str| {
        *metrics
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from {metrics:?}"))
    };
    assert_eq!(value("pacer_outbox_enqueued_total{store=memory}"), 11.0);
    assert_eq!(
        value("pacer_outbox_enqueue_failed_total{reason=invalid}"),
        1.0
    );
    assert_eq!(value("pacer_outbox_delivered_total{}"), 10.0);
    assert_eq!(value("pacer_outbox_dead_total{}"), 1.0);
    assert_eq!(
        value("pacer_outbox_pending{}"),
        0.0,
        "set again by shutdown's stats"
    );
    assert!(value("pacer_outbox_batch_operations{}") >= 1.0);
    assert!(value("pacer_outbox_batch_fill{}") >= 1.0);
    assert!(value("pacer_outbox_oldest_lag_seconds{}") >= 0.0);
}
