//! What the outbox reports through the `metrics` facade, read back from `metrics-util`'s
//! debugging recorder: the names and labels in the crate docs, with the values a known run
//! must give.
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use pacer_customerio::{Client, Credentials, Event, Operation, Roots};
use pacer_mock::{MockConfig, MockServer};
use pacer_outbox::Outbox;
use serde_json::json;

/// `name{label=value,...}` of every metric, and its value: a counter's count, a gauge's value,
/// a histogram's number of samples.
fn read(snapshotter: &Snapshotter) -> HashMap<String, f64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|label| format!("{}={}", label.key(), label.value()))
                .collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            let value = match value {
                DebugValue::Counter(count) => count as f64,
                DebugValue::Gauge(gauge) => gauge.into_inner(),
                DebugValue::Histogram(samples) => samples.len() as f64,
            };
            (name, value)
        })
        .collect()
}

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
    let metrics = read(&snapshotter);
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
