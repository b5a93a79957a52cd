//! Rate-limited servers the benchmark runs in its own process (no package has them): a
//! clock-aligned fixed window, and a GitHub-style API that reports its allowance in
//! `X-RateLimit-*` headers. Both count per `Authorization` value and refuse with
//! `429 Retry-After: 1`. hyper adds a `Date` header (whole seconds) to every answer, as real
//! servers do.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// How a GitHub-style server writes `X-RateLimit-Reset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ResetIn {
    EpochSeconds,
    EpochMillis,
}

/// Which in-process server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// `limit` requests per clock second (the window starts on the second), no headers but
    /// `Retry-After` on a refusal.
    FixedWindow { limit: u32 },
    /// `limit` requests per clock second, with `X-RateLimit-Limit`, `-Remaining` and `-Reset`
    /// (the next second, as epoch seconds or milliseconds) on every answer.
    GitHub { limit: u32, reset: ResetIn },
}

/// The requests counted in the current clock second, per `Authorization` value.
#[derive(Debug, Default)]
struct Windows {
    counts: HashMap<HeaderValue, (u64, u32)>,
}

impl Windows {
    /// Counts one request of `key` at `now` (since the epoch); returns the count in its
    /// second before it, and that second.
    fn count(&mut self, key: HeaderValue, now: Duration, limit: u32) -> (u32, u64) {
        let second = now.as_secs();
        let entry = self.counts.entry(key).or_insert((second, 0));
        if entry.0 != second {
            *entry = (second, 0);
        }
        let before = entry.1;
        if before < limit {
            entry.1 += 1;
        }
        (before, second)
    }
}

/// Starts the server on a free loopback port; it runs until the process ends.
pub(crate) async fn start(kind: Kind) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let windows = Arc::new(Mutex::new(Windows::default()));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let windows = Arc::clone(&windows);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let answer = answer(kind, &windows, &request);
                    async move { Ok::<_, Infallible>(answer) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn answer<B>(kind: Kind, windows: &Mutex<Windows>, request: &Request<B>) -> Response<Full<Bytes>> {
    let key = request
        .headers()
        .get(header::AUTHORIZATION)
        .cloned()
        .unwrap_or(HeaderValue::from_static(""));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let limit = match kind {
        Kind::FixedWindow { limit } | Kind::GitHub { limit, .. } => limit,
    };
    let (before, second) = windows.lock().expect("windows lock").count(key, now, limit);
    let accepted = before < limit;
    let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if !accepted {
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if let Kind::GitHub { reset, .. } = kind {
        let remaining = limit - (before + u32::from(accepted)).min(limit);
        let reset = match reset {
            ResetIn::EpochSeconds => (second + 1).to_string(),
            ResetIn::EpochMillis => ((second + 1) * 1000).to_string(),
        };
        let headers = response.headers_mut();
        headers.insert("x-ratelimit-limit", HeaderValue::from(limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
        headers.insert(
            "x-ratelimit-reset",
            HeaderValue::try_from(reset).expect("digits"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_clock_second_and_key() {
        let mut windows = Windows::default();
        let key = HeaderValue::from_static("a");
        let at = |ms: u64| Duration::from_millis(ms);
        assert_eq!(windows.count(key.clone(), at(1_100), 2), (0, 1));
        assert_eq!(windows.count(key.clone(), at(1_900), 2), (1, 1));
        assert_eq!(windows.count(key.clone(), at(1_950), 2), (2, 1));
        assert_eq!(windows.count(key, at(2_000), 2), (0, 2));
    }
}
