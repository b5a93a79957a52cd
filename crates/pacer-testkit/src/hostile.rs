//! A hostile HTTP/1.1 server on loopback: it answers every request with one chosen misbehaviour
//! (silence, a stalled or endless body, an absurd wait, an unreadable batch answer…), so that
//! tests can check that a client stays bounded in time and memory whatever a server does.
//!
//! Plain tokio sockets and hand-written responses: no HTTP server library is in the way of the
//! bytes on the wire, and a huge body is generated as it is written, never allocated.
//!
//! ```
//! use pacer_testkit::{Behaviour, HostileServer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let server = HostileServer::start(Behaviour::Status(418, "teapot".into())).await;
//! assert!(server.url().starts_with("http://127.0.0.1:"));
//! assert_eq!(server.requests(), 0);
//! # }
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The most request bytes (head and body) the server reads of one request: more than any
/// Customer.io request (1 MB at most), and a bound on what a test can make it buffer.
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// The size of each write of a generated body.
const CHUNK: usize = 64 * 1024;

/// How the server answers every request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Behaviour {
    /// Accepts the connection, reads the request, never answers (and never closes).
    Silent,
    /// Sends a 200 head announcing a 100-byte body, then nothing more (and never closes).
    StallBody,
    /// Streams a body of `bytes` bytes (`x` repeated) with this status, as fast as the client
    /// reads it.
    HugeBody {
        /// The status.
        status: u16,
        /// The body's length (its `Content-Length`).
        bytes: u64,
    },
    /// An error body in Customer.io's `{"meta":{"error":"…"}}` envelope whose message makes
    /// the body `bytes` long (at least the envelope's 21 bytes).
    ErrorBody {
        /// The status.
        status: u16,
        /// The body's length.
        bytes: u64,
    },
    /// A 429 with this `Retry-After` value.
    RetryAfter(String),
    /// A 200 that says the quota is spent for a day: `X-RateLimit-Remaining: 0` and
    /// `X-RateLimit-Reset: 86400`.
    ThrottlingSuccess,
    /// A 207 whose body is not JSON (a proxy's HTML page).
    Unreadable207,
    /// A 400 whose body repeats the request's `Authorization` header, as a careless server or
    /// proxy might.
    EchoAuthorization,
    /// This status and body.
    Status(u16, String),
    /// A 400 in Customer.io's v2 envelope (no `batch_index`: the whole request is refused) for a
    /// request whose body contains this text, `200 {}` for any other: a server that refuses a
    /// batch whole for one operation in it.
    RefuseBodiesContaining(String),
}

/// A running hostile server; it stops (and drops every connection) when dropped.
#[derive(Debug)]
pub struct HostileServer {
    port: u16,
    counts: Arc<Counts>,
    tasks: JoinSet<()>,
}

#[derive(Debug, Default)]
struct Counts {
    connections: AtomicUsize,
    requests: AtomicUsize,
}

impl HostileServer {
    /// Starts answering every request with `behaviour` on a free loopback port.
    ///
    /// # Panics
    /// When no loopback port is free.
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let port = listener.local_addr().expect("a bound address").port();
        let counts = Arc::new(Counts::default());
        let mut tasks = JoinSet::new();
        let accepted = Arc::clone(&counts);
        tasks.spawn(async move {
            // The connections live in the accept task's own set: aborting it drops them all.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                accepted.connections.fetch_add(1, Ordering::SeqCst);
                let behaviour = behaviour.clone();
                let counts = Arc::clone(&accepted);
                connections.spawn(serve(stream, behaviour, counts));
                // Reap finished connections so a long test does not accumulate them.
                while connections.try_join_next().is_some() {}
            }
        });
        Self {
            port,
            counts,
            tasks,
        }
    }

    /// `http://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The base URL for a client (the same as [`url`](Self::url)).
    #[must_use]
    pub fn base_url(&self) -> String {
        self.url()
    }

    /// The port it listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.counts.connections.load(Ordering::SeqCst)
    }

    /// Requests whose head was read so far.
    #[must_use]
    pub fn requests(&self) -> usize {
        self.counts.requests.load(Ordering::SeqCst)
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

/// Serves one connection's requests, one after the other, until it closes or misbehaves for
/// good.
async fn serve(mut stream: TcpStream, behaviour: Behaviour, counts: Arc<Counts>) {
    let mut buffer = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buffer).await else {
            return;
        };
        counts.requests.fetch_add(1, Ordering::SeqCst);
        if answer(&mut stream, &behaviour, &request).await.is_err() {
            return;
        }
    }
}

/// What an answer may depend on.
struct Request {
    /// The `Authorization` header (empty when absent).
    authorization: String,
    body: Vec<u8>,
}

