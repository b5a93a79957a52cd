//! Counts, per API class, the requests that hold their slot and await the head of their answer:
//! what a p-queue user reads as `pending`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use pin_project_lite::pin_project;
use tower::Service;

use crate::api::ApiClass;
use crate::client::api_class_of;

/// The counters, one per [`ApiClass`], shared by every clone of the client.
#[derive(Debug, Default)]
pub(crate) struct InFlight([AtomicUsize; 5]);

impl InFlight {
    fn counter(&self, class: ApiClass) -> &AtomicUsize {
        let index = match class {
            ApiClass::Track => 0,
            ApiClass::App => 1,
            ApiClass::Transactional => 2,
            ApiClass::Broadcast => 3,
            ApiClass::Pipelines => 4,
        };
        &self.0[index]
    }

    /// Requests of `class` sent and not yet answered.
    pub(crate) fn of(&self, class: ApiClass) -> usize {
        self.counter(class).load(Ordering::Relaxed)
    }
}

/// Counts the requests passing through it while they are on their way.
#[derive(Clone, Debug)]
pub(crate) struct CountInFlight<S> {
    inner: S,
    counts: Arc<InFlight>,
}

impl<S> CountInFlight<S> {
    pub(crate) fn new(inner: S, counts: Arc<InFlight>) -> Self {
        Self { inner, counts }
    }
}

impl<S, B> Service<Request<B>> for CountInFlight<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Counted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let class = api_class_of(&request);
        // The guard first: should the inner call panic, it still takes its one back.
        self.counts.counter(class).fetch_add(1, Ordering::Relaxed);
        let guard = Guard {
            counts: Arc::clone(&self.counts),
            class,
        };
        Counted {
            inner: self.inner.call(request),
            guard: Some(guard),
        }
    }
}

/// Takes one off its class's count when dropped: on the answer, or when the caller gives up.
#[derive(Debug)]
struct Guard {
    counts: Arc<InFlight>,
    class: ApiClass,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.counts
            .counter(self.class)
            .fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project! {
    /// The inner response future, counted while it runs.
    #[derive(Debug)]
    pub(crate) struct Counted<F> {
        #[pin]
        inner: F,
        guard: Option<Guard>,
    }
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        this.guard.take();
        Poll::Ready(output)
    }
}
