//! [`ReqwestService`]: a `reqwest::Client` as a `tower::Service<http::Request<B>>`, so the pacer
//! layers and the Customer.io client compose over the HTTP client most services already use.
//!
//! ```no_run
//! # #[cfg(feature = "customerio")]
//! # async fn run(http: reqwest::Client) -> Result<(), pacer::customerio::Error> {
//! use pacer::customerio::{Client, Credentials};
//! use pacer::reqwest::ReqwestService;
//!
//! // Your reqwest client, with its TLS, proxy and timeout settings.
//! let client = Client::builder()
//!     .credentials(Credentials::track("site-id", "api-key"))
//!     .build(ReqwestService::new(http));
//! client.identify("42", &serde_json::json!({})).await?;
//! # Ok(())
//! # }
//! # fn main() {}
//! ```
//!
//! The request body is read into memory before it is handed to reqwest (the pacer stack already
//! holds it to replay retries), so reqwest sends it with a `Content-Length`. The response body
//! is reqwest's, streamed; read it with [`Client::send`](pacer_customerio::Client::send) (the
//! Customer.io client does), or `http_body_util::BodyExt::collect` for a stack of your own. An
//! error is reqwest's own, boxed as it came (`e.is::<reqwest::Error>()`, through the stack too
//! unless the retry layer wrapped it in [`RetriesExhausted`](pacer_retry::RetriesExhausted), whose
//! `source()` it then is), so the retry layer recognises it by type: this feature turns on pacer-retry's `reqwest`
//! feature, whose classifier reads `reqwest::Error::is_timeout` and `is_connect` (a refused
//! connection is retried even for a POST; a timeout only for a request that may be repeated).

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use tower_service::Service;

/// A `reqwest::Client` as a tower service of `http` requests and responses. Cheap to clone
/// (reqwest's client is an `Arc`); clones share its connection pool.
#[derive(Clone, Debug)]
pub struct ReqwestService {
    client: ::reqwest::Client,
}

impl ReqwestService {
    /// Wraps `client`.
    #[must_use]
    pub fn new(client: ::reqwest::Client) -> Self {
        Self { client }
    }

    /// The wrapped client.
    #[must_use]
    pub fn client(&self) -> &::reqwest::Client {
        &self.client
    }
}

impl From<::reqwest::Client> for ReqwestService {
    fn from(client: ::reqwest::Client) -> Self {
        Self::new(client)
    }
}

/// What a request through [`ReqwestService`] fails with: reqwest's own error, boxed as it came
/// (`error.is::<reqwest::Error>()`, `downcast_ref::<reqwest::Error>()`), or the request body's
/// error when it could not be read.
pub type Error = Box<dyn StdError + Send + Sync>;

/// The response future of [`ReqwestService`].
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<::reqwest::Body>, Error>> + Send>>;

impl<B> Service<http::Request<B>> for ReqwestService
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    type Response = http::Response<::reqwest::Body>;
    type Error = Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // reqwest's client queues internally and is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let client = self.client.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.map_err(Into::into)?.to_bytes();
            let request = http::Request::from_parts(parts, ::reqwest::Body::from(body));
            let request = ::reqwest::Request::try_from(request)?;
            let response = client.execute(request).await?;
            Ok(http::Response::from(response))
        })
    }
}
