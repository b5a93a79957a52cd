//! The `pacer-import` command. See the crate docs for the input format.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use clap::Parser;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use pacer_customerio::{https_client, ApiClass, Body, Client, Credentials, Region, Roots};
use pacer_import::checkpoint::Checkpoint;
use pacer_import::engine::{run, Mode, Plan, Summary, MAX_SERVER_WAIT};
use pacer_import::generate::generate;
use pacer_import::input::Format;
use pacer_import::interrupt::Interrupts;
use pacer_import::progress::Counters;
use pacer_import::reason::Redactor;
use pacer_limit::Quota;
use pacer_limit_redis::{RedisStore, SharedQuota};
use pacer_mock::{MockConfig, MockServer};
use pacer_retry::RetryLayer;

/// Bulk-import people and events into Customer.io: paced under the rate limit, resumable after
/// a crash or Ctrl-C, nothing lost and nothing sent twice.
///
/// Input, one record per line (NDJSON) or row (CSV with a header row):
///   {"type":"person","id":"42","email":"ada@example.com","attributes":{"plan":"pro"}}
///   {"type":"event","person":"42","name":"signed_up","timestamp":1700000000,"data":{}}
/// Without "type", a line with a "name" is an event; other top-level keys are attributes (people)
/// or data (events). CSV columns: type (person by default, or event), id, email, person and name
/// (events), event_id, timestamp; every other column is an attribute or a data field.
///
/// Exit codes: 0 all delivered, 1 some records dead-lettered or invalid, 2 usage or input
/// error (an invalid record under --strict too), 3 aborted (resume with --resume).
#[derive(Debug, Parser)]
#[command(name = "pacer-import", version)]
struct Cli {
    /// Input file, NDJSON or CSV (by extension or --format); `-` for standard input.
    input: Option<PathBuf>,
    /// Input format (default: from the file extension, NDJSON otherwise).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// `batch` packs records into Track v2 batch requests; `single` sends one v1 request each.
    #[arg(long, value_enum, default_value = "batch")]
    mode: Mode,
    /// Track API requests per second (default: the documented 100/s). 429s still slow it down.
    #[arg(long)]
    rate: Option<u32>,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Records per batch request at most (also bounded by the 500 KB limit).
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// Continue from the checkpoint of a previous run.
    #[arg(long)]
    resume: bool,
    /// Stop at the first invalid record instead of dead-lettering it.
    #[arg(long)]
    strict: bool,
    /// Validate and count without sending.
    #[arg(long)]
    dry_run: bool,
    /// Print the summary as one JSON object on standard output.
    #[arg(long)]
    json: bool,
    /// No progress display.
    #[arg(long)]
    quiet: bool,
    /// Where refused and invalid records go (default: `<input>.dead.ndjson`).
    #[arg(long)]
    dead_letter: Option<PathBuf>,
    /// Where progress is recorded (default: `<input>.checkpoint`).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Import into an embedded mock Customer.io (no account needed).
    #[arg(long)]
    mock: bool,
    /// Synthesise N realistic records (people and their events) into the input file, or a
    /// temporary file when none is given, then import them.
    #[arg(long, value_name = "N")]
    generate: Option<u64>,
    /// Track API site id.
    #[arg(long, env = "CUSTOMERIO_SITE_ID")]
    site_id: Option<String>,
    /// Track API key (never printed).
    #[arg(long, env = "CUSTOMERIO_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Workspace region: `us` or `eu`.
    #[arg(long, env = "CUSTOMERIO_REGION", default_value = "us")]
    region: String,
    /// Send to this base URL instead of Customer.io (a mock elsewhere, a proxy).
    #[arg(long)]
    base_url: Option<String>,
    /// Share the Track quota through this Redis (`redis://host:6379/`) with every other process
    /// using it for the same workspace: several imports, or an import next to a live service.
    #[arg(
        long,
        env = "PACER_REDIS_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    redis: Option<String>,
    /// How many processes share the quota through --redis: each one's share of it while Redis
    /// is unreachable.
    #[arg(long, default_value_t = 1, value_name = "N")]
    processes: u32,
    /// After a first Ctrl-C, how many seconds requests in flight may take to finish; a second
    /// Ctrl-C stops at once. Either way the checkpoint covers what was delivered.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    drain_timeout: u64,
    /// How long one attempt may wait for the head of an answer, and then for its whole body
    /// (the connection itself gets 10 s). A silent server is retried a few times, then the
    /// import stops (exit 3, resumable).
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    timeout: f64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    install_logging();
    match import(cli).await {
        Ok(code) => code,
        Err(message) => {
            eprintln!("pacer-import: {message}");
            ExitCode::from(2)
        }
    }
}

