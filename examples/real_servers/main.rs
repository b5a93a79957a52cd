//! Paces real HTTP requests over loopback against real rate-limiting servers from Debian's
//! packages (nginx-light and haproxy), and prints what each client got accepted.
//!
//! ```text
//! cargo run --release --example real_servers -- [--seconds 6] [--tasks 1,10,50]
//!     [--server nginx0|nginx5|nginx99|haproxy|fixed|github|github-ms|all]
//!     [--only <part of a client's name>] [--inject-429-at SECS] [--jitter] [--fleet N]
//!     [--redis-outage]
//! ```
//!
//! (`--features customerio,redis`: the fleet shares its quota through a `redis-server`.)
//!
//! The servers run as child processes on free loopback ports, from a directory under the
//! system's temporary directory (removed at the end, also on a panic), and all limit 100
//! requests per second per `Authorization` value, answering `200 {}` (JSON) or `429`:
//!
//! - `nginx0`: nginx `limit_req zone=… rate=100r/s` without burst: a request arriving less than
//!   10 ms after the last accepted one, on nginx's cached millisecond clock, is refused.
//! - `nginx5`: `limit_req … burst=5 nodelay`: up to 5 requests ahead of that 10 ms schedule.
//! - `nginx99`: `limit_req … burst=99 nodelay`: a bucket of 100 refilled at 100/s, close to a
//!   sliding window that forgives burstiness.
//! - `haproxy`: a stick table of `http_req_rate(1s)` per `Authorization`, `deny 429` when it is
//!   above 100. Refused requests are counted too, so a client that overshoots keeps itself out.
//! - `fixed` (in process, `rust_servers.rs`): 100 per clock second, the window starting on the
//!   second.
//! - `github`, `github-ms` (in process): 5 per clock second, with `X-RateLimit-Limit`,
//!   `-Remaining` and `-Reset` (the next second in epoch seconds, or milliseconds) on every
//!   answer; the ratio column is against 5.
//!
//! Every refusal carries `Retry-After: 1`, as Customer.io's App API sends.
//!
//! `--jitter` puts every server behind a TCP proxy (`jitter.rs`) that delays each chunk 20 ms
//! plus 0–10 ms each way, keeping each connection's order. `--fleet N` runs N clients per row
//! (each with `--tasks` tasks, its own limiter, Redis connection and connection pool, as N
//! processes would have) sharing one quota through a `redis-server` started for the run, for
//! the clients that can share one (the Customer.io client, the README stack, the rate limit
//! alone).
//!
//! `--processes` (with `--fleet`) runs each client of the fleet in an OS process of its own
//! (the benchmark runs itself again as a member, `member.rs`), all starting at one wall-clock
//! instant: their own runtimes, timers and CPU scheduling, as pods have.
//!
//! `--redis-outage` (with `--fleet`) SIGKILLs the fleet's `redis-server` a third into each run
//! and starts it again, empty, on the same port two thirds in, and prints the accepted rate of
//! each third under the table: the fleet rides through on its local fallback.
//!
//! nginx's `return` runs before `limit_req` (rewrite phase before preaccess) and is never
//! limited; the `200 {}` comes from a named location reached by `try_files` (see `servers.rs`).
//! A server that is not installed is reported as `SKIPPED` and the others run.
//!
//! The clients, all over one hyper-util client with `TCP_NODELAY` (see `clients.rs`): the
//! Customer.io client with its defaults (`identify` and `track` in turn), the README's "Compose
//! it" stack (retry, rate limit, throttle) with `Quota::per_second(100)`, that quota's rate limit
//! alone, the old default quota (a sliding window without margin, on tokio's timer) alone,
//! pacer's `gcra(1)` with a 10 ms margin and precise wake-ups spelled out, and governor with a
//! burst of 1 (`until_ready` before each send).
//!
//! For each server, number of tasks and client, `tasks` tasks send back to back for `--seconds`
//! through a fresh client with a fresh `Authorization` value (the servers stay up; their
//! limiters see a new key). A table row gives the 200s whose request was sent within the run,
//! per second and as a ratio of the limit, the 429s the transport saw (below any retry layer, so
//! a retried 429 counts too), and other failures. Requests still waiting at the deadline are
//! dropped.
//!
//! `--inject-429-at SECS` answers the first request of the Customer.io client and the README
//! stack that reaches the transport `SECS` into the run with a synthetic 429 (no `Retry-After`,
//! never sent, not in the 429 column), and prints the accepted rate in each 500 ms from then on
//! (and over the last second at each 500 ms mark). A longer `--seconds` shows the whole climb
//! back, e.g. `--inject-429-at 2 --seconds 20 --tasks 10 --server nginx99 --only README`.

