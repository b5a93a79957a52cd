//! [`Client`]: the default stack (retry → rate limit per API class → throttle feedback) over any
//! HTTP service, with one async method per operation.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use pacer_limit::{Limiter, Priority, Quota};
use pacer_retry::RetryLayer;
use pacer_throttle::PaceLayer;
use serde_json::Value;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceBuilder, ServiceExt};

use crate::api::{ApiClass, Endpoints, Region};
use crate::error::{EntryError, Error};
use crate::in_flight::{CountInFlight, InFlight};
use crate::requests::{BatchEntries, Body, Event, Identifier, Requests};
use crate::response::{read_with, Answer, ReadLimits};
use crate::secret::Credentials;
use crate::timeouts::{
    HeadTimeout, TimeoutPhase, DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT,
};

/// The longest server-imposed wait the default stack honours.
const DEFAULT_MAX_SERVER_WAIT: Duration = Duration::from_secs(60);

/// The longest an interactive call waits for its slot by default: a user is waiting for it.
const DEFAULT_INTERACTIVE_MAX_WAIT: Duration = Duration::from_secs(1);

/// The limiter key of a request built by [`Requests`]: its [`ApiClass`] extension.
#[must_use]
pub fn api_class_of<B>(request: &Request<B>) -> ApiClass {
    request
        .extensions()
        .get::<ApiClass>()
        .copied()
        .unwrap_or(ApiClass::Track)
}

/// The default quota of each API class, with where it comes from (Customer.io's API references:
/// Track <https://docs.customer.io/api/track/>, App <https://docs.customer.io/api/app/>,
/// Pipelines <https://docs.customer.io/api/cdp/>, each in its "Rate limits" section). Every
/// class is evenly spaced with the default 1 %
/// margin ([`Quota::new`]): the pacing every server model accepts, and the one that reaches
/// 0.98–0.99 of a limit enforced by real nginx and HAProxy limiters (`BENCHMARKS.md`).
///
/// | class | quota | source |
/// |---|---|---|
/// | Track | 100/s | the figure users' runbooks use; Customer.io's newest spec says a soft 1000/s (3000 per 3 s) and that exceeding it may *drop* data, so pacing is proactive |
/// | App | 10/s | App API reference: "most endpoints … 10 requests per second" |
/// | Transactional | 100/s | older App API reference (newest: shares the 3000 per 3 s soft limit) |
/// | Broadcast | 1 per 10 s, at most 5 waiting | App API reference, API-triggered broadcasts |
/// | Pipelines | 3000 per 3 s | Pipelines (CDP) API reference |
///
/// Customer.io documents windows on top of these: the soft "3000 per 3 s" of Track,
/// Transactional and Pipelines ([`documented_cap`]), which evenly spaced sends at or below
/// 1000/s keep anyway, and the App API's daily quota, whose size depends on the plan and is not
/// published: stack it with [`ClientBuilder::daily_quota`].
#[must_use]
pub fn default_quota(class: ApiClass) -> Quota {
    match class {
        ApiClass::Track | ApiClass::Transactional => Quota::per_second(100),
        ApiClass::App => Quota::per_second(10),
        ApiClass::Broadcast => Quota::new(1, Duration::from_secs(10)),
        ApiClass::Pipelines => Quota::new(3000, Duration::from_secs(3)),
    }
}

