//! Metrics read back from `metrics-util`'s debugging recorder, as a flat map a test can assert
//! on (feature `metrics`).

use std::collections::HashMap;

use metrics_util::debugging::{DebugValue, Snapshotter};

/// `name{label=value,...}` (labels sorted) of every metric recorded, and its value: a counter's
/// count, a gauge's value, a histogram's number of samples.
#[must_use]
pub fn readings(snapshotter: &Snapshotter) -> HashMap<String, f64> {
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
