//! What the caller can say about a request: that it is safe to repeat, and by when it must be
//! done; and how bodies are kept for a repeat.

use http::{Method, Request};
use tokio::time::Instant;

/// A request extension saying "repeating this request has no further effect" (the server
/// deduplicates it), which makes a POST or PATCH retryable.
///
/// ```
/// # mod pacer { pub mod retry { pub use ::pacer_retry::*; } }
/// let mut request = http::Request::post("https://track.customer.io/api/v2/entity").body(()).unwrap();
/// request.extensions_mut().insert(pacer::retry::Idempotent);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Idempotent;

/// A request extension with the instant by which the caller needs an answer: no retry starts
/// if its backoff would end after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Deadline(pub Instant);

/// Whether repeating `request` is safe: GET, HEAD, OPTIONS, TRACE, PUT and DELETE are idempotent
/// by definition (RFC 9110 §9.2.2); POST and PATCH only when marked with [`Idempotent`] or an
/// `Idempotency-Key` header. A POST retried after a timeout may otherwise apply twice. (A
/// request that may not be repeated is still retried after a 429 or a refused connection,
/// when the server certainly did not process it.)
#[must_use]
pub fn is_repeatable<B>(request: &Request<B>) -> bool {
    let idempotent_method = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    idempotent_method
        || request.extensions().get::<Idempotent>().is_some()
        || request.headers().contains_key("idempotency-key")
}

/// How a request is kept so it can be sent again.
pub trait ReplayBody<B> {
    /// A copy of `body` for another attempt, or `None` when it cannot be copied (the request is
    /// then sent once and never retried).
    fn replay(&self, body: &B) -> Option<B>;
}

/// Replays any `Clone` body (`Full<Bytes>`, `String`, `Bytes`, ...): the default.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct CloneBody;

impl<B: Clone> ReplayBody<B> for CloneBody {
    fn replay(&self, body: &B) -> Option<B> {
        Some(body.clone())
    }
}

/// Never replays: for bodies that cannot be copied (streams). Every request is sent once.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct NoReplay;

impl<B> ReplayBody<B> for NoReplay {
    fn replay(&self, _body: &B) -> Option<B> {
        None
    }
}

/// A copy of `request`'s head (method, URI, version, headers, extensions) with `body`.
pub(crate) fn copy_request<B>(request: &Request<B>, body: B) -> Request<B> {
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    copy
}