/// The longer window Customer.io documents on top of `class`'s rate, when there is one: the
/// soft "3000 requests per 3 seconds" of the Track, Transactional and Pipelines APIs (the
/// newest App API and Pipelines references). [`default_quota`] keeps it by spacing sends
/// evenly; stack it with [`ClientBuilder::cap`] on a quota of your own that bursts:
///
/// ```
/// # mod pacer { pub mod customerio { pub use ::pacer_customerio::*; } pub mod limit { pub use ::pacer_limit::*; } }
/// use pacer::customerio::{documented_cap, ApiClass, Client};
/// use pacer::limit::Quota;
///
/// let track = ApiClass::Track;
/// let builder = Client::builder()
///     .quota(track, Quota::per_second(1000).gcra(100))
///     .cap(track, documented_cap(track).unwrap());
/// # let _ = builder;
/// ```
#[must_use]
pub fn documented_cap(class: ApiClass) -> Option<Quota> {
    match class {
        ApiClass::Track | ApiClass::Transactional | ApiClass::Pipelines => {
            Some(Quota::new(3000, Duration::from_secs(3)))
        }
        _ => None,
    }
}

/// The assembled stack's service type.
pub type Stack<RB> = BoxCloneSyncService<Request<Body>, Response<RB>, BoxError>;

/// Builds a [`Client`].
///
/// Every call is bounded by default, whatever the server does:
/// - connect timeout 10 s ([`connect_timeout`](Self::connect_timeout), for
///   [`build_https`](Self::build_https));
/// - response timeout 30 s per attempt, from the hand-over to the HTTP client (after the
///   request's slot of the quota) to the answer's head
///   ([`response_timeout`](Self::response_timeout));
/// - body timeout 30 s for the whole answer body ([`body_timeout`](Self::body_timeout));
/// - answer bodies capped at 1 MiB, success or error
///   ([`max_answer_bytes`](Self::max_answer_bytes));
/// - server waits (Retry-After) honoured up to 60 s ([`max_server_wait`](Self::max_server_wait));
///   a longer one fails the request at once
///   with [`Error::Throttled`] carrying the server's own value; a 429 without a wait while a
///   daily quota given to [`daily_quota`](Self::daily_quota) is spent pauses the class until the
///   day frees, or beyond `max_server_wait` fails at once with [`Error::QuotaSpent`];
/// - interactive calls (transactional sends, App API lookups) wait at most 1 s for their slot
///   of the quota ([`max_wait_in`](Self::max_wait_in)): one whose turn would come later fails
///   at once with [`Error::RateLimited`], not sent, rather than keep a user waiting behind a
///   backlog. They go before queued normal and bulk requests of the same quota (the lanes of
///   [`Priority`]), so only a burst of interactive calls themselves reaches the bound. Other
///   calls wait as long as their turn takes; the bulk lane (the importer's and the outbox's
///   batches, [`send_packed`](Client::send_packed)) keeps at least 10 % of the quota under
///   any interactive load.
#[derive(Debug)]
#[must_use]
pub struct ClientBuilder {
    endpoints: Endpoints,
    credentials: Credentials,
    quotas: Vec<(ApiClass, Quota)>,
    /// Windows stacked on a class's quota, whichever it is ([`ClientBuilder::cap`]).
    caps: Vec<(ApiClass, Quota)>,
    retry: RetryLayer,
    /// Maximum waits per lane, applied in order to the limiter's builder (a later one wins).
    max_wait: Vec<(Priority, Option<Duration>)>,
    max_server_wait: Duration,
    connect_timeout: Option<Duration>,
    response_timeout: Option<Duration>,
    limits: ReadLimits,
    #[cfg(feature = "redis")]
    shared: Option<pacer_limit_redis::SharedQuota>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            endpoints: Endpoints::default(),
            credentials: Credentials::default(),
            quotas: Vec::new(),
            caps: Vec::new(),
            retry: RetryLayer::new(),
            max_wait: vec![(Priority::Interactive, Some(DEFAULT_INTERACTIVE_MAX_WAIT))],
            max_server_wait: DEFAULT_MAX_SERVER_WAIT,
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            response_timeout: Some(DEFAULT_RESPONSE_TIMEOUT),
            limits: ReadLimits::default(),
            #[cfg(feature = "redis")]
            shared: None,
        }
    }
}

impl ClientBuilder {
    /// The workspace's region (default US).
    pub fn region(mut self, region: Region) -> Self {
        self.endpoints = Endpoints::region(region);
        self
    }