async fn import(cli: Cli) -> Result<ExitCode, String> {
    let plan = plan(&cli, input(&cli)?);
    // `--generate` without a file: the input and the side files it chose itself are this
    // run's alone.
    let _scratch = (cli.generate.is_some() && cli.input.is_none()).then(|| {
        let chosen = [
            plan.input.clone(),
            plan.checkpoint.clone().filter(|_| cli.checkpoint.is_none()),
            Some(plan.dead_letter.clone()).filter(|_| cli.dead_letter.is_none()),
        ];
        Scratch(chosen.into_iter().flatten().collect())
    });
    let counters = Arc::new(Counters::default());
    let mock = if cli.mock && !cli.dry_run {
        Some(
            MockServer::start(MockConfig::default())
                .await
                .map_err(|error| format!("cannot start the mock: {error}"))?,
        )
    } else {
        None
    };
    let client = if cli.dry_run {
        None
    } else {
        Some(client(&cli, mock.as_ref(), &counters).await?)
    };
    let summary = run(&plan, client, Arc::clone(&counters), Interrupts::ctrl_c()).await?;
    report(&summary, &plan, cli.json, mock.as_ref());
    if !cli.json && !cli.dry_run {
        let shared_by = cli.redis.is_some().then_some(cli.processes);
        eprintln!("{}", pace_line(&summary, &track_quota(&cli), shared_by));
    }
    Ok(exit_code(&summary))
}

/// Files removed however the run ends: a generated input in the temporary directory, and the
/// checkpoint and dead letters placed beside it.
struct Scratch(Vec<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The input file (`None` for standard input), generated first with `--generate`.
fn input(cli: &Cli) -> Result<Option<PathBuf>, String> {
    let input = match (cli.generate, &cli.input) {
        (Some(records), path) => {
            let path = path.clone().unwrap_or_else(|| {
                std::env::temp_dir().join(format!("pacer-import-{}.ndjson", std::process::id()))
            });
            generate(&path, records)
                .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
            eprintln!("generated {records} records in {}", path.display());
            Some(path)
        }
        (None, Some(path)) if path.as_os_str() == "-" => None,
        (None, Some(path)) => Some(path.clone()),
        (None, None) => {
            return Err("give an input file, `-` for standard input, or --generate N".into())
        }
    };
    if let Some(path) = &input {
        check_input(path)?;
    }
    Ok(input)
}

/// A regular file, or something to read as a stream (a FIFO, `/dev/stdin`): not a directory,
/// nor a path that is not there.
fn check_input(path: &std::path::Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("cannot read {}: no such file", path.display()))
        }
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
        Ok(meta) if meta.is_dir() => Err(format!(
            "cannot read {}: it is a directory, not a file",
            path.display()
        )),
        Ok(_) => Ok(()),
    }
}

/// `tracing` output on standard error: `RUST_LOG` (`warn`, `pacer_retry=debug,info`, …), by
/// default warnings and errors, so the library's Redis-fallback and retry warnings show.
fn install_logging() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse::<tracing_subscriber::filter::Targets>().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new()
                .with_default(tracing_subscriber::filter::LevelFilter::WARN)
        });
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(true),
        )
        .with(filter)
        .try_init();
}

