//! Two imports at once into one workspace: with `--redis` they share its quota and the server
//! refuses nothing; without it each spends the whole quota and the server refuses the excess.
//! Skipped, with a line saying so, when `redis-server` is not installed (failed in CI).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pacer_mock::{Limit, MockConfig, MockServer};
use pacer_testkit::RedisServer;
use serde_json::{json, Value};

const PEOPLE: usize = 200;

fn input(directory: &Path, name: &str) -> PathBuf {
    let path = directory.join(format!("{name}.ndjson"));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for person in 0..PEOPLE {
        let line = json!({"type": "person", "id": format!("{name}-{person}")});
        writeln!(file, "{line}").unwrap();
    }
    path
}

/// Runs two imports of `PEOPLE` people each at once, one request per record at 90/s each,
/// with `extra` arguments; the total of their `--json` summaries' `throttled`.
fn two_imports(mock: &MockServer, directory: &Path, extra: &[&str]) -> u64 {
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            Command::new(env!("CARGO_BIN_EXE_pacer-import"))
                .arg(input(directory, name))
                .args(["--mode", "single", "--rate", "90", "--json", "--quiet"])
                .args(["--base-url", &mock.base_url()])
                .args(["--site-id", "site-id", "--api-key", "track-key"])
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().unwrap();
            assert!(output.status.success(), "{output:?}");
            let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
            assert_eq!(summary["delivered"], PEOPLE, "{summary}");
            summary["throttled"].as_u64().unwrap()
        })
        .sum()
}

#[test]
fn two_imports_share_one_quota_through_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let directory =
        std::env::temp_dir().join(format!("pacer-import-shared-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // The server allows 100/s; each import alone would send 90/s.
    let config =
        || MockConfig::default().limit(pacer_mock::Api::Track, Some(Limit::per_second(100)));

    let mock = runtime.block_on(MockServer::start(config())).unwrap();
    let url = redis.url();
    let shared = two_imports(&mock, &directory, &["--redis", &url, "--processes", "2"]);
    assert_eq!(shared, 0, "shared through Redis, the imports were refused");
    assert_eq!(mock.ledger().people_count(), 2 * PEOPLE);

    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    let mock = runtime.block_on(MockServer::start(config())).unwrap();
    let alone = two_imports(&mock, &directory, &[]);
    assert!(
        alone > 0,
        "two imports at 90/s each against 100/s were never refused"
    );
    assert_eq!(mock.ledger().people_count(), 2 * PEOPLE);
    println!("two imports into one workspace: {shared} x 429 shared through Redis, {alone} x 429 without");
    let _ = std::fs::remove_dir_all(&directory);
}