    /// One base URL for every API, e.g. [`pacer_mock`]'s.
    ///
    /// [`pacer_mock`]: https://docs.rs/pacer-mock
    pub fn base_url(mut self, base: &str) -> Self {
        self.endpoints = Endpoints::all_at(base);
        self
    }

    /// The credentials.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Paces `class` by `quota` instead of [`default_quota`].
    pub fn quota(mut self, class: ApiClass, quota: Quota) -> Self {
        self.quotas.retain(|(c, _)| *c != class);
        self.quotas.push((class, quota));
        self
    }

    /// Stacks `window` on `class`'s quota (the default or the one [`quota`](Self::quota)
    /// sets): both are enforced together ([`Quota::and`]), through Redis too with
    /// [`shared_quota`](Self::shared_quota). At most two windows per class.
    ///
    /// # Panics
    /// At [`build`](Self::build), when a class gets more than two windows on top of its quota.
    pub fn cap(mut self, class: ApiClass, window: Quota) -> Self {
        self.caps.push((class, window));
        self
    }

    /// The workspace's daily quota of `class` requests (the App API's depends on the plan and
    /// is not published, so there is no default): stacked on the class's quota as a window of
    /// a day ([`cap`](Self::cap)). Customer.io answers a spent daily quota with a 429 without
    /// `Retry-After`; with the quota known, such a 429 pauses the class until the day frees in
    /// the client's own count, or, when that is beyond
    /// [`max_server_wait`](Self::max_server_wait), fails at once with [`Error::QuotaSpent`]
    /// saying when it frees, rather than retrying into the spent quota.
    ///
    /// ```
    /// # mod pacer { pub mod customerio { pub use ::pacer_customerio::*; } }
    /// use pacer::customerio::{ApiClass, Client};
    ///
    /// // 10 per second, as by default, and the plan's 50,000 App API calls a day.
    /// let builder = Client::builder().daily_quota(ApiClass::App, 50_000);
    /// # let _ = builder;
    /// ```
    ///
    /// # Panics
    /// If `limit` is zero.
    pub fn daily_quota(self, class: ApiClass, limit: u32) -> Self {
        self.cap(class, Quota::per_day(limit))
    }

    /// The retry layer (default [`RetryLayer::new`]).
    pub fn retry(mut self, retry: RetryLayer) -> Self {
        self.retry = retry;
        self
    }

    /// Fails a request at once, in any lane, when it would wait longer than `max` for its
    /// slot, with [`Error::RateLimited`] (see [`max_wait_in`](Self::max_wait_in) for one lane).
    pub fn max_wait(mut self, max: Duration) -> Self {
        self.max_wait = Priority::ALL.map(|lane| (lane, Some(max))).to_vec();
        self
    }

    /// The maximum wait for a slot of `priority`'s lane (`None`: as long as it takes). By
    /// default interactive calls wait at most 1 s and the other lanes without bound. A
    /// request is measured by its turn: the interactive calls ahead of it, for an interactive
    /// one, whatever normal and bulk work is queued.
    ///
    /// ```
    /// # mod pacer { pub mod customerio { pub use ::pacer_customerio::*; } pub mod limit { pub use ::pacer_limit::*; } }
    /// use std::time::Duration;
    /// use pacer::customerio::Client;
    /// use pacer::limit::Priority;
    ///
    /// // A sign-up handler may keep its user waiting up to 300 ms for the welcome email's slot.
    /// let builder = Client::builder()
    ///     .max_wait_in(Priority::Interactive, Some(Duration::from_millis(300)));
    /// ```
    pub fn max_wait_in(mut self, priority: Priority, max: Option<Duration>) -> Self {
        self.max_wait.push((priority, max));
        self
    }