/// The engine's plan from the options: the format, and the files beside the input.
fn plan(cli: &Cli, input: Option<PathBuf>) -> Plan {
    let format = cli
        .format
        .unwrap_or_else(|| input.as_deref().map_or(Format::Ndjson, Format::of));
    let beside = |suffix: &str| {
        input.as_ref().map_or_else(
            || PathBuf::from(format!("pacer-import{suffix}")),
            |path| {
                let mut name = path.as_os_str().to_owned();
                name.push(suffix);
                PathBuf::from(name)
            },
        )
    };
    // A stream (a FIFO, a device) cannot be resumed: no checkpoint for it.
    let seekable = input.as_deref().is_some_and(std::path::Path::is_file);
    Plan {
        checkpoint: cli.checkpoint.clone().or_else(|| {
            input
                .as_deref()
                .filter(|_| seekable)
                .map(Checkpoint::path_for)
        }),
        dead_letter: cli
            .dead_letter
            .clone()
            .unwrap_or_else(|| beside(".dead.ndjson")),
        input,
        format,
        mode: cli.mode,
        concurrency: cli.concurrency.max(1),
        batch_size: cli.batch_size.clamp(1, 10_000),
        strict: cli.strict,
        dry_run: cli.dry_run,
        resume: cli.resume,
        quiet: cli.quiet || cli.json,
        drain_timeout: std::time::Duration::from_secs(cli.drain_timeout),
        redactor: match (&cli.site_id, &cli.api_key) {
            (Some(site_id), Some(api_key)) => Redactor::track(site_id, api_key),
            _ => Redactor::default(),
        },
    }
}

/// 2 for an invalid record under --strict, 3 aborted, 1 with records dead-lettered or invalid,
/// 0 all delivered.
fn exit_code(summary: &Summary) -> ExitCode {
    if summary.invalid_input {
        ExitCode::from(2)
    } else if summary.aborted {
        ExitCode::from(3)
    } else if summary.dead_lettered + summary.invalid > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The default stack over HTTPS, counting requests and 429s on the way.
async fn client(
    cli: &Cli,
    mock: Option<&MockServer>,
    counters: &Arc<Counters>,
) -> Result<Client<Incoming>, String> {
    let (credentials, base_url) = match mock {
        Some(mock) => (
            Credentials::track("site-id", "track-key"),
            Some(mock.base_url()),
        ),
        None => {
            let (Some(site_id), Some(api_key)) = (&cli.site_id, &cli.api_key) else {
                return Err("set CUSTOMERIO_SITE_ID and CUSTOMERIO_API_KEY (or --site-id/--api-key), or use --mock".into());
            };
            (
                Credentials::track(site_id.clone(), api_key.as_str()),
                cli.base_url.clone(),
            )
        }
    };
    let timeout = std::time::Duration::try_from_secs_f64(cli.timeout)
        .ok()
        .filter(|timeout| !timeout.is_zero())
        .ok_or("--timeout must be a positive number of seconds")?;
    let mut builder = Client::builder()
        .credentials(credentials)
        .response_timeout(timeout)
        .body_timeout(timeout)
        .max_server_wait(MAX_SERVER_WAIT)
        .retry(RetryLayer::new().max_retries(4));
    builder = match (&base_url, cli.region.as_str()) {
        (Some(base), _) => builder.base_url(base),
        (None, "eu") => builder.region(Region::Eu),
        (None, "us") => builder.region(Region::Us),
        (None, other) => return Err(format!("unknown region {other:?} (us or eu)")),
    };
    if cli.rate == Some(0) {
        return Err("--rate must be at least 1".into());
    }
    builder = builder.quota(ApiClass::Track, track_quota(cli));
    if let Some(url) = &cli.redis {
        if cli.processes == 0 {
            return Err("--processes must be at least 1".into());
        }
        // Keys are per workspace; the URL (which may hold a password) is never echoed.
        let workspace = cli.site_id.as_deref().unwrap_or("site-id");
        let store = RedisStore::connect(url, workspace)
            .await
            .map_err(|error| format!("cannot reach Redis at --redis: {error}"))?;
        builder = builder.shared_quota(SharedQuota::new(store, cli.processes));
    }
    let http = https_client(Roots::Webpki).map_err(|error| error.to_string())?;
    let (sent, throttled) = (Arc::clone(counters), Arc::clone(counters));
    let counted = tower::ServiceBuilder::new()
        .map_request(move |request: Request<Body>| {
            sent.requests.fetch_add(1, Ordering::Relaxed);
            request
        })
        .map_response(move |response: Response<Incoming>| {
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                throttled.throttled.fetch_add(1, Ordering::Relaxed);
            }
            response
        })
        .service(http);
    Ok(builder.build(counted))
}

