//! The response future of [`Limited`](crate::Limited).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower_service::Service;

use crate::acquire::Acquire;
use crate::error::BoxError;
use crate::limiter::Key;

pin_project! {
    /// Waits for a slot, then for the inner service's readiness, then for its response.
    ///
    /// Fails with a [`RateLimited`](crate::RateLimited) (boxed) when the limiter refuses the
    /// request, or with the inner service's error, converted into a [`BoxError`] and otherwise
    /// unchanged.
    pub struct ResponseFuture<S: Service<R>, R, K: Key> {
        #[pin]
        state: State<S::Future, K>,
        service: S,
        request: Option<R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, K: Key> {
        Acquiring { #[pin] acquire: Acquire<K> },
        Readying,
        Calling { #[pin] future: F },
    }
}

impl<S: Service<R>, R, K: Key> ResponseFuture<S, R, K> {
    pub(crate) fn new(acquire: Acquire<K>, service: S, request: R) -> Self {
        Self {
            state: State::Acquiring { acquire },
            service,
            request: Some(request),
        }
    }
}

impl<S, R, K> Future for ResponseFuture<S, R, K>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
    K: Key,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let this = self.as_mut().project();
            match this.state.project() {
                StateProj::Acquiring { acquire } => {
                    ready!(acquire.poll(cx)).map_err(BoxError::from)?;
                    self.as_mut().project().state.set(State::Readying);
                }
                StateProj::Readying => {
                    ready!(this.service.poll_ready(cx)).map_err(Into::into)?;
                    let request = this.request.take().expect("the request is taken only once");
                    let future = this.service.call(request);
                    self.as_mut().project().state.set(State::Calling { future });
                }
                StateProj::Calling { future } => {
                    return future.poll(cx).map_err(Into::into);
                }
            }
        }
    }
}

impl<S: Service<R>, R, K: Key> fmt::Debug for ResponseFuture<S, R, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Acquiring { .. } => "acquiring",
            State::Readying => "readying",
            State::Calling { .. } => "calling",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