    /// The longest wait a server may impose (Retry-After, or a reset with nothing remaining;
    /// default 60 s): the one cap of the stack, for the throttle's pause and the retry layer's
    /// sleep alike (it replaces the [`retry`](Self::retry) layer's own `max_server_wait`). A
    /// longer wait pauses the key for `max` and fails the request with [`Error::Throttled`]
    /// carrying the server's own value.
    pub fn max_server_wait(mut self, max: Duration) -> Self {
        self.max_server_wait = max;
        self
    }

    /// Gives up opening a connection after `timeout` (default 10 s; `None`: the operating
    /// system's own, often over two minutes). Applies to [`build_https`](Self::build_https);
    /// an HTTP service given to [`build`](Self::build) brings its own (see
    /// [`https_client_with`](crate::https_client_with)).
    pub fn connect_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.connect_timeout = timeout.into();
        self
    }

    /// Fails an attempt whose answer head has not arrived `timeout` after the request was
    /// handed to the HTTP service (default 30 s; `None`: no bound). Measured below the pacing,
    /// so the time a request waits for its slot of the quota does not count. A timed-out
    /// attempt is retried like any timeout (when the request may be repeated); the call then
    /// fails with [`Error::TimedOut`].
    pub fn response_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.response_timeout = timeout.into();
        self
    }

    /// Fails a call whose answer body has not ended `timeout` after its head arrived (default
    /// 30 s; `None`: no bound), with [`Error::TimedOut`].
    pub fn body_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.limits.body_timeout = timeout.into();
        self
    }

    /// Reads at most `bytes` of any answer body, success or error (default 1 MiB); a success
    /// over it fails with [`Error::AnswerTooLarge`], an error keeps its status.
    pub fn max_answer_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_bytes = bytes;
        self
    }

    /// Shares the workspace's quotas with every other process using the same Redis and prefix
    /// (see [`pacer_limit_redis`]): together they stay within each API's quota, and a 429's
    /// `Retry-After` pauses all of them. Keys are named after the [`ApiClass`] (`Track`, `App`, …).
    #[cfg(feature = "redis")]
    pub fn shared_quota(mut self, shared: pacer_limit_redis::SharedQuota) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Assembles the default stack over a pooled HTTPS client (rustls with Mozilla's roots,
    /// HTTP/1.1 keep-alive and HTTP/2) with the builder's connect timeout.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when [`Roots::Native`](crate::Roots::Native) finds no store.
    ///
    /// The client's type is plain [`Client`] (its answers' bodies boxed), so it can be named in
    /// an application's state without depending on hyper.
    #[cfg(feature = "https")]
    pub fn build_https(self, roots: crate::Roots) -> Result<Client, Error> {
        use http_body_util::BodyExt as _;
        let http = crate::https_client_with(roots, self.connect_timeout)?;
        let boxed = tower::ServiceBuilder::new()
            .map_response(|response: Response<hyper::body::Incoming>| {
                response.map(|body| body.map_err(std::io::Error::other).boxed_unsync())
            })
            .service(http);
        Ok(self.build(boxed))
    }

    /// Assembles retry → pacing ([`PaceLayer`]: rate limit keyed by [`ApiClass`], then throttle
    /// feedback) over `http`.
    pub fn build<S, RB>(self, http: S) -> Client<RB>
    where
        S: tower::Service<Request<Body>, Response = Response<RB>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        RB: Send + 'static,
    {
        // Every class's quota, with its stacked windows, worked out once (here, not in the
        // limiter's quota function: a class with too many windows panics at build).
        let mut classes: Vec<ApiClass> = Vec::new();
        for (class, _) in self.quotas.iter().chain(&self.caps) {
            if !classes.contains(class) {
                classes.push(*class);
            }
        }
        let quotas: Vec<(ApiClass, Quota)> = classes
            .into_iter()
            .map(|class| {
                let quota = self
                    .quotas
                    .iter()
                    .find(|(c, _)| *c == class)
                    .map_or_else(|| default_quota(class), |(_, quota)| *quota);
                let stacked = self
                    .caps
                    .iter()
                    .filter(|(c, _)| *c == class)
                    .fold(quota, |quota, (_, window)| quota.and(*window));
                (class, stacked)
            })
            .collect();
        // One cap for the two layers that judge a server's wait.
        let retry = self.retry.clone().max_server_wait(self.max_server_wait);
        let mut limiter =
            Limiter::builder(default_quota(ApiClass::Track)).quota_fn(move |class: &ApiClass| {
                quotas
                    .iter()
                    .find(|(c, _)| c == class)
                    .map_or_else(|| default_quota(*class), |(_, quota)| *quota)
            });
        for (lane, max) in self.max_wait {
            limiter = limiter.max_wait_in(lane, max);
        }
        // Customer.io queues at most 5 broadcast triggers; more waiting here would only be refused.
        limiter = limiter.max_queue_fn(|class: &ApiClass| match class {
            ApiClass::Broadcast => 5,
            _ => 10_000,
        });
        #[cfg(feature = "redis")]
        if let Some(shared) = self.shared {
            use pacer_limit_redis::LimiterBuilderExt;
            limiter = limiter.shared(shared);
        }
        let limiter = limiter.build();
        let in_flight = Arc::new(InFlight::default());
        let counted = Arc::clone(&in_flight);
        // No bound is a bound far away: one service type either way.
        let response_timeout = self.response_timeout.unwrap_or(Duration::MAX);
        let service = BoxCloneSyncService::new(
            ServiceBuilder::new()
                .layer(retry.clone())
                .layer(
                    PaceLayer::keyed(limiter.clone(), api_class_of).max_pause(self.max_server_wait),
                )
                // Below the pacing, next to the HTTP service: what holds a slot and awaits its
                // answer. The throttle calls it in the poll in which the limiter hands over the
                // request, and reads the answer in the poll its head arrives, so this counts
                // exactly what it did between the two layers.
                .layer_fn(move |inner| CountInFlight::new(inner, Arc::clone(&counted)))
                // Next to the HTTP service: bounds the server's silence, not the queue.
                .layer_fn(move |inner| HeadTimeout::new(inner, response_timeout))
                .service(http),
        );
        Client {
            service,
            requests: Requests::new(self.endpoints, self.credentials),
            limiter,
            retry,
            in_flight,
            limits: self.limits,
            connect_timeout: self.connect_timeout,
        }
    }
}

