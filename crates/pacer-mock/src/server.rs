//! The HTTP server: auth, limits, faults, then the endpoint.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::MockConfig;
use crate::ledger::Ledger;
use crate::limits::Limits;
use crate::reply::Reply;
use crate::routes::{Auth, Endpoint};

/// The largest body the mock reads (the transactional limit plus attachments, with room).
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// A running mock on an ephemeral loopback port. Dropping it stops the server.
pub struct MockServer {
    addr: SocketAddr,
    ledger: Ledger,
    acceptor: JoinHandle<()>,
}

impl fmt::Debug for MockServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

/// Why the mock ended a connection without answering (fault injection).
#[derive(Debug)]
struct Dropped;

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

struct State {
    config: MockConfig,
    ledger: Ledger,
    limits: Mutex<Limits>,
    rng: Mutex<SmallRng>,
}

impl MockServer {
    /// Starts the mock on `127.0.0.1` with an ephemeral port.
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start(config: MockConfig) -> std::io::Result<Self> {
        Self::bind(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts the mock on `addr`.
    ///
    /// # Errors
    /// When `addr` cannot be bound.
    pub async fn bind(config: MockConfig, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let ledger = Ledger::default();
        let state = Arc::new(State {
            rng: Mutex::new(SmallRng::seed_from_u64(config.seed)),
            config,
            ledger: ledger.clone(),
            limits: Mutex::new(Limits::default()),
        });
        let acceptor = tokio::spawn(accept(listener, state));
        Ok(Self {
            addr,
            ledger,
            acceptor,
        })
    }

    /// The address the mock listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`: the base URL for every API (Track, App, Pipelines).
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the mock applied and answered.
    #[must_use]
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }
}

async fn accept(listener: TcpListener, state: Arc<State>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "mock: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { handle(&state, request).await }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    state: &State,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    state.ledger.lock().counts.requests += 1;
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Ok(
                Reply::track_error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
                    .into_response(),
            )
        }
    };
    let endpoint = match Endpoint::of(&parts.method, parts.uri.path()) {
        Ok(endpoint) => endpoint,
        Err(why) => {
            let mut response = Response::new(Full::new(Bytes::from(why)));
            *response.status_mut() = StatusCode::NOT_FOUND;
            return Ok(response);
        }
    };
    if !authorized(&state.config, endpoint.auth(), &parts.headers) {
        state.ledger.lock().counts.unauthorized += 1;
        return Ok(Reply::unauthorized().into_response());
    }
    if let Some(throttled) = throttle(state, &endpoint) {
        return Ok(throttled.into_response());
    }
    let faults = Faults::roll(state);
    if !faults.delay.is_zero() {
        tokio::time::sleep(faults.delay).await;
    }
    if faults.drop_before {
        state.ledger.lock().counts.dropped += 1;
        return Err(Dropped);
    }
    if let Some(status) = faults.status {
        state.ledger.lock().counts.faults += 1;
        return Ok(Reply::track_error(status, "injected fault").into_response());
    }
    let reply = endpoint.apply(&parts.headers, &body, &mut state.ledger.lock());
    if faults.drop_after {
        state.ledger.lock().counts.dropped += 1;
        return Err(Dropped);
    }
    Ok(reply.into_response())
}

/// The 429 of an endpoint's rate limit, when the request is over it.
fn throttle(state: &State, endpoint: &Endpoint) -> Option<Reply> {
    let limit = state.config.limit_of(endpoint.class())?;
    let workspace = &state.config.site_id;
    let verdict = state
        .limits
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .admit(workspace, endpoint.class(), limit, Instant::now());
    let wait = verdict.err()?;
    state.ledger.lock().counts.throttled += 1;
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Some(Reply::throttled(
        limit.limit,
        limit.window.as_secs().max(1),
        seconds,
    ))
}

/// The faults injected into one request, drawn from the seeded generator.
struct Faults {
    /// Latency plus jitter, before anything else.
    delay: std::time::Duration,
    /// Drop the connection without applying the request.
    drop_before: bool,
    /// Answer with this status without applying the request.
    status: Option<StatusCode>,
    /// Apply the request, then drop the connection.
    drop_after: bool,
}

impl Faults {
    /// Draws in a fixed order (jitter, status, drop before, drop after), so a seed replays the
    /// same faults.
    fn roll(state: &State) -> Self {
        let faults = state.config.faults;
        let mut rng = state.rng.lock().unwrap_or_else(|e| e.into_inner());
        let jitter = if faults.jitter.is_zero() {
            std::time::Duration::ZERO
        } else {
            faults.jitter.mul_f64(rng.random::<f64>())
        };
        let roll: f64 = rng.random();
        let status = if roll < faults.server_errors {
            Some(StatusCode::INTERNAL_SERVER_ERROR)
        } else if roll < faults.server_errors + faults.unavailable {
            Some(StatusCode::SERVICE_UNAVAILABLE)
        } else {
            None
        };
        Self {
            delay: faults.latency + jitter,
            drop_before: rng.random::<f64>() < faults.drop_before,
            status,
            drop_after: rng.random::<f64>() < faults.drop_after,
        }
    }
}

/// Checks the credentials an endpoint needs.
fn authorized(config: &MockConfig, auth: Auth, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let basic = |user: &str, password: &str| {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        value == format!("Basic {encoded}")
    };
    match auth {
        Auth::Track => basic(&config.site_id, &config.track_api_key),
        Auth::Pipelines => basic(&config.pipelines_api_key, ""),
        Auth::App => value == format!("Bearer {}", config.app_api_key),
    }
}