/// The Track quota the import paces by: `--rate`, or the client's default.
fn track_quota(cli: &Cli) -> Quota {
    cli.rate.filter(|&rate| rate > 0).map_or_else(
        || pacer_customerio::default_quota(ApiClass::Track),
        Quota::per_second,
    )
}

/// The fewest requests, and the shortest run, over which the pace line states a rate.
const MEASURED_REQUESTS: u64 = 20;
const MEASURED_SPAN: std::time::Duration = std::time::Duration::from_secs(1);

/// The achieved request rate against the limit paced by, e.g. `paced: 98.6 requests/s against a
/// limit of 100 per 1s (0.986 of it), 0 x 429`. With a quota shared by `processes` through
/// Redis, this process's rate against its share.
fn pace_line(summary: &Summary, quota: &Quota, shared_by: Option<u32>) -> String {
    let seconds = summary.elapsed_s.as_secs_f64().max(0.001);
    // A rate over a handful of requests, or a fraction of a second, says nothing of pacing.
    if summary.requests < MEASURED_REQUESTS || summary.elapsed_s < MEASURED_SPAN {
        return format!(
            "paced: {} requests in {seconds:.1} s, too few to measure a rate against the limit, {} x 429",
            summary.requests, summary.throttled
        );
    }
    let per_second = summary.requests as f64 / seconds;
    let limit = f64::from(quota.limit()) / quota.window().as_secs_f64();
    let (whose, share) = match shared_by {
        Some(processes) if processes > 1 => (
            format!(" by this process, one of {processes} sharing"),
            f64::from(processes),
        ),
        _ => (String::new(), 1.0),
    };
    format!(
        "paced: {per_second:.1} requests/s{whose} against a limit of {} per {:?} ({:.3} of {}), {} x 429",
        quota.limit(),
        quota.window(),
        per_second * share / limit,
        if share > 1.0 { "its share" } else { "it" },
        summary.throttled
    )
}

fn report(summary: &Summary, plan: &Plan, json: bool, mock: Option<&MockServer>) {
    if json {
        println!(
            "{}",
            serde_json::to_string(summary).expect("summaries serialize")
        );
    }
    let seconds = summary.elapsed_s.as_secs_f64();
    eprintln!(
        "{}: {} delivered, {} dead-lettered, {} invalid; {} requests, {} 429s, {} retries; {:.1} s ({:.0} records/s)",
        if summary.aborted { "aborted" } else { "done" },
        summary.delivered,
        summary.dead_lettered,
        summary.invalid,
        summary.requests,
        summary.throttled,
        summary.retries,
        seconds,
        (summary.delivered + summary.dead_lettered + summary.invalid) as f64 / seconds.max(0.001),
    );
    if summary.dead_lettered + summary.invalid > 0 {
        eprintln!(
            "refused and invalid records: {}",
            plan.dead_letter.display()
        );
    }
    if summary.aborted {
        eprintln!("resume with the same command and --resume");
    }
    if let Some(mock) = mock {
        let ledger = mock.ledger();
        eprintln!(
            "mock Customer.io now holds {} people and {} events",
            ledger.people_count(),
            ledger.events().len()
        );
    }
}
