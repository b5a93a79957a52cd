//! Issue 21: priority lanes on one quota. An import (A) spends the Track quota of 100/s flat
//! out while a user-facing sender (B) makes 5 requests per second on the same quota; how long
//! does B wait, and how much of the quota does A keep?
//!
//! Four runs against one in-process mock (Track: 100/s, sliding window):
//! - two OS processes (this binary re-runs itself as A and B) sharing the quota through a
//!   `redis-server` of their own: A in the bulk lane and B interactive, then both in the normal
//!   lane (first in, first out: what every request got before lanes);
//! - one process, A and B as two task groups on one client (one limiter), the same two ways.
//!
//! A keeps 32 v2 batch requests (one operation each) waiting at all times; B starts one
//! request every 200 ms (each in its own task, so a slow one does not delay the next), from one
//! second into the run until its end. B's figure is each call's latency: its wait for a slot
//! plus the loopback round trip to the mock (well under a millisecond). A's share is what it
//! got delivered while B was sending, over what the quota allows in that time.
//!
//! ```text
//! cargo run --release --features https,redis --example lanes_bench [-- --seconds 20]
//! ```

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pacer::customerio::{ApiClass, Client, Credentials, Event, Identifier, Operation, Roots};
use pacer::limit::{Priority, Quota};
use pacer::redis::{LimiterExt, RedisStore, SharedQuota};
use pacer_mock::{MockConfig, MockServer};
use pacer_testkit::RedisServer;
use tokio::time::Instant;

/// The child's orders: `<a|b> <lanes|fifo> <mock base URL> <redis URL> <start, Unix ms> <seconds>`.
const ORDERS: &str = "PACER_LANES_BENCH_CHILD";
/// Requests the import keeps waiting.
const IMPORT_TASKS: usize = 32;
/// B's requests per second.
const INTERACTIVE_PER_SECOND: u64 = 5;
/// B starts this long after A, once A saturates the quota.
const WARM_UP: Duration = Duration::from_secs(1);
const LIMIT: f64 = 100.0;

fn main() {
    if let Ok(orders) = std::env::var(ORDERS) {
        child(&orders);
        return;
    }
    let mut args = std::env::args().skip(1);
    let mut seconds = 20u64;
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--seconds", Some(value)) => {
                seconds = value
                    .parse()
                    .ok()
                    .filter(|s| (3..=300).contains(s))
                    .expect("--seconds takes a whole number from 3 to 300");
            }
            _ => panic!("usage: lanes_bench [--seconds N]"),
        }
    }
    let Some(redis) = RedisServer::start() else {
        eprintln!("redis-server is not installed: nothing to measure");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("{seconds} s per run; B: {INTERACTIVE_PER_SECOND} req/s from {WARM_UP:?} on; A: {IMPORT_TASKS} requests waiting");
    println!();
    println!(
        "| run | lanes (A / B) | B calls | B p50 | B p99 | B max | A share of the quota | A Redis calls/s | 429s |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for mode in ["lanes", "fifo"] {
        let run = two_processes(&runtime, &redis, mode, seconds);
        run.row("two processes, Redis", mode);
    }
    for mode in ["lanes", "fifo"] {
        let run = runtime.block_on(one_process(mode, seconds));
        run.row("one process", mode);
    }
}

/// What one run measured.
#[derive(Debug, Default)]
struct Run {
    /// B's call latencies, sorted.
    waits: Vec<Duration>,
    /// A's deliveries while B was sending.
    delivered: u64,
    /// How long B was sending.
    window: Duration,
    throttled: u64,
    /// A's reservations in Redis per second, when it shares the quota through Redis.
    round_trips: Option<f64>,
}

impl Run {
    fn row(&self, setup: &str, mode: &str) {
        let lanes = if mode == "lanes" {
            "bulk / interactive"
        } else {
            "normal / normal (FIFO)"
        };
        let at = |q: f64| {
            let index = ((self.waits.len() as f64 - 1.0) * q).round() as usize;
            self.waits.get(index).copied().unwrap_or_default()
        };
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
        let share = self.delivered as f64 / (LIMIT * self.window.as_secs_f64());
        let round_trips = self
            .round_trips
            .map_or_else(|| "–".to_owned(), |r| format!("{r:.0}"));
        println!(
            "| {setup} | {lanes} | {} | {} | {} | {} | {share:.3} | {round_trips} | {} |",
            self.waits.len(),
            ms(at(0.5)),
            ms(at(0.99)),
            ms(at(1.0)),
            self.throttled
        );
    }
}

fn lanes(mode: &str) -> (Priority, Priority) {
    if mode == "lanes" {
        (Priority::Bulk, Priority::Interactive)
    } else {
        (Priority::Normal, Priority::Normal)
    }
}

fn unix_ms(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH).unwrap().as_millis()
}

fn two_processes(
    runtime: &tokio::runtime::Runtime,
    redis: &RedisServer,
    mode: &str,
    seconds: u64,
) -> Run {
    let mock = runtime
        .block_on(MockServer::start(MockConfig::default()))
        .unwrap();
    // Start together, once both children have started and connected.
    let start = SystemTime::now() + Duration::from_secs(2);
    let children: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|role| {
            let orders = format!(
                "{role} {mode} {} {} {} {seconds}",
                mock.base_url(),
                redis.url(),
                unix_ms(start)
            );
            Command::new(std::env::current_exe().unwrap())
                .env(ORDERS, orders)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut run = Run::default();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "a child failed: {output:?}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        for line in stdout.lines() {
            if let Some(delivered) = line.strip_prefix("delivered ") {
                run.delivered = delivered.parse().unwrap();
            } else if let Some(reservations) = line.strip_prefix("reservations ") {
                let reservations: f64 = reservations.parse().unwrap();
                run.round_trips = Some(reservations / seconds as f64);
            } else if let Some(waits) = line.strip_prefix("waits_us ") {
                run.waits = waits
                    .split(',')
                    .filter(|w| !w.is_empty())
                    .map(|w| Duration::from_micros(w.parse().unwrap()))
                    .collect();
            }
        }
    }
    run.waits.sort();
    run.window = Duration::from_secs(seconds) - WARM_UP;
    run.throttled = mock.ledger().counts().throttled;
    run
}