/// The body of an answer, boxed: the default `RB` of [`Client`], whatever the HTTP service
/// under it (one allocation per answer, next to a network round trip). A failure to read it is
/// an `io::Error` whose inner error is the HTTP client's.
pub type ResponseBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, std::io::Error>;

/// A Customer.io client: typed operations through the default pacing stack. Cheap to clone;
/// clones share the quota.
///
/// `RB` is the HTTP service's response body: [`ResponseBody`] (boxed) for
/// [`ClientBuilder::build_https`], so `Client` alone names it (in an axum `State`, a struct
/// field); the service's own body type for [`ClientBuilder::build`] (e.g.
/// `Client<reqwest::Body>` over reqwest).
pub struct Client<RB = ResponseBody> {
    service: Stack<RB>,
    requests: Requests,
    limiter: Limiter<ApiClass>,
    retry: RetryLayer,
    in_flight: Arc<InFlight>,
    limits: ReadLimits,
    connect_timeout: Option<Duration>,
}

/// One API class's queue at a glance, as a p-queue user knows it: `size` (waiting), `pending`
/// (in flight) and `isPaused` (paused). A snapshot; it moves on as soon as it is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClassQueue {
    /// Requests waiting for a slot of the class's quota (p-queue's `size`).
    pub waiting: usize,
    /// Requests that have their slot and await the head of Customer.io's answer (p-queue's
    /// `pending`).
    pub in_flight: usize,
    /// Whether a pause (a 429's Retry-After) holds the class now (p-queue's `isPaused`).
    pub paused: bool,
    /// How long a request arriving now would wait for its slot.
    pub estimated_wait: Duration,
    /// The limiter's view of the queue, for its lanes ([`Self::lane`]).
    queue: pacer_limit::QueueStats,
}