#[path = "../common/bench_args.rs"]
mod bench_args;
mod clients;
mod jitter;
mod member;
mod rust_servers;
mod servers;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clients::{Contender, Outcome, Paced, Tally, Transport};
use servers::{ServerKind, Servers};

const BUCKET: Duration = Duration::from_millis(500);

#[derive(Debug)]
struct Options {
    seconds: u32,
    tasks: Vec<usize>,
    servers: Vec<ServerKind>,
    only: Option<String>,
    inject_at: Option<Duration>,
    /// Every server behind a jitter proxy (`jitter.rs`).
    jitter: bool,
    /// This many clients (each with `tasks` tasks) share one quota through a `redis-server`
    /// of the benchmark's own.
    fleet: Option<u32>,
    /// Kill the fleet's Redis a third into each run and restart it two thirds in.
    redis_outage: bool,
    /// Each client of the fleet in an OS process of its own.
    processes: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    // `RUST_LOG=pacer_limit=debug` shows the limiter's decisions (pauses, margins, holds).
    if let Some(filter) = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse::<tracing_subscriber::filter::Targets>().ok())
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .with(filter)
            .init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|flag| flag == "--member") {
        return match member::Member::parse(&args[1..]) {
            Ok(member) => {
                member.run().await;
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("real_servers --member: {message}");
                ExitCode::from(2)
            }
        };
    }
    let options = match parse_options(args.into_iter()) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("real_servers: {message}");
            eprintln!(
                "usage: real_servers [--seconds N] [--tasks 1,10,50] \
                 [--server nginx0|nginx5|nginx99|haproxy|fixed|github|github-ms|all] \
                 [--only <client name part>] [--inject-429-at SECS] [--jitter] [--fleet N] \
                 [--processes] [--redis-outage]"
            );
            return ExitCode::from(2);
        }
    };
    let contenders = contenders_named(options.only.as_deref());
    if contenders.is_empty() {
        eprintln!("real_servers: no client's name contains {:?}", options.only);
        return ExitCode::from(2);
    }

    let mut servers = Servers::start(&options.servers);
    servers.start_in_process(&options.servers).await;
    if options.jitter {
        servers.behind_jitter().await;
    }
    let redis = match options.fleet {
        Some(_) => match pacer_testkit::RedisServer::start() {
            Some(redis) => Some(redis),
            None => {
                println!("No redis-server to share a quota through.");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let fleet = options
        .fleet
        .zip(redis.as_ref().map(pacer_testkit::RedisServer::url));
    // The runs kill and restart it (`--redis-outage`); it stays up between runs.
    let redis = redis.map(|redis| Arc::new(std::sync::Mutex::new(redis)));
    let running: Vec<(ServerKind, String)> = options
        .servers
        .iter()
        .filter_map(|&kind| servers.url(kind).map(|url| (kind, url)))
        .collect();
    if running.is_empty() {
        println!("No server to run against.");
        return ExitCode::FAILURE;
    }
    // `redis` lives to the end of `main`: dropping it stops the server.
    let outage = redis
        .as_ref()
        .filter(|_| options.redis_outage)
        .map(Arc::clone);
    let notes = print_table(&options, &running, &contenders, fleet, outage).await;
    if !notes.is_empty() {
        println!();
        for note in notes {
            println!("- {note}");
        }
    }
    drop(servers);
    ExitCode::SUCCESS
}

/// The clients whose name contains `only` (case-insensitive), or all of them.
fn contenders_named(only: Option<&str>) -> Vec<Contender> {
    Contender::ALL
        .into_iter()
        .filter(|contender| {
            only.is_none_or(|only| {
                contender
                    .name()
                    .to_lowercase()
                    .contains(&only.to_lowercase())
            })
        })
        .collect()
}

/// Runs every client against every server at every task count, one table row per run, and
/// returns the notes to print under the table.
async fn print_table(
    options: &Options,
    running: &[(ServerKind, String)],
    contenders: &[Contender],
    fleet: Option<(u32, String)>,
    outage: Option<SharedRedis>,
) -> Vec<String> {
    println!(
        "Limit per Authorization value: 100 requests/s (5 for the GitHub-style servers); {} s \
         per run, a fresh key per run{}{}.\n",
        options.seconds,
        if options.jitter {
            "; every server behind the jitter proxy (20 ms + 0-10 ms each way)"
        } else {
            ""
        },
        match &fleet {
            Some((clients, _)) => format!(
                "; {clients} clients{} per run sharing the quota through Redis, each with the tasks given",
                if options.processes { " (each an OS process)" } else { "" }
            ),
            None => String::new(),
        },
    );
    if outage.is_some() {
        println!(
            "Redis SIGKILLed a third into each run, restarted (empty, same port) two thirds in.\n"
        );
    }
    println!("| server | tasks | client | ok req/s | ratio | 429s | errors |");
    println!("|---|---:|---|---:|---:|---:|---:|");
    let mut notes = Vec::new();
    let mut run_number = 0;
    for (kind, url) in running {
        for &tasks in &options.tasks {
            for &contender in contenders {
                if fleet.is_some() && !contender.shares_a_quota() {
                    continue;
                }
                run_number += 1;
                let inject_at = options.inject_at.filter(|_| contender.takes_injection());
                let result = run(RunSpec {
                    contender,
                    base_url: url,
                    run_number,
                    limit: kind.limit(),
                    tasks,
                    seconds: options.seconds,
                    inject_at,
                    fleet: fleet.as_ref(),
                    outage: outage.as_ref(),
                    processes: options.processes,
                })
                .await;
                println!(
                    "| {} | {tasks} | {} | {:.1} | {:.3} | {} | {} |",
                    kind.name(),
                    contender.name(),
                    result.ok_per_second,
                    result.ok_per_second / kind.limit(),
                    result.refused,
                    result.errors,
                );
                let label = format!("{}, {tasks} tasks, {}", kind.name(), contender.name());
                notes.extend(result.notes(&label, contender, inject_at.is_some()));
            }
        }
    }
    notes
}

/// What one run came to.
#[derive(Debug)]
struct RunResult {
    ok_per_second: f64,
    refused: u64,
    errors: u64,
    /// Requests that failed with a 429 at the caller.
    gave_up: u64,
    first_error: Option<String>,
    /// The injection line (empty without one).
    injection: String,
    /// The accepted rate in each third of a run with a Redis outage (empty without one).
    thirds: String,
}

impl RunResult {
    /// What is worth a line under the table: errors, 429s that reached the caller, and the
    /// injection's outcome.
    fn notes(&self, label: &str, contender: Contender, injected: bool) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(first) = &self.first_error {
            notes.push(format!(
                "{label}: {} errors, the first: {first}",
                self.errors
            ));
        }
        if contender.takes_injection() && self.gave_up > 0 {
            notes.push(format!(
                "{label}: {} requests failed with a 429 after the retries",
                self.gave_up
            ));
        }
        if injected {
            notes.push(format!("{label}: {}", self.injection));
        }
        if !self.thirds.is_empty() {
            notes.push(format!("{label}: {}", self.thirds));
        }
        notes
    }
}

/// What one run is: which client against which server, how long, with how many tasks.
#[derive(Debug)]
struct RunSpec<'a> {
    contender: Contender,
    base_url: &'a str,
    run_number: u64,
    /// The server's limit, requests per second.
    limit: f64,
    tasks: usize,
    seconds: u32,
    inject_at: Option<Duration>,
    /// How many clients share the quota, and the Redis they share it through.
    fleet: Option<&'a (u32, String)>,
    /// The fleet's Redis, to kill a third into the run and restart two thirds in.
    outage: Option<&'a SharedRedis>,
    /// Each client of the fleet in an OS process of its own (`member.rs`).
    processes: bool,
}

