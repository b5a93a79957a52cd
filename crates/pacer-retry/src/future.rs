//! The response future of [`Retry`](crate::Retry): attempts, backoff sleeps and the decision
//! between them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use pacer_throttle::parse::server_signal;
use pacer_throttle::Paced;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::retry::budget::Budget;
use tower_service::Service;

use crate::classify::{Classify, RetryReason};
use crate::error::{AttemptTimedOut, BoxError, GaveUp, RetriesExhausted, ServerWaitTooLong};
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
    S::Error: Into<BoxError>,
    C: Classify<RB, BoxError>,
    P: ReplayBody<B>,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { attempt, timeout } => {
                    let outcome = match attempt.poll(cx) {
                        Poll::Ready(result) => Some(result.map_err(Into::into)),
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
                    // A readiness error is not an attempt's: it passes through unchanged.
                    ready!(this.service.poll_ready(cx)).map_err(Into::into)?;
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

/// What the caller gets when the layer stops after attempt number `attempts`: an answer as
/// it is; the attempt's error (or an [`AttemptTimedOut`] when `outcome` is `None`) unwrapped
/// when the request was sent once or the failure is not retryable (`gave_up` is `None`), in a
/// [`RetriesExhausted`] when it was retried and the layer gave up on a retryable failure.
fn give_back<RB>(
    outcome: Option<Result<Response<RB>, BoxError>>,
    attempts: u32,
    timeout: Option<Duration>,
    gave_up: Option<(GaveUp, RetryReason)>,
) -> Result<Response<RB>, BoxError> {
    let last = match outcome {
        Some(Ok(response)) => return Ok(response),
        Some(Err(error)) => error,
        None => Box::new(AttemptTimedOut::new(attempts, timeout.unwrap_or_default())),
    };
    match gave_up {
        Some((why, reason)) if attempts > 1 => {
            Err(Box::new(RetriesExhausted::new(attempts, reason, why, last)))
        }
        _ => Err(last),
    }
}

/// The backoff before the attempt after number `attempts`: none after a refusal a throttle
/// layer fed back to its limiter (the retry waits for the key's next slot at the slowed rate,
/// which is the backoff; another would only idle the slot), otherwise the jittered delay.
fn backoff_after<RB, C, P>(
    shared: &Shared<C, P>,
    response: Option<&Response<RB>>,
    attempts: u32,
    previous_delay: Duration,
) -> Duration {
    if response.is_some_and(|r| r.extensions().get::<Paced>().is_some()) {
        return Duration::ZERO;
    }
    let mut rng = shared.rng.lock().unwrap_or_else(|e| e.into_inner());
    shared
        .config
        .backoff
        .delay(attempts - 1, previous_delay, rand::Rng::random(&mut *rng))
}

/// Decides after attempt number `attempts`; `outcome` is `None` when it timed out.
fn decide<RB, C, P>(
    shared: &Shared<C, P>,
    outcome: Option<Result<Response<RB>, BoxError>>,
    attempts: u32,
    replayable: bool,
    repeatable: bool,
    deadline: Option<Instant>,
    previous_delay: &mut Duration,
) -> Decision<Result<Response<RB>, BoxError>>
where
    C: Classify<RB, BoxError>,
{
    let counters = &shared.state.counters;
    let config = &shared.config;
    let reason = match &outcome {
        None => Some(RetryReason::Timeout),
        Some(result) => shared.classifier.classify(result),
    };
    let timeout = config.attempt_timeout;
    let Some(reason) = reason else {
        return Decision::Return(give_back(outcome, attempts, timeout, None));
    };
    let gave_up = |why| Some((why, reason));
    if !replayable || !(repeatable || reason.request_not_processed()) {
        give_up(&counters.not_repeatable, "not_repeatable", &reason);
        tracing::debug!(
            ?reason,
            repeatable,
            replayable,
            "retryable failure, but the request may not be repeated"
        );
        let why = gave_up(GaveUp::NotRepeatable);
        return Decision::Return(give_back(outcome, attempts, timeout, why));
    }
    if attempts >= config.max_attempts {
        give_up(&counters.exhausted, "exhausted", &reason);
        tracing::info!(?reason, attempts, "gave up: attempts exhausted");
        let why = gave_up(GaveUp::Attempts);
        return Decision::Return(give_back(outcome, attempts, timeout, why));
    }
    let response = match &outcome {
        Some(Ok(response)) => Some(response),
        _ => None,
    };
    let signal = response.and_then(|r| server_signal(r.headers(), r.extensions()));
    // What the server asked for before the parser's clamp: "99999999999" is judged (and
    // reported) as itself, not as the clamp's hour.
    let server_wait = signal
        .as_ref()
        .and_then(|signal| signal.requested.or(signal.wait));
    if let Some(wait) = server_wait.filter(|&wait| wait > config.max_server_wait) {
        give_up(&counters.server_wait_too_long, "server_wait", &reason);
        let retry_after = signal.and_then(|signal| signal.retry_after);
        tracing::warn!(?wait, ?retry_after, max = ?config.max_server_wait, "gave up: server asked for too long a wait");
        let status = response
            .expect("a server wait comes with an answer")
            .status();
        let too_long = ServerWaitTooLong::new(status, wait, config.max_server_wait)
            .with_attempts(attempts)
            .with_retry_after(retry_after);
        return Decision::Return(Err(Box::new(too_long)));
    }
    let backoff = backoff_after(shared, response, attempts, *previous_delay);
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
        let why = gave_up(GaveUp::Deadline);
        return Decision::Return(give_back(outcome, attempts, timeout, why));
    }
    if let Some(budget) = &shared.state.budget {
        if !budget.withdraw() {
            give_up(&counters.budget_spent, "budget", &reason);
            tracing::info!(?reason, attempts, "gave up: retry budget spent");
            let why = gave_up(GaveUp::Budget);
            return Decision::Return(give_back(outcome, attempts, timeout, why));
        }
    }
    Counters::bump(&counters.retries);
    metrics::retry(&reason);
    tracing::debug!(?reason, attempt = attempts + 1, ?delay, "retrying");
    *previous_delay = backoff;
    Decision::RetryAfter(delay)
}
