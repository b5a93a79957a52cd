//! [`RetryLayer`]: configuration, and the state every service it builds shares.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::SeedableRng;

use tower::retry::budget::TpsBudget;
use tower_layer::Layer;

use crate::backoff::Backoff;
use crate::classify::DefaultClassifier;
use crate::request::{CloneBody, NoReplay};
use crate::service::Retry;
use crate::stats::{Counters, RetryStats};

/// Retries failed requests with jittered exponential backoff, within a retry budget shared by
/// every clone, honouring the server's Retry-After, and only when repeating the request is
/// safe. Place it *outside* the rate limiter so that every attempt spends a slot of the quota.
///
/// Defaults: 3 attempts in all (as the AWS SDKs), [`Backoff::default`] (100 ms base, 30 s cap,
/// full jitter), server waits up to 60 s honoured, a budget of 20 % extra load plus 10 retries
/// per second, no deadline, no per-attempt timeout, the [`DefaultClassifier`], [`CloneBody`].
#[must_use]
pub struct RetryLayer<C = DefaultClassifier, P = CloneBody> {
    pub(crate) config: Config,
    pub(crate) classifier: C,
    pub(crate) replay: P,
    pub(crate) rng: SharedRng,
    pub(crate) state: Arc<State>,
}

/// The jitter's random source, shared so that clones draw different delays.
pub(crate) type SharedRng = Arc<Mutex<SmallRng>>;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) backoff: Backoff,
    pub(crate) max_attempts: u32,
    pub(crate) max_elapsed: Option<Duration>,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) max_server_wait: Duration,
}

/// What every clone of the layer and of its services shares: the budget and the counters.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) budget: Option<TpsBudget>,
    pub(crate) counters: Counters,
}

impl State {
    fn new(budget: Option<TpsBudget>) -> Arc<Self> {
        Arc::new(Self {
            budget,
            counters: Counters::default(),
        })
    }
}

/// The default budget: retries may add 20 % to the load, plus 10 per second at least, over a
/// 10 s window (tower's `TpsBudget`, after Finagle).
fn default_budget() -> TpsBudget {
    TpsBudget::new(Duration::from_secs(10), 10, 0.2)
}

impl Default for RetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryLayer {
    /// A layer with the defaults.
    pub fn new() -> Self {
        Self {
            config: Config {
                backoff: Backoff::default(),
                max_attempts: 3,
                max_elapsed: None,
                attempt_timeout: None,
                max_server_wait: Duration::from_secs(60),
            },
            classifier: DefaultClassifier,
            replay: CloneBody,
            rng: Arc::new(Mutex::new(SmallRng::from_os_rng())),
            state: State::new(Some(default_budget())),
        }
    }
}

