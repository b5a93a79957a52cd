//! The importer against what goes wrong: a server that never answers, a user pressing Ctrl-C
//! twice, a SIGKILL while dead letters are being written, inputs that are not files, and the
//! causes of a failure told in full. Each test bounds its own wait, so a hang fails it.

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use pacer_customerio::{https_client, Client, Credentials, Roots};
use pacer_import::reason::Redactor;
use pacer_mock::{Limit, MockConfig, MockServer};
use pacer_retry::RetryLayer;
use pacer_testkit::{Behaviour, HostileServer};
use serde_json::{json, Value};

fn scratch(name: &str) -> PathBuf {
    let directory =
        std::env::temp_dir().join(format!("pacer-harden-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

/// A server that accepts connections and never answers, and a wait for its first connection.
fn silent_server() -> (tokio::runtime::Runtime, HostileServer) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(HostileServer::start(Behaviour::Silent));
    (runtime, server)
}

fn await_connection(server: &HostileServer) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.connections() == 0 {
        assert!(Instant::now() < deadline, "the importer never connected");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn importer(input: &Path, base_url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pacer-import"));
    command
        .arg(input)
        .args(args)
        .args([
            "--base-url",
            base_url,
            "--site-id",
            "site-id",
            "--api-key",
            "track-key",
            "--quiet",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

fn interrupt(child: &Child) {
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Waits at most `limit` for `child`; kills it and fails the test past that.
fn wait_at_most(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the importer still ran after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn people(path: &Path, count: usize) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for n in 0..count {
        writeln!(file, "{}", json!({"id": format!("p{n}")})).unwrap();
    }
}

fn checkpoint_of(input: &Path) -> Value {
    let mut path = input.as_os_str().to_owned();
    path.push(".checkpoint");
    serde_json::from_str(&std::fs::read_to_string(PathBuf::from(path)).unwrap()).unwrap()
}

/// Against a server that never answers, a second Ctrl-C stops at once (exit 3), and the
/// checkpoint is intact and covers nothing that was not delivered.
#[test]
fn a_second_ctrl_c_stops_at_once_with_the_checkpoint_intact() {
    let directory = scratch("twice");
    let input = directory.join("input.ndjson");
    people(&input, 50);
    let (_runtime, server) = silent_server();
    let mut child = importer(&input, &server.url(), &["--drain-timeout", "600"])
        .spawn()
        .unwrap();
    await_connection(&server);
    interrupt(&child);
    std::thread::sleep(Duration::from_millis(300));
    interrupt(&child);
    let status = wait_at_most(&mut child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(3));
    let checkpoint = checkpoint_of(&input);
    assert_eq!(checkpoint["delivered"], 0, "{checkpoint}");
    assert_eq!(checkpoint["offset"], 0, "{checkpoint}");
    std::fs::remove_dir_all(&directory).unwrap();
}

/// One Ctrl-C drains for at most `--drain-timeout`, then stops (exit 3).
#[test]
fn a_first_ctrl_c_drains_for_at_most_the_drain_timeout() {
    let directory = scratch("drain");
    let input = directory.join("input.ndjson");
    people(&input, 50);
    let (_runtime, server) = silent_server();
    let mut child = importer(&input, &server.url(), &["--drain-timeout", "1"])
        .spawn()
        .unwrap();
    await_connection(&server);
    let interrupted = Instant::now();
    interrupt(&child);
    let status = wait_at_most(&mut child, Duration::from_secs(8));
    assert_eq!(status.code(), Some(3));
    assert!(interrupted.elapsed() >= Duration::from_millis(900));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("when the drain timed out"), "{stderr}");
    std::fs::remove_dir_all(&directory).unwrap();
}

/// A refused connection is told with its cause, not only "gave up after N attempts".
#[tokio::test]
async fn the_cause_of_a_failure_is_told_in_full() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::builder()
        .base_url(&format!("http://127.0.0.1:{port}"))
        .credentials(Credentials::track("site-id", "track-key"))
        .retry(RetryLayer::new().max_retries(1))
        .build(https_client(Roots::Webpki).unwrap());
    let error = client
        .identify("42", &serde_json::Map::new())
        .await
        .unwrap_err();
    let told = Redactor::default().describe(&error);
    assert!(told.to_lowercase().contains("connection refused"), "{told}");
}

/// SIGKILLed while dead letters are written, then resumed: every invalid line is in the
/// dead-letter file exactly once, and every line of it is whole JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_dead_letter_never_doubles_or_tears_an_entry() {
    let directory = scratch("dead");
    let input = directory.join("input.ndjson");
    let mut invalid = Vec::new();
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        for line in 1..=6000_u64 {
            if line.is_multiple_of(3) {
                // Long enough that the buffered writer flushes between checkpoints.
                writeln!(
                    file,
                    "{}",
                    json!({"type": "person", "note": "x".repeat(300)})
                )
                .unwrap();
                invalid.push(line);
            } else {
                writeln!(file, "{}", json!({"id": format!("p{line}")})).unwrap();
            }
        }
    }
    let mock = MockServer::start(
        MockConfig::default().limit(pacer_mock::Api::Track, Some(Limit::per_second(200))),
    )
    .await
    .unwrap();
    let args = ["--batch-size", "10", "--rate", "200"];
    let mut child = importer(&input, &mock.base_url(), &args).spawn().unwrap();
    // A kill point that differs from run to run, once some work is done.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let killed_after = 150 + u64::from(nanos % 150);
    let deadline = Instant::now() + Duration::from_secs(30);
    while mock.ledger().counts().requests < killed_after && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        mock.ledger().counts().requests < 600,
        "killed before the end"
    );

    let mut resumed = importer(&input, &mock.base_url(), &args);
    resumed.arg("--resume");
    let status = resumed.status().unwrap();
    assert_eq!(status.code(), Some(1), "done, with invalid records");
    let text = std::fs::read_to_string(format!("{}.dead.ndjson", input.display())).unwrap();
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for line in text.lines() {
        let entry: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        *seen.entry(entry["line"].as_u64().unwrap()).or_default() += 1;
    }
    let doubled: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(doubled.is_empty(), "dead-lettered twice: {doubled:?}");
    let mut lines: Vec<u64> = seen.into_keys().collect();
    lines.sort_unstable();
    assert_eq!(lines, invalid);
    std::fs::remove_dir_all(&directory).unwrap();
}

/// A million invalid lines, and CSV rows with a 50 MB field or an unclosed quote: each is
/// dead-lettered as it comes, and the importer's memory stays flat (it was 151 MiB, 219 MiB
/// and the whole file).
#[test]
fn hostile_inputs_stay_in_bounded_memory() {
    let directory = scratch("memory");
    let invalid = directory.join("invalid.ndjson");
    std::fs::write(&invalid, "{\"type\":\"person\"}\n".repeat(1_000_000)).unwrap();
    let mut field = b"id,note\n1,a\n2,\"".to_vec();
    field.extend(std::iter::repeat_n(b'x', 50_000_000));
    field.extend(b"\"\n3,c\n");
    let huge_field = directory.join("field.csv");
    std::fs::write(&huge_field, field).unwrap();
    let unclosed = directory.join("unclosed.csv");
    let mut text = String::from("id,note\n1,\"open\n");
    for n in 0..500_000 {
        text.push_str(&format!("{n},row\n"));
    }
    std::fs::write(&unclosed, text).unwrap();
    for (input, dead) in [(&invalid, 1_000_000), (&huge_field, 1), (&unclosed, 1)] {
        let output = Command::new(env!("CARGO_BIN_EXE_pacer-import"))
            .arg(input)
            .args(["--dry-run", "--json"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{}", input.display());
        let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(summary["invalid"], dead, "{}: {summary}", input.display());
        let peak = summary["peak_rss_mib"].as_f64().unwrap();
        eprintln!("{}: peak RSS {peak} MiB", input.display());
        assert!(peak < 64.0, "{}: {peak} MiB", input.display());
    }
    std::fs::remove_dir_all(&directory).unwrap();
}

/// A directory is refused as one; a FIFO is read as a stream (no checkpoint, no resume).
#[test]
fn a_directory_is_named_as_such_and_a_fifo_is_read() {
    let directory = scratch("kinds");
    let output = Command::new(env!("CARGO_BIN_EXE_pacer-import"))
        .args([directory.to_str().unwrap(), "--dry-run", "--quiet"])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert!(printed.contains("is a directory"), "{printed}");

    let fifo = directory.join("events.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut pipe = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            for n in 0..100 {
                writeln!(pipe, "{}", json!({"id": format!("p{n}")})).unwrap();
            }
        })
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_pacer-import"))
        .args([fifo.to_str().unwrap(), "--dry-run", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_at_most(&mut child, Duration::from_secs(20));
    writer.join().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert_eq!(status.code(), Some(0), "{stdout}");
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["delivered"], 100);
    std::fs::remove_dir_all(&directory).unwrap();
}

/// The library's warnings reach standard error by default, and `RUST_LOG` filters them: a
/// dead-letter file with a torn last line is mended with a warning.
#[test]
fn warnings_are_shown_and_rust_log_filters_them() {
    let directory = scratch("log");
    let input = directory.join("input.ndjson");
    people(&input, 3);
    let run = |rust_log: Option<&str>| {
        std::fs::write(
            directory.join("input.ndjson.dead.ndjson"),
            "{\"line\":1}\n{\"torn",
        )
        .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_pacer-import"));
        command.args([input.to_str().unwrap(), "--dry-run", "--quiet"]);
        command.env_remove("RUST_LOG");
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(0));
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    assert!(run(None).contains("WARN"), "warnings shown by default");
    assert!(
        !run(Some("error")).contains("WARN"),
        "RUST_LOG=error hides them"
    );
    std::fs::remove_dir_all(&directory).unwrap();
}

/// `--generate` without a file leaves nothing behind in the temporary directory.
#[test]
fn generated_input_and_its_side_files_are_removed() {
    let child = Command::new(env!("CARGO_BIN_EXE_pacer-import"))
        .args(["--mock", "--generate", "5", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = std::env::temp_dir().join(format!("pacer-import-{}.ndjson", child.id()));
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let printed = String::from_utf8_lossy(&output.stderr);
    assert!(printed.contains(input.to_str().unwrap()), "{printed}");
    for suffix in ["", ".checkpoint", ".dead.ndjson"] {
        let path = format!("{}{suffix}", input.display());
        assert!(!Path::new(&path).exists(), "{path} left behind");
    }
}
