//! Looks at and works a Redis outbox:
//!
//! ```text
//! pacer-outbox [--redis URL] [--prefix P] stats              # one JSON line
//! pacer-outbox [--redis URL] [--prefix P] dead [--limit N]   # dead letters, one JSON line each
//! pacer-outbox [--redis URL] [--prefix P] replay [--limit N] # dead letters back into the stream
//! pacer-outbox [--redis URL] [--prefix P] drain [--site-id S --api-key K] [--base-url URL] [--deadline-s N]
//! pacer-outbox [--redis URL] [--prefix P] work  [--site-id S --api-key K] [--base-url URL]
//! ```
//!
//! `drain` delivers until the stream is empty and exits; `work` delivers until interrupted
//! (a worker of a fleet). Exit codes: 0 done, 1 Redis or Customer.io errors, 2 usage.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use pacer_customerio::{ApiClass, Client, Credentials, Roots};
use pacer_outbox::{Outbox, RedisOptions};
use serde_json::json;

#[derive(Parser)]
#[command(name = "pacer-outbox", about = "Look at and work a pacer Redis outbox")]
struct Cli {
    /// Redis URL.
    #[arg(
        long,
        env = "PACER_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/"
    )]
    redis: String,
    /// Key prefix of the outbox's streams.
    #[arg(long, default_value = "pacer:outbox")]
    prefix: String,
    #[command(subcommand)]
    command: Command,
}

// No Debug: it holds the API key.
#[derive(clap::Args)]
struct Delivery {
    /// Customer.io Track site id.
    #[arg(long, env = "CUSTOMERIO_SITE_ID")]
    site_id: String,
    /// Customer.io Track API key (read from the environment rather than the command line where
    /// others can see it).
    #[arg(long, env = "CUSTOMERIO_API_KEY", hide_env_values = true)]
    api_key: String,
    /// Another server speaking the Track API (a mock, a proxy); default Customer.io US.
    #[arg(long)]
    base_url: Option<String>,
    /// Track requests per second for this process.
    #[arg(long, default_value_t = 100)]
    track_rate: u32,
    /// Batches in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Closes a batch at this many operations (default: at 500 KB only).
    #[arg(long)]
    max_operations: Option<usize>,
    /// Take over entries another worker left pending this long (milliseconds).
    #[arg(long, default_value_t = 30_000)]
    claim_idle_ms: u64,
}

#[derive(Subcommand)]
enum Command {
    /// The stream's length, pending and dead counts, and the oldest entry's age.
    Stats,
    /// Prints dead letters (oldest first) as JSON lines: id, reason, operation.
    Dead {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Moves dead letters back into the stream to be delivered again.
    Replay {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Delivers until the stream is empty, then exits.
    Drain {
        #[command(flatten)]
        delivery: Delivery,
        /// Gives up after this many seconds.
        #[arg(long, default_value_t = 600)]
        deadline_s: u64,
    },
    /// Delivers until interrupted (Ctrl-C or SIGTERM).
    Work {
        #[command(flatten)]
        delivery: Delivery,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = RedisOptions::new(cli.redis.clone()).prefix(cli.prefix.clone());
    match run(cli, options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pacer-outbox: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, options: RedisOptions) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Stats => {
            let stats = options.stats().await?;
            println!(
                "{}",
                json!({
                    "stream": options.stream_key(),
                    "length": stats.length,
                    "pending": stats.pending,
                    "dead": stats.dead,
                    "oldest_age_s": stats.oldest_age.map(|age| age.as_secs_f64()),
                })
            );
        }
        Command::Dead { limit } => {
            for letter in options.dead_letters(limit).await? {
                let operation: serde_json::Value = serde_json::from_str(&letter.operation)
                    .unwrap_or(serde_json::Value::String(letter.operation));
                println!(
                    "{}",
                    json!({"id": letter.id, "reason": letter.reason, "operation": operation})
                );
            }
        }
        Command::Replay { limit } => {
            let moved = options.replay(limit).await?;
            println!("{}", json!({ "replayed": moved }));
        }
        Command::Drain {
            delivery,
            deadline_s,
        } => {
            let outbox = outbox(&delivery, options.clone()).await?;
            let deadline = Instant::now() + Duration::from_secs(deadline_s);
            loop {
                let stats = options.stats().await?;
                if stats.length == 0 || Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let report = outbox.shutdown(Duration::from_secs(30)).await;
            let left = options.stats().await?.length;
            println!(
                "{}",
                json!({"delivered": report.delivered, "dead": report.dead, "left": left})
            );
            if left > 0 {
                return Err(format!("{left} entries left in the stream").into());
            }
        }
        Command::Work { delivery } => {
            let outbox = outbox(&delivery, options).await?;
            stop_signal().await;
            let report = outbox.shutdown(Duration::from_secs(30)).await;
            println!(
                "{}",
                json!({"delivered": report.delivered, "dead": report.dead, "left": report.left})
            );
        }
    }
    Ok(())
}

async fn outbox(
    delivery: &Delivery,
    options: RedisOptions,
) -> Result<Outbox, Box<dyn std::error::Error>> {
    let mut client = Client::builder()
        .credentials(Credentials::track(
            delivery.site_id.as_str(),
            delivery.api_key.as_str(),
        ))
        .quota(
            ApiClass::Track,
            pacer_limit::Quota::per_second(delivery.track_rate.max(1)),
        );
    if let Some(base) = &delivery.base_url {
        client = client.base_url(base);
    }
    let client = client.build_https(Roots::Webpki)?;
    let options = options.claim_idle(Duration::from_millis(delivery.claim_idle_ms));
    let mut outbox = Outbox::builder(client).concurrency(delivery.concurrency);
    if let Some(max) = delivery.max_operations {
        outbox = outbox.max_operations(max);
    }
    Ok(outbox.build_redis(options).await?)
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
