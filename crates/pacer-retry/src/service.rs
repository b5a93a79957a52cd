//! The [`Retry`] service.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::time::Instant;
use tower::retry::budget::Budget;
use tower_service::Service;

use crate::classify::Classify;
use crate::error::BoxError;
use crate::future::ResponseFuture;
use crate::layer::Shared;
use crate::request::{copy_request, is_repeatable, Deadline, ReplayBody};
use crate::stats::Counters;

/// The service built by [`RetryLayer`](crate::RetryLayer).
///
/// # Errors
/// A [`BoxError`], as tower's own middleware: the inner service's error unchanged, or one of
/// this layer's [`AttemptTimedOut`](crate::AttemptTimedOut),
/// [`ServerWaitTooLong`](crate::ServerWaitTooLong) and
/// [`RetriesExhausted`](crate::RetriesExhausted); which when is in the
/// [crate docs](crate#errors).
#[derive(Debug)]
pub struct Retry<S, C, P> {
    inner: S,
    shared: Arc<Shared<C, P>>,
}

impl<S, C, P> Retry<S, C, P> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<C, P>>) -> Self {
        Self { inner, shared }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C, P> Clone for Retry<S, C, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, B, RB, C, P> Service<Request<B>> for Retry<S, C, P>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<RB, BoxError>,
    P: ReplayBody<B>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, C, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let shared = &self.shared;
        Counters::bump(&shared.state.counters.requests);
        if let Some(budget) = &shared.state.budget {
            budget.deposit();
        }
        let now = Instant::now();
        let deadline = [
            shared
                .config
                .max_elapsed
                .and_then(|max| now.checked_add(max)),
            request
                .extensions()
                .get::<Deadline>()
                .map(|deadline| deadline.0),
        ]
        .into_iter()
        .flatten()
        .min();
        // Keep a copy for retries: even a request that may not be repeated is retried when the
        // server certainly did not process it (a 429, a refused connection).
        let repeatable = is_repeatable(&request);
        let template = shared
            .replay
            .replay(request.body())
            .map(|body| copy_request(&request, body));
        // The readied service takes the first attempt; a clone is readied for each retry.
        let clone = self.inner.clone();
        let mut readied = std::mem::replace(&mut self.inner, clone);
        let first = readied.call(request);
        ResponseFuture::new(
            first,
            readied,
            Arc::clone(&self.shared),
            template,
            repeatable,
            deadline,
        )
    }
}