impl ClassQueue {
    /// The queue of one lane of the class: how many wait in it, and how long a request
    /// arriving now in it would wait (an interactive one skips the queued bulk work).
    #[must_use]
    pub fn lane(&self, priority: Priority) -> pacer_limit::LaneStats {
        self.queue.lane(priority)
    }
}

impl<RB> Clone for Client<RB> {
    fn clone(&self) -> Self {
        Self {
            service: self.service.clone(),
            requests: self.requests.clone(),
            limiter: self.limiter.clone(),
            retry: self.retry.clone(),
            in_flight: Arc::clone(&self.in_flight),
            limits: self.limits,
            connect_timeout: self.connect_timeout,
        }
    }
}

impl<RB> std::fmt::Debug for Client<RB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("requests", &self.requests)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl Client<()> {
    /// A builder with the defaults.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }
}

/// What a batch did: how many requests it took, and the entries Customer.io refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchReport {
    /// Requests sent (the batch split under 500 KB).
    pub requests: usize,
    /// Refused entries, their `batch_index` rebased to the caller's list.
    pub rejected: Vec<EntryError>,
}

impl<RB> Client<RB>
where
    RB: http_body::Body + Send + 'static,
    RB::Error: Into<BoxError>,
{
    /// The request builders, for requests sent with [`send`](Self::send).
    pub fn requests(&self) -> &Requests {
        &self.requests
    }

    /// The assembled stack, for requests built by hand or composed further.
    pub fn service(&self) -> Stack<RB> {
        self.service.clone()
    }

    /// `class`'s queue now: waiting, in flight, paused. Shared by every clone of the client; with
    /// a quota shared through Redis (`ClientBuilder::shared_quota`), this process's part only.
    #[must_use]
    pub fn queue_stats(&self, class: ApiClass) -> ClassQueue {
        let queue = self.limiter.queue_stats(&class);
        ClassQueue {
            waiting: queue.waiting,
            in_flight: self.in_flight.of(class),
            paused: queue.paused,
            estimated_wait: queue.estimated_wait,
            queue,
        }
    }

    /// The shared limiter (keyed by [`ApiClass`]): stats, pauses, learned rates.
    pub fn limiter(&self) -> &Limiter<ApiClass> {
        &self.limiter
    }

    /// The retry layer's counters live here.
    pub fn retry_layer(&self) -> &RetryLayer {
        &self.retry
    }

    /// Sends a request built by [`Requests`] through the stack.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn send(&self, request: Request<Body>) -> Result<Answer, Error> {
        let batch = request.extensions().get::<BatchEntries>().is_some();
        let authorization = request.headers().get(http::header::AUTHORIZATION).cloned();
        let result = self.exchange(request, batch).await;
        let Some(value) = &authorization else {
            return result;
        };
        // Server text that echoes the credentials, in an error or in a 207's refused entries
        // (which end up in dead letters and logs), is redacted before anyone sees it.
        match result {
            Err(Error::Api { status, mut error }) => {
                error.redact(&secrets_of(value));
                Err(Error::Api { status, error })
            }
            Ok(mut answer) if !answer.rejected.is_empty() => {
                let mut refused = crate::error::ApiError {
                    entries: std::mem::take(&mut answer.rejected),
                    ..crate::error::ApiError::default()
                };
                refused.redact(&secrets_of(value));
                answer.rejected = refused.entries;
                Ok(answer)
            }
            other => other,
        }
    }

    async fn exchange(&self, request: Request<Body>, batch: bool) -> Result<Answer, Error> {
        let response = self
            .service
            .clone()
            .oneshot(request)
            .await
            .map_err(|error| self.stack_error(error))?;
        let answer = read_with(response, &self.limits).await?;
        if batch {
            check_batch_answer(&answer)?;
        }
        Ok(answer)
    }

    /// The stack's error as an [`Error`]; a connection the HTTP client gave up opening
    /// becomes [`Error::TimedOut`].
    fn stack_error(&self, error: BoxError) -> Error {
        let error = Error::from(error);
        if let (Error::Transport(inner), Some(after)) = (&error, self.connect_timeout) {
            if connect_timed_out(&**inner) {
                return Error::TimedOut {
                    phase: TimeoutPhase::Connect,
                    after,
                };
            }
        }
        error
    }

    /// Adds or updates a person.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn identify(
        &self,
        id: &str,
        attributes: &(impl serde::Serialize + Sync + ?Sized),
    ) -> Result<(), Error> {
        self.send(self.requests.identify(id, attributes)?)
            .await
            .map(drop)
    }

    /// Deletes a person.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn delete_person(&self, id: &str) -> Result<(), Error> {
        self.send(self.requests.delete_person(id)?).await.map(drop)
    }

    /// Tracks an event for a person (given an `id` if it has none, so retries never double it).
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn track(&self, id: &str, event: Event) -> Result<(), Error> {
        self.send(self.requests.track(id, event)?).await.map(drop)
    }

    /// Tracks an anonymous event.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn track_anonymous(
        &self,
        anonymous_id: Option<&str>,
        event: Event,
    ) -> Result<(), Error> {
        self.send(self.requests.track_anonymous(anonymous_id, event)?)
            .await
            .map(drop)
    }

    /// Adds a device to a person.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn add_device(&self, id: &str, token: &str, platform: &str) -> Result<(), Error> {
        self.send(self.requests.add_device(id, token, platform)?)
            .await
            .map(drop)
    }

    /// Removes a device from a person.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn delete_device(&self, id: &str, token: &str) -> Result<(), Error> {
        self.send(self.requests.delete_device(id, token)?)
            .await
            .map(drop)
    }

    /// Suppresses a person.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn suppress(&self, id: &str) -> Result<(), Error> {
        self.send(self.requests.suppress(id)?).await.map(drop)
    }

    /// Unsuppresses a person.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn unsuppress(&self, id: &str) -> Result<(), Error> {
        self.send(self.requests.unsuppress(id)?).await.map(drop)
    }

    /// Merges `secondary` into `primary`.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn merge(&self, primary: &Identifier, secondary: &Identifier) -> Result<(), Error> {
        self.send(self.requests.merge(primary, secondary)?)
            .await
            .map(drop)
    }

    /// Sends Track v2 operations in as few requests as the size limits allow; refused entries
    /// come back in the report with their index in `operations`.
    ///
    /// # Errors
    /// See [`Error`]; the first failing request ends the batch.
    pub async fn batch(&self, operations: Vec<Value>) -> Result<BatchReport, Error> {
        self.send_batches(self.requests.batch(operations)?).await
    }

    /// As [`batch`](Self::batch), for operations already encoded as JSON (see
    /// [`Requests::batch_encoded`]).
    ///
    /// # Errors
    /// See [`Error`]; the first failing request ends the batch.
    pub async fn batch_encoded(&self, operations: &[bytes::Bytes]) -> Result<BatchReport, Error> {
        self.send_batches(self.requests.batch_encoded(operations)?)
            .await
    }

    async fn send_batches(&self, requests: Vec<Request<Body>>) -> Result<BatchReport, Error> {
        let mut report = BatchReport::default();
        let mut offset = 0;
        for request in requests {
            let entries = entry_count(&request);
            let answer = self.send(request).await?;
            report.requests += 1;
            report
                .rejected
                .extend(answer.rejected.into_iter().map(|mut entry| {
                    entry.batch_index = entry.batch_index.map(|index| index + offset);
                    entry
                }));
            offset += entries;
        }
        Ok(report)
    }

    /// Sends a transactional email; returns Customer.io's answer (`delivery_id`, `queued_at`).
    /// Never retried once it may have reached the server (only after a 429 or a refused
    /// connection): Customer.io has no idempotency key for it.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn send_email(
        &self,
        message: &(impl serde::Serialize + Sync),
    ) -> Result<Value, Error> {
        self.send(self.requests.send_email(message)?).await?.json()
    }

    /// Sends a transactional push; as [`send_email`](Self::send_email).
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn send_push(
        &self,
        message: &(impl serde::Serialize + Sync),
    ) -> Result<Value, Error> {
        self.send(self.requests.send_push(message)?).await?.json()
    }

    /// Triggers an API-triggered broadcast; returns `{"id": trigger_id}`.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn trigger_broadcast(&self, broadcast_id: u64, data: &Value) -> Result<Value, Error> {
        self.send(self.requests.trigger_broadcast(broadcast_id, data)?)
            .await?
            .json()
    }

    /// Reads a person's attributes.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn customer_attributes(&self, id: &str) -> Result<Value, Error> {
        self.send(self.requests.customer_attributes(id)?)
            .await?
            .json()
    }

    /// Sends Pipelines calls as strict-mode batches.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn pipelines_batch(&self, calls: &[Value]) -> Result<usize, Error> {
        let mut sent = 0;
        for request in self.requests.pipelines_batch(calls)? {
            self.send(request).await?;
            sent += 1;
        }
        Ok(sent)
    }
}

