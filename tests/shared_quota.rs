//! One Customer.io quota shared by four real OS processes through a real `redis-server`: this
//! test binary re-runs itself as four children (the ignored test `shared_quota_child`), each
//! a full client stack calling the mock's Track API as fast as its limiter lets it for ten
//! seconds. Shared through Redis, the four together use the quota and collect no 429; with
//! local limiters only, each spends the whole quota and the server refuses the excess.
//!
//! Skipped, with a line saying so, when `redis-server` is not installed (and failed in CI,
//! where `PACER_REQUIRE_REDIS` is set).
#![cfg(all(feature = "redis", feature = "https"))]

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pacer::customerio::{ApiClass, Client, Credentials, Roots};
use pacer::limit::Quota;
use pacer::redis::{LimiterExt, RedisStore, SharedQuota};
use pacer_mock::{MockConfig, MockServer};
use pacer_testkit::RedisServer;
use serde_json::{Map, Value};

/// The child's orders: `<shared|local> <mock base URL> <redis URL> <start, Unix ms> <seconds>`.
const ORDERS: &str = "PACER_SHARED_QUOTA_CHILD";
const PROCESSES: usize = 4;
const SECONDS: u64 = 10;
/// Concurrent callers in each process.
const TASKS: usize = 8;

/// What the four processes achieved against one fresh mock (Track: 100/s, sliding window).
#[derive(Debug)]
struct Run {
    accepted: u64,
    throttled: u64,
    per_process: Vec<String>,
}

fn run_processes(runtime: &tokio::runtime::Runtime, redis: &RedisServer, mode: &str) -> Run {
    let mock = runtime
        .block_on(MockServer::start(MockConfig::default()))
        .unwrap();
    // Start together, once every child has started and connected.
    let start = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + Duration::from_secs(2);
    let orders = format!(
        "{mode} {} {} {} {SECONDS}",
        mock.base_url(),
        redis.url(),
        start.as_millis()
    );
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "shared_quota_child", "--ignored", "--nocapture"])
                .env(ORDERS, &orders)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    let per_process = children
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().unwrap();
            assert!(output.status.success(), "a child failed: {output:?}");
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            stdout
                .lines()
                .find(|line| line.starts_with("child:"))
                .unwrap_or_else(|| panic!("no result line in {stdout}"))
                .to_owned()
        })
        .collect();
    let counts = mock.ledger().counts();
    Run {
        accepted: counts.requests - counts.throttled,
        throttled: counts.throttled,
        per_process,
    }
}

#[test]
fn four_processes_share_one_quota_through_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();

    let shared = run_processes(&runtime, &redis, "shared");
    let local = run_processes(&runtime, &redis, "local");
    let rate = shared.accepted as f64 / SECONDS as f64;
    println!(
        "shared through Redis: {} accepted ({rate:.1}/s of 100/s, {:.3} of the quota), {} x 429\n  {}",
        shared.accepted,
        rate / 100.0,
        shared.throttled,
        shared.per_process.join("\n  ")
    );
    println!(
        "local limiters only: {} accepted ({:.1}/s), {} x 429\n  {}",
        local.accepted,
        local.accepted as f64 / SECONDS as f64,
        local.throttled,
        local.per_process.join("\n  ")
    );
    // The quota allows 100 per 1.05 s: 95.2/s, 953 in the 10 s.
    assert!(rate >= 92.0, "{shared:?}");
    assert_eq!(shared.throttled, 0, "{shared:?}");
    // The contrast: four processes each spending the whole quota are refused by the server.
    assert!(local.throttled > 0, "{local:?}");
}