/// The fleet's `redis-server`, which a run with an outage kills and restarts.
type SharedRedis = Arc<std::sync::Mutex<pacer_testkit::RedisServer>>;

/// One run: a fresh client and key (or a fleet of them), `tasks` tasks each sending until the
/// deadline.
async fn run(spec: RunSpec<'_>) -> RunResult {
    let RunSpec {
        contender,
        base_url,
        run_number,
        limit,
        tasks,
        seconds,
        inject_at,
        fleet,
        outage,
        processes,
    } = spec;
    let run_time = Duration::from_secs(seconds.into());
    if let (true, Some((clients, redis_url))) = (processes, fleet) {
        let member = member::Member {
            contender,
            base_url: base_url.to_owned(),
            redis_url: redis_url.clone(),
            run_number,
            clients: *clients,
            tasks,
            seconds,
            // Time for the members to start and reach Redis before the common start.
            start_micros: member::wall_micros(Duration::from_millis(1500)),
        };
        return run_in_processes(member, limit, outage).await;
    }
    let tally = Arc::new(Tally::default());
    // Each client of a fleet is a process of its own as far as pacing goes: its own limiter,
    // its own Redis connection, its own hyper pool, sharing only the quota in Redis.
    let mut clients = Vec::new();
    for _ in 0..fleet.map_or(1, |(clients, _)| *clients) {
        let shared = match fleet {
            Some((clients, url)) => Some(
                clients::shared_quota(url, &member::run_namespace(run_number), *clients)
                    .await
                    .expect("the benchmark's redis-server answers"),
            ),
            None => None,
        };
        clients.push(shared);
    }
    let start = Instant::now();
    let deadline = start + run_time;
    let clients: Vec<Paced> = clients
        .into_iter()
        .map(|shared| {
            let transport = Transport::new(Arc::clone(&tally), inject_at.map(|at| start + at));
            contender.client(transport, base_url, run_number, shared)
        })
        .collect();

    let outage =
        outage.map(|redis| tokio::spawn(kill_and_restart(Arc::clone(redis), start, run_time)));
    let senders: Vec<_> = clients
        .iter()
        .flat_map(|client| (0..tasks).map(move |task| (client.clone(), task)))
        .map(|(client, task)| {
            tokio::spawn(send_until(
                client,
                task,
                tokio::time::Instant::from_std(deadline),
            ))
        })
        .collect();
    let mut sent = Sent::default();
    for sender in senders {
        let task = sender.await.expect("sender task");
        sent.errors += task.errors;
        sent.gave_up += task.gave_up;
        sent.first_error = sent.first_error.or(task.first_error);
    }
    drop(clients);
    let outage = outage_over(outage).await;
    let seen = Seen {
        ok_sent: tally.ok_sent(),
        refused_sent: tally.refused_sent(),
        refused: tally.refused(),
        injected: inject_at.map(|_| tally.injected()),
    };
    summarize(seen, sent, start, run_time, limit, outage)
}