impl<C, P> RetryLayer<C, P> {
    /// Retries after the first attempt, as reqwest-retry and backon count them (default 2,
    /// so 3 attempts in all; 0 never retries).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.config.max_attempts = retries.saturating_add(1);
        self
    }

    /// The backoff between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// No retry starts if it would end more than `max` after the request came in. A [`Deadline`]
    /// extension on a request shortens this for that request.
    ///
    /// [`Deadline`]: crate::Deadline
    pub fn max_elapsed(mut self, max: Duration) -> Self {
        self.config.max_elapsed = Some(max);
        self
    }

    /// Cancels an attempt that takes longer than `timeout` and counts it as a retryable timeout.
    /// When the layer does not retry it, the request fails with an
    /// [`AttemptTimedOut`](crate::AttemptTimedOut) (the [`source`](std::error::Error::source)
    /// of a [`RetriesExhausted`](crate::RetriesExhausted) after retries).
    ///
    /// None by default: the attempt includes whatever the layers below do, such as waiting
    /// for a slot of a rate limiter, so no one bound fits every stack. Bound the server's own
    /// silence next to the HTTP service instead (`pacer-customerio`'s `Client` does: 30 s per
    /// answer head, below its pacing) and use this for a bound on the whole attempt.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.config.attempt_timeout = Some(timeout);
        self
    }

    /// The longest server-requested wait (Retry-After, or a reset with nothing remaining) that
    /// is honoured (default 60 s). A longer one ends the request with
    /// [`ServerWaitTooLong`](crate::ServerWaitTooLong): sleeping for a day is
    /// never what the caller wanted.
    pub fn max_server_wait(mut self, max: Duration) -> Self {
        self.config.max_server_wait = max;
        self
    }

    /// Retries may add at most `fraction` of the requests to the load (default 0.2), plus
    /// `floor_per_second` retries per second whatever the load (default 10). When the budget is
    /// spent, failures are returned at once: retries never multiply an outage.
    ///
    /// # Panics
    /// If `fraction` is outside `0.0..=1000.0`.
    /// Call before the layer is cloned or used: the new budget starts empty, with its own
    /// counters.
    pub fn budget(mut self, fraction: f32, floor_per_second: u32) -> Self {
        let budget = TpsBudget::new(Duration::from_secs(10), floor_per_second, fraction);
        self.state = State::new(Some(budget));
        self
    }

    /// No retry budget: every retryable failure is retried up to the attempt limit. Call before
    /// the layer is cloned or used.
    pub fn no_budget(mut self) -> Self {
        self.state = State::new(None);
        self
    }

    /// Seeds the jitter's random source, for delays a test or a simulation can replay (by
    /// default it is seeded from the operating system).
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = Arc::new(Mutex::new(SmallRng::seed_from_u64(seed)));
        self
    }

    /// Decides which results are retried.
    pub fn classifier<C2>(self, classifier: C2) -> RetryLayer<C2, P> {
        RetryLayer {
            config: self.config,
            classifier,
            replay: self.replay,
            rng: self.rng,
            state: self.state,
        }
    }

    /// Sends every request once: for bodies that cannot be copied.
    pub fn no_replay(self) -> RetryLayer<C, NoReplay> {
        self.replay(NoReplay)
    }

    /// How request bodies are kept for another attempt.
    pub fn replay<P2>(self, replay: P2) -> RetryLayer<C, P2> {
        RetryLayer {
            config: self.config,
            classifier: self.classifier,
            replay,
            rng: self.rng,
            state: self.state,
        }
    }

    /// Counters summed over every service of this layer and its clones.
    #[must_use]
    pub fn stats(&self) -> RetryStats {
        self.state.counters.snapshot()
    }
}

impl<C: Clone, P: Clone> Clone for RetryLayer<C, P> {
    fn clone(&self) -> Self {
        Self {
            config: self.config,
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
            rng: Arc::clone(&self.rng),
            state: Arc::clone(&self.state),
        }
    }
}

impl<C: fmt::Debug, P: fmt::Debug> fmt::Debug for RetryLayer<C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("config", &self.config)
            .field("classifier", &self.classifier)
            .field("replay", &self.replay)
            .field("stats", &self.stats())
            .finish()
    }
}

impl<S, C: Clone, P: Clone> Layer<S> for RetryLayer<C, P> {
    type Service = Retry<S, C, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(
            inner,
            Arc::new(Shared {
                config: self.config,
                classifier: self.classifier.clone(),
                replay: self.replay.clone(),
                rng: Arc::clone(&self.rng),
                state: Arc::clone(&self.state),
            }),
        )
    }
}

/// What one service and its response futures share.
pub(crate) struct Shared<C, P> {
    pub(crate) config: Config,
    pub(crate) classifier: C,
    pub(crate) replay: P,
    pub(crate) rng: SharedRng,
    pub(crate) state: Arc<State>,
}

impl<C: fmt::Debug, P: fmt::Debug> fmt::Debug for Shared<C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("classifier", &self.classifier)
            .field("replay", &self.replay)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}
