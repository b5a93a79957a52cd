//! The contenders: the same hyper client paced by pacer, by `tower::limit::RateLimit` behind a
//! `Buffer`, and by governor's `until_ready`, each configured the way its documentation suggests
//! for the server's model. All are boxed into one cloneable service type, so every task runs
//! `client.clone().oneshot(request)` whatever paces it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use pacer::limit::{LimitLayer, Limiter, Quota};
use tower::util::BoxCloneService;
use tower::{BoxError, ServiceBuilder, ServiceExt};

use crate::server::Enforcement;

pub(crate) type Body = Full<Bytes>;
pub(crate) type PacedClient = BoxCloneService<Request<Body>, Response<Incoming>, BoxError>;
type HttpClient = Client<HttpConnector, Body>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Contender {
    /// pacer as a user who copies `Quota::per_second(100)` gets it: evenly spaced, 1 % margin,
    /// precise wake-ups (on by default under 50 ms spacing), the same for every server.
    PacerDefaults,
    /// pacer with the quota model matching the server's, precise wake-ups, and a margin: sends
    /// are planned against a window this much longer than the server's, so that requests
    /// delayed on their way still arrive within the limit.
    Pacer { margin: Duration },
    /// The same without precise wake-ups: shows what tokio's 1 ms timer costs evenly spaced sends.
    PacerTokioTimer { margin: Duration },
    /// `tower::limit::RateLimit` behind `Buffer` (it is not `Clone`).
    TowerBuffer,
    /// governor's direct limiter, each task awaiting `until_ready` before it sends.
    Governor,
}

/// The margin of the main pacer rows. On a sliding window each request may be delayed by up to
/// the whole margin; on an evenly spaced quota by `margin / limit` (100 µs here).
const MARGIN: Duration = Duration::from_millis(10);
/// A margin that covers the worst loopback delay spread measured on a small VM (about 300 µs
/// per request) on an evenly spaced quota.
const WIDE_MARGIN: Duration = Duration::from_millis(30);

impl Contender {
    pub(crate) const ALL: [Contender; 6] = [
        Contender::PacerDefaults,
        Contender::Pacer { margin: MARGIN },
        Contender::Pacer {
            margin: WIDE_MARGIN,
        },
        Contender::PacerTokioTimer { margin: MARGIN },
        Contender::TowerBuffer,
        Contender::Governor,
    ];

    pub(crate) fn name(self) -> String {
        match self {
            Self::PacerDefaults => "pacer, defaults".to_owned(),
            Self::Pacer { margin } => format!("pacer, margin {margin:?}"),
            Self::PacerTokioTimer { margin } => format!("pacer, tokio timer, margin {margin:?}"),
            Self::TowerBuffer => "tower RateLimit + Buffer".to_owned(),
            Self::Governor => "governor until_ready".to_owned(),
        }
    }

    /// The short name accepted by `--only`.
    pub(crate) fn family(self) -> &'static str {
        match self {
            Self::PacerDefaults | Self::Pacer { .. } | Self::PacerTokioTimer { .. } => "pacer",
            Self::TowerBuffer => "tower",
            Self::Governor => "governor",
        }
    }

    /// Whether this contender is worth a row against `enforcement`. The wide margin and the
    /// tokio timer matter on the microsecond-strict server; elsewhere their rows add nothing.
    pub(crate) fn applies_to(self, enforcement: Enforcement) -> bool {
        match self {
            Self::Pacer { margin } => margin == MARGIN || enforcement == Enforcement::StrictGcra,
            Self::PacerTokioTimer { .. } => enforcement == Enforcement::StrictGcra,
            Self::PacerDefaults | Self::TowerBuffer | Self::Governor => true,
        }
    }

    /// A fresh client paced to `limit` requests per `window` against a server counting by
    /// `enforcement`.
    pub(crate) fn client(
        self,
        enforcement: Enforcement,
        limit: u32,
        window: Duration,
    ) -> PacedClient {
        let http = http_client();
        match self {
            Self::PacerDefaults => ServiceBuilder::new()
                .layer(LimitLayer::new(Limiter::new(Quota::new(limit, window))))
                .service(http)
                .map_err(BoxError::from)
                .boxed_clone(),
            Self::Pacer { margin } | Self::PacerTokioTimer { margin } => {
                let quota = Quota::new(limit, window).with_margin(margin);
                let quota = if enforcement.evenly_spaced() {
                    quota
                } else {
                    quota.sliding_window()
                };
                let limiter = Limiter::builder(quota)
                    .precise_wakeups(matches!(self, Self::Pacer { .. }))
                    .build();
                ServiceBuilder::new()
                    .layer(LimitLayer::new(limiter))
                    .service(http)
                    .map_err(BoxError::from)
                    .boxed_clone()
            }
            Self::TowerBuffer => {
                // tower counts `num` requests per fixed period: a whole window at once for a
                // sliding window, one request per interval for an evenly spaced quota.
                let (num, per) = if enforcement.evenly_spaced() {
                    (1, window / limit)
                } else {
                    (limit.into(), window)
                };
                let limited = ServiceBuilder::new().rate_limit(num, per).service(http);
                // Enough room that every task can queue: the buffer is not the bottleneck.
                tower::buffer::Buffer::new(limited, 1024).boxed_clone()
            }
            Self::Governor => {
                let per_second = governor_rate(limit, window);
                let quota = governor::Quota::per_second(per_second);
                let quota = if enforcement.evenly_spaced() {
                    quota.allow_burst(std::num::NonZeroU32::MIN)
                } else {
                    quota
                };
                let governor = Arc::new(governor::RateLimiter::direct(quota));
                tower::service_fn(move |request: Request<Body>| {
                    let governor = Arc::clone(&governor);
                    let http = http.clone();
                    async move {
                        governor.until_ready().await;
                        http.request(request).await.map_err(BoxError::from)
                    }
                })
                .boxed_clone()
            }
        }
    }
}

/// governor's quotas are per second, per minute or per hour: the example only uses whole seconds.
fn governor_rate(limit: u32, window: Duration) -> std::num::NonZeroU32 {
    assert_eq!(
        window,
        Duration::from_secs(1),
        "the example's limit is per second"
    );
    std::num::NonZeroU32::new(limit).expect("a non-zero limit")
}

fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}