/// A fleet whose clients are OS processes of their own: `member` once per client, started
/// together; their reports added up.
async fn run_in_processes(
    member: member::Member,
    limit: f64,
    outage: Option<&SharedRedis>,
) -> RunResult {
    let run_time = Duration::from_secs(member.seconds.into());
    let start = member::instant_of(member.start_micros);
    let children: Vec<_> = (0..member.clients).map(|_| member.spawn()).collect();
    let outage =
        outage.map(|redis| tokio::spawn(kill_and_restart(Arc::clone(redis), start, run_time)));
    // A member that outlives its run by far is killed: the benchmark never hangs on one.
    let bound =
        start.saturating_duration_since(Instant::now()) + run_time + Duration::from_secs(30);
    let outputs = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|child| member::output_within(child, bound))
            .collect::<Vec<_>>()
    })
    .await
    .expect("the members' outputs");
    let mut report = member::Report::default();
    for output in outputs {
        report.add(&output, start);
    }
    let outage = outage_over(outage).await;
    let sent = Sent {
        errors: report.errors,
        gave_up: report.gave_up,
        first_error: report.first_error,
    };
    let seen = Seen {
        refused: report.refused_sent.len() as u64,
        ok_sent: report.ok_sent,
        refused_sent: report.refused_sent,
        injected: None,
    };
    summarize(seen, sent, start, run_time, limit, outage)
}

