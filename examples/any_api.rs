//! The pacer layers on a plain hyper client talking to an API that is not Customer.io: an
//! in-process server allowing 20 requests per second (a fixed window), answering 429 with
//! Retry-After beyond that and sending IETF `RateLimit` headers. The client starts with a wrong
//! guess (100 per second) and learns the real limit from the refusals.
//!
//! ```text
//! cargo run --release --example any_api
//! ```

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pacer::limit::{Limiter, Quota};
use pacer::retry::RetryLayer;
use pacer::throttle::PaceLayer;
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};

const SERVER_LIMIT: u64 = 20;
const RUN: Duration = Duration::from_secs(6);

#[derive(Default)]
struct Server {
    window_start: Option<Instant>,
    used: u64,
    accepted: AtomicU64,
    refused: AtomicU64,
}

impl Server {
    fn handle(&mut self) -> Response<Full<Bytes>> {
        let now = Instant::now();
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now - start;
        if elapsed >= Duration::from_secs(1) {
            self.window_start = Some(now);
            self.used = 0;
        }
        let reset = 1.0 - (now - self.window_start.unwrap_or(now)).as_secs_f64();
        let reset = reset.ceil().max(1.0) as u64;
        let remaining = SERVER_LIMIT.saturating_sub(self.used);
        let mut response = if remaining == 0 {
            self.refused.fetch_add(1, Ordering::Relaxed);
            let mut refused = Response::new(Full::new(Bytes::from_static(b"slow down")));
            *refused.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            refused.headers_mut().insert("retry-after", reset.into());
            refused
        } else {
            self.used += 1;
            self.accepted.fetch_add(1, Ordering::Relaxed);
            Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")))
        };
        let headers = response.headers_mut();
        headers.insert(
            "ratelimit-policy",
            format!("\"default\";q={SERVER_LIMIT};w=1").parse().unwrap(),
        );
        headers.insert(
            "ratelimit",
            format!(
                "\"default\";r={};t={reset}",
                SERVER_LIMIT.saturating_sub(self.used)
            )
            .parse()
            .unwrap(),
        );
        response
    }
}

#[tokio::main]
async fn main() {
    let server = Arc::new(Mutex::new(Server::default()));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("address");
    let serving = Arc::clone(&server);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let server = Arc::clone(&serving);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    let response = server.lock().expect("server lock").handle();
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    // A wrong guess: 100/s against a server that allows 20/s.
    let limiter = Limiter::new(Quota::per_second(100));
    // Retry outside, then the pacing: every attempt waits for a slot, and a 429 pauses the
    // limiter before the retry asks for one.
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new())
        .layer(PaceLayer::new(limiter.clone()))
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());

    let start = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                while start.elapsed() < RUN {
                    let request = Request::get(format!("http://{addr}/items"))
                        .body(Full::new(Bytes::new()))
                        .expect("request");
                    if let Ok(response) = client.clone().oneshot(request).await {
                        let _ = response.into_body().collect().await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let server = server.lock().expect("server lock");
    let accepted = server.accepted.load(Ordering::Relaxed);
    let refused = server.refused.load(Ordering::Relaxed);
    println!(
        "{RUN:?}: {accepted} accepted ({:.1}/s against a limit of {SERVER_LIMIT}/s), {refused} refused",
        accepted as f64 / RUN.as_secs_f64()
    );
    println!("quota learned: {:?}", limiter.quota(&()));
}
