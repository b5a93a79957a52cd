//! The contenders, all over one kind of transport: hyper-util's pooled client (with
//! `TCP_NODELAY`) wrapped in [`Transport`], which keeps the run's score below every pacing
//! layer (so a 429 that a retry layer swallows is still counted) and, when asked, answers one
//! request with a synthetic 429 instead of sending it.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use pacer::customerio::{self, Credentials, Event};
use pacer::limit::{LimitLayer, Limiter, Quota};
use pacer::redis::{LimiterBuilderExt, RedisStore, SharedQuota};
use pacer::retry::RetryLayer;
use pacer::throttle::PaceLayer;
use serde_json::{json, Map, Value};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

/// The request body (the same type as the Customer.io client's).
pub(crate) type Body = Full<Bytes>;
/// A response from the server, or the synthetic 429.
pub(crate) type ResponseBody = Either<Incoming, Full<Bytes>>;
type HttpClient = Client<HttpConnector, Body>;
type BoxedService = BoxCloneSyncService<Request<Body>, Response<ResponseBody>, BoxError>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Contender {
    /// `pacer::customerio::Client` with its default stack (retry, Track 100/s evenly spaced
    /// with the default 1 % margin, throttle feedback), calling `identify` and `track`.
    CustomerIo,
    /// The README's "Compose it" stack with the default quota: retry, rate limit, throttle.
    ReadmeStack,
    /// pacer's rate limit alone with `Quota::per_second(100)`: the defaults (evenly spaced,
    /// 1 % margin, precise wake-ups).
    PerSecondAlone,
    /// pacer's rate limit alone with what `Quota::per_second(100)` used to be: a sliding
    /// window without margin, on tokio's timer. For the before/after in one run.
    OldDefault,
    /// pacer's rate limit alone, hand-tuned: evenly spaced, 10 ms margin, precise wake-ups
    /// (the defaults spelled out).
    GcraPrecise,
    /// governor's direct limiter with a burst of 1, each task awaiting `until_ready`.
    Governor,
}