/// Waits for the run's outage task, if any; whether there was one.
async fn outage_over(outage: Option<tokio::task::JoinHandle<()>>) -> bool {
    match outage {
        Some(task) => {
            task.await.expect("the outage task");
            true
        }
        None => false,
    }
}

/// What the transports of a run saw.
#[derive(Debug)]
struct Seen {
    /// When each request answered 200 was sent, sorted.
    ok_sent: Vec<Instant>,
    /// When each request answered 429 was sent, sorted.
    refused_sent: Vec<Instant>,
    /// How many 429s.
    refused: u64,
    /// With an injection: when the synthetic 429 was answered, if it was.
    injected: Option<Option<Instant>>,
}

/// The row and notes of one run from what its transports saw and its callers got.
fn summarize(
    seen: Seen,
    sent: Sent,
    start: Instant,
    run_time: Duration,
    limit: f64,
    outage: bool,
) -> RunResult {
    let deadline = start + run_time;
    let in_window = seen.ok_sent.iter().filter(|&&at| at < deadline).count();
    let mut result = RunResult {
        ok_per_second: in_window as f64 / run_time.as_secs_f64(),
        refused: seen.refused,
        errors: sent.errors,
        gave_up: sent.gave_up,
        first_error: sent.first_error,
        injection: String::new(),
        thirds: String::new(),
    };
    if let Some(injected) = seen.injected {
        result.injection = injection_line(&seen.ok_sent, start, injected, deadline, limit);
    }
    if outage {
        result.thirds = thirds_line(&seen.ok_sent, start, run_time, limit);
        let refused: Vec<String> = seen
            .refused_sent
            .iter()
            .map(|at| format!("{:.3}", at.duration_since(start).as_secs_f64()))
            .collect();
        if !refused.is_empty() {
            result.thirds += &format!("; 429s sent at (s): {}", refused.join(", "));
        }
    }
    result
}

/// SIGKILLs the fleet's Redis a third into the run and starts it again (empty, on the same
/// port) two thirds in. The server calls block (the restart waits for the port), so they run
/// on the blocking pool, off the runtime's workers that pace the clients.
async fn kill_and_restart(redis: SharedRedis, start: Instant, run_time: Duration) {
    let at = |third: u32| tokio::time::Instant::from_std(start + run_time * third / 3);
    tokio::time::sleep_until(at(1)).await;
    let server = Arc::clone(&redis);
    tokio::task::spawn_blocking(move || server.lock().expect("redis lock").kill())
        .await
        .expect("kill redis");
    tokio::time::sleep_until(at(2)).await;
    tokio::task::spawn_blocking(move || redis.lock().expect("redis lock").restart())
        .await
        .expect("restart redis");
}

/// The accepted rate (as a ratio of the limit) before the outage, during it and after it.
fn thirds_line(ok_sent: &[Instant], start: Instant, run_time: Duration, limit: f64) -> String {
    let rate = |third: u32| {
        let (from, to) = (
            start + run_time * third / 3,
            start + run_time * (third + 1) / 3,
        );
        let count = ok_sent.iter().filter(|&&at| at >= from && at < to).count();
        count as f64 / (to - from).as_secs_f64() / limit
    };
    format!(
        "Redis up: {:.3}; Redis down: {:.3}; Redis back: {:.3}",
        rate(0),
        rate(1),
        rate(2)
    )
}

