//! The [`Throttled`] service and what happens when a response comes back.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use http::{Request, Response, StatusCode};
use pacer_limit::{Feedback, Key, KeyExtractor, Limiter, Outcome};
use tokio::time::Instant;
use tower_service::Service;

use crate::error::{BoxError, WaitTooLong};
use crate::future::ResponseFuture;
use crate::layer::Config;
use crate::parse;

/// The service built by [`ThrottleLayer`](crate::ThrottleLayer).
///
/// # Errors
/// A [`BoxError`], as tower's own middleware: a [`WaitTooLong`] when the server refused the
/// request and asked for a wait beyond the layer's cap, or the inner service's error, converted
/// with `Into<BoxError>` and otherwise unchanged.
#[derive(Debug)]
pub struct Throttled<S, K = (), X = pacer_limit::GlobalKey> {
    inner: S,
    shared: Arc<Shared<K>>,
    extractor: X,
}

impl<S, K, X> Throttled<S, K, X> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<K>>, extractor: X) -> Self {
        Self {
            inner,
            shared,
            extractor,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, K, X: Clone> Clone for Throttled<S, K, X> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            extractor: self.extractor.clone(),
        }
    }
}

impl<S, B, RB, K, X> Service<Request<B>> for Throttled<S, K, X>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    K: Key,
    X: KeyExtractor<B, Key = K>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, K>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let key = self.extractor.extract(&request);
        let sent_at = Instant::now();
        ResponseFuture::new(
            self.inner.call(request),
            Arc::clone(&self.shared),
            key,
            sent_at,
        )
    }
}

/// What every service of one layer shares.
#[derive(Debug)]
pub(crate) struct Shared<K> {
    pub(crate) limiter: Limiter<K>,
    pub(crate) config: Config,
}

impl<K: Key> Shared<K> {
    /// Reads `response`'s signals, applies them to `key`, and tags the response with them.
    pub(crate) fn observe<B>(
        &self,
        key: &K,
        sent_at: Instant,
        response: &mut Response<B>,
    ) -> Result<(), WaitTooLong> {
        let now = Instant::now();
        let status = response.status();
        let refused = self.config.refusals.contains(&status);
        let signal = parse::throttle(
            response.headers(),
            &self.config.parse,
            now,
            SystemTime::now(),
        );

        let mut outcome = Ok(());
        let mut feedback = Feedback::new(
            if refused {
                Outcome::Refused
            } else if status.is_success() {
                Outcome::Accepted
            } else {
                Outcome::Other
            },
            sent_at,
        )
        .adaptive(self.config.adaptive);
        if refused {
            crate::metrics::refusal(key, status);
        }
        if let Some(signal) = signal.as_ref().filter(|signal| signal.wait.is_some()) {
            let wait = signal.wait.unwrap_or_default();
            let requested = signal.requested.unwrap_or(wait);
            let pause = wait.min(self.config.max_pause);
            feedback = feedback.pause_until(now + pause);
            crate::metrics::pause(key);
            let beyond_cap = requested > self.config.max_pause;
            if beyond_cap {
                crate::metrics::capped(key, status);
            }
            if refused && beyond_cap {
                tracing::warn!(key = ?key, %status, wait = ?requested, retry_after = ?signal.retry_after, cap = ?self.config.max_pause, "server asked for a wait beyond the cap; gave up");
                outcome = Err(WaitTooLong::new(status, requested, self.config.max_pause)
                    .with_retry_after(signal.retry_after.clone()));
            } else if refused {
                tracing::info!(key = ?key, %status, ?wait, "throttled by the server; key paused");
            } else if beyond_cap {
                // A success that says the quota is spent for longer than the cap (a day, say):
                // honoured up to the cap only, and said loudly, since every such answer would
                // otherwise slow the key to one request per cap, silently.
                tracing::warn!(key = ?key, %status, wait = ?requested, cap = ?self.config.max_pause, "a success asked for a pause beyond the cap; paused for the cap only");
            } else {
                tracing::debug!(key = ?key, ?pause, "quota exhausted until reset; key paused");
            }
        } else if refused {
            tracing::info!(key = ?key, %status, "refused by the server without a wait");
            // Should the limiter put it down to a spent cap (a daily quota), it pauses the key
            // until the cap frees, for the one wait cap at most.
            feedback = feedback.max_pause(self.config.max_pause);
        }
        if self.config.pace_ahead && !refused {
            if let Some((remaining, reset)) = signal
                .as_ref()
                .and_then(|signal| Some((signal.remaining?, signal.reset?)))
            {
                feedback = feedback.allowance(remaining, now + reset.min(self.config.max_pause));
            }
        }

        // The one call per response: the limiter applies pause, learning and pacing ahead
        // under one lock.
        let verdict = self.limiter.observe(key, feedback);
        if let Some(per_second) = verdict.rate_per_second {
            crate::metrics::rate(key, per_second);
        }
        if let Some(spent) = verdict.spent {
            crate::metrics::pause(key);
            let wait = spent.frees_at.saturating_duration_since(now);
            if wait > self.config.max_pause {
                crate::metrics::capped(key, status);
                tracing::warn!(key = ?key, %status, cap = ?spent.cap, frees_in = ?wait, max = ?self.config.max_pause, "a cap of the key's quota is spent and frees beyond the wait cap; gave up");
                let error = WaitTooLong::new(status, wait, self.config.max_pause);
                outcome = Err(match SystemTime::now().checked_add(wait) {
                    Some(frees_at) => error.with_spent_cap(spent.cap, frees_at),
                    None => error,
                });
            }
        }
        // A 429 ("too many requests", not "unavailable") whose key the limiter paused or slows:
        // a retry through the limiter is paced by it. A 503 keeps the retry layer's backoff,
        // which spreads attempts over an outage.
        if status == StatusCode::TOO_MANY_REQUESTS && verdict.paced {
            response.extensions_mut().insert(crate::Paced);
        }
        if let Some(signal) = signal {
            response.extensions_mut().insert(signal);
        }
        outcome
    }
}
