//! What sharing a quota through Redis costs per acquire, and what leases buy back.
//!
//! ```text
//! cargo bench -p pacer-limit-redis --bench redis_leases
//! ```
//!
//! Starts its own `redis-server` on a loopback port (the Debian package `redis-server`). Two
//! measurements, each next to the local limiter (no Redis) as the floor:
//!
//! 1. **Cost per acquire under load**: 64 tasks on a two-thread runtime take 20,000 slots of a
//!    quota too large to make anybody wait, so every microsecond is bookkeeping and round trips.
//!    Reported: wall time per acquire, and Redis round trips per acquire.
//! 2. **The trade-off at a real rate**: two limiters (two "processes") with 32 tasks each share
//!    a quota of 2,000 per second for two seconds. Reported: the rate achieved, round trips per
//!    second, how far ahead of use a process holds its slots on average, and the slots given
//!    back when the run ends (waiters dropped holding a lease).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pacer_limit::{Limiter, Quota};
use pacer_limit_redis::{LimiterBuilderExt, LimiterExt, RedisStore, SharedQuota};
use pacer_testkit::RedisServer;
use tokio::time::Instant;

const LEASES: [u32; 4] = [1, 4, 8, 32];

async fn limiter(redis: &RedisServer, prefix: &str, quota: Quota, lease: Option<u32>) -> Limiter {
    let builder = Limiter::builder(quota);
    match lease {
        None => builder.build(),
        Some(lease) => {
            let store = RedisStore::connect(&redis.url(), prefix).await.unwrap();
            builder
                .shared(SharedQuota::new(store, 2).lease(lease))
                .build()
        }
    }
}

fn label(lease: Option<u32>) -> String {
    lease.map_or_else(
        || "local (no Redis)".to_owned(),
        |lease| format!("Redis, lease {lease}"),
    )
}

async fn cost_per_acquire(redis: &RedisServer, lease: Option<u32>, run: usize) {
    cost_of(redis, lease, run, Quota::per_second(1_000_000_000), "").await;
}

/// The same with a daily cap stacked on the quota (`Quota::and`): what counting a second
/// window in the reservation script costs.
async fn cost_with_a_daily_cap(redis: &RedisServer, lease: Option<u32>, run: usize) {
    let quota = Quota::per_second(1_000_000_000).and(Quota::per_day(1_000_000_000));
    cost_of(redis, lease, run + 100, quota, ", daily cap").await;
}

async fn cost_of(redis: &RedisServer, lease: Option<u32>, run: usize, quota: Quota, what: &str) {
    const ACQUIRES: usize = 20_000;
    const TASKS: usize = 64;
    let limiter = limiter(redis, &format!("cost{run}"), quota, lease).await;
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                for _ in 0..ACQUIRES / TASKS {
                    limiter.acquire(()).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let acquired = (ACQUIRES / TASKS * TASKS) as f64;
    let elapsed = start.elapsed();
    let trips = limiter.shared_stats().map_or(0, |s| s.reservations);
    println!(
        "| {}{what} | {:.2} | {:.3} | {:.0} |",
        label(lease),
        elapsed.as_secs_f64() * 1e6 / acquired,
        trips as f64 / acquired,
        acquired / elapsed.as_secs_f64()
    );
}

async fn at_a_real_rate(redis: &RedisServer, lease: Option<u32>, run: usize) {
    const SECONDS: u64 = 2;
    // A sliding window (what these figures were first measured with): windows open every
    // 1.005 s, so two seconds hold two full windows: 2,000/s is the ceiling.
    let quota = Quota::per_second(2_000)
        .sliding_window()
        .with_margin(Duration::from_millis(5));
    let prefix = format!("rate{run}");
    let limiters = [
        limiter(redis, &prefix, quota, lease).await,
        limiter(redis, &prefix, quota, lease).await,
    ];
    let start = Instant::now();
    let deadline = start + Duration::from_secs(SECONDS);
    let granted = Arc::new(Mutex::new(0u64));
    let mut tasks = Vec::new();
    for limiter in &limiters {
        for _ in 0..32 {
            let (limiter, granted) = (limiter.clone(), Arc::clone(&granted));
            tasks.push(tokio::spawn(async move {
                while let Ok(Ok(())) = tokio::time::timeout_at(deadline, limiter.acquire(())).await
                {
                    *granted.lock().unwrap() += 1;
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Let the give-backs of the waiters dropped at the deadline land in the counters.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let granted = *granted.lock().unwrap();
    let stats: Vec<_> = limiters.iter().filter_map(Limiter::shared_stats).collect();
    let trips: u64 = stats.iter().map(|s| s.reservations).sum();
    let unused: u64 = stats.iter().map(|s| s.slots_unused).sum();
    let waited: Duration = limiters.iter().map(|l| l.stats().total_wait).sum();
    let rate = granted as f64 / SECONDS as f64;
    println!(
        "| {} | {:.0} ({:.3}) | {:.0} | {:.2} | {} |",
        label(lease),
        rate,
        rate / 2_000.0,
        trips as f64 / SECONDS as f64,
        waited.as_secs_f64() * 1e3 / granted as f64,
        unused
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter or `--list` has nothing to select here.
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let contenders: Vec<Option<u32>> = std::iter::once(None).chain(LEASES.map(Some)).collect();
    runtime.block_on(async {
        println!("Cost per acquire: 64 tasks take 20,000 slots of an unlimited quota\n");
        println!("| limiter | µs per acquire | round trips per acquire | acquires/s |");
        println!("|---|---:|---:|---:|");
        for (run, lease) in contenders.iter().enumerate() {
            cost_per_acquire(&redis, *lease, run).await;
        }
        for (run, lease) in contenders.iter().enumerate() {
            cost_with_a_daily_cap(&redis, *lease, run).await;
        }
        println!("\nTwo processes of 32 tasks share 2,000/s (5 ms margin) for 2 s\n");
        println!("| limiter | achieved/s (of the quota) | round trips/s | mean wait, ms | slots given back |");
        println!("|---|---:|---:|---:|---:|");
        for (run, lease) in contenders.iter().enumerate() {
            at_a_real_rate(&redis, *lease, run).await;
        }
    });
}
