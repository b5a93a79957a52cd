//! [`ThrottleLayer`]: configuration, and the state its services share.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use pacer_limit::{GlobalKey, Key, Limiter};
use tower_layer::Layer;

use crate::parse::{ParseOptions, ResetFormat};
use crate::service::{Shared, Throttled};
use pacer_limit::Adaptive;

/// Reads every response's throttle signals and applies them to the shared [`Limiter`]: pauses
/// the request's key on a refusal with a wait, adapts its rate, and paces ahead of a running-out
/// `Remaining`. Place it inside the [`LimitLayer`](pacer_limit::LimitLayer), next to
/// the HTTP service, with the same limiter.
///
/// Defaults: 429 and 503 are refusals; pauses are capped at 60 s; adaptation on
/// ([`Adaptive::default`]); pacing ahead on.
#[derive(Debug)]
#[must_use]
pub struct ThrottleLayer<K = (), X = GlobalKey> {
    limiter: Limiter<K>,
    extractor: X,
    config: Config,
}

#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) max_pause: Duration,
    pub(crate) refusals: Vec<StatusCode>,
    pub(crate) adaptive: Adaptive,
    pub(crate) pace_ahead: bool,
    pub(crate) parse: ParseOptions,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_pause: Duration::from_secs(60),
            refusals: vec![
                StatusCode::TOO_MANY_REQUESTS,
                StatusCode::SERVICE_UNAVAILABLE,
            ],
            adaptive: Adaptive::default(),
            pace_ahead: true,
            parse: ParseOptions::default(),
        }
    }
}

impl ThrottleLayer<(), GlobalKey> {
    /// A layer for an unkeyed limiter.
    pub fn new(limiter: Limiter<()>) -> Self {
        Self::keyed(limiter, GlobalKey::default())
    }
}

impl<K: Key, X> ThrottleLayer<K, X> {
    /// A layer for a keyed limiter; `extractor` must pick the same key as the rate-limit
    /// layer's, so that a response throttles the bucket its request came from.
    pub fn keyed(limiter: Limiter<K>, extractor: X) -> Self {
        Self {
            limiter,
            extractor,
            config: Config::default(),
        }
    }

    /// The longest pause one response may impose (default 60 s). A refusal asking for longer
    /// pauses the key for `max` and fails with [`WaitTooLong`](crate::WaitTooLong).
    pub fn max_pause(mut self, max: Duration) -> Self {
        self.config.max_pause = max;
        self
    }

    /// The statuses that mean "refused, slow down" (default 429 and 503).
    pub fn refusal_statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.config.refusals = statuses.into_iter().collect();
        self
    }

    /// How the key's rate adapts to refusals ([`Adaptive::off`] to keep the configured quota).
    pub fn adaptive(mut self, adaptive: Adaptive) -> Self {
        self.config.adaptive = adaptive;
        self
    }

    /// Whether to space requests out when `Remaining` would not last until the reset at the
    /// key's current rate (default on).
    pub fn pace_ahead(mut self, enabled: bool) -> Self {
        self.config.pace_ahead = enabled;
        self
    }

    /// How legacy `*-Reset` headers express time (default: told apart by magnitude).
    pub fn reset_format(mut self, format: ResetFormat) -> Self {
        self.config.parse = self.config.parse.reset_format(format);
        self
    }

    /// The shared limiter this layer feeds.
    pub fn limiter(&self) -> &Limiter<K> {
        &self.limiter
    }
}

impl<K, X: Clone> Clone for ThrottleLayer<K, X> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            extractor: self.extractor.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S, K: Key, X: Clone> Layer<S> for ThrottleLayer<K, X> {
    type Service = Throttled<S, K, X>;

    fn layer(&self, inner: S) -> Self::Service {
        // The parser's clamp must stay above the cap, or a wait beyond the cap would look like
        // one within it.
        let mut config = self.config.clone();
        if config.parse.max <= config.max_pause {
            config.parse = config.parse.max(config.max_pause.saturating_mul(2));
        }
        let shared = Shared {
            limiter: self.limiter.clone(),
            config,
        };
        Throttled::new(inner, Arc::new(shared), self.extractor.clone())
    }
}