impl Contender {
    pub(crate) const ALL: [Contender; 6] = [
        Contender::CustomerIo,
        Contender::ReadmeStack,
        Contender::PerSecondAlone,
        Contender::OldDefault,
        Contender::GcraPrecise,
        Contender::Governor,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::CustomerIo => "Customer.io Client, defaults",
            Self::ReadmeStack => "README stack, defaults",
            Self::PerSecondAlone => "Quota::per_second(100) alone",
            Self::OldDefault => "old default: sliding_window(), no margin",
            Self::GcraPrecise => "pacer gcra(1) + 10 ms margin + precise",
            Self::Governor => "governor allow_burst(1)",
        }
    }

    /// Whether the contender can share its quota with others through Redis (`--fleet`).
    pub(crate) fn shares_a_quota(self) -> bool {
        matches!(
            self,
            Self::CustomerIo | Self::ReadmeStack | Self::PerSecondAlone
        )
    }

    /// Whether `--inject-429-at` applies: the contenders that react to a 429.
    pub(crate) fn takes_injection(self) -> bool {
        matches!(self, Self::CustomerIo | Self::ReadmeStack)
    }

    /// A fresh paced client over `transport` for one run, sending to `base_url` as `run`
    /// (its own `Authorization` value, so that the server's limiter state is fresh), sharing
    /// `shared` with the other clients of a fleet.
    pub(crate) fn client(
        self,
        transport: Transport,
        base_url: &str,
        run: u64,
        shared: Option<SharedQuota>,
    ) -> Paced {
        let limiter = |quota: Quota| {
            let builder = Limiter::builder(quota);
            match shared.clone() {
                Some(shared) => builder.shared(shared).build(),
                None => builder.build(),
            }
        };
        let authorization =
            HeaderValue::try_from(format!("Bearer run-{run}")).expect("an ASCII header value");
        let uri = format!("{base_url}/api/v1/customers/events");
        let service = match self {
            Self::CustomerIo => {
                let mut builder = customerio::Client::builder()
                    .base_url(base_url)
                    .credentials(Credentials::track(format!("site-{run}"), "track-key"));
                if let Some(shared) = shared {
                    builder = builder.shared_quota(shared);
                }
                let client = builder.build(transport);
                let mut attributes = Map::new();
                attributes.insert("plan".to_owned(), json!("pro"));
                return Paced::CustomerIo {
                    client: Arc::new(client),
                    attributes: Arc::new(attributes),
                };
            }
            Self::ReadmeStack => {
                let limiter = limiter(Quota::per_second(100));
                BoxCloneSyncService::new(
                    ServiceBuilder::new()
                        .layer(RetryLayer::new())
                        .layer(PaceLayer::new(limiter))
                        .service(transport)
                        .map_err(BoxError::from),
                )
            }
            Self::PerSecondAlone => rate_limit_alone(limiter(Quota::per_second(100)), transport),
            Self::OldDefault => {
                let quota = Quota::per_second(100)
                    .sliding_window()
                    .with_margin(Duration::ZERO);
                let limiter = Limiter::builder(quota).precise_wakeups(false).build();
                rate_limit_alone(limiter, transport)
            }
            Self::GcraPrecise => {
                let quota = Quota::per_second(100)
                    .gcra(1)
                    .with_margin(Duration::from_millis(10));
                let limiter = Limiter::builder(quota).precise_wakeups(true).build();
                rate_limit_alone(limiter, transport)
            }
            Self::Governor => {
                let quota = governor::Quota::per_second(NonZeroU32::new(100).expect("non-zero"))
                    .allow_burst(NonZeroU32::MIN);
                let governor = Arc::new(governor::RateLimiter::direct(quota));
                BoxCloneSyncService::new(tower::service_fn(move |request: Request<Body>| {
                    let governor = Arc::clone(&governor);
                    let transport = transport.clone();
                    async move {
                        governor.until_ready().await;
                        transport.oneshot(request).await.map_err(BoxError::from)
                    }
                }))
            }
        };
        Paced::Service {
            service,
            uri,
            authorization,
        }
    }
}

/// What one request came to, as its caller sees it.
#[derive(Debug)]
pub(crate) enum Outcome {
    Ok,
    /// A 429 reached the caller (after the retries, for the stacks that retry).
    Refused,
    Failed(String),
}

/// A contender's client, ready to send.
#[derive(Clone)]
pub(crate) enum Paced {
    CustomerIo {
        client: Arc<customerio::Client<ResponseBody>>,
        attributes: Arc<Map<String, Value>>,
    },
    Service {
        service: BoxedService,
        uri: String,
        authorization: HeaderValue,
    },
}

impl Paced {
    /// Sends the `n`th request of task `task` and reads its answer.
    pub(crate) async fn send(&self, task: usize, n: u64) -> Outcome {
        match self {
            Self::CustomerIo { client, attributes } => {
                let id = format!("{task}-{n}");
                let result = if n.is_multiple_of(2) {
                    client.identify(&id, attributes.as_ref()).await
                } else {
                    client.track(&id, Event::new("signed_up")).await
                };
                match result {
                    Ok(()) => Outcome::Ok,
                    Err(customerio::Error::Throttled { .. }) => Outcome::Refused,
                    Err(error) => Outcome::Failed(error.to_string()),
                }
            }
            Self::Service {
                service,
                uri,
                authorization,
            } => {
                let request = Request::post(uri.as_str())
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::AUTHORIZATION, authorization.clone())
                    .body(Body::new(Bytes::from_static(b"{\"name\":\"signed_up\"}")))
                    .expect("a valid request");
                match service.clone().oneshot(request).await {
                    Ok(response) => {
                        let status = response.status();
                        // Read the body so that the connection goes back to the pool.
                        if let Err(error) = response.into_body().collect().await {
                            return Outcome::Failed(format!("reading the body: {error}"));
                        }
                        match status {
                            StatusCode::OK => Outcome::Ok,
                            StatusCode::TOO_MANY_REQUESTS => Outcome::Refused,
                            other => Outcome::Failed(format!("status {other}")),
                        }
                    }
                    Err(error) => Outcome::Failed(error.to_string()),
                }
            }
        }
    }
}

