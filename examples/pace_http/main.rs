//! Paces real HTTP requests over loopback against an in-process server that allows 100 requests
//! per second, and prints what each client achieved.
//!
//! ```text
//! cargo run --release --example pace_http -- [--seconds 3] [--tasks 1,10,50]
//!     [--server sliding|gcra|nginx|all] [--only pacer|tower|governor]
//! ```
//!
//! The server, on a thread of its own, enforces one of three models: a sliding window that
//! counts refused requests (HAProxy-style), a strict evenly spaced GCRA on a microsecond clock,
//! or nginx's `limit_req` without burst as nginx computes it. For each model, number of
//! concurrent tasks and client, the example starts a fresh server, lets the tasks send as fast
//! as their limiter allows for `--seconds`, and prints one Markdown table row: successful
//! requests per second as the server counted them, that rate as a ratio of the limit, and the
//! number of 429s.

#[path = "../common/bench_args.rs"]
mod bench_args;
mod clients;
mod server;

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use clients::{Body, Contender, PacedClient};
use server::{Enforcement, Score, Server};

const LIMIT: u32 = 100;
const WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Options {
    seconds: u32,
    tasks: Vec<usize>,
    servers: Vec<Enforcement>,
    only: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse_options(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("pace_http: {message}");
            eprintln!(
                "usage: pace_http [--seconds N] [--tasks 1,10,50] [--server sliding|gcra|nginx|all] \
                 [--only pacer|tower|governor]"
            );
            return ExitCode::from(2);
        }
    };
    println!(
        "Limit: {LIMIT} requests per {WINDOW:?}; {} s per run, fresh server per run.\n",
        options.seconds
    );
    println!("| server | tasks | client | ok req/s | ratio | 429s | errors |");
    println!("|---|---:|---|---:|---:|---:|---:|");
    for &enforcement in &options.servers {
        for &tasks in &options.tasks {
            for contender in Contender::ALL {
                let wanted = options
                    .only
                    .as_deref()
                    .is_none_or(|f| f == contender.family());
                if wanted && contender.applies_to(enforcement) {
                    let row = run(enforcement, contender, tasks, options.seconds).await;
                    println!("{row}");
                }
            }
        }
    }
    ExitCode::SUCCESS
}

/// One run: a fresh server and client, `tasks` tasks sending until the deadline.
async fn run(enforcement: Enforcement, contender: Contender, tasks: usize, seconds: u32) -> Row {
    let server = Server::start(enforcement, LIMIT as usize, WINDOW);
    let client = contender.client(enforcement, LIMIT, WINDOW);
    let uri = format!("http://{}/api/v1/track", server.addr());
    let run_time = Duration::from_secs(seconds.into());
    let deadline = tokio::time::Instant::now() + run_time;

    let senders: Vec<_> = (0..tasks)
        .map(|_| tokio::spawn(send_until(client.clone(), uri.clone(), deadline)))
        .collect();
    let mut errors = 0;
    for sender in senders {
        errors += sender.await.expect("sender task");
    }
    let score = server.finish();
    Row::new(enforcement, contender, tasks, run_time, &score, errors)
}

/// Sends requests one after the other until `deadline`; returns how many failed other than by a
/// 429 (connection errors, say). A request still waiting for its turn at the deadline is dropped.
async fn send_until(client: PacedClient, uri: String, deadline: tokio::time::Instant) -> u64 {
    let mut errors = 0;
    loop {
        let request = Request::post(&uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::new(Bytes::from_static(b"{\"name\":\"signed_up\"}")))
            .expect("static request");
        let response = tokio::select! {
            response = client.clone().oneshot(request) => response,
            () = tokio::time::sleep_until(deadline) => return errors,
        };
        match response {
            Ok(response) => {
                let status = response.status();
                // Read the body so that the connection goes back to the pool.
                let _ = response.into_body().collect().await;
                if status != StatusCode::OK && status != StatusCode::TOO_MANY_REQUESTS {
                    errors += 1;
                }
            }
            Err(_) => errors += 1,
        }
    }
}

/// One line of the table.
#[derive(Debug)]
struct Row {
    enforcement: Enforcement,
    contender: Contender,
    tasks: usize,
    ok_per_second: f64,
    refused: u64,
    errors: u64,
}

impl Row {
    /// Counts the requests the server accepted in the run's first `run_time` from the first
    /// arrival: requests still in flight at the deadline land after it and are not counted.
    fn new(
        enforcement: Enforcement,
        contender: Contender,
        tasks: usize,
        run_time: Duration,
        score: &Score,
        errors: u64,
    ) -> Self {
        let accepted = match score.accepted.first() {
            Some(&first) => score
                .accepted
                .iter()
                .take_while(|&&at| at.duration_since(first) < run_time)
                .count(),
            None => 0,
        };
        Self {
            enforcement,
            contender,
            tasks,
            ok_per_second: accepted as f64 / run_time.as_secs_f64(),
            refused: score.refused,
            errors,
        }
    }
}

impl std::fmt::Display for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let limit_per_second = f64::from(LIMIT) / WINDOW.as_secs_f64();
        write!(
            f,
            "| {} | {} | {} | {:.1} | {:.3} | {} | {} |",
            self.enforcement.name(),
            self.tasks,
            self.contender.name(),
            self.ok_per_second,
            self.ok_per_second / limit_per_second,
            self.refused,
            self.errors,
        )
    }
}

fn parse_options(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        seconds: 3,
        tasks: vec![1, 10, 50],
        servers: Enforcement::ALL.to_vec(),
        only: None,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => options.seconds = bench_args::seconds(&value()?)?,
            "--tasks" => options.tasks = bench_args::tasks(&value()?)?,
            "--server" => {
                options.servers = match value()?.as_str() {
                    "sliding" => vec![Enforcement::SlidingWindow],
                    "gcra" => vec![Enforcement::StrictGcra],
                    "nginx" => vec![Enforcement::NginxLimitReq],
                    "all" => Enforcement::ALL.to_vec(),
                    other => return Err(format!("unknown server model {other:?}")),
                };
            }
            "--only" => {
                let family = value()?;
                if !Contender::ALL.iter().any(|c| c.family() == family) {
                    return Err(format!("unknown client {family:?}"));
                }
                options.only = Some(family);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(options)
}
