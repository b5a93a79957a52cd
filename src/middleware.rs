//! [`PacerMiddleware`]: the pacer stack as a [`reqwest_middleware::Middleware`], for services that
//! already build requests with reqwest's `RequestBuilder` (`.json()`, `.query()`,
//! `.bearer_auth()`) through a `ClientWithMiddleware`, next to `reqwest-retry` or tracing
//! middleware.
//!
//! Each request waits for a slot of its key's quota, a 429 or 503 (with `Retry-After` or
//! `RateLimit` headers) pauses every caller of the same limiter, and an attempt that fails for a
//! reason worth retrying is retried with jittered backoff, each retry spending a slot like any
//! other request: the same [`RetryLayer`] and [`PaceLayer`] as the tower stack, one budget for
//! every clone of the client and every task.
//!
//! ```no_run
//! use pacer::limit::{Limiter, Quota};
//! use pacer::middleware::PacerMiddleware;
//! use pacer::retry::RetryLayer;
//! use pacer::PaceLayer;
//!
//! # async fn run() -> Result<(), reqwest_middleware::Error> {
//! let limiter = Limiter::new(Quota::per_second(10));
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(PacerMiddleware::new(RetryLayer::new(), PaceLayer::new(limiter)))
//!     .build();
//! let response = client
//!     .get("https://api.example.com/v1/customers")
//!     .header("accept", "application/json")
//!     .bearer_auth("token")
//!     .send()
//!     .await?;
//! // A reqwest::Response, read as usual: status, headers, bytes, text (or json with reqwest's
//! // `json` feature).
//! let body = response.error_for_status()?.text().await?;
//! # let _ = body;
//! # Ok(())
//! # }
//! # fn main() {}
//! ```
//!
//! What comes back: a `reqwest::Response` for every answer the stack did not turn into an
//! error (a 503 the retries did not mend is a response too). Errors are
//! `reqwest_middleware::Error`: a failure of reqwest itself, or of a middleware inside this one,
//! comes back unchanged (`Error::Reqwest` holds the `reqwest::Error`); a decision of this
//! middleware is an `Error::Middleware` whose `anyhow::Error` downcasts to its pacer type
//! ([`RateLimited`](pacer_limit::RateLimited), [`WaitTooLong`](pacer_throttle::WaitTooLong),
//! [`RetriesExhausted`](pacer_retry::RetriesExhausted), …), as the tower stack's do.
//!
//! A request whose body is a stream cannot be replayed: it is sent once, paced, not retried.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Extensions;
use http_body_util::Full;
use pacer_limit::{GlobalKey, Key};
use pacer_retry::{BoxError, RetryLayer};
use pacer_throttle::PaceLayer;
use reqwest_middleware::{Middleware, Next};
use tower_layer::Layer;
use tower_service::Service;

/// Paces, throttles and retries every request of a `reqwest_middleware::ClientWithMiddleware`
/// through one [`RetryLayer`] and one [`PaceLayer`] (see the [module docs](self)).
#[derive(Clone, Debug)]
#[must_use]
pub struct PacerMiddleware<K = (), X = GlobalKey> {
    retry: RetryLayer,
    pace: PaceLayer<K, X>,
}

impl<K: Key, X: Clone> PacerMiddleware<K, X> {
    /// Every request goes through `retry`, then `pace` (keyed as `pace` is: [`PaceLayer::new`]
    /// for one quota, [`PaceLayer::keyed`] for a quota per host, API or tenant).
    pub fn new(retry: RetryLayer, pace: PaceLayer<K, X>) -> Self {
        Self { retry, pace }
    }

    /// The pace layer, for its limiter's stats and queue.
    pub fn pace(&self) -> &PaceLayer<K, X> {
        &self.pace
    }

    /// The retry layer, for its counters.
    pub fn retry(&self) -> &RetryLayer {
        &self.retry
    }
}

