//! The response future of [`Retry`](crate::Retry): attempts, backoff sleeps and the decision
//! between them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use pacer_throttle::parse::server_wait;
use pacer_throttle::Paced;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::retry::budget::Budget;
use tower_service::Service;

use crate::classify::{Classify, RetryReason};
use crate::error::Error;
use crate::layer::Shared;
use crate::metrics;
use crate::request::{copy_request, ReplayBody};
use crate::stats::Counters;

pin_project! {
    #[project = StateProj]
    enum State<F> {
        /// An attempt is in flight, with its timeout if one is configured.
        Calling {
            #[pin]
            attempt: F,
            timeout: Option<Pin<Box<Sleep>>>,
        },
        /// Backing off before the next attempt.
        Sleeping { sleep: Pin<Box<Sleep>> },
        /// Waiting for the inner service to be ready for the next attempt.
        Readying,
    }
}

pin_project! {
    /// Runs the attempts of one request.
    pub struct ResponseFuture<S, B, C, P>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S::Future>,
        service: S,
        shared: Arc<Shared<C, P>>,
        template: Option<Request<B>>,
        repeatable: bool,
        deadline: Option<Instant>,
        attempts: u32,
        previous_delay: Duration,
    }
}

impl<S, B, C, P> std::fmt::Debug for ResponseFuture<S, B, C, P>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempts", &self.attempts)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// What to do after an attempt.
enum Decision<T> {
    Return(T),
    RetryAfter(Duration),
}

impl<S, B, C, P> ResponseFuture<S, B, C, P>
where
    S: Service<Request<B>>,
{
    pub(crate) fn new(
        first: S::Future,
        service: S,
        shared: Arc<Shared<C, P>>,
        template: Option<Request<B>>,
        repeatable: bool,
        deadline: Option<Instant>,
    ) -> Self {
        let timeout = attempt_timeout(&shared);
        let previous_delay = shared.config.backoff.base();
        Self {
            state: State::Calling {
                attempt: first,
                timeout,
            },
            service,
            shared,
            template,
            repeatable,
            deadline,
            attempts: 1,
            previous_delay,
        }
    }
}

fn attempt_timeout<C, P>(shared: &Shared<C, P>) -> Option<Pin<Box<Sleep>>> {
    shared
        .config
        .attempt_timeout
        .map(|timeout| Box::pin(tokio::time::sleep(timeout)))
}

impl<S, B, RB, C, P> Future for ResponseFuture<S, B, C, P>
where
    S: Service<Request<B>, Response = Response<RB>>,
    C: Classify<RB, S::Error>,
    P: ReplayBody<B>,
{
    type Output = Result<Response<RB>, Error<S::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { attempt, timeout } => {
                    let outcome = match attempt.poll(cx) {
                        Poll::Ready(result) => Some(result),
                        Poll::Pending => match timeout {
                            Some(timeout) => {
                                ready!(timeout.as_mut().poll(cx));
                                None
                            }
                            None => return Poll::Pending,
                        },
                    };
                    let shared = &**this.shared;
                    let decision = decide(
                        shared,
                        outcome,
                        *this.attempts,
                        this.template.is_some(),
                        *this.repeatable,
                        *this.deadline,
                        this.previous_delay,
                    );
                    match decision {
                        Decision::Return(output) => return Poll::Ready(output),
                        Decision::RetryAfter(delay) => {
                            let sleep = Box::pin(tokio::time::sleep(delay));
                            this.state.set(State::Sleeping { sleep });
                        }
                    }
                }
                StateProj::Sleeping { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state.set(State::Readying);
                }
                StateProj::Readying => {
                    ready!(this.service.poll_ready(cx)).map_err(Error::Inner)?;
                    let template = this.template.as_ref().expect("a retry has a template");
                    let body = this
                        .shared
                        .replay
                        .replay(template.body())
                        .expect("a body that was copied once copies again");
                    let attempt = this.service.call(copy_request(template, body));
                    *this.attempts += 1;
                    let timeout = attempt_timeout(this.shared);
                    this.state.set(State::Calling { attempt, timeout });
                }
            }
        }
    }
}

