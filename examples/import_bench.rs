//! Benchmarks of the import path against the mock Customer.io (Track limit 100 requests/s):
//!
//! 1. `--mode single` (one v1 request per record) through pacer, next to the widely copied naive
//!    token-bucket client (80/s, every waiter woken on each refill) and governor's
//!    `until_ready` (100/s), each from 8 tasks for `SECONDS`: accepted requests/s as a ratio of
//!    the limit, and 429s;
//! 2. `--mode batch` importing 100,000 people: wall time next to the floor the limits set;
//! 3. peak memory of the `pacer-import` binary for 1 and 2 million lines (the mock in a process
//!    of its own, so its ledger does not count).
//!
//! ```text
//! cargo build --release -p pacer-import -p pacer-mock
//! cargo run --release --example import_bench [-- --skip-memory]
//! ```

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use pacer::customerio::{https_client, Client, Credentials, Endpoints, Requests, Roots};
use pacer_import::engine::{run, Mode, Plan};
use pacer_import::generate::generate;
use pacer_import::input::Format;
use pacer_import::interrupt::Interrupts;
use pacer_import::progress::Counters;
use pacer_import::reason::Redactor;
use pacer_mock::{MockConfig, MockServer};
use serde_json::{Map, Value};
use tokio::sync::Notify;

const LIMIT: f64 = 100.0;
const SECONDS: u64 = 5;
const TASKS: usize = 8;

#[tokio::main]
async fn main() {
    let skip_memory = std::env::args().any(|arg| arg == "--skip-memory");
    let scratch = std::env::temp_dir().join(format!("pacer-import-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch directory");

    println!("## 1. One request per record, {SECONDS} s from {TASKS} tasks, mock at 100 req/s (sliding window)\n");
    println!("| client | accepted req/s | ratio | 429s |");
    println!("|---|---:|---:|---:|");
    let (rate, throttled) = single_pacer(&scratch).await;
    row("pacer-import --mode single", rate, throttled);
    let (rate, throttled) = single_naive().await;
    row("naive token bucket (80/s, wake all)", rate, throttled);
    let (rate, throttled) = single_governor().await;
    row("governor until_ready (100/s)", rate, throttled);

    println!("\n## 2. Batch mode, 100,000 people, mock at 100 req/s\n");
    batch(&scratch).await;

    if !skip_memory {
        println!("\n## 3. Peak memory of the binary (batch mode, mock in its own process)\n");
        println!("| lines | file MiB | records/s | peak RSS MiB |");
        println!("|---:|---:|---:|---:|");
        for lines in [1_000_000, 2_000_000] {
            memory(&scratch, lines);
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

/// An import of `input` from `TASKS` tasks, silent, its side files in `scratch`.
fn plan(input: &Path, scratch: &Path, mode: Mode, batch_size: usize) -> Plan {
    Plan {
        input: Some(input.to_owned()),
        format: Format::Ndjson,
        mode,
        concurrency: TASKS,
        batch_size,
        strict: false,
        dry_run: false,
        dead_letter: scratch.join("bench.dead"),
        checkpoint: Some(scratch.join("bench.checkpoint")),
        resume: false,
        quiet: true,
        drain_timeout: Duration::from_secs(30),
        redactor: Redactor::default(),
    }
}

fn row(name: &str, rate: f64, throttled: u64) {
    println!("| {name} | {rate:.1} | {:.3} | {throttled} |", rate / LIMIT);
}

/// Accepted requests per second over the run, and 429s, from the mock's counters.
fn measured(mock: &MockServer) -> (f64, u64) {
    let counts = mock.ledger().counts();
    let accepted = counts.requests - counts.throttled - counts.faults;
    (accepted as f64 / SECONDS as f64, counts.throttled)
}

async fn single_pacer(scratch: &Path) -> (f64, u64) {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let input = scratch.join("single.ndjson");
    generate(&input, 100_000).expect("input");
    let client = Client::builder()
        .base_url(&mock.base_url())
        .credentials(Credentials::track("site-id", "track-key"))
        .build(https_client(Roots::Webpki).expect("client"));
    let plan = plan(&input, scratch, Mode::Single, 1);
    // Stop after SECONDS, as Ctrl-C would; the counters are read at that instant.
    let snapshot = Arc::new(Mutex::new(None));
    let keep = Arc::clone(&snapshot);
    let mock = Arc::new(mock);
    let watched = Arc::clone(&mock);
    let (interrupt, interrupts) = Interrupts::channel();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(SECONDS)).await;
        *keep.lock().expect("lock") = Some(measured(&watched));
        let _ = interrupt.send(());
    });
    run(
        &plan,
        Some(client),
        Arc::new(Counters::default()),
        interrupts,
    )
    .await
    .expect("import");
    let result = snapshot.lock().expect("lock").take().expect("measured");
    result
}

/// The client people write: a token bucket at 80/s (below the limit, "to be safe"), refilled by
/// a ticker that wakes every waiter, who then race for the tokens.
async fn single_naive() -> (f64, u64) {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let tokens = Arc::new(Mutex::new(80.0_f64));
    let refilled = Arc::new(Notify::new());
    let ticker = {
        let (tokens, refilled) = (Arc::clone(&tokens), Arc::clone(&refilled));
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(10));
            loop {
                interval.tick().await;
                {
                    let mut tokens = tokens.lock().expect("lock");
                    *tokens = (*tokens + 0.8).min(80.0);
                }
                refilled.notify_waiters();
            }
        })
    };
    let acquire = move || {
        let (tokens, refilled) = (Arc::clone(&tokens), Arc::clone(&refilled));
        async move {
            loop {
                let notified = refilled.notified();
                {
                    let mut tokens = tokens.lock().expect("lock");
                    if *tokens >= 1.0 {
                        *tokens -= 1.0;
                        return;
                    }
                }
                notified.await;
            }
        }
    };
    let result = raw_clients(&mock, acquire).await;
    ticker.abort();
    result
}