/// Whether `error` is hyper-util's connect error from its connect timeout (an `io::Error` of
/// kind `TimedOut` under a connect error).
fn connect_timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    #[cfg(feature = "https")]
    {
        let connect = pacer_retry::find::<hyper_util::client::legacy::Error>(error)
            .is_some_and(hyper_util::client::legacy::Error::is_connect);
        connect
            && pacer_retry::find::<std::io::Error>(error)
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    }
    #[cfg(not(feature = "https"))]
    {
        let _ = error;
        false
    }
}

/// A 200 (or other success but 207) to a batch must be empty or JSON: a proxy's HTML page says
/// nothing of what Customer.io did with the entries.
fn check_batch_answer(answer: &Answer) -> Result<(), Error> {
    let body = answer.body.trim_ascii();
    if answer.status == http::StatusCode::MULTI_STATUS || body.is_empty() {
        return Ok(());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(_) => Ok(()),
        Err(error) => {
            tracing::warn!(status = %answer.status, "unreadable batch answer; no entry counts as delivered");
            Err(Error::UnreadableAnswer {
                status: answer.status,
                reason: format!("a batch answer that is not JSON: {error}"),
            })
        }
    }
}

/// What of an `Authorization` value a server might echo back: the whole value, its token, and
/// for Basic auth the decoded `user:password` and each part long enough to be a key.
fn secrets_of(authorization: &http::HeaderValue) -> Vec<String> {
    use base64::Engine as _;
    let Ok(value) = authorization.to_str() else {
        return Vec::new();
    };
    let mut secrets = vec![value.to_owned()];
    let Some((scheme, token)) = value.split_once(' ') else {
        return secrets;
    };
    secrets.push(token.to_owned());
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok());
        if let Some(decoded) = decoded {
            secrets.extend(
                decoded
                    .split(':')
                    .filter(|part| part.len() >= 8)
                    .map(str::to_owned),
            );
            secrets.push(decoded);
        }
    }
    // Longest first, so a part never leaves the rest of a longer secret behind.
    secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    secrets
}

/// How many entries a batch request carries (to rebase `batch_index`).
fn entry_count(request: &Request<Body>) -> usize {
    request
        .extensions()
        .get::<BatchEntries>()
        .map_or(0, |entries| entries.0)
}