/// Counts a retryable failure returned to the caller, in the layer's stats and its metrics.
fn give_up(counter: &std::sync::atomic::AtomicU64, why: &'static str, reason: &RetryReason) {
    Counters::bump(counter);
    metrics::gave_up(why, reason);
}

/// Decides after attempt number `attempts`; `outcome` is `None` when it timed out.
fn decide<RB, E, C, P>(
    shared: &Shared<C, P>,
    outcome: Option<Result<Response<RB>, E>>,
    attempts: u32,
    replayable: bool,
    repeatable: bool,
    deadline: Option<Instant>,
    previous_delay: &mut Duration,
) -> Decision<Result<Response<RB>, Error<E>>>
where
    C: Classify<RB, E>,
{
    let counters = &shared.state.counters;
    let config = &shared.config;
    let reason = match &outcome {
        None => Some(RetryReason::Timeout),
        Some(result) => shared.classifier.classify(result),
    };
    let give_back = |outcome: Option<Result<Response<RB>, E>>| match outcome {
        Some(result) => result.map_err(Error::Inner),
        None => Err(Error::TimedOut { attempts }),
    };
    let Some(reason) = reason else {
        return Decision::Return(give_back(outcome));
    };
    if !replayable || !(repeatable || reason.request_not_processed()) {
        give_up(&counters.not_repeatable, "not_repeatable", &reason);
        tracing::debug!(
            ?reason,
            repeatable,
            replayable,
            "retryable failure, but the request may not be repeated"
        );
        return Decision::Return(give_back(outcome));
    }
    if attempts >= config.max_attempts {
        give_up(&counters.exhausted, "exhausted", &reason);
        tracing::info!(?reason, attempts, "gave up: attempts exhausted");
        return Decision::Return(give_back(outcome));
    }
    let server_wait = match &outcome {
        Some(Ok(response)) => server_wait(response.headers(), response.extensions()),
        _ => None,
    };
    if let Some(wait) = server_wait.filter(|&wait| wait > config.max_server_wait) {
        give_up(&counters.server_wait_too_long, "server_wait", &reason);
        tracing::warn!(?wait, max = ?config.max_server_wait, "gave up: server asked for too long a wait");
        return Decision::Return(Err(Error::ServerWaitTooLong {
            wait,
            max: config.max_server_wait,
        }));
    }
    // A refusal a throttle layer fed back to its limiter: the retry waits for the key's next
    // slot at the slowed rate, which is the backoff. Another would only idle the slot.
    let paced =
        matches!(&outcome, Some(Ok(response)) if response.extensions().get::<Paced>().is_some());
    let backoff = if paced {
        Duration::ZERO
    } else {
        let mut rng = shared.rng.lock().unwrap_or_else(|e| e.into_inner());
        config
            .backoff
            .delay(attempts - 1, *previous_delay, &mut **rng)
    };
    // Never sleep less than the server asked.
    let delay = backoff.max(server_wait.unwrap_or_default());
    if deadline.is_some_and(|deadline| Instant::now() + delay >= deadline) {
        give_up(&counters.deadline, "deadline", &reason);
        tracing::info!(
            ?reason,
            attempts,
            ?delay,
            "gave up: the next attempt would end past the deadline"
        );
        return Decision::Return(give_back(outcome));
    }
    if let Some(budget) = &shared.state.budget {
        if !budget.withdraw() {
            give_up(&counters.budget_spent, "budget", &reason);
            tracing::info!(?reason, attempts, "gave up: retry budget spent");
            return Decision::Return(give_back(outcome));
        }
    }
    Counters::bump(&counters.retries);
    metrics::retry(&reason);
    tracing::debug!(?reason, attempt = attempts + 1, ?delay, "retrying");
    *previous_delay = backoff;
    Decision::RetryAfter(delay)
}
