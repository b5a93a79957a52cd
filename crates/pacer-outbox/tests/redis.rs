//! The Redis Streams outbox against a throwaway redis-server and the mock Customer.io.
#![cfg(feature = "redis")]

use std::time::{Duration, Instant};

use pacer_customerio::{Client, Credentials, Event, Operation, Roots};
use pacer_mock::{MockConfig, MockServer};
use pacer_outbox::{EnqueueError, Outbox, RedisOptions};
use pacer_testkit::RedisServer;
use serde_json::json;

fn client(mock: &MockServer) -> Client {
    Client::builder()
        .base_url(&mock.base_url())
        .credentials(Credentials::track("site-id", "track-key"))
        .build_https(Roots::Webpki)
        .unwrap()
}

/// Waits (bounded) until the stream holds nothing undelivered.
async fn until_empty(options: &RedisOptions) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while options.stats().await.unwrap().length > 0 {
        assert!(Instant::now() < deadline, "the stream did not drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn enqueued_operations_are_delivered_acknowledged_and_refused_ones_dead_lettered() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let options = RedisOptions::new(redis.url()).prefix("t1");
    let outbox = Outbox::builder(client(&mock))
        .build_redis(options.clone())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..2000 {
        let receipt = outbox
            .track(&format!("u{n}"), Event::new("e").data(json!({ "n": n })))
            .await
            .unwrap();
        ids.push(receipt.event_id.unwrap());
    }
    let nameless = json!({"type": "person", "action": "event", "identifiers": {"id": "p"}});
    outbox
        .enqueue(Operation::from_value(nameless).unwrap())
        .await
        .unwrap();
    until_empty(&options).await;
    let report = outbox.shutdown(Duration::from_secs(5)).await;
    assert_eq!((report.delivered, report.dead, report.left), (2000, 1, 0));
    let mut seen: Vec<String> = mock
        .ledger()
        .events()
        .into_iter()
        .filter_map(|e| e.id)
        .collect();
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
    let stats = options.stats().await.unwrap();
    assert_eq!((stats.length, stats.pending, stats.dead), (0, 0, 1));
    let dead = options.dead_letters(10).await.unwrap();
    assert!(dead[0].reason.contains("name"), "{}", dead[0].reason);
    // Replayed, it is refused again: back in the dead letters, not lost.
    assert_eq!(options.replay(10).await.unwrap(), 1);
    assert_eq!(options.stats().await.unwrap().length, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_refuses_and_a_dead_redis_fails_fast_or_falls_back() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let options = RedisOptions::new(redis.url())
        .prefix("t2")
        .timeout(Duration::from_millis(300));
    let producer = Outbox::builder(client(&mock))
        .capacity(2)
        .enqueue_only()
        .build_redis(options.clone())
        .await
        .unwrap();
    producer.track("a", Event::new("e")).await.unwrap();
    producer.track("b", Event::new("e")).await.unwrap();
    assert!(matches!(
        producer.track("c", Event::new("e")).await,
        Err(EnqueueError::Full { capacity: 2 })
    ));
    assert_eq!(options.stats().await.unwrap().length, 2, "nothing trimmed");

    let fallback = Outbox::builder(client(&mock))
        .fallback_to_memory(true)
        .build_redis(options.clone().prefix("t3"))
        .await
        .unwrap();
    redis.kill();
    let started = Instant::now();
    assert!(matches!(
        producer.track("d", Event::new("e")).await,
        Err(EnqueueError::Unavailable { .. })
    ));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let kept = fallback.track("m", Event::new("kept")).await.unwrap();
    let report = fallback.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.delivered, 1);
    assert_eq!(mock.ledger().events()[0].id, kept.event_id);
    let _ = producer.shutdown(Duration::from_millis(100)).await;
}
