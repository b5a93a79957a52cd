//! Chaos: three `pacer-outbox work` processes on one stream, two of them SIGKILLed mid-batch,
//! redis-server (AOF, `appendfsync always`) killed and restarted during delivery, the mock
//! answering 5 % of requests 500 and dropping 2 % of connections after applying them. Every
//! enqueue that returned Ok must be in the mock's ledger, no event under two ids, and every
//! invalid operation in the dead-letter stream with its reason. Bounded: well under 60 s.
#![cfg(feature = "cli")]

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pacer_customerio::{Client, Credentials, Event, Operation, Roots};
use pacer_mock::{Faults, MockConfig, MockServer};
use pacer_outbox::{Outbox, RedisOptions};
use pacer_testkit::RedisServer;
use serde_json::{json, Value};

/// Kills the worker processes however the test ends.
struct Workers(Vec<Option<Child>>);

impl Workers {
    fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.0[index].take() {
            let _ = child.kill(); // SIGKILL: no shutdown, batches in flight
            let _ = child.wait();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for index in 0..self.0.len() {
            self.kill(index);
        }
    }
}

fn worker(redis: &str, base_url: &str, name: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pacer-outbox"))
        .args(["--redis", redis, "--prefix", "chaos", "work"])
        .args(["--base-url", base_url, "--site-id", "site-id"])
        .args([
            "--track-rate",
            "20",
            "--max-operations",
            "20",
            "--concurrency",
            "2",
        ])
        .args(["--claim-idle-ms", "1500"])
        .env("CUSTOMERIO_API_KEY", "track-key")
        .env("HOSTNAME", name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the pacer-outbox binary starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_and_a_restarted_redis_lose_nothing_and_double_nothing() {
    let Some(mut redis) = RedisServer::start_with_aof() else {
        return;
    };
    let started = Instant::now();
    let faults = Faults {
        server_errors: 0.05,
        drop_after: 0.02,
        ..Faults::default()
    };
    let mock = MockServer::start(MockConfig::default().faults(faults).seed(42))
        .await
        .unwrap();
    let options = RedisOptions::new(redis.url())
        .prefix("chaos")
        .timeout(Duration::from_millis(500));
    let client = Client::builder()
        .base_url(&mock.base_url())
        .credentials(Credentials::track("site-id", "track-key"))
        .build_https(Roots::Webpki)
        .unwrap();
    let producer = Outbox::builder(client)
        .enqueue_only()
        .build_redis(options.clone())
        .await
        .unwrap();
    let mut workers = Workers(
        (0..3)
            .map(|k| Some(worker(&redis.url(), &mock.base_url(), &format!("w{k}"))))
            .collect(),
    );

    // Events (with their ids when the enqueue returned Ok) and invalid operations, enqueued
    // while the workers deliver; the chaos happens in between.
    let mut stored: HashMap<u64, String> = HashMap::new();
    let mut invalid_stored: HashSet<String> = HashSet::new();
    let mut refused_enqueues = 0;
    for n in 0..3000_u64 {
        match n {
            800 => workers.kill(0),
            1500 => redis.restart(),
            2200 => workers.kill(1),
            _ => {}
        }
        if n % 150 == 0 {
            let bad = format!("bad-{n}");
            let nameless = json!({"type": "person", "action": "event", "identifiers": {"id": bad}});
            if producer
                .enqueue(Operation::from_value(nameless).unwrap())
                .await
                .is_ok()
            {
                invalid_stored.insert(bad);
            }
        }
        let event = Event::new("chaos").data(json!({ "n": n }));
        match producer.track(&format!("u{n}"), event).await {
            Ok(receipt) => {
                stored.insert(n, receipt.event_id.unwrap());
            }
            Err(_) => refused_enqueues += 1,
        }
        if n % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }
    assert!(stored.len() > 2500, "{refused_enqueues} enqueues refused");

    // The survivor takes over what the killed workers left pending and drains the stream.
    let deadline = started + Duration::from_secs(50);
    loop {
        match options.stats().await {
            Ok(stats) if stats.length == 0 => break,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the stream did not drain in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    workers.kill(2);
    let counts = mock.ledger().counts();
    eprintln!(
        "chaos: {} events stored, {refused_enqueues} enqueues refused while Redis restarted, \
         {} invalid stored; mock: {counts:?}",
        stored.len(),
        invalid_stored.len()
    );

    let mut ids_of: HashMap<u64, HashSet<String>> = HashMap::new();
    for event in mock.ledger().events() {
        if let (Some(n), Some(id)) = (event.data["n"].as_u64(), event.id) {
            ids_of.entry(n).or_default().insert(id);
        }
    }
    for (n, id) in &stored {
        let ids = ids_of.get(n).unwrap_or_else(|| panic!("event {n} lost"));
        assert_eq!(ids.len(), 1, "event {n} recorded under {ids:?}");
        assert!(ids.contains(id), "event {n} under another id");
    }
    let dead: HashMap<String, String> = options
        .dead_letters(1000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|letter| {
            let operation: Value = serde_json::from_str(&letter.operation).ok()?;
            let id = operation["identifiers"]["id"].as_str()?.to_owned();
            Some((id, letter.reason))
        })
        .collect();
    for bad in &invalid_stored {
        let reason = dead
            .get(bad)
            .unwrap_or_else(|| panic!("{bad} not dead-lettered"));
        assert!(reason.contains("name"), "{bad}: {reason}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(55),
        "{:?}",
        started.elapsed()
    );
}