/// Reads one request (head and `Content-Length` body) off `stream`, keeping any bytes of the
/// next one in `buffer`; `None` when the connection closed or the request is malformed or too
/// large.
async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(at) = find(buffer, b"\r\n\r\n") {
            break at + 4;
        }
        if buffer.len() > MAX_REQUEST_BYTES || read_more(stream, buffer).await == 0 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(key, _)| key.trim().eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim().to_owned())
    };
    let length: usize = header("content-length").map_or(Some(0), |v| v.parse().ok())?;
    if length > MAX_REQUEST_BYTES {
        return None;
    }
    while buffer.len() < head_end + length {
        if read_more(stream, buffer).await == 0 {
            return None;
        }
    }
    let body = buffer[head_end..head_end + length].to_vec();
    buffer.drain(..head_end + length);
    Some(Request {
        authorization: header("authorization").unwrap_or_default(),
        body,
    })
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> usize {
    let mut chunk = [0_u8; 8192];
    let read = stream.read(&mut chunk).await.unwrap_or(0);
    buffer.extend_from_slice(&chunk[..read]);
    read
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Writes the behaviour's answer; an error means the client went away.
async fn answer(
    stream: &mut TcpStream,
    behaviour: &Behaviour,
    request: &Request,
) -> std::io::Result<()> {
    match behaviour {
        Behaviour::Silent => std::future::pending().await,
        Behaviour::StallBody => {
            stream.write_all(&head(200, 100, "")).await?;
            stream.write_all(b"{\"partial\":").await?;
            stream.flush().await?;
            std::future::pending().await
        }
        Behaviour::HugeBody { status, bytes } => {
            stream.write_all(&head(*status, *bytes, "")).await?;
            write_filler(stream, *bytes).await
        }
        Behaviour::ErrorBody { status, bytes } => {
            let (open, close) = (b"{\"meta\":{\"error\":\"", b"\"}}");
            let filler = bytes.saturating_sub((open.len() + close.len()) as u64);
            let total = filler + (open.len() + close.len()) as u64;
            stream.write_all(&head(*status, total, "")).await?;
            stream.write_all(open).await?;
            write_filler(stream, filler).await?;
            stream.write_all(close).await
        }
        Behaviour::RetryAfter(value) => {
            let body = r#"{"meta":{"error":"rate limited"}}"#;
            let extra = format!("Retry-After: {value}\r\n");
            write_whole(stream, 429, &extra, body).await
        }
        Behaviour::ThrottlingSuccess => {
            let extra = "X-RateLimit-Limit: 100\r\nX-RateLimit-Remaining: 0\r\nX-RateLimit-Reset: 86400\r\n";
            write_whole(stream, 200, extra, "{}").await
        }
        Behaviour::Unreadable207 => {
            let body = "<html><body>502 Bad Gateway</body></html>";
            write_whole(stream, 207, "", body).await
        }
        Behaviour::EchoAuthorization => {
            let authorization = &request.authorization;
            let body = format!(r#"{{"meta":{{"error":"bad credentials: {authorization}"}}}}"#);
            write_whole(stream, 400, "", &body).await
        }
        Behaviour::Status(status, body) => write_whole(stream, *status, "", body).await,
        Behaviour::RefuseBodiesContaining(needle) => {
            if needle.is_empty() || find(&request.body, needle.as_bytes()).is_some() {
                let body = format!(
                    r#"{{"errors":[{{"reason":"invalid","field":"identifiers","message":"cannot accept {needle}"}}]}}"#
                );
                write_whole(stream, 400, "", &body).await
            } else {
                write_whole(stream, 200, "", "{}").await
            }
        }
    }
}

/// A response head with `Content-Length: length` and `extra` header lines (each ending in CRLF).
fn head(status: u16, length: u64, extra: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status} Hostile\r\nContent-Length: {length}\r\n{extra}\r\n").into_bytes()
}

async fn write_whole(
    stream: &mut TcpStream,
    status: u16,
    extra: &str,
    body: &str,
) -> std::io::Result<()> {
    let mut bytes = head(status, body.len() as u64, extra);
    bytes.extend_from_slice(body.as_bytes());
    stream.write_all(&bytes).await?;
    stream.flush().await
}

/// Writes `bytes` bytes of `x`, one reused chunk at a time.
async fn write_filler(stream: &mut TcpStream, bytes: u64) -> std::io::Result<()> {
    let chunk = [b'x'; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let now = left.min(CHUNK as u64) as usize;
        stream.write_all(&chunk[..now]).await?;
        left -= now as u64;
    }
    stream.flush().await
}
