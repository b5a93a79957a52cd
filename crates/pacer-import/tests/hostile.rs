//! The importer, the real binary, against a hostile server: each case is bounded in time (the
//! test kills a run that outlives its bound and fails), in the bytes it keeps, and in what it
//! counts delivered.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use pacer_testkit::{Behaviour, HostileServer};
use serde_json::{json, Value};

const SITE_ID: &str = "site-id";
const API_KEY: &str = "sk_live_do_not_print_42";

fn scratch(name: &str) -> PathBuf {
    let directory =
        std::env::temp_dir().join(format!("pacer-hostile-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

fn people(directory: &Path, count: usize) -> PathBuf {
    let path = directory.join("input.ndjson");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for n in 0..count {
        writeln!(file, "{}", json!({"id": format!("p{n}"), "plan": "pro"})).unwrap();
    }
    path
}

/// Runs the importer on `input` against `server`, killing it (and failing) past `limit`.
fn import(
    input: &Path,
    server: &HostileServer,
    args: &[&str],
    limit: Duration,
) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pacer-import"))
        .arg(input)
        .args(args)
        .args(["--base-url", &server.base_url(), "--quiet"])
        .env("CUSTOMERIO_SITE_ID", SITE_ID)
        .env("CUSTOMERIO_API_KEY", API_KEY)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drained on threads of their own, so a chatty run cannot block on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.read_to_end(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the importer still ran after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    (output, started.elapsed())
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The importer's own peak resident memory (`VmHWM`), from its `--json` summary.
fn peak_rss_mib(output: &Output) -> f64 {
    let summary: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    summary["peak_rss_mib"]
        .as_f64()
        .expect("Linux reports VmHWM")
}

/// What every hostile input must stay under.
const MAX_RSS_MIB: f64 = 64.0;

fn checkpoint(input: &Path) -> Value {
    let path = format!("{}.checkpoint", input.display());
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// A server that accepts and never answers: each attempt times out, the stack retries a few
/// times, then the import stops (exit 3) with the cause, having counted nothing delivered.
#[test]
fn a_silent_server_stops_the_import_within_its_timeouts() {
    let runtime = runtime();
    let server = runtime.block_on(HostileServer::start(Behaviour::Silent));
    let directory = scratch("silent");
    let input = people(&directory, 20);
    let (output, took) = import(
        &input,
        &server,
        &["--timeout", "0.2"],
        Duration::from_secs(30),
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains("did not"), "{}", stderr(&output));
    assert_eq!(checkpoint(&input)["delivered"], 0);
    assert!(server.requests() >= 2, "retried: {}", server.requests());
    eprintln!(
        "silent server: stopped after {took:?}, {} requests",
        server.requests()
    );
    std::fs::remove_dir_all(&directory).unwrap();
}

/// Headers, then a body that never ends: the body timeout ends it the same way.
#[test]
fn a_stalled_body_stops_the_import_within_its_timeouts() {
    let runtime = runtime();
    let server = runtime.block_on(HostileServer::start(Behaviour::StallBody));
    let directory = scratch("stall");
    let input = people(&directory, 20);
    let (output, _) = import(
        &input,
        &server,
        &["--timeout", "0.2"],
        Duration::from_secs(30),
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert_eq!(checkpoint(&input)["delivered"], 0);
    std::fs::remove_dir_all(&directory).unwrap();
}

/// A 200 with a 400 MB body is not read past the 1 MiB cap, and not counted delivered: the
/// server did not say what it did with the batch.
#[test]
fn a_huge_success_body_is_capped_and_not_counted_delivered() {
    let runtime = runtime();
    let server = runtime.block_on(HostileServer::start(Behaviour::HugeBody {
        status: 200,
        bytes: 400_000_000,
    }));
    let directory = scratch("huge");
    let input = people(&directory, 200);
    let (output, _) = import(&input, &server, &["--json"], Duration::from_secs(20));
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains("cap"), "{}", stderr(&output));
    let peak = peak_rss_mib(&output);
    eprintln!("peak RSS {peak} MiB");
    assert!(peak < MAX_RSS_MIB, "{peak} MiB");
    assert_eq!(checkpoint(&input)["delivered"], 0);
    std::fs::remove_dir_all(&directory).unwrap();
}

/// A 400 with a 1 MiB error page on every request, batch of 50: every record is dead-lettered
/// (alone: the batch is split down to each), each with at most about 1 KiB of the server's text
/// (it was 1 MiB each).
#[test]
fn a_huge_error_text_is_kept_once_per_record_cut_short() {
    let runtime = runtime();
    let server = runtime.block_on(HostileServer::start(Behaviour::ErrorBody {
        status: 400,
        bytes: 1024 * 1024,
    }));
    let directory = scratch("error-text");
    let input = people(&directory, 50);
    let (output, _) = import(&input, &server, &["--json"], Duration::from_secs(20));
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let peak = peak_rss_mib(&output);
    eprintln!("peak RSS {peak} MiB");
    assert!(peak < MAX_RSS_MIB, "{peak} MiB");
    let dead = std::fs::read_to_string(format!("{}.dead.ndjson", input.display())).unwrap();
    assert_eq!(dead.lines().count(), 50);
    for line in dead.lines() {
        let entry: Value = serde_json::from_str(line).unwrap();
        let reason = entry["reason"].as_str().unwrap();
        assert!(reason.len() <= 1200, "{} bytes of reason", reason.len());
    }
    assert!(
        dead.len() < 100_000,
        "dead-letter file of {} bytes",
        dead.len()
    );
    std::fs::remove_dir_all(&directory).unwrap();
}

/// A batch refused whole (400) for one bad operation in it: the importer splits it down to that
/// operation, which alone is dead-lettered; the other records are delivered (it was: all 100
/// dead-lettered with the batch's reason), in at most about `2 log2(n)` more requests.
#[test]
fn a_batch_refused_whole_is_split_down_to_the_record_at_fault() {
    let runtime = runtime();
    let server = runtime.block_on(HostileServer::start(Behaviour::RefuseBodiesContaining(
        "\"p37\"".into(),
    )));
    let directory = scratch("split");
    let input = people(&directory, 100);
    let (output, _) = import(&input, &server, &["--json"], Duration::from_secs(20));
    // Exit 1: some records were dead-lettered.
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let dead = std::fs::read_to_string(format!("{}.dead.ndjson", input.display())).unwrap();
    let dead: Vec<Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0]["record"].to_string().contains("p37"), "{dead:?}");
    assert!(
        dead[0]["reason"].as_str().unwrap().contains("400"),
        "{dead:?}"
    );
    assert_eq!(checkpoint(&input)["delivered"], 99);
    // One request for the batch, then two per halving: 1 + 2 * ceil(log2(100)) = 15.
    assert!(server.requests() <= 15, "{} requests", server.requests());
    std::fs::remove_dir_all(&directory).unwrap();
}

/// `Retry-After: 99999999999` (or a date in 2099): no sitting out a capped minute five times;
/// the import stops at once and says what the server asked for.
#[test]
fn an_absurd_server_wait_stops_at_once_with_the_servers_value() {
    for value in ["99999999999", "Thu, 01 Jan 2099 00:00:00 GMT"] {
        let runtime = runtime();
        let server = runtime.block_on(HostileServer::start(Behaviour::RetryAfter(value.into())));
        let directory = scratch("absurd-wait");
        let input = people(&directory, 20);
        let (output, took) = import(&input, &server, &[], Duration::from_secs(20));
        let printed = stderr(&output);
        assert_eq!(output.status.code(), Some(3), "{printed}");
        assert!(took < Duration::from_secs(10), "{value}: {took:?}");
        assert!(printed.contains("days"), "{value}: {printed}");
        assert!(
            !printed.contains("3600s"),
            "{value}: the parser's clamp shown: {printed}"
        );
        assert_eq!(server.requests(), 1, "{value}: not retried");
        std::fs::remove_dir_all(&directory).unwrap();
    }
}

/// A success saying the quota is spent for a day pauses the key for the capped minute, and
/// says so on standard error.
#[test]
fn a_throttling_success_is_capped_and_said() {
    let runtime = runtime();
    let server = runtime.block_on(HostileServer::start(Behaviour::ThrottlingSuccess));
    let directory = scratch("throttling-success");
    let input = people(&directory, 3);
    let mut child = Command::new(env!("CARGO_BIN_EXE_pacer-import"))
        .arg(&input)
        .args([
            "--base-url",
            &server.base_url(),
            "--quiet",
            "--mode",
            "single",
        ])
        .env("CUSTOMERIO_SITE_ID", SITE_ID)
        .env("CUSTOMERIO_API_KEY", API_KEY)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = String::new();
        let mut buffer = [0_u8; 4096];
        while let Ok(read) = stderr.read(&mut buffer) {
            if read == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
            if seen.contains("beyond the cap") {
                break;
            }
        }
        seen
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let finished = reader.is_finished();
    child.kill().unwrap();
    child.wait().unwrap();
    let seen = reader.join().unwrap();
    assert!(
        finished && seen.contains("beyond the cap"),
        "no warning: {seen}"
    );
    assert_eq!(
        server.requests(),
        1,
        "the second request waits out the capped pause"
    );
    std::fs::remove_dir_all(&directory).unwrap();
}

/// A 207 whose body cannot be read delivers nothing: the batch is not acknowledged.
#[test]
fn an_unreadable_207_counts_nothing_delivered() {
    let runtime = runtime();
    let server = runtime.block_on(HostileServer::start(Behaviour::Unreadable207));
    let directory = scratch("unreadable");
    let input = people(&directory, 50);
    let (output, _) = import(&input, &server, &["--json"], Duration::from_secs(20));
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["delivered"], 0, "{summary}");
    assert_eq!(checkpoint(&input)["offset"], 0);
    std::fs::remove_dir_all(&directory).unwrap();
}

/// A server echoing the Authorization header: neither the key nor its Basic token reaches the
/// terminal or the dead-letter file.
#[test]
fn echoed_credentials_are_redacted_everywhere() {
    let runtime = runtime();
    let server = runtime.block_on(HostileServer::start(Behaviour::EchoAuthorization));
    let directory = scratch("echo");
    let input = people(&directory, 5);
    let (output, _) = import(&input, &server, &[], Duration::from_secs(20));
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{SITE_ID}:{API_KEY}"));
    let dead = std::fs::read_to_string(format!("{}.dead.ndjson", input.display())).unwrap();
    for (what, text) in [("stderr", stderr(&output)), ("dead letters", dead)] {
        assert!(!text.contains(API_KEY), "{what}: {text}");
        assert!(!text.contains(&token), "{what}: {text}");
    }
    std::fs::remove_dir_all(&directory).unwrap();
}

/// A 403 (no permission, the wrong region) says nothing of the records: the import stops at
/// once, resumable, and dead-letters none of them.
#[test]
fn a_403_stops_the_import_and_dead_letters_nothing() {
    let runtime = runtime();
    let server = runtime.block_on(HostileServer::start(Behaviour::Status(
        403,
        "{\"meta\":{\"error\":\"forbidden\"}}".into(),
    )));
    let directory = scratch("forbidden");
    let input = people(&directory, 50);
    let (output, took) = import(&input, &server, &["--json"], Duration::from_secs(20));
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(took < Duration::from_secs(10), "{took:?}");
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["dead_lettered"], 0, "{summary}");
    assert_eq!(checkpoint(&input)["offset"], 0);
    std::fs::remove_dir_all(&directory).unwrap();
}