async fn single_governor() -> (f64, u64) {
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let governor = Arc::new(governor::RateLimiter::direct(governor::Quota::per_second(
        std::num::NonZeroU32::new(100).expect("non-zero"),
    )));
    let acquire = move || {
        let governor = Arc::clone(&governor);
        async move { governor.until_ready().await }
    };
    raw_clients(&mock, acquire).await
}

/// `TASKS` tasks sending identify requests on a plain hyper client, each after `acquire`.
async fn raw_clients<F, Fut>(mock: &MockServer, acquire: F) -> (f64, u64)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let requests = Requests::new(
        Endpoints::all_at(&mock.base_url()),
        Credentials::track("site-id", "track-key"),
    );
    let http = HttpClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let end = Instant::now() + Duration::from_secs(SECONDS);
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (requests, http, acquire) = (requests.clone(), http.clone(), acquire.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while Instant::now() < end {
                    acquire().await;
                    let request = requests
                        .identify(&format!("naive-{task}-{n}"), &Map::new())
                        .expect("request");
                    n += 1;
                    if let Ok(response) = http.request(request).await {
                        let _ = response.into_body().collect().await;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep_until(end.into()).await;
    let result = measured(mock);
    for task in tasks {
        task.abort();
    }
    result
}

async fn batch(scratch: &Path) {
    let people = 100_000;
    let input = scratch.join("batch.ndjson");
    {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&input).expect("input"));
        for n in 0..people {
            writeln!(
                file,
                r#"{{"type":"person","id":"batch-{n}","attributes":{{"plan":"pro","n":{n}}}}}"#
            )
            .expect("write");
        }
    }
    let bytes = std::fs::metadata(&input).expect("input").len();
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let client = Client::builder()
        .base_url(&mock.base_url())
        .credentials(Credentials::track("site-id", "track-key"))
        .build(https_client(Roots::Webpki).expect("client"));
    let plan = plan(&input, scratch, Mode::Batch, 10_000);
    let summary = run(
        &plan,
        Some(client),
        Arc::new(Counters::default()),
        Interrupts::never(),
    )
    .await
    .expect("import");
    let requests = mock.ledger().counts().requests;
    // The floor: the input's bytes in 500 KB batches at 100 requests per second.
    let floor = bytes as f64 / (500.0 * 1024.0) / LIMIT;
    println!("| people | input MiB | requests | 429s | wall time | floor (bytes / 500 KB / 100 per s) | records/s |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {people} | {:.1} | {requests} | {} | {:.2} s | {floor:.2} s | {:.0} |",
        bytes as f64 / 1_048_576.0,
        mock.ledger().counts().throttled,
        summary.elapsed_s.as_secs_f64(),
        summary.delivered as f64 / summary.elapsed_s.as_secs_f64()
    );
    assert_eq!(mock.ledger().people_count(), people);
}

fn binary(name: &str) -> PathBuf {
    let examples = std::env::current_exe().expect("current exe");
    examples
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .join(name)
}

fn memory(scratch: &Path, lines: u64) {
    let input = scratch.join(format!("memory-{lines}.ndjson"));
    generate(&input, lines).expect("input");
    let mut mock = Command::new(binary("pacer-mock"))
        .args(["--port", "0", "--track-limit", "100"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("build the pacer-mock binary first (cargo build --release -p pacer-mock)");
    let mut base = String::new();
    BufReader::new(mock.stdout.take().expect("stdout"))
        .read_line(&mut base)
        .expect("the mock prints its URL");
    let output = Command::new(binary("pacer-import"))
        .arg(&input)
        .args([
            "--base-url",
            base.trim(),
            "--site-id",
            "site-id",
            "--api-key",
            "track-key",
        ])
        .args(["--batch-size", "10000", "--json", "--quiet"])
        .output()
        .expect("build the pacer-import binary first (cargo build --release -p pacer-import)");
    let _ = mock.kill();
    let _ = mock.wait();
    let summary: Value = serde_json::from_slice(&output.stdout).expect("a JSON summary");
    let size = std::fs::metadata(&input).expect("input").len() as f64 / 1_048_576.0;
    let elapsed = summary["elapsed_s"].as_f64().unwrap_or(f64::NAN);
    println!(
        "| {lines} | {size:.0} | {:.0} | {} |",
        summary["delivered"].as_f64().unwrap_or(0.0) / elapsed,
        summary["peak_rss_mib"]
    );
    let _ = std::fs::remove_file(&input);
}
