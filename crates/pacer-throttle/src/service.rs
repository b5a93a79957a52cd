//! The [`Throttled`] service and what happens when a response comes back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use http::{Request, Response, StatusCode};
use pacer_limit::{Key, KeyExtractor, Limiter};
use tokio::time::Instant;
use tower_service::Service;

use crate::adaptive::{Change, InForce, KeyRate};
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
    pub(crate) rates: Arc<Mutex<KeyRates<K>>>,
}

/// The adaptive state of the keys that have one, swept of idle keys as the map grows.
#[derive(Debug)]
pub(crate) struct KeyRates<K> {
    rates: HashMap<K, KeyRate>,
    sweep_at_len: usize,
}

impl<K> Default for KeyRates<K> {
    fn default() -> Self {
        Self {
            rates: HashMap::new(),
            sweep_at_len: 64,
        }
    }
}

impl<K: Key> KeyRates<K> {
    fn rate(&mut self, key: &K, window: std::time::Duration, now: Instant) -> &mut KeyRate {
        if !self.rates.contains_key(key) {
            if self.rates.len() >= self.sweep_at_len {
                self.rates.retain(|_, rate| !rate.is_idle(now));
                self.sweep_at_len = (self.rates.len() * 2).max(64);
            }
            self.rates.insert(key.clone(), KeyRate::new(window, now));
        }
        self.rates.get_mut(key).expect("rate was just inserted")
    }
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
        if refused {
            crate::metrics::refusal(key, status);
        }
        if let Some(signal) = signal.as_ref().filter(|signal| signal.wait.is_some()) {
            let wait = signal.wait.unwrap_or_default();
            let requested = signal.requested.unwrap_or(wait);
            let pause = wait.min(self.config.max_pause);
            self.limiter.pause_until(key, now + pause);
            crate::metrics::pause(key);
            let beyond_cap = requested > self.config.max_pause;
            if beyond_cap {
                crate::metrics::capped(key, status);
            }
            if refused && beyond_cap {
                tracing::warn!(key = ?key, %status, wait = ?requested, retry_after = ?signal.retry_after, cap = ?self.config.max_pause, "server asked for a wait beyond the cap; gave up");
                outcome = Err(WaitTooLong {
                    status,
                    wait: requested,
                    cap: self.config.max_pause,
                    retry_after: signal.retry_after.clone(),
                });
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
        }

        let adapting = self.config.adaptive.is_enabled();
        if adapting && (refused || status.is_success()) {
            self.adapt(key, refused, sent_at, now);
        }
        // A 429 ("too many requests", not "unavailable") whose key this layer paused or slows:
        // a retry through the limiter is paced by it. A 503 keeps the retry layer's backoff,
        // which spreads attempts over an outage.
        let paused = signal.as_ref().is_some_and(|signal| signal.wait.is_some());
        if status == StatusCode::TOO_MANY_REQUESTS && (adapting || paused) {
            response.extensions_mut().insert(crate::Paced);
        }
        if self.config.pace_ahead && !refused {
            if let Some(signal) = &signal {
                self.pace_ahead(key, signal, now);
            }
        }
        if let Some(signal) = signal {
            response.extensions_mut().insert(signal);
        }
        outcome
    }

    fn adapt(&self, key: &K, refused: bool, sent_at: Instant, now: Instant) {
        let configured = self.limiter.configured_quota(key);
        let params = &self.config.adaptive;
        // Rates in requests per window of the configured quota (margin included), fractional.
        let window = configured.effective_window();
        let ceiling = f64::from(configured.limit());
        // Read the limiter before taking our own lock (never hold both), and only when a
        // refusal needs it: most successes change nothing and cost no second lock.
        let on_refusal = refused.then(|| self.limiter.quota(key));
        let change = {
            let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
            let rate = rates.rate(key, window, now);
            match &on_refusal {
                Some(in_force) => {
                    let in_force = InForce {
                        rate: in_force.rate_per_second() * window.as_secs_f64(),
                        bursts: in_force.model().bursts(),
                    };
                    rate.on_refusal(params, in_force, sent_at, now)
                }
                None => rate.on_success(params, ceiling, sent_at, now),
            }
        };
        if change == Change::Keep {
            return;
        }
        let in_force = on_refusal.unwrap_or_else(|| self.limiter.quota(key));
        // Once the server refused a burst, the key stays evenly spaced, at any rate.
        let smoothed = !in_force.model().bursts() && configured.model().bursts();
        let paced = if smoothed {
            configured.gcra(1)
        } else {
            configured
        };
        match change {
            Change::Keep => unreachable!("returned above"),
            Change::Rate(rate) => {
                let per_second = rate / window.as_secs_f64();
                tracing::debug!(key = ?key, per_second, "adapted key rate");
                self.limiter.set_quota(key, paced.slowed(rate / ceiling));
                crate::metrics::rate(key, per_second);
            }
            Change::Smooth => {
                tracing::debug!(key = ?key, "server refused a burst; key evenly spaced");
                self.limiter.set_quota(key, in_force.gcra(1));
            }
            Change::Recovered if smoothed => {
                tracing::debug!(key = ?key, "key rate back at its configured quota, evenly spaced");
                self.limiter.set_quota(key, paced);
                crate::metrics::rate(key, configured.rate_per_second());
            }
            Change::Recovered => {
                tracing::debug!(key = ?key, "key rate back at its configured quota");
                self.limiter.reset_quota(key);
                crate::metrics::rate(key, configured.rate_per_second());
            }
        }
    }

    /// Spreads what `Remaining` allows over the time until the reset when the key's current
    /// rate would spend it sooner.
    fn pace_ahead(&self, key: &K, signal: &crate::Throttle, now: Instant) {
        let (Some(remaining), Some(reset)) = (signal.remaining, signal.reset) else {
            return;
        };
        if remaining == 0 || signal.wait.is_some() {
            return;
        }
        let spacing = reset / u32::try_from(remaining).unwrap_or(u32::MAX);
        if spacing > self.limiter.quota(key).emission_interval() {
            let spacing = spacing.min(self.config.max_pause);
            tracing::debug!(key = ?key, remaining, ?reset, ?spacing, "remaining quota low; spacing requests out");
            self.limiter.pause_until(key, now + spacing);
        }
    }
}
