//! A `redis-server` of a test's own: a random loopback port, a temporary directory, no
//! persistence (or an append-only file, on request), stopped on drop, and restartable on the
//! same port to test recovery.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Set (to anything) where the Redis tests must run, e.g. in CI: a missing `redis-server`
/// then fails the test instead of skipping it.
const REQUIRE: &str = "PACER_REQUIRE_REDIS";

/// A running `redis-server`, killed (and its directory removed) on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    directory: PathBuf,
    /// Append-only file on, fsynced on every write: a restart (even after a kill) keeps every
    /// write that was answered.
    aof: bool,
}

impl RedisServer {
    /// Starts a server on a free loopback port. Returns `None`, after printing a skip line that
    /// the test harness does not capture, when `redis-server` is not installed, unless
    /// `PACER_REQUIRE_REDIS` is set: then it panics, so CI cannot pass by skipping.
    #[must_use]
    pub fn start() -> Option<Self> {
        Self::start_with(false)
    }

    /// As [`start`](Self::start), with the append-only file on (`appendfsync always`), so that
    /// [`restart`](Self::restart) comes back with every write that was answered.
    #[must_use]
    pub fn start_with_aof() -> Option<Self> {
        Self::start_with(true)
    }

    fn start_with(aof: bool) -> Option<Self> {
        // A port free when probed may be taken before the server binds it (by a server of a
        // test running beside this one): the server then exits, and another port is tried.
        let mut last_error = None;
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free loopback port")
                .port();
            let directory =
                std::env::temp_dir().join(format!("pacer-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&directory).expect("a temporary directory");
            let mut server = Self {
                child: None,
                port,
                directory,
                aof,
            };
            match server.spawn() {
                Ok(()) => return Some(server),
                Err(error) => last_error = Some(error),
            }
        }
        let error = last_error.expect("at least one attempt");
        if std::env::var_os(REQUIRE).is_none() {
            // Straight to the stream, past the test harness's capture, so the skip shows.
            let line = format!(
                "SKIPPED: redis-server could not start ({error}); apt-get install redis-server\n"
            );
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            return None;
        }
        panic!("redis-server could not start and {REQUIRE} is set: {error}")
    }

    /// `redis://127.0.0.1:<port>/`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (as a crash would: SIGKILL, no shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port: empty, or with its data when started with
    /// [`start_with_aof`](Self::start_with_aof).
    ///
    /// # Panics
    /// When it cannot start.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn().expect("redis-server restarts");
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(if self.aof {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "everysec"]
            })
            .arg("--dir")
            .arg(&self.directory)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        // Ready when the server on the port is this one: another test's server may answer on
        // a port this one failed to bind.
        while served_by(self.port) != Some(pid) {
            let exited = self
                .child
                .as_mut()
                .is_none_or(|child| child.try_wait().map_or(true, |status| status.is_some()));
            if exited {
                self.child = None;
                return Err(std::io::Error::other(format!(
                    "it exited at start (port {} taken?)",
                    self.port
                )));
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(std::io::Error::other("it did not listen within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

/// The process id of the `redis-server` answering on `port`, if one answers (`INFO server`).
fn served_by(port: u16) -> Option<u32> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    stream.write_all(b"INFO server\r\n").ok()?;
    let mut reply = Vec::new();
    let mut chunk = [0_u8; 4096];
    // The section is a few KiB; read until the line is in, bounded.
    while reply.len() < 64 * 1024 {
        let read = stream.read(&mut chunk).ok()?;
        if read == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&reply);
        if let Some(rest) = text.split("process_id:").nth(1) {
            if let Some(line) = rest.split("\r\n").next().filter(|_| rest.contains("\r\n")) {
                return line.trim().parse().ok();
            }
        }
    }
    None
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}
