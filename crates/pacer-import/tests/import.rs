//! End to end against the mock: faults, 429 storms, invalid lines, and a SIGKILL mid-run.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use pacer_customerio::{https_client, ApiClass, Client, Credentials, Roots};
use pacer_import::checkpoint::Checkpoint;
use pacer_import::engine::{run, Mode, Plan};
use pacer_import::input::Format;
use pacer_import::interrupt::Interrupts;
use pacer_import::progress::Counters;
use pacer_import::reason::Redactor;
use pacer_limit::Quota;
use pacer_mock::{Faults, Limit, MockConfig, MockServer};
use pacer_retry::RetryLayer;
use serde_json::{json, Value};

fn scratch(name: &str) -> PathBuf {
    let directory =
        std::env::temp_dir().join(format!("pacer-import-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

/// `people` people, each followed by an event; every `invalid_every`-th line is garbage.
fn write_input(path: &Path, people: usize, invalid_every: usize) -> (usize, Vec<u64>) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut line = 0_u64;
    let mut invalid = Vec::new();
    let mut valid = 0;
    for person in 0..people {
        for record in [
            json!({"type": "person", "id": format!("p{person}"), "attributes": {"n": person}}),
            json!({"type": "event", "person": format!("p{person}"), "name": "joined", "data": {"n": person}}),
        ] {
            line += 1;
            if invalid_every > 0 && line.is_multiple_of(invalid_every as u64) {
                writeln!(file, "{{\"type\":\"person\"}}").unwrap();
                invalid.push(line);
            } else {
                writeln!(file, "{record}").unwrap();
                valid += 1;
            }
        }
    }
    (valid, invalid)
}

/// The real binary, importing `input` into `mock` with `args`, silent.
fn importer(input: &Path, mock: &MockServer, args: &[&str], resume: bool) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pacer-import"));
    command
        .arg(input)
        .args(args)
        .args([
            "--base-url",
            &mock.base_url(),
            "--site-id",
            "site-id",
            "--api-key",
            "track-key",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if resume {
        command.arg("--resume");
    }
    command
}

fn client(mock: &MockServer, rate: u32) -> Client<Incoming> {
    Client::builder()
        .base_url(&mock.base_url())
        .credentials(Credentials::track("site-id", "track-key"))
        .quota(ApiClass::Track, Quota::per_second(rate))
        .retry(RetryLayer::new().max_retries(5))
        .build(https_client(Roots::Webpki).unwrap())
}

fn plan(input: &Path, directory: &Path, mode: Mode) -> Plan {
    Plan {
        input: Some(input.to_owned()),
        format: Format::Ndjson,
        mode,
        concurrency: 8,
        batch_size: 50,
        strict: false,
        dry_run: false,
        dead_letter: directory.join("dead.ndjson"),
        checkpoint: Some(directory.join("input.checkpoint")),
        resume: false,
        quiet: true,
        drain_timeout: Duration::from_secs(30),
        redactor: Redactor::default(),
    }
}

/// Every valid record is in the ledger exactly once.
fn assert_complete(mock: &MockServer, people: usize, invalid: &[u64]) {
    let ledger = mock.ledger();
    let invalid: HashSet<u64> = invalid.iter().copied().collect();
    // Line 2k+1 is person k, line 2k+2 their event.
    for person in 0..people {
        let person_line = 2 * person as u64 + 1;
        let present = ledger.person(&format!("p{person}")).is_some();
        assert_eq!(present, !invalid.contains(&person_line), "person {person}");
    }
    let events = ledger.events();
    let unique: HashSet<u64> = events
        .iter()
        .map(|e| e.data["n"].as_u64().unwrap())
        .collect();
    assert_eq!(unique.len(), events.len(), "no event recorded twice");
    let expected = (0..people)
        .filter(|p| !invalid.contains(&(2 * *p as u64 + 2)))
        .count();
    assert_eq!(events.len(), expected, "every valid event recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_storms_and_invalid_lines_lose_nothing() {
    let directory = scratch("faults");
    let input = directory.join("input.ndjson");
    let people = 2_500;
    let (valid, invalid) = write_input(&input, people, 97);
    // The mock allows 50 requests/s; the client starts at 200/s: a 429 storm until it adapts.
    let faults = Faults {
        server_errors: 0.05,
        drop_after: 0.02,
        ..Faults::default()
    };
    let mock = MockServer::start(
        MockConfig::default()
            .limit(pacer_mock::Api::Track, Some(Limit::per_second(50)))
            .faults(faults)
            .seed(3),
    )
    .await
    .unwrap();
    let counters = Arc::new(Counters::default());
    let plan = plan(&input, &directory, Mode::Batch);
    let summary = run(
        &plan,
        Some(client(&mock, 200)),
        counters,
        Interrupts::never(),
    )
    .await
    .unwrap();
    eprintln!("{summary:?}; mock {:?}", mock.ledger().counts());

    assert!(!summary.aborted);
    assert_eq!(summary.delivered as usize, valid);
    assert_eq!(summary.invalid as usize, invalid.len());
    assert!(mock.ledger().counts().throttled > 0, "the storm happened");
    assert!(mock.ledger().counts().faults > 0 && mock.ledger().counts().dropped > 0);
    assert_complete(&mock, people, &invalid);
    // Invalid lines are in the dead-letter file with their line numbers.
    let dead: Vec<u64> = std::fs::read_to_string(directory.join("dead.ndjson"))
        .unwrap()
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["line"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(dead, invalid);
    std::fs::remove_dir_all(&directory).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_run_and_resumed_everything_arrives_once() {
    let directory = scratch("crash");
    let input = directory.join("input.ndjson");
    let people = 600;
    let (_, invalid) = write_input(&input, people, 0);
    let mock = MockServer::start(
        MockConfig::default().limit(pacer_mock::Api::Track, Some(Limit::per_second(400))),
    )
    .await
    .unwrap();
    let command = |resume: bool| {
        importer(
            &input,
            &mock,
            &[
                "--mode",
                "single",
                "--rate",
                "400",
                "--concurrency",
                "16",
                "--quiet",
            ],
            resume,
        )
    };
    // Kill at a point that differs from run to run, once some work is done.
    let mut child = command(false).spawn().unwrap();
    let after = 100
        + (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            % 500) as usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    while mock.ledger().counts().requests < after as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL: no draining, no final checkpoint
    child.wait().unwrap();
    let before_resume = mock.ledger().counts().requests;
    eprintln!("killed after {before_resume} requests");
    assert!(before_resume < 2 * people as u64, "killed before the end");

    let status = command(true).status().unwrap();
    assert_eq!(status.code(), Some(0));
    eprintln!("mock after resume: {:?}", mock.ledger().counts());
    assert_complete(&mock, people, &invalid);
    std::fs::remove_dir_all(&directory).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_drains_checkpoints_and_exits_3_then_resume_finishes() {
    let directory = scratch("sigint");
    let input = directory.join("input.ndjson");
    let people = 400;
    let (_, invalid) = write_input(&input, people, 0);
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let command = |resume: bool| importer(&input, &mock, &["--mode", "single", "--quiet"], resume);
    let mut child = command(false).spawn().unwrap();
    while mock.ledger().counts().requests < 150 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "aborted");
    let checkpoint: Value =
        serde_json::from_str(&std::fs::read_to_string(Checkpoint::path_for(&input)).unwrap())
            .unwrap();
    let acknowledged = checkpoint["delivered"].as_u64().unwrap();
    assert!(
        acknowledged >= 100,
        "drained work is checkpointed: {checkpoint}"
    );
    assert_eq!(command(true).status().unwrap().code(), Some(0));
    assert_complete(&mock, people, &invalid);
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn the_api_key_is_never_printed() {
    let secret = "sk_live_do_not_print_42";
    for args in [
        vec!["--help"],
        vec!["/nonexistent.ndjson"],
        vec!["--bogus-flag"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_pacer-import"))
            .args(&args)
            .env("CUSTOMERIO_SITE_ID", "site")
            .env("CUSTOMERIO_API_KEY", secret)
            .output()
            .unwrap();
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!printed.contains(secret), "{args:?}: {printed}");
    }
    // A wrong key against the mock: the 401 is reported, the key is not.
    let directory = scratch("secret");
    let input = directory.join("input.ndjson");
    write_input(&input, 2, 0);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mock = runtime
        .block_on(MockServer::start(MockConfig::default()))
        .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_pacer-import"))
        .arg(&input)
        .args(["--base-url", &mock.base_url(), "--quiet"])
        .env("CUSTOMERIO_SITE_ID", "site-id")
        .env("CUSTOMERIO_API_KEY", secret)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stderr);
    assert!(printed.contains("401"), "{printed}");
    assert!(!printed.contains(secret), "{printed}");
    assert_eq!(output.status.code(), Some(3));
    drop(mock);
    std::fs::remove_dir_all(&directory).unwrap();
}

/// The `paced:` line of a run of the main job (single mode, embedded mock) of `records`.
fn paced_line(records: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_pacer-import"))
        .args([
            "--mock",
            "--generate",
            records,
            "--mode",
            "single",
            "--quiet",
        ])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{printed}");
    printed
        .lines()
        .find(|line| line.starts_with("paced: "))
        .unwrap_or_else(|| panic!("no paced line in {printed}"))
        .to_owned()
}

/// The main job in single mode against the embedded mock ends with the achieved rate against
/// the limit it paced by, and the run at the limit is 429-free. 150 requests at 99/s: 1.5 s.
#[test]
fn the_summary_states_the_rate_achieved_against_the_limit() {
    let paced = paced_line("150");
    assert!(paced.contains("against a limit of 100 per 1s"), "{paced}");
    assert!(paced.ends_with(", 0 x 429"), "{paced}");
    // 150 requests, the first at once and then 10.1 ms apart, in a little over 1.5 s: a rate
    // near the limit, never above it.
    let ratio: f64 = paced
        .split('(')
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|ratio| ratio.parse().ok())
        .unwrap_or_else(|| panic!("no ratio in {paced}"));
    assert!((0.5..=1.0).contains(&ratio), "{paced}");
}

/// A run of a request or two states no rate: it would say nothing of pacing.
#[test]
fn a_tiny_run_states_no_rate() {
    let paced = paced_line("1");
    assert!(paced.contains("too few to measure"), "{paced}");
    assert!(!paced.contains("of it"), "{paced}");
}
