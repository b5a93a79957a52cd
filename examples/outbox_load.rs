//! Load on the outbox: a producer enqueues N `track` events as fast as it can, the outbox
//! delivers them as Track v2 batches paced at R requests/s, and one JSON line reports:
//!
//! ```text
//! {"enqueued":…,"delivered":…,"dead":…,"requests":…,"events_per_s":…,"enqueue_p99_us":…,"peak_rss_mib":…}
//! ```
//!
//! ```text
//! cargo run --release --features outbox,redis --example outbox_load -- \
//!     --events N [--rate R] [--redis URL] [--workers K] [--producers P]
//!     [--base-url URL --site-id S --api-key K] [--direct] [--backlog]
//! ```
//!
//! Without `--base-url` it starts the in-process mock with a Track limit of R requests/s
//! (default 100); with it, any server speaking the Track v2 batch API (`pacer-mock` in a
//! process of its own keeps the mock's ledger out of `peak_rss_mib`). Without `--redis` the
//! outbox is in memory; with it, one producer outbox writes the stream and K worker outboxes
//! (default 2, on a runtime of their own, as a worker process would be) deliver from its
//! consumer group, all on one client (one Track budget).
//! `events_per_s` counts from the first enqueue to the last delivery. `--direct` is the
//! baseline: no outbox, every event awaited through `Client::track` from 64 tasks. With
//! `--redis`, `--backlog` starts the workers only once all N are in the stream (a backlog of
//! N in Redis, to show this process's memory stays flat while it drains).

use std::error::Error;
use std::time::{Duration, Instant};

use pacer::customerio::{ApiClass, Client, Credentials, Event, Roots};
use pacer::limit::Quota;
use pacer::outbox::{Outbox, RedisOptions};
use pacer_mock::{Limit, MockConfig, MockServer};
use serde_json::json;

#[derive(Debug)]
struct Args {
    events: usize,
    rate: u32,
    redis: Option<String>,
    workers: usize,
    producers: usize,
    base_url: Option<String>,
    site_id: String,
    api_key: String,
    direct: bool,
    backlog: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        events: 100_000,
        rate: 100,
        redis: None,
        workers: 2,
        producers: 0,
        base_url: None,
        site_id: "site-id".into(),
        api_key: "track-key".into(),
        direct: false,
        backlog: false,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        if flag == "--direct" || flag == "--backlog" {
            args.direct |= flag == "--direct";
            args.backlog |= flag == "--backlog";
            continue;
        }
        let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |value: &str| {
            value
                .parse::<usize>()
                .map_err(|_| format!("{flag}: not a number: {value:?}"))
        };
        match flag.as_str() {
            "--events" => args.events = number(&value)?,
            "--rate" => args.rate = number(&value)? as u32,
            "--redis" => args.redis = Some(value),
            "--workers" => args.workers = number(&value)?.max(1),
            "--producers" => args.producers = number(&value)?,
            "--base-url" => args.base_url = Some(value),
            "--site-id" => args.site_id = value,
            "--api-key" => args.api_key = value,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.producers == 0 {
        // One producer task keeps the in-memory p99 honest; Redis needs concurrent producers
        // to fill its pipeline (each enqueue is a round trip).
        args.producers = match (args.direct, &args.redis) {
            (true, _) => 64,
            (false, Some(_)) => 8,
            (false, None) => 1,
        };
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = parse().map_err(|message| {
        eprintln!("outbox_load: {message}");
        message
    })?;
    let mock = match &args.base_url {
        Some(_) => None,
        None => Some(
            MockServer::start(
                MockConfig::default()
                    .limit(pacer_mock::Api::Track, Some(Limit::per_second(args.rate))),
            )
            .await?,
        ),
    };
    let base = args
        .base_url
        .clone()
        .or_else(|| mock.as_ref().map(MockServer::base_url))
        .expect("a base URL or the mock");
    let client: Client = Client::builder()
        .base_url(&base)
        .credentials(Credentials::track(
            args.site_id.as_str(),
            args.api_key.as_str(),
        ))
        .quota(ApiClass::Track, Quota::per_second(args.rate.max(1)))
        .build_https(Roots::Webpki)?;

    if args.direct {
        return direct(&args, &client, mock.as_ref()).await;
    }
    let capacity = args.events.max(1);
    let (producer, mut workers, options) = match &args.redis {
        None => (
            Outbox::builder(client.clone()).capacity(capacity).build(),
            Vec::new(),
            None,
        ),
        Some(url) => {
            let options = RedisOptions::new(url.clone())
                .prefix(format!("outbox-load-{}", std::process::id()));
            let producer = Outbox::builder(client.clone())
                .capacity(capacity)
                .enqueue_only()
                .build_redis(options.clone())
                .await?;
            let workers = if args.backlog {
                Vec::new()
            } else {
                start_workers(&args, &client, &options, capacity).await?
            };
            (producer, workers, Some(options))
        }
    };

    let started = Instant::now();
    let per_task = args.events.div_ceil(args.producers);
    let mut tasks = Vec::new();
    for task in 0..args.producers {
        let producer = producer.clone();
        let range = (task * per_task)..((task + 1) * per_task).min(args.events);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(range.len());
            let mut failed = 0_usize;
            for n in range {
                let event = Event::new("signed_up").data(json!({"plan": "pro", "n": n}));
                let id = format!("user-{n}");
                let before = Instant::now();
                let result = producer.track(&id, event).await;
                latencies.push(before.elapsed().as_nanos() as u64);
                failed += usize::from(result.is_err());
            }
            (latencies, failed)
        }));
    }
    let mut latencies = Vec::with_capacity(args.events);
    let mut failed = 0;
    for task in tasks {
        let (mut taken, not_stored) = task.await?;
        latencies.append(&mut taken);
        failed += not_stored;
    }
    let produced_in = started.elapsed();
    let enqueued = (args.events - failed) as u64;

    let (mut delivered, mut dead, mut requests) = (0, 0, 0);
    match &options {
        None => {
            let report = producer.shutdown(Duration::from_secs(3600)).await;
            let stats = producer.stats();
            (delivered, dead, requests) = (report.delivered, report.dead, stats.requests);
        }
        Some(options) => {
            if args.backlog {
                let backlog = options.stats().await?.length;
                eprintln!("backlog of {backlog} in Redis; starting the workers");
                workers = start_workers(&args, &client, options, capacity).await?;
            }
            let deadline = Instant::now() + Duration::from_secs(3600);
            while options.stats().await?.length > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            for worker in &workers {
                let report = worker.shutdown(Duration::from_secs(30)).await;
                delivered += report.delivered;
                dead += report.dead;
                requests += worker.stats().requests;
            }
            let _ = producer.shutdown(Duration::from_secs(1)).await;
        }
    }
    let elapsed = started.elapsed();
    if let Some(mock) = &mock {
        requests = mock.ledger().counts().requests;
    }
    latencies.sort_unstable();
    let p99 = latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0);
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |ns| *ns as f64 / 1000.0)
    };
    eprintln!(
        "enqueue µs: p50 {:.1}, p90 {:.1}, p99 {:.1}, p99.9 {:.1}, max {:.1}",
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        at(1.0)
    );
    eprintln!(
        "produced {} in {:.2} s; delivered in {:.2} s",
        args.events,
        produced_in.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "{}",
        json!({
            "enqueued": enqueued,
            "delivered": delivered,
            "dead": dead,
            "requests": requests,
            "events_per_s": (delivered as f64 / elapsed.as_secs_f64()).round(),
            "enqueue_p99_us": (p99 as f64 / 100.0).round() / 10.0,
            "peak_rss_mib": peak_rss_mib(),
        })
    );
    Ok(())
}

