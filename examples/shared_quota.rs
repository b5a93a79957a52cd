//! Several processes, one Customer.io quota: each client here stands for a pod of a service,
//! with its own Redis connection, all sharing the workspace's Track quota through Redis.
//!
//! ```text
//! redis-server --port 6379 &       # or point REDIS_URL at yours
//! cargo run --release --features redis --example shared_quota
//! ```
//!
//! Four clients send as fast as their limiter lets them for five seconds against the mock
//! (Track: 100 per second); the mock counts what it accepted and refused. Set `LOCAL=1` to
//! see the same four with local limiters only, each believing it owns the quota.

use std::error::Error;
use std::time::Duration;

use pacer::customerio::{Client, Credentials, Roots};
use pacer::redis::{RedisStore, SharedQuota};
use pacer_mock::{MockConfig, MockServer};
use serde_json::Map;
use tokio::time::Instant;

const PODS: usize = 4;
const SECONDS: u64 = 5;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let local = std::env::var_os("LOCAL").is_some();
    let mock = MockServer::start(MockConfig::default()).await?;

    let mut pods = Vec::new();
    for _ in 0..PODS {
        let mut builder = Client::builder()
            .base_url(&mock.base_url())
            .credentials(Credentials::track("site-id", "track-key"));
        if !local {
            let store = RedisStore::connect(&url, "example-workspace")
                .await
                .map_err(|error| {
                    format!("cannot reach Redis ({error}); start redis-server or set REDIS_URL")
                })?;
            builder = builder.shared_quota(SharedQuota::new(store, PODS as u32));
        }
        pods.push(builder.build_https(Roots::Webpki)?);
    }

    let deadline = Instant::now() + Duration::from_secs(SECONDS);
    let tasks: Vec<_> = pods
        .iter()
        .enumerate()
        .flat_map(|(pod, client)| (0..8).map(move |caller| (pod, caller, client.clone())))
        .map(|(pod, caller, client)| {
            tokio::spawn(async move {
                let mut sent = 0u64;
                while let Ok(result) = tokio::time::timeout_at(
                    deadline,
                    client.identify(&format!("{pod}-{caller}-{sent}"), &Map::new()),
                )
                .await
                {
                    result.expect("the mock accepts every identify in the end");
                    sent += 1;
                }
                (pod, sent)
            })
        })
        .collect();
    let mut per_pod = [0u64; PODS];
    for task in tasks {
        let (pod, sent) = task.await?;
        per_pod[pod] += sent;
    }

    let counts = mock.ledger().counts();
    let accepted = counts.requests - counts.throttled;
    println!(
        "{} limiters, {PODS} pods, {SECONDS} s against 100/s: {accepted} accepted ({:.1}/s), {} x 429; per pod {per_pod:?}",
        if local { "local" } else { "Redis-shared" },
        accepted as f64 / SECONDS as f64,
        counts.throttled,
    );
    Ok(())
}