/// The accepted rate (as a ratio of the limit) before the injected 429, in each 500 ms after
/// it, and over the second before each 500 ms mark (a client pacing by a sliding window sends
/// in bursts at the start of its windows, so its 500 ms buckets alternate full and empty).
fn injection_line(
    ok_sent: &[Instant],
    start: Instant,
    injected: Option<Instant>,
    deadline: Instant,
    limit: f64,
) -> String {
    let Some(injected) = injected else {
        return "no request reached the transport after the injection time".to_owned();
    };
    let rate = |from: Instant, to: Instant| {
        let count = ok_sent.iter().filter(|&&at| at >= from && at < to).count();
        count as f64 / to.duration_since(from).as_secs_f64() / limit
    };
    let marks: Vec<u32> = (1..)
        .take_while(|&k| injected + BUCKET * k <= deadline)
        .collect();
    let mut line = format!(
        "injected 429 at {:.3} s; before: {:.2}; after injected 429:",
        injected.duration_since(start).as_secs_f64(),
        rate(start, injected)
    );
    for &k in &marks {
        let (from, to) = (injected + BUCKET * (k - 1), injected + BUCKET * k);
        line.push_str(&format!(
            " {:.1}s:{:.2}",
            (BUCKET * k).as_secs_f64(),
            rate(from, to)
        ));
    }
    line.push_str("; over the last 1 s:");
    for &k in marks.iter().filter(|&&k| k >= 2) {
        let (from, to) = (injected + BUCKET * (k - 2), injected + BUCKET * k);
        line.push_str(&format!(
            " {:.1}s:{:.2}",
            (BUCKET * k).as_secs_f64(),
            rate(from, to)
        ));
    }
    line
}

/// What one task's requests came to, as the caller saw them.
#[derive(Debug, Default)]
struct Sent {
    errors: u64,
    gave_up: u64,
    first_error: Option<String>,
}

/// Sends requests one after the other until `deadline`; a request still waiting for its turn
/// (or its answer) at the deadline is dropped.
pub(crate) async fn send_until(client: Paced, task: usize, deadline: tokio::time::Instant) -> Sent {
    let mut sent = Sent::default();
    for n in 0.. {
        let outcome = tokio::select! {
            outcome = client.send(task, n) => outcome,
            () = tokio::time::sleep_until(deadline) => break,
        };
        match outcome {
            Outcome::Ok => {}
            Outcome::Refused => sent.gave_up += 1,
            Outcome::Failed(error) => {
                sent.errors += 1;
                sent.first_error.get_or_insert(error);
            }
        }
    }
    sent
}

fn parse_options(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        seconds: 6,
        tasks: vec![1, 10, 50],
        servers: ServerKind::ALL.to_vec(),
        only: None,
        inject_at: None,
        jitter: false,
        fleet: None,
        redis_outage: false,
        processes: false,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => options.seconds = bench_args::seconds(&value()?)?,
            "--tasks" => options.tasks = bench_args::tasks(&value()?)?,
            "--server" => {
                let name = value()?;
                options.servers = if name == "all" {
                    ServerKind::ALL.to_vec()
                } else {
                    let kind = ServerKind::ALL
                        .into_iter()
                        .find(|kind| kind.flag() == name)
                        .ok_or_else(|| format!("unknown server {name:?}"))?;
                    vec![kind]
                };
            }
            "--only" => options.only = Some(value()?),
            "--jitter" => options.jitter = true,
            "--redis-outage" => options.redis_outage = true,
            "--processes" => options.processes = true,
            "--fleet" => {
                let clients: u32 = value()?
                    .parse()
                    .ok()
                    .filter(|n| (1..=16).contains(n))
                    .ok_or("--fleet takes a number of clients from 1 to 16")?;
                options.fleet = Some(clients);
            }
            "--inject-429-at" => {
                let secs: f64 = value()?
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                    .ok_or("--inject-429-at takes a number of seconds")?;
                options.inject_at = Some(Duration::from_secs_f64(secs));
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if options.redis_outage && options.fleet.is_none() {
        return Err("--redis-outage needs --fleet".to_owned());
    }
    if options.processes && options.fleet.is_none() {
        return Err("--processes needs --fleet".to_owned());
    }
    if let Some(at) = options.inject_at {
        if at >= Duration::from_secs(options.seconds.into()) {
            return Err("--inject-429-at must be within --seconds".to_owned());
        }
    }
    Ok(options)
}