/// Starts `--workers` delivering outboxes on a runtime of their own (one thread), as a worker
/// process of a fleet would be: their reads and acknowledgements stay out of the producers'
/// way.
async fn start_workers(
    args: &Args,
    client: &Client,
    options: &RedisOptions,
    capacity: usize,
) -> Result<Vec<Outbox>, Box<dyn Error>> {
    let worker_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut workers = Vec::new();
    for k in 0..args.workers {
        let (client, options) = (client.clone(), options.clone());
        workers.push(
            worker_runtime
                .spawn(async move {
                    Outbox::builder(client)
                        .capacity(capacity)
                        .build_redis(options.consumer(format!("worker-{k}")))
                        .await
                })
                .await??,
        );
    }
    // Kept alive until the process exits.
    std::mem::forget(worker_runtime);
    Ok(workers)
}

/// The baseline: every event awaited through `Client::track` (one request each), from
/// `--producers` tasks at once, as a handler awaiting Customer.io would.
async fn direct(
    args: &Args,
    client: &Client,
    mock: Option<&MockServer>,
) -> Result<(), Box<dyn Error>> {
    let started = Instant::now();
    let per_task = args.events.div_ceil(args.producers);
    let mut tasks = Vec::new();
    for task in 0..args.producers {
        let client = client.clone();
        let range = (task * per_task)..((task + 1) * per_task).min(args.events);
        tasks.push(tokio::spawn(async move {
            let mut delivered = 0_u64;
            for n in range {
                let event = Event::new("signed_up").data(json!({"plan": "pro", "n": n}));
                delivered += u64::from(client.track(&format!("user-{n}"), event).await.is_ok());
            }
            delivered
        }));
    }
    let mut delivered = 0;
    for task in tasks {
        delivered += task.await?;
    }
    let elapsed = started.elapsed();
    println!(
        "{}",
        json!({
            "enqueued": 0,
            "delivered": delivered,
            "dead": args.events as u64 - delivered,
            "requests": mock.map(|mock| mock.ledger().counts().requests),
            "events_per_s": (delivered as f64 / elapsed.as_secs_f64() * 10.0).round() / 10.0,
            "enqueue_p99_us": null,
            "peak_rss_mib": peak_rss_mib(),
        })
    );
    Ok(())
}

/// `VmHWM` from `/proc/self/status`: the peak resident set size (Linux).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kib / 1024.0 * 10.0).round() / 10.0)
}
