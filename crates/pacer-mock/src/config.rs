//! What the mock enforces: credentials, limits per API class, faults.

use std::time::Duration;

/// The surfaces Customer.io limits separately (the mock's own, independent of the client's
/// `ApiClass`, so the mock checks the client rather than sharing its assumptions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Api {
    /// Track API v1 and v2 (`track.customer.io`).
    Track,
    /// App API reads and writes (`api.customer.io/v1/...`), 10/s.
    App,
    /// Transactional sends (`/v1/send/*`).
    Transactional,
    /// API-triggered broadcasts (`/v1/campaigns/{id}/triggers`), 1 per 10 s.
    Broadcast,
    /// Pipelines (`cdp.customer.io/v1/...`).
    Pipelines,
}

impl Api {
    /// Every class, for iteration.
    pub const ALL: [Api; 5] = [
        Api::Track,
        Api::App,
        Api::Transactional,
        Api::Broadcast,
        Api::Pipelines,
    ];
}

/// How the mock counts requests against a limit: real gateways differ, so tests pick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServerModel {
    /// Never more than `limit` accepted in any window (the default).
    #[default]
    SlidingWindow,
    /// A leaky bucket / GCRA with a burst of `limit`: `limit` at once, then one per
    /// `window / limit`.
    Gcra,
    /// Counters reset at multiples of the window: up to `2 x limit` around a boundary.
    FixedWindow,
}

/// `limit` requests per `window` for one API class of one workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limit {
    /// Requests allowed per window.
    pub limit: u32,
    /// The window.
    pub window: Duration,
    /// How requests are counted.
    pub model: ServerModel,
}

impl Limit {
    /// `limit` per second, in a sliding window.
    #[must_use]
    pub fn per_second(limit: u32) -> Self {
        Self {
            limit,
            window: Duration::from_secs(1),
            model: ServerModel::SlidingWindow,
        }
    }

    /// `limit` per `window`, in a sliding window.
    #[must_use]
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            model: ServerModel::SlidingWindow,
        }
    }

    /// Counts with `model`.
    #[must_use]
    pub fn model(mut self, model: ServerModel) -> Self {
        self.model = model;
        self
    }
}

/// Faults injected into the mock's answers, drawn from a seeded RNG.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Fraction of requests answered 500 (before anything is applied).
    pub server_errors: f64,
    /// Fraction of requests answered 503.
    pub unavailable: f64,
    /// Latency added to every answer.
    pub latency: Duration,
    /// Up to this much more latency, uniformly.
    pub jitter: Duration,
    /// Fraction of connections dropped before the request is applied.
    pub drop_before: f64,
    /// Fraction of connections dropped *after* the request is applied, with no answer: the case
    /// that makes a naive retry apply it twice.
    pub drop_after: f64,
}

/// The mock's configuration; [`MockConfig::default`] is what a real workspace looks like.
#[derive(Clone, Debug)]
pub struct MockConfig {
    pub(crate) site_id: String,
    pub(crate) track_api_key: String,
    pub(crate) app_api_key: String,
    pub(crate) pipelines_api_key: String,
    pub(crate) limits: [(Api, Option<Limit>); 5],
    pub(crate) faults: Faults,
    pub(crate) seed: u64,
}

impl Default for MockConfig {
    /// Credentials `site-id` / `track-key` (Track), `app-key` (App), `cdp-key` (Pipelines); Track 100/s, App 10/s, transactional
    /// 100/s, broadcasts 1 per 10 s, Pipelines 3000 per 3 s; no faults; seed 0.
    fn default() -> Self {
        Self {
            site_id: "site-id".into(),
            track_api_key: "track-key".into(),
            app_api_key: "app-key".into(),
            pipelines_api_key: "cdp-key".into(),
            limits: [
                (Api::Track, Some(Limit::per_second(100))),
                (Api::App, Some(Limit::per_second(10))),
                (Api::Transactional, Some(Limit::per_second(100))),
                (Api::Broadcast, Some(Limit::new(1, Duration::from_secs(10)))),
                (
                    Api::Pipelines,
                    Some(Limit::new(3000, Duration::from_secs(3))),
                ),
            ],
            faults: Faults::default(),
            seed: 0,
        }
    }
}

impl MockConfig {
    /// Track API credentials (HTTP Basic, `site_id:api_key`).
    #[must_use]
    pub fn track_credentials(mut self, site_id: &str, api_key: &str) -> Self {
        self.site_id = site_id.into();
        self.track_api_key = api_key.into();
        self
    }

    /// The App API key (Bearer).
    #[must_use]
    pub fn app_api_key(mut self, key: &str) -> Self {
        self.app_api_key = key.into();
        self
    }

    /// The Pipelines API key (HTTP Basic, the key as user name, no password).
    #[must_use]
    pub fn pipelines_api_key(mut self, key: &str) -> Self {
        self.pipelines_api_key = key.into();
        self
    }

    /// Limits `class` (per workspace) with `limit`, or not at all with `None`.
    #[must_use]
    pub fn limit(mut self, class: Api, limit: Option<Limit>) -> Self {
        for entry in &mut self.limits {
            if entry.0 == class {
                entry.1 = limit;
            }
        }
        self
    }

    /// Injects `faults`.
    #[must_use]
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Seeds the fault RNG.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    pub(crate) fn limit_of(&self, class: Api) -> Option<Limit> {
        self.limits
            .iter()
            .find(|(c, _)| *c == class)
            .and_then(|(_, limit)| *limit)
    }
}
