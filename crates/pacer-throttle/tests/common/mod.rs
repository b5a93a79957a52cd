//! Helpers shared by the tests of the throttle layer against simulated servers, in paused time.
#![allow(dead_code)] // each test binary uses its own part

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use pacer_limit::{LimitLayer, Limiter, Quota};
use pacer_throttle::ThrottleLayer;
use tokio::time::Instant;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

/// What the server saw: each request's arrival, caller and whether it was accepted.
#[derive(Debug, Default)]
pub(crate) struct Log {
    pub entries: Vec<(Instant, usize, bool)>,
}

pub(crate) fn too_many_requests(retry_after: &str) -> Response<()> {
    Response::builder()
        .status(StatusCode::TOO_MANY_REQUESTS)
        .header("retry-after", retry_after)
        .body(())
        .unwrap()
}

/// The caller's number travels in a header, so the server can tell callers apart.
pub(crate) fn request(caller: usize) -> Request<()> {
    Request::builder()
        .header("x-caller", caller)
        .body(())
        .unwrap()
}

pub(crate) fn caller_of(request: &Request<()>) -> usize {
    request.headers()["x-caller"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

pub(crate) type Client = tower::util::BoxCloneService<Request<()>, Response<()>, BoxError>;

/// The round trip of the simulated network, for the tests of dynamics: half of it on the way
/// to the server, half back. Requests in flight when a refusal arrives are what makes a wrong
/// quota expensive.
pub(crate) const ROUND_TRIP: Duration = Duration::from_millis(50);

/// The stack the design prescribes, over `server`: limiter outside, throttle inside.
pub(crate) fn client<F>(limiter: &Limiter, throttle: ThrottleLayer, server: F) -> Client
where
    F: FnMut(Request<()>) -> Response<()> + Clone + Send + 'static,
{
    client_over(limiter, throttle, server, Duration::ZERO)
}

/// The same over a network with `round_trip`.
pub(crate) fn client_over<F>(
    limiter: &Limiter,
    throttle: ThrottleLayer,
    server: F,
    round_trip: Duration,
) -> Client
where
    F: FnMut(Request<()>) -> Response<()> + Clone + Send + 'static,
{
    ServiceBuilder::new()
        .layer(LimitLayer::new(limiter.clone()))
        .layer(throttle)
        .service_fn(move |request| {
            let mut server = server.clone();
            async move {
                // Without a network, answer in the same poll: nothing else runs in between.
                if !round_trip.is_zero() {
                    tokio::time::sleep(round_trip / 2).await;
                }
                let response = server(request);
                if !round_trip.is_zero() {
                    tokio::time::sleep(round_trip / 2).await;
                }
                Ok::<_, Infallible>(response)
            }
        })
        .map_err(BoxError::from)
        .boxed_clone()
}

/// One request from caller 0.
pub(crate) async fn send(client: &Client) -> Result<Response<()>, BoxError> {
    client.clone().oneshot(request(0)).await
}

/// `callers` tasks sending back to back through clones of `client` until `end`.
pub(crate) async fn run_callers(client: &Client, callers: usize, end: Instant) {
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let client = client.clone();
            tokio::spawn(async move {
                while Instant::now() < end {
                    let mut client = client.clone();
                    let ready = client.ready().await.unwrap();
                    let _ = ready.call(request(caller)).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// Successful requests per second in `[from, to)` of the run, and the share of refusals.
pub(crate) fn rate_and_refusals(
    log: &Log,
    start: Instant,
    from: Duration,
    to: Duration,
) -> (f64, f64) {
    let in_span: Vec<_> = log
        .entries
        .iter()
        .filter(|&&(at, _, _)| at >= start + from && at < start + to)
        .collect();
    let accepted = in_span.iter().filter(|&&&(_, _, ok)| ok).count();
    let refused = in_span.len() - accepted;
    (
        accepted as f64 / (to - from).as_secs_f64(),
        refused as f64 / in_span.len().max(1) as f64,
    )
}

/// The rate the key is paced at now, in whole requests per window of its configured quota
/// `configured` (rounded): what a learned rate looks like next to the configured limit.
pub(crate) fn paced_per_window(limiter: &Limiter, configured: &Quota) -> u32 {
    let window = configured.effective_window();
    (limiter.quota(&()).rate_per_second() * window.as_secs_f64()).round() as u32
}

/// Samples [`paced_per_window`] every `every` for `run` from now, in a task of its own: the
/// key's rate as it adapts, against the time since the start.
pub(crate) fn watch_rate(
    limiter: &Limiter,
    run: Duration,
    every: Duration,
) -> tokio::task::JoinHandle<Vec<(Duration, u32)>> {
    let limiter = limiter.clone();
    // Called before any answer: the quota in force is the configured one.
    let configured = limiter.quota(&());
    let start = Instant::now();
    tokio::spawn(async move {
        let mut samples = Vec::new();
        while start.elapsed() < run {
            samples.push((start.elapsed(), paced_per_window(&limiter, &configured)));
            tokio::time::sleep(every).await;
        }
        samples
    })
}