/// What the transport saw during a run.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// When each request answered 200 was handed to hyper.
    ok_sent: Mutex<Vec<Instant>>,
    /// 429s from the server.
    refused: AtomicU64,
    /// When each request answered 429 was handed to hyper.
    refused_sent: Mutex<Vec<Instant>>,
    /// The synthetic 429, once answered: when.
    injected: Mutex<Option<Instant>>,
}

impl Tally {
    /// The send instants of the 200s, sorted.
    pub(crate) fn ok_sent(&self) -> Vec<Instant> {
        let mut sent = self.ok_sent.lock().expect("tally lock").clone();
        sent.sort_unstable();
        sent
    }

    /// The send instants of the 429s, sorted.
    pub(crate) fn refused_sent(&self) -> Vec<Instant> {
        let mut sent = self.refused_sent.lock().expect("tally lock").clone();
        sent.sort_unstable();
        sent
    }

    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub(crate) fn injected(&self) -> Option<Instant> {
        *self.injected.lock().expect("tally lock")
    }
}

/// hyper's client, counting what it gets back; with `inject_at`, the first request handed to
/// it at or after that instant is answered 429 (no `Retry-After`) without being sent.
#[derive(Clone, Debug)]
pub(crate) struct Transport {
    http: HttpClient,
    tally: Arc<Tally>,
    inject_at: Option<Instant>,
}

impl Transport {
    pub(crate) fn new(tally: Arc<Tally>, inject_at: Option<Instant>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            http: Client::builder(TokioExecutor::new()).build(connector),
            tally,
            inject_at,
        }
    }

    /// Whether this request is the one to refuse (at most one per run).
    fn inject_now(&self, now: Instant) -> bool {
        match self.inject_at {
            Some(at) if now >= at => {
                let mut injected = self.tally.injected.lock().expect("tally lock");
                if injected.is_none() {
                    *injected = Some(now);
                    true
                } else {
                    false
                }
            }
            _ => false,
        }
    }
}

type TransportFuture = Pin<
    Box<
        dyn Future<Output = Result<Response<ResponseBody>, hyper_util::client::legacy::Error>>
            + Send,
    >,
>;

impl Service<Request<Body>> for Transport {
    type Response = Response<ResponseBody>;
    type Error = hyper_util::client::legacy::Error;
    type Future = TransportFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<Request<Body>>::poll_ready(&mut self.http, cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let sent = Instant::now();
        if self.inject_now(sent) {
            let response = Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .body(Either::Right(Full::new(Bytes::new())))
                .expect("a valid response");
            return Box::pin(std::future::ready(Ok(response)));
        }
        let answer = self.http.request(request);
        let tally = Arc::clone(&self.tally);
        Box::pin(async move {
            let response = answer.await?;
            match response.status() {
                StatusCode::OK => tally.ok_sent.lock().expect("tally lock").push(sent),
                StatusCode::TOO_MANY_REQUESTS => {
                    tally.refused.fetch_add(1, Ordering::Relaxed);
                    tally.refused_sent.lock().expect("tally lock").push(sent);
                }
                _ => {}
            }
            Ok(response.map(Either::Left))
        })
    }
}

/// pacer's rate limit alone over `transport`, paced by `limiter`.
fn rate_limit_alone(limiter: Limiter, transport: Transport) -> BoxedService {
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(LimitLayer::new(limiter))
            .service(transport)
            .map_err(BoxError::from),
    )
}

/// One fleet client's share of the quota kept in the Redis at `url` under `namespace`, among
/// `clients` clients.
pub(crate) async fn shared_quota(
    url: &str,
    namespace: &str,
    clients: u32,
) -> Result<SharedQuota, BoxError> {
    let store = RedisStore::connect(url, namespace).await?;
    Ok(SharedQuota::new(store, clients))
}