/// A or B in a process of its own (see [`two_processes`]).
fn child(orders: &str) {
    let fields: Vec<&str> = orders.split(' ').collect();
    let [role, mode, mock, redis, start, seconds] = fields[..] else {
        panic!("malformed orders: {orders}");
    };
    let start = UNIX_EPOCH + Duration::from_millis(start.parse().unwrap());
    let seconds: u64 = seconds.parse().unwrap();
    // One thread per process, as a small service would run.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = RedisStore::connect(redis, "site-id").await.unwrap();
        let client = client(mock).shared_quota(SharedQuota::new(store, 2));
        let client = client.build_https(Roots::Webpki).unwrap();
        let wait = start.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::time::sleep(wait).await;
        let begin = Instant::now();
        let end = begin + Duration::from_secs(seconds);
        let (bulk, interactive) = lanes(mode);
        if role == "a" {
            let delivered = import(&client, bulk, begin + WARM_UP, end).await;
            println!("delivered {delivered}");
            let stats = client.limiter().shared_stats().unwrap();
            println!("reservations {}", stats.reservations);
        } else {
            let waits = interactive_calls(&client, interactive, begin + WARM_UP, end).await;
            let waits: Vec<String> = waits.iter().map(|w| w.as_micros().to_string()).collect();
            println!("waits_us {}", waits.join(","));
        }
    });
}

/// A and B as two task groups on one client.
async fn one_process(mode: &str, seconds: u64) -> Run {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let client = client(&mock.base_url()).build_https(Roots::Webpki).unwrap();
    let begin = Instant::now();
    let end = begin + Duration::from_secs(seconds);
    let (bulk, interactive) = lanes(mode);
    let importer = {
        let client = client.clone();
        tokio::spawn(async move { import(&client, bulk, begin + WARM_UP, end).await })
    };
    let mut waits = interactive_calls(&client, interactive, begin + WARM_UP, end).await;
    let delivered = importer.await.unwrap();
    waits.sort();
    Run {
        waits,
        delivered,
        window: Duration::from_secs(seconds) - WARM_UP,
        throttled: mock.ledger().counts().throttled,
        round_trips: None,
    }
}

/// The client both sides use: the Track quota at the default 100/s (evenly spaced, 1 %
/// margin), interactive calls unbounded so that every wait is measured, not refused.
fn client(mock: &str) -> pacer::customerio::ClientBuilder {
    Client::builder()
        .base_url(mock)
        .credentials(Credentials::track("site-id", "track-key"))
        .quota(ApiClass::Track, Quota::per_second(100))
        .max_wait_in(Priority::Interactive, None)
}

/// Keeps `IMPORT_TASKS` v2 batch requests of `lane` waiting until `end`; returns how many
/// were delivered between `from` and `end`.
async fn import(client: &Client, lane: Priority, from: Instant, end: Instant) -> u64 {
    let tasks: Vec<_> = (0..IMPORT_TASKS)
        .map(|task| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut delivered = 0;
                for n in 0u64.. {
                    let person = Identifier::Id(format!("{}-{task}-{n}", std::process::id()));
                    let operation = Operation::event(&person, Event::new("imported")).unwrap();
                    let mut requests = client
                        .requests()
                        .batch_encoded(&[operation.encoded().clone()])
                        .unwrap();
                    let mut request = requests.remove(0);
                    // What `Client::send_packed` does for the bulk lane, here for either lane.
                    request.extensions_mut().insert(lane);
                    match tokio::time::timeout_at(end, client.send(request)).await {
                        Ok(Ok(_)) if Instant::now() >= from => delivered += 1,
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                delivered
            })
        })
        .collect();
    let mut delivered = 0;
    for task in tasks {
        delivered += task.await.unwrap();
    }
    delivered
}

/// Starts a request of `lane` every 1/`INTERACTIVE_PER_SECOND` s from `from` until `end`;
/// returns each one's latency.
async fn interactive_calls(
    client: &Client,
    lane: Priority,
    from: Instant,
    end: Instant,
) -> Vec<Duration> {
    tokio::time::sleep_until(from).await;
    let waits = Arc::new(Mutex::new(Vec::new()));
    let mut calls = Vec::new();
    let every = Duration::from_millis(1000 / INTERACTIVE_PER_SECOND);
    let mut next = from;
    while next + every <= end {
        tokio::time::sleep_until(next).await;
        let (client, waits) = (client.clone(), Arc::clone(&waits));
        calls.push(tokio::spawn(async move {
            let asked = Instant::now();
            let mut request = client
                .requests()
                .track("user", Event::new("clicked"))
                .unwrap();
            request.extensions_mut().insert(lane);
            // Bounded: the run ends, and a call still waiting then is counted as waited so far.
            let _ =
                tokio::time::timeout_at(end + Duration::from_secs(5), client.send(request)).await;
            waits.lock().unwrap().push(asked.elapsed());
        }));
        next += every;
    }
    for call in calls {
        call.await.unwrap();
    }
    let waits = waits.lock().unwrap().clone();
    waits
}