/// One of the four processes (run by `four_processes_share_one_quota_through_redis`).
#[test]
#[ignore = "a child process of four_processes_share_one_quota_through_redis"]
fn shared_quota_child() {
    let Ok(orders) = std::env::var(ORDERS) else {
        eprintln!("shared_quota_child runs only as a child of four_processes_share_one_quota_through_redis");
        return;
    };
    let fields: Vec<&str> = orders.split(' ').collect();
    let [mode, mock, redis, start, seconds] = fields[..] else {
        panic!("malformed orders: {orders}");
    };
    let start = UNIX_EPOCH + Duration::from_millis(start.parse().unwrap());
    let seconds: u64 = seconds.parse().unwrap();
    // One thread per process: four processes, the mock and Redis share two cores in CI.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // The default Track quota (evenly spaced), with a 50 ms margin instead of 10: on a
        // shared two-core machine a request can reach the server 20 ms later than the one
        // after it, and a window then holds one more than the margin allows for.
        let quota = Quota::per_second(100).with_margin(Duration::from_millis(50));
        let mut builder = Client::builder()
            .base_url(mock)
            .credentials(Credentials::track("site-id", "track-key"))
            .quota(ApiClass::Track, quota);
        if mode == "shared" {
            let store = RedisStore::connect(redis, "site-id").await.unwrap();
            builder = builder.shared_quota(SharedQuota::new(store, PROCESSES as u32));
        }
        let client = builder.build_https(Roots::Webpki).unwrap();
        let wait = start.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::time::sleep(wait).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        let pid = std::process::id();
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let client = client.clone();
                tokio::spawn(async move {
                    let (mut ok, mut failed) = (0u64, 0u64);
                    let attributes: Map<String, Value> = Map::new();
                    for n in 0.. {
                        let id = format!("{pid}-{task}-{n}");
                        match tokio::time::timeout_at(deadline, client.identify(&id, &attributes))
                            .await
                        {
                            Ok(Ok(())) => ok += 1,
                            Ok(Err(_)) => failed += 1,
                            Err(_) => break,
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        let (mut ok, mut failed) = (0, 0);
        for task in tasks {
            let (o, f) = task.await.unwrap();
            ok += o;
            failed += f;
        }
        let stats = client.limiter().shared_stats();
        println!("child: {mode} pid {pid}: {ok} delivered, {failed} failed; {stats:?}");
    });
}

/// A 429's `Retry-After` seen by one process pauses the others: the throttle layer's pause is
/// written to Redis, and the other process's next slot comes after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_seen_by_one_process_pauses_the_others() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // The server allows 5 per second; the clients believe 100 per second (a wrong quota).
    let config = MockConfig::default().limit(
        pacer_mock::Api::Track,
        Some(pacer_mock::Limit::per_second(5)),
    );
    let mock = MockServer::start(config).await.unwrap();
    let mut clients = Vec::new();
    for _ in 0..2 {
        let store = RedisStore::connect(&redis.url(), "site-id").await.unwrap();
        clients.push(
            Client::builder()
                .base_url(&mock.base_url())
                .credentials(Credentials::track("site-id", "track-key"))
                .shared_quota(SharedQuota::new(store, 2))
                .build_https(Roots::Webpki)
                .unwrap(),
        );
    }
    let attributes = Map::new();
    for n in 0..5 {
        clients[0]
            .identify(&format!("a{n}"), &attributes)
            .await
            .unwrap();
    }
    // The sixth is refused with Retry-After: 1; the first client pauses, retries, succeeds.
    let refused = tokio::spawn({
        let client = clients[0].clone();
        async move { client.identify("a5", &Map::new()).await }
    });
    while mock.ledger().counts().throttled == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Let the pause reach Redis, then call from the other process: it waits, it is not refused.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = tokio::time::Instant::now();
    clients[1].identify("b0", &attributes).await.unwrap();
    let waited = started.elapsed();
    refused.await.unwrap().unwrap();
    assert_eq!(
        mock.ledger().counts().throttled,
        1,
        "{:?}",
        mock.ledger().counts()
    );
    assert!(
        waited >= Duration::from_millis(800),
        "the other process waited {waited:?}"
    );
}