#[async_trait::async_trait]
impl<K, X> Middleware for PacerMiddleware<K, X>
where
    K: Key,
    X: pacer_limit::KeyExtractor<Full<Bytes>, Key = K> + Clone + Send + Sync + 'static,
{
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        // A streamed body cannot be read again for a retry: send it once, as it is.
        let Some(body) = replayable_body(&request) else {
            return next.run(request, extensions).await;
        };
        // `RequestBuilder::timeout` lives on the reqwest request, not in the http one: carried
        // across so every attempt keeps it.
        let request_timeout = request.timeout().copied();
        let request = to_http(&request, body)?;
        let inner = NextService {
            next,
            extensions: extensions.clone(),
            timeout: request_timeout,
        };
        let mut stack = self.retry.layer(self.pace.layer(inner));
        std::future::poll_fn(|cx| stack.poll_ready(cx))
            .await
            .map_err(from_stack)?;
        let response = stack.call(request).await.map_err(from_stack)?;
        Ok(reqwest::Response::from(response))
    }
}

/// The request's body as bytes (empty when it has none), or `None` for a stream.
fn replayable_body(request: &reqwest::Request) -> Option<Bytes> {
    match request.body() {
        None => Some(Bytes::new()),
        Some(body) => body.as_bytes().map(Bytes::copy_from_slice),
    }
}

/// The request as the tower stack takes it; a URL that is no valid URI (none that reqwest
/// builds, but the check is cheap) is the middleware's error, not a panic.
fn to_http(
    request: &reqwest::Request,
    body: Bytes,
) -> reqwest_middleware::Result<http::Request<Full<Bytes>>> {
    let uri: http::Uri = request
        .url()
        .as_str()
        .parse()
        .map_err(|error| reqwest_middleware::Error::Middleware(anyhow::Error::new(error)))?;
    let mut built = http::Request::new(Full::new(body));
    *built.method_mut() = request.method().clone();
    *built.uri_mut() = uri;
    *built.version_mut() = request.version();
    *built.headers_mut() = request.headers().clone();
    Ok(built)
}

/// A stack error back as reqwest-middleware's: the inner middleware's or reqwest's own error
/// unchanged, a pacer decision as `Error::Middleware` (downcastable to its type).
fn from_stack(error: BoxError) -> reqwest_middleware::Error {
    match error.downcast::<reqwest_middleware::Error>() {
        Ok(error) => *error,
        Err(error) => match error.downcast::<reqwest::Error>() {
            Ok(error) => reqwest_middleware::Error::Reqwest(*error),
            Err(error) => reqwest_middleware::Error::Middleware(to_anyhow(error)),
        },
    }
}

/// The pacer layers' own errors as anyhow errors of their type, so `downcast_ref::<T>()` finds
/// them (`anyhow::Error::from_boxed` would hide the type behind the box).
fn to_anyhow(error: BoxError) -> anyhow::Error {
    macro_rules! typed {
        ($error:ident, $($type:ty),+) => {
            $(let $error = match $error.downcast::<$type>() {
                Ok(typed) => return anyhow::Error::new(*typed),
                Err(other) => other,
            };)+
        };
    }
    typed!(
        error,
        pacer_limit::RateLimited,
        pacer_throttle::WaitTooLong,
        pacer_retry::RetriesExhausted,
        pacer_retry::AttemptTimedOut
    );
    anyhow::Error::from_boxed(error)
}

/// The rest of the middleware chain (and reqwest) as the tower service under the stack. Each
/// attempt gets its own copy of the request's extensions.
struct NextService<'a> {
    next: Next<'a>,
    extensions: Extensions,
    /// The request's own timeout (`RequestBuilder::timeout`), for every attempt.
    timeout: Option<std::time::Duration>,
}

impl Clone for NextService<'_> {
    fn clone(&self) -> Self {
        Self {
            next: self.next.clone(),
            extensions: self.extensions.clone(),
            timeout: self.timeout,
        }
    }
}

impl<'a> Service<http::Request<Full<Bytes>>> for NextService<'a> {
    type Response = http::Response<reqwest::Body>;
    type Error = reqwest_middleware::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'a>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Full<Bytes>>) -> Self::Future {
        let next = self.next.clone();
        let mut extensions = self.extensions.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = reqwest::Body::from(
                http_body_util::BodyExt::collect(body)
                    .await
                    .map_or_else(|never| match never {}, |collected| collected.to_bytes()),
            );
            let mut request = reqwest::Request::try_from(http::Request::from_parts(parts, body))?;
            *request.timeout_mut() = timeout;
            let response = next.run(request, &mut extensions).await?;
            Ok(http::Response::from(response))
        })
    }
}
