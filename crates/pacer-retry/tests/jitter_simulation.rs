//! The AWS Architecture Blog's backoff experiment, reproduced in paused time: 100 clients hit a
//! server that is down for 5 s and then serves a limited number of requests per 100 ms. How many
//! attempts does each jitter kind spend, and how long until every client is served?

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use pacer_retry::{Backoff, Jitter, RetryLayer};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

const CLIENTS: usize = 100;
const DOWN_FOR: Duration = Duration::from_secs(5);
/// After recovery: this many requests per bucket; the rest get 503.
const PER_BUCKET: usize = 10;
const BUCKET: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct Server {
    attempts: usize,
    bucket: Option<(Instant, usize)>,
    last_success: Option<Instant>,
}

impl Server {
    fn handle(&mut self, start: Instant) -> StatusCode {
        self.attempts += 1;
        let now = Instant::now();
        if now - start < DOWN_FOR {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        let (bucket_start, served) = match self.bucket {
            Some((bucket_start, served)) if now - bucket_start < BUCKET => (bucket_start, served),
            _ => (now, 0),
        };
        if served >= PER_BUCKET {
            self.bucket = Some((bucket_start, served));
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        self.bucket = Some((bucket_start, served + 1));
        self.last_success = Some(now);
        StatusCode::OK
    }
}

/// Runs the experiment with `jitter`; returns total attempts, time to drain, clients served.
async fn run(jitter: Jitter) -> (usize, Duration, usize) {
    let start = Instant::now();
    let server = Arc::new(Mutex::new(Server::default()));
    let handle = Arc::clone(&server);
    let layer = RetryLayer::new()
        .seed(2024)
        .no_budget()
        .max_retries(49)
        .backoff(Backoff::new(Duration::from_millis(100), Duration::from_secs(10)).jitter(jitter));
    let client =
        ServiceBuilder::new()
            .layer(layer)
            .service_fn(move |_request: Request<String>| {
                let status = handle.lock().unwrap().handle(start);
                async move {
                    Ok::<_, std::io::Error>(Response::builder().status(status).body(()).unwrap())
                }
            });
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let request = Request::get("/").body(String::new()).unwrap();
                client.oneshot(request).await.unwrap().status() == StatusCode::OK
            })
        })
        .collect();
    let mut served = 0;
    for task in tasks {
        served += usize::from(task.await.unwrap());
    }
    let server = server.lock().unwrap();
    let drained = server.last_success.map_or(Duration::MAX, |at| at - start);
    (server.attempts, drained, served)
}

#[tokio::test(start_paused = true)]
async fn jitter_spreads_a_thundering_herd() {
    let mut rows = Vec::new();
    for jitter in [
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
    ] {
        rows.push((jitter, run(jitter).await));
    }
    eprintln!("| jitter | attempts | time to drain | clients served |");
    eprintln!("|---|---:|---:|---:|");
    for (jitter, (attempts, drained, served)) in &rows {
        eprintln!("| {jitter:?} | {attempts} | {drained:.1?} | {served} |");
    }
    for (jitter, (_, _, served)) in &rows {
        assert_eq!(*served, CLIENTS, "{jitter:?} left clients unserved");
    }
    let attempts = |wanted: Jitter| rows.iter().find(|(j, _)| *j == wanted).unwrap().1 .0;
    // Without jitter every client comes back at once, and all but a bucket's worth fail again.
    assert!(attempts(Jitter::Full) < attempts(Jitter::None));
    assert!(attempts(Jitter::Decorrelated) < attempts(Jitter::None));
}
